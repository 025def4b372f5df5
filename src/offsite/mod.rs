//! The off-site copy: every audit chain entry, and every ended recording, in an S3-compatible
//! object store (Garage, MinIO, a cloud bucket), so that root on the appliance cannot rewrite
//! history unseen.
//!
//! Objects, under the configured prefix:
//! `audit/<seq, 12 digits>.note` (the signed note, byte for byte as in the chain), and
//! `recordings/<id>.cast`, `.idx`, `.json` once the session's `end` entry is written.
//!
//! Invariants: the local chain is the backlog. `audit/offsite.cursor` holds how many bytes of the
//! chain are sent, and moves only past a line whose entry is stored and whose recording is stored
//! or listed in `audit/offsite.pending` (retried until stored), so an unreachable store delays the
//! copy but loses nothing, and one recording that fails does not hold back the chain; sessions
//! never wait for it. Every object is written create-only (see [`store`]).

mod compare;
mod store;
mod uploader;

pub use compare::{Comparison, compare_chain, compare_recording};
pub use store::{Offsite, OffsiteError};
pub use uploader::run_uploader;
