//! The audit chain: append-only files of signed entries (one JSON line `{"note": "..."}` per
//! entry), each naming the hash of the one before it.
//!
//! Segments: entries go to `audit/chain.jsonl`; once it holds `segment_bytes`, it is closed by
//! renaming it to `audit/chain-<seq of its first entry, 12 digits>.jsonl` and a new one is begun.
//! The chain runs on across segments (numbers and links), so the first entry of a segment links
//! to the last of the one before; a closed segment is never written again.
//!
//! One writer thread owns the file. Callers hand it drafts through a channel and get an [`Ack`]
//! back; the writer takes every draft waiting, signs them in order, writes them with one write
//! and one fsync (group commit), and only then acknowledges them, in sequence order. So the I/O
//! never runs on an async worker, and 200 sessions checkpointing at once cost a few fsyncs, not
//! 200.
//!
//! Invariants: entries are numbered without gaps; an entry is on disk (fsync) before its
//! acknowledgement; the order of entries is the order of acknowledgement; a failed write is cut
//! off again, so the file never holds half an entry, and every entry of that group is refused;
//! every entry also goes to journald as a CHECKPOINT event, and wakes the off-site uploader. A
//! storage failure anywhere (chain or recording) is reported here: with
//! `on_failure = "end-sessions"` live sessions are ended and new ones refused until storage works
//! again.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::oneshot;

use super::note::{Draft, Kind, NoteError, NoteSigner, NoteVerifier, note_hash, parse, render};
use super::{Code, Event};
use crate::clock::Clock;
use crate::config::OnFailure;
use crate::sync::lock;

/// Most entries written with one fsync; bounds the memory of one group.
const MAX_GROUP: usize = 512;

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
    #[error("audit chain: the writer has stopped")]
    Stopped,
}

/// One stored line.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Line {
    pub note: String,
}

type OnStorageFailure = Box<dyn Fn(&str) + Send + Sync>;

/// What the callers and the writer thread share.
struct Shared {
    path: PathBuf,
    on_failure: OnFailure,
    failed: AtomicBool,
    /// Called with the reason when storage fails and sessions must end.
    end_sessions: Mutex<Option<OnStorageFailure>>,
    /// Woken after every group written (the off-site uploader waits on it).
    appended: tokio::sync::Notify,
    /// Groups written (one write and one fsync each), for the benchmark's entries per fsync.
    groups: AtomicU64,
}

impl Shared {
    fn storage_failed(&self, reason: &str) {
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
}

struct Request {
    draft: Draft,
    ack: oneshot::Sender<Result<u64, ChainError>>,
}

/// The acknowledgement of one append: its sequence number once it is on disk.
#[must_use = "an append is only known to be stored once its acknowledgement arrives"]
pub struct Ack(oneshot::Receiver<Result<u64, ChainError>>);

impl Ack {
    fn failed(e: ChainError) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Err(e));
        Self(rx)
    }

    pub async fn wait(self) -> Result<u64, ChainError> {
        self.0.await.unwrap_or(Err(ChainError::Stopped))
    }

    /// Blocks the calling thread; for threads that are not async workers (tokio refuses it
    /// there), such as `spawn_blocking` jobs and the command line.
    pub fn wait_blocking(self) -> Result<u64, ChainError> {
        self.0.blocking_recv().unwrap_or(Err(ChainError::Stopped))
    }
}

pub struct AuditChain {
    verifier: NoteVerifier,
    shared: Arc<Shared>,
    /// To the writer thread; it ends when this is dropped.
    tx: Mutex<mpsc::Sender<Request>>,
}

impl AuditChain {
    /// Opens (or creates) the chain at `path`, checks that its last entry verifies with this
    /// key, cuts off a torn last line left by a crash, appends an `open` entry, and starts the
    /// writer thread.
    pub fn open(
        path: &Path,
        signer: NoteSigner,
        clock: Arc<dyn Clock>,
        on_failure: OnFailure,
    ) -> Result<Self, ChainError> {
        Self::open_segmented(path, signer, clock, on_failure, DEFAULT_SEGMENT_BYTES)
    }

    /// [`Self::open`], closing the live segment once it holds `segment_bytes`.
    pub fn open_segmented(
        path: &Path,
        signer: NoteSigner,
        clock: Arc<dyn Clock>,
        on_failure: OnFailure,
        segment_bytes: u64,
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
        let (len, mut last, torn) = last_line(&mut file).map_err(io)?;
        if torn > 0 {
            // A crash during a write leaves an unterminated line, never a whole entry.
            file.set_len(len).map_err(io)?;
        }
        if last.is_none() {
            // A new live segment (or a crash just after closing one): the chain goes on from
            // the last closed segment.
            if let Some(closed) = segments(path).map_err(io)?.iter().rev().nth(1) {
                last = last_line(&mut File::open(closed).map_err(io)?)
                    .map_err(io)?
                    .1;
            }
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
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            on_failure,
            failed: AtomicBool::new(false),
            end_sessions: Mutex::new(None),
            appended: tokio::sync::Notify::new(),
            groups: AtomicU64::new(0),
        });
        let verifier = signer.verifier().clone();
        let first_seq = match first_line(path).map_err(io)? {
            Some(line) => seq_of(&line).unwrap_or(next_seq),
            None => next_seq,
        };
        let mut writer = Writer {
            shared: shared.clone(),
            signer,
            clock,
            file,
            len,
            next_seq,
            prev,
            first_seq,
            segment_bytes: segment_bytes.max(1),
        };
        let mut open = Draft::new(Kind::Open).field("pid", std::process::id());
        if torn > 0 {
            open = open.field("reason", format!("cut {torn} bytes of a torn last line"));
        }
        // Written here, before the thread exists, so a chain that cannot be written is not
        // opened.
        let (ack, mut opened) = oneshot::channel();
        writer.commit(vec![Request { draft: open, ack }]);
        opened.try_recv().unwrap_or(Err(ChainError::Stopped))?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("audit-chain".into())
            .spawn(move || writer.run(&rx))
            .map_err(io)?;
        Ok(Self {
            verifier,
            shared,
            tx: Mutex::new(tx),
        })
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    pub fn verifier(&self) -> &NoteVerifier {
        &self.verifier
    }

    /// Woken after entries are written (the off-site uploader waits on it).
    pub fn appended(&self) -> &tokio::sync::Notify {
        &self.shared.appended
    }

    /// Groups written so far (each one write and one fsync).
    pub fn groups(&self) -> u64 {
        self.shared.groups.load(Ordering::Relaxed)
    }

    /// What to call to end live sessions when storage fails.
    pub fn on_storage_failure(&self, f: OnStorageFailure) {
        *lock(&self.shared.end_sessions) = Some(f);
    }

    /// Hands an entry to the writer without waiting; the [`Ack`] says when it is stored.
    pub fn submit(&self, draft: Draft) -> Ack {
        let (ack, rx) = oneshot::channel();
        match lock(&self.tx).send(Request { draft, ack }) {
            Ok(()) => Ack(rx),
            Err(_) => Ack::failed(ChainError::Stopped),
        }
    }

    /// Signs and appends an entry; returns its sequence number once it is on disk.
    pub async fn append(&self, draft: Draft) -> Result<u64, ChainError> {
        self.submit(draft).wait().await
    }

    /// [`Self::append`] for threads that are not async workers.
    pub fn append_blocking(&self, draft: Draft) -> Result<u64, ChainError> {
        self.submit(draft).wait_blocking()
    }

    /// Reports a storage failure: an alert always; with `end-sessions`, live sessions end.
    pub fn storage_failed(&self, reason: &str) {
        self.shared.storage_failed(reason);
    }

    /// Whether a session may start or go on when its recording or chain entry failed.
    pub fn fail_closed(&self) -> bool {
        self.shared.on_failure == OnFailure::EndSessions
    }
}

/// The writer thread's state: the file and where the chain stands.
struct Writer {
    shared: Arc<Shared>,
    signer: NoteSigner,
    clock: Arc<dyn Clock>,
    file: File,
    len: u64,
    next_seq: u64,
    prev: [u8; 32],
    /// Seq of the live segment's first entry: the name it gets when it is closed.
    first_seq: u64,
    segment_bytes: u64,
}

impl Writer {
    fn run(mut self, rx: &mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP
                && let Ok(r) = rx.try_recv()
            {
                group.push(r);
            }
            self.commit(group);
        }
    }

    /// Signs `group` in order, writes it with one write and one fsync, then acknowledges each
    /// request: all stored, or (the write failed and was cut off) none.
    fn commit(&mut self, group: Vec<Request>) {
        let mut seq = self.next_seq;
        let mut prev = self.prev;
        let mut bytes = Vec::new();
        let mut signed = Vec::with_capacity(group.len());
        for r in group {
            let text = render(&r.draft, seq, &prev, self.clock.now());
            let note = match self.signer.sign(&text) {
                Ok(n) => String::from_utf8_lossy(&n).into_owned(),
                Err(e) => {
                    let _ = r.ack.send(Err(e.into()));
                    continue;
                }
            };
            let line = match serde_json::to_vec(&Line { note: note.clone() }) {
                Ok(l) => l,
                Err(e) => {
                    let _ = r.ack.send(Err(NoteError::Malformed(e.to_string()).into()));
                    continue;
                }
            };
            bytes.extend_from_slice(&line);
            bytes.push(b'\n');
            prev = note_hash(note.as_bytes());
            signed.push((r, seq, note));
            seq += 1;
        }
        if signed.is_empty() {
            return;
        }
        self.shared.groups.fetch_add(1, Ordering::Relaxed);
        let written = self
            .file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(source) = written {
            let _ = self.file.set_len(self.len);
            let reason = format!("audit chain cannot be written: {source}");
            self.shared.storage_failed(&reason);
            for (r, _, _) in signed {
                let _ = r.ack.send(Err(ChainError::Io {
                    path: self.shared.path.clone(),
                    source: std::io::Error::new(source.kind(), source.to_string()),
                }));
            }
            return;
        }
        self.len += bytes.len() as u64;
        self.next_seq = seq;
        self.prev = prev;
        // Storage works again: new sessions may start.
        self.shared.failed.store(false, Ordering::SeqCst);
        for (r, seq, note) in signed {
            let mut event = Event::new(Code::Checkpoint)
                .detail("seq", seq)
                .detail("kind", r.draft.kind.as_str());
            if let Some(s) = &r.draft.session {
                event = event.session(s);
            }
            event.detail("note", note).emit();
            // A caller that stopped waiting still has its entry stored.
            let _ = r.ack.send(Ok(seq));
        }
        self.shared.appended.notify_waiters();
        if self.len >= self.segment_bytes
            && let Err(e) = self.close_segment()
        {
            // Entries go on into the live segment; it is closed at the next try.
            self.shared
                .storage_failed(&format!("audit chain segment cannot be closed: {e}"));
        }
    }

    /// Renames the live segment after its first entry and begins a new one. Every step is
    /// durable before the next entry is written; a crash between them leaves either the old
    /// live segment or a closed one and an empty (or no) live one, which [`AuditChain::open`]
    /// continues from.
    fn close_segment(&mut self) -> std::io::Result<()> {
        let live = &self.shared.path;
        let fresh = live.with_extension("jsonl.new");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&fresh)?;
        std::fs::rename(live, segment_path(live, self.first_seq))?;
        std::fs::rename(&fresh, live)?;
        if let Some(dir) = live.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.file = file;
        self.len = 0;
        self.first_seq = self.next_seq;
        Ok(())
    }
}

/// Default size at which the live segment is closed.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// The name of the closed segment whose first entry is `first_seq`, beside the live `path`.
pub fn segment_path(path: &Path, first_seq: u64) -> PathBuf {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("chain");
    path.with_file_name(format!("{stem}-{first_seq:012}.jsonl"))
}

/// The closed segments beside the live `path`, by their first seq, then the live one (whether
/// or not it exists yet).
pub fn segments(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("chain");
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut closed = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let name = entry?.file_name();
                let first = name
                    .to_str()
                    .and_then(|n| n.strip_prefix(stem))
                    .and_then(|n| n.strip_prefix('-'))
                    .and_then(|n| n.strip_suffix(".jsonl"))
                    .filter(|n| n.len() == 12)
                    .and_then(|n| n.parse::<u64>().ok());
                if let Some(first) = first {
                    closed.push((first, dir.join(name)));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    closed.sort();
    let mut out: Vec<PathBuf> = closed.into_iter().map(|(_, p)| p).collect();
    out.push(path.to_owned());
    Ok(out)
}

/// The seq a stored line claims (unverified: for finding places, not for trusting them).
pub fn seq_of(line: &str) -> Option<u64> {
    let stored: Line = serde_json::from_str(line).ok()?;
    stored
        .note
        .lines()
        .nth(1)?
        .strip_prefix("seq ")?
        .parse()
        .ok()
}

/// The first complete line of a file, if any.
pub fn first_line(path: &Path) -> std::io::Result<Option<String>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = Vec::new();
    BufReader::new(file).read_until(b'\n', &mut buf)?;
    Ok((buf.last() == Some(&b'\n')).then(|| String::from_utf8_lossy(&buf).trim_end().to_owned()))
}

/// A chain in `dir` with a fresh key, for unit tests.
#[cfg(test)]
pub fn test_chain(dir: &Path) -> Arc<AuditChain> {
    let key = crate::secrets::generate_key("stapsteen-test");
    let signer = NoteSigner::new(&key).unwrap();
    Arc::new(
        AuditChain::open(
            &dir.join("chain.jsonl"),
            signer,
            Arc::new(crate::clock::SystemClock),
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

/// Every line of every segment of the chain whose live segment is `path`, in order.
pub fn read_lines(path: &Path) -> std::io::Result<Vec<String>> {
    Ok(read_segments(path, 0)?
        .into_iter()
        .flat_map(|(_, lines)| lines)
        .collect())
}

/// The segments, each with its lines, leaving out closed ones that hold only entries before
/// `from` (their successor begins at or before it).
pub fn read_segments(path: &Path, from: u64) -> std::io::Result<Vec<(PathBuf, Vec<String>)>> {
    let all = segments(path)?;
    let firsts: Vec<Option<u64>> = all
        .iter()
        .map(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.rsplit_once('-'))
                .and_then(|(_, n)| n.parse().ok())
        })
        .collect();
    let mut out = Vec::new();
    for (i, p) in all.iter().enumerate() {
        let next_first = firsts.get(i + 1).copied().flatten();
        if next_first.is_some_and(|n| n <= from) {
            continue;
        }
        let text = match std::fs::read(p) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let lines = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        out.push((p.clone(), lines));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::verify_chain;

    fn writer(file: File, shared: &Arc<Shared>) -> Writer {
        Writer {
            shared: shared.clone(),
            signer: NoteSigner::new(&crate::secrets::generate_key("t")).unwrap(),
            clock: Arc::new(crate::clock::SystemClock),
            file,
            len: 0,
            next_seq: 0,
            prev: [0; 32],
            first_seq: 0,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }

    fn shared(path: &Path) -> Arc<Shared> {
        Arc::new(Shared {
            path: path.to_owned(),
            on_failure: OnFailure::AlertAndContinue,
            failed: AtomicBool::new(false),
            end_sessions: Mutex::new(None),
            appended: tokio::sync::Notify::new(),
            groups: AtomicU64::new(0),
        })
    }

    fn requests(n: usize) -> (Vec<Request>, Vec<Ack>) {
        (0..n)
            .map(|_| {
                let (ack, rx) = oneshot::channel();
                (
                    Request {
                        draft: Draft::new(Kind::Open),
                        ack,
                    },
                    Ack(rx),
                )
            })
            .unzip()
    }

    #[test]
    fn a_group_is_one_write_acknowledged_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.jsonl");
        let sh = shared(&path);
        let mut w = writer(File::create(&path).unwrap(), &sh);
        let (reqs, acks) = requests(5);
        w.commit(reqs);
        let (reqs, more) = requests(3);
        w.commit(reqs);
        assert_eq!(sh.groups.load(Ordering::Relaxed), 2);
        let seqs: Vec<u64> = acks
            .into_iter()
            .chain(more)
            .map(|a| a.wait_blocking().unwrap())
            .collect();
        assert_eq!(seqs, (0..8).collect::<Vec<_>>());
        let report = verify_chain(&read_lines(&path).unwrap(), w.signer.verifier());
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.entries.len(), 8);
    }

    #[test]
    fn a_failed_group_is_refused_whole_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.jsonl");
        let sh = shared(&path);
        let mut w = writer(File::create(&path).unwrap(), &sh);
        let (reqs, acks) = requests(2);
        w.commit(reqs);
        // A file the writer cannot write to stands in for a disk that fails.
        let good = std::mem::replace(&mut w.file, File::open(&path).unwrap());
        w.len = std::fs::metadata(&path).unwrap().len();
        let (reqs, failed) = requests(4);
        w.commit(reqs);
        for a in failed {
            assert!(matches!(a.wait_blocking(), Err(ChainError::Io { .. })));
        }
        assert!(sh.failed.load(Ordering::SeqCst));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), w.len);
        // The next group takes the numbers the failed one did not get.
        w.file = good;
        let (reqs, later) = requests(1);
        w.commit(reqs);
        assert_eq!(
            later.into_iter().next().unwrap().wait_blocking().unwrap(),
            2
        );
        assert!(!sh.failed.load(Ordering::SeqCst));
        for a in acks {
            a.wait_blocking().unwrap();
        }
        let report = verify_chain(&read_lines(&path).unwrap(), w.signer.verifier());
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.entries.len(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_share_fsyncs_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let chain = test_chain(dir.path());
        let before = chain.groups();
        // Handed over all at once, as 200 sessions checkpointing in the same instant would.
        let acks: Vec<Ack> = (0..200)
            .map(|_| chain.submit(Draft::new(Kind::Open)))
            .collect();
        let mut seqs = Vec::new();
        for a in acks {
            seqs.push(a.wait().await.unwrap());
        }
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>(), "acknowledged in order");
        let groups = chain.groups() - before;
        assert!(groups < 200, "{groups} fsyncs for 200 entries");
        let report = verify_chain(&read_lines(chain.path()).unwrap(), chain.verifier());
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.entries.len(), 201);
    }

    fn segmented(dir: &Path, key: &crate::secrets::Secret<russh::keys::PrivateKey>) -> AuditChain {
        AuditChain::open_segmented(
            &dir.join("chain.jsonl"),
            NoteSigner::new(key).unwrap(),
            Arc::new(crate::clock::SystemClock),
            OnFailure::EndSessions,
            2000,
        )
        .unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        segments(&dir.join("chain.jsonl"))
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    fn problems(
        dir: &Path,
        verifier: &NoteVerifier,
        start: Option<crate::audit::Start>,
    ) -> Vec<String> {
        let segs = read_segments(&dir.join("chain.jsonl"), start.map_or(0, |s| s.seq)).unwrap();
        crate::audit::verify_segments(&segs, verifier, start)
            .problems
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn segments_chain_on_and_verify_across() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::secrets::generate_key("t");
        let chain = segmented(dir.path(), &key);
        for _ in 0..30 {
            chain.append_blocking(Draft::new(Kind::Open)).unwrap();
        }
        drop(chain);
        // Reopened: it goes on from the last segment, numbers and links.
        let chain = segmented(dir.path(), &key);
        chain.append_blocking(Draft::new(Kind::Open)).unwrap();
        let verifier = chain.verifier().clone();
        drop(chain);
        let segs = names(dir.path());
        assert!(segs.len() >= 4, "{segs:?}");
        assert_eq!(segs[0], "chain-000000000000.jsonl");
        assert_eq!(segs.last().unwrap(), "chain.jsonl");
        let all = read_lines(&dir.path().join("chain.jsonl")).unwrap();
        let report = verify_chain(&all, &verifier);
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        assert_eq!(report.entries.len(), 33);
        assert!(problems(dir.path(), &verifier, None).is_empty());

        // A changed entry in a middle segment is named by segment and line.
        let middle = dir.path().join(&segs[1]);
        let original = std::fs::read_to_string(&middle).unwrap();
        let first_seq = seq_of(original.lines().next().unwrap()).unwrap();
        std::fs::write(&middle, original.replacen("kind open", "kind opeN", 1)).unwrap();
        let p = problems(dir.path(), &verifier, None);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(&format!("{} line 1: entry changed or forged", segs[1])),
            "{p:?}"
        );

        // A deleted middle segment: the entries it held are missing.
        std::fs::remove_file(&middle).unwrap();
        let next_first = seq_of(
            std::fs::read_to_string(dir.path().join(&segs[2]))
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        let p = problems(dir.path(), &verifier, None);
        assert_eq!(
            p,
            [format!(
                "{} line 1: seq {first_seq} to {} are missing before seq {next_first} (deleted)",
                segs[2],
                next_first - 1
            )]
        );

        // From a signed checkpoint (the first entry of a later segment, as kept off-site), the
        // segments before it are not needed.
        std::fs::remove_file(dir.path().join(&segs[0])).unwrap();
        let third = std::fs::read_to_string(dir.path().join(&segs[2])).unwrap();
        let line: Line = serde_json::from_str(third.lines().next().unwrap()).unwrap();
        let start = crate::audit::Start::from_note(line.note.as_bytes(), &verifier).unwrap();
        assert_eq!(start.seq, next_first);
        assert!(problems(dir.path(), &verifier, Some(start)).is_empty());
        assert!(
            !problems(dir.path(), &verifier, None).is_empty(),
            "without it, they are missing"
        );
        // A checkpoint naming another entry under that number (a history rewritten and signed
        // again with the appliance's key) is a finding.
        let elsewhere = tempfile::tempdir().unwrap();
        let other = AuditChain::open(
            &elsewhere.path().join("chain.jsonl"),
            NoteSigner::new(&key).unwrap(),
            Arc::new(crate::clock::SystemClock),
            OnFailure::EndSessions,
        )
        .unwrap();
        while other.append_blocking(Draft::new(Kind::Open)).unwrap() < next_first {}
        let theirs = read_lines(other.path()).unwrap();
        let line: Line = serde_json::from_str(theirs.last().unwrap()).unwrap();
        let wrong = crate::audit::Start::from_note(line.note.as_bytes(), &verifier).unwrap();
        assert_eq!(wrong.seq, next_first);
        assert_eq!(
            problems(dir.path(), &verifier, Some(wrong)),
            [format!(
                "{} line 1: seq {next_first} is not the entry the signed checkpoint names (replaced)",
                segs[2]
            )]
        );
    }
}
