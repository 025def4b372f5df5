//! What crossed a channel: the asciicast recording for pty sessions, byte counts and SHA-256 per
//! direction for every session, and the time of the admin's last input; and the session's
//! `start` and `end` entries in the audit chain.
//!
//! Invariant: a recording write error is returned (the caller ends this session, and only this
//! one: the chain reports its own failures, which end them all); only with `on_failure =
//! "alert-and-continue"` is the recorder dropped instead and the session goes on, unrecorded,
//! after an alert. Every recorded byte is charged to the session's [`Charge`], if it has one, and
//! a recording limit ends the session whatever `on_failure` says.

use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::app::Charge;
use crate::audit::{AuditChain, ChainError, Code, Draft, Event, Kind};
use crate::ids::SessionId;
use crate::recording::{Recorder, RecordingError};

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
    pub last_activity: Instant,
    /// Output counts as activity only for sessions without a pty (transfers, commands).
    output_is_activity: bool,
    pub exit_status: Option<u32>,
    pub exit_signal: Option<String>,
}

impl Transcript {
    /// Appends the session's `start` entry (`fields`: admin, target, ...) before anything is
    /// dialled; no entry, no session.
    pub fn start(
        id: &SessionId,
        audit: Arc<AuditChain>,
        recorder: Option<Recorder>,
        record_input: bool,
        pty: bool,
        fields: &[(&'static str, String)],
    ) -> Result<Self, ChainError> {
        let mut draft = Draft::new(Kind::Start).session(id);
        if let Some(r) = &recorder {
            draft = draft.seal(r.seal());
        }
        for (k, v) in fields {
            draft = draft.field(k, v);
        }
        if let Err(e) = audit.append(draft)
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
            last_activity: Instant::now(),
            output_is_activity: !pty,
            exit_status: None,
            exit_signal: None,
        })
    }

    /// Charges the recording's bytes to `charge` from now on.
    pub fn set_charge(&mut self, charge: Charge) {
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

    /// Writes the end marker, syncs the recording and appends the `end` entry with the final
    /// count; returns the digests (in, out).
    pub fn finish(
        &mut self,
        label: &str,
        reason: &str,
    ) -> (Result<(), RecordingError>, String, String) {
        let sha_in = hex::encode(self.sha_in.clone().finalize());
        let sha_out = hex::encode(self.sha_out.clone().finalize());
        // The end marker is written whatever the quota says.
        self.charge = None;
        let mut result = self.record(|r| r.marker(label).and_then(|()| r.sync()));
        let mut draft = Draft::new(Kind::End)
            .session(&self.id)
            .field("reason", reason)
            .field("sha256_in", &sha_in)
            .field("sha256_out", &sha_out);
        if let Some(code) = self.exit_status {
            draft = draft.field("exit_status", code);
        }
        if let Some(r) = &self.recorder {
            draft = draft.seal(r.seal());
        }
        if let Err(e) = self.audit.append(draft)
            && self.audit.fail_closed()
        {
            result = result.and(Err(RecordingError::Chain(e)));
        }
        (result, sha_in, sha_out)
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

        /// A session of 20 output lines, checkpointed every ~200 bytes; ended if `end`.
        fn session(&self, end: bool) -> (SessionId, Transcript) {
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
            let mut t =
                Transcript::start(&id, self.chain.clone(), Some(r), true, true, &[]).unwrap();
            for i in 0..20 {
                t.output(format!("line {i} \x1b[1mbold\x1b[0m\r\n").as_bytes())
                    .unwrap();
            }
            if end {
                t.finish("end: exit status 0", "closed").0.unwrap();
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

    #[test]
    fn sealed_and_live() {
        let bed = Bed::new();
        let (id, _t) = bed.session(true);
        assert_eq!(bed.verdict(&id), Verdict::Sealed { lines: 22 });
        let (live, t) = bed.session(false);
        assert!(
            matches!(bed.verdict(&live), Verdict::Intact { lines, .. } if lines > 1),
            "{}",
            bed.verdict(&live)
        );
        drop(t);
        assert!(matches!(bed.verdict(&live), Verdict::Unterminated { .. }));
    }

    #[test]
    fn tampering_is_located() {
        let bed = Bed::new();
        let (id, _) = bed.session(true);
        bed.edit(&id, |l| l[7][5] ^= 1);
        assert_eq!(
            bed.verdict(&id),
            Verdict::Modified {
                at: 8,
                how: "line changed"
            }
        );

        let (id, _) = bed.session(true);
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

        let (id, _) = bed.session(true);
        bed.edit(&id, |l| l.truncate(15));
        assert_eq!(
            bed.verdict(&id),
            Verdict::Truncated {
                after: 15,
                sealed: 22
            }
        );

        // The index rewritten along with the change: the signed seals still catch it.
        let (id, _) = bed.session(true);
        bed.edit(&id, |l| l[12] = b"[1.0, \"o\", \"rm -rf /\"]\n".to_vec());
        std::fs::remove_file(bed.store.index_path(&id)).unwrap();
        assert!(
            matches!(bed.verdict(&id), Verdict::ModifiedBetween { from, to } if from <= 13 && to >= 13),
            "{}",
            bed.verdict(&id)
        );
    }

    #[test]
    fn swapped_missing_unknown() {
        let bed = Bed::new();
        let (a, _) = bed.session(true);
        let (b, _) = bed.session(true);
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
