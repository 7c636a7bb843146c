//! The daemon's configuration: a TOML file (`cidlb.toml`) or the quick-start flags.
//!
//! [`Config::load`] / [`Config::from_toml_str`] read a file, [`Config::quick`] builds the
//! same structure from `cidlb run --listen ADDR --backend ADDR... --cid-len N`. Either
//! way the result is *validated*: defaults are filled in and every rule of
//! `docs/configuration.md` holds, so the rest of the daemon never re-checks a value.
//!
//! Parsing goes through private "raw" serde structs whose fields are all optional and
//! carry their source span; validation turns them into the public types and reports the
//! first problem as a [`ConfigError`] naming the file, the key path
//! (`listener[0].backend[1].address`) and, when known, the line and column.
//!
//! ```
//! use cidlb::config::{Config, RoutingMode};
//!
//! let cfg = Config::from_toml_str(
//!     r#"
//!     [[listener]]
//!     address = "0.0.0.0:5684"
//!     cid_length = 6
//!
//!       [[listener.backend]]
//!       address = "10.0.0.1:5684"
//!     "#,
//!     "cidlb.toml",
//! )?;
//! assert_eq!(cfg.listeners[0].name, "listener-0");
//! assert_eq!(cfg.listeners[0].routing, RoutingMode::Cid);
//! assert_eq!(cfg.listeners[0].backends[0].name, "10.0.0.1:5684");
//! assert_eq!(cfg.limits.max_flows, 100_000);
//!
//! let err = Config::from_toml_str("[[listener]]\naddress = \"nowhere\"\n", "cidlb.toml")
//!     .unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     r#"cidlb.toml: listener[0].address: invalid socket address "nowhere" (expected IP:PORT) (line 2, column 11)"#
//! );
//! # Ok::<(), cidlb::config::ConfigError>(())
//! ```

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use cidlb_core::{BackendState, MultiCidPolicy};

mod cid_format;
mod error;
mod explain;
mod load;
mod model;
pub mod routable;
#[cfg(test)]
mod tests;
mod validate;

pub use error::{ConfigError, ConfigErrorKind, Location};
pub(crate) use routable::parse_server_id;
pub use routable::{CidFormatConfig, ServerIdConfig};

// ------------------------------------------------------------------------- limits

/// Longest CID a listener may be configured for, in bytes: what the wire parser
/// supports (`cidlb_wire::MAX_CID_LEN`; the `cid<0..2^8-1>` fields of RFC 9146 §3 and
/// RFC 9147 §9 would allow up to 255).
pub const MAX_CID_LEN: usize = cidlb_wire::MAX_CID_LEN;
/// Default [`Timeouts::flow_idle`]: 10 minutes.
pub const DEFAULT_FLOW_IDLE: Duration = Duration::from_secs(10 * 60);
/// Default [`Timeouts::cid_binding_idle`]: 24 hours (devices sleep for hours).
pub const DEFAULT_CID_BINDING_IDLE: Duration = Duration::from_secs(24 * 3600);
/// Shortest idle timeout: the routing tables count whole seconds.
pub const MIN_IDLE: Duration = Duration::from_secs(1);
/// Longest idle timeout: 365 days (a guard against unit typos such as `"24y"`).
pub const MAX_IDLE: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default [`Limits::max_flows`] (per listener).
pub const DEFAULT_MAX_FLOWS: usize = 100_000;
/// Default [`Limits::max_bindings`] (per listener).
pub const DEFAULT_MAX_BINDINGS: usize = 1_000_000;
/// Largest accepted value of either limit.
pub const MAX_TABLE_ENTRIES: usize = 100_000_000;
/// Largest accepted [`Limits::new_flows_per_source`] and [`Limits::new_flows_burst`].
pub const MAX_NEW_FLOWS_PER_SOURCE: u32 = 1_000_000;
/// Default [`Hashing::seed`].
pub const DEFAULT_HASH_SEED: u64 = 0;
/// Default [`Hashing::maglev_table_size`] (a prime).
pub const DEFAULT_MAGLEV_TABLE_SIZE: usize = cidlb_core::maglev::DEFAULT_TABLE_SIZE;
/// Smallest accepted Maglev table size.
pub const MIN_MAGLEV_TABLE_SIZE: usize = 251;
/// Largest accepted Maglev table size (`2^24`; the largest prime below is 16 777 213).
pub const MAX_MAGLEV_TABLE_SIZE: usize = cidlb_core::maglev::MAX_TABLE_SIZE;
/// Most backends per listener (backend ids are 16-bit).
pub const MAX_BACKENDS: usize = cidlb_core::maglev::MAX_BACKENDS;
/// Largest backend weight.
pub const MAX_WEIGHT: u32 = 10_000;
/// Most data-plane threads.
pub const MAX_WORKERS: usize = 256;
/// Longest listener or backend name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Default [`HealthConfig::interval`]: 2 seconds.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// Default [`HealthConfig::timeout`]: 1 second.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Default [`HealthConfig::rise`].
pub const DEFAULT_HEALTH_RISE: u32 = 2;
/// Default [`HealthConfig::fall`].
pub const DEFAULT_HEALTH_FALL: u32 = 3;
/// Shortest health-check interval.
pub const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(50);
/// Longest health-check interval.
pub const MAX_HEALTH_INTERVAL: Duration = Duration::from_secs(3600);
/// Shortest health-check timeout.
pub const MIN_HEALTH_TIMEOUT: Duration = Duration::from_millis(10);
/// Largest `rise` / `fall`.
pub const MAX_HEALTH_THRESHOLD: u32 = 100;
/// Default [`AdminConfig::address`]: loopback only, port 9684.
pub const DEFAULT_ADMIN_ADDRESS: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9684);

// ------------------------------------------------------------------ public types

/// A validated configuration: every default filled in, every rule checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Data-plane threads; `None` means one per CPU (see [`Config::effective_workers`]).
    pub workers: Option<usize>,
    /// Idle timeouts of the routing tables.
    pub timeouts: Timeouts,
    /// Table sizes (per listener).
    pub limits: Limits,
    /// Consistent hashing of new flows.
    pub hashing: Hashing,
    /// Active DTLS health checks of the backends.
    pub health: HealthConfig,
    /// The admin HTTP server (metrics, backends, drain, reload).
    pub admin: AdminConfig,
    /// Logging (`[log]`).
    pub log: LogConfig,
    /// How DNS backend names are resolved (`[resolver]`).
    pub resolver: ResolverConfig,
    /// Where operator drains and weights are kept across restarts (`admin.state_file`,
    /// relative paths from the configuration file's folder); `None`: not kept.
    pub state_file: Option<std::path::PathBuf>,
    /// The listeners, in file order; never empty.
    pub listeners: Vec<ListenerConfig>,
}

impl Config {
    /// Data-plane threads to run: `workers`, else one per CPU.
    pub fn effective_workers(&self) -> usize {
        self.workers.unwrap_or_else(cpu_count)
    }

    /// Whether some backend is given by DNS name.
    pub fn has_dns_backends(&self) -> bool {
        self.listeners
            .iter()
            .any(|l| l.backends.iter().any(|b| b.dns.is_some()))
    }

    /// The file descriptors this configuration can hold open at once, by use (see
    /// [`Descriptors`]); `run` compares them with the open-files limit.
    pub fn descriptors(&self) -> Descriptors {
        let workers = self.effective_workers();
        // XDP listeners hold no sockets per flow nor listener sockets (a few map and
        // program descriptors, within the reserve).
        let listeners = self
            .listeners
            .iter()
            .filter(|l| !l.forwarding.is_xdp())
            .count();
        let backends: usize = self.listeners.iter().map(|l| l.backends.len()).sum();
        // The prober's shared sockets: one per source address and family.
        let sources: std::collections::HashSet<(Option<std::net::IpAddr>, bool)> = self
            .listeners
            .iter()
            .flat_map(|l| {
                l.backends
                    .iter()
                    .map(|b| (l.upstream_source, b.address.is_ipv4()))
            })
            .collect();
        Descriptors {
            // Each worker's share of the flows, rounded up (cidlb_net::worker_share).
            upstreams: workers
                * cidlb_net::worker_share(self.limits.max_flows.saturating_mul(listeners), workers),
            listener_sockets: listeners * workers,
            // An epoll instance and a waker per worker, the probe thread's poll.
            polls: 2 * workers + 2,
            probes: backends.min(cidlb_net::health::max_probe_sockets(None, sources.len())),
            reserve: cidlb_net::sys::FD_RESERVE as usize,
        }
    }
}

/// Largest configuration file read (a few thousand backends take well under 1 MiB; the
/// most backends a listener may have, 65,535, about 6 MiB).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// How a value from the file is quoted in an error: in `{:?}` form, cut after 60
/// characters with its length given, so that a huge value cannot make a huge error.
pub(crate) fn shown(s: &str) -> String {
    const KEEP: usize = 60;
    if s.chars().count() <= KEEP {
        return format!("{s:?}");
    }
    let cut: String = s.chars().take(KEEP).collect();
    format!("{cut:?}... ({} bytes)", s.len())
}

/// File descriptors a configuration can hold open at once, by use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptors {
    /// NAT upstream sockets: `limits.max_flows` per listener, shared out between the
    /// workers.
    pub upstreams: usize,
    /// One socket per listener per worker.
    pub listener_sockets: usize,
    /// Event loops and their wakers.
    pub polls: usize,
    /// Health-check sockets: one per backend, at most
    /// `cidlb_net::health::PROBE_SOCKET_BUDGET` plus one shared socket per source
    /// address and family.
    pub probes: usize,
    /// Kept free of upstream sockets for the admin API, health checks and reloads
    /// (`cidlb_net::sys::FD_RESERVE`).
    pub reserve: usize,
}

impl Descriptors {
    /// All of them, plus 16 for standard streams, the admin listener, signals, logs.
    pub fn total(&self) -> usize {
        self.upstreams + self.listener_sockets + self.polls + self.probes + self.reserve + 16
    }
}

impl fmt::Display for Descriptors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = {} upstream sockets (limits.max_flows x listeners) + {} listener sockets + \
             {} event loops + {} health-check sockets + {} reserve (admin API, reloads) + 16",
            self.total(),
            self.upstreams,
            self.listener_sockets,
            self.polls,
            self.probes,
            self.reserve
        )
    }
}

/// Active health checks (`[health]`): every `interval`, each backend gets a DTLS
/// ClientHello; any DTLS answer within `timeout` is a success. A backend is taken out
/// after `fall` consecutive failures and put back after `rise` consecutive successes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// Whether to check at all (without checks, every backend counts as healthy).
    pub enabled: bool,
    /// Time between two checks of a backend,
    /// [`MIN_HEALTH_INTERVAL`]`..=`[`MAX_HEALTH_INTERVAL`].
    pub interval: Duration,
    /// How long to wait for an answer, [`MIN_HEALTH_TIMEOUT`]`..=interval`.
    pub timeout: Duration,
    /// Consecutive successes that bring a backend back, `1..=`[`MAX_HEALTH_THRESHOLD`].
    pub rise: u32,
    /// Consecutive failures that take a backend out, `1..=`[`MAX_HEALTH_THRESHOLD`].
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            enabled: true,
            interval: DEFAULT_HEALTH_INTERVAL,
            timeout: DEFAULT_HEALTH_TIMEOUT,
            rise: DEFAULT_HEALTH_RISE,
            fall: DEFAULT_HEALTH_FALL,
        }
    }
}

/// How log lines are written (`log.format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line of text each (the default).
    #[default]
    Plain,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Default `log.events_per_second`.
pub const DEFAULT_EVENTS_PER_SECOND: u32 = 20;
/// Largest `log.events_per_second`.
pub const MAX_EVENTS_PER_SECOND: u32 = 100_000;

/// Logging (`[log]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Plain text or JSON lines (a restart applies a change).
    pub format: LogFormat,
    /// Event log lines (a new session, a CID learned or seeded, a known CID from a new
    /// address, an eviction) per second per listener at most; 0: none. The lines past it
    /// are counted (`cidlb_listener_event_logs_suppressed_total`).
    pub events_per_second: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Plain,
            events_per_second: DEFAULT_EVENTS_PER_SECOND,
        }
    }
}

/// The admin HTTP server (`[admin]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminConfig {
    /// Whether to serve it (default true).
    pub enabled: bool,
    /// Where, when set explicitly (`admin.address` or `cidlb run --admin`); `None`:
    /// [`DEFAULT_ADMIN_ADDRESS`]. An explicit address that cannot be bound stops the
    /// daemon; the default one only logs a warning (several balancers on one host).
    pub address: Option<SocketAddr>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            address: None,
        }
    }
}

impl AdminConfig {
    /// The address to serve on.
    pub fn address(&self) -> SocketAddr {
        self.address.unwrap_or(DEFAULT_ADMIN_ADDRESS)
    }
}

/// Idle timeouts (`[timeouts]`). Both are at least [`MIN_IDLE`] and at most [`MAX_IDLE`];
/// the tables count whole seconds, so sub-second parts are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A client address:port keeps its backend (and its upstream socket) this long after
    /// its last datagram in either direction.
    pub flow_idle: Duration,
    /// A CID keeps its backend this long after its last datagram. Devices sleep for
    /// hours, so this should be longer than any sleep and than `flow_idle`.
    pub cid_binding_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            flow_idle: DEFAULT_FLOW_IDLE,
            cid_binding_idle: DEFAULT_CID_BINDING_IDLE,
        }
    }
}

/// Table bounds (`[limits]`), per listener; each in `1..=`[`MAX_TABLE_ENTRIES`]; and
/// the optional per-source limit on new flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most flows (client address:port → backend, each with an upstream socket).
    pub max_flows: usize,
    /// Most CID → backend bindings.
    pub max_bindings: usize,
    /// New flows per second per source (IPv4 address, IPv6 /64); 0: no limit.
    pub new_flows_per_source: u32,
    /// Burst of new flows per source (the token bucket's size; 0 or absent in the file:
    /// `new_flows_per_source`; never below it). 0 when the limit is off.
    pub new_flows_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_flows: DEFAULT_MAX_FLOWS,
            max_bindings: DEFAULT_MAX_BINDINGS,
            new_flows_per_source: 0,
            new_flows_burst: 0,
        }
    }
}

impl Limits {
    /// The per-source new-flow limit as the router takes it (`(rate per second,
    /// burst)`), `None` when off.
    pub fn new_flow_limit(&self) -> Option<(u32, u32)> {
        (self.new_flows_per_source > 0).then_some((
            self.new_flows_per_source,
            self.new_flows_burst.max(self.new_flows_per_source),
        ))
    }
}

/// Consistent hashing of new flows (`[hashing]`). Every balancer instance in front of
/// the same backends must use the same values, so that they agree on where a new
/// client goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hashing {
    /// Seed of the Maglev flow hash (`0..=i64::MAX`: TOML integers are signed).
    pub seed: u64,
    /// Maglev table size: a prime in
    /// [`MIN_MAGLEV_TABLE_SIZE`]`..=`[`MAX_MAGLEV_TABLE_SIZE`], larger than the backend
    /// count of every listener (100 × that count or more for an even spread).
    pub maglev_table_size: usize,
}

impl Default for Hashing {
    fn default() -> Self {
        Hashing {
            seed: DEFAULT_HASH_SEED,
            maglev_table_size: DEFAULT_MAGLEV_TABLE_SIZE,
        }
    }
}

/// How a listener picks the backend of a datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RoutingMode {
    /// By DTLS Connection ID, falling back to the client address for records without
    /// a CID (the product; `routing = "cid"`).
    #[default]
    Cid,
    /// By client address:port only, like a plain UDP balancer (`routing = "address"`):
    /// a client whose NAT rebinds lands on a backend chosen afresh. For comparison.
    Address,
}

impl fmt::Display for RoutingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RoutingMode::Cid => "cid",
            RoutingMode::Address => "address",
        })
    }
}

/// How a listener's upstream sockets (balancer → backend, one per client address:port
/// and backend) are opened: the `upstream` key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UpstreamMode {
    /// From an address of the balancer and a port of its own (`upstream = "nat"`):
    /// the servers see the balancer's address.
    #[default]
    Nat,
    /// From the client's own address and port (`upstream = "transparent"`,
    /// `IP_TRANSPARENT`): the servers see each client's address, route the clients'
    /// addresses back through the balancer, and the balancer's policy routing delivers
    /// their replies to cidlb (`operation.md`, "Transparent NAT").
    Transparent,
}

impl fmt::Display for UpstreamMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpstreamMode::Nat => "nat",
            UpstreamMode::Transparent => "transparent",
        })
    }
}

/// How a listener forwards datagrams to its backends (`forwarding`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Forwarding {
    /// `forwarding = "nat"` (the default): a userspace socket on the listener's
    /// address, one upstream socket per client address:port; the backends answer the
    /// balancer, which relays to the client.
    #[default]
    Nat,
    /// `forwarding = "xdp-dr"`: direct routing by the in-kernel XDP program on the
    /// listener's interface; the listener's address is the virtual address the backends
    /// hold on their loopback, and they answer clients directly (`docs/xdp.md`).
    XdpDr(XdpDr),
}

impl Forwarding {
    /// Whether this is direct routing in XDP.
    pub fn is_xdp(&self) -> bool {
        matches!(self, Forwarding::XdpDr(_))
    }
}

impl fmt::Display for Forwarding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Forwarding::Nat => f.write_str("nat"),
            Forwarding::XdpDr(x) => write!(f, "xdp-dr on {} ({})", x.interfaces.join(", "), x.mode),
        }
    }
}

/// The settings of `forwarding = "xdp-dr"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct XdpDr {
    /// The interfaces the program runs on (`interface`): the one(s) the listener's
    /// address is reached through, L2-adjacent to the backends. Exactly one in this
    /// version.
    pub interfaces: Vec<String>,
    /// Native (driver) or generic (`xdp_mode`).
    pub mode: XdpAttachMode,
    /// Where the program's link and state maps are pinned (`pin_dir`, default
    /// [`DEFAULT_PIN_DIR`]; the listener's pins are in `<pin_dir>/<listener name>`),
    /// so that a restart (even after `kill -9`) loses no datagram and no binding.
    /// `None`: `pin_dir = ""`, not pinned (the program stops with the daemon).
    pub pin_dir: Option<std::path::PathBuf>,
    /// Whether the pins stay after a clean shutdown (`keep_pinned`, default false: a
    /// clean shutdown detaches the program and frees its maps).
    pub keep_pinned: bool,
}

/// Default [`XdpDr::pin_dir`].
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/cidlb";

/// How the XDP program attaches (`xdp_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum XdpAttachMode {
    /// In the driver (`xdp_mode = "native"`, the default): the fast path; the NIC's
    /// driver must support XDP.
    #[default]
    Native,
    /// In the kernel's generic hook, after the socket buffer is built (`xdp_mode =
    /// "generic"`): works on every interface, much slower; a fallback.
    Generic,
}

impl fmt::Display for XdpAttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpAttachMode::Native => "native",
            XdpAttachMode::Generic => "generic",
        })
    }
}

/// One listener (`[[listener]]`): a UDP socket and the backends behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Unique name (default `listener-<index>`), used in logs and metrics.
    pub name: String,
    /// Local address to bind (port 0: any free port).
    pub address: SocketAddr,
    /// Length in bytes of the CIDs that the backends issue, `1..=`[`MAX_CID_LEN`].
    /// Always `Some` when `routing` is [`RoutingMode::Cid`], unless a QUIC-LB
    /// `cid_format` gives the lengths; optional (and unused by routing) with
    /// [`RoutingMode::Address`].
    pub cid_length: Option<usize>,
    /// What to do with a datagram whose records carry different CIDs.
    pub multi_cid: MultiCidPolicy,
    /// How backends are chosen.
    pub routing: RoutingMode,
    /// Local IP that upstream sockets (balancer → backend) bind to; `None`: chosen by
    /// the kernel. Same address family as every backend. NAT mode only.
    pub upstream_source: Option<IpAddr>,
    /// How upstream sockets are opened (`upstream`, default NAT).
    pub upstream: UpstreamMode,
    /// Transparent mode: the firewall mark that the host's netfilter rules give the
    /// backends' replies to clients, when its policy routing selects them by mark
    /// (`reply_fwmark`, `1..=u32::MAX`); only the start-up check of that routing uses it.
    pub reply_fwmark: Option<u32>,
    /// How the backends put their server ID into their CIDs (`[listener.cid_format]`),
    /// for stateless "encoded" routing; `None`: learned routing only.
    pub cid_format: Option<CidFormatConfig>,
    /// How datagrams reach the backends (`forwarding`, `interface`, `xdp_mode`).
    pub forwarding: Forwarding,
    /// The backends, in file order (a backend's index is its id); never empty, at most
    /// [`MAX_BACKENDS`], unique names and addresses.
    pub backends: Vec<BackendConfig>,
}

/// One backend (`[[listener.backend]]`): a DTLS server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    /// Unique name within the listener (default: the address, as `IP:PORT`). New flows
    /// are placed by hashing this name, so every balancer instance must use the same
    /// names, and renaming a backend moves its share of new flows.
    pub name: String,
    /// Where its datagrams go (a concrete IP and a non-zero port).
    pub address: SocketAddr,
    /// Relative share of new flows, `0..=`[`MAX_WEIGHT`] (0: no new flows).
    pub weight: u32,
    /// Initial state.
    pub state: BackendState,
    /// The server ID its routable CIDs carry (`server_id`), checked against the
    /// listener's `cid_format`.
    pub server_id: Option<ServerIdConfig>,
    /// `address = "NAME:PORT"`: the backend is every address NAME resolves to (A and
    /// AAAA records, re-resolved every `resolver.interval`; see [`crate::dns`]); then
    /// `address` holds only the port (on the unspecified IP) until it is expanded.
    pub dns: Option<DnsName>,
}

/// A backend given by DNS name (`address = "NAME:PORT"`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsName {
    /// The name, lowercase, without a final dot.
    pub host: String,
    /// The port.
    pub port: u16,
}

/// How DNS backend names are resolved (`[resolver]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverConfig {
    /// DNS servers asked in turn (default: the `nameserver` lines of
    /// `/etc/resolv.conf`, port 53).
    pub servers: Vec<SocketAddr>,
    /// How often names are resolved again (default 60 s).
    pub interval: Duration,
    /// How long one query waits for an answer (default 2 s).
    pub timeout: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            servers: Vec::new(),
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
        }
    }
}

// ------------------------------------------------------ helpers of the submodules

fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `600s` → `10m`, `86400s` → `24h`, else humantime's rendering.
fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_nanos() != 0 || s == 0 {
        humantime::format_duration(d).to_string()
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}
