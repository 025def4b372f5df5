//! Test bed: three network namespaces made by the test (admin, bastion, management), real OpenSSH
//! `sshd` targets in the management namespace, the real `stapsteen serve` in the bastion namespace,
//! the software security key as an SSH agent, and the real `ssh`, `scp` and `sftp` clients in the
//! admin namespace. The admin namespace routes via the bastion, which does not forward, so the
//! only way to a target is through stapsteen.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod console;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const BASTION: &str = "10.77.1.1";
pub const PACS01: &str = "10.77.2.10";
pub const IMPORT01: &str = "10.77.2.11";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_stapsteen")
}

/// What only some tests need, on top of the base test bed.
#[derive(Clone, Copy, PartialEq)]
pub enum Extra {
    /// Debian's chromium and playwright-core: the console's browser tests.
    Browser,
    /// Garage, an S3 store: the off-site copy.
    Garage,
    /// moto's S3 server (PyPI `moto[server]`): an S3 store with conditional writes, for the
    /// create-only off-site copy (Garage 2.5 ignores `If-None-Match` and overwrites).
    Moto,
    /// OpenSSH's sk-dummy provider: the stock-OpenSSH security-key test.
    SkDummy,
    /// Python's `cryptography` module: the raw SSH client of the hostile-input suite
    /// (tests/support/ssh_raw.py).
    PyCryptography,
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when the base prerequisites are there (root, the network and OpenSSH tools).
pub fn prerequisites() -> bool {
    prerequisites_with(&[])
}

/// True when the base prerequisites and `extra` are there. A missing one fails the test, unless
/// the caller asked to skip with `STAPSTEEN_ALLOW_SKIP=1` (never in CI: with `CI=true` it always
/// fails).
pub fn prerequisites_with(extra: &[Extra]) -> bool {
    let mut missing = Vec::new();
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !is_root {
        missing.push("root (for ip netns)".to_owned());
    }
    let mut tools = vec![
        "ip",
        "ssh",
        "scp",
        "sftp",
        "ssh-keygen",
        "python3",
        "setsid",
        "nsenter",
        "nft",
        "ping",
        "curl",
    ];
    if extra.contains(&Extra::Browser) {
        tools.extend(["node", "chromium"]);
    }
    if extra.contains(&Extra::Moto) {
        tools.push("moto_server");
    }
    missing.extend(tools.into_iter().filter(|t| !on_path(t)).map(str::to_owned));
    if let Err(e) = stapsteen::demo::find_sshd() {
        missing.push(e.to_string());
    }
    if extra.contains(&Extra::Browser)
        && !Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/e2e/node_modules/playwright-core"
        ))
        .exists()
    {
        missing.push("playwright-core (npm ci --prefix tests/e2e)".to_owned());
    }
    if extra.contains(&Extra::Garage) && garage().is_none() {
        missing.push("garage (S3 store)".to_owned());
    }
    if extra.contains(&Extra::SkDummy) && !sk_dummy().is_file() {
        missing.push(format!(
            "OpenSSH's sk-dummy provider at {} (SK_DUMMY names another path)",
            sk_dummy().display()
        ));
    }
    if extra.contains(&Extra::PyCryptography)
        && !Command::new("python3")
            .args(["-c", "import cryptography"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    {
        missing.push("python3's cryptography module (python3-cryptography)".to_owned());
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "missing prerequisites: {} (run tests/setup.sh, as root)",
        missing.join(", ")
    );
    let in_ci = std::env::var("CI").as_deref() == Ok("true");
    if in_ci || std::env::var("STAPSTEEN_ALLOW_SKIP").as_deref() != Ok("1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED (STAPSTEEN_ALLOW_SKIP=1): {msg}");
    false
}

/// OpenSSH's own software security key (regress/misc/sk-dummy), built by tests/setup.sh.
pub fn sk_dummy() -> PathBuf {
    std::env::var_os("SK_DUMMY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/sk-dummy/sk-dummy.so"))
}

/// The `sshd` the tests start, found as the demo finds it.
pub fn sshd() -> PathBuf {
    stapsteen::demo::find_sshd().unwrap()
}

/// The Garage binary (an S3-compatible store), from PATH or `cargo install`.
pub fn garage() -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([cargo_home.join("bin")])
        .map(|d| d.join("garage"))
        .find(|p| p.is_file())
}

/// An [`Env`] with `opts` (default ones without an argument), or an early return when the
/// prerequisites (the base ones and the [`Extra`]s listed after `opts`) are missing and skipping
/// was asked for.
#[allow(unused_macros)]
macro_rules! testbed {
    () => {
        testbed!(Options::default())
    };
    ($opts:expr) => {
        testbed!($opts, [])
    };
    ($opts:expr, [$($extra:expr),*]) => {{
        if !common::prerequisites_with(&[$($extra),*]) {
            return;
        }
        Env::new($opts)
    }};
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a test needs to shape: policy text, bastion limits and environment.
pub struct Options {
    pub idle_timeout: &'static str,
    pub max_unauthenticated: usize,
    pub max_unauthenticated_per_source: usize,
    pub extra_policy: String,
    /// Kernel enforcement in the bastion namespace (on unless a test or benchmark needs other
    /// traffic from the bastion namespace into the management network).
    pub firewall: bool,
    /// Extra environment for the bastion process.
    pub bastion_env: Vec<(&'static str, &'static str)>,
    /// A command the bastion runs under (valgrind, for the callgrind benchmark); it must exec
    /// the daemon in its own process, so that the bastion's pid stays the daemon's.
    pub bastion_prefix: Vec<String>,
    /// Appended to stapsteen.toml (after `[firewall]`).
    pub extra_config: String,
    /// Appended to stapsteen.toml's `[limits]`.
    pub extra_limits: String,
    /// A fourth namespace for the security team's reviewers, 10.77.3.0/24 behind the bastion.
    pub reviewer_network: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            idle_timeout: "15m",
            max_unauthenticated: 32,
            max_unauthenticated_per_source: 8,
            extra_policy: String::new(),
            firewall: true,
            bastion_env: Vec::new(),
            bastion_prefix: Vec::new(),
            extra_config: String::new(),
            extra_limits: String::new(),
            reviewer_network: false,
        }
    }
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub ns_admin: String,
    pub ns_bastion: String,
    pub ns_mgmt: String,
    /// Created only with [`Options::reviewer_network`].
    pub ns_reviewer: Option<String>,
    children: Vec<Child>,
    bastion: Option<Child>,
    bastion_env: Vec<(&'static str, &'static str)>,
    bastion_prefix: Vec<String>,
    pub account: String,
    pub alice_key: String,
    pub pacs01_hostkey: String,
    pub import01_hostkey: String,
}

fn keygen(path: &Path) -> String {
    run(&[
        "ssh-keygen",
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        "",
        "-f",
        path.to_str().unwrap(),
    ]);
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_owned()
}

impl Env {
    pub fn new(opts: Options) -> Env {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tag = format!("{}x{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix("stapsteen-test.")
            .tempdir()
            .unwrap();
        let mut env = Env {
            dir,
            ns_admin: format!("ssA{tag}"),
            ns_bastion: format!("ssB{tag}"),
            ns_mgmt: format!("ssM{tag}"),
            ns_reviewer: opts.reviewer_network.then(|| format!("ssR{tag}")),
            children: Vec::new(),
            bastion: None,
            bastion_env: opts.bastion_env.clone(),
            bastion_prefix: opts.bastion_prefix.clone(),
            account: "root".into(),
            alice_key: String::new(),
            pacs01_hostkey: String::new(),
            import01_hostkey: String::new(),
        };
        env.network();
        run(&[
            bin(),
            "keys",
            "init",
            "--dir",
            env.path("").to_str().unwrap(),
        ]);
        env.targets();
        env.agent("agent.sock", "alice_key", &[]);
        env.alice_key = std::fs::read_to_string(env.path("alice_key.sk.pub"))
            .unwrap()
            .trim()
            .to_owned();
        env.agent("bob-agent.sock", "bob_key", &[]);
        let host = std::fs::read_to_string(env.path("host_key.pub")).unwrap();
        std::fs::write(
            env.path("known_hosts"),
            format!("{BASTION} {}", host.trim()),
        )
        .unwrap();
        std::fs::write(
            env.path("stapsteen.toml"),
            format!(
                "listen = [\"{BASTION}:22\"]\npolicy = \"policy.toml\"\nstate_dir = \"state\"\nhost_key = \"host_key\"\nca_key = \"ca_key\"\nsigning_key = \"signing_key\"\naudit = \"stderr\"\n[limits]\nidle_timeout = \"{}\"\nauth_rejection_time = \"200ms\"\nlogin_grace = \"5s\"\nmax_unauthenticated = {}\nmax_unauthenticated_per_source = {}\nconnect_timeout = \"3s\"\n{}\n[firewall]\nenabled = {}\nadmin_networks = [\"10.77.1.0/24\"]\nmanagement_networks = [\"10.77.2.0/24\"]\n{}",
                opts.idle_timeout,
                opts.max_unauthenticated,
                opts.max_unauthenticated_per_source,
                opts.extra_limits,
                opts.firewall, opts.extra_config
            ),
        )
        .unwrap();
        env.write_policy(&opts.extra_policy);
        env.start_bastion();
        env
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn network(&self) {
        for ns in [&self.ns_admin, &self.ns_bastion, &self.ns_mgmt] {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let (a, b, m) = (&self.ns_admin, &self.ns_bastion, &self.ns_mgmt);
        run(&[
            "ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "adm0", "netns",
            b,
        ]);
        run(&[
            "ip", "-n", b, "link", "add", "mgmt0", "type", "veth", "peer", "name", "eth0", "netns",
            m,
        ]);
        run(&["ip", "-n", a, "addr", "add", "10.77.1.2/24", "dev", "eth0"]);
        run(&["ip", "-n", b, "addr", "add", "10.77.1.1/24", "dev", "adm0"]);
        run(&["ip", "-n", b, "addr", "add", "10.77.2.1/24", "dev", "mgmt0"]);
        run(&["ip", "-n", m, "addr", "add", "10.77.2.10/24", "dev", "eth0"]);
        run(&["ip", "-n", m, "addr", "add", "10.77.2.11/24", "dev", "eth0"]);
        for (ns, dev) in [(a, "eth0"), (b, "adm0"), (b, "mgmt0"), (m, "eth0")] {
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        // The admin and management sides point at the bastion, as a real network would; the
        // bastion never forwards between them.
        run(&["ip", "-n", a, "route", "add", "default", "via", "10.77.1.1"]);
        run(&["ip", "-n", m, "route", "add", "default", "via", "10.77.2.1"]);
        run(&[
            "ip",
            "netns",
            "exec",
            b,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=0",
        ]);
        if let Some(r) = &self.ns_reviewer {
            run(&["ip", "netns", "add", r]);
            run(&["ip", "-n", r, "link", "set", "lo", "up"]);
            run(&[
                "ip", "-n", r, "link", "add", "eth0", "type", "veth", "peer", "name", "rev0",
                "netns", b,
            ]);
            run(&["ip", "-n", r, "addr", "add", "10.77.3.2/24", "dev", "eth0"]);
            run(&["ip", "-n", b, "addr", "add", "10.77.3.1/24", "dev", "rev0"]);
            run(&["ip", "-n", r, "link", "set", "eth0", "up"]);
            run(&["ip", "-n", b, "link", "set", "rev0", "up"]);
            run(&["ip", "-n", r, "route", "add", "default", "via", "10.77.3.1"]);
        }
    }

    fn targets(&mut self) {
        std::fs::create_dir_all("/run/sshd").unwrap();
        self.pacs01_hostkey = keygen(&self.path("pacs01_host"));
        // A static bastion key that import01 takes without a certificate ("legacy" target).
        let legacy = keygen(&self.path("legacy_key"));
        std::fs::write(self.path("import01_authorized_keys"), format!("{legacy}\n")).unwrap();
        self.import01_hostkey = keygen(&self.path("import01_host"));
        for (name, addr) in [("pacs01", PACS01), ("import01", IMPORT01)] {
            let cfg = self.path(&format!("{name}_sshd_config"));
            std::fs::write(
                &cfg,
                // The targets take any environment variable, so the tests see what the bastion
                // lets through.
                stapsteen::demo::sshd_config(
                    format!("{addr}:22").parse().unwrap(),
                    &self.path(&format!("{name}_host")),
                    &self.path("ca_key.pub"),
                    &self.path(&format!("{name}.pid")),
                )
                .replace(
                    "AuthorizedKeysFile none",
                    &format!(
                        "AuthorizedKeysFile {}",
                        self.path(&format!("{name}_authorized_keys")).display()
                    ),
                ) + "AcceptEnv *\n",
            )
            .unwrap();
            let log = std::fs::File::create(self.path(&format!("{name}_sshd.log"))).unwrap();
            let child = Command::new("ip")
                .args(["netns", "exec", &self.ns_mgmt])
                .arg(sshd())
                .args(["-D", "-e", "-f"])
                .arg(&cfg)
                .stderr(log)
                .spawn()
                .unwrap();
            self.children.push(child);
        }
        for addr in [PACS01, IMPORT01] {
            self.wait_port(&self.ns_mgmt.clone(), addr, 22);
        }
    }

    /// Starts a program in the management namespace, ended with the test bed.
    pub fn spawn_in_mgmt(&mut self, args: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns_mgmt])
            .args(args)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(child);
    }

    /// Starts a software security key agent; `args` are extra `softkey-agent` flags.
    pub fn agent(&mut self, socket: &str, key: &str, args: &[&str]) {
        let sock = self.path(socket);
        let child = Command::new(bin())
            .args([
                "softkey-agent",
                "--socket",
                sock.to_str().unwrap(),
                "--key",
                self.path(key).to_str().unwrap(),
            ])
            .args(args)
            .spawn()
            .unwrap();
        self.children.push(child);
        let start = Instant::now();
        while !(sock.exists() && self.path(&format!("{key}.sk.pub")).exists()) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "agent did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn policy_text(&self, extra: &str) -> String {
        let bob = std::fs::read_to_string(self.path("bob_key.sk.pub")).unwrap();
        format!(
            r#"
[[admin]]
name = "alice"
groups = ["pacs-beheer"]
keys = ["{alice}"]

[[admin]]
name = "bob"
keys = ["{bob}"]

[[target]]
name = "pacs01"
address = "{PACS01}"
host_keys = ["{pacs}"]
accounts = ["{acct}", "nobody"]

[[target]]
name = "import01"
address = "{IMPORT01}"
host_keys = ["{import}"]
accounts = ["{acct}"]

[[target]]
name = "pacs-changed"
address = "{PACS01}"
host_keys = ["{import}"]
accounts = ["{acct}", "nobody"]

[[grant]]
name = "pacs-beheer"
groups = ["pacs-beheer"]
targets = ["pacs01", "pacs-changed"]
accounts = ["{acct}", "nobody"]
max_session = "1h"

{extra}
"#,
            alice = self.alice_key,
            bob = bob.trim(),
            pacs = self.pacs01_hostkey,
            import = self.import01_hostkey,
            acct = self.account,
        )
    }

    pub fn write_policy(&self, extra: &str) {
        std::fs::write(self.path("policy.toml"), self.policy_text(extra)).unwrap();
    }

    fn start_bastion(&mut self) {
        let starts = self.count("SERVICE_START");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("audit.log"))
            .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns_bastion])
            .args(&self.bastion_prefix)
            .args([bin(), "serve", "--config"])
            .arg(self.path("stapsteen.toml"))
            .envs(self.bastion_env.iter().copied())
            .stderr(log)
            .spawn()
            .unwrap();
        self.bastion = Some(child);
        let start = Instant::now();
        // Under valgrind the daemon starts some 50 times slower.
        let limit = if self.bastion_prefix.is_empty() {
            15
        } else {
            300
        };
        while self.count("SERVICE_START") == starts {
            assert!(
                start.elapsed() < Duration::from_secs(limit),
                "the bastion did not start:\n{}",
                std::fs::read_to_string(self.path("audit.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn count(&self, code: &str) -> usize {
        self.audit().iter().filter(|e| e["code"] == code).count()
    }

    /// Kills the bastion with SIGKILL, as a crash would.
    pub fn kill_bastion(&mut self) {
        if let Some(mut c) = self.bastion.take() {
            run(&["kill", "-9", &c.id().to_string()]);
            let _ = c.wait();
        }
    }

    /// Starts the bastion again after [`Env::kill_bastion`]; the audit log is kept.
    pub fn restart_bastion(&mut self) {
        self.start_bastion();
    }

    /// Runs `stapsteen ARGS --config stapsteen.toml`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(self.path("stapsteen.toml"))
            .output()
            .unwrap()
    }

    pub fn bastion_pid(&self) -> u32 {
        self.bastion.as_ref().unwrap().id()
    }

    /// Sends SIGHUP to the bastion (its process is `ip netns exec`, which execs stapsteen).
    pub fn reload(&self) {
        run(&["kill", "-HUP", &self.bastion_pid().to_string()]);
    }

    pub fn wait_port(&self, ns: &str, addr: &str, port: u16) {
        let start = Instant::now();
        loop {
            let ok = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    ns,
                    "bash",
                    "-c",
                    &format!("exec 3<>/dev/tcp/{addr}/{port}"),
                ])
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
            if ok {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{addr}:{port} never listened"
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Common client options: our agent (or `none`) and known_hosts only, no user config, no
    /// prompts.
    pub fn ssh_opts(&self, agent: &str) -> Vec<String> {
        let agent = if agent == "none" {
            "none".into()
        } else {
            self.path(agent).display().to_string()
        };
        vec![
            "-F".into(),
            "none".into(),
            "-o".into(),
            format!("IdentityAgent={agent}"),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.path("known_hosts").display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "ConnectTimeout=5".into(),
        ]
    }

    /// Runs `args` in the bastion's mount namespace (`ip netns exec` gave it its own, so a
    /// mount the test makes would not reach it).
    pub fn in_bastion_mounts(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.bastion_pid().to_string(), "-m"])
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs `ssh ARGS` with the agent `agent` in the admin namespace on a thread; joining it
    /// gives the output once ssh has ended.
    pub fn spawn_ssh(&self, agent: &str, args: &[&str]) -> std::thread::JoinHandle<Output> {
        let mut all = self.ssh_opts(agent);
        all.extend(args.iter().map(|a| a.to_string()));
        let ns = self.ns_admin.clone();
        std::thread::spawn(move || {
            Command::new("ip")
                .args(["netns", "exec", &ns, "ssh"])
                .args(&all)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        })
    }

    /// Runs a client program (`ssh`, `scp`, `sftp`) in the admin namespace.
    pub fn client(&self, program: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns_admin, program]);
        cmd.args(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        if let Some(data) = stdin {
            use std::io::Write;
            let mut s = child.stdin.take().unwrap();
            let data = data.to_vec();
            std::thread::spawn(move || {
                let _ = s.write_all(&data);
            });
        }
        child.wait_with_output().unwrap()
    }

    /// Runs `program` (`ssh`, `scp`, `sftp`) in the admin namespace with the common options for
    /// `agent`, then `args`.
    pub fn run(&self, program: &str, agent: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut all: Vec<String> = self.ssh_opts(agent);
        all.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        self.client(program, &refs, stdin)
    }

    /// `ssh USER@bastion ARGS...` with alice's security key.
    pub fn ssh(&self, user: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut all = vec![format!("{user}@{BASTION}")];
        all.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        self.run("ssh", "agent.sock", &refs, stdin)
    }

    /// Runs ssh in a pseudo-terminal, driven by `steps` (see tests/support/pty_drive.py).
    pub fn ssh_pty(&self, user: &str, target_args: &[&str], steps: serde_json::Value) -> Output {
        let all = self.ssh_pty_args(user, target_args, &steps);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        self.client(refs[0], &refs[1..], None)
    }

    /// [`Env::ssh_pty`] on a thread of its own, for a session that runs while the test acts.
    pub fn spawn_ssh_pty(
        &self,
        user: &str,
        target_args: &[&str],
        steps: serde_json::Value,
    ) -> std::thread::JoinHandle<Output> {
        let all = self.ssh_pty_args(user, target_args, &steps);
        let ns = self.ns_admin.clone();
        std::thread::spawn(move || {
            Command::new("ip")
                .args(["netns", "exec", &ns])
                .args(&all)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        })
    }

    /// The terminal driver running `ssh -t` with the common options.
    fn ssh_pty_args(
        &self,
        user: &str,
        target_args: &[&str],
        steps: &serde_json::Value,
    ) -> Vec<String> {
        let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/pty_drive.py");
        let mut all: Vec<String> = vec![
            "python3".into(),
            driver.into(),
            steps.to_string(),
            "--".into(),
            "ssh".into(),
            "-t".into(),
        ];
        all.extend(self.ssh_opts("agent.sock"));
        all.push(format!("{user}@{BASTION}"));
        all.extend(target_args.iter().map(|s| s.to_string()));
        all
    }

    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits up to 15 s for an audit event with `code` that satisfies `pred`.
    pub fn wait_audit(
        &self,
        code: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            if let Some(e) = self
                .audit()
                .into_iter()
                .find(|e| e["code"] == code && pred(e))
            {
                return e;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "no {code} audit event; log:\n{}",
                std::fs::read_to_string(self.path("audit.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn detail(event: &serde_json::Value) -> serde_json::Value {
        serde_json::from_str(event["detail"].as_str().unwrap_or("{}")).unwrap()
    }

    /// Asserts that an audit event's reason holds `text`.
    pub fn assert_reason(event: &serde_json::Value, text: &str) {
        assert!(event["reason"].as_str().unwrap().contains(text), "{event}");
    }

    pub fn recordings_dir(&self) -> PathBuf {
        self.path("state/recordings")
    }

    /// The recording of the session a `SESSION_END` event names.
    pub fn cast_of(&self, end: &serde_json::Value) -> String {
        let id = end["session"].as_str().unwrap();
        std::fs::read_to_string(self.recordings_dir().join(format!("{id}.cast"))).unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for c in self.children.iter_mut().chain(self.bastion.iter_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Anything still running in a namespace (sshd session processes) goes with it.
        let all = [&self.ns_admin, &self.ns_bastion, &self.ns_mgmt];
        for ns in all.into_iter().chain(self.ns_reviewer.as_ref()) {
            let _ = Command::new("ip")
                .args(["netns", "pids", ns])
                .output()
                .map(|o| {
                    for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                        let _ = Command::new("kill").args(["-9", pid]).status();
                    }
                });
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A remote command that creates `started` and then waits (up to a minute) until the test
/// creates `release` (the target runs on the same file system), then prints `done`; "timed-out"
/// if the release never came.
pub fn held_session(started: &Path, release: &Path, done: &str) -> String {
    format!(
        "touch '{}'; for i in $(seq 600); do [ -e '{}' ] && echo {done} && exit; sleep 0.1; done; echo timed-out",
        started.display(),
        release.display()
    )
}

/// Waits (up to 15 s) for a file that a remote command (or the bastion) creates.
pub fn wait_for_file(file: &Path) {
    let start = Instant::now();
    while !file.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{} never appeared",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits (up to 15 s) until the `ssh` run by `t` has ended; whether it has.
pub fn ended(t: &std::thread::JoinHandle<std::process::Output>) -> bool {
    let start = std::time::Instant::now();
    while !t.is_finished() && start.elapsed() < std::time::Duration::from_secs(15) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    t.is_finished()
}
