//! The benchmarks' routes to the target, shared by the benchmarks that compare stapsteen with
//! OpenSSH: (a) stapsteen with alice's security key from the software agent, (b) OpenSSH
//! ProxyJump through a stock `sshd` started in the bastion namespace (the jump host), (c) one ssh
//! hop from the bastion namespace straight to the target. The jump host and the direct route reach
//! the target without a grant's socket mark, so the test bed must run with its firewall off.
#![allow(dead_code)]

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{BASTION, Env, PACS01};

/// Runs `script` with bash in namespace `ns`; its wall time and output. A failure panics.
pub fn sh(ns: &str, script: &str) -> (f64, Output) {
    let start = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "bash", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (start.elapsed().as_secs_f64(), out)
}

/// Prints whether every recording the benchmark's sessions left verifies as sealed.
pub fn print_verified(env: &Env) {
    let verified = env.cli(&["recordings", "verify", "--all"]);
    println!(
        "  recordings verify --all: {}",
        if verified.status.success() {
            "all sealed"
        } else {
            "FINDINGS"
        }
    );
}

/// The jump host and the client command lines of each route (each ends with the destination, so
/// a remote command may follow).
pub struct Routes {
    jump: Child,
    /// A plain key with a certificate from the bastion CA, known to the jump host and the target.
    pub plain: String,
    /// `ssh` to the bastion with alice's security key through the software agent.
    pub to_bastion: String,
    /// (a): `ssh ... alice@bastion pacs01`.
    pub via_stapsteen: String,
    /// (b): the target through the jump host, both hops with the plain key.
    pub via_jump: String,
    /// (b) with the jump hop authenticated by alice's security key through the software agent,
    /// as stapsteen's front door is; the target hop with the plain key's certificate.
    pub via_jump_seckey: String,
    /// (c), run in the bastion namespace.
    pub direct: String,
}

impl Routes {
    /// Starts the jump host in the bastion namespace; `cipher` is passed to every client as `-c`.
    pub fn start(env: &Env, cipher: Option<&str>) -> Routes {
        let p = |n: &str| env.path(n).display().to_string();
        let keygen = |args: &[&str]| {
            let ok = Command::new("ssh-keygen")
                .arg("-q")
                .args(args)
                .status()
                .unwrap()
                .success();
            assert!(ok, "ssh-keygen {args:?}");
        };
        keygen(&["-t", "ed25519", "-N", "", "-f", &p("bench_key")]);
        keygen(&[
            "-s",
            &p("ca_key"),
            "-I",
            "bench",
            "-n",
            &env.account,
            "-V",
            "+1h",
            &p("bench_key.pub"),
        ]);
        keygen(&["-t", "ed25519", "-N", "", "-f", &p("jump_host")]);
        std::fs::write(
            p("jump_authorized"),
            format!(
                "{}{}\n",
                std::fs::read_to_string(p("bench_key.pub")).unwrap(),
                env.alice_key
            ),
        )
        .unwrap();
        // The security key's user-presence flag is honoured as OpenSSH's default asks.
        std::fs::write(
            p("jump_sshd_config"),
            format!(
                "ListenAddress {BASTION}:2200\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nAllowTcpForwarding yes\nPasswordAuthentication no\nMaxStartups 64:30:128\n",
                p("jump_host"),
                p("jump.pid"),
                p("jump_authorized")
            ),
        )
        .unwrap();
        let jump = Command::new("ip")
            .args(["netns", "exec", &env.ns_bastion])
            .arg(crate::common::sshd())
            .args(["-D", "-e", "-f", &p("jump_sshd_config")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::fs::write(
            p("known_openssh"),
            format!(
                "[{BASTION}]:2200 {}\n{PACS01} {}\n",
                std::fs::read_to_string(p("jump_host.pub")).unwrap().trim(),
                env.pacs01_hostkey
            ),
        )
        .unwrap();
        env.wait_port(&env.ns_bastion, BASTION, 2200);

        let c = cipher.map(|c| format!(" -c {c}")).unwrap_or_default();
        let plain = format!(
            "ssh -F none{c} -o BatchMode=yes -o IdentityAgent=none -o UserKnownHostsFile={} -i {}",
            p("known_openssh"),
            p("bench_key")
        );
        let to_bastion = format!(
            "ssh -F none{c} -o BatchMode=yes -o IdentityAgent={} -o UserKnownHostsFile={}",
            p("agent.sock"),
            p("known_hosts")
        );
        let seckey_hop = format!(
            "ssh -F none{c} -o BatchMode=yes -o IdentityAgent={} -o UserKnownHostsFile={}",
            p("agent.sock"),
            p("known_openssh")
        );
        let acct = &env.account;
        Routes {
            jump,
            via_stapsteen: format!("{to_bastion} alice@{BASTION} pacs01"),
            via_jump: format!(
                "{plain} -o ProxyCommand='{plain} -p 2200 -W %h:%p {acct}@{BASTION}' {acct}@{PACS01}"
            ),
            via_jump_seckey: format!(
                "{plain} -o ProxyCommand='{seckey_hop} -p 2200 -W %h:%p {acct}@{BASTION}' {acct}@{PACS01}"
            ),
            direct: format!("{plain} {acct}@{PACS01}"),
            plain,
            to_bastion,
        }
    }

    /// The jump host's listening `sshd`; its session processes are its descendants.
    pub fn jump_pid(&self) -> u32 {
        self.jump.id()
    }
}

impl Drop for Routes {
    fn drop(&mut self) {
        let _ = self.jump.kill();
        let _ = self.jump.wait();
    }
}

/// Waits up to `limit` for `done`, polling; whether it came.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}
