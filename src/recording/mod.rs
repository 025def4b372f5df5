//! Session recordings: one asciicast v2 file per session channel (with or without a pty; see
//! [`streams`] for how a channel without one is written), with a JSON sidecar holding who,
//! where and how it ended, and an index of line hashes; sealed into the audit chain.
//!
//! Invariants: a recording exists, and its session's start entry is in the audit chain, before
//! the target is dialled (failure refuses the session); every write error is returned (one the
//! background writer meets, by the session's next call or tick), so the caller can end the
//! session (fail closed); a recording is only ever appended to, in whole lines, and an entry
//! sealing lines is appended only once they are on disk; recording ids are checked before they
//! touch a path; a recording is deleted only after a signed `pruned` entry.

mod asciicast;
mod retention;
mod sanitize;
mod seal;
mod store;
pub mod streams;
pub mod typed;
mod verify;

pub use asciicast::{Backlog, Cadence, Recorder, RecordingError, SealAck};
pub use retention::{prune, run_retention};
pub use sanitize::{check_sanitized, sanitize};
pub use store::{Meta, RecordingStore};
pub use verify::{CopyCheck, Verdict, verify_recording};
