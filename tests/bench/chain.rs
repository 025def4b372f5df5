//! Benchmark, not a test: `cargo bench --bench chain`. 200 sessions checkpointing at once: 200
//! tasks on a two-worker runtime (the daemon's shape on these machines) each append 50 entries
//! to one audit chain on disk, as fast as they can. Prints appends per second, append latency
//! percentiles and entries per fsync, and how late a 1 ms timer on the same runtime fires
//! meanwhile (what every other session on those workers feels). STAPSTEEN_BENCH_DIR says where the chain is written
//! (default: the target directory, a real disk; /tmp may be memory).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use stapsteen::audit::{AuditChain, Draft, Kind, NoteSigner};
use stapsteen::config::OnFailure;

const SESSIONS: usize = 200;
const EACH: usize = 50;

fn main() {
    let base = std::env::var("STAPSTEEN_BENCH_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").to_owned());
    let dir = tempfile::tempdir_in(base).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let chain = Arc::new(
        AuditChain::open(
            &dir.path().join("chain.jsonl"),
            NoteSigner::new(&stapsteen::secrets::generate_key("bench")).unwrap(),
            Arc::new(stapsteen::clock::SystemClock),
            OnFailure::EndSessions,
        )
        .unwrap(),
    );
    let groups = chain.groups();
    let start = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = {
        let done = done.clone();
        rt.spawn(async move {
            let mut late = Vec::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                tokio::time::sleep(Duration::from_millis(1)).await;
                late.push(t.elapsed().saturating_sub(Duration::from_millis(1)));
            }
            late
        })
    };
    let mut latencies: Vec<Duration> = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..SESSIONS {
            let chain = chain.clone();
            tasks.push(tokio::spawn(async move {
                let mut l = Vec::with_capacity(EACH);
                for _ in 0..EACH {
                    let t = Instant::now();
                    chain.append(Draft::new(Kind::Checkpoint)).await.unwrap();
                    l.push(t.elapsed());
                }
                l
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    let wall = start.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut late = rt.block_on(probe).unwrap();
    late.sort();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let n = latencies.len();
    let fsyncs = chain.groups() - groups;
    println!(
        "chain: {SESSIONS} appenders x {EACH}: {:.0} appends/s, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {fsyncs} fsyncs ({:.1} entries each); 1 ms timer late p99 {:.2} ms, max {:.2} ms",
        n as f64 / wall,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies[n - 1].as_secs_f64() * 1e3,
        n as f64 / fsyncs.max(1) as f64,
        late[late.len() * 99 / 100].as_secs_f64() * 1e3,
        late[late.len() - 1].as_secs_f64() * 1e3,
    );
}
