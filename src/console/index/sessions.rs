//! One session's row in the index: its metadata, its recording's verdict against the chain
//! entries the index holds for it, the fingerprint of its files, and its searchable text.

use std::io::Write;
use std::os::unix::fs::MetadataExt;

use rusqlite::{Connection, OptionalExtension, params};

use crate::audit::{ChainReport, Entry, Kind, Seal};
use crate::console::catalog::unrecorded;
use crate::ids::SessionId;
use crate::recording::{Meta, RecordingStore, Verdict, verify_recording};

/// Most output text indexed for one session; a search finds text within it, and lists a
/// session with more among its results (it cannot rule it out).
pub const MAX_TEXT: usize = 8 << 20;

/// Size, inode, modification and change time (ns) of a recording's files. The change time
/// (ctime) cannot be set from user space (short of setting the clock back), so a file written
/// and given back its old mtime still shows as changed, and its recording is verified again.
pub fn fingerprint(store: &RecordingStore, id: &SessionId) -> String {
    [
        store.cast_path(id),
        store.index_path(id),
        store.meta_path(id),
    ]
    .iter()
    .map(|p| match std::fs::metadata(p) {
        Ok(m) => format!(
            "{}:{}:{}.{}:{}.{}",
            m.len(),
            m.ino(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        ),
        Err(_) => "-".to_owned(),
    })
    .collect::<Vec<_>>()
    .join(" ")
}

pub fn micros(t: jiff::Timestamp) -> i64 {
    t.as_microsecond()
}

/// Stores a verified chain entry that names a session.
pub fn store_entry(db: &Connection, e: &Entry) -> rusqlite::Result<()> {
    let Some(session) = &e.session else {
        return Ok(());
    };
    let fields = serde_json::to_string(&e.fields).unwrap_or_else(|_| "[]".into());
    db.execute(
        "INSERT OR REPLACE INTO entries (seq, session, kind, time, lines, bytes, chain, fields)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            e.seq as i64,
            session.as_str(),
            e.kind.as_str(),
            e.time.to_string(),
            e.seal.map(|s| s.lines as i64),
            e.seal.map(|s| s.bytes as i64),
            e.seal.map(|s| s.chain.to_vec()),
            fields,
        ],
    )?;
    Ok(())
}

/// The chain entries the index holds for a session, as a report to verify its recording with.
pub fn report_of(db: &Connection, id: &SessionId) -> rusqlite::Result<ChainReport> {
    let mut stmt = db.prepare_cached(
        "SELECT seq, kind, time, lines, bytes, chain, fields FROM entries
         WHERE session = ?1 ORDER BY seq",
    )?;
    let rows = stmt.query_map([id.as_str()], |r| {
        let seq: i64 = r.get(0)?;
        let kind: String = r.get(1)?;
        let time: String = r.get(2)?;
        let lines: Option<i64> = r.get(3)?;
        let bytes: Option<i64> = r.get(4)?;
        let chain: Option<Vec<u8>> = r.get(5)?;
        let fields: String = r.get(6)?;
        Ok((seq, kind, time, lines, bytes, chain, fields))
    })?;
    let mut entries = Vec::new();
    for row in rows {
        let (seq, kind, time, lines, bytes, chain, fields) = row?;
        // Rows this index wrote from verified entries; one that does not read back is left out,
        // which can only make a verdict worse, never better.
        let (Some(kind), Ok(time)) = (Kind::parse(&kind), time.parse()) else {
            continue;
        };
        let seal = match (
            lines,
            bytes,
            chain.and_then(|c| <[u8; 32]>::try_from(c).ok()),
        ) {
            (Some(lines), Some(bytes), Some(chain)) => Some(Seal {
                lines: lines as u64,
                bytes: bytes as u64,
                chain,
            }),
            _ => None,
        };
        let entry = Entry {
            seq: seq as u64,
            prev: [0; 32],
            time,
            kind,
            session: Some(id.clone()),
            seal,
            fields: serde_json::from_str(&fields).unwrap_or_default(),
        };
        entries.push((entry, String::new()));
    }
    Ok(entries.into_iter().collect())
}

/// Reads the session's files and entries again and writes its row (or removes it: a session
/// with neither metadata nor a start entry without a recording is not listed, as before the
/// index).
pub fn refresh(
    db: &Connection,
    store: &RecordingStore,
    id: &SessionId,
    checked_seq: Option<u64>,
) -> rusqlite::Result<()> {
    let fp = fingerprint(store, id);
    let report = report_of(db, id)?;
    let (meta, verdict) = match store.read_meta(id) {
        Ok(m) => {
            let v = verify_recording(store, id, &report);
            (m, Some(v))
        }
        Err(_) => match unrecorded(&report).into_iter().next() {
            Some(m) => (m, None),
            None => {
                remove(db, id)?;
                return Ok(());
            }
        },
    };
    let (ok, integrity) = match &verdict {
        Some(v) => (v.ok(), v.to_string()),
        None => (
            true,
            "no recording; start and end are in the audit chain".into(),
        ),
    };
    let settled = !matches!(verdict, Some(Verdict::Intact { .. }));
    let meta_json = serde_json::to_string(&meta).unwrap_or_default();
    let (text, text_cut) = match verdict {
        Some(_) => output_text(store, id),
        None => (String::new(), false),
    };
    db.execute(
        "INSERT INTO sessions (id, admin, target, start_us, end_us, exit_status, meta, recorded,
             ok, integrity, settled, checked_seq, fingerprint, text_cut)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (id) DO UPDATE SET admin = ?2, target = ?3, start_us = ?4, end_us = ?5,
             exit_status = ?6, meta = ?7, recorded = ?8, ok = ?9, integrity = ?10,
             settled = ?11, checked_seq = ?12, fingerprint = ?13, text_cut = ?14",
        params![
            id.as_str(),
            meta.admin,
            meta.target,
            micros(meta.start),
            meta.end.map(micros),
            meta.exit_status,
            meta_json,
            verdict.is_some(),
            ok,
            integrity,
            settled,
            checked_seq.map(|s| s as i64),
            fp,
            text_cut,
        ],
    )?;
    let rowid: i64 = db.query_row(
        "SELECT rowid FROM sessions WHERE id = ?1",
        [id.as_str()],
        |r| r.get(0),
    )?;
    db.execute("DELETE FROM output WHERE rowid = ?1", [rowid])?;
    if verdict.is_some() {
        db.execute(
            "INSERT INTO output (rowid, text) VALUES (?1, ?2)",
            params![rowid, text],
        )?;
    }
    Ok(())
}

fn remove(db: &Connection, id: &SessionId) -> rusqlite::Result<()> {
    let rowid: Option<i64> = db
        .query_row(
            "SELECT rowid FROM sessions WHERE id = ?1",
            [id.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(rowid) = rowid {
        db.execute("DELETE FROM output WHERE rowid = ?1", [rowid])?;
        db.execute("DELETE FROM sessions WHERE rowid = ?1", [rowid])?;
    }
    Ok(())
}

/// What the terminal showed, without escape sequences (at most [`MAX_TEXT`] bytes of it), and
/// whether there was more; read line by line, so a long recording is never in memory whole.
pub fn output_text(store: &RecordingStore, id: &SessionId) -> (String, bool) {
    let mut out = strip_ansi_escapes::Writer::new(Vec::new());
    let Ok(events) = store.events(id) else {
        return (String::new(), false);
    };
    let (mut written, mut cut) = (0, false);
    for (_, kind, data) in events {
        if kind != "o" {
            continue;
        }
        written += data.len();
        if written > MAX_TEXT || out.write_all(data.as_bytes()).is_err() {
            cut = true;
            break;
        }
    }
    let bytes = out.into_inner().unwrap_or_default();
    (String::from_utf8_lossy(&bytes).into_owned(), cut)
}

/// A row as listed.
pub struct Listed {
    pub meta: Meta,
    pub recorded: bool,
    pub ok: bool,
    pub integrity: String,
    /// Its output is longer than the text indexed (listed by every search).
    pub text_cut: bool,
}
