//! Verification of a recording against the audit chain: the line chain recomputed from the file
//! must equal every seal (start, checkpoints, end) the chain holds for the session.
//!
//! The `.idx` file only locates a change; a verdict of "modified" or "truncated" always rests on
//! a signed seal or on a line that differs from what the daemon wrote beside it.

use std::fmt;
use std::fs::TryLockError;

use super::RecordingStore;
use super::seal::{INDEX_BYTES, LineChain, index_entry};
use crate::audit::ChainReport;
use crate::ids::SessionId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Ended, and every line is covered by the end entry.
    Sealed {
        lines: u64,
    },
    /// Still being written: intact to the last checkpoint.
    Intact {
        lines: u64,
        unsealed: u64,
    },
    /// Not ended and no longer written (the daemon was killed): intact to the last checkpoint.
    Unterminated {
        lines: u64,
        unsealed: u64,
    },
    Truncated {
        after: u64,
        sealed: u64,
    },
    Modified {
        at: u64,
        how: &'static str,
    },
    ModifiedBetween {
        from: u64,
        to: u64,
    },
    /// The file holds another session's recording.
    Swapped {
        holds: SessionId,
    },
    Missing,
    /// Deleted on purpose when its retention period had passed (a signed `pruned` entry says so).
    Pruned {
        at: jiff::Timestamp,
    },
    /// A recording the chain has no start entry for.
    Unknown,
}

impl Verdict {
    /// Intact or sealed; anything else is a finding.
    pub fn ok(&self) -> bool {
        matches!(
            self,
            Verdict::Sealed { .. } | Verdict::Intact { .. } | Verdict::Pruned { .. }
        )
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Sealed { lines } => write!(f, "sealed ({lines} lines)"),
            Verdict::Pruned { at } => write!(f, "pruned at {at} (retention period passed)"),
            Verdict::Intact { lines, unsealed } => write!(
                f,
                "intact to line {lines} (live; {unsealed} lines since the last checkpoint)"
            ),
            Verdict::Unterminated { lines, unsealed } => write!(
                f,
                "unterminated (crash): intact to line {lines}, {unsealed} lines after it not sealed"
            ),
            Verdict::Truncated { after, sealed } => {
                write!(f, "truncated after line {after} (sealed to line {sealed})")
            }
            Verdict::Modified { at, how } => write!(f, "modified at line {at} ({how})"),
            Verdict::ModifiedBetween { from, to } => {
                write!(f, "modified between line {from} and line {to}")
            }
            Verdict::Swapped { holds } => write!(f, "modified: holds the recording of {holds}"),
            Verdict::Missing => f.write_str("missing (the audit chain has its start entry)"),
            Verdict::Unknown => f.write_str("not in the audit chain"),
        }
    }
}

/// Whole lines of `data` (newline included); a torn last line is left out.
fn lines(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.iter().position(|b| *b == b'\n') {
        let (line, tail) = rest.split_at(at + 1);
        out.push(line);
        rest = tail;
    }
    out
}

/// The chain hash after each number of lines (index 0: before line 1), and each line's hash.
fn chain_hashes(id: &SessionId, lines: &[&[u8]]) -> (Vec<[u8; 32]>, Vec<[u8; 32]>) {
    let mut c = LineChain::new(id);
    let mut chain = vec![c.hash()];
    let mut own = Vec::with_capacity(lines.len());
    for l in lines {
        own.push(c.push(l));
        chain.push(c.hash());
    }
    (chain, own)
}

/// The first line that differs from what the daemon wrote in the index, and how.
fn locate(own: &[[u8; 32]], index: &[u8]) -> Option<(u64, &'static str)> {
    let idx: Vec<&[u8]> = index.chunks_exact(INDEX_BYTES).collect();
    let at = |i: usize| own.get(i).map(index_entry);
    for i in 0..own.len().min(idx.len()) {
        if at(i) == Some(idx[i]) {
            continue;
        }
        let how = if idx.get(i + 1).is_some_and(|n| at(i) == Some(*n)) {
            "line deleted"
        } else if at(i + 1) == Some(idx[i]) {
            "line inserted"
        } else {
            "line changed"
        };
        return Some((i as u64 + 1, how));
    }
    None
}

/// Whether the daemon still holds the recording open.
pub(super) fn is_live(path: &std::path::Path) -> bool {
    std::fs::File::open(path)
        .map(|f| matches!(f.try_lock_shared(), Err(TryLockError::WouldBlock)))
        .unwrap_or(false)
}

pub fn verify_recording(store: &RecordingStore, id: &SessionId, chain: &ChainReport) -> Verdict {
    if let Some((pruned, _)) = chain
        .notes(id)
        .into_iter()
        .find(|(e, _)| e.kind == crate::audit::Kind::Pruned)
    {
        return Verdict::Pruned { at: pruned.time };
    }
    let seals = chain.seals(id);
    if seals.is_empty() {
        return Verdict::Unknown;
    }
    let path = store.cast_path(id);
    let Ok(data) = std::fs::read(&path) else {
        return Verdict::Missing;
    };
    let index = std::fs::read(store.index_path(id)).unwrap_or_default();
    let lines = lines(&data);
    let n = lines.len() as u64;
    let (hashes, own) = chain_hashes(id, &lines);
    let mut last_good = 0;
    let mut broken = None;
    let mut sealed = 0;
    for (_, s) in &seals {
        sealed = sealed.max(s.lines);
        match hashes.get(s.lines as usize) {
            Some(h) if *h == s.chain => last_good = s.lines,
            Some(_) => {
                broken = Some(s.lines);
                break;
            }
            None => {}
        }
    }
    if broken.is_some()
        && let Some(holds) = swapped_with(id, &lines, chain)
    {
        return Verdict::Swapped { holds };
    }
    if let Some((at, how)) = locate(&own, &index) {
        return Verdict::Modified { at, how };
    }
    if let Some(to) = broken {
        return Verdict::ModifiedBetween {
            from: last_good + 1,
            to,
        };
    }
    if sealed > n {
        return Verdict::Truncated { after: n, sealed };
    }
    let ended = seals.iter().any(|(e, _)| e.kind == crate::audit::Kind::End);
    if ended {
        return if n == sealed {
            Verdict::Sealed { lines: n }
        } else {
            Verdict::Modified {
                at: sealed + 1,
                how: "lines added after the end",
            }
        };
    }
    let unsealed = n - last_good;
    if is_live(&path) {
        Verdict::Intact {
            lines: last_good,
            unsealed,
        }
    } else {
        Verdict::Unterminated {
            lines: last_good,
            unsealed,
        }
    }
}

/// Another session all of whose seals that fit in these lines match them.
fn swapped_with(id: &SessionId, lines: &[&[u8]], chain: &ChainReport) -> Option<SessionId> {
    chain.sessions().into_iter().find_map(|e| {
        let other = e.session.as_ref().filter(|o| *o != id)?;
        let (hashes, _) = chain_hashes(other, lines);
        let seals = chain.seals(other);
        let fitting: Vec<_> = seals
            .iter()
            .filter_map(|(_, s)| hashes.get(s.lines as usize).map(|h| *h == s.chain))
            .collect();
        (!fitting.is_empty() && fitting.iter().all(|m| *m)).then(|| other.clone())
    })
}
