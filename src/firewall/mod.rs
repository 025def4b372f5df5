//! Kernel enforcement of the grants: stapsteen owns the nftables table `inet stapsteen` and
//! nothing else, so it coexists with the host's own firewall.
//!
//! Invariants:
//! - Input admits the SSH front door only from the admin networks (plus loopback, replies and
//!   IPv6 neighbour discovery); forwarding is dropped; the bastion never routes.
//! - Output into a management network is allowed per packet only when the socket's mark, the
//!   destination address and the port are an element of the grants set. Each grant has its own
//!   mark ([`mark`]) and every upstream socket carries the mark of the grant it was opened for.
//!   Elements carry the grant's remaining time as a kernel timeout, so a grant that ends is
//!   closed by the kernel even if the daemon misses it. Refused packets are dropped (a TCP
//!   connect then times out) and counted in the named counter `refused_output`.
//! - The one exception: TCP resets (RST, no SYN, FIN, PSH or URG) of connections the grants let
//!   through (`ct state established`), without IP options or IPv6 extension headers and no
//!   longer than a TCP header, pass whatever their mark. The bastion resets a stopped session's
//!   target connection ([`crate::upstream::abort`]); its SSH disconnect and FIN are dropped once
//!   the grant's element is gone, and without the reset the target's session would live on. A reset opens no connection and hands no application
//!   data (the receiver tears the connection down), so it widens no access. The rule does not
//!   look at marks: a reset the kernel sends for a socket already closed (in answer to the
//!   target's next segment) carries no socket's mark.
//! - The table is replaced in one nft transaction; nft applies it whole or not at all.
//! - A table changed or deleted behind the daemon's back is noticed within [`CHECK_EVERY`] and
//!   put back (`FIREWALL_DRIFT`); while it cannot be put back, no session starts.
//!
//! Privilege: this runs in the daemon's process, which holds CAP_NET_ADMIN for two things:
//! running `nft` and setting SO_MARK. A separate helper would not lower the daemon's privilege,
//! because SO_MARK needs the same capability, and passing marked sockets between processes adds
//! a protocol that can itself go wrong. What the kernel check protects against is a bug in the
//! session logic (choosing the wrong target or port for a grant): the rules come from the policy
//! alone. A process fully taken over could rewrite them, and drift detection, which runs in the
//! same process, would not say so: it catches changes made by other processes and by mistake.

mod backend;
mod enforcer;
mod plan;

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::policy::GrantName;

pub use backend::{Backend, Nft};
pub use enforcer::{Enforcer, Outcome};
pub use plan::{Plan, Ports};

/// The table stapsteen owns.
pub const TABLE: &str = "stapsteen";

/// How often the table is compared with what was applied and grant windows are re-evaluated.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("firewall plan: {0}")]
    Plan(String),
    #[error("nft failed: {0}")]
    Nft(String),
}

/// The socket mark of a grant: a fixed prefix ("ST") and 16 bits of the grant name's SHA-256.
/// Stable across reloads, so a running session keeps its grant's mark; collisions are refused
/// when the plan is built.
pub fn mark(grant: &GrantName) -> u32 {
    let h = Sha256::digest(grant.as_str().as_bytes());
    0x5354_0000 | u32::from(u16::from_be_bytes([h[0], h[1]]))
}
