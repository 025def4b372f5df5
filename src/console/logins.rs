//! Console logins: a random token in a cookie, known here only by its hash, ended after the idle
//! timeout. WebAuthn ceremonies waiting for the browser's answer live here too, for two minutes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::policy::ReviewerName;
use crate::secrets::Secret;
use crate::sync::lock;

/// The login cookie. `__Host-` makes the browser keep it to this origin, over HTTPS, path `/`.
pub const COOKIE: &str = "__Host-stapsteen";

/// What a cookie's token is worth now.
#[derive(Debug, PartialEq, Eq)]
pub enum Check {
    Valid(ReviewerName),
    /// It was valid but sat idle too long; it is gone now.
    Expired(ReviewerName),
    /// Its reviewer may no longer log in (no longer in the policy); it is gone now.
    Removed(ReviewerName),
    Unknown,
}

struct Login {
    reviewer: ReviewerName,
    last: Timestamp,
}

pub struct Logins {
    clock: Arc<dyn Clock>,
    idle: SignedDuration,
    by_hash: Mutex<HashMap<[u8; 32], Login>>,
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// 32 random bytes, base64url: a login token or a ceremony id.
pub fn random_token() -> Secret<String> {
    let bytes: [u8; 32] = rand::random();
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

impl Logins {
    pub fn new(clock: Arc<dyn Clock>, idle: Duration) -> Self {
        Self {
            clock,
            idle: SignedDuration::try_from(idle).unwrap_or(SignedDuration::from_mins(15)),
            by_hash: Mutex::default(),
        }
    }

    /// Starts a login; the token goes to the browser and nowhere else.
    pub fn create(&self, reviewer: ReviewerName) -> Secret<String> {
        let token = random_token();
        let now = self.clock.now();
        let mut logins = lock(&self.by_hash);
        logins.retain(|_, l| now.duration_since(l.last) <= self.idle);
        logins.insert(
            hash(token.expose()),
            Login {
                reviewer,
                last: now,
            },
        );
        token
    }

    /// Checks a token and, when valid, counts this request as activity. `allowed` says whether
    /// its reviewer may still log in.
    pub fn check(&self, token: &str, allowed: impl Fn(&ReviewerName) -> bool) -> Check {
        let now = self.clock.now();
        let key = hash(token);
        let mut logins = lock(&self.by_hash);
        let Some(login) = logins.get_mut(&key) else {
            return Check::Unknown;
        };
        if now.duration_since(login.last) > self.idle {
            let gone = login.reviewer.clone();
            logins.remove(&key);
            return Check::Expired(gone);
        }
        if !allowed(&login.reviewer) {
            let gone = login.reviewer.clone();
            logins.remove(&key);
            return Check::Removed(gone);
        }
        login.last = now;
        Check::Valid(login.reviewer.clone())
    }

    pub fn end(&self, token: &str) -> Option<ReviewerName> {
        lock(&self.by_hash).remove(&hash(token)).map(|l| l.reviewer)
    }
}

/// WebAuthn states waiting for the browser, by a random ceremony id; each is taken once.
pub struct Pending<T> {
    clock: Arc<dyn Clock>,
    inner: Mutex<HashMap<String, (Timestamp, T)>>,
}

/// How long a browser has to answer a WebAuthn challenge.
const CEREMONY: SignedDuration = SignedDuration::from_mins(2);
/// Ceremonies waiting at once; more are refused, so that nobody can fill the memory.
const MAX_PENDING: usize = 256;

impl<T> Pending<T> {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            inner: Mutex::default(),
        }
    }

    /// Stores a state; `None` when too many are waiting.
    pub fn put(&self, state: T) -> Option<String> {
        let now = self.clock.now();
        let mut inner = lock(&self.inner);
        inner.retain(|_, (at, _)| now.duration_since(*at) <= CEREMONY);
        if inner.len() >= MAX_PENDING {
            return None;
        }
        let id = random_token().expose().clone();
        inner.insert(id.clone(), (now, state));
        Some(id)
    }

    pub fn take(&self, id: &str) -> Option<T> {
        let now = self.clock.now();
        lock(&self.inner)
            .remove(id)
            .filter(|(at, _)| now.duration_since(*at) <= CEREMONY)
            .map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::clock::tests::FakeClock;

    #[test]
    fn logins_end_after_the_idle_timeout_and_activity_keeps_them() {
        let clock = Arc::new(FakeClock::at("2026-11-23T10:00:00Z"));
        let logins = Logins::new(clock.clone(), Duration::from_secs(15 * 60));
        let name = ReviewerName::new("c.visser").unwrap();
        let token = logins.create(name.clone());
        let any = |_: &ReviewerName| true;
        clock.advance(Duration::from_secs(14 * 60));
        assert_eq!(
            logins.check(token.expose(), any),
            Check::Valid(name.clone())
        );
        clock.advance(Duration::from_secs(14 * 60));
        assert_eq!(
            logins.check(token.expose(), any),
            Check::Valid(name.clone())
        );
        clock.advance(Duration::from_secs(15 * 60 + 1));
        assert_eq!(
            logins.check(token.expose(), any),
            Check::Expired(name.clone())
        );
        assert_eq!(logins.check(token.expose(), any), Check::Unknown);
        assert_eq!(logins.check("forged", any), Check::Unknown);

        let token = logins.create(name.clone());
        assert_eq!(
            logins.check(token.expose(), |_| false),
            Check::Removed(name)
        );
        assert_eq!(logins.check(token.expose(), any), Check::Unknown);
    }

    #[test]
    fn ceremonies_are_taken_once_and_expire() {
        let clock = Arc::new(FakeClock::at("2026-11-23T10:00:00Z"));
        let pending = Pending::new(clock.clone());
        let a = pending.put(1).unwrap();
        assert_eq!(pending.take(&a), Some(1));
        assert_eq!(pending.take(&a), None);
        let b = pending.put(2).unwrap();
        clock.advance(Duration::from_secs(121));
        assert_eq!(pending.take(&b), None);
    }
}
