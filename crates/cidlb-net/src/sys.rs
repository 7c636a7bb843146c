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

/// File descriptors upstream sockets (and health checks' per-backend sockets) never
/// take (at most a quarter of the limit): the highest-numbered ones, kept for the
/// admin API's connections, the health checks' shared sockets ([`shared_probe_socket`])
/// and reloads. Without them a new-flow flood past the open-files limit would also
/// lock the operator out and fail the health checks of backends added by a reload.
pub const FD_RESERVE: u64 = 32;

/// The top part of [`FD_RESERVE`] (at most an eighth of the limit) that no socket of
/// the data plane or the health checks may take: it is kept for the admin server's
/// connections and for reading the configuration file on a reload, so that however
/// many backends a reload adds, the operator can still see the balancer and reload
/// again.
pub const FD_ADMIN_RESERVE: u64 = 16;

/// The descriptors kept free of upstream sockets under an open-files limit of `limit`.
pub fn fd_reserve(limit: u64) -> u64 {
    FD_RESERVE.min(limit / 4)
}

/// The descriptors kept free of every health-check socket under a limit of `limit`:
/// the admin server's and the configuration file's part of [`fd_reserve`].
pub fn fd_admin_reserve(limit: u64) -> u64 {
    FD_ADMIN_RESERVE.min(limit / 8)
}

/// The soft open-files limit, if it can be read.
pub fn nofile_soft_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: RLIMIT_NOFILE is a valid resource; `lim` is a valid, writable rlimit.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur)
}

/// The error of a socket refused because its descriptor lies in a reserve (see
/// [`is_fd_shortage`]).
#[derive(Debug)]
struct ReserveKept(String);

impl std::fmt::Display for ReserveKept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReserveKept {}

/// Whether `e` says this process is short of descriptors or memory (`EMFILE`,
/// `ENFILE`, `ENOBUFS`, `ENOMEM`, or a descriptor refused because it lies in a
/// reserve), rather than anything about the destination.
pub fn is_fd_shortage(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    ) || e.get_ref().is_some_and(|i| i.is::<ReserveKept>())
}

/// Fails, like an `EMFILE`, when `s`'s descriptor lies in the top `reserve` of the
/// open-files limit: the kernel hands out the lowest free number, so every lower one is
/// in use and fewer than the reserve are left.
fn keep_reserve(s: &Socket, reserve: fn(u64) -> u64, kept_for: &str) -> io::Result<()> {
    if let Some(limit) = nofile_soft_limit() {
        let reserve = reserve(limit);
        let fd = std::os::fd::AsRawFd::as_raw_fd(s) as u64;
        if fd + reserve >= limit {
            return Err(io::Error::other(ReserveKept(format!(
                "too many open files: the last {reserve} of {limit} are kept for {kept_for}"
            ))));
        }
    }
    Ok(())
}

/// A non-blocking UDP socket on an ephemeral port of `source` (or of the unspecified
/// address), connected to `backend`: one NAT-mode upstream flow.
///
/// Fails, like an `EMFILE`, when the new descriptor lies in the top [`fd_reserve`] of
/// the open-files limit.
pub fn upstream_socket(
    source: Option<std::net::IpAddr>,
    backend: SocketAddr,
) -> io::Result<UdpSocket> {
    connected_socket(source, backend)
}

/// Like [`upstream_socket`], for the health checks of one backend: it keeps the whole
/// reserve too (under exhaustion the prober falls back to its shared socket).
pub fn probe_socket(
    source: Option<std::net::IpAddr>,
    backend: SocketAddr,
) -> io::Result<UdpSocket> {
    connected_socket(source, backend)
}

fn unspecified(v4: bool) -> std::net::IpAddr {
    if v4 {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    }
}

fn connected_socket(
    source: Option<std::net::IpAddr>,
    backend: SocketAddr,
) -> io::Result<UdpSocket> {
    let s = Socket::new(
        Domain::for_address(backend),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    keep_reserve(&s, fd_reserve, "the admin API and health checks")?;
    s.set_nonblocking(true)?;
    let ip = source.unwrap_or(unspecified(backend.is_ipv4()));
    s.bind(&SocketAddr::new(ip, 0).into())?;
    s.connect(&backend.into())?;
    Ok(s.into())
}

/// Receive buffer asked for a shared probe socket (the kernel caps it at
/// `net.core.rmem_max`): the answers of many backends may queue on it at once.
const SHARED_PROBE_BUFFER: usize = 4 << 20;

/// A non-blocking, unconnected UDP socket on an ephemeral port of `source` (or of the
/// unspecified address of the family, IPv4 when `v4`), for the health checks of every
/// backend without a socket of its own: answers are told apart by their source
/// address, and ICMP errors arrive on its error queue (`IP_RECVERR`, read with
/// [`recv_error`]) with the destination they are about.
///
/// It may take a descriptor of [`fd_reserve`], never one of [`fd_admin_reserve`].
pub fn shared_probe_socket(source: Option<std::net::IpAddr>, v4: bool) -> io::Result<UdpSocket> {
    let s = Socket::new(
        if v4 { Domain::IPV4 } else { Domain::IPV6 },
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    keep_reserve(
        &s,
        fd_admin_reserve,
        "the admin API and configuration reloads",
    )?;
    s.set_nonblocking(true)?;
    let _ = s.set_recv_buffer_size(SHARED_PROBE_BUFFER);
    let (level, name) = if v4 {
        (libc::SOL_IP, libc::IP_RECVERR)
    } else {
        (libc::SOL_IPV6, libc::IPV6_RECVERR)
    };
    let on: libc::c_int = 1;
    // SAFETY: `s` is an open socket; the option value is a c_int of the given size.
    let r = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),       // socket
            level,                                     // SOL_IP / SOL_IPV6
            name,                                      // IP_RECVERR / IPV6_RECVERR
            (&on as *const libc::c_int).cast(),        // value
            std::mem::size_of::<libc::c_int>() as u32, // its size
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let ip = source.unwrap_or(unspecified(v4));
    s.bind(&SocketAddr::new(ip, 0).into())?;
    Ok(s.into())
}

/// What [`recv_error`] read from a socket's error queue.
#[derive(Debug)]
pub enum QueuedError {
    /// The queue is empty.
    Empty,
    /// An ICMP error (e.g. `ECONNREFUSED` for a port unreachable) about a datagram sent
    /// to this destination.
    Icmp(SocketAddr, io::Error),
    /// Some other entry, consumed.
    Other,
}

/// Reads one entry of the error queue of a socket with `IP_RECVERR` / `IPV6_RECVERR`
/// set (non-blocking).
pub fn recv_error(fd: std::os::fd::RawFd) -> io::Result<QueuedError> {
    // SAFETY: all-zero bytes are a valid sockaddr_storage and msghdr (plain data).
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut head = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: head.as_mut_ptr().cast(),
        iov_len: head.len(),
    };
    // u64s: the control buffer must be aligned for cmsghdr.
    let mut control = [0u64; 64];
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    loop {
        msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        msg.msg_flags = 0;
        // SAFETY: `fd` is a socket owned by the caller; `msg` points to `name`, `iov`
        // (into `head`) and `control`, all alive and writable during the call;
        // MSG_DONTWAIT: non-blocking.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
        if n >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(QueuedError::Empty),
            _ => return Err(e),
        }
    }
    let mut errno = None;
    // SAFETY: `msg` was filled by recvmsg: its control pointer and length describe the
    // control messages the kernel wrote into `control`; CMSG_* walk them within it.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            if (h.cmsg_level == libc::SOL_IP && h.cmsg_type == libc::IP_RECVERR)
                || (h.cmsg_level == libc::SOL_IPV6 && h.cmsg_type == libc::IPV6_RECVERR)
            {
                // The kernel writes a sock_extended_err there (the offender's address
                // follows it); read unaligned, to be safe.
                let ee =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::sock_extended_err>());
                if ee.ee_origin == libc::SO_EE_ORIGIN_ICMP
                    || ee.ee_origin == libc::SO_EE_ORIGIN_ICMP6
                {
                    errno = Some(ee.ee_errno as i32);
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    // SAFETY: the kernel wrote a socket address of `msg_namelen` bytes into `name`.
    let to = unsafe { socket2::SockAddr::new(name, msg.msg_namelen) }.as_socket();
    Ok(match (to, errno) {
        (Some(to), Some(e)) => QueuedError::Icmp(to, io::Error::from_raw_os_error(e)),
        _ => QueuedError::Other,
    })
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
    fn the_admin_reserve_is_the_top_half_of_the_reserve() {
        for limit in [8, 64, 100, 1024, 20_000, 1 << 20, u64::MAX] {
            assert!(fd_admin_reserve(limit) <= fd_reserve(limit), "{limit}");
            assert!(
                fd_admin_reserve(limit) * 2 >= fd_reserve(limit) - 1,
                "{limit}"
            );
        }
        assert_eq!(fd_admin_reserve(1 << 20), FD_ADMIN_RESERVE);
        assert_eq!(fd_admin_reserve(64), 8);
    }

    #[test]
    fn reserve_errors_are_a_shortage() {
        assert!(is_fd_shortage(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(is_fd_shortage(&io::Error::other(ReserveKept("x".into()))));
        assert!(!is_fd_shortage(&io::Error::other("x")));
        assert!(!is_fd_shortage(&io::Error::from_raw_os_error(
            libc::ENETUNREACH
        )));
    }

    #[test]
    fn a_shared_probe_socket_reports_refusals_with_their_destination() {
        let s = shared_probe_socket(Some("127.0.0.1".parse().unwrap()), true).unwrap();
        let closed = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let open = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(b"x", closed).unwrap();
        // The refusal is also the socket's pending error, which the next call reports
        // (and clears): a send to another destination may fail once for it.
        let to = open.local_addr().unwrap();
        if let Err(e) = s.send_to(b"y", to) {
            assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
            s.send_to(b"y", to).unwrap();
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let got = loop {
            match recv_error(fd).unwrap() {
                QueuedError::Icmp(to, e) => break (to, e.kind()),
                QueuedError::Other => {}
                QueuedError::Empty => {
                    assert!(std::time::Instant::now() < deadline, "no ICMP error queued");
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        };
        assert_eq!(got, (closed, io::ErrorKind::ConnectionRefused));
        // The port that is open got its datagram; the error queue holds nothing else.
        let mut b = [0u8; 4];
        open.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        assert_eq!(open.recv(&mut b).unwrap(), 1);
        assert!(matches!(recv_error(fd).unwrap(), QueuedError::Empty));
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
