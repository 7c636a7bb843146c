//! Socket setup and batched syscalls (`recvmmsg`, `sendmmsg`): the crate's only
//! `unsafe` and platform code. Every syscall argument is annotated.

#![allow(unsafe_code)]

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

/// Fails when another socket already holds `addr`, even one with `SO_REUSEPORT`:
/// without this check a second balancer started by mistake on the same address would
/// silently take a share of the traffic (the kernel spreads datagrams over every
/// reuseport socket of the same user). A plain bind, dropped at once, detects it.
pub fn ensure_port_free(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    match UdpSocket::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(io::Error::new(
            e.kind(),
            format!("cannot bind {addr}: address already in use (another cidlb instance?)"),
        )),
        Err(e) => Err(io::Error::new(e.kind(), format!("cannot bind {addr}: {e}"))),
    }
}

/// File descriptors upstream sockets never take (at most a quarter of the limit): the
/// highest-numbered ones, kept for the admin API's connections, health-check sockets
/// ([`probe_socket`]) and reloads. Without them a new-flow flood past the open-files
/// limit would also lock the operator out and fail the health checks of backends added
/// by a reload.
pub const FD_RESERVE: u64 = 32;

/// The descriptors kept free of upstream sockets under an open-files limit of `limit`.
pub fn fd_reserve(limit: u64) -> u64 {
    FD_RESERVE.min(limit / 4)
}

/// The soft open-files limit, if it can be read.
fn nofile_soft_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: RLIMIT_NOFILE is a valid resource; `lim` is a valid, writable rlimit.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur)
}

/// A non-blocking UDP socket on an ephemeral port of `source` (or of the unspecified
/// address), connected to `backend`: one NAT-mode upstream flow.
///
/// Fails, like an `EMFILE`, when the new descriptor lies in the top [`fd_reserve`] of
/// the open-files limit: the kernel hands out the lowest free number, so every lower
/// one is in use and fewer than the reserve are left.
pub fn upstream_socket(
    source: Option<std::net::IpAddr>,
    backend: SocketAddr,
) -> io::Result<UdpSocket> {
    connected_socket(source, backend, true)
}

/// Like [`upstream_socket`], for a health check: it may take a descriptor of the
/// reserve, which is kept for it.
pub fn probe_socket(
    source: Option<std::net::IpAddr>,
    backend: SocketAddr,
) -> io::Result<UdpSocket> {
    connected_socket(source, backend, false)
}

fn connected_socket(
    source: Option<std::net::IpAddr>,
    backend: SocketAddr,
    keep_reserve: bool,
) -> io::Result<UdpSocket> {
    let s = Socket::new(
        Domain::for_address(backend),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if let Some(limit) = nofile_soft_limit().filter(|_| keep_reserve) {
        let reserve = fd_reserve(limit);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&s) as u64;
        if fd + reserve >= limit {
            return Err(io::Error::other(format!(
                "too many open files: the last {reserve} of {limit} are kept for the admin \
                 API and health checks"
            )));
        }
    }
    s.set_nonblocking(true)?;
    let ip = source.unwrap_or(match backend {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    });
    s.bind(&SocketAddr::new(ip, 0).into())?;
    s.connect(&backend.into())?;
    Ok(s.into())
}

/// Receives up to a batch of datagrams with one `recvmmsg(2)` call.
///
/// Buffers are allocated once; a datagram longer than a slot is reported as truncated
/// (never forwarded cut short).
pub struct RecvBatch {
    slot: usize,
    bufs: Vec<u8>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    hdrs: Vec<libc::mmsghdr>,
    n: usize,
}

// The raw pointers inside `iovs`/`hdrs` point into `bufs`/`addrs`, owned by the same
// value and never reallocated after `new`.
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecvBatch({} x {} bytes)", self.hdrs.len(), self.slot)
    }
}

/// What [`RecvBatch::next`] got.
#[derive(Debug)]
pub enum Recv {
    /// `n` datagrams (read them with [`RecvBatch::get`]); `more` when the batch was
    /// full, so the socket may hold more.
    Datagrams {
        /// How many.
        n: usize,
        /// Whether to read again before waiting for the next edge.
        more: bool,
    },
    /// Nothing to read.
    Empty,
    /// A receive error (e.g. an ICMP error reported on the socket); reading may go on.
    Error(io::Error),
}

/// What one received datagram is.
pub enum Received<'a> {
    /// A whole datagram from `from`.
    Datagram(SocketAddr, &'a [u8]),
    /// A datagram longer than the slot (dropped, counted by the caller).
    Truncated,
}

impl RecvBatch {
    /// `batch` slots of `slot` bytes.
    pub fn new(batch: usize, slot: usize) -> RecvBatch {
        let batch = batch.max(1);
        // SAFETY: all-zero bytes are a valid sockaddr_storage (plain integers).
        let zero_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut b = RecvBatch {
            slot,
            bufs: vec![0; batch * slot],
            iovs: Vec::with_capacity(batch),
            addrs: vec![zero_addr; batch],
            hdrs: Vec::with_capacity(batch),
            n: 0,
        };
        for i in 0..batch {
            b.iovs.push(libc::iovec {
                iov_base: b.bufs[i * slot..].as_mut_ptr().cast(),
                iov_len: slot,
            });
        }
        for i in 0..batch {
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&mut b.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_iov = &mut b.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            b.hdrs.push(h);
        }
        b
    }

    /// One `recvmmsg` on the non-blocking socket `fd`; returns how many datagrams
    /// arrived (`WouldBlock` when none).
    pub fn recv(&mut self, fd: std::os::fd::RawFd) -> io::Result<usize> {
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: `fd` is a socket owned by the caller for the duration of the call;
        // `hdrs` holds `hdrs.len()` headers whose name/iov pointers point into
        // `addrs`/`iovs`/`bufs`, all alive and unaliased while `self` is borrowed
        // mutably; MSG_DONTWAIT makes the call non-blocking; a null timeout means none.
        let n = unsafe {
            libc::recvmmsg(
                fd,                              // socket
                self.hdrs.as_mut_ptr(),          // msgvec
                self.hdrs.len() as libc::c_uint, // vlen
                libc::MSG_DONTWAIT,              // flags
                std::ptr::null_mut(),            // timeout
            )
        };
        if n < 0 {
            self.n = 0;
            return Err(io::Error::last_os_error());
        }
        self.n = n as usize;
        Ok(self.n)
    }

    /// [`Self::recv`] for an edge-triggered reader: retries `EINTR`, and says whether
    /// the socket may hold more (a full batch) or was empty when the kernel looked
    /// (then a later datagram raises a new edge).
    pub fn next(&mut self, fd: std::os::fd::RawFd) -> Recv {
        loop {
            return match self.recv(fd) {
                Ok(n) => Recv::Datagrams {
                    n,
                    more: n == self.hdrs.len(),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Recv::Empty,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Recv::Error(e),
            };
        }
    }

    /// Datagram `i` of the last `recv` (`i < n`).
    pub fn get(&self, i: usize) -> Received<'_> {
        let h = &self.hdrs[i];
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            return Received::Truncated;
        }
        let len = (h.msg_len as usize).min(self.slot);
        // SAFETY: the kernel wrote a socket address of `msg_namelen` bytes into
        // `addrs[i]` (a sockaddr_storage, large enough for any address family).
        let from = unsafe { socket2::SockAddr::new(self.addrs[i], h.msg_hdr.msg_namelen) };
        match from.as_socket() {
            Some(a) => Received::Datagram(a, &self.bufs[i * self.slot..i * self.slot + len]),
            None => Received::Truncated,
        }
    }
}

/// Sends a batch of datagrams to different destinations with one `sendmmsg(2)` call.
pub struct SendBatch {
    slot: usize,
    bufs: Vec<u8>,
    lens: Vec<usize>,
    addrs: Vec<socket2::SockAddr>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

// See RecvBatch: the pointers are rebuilt from owned buffers before every call.
unsafe impl Send for SendBatch {}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SendBatch({} queued)", self.lens.len())
    }
}

impl SendBatch {
    /// Room for `batch` datagrams of up to `slot` bytes.
    pub fn new(batch: usize, slot: usize) -> SendBatch {
        let batch = batch.max(1);
        SendBatch {
            slot,
            bufs: vec![0; batch * slot],
            lens: Vec::with_capacity(batch),
            addrs: Vec::with_capacity(batch),
            iovs: Vec::with_capacity(batch),
            hdrs: Vec::with_capacity(batch),
        }
    }

    /// Whether another datagram fits.
    pub fn is_full(&self) -> bool {
        self.lens.len() == self.lens.capacity()
    }

    /// Queued datagrams.
    pub fn len(&self) -> usize {
        self.lens.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// Queues `data` for `to`; false (nothing queued) when full or `data` is larger
    /// than a slot.
    pub fn push(&mut self, to: SocketAddr, data: &[u8]) -> bool {
        if self.is_full() || data.len() > self.slot {
            return false;
        }
        let i = self.lens.len();
        self.bufs[i * self.slot..i * self.slot + data.len()].copy_from_slice(data);
        self.lens.push(data.len());
        self.addrs.push(to.into());
        true
    }

    /// Sends everything queued on the non-blocking socket `fd`; returns (sent, failed).
    /// What the kernel refuses is dropped, never retried later.
    pub fn flush(&mut self, fd: std::os::fd::RawFd) -> (usize, usize) {
        let total = self.lens.len();
        self.iovs.clear();
        self.hdrs.clear();
        for i in 0..total {
            self.iovs.push(libc::iovec {
                iov_base: self.bufs[i * self.slot..].as_mut_ptr().cast(),
                iov_len: self.lens[i],
            });
        }
        for i in 0..total {
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = self.addrs[i].as_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_namelen = self.addrs[i].len();
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            self.hdrs.push(h);
        }
        let (mut sent, mut failed) = (0usize, 0usize);
        while sent + failed < total {
            let start = sent + failed;
            // SAFETY: `fd` is a socket owned by the caller; `hdrs[start..total]` are
            // valid headers whose name/iov pointers point into `addrs`/`iovs`/`bufs`,
            // alive and not moved during the call; MSG_DONTWAIT: non-blocking.
            let n = unsafe {
                libc::sendmmsg(
                    fd,                              // socket
                    self.hdrs[start..].as_mut_ptr(), // msgvec
                    (total - start) as libc::c_uint, // vlen
                    libc::MSG_DONTWAIT,              // flags
                )
            };
            if n <= 0 {
                // The first remaining datagram failed (e.g. EAGAIN, EHOSTUNREACH):
                // drop it and go on with the rest.
                failed += 1;
            } else {
                sent += n as usize;
            }
        }
        self.lens.clear();
        self.addrs.clear();
        (sent, failed)
    }
}

/// Raises the soft limit on open files to the hard limit (NAT mode holds one socket per
/// client address and backend). Returns the (soft, hard) limits in force afterwards.
pub fn raise_nofile_limit() -> io::Result<(libc::rlim_t, libc::rlim_t)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: RLIMIT_NOFILE is a valid resource; `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: RLIMIT_NOFILE is a valid resource; `raised` is a valid rlimit whose
        // soft limit does not exceed its hard limit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// The IP addresses of this host's interfaces (loopback included), for telling the
/// balancer's own addresses from others; empty when they cannot be read.
pub fn local_ips() -> Vec<std::net::IpAddr> {
    if_addrs::get_if_addrs()
        .map(|v| v.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fd_reserve_is_32_or_a_quarter_of_a_small_limit() {
        assert_eq!(fd_reserve(1 << 20), FD_RESERVE);
        assert_eq!(fd_reserve(1024), 32);
        assert_eq!(fd_reserve(64), 16);
        assert_eq!(fd_reserve(8), 2);
        assert_eq!(fd_reserve(u64::MAX), FD_RESERVE);
    }

    #[test]
    fn upstream_sockets_open_under_the_usual_limit() {
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        let s = upstream_socket(None, sink.local_addr().unwrap()).unwrap();
        s.send(b"x").unwrap();
        let mut buf = [0u8; 4];
        sink.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        assert_eq!(sink.recv_from(&mut buf).unwrap().0, 1);
    }
}
