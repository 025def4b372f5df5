//! End-to-end: one admin cannot stop the service for the others. Per-admin limits on
//! connections and sessions, recording quotas, a full recordings area, and a recording failure
//! that ends only its own session while the audit chain, elsewhere, keeps writing.
#![allow(clippy::unwrap_used, clippy::panic)]

#[macro_use]
mod common;

use std::path::PathBuf;

use common::{BASTION, Env, Options, ended, held_session, stderr, stdout, wait_for_file};

const BOB_GRANT: &str = "[[grant]]\nname = \"bob-import\"\nadmins = [\"bob\"]\ntargets = [\"import01\"]\naccounts = [\"root\"]\n";

/// Runs `script` with `sh` in the bastion's mount namespace.
fn in_bastion(env: &Env, script: &str) {
    let out = env.in_bastion_mounts(&["sh", "-c", script]);
    assert!(out.status.success(), "{script}: {}", stderr(&out));
}

/// A 1 MiB tmpfs over the bastion's recordings directory: the appliance's separate recordings
/// partition in miniature. It goes with the bastion's mount namespace.
fn small_recordings_fs(env: &Env) -> PathBuf {
    let dir = env.recordings_dir();
    in_bastion(
        env,
        &format!("mount -t tmpfs -o size=1m tmpfs '{}'", dir.display()),
    );
    dir
}

/// The audit chain's entries of `kind` (`start`, `end`, ...), from the chain file itself.
fn chain_entries(env: &Env, kind: &str) -> usize {
    std::fs::read_to_string(env.path("state/audit/chain.jsonl"))
        .unwrap()
        .matches(&format!("\\nkind {kind}\\n"))
        .count()
}

fn count(env: &Env, code: &str) -> usize {
    env.audit().iter().filter(|e| e["code"] == code).count()
}

#[test]
fn per_admin_session_and_connection_limits() {
    let env = testbed!(Options {
        extra_policy: BOB_GRANT.into(),
        extra_limits: "max_sessions_per_admin = 1\nmax_connections_per_admin = 3\n".into(),
        ..Default::default()
    });
    let release = env.path("release");
    let alice = format!("alice@{BASTION}");
    let held = env.spawn_ssh(
        "agent.sock",
        &[
            &alice,
            "pacs01",
            &held_session(&env.path("started"), &release, "survived"),
        ],
    );
    wait_for_file(&env.path("started"));

    // A second session of alice's is refused, with the limit named.
    let out = env.ssh("alice", &["pacs01", "echo", "second"], None);
    assert!(!stdout(&out).contains("second"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("session refused: you have 1 sessions open"),
        "{}",
        stderr(&out)
    );
    let limit = env.wait_audit("ADMIN_LIMIT", |e| e["admin"] == "alice");
    assert_eq!(Env::detail(&limit)["limit"], "sessions");

    // Bob is not affected (the positive control).
    assert_eq!(
        stdout(&env.run(
            "ssh",
            "bob-agent.sock",
            &[&format!("bob@{BASTION}"), "import01", "echo", "bob-in"],
            None
        )),
        "bob-in\n"
    );

    // Two more connections of alice's fill her three; a fourth is refused at login.
    let bare: Vec<_> = (0..2)
        .map(|_| env.spawn_ssh("agent.sock", &["-N", &alice]))
        .collect();
    // alice logged in four times: the held session, the refused one and the two bare ones.
    let start = std::time::Instant::now();
    while env
        .audit()
        .iter()
        .filter(|e| e["code"] == "AUTH_OK" && e["admin"] == "alice")
        .count()
        < 4
    {
        assert!(start.elapsed() < std::time::Duration::from_secs(15));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = env.ssh("alice", &["pacs01", "echo", "fourth"], None);
    assert!(!stdout(&out).contains("fourth"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("the most connections to the bastion allowed at once"),
        "{}",
        stderr(&out)
    );
    env.wait_audit("ADMIN_LIMIT", |e| {
        e["admin"] == "alice" && Env::detail(e)["limit"] == "connections"
    });
    assert!(bare.iter().all(|b| !b.is_finished()));
    // Bob still gets in.
    assert_eq!(
        stdout(&env.run(
            "ssh",
            "bob-agent.sock",
            &[&format!("bob@{BASTION}"), "import01", "echo", "bob-in"],
            None
        )),
        "bob-in\n"
    );
    std::fs::write(&release, b"").unwrap();
    assert_eq!(stdout(&held.join().unwrap()), "survived\n");
}

#[test]
fn recording_quota_ends_and_refuses_that_admins_sessions_only() {
    let env = testbed!(Options {
        extra_policy: BOB_GRANT.into(),
        extra_config: "[recording]\nmax_bytes_per_admin_per_day = 300000\n".into(),
        ..Default::default()
    });
    let release = env.path("release");
    // Bob's recorded session runs throughout (the positive control).
    let bob = env.spawn_ssh(
        "bob-agent.sock",
        &[
            "-tt",
            &format!("bob@{BASTION}"),
            "import01",
            &held_session(&env.path("bob-started"), &release, "survived"),
        ],
    );
    wait_for_file(&env.path("bob-started"));
    // Alice's recorded session writes more than her day allows: it is ended.
    let alice = format!("alice@{BASTION}");
    let flood = env.spawn_ssh(
        "agent.sock",
        &[
            "-tt",
            &alice,
            "pacs01",
            "head -c 2000000 /dev/zero | od -v; sleep 20; echo not-ended",
        ],
    );
    let quota = env.wait_audit("RECORDING_QUOTA", |e| e["admin"] == "alice");
    assert_eq!(Env::detail(&quota)["limit"], "admin_day_bytes");
    assert!(ended(&flood), "the session went on past its quota");
    let flood = flood.join().unwrap();
    assert!(
        !stdout(&flood).contains("not-ended"),
        "the session went on past its quota"
    );
    assert!(
        stderr(&flood).contains("recording quota reached: 300000 bytes today"),
        "{}",
        stderr(&flood)
    );
    env.wait_audit("SESSION_END", |e| {
        e["admin"] == "alice" && e["reason"].as_str().unwrap().contains("recording quota")
    });
    // Her next recorded session is refused before anything is dialled.
    let out = env.run(
        "ssh",
        "agent.sock",
        &["-tt", &alice, "pacs01", "echo", "again"],
        None,
    );
    assert!(!stdout(&out).contains("again"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("session refused: recording quota reached"),
        "{}",
        stderr(&out)
    );
    assert!(!bob.is_finished(), "bob's session ended with alice's quota");
    std::fs::write(&release, b"").unwrap();
    let bob = bob.join().unwrap();
    assert!(stdout(&bob).contains("survived"), "{}", stderr(&bob));
    assert_eq!(count(&env, "STORAGE_FAILED"), 0);
}

#[test]
fn a_full_recordings_area_refuses_recorded_sessions_while_the_chain_writes() {
    let env = testbed!(Options {
        extra_config: "[recording]\nmin_free_bytes = 524288\n".into(),
        ..Default::default()
    });
    let dir = small_recordings_fs(&env);
    let alice = format!("alice@{BASTION}");
    // A session that runs while the area fills up; its end entry shows the chain still writes.
    let release = env.path("release");
    let held = env.spawn_ssh(
        "agent.sock",
        &[
            &alice,
            "pacs01",
            &held_session(&env.path("held-started"), &release, "held"),
        ],
    );
    wait_for_file(&env.path("held-started"));
    let filler = dir.join("filler");
    in_bastion(
        &env,
        &format!("head -c 716800 /dev/zero > '{}'", filler.display()),
    );
    let ends = chain_entries(&env, "end");

    let out = env.run(
        "ssh",
        "agent.sock",
        &["-tt", &alice, "pacs01", "echo", "in"],
        None,
    );
    assert!(!stdout(&out).contains("in\r\n"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("session refused: the recordings area is full"),
        "{}",
        stderr(&out)
    );
    let quota = env.wait_audit("RECORDING_QUOTA", |e| e["admin"] == "alice");
    assert_eq!(Env::detail(&quota)["limit"], "free_space");
    // A command without a pty is recorded too, so it is refused as well.
    let out = env.ssh("alice", &["pacs01", "echo", "chain"], None);
    assert!(
        stderr(&out).contains("session refused: the recordings area is full"),
        "{}",
        stderr(&out)
    );
    // The chain, on its own file system, keeps writing: the running session's end entry (it
    // ends whether its last output fits or not).
    std::fs::write(&release, b"").unwrap();
    assert!(ended(&held));
    let start = std::time::Instant::now();
    while chain_entries(&env, "end") == ends {
        assert!(start.elapsed().as_secs() < 15, "no end entry");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(chain_entries(&env, "end"), ends + 1);
    assert_eq!(count(&env, "STORAGE_FAILED"), 0);

    // With space again, recorded sessions come back (the positive control).
    in_bastion(&env, &format!("rm '{}'", filler.display()));
    let out = env.run(
        "ssh",
        "agent.sock",
        &["-tt", &alice, "pacs01", "echo", "back"],
        None,
    );
    assert!(stdout(&out).contains("back"), "{}", stdout(&out));
}

#[test]
fn one_sessions_recording_failure_leaves_the_others_running() {
    let env = testbed!(Options {
        extra_policy: BOB_GRANT.into(),
        // No free-space floor: the recording's own write fails (ENOSPC); checkpoints only at
        // the end, so bob's waiting recording writes nothing meanwhile.
        extra_config: "[recording]\nmin_free_bytes = 0\ncheckpoint_interval = \"10m\"\n".into(),
        ..Default::default()
    });
    let dir = small_recordings_fs(&env);
    let release = env.path("release");
    let bob = env.spawn_ssh(
        "bob-agent.sock",
        &[
            "-tt",
            &format!("bob@{BASTION}"),
            "import01",
            &held_session(&env.path("bob-started"), &release, "survived"),
        ],
    );
    wait_for_file(&env.path("bob-started"));
    let flood = env.run(
        "ssh",
        "agent.sock",
        &[
            "-tt",
            &format!("alice@{BASTION}"),
            "pacs01",
            "head -c 3000000 /dev/zero | od -v; sleep 20; echo not-ended",
        ],
        None,
    );
    assert!(!stdout(&flood).contains("not-ended"), "the session went on");
    assert!(
        stderr(&flood).contains("recording failed"),
        "{}",
        stderr(&flood)
    );
    let end = env.wait_audit("SESSION_END", |e| e["admin"] == "alice");
    assert!(
        end["reason"].as_str().unwrap().contains("No space left"),
        "{end}"
    );
    assert_eq!(count(&env, "STORAGE_FAILED"), 0);
    assert!(
        !bob.is_finished(),
        "bob's session ended with alice's recording"
    );
    // Free the space alice's recording took, so bob's can take its last lines.
    in_bastion(
        &env,
        &format!(
            "for f in '{}'/*.cast; do [ $(stat -c %s \"$f\") -gt 100000 ] && : > \"$f\"; done; true",
            dir.display()
        ),
    );
    std::fs::write(&release, b"").unwrap();
    let bob = bob.join().unwrap();
    assert!(stdout(&bob).contains("survived"), "{}", stderr(&bob));
    env.wait_audit("SESSION_END", |e| {
        e["admin"] == "bob" && e["reason"] == "closed"
    });
}

#[test]
fn a_session_past_its_recording_quota_ends_and_the_next_one_runs() {
    let env = testbed!(Options {
        extra_config: "[recording]\nmax_bytes_per_session = 200000\n".into(),
        ..Default::default()
    });
    let alice = format!("alice@{BASTION}");
    let flood = env.run(
        "ssh",
        "agent.sock",
        &[
            "-tt",
            &alice,
            "pacs01",
            "head -c 2000000 /dev/zero | od -v; sleep 20; echo not-ended",
        ],
        None,
    );
    assert!(!stdout(&flood).contains("not-ended"), "the session went on");
    assert!(
        stderr(&flood).contains("recording quota reached: 200000 bytes, the most one session"),
        "{}",
        stderr(&flood)
    );
    let quota = env.wait_audit("RECORDING_QUOTA", |e| e["admin"] == "alice");
    assert_eq!(Env::detail(&quota)["limit"], "session_bytes");
    // The quota is the session's: alice's next recorded session runs.
    let out = env.run(
        "ssh",
        "agent.sock",
        &["-tt", &alice, "pacs01", "echo", "next"],
        None,
    );
    assert!(stdout(&out).contains("next"), "{}", stderr(&out));
}

/// Each session start and end is an entry in the audit chain, which every admin shares: one
/// admin's starts are limited per minute, and refused starts write nothing to the chain.
#[test]
fn session_starts_are_limited_per_admin_and_refused_ones_write_no_chain_entries() {
    let env = testbed!(Options {
        extra_policy: BOB_GRANT.into(),
        extra_config: "[recording]\nmax_session_starts_per_minute = 3\n".into(),
        ..Default::default()
    });
    for i in 0..3 {
        let out = env.ssh("alice", &["pacs01", "echo", &format!("run-{i}")], None);
        assert_eq!(stdout(&out), format!("run-{i}\n"), "{}", stderr(&out));
    }
    let starts = chain_entries(&env, "start");
    let out = env.ssh("alice", &["pacs01", "echo", "one-too-many"], None);
    assert!(!stdout(&out).contains("one-too-many"));
    assert!(
        stderr(&out).contains("too many sessions started: at most 3 a minute per admin"),
        "{}",
        stderr(&out)
    );
    let quota = env.wait_audit("RECORDING_QUOTA", |e| e["admin"] == "alice");
    assert_eq!(Env::detail(&quota)["limit"], "session_starts");
    assert_eq!(
        chain_entries(&env, "start"),
        starts,
        "a refused start wrote to the chain"
    );
    // Positive control: another admin's starts are their own.
    let out = env.run(
        "ssh",
        "bob-agent.sock",
        &[&format!("bob@{BASTION}"), "import01", "echo", "bob-runs"],
        None,
    );
    assert_eq!(stdout(&out), "bob-runs\n", "{}", stderr(&out));
}
