//! Downloads: a recording as `.cast`, and an evidence bundle for an incident file: the
//! recording, its line index and metadata, its signed audit entries, the key to check them, and
//! a short report.
//!
//! Both stream: a response holds a few chunks of [`CHUNK`] bytes at a time, never a whole
//! recording. The bundle's tar is written on a blocking thread into a bounded channel the
//! response body drains; `report.txt` comes last, with the SHA-256 of each file taken as it went
//! by. A recording still being written is cut at its size when the download began. The report's
//! verdict is taken before the sending; a recording verified intact is checked again against the
//! same seals as its bytes go out, and a bundle whose copy no longer passes is cut off (and the
//! download audited with the reason), never sent with a report that calls it intact.

use std::fmt::Write as _;
use std::io::{Read, Write};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use super::catalog::{self, Row};
use super::{App, SessionRequest, action};
use crate::app::Bastion;
use crate::audit::{ChainReport, Code};
use crate::ids::SessionId;
use crate::policy::local;
use crate::recording::{CopyCheck, Verdict};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CastQuery {
    download: Option<u8>,
}

fn attachment(res: &mut Response, name: &str, kind: &'static str) {
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
}

/// Bytes a response carries at a time.
const CHUNK: usize = 64 << 10;
/// Chunks of a bundle written ahead of what the client has taken.
const AHEAD: usize = 4;

/// A reader as a response body, [`CHUNK`] bytes at a time.
fn reader_body(reader: impl AsyncRead + Unpin + Send + 'static) -> Body {
    Body::from_stream(futures_util::stream::try_unfold(
        reader,
        |mut r| async move {
            let mut buf = vec![0; CHUNK];
            let n = r.read(&mut buf).await?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((n > 0).then_some((buf, r)))
        },
    ))
}

pub async fn cast(
    State(app): State<App>,
    SessionRequest { id, reviewer, peer }: SessionRequest,
    Query(q): Query<CastQuery>,
) -> Response {
    let file = match tokio::fs::File::open(app.shared.store.cast_path(&id)).await {
        Ok(f) => f,
        Err(_) => return (StatusCode::NOT_FOUND, "no such recording").into_response(),
    };
    let Ok(len) = file.metadata().await.map(|m| m.len()) else {
        return (StatusCode::NOT_FOUND, "no such recording").into_response();
    };
    let download = q.download == Some(1);
    let code = if download {
        Code::ConsoleDownload
    } else {
        Code::ConsoleView
    };
    action(code, &reviewer, peer)
        .session(&id)
        .detail("file", "recording")
        .emit();
    // A live recording grows: what was there when the request came, in whole.
    let mut res = reader_body(file.take(len)).into_response();
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if download {
        attachment(&mut res, &format!("{id}.cast"), "application/x-asciicast");
    } else {
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-asciicast"),
        );
    }
    res
}

pub async fn bundle(
    State(app): State<App>,
    SessionRequest { id, reviewer, peer }: SessionRequest,
) -> Response {
    let shared = app.shared.clone();
    let who = reviewer.0.to_string();
    let prepared = tokio::task::spawn_blocking({
        let id = id.clone();
        let index = app.index.clone();
        move || {
            // The session's own entries as the index verified them, not the whole chain.
            let report = index.current_report(&id).map_err(|e| e.to_string())?;
            let problems = index.counts().map_err(|e| e.to_string())?.1.len();
            prepare(&shared, &id, &report, problems, who)
        }
    })
    .await;
    let bundle = match prepared {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return (StatusCode::NOT_FOUND, e).into_response(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let (tx, rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(AHEAD);
    let shared = app.shared.clone();
    let event = action(Code::ConsoleDownload, &reviewer, peer)
        .session(&id)
        .detail("file", "evidence bundle");
    tokio::task::spawn_blocking(move || {
        let mut out = Hashing::new(std::io::BufWriter::with_capacity(
            CHUNK,
            ChannelWriter(tx.clone()),
        ));
        let written = bundle
            .write(&shared, &mut out)
            .and_then(|()| out.inner.flush());
        // The download is audited however it ends; the digest names the file the reviewer got.
        match written {
            Ok(()) => event
                .detail("sha256", hex::encode(out.digest.finalize()))
                .detail("bytes", out.bytes)
                .emit(),
            Err(e) => {
                event
                    .reason(format!("cut off after {} bytes: {e}", out.bytes))
                    .emit();
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    let chunks =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let mut res = Body::from_stream(chunks).into_response();
    attachment(
        &mut res,
        &format!("stapsteen-evidence-{id}.tar"),
        "application/x-tar",
    );
    res
}

/// Writes into the response body's channel; an error once the client is gone.
struct ChannelWriter(mpsc::Sender<std::io::Result<Vec<u8>>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(buf.to_vec()))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A writer or reader that takes the SHA-256 of what passes through.
struct Hashing<T> {
    inner: T,
    digest: Sha256,
    bytes: u64,
}

impl<T> Hashing<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            digest: Sha256::new(),
            bytes: 0,
        }
    }
}

impl<T: Write> Write for Hashing<T> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Read> Read for Hashing<T> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// A reader that also writes what it reads to a second writer.
struct Tee<R, W>(R, W);

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        self.1.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// One file of the bundle: a file opened before the download began, taken at the size it had
/// then, or a few bytes made here.
enum Part {
    File(std::fs::File, u64),
    Bytes(Vec<u8>),
}

/// What goes into a bundle, ready to be written.
struct Bundle {
    id: SessionId,
    row: Row,
    chain_problems: usize,
    reviewer: String,
    parts: Vec<(&'static str, Part)>,
    /// For a recording verified intact: the copy sent, checked as it goes by against the seals
    /// the verdict rested on (the file may change between the verdict and the sending).
    check: Option<CopyCheck>,
}

/// Everything but the writing: the verdict, the metadata and entries, the recording's files
/// opened.
fn prepare(
    shared: &Bastion,
    id: &SessionId,
    report: &ChainReport,
    chain_problems: usize,
    reviewer: String,
) -> Result<Bundle, String> {
    let Some(row) = catalog::row(shared, report, id) else {
        return Err("no such session".into());
    };
    let open = |p: std::path::PathBuf| {
        std::fs::File::open(p)
            .and_then(|f| Ok((f.metadata()?.len(), f)))
            .map_or(Part::Bytes(Vec::new()), |(len, f)| Part::File(f, len))
    };
    let entries: String = report
        .notes(id)
        .iter()
        .map(|(_, note)| format!("{}\n", serde_json::json!({ "note": note })))
        .collect();
    let mut parts = Vec::new();
    if row.verdict.is_some() {
        parts.push(("recording.cast", open(shared.store.cast_path(id))));
        parts.push(("recording.idx", open(shared.store.index_path(id))));
    }
    let meta = serde_json::to_vec_pretty(&row.meta).map_err(|e| e.to_string())?;
    parts.extend([
        ("session.json", Part::Bytes(meta)),
        ("audit-entries.jsonl", Part::Bytes(entries.into_bytes())),
        (
            "audit-key.vkey",
            Part::Bytes(format!("{}\n", shared.audit.verifier().vkey).into_bytes()),
        ),
    ]);
    let check = matches!(
        row.verdict,
        Some(Verdict::Sealed { .. } | Verdict::Intact { .. })
    )
    .then(|| CopyCheck::new(id, report));
    Ok(Bundle {
        id: id.clone(),
        row,
        chain_problems,
        reviewer,
        parts,
        check,
    })
}

impl Bundle {
    /// The bundle as a tar archive under the directory `ID/`, `report.txt` last.
    fn write(self, shared: &Bastion, out: impl Write) -> std::io::Result<()> {
        let Bundle {
            id,
            row,
            chain_problems,
            reviewer,
            parts,
            mut check,
        } = self;
        let mtime = shared.clock.now().as_second().max(0).unsigned_abs();
        let mut tar = tar::Builder::new(out);
        let mut append = |name: &str, len: u64, data: &mut dyn Read| {
            let mut h = tar::Header::new_ustar();
            h.set_size(len);
            h.set_mode(0o644);
            h.set_mtime(mtime);
            h.set_cksum();
            tar.append_data(&mut h, format!("{id}/{name}"), data)
        };
        let mut digests = Vec::new();
        for (name, part) in parts {
            let (len, reader): (u64, Box<dyn Read + '_>) = match part {
                Part::File(f, len) => (len, Box::new(f.take(len))),
                Part::Bytes(b) => (b.len() as u64, Box::new(std::io::Cursor::new(b))),
            };
            let reader = match check.as_mut() {
                Some(c) if name == "recording.cast" => Box::new(Tee(reader, c)),
                _ => reader,
            };
            let mut reader = Hashing::new(reader);
            append(name, len, &mut reader)?;
            // tar pads a short file with zeros; a recording cut short since is an error.
            if reader.bytes != len {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{name} shrank while it was read"),
                ));
            }
            digests.push((name, <[u8; 32]>::from(reader.digest.finalize())));
        }
        // The report's verdict must hold for the copy in the bundle, not only for the file as
        // it was when the verdict was taken.
        if let Some(c) = &check {
            let copy = c.verdict(matches!(row.verdict, Some(Verdict::Intact { .. })));
            if !copy.ok() {
                return Err(std::io::Error::other(format!(
                    "recording.cast changed since it was verified: the copy sent is {copy}"
                )));
            }
        }
        let text = report_text(shared, &row, &digests, chain_problems, &reviewer);
        append("report.txt", text.len() as u64, &mut text.as_bytes())?;
        tar.into_inner()?.flush()
    }
}

fn report_text(
    shared: &Bastion,
    row: &Row,
    files: &[(&str, [u8; 32])],
    chain_problems: usize,
    reviewer: &str,
) -> String {
    let m = &row.meta;
    let mut t = String::new();
    let _ = writeln!(t, "stapsteen evidence bundle for session {}\n", m.id);
    for (k, v) in [
        ("admin", m.admin.clone()),
        ("target", format!("{}@{}", m.account, m.target)),
        ("grant", m.grant.clone()),
        ("source", m.source.clone()),
        ("start", local(m.start)),
        ("end", m.end.map(local).unwrap_or_else(|| "(live)".into())),
        ("end reason", m.end_reason.clone().unwrap_or_default()),
        (
            "exit status",
            m.exit_status.map(|s| s.to_string()).unwrap_or_default(),
        ),
    ] {
        let _ = writeln!(t, "{k:12} {v}");
    }
    let _ = writeln!(t, "\nintegrity    {}", row.integrity());
    let _ = writeln!(
        t,
        "audit chain  {} problem(s) in the whole chain when exported",
        chain_problems
    );
    let _ = writeln!(t, "\nfiles (SHA-256):");
    for (name, digest) in files {
        let _ = writeln!(t, "  {}  {name}", hex::encode(digest));
    }
    let _ = writeln!(
        t,
        "\nHow to check: audit-entries.jsonl holds this session's entries of the audit chain, each a\n\
         signed note (C2SP signed-note format) that audit-key.vkey verifies. The last entry's chain\n\
         hash covers every line of recording.cast: h0 = SHA-256(\"stapsteen recording v1\\n\" || id || \"\\n\"),\n\
         h(n) = SHA-256(h(n-1) || SHA-256(line n)). recording.idx holds 8 bytes of SHA-256 per line, to\n\
         locate a change; it proves nothing by itself."
    );
    let _ = writeln!(
        t,
        "\nexported by reviewer {reviewer} at {}",
        local(shared.clock.now())
    );
    t
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::{Seek, SeekFrom};
    use std::time::Duration;

    use super::*;
    use crate::audit::{Draft, Kind};
    use crate::recording::{Cadence, Meta, Recorder};

    /// Root on the appliance changes a sealed recording in place after the bundle's verdict was
    /// taken and before its bytes are sent (the reviewer's client sets the pace): the bundle
    /// must not go out with a report that calls what it holds sealed.
    #[tokio::test]
    async fn a_recording_changed_after_its_verdict_is_not_sent_as_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Bastion::for_tests(dir.path());
        let chain = shared.audit.clone();
        let id = SessionId::generate(jiff::Timestamp::now());
        let path = shared.store.cast_path(&id);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let cadence = Cadence {
            interval: Duration::from_secs(3600),
            bytes: 1 << 30,
        };
        let mut r =
            Recorder::create(&shared.store, &id, chain, cadence, (80, 24), "xterm", "t").unwrap();
        r.seal_with(Draft::new(Kind::Start).session(&id))
            .wait()
            .await
            .unwrap();
        r.output(b"rm -rf /srv/dossiers\r\n").unwrap();
        r.seal_with(Draft::new(Kind::End).session(&id))
            .wait()
            .await
            .unwrap();
        drop(r);
        shared
            .store
            .write_meta(&Meta {
                id: id.clone(),
                admin: "a".into(),
                target: "t".into(),
                account: "root".into(),
                grant: "g".into(),
                source: "s".into(),
                start: jiff::Timestamp::now(),
                end: None,
                exit_status: None,
                end_reason: None,
                pty: true,
            })
            .unwrap();
        let send = |bundle: Bundle| {
            let mut out = Vec::new();
            bundle.write(&shared, &mut out).map(|()| out)
        };
        let report = crate::audit::verify_chain(
            &crate::audit::read_lines(shared.audit.path()).unwrap(),
            shared.audit.verifier(),
        );
        let prepare = || prepare(&shared, &id, &report, 0, "r".into()).unwrap();
        // Positive control: unchanged, the bundle goes out and its report says sealed.
        let whole = send(prepare()).unwrap();
        assert!(String::from_utf8_lossy(&whole).contains("integrity    sealed ("));
        let bundle = prepare();
        assert!(matches!(bundle.row.verdict, Some(Verdict::Sealed { .. })));
        // The same file, the same length, one word changed.
        let text = std::fs::read(&path).unwrap();
        let at = text.windows(6).position(|w| w == b"rm -rf").unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(at as u64)).unwrap();
        f.write_all(b"ls -la").unwrap();
        let Err(e) = send(bundle) else {
            panic!("the changed recording went out with a report that calls it sealed");
        };
        assert!(
            e.to_string().contains("changed since it was verified"),
            "{e}"
        );
    }
}
