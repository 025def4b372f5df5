//! Group commit under `kill -9`: a child process appends to the audit chain from 64 tasks at
//! once and prints each acknowledged sequence number; the parent kills it with SIGKILL after
//! some hundreds of acknowledgements. Every acknowledged entry must be in the file, and
//! `stapsteen audit verify` must pass on what is left (a torn last line is cut when the chain is
//! opened again, as the daemon does at start).
//!
//! Its own harness (`harness = false`): `audit_crash child DIR` is the appending child.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stapsteen::audit::{AuditChain, Draft, Kind, NoteSigner};
use stapsteen::config::OnFailure;

/// Acknowledgements the parent waits for before it kills the child.
const KILL_AFTER: usize = 400;
const TASKS: usize = 64;

fn open(dir: &Path) -> AuditChain {
    let key = stapsteen::secrets::load_key("signing_key", &dir.join("signing_key")).unwrap();
    AuditChain::open(
        &dir.join("state/audit/chain.jsonl"),
        NoteSigner::new(&key).unwrap(),
        Arc::new(stapsteen::clock::SystemClock),
        OnFailure::EndSessions,
    )
    .unwrap()
}

fn child(dir: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let chain = Arc::new(open(dir));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..TASKS {
            let chain = chain.clone();
            tasks.spawn(async move {
                loop {
                    let seq = chain.append(Draft::new(Kind::Checkpoint)).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {seq}").unwrap();
                    out.flush().unwrap();
                }
            });
        }
        // The tasks append until the parent kills this process.
        if let Some(ended) = tasks.join_next().await {
            ended.unwrap();
        }
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, dir] = args.as_slice()
        && mode == "child"
    {
        child(Path::new(dir));
        return;
    }
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("policy.toml"), "").unwrap();
    let cfg = dir.join("stapsteen.toml");
    std::fs::write(
        &cfg,
        "listen = [\"127.0.0.1:0\"]\npolicy = \"policy.toml\"\nstate_dir = \"state\"\nhost_key = \"host_key\"\nca_key = \"ca_key\"\nsigning_key = \"signing_key\"\n[firewall]\nenabled = false\n",
    )
    .unwrap();
    let stapsteen = env!("CARGO_BIN_EXE_stapsteen");
    let out = Command::new(stapsteen)
        .args(["keys", "init", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::create_dir_all(dir.join("state/audit")).unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("child")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = BTreeSet::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acked.len() < KILL_AFTER {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "only {} acknowledgements",
            acked.len()
        );
        let line = lines.next().expect("the child ended").unwrap();
        acked.insert(line.strip_prefix("ack ").unwrap().parse::<u64>().unwrap());
    }
    // SIGKILL, mid-flight: other tasks' entries are being written at this moment.
    child.kill().unwrap();
    // What the child printed before it died was acknowledged too.
    for line in lines {
        let Ok(line) = line else { break };
        if let Some(seq) = line.strip_prefix("ack ").and_then(|s| s.parse().ok()) {
            acked.insert(seq);
        }
    }
    child.wait().unwrap();

    // Reopening cuts a torn tail, as the daemon does at start; nothing acknowledged is cut.
    let chain = open(dir);
    let stored: BTreeSet<u64> = stapsteen::audit::read_lines(chain.path())
        .unwrap()
        .iter()
        .map(|l| {
            let line: stapsteen::audit::Line = serde_json::from_str(l).unwrap();
            let text = chain.verifier().open(line.note.as_bytes()).unwrap();
            stapsteen::audit::parse_entry(&text).unwrap().seq
        })
        .collect();
    drop(chain);
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    let out = Command::new(stapsteen)
        .args(["audit", "verify", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "audit_crash: {} acknowledged before SIGKILL, {} stored, all acknowledged present; {}",
        acked.len(),
        stored.len(),
        text.trim()
    );
}
