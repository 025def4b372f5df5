//! Retention: recordings whose session ended more than `retention_days` ago are deleted, each
//! after a signed `pruned` entry in the audit chain, so verification reports them as pruned,
//! never as missing or tampered. The off-site copy's retention is the store's own lifecycle rule.
//!
//! Invariant: the entry is on disk before a file is removed; a crash between the two leaves an
//! entry and files, and the next run removes the files (without a second entry).

use std::sync::Arc;
use std::time::Duration;

use super::{Meta, RecordingStore};
use crate::audit::{AuditChain, Code, Draft, Event, Kind, read_lines, verify_chain};
use crate::clock::Clock;
use crate::ids::SessionId;

/// How often the daemon looks for recordings past their period.
const EVERY: Duration = Duration::from_secs(3600);

/// Whether `meta`'s recording is past its period at `now`: counted from its end, or from its
/// start for a session that never ended (a crash).
fn expired(meta: &Meta, now: jiff::Timestamp, days: u32) -> bool {
    let from = meta.end.unwrap_or(meta.start);
    let keep = jiff::SignedDuration::from_hours(i64::from(days) * 24);
    from.checked_add(keep).is_ok_and(|until| until <= now)
}

/// Deletes the recordings past their period; returns the ids pruned.
pub async fn prune(
    store: &RecordingStore,
    audit: &AuditChain,
    clock: &dyn Clock,
    days: u32,
) -> std::io::Result<Vec<SessionId>> {
    let now = clock.now();
    let (s, path) = (store.clone(), audit.path().to_owned());
    let verifier = audit.verifier().clone();
    // Listing and reading the chain are blocking work.
    let (due, already) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let due: Vec<Meta> = s
            .list()?
            .into_iter()
            .filter(|m| expired(m, now, days))
            // A session still running is never pruned, however long it runs.
            .filter(|m| !super::verify::is_live(&s.cast_path(&m.id)))
            .collect();
        let report = verify_chain(&read_lines(&path)?, &verifier);
        let already: Vec<SessionId> = due
            .iter()
            .filter(|m| {
                report
                    .notes(&m.id)
                    .iter()
                    .any(|(e, _)| e.kind == Kind::Pruned)
            })
            .map(|m| m.id.clone())
            .collect();
        Ok((due, already))
    })
    .await
    .map_err(std::io::Error::other)??;
    let mut pruned = Vec::new();
    for meta in due {
        if !already.contains(&meta.id) {
            let draft = Draft::new(Kind::Pruned)
                .session(&meta.id)
                .field("retention_days", days);
            if let Err(e) = audit.append(draft).await {
                // No entry, no deletion.
                Event::new(Code::StorageFailed)
                    .session(&meta.id)
                    .reason(format!("recording not pruned: {e}"))
                    .emit();
                continue;
            }
        }
        let (s, id) = (store.clone(), meta.id.clone());
        tokio::task::spawn_blocking(move || s.remove(&id))
            .await
            .map_err(std::io::Error::other)??;
        pruned.push(meta.id);
    }
    Ok(pruned)
}

/// Runs for the life of the daemon when `retention_days` is set.
pub async fn run_retention(
    store: RecordingStore,
    audit: Arc<AuditChain>,
    clock: Arc<dyn Clock>,
    days: u32,
) {
    loop {
        if let Err(e) = prune(&store, &audit, clock.as_ref(), days).await {
            Event::new(Code::StorageFailed)
                .reason(format!(
                    "recordings past their retention period not pruned: {e}"
                ))
                .emit();
        }
        tokio::time::sleep(EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::test_chain;
    use crate::clock::tests::FakeClock;
    use crate::recording::{Cadence, Recorder, Verdict, verify_recording};

    /// A sealed recording of a session that ended at the clock's time.
    async fn recorded(
        store: &RecordingStore,
        chain: &Arc<AuditChain>,
        clock: &FakeClock,
    ) -> SessionId {
        let id = SessionId::generate(clock.now());
        let cadence = Cadence {
            interval: Duration::from_secs(60),
            bytes: 1 << 20,
        };
        let mut r =
            Recorder::create(store, &id, chain.clone(), cadence, (80, 24), "xterm", "t").unwrap();
        r.seal_with(Draft::new(Kind::Start).session(&id))
            .wait()
            .await
            .unwrap();
        r.output(b"hello\r\n").unwrap();
        r.seal_with(Draft::new(Kind::End).session(&id))
            .wait()
            .await
            .unwrap();
        drop(r);
        store
            .write_meta(&Meta {
                id: id.clone(),
                admin: "alice".into(),
                target: "pacs01".into(),
                account: "root".into(),
                grant: "g".into(),
                source: String::new(),
                start: clock.now(),
                end: Some(clock.now()),
                exit_status: Some(0),
                end_reason: Some("closed".into()),
                pty: true,
            })
            .unwrap();
        id
    }

    fn verdict(store: &RecordingStore, chain: &AuditChain, id: &SessionId) -> Verdict {
        let report = verify_chain(&read_lines(chain.path()).unwrap(), chain.verifier());
        verify_recording(store, id, &report)
    }

    #[tokio::test]
    async fn pruned_recordings_verify_as_pruned_not_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordingStore::new(dir.path().to_owned());
        let chain = test_chain(dir.path());
        let clock = FakeClock::at("2026-01-01T00:00:00Z");
        let old = recorded(&store, &chain, &clock).await;
        clock.advance(Duration::from_secs(20 * 86400));
        let young = recorded(&store, &chain, &clock).await;

        // 20 days on, with 30 days kept: nothing goes.
        assert!(prune(&store, &chain, &clock, 30).await.unwrap().is_empty());
        assert!(matches!(
            verdict(&store, &chain, &old),
            Verdict::Sealed { .. }
        ));

        // 31 days after the first session: it goes, with a signed entry; the other stays.
        clock.advance(Duration::from_secs(11 * 86400));
        assert_eq!(
            prune(&store, &chain, &clock, 30).await.unwrap(),
            std::slice::from_ref(&old)
        );
        assert!(!store.cast_path(&old).exists() && !store.meta_path(&old).exists());
        let v = verdict(&store, &chain, &old);
        assert!(matches!(v, Verdict::Pruned { .. }) && v.ok(), "{v}");
        assert!(matches!(
            verdict(&store, &chain, &young),
            Verdict::Sealed { .. }
        ));
        // Run again: no second entry.
        assert!(prune(&store, &chain, &clock, 30).await.unwrap().is_empty());
        let report = verify_chain(&read_lines(chain.path()).unwrap(), chain.verifier());
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        let entries = report.notes(&old);
        assert_eq!(
            entries
                .iter()
                .filter(|(e, _)| e.kind == Kind::Pruned)
                .count(),
            1
        );

        // Control: deleted without a pruned entry, a recording is missing, a finding.
        store.remove(&young).unwrap();
        let v = verdict(&store, &chain, &young);
        assert_eq!(v, Verdict::Missing);
        assert!(!v.ok());
    }
}
