//! One session's row in the index: its metadata, its recording's verdict against the chain
//! entries the index holds for it, the fingerprint of its files, and its searchable text.

use std::io::Write;
use std::os::unix::fs::MetadataExt;

use rusqlite::{Connection, OptionalExtension, params};

use crate::audit::{ChainReport, Entry, NoteVerifier, parse_entry};
use crate::console::catalog::unrecorded;
use crate::ids::SessionId;
use crate::recording::{Meta, RecordingStore, Verdict, verify_recording};

/// Most output text indexed for one session; a search finds text within it.
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

/// Stores a verified chain entry that names a session, with its signed note.
pub fn store_entry(db: &Connection, e: &Entry, note: &str) -> rusqlite::Result<()> {
    let Some(session) = &e.session else {
        return Ok(());
    };
    db.execute(
        "INSERT OR REPLACE INTO entries (seq, session, note) VALUES (?1, ?2, ?3)",
        params![e.seq as i64, session.as_str(), note],
    )?;
    Ok(())
}

/// The chain entries the index holds for a session, as a report to verify its recording with.
/// Each note is opened with the verifier again and must name this session and its row's seq: a
/// row changed in the index file is left out, which can only make a verdict worse, never better.
pub fn report_of(
    db: &Connection,
    verifier: &NoteVerifier,
    id: &SessionId,
) -> rusqlite::Result<ChainReport> {
    let mut stmt =
        db.prepare_cached("SELECT seq, note FROM entries WHERE session = ?1 ORDER BY seq")?;
    let rows = stmt.query_map([id.as_str()], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut entries = Vec::new();
    for row in rows {
        let (seq, note) = row?;
        let Ok(entry) = verifier.open(note.as_bytes()).and_then(|t| parse_entry(&t)) else {
            continue;
        };
        if entry.seq as i64 == seq && entry.session.as_ref() == Some(id) {
            entries.push((entry, note));
        }
    }
    Ok(entries.into_iter().collect())
}

/// Reads the session's files and entries again and writes its row (or removes it, and its
/// text: a session with neither metadata nor a start entry without a recording is not listed,
/// as before the index). True when a row was removed.
pub fn refresh(
    db: &Connection,
    store: &RecordingStore,
    verifier: &NoteVerifier,
    id: &SessionId,
    checked_seq: Option<u64>,
) -> rusqlite::Result<bool> {
    let fp = fingerprint(store, id);
    let report = report_of(db, verifier, id)?;
    let (meta, verdict) = match store.read_meta(id) {
        Ok(m) => {
            let v = verify_recording(store, id, &report);
            (m, Some(v))
        }
        Err(_) => match unrecorded(&report).into_iter().next() {
            Some(m) => (m, None),
            None => return remove(db, id),
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
    let (text, whole) = match verdict {
        Some(_) => output_text(store, id),
        None => (String::new(), true),
    };
    let meta_json = serde_json::to_string(&meta).unwrap_or_default();
    db.execute(
        "INSERT INTO sessions (id, admin, target, start_us, end_us, exit_status, meta, recorded,
             ok, integrity, settled, checked_seq, fingerprint, searched)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
         ON CONFLICT (id) DO UPDATE SET admin = ?2, target = ?3, start_us = ?4, end_us = ?5,
             exit_status = ?6, meta = ?7, recorded = ?8, ok = ?9, integrity = ?10,
             settled = ?11, checked_seq = ?12, fingerprint = ?13, searched = ?14",
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
            whole && settled,
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
    Ok(false)
}

fn remove(db: &Connection, id: &SessionId) -> rusqlite::Result<bool> {
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
    Ok(rowid.is_some())
}

/// What the terminal showed, without escape sequences (at most [`MAX_TEXT`] bytes of it), and
/// whether that is all of it; read line by line, so a long recording is never in memory whole.
pub fn output_text(store: &RecordingStore, id: &SessionId) -> (String, bool) {
    let mut out = strip_ansi_escapes::Writer::new(Vec::new());
    let Ok(events) = store.events(id) else {
        return (String::new(), false);
    };
    let mut written = 0;
    let mut whole = true;
    for (_, kind, data) in events {
        if kind != "o" {
            continue;
        }
        written += data.len();
        if written > MAX_TEXT || out.write_all(data.as_bytes()).is_err() {
            whole = false;
            break;
        }
    }
    let bytes = out.into_inner().unwrap_or_default();
    (String::from_utf8_lossy(&bytes).into_owned(), whole)
}

/// A row as listed.
pub struct Listed {
    pub meta: Meta,
    pub recorded: bool,
    pub ok: bool,
    pub integrity: String,
}
