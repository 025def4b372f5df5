//! Audit events: stable codes and fields, written through `tracing` to journald or as JSON lines
//! on stderr; and the signed audit chain that seals sessions and recordings.
//!
//! Invariant: every event carries the same fields (empty when not known), so a SIEM can rely on
//! them; codes never change meaning. Secrets never appear here.

mod chain;
pub mod flood;
mod human;
mod note;
mod verify;

#[cfg(test)]
pub use chain::test_chain;
pub use chain::{
    Ack, AuditChain, ChainError, DEFAULT_SEGMENT_BYTES, Line, first_line, read_lines,
    read_segments, segment_path, segments, seq_of,
};
pub use human::init_human;
pub use note::{
    Draft, Entry, Kind, NoteError, NoteSigner, NoteVerifier, Seal, note_hash, parse as parse_entry,
};
pub use verify::{ChainReport, Problem, Start, verify_chain, verify_from, verify_segments};

use std::fmt;
use std::net::SocketAddr;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::AuditSink;

/// The `tracing` target of audit events.
pub const TARGET: &str = "stapsteen::audit";

/// Stable event codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    AuthOk,
    AuthDenied,
    ConnLimit,
    LoginTimeout,
    TargetDenied,
    TargetFailed,
    HostKeyMismatch,
    SessionStart,
    SessionEnd,
    SessionRevoked,
    SessionCut,
    AdminLimit,
    RecordingQuota,
    RecordingFailed,
    RequestDenied,
    RequestFlood,
    PolicyLoaded,
    PolicyReloadFailed,
    ServiceStart,
    ServiceFailed,
    FirewallApplied,
    FirewallFailed,
    FirewallDrift,
    ForwardDenied,
    ForwardStart,
    ForwardEnd,
    Checkpoint,
    StorageFailed,
    OffsiteFailed,
    OffsiteResumed,
    OffsiteOverwriteRefused,
    ConsoleStart,
    ConsoleEnrolCode,
    ConsoleEnrolled,
    ConsoleEnrolFailed,
    ConsoleLogin,
    ConsoleLoginFailed,
    ConsoleLogout,
    ConsoleExpired,
    ConsoleView,
    ConsoleDownload,
    ConsoleKill,
    ConsoleRefused,
    KeyCounterRegression,
    KeyCounterZero,
    PolicyWarning,
    ConnLimitSuppressed,
    AuthDeniedSuppressed,
    LoginTimeoutSuppressed,
    ConsoleRefusedSuppressed,
    ConsoleLoginFailedSuppressed,
    RequestDeniedSuppressed,
    SftpOpen,
    SftpClose,
    SftpRemove,
    SftpRename,
    SftpMkdir,
    SftpRmdir,
    SftpSetstat,
    SftpSymlink,
    SftpLink,
    SftpUnparsed,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::AuthOk => "AUTH_OK",
            Code::AuthDenied => "AUTH_DENIED",
            Code::ConnLimit => "CONN_LIMIT",
            Code::LoginTimeout => "LOGIN_TIMEOUT",
            Code::TargetDenied => "TARGET_DENIED",
            Code::TargetFailed => "TARGET_FAILED",
            Code::HostKeyMismatch => "HOSTKEY_MISMATCH",
            Code::SessionStart => "SESSION_START",
            Code::SessionEnd => "SESSION_END",
            Code::SessionRevoked => "SESSION_REVOKED",
            Code::SessionCut => "SESSION_CUT",
            Code::AdminLimit => "ADMIN_LIMIT",
            Code::RecordingQuota => "RECORDING_QUOTA",
            Code::RecordingFailed => "RECORDING_FAILED",
            Code::RequestDenied => "REQUEST_DENIED",
            Code::RequestFlood => "REQUEST_FLOOD",
            Code::PolicyLoaded => "POLICY_LOADED",
            Code::PolicyReloadFailed => "POLICY_RELOAD_FAILED",
            Code::ServiceStart => "SERVICE_START",
            Code::ServiceFailed => "SERVICE_FAILED",
            Code::FirewallApplied => "FIREWALL_APPLIED",
            Code::FirewallFailed => "FIREWALL_FAILED",
            Code::FirewallDrift => "FIREWALL_DRIFT",
            Code::ForwardDenied => "FORWARD_DENIED",
            Code::ForwardStart => "FORWARD_START",
            Code::ForwardEnd => "FORWARD_END",
            Code::Checkpoint => "CHECKPOINT",
            Code::StorageFailed => "STORAGE_FAILED",
            Code::OffsiteFailed => "OFFSITE_FAILED",
            Code::OffsiteResumed => "OFFSITE_RESUMED",
            Code::OffsiteOverwriteRefused => "OFFSITE_OVERWRITE_REFUSED",
            Code::ConsoleStart => "CONSOLE_START",
            Code::ConsoleEnrolCode => "CONSOLE_ENROL_CODE",
            Code::ConsoleEnrolled => "CONSOLE_ENROLLED",
            Code::ConsoleEnrolFailed => "CONSOLE_ENROL_FAILED",
            Code::ConsoleLogin => "CONSOLE_LOGIN",
            Code::ConsoleLoginFailed => "CONSOLE_LOGIN_FAILED",
            Code::ConsoleLogout => "CONSOLE_LOGOUT",
            Code::ConsoleExpired => "CONSOLE_EXPIRED",
            Code::ConsoleView => "CONSOLE_VIEW",
            Code::ConsoleDownload => "CONSOLE_DOWNLOAD",
            Code::ConsoleKill => "CONSOLE_KILL",
            Code::ConsoleRefused => "CONSOLE_REFUSED",
            Code::KeyCounterRegression => "KEY_COUNTER_REGRESSION",
            Code::KeyCounterZero => "KEY_COUNTER_ZERO",
            Code::PolicyWarning => "POLICY_WARNING",
            Code::SftpOpen => "SFTP_OPEN",
            Code::SftpClose => "SFTP_CLOSE",
            Code::SftpRemove => "SFTP_REMOVE",
            Code::SftpRename => "SFTP_RENAME",
            Code::SftpMkdir => "SFTP_MKDIR",
            Code::SftpRmdir => "SFTP_RMDIR",
            Code::SftpSetstat => "SFTP_SETSTAT",
            Code::SftpSymlink => "SFTP_SYMLINK",
            Code::SftpLink => "SFTP_LINK",
            Code::SftpUnparsed => "SFTP_UNPARSED",
            Code::ConnLimitSuppressed => "CONN_LIMIT_SUPPRESSED",
            Code::AuthDeniedSuppressed => "AUTH_DENIED_SUPPRESSED",
            Code::LoginTimeoutSuppressed => "LOGIN_TIMEOUT_SUPPRESSED",
            Code::ConsoleRefusedSuppressed => "CONSOLE_REFUSED_SUPPRESSED",
            Code::ConsoleLoginFailedSuppressed => "CONSOLE_LOGIN_FAILED_SUPPRESSED",
            Code::RequestDeniedSuppressed => "REQUEST_DENIED_SUPPRESSED",
        }
    }

    /// The summary code of a code anyone on the network can cause in bulk (see [`flood`]).
    pub fn suppressed(self) -> Option<Code> {
        match self {
            Code::ConnLimit => Some(Code::ConnLimitSuppressed),
            Code::AuthDenied => Some(Code::AuthDeniedSuppressed),
            Code::LoginTimeout => Some(Code::LoginTimeoutSuppressed),
            Code::ConsoleRefused => Some(Code::ConsoleRefusedSuppressed),
            Code::ConsoleLoginFailed => Some(Code::ConsoleLoginFailedSuppressed),
            Code::RequestDenied => Some(Code::RequestDeniedSuppressed),
            _ => None,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit event. Build with [`Event::new`] and the setters, then [`Event::emit`].
#[derive(Debug, Clone)]
pub struct Event {
    code: Code,
    admin: String,
    source: String,
    fingerprint: String,
    target: String,
    account: String,
    session: String,
    reason: String,
    detail: serde_json::Map<String, serde_json::Value>,
    /// Only someone holding an enrolled key can cause it, once per signature: never limited.
    never_limited: bool,
}

impl Event {
    pub fn new(code: Code) -> Self {
        Self {
            code,
            admin: String::new(),
            source: String::new(),
            fingerprint: String::new(),
            target: String::new(),
            account: String::new(),
            session: String::new(),
            reason: String::new(),
            detail: serde_json::Map::new(),
            never_limited: false,
        }
    }
    pub fn admin(mut self, v: impl fmt::Display) -> Self {
        self.admin = v.to_string();
        self
    }
    pub fn source(mut self, v: Option<SocketAddr>) -> Self {
        self.source = v.map(|a| a.to_string()).unwrap_or_default();
        self
    }
    pub fn fingerprint(mut self, v: impl fmt::Display) -> Self {
        self.fingerprint = v.to_string();
        self
    }
    pub fn target(mut self, v: impl fmt::Display) -> Self {
        self.target = v.to_string();
        self
    }
    pub fn account(mut self, v: impl fmt::Display) -> Self {
        self.account = v.to_string();
        self
    }
    pub fn session(mut self, v: impl fmt::Display) -> Self {
        self.session = v.to_string();
        self
    }
    pub fn reason(mut self, v: impl fmt::Display) -> Self {
        self.reason = v.to_string();
        self
    }
    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.detail.insert(key.to_owned(), value.into());
        self
    }

    /// Marks an event that only someone holding an enrolled key can cause, at most once per
    /// signature (a refusal of a verified signature, a connection closed for a request flood):
    /// it is never limited as a flood ([`flood`]), so refusals the same source causes in bulk
    /// cannot push it into a summary without admin or key.
    pub fn never_limited(mut self) -> Self {
        self.never_limited = true;
        self
    }

    /// The same event under another code (e.g. SESSION_END carrying SESSION_START's fields).
    pub fn with_code(mut self, code: Code) -> Self {
        self.code = code;
        self
    }

    pub fn emit_as(self, code: Code) {
        self.with_code(code).emit();
    }

    /// Writes the event, unless it is one too many of a flood from its source (see [`flood`]).
    pub fn emit(self) {
        if !flood::admit(&self) {
            return;
        }
        let detail = serde_json::Value::Object(self.detail).to_string();
        tracing::info!(
            target: TARGET,
            code = self.code.as_str(),
            admin = %self.admin,
            source = %self.source,
            fingerprint = %self.fingerprint,
            target_host = %self.target,
            account = %self.account,
            session = %self.session,
            reason = %self.reason,
            detail = %detail,
            "{}",
            self.code
        );
    }
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("warn"))
        .add_directive(
            format!("{TARGET}=info").parse().unwrap_or_else(|_| {
                tracing_subscriber::filter::Directive::from(tracing::Level::INFO)
            }),
        )
}

/// Installs the global subscriber. `RUST_LOG` may add diagnostics; audit events are always on.
pub fn init(sink: AuditSink) {
    let journald = match sink {
        AuditSink::Stderr => None,
        AuditSink::Journald | AuditSink::Auto => tracing_journald::layer()
            .ok()
            .map(|l| l.with_syslog_identifier("stapsteen".into())),
    };
    if sink == AuditSink::Journald && journald.is_none() {
        eprintln!("stapsteen: journald is not reachable; audit events go to stderr");
    }
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
    });
    let _ = tracing_subscriber::registry()
        .with(filter())
        .with(journald)
        .with(stderr)
        .try_init();
}
