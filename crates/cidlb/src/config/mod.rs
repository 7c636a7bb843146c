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

use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use cidlb_core::{BackendState, MultiCidPolicy};
use serde::Deserialize;
use toml::Spanned;

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

// ------------------------------------------------------------------------- error

/// What kind of problem a [`ConfigError`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfigErrorKind {
    /// The file could not be read.
    Io,
    /// The text is not valid TOML.
    Syntax,
    /// A key that the configuration does not have (often a typo).
    UnknownKey,
    /// A required key is absent.
    MissingKey,
    /// A value has the wrong type or breaks a rule (range, uniqueness...).
    InvalidValue,
}

/// A line and column (both 1-based, columns counted in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

/// Why a configuration was rejected: where (file, key path, line) and what is wrong.
///
/// `Display` gives one line, e.g.
/// `cidlb.toml: listener[0].cid_length: 40 is out of range 1..=32 (line 5, column 14)`,
/// `cidlb.toml: unknown key listener[0].backnd; allowed here: name, address, ...`, or
/// `cidlb.toml: TOML syntax error at line 3, column 9: ...`.
#[derive(Debug)]
pub struct ConfigError {
    origin: String,
    kind: ConfigErrorKind,
    path: Option<String>,
    message: String,
    location: Option<Location>,
    source: Option<std::io::Error>,
}

impl ConfigError {
    /// What kind of problem this is.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// Where the configuration came from: a file name, or `command line` for
    /// [`Config::quick`].
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The key path, e.g. `listener[0].backend[1].address`, when the error concerns a
    /// key. For [`Config::quick`] errors it names the flag (`--backend`).
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// What is wrong, without origin, path or location.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Line and column in the file, when known.
    pub fn location(&self) -> Option<Location> {
        self.location
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.origin)?;
        match (self.kind, &self.path, self.location) {
            (ConfigErrorKind::Syntax, _, Some(l)) => {
                return write!(
                    f,
                    "TOML syntax error at line {}, column {}: {}",
                    l.line, l.column, self.message
                );
            }
            (ConfigErrorKind::Syntax, _, None) => write!(f, "TOML syntax error: {}", self.message)?,
            (ConfigErrorKind::UnknownKey, Some(p), _) => {
                write!(f, "unknown key {p}")?;
                if !self.message.is_empty() {
                    write!(f, "; {}", self.message)?;
                }
            }
            (_, Some(p), _) => write!(f, "{p}: {}", self.message)?,
            (_, None, _) => f.write_str(&self.message)?,
        }
        if let Some(l) = self.location {
            write!(f, " (line {}, column {})", l.line, l.column)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

// --------------------------------------------------------------------- raw serde

type Sp<T> = Option<Spanned<T>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    workers: Sp<i64>,
    timeouts: Option<RawTimeouts>,
    limits: Option<RawLimits>,
    hashing: Option<RawHashing>,
    health: Option<RawHealth>,
    admin: Option<RawAdmin>,
    #[serde(default, rename = "listener")]
    listeners: Vec<RawListener>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    enabled: Sp<bool>,
    interval: Sp<RawDuration>,
    timeout: Sp<RawDuration>,
    rise: Sp<i64>,
    fall: Sp<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    enabled: Sp<bool>,
    address: Sp<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    flow_idle: Sp<RawDuration>,
    cid_binding_idle: Sp<RawDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_flows: Sp<i64>,
    max_bindings: Sp<i64>,
    new_flows_per_source: Sp<i64>,
    new_flows_burst: Sp<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHashing {
    seed: Sp<i64>,
    maglev_table_size: Sp<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: Sp<String>,
    address: Sp<String>,
    cid_length: Sp<i64>,
    multi_cid: Sp<RawMultiCid>,
    routing: Sp<RawRouting>,
    upstream_source: Sp<String>,
    cid_format: Option<RawCidFormat>,
    #[serde(default, rename = "backend")]
    backends: Vec<RawBackend>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    name: Sp<String>,
    address: Sp<String>,
    weight: Sp<i64>,
    state: Sp<RawState>,
    server_id: Sp<RawServerId>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawMultiCid {
    First,
    Split,
    Drop,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawRouting {
    Cid,
    Address,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum RawState {
    Up,
    Draining,
    Down,
}

/// `[listener.cid_format]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCidFormat {
    format: Sp<RawFormatKind>,
    prefix_length: Sp<i64>,
    #[serde(default, rename = "config")]
    configs: Vec<RawQuicLbConfig>,
}

#[derive(Deserialize, Clone, Copy)]
enum RawFormatKind {
    #[serde(rename = "quic-lb")]
    QuicLb,
    #[serde(rename = "prefix")]
    Prefix,
}

/// `[[listener.cid_format.config]]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawQuicLbConfig {
    rotation: Sp<i64>,
    server_id_length: Sp<i64>,
    nonce_length: Sp<i64>,
    key: Sp<String>,
    self_describing_length: Sp<bool>,
}

/// A backend's `server_id`: `"0a01"` or `{ 0 = "01", 1 = "0a01" }`.
enum RawServerId {
    One(String),
    PerRotation(Vec<(String, String)>),
}

impl<'de> Deserialize<'de> for RawServerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawServerId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a server ID in hex (\"0a01\") or a table of them by config rotation ({ 0 = \"01\", 1 = \"0a01\" })",
                )
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RawServerId, E> {
                Ok(RawServerId::One(s.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<RawServerId, A::Error> {
                let mut v = Vec::new();
                while let Some(entry) = m.next_entry::<String, String>()? {
                    v.push(entry);
                }
                Ok(RawServerId::PerRotation(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written the humantime way (`"90s"`, `"10m"`, `"24h"`, `"1h 30m"`).
#[derive(Clone, Copy)]
struct RawDuration(Duration);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"90s\", \"10m\" or \"24h\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RawDuration, E> {
                humantime::parse_duration(s).map(RawDuration).map_err(|e| {
                    E::custom(format_args!(
                        "invalid duration {s:?}: {e} (write e.g. \"90s\", \"10m\", \"24h\")"
                    ))
                })
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Err(E::custom(format_args!(
                    "{v} has no unit: write a duration string such as \"{v}s\" or \"{v}m\""
                )))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Err(E::custom(format_args!(
                    "{v} has no unit: write a duration string such as \"{v}s\" or \"{v}m\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}

// ----------------------------------------------------------------- entry points

impl Config {
    /// Parses and validates TOML text; `origin` (usually the file name) prefixes every
    /// error message.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let ctx = Ctx {
            origin,
            text: Some(text),
        };
        let de = toml::Deserializer::new(text);
        let raw: RawConfig =
            serde_path_to_error::deserialize(de).map_err(|e| ctx.serde_error(&e))?;
        ctx.validate(&raw)
    }

    /// Reads, parses and validates a configuration file; errors name the file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_toml_str(&text, &origin),
            Err(e) => Err(ConfigError {
                message: format!("cannot read the configuration file: {e}"),
                origin,
                kind: ConfigErrorKind::Io,
                path: None,
                location: None,
                source: Some(e),
            }),
        }
    }

    /// The configuration behind `cidlb run --listen ADDR --backend ADDR... --cid-len N`:
    /// one listener named `default` on `listen`, routing by CIDs of `cid_len` bytes, with
    /// backends `backend-0`, `backend-1`... at `backends` (weight 1, up), and every other
    /// setting at its default. Errors name the flag (`--backend`, `--cid-len`...).
    pub fn quick(
        listen: SocketAddr,
        backends: &[SocketAddr],
        cid_len: usize,
    ) -> Result<Config, ConfigError> {
        let none = 0..0;
        let raw = RawConfig {
            workers: None,
            timeouts: None,
            limits: None,
            hashing: None,
            health: None,
            admin: None,
            listeners: vec![RawListener {
                name: Some(Spanned::new(none.clone(), "default".to_owned())),
                address: Some(Spanned::new(none.clone(), listen.to_string())),
                cid_length: Some(Spanned::new(
                    none.clone(),
                    i64::try_from(cid_len).unwrap_or(i64::MAX),
                )),
                backends: backends
                    .iter()
                    .enumerate()
                    .map(|(i, a)| RawBackend {
                        name: Some(Spanned::new(none.clone(), format!("backend-{i}"))),
                        address: Some(Spanned::new(none.clone(), a.to_string())),
                        ..RawBackend::default()
                    })
                    .collect(),
                ..RawListener::default()
            }],
        };
        let ctx = Ctx {
            origin: "command line",
            text: None,
        };
        ctx.validate(&raw).map_err(|mut e| {
            if let Some(p) = e.path.take() {
                e.path = Some(quick_flag(&p));
            }
            // "(already used by listener[0].backend[0])" -> "(already used by --backend #1)"
            let mut msg = String::with_capacity(e.message.len());
            let mut rest = e.message.as_str();
            const PREFIX: &str = "listener[0].backend[";
            while let Some(i) = rest.find(PREFIX) {
                msg.push_str(&rest[..i]);
                let digits = i + PREFIX.len();
                let end = rest[digits..]
                    .find(']')
                    .map_or(rest.len(), |j| digits + j + 1);
                msg.push_str(&quick_flag(&rest[i..end]));
                rest = &rest[end..];
            }
            msg.push_str(rest);
            e.message = msg;
            e
        })
    }

    /// Data-plane threads to run: `workers`, else one per CPU.
    pub fn effective_workers(&self) -> usize {
        self.workers.unwrap_or_else(cpu_count)
    }
}

/// Maps a key path of the quick configuration to the flag that set it.
fn quick_flag(path: &str) -> String {
    if path == "listener[0].address" {
        "--listen".to_owned()
    } else if path == "listener[0].cid_length" {
        "--cid-len".to_owned()
    } else if path == "listener[0].backend" {
        "--backend".to_owned()
    } else if let Some(rest) = path.strip_prefix("listener[0].backend[") {
        // "3].address" -> "--backend #4" (the fourth --backend flag)
        let n: usize = rest
            .split(']')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        format!("--backend #{}", n + 1)
    } else {
        path.to_owned()
    }
}

fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

// -------------------------------------------------------------------- validation

struct Ctx<'a> {
    origin: &'a str,
    /// The TOML text, to turn spans into lines; `None` for [`Config::quick`].
    text: Option<&'a str>,
}

type R<T> = Result<T, ConfigError>;

impl Ctx<'_> {
    fn location(&self, span: Option<Range<usize>>) -> Option<Location> {
        let text = self.text?;
        let span = span?;
        let start = span.start.min(text.len());
        let start = (0..=start)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Some(Location { line, column })
    }

    fn err(
        &self,
        kind: ConfigErrorKind,
        path: impl Into<String>,
        message: impl Into<String>,
        span: Option<Range<usize>>,
    ) -> ConfigError {
        let path = path.into();
        ConfigError {
            origin: self.origin.to_owned(),
            kind,
            path: (!path.is_empty()).then_some(path),
            message: message.into(),
            location: self.location(span),
            source: None,
        }
    }

    fn invalid<T>(&self, path: &str, v: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        self.err(ConfigErrorKind::InvalidValue, path, message, Some(v.span()))
    }

    fn missing(&self, path: &str, why: impl Into<String>) -> ConfigError {
        self.err(ConfigErrorKind::MissingKey, path, why, None)
    }

    /// Turns a deserialization error into a `ConfigError` with a clean key path.
    fn serde_error(&self, e: &serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
        use serde_path_to_error::Segment;
        let mut path = String::new();
        let mut last_key = None;
        for seg in e.path().iter() {
            match seg {
                Segment::Seq { index } => {
                    let _ = write!(path, "[{index}]");
                }
                Segment::Map { key } | Segment::Enum { variant: key } => {
                    if key.starts_with("$__serde_spanned_private") {
                        continue;
                    }
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                    last_key = Some(key.as_str());
                }
                Segment::Unknown => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push('?');
                }
            }
        }
        let inner = e.inner();
        let span = inner.span();
        let msg = inner.message().trim().replace('\n', "; ");
        if path.is_empty() {
            // Only the parser itself fails without a path (syntax, duplicate keys).
            return self.err(ConfigErrorKind::Syntax, "", msg, span);
        }
        if let Some(rest) = msg.strip_prefix("unknown field `") {
            // "unknown field `x`, expected one of `a`, `b`" / "expected `a` or `b`"
            let allowed: Vec<&str> = rest
                .split('`')
                .skip(1)
                .enumerate()
                .filter(|(i, _)| i % 2 == 1)
                .map(|(_, s)| s)
                .collect();
            let mut hint = if allowed.is_empty() {
                String::from("no keys are allowed here")
            } else {
                format!("allowed here: {}", allowed.join(", "))
            };
            if path == "backend" || path == "backends" {
                hint.push_str(" (backends belong to a listener: [[listener.backend]])");
            } else if path == "listeners" {
                hint.push_str(" (write [[listener]])");
            } else if path.ends_with(".backends") {
                hint.push_str(" (write [[listener.backend]])");
            }
            return self.err(ConfigErrorKind::UnknownKey, path, hint, span);
        }
        let msg = if msg.contains("expected a sequence")
            && matches!(last_key, Some("listener" | "backend"))
        {
            let table = if last_key == Some("listener") {
                "[[listener]]"
            } else {
                "[[listener.backend]]"
            };
            format!("expected an array of tables: write {table} with double brackets ({msg})")
        } else if let Some(rest) = msg.strip_prefix("unknown variant `") {
            let mut parts = rest.split('`');
            let got = parts.next().unwrap_or_default();
            let allowed: Vec<&str> = parts
                .enumerate()
                .filter(|(i, _)| i % 2 == 1)
                .map(|(_, s)| s)
                .collect();
            format!(
                "unknown value {got:?} (expected one of: {})",
                allowed.join(", ")
            )
        } else {
            msg.replace("expected i64", "expected an integer")
                .replace("expected a string", "expected a string (in quotes)")
        };
        self.err(ConfigErrorKind::InvalidValue, path, msg, span)
    }

    fn int(
        &self,
        path: &str,
        v: &Sp<i64>,
        range: std::ops::RangeInclusive<i64>,
        default: i64,
    ) -> R<i64> {
        match v {
            None => Ok(default),
            Some(s) if range.contains(s.get_ref()) => Ok(*s.get_ref()),
            Some(s) => Err(self.invalid(
                path,
                s,
                format!(
                    "{} is out of range {}..={}",
                    s.get_ref(),
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    fn duration(&self, path: &str, v: &Sp<RawDuration>, default: Duration) -> R<Duration> {
        let Some(s) = v else { return Ok(default) };
        let d = s.get_ref().0;
        if d < MIN_IDLE {
            return Err(self.invalid(
                path,
                s,
                format!(
                    "{} is too short: at least 1s (the tables count whole seconds)",
                    fmt_duration(d)
                ),
            ));
        }
        if d > MAX_IDLE {
            return Err(self.invalid(
                path,
                s,
                format!("{} is too long: at most 365d", fmt_duration(d)),
            ));
        }
        Ok(d)
    }

    fn name(&self, path: &str, v: &Spanned<String>) -> R<String> {
        let n = v.get_ref();
        if n.is_empty() || n.len() > MAX_NAME_LEN || !n.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.invalid(
                path,
                v,
                format!(
                    "invalid name {n:?}: use 1 to {MAX_NAME_LEN} printable ASCII characters without spaces"
                ),
            ));
        }
        Ok(n.clone())
    }

    fn socket_addr(&self, path: &str, v: &Spanned<String>) -> R<SocketAddr> {
        let s = v.get_ref();
        s.trim().parse::<SocketAddr>().map_err(|_| {
            let hint = if !s.contains(':') {
                "expected IP:PORT"
            } else if s.bytes().any(|b| b.is_ascii_alphabetic())
                && s.parse::<IpAddr>().is_err()
                && !s.starts_with('[')
                && s.split(':')
                    .next()
                    .is_some_and(|h| h.parse::<IpAddr>().is_err())
                && s.matches(':').count() == 1
            {
                "expected IP:PORT; host names are not resolved"
            } else if s.matches(':').count() > 1 && !s.starts_with('[') {
                "expected IP:PORT; write IPv6 addresses in brackets, e.g. [::1]:5684"
            } else {
                "expected IP:PORT"
            };
            self.invalid(path, v, format!("invalid socket address {s:?} ({hint})"))
        })
    }

    fn validate(&self, raw: &RawConfig) -> R<Config> {
        let workers = match &raw.workers {
            None => None,
            Some(_) => Some(self.int("workers", &raw.workers, 1..=MAX_WORKERS as i64, 1)? as usize),
        };

        let t = raw.timeouts.as_ref();
        let timeouts = Timeouts {
            flow_idle: self.duration(
                "timeouts.flow_idle",
                &t.and_then(|t| t.flow_idle.clone()),
                DEFAULT_FLOW_IDLE,
            )?,
            cid_binding_idle: self.duration(
                "timeouts.cid_binding_idle",
                &t.and_then(|t| t.cid_binding_idle.clone()),
                DEFAULT_CID_BINDING_IDLE,
            )?,
        };

        let default_limits = RawLimits::default();
        let l = raw.limits.as_ref().unwrap_or(&default_limits);
        let max = MAX_TABLE_ENTRIES as i64;
        let mut limits = Limits {
            max_flows: self.int(
                "limits.max_flows",
                &l.max_flows,
                1..=max,
                DEFAULT_MAX_FLOWS as i64,
            )? as usize,
            max_bindings: self.int(
                "limits.max_bindings",
                &l.max_bindings,
                1..=max,
                DEFAULT_MAX_BINDINGS as i64,
            )? as usize,
            new_flows_per_source: self.int(
                "limits.new_flows_per_source",
                &l.new_flows_per_source,
                0..=i64::from(MAX_NEW_FLOWS_PER_SOURCE),
                0,
            )? as u32,
            new_flows_burst: 0,
        };
        let burst = self.int(
            "limits.new_flows_burst",
            &l.new_flows_burst,
            0..=i64::from(MAX_NEW_FLOWS_PER_SOURCE),
            0,
        )? as u32;
        let rate = limits.new_flows_per_source;
        limits.new_flows_burst = match &l.new_flows_burst {
            Some(b) if burst > 0 && rate == 0 => {
                return Err(self.invalid(
                    "limits.new_flows_burst",
                    b,
                    format!(
                        "{burst} is set, but limits.new_flows_per_source is 0 or absent (the \
                         limit is off); set both, or neither"
                    ),
                ))
            }
            Some(b) if burst > 0 && burst < rate => {
                return Err(self.invalid(
                    "limits.new_flows_burst",
                    b,
                    format!(
                        "{burst} is smaller than limits.new_flows_per_source ({rate}): the \
                         bucket refills once a second, so that rate could never be reached"
                    ),
                ))
            }
            _ if burst == 0 => rate,
            _ => burst,
        };

        let default_hashing = RawHashing::default();
        let h = raw.hashing.as_ref().unwrap_or(&default_hashing);
        let seed = self.int(
            "hashing.seed",
            &h.seed,
            0..=i64::MAX,
            DEFAULT_HASH_SEED as i64,
        )? as u64;
        let size_path = "hashing.maglev_table_size";
        let maglev_table_size = self.int(
            size_path,
            &h.maglev_table_size,
            MIN_MAGLEV_TABLE_SIZE as i64..=MAX_MAGLEV_TABLE_SIZE as i64,
            DEFAULT_MAGLEV_TABLE_SIZE as i64,
        )? as usize;
        if !is_prime(maglev_table_size) {
            let s = h.maglev_table_size.as_ref().expect("the default is prime");
            let hint = match next_prime(maglev_table_size) {
                Some(p) if p <= MAX_MAGLEV_TABLE_SIZE => format!(" (the next prime is {p})"),
                _ => format!(
                    " (the largest allowed prime is {})",
                    prev_prime(MAX_MAGLEV_TABLE_SIZE)
                ),
            };
            return Err(self.invalid(
                size_path,
                s,
                format!("{maglev_table_size} is not a prime number{hint}"),
            ));
        }
        let hashing = Hashing {
            seed,
            maglev_table_size,
        };

        if raw.listeners.is_empty() {
            return Err(self.missing("listener", "at least one [[listener]] table is required"));
        }
        let mut listeners: Vec<ListenerConfig> = Vec::with_capacity(raw.listeners.len());
        for (i, rl) in raw.listeners.iter().enumerate() {
            let lc = self.listener(i, rl)?;
            let p = format!("listener[{i}]");
            if let Some((j, _)) = listeners
                .iter()
                .enumerate()
                .find(|(_, o)| o.name == lc.name)
            {
                let e = format!(
                    "duplicate listener name {:?} (already used by listener[{j}])",
                    lc.name
                );
                return Err(match &rl.name {
                    Some(s) => self.invalid(&format!("{p}.name"), s, e),
                    None => self.err(ConfigErrorKind::InvalidValue, format!("{p}.name"), e, None),
                });
            }
            if lc.address.port() != 0 {
                if let Some((j, _)) = listeners
                    .iter()
                    .enumerate()
                    .find(|(_, o)| o.address == lc.address)
                {
                    let s = rl.address.as_ref().expect("validated");
                    return Err(self.invalid(
                        &format!("{p}.address"),
                        s,
                        format!(
                            "duplicate listener address {} (already used by listener[{j}])",
                            lc.address
                        ),
                    ));
                }
            }
            if lc.backends.len() >= maglev_table_size {
                let e = format!(
                    "{maglev_table_size} must be larger than the number of backends of listener {:?} ({}); pick a prime of at least {}",
                    lc.name,
                    lc.backends.len(),
                    next_prime(lc.backends.len().saturating_mul(100)).map_or(MAX_MAGLEV_TABLE_SIZE, |p| p.min(prev_prime(MAX_MAGLEV_TABLE_SIZE))),
                );
                return Err(match &h.maglev_table_size {
                    Some(s) => self.invalid(size_path, s, e),
                    None => self.err(ConfigErrorKind::InvalidValue, size_path, e, None),
                });
            }
            listeners.push(lc);
        }
        // A backend at one of our own listener addresses would loop datagrams forever.
        for (i, lc) in listeners.iter().enumerate() {
            for (j, b) in lc.backends.iter().enumerate() {
                if let Some(own) = listeners.iter().find(|o| o.address == b.address) {
                    let s = raw.listeners[i].backends[j]
                        .address
                        .as_ref()
                        .expect("validated");
                    return Err(self.invalid(
                        &format!("listener[{i}].backend[{j}].address"),
                        s,
                        format!(
                            "{} is the address of listener {:?}: datagrams would loop through the balancer",
                            b.address, own.name
                        ),
                    ));
                }
            }
        }

        let health = self.health(raw.health.as_ref())?;
        let admin = self.admin(raw.admin.as_ref())?;

        Ok(Config {
            workers,
            timeouts,
            limits,
            hashing,
            health,
            admin,
            listeners,
        })
    }

    fn health(&self, raw: Option<&RawHealth>) -> R<HealthConfig> {
        let d = HealthConfig::default();
        let Some(h) = raw else { return Ok(d) };
        let bounded = |path: &str, v: &Sp<RawDuration>, default, min, max| -> R<Duration> {
            let Some(s) = v else { return Ok(default) };
            let got = s.get_ref().0;
            if got < min || got > max {
                return Err(self.invalid(
                    path,
                    s,
                    format!(
                        "{} is out of range {}..={}",
                        fmt_duration(got),
                        fmt_duration(min),
                        fmt_duration(max)
                    ),
                ));
            }
            Ok(got)
        };
        let interval = bounded(
            "health.interval",
            &h.interval,
            d.interval,
            MIN_HEALTH_INTERVAL,
            MAX_HEALTH_INTERVAL,
        )?;
        let timeout = bounded(
            "health.timeout",
            &h.timeout,
            d.timeout.min(interval),
            MIN_HEALTH_TIMEOUT,
            MAX_HEALTH_INTERVAL,
        )?;
        if timeout > interval {
            let s = h
                .timeout
                .as_ref()
                .expect("only an explicit timeout exceeds it");
            return Err(self.invalid(
                "health.timeout",
                s,
                format!(
                    "{} is longer than health.interval ({}): a check must end before the next one starts",
                    fmt_duration(timeout),
                    fmt_duration(interval)
                ),
            ));
        }
        let max = i64::from(MAX_HEALTH_THRESHOLD);
        Ok(HealthConfig {
            enabled: h.enabled.as_ref().is_none_or(|e| *e.get_ref()),
            interval,
            timeout,
            rise: self.int("health.rise", &h.rise, 1..=max, i64::from(d.rise))? as u32,
            fall: self.int("health.fall", &h.fall, 1..=max, i64::from(d.fall))? as u32,
        })
    }

    fn admin(&self, raw: Option<&RawAdmin>) -> R<AdminConfig> {
        let Some(a) = raw else {
            return Ok(AdminConfig::default());
        };
        let address = match &a.address {
            Some(s) => Some(self.socket_addr("admin.address", s)?),
            None => None,
        };
        Ok(AdminConfig {
            enabled: a.enabled.as_ref().is_none_or(|e| *e.get_ref()),
            address,
        })
    }

    fn listener(&self, i: usize, rl: &RawListener) -> R<ListenerConfig> {
        let p = format!("listener[{i}]");
        let name = match &rl.name {
            Some(s) => self.name(&format!("{p}.name"), s)?,
            None => format!("listener-{i}"),
        };
        let address = match &rl.address {
            Some(s) => self.socket_addr(&format!("{p}.address"), s)?,
            None => return Err(self.missing(
                &format!("{p}.address"),
                "required key is missing (the local IP:PORT to listen on, e.g. \"0.0.0.0:5684\")",
            )),
        };
        let routing = match rl.routing.as_ref().map(|s| *s.get_ref()) {
            None | Some(RawRouting::Cid) => RoutingMode::Cid,
            Some(RawRouting::Address) => RoutingMode::Address,
        };
        let cid_format = match &rl.cid_format {
            Some(f) => Some(self.cid_format(&p, f)?),
            None => None,
        };
        let cid_path = format!("{p}.cid_length");
        let cid_length = match &rl.cid_length {
            None if routing == RoutingMode::Cid
                && !matches!(cid_format, Some(crate::cid::CidFormatConfig::QuicLb(_))) =>
            {
                return Err(self.missing(
                    &cid_path,
                    format!("required key is missing when routing = \"cid\" (the length, 1..={MAX_CID_LEN} bytes, of the CIDs your DTLS servers issue: it is not on the wire)"),
                ))
            }
            None => None,
            Some(_) => Some(self.int(&cid_path, &rl.cid_length, 1..=MAX_CID_LEN as i64, 1)? as usize),
        };
        let multi_cid = match rl.multi_cid.as_ref().map(|s| *s.get_ref()) {
            None | Some(RawMultiCid::First) => MultiCidPolicy::First,
            Some(RawMultiCid::Split) => MultiCidPolicy::Split,
            Some(RawMultiCid::Drop) => MultiCidPolicy::Drop,
        };
        let upstream_source = match &rl.upstream_source {
            None => None,
            Some(s) => Some(s.get_ref().trim().parse::<IpAddr>().map_err(|_| {
                self.invalid(
                    &format!("{p}.upstream_source"),
                    s,
                    format!(
                        "invalid IP address {:?} (expected an IP without port, e.g. \"10.0.0.5\")",
                        s.get_ref()
                    ),
                )
            })?),
        };

        let bp = format!("{p}.backend");
        if rl.backends.is_empty() {
            return Err(self.missing(
                &bp,
                "a listener needs at least one backend ([[listener.backend]] table)",
            ));
        }
        if rl.backends.len() > MAX_BACKENDS {
            return Err(self.err(
                ConfigErrorKind::InvalidValue,
                &bp,
                format!(
                    "{} backends, at most {MAX_BACKENDS} are supported",
                    rl.backends.len()
                ),
                None,
            ));
        }
        let mut backends: Vec<BackendConfig> = Vec::with_capacity(rl.backends.len());
        // Duplicate detection in O(n log n): lists may hold tens of thousands.
        let mut names = std::collections::HashMap::with_capacity(rl.backends.len());
        let mut addrs = std::collections::HashMap::with_capacity(rl.backends.len());
        for (j, rb) in rl.backends.iter().enumerate() {
            let bpj = format!("{bp}[{j}]");
            let b = self.backend(&bpj, rb)?;
            if let Some(ip) = upstream_source {
                if ip.is_ipv4() != b.address.is_ipv4() {
                    let s = rl.upstream_source.as_ref().expect("set");
                    return Err(self.invalid(
                        &format!("{p}.upstream_source"),
                        s,
                        format!(
                            "{ip} is an {} address but backend {:?} ({bpj}) is at the {} address {}",
                            family(ip),
                            b.name,
                            family(b.address.ip()),
                            b.address
                        ),
                    ));
                }
            }
            if let Some(k) = addrs.insert(b.address, j) {
                let s = rb.address.as_ref().expect("validated");
                return Err(self.invalid(
                    &format!("{bpj}.address"),
                    s,
                    format!(
                        "duplicate backend address {} (already used by {bp}[{k}])",
                        b.address
                    ),
                ));
            }
            if let Some(k) = names.insert(b.name.clone(), j) {
                let e = format!(
                    "duplicate backend name {:?} (already used by {bp}[{k}]){}",
                    b.name,
                    if rb.name.is_none() {
                        "; a backend without a name is named after its address"
                    } else {
                        ""
                    }
                );
                return Err(match &rb.name {
                    Some(s) => self.invalid(&format!("{bpj}.name"), s, e),
                    None => self.err(
                        ConfigErrorKind::InvalidValue,
                        format!("{bpj}.name"),
                        e,
                        None,
                    ),
                });
            }
            backends.push(b);
        }
        self.routable_cids(&p, rl, cid_format.as_ref(), cid_length, &mut backends)?;

        Ok(ListenerConfig {
            name,
            address,
            cid_length,
            multi_cid,
            routing,
            upstream_source,
            cid_format,
            backends,
        })
    }

    fn backend(&self, p: &str, rb: &RawBackend) -> R<BackendConfig> {
        let apath = format!("{p}.address");
        let address = match &rb.address {
            Some(s) => self.socket_addr(&apath, s)?,
            None => {
                return Err(self.missing(
                    &apath,
                    "required key is missing (the backend's IP:PORT, e.g. \"10.0.0.1:5684\")",
                ))
            }
        };
        if address.ip().is_unspecified() || address.port() == 0 || address.ip().is_multicast() {
            let s = rb.address.as_ref().expect("set");
            return Err(self.invalid(
                &apath,
                s,
                format!("{address} cannot be a destination (needs a unicast, non-wildcard IP and a non-zero port)"),
            ));
        }
        let name = match &rb.name {
            Some(s) => self.name(&format!("{p}.name"), s)?,
            None => address.to_string(),
        };
        let weight = self.int(
            &format!("{p}.weight"),
            &rb.weight,
            0..=i64::from(MAX_WEIGHT),
            1,
        )? as u32;
        let state = match rb.state.as_ref().map(|s| *s.get_ref()) {
            None | Some(RawState::Up) => BackendState::Up,
            Some(RawState::Draining) => BackendState::Draining,
            Some(RawState::Down) => BackendState::Down,
        };
        Ok(BackendConfig {
            name,
            address,
            weight,
            state,
            // Checked against the listener's cid_format by `routable_cids`.
            server_id: None,
        })
    }
}

// ---------------------------------------------------- routable CIDs (cid_format)

impl Ctx<'_> {
    fn required_int(
        &self,
        path: &str,
        v: &Sp<i64>,
        range: std::ops::RangeInclusive<i64>,
        what: &str,
    ) -> R<i64> {
        match v {
            None => Err(self.missing(path, format!("required key is missing ({what})"))),
            Some(_) => self.int(path, v, range, 0),
        }
    }

    /// `[listener.cid_format]` of listener path `p`.
    fn cid_format(&self, p: &str, rf: &RawCidFormat) -> R<crate::cid::CidFormatConfig> {
        use crate::cid::CidFormatConfig;
        let fp = format!("{p}.cid_format");
        let kind = match &rf.format {
            Some(k) => *k.get_ref(),
            None => {
                return Err(self.missing(
                    &format!("{fp}.format"),
                    "required key is missing (\"quic-lb\" or \"prefix\")",
                ))
            }
        };
        match kind {
            RawFormatKind::Prefix => {
                if !rf.configs.is_empty() {
                    return Err(self.err(
                        ConfigErrorKind::InvalidValue,
                        format!("{fp}.config"),
                        "[[listener.cid_format.config]] tables belong to format = \"quic-lb\"",
                        None,
                    ));
                }
                let n = self.int(
                    &format!("{fp}.prefix_length"),
                    &rf.prefix_length,
                    1..=cidlb_cidformat::ServerId::MAX_LEN as i64,
                    1,
                )? as usize;
                Ok(CidFormatConfig::Prefix { prefix_length: n })
            }
            RawFormatKind::QuicLb => {
                if let Some(s) = &rf.prefix_length {
                    return Err(self.invalid(
                        &format!("{fp}.prefix_length"),
                        s,
                        "prefix_length belongs to format = \"prefix\"",
                    ));
                }
                if rf.configs.is_empty() {
                    return Err(self.missing(
                        &format!("{fp}.config"),
                        "format = \"quic-lb\" needs at least one [[listener.cid_format.config]] table",
                    ));
                }
                let mut out: Vec<cidlb_cidformat::QuicLbParams> = Vec::new();
                for (k, rc) in rf.configs.iter().enumerate() {
                    let cp = format!("{fp}.config[{k}]");
                    let rotation = self.required_int(
                        &format!("{cp}.rotation"),
                        &rc.rotation,
                        0..=6,
                        "the config rotation codepoint, 0..=6: the first three bits of the CIDs",
                    )? as u8;
                    if let Some(j) = out.iter().position(|o| o.rotation == rotation) {
                        let s = rc.rotation.as_ref().expect("required");
                        return Err(self.invalid(
                            &format!("{cp}.rotation"),
                            s,
                            format!(
                                "config rotation {rotation} is already used by {fp}.config[{j}]"
                            ),
                        ));
                    }
                    let server_id_len = self.required_int(
                        &format!("{cp}.server_id_length"),
                        &rc.server_id_length,
                        1..=15,
                        "octets of server ID, 1..=15",
                    )? as usize;
                    let nonce_len = self.required_int(
                        &format!("{cp}.nonce_length"),
                        &rc.nonce_length,
                        4..=18,
                        "octets of nonce, 4..=18",
                    )? as usize;
                    if server_id_len + nonce_len > 19 {
                        let s = rc.nonce_length.as_ref().expect("required");
                        return Err(self.invalid(
                            &format!("{cp}.nonce_length"),
                            s,
                            format!(
                                "server_id_length {server_id_len} + nonce_length {nonce_len} = {}: QUIC-LB allows at most 19 octets",
                                server_id_len + nonce_len
                            ),
                        ));
                    }
                    let key = match &rc.key {
                        None => None,
                        Some(s) => Some(
                            crate::cid::parse_key(s.get_ref())
                                .map_err(|e| self.invalid(&format!("{cp}.key"), s, e))?,
                        ),
                    };
                    out.push(cidlb_cidformat::QuicLbParams {
                        rotation,
                        server_id_len,
                        nonce_len,
                        key,
                        self_describing_length: rc
                            .self_describing_length
                            .as_ref()
                            .is_some_and(|b| *b.get_ref()),
                    });
                }
                Ok(CidFormatConfig::QuicLb(out))
            }
        }
    }

    /// Reads the backends' `server_id`s and checks them against the listener's format
    /// (lengths, rotations, uniqueness); also the prefix format against `cid_length`.
    fn routable_cids(
        &self,
        p: &str,
        rl: &RawListener,
        format: Option<&crate::cid::CidFormatConfig>,
        cid_length: Option<usize>,
        backends: &mut [BackendConfig],
    ) -> R<()> {
        use crate::cid::{parse_server_id, CidFormatConfig, ServerIdConfig};
        use cidlb_cidformat::hex_string;
        if let (Some(CidFormatConfig::Prefix { prefix_length }), Some(n)) = (format, cid_length) {
            if n <= *prefix_length {
                let e = format!(
                    "prefix_length {prefix_length} leaves no octet of the {n}-octet CIDs (cid_length) for randomness"
                );
                let path = format!("{p}.cid_format.prefix_length");
                return Err(
                    match rl
                        .cid_format
                        .as_ref()
                        .and_then(|f| f.prefix_length.as_ref())
                    {
                        Some(s) => self.invalid(&path, s, e),
                        None => self.err(ConfigErrorKind::InvalidValue, path, e, None),
                    },
                );
            }
        }
        for (j, rb) in rl.backends.iter().enumerate() {
            let Some(s) = &rb.server_id else { continue };
            let sp = format!("{p}.backend[{j}].server_id");
            let parsed = match s.get_ref() {
                RawServerId::One(hex) => {
                    ServerIdConfig::All(parse_server_id(hex).map_err(|e| self.invalid(&sp, s, e))?)
                }
                RawServerId::PerRotation(entries) => {
                    if entries.is_empty() {
                        return Err(self.invalid(
                            &sp,
                            s,
                            "an empty table: give { ROTATION = \"HEX\", ... }",
                        ));
                    }
                    let mut v = Vec::with_capacity(entries.len());
                    for (key, hex) in entries {
                        let r = key.parse::<u8>().ok().filter(|r| *r <= 6).ok_or_else(|| {
                            self.invalid(
                                &sp,
                                s,
                                format!("{key:?} is not a config rotation (0..=6)"),
                            )
                        })?;
                        v.push((
                            r,
                            parse_server_id(hex).map_err(|e| self.invalid(&sp, s, e))?,
                        ));
                    }
                    v.sort_by_key(|(r, _)| *r);
                    ServerIdConfig::PerRotation(v)
                }
            };
            match (format, &parsed) {
                (Some(CidFormatConfig::Prefix { prefix_length }), ServerIdConfig::All(id)) => {
                    if id.as_bytes().len() != *prefix_length {
                        return Err(self.invalid(
                            &sp,
                            s,
                            format!(
                                "server ID {} has {} octet(s) but cid_format.prefix_length = {prefix_length}",
                                hex_string(id.as_bytes()),
                                id.as_bytes().len()
                            ),
                        ));
                    }
                }
                (Some(CidFormatConfig::Prefix { .. }), ServerIdConfig::PerRotation(_)) => {
                    return Err(self.invalid(
                        &sp,
                        s,
                        "server IDs per config rotation need format = \"quic-lb\"",
                    ));
                }
                (Some(CidFormatConfig::QuicLb(params)), ServerIdConfig::All(id)) => {
                    let n = id.as_bytes().len();
                    if let Some(c) = params.iter().find(|c| c.server_id_len != n) {
                        return Err(self.invalid(
                            &sp,
                            s,
                            format!(
                                "server ID {} has {n} octet(s) but config rotation {} uses {}-octet server IDs (give one per rotation: server_id = {{ 0 = \"..\", 1 = \"....\" }})",
                                hex_string(id.as_bytes()),
                                c.rotation,
                                c.server_id_len
                            ),
                        ));
                    }
                }
                (Some(CidFormatConfig::QuicLb(params)), ServerIdConfig::PerRotation(v)) => {
                    for (r, id) in v {
                        let Some(c) = params.iter().find(|c| c.rotation == *r) else {
                            return Err(self.invalid(
                                &sp,
                                s,
                                format!("config rotation {r} is not configured in {p}.cid_format"),
                            ));
                        };
                        if id.as_bytes().len() != c.server_id_len {
                            return Err(self.invalid(
                                &sp,
                                s,
                                format!(
                                    "server ID {} has {} octet(s) but config rotation {r} uses {}-octet server IDs",
                                    hex_string(id.as_bytes()),
                                    id.as_bytes().len(),
                                    c.server_id_len
                                ),
                            ));
                        }
                    }
                }
                (None, _) => {}
            }
            backends[j].server_id = Some(parsed);
        }
        // Unique within each configuration, and in the router's view (routing IDs).
        let scopes: Vec<Option<u8>> = match format {
            Some(CidFormatConfig::QuicLb(params)) => {
                params.iter().map(|c| Some(c.rotation)).collect()
            }
            _ => vec![None],
        };
        let dup = |j: usize, msg: String| {
            let s = rl.backends[j].server_id.as_ref().expect("parsed");
            self.invalid(&format!("{p}.backend[{j}].server_id"), s, msg)
        };
        for scope in scopes {
            let mut seen = std::collections::HashMap::new();
            for (j, b) in backends.iter().enumerate() {
                let Some(id) = b.server_id.as_ref().and_then(|s| s.for_rotation(scope)) else {
                    continue;
                };
                if let Some(k) = seen.insert(id, j) {
                    return Err(dup(
                        j,
                        format!(
                            "server ID {} is already used by {p}.backend[{k}]{}",
                            hex_string(id.as_bytes()),
                            scope.map_or(String::new(), |r| format!(" in config rotation {r}"))
                        ),
                    ));
                }
            }
        }
        let mut seen = std::collections::HashMap::new();
        for (j, b) in backends.iter().enumerate() {
            let Some(id) = b.server_id.as_ref().map(ServerIdConfig::routing_id) else {
                continue;
            };
            if let Some(k) = seen.insert(id, j) {
                return Err(dup(
                    j,
                    format!(
                        "the balancer tells backends apart by the server ID of their lowest config rotation, and {} is also that of {p}.backend[{k}]: give them different IDs there",
                        hex_string(id.as_bytes())
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

fn next_prime(n: usize) -> Option<usize> {
    (n..=MAX_MAGLEV_TABLE_SIZE).find(|&k| is_prime(k))
}

fn prev_prime(n: usize) -> usize {
    (2..=n).rev().find(|&k| is_prime(k)).unwrap_or(2)
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

// ----------------------------------------------------------------------- explain

fn state_word(s: BackendState) -> &'static str {
    match s {
        BackendState::Up => "up",
        BackendState::Draining => "draining",
        BackendState::Down => "down",
    }
}

impl Config {
    /// A readable summary of what this configuration makes the balancer do, with
    /// warnings about likely mistakes (what `cidlb check-config FILE` prints).
    pub fn explain(&self) -> String {
        let mut o = String::new();
        let cpus = cpu_count();
        let nb: usize = self.listeners.iter().map(|l| l.backends.len()).sum();
        let _ = writeln!(
            o,
            "Configuration is valid: {} listener{}, {} backend{} in total.",
            self.listeners.len(),
            plural(self.listeners.len()),
            nb,
            plural(nb)
        );
        match self.workers {
            Some(w) => {
                let _ = writeln!(
                    o,
                    "Worker threads: {w} (this machine has {cpus} CPU{}).",
                    plural(cpus)
                );
            }
            None => {
                let _ = writeln!(o, "Worker threads: one per CPU ({cpus} on this machine).");
            }
        }

        for l in &self.listeners {
            let _ = writeln!(o);
            let _ = writeln!(o, "Listener {:?} on UDP {}", l.name, l.address);
            if l.address.port() == 0 {
                let _ = writeln!(o, "  (port 0: the kernel picks a free port at start-up)");
            }
            match l.routing {
                RoutingMode::Cid => {
                    if let Some(n) = l.cid_length {
                        let _ = writeln!(
                            o,
                            "  Routing: by DTLS Connection ID. CIDs are {n} byte{} long (the length is not on the wire:",
                            plural(n)
                        );
                        let _ = writeln!(o, "    it must match what the servers issue).");
                    } else {
                        let _ = writeln!(o, "  Routing: by DTLS Connection ID; CID lengths come from the QUIC-LB configurations below.");
                    }
                    let _ = writeln!(o, "    - A record with a CID goes to the backend that issued it (learned from its ServerHello),");
                    let _ = writeln!(o, "      so a device whose NAT changed its address still reaches its session.");
                    let _ = writeln!(o, "    - Records without a CID (handshakes) stick to the client's address:port;");
                    let _ = writeln!(o, "      a new client is placed by Maglev consistent hashing over the backends that take new flows.");
                    let _ = writeln!(
                        o,
                        "    - A datagram whose records carry different CIDs is {}.",
                        match l.multi_cid {
                            MultiCidPolicy::First =>
                                "routed by its first CID (multi_cid = \"first\")",
                            MultiCidPolicy::Split =>
                                "split into one datagram per backend (multi_cid = \"split\")",
                            MultiCidPolicy::Drop => "dropped (multi_cid = \"drop\")",
                        }
                    );
                }
                RoutingMode::Address => {
                    let _ = writeln!(o, "  Routing: by client address:port only (routing = \"address\"), like a plain UDP balancer.");
                    let _ = writeln!(o, "    A client whose NAT changes its address is placed afresh and usually loses its DTLS session.");
                    let _ = writeln!(o, "    Meant for comparison with CID routing.");
                }
            }
            crate::cid::explain_listener(&mut o, l);
            match l.upstream_source {
                Some(ip) => {
                    let _ = writeln!(
                        o,
                        "  Upstream sockets (one per client address:port) bind to {ip}."
                    );
                }
                None => {
                    let _ = writeln!(o, "  Upstream sockets (one per client address:port) bind to an address the kernel picks.");
                }
            }
            let total: u64 = l
                .backends
                .iter()
                .filter(|b| b.state == BackendState::Up)
                .map(|b| u64::from(b.weight))
                .sum();
            let _ = writeln!(o, "  Backends ({}):", l.backends.len());
            let wn = l.backends.iter().map(|b| b.name.len()).max().unwrap_or(0);
            let wa = l
                .backends
                .iter()
                .map(|b| b.address.to_string().len())
                .max()
                .unwrap_or(0);
            for b in &l.backends {
                let share = if b.state != BackendState::Up || b.weight == 0 || total == 0 {
                    match b.state {
                        BackendState::Down => "gets no traffic".to_owned(),
                        BackendState::Draining => "no new flows; existing ones continue".to_owned(),
                        BackendState::Up => {
                            "no new flows (weight 0); existing ones continue".to_owned()
                        }
                    }
                } else {
                    format!(
                        "~{:.1}% of new flows",
                        100.0 * f64::from(b.weight) / total as f64
                    )
                };
                let _ = writeln!(
                    o,
                    "    {:wn$}  {:wa$}  weight {:<5} {:<8}  {share}",
                    b.name,
                    b.address.to_string(),
                    b.weight,
                    state_word(b.state),
                );
            }
        }

        let t = &self.timeouts;
        let _ = writeln!(o);
        let _ = writeln!(o, "Timeouts:");
        let _ = writeln!(
            o,
            "  flow_idle = {}: a client address:port keeps its backend and upstream socket for {} after its last datagram.",
            fmt_duration(t.flow_idle),
            fmt_duration(t.flow_idle)
        );
        let _ = writeln!(
            o,
            "  cid_binding_idle = {}: a Connection ID keeps its backend for {} after its last datagram.",
            fmt_duration(t.cid_binding_idle),
            fmt_duration(t.cid_binding_idle)
        );
        let _ = writeln!(
            o,
            "Limits (per listener; when a table is full, an idle entry is evicted):"
        );
        let _ = writeln!(
            o,
            "  max_flows = {}, max_bindings = {}",
            self.limits.max_flows, self.limits.max_bindings
        );
        match self.limits.new_flow_limit() {
            Some((rate, burst)) => {
                let _ = writeln!(
                    o,
                    "  new_flows_per_source = {rate}, new_flows_burst = {burst}: one source (IPv4 \
                     address, IPv6 /64) may open {burst} new flows at once, then {rate} a second; \
                     datagrams of existing flows and known Connection IDs are never limited."
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "  new_flows_per_source = 0: new flows are not limited per source."
                );
            }
        }
        let _ = writeln!(
            o,
            "  Each flow holds one upstream UDP socket: the daemon's open-files limit (ulimit -n) \
             should exceed {} (max_flows x {} listener{}).",
            self.limits.max_flows.saturating_mul(self.listeners.len()),
            self.listeners.len(),
            plural(self.listeners.len())
        );
        let _ = writeln!(
            o,
            "Hashing: Maglev seed {}, table size {} (use the same values on every balancer instance).",
            self.hashing.seed, self.hashing.maglev_table_size
        );
        let h = &self.health;
        if h.enabled {
            let _ = writeln!(
                o,
                "Health checks: a DTLS ClientHello to every backend each {} (answer within {}); down after {} failure{} in a row, up again after {} success{}.",
                fmt_duration(h.interval),
                fmt_duration(h.timeout),
                h.fall,
                plural(h.fall as usize),
                h.rise,
                if h.rise == 1 { "" } else { "es" }
            );
        } else {
            let _ = writeln!(o, "Health checks: off (every backend counts as healthy).");
        }
        if self.admin.enabled {
            let _ = writeln!(
                o,
                "Admin API: http://{}/ (metrics, backends, drain, reload).",
                self.admin.address()
            );
        } else {
            let _ = writeln!(o, "Admin API: off.");
        }

        let warnings = self.warnings();
        let _ = writeln!(o);
        if warnings.is_empty() {
            let _ = writeln!(o, "No warnings.");
        } else {
            let _ = writeln!(o, "Warnings ({}):", warnings.len());
            for w in &warnings {
                let _ = writeln!(o, "  - {w}");
            }
        }
        o
    }

    /// Likely mistakes that are not errors (also listed by [`Config::explain`]).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.admin.enabled && !self.admin.address().ip().is_loopback() {
            w.push(format!(
                "admin.address {} is not a loopback address: anyone who reaches it can drain backends and reload the configuration (the API has no authentication)",
                self.admin.address()
            ));
        }
        let cpus = cpu_count();
        if let Some(n) = self.workers {
            if n > cpus {
                w.push(format!(
                    "workers = {n} is more than the {cpus} CPU{} of this machine: threads will compete for CPUs",
                    plural(cpus)
                ));
            }
        }
        let t = &self.timeouts;
        if t.cid_binding_idle < t.flow_idle {
            w.push(format!(
                "timeouts.cid_binding_idle ({}) is shorter than timeouts.flow_idle ({}): CID bindings exist to outlive flows (a device that sleeps, then comes back from a new address, needs its binding)",
                fmt_duration(t.cid_binding_idle),
                fmt_duration(t.flow_idle)
            ));
        }
        for l in &self.listeners {
            let n = l.backends.len();
            if n == 1 {
                w.push(format!(
                    "listener {:?} has a single backend: nothing is balanced (fine for a test)",
                    l.name
                ));
            }
            if !l
                .backends
                .iter()
                .any(|b| b.state == BackendState::Up && b.weight > 0)
            {
                w.push(format!(
                    "listener {:?}: no backend takes new flows (each has weight 0 or is draining/down): new clients will be dropped",
                    l.name
                ));
            }
            if n > 1 && self.hashing.maglev_table_size < n.saturating_mul(100) {
                w.push(format!(
                    "hashing.maglev_table_size = {} is less than 100 x the {n} backends of listener {:?}: new flows will be spread unevenly",
                    self.hashing.maglev_table_size, l.name
                ));
            }
            if l.routing == RoutingMode::Address {
                if let Some(c) = l.cid_length {
                    w.push(format!(
                        "listener {:?}: cid_length = {c} has no effect with routing = \"address\"",
                        l.name
                    ));
                }
            }
            crate::cid::warnings(l, &mut w);
            if let Some(ip) = l.upstream_source {
                if ip.is_loopback() && l.backends.iter().any(|b| !b.address.ip().is_loopback()) {
                    w.push(format!(
                        "listener {:?}: upstream_source {ip} is a loopback address but some backends are not: they cannot be reached from it",
                        l.name
                    ));
                }
            }
        }
        for (i, a) in self.listeners.iter().enumerate() {
            for b in &self.listeners[i + 1..] {
                let (x, y) = (a.address, b.address);
                if x.port() != 0
                    && x.port() == y.port()
                    && x.ip() != y.ip()
                    && (x.ip().is_unspecified() || y.ip().is_unspecified())
                {
                    w.push(format!(
                        "listeners {:?} ({x}) and {:?} ({y}) share port {} and one binds a wildcard address: the second bind may fail",
                        a.name,
                        b.name,
                        x.port()
                    ));
                }
            }
        }
        w
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

// ------------------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../examples/cidlb.toml");

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
