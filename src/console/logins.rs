//! Console logins: a random token in a cookie, known here only by its hash, ended after the idle
//! timeout. WebAuthn ceremonies waiting for the browser's answer live here too, for two minutes:
//! at most [`MAX_PENDING`] in all and [`MAX_PENDING_PER_SOURCE`] from one source (further ones
//! are refused), and at most [`MAX_PENDING_PER_REVIEWER`] for one reviewer from one source (a
//! further one ends that reviewer's oldest from the same source: naming a reviewer from elsewhere
//! neither locks them out nor cancels the login they have in progress).

use std::collections::HashMap;
use std::net::IpAddr;
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
        self.check_at(token, allowed, true)
    }

    /// Checks a token without counting as activity (a live view that runs by itself), and
    /// without ending it: the next request's [`Logins::check`] does that and says so.
    pub fn peek(&self, token: &str, allowed: impl Fn(&ReviewerName) -> bool) -> Check {
        self.check_at(token, allowed, false)
    }

    fn check_at(&self, token: &str, allowed: impl Fn(&ReviewerName) -> bool, touch: bool) -> Check {
        let now = self.clock.now();
        let key = hash(token);
        let mut logins = lock(&self.by_hash);
        let Some(login) = logins.get_mut(&key) else {
            return Check::Unknown;
        };
        if now.duration_since(login.last) > self.idle {
            let gone = login.reviewer.clone();
            if touch {
                logins.remove(&key);
            }
            return Check::Expired(gone);
        }
        if !allowed(&login.reviewer) {
            let gone = login.reviewer.clone();
            if touch {
                logins.remove(&key);
            }
            return Check::Removed(gone);
        }
        if touch {
            login.last = now;
        }
        Check::Valid(login.reviewer.clone())
    }

    pub fn end(&self, token: &str) -> Option<ReviewerName> {
        lock(&self.by_hash).remove(&hash(token)).map(|l| l.reviewer)
    }
}

/// WebAuthn states waiting for the browser, by a random ceremony id; each is taken once.
pub struct Pending<T> {
    clock: Arc<dyn Clock>,
    inner: Mutex<HashMap<String, Ceremony<T>>>,
}

struct Ceremony<T> {
    at: Timestamp,
    reviewer: ReviewerName,
    source: IpAddr,
    state: T,
}

/// Why a ceremony was not started.
#[derive(Debug, PartialEq, Eq)]
pub enum Busy {
    /// Too many are waiting in all.
    Total,
    /// Too many are waiting from this source.
    Source,
}

/// How long a browser has to answer a WebAuthn challenge.
const CEREMONY: SignedDuration = SignedDuration::from_mins(2);
/// Ceremonies waiting at once; more are refused, so that nobody can fill the memory.
pub const MAX_PENDING: usize = 256;
/// Ceremonies waiting from one source (IPv4 address or IPv6 /64); more are refused, so that one
/// source cannot take all of them.
pub const MAX_PENDING_PER_SOURCE: usize = 8;
/// Ceremonies waiting for one reviewer from one source; a further one ends the oldest of them.
/// Another source's ceremonies for the same reviewer are never ended by it: else anyone could
/// cancel a reviewer's login in progress by starting a few in their name.
pub const MAX_PENDING_PER_REVIEWER: usize = 4;

impl<T> Pending<T> {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            inner: Mutex::default(),
        }
    }

    /// Stores the state of a ceremony for `reviewer` started from `source`; its id, or why not.
    pub fn put(&self, reviewer: &ReviewerName, source: IpAddr, state: T) -> Result<String, Busy> {
        let now = self.clock.now();
        let source = crate::net::source_of(source);
        let mut inner = lock(&self.inner);
        inner.retain(|_, c| now.duration_since(c.at) <= CEREMONY);
        if inner.values().filter(|c| c.source == source).count() >= MAX_PENDING_PER_SOURCE {
            return Err(Busy::Source);
        }
        let theirs = inner
            .iter()
            .filter(|(_, c)| &c.reviewer == reviewer && c.source == source);
        if theirs.clone().count() >= MAX_PENDING_PER_REVIEWER
            && let Some(oldest) = theirs.min_by_key(|(_, c)| c.at).map(|(id, _)| id.clone())
        {
            inner.remove(&oldest);
        }
        if inner.len() >= MAX_PENDING {
            return Err(Busy::Total);
        }
        let id = random_token().expose().clone();
        inner.insert(
            id.clone(),
            Ceremony {
                at: now,
                reviewer: reviewer.clone(),
                source,
                state,
            },
        );
        Ok(id)
    }

    pub fn take(&self, id: &str) -> Option<T> {
        let now = self.clock.now();
        lock(&self.inner)
            .remove(id)
            .filter(|c| now.duration_since(c.at) <= CEREMONY)
            .map(|c| c.state)
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
    fn a_live_view_does_not_keep_a_login() {
        let clock = Arc::new(FakeClock::at("2026-11-23T10:00:00Z"));
        let logins = Logins::new(clock.clone(), Duration::from_secs(15 * 60));
        let name = ReviewerName::new("c.visser").unwrap();
        let token = logins.create(name.clone());
        let any = |_: &ReviewerName| true;
        // Watching every 200 ms for 15 minutes is no activity.
        for _ in 0..(15 * 60 * 5) {
            clock.advance(Duration::from_millis(200));
            assert_eq!(logins.peek(token.expose(), any), Check::Valid(name.clone()));
        }
        clock.advance(Duration::from_millis(200));
        assert_eq!(
            logins.peek(token.expose(), any),
            Check::Expired(name.clone())
        );
        // The next request ends it.
        assert_eq!(logins.check(token.expose(), any), Check::Expired(name));
        assert_eq!(logins.check(token.expose(), any), Check::Unknown);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ceremonies_are_taken_once_and_expire() {
        let clock = Arc::new(FakeClock::at("2026-11-23T10:00:00Z"));
        let pending = Pending::new(clock.clone());
        let r = ReviewerName::new("c.visser").unwrap();
        let a = pending.put(&r, ip("10.0.0.1"), 1).unwrap();
        assert_eq!(pending.take(&a), Some(1));
        assert_eq!(pending.take(&a), None);
        let b = pending.put(&r, ip("10.0.0.1"), 2).unwrap();
        clock.advance(Duration::from_secs(121));
        assert_eq!(pending.take(&b), None);
    }

    #[test]
    fn one_source_gets_its_share_of_ceremonies() {
        let clock = Arc::new(FakeClock::at("2026-11-23T10:00:00Z"));
        let pending = Pending::new(clock);
        let names: Vec<ReviewerName> = (0..MAX_PENDING_PER_SOURCE + 1)
            .map(|i| ReviewerName::new(&format!("r{i}")).unwrap())
            .collect();
        for n in &names[..MAX_PENDING_PER_SOURCE] {
            pending.put(n, ip("10.0.0.1"), ()).unwrap();
        }
        let last = &names[MAX_PENDING_PER_SOURCE];
        assert_eq!(pending.put(last, ip("10.0.0.1"), ()), Err(Busy::Source));
        assert!(pending.put(last, ip("10.0.0.2"), ()).is_ok());
    }

    #[test]
    fn a_reviewer_named_from_elsewhere_is_not_locked_out() {
        let clock = Arc::new(FakeClock::at("2026-11-23T10:00:00Z"));
        let pending = Pending::new(clock.clone());
        let r = ReviewerName::new("c.visser").unwrap();
        let hostile: Vec<String> = (0..MAX_PENDING_PER_REVIEWER)
            .map(|i| {
                clock.advance(Duration::from_secs(1));
                pending.put(&r, ip(&format!("10.0.0.{i}")), i).unwrap()
            })
            .collect();
        clock.advance(Duration::from_secs(1));
        let real = pending.put(&r, ip("10.9.9.9"), 99).unwrap();
        // Ceremonies from other sources neither refuse the reviewer's nor make way for it.
        assert_eq!(pending.take(&hostile[0]), Some(0));
        assert_eq!(pending.take(&real), Some(99));
        assert_eq!(lock(&pending.inner).len(), MAX_PENDING_PER_REVIEWER - 1);
    }

    #[test]
    fn naming_a_reviewer_does_not_cancel_their_login_in_progress() {
        let clock = Arc::new(FakeClock::at("2026-11-23T10:00:00Z"));
        let pending = Pending::new(clock.clone());
        let r = ReviewerName::new("c.visser").unwrap();
        let real = pending.put(&r, ip("10.9.9.9"), 99).unwrap();
        // One hostile source starts logins in the reviewer's name while the reviewer touches
        // the key: each beyond its share ends its own oldest, never the reviewer's.
        let hostile: Vec<String> = (0..3 * MAX_PENDING_PER_REVIEWER)
            .map(|i| {
                clock.advance(Duration::from_millis(100));
                pending.put(&r, ip("10.0.0.1"), i).unwrap()
            })
            .collect();
        assert_eq!(pending.take(&real), Some(99));
        // The hostile source holds its last few, no more.
        let kept = hostile.iter().filter(|h| pending.take(h).is_some()).count();
        assert_eq!(kept, MAX_PENDING_PER_REVIEWER);
        // The reviewer's own second try from the same place ends their first, as before.
        let first = pending.put(&r, ip("10.9.9.9"), 1).unwrap();
        for i in 0..MAX_PENDING_PER_REVIEWER {
            clock.advance(Duration::from_millis(100));
            pending.put(&r, ip("10.9.9.9"), i + 2).unwrap();
        }
        assert_eq!(pending.take(&first), None);
    }

    #[test]
    fn the_total_is_bounded() {
        let clock = Arc::new(FakeClock::at("2026-11-23T10:00:00Z"));
        let pending = Pending::new(clock);
        for i in 0..MAX_PENDING {
            let r = ReviewerName::new(&format!("r{i}")).unwrap();
            pending
                .put(&r, ip(&format!("10.{}.{}.1", i / 256, i % 256)), ())
                .unwrap();
        }
        let r = ReviewerName::new("late").unwrap();
        assert_eq!(pending.put(&r, ip("10.200.0.1"), ()), Err(Busy::Total));
    }
}
