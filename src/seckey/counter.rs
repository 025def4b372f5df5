//! The last signature counter of each security key, kept in the state directory so that a
//! cloned key shows itself: its counter falls behind the original's.
//!
//! Invariants: a stored counter never goes down, and the file is replaced atomically (written
//! aside, synced, renamed), so a crash leaves the old or the new file, never a torn one. A key
//! whose counter went back is quarantined: refused from then on, whatever counter it shows, so
//! a copy that jumps ahead cannot keep the access; only marking the key `counter-unchecked` in
//! the policy (visible, and warned about) lets it in again.

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

/// What a login's counter says about the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterVerdict {
    /// The first use, or higher than ever before.
    Rose,
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyState {
    /// The highest counter seen.
    pub counter: u32,
    /// The counter went back once: a possible copy of the key.
    #[serde(default)]
    pub quarantined: bool,
}

/// The decision on a login's `counter`, given what is stored for the key.
pub fn judge(stored: Option<KeyState>, counter: u32, check: CounterCheck) -> CounterVerdict {
    let last = stored.map(|s| s.counter);
    match stored {
        Some(s) if s.quarantined && check == CounterCheck::Checked => {
            CounterVerdict::Quarantined { last: s.counter }
        }
        _ if counter == 0 && last.unwrap_or(0) == 0 => CounterVerdict::Zero,
        Some(s) if counter <= s.counter => CounterVerdict::Regression {
            last: s.counter,
            refuse: check == CounterCheck::Checked,
        },
        _ => CounterVerdict::Rose,
    }
}

/// What is stored after `verdict` on `counter`: never lower, quarantined after a refused
/// regression, released once the policy marks the key `counter-unchecked`.
fn next_state(stored: Option<KeyState>, counter: u32, verdict: CounterVerdict) -> KeyState {
    let before = stored.unwrap_or_default();
    KeyState {
        counter: before.counter.max(counter),
        quarantined: match verdict {
            CounterVerdict::Regression { refuse, .. } => refuse,
            CounterVerdict::Quarantined { .. } => true,
            CounterVerdict::Rose | CounterVerdict::Zero => false,
        },
    }
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
    ) -> Result<CounterVerdict, CounterError> {
        let mut counters = crate::sync::lock(&self.counters);
        let stored = counters.get(fingerprint).copied();
        let verdict = judge(stored, counter, check);
        let state = next_state(stored, counter, verdict);
        if stored != Some(state) {
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
    use CounterVerdict::{Quarantined, Regression, Rose, Zero};

    fn at(counter: u32) -> Option<KeyState> {
        Some(KeyState {
            counter,
            quarantined: false,
        })
    }

    #[test]
    fn counter_decisions() {
        assert_eq!(judge(None, 5, Checked), Rose);
        assert_eq!(judge(at(5), 6, Checked), Rose);
        let refused = |last| Regression { last, refuse: true };
        assert_eq!(judge(at(5), 5, Checked), refused(5));
        assert_eq!(judge(at(5), 4, Checked), refused(5));
        assert_eq!(
            judge(at(5), 5, Unchecked),
            Regression {
                last: 5,
                refuse: false
            }
        );
        // A key that always says 0 keeps no counter; one that counted and says 0 went back.
        assert_eq!(judge(None, 0, Checked), Zero);
        assert_eq!(judge(at(0), 0, Checked), Zero);
        assert_eq!(judge(at(9), 0, Checked), refused(9));
        assert_eq!(judge(at(0), 1, Checked), Rose);
        // Once quarantined, a higher counter does not help; the policy's mark does.
        let q = Some(KeyState {
            counter: 9,
            quarantined: true,
        });
        assert_eq!(judge(q, 1000, Checked), Quarantined { last: 9 });
        assert_eq!(judge(q, 1000, Unchecked), Rose);
        assert!(next_state(at(9), 3, refused(9)).quarantined);
        assert_eq!(next_state(at(9), 3, refused(9)).counter, 9);
        assert!(next_state(q, 1000, Quarantined { last: 9 }).quarantined);
        assert_eq!(
            next_state(q, 1000, Rose),
            KeyState {
                counter: 1000,
                quarantined: false
            }
        );
    }

    #[test]
    fn store_survives_reopen_and_quarantines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.json");
        let store = CounterStore::open(&path).unwrap();
        assert_eq!(store.record("SHA256:a", 10, Checked).unwrap(), Rose);
        assert_eq!(
            store.record("SHA256:a", 3, Unchecked).unwrap(),
            Regression {
                last: 10,
                refuse: false
            }
        );
        drop(store);
        let store = CounterStore::open(&path).unwrap();
        assert_eq!(
            store.record("SHA256:a", 10, Checked).unwrap(),
            Regression {
                last: 10,
                refuse: true
            }
        );
        assert_eq!(store.record("SHA256:b", 1, Checked).unwrap(), Rose);
        // A copy that jumps ahead gets nothing: the key is quarantined, also after a restart.
        assert_eq!(
            store.record("SHA256:a", 4_000_000, Checked).unwrap(),
            Quarantined { last: 10 }
        );
        drop(store);
        let store = CounterStore::open(&path).unwrap();
        assert_eq!(
            store.record("SHA256:a", 4_000_001, Checked).unwrap(),
            Quarantined { last: 4_000_000 }
        );
        assert_eq!(
            store.record("SHA256:a", 4_000_002, Unchecked).unwrap(),
            Rose
        );
        assert_eq!(store.record("SHA256:a", 4_000_003, Checked).unwrap(), Rose);
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(
            CounterStore::open(&path),
            Err(CounterError::Parse { .. })
        ));
    }
}
