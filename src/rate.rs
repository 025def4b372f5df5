//! Token buckets: how often something may happen, with a burst allowed at once.
//!
//! Invariant: the time is always given by the caller (from [`crate::clock::Clock`]), so tests
//! drive it; a clock going backwards refills nothing.

use std::time::Duration;

use jiff::Timestamp;

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

    /// `per_minute` at once, and `per_minute` a minute after that.
    pub fn per_minute(per_minute: u32) -> Self {
        Self {
            burst: f64::from(per_minute),
            per_second: f64::from(per_minute) / 60.0,
            tokens: f64::from(per_minute),
            at: None,
        }
    }

    /// Takes one token at `now`; false when there is none.
    pub fn take(&mut self, now: Timestamp) -> bool {
        if let Some(at) = self.at {
            let elapsed: Duration = now.duration_since(at).try_into().unwrap_or_default();
            self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        }
        self.at = Some(self.at.map_or(now, |at| at.max(now)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::clock::tests::FakeClock;

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

    #[test]
    fn a_clock_going_back_then_forward_refills_from_the_latest_time() {
        let late = FakeClock::at("2026-01-01T00:01:00Z");
        let mut b = Bucket::new(1, 1);
        assert!(b.take(late.now()));
        assert!(!b.take(FakeClock::at("2026-01-01T00:00:00Z").now()));
        // Back at the later time: no time has passed since the last take.
        assert!(!b.take(late.now()));
    }
}
