//! Session proxy: joins one admin channel to one target channel, byte for byte, and keeps the
//! transcript (recording, counts, hashes) of what crossed.
//!
//! Invariants: the target channel is only opened after the recording exists; a recording write
//! error, the idle timeout, the maximum session length or the grant's end closes both sides; every
//! session ends with exactly one SESSION_END audit event. A stopped session's target side is
//! closed within [`CUTOFF_GRACE`] whatever the admin's client does (see [`Cutoff`]).

mod cutoff;
mod forward;
mod pump;
pub(crate) mod sftp;
mod stop;
mod transcript;

pub use cutoff::{Cutoff, GRACE as CUTOFF_GRACE};
pub use forward::{ForwardContext, spawn_forward};
pub use pump::{PumpContext, spawn_pump};
pub use stop::SessionStop;
pub use transcript::Transcript;

use russh::client;
use russh::{Channel, ChannelMsg, Pty};

/// When a session or forward under a grant must end, and the reason shown then: the grant's
/// end (`until`) or the maximum session length, whichever comes first.
pub fn deadline(
    now: jiff::Timestamp,
    until: Option<jiff::Timestamp>,
    max_session: std::time::Duration,
    grant: &crate::policy::GrantName,
) -> (tokio::time::Instant, String) {
    let start = tokio::time::Instant::now();
    let max_end = (
        start + max_session,
        "maximum session length reached, session closed".to_owned(),
    );
    match until {
        Some(until) => {
            // A grant that has already ended ends the session now, not as far in the future.
            let left = until.duration_since(now).max(jiff::SignedDuration::ZERO);
            let grant_end = start + left.unsigned_abs();
            if grant_end < max_end.0 {
                (grant_end, format!("grant {grant} ended, session closed"))
            } else {
                max_end
            }
        }
        None => max_end,
    }
}

/// The admin's pty request, replayed to the target.
#[derive(Clone, Debug)]
pub struct PtyRequest {
    pub term: String,
    pub cols: u32,
    pub rows: u32,
    pub pix_width: u32,
    pub pix_height: u32,
    pub modes: Vec<(Pty, u32)>,
}

/// What runs on the target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Run {
    Shell,
    Exec(Vec<u8>),
    Subsystem(String),
}

impl Run {
    /// How the session is described in audit events and recordings.
    pub fn describe(&self) -> String {
        match self {
            Run::Shell => "shell".to_owned(),
            Run::Exec(c) => format!("exec {}", String::from_utf8_lossy(c)),
            Run::Subsystem(s) => format!("subsystem {s}"),
        }
    }
}

/// Environment variables passed to targets; everything else is dropped.
pub fn env_allowed(name: &str) -> bool {
    name == "LANG" || name == "TERM" || name.starts_with("LC_")
}

async fn expect_success(ch: &mut Channel<client::Msg>, what: &str) -> Result<(), String> {
    loop {
        match ch.wait().await {
            Some(ChannelMsg::Success) => return Ok(()),
            Some(ChannelMsg::Failure) => {
                return Err(format!("the target refused the {what} request"));
            }
            Some(ChannelMsg::WindowAdjusted { .. }) => continue,
            Some(_) => continue,
            None => {
                return Err(format!(
                    "the target closed the channel during the {what} request"
                ));
            }
        }
    }
}

/// Opens the session channel on the target and starts `run` on it.
pub async fn open_target_channel(
    conn: &crate::upstream::Connection,
    pty: Option<&PtyRequest>,
    env: &[(String, String)],
    run: &Run,
) -> Result<Channel<client::Msg>, String> {
    let mut ch = conn
        .handle
        .channel_open_session()
        .await
        .map_err(|e| format!("cannot open a session on the target: {e}"))?;
    for (k, v) in env {
        ch.set_env(false, k.as_str(), v.as_str())
            .await
            .map_err(|e| e.to_string())?;
    }
    if let Some(p) = pty {
        ch.request_pty(
            true,
            &p.term,
            p.cols,
            p.rows,
            p.pix_width,
            p.pix_height,
            &p.modes,
        )
        .await
        .map_err(|e| e.to_string())?;
        expect_success(&mut ch, "pty").await?;
    }
    match run {
        Run::Shell => ch.request_shell(true).await,
        Run::Exec(cmd) => ch.exec(true, cmd.clone()).await,
        Run::Subsystem(name) => ch.request_subsystem(true, name.as_str()).await,
    }
    .map_err(|e| e.to_string())?;
    expect_success(&mut ch, "session").await?;
    Ok(ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_allowlist() {
        assert!(env_allowed("LANG"));
        assert!(env_allowed("LC_ALL"));
        assert!(env_allowed("TERM"));
        assert!(!env_allowed("LD_PRELOAD"));
        assert!(!env_allowed("PATH"));
    }

    #[tokio::test]
    async fn a_grant_that_has_ended_ends_the_session_now() {
        let grant = crate::policy::GrantName::new("g").unwrap();
        let now = jiff::Timestamp::now();
        let hour = std::time::Duration::from_secs(3600);
        let before = tokio::time::Instant::now();
        let past = now
            .checked_sub(jiff::SignedDuration::from_mins(30))
            .unwrap();
        let (at, why) = deadline(now, Some(past), hour, &grant);
        assert!(at <= tokio::time::Instant::now(), "{why}");
        assert!(why.contains("grant g ended"));
        let soon = now
            .checked_add(jiff::SignedDuration::from_mins(10))
            .unwrap();
        let (at, _) = deadline(now, Some(soon), hour, &grant);
        assert!(at >= before + std::time::Duration::from_secs(599));
        assert!(at <= tokio::time::Instant::now() + std::time::Duration::from_secs(600));
        let (at, why) = deadline(now, None, hour, &grant);
        assert!(at >= before + hour && why.contains("maximum session length"));
    }
}
