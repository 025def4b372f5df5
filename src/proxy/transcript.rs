//! What crossed a channel: the asciicast recording (every session; see
//! [`crate::recording::streams`] for channels without a terminal, and [`super::sftp`] for the
//! sftp subsystem, whose recording holds its file operations instead of its bytes), byte counts
//! and SHA-256 per direction (and for stderr apart, without a terminal), and the time of the
//! admin's last input; and the session's `start` and `end` entries in the audit chain.
//!
//! Invariant: a recording write error is returned (the caller ends this session, and only this
//! one: the chain reports its own failures, which end them all); only with `on_failure =
//! "alert-and-continue"` is the recorder dropped instead and the session goes on, unrecorded,
//! after an alert. Every recorded byte is charged to the session's [`Charge`], if it has one, and
//! a recording limit ends the session whatever `on_failure` says.

use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::sftp::SftpAudit;
use crate::app::Charge;
use crate::audit::{Ack, AuditChain, Code, Draft, Event, Kind};
use crate::ids::SessionId;
use crate::recording::streams::{Budget, Spend, Stream, cap_marker, crlf};
use crate::recording::{Backlog, Recorder, RecordingError, SealAck};

/// What the channel carries, which decides what its recording holds.
enum Carries {
    /// A pty: everything as the terminal showed it, stderr merged (the target's pty merges it).
    Terminal,
    /// No pty: both output streams marked apart, up to a byte budget per direction.
    Stream {
        output: Budget,
        input: Budget,
        max: u64,
        /// The stream of the last recorded output.
        last: Stream,
    },
    /// The sftp subsystem: its file operations, audited and written as markers; once the audit
    /// stops following the channel, a `Stream` of `max` bytes per direction, so that what it can
    /// no longer tell is in the recording as bytes.
    Sftp {
        audit: Box<SftpAudit>,
        event: Event,
        max: u64,
    },
}

pub struct Transcript {
    id: SessionId,
    audit: Arc<AuditChain>,
    recorder: Option<Recorder>,
    /// The recording's account against the recording limits.
    charge: Option<Charge>,
    record_input: bool,
    pub bytes_in: u64,
    pub bytes_out: u64,
    sha_in: Sha256,
    sha_out: Sha256,
    carries: Carries,
    /// stderr without a terminal, counted apart.
    pub bytes_err: u64,
    sha_err: Sha256,
    pub last_activity: Instant,
    /// Output counts as activity only for sessions without a pty (transfers, commands).
    output_is_activity: bool,
    pub exit_status: Option<u32>,
    pub exit_signal: Option<String>,
}

impl Transcript {
    /// Appends the session's `start` entry (`fields`: admin, target, ...) before anything is
    /// dialled, sealing what the recording holds so far; no entry, no session.
    pub async fn start(
        id: &SessionId,
        audit: Arc<AuditChain>,
        mut recorder: Option<Recorder>,
        record_input: bool,
        pty: bool,
        fields: &[(&'static str, String)],
    ) -> Result<Self, RecordingError> {
        let mut draft = Draft::new(Kind::Start).session(id);
        for (k, v) in fields {
            draft = draft.field(k, v);
        }
        let stored = match &mut recorder {
            Some(r) => r.seal_with(draft).wait().await,
            None => audit.append(draft).await.map(|_| ()).map_err(Into::into),
        };
        if let Err(e) = stored
            && audit.fail_closed()
        {
            return Err(e);
        }
        Ok(Self {
            id: id.clone(),
            audit,
            recorder,
            charge: None,
            record_input,
            bytes_in: 0,
            bytes_out: 0,
            sha_in: Sha256::new(),
            sha_out: Sha256::new(),
            carries: if pty {
                Carries::Terminal
            } else {
                Carries::Stream {
                    output: Budget::new(u64::MAX),
                    input: Budget::new(u64::MAX),
                    max: u64::MAX,
                    last: Stream::Stdout,
                }
            },
            bytes_err: 0,
            sha_err: Sha256::new(),
            last_activity: Instant::now(),
            output_is_activity: !pty,
            exit_status: None,
            exit_signal: None,
        })
    }

    /// Charges the recording's bytes to `charge` from now on, and what it holds already: the
    /// header (whose TERM the admin's client chose) and the start marker, so that sessions that
    /// end before their first write (a target that refuses) count too. The day's total takes
    /// them whatever the result; a limit they pass ends the session at its next write.
    pub fn set_charge(&mut self, mut charge: Charge) {
        let _ = charge.add(self.recorder.as_ref().map_or(0, Recorder::bytes));
        self.charge = Some(charge);
    }

    /// Passes a recording error on, or (alert-and-continue) drops the recorder after an alert.
    /// The error concerns this session: a chain failure was reported by the chain itself.
    fn failed(&mut self, e: RecordingError) -> Result<(), RecordingError> {
        if self.audit.fail_closed() {
            Event::new(Code::RecordingFailed)
                .session(&self.id)
                .reason(format!("{e}; the session is ended"))
                .emit();
            return Err(e);
        }
        self.recorder = None;
        Event::new(Code::RecordingFailed)
            .session(&self.id)
            .reason(format!(
                "{e}; the session goes on unrecorded (alert-and-continue)"
            ))
            .emit();
        Ok(())
    }

    fn record(
        &mut self,
        f: impl FnOnce(&mut Recorder) -> Result<(), RecordingError>,
    ) -> Result<(), RecordingError> {
        let Some(r) = self.recorder.as_mut() else {
            return Ok(());
        };
        let before = r.bytes();
        let written = f(r);
        let grown = r.bytes().saturating_sub(before);
        if let Err(e) = written {
            return self.failed(e);
        }
        match self.charge.as_mut().map(|c| c.add(grown)) {
            Some(Err(e)) => {
                // Audited once: the caller ends the session, and its last lines go uncharged.
                let admin = self.charge.take().map(|c| c.admin().to_owned());
                Event::new(Code::RecordingQuota)
                    .session(&self.id)
                    .admin(admin.unwrap_or_default())
                    .reason(&e)
                    .detail("limit", e.limit())
                    .emit();
                Err(RecordingError::Quota(e.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// A channel without a terminal records at most `max` bytes per direction.
    pub fn limit(mut self, max: u64) -> Self {
        if let Carries::Stream { .. } = self.carries {
            self.carries = Carries::Stream {
                output: Budget::new(max),
                input: Budget::new(max),
                max,
                last: Stream::Stdout,
            };
        }
        self
    }

    /// The channel carries the sftp subsystem: its file operations are audited as `event`
    /// (`SESSION_START`'s fields) under their own codes, and recorded as markers; if the audit
    /// stops following it, its bytes are recorded from there, up to `max` per direction.
    pub fn sftp(mut self, event: Event, max: u64) -> Self {
        self.carries = Carries::Sftp {
            audit: Box::new(SftpAudit::default()),
            event,
            max,
        };
        self
    }

    pub fn input(&mut self, data: &[u8]) -> Result<(), RecordingError> {
        self.bytes_in += data.len() as u64;
        self.sha_in.update(data);
        self.last_activity = Instant::now();
        if let Carries::Sftp { audit, .. } = &mut self.carries {
            let found = audit.request(data);
            self.sftp_found(found)?;
        }
        let spend = match &mut self.carries {
            Carries::Terminal => Spend::Record,
            Carries::Stream { input, .. } => input.spend(data.len()),
            Carries::Sftp { .. } => return Ok(()),
        };
        if !self.record_input {
            return Ok(());
        }
        let keep = kept(spend, data);
        if !keep.is_empty() {
            self.record(|r| r.input(keep))?;
        }
        self.spent(spend, "input")
    }

    /// Some when the recording's disk lags behind what was carried: wait on it (with the lock
    /// let go) before carrying more.
    pub fn backlog(&self) -> Option<Backlog> {
        self.recorder.as_ref().and_then(Recorder::backlog)
    }

    /// A failure seen while waiting on [`Transcript::backlog`]: passed on, or (alert-and-continue)
    /// the recorder dropped after an alert, as any recording failure.
    pub fn lagged(&mut self, e: RecordingError) -> Result<(), RecordingError> {
        self.failed(e)
    }

    /// Target output on stdout, or on a pty.
    pub fn output(&mut self, data: &[u8]) -> Result<(), RecordingError> {
        self.bytes_out += data.len() as u64;
        self.sha_out.update(data);
        if self.output_is_activity {
            self.last_activity = Instant::now();
        }
        self.stream_output(Stream::Stdout, data)
    }

    /// Target output on stderr: merged into the output on a pty, counted apart without one.
    pub fn stderr(&mut self, data: &[u8]) -> Result<(), RecordingError> {
        if let Carries::Terminal = self.carries {
            return self.output(data);
        }
        self.bytes_err += data.len() as u64;
        self.sha_err.update(data);
        if self.output_is_activity {
            self.last_activity = Instant::now();
        }
        self.stream_output(Stream::Stderr, data)
    }

    fn stream_output(&mut self, stream: Stream, data: &[u8]) -> Result<(), RecordingError> {
        if let Carries::Sftp { audit, .. } = &mut self.carries
            && stream == Stream::Stdout
        {
            let found = audit.reply(data);
            self.sftp_found(found)?;
        }
        let (spend, switched) = match &mut self.carries {
            Carries::Terminal => return self.record(|r| r.output(data)),
            Carries::Sftp { .. } => return Ok(()),
            Carries::Stream { output, last, .. } => {
                let spend = output.spend(data.len());
                let switched = (!kept(spend, data).is_empty() && *last != stream).then(|| {
                    *last = stream;
                    stream
                });
                (spend, switched)
            }
        };
        // `last` starts as stdout: stderr that starts the output is marked too.
        if let Some(s) = switched {
            self.record(|r| r.marker(s.marker()))?;
        }
        let keep = kept(spend, data);
        if !keep.is_empty() {
            self.record(|r| r.output(&crlf(keep)))?;
        }
        self.spent(spend, "output")
    }

    /// Writes the marker when a direction's budget just ran out.
    fn spent(&mut self, spend: Spend, direction: &str) -> Result<(), RecordingError> {
        if let (Spend::RanOut { .. }, Carries::Stream { max, .. }) = (spend, &self.carries) {
            let label = cap_marker(direction, *max);
            return self.record(|r| r.marker(&label));
        }
        Ok(())
    }

    /// Audits what the sftp parser found and writes it to the recording; when it stopped
    /// following the channel, the channel is recorded as a stream from here on (the chunk that
    /// stopped it included).
    fn sftp_found(&mut self, found: Vec<super::sftp::Found>) -> Result<(), RecordingError> {
        let Carries::Sftp { event, max, .. } = &self.carries else {
            return Ok(());
        };
        let (event, max) = (event.clone(), *max);
        let mut lost = false;
        for f in found {
            lost |= f.code == Code::SftpUnparsed;
            let label = f.label();
            f.event(event.clone()).emit();
            self.record(|r| r.marker(&label))?;
        }
        if lost {
            self.carries = Carries::Stream {
                output: Budget::new(max),
                input: Budget::new(max),
                max,
                last: Stream::Stdout,
            };
            self.record(|r| r.marker(SFTP_RAW))?;
        }
        Ok(())
    }

    pub fn resize(&mut self, cols: u32, rows: u32) -> Result<(), RecordingError> {
        self.record(|r| r.resize(cols, rows))
    }

    pub fn marker(&mut self, label: &str) -> Result<(), RecordingError> {
        self.record(|r| r.marker(label))
    }

    /// A checkpoint when one is due by time.
    pub fn tick(&mut self) -> Result<(), RecordingError> {
        self.record(Recorder::tick)
    }

    /// Bytes and SHA-256 of stderr, for a channel without a terminal.
    pub fn stderr_digest(&self) -> Option<(u64, String)> {
        match self.carries {
            Carries::Terminal => None,
            _ => Some((self.bytes_err, hex::encode(self.sha_err.clone().finalize()))),
        }
    }

    /// Writes the end marker and hands the `end` entry with the final count to the writer;
    /// [`Finishing::wait`] says when it is stored. Dropping the [`Finishing`] does not stop it.
    pub fn finish(&mut self, label: &str, reason: &str) -> Finishing {
        let sha_in = hex::encode(self.sha_in.clone().finalize());
        let sha_out = hex::encode(self.sha_out.clone().finalize());
        // The end marker, and the files an sftp session left open, are written whatever the
        // quota says.
        self.charge = None;
        let open = match &mut self.carries {
            Carries::Sftp { audit, .. } => audit.finish(),
            _ => Vec::new(),
        };
        let closed = self.sftp_found(open);
        let marked = closed.and(self.record(|r| r.marker(label)));
        let mut draft = Draft::new(Kind::End)
            .session(&self.id)
            .field("reason", reason)
            .field("sha256_in", &sha_in)
            .field("sha256_out", &sha_out);
        if let Some((_, sha)) = self.stderr_digest() {
            draft = draft.field("sha256_err", sha);
        }
        if let Some(code) = self.exit_status {
            draft = draft.field("exit_status", code);
        }
        let stored = match self.recorder.take() {
            Some(mut r) => Stored::Recording(r.seal_with(draft)),
            None => Stored::Chain(self.audit.submit(draft)),
        };
        Finishing {
            marked,
            stored,
            fail_closed: self.audit.fail_closed(),
            sha_in,
            sha_out,
        }
    }
}

enum Stored {
    Recording(SealAck),
    Chain(Ack),
}

/// A session's end on its way to disk.
#[must_use = "drop it only where nobody can wait (the entry is still written)"]
pub struct Finishing {
    marked: Result<(), RecordingError>,
    stored: Stored,
    fail_closed: bool,
    pub sha_in: String,
    pub sha_out: String,
}

impl Finishing {
    /// Waits until the recording is on disk and the `end` entry in the chain; returns the
    /// outcome and the digests (in, out).
    pub async fn wait(self) -> (Result<(), RecordingError>, String, String) {
        let stored = match self.stored {
            Stored::Recording(ack) => ack.wait().await,
            Stored::Chain(ack) => ack.wait().await.map(|_| ()).map_err(Into::into),
        };
        let mut result = self.marked;
        if let Err(e) = stored
            && self.fail_closed
        {
            result = result.and(Err(e));
        }
        (result, self.sha_in, self.sha_out)
    }
}

/// Written when the sftp audit stops following a channel.
const SFTP_RAW: &str =
    "recording: the sftp audit stopped; the channel's bytes follow as a channel without a pty";

/// The part of `data` a direction's budget lets into the recording.
fn kept(spend: Spend, data: &[u8]) -> &[u8] {
    match spend {
        Spend::Record => data,
        Spend::RanOut { keep } => data.get(..keep).unwrap_or(data),
        Spend::Skip => &[],
    }
}

/// What a transcript leaves behind verifies as it should, and tampering is located.
#[cfg(test)]
mod verdicts {
    use std::sync::Arc;
    use std::time::Duration;

    use super::Transcript;
    use crate::audit::{AuditChain, read_lines, test_chain, verify_chain};
    use crate::ids::SessionId;
    use crate::recording::{Cadence, Recorder, RecordingStore, Verdict, verify_recording};

    struct Bed {
        /// Holds the directory for the test's lifetime.
        _dir: tempfile::TempDir,
        store: RecordingStore,
        chain: Arc<AuditChain>,
    }

    impl Bed {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = RecordingStore::new(dir.path().to_owned());
            let chain = test_chain(dir.path());
            Self {
                _dir: dir,
                store,
                chain,
            }
        }

        /// A recorder for a new session, 80x24, checkpointed every `bytes`.
        fn recorder(&self, bytes: u64, term: &str) -> (SessionId, Recorder) {
            let id = SessionId::generate(jiff::Timestamp::now());
            let cadence = Cadence {
                interval: Duration::from_secs(60),
                bytes,
            };
            let r = Recorder::create(
                &self.store,
                &id,
                self.chain.clone(),
                cadence,
                (80, 24),
                term,
                "t",
            )
            .unwrap();
            (id, r)
        }

        /// A session of 20 output lines, checkpointed every ~200 bytes; ended if `end`, else
        /// on disk up to its last line.
        async fn session(&self, end: bool) -> (SessionId, Transcript) {
            let (id, r) = self.recorder(200, "xterm");
            let mut t = Transcript::start(&id, self.chain.clone(), Some(r), true, true, &[])
                .await
                .unwrap();
            for i in 0..20 {
                t.output(format!("line {i} \x1b[1mbold\x1b[0m\r\n").as_bytes())
                    .unwrap();
            }
            if end {
                t.finish("end: exit status 0", "closed")
                    .wait()
                    .await
                    .0
                    .unwrap();
            } else {
                t.recorder.as_mut().unwrap().flushed().wait().await.unwrap();
            }
            (id, t)
        }

        /// The recording's events after the header, as (kind, data); every line must parse.
        fn events(&self, id: &SessionId) -> Vec<(String, String)> {
            let text = std::fs::read_to_string(self.store.cast_path(id)).unwrap();
            text.lines()
                .skip(1)
                .map(|l| {
                    let (_, k, d): (f64, String, String) = serde_json::from_str(l).unwrap();
                    (k, d)
                })
                .collect()
        }

        fn verdict(&self, id: &SessionId) -> Verdict {
            let lines = read_lines(self.chain.path()).unwrap();
            verify_recording(
                &self.store,
                id,
                &verify_chain(&lines, self.chain.verifier()),
            )
        }

        fn edit(&self, id: &SessionId, f: impl FnOnce(&mut Vec<Vec<u8>>)) {
            let path = self.store.cast_path(id);
            let data = std::fs::read(&path).unwrap();
            let mut lines: Vec<Vec<u8>> = data
                .split_inclusive(|b| *b == b'\n')
                .map(<[u8]>::to_vec)
                .collect();
            f(&mut lines);
            std::fs::write(path, lines.concat()).unwrap();
        }
    }

    /// A channel without a pty: streams marked apart, LF as CR LF, each direction's budget.
    #[tokio::test]
    async fn streams_without_a_pty() {
        let bed = Bed::new();
        let (id, r) = bed.recorder(1 << 20, "");
        let mut t = Transcript::start(&id, bed.chain.clone(), Some(r), true, false, &[])
            .await
            .unwrap()
            .limit(12);
        t.stderr(b"e1\n").unwrap();
        t.output(b"o1\n").unwrap();
        t.output(b"o2\n").unwrap();
        t.output(b"o3-cut\n").unwrap();
        t.stderr(b"e2\n").unwrap();
        t.input(b"0123456789").unwrap();
        t.input(b"abc").unwrap();
        t.input(b"def").unwrap();
        t.exit_status = Some(2);
        t.finish("end: exit status 2", "closed")
            .wait()
            .await
            .0
            .unwrap();
        assert_eq!((t.bytes_out, t.bytes_err, t.bytes_in), (13, 6, 16));
        let events = bed.events(&id);
        let ev = |k: &str, d: &str| (k.to_owned(), d.to_owned());
        assert_eq!(
            events,
            [
                ev("m", "stream: stderr"),
                ev("o", "e1\r\n"),
                ev("m", "stream: stdout"),
                ev("o", "o1\r\n"),
                ev("o", "o2\r\n"),
                ev("o", "o3-"),
                ev("m", &crate::recording::streams::cap_marker("output", 12)),
                ev("i", "0123456789"),
                ev("i", "ab"),
                ev("m", &crate::recording::streams::cap_marker("input", 12)),
                ev("m", "end: exit status 2"),
            ]
        );
        assert!(bed.verdict(&id).ok(), "{}", bed.verdict(&id));
    }

    /// The header and start marker, written before the session is charged, count too: a
    /// client's long TERM, or many sessions that end at once, cannot record around the quota.
    #[tokio::test]
    async fn what_was_written_before_the_charge_is_charged() {
        let bed = Bed::new();
        let id = SessionId::generate(jiff::Timestamp::now());
        let cadence = Cadence {
            interval: Duration::from_secs(60),
            bytes: 1 << 20,
        };
        let term = "x".repeat(300);
        let r = Recorder::create(
            &bed.store,
            &id,
            bed.chain.clone(),
            cadence,
            (80, 24),
            &term,
            "t",
        )
        .unwrap();
        let config = crate::config::RecordingConfig {
            max_bytes_per_session: 200,
            min_free_bytes: 0,
            ..Default::default()
        };
        let quota = Arc::new(crate::app::RecordingQuota::new(
            &config,
            bed.store.cast_path(&id).parent().unwrap().to_owned(),
            Arc::new(crate::clock::SystemClock),
        ));
        let mut t = Transcript::start(&id, bed.chain.clone(), Some(r), true, true, &[])
            .await
            .unwrap();
        t.set_charge(quota.charge("alice"));
        let e = t.output(b"x").unwrap_err();
        assert!(e.cause().contains("quota"), "{}", e.cause());
    }

    /// An sftp channel the audit stops following (here an INIT the target accepts and the audit
    /// does not) goes on in the recording as bytes: giving up does not leave it unrecorded.
    #[tokio::test]
    async fn an_sftp_channel_the_audit_gives_up_on_is_recorded_as_bytes() {
        let bed = Bed::new();
        let (id, r) = bed.recorder(1 << 20, "");
        let event = crate::audit::Event::new(crate::audit::Code::SessionStart).session(&id);
        let mut t = Transcript::start(&id, bed.chain.clone(), Some(r), true, false, &[])
            .await
            .unwrap()
            .sftp(event, 1 << 20);
        t.input(b"\0\0\0\x05\x01\0\0\0\x02").unwrap();
        t.output(b"\0\0\0\x05\x02\0\0\0\x03").unwrap();
        t.input(b"later").unwrap();
        t.finish("end: closed", "closed").wait().await.0.unwrap();
        let events = bed.events(&id);
        assert!(events[0].1.starts_with("sftp: SFTP_UNPARSED"), "{events:?}");
        assert_eq!(events[1].1, super::SFTP_RAW);
        assert_eq!(
            events[2],
            ("i".into(), "\0\0\0\u{5}\u{1}\0\0\0\u{2}".into())
        );
        assert_eq!(events[3].0, "o");
        assert_eq!(events[4], ("i".into(), "later".into()));
        assert!(bed.verdict(&id).ok(), "{}", bed.verdict(&id));
    }

    #[tokio::test]
    async fn sealed_and_live() {
        let bed = Bed::new();
        let (id, _t) = bed.session(true).await;
        assert_eq!(bed.verdict(&id), Verdict::Sealed { lines: 22 });
        let (live, t) = bed.session(false).await;
        assert!(
            matches!(bed.verdict(&live), Verdict::Intact { lines, .. } if lines > 1),
            "{}",
            bed.verdict(&live)
        );
        drop(t);
        // The writer job lets go of the file (and its lock) just after its last write.
        let waited = std::time::Instant::now();
        while matches!(bed.verdict(&live), Verdict::Intact { .. })
            && waited.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(matches!(bed.verdict(&live), Verdict::Unterminated { .. }));
    }

    #[tokio::test]
    async fn tampering_is_located() {
        let bed = Bed::new();
        let (id, _) = bed.session(true).await;
        bed.edit(&id, |l| l[7][5] ^= 1);
        assert_eq!(
            bed.verdict(&id),
            Verdict::Modified {
                at: 8,
                how: "line changed"
            }
        );

        let (id, _) = bed.session(true).await;
        bed.edit(&id, |l| {
            l.remove(9);
        });
        assert_eq!(
            bed.verdict(&id),
            Verdict::Modified {
                at: 10,
                how: "line deleted"
            }
        );

        let (id, _) = bed.session(true).await;
        bed.edit(&id, |l| l.truncate(15));
        assert_eq!(
            bed.verdict(&id),
            Verdict::Truncated {
                after: 15,
                sealed: 22
            }
        );

        // The index rewritten along with the change: the signed seals still catch it.
        let (id, _) = bed.session(true).await;
        bed.edit(&id, |l| l[12] = b"[1.0, \"o\", \"rm -rf /\"]\n".to_vec());
        std::fs::remove_file(bed.store.index_path(&id)).unwrap();
        assert!(
            matches!(bed.verdict(&id), Verdict::ModifiedBetween { from, to } if from <= 13 && to >= 13),
            "{}",
            bed.verdict(&id)
        );
    }

    #[tokio::test]
    async fn swapped_missing_unknown() {
        let bed = Bed::new();
        let (a, _) = bed.session(true).await;
        let (b, _) = bed.session(true).await;
        let (pa, pb) = (bed.store.cast_path(&a), bed.store.cast_path(&b));
        let tmp = pa.with_extension("tmp");
        std::fs::rename(&pa, &tmp).unwrap();
        std::fs::rename(&pb, &pa).unwrap();
        std::fs::rename(&tmp, &pb).unwrap();
        assert_eq!(bed.verdict(&a), Verdict::Swapped { holds: b.clone() });
        std::fs::remove_file(&pa).unwrap();
        assert_eq!(bed.verdict(&a), Verdict::Missing);
        let stranger = SessionId::generate(jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(bed.verdict(&stranger), Verdict::Unknown);
    }
}
