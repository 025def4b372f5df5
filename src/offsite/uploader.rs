//! The task that copies the audit chain, and ended recordings, off the appliance.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{Offsite, OffsiteError};
use crate::audit::{AuditChain, Code, Event, Kind, Line, read_lines};
use crate::recording::RecordingStore;

/// Longest wait between attempts while the store is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The chain is looked at this often even without a new entry.
const POLL: Duration = Duration::from_secs(5);

fn cursor_path(chain: &Path) -> PathBuf {
    chain.with_file_name("offsite.cursor")
}

fn read_cursor(chain: &Path) -> usize {
    std::fs::read_to_string(cursor_path(chain))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write_cursor(chain: &Path, n: usize) -> std::io::Result<()> {
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
        for (ext, path) in [
            ("cast", store.cast_path(id)),
            ("idx", store.index_path(id)),
            ("json", store.meta_path(id)),
        ] {
            // A recording deleted before it could be sent is a finding for `verify`, not a
            // reason to stop the copy of the chain.
            if let Ok(data) = tokio::fs::read(&path).await {
                offsite.put(&Offsite::recording_name(id, ext), data).await?;
            }
        }
    }
    offsite
        .put(&Offsite::note_name(entry.seq), note.into_bytes())
        .await
}

/// Runs for the life of the daemon.
pub async fn run_uploader(offsite: Offsite, audit: Arc<AuditChain>, store: RecordingStore) {
    let chain = audit.path().to_owned();
    let mut backoff = Duration::from_secs(1);
    let mut down_since: Option<usize> = None;
    loop {
        let notified = audit.appended.notified();
        tokio::pin!(notified);
        // Registered before the chain is read, so an entry appended meanwhile wakes us.
        notified.as_mut().enable();
        let mut sent = read_cursor(&chain);
        let lines = read_lines(&chain).unwrap_or_default();
        let mut failure = None;
        for line in lines.iter().skip(sent) {
            match send(&offsite, &audit, &store, line).await {
                Ok(()) => {
                    sent += 1;
                    if let Err(e) = write_cursor(&chain, sent) {
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
        match failure {
            Some(reason) => {
                if down_since.is_none() {
                    Event::new(Code::OffsiteFailed)
                        .reason(&reason)
                        .detail("endpoint", offsite.endpoint.as_str())
                        .detail("backlog", lines.len().saturating_sub(sent))
                        .emit();
                    down_since = Some(sent);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            None => {
                if let Some(from) = down_since.take() {
                    Event::new(Code::OffsiteResumed)
                        .detail("endpoint", offsite.endpoint.as_str())
                        .detail("sent", sent - from)
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
