//! The recordings directory: `<id>.cast`, `<id>.idx` (line hashes) and `<id>.json` metadata.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ids::SessionId;

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

#[cfg(test)]
mod tests {
    use super::*;

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
