//! The seam between the control plane and the data planes.
//!
//! A data plane forwards one listener's datagrams: today the userspace NAT plane of
//! `cidlb-net`; an in-kernel XDP plane or a transparent NAT egress implements the same
//! interface. The control plane (health checks, the operator, reloads, the admin API,
//! metrics) talks to each listener's plane only through [`ListenerPlane`], and to the
//! whole plane through [`DataPlane`]:
//!
//! | the control plane wants to | call |
//! | --- | --- |
//! | apply a reload (settings + a backend set prepared by [`Router::prepare_backends`]) | [`ListenerPlane::reconfigure`] |
//! | apply a health flip or a drain | [`ListenerPlane::set_backend_state`] |
//! | change a weight | [`ListenerPlane::set_backend_weight`] |
//! | explain where a CID or an address goes | [`ListenerPlane::explain_cid`], [`ListenerPlane::explain_client`] |
//! | read counters and table sizes | [`ListenerPlane::snapshot`], [`ListenerPlane::traffic`] |
//! | stop | [`DataPlane::shutdown`] |
//!
//! A plane owns its routing state (a [`Router`], or maps that mirror one): nothing
//! outside it takes its locks. The plane reads its own clock.
//!
//! [`Router`]: crate::Router
//! [`Router::prepare_backends`]: crate::Router::prepare_backends

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{BackendId, BackendState};
pub use crate::listing::{
    BindingEntry, BindingFilter, FlowEntry, FlowFilter, Page, MAX_PAGE, MAX_SCAN,
};
use crate::outcome::Counters;
use crate::router::{CidExplanation, ClientExplanation, PreparedBackends, RouterConfig};

/// Whether a plane statistic only grows (a counter) or goes up and down (a gauge).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatKind {
    /// Only grows.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// A plane's own statistic (beyond the routing counters every plane shares), declared
/// once by the plane: its name (a metric label, `snake_case`), its help text and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StatInfo {
    /// `snake_case` name.
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: StatKind,
}

/// Datagrams and bytes between the balancer and one backend, in each direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Datagrams sent to the backend.
    pub to_backend_datagrams: u64,
    /// Bytes sent to the backend.
    pub to_backend_bytes: u64,
    /// Datagrams received from the backend.
    pub from_backend_datagrams: u64,
    /// Bytes received from the backend.
    pub from_backend_bytes: u64,
}

impl Traffic {
    /// `self - base`, field by field (saturating): counts since `base` was taken.
    pub fn since(&self, base: &Traffic) -> Traffic {
        Traffic {
            to_backend_datagrams: self
                .to_backend_datagrams
                .saturating_sub(base.to_backend_datagrams),
            to_backend_bytes: self.to_backend_bytes.saturating_sub(base.to_backend_bytes),
            from_backend_datagrams: self
                .from_backend_datagrams
                .saturating_sub(base.from_backend_datagrams),
            from_backend_bytes: self
                .from_backend_bytes
                .saturating_sub(base.from_backend_bytes),
        }
    }
}

/// Sizes, bounds and memory of a plane's routing tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableSizes {
    /// Flows stored (idle ones not yet swept included).
    pub flows: usize,
    /// CID bindings stored (idle ones not yet swept included).
    pub bindings: usize,
    /// Flow table bound.
    pub max_flows: usize,
    /// Binding table bound.
    pub max_bindings: usize,
    /// Flow idle timeout.
    pub flow_idle: Duration,
    /// Binding idle timeout.
    pub binding_idle: Duration,
    /// Bytes allocated by the flow table.
    pub flow_bytes: usize,
    /// Bytes allocated by the binding table.
    pub binding_bytes: usize,
    /// Bytes allocated by the per-source new-flow limiter's table.
    pub source_bytes: usize,
}

/// Live flows and bindings that lead to one backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendCounts {
    /// The backend.
    pub backend: BackendId,
    /// Live flows to it.
    pub flows: usize,
    /// Live CID bindings to it.
    pub bindings: usize,
}

/// One listener's plane, read at one moment.
#[derive(Clone, Debug, Default)]
pub struct PlaneSnapshot {
    /// Routing outcomes, drops and events (the same names on every plane).
    pub counters: Counters,
    /// The routing tables.
    pub tables: TableSizes,
    /// The plane's own statistics, in the plane's declaration order.
    pub stats: Vec<(StatInfo, u64)>,
    /// Per-backend flows and bindings (empty unless asked for: it walks the tables).
    pub per_backend: Vec<BackendCounts>,
    /// Backends this plane cannot forward to whatever their state, with why (a short
    /// word, e.g. `no_mac`: direct routing has no link-layer address for it). The
    /// plane routes them as down; the control plane shows them down.
    pub unreachable: Vec<(BackendId, &'static str)>,
}

/// One listener's data plane, as the control plane sees it (see the module docs).
pub trait ListenerPlane: Send + Sync + std::fmt::Debug {
    /// The listener's name.
    fn name(&self) -> &str;
    /// The bound address (the real port when 0 was asked for).
    fn local_addr(&self) -> SocketAddr;
    /// Applies new settings and a prepared backend set in one step (a reload): flows
    /// and bindings stay, by backend id.
    fn reconfigure(&self, cfg: RouterConfig, backends: PreparedBackends);
    /// Changes a backend's state; false if the plane has no such backend.
    fn set_backend_state(&self, id: BackendId, state: BackendState) -> bool;
    /// Changes a backend's weight; false if the plane has no such backend.
    fn set_backend_weight(&self, id: BackendId, weight: u32) -> bool;
    /// Where a datagram carrying `cid` from `client` (if given) would go now, and why:
    /// exactly what the plane would do.
    fn explain_cid(&self, cid: &[u8], client: Option<SocketAddr>) -> CidExplanation;
    /// Where a datagram without CID from `client` would go now, and why.
    fn explain_client(&self, client: SocketAddr) -> ClientExplanation;
    /// Counters and table sizes; with `per_backend`, also walks the tables for each
    /// backend's flows and bindings (O(table size): for the admin API).
    fn snapshot(&self, per_backend: bool) -> PlaneSnapshot;
    /// Datagrams and bytes to and from backend `id` since the plane started (an id's
    /// counters are never reset: subtract a base when ids are reused).
    fn traffic(&self, id: BackendId) -> Traffic;
    /// The configuration the plane routes with now.
    fn router_config(&self) -> RouterConfig;
    /// Up to `limit` (at most [`MAX_PAGE`]) live flows matching `filter`, from table
    /// position `cursor` on, looking at most [`MAX_SCAN`] entries. A plane whose flows
    /// cannot be listed returns an empty page.
    fn flows(&self, _filter: &FlowFilter, _cursor: u64, _limit: usize) -> Page<FlowEntry> {
        Page::default()
    }
    /// The same for CID bindings.
    fn bindings(&self, _filter: &BindingFilter, _cursor: u64, _limit: usize) -> Page<BindingEntry> {
        Page::default()
    }
}

/// A running data plane: one [`ListenerPlane`] per listener.
pub trait DataPlane: Send + Sync + std::fmt::Debug {
    /// The listeners, in configuration order.
    fn listeners(&self) -> &[Arc<dyn ListenerPlane>];
    /// Applies per-plane limits that follow the listeners' settings after a reload
    /// changed them (e.g. the NAT plane's upstream sockets follow `max_flows`).
    fn refresh_limits(&self);
    /// Asks the plane to stop; dropping it waits for its threads.
    fn shutdown(&self);
}
