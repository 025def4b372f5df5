//! Identifiers shared by the layers: a session's id names its recording, its audit chain
//! entries and its target certificate.
//!
//! Invariant: a [`SessionId`] is always of the form `YYYYMMDDTHHMMSSZ-xxxxxxxx` (lowercase hex),
//! so it is safe in a file name and in a signed note.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A session id: `YYYYMMDDTHHMMSSZ-xxxxxxxx`. Also names files, so it is validated on parse.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(String);

impl SessionId {
    pub fn generate(now: jiff::Timestamp) -> Self {
        let suffix: u32 = rand::random();
        Self(format!("{}-{suffix:08x}", now.strftime("%Y%m%dT%H%M%SZ")))
    }

    pub fn parse(s: &str) -> Option<Self> {
        let (stamp, suffix) = s.split_once('-')?;
        let stamp_ok = stamp.len() == 16
            && stamp.char_indices().all(|(i, c)| match i {
                8 => c == 'T',
                15 => c == 'Z',
                _ => c.is_ascii_digit(),
            });
        let suffix_ok = suffix.len() == 8
            && suffix
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
        (stamp_ok && suffix_ok).then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
