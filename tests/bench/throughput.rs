//! Benchmark, not a test: `cargo bench --bench throughput` (as root). In one run, in the test
//! bed's namespaces, pushes the same data (1 GiB, or STAPSTEEN_BENCH_MIB) with each cipher
//! (aes256-gcm and chacha20-poly1305, or the comma-separated STAPSTEEN_BENCH_CIPHER), each
//! STAPSTEEN_BENCH_RUNS times (3), through (a) stapsteen, (b) OpenSSH ProxyJump through an sshd
//! in the bastion namespace, (c) an ssh connection straight from the bastion namespace to the
//! target, and prints each run and the best of them with the ratios and CPU seconds per GiB
//! (whole machine, bastion process, jump sshd); then, with the first cipher, the keystroke echo
//! round trip through (a) and (c); then the same data through a port forward (`ssh -W`, the
//! direct-tcpip channel that `-L` uses too) to a TCP sink on the target, via stapsteen and via
//! the OpenSSH jump host; then terminal output (500 MiB of text, or STAPSTEEN_BENCH_PTY_MIB) with
//! and without a pty, via stapsteen and via the jump host. Prints MiB/s, round-trip percentiles
//! and the ratios.
//!
//! Recording cost: stapsteen records and seals every pty session and has no switch to stop that,
//! so "recording off" on the same terminal path is OpenSSH ProxyJump, which records nothing: the
//! ratio printed is stapsteen pty (recorded, sealed) / ProxyJump pty. The recording pipeline is
//! also timed on its own (the same text through the transcript with and without a recorder), to
//! show how far it is from being the bottleneck.
//!
//! `STAPSTEEN_BENCH_CALLGRIND=1` measures instead a deterministic cost (timings swing 10-20% on
//! a shared machine): the bastion runs under `valgrind --tool=callgrind`, and the instructions it
//! executes (Ir, all threads) are counted for exec sessions (aes256-gcm) pushing 0, N and 2N MiB
//! (N = 32, or STAPSTEEN_BENCH_CALLGRIND_MIB) with `max_channel_bytes` set to N MiB: (Ir(N) -
//! Ir(0)) / N is the instructions per MiB of a recorded transfer, (Ir(2N) - Ir(N)) / N those of
//! the bulk past the recording budget (counted and hashed only), which is what most of a large
//! transfer is. Login, key exchange, dial and the recording's start and seal cancel out.
//! Counters are zeroed before and dumped after each session with `callgrind_control`; the top
//! functions of each difference's larger session are printed.
//! `STAPSTEEN_BENCH_PERF=FILE` writes a `perf record -g` profile (cpu-clock, or the event in
//! STAPSTEEN_BENCH_PERF_EVENT such as page-faults) of the bastion
//! during the first stapsteen transfer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mod.rs"]
mod common;
mod routes;

use std::process::{Command, Stdio};
use std::time::Instant;

use common::{BASTION, Env, Options, PACS01};
use routes::{Routes, sh};

/// CPU seconds (user + system, with reaped children) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<f64> = rest.split(' ').map(|v| v.parse().unwrap_or(0.0)).collect();
    // utime, stime, cutime, cstime are fields 14-17 of the line, 12-15 after the name.
    (f[11] + f[12] + f[13] + f[14]) / 100.0
}

/// CPU seconds the whole machine spent busy so far (all cores, from /proc/stat).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / 100.0
}

/// MiB/s of `mib` MiB of terminal text (4 KiB chunks, as a pty delivers it) through a session's
/// transcript with a recorder sealing into an audit chain (on), and without one (off).
fn pipeline(mib: u64) -> (f64, f64) {
    use stapsteen::audit::{AuditChain, NoteSigner};
    use stapsteen::ids::SessionId;
    use stapsteen::proxy::Transcript;
    use stapsteen::recording::{Cadence, Recorder, RecordingStore};
    let dir = tempfile::tempdir().unwrap();
    let signer = NoteSigner::new(&stapsteen::secrets::generate_key("bench")).unwrap();
    let chain = std::sync::Arc::new(
        AuditChain::open(
            &dir.path().join("chain.jsonl"),
            signer,
            std::sync::Arc::new(stapsteen::clock::SystemClock),
            stapsteen::config::OnFailure::EndSessions,
        )
        .unwrap(),
    );
    let store = RecordingStore::new(dir.path().to_owned());
    let line = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\r\n";
    let chunk: Vec<u8> = line.repeat(4096 / line.len()).into_bytes();
    let count = (mib << 20) / chunk.len() as u64;
    let mut rates = Vec::new();
    for on in [true, false] {
        let id = SessionId::generate(jiff::Timestamp::now());
        let recorder = on.then(|| {
            let cadence = Cadence {
                interval: std::time::Duration::from_secs(10),
                bytes: 4 << 20,
            };
            Recorder::create(
                &store,
                &id,
                chain.clone(),
                cadence,
                (80, 24),
                "xterm",
                "bench",
            )
            .unwrap()
        });
        // As in the daemon: the recording's writes run on the runtime's blocking pool.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut t = rt
            .block_on(Transcript::start(
                &id,
                chain.clone(),
                recorder,
                true,
                true,
                &[],
            ))
            .unwrap();
        let start = Instant::now();
        rt.block_on(async {
            for _ in 0..count {
                t.output(&chunk).unwrap();
            }
            t.finish("end", "closed").wait().await.0.unwrap();
        });
        rates.push((count * chunk.len() as u64) as f64 / 1048576.0 / start.elapsed().as_secs_f64());
    }
    (rates[0], rates[1])
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !common::prerequisites() {
        return;
    }
    if std::env::var_os("STAPSTEEN_BENCH_CALLGRIND").is_some() {
        return callgrind();
    }
    let ciphers: Vec<String> = std::env::var("STAPSTEEN_BENCH_CIPHER")
        .unwrap_or_else(|_| "aes256-gcm@openssh.com,chacha20-poly1305@openssh.com".into())
        .split(',')
        .map(str::to_owned)
        .collect();
    let cipher = ciphers[0].clone();
    let mib: u64 = env_number("STAPSTEEN_BENCH_MIB", 1024);
    let runs = env_number("STAPSTEEN_BENCH_RUNS", 3).max(1);
    // The jump host and the direct route reach the target from the bastion namespace without a
    // grant's socket mark, so stapsteen's own table is off here.
    let mut env = Env::new(Options {
        firewall: false,
        extra_policy: "[[grant]]\nname = \"bench-forward\"\nadmins = [\"alice\"]\ntargets = [\"pacs01\"]\naccounts = [\"root\"]\nforward_ports = [11112]\n".into(),
        ..Options::default()
    });
    let sink = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/tcp_echo.py");
    env.spawn_in_mgmt(&["python3", sink, PACS01, "11112", "--sink"]);
    env.wait_port(&env.ns_mgmt.clone(), PACS01, 11112);
    let bed = Routes::start(&env, None);
    // Each route's command with `-c cipher` on every ssh in it (the jump hop's too).
    let with =
        |cipher: &str, cmd: &str| cmd.replace("ssh -F none", &format!("ssh -F none -c {cipher}"));
    let via_stapsteen = |cipher: &str| with(cipher, &bed.via_stapsteen);
    let via_jump = |cipher: &str| with(cipher, &bed.via_jump);
    let direct = |cipher: &str| with(cipher, &bed.direct);
    let to_bastion = |cipher: &str| with(cipher, &bed.to_bastion);
    let plain = |cipher: &str| with(cipher, &bed.plain);
    let push = |cmd: &str| format!("head -c {}M /dev/zero | {cmd} 'cat > /dev/null'", mib);

    println!(
        "stapsteen benchmark: {mib} MiB, ciphers {}, {runs} run(s) each, namespaces over veth",
        ciphers.join(" ")
    );
    let gib = mib as f64 / 1024.0;
    for cipher in &ciphers {
        let routes = [
            (
                "stapsteen",
                env.ns_admin.as_str(),
                via_stapsteen(cipher),
                Some(env.bastion_pid()),
            ),
            (
                "ProxyJump",
                env.ns_admin.as_str(),
                via_jump(cipher),
                Some(bed.jump_pid()),
            ),
            ("direct", env.ns_bastion.as_str(), direct(cipher), None),
        ];
        // Per route, the best run: (MiB/s, machine CPU s/GiB, bastion or jump CPU s/GiB).
        let mut best = [(0.0f64, 0.0f64, None::<f64>); 3];
        for run in 1..=runs {
            let mut rates = Vec::new();
            for (i, (name, ns, cmd, bastion)) in routes.iter().enumerate() {
                // Warm up (key exchange, page cache), then measure.
                sh(ns, &format!("{cmd} true"));
                let cpu0 = bastion.map(cpu_seconds);
                // STAPSTEEN_BENCH_PERF=FILE: a CPU profile of the bastion's first transfer.
                let perf = std::env::var("STAPSTEEN_BENCH_PERF")
                    .ok()
                    .filter(|_| i == 0 && run == 1 && *cipher == ciphers[0])
                    .map(|file| {
                        // STAPSTEEN_BENCH_PERF_EVENT: another event, e.g. page-faults.
                        let event = std::env::var("STAPSTEEN_BENCH_PERF_EVENT")
                            .unwrap_or_else(|_| "cpu-clock".into());
                        Command::new("perf")
                            .args(["record", "-e", &event, "-g", "-o", &file, "-p"])
                            .arg(env.bastion_pid().to_string())
                            .stderr(Stdio::null())
                            .spawn()
                            .unwrap()
                    });
                let busy0 = machine_busy_seconds();
                let (secs, _) = sh(ns, &push(cmd));
                if let Some(perf) = perf {
                    Command::new("kill")
                        .args(["-INT", &perf.id().to_string()])
                        .status()
                        .unwrap();
                    perf.wait_with_output().unwrap();
                }
                let busy = (machine_busy_seconds() - busy0) / gib;
                // Lets the jump host reap its session process, whose CPU time then counts.
                std::thread::sleep(std::time::Duration::from_millis(500));
                let rate = mib as f64 / secs;
                let own = bastion
                    .zip(cpu0)
                    .map(|(pid, c0)| (cpu_seconds(pid) - c0) / gib);
                let on_bastion = own.map_or(String::new(), |c| format!(", {name} process {c:.2}"));
                println!(
                    "  {cipher} run {run} throughput {name:<10} {rate:>8.1} MiB/s  ({secs:.2} s; CPU s/GiB: all {busy:.2}{on_bastion})"
                );
                if rate > best[i].0 {
                    best[i] = (rate, busy, own);
                }
                rates.push(rate);
            }
            println!(
                "  {cipher} run {run} ratio stapsteen/ProxyJump {:.2}",
                rates[0] / rates[1]
            );
        }
        println!("  {cipher}, best of {runs}:");
        for ((name, ..), (rate, busy, own)) in routes.iter().zip(best) {
            let on_bastion = own.map_or(String::new(), |c| format!(", {name} process {c:.2}"));
            println!(
                "    throughput {name:<10} {rate:>8.1} MiB/s  (CPU s/GiB of that run: all {busy:.2}{on_bastion})"
            );
        }
        println!(
            "    ratio stapsteen/ProxyJump {:.2}   stapsteen/direct {:.2}   ProxyJump/direct {:.2}",
            best[0].0 / best[1].0,
            best[0].0 / best[2].0,
            best[1].0 / best[2].0
        );
    }
    let (via_stapsteen, direct) = (via_stapsteen(&cipher), direct(&cipher));
    let via_jump = via_jump(&cipher);
    // Port forwards (direct-tcpip, as -L uses) to a TCP sink on the target's DICOM port.
    let forward_stapsteen = format!("{} -W pacs01:11112 alice@{BASTION}", to_bastion(&cipher));
    let forward_openssh = format!(
        "{} -p 2200 -W {PACS01}:11112 {}@{BASTION}",
        plain(&cipher),
        env.account
    );
    let mut forwards = Vec::new();
    for (name, cmd) in [
        ("stapsteen", forward_stapsteen.as_str()),
        ("OpenSSH", forward_openssh.as_str()),
    ] {
        let (secs, _) = sh(&env.ns_admin, &format!("head -c {mib}M /dev/zero | {cmd}"));
        let rate = mib as f64 / secs;
        println!("  forward    {name:<10} {rate:>8.1} MiB/s  ({secs:.2} s)");
        forwards.push(rate);
    }
    println!(
        "  ratio forward stapsteen/OpenSSH {:.2}",
        forwards[0] / forwards[1]
    );

    // Terminal output: base64 text, as a log scrolling by; the client writes it to /dev/null.
    let pty_mib: u64 = std::env::var("STAPSTEEN_BENCH_PTY_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let output = |cmd: &str, flag: &str| {
        format!(
            "{} 'head -c {}K /dev/zero | base64' > /dev/null",
            cmd.replacen("ssh -F none", &format!("ssh {flag} -F none"), 1),
            pty_mib * 1024 * 3 / 4
        )
    };
    let mut terminal = Vec::new();
    for (name, cmd, flag, bastion) in [
        (
            "stapsteen",
            via_stapsteen.as_str(),
            "-tt",
            Some(env.bastion_pid()),
        ),
        (
            "stapsteen",
            via_stapsteen.as_str(),
            "-T",
            Some(env.bastion_pid()),
        ),
        ("ProxyJump", via_jump.as_str(), "-tt", Some(bed.jump_pid())),
        ("ProxyJump", via_jump.as_str(), "-T", Some(bed.jump_pid())),
    ] {
        let cpu0 = bastion.map(cpu_seconds);
        let (secs, _) = sh(&env.ns_admin, &output(cmd, flag));
        // Lets the jump host reap its session process, whose CPU time then counts.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let rate = pty_mib as f64 / secs;
        let what = if flag == "-tt" {
            "pty, recorded+sealed"
        } else {
            "no pty, first max_channel_bytes recorded"
        };
        let what = if name == "ProxyJump" {
            what.split(',').next().unwrap_or(what)
        } else {
            what
        };
        let on_bastion = match (bastion, cpu0) {
            (Some(pid), Some(c0)) => format!(
                "; bastion CPU s/GiB {:.2}",
                (cpu_seconds(pid) - c0) / (pty_mib as f64 / 1024.0)
            ),
            _ => String::new(),
        };
        println!("  terminal   {name:<10} {what:<22} {rate:>8.1} MiB/s  ({secs:.2} s{on_bastion})");
        terminal.push(rate);
    }
    println!(
        "  ratio recording+sealing on/off: stapsteen pty / ProxyJump pty {:.2} (target >= 0.90)",
        terminal[0] / terminal[2]
    );
    let (on, off) = pipeline(pty_mib.min(256));
    println!(
        "  recording pipeline alone (one core): on {on:.0} MiB/s, off {off:.0} MiB/s; \
         at the pty rate above it takes {:.0}% of a core",
        100.0 * terminal[0] / on
    );
    routes::print_verified(&env);

    let rtt = |ns: &str, cmd: &str| -> serde_json::Value {
        let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bench/echo_rtt.py");
        let script = format!("python3 {driver} 300 -- {cmd} 'echo READY; exec cat >/dev/null'");
        let script = script.replacen("ssh -F none", "ssh -tt -F none", 1);
        let (_, out) = sh(ns, &script);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let a = rtt(&env.ns_admin, &via_stapsteen);
    let c = rtt(&env.ns_bastion, &direct);
    println!(
        "  echo round trip stapsteen  p50 {:.3} ms  p99 {:.3} ms",
        a["p50_ms"].as_f64().unwrap(),
        a["p99_ms"].as_f64().unwrap()
    );
    println!(
        "  echo round trip direct     p50 {:.3} ms  p99 {:.3} ms",
        c["p50_ms"].as_f64().unwrap(),
        c["p99_ms"].as_f64().unwrap()
    );
    println!(
        "  ratio p50 stapsteen/direct {:.2}",
        a["p50_ms"].as_f64().unwrap() / c["p50_ms"].as_f64().unwrap()
    );
}

/// Total instructions (Ir) in a callgrind dump, all threads.
fn callgrind_total(file: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no totals in {}", file.display()))
}

/// The bastion under callgrind: instructions per MiB of an exec session's input (aes256-gcm).
fn callgrind() {
    let mib = env_number("STAPSTEEN_BENCH_CALLGRIND_MIB", 32);
    let cipher = "aes256-gcm@openssh.com";
    let out = tempfile::Builder::new()
        .prefix("stapsteen-callgrind.")
        .tempdir()
        .unwrap();
    let dumps = out.path().join("callgrind.out");
    let env = Env::new(Options {
        bastion_prefix: vec![
            "valgrind".into(),
            "--tool=callgrind".into(),
            format!("--log-file={}", out.path().join("valgrind.log").display()),
            format!("--callgrind-out-file={}", dumps.display()),
            "--dump-instr=no".into(),
        ],
        extra_config: format!("[recording]\nmax_channel_bytes = {}\n", mib << 20),
        ..Options::default()
    });
    let pid = env.bastion_pid().to_string();
    let control = |arg: &str| {
        let status = Command::new("callgrind_control")
            .args([arg, &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "callgrind_control {arg} {pid}");
    };
    let session = format!(
        "ssh -F none -c {cipher} -o BatchMode=yes -o IdentityAgent={} -o UserKnownHostsFile={} alice@{BASTION} pacs01",
        env.path("agent.sock").display(),
        env.path("known_hosts").display()
    );
    // Warm up: valgrind translates the code paths of a session once.
    sh(&env.ns_admin, &format!("{session} true"));
    println!("stapsteen callgrind: bastion instructions (Ir, all threads), {cipher}, exec session");
    let mut totals = Vec::new();
    let ended = |count: usize| {
        let start = Instant::now();
        while env
            .audit()
            .iter()
            .filter(|e| e["code"] == "SESSION_END")
            .count()
            < count
        {
            assert!(start.elapsed().as_secs() < 120, "no SESSION_END");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    for (n, size) in [0, mib, 2 * mib].into_iter().enumerate() {
        ended(n + 1);
        control("-z");
        let (secs, _) = sh(
            &env.ns_admin,
            &format!("head -c {size}M /dev/zero | {session} 'cat > /dev/null'"),
        );
        // The session's end (recording sealed, SESSION_END written) is part of its cost.
        ended(n + 2);
        control("-d");
        // The newest dump is this session's.
        let dump = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.display()
                    .to_string()
                    .starts_with(&dumps.display().to_string())
            })
            .max_by_key(|p| p.metadata().unwrap().modified().unwrap())
            .unwrap();
        let total = callgrind_total(&dump);
        println!("  {size:>4} MiB: {total:>15} Ir  ({secs:.1} s under valgrind)");
        totals.push((total, dump.display().to_string()));
    }
    for (what, i) in [("recorded", 1), ("past the recording budget", 2)] {
        let per_mib = (totals[i].0 - totals[i - 1].0) as f64 / mib as f64;
        println!(
            "  {what}: {per_mib:.0} Ir/MiB (({} - {}) / {mib})",
            totals[i].0,
            totals[i - 1].0
        );
    }
    for (_, dump) in &totals[1..] {
        let annotate = Command::new("callgrind_annotate")
            .args(["--threshold=100", "--auto=no", dump])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&annotate.stdout);
        println!("  top functions of {dump} (self Ir):");
        for line in text
            .lines()
            .skip_while(|l| !l.contains("file:function"))
            .skip(2)
            .take(25)
        {
            println!("    {line}");
        }
    }
    // Kept for callgrind_annotate when asked for.
    if std::env::var_os("STAPSTEEN_BENCH_CALLGRIND_KEEP").is_some() {
        println!("  dumps kept in {}", out.keep().display());
    }
}
