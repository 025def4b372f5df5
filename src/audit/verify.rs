//! Verification of the audit chain: every entry signed by the appliance key, numbered without
//! gaps or repeats, and naming the hash of the entry before it.
//!
//! The chain is read across its segments as one sequence, so a segment deleted shows as the
//! entries it held missing, and one changed as entries changed, named by segment file and line.
//! Verification may start from a signed checkpoint (an entry's note kept elsewhere: the off-site
//! copy, the SIEM): the entries before it are not needed, so old segments can be archived.
//!
//! Limit: deleting entries at the end of the chain leaves a shorter chain that is still whole;
//! only the copies elsewhere (journald forwarded to the SIEM, the off-site store) show it.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use super::note::{Entry, NoteError, NoteVerifier, note_hash, parse};
use super::{Line, Seal};
use crate::ids::SessionId;

/// Something wrong at a line of the chain file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Line in the segment (or, without one, in all the lines given).
    pub line: usize,
    /// The segment file's name, when read from segments.
    pub segment: Option<String>,
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.segment {
            Some(s) => write!(f, "{s} line {}: {}", self.line, self.what),
            None => write!(f, "line {}: {}", self.line, self.what),
        }
    }
}

/// Where verification starts: an entry known good from elsewhere (its signed note).
#[derive(Debug, Clone, Copy)]
pub struct Start {
    pub seq: u64,
    hash: [u8; 32],
}

impl Start {
    /// From an entry's signed note, checked with `verifier`.
    pub fn from_note(note: &[u8], verifier: &NoteVerifier) -> Result<Self, NoteError> {
        let entry = parse(&verifier.open(note)?)?;
        Ok(Self {
            seq: entry.seq,
            hash: note_hash(note),
        })
    }
}

/// The entries that verified, in order, with their notes, and what did not.
#[derive(Debug, Default)]
pub struct ChainReport {
    pub entries: Vec<(Entry, String)>,
    pub problems: Vec<Problem>,
    /// Positions in `entries` by sequence number, and by session.
    by_seq: HashMap<u64, usize>,
    by_session: HashMap<SessionId, Vec<usize>>,
}

impl ChainReport {
    fn push(&mut self, entry: Entry, note: String) {
        let at = self.entries.len();
        self.by_seq.insert(entry.seq, at);
        if let Some(s) = &entry.session {
            self.by_session.entry(s.clone()).or_default().push(at);
        }
        self.entries.push((entry, note));
    }

    /// The entry with sequence number `seq`, and its note.
    pub fn entry(&self, seq: u64) -> Option<&(Entry, String)> {
        self.by_seq.get(&seq).and_then(|at| self.entries.get(*at))
    }

    /// The seals written for a session, in chain order: start, checkpoints, end.
    pub fn seals(&self, id: &SessionId) -> Vec<(&Entry, Seal)> {
        self.notes(id)
            .into_iter()
            .filter_map(|(e, _)| e.seal.map(|s| (e, s)))
            .collect()
    }

    /// A session's entries and their notes, in chain order.
    pub fn notes(&self, id: &SessionId) -> Vec<&(Entry, String)> {
        self.by_session
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|at| self.entries.get(*at))
            .collect()
    }

    /// Sessions with a `start` entry.
    pub fn sessions(&self) -> Vec<&Entry> {
        self.entries
            .iter()
            .map(|(e, _)| e)
            .filter(|e| e.kind == super::Kind::Start)
            .collect()
    }
}

/// A report of entries verified before (the console's index keeps a session's entries and
/// rebuilds its report from them), in chain order.
impl FromIterator<(Entry, String)> for ChainReport {
    fn from_iter<I: IntoIterator<Item = (Entry, String)>>(entries: I) -> Self {
        let mut report = Self::default();
        for (entry, note) in entries {
            report.push(entry, note);
        }
        report
    }
}

/// Checks the lines of a chain from its first entry.
pub fn verify_chain(lines: &[String], verifier: &NoteVerifier) -> ChainReport {
    verify_from(lines, verifier, None)
}

/// Checks the segments (as [`super::read_segments`] gives them), from `start` if given; problems
/// name the segment file and its line.
pub fn verify_segments(
    segments: &[(PathBuf, Vec<String>)],
    verifier: &NoteVerifier,
    start: Option<Start>,
) -> ChainReport {
    let lines: Vec<String> = segments.iter().flat_map(|(_, l)| l.clone()).collect();
    let mut report = verify_from(&lines, verifier, start);
    for p in &mut report.problems {
        let mut line = p.line;
        for (path, l) in segments {
            if line <= l.len() {
                p.segment = path.file_name().map(|n| n.to_string_lossy().into_owned());
                p.line = line;
                break;
            }
            line -= l.len();
        }
    }
    report
}

/// Checks chain lines; with `start`, entries before it are passed over and the entry at it
/// must be the one the checkpoint names.
pub fn verify_from(lines: &[String], verifier: &NoteVerifier, start: Option<Start>) -> ChainReport {
    let mut report = ChainReport::default();
    let mut expected = start.map_or(0, |s| s.seq);
    // The hash of the last entry that verified; `None` after a broken one, so one damaged entry
    // is reported once, not again by the entry after it. From a checkpoint, the entry at it is
    // checked against the checkpoint instead.
    let mut prev: Option<[u8; 32]> = if start.is_some() { None } else { Some([0; 32]) };
    for (i, text) in lines.iter().enumerate() {
        let line = i + 1;
        if let Some(s) = start
            && super::seq_of(text).is_some_and(|q| q < s.seq)
        {
            continue;
        }
        let mut problem = |what: String| {
            report.problems.push(Problem {
                line,
                segment: None,
                what,
            })
        };
        let note = match serde_json::from_str::<Line>(text) {
            Ok(l) => l.note,
            Err(_) => {
                problem("not an audit entry (unreadable)".into());
                expected += 1;
                prev = None;
                continue;
            }
        };
        let entry = match verifier.open(note.as_bytes()).and_then(|t| parse(&t)) {
            Ok(e) => e,
            Err(e) => {
                problem(format!("entry changed or forged: {e}"));
                // It stands in the place of the entry expected here.
                expected += 1;
                prev = None;
                continue;
            }
        };
        if entry.seq < expected {
            problem(format!(
                "seq {} repeats an earlier entry (replayed; expected seq {expected})",
                entry.seq
            ));
            continue;
        }
        if entry.seq > expected {
            let missing = if entry.seq - expected == 1 {
                format!("seq {expected} is missing")
            } else {
                format!("seq {expected} to {} are missing", entry.seq - 1)
            };
            problem(format!("{missing} before seq {} (deleted)", entry.seq));
        } else if let Some(s) = start
            && entry.seq == s.seq
        {
            if note_hash(note.as_bytes()) != s.hash {
                problem(format!(
                    "seq {} is not the entry the signed checkpoint names (replaced)",
                    entry.seq
                ));
            }
        } else if let Some(p) = prev
            && p != entry.prev
        {
            problem(format!(
                "seq {} does not follow the entry before it (that entry was replaced)",
                entry.seq
            ));
        }
        expected = entry.seq + 1;
        prev = Some(note_hash(note.as_bytes()));
        report.push(entry, note);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::super::note::{Draft, Kind, NoteSigner, render};
    use super::*;

    fn chain(n: u64) -> (NoteSigner, Vec<String>) {
        let s = NoteSigner::new(&crate::secrets::generate_key("t")).unwrap();
        let mut prev = [0; 32];
        let mut lines = Vec::new();
        for seq in 0..n {
            let text = render(
                &Draft::new(Kind::Open),
                seq,
                &prev,
                jiff::Timestamp::UNIX_EPOCH,
            );
            let note = String::from_utf8(s.sign(&text).unwrap()).unwrap();
            prev = note_hash(note.as_bytes());
            lines.push(serde_json::to_string(&Line { note }).unwrap());
        }
        (s, lines)
    }

    fn problems(lines: &[String], s: &NoteSigner) -> Vec<String> {
        verify_chain(lines, s.verifier())
            .problems
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn intact() {
        let (s, lines) = chain(4);
        let r = verify_chain(&lines, s.verifier());
        assert!(r.problems.is_empty());
        assert_eq!(r.entries.len(), 4);
    }

    #[test]
    fn deleted_replayed_changed() {
        let (s, lines) = chain(5);
        let mut deleted = lines.clone();
        deleted.remove(2);
        assert_eq!(
            problems(&deleted, &s),
            ["line 3: seq 2 is missing before seq 3 (deleted)"]
        );

        let mut replayed = lines.clone();
        replayed.push(lines[1].clone());
        assert_eq!(
            problems(&replayed, &s),
            ["line 6: seq 1 repeats an earlier entry (replayed; expected seq 5)"]
        );

        let mut changed = lines.clone();
        changed[1] = changed[1].replace("seq 1", "seq 7");
        let p = problems(&changed, &s);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("line 2: entry changed or forged"), "{p:?}");

        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        assert!(!problems(&swapped, &s).is_empty());
    }
}
