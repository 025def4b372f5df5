//! End-to-end: real OpenSSH clients, through stapsteen, to real sshd targets, in namespaces.
#![allow(clippy::unwrap_used, clippy::panic)]

#[macro_use]
mod common;

use common::{BASTION, Env, Options, PACS01, held_session, stderr, stdout, wait_for_file};
use serde_json::json;

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// A TCP connection from the admin namespace to pacs01's SSH port: "reached", or why not
/// (`timeout` exits 124 when the connection attempt hangs, as it does when packets are dropped).
fn direct_tcp(env: &Env) -> String {
    let out = env.client(
        "bash",
        &[
            "-c",
            &format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{PACS01}/22' 2>&1 && echo reached || echo rc=$?"),
        ],
        None,
    );
    stdout(&out)
}

/// `ssh root@pacs01` straight from the admin namespace, past the bastion.
fn direct_ssh(env: &Env) -> std::process::Output {
    env.run(
        "ssh",
        "agent.sock",
        &["-o", "ConnectTimeout=2", &format!("root@{PACS01}"), "true"],
        None,
    )
}

#[test]
fn admin_cannot_reach_management_network_directly() {
    // Without stapsteen's table, so that the bastion's not forwarding is all that stands in the
    // way (firewall.rs shows the table stopping the same packets with forwarding on).
    let env = testbed!(Options {
        firewall: false,
        ..Default::default()
    });
    let forwarding = |on: bool| {
        let set = format!("net.ipv4.ip_forward={}", u8::from(on));
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &env.ns_bastion, "sysctl", "-qw", &set])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    // The route exists (via the bastion), but the bastion does not forward: the packets are
    // dropped, so the attempt times out (not refused, not unroutable).
    assert!(
        direct_tcp(&env).ends_with("rc=124\n"),
        "{}",
        direct_tcp(&env)
    );
    let out = direct_ssh(&env);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains(&format!(
            "connect to host {PACS01} port 22: Connection timed out"
        )),
        "{}",
        stderr(&out)
    );
    // Control: with forwarding on, the same attempts get through, and ssh gets as far as the
    // target's host key (unknown to it). So the checks above can fail.
    forwarding(true);
    assert_eq!(direct_tcp(&env), "reached\n");
    let out = direct_ssh(&env);
    // (StrictHostKeyChecking: ssh got the target's host key, so the network carried it there.)
    assert!(
        stderr(&out).contains("Host key verification failed."),
        "{}",
        stderr(&out)
    );
    forwarding(false);
    assert!(
        direct_tcp(&env).ends_with("rc=124\n"),
        "{}",
        direct_tcp(&env)
    );
    // Through stapsteen it works.
    let out = env.ssh("alice", &["pacs01", "echo", "through"], None);
    assert_eq!(stdout(&out), "through\n", "{}", stderr(&out));
}

#[test]
fn exec_exit_codes_stdin_eof_and_audit() {
    let env = testbed!();
    let out = env.ssh("alice", &["pacs01", "exit 42"], None);
    assert_eq!(out.status.code(), Some(42));
    let out = env.ssh(
        "alice",
        &["pacs01", "cat; echo done; echo to-stderr >&2"],
        Some(b"line one\nline two\n"),
    );
    assert_eq!(stdout(&out), "line one\nline two\ndone\n");
    assert!(stderr(&out).contains("to-stderr"));
    let start = env.wait_audit("SESSION_START", |e| {
        e["detail"].as_str().unwrap().contains("cat; echo done")
    });
    assert_eq!(start["admin"], "alice");
    assert_eq!(start["target_host"], "pacs01");
    assert!(
        start["fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:")
    );
    let end = env.wait_audit("SESSION_END", |e| e["session"] == start["session"]);
    let d = Env::detail(&end);
    assert_eq!(d["bytes_in"], 18);
    assert_eq!(d["exit_status"], 0);
    assert_eq!(d["sha256_in"], sha256_hex(b"line one\nline two\n"));
    assert_eq!(d["sha256_out"], sha256_hex(b"line one\nline two\ndone\n"));
    // A command killed by a signal: the signal is passed on and audited.
    env.ssh("alice", &["pacs01", "kill -TERM $$"], None);
    env.wait_audit("SESSION_END", |e| Env::detail(e)["exit_signal"] == "TERM");
    // Only LANG, LC_* and TERM reach the target.
    let mut args = env.ssh_opts("agent.sock");
    args.extend([
        "-o".into(),
        "SendEnv=LANG LC_TIME LD_PRELOAD".into(),
        format!("alice@{BASTION}"),
        "pacs01".into(),
        "echo \"$LANG|$LC_TIME|$LD_PRELOAD|\"".into(),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = std::process::Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &env.ns_admin,
        "env",
        "LANG=nl_NL.UTF-8",
        "LC_TIME=C",
        "LD_PRELOAD=/tmp/evil.so",
        "ssh",
    ])
    .args(&refs);
    let out = cmd.output().unwrap();
    assert_eq!(stdout(&out), "nl_NL.UTF-8|C||\n", "{}", stderr(&out));
    let ok = env.wait_audit("AUTH_OK", |_| true);
    assert_eq!(Env::detail(&ok)["key_type"], "sk-ssh-ed25519@openssh.com");
    assert_eq!(Env::detail(&ok)["key_comment"], "software security key");
    // The target's own log names the person and the session (certificate key id).
    let sshd_log = std::fs::read_to_string(env.path("pacs01_sshd.log")).unwrap();
    assert!(
        sshd_log.contains(&format!(
            "stapsteen admin=alice session={}",
            start["session"].as_str().unwrap()
        )),
        "{sshd_log}"
    );
}

#[test]
fn listing_and_target_forms() {
    let env = testbed!();
    let out = env.ssh("alice", &[], None);
    let text = stdout(&out);
    assert!(text.contains("pacs01") && text.contains("no end"), "{text}");
    assert!(
        !text.contains("import01"),
        "alice has no grant for import01: {text}"
    );
    let out = env.ssh(
        &format!("alice:{}@pacs01", env.account),
        &["echo", "fixed"],
        None,
    );
    assert_eq!(stdout(&out), "fixed\n", "{}", stderr(&out));
    let out = env.ssh(
        "alice",
        &[&format!("{}@pacs01", env.account), "echo", "named"],
        None,
    );
    assert_eq!(stdout(&out), "named\n");

    // Each command the listing suggests works as printed, with the bastion's address for
    // BASTION and a command for COMMAND.
    let suggested: Vec<Vec<String>> = text
        .lines()
        .filter_map(|l| l.trim_start().split("    ").next())
        .filter(|c| c.starts_with("ssh ") || c.starts_with("sftp "))
        .map(|c| {
            c.replace("BASTION", BASTION)
                .split_whitespace()
                .map(|w| w.replace("COMMAND", "echo listed-command"))
                .collect()
        })
        .collect();
    assert_eq!(suggested.len(), 3, "{text}");
    for cmd in suggested {
        let (program, args) = (cmd[0].as_str(), &cmd[1..]);
        let mut all = env.ssh_opts("agent.sock");
        let out = if program == "sftp" {
            all.extend(["-b".into(), "-".into()]);
            all.extend(args.iter().cloned());
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            let out = env.client("sftp", &refs, Some(b"pwd\n"));
            assert!(
                stdout(&out).contains("Remote working directory: /"),
                "{cmd:?}: {}{}",
                stdout(&out),
                stderr(&out)
            );
            out
        } else if args.first().is_some_and(|a| a == "-t") {
            let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/pty_drive.py");
            let steps = json!([
                ["expect", "# "],
                ["send", "echo listed-$((6*7)); exit\r"],
                ["expect", "listed-42"]
            ]);
            let mut drive = vec![
                driver.to_owned(),
                steps.to_string(),
                "--".into(),
                "ssh".into(),
            ];
            drive.extend(all);
            drive.extend(args.iter().cloned());
            let refs: Vec<&str> = drive.iter().map(String::as_str).collect();
            env.client("python3", &refs, None)
        } else {
            all.extend(args.iter().cloned());
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            let out = env.client("ssh", &refs, None);
            assert_eq!(
                stdout(&out),
                "listed-command\n",
                "{cmd:?}: {}",
                stderr(&out)
            );
            out
        };
        assert!(
            out.status.success(),
            "{cmd:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
}

#[test]
fn shell_with_pty_resize_and_recording() {
    let env = testbed!();
    let steps = json!([
        ["expect", "$"],
        ["send", "stty size\r"],
        ["expect", "24 80"],
        ["resize", 30, 100],
        // The new size reaches the target's terminal some time after the local one changed:
        // wait for it there (at most 5 s), then show it.
        [
            "send",
            "for i in $(seq 100); do [ \"$(stty size)\" = '30 100' ] && break; sleep 0.05; done; stty size | sed s/^/size=/\r"
        ],
        ["expect", "size=30 100"],
        [
            "send",
            "printf 'marker-%s\\n' $((6*7)); printf 'caf\\303\\251 \\342\\202\\254\\n'\r"
        ],
        ["expect", "marker-42"],
        ["send", "exit 7\r"]
    ]);
    let out = env.ssh_pty("alice", &["pacs01", "env PS1='$ ' bash --norc -i"], steps);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let end = env.wait_audit("SESSION_END", |_| true);
    let id = end["session"].as_str().unwrap().to_owned();
    let cast = std::fs::read_to_string(env.recordings_dir().join(format!("{id}.cast"))).unwrap();
    let mut lines = cast.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(80), Some(24))
    );
    let events: Vec<serde_json::Value> = lines.map(|l| serde_json::from_str(l).unwrap()).collect();
    let joined = |kind: &str| -> String {
        events
            .iter()
            .filter(|e| e[1] == kind)
            .map(|e| e[2].as_str().unwrap())
            .collect()
    };
    assert!(joined("o").contains("marker-42"));
    assert!(joined("o").contains("café €"), "multi-byte output kept");
    assert!(joined("i").contains("printf 'marker-%s"), "input recorded");
    assert!(joined("r").contains("100x30"), "resize recorded");
    let markers = joined("m");
    assert!(markers.contains("start: alice") && markers.contains("target: connected to pacs01"));
    assert!(markers.contains("end: exit status 7"), "{markers}");
    // Timestamps never go backwards.
    let times: Vec<f64> = events.iter().map(|e| e[0].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));

    // The standard player reads it.
    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/pty_drive.py");
    let played = std::process::Command::new("python3")
        .args([
            driver,
            "[]",
            "--",
            "asciinema",
            "cat",
            env.recordings_dir()
                .join(format!("{id}.cast"))
                .to_str()
                .unwrap(),
        ])
        .output()
        .unwrap();
    assert!(played.status.success(), "{}", stderr(&played));
    assert!(stdout(&played).contains("marker-42"));

    let cfg = env.path("stapsteen.toml");
    let list = std::process::Command::new(common::bin())
        .args(["recordings", "list", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let list = stdout(&list);
    assert!(
        list.contains(&id) && list.contains("alice") && list.contains("pacs01"),
        "{list}"
    );
    let cat = std::process::Command::new(common::bin())
        .args(["recordings", "cat", "--config", cfg.to_str().unwrap(), &id])
        .output()
        .unwrap();
    assert!(stdout(&cat).contains("marker-42"));
    let bad = std::process::Command::new(common::bin())
        .args([
            "recordings",
            "cat",
            "--config",
            cfg.to_str().unwrap(),
            "../../etc/passwd",
        ])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("\"../../etc/passwd\" is not a recording id"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn scp_and_sftp_up_and_down() {
    let env = testbed!();
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let local = env.path("up.bin");
    std::fs::write(&local, &data).unwrap();
    let remote = env.path("remote.bin");
    let out = env.run(
        "scp",
        "agent.sock",
        &[
            &local.display().to_string(),
            &format!("alice+pacs01@{BASTION}:{}", remote.display()),
        ],
        None,
    );
    assert!(out.status.success(), "scp up: {}", stderr(&out));
    assert_eq!(std::fs::read(&remote).unwrap(), data);

    let down = env.path("down.bin");
    let out = env.run(
        "scp",
        "agent.sock",
        &[
            "-O",
            &format!("alice+pacs01@{BASTION}:{}", remote.display()),
            &down.display().to_string(),
        ],
        None,
    );
    assert!(out.status.success(), "legacy scp down: {}", stderr(&out));
    assert_eq!(std::fs::read(&down).unwrap(), data);

    let via_sftp = env.path("sftp.bin");
    let batch = format!(
        "put {} {}.2\nget {}.2 {}\n",
        local.display(),
        remote.display(),
        remote.display(),
        via_sftp.display()
    );
    let out = env.run(
        "sftp",
        "agent.sock",
        &[
            "-b",
            "-",
            "-o",
            &format!("User=alice:{}@pacs01", env.account),
            BASTION,
        ],
        Some(batch.as_bytes()),
    );
    assert!(out.status.success(), "sftp: {}", stderr(&out));
    assert_eq!(std::fs::read(&via_sftp).unwrap(), data);
    // The sftp session moved the file both ways; its audit event says so.
    env.wait_audit("SESSION_END", |e| {
        let d = Env::detail(e);
        e["detail"].as_str().unwrap().contains("subsystem sftp")
            && d["bytes_in"].as_u64().unwrap() > 3_000_000
            && d["bytes_out"].as_u64().unwrap() > 3_000_000
    });

    // sftp without a target in the user name is refused with a hint.
    let out = env.run(
        "sftp",
        "agent.sock",
        &["-b", "-", &format!("alice@{BASTION}")],
        Some(b"ls\n"),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "stapsteen: subsystem sftp needs the target in the user name, e.g. sftp alice+TARGET@bastion"
        ),
        "{}",
        stderr(&out)
    );
}

fn amsterdam_now() -> jiff::Zoned {
    jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::get("Europe/Amsterdam").unwrap())
}

fn weekday_name(z: &jiff::Zoned) -> &'static str {
    ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][z.weekday().to_monday_zero_offset() as usize]
}

#[test]
fn every_refusal_reason_is_clear_and_audited() {
    let now = amsterdam_now();
    let fmt = |z: &jiff::Zoned| z.strftime("%Y-%m-%d %H:%M").to_string();
    let in_two_days = now.checked_add(jiff::Span::new().days(2)).unwrap();
    let extra = format!(
        r#"
[[grant]]
name = "expired"
admins = ["bob"]
targets = ["pacs01"]
accounts = ["root"]
valid_until = "{past}"

[[grant]]
name = "later"
admins = ["bob"]
targets = ["import01"]
accounts = ["root"]
valid_from = "{future}"

[[grant]]
name = "vendor-window"
admins = ["alice"]
targets = ["import01"]
accounts = ["root"]
windows = ["{other_day} 09:00-12:00"]
"#,
        past = fmt(&now.checked_sub(jiff::Span::new().days(1)).unwrap()),
        future = fmt(&in_two_days),
        other_day = weekday_name(&in_two_days),
    );
    let env = testbed!(Options {
        extra_policy: extra,
        ..Default::default()
    });
    let cases: [(&str, &str, &str, &str); 5] = [
        ("alice", "nosuch", "unknown_target", "unknown target"),
        ("bob", "pacs-changed", "no_grant", "no grant"),
        (
            "alice",
            "import01",
            "outside_window",
            "outside the time window",
        ),
        ("bob", "pacs01", "expired", "expired"),
        ("bob", "import01", "not_yet_valid", "not valid before"),
    ];
    for (who, target, code, text) in cases {
        let agent = if who == "bob" {
            "bob-agent.sock"
        } else {
            "agent.sock"
        };
        let out = env.run(
            "ssh",
            agent,
            &[&format!("{who}@{BASTION}"), target, "true"],
            None,
        );
        assert_eq!(out.status.code(), Some(1), "{who} {target}");
        let err = stderr(&out);
        assert_eq!(
            err.lines().filter(|l| l.starts_with("stapsteen:")).count(),
            1,
            "{err}"
        );
        assert!(err.contains(text), "{who}→{target}: {err}");
        env.wait_audit("TARGET_DENIED", |e| {
            e["reason"] == code && e["admin"] == who && e["target_host"] == target
        });
    }
    let out = env.ssh("alice", &["daemon@pacs01", "true"], None);
    assert!(
        stderr(&out).contains("not in your grants"),
        "{}",
        stderr(&out)
    );
    env.wait_audit("TARGET_DENIED", |e| e["reason"] == "account_not_allowed");
}

#[test]
fn only_listed_security_keys_authenticate() {
    let mut env = testbed!();
    // A plain ed25519 key, offered directly.
    let plain = env.path("plain");
    std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            plain.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    let out = env.run(
        "ssh",
        "none",
        &[
            "-i",
            &plain.display().to_string(),
            &format!("alice@{BASTION}"),
            "pacs01",
            "true",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("Permission denied (publickey)"),
        "{}",
        stderr(&out)
    );
    env.wait_audit("AUTH_DENIED", |e| e["reason"] == "not_security_key");

    // Password and keyboard-interactive: not even offered; a client that insists gets nowhere.
    let askpass = env.path("askpass.sh");
    std::fs::write(&askpass, "#!/bin/sh\necho secret\n").unwrap();
    std::process::Command::new("chmod")
        .args(["+x", askpass.to_str().unwrap()])
        .status()
        .unwrap();
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &env.ns_admin,
            "env",
            &format!("SSH_ASKPASS={}", askpass.display()),
            "SSH_ASKPASS_REQUIRE=force",
            "setsid",
            "-w",
            "ssh",
            "-F",
            "none",
            "-o",
            &format!("UserKnownHostsFile={}", env.path("known_hosts").display()),
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            "-o",
            "PubkeyAuthentication=no",
            &format!("alice@{BASTION}"),
            "pacs01",
            "true",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("Permission denied (publickey)"),
        "{}",
        stderr(&out)
    );

    // Unknown user with a valid key.
    let out = env.ssh("mallory", &["pacs01", "true"], None);
    assert_eq!(out.status.code(), Some(255));
    env.wait_audit("AUTH_DENIED", |e| {
        e["admin"] == "mallory" && e["reason"] == "unknown_admin"
    });

    // Bob's key does not log in as alice: identity comes from the key.
    assert_eq!(
        env.run(
            "ssh",
            "bob-agent.sock",
            &[&format!("alice@{BASTION}"), "pacs01", "true"],
            None
        )
        .status
        .code(),
        Some(255)
    );
    env.wait_audit("AUTH_DENIED", |e| {
        e["admin"] == "alice" && e["reason"] == "key_not_listed"
    });

    // A listed key that is offered but never signs does not authenticate.
    env.agent("nosign.sock", "alice_key", &["--refuse-sign"]);
    let out = env.run(
        "ssh",
        "nosign.sock",
        &[&format!("alice@{BASTION}"), "pacs01", "true"],
        None,
    );
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Permission denied (publickey)"),
        "{}",
        stderr(&out)
    );
    assert!(
        !env.audit().iter().any(|e| e["code"] == "SESSION_START"),
        "no session without a signature"
    );
}

#[test]
fn changed_target_host_key_is_refused() {
    let env = testbed!();
    let out = env.ssh("alice", &["pacs-changed", "echo", "should-not-run"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(!stdout(&out).contains("should-not-run"));
    assert!(
        stderr(&out).contains("host key changed or unknown"),
        "{}",
        stderr(&out)
    );
    env.wait_audit("HOSTKEY_MISMATCH", |e| e["target_host"] == "pacs-changed");
    // With a pty the recording was already open: it is closed with the reason, not left dangling.
    let out = env.ssh_pty(
        "alice",
        &["pacs-changed"],
        json!([["expect", "host key changed or unknown"]]),
    );
    assert!(stdout(&out).contains("host key changed or unknown"));
    let end = env.wait_audit("SESSION_END", |e| {
        e["target_host"] == "pacs-changed" && Env::detail(e)["pty"] == true
    });
    let id = end["session"].as_str().unwrap();
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(env.recordings_dir().join(format!("{id}.json"))).unwrap(),
    )
    .unwrap();
    assert!(
        meta["end_reason"].as_str().unwrap().contains("host key"),
        "{meta}"
    );
    let cast = std::fs::read_to_string(env.recordings_dir().join(format!("{id}.cast"))).unwrap();
    assert!(
        cast.lines()
            .last()
            .unwrap()
            .contains("end: pacs-changed: host key changed"),
        "{cast}"
    );
}

#[test]
fn idle_timeout_ends_session() {
    let env = testbed!(Options {
        idle_timeout: "2s",
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let steps = json!([["expect", "ready"], ["expect", "idle for 2s"]]);
    let out = env.ssh_pty("alice", &["pacs01", "echo ready; sleep 60"], steps);
    assert!(started.elapsed() < std::time::Duration::from_secs(40));
    assert!(stdout(&out).contains("idle for 2s"), "{}", stdout(&out));
    env.wait_audit("SESSION_END", |e| {
        e["reason"].as_str().unwrap().contains("idle")
    });
}

#[test]
fn session_ends_when_grant_expires() {
    // To the second: a time cut to the minute could fall a second from now and expire the grant
    // before the session starts.
    let until = amsterdam_now()
        .checked_add(jiff::Span::new().seconds(10))
        .unwrap();
    let extra = format!(
        "[[grant]]\nname = \"short\"\nadmins = [\"bob\"]\ntargets = [\"import01\"]\naccounts = [\"root\"]\nvalid_until = \"{}\"\n",
        until.strftime("%Y-%m-%d %H:%M:%S")
    );
    let env = testbed!(Options {
        extra_policy: extra,
        ..Default::default()
    });
    let out = env.run(
        "ssh",
        "bob-agent.sock",
        &[
            &format!("bob@{BASTION}"),
            "import01",
            "echo started; sleep 120; echo too-long",
        ],
        None,
    );
    assert!(stdout(&out).contains("started") && !stdout(&out).contains("too-long"));
    assert!(
        stderr(&out).contains("grant short ended"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn recording_failure_refuses_session() {
    let env = testbed!();
    let dir = env.recordings_dir();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let steps = json!([["expect", "recording cannot be written"]]);
    let out = env.ssh_pty("alice", &["pacs01", "echo should-not-run"], steps);
    assert!(!stdout(&out).contains("should-not-run"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("recording cannot be written"),
        "{}",
        stdout(&out)
    );
    env.wait_audit("RECORDING_FAILED", |e| e["admin"] == "alice");
    assert!(
        !std::fs::read_to_string(env.path("pacs01_sshd.log"))
            .unwrap()
            .contains("Accepted publickey"),
        "target never dialled"
    );
    // That recording's failure is its session's alone: no storage alert. A command without a
    // pty is recorded too, so it is refused the same way; once the directory is back, it runs.
    assert!(!env.audit().iter().any(|e| e["code"] == "STORAGE_FAILED"));
    let out = env.ssh("alice", &["pacs01", "echo", "ok"], None);
    assert!(
        stderr(&out).contains("session refused: the recording cannot be written"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    assert_eq!(
        stdout(&env.ssh("alice", &["pacs01", "echo", "ok"], None)),
        "ok\n"
    );
}

#[test]
fn policy_reload_keeps_live_sessions_and_rejects_invalid_policy() {
    let env = testbed!();
    // The session lasts until the test has checked both reloads, so it cannot pass by having
    // ended before them.
    let release = env.path("release-live");
    let live = env.spawn_ssh(
        "agent.sock",
        &[
            &format!("alice@{BASTION}"),
            "pacs01",
            &held_session(&env.path("live-started"), &release, "survived"),
        ],
    );
    wait_for_file(&env.path("live-started"));
    // An invalid policy is refused and the old one stays.
    std::fs::write(
        env.path("policy.toml"),
        "[[admin]]\nname = \"Alice\"\nbogus = 1\n",
    )
    .unwrap();
    env.reload();
    let failed = env.wait_audit("POLICY_RELOAD_FAILED", |_| true);
    assert!(
        Env::detail(&failed)["errors"]
            .as_str()
            .unwrap()
            .contains("policy.toml:"),
        "{failed}"
    );
    assert_eq!(
        stdout(&env.ssh("alice", &["pacs01", "echo", "still"], None)),
        "still\n"
    );
    // A valid policy that takes pacs-changed out of alice's grant takes effect; the live session
    // on pacs01, which the grant still covers, survives it.
    let narrower = env.policy_text("").replace(
        "targets = [\"pacs01\", \"pacs-changed\"]",
        "targets = [\"pacs01\"]",
    );
    std::fs::write(env.path("policy.toml"), narrower).unwrap();
    env.reload();
    env.wait_audit("POLICY_LOADED", |_| true);
    let out = env.ssh("alice", &["pacs-changed", "true"], None);
    assert!(stderr(&out).contains("no grant"), "{}", stderr(&out));
    assert!(
        !env.audit().iter().any(|e| e["code"] == "SESSION_REVOKED"),
        "nothing was revoked"
    );
    assert!(!live.is_finished(), "the live session ended early");
    std::fs::write(&release, b"").unwrap();
    let live = live.join().unwrap();
    assert_eq!(stdout(&live), "survived\n", "{}", stderr(&live));
}

#[test]
fn silent_connection_is_closed_after_login_grace() {
    let env = testbed!();
    // Connect and say nothing: the bastion closes the connection after login_grace (5 s here).
    let out = env.client(
        "bash",
        &["-c", &format!("exec 3<>/dev/tcp/{BASTION}/22; start=$SECONDS; cat <&3 >/dev/null; echo closed-after $((SECONDS-start))")],
        None,
    );
    let text = stdout(&out);
    let secs: u64 = text.trim().rsplit(' ').next().unwrap().parse().unwrap();
    assert!((4..=10).contains(&secs), "{text}");
    env.wait_audit("LOGIN_TIMEOUT", |e| {
        e["source"].as_str().unwrap().starts_with("10.77.1.2:")
    });
}

#[test]
fn static_key_target_and_forwarding_refusals() {
    let extra = format!(
        "[[target]]\nname = \"legacy01\"\naddress = \"{}\"\nhost_keys = [\"{{import}}\"]\naccounts = [\"root\"]\nstatic_key = \"legacy_key\"\n\n\
         [[grant]]\nname = \"legacy\"\nadmins = [\"alice\"]\ntargets = [\"legacy01\"]\naccounts = [\"root\"]\n",
        common::IMPORT01
    );
    // As under the shipped unit: a credentials directory (here holding none of the keys), which
    // must not capture a key file that has no credential name.
    let credentials: &'static str = Box::leak(
        tempfile::tempdir()
            .unwrap()
            .keep()
            .display()
            .to_string()
            .into_boxed_str(),
    );
    let env = testbed!(Options {
        extra_policy: String::new(),
        bastion_env: vec![("CREDENTIALS_DIRECTORY", credentials)],
        ..Default::default()
    });
    env.write_policy(&extra.replace("{import}", &env.import01_hostkey));
    env.reload();
    env.wait_audit("POLICY_LOADED", |_| true);
    let out = env.ssh("alice", &["legacy01", "echo", "static-key"], None);
    assert_eq!(stdout(&out), "static-key\n", "{}", stderr(&out));

    // -W / ProxyJump to a target's SSH port (an unrecorded tunnel): refused, audited.
    let out = env.run(
        "ssh",
        "agent.sock",
        &["-W", &format!("{PACS01}:22"), &format!("alice@{BASTION}")],
        Some(b""),
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("administratively prohibited"),
        "{}",
        stderr(&out)
    );
    env.wait_audit("FORWARD_DENIED", |e| {
        e["reason"] == "unrecorded_tunnel" && e["target_host"] == PACS01
    });
    // Agent forwarding: refused, the session itself still works.
    assert_eq!(
        stdout(&env.run(
            "ssh",
            "agent.sock",
            &[
                "-A",
                &format!("alice@{BASTION}"),
                "pacs01",
                "echo \"agent:$SSH_AUTH_SOCK\""
            ],
            None
        )),
        "agent:\n"
    );
    env.wait_audit("REQUEST_DENIED", |e| e["reason"] == "agent_forwarding");
    // Remote forwarding: refused.
    let out = env.run(
        "ssh",
        "agent.sock",
        &[
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            "2222:127.0.0.1:22",
            &format!("alice@{BASTION}"),
            "pacs01",
            "true",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("remote port forwarding failed for listen port 2222"),
        "{}",
        stderr(&out)
    );
    env.wait_audit("REQUEST_DENIED", |e| e["reason"] == "remote_forwarding");
}

#[test]
fn input_recording_can_be_off() {
    let env = testbed!();
    let text = env.policy_text("").replace(
        "max_session = \"1h\"",
        "max_session = \"1h\"\nrecord_input = false",
    );
    std::fs::write(env.path("policy.toml"), text).unwrap();
    env.reload();
    env.wait_audit("POLICY_LOADED", |_| true);
    let steps = json!([
        ["expect", "$"],
        ["send", "echo secret-$((1+1))\r"],
        ["expect", "secret-2"],
        ["send", "exit\r"]
    ]);
    let out = env.ssh_pty("alice", &["pacs01", "env PS1='$ ' bash --norc -i"], steps);
    assert!(out.status.success(), "{}", stdout(&out));
    let end = env.wait_audit("SESSION_END", |_| true);
    let cast = env.cast_of(&end);
    assert!(cast.contains("secret-2"), "output is recorded");
    assert!(!cast.contains("\"i\""), "input is not: {cast}");
}

#[test]
fn unauthenticated_connections_are_limited() {
    let env = testbed!(Options {
        max_unauthenticated: 2,
        ..Default::default()
    });
    // Two silent connections hold both places (each has had the server's banner, which comes
    // after its place is taken); a third is closed at once.
    let out = env.client(
        "bash",
        &["-c", &format!(
            "exec 3<>/dev/tcp/{BASTION}/22 4<>/dev/tcp/{BASTION}/22; read -r b <&3; read -r b <&4; \
             exec 5<>/dev/tcp/{BASTION}/22; start=$SECONDS; cat <&5 >/dev/null; echo third-closed-after $((SECONDS-start))"
        )],
        None,
    );
    assert!(
        stdout(&out).contains("third-closed-after 0"),
        "{}",
        stdout(&out)
    );
    env.wait_audit("CONN_LIMIT", |_| true);
}

#[test]
fn maximum_session_length_ends_session() {
    let extra = "[[grant]]\nname = \"brief\"\nadmins = [\"bob\"]\ntargets = [\"import01\"]\naccounts = [\"root\"]\nmax_session = \"3s\"\n";
    let env = testbed!(Options {
        extra_policy: extra.into(),
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let out = env.run(
        "ssh",
        "bob-agent.sock",
        &[
            &format!("bob@{BASTION}"),
            "import01",
            "echo started; sleep 60; echo too-long",
        ],
        None,
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(stdout(&out).contains("started") && !stdout(&out).contains("too-long"));
    assert!(
        stderr(&out).contains("maximum session length reached"),
        "{}",
        stderr(&out)
    );
    env.wait_audit("SESSION_END", |e| {
        e["reason"]
            .as_str()
            .unwrap()
            .contains("maximum session length")
    });
}

#[test]
fn ecdsa_security_key_works_end_to_end() {
    let mut env = testbed!();
    env.agent("carol.sock", "carol_key", &["--ecdsa"]);
    let carol = std::fs::read_to_string(env.path("carol_key.sk.pub")).unwrap();
    assert!(carol.starts_with("sk-ecdsa-sha2-nistp256@openssh.com "));
    env.write_policy(&format!(
        "[[admin]]\nname = \"carol\"\nkeys = [\"{}\"]\n\n[[grant]]\nname = \"carol\"\nadmins = [\"carol\"]\ntargets = [\"pacs01\"]\naccounts = [\"root\"]\n",
        carol.trim()
    ));
    env.reload();
    env.wait_audit("POLICY_LOADED", |_| true);
    let out = env.run(
        "ssh",
        "carol.sock",
        &[&format!("carol@{BASTION}"), "pacs01", "echo", "p256"],
        None,
    );
    assert_eq!(stdout(&out), "p256\n", "{}", stderr(&out));
    let ok = env.wait_audit("AUTH_OK", |e| e["admin"] == "carol");
    assert_eq!(
        Env::detail(&ok)["key_type"],
        "sk-ecdsa-sha2-nistp256@openssh.com"
    );
}

#[test]
fn revoking_an_admin_ends_their_live_sessions() {
    let grant = "[[grant]]\nname = \"bob-import\"\nadmins = [\"bob\"]\ntargets = [\"import01\"]\naccounts = [\"root\"]\n";
    let env = testbed!(Options {
        extra_policy: grant.into(),
        ..Default::default()
    });
    // Both sessions last until the test releases them: bob's can only end by revocation.
    let release = env.path("release");
    let spawn = |agent: &str, user: &str, target: &str| {
        let held = held_session(&env.path(&format!("{user}-started")), &release, "survived");
        env.spawn_ssh(
            agent,
            &[
                &format!("{user}@{BASTION}"),
                target,
                &format!("echo started; {held}"),
            ],
        )
    };
    let bob = spawn("bob-agent.sock", "bob", "import01");
    let alice = spawn("agent.sock", "alice", "pacs01");
    wait_for_file(&env.path("bob-started"));
    wait_for_file(&env.path("alice-started"));
    let bob_key = std::fs::read_to_string(env.path("bob_key.sk.pub")).unwrap();
    let without_bob = env.policy_text("").replace(
        &format!(
            "[[admin]]\nname = \"bob\"\nkeys = [\"{}\"]\n",
            bob_key.trim()
        ),
        "",
    );
    assert!(!without_bob.contains("name = \"bob\""));
    std::fs::write(env.path("policy.toml"), without_bob).unwrap();
    assert!(!bob.is_finished() && !alice.is_finished());
    env.reload();
    env.wait_audit("SESSION_REVOKED", |e| e["admin"] == "bob");
    let bob = bob.join().unwrap();
    assert!(
        !stdout(&bob).contains("survived") && !stdout(&bob).contains("timed-out"),
        "{}",
        stdout(&bob)
    );
    assert!(stderr(&bob).contains("access revoked"), "{}", stderr(&bob));
    env.wait_audit("SESSION_END", |e| {
        e["admin"] == "bob" && e["reason"].as_str().unwrap().contains("access revoked")
    });
    assert!(!alice.is_finished(), "alice's session ended with bob's");
    std::fs::write(&release, b"").unwrap();
    let alice = alice.join().unwrap();
    assert_eq!(stdout(&alice), "started\nsurvived\n", "{}", stderr(&alice));
}
