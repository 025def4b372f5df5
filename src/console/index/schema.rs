//! The index's tables. The schema version is SQLite's `user_version`: an index of another
//! version (or one that does not open) is deleted and built again, never migrated, since it
//! holds nothing that is not in the recordings and the audit chain.

/// Raise on any change to [`TABLES`].
pub const VERSION: i64 = 3;

pub const TABLES: &str = "
-- The last chain entry read and verified: where the next read starts, and what must still be
-- there (its signed note) for the index to trust what it read before.
CREATE TABLE position (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    segment_first INTEGER NOT NULL,
    line_start INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    note TEXT NOT NULL
);
-- Verified chain entries that name a session (start, checkpoints, end, pruned), as their
-- signed notes: what a recording is verified against without reading the chain again, and what
-- the evidence bundle ships. Each note is checked again when read, so this file cannot make a
-- verdict better than the signed entries allow.
CREATE TABLE entries (
    seq INTEGER PRIMARY KEY,
    session TEXT NOT NULL,
    note TEXT NOT NULL
);
CREATE INDEX entries_session ON entries (session, seq);
-- What verifying the chain found.
CREATE TABLE problems (what TEXT PRIMARY KEY);
CREATE TABLE sessions (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    admin TEXT NOT NULL,
    target TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    end_us INTEGER,
    exit_status INTEGER,
    meta TEXT NOT NULL,
    recorded INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    integrity TEXT NOT NULL,
    -- The verdict stands until the files or the session's chain entries change (not `intact`,
    -- which holds only while the session is live).
    settled INTEGER NOT NULL,
    -- The chain position (last seq read) the verdict was taken against.
    checked_seq INTEGER,
    fingerprint TEXT NOT NULL,
    -- `output` holds all of the session's text, and it will not grow: a search may rely on it.
    -- Otherwise (more than the index keeps, or live) the recording is searched as a stream.
    searched INTEGER NOT NULL
);
CREATE INDEX sessions_start ON sessions (start_us DESC, id DESC);
CREATE INDEX sessions_admin ON sessions (admin);
CREATE INDEX sessions_target ON sessions (target);
-- The rows a search reads in their recordings, found without reading every row.
CREATE INDEX sessions_streamed ON sessions (searched) WHERE searched = 0;
-- Terminal output without escape sequences; rowid = sessions.rowid. Trigrams, so that a search
-- finds any substring (of three characters or more), case-insensitively, as before the index.
CREATE VIRTUAL TABLE output USING fts5 (text, tokenize = 'trigram');
-- A recording deleted (retention) takes its postings out of the full-text index at once, not
-- when segments happen to be merged: no longer kept than needed.
INSERT INTO output (output, rank) VALUES ('secure-delete', 1);
";
