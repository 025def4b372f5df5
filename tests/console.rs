//! The review console, end to end: a real SSH session is recorded, a reviewer enrols and logs in
//! with WebAuthn in Debian's chromium (virtual authenticator), finds and replays the session,
//! watches a live one and ends it; the admin's ssh sees the end. The console is reachable only
//! from the reviewer network, which the kernel enforces; malformed and oversized requests fail.
//! Screenshots go to target/console-artifacts/.

#![allow(clippy::unwrap_used, clippy::panic)]

#[macro_use]
mod common;

use std::path::Path;
use std::process::Command;

use common::console::{
    CONSOLE_IP, HOST, IDLE_SECONDS, artifacts, browser_login, console_options, curl,
    curl_logged_in, peak_rss, reset_peak, url,
};
use common::{Env, stdout};
use serde_json::json;

#[test]
fn reviewers_enrol_log_in_replay_watch_and_end_sessions_in_a_real_browser() {
    let env = testbed!(console_options(""), [common::Extra::Browser]);
    let reviewer_ns = env.ns_reviewer.clone().unwrap();
    let start = env.wait_audit("CONSOLE_START", |_| true);
    let spki = Env::detail(&start)["spki_sha256"]
        .as_str()
        .unwrap()
        .to_owned();

    // A finished session that typed a command and printed a known text.
    let out = env.ssh_pty(
        "alice",
        &["pacs01"],
        json!([
            ["expect", "# "],
            ["send", "echo FINDME-$((6*7))\r"],
            ["expect", "FINDME-42"],
            ["send", "exit\r"]
        ]),
    );
    assert!(stdout(&out).contains("FINDME-42"), "{}", stdout(&out));
    let done = env.wait_audit("SESSION_END", |_| true);
    let done_id = done["session"].as_str().unwrap().to_owned();

    // A command without a terminal: recorded too.
    let out = env.ssh("alice", &["pacs01", "true"], None);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let exec = env.wait_audit("SESSION_END", |e| e["session"] != done_id.as_str());
    let exec_id = exec["session"].as_str().unwrap().to_owned();

    // An sftp session: its file operations are listed on its page.
    std::fs::write(env.path("put.txt"), b"for the file audit\n").unwrap();
    let batch = format!(
        "put {} {}\n",
        env.path("put.txt").display(),
        env.path("SFTP-PUT.txt").display()
    );
    let out = env.run(
        "sftp",
        "agent.sock",
        &["-b", "-", &format!("alice+pacs01@{}", common::BASTION)],
        Some(batch.as_bytes()),
    );
    assert!(out.status.success(), "{}", common::stderr(&out));
    let sftp = env.wait_audit("SESSION_END", |e| {
        e["session"] != done_id.as_str() && e["session"] != exec_id.as_str()
    });
    let sftp_id = sftp["session"].as_str().unwrap().to_owned();

    // A session that keeps printing until it is ended.
    let live = env.spawn_ssh_pty(
        "alice",
        &[
            "pacs01",
            "for i in $(seq 1 300); do echo LIVE-MARK $i; sleep 1; done",
        ],
        json!([["expect", "LIVE-MARK 1"]]),
    );
    let started = env.wait_audit("SESSION_START", |e| {
        e["session"] != done_id.as_str()
            && e["session"] != exec_id.as_str()
            && e["session"] != sftp_id.as_str()
    });
    let live_id = started["session"].as_str().unwrap().to_owned();
    // Another, watched at the end while the console login idles.
    let _watched = env.spawn_ssh_pty(
        "alice",
        &[
            "pacs01",
            "for i in $(seq 1 300); do echo WATCH-MARK $i; sleep 1; done",
        ],
        json!([["expect", "WATCH-MARK 1"]]),
    );
    let started = env.wait_audit("SESSION_START", |e| {
        let s = e["session"].as_str().unwrap_or_default();
        s != done_id && s != exec_id && s != sftp_id && s != live_id
    });
    let watch_id = started["session"].as_str().unwrap().to_owned();

    let enrol = env.cli(&["console", "enrol", "c.visser"]);
    assert!(enrol.status.success(), "{}", common::stderr(&enrol));
    let code = stdout(&enrol).trim().to_owned();
    // The command's own audit event (its config sends events to stderr).
    assert!(
        common::stderr(&enrol).contains("CONSOLE_ENROL_CODE"),
        "{}",
        common::stderr(&enrol)
    );

    let reason = "INC-4711 unexpected export of studies";
    let browser = Command::new("ip")
        .args(["netns", "exec", &reviewer_ns, "node"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/e2e/console.mjs"
        ))
        .env("CONSOLE_URL", url(""))
        .env("CONSOLE_IP", CONSOLE_IP)
        .env("SPKI", &spki)
        .env("REVIEWER", "c.visser")
        .env("CODE", &code)
        .env("DONE_ID", &done_id)
        .env("LIVE_ID", &live_id)
        .env("WATCH_ID", &watch_id)
        .env("EXEC_ID", &exec_id)
        .env("SFTP_ID", &sftp_id)
        .env("FIND", "FINDME-42")
        .env("KILL_REASON", reason)
        .env("IDLE_SECONDS", IDLE_SECONDS.to_string())
        .env("ARTIFACTS", artifacts())
        .output()
        .unwrap();
    let report = format!("{}{}", stdout(&browser), common::stderr(&browser));
    println!("{report}");
    if !browser.status.success() {
        let events: Vec<String> = env
            .audit()
            .iter()
            .filter(|e| {
                e["code"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("CONSOLE_") || c.starts_with("SESSION_"))
            })
            .map(|e| e.to_string())
            .collect();
        panic!(
            "browser test failed:\n{report}\naudit:\n{}",
            events.join("\n")
        );
    }

    // The admin saw the session end, with the reviewer and the reason.
    let live_out = live.join().unwrap();
    let seen = stdout(&live_out);
    assert!(
        seen.contains(&format!("session ended by reviewer c.visser: {reason}")),
        "{seen}"
    );
    let kill = env.wait_audit("CONSOLE_KILL", |e| e["admin"] == "alice");
    assert_eq!(kill["session"], live_id.as_str());
    assert_eq!(kill["reason"], reason);
    for code in [
        "CONSOLE_ENROLLED",
        "CONSOLE_ENROL_FAILED",
        "CONSOLE_LOGIN",
        "CONSOLE_LOGIN_FAILED",
        "CONSOLE_VIEW",
        "CONSOLE_DOWNLOAD",
        "CONSOLE_EXPIRED",
    ] {
        let e = env.wait_audit(code, |_| true);
        assert!(
            e["source"].as_str().unwrap().starts_with("10.77.3.2:"),
            "{e}"
        );
    }
    let views: Vec<_> = env
        .audit()
        .into_iter()
        .filter(|e| e["code"] == "CONSOLE_VIEW" && Env::detail(e)["reviewer"] == "c.visser")
        .collect();
    assert!(views.len() >= 5, "{views:?}");

    // The evidence bundle holds the recording, its signed entries and the key, and checks out.
    let tar = artifacts().join("evidence.tar");
    let list = Command::new("tar").arg("-tf").arg(&tar).output().unwrap();
    for f in [
        "recording.cast",
        "recording.idx",
        "session.json",
        "audit-entries.jsonl",
        "audit-key.vkey",
        "report.txt",
    ] {
        assert!(
            stdout(&list).contains(&format!("{done_id}/{f}")),
            "{}",
            stdout(&list)
        );
    }
    let report = Command::new("tar")
        .arg("-xOf")
        .arg(&tar)
        .arg(format!("{done_id}/report.txt"))
        .output()
        .unwrap();
    assert!(
        stdout(&report).contains("integrity    sealed"),
        "{}",
        stdout(&report)
    );
    // Each entry in it is the signed note from the chain, which the bundle's key opens (the
    // entries come from the console's index, which must keep the notes, not only their fields).
    let part = |f: &str| {
        let out = Command::new("tar")
            .arg("-xOf")
            .arg(&tar)
            .arg(format!("{done_id}/{f}"))
            .output()
            .unwrap();
        stdout(&out)
    };
    let verifier =
        stapsteen::audit::NoteVerifier::from_vkey(part("audit-key.vkey").trim()).unwrap();
    let mut kinds = Vec::new();
    for line in part("audit-entries.jsonl").lines() {
        let note: serde_json::Value = serde_json::from_str(line).unwrap();
        let opened = verifier
            .open(note["note"].as_str().unwrap().as_bytes())
            .unwrap_or_else(|e| panic!("entry does not verify ({e}): {line}"));
        let entry = stapsteen::audit::parse_entry(&opened).unwrap();
        assert_eq!(
            entry.session.as_ref().map(|s| s.as_str()),
            Some(done_id.as_str())
        );
        kinds.push(entry.kind.as_str());
    }
    assert!(
        kinds.contains(&"start") && kinds.contains(&"end"),
        "{kinds:?}"
    );
    let cast = Command::new("tar")
        .arg("-xOf")
        .arg(&tar)
        .arg(format!("{done_id}/recording.cast"))
        .output()
        .unwrap();
    assert_eq!(
        cast.stdout,
        std::fs::read(env.recordings_dir().join(format!("{done_id}.cast"))).unwrap()
    );
}

#[test]
fn the_console_refuses_other_networks_old_tls_and_bad_requests() {
    // A reviewer whose one-time code comes with the policy, as on an appliance without a shell.
    let made = Command::new(common::bin())
        .args(["console", "enrol", "--for-policy", "s.smit"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", common::stderr(&made));
    let policy_code = stdout(&made).trim().to_owned();
    let line = common::stderr(&made)
        .lines()
        .find(|l| l.starts_with("enrolment = "))
        .unwrap()
        .to_owned();
    let env = testbed!(console_options(&format!(
        "[[reviewer]]\nname = \"s.smit\"\n{line}\n"
    )));
    let reviewer = env.ns_reviewer.clone().unwrap();
    env.wait_audit("CONSOLE_START", |_| true);

    // From the reviewer network it answers; from the admin network the kernel drops the packets.
    let (rc, status, _) = curl(&env, &reviewer, &[&url("/login")]);
    assert_eq!((rc, status.as_str()), (0, "200"));
    let (rc, status, _) = curl(
        &env,
        &env.ns_admin,
        &["--connect-timeout", "3", &url("/login")],
    );
    assert_eq!(
        (rc, status.as_str()),
        (28, "000"),
        "admin network reached the console"
    );
    let ruleset = Command::new("ip")
        .args([
            "netns",
            "exec",
            &env.ns_bastion,
            "nft",
            "list",
            "table",
            "inet",
            "stapsteen",
        ])
        .output()
        .unwrap();
    assert!(
        stdout(&ruleset).contains("ip saddr @reviewer4 tcp dport 8443 accept"),
        "{}",
        stdout(&ruleset)
    );

    // TLS 1.3 only; no plain HTTP.
    // curl's exit code 35: the TLS handshake failed.
    let (rc, status, _) = curl(&env, &reviewer, &["--tls-max", "1.2", &url("/login")]);
    assert_eq!((rc, status.as_str()), (35, "000"), "TLS 1.2");
    // A plain request gets a TLS alert back, which is no HTTP answer.
    let out = Command::new("ip")
        .args(["netns", "exec", &reviewer, "curl", "-sS", "--max-time", "5"])
        .args(["--resolve", &format!("{HOST}:8443:{CONSOLE_IP}")])
        .arg(format!("http://{HOST}:8443/login"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    assert!(
        common::stderr(&out).contains("Received HTTP/0.9 when not allowed"),
        "{}",
        common::stderr(&out)
    );

    // Security headers on every answer.
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &reviewer,
            "curl",
            "-sk",
            "-D",
            "-",
            "-o",
            "/dev/null",
        ])
        .args([
            "--resolve",
            &format!("{HOST}:8443:{CONSOLE_IP}"),
            &url("/login"),
        ])
        .output()
        .unwrap();
    let headers = stdout(&out).to_lowercase();
    for h in [
        "strict-transport-security: max-age=63072000",
        "content-security-policy: default-src 'none'",
        "x-content-type-options: nosniff",
        "x-frame-options: deny",
    ] {
        assert!(headers.contains(h), "{h} missing:\n{headers}");
    }

    let json = ["-H", "content-type: application/json", "-H"];
    let origin = format!("origin: {}", url(""));
    let post = |path: &str, extra: &[&str]| {
        let mut args: Vec<&str> = json.to_vec();
        args.push(&origin);
        args.extend(extra);
        args.push("-X");
        args.push("POST");
        let u = url(path);
        args.push(&u);
        curl(&env, &reviewer, &args)
    };
    // Malformed and oversized requests.
    assert_eq!(post("/login/start", &["-d", "{not json"]).1, "400");
    assert_eq!(
        post("/login/start", &["-d", r#"{"name":"c.visser","x":1}"#]).1,
        "422"
    );
    let big = env.path("big.json");
    std::fs::write(&big, format!("{{\"name\":\"{}\"}}", "a".repeat(100 << 10))).unwrap();
    let at_big = format!("@{}", big.display());
    // Repeated: the answer must not lose a race against the close (the server reads the body
    // to its end before answering, so the close is not a reset).
    for _ in 0..20 {
        assert_eq!(
            post("/login/start", &["-H", "expect:", "--data-binary", &at_big]).1,
            "413"
        );
    }
    let huge_header = format!("x-filler: {}", "b".repeat(64 * 1024));
    // 431, then the server closes; when curl is still sending, the reset of that close can
    // overtake the answer (curl's 52 empty reply, 55 send error, 56 receive error).
    let (rc, status, _) = curl(&env, &reviewer, &["-H", &huge_header, &url("/login")]);
    assert!(
        (rc, status.as_str()) == (0, "431") || (matches!(rc, 52 | 55 | 56) && status == "000"),
        "a 64 KiB header: curl exit {rc}, status {status}"
    );
    // Path traversal, sent as is: the public asset route and the login-guarded ones.
    for path in [
        "/assets/../../../../etc/passwd",
        "/assets/..%2F..%2FCargo.toml",
        "/assets/%2e%2e/%2e%2e/Cargo.toml",
        "/sessions/../../../etc/passwd",
    ] {
        let (_, status, body) = curl(&env, &reviewer, &["--path-as-is", &url(path)]);
        assert!(
            matches!(status.as_str(), "404" | "303" | "400"),
            "{path}: {status}"
        );
        assert!(
            !body.contains("root:") && !body.contains("[package]"),
            "{path}: {body}"
        );
    }
    // Unknown reviewers and cross-origin posts are refused and audited.
    let (_, status, body) = post("/login/start", &["-d", r#"{"name":"mallory"}"#]);
    assert_eq!(status, "403", "{body}");
    let (_, status, _) = curl(
        &env,
        &reviewer,
        &[
            "-H",
            "origin: https://evil.example",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"name":"c.visser"}"#,
            &url("/login/start"),
        ],
    );
    assert_eq!(status, "403");
    env.wait_audit("CONSOLE_REFUSED", |e| {
        e["reason"] == "request not from the console's own origin"
    });
    // Enrolment with a wrong code counts against the code.
    let enrol = env.cli(&["console", "enrol", "c.visser"]);
    assert!(enrol.status.success());
    let (_, status, body) = post(
        "/enrol/start",
        &[
            "-d",
            r#"{"name":"c.visser","code":"aaaaa-bbbbb-ccccc-ddddd"}"#,
        ],
    );
    assert_eq!(status, "403");
    assert!(body.contains("wrong enrolment code"), "{body}");

    // The policy's code starts an enrolment; a wrong one does not.
    let (_, status, body) = post(
        "/enrol/start",
        &[
            "-d",
            r#"{"name":"s.smit","code":"aaaaa-bbbbb-ccccc-ddddd"}"#,
        ],
    );
    assert_eq!(status, "403", "{body}");
    let good = format!(r#"{{"name":"s.smit","code":"{policy_code}"}}"#);
    let (_, status, body) = post("/enrol/start", &["-d", &good]);
    assert_eq!(status, "200", "{body}");
    let options: serde_json::Value = serde_json::from_str(&body).unwrap();
    let public_key = &options["options"]["publicKey"];
    assert_eq!(public_key["rp"]["id"], HOST);
    assert_eq!(
        public_key["authenticatorSelection"]["userVerification"],
        "required"
    );
    assert_eq!(
        public_key["authenticatorSelection"]["authenticatorAttachment"],
        "cross-platform"
    );

    // `console enrol` as root keeps the files readable by the daemon's user, who owns the
    // state directory (on the appliance a dynamic user; here `nobody` stands in).
    let console_dir = env.path("state/console");
    std::os::unix::fs::chown(&console_dir, Some(65534), Some(65534)).unwrap();
    assert!(env.cli(&["console", "enrol", "c.visser"]).status.success());
    let meta = std::fs::metadata(console_dir.join("enrolment.json")).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

#[test]
fn a_slow_request_body_is_cut_off() {
    let env = testbed!(console_options(""));
    let reviewer = env.ns_reviewer.clone().unwrap();
    env.wait_audit("CONSOLE_START", |_| true);
    // Positive control: a body that comes gets its answer (a refusal of the unknown reviewer).
    let (_, status, _) = curl(
        &env,
        &reviewer,
        &[
            "-H",
            "content-type: application/json",
            "-H",
            &format!("origin: {}", url("")),
            "-d",
            r#"{"name":"nobody"}"#,
            &url("/login/start"),
        ],
    );
    assert_eq!(status, "403");
    // A body that never ends: the head announces 100 bytes, one comes.
    let out = Command::new("ip")
        .args(["netns", "exec", &reviewer, "python3"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/slow_body.py"
        ))
        .args([CONSOLE_IP, "8443", HOST, "/login/start", "40"])
        .output()
        .unwrap();
    let answer = stdout(&out);
    let (line, took) = answer.trim().split_once('|').unwrap();
    assert!(line.starts_with("HTTP/1.1 408"), "{answer}");
    let took: f64 = took.parse().unwrap();
    assert!(
        (9.0..20.0).contains(&took),
        "answered after {took} s, not at the 10 s body timeout"
    );
}

#[test]
fn one_source_cannot_hold_every_console_connection() {
    let env = testbed!(console_options(""));
    let reviewer = env.ns_reviewer.clone().unwrap();
    env.wait_audit("CONSOLE_START", |_| true);
    let out = Command::new("ip")
        .args([
            "-n",
            &reviewer,
            "addr",
            "add",
            "10.77.3.3/24",
            "dev",
            "eth0",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    // 32 silent connections from one address hold its share (each until the TLS handshake
    // timeout); one more from there is closed at once.
    let mut hold = Command::new("ip")
        .args(["netns", "exec", &reviewer, "python3"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/hold_tcp.py"
        ))
        .args([CONSOLE_IP, "8443", "10.77.3.2", "32", "8"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(hold.stdout.take().unwrap()));
    assert_eq!(lines.next().unwrap().unwrap(), "held 32");
    assert_eq!(lines.next().unwrap().unwrap(), "extra closed");
    let refused = env.wait_audit("CONSOLE_REFUSED", |e| {
        e["reason"] == "too many connections from this source"
    });
    assert!(
        refused["source"]
            .as_str()
            .unwrap()
            .starts_with("10.77.3.2:")
    );
    // Meanwhile a reviewer from another address is served.
    let (rc, status, _) = curl(
        &env,
        &reviewer,
        &["--interface", "10.77.3.3", &url("/login")],
    );
    assert_eq!((rc, status.as_str()), (0, "200"));
    let _ = hold.kill();
    let _ = hold.wait();
}

/// TCP connections to the console the bastion has established.
fn console_connections(env: &Env) -> usize {
    let out = Command::new("ip")
        .args(["netns", "exec", &env.ns_bastion])
        .args(["ss", "-Htn", "state", "established", "sport", "=", ":8443"])
        .output()
        .unwrap();
    assert!(out.status.success());
    stdout(&out).lines().count()
}

#[test]
fn a_client_that_stops_reading_is_cut_off() {
    let env = testbed!(console_options(""));
    let reviewer = env.ns_reviewer.clone().unwrap();
    env.wait_audit("CONSOLE_START", |_| true);
    // Asks for the player (220 KiB) 40 times over with a 4 KiB receive buffer and reads nothing:
    // the answers fill both sides' buffers and the console's write waits.
    let mut stall = Command::new("ip")
        .args(["netns", "exec", &reviewer, "python3"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/slow_read.py"
        ))
        .args([
            CONSOLE_IP,
            "8443",
            HOST,
            "/assets/asciinema-player.min.js",
            "40",
            "90",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stall.stdout.take().unwrap()));
    assert_eq!(lines.next().unwrap().unwrap(), "sent");
    // Positive control: the connection is there and the console answers others meanwhile.
    assert_eq!(console_connections(&env), 1);
    let (rc, status, _) = curl(&env, &reviewer, &[&url("/login")]);
    assert_eq!((rc, status.as_str()), (0, "200"));
    // Closed once its answer has waited 30 s for the reader (the write stall limit).
    let start = std::time::Instant::now();
    while console_connections(&env) > 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(50),
            "the console still holds a connection whose client stopped reading"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let took = start.elapsed().as_secs_f64();
    assert!(took > 20.0, "closed after {took} s, before the stall limit");
    let _ = stall.kill();
    let _ = stall.wait();
}

/// Asserts that the bastion's peak resident memory grows less than `bound` KiB while `step`
/// runs. The daemon's own background work (the index catching up every few seconds) can fall
/// inside one measurement, so a step over the bound is measured once more: a step that itself
/// needs the memory (reading a recording whole) exceeds the bound both times.
fn peak_growth_under(env: &Env, what: &str, bound: u64, mut step: impl FnMut()) {
    let mut grown = Vec::new();
    for _ in 0..2 {
        reset_peak(env);
        let before = peak_rss(env);
        step();
        let grew = peak_rss(env).saturating_sub(before);
        println!("{what}: peak RSS grew {grew} KiB");
        if grew < bound {
            return;
        }
        grown.push(grew);
    }
    panic!("the {what} took {grown:?} KiB more (bound {bound} KiB)");
}

/// The last 4 KiB of a file.
fn recorded_tail(path: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).unwrap();
    let _ = f.seek(SeekFrom::End(-4096));
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).unwrap();
    String::from_utf8_lossy(&tail).into_owned()
}

/// Live view, `.cast` download, evidence bundle, full-text search and session page (markers) of
/// a 200 MiB recording: the bastion's peak memory grows by far less than the recording (each
/// would take at least its size if it read the recording whole).
#[test]
fn a_large_recording_streams_to_the_console_in_bounded_memory() {
    const MIB: u64 = 200;
    const BOUND_KIB: u64 = 64 << 10;
    let mut opts = console_options("");
    // A command's output is recorded whole up to this many bytes.
    opts.extra_config += "[recording]\nmax_channel_bytes = 268435456\n";
    // The login outlasts making the recording.
    opts.extra_config = opts.extra_config.replace(
        &format!("idle_timeout = \"{IDLE_SECONDS}s\""),
        "idle_timeout = \"600s\"",
    );
    // Memory the allocator frees goes back at once, so that no step reuses what an earlier
    // one left and each step's growth shows.
    opts.bastion_env.push(("MIMALLOC_PURGE_DELAY", "0"));
    let env = testbed!(opts, [common::Extra::Browser]);
    let start = env.wait_audit("CONSOLE_START", |_| true);
    let spki = Env::detail(&start)["spki_sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let cookie = browser_login(&env, &spki);

    let release = env.path("release");
    let big = env.spawn_ssh(
        "agent.sock",
        &[
            &format!("alice@{}", common::BASTION),
            "pacs01",
            &format!(
                "head -c {} /dev/zero | tr '\\0' x; echo; echo BIG-$((6*7)); {}",
                MIB << 20,
                common::held_session(&env.path("big-started"), &release, "released")
            ),
        ],
    );
    let started = env.wait_audit("SESSION_START", |_| true);
    let id = started["session"].as_str().unwrap().to_owned();
    // Until the recording holds the last line (the recorder writes behind the session).
    let cast = env.recordings_dir().join(format!("{id}.cast"));
    let waiting = std::time::Instant::now();
    while !recorded_tail(&cast).contains("BIG-42") {
        assert!(
            waiting.elapsed() < std::time::Duration::from_secs(120),
            "the recording never got its last line"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // The live view's first frame: the screen as it is now, which ends with the last line.
    let live = env.path("live.txt");
    peak_growth_under(&env, "live view", BOUND_KIB, || {
        let (rc, status) =
            curl_logged_in(&env, &cookie, 20, &format!("/sessions/{id}/live"), &live);
        let seen = std::fs::read_to_string(&live).unwrap();
        // Cut off by --max-time while the session runs on (28: timed out).
        assert_eq!(
            (rc, status.as_str()),
            (28, "200"),
            "{}",
            &seen[..seen.len().min(500)]
        );
        let first = seen.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("data: {") && first.contains("BIG-42") && first.len() < 1 << 20,
            "{}",
            &first[..first.len().min(500)]
        );
    });

    std::fs::write(&release, b"").unwrap();
    assert!(big.join().unwrap().status.success());
    env.wait_audit("SESSION_END", |e| e["session"] == id.as_str());
    let size = std::fs::metadata(&cast).unwrap().len();
    assert!(size > MIB << 20, "the recording holds {size} bytes");

    // The .cast download: the file as it is.
    let got = env.path("got.cast");
    let sha = |p: &Path| {
        let out = Command::new("sha256sum").arg(p).output().unwrap();
        stdout(&out).split_whitespace().next().unwrap().to_owned()
    };
    peak_growth_under(&env, "cast download", BOUND_KIB, || {
        let (rc, status) = curl_logged_in(
            &env,
            &cookie,
            300,
            &format!("/sessions/{id}/cast?download=1"),
            &got,
        );
        assert_eq!((rc, status.as_str()), (0, "200"));
    });
    assert_eq!(std::fs::metadata(&got).unwrap().len(), size);
    assert_eq!(sha(&got), sha(&cast));

    // The evidence bundle: the recording in it is the file, and it checks out.
    let tar = env.path("evidence.tar");
    peak_growth_under(&env, "evidence bundle", BOUND_KIB, || {
        let (rc, status) = curl_logged_in(
            &env,
            &cookie,
            300,
            &format!("/sessions/{id}/evidence"),
            &tar,
        );
        assert_eq!((rc, status.as_str()), (0, "200"));
    });
    let report = Command::new("tar")
        .arg("-xOf")
        .arg(&tar)
        .arg(format!("{id}/report.txt"))
        .output()
        .unwrap();
    let report = stdout(&report);
    assert!(report.contains("integrity    sealed"), "{report}");
    assert!(
        report.contains(&format!("{}  recording.cast", sha(&cast))),
        "{report}"
    );
    let inside = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -xOf '{}' '{id}/recording.cast' | sha256sum",
            tar.display()
        ))
        .output()
        .unwrap();
    assert!(
        stdout(&inside).starts_with(&sha(&cast)),
        "{}",
        stdout(&inside)
    );
    // The entry of the download that wrote this file (a step measured twice downloads twice).
    let tar_sha = sha(&tar);
    env.wait_audit("CONSOLE_DOWNLOAD", |e| {
        Env::detail(e)["file"] == "evidence bundle" && Env::detail(e)["sha256"] == tar_sha.as_str()
    });

    // A page number the page links could not add one to is refused, not a panic.
    for page in ["18446744073709551615", "-1"] {
        let out = env.path("page.html");
        let path = format!("/sessions?page={page}");
        let (rc, status) = curl_logged_in(&env, &cookie, 30, &path, &out);
        assert_eq!((rc, status.as_str()), (0, "400"), "page={page}");
    }
    let (rc, status) = curl_logged_in(&env, &cookie, 30, "/sessions?page=1", &env.path("p.html"));
    assert_eq!((rc, status.as_str()), (0, "200"), "positive control");

    // The full-text search finds the last line, and the session page builds its markers.
    for (what, path) in [
        ("search", "/sessions?q=BIG-42".to_owned()),
        ("session page", format!("/sessions/{id}")),
    ] {
        let page = env.path("page.html");
        peak_growth_under(&env, what, BOUND_KIB, || {
            let (rc, status) = curl_logged_in(&env, &cookie, 300, &path, &page);
            assert_eq!((rc, status.as_str()), (0, "200"), "{what}");
        });
        let html = std::fs::read_to_string(&page).unwrap();
        assert!(
            html.contains(&id),
            "{what}: {}",
            &html[..html.len().min(500)]
        );
    }
}
