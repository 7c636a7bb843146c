//! Socket setup (and, where it pays, batched syscalls). The only platform code.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};

/// A non-blocking UDP socket bound to `addr` with `SO_REUSEPORT` (so each worker binds
/// its own socket to the listener's address and the kernel spreads clients over them)
/// and larger buffers.
pub fn bind_reuseport(addr: SocketAddr, buffer: usize) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = s.set_recv_buffer_size(buffer);
    let _ = s.set_send_buffer_size(buffer);
    s.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {addr}: {e}")))?;
    Ok(s.into())
}

/// A non-blocking UDP socket on an ephemeral port of `source` (or of the unspecified
/// address), connected to `backend`: one NAT-mode upstream flow.
pub fn upstream_socket(
    source: Option<std::net::IpAddr>,
    backend: SocketAddr,
) -> io::Result<UdpSocket> {
    let s = Socket::new(
        Domain::for_address(backend),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    s.set_nonblocking(true)?;
    let ip = source.unwrap_or(match backend {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    });
    s.bind(&SocketAddr::new(ip, 0).into())?;
    s.connect(&backend.into())?;
    Ok(s.into())
}
