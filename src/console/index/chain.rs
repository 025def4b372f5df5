//! Reading the audit chain from where the index left off: the segment and byte offset of the
//! last entry read, and that entry's signed note, which must still be there, byte for byte, for
//! the rest to be read on from it (as from a signed checkpoint, [`Start`]).
//!
//! Memory is bounded by the budget of lines per read, not by the chain's length.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::audit::{
    ChainReport, Line, NoteVerifier, Start, first_line, note_hash, segments, seq_of, verify_from,
};

/// The last entry read and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// First seq of the segment that holds it (closed segments are named by it; the live one
    /// starts with it), so a segment closed since is still found.
    pub segment_first: u64,
    /// Byte offset of its line in that segment.
    pub line_start: u64,
    pub seq: u64,
    pub note: String,
}

/// What one read gave: the entries after the position (up to the budget), verified, what did
/// not verify, and the new position (`None`: nothing verified yet).
pub struct Batch {
    pub report: ChainReport,
    pub problems: Vec<String>,
    pub last: Option<Position>,
    pub more: bool,
}

/// The chain's segments with the seq each begins with: closed ones by their name, the live one
/// by its first line; empty ones are left out.
fn segment_list(chain: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for p in segments(chain)? {
        let first = if p == chain {
            first_line(&p)?.as_deref().and_then(seq_of)
        } else {
            p.file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.rsplit_once('-'))
                .and_then(|(_, n)| n.parse().ok())
        };
        if let Some(f) = first {
            out.push((f, p));
        }
    }
    Ok(out)
}

/// The hash of a stored line's note, if it is one.
fn line_hash(line: &str) -> Option<[u8; 32]> {
    serde_json::from_str::<Line>(line)
        .ok()
        .map(|l| note_hash(l.note.as_bytes()))
}

/// Reads at most `budget` entries after `from` (from the first entry without it) and verifies
/// them; `None` when the entry at `from` is gone or another (what the index read before may
/// have changed since).
pub fn read(
    chain: &Path,
    verifier: &NoteVerifier,
    from: Option<&Position>,
    budget: usize,
) -> std::io::Result<Option<Batch>> {
    let segs = segment_list(chain)?;
    let (first_seg, offset, start) = match from {
        None => (0, 0, None),
        Some(p) => {
            let Some(i) = segs.iter().position(|(f, _)| *f == p.segment_first) else {
                return Ok(None);
            };
            let Ok(start) = Start::from_note(p.note.as_bytes(), verifier) else {
                return Ok(None);
            };
            (i, p.line_start, Some(start))
        }
    };
    // The line at the position (when there is one) comes first, then up to `budget` more.
    let want = budget + usize::from(from.is_some());
    let mut lines = Vec::new();
    let mut places = Vec::new();
    let mut more = false;
    'segments: for (i, (first, path)) in segs.iter().enumerate().skip(first_seg) {
        let file = match File::open(path) {
            Ok(f) => f,
            // Closed and renamed between listing and opening: the next read finds it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        };
        let mut reader = BufReader::new(file);
        let mut at = if i == first_seg { offset } else { 0 };
        reader.seek(SeekFrom::Start(at))?;
        let mut buf = Vec::new();
        loop {
            if lines.len() == want {
                more = true;
                break 'segments;
            }
            buf.clear();
            let n = reader.read_until(b'\n', &mut buf)?;
            // A torn last line is being written (or was cut off by a crash): not yet an entry.
            if n == 0 || buf.last() != Some(&b'\n') {
                break;
            }
            let text = String::from_utf8_lossy(&buf).trim_end().to_owned();
            if !text.is_empty() {
                lines.push(text);
                places.push((*first, at, path));
            }
            at += n as u64;
        }
    }
    if let Some(p) = from {
        let same = lines
            .first()
            .and_then(|l| line_hash(l))
            .is_some_and(|h| h == note_hash(p.note.as_bytes()));
        if !same {
            return Ok(None);
        }
    }
    let mut report = verify_from(&lines, verifier, start);
    let problems: Vec<String> = report
        .problems
        .iter()
        .map(|p| match places.get(p.line.saturating_sub(1)) {
            Some((_, at, path)) => format!(
                "{} at byte {at}: {}",
                path.file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
                p.what
            ),
            None => p.what.clone(),
        })
        .collect();
    // The entry at the position was read before.
    if let Some(p) = from {
        report.entries.retain(|(e, _)| e.seq > p.seq);
    }
    let last = report.entries.last().and_then(|(e, note)| {
        let at = lines.iter().rposition(|l| seq_of(l) == Some(e.seq))?;
        let (segment_first, line_start, _) = places.get(at)?;
        Some(Position {
            segment_first: *segment_first,
            line_start: *line_start,
            seq: e.seq,
            note: note.clone(),
        })
    });
    let mut problems = problems;
    // A whole budget of lines and not one entry verified among them: the position cannot move
    // past lines that are not signed entries, so reading on would read the same lines for ever.
    // The index stops here, and says so.
    if more && report.entries.is_empty() {
        more = false;
        problems.push(format!(
            "the {budget} lines after {} are not entries that verify; the index reads no \
             further (run stapsteen audit verify)",
            from.map_or("the start of the chain".to_owned(), |p| format!(
                "seq {}",
                p.seq
            ))
        ));
    }
    let report = report.entries.into_iter().collect();
    Ok(Some(Batch {
        report,
        problems,
        last: last.or_else(|| from.cloned()),
        more,
    }))
}
