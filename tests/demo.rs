//! `stapsteen demo` as a new user meets it: every command it prints is run as printed, its
//! one-time code starts an enrolment in the console, its audit events are short lines, and
//! Ctrl-C stops it and removes its directory.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::io::BufRead;
use std::process::{Command, Output, Stdio};

use common::{stderr, stdout};
use serde_json::json;

/// Deletes a network namespace and what runs in it.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let pids = Command::new("ip")
            .args(["netns", "pids", &self.0])
            .output()
            .unwrap();
        for pid in stdout(&pids).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

impl Netns {
    /// `sh -c LINE` in the namespace, with `stdin`.
    fn sh(&self, line: &str, stdin: &[u8]) -> Output {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.0, "sh", "-c", line])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let data = stdin.to_vec();
        std::thread::spawn(move || std::io::Write::write_all(&mut input, &data));
        child.wait_with_output().unwrap()
    }
}

#[test]
fn the_demo_prints_commands_that_work_as_printed() {
    if !common::prerequisites() {
        return;
    }
    // In a namespace of its own, so its loopback ports are free.
    let ns = Netns(format!("ssD{}", std::process::id()));
    for args in [
        vec!["netns", "add", &ns.0],
        vec!["-n", &ns.0, "link", "set", "lo", "up"],
    ] {
        assert!(Command::new("ip").args(&args).status().unwrap().success());
    }
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("demo.stderr");
    let mut demo = Command::new("ip")
        .args(["netns", "exec", &ns.0, common::bin(), "demo"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // What the demo prints before its audit events: the commands to try.
    // Read on a thread to the end, so that the demo's last words do not meet a closed pipe.
    let (tx, rx) = std::sync::mpsc::channel();
    let out = demo.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = Vec::new();
    for line in rx.iter() {
        if line.starts_with("Audit events follow below") {
            break;
        }
        printed.push(line);
    }
    let text = printed.join("\n");
    assert!(text.contains("stapsteen demo is running"), "{text}");
    // Each command line, without its comment and without the "Recordings:" label.
    let commands: Vec<String> = printed
        .iter()
        .map(|l| l.trim().trim_start_matches("Recordings:").trim())
        .filter(|l| {
            ["ssh ", "sftp ", "stapsteen "]
                .iter()
                .any(|p| l.starts_with(p))
                && !l.starts_with("stapsteen demo is running")
        })
        .map(|l| l.split(" #").next().unwrap().trim().to_owned())
        .collect();
    assert_eq!(commands.len(), 8, "{commands:#?}");
    let code = printed
        .iter()
        .find_map(|l| l.trim().strip_prefix("code "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no enrolment code in:\n{text}"))
        .to_owned();
    let workdir = commands[0]
        .split_whitespace()
        .find_map(|w| w.strip_prefix("IdentityAgent="))
        .map(|sock| std::path::Path::new(sock).parent().unwrap().to_owned())
        .unwrap();

    let mut session = None;
    for command in &commands {
        let words: Vec<&str> = command.split_whitespace().collect();
        let line = command.replacen("stapsteen ", &format!("{} ", common::bin()), 1);
        let out = if words[0] == "sftp" {
            // Batch mode, so that a failed command is an error; the rest as printed.
            let out = ns.sh(&line.replacen("sftp ", "sftp -b - ", 1), b"pwd\n");
            assert!(
                stdout(&out).contains("Remote working directory: /"),
                "{command}: {}{}",
                stdout(&out),
                stderr(&out)
            );
            out
        } else if words.contains(&"-t") {
            // A person at a terminal: the prompt, a command, exit.
            let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/pty_drive.py");
            let steps = json!([
                ["expect", "# "],
                ["send", "echo demo-$((6*7)); exit\r"],
                ["expect", "demo-42"]
            ]);
            let out = Command::new("ip")
                .args(["netns", "exec", &ns.0, "python3", driver])
                .arg(steps.to_string())
                .args(["--", "sh", "-c", &line])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                stdout(&out).contains("demo-42"),
                "{command}: {}",
                stdout(&out)
            );
            out
        } else if words.last() == Some(&"ID") {
            let id = session.as_ref().expect("recordings list named the session");
            let out = ns.sh(&format!("{} {id}", line.trim_end_matches("ID")), b"");
            assert!(
                stdout(&out).contains("demo-42"),
                "{command}: {}",
                stdout(&out)
            );
            out
        } else {
            let out = ns.sh(&line, b"");
            let seen = stdout(&out);
            if words.last() == Some(&"alice@127.0.0.1") {
                assert!(
                    seen.contains("you may reach now") && seen.contains("demo"),
                    "{seen}"
                );
            } else if words.last() == Some(&"uptime") {
                assert!(seen.contains("load average"), "{command}: {seen}");
            } else if command.contains(" recordings list ") {
                // The shell session above, the only recording: `ID  ADMIN  TARGET ...`.
                session = seen
                    .lines()
                    .find(|l| l.split_whitespace().nth(1) == Some("alice"))
                    .and_then(|l| l.split_whitespace().next())
                    .map(str::to_owned);
                assert!(session.is_some(), "{command}: {seen}");
            } else if command.contains(" recordings verify ") {
                assert!(seen.contains("sealed"), "{command}: {seen}");
            } else if command.contains(" audit verify ") {
                assert!(seen.contains("entries verified"), "{command}: {seen}");
            } else {
                panic!("a printed command this test does not know: {command}");
            }
            out
        };
        assert!(
            out.status.success(),
            "{command}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }

    // The one-time code starts an enrolment in the console.
    let curl = |args: &[&str]| {
        let mut all = vec!["curl", "-sk", "--max-time", "5"];
        all.extend(args);
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.0])
            .args(all)
            .output()
            .unwrap();
        stdout(&out)
    };
    let status = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "https://localhost:8443/enrol",
    ]);
    assert_eq!(status, "200");
    let body = curl(&[
        "-H",
        "origin: https://localhost:8443",
        "-H",
        "content-type: application/json",
        "-d",
        &format!(r#"{{"name":"sec.reviewer","code":"{code}"}}"#),
        "https://localhost:8443/enrol/start",
    ]);
    assert!(body.contains("\"publicKey\""), "{body}");

    // Its audit events are short lines without empty fields, not JSON.
    let events = std::fs::read_to_string(&log).unwrap();
    let auth_ok = events
        .lines()
        .find(|l| l.contains(" AUTH_OK "))
        .unwrap_or_else(|| panic!("no AUTH_OK line:\n{events}"));
    let words: Vec<&str> = auth_ok.split_whitespace().collect();
    assert!(
        words[0].len() == 8 && words[0].matches(':').count() == 2,
        "{auth_ok}"
    );
    assert_eq!(words[1..4], ["AUTH_OK", "alice", "from"], "{auth_ok}");
    assert!(
        auth_ok.contains(" key SHA256:") && auth_ok.contains(" flags=up,uv"),
        "{auth_ok}"
    );
    assert!(
        !events.contains("{\"") && !events.contains("=\"\""),
        "{events}"
    );

    // Ctrl-C: the demo stops and removes its directory.
    assert!(workdir.is_dir());
    let _ = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status();
    let status = demo.wait().unwrap();
    let last: Vec<String> = rx.iter().collect();
    assert!(status.success(), "{status}: {last:?}");
    assert!(
        last.iter()
            .any(|l| l == "stapsteen demo stopped and cleaned up."),
        "{last:?}"
    );
    assert!(!workdir.exists(), "{} was left behind", workdir.display());
}
