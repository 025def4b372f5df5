//! The index against the chain and recordings it is built from.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::audit::{AuditChain, Draft, Kind, test_chain};
use crate::recording::{Cadence, Meta, Recorder};

struct Bed {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: RecordingStore,
    chain: Arc<AuditChain>,
}

impl Bed {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        std::fs::create_dir(root.join("recordings")).unwrap();
        std::fs::create_dir(root.join("audit")).unwrap();
        // Small segments: the chain is closed and renamed under the index's feet many times.
        let key = crate::secrets::generate_key("stapsteen-test");
        let chain = AuditChain::open_segmented(
            &root.join("audit/chain.jsonl"),
            crate::audit::NoteSigner::new(&key).unwrap(),
            Arc::new(crate::clock::SystemClock),
            crate::config::OnFailure::EndSessions,
            500,
        )
        .unwrap();
        Self {
            store: RecordingStore::new(root.join("recordings")),
            chain: Arc::new(chain),
            root,
            _dir: dir,
        }
    }

    fn index(&self, name: &str) -> Index {
        Index::open(
            &self.root.join(name),
            self.chain.path(),
            self.store.clone(),
            self.chain.verifier().clone(),
        )
        .unwrap()
    }

    fn rebuild(&self, name: &str) -> Index {
        Index::rebuild(
            &self.root.join(name),
            self.chain.path(),
            self.store.clone(),
            self.chain.verifier().clone(),
        )
        .unwrap()
    }

    /// A sealed recording of a session that printed `output`.
    async fn recorded(&self, admin: &str, output: &str) -> SessionId {
        let now = jiff::Timestamp::now();
        let id = SessionId::generate(now);
        let cadence = Cadence {
            interval: Duration::from_secs(60),
            bytes: 1 << 20,
        };
        let mut r = Recorder::create(
            &self.store,
            &id,
            self.chain.clone(),
            cadence,
            (80, 24),
            "xterm",
            "t",
        )
        .unwrap();
        r.seal_with(Draft::new(Kind::Start).session(&id))
            .wait()
            .await
            .unwrap();
        // In pieces, as a terminal's output comes.
        for piece in output.as_bytes().chunks(64 << 10) {
            r.output(piece).unwrap();
        }
        r.seal_with(Draft::new(Kind::End).session(&id))
            .wait()
            .await
            .unwrap();
        drop(r);
        self.store
            .write_meta(&Meta {
                id: id.clone(),
                admin: admin.into(),
                target: "pacs01".into(),
                account: "root".into(),
                grant: "g".into(),
                source: String::new(),
                start: now,
                end: Some(now),
                exit_status: Some(0),
                end_reason: Some("closed".into()),
                pty: true,
            })
            .unwrap();
        id
    }

    /// A session without a recording: only its start and end entries.
    async fn unrecorded(&self, admin: &str) -> SessionId {
        let id = SessionId::generate(jiff::Timestamp::now());
        let start = Draft::new(Kind::Start)
            .session(&id)
            .field("admin", admin)
            .field("target", "lab01")
            .field("account", "beheer")
            .field("grant", "g");
        self.chain.submit(start).wait().await.unwrap();
        let end = Draft::new(Kind::End)
            .session(&id)
            .field("exit_status", 1)
            .field("reason", "closed");
        self.chain.submit(end).wait().await.unwrap();
        id
    }
}

fn all(index: &Index, q: Query) -> Page {
    index.page(&q, &[]).unwrap()
}

fn live_rows(index: &Index, q: &Query, live: &[String]) -> Vec<String> {
    index
        .page(q, live)
        .unwrap()
        .rows
        .into_iter()
        .map(|r| r.meta.admin)
        .collect()
}

fn search(index: &Index, text: &str) -> Vec<String> {
    let q = Query {
        q: text.into(),
        ..Query::default()
    };
    all(index, q)
        .rows
        .into_iter()
        .map(|r| r.meta.admin)
        .collect()
}

/// The session's text made searchable only in its recording (in the index file `i.sqlite3`),
/// as when it is more than the index keeps.
fn only_in_recording(bed: &Bed, id: &SessionId) {
    let db = Connection::open(bed.root.join("i.sqlite3")).unwrap();
    db.execute_batch(&format!(
        "UPDATE sessions SET searched = 0 WHERE id = '{0}';
         DELETE FROM output WHERE rowid = (SELECT rowid FROM sessions WHERE id = '{0}');",
        id.as_str()
    ))
    .unwrap();
}

/// The session's recording replaced by a FIFO: reading it waits until a writer opens it.
fn fifo_for_recording(bed: &Bed, id: &SessionId) -> PathBuf {
    let cast = bed.store.cast_path(id);
    std::fs::remove_file(&cast).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&cast)
        .status()
        .unwrap();
    assert!(made.success());
    cast
}

#[tokio::test]
async fn incremental_index_equals_rebuild() {
    let bed = Bed::new();
    let live = bed.index("live.sqlite3");
    live.update(3).unwrap();
    bed.recorded("alice", "\x1b[1mtotal 0\x1b[0m\r\n").await;
    live.update(3).unwrap();
    bed.unrecorded("bob").await;
    bed.recorded("carol", "Password: hunter2\r\n").await;
    // Small steps: the position is carried across reads.
    while live.update(1).unwrap().more {}
    bed.recorded("dave", "done\r\n").await;
    while live.update(2).unwrap().more {}
    assert!(
        crate::audit::segments(bed.chain.path()).unwrap().len() > 3,
        "the chain was cut into segments while the index read it"
    );
    let rebuilt = bed.rebuild("rebuilt.sqlite3");
    let rows = live.dump().unwrap();
    assert_eq!(rows.len(), 4, "{rows:#?}");
    assert_eq!(rows, rebuilt.dump().unwrap());
    assert!(
        rows[0].contains("|alice|") && rows[0].contains("|total 0"),
        "{rows:#?}"
    );
    let page = all(&live, Query::default());
    let live_idx = &live;
    assert_eq!(
        page.rows
            .iter()
            .map(|r| r.meta.admin.as_str())
            .collect::<Vec<_>>(),
        ["dave", "carol", "bob", "alice"]
    );
    assert!(
        page.rows.iter().all(|r| r.ok),
        "{:?}",
        page.rows.iter().map(|r| &r.integrity).collect::<Vec<_>>()
    );
    assert!(page.problems.is_empty(), "{:?}", page.problems);
    let status = |status: &str, live: &[String]| -> Vec<String> {
        let q = Query {
            status: status.into(),
            ..Query::default()
        };
        live_rows(live_idx, &q, live)
    };
    let bob = page.rows.iter().find(|r| r.meta.admin == "bob").unwrap();
    let bob_id = bob.meta.id.to_string();
    assert_eq!(status("failure", &[]), ["bob"]);
    assert_eq!(status("success", &[]), ["dave", "carol", "alice"]);
    assert!(status("live", &[]).is_empty());
    assert_eq!(status("live", std::slice::from_ref(&bob_id)), ["bob"]);
    assert!(status("failure", std::slice::from_ref(&bob_id)).is_empty());
    assert!(!bob.recorded);
    assert_eq!(bob.meta.exit_status, Some(1));
}

#[tokio::test]
async fn search_is_a_phrase_whatever_is_typed() {
    let bed = Bed::new();
    bed.recorded("alice", "Password: \x1b[31mhunter2\x1b[0m\r\n")
        .await;
    bed.recorded("bob", "say \"hi\" NEAR(x y) 50%\r\n").await;
    let index = bed.rebuild("i.sqlite3");
    assert_eq!(search(&index, "password: hunter2"), ["alice"]);
    assert_eq!(search(&index, "hunt"), ["alice"]);
    assert_eq!(search(&index, "\"hi\""), ["bob"]);
    assert_eq!(search(&index, "NEAR(x"), ["bob"]);
    assert_eq!(search(&index, "0%"), ["bob"]);
    assert_eq!(search(&index, "%"), ["bob"]);
    // Short text is a substring too: the quote is in bob's output.
    assert_eq!(search(&index, "\""), ["bob"]);
    // FTS5 syntax is only text: no error, no other meaning.
    for odd in [
        "hunter2\" OR \"hi",
        "NEAR(h",
        "hunt*",
        "text:hunter2",
        "a\"b",
        "-",
        "*",
        "NOT",
        "AND",
        "^hunter",
    ] {
        let found = search(&index, odd);
        assert!(found.is_empty(), "{odd:?} found {found:?}");
    }
    assert!(search(&index, "hunter3").is_empty());
}

#[tokio::test]
async fn pages_newest_first() {
    let bed = Bed::new();
    for i in 0..(PAGE + 5) {
        bed.unrecorded(&format!("admin{i:03}")).await;
    }
    let index = bed.rebuild("i.sqlite3");
    let first = all(&index, Query::default());
    assert_eq!(first.rows.len(), PAGE);
    assert!(first.more);
    assert_eq!(first.rows[0].meta.admin, format!("admin{:03}", PAGE + 4));
    let second = all(
        &index,
        Query {
            page: 1,
            ..Query::default()
        },
    );
    assert_eq!(second.rows.len(), 5);
    assert!(!second.more);
    assert_eq!(second.rows[4].meta.admin, "admin000");
    // A filter narrows before the page is cut.
    let one = all(
        &index,
        Query {
            admin: "admin003".into(),
            ..Query::default()
        },
    );
    assert_eq!(one.rows.len(), 1);
    assert!(!one.more);
}

#[tokio::test]
async fn recording_changed_after_indexing_is_a_problem() {
    let bed = Bed::new();
    let id = bed.recorded("alice", "ls\r\n").await;
    let index = bed.index("i.sqlite3");
    index.update(STEP).unwrap();
    let other = bed.index("other.sqlite3");
    other.update(STEP).unwrap();
    let ok = Query {
        integrity: "ok".into(),
        ..Query::default()
    };
    assert_eq!(all(&index, ok.clone()).rows.len(), 1, "positive control");
    // Same length, mtime put back: the change time still tells.
    let path = bed.store.cast_path(&id);
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let text = std::fs::read_to_string(&path).unwrap().replace("ls", "rm");
    std::fs::write(&path, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let page = all(&index, Query::default());
    assert!(!page.rows[0].ok, "{}", page.rows[0].integrity);
    assert!(
        page.rows[0].integrity.starts_with("modified"),
        "{}",
        page.rows[0].integrity
    );
    assert!(all(&index, ok).rows.is_empty());
    // The sweep finds it too, without a page showing it.
    assert!(other.dump().unwrap()[0].contains("|true|sealed"));
    assert_eq!(other.sweep().unwrap(), 1);
    assert!(other.dump().unwrap()[0].contains("|false|modified"));
    assert_eq!(other.sweep().unwrap(), 0, "verified once, not again");
}

#[tokio::test]
async fn chain_changed_after_indexing_shows_the_problem() {
    let bed = Bed::new();
    bed.recorded("alice", "ls\r\n").await;
    let index = bed.index("i.sqlite3");
    index.update(STEP).unwrap();
    assert!(all(&index, Query::default()).rows[0].ok, "positive control");
    // The last entry (alice's end) is rewritten: its signature no longer holds.
    let path = crate::audit::segments(bed.chain.path())
        .unwrap()
        .into_iter()
        .rev()
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let last = lines.pop().unwrap();
    assert!(last.contains("kind end"), "{last}");
    lines.push(last.replace("kind end", "kind checkpoint"));
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    while index.update(STEP).unwrap().more {}
    let page = all(&index, Query::default());
    assert!(
        page.problems
            .iter()
            .any(|p| p.contains("no longer in the audit chain")),
        "{:?}",
        page.problems
    );
    assert!(
        page.problems
            .iter()
            .any(|p| p.contains("changed or forged")),
        "{:?}",
        page.problems
    );
    assert!(!page.rows[0].ok, "{}", page.rows[0].integrity);
}

#[test]
fn an_index_of_another_version_or_no_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.sqlite3");
    std::fs::write(
        &path,
        b"not a database, but long enough to look like a header........",
    )
    .unwrap();
    let chain = test_chain(dir.path());
    let store = RecordingStore::new(dir.path().to_owned());
    let index = Index::open(&path, chain.path(), store.clone(), chain.verifier().clone()).unwrap();
    assert!(index.update(STEP).is_ok());
    drop(index);
    let db = Connection::open(&path).unwrap();
    db.pragma_update(None, "user_version", 99).unwrap();
    drop(db);
    let index = Index::open(&path, chain.path(), store, chain.verifier().clone()).unwrap();
    assert!(index.update(STEP).is_ok());
    let db = Connection::open(&path).unwrap();
    let v: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, schema::VERSION);
}

/// Attack: the evidence bundle ships the session's entries from the index as signed notes. The
/// index must give back the notes as they were signed (not blanks), and a row of the index file
/// changed by hand (root editing the index to match a changed recording) must not be taken.
#[tokio::test]
async fn entries_come_back_as_signed_notes_and_a_forged_row_is_not_taken() {
    let bed = Bed::new();
    let id = bed.recorded("alice", "ls\r\n").await;
    let index = bed.index("i.sqlite3");
    while index.update(STEP).unwrap().more {}
    let report = index.report(&id).unwrap();
    let notes = report.notes(&id);
    assert!(notes.len() >= 2, "start and end: {}", notes.len());
    for (e, note) in &notes {
        let opened = bed.chain.verifier().open(note.as_bytes()).unwrap();
        assert_eq!(crate::audit::parse_entry(&opened).unwrap().seq, e.seq);
    }
    // Root writes the index: every entry of the session now claims another session's note, or
    // a note changed by a byte.
    let db = Connection::open(bed.root.join("i.sqlite3")).unwrap();
    let other = bed.recorded("bob", "id\r\n").await;
    while index.update(STEP).unwrap().more {}
    let bobs: Vec<String> = db
        .prepare("SELECT note FROM entries WHERE session = ?1 ORDER BY seq")
        .unwrap()
        .query_map([other.as_str()], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let seqs: Vec<i64> = db
        .prepare("SELECT seq FROM entries WHERE session = ?1 ORDER BY seq")
        .unwrap()
        .query_map([id.as_str()], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    db.execute(
        "UPDATE entries SET note = ?1 WHERE seq = ?2",
        params![bobs[0], seqs[0]],
    )
    .unwrap();
    db.execute(
        "UPDATE entries SET note = replace(note, 'kind end', 'kind chk') WHERE seq = ?1",
        params![seqs[seqs.len() - 1]],
    )
    .unwrap();
    assert!(index.report(&id).unwrap().notes(&id).is_empty());
}

/// Attack: root appends lines that are not entries to the chain (more than a step of them).
/// The index must not read the same lines again for ever (a core spinning, `more` never false);
/// it says where it stopped.
#[tokio::test]
async fn lines_that_never_verify_do_not_keep_the_index_reading_for_ever() {
    let bed = Bed::new();
    bed.recorded("alice", "ls\r\n").await;
    let index = bed.index("i.sqlite3");
    while index.update(STEP).unwrap().more {}
    assert!(
        all(&index, Query::default()).problems.is_empty(),
        "positive control"
    );
    let mut f = std::fs::File::options()
        .append(true)
        .open(bed.chain.path())
        .unwrap();
    for _ in 0..50 {
        std::io::Write::write_all(&mut f, b"{\"note\":\"garbage\"}\n").unwrap();
    }
    drop(f);
    let mut reads = 0;
    while index.update(10).unwrap().more {
        reads += 1;
        assert!(reads < 20, "the index reads the same lines again and again");
    }
    let problems = all(&index, Query::default()).problems;
    assert!(
        problems.iter().any(|p| p.contains("reads no further")),
        "{problems:?}"
    );
}

/// Attack (privacy): the index holds terminal output. Its files (the database, the WAL and the
/// shared memory beside it) are for their owner only, also where the directory is open to
/// others (`stapsteen index rebuild --out /tmp/...`) or the umask is the usual 022.
#[tokio::test]
async fn the_index_files_are_for_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let bed = Bed::new();
    bed.recorded("alice", "Password: hunter2\r\n").await;
    let open_dir = bed.root.join("shared");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = open_dir.join("i.sqlite3");
    let index = Index::rebuild(
        &path,
        bed.chain.path(),
        bed.store.clone(),
        bed.chain.verifier().clone(),
    )
    .unwrap();
    assert_eq!(search(&index, "hunter2"), ["alice"], "positive control");
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{p:?} is {mode:o}");
    }
}

/// Attack (privacy, AVG): a recording deleted under retention takes its output out of the index
/// file too, not only out of the search: SQLite keeps a deleted row's bytes in free space (and
/// FTS5 its postings) until they happen to be reused.
#[tokio::test]
async fn a_deleted_recording_leaves_no_text_in_the_index_file() {
    let bed = Bed::new();
    let secret = "dossier Jansen-Q7X4-ZZ9";
    let id = bed.recorded("alice", &format!("{secret}\r\n")).await;
    bed.recorded("bob", "ls\r\n").await;
    let index = bed.index("i.sqlite3");
    while index.update(STEP).unwrap().more {}
    assert_eq!(search(&index, "Q7X4"), ["alice"], "positive control");
    for p in [
        bed.store.cast_path(&id),
        bed.store.index_path(&id),
        bed.store.meta_path(&id),
    ] {
        std::fs::remove_file(p).unwrap();
    }
    assert_eq!(index.sweep().unwrap(), 1);
    assert!(search(&index, "Q7X4").is_empty());
    let mut bytes = Vec::new();
    for suffix in ["", "-wal"] {
        let mut p = bed.root.join("i.sqlite3").into_os_string();
        p.push(suffix);
        bytes.extend(std::fs::read(&p).unwrap_or_default());
    }
    let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
    assert!(
        !found,
        "the deleted recording's text is still in the index file"
    );
}

/// Attack (hiding activity): an admin prints more than the index keeps of a session's text
/// (`head -c 9M /dev/zero | tr '\0' x`) and then does what they want unseen; a search must
/// still find what came after, as it did before the index (streamed from the recording).
#[tokio::test]
async fn output_past_what_the_index_keeps_is_still_found() {
    let bed = Bed::new();
    let junk = "x".repeat(sessions::MAX_TEXT + 1);
    bed.recorded("alice", &format!("{junk}\r\nrm -rf /data/BIG-42\r\n"))
        .await;
    bed.recorded("bob", "nothing to see\r\n").await;
    let index = bed.index("i.sqlite3");
    while index.update(STEP).unwrap().more {}
    assert_eq!(search(&index, "xxxx"), ["alice"], "positive control");
    assert_eq!(search(&index, "big-42"), ["alice"]);
    assert_eq!(search(&index, "BIG-42"), ["alice"]);
    assert_eq!(search(&index, "42"), ["alice"], "short needle");
    assert!(search(&index, "BIG-43").is_empty());
    assert_eq!(search(&index, "nothing"), ["bob"]);
}

/// Attack (denial of service by a reviewer): a search that takes long (a short needle over all
/// text, or a large recording streamed) must not hold up every other reviewer's pages. The
/// search is made to hang on a recording that is a FIFO nobody writes yet.
#[tokio::test]
async fn a_slow_search_does_not_hold_up_other_pages() {
    let bed = Bed::new();
    let slow = bed.recorded("alice", "ls\r\n").await;
    let other = bed.recorded("bob", "id\r\n").await;
    let index = Arc::new(bed.index("i.sqlite3"));
    while index.update(STEP).unwrap().more {}
    // Alice's row is searched in her recording, which now never comes.
    let db = Connection::open(bed.root.join("i.sqlite3")).unwrap();
    db.execute(
        "UPDATE sessions SET searched = 0 WHERE id = ?1",
        [slow.as_str()],
    )
    .unwrap();
    drop(db);
    let cast = fifo_for_recording(&bed, &slow);
    let searching = std::thread::spawn({
        let index = index.clone();
        move || search(&index, "nothing")
    });
    // The search is in the FIFO (its open waits for a writer) before the other page is asked.
    let in_fifo = || {
        std::fs::read_dir("/proc/self/task").unwrap().any(|t| {
            std::fs::read_to_string(t.unwrap().path().join("wchan"))
                .is_ok_and(|w| w.contains("wait_for_partner"))
        })
    };
    let started = std::time::Instant::now();
    while !in_fifo() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the search never reached the recording"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn({
        let (index, other) = (index.clone(), other.clone());
        move || {
            let _ = tx.send(index.report(&other).map(|r| r.notes(&other).len()));
        }
    });
    let answered = rx.recv_timeout(Duration::from_secs(5));
    // Let the search finish either way: a writer opens the FIFO and closes it.
    drop(std::fs::File::options().write(true).open(&cast).unwrap());
    assert!(searching.join().unwrap().is_empty());
    let notes = answered.expect("the session page waited for another reviewer's search");
    assert!(notes.unwrap() >= 2);
}

/// A search's page is the same whichever plan builds it: from its matches (few) or by walking
/// the sessions newest first (many); for text in the index and text read from a recording.
#[tokio::test]
async fn both_search_plans_give_the_same_rows() {
    let bed = Bed::new();
    for i in 0..(PAGE + 3) {
        bed.recorded(&format!("admin{i:03}"), &format!("pacs restart {i}\r\n"))
            .await;
    }
    let streamed = bed.recorded("zed", "pacs restart by hand\r\n").await;
    let index = bed.index("i.sqlite3");
    while index.update(STEP).unwrap().more {}
    only_in_recording(&bed, &streamed);
    let rows = |text: &str, page: usize, few: usize| {
        let q = Query {
            q: text.into(),
            page,
            ..Query::default()
        };
        let got = index.page_planned(&q, &[], few).unwrap();
        let admins: Vec<String> = got.rows.into_iter().map(|r| r.meta.admin).collect();
        (admins, got.more)
    };
    let walk = 0;
    let matches = usize::MAX;
    for (text, page, first, len, more) in [
        ("pacs restart", 0, "zed", PAGE, true),
        ("pacs restart", 1, "admin003", 4, false),
        ("restart 7", 0, "admin007", 1, false),
        ("BY HAND", 0, "zed", 1, false),
    ] {
        let (admins, next) = rows(text, page, matches);
        assert_eq!(
            (admins.first().map(String::as_str), admins.len(), next),
            (Some(first), len, more),
            "{text:?} page {page}: {admins:?}"
        );
        assert_eq!(
            rows(text, page, walk),
            (admins, next),
            "{text:?} page {page}"
        );
    }
    assert_eq!(rows("restart 99", 0, matches), (vec![], false));
    assert_eq!(rows("restart 99", 0, walk), (vec![], false));
}

/// Attack (denial of service by a reviewer): a search reads a recording only for a row it
/// reaches before its page is full, whichever plan builds the page; before, with few matches,
/// every recording searched as a stream was read for every page. The oldest session's
/// recording is a FIFO: reading it waits for a writer.
#[tokio::test]
async fn a_search_reads_no_recording_past_its_page() {
    let bed = Bed::new();
    let old = bed.recorded("old", "pacs restart old\r\n").await;
    for i in 0..=PAGE {
        bed.recorded(&format!("admin{i:03}"), &format!("pacs restart {i}\r\n"))
            .await;
    }
    let index = Arc::new(bed.index("i.sqlite3"));
    while index.update(STEP).unwrap().more {}
    only_in_recording(&bed, &old);
    let cast = fifo_for_recording(&bed, &old);
    let search = |text: &str, page: usize, few: usize| {
        let (tx, rx) = std::sync::mpsc::channel();
        let index = index.clone();
        let text = text.to_owned();
        std::thread::spawn(move || {
            let q = Query {
                q: text,
                page,
                ..Query::default()
            };
            let _ = tx.send(index.page_planned(&q, &[], few).map(|p| p.rows.len()));
        });
        rx
    };
    // Opening the FIFO to write waits until the search opens it to read.
    let writer = || {
        let (tx, rx) = std::sync::mpsc::channel();
        let cast = cast.clone();
        std::thread::spawn(move || {
            let _ = tx.send(std::fs::File::options().write(true).open(cast).map(drop));
        });
        rx
    };
    for (text, few, plan) in [
        ("pacs restart", usize::MAX, "from the matches"),
        ("pacs restart", 0, "walked"),
        ("pa", usize::MAX, "too short for the full-text index"),
    ] {
        let answer = search(text, 0, few).recv_timeout(Duration::from_secs(10));
        if answer.is_err() {
            writer().recv().unwrap().unwrap();
            panic!("page 1, {plan}: read the recording of a row past the page");
        }
        assert_eq!(answer.unwrap().unwrap(), PAGE, "{plan}");
        // Positive control: the next page reaches the row and reads its recording.
        let answer = search(text, 1, few);
        let opened = writer().recv_timeout(Duration::from_secs(10));
        assert!(
            matches!(opened, Ok(Ok(()))),
            "page 2, {plan}: never read the recording"
        );
        assert_eq!(
            answer
                .recv_timeout(Duration::from_secs(10))
                .unwrap()
                .unwrap(),
            1,
            "{plan}"
        );
    }
}

/// With sessions running (the live list), a search with or without a status filter gives the
/// same rows under both plans (the live ids were parameters the few-matches SQL did not name).
#[tokio::test]
async fn a_search_beside_live_sessions_gives_the_same_rows_in_both_plans() {
    let bed = Bed::new();
    bed.recorded("alice", "$ echo FINDME-$((6*7))\r\nFINDME-42\r\n")
        .await;
    let live = bed.recorded("bob", "FINDME-42 too\r\n").await;
    bed.recorded("carol", "nothing\r\n").await;
    let index = bed.index("i.sqlite3");
    while index.update(STEP).unwrap().more {}
    let live = [live.as_str().to_owned()];
    for (status, want) in [
        ("", &["bob", "alice"][..]),
        ("live", &["bob"]),
        ("success", &["alice"]),
        ("failure", &[]),
    ] {
        for few in [0, usize::MAX] {
            let q = Query {
                q: "FINDME-42".into(),
                status: status.into(),
                ..Query::default()
            };
            let got: Vec<String> = index
                .page_planned(&q, &live, few)
                .unwrap()
                .rows
                .into_iter()
                .map(|r| r.meta.admin)
                .collect();
            assert_eq!(got, want, "status {status:?}, few {few}");
        }
    }
}

/// Every status and search kind, with and without live sessions, under sets of the other
/// filters (each set numbers the SQL parameters differently), on pages 0, 1 and past any end:
/// both plans give the same rows and the same "more" (attack review: a parameter the few-
/// matches SQL did not name made SQLite refuse it).
#[tokio::test]
async fn both_plans_agree_under_every_filter() {
    let bed = Bed::new();
    let mut ids = Vec::new();
    for i in 0..6 {
        let admin = format!("adm{}", i % 2);
        ids.push(bed.recorded(&admin, &format!("pacs restart {i}\r\n")).await);
    }
    ids.push(bed.unrecorded("adm1").await);
    let index = bed.index("i.sqlite3");
    while index.update(STEP).unwrap().more {}
    only_in_recording(&bed, &ids[1]);
    let lives = [
        vec![],
        vec![ids[2].to_string()],
        vec![ids[1].to_string(), ids[3].to_string()],
    ];
    let now = jiff::Timestamp::now().as_microsecond();
    let sets = [
        Query::default(),
        Query {
            admin: "adm1".into(),
            ..Query::default()
        },
        Query {
            admin: "adm".into(),
            target: "pacs".into(),
            from: Some(0),
            to: Some(now + 10_000_000),
            integrity: "ok".into(),
            ..Query::default()
        },
        Query {
            integrity: "problem".into(),
            ..Query::default()
        },
    ];
    let mut asked = 0;
    for set in &sets {
        for status in ["", "live", "success", "failure", "ended"] {
            for needle in ["", "pa", "pacs restart", "restart 1", "zzz"] {
                for live in &lives {
                    for page in [0, 1, usize::MAX] {
                        let q = Query {
                            status: status.into(),
                            q: needle.into(),
                            page,
                            now,
                            ..set.clone()
                        };
                        let [walk, few] = [0, usize::MAX].map(|few| {
                            let p = index.page_planned(&q, live, few).unwrap();
                            let ids: Vec<String> =
                                p.rows.iter().map(|r| r.meta.id.to_string()).collect();
                            (ids, p.more)
                        });
                        assert_eq!(walk, few, "{q:?}, live {live:?}");
                        asked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(asked, 4 * 5 * 5 * 3 * 3);
}
