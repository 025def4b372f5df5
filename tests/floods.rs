//! Floods from a logged-in admin: requests beyond the connection's budget close it, and a
//! terminal size beyond 1000x1000 is clamped before the target and the recording see it, and an
//! oversized environment value is refused.
#![allow(clippy::unwrap_used, clippy::panic)]

#[macro_use]
mod common;

use std::process::Command;

use common::{BASTION, Env, Options, stderr, stdout};
use serde_json::json;

#[test]
fn a_huge_terminal_is_clamped_for_the_target_and_the_recording() {
    let env = testbed!();
    let steps = json!([
        ["expect", "$ "],
        ["resize", 65535, 65535],
        ["send", "stty size\r"],
        ["expect", "1000 1000"],
        ["send", "exit\r"]
    ]);
    let out = env.ssh_pty("alice", &["pacs01", "env PS1='$ ' bash --norc -i"], steps);
    assert!(out.status.success(), "{}", stdout(&out));
    let end = env.wait_audit("SESSION_END", |_| true);
    let cast = env.cast_of(&end);
    assert!(cast.contains("\"1000x1000\""), "{cast}");
    assert!(!cast.contains("65535"), "{cast}");
}

#[test]
fn a_request_flood_closes_the_connection() {
    let env = testbed!();
    let forwards = |n: usize| -> Vec<String> {
        (0..n)
            .flat_map(|i| ["-R".to_owned(), format!("{}:127.0.0.1:22", 10000 + i)])
            .collect()
    };
    // Positive control: a few refused forwards are refused, and the session goes on.
    let mut args = forwards(3);
    args.extend([
        format!("alice@{BASTION}"),
        "pacs01".into(),
        "echo still-here".into(),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.run("ssh", "agent.sock", &refs, None);
    assert_eq!(stdout(&out), "still-here\n", "{}", stderr(&out));
    env.wait_audit("REQUEST_DENIED", |e| e["reason"] == "remote_forwarding");

    // More than the connection's budget (100 at once): it is closed.
    let mut args = forwards(150);
    args.extend([
        format!("alice@{BASTION}"),
        "pacs01".into(),
        "sleep 5; echo survived".into(),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.run("ssh", "agent.sock", &refs, None);
    assert!(!stdout(&out).contains("survived"), "{}", stdout(&out));
    assert!(!out.status.success());
    let flood = env.wait_audit("REQUEST_FLOOD", |e| {
        e["reason"] == "request flood (remote_forwarding): connection closed"
    });
    assert_eq!(flood["admin"], "alice");
    // A new connection has a budget of its own.
    let out = env.ssh("alice", &["pacs01", "echo", "back"], None);
    assert_eq!(stdout(&out), "back\n", "{}", stderr(&out));
}

#[test]
fn an_oversized_environment_value_is_refused() {
    let env = testbed!();
    // LC_BIG of 100 000 bytes (each such value would be kept until its channel starts) is
    // refused; LANG beside it, of normal size, still reaches the target (the positive control).
    let big = "x".repeat(100_000);
    let mut args = env.ssh_opts("agent.sock");
    args.extend([
        "-o".into(),
        "SendEnv=LANG LC_BIG".into(),
        format!("alice@{BASTION}"),
        "pacs01".into(),
        "echo \"$LANG|${#LC_BIG}\"".into(),
    ]);
    let out = Command::new("ip")
        .args(["netns", "exec", &env.ns_admin, "env", "LANG=nl_NL.UTF-8"])
        .arg(format!("LC_BIG={big}"))
        .arg("ssh")
        .args(&args)
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "nl_NL.UTF-8|0\n", "{}", stderr(&out));
}
