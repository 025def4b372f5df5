//! What crossed a channel: the asciicast recording for pty sessions, byte counts and SHA-256 per
//! direction for every session, and the time of the admin's last input.

use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::recording::{Recorder, RecordingError};

pub struct Transcript {
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
    pub fn new(recorder: Option<Recorder>, record_input: bool, pty: bool) -> Self {
        Self {
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
        }
    }

    pub fn input(&mut self, data: &[u8]) -> Result<(), RecordingError> {
        self.bytes_in += data.len() as u64;
        self.sha_in.update(data);
        self.last_activity = Instant::now();
        match (&mut self.recorder, self.record_input) {
            (Some(r), true) => r.input(data),
            _ => Ok(()),
        }
    }

    pub fn output(&mut self, data: &[u8]) -> Result<(), RecordingError> {
        self.bytes_out += data.len() as u64;
        self.sha_out.update(data);
        if self.output_is_activity {
            self.last_activity = Instant::now();
        }
        match &mut self.recorder {
            Some(r) => r.output(data),
            None => Ok(()),
        }
    }

    pub fn resize(&mut self, cols: u32, rows: u32) -> Result<(), RecordingError> {
        match &mut self.recorder {
            Some(r) => r.resize(cols, rows),
            None => Ok(()),
        }
    }

    pub fn marker(&mut self, label: &str) -> Result<(), RecordingError> {
        match &mut self.recorder {
            Some(r) => r.marker(label),
            None => Ok(()),
        }
    }

    /// Writes the end marker and syncs the recording; returns the digests (in, out).
    pub fn finish(&mut self, label: &str) -> (Result<(), RecordingError>, String, String) {
        let result = match &mut self.recorder {
            Some(r) => r.marker(label).and_then(|()| r.sync()),
            None => Ok(()),
        };
        (
            result,
            hex::encode(self.sha_in.clone().finalize()),
            hex::encode(self.sha_out.clone().finalize()),
        )
    }
}
