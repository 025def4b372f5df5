//! Benchmark, not a test: `cargo bench --bench console` (as root, for the daemon phase). A
//! generated history of STAPSTEEN_BENCH_SESSIONS sessions (default 100 000: real recordings with
//! metadata and a few lines of output each, sealed through the real recorder) and
//! STAPSTEEN_BENCH_ENTRIES audit chain entries (default 10 000 000: each session's start,
//! checkpoints and end, written through the real `AuditChain` writer with a signing key kept
//! next to it, so `audit verify` accepts them), laid out as the daemon's `state_dir`
//! (`audit/`, `recordings/`, `index/`). The history goes to a temporary directory under
//! STAPSTEEN_BENCH_DIR (default: the target directory, a real disk), or to
//! STAPSTEEN_BENCH_HISTORY, where it is kept and reused by later runs once complete (its
//! `generated` file). Then the phases of STAPSTEEN_BENCH_PHASES (default `daemon,browse`), each
//! in a child process of its own:
//! - daemon: the real `stapsteen serve` in the test bed (tests/common), its `state_dir` the
//!   history, under `nice -n 19` while it builds its index from nothing in the background; a
//!   reviewer logs in through the browser (WebAuthn); the build is done when the sessions
//!   page's last page has rows and no longer says the index is behind. Then, at normal
//!   priority, 200 HTTPS requests with curl from the reviewer network (each a new TLS
//!   connection; curl's `time_total`): first pages, deep pages, admin and target filters,
//!   status with integrity, output searches, search with admin and time, session pages;
//!   p50/p95/max per kind, and the daemon's VmHWM since its start (with the build) and since
//!   a reset (`clear_refs`) just before browsing;
//! - browse: the same sessions-page requests on the index in this process, as the handler
//!   makes them (read what is new, then one page): no HTTPS, no HTML; its own VmHWM;
//! - build: the index from nothing in this process (`Index::rebuild`, what `stapsteen index
//!   rebuild` does), its time and VmHWM (not run by default: the daemon phase builds it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mod.rs"]
mod common;

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
        Ok("daemon") => {
            return daemon(Path::new(
                &std::env::var("STAPSTEEN_BENCH_HISTORY").unwrap(),
            ));
        }
        _ => {}
    }
    let sessions = env_usize("STAPSTEEN_BENCH_SESSIONS", 100_000);
    let entries = env_usize("STAPSTEEN_BENCH_ENTRIES", 10_000_000);
    // A history of its own in a temporary directory, or a kept one: STAPSTEEN_BENCH_HISTORY,
    // generated there unless an earlier run finished it (its `generated` file).
    let temp;
    let dir = match std::env::var("STAPSTEEN_BENCH_HISTORY") {
        Ok(d) => PathBuf::from(d),
        Err(_) => {
            let base = std::env::var("STAPSTEEN_BENCH_DIR")
                .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").to_owned());
            temp = tempfile::tempdir_in(base).unwrap();
            temp.path().to_owned()
        }
    };
    let done = dir.join("generated");
    match std::fs::read_to_string(&done) {
        Ok(what) => println!(
            "console bench: kept history in {}: {}",
            dir.display(),
            what.trim()
        ),
        Err(_) => {
            let t = Instant::now();
            let made = generate(&dir, sessions, entries);
            let what = format!(
                "{sessions} sessions, {made} chain entries, generated in {:.0} s",
                t.elapsed().as_secs_f64()
            );
            println!("console bench: {what}");
            std::fs::write(&done, what).unwrap();
        }
    }
    let phases = std::env::var("STAPSTEEN_BENCH_PHASES").unwrap_or_else(|_| "daemon,browse".into());
    for phase in phases.split(',').filter(|p| !p.is_empty()) {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env("STAPSTEEN_BENCH_PHASE", phase)
            .env("STAPSTEEN_BENCH_HISTORY", &dir)
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
    // The daemon phase signs with this key too: it appends to the same chain.
    let key = stapsteen::secrets::generate_key("bench");
    stapsteen::secrets::write_new_key(&dir.join("signing_key"), &key).unwrap();
    let signer = NoteSigner::new(&key).unwrap();
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
    // One line an entry, over every segment (reading them whole would take gigabytes).
    let mut lines = 0;
    for seg in std::fs::read_dir(chain_path.parent().unwrap()).unwrap() {
        let mut f = std::io::BufReader::new(std::fs::File::open(seg.unwrap().path()).unwrap());
        loop {
            let buf = std::io::BufRead::fill_buf(&mut f).unwrap();
            if buf.is_empty() {
                break;
            }
            let n = buf.len();
            lines += buf.iter().filter(|b| **b == b'\n').count() as u64;
            std::io::BufRead::consume(&mut f, n);
        }
    }
    lines
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

/// One request of the browsing mix: its kind and the sessions page's filter fields.
#[derive(Default)]
struct Ask {
    kind: &'static str,
    admin: String,
    target: String,
    status: String,
    integrity: String,
    q: String,
    /// `YYYY-MM-DDTHH:MM`, in the policy's time zone as the page takes it.
    from: String,
    page: usize,
    /// The session page of this session instead of the sessions page.
    session: Option<String>,
}

/// The 200 requests: first pages, pages anywhere in the list, admin and target filters, status
/// with integrity, output searches (common words, one session's text), a search with admin and
/// time, and (when `ids` holds some) session pages.
fn mix(sessions: usize, ids: &[String]) -> Vec<Ask> {
    let last_page = sessions
        .div_ceil(stapsteen::console_index::PAGE)
        .saturating_sub(1);
    let kinds = if ids.is_empty() { 8 } else { 9 };
    (0..200usize)
        .map(|i| {
            let mut a = Ask::default();
            a.kind = match i % kinds {
                0 => "first page",
                1 => {
                    a.page = (i * 37) % (last_page + 1);
                    "any page"
                }
                2 => {
                    a.admin = ADMINS[i % ADMINS.len()].into();
                    a.page = i % 5;
                    "admin"
                }
                3 => {
                    a.target = format!("srv{:02}", i % 40);
                    "target"
                }
                4 => {
                    a.status = "failure".into();
                    a.integrity = "ok".into();
                    "status+integrity"
                }
                5 => {
                    a.q = WORDS[i % WORDS.len()].into();
                    "search"
                }
                6 => {
                    a.q = format!("session {}", (i * 7919) % sessions.max(1));
                    "search one"
                }
                7 => {
                    a.q = WORDS[i % WORDS.len()].into();
                    a.admin = ADMINS[i % ADMINS.len()].into();
                    a.from = "2024-01-01T00:00".into();
                    "search+admin+from"
                }
                _ => {
                    a.session = Some(ids[i % ids.len()].clone());
                    "session page"
                }
            };
            a
        })
        .collect()
}

impl Ask {
    fn query(&self) -> Query {
        Query {
            now: jiff::Timestamp::now().as_microsecond(),
            admin: self.admin.clone(),
            target: self.target.clone(),
            status: self.status.clone(),
            integrity: self.integrity.clone(),
            q: self.q.clone(),
            from: (!self.from.is_empty()).then(|| {
                let dt: jiff::civil::DateTime = self.from.parse().unwrap();
                dt.to_zoned(jiff::tz::TimeZone::get("Europe/Amsterdam").unwrap())
                    .unwrap()
                    .timestamp()
                    .as_microsecond()
            }),
            page: self.page,
            ..Query::default()
        }
    }

    /// curl's arguments for this request (`-G` with each field URL-encoded).
    fn curl_args(&self) -> Vec<String> {
        if let Some(id) = &self.session {
            return vec![common::console::url(&format!("/sessions/{id}"))];
        }
        let mut args = vec!["-G".to_owned(), common::console::url("/sessions")];
        for (k, v) in [
            ("admin", &self.admin),
            ("target", &self.target),
            ("status", &self.status),
            ("integrity", &self.integrity),
            ("q", &self.q),
            ("from", &self.from),
        ] {
            if !v.is_empty() {
                args.extend(["--data-urlencode".to_owned(), format!("{k}={v}")]);
            }
        }
        if self.page > 0 {
            args.extend(["--data-urlencode".to_owned(), format!("page={}", self.page)]);
        }
        args
    }
}

/// p50, p95 and max overall, and p95 by kind, in milliseconds.
fn report(what: &str, timed: &[(&'static str, Duration)]) {
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1].as_secs_f64() * 1e3
    };
    let mut all: Vec<Duration> = timed.iter().map(|t| t.1).collect();
    let mut by_kind: std::collections::BTreeMap<&str, Vec<Duration>> = Default::default();
    for (kind, took) in timed {
        by_kind.entry(kind).or_default().push(*took);
    }
    println!(
        "console bench: {what}: {} requests: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        all.len(),
        pct(&mut all, 0.5),
        pct(&mut all, 0.95),
        pct(&mut all, 1.0),
    );
    for (kind, mut v) in by_kind {
        println!(
            "  {kind:<18} p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms",
            pct(&mut v, 0.5),
            pct(&mut v, 0.95),
            pct(&mut v, 1.0)
        );
    }
}

/// The index in this process, as the page handler uses it (read what is new, then one page):
/// no HTTPS, no HTML, no login.
fn browse(dir: &Path) {
    let index = open(dir);
    let (sessions, _) = index.counts().unwrap();
    let mut timed = Vec::new();
    for ask in mix(sessions as usize, &[]) {
        let q = ask.query();
        let t = Instant::now();
        index.update(PAGE_BUDGET).unwrap();
        let page = index.page(&q, &[]).unwrap();
        let took = t.elapsed();
        std::hint::black_box(page.rows.len());
        timed.push((ask.kind, took));
    }
    report("the index in-process", &timed);
    println!(
        "  peak RSS of this process while browsing {} MiB",
        vm_hwm_kib() >> 10
    );
}

/// The daemon's peak resident memory (KiB) since its start or the last reset.
fn daemon_hwm(env: &common::Env) -> u64 {
    common::console::peak_rss(env)
}

/// The real daemon in the test bed, serving this history: `stapsteen serve` (under `nice -n 19`
/// until its index is built, as the machine is shared), its console on HTTPS, a reviewer logged
/// in through the browser (WebAuthn), the index built by the daemon in the background from
/// nothing; then the 200 requests with curl from the reviewer network, each timed by curl
/// (`time_total`: a new TLS connection, the handler, the HTML).
fn daemon(dir: &Path) {
    use common::console::{browser_login, console_options, curl_logged_in};
    let (_, _, index_file) = paths(dir);
    // The first build is what this measures.
    let _ = std::fs::remove_dir_all(index_file.parent().unwrap());
    let mut opts = console_options("");
    // The login outlasts the build (the wait polls the page) and the browsing.
    opts.extra_config = opts.extra_config.replace(
        &format!("idle_timeout = \"{}s\"", common::console::IDLE_SECONDS),
        "idle_timeout = \"600s\"",
    );
    opts.bastion_prefix = ["nice", "-n", "19"].map(String::from).to_vec();
    if !common::prerequisites_with(&[common::Extra::Browser]) {
        return;
    }
    let mut env = common::Env::new(opts);
    // The same daemon again, its state the history: the history's chain key signs what it adds.
    env.kill_bastion();
    let config = env.path("stapsteen.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let moved = text.replace(
        "state_dir = \"state\"",
        &format!("state_dir = \"{}\"", dir.display()),
    );
    assert_ne!(text, moved);
    std::fs::write(&config, moved).unwrap();
    std::fs::copy(dir.join("signing_key"), env.path("signing_key")).unwrap();
    let starts = env
        .audit()
        .iter()
        .filter(|e| e["code"] == "CONSOLE_START")
        .count();
    let t = Instant::now();
    env.restart_bastion();
    let start = loop {
        let found: Vec<_> = env
            .audit()
            .into_iter()
            .filter(|e| e["code"] == "CONSOLE_START")
            .collect();
        if found.len() > starts {
            break found[starts].clone();
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no CONSOLE_START");
        std::thread::sleep(Duration::from_millis(50));
    };
    let spki = common::Env::detail(&start)["spki_sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let cookie = browser_login(&env, &spki);

    // Built: the sessions page no longer says the index is behind, and its last page has rows.
    let (sessions, _) = counts_in_chain(dir);
    let last_page = sessions
        .div_ceil(stapsteen::console_index::PAGE)
        .saturating_sub(1);
    let page = env.path("page.html");
    let mut polls = 0;
    let mut failed = Vec::new();
    loop {
        let (rc, status) = curl_logged_in(
            &env,
            &cookie,
            300,
            &format!("/sessions?page={last_page}"),
            &page,
        );
        let html = std::fs::read_to_string(&page).unwrap_or_default();
        polls += 1;
        if (rc, status.as_str()) != (0, "200") {
            // A finding, not the end of the run: reported with the daemon's warnings.
            failed.push(format!(
                "poll {polls}: curl {rc}, HTTP {status}: {}",
                html.trim()
            ));
            assert!(failed.len() < 20, "{failed:#?}");
        } else if !html.contains("id=\"indexing\"") && !html.contains("No sessions match.") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(4 * 3600),
            "the index was not built in 4 hours"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let built = t.elapsed().as_secs_f64();
    let size: u64 = std::fs::metadata(&index_file).map_or(0, |m| m.len());
    println!(
        "console bench: daemon: index built in the background in {built:.0} s ({polls} polls of the page, 2 s apart) for {sessions} sessions; index file {} MiB; daemon peak RSS since its start {} MiB",
        size >> 20,
        daemon_hwm(&env) >> 10
    );

    // Browsing at normal priority, the daemon's peak memory counted from here.
    let pid = env.bastion_pid().to_string();
    let renice = std::process::Command::new("renice")
        .args(["-n", "0", "-p", &pid])
        .output()
        .unwrap();
    assert!(renice.status.success());
    let first = env.path("first.html");
    let (rc, status) = curl_logged_in(&env, &cookie, 60, "/sessions", &first);
    assert_eq!((rc, status.as_str()), (0, "200"));
    let html = std::fs::read_to_string(&first).unwrap();
    let ids: Vec<String> = html
        .split("href=\"/sessions/")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .filter(|id| !id.contains('/'))
        .map(str::to_owned)
        .collect();
    assert!(!ids.is_empty(), "no sessions on the first page");
    common::console::reset_peak(&env);
    let ns = env.ns_reviewer.clone().unwrap();
    let resolve = format!(
        "{}:8443:{}",
        common::console::HOST,
        common::console::CONSOLE_IP
    );
    let mut timed = Vec::new();
    for ask in mix(sessions, &ids) {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &ns, "curl", "-sk", "--max-time", "60"])
            .args(["--resolve", &resolve])
            .args(["-H", &format!("Cookie: __Host-stapsteen={cookie}")])
            .args(["-o", "/dev/null", "-w", "%{http_code} %{time_total}"])
            .args(ask.curl_args())
            .output()
            .unwrap();
        let got = String::from_utf8_lossy(&out.stdout).into_owned();
        let (code, secs) = got.split_once(' ').unwrap();
        if code != "200" {
            failed.push(format!("{}: HTTP {code}: {:?}", ask.kind, ask.curl_args()));
            continue;
        }
        timed.push((ask.kind, Duration::from_secs_f64(secs.parse().unwrap())));
    }
    report("daemon over HTTPS", &timed);
    println!(
        "  daemon peak RSS while browsing {} MiB",
        daemon_hwm(&env) >> 10
    );
    for f in &failed {
        println!("  FAILED while the index was built: {f}");
    }
    // What the daemon logged besides its audit events (index warnings, errors).
    let log = std::fs::read_to_string(env.path("audit.log")).unwrap_or_default();
    for line in log.lines().filter(|l| {
        serde_json::from_str::<serde_json::Value>(l).map_or(true, |e| e["level"] != "INFO")
    }) {
        println!("  daemon log: {}", &line[..line.len().min(400)]);
    }
}

/// Sessions and entries in the history, from its `generated` file.
fn counts_in_chain(dir: &Path) -> (usize, u64) {
    let what = std::fs::read_to_string(dir.join("generated")).unwrap();
    let mut words = what.split_whitespace();
    let sessions = words.next().unwrap().parse().unwrap();
    let entries = words.nth(1).unwrap().parse().unwrap();
    (sessions, entries)
}
