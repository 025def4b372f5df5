//! Command line: `serve`, `check`, `keys init`, `firewall plan|apply`, `demo`,
//! `recordings list|cat|verify`, `audit verify`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::audit::{Code, Event, NoteVerifier, Start, read_segments, verify_segments};
use crate::config::Config;
use crate::firewall::Enforcer;
use crate::ids::SessionId;
use crate::offsite::{Comparison, Offsite, compare_chain, compare_recording};
use crate::policy::load_policy;
use crate::recording::{RecordingStore, verify_recording};
use crate::secrets::load_key;

#[derive(Parser)]
#[command(
    name = "stapsteen",
    version,
    about = "SSH bastion for management networks: security keys only, every session recorded"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bastion. SIGHUP reloads the policy without dropping live sessions.
    Serve {
        #[arg(long, short, env = "STAPSTEEN_CONFIG")]
        config: PathBuf,
    },
    /// Load config, policy and keys; print every problem with file and line; exit 1 on any.
    Check {
        #[arg(
            long,
            short,
            env = "STAPSTEEN_CONFIG",
            required_unless_present = "policy"
        )]
        config: Option<PathBuf>,
        /// Check only this policy file (e.g. in the policy repository's CI, or at image build).
        #[arg(long, conflicts_with = "config")]
        policy: Option<PathBuf>,
    },
    /// The nftables ruleset (table `inet stapsteen`) that the config and policy produce.
    Firewall {
        #[command(subcommand)]
        command: FirewallCommand,
    },
    /// Key management.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    #[cfg(feature = "demo")]
    /// A self-contained demo on loopback: a real sshd target, the bastion, a software security key.
    Demo {
        /// Port of the bastion on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 2222)]
        port: u16,
        /// Port of the review console on 127.0.0.1 (https://localhost:PORT).
        #[arg(long, default_value_t = 8443)]
        console_port: u16,
    },
    /// Session recordings.
    Recordings {
        #[command(subcommand)]
        command: RecordingsCommand,
    },
    /// The signed audit chain.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The review console.
    Console {
        #[command(subcommand)]
        command: ConsoleCommand,
    },
    /// The console's index of sessions, verdicts and searchable output (derived from the
    /// recordings and the audit chain; it may be deleted at any time).
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    #[cfg(feature = "demo")]
    /// Software security key agent, for the demo and tests only.
    #[command(hide = true)]
    SoftkeyAgent {
        #[arg(long)]
        socket: PathBuf,
        /// Key file, created if absent; the security-key public key goes to FILE.sk.pub.
        #[arg(long)]
        key: PathBuf,
        #[arg(long, default_value = "ssh:")]
        application: String,
        /// FIDO flags byte of each signature (1 = user present, 4 = user verified, 5 = both).
        #[arg(long, default_value_t = crate::softkey::FLAG_USER_PRESENT | crate::softkey::FLAG_USER_VERIFIED)]
        flags: u8,
        #[arg(long, default_value_t = 1)]
        counter: u32,
        /// How much the counter rises per signature (0: it stands still).
        #[arg(long, default_value_t = 1)]
        counter_step: u32,
        /// List the key but refuse every signature (a key offered without a signature).
        #[arg(long)]
        refuse_sign: bool,
        /// Create a P-256 key (sk-ecdsa-sha2-nistp256) instead of Ed25519 when the file is new.
        #[arg(long)]
        ecdsa: bool,
    },
    #[cfg(feature = "demo")]
    /// Software security key: write an enrolment attestation of KEY, as `ssh-keygen -O
    /// write-attestation=FILE -O challenge=FILE` would, signed under the test root in ROOT_DIR
    /// (created on first use). For the tests only.
    #[command(hide = true)]
    SoftkeyAttest {
        #[arg(long)]
        key: PathBuf,
        #[arg(long, default_value = "ssh:")]
        application: String,
        #[arg(long)]
        root_dir: PathBuf,
        /// The challenge file (read; made with 32 random bytes if it does not exist).
        #[arg(long)]
        challenge: PathBuf,
        #[arg(long)]
        write_attestation: PathBuf,
        #[arg(long)]
        ecdsa: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create whichever of the host key, the CA key and the audit signing key named in the
    /// config (or in --dir) do not exist yet; never overwrites.
    Init {
        #[arg(long, short, env = "STAPSTEEN_CONFIG", conflicts_with = "dir")]
        config: Option<PathBuf>,
        /// Write `host_key`, `ca_key` and `signing_key` into this directory instead.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConsoleCommand {
    /// Print a one-time code with which reviewer NAME (from the policy) enrols a security key
    /// at the console's /enrol page. A new code replaces an unused one. With --for-policy, for
    /// an appliance without a shell: also print the `enrolment` line for NAME's `[[reviewer]]`
    /// in the policy, which carries only the code's hash; nothing is written.
    Enrol {
        #[arg(
            long,
            short,
            env = "STAPSTEEN_CONFIG",
            required_unless_present = "for_policy"
        )]
        config: Option<PathBuf>,
        #[arg(long, conflicts_with = "config")]
        for_policy: bool,
        name: String,
        /// How long the code stays valid.
        #[arg(long, default_value = "24h")]
        valid: jiff::SignedDuration,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check every entry's signature, sequence and link to the one before, across the chain's
    /// segments; exit 1 on a finding.
    Verify {
        #[arg(long, short, env = "STAPSTEEN_CONFIG")]
        config: PathBuf,
        /// The signing key's public half (default: the configured signing key with `.pub`).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Start from this signed checkpoint (an entry's note, as in the off-site copy's
        /// `audit/SEQ.note` or a CHECKPOINT event): earlier entries and segments are not needed.
        #[arg(long)]
        from: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum IndexCommand {
    /// Delete the index and build it again from the recordings and the audit chain. Run it with
    /// the daemon stopped (a running daemon keeps the index it has open until restarted).
    Rebuild {
        #[arg(long, short, env = "STAPSTEEN_CONFIG")]
        config: PathBuf,
        /// The signing key's public half (default: the configured signing key with `.pub`).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Build into this file instead of the daemon's index (for comparing the two).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum FirewallCommand {
    /// Print the ruleset in nft syntax.
    Plan {
        #[arg(long, short, env = "STAPSTEEN_CONFIG")]
        config: PathBuf,
        /// Plan as of this time ("2026-03-03 10:00", Europe/Amsterdam) instead of now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Apply the ruleset now (`serve` does this itself at start, on reload and as grants open
    /// and close).
    Apply {
        #[arg(long, short, env = "STAPSTEEN_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum RecordingsCommand {
    /// Id, admin, target, start, length and exit status of every recording.
    List {
        #[arg(long, short, env = "STAPSTEEN_CONFIG")]
        config: PathBuf,
    },
    /// Print a recording's output, with control sequences that could act on your terminal removed.
    Cat {
        #[arg(long, short, env = "STAPSTEEN_CONFIG")]
        config: PathBuf,
        id: String,
    },
    /// Recompute each recording's line chain and compare it with the signed audit chain; exit 1
    /// on anything but intact or sealed.
    Verify {
        #[arg(long, short, env = "STAPSTEEN_CONFIG")]
        config: PathBuf,
        /// The signing key's public half (default: the configured signing key with `.pub`).
        #[arg(long)]
        key: Option<PathBuf>,
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every recording the chain or the recordings directory knows.
        #[arg(long)]
        all: bool,
    },
}

fn code_expiry(valid: jiff::SignedDuration) -> Result<jiff::Timestamp> {
    if valid.is_negative() || valid.is_zero() {
        bail!("--valid must be positive");
    }
    Ok(jiff::Timestamp::now().checked_add(valid)?)
}

fn console_enrol_for_policy(name: &str, valid: jiff::SignedDuration) -> Result<()> {
    let name = crate::policy::ReviewerName::new(name)?;
    let expires = code_expiry(valid)?;
    let code = crate::console::new_code();
    let until = expires
        .to_zoned(crate::policy::policy_zone())
        .strftime("%Y-%m-%d %H:%M:%S");
    println!("{}", code.expose());
    eprintln!(
        "one-time enrolment code for {name}, valid until {until} ({}). Give the code to the\n\
         reviewer in person; put this line in {name}'s [[reviewer]] entry of the policy:\n\n\
         enrolment = {{ sha256 = \"{}\", until = \"{until}\" }}",
        crate::policy::policy_zone()
            .iana_name()
            .unwrap_or("Europe/Amsterdam"),
        crate::console::code_hash(code.expose()),
    );
    Ok(())
}

fn console_enrol(config: &Path, name: &str, valid: jiff::SignedDuration) -> Result<()> {
    let config = Config::load(config)?;
    let console = config
        .console
        .as_ref()
        .context("the config has no [console] section")?;
    let policy = load_policy(&config.policy)?;
    let reviewer = policy.reviewer(name).with_context(|| {
        format!(
            "{name} is not a [[reviewer]] in {}",
            config.policy.display()
        )
    })?;
    if valid.is_negative() || valid.is_zero() {
        anyhow::bail!("--valid must be positive");
    }
    let expires = jiff::Timestamp::now().checked_add(valid)?;
    let code =
        crate::console::Reviewers::new(config.console_dir()).issue_code(&reviewer.name, expires)?;
    crate::audit::init(config.audit);
    Event::new(Code::ConsoleEnrolCode)
        .detail("reviewer", reviewer.name.to_string())
        .detail("expires", expires.to_string())
        .emit();
    println!("{}", code.expose());
    eprintln!(
        "one-time enrolment code for {}, valid until {}; enrol at https://{}/enrol",
        reviewer.name,
        crate::policy::local(expires),
        console.host
    );
    Ok(())
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => {
            runtime().and_then(|rt| rt.block_on(crate::serve::serve(&config)))
        }
        Command::Check { config, policy } => match (config, policy) {
            (_, Some(policy)) => load_policy(&policy)
                .map(|p| {
                    print_warnings(&p);
                    println!("{}: ok", policy.display());
                })
                .map_err(anyhow::Error::from),
            (Some(config), None) => check(&config),
            (None, None) => Err(anyhow::anyhow!("give --config FILE or --policy FILE")),
        },
        Command::Keys {
            command: KeysCommand::Init { config, dir },
        } => keys_init(config.as_deref(), dir.as_deref()),
        #[cfg(feature = "demo")]
        Command::Demo { port, console_port } => {
            runtime().and_then(|rt| rt.block_on(crate::demo::run(port, console_port)))
        }
        Command::Firewall { command } => firewall(command),
        Command::Recordings { command } => recordings(command),
        Command::Audit {
            command: AuditCommand::Verify { config, key, from },
        } => audit_verify(&config, key.as_deref(), from.as_deref()),
        Command::Index {
            command: IndexCommand::Rebuild { config, key, out },
        } => index_rebuild(&config, key.as_deref(), out.as_deref()),
        Command::Console {
            command:
                ConsoleCommand::Enrol {
                    config,
                    for_policy,
                    name,
                    valid,
                },
        } => match (config, for_policy) {
            (Some(config), false) => console_enrol(&config, &name, valid),
            _ => console_enrol_for_policy(&name, valid),
        },
        #[cfg(feature = "demo")]
        Command::SoftkeyAgent {
            socket,
            key,
            application,
            flags,
            counter,
            counter_step,
            refuse_sign,
            ecdsa,
        } => runtime().and_then(|rt| {
            rt.block_on(async {
                let mut k =
                    crate::softkey::SoftKey::open(&key, &application, flags, counter, ecdsa)?;
                k.refuse_sign = refuse_sign;
                k.counter_step = counter_step;
                std::sync::Arc::new(k).serve(&socket).await?;
                Ok(())
            })
        }),
        #[cfg(feature = "demo")]
        Command::SoftkeyAttest {
            key,
            application,
            root_dir,
            challenge,
            write_attestation,
            ecdsa,
        } => softkey_attest(
            &key,
            &application,
            &root_dir,
            &challenge,
            &write_attestation,
            ecdsa,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stapsteen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "demo")]
fn softkey_attest(
    key: &Path,
    application: &str,
    root_dir: &Path,
    challenge: &Path,
    out: &Path,
    ecdsa: bool,
) -> Result<()> {
    let soft = crate::softkey::SoftKey::open(key, application, 0, 0, ecdsa)?;
    if !challenge.exists() {
        let c: [u8; 32] = rand::random();
        std::fs::write(challenge, c)?;
    }
    let blob = soft.attest(root_dir, &std::fs::read(challenge)?)?;
    std::fs::write(out, blob)?;
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Keys that log in without a touch or without their PIN: allowed, but never silently.
fn print_warnings(policy: &crate::policy::Policy) {
    for w in &policy.warnings {
        eprintln!("{w}");
    }
}

fn check(path: &Path) -> Result<()> {
    let config = Config::load(path)?;
    let mut problems = Vec::new();
    let policy = load_policy(&config.policy);
    if let Ok(p) = &policy {
        print_warnings(p);
    }
    match policy {
        Ok(policy) if config.firewall.enabled => {
            if let Err(e) = Enforcer::for_config(&config).plan(&policy, jiff::Timestamp::now()) {
                problems.push(format!("{}: {e}", config.policy.display()));
            }
        }
        Ok(_) => {}
        Err(e) => problems.push(e.to_string()),
    }
    for (name, p) in [
        ("host_key", &config.host_key),
        ("ca_key", &config.ca_key),
        ("signing_key", &config.signing_key),
    ] {
        if let Err(e) = load_key(name, p) {
            problems.push(e.to_string());
        }
    }
    if let Some(o) = &config.offsite
        && let Err(e) = Offsite::new(o)
    {
        problems.push(e.to_string());
    }
    if let Err(e) = crate::console::check(&config) {
        problems.push(e.to_string());
    }
    if problems.is_empty() {
        println!("{}: ok", path.display());
        Ok(())
    } else {
        for p in &problems {
            eprintln!("{p}");
        }
        bail!("{} problem(s) found", problems.len())
    }
}

fn firewall(command: FirewallCommand) -> Result<()> {
    let (path, at, apply) = match command {
        FirewallCommand::Plan { config, at } => (config, at, false),
        FirewallCommand::Apply { config } => (config, None, true),
    };
    let config = Config::load(&path)?;
    if !config.firewall.enabled {
        bail!("{}: [firewall] enabled = false", path.display());
    }
    let policy = load_policy(&config.policy)?;
    let now = match at {
        Some(t) => crate::policy::parse_time(&t).map_err(anyhow::Error::msg)?,
        None => jiff::Timestamp::now(),
    };
    let enforcer = Enforcer::for_config(&config);
    if apply {
        let plan = enforcer.apply(&policy, now)?;
        println!(
            "applied table inet {}: {} grant elements",
            crate::firewall::TABLE,
            plan.elements.len()
        );
    } else {
        print!("{}", enforcer.plan(&policy, now)?.to_text());
    }
    Ok(())
}

fn keys_init(config: Option<&Path>, dir: Option<&Path>) -> Result<()> {
    let (host, ca, signing) = match (config, dir) {
        (Some(c), _) => {
            let c = Config::load(c)?;
            (c.host_key, c.ca_key, c.signing_key)
        }
        (None, Some(d)) => (d.join("host_key"), d.join("ca_key"), d.join("signing_key")),
        (None, None) => bail!("give --config FILE or --dir DIR"),
    };
    // Missing keys are created (an appliance from before the signing key gets one); existing
    // ones are kept.
    for line in crate::secrets::init_keys(&host, &ca, &signing)? {
        println!("{line}");
    }
    println!(
        "Targets trust the CA with TrustedUserCAKeys pointing at {}.pub\n\
         Give {}.pub to whoever checks the audit chain elsewhere",
        ca.display(),
        signing.display()
    );
    Ok(())
}

fn recordings(command: RecordingsCommand) -> Result<()> {
    match command {
        RecordingsCommand::List { config } => {
            let config = Config::load(&config)?;
            let store = RecordingStore::new(config.recordings_dir());
            println!(
                "{:<26} {:<14} {:<22} {:<20} {:>9} EXIT",
                "ID", "ADMIN", "TARGET", "START", "LENGTH"
            );
            for m in store.list()? {
                let length = m
                    .end
                    .map(|e| format!("{}s", e.duration_since(m.start).as_secs()))
                    .unwrap_or_else(|| "open".into());
                let exit = match (m.exit_status, &m.end_reason) {
                    (Some(c), _) => c.to_string(),
                    (None, Some(r)) => r.clone(),
                    (None, None) => "-".into(),
                };
                println!(
                    "{:<26} {:<14} {:<22} {:<20} {:>9} {}",
                    m.id,
                    m.admin,
                    format!("{}@{}", m.account, m.target),
                    m.start
                        .to_zoned(crate::policy::policy_zone())
                        .strftime("%Y-%m-%d %H:%M:%S"),
                    length,
                    exit
                );
            }
            Ok(())
        }
        RecordingsCommand::Verify {
            config,
            key,
            id,
            all,
        } => recordings_verify(&config, key.as_deref(), id.as_deref(), all),
        RecordingsCommand::Cat { config, id } => {
            let config = Config::load(&config)?;
            let Some(id) = SessionId::parse(&id) else {
                bail!("{id:?} is not a recording id");
            };
            let store = RecordingStore::new(config.recordings_dir());
            let text = store
                .output_text(&id)
                .with_context(|| format!("recording {id}"))?;
            print!("{text}");
            Ok(())
        }
    }
}

/// The off-site copy, what comparing the chain with it found, and the runtime that talks to it.
struct OffsiteCheck {
    offsite: Offsite,
    comparison: Comparison,
    rt: tokio::runtime::Runtime,
}

/// The signing key's public half, to check the chain with (default: the configured signing key
/// with `.pub`).
fn chain_verifier(config: &Config, key: Option<&Path>) -> Result<NoteVerifier> {
    let pub_path = key.map(Path::to_owned).unwrap_or_else(|| {
        let mut p = config.signing_key.as_os_str().to_owned();
        p.push(".pub");
        PathBuf::from(p)
    });
    let text = std::fs::read_to_string(&pub_path).with_context(|| {
        format!(
            "cannot read the signing key's public half {}",
            pub_path.display()
        )
    })?;
    let public = russh::keys::PublicKey::from_openssh(text.trim())
        .with_context(|| format!("{} is not an OpenSSH public key", pub_path.display()))?;
    let verifier = NoteVerifier::from_public(&public)?;
    Ok(verifier)
}

fn index_rebuild(config: &Path, key: Option<&Path>, out: Option<&Path>) -> Result<()> {
    let config = Config::load(config)?;
    let verifier = chain_verifier(&config, key)?;
    let path = out.map_or_else(|| config.index_path(), Path::to_owned);
    let started = std::time::Instant::now();
    let index = crate::console::index::Index::rebuild(
        &path,
        &config.chain_path(),
        RecordingStore::new(config.recordings_dir()),
        verifier,
    )?;
    let (sessions, problems) = index.counts()?;
    println!(
        "{}: {sessions} sessions indexed in {:.1} s",
        path.display(),
        started.elapsed().as_secs_f64()
    );
    for p in &problems {
        println!("{}: {p}", config.chain_path().display());
    }
    if !problems.is_empty() {
        bail!("{} finding(s) in the audit chain", problems.len());
    }
    Ok(())
}

/// The audit chain of `config`, checked with the signing key's public half; with `[offsite]`,
/// compared with the off-site copy too.
fn checked_chain(
    config: &Config,
    key: Option<&Path>,
    from: Option<&Path>,
) -> Result<(crate::audit::ChainReport, Option<OffsiteCheck>)> {
    let verifier = chain_verifier(config, key)?;
    let start = match from {
        Some(f) => {
            let note = std::fs::read(f).with_context(|| format!("checkpoint {}", f.display()))?;
            Some(
                Start::from_note(&note, &verifier)
                    .with_context(|| format!("checkpoint {}", f.display()))?,
            )
        }
        None => None,
    };
    let path = config.chain_path();
    let segments = read_segments(&path, start.map_or(0, |s| s.seq))
        .with_context(|| format!("audit chain {}", path.display()))?;
    let report = verify_segments(&segments, &verifier, start);
    let offsite = match &config.offsite {
        Some(cfg) => {
            let offsite = Offsite::new(cfg)?;
            let rt = runtime()?;
            let comparison = rt.block_on(compare_chain(
                &offsite,
                &report,
                &verifier,
                start.map_or(0, |s| s.seq),
            ))?;
            Some(OffsiteCheck {
                offsite,
                comparison,
                rt,
            })
        }
        None => None,
    };
    Ok((report, offsite))
}

fn audit_verify(config: &Path, key: Option<&Path>, from: Option<&Path>) -> Result<()> {
    let config = Config::load(config)?;
    let (report, offsite) = checked_chain(&config, key, from)?;
    let chain = config.chain_path();
    let mut findings: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    if let Some(check) = &offsite {
        findings.extend(check.comparison.findings.iter().cloned());
    }
    for f in &findings {
        println!("{}: {f}", chain.display());
    }
    match report.entries.last() {
        Some((last, _)) => println!(
            "{}: {} entries verified, last seq {} at {}",
            chain.display(),
            report.entries.len(),
            last.seq,
            last.time
        ),
        None => println!("{}: no entry verified", chain.display()),
    }
    if let Some(check) = &offsite {
        for n in &check.comparison.notes {
            println!("{n}");
        }
    }
    if !findings.is_empty() {
        bail!("{} finding(s) in the audit chain", findings.len());
    }
    Ok(())
}

fn recordings_verify(config: &Path, key: Option<&Path>, id: Option<&str>, all: bool) -> Result<()> {
    let config = Config::load(config)?;
    let (report, offsite) = checked_chain(&config, key, None)?;
    let mut findings = 0;
    for p in &report.problems {
        println!("audit chain {p}");
        findings += 1;
    }
    if let Some(check) = &offsite {
        for f in &check.comparison.findings {
            println!("audit chain: {f}");
            findings += 1;
        }
    }
    let store = RecordingStore::new(config.recordings_dir());
    let ids = match (id, all) {
        (Some(id), _) => match SessionId::parse(id) {
            Some(id) => vec![id],
            None => bail!("{id:?} is not a recording id"),
        },
        (None, _) => {
            let mut ids: Vec<SessionId> = report
                .sessions()
                .into_iter()
                .filter(|e| e.seal.is_some())
                .filter_map(|e| e.session.clone())
                .collect();
            for id in store.cast_ids()? {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            ids
        }
    };
    for id in &ids {
        let verdict = verify_recording(&store, id, &report);
        let mut ok = verdict.ok();
        let mut line = format!("{id}  {verdict}");
        // A pruned recording's off-site copy follows the store's own lifecycle rule.
        if let Some(check) = offsite
            .as_ref()
            .filter(|_| !matches!(verdict, crate::recording::Verdict::Pruned { .. }))
        {
            match check
                .rt
                .block_on(compare_recording(&check.offsite, &store, id))?
            {
                Ok(seen) => line += &format!("; {seen}"),
                Err(finding) => {
                    ok = false;
                    line += &format!("; {finding}");
                }
            }
        }
        if !ok {
            findings += 1;
        }
        println!("{line}");
    }
    if findings > 0 {
        bail!("{findings} finding(s)");
    }
    Ok(())
}
