//! Transparent NAT: NAT mode whose upstream sockets are bound, with `IP_TRANSPARENT` /
//! `IPV6_TRANSPARENT`, to each client's own address and port, so that the servers see
//! the client; and the start-up checks of what the host must provide for it.
//!
//! Everything but how an upstream socket is opened is the NAT egress's (`nat.rs`): one
//! socket per (listener, client address:port, backend), connected to the backend; the
//! return path reads it, learns CIDs from ServerHellos and replies to the client from
//! the listener's socket. A client that rebinds gets a new socket bound to its new
//! address (an existing path is never moved), and the backend's DTLS stack decides
//! whether its session follows (RFC 9146 §6, RFC 9147 §11).
//!
//! **What the host must provide.** The backends route the clients' addresses through
//! the balancer, and the balancer's policy routing delivers the packets that come back
//! for those (non-local) addresses to this host, where the kernel finds the connected
//! transparent socket:
//!
//! ```text
//! ip rule add from BACKEND_IP ipproto udp sport BACKEND_PORT lookup 100
//! ip route add local 0.0.0.0/0 dev lo table 100
//! ```
//!
//! (or a netfilter rule marking those replies, `socket transparent 1 meta mark set 1`,
//! with `ip rule add fwmark 1 lookup 100`). [`check_host`] verifies at start what can be
//! verified: the capability (`CAP_NET_ADMIN` or `CAP_NET_RAW`), and, for each backend,
//! that the kernel would deliver a reply from it to a client address locally (an
//! `ip route get` of a test reply arriving on the backend's interface, which also runs
//! reverse-path filtering). A netfilter rule that sets the mark is beyond its sight:
//! with `reply_fwmark` it routes the test reply as marked.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::sys;

/// How a listener's upstream sockets are opened (the listener's `upstream` setting).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpstreamMode {
    /// NAT mode: each upstream socket has its own port on an address of the balancer
    /// (the listener's `upstream_source`, or one the kernel picks).
    #[default]
    Nat,
    /// Transparent NAT: each upstream socket is bound to the client's own address and
    /// port (see the module docs).
    Transparent {
        /// The firewall mark that the host's netfilter rules give backends' replies,
        /// when policy routing selects them by mark; used by [`check_host`] only.
        reply_fwmark: Option<u32>,
    },
}

impl UpstreamMode {
    /// Whether upstream sockets take the client's address.
    pub fn is_transparent(&self) -> bool {
        matches!(self, UpstreamMode::Transparent { .. })
    }
}

/// The destination of the test reply [`check_host`] routes: an address of
/// TEST-NET-1 (RFC 5737), which stands for any client.
pub const CHECK_CLIENT_V4: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 40_000);
/// The IPv6 counterpart of [`CHECK_CLIENT_V4`], in the documentation prefix
/// (RFC 3849).
pub const CHECK_CLIENT_V6: SocketAddr = SocketAddr::new(
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    40_000,
);

/// What the host lacks for a transparent listener, in words an operator can act on.
#[derive(Debug)]
pub enum SetupError {
    /// The process may not set `IP_TRANSPARENT` / `IPV6_TRANSPARENT`.
    Capability {
        /// Which family was tried.
        ipv6: bool,
        /// What `setsockopt` said (`EPERM`).
        error: io::Error,
    },
    /// A backend's replies to clients would not be delivered to this host.
    ReplyRoute {
        /// The backend.
        backend: SocketAddr,
        /// The interface its replies arrive on (`None`: it is on this host).
        iif: Option<String>,
        /// The firewall mark the test reply carried.
        mark: Option<u32>,
        /// What the kernel would do with the reply instead.
        got: String,
    },
    /// Reverse-path filtering would drop a backend's replies.
    ReversePath {
        /// The backend.
        backend: SocketAddr,
        /// The interface its replies arrive on.
        iif: String,
        /// What the kernel said.
        error: io::Error,
    },
}

impl SetupError {
    /// Whether the error is a missing permission (rather than a missing route).
    pub fn is_permission(&self) -> bool {
        matches!(self, SetupError::Capability { .. })
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Capability { ipv6, error } => write!(
                f,
                "upstream = \"transparent\" needs the CAP_NET_ADMIN or CAP_NET_RAW capability \
                 to bind upstream sockets to clients' addresses ({}: {error}); run cidlb as \
                 root or give it the narrower CAP_NET_RAW (`setcap \
                 cap_net_raw,cap_net_bind_service+ep /path/to/cidlb`, or systemd's \
                 AmbientCapabilities=CAP_NET_RAW)",
                if *ipv6 {
                    "IPV6_TRANSPARENT"
                } else {
                    "IP_TRANSPARENT"
                }
            ),
            SetupError::ReplyRoute {
                backend,
                iif,
                mark,
                got,
            } => {
                let ip = backend.ip();
                let v6 = if ip.is_ipv6() { " -6" } else { "" };
                let all = if ip.is_ipv6() { "::/0" } else { "0.0.0.0/0" };
                let client = if ip.is_ipv6() {
                    CHECK_CLIENT_V6
                } else {
                    CHECK_CLIENT_V4
                };
                let on = iif.as_ref().map_or("sent on this host".to_string(), |i| {
                    format!("arriving on {i}")
                });
                let marked = mark.map_or(String::new(), |m| format!(" with mark {m:#x}"));
                write!(
                    f,
                    "replies of backend {backend} to clients would not reach cidlb: a UDP packet \
                     from {backend} to a client ({client}){marked}, {on}, is {got}; the policy \
                     routing of upstream = \"transparent\" must deliver it to this host. "
                )?;
                match mark {
                    None => write!(
                        f,
                        "Add: `ip{v6} rule add from {ip} ipproto udp sport {} lookup 100` and \
                         `ip{v6} route add local {all} dev lo table 100` (any free table \
                         number; or mark the replies with netfilter, `ip{v6} rule add fwmark 1 \
                         lookup 100`, and set reply_fwmark = 1 on the listener); see \
                         docs/operation.md, \"Transparent NAT\"",
                        backend.port()
                    ),
                    Some(m) => write!(
                        f,
                        "Add: `ip{v6} rule add fwmark {m:#x} lookup 100` and `ip{v6} route add \
                         local {all} dev lo table 100` (any free table number; cidlb cannot \
                         see the netfilter rule that sets the mark); see docs/operation.md, \
                         \"Transparent NAT\""
                    ),
                }
            }
            SetupError::ReversePath {
                backend,
                iif,
                error,
            } => {
                let sysctl = if backend.is_ipv4() {
                    format!(
                        " (sysctl net.ipv4.conf.all.rp_filter and net.ipv4.conf.{iif}.rp_filter: \
                         1 needs the route to {} to leave by {iif}; 2 is loose)",
                        backend.ip()
                    )
                } else {
                    String::new()
                };
                write!(
                    f,
                    "replies of backend {backend} to clients would be dropped on arrival: the \
                     kernel rejects a packet from {} arriving on {iif} ({error}), which is what \
                     reverse-path filtering does{sysctl}",
                    backend.ip()
                )
            }
        }
    }
}

impl std::error::Error for SetupError {}

/// Checks that this host can serve a transparent listener on `listen` with these
/// backends (see the module docs): the capability, then each backend's reply route.
/// A backend the kernel cannot route to at all is not checked (its health checks will
/// say so), nor is any where the kernel cannot be asked (no netlink socket, e.g. a
/// systemd unit without `AF_NETLINK` in `RestrictAddressFamilies`): both are logged.
pub fn check_host(
    listen: SocketAddr,
    backends: impl IntoIterator<Item = SocketAddr>,
    reply_fwmark: Option<u32>,
) -> Result<(), SetupError> {
    let ipv6 = listen.is_ipv6();
    sys::check_transparent(ipv6).map_err(|error| SetupError::Capability { ipv6, error })?;
    for b in backends {
        check_reply_route(b, reply_fwmark)?;
    }
    Ok(())
}

/// Checks that a reply of `backend` to a client would be delivered to this host:
/// routes a test reply (from the backend's address and port to [`CHECK_CLIENT_V4`] /
/// [`CHECK_CLIENT_V6`], marked `reply_fwmark`) as arriving on the interface that
/// leads to the backend, or as sent by this host when the backend is local.
pub fn check_reply_route(backend: SocketAddr, reply_fwmark: Option<u32>) -> Result<(), SetupError> {
    let to_backend = match sys::route_get(&sys::RouteQuery {
        dst: backend.ip(),
        src: None,
        iif: None,
        mark: None,
        udp_ports: None,
    }) {
        Ok(r) => r,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Unsupported | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            tracing::warn!(%backend, error = %e,
                "cannot ask the kernel's routing (netlink): the transparent-mode reply route \
                 is not checked; allow AF_NETLINK (systemd: RestrictAddressFamilies) to check it");
            return Ok(());
        }
        Err(e) => {
            tracing::warn!(%backend, error = %e,
                "no route to the backend: its transparent-mode reply route is not checked");
            return Ok(());
        }
    };
    let client = if backend.is_ipv6() {
        CHECK_CLIENT_V6
    } else {
        CHECK_CLIENT_V4
    };
    // A backend on this host: its replies are this host's own packets.
    let iif = to_backend.oif.filter(|_| !to_backend.is_local());
    let iif_name = iif.map(|i| sys::interface_name(i).unwrap_or_else(|| format!("interface {i}")));
    let reply = sys::route_get(&sys::RouteQuery {
        dst: client.ip(),
        src: Some(backend.ip()),
        iif,
        mark: reply_fwmark,
        udp_ports: Some((backend.port(), client.port())),
    });
    let fail = |got: String| SetupError::ReplyRoute {
        backend,
        iif: iif_name.clone(),
        mark: reply_fwmark,
        got,
    };
    match reply {
        Ok(r) if r.is_local() => Ok(()),
        Ok(r) => {
            let how = match r.kind {
                1 => "routed on as unicast".to_string(),
                k => format!("given a route of type {k}"),
            };
            let dev = r
                .oif
                .and_then(sys::interface_name)
                .map_or(String::new(), |d| format!(" (out of {d})"));
            Err(fail(format!("{how}{dev}, not delivered locally")))
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV) | Some(libc::EINVAL)) => {
            match iif_name {
                Some(iif) => Err(SetupError::ReversePath {
                    backend,
                    iif,
                    error: e,
                }),
                None => Err(fail(format!("refused ({e})"))),
            }
        }
        Err(e) => Err(fail(format!("unroutable ({e})"))),
    }
}
