//! asciicast v2 writer. Output and input arrive as arbitrary byte chunks; multi-byte characters
//! split across chunks are joined, invalid UTF-8 becomes U+FFFD.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::RecordingStore;
use super::seal::{LineChain, index_entry};
use crate::audit::{AuditChain, ChainError, Draft, Kind, Seal};
use crate::ids::SessionId;

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("recording {path} cannot be written: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Chain(#[from] ChainError),
    /// A recording limit was reached (per session, per admin per day, free space).
    #[error("{0}")]
    Quota(String),
}

impl RecordingError {
    /// The cause in a few words, for the message to the admin.
    pub fn cause(&self) -> String {
        match self {
            RecordingError::Io { source, .. } => source.to_string(),
            RecordingError::Chain(ChainError::Io { source, .. }) => {
                format!("audit chain: {source}")
            }
            RecordingError::Chain(e) => e.to_string(),
            RecordingError::Quota(why) => why.clone(),
        }
    }
}

/// When checkpoints are due.
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    pub interval: Duration,
    pub bytes: u64,
}

/// Turns a byte stream into text, holding back an incomplete trailing character.
#[derive(Default)]
struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    fn push(&mut self, data: &[u8]) -> String {
        // The usual case: whole characters only.
        if self.pending.is_empty()
            && let Ok(s) = std::str::from_utf8(data)
        {
            return s.to_owned();
        }
        self.pending.extend_from_slice(data);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = after.get(n..).unwrap_or_default();
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }
}

/// An open asciicast v2 recording, sealed line by line into the audit chain.
pub struct Recorder {
    id: SessionId,
    path: PathBuf,
    /// Locked (exclusive) while the session lives, so a verifier can tell live from crashed.
    file: File,
    index: BufWriter<File>,
    started: Instant,
    output: Utf8Stream,
    input: Utf8Stream,
    /// The line being written (kept to save an allocation per line).
    buf: Vec<u8>,
    chain: LineChain,
    audit: Arc<AuditChain>,
    cadence: Cadence,
    /// Lines and time of the last checkpoint.
    sealed_lines: u64,
    sealed_bytes: u64,
    sealed_at: Instant,
}

impl Recorder {
    /// Creates `<id>.cast` (never overwriting) and `<id>.idx`, and writes the header.
    pub fn create(
        store: &RecordingStore,
        id: &SessionId,
        audit: Arc<AuditChain>,
        cadence: Cadence,
        size: (u32, u32),
        term: &str,
        title: &str,
    ) -> Result<Self, RecordingError> {
        let path = store.cast_path(id);
        let io = |source| RecordingError::Io {
            path: path.clone(),
            source,
        };
        let open = |p: &PathBuf| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
        };
        let file = open(&path).map_err(io)?;
        file.try_lock().map_err(|e| io(e.into()))?;
        let index = BufWriter::new(open(&store.index_path(id)).map_err(io)?);
        let mut rec = Self {
            id: id.clone(),
            path: path.clone(),
            file,
            index,
            started: Instant::now(),
            output: Utf8Stream::default(),
            input: Utf8Stream::default(),
            buf: Vec::new(),
            chain: LineChain::new(id),
            audit,
            cadence,
            sealed_lines: 0,
            sealed_bytes: 0,
            sealed_at: Instant::now(),
        };
        let header = json!({
            "version": 2,
            "width": size.0.max(1),
            "height": size.1.max(1),
            "timestamp": jiff::Timestamp::now().as_second(),
            "title": title,
            "env": {"TERM": term, "SHELL": ""},
        });
        rec.line(&header)?;
        Ok(rec)
    }

    fn io(&self, source: std::io::Error) -> RecordingError {
        RecordingError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Writes `value` as one line, reusing the line buffer.
    fn line(&mut self, value: &impl serde::Serialize) -> Result<(), RecordingError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let result = serde_json::to_writer(&mut buf, value)
            .map_err(|e| self.io(e.into()))
            .and_then(|()| {
                buf.push(b'\n');
                self.write_line(&buf)
            });
        self.buf = buf;
        result
    }

    fn write_line(&mut self, line: &[u8]) -> Result<(), RecordingError> {
        if let Err(e) = self.file.write_all(line) {
            // Cut a partly written line, so the file stays whole lines.
            let _ = self.file.set_len(self.chain.bytes);
            return Err(self.io(e));
        }
        let line_hash = self.chain.push(line);
        self.index
            .write_all(index_entry(&line_hash))
            .map_err(|e| self.io(e))?;
        if self.chain.bytes - self.sealed_bytes >= self.cadence.bytes {
            self.checkpoint()?;
        }
        Ok(())
    }

    fn event(&mut self, kind: &str, data: &str) -> Result<(), RecordingError> {
        let t = (self.started.elapsed().as_micros() as f64) / 1e6;
        self.line(&(t, kind, data))
    }

    /// Bytes written to the recording so far.
    pub fn bytes(&self) -> u64 {
        self.chain.bytes
    }

    pub fn output(&mut self, data: &[u8]) -> Result<(), RecordingError> {
        let text = self.output.push(data);
        if text.is_empty() {
            return Ok(());
        }
        self.event("o", &text)
    }

    pub fn input(&mut self, data: &[u8]) -> Result<(), RecordingError> {
        let text = self.input.push(data);
        if text.is_empty() {
            return Ok(());
        }
        self.event("i", &text)
    }

    pub fn resize(&mut self, cols: u32, rows: u32) -> Result<(), RecordingError> {
        self.event("r", &format!("{cols}x{rows}"))
    }

    pub fn marker(&mut self, label: &str) -> Result<(), RecordingError> {
        self.event("m", label)
    }

    /// Writes a checkpoint if lines are waiting and the interval has passed.
    pub fn tick(&mut self) -> Result<(), RecordingError> {
        if self.chain.lines > self.sealed_lines && self.sealed_at.elapsed() >= self.cadence.interval
        {
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Syncs the recording and appends a checkpoint for it.
    fn checkpoint(&mut self) -> Result<(), RecordingError> {
        self.sync()?;
        self.audit.append(
            Draft::new(Kind::Checkpoint)
                .session(&self.id)
                .seal(self.chain.seal()),
        )?;
        self.sealed_lines = self.chain.lines;
        self.sealed_bytes = self.chain.bytes;
        self.sealed_at = Instant::now();
        Ok(())
    }

    /// Where the recording stands now.
    pub fn seal(&self) -> Seal {
        self.chain.seal()
    }

    /// Flushes the recording and its index to stable storage.
    pub fn sync(&mut self) -> Result<(), RecordingError> {
        self.file.sync_data().map_err(|e| self.io(e))?;
        self.index.flush().map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_multibyte_and_invalid() {
        let mut s = Utf8Stream::default();
        let euro = "€".as_bytes();
        assert_eq!(s.push(&euro[..1]), "");
        assert_eq!(s.push(&euro[1..]), "€");
        assert_eq!(s.push(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(s.push(b"\xe2\x82"), "");
        assert_eq!(s.push(b"x"), "\u{fffd}x");
    }

    #[test]
    fn writes_valid_asciicast() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordingStore::new(dir.path().to_owned());
        let chain = crate::audit::test_chain(dir.path());
        let id = SessionId::generate(jiff::Timestamp::UNIX_EPOCH);
        let cadence = Cadence {
            interval: Duration::from_secs(60),
            bytes: 1 << 20,
        };
        let mut r =
            Recorder::create(&store, &id, chain.clone(), cadence, (80, 24), "xterm", "t").unwrap();
        r.output(b"hello \xe2\x82").unwrap();
        r.output(b"\xac\r\n").unwrap();
        r.input(b"ls\r").unwrap();
        r.resize(100, 30).unwrap();
        assert!(Recorder::create(&store, &id, chain, cadence, (80, 24), "xterm", "t").is_err());
        let text = std::fs::read_to_string(store.cast_path(&id)).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[1][1], "o");
        assert_eq!(lines[1][2], "hello ");
        assert_eq!(lines[2][2], "€\r\n");
        assert_eq!(lines[3][1], "i");
        assert_eq!(lines[4][2], "100x30");
    }
}
