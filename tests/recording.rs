//! Tamper-evident recordings and audit chain, end to end: real sessions through the bastion,
//! then `stapsteen recordings verify` and `stapsteen audit verify` on what they left, after
//! each kind of tampering, a crash and a full disk.
#![allow(clippy::unwrap_used, clippy::panic)]

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Env, Options, held_session, stderr, stdout, wait_for_file};
use serde_json::json;

fn fast_checkpoints() -> Options {
    Options {
        extra_config: "[recording]\ncheckpoint_interval = \"1s\"\ncheckpoint_bytes = 65536\n"
            .into(),
        ..Options::default()
    }
}

/// A recorded session running `command` on pacs01; returns its id.
fn recorded(env: &Env, command: &str) -> String {
    let before = env
        .audit()
        .iter()
        .filter(|e| e["code"] == "SESSION_END")
        .count();
    let out = env.ssh_pty("alice", &["pacs01", command], json!([]));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let start = std::time::Instant::now();
    loop {
        let ends: Vec<_> = env
            .audit()
            .into_iter()
            .filter(|e| e["code"] == "SESSION_END")
            .collect();
        if ends.len() > before {
            return ends[before]["session"].as_str().unwrap().to_owned();
        }
        assert!(start.elapsed().as_secs() < 15, "no SESSION_END");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn verify(env: &Env, what: &[&str]) -> (bool, String) {
    let out = env.cli(what);
    (out.status.success(), stdout(&out) + &stderr(&out))
}

fn cast(env: &Env, id: &str) -> PathBuf {
    env.recordings_dir().join(format!("{id}.cast"))
}

/// Changes a file, checks what `verify` says, and puts the file back.
fn tampered(path: &Path, change: impl FnOnce(&mut Vec<Vec<u8>>), check: impl FnOnce()) {
    let original = std::fs::read(path).unwrap();
    let mut lines: Vec<Vec<u8>> = original
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    change(&mut lines);
    std::fs::write(path, lines.concat()).unwrap();
    check();
    std::fs::write(path, original).unwrap();
}

/// `asciinema cat` (the player's own parser; it wants a terminal, which `script` gives it) reads
/// the recording to the end.
fn plays(path: &Path) -> bool {
    Command::new("script")
        .args(["-q", "-e", "-c"])
        .arg(format!("asciinema cat '{}'", path.display()))
        .arg("/dev/null")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn every_kind_of_tampering_is_reported_precisely() {
    let env = testbed!(fast_checkpoints());
    let a = recorded(
        &env,
        "for i in $(seq 1 40); do echo line $i; sleep 0.02; done",
    );
    let b = recorded(&env, "echo second");
    let c = recorded(&env, "echo third");
    let (ok, text) = verify(&env, &["recordings", "verify", "--all"]);
    assert!(ok, "{text}");
    for id in [&a, &b, &c] {
        assert!(text.contains(&format!("{id}  sealed (")), "{text}");
    }
    let (ok, text) = verify(&env, &["audit", "verify"]);
    assert!(ok && text.contains("entries verified"), "{text}");
    // Every entry also went to journald (here: the JSON log), as it was written.
    let chain_lines = std::fs::read_to_string(env.path("state/audit/chain.jsonl")).unwrap();
    let sent: Vec<String> = env
        .audit()
        .iter()
        .filter(|e| e["code"] == "CHECKPOINT")
        .map(|e| Env::detail(e)["note"].as_str().unwrap().to_owned())
        .collect();
    let stored: Vec<String> = chain_lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["note"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(sent, stored);

    let a_path = cast(&env, &a);
    tampered(
        &a_path,
        |l| l[6][4] ^= 0x01,
        || {
            let (ok, text) = verify(&env, &["recordings", "verify", &a]);
            assert!(
                !ok && text.contains("modified at line 7 (line changed)"),
                "{text}"
            );
        },
    );
    tampered(
        &a_path,
        |l| {
            l.remove(10);
        },
        || {
            let (ok, text) = verify(&env, &["recordings", "verify", &a]);
            assert!(
                !ok && text.contains("modified at line 11 (line deleted)"),
                "{text}"
            );
        },
    );
    tampered(
        &a_path,
        |l| l.truncate(20),
        || {
            let (ok, text) = verify(&env, &["recordings", "verify", &a]);
            assert!(!ok && text.contains("truncated after line 20"), "{text}");
        },
    );
    // Two recordings swapped, their indexes with them.
    let swap = |x: &str, y: &str| {
        for ext in ["cast", "idx"] {
            let p = |id: &str| env.recordings_dir().join(format!("{id}.{ext}"));
            std::fs::rename(p(x), p("tmp")).unwrap();
            std::fs::rename(p(y), p(x)).unwrap();
            std::fs::rename(p("tmp"), p(y)).unwrap();
        }
    };
    swap(&b, &c);
    let (ok, text) = verify(&env, &["recordings", "verify", "--all"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("{b}  modified: holds the recording of {c}")),
        "{text}"
    );
    swap(&b, &c);
    // A whole recording deleted.
    let saved = std::fs::read(cast(&env, &c)).unwrap();
    std::fs::remove_file(cast(&env, &c)).unwrap();
    let (ok, text) = verify(&env, &["recordings", "verify", "--all"]);
    assert!(!ok && text.contains(&format!("{c}  missing")), "{text}");
    std::fs::write(cast(&env, &c), saved).unwrap();
    let (ok, text) = verify(&env, &["recordings", "verify", "--all"]);
    assert!(ok, "restored: {text}");

    // The audit chain: an entry deleted, an old checkpoint replayed, an entry rewritten.
    let chain = env.path("state/audit/chain.jsonl");
    tampered(
        &chain,
        |l| {
            l.remove(3);
        },
        || {
            let (ok, text) = verify(&env, &["audit", "verify"]);
            assert!(
                !ok && text.contains("line 4: seq 3 is missing before seq 4 (deleted)"),
                "{text}"
            );
        },
    );
    tampered(
        &chain,
        |l| {
            let old = l[2].clone();
            l.push(old);
        },
        || {
            let (ok, text) = verify(&env, &["audit", "verify"]);
            assert!(
                !ok && text.contains("seq 2 repeats an earlier entry (replayed"),
                "{text}"
            );
        },
    );
    tampered(
        &chain,
        |l| {
            let s = String::from_utf8(l[4].clone()).unwrap();
            l[4] = s.replacen("lines ", "lines 1", 1).into_bytes();
        },
        || {
            let (ok, text) = verify(&env, &["audit", "verify"]);
            assert!(
                !ok && text.contains("line 5: entry changed or forged"),
                "{text}"
            );
        },
    );
    let (ok, text) = verify(&env, &["audit", "verify"]);
    assert!(ok, "restored: {text}");
    // Ids are checked before they touch a path.
    let (ok, text) = verify(&env, &["recordings", "verify", "../../etc/passwd"]);
    assert!(!ok && text.contains("not a recording id"), "{text}");
}

#[test]
fn kill_9_leaves_an_unterminated_recording_that_plays_and_verifies() {
    let mut env = testbed!(fast_checkpoints());
    let client = env.spawn_ssh_pty(
        "alice",
        &[
            "pacs01",
            "for i in $(seq 1 100000); do echo line $i; sleep 0.02; done",
        ],
        json!([["expect", "line 1"]]),
    );
    let start = env.wait_audit("SESSION_START", |_| true);
    let id = start["session"].as_str().unwrap().to_owned();
    // Several checkpoints go by.
    let checkpoints = || {
        env.audit()
            .iter()
            .filter(|e| e["session"] == id.as_str() && Env::detail(e)["kind"] == "checkpoint")
            .count()
    };
    env.wait_audit("CHECKPOINT", |_| checkpoints() >= 3);
    let (ok, text) = verify(&env, &["recordings", "verify", &id]);
    assert!(ok && text.contains("intact to line"), "live: {text}");
    env.kill_bastion();
    let _ = client.join();

    let (ok, text) = verify(&env, &["recordings", "verify", &id]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("unterminated (crash): intact to line"),
        "{text}"
    );
    assert!(plays(&cast(&env, &id)), "the crashed recording still plays");
    let (ok, text) = verify(&env, &["audit", "verify"]);
    assert!(ok, "{text}");

    // After a restart the chain goes on, and new sessions are sealed.
    env.restart_bastion();
    let next = recorded(&env, "echo after-restart");
    let (ok, text) = verify(&env, &["recordings", "verify", &next]);
    assert!(ok && text.contains("sealed"), "{text}");
    let (ok, text) = verify(&env, &["audit", "verify"]);
    assert!(ok, "{text}");
}

#[test]
fn bursts_invalid_utf8_and_resize_storms_stay_valid_and_playable() {
    let env = testbed!(Options::default());
    // 50 MB of output to a terminal (`ssh -tt`), with invalid UTF-8 and split multi-byte
    // characters after it.
    let dest = format!("alice@{}", common::BASTION);
    let out = env.run(
        "ssh",
        "agent.sock",
        &[
            "-tt",
            &dest,
            "pacs01",
            "head -c 37500000 /dev/zero | tr '\\0' x | base64 -w 0 | head -c 50000000; \
             printf '\\n\\377\\376 bad \\342\\202 split \\303\\251\\n'",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.len() > 50_000_000);
    let burst = env.wait_audit("SESSION_END", |_| true)["session"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut steps = vec![json!(["expect", "ready"])];
    for i in 0..60 {
        steps.push(json!(["resize", 20 + i % 30, 60 + i]));
        steps.push(json!(["sleep", 0.01]));
    }
    steps.push(json!(["send", "x"]));
    let out = env.ssh_pty(
        "alice",
        &["pacs01", "echo ready; read -n 1 k; echo done"],
        json!(steps),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    env.wait_audit("SESSION_END", |e| e["session"] != burst);
    let (ok, text) = verify(&env, &["recordings", "verify", "--all"]);
    assert!(ok, "{text}");
    for entry in std::fs::read_dir(env.recordings_dir()).unwrap() {
        let m = entry.unwrap().path();
        if m.extension().is_none_or(|e| e != "cast") {
            continue;
        }
        assert!(plays(&m), "{} plays", m.display());
        let text = std::fs::read_to_string(&m).unwrap();
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }
    let text = std::fs::read_to_string(cast(&env, &burst)).unwrap();
    assert!(
        text.contains("\u{fffd}\u{fffd} bad \u{fffd} split é"),
        "invalid UTF-8 became U+FFFD"
    );
    let size = text.len();
    assert!(size > 50_000_000, "{size}");
}

#[test]
fn full_disk_ends_the_writing_session_refuses_new_ones_and_recovers() {
    // No free-space floor: this is about the write that fails (quotas.rs tests the floor).
    let env = testbed!(Options {
        extra_config: "[recording]\nmin_free_bytes = 0\n".into(),
        ..Options::default()
    });
    let dir = env.recordings_dir();
    let d = dir.to_str().unwrap();
    // A small file system under the recordings (in the bastion's own mount namespace, which
    // `ip netns exec` gave it; it goes away with the process).
    let out = env.in_bastion_mounts(&["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", d]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A quiet session, then one that fills the disk: only the one whose write failed ends.
    let release = env.path("release");
    let held = held_session(&env.path("quiet-started"), &release, "quiet-done");
    let quiet = env.spawn_ssh_pty(
        "alice",
        &["pacs01", &format!("echo quiet; {held}")],
        json!([["expect", "quiet-done"]]),
    );
    wait_for_file(&env.path("quiet-started"));
    let out = env.ssh_pty(
        "alice",
        &[
            "pacs01",
            "for i in $(seq 1 200000); do echo line $i; done; echo finished",
        ],
        json!([["expect", "recording failed"]]),
    );
    let text = stdout(&out);
    assert!(!text.contains("finished"));
    assert!(
        text.contains("recording failed"),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );
    let failed = env.wait_audit("RECORDING_FAILED", |_| true);
    assert!(
        failed["reason"].as_str().unwrap().contains("No space left"),
        "{failed}"
    );
    // The recordings' file system is that session's failure, not the shared chain's.
    assert!(!env.audit().iter().any(|e| e["code"] == "STORAGE_FAILED"));
    assert!(
        !quiet.is_finished(),
        "the quiet session ended with the other"
    );
    // New recorded sessions are refused while the disk is full. The failed write cut its torn
    // line off, which can free a page of the small file system: fill what is left first.
    let fill = format!("cat /dev/zero > {d}/filler; true");
    let out = env.in_bastion_mounts(&["sh", "-c", &fill]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.ssh_pty(
        "alice",
        &["pacs01", "echo should-not-run"],
        json!([["expect", "recording cannot be written"]]),
    );
    assert!(!stdout(&out).contains("should-not-run"));
    assert!(
        stdout(&out).contains("recording cannot be written"),
        "{}",
        stdout(&out)
    );
    // Space again (the filled recording is emptied): sessions work, the quiet one too.
    let script = format!(
        "rm {d}/filler; for f in {d}/*.cast; do [ $(stat -c %s \"$f\") -gt 50000 ] && : > \"$f\"; done; true"
    );
    let out = env.in_bastion_mounts(&["sh", "-c", &script]);
    assert!(out.status.success());
    let id = recorded(&env, "echo works-again");
    let cfg = env.path("stapsteen.toml");
    let out = env.in_bastion_mounts(&[
        common::bin(),
        "recordings",
        "verify",
        "--config",
        cfg.to_str().unwrap(),
        &id,
    ]);
    assert!(
        out.status.success() && stdout(&out).contains("sealed"),
        "{}",
        stdout(&out)
    );
    std::fs::write(&release, b"").unwrap();
    let quiet = quiet.join().unwrap();
    assert!(stdout(&quiet).contains("quiet-done"), "{}", stdout(&quiet));
}

#[test]
fn alert_and_continue_lets_sessions_go_on_unrecorded() {
    let env = testbed!(Options {
        extra_config: "[recording]\non_failure = \"alert-and-continue\"\nmin_free_bytes = 0\n"
            .into(),
        ..Options::default()
    });
    let d = env.recordings_dir();
    let out = env.in_bastion_mounts(&[
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "size=64k",
        "tmpfs",
        d.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.ssh_pty(
        "alice",
        &[
            "pacs01",
            "for i in $(seq 1 20000); do echo line $i; done; echo finished",
        ],
        json!([["expect", "finished"]]),
    );
    assert!(stdout(&out).contains("finished"), "the session went on");
    // The alert: this recording's failure (the chain is fine, so no STORAGE_FAILED).
    env.wait_audit("RECORDING_FAILED", |e| {
        e["reason"]
            .as_str()
            .unwrap()
            .contains("goes on unrecorded (alert-and-continue)")
    });
    assert!(!env.audit().iter().any(|e| e["code"] == "STORAGE_FAILED"));
}

/// Unmounts when dropped, so a failing test leaves no mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_audit_chain_refuses_sessions_until_it_has_room() {
    let mut env = testbed!(Options::default());
    env.kill_bastion();
    // The chain on a small file system of its own; the bastion starts on it.
    let audit = env.path("state/audit");
    let saved = std::fs::read(audit.join("chain.jsonl")).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&audit)
        .status()
        .unwrap();
    assert!(ok.success());
    let _mount = Mount(audit.clone());
    std::fs::write(audit.join("chain.jsonl"), saved).unwrap();
    env.restart_bastion();
    // Fill it (dd stops at the first write that does not fit).
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1k", "count=128"])
        .arg(format!("of={}", audit.join("filler").display()))
        .stderr(std::process::Stdio::null())
        .status();
    // The chain's last page may still hold an entry or two; within a few sessions it is full.
    let refused = (0..8).find_map(|_| {
        let out = env.ssh("alice", &["pacs01", "echo ran"], None);
        stderr(&out)
            .contains("the audit trail cannot be written")
            .then_some(out)
    });
    let out = refused.expect("sessions are refused once the chain cannot grow");
    assert!(!stdout(&out).contains("ran"));
    let failed = env.wait_audit("STORAGE_FAILED", |_| true);
    Env::assert_reason(&failed, "audit chain cannot be written");
    std::fs::remove_file(audit.join("filler")).unwrap();
    let out = env.ssh("alice", &["pacs01", "echo runs-again"], None);
    assert_eq!(stdout(&out), "runs-again\n", "{}", stderr(&out));
    let (ok, text) = verify(&env, &["audit", "verify"]);
    assert!(ok, "no torn entry was left: {text}");
}

/// Peak resident memory (KiB) of `stapsteen ARGS --config ...`, with its output: the child's
/// `ru_maxrss`, taken by a python parent that runs nothing else.
fn cli_peak_rss(env: &Env, args: &[&str]) -> (bool, String, u64) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(concat!(
            "import resource, subprocess, sys\n",
            "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n",
            "sys.stdout.write(r.stdout + r.stderr)\n",
            "print('exit', r.returncode)\n",
            "print('maxrss', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n",
        ))
        .arg(common::bin())
        .args(args)
        .arg("--config")
        .arg(env.path("stapsteen.toml"))
        .output()
        .unwrap();
    let text = stdout(&out);
    let rss = text
        .lines()
        .find_map(|l| l.strip_prefix("maxrss "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{text}{}", stderr(&out)));
    (text.contains("\nexit 0\n"), text, rss)
}

#[test]
fn a_large_recording_is_verified_in_bounded_memory() {
    // A command's output is recorded whole up to this many bytes.
    let env = testbed!(Options {
        extra_config: "[recording]\nmax_channel_bytes = 268435456\n".into(),
        ..Options::default()
    });
    // Positive control: a small recording, for the verifier's own footprint.
    let small = recorded(&env, "echo small");
    let (ok, text, small_rss) = cli_peak_rss(&env, &["recordings", "verify", &small]);
    assert!(ok && text.contains("sealed ("), "{text}");
    // 200 MiB of output through a real session, recorded as it went.
    const MIB: u64 = 200;
    let out = env.ssh(
        "alice",
        &[
            "pacs01",
            &format!("head -c {} /dev/zero | tr '\\0' x", MIB << 20),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let end = env.wait_audit("SESSION_END", |e| e["session"] != small.as_str());
    let big = end["session"].as_str().unwrap().to_owned();
    let size = std::fs::metadata(cast(&env, &big)).unwrap().len();
    assert!(size > MIB << 20, "the recording holds {size} bytes");
    let (ok, text, big_rss) = cli_peak_rss(&env, &["recordings", "verify", &big]);
    assert!(ok && text.contains(&format!("{big}  sealed (")), "{text}");
    println!("peak RSS verifying: {small_rss} KiB (small), {big_rss} KiB ({size} bytes)");
    // Reading it whole would take at least its size; streaming takes a buffer.
    let grew = big_rss.saturating_sub(small_rss);
    assert!(
        grew < 64 << 10,
        "verifying {size} bytes took {big_rss} KiB at its peak, {grew} KiB more than {small_rss} KiB for a small one"
    );
}
