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
use crate::audit::{AuditChain, Code, Event, Kind, Line};
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

/// Whole lines of the chain from byte `offset` on, each with its length (newline included).
fn lines_from(chain: &Path, offset: u64) -> std::io::Result<Vec<(String, u64)>> {
    use std::io::{BufRead, Seek, SeekFrom};
    let mut file = std::fs::File::open(chain)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = std::io::BufReader::new(file);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while reader.read_until(b'\n', &mut buf)? > 0 && buf.last() == Some(&b'\n') {
        let text = String::from_utf8_lossy(&buf[..buf.len() - 1]).into_owned();
        out.push((text, buf.len() as u64));
        buf.clear();
    }
    Ok(out)
}

/// Bytes of the chain already sent.
fn read_cursor(chain: &Path) -> u64 {
    std::fs::read_to_string(cursor_path(chain))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write_cursor(chain: &Path, n: u64) -> std::io::Result<()> {
    let path = cursor_path(chain);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{n}\n"))?;
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

/// Sends the chain's lines after the cursor, moving it past each one stored; stops at the first
/// failure.
async fn round(offsite: &Offsite, audit: &AuditChain, store: &RecordingStore) -> Round {
    let chain = audit.path();
    let mut offset = read_cursor(chain);
    let lines = lines_from(chain, offset).unwrap_or_default();
    let mut sent = 0;
    let mut failure = None;
    for (line, len) in &lines {
        match send(offsite, audit, store, line).await {
            Ok(()) => {
                sent += 1;
                offset += len;
                if let Err(e) = write_cursor(chain, offset) {
                    failure = Some(format!("cannot save the off-site cursor: {e}"));
                    break;
                }
            }
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        }
    }
    Round {
        lines: lines.len(),
        sent,
        failure,
    }
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
}
