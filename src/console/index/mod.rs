//! The console's index: sessions, their metadata, their recordings' verdicts and searchable
//! output, so that a page costs what it shows, not all history.
//!
//! SQLite (through rusqlite, compiled in with FTS5) rather than tantivy: one file, transactions
//! (a crash leaves the index as it was before an update, never half of one), FTS5 for the
//! output search, ordinary indexed queries for the filters and pages, little memory, and few
//! dependencies (a C compiler builds it).
//!
//! Invariants:
//! - Never the source of truth: built from the recordings and the audit chain, and may be
//!   deleted at any time (`stapsteen index rebuild` builds it again). An index that does not
//!   open or has another schema version is deleted and built again, not trusted.
//! - It reads only what is new: the chain from the last entry it read (whose signed note must
//!   still be in the chain file, byte for byte, or everything is read again from the start and
//!   the change is shown as a problem), and recordings whose files changed (size, inode, mtime,
//!   ctime) or whose session has new chain entries. A budget of lines of which none verifies
//!   stops the reading there (shown as a problem) rather than reading them again for ever.
//! - A session's entries are kept as their signed notes and opened with the verifier again
//!   whenever they are read (session page, evidence bundle, verdicts): whoever can write the
//!   index file can hide entries, not forge them. The list's stored verdicts are trusted until
//!   the files or the entries change (`stapsteen index rebuild` takes nothing from the file).
//! - SQLite calls block: callers run them off the async workers (`spawn_blocking`), and each
//!   update reads at most a budget of entries, so a page view never does unbounded work.

mod chain;
mod query;
mod schema;
mod sessions;
mod streamed;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

pub use query::{PAGE, Query};
pub use sessions::Listed;

use crate::audit::{ChainReport, NoteVerifier};
use crate::ids::SessionId;
use crate::recording::RecordingStore;
use crate::sync::lock;
use chain::{Batch, Position};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index {path}: {source}")]
    Db {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("index: audit chain {path}: {source}")]
    Chain {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("index: cannot list recordings: {0}")]
    Store(std::io::Error),
    #[error("index: {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Entries an update reads at most when a page asks for it (a few hundred milliseconds of
/// signature checks); the timer reads on in such steps until it has caught up.
pub const PAGE_BUDGET: usize = 2_000;
/// Entries per step when catching up in the background or rebuilding.
pub const STEP: usize = 10_000;
/// Recordings verified again per transaction during a sweep.
const SWEEP_STEP: usize = 100;

pub struct Index {
    path: PathBuf,
    chain: PathBuf,
    store: RecordingStore,
    verifier: NoteVerifier,
    /// Updates, one at a time. Pages each open a reader of their own ([`Index::reader`]): WAL
    /// lets them read while an update writes, and a slow search holds up no other page.
    writer: Mutex<Connection>,
}

/// What one update did.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// More entries wait in the chain.
    pub more: bool,
}

/// One page of the sessions list.
pub struct Page {
    pub rows: Vec<Listed>,
    /// There is a page after this one.
    pub more: bool,
    pub admins: Vec<String>,
    pub targets: Vec<String>,
    /// What verifying the chain found.
    pub problems: Vec<String>,
}

impl Index {
    /// Opens the index at `path`, or builds an empty one there (deleting whatever did not
    /// open as an index of this schema version); the chain is read by [`Index::update`].
    pub fn open(
        path: &Path,
        chain: &Path,
        store: RecordingStore,
        verifier: NoteVerifier,
    ) -> Result<Self, IndexError> {
        let db_err = |source| IndexError::Db {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent() {
            create_private_dir(dir)?;
        }
        private_files(path)?;
        let writer = match open_db(path) {
            Ok(db) => db,
            Err(_) => {
                remove_files(path)?;
                private_files(path)?;
                open_db(path).map_err(db_err)?
            }
        };
        // A reader opens as this process's index does, so that a page fails now, not later.
        drop(open_reader(path, &store).map_err(db_err)?);
        Ok(Self {
            path: path.to_owned(),
            chain: chain.to_owned(),
            store,
            verifier,
            writer: Mutex::new(writer),
        })
    }

    /// Deletes the index at `path` and builds it again from the chain and the recordings.
    pub fn rebuild(
        path: &Path,
        chain: &Path,
        store: RecordingStore,
        verifier: NoteVerifier,
    ) -> Result<Self, IndexError> {
        remove_files(path)?;
        let index = Self::open(path, chain, store, verifier)?;
        while index.update(STEP)?.more {}
        index.sweep()?;
        Ok(index)
    }

    /// A connection for reading, of its own (opening one costs far less than a page).
    fn reader(&self) -> rusqlite::Result<Connection> {
        open_reader(&self.path, &self.store)
    }

    fn db_err(&self, source: rusqlite::Error) -> IndexError {
        IndexError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// Reads up to `budget` new chain entries, stores those that name a session, and brings
    /// those sessions' rows up to date.
    pub fn update(&self, budget: usize) -> Result<Progress, IndexError> {
        let mut db = lock(&self.writer);
        let tx = db.transaction().map_err(|e| self.db_err(e))?;
        let from = position(&tx).map_err(|e| self.db_err(e))?;
        let chain_err = |source| IndexError::Chain {
            path: self.chain.clone(),
            source,
        };
        let read =
            chain::read(&self.chain, &self.verifier, from.as_ref(), budget).map_err(chain_err)?;
        let Batch {
            report,
            problems,
            last,
            more,
        } = match read {
            Some(batch) => batch,
            None => {
                let p = from.as_ref().map_or(0, |p| p.seq);
                forget_chain(
                    &tx,
                    &format!(
                        "entry seq {p} is no longer in the audit chain as the index read it \
                         (the chain was changed afterwards); everything was verified again"
                    ),
                )
                .map_err(|e| self.db_err(e))?;
                tx.commit().map_err(|e| self.db_err(e))?;
                drop(db);
                self.update(budget)?;
                return Ok(Progress { more: true });
            }
        };
        let write = || -> rusqlite::Result<bool> {
            for p in &problems {
                tx.execute("INSERT OR IGNORE INTO problems (what) VALUES (?1)", [p])?;
            }
            let mut dirty = BTreeSet::new();
            for (e, note) in &report.entries {
                sessions::store_entry(&tx, e, note)?;
                if let Some(s) = &e.session {
                    dirty.insert(s.clone());
                }
            }
            if let Some(p) = &last {
                tx.execute(
                    "INSERT OR REPLACE INTO position (one, segment_first, line_start, seq, note)
                     VALUES (1, ?1, ?2, ?3, ?4)",
                    params![
                        p.segment_first as i64,
                        p.line_start as i64,
                        p.seq as i64,
                        p.note
                    ],
                )?;
            }
            let seq = last.as_ref().map(|p| p.seq);
            let mut removed = false;
            for id in &dirty {
                removed |= sessions::refresh(&tx, &self.store, &self.verifier, id, seq)?;
            }
            Ok(removed)
        };
        let removed = write().map_err(|e| self.db_err(e))?;
        tx.commit().map_err(|e| self.db_err(e))?;
        if removed {
            truncate_wal(&db).map_err(|e| self.db_err(e))?;
        }
        Ok(Progress { more })
    }

    /// Verifies again every recording whose files changed since it was verified (or that the
    /// index does not know: one without a start entry in the chain), and drops rows whose files
    /// are gone. Costs a `stat` of each recording's files; run by the timer, not by pages.
    pub fn sweep(&self) -> Result<usize, IndexError> {
        let known = self.stored_fingerprints(None).map_err(|e| self.db_err(e))?;
        let on_disk = match self.store.meta_ids() {
            Ok(ids) => ids,
            // Nothing recorded yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(IndexError::Store(e)),
        };
        let mut stale: Vec<SessionId> = on_disk
            .iter()
            .filter(|id| {
                known.get(id.as_str()).is_none_or(|(fp, settled)| {
                    !settled || *fp != sessions::fingerprint(&self.store, id)
                })
            })
            .cloned()
            .collect();
        let present: BTreeSet<&str> = on_disk.iter().map(SessionId::as_str).collect();
        stale.extend(
            known
                .iter()
                .filter(|(id, _)| !present.contains(id.as_str()))
                .filter_map(|(id, _)| SessionId::parse(id)),
        );
        self.refresh(&stale)?;
        Ok(stale.len())
    }

    /// Stored fingerprints and whether the verdict is settled, of recorded sessions (of `ids`
    /// only, if given).
    fn stored_fingerprints(
        &self,
        ids: Option<&[SessionId]>,
    ) -> rusqlite::Result<HashMap<String, (String, bool)>> {
        let db = self.reader()?;
        let mut out = HashMap::new();
        let row = |r: &rusqlite::Row<'_>| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
            ))
        };
        match ids {
            None => {
                let mut stmt = db.prepare_cached(
                    "SELECT id, fingerprint, settled FROM sessions WHERE recorded = 1",
                )?;
                for r in stmt.query_map([], row)? {
                    let (id, fp, settled) = r?;
                    out.insert(id, (fp, settled));
                }
            }
            // One lookup by the unique id each: a page's rows, never a scan of all.
            Some(ids) => {
                let mut stmt = db.prepare_cached(
                    "SELECT id, fingerprint, settled FROM sessions WHERE id = ?1 AND recorded = 1",
                )?;
                for id in ids {
                    if let Some((id, fp, settled)) =
                        stmt.query_row([id.as_str()], row).optional()?
                    {
                        out.insert(id, (fp, settled));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Verifies these sessions' recordings again and rewrites their rows.
    fn refresh(&self, ids: &[SessionId]) -> Result<(), IndexError> {
        for chunk in ids.chunks(SWEEP_STEP) {
            let mut db = lock(&self.writer);
            let tx = db.transaction().map_err(|e| self.db_err(e))?;
            let seq = position(&tx).map_err(|e| self.db_err(e))?.map(|p| p.seq);
            let mut removed = false;
            for id in chunk {
                removed |= sessions::refresh(&tx, &self.store, &self.verifier, id, seq)
                    .map_err(|e| self.db_err(e))?;
            }
            tx.commit().map_err(|e| self.db_err(e))?;
            if removed {
                truncate_wal(&db).map_err(|e| self.db_err(e))?;
            }
        }
        Ok(())
    }

    /// One page of sessions; `live`: the sessions running now. A row shown whose recording's
    /// files changed since it was verified (or that was live) is verified again first.
    pub fn page(&self, q: &Query, live: &[String]) -> Result<Page, IndexError> {
        self.page_planned(q, live, query::FEW)
    }

    /// [`Index::page`], with the number of matches up to which a search's page is built from
    /// its matches (tests try both plans on the same rows).
    fn page_planned(&self, q: &Query, live: &[String], few: usize) -> Result<Page, IndexError> {
        let mut page = self.query(q, live, few).map_err(|e| self.db_err(e))?;
        let shown: Vec<SessionId> = page
            .rows
            .iter()
            .filter(|r| r.recorded)
            .map(|r| r.meta.id.clone())
            .collect();
        let known = self
            .stored_fingerprints(Some(&shown))
            .map_err(|e| self.db_err(e))?;
        let stale: Vec<SessionId> = shown
            .into_iter()
            .filter(|id| {
                known.get(id.as_str()).is_none_or(|(fp, settled)| {
                    !settled || *fp != sessions::fingerprint(&self.store, id)
                })
            })
            .collect();
        if !stale.is_empty() {
            self.refresh(&stale)?;
            page = self.query(q, live, few).map_err(|e| self.db_err(e))?;
        }
        Ok(page)
    }

    /// The rowids of one page (and one row more) of a search with few matches: the candidates
    /// ([`query::candidates`]) in the list's order, a recording read only for a candidate
    /// reached before the page is full, as a walk of the whole list would.
    fn pick(
        &self,
        db: &Connection,
        q: &Query,
        sql: &str,
        args: Vec<Value>,
    ) -> rusqlite::Result<Vec<i64>> {
        let needle = query::streamed_needle(q);
        let skip = q.page.saturating_mul(PAGE);
        let want = skip.saturating_add(PAGE + 1);
        let mut stmt = db.prepare(sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        let mut found = Vec::new();
        while found.len() < want {
            let Some(row) = rows.next()? else { break };
            let (rowid, id, read): (i64, String, bool) = (row.get(0)?, row.get(1)?, row.get(2)?);
            if !read
                || SessionId::parse(&id)
                    .is_some_and(|id| streamed::output_contains(&self.store, &id, &needle))
            {
                found.push(rowid);
            }
        }
        Ok(found.split_off(skip.min(found.len())))
    }

    fn query(&self, q: &Query, live: &[String], few: usize) -> rusqlite::Result<Page> {
        let mut reader = self.reader()?;
        // One snapshot for every read of the page: rowids picked in one statement are read in
        // another, and an update may free and reuse them in between.
        let db = reader.transaction()?;
        let matches_few = match query::count_matches(q, few) {
            Some((sql, args)) => {
                db.query_row(sql, rusqlite::params_from_iter(args), |r| {
                    r.get::<_, i64>(0)
                })? < i64::try_from(few).unwrap_or(i64::MAX)
            }
            None => false,
        };
        let (sql, args) = match matches_few.then(|| query::candidates(q, live)).flatten() {
            Some((sql, args)) => {
                let picked = self.pick(&db, q, &sql, args)?;
                let json = format!(
                    "[{}]",
                    picked
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                );
                (query::PICKED.to_owned(), vec![Value::Text(json)])
            }
            None => query::sql(q, live),
        };
        let mut stmt = db.prepare(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, bool>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (meta, recorded, ok, integrity) = row?;
            // Written by this index from a `Meta`; a row that does not read back is not shown.
            if let Ok(meta) = serde_json::from_str(&meta) {
                out.push(Listed {
                    meta,
                    recorded,
                    ok,
                    integrity,
                });
            }
        }
        let more = out.len() > PAGE;
        out.truncate(PAGE);
        let column = |sql: &str| -> rusqlite::Result<Vec<String>> {
            let mut stmt = db.prepare_cached(sql)?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        };
        Ok(Page {
            rows: out,
            more,
            admins: column(&distinct("admin"))?,
            targets: column(&distinct("target"))?,
            problems: column("SELECT what FROM problems ORDER BY what LIMIT 20")?,
        })
    }

    /// [`Index::report`] after reading what is new in the chain (up to [`PAGE_BUDGET`] entries),
    /// so a session just begun is there; a failed read is logged and what is held serves.
    pub fn current_report(&self, id: &SessionId) -> Result<ChainReport, IndexError> {
        if let Err(e) = self.update(PAGE_BUDGET) {
            tracing::warn!("console index: {e}");
        }
        self.report(id)
    }

    /// The chain entries the index holds for one session (their signed notes, checked again),
    /// to verify its recording with and to ship in the evidence bundle.
    pub fn report(&self, id: &SessionId) -> Result<ChainReport, IndexError> {
        let db = self.reader().map_err(|e| self.db_err(e))?;
        sessions::report_of(&db, &self.verifier, id).map_err(|e| self.db_err(e))
    }

    /// Sessions indexed, and what verifying the chain found.
    pub fn counts(&self) -> Result<(u64, Vec<String>), IndexError> {
        let db = self.reader().map_err(|e| self.db_err(e))?;
        let run = || -> rusqlite::Result<(u64, Vec<String>)> {
            let n: i64 = db.query_row("SELECT count(*) FROM sessions", [], |r| r.get(0))?;
            let mut stmt = db.prepare("SELECT what FROM problems ORDER BY what")?;
            let problems = stmt
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            Ok((n as u64, problems))
        };
        run().map_err(|e| self.db_err(e))
    }

    #[cfg(test)]
    /// Every row, oldest first, as `(id, admin, target, start, end, exit status, recorded, ok,
    /// integrity, text)`: for comparing two indexes.
    pub fn dump(&self) -> Result<Vec<String>, IndexError> {
        let db = self.reader().map_err(|e| self.db_err(e))?;
        let run = || -> rusqlite::Result<Vec<String>> {
            let mut stmt = db.prepare(
                "SELECT s.id, s.admin, s.target, s.start_us, s.end_us, s.exit_status, s.recorded,
                        s.ok, s.integrity, coalesce(o.text, '')
                 FROM sessions s LEFT JOIN output o ON o.rowid = s.rowid
                 ORDER BY s.start_us, s.id",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(format!(
                    "{}|{}|{}|{}|{:?}|{:?}|{}|{}|{}|{}",
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, bool>(6)?,
                    r.get::<_, bool>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, String>(9)?,
                ))
            })?;
            rows.collect()
        };
        run().map_err(|e| self.db_err(e))
    }
}

/// The last entry read, if any.
fn position(db: &Connection) -> rusqlite::Result<Option<Position>> {
    db.query_row(
        "SELECT segment_first, line_start, seq, note FROM position WHERE one = 1",
        [],
        |r| {
            Ok(Position {
                segment_first: r.get::<_, i64>(0)? as u64,
                line_start: r.get::<_, i64>(1)? as u64,
                seq: r.get::<_, i64>(2)? as u64,
                note: r.get(3)?,
            })
        },
    )
    .optional()
}

/// Forgets what was read from the chain (and the verdicts taken against it), keeping `why` as a
/// problem: the chain is read again from its first entry.
fn forget_chain(db: &Connection, why: &str) -> rusqlite::Result<()> {
    db.execute("INSERT OR IGNORE INTO problems (what) VALUES (?1)", [why])?;
    db.execute_batch(
        "DELETE FROM position; DELETE FROM entries; DELETE FROM output; DELETE FROM sessions;",
    )
}

/// The distinct values of an indexed column, in order: a step down its index per value, not
/// a read of every row (the filters' lists are shown on every page).
fn distinct(column: &'static str) -> String {
    format!(
        "WITH RECURSIVE v(x) AS (SELECT min({column}) FROM sessions UNION ALL \
         SELECT (SELECT min({column}) FROM sessions WHERE {column} > x) FROM v WHERE x IS NOT NULL) \
         SELECT x FROM v WHERE x IS NOT NULL ORDER BY x"
    )
}

/// A read-only connection, with the streamed search of rows whose text the index does not hold
/// whole (see [`query::sql`]).
fn open_reader(path: &Path, store: &RecordingStore) -> rusqlite::Result<Connection> {
    let reader = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    reader.busy_timeout(std::time::Duration::from_secs(10))?;
    let store = store.clone();
    reader.create_scalar_function(
        "output_contains",
        2,
        rusqlite::functions::FunctionFlags::SQLITE_UTF8,
        move |ctx| {
            let id: String = ctx.get(0)?;
            let needle: String = ctx.get(1)?;
            Ok(SessionId::parse(&id)
                .is_some_and(|id| streamed::output_contains(&store, &id, &needle)))
        },
    )?;
    Ok(reader)
}

fn open_db(path: &Path) -> rusqlite::Result<Connection> {
    let db = Connection::open(path)?;
    db.busy_timeout(std::time::Duration::from_secs(10))?;
    let mode: String = db.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if mode != "wal" {
        return Err(rusqlite::Error::InvalidQuery);
    }
    db.pragma_update(None, "synchronous", "NORMAL")?;
    // Deleted rows (a recording pruned) are overwritten, not left in free pages.
    db.pragma_update(None, "secure_delete", "ON")?;
    let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version == schema::VERSION {
        return Ok(db);
    }
    let tables: i64 = db.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    if version != 0 || tables != 0 {
        return Err(rusqlite::Error::InvalidQuery);
    }
    db.execute_batch(schema::TABLES)?;
    db.pragma_update(None, "user_version", schema::VERSION)?;
    Ok(db)
}

/// Copies the WAL into the database and empties it: the pages of a removed session's text, as
/// they were before, are not kept in it (a reader in the middle of a query may delay this to
/// the next removal; SQLite then reports busy, which is not an error).
fn truncate_wal(db: &Connection) -> rusqlite::Result<()> {
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
}

/// Deletes the index file and SQLite's files beside it.
fn remove_files(path: &Path) -> Result<(), IndexError> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(IndexError::Io {
                    path: PathBuf::from(p),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Creates the index file for its owner only (SQLite gives its WAL and shared memory files the
/// database file's mode), or takes an existing one's and those files' access from others.
fn private_files(path: &Path) -> Result<(), IndexError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| IndexError::Io { path: p, source }
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        match std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&p)(e)),
        }
    }
    Ok(())
}

/// The index holds recorded terminal output: only its owner may read it.
fn create_private_dir(dir: &Path) -> Result<(), IndexError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(IndexError::Io {
            path: dir.to_owned(),
            source,
        }),
    }
}
