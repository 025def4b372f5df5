//! How a channel without a terminal (an exec, `ssh -T`, scp) is written as asciicast v2, which
//! knows only one output stream and a terminal:
//!
//! - stdout and stderr are both `"o"` events, in the order the admin received them, so a replay
//!   shows what the admin's terminal showed; a marker (`"m"`) `stream: stderr` comes before
//!   stderr output that follows stdout (or starts the output), and `stream: stdout` before
//!   stdout that follows stderr. An `"o"` event belongs to the stream named by the last such
//!   marker before it (stdout when there is none).
//! - Each LF is written as CR LF, as the admin's terminal (in cooked mode) showed it; the counts
//!   and SHA-256 of the session are over the bytes as they crossed.
//! - Each direction (output, input) is recorded up to `max_channel_bytes` (the chunk that
//!   reaches it in part); everything after is counted and hashed only, and one marker says so.

use std::borrow::Cow;

/// The two output streams of an SSH channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// The marker written when output switches to this stream.
    pub fn marker(self) -> &'static str {
        match self {
            Stream::Stdout => "stream: stdout",
            Stream::Stderr => "stream: stderr",
        }
    }
}

/// `data` with each LF as CR LF.
pub fn crlf(data: &[u8]) -> Cow<'_, [u8]> {
    if !data.contains(&b'\n') {
        return Cow::Borrowed(data);
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 16 + 1);
    for b in data {
        if *b == b'\n' {
            out.push(b'\r');
        }
        out.push(*b);
    }
    Cow::Owned(out)
}

/// What a direction's budget says about the next chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    Record,
    /// The budget ran out within this chunk: record its first `keep` bytes and the marker,
    /// then count and hash only.
    RanOut {
        keep: usize,
    },
    Skip,
}

/// The bytes one direction of a channel may still put in its recording.
#[derive(Debug, Clone)]
pub struct Budget {
    left: u64,
    out: bool,
}

impl Budget {
    pub fn new(max: u64) -> Self {
        Self {
            left: max,
            out: false,
        }
    }

    pub fn spend(&mut self, n: usize) -> Spend {
        if self.out {
            return Spend::Skip;
        }
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Spend::Record
            }
            None => {
                self.out = true;
                let keep = usize::try_from(self.left).unwrap_or(n);
                self.left = 0;
                Spend::RanOut { keep }
            }
        }
    }
}

/// The marker written when `direction` (`output`, `input`) passes `max` bytes.
pub fn cap_marker(direction: &str, max: u64) -> String {
    format!(
        "recording: {direction} past {max} bytes is not recorded; its byte count and SHA-256 are in the end entry"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lf_becomes_crlf() {
        assert!(matches!(crlf(b"abc"), Cow::Borrowed(_)));
        assert_eq!(&*crlf(b"a\nb\r\n\n"), b"a\r\nb\r\r\n\r\n");
    }

    #[test]
    fn budget_runs_out_once() {
        let mut b = Budget::new(10);
        assert_eq!(b.spend(4), Spend::Record);
        assert_eq!(b.spend(6), Spend::Record);
        assert_eq!(b.spend(1), Spend::RanOut { keep: 0 });
        assert_eq!(b.spend(0), Spend::Skip);
        assert_eq!(b.spend(1), Spend::Skip);
        let mut b = Budget::new(3);
        assert_eq!(b.spend(4), Spend::RanOut { keep: 3 });
    }
}
