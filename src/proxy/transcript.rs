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

use crate::audit::{AuditChain, ChainError, Code, Draft, Event, Kind};
use crate::recording::{Recorder, RecordingError, SessionId};

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

    /// Writes the end marker, syncs the recording and appends the `end` entry with the final
    /// count; returns the digests (in, out).
    pub fn finish(
        &mut self,
        label: &str,
        reason: &str,
    ) -> (Result<(), RecordingError>, String, String) {
        let sha_in = hex::encode(self.sha_in.clone().finalize());
        let sha_out = hex::encode(self.sha_out.clone().finalize());
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
