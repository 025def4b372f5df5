//! End-to-end: a policy reload ends what it no longer allows, per key and per grant, connections
//! included, and a reload during a session's setup is not missed.
#![allow(clippy::unwrap_used, clippy::panic)]

#[macro_use]
mod common;

use common::{BASTION, Env, Options, ended, held_session, stderr, stdout, wait_for_file};

/// The SHA-256 fingerprint of a public key file, as `SHA256:...`.
fn fingerprint(env: &Env, pub_file: &str) -> String {
    let out = std::process::Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(env.path(pub_file))
        .output()
        .unwrap();
    stdout(&out).split_whitespace().nth(1).unwrap().to_owned()
}

/// Reloads a policy that lists `second` as alice's only key, in place of her first.
fn only_second_key(env: &Env, second: &str) {
    let one = format!("keys = [\"{}\"]", env.alice_key);
    std::fs::write(
        env.path("policy.toml"),
        env.policy_text("")
            .replace(&one, &format!("keys = [\"{}\"]", second.trim())),
    )
    .unwrap();
    env.reload();
}

#[test]
fn removing_one_key_ends_the_connections_it_logged_in() {
    let mut env = testbed!();
    env.agent("alice2.sock", "alice2_key", &[]);
    let second = std::fs::read_to_string(env.path("alice2_key.sk.pub")).unwrap();
    let both = format!("keys = [\"{}\", \"{}\"]", env.alice_key, second.trim());
    let one = format!("keys = [\"{}\"]", env.alice_key);
    std::fs::write(
        env.path("policy.toml"),
        env.policy_text("").replace(&one, &both),
    )
    .unwrap();
    env.reload();
    env.wait_audit("POLICY_LOADED", |_| true);

    let release = env.path("release");
    let held = |name: &str| held_session(&env.path(name), &release, "survived");
    let alice = format!("alice@{BASTION}");
    // With the key that goes: a connection without a session, and one with a session.
    let bare = env.spawn_ssh("agent.sock", &["-N", &alice]);
    let first = env.spawn_ssh("agent.sock", &[&alice, "pacs01", &held("first-started")]);
    // With the key that stays: a session that must survive (the positive control).
    let kept = env.spawn_ssh("alice2.sock", &[&alice, "pacs01", &held("kept-started")]);
    wait_for_file(&env.path("first-started"));
    wait_for_file(&env.path("kept-started"));
    let fp = fingerprint(&env, "alice_key.sk.pub");
    let start = env.audit().len();
    env.wait_audit("AUTH_OK", |e| e["fingerprint"] == fp.as_str());
    assert!(!bare.is_finished(), "the bare connection ended early");

    only_second_key(&env, &second);
    let revoked = env.wait_audit("SESSION_REVOKED", |e| {
        e["admin"] == "alice" && Env::detail(e)["ended"] == "connections"
    });
    Env::assert_reason(&revoked, &format!("key {fp} removed"));
    assert_eq!(Env::detail(&revoked)["removed"], "key");
    assert!(
        ended(&bare),
        "the connection with the removed key stayed open"
    );
    assert!(ended(&first), "the session with the removed key went on");
    let first = first.join().unwrap();
    assert!(!stdout(&first).contains("survived"), "{}", stdout(&first));
    assert!(
        stderr(&first).contains(&format!("access revoked (key {fp} removed")),
        "{}",
        stderr(&first)
    );
    let bare = bare.join().unwrap();
    assert!(
        stderr(&bare).contains("access revoked"),
        "{}",
        stderr(&bare)
    );
    env.wait_audit("SESSION_END", |e| {
        e["admin"] == "alice"
            && e["reason"]
                .as_str()
                .unwrap()
                .contains("access revoked (key")
    });
    // Only what the removed key logged in was ended.
    let events = env.audit();
    let ended_by_reload: Vec<_> = events[start..]
        .iter()
        .filter(|e| e["code"] == "SESSION_REVOKED")
        .collect();
    assert_eq!(ended_by_reload.len(), 3, "{ended_by_reload:?}");
    assert!(
        !kept.is_finished(),
        "the session with the other key ended too"
    );
    std::fs::write(&release, b"").unwrap();
    let kept = kept.join().unwrap();
    assert_eq!(stdout(&kept), "survived\n", "{}", stderr(&kept));
}

#[test]
fn removing_a_grant_ends_its_sessions_only() {
    let grant = "[[grant]]\nname = \"alice-import\"\nadmins = [\"alice\"]\ntargets = [\"import01\"]\naccounts = [\"root\"]\n";
    let env = testbed!(Options {
        extra_policy: grant.into(),
        ..Default::default()
    });
    let release = env.path("release");
    let alice = format!("alice@{BASTION}");
    let pacs = held_session(&env.path("pacs-started"), &release, "survived");
    let import = held_session(&env.path("import-started"), &release, "survived");
    let on_pacs = env.spawn_ssh("agent.sock", &[&alice, "pacs01", &pacs]);
    let on_import = env.spawn_ssh("agent.sock", &[&alice, "import01", &import]);
    wait_for_file(&env.path("pacs-started"));
    wait_for_file(&env.path("import-started"));

    // The grant for pacs01 no longer names alice's group; alice and her key stay.
    let changed = env.policy_text(grant).replace(
        "groups = [\"pacs-beheer\"]\ntargets",
        "admins = [\"bob\"]\ntargets",
    );
    std::fs::write(env.path("policy.toml"), changed).unwrap();
    env.reload();
    let revoked = env.wait_audit("SESSION_REVOKED", |e| e["admin"] == "alice");
    assert_eq!(Env::detail(&revoked)["removed"], "grant");
    assert_eq!(Env::detail(&revoked)["ended"], "sessions");
    Env::assert_reason(&revoked, "grant pacs-beheer no longer allows this");
    assert!(
        ended(&on_pacs),
        "the session under the removed grant went on"
    );
    let on_pacs = on_pacs.join().unwrap();
    assert!(
        !stdout(&on_pacs).contains("survived"),
        "{}",
        stdout(&on_pacs)
    );
    assert!(
        stderr(&on_pacs).contains("access revoked (grant pacs-beheer"),
        "{}",
        stderr(&on_pacs)
    );
    // The session under the other grant goes on, and so does its connection.
    assert!(
        !on_import.is_finished(),
        "the other grant's session ended too"
    );
    assert_eq!(
        env.audit()
            .iter()
            .filter(|e| e["code"] == "SESSION_REVOKED")
            .count(),
        1
    );
    std::fs::write(&release, b"").unwrap();
    let on_import = on_import.join().unwrap();
    assert_eq!(stdout(&on_import), "survived\n", "{}", stderr(&on_import));
}

/// A reload that moves a grant's end nearer, but not past now, ends its sessions at the new end
/// (within the sweep's few seconds): their own deadlines were computed from the grant as it was.
#[test]
fn a_reload_that_shortens_a_grant_ends_its_sessions_at_the_new_end() {
    let grant = "[[grant]]\nname = \"alice-import\"\nadmins = [\"alice\"]\ntargets = [\"import01\"]\naccounts = [\"root\"]\n";
    let env = testbed!(Options {
        extra_policy: grant.into(),
        ..Default::default()
    });
    let release = env.path("release");
    let alice = format!("alice@{BASTION}");
    let pacs = held_session(&env.path("pacs-started"), &release, "survived");
    let import = held_session(&env.path("import-started"), &release, "survived");
    let on_pacs = env.spawn_ssh("agent.sock", &[&alice, "pacs01", &pacs]);
    let on_import = env.spawn_ssh("agent.sock", &[&alice, "import01", &import]);
    wait_for_file(&env.path("pacs-started"));
    wait_for_file(&env.path("import-started"));

    let end = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(6))
        .unwrap();
    let local = end.to_zoned(jiff::tz::TimeZone::get("Europe/Amsterdam").unwrap());
    let until = format!(
        "valid_until = \"{}\"\n",
        local.strftime("%Y-%m-%d %H:%M:%S")
    );
    std::fs::write(
        env.path("policy.toml"),
        env.policy_text(&format!("{grant}{until}")),
    )
    .unwrap();
    env.reload();
    env.wait_audit("POLICY_LOADED", |_| true);
    if jiff::Timestamp::now() < end {
        assert!(!on_import.is_finished(), "ended before the grant's new end");
    }
    let revoked = env.wait_audit("SESSION_REVOKED", |e| e["admin"] == "alice");
    assert!(jiff::Timestamp::now() >= end, "{revoked}");
    assert_eq!(Env::detail(&revoked)["removed"], "grant");
    Env::assert_reason(&revoked, "grant alice-import no longer allows this");
    assert!(
        ended(&on_import),
        "the session went on past its grant's end"
    );
    let on_import = on_import.join().unwrap();
    assert!(!stdout(&on_import).contains("survived"));
    // The session under the unchanged grant goes on.
    assert!(
        !on_pacs.is_finished(),
        "the other grant's session ended too"
    );
    std::fs::write(&release, b"").unwrap();
    let on_pacs = on_pacs.join().unwrap();
    assert_eq!(stdout(&on_pacs), "survived\n", "{}", stderr(&on_pacs));
}

#[test]
fn a_reload_during_session_setup_is_not_missed() {
    // The bastion holds each session's setup between its grant decision and its registration
    // while `pause/hold` exists (a debug-build seam), so the reload lands exactly there.
    let pause = tempfile::tempdir().unwrap();
    let dir: &'static str = Box::leak(pause.path().display().to_string().into_boxed_str());
    let env = testbed!(Options {
        bastion_env: vec![("STAPSTEEN_TEST_SETUP_PAUSE", dir)],
        ..Default::default()
    });
    let (hold, reached) = (pause.path().join("hold"), pause.path().join("reached"));
    let alice = format!("alice@{BASTION}");
    let paused_session = |policy: String| {
        std::fs::write(&hold, b"").unwrap();
        let _ = std::fs::remove_file(&reached);
        let ssh = env.spawn_ssh("agent.sock", &[&alice, "pacs01", "echo", "on-target"]);
        wait_for_file(&reached);
        let loaded = env
            .audit()
            .iter()
            .filter(|e| e["code"] == "POLICY_LOADED")
            .count();
        std::fs::write(env.path("policy.toml"), policy).unwrap();
        env.reload();
        let start = std::time::Instant::now();
        while env
            .audit()
            .iter()
            .filter(|e| e["code"] == "POLICY_LOADED")
            .count()
            == loaded
        {
            assert!(start.elapsed() < std::time::Duration::from_secs(15));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(!ssh.is_finished());
        std::fs::remove_file(&hold).unwrap();
        ssh.join().unwrap()
    };

    // Positive control: a reload that keeps the grant lets the held session through.
    let out = paused_session(env.policy_text(""));
    assert_eq!(stdout(&out), "on-target\n", "{}", stderr(&out));

    // A reload that takes the grant away refuses the session decided under the old policy.
    let without = env.policy_text("").replace(
        "groups = [\"pacs-beheer\"]\ntargets",
        "admins = [\"bob\"]\ntargets",
    );
    let accepted = std::fs::read_to_string(env.path("pacs01_sshd.log"))
        .unwrap()
        .matches("Accepted")
        .count();
    let out = paused_session(without);
    assert!(!stdout(&out).contains("on-target"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("session refused: access revoked (grant pacs-beheer"),
        "{}",
        stderr(&out)
    );
    let revoked = env.wait_audit("SESSION_REVOKED", |e| e["admin"] == "alice");
    assert!(revoked["session"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(Env::detail(&revoked)["removed"], "grant");
    env.wait_audit("SESSION_END", |e| {
        e["session"] == revoked["session"]
            && e["reason"].as_str().unwrap().contains("access revoked")
    });
    assert_eq!(
        std::fs::read_to_string(env.path("pacs01_sshd.log"))
            .unwrap()
            .matches("Accepted")
            .count(),
        accepted,
        "the target was dialled for a refused session"
    );
}

/// `ssh -W SPEC alice@bastion` with its stdin held open by the test, so the forward lasts.
fn held_forward(env: &Env, spec: &str) -> std::process::Child {
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &env.ns_admin, "ssh"])
        .args(env.ssh_opts("agent.sock"))
        .args(["-W", spec, &format!("alice@{BASTION}")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.as_mut().unwrap().write_all(b"hello\n").unwrap();
    child
}

/// Waits (up to 15 s) for `child` to exit.
fn exited(child: &mut std::process::Child) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(15) {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

#[test]
fn a_grant_that_no_longer_allows_a_port_ends_its_forwards() {
    let grant = "[[grant]]\nname = \"pacs-dicom\"\ngroups = [\"pacs-beheer\"]\ntargets = [\"pacs01\"]\naccounts = [\"root\"]\nforward_ports = [11112]\n";
    let mut env = testbed!(Options {
        extra_policy: grant.into(),
        extra_limits: "max_forwards_per_admin = 1\n".into(),
        ..Default::default()
    });
    let server = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/tcp_echo.py");
    env.spawn_in_mgmt(&["python3", server, common::PACS01, "11112"]);
    env.wait_port(&env.ns_mgmt.clone(), common::PACS01, 11112);
    // A session under the other grant, which the change leaves alone (the positive control).
    let release = env.path("release");
    let held = held_session(&env.path("started"), &release, "survived");
    let session = env.spawn_ssh(
        "agent.sock",
        &[&format!("alice@{BASTION}"), "pacs01", &held],
    );
    wait_for_file(&env.path("started"));

    let mut fwd = held_forward(&env, "pacs01:11112");
    env.wait_audit("FORWARD_START", |e| e["admin"] == "alice");
    // Positive control for the target's side of the forward, which must end with it.
    assert!(
        within(15, || target_connections(&env, common::PACS01, 11112).len()
            == 1),
        "{:?}",
        target_connections(&env, common::PACS01, 11112)
    );
    // A second forward is over alice's limit of one.
    let mut second = held_forward(&env, "pacs01:11112");
    assert!(exited(&mut second), "the second forward was let through");
    let limit = env.wait_audit("ADMIN_LIMIT", |e| e["admin"] == "alice");
    assert_eq!(Env::detail(&limit)["limit"], "forwards");

    // The grant no longer allows port 11112: the forward ends, the session goes on.
    std::fs::write(
        env.path("policy.toml"),
        env.policy_text(&grant.replace("[11112]", "[11113]")),
    )
    .unwrap();
    env.reload();
    let revoked = env.wait_audit("SESSION_REVOKED", |e| e["admin"] == "alice");
    assert_eq!(Env::detail(&revoked)["ended"], "forwards");
    Env::assert_reason(&revoked, "grant pacs-dicom no longer allows this");
    assert!(exited(&mut fwd), "the forward went on");
    // The element for port 11112 is gone: only the bastion's reset reaches the target.
    assert!(
        within(15, || target_connections(&env, common::PACS01, 11112)
            .is_empty()),
        "the forward lives on at the target: {:?}",
        target_connections(&env, common::PACS01, 11112)
    );
    env.wait_audit("FORWARD_END", |e| {
        e["reason"]
            .as_str()
            .unwrap()
            .contains("access revoked (grant pacs-dicom")
    });
    assert!(!session.is_finished(), "the other grant's session ended");
    std::fs::write(&release, b"").unwrap();
    let session = session.join().unwrap();
    assert_eq!(stdout(&session), "survived\n", "{}", stderr(&session));
}

/// Whether process `pid` still runs (a zombie left for a parent that does not reap is gone).
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(") ")
                .map(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
        })
        .unwrap_or(false)
}

/// The established TCP connections in namespace `ns`, as `ss` lists them, that `keep` keeps.
fn established(ns: &str, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .args(["ss", "-Htn", "state", "established"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .filter(|l| keep(l))
        .map(str::to_owned)
        .collect()
}

/// The bastion's established TCP connections to `target`'s sshd.
fn upstream_connections(env: &Env, target: &str) -> Vec<String> {
    let addr = if target == "pacs01" {
        common::PACS01
    } else {
        common::IMPORT01
    };
    established(&env.ns_bastion, |l| l.contains(&format!("{addr}:22")))
}

/// The target's established TCP connections on `addr`:`port`, seen from the management network.
fn target_connections(env: &Env, addr: &str, port: u16) -> Vec<String> {
    established(&env.ns_mgmt, |l| {
        l.split_whitespace()
            .nth(2)
            .is_some_and(|local| local == format!("{addr}:{port}"))
    })
}

/// Polls `done` every 50 ms for up to `secs` seconds; whether it became true.
fn within(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(secs) {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    done()
}

/// How the admin's side holds a session up.
#[derive(Clone, Copy, PartialEq)]
enum Hold {
    /// `ssh` is stopped once output arrived: its window and then its TCP buffer stay full.
    Stopped,
    /// `ssh` reads everything but sends its input without end to a command that reads none, so
    /// the target's window for that input stays shut while its output backs up behind it.
    Feeding,
    /// `ssh` sends its input without end to a command that reads it all, and nobody reads its
    /// output.
    Unread,
}

/// Checks that the target's command (its pid in `pid_file`) and the bastion's connection to
/// `target` are alive (the positive control), runs `end`, then waits up to 15 s for both to be
/// gone; the command's pid, and whether they went.
fn alive_then_gone(
    env: &Env,
    target: &str,
    pid_file: &std::path::Path,
    start: &serde_json::Value,
    end: impl FnOnce(&serde_json::Value),
) -> (String, bool) {
    let pid = std::fs::read_to_string(pid_file).unwrap().trim().to_owned();
    assert!(running(&pid), "the target command is not running");
    assert_eq!(upstream_connections(env, target).len(), 1);
    end(start);
    let gone = within(15, || {
        !running(&pid) && upstream_connections(env, target).is_empty()
    });
    (pid, gone)
}

/// What is left of a session that should have ended on the target.
fn lives_on(env: &Env, target: &str, pid: &str) -> String {
    format!(
        "the session lives on: target command running {}, connections {:?}",
        running(pid),
        upstream_connections(env, target)
    )
}

/// A session on `target` whose command prints without end while the admin's side holds it up
/// (`hold`), then `end` (which waits for what it did), after which the target's command and the
/// bastion's connection to the target must end (within 15 s) all the same, as must the admin's
/// `ssh` where it still runs; returns SESSION_END.
fn frozen_session_ends(
    env: &Env,
    target: &str,
    hold: Hold,
    end: impl FnOnce(&serde_json::Value),
) -> serde_json::Value {
    let pid_file = env.path("yes.pid");
    // With `Unread` the target takes all the input, so it queues up in the bastion instead.
    let command = format!(
        "echo $$ > '{}'; {}exec yes stapsteen-alive",
        pid_file.display(),
        if hold == Hold::Unread {
            "cat > /dev/null & "
        } else {
            ""
        }
    );
    let out_file = env.path("client.out");
    // `ip netns exec` runs ssh in its own process, so this is ssh's pid.
    let mut client = std::process::Command::new("ip")
        .args(["netns", "exec", &env.ns_admin, "ssh"])
        .args(env.ssh_opts("agent.sock"))
        .args([&format!("alice@{BASTION}"), target, &command])
        .stdin(match hold {
            Hold::Stopped => std::process::Stdio::null(),
            Hold::Feeding | Hold::Unread => std::fs::File::open("/dev/zero").unwrap().into(),
        })
        .stdout(match hold {
            // A pipe this test never reads.
            Hold::Unread => std::process::Stdio::piped(),
            _ => std::fs::File::create(&out_file).unwrap().into(),
        })
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ssh = client.id().to_string();
    wait_for_file(&pid_file);
    assert!(
        hold == Hold::Unread || within(15, || std::fs::metadata(&out_file).unwrap().len() > 0),
        "no output reached the client"
    );
    let start = env.wait_audit("SESSION_START", |e| e["admin"] == "alice");
    let session = start["session"].as_str().unwrap().to_owned();
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{ssh}/comm"))
            .unwrap()
            .trim(),
        "ssh"
    );
    let kill = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &ssh])
            .status()
            .unwrap()
    };
    if hold == Hold::Stopped {
        assert!(kill("-STOP").success());
    }
    // Wait until the output backs up: the recording of what crossed stops growing.
    let cast = env.recordings_dir().join(format!("{session}.cast"));
    let size = || std::fs::metadata(&cast).map(|m| m.len()).unwrap_or(0);
    let (mut last, mut same) = (size(), 0);
    assert!(
        within(30, || {
            std::thread::sleep(std::time::Duration::from_millis(250));
            let now = size();
            // Bounds the disk a session that never backs up fills.
            assert!(now < 256 << 20, "the output never backed up");
            same = if now == last { same + 1 } else { 0 };
            last = now;
            same >= 4
        }),
        "the output never backed up"
    );
    assert!(last > 64 << 10, "the output never flowed: {last} bytes");
    let (pid, target_gone) = alive_then_gone(env, target, &pid_file, &start, end);
    let ended =
        target_gone.then(|| env.wait_audit("SESSION_END", |e| e["session"] == session.as_str()));
    // The admin's connection is cut too: a running `ssh` exits.
    let admin_cut = hold == Hold::Stopped || within(15, || client.try_wait().unwrap().is_some());
    if hold == Hold::Stopped {
        assert!(kill("-CONT").success());
    }
    let _ = client.kill();
    let _ = client.wait();
    assert!(target_gone, "{}", lives_on(env, target, &pid));
    assert!(admin_cut, "the admin's connection lives on");
    // The recording was sealed all the same.
    let verified = env.cli(&["recordings", "verify", &session]);
    let text = stdout(&verified) + &stderr(&verified);
    assert!(verified.status.success(), "{text}");
    assert!(text.contains("sealed ("), "{text}");
    let ended = ended.unwrap();
    // A stopped `ssh` can be told nothing: the bastion cut its connection, and says so.
    if hold == Hold::Stopped {
        let cut = env.wait_audit("SESSION_CUT", |e| e["session"] == session.as_str());
        assert_eq!(cut["reason"], ended["reason"], "{cut}");
        assert_eq!(cut["admin"], "alice", "{cut}");
    }
    ended
}

/// alice's key replaced in the policy by another of hers (a reload) while `hold` holds her
/// session up: the session must end on the target, revoked.
fn key_revoked_while(hold: Hold) {
    let mut env = testbed!();
    env.agent("alice2.sock", "alice2_key", &[]);
    let second = std::fs::read_to_string(env.path("alice2_key.sk.pub")).unwrap();
    let end = frozen_session_ends(&env, "pacs01", hold, |start| {
        only_second_key(&env, &second);
        env.wait_audit("SESSION_REVOKED", |e| {
            e["admin"] == "alice" && e["session"] == start["session"]
        });
    });
    Env::assert_reason(&end, "access revoked (key");
}

/// An admin with a stolen key who keeps the SSH window shut (the client stops reading) cannot
/// keep a revoked session alive on the target: its command and the bastion's connection to the
/// target end anyway, and SESSION_END says it was revoked.
#[test]
fn a_revoked_session_ends_on_the_target_while_the_admin_reads_nothing() {
    key_revoked_while(Hold::Stopped);
}

/// The same for a grant removed (the connection stays, only the session under it ends)...
#[test]
fn a_session_whose_grant_is_removed_ends_on_the_target_while_the_admin_reads_nothing() {
    let env = testbed!();
    let end = frozen_session_ends(&env, "pacs01", Hold::Stopped, |start| {
        let changed = env.policy_text("").replace(
            "groups = [\"pacs-beheer\"]\ntargets",
            "admins = [\"bob\"]\ntargets",
        );
        std::fs::write(env.path("policy.toml"), changed).unwrap();
        env.reload();
        env.wait_audit("SESSION_REVOKED", |e| e["session"] == start["session"]);
    });
    Env::assert_reason(&end, "access revoked (grant pacs-beheer");
}

/// ...and for the maximum session length reached (the session's own deadline).
#[test]
fn a_session_at_its_maximum_length_ends_on_the_target_while_the_admin_reads_nothing() {
    let grant = "[[grant]]\nname = \"alice-import\"\nadmins = [\"alice\"]\ntargets = [\"import01\"]\naccounts = [\"root\"]\nmax_session = \"10s\"\n";
    let env = testbed!(Options {
        extra_policy: grant.into(),
        ..Default::default()
    });
    let max = std::time::Duration::from_secs(10);
    // Before the session starts, so its deadline comes after `max` from here.
    let before = std::time::Instant::now();
    let end = frozen_session_ends(&env, "import01", Hold::Stopped, |_| {
        assert!(
            before.elapsed() < max,
            "the output backed up only after the session's end"
        );
        // The event here is the deadline itself.
        while before.elapsed() < max {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    });
    Env::assert_reason(&end, "maximum session length reached");
}

/// An admin whose own input holds the session up (sent without end to a command that reads
/// none, so the bastion waits on the target's window while the target's output backs up behind
/// it) cannot keep a revoked session or connection alive either, and the session still ends
/// with SESSION_END and a sealed recording.
#[test]
fn a_revoked_session_ends_while_the_admin_floods_input_the_target_does_not_read() {
    key_revoked_while(Hold::Feeding);
}

/// A session on `target` whose command prints a line every 200 ms to an admin who reads it,
/// then `end` (which waits for what it did), after which the target's command (it dies writing
/// to the ended session) and the bastion's connection to the target must end within 15 s;
/// returns SESSION_END.
fn reading_session_ends(
    env: &Env,
    target: &str,
    end: impl FnOnce(&serde_json::Value),
) -> serde_json::Value {
    let pid_file = env.path("loop.pid");
    let command = format!(
        "echo $$ > '{}'; exec sh -c 'while echo stapsteen-alive; do sleep 0.2; done'",
        pid_file.display()
    );
    let client = env.spawn_ssh(
        "agent.sock",
        &[&format!("alice@{BASTION}"), target, &command],
    );
    wait_for_file(&pid_file);
    let start = env.wait_audit("SESSION_START", |e| e["admin"] == "alice");
    let session = start["session"].as_str().unwrap().to_owned();
    let (pid, target_gone) = alive_then_gone(env, target, &pid_file, &start, end);
    assert!(target_gone, "{}", lives_on(env, target, &pid));
    assert!(ended(&client), "the admin's client went on");
    let client = client.join().unwrap();
    assert!(stdout(&client).contains("stapsteen-alive"));
    env.wait_audit("SESSION_END", |e| e["session"] == session.as_str())
}

/// alice's grant on import01, removed from the policy by a reload: the kernel drops the grant's
/// packets at once, the session's end must reach the target all the same.
const IMPORT_GRANT: &str = "[[grant]]\nname = \"alice-import\"\nadmins = [\"alice\"]\ntargets = [\"import01\"]\naccounts = [\"root\"]\n";

fn remove_import_grant(env: &Env, start: &serde_json::Value) {
    std::fs::write(env.path("policy.toml"), env.policy_text("")).unwrap();
    env.reload();
    env.wait_audit("SESSION_REVOKED", |e| e["session"] == start["session"]);
}

/// ...also when it reads none of the output meanwhile, so the target's connection waits on the
/// bastion's pump while the admin's input queues up for the target's connection.
#[test]
fn a_revoked_session_ends_while_the_admin_floods_input_and_reads_nothing() {
    key_revoked_while(Hold::Unread);
}

#[test]
fn a_session_whose_grant_is_deleted_ends_on_the_target() {
    let env = testbed!(Options {
        extra_policy: IMPORT_GRANT.into(),
        ..Default::default()
    });
    let end = reading_session_ends(&env, "import01", |start| remove_import_grant(&env, start));
    Env::assert_reason(&end, "access revoked (grant alice-import");
}

#[test]
fn a_session_whose_grant_is_deleted_ends_on_the_target_while_the_admin_reads_nothing() {
    let env = testbed!(Options {
        extra_policy: IMPORT_GRANT.into(),
        ..Default::default()
    });
    let end = frozen_session_ends(&env, "import01", Hold::Stopped, |start| {
        remove_import_grant(&env, start)
    });
    Env::assert_reason(&end, "access revoked (grant alice-import");
}

/// The import grant, valid until `secs` from now (to the second).
fn import_grant_until(secs: i64) -> (String, std::time::Instant) {
    let end = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap();
    let local = end.to_zoned(jiff::tz::TimeZone::get("Europe/Amsterdam").unwrap());
    let grant = format!(
        "{IMPORT_GRANT}valid_until = \"{}\"\n",
        local.strftime("%Y-%m-%d %H:%M:%S")
    );
    let left = end.duration_since(jiff::Timestamp::now()).unsigned_abs();
    (grant, std::time::Instant::now() + left)
}

/// Waits for the grant's end itself (the event), having checked the session started before it.
fn until_grant_end(at: std::time::Instant) {
    assert!(
        std::time::Instant::now() < at,
        "the session was set up only after its grant's end"
    );
    while std::time::Instant::now() < at {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// At a grant's end (valid_until) the kernel removes its element as the session stops.
#[test]
fn a_session_at_its_grants_end_ends_on_the_target() {
    let (grant, at) = import_grant_until(15);
    let env = testbed!(Options {
        extra_policy: grant,
        ..Default::default()
    });
    let end = reading_session_ends(&env, "import01", |_| until_grant_end(at));
    Env::assert_reason(&end, "grant alice-import ended");
}

#[test]
fn a_session_at_its_grants_end_ends_on_the_target_while_the_admin_reads_nothing() {
    let (grant, at) = import_grant_until(25);
    let env = testbed!(Options {
        extra_policy: grant,
        ..Default::default()
    });
    let end = frozen_session_ends(&env, "import01", Hold::Stopped, |_| until_grant_end(at));
    Env::assert_reason(&end, "grant alice-import ended");
}
