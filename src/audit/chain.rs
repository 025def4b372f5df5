//! The audit chain: one append-only file of signed entries (`audit/chain.jsonl`, one JSON line
//! `{"note": "..."}` per entry), each naming the hash of the one before it.
//!
//! Invariants: entries are numbered without gaps; an entry is on disk (fsync) before `append`
//! returns; a failed write is cut off again, so the file never holds half an entry; every entry
//! also goes to journald as a CHECKPOINT event, and wakes the off-site uploader. A storage
//! failure anywhere (chain or recording) is reported here: with `on_failure = "end-sessions"`
//! live sessions are ended and new ones refused until storage works again.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::note::{Draft, Kind, NoteError, NoteSigner, NoteVerifier, note_hash, parse, render};
use super::{Code, Event};
use crate::clock::Clock;
use crate::config::OnFailure;
use crate::sync::lock;

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("audit chain {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit chain {path}: last entry: {source}")]
    Tail { path: PathBuf, source: NoteError },
    #[error("audit chain: {0}")]
    Note(#[from] NoteError),
}

/// One stored line.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Line {
    pub note: String,
}

struct State {
    file: File,
    len: u64,
    next_seq: u64,
    prev: [u8; 32],
}

type OnStorageFailure = Box<dyn Fn(&str) + Send + Sync>;

pub struct AuditChain {
    path: PathBuf,
    signer: NoteSigner,
    clock: std::sync::Arc<dyn Clock>,
    state: Mutex<State>,
    on_failure: OnFailure,
    failed: AtomicBool,
    /// Called with the reason when storage fails and sessions must end.
    end_sessions: Mutex<Option<OnStorageFailure>>,
    /// Woken after every append (the off-site uploader waits on it).
    pub appended: tokio::sync::Notify,
}

impl AuditChain {
    /// Opens (or creates) the chain at `path`, checks that its last entry verifies with this
    /// key, cuts off a torn last line left by a crash, and appends an `open` entry.
    pub fn open(
        path: &Path,
        signer: NoteSigner,
        clock: std::sync::Arc<dyn Clock>,
        on_failure: OnFailure,
    ) -> Result<Self, ChainError> {
        let io = |source| ChainError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        let (len, last, torn) = last_line(&mut file).map_err(io)?;
        if torn > 0 {
            // A crash during a write leaves an unterminated line, never a whole entry.
            file.set_len(len).map_err(io)?;
        }
        let (next_seq, prev) = match last {
            None => (0, [0; 32]),
            Some(line) => {
                let tail = |source| ChainError::Tail {
                    path: path.to_owned(),
                    source,
                };
                let stored: Line = serde_json::from_str(&line)
                    .map_err(|e| tail(NoteError::Malformed(e.to_string())))?;
                let entry = parse(
                    &signer
                        .verifier()
                        .open(stored.note.as_bytes())
                        .map_err(tail)?,
                )
                .map_err(tail)?;
                (entry.seq + 1, note_hash(stored.note.as_bytes()))
            }
        };
        let chain = Self {
            path: path.to_owned(),
            signer,
            clock,
            state: Mutex::new(State {
                file,
                len,
                next_seq,
                prev,
            }),
            on_failure,
            failed: AtomicBool::new(false),
            end_sessions: Mutex::new(None),
            appended: tokio::sync::Notify::new(),
        };
        let mut open = Draft::new(Kind::Open).field("pid", std::process::id());
        if torn > 0 {
            open = open.field("reason", format!("cut {torn} bytes of a torn last line"));
        }
        chain.append(open)?;
        Ok(chain)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn verifier(&self) -> &NoteVerifier {
        self.signer.verifier()
    }

    /// What to call to end live sessions when storage fails.
    pub fn on_storage_failure(&self, f: OnStorageFailure) {
        *lock(&self.end_sessions) = Some(f);
    }

    /// Signs and appends an entry; returns its sequence number.
    pub fn append(&self, draft: Draft) -> Result<u64, ChainError> {
        let mut st = lock(&self.state);
        let seq = st.next_seq;
        let text = render(&draft, seq, &st.prev, self.clock.now());
        let note = self.signer.sign(&text)?;
        let note = String::from_utf8_lossy(&note).into_owned();
        let mut line = serde_json::to_string(&Line { note: note.clone() })
            .map_err(|e| NoteError::Malformed(e.to_string()))?;
        line.push('\n');
        let written = st
            .file
            .write_all(line.as_bytes())
            .and_then(|()| st.file.sync_data());
        if let Err(source) = written {
            let len = st.len;
            let _ = st.file.set_len(len);
            drop(st);
            self.storage_failed(&format!("audit chain cannot be written: {source}"));
            return Err(ChainError::Io {
                path: self.path.clone(),
                source,
            });
        }
        st.len += line.len() as u64;
        st.next_seq += 1;
        st.prev = note_hash(note.as_bytes());
        drop(st);
        // Storage works again: new sessions may start.
        self.failed.store(false, Ordering::SeqCst);
        let mut event = Event::new(Code::Checkpoint)
            .detail("seq", seq)
            .detail("kind", draft.kind.as_str())
            .detail("note", note);
        if let Some(s) = &draft.session {
            event = event.session(s);
        }
        event.emit();
        self.appended.notify_waiters();
        Ok(seq)
    }

    /// Reports a storage failure: an alert always; with `end-sessions`, live sessions end.
    pub fn storage_failed(&self, reason: &str) {
        let first = !self.failed.swap(true, Ordering::SeqCst);
        if first {
            Event::new(Code::StorageFailed)
                .reason(reason)
                .detail("on_failure", self.on_failure.as_str())
                .emit();
        }
        if self.on_failure == OnFailure::EndSessions
            && let Some(f) = lock(&self.end_sessions).as_ref()
        {
            f(&format!("{reason}; session ended"));
        }
    }

    /// Whether a session may start or go on when its recording or chain entry failed.
    pub fn fail_closed(&self) -> bool {
        self.on_failure == OnFailure::EndSessions
    }
}

/// A chain in `dir` with a fresh key, for unit tests.
#[cfg(test)]
pub fn test_chain(dir: &Path) -> std::sync::Arc<AuditChain> {
    let key = crate::secrets::generate_key("stapsteen-test");
    let signer = NoteSigner::new(&key).unwrap();
    std::sync::Arc::new(
        AuditChain::open(
            &dir.join("chain.jsonl"),
            signer,
            std::sync::Arc::new(crate::clock::SystemClock),
            OnFailure::EndSessions,
        )
        .unwrap(),
    )
}

/// Length up to the end of the last complete line, that line, and the length of a torn tail.
fn last_line(file: &mut File) -> std::io::Result<(u64, Option<String>, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::new(&*file);
    let mut len = 0u64;
    let mut last = None;
    let mut torn = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        if buf.last() == Some(&b'\n') {
            len += n as u64;
            last = Some(String::from_utf8_lossy(&buf).trim_end().to_owned());
        } else {
            torn = n as u64;
        }
    }
    Ok((len, last, torn))
}

/// Reads every line of a chain file, for verification.
pub fn read_lines(path: &Path) -> std::io::Result<Vec<String>> {
    let text = std::fs::read(path)?;
    Ok(text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect())
}
