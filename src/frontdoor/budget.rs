//! What one authenticated connection may ask of the bastion besides channels (which
//! `MAX_CHANNELS` bounds): requests and terminal sizes.
//!
//! Invariants: a connection's requests (global requests the handler sees, environment, pty,
//! signal, and the forwarding requests it refuses) draw on a token bucket; one that empties it is
//! closed. Window changes draw on a bucket of their own, larger because dragging a terminal's
//! corner sends dozens a second; one beyond it is dropped (neither recorded nor passed on), not
//! fatal. Terminal sizes are clamped to [`MAX_COLS`] x [`MAX_ROWS`] before the target, the
//! recording or the console player sees them. An environment value or terminal name longer than
//! [`MAX_ENV_BYTES`] is refused: each is kept until its channel starts, and a packet can carry
//! 256 KiB, so 32 values on each of 8 channels of each connection would be gigabytes per admin.
//!
//! What russh bounds on its own: a version line of at most 255 bytes, packets of at most
//! 256 KiB (plus headroom), `max_auth_attempts` refused signatures per connection, window
//! adjustments added with saturation (each costs a few instructions, as an `SSH_MSG_IGNORE`
//! does), and global requests no handler method takes are answered with a failure.

pub use crate::rate::Bucket;

/// The widest and tallest terminal passed on; larger requests get this size.
pub const MAX_COLS: u32 = 1000;
pub const MAX_ROWS: u32 = 1000;

/// The longest environment value (`LANG`, `LC_*`, `TERM`) or pty terminal name passed on; real
/// ones are a few dozen bytes.
pub const MAX_ENV_BYTES: usize = 1024;

/// A terminal size as the bastion passes it on (0 stays 0: "not given").
pub fn clamp_pty(cols: u32, rows: u32) -> (u32, u32) {
    (cols.min(MAX_COLS), rows.min(MAX_ROWS))
}

/// Requests of one connection: 100 at once, 5 a second after that.
pub fn requests() -> Bucket {
    Bucket::new(100, 5)
}

/// Window changes of one connection: 300 at once, 50 a second after that.
pub fn window_changes() -> Bucket {
    Bucket::new(300, 50)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_beyond_the_limit_are_clamped() {
        assert_eq!(clamp_pty(65535, 65535), (1000, 1000));
        assert_eq!(clamp_pty(u32::MAX, 24), (1000, 24));
        assert_eq!(clamp_pty(80, 24), (80, 24));
        assert_eq!(clamp_pty(0, 0), (0, 0));
    }
}
