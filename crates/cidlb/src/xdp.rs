//! `forwarding = "xdp-dr"` in the daemon: the XDP listeners' settings from the
//! configuration, a data plane that holds NAT and XDP listeners side by side (in
//! configuration order), and the backends' MAC addresses from the kernel's neighbour
//! table, kept current by a thread.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cidlb_core::plane::{DataPlane, ListenerPlane};
use cidlb_net::{ListenerSpec, NatPlane};
use cidlb_xdp::{Attach, XdpCidFormat, XdpListener, XdpListenerConfig, XdpMode, XdpPlane};
use tracing::{info, warn};

use crate::config::{ListenerConfig, RoutingMode, XdpAttachMode, XdpDr};
use crate::health::StopSignal;
use crate::neigh::{self, fmt_mac, Neighbour};

/// How often the neighbour table is read again while every backend has a MAC.
pub const MAC_REFRESH: Duration = Duration::from_secs(1);
/// How often while some backend has none (a new one, after a reload): its traffic
/// starts within this of the kernel resolving it (the health checks make it ARP).
pub const MAC_RETRY: Duration = Duration::from_millis(100);
/// How often an unresolved backend is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The listener's CID format as the program decodes it (`None` without a format, or
/// with `routing = "address"`, where CIDs are not read): the core's `FormatSet` of the
/// listener (`ListenerConfig::format_set`, server ID maps included), as the program's
/// tables describe it.
pub fn xdp_format(l: &ListenerConfig) -> Result<Option<XdpCidFormat>, String> {
    if l.routing != RoutingMode::Cid || l.cid_format.is_none() {
        return Ok(None);
    }
    let set = l.format_set().ok_or_else(|| {
        format!(
            "listener {:?}: cid_format does not make a CID format (cidlb check-config says why)",
            l.name
        )
    })?;
    Ok(Some(XdpCidFormat::from_set(&set)))
}

/// The MACs of `ips` among `table`'s entries on the listener's interfaces (`ifindices`,
/// in its order), with the interface each is on (its position there: the first
/// interface with an entry for it).
fn macs_on(ifindices: &[u32], ips: &[IpAddr], table: &[Neighbour]) -> Vec<(IpAddr, [u8; 6], u8)> {
    ips.iter()
        .filter_map(|ip| {
            ifindices.iter().enumerate().find_map(|(k, ifindex)| {
                table
                    .iter()
                    .find(|n| n.ifindex == *ifindex && n.ip == *ip)
                    .map(|n| (*ip, n.mac, k as u8))
            })
        })
        .collect()
}

/// Backends' MACs and interfaces, as the XDP listener takes them: (IP, MAC), and (IP,
/// position of the interface).
type MacsAndPorts = (Vec<(IpAddr, [u8; 6])>, Vec<(IpAddr, u8)>);

/// `macs_on`'s answer as the XDP listener takes it.
fn split(found: Vec<(IpAddr, [u8; 6], u8)>) -> MacsAndPorts {
    found
        .into_iter()
        .map(|(ip, mac, k)| ((ip, mac), (ip, k)))
        .unzip()
}

/// One XDP listener's start-up settings: `spec` (what the NAT plane would get) with the
/// program's CID format, the interface's MAC and the backends' MACs from `table`.
pub fn xdp_listener_config(
    l: &ListenerConfig,
    x: &XdpDr,
    mut spec: ListenerSpec,
    table: &[Neighbour],
) -> Result<(XdpListenerConfig, Vec<(String, u32)>), String> {
    let interface = x.interfaces[0].clone();
    let (_, src_mac) =
        neigh::interface(&interface).map_err(|e| format!("listener {:?}: {e}", l.name))?;
    let interfaces = x
        .interfaces
        .iter()
        .map(|i| {
            neigh::interface(i)
                .map(|(ifindex, _)| (i.clone(), ifindex))
                .map_err(|e| format!("listener {:?}: {e}", l.name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ifindices: Vec<u32> = interfaces.iter().map(|(_, i)| *i).collect();
    let format = xdp_format(l)?;
    if let Some(f) = &format {
        spec.router.cid = f.cid_routing(l.cid_length);
    }
    cidlb_xdp::check_router_config(&spec.router, format.as_ref())
        .map_err(|e| format!("listener {:?}: {e}", l.name))?;
    let ips: Vec<IpAddr> = spec.backends.iter().map(|b| b.addr.ip()).collect();
    let (backend_macs, backend_ports) = split(macs_on(&ifindices, &ips, table));
    Ok((
        XdpListenerConfig {
            name: spec.name,
            addr: spec.listen,
            router: spec.router,
            format,
            backend_macs,
            backend_ports,
            backends: spec.backends,
            src_mac,
            attach: Some(Attach {
                pin: pin_for(l, x)?,
                interface,
                more: x.interfaces[1..].to_vec(),
                mode: match x.mode {
                    XdpAttachMode::Native => XdpMode::Driver,
                    XdpAttachMode::Generic => XdpMode::Skb,
                },
            }),
        },
        interfaces,
    ))
}

/// Whether `path` is on a bpf filesystem (a `bpf` mount in /proc/self/mounts holds it).
fn on_bpffs(path: &std::path::Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, Some(at), Some(kind)) = (f.next(), f.next(), f.next()) else {
            return false;
        };
        kind == "bpf" && path.starts_with(at)
    })
}

/// The listener's pins: `<pin_dir>/<name>`. The default directory is skipped (with a
/// warning) where no bpf filesystem is mounted; an explicit one must be on one.
fn pin_for(l: &ListenerConfig, x: &XdpDr) -> Result<Option<cidlb_xdp::Pin>, String> {
    let Some(dir) = &x.pin_dir else {
        return Ok(None);
    };
    if !on_bpffs(dir) {
        if dir.as_os_str() == crate::config::DEFAULT_PIN_DIR {
            warn!(listener = %l.name, pin_dir = %dir.display(),
                "no bpf filesystem at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf): the XDP program is not pinned, and stops with the daemon");
            return Ok(None);
        }
        return Err(format!(
            "listener {:?}: pin_dir {} is not on a bpf filesystem (mount -t bpf bpf DIR, or pin_dir = \"\")",
            l.name,
            dir.display()
        ));
    }
    Ok(Some(cidlb_xdp::Pin {
        dir: dir.join(&l.name),
    }))
}

/// Reads the neighbour table, probing the backends without an entry and reading it
/// again for up to `wait` (so that a daemon that starts with a cold table routes to
/// every backend it can reach from its first second).
pub fn resolve_at_start(addrs: &[std::net::SocketAddr], wait: Duration) -> Vec<Neighbour> {
    let deadline = Instant::now() + wait;
    let mut probed = false;
    loop {
        let table = neigh::dump().unwrap_or_else(|e| {
            warn!(error = %e, "cannot read the neighbour table (rtnetlink RTM_GETNEIGH)");
            Vec::new()
        });
        let missing: Vec<_> = addrs
            .iter()
            .filter(|a| !table.iter().any(|n| n.ip == a.ip()))
            .collect();
        if missing.is_empty() || Instant::now() >= deadline {
            return table;
        }
        if !probed {
            for a in missing {
                let _ = neigh::probe(*a);
            }
            probed = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The daemon's data plane: the NAT listeners and the XDP listeners, in configuration
/// order.
#[derive(Debug)]
pub struct Planes {
    nat: Option<NatPlane>,
    xdp: Option<Arc<XdpPlane>>,
    listeners: Vec<Arc<dyn ListenerPlane>>,
}

impl Planes {
    /// Puts `nat`'s and `xdp`'s listeners in the order `is_xdp` says (one entry per
    /// configured listener: whether it is an XDP one).
    pub fn new(nat: Option<NatPlane>, xdp: Option<Arc<XdpPlane>>, is_xdp: &[bool]) -> Planes {
        let mut n = nat.iter().flat_map(|p| p.listeners().iter().cloned());
        let mut x = xdp.iter().flat_map(|p| p.listeners().iter().cloned());
        let listeners = is_xdp
            .iter()
            .filter_map(|&is| if is { x.next() } else { n.next() })
            .collect::<Vec<_>>();
        debug_assert_eq!(listeners.len(), is_xdp.len());
        Planes {
            nat,
            xdp,
            listeners,
        }
    }

    /// The XDP plane, if any listener uses it.
    pub fn xdp(&self) -> Option<&Arc<XdpPlane>> {
        self.xdp.as_ref()
    }
}

impl DataPlane for Planes {
    fn listeners(&self) -> &[Arc<dyn ListenerPlane>] {
        &self.listeners
    }

    fn refresh_limits(&self) {
        if let Some(n) = &self.nat {
            n.refresh_limits();
        }
    }

    fn shutdown(&self) {
        if let Some(n) = &self.nat {
            n.shutdown();
        }
        if let Some(x) = &self.xdp {
            x.shutdown();
        }
    }
}

/// One XDP listener whose backends' MACs the resolver keeps current.
pub struct Watched {
    /// The listener.
    pub listener: Arc<XdpListener>,
    /// Its interfaces' names and indexes, in its order.
    pub interfaces: Vec<(String, u32)>,
}

impl Watched {
    fn names(&self) -> String {
        let v: Vec<&str> = self.interfaces.iter().map(|(n, _)| n.as_str()).collect();
        v.join(",")
    }

    fn ifindices(&self) -> Vec<u32> {
        self.interfaces.iter().map(|(_, i)| *i).collect()
    }
}

/// Keeps the XDP listeners' backend MACs equal to the neighbour table's entries on
/// their interfaces: reads it every [`MAC_REFRESH`], probes the backends that have no
/// entry (so that the kernel resolves them), installs what changed, and logs every
/// backend that has no MAC (it gets no traffic: the program treats it as down) and
/// every one that gets or changes one.
pub struct MacResolver {
    watched: Vec<Watched>,
    /// (listener, backend IP) → what was last installed (`None`: unresolved).
    known: HashMap<(usize, IpAddr), Option<[u8; 6]>>,
    /// (listener, backend IP) → the interface its entry was found on (by position).
    ports: HashMap<(usize, IpAddr), u8>,
    /// When each unresolved backend was last probed.
    probed: HashMap<IpAddr, Instant>,
}

impl MacResolver {
    /// The resolver for `watched`, starting from the MACs they were loaded with.
    pub fn new(watched: Vec<Watched>) -> MacResolver {
        let mut known = HashMap::new();
        for (i, w) in watched.iter().enumerate() {
            let macs: HashMap<IpAddr, [u8; 6]> = w.listener.backend_macs().into_iter().collect();
            for b in w.listener.backends() {
                let ip = b.addr.ip();
                let m = macs.get(&ip).copied();
                match m {
                    Some(m) => {
                        info!(listener = %w.listener.name(), backend = %b.name, address = %ip,
                        mac = %fmt_mac(&m), interface = %w.names(), "backend MAC from the neighbour table")
                    }
                    None => warn!(listener = %w.listener.name(), backend = %b.name, address = %ip,
                        interface = %w.names(),
                        "backend has no MAC in the neighbour table on {}: treated as down (no traffic) until it resolves (is it on the same L2 segment?)",
                        w.names()),
                }
                known.insert((i, ip), m);
            }
        }
        MacResolver {
            watched,
            known,
            ports: HashMap::new(),
            probed: HashMap::new(),
        }
    }

    /// Whether some backend has no MAC (or a reload added one not yet looked up).
    fn unresolved(&self) -> bool {
        self.watched.iter().enumerate().any(|(i, w)| {
            w.listener
                .backends()
                .iter()
                .any(|b| !matches!(self.known.get(&(i, b.addr.ip())), Some(Some(_))))
        })
    }

    /// One round: read the table, install changes, probe the unresolved.
    pub fn round(&mut self) {
        let table = match neigh::dump() {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "cannot read the neighbour table; backend MACs unchanged");
                return;
            }
        };
        tracing::debug!(entries = table.len(), "neighbour table read");
        for (i, w) in self.watched.iter().enumerate() {
            let backends = w.listener.backends();
            let ips: Vec<IpAddr> = backends.iter().map(|b| b.addr.ip()).collect();
            let found = macs_on(&w.ifindices(), &ips, &table);
            let macs: Vec<(IpAddr, [u8; 6])> = found.iter().map(|(ip, m, _)| (*ip, *m)).collect();
            let mut changed = false;
            for b in &backends {
                let ip = b.addr.ip();
                let now = macs.iter().find(|(a, _)| *a == ip).map(|(_, m)| *m);
                let port = found.iter().find(|(a, _, _)| *a == ip).map(|f| f.2);
                if let Some(k) = port {
                    if self.ports.insert((i, ip), k).is_some_and(|old| old != k) {
                        changed = true;
                    }
                }
                let before = self.known.insert((i, ip), now);
                if before != Some(now) {
                    changed = true;
                    match (before.flatten(), now) {
                        (_, Some(m)) => {
                            info!(listener = %w.listener.name(), backend = %b.name, address = %ip,
                            mac = %fmt_mac(&m), interface = %w.names(), "backend MAC from the neighbour table")
                        }
                        (_, None) => {
                            warn!(listener = %w.listener.name(), backend = %b.name, address = %ip,
                            interface = %w.names(),
                            "backend has no MAC in the neighbour table on {}: treated as down (no traffic) until it resolves",
                            w.names())
                        }
                    }
                }
                if now.is_none() {
                    let t = Instant::now();
                    let due = self
                        .probed
                        .get(&ip)
                        .is_none_or(|last| t.duration_since(*last) >= PROBE_EVERY);
                    if due {
                        let _ = neigh::probe(b.addr);
                        self.probed.insert(ip, t);
                    }
                } else {
                    self.probed.remove(&ip);
                }
            }
            let ip_set: Vec<IpAddr> = ips.clone();
            self.known
                .retain(|(li, ip), _| *li != i || ip_set.contains(ip));
            if changed {
                let (macs, ports) = split(found);
                if let Err(e) = w.listener.set_backend_macs(macs, ports) {
                    warn!(listener = %w.listener.name(), error = %e, "cannot install backend MACs");
                }
            }
        }
    }

    /// Runs rounds until `stop`.
    pub fn spawn(mut self, stop: Arc<StopSignal>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("cidlb-neigh".into())
            .spawn(move || {
                // A round every MAC_REFRESH, and every MAC_RETRY while some backend
                // has no MAC (checked every MAC_RETRY: a reload may add one any time).
                let mut last = Instant::now();
                while !stop.wait_until(Instant::now() + MAC_RETRY) {
                    if self.unresolved() || last.elapsed() >= MAC_REFRESH {
                        self.round();
                        last = Instant::now();
                    }
                }
            })
    }
}
