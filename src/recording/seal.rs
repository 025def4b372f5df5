//! The line chain of a recording: `h0 = SHA-256("stapsteen recording v1\n" || id || "\n")`, then
//! `h(n) = SHA-256(h(n-1) || SHA-256(line n))` over the exact bytes of each line on disk, newline
//! included. Line 1 is the asciicast header, so the chain starts from the session id and the
//! header.
//!
//! Beside each recording, `<id>.idx` holds the first 8 bytes of SHA-256(line n) for every line.
//! It only locates a change (the line that differs, or was deleted or inserted); the signed
//! checkpoints in the audit chain are what prove it. Each line's bytes are hashed once for both.

use sha2::{Digest, Sha256};

use crate::audit::Seal;
use crate::ids::SessionId;

/// Bytes of each line hash kept in the `.idx` file.
pub const INDEX_BYTES: usize = 8;

/// What `.idx` holds for one line: the start of its hash.
pub fn index_entry(line_hash: &[u8; 32]) -> &[u8] {
    &line_hash[..INDEX_BYTES]
}

#[derive(Clone, Debug)]
pub struct LineChain {
    hash: [u8; 32],
    pub lines: u64,
    pub bytes: u64,
}

impl LineChain {
    pub fn new(id: &SessionId) -> Self {
        let mut h = Sha256::new();
        h.update(b"stapsteen recording v1\n");
        h.update(id.as_str().as_bytes());
        h.update(b"\n");
        Self {
            hash: h.finalize().into(),
            lines: 0,
            bytes: 0,
        }
    }

    /// Adds one line (with its newline); returns the line's own hash.
    pub fn push(&mut self, line: &[u8]) -> [u8; 32] {
        let line_hash: [u8; 32] = Sha256::digest(line).into();
        self.push_hash(line_hash, line.len() as u64);
        line_hash
    }

    /// Adds one line by its hash and length, for a reader that hashed it piece by piece.
    pub fn push_hash(&mut self, line_hash: [u8; 32], len: u64) {
        let mut h = Sha256::new();
        h.update(self.hash);
        h.update(line_hash);
        self.hash = h.finalize().into();
        self.lines += 1;
        self.bytes += len;
    }

    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    pub fn seal(&self) -> Seal {
        Seal {
            lines: self.lines,
            bytes: self.bytes,
            chain: self.hash,
        }
    }
}
