//! Recording space, so that one admin cannot fill the disk for everyone: bytes per session,
//! bytes per admin per day (Europe/Amsterdam), and the free space the recordings' file system
//! must keep, which recordings may not take from the audit chain and the journal; and session
//! starts per admin per minute, since each start and end is an entry in the audit chain, whose
//! space every admin shares (a target that refuses at once would otherwise let one admin write
//! a hundred a second).
//!
//! Invariants: a recorded session is admitted only while the admin's starts are under their
//! rate, the admin's day is under quota and the free space is above the floor; every byte recorded is charged, and the first charge past a
//! limit (or past the floor, looked at every [`SPACE_CHECK_BYTES`]) ends that session only. The
//! day's totals live in memory: a restart starts the day afresh.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use jiff::civil::Date;

use crate::clock::Clock;
use crate::config::RecordingConfig;
use crate::rate::Bucket;
use crate::sync::lock;

/// A session's free-space check comes after this many recorded bytes (and at its start).
const SPACE_CHECK_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuotaError {
    #[error("recording quota reached: {max} bytes, the most one session may record")]
    Session { max: u64 },
    #[error("recording quota reached: {max} bytes today, the most one admin may record in a day")]
    Day { max: u64 },
    #[error(
        "the recordings area is full: {free} bytes free, below the {min} kept for the audit trail"
    )]
    LowSpace { free: u64, min: u64 },
    #[error("the recordings area's free space cannot be read: {0}")]
    Unknown(String),
    #[error("too many sessions started: at most {per_minute} a minute per admin")]
    Starts { per_minute: u32 },
}

impl QuotaError {
    /// `session_bytes`, `admin_day_bytes`, `free_space` or `session_starts`: the `limit` detail of
    /// `RECORDING_QUOTA`.
    pub fn limit(&self) -> &'static str {
        match self {
            QuotaError::Session { .. } => "session_bytes",
            QuotaError::Day { .. } => "admin_day_bytes",
            QuotaError::LowSpace { .. } | QuotaError::Unknown(_) => "free_space",
            QuotaError::Starts { .. } => "session_starts",
        }
    }
}

/// Today (Europe/Amsterdam) with its bounds, and bytes recorded per admin on the day named.
struct Days {
    today: Date,
    from: Timestamp,
    until: Timestamp,
    bytes: HashMap<String, (Date, u64)>,
}

impl Days {
    /// The day `now` falls on; bounds that cannot be computed (the ends of time) are empty, so
    /// that the next charge looks again.
    fn at(now: Timestamp, bytes: HashMap<String, (Date, u64)>) -> Self {
        let zoned = now.to_zoned(crate::policy::policy_zone());
        let bound = |day: Result<jiff::Zoned, jiff::Error>| {
            day.and_then(|d| d.start_of_day()).map(|d| d.timestamp())
        };
        let (from, until) = match (bound(Ok(zoned.clone())), bound(zoned.tomorrow())) {
            (Ok(from), Ok(until)) => (from, until),
            _ => (now, now),
        };
        Self {
            today: zoned.date(),
            from,
            until,
            bytes,
        }
    }
}

pub struct RecordingQuota {
    per_session: u64,
    per_day: u64,
    min_free: u64,
    dir: PathBuf,
    clock: Arc<dyn Clock>,
    days: Mutex<Days>,
    starts_per_minute: u32,
    /// Session starts per admin (admins are named by the policy: a bounded set).
    starts: Mutex<HashMap<String, Bucket>>,
}

impl RecordingQuota {
    pub fn new(config: &RecordingConfig, dir: PathBuf, clock: Arc<dyn Clock>) -> Self {
        Self {
            per_session: config.max_bytes_per_session,
            per_day: config.max_bytes_per_admin_per_day,
            min_free: config.min_free_bytes,
            dir,
            clock,
            days: Mutex::new(Days::at(Timestamp::MIN, HashMap::new())),
            starts_per_minute: config.max_session_starts_per_minute.get(),
            starts: Mutex::default(),
        }
    }

    /// Adds `bytes` to `admin`'s day; `Err` once the day's total passes the quota.
    fn add(&self, admin: &str, bytes: u64) -> Result<(), QuotaError> {
        let now = self.clock.now();
        let mut days = lock(&self.days);
        // Called for every recorded chunk: the day's bounds are looked up in the zone only when
        // the clock leaves them, and an admin's entry is allocated once a day.
        if !(days.from <= now && now < days.until) {
            *days = Days::at(now, std::mem::take(&mut days.bytes));
        }
        let days = &mut *days;
        let today = days.today;
        let total = match days.bytes.get_mut(admin) {
            Some(day) => {
                if day.0 != today {
                    *day = (today, 0);
                }
                day.1 = day.1.saturating_add(bytes);
                day.1
            }
            None => {
                days.bytes.insert(admin.to_owned(), (today, bytes));
                bytes
            }
        };
        if total >= self.per_day {
            return Err(QuotaError::Day { max: self.per_day });
        }
        Ok(())
    }

    fn space(&self) -> Result<(), QuotaError> {
        let st = rustix::fs::statvfs(&self.dir).map_err(|e| QuotaError::Unknown(e.to_string()))?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if free < self.min_free {
            return Err(QuotaError::LowSpace {
                free,
                min: self.min_free,
            });
        }
        Ok(())
    }

    /// Whether `admin` may start a recorded session now; a start admitted is counted.
    pub fn admit(&self, admin: &str) -> Result<(), QuotaError> {
        self.add(admin, 0)?;
        self.space()?;
        let now = self.clock.now();
        let mut starts = lock(&self.starts);
        let per_minute = self.starts_per_minute;
        let bucket = starts
            .entry(admin.to_owned())
            .or_insert_with(|| Bucket::per_minute(per_minute));
        if !bucket.take(now) {
            return Err(QuotaError::Starts { per_minute });
        }
        Ok(())
    }

    /// The account of one session's recording.
    pub fn charge(self: &Arc<Self>, admin: &str) -> Charge {
        Charge {
            quota: self.clone(),
            admin: admin.to_owned(),
            recorded: 0,
            unchecked: 0,
        }
    }
}

/// What one session has recorded; each write is charged to it and to its admin's day.
pub struct Charge {
    quota: Arc<RecordingQuota>,
    admin: String,
    recorded: u64,
    /// Bytes since the last free-space check.
    unchecked: u64,
}

impl Charge {
    pub fn admin(&self) -> &str {
        &self.admin
    }

    /// Charges `bytes` just written; `Err` ends the session.
    pub fn add(&mut self, bytes: u64) -> Result<(), QuotaError> {
        self.recorded = self.recorded.saturating_add(bytes);
        self.quota.add(&self.admin, bytes)?;
        if self.recorded >= self.quota.per_session {
            return Err(QuotaError::Session {
                max: self.quota.per_session,
            });
        }
        self.unchecked += bytes;
        if self.unchecked >= SPACE_CHECK_BYTES {
            self.unchecked = 0;
            self.quota.space()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(
        dir: &std::path::Path,
        per_session: u64,
        per_day: u64,
        min_free: u64,
    ) -> Arc<RecordingQuota> {
        let config = RecordingConfig {
            max_bytes_per_session: per_session,
            max_bytes_per_admin_per_day: per_day,
            min_free_bytes: min_free,
            ..RecordingConfig::default()
        };
        Arc::new(RecordingQuota::new(
            &config,
            dir.to_owned(),
            Arc::new(crate::clock::SystemClock),
        ))
    }

    #[test]
    fn a_session_and_a_day_are_limited_per_admin() {
        let dir = tempfile::tempdir().unwrap();
        let q = quota(dir.path(), 100, 250, 0);
        let mut a = q.charge("alice");
        assert_eq!(a.add(99), Ok(()));
        assert_eq!(a.add(1), Err(QuotaError::Session { max: 100 }));
        let mut b = q.charge("alice");
        assert_eq!(b.add(90), Ok(()));
        assert_eq!(b.add(60), Err(QuotaError::Day { max: 250 }));
        assert_eq!(q.admit("alice"), Err(QuotaError::Day { max: 250 }));
        // Another admin's day is their own.
        assert_eq!(q.admit("bob"), Ok(()));
        assert_eq!(q.charge("bob").add(99), Ok(()));
    }

    /// The day's total starts afresh at midnight in the policy zone, not in UTC.
    #[test]
    fn the_day_ends_at_midnight_in_amsterdam() {
        let dir = tempfile::tempdir().unwrap();
        // 23:30 in Amsterdam (UTC+1 in December).
        let clock = Arc::new(crate::clock::tests::FakeClock::at("2026-12-01T22:30:00Z"));
        let config = RecordingConfig {
            max_bytes_per_admin_per_day: 100,
            min_free_bytes: 0,
            ..RecordingConfig::default()
        };
        let q = Arc::new(RecordingQuota::new(
            &config,
            dir.path().to_owned(),
            clock.clone(),
        ));
        assert_eq!(q.charge("alice").add(60), Ok(()));
        clock.advance(std::time::Duration::from_secs(20 * 60));
        assert_eq!(q.charge("alice").add(40), Err(QuotaError::Day { max: 100 }));
        // 00:00:01 in Amsterdam: a new day.
        clock.advance(std::time::Duration::from_secs(10 * 60 + 1));
        assert_eq!(q.charge("alice").add(99), Ok(()));
        assert_eq!(q.charge("alice").add(1), Err(QuotaError::Day { max: 100 }));
    }

    #[test]
    fn session_starts_are_limited_per_admin_per_minute() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(crate::clock::tests::FakeClock::at("2026-12-01T10:00:00Z"));
        let config = RecordingConfig {
            max_session_starts_per_minute: std::num::NonZeroU32::new(3).unwrap(),
            min_free_bytes: 0,
            ..RecordingConfig::default()
        };
        let q = RecordingQuota::new(&config, dir.path().to_owned(), clock.clone());
        for _ in 0..3 {
            assert_eq!(q.admit("alice"), Ok(()));
        }
        assert_eq!(q.admit("alice"), Err(QuotaError::Starts { per_minute: 3 }));
        // Another admin's starts are their own.
        assert_eq!(q.admit("bob"), Ok(()));
        // One start comes back every 20 s.
        clock.advance(std::time::Duration::from_secs(20));
        assert_eq!(q.admit("alice"), Ok(()));
        assert_eq!(q.admit("alice"), Err(QuotaError::Starts { per_minute: 3 }));
    }

    #[test]
    fn low_free_space_refuses_and_ends_recordings() {
        let dir = tempfile::tempdir().unwrap();
        let q = quota(dir.path(), u64::MAX, u64::MAX, u64::MAX);
        assert!(matches!(q.admit("alice"), Err(QuotaError::LowSpace { .. })));
        let mut c = q.charge("alice");
        assert_eq!(c.add(SPACE_CHECK_BYTES - 1), Ok(()));
        assert!(matches!(c.add(1), Err(QuotaError::LowSpace { .. })));
        let q = quota(dir.path(), u64::MAX, u64::MAX, 0);
        assert_eq!(q.admit("alice"), Ok(()));
        let missing = quota(&dir.path().join("gone"), u64::MAX, u64::MAX, 0);
        assert!(matches!(
            missing.admit("alice"),
            Err(QuotaError::Unknown(_))
        ));
    }
}
