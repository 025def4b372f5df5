//! Sockets as the bastion uses them, front door and target side alike.
//!
//! Invariant: a connection into the management network carries its grant's firewall mark from
//! before its first packet, so the kernel's output rules judge every packet of it.

use std::net::SocketAddr;

use tokio::net::{TcpSocket, TcpStream};

/// Read buffer under each SSH connection, front door and upstream: the SSH layer reads each
/// packet in two exact reads, and a buffer lets one system call bring in several packets.
pub const READ_BUFFER: usize = 128 * 1024;

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
