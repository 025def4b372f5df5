//! Reviewers' WebAuthn credentials and one-time enrolment codes, as files in the console's
//! state directory (`reviewers.json`, `enrolment.json`, both 0600, replaced atomically).
//!
//! Codes come from `stapsteen console enrol NAME` (written here) or, on an appliance without a
//! shell, from the policy (`enrolment = { sha256, until }` of a reviewer), which the console takes
//! in when it has no code of its own for that reviewer.
//!
//! Invariants: only the hash of a code is stored; a code is for one named reviewer, expires, is
//! burnt after [`MAX_TRIES`] wrong guesses, and is removed when a key is enrolled with it. A code
//! that leaves (used, burnt, expired) is remembered as spent, so a policy cannot bring it back.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{Passkey, Uuid};

use crate::policy::{EnrolmentCode, ReviewerName};
use crate::secrets::Secret;

#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Format {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("no enrolment code for {0}: it was used, burnt or never issued")]
    NoCode(String),
    #[error("the enrolment code for {0} has expired")]
    Expired(String),
    #[error("wrong enrolment code for {0}")]
    WrongCode(String),
}

/// Gives `path` the owner of `like`. `stapsteen console enrol` often runs as root, while the
/// daemon runs as its own user, who owns the state directory and must read what root wrote.
fn same_owner(path: &Path, like: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let (want, have) = (std::fs::metadata(like)?, std::fs::metadata(path)?);
    if (want.uid(), want.gid()) == (have.uid(), have.gid()) {
        return Ok(());
    }
    std::os::unix::fs::chown(path, Some(want.uid()), Some(want.gid()))
}

/// Wrong guesses after which a code is burnt.
pub const MAX_TRIES: u32 = 5;

/// A reviewer's enrolled keys.
#[derive(Serialize, Deserialize, Clone)]
pub struct Enrolled {
    /// The WebAuthn user handle.
    pub user_id: Uuid,
    pub keys: Vec<Passkey>,
}

#[derive(Serialize, Deserialize)]
struct Code {
    sha256: String,
    expires: Timestamp,
    tries: u32,
}

/// `enrolment.json`: codes waiting, by reviewer, and the hashes of spent codes.
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Codes {
    #[serde(default)]
    waiting: BTreeMap<String, Code>,
    #[serde(default)]
    spent: BTreeSet<String>,
}

impl Codes {
    fn remove(&mut self, name: &str) {
        if let Some(c) = self.waiting.remove(name) {
            self.spent.insert(c.sha256);
        }
    }
}

/// A new code: 20 characters without look-alikes, in groups of five (about 99 bits).
pub fn new_code() -> Secret<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut code = String::new();
    for i in 0..20 {
        if i > 0 && i % 5 == 0 {
            code.push('-');
        }
        let pick = rand::random_range(0..ALPHABET.len());
        code.push(char::from(ALPHABET[pick]));
    }
    Secret::new(code)
}

/// The console's files about reviewers.
pub struct Reviewers {
    dir: PathBuf,
}

pub fn code_hash(code: &str) -> String {
    // Codes are read off a screen: spaces and dashes do not count, nor does case.
    let clean: String = code
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    hex::encode(Sha256::digest(clean.as_bytes()))
}

impl Reviewers {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn read<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T, EnrolError> {
        let path = self.dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| EnrolError::Format { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
            Err(source) => Err(EnrolError::Io { path, source }),
        }
    }

    fn write<T: Serialize>(&self, name: &str, value: &T) -> Result<(), EnrolError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let io = |source| EnrolError::Io {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_vec_pretty(value).map_err(|source| EnrolError::Format {
            path: path.clone(),
            source,
        })?;
        if !self.dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(io)?;
            if let Some(parent) = self.dir.parent() {
                same_owner(&self.dir, parent).map_err(io)?;
            }
        }
        let _ = std::fs::remove_file(&tmp);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&text).and_then(|()| f.sync_all()))
            .map_err(io)?;
        same_owner(&tmp, &self.dir).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// The keys of `reviewer`, if any were enrolled.
    pub fn enrolled(&self, reviewer: &ReviewerName) -> Result<Option<Enrolled>, EnrolError> {
        let mut all: BTreeMap<String, Enrolled> = self.read("reviewers.json")?;
        Ok(all.remove(reviewer.as_str()))
    }

    /// The user handle for a reviewer's next key: the existing one, or a new one.
    pub fn user_id(&self, reviewer: &ReviewerName) -> Result<Uuid, EnrolError> {
        Ok(self
            .enrolled(reviewer)?
            .map_or_else(Uuid::new_v4, |e| e.user_id))
    }

    /// Adds a key, or replaces it when it is the same credential (an updated counter).
    pub fn save_key(
        &self,
        reviewer: &ReviewerName,
        user_id: Uuid,
        key: Passkey,
    ) -> Result<(), EnrolError> {
        let mut all: BTreeMap<String, Enrolled> = self.read("reviewers.json")?;
        let e = all.entry(reviewer.to_string()).or_insert(Enrolled {
            user_id,
            keys: Vec::new(),
        });
        e.keys.retain(|k| k.cred_id() != key.cred_id());
        e.keys.push(key);
        self.write("reviewers.json", &all)
    }

    /// Issues a new code for `reviewer`, replacing an earlier one.
    pub fn issue_code(
        &self,
        reviewer: &ReviewerName,
        expires: Timestamp,
    ) -> Result<Secret<String>, EnrolError> {
        let code = new_code();
        let mut codes: Codes = self.read("enrolment.json")?;
        codes.remove(reviewer.as_str());
        codes.waiting.insert(
            reviewer.to_string(),
            Code {
                sha256: code_hash(code.expose()),
                expires,
                tries: 0,
            },
        );
        self.write("enrolment.json", &codes)?;
        Ok(code)
    }

    /// Checks a code; with `consume` a right code is also removed. A wrong one counts a try.
    /// `from_policy` is the reviewer's code in the policy in force, if any.
    pub fn check_code(
        &self,
        reviewer: &ReviewerName,
        code: &str,
        now: Timestamp,
        consume: bool,
        from_policy: Option<&EnrolmentCode>,
    ) -> Result<(), EnrolError> {
        let name = reviewer.to_string();
        let mut codes: Codes = self.read("enrolment.json")?;
        if let Some(p) = from_policy
            && !codes.waiting.contains_key(&name)
            && !codes.spent.contains(&p.sha256)
        {
            codes.waiting.insert(
                name.clone(),
                Code {
                    sha256: p.sha256.clone(),
                    expires: p.until,
                    tries: 0,
                },
            );
        }
        let Some(c) = codes.waiting.get_mut(&name) else {
            return Err(EnrolError::NoCode(name));
        };
        let result = if now > c.expires {
            codes.remove(&name);
            Err(EnrolError::Expired(name))
        } else if c.sha256 != code_hash(code) {
            c.tries += 1;
            if c.tries >= MAX_TRIES {
                codes.remove(&name);
            }
            Err(EnrolError::WrongCode(name))
        } else {
            if consume {
                codes.remove(&name);
            }
            Ok(())
        };
        self.write("enrolment.json", &codes)?;
        result
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn codes_are_one_time_expire_and_burn_after_wrong_guesses() {
        let dir = tempfile::tempdir().unwrap();
        let r = Reviewers::new(dir.path().to_owned());
        let name = ReviewerName::new("c.visser").unwrap();
        let now: Timestamp = "2026-11-23T10:00:00Z".parse().unwrap();
        let later = now
            .checked_add(jiff::SignedDuration::from_hours(1))
            .unwrap();
        let code = r.issue_code(&name, later).unwrap();
        assert!(matches!(
            r.check_code(&name, "wrong", now, false, None),
            Err(EnrolError::WrongCode(_))
        ));
        r.check_code(&name, &code.expose().to_uppercase(), now, false, None)
            .unwrap();
        r.check_code(&name, code.expose(), now, true, None).unwrap();
        assert!(matches!(
            r.check_code(&name, code.expose(), now, true, None),
            Err(EnrolError::NoCode(_))
        ));

        let code = r.issue_code(&name, later).unwrap();
        let after = later
            .checked_add(jiff::SignedDuration::from_secs(1))
            .unwrap();
        assert!(matches!(
            r.check_code(&name, code.expose(), after, false, None),
            Err(EnrolError::Expired(_))
        ));

        let code = r.issue_code(&name, later).unwrap();
        for _ in 0..MAX_TRIES {
            assert!(r.check_code(&name, "guess", now, false, None).is_err());
        }
        assert!(matches!(
            r.check_code(&name, code.expose(), now, false, None),
            Err(EnrolError::NoCode(_))
        ));
        let mode = std::fs::metadata(dir.path().join("enrolment.json"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }
}
