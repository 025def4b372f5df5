//! The task that carries target output to the admin and ends the session.
//!
//! Every end the bastion decides goes through the session's [`SessionStop`], so [`Cutoff`]
//! closes both sides should this task stay held in a send to an admin who reads nothing.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::ssh_key::Fingerprint;
use russh::server;
use russh::{ChannelId, ChannelMsg, ChannelReadHalf, Disconnect};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Cutoff, SessionStop, Transcript};
use crate::audit::{Code, Event};
use crate::recording::{Meta, RecordingStore};
use crate::sync::lock;
use crate::upstream::Connection;

/// Everything the pump needs to know about the session it carries.
pub struct PumpContext {
    pub front: server::Handle,
    pub front_channel: ChannelId,
    pub conn: Connection,
    pub transcript: Arc<Mutex<Transcript>>,
    /// Stopped when the admin side is gone, input could not be recorded, or access was revoked.
    pub stop: SessionStop,
    pub deadline: Instant,
    pub deadline_reason: String,
    pub idle_timeout: Duration,
    pub pty: bool,
    pub event: Event,
    pub store: RecordingStore,
    pub meta: Option<Meta>,
    pub source: Option<SocketAddr>,
    pub fingerprint: Option<Fingerprint>,
    /// Runs once when the session has ended.
    pub on_end: Box<dyn FnOnce() + Send>,
}

enum End {
    /// The target closed the channel.
    Target,
    /// The bastion ended it, with a message for the admin.
    Bastion(String),
}

/// Starts the pump and its [`Cutoff`]; `cut_admin` cuts the admin's connection at the TCP level.
pub fn spawn_pump(
    ctx: PumpContext,
    read: ChannelReadHalf,
    cut_admin: impl FnOnce() + Send + 'static,
) {
    let told = CancellationToken::new();
    Cutoff {
        stop: ctx.stop.clone(),
        deadline: ctx.deadline,
        deadline_reason: ctx.deadline_reason.clone(),
        target: ctx.conn.socket(),
        cut_admin: Box::new(cut_admin),
        event: ctx.event.clone(),
    }
    .spawn(told.clone());
    tokio::spawn(run(ctx, read, told.drop_guard()));
}

/// Why a send to the admin failed: the session's stop when there is one (the admin's
/// connection was cut for it), else the admin's channel.
fn not_sent(stop: &SessionStop) -> String {
    stop.stopped()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "admin channel closed".into())
}

/// `told` is dropped once the admin has been told the session ended.
async fn run(ctx: PumpContext, mut read: ChannelReadHalf, told: DropGuard) {
    let id = ctx.front_channel;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let end = loop {
        tokio::select! {
            msg = read.wait() => {
                let Some(msg) = msg else { break End::Target };
                match msg {
                    ChannelMsg::Data { data } => {
                        if let Err(e) = lock(&ctx.transcript).output(&data) {
                            break End::Bastion(e.session_ended());
                        }
                        if ctx.front.data(id, data).await.is_err() {
                            break End::Bastion(not_sent(&ctx.stop));
                        }
                        if let Some(why) = held_back(&ctx.transcript, &ctx.stop, ctx.deadline, &ctx.deadline_reason).await {
                            break End::Bastion(why);
                        }
                    }
                    ChannelMsg::ExtendedData { data, ext } => {
                        if let Err(e) = lock(&ctx.transcript).stderr(&data) {
                            break End::Bastion(e.session_ended());
                        }
                        if ctx.front.extended_data(id, ext, data).await.is_err() {
                            break End::Bastion(not_sent(&ctx.stop));
                        }
                        if let Some(why) = held_back(&ctx.transcript, &ctx.stop, ctx.deadline, &ctx.deadline_reason).await {
                            break End::Bastion(why);
                        }
                    }
                    ChannelMsg::Eof => { let _ = ctx.front.eof(id).await; }
                    ChannelMsg::ExitStatus { exit_status } => {
                        lock(&ctx.transcript).exit_status = Some(exit_status);
                        let _ = ctx.front.exit_status_request(id, exit_status).await;
                    }
                    ChannelMsg::ExitSignal { signal_name, core_dumped, error_message, lang_tag } => {
                        lock(&ctx.transcript).exit_signal = Some(format!("{signal_name:?}"));
                        let _ = ctx.front.exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag).await;
                    }
                    ChannelMsg::Close => break End::Target,
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until(ctx.deadline) => break End::Bastion(ctx.deadline_reason.clone()),
            _ = tick.tick() => {
                let mut t = lock(&ctx.transcript);
                if let Err(e) = t.tick() {
                    break End::Bastion(e.session_ended());
                }
                let idle = t.last_activity.elapsed();
                drop(t);
                if idle >= ctx.idle_timeout {
                    break End::Bastion(format!("idle for {}s, session ended", ctx.idle_timeout.as_secs()));
                }
            }
            reason = ctx.stop.wait() => {
                break End::Bastion(reason.unwrap_or_else(|| "admin disconnected".into()));
            }
        }
    };
    // russh's loop for the target may wait to hand this channel more output; reading no more,
    // the pump lets it go, or the disconnect below would queue behind it for ever (when the
    // admin's input filled that loop's queue meanwhile).
    drop(read);
    let reason = match &end {
        End::Target => "closed".to_owned(),
        End::Bastion(r) => r.clone(),
    };
    if let End::Bastion(msg) = &end {
        // The cutoff acts on ends found here too (a failed recording), should the admin's
        // window stay shut below.
        if ctx.stop.stopped().is_none() {
            ctx.stop.stop(msg.clone());
        }
        let nl = if ctx.pty { "\r\n" } else { "\n" };
        let text = format!("{nl}stapsteen: {msg}{nl}");
        let _ = ctx.front.extended_data(id, 1, text.into_bytes()).await;
        let _ = ctx
            .conn
            .handle
            .disconnect(
                Disconnect::ByApplication,
                "session ended by the bastion",
                "",
            )
            .await;
    }
    let _ = ctx.front.eof(id).await;
    let _ = ctx.front.close(id).await;
    drop(told);
    finish(ctx, &reason).await;
}

/// While the recording's disk lags, reads no more from the target (whose window then waits for
/// the disk); `Some` with why the session ends instead.
async fn held_back(
    transcript: &Mutex<Transcript>,
    stop: &SessionStop,
    deadline: Instant,
    deadline_reason: &str,
) -> Option<String> {
    let backlog = lock(transcript).backlog()?;
    tokio::select! {
        r = backlog.wait() => r
            .err()
            .and_then(|e| lock(transcript).lagged(e).err())
            .map(|e| e.session_ended()),
        reason = stop.wait() => Some(reason.unwrap_or_else(|| "admin disconnected".into())),
        _ = tokio::time::sleep_until(deadline) => Some(deadline_reason.to_owned()),
    }
}

async fn finish(ctx: PumpContext, reason: &str) {
    (ctx.on_end)();
    let (finishing, bytes_in, bytes_out, exit, exit_signal, stderr) = {
        let mut t = lock(&ctx.transcript);
        let label = match (t.exit_status, &t.exit_signal) {
            (Some(code), _) => format!("end: exit status {code}"),
            (None, Some(sig)) => format!("end: signal {sig}"),
            (None, None) => format!("end: {reason}"),
        };
        let finishing = t.finish(&label, reason);
        (
            finishing,
            t.bytes_in,
            t.bytes_out,
            t.exit_status,
            t.exit_signal.clone(),
            t.stderr_digest(),
        )
    };
    // The recording's end reaches the disk on the writer; this task only waits for it.
    let (synced, sha_in, sha_out) = finishing.wait().await;
    let mut event = ctx
        .event
        .reason(reason)
        .detail("bytes_in", bytes_in)
        .detail("bytes_out", bytes_out)
        .detail("sha256_in", sha_in)
        .detail("sha256_out", sha_out);
    if let Some((bytes, sha)) = stderr {
        event = event.detail("bytes_err", bytes).detail("sha256_err", sha);
    }
    if let Some(code) = exit {
        event = event.detail("exit_status", code);
    }
    if let Some(sig) = &exit_signal {
        event = event.detail("exit_signal", sig.as_str());
    }
    if let Some(mut meta) = ctx.meta {
        meta.end = Some(jiff::Timestamp::now());
        meta.exit_status = exit;
        meta.end_reason = Some(reason.to_owned());
        let written = match synced {
            Err(e) => Err(e.to_string()),
            Ok(()) => {
                let (store, m) = (ctx.store.clone(), meta.clone());
                tokio::task::spawn_blocking(move || store.write_meta(&m))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|w| w.map_err(|e| e.to_string()))
            }
        };
        if let Err(e) = written {
            Event::new(Code::RecordingFailed)
                .session(&meta.id)
                .admin(&meta.admin)
                .source(ctx.source)
                .fingerprint(ctx.fingerprint.map(|f| f.to_string()).unwrap_or_default())
                .target(&meta.target)
                .reason(e)
                .emit();
        }
    }
    event.emit();
}
