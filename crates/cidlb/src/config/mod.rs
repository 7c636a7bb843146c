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
mod validate;

pub use error::{ConfigError, ConfigErrorKind, Location};

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
    /// The listeners, in file order; never empty.
    pub listeners: Vec<ListenerConfig>,
}

impl Config {
    /// Data-plane threads to run: `workers`, else one per CPU.
    pub fn effective_workers(&self) -> usize {
        self.workers.unwrap_or_else(cpu_count)
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
    /// the kernel. Same address family as every backend.
    pub upstream_source: Option<IpAddr>,
    /// How the backends put their server ID into their CIDs (`[listener.cid_format]`),
    /// for stateless "encoded" routing; `None`: learned routing only.
    pub cid_format: Option<crate::cid::CidFormatConfig>,
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
    pub server_id: Option<crate::cid::ServerIdConfig>,
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

// ------------------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;
    use std::path::Path;

    use toml::Spanned;

    use super::load::quick_flag;
    use super::model::{RawBackend, RawConfig, RawListener};
    use super::validate::{is_prime, prev_prime, Ctx};
    use super::*;

    const EXAMPLE: &str = include_str!("../../examples/cidlb.toml");

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, "cidlb.toml")
    }

    fn err(text: &str) -> ConfigError {
        match parse(text) {
            Ok(c) => panic!("accepted:\n{text}\n=> {c:?}"),
            Err(e) => e,
        }
    }

    /// A valid listener with `extra` lines appended to its table, then two backends.
    fn one_listener(extra: &str) -> String {
        format!(
            "[[listener]]\naddress = \"0.0.0.0:5684\"\ncid_length = 6\n{extra}\n\
             [[listener.backend]]\naddress = \"10.0.0.1:5684\"\n\
             [[listener.backend]]\naddress = \"10.0.0.2:5684\"\n"
        )
    }

    /// Asserts the error's path and that its display contains every fragment.
    fn check(text: &str, path: &str, fragments: &[&str]) -> ConfigError {
        let e = err(text);
        assert_eq!(e.path(), Some(path), "wrong path in: {e}\nfor:\n{text}");
        let shown = e.to_string();
        assert!(shown.starts_with("cidlb.toml: "), "{shown}");
        for f in fragments {
            assert!(shown.contains(f), "{shown:?} lacks {f:?}");
        }
        e
    }

    #[test]
    fn reference_example_parses() {
        let c = parse(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.workers, Some(2));
        assert_eq!(c.timeouts.flow_idle, Duration::from_secs(600));
        assert_eq!(c.timeouts.cid_binding_idle, Duration::from_secs(86_400));
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.hashing, Hashing::default());
        assert!(c.listeners.len() >= 2);
        let l = &c.listeners[0];
        assert_eq!(l.name, "coaps");
        assert_eq!(l.address, "0.0.0.0:5684".parse().unwrap());
        assert_eq!(l.cid_length, Some(6));
        assert_eq!(l.multi_cid, MultiCidPolicy::First);
        assert_eq!(l.routing, RoutingMode::Cid);
        assert_eq!(l.upstream_source, Some("10.0.0.5".parse().unwrap()));
        assert_eq!(l.backends[0].name, "dtls-1");
        assert_eq!(l.backends[0].address, "10.0.0.1:5684".parse().unwrap());
        assert_eq!(l.backends[0].weight, 1);
        assert_eq!(l.backends[0].state, BackendState::Up);
        // Every enum value appears somewhere in the example.
        let all_b = || c.listeners.iter().flat_map(|l| &l.backends);
        for s in [BackendState::Up, BackendState::Draining, BackendState::Down] {
            assert!(all_b().any(|b| b.state == s), "{s:?}");
        }
        assert!(c
            .listeners
            .iter()
            .any(|l| l.routing == RoutingMode::Address));
        let ex = c.explain();
        for b in all_b() {
            assert!(ex.contains(&b.name), "{ex}");
        }
    }

    #[test]
    fn new_flows_per_source() {
        let base = one_listener("");
        let limits = |head: &str| {
            parse(&format!("[limits]\n{head}\n{base}"))
                .unwrap_or_else(|e| panic!("{e}"))
                .limits
        };
        assert_eq!(limits("").new_flow_limit(), None);
        assert_eq!(limits("new_flows_per_source = 0").new_flow_limit(), None);
        assert_eq!(
            limits("new_flows_per_source = 0\nnew_flows_burst = 0").new_flow_limit(),
            None
        );
        let l = limits("new_flows_per_source = 100\nnew_flows_burst = 200");
        assert_eq!((l.new_flows_per_source, l.new_flows_burst), (100, 200));
        assert_eq!(l.new_flow_limit(), Some((100, 200)));
        // The burst defaults to the rate.
        assert_eq!(
            limits("new_flows_per_source = 50").new_flow_limit(),
            Some((50, 50))
        );
        assert_eq!(
            limits("new_flows_per_source = 50\nnew_flows_burst = 0").new_flow_limit(),
            Some((50, 50))
        );
        // The router gets it.
        let c = parse(&format!(
            "[limits]\nnew_flows_per_source = 7\nnew_flows_burst = 9\n{base}"
        ))
        .unwrap();
        let specs = crate::run::listener_specs(&c, [1, 2, 3, 4]);
        assert_eq!(specs[0].router.new_flows_per_source, Some((7, 9)));
        assert!(c
            .explain()
            .contains("new_flows_per_source = 7, new_flows_burst = 9"));
        assert_eq!(
            crate::run::listener_specs(&parse(&base).unwrap(), [1, 2, 3, 4])[0]
                .router
                .new_flows_per_source,
            None
        );

        let e = |head: &str, fragments: &[&str]| {
            check(
                &format!("[limits]\n{head}\n{base}"),
                if head.contains("burst") {
                    "limits.new_flows_burst"
                } else {
                    "limits.new_flows_per_source"
                },
                fragments,
            )
        };
        e(
            "new_flows_per_source = -1",
            &["-1 is out of range 0..=1000000"],
        );
        e(
            "new_flows_per_source = 1000001",
            &["out of range 0..=1000000"],
        );
        e(
            "new_flows_per_source = 10\nnew_flows_burst = 1000001",
            &["out of range 0..=1000000"],
        );
        e(
            "new_flows_burst = 200",
            &["limits.new_flows_per_source is 0 or absent", "line 2"],
        );
        e(
            "new_flows_per_source = 100\nnew_flows_burst = 50",
            &["50 is smaller than limits.new_flows_per_source (100)"],
        );
        // Every key of the section appears in the reference example.
        for key in [
            "max_flows",
            "max_bindings",
            "new_flows_per_source",
            "new_flows_burst",
        ] {
            assert!(
                EXAMPLE.lines().any(|l| l.starts_with(&format!("{key} ="))),
                "{key}"
            );
        }
    }

    #[test]
    fn reference_example_loads_from_disk() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cidlb.toml");
        if p.exists() {
            let c = Config::load(&p).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c, parse(EXAMPLE).unwrap());
        }
        let e = Config::load(Path::new("/nonexistent/cidlb.toml")).unwrap_err();
        assert_eq!(e.kind(), ConfigErrorKind::Io);
        assert!(
            e.to_string()
                .starts_with("/nonexistent/cidlb.toml: cannot read"),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(
            "[[listener]]\naddress = \"127.0.0.1:5684\"\ncid_length = 4\n\
             [[listener.backend]]\naddress = \"127.0.0.1:6000\"\n",
        )
        .unwrap();
        assert_eq!(c.workers, None);
        assert!(c.effective_workers() >= 1);
        assert_eq!(c.timeouts.flow_idle, Duration::from_secs(600));
        assert_eq!(c.timeouts.cid_binding_idle, Duration::from_secs(24 * 3600));
        assert_eq!(c.limits.max_flows, 100_000);
        assert_eq!(c.limits.max_bindings, 1_000_000);
        assert_eq!(c.hashing.seed, 0);
        assert_eq!(c.hashing.maglev_table_size, 65_537);
        let l = &c.listeners[0];
        assert_eq!(l.name, "listener-0");
        assert_eq!(l.multi_cid, MultiCidPolicy::First);
        assert_eq!(l.routing, RoutingMode::Cid);
        assert_eq!(l.upstream_source, None);
        assert_eq!(
            l.backends,
            vec![BackendConfig {
                name: "127.0.0.1:6000".into(),
                address: "127.0.0.1:6000".parse().unwrap(),
                weight: 1,
                state: BackendState::Up,
                server_id: None,
            }]
        );
    }

    #[test]
    fn every_value_is_read() {
        let c = parse(
            "workers = 3\n\
             [timeouts]\nflow_idle = \"90s\"\ncid_binding_idle = \"1h 30m\"\n\
             [limits]\nmax_flows = 7\nmax_bindings = 9\n\
             [hashing]\nseed = 42\nmaglev_table_size = 251\n\
             [[listener]]\nname = \"a\"\naddress = \"[::1]:5684\"\ncid_length = 32\n\
             multi_cid = \"split\"\nupstream_source = \"::1\"\n\
             [[listener.backend]]\nname = \"x\"\naddress = \"[::1]:7000\"\nweight = 10000\nstate = \"draining\"\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nrouting = \"address\"\nmulti_cid = \"drop\"\n\
             [[listener.backend]]\naddress = \"127.0.0.1:7000\"\nweight = 0\nstate = \"down\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.workers, Some(3));
        assert_eq!(c.timeouts.flow_idle, Duration::from_secs(90));
        assert_eq!(c.timeouts.cid_binding_idle, Duration::from_secs(5400));
        assert_eq!(
            c.limits,
            Limits {
                max_flows: 7,
                max_bindings: 9,
                new_flows_per_source: 0,
                new_flows_burst: 0,
            }
        );
        assert_eq!(
            c.hashing,
            Hashing {
                seed: 42,
                maglev_table_size: 251
            }
        );
        let (a, b) = (&c.listeners[0], &c.listeners[1]);
        assert_eq!(
            (a.cid_length, a.multi_cid),
            (Some(32), MultiCidPolicy::Split)
        );
        assert_eq!(a.upstream_source, Some("::1".parse().unwrap()));
        assert_eq!(a.backends[0].weight, 10_000);
        assert_eq!(a.backends[0].state, BackendState::Draining);
        assert_eq!(b.name, "listener-1");
        assert_eq!((b.routing, b.cid_length), (RoutingMode::Address, None));
        assert_eq!(b.multi_cid, MultiCidPolicy::Drop);
        assert_eq!(
            (b.backends[0].weight, b.backends[0].state),
            (0, BackendState::Down)
        );
    }

    #[test]
    fn brief_examples_of_messages() {
        let e = err("[[listener]]\naddress = \"0.0.0.0:5684\"\ncid_length = 6\n\
             [[listener.backend]]\naddress = \"10.0.0.2:5684\"\n\
             [[listener.backend]]\naddress = \"10.0.0.1\"\n");
        assert_eq!(
            e.to_string(),
            "cidlb.toml: listener[0].backend[1].address: invalid socket address \"10.0.0.1\" (expected IP:PORT) (line 7, column 11)"
        );
        assert_eq!(e.kind(), ConfigErrorKind::InvalidValue);
        assert_eq!(
            e.location(),
            Some(Location {
                line: 7,
                column: 11
            })
        );
        assert_eq!(
            e.message(),
            "invalid socket address \"10.0.0.1\" (expected IP:PORT)"
        );
        assert_eq!(e.origin(), "cidlb.toml");

        check(
            &one_listener("").replace("cid_length = 6", "cid_length = 40"),
            "listener[0].cid_length",
            &["listener[0].cid_length: 40 is out of range 1..=32"],
        );

        let two = format!(
            "{}{}",
            one_listener("name = \"coaps\""),
            one_listener("name = \"coaps\"").replace("5684\"\ncid", "5685\"\ncid")
        );
        check(
            &two,
            "listener[1].name",
            &["listener[1].name: duplicate listener name \"coaps\""],
        );

        let e = check(
            &one_listener("backnd = 1"),
            "listener[0].backnd",
            &[
                "unknown key listener[0].backnd",
                "allowed here: name, address, cid_length",
            ],
        );
        assert_eq!(e.kind(), ConfigErrorKind::UnknownKey);
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let e = err("workers = 2\n[[listener]\n");
        assert_eq!(e.kind(), ConfigErrorKind::Syntax);
        assert_eq!(e.path(), None);
        assert_eq!(e.location().map(|l| l.line), Some(2));
        assert!(
            e.to_string()
                .starts_with("cidlb.toml: TOML syntax error at line 2, column "),
            "{e}"
        );
        assert!(!e.to_string().contains('\n'), "{e}");

        let e = err("workers = 2\nworkers = 3\n");
        assert_eq!(e.kind(), ConfigErrorKind::Syntax);
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(e.to_string().contains("duplicate key"), "{e}");

        let e = err("a = \"é\"\nb = ");
        assert_eq!(e.location().map(|l| l.line), Some(2), "{e}");
    }

    #[test]
    fn unknown_keys_at_every_level() {
        let base = one_listener("");
        let cases: [(&str, String, &str); 7] = [
            (
                "workerz",
                format!("workerz = 1\n{base}"),
                "workers, timeouts, limits, hashing, health, admin, listener",
            ),
            (
                "timeouts.flow",
                format!("[timeouts]\nflow = \"1s\"\n{base}"),
                "flow_idle, cid_binding_idle",
            ),
            (
                "limits.max_flow",
                format!("[limits]\nmax_flow = 1\n{base}"),
                "max_flows, max_bindings, new_flows_per_source, new_flows_burst",
            ),
            (
                "hashing.sed",
                format!("[hashing]\nsed = 1\n{base}"),
                "seed, maglev_table_size",
            ),
            ("listener[0].backnd", one_listener("backnd = 1"), "backend"),
            (
                "listener[0].backend[1].wieght",
                format!("{base}wieght = 2\n"),
                "name, address, weight, state",
            ),
            (
                "backend",
                format!("{base}[[backend]]\naddress = \"10.0.0.9:1\"\n"),
                "[[listener.backend]]",
            ),
        ];
        for (path, text, allowed) in cases {
            let e = err(&text);
            assert_eq!(e.kind(), ConfigErrorKind::UnknownKey, "{e}");
            assert_eq!(e.path(), Some(path), "{e}");
            let s = e.to_string();
            assert!(s.contains(&format!("unknown key {path}")), "{s}");
            assert!(s.contains(allowed), "{s}");
            assert!(e.location().is_some(), "{s}");
        }
        // A sub-table of a listener with a typo.
        let e = err(&format!("{base}[listener.bakend]\n"));
        assert_eq!(e.path(), Some("listener[0].bakend"), "{e}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        check(
            &format!("workers = \"2\"\n{}", one_listener("")),
            "workers",
            &["expected an integer"],
        );
        check(
            &one_listener("name = 3"),
            "listener[0].name",
            &["invalid type", "expected a string"],
        );
        check(
            &one_listener("multi_cid = \"all\""),
            "listener[0].multi_cid",
            &["unknown value \"all\"", "first, split, drop"],
        );
        check(
            &one_listener("routing = \"ip\""),
            "listener[0].routing",
            &["cid, address"],
        );
        check(
            &format!("{}state = \"sick\"\n", one_listener("")),
            "listener[0].backend[1].state",
            &["up, draining, down"],
        );
        check(
            "[listener]\naddress = \"0.0.0.0:1\"\n",
            "listener",
            &["[[listener]]"],
        );
        check(
            &format!("[timeouts]\nflow_idle = 600\n{}", one_listener("")),
            "timeouts.flow_idle",
            &["600 has no unit", "\"600s\""],
        );
        check(
            &format!(
                "[timeouts]\nflow_idle = \"10 minits\"\n{}",
                one_listener("")
            ),
            "timeouts.flow_idle",
            &["invalid duration \"10 minits\""],
        );
        check(
            &format!("[timeouts]\nflow_idle = true\n{}", one_listener("")),
            "timeouts.flow_idle",
            &["expected a duration"],
        );
        let e = err(&format!("[hashing]\nseed = -1\n{}", one_listener("")));
        assert_eq!(e.path(), Some("hashing.seed"), "{e}");
        for e in [
            err(&one_listener("name = 3")),
            err(&format!("workers = \"2\"\n{}", one_listener(""))),
        ] {
            assert!(!e.to_string().contains("$__serde"), "{e}");
        }
    }

    #[test]
    fn validation_errors_name_the_key() {
        let base = one_listener("");
        let b1 = "[[listener.backend]]\naddress = \"10.0.0.1:5684\"\n";
        // (text, path, fragment)
        let cases: Vec<(String, &str, &str)> = vec![
            (
                "workers = 1\n".into(),
                "listener",
                "at least one [[listener]]",
            ),
            (
                "[[listener]]\naddress = \"0.0.0.0:5684\"\ncid_length = 6\n".into(),
                "listener[0].backend",
                "at least one backend",
            ),
            (
                format!(
                    "{base}{}",
                    base.replace(":5684\"\ncid", ":5684\"\nname = \"listener-0\"\ncid")
                ),
                "listener[1].name",
                "duplicate listener name \"listener-0\"",
            ),
            (
                format!("{base}{base}"),
                "listener[1].address",
                "duplicate listener address 0.0.0.0:5684",
            ),
            (
                format!("{base}name = \"10.0.0.1:5684\"\n"),
                "listener[0].backend[1].name",
                "duplicate backend name \"10.0.0.1:5684\"",
            ),
            (
                format!("{base}{b1}"),
                "listener[0].backend[2].address",
                "duplicate backend address 10.0.0.1:5684",
            ),
            (
                base.replace("cid_length = 6\n", ""),
                "listener[0].cid_length",
                "required",
            ),
            (
                base.replace("cid_length = 6", "cid_length = 0"),
                "listener[0].cid_length",
                "0 is out of range 1..=32",
            ),
            (
                base.replace("cid_length = 6", "cid_length = 33"),
                "listener[0].cid_length",
                "33 is out of range 1..=32",
            ),
            (
                base.replace("cid_length = 6", "routing = \"address\"\ncid_length = 99"),
                "listener[0].cid_length",
                "out of range",
            ),
            (
                base.replace("address = \"0.0.0.0:5684\"\n", ""),
                "listener[0].address",
                "required",
            ),
            (
                base.replace("0.0.0.0:5684", "localhost:5684"),
                "listener[0].address",
                "host names are not resolved",
            ),
            (
                base.replace("0.0.0.0:5684", "::1:5684"),
                "listener[0].address",
                "brackets",
            ),
            (
                base.replace("address = \"10.0.0.2:5684\"", "weight = 1"),
                "listener[0].backend[1].address",
                "required",
            ),
            (
                base.replace("10.0.0.2:5684", "0.0.0.0:5684"),
                "listener[0].backend[1].address",
                "cannot be a destination",
            ),
            (
                base.replace("10.0.0.2:5684", "10.0.0.2:0"),
                "listener[0].backend[1].address",
                "cannot be a destination",
            ),
            (
                base.replace("0.0.0.0:5684", "10.0.0.2:5684"),
                "listener[0].backend[1].address",
                "loop",
            ),
            (
                format!("{base}weight = 10001\n"),
                "listener[0].backend[1].weight",
                "10001 is out of range 0..=10000",
            ),
            (
                format!("{base}weight = -1\n"),
                "listener[0].backend[1].weight",
                "-1 is out of range 0..=10000",
            ),
            (
                format!("{base}name = \"a b\"\n"),
                "listener[0].backend[1].name",
                "invalid name",
            ),
            (
                format!("{base}name = \"\"\n"),
                "listener[0].backend[1].name",
                "invalid name",
            ),
            (
                one_listener("name = \"\""),
                "listener[0].name",
                "invalid name",
            ),
            (
                one_listener("upstream_source = \"10.0.0.5:1\""),
                "listener[0].upstream_source",
                "invalid IP address",
            ),
            (
                one_listener("upstream_source = \"::1\""),
                "listener[0].upstream_source",
                "IPv6",
            ),
            (
                format!("[timeouts]\nflow_idle = \"0s\"\n{base}"),
                "timeouts.flow_idle",
                "too short",
            ),
            (
                format!("[timeouts]\ncid_binding_idle = \"500ms\"\n{base}"),
                "timeouts.cid_binding_idle",
                "too short",
            ),
            (
                format!("[timeouts]\ncid_binding_idle = \"2y\"\n{base}"),
                "timeouts.cid_binding_idle",
                "too long",
            ),
            (
                format!("[limits]\nmax_flows = 0\n{base}"),
                "limits.max_flows",
                "0 is out of range 1..=100000000",
            ),
            (
                format!("[limits]\nmax_bindings = 100000001\n{base}"),
                "limits.max_bindings",
                "out of range 1..=100000000",
            ),
            (
                format!("[hashing]\nmaglev_table_size = 65536\n{base}"),
                "hashing.maglev_table_size",
                "65536 is not a prime number (the next prime is 65537)",
            ),
            (
                format!("[hashing]\nmaglev_table_size = 250\n{base}"),
                "hashing.maglev_table_size",
                "250 is out of range 251..=16777216",
            ),
            (
                format!("[hashing]\nmaglev_table_size = 16777259\n{base}"),
                "hashing.maglev_table_size",
                "out of range 251..=16777216",
            ),
            (
                format!("[hashing]\nmaglev_table_size = 16777215\n{base}"),
                "hashing.maglev_table_size",
                "largest allowed prime is 16777213",
            ),
            (
                format!("workers = 0\n{base}"),
                "workers",
                "0 is out of range 1..=256",
            ),
            (
                format!("workers = 257\n{base}"),
                "workers",
                "257 is out of range 1..=256",
            ),
        ];
        for (text, path, fragment) in &cases {
            let e = check(text, path, &[fragment]);
            assert!(
                matches!(
                    e.kind(),
                    ConfigErrorKind::InvalidValue | ConfigErrorKind::MissingKey
                ),
                "{e}"
            );
        }
    }

    /// A listener with `format` lines in its `[listener.cid_format]` and `b0`/`b1` lines
    /// in its two backends.
    fn with_format(cid_length: &str, format: &str, b0: &str, b1: &str) -> String {
        format!(
            "[[listener]]\naddress = \"0.0.0.0:5684\"\n{cid_length}\n\
             [listener.cid_format]\n{format}\n\
             [[listener.backend]]\naddress = \"10.0.0.1:5684\"\n{b0}\n\
             [[listener.backend]]\naddress = \"10.0.0.2:5684\"\n{b1}\n"
        )
    }

    const QLB: &str = "format = \"quic-lb\"\n\
        [[listener.cid_format.config]]\nrotation = 0\nserver_id_length = 1\nnonce_length = 6\n\
        key = \"8f95f09245765f80256934e50c66207f\"\n\
        [[listener.cid_format.config]]\nrotation = 1\nserver_id_length = 2\nnonce_length = 5\n\
        self_describing_length = true\n";

    #[test]
    fn cid_format_and_server_ids() {
        use crate::cid::{CidFormatConfig, ServerIdConfig};
        // QUIC-LB: cid_length becomes optional; server IDs per rotation.
        let c = parse(&with_format(
            "",
            QLB,
            "server_id = { 0 = \"01\", 1 = \"0a01\" }",
            "server_id = { 1 = \"0a02\", 0 = \"02\" }",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let l = &c.listeners[0];
        assert_eq!(l.cid_length, None);
        let Some(CidFormatConfig::QuicLb(p)) = &l.cid_format else {
            panic!("{:?}", l.cid_format)
        };
        assert_eq!(
            (p[0].rotation, p[0].server_id_len, p[0].nonce_len),
            (0, 1, 6)
        );
        assert_eq!(p[0].key.map(|k| k[0]), Some(0x8f));
        assert!(!p[0].self_describing_length && p[1].self_describing_length);
        assert_eq!(p[1].key, None);
        let sid = |b: &[u8]| cidlb_cidformat::ServerId::new(b).unwrap();
        assert_eq!(
            l.backends[1].server_id,
            Some(ServerIdConfig::PerRotation(vec![
                (0, sid(&[2])),
                (1, sid(&[0x0a, 2]))
            ]))
        );
        assert!(
            c.explain().contains("Routable CIDs: QUIC-LB"),
            "{}",
            c.explain()
        );
        assert!(
            c.warnings()
                .iter()
                .any(|w| w.contains("config rotation 1 has no key")),
            "{:?}",
            c.warnings()
        );
        // Prefix (Californium): one plain server ID per backend.
        let c = parse(&with_format(
            "cid_length = 6",
            "format = \"prefix\"",
            "server_id = \"07\"",
            "",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let l = &c.listeners[0];
        assert_eq!(
            l.cid_format,
            Some(CidFormatConfig::Prefix { prefix_length: 1 })
        );
        assert_eq!(
            l.backends[0].server_id,
            Some(ServerIdConfig::All(sid(&[7])))
        );
        assert!(c
            .warnings()
            .iter()
            .any(|w| w.contains("learned routing only")));
        // A server_id without a format is only a warning.
        let c = parse(&one_listener("").replace(
            "address = \"10.0.0.1:5684\"\n",
            "address = \"10.0.0.1:5684\"\nserver_id = \"01\"\n",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(c
            .warnings()
            .iter()
            .any(|w| w.contains("server IDs are unused")));
    }

    #[test]
    fn cid_format_errors_name_the_key() {
        let q = |b0: &str, b1: &str| with_format("cid_length = 8", QLB, b0, b1);
        let cases: Vec<(String, &str, &[&str])> = vec![
            (
                with_format("", "", "", ""),
                "listener[0].cid_format.format",
                &["required key is missing (\"quic-lb\" or \"prefix\")"],
            ),
            (
                with_format("", "format = \"qlb\"", "", ""),
                "listener[0].cid_format.format",
                &["unknown value \"qlb\" (expected one of: quic-lb, prefix)"],
            ),
            (
                with_format("", "format = \"quic-lb\"", "", ""),
                "listener[0].cid_format.config",
                &["at least one [[listener.cid_format.config]]"],
            ),
            (
                with_format("", &QLB.replace("rotation = 1", "rotation = 7"), "", ""),
                "listener[0].cid_format.config[1].rotation",
                &["7 is out of range 0..=6"],
            ),
            (
                with_format("", &QLB.replace("rotation = 1", "rotation = 0"), "", ""),
                "listener[0].cid_format.config[1].rotation",
                &["config rotation 0 is already used by listener[0].cid_format.config[0]"],
            ),
            (
                with_format("", &QLB.replace("nonce_length = 5", "nonce_length = 18"), "", ""),
                "listener[0].cid_format.config[1].nonce_length",
                &["server_id_length 2 + nonce_length 18 = 20: QUIC-LB allows at most 19 octets"],
            ),
            (
                with_format("", &QLB.replace("nonce_length = 5\n", ""), "", ""),
                "listener[0].cid_format.config[1].nonce_length",
                &["required key is missing (octets of nonce, 4..=18)"],
            ),
            (
                with_format("", &QLB.replace("66207f", "66207"), "", ""),
                "listener[0].cid_format.config[0].key",
                &["not hex: expected 32 hex digits"],
            ),
            (
                with_format("", &QLB.replace("8f95f092", ""), "", ""),
                "listener[0].cid_format.config[0].key",
                &["the key has 12 octets: expected 32 hex digits"],
            ),
            (
                with_format("", &QLB.replace("rotation = 1", "rotaton = 1"), "", ""),
                "listener[0].cid_format.config[1].rotaton",
                &["unknown key", "allowed here: rotation, server_id_length, nonce_length, key, self_describing_length"],
            ),
            (
                with_format("", &QLB.replace("format = \"quic-lb\"\n", "format = \"quic-lb\"\nprefix_length = 2\n"), "", ""),
                "listener[0].cid_format.prefix_length",
                &["prefix_length belongs to format = \"prefix\""],
            ),
            (
                with_format("cid_length = 6", &QLB.replace("quic-lb", "prefix"), "", ""),
                "listener[0].cid_format.config",
                &["belong to format = \"quic-lb\""],
            ),
            (
                with_format("", "format = \"prefix\"", "", ""),
                "listener[0].cid_length",
                &["required key is missing"],
            ),
            (
                with_format("cid_length = 2", "format = \"prefix\"\nprefix_length = 2", "", ""),
                "listener[0].cid_format.prefix_length",
                &["leaves no octet of the 2-octet CIDs"],
            ),
            (
                with_format("cid_length = 6", "format = \"prefix\"", "server_id = \"0a01\"", ""),
                "listener[0].backend[0].server_id",
                &["server ID 0a01 has 2 octet(s) but cid_format.prefix_length = 1"],
            ),
            (
                q("server_id = \"01\"", ""),
                "listener[0].backend[0].server_id",
                &["server ID 01 has 1 octet(s) but config rotation 1 uses 2-octet server IDs", "one per rotation"],
            ),
            (
                q("server_id = { 0 = \"01\", 2 = \"0a01\" }", ""),
                "listener[0].backend[0].server_id",
                &["config rotation 2 is not configured in listener[0].cid_format"],
            ),
            (
                q("server_id = { 0 = \"01\", 1 = \"0a01\" }", "server_id = { 0 = \"02\", 1 = \"0a01\" }"),
                "listener[0].backend[1].server_id",
                &["server ID 0a01 is already used by listener[0].backend[0] in config rotation 1"],
            ),
            (
                q("server_id = { x = \"01\" }", ""),
                "listener[0].backend[0].server_id",
                &["\"x\" is not a config rotation (0..=6)"],
            ),
            (
                q("server_id = \"zz\"", ""),
                "listener[0].backend[0].server_id",
                &["invalid server ID \"zz\": expected 1 to 15 octets in hex"],
            ),
            (
                q("server_id = 1", ""),
                "listener[0].backend[0].server_id",
                &["expected a server ID in hex"],
            ),
        ];
        for (text, path, fragments) in cases {
            let e = check(&text, path, fragments);
            assert!(
                !e.to_string().contains("8f95f092"),
                "a key in an error: {e}"
            );
        }
    }

    #[test]
    fn maglev_table_must_exceed_backend_count() {
        let mut text = String::from("[hashing]\nmaglev_table_size = 251\n[[listener]]\naddress = \"0.0.0.0:5684\"\ncid_length = 6\n");
        for i in 0..251 {
            let _ = write!(
                text,
                "[[listener.backend]]\naddress = \"10.0.{}.{}:5684\"\n",
                i / 200,
                i % 200 + 1
            );
        }
        check(
            &text,
            "hashing.maglev_table_size",
            &["larger than the number of backends", "(251)"],
        );
        // 250 backends fit (with an unevenness warning).
        let cut = text.rfind("[[listener.backend]]").unwrap();
        let c = parse(&text[..cut]).unwrap();
        assert!(c.warnings().iter().any(|w| w.contains("spread unevenly")));
    }

    #[test]
    fn at_most_65535_backends() {
        let raw = RawConfig {
            workers: None,
            timeouts: None,
            limits: None,
            hashing: None,
            health: None,
            admin: None,
            listeners: vec![RawListener {
                address: Some(Spanned::new(0..0, "0.0.0.0:5684".into())),
                cid_length: Some(Spanned::new(0..0, 6)),
                backends: (0..=MAX_BACKENDS)
                    .map(|i| RawBackend {
                        address: Some(Spanned::new(
                            0..0,
                            format!("10.1.{}.{}:5684", i / 256, i % 256),
                        )),
                        ..RawBackend::default()
                    })
                    .collect(),
                ..RawListener::default()
            }],
        };
        let ctx = Ctx {
            origin: "x",
            text: None,
        };
        let e = ctx.validate(&raw).unwrap_err();
        assert_eq!(e.path(), Some("listener[0].backend"));
        assert!(
            e.to_string().contains("65536 backends, at most 65535"),
            "{e}"
        );
    }

    #[test]
    fn quick_config() {
        let listen: SocketAddr = "0.0.0.0:5684".parse().unwrap();
        let b: Vec<SocketAddr> = vec![
            "10.0.0.1:5684".parse().unwrap(),
            "10.0.0.2:5684".parse().unwrap(),
        ];
        let c = Config::quick(listen, &b, 8).unwrap();
        assert_eq!(c.listeners.len(), 1);
        let l = &c.listeners[0];
        assert_eq!(
            (l.name.as_str(), l.address, l.cid_length),
            ("default", listen, Some(8))
        );
        assert_eq!(l.routing, RoutingMode::Cid);
        assert_eq!(l.backends.len(), 2);
        assert_eq!(l.backends[1].name, "backend-1");
        assert_eq!(l.backends[1].address, b[1]);
        assert_eq!(
            (l.backends[1].weight, l.backends[1].state),
            (1, BackendState::Up)
        );
        assert_eq!(c.timeouts, Timeouts::default());
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.hashing, Hashing::default());
        assert_eq!(c.workers, None);

        let e = Config::quick(listen, &b, 0).unwrap_err();
        assert_eq!(e.path(), Some("--cid-len"));
        assert_eq!(
            e.to_string(),
            "command line: --cid-len: 0 is out of range 1..=32"
        );
        let e = Config::quick(listen, &[], 6).unwrap_err();
        assert_eq!(e.path(), Some("--backend"), "{e}");
        let e = Config::quick(listen, &[b[0], b[0]], 6).unwrap_err();
        assert_eq!(e.path(), Some("--backend #2"), "{e}");
        assert_eq!(
            e.to_string(),
            "command line: --backend #2: duplicate backend address 10.0.0.1:5684 (already used by --backend #1)"
        );
        let e = Config::quick(listen, &["0.0.0.0:1".parse().unwrap()], 6).unwrap_err();
        assert_eq!(e.path(), Some("--backend #1"), "{e}");
        let e = Config::quick(b[0], &b, 6).unwrap_err();
        assert!(e.to_string().contains("loop"), "{e}");
    }

    #[test]
    fn explain_mentions_everything() {
        let c = parse(&format!(
            "workers = 256\n[timeouts]\nflow_idle = \"2h\"\ncid_binding_idle = \"1h\"\n{}\
             [[listener]]\nname = \"solo\"\naddress = \"0.0.0.0:5685\"\nrouting = \"address\"\n\
             [[listener.backend]]\nname = \"lonely\"\naddress = \"10.0.0.3:5684\"\nweight = 0\n",
            one_listener("name = \"coaps\"")
        ))
        .unwrap();
        let ex = c.explain();
        for needle in [
            "\"coaps\"",
            "0.0.0.0:5684",
            "6 bytes",
            "Connection ID",
            "10.0.0.1:5684",
            "10.0.0.2:5684",
            "~50.0% of new flows",
            "\"solo\"",
            "address:port only",
            "lonely",
            "flow_idle = 2h",
            "cid_binding_idle = 1h",
            "max_flows = 100000",
            "65537",
            "Warnings",
        ] {
            assert!(ex.contains(needle), "explain lacks {needle:?}:\n{ex}");
        }
        let w = c.warnings();
        let has = |s: &str| w.iter().any(|x| x.contains(s));
        assert!(has("single backend"), "{w:?}");
        assert!(has("no backend takes new flows"), "{w:?}");
        assert!(has("shorter than timeouts.flow_idle"), "{w:?}");
        if cpu_count() < 256 {
            assert!(has("workers = 256"), "{w:?}");
        }

        let quiet = Config::quick(
            "0.0.0.0:5684".parse().unwrap(),
            &[
                "10.0.0.1:5684".parse().unwrap(),
                "10.0.0.2:5684".parse().unwrap(),
            ],
            6,
        )
        .unwrap();
        assert!(quiet.warnings().is_empty(), "{:?}", quiet.warnings());
        assert!(quiet.explain().contains("No warnings."));
        assert!(quiet.explain().contains("backend-0"));
    }

    #[test]
    fn helpers() {
        assert!(
            is_prime(65_537) && is_prime(251) && is_prime(2) && !is_prime(1) && !is_prime(65_536)
        );
        assert_eq!(prev_prime(MAX_MAGLEV_TABLE_SIZE), 16_777_213);
        assert_eq!(fmt_duration(Duration::from_secs(86_400)), "24h");
        assert_eq!(fmt_duration(Duration::from_secs(600)), "10m");
        assert_eq!(fmt_duration(Duration::from_secs(61)), "61s");
        assert_eq!(
            quick_flag("listener[0].backend[12].address"),
            "--backend #13"
        );
    }
}
