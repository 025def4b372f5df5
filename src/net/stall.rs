//! A socket that must keep moving when it has something to send.
//!
//! Invariant: a write, flush or shutdown that makes no progress for the stall limit fails
//! (`TimedOut`), so a peer that stops reading (a zero TCP window, which the kernel keeps open
//! for ever) cannot hold a connection and the place it takes. Reads pass unchanged: whoever
//! reads bounds its own waiting (the console's head and body timeouts).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

pub struct Stall<S> {
    inner: S,
    limit: Duration,
    /// Running while the last write, flush or shutdown was pending.
    since: Option<Pin<Box<Sleep>>>,
}

impl<S> Stall<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            since: None,
        }
    }

    /// `poll`'s answer, or `TimedOut` once it has been pending for the limit.
    fn guard<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.since = None;
            return poll;
        }
        let limit = self.limit;
        let since = self
            .since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(since.as_mut().poll(cx));
        self.since = None;
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "peer stopped reading",
        )))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Stall<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stall<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.guard(cx, poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.guard(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.guard(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_peer_that_stops_reading_fails_the_write_and_one_that_reads_does_not() {
        let limit = Duration::from_millis(200);
        let (ours, mut theirs) = tokio::io::duplex(16);
        let mut s = Stall::new(ours, limit);
        // Slow but moving: 64 bytes through a 16-byte pipe, read a little at a time, each pause
        // shorter than the limit.
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut b = [0u8; 8];
            while got.len() < 64 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let n = theirs.read(&mut b).await.unwrap();
                got.extend_from_slice(&b[..n]);
            }
            (got, theirs)
        });
        s.write_all(&[7u8; 64]).await.unwrap();
        let (got, _theirs) = reader.await.unwrap();
        assert_eq!(got, vec![7u8; 64]);
        // Stopped: the pipe fills and the write fails at the limit, not before.
        let start = tokio::time::Instant::now();
        let e = s.write_all(&[7u8; 64]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= limit, "{:?}", start.elapsed());
    }
}
