//! A port forward (`ssh -L`, `-W`): bytes both ways between the admin's channel and a TCP
//! connection to a granted port, counted for the audit trail. It ends when both sides have
//! closed, at the grant's end or the maximum session length, or on revocation; exactly one
//! FORWARD_END event says how. A stop or deadline resets the target connection at once, whatever
//! the admin's client does (a reset gets out also after the grant's firewall element is gone).

use std::sync::atomic::{AtomicU64, Ordering};

use russh::server::{self, Msg};
use russh::{Channel, ChannelId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::SessionStop;
use crate::audit::{Code, Event};

pub struct ForwardContext {
    pub front: server::Handle,
    pub channel: Channel<Msg>,
    pub stream: TcpStream,
    pub stop: SessionStop,
    pub deadline: Instant,
    pub deadline_reason: String,
    /// The FORWARD_START event; FORWARD_END repeats its fields.
    pub event: Event,
    /// Runs once when the forward has ended.
    pub on_end: Box<dyn FnOnce() + Send>,
}

pub fn spawn_forward(ctx: ForwardContext) {
    tokio::spawn(run(ctx));
}

/// Copies until `from` ends, then passes the end on.
async fn pipe(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    count: &AtomicU64,
) -> std::io::Result<()> {
    let mut buf = vec![0; 32 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(buf.get(..n).unwrap_or_default()).await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
}

async fn run(ctx: ForwardContext) {
    let started = Instant::now();
    let id: ChannelId = ctx.channel.id();
    let (to_target, to_admin) = (AtomicU64::new(0), AtomicU64::new(0));
    let (admin_read, admin_write) = tokio::io::split(ctx.channel.into_stream());
    let mut stream = ctx.stream;
    let (target_read, target_write) = stream.split();
    let both = async {
        let (up, down) = tokio::join!(
            pipe(admin_read, target_write, &to_target),
            pipe(target_read, admin_write, &to_admin)
        );
        up.and(down)
    };
    let (how, stopped) = tokio::select! {
        r = both => (match r {
            Ok(()) => "closed".to_owned(),
            Err(e) => format!("connection error: {e}"),
        }, false),
        _ = tokio::time::sleep_until(ctx.deadline) => (ctx.deadline_reason, true),
        // Without a reason the admin left: what they sent last still goes out, in order.
        reason = ctx.stop.wait() => match reason {
            Some(r) => (r, true),
            None => ("admin disconnected".into(), false),
        },
    };
    if stopped {
        // The grant's firewall element may be gone already: only a reset reaches the target.
        crate::upstream::abort(&stream);
    }
    drop(stream);
    // Bounded: the admin's connection may hold russh's queue full (another channel's window
    // shut); the target side is closed already and FORWARD_END must not wait on the admin.
    let _ = tokio::time::timeout(super::CUTOFF_GRACE, ctx.front.close(id)).await;
    (ctx.on_end)();
    ctx.event
        .reason(how)
        .detail("bytes_to_target", to_target.load(Ordering::Relaxed))
        .detail("bytes_to_admin", to_admin.load(Ordering::Relaxed))
        .detail("duration_s", started.elapsed().as_secs_f64())
        .emit_as(Code::ForwardEnd);
}
