//! The line chain of a recording: `h0 = SHA-256("stapsteen recording v1\n" || id || "\n")`, then
//! `h(n) = SHA-256(h(n-1) || line n)` over the exact bytes of each line on disk, newline included.
//! Line 1 is the asciicast header, so the chain starts from the session id and the header.
//!
//! Beside each recording, `<id>.idx` holds the first 8 bytes of SHA-256 of every line on its own.
//! It only locates a change (the line that differs, or was deleted or inserted); the signed
//! checkpoints in the audit chain are what prove it.

use sha2::{Digest, Sha256};

use super::SessionId;
use crate::audit::Seal;

/// Bytes of each line hash kept in the `.idx` file.
pub const INDEX_BYTES: usize = 8;

/// What `.idx` holds for one line.
pub fn line_hash(line: &[u8]) -> [u8; INDEX_BYTES] {
    let h = Sha256::digest(line);
    let mut out = [0; INDEX_BYTES];
    out.copy_from_slice(&h[..INDEX_BYTES]);
    out
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

    /// Adds one line (with its newline); returns the new hash.
    pub fn push(&mut self, line: &[u8]) -> [u8; 32] {
        self.hash = Self::next(&self.hash, line);
        self.lines += 1;
        self.bytes += line.len() as u64;
        self.hash
    }

    /// The hash after `line` follows a chain at `hash`.
    pub fn next(hash: &[u8; 32], line: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(hash);
        h.update(line);
        h.finalize().into()
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
