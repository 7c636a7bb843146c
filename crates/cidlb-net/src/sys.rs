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

// ------------------------------------------------------------- transparent NAT

/// Why [`transparent_socket`] failed.
#[derive(Debug)]
pub struct TransparentError {
    /// The client's address:port could not be the socket's source: in use on this host
    /// (a client on the balancer itself, a listener or another service bound to that
    /// port), or not usable as a source towards the backend. Anything else (no
    /// descriptor, no permission) is `false`.
    pub source_refused: bool,
    /// What the kernel said.
    pub error: io::Error,
}

/// Sets `IP_TRANSPARENT` (IPv4) or `IPV6_TRANSPARENT` (IPv6) on `s`: it may then bind a
/// non-local address and send from it. Needs `CAP_NET_ADMIN` or `CAP_NET_RAW` (else
/// `EPERM`).
fn set_transparent(s: &Socket, ipv6: bool) -> io::Result<()> {
    if !ipv6 {
        return s.set_ip_transparent(true);
    }
    let on: libc::c_int = 1;
    // SAFETY: `s` is an open socket for the duration of the call; the option value is
    // a c_int that lives across the call, and its size is passed.
    let r = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(s),                    // socket
            libc::SOL_IPV6,                                        // level
            libc::IPV6_TRANSPARENT,                                // option
            (&on as *const libc::c_int).cast(),                    // value
            std::mem::size_of::<libc::c_int>() as libc::socklen_t, // length
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether this process may open transparent sockets (IPv4, or IPv6 with `ipv6`):
/// `Err` with `EPERM` when it lacks both `CAP_NET_ADMIN` and `CAP_NET_RAW`.
pub fn check_transparent(ipv6: bool) -> io::Result<()> {
    let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    set_transparent(&s, ipv6)
}

/// A non-blocking UDP socket bound to `client` (a client's own address and port, not
/// an address of this host) with `IP_TRANSPARENT` / `IPV6_TRANSPARENT`, connected to
/// `backend`: one transparent-NAT upstream flow. The backend sees the client's
/// address; its replies reach the socket only if the balancer's policy routing
/// delivers packets for that address locally (see [`route_get`]).
///
/// `SO_REUSEADDR`, so that one client may have a flow to each of several backends
/// (each socket is connected to its own backend, so replies are told apart). The fd
/// reserve is kept as in [`upstream_socket`]. An IPv4-mapped IPv6 client going to an
/// IPv4 backend binds the IPv4 address.
pub fn transparent_socket(
    client: SocketAddr,
    backend: SocketAddr,
) -> Result<UdpSocket, TransparentError> {
    let other = |error| TransparentError {
        source_refused: false,
        error,
    };
    let refused = |error| TransparentError {
        source_refused: true,
        error,
    };
    let client = match (client, backend) {
        (SocketAddr::V6(c), SocketAddr::V4(_)) => match c.ip().to_ipv4_mapped() {
            Some(ip) => SocketAddr::new(ip.into(), c.port()),
            None => client,
        },
        _ => client,
    };
    if client.is_ipv4() != backend.is_ipv4() {
        return Err(refused(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("client {client} and backend {backend} are of different address families"),
        )));
    }
    let s = Socket::new(
        Domain::for_address(backend),
        Type::DGRAM,
        Some(Protocol::UDP),
    )
    .map_err(other)?;
    if let Some(limit) = nofile_soft_limit() {
        let reserve = fd_reserve(limit);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&s) as u64;
        if fd + reserve >= limit {
            return Err(other(io::Error::other(format!(
                "too many open files: the last {reserve} of {limit} are kept for the admin \
                 API and health checks"
            ))));
        }
    }
    s.set_nonblocking(true).map_err(other)?;
    s.set_reuse_address(true).map_err(other)?;
    set_transparent(&s, backend.is_ipv6()).map_err(other)?;
    s.bind(&client.into()).map_err(refused)?;
    // EINVAL here: the kernel will not send from this source towards the backend
    // (e.g. a loopback source to a remote backend).
    s.connect(&backend.into()).map_err(|e| {
        if e.raw_os_error() == Some(libc::EINVAL) {
            refused(e)
        } else {
            other(e)
        }
    })?;
    Ok(s.into())
}

/// A question to the kernel's routing, as `ip route get` asks it (an `RTM_GETROUTE`
/// request on a netlink socket).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteQuery {
    /// Destination.
    pub dst: std::net::IpAddr,
    /// Source (`None`: as the kernel would pick for an outgoing packet).
    pub src: Option<std::net::IpAddr>,
    /// The interface the packet arrives on (`None`: an outgoing packet of this host).
    pub iif: Option<u32>,
    /// The packet's firewall mark.
    pub mark: Option<u32>,
    /// UDP source and destination ports (rules may select on them).
    pub udp_ports: Option<(u16, u16)>,
}

/// The kernel's answer to a [`RouteQuery`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteAnswer {
    /// The route type (`RTN_UNICAST` = 1, `RTN_LOCAL` = 2: delivered to this host, ...).
    pub kind: u8,
    /// The outgoing interface, if any.
    pub oif: Option<u32>,
}

impl RouteAnswer {
    /// Whether the packet would be delivered to a socket of this host.
    pub fn is_local(&self) -> bool {
        self.kind == libc::RTN_LOCAL
    }
}

/// Netlink attribute types of `RTM_GETROUTE` (linux/rtnetlink.h) that the libc crate
/// may lack.
const RTA_DST: u16 = 1;
const RTA_SRC: u16 = 2;
const RTA_IIF: u16 = 3;
const RTA_OIF: u16 = 4;
const RTA_MARK: u16 = 16;
const RTA_IP_PROTO: u16 = 27;
const RTA_SPORT: u16 = 28;
const RTA_DPORT: u16 = 29;
const NLMSG_ERROR: u16 = 2;
const RTM_NEWROUTE: u16 = 24;

/// Asks the kernel how it would route a packet (`ip route get`, through an
/// `RTM_GETROUTE` request on a netlink socket; waits at most a second for the answer).
/// An unroutable packet is an `Err` with the kernel's errno (`EHOSTUNREACH`,
/// `ENETUNREACH`; `EXDEV` or `EINVAL` when reverse-path filtering rejects its source);
/// no netlink socket (e.g. a sandbox without `AF_NETLINK`) is an `Err` of kind
/// [`io::ErrorKind::Unsupported`], no answer within the second one of kind `WouldBlock`.
pub fn route_get(q: &RouteQuery) -> io::Result<RouteAnswer> {
    use std::io::{Read, Write};
    let (family, bits) = match q.dst {
        std::net::IpAddr::V4(_) => (libc::AF_INET as u8, 32u8),
        std::net::IpAddr::V6(_) => (libc::AF_INET6 as u8, 128u8),
    };
    fn ip_bytes(ip: std::net::IpAddr) -> Vec<u8> {
        match ip {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        }
    }
    fn attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
        let len = 4 + data.len();
        buf.extend_from_slice(&(len as u16).to_ne_bytes());
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(data);
        buf.resize(buf.len().next_multiple_of(4), 0);
    }
    const SEQ: u32 = 0x6364_6c62; // "cdlb"
    let mut m = Vec::with_capacity(128);
    // struct nlmsghdr: length (filled in below), type, flags, sequence, port id.
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&libc::RTM_GETROUTE.to_ne_bytes());
    m.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    m.extend_from_slice(&SEQ.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    let src_len = if q.src.is_some() { bits } else { 0 };
    m.extend_from_slice(&[family, bits, src_len, 0, 0, 0, 0, 0]);
    m.extend_from_slice(&0u32.to_ne_bytes());
    attr(&mut m, RTA_DST, &ip_bytes(q.dst));
    if let Some(src) = q.src {
        attr(&mut m, RTA_SRC, &ip_bytes(src));
    }
    if let Some(iif) = q.iif {
        attr(&mut m, RTA_IIF, &iif.to_ne_bytes());
    }
    if let Some(mark) = q.mark {
        attr(&mut m, RTA_MARK, &mark.to_ne_bytes());
    }
    if let Some((sport, dport)) = q.udp_ports {
        attr(&mut m, RTA_IP_PROTO, &[libc::IPPROTO_UDP as u8]);
        attr(&mut m, RTA_SPORT, &sport.to_be_bytes());
        attr(&mut m, RTA_DPORT, &dport.to_be_bytes());
    }
    let len = m.len() as u32;
    m[..4].copy_from_slice(&len.to_ne_bytes());

    let s = Socket::new(
        Domain::from(libc::AF_NETLINK),
        Type::RAW.cloexec(),
        Some(Protocol::from(libc::NETLINK_ROUTE)),
    )
    .map_err(|e| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!("no netlink socket: {e}"),
        )
    })?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(1)))?;
    // No address: a netlink socket sends to the kernel (port id 0) by default.
    (&s).write_all(&m)?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = (&s).read(&mut buf)?;
        let mut rest = &buf[..n];
        while rest.len() >= 16 {
            let u32_at =
                |b: &[u8], i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
            let mlen = (u32_at(rest, 0) as usize).clamp(16, rest.len());
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            let seq = u32_at(rest, 8);
            let body = &rest[16..mlen];
            rest = &rest[mlen.next_multiple_of(4).min(rest.len())..];
            if seq != SEQ {
                continue;
            }
            match kind {
                NLMSG_ERROR if body.len() >= 4 => {
                    let errno = -i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
                    return Err(if errno == 0 {
                        io::Error::other("netlink: an acknowledgement instead of a route")
                    } else {
                        io::Error::from_raw_os_error(errno)
                    });
                }
                RTM_NEWROUTE if body.len() >= 12 => {
                    let mut ans = RouteAnswer {
                        kind: body[7],
                        oif: None,
                    };
                    let mut attrs = &body[12..];
                    while attrs.len() >= 4 {
                        let alen = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
                        let akind = u16::from_ne_bytes([attrs[2], attrs[3]]);
                        if alen < 4 || alen > attrs.len() {
                            break;
                        }
                        if akind == RTA_OIF && alen >= 8 {
                            ans.oif = Some(u32_at(attrs, 4));
                        }
                        attrs = &attrs[alen.next_multiple_of(4).min(attrs.len())..];
                    }
                    return Ok(ans);
                }
                _ => {}
            }
        }
    }
}

/// The name of interface `index` (`if_indextoname(3)`), if it exists.
pub fn interface_name(index: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: `buf` is IF_NAMESIZE bytes, the size if_indextoname writes at most (a
    // NUL-terminated name); it outlives the call.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
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

    #[test]
    fn the_kernel_routes_loopback_locally() {
        let r = route_get(&RouteQuery {
            dst: std::net::Ipv4Addr::LOCALHOST.into(),
            src: None,
            iif: None,
            mark: None,
            udp_ports: Some((5684, 40_000)),
        })
        .expect("a route to 127.0.0.1");
        assert!(r.is_local(), "{r:?}");
        let lo = r.oif.expect("an interface");
        assert_eq!(interface_name(lo).as_deref(), Some("lo"));
    }

    #[test]
    fn an_unreachable_destination_is_the_kernels_errno() {
        // A source that is not this host's, for an outgoing packet: the kernel refuses.
        let e = route_get(&RouteQuery {
            dst: std::net::Ipv4Addr::new(192, 0, 2, 1).into(),
            src: Some(std::net::Ipv4Addr::new(198, 51, 100, 7).into()),
            iif: None,
            mark: None,
            udp_ports: None,
        })
        .unwrap_err();
        assert!(e.raw_os_error().is_some(), "{e}");
    }
}
