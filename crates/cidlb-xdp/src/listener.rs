//! One listener's XDP program: loading, the maps, and the `ListenerPlane` interface.

use std::collections::HashMap as StdHashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, RingBuf};
use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use cidlb_core::decision::{decide_address, decide_cid, BindingFacts, Decoded, FlowFacts, Lookups};
use cidlb_core::maglev::{MaglevBackend, MaglevTable};
use cidlb_core::plane::{
    BackendCounts, ListenerPlane, PlaneSnapshot, StatInfo, TableSizes, Traffic,
};
use cidlb_core::{
    Backend, BackendId, BackendState, Binding as CoreBinding, BindingSource, BindingView,
    CidExplanation, ClientExplanation, Counters, DropReason, Event, FlowView, MultiCidPolicy,
    PreparedBackends, RouteOutcome, RouterConfig, ServerId,
};
use strum::EnumCount;

use crate::abi::{self, CidKey, FlowKey};
use crate::format::{length_table, XdpCidFormat};
use crate::sys::monotonic_secs;
use crate::{XdpError, XDP_STATS};

/// The compiled program (build.rs).
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cidlb.bpf.o"));

/// The program's entry point.
const PROG_NAME: &str = "cidlb_xdp";
/// Why a backend is unreachable (`PlaneSnapshot::unreachable`): it has no MAC address
/// (the neighbour table has no usable entry for it on the listener's interface).
pub const NO_MAC: &str = "no_mac";

/// Counter slots: the routing outcomes, then drop reasons, then events (the core's
/// order), then the program's own statistics ([`XDP_STATS`]).
const OUTCOMES: usize = RouteOutcome::COUNT;
const DROPS: usize = DropReason::COUNT;
const EVENTS: usize = Event::COUNT;

/// Where and how to attach the program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attach {
    /// The interface (the one the listener's address is reached through).
    pub interface: String,
    /// More interfaces to run on (at most seven): frames may come in on any of them,
    /// and each backend is reached through the one its neighbour entry is on
    /// (`XdpListenerConfig::backend_ports`): back out of the one a frame came in on, or
    /// redirected to another.
    pub more: Vec<String>,
    /// Native (`Driver`), generic (`Skb`) or the kernel's choice.
    pub mode: XdpMode,
    /// Pin the program's link and its state maps here, so that they outlive the
    /// process (see [`Pin`]); `None`: the program is detached when the listener drops.
    pub pin: Option<Pin>,
}

/// A directory on a bpf filesystem for one listener's pins: `link` (the attachment:
/// the program keeps running while no daemon does), and the maps whose contents are
/// state — `flows`, `bindings`, `decoded`, `counters`, `traffic` — with `info` (what
/// made them: layout version, capacities, the instance secret).
///
/// A listener started with pins already there adopts them: it checks `info` (a
/// different layout version or capacity is refused, never misread), reuses the state
/// maps and the secret, fills a new program's configuration maps, and swaps the new
/// program into the pinned link in one step (`bpf_link_update`). [`XdpListener::unpin`]
/// removes them (a clean shutdown): the program is then detached when the listener
/// drops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// The directory (created if missing; its parent must be on a bpf filesystem).
    pub dir: std::path::PathBuf,
}

/// The maps pinned with a listener (their contents are state, not configuration).
const PINNED_MAPS: [&str; 6] = [
    "info", "flows", "bindings", "decoded", "counters", "traffic",
];

/// The maps' layout version: FNV-1a of `bpf/cidlb.h` (every key and value struct and
/// every size the program and the loader share), so any change to it is a new layout.
pub const LAYOUT_VERSION: u64 = {
    let b = include_bytes!("../bpf/cidlb.h");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < b.len() {
        h ^= b[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
};

/// Reads the pinned `info` map of `dir`, if any: (layout, max flows, max bindings,
/// secret).
fn read_pinned_info(dir: &std::path::Path) -> Result<Option<[u64; 8]>, XdpError> {
    let path = dir.join("info");
    if !path.exists() {
        let others: Vec<&str> = PINNED_MAPS
            .iter()
            .chain(&["link"])
            .copied()
            .filter(|n| dir.join(n).exists())
            .collect();
        if !others.is_empty() {
            return Err(XdpError::Config(format!(
                "{} holds pins ({}) without an info map: not made by this version of cidlb; \
                 refusing to reuse them (remove the directory to start afresh)",
                dir.display(),
                others.join(", ")
            )));
        }
        return Ok(None);
    }
    let data = MapData::from_pin(&path)
        .map_err(|e| XdpError::Map(format!("opening {}: {e}", path.display())))?;
    let map = Map::Array(data);
    let arr: Array<_, u64> =
        Array::try_from(&map).map_err(|e| XdpError::Map(format!("{}: {e}", path.display())))?;
    let mut out = [0u64; 8];
    for (i, v) in out.iter_mut().enumerate() {
        *v = arr
            .get(&(i as u32), 0)
            .map_err(|e| XdpError::Map(format!("{}: {e}", path.display())))?;
    }
    Ok(Some(out))
}

/// Everything an XDP listener is built from.
#[derive(Clone, Debug)]
pub struct XdpListenerConfig {
    /// The listener's name.
    pub name: String,
    /// The listener's address and port (a specific address: the program matches it).
    pub addr: SocketAddr,
    /// The routing settings (table bounds, timeouts, hash seed, mixed-CID policy...).
    pub router: RouterConfig,
    /// The routable-CID format, when the listener has one (required then: the program
    /// decodes it; see [`XdpCidFormat`]).
    pub format: Option<XdpCidFormat>,
    /// The backends.
    pub backends: Vec<Backend>,
    /// Each backend's MAC, by its IP address (the next hop of direct routing). A backend
    /// without one gets nothing: the plane treats it as down.
    pub backend_macs: Vec<(IpAddr, [u8; 6])>,
    /// Which interface each backend is reached through, by its IP address: an index
    /// into [`Attach::interface`] (0) and [`Attach::more`] (1...). A backend left out is
    /// behind the first.
    pub backend_ports: Vec<(IpAddr, u8)>,
    /// The interface's MAC: the source MAC of forwarded frames.
    pub src_mac: [u8; 6],
    /// Where to attach; `None` loads the program without attaching it (for
    /// `BPF_PROG_TEST_RUN`: tests and benchmarks).
    pub attach: Option<Attach>,
}

/// The checks that the XDP plane adds to the core's: what it cannot do (yet).
pub fn check_router_config(
    cfg: &RouterConfig,
    format: Option<&XdpCidFormat>,
) -> Result<(), XdpError> {
    if cfg.multi_cid == MultiCidPolicy::Split {
        return Err(XdpError::Config(
            "multi_cid = \"split\" is not supported by the XDP plane (it forwards whole frames \
             and cannot cut a datagram into one per backend): use \"first\" or \"drop\""
                .into(),
        ));
    }
    if cfg.new_flows_per_source.is_some() {
        return Err(XdpError::Config(
            "[limits] new_flows_per_source is not supported by the XDP plane yet".into(),
        ));
    }
    if cfg.cid.format.is_some() != format.is_some() {
        return Err(XdpError::Config(
            "the XDP plane needs the listener's CID format as an XdpCidFormat (and only with \
             a format in the router settings)"
                .into(),
        ));
    }
    for (what, n) in [
        ("max_flows", cfg.max_flows),
        ("max_bindings", cfg.max_bindings),
    ] {
        if n == 0 || n > u32::MAX as usize {
            return Err(XdpError::Config(format!(
                "{what} = {n}: the XDP plane's maps hold 1 to {} entries",
                u32::MAX
            )));
        }
    }
    Ok(())
}

/// One listener's XDP program and its maps, behind the data-plane interface.
pub struct XdpListener {
    name: String,
    addr: SocketAddr,
    inner: Mutex<Inner>,
    punts: Mutex<RingBuf<MapData>>,
    /// Where the slow path sends the punted datagrams it routes (attached listeners):
    /// a socket per interface, by the interface's MAC (the source MAC the program
    /// writes).
    tx: Vec<([u8; 6], crate::PacketSocket)>,
    /// Handles of the flow and binding maps of its own, for counting walks that do not
    /// hold the listener's lock (a walk of a million entries takes a second).
    tables: Mutex<(Map, Map)>,
    /// What the last walk counted: live flows, live bindings, and per backend.
    counts: Mutex<WalkCounts>,
    slow_path_decoded: AtomicU64,
    slow_path_forwarded: AtomicU64,
    slow_path_unsent: AtomicU64,
}

impl fmt::Debug for XdpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpListener")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

struct Inner {
    ebpf: Ebpf,
    /// The pinned attachments (one per interface), while this listener holds them.
    links: Vec<aya::programs::links::PinnedLink>,
    /// The interfaces it runs on, when several: (index, MAC) by port slot.
    ports: Vec<(u32, [u8; 6])>,
    /// Each backend's port, by IP address (absent: port 0).
    backend_ports: StdHashMap<IpAddr, u8>,
    /// Where the pins are.
    pin_dir: Option<std::path::PathBuf>,
    /// Whether this listener adopted pins that were there when it started.
    adopted: bool,
    cfg: RouterConfig,
    format: Option<XdpCidFormat>,
    backends: Vec<Backend>,
    macs: StdHashMap<IpAddr, [u8; 6]>,
    src_mac: [u8; 6],
    addr: SocketAddr,
    /// The configuration in force (what `config[live]` holds).
    config: abi::Config,
    live: u32,
    last_flip: Option<Instant>,
    /// Backend ids written to `backends` (to clear the removed ones).
    installed_ids: Vec<u16>,
    /// Keys written to `sids`.
    installed_sids: Vec<abi::SidKey>,
    /// Events the loader counts (learned bindings).
    events: Counters,
    /// What each half of `maglev` holds (only changed slots are written).
    halves: [Vec<u32>; 2],
    /// The `decoded` map's size (a token one without encrypted QUIC-LB).
    decoded_entries: u32,
}

/// A program that passes every frame (`XDP_PASS`), attached to an interface while this
/// value lives. `XDP_TX` out of a veth reaches its peer only when the peer runs an XDP
/// program too: attach this one to the peer of a veth that the listener runs on.
pub struct XdpPass {
    _ebpf: Ebpf,
}

impl fmt::Debug for XdpPass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpPass").finish_non_exhaustive()
    }
}

impl XdpPass {
    /// Loads the pass program and attaches it to `interface` (detached on drop).
    pub fn attach(interface: &str, mode: XdpMode) -> Result<XdpPass, XdpError> {
        let mut ebpf = EbpfLoader::new()
            .load(PROGRAM)
            .map_err(|e| XdpError::Load(format!("loading the XDP program: {}", error_chain(&e))))?;
        let prog: &mut Xdp = ebpf
            .program_mut("cidlb_pass")
            .ok_or_else(|| XdpError::Load("no program cidlb_pass in the object".into()))?
            .try_into()
            .map_err(|e| XdpError::Load(format!("{e}")))?;
        prog.load().map_err(|e| XdpError::Load(verifier_error(e)))?;
        prog.attach(interface, mode).map_err(|e| {
            XdpError::Attach(format!("attaching to {interface}: {}", error_chain(&e)))
        })?;
        Ok(XdpPass { _ebpf: ebpf })
    }
}

/// The result of one `BPF_PROG_TEST_RUN`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The XDP action (`XDP_DROP` 1, `XDP_PASS` 2, `XDP_TX` 3).
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
}

/// `XDP_DROP`.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS`.
pub const XDP_PASS: u32 = 2;
/// `XDP_TX`.
pub const XDP_TX: u32 = 3;
/// `XDP_REDIRECT` (a listener on several interfaces, to a backend behind another).
pub const XDP_REDIRECT: u32 = 4;

fn map_err(what: &str) -> impl Fn(aya::maps::MapError) -> XdpError + '_ {
    move |e| XdpError::Map(format!("{what}: {e}"))
}

/// The smallest gap between two switches of the live configuration: a reader (one
/// packet, microseconds) of the copy that the next change overwrites has long finished.
const FLIP_GAP: Duration = Duration::from_millis(1);
/// Punted frames older than this are not sent on (queued while no daemon serviced the
/// queue: the client has retransmitted, or given up, by then).
pub const PUNT_MAX_AGE: Duration = Duration::from_secs(1);
/// The `decoded` map's size for a listener without encrypted QUIC-LB (never used).
const DECODED_UNUSED: u32 = 1;

impl XdpListener {
    /// Loads the program (maps sized from `max_flows` / `max_bindings`), fills its maps
    /// and attaches it when asked.
    pub fn new(config: XdpListenerConfig) -> Result<XdpListener, XdpError> {
        check_router_config(&config.router, config.format.as_ref())?;
        if config.addr.ip().is_unspecified() || config.addr.port() == 0 {
            return Err(XdpError::Config(format!(
                "listener address {}: the XDP plane needs a specific address and port",
                config.addr
            )));
        }
        let stride = config
            .router
            .maglev_table_size
            .max(cidlb_core::maglev::DEFAULT_TABLE_SIZE) as u32;
        let mut config = config;
        let pin_dir = config
            .attach
            .as_ref()
            .and_then(|a| a.pin.as_ref())
            .map(|p| p.dir.clone());
        let mut adopted = false;
        if let Some(dir) = &pin_dir {
            std::fs::create_dir_all(dir)
                .map_err(|e| XdpError::Config(format!("pin directory {}: {e}", dir.display())))?;
            if let Some(info) = read_pinned_info(dir)? {
                let want = [
                    LAYOUT_VERSION,
                    config.router.max_flows as u64,
                    config.router.max_bindings as u64,
                ];
                if info[0] != want[0] {
                    return Err(XdpError::Config(format!(
                        "the maps pinned in {} have layout {:016x}, this build's is {:016x}: \
                         refusing to read them (stop the running cidlb cleanly, or remove the \
                         directory, to start with new maps; the pinned program keeps \
                         forwarding until then)",
                        dir.display(),
                        info[0],
                        want[0]
                    )));
                }
                if info[1] != want[1] || info[2] != want[2] {
                    return Err(XdpError::Config(format!(
                        "the maps pinned in {} hold {} flows and {} bindings, the configuration \
                         asks for {} and {}: map sizes are fixed; restore the sizes, or stop \
                         cleanly (or remove the directory) to start with new maps",
                        dir.display(),
                        info[1],
                        info[2],
                        want[1],
                        want[2]
                    )));
                }
                // The same secret: address tags in the adopted maps stay valid.
                config.router.secret = [info[3], info[4], info[5], info[6]];
                adopted = true;
            }
        }
        // The slow path's cache of encrypted-CID decodings: as large as the binding
        // table where the format has encrypted QUIC-LB, else a token (it stays empty;
        // 1M entries would be ~150 MB of kernel memory for nothing).
        let decoded_entries = if config
            .format
            .as_ref()
            .is_some_and(XdpCidFormat::has_encrypted)
        {
            config.router.max_bindings as u32
        } else {
            DECODED_UNUSED
        };
        if let Some(dir) = &pin_dir {
            // A pinned cache of another size (the format changed across the restart):
            // start a new one. It only memoises a pure function; the running program
            // keeps its own until the new one replaces it.
            let path = dir.join("decoded");
            if path.exists() {
                let size = MapData::from_pin(&path)
                    .and_then(|m| m.info())
                    .map(|i| i.max_entries())
                    .map_err(|e| XdpError::Map(format!("{}: {e}", path.display())))?;
                if size != decoded_entries {
                    std::fs::remove_file(&path)
                        .map_err(|e| XdpError::Map(format!("removing {}: {e}", path.display())))?;
                }
            }
        }
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries("bindings", config.router.max_bindings as u32)
            .map_max_entries("decoded", decoded_entries)
            .map_max_entries("flows", config.router.max_flows as u32)
            .map_max_entries("maglev", 2 * stride);
        let pin_paths: Vec<(&str, std::path::PathBuf)> = match &pin_dir {
            Some(d) => PINNED_MAPS.iter().map(|n| (*n, d.join(n))).collect(),
            None => Vec::new(),
        };
        for (n, p) in &pin_paths {
            loader.map_pin_path(n, p.as_path());
        }
        let mut ebpf = loader
            .load(PROGRAM)
            .map_err(|e| XdpError::Load(format!("loading the XDP program: {}", error_chain(&e))))?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROG_NAME)
            .ok_or_else(|| XdpError::Load("no program cidlb_xdp in the object".into()))?
            .try_into()
            .map_err(|e| XdpError::Load(format!("{e}")))?;
        prog.load().map_err(|e| XdpError::Load(verifier_error(e)))?;
        let punts = RingBuf::try_from(
            ebpf.take_map("punts")
                .ok_or_else(|| XdpError::Load("no map punts".into()))?,
        )
        .map_err(map_err("punts"))?;
        // Several interfaces: each one's index and MAC, by port slot.
        let ports = match &config.attach {
            Some(a) if !a.more.is_empty() => {
                if a.more.len() >= abi::MAX_PORTS {
                    return Err(XdpError::Config(format!(
                        "{} interfaces: at most {}",
                        a.more.len() + 1,
                        abi::MAX_PORTS
                    )));
                }
                std::iter::once(&a.interface)
                    .chain(&a.more)
                    .map(|n| interface_info(n))
                    .collect::<Result<Vec<_>, _>>()?
            }
            _ => Vec::new(),
        };
        let mut inner = Inner {
            ebpf,
            links: Vec::new(),
            ports,
            backend_ports: config.backend_ports.into_iter().collect(),
            pin_dir: pin_dir.clone(),
            adopted,
            cfg: config.router,
            format: config.format,
            backends: config.backends,
            macs: config.backend_macs.into_iter().collect(),
            src_mac: config.src_mac,
            addr: config.addr,
            config: abi::Config {
                maglev_stride: stride,
                ..abi::Config::default()
            },
            live: 0,
            last_flip: None,
            installed_ids: Vec::new(),
            installed_sids: Vec::new(),
            events: Counters::default(),
            halves: [Vec::new(), Vec::new()],
            decoded_entries,
        };
        inner.check_backends(&inner.backends)?;
        inner.install_masks()?;
        inner.install_all()?;
        if pin_dir.is_some() {
            inner.write_info()?;
        }
        if let Some(a) = &config.attach {
            let names: Vec<&String> = std::iter::once(&a.interface).chain(&a.more).collect();
            for (k, name) in names.iter().enumerate() {
                let link = attach_one(&mut inner.ebpf, name, a.mode, pin_dir.as_deref(), k)?;
                if let Some(l) = link {
                    if k == 0 && adopted {
                        tracing::info!(pins = ?pin_dir, adopted,
                            "XDP: replaced the pinned program in place (no frame missed)");
                    }
                    inner.links.push(l);
                }
            }
            // Links pinned for interfaces this configuration no longer lists: detached
            // (their program would go on forwarding there).
            if let Some(dir) = &pin_dir {
                for k in names.len()..abi::MAX_PORTS {
                    let path = dir.join(link_name(k));
                    if path.exists() {
                        if let Ok(link) = aya::programs::links::PinnedLink::from_pin(&path) {
                            let _ = link.unpin();
                        }
                        let _ = std::fs::remove_file(&path);
                        tracing::info!(pin = %path.display(),
                            "XDP: detached the program from an interface no longer configured");
                    }
                }
            }
        }
        let mut tx = Vec::new();
        if let Some(a) = &config.attach {
            for name in std::iter::once(&a.interface).chain(&a.more) {
                let (_, mac) = interface_info(name)?;
                let sock = crate::PacketSocket::open(name).map_err(|e| {
                    XdpError::Attach(format!("the slow path's AF_PACKET socket on {name}: {e}"))
                })?;
                tx.push((mac, sock));
            }
        }
        let own = |name: &str| -> Result<Map, XdpError> {
            let m = inner.ebpf.map(name).expect("loaded");
            let data = match m {
                Map::LruHashMap(d) | Map::HashMap(d) => d,
                _ => return Err(XdpError::Map(format!("{name}: not a hash map"))),
            };
            let fd = data
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| XdpError::Map(format!("{name}: {e}")))?;
            Ok(Map::LruHashMap(
                MapData::from_fd(fd).map_err(map_err("a table handle"))?,
            ))
        };
        let tables = Mutex::new((own("flows")?, own("bindings")?));
        Ok(XdpListener {
            name: config.name,
            addr: config.addr,
            inner: Mutex::new(inner),
            punts: Mutex::new(punts),
            tx,
            tables,
            counts: Mutex::new(WalkCounts::default()),
            slow_path_decoded: AtomicU64::new(0),
            slow_path_forwarded: AtomicU64::new(0),
            slow_path_unsent: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the backends' MACs (by IP address); backends without one count as down.
    /// `ports`: the interface each is reached through (see
    /// [`XdpListenerConfig::backend_ports`]).
    pub fn set_backend_macs(
        &self,
        macs: Vec<(IpAddr, [u8; 6])>,
        ports: Vec<(IpAddr, u8)>,
    ) -> Result<(), XdpError> {
        let mut g = self.lock();
        g.macs = macs.into_iter().collect();
        g.backend_ports = ports.into_iter().collect();
        g.install_backends()?;
        g.rebuild_maglev()
    }

    /// Removes this listener's pins (a clean shutdown): the program is detached when the
    /// listener drops, and the maps freed. Without it, they outlive the process and the
    /// program keeps forwarding with the last configuration (a restart adopts them).
    pub fn unpin(&self) -> Result<(), XdpError> {
        let mut g = self.lock();
        let Some(dir) = g.pin_dir.take() else {
            return Ok(());
        };
        let links = std::mem::take(&mut g.links);
        for link in links {
            // The link's fd stays open (held by the program) until the listener drops.
            let fd = link
                .unpin()
                .map_err(|e| XdpError::Attach(format!("unpinning the link: {e}")))?;
            if let Ok(l) = aya::programs::xdp::XdpLink::try_from(fd) {
                if let Some(Ok(prog)) = g.ebpf.program_mut(PROG_NAME).map(<&mut Xdp>::try_from) {
                    let _ = prog.attach_to_link(l);
                }
            }
        }
        for n in PINNED_MAPS {
            let _ = std::fs::remove_file(dir.join(n));
        }
        for k in 1..abi::MAX_PORTS {
            let _ = std::fs::remove_file(dir.join(link_name(k)));
        }
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }

    /// Whether this listener adopted the pins (program, maps, secret) of an earlier one.
    pub fn adopted(&self) -> bool {
        self.lock().adopted
    }

    /// Whether this listener's program and state are pinned (outlive the process).
    pub fn pinned(&self) -> bool {
        self.lock().pin_dir.is_some()
    }

    /// The backends this listener routes to now (after the last reload).
    pub fn backends(&self) -> Vec<Backend> {
        self.lock().backends.clone()
    }

    /// The backends' MACs in force (by IP address).
    pub fn backend_macs(&self) -> Vec<(IpAddr, [u8; 6])> {
        self.lock().macs.iter().map(|(ip, m)| (*ip, *m)).collect()
    }

    /// Installs a learned binding CID → `backend` (what the NAT plane learns from a
    /// ServerHello; the daemon installs them in this plane).
    pub fn learn_binding(&self, cid: &[u8], backend: BackendId) -> Result<(), XdpError> {
        let key = CidKey::new(cid)
            .ok_or_else(|| XdpError::Config(format!("a CID of {} octets", cid.len())))?;
        let mut g = self.lock();
        let now = monotonic_secs();
        let map: HashMap<_, CidKey, abi::Binding> =
            HashMap::try_from(g.ebpf.map("bindings").expect("bindings map"))
                .map_err(map_err("bindings"))?;
        if let Ok(old) = map.get(&key, 0) {
            let alive = !expired(old.last_seen, now, secs(g.cfg.binding_idle));
            if alive && old.backend != backend.0 {
                g.events.events[Event::BindingReplaced as usize] += 1;
            }
        }
        let mut map: HashMap<_, CidKey, abi::Binding> =
            HashMap::try_from(g.ebpf.map_mut("bindings").expect("bindings map"))
                .map_err(map_err("bindings"))?;
        map.insert(
            key,
            abi::Binding {
                backend: backend.0,
                source: abi::LEARNED,
                pad: 0,
                last_seen: now,
                addr_tag: 0,
            },
            0,
        )
        .map_err(map_err("bindings"))?;
        g.events.events[Event::BindingLearned as usize] += 1;
        Ok(())
    }

    /// Counts the live flows and bindings (per backend too) by walking both tables,
    /// without holding the listener's lock (routing, the slow path and operator actions
    /// go on meanwhile), and keeps the result for `snapshot(false)`. O(entries): about
    /// a second per million. [`crate::XdpPlane`] calls it every few seconds.
    pub fn count_tables(&self) -> WalkCounts {
        let (flow_idle, binding_idle) = {
            let g = self.lock();
            (secs(g.cfg.flow_idle), secs(g.cfg.binding_idle))
        };
        let c = {
            let t = self.tables.lock().unwrap_or_else(|p| p.into_inner());
            walk(&t.0, &t.1, monotonic_secs(), flow_idle, binding_idle)
        };
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()) = c.clone();
        c
    }

    /// The slow path: decodes the encrypted CIDs the program queued (with the
    /// listener's `FormatSet`, AES-NI where the CPU has it) and caches each decoding in
    /// the `decoded` map, so that the program routes the CID's next datagrams itself.
    /// Then, on a listener attached to an interface, it runs the program again on each
    /// queued frame (the CID now decoded: the same decision, counters and seeding as any
    /// datagram) and sends what the program forwards out of the interface, so that the
    /// first datagram of a CID is not lost. Frames queued over [`PUNT_MAX_AGE`] ago
    /// (while no daemon ran) are not sent. Returns how many records it took (at most
    /// 4096 a call). [`crate::XdpPlane`] calls it every 2 ms.
    pub fn service_punts(&self) -> usize {
        let mut cids = Vec::new();
        let mut frames: Vec<Vec<u8>> = Vec::new();
        let mut stale = 0u64;
        let now_ns = crate::sys::monotonic_coarse_ns();
        {
            let mut rb = self.punts.lock().unwrap_or_else(|p| p.into_inner());
            while let Some(item) = rb.next() {
                if item.len() >= size_of::<abi::Punt>() {
                    let n = usize::from(item[abi::MAX_CID_LEN]).min(abi::MAX_CID_LEN);
                    if let Some(k) = CidKey::new(&item[..n]) {
                        cids.push(k);
                    }
                    let at = std::mem::offset_of!(abi::Punt, len);
                    let len = usize::from(u16::from_ne_bytes([item[at], item[at + 1]]))
                        .min(abi::PUNT_FRAME);
                    let at = std::mem::offset_of!(abi::Punt, queued_ns);
                    let queued = u64::from_ne_bytes(item[at..at + 8].try_into().expect("8"));
                    let at = std::mem::offset_of!(abi::Punt, frame);
                    if len > 0 && !self.tx.is_empty() {
                        if now_ns.saturating_sub(queued) > PUNT_MAX_AGE.as_nanos() as u64 {
                            stale += 1;
                        } else {
                            frames.push(item[at..at + len].to_vec());
                        }
                    }
                }
                if cids.len() >= 4096 {
                    break;
                }
            }
        }
        if stale > 0 {
            self.slow_path_unsent.fetch_add(stale, Relaxed);
        }
        if cids.is_empty() {
            return 0;
        }
        let taken = cids.len();
        {
            let mut g = self.lock();
            let Some(set) = g.format.as_ref().map(|f| f.format_set().clone()) else {
                return taken;
            };
            let Ok(mut map) = HashMap::<_, CidKey, abi::Decoded>::try_from(
                g.ebpf.map_mut("decoded").expect("decoded map"),
            ) else {
                return taken;
            };
            cids.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            cids.dedup();
            let mut n = 0;
            for k in cids {
                let _ = map.insert(k, decoded_value(&set, k.as_bytes()), 0);
                n += 1;
            }
            self.slow_path_decoded.fetch_add(n as u64, Relaxed);
        }
        if !self.tx.is_empty() {
            let (mut sent, mut unsent) = (0u64, 0u64);
            for f in frames {
                match self.test_run(&f) {
                    // Out of the interface whose MAC the program made the source (a
                    // redirect on a listener with several: the test run does not know
                    // which interface the frame came in on).
                    Ok(out) if out.action == XDP_TX || out.action == XDP_REDIRECT => {
                        let src = &out.frame[6..12];
                        let sock = self
                            .tx
                            .iter()
                            .find(|(mac, _)| mac[..] == *src)
                            .map_or(&self.tx[0].1, |(_, s)| s);
                        match sock.send(&out.frame) {
                            Ok(()) => sent += 1,
                            Err(e) => {
                                unsent += 1;
                                tracing::debug!(listener = %self.name, error = %e,
                                    "slow path: cannot send a punted datagram");
                            }
                        }
                    }
                    // Dropped (or passed) on the second run: counted by the program.
                    Ok(_) => {}
                    Err(e) => {
                        unsent += 1;
                        tracing::debug!(listener = %self.name, error = %e,
                            "slow path: cannot run the program on a punted datagram");
                    }
                }
            }
            self.slow_path_forwarded.fetch_add(sent, Relaxed);
            self.slow_path_unsent.fetch_add(unsent, Relaxed);
        }
        taken
    }

    /// Runs the program once on `frame` through `BPF_PROG_TEST_RUN` (the maps are the
    /// live ones: the run routes, counts and seeds as a real frame would).
    pub fn test_run(&self, frame: &[u8]) -> Result<TestRunOutput, XdpError> {
        let (r, mut out) = self.run_program(frame, 1)?;
        out.truncate(r.data_size_out as usize);
        Ok(TestRunOutput {
            action: r.return_value,
            frame: out,
        })
    }

    /// Runs the program `repeat` times on `frame` in the kernel and returns the mean
    /// time per run (the kernel's own measurement; for benchmarks).
    pub fn bench_run(&self, frame: &[u8], repeat: u32) -> Result<Duration, XdpError> {
        self.run_program(frame, repeat).map(|(r, _)| r.duration)
    }

    /// `BPF_PROG_TEST_RUN` of the program on `frame`, `repeat` times: the kernel's
    /// result and the output buffer (the frame as the last run left it).
    fn run_program(
        &self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(aya::programs::TestRunResult, Vec<u8>), XdpError> {
        let g = self.lock();
        let prog: &Xdp = g
            .ebpf
            .program(PROG_NAME)
            .expect("loaded")
            .try_into()
            .expect("an XDP program");
        let mut out = vec![0u8; frame.len() + 256];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat,
                ..TestRunOptions::default()
            })
            .map_err(|e| XdpError::Load(format!("BPF_PROG_TEST_RUN: {}", error_chain(&e))))?;
        Ok((r, out))
    }

    /// Fills the tables for benchmarks and capacity tests: `n` seeded bindings for the
    /// CIDs `cid(i)`, each last used from `client(i)`, and `n` flows for the addresses
    /// `client(i)`, all to `backend`.
    pub fn fill(
        &self,
        n: usize,
        cid: impl Fn(usize) -> Vec<u8>,
        client: impl Fn(usize) -> SocketAddr,
        backend: BackendId,
    ) -> Result<(), XdpError> {
        let mut g = self.lock();
        let now = monotonic_secs();
        let tag_key = g.cfg.secret[1];
        {
            let mut map: HashMap<_, CidKey, abi::Binding> =
                HashMap::try_from(g.ebpf.map_mut("bindings").expect("bindings map"))
                    .map_err(map_err("bindings"))?;
            for i in 0..n {
                let k = CidKey::new(&cid(i)).ok_or_else(|| XdpError::Config("CID".into()))?;
                let v = abi::Binding {
                    backend: backend.0,
                    source: abi::SEEDED,
                    pad: 0,
                    last_seen: now,
                    addr_tag: FlowKey::from(client(i)).tag(tag_key),
                };
                map.insert(k, v, 0).map_err(map_err("bindings"))?;
            }
        }
        let mut map: HashMap<_, FlowKey, abi::Flow> =
            HashMap::try_from(g.ebpf.map_mut("flows").expect("flows map"))
                .map_err(map_err("flows"))?;
        for i in 0..n {
            let v = abi::Flow {
                backend: backend.0,
                seeds: abi::MAX_SEEDS,
                pad: 0,
                last_seen: now,
            };
            map.insert(FlowKey::from(client(i)), v, 0)
                .map_err(map_err("flows"))?;
        }
        Ok(())
    }

    /// The binding map's entry for `cid` as stored (expired or not): for tests.
    #[doc(hidden)]
    pub fn binding_entry(&self, cid: &[u8]) -> Option<abi::Binding> {
        let g = self.lock();
        let map = HashMap::<_, CidKey, abi::Binding>::try_from(g.ebpf.map("bindings")?).ok()?;
        map.get(&CidKey::new(cid)?, 0).ok()
    }

    /// Bytes the kernel accounts to the flow map and to the binding map (`memlock` in
    /// the maps' fdinfo), with their capacities.
    pub fn map_memory(&self) -> Result<[(usize, usize); 2], XdpError> {
        let g = self.lock();
        let read = |name: &str, cap: usize| -> Result<(usize, usize), XdpError> {
            let Some(Map::LruHashMap(m)) = g.ebpf.map(name) else {
                return Err(XdpError::Map(format!("no LRU map {name}")));
            };
            Ok((memlock(m)?, cap))
        };
        Ok([
            read("flows", g.cfg.max_flows)?,
            read("bindings", g.cfg.max_bindings)?,
        ])
    }

    fn explain_at(&self, now: u32, cid: &[u8], client: Option<SocketAddr>) -> CidExplanation {
        let g = self.lock();
        let fkey = client.map(FlowKey::from);
        let mut v = MapView::new(&g, now, Some(cid), fkey);
        let decision = decide_cid(&mut v);
        let decoded = v.decode();
        CidExplanation {
            decision,
            binding: v.binding_view(),
            decoded,
            flow: v.flow_view(),
            hashed: g.maglev_pick(cid),
        }
    }
}

/// The slow path's answer for `cid`, as the `decoded` map stores it.
fn decoded_value(set: &cidlb_cidformat::FormatSet, cid: &[u8]) -> abi::Decoded {
    match set.decode(cid) {
        Ok(d) => {
            let id = d.routing_id.as_bytes();
            let mut v = abi::Decoded {
                status: abi::DECODED_SID,
                len: id.len() as u8,
                ..abi::Decoded::default()
            };
            v.id[..id.len()].copy_from_slice(id);
            v
        }
        Err(_) => abi::Decoded {
            status: abi::DECODED_UNDECODABLE,
            ..abi::Decoded::default()
        },
    }
}

fn secs(d: Duration) -> u32 {
    d.as_secs().min(u64::from(u32::MAX)) as u32
}

/// The program's `idle_expired`.
fn expired(last_seen: u32, now: u32, idle: u32) -> bool {
    now > last_seen && now - last_seen > idle
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn verifier_error(e: aya::programs::ProgramError) -> String {
    let s = error_chain(&e);
    // The verifier's log ends with its verdict; keep the tail readable.
    let tail: String = s
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    format!("the verifier rejected the XDP program: {tail}")
}

/// `memlock` of a map's fdinfo: what the kernel accounts to it.
fn memlock(m: &MapData) -> Result<usize, XdpError> {
    let fd = m.fd().as_fd().as_raw_fd();
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
        .map_err(|e| XdpError::Map(format!("fdinfo: {e}")))?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| XdpError::Map("no memlock in fdinfo".into()))
}

impl Inner {
    /// Records what made the pinned maps (see [`Pin`]).
    fn write_info(&mut self) -> Result<(), XdpError> {
        let vals = [
            LAYOUT_VERSION,
            self.cfg.max_flows as u64,
            self.cfg.max_bindings as u64,
            self.cfg.secret[0],
            self.cfg.secret[1],
            self.cfg.secret[2],
            self.cfg.secret[3],
            0,
        ];
        let mut arr: Array<_, u64> = Array::try_from(self.ebpf.map_mut("info").expect("info map"))
            .map_err(map_err("info"))?;
        for (i, v) in vals.iter().enumerate() {
            arr.set(i as u32, v, 0).map_err(map_err("info"))?;
        }
        Ok(())
    }

    fn check_backends(&self, backends: &[Backend]) -> Result<(), XdpError> {
        if let Some(b) = backends
            .iter()
            .find(|b| usize::from(b.id.0) >= abi::MAX_BACKENDS)
        {
            return Err(XdpError::Config(format!(
                "backend {:?} has id {}: the XDP plane holds ids below {}",
                b.name,
                b.id.0,
                abi::MAX_BACKENDS
            )));
        }
        Ok(())
    }

    fn install_masks(&mut self) -> Result<(), XdpError> {
        let mut arr: Array<_, [u64; 4]> =
            Array::try_from(self.ebpf.map_mut("cid_masks").expect("cid_masks map"))
                .map_err(map_err("cid_masks"))?;
        for n in 0..=abi::MAX_CID_LEN {
            let mut bytes = [0u8; 32];
            bytes[..n].fill(0xff);
            let mut m = [0u64; 4];
            for (j, w) in m.iter_mut().enumerate() {
                *w = u64::from_ne_bytes(bytes[8 * j..8 * j + 8].try_into().expect("8 bytes"));
            }
            arr.set(n as u32, m, 0).map_err(map_err("cid_masks"))?;
        }
        Ok(())
    }

    /// Drops the slow path's cached decodings of CIDs whose first octet names one of
    /// `rotations` (QUIC-LB's top three bits); returns how many.
    fn forget_decoded(&mut self, rotations: &[u8]) -> usize {
        let Ok(mut map) = HashMap::<_, CidKey, abi::Decoded>::try_from(
            self.ebpf.map_mut("decoded").expect("decoded map"),
        ) else {
            return 0;
        };
        let stale: Vec<CidKey> = map
            .keys()
            .flatten()
            .filter(|k| {
                k.as_bytes()
                    .first()
                    .is_some_and(|b| rotations.contains(&cidlb_cidformat::quic_lb::rotation_of(*b)))
            })
            .collect();
        stale.iter().filter(|k| map.remove(k).is_ok()).count()
    }

    fn install_ports(&mut self) -> Result<(), XdpError> {
        if self.ports.is_empty() {
            return Ok(());
        }
        let mut arr: Array<_, abi::Port> =
            Array::try_from(self.ebpf.map_mut("ports").expect("ports map"))
                .map_err(map_err("ports"))?;
        for (k, (ifindex, mac)) in self.ports.iter().enumerate() {
            let v = abi::Port {
                ifindex: *ifindex,
                mac: *mac,
                pad: [0; 2],
            };
            arr.set(k as u32, v, 0).map_err(map_err("ports"))?;
        }
        let mut dev = aya::maps::DevMap::try_from(self.ebpf.map_mut("tx_ports").expect("tx_ports"))
            .map_err(map_err("tx_ports"))?;
        for (k, (ifindex, _)) in self.ports.iter().enumerate() {
            dev.set(k as u32, *ifindex, None, 0)
                .map_err(|e| XdpError::Map(format!("tx_ports: {e}")))?;
        }
        Ok(())
    }

    fn install_all(&mut self) -> Result<(), XdpError> {
        self.install_ports()?;
        self.install_backends()?;
        self.install_sids()?;
        self.rebuild_maglev()
    }

    /// A backend's state as the program sees it: down without a MAC.
    fn effective(&self, b: &Backend) -> BackendState {
        if self.macs.contains_key(&b.addr.ip()) {
            b.state
        } else {
            BackendState::Down
        }
    }

    fn install_backends(&mut self) -> Result<(), XdpError> {
        let states: Vec<(u16, abi::Backend)> = self
            .backends
            .iter()
            .map(|b| {
                let state = match self.effective(b) {
                    BackendState::Up => abi::STATE_UP,
                    BackendState::Draining => abi::STATE_DRAINING,
                    BackendState::Down => abi::STATE_DOWN,
                };
                let mac = self.macs.get(&b.addr.ip()).copied().unwrap_or([0; 6]);
                let port = self.backend_ports.get(&b.addr.ip()).copied().unwrap_or(0);
                (b.id.0, abi::Backend { mac, state, port })
            })
            .collect();
        let mut arr: Array<_, abi::Backend> =
            Array::try_from(self.ebpf.map_mut("backends").expect("backends map"))
                .map_err(map_err("backends"))?;
        for (id, v) in &states {
            arr.set(u32::from(*id), *v, 0)
                .map_err(map_err("backends"))?;
        }
        for old in &self.installed_ids {
            if !states.iter().any(|(id, _)| id == old) {
                arr.set(u32::from(*old), abi::Backend::default(), 0)
                    .map_err(map_err("backends"))?;
            }
        }
        self.installed_ids = states.iter().map(|(id, _)| *id).collect();
        Ok(())
    }

    fn install_sids(&mut self) -> Result<(), XdpError> {
        let mut entries: Vec<(abi::SidKey, abi::SidVal)> = Vec::new();
        if let Some(f) = &self.format {
            entries = f.map_entries();
            for b in &self.backends {
                if let Some(sid) = b.server_id {
                    entries.push((
                        abi::SidKey::new(abi::SID_ROUTING, sid.as_bytes()),
                        abi::SidVal {
                            backend: u32::from(b.id.0),
                            ..abi::SidVal::default()
                        },
                    ));
                }
            }
        }
        let mut map: HashMap<_, abi::SidKey, abi::SidVal> =
            HashMap::try_from(self.ebpf.map_mut("sids").expect("sids map"))
                .map_err(map_err("sids"))?;
        for (k, v) in &entries {
            map.insert(*k, *v, 0).map_err(map_err("sids"))?;
        }
        for old in &self.installed_sids {
            if !entries.iter().any(|(k, _)| k == old) {
                let _ = map.remove(old);
            }
        }
        self.installed_sids = entries.iter().map(|(k, _)| *k).collect();
        Ok(())
    }

    /// Builds the core's Maglev table over the backends that take new flows (as
    /// `Router::build_maglev` does), writes it to the idle half and switches to it.
    fn rebuild_maglev(&mut self) -> Result<(), XdpError> {
        let eligible: Vec<&Backend> = self
            .backends
            .iter()
            .filter(|b| self.effective(b) == BackendState::Up && b.weight > 0)
            .collect();
        let input: Vec<MaglevBackend<'_>> = eligible
            .iter()
            .map(|b| MaglevBackend::new(b.name.as_bytes(), b.weight))
            .collect();
        let size = self.cfg.maglev_table_size;
        let stride = self.config.maglev_stride as usize;
        if size > stride {
            return Err(XdpError::Config(format!(
                "maglev table size {size}: this program was loaded for at most {stride} (restart to grow it)"
            )));
        }
        let table = MaglevTable::new(&input, size)
            .map_err(|e| XdpError::Config(format!("cannot build the Maglev table: {e}")))?;
        let ids: Vec<u32> = eligible.iter().map(|b| u32::from(b.id.0)).collect();
        let half = 1 - self.config.maglev_half;
        let base = u32::from(half) * self.config.maglev_stride;
        let len = if table.is_empty() { 0 } else { size as u32 };
        let want: Vec<u32> = (0..len)
            .map(|slot| {
                table
                    .lookup(u64::from(slot))
                    .map_or(abi::NO_BACKEND, |i| ids[i])
            })
            .collect();
        {
            let have = &self.halves[usize::from(half)];
            let mut arr: Array<_, u32> =
                Array::try_from(self.ebpf.map_mut("maglev").expect("maglev map"))
                    .map_err(map_err("maglev"))?;
            for (slot, id) in want.iter().enumerate() {
                if have.get(slot) != Some(id) {
                    arr.set(base + slot as u32, *id, 0)
                        .map_err(map_err("maglev"))?;
                }
            }
        }
        self.halves[usize::from(half)] = want;
        self.config.maglev_half = half;
        self.config.maglev_len = len;
        self.write_config()
    }

    /// Writes the settings to the idle copy of `config` and makes it live.
    fn write_config(&mut self) -> Result<(), XdpError> {
        let c = &mut self.config;
        let ip = match self.addr.ip() {
            IpAddr::V4(v4) => {
                c.family = 4;
                v4.to_ipv6_mapped().octets()
            }
            IpAddr::V6(v6) => {
                c.family = 6;
                v6.octets()
            }
        };
        c.vip = ip;
        c.port = self.addr.port().to_be();
        c.route_by_cid = u8::from(self.cfg.route_by_cid);
        c.multi_cid = match self.cfg.multi_cid {
            MultiCidPolicy::Drop => abi::MULTI_DROP,
            _ => abi::MULTI_FIRST,
        };
        c.src_mac = self.src_mac;
        c.n_ports = self.ports.len() as u8;
        c.flow_idle = secs(self.cfg.flow_idle);
        c.binding_idle = secs(self.cfg.binding_idle);
        c.hash_seed = self.cfg.hash_seed;
        c.tag_key = self.cfg.secret[1];
        match &self.format {
            Some(f) => {
                f.program_tables(c);
                length_table(&f.cid_routing(self.cfg.cid.fixed_len), c);
            }
            None => {
                c.format = abi::FORMAT_NONE;
                c.prefix_len = 0;
                c.rot = [abi::Rotation::default(); 8];
                length_table(&self.cfg.cid, c);
            }
        }
        let value = *c;
        if let Some(t) = self.last_flip {
            let since = t.elapsed();
            if since < FLIP_GAP {
                std::thread::sleep(FLIP_GAP - since);
            }
        }
        let next = 1 - self.live;
        {
            let mut arr: Array<_, abi::Config> =
                Array::try_from(self.ebpf.map_mut("config").expect("config map"))
                    .map_err(map_err("config"))?;
            arr.set(next, value, 0).map_err(map_err("config"))?;
        }
        let mut live: Array<_, u32> =
            Array::try_from(self.ebpf.map_mut("config_live").expect("config_live map"))
                .map_err(map_err("config_live"))?;
        live.set(0, next, 0).map_err(map_err("config_live"))?;
        self.live = next;
        self.last_flip = Some(Instant::now());
        Ok(())
    }

    fn backend_state(&self, id: u16) -> u8 {
        let Ok(arr) =
            Array::<_, abi::Backend>::try_from(self.ebpf.map("backends").expect("backends map"))
        else {
            return abi::STATE_ABSENT;
        };
        if usize::from(id) >= abi::MAX_BACKENDS {
            return abi::STATE_ABSENT;
        }
        arr.get(&u32::from(id), 0)
            .map_or(abi::STATE_ABSENT, |b| b.state)
    }

    fn serves(&self, id: u16) -> bool {
        matches!(self.backend_state(id), abi::STATE_UP | abi::STATE_DRAINING)
    }

    fn exists(&self, id: u16) -> bool {
        self.backend_state(id) != abi::STATE_ABSENT
    }

    /// The program's `maglev_pick`, read from the live half.
    fn maglev_pick(&self, input: &[u8]) -> Option<BackendId> {
        let c = &self.config;
        if c.maglev_len == 0 || c.maglev_len > c.maglev_stride {
            return None;
        }
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(input, c.hash_seed);
        let mut slot = (h % u64::from(c.maglev_len)) as u32;
        if c.maglev_half != 0 {
            slot += c.maglev_stride;
        }
        let arr = Array::<_, u32>::try_from(self.ebpf.map("maglev").expect("maglev map")).ok()?;
        match arr.get(&slot, 0) {
            Ok(id) if id != abi::NO_BACKEND => Some(BackendId(id as u16)),
            _ => None,
        }
    }

    fn binding(&self, now: u32, cid: &[u8]) -> Option<abi::Binding> {
        let key = CidKey::new(cid)?;
        let map = HashMap::<_, CidKey, abi::Binding>::try_from(
            self.ebpf.map("bindings").expect("bindings map"),
        )
        .ok()?;
        let b = map.get(&key, 0).ok()?;
        (!expired(b.last_seen, now, secs(self.cfg.binding_idle))).then_some(b)
    }

    fn flow(&self, now: u32, fkey: &FlowKey) -> Option<abi::Flow> {
        let map =
            HashMap::<_, FlowKey, abi::Flow>::try_from(self.ebpf.map("flows").expect("flows map"))
                .ok()?;
        let f = map.get(fkey, 0).ok()?;
        (!expired(f.last_seen, now, secs(self.cfg.flow_idle))).then_some(f)
    }

    fn sid(&self, key: &abi::SidKey) -> Option<abi::SidVal> {
        let map = HashMap::<_, abi::SidKey, abi::SidVal>::try_from(
            self.ebpf.map("sids").expect("sids map"),
        )
        .ok()?;
        map.get(key, 0).ok()
    }

    /// The program's `decode`, over the same maps. For an encrypted CID the slow path
    /// has not decoded yet, the answer it will cache (the program passes that one
    /// datagram to the stack meanwhile).
    fn decode(&self, cid: &[u8]) -> Decoded {
        let c = &self.config;
        if c.format == abi::FORMAT_NONE {
            return Decoded::NoFormat;
        }
        let n = cid.len();
        if n == 0 || n > abi::MAX_CID_LEN {
            return Decoded::Undecodable;
        }
        let routing = |id: &[u8]| -> Decoded {
            let Some(sid) = ServerId::new(id) else {
                return Decoded::Undecodable;
            };
            match self.sid(&abi::SidKey::new(abi::SID_ROUTING, id)) {
                Some(v) => {
                    let backend = BackendId(v.backend as u16);
                    Decoded::Backend {
                        server_id: sid,
                        backend,
                        serves: self.serves(backend.0),
                    }
                }
                None => Decoded::UnknownServer(sid),
            }
        };
        if c.format == abi::FORMAT_PREFIX {
            let p = usize::from(c.prefix_len);
            if p == 0 || p > 15 || n <= p {
                return Decoded::Undecodable;
            }
            return routing(&cid[..p]);
        }
        let first = cid[0];
        let r = c.rot[usize::from(first >> 5)];
        if r.mode == abi::ROT_NONE || r.mode == abi::ROT_UNROUTABLE {
            return Decoded::Undecodable;
        }
        if r.flags & abi::ROT_SELF_DESCRIBING != 0 && usize::from(first & 0x1f) + 1 != n {
            return Decoded::Undecodable;
        }
        if n < usize::from(r.min_len) {
            return Decoded::Undecodable;
        }
        if r.mode == abi::ROT_ENCRYPTED {
            let cached = CidKey::new(cid).and_then(|k| {
                HashMap::<_, CidKey, abi::Decoded>::try_from(
                    self.ebpf.map("decoded").expect("decoded map"),
                )
                .ok()?
                .get(&k, 0)
                .ok()
            });
            let d = match (cached, &self.format) {
                (Some(d), _) => d,
                (None, Some(f)) => decoded_value(f.format_set(), cid),
                (None, None) => return Decoded::Undecodable,
            };
            if d.status != abi::DECODED_SID || d.len == 0 || d.len > 15 {
                return Decoded::Undecodable;
            }
            return routing(&d.id[..usize::from(d.len)]);
        }
        let sl = usize::from(r.sid_len);
        if sl == 0 || sl > 15 {
            return Decoded::Undecodable;
        }
        let sid = &cid[1..1 + sl];
        if r.flags & abi::ROT_HAS_MAP != 0 {
            return match self.sid(&abi::SidKey::new(first >> 5, sid)) {
                Some(m) if m.len > 0 && m.len <= 15 => routing(&m.id[..usize::from(m.len)]),
                _ => Decoded::Undecodable,
            };
        }
        routing(sid)
    }

    fn read_counters(&self) -> (Counters, Vec<u64>) {
        let mut c = Counters::default();
        let mut stats = vec![0u64; XDP_STATS.len()];
        let Ok(arr) =
            PerCpuArray::<_, u64>::try_from(self.ebpf.map("counters").expect("counters map"))
        else {
            return (c, stats);
        };
        let total = OUTCOMES + DROPS + EVENTS + XDP_STATS.len();
        for slot in 0..total {
            let v: u64 = arr
                .get(&(slot as u32), 0)
                .map(|vals| vals.iter().sum())
                .unwrap_or(0);
            if slot < OUTCOMES {
                c.routed[slot] = v;
            } else if slot < OUTCOMES + DROPS {
                c.dropped[slot - OUTCOMES] = v;
            } else if slot < OUTCOMES + DROPS + EVENTS {
                c.events[slot - OUTCOMES - DROPS] = v;
            } else {
                stats[slot - OUTCOMES - DROPS - EVENTS] = v;
            }
        }
        for (e, n) in c.events.iter_mut().zip(self.events.events.iter()) {
            *e += n;
        }
        (c, stats)
    }
}

/// The pin of the link of a listener's `k`th interface.
fn link_name(k: usize) -> String {
    if k == 0 {
        "link".into()
    } else {
        format!("link-{k}")
    }
}

/// An interface's index and MAC (sysfs).
fn interface_info(name: &str) -> Result<(u32, [u8; 6]), XdpError> {
    let base = std::path::Path::new("/sys/class/net").join(name);
    let read = |f: &str| {
        std::fs::read_to_string(base.join(f))
            .map_err(|e| XdpError::Attach(format!("interface {name}: {e}")))
    };
    let ifindex = read("ifindex")?
        .trim()
        .parse()
        .map_err(|_| XdpError::Attach(format!("interface {name}: bad ifindex")))?;
    let text = read("address")?;
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for b in &mut mac {
        *b = parts
            .next()
            .and_then(|p| u8::from_str_radix(p, 16).ok())
            .ok_or_else(|| XdpError::Attach(format!("interface {name} has no Ethernet address")))?;
    }
    Ok((ifindex, mac))
}

/// Attaches the program to interface `name` (the listener's `k`th); with a pin
/// directory, through a pinned link (`link`, `link-1`...): a pinned one already there
/// gets the new program swapped in, in one step (no frame missed).
fn attach_one(
    ebpf: &mut Ebpf,
    name: &str,
    mode: XdpMode,
    pin_dir: Option<&std::path::Path>,
    k: usize,
) -> Result<Option<aya::programs::links::PinnedLink>, XdpError> {
    let prog: &mut Xdp = ebpf
        .program_mut(PROG_NAME)
        .expect("loaded above")
        .try_into()
        .expect("an XDP program");
    let attach_err = |e: aya::programs::ProgramError| {
        XdpError::Attach(format!("attaching to {name}: {}", error_chain(&e)))
    };
    let Some(dir) = pin_dir else {
        prog.attach(name, mode).map_err(attach_err)?;
        return Ok(None);
    };
    let lpath = dir.join(link_name(k));
    let open = |p: &std::path::Path| {
        aya::programs::links::PinnedLink::from_pin(p)
            .map_err(|e| XdpError::Attach(format!("opening {}: {e}", p.display())))
    };
    if lpath.exists() {
        // A program is running: swap ours in, in one step.
        let link = aya::programs::xdp::XdpLink::try_from(aya::programs::links::FdLink::from(open(
            &lpath,
        )?))
        .map_err(|e| XdpError::Attach(format!("{}: {e}", lpath.display())))?;
        prog.attach_to_link(link).map_err(|e| {
            XdpError::Attach(format!(
                "replacing the pinned program ({}): {}",
                lpath.display(),
                error_chain(&e)
            ))
        })?;
        return open(&lpath).map(Some);
    }
    let id = prog.attach(name, mode).map_err(attach_err)?;
    let link = prog
        .take_link(id)
        .map_err(|e| XdpError::Attach(format!("{e}")))?;
    let fd = aya::programs::links::FdLink::try_from(link).map_err(|e| {
        XdpError::Attach(format!(
            "pinning needs a bpf_link attachment (Linux 5.9+): {e}"
        ))
    })?;
    fd.pin(&lpath)
        .map(Some)
        .map_err(|e| XdpError::Attach(format!("pinning {}: {e}", lpath.display())))
}

/// What a counting walk of a listener's tables found.
#[derive(Clone, Debug, Default)]
pub struct WalkCounts {
    /// Live flows.
    pub flows: usize,
    /// Live CID bindings.
    pub bindings: usize,
    /// Per backend id: (flows, bindings).
    pub per_backend: StdHashMap<u16, (usize, usize)>,
}

/// Counts the live (not idle-expired) entries of `flows` and `bindings`, per backend.
/// O(entries) map syscalls: about a second for a million entries of each.
fn walk(flows: &Map, bindings: &Map, now: u32, flow_idle: u32, binding_idle: u32) -> WalkCounts {
    let mut c = WalkCounts::default();
    if let Ok(map) = HashMap::<_, FlowKey, abi::Flow>::try_from(flows) {
        for (_, f) in map.iter().flatten() {
            if !expired(f.last_seen, now, flow_idle) {
                c.flows += 1;
                c.per_backend.entry(f.backend).or_default().0 += 1;
            }
        }
    }
    if let Ok(map) = HashMap::<_, CidKey, abi::Binding>::try_from(bindings) {
        for (_, b) in map.iter().flatten() {
            if !expired(b.last_seen, now, binding_idle) {
                c.bindings += 1;
                c.per_backend.entry(b.backend).or_default().1 += 1;
            }
        }
    }
    c
}

/// `Lookups` over the maps: what the program reads, read the same way (the core's
/// `Peek`, for this plane). Changes nothing.
struct MapView<'a> {
    g: &'a Inner,
    now: u32,
    cid: Option<&'a [u8]>,
    fkey: Option<FlowKey>,
}

impl<'a> MapView<'a> {
    fn new(g: &'a Inner, now: u32, cid: Option<&'a [u8]>, fkey: Option<FlowKey>) -> Self {
        MapView { g, now, cid, fkey }
    }

    fn binding_view(&self) -> Option<BindingView> {
        let b = self.g.binding(self.now, self.cid?)?;
        Some(BindingView {
            binding: CoreBinding::new(BackendId(b.backend), source(b.source)),
            serves: self.g.serves(b.backend),
            exists: self.g.exists(b.backend),
            idle_secs: self.now.saturating_sub(b.last_seen),
        })
    }

    fn flow_view(&self) -> Option<FlowView> {
        let f = self.g.flow(self.now, self.fkey.as_ref()?)?;
        Some(FlowView {
            backend: BackendId(f.backend),
            serves: self.g.serves(f.backend),
            idle_secs: self.now.saturating_sub(f.last_seen),
        })
    }
}

fn source(s: u8) -> BindingSource {
    if s == abi::LEARNED {
        BindingSource::Learned
    } else {
        BindingSource::Seeded
    }
}

impl Lookups for MapView<'_> {
    fn binding(&mut self) -> Option<BindingFacts> {
        self.binding_view().map(BindingFacts::from)
    }

    fn decode(&mut self) -> Decoded {
        self.cid.map_or(Decoded::NoFormat, |c| self.g.decode(c))
    }

    fn flow(&mut self) -> Option<FlowFacts> {
        let f = self.g.flow(self.now, self.fkey.as_ref()?)?;
        Some(FlowFacts {
            backend: BackendId(f.backend),
            serves: self.g.serves(f.backend),
            may_seed: f.seeds < abi::MAX_SEEDS,
        })
    }

    fn hashed(&mut self) -> Option<BackendId> {
        match (self.cid, self.fkey) {
            (Some(cid), _) => self.g.maglev_pick(cid),
            (None, Some(f)) => self.g.maglev_pick(&f.hash_input()),
            (None, None) => None,
        }
    }
}

impl ListenerPlane for XdpListener {
    fn name(&self) -> &str {
        &self.name
    }

    fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    fn reconfigure(&self, cfg: RouterConfig, backends: PreparedBackends) {
        let mut g = self.lock();
        // A new CID format (a QUIC-LB key rotation, a new server ID map...): the
        // program's decoding tables follow it, and cached decodings of the rotations
        // that changed are dropped (they would be stale).
        let format = XdpCidFormat::from_routing(&cfg.cid);
        let stale: Vec<u8> = match (&g.format, &format) {
            (None, None) => Vec::new(),
            (Some(a), Some(b)) if a.format_set() == b.format_set() => Vec::new(),
            (Some(a), Some(b)) => a.changed_rotations(b),
            _ => (0..8).collect(),
        };
        if format.as_ref().is_some_and(XdpCidFormat::has_encrypted)
            && g.decoded_entries == DECODED_UNUSED
        {
            tracing::error!(listener = %self.name,
                "XDP plane: reload refused: an encrypted QUIC-LB format needs the slow path's cache, sized when the program is loaded (restart)");
            return;
        }
        if let Err(e) = check_router_config(&cfg, format.as_ref()) {
            tracing::error!(listener = %self.name, "XDP plane: reload refused: {e}");
            return;
        }
        let backends = backends.backends().to_vec();
        if let Err(e) = g.check_backends(&backends) {
            tracing::error!(listener = %self.name, "XDP plane: reload refused: {e}");
            return;
        }
        let (old_flows, old_bindings) = (g.cfg.max_flows, g.cfg.max_bindings);
        if cfg.max_flows != old_flows || cfg.max_bindings != old_bindings {
            tracing::warn!(
                listener = %self.name,
                "XDP plane: max_flows / max_bindings take effect at the next restart (maps are sized at load)"
            );
        }
        let secret = g.cfg.secret;
        g.cfg = RouterConfig {
            secret,
            max_flows: old_flows,
            max_bindings: old_bindings,
            ..cfg
        };
        g.backends = backends;
        g.format = format;
        if let Err(e) = g.install_all() {
            tracing::error!(listener = %self.name, "XDP plane: reload: {e}");
        }
        if !stale.is_empty() {
            let n = g.forget_decoded(&stale);
            tracing::info!(listener = %self.name, rotations = ?stale, dropped = n,
                "XDP plane: the CID format changed; cached decodings of its changed rotations dropped");
        }
    }

    fn set_backend_state(&self, id: BackendId, state: BackendState) -> bool {
        let mut g = self.lock();
        let Some(b) = g.backends.iter_mut().find(|b| b.id == id) else {
            return false;
        };
        if b.state != state {
            b.state = state;
            if let Err(e) = g.install_backends().and_then(|_| g.rebuild_maglev()) {
                tracing::error!(listener = %self.name, "XDP plane: backend state: {e}");
            }
        }
        true
    }

    fn set_backend_weight(&self, id: BackendId, weight: u32) -> bool {
        let mut g = self.lock();
        let Some(b) = g.backends.iter_mut().find(|b| b.id == id) else {
            return false;
        };
        if b.weight != weight {
            b.weight = weight;
            if let Err(e) = g.rebuild_maglev() {
                tracing::error!(listener = %self.name, "XDP plane: backend weight: {e}");
            }
        }
        true
    }

    fn explain_cid(&self, cid: &[u8], client: Option<SocketAddr>) -> CidExplanation {
        self.explain_at(monotonic_secs(), cid, client)
    }

    fn explain_client(&self, client: SocketAddr) -> ClientExplanation {
        let g = self.lock();
        let now = monotonic_secs();
        let fkey = FlowKey::from(client);
        let mut v = MapView::new(&g, now, None, Some(fkey));
        let decision = decide_address(&mut v);
        ClientExplanation {
            decision,
            flow: v.flow_view(),
            hashed: g.maglev_pick(&fkey.hash_input()),
        }
    }

    fn snapshot(&self, per_backend: bool) -> PlaneSnapshot {
        // A fresh walk when asked for per-backend counts (without the listener's lock);
        // otherwise the last one's (the plane walks every few seconds).
        let walked = if per_backend {
            self.count_tables()
        } else {
            self.counts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        };
        let g = self.lock();
        let (counters, stats) = g.read_counters();
        let mut per = Vec::new();
        if per_backend {
            per = g
                .backends
                .iter()
                .map(|b| {
                    let (flows, bindings) =
                        walked.per_backend.get(&b.id.0).copied().unwrap_or_default();
                    BackendCounts {
                        backend: b.id,
                        flows,
                        bindings,
                    }
                })
                .collect();
        }
        let mem = |name: &str| match g.ebpf.map(name) {
            Some(Map::LruHashMap(m)) => memlock(m).unwrap_or(0),
            _ => 0,
        };
        let tables = TableSizes {
            flows: walked.flows,
            bindings: walked.bindings,
            max_flows: g.cfg.max_flows,
            max_bindings: g.cfg.max_bindings,
            flow_idle: g.cfg.flow_idle,
            binding_idle: g.cfg.binding_idle,
            flow_bytes: mem("flows"),
            binding_bytes: mem("bindings") + mem("decoded"),
            source_bytes: 0,
        };
        let mut samples: Vec<(StatInfo, u64)> = XDP_STATS.iter().copied().zip(stats).collect();
        samples.extend(crate::SLOW_PATH_STATS.into_iter().zip([
            self.slow_path_decoded.load(Relaxed),
            self.slow_path_forwarded.load(Relaxed),
            self.slow_path_unsent.load(Relaxed),
        ]));
        PlaneSnapshot {
            counters,
            tables,
            stats: samples,
            per_backend: per,
            unreachable: g
                .backends
                .iter()
                .filter(|b| !g.macs.contains_key(&b.addr.ip()))
                .map(|b| (b.id, NO_MAC))
                .collect(),
        }
    }

    fn traffic(&self, id: BackendId) -> Traffic {
        let g = self.lock();
        let mut t = Traffic::default();
        if usize::from(id.0) >= abi::MAX_BACKENDS {
            return t;
        }
        if let Ok(arr) =
            PerCpuArray::<_, abi::Traffic>::try_from(g.ebpf.map("traffic").expect("traffic"))
        {
            if let Ok(vals) = arr.get(&u32::from(id.0), 0) {
                for v in vals.iter() {
                    t.to_backend_datagrams += v.datagrams;
                    t.to_backend_bytes += v.bytes;
                }
            }
        }
        // Direct routing: backends answer clients themselves; nothing comes back here.
        t
    }

    fn router_config(&self) -> RouterConfig {
        self.lock().cfg.clone()
    }
}
