//! Session recordings: one asciicast v2 file per pty channel, with a JSON sidecar holding who,
//! where and how it ended.
//!
//! Invariants: a recording exists before the target is dialled (creation failure refuses the
//! session); every write error is returned, so the caller can end the session (fail closed);
//! recording ids are checked before they touch a path.

mod asciicast;
mod sanitize;
mod store;

pub use asciicast::{Recorder, RecordingError};
pub use sanitize::sanitize;
pub use store::{Meta, RecordingStore, SessionId};
