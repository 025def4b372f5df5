//! The command line without a network: check, keys init, credentials, help.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output};

fn stapsteen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stapsteen"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn config(dir: &Path, policy: &str) -> String {
    std::fs::write(dir.join("policy.toml"), policy).unwrap();
    let cfg = dir.join("stapsteen.toml");
    std::fs::write(
        &cfg,
        "listen = [\"127.0.0.1:0\"]\npolicy = \"policy.toml\"\nstate_dir = \"state\"\nhost_key = \"host_key\"\nca_key = \"ca_key\"\nsigning_key = \"signing_key\"\n[firewall]\nenabled = false\n",
    )
    .unwrap();
    cfg.display().to_string()
}

#[test]
fn check_accepts_the_example_and_reports_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/example-hospital.toml"
    ))
    .unwrap();
    let cfg = config(dir.path(), &example);
    let out = stapsteen(&["keys", "init", "--config", &cfg]);
    assert!(out.status.success(), "{}", text(&out));
    let out = stapsteen(&["check", "--config", &cfg]);
    assert!(out.status.success(), "{}", text(&out));

    let broken = example
        .replace("address = \"10.20.0.20\"", "address = \"gateway.local\"")
        .replace(
            "targets = [\"pacs01\", \"import01\"]",
            "targets = [\"pacs01\", \"pacs99\"]",
        );
    std::fs::write(dir.path().join("policy.toml"), broken).unwrap();
    let out = stapsteen(&["check", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    assert!(
        t.contains("policy.toml:50: address \"gateway.local\" is not an IPv4 or IPv6 address"),
        "{t}"
    );
    assert!(t.contains("policy.toml:71: unknown target pacs99"), "{t}");
}

#[test]
fn keys_init_never_overwrites_and_loose_permissions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert!(stapsteen(&["keys", "init", "--dir", d]).status.success());
    let before = std::fs::read(dir.path().join("ca_key")).unwrap();
    let again = stapsteen(&["keys", "init", "--dir", d]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(text(&again).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(dir.path().join("ca_key")).unwrap(), before);

    let cfg = config(dir.path(), "");
    Command::new("chmod")
        .args(["644", &format!("{d}/host_key")])
        .status()
        .unwrap();
    let out = stapsteen(&["check", "--config", &cfg]);
    assert!(
        text(&out).contains("readable by group or others"),
        "{}",
        text(&out)
    );
}

#[test]
fn keys_come_from_the_credentials_directory_when_present() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    assert!(
        stapsteen(&["keys", "init", "--dir", creds.to_str().unwrap()])
            .status
            .success()
    );
    let cfg = config(dir.path(), "");
    // The configured paths do not exist; the credentials do.
    let without = stapsteen(&["check", "--config", &cfg]);
    assert_eq!(without.status.code(), Some(1));
    assert!(
        text(&without).contains("host_key: No such file or directory"),
        "{}",
        text(&without)
    );
    let with = Command::new(env!("CARGO_BIN_EXE_stapsteen"))
        .args(["check", "--config", &cfg])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    assert!(with.status.success(), "{}", text(&with));
}

/// The `Commands:` section of a help text: each subcommand with its one-line description.
fn listed_commands(help: &str) -> Vec<(String, String)> {
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let l = l.trim();
            let (name, about) = l.split_once(' ').unwrap_or((l, ""));
            (name.to_owned(), about.trim().to_owned())
        })
        .filter(|(name, _)| name != "help")
        .collect()
}

/// Checks the help of `stapsteen PATH...` and of every subcommand it lists, recursively;
/// returns every command path it visited.
fn help_of(path: Vec<&str>) -> Vec<String> {
    let mut args = path.clone();
    args.push("--help");
    let out = stapsteen(&args);
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?}: {}", text(&out));
    let usage = format!(
        "Usage: {}",
        ["stapsteen"]
            .iter()
            .chain(&path)
            .copied()
            .collect::<Vec<_>>()
            .join(" ")
    );
    assert!(help.contains(&usage), "{args:?}:\n{help}");
    // A description before the usage line: the command says what it is for.
    let about = help.lines().next().unwrap_or("");
    assert!(
        !about.trim().is_empty() && !about.starts_with("Usage:"),
        "{args:?} has no description:\n{help}"
    );
    let mut seen = vec![path.join(" ")];
    for (name, description) in listed_commands(&help) {
        assert!(
            !description.is_empty(),
            "{path:?} lists {name} without a description:\n{help}"
        );
        let mut sub = path.clone();
        sub.push(&name);
        seen.extend(help_of(sub));
    }
    seen
}

#[test]
fn every_command_has_help() {
    // Every command `stapsteen --help` lists, recursively, so a new one is covered without
    // being named here; and the hidden ones, which no listing shows.
    let mut seen = help_of(vec![]);
    for hidden in ["softkey-agent", "softkey-attest"] {
        let top = String::from_utf8_lossy(&stapsteen(&["--help"]).stdout).into_owned();
        assert!(!listed_commands(&top).iter().any(|(n, _)| n == hidden));
        seen.extend(help_of(vec![hidden]));
    }
    // The walk found the commands it should (so the parsing above did not silently find none).
    for expected in [
        "serve",
        "check",
        "keys init",
        "demo",
        "firewall plan",
        "recordings cat",
        "audit verify",
        "console enrol",
        "index rebuild",
    ] {
        assert!(
            seen.iter().any(|s| s == expected),
            "{expected} not visited: {seen:?}"
        );
    }
}

fn example_config(dir: &Path, management: &str) -> String {
    let cfg = dir.join("stapsteen.toml");
    let policy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/example-hospital.toml"
    );
    std::fs::write(
        &cfg,
        format!("listen = [\"10.10.0.5:22\"]\npolicy = \"{policy}\"\nstate_dir = \"state\"\nhost_key = \"host_key\"\nca_key = \"ca_key\"\nsigning_key = \"signing_key\"\naudit = \"stderr\"\n[firewall]\nenabled = true\nadmin_networks = [\"10.10.0.0/24\", \"2001:db8:a::/64\"]\nmanagement_networks = [{management}]\nreviewer_networks = [\"10.30.0.0/24\"]\n[console]\nlisten = [\"10.30.0.5:443\"]\nhost = \"stapsteen.ziekenhuis.local\"\n"),
    )
    .unwrap();
    cfg.display().to_string()
}

#[test]
fn firewall_plan_of_the_example_matches_the_golden_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = example_config(dir.path(), "\"10.20.0.0/24\", \"2001:db8:20::/64\"");
    // Tuesday 10:00: inside the vendor's window, which closes at 12:00.
    let out = stapsteen(&[
        "firewall",
        "plan",
        "--config",
        &cfg,
        "--at",
        "2026-03-03 10:00",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let golden = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/example-hospital.nft"
    );
    if std::env::var_os("STAPSTEEN_BLESS").is_some() {
        std::fs::write(golden, &out.stdout).unwrap();
    }
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(golden).unwrap(),
        "plan differs from tests/golden/example-hospital.nft (STAPSTEEN_BLESS=1 rewrites it)"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("timeout 7200s"));
}

#[test]
fn serve_does_not_start_when_the_firewall_cannot_be_applied() {
    let dir = tempfile::tempdir().unwrap();
    // The example's targets lie outside this management network: the kernel could not guard them.
    let cfg = example_config(dir.path(), "\"10.99.0.0/24\"");
    let out = stapsteen(&["keys", "init", "--config", &cfg]);
    assert!(out.status.success());
    let out = stapsteen(&["serve", "--config", &cfg]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FIREWALL_FAILED"), "{err}");
    assert!(err.contains("SERVICE_FAILED"), "{err}");
    assert!(
        err.contains("pacs01 (10.20.0.11) is in no management network"),
        "{err}"
    );
    let out = stapsteen(&["check", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("pacs01 (10.20.0.11) is in no management network"),
        "{}",
        text(&out)
    );
}

#[test]
fn check_policy_alone() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/example-hospital.toml"
    );
    assert!(stapsteen(&["check", "--policy", example]).status.success());
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("p.toml");
    std::fs::write(&broken, "[[grant]]\nname = \"x\"\n").unwrap();
    let out = stapsteen(&["check", "--policy", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("p.toml:1: missing field `targets`"),
        "{}",
        text(&out)
    );
}

#[test]
fn check_loads_the_console_certificate_and_refuses_a_key_that_does_not_match() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    assert!(
        stapsteen(&["keys", "init", "--config", &cfg])
            .status
            .success()
    );
    let made = rcgen::generate_simple_self_signed(vec!["review.test".to_owned()]).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.path().join("console.crt"), made.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("console.key"),
        made.signing_key.serialize_pem(),
    )
    .unwrap();
    std::fs::write(dir.path().join("other.key"), other.serialize_pem()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for key in ["console.key", "other.key"] {
        std::fs::set_permissions(dir.path().join(key), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
    let with_console = |key: &str| {
        let text = std::fs::read_to_string(&cfg).unwrap();
        let text = text.split("[console]").next().unwrap().to_owned();
        std::fs::write(
            &cfg,
            format!("{text}[console]\nlisten = [\"127.0.0.1:0\"]\nhost = \"review.test\"\ncert = \"console.crt\"\nkey = \"{key}\"\n"),
        )
        .unwrap();
        stapsteen(&["check", "--config", &cfg])
    };
    let out = with_console("console.key");
    assert!(out.status.success(), "{}", text(&out));
    let out = with_console("other.key");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("console TLS"), "{}", text(&out));
    let out = with_console("missing.key");
    assert!(text(&out).contains("missing.key"), "{}", text(&out));
    // Like every key file, one that group or others may read is refused.
    std::fs::set_permissions(
        dir.path().join("console.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = with_console("console.key");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("readable by group or others"),
        "{}",
        text(&out)
    );
}

#[test]
fn check_warns_about_keys_without_touch_or_pin() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/example-hospital.toml"
    ))
    .unwrap();
    let lowered = example
        .replacen("\"sk-ssh-ed25519", "\"no-touch-required sk-ssh-ed25519", 1)
        .replacen("\"sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIFAV", "\"presence-only sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIFAV", 1);
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, &lowered).unwrap();
    let out = stapsteen(&["check", "--policy", policy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let at = format!("{}:20: warning: key SHA256:", policy.display());
    assert!(
        err.contains(&at) && err.contains("no-touch-required"),
        "{err}"
    );
    assert!(
        err.contains(":28: warning:") && err.contains("presence-only"),
        "{err}"
    );
    // The unlowered example warns about nothing.
    let out = stapsteen(&[
        "check",
        "--policy",
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/policies/example-hospital.toml"
        ),
    ]);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        text(&out)
    );
}

/// A configuration with fresh keys and its audit chain, cut into segments of 2000 bytes.
fn segmented_chain() -> (
    tempfile::TempDir,
    String,
    std::path::PathBuf,
    stapsteen::audit::AuditChain,
) {
    use stapsteen::audit::{AuditChain, NoteSigner};
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    assert!(
        stapsteen(&["keys", "init", "--config", &cfg])
            .status
            .success()
    );
    let live = dir.path().join("state/audit/chain.jsonl");
    std::fs::create_dir_all(live.parent().unwrap()).unwrap();
    let key = stapsteen::secrets::load_key("signing_key", &dir.path().join("signing_key")).unwrap();
    let chain = AuditChain::open_segmented(
        &live,
        NoteSigner::new(&key).unwrap(),
        std::sync::Arc::new(stapsteen::clock::SystemClock),
        stapsteen::config::OnFailure::EndSessions,
        2000,
    )
    .unwrap();
    (dir, cfg, live, chain)
}

#[test]
fn audit_verify_reads_every_segment_and_starts_from_a_signed_checkpoint() {
    use stapsteen::audit::{Draft, Kind, Line, segments};
    let (dir, cfg, live, chain) = segmented_chain();
    for _ in 0..20 {
        chain.append_blocking(Draft::new(Kind::Open)).unwrap();
    }
    drop(chain);
    let out = stapsteen(&["audit", "verify", "--config", &cfg]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("21 entries verified, last seq 20"),
        "{}",
        text(&out)
    );

    // The oldest segment archived elsewhere: its entries are missing...
    let segs = segments(&live).unwrap();
    let second = std::fs::read_to_string(&segs[1]).unwrap();
    std::fs::remove_file(&segs[0]).unwrap();
    let out = stapsteen(&["audit", "verify", "--config", &cfg]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("are missing before seq"),
        "{}",
        text(&out)
    );
    // ...unless verification starts from a signed checkpoint at the next segment's first entry.
    let line: Line = serde_json::from_str(second.lines().next().unwrap()).unwrap();
    let note = dir.path().join("checkpoint.note");
    std::fs::write(&note, &line.note).unwrap();
    let out = stapsteen(&[
        "audit",
        "verify",
        "--config",
        &cfg,
        "--from",
        note.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("last seq 20"), "{}", text(&out));
}

#[test]
fn index_rebuild_reads_every_segment_and_reports_a_changed_chain() {
    use stapsteen::audit::{Draft, Kind, segments};
    use stapsteen::ids::SessionId;
    let (dir, cfg, live, chain) = segmented_chain();
    // Sessions that went on unrecorded: known from their start and end entries only.
    for i in 0..7 {
        let id = SessionId::generate(jiff::Timestamp::now());
        let start = Draft::new(Kind::Start)
            .session(&id)
            .field("admin", format!("admin{i}"))
            .field("target", "lab01");
        chain.append_blocking(start).unwrap();
        let end = Draft::new(Kind::End).session(&id).field("exit_status", 0);
        chain.append_blocking(end).unwrap();
    }
    drop(chain);
    assert!(segments(&live).unwrap().len() > 2);
    let out = stapsteen(&["index", "rebuild", "--config", &cfg]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("7 sessions indexed"), "{}", text(&out));
    assert!(dir.path().join("state/index/console.sqlite3").exists());

    // An entry changed in place: the rebuild reads it again and says so.
    let first = segments(&live).unwrap()[0].clone();
    let changed = std::fs::read_to_string(&first)
        .unwrap()
        .replacen("admin0", "admin9", 1);
    std::fs::write(&first, changed).unwrap();
    let other = dir.path().join("other.sqlite3");
    let out = stapsteen(&[
        "index",
        "rebuild",
        "--config",
        &cfg,
        "--out",
        other.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("changed or forged"), "{}", text(&out));
    assert!(text(&out).contains("6 sessions indexed"), "{}", text(&out));
}
