//! The task that copies the audit chain, and ended recordings, off the appliance.
//!
//! A recording that cannot be sent does not hold the chain back: its id goes to
//! `audit/offsite.pending` (before the cursor moves past its `end` entry, so it is not lost),
//! `OFFSITE_FAILED` names it, and it is retried every round until it is stored
//! (`OFFSITE_RESUMED` names it then). A create-only write the store refuses because another
//! object holds the name is `OFFSITE_OVERWRITE_REFUSED`, and is not retried: the copy off-site
//! stays as it was, and `verify` shows the difference.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{Offsite, OffsiteError};
use crate::audit::{AuditChain, Code, Event, Kind, Line, segments, seq_of};
use crate::ids::SessionId;
use crate::recording::RecordingStore;

/// Longest wait between attempts while the store is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The chain is looked at this often even without a new entry.
const POLL: Duration = Duration::from_secs(5);

fn cursor_path(chain: &Path) -> PathBuf {
    chain.with_file_name("offsite.cursor")
}

fn pending_path(chain: &Path) -> PathBuf {
    chain.with_file_name("offsite.pending")
}

/// Recordings waiting to be sent again, oldest first.
fn read_pending(chain: &Path) -> Vec<SessionId> {
    std::fs::read_to_string(pending_path(chain))
        .unwrap_or_default()
        .lines()
        .filter_map(SessionId::parse)
        .collect()
}

fn write_pending(chain: &Path, ids: &[SessionId]) -> std::io::Result<()> {
    let path = pending_path(chain);
    let tmp = path.with_extension("tmp");
    let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, path)
}

/// The alert for a create-only write the store refused.
fn overwrite_refused(offsite: &Offsite, name: &str, session: Option<&SessionId>) {
    let mut e = Event::new(Code::OffsiteOverwriteRefused)
        .reason(format!(
            "{name} already exists off-site with other content; it was not replaced"
        ))
        .detail("endpoint", offsite.endpoint.as_str())
        .detail("object", name);
    if let Some(id) = session {
        e = e.session(id);
    }
    e.emit();
}

/// Sends a recording's files (those present: a deleted one is a finding for `verify`).
async fn send_recording(
    offsite: &Offsite,
    store: &RecordingStore,
    id: &SessionId,
) -> Result<(), OffsiteError> {
    for (ext, path) in [
        ("cast", store.cast_path(id)),
        ("idx", store.index_path(id)),
        ("json", store.meta_path(id)),
    ] {
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            offsite
                .put_file(&Offsite::recording_name(id, ext), &path)
                .await?;
        }
    }
    Ok(())
}

/// Retries the pending recordings; keeps those that fail again.
async fn retry_pending(offsite: &Offsite, store: &RecordingStore, chain: &Path) {
    let pending = read_pending(chain);
    if pending.is_empty() {
        return;
    }
    let mut left = Vec::new();
    for id in pending {
        match send_recording(offsite, store, &id).await {
            Ok(()) => Event::new(Code::OffsiteResumed)
                .session(&id)
                .detail("endpoint", offsite.endpoint.as_str())
                .detail("recording", id.as_str())
                .emit(),
            Err(OffsiteError::Overwrite { name }) => overwrite_refused(offsite, &name, Some(&id)),
            Err(_) => left.push(id),
        }
    }
    if let Err(e) = write_pending(chain, &left) {
        Event::new(Code::OffsiteFailed)
            .reason(format!("cannot save the pending recordings: {e}"))
            .emit();
    }
}

/// A chain line and its length on disk (newline included).
type SizedLine = (String, u64);

/// Where the copy stands: the segment, by the seq of its first entry, and the bytes of it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    segment: u64,
    offset: u64,
}

/// The first seq of a segment file (from its name, or for the live one its first line), the
/// whole lines from byte `offset` on, each with its length (newline included), all read through
/// one open file, so a segment closed meanwhile is still the one read.
fn lines_from(path: &Path, offset: u64) -> std::io::Result<(Option<u64>, Vec<SizedLine>)> {
    use std::io::{Seek, SeekFrom};
    let file = std::fs::File::open(path)?;
    let mut reader = std::io::BufReader::new(file);
    let first = first_seq(&mut reader)?;
    reader.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    let mut out = Vec::new();
    buf.clear();
    while std::io::BufRead::read_until(&mut reader, b'\n', &mut buf)? > 0
        && buf.last() == Some(&b'\n')
    {
        let text = String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned();
        out.push((text, buf.len() as u64));
        buf.clear();
    }
    Ok((first, out))
}

/// The seq of the first entry read from `reader`, if it holds a whole line.
fn first_seq(reader: &mut impl std::io::BufRead) -> std::io::Result<Option<u64>> {
    let mut buf = Vec::new();
    reader.read_until(b'\n', &mut buf)?;
    Ok((buf.last() == Some(&b'\n'))
        .then(|| seq_of(String::from_utf8_lossy(&buf).trim_end()))
        .flatten())
}

/// How far the copy is. An older cursor holds only the offset, into the first segment.
fn read_cursor(chain: &Path) -> Cursor {
    let text = std::fs::read_to_string(cursor_path(chain)).unwrap_or_default();
    let mut words = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    match (words.next().flatten(), words.next().flatten()) {
        (Some(segment), Some(offset)) => Cursor { segment, offset },
        (Some(offset), None) => Cursor { segment: 0, offset },
        _ => Cursor {
            segment: 0,
            offset: 0,
        },
    }
}

fn write_cursor(chain: &Path, c: Cursor) -> std::io::Result<()> {
    let path = cursor_path(chain);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{} {}\n", c.segment, c.offset))?;
    std::fs::rename(tmp, path)
}

/// Sends one chain line (and, for an `end` entry, its recording).
async fn send(
    offsite: &Offsite,
    audit: &AuditChain,
    store: &RecordingStore,
    line: &str,
) -> Result<(), OffsiteError> {
    let Ok(Line { note }) = serde_json::from_str::<Line>(line) else {
        Event::new(Code::OffsiteFailed)
            .reason("an unreadable chain line is not sent")
            .emit();
        return Ok(());
    };
    let entry = match audit
        .verifier()
        .open(note.as_bytes())
        .and_then(|t| crate::audit::parse_entry(&t))
    {
        Ok(e) => e,
        Err(e) => {
            // Changed on disk after it was written: not sent, and said so.
            Event::new(Code::OffsiteFailed)
                .reason(format!("a chain line does not verify and is not sent: {e}"))
                .emit();
            return Ok(());
        }
    };
    if entry.kind == Kind::End
        && entry.seal.is_some()
        && let Some(id) = &entry.session
    {
        match send_recording(offsite, store, id).await {
            Ok(()) => {}
            Err(OffsiteError::Overwrite { name }) => overwrite_refused(offsite, &name, Some(id)),
            Err(e) => {
                // Retried later; the chain goes on meanwhile.
                let chain = audit.path();
                let mut pending = read_pending(chain);
                if !pending.contains(id) {
                    pending.push(id.clone());
                }
                write_pending(chain, &pending).map_err(|source| OffsiteError::Local {
                    path: pending_path(chain),
                    source,
                })?;
                Event::new(Code::OffsiteFailed)
                    .session(id)
                    .reason(format!("recording not sent, retried later: {e}"))
                    .detail("endpoint", offsite.endpoint.as_str())
                    .detail("recording", id.as_str())
                    .emit();
            }
        }
    }
    let name = Offsite::note_name(entry.seq);
    match offsite.put(&name, note.into_bytes()).await {
        Err(OffsiteError::Overwrite { name }) => {
            overwrite_refused(offsite, &name, entry.session.as_ref());
            Ok(())
        }
        r => r,
    }
}

/// What one pass over the unsent chain did.
struct Round {
    lines: usize,
    sent: usize,
    failure: Option<String>,
}

/// Sends the chain's lines after the cursor, segment by segment, moving it past each one stored;
/// stops at the first failure.
async fn round(offsite: &Offsite, audit: &AuditChain, store: &RecordingStore) -> Round {
    let chain = audit.path();
    let mut cursor = read_cursor(chain);
    let mut r = Round {
        lines: 0,
        sent: 0,
        failure: None,
    };
    let segments = match segments(chain) {
        Ok(s) => s,
        Err(e) => {
            r.failure = Some(format!("cannot list the audit chain's segments: {e}"));
            return r;
        }
    };
    for path in segments {
        let offset = |first: u64| {
            if first == cursor.segment {
                cursor.offset
            } else {
                0
            }
        };
        let head =
            std::fs::File::open(&path).and_then(|f| first_seq(&mut std::io::BufReader::new(f)));
        let (first, lines) = match head {
            // Read again from the cursor through one open file.
            Ok(Some(first)) if first >= cursor.segment => match lines_from(&path, offset(first)) {
                Ok((Some(f), lines)) if f == first => (first, lines),
                // Closed and replaced meanwhile: the next round sees the new list.
                Ok(_) => break,
                Err(e) => {
                    r.failure = Some(format!("cannot read {}: {e}", path.display()));
                    break;
                }
            },
            // Sent already, empty, or not there.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                r.failure = Some(format!("cannot read {}: {e}", path.display()));
                break;
            }
        };
        if first != cursor.segment {
            cursor = Cursor {
                segment: first,
                offset: 0,
            };
        }
        r.lines += lines.len();
        for (line, len) in &lines {
            match send(offsite, audit, store, line).await {
                Ok(()) => {
                    r.sent += 1;
                    cursor.offset += len;
                    if let Err(e) = write_cursor(chain, cursor) {
                        r.failure = Some(format!("cannot save the off-site cursor: {e}"));
                        return r;
                    }
                }
                Err(e) => {
                    r.failure = Some(e.to_string());
                    return r;
                }
            }
        }
    }
    r
}

/// Runs for the life of the daemon.
pub async fn run_uploader(offsite: Offsite, audit: Arc<AuditChain>, store: RecordingStore) {
    let chain = audit.path().to_owned();
    let mut backoff = Duration::from_secs(1);
    // While the store is down: how many lines went out in the partial attempts meanwhile.
    let mut down: Option<usize> = None;
    loop {
        let notified = audit.appended().notified();
        tokio::pin!(notified);
        // Registered before the chain is read, so an entry appended meanwhile wakes us.
        notified.as_mut().enable();
        let Round {
            lines,
            sent,
            failure,
        } = round(&offsite, &audit, &store).await;
        match failure {
            Some(reason) => {
                if down.is_none() {
                    Event::new(Code::OffsiteFailed)
                        .reason(&reason)
                        .detail("endpoint", offsite.endpoint.as_str())
                        .detail("backlog", lines - sent)
                        .emit();
                }
                down = Some(down.unwrap_or(0) + sent);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            None => {
                retry_pending(&offsite, &store, &chain).await;
                if let Some(earlier) = down.take() {
                    Event::new(Code::OffsiteResumed)
                        .detail("endpoint", offsite.endpoint.as_str())
                        .detail("sent", earlier + sent)
                        .emit();
                }
                backoff = Duration::from_secs(1);
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Draft, Seal, test_chain};

    /// A recording that cannot be read is retried later, and the chain goes on without it.
    #[tokio::test]
    async fn a_failing_recording_does_not_hold_back_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let chain = test_chain(dir.path());
        let store = RecordingStore::new(dir.path().to_owned());
        let offsite = Offsite::in_memory();
        let id = SessionId::generate(jiff::Timestamp::now());
        // A directory where the recording should be: it opens, but reading it fails.
        std::fs::create_dir(store.cast_path(&id)).unwrap();
        let seal = Seal {
            lines: 1,
            bytes: 10,
            chain: [0; 32],
        };
        let end = chain
            .append(Draft::new(Kind::End).session(&id).seal(seal))
            .await
            .unwrap();
        let later = chain.append(Draft::new(Kind::Open)).await.unwrap();

        let r = round(&offsite, &chain, &store).await;
        assert_eq!((r.lines, r.sent, r.failure), (3, 3, None));
        for seq in [end, later] {
            assert!(
                offsite
                    .get(&Offsite::note_name(seq))
                    .await
                    .unwrap()
                    .is_some()
            );
        }
        assert_eq!(read_pending(chain.path()), std::slice::from_ref(&id));
        let cast = Offsite::recording_name(&id, "cast");
        assert_eq!(offsite.get(&cast).await.unwrap(), None);

        // Still failing: still pending.
        retry_pending(&offsite, &store, chain.path()).await;
        assert_eq!(read_pending(chain.path()), std::slice::from_ref(&id));

        // Readable again: sent, and no longer pending.
        std::fs::remove_dir(store.cast_path(&id)).unwrap();
        std::fs::write(store.cast_path(&id), "the recording\n").unwrap();
        retry_pending(&offsite, &store, chain.path()).await;
        assert!(read_pending(chain.path()).is_empty());
        assert_eq!(
            offsite.get(&cast).await.unwrap().as_deref(),
            Some(&b"the recording\n"[..])
        );
    }

    /// The copy follows the chain across closed segments, from where it stood, and sends each
    /// entry once.
    #[tokio::test]
    async fn the_copy_follows_the_chain_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let chain = AuditChain::open_segmented(
            &dir.path().join("chain.jsonl"),
            crate::audit::NoteSigner::new(&crate::secrets::generate_key("t")).unwrap(),
            Arc::new(crate::clock::SystemClock),
            crate::config::OnFailure::EndSessions,
            2000,
        )
        .unwrap();
        let store = RecordingStore::new(dir.path().to_owned());
        let offsite = Offsite::in_memory();
        for _ in 0..3 {
            chain.append(Draft::new(Kind::Open)).await.unwrap();
        }
        let r = round(&offsite, &chain, &store).await;
        assert_eq!((r.sent, r.failure), (4, None));
        let mut last = 0;
        for _ in 0..30 {
            last = chain.append(Draft::new(Kind::Open)).await.unwrap();
        }
        assert!(segments(chain.path()).unwrap().len() > 3);
        let r = round(&offsite, &chain, &store).await;
        assert_eq!((r.sent, r.failure), (30, None));
        assert_eq!(
            offsite.note_seqs().await.unwrap(),
            (0..=last).collect::<Vec<_>>()
        );
        let r = round(&offsite, &chain, &store).await;
        assert_eq!((r.lines, r.sent), (0, 0), "nothing twice");
    }
}
