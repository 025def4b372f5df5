//! What one authenticated connection may ask of the bastion besides channels (which
//! `MAX_CHANNELS` bounds): requests and terminal sizes.
//!
//! Invariants: a connection's requests (global requests the handler sees, environment, pty,
//! signal, and the forwarding requests it refuses) draw on a token bucket; one that empties it is
//! closed. Window changes draw on a bucket of their own, larger because dragging a terminal's
//! corner sends dozens a second; one beyond it is dropped (neither recorded nor passed on), not
//! fatal. Terminal sizes are clamped to [`MAX_COLS`] x [`MAX_ROWS`] before the target, the
//! recording or the console player sees them. An environment value or terminal name longer than
//! [`MAX_ENV_BYTES`] is refused: each is kept until its channel starts, and a packet can carry
//! 256 KiB, so 32 values on each of 8 channels of each connection would be gigabytes per admin.
//!
//! What russh bounds on its own: a version line of at most 255 bytes, packets of at most
//! 256 KiB (plus headroom), `max_auth_attempts` refused signatures per connection, window
//! adjustments added with saturation (each costs a few instructions, as an `SSH_MSG_IGNORE`
//! does), and global requests no handler method takes are answered with a failure.

use std::time::Duration;

use jiff::Timestamp;

/// The widest and tallest terminal passed on; larger requests get this size.
pub const MAX_COLS: u32 = 1000;
pub const MAX_ROWS: u32 = 1000;

/// The longest environment value (`LANG`, `LC_*`, `TERM`) or pty terminal name passed on; real
/// ones are a few dozen bytes.
pub const MAX_ENV_BYTES: usize = 1024;

/// A terminal size as the bastion passes it on (0 stays 0: "not given").
pub fn clamp_pty(cols: u32, rows: u32) -> (u32, u32) {
    (cols.min(MAX_COLS), rows.min(MAX_ROWS))
}

/// A token bucket: `burst` at once, refilled at `per_second`.
pub struct Bucket {
    burst: f64,
    per_second: f64,
    tokens: f64,
    at: Option<Timestamp>,
}

impl Bucket {
    pub const fn new(burst: u32, per_second: u32) -> Self {
        Self {
            burst: burst as f64,
            per_second: per_second as f64,
            tokens: burst as f64,
            at: None,
        }
    }

    /// Takes one token at `now`; false when there is none.
    pub fn take(&mut self, now: Timestamp) -> bool {
        if let Some(at) = self.at {
            let elapsed: Duration = now.duration_since(at).try_into().unwrap_or_default();
            self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        }
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Requests of one connection: 100 at once, 5 a second after that.
pub fn requests() -> Bucket {
    Bucket::new(100, 5)
}

/// Window changes of one connection: 300 at once, 50 a second after that.
pub fn window_changes() -> Bucket {
    Bucket::new(300, 50)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::clock::tests::FakeClock;

    #[test]
    fn sizes_beyond_the_limit_are_clamped() {
        assert_eq!(clamp_pty(65535, 65535), (1000, 1000));
        assert_eq!(clamp_pty(u32::MAX, 24), (1000, 24));
        assert_eq!(clamp_pty(80, 24), (80, 24));
        assert_eq!(clamp_pty(0, 0), (0, 0));
    }

    #[test]
    fn a_burst_then_the_rate() {
        let clock = FakeClock::at("2026-01-01T00:00:00Z");
        let mut b = Bucket::new(3, 2);
        assert!((0..3).all(|_| b.take(clock.now())));
        assert!(!b.take(clock.now()));
        clock.advance(Duration::from_millis(500));
        assert!(b.take(clock.now()));
        assert!(!b.take(clock.now()));
        // Idle time refills no more than the burst.
        clock.advance(Duration::from_secs(3600));
        assert!((0..3).all(|_| b.take(clock.now())));
        assert!(!b.take(clock.now()));
    }

    #[test]
    fn a_clock_going_back_refills_nothing() {
        let clock = FakeClock::at("2026-01-01T00:01:00Z");
        let mut b = Bucket::new(1, 1);
        assert!(b.take(clock.now()));
        let earlier = FakeClock::at("2026-01-01T00:00:00Z");
        assert!(!b.take(earlier.now()));
    }
}
