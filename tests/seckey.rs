//! Security keys against a running bastion: touch and PIN flags, the signature counter, and
//! enrolment attestations, with the stock OpenSSH client signing through the software key's
//! agent and through OpenSSH's own sk-dummy provider.
#![allow(clippy::unwrap_used, clippy::panic)]

#[macro_use]
mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{BASTION, Env, Options, bin, stderr, stdout};
use stapsteen::seckey::{AttestationError, Roots, verify_attestation};
use stapsteen::softkey::SoftKey;

/// Writes the policy with `extra` and waits until the bastion has loaded it.
fn reload_policy(env: &Env, extra: &str) {
    let before = loaded(env);
    env.write_policy(extra);
    env.reload();
    env.wait_audit("POLICY_LOADED", |_| loaded(env) > before);
}

fn loaded(env: &Env) -> usize {
    env.audit()
        .iter()
        .filter(|e| e["code"] == "POLICY_LOADED")
        .count()
}

/// An admin `carol` in the pacs-beheer group with these authorized_keys lines.
fn carol(keys: &[String]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("'{k}'")).collect();
    format!(
        "[[admin]]\nname = \"carol\"\ngroups = [\"pacs-beheer\"]\nkeys = [{}]\n",
        keys.join(", ")
    )
}

fn public(env: &Env, key: &str) -> String {
    std::fs::read_to_string(env.path(&format!("{key}.sk.pub")))
        .unwrap()
        .trim()
        .to_owned()
}

fn fingerprint(env: &Env, pub_file: &str) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(env.path(pub_file))
        .output()
        .unwrap();
    stdout(&out).split_whitespace().nth(1).unwrap().to_owned()
}

/// `ssh carol@bastion pacs01 echo in` through the agent on `sock`.
fn login(env: &Env, sock: &str) -> Output {
    env.run(
        "ssh",
        sock,
        &[&format!("carol@{BASTION}"), "pacs01", "echo", "in"],
        None,
    )
}

fn admitted(out: &Output) {
    assert_eq!(stdout(out), "in\n", "{}", stderr(out));
}

fn refused(out: &Output, banner: &str) {
    assert_eq!(out.status.code(), Some(255), "{}", stderr(out));
    assert!(
        stderr(out).contains(banner) && stderr(out).contains("Permission denied"),
        "{}",
        stderr(out)
    );
}

/// The `AUTH_DENIED` event for the key with `fp`, once there are `n` of them.
fn denial(env: &Env, fp: &str, n: usize) -> serde_json::Value {
    env.wait_audit("AUTH_DENIED", |_| {
        env.audit()
            .iter()
            .filter(|e| e["code"] == "AUTH_DENIED" && e["fingerprint"] == fp)
            .count()
            >= n
    });
    env.audit()
        .into_iter()
        .filter(|e| e["code"] == "AUTH_DENIED" && e["fingerprint"] == fp)
        .nth(n - 1)
        .unwrap()
}

#[test]
fn touch_and_pin_flags() {
    let mut env = testbed!();
    // Software keys that sign with given flags: both, touch only, PIN only, neither.
    for (key, flags) in [("both", "5"), ("touch", "1"), ("pin", "4"), ("none", "0")] {
        env.agent(&format!("{key}.sock"), key, &["--flags", flags]);
    }
    let line = |k: &str, opts: &str| format!("{opts} {}", public(&env, k)).trim().to_owned();
    reload_policy(
        &env,
        &carol(&[
            line("both", ""),
            line("touch", ""),
            line("pin", ""),
            line("none", ""),
        ]),
    );

    // Touch and PIN: admitted, and the flags and counter are in AUTH_OK and the signed start.
    admitted(&login(&env, "both.sock"));
    let fp = fingerprint(&env, "both.sk.pub");
    let ok = env.wait_audit("AUTH_OK", |e| e["fingerprint"] == fp.as_str());
    let d = Env::detail(&ok);
    assert_eq!(d["flags"], "up,uv");
    assert_eq!(d["user_present"], true);
    assert_eq!(d["user_verified"], true);
    assert!(d["counter"].as_u64().unwrap() >= 1);
    let chain = std::fs::read_to_string(env.path("state/audit/chain.jsonl")).unwrap();
    assert!(
        chain.contains(&format!("key {fp}")) && chain.contains("key_flags up,uv"),
        "{chain}"
    );

    // Touch without PIN under the default: refused, and the admin is told how to fix it.
    let out = login(&env, "touch.sock");
    refused(&out, "did not ask for its PIN");
    assert!(stderr(&out).contains("ssh-keygen -t ed25519-sk -O verify-required"));
    let d = denial(&env, &fingerprint(&env, "touch.sk.pub"), 1);
    assert_eq!(d["reason"], "no_user_verification");
    assert_eq!(Env::detail(&d)["flags"], "up");

    // No touch: refused as no user presence, PIN or not.
    for key in ["pin", "none"] {
        refused(
            &login(&env, &format!("{key}.sock")),
            "signed without a touch",
        );
        let d = denial(&env, &fingerprint(&env, &format!("{key}.sk.pub")), 1);
        assert_eq!(d["reason"], "no_user_presence");
    }

    // The policy may lower the bar per key, visibly: no-touch-required (the PIN still counts)
    // and presence-only.
    reload_policy(
        &env,
        &carol(&[
            line("both", ""),
            line("touch", "presence-only"),
            line("pin", "no-touch-required"),
            line("none", "no-touch-required"),
        ]),
    );
    admitted(&login(&env, "touch.sock"));
    admitted(&login(&env, "pin.sock"));
    refused(&login(&env, "none.sock"), "did not ask for its PIN");
    assert_eq!(
        denial(&env, &fingerprint(&env, "none.sk.pub"), 2)["reason"],
        "no_user_verification"
    );
    let warnings: Vec<_> = env
        .audit()
        .into_iter()
        .filter(|e| e["code"] == "POLICY_WARNING")
        .collect();
    assert!(warnings.len() >= 3, "{warnings:?}");

    // Or policy-wide: presence only for every key that does not ask for more.
    reload_policy(
        &env,
        &format!(
            "{}\n[security_keys]\nverification = \"presence-only\"\n",
            carol(&[line("touch", ""), line("both", "verify-required")])
        ),
    );
    admitted(&login(&env, "touch.sock"));
    admitted(&login(&env, "both.sock"));
}

#[test]
fn counter_must_rise() {
    let mut env = testbed!();
    env.agent("k.sock", "k", &["--counter", "100"]);
    env.agent(
        "still.sock",
        "still",
        &["--counter", "7", "--counter-step", "0"],
    );
    env.agent(
        "zero.sock",
        "zero",
        &["--counter", "0", "--counter-step", "0"],
    );
    let k = public(&env, "k");
    let still = public(&env, "still");
    let zero = public(&env, "zero");
    reload_policy(&env, &carol(&[k.clone(), still.clone(), zero.clone()]));
    let fp = fingerprint(&env, "k.sk.pub");

    admitted(&login(&env, "k.sock"));
    admitted(&login(&env, "k.sock"));
    // A copy of the key, whose counter is behind: refused as a possible clone, with an alert.
    env.agent("clone.sock", "k", &["--counter", "50"]);
    refused(&login(&env, "clone.sock"), "counter went back");
    assert_eq!(denial(&env, &fp, 1)["reason"], "counter_regression");
    let alert = env.wait_audit("KEY_COUNTER_REGRESSION", |e| {
        e["fingerprint"] == fp.as_str()
    });
    let d = Env::detail(&alert);
    assert_eq!(
        (d["counter"].as_u64(), d["refused"].as_bool()),
        (Some(50), Some(true))
    );
    assert!(d["last_counter"].as_u64().unwrap() >= 101);
    // The key is quarantined: after a restart of the daemon too, neither the copy nor the
    // original gets in, whatever counter they show.
    env.kill_bastion();
    env.restart_bastion();
    refused(&login(&env, "clone.sock"), "counter went back");
    assert_eq!(denial(&env, &fp, 2)["reason"], "key_quarantined");
    refused(&login(&env, "k.sock"), "counter went back");
    assert_eq!(denial(&env, &fp, 3)["reason"], "key_quarantined");
    let counters = std::fs::read_to_string(env.path("state/key-counters.json")).unwrap();
    assert!(
        counters.contains(&fp) && counters.contains("\"quarantined\": true"),
        "{counters}"
    );

    // A counter that stands still: the first login sets it, the second is refused...
    let still_fp = fingerprint(&env, "still.sk.pub");
    admitted(&login(&env, "still.sock"));
    refused(&login(&env, "still.sock"), "counter went back");
    assert_eq!(denial(&env, &still_fp, 1)["reason"], "counter_regression");
    // ...unless the policy marks the key: then it is only audited. The same mark is how the
    // security team lets a quarantined key in again.
    reload_policy(
        &env,
        &carol(&[
            format!("counter-unchecked {k}"),
            format!("counter-unchecked {still}"),
            zero,
        ]),
    );
    admitted(&login(&env, "still.sock"));
    env.wait_audit("KEY_COUNTER_REGRESSION", |e| {
        e["fingerprint"] == still_fp.as_str() && Env::detail(e)["refused"] == false
    });
    admitted(&login(&env, "k.sock"));

    // A key that always says 0 keeps no counter: admitted, and audited each time.
    let zero_fp = fingerprint(&env, "zero.sk.pub");
    admitted(&login(&env, "zero.sock"));
    admitted(&login(&env, "zero.sock"));
    env.wait_audit("KEY_COUNTER_ZERO", |_| {
        env.audit()
            .iter()
            .filter(|e| e["code"] == "KEY_COUNTER_ZERO" && e["fingerprint"] == zero_fp.as_str())
            .count()
            == 2
    });
}

/// `stapsteen softkey-attest` for key file `key` under the test root in `root`.
fn attest(env: &Env, key: &str, root: &str, challenge: &str, out: &str) {
    let st = Command::new(bin())
        .args(["softkey-attest", "--key"])
        .arg(env.path(key))
        .arg("--root-dir")
        .arg(env.path(root))
        .arg("--challenge")
        .arg(env.path(challenge))
        .arg("--write-attestation")
        .arg(env.path(out))
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn attestation_at_enrolment() {
    let mut env = testbed!();
    env.agent("a.sock", "a", &[]);
    env.agent("b.sock", "b", &[]);
    attest(&env, "a", "vendor", "a.chal", "a.att");
    attest(&env, "b", "vendor", "b.chal", "b.att");
    attest(&env, "b", "elsewhere", "b.chal", "b-elsewhere.att");
    let roots = "[security_keys]\nattestation_roots = [\"vendor/root.pem\"]\n";
    let required =
        "[security_keys]\nattestation = \"required\"\nattestation_roots = [\"vendor/root.pem\"]\n";
    let with = |key: &str, att: &str, chal: &str| {
        format!(
            "attestation=\"{att}\",challenge=\"{chal}\" {}",
            public(&env, key)
        )
    };
    // `check --policy` of a policy with carol alone.
    let check = |text: &str| {
        std::fs::write(env.path("candidate.toml"), text).unwrap();
        Command::new(bin())
            .args(["check", "--policy"])
            .arg(env.path("candidate.toml"))
            .output()
            .unwrap()
    };
    let attested = carol(&[with("a", "a.att", "a.chal")]);
    // Attested by a root the policy names: accepted by check, even where every key must be
    // attested, and by the daemon; the login names the authenticator model.
    let out = check(&format!("{required}{attested}"));
    assert!(out.status.success(), "{}", stderr(&out));
    reload_policy(&env, &format!("{roots}{attested}"));
    admitted(&login(&env, "a.sock"));
    let fp = fingerprint(&env, "a.sk.pub");
    let ok = env.wait_audit("AUTH_OK", |e| e["fingerprint"] == fp.as_str());
    assert_eq!(
        Env::detail(&ok)["attested_aaguid"],
        hex::encode(b"stapsteen-softky")
    );

    // Each way an attestation can fail is a policy error with file and line, and the daemon
    // keeps the policy it has.
    let cases = [
        (
            roots,
            with("b", "b-elsewhere.att", "b.chal"),
            "does not chain to a policy root",
        ),
        (
            roots,
            with("b", "a.att", "a.chal"),
            "does not attest this key",
        ),
        (
            roots,
            with("b", "b.att", "a.chal"),
            "enrolment signature does not verify",
        ),
        (required, public(&env, "b"), "has no attestation"),
    ];
    let failures = |env: &Env| {
        env.audit()
            .iter()
            .filter(|e| e["code"] == "POLICY_RELOAD_FAILED")
            .count()
    };
    for (settings, line, why) in cases {
        let keys = carol(&[with("a", "a.att", "a.chal"), line]);
        let out = check(&format!("{settings}{keys}"));
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let at = format!("candidate.toml:{}:", settings.lines().count() + 4);
        assert!(
            stderr(&out).contains(&at) && stderr(&out).contains(why),
            "{why}: {}",
            stderr(&out)
        );
        let before = failures(&env);
        env.write_policy(&format!("{settings}{keys}"));
        env.reload();
        env.wait_audit("POLICY_RELOAD_FAILED", |e| {
            failures(&env) > before && Env::detail(e)["errors"].as_str().unwrap().contains(why)
        });
        // b was never admitted; a still is, under the policy in force.
        let b = env.run(
            "ssh",
            "b.sock",
            &[&format!("carol@{BASTION}"), "pacs01", "true"],
            None,
        );
        assert_eq!(b.status.code(), Some(255), "{}", stderr(&b));
        assert!(
            stderr(&b).contains("Permission denied (publickey)"),
            "{}",
            stderr(&b)
        );
        admitted(&login(&env, "a.sock"));
    }
}

#[test]
fn stock_openssh_security_keys() {
    let env = testbed!(Options::default(), [common::Extra::SkDummy]);
    let provider = common::sk_dummy();
    // Keys made by the stock ssh-keygen, as an admin would (sk-dummy in place of the hardware).
    let keygen = |name: &str, opts: &[&str]| {
        let mut args = vec!["-q", "-t", "ed25519-sk", "-N", "", "-C", name];
        for o in opts {
            args.extend(["-O", o]);
        }
        let out = Command::new("ssh-keygen")
            .args(&args)
            .arg("-w")
            .arg(&provider)
            .arg("-f")
            .arg(env.path(name))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        std::fs::read_to_string(env.path(&format!("{name}.pub")))
            .unwrap()
            .trim()
            .to_owned()
    };
    let pin = keygen("pin", &["verify-required"]);
    let plain = keygen("plain", &[]);
    let notouch = keygen("notouch", &["no-touch-required", "verify-required"]);
    let again = keygen("again", &["verify-required"]);
    // The PIN prompt is answered by an askpass program (sk-dummy ignores the PIN).
    let askpass = env.path("askpass");
    std::fs::write(&askpass, "#!/bin/sh\necho 0000\n").unwrap();
    std::fs::set_permissions(
        &askpass,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let ssh = |key: &str| {
        let mut args: Vec<String> = env.ssh_opts("none");
        args.extend([
            "-o".into(),
            format!("SecurityKeyProvider={}", provider.display()),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-i".into(),
            env.path(key).display().to_string(),
            format!("carol@{BASTION}"),
            "pacs01".into(),
            "echo".into(),
            "in".into(),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut all = vec![
            "env".to_owned(),
            format!("SSH_ASKPASS={}", askpass.display()),
            "SSH_ASKPASS_REQUIRE=force".to_owned(),
            "ssh".to_owned(),
        ];
        all.extend(refs.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        env.client(refs[0], &refs[1..], None)
    };
    reload_policy(
        &env,
        &carol(&[
            pin.clone(),
            plain.clone(),
            notouch.clone(),
            format!("counter-unchecked {again}"),
        ]),
    );
    // Made with -O verify-required: touch and PIN, admitted.
    admitted(&ssh("pin"));
    let fp = fingerprint(&env, "pin.pub");
    let d = Env::detail(&env.wait_audit("AUTH_OK", |e| e["fingerprint"] == fp.as_str()));
    assert_eq!(d["flags"], "up,uv");
    assert_eq!(d["counter"], 0x12345678);
    // sk-dummy's counter never moves: the second login looks like a clone and is refused.
    refused(&ssh("pin"), "counter went back");
    assert_eq!(denial(&env, &fp, 1)["reason"], "counter_regression");
    // Unless the policy marks the key counter-unchecked: audited, admitted.
    admitted(&ssh("again"));
    admitted(&ssh("again"));
    let again_fp = fingerprint(&env, "again.pub");
    env.wait_audit("KEY_COUNTER_REGRESSION", |e| {
        e["fingerprint"] == again_fp.as_str() && Env::detail(e)["refused"] == false
    });
    // A key made without -O verify-required never asks for the PIN: refused by default.
    let out = ssh("plain");
    refused(&out, "did not ask for its PIN");
    assert_eq!(
        denial(&env, &fingerprint(&env, "plain.pub"), 1)["reason"],
        "no_user_verification"
    );
    // A key made with -O no-touch-required signs without a touch: refused (OpenSSH's sshd
    // refuses it too, unless authorized_keys says no-touch-required).
    let out = ssh("notouch");
    refused(&out, "signed without a touch");
    assert_eq!(
        denial(&env, &fingerprint(&env, "notouch.pub"), 1)["reason"],
        "no_user_presence"
    );
    // Listed as no-touch-required, it gets in (and check warns). Its refused signature
    // already set its counter, which sk-dummy never moves: hence counter-unchecked too.
    reload_policy(
        &env,
        &carol(&[
            format!("no-touch-required,counter-unchecked {notouch}"),
            plain,
        ]),
    );
    admitted(&ssh("notouch"));
}

// The attestation verifier on its own, with the software key's attestations.

fn key(dir: &Path, name: &str, ecdsa: bool) -> SoftKey {
    SoftKey::open(&dir.join(name), "ssh:", 5, 1, ecdsa).unwrap()
}

#[test]
fn attestations() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let roots = |name: &str| Roots::load(&[&d.join(name).join("root.pem")]).unwrap();
    for ecdsa in [false, true] {
        let k = key(d, &format!("k{ecdsa}"), ecdsa);
        let blob = k.attest(&d.join("vendor"), b"challenge-1").unwrap();
        let vendor = roots("vendor");
        let ok = verify_attestation(&blob, b"challenge-1", k.public_key(), &vendor).unwrap();
        assert_eq!(ok.root, "stapsteen test attestation root");
        assert_eq!(ok.aaguid, hex::encode(b"stapsteen-softky"));
        // Another challenge: the enrolment signature does not verify.
        assert!(matches!(
            verify_attestation(&blob, b"challenge-2", k.public_key(), &vendor),
            Err(AttestationError::Signature)
        ));
        // Another key: the attestation is for the first one.
        let other = key(d, &format!("o{ecdsa}"), ecdsa);
        assert!(matches!(
            verify_attestation(&blob, b"challenge-1", other.public_key(), &vendor),
            Err(AttestationError::OtherKey(_))
        ));
        // A root the policy does not name.
        let elsewhere = k.attest(&d.join("unknown"), b"challenge-1").unwrap();
        roots("unknown");
        assert!(matches!(
            verify_attestation(&elsewhere, b"challenge-1", k.public_key(), &vendor),
            Err(AttestationError::Untrusted(_))
        ));
        // Cut or garbled files.
        for bad in [&blob[..blob.len() / 2], b"junk".as_slice(), &[]] {
            assert!(matches!(
                verify_attestation(bad, b"challenge-1", k.public_key(), &vendor),
                Err(AttestationError::Format(_))
            ));
        }
    }
}

#[test]
fn roots_need_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("empty.pem");
    std::fs::write(&f, "").unwrap();
    assert!(Roots::load(&[&f]).is_err());
}
