//! asciicast v2 writer. Output and input arrive as arbitrary byte chunks; multi-byte characters
//! split across chunks are joined, invalid UTF-8 becomes U+FFFD.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

#[derive(Debug, thiserror::Error)]
#[error("recording {path} cannot be written: {source}")]
pub struct RecordingError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Turns a byte stream into text, holding back an incomplete trailing character.
#[derive(Default)]
struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    fn push(&mut self, data: &[u8]) -> String {
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

/// An open asciicast v2 recording.
pub struct Recorder {
    path: PathBuf,
    file: File,
    started: Instant,
    output: Utf8Stream,
    input: Utf8Stream,
}

impl Recorder {
    /// Creates the file (never overwriting) and writes the header.
    pub fn create(
        path: PathBuf,
        width: u32,
        height: u32,
        term: &str,
        title: &str,
    ) -> Result<Self, RecordingError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| RecordingError {
                path: path.clone(),
                source,
            })?;
        let mut rec = Self {
            path,
            file,
            started: Instant::now(),
            output: Utf8Stream::default(),
            input: Utf8Stream::default(),
        };
        let header = json!({
            "version": 2,
            "width": width.max(1),
            "height": height.max(1),
            "timestamp": jiff::Timestamp::now().as_second(),
            "title": title,
            "env": {"TERM": term, "SHELL": ""},
        });
        rec.line(&header)?;
        Ok(rec)
    }

    fn line(&mut self, value: &serde_json::Value) -> Result<(), RecordingError> {
        let mut text = value.to_string();
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .map_err(|source| RecordingError {
                path: self.path.clone(),
                source,
            })
    }

    fn event(&mut self, kind: &str, data: &str) -> Result<(), RecordingError> {
        let t = (self.started.elapsed().as_micros() as f64) / 1e6;
        self.line(&json!([t, kind, data]))
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

    /// Flushes to stable storage.
    pub fn sync(&mut self) -> Result<(), RecordingError> {
        self.file.sync_data().map_err(|source| RecordingError {
            path: self.path.clone(),
            source,
        })
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
        let path = dir.path().join("r.cast");
        let mut r = Recorder::create(path.clone(), 80, 24, "xterm", "t").unwrap();
        r.output(b"hello \xe2\x82").unwrap();
        r.output(b"\xac\r\n").unwrap();
        r.input(b"ls\r").unwrap();
        r.resize(100, 30).unwrap();
        assert!(Recorder::create(path.clone(), 80, 24, "xterm", "t").is_err());
        let text = std::fs::read_to_string(path).unwrap();
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
