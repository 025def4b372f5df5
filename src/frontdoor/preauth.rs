//! Before authentication: the login grace that ends a connection.
//!
//! Invariants: an unauthenticated connection holds a [`crate::net::Slot`] of the total and of its
//! source's share; the handler gives it back when the connection authenticates, and it goes
//! with the handler when the connection ends, whichever comes first.
//! When the login grace expires first, the connection's socket ([`Cut`]) fails every read and
//! write from then on, whatever the client sends or withholds, so russh's session task ends,
//! drops the handler (and with it the slot) and closes the TCP connection. A connection is either
//! authenticated or expired, never both ([`Login`]).
//! After authentication the same socket is cut ([`Login::cut`]) when a stopped session's end
//! cannot reach an admin who keeps the window shut (see [`crate::proxy::Cutoff`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PENDING: u8 = 0;
const AUTHENTICATED: u8 = 1;
const EXPIRED: u8 = 2;
const CUT: u8 = 3;

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

    /// Cuts an authenticated connection: from then on its [`Cut`] socket fails, so russh's loop
    /// ends even while it waits on an admin who reads nothing.
    pub fn cut(&self) {
        let cut = self
            .state
            .compare_exchange(AUTHENTICATED, CUT, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if cut {
            self.read.wake();
            self.write.wake();
        }
    }

    /// Registers the waker first, so an expiry or cut between the check and the wait still
    /// wakes it.
    fn failed(&self, waker: &AtomicWaker, cx: &Context<'_>) -> Option<io::Error> {
        waker.register(cx.waker());
        match self.state.load(Ordering::SeqCst) {
            EXPIRED => Some(io::Error::new(
                io::ErrorKind::TimedOut,
                "login grace expired",
            )),
            CUT => Some(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection cut by the bastion",
            )),
            _ => None,
        }
    }
}

/// A connection's socket that fails every read and write once its [`Login`] expired or the
/// connection was cut.
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
        if let Some(e) = this.login.failed(&this.login.read, cx) {
            return Poll::Ready(Err(e));
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
        if let Some(e) = this.login.failed(&this.login.write, cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.login.failed(&this.login.write, cx) {
            return Poll::Ready(Err(e));
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

    #[tokio::test]
    async fn a_cut_wakes_a_pending_read_of_an_authenticated_connection() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let login = Arc::new(Login::default());
        login.cut();
        let mut cut = Cut::new(ours, login.clone());
        // Not before authentication: the grace decides then.
        assert!(login.authenticate());
        let pending = tokio::spawn(async move {
            let mut b = [0u8; 1];
            let r = cut.read(&mut b).await;
            (r.map_err(|e| e.kind()), cut)
        });
        tokio::task::yield_now().await;
        login.cut();
        let (r, mut cut) = pending.await.unwrap();
        assert_eq!(r, Err(io::ErrorKind::ConnectionAborted));
        assert_eq!(
            cut.write_all(b"x").await.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionAborted)
        );
        assert!(!login.expire());
    }
}
