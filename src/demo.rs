//! `stapsteen demo`: everything on loopback, in a temporary directory that is removed on Ctrl-C.
//! A real OpenSSH `sshd` is the target and trusts the bastion's CA; a software security key (an
//! SSH agent) stands in for the admin's hardware key.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::config::Config;
use crate::secrets::{generate_key, write_new_key};
use crate::softkey::{FLAG_USER_PRESENT, FLAG_USER_VERIFIED, SoftKey};

/// Where `sshd` is, or how to get it: on PATH (absolute entries only, as sshd re-executes itself
/// by its path), then where distributions put it (sbin is often not on a user's PATH).
pub fn find_sshd() -> Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|d| d.is_absolute())
        .map(|d| d.join("sshd"));
    let known = [
        "/usr/sbin/sshd",
        "/usr/bin/sshd",
        "/run/current-system/sw/bin/sshd",
    ]
    .map(PathBuf::from);
    if let Some(p) = on_path.chain(known).find(|p| p.is_file()) {
        return Ok(p);
    }
    bail!("OpenSSH sshd not found; install it (Debian/Ubuntu: apt-get install openssh-server)")
}

/// An sshd configuration for a target that admits only users with a certificate from `ca_pub`.
pub fn sshd_config(listen: SocketAddr, host_key: &Path, ca_pub: &Path, pid_file: &Path) -> String {
    format!(
        "ListenAddress {listen}\nHostKey {}\nPidFile {}\nTrustedUserCAKeys {}\n\
         AuthorizedKeysFile none\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
         KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
         AllowTcpForwarding no\nX11Forwarding no\nLogLevel VERBOSE\nSubsystem sftp internal-sftp\n",
        host_key.display(),
        pid_file.display(),
        ca_pub.display()
    )
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn current_user() -> Result<String> {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .context("running id -un")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

pub async fn run(port: u16, console_port: u16) -> Result<()> {
    let sshd = find_sshd()?;
    let tmp = tempfile::Builder::new()
        .prefix("stapsteen-demo.")
        .tempdir()?;
    let dir = tmp.path();
    let account = current_user()?;
    crate::policy::Account::new(&account)
        .map_err(|e| anyhow::anyhow!("the demo logs in to the target as you ({account}): {e}"))?;

    let target_key = dir.join("target_host_key");
    write_new_key(&target_key, &generate_key("demo target"))?;
    crate::secrets::init_keys(
        &dir.join("host_key"),
        &dir.join("ca_key"),
        &dir.join("signing_key"),
    )?;
    let target_port = free_port()?;
    let port = if port == 0 { free_port()? } else { port };
    let target_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, target_port));
    std::fs::write(
        dir.join("sshd_config"),
        sshd_config(
            target_addr,
            &target_key,
            &dir.join("ca_key.pub"),
            &dir.join("sshd.pid"),
        ),
    )?;
    if current_user()? == "root" {
        std::fs::create_dir_all("/run/sshd")?;
    }
    let mut sshd_child = tokio::process::Command::new(&sshd)
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sshd.log"))?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", sshd.display()))?;

    let agent = Arc::new(SoftKey::open(
        &dir.join("alice_key"),
        "ssh:",
        // As a key that was touched and whose PIN was entered: the demo asks nothing of you.
        FLAG_USER_PRESENT | FLAG_USER_VERIFIED,
        1,
        false,
    )?);
    let admin_key = agent.public_key().to_openssh()?;
    let socket = dir.join("agent.sock");
    let agent_task = tokio::spawn({
        let socket = socket.clone();
        async move { agent.serve(&socket).await }
    });

    let target_pub = std::fs::read_to_string(dir.join("target_host_key.pub"))?;
    std::fs::write(
        dir.join("policy.toml"),
        format!(
            "[[admin]]\nname = \"alice\"\nfull_name = \"Alice (demo)\"\nkeys = [\"{admin_key}\"]\n\n\
             [[target]]\nname = \"demo\"\naddress = \"127.0.0.1\"\nport = {target_port}\n\
             host_keys = [\"{}\"]\naccounts = [\"{account}\"]\n\n\
             [[grant]]\nname = \"demo\"\nadmins = [\"alice\"]\ntargets = [\"demo\"]\naccounts = [\"{account}\"]\nmax_session = \"1h\"\n\n\
             [[reviewer]]\nname = \"sec.reviewer\"\nfull_name = \"Security reviewer (demo)\"\n",
            target_pub.trim()
        ),
    )?;
    // The demo runs on loopback in the host's own network namespace, whose firewall is not
    // stapsteen's to replace; the appliance and the tests run with enforcement on.
    let config_path = dir.join("stapsteen.toml");
    std::fs::write(
        &config_path,
        format!(
            "listen = [\"127.0.0.1:{port}\"]\npolicy = \"policy.toml\"\nstate_dir = \"state\"\nhost_key = \"host_key\"\nca_key = \"ca_key\"\nsigning_key = \"signing_key\"\naudit = \"stderr\"\n\n[firewall]\nenabled = false  # loopback demo; the appliance enforces\n\n\
             [console]\nlisten = [\"127.0.0.1:{console_port}\"]\nhost = \"localhost\"\n"
        ),
    )?;
    let config = Config::load(&config_path)?;
    // Short lines for the person watching; production keeps JSON lines or journald.
    crate::audit::init_human();
    wait_for_port(target_addr).await?;
    let code = crate::console::Reviewers::new(config.console_dir()).issue_code(
        &crate::policy::ReviewerName::new("sec.reviewer")?,
        jiff::Timestamp::now().checked_add(jiff::SignedDuration::from_hours(1))?,
    )?;
    let running = crate::serve::start(config).await?;
    let host_pub = std::fs::read_to_string(dir.join("host_key.pub"))?;
    std::fs::write(
        dir.join("known_hosts"),
        format!("[127.0.0.1]:{port} {}", host_pub.trim()),
    )?;

    let ssh = format!(
        "ssh -o IdentityAgent={} -o UserKnownHostsFile={} -p {port}",
        socket.display(),
        dir.join("known_hosts").display()
    );
    println!(
        "\nstapsteen demo is running (bastion 127.0.0.1:{port}, target sshd 127.0.0.1:{target_port}).\n\
         In another terminal, as alice with her (software) security key:\n\n\
         \x20 {ssh} alice@127.0.0.1                 # what may alice reach now?\n\
         \x20 {ssh} -t alice@127.0.0.1 demo         # a recorded shell on the target\n\
         \x20 {ssh} alice@127.0.0.1 demo uptime     # one command\n\
         \x20 sftp -o IdentityAgent={} -o UserKnownHostsFile={} -P {port} alice+demo@127.0.0.1\n\n\
         Recordings:  stapsteen recordings list --config {cfg}\n\
         \x20            stapsteen recordings cat --config {cfg} ID\n\
         \x20            stapsteen recordings verify --config {cfg} --all\n\
         \x20            stapsteen audit verify --config {cfg}\n\n\
         Review console: https://localhost:{console_port}/enrol as sec.reviewer with the one-time\n\
         \x20 code {code} and a FIDO2 security key with a PIN, then /login.\n\
         \x20 The certificate is self-signed; CONSOLE_START below has its fingerprint and SPKI hash.\n\
         \x20 Browsers refuse WebAuthn on certificate errors: trust it, or start Chromium with\n\
         \x20 --ignore-certificate-errors-spki-list=<spki_sha256 from CONSOLE_START>.\n\n\
         Audit events follow below, one line each. Ctrl-C stops everything and removes {}.\n",
        socket.display(),
        dir.join("known_hosts").display(),
        dir.display(),
        cfg = dir.join("stapsteen.toml").display(),
        code = code.expose(),
    );
    tokio::select! {
        r = running.wait() => r?,
        status = sshd_child.wait() => bail!("the target sshd exited ({status:?}); see its log above"),
    }
    agent_task.abort();
    let _ = sshd_child.kill().await;
    drop(tmp);
    println!("stapsteen demo stopped and cleaned up.");
    Ok(())
}

async fn wait_for_port(addr: SocketAddr) -> Result<()> {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the target sshd did not start listening on {addr}")
}
