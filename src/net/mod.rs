//! Sockets as the bastion uses them, front door and target side alike.
//!
//! Invariant: a connection into the management network carries its grant's firewall mark from
//! before its first packet, so the kernel's output rules judge every packet of it.

mod slots;
mod stall;

pub use slots::{Evict, Full, Slot, Slots};
pub use stall::Stall;

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use tokio::net::{TcpSocket, TcpStream};

/// Read buffer under each SSH connection, front door and upstream: the SSH layer reads each
/// packet in two exact reads, and a buffer lets one system call bring in several packets.
pub const READ_BUFFER: usize = 128 * 1024;

/// The source a client is counted under in per-source limits: the IPv4 address (also when it
/// comes as an IPv4-mapped IPv6 address), or the IPv6 /64. One host picks any address in its
/// /64 at will (privacy addresses), so counting IPv6 per address would let one host take a whole
/// limit; counting per /64 puts the hosts of one IPv6 LAN together, under the limit's total.
pub fn source_of(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !((1u128 << 64) - 1))),
        },
    }
}

/// Opens a TCP connection whose packets carry `mark` (when given), for the output rules.
pub async fn connect(addr: SocketAddr, mark: Option<u32>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(m) = mark {
        socket2::SockRef::from(&socket).set_mark(m)?;
    }
    socket.set_nodelay(true)?;
    socket.connect(addr).await
}
