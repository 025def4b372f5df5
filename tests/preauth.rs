//! Before login: hostile clients that never authenticate are cut off at the login grace (5 s in
//! the test bed) and cannot lock real admins out, in total or from one source.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[macro_use]
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{BASTION, Env, Options, stderr, stdout};

const GRACE: f64 = 5.0;

fn support(name: &str) -> String {
    format!("{}/tests/support/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A helper process whose stdout lines arrive on a channel.
struct Helper {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Helper {
    fn spawn(cmd: &mut Command) -> Helper {
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let out: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Helper { child, lines }
    }

    /// The next line, waiting at most `secs`.
    fn line(&self, secs: u64) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(secs))
            .expect("helper said nothing in time")
    }

    /// Every further line until the process ends (bounded by the helper's own time limit).
    fn rest(mut self) -> Vec<String> {
        let status = self.child.wait().unwrap();
        assert!(status.success(), "helper failed: {status}");
        let mut lines = Vec::new();
        // The reader thread ends at the pipe's end, just after the process.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(10)) {
            lines.push(l);
        }
        lines
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Hostile clients from `bind` in the admin namespace (see tests/support/preauth_client.py),
/// running for at most `secs`.
fn hostile(env: &Env, bind: &str, secs: u32, modes: &[&str]) -> Helper {
    Helper::spawn(
        Command::new("ip")
            .args(["netns", "exec", &env.ns_admin, "python3"])
            .arg(support("preauth_client.py"))
            .args([BASTION, bind, &secs.to_string()])
            .args(modes),
    )
}

/// TCP connections to the front door the bastion still has established.
fn established_at_bastion(env: &Env) -> usize {
    let out = Command::new("ip")
        .args(["netns", "exec", &env.ns_bastion])
        .args(["ss", "-Htn", "state", "established", "sport", "=", ":22"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).lines().count()
}

/// Adds `addr` (e.g. "10.77.1.3/24") to the admin namespace: another host on the admin network.
fn another_host(env: &Env, addr: &str) {
    let out = Command::new("ip")
        .args(["-n", &env.ns_admin, "addr", "add", addr, "dev", "eth0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A real admin logs in and runs a command on a target.
fn admin_works(env: &Env) {
    let start = Instant::now();
    let out = env.ssh("alice", &["pacs01", "echo", "admin-in"], None);
    assert_eq!(stdout(&out), "admin-in\n", "{}", stderr(&out));
    eprintln!("admin login and command: {:?}", start.elapsed());
}

#[test]
fn login_grace_cuts_off_every_kind_of_stalled_client_and_frees_its_slot() {
    let modes = ["silent", "version", "ignore", "half", "kexinit"];
    let env = testbed!(Options {
        // The five raw clients and one stock ssh stalled before its signature take every slot.
        max_unauthenticated: modes.len() + 1,
        ..Default::default()
    });
    // A stock ssh whose key (alice's, so the bastion asks for its signature) never signs.
    let agent = Helper::spawn(
        Command::new("python3")
            .arg(support("stall_agent.py"))
            .arg(env.path("stall.sock"))
            .arg(env.path("alice_key.sk.pub")),
    );
    assert_eq!(agent.line(10), "listening");
    let mut args = env.ssh_opts("stall.sock");
    args.extend([format!("alice@{BASTION}"), "pacs01".into(), "true".into()]);
    let stalled_ssh = Helper::spawn(
        Command::new("ip")
            .args(["netns", "exec", &env.ns_admin, "ssh"])
            .args(&args)
            .stdin(Stdio::null())
            .stderr(Stdio::null()),
    );
    let ssh_started = Instant::now();
    assert_eq!(agent.line(10), "sign requested");

    let clients = hostile(&env, "10.77.1.2", 20, &modes);
    assert_eq!(clients.line(10), format!("ready {}", modes.len()));
    // Every slot is taken: one more connection is closed at once.
    let more = hostile(&env, "10.77.1.2", 5, &["silent"]);
    assert_eq!(more.rest(), ["refused 0", "ready 0"]);
    env.wait_audit("CONN_LIMIT", |e| {
        e["reason"] == "too many unauthenticated connections"
    });

    // Each is closed by the bastion when its grace ends, not before and not much after.
    let report = clients.rest();
    assert_eq!(report.len(), modes.len(), "{report:?}");
    for line in &report {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f[0], "closed", "{report:?}");
        let secs: f64 = f[3].parse().unwrap();
        assert!(
            (GRACE - 0.5..GRACE + 3.0).contains(&secs),
            "{} closed after {secs} s: {report:?}",
            f[2]
        );
    }
    // The stalled ssh too: its connection is gone at the bastion (the ssh itself still waits on
    // its agent, which never answers).
    let start = Instant::now();
    while established_at_bastion(&env) > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "connections still established at the bastion after the grace"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ssh_started.elapsed() >= Duration::from_secs_f64(GRACE - 0.5));
    let timeouts = env
        .audit()
        .iter()
        .filter(|e| e["code"] == "LOGIN_TIMEOUT")
        .count();
    assert_eq!(
        timeouts,
        modes.len() + 1,
        "one LOGIN_TIMEOUT for each raw client and the stalled ssh"
    );
    drop(stalled_ssh);
    // The slots are free again: a real admin gets in.
    admin_works(&env);
}

#[test]
fn one_source_cannot_take_every_slot() {
    let env = testbed!(Options {
        max_unauthenticated: 4,
        max_unauthenticated_per_source: 3,
        ..Default::default()
    });
    // A second host in the admin network.
    another_host(&env, "10.77.1.3/24");

    // The hostile host gets its share and no more (the total would still have room).
    let held = hostile(&env, "10.77.1.3", 30, &["version"; 4]);
    assert_eq!(held.line(10), "refused 3");
    assert_eq!(held.line(10), "ready 3");
    let refused = env.wait_audit("CONN_LIMIT", |e| {
        e["reason"] == "too many unauthenticated connections from this source"
    });
    assert!(
        refused["source"]
            .as_str()
            .unwrap()
            .starts_with("10.77.1.3:"),
        "{refused}"
    );
    // While it holds them, a real admin from another address gets in.
    admin_works(&env);
    assert!(
        held.lines.try_recv().is_err(),
        "the hostile connections are still held while the admin logs in"
    );
    // Once they are cut off, the hostile host gets its share again.
    let report = held.rest();
    assert_eq!(report.iter().filter(|l| l.starts_with("closed")).count(), 3);
    let again = hostile(&env, "10.77.1.3", 1, &["version"; 3]);
    assert_eq!(again.line(10), "ready 3");
}

/// With every unauthenticated place held, a real admin gets in at once (well within the grace
/// the held connections would otherwise keep them for) by taking one; the `CONN_LIMIT` event
/// naming the source that gave it up.
fn admin_takes_a_place(env: &Env) -> serde_json::Value {
    let start = Instant::now();
    admin_works(env);
    assert!(
        start.elapsed() < Duration::from_secs_f64(GRACE),
        "{:?}",
        start.elapsed()
    );
    env.wait_audit("CONN_LIMIT", |e| {
        e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("oldest closed for a newcomer"))
    })
}

#[test]
fn several_sources_together_cannot_keep_an_admin_out() {
    let env = testbed!(Options {
        max_unauthenticated: 4,
        max_unauthenticated_per_source: 3,
        ..Default::default()
    });
    another_host(&env, "10.77.1.3/24");
    another_host(&env, "10.77.1.4/24");
    // Two hostile hosts take every place between them.
    let first = hostile(&env, "10.77.1.3", 30, &["version"; 2]);
    assert_eq!(first.line(10), "ready 2");
    let second = hostile(&env, "10.77.1.4", 30, &["version"; 2]);
    assert_eq!(second.line(10), "ready 2");
    // Positive control: the total is full (the host's own share is not), and a host holding as
    // many as the busiest is refused rather than taking a place from one of them.
    let third = hostile(&env, "10.77.1.3", 5, &["version"]);
    assert_eq!(third.line(10), "refused 0");
    // A real admin from a third address takes the oldest place of a busiest source.
    let evicted = admin_takes_a_place(&env);
    let source = evicted["source"].as_str().unwrap();
    assert!(
        source.starts_with("10.77.1.3:") || source.starts_with("10.77.1.4:"),
        "{evicted}"
    );
}

#[test]
fn many_sources_cannot_keep_out_an_admin_who_logged_in_before() {
    let env = testbed!(Options {
        max_unauthenticated: 4,
        max_unauthenticated_per_source: 1,
        ..Default::default()
    });
    // The admin's address has logged in before.
    admin_works(&env);
    let hosts = [
        "10.77.1.3",
        "10.77.1.4",
        "10.77.1.5",
        "10.77.1.6",
        "10.77.1.7",
    ];
    for h in hosts {
        another_host(&env, &format!("{h}/24"));
    }
    // Four hostile hosts hold one place each: every source holds as many.
    let held: Vec<Helper> = hosts[..4]
        .iter()
        .map(|h| hostile(&env, h, 30, &["version"]))
        .collect();
    for h in &held {
        assert_eq!(h.line(10), "ready 1");
    }
    // Positive control: a host that never logged in is refused.
    let stranger = hostile(&env, hosts[4], 5, &["version"]);
    assert_eq!(stranger.line(10), "refused 0");
    // The admin's address takes a hostile host's place at once.
    let evicted = admin_takes_a_place(&env);
    assert!(
        !evicted["source"]
            .as_str()
            .unwrap()
            .starts_with("10.77.1.2:")
    );
}

#[test]
fn a_flood_of_refusals_is_summed_up_not_logged_one_by_one() {
    let env = testbed!(Options {
        max_unauthenticated_per_source: 1,
        extra_limits: "audit_events_per_source = 3\naudit_window = \"2s\"\n".into(),
        ..Default::default()
    });
    another_host(&env, "10.77.1.3/24");
    // One connection holds the source's place; the next 30 are refused (CONN_LIMIT each).
    let flood = hostile(&env, "10.77.1.3", 1, &["version"; 31]);
    let mut refused = 0;
    loop {
        let line = flood.line(10);
        if line.starts_with("ready") {
            assert_eq!(line, "ready 1");
            break;
        }
        refused += 1;
    }
    assert_eq!(refused, 30);
    // Every refusal is in the log, one by one or in a summary, and the summary comes when the
    // window ends although the flood has stopped.
    let from_flood = |e: &serde_json::Value| {
        e["source"]
            .as_str()
            .is_some_and(|s| s == "10.77.1.3" || s.starts_with("10.77.1.3:"))
    };
    let start = Instant::now();
    let (logged, summed) = loop {
        let audit = env.audit();
        let logged = audit
            .iter()
            .filter(|e| e["code"] == "CONN_LIMIT" && from_flood(e))
            .count();
        let summed: u64 = audit
            .iter()
            .filter(|e| e["code"] == "CONN_LIMIT_SUPPRESSED" && from_flood(e))
            .map(|e| Env::detail(e)["count"].as_u64().unwrap())
            .sum();
        if logged as u64 + summed == 30 {
            break (logged, summed);
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{logged} logged and {summed} summed of 30 refusals"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The flood spans one window or two.
    assert!((3..=6).contains(&logged), "{logged} logged one by one");
    assert!(summed >= 24, "{summed}");
    // The same events from another source are still logged (here: the admin's own address).
    let other = hostile(&env, "10.77.1.2", 1, &["version"; 2]);
    assert_eq!(other.line(10), "refused 1");
    env.wait_audit("CONN_LIMIT", |e| {
        e["source"].as_str().unwrap().starts_with("10.77.1.2:")
    });
}

/// Refusals anyone can cause are summed up, but not the refusal of an enrolled key's verified
/// signature: noise from the same source first must not hide that someone signs with an admin's
/// key without its PIN.
#[test]
fn noise_from_a_source_does_not_hide_a_real_keys_refusal() {
    let mut env = testbed!(Options {
        extra_limits: "audit_events_per_source = 3\naudit_window = \"10m\"\n".into(),
        ..Default::default()
    });
    // A software key that signs with a touch and no PIN, enrolled for carol.
    env.agent("touch.sock", "touch", &["--flags", "1"]);
    let public = std::fs::read_to_string(env.path("touch.sk.pub")).unwrap();
    let before = env
        .audit()
        .iter()
        .filter(|e| e["code"] == "POLICY_LOADED")
        .count();
    env.write_policy(&format!(
        "[[admin]]\nname = \"carol\"\ngroups = [\"pacs-beheer\"]\nkeys = ['{}']\n",
        public.trim()
    ));
    env.reload();
    env.wait_audit("POLICY_LOADED", |_| {
        env.audit()
            .iter()
            .filter(|e| e["code"] == "POLICY_LOADED")
            .count()
            > before
    });
    // Noise: the same key offered for an unknown admin, five times (one AUTH_DENIED each).
    let mallory = format!("mallory@{BASTION}");
    for _ in 0..5 {
        let out = env.run("ssh", "touch.sock", &[&mallory, "pacs01", "true"], None);
        assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    }
    // Then the key itself, without its PIN: refused, and logged with admin and key.
    let carol = format!("carol@{BASTION}");
    let out = env.run("ssh", "touch.sock", &[&carol, "pacs01", "true"], None);
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    let denial = env.wait_audit("AUTH_DENIED", |e| e["admin"] == "carol");
    assert_eq!(denial["reason"], "no_user_verification");
    assert_eq!(Env::detail(&denial)["flags"], "up");
    // Positive control: the noise from this source was limited (three logged one by one).
    let noise = env
        .audit()
        .iter()
        .filter(|e| e["code"] == "AUTH_DENIED" && e["admin"] == "mallory")
        .count();
    assert_eq!(noise, 3);
}
