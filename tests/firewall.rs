//! Kernel enforcement: the nftables table stapsteen keeps in the bastion namespace, tested with
//! real nft, real OpenSSH clients and targets, in namespaces.
#![allow(clippy::unwrap_used, clippy::panic)]

#[macro_use]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, IMPORT01, Options, PACS01, stderr, stdout};

fn sh(ns: &str, script: &str) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns, "bash", "-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The grant elements in the bastion's kernel, as nft lists them.
fn grant_elements(env: &Env) -> String {
    stdout(&sh(&env.ns_bastion, "nft list set inet stapsteen grants4"))
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP connection from the bastion namespace to `addr`:22 from a socket that carries `mark`, as
/// stapsteen's own do: "reached", or why not ("timed out" when the kernel drops the packets).
fn marked_connect(env: &Env, mark: &str, addr: &str) -> String {
    let script = "import socket, sys\n\
                  s = socket.socket()\n\
                  s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, int(sys.argv[1], 0))\n\
                  s.settimeout(3)\n\
                  try:\n    s.connect((sys.argv[2], 22)); print('reached')\n\
                  except OSError as e:\n    print(e)\n";
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &env.ns_bastion,
            "python3",
            "-c",
            script,
            mark,
            addr,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_owned()
}

/// The mark of the grant element for `addr`:22 (`0x00000002 . 10.77.2.11 . 22 ...`).
fn mark_of(env: &Env, addr: &str) -> String {
    let elements = grant_elements(env);
    let at = elements
        .find(&format!(" . {addr} . 22"))
        .unwrap_or_else(|| panic!("no element for {addr}: {elements}"));
    elements[..at]
        .rsplit(|c: char| c.is_whitespace() || c == '{' || c == ',')
        .next()
        .unwrap()
        .to_owned()
}

/// A policy time `secs` from now, in the policy's zone.
fn in_seconds(secs: i64) -> String {
    let t = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(secs);
    t.to_zoned(jiff::tz::TimeZone::get("Europe/Amsterdam").unwrap())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

#[test]
fn management_network_unreachable_even_with_routing_switched_on() {
    let env = testbed!(Options::default());
    // Routing on in the bastion's kernel: only stapsteen's forward chain stands in the way.
    assert!(
        sh(&env.ns_bastion, "sysctl -qw net.ipv4.ip_forward=1")
            .status
            .success()
    );
    // Dropped, so the attempt times out (`timeout` exits 124) and every ping is lost.
    let tcp = env.client(
        "bash",
        &[
            "-c",
            &format!(
                "timeout 3 bash -c 'exec 3<>/dev/tcp/{PACS01}/22' 2>&1 && echo reached || echo rc=$?"
            ),
        ],
        None,
    );
    assert_eq!(stdout(&tcp), "rc=124\n", "TCP got through or was refused");
    let icmp = env.client("ping", &["-c", "2", "-W", "1", PACS01], None);
    assert!(
        stdout(&icmp).contains(" 0 received, 100% packet loss"),
        "ping got through: {}",
        stdout(&icmp)
    );
    // Without stapsteen's table the same packets do get through, so the table is what stops them.
    assert!(
        sh(&env.ns_bastion, "nft delete table inet stapsteen")
            .status
            .success()
    );
    let icmp = env.client("ping", &["-c", "1", "-W", "2", PACS01], None);
    assert!(icmp.status.success(), "control: {}", stderr(&icmp));
    env.wait_audit("FIREWALL_DRIFT", |e| {
        e["reason"].as_str().unwrap().contains("table deleted")
    });
    wait_until("the table to be back", Duration::from_secs(10), || {
        sh(&env.ns_bastion, "nft list table inet stapsteen")
            .status
            .success()
    });
    let icmp = env.client("ping", &["-c", "2", "-W", "1", PACS01], None);
    assert!(
        stdout(&icmp).contains(" 0 received, 100% packet loss"),
        "ping got through after repair: {}",
        stdout(&icmp)
    );
    let out = env.ssh("alice", &["pacs01", "echo", "through"], None);
    assert_eq!(stdout(&out), "through\n", "{}", stderr(&out));
}

#[test]
fn kernel_refuses_a_target_the_daemon_wrongly_allows() {
    // The daemon itself refuses the ungranted target...
    let env = testbed!(Options::default());
    let out = env.ssh("alice", &["import01", "true"], None);
    assert!(
        stderr(&out).contains("no grant for target import01"),
        "{}",
        stderr(&out)
    );
    drop(env);
    // ...and with its grant check switched off (a debug-build test switch), the kernel refuses:
    // the socket carries the mark of alice's pacs01 grant, which does not cover import01.
    let env = testbed!(Options {
        bastion_env: vec![("STAPSTEEN_TEST_SKIP_GRANT_CHECK", "1")],
        ..Options::default()
    });
    let refused = || refused_output(&env);
    let before = refused();
    let out = env.ssh("alice", &["import01", "echo", "reached"], None);
    assert!(!stdout(&out).contains("reached"));
    let failed = env.wait_audit("TARGET_FAILED", |e| e["target_host"] == "import01");
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.contains("timed out"), "{reason}");
    // The kernel dropped the connection attempts (SYN and its retries).
    assert!(refused() > before, "the output chain counted nothing");
    // The granted target still works with the same switch.
    let out = env.ssh("alice", &["pacs01", "echo", "through"], None);
    assert_eq!(stdout(&out), "through\n", "{}", stderr(&out));
}

#[test]
fn expired_grant_is_closed_by_the_kernel_alone() {
    let grant = format!(
        "[[grant]]\nname = \"import-short\"\nadmins = [\"alice\"]\ntargets = [\"import01\"]\naccounts = [\"root\"]\nvalid_until = \"{}\"\n",
        in_seconds(8)
    );
    let env = testbed!(Options {
        extra_policy: grant,
        ..Options::default()
    });
    assert!(
        grant_elements(&env).contains(IMPORT01),
        "{}",
        grant_elements(&env)
    );
    // While the grant runs, a socket with its mark gets through (so the check below can fail).
    let (import_mark, pacs_mark) = (mark_of(&env, IMPORT01), mark_of(&env, PACS01));
    assert_eq!(marked_connect(&env, &import_mark, IMPORT01), "reached");
    // The daemon is frozen: whatever happens now is the kernel's doing.
    let pid = env.bastion_pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_until("the element to expire", Duration::from_secs(20), || {
        !grant_elements(&env).contains(IMPORT01)
    });
    assert_eq!(marked_connect(&env, &import_mark, IMPORT01), "timed out");
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    // The other grant's elements are untouched, and still let its sockets through.
    assert!(grant_elements(&env).contains(PACS01));
    assert_eq!(marked_connect(&env, &pacs_mark, PACS01), "reached");
}

/// `ssh -W SPEC alice@bastion`: stdin and stdout carried to SPEC and back.
fn forward(env: &Env, spec: &str, stdin: Option<&[u8]>) -> std::process::Output {
    let bastion = format!("alice@{}", common::BASTION);
    env.run("ssh", "agent.sock", &["-W", spec, &bastion], stdin)
}

#[test]
fn forwards_reach_granted_ports_only() {
    let grant = "[[grant]]\nname = \"pacs-dicom\"\ngroups = [\"pacs-beheer\"]\ntargets = [\"pacs01\"]\naccounts = [\"root\"]\nforward_ports = [11112]\n";
    let mut env = testbed!(Options {
        extra_policy: grant.into(),
        ..Options::default()
    });
    let server = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/tcp_echo.py");
    env.spawn_in_mgmt(&["python3", server, PACS01, "11112"]);
    env.wait_port(&env.ns_mgmt.clone(), PACS01, 11112);

    let data: Vec<u8> = (0..1_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for host in ["pacs01", PACS01] {
        let out = forward(&env, &format!("{host}:11112"), Some(&data));
        assert!(
            out.stdout == data,
            "echo through {host} differs: {}",
            stderr(&out)
        );
    }
    let end = env.wait_audit("FORWARD_END", |_| true);
    assert_eq!(end["admin"], "alice");
    assert_eq!(end["target_host"], "pacs01");
    let d = Env::detail(&end);
    assert_eq!(d["port"], 11112);
    assert_eq!(d["bytes_to_target"], data.len());
    assert_eq!(d["bytes_to_admin"], data.len());
    assert_eq!(d["grant"], "pacs-dicom");
    assert!(d["duration_s"].as_f64().unwrap() > 0.0);
    assert_eq!(end["reason"], "closed");

    for (spec, code) in [
        ("pacs01:11113", "port_not_allowed"),
        ("pacs01:22", "unrecorded_tunnel"),
        ("import01:11112", "no_grant"),
        ("10.77.2.99:443", "unknown_target"),
    ] {
        let out = forward(&env, spec, None);
        assert!(!out.status.success(), "{spec} was forwarded");
        assert!(
            stderr(&out).contains("administratively prohibited"),
            "{spec}: {}",
            stderr(&out)
        );
        env.wait_audit("FORWARD_DENIED", |e| e["reason"] == code);
    }
    // -R stays refused.
    let bastion = format!("alice@{}", common::BASTION);
    let out = env.run(
        "ssh",
        "agent.sock",
        &[
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            "9000:localhost:22",
            &bastion,
            "pacs01",
            "true",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr(&out).contains("remote port forwarding failed for listen port 9000"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn widening_the_table_from_outside_is_undone() {
    let env = testbed!(Options::default());
    let add = format!("nft add element inet stapsteen grants4 '{{ 0x1 . {IMPORT01} . 22 }}'");
    assert!(sh(&env.ns_bastion, &add).status.success());
    let drift = env.wait_audit("FIREWALL_DRIFT", |_| true);
    assert!(
        drift["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("element added: 0x00000001 . {IMPORT01} . 22"))
    );
    wait_until("the element to be gone", Duration::from_secs(10), || {
        !grant_elements(&env).contains(IMPORT01)
    });
}

#[test]
fn reload_that_cannot_be_enforced_keeps_the_old_policy_and_ruleset() {
    let env = testbed!(Options::default());
    let before = grant_elements(&env);
    // A target outside every management network: the kernel could not guard it.
    env.write_policy("[[target]]\nname = \"elsewhere\"\naddress = \"192.0.2.7\"\nhost_keys = [\"{import}\"]\naccounts = [\"root\"]\n".replace("{import}", &env.import01_hostkey).as_str());
    env.reload();
    let failed = env.wait_audit("FIREWALL_FAILED", |_| true);
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("elsewhere (192.0.2.7) is in no management network")
    );
    env.wait_audit("POLICY_RELOAD_FAILED", |_| true);
    assert_eq!(grant_elements(&env), before);
    let out = env.ssh("alice", &["pacs01", "echo", "still"], None);
    assert_eq!(stdout(&out), "still\n", "{}", stderr(&out));
}

/// Records what the target sees of one connection on `addr`:11112: its data, then how it ended;
/// creates its third argument once it listens.
const TARGET_LOG: &str = "import socket, sys\n\
                          l = socket.create_server((sys.argv[1], 11112))\n\
                          open(sys.argv[3], 'w').close()\n\
                          c, _ = l.accept()\n\
                          log = open(sys.argv[2], 'a', buffering=1)\n\
                          while True:\n    \
                              try:\n        d = c.recv(100)\n    \
                              except ConnectionResetError:\n        log.write('reset\\n'); break\n    \
                              if not d:\n        log.write('eof\\n'); break\n    \
                              log.write('data:' + d.decode() + '\\n')\n";

/// From the bastion's namespace, a connection to `addr`:11112 whose socket carries `mark`: sends
/// "before"; once `go` exists, "after" and a FIN; once `reset` exists, an abortive close (RST).
/// Packets the output chain dropped so far (its `refused_output` counter).
fn refused_output(env: &Env) -> u64 {
    let out = sh(
        &env.ns_bastion,
        "nft list counter inet stapsteen refused_output",
    );
    let text = stdout(&out);
    let packets = text
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1);
    packets.unwrap().parse::<u64>().unwrap()
}

/// Sends from a raw socket a TCP reset with the payload in argv[3] to argv[1]:argv[2], outside
/// any connection; prints `sent`, or `refused` when the output chain drops it (EPERM).
const RAW_RESET: &str = "import socket, struct, sys\n\
                         dst, port, data = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()\n\
                         u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                         u.connect((dst, port))\n\
                         src = u.getsockname()[0]\n\
                         tcp = struct.pack('!HHIIBBHHH', 40000, port, 1, 0, 5 << 4, 0x04, 0, 0, 0) + data\n\
                         b = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, 6, len(tcp)) + tcp\n\
                         b += bytes(len(b) % 2)\n\
                         c = sum(struct.unpack('!%dH' % (len(b) // 2), b))\n\
                         c = (c >> 16) + (c & 0xffff)\n\
                         c = ~(c + (c >> 16)) & 0xffff\n\
                         tcp = tcp[:16] + struct.pack('!H', c) + tcp[18:]\n\
                         r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)\n\
                         try:\n    \
                             r.sendto(tcp, (dst, 0))\n    \
                             print('sent')\n\
                         except PermissionError:\n    \
                             print('refused')\n";

const MARKED_CLIENT: &str = "import os, socket, struct, sys, time\n\
                             def wait(f):\n    \
                                 for _ in range(600):\n        \
                                     if os.path.exists(f): return\n        \
                                     time.sleep(0.05)\n    \
                                 sys.exit('gave up waiting for ' + f)\n\
                             s = socket.socket()\n\
                             s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, int(sys.argv[1], 0))\n\
                             s.connect((sys.argv[2], 11112))\n\
                             s.sendall(b'before')\n\
                             wait(sys.argv[3])\n\
                             s.sendall(b'after')\n\
                             s.shutdown(socket.SHUT_WR)\n\
                             wait(sys.argv[4])\n\
                             s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))\n\
                             s.close()\n";

/// Once a grant's element is gone, the output chain still lets the bastion's TCP reset of the
/// grant's connection out (so the target ends what ran under the grant), and nothing else: no
/// data, no FIN, no new connection.
#[test]
fn only_a_reset_gets_out_after_the_grant_is_gone() {
    let grant = "[[grant]]\nname = \"import-fwd\"\nadmins = [\"alice\"]\ntargets = [\"import01\"]\naccounts = [\"root\"]\nforward_ports = [11112]\n";
    let mut env = testbed!(Options {
        extra_policy: grant.into(),
        ..Options::default()
    });
    let seen = env.path("seen");
    let listening = env.path("listening");
    env.spawn_in_mgmt(&[
        "python3",
        "-c",
        TARGET_LOG,
        IMPORT01,
        seen.to_str().unwrap(),
        listening.to_str().unwrap(),
    ]);
    // Not `wait_port`: the target takes one connection only.
    wait_until("the target to listen", Duration::from_secs(15), || {
        listening.exists()
    });
    let mark = mark_of(&env, IMPORT01);
    let (go, reset) = (env.path("go"), env.path("reset"));
    let mut client = Command::new("ip")
        .args([
            "netns",
            "exec",
            &env.ns_bastion,
            "python3",
            "-c",
            MARKED_CLIENT,
        ])
        .args([&mark, IMPORT01])
        .args([&go, &reset])
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&seen).unwrap_or_default();
    // Positive control: while the grant runs, the marked socket's data gets through.
    wait_until("the data before", Duration::from_secs(15), || {
        log().contains("data:before")
    });

    std::fs::write(env.path("policy.toml"), env.policy_text("")).unwrap();
    env.reload();
    wait_until("the element to go", Duration::from_secs(15), || {
        !grant_elements(&env).contains(" . 11112")
    });
    std::fs::write(&go, b"").unwrap();
    // A new connection with the grant's mark is dropped (it waits out its 3 s)...
    assert_eq!(marked_connect(&env, &mark, IMPORT01), "timed out");
    // ...and so were the data and the FIN sent meanwhile.
    assert_eq!(log(), "data:before\n");

    std::fs::write(&reset, b"").unwrap();
    wait_until(
        "the target to see the reset",
        Duration::from_secs(10),
        || log().contains("reset"),
    );
    assert_eq!(log(), "data:before\nreset\n");
    assert!(client.wait().unwrap().success());

    // A reset the kernel did not send for a connection it tracks is dropped: one crafted on a
    // raw socket, bare or carrying bytes for an observer on the management network.
    for data in ["", "bytes-for-a-sniffer"] {
        let before = refused_output(&env);
        let out = Command::new("ip")
            .args(["netns", "exec", &env.ns_bastion, "python3", "-c", RAW_RESET])
            .args([IMPORT01, "11112", data])
            .output()
            .unwrap();
        assert_eq!(
            stdout(&out),
            "refused\n",
            "a crafted reset ({data:?}) got out"
        );
        assert!(
            refused_output(&env) > before,
            "the output chain counted nothing"
        );
    }
}

#[test]
fn golden_plan_is_valid_nft() {
    if !common::prerequisites() {
        return;
    }
    let golden = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/example-hospital.nft"
    );
    let out = Command::new("unshare")
        .args(["--net", "nft", "-c", "-f", golden])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}
