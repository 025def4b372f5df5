//! Ending a stopped session whose pump cannot: an admin who keeps the SSH window shut (a
//! stopped client, a full TCP receive buffer) holds the pump in its send to the admin, and the
//! pump holds russh's loop for the target connection (which waits for the pump to read), so
//! neither the pump's disconnect nor russh's would ever go out.
//!
//! Invariant: a stopped session's target side is closed within [`GRACE`] of the stop (a
//! revocation, the grant's end or the maximum session length, a failed recording), whatever the
//! admin's client does. If the pump has not told the admin by then, the target's TCP connection
//! is reset from outside russh and the admin's connection is cut at the TCP level (audited as
//! SESSION_CUT, as it ends any other channel on that connection too); that fails the
//! pump's send, so the pump still ends the session: SESSION_END with the stop's reason and a
//! sealed recording. A pump that ends by itself within the grace (an admin who reads) is left
//! alone until it has told the admin.
//!
//! Every stopped session's target connection is then reset ([`crate::upstream::abort`]), also
//! when the pump ended in time: a revocation by reload or the grant's end removes the grant's
//! firewall element at about the moment the session stops, after which the kernel drops the
//! SSH disconnect and the FIN (the target's session would live on until its own timeouts). The
//! output chain lets the bastion's TCP resets out to management networks whatever the grants
//! (see `firewall::plan`), so the target's sshd sees ECONNRESET and ends the session. A session
//! that ends by itself (the target closed it, the admin left and the pump ended in time) is not
//! reset: what the admin sent last still reaches the target in order.

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::SessionStop;
use crate::audit::{Code, Event};
use crate::upstream::TargetSocket;

/// How long a stopped session's pump has to tell the admin before both sides are cut.
pub const GRACE: Duration = Duration::from_secs(2);

/// What a stopped session cuts when its pump does not end in time.
pub struct Cutoff {
    pub stop: SessionStop,
    /// The grant's end or the maximum session length: stops the session too.
    pub deadline: Instant,
    pub deadline_reason: String,
    pub target: TargetSocket,
    /// Cuts the admin's whole connection at the TCP level.
    pub cut_admin: Box<dyn FnOnce() + Send>,
    /// The session's SESSION_START event: a cut is audited as SESSION_CUT with its fields, as it
    /// ends any other channels of the admin's connection too.
    pub event: Event,
}

impl Cutoff {
    /// Watches the session until `told` is cancelled (the pump has told the admin it ended).
    pub fn spawn(self, told: CancellationToken) {
        tokio::spawn(self.run(told));
    }

    async fn run(self, told: CancellationToken) {
        let Cutoff {
            stop,
            deadline,
            deadline_reason,
            target,
            cut_admin,
            event,
        } = self;
        // Stopped with a reason (not only because the admin left), or past the deadline.
        let ended_by_bastion = |stop: &SessionStop| {
            stop.stopped().is_some_and(|r| !r.is_empty()) || Instant::now() >= deadline
        };
        let ended = tokio::select! {
            _ = told.cancelled() => true,
            _ = stop.wait() => false,
            // The pump sees the deadline only between sends; the stop also ends its send.
            _ = tokio::time::sleep_until(deadline) => {
                stop.stop(deadline_reason);
                false
            }
        };
        if ended || tokio::time::timeout(GRACE, told.cancelled()).await.is_ok() {
            // The pump told the admin in time; it may have seen the stop or the deadline first.
            if ended_by_bastion(&stop) {
                target.abort();
            }
            return;
        }
        target.abort();
        cut_admin();
        event
            .reason(stop.stopped().unwrap_or_default())
            .detail("grace_s", GRACE.as_secs())
            .emit_as(Code::SessionCut);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// A target socket on loopback, and the target's end of it.
    fn connection() -> (TargetSocket, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (theirs, _) = listener.accept().unwrap();
        theirs
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        (TargetSocket::new(ours), theirs)
    }

    /// A cutoff, whether it cut the admin, and the target's end of the connection (the target
    /// socket is held open too, as the pump's handle on the connection does).
    fn cutoff(stop: &SessionStop, deadline: Instant) -> (Cutoff, Arc<AtomicBool>, Held) {
        let (target, theirs) = connection();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        let c = Cutoff {
            stop: stop.clone(),
            deadline,
            deadline_reason: "grant g ended, session closed".into(),
            target: target.clone(),
            cut_admin: Box::new(move || flag.store(true, Ordering::SeqCst)),
            event: Event::new(Code::SessionStart),
        };
        (
            c,
            cut,
            Held {
                _pump: target,
                theirs,
            },
        )
    }

    struct Held {
        _pump: TargetSocket,
        theirs: std::net::TcpStream,
    }

    /// Whether the target sees its connection reset (within a second); false also if it sees
    /// nothing or an orderly close.
    fn closed(held: &mut Held) -> bool {
        matches!(
            held.theirs.read(&mut [0u8; 1]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset
        )
    }

    /// Whether the target sees nothing on its connection (its read times out after a second).
    fn untouched(held: &mut Held) -> bool {
        matches!(
            held.theirs.read(&mut [0u8; 1]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
        )
    }

    #[tokio::test]
    async fn a_pump_that_ends_within_the_grace_keeps_the_admin_but_resets_the_target() {
        let stop = SessionStop::default();
        let (c, cut, mut held) = cutoff(&stop, Instant::now() + Duration::from_secs(3600));
        let told = CancellationToken::new();
        let watching = tokio::spawn(c.run(told.clone()));
        stop.stop("access revoked (key removed), session ended");
        tokio::time::sleep(GRACE / 2).await;
        told.cancel();
        watching.await.unwrap();
        assert!(!cut.load(Ordering::SeqCst));
        assert!(closed(&mut held));
    }

    #[tokio::test]
    async fn an_admin_who_left_is_not_a_reason_to_reset() {
        let stop = SessionStop::default();
        let (c, cut, mut held) = cutoff(&stop, Instant::now() + Duration::from_secs(3600));
        let told = CancellationToken::new();
        let watching = tokio::spawn(c.run(told.clone()));
        stop.cancel();
        tokio::time::sleep(GRACE / 2).await;
        told.cancel();
        watching.await.unwrap();
        assert!(!cut.load(Ordering::SeqCst));
        assert!(untouched(&mut held));
    }

    #[tokio::test]
    async fn a_session_that_ends_by_itself_is_not_reset() {
        let stop = SessionStop::default();
        let (c, cut, mut held) = cutoff(&stop, Instant::now() + Duration::from_secs(3600));
        let told = CancellationToken::new();
        told.cancel();
        c.run(told).await;
        assert!(!cut.load(Ordering::SeqCst));
        assert!(untouched(&mut held));
    }

    #[tokio::test]
    async fn a_pump_held_past_the_grace_has_both_sides_cut() {
        let stop = SessionStop::default();
        let (c, cut, mut held) = cutoff(&stop, Instant::now() + Duration::from_secs(3600));
        let started = Instant::now();
        stop.stop("access revoked (key removed), session ended");
        c.run(CancellationToken::new()).await;
        assert!(started.elapsed() >= GRACE);
        assert!(cut.load(Ordering::SeqCst));
        assert!(closed(&mut held));
    }

    #[tokio::test]
    async fn the_deadline_stops_the_session_with_its_reason() {
        let stop = SessionStop::default();
        let (c, cut, mut held) = cutoff(&stop, Instant::now() + Duration::from_millis(100));
        c.run(CancellationToken::new()).await;
        assert_eq!(
            stop.stopped().as_deref(),
            Some("grant g ended, session closed")
        );
        assert!(cut.load(Ordering::SeqCst));
        assert!(closed(&mut held));
    }
}
