//! asciicast v2 writer. Output and input arrive as arbitrary byte chunks; multi-byte characters
//! split across chunks are joined, invalid UTF-8 becomes U+FFFD.

use std::borrow::Cow;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::RecordingStore;
use super::seal::{LineChain, index_entry};
use crate::audit::{AuditChain, ChainError, Draft, Kind};
use crate::ids::SessionId;
use crate::sync::lock;

/// Most bytes a recording may hold in memory while its disk lags; past it the recording fails
/// (storage too slow is a storage failure). The session waits at [`HIGH_WATER`] first.
const MAX_QUEUED: usize = 64 << 20;
/// Queued bytes past which the session holds back what it carries ([`Backlog`]) until the writer
/// has taken the queue: a sender faster than the disk is slowed, not cut off.
const HIGH_WATER: usize = 16 << 20;
/// How long a held-back session waits for the writer to take anything before the recording
/// fails (a disk that has stopped, not one that is slow).
const DRAIN_STALL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("recording {path} cannot be written: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Chain(#[from] ChainError),
    /// A failure of the background writer, seen at the next call.
    #[error("recording {path} cannot be written: {reason}")]
    Stored { path: PathBuf, reason: String },
    /// A recording limit was reached (per session, per admin per day, free space).
    #[error("{0}")]
    Quota(String),
}

impl RecordingError {
    /// The cause in a few words, for the message to the admin.
    pub fn cause(&self) -> String {
        match self {
            RecordingError::Io { source, .. } => source.to_string(),
            RecordingError::Chain(ChainError::Io { source, .. }) => {
                format!("audit chain: {source}")
            }
            RecordingError::Chain(e) => e.to_string(),
            RecordingError::Stored { reason, .. } => reason.clone(),
            RecordingError::Quota(why) => why.clone(),
        }
    }

    /// Why the session it ended has ended, for the admin and SESSION_END.
    pub fn session_ended(&self) -> String {
        format!("recording failed ({}), session ended", self.cause())
    }
}

/// When checkpoints are due.
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    pub interval: Duration,
    pub bytes: u64,
}

/// Turns a byte stream into text, holding back an incomplete trailing character.
#[derive(Default)]
struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    fn push<'a>(&mut self, data: &'a [u8]) -> Cow<'a, str> {
        // The usual case: whole characters only, borrowed (no copy of the chunk).
        if self.pending.is_empty()
            && let Ok(s) = std::str::from_utf8(data)
        {
            return Cow::Borrowed(s);
        }
        self.pending.extend_from_slice(data);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = after.get(n..).unwrap_or_default();
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        Cow::Owned(out)
    }
}

/// An entry to append once everything queued before it is on disk, and who waits for it.
type SealRequest = (
    Option<Draft>,
    Option<oneshot::Sender<Result<(), RecordingError>>>,
);

/// What the session has handed to the background writer and it has not taken yet.
#[derive(Default)]
struct Queue {
    lines: Vec<u8>,
    index: Vec<u8>,
    /// In order; `None` only syncs (a barrier for tests).
    seals: Vec<SealRequest>,
    /// A writer job is running; it takes whatever is queued until the queue is empty.
    busy: bool,
    /// The first failure; the recording takes nothing more after it.
    failed: Option<String>,
}

/// The files, owned by whichever writer job runs (one at a time).
struct Disk {
    /// Locked (exclusive) while the recording is open, so a verifier can tell live from crashed.
    file: File,
    index: File,
    /// Bytes of whole lines written.
    len: u64,
}

/// A recording's files and queue, shared by the session and its writer job.
struct Pipe {
    path: PathBuf,
    audit: Arc<AuditChain>,
    queue: Mutex<Queue>,
    disk: Mutex<Disk>,
    /// Emptied buffers (lines, index) that the next drain swaps in for the queue's; only the
    /// running writer job (one at a time) takes this lock, with the queue's held or not.
    spare: Mutex<(Vec<u8>, Vec<u8>)>,
    /// Told each time the writer takes the queue, or stops.
    drained: tokio::sync::Notify,
}

impl Pipe {
    /// Starts a writer job unless one runs or nothing waits: on the blocking pool inside a
    /// runtime, so no async worker waits on the disk; in place outside one (the command line,
    /// tests, fuzzing).
    fn kick(self: &Arc<Self>) {
        {
            let mut q = lock(&self.queue);
            if q.busy || (q.lines.is_empty() && q.seals.is_empty()) {
                return;
            }
            q.busy = true;
        }
        let me = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(move || me.drain());
            }
            Err(_) => me.drain(),
        }
    }

    /// Writes what is queued until the queue is empty: lines and index, an fsync when an entry
    /// waits, then the entries, in order.
    fn drain(&self) {
        loop {
            let (lines, index, seals) = {
                let mut q = lock(&self.queue);
                if let Some(reason) = q.failed.clone() {
                    // Nobody may wait for ever on an entry that will not be written.
                    for (_, ack) in q.seals.drain(..) {
                        if let Some(ack) = ack {
                            let _ = ack.send(Err(RecordingError::Stored {
                                path: self.path.clone(),
                                reason: reason.clone(),
                            }));
                        }
                    }
                    q.busy = false;
                    self.drained.notify_waiters();
                    return;
                }
                if q.lines.is_empty() && q.seals.is_empty() {
                    q.busy = false;
                    self.drained.notify_waiters();
                    return;
                }
                let mut spare = lock(&self.spare);
                (
                    std::mem::replace(&mut q.lines, std::mem::take(&mut spare.0)),
                    std::mem::replace(&mut q.index, std::mem::take(&mut spare.1)),
                    std::mem::take(&mut q.seals),
                )
            };
            self.drained.notify_waiters();
            // The first failure; every entry after it is refused.
            let mut failure = self
                .write(&lines, &index, !seals.is_empty())
                .err()
                .map(|e| e.cause());
            self.give_back(lines, index);
            for (draft, ack) in seals {
                let r = match (&failure, draft) {
                    (Some(reason), _) => Err(reason.clone()),
                    (None, None) => Ok(()),
                    (None, Some(d)) => self
                        .audit
                        .append_blocking(d)
                        .map(|_| ())
                        .map_err(|e| RecordingError::Chain(e).cause()),
                };
                if let Err(reason) = &r {
                    failure = Some(reason.clone());
                }
                if let Some(ack) = ack {
                    let _ = ack.send(r.map_err(|reason| RecordingError::Stored {
                        path: self.path.clone(),
                        reason,
                    }));
                }
            }
            if let Some(reason) = failure {
                let mut q = lock(&self.queue);
                q.failed = Some(reason);
                q.lines = Vec::new();
                q.index = Vec::new();
            }
        }
    }
    /// Keeps written buffers, emptied, for the next drain, whatever their size: a busy
    /// recording whose disk lags grows its queue past any fixed size, and a buffer grown
    /// afresh for every write is faulted in (the kernel zeroes each page) and copied on every
    /// regrowth. `release` frees them once the recording is idle.
    fn give_back(&self, mut lines: Vec<u8>, mut index: Vec<u8>) {
        lines.clear();
        index.clear();
        *lock(&self.spare) = (lines, index);
    }

    /// Frees the buffers of an idle recording (nothing queued), so that a session that once
    /// carried a burst does not keep its memory.
    fn release(&self) {
        let freed = {
            let mut q = lock(&self.queue);
            if !q.lines.is_empty() || !q.index.is_empty() {
                return;
            }
            let queued = (std::mem::take(&mut q.lines), std::mem::take(&mut q.index));
            (queued, std::mem::take(&mut *lock(&self.spare)))
        };
        drop(freed);
    }

    fn write(&self, lines: &[u8], index: &[u8], sync: bool) -> Result<(), RecordingError> {
        let io = |source| RecordingError::Io {
            path: self.path.clone(),
            source,
        };
        let mut d = lock(&self.disk);
        let mut done = 0;
        while done < lines.len() {
            match d.file.write(&lines[done..]) {
                Ok(0) => {
                    return Err(self.cut(
                        &mut d,
                        lines,
                        done,
                        index,
                        io(std::io::ErrorKind::WriteZero.into()),
                    ));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.cut(&mut d, lines, done, index, io(e))),
            }
        }
        d.len += lines.len() as u64;
        d.index.write_all(index).map_err(io)?;
        if sync {
            d.file.sync_data().map_err(io)?;
        }
        Ok(())
    }

    /// After a failed write of `lines` of which `done` bytes went out: keeps the whole lines
    /// (and their index entries) and cuts a torn one, so the file stays whole lines and a full
    /// disk stays full; returns `e`.
    fn cut(
        &self,
        d: &mut Disk,
        lines: &[u8],
        done: usize,
        index: &[u8],
        e: RecordingError,
    ) -> RecordingError {
        let whole = lines[..done]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let count = lines[..whole].iter().filter(|b| **b == b'\n').count();
        d.len += whole as u64;
        let len = d.len;
        let _ = d.file.set_len(len);
        let _ = d.index.write_all(
            index
                .get(..count * super::seal::INDEX_BYTES)
                .unwrap_or_default(),
        );
        e
    }
}

/// A recording whose queue is past [`HIGH_WATER`]: the session waits on it before carrying
/// more, so the channel's window (and the sender) waits for the disk.
pub struct Backlog(Arc<Pipe>);

impl Backlog {
    /// Returns once the writer has taken the queue down to half the high-water mark (in effect:
    /// has taken the queue); `Err` when the recording has failed, or fails it when the writer
    /// takes nothing for [`DRAIN_STALL`] (a batch of up to the mark written and synced in that
    /// time: a disk slower than about 270 KiB/s counts as stopped).
    pub async fn wait(self) -> Result<(), RecordingError> {
        self.wait_at_most(DRAIN_STALL).await
    }

    async fn wait_at_most(self, stall: Duration) -> Result<(), RecordingError> {
        loop {
            let drained = self.0.drained.notified();
            tokio::pin!(drained);
            // Registered before the queue is looked at, so a drain in between is not missed.
            drained.as_mut().enable();
            {
                let q = lock(&self.0.queue);
                if let Some(reason) = &q.failed {
                    return Err(RecordingError::Stored {
                        path: self.0.path.clone(),
                        reason: reason.clone(),
                    });
                }
                if q.lines.len() <= HIGH_WATER / 2 {
                    return Ok(());
                }
            }
            if tokio::time::timeout(stall, drained).await.is_err() {
                let reason = "the disk does not keep up with the recording".to_owned();
                lock(&self.0.queue).failed = Some(reason.clone());
                // Another waiter on this recording learns it now, not at its own stall time.
                self.0.drained.notify_waiters();
                return Err(RecordingError::Stored {
                    path: self.0.path.clone(),
                    reason,
                });
            }
        }
    }
}

/// Waits for an entry handed to the recording's writer.
#[must_use = "the entry is only known to be stored once this says so"]
pub struct SealAck(oneshot::Receiver<Result<(), RecordingError>>);

impl SealAck {
    pub async fn wait(self) -> Result<(), RecordingError> {
        self.0
            .await
            .unwrap_or(Err(RecordingError::Chain(ChainError::Stopped)))
    }

    /// Blocks the calling thread; not on an async worker.
    pub fn wait_blocking(self) -> Result<(), RecordingError> {
        self.0
            .blocking_recv()
            .unwrap_or(Err(RecordingError::Chain(ChainError::Stopped)))
    }
}

/// An open asciicast v2 recording, sealed line by line into the audit chain.
///
/// The session's calls only format, hash and queue lines; a writer job (on the blocking pool)
/// writes them, fsyncs, and appends the audit entries that seal them, in that order, so an entry
/// never covers lines that are not on disk. A failure of the job is returned by the next call.
pub struct Recorder {
    id: SessionId,
    pipe: Arc<Pipe>,
    started: Instant,
    output: Utf8Stream,
    input: Utf8Stream,
    /// The line being formatted; a buffer of the queue's once swapped in.
    buf: Vec<u8>,
    chain: LineChain,
    cadence: Cadence,
    /// Lines and time of the last checkpoint.
    sealed_lines: u64,
    sealed_bytes: u64,
    sealed_at: Instant,
    /// Lines at the previous tick: none since means idle.
    ticked_lines: u64,
}

impl Recorder {
    /// Creates `<id>.cast` (never overwriting) and `<id>.idx`, and writes the header.
    pub fn create(
        store: &RecordingStore,
        id: &SessionId,
        audit: Arc<AuditChain>,
        cadence: Cadence,
        size: (u32, u32),
        term: &str,
        title: &str,
    ) -> Result<Self, RecordingError> {
        let path = store.cast_path(id);
        let io = |source| RecordingError::Io {
            path: path.clone(),
            source,
        };
        let open = |p: &PathBuf| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
        };
        let mut file = open(&path).map_err(io)?;
        file.try_lock().map_err(|e| io(e.into()))?;
        let mut index = open(&store.index_path(id)).map_err(io)?;
        let header = json!({
            "version": 2,
            "width": size.0.max(1),
            "height": size.1.max(1),
            "timestamp": jiff::Timestamp::now().as_second(),
            "title": title,
            "env": {"TERM": term, "SHELL": ""},
        });
        let mut line = serde_json::to_vec(&header).map_err(|e| io(e.into()))?;
        line.push(b'\n');
        // The header is written here, before the target is dialled: a disk that cannot take
        // it refuses the session with "the recording cannot be written".
        let mut chain = LineChain::new(id);
        let line_hash = chain.push(&line);
        file.write_all(&line).map_err(io)?;
        index.write_all(index_entry(&line_hash)).map_err(io)?;
        Ok(Self {
            id: id.clone(),
            pipe: Arc::new(Pipe {
                path: path.clone(),
                audit,
                queue: Mutex::new(Queue::default()),
                disk: Mutex::new(Disk {
                    file,
                    index,
                    len: line.len() as u64,
                }),
                spare: Mutex::default(),
                drained: tokio::sync::Notify::new(),
            }),
            started: Instant::now(),
            output: Utf8Stream::default(),
            input: Utf8Stream::default(),
            buf: Vec::new(),
            chain,
            cadence,
            sealed_lines: 0,
            sealed_bytes: 0,
            sealed_at: Instant::now(),
            ticked_lines: 0,
        })
    }

    /// Writes `value` as one line and queues it with its index entry. The line is formatted
    /// and hashed before the queue's lock is taken (the writer never waits on that), then
    /// swapped in whole when the writer has taken everything before it, copied only when lines
    /// still wait.
    fn line(&mut self, value: &impl serde::Serialize) -> Result<(), RecordingError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let result = match serde_json::to_writer(&mut buf, value) {
            Ok(()) => {
                buf.push(b'\n');
                self.queue_line(&mut buf)
            }
            Err(e) => Err(RecordingError::Io {
                path: self.pipe.path.clone(),
                source: e.into(),
            }),
        };
        self.buf = buf;
        result
    }

    /// Queues the whole line in `line`; leaves an emptied buffer there to reuse.
    fn queue_line(&mut self, line: &mut Vec<u8>) -> Result<(), RecordingError> {
        let line_hash: [u8; 32] = Sha256::digest(&line[..]).into();
        {
            let mut q = lock(&self.pipe.queue);
            if let Some(reason) = &q.failed {
                return Err(RecordingError::Stored {
                    path: self.pipe.path.clone(),
                    reason: reason.clone(),
                });
            }
            if q.lines.len() + line.len() > MAX_QUEUED {
                let reason = "the disk does not keep up with the recording".to_owned();
                q.failed = Some(reason.clone());
                self.pipe.drained.notify_waiters();
                return Err(RecordingError::Stored {
                    path: self.pipe.path.clone(),
                    reason,
                });
            }
            self.chain.push_hash(line_hash, line.len() as u64);
            if q.lines.is_empty() {
                std::mem::swap(&mut q.lines, line);
            } else {
                q.lines.extend_from_slice(line);
            }
            q.index.extend_from_slice(index_entry(&line_hash));
        }
        if self.chain.bytes - self.sealed_bytes >= self.cadence.bytes {
            self.checkpoint();
        }
        self.pipe.kick();
        Ok(())
    }

    fn event(&mut self, kind: &str, data: &str) -> Result<(), RecordingError> {
        let t = (self.started.elapsed().as_micros() as f64) / 1e6;
        self.line(&(t, kind, data))
    }

    /// Some when more is queued than the disk has taken ([`HIGH_WATER`]): wait on it before
    /// carrying more.
    pub fn backlog(&self) -> Option<Backlog> {
        (lock(&self.pipe.queue).lines.len() > HIGH_WATER).then(|| Backlog(self.pipe.clone()))
    }

    /// Bytes written to the recording so far.
    pub fn bytes(&self) -> u64 {
        self.chain.bytes
    }

    pub fn output(&mut self, data: &[u8]) -> Result<(), RecordingError> {
        let text = self.output.push(data);
        if text.is_empty() {
            return Ok(());
        }
        self.event("o", &text)
    }

    pub fn input(&mut self, data: &[u8]) -> Result<(), RecordingError> {
        let text = self.input.push(data);
        if text.is_empty() {
            return Ok(());
        }
        self.event("i", &text)
    }

    pub fn resize(&mut self, cols: u32, rows: u32) -> Result<(), RecordingError> {
        self.event("r", &format!("{cols}x{rows}"))
    }

    pub fn marker(&mut self, label: &str) -> Result<(), RecordingError> {
        self.event("m", label)
    }

    /// Queues a checkpoint if lines are waiting and the interval has passed; returns an earlier
    /// failure of the writer.
    pub fn tick(&mut self) -> Result<(), RecordingError> {
        if let Some(reason) = &lock(&self.pipe.queue).failed {
            return Err(RecordingError::Stored {
                path: self.pipe.path.clone(),
                reason: reason.clone(),
            });
        }
        if self.chain.lines == self.ticked_lines {
            self.buf = Vec::new();
            self.pipe.release();
        }
        self.ticked_lines = self.chain.lines;
        if self.chain.lines > self.sealed_lines && self.sealed_at.elapsed() >= self.cadence.interval
        {
            self.checkpoint();
            self.pipe.kick();
        }
        Ok(())
    }

    /// Queues a checkpoint for what is queued so far; a failure shows at the next call.
    fn checkpoint(&mut self) {
        let draft = Draft::new(Kind::Checkpoint)
            .session(&self.id)
            .seal(self.chain.seal());
        lock(&self.pipe.queue).seals.push((Some(draft), None));
        self.sealed_lines = self.chain.lines;
        self.sealed_bytes = self.chain.bytes;
        self.sealed_at = Instant::now();
    }

    /// Appends `draft`, sealed with where the recording stands now, once every line queued
    /// so far is on disk.
    pub fn seal_with(&mut self, draft: Draft) -> SealAck {
        self.queue_seal(Some(draft.seal(self.chain.seal())))
    }

    /// Resolves once every line queued so far is on disk.
    #[cfg(test)]
    pub fn flushed(&mut self) -> SealAck {
        self.queue_seal(None)
    }

    fn queue_seal(&mut self, draft: Option<Draft>) -> SealAck {
        let (tx, rx) = oneshot::channel();
        {
            let mut q = lock(&self.pipe.queue);
            if let Some(reason) = &q.failed {
                let _ = tx.send(Err(RecordingError::Stored {
                    path: self.pipe.path.clone(),
                    reason: reason.clone(),
                }));
                return SealAck(rx);
            }
            q.seals.push((draft, Some(tx)));
        }
        self.sealed_lines = self.chain.lines;
        self.sealed_bytes = self.chain.bytes;
        self.sealed_at = Instant::now();
        self.pipe.kick();
        SealAck(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_multibyte_and_invalid() {
        let mut s = Utf8Stream::default();
        let euro = "€".as_bytes();
        assert_eq!(s.push(&euro[..1]), "");
        assert_eq!(s.push(&euro[1..]), "€");
        assert_eq!(s.push(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(s.push(b"\xe2\x82"), "");
        assert_eq!(s.push(b"x"), "\u{fffd}x");
    }

    #[test]
    fn writes_valid_asciicast() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordingStore::new(dir.path().to_owned());
        let chain = crate::audit::test_chain(dir.path());
        let id = SessionId::generate(jiff::Timestamp::UNIX_EPOCH);
        let cadence = Cadence {
            interval: Duration::from_secs(60),
            bytes: 1 << 20,
        };
        let mut r =
            Recorder::create(&store, &id, chain.clone(), cadence, (80, 24), "xterm", "t").unwrap();
        r.output(b"hello \xe2\x82").unwrap();
        r.output(b"\xac\r\n").unwrap();
        r.input(b"ls\r").unwrap();
        r.resize(100, 30).unwrap();
        assert!(Recorder::create(&store, &id, chain, cadence, (80, 24), "xterm", "t").is_err());
        let text = std::fs::read_to_string(store.cast_path(&id)).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[1][1], "o");
        assert_eq!(lines[1][2], "hello ");
        assert_eq!(lines[2][2], "€\r\n");
        assert_eq!(lines[3][1], "i");
        assert_eq!(lines[4][2], "100x30");
    }

    /// A busy recording keeps its written buffers for the next lines; an idle one (no line
    /// since the previous tick) frees them; the lines written meanwhile are all on disk.
    #[test]
    fn buffers_are_reused_while_busy_and_freed_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, store, id) = recorder(dir.path());
        let held = |r: &Recorder| {
            let q = lock(&r.pipe.queue);
            let spare = lock(&r.pipe.spare);
            r.buf.capacity() + q.lines.capacity() + spare.0.capacity()
        };
        // Larger than any fixed spare size the writer kept before.
        let chunk = vec![b'x'; 8 << 20];
        r.output(&chunk).unwrap();
        // Outside a runtime the writer drains in place: the buffer is written and kept.
        assert!(held(&r) >= 8 << 20, "the written buffer is kept for reuse");
        r.tick().unwrap();
        assert!(
            held(&r) >= 8 << 20,
            "a line since the last tick: still busy"
        );
        r.tick().unwrap();
        assert_eq!(held(&r), 0, "idle: freed");
        r.output(b"after").unwrap();
        let text = std::fs::read_to_string(store.cast_path(&id)).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1][2].as_str().map(str::len), Some(8 << 20));
        assert_eq!(lines[2][2], "after");
    }

    /// A recording in `dir` that checkpoints by time only (never by size during a test).
    fn recorder(dir: &std::path::Path) -> (Recorder, RecordingStore, SessionId) {
        let store = RecordingStore::new(dir.to_owned());
        let chain = crate::audit::test_chain(dir);
        let id = SessionId::generate(jiff::Timestamp::UNIX_EPOCH);
        let cadence = Cadence {
            interval: Duration::from_secs(60),
            bytes: 1 << 30,
        };
        let r = Recorder::create(&store, &id, chain, cadence, (80, 24), "xterm", "t").unwrap();
        (r, store, id)
    }

    /// A sender faster than the disk is held back, not cut off: past the high-water mark the
    /// session waits until the writer has taken the queue, then goes on, and every line is
    /// written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // The disk's lock held across awaits is the stalled disk.
    #[allow(clippy::await_holding_lock)]
    async fn a_lagging_disk_holds_the_session_back_instead_of_failing_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, store, id) = recorder(dir.path());
        let pipe = r.pipe.clone();
        let disk = lock(&pipe.disk);
        let chunk = vec![b'x'; 1 << 20];
        assert!(r.backlog().is_none(), "nothing queued yet");
        for _ in 0..17 {
            r.output(&chunk).unwrap();
        }
        let backlog = r.backlog().expect("17 MiB queued while the disk is held");
        let mut waiting = tokio::spawn(backlog.wait());
        // Still waiting while the writer cannot write (the writer is stuck at the disk).
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut waiting)
                .await
                .is_err(),
            "the session went on while the disk held everything"
        );
        drop(disk);
        tokio::time::timeout(Duration::from_secs(20), waiting)
            .await
            .expect("the writer took the queue")
            .unwrap()
            .unwrap();
        r.output(b"after").unwrap();
        r.flushed().wait().await.unwrap();
        let lines = std::fs::read_to_string(store.cast_path(&id))
            .unwrap()
            .lines()
            .count();
        assert_eq!(lines, 1 + 17 + 1);
    }

    /// A disk that takes nothing for the stall time ([`DRAIN_STALL`] in the daemon) fails the
    /// recording (the session ends with a reason), rather than holding the session for ever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // The disk's lock held across awaits is the stalled disk.
    #[allow(clippy::await_holding_lock)]
    async fn a_stopped_disk_fails_the_recording_after_the_stall_time() {
        let dir = tempfile::tempdir().unwrap();
        let (mut r, _store, _id) = recorder(dir.path());
        let pipe = r.pipe.clone();
        let disk = lock(&pipe.disk);
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..17 {
            r.output(&chunk).unwrap();
        }
        let backlog = r.backlog().unwrap();
        let e = backlog
            .wait_at_most(Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(e.cause().contains("does not keep up"), "{}", e.cause());
        assert!(r.output(b"more").is_err(), "the recording has failed");
        drop(disk);
    }
}
