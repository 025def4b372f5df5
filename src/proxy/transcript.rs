//! What crossed a channel: the asciicast recording for pty sessions, byte counts and SHA-256 per
//! direction for every session, and the time of the admin's last input; and the session's
//! `start` and `end` entries in the audit chain.
//!
//! Invariant: a recording write error is returned (the caller ends the session) and reported to
//! the chain as a storage failure; only with `on_failure = "alert-and-continue"` is the recorder
//! dropped instead and the session goes on, unrecorded, after an alert.

use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::audit::{Ack, AuditChain, Code, Draft, Event, Kind};
use crate::ids::SessionId;
use crate::recording::{Recorder, RecordingError, SealAck};

pub struct Transcript {
    id: SessionId,
    audit: Arc<AuditChain>,
    recorder: Option<Recorder>,
    record_input: bool,
    pub bytes_in: u64,
    pub bytes_out: u64,
    sha_in: Sha256,
    sha_out: Sha256,
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
            record_input,
            bytes_in: 0,
            bytes_out: 0,
            sha_in: Sha256::new(),
            sha_out: Sha256::new(),
            last_activity: Instant::now(),
            output_is_activity: !pty,
            exit_status: None,
            exit_signal: None,
        })
    }

    /// Passes a recording error on, or (alert-and-continue) drops the recorder after an alert.
    fn failed(&mut self, e: RecordingError) -> Result<(), RecordingError> {
        self.audit
            .storage_failed(&format!("recording failed: {}", e.cause()));
        if self.audit.fail_closed() {
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
        match self.recorder.as_mut().map(f) {
            Some(Err(e)) => self.failed(e),
            _ => Ok(()),
        }
    }

    pub fn input(&mut self, data: &[u8]) -> Result<(), RecordingError> {
        self.bytes_in += data.len() as u64;
        self.sha_in.update(data);
        self.last_activity = Instant::now();
        if !self.record_input {
            return Ok(());
        }
        self.record(|r| r.input(data))
    }

    pub fn output(&mut self, data: &[u8]) -> Result<(), RecordingError> {
        self.bytes_out += data.len() as u64;
        self.sha_out.update(data);
        if self.output_is_activity {
            self.last_activity = Instant::now();
        }
        self.record(|r| r.output(data))
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

    /// Writes the end marker and hands the `end` entry with the final count to the writer;
    /// [`Finishing::wait`] says when it is stored. Dropping the [`Finishing`] does not stop it.
    pub fn finish(&mut self, label: &str, reason: &str) -> Finishing {
        let sha_in = hex::encode(self.sha_in.clone().finalize());
        let sha_out = hex::encode(self.sha_out.clone().finalize());
        let marked = self.record(|r| r.marker(label));
        let mut draft = Draft::new(Kind::End)
            .session(&self.id)
            .field("reason", reason)
            .field("sha256_in", &sha_in)
            .field("sha256_out", &sha_out);
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

        /// A session of 20 output lines, checkpointed every ~200 bytes; ended if `end`, else
        /// on disk up to its last line.
        async fn session(&self, end: bool) -> (SessionId, Transcript) {
            let id = SessionId::generate(jiff::Timestamp::now());
            let cadence = Cadence {
                interval: Duration::from_secs(60),
                bytes: 200,
            };
            let r = Recorder::create(
                &self.store,
                &id,
                self.chain.clone(),
                cadence,
                (80, 24),
                "xterm",
                "t",
            )
            .unwrap();
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
