//! Policy file parsing: TOML into raw structs (unknown fields are errors), then validation into
//! [`Policy`], collecting every problem with its file and line.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use jiff::civil::DateTime;
use jiff::{SignedDuration, Timestamp};
use russh::keys::ssh_key::authorized_keys::Entry;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{Algorithm, PublicKey};
use serde::Deserialize;
use toml::Spanned;

use super::decide::policy_zone;
use crate::seckey::{CounterCheck, Required, Roots, verify_attestation};

use super::types::{
    Account, Admin, AdminKey, AdminName, EnrolmentCode, Grant, GrantName, GroupName, NameError,
    Policy, Reviewer, ReviewerName, Target, TargetName,
};
use super::window::WeeklyWindow;

/// One problem in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default, rename = "admin")]
    admins: Vec<Spanned<RawAdmin>>,
    #[serde(default, rename = "target")]
    targets: Vec<Spanned<RawTarget>>,
    #[serde(default, rename = "grant")]
    grants: Vec<Spanned<RawGrant>>,
    #[serde(default, rename = "reviewer")]
    reviewers: Vec<Spanned<RawReviewer>>,
    security_keys: Option<Spanned<RawSecurityKeys>>,
}

/// `[security_keys]`: what every admin key must show, unless its own options say otherwise.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSecurityKeys {
    #[serde(default)]
    verification: Verification,
    #[serde(default)]
    attestation: AttestationRule,
    #[serde(default)]
    attestation_roots: Vec<Spanned<PathBuf>>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Verification {
    /// The PIN on every login: with no password, it is the second factor.
    #[default]
    Required,
    /// A touch is enough (`check` warns).
    PresenceOnly,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum AttestationRule {
    #[default]
    Optional,
    /// Every key must carry a verified attestation.
    Required,
}

/// The `[security_keys]` settings, validated, with the attestation roots loaded.
struct KeySettings {
    verification: Verification,
    attestation: AttestationRule,
    roots: Option<Roots>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReviewer {
    name: Spanned<String>,
    full_name: Option<String>,
    enrolment: Option<Spanned<RawEnrolment>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnrolment {
    sha256: String,
    until: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    name: Spanned<String>,
    full_name: Option<String>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    keys: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    name: Spanned<String>,
    address: Spanned<String>,
    #[serde(default = "default_port")]
    port: Spanned<u16>,
    host_keys: Vec<Spanned<String>>,
    accounts: Vec<Spanned<String>>,
    static_key: Option<Spanned<PathBuf>>,
}

fn default_port() -> Spanned<u16> {
    Spanned::new(0..0, 22)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    name: Spanned<String>,
    #[serde(default)]
    admins: Vec<Spanned<String>>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    targets: Vec<Spanned<String>>,
    accounts: Vec<Spanned<String>>,
    valid_from: Option<Spanned<String>>,
    valid_until: Option<Spanned<String>>,
    #[serde(default)]
    windows: Vec<Spanned<String>>,
    max_session: Option<Spanned<String>>,
    #[serde(default = "yes")]
    record_input: bool,
    #[serde(default)]
    forward_ports: Vec<Spanned<u16>>,
    #[serde(default)]
    unrecorded_tunnels: bool,
    #[serde(default)]
    require_pty: bool,
}

fn yes() -> bool {
    true
}

/// Default maximum session length when a grant names none.
const DEFAULT_MAX_SESSION: Duration = Duration::from_secs(8 * 3600);

struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Ctx<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text
            .as_bytes()
            .iter()
            .take(end)
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn problem<T>(&self, at: &Spanned<T>, message: impl Into<String>) -> Problem {
        Problem {
            file: self.file.to_owned(),
            line: self.line(at.span().start),
            message: message.into(),
        }
    }

    fn err<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        let p = self.problem(at, message);
        self.problems.push(p);
    }

    fn warn<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        let p = self.problem(at, message);
        self.warnings.push(p);
    }

    fn name<N>(
        &mut self,
        s: &Spanned<String>,
        make: fn(&str) -> Result<N, NameError>,
    ) -> Option<N> {
        match make(s.get_ref()) {
            Ok(n) => Some(n),
            Err(e) => {
                self.err(s, e.to_string());
                None
            }
        }
    }
}

/// Reads and validates a policy file.
pub fn load_policy(path: &Path) -> Result<Policy, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_policy(path, &text)
}

/// Validates policy text; `file` is used in error messages.
pub fn parse_policy(file: &Path, text: &str) -> Result<Policy, PolicyError> {
    let mut cx = Ctx {
        file,
        text,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let raw: RawPolicy = match toml::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let line = e.span().map_or(1, |s| cx.line(s.start));
            return Err(PolicyError::Invalid(vec![Problem {
                file: file.to_owned(),
                line,
                message: e.message().trim().to_owned(),
            }]));
        }
    };
    let base = file.parent().unwrap_or(Path::new("."));
    let settings = key_settings(&mut cx, raw.security_keys.as_ref(), base);
    let admins: Vec<Admin> = raw
        .admins
        .iter()
        .filter_map(|a| admin(&mut cx, a, &settings, base))
        .collect();
    let targets: Vec<Target> = raw
        .targets
        .iter()
        .filter_map(|t| target(&mut cx, t, base))
        .collect();
    unique(
        &mut cx,
        raw.admins.iter().map(|a| &a.get_ref().name),
        "admin",
    );
    unique(
        &mut cx,
        raw.targets.iter().map(|t| &t.get_ref().name),
        "target",
    );
    unique(
        &mut cx,
        raw.grants.iter().map(|g| &g.get_ref().name),
        "grant",
    );
    unique(
        &mut cx,
        raw.reviewers.iter().map(|r| &r.get_ref().name),
        "reviewer",
    );
    let reviewers: Vec<Reviewer> = raw
        .reviewers
        .iter()
        .filter_map(|r| reviewer(&mut cx, r.get_ref()))
        .collect();
    let mut seen_keys = HashSet::new();
    for (a, raw_a) in admins.iter().zip(raw.admins.iter()) {
        for k in &a.keys {
            if !seen_keys.insert(k.key.key_data().clone()) {
                cx.err(
                    raw_a,
                    format!("key of {} is also listed for another admin", a.name),
                );
            }
        }
    }
    let grants: Vec<Grant> = raw
        .grants
        .iter()
        .filter_map(|g| grant(&mut cx, g, &admins, &targets))
        .collect();
    if cx.problems.is_empty() {
        Ok(Policy {
            admins,
            targets,
            grants,
            reviewers,
            warnings: cx.warnings,
        })
    } else {
        Err(PolicyError::Invalid(cx.problems))
    }
}

fn reviewer(cx: &mut Ctx<'_>, r: &RawReviewer) -> Option<Reviewer> {
    let name = cx.name(&r.name, ReviewerName::new);
    let enrolment = match &r.enrolment {
        None => None,
        Some(e) => {
            let raw = e.get_ref();
            let hash_ok = raw.sha256.len() == 64
                && raw
                    .sha256
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
            if !hash_ok {
                cx.err(e, "enrolment: sha256 must be 64 lowercase hex digits (from `stapsteen console enrol NAME --for-policy`)");
            }
            match parse_time(&raw.until) {
                Ok(until) if hash_ok => Some(EnrolmentCode {
                    sha256: raw.sha256.clone(),
                    until,
                }),
                Ok(_) => None,
                Err(m) => {
                    cx.err(e, format!("enrolment: until: {m}"));
                    None
                }
            }
        }
    };
    Some(Reviewer {
        name: name?,
        full_name: r.full_name.clone(),
        enrolment,
    })
}

fn unique<'a>(cx: &mut Ctx<'_>, names: impl Iterator<Item = &'a Spanned<String>>, kind: &str) {
    let mut seen = HashSet::new();
    for n in names {
        if !seen.insert(n.get_ref().clone()) {
            cx.err(n, format!("duplicate {kind} name {:?}", n.get_ref()));
        }
    }
}

fn key_settings(
    cx: &mut Ctx<'_>,
    raw: Option<&Spanned<RawSecurityKeys>>,
    base: &Path,
) -> KeySettings {
    let default = RawSecurityKeys::default();
    let r = raw.map_or(&default, Spanned::get_ref);
    if let Some(at) = raw
        && r.verification == Verification::PresenceOnly
    {
        cx.warn(
            at,
            "warning: security_keys.verification = \"presence-only\": admin keys log in without their PIN unless a key says verify-required; the PIN is the second factor",
        );
    }
    let roots = if r.attestation_roots.is_empty() {
        None
    } else {
        let paths: Vec<PathBuf> = r
            .attestation_roots
            .iter()
            .map(|p| base.join(p.get_ref()))
            .collect();
        let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        match Roots::load(&refs) {
            Ok(roots) => Some(roots),
            Err(e) => {
                if let Some(first) = r.attestation_roots.first() {
                    cx.err(first, e.to_string());
                }
                None
            }
        }
    };
    if let Some(at) = raw
        && r.attestation == AttestationRule::Required
        && r.attestation_roots.is_empty()
    {
        cx.err(
            at,
            "security_keys.attestation = \"required\" needs attestation_roots (the authenticator makers' root certificates, PEM)",
        );
    }
    KeySettings {
        verification: r.verification,
        attestation: r.attestation,
        roots,
    }
}

fn admin(
    cx: &mut Ctx<'_>,
    raw: &Spanned<RawAdmin>,
    settings: &KeySettings,
    base: &Path,
) -> Option<Admin> {
    let r = raw.get_ref();
    let name = cx.name(&r.name, AdminName::new);
    let groups: Vec<GroupName> = r
        .groups
        .iter()
        .filter_map(|g| cx.name(g, GroupName::new))
        .collect();
    if r.keys.is_empty() {
        cx.err(raw, "an admin needs at least one security key");
    }
    let keys: Vec<AdminKey> = r
        .keys
        .iter()
        .filter_map(|k| admin_key(cx, k, settings, base))
        .collect();
    let complete = groups.len() == r.groups.len() && keys.len() == r.keys.len() && !keys.is_empty();
    Some(Admin {
        name: name?,
        full_name: r.full_name.clone(),
        groups,
        keys,
    })
    .filter(|_| complete)
}

/// An `authorized_keys` line with its options: `application="..."`, the touch and PIN options
/// (`no-touch-required`, `verify-required`, `presence-only`), `counter-unchecked`, and the
/// enrolment attestation (`attestation="FILE"`, `challenge="FILE"`, relative to the policy).
fn admin_key(
    cx: &mut Ctx<'_>,
    line: &Spanned<String>,
    settings: &KeySettings,
    base: &Path,
) -> Option<AdminKey> {
    let entry = match Entry::from_str(line.get_ref().trim()) {
        Ok(e) => e,
        Err(e) => {
            cx.err(line, format!("not an authorized_keys line: {e}"));
            return None;
        }
    };
    let key: PublicKey = entry.public_key().clone();
    let key_app = match key.key_data() {
        KeyData::SkEd25519(k) => k.application().to_owned(),
        KeyData::SkEcdsaSha2NistP256(k) => k.application().to_owned(),
        _ => {
            cx.err(
                line,
                format!(
                    "key type {} is not a security key: only sk-ssh-ed25519@openssh.com and sk-ecdsa-sha2-nistp256@openssh.com are accepted",
                    key.algorithm()
                ),
            );
            return None;
        }
    };
    let mut application = "ssh:".to_owned();
    let (mut no_touch, mut verify, mut presence_only, mut unchecked) = (false, false, false, false);
    let (mut attestation, mut challenge) = (None, None);
    for opt in entry.config_opts().iter() {
        let value = |v: &str| v.trim_matches('"').to_owned();
        match opt.split_once('=') {
            Some(("application", v)) => application = value(v),
            Some(("attestation", v)) => attestation = Some(value(v)),
            Some(("challenge", v)) => challenge = Some(value(v)),
            None if opt == "no-touch-required" => no_touch = true,
            None if opt == "verify-required" => verify = true,
            None if opt == "presence-only" => presence_only = true,
            None if opt == "counter-unchecked" => unchecked = true,
            _ => {
                cx.err(
                    line,
                    format!(
                        "unsupported key option {opt:?} (supported: application=\"...\", no-touch-required, verify-required, presence-only, counter-unchecked, attestation=\"FILE\", challenge=\"FILE\")"
                    ),
                );
                return None;
            }
        }
    }
    if key_app != application {
        cx.err(
            line,
            format!("key was made for application {key_app:?}, policy expects {application:?}"),
        );
        return None;
    }
    if verify && presence_only {
        cx.err(
            line,
            "verify-required and presence-only contradict each other",
        );
        return None;
    }
    let fingerprint = key.fingerprint(russh::keys::HashAlg::Sha256);
    if no_touch {
        cx.warn(
            line,
            format!("warning: key {fingerprint} is no-touch-required: it logs in without a touch, so malware on the admin's computer can use it unseen"),
        );
    }
    if presence_only {
        cx.warn(
            line,
            format!("warning: key {fingerprint} is presence-only: it logs in without its PIN"),
        );
    }
    if unchecked {
        cx.warn(
            line,
            format!("warning: key {fingerprint} is counter-unchecked: a copy of it would not be noticed by its counter"),
        );
    }
    let required = Required {
        presence: !no_touch,
        verification: verify || (!presence_only && settings.verification == Verification::Required),
    };
    let attested = match (attestation, challenge) {
        (None, None) if settings.attestation == AttestationRule::Required => {
            cx.err(
                line,
                format!("key {fingerprint} has no attestation, and security_keys.attestation is \"required\" (enrol with ssh-keygen -O write-attestation=FILE -O challenge=FILE, then add attestation=\"FILE\",challenge=\"FILE\")"),
            );
            return None;
        }
        (None, None) => None,
        (Some(att), Some(chal)) => {
            let Some(roots) = &settings.roots else {
                cx.err(
                    line,
                    "an attestation needs security_keys.attestation_roots to be checked against",
                );
                return None;
            };
            let read =
                |name: &str| std::fs::read(base.join(name)).map_err(|e| format!("{name}: {e}"));
            let checked = read(&att).and_then(|blob| {
                read(&chal).and_then(|c| {
                    verify_attestation(&blob, &c, &key, roots).map_err(|e| e.to_string())
                })
            });
            match checked {
                Ok(a) => Some(a),
                Err(e) => {
                    cx.err(line, format!("attestation of key {fingerprint}: {e}"));
                    return None;
                }
            }
        }
        _ => {
            cx.err(line, "attestation=\"FILE\" and challenge=\"FILE\" go together: the challenge is needed to check the enrolment signature");
            return None;
        }
    };
    Some(AdminKey {
        comment: key.comment().to_string(),
        key,
        required,
        counter: if unchecked {
            CounterCheck::Unchecked
        } else {
            CounterCheck::Checked
        },
        attested,
    })
}

fn target(cx: &mut Ctx<'_>, raw: &Spanned<RawTarget>, base: &Path) -> Option<Target> {
    let r = raw.get_ref();
    let name = cx.name(&r.name, TargetName::new);
    let address = match r.address.get_ref().parse::<IpAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            cx.err(
                &r.address,
                format!(
                    "address {:?} is not an IPv4 or IPv6 address",
                    r.address.get_ref()
                ),
            );
            None
        }
    };
    if *r.port.get_ref() == 0 {
        cx.err(&r.port, "port must be 1-65535");
    }
    let mut host_keys = Vec::new();
    for k in &r.host_keys {
        match PublicKey::from_openssh(k.get_ref().trim()) {
            Ok(key) if key.algorithm() == Algorithm::Ed25519 || key.algorithm().is_ecdsa() => {
                host_keys.push(key)
            }
            Ok(key) => cx.err(
                k,
                format!(
                    "host key type {} is not accepted (ssh-ed25519 or ecdsa)",
                    key.algorithm()
                ),
            ),
            Err(e) => cx.err(k, format!("not a public key: {e}")),
        }
    }
    if r.host_keys.is_empty() {
        cx.err(raw, "a target needs at least one pinned host key");
    }
    if r.accounts.is_empty() {
        cx.err(raw, "a target needs at least one account");
    }
    let accounts: Vec<Account> = r
        .accounts
        .iter()
        .filter_map(|a| cx.name(a, Account::new))
        .collect();
    let complete = host_keys.len() == r.host_keys.len() && accounts.len() == r.accounts.len();
    Some(Target {
        name: name?,
        address: address?,
        port: *r.port.get_ref(),
        host_keys,
        accounts,
        // Read when used, with the same permission checks as the bastion's own keys.
        static_key: r.static_key.as_ref().map(|p| base.join(p.get_ref())),
    })
    .filter(|_| {
        complete && !r.host_keys.is_empty() && !r.accounts.is_empty() && *r.port.get_ref() != 0
    })
}

/// A policy time: "2026-12-01", "2026-12-01 08:00" or with seconds, in Europe/Amsterdam.
pub fn parse_time(text: &str) -> Result<Timestamp, String> {
    let text = text.trim();
    DateTime::from_str(text)
        .ok()
        .or_else(|| {
            jiff::civil::Date::from_str(text)
                .ok()
                .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
        })
        .and_then(|dt| dt.to_zoned(policy_zone()).ok())
        .map(|z| z.timestamp())
        .ok_or_else(|| {
            format!("invalid time {text:?}: use \"2026-12-01\" or \"2026-12-01 08:00\" (Europe/Amsterdam)")
        })
}

fn timestamp(cx: &mut Ctx<'_>, s: &Option<Spanned<String>>) -> Result<Option<Timestamp>, ()> {
    let Some(s) = s else { return Ok(None) };
    match parse_time(s.get_ref()) {
        Ok(t) => Ok(Some(t)),
        Err(e) => {
            cx.err(s, e);
            Err(())
        }
    }
}

fn grant(
    cx: &mut Ctx<'_>,
    raw: &Spanned<RawGrant>,
    admins: &[Admin],
    targets: &[Target],
) -> Option<Grant> {
    let r = raw.get_ref();
    let before = cx.problems.len();
    let name = cx.name(&r.name, GrantName::new);
    if r.admins.is_empty() && r.groups.is_empty() {
        cx.err(raw, "a grant needs admins or groups");
    }
    let mut grant_admins = Vec::new();
    for a in &r.admins {
        if let Some(n) = cx.name(a, AdminName::new) {
            if admins.iter().any(|x| x.name == n) {
                grant_admins.push(n);
            } else {
                cx.err(a, format!("unknown admin {n}"));
            }
        }
    }
    let mut groups = Vec::new();
    for g in &r.groups {
        if let Some(n) = cx.name(g, GroupName::new) {
            if admins.iter().any(|x| x.groups.contains(&n)) {
                groups.push(n);
            } else {
                cx.err(g, format!("no admin is in group {n}"));
            }
        }
    }
    if r.targets.is_empty() {
        cx.err(raw, "a grant needs at least one target");
    }
    if r.accounts.is_empty() {
        cx.err(
            raw,
            "a grant needs at least one account (the first is the default)",
        );
    }
    let accounts: Vec<Account> = r
        .accounts
        .iter()
        .filter_map(|a| cx.name(a, Account::new))
        .collect();
    let mut grant_targets = Vec::new();
    for t in &r.targets {
        let Some(n) = cx.name(t, TargetName::new) else {
            continue;
        };
        match targets.iter().find(|x| x.name == n) {
            Some(target) => {
                for acc in &accounts {
                    if !target.accounts.contains(acc) {
                        cx.err(t, format!("account {acc} is not an account of target {n}"));
                    }
                }
                grant_targets.push(n);
            }
            None => cx.err(t, format!("unknown target {n}")),
        }
    }
    let valid_from = timestamp(cx, &r.valid_from).ok()?;
    let valid_until = timestamp(cx, &r.valid_until).ok()?;
    if let (Some(f), Some(u), Some(at)) = (valid_from, valid_until, &r.valid_until)
        && u <= f
    {
        cx.err(at, "valid_until must be after valid_from");
    }
    let mut windows = Vec::new();
    for w in &r.windows {
        match WeeklyWindow::parse(w.get_ref()) {
            Ok(w) => windows.push(w),
            Err(e) => cx.err(w, e),
        }
    }
    let max_session = match &r.max_session {
        None => DEFAULT_MAX_SESSION,
        Some(s) => match s
            .get_ref()
            .parse::<SignedDuration>()
            .ok()
            .and_then(|d| Duration::try_from(d).ok())
        {
            Some(d) if !d.is_zero() => d,
            _ => {
                cx.err(
                    s,
                    format!(
                        "invalid duration {:?}: use e.g. \"2h\" or \"30m\"",
                        s.get_ref()
                    ),
                );
                return None;
            }
        },
    };
    let mut forward_ports = Vec::new();
    for p in &r.forward_ports {
        match *p.get_ref() {
            0 => cx.err(p, "port must be 1-65535"),
            n if forward_ports.contains(&n) => cx.err(p, format!("port {n} is listed twice")),
            n => forward_ports.push(n),
        }
    }
    if cx.problems.len() != before {
        return None;
    }
    Some(Grant {
        name: name?,
        admins: grant_admins,
        groups,
        targets: grant_targets,
        accounts,
        valid_from,
        valid_until,
        windows,
        max_session,
        record_input: r.record_input,
        forward_ports,
        unrecorded_tunnels: r.unrecorded_tunnels,
        require_pty: r.require_pty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Denial, TargetSpec};

    const EXAMPLE: &str = include_str!("../../policies/example-hospital.toml");

    fn at(s: &str) -> Timestamp {
        format!("{s}[Europe/Amsterdam]")
            .parse::<jiff::Zoned>()
            .unwrap()
            .timestamp()
    }

    fn spec(s: &str) -> TargetSpec {
        TargetSpec::parse(s).unwrap()
    }

    #[test]
    fn example_policy_is_valid() {
        let p = parse_policy(Path::new("example-hospital.toml"), EXAMPLE).unwrap();
        assert_eq!(p.admins.len(), 3);
        assert_eq!(p.targets.len(), 4);
        assert_eq!(p.grants.len(), 3);
    }

    #[test]
    fn grants_decide_by_group_account_window_and_validity() {
        let p = parse_policy(Path::new("x"), EXAMPLE).unwrap();
        // 2026-11-24 is a Tuesday.
        let tue = at("2026-11-24T10:00");
        let a = p.decide("s.bakker", &spec("twiin-gateway"), tue).unwrap();
        assert_eq!(a.account.as_str(), "beheer");
        assert_eq!(a.until, None);
        assert_eq!(
            p.decide("j.devries", &spec("twiin-gateway"), tue)
                .unwrap_err(),
            Denial::NoGrant("twiin-gateway".into())
        );
        assert_eq!(
            p.decide("j.devries", &spec("nope"), tue)
                .unwrap_err()
                .code(),
            "unknown_target"
        );
        assert_eq!(
            p.decide("j.devries", &spec("service@pacs01"), tue)
                .unwrap_err()
                .code(),
            "account_not_allowed"
        );

        let v = p.decide("vendor.m.jansen", &spec("pacs01"), tue).unwrap();
        assert_eq!(v.account.as_str(), "service");
        assert_eq!(v.until, Some(at("2026-11-24T12:00")));
        assert_eq!(v.max_session, std::time::Duration::from_secs(3 * 3600));
        let wed = at("2026-11-25T10:00");
        assert_eq!(
            p.decide("vendor.m.jansen", &spec("pacs01"), wed)
                .unwrap_err()
                .code(),
            "outside_window"
        );
        assert_eq!(
            p.decide("vendor.m.jansen", &spec("pacs01"), at("2027-01-05T10:00"))
                .unwrap_err()
                .code(),
            "expired"
        );
        assert_eq!(
            p.decide("vendor.m.jansen", &spec("pacs01"), at("2025-12-30T10:00"))
                .unwrap_err()
                .code(),
            "not_yet_valid"
        );

        let listed = p.reachable("s.bakker", tue);
        let names: Vec<String> = listed
            .iter()
            .map(|a| format!("{}@{}", a.account, a.target.name))
            .collect();
        assert_eq!(
            names,
            [
                "beheer@pacs01",
                "beheer@twiin-gateway",
                "beheer@dicom-router",
                "beheer@import01"
            ]
        );
    }

    #[test]
    fn two_grants_with_different_default_accounts_need_a_named_one() {
        let key = EXAMPLE
            .lines()
            .find(|l| l.contains("sk-ssh-ed25519"))
            .unwrap()
            .trim()
            .trim_end_matches(',');
        let host = EXAMPLE
            .lines()
            .find(|l| l.trim_start().starts_with("host_keys"))
            .unwrap();
        let text = format!(
            "[[admin]]\nname = \"a\"\nkeys = [{key}]\n[[target]]\nname = \"t\"\naddress = \"10.20.0.9\"\n{host}\naccounts = [\"beheer\", \"root\"]\n[[grant]]\nname = \"g1\"\nadmins = [\"a\"]\ntargets = [\"t\"]\naccounts = [\"beheer\"]\n[[grant]]\nname = \"g2\"\nadmins = [\"a\"]\ntargets = [\"t\"]\naccounts = [\"root\", \"beheer\"]\nvalid_until = \"2030-01-01\"\n"
        );
        let p = parse_policy(Path::new("x"), &text).unwrap();
        let now = at("2026-11-24T10:00");
        let e = p.decide("a", &spec("t"), now).unwrap_err();
        assert_eq!(e.code(), "ambiguous_account");
        assert!(
            e.to_string().ends_with("name one: beheer@t or root@t"),
            "{e}"
        );
        assert_eq!(
            p.decide("a", &spec("root@t"), now)
                .unwrap()
                .account
                .as_str(),
            "root"
        );
        let b = p.decide("a", &spec("beheer@t"), now).unwrap();
        assert_eq!(b.grant.as_str(), "g1", "the grant that stays open longest");
    }

    #[test]
    fn require_pty_refuses_only_a_shell_without_one() {
        let key = EXAMPLE
            .lines()
            .find(|l| l.contains("sk-ssh-ed25519"))
            .unwrap()
            .trim()
            .trim_end_matches(',');
        let host = EXAMPLE
            .lines()
            .find(|l| l.trim_start().starts_with("host_keys"))
            .unwrap();
        let text = |extra: &str| {
            format!(
                "[[admin]]\nname = \"a\"\nkeys = [{key}]\n[[target]]\nname = \"t\"\naddress = \"10.20.0.9\"\n{host}\naccounts = [\"beheer\"]\n[[grant]]\nname = \"g\"\nadmins = [\"a\"]\ntargets = [\"t\"]\naccounts = [\"beheer\"]\n{extra}"
            )
        };
        let now = at("2026-11-24T10:00");
        let p = parse_policy(Path::new("x"), &text("require_pty = true\n")).unwrap();
        let a = p.decide("a", &spec("t"), now).unwrap();
        let e = a.check_terminal(true, false).unwrap_err();
        assert_eq!(e.code(), "pty_required");
        assert!(e.to_string().contains("use ssh -t"), "{e}");
        assert!(a.check_terminal(true, true).is_ok());
        assert!(
            a.check_terminal(false, false).is_ok(),
            "a command stays allowed"
        );
        let p = parse_policy(Path::new("x"), &text("")).unwrap();
        let a = p.decide("a", &spec("t"), now).unwrap();
        assert!(a.check_terminal(true, false).is_ok(), "off unless set");
        let Err(PolicyError::Invalid(problems)) =
            parse_policy(Path::new("p.toml"), &text("require_pty = \"yes\"\n"))
        else {
            panic!("must fail")
        };
        assert!(
            problems[0].to_string().starts_with("p.toml:"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn forwards_follow_ports_windows_and_the_tunnel_rule() {
        let p = parse_policy(Path::new("example-hospital.toml"), EXAMPLE).unwrap();
        let at = |s: &str| parse_time(s).unwrap();
        let fwd = |host: &str, port: u16, t: &str| {
            p.decide_forward("vendor.m.jansen", host, port, at(t))
                .map(|a| a.grant.to_string())
                .map_err(|d| d.code())
        };
        assert_eq!(
            fwd("pacs01", 443, "2026-11-24 10:00"),
            Ok("pacs-leverancier".into())
        );
        assert_eq!(
            fwd("10.20.0.11", 443, "2026-11-24 10:00"),
            Ok("pacs-leverancier".into())
        );
        assert_eq!(
            fwd("pacs01", 104, "2026-11-24 10:00"),
            Err("port_not_allowed")
        );
        assert_eq!(
            fwd("pacs01", 22, "2026-11-24 10:00"),
            Err("unrecorded_tunnel")
        );
        assert_eq!(
            fwd("pacs01", 443, "2026-11-24 13:00"),
            Err("outside_window")
        );
        assert_eq!(fwd("import01", 443, "2026-11-24 10:00"), Err("no_grant"));
        assert_eq!(
            fwd("10.20.0.99", 443, "2026-11-24 10:00"),
            Err("unknown_target")
        );
    }

    #[test]
    fn reports_every_problem_with_its_line() {
        let text = r#"
[[admin]]
name = "Alice"
keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG52D/nkw5+01RweRRSrQ3j0OIxGU9SUIZwL+wkcM0WE plain"]

[[target]]
name = "pacs01"
address = "pacs01.example"
host_keys = []
accounts = ["beheer"]

[[grant]]
name = "g"
admins = ["bob"]
targets = ["pacs01", "ghost"]
accounts = ["beheer"]
windows = ["Tue 12:00-09:00"]
valid_until = "yesterday"
"#;
        let Err(PolicyError::Invalid(problems)) = parse_policy(Path::new("p.toml"), text) else {
            panic!("must fail")
        };
        let lines: Vec<(usize, &str)> = problems
            .iter()
            .map(|p| (p.line, p.message.as_str()))
            .collect();
        let has = |line: usize, needle: &str| {
            assert!(
                lines.iter().any(|(l, m)| *l == line && m.contains(needle)),
                "no '{needle}' at line {line}: {lines:#?}"
            )
        };
        has(3, "invalid admin name");
        has(4, "not a security key");
        has(8, "not an IPv4 or IPv6 address");
        has(6, "at least one pinned host key");
        has(14, "unknown admin bob");
        has(15, "unknown target ghost");
        has(18, "invalid time");
        assert!(problems[0].to_string().starts_with("p.toml:"));
    }

    #[test]
    fn unknown_fields_and_options_are_errors() {
        let e = parse_policy(
            Path::new("p.toml"),
            "[[admin]]\nname = \"a\"\nkeys = []\nshell = \"/bin/sh\"\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("p.toml:4:") && e.to_string().contains("unknown field"),
            "{e}"
        );
        let key = EXAMPLE
            .lines()
            .find(|l| l.contains("sk-ssh-ed25519"))
            .unwrap()
            .trim()
            .trim_end_matches(',');
        let with_opt = format!(
            "[[admin]]\nname = \"a\"\nkeys = ['shell-access {}']\n",
            key.trim_matches('"')
        );
        let e = parse_policy(Path::new("p.toml"), &with_opt).unwrap_err();
        assert!(e.to_string().contains("unsupported key option"), "{e}");
        let other_app = format!(
            "[[admin]]\nname = \"a\"\nkeys = ['application=\"ssh:other\" {}']\n",
            key.trim_matches('"')
        );
        let e = parse_policy(Path::new("p.toml"), &other_app).unwrap_err();
        assert!(
            e.to_string().contains("made for application \"ssh:\""),
            "{e}"
        );
    }

    fn one_key(options: &str, settings: &str) -> Result<Policy, PolicyError> {
        let key = EXAMPLE
            .lines()
            .find(|l| l.contains("sk-ssh-ed25519"))
            .unwrap()
            .trim()
            .trim_end_matches(',')
            .trim_matches('"')
            .to_owned();
        parse_policy(
            Path::new("p.toml"),
            &format!("{settings}\n[[admin]]\nname = \"a\"\nkeys = ['{options} {key}']\n"),
        )
    }

    #[test]
    fn touch_and_pin_options() {
        use crate::seckey::{CounterCheck, Required};
        let required = |p: &Policy| p.admins[0].keys[0].required;
        let both = Required {
            presence: true,
            verification: true,
        };
        // The default: touch and PIN, no warning.
        let p = one_key("", "").unwrap();
        assert_eq!(required(&p), both);
        assert!(p.warnings.is_empty());
        assert_eq!(p.admins[0].keys[0].counter, CounterCheck::Checked);
        assert_eq!(
            one_key("verify-required", "")
                .map(|p| required(&p))
                .unwrap(),
            both
        );
        // Lowering either is allowed, and warned about with file and line.
        let p = one_key("no-touch-required", "").unwrap();
        assert_eq!(
            required(&p),
            Required {
                presence: false,
                verification: true
            }
        );
        assert!(p.warnings[0].to_string().starts_with("p.toml:4: warning:"));
        assert!(p.warnings[0].message.contains("no-touch-required"));
        let p = one_key("presence-only", "").unwrap();
        assert!(!required(&p).verification && required(&p).presence);
        assert!(p.warnings[0].message.contains("presence-only"));
        // Policy-wide presence-only, and a key that asks for its PIN all the same.
        let wide = "[security_keys]\nverification = \"presence-only\"";
        let p = one_key("", wide).unwrap();
        assert!(!required(&p).verification);
        assert!(p.warnings[0].to_string().starts_with("p.toml:1: warning:"));
        assert_eq!(
            one_key("verify-required", wide)
                .map(|p| required(&p))
                .unwrap(),
            both
        );
        let e = one_key("verify-required,presence-only", "").unwrap_err();
        assert!(e.to_string().contains("contradict"), "{e}");
        let p = one_key("counter-unchecked", "").unwrap();
        assert_eq!(p.admins[0].keys[0].counter, CounterCheck::Unchecked);
        let e = one_key("", "[security_keys]\nverification = \"none\"").unwrap_err();
        assert!(e.to_string().starts_with("p.toml:2:"), "{e}");
    }

    #[test]
    fn attestation_settings() {
        let e = one_key("", "[security_keys]\nattestation = \"required\"").unwrap_err();
        assert!(e.to_string().contains("needs attestation_roots"), "{e}");
        let e = one_key("attestation=\"a.att\"", "").unwrap_err();
        assert!(e.to_string().contains("go together"), "{e}");
        let e = one_key("attestation=\"a.att\",challenge=\"a.chal\"", "").unwrap_err();
        assert!(e.to_string().contains("attestation_roots"), "{e}");
        let e = one_key("", "[security_keys]\nattestation_roots = [\"missing.pem\"]").unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
    }
}
