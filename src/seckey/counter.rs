//! The last signature counter of each security key, kept in the state directory so that a
//! cloned key shows itself: its counter falls behind the original's.
//!
//! Invariants: a stored counter never goes down, and the file is replaced atomically (written
//! aside, synced, renamed), so a crash leaves the old or the new file, never a torn one. A key
//! whose counter went back is quarantined: refused from then on, whatever counter it shows, so
//! a copy that jumps ahead cannot keep the access; only marking the key `counter-unchecked` in
//! the policy (visible, and warned about) lets it in again.
//!
//! One key signing for several connections at once (an admin opening sessions together) hands
//! out counters that may reach the bastion out of order. A counter a little below the highest
//! (at most [`LATE_WINDOW`] behind, within [`LATE_SECS`] of the highest arriving, and not seen
//! before) is taken as such a late arrival; anything else that does not rise is a regression.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Whether a key's counter is held to rising, from its policy entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterCheck {
    /// The default: a counter that does not rise refuses the login.
    Checked,
    /// `counter-unchecked`: the key reports a counter that does not count (some authenticators
    /// do); a counter that does not rise is audited only.
    Unchecked,
}

/// How far below the highest counter a late arrival may be.
pub const LATE_WINDOW: u32 = 16;
/// How long after the highest counter arrived a lower one may still arrive late.
pub const LATE_SECS: i64 = 10;

/// What a login's counter says about the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterVerdict {
    /// The first use, or higher than ever before.
    Rose,
    /// A little below the highest, arriving just after it: concurrent logins with one key.
    Late { last: u32 },
    /// The key reports 0 and never reported more: it keeps no counter. Audited only.
    Zero,
    /// Not higher than the `last` one seen: a possible clone. Refused, and the key
    /// quarantined, unless policy marks the key `counter-unchecked`.
    Regression { last: u32, refuse: bool },
    /// The key's counter went back before: refused until the policy marks it
    /// `counter-unchecked`.
    Quarantined { last: u32 },
}

/// What is kept of one key.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyState {
    /// The highest counter seen.
    pub counter: u32,
    /// The counter went back once: a possible copy of the key.
    #[serde(default)]
    pub quarantined: bool,
    /// When the highest counter arrived (Unix seconds).
    #[serde(default)]
    pub at: i64,
    /// Counters below the highest that were taken as late arrivals, so none is taken twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub late: Vec<u32>,
}

/// The decision on a login's `counter` at `now` (Unix seconds), given what is stored for the key.
pub fn judge(
    stored: Option<&KeyState>,
    counter: u32,
    check: CounterCheck,
    now: i64,
) -> CounterVerdict {
    let last = stored.map(|s| s.counter);
    match stored {
        Some(s) if s.quarantined && check == CounterCheck::Checked => {
            CounterVerdict::Quarantined { last: s.counter }
        }
        _ if counter == 0 && last.unwrap_or(0) == 0 => CounterVerdict::Zero,
        Some(s)
            if counter < s.counter
                && s.counter - counter <= LATE_WINDOW
                && (0..=LATE_SECS).contains(&(now - s.at))
                && !s.late.contains(&counter) =>
        {
            CounterVerdict::Late { last: s.counter }
        }
        Some(s) if counter <= s.counter => CounterVerdict::Regression {
            last: s.counter,
            refuse: check == CounterCheck::Checked,
        },
        _ => CounterVerdict::Rose,
    }
}

/// What is stored after `verdict` on `counter` at `now`: never lower, quarantined after a
/// refused regression, released once the policy marks the key `counter-unchecked`.
fn next_state(
    stored: Option<&KeyState>,
    counter: u32,
    verdict: CounterVerdict,
    now: i64,
) -> KeyState {
    let mut next = stored.cloned().unwrap_or_default();
    match verdict {
        CounterVerdict::Rose => {
            next.counter = counter;
            next.at = now;
            next.quarantined = false;
            next.late.retain(|c| next.counter - c <= LATE_WINDOW);
        }
        CounterVerdict::Zero => next.quarantined = false,
        CounterVerdict::Late { .. } => next.late.push(counter),
        CounterVerdict::Regression { refuse, .. } => next.quarantined = refuse,
        CounterVerdict::Quarantined { .. } => {}
    }
    next
}

#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    #[error("cannot read key counters {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key counters {path} are not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write key counters {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Counters by key fingerprint (`SHA256:...`), in one JSON file.
pub struct CounterStore {
    path: PathBuf,
    counters: Mutex<BTreeMap<String, KeyState>>,
}

impl CounterStore {
    /// Opens `path`; a missing file is an empty store, an unreadable one an error (the daemon
    /// does not start without the counters it had).
    pub fn open(path: &Path) -> Result<Self, CounterError> {
        let counters = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| CounterError::Parse {
                path: path.to_owned(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(CounterError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Ok(Self {
            path: path.to_owned(),
            counters: Mutex::new(counters),
        })
    }

    /// Judges `counter` for the key and stores it when it is higher than the last one. A store
    /// that cannot be written is an error: the caller refuses the login.
    pub fn record(
        &self,
        fingerprint: &str,
        counter: u32,
        check: CounterCheck,
        now: i64,
    ) -> Result<CounterVerdict, CounterError> {
        let mut counters = crate::sync::lock(&self.counters);
        let stored = counters.get(fingerprint);
        let verdict = judge(stored, counter, check, now);
        let state = next_state(stored, counter, verdict, now);
        if stored != Some(&state) {
            let mut next = counters.clone();
            next.insert(fingerprint.to_owned(), state);
            self.write(&next).map_err(|source| CounterError::Write {
                path: self.path.clone(),
                source,
            })?;
            *counters = next;
        }
        Ok(verdict)
    }

    fn write(&self, counters: &BTreeMap<String, KeyState>) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        serde_json::to_writer_pretty(&mut tmp, counters)?;
        tmp.write_all(b"\n")?;
        tmp.as_file().sync_all()?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        std::fs::File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CounterCheck::{Checked, Unchecked};
    use CounterVerdict::{Late, Quarantined, Regression, Rose, Zero};

    const T: i64 = 1_000_000;

    fn at(counter: u32) -> Option<KeyState> {
        Some(KeyState {
            counter,
            at: T,
            ..KeyState::default()
        })
    }

    #[test]
    fn counter_decisions() {
        let j = |s: Option<KeyState>, c, check| judge(s.as_ref(), c, check, T + 60);
        assert_eq!(j(None, 5, Checked), Rose);
        assert_eq!(j(at(5), 6, Checked), Rose);
        let refused = |last| Regression { last, refuse: true };
        assert_eq!(j(at(5), 5, Checked), refused(5));
        assert_eq!(j(at(5), 4, Checked), refused(5));
        assert_eq!(
            j(at(5), 5, Unchecked),
            Regression {
                last: 5,
                refuse: false
            }
        );
        // A key that always says 0 keeps no counter; one that counted and says 0 went back.
        assert_eq!(j(None, 0, Checked), Zero);
        assert_eq!(j(at(0), 0, Checked), Zero);
        assert_eq!(j(at(9), 0, Checked), refused(9));
        assert_eq!(j(at(0), 1, Checked), Rose);
        // Once quarantined, a higher counter does not help; the policy's mark does.
        let q = Some(KeyState {
            counter: 9,
            quarantined: true,
            ..KeyState::default()
        });
        assert_eq!(j(q.clone(), 1000, Checked), Quarantined { last: 9 });
        assert_eq!(j(q.clone(), 1000, Unchecked), Rose);
        assert!(next_state(at(9).as_ref(), 3, refused(9), T).quarantined);
        assert_eq!(next_state(at(9).as_ref(), 3, refused(9), T).counter, 9);
        let released = next_state(q.as_ref(), 1000, Rose, T);
        assert_eq!((released.counter, released.quarantined), (1000, false));
    }

    #[test]
    fn concurrent_logins_arrive_out_of_order() {
        let s = at(20);
        // Just after 20 arrived, 17 is a late arrival of a concurrent login...
        assert_eq!(judge(s.as_ref(), 17, Checked, T + 2), Late { last: 20 });
        let after = next_state(s.as_ref(), 17, Late { last: 20 }, T + 2);
        // ...once only,
        assert_eq!(
            judge(Some(&after), 17, Checked, T + 3),
            Regression {
                last: 20,
                refuse: true
            }
        );
        assert_eq!(judge(Some(&after), 18, Checked, T + 3), Late { last: 20 });
        // not the highest again, not far behind, not long after.
        assert!(matches!(
            judge(s.as_ref(), 20, Checked, T + 1),
            Regression { .. }
        ));
        assert!(matches!(
            judge(s.as_ref(), 20 - LATE_WINDOW - 1, Checked, T + 1),
            Regression { .. }
        ));
        assert!(matches!(
            judge(s.as_ref(), 19, Checked, T + LATE_SECS + 1),
            Regression { .. }
        ));
    }

    #[test]
    fn store_survives_reopen_and_quarantines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.json");
        let store = CounterStore::open(&path).unwrap();
        assert_eq!(store.record("SHA256:a", 10, Checked, T).unwrap(), Rose);
        assert_eq!(
            store.record("SHA256:a", 3, Unchecked, T + 100).unwrap(),
            Regression {
                last: 10,
                refuse: false
            }
        );
        drop(store);
        let store = CounterStore::open(&path).unwrap();
        assert_eq!(
            store.record("SHA256:a", 10, Checked, T + 100).unwrap(),
            Regression {
                last: 10,
                refuse: true
            }
        );
        assert_eq!(store.record("SHA256:b", 1, Checked, T).unwrap(), Rose);
        // A copy that jumps ahead gets nothing: the key is quarantined, also after a restart.
        assert_eq!(
            store
                .record("SHA256:a", 4_000_000, Checked, T + 100)
                .unwrap(),
            Quarantined { last: 10 }
        );
        drop(store);
        let store = CounterStore::open(&path).unwrap();
        assert_eq!(
            store
                .record("SHA256:a", 4_000_001, Checked, T + 100)
                .unwrap(),
            Quarantined { last: 10 }
        );
        assert_eq!(
            store
                .record("SHA256:a", 4_000_002, Unchecked, T + 100)
                .unwrap(),
            Rose
        );
        assert_eq!(
            store
                .record("SHA256:a", 4_000_003, Checked, T + 100)
                .unwrap(),
            Rose
        );
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(
            CounterStore::open(&path),
            Err(CounterError::Parse { .. })
        ));
    }
}
