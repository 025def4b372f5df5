//! Benchmark, not a test: `cargo bench --bench console`. A generated history of
//! STAPSTEEN_BENCH_SESSIONS sessions (default 100 000: real recordings with metadata and a few
//! lines of output each, sealed through the real recorder) and STAPSTEEN_BENCH_ENTRIES audit
//! chain entries (default 10 000 000: each session's start, checkpoints and end, written
//! through the real `AuditChain` writer, so `audit verify` accepts them). Then, each in a child
//! process of its own so that its peak RSS (VmHWM) is its own:
//! - build: the console's index from nothing (`Index::rebuild`, what `stapsteen index rebuild`
//!   does), its time and peak RSS;
//! - browse: 200 sessions-page requests as the console's handler makes them (read what is new,
//!   then one page), with filters, deep pages and output searches; p50/p95/max and peak RSS.
//!
//! The HTML rendering and HTTPS of the real console are not in these figures (both are per
//! page, not per session in history). STAPSTEEN_BENCH_DIR says where the history is written
//! (default: the target directory, a real disk).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stapsteen::audit::{AuditChain, Draft, Kind, NoteSigner, NoteVerifier};
use stapsteen::config::OnFailure;
use stapsteen::console_index::{Index, PAGE_BUDGET, Query};
use stapsteen::ids::SessionId;
use stapsteen::recording::{Cadence, Meta, Recorder, RecordingStore};

const ADMINS: &[&str] = &[
    "a.jansen", "b.dekker", "c.visser", "d.smit", "e.meijer", "f.bakker", "g.vos", "h.peters",
];
const WORDS: &[&str] = &[
    "systemctl",
    "restart",
    "pacs",
    "dicom",
    "journalctl",
    "backup",
    "vacuum",
    "certificate",
    "iptables",
    "rsync",
    "postgres",
    "nginx",
    "kernel",
    "upgrade",
    "reboot",
    "dmesg",
];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn main() {
    match std::env::var("STAPSTEEN_BENCH_PHASE").as_deref() {
        Ok("build") => {
            return build(Path::new(
                &std::env::var("STAPSTEEN_BENCH_HISTORY").unwrap(),
            ));
        }
        Ok("browse") => {
            return browse(Path::new(
                &std::env::var("STAPSTEEN_BENCH_HISTORY").unwrap(),
            ));
        }
        _ => {}
    }
    let sessions = env_usize("STAPSTEEN_BENCH_SESSIONS", 100_000);
    let entries = env_usize("STAPSTEEN_BENCH_ENTRIES", 10_000_000);
    let base = std::env::var("STAPSTEEN_BENCH_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").to_owned());
    let dir = tempfile::tempdir_in(base).unwrap();
    let t = Instant::now();
    let made = generate(dir.path(), sessions, entries);
    println!(
        "console bench: generated {sessions} sessions, {made} chain entries in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    for phase in ["build", "browse"] {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env("STAPSTEEN_BENCH_PHASE", phase)
            .env("STAPSTEEN_BENCH_HISTORY", dir.path())
            .output()
            .unwrap();
        print!("{}", String::from_utf8_lossy(&out.stdout));
        assert!(
            out.status.success(),
            "{phase}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join("audit/chain.jsonl"),
        dir.join("recordings"),
        dir.join("index/console.sqlite3"),
    )
}

fn verifier(dir: &Path) -> NoteVerifier {
    let key = std::fs::read_to_string(dir.join("key.vkey")).unwrap();
    NoteVerifier::from_vkey(key.trim()).unwrap()
}

/// Writes the history; returns the number of chain entries.
fn generate(dir: &Path, sessions: usize, entries: usize) -> u64 {
    let (chain_path, recordings, _) = paths(dir);
    std::fs::create_dir_all(chain_path.parent().unwrap()).unwrap();
    std::fs::create_dir_all(&recordings).unwrap();
    let signer = NoteSigner::new(&stapsteen::secrets::generate_key("bench")).unwrap();
    std::fs::write(dir.join("key.vkey"), &signer.verifier().vkey).unwrap();
    let chain = Arc::new(
        AuditChain::open(
            &chain_path,
            signer,
            Arc::new(stapsteen::clock::SystemClock),
            OnFailure::EndSessions,
        )
        .unwrap(),
    );
    let store = RecordingStore::new(recordings);
    let checkpoints = (entries / sessions.max(1)).saturating_sub(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let epoch: jiff::Timestamp = "2023-01-01T00:00:00Z".parse().unwrap();
    rt.block_on(async {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut workers = Vec::new();
        for _ in 0..64 {
            let (chain, store, next) = (chain.clone(), store.clone(), next.clone());
            workers.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= sessions {
                        break;
                    }
                    one_session(&chain, &store, i, checkpoints, epoch).await;
                }
            }));
        }
        for w in workers {
            w.await.unwrap();
        }
    });
    let last = stapsteen::audit::read_lines(&chain_path).map_or(0, |l| l.len());
    last as u64
}

async fn one_session(
    chain: &Arc<AuditChain>,
    store: &RecordingStore,
    i: usize,
    checkpoints: usize,
    epoch: jiff::Timestamp,
) {
    // Three years of history, a session every ~15 minutes.
    let start = epoch
        .checked_add(jiff::SignedDuration::from_secs(i as i64 * 900))
        .unwrap();
    let id = SessionId::generate(start);
    let cadence = Cadence {
        interval: Duration::from_secs(3600),
        bytes: 1 << 30,
    };
    let mut r =
        Recorder::create(store, &id, chain.clone(), cadence, (80, 24), "xterm", "t").unwrap();
    let mut acks = vec![r.seal_with(Draft::new(Kind::Start).session(&id))];
    let (w1, w2) = (WORDS[i % WORDS.len()], WORDS[(i / 7) % WORDS.len()]);
    r.output(format!("$ sudo {w1} {w2}\r\n\x1b[32mok\x1b[0m session {i}\r\n").as_bytes())
        .unwrap();
    for _ in 0..checkpoints {
        acks.push(r.seal_with(Draft::new(Kind::Checkpoint).session(&id)));
    }
    r.output(b"$ exit\r\n").unwrap();
    acks.push(r.seal_with(Draft::new(Kind::End).session(&id)));
    for a in acks {
        a.wait().await.unwrap();
    }
    drop(r);
    store
        .write_meta(&Meta {
            id: id.clone(),
            admin: ADMINS[i % ADMINS.len()].into(),
            target: format!("srv{:02}", i % 40),
            account: "beheer".into(),
            grant: "g".into(),
            source: String::new(),
            start,
            end: Some(
                start
                    .checked_add(jiff::SignedDuration::from_secs(300))
                    .unwrap(),
            ),
            exit_status: Some(u32::from(i.is_multiple_of(13))),
            end_reason: Some("closed".into()),
            pty: true,
        })
        .unwrap();
}

fn open(dir: &Path) -> Index {
    let (chain, recordings, index) = paths(dir);
    Index::open(
        &index,
        &chain,
        RecordingStore::new(recordings),
        verifier(dir),
    )
    .unwrap()
}

fn build(dir: &Path) {
    let (chain, recordings, index) = paths(dir);
    let t = Instant::now();
    let built = Index::rebuild(
        &index,
        &chain,
        RecordingStore::new(recordings),
        verifier(dir),
    )
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    let (sessions, problems) = built.counts().unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let size: u64 = std::fs::metadata(&index).map_or(0, |m| m.len());
    println!(
        "console bench: first build of the index: {secs:.1} s for {sessions} sessions; index file {} MiB; peak RSS {} MiB",
        size >> 20,
        vm_hwm_kib() >> 10
    );
}

fn browse(dir: &Path) {
    let index = open(dir);
    let (sessions, _) = index.counts().unwrap();
    let last_page = (sessions as usize)
        .div_ceil(stapsteen::console_index::PAGE)
        .saturating_sub(1);
    let mut queries: Vec<(&str, Query)> = Vec::new();
    for i in 0..200usize {
        let mut q = Query {
            now: jiff::Timestamp::now().as_microsecond(),
            ..Query::default()
        };
        let kind = match i % 8 {
            0 => "first page",
            1 => {
                q.page = (i * 37) % (last_page + 1);
                "any page"
            }
            2 => {
                q.admin = ADMINS[i % ADMINS.len()].into();
                q.page = i % 5;
                "admin"
            }
            3 => {
                q.target = format!("srv{:02}", i % 40);
                "target"
            }
            4 => {
                q.status = "failure".into();
                q.integrity = "ok".into();
                "status+integrity"
            }
            5 => {
                q.q = WORDS[i % WORDS.len()].into();
                "search"
            }
            6 => {
                q.q = format!("session {}", (i * 7919) % sessions.max(1) as usize);
                "search one"
            }
            _ => {
                q.q = WORDS[i % WORDS.len()].into();
                q.admin = ADMINS[i % ADMINS.len()].into();
                q.from = Some(
                    "2024-01-01T00:00:00Z"
                        .parse::<jiff::Timestamp>()
                        .unwrap()
                        .as_microsecond(),
                );
                "search+admin+from"
            }
        };
        queries.push((kind, q));
    }
    let mut all = Vec::new();
    let mut by_kind: std::collections::BTreeMap<&str, Vec<Duration>> = Default::default();
    for (kind, q) in &queries {
        let t = Instant::now();
        index.update(PAGE_BUDGET).unwrap();
        let page = index.page(q, &[]).unwrap();
        let took = t.elapsed();
        std::hint::black_box(page.rows.len());
        all.push(took);
        by_kind.entry(kind).or_default().push(took);
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
    };
    println!(
        "console bench: {} page requests: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms; peak RSS while browsing {} MiB",
        all.len(),
        pct(&mut all, 0.5).as_secs_f64() * 1e3,
        pct(&mut all, 0.95).as_secs_f64() * 1e3,
        pct(&mut all, 1.0).as_secs_f64() * 1e3,
        vm_hwm_kib() >> 10
    );
    for (kind, mut v) in by_kind {
        println!(
            "  {kind:<18} p95 {:.1} ms",
            pct(&mut v, 0.95).as_secs_f64() * 1e3
        );
    }
}
