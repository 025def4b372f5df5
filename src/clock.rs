//! The time seam: the daemon asks a [`Clock`] for the time, so unit tests can set it.

use jiff::Timestamp;

pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The real wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

#[cfg(test)]
pub mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::sync::lock;

    /// A clock that moves only when told.
    pub struct FakeClock(Mutex<Timestamp>);

    impl FakeClock {
        #[allow(clippy::unwrap_used)]
        pub fn at(time: &str) -> Self {
            Self(Mutex::new(time.parse().unwrap()))
        }

        #[allow(clippy::unwrap_used)]
        pub fn advance(&self, by: Duration) {
            let mut t = lock(&self.0);
            *t = t.checked_add(by).unwrap();
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Timestamp {
            *lock(&self.0)
        }
    }
}
