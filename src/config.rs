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
    #[serde(default)]
    pub audit: AuditSink,
    #[serde(default)]
    pub limits: Limits,
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
    /// Time allowed for connecting and logging in to a target.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(15 * 60),
            login_grace: Duration::from_secs(30),
            auth_rejection_time: Duration::from_secs(1),
            max_auth_attempts: 6,
            max_unauthenticated: 32,
            connect_timeout: Duration::from_secs(10),
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
            line: e.span().map_or(1, |s| {
                text.as_bytes()
                    .iter()
                    .take(s.start)
                    .filter(|b| **b == b'\n')
                    .count()
                    + 1
            }),
            message: e.message().trim().to_owned(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut cfg.policy,
            &mut cfg.state_dir,
            &mut cfg.host_key,
            &mut cfg.ca_key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(cfg)
    }

    pub fn recordings_dir(&self) -> PathBuf {
        self.state_dir.join("recordings")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_defaults_and_relative_paths() {
        let c = Config::parse(
            Path::new("/etc/stapsteen/stapsteen.toml"),
            "listen = [\"127.0.0.1:2222\"]\npolicy = \"policy.toml\"\nstate_dir = \"/var/lib/stapsteen\"\nhost_key = \"host_key\"\nca_key = \"ca_key\"\n[limits]\nidle_timeout = \"2m\"\n",
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
}
