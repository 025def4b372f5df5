//! The task that copies the audit chain, and ended recordings, off the appliance.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{Offsite, OffsiteError};
use crate::audit::{AuditChain, Code, Event, Kind, Line};
use crate::recording::RecordingStore;

/// Longest wait between attempts while the store is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The chain is looked at this often even without a new entry.
const POLL: Duration = Duration::from_secs(5);

fn cursor_path(chain: &Path) -> PathBuf {
    chain.with_file_name("offsite.cursor")
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
    // While the store is down: how many lines went out in the partial attempts meanwhile.
    let mut down: Option<usize> = None;
    loop {
        let notified = audit.appended().notified();
        tokio::pin!(notified);
        // Registered before the chain is read, so an entry appended meanwhile wakes us.
        notified.as_mut().enable();
        let mut offset = read_cursor(&chain);
        let lines = lines_from(&chain, offset).unwrap_or_default();
        let mut sent = 0;
        let mut failure = None;
        for (line, len) in &lines {
            match send(&offsite, &audit, &store, line).await {
                Ok(()) => {
                    sent += 1;
                    offset += len;
                    if let Err(e) = write_cursor(&chain, offset) {
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
                if down.is_none() {
                    Event::new(Code::OffsiteFailed)
                        .reason(&reason)
                        .detail("endpoint", offsite.endpoint.as_str())
                        .detail("backlog", lines.len() - sent)
                        .emit();
                }
                down = Some(down.unwrap_or(0) + sent);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            None => {
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
