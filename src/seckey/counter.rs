//! The last signature counter of each security key, kept in the state directory so that a
//! cloned key shows itself: its counter falls behind the original's.
//!
//! Invariant: a stored counter never goes down, and the file is replaced atomically (written
//! aside, synced, renamed), so a crash leaves the old or the new file, never a torn one.

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
    /// Not higher than the `last` one seen: a possible clone. Refused unless policy marks the
    /// key `counter-unchecked`.
    Regression { last: u32, refuse: bool },
}

/// The decision on a login's `counter`, given the `last` one stored for the key.
pub fn judge(last: Option<u32>, counter: u32, check: CounterCheck) -> CounterVerdict {
    match last {
        _ if counter == 0 && last.unwrap_or(0) == 0 => CounterVerdict::Zero,
        Some(last) if counter <= last => CounterVerdict::Regression {
            last,
            refuse: check == CounterCheck::Checked,
        },
        _ => CounterVerdict::Rose,
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
    counters: Mutex<BTreeMap<String, u32>>,
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
        let last = counters.get(fingerprint).copied();
        let verdict = judge(last, counter, check);
        if last.is_none_or(|l| counter > l) {
            let mut next = counters.clone();
            next.insert(fingerprint.to_owned(), counter);
            self.write(&next).map_err(|source| CounterError::Write {
                path: self.path.clone(),
                source,
            })?;
            *counters = next;
        }
        Ok(verdict)
    }

    fn write(&self, counters: &BTreeMap<String, u32>) -> std::io::Result<()> {
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
    use CounterVerdict::{Regression, Rose, Zero};

    #[test]
    fn counter_decisions() {
        assert_eq!(judge(None, 5, Checked), Rose);
        assert_eq!(judge(Some(5), 6, Checked), Rose);
        assert_eq!(
            judge(Some(5), 5, Checked),
            Regression {
                last: 5,
                refuse: true
            }
        );
        assert_eq!(
            judge(Some(5), 4, Checked),
            Regression {
                last: 5,
                refuse: true
            }
        );
        assert_eq!(
            judge(Some(5), 5, Unchecked),
            Regression {
                last: 5,
                refuse: false
            }
        );
        // A key that always says 0 keeps no counter; one that counted and says 0 went back.
        assert_eq!(judge(None, 0, Checked), Zero);
        assert_eq!(judge(Some(0), 0, Checked), Zero);
        assert_eq!(
            judge(Some(9), 0, Checked),
            Regression {
                last: 9,
                refuse: true
            }
        );
        assert_eq!(judge(Some(0), 1, Checked), Rose);
    }

    #[test]
    fn store_survives_reopen_and_never_goes_down() {
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
        assert_eq!(store.record("SHA256:a", 11, Checked).unwrap(), Rose);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"SHA256:a\": 11"), "{text}");
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(
            CounterStore::open(&path),
            Err(CounterError::Parse { .. })
        ));
    }
}
