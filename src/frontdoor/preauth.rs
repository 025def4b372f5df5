//! Before authentication: the slots an unauthenticated connection takes, and the login grace that
//! ends it.
//!
//! Invariants: an unauthenticated connection holds one slot of the total and one of its source's
//! share ([`Slot`]); both are given back when it authenticates or ends, whichever comes first.
//! When the login grace expires first, the connection's socket ([`Cut`]) fails every read and
//! write from then on, whatever the client sends or withholds, so russh's session task ends,
//! drops the handler (and with it the slot) and closes the TCP connection. A connection is either
//! authenticated or expired, never both ([`Login`]).
//!
//! A source is an IPv4 address, or an IPv6 /64 (see [`crate::net::source_of`] for why).

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::net::source_of;
use crate::sync::lock;

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Total,
    Source,
}

impl Full {
    pub fn reason(self) -> &'static str {
        match self {
            Full::Total => "too many unauthenticated connections",
            Full::Source => "too many unauthenticated connections from this source",
        }
    }
}

/// The slots for unauthenticated connections: a total, and a share per source.
pub struct Slots {
    total: Arc<Semaphore>,
    per_source: usize,
    sources: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Slots {
    pub fn new(total: usize, per_source: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total)),
            per_source,
            sources: Arc::default(),
        }
    }

    /// A slot for a connection from `peer`, or why there is none.
    pub fn take(&self, peer: IpAddr) -> Result<Slot, Full> {
        let source = source_of(peer);
        let mut sources = lock(&self.sources);
        let held = sources.get(&source).copied().unwrap_or(0);
        if held >= self.per_source {
            return Err(Full::Source);
        }
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Full::Total)?;
        sources.insert(source, held + 1);
        Ok(Slot {
            _total: total,
            source,
            sources: self.sources.clone(),
        })
    }

    /// Sources holding at least one slot (the map never keeps an empty entry).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        lock(&self.sources).len()
    }
}

/// One unauthenticated connection's slot; dropping it gives the slot back.
pub struct Slot {
    _total: OwnedSemaphorePermit,
    source: IpAddr,
    sources: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut sources = lock(&self.sources);
        if let Some(n) = sources.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                sources.remove(&self.source);
            }
        }
    }
}

const PENDING: u8 = 0;
const AUTHENTICATED: u8 = 1;
const EXPIRED: u8 = 2;

/// Whether a connection authenticated within its grace or ran out of it.
#[derive(Default)]
pub struct Login {
    state: AtomicU8,
    read: AtomicWaker,
    write: AtomicWaker,
}

impl Login {
    /// Marks the login done; false when the grace had already expired.
    pub fn authenticate(&self) -> bool {
        self.state
            .compare_exchange(PENDING, AUTHENTICATED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Ends the grace: true when the connection had not authenticated, and from then on its
    /// [`Cut`] socket fails.
    pub fn expire(&self) -> bool {
        let expired = self
            .state
            .compare_exchange(PENDING, EXPIRED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if expired {
            self.read.wake();
            self.write.wake();
        }
        expired
    }

    /// Registers the waker first, so an expiry between the check and the wait still wakes it.
    fn expired(&self, waker: &AtomicWaker, cx: &Context<'_>) -> bool {
        waker.register(cx.waker());
        self.state.load(Ordering::SeqCst) == EXPIRED
    }
}

fn grace_expired() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "login grace expired")
}

/// A connection's socket that fails every read and write once its [`Login`] expired.
pub struct Cut<S> {
    inner: S,
    login: Arc<Login>,
}

impl<S> Cut<S> {
    pub fn new(inner: S, login: Arc<Login>) -> Self {
        Self { inner, login }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Cut<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.login.expired(&this.login.read, cx) {
            return Poll::Ready(Err(grace_expired()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Cut<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.login.expired(&this.login.write, cx) {
            return Poll::Ready(Err(grace_expired()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.login.expired(&this.login.write, cx) {
            return Poll::Ready(Err(grace_expired()));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_gets_its_share_and_others_still_get_in() {
        let slots = Slots::new(5, 2);
        let a1 = slots.take(ip("10.0.0.1")).unwrap();
        let _a2 = slots.take(ip("10.0.0.1")).unwrap();
        assert_eq!(slots.take(ip("10.0.0.1")).err(), Some(Full::Source));
        let _b = slots.take(ip("10.0.0.2")).unwrap();
        drop(a1);
        let _a3 = slots.take(ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn the_total_holds_across_sources() {
        let slots = Slots::new(2, 2);
        let _a = slots.take(ip("10.0.0.1")).unwrap();
        let _b = slots.take(ip("10.0.0.2")).unwrap();
        assert_eq!(slots.take(ip("10.0.0.3")).err(), Some(Full::Total));
        // A refusal for the total does not count against the source.
        drop(_b);
        let _c1 = slots.take(ip("10.0.0.3")).unwrap();
        assert_eq!(slots.tracked(), 2);
    }

    #[test]
    fn slots_given_back_leave_no_entry() {
        let slots = Slots::new(8, 8);
        let held: Vec<Slot> = (0..8)
            .map(|i| slots.take(ip(&format!("10.0.0.{i}"))).unwrap())
            .collect();
        assert_eq!(slots.tracked(), 8);
        drop(held);
        assert_eq!(slots.tracked(), 0);
        assert_eq!(slots.total.available_permits(), 8);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let slots = Slots::new(10, 1);
        let _a = slots.take(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            slots.take(ip("2001:db8:1:2:ffff::9")).err(),
            Some(Full::Source)
        );
        let _b = slots.take(ip("2001:db8:1:3::1")).unwrap();
        let _c = slots.take(ip("10.0.0.1")).unwrap();
        assert_eq!(slots.take(ip("::ffff:10.0.0.1")).err(), Some(Full::Source));
    }

    #[test]
    fn authenticated_and_expired_exclude_each_other() {
        let l = Login::default();
        assert!(l.authenticate());
        assert!(!l.expire());
        let l = Login::default();
        assert!(l.expire());
        assert!(!l.authenticate());
    }

    #[tokio::test]
    async fn expiry_wakes_a_pending_read_and_fails_writes() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let login = Arc::new(Login::default());
        let mut cut = Cut::new(ours, login.clone());
        theirs.write_all(b"SSH-2.0-x\r\n").await.unwrap();
        let mut buf = [0u8; 11];
        cut.read_exact(&mut buf).await.unwrap();
        // A read waiting on a silent client ends when the grace does.
        let pending = tokio::spawn(async move {
            let mut b = [0u8; 1];
            let r = cut.read(&mut b).await;
            (r.map_err(|e| e.kind()), cut)
        });
        tokio::task::yield_now().await;
        assert!(login.expire());
        let (r, mut cut) = pending.await.unwrap();
        assert_eq!(r, Err(io::ErrorKind::TimedOut));
        assert_eq!(
            cut.write_all(b"x").await.map_err(|e| e.kind()),
            Err(io::ErrorKind::TimedOut)
        );
    }
}
