//! Verification of a recording against the audit chain: the line chain recomputed from the file
//! must equal every seal (start, checkpoints, end) the chain holds for the session.
//!
//! The `.idx` file only locates a change; a verdict of "modified" or "truncated" always rests on
//! a signed seal or on a line that differs from what the daemon wrote beside it.
//!
//! A recording is read as a stream, in bounded memory: each line is hashed as it goes by (see
//! [`scan`]), never held whole. A copy sent elsewhere (the evidence bundle) is checked the same
//! way as it goes out ([`CopyCheck`]): the file may change between a verdict and the sending.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs::TryLockError;
use std::io::{BufRead, BufReader, Read};

use sha2::{Digest, Sha256};

use super::RecordingStore;
use super::seal::{INDEX_BYTES, LineChain, index_entry};
use crate::audit::{ChainReport, Seal};
use crate::ids::SessionId;

/// How much of a recording (and of its index) is read at a time; a verification holds no more
/// of either, however long the recording or any one of its lines.
const READ_BUFFER: usize = 64 << 10;

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

/// What one pass over a recording found: its whole lines (a torn last line is left out), the
/// chain hash after each line count asked for, and the first line that differs from the index.
struct Scan {
    lines: u64,
    at: HashMap<u64, [u8; 32]>,
    located: Option<(u64, &'static str)>,
}

/// A line whose index entry differs, waiting for the next line's hash to say how.
struct Mismatch {
    line: u64,
    own: [u8; INDEX_BYTES],
    idx: [u8; INDEX_BYTES],
    idx_next: Option<[u8; INDEX_BYTES]>,
}

impl Mismatch {
    fn how(&self, own_next: Option<&[u8]>) -> (u64, &'static str) {
        let how = if self.idx_next == Some(self.own) {
            "line deleted"
        } else if own_next == Some(&self.idx[..]) {
            "line inserted"
        } else {
            "line changed"
        };
        (self.line, how)
    }
}

/// The next entry of the index, if it has a whole one.
fn next_entry(index: &mut impl Read) -> Option<[u8; INDEX_BYTES]> {
    let mut e = [0; INDEX_BYTES];
    index.read_exact(&mut e).ok().map(|()| e)
}

/// A recording's line chain, taken from its bytes in whatever pieces they come (a torn last
/// line is not a line), with the chain hash at each line count in `wanted`.
struct Lines {
    chain: LineChain,
    line: Sha256,
    len: u64,
    wanted: BTreeSet<u64>,
    at: HashMap<u64, [u8; 32]>,
}

impl Lines {
    fn new(id: &SessionId, wanted: BTreeSet<u64>) -> Self {
        let chain = LineChain::new(id);
        let mut at = HashMap::new();
        if wanted.contains(&0) {
            at.insert(0, chain.hash());
        }
        Self {
            chain,
            line: Sha256::new(),
            len: 0,
            wanted,
            at,
        }
    }

    /// Takes `buf` up to and including its first newline: how many bytes that is, and the own
    /// hash of the line it ended, if it ended one.
    fn take(&mut self, buf: &[u8]) -> (usize, Option<[u8; 32]>) {
        let (part, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        self.line.update(part);
        self.len += part.len() as u64;
        if !done {
            return (part.len(), None);
        }
        let own: [u8; 32] = std::mem::take(&mut self.line).finalize().into();
        self.chain.push_hash(own, std::mem::take(&mut self.len));
        if self.wanted.contains(&self.chain.lines) {
            self.at.insert(self.chain.lines, self.chain.hash());
        }
        (part.len(), Some(own))
    }
}

/// Reads a recording once, in bounded memory: each line is hashed as its bytes go by, never
/// held whole. `index`, when given, is compared entry by entry with each line's own hash.
fn scan(
    file: impl Read,
    id: &SessionId,
    wanted: &BTreeSet<u64>,
    mut index: Option<&mut dyn Read>,
) -> std::io::Result<Scan> {
    let mut file = BufReader::with_capacity(READ_BUFFER, file);
    let mut lines = Lines::new(id, wanted.clone());
    let mut located = None;
    let mut pending: Option<Mismatch> = None;
    loop {
        let buf = file.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let (used, own) = lines.take(buf);
        file.consume(used);
        let Some(own) = own else {
            continue;
        };
        let own = index_entry(&own);
        if let Some(m) = pending.take() {
            located = Some(m.how(Some(own)));
        }
        if located.is_some() {
            continue;
        }
        let Some(idx) = index.as_mut().and_then(next_entry) else {
            index = None;
            continue;
        };
        if idx[..] != *own {
            let mut entry = [0; INDEX_BYTES];
            entry.copy_from_slice(own);
            pending = Some(Mismatch {
                line: lines.chain.lines,
                own: entry,
                idx,
                idx_next: index.as_mut().and_then(next_entry),
            });
        }
    }
    if let Some(m) = pending {
        located = Some(m.how(None));
    }
    Ok(Scan {
        lines: lines.chain.lines,
        at: lines.at,
        located,
    })
}

/// A copy of a recording (a download), checked as its bytes are written to it against the seals
/// the chain held when it was made: whether the copy is what a verdict was given for, though the
/// file may have changed since. The index is not read: it only locates a change.
pub struct CopyCheck {
    lines: Lines,
    /// Each seal, and whether it is the end entry's.
    seals: Vec<(bool, Seal)>,
}

impl CopyCheck {
    pub fn new(id: &SessionId, chain: &ChainReport) -> Self {
        let seals: Vec<(bool, Seal)> = chain
            .seals(id)
            .into_iter()
            .map(|(e, s)| (e.kind == crate::audit::Kind::End, s))
            .collect();
        let wanted = seals.iter().map(|(_, s)| s.lines).collect();
        Self {
            lines: Lines::new(id, wanted),
            seals,
        }
    }

    /// The verdict on the copy so far; `live`: the recording was still being written.
    pub fn verdict(&self, live: bool) -> Verdict {
        decide(
            &self.seals,
            self.lines.chain.lines,
            &self.lines.at,
            None,
            || None,
            || live,
        )
    }
}

impl std::io::Write for CopyCheck {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            rest = &rest[self.lines.take(rest).0..];
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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
    let wanted: BTreeSet<u64> = seals.iter().map(|(_, s)| s.lines).collect();
    let mut index = std::fs::File::open(store.index_path(id))
        .map(|f| BufReader::with_capacity(READ_BUFFER, f))
        .ok();
    let scanned = std::fs::File::open(&path)
        .and_then(|f| scan(f, id, &wanted, index.as_mut().map(|i| i as &mut dyn Read)));
    let Ok(Scan {
        lines: n,
        at: hashes,
        located,
    }) = scanned
    else {
        return Verdict::Missing;
    };
    let seals: Vec<(bool, Seal)> = seals
        .iter()
        .map(|(e, s)| (e.kind == crate::audit::Kind::End, *s))
        .collect();
    decide(
        &seals,
        n,
        &hashes,
        located,
        || swapped_with(id, &path, n, chain),
        || is_live(&path),
    )
}

/// The verdict on a recording of `n` whole lines with these chain hashes at the seals' line
/// counts; `located`: the first line that differs from the index.
fn decide(
    seals: &[(bool, Seal)],
    n: u64,
    hashes: &HashMap<u64, [u8; 32]>,
    located: Option<(u64, &'static str)>,
    swapped: impl FnOnce() -> Option<SessionId>,
    live: impl FnOnce() -> bool,
) -> Verdict {
    let mut last_good = 0;
    let mut broken = None;
    let mut sealed = 0;
    for (_, s) in seals {
        sealed = sealed.max(s.lines);
        match hashes.get(&s.lines) {
            Some(h) if *h == s.chain => last_good = s.lines,
            Some(_) => {
                broken = Some(s.lines);
                break;
            }
            None => {}
        }
    }
    if broken.is_some()
        && let Some(holds) = swapped()
    {
        return Verdict::Swapped { holds };
    }
    if let Some((at, how)) = located {
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
    let ended = seals.iter().any(|(end, _)| *end);
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
    if live() {
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

/// Another session all of whose seals that fit in these `n` lines match them. Each candidate
/// reads the file again (only when a seal is broken), so memory stays bounded.
fn swapped_with(
    id: &SessionId,
    path: &std::path::Path,
    n: u64,
    chain: &ChainReport,
) -> Option<SessionId> {
    chain.sessions().into_iter().find_map(|e| {
        let other = e.session.as_ref().filter(|o| *o != id)?;
        let seals = chain.seals(other);
        let wanted: BTreeSet<u64> = seals
            .iter()
            .map(|(_, s)| s.lines)
            .filter(|l| *l <= n)
            .collect();
        if wanted.is_empty() {
            return None;
        }
        // Only the chain's start needs no reading.
        let hashes = if wanted.iter().all(|l| *l == 0) {
            HashMap::from([(0, LineChain::new(other).hash())])
        } else {
            let file = std::fs::File::open(path).ok()?;
            scan(file, other, &wanted, None).ok()?.at
        };
        let fitting: Vec<_> = seals
            .iter()
            .filter_map(|(_, s)| hashes.get(&s.lines).map(|h| *h == s.chain))
            .collect();
        (!fitting.is_empty() && fitting.iter().all(|m| *m)).then(|| other.clone())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;
    use crate::audit::{Draft, Kind, read_lines, test_chain, verify_chain};
    use crate::recording::{Cadence, Recorder};

    /// A sealed recording of 40 outputs of 100 000 bytes each (lines longer than
    /// [`READ_BUFFER`]), with a checkpoint after every ten.
    #[tokio::test]
    async fn a_recording_longer_than_the_read_buffer_gets_the_same_verdicts() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordingStore::new(dir.path().to_owned());
        let chain = test_chain(dir.path());
        let id = SessionId::generate(jiff::Timestamp::now());
        let cadence = Cadence {
            interval: Duration::from_secs(3600),
            bytes: 1 << 30,
        };
        let mut r =
            Recorder::create(&store, &id, chain.clone(), cadence, (80, 24), "xterm", "t").unwrap();
        r.seal_with(Draft::new(Kind::Start).session(&id))
            .wait()
            .await
            .unwrap();
        for k in 0..40u8 {
            r.output(&[b'a' + k % 26; 100_000]).unwrap();
            if k % 10 == 9 {
                r.seal_with(Draft::new(Kind::Checkpoint).session(&id))
                    .wait()
                    .await
                    .unwrap();
            }
        }
        r.output(b"end\r\n").unwrap();
        r.seal_with(Draft::new(Kind::End).session(&id))
            .wait()
            .await
            .unwrap();
        drop(r);
        let verdict = || {
            let report = verify_chain(&read_lines(chain.path()).unwrap(), chain.verifier());
            verify_recording(&store, &id, &report)
        };
        let path = store.cast_path(&id);
        let original = std::fs::read(&path).unwrap();
        let lines: Vec<Vec<u8>> = original
            .split_inclusive(|b| *b == b'\n')
            .map(<[u8]>::to_vec)
            .collect();
        let n = lines.len() as u64;
        assert!(lines.iter().any(|l| l.len() > READ_BUFFER), "no long line");
        assert!(original.len() > 16 * READ_BUFFER);
        assert_eq!(verdict(), Verdict::Sealed { lines: n });
        // A copy checked as it is written, in pieces that split lines anywhere.
        let copy = |data: &[u8]| {
            let report = verify_chain(&read_lines(chain.path()).unwrap(), chain.verifier());
            let mut c = CopyCheck::new(&id, &report);
            for piece in data.chunks(READ_BUFFER - 7) {
                std::io::Write::write_all(&mut c, piece).unwrap();
            }
            c.verdict(false)
        };
        assert_eq!(copy(&original), Verdict::Sealed { lines: n });
        let mut changed = original.clone();
        changed[original.len() / 2] ^= 1;
        assert!(!copy(&changed).ok(), "{:?}", copy(&changed));
        assert!(!copy(&[&original[..], b"[9.0,\"o\",\"x\"]\n"].concat()).ok());
        let with = |change: &dyn Fn(&mut Vec<Vec<u8>>)| {
            let mut l = lines.clone();
            change(&mut l);
            std::fs::write(&path, l.concat()).unwrap();
            let v = verdict();
            std::fs::write(&path, &original).unwrap();
            v
        };
        // One byte deep inside a long line.
        let changed = with(&|l| l[20][70_000] ^= 1);
        assert_eq!(
            changed,
            Verdict::Modified {
                at: 21,
                how: "line changed"
            }
        );
        assert_eq!(
            with(&|l| {
                l.remove(20);
            }),
            Verdict::Modified {
                at: 21,
                how: "line deleted"
            }
        );
        assert_eq!(
            with(&|l| l.insert(20, b"[1.0,\"o\",\"x\"]\n".to_vec())),
            Verdict::Modified {
                at: 21,
                how: "line inserted"
            }
        );
        assert_eq!(
            with(&|l| l.truncate(30)),
            Verdict::Truncated {
                after: 30,
                sealed: n
            }
        );
        // A torn last line is not a line.
        assert_eq!(
            with(&|l| l.push(b"[9.0,\"o\"".to_vec())),
            Verdict::Sealed { lines: n }
        );
        // Without the index, the signed checkpoints still bound the change.
        let index = std::fs::read(store.index_path(&id)).unwrap();
        std::fs::remove_file(store.index_path(&id)).unwrap();
        let v = with(&|l| l[20][70_000] ^= 1);
        assert!(
            matches!(v, Verdict::ModifiedBetween { from, to } if from <= 21 && to >= 21),
            "{v:?}"
        );
        std::fs::write(store.index_path(&id), index).unwrap();
        assert_eq!(verdict(), Verdict::Sealed { lines: n });
    }
}
