//! The recordings directory: `<id>.cast`, `<id>.idx` (line hashes) and `<id>.json` metadata.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::typed::CastEvent;
use crate::ids::SessionId;

/// A recording line longer than this is skipped by [`Events`], not held: the recorder writes far
/// shorter ones (one read of a channel each).
const MAX_EVENT_LINE: u64 = 4 << 20;

/// Who, where and how a recorded session went.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Meta {
    pub id: SessionId,
    pub admin: String,
    pub target: String,
    pub account: String,
    pub grant: String,
    pub source: String,
    pub start: jiff::Timestamp,
    pub end: Option<jiff::Timestamp>,
    pub exit_status: Option<u32>,
    pub end_reason: Option<String>,
    /// Whether the channel had a terminal (recordings from before this field all had one).
    #[serde(default = "yes")]
    pub pty: bool,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug)]
pub struct RecordingStore {
    dir: PathBuf,
}

impl RecordingStore {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn cast_path(&self, id: &SessionId) -> PathBuf {
        self.dir.join(format!("{id}.cast"))
    }

    pub fn index_path(&self, id: &SessionId) -> PathBuf {
        self.dir.join(format!("{id}.idx"))
    }

    pub fn meta_path(&self, id: &SessionId) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes the metadata atomically (temp file, then rename).
    pub fn write_meta(&self, meta: &Meta) -> std::io::Result<()> {
        let tmp = self.dir.join(format!(".{}.json.tmp", meta.id));
        let text = serde_json::to_vec_pretty(meta).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(tmp, self.meta_path(&meta.id))
    }

    /// Deletes a recording's files (those that exist).
    pub fn remove(&self, id: &SessionId) -> std::io::Result<()> {
        for path in [self.cast_path(id), self.index_path(id), self.meta_path(id)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn read_meta(&self, id: &SessionId) -> std::io::Result<Meta> {
        let text = std::fs::read(self.meta_path(id))?;
        serde_json::from_slice(&text).map_err(std::io::Error::other)
    }

    /// All recordings, oldest first.
    pub fn list(&self) -> std::io::Result<Vec<Meta>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(SessionId::parse)
            else {
                continue;
            };
            out.push(self.read_meta(&id)?);
        }
        out.sort_by(|a, b| a.start.cmp(&b.start).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Ids of the metadata files present (the recordings [`RecordingStore::list`] reads).
    pub fn meta_ids(&self) -> std::io::Result<Vec<SessionId>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(SessionId::parse)
            {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Ids of the `.cast` files present.
    pub fn cast_ids(&self) -> std::io::Result<Vec<SessionId>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".cast"))
                .and_then(SessionId::parse)
            {
                out.push(id);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The events of a recording, read line by line (the header is skipped).
    pub fn events(&self, id: &SessionId) -> std::io::Result<Events> {
        let mut events = Events {
            file: BufReader::new(std::fs::File::open(self.cast_path(id))?),
            line: Vec::new(),
        };
        events.next_line();
        Ok(events)
    }

    /// The terminal output of a recording, as the admin saw it, with dangerous sequences removed.
    pub fn output_text(&self, id: &SessionId) -> std::io::Result<String> {
        let text = std::fs::read_to_string(self.cast_path(id))?;
        let mut out = String::new();
        for line in text.lines().skip(1) {
            let Ok(serde_json::Value::Array(ev)) = serde_json::from_str(line) else {
                continue;
            };
            if let (Some("o"), Some(data)) = (
                ev.get(1).and_then(|v| v.as_str()),
                ev.get(2).and_then(|v| v.as_str()),
            ) {
                out.push_str(data);
            }
        }
        Ok(super::sanitize(&out))
    }
}

/// A recording's events, `(time, kind, data)`, one line in memory at a time; lines that do not
/// parse (a torn last one, or a line over [`MAX_EVENT_LINE`]) are skipped.
pub struct Events {
    file: BufReader<std::fs::File>,
    line: Vec<u8>,
}

impl Events {
    /// Reads the next line into `line`; false at the end (or on a read error).
    fn next_line(&mut self) -> bool {
        self.line.clear();
        let mut whole = true;
        loop {
            match (&mut self.file)
                .take(MAX_EVENT_LINE)
                .read_until(b'\n', &mut self.line)
            {
                Ok(0) | Err(_) => return false,
                Ok(_) if self.line.last() == Some(&b'\n') => break,
                // Over the limit: the rest of the line is read and dropped.
                Ok(_) if self.line.len() as u64 >= MAX_EVENT_LINE => {
                    whole = false;
                    self.line.clear();
                }
                Ok(_) => break,
            }
        }
        if !whole {
            self.line.clear();
        }
        true
    }
}

impl Iterator for Events {
    type Item = CastEvent;

    fn next(&mut self) -> Option<CastEvent> {
        while self.next_line() {
            if let Ok(event) = serde_json::from_slice(&self.line) {
                return Some(event);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn events_are_read_line_by_line_and_an_overlong_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordingStore::new(dir.path().to_owned());
        let id = SessionId::generate(jiff::Timestamp::UNIX_EPOCH);
        let long = serde_json::json!([1.5, "o", "x".repeat(MAX_EVENT_LINE as usize)]).to_string();
        let text = format!(
            "{{\"version\":2}}\n[0.5,\"o\",\"one\"]\nnot json\n{long}\n[2.0,\"i\",\"two\"]\n[3.0,\"o\",\"torn"
        );
        std::fs::write(store.cast_path(&id), text).unwrap();
        let events: Vec<CastEvent> = store.events(&id).unwrap().collect();
        assert_eq!(
            events,
            vec![
                (0.5, "o".into(), "one".into()),
                (2.0, "i".into(), "two".into())
            ]
        );
    }

    #[test]
    fn ids() {
        let id = SessionId::generate(jiff::Timestamp::UNIX_EPOCH);
        assert!(SessionId::parse(id.as_str()).is_some(), "{id}");
        for bad in [
            "../../etc/passwd",
            "19700101T000000Z-0000000",
            "19700101T000000Z-0000000G",
            "",
        ] {
            assert!(SessionId::parse(bad).is_none(), "{bad}");
        }
    }
}
