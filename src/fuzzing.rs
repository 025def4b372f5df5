//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz), one per parser of outside input.
//!
//! Not an API: the parsers live in crate-private modules, and these thin wrappers let the fuzz
//! crate reach them without making those modules public. Each runs the real code on its input
//! and returns what it found, or panics when an invariant the target checks does not hold.

use std::path::Path;
use std::sync::Arc;

use crate::audit::{AuditChain, Draft, Kind, NoteSigner, read_lines, verify_chain};
use crate::config::OnFailure;
use crate::ids::SessionId;
use crate::proxy::Run;
use crate::recording::{Cadence, Recorder, RecordingStore, Verdict, verify_recording};

pub use crate::recording::{check_sanitized, sanitize};

/// The policy parser on a policy file's text. Relative paths in it (attestation roots) resolve
/// under a directory that does not exist.
pub fn policy(text: &str) -> bool {
    crate::policy::parse_policy(Path::new("/nonexistent/fuzz/policy.toml"), text).is_ok()
}

/// The SSH user name forms (`alice`, `alice:beheer@pacs01`, `alice+pacs01`) and what an exec
/// command means for them. A target that parses prints back as itself.
pub fn login(user: &str, command: &[u8]) {
    use crate::frontdoor::request::{Action, Login, action};
    use crate::policy::TargetSpec;
    if let Some(spec) = TargetSpec::parse(user) {
        assert_eq!(TargetSpec::parse(&spec.to_string()), Some(spec));
    }
    let Some(login) = Login::parse(user) else {
        return;
    };
    for run in [
        Run::Shell,
        Run::Exec(command.to_vec()),
        Run::Subsystem(String::from_utf8_lossy(command).into_owned()),
    ] {
        if let Action::Open { spec, .. } = action(&login, run) {
            assert_eq!(TargetSpec::parse(&spec.to_string()), Some(spec));
        }
    }
}

/// The SFTP file audit on a fuzzed conversation: each chunk is one byte (low bit: from the
/// admin or from the target; the rest: the chunk's length) and that many bytes. Whatever comes,
/// the audit stops at most once and then reports nothing more.
pub fn sftp(data: &[u8]) -> usize {
    use crate::audit::Code;
    use crate::proxy::sftp::SftpAudit;
    let mut audit = SftpAudit::default();
    let mut found = Vec::new();
    let mut rest = data;
    while let Some((&head, tail)) = rest.split_first() {
        let (chunk, after) = tail.split_at(usize::from(head >> 1).min(tail.len()));
        found.extend(if head & 1 == 0 {
            audit.request(chunk)
        } else {
            audit.reply(chunk)
        });
        rest = after;
    }
    found.extend(audit.finish());
    if let Some(at) = found.iter().position(|f| f.code == Code::SftpUnparsed) {
        assert_eq!(at, found.len() - 1, "reported after it stopped: {found:?}");
    }
    for f in &found {
        let _ = f.label();
    }
    found.len()
}

/// The audit chain's parsers, with a signing key of its own.
pub struct AuditFixture {
    signer: NoteSigner,
}

impl AuditFixture {
    pub fn new() -> anyhow::Result<Self> {
        let key = crate::secrets::generate_key("stapsteen-fuzz");
        Ok(Self {
            signer: NoteSigner::new(&key)?,
        })
    }

    /// `data` as a signed note, as entry text, and as chain lines (none of which verify); then
    /// its first NUL-separated parts as entry texts signed with this key, so that the chain
    /// checks after the signature (sequence, links, seals) run on them too. At most 4: each
    /// costs a signature and its check.
    pub fn check(&self, data: &[u8]) {
        let verifier = self.signer.verifier();
        let text = String::from_utf8_lossy(data);
        let _ = crate::audit::parse_entry(&text);
        let _ = verifier.open(data);
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let _ = verify_chain(&lines, verifier);
        let signed: Vec<String> = text
            .split('\0')
            .take(4)
            .filter_map(|entry| {
                let entry = if entry.ends_with('\n') {
                    entry.to_owned()
                } else {
                    format!("{entry}\n")
                };
                let note = self.signer.sign(&entry).ok()?;
                serde_json::to_string(&crate::audit::Line {
                    note: String::from_utf8(note).ok()?,
                })
                .ok()
            })
            .collect();
        let _ = verify_chain(&signed, verifier);
    }
}

/// Console requests: the sessions page's query string (with its time fields read in the policy's
/// zone), a session id from a path, and the player markers made from a recording's events.
pub fn console(query: &str, events: &[u8]) {
    use crate::console::catalog::{Filter, local_time, markers_of};
    let _ = SessionId::parse(query);
    if let Ok(uri) = format!("/sessions?{query}").parse::<axum::http::Uri>()
        && let Ok(axum::extract::Query(filter)) = axum::extract::Query::<Filter>::try_from_uri(&uri)
    {
        let _ = local_time("from", &filter.from);
        let _ = local_time("to", &filter.to);
    }
    let events: Vec<(f64, String, String)> = String::from_utf8_lossy(events)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let meta = crate::recording::Meta {
        id: SessionId::generate(jiff::Timestamp::UNIX_EPOCH),
        admin: "alice".into(),
        target: "pacs01".into(),
        account: "beheer".into(),
        grant: "g".into(),
        source: String::new(),
        start: jiff::Timestamp::UNIX_EPOCH,
        end: Some(jiff::Timestamp::UNIX_EPOCH),
        exit_status: Some(0),
        end_reason: None,
        pty: true,
    };
    for (_, label) in markers_of(&meta, &events) {
        assert!(!label.contains(['\r', '\n']), "marker {label:?}");
    }
}

/// A recordings directory and an audit chain that seals one recording, for fuzzing the reader
/// and the verifier with recordings that replace it.
pub struct RecordingFixture {
    _dir: tempfile::TempDir,
    store: RecordingStore,
    id: SessionId,
    report: crate::audit::ChainReport,
    /// The sealed recording and its line index, as the daemon wrote them.
    pub cast: Vec<u8>,
    pub index: Vec<u8>,
}

impl RecordingFixture {
    /// Records `output` (one event per line of it) and seals it as a whole session.
    pub fn new(output: &[u8]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let key = crate::secrets::generate_key("stapsteen-fuzz");
        let chain = Arc::new(AuditChain::open(
            &dir.path().join("chain.jsonl"),
            NoteSigner::new(&key)?,
            Arc::new(crate::clock::SystemClock),
            OnFailure::EndSessions,
        )?);
        let store = RecordingStore::new(dir.path().join("recordings"));
        std::fs::create_dir(dir.path().join("recordings"))?;
        let id = SessionId::generate(jiff::Timestamp::UNIX_EPOCH);
        let cadence = Cadence {
            interval: std::time::Duration::from_secs(3600),
            bytes: 1 << 30,
        };
        let mut r = Recorder::create(&store, &id, chain.clone(), cadence, (80, 24), "xterm", "t")?;
        r.seal_with(Draft::new(Kind::Start).session(&id))
            .wait_blocking()?;
        for line in output.split_inclusive(|b| *b == b'\n') {
            r.output(line)?;
        }
        r.input(b"ls\r")?;
        r.seal_with(Draft::new(Kind::End).session(&id))
            .wait_blocking()?;
        drop(r);
        let report = verify_chain(&read_lines(chain.path())?, chain.verifier());
        let cast = std::fs::read(store.cast_path(&id))?;
        let index = std::fs::read(store.index_path(&id))?;
        Ok(Self {
            _dir: dir,
            store,
            id,
            report,
            cast,
            index,
        })
    }

    /// Puts `cast` in place of the recording and verifies it; reads its output as
    /// `recordings cat` does and checks that only allowed sequences come out.
    pub fn check(&self, cast: &[u8]) -> std::io::Result<Verdict> {
        std::fs::write(self.store.cast_path(&self.id), cast)?;
        std::fs::write(self.store.index_path(&self.id), &self.index)?;
        let verdict = verify_recording(&self.store, &self.id, &self.report);
        if cast == self.cast.as_slice() {
            assert!(
                matches!(verdict, Verdict::Sealed { .. }),
                "the sealed recording verifies as {verdict}"
            );
        }
        // The console's markers find the same typed lines in the events they keep as in all.
        let all: Vec<_> = self.store.events(&self.id)?.collect();
        let kept = crate::recording::typed::marker_events(all.iter().cloned());
        for pty in [true, false] {
            assert_eq!(
                crate::recording::typed::typed_lines(&kept, pty),
                crate::recording::typed::typed_lines(&all, pty),
                "the markers' events lost a window"
            );
        }
        match self.store.output_text(&self.id) {
            Ok(text) => {
                let checked = check_sanitized(&text);
                assert!(checked.is_ok(), "recordings cat lets through {checked:?}");
            }
            // Not UTF-8: `recordings cat` refuses it.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {}
            Err(e) => return Err(e),
        }
        Ok(verdict)
    }
}

/// Attestation roots and the key an attestation must be for.
pub struct AttestationFixture {
    roots: crate::seckey::Roots,
    key: russh::keys::PublicKey,
}

impl AttestationFixture {
    /// `root_pem`: a PEM file of roots; `key`: an OpenSSH public key line.
    pub fn load(root_pem: &Path, key: &str) -> anyhow::Result<Self> {
        Ok(Self {
            roots: crate::seckey::Roots::load(&[root_pem])?,
            key: russh::keys::PublicKey::from_openssh(key)?,
        })
    }

    /// Verifies an attestation file's contents made with `challenge`; what it says, if valid.
    pub fn verify(&self, blob: &[u8], challenge: &[u8]) -> Option<crate::seckey::Attested> {
        crate::seckey::verify_attestation(blob, challenge, &self.key, &self.roots).ok()
    }
}

/// The software security key's agent, for fuzzing the requests it answers.
#[cfg(feature = "demo")]
pub struct AgentFixture {
    _dir: tempfile::TempDir,
    key: crate::softkey::SoftKey,
}

#[cfg(feature = "demo")]
impl AgentFixture {
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let key = crate::softkey::SoftKey::open(
            &dir.path().join("key"),
            "ssh:",
            crate::seckey::USER_PRESENT | crate::seckey::USER_VERIFIED,
            1,
            false,
        )?;
        Ok(Self { _dir: dir, key })
    }

    /// The request a fuzz input stands for: itself, or, when it starts with 0xff, a sign request
    /// for this key's own blob over the rest (so the signing path is reached too).
    pub fn request(&self, data: &[u8]) -> Vec<u8> {
        use russh::keys::ssh_key::encoding::Encode;
        let Some((0xff, message)) = data.split_first() else {
            return data.to_vec();
        };
        let blob = self
            .key
            .public_key()
            .key_data()
            .encode_vec()
            .unwrap_or_default();
        let mut r = vec![13];
        let _ = blob.encode(&mut r);
        let _ = message.encode(&mut r);
        let _ = 0u32.encode(&mut r);
        r
    }

    /// Answers one agent request (the message without its length); a reply is never empty.
    pub fn answer(&self, request: &[u8]) -> Vec<u8> {
        let reply = self.key.answer(request);
        assert!(!reply.is_empty(), "an empty agent reply");
        reply
    }
}

/// Every committed seed through its target's entry point, so that `cargo test` replays them
/// (a crash found by fuzzing is added to the corpus, and stays a regression test here).
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        assert!(!out.is_empty(), "no seeds in {}", dir.display());
        out.sort();
        out
    }

    fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
        match data.iter().position(|b| *b == b'\n') {
            Some(at) => (&data[..at], &data[at + 1..]),
            None => (data, &[]),
        }
    }

    #[test]
    fn seeds_replay() {
        assert!(
            seeds("policy")
                .iter()
                .any(|s| policy(&String::from_utf8_lossy(s)))
        );
        for s in seeds("login") {
            let (user, command) = split_line(&s);
            login(&String::from_utf8_lossy(user), command);
        }
        for s in seeds("sanitize") {
            let out = sanitize(&String::from_utf8_lossy(&s));
            check_sanitized(&out).unwrap();
            assert_eq!(sanitize(&out), out);
        }
        let f = RecordingFixture::new(b"$ ls\r\nREADME\r\n").unwrap();
        assert!(matches!(f.check(&f.cast).unwrap(), Verdict::Sealed { .. }));
        for s in seeds("recording") {
            f.check(&s).unwrap();
        }
        let a = AuditFixture::new().unwrap();
        for s in seeds("audit") {
            a.check(&s);
        }
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fixtures");
        let key = std::fs::read_to_string(fixtures.join("attestation-key.pub")).unwrap();
        let a =
            AttestationFixture::load(&fixtures.join("attestation-root.pem"), key.trim()).unwrap();
        let verified = seeds("attestation")
            .iter()
            .filter(|s| a.verify(s, b"stapsteen fuzz challenge").is_some())
            .count();
        assert_eq!(verified, 1, "the software key's own attestation verifies");
        let reported: usize = seeds("sftp").iter().map(|s| sftp(s)).sum();
        assert!(reported > 0, "the sftp seeds hold file operations");
        for s in seeds("console") {
            let (query, events) = split_line(&s);
            console(&String::from_utf8_lossy(query), events);
        }
        #[cfg(feature = "demo")]
        {
            let agent = AgentFixture::new().unwrap();
            for s in seeds("agent") {
                agent.answer(&agent.request(&s));
            }
        }
    }
}
