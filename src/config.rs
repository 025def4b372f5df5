//! The daemon's configuration file (TOML). Relative paths are relative to the file's directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::SignedDuration;
use serde::{Deserialize, Deserializer};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Where audit events go.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuditSink {
    /// journald when its socket exists, else JSON lines on stderr.
    #[default]
    Auto,
    Journald,
    Stderr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Addresses the SSH front door listens on.
    pub listen: Vec<SocketAddr>,
    pub policy: PathBuf,
    /// Recordings and other state live here.
    pub state_dir: PathBuf,
    /// Host key; the systemd credential `host_key` wins when present.
    pub host_key: PathBuf,
    /// CA key that signs the short-lived certificates shown to targets; credential `ca_key`.
    pub ca_key: PathBuf,
    /// Ed25519 key that signs the audit chain; credential `signing_key`.
    pub signing_key: PathBuf,
    #[serde(default)]
    pub audit: AuditSink,
    #[serde(default)]
    pub recording: RecordingConfig,
    #[serde(default)]
    pub limits: Limits,
    /// The off-site copy of the audit chain and recordings; none when absent.
    #[serde(default)]
    pub offsite: Option<OffsiteConfig>,
    /// Kernel enforcement of the grants. Required, so that running without it is a decision.
    pub firewall: FirewallConfig,
    /// The HTTPS review console; none when absent.
    #[serde(default)]
    pub console: Option<ConsoleConfig>,
}

/// The review console for the security team.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    pub listen: Vec<SocketAddr>,
    /// The DNS name reviewers use in the URL. WebAuthn credentials are bound to it, and browsers
    /// refuse WebAuthn on bare IP addresses.
    pub host: String,
    /// PEM certificate chain and key; when both are absent a self-signed certificate is made
    /// once and kept in the state directory.
    pub cert: Option<PathBuf>,
    /// The key's systemd credential `console_key` wins when present.
    pub key: Option<PathBuf>,
    /// A console login ends after this long without a request.
    #[serde(default = "default_console_idle", deserialize_with = "duration")]
    pub idle_timeout: Duration,
}

fn default_console_idle() -> Duration {
    Duration::from_secs(15 * 60)
}

/// What a storage failure (disk full, write error) on a recording or the audit chain does.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// End live sessions and refuse new ones until storage works again.
    #[default]
    EndSessions,
    /// Send an alert and let sessions go on unrecorded: an explicit, audited choice.
    AlertAndContinue,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::EndSessions => "end-sessions",
            OnFailure::AlertAndContinue => "alert-and-continue",
        }
    }
}

/// An S3-compatible object store (Garage, MinIO, a cloud bucket).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffsiteConfig {
    /// `https://...`; `http://` only for a store on the appliance's own host or a test.
    pub endpoint: String,
    pub bucket: String,
    #[serde(default = "default_region")]
    pub region: String,
    /// Objects go under this prefix, e.g. the appliance's name.
    pub prefix: String,
    pub access_key_id: String,
    /// File holding the secret access key; the systemd credential `offsite_secret` wins.
    pub secret_access_key_file: PathBuf,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// How recordings are sealed into the audit chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    pub on_failure: OnFailure,
    /// A checkpoint is written at least this often while a recording grows...
    #[serde(deserialize_with = "duration")]
    pub checkpoint_interval: Duration,
    /// ...and after at most this many bytes.
    pub checkpoint_bytes: u64,
    /// Recordings are deleted this many days after their session ended (a signed `pruned`
    /// entry says so); unset: kept for ever.
    pub retention_days: Option<std::num::NonZeroU32>,
    /// The audit chain's live segment is closed at this size and a new one begun.
    pub chain_segment_bytes: std::num::NonZeroU64,
    /// A channel without a terminal (a command, `ssh -T`, scp) is recorded up to this many bytes
    /// per direction; past it only counts and SHA-256 are kept (binary and bulk streams).
    pub max_channel_bytes: u64,
    /// A session whose recording grows past this many bytes is ended (`RECORDING_QUOTA`).
    pub max_bytes_per_session: u64,
    /// An admin whose recordings of the day (Europe/Amsterdam) reach this many bytes has the
    /// recording session ended and new ones refused until midnight (`RECORDING_QUOTA`).
    pub max_bytes_per_admin_per_day: u64,
    /// Recorded sessions are refused, and ended, when the recordings directory's file system has
    /// less free space than this: the audit chain and the journal keep theirs.
    pub min_free_bytes: u64,
    /// An admin may start at most this many sessions a minute (as many at once): each start
    /// and end is an entry in the audit chain, whose space every admin shares.
    pub max_session_starts_per_minute: std::num::NonZeroU32,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            on_failure: OnFailure::EndSessions,
            checkpoint_interval: Duration::from_secs(10),
            checkpoint_bytes: 4 << 20,
            retention_days: None,
            chain_segment_bytes: std::num::NonZeroU64::new(crate::audit::DEFAULT_SEGMENT_BYTES)
                .unwrap_or(std::num::NonZeroU64::MIN),
            max_channel_bytes: 64 << 20,
            max_bytes_per_session: 1 << 30,
            max_bytes_per_admin_per_day: 8 << 30,
            // The chain and the journal need little (a checkpoint entry is under 1 KiB), and
            // journald keeps its own 15 % free on top.
            min_free_bytes: 256 << 20,
            max_session_starts_per_minute: std::num::NonZeroU32::new(60)
                .unwrap_or(std::num::NonZeroU32::MIN),
        }
    }
}

/// The networks the nftables ruleset is built around.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallConfig {
    /// `false` only where another layer isolates the bastion (the loopback demo).
    pub enabled: bool,
    /// Networks from which admins may reach the SSH front door.
    #[serde(default)]
    pub admin_networks: Vec<ipnet::IpNet>,
    /// Networks reachable only along grants; every target must lie in one of them.
    #[serde(default)]
    pub management_networks: Vec<ipnet::IpNet>,
    /// Networks from which reviewers may reach the review console.
    #[serde(default)]
    pub reviewer_networks: Vec<ipnet::IpNet>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// A session with no input from the admin for this long is ended.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// A connection that has not authenticated within this time is closed.
    #[serde(deserialize_with = "duration")]
    pub login_grace: Duration,
    /// Every failed authentication answer takes at least this long.
    #[serde(deserialize_with = "duration")]
    pub auth_rejection_time: Duration,
    pub max_auth_attempts: usize,
    /// Connections that have not authenticated yet; more are closed at once.
    pub max_unauthenticated: usize,
    /// Of those, from one source (an IPv4 address or an IPv6 /64), so one source cannot take
    /// them all.
    pub max_unauthenticated_per_source: usize,
    /// Refusals anyone can cause (CONN_LIMIT, AUTH_DENIED, LOGIN_TIMEOUT, console refusals)
    /// logged one by one per code and source in each `audit_window`; the rest are summed up.
    pub audit_events_per_source: u64,
    #[serde(deserialize_with = "duration")]
    pub audit_window: Duration,
    /// Time allowed for connecting and logging in to a target.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Authenticated connections one admin may hold at once (`ADMIN_LIMIT`).
    pub max_connections_per_admin: usize,
    /// Sessions (shell, command, file transfer) one admin may run at once (`ADMIN_LIMIT`).
    pub max_sessions_per_admin: usize,
    /// Port forwards one admin may hold at once (`ADMIN_LIMIT`).
    pub max_forwards_per_admin: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(15 * 60),
            login_grace: Duration::from_secs(30),
            auth_rejection_time: Duration::from_secs(1),
            max_auth_attempts: 6,
            max_unauthenticated: 32,
            max_unauthenticated_per_source: 8,
            audit_events_per_source: 20,
            audit_window: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            // Far above one person's terminals (the boot test opens 11 at once), far below what
            // the unit's descriptor and memory ceilings allow.
            max_connections_per_admin: 32,
            max_sessions_per_admin: 64,
            max_forwards_per_admin: 64,
        }
    }
}

/// Accepts "15m", "90s", "1h 30m" or ISO 8601 ("PT15M").
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<SignedDuration>()
        .ok()
        .and_then(|d| Duration::try_from(d).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            serde::de::Error::custom(format!("invalid duration {s:?}: use e.g. \"15m\""))
        })
}

fn line_at(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn line_of(text: &str, needle: &str) -> usize {
    text.find(needle).map_or(1, |at| line_at(text, at))
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            line: e.span().map_or(1, |s| line_at(text, s.start)),
            message: e.message().trim().to_owned(),
        })?;
        let limits = &cfg.limits;
        if limits.max_unauthenticated == 0 || limits.max_unauthenticated_per_source == 0 {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                line: line_of(text, "[limits]"),
                message: "limits: max_unauthenticated and max_unauthenticated_per_source must be at least 1 (0 lets nobody log in)".into(),
            });
        }
        let fw = &cfg.firewall;
        if fw.enabled && (fw.admin_networks.is_empty() || fw.management_networks.is_empty()) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                line: line_of(text, "[firewall]"),
                message: "firewall: admin_networks and management_networks must not be empty"
                    .into(),
            });
        }
        if let Some(c) = &cfg.console {
            let mut problems = Vec::new();
            if fw.enabled && fw.reviewer_networks.is_empty() {
                problems
                    .push("firewall: reviewer_networks must not be empty when [console] is set");
            }
            if c.cert.is_some() != c.key.is_some() {
                problems.push("console: set both cert and key, or neither for a self-signed one");
            }
            if c.listen.is_empty() {
                problems.push("console: listen must not be empty");
            }
            if c.host.parse::<std::net::IpAddr>().is_ok() || c.host.is_empty() {
                problems.push(
                    "console: host must be a DNS name; browsers refuse WebAuthn on IP addresses",
                );
            }
            if !problems.is_empty() {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    line: line_of(text, "[console]"),
                    message: problems.join("; "),
                });
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut cfg.policy,
            &mut cfg.state_dir,
            &mut cfg.host_key,
            &mut cfg.ca_key,
            &mut cfg.signing_key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(o) = &mut cfg.offsite
            && o.secret_access_key_file.is_relative()
        {
            o.secret_access_key_file = base.join(&o.secret_access_key_file);
        }
        if let Some(c) = &mut cfg.console {
            for p in [&mut c.cert, &mut c.key].into_iter().flatten() {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        Ok(cfg)
    }

    pub fn recordings_dir(&self) -> PathBuf {
        self.state_dir.join("recordings")
    }

    pub fn chain_dir(&self) -> PathBuf {
        self.state_dir.join("audit")
    }

    /// The console's index (derived from the recordings and the chain; may be deleted).
    pub fn index_path(&self) -> PathBuf {
        self.state_dir.join("index").join("console.sqlite3")
    }

    /// Reviewer credentials, enrolment codes and the generated console certificate.
    pub fn console_dir(&self) -> PathBuf {
        self.state_dir.join("console")
    }

    /// The last signature counter of each admin key.
    pub fn counters_path(&self) -> PathBuf {
        self.state_dir.join("key-counters.json")
    }

    pub fn chain_path(&self) -> PathBuf {
        self.chain_dir().join("chain.jsonl")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults_and_relative_paths() {
        let c = Config::parse(
            Path::new("/etc/stapsteen/stapsteen.toml"),
            "listen = [\"127.0.0.1:2222\"]\npolicy = \"policy.toml\"\nstate_dir = \"/var/lib/stapsteen\"\nhost_key = \"host_key\"\nca_key = \"ca_key\"\nsigning_key = \"signing_key\"\n[limits]\nidle_timeout = \"2m\"\n[firewall]\nenabled = false\n",
        )
        .unwrap();
        assert_eq!(c.policy, Path::new("/etc/stapsteen/policy.toml"));
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(120));
        assert_eq!(c.limits.login_grace, Duration::from_secs(30));
    }

    #[test]
    fn unknown_field_has_line() {
        let e = Config::parse(Path::new("c.toml"), "listen = []\nbogus = 1\n").unwrap_err();
        assert!(e.to_string().starts_with("c.toml:2:"), "{e}");
    }

    #[test]
    fn enabled_firewall_needs_networks() {
        let text = "listen = []\npolicy = \"p\"\nstate_dir = \"s\"\nhost_key = \"h\"\nca_key = \"c\"\nsigning_key = \"s\"\n\n[firewall]\nenabled = true\nadmin_networks = [\"10.1.0.0/24\"]\n";
        let e = Config::parse(Path::new("c.toml"), text).unwrap_err();
        assert!(e.to_string().starts_with("c.toml:8: firewall:"), "{e}");
    }

    #[test]
    fn unauthenticated_limits_must_let_someone_in() {
        let text = "listen = []\npolicy = \"p\"\nstate_dir = \"s\"\nhost_key = \"h\"\nca_key = \"c\"\nsigning_key = \"s\"\n[limits]\nmax_unauthenticated_per_source = 0\n[firewall]\nenabled = false\n";
        let e = Config::parse(Path::new("c.toml"), text).unwrap_err();
        assert!(e.to_string().starts_with("c.toml:7: limits:"), "{e}");
        let ok = text.replace("= 0", "= 2");
        let c = Config::parse(Path::new("c.toml"), &ok).unwrap();
        assert_eq!(c.limits.max_unauthenticated_per_source, 2);
        assert_eq!(c.limits.max_unauthenticated, 32);
    }
}
