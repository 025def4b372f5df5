//! End-to-end: real OpenSSH clients, through stapsteen, to real sshd targets, in namespaces.

mod common;

use common::{BASTION, Env, Options, PACS01, stderr, stdout};
use serde_json::json;

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

macro_rules! env {
    () => {
        env!(Options::default())
    };
    ($opts:expr) => {{
        if !common::prerequisites() {
            return;
        }
        Env::new($opts)
    }};
}

#[test]
fn admin_cannot_reach_management_network_directly() {
    let env = env!();
    // The route exists (via the bastion), but the bastion does not forward.
    let direct = env.client(
        "bash",
        &["-c", &format!("timeout 3 bash -c 'exec 3<>/dev/tcp/{PACS01}/22' && echo reached")],
        None,
    );
    assert!(!stdout(&direct).contains("reached"));
    let mut opts = env.ssh_opts("agent.sock");
    opts.extend(["-o".into(), "ConnectTimeout=2".into(), format!("root@{PACS01}"), "true".into()]);
    let refs: Vec<&str> = opts.iter().map(String::as_str).collect();
    assert!(!env.client("ssh", &refs, None).status.success());
    // Through stapsteen it works.
    let out = env.ssh("alice", &["pacs01", "echo", "through"], None);
    assert_eq!(stdout(&out), "through\n", "{}", stderr(&out));
}

#[test]
fn exec_exit_codes_stdin_eof_and_audit() {
    let env = env!();
    let out = env.ssh("alice", &["pacs01", "exit 42"], None);
    assert_eq!(out.status.code(), Some(42));
    let out = env.ssh("alice", &["pacs01", "cat; echo done; echo to-stderr >&2"], Some(b"line one\nline two\n"));
    assert_eq!(stdout(&out), "line one\nline two\ndone\n");
    assert!(stderr(&out).contains("to-stderr"));
    let start = env.wait_audit("SESSION_START", |e| e["detail"].as_str().unwrap().contains("cat; echo done"));
    assert_eq!(start["admin"], "alice");
    assert_eq!(start["target_host"], "pacs01");
    assert!(start["fingerprint"].as_str().unwrap().starts_with("SHA256:"));
    let end = env.wait_audit("SESSION_END", |e| e["session"] == start["session"]);
    let d = Env::detail(&end);
    assert_eq!(d["bytes_in"], 18);
    assert_eq!(d["exit_status"], 0);
    assert_eq!(d["sha256_in"], sha256_hex(b"line one\nline two\n"));
    assert_eq!(d["sha256_out"], sha256_hex(b"line one\nline two\ndone\n"));
    let ok = env.wait_audit("AUTH_OK", |_| true);
    assert_eq!(Env::detail(&ok)["key_type"], "sk-ssh-ed25519@openssh.com");
    // The target's own log names the person and the session (certificate key id).
    let sshd_log = std::fs::read_to_string(env.path("pacs01_sshd.log")).unwrap();
    assert!(sshd_log.contains(&format!("stapsteen admin=alice session={}", start["session"].as_str().unwrap())), "{sshd_log}");
}

#[test]
fn listing_and_target_forms() {
    let env = env!();
    let out = env.ssh("alice", &[], None);
    let text = stdout(&out);
    assert!(text.contains("pacs01") && text.contains("no end"), "{text}");
    assert!(!text.contains("import01"), "alice has no grant for import01: {text}");
    let out = env.ssh(&format!("alice:{}@pacs01", env.account), &["echo", "fixed"], None);
    assert_eq!(stdout(&out), "fixed\n", "{}", stderr(&out));
    let out = env.ssh("alice", &[&format!("{}@pacs01", env.account), "echo", "named"], None);
    assert_eq!(stdout(&out), "named\n");
}
