//! The admin API's JSON views of backends and tables (also read by `cidlb status`).

use serde::Serialize;

use cidlb_core::{BackendId, Event};

use super::error::ControlError;
use super::snapshot::BackendSnapshot;
use super::Daemon;

impl Daemon {
    /// `GET /backends`.
    pub fn backends_view(&self) -> BackendsView {
        let s = self.snapshot(true);
        BackendsView {
            generation: s.generation,
            health_checks: s.health.enabled,
            listeners: s
                .listeners
                .into_iter()
                .map(|l| ListenerView {
                    name: l.name,
                    address: l.address.to_string(),
                    routing: l.routing.to_string(),
                    cid_length: l.cid_length,
                    flows: l.tables.flows,
                    bindings: l.tables.bindings,
                    backends: l.backends.into_iter().map(BackendView::from).collect(),
                })
                .collect(),
        }
    }

    /// The view of one backend (after an operator action).
    pub(super) fn backend_view(
        &self,
        li: usize,
        id: BackendId,
    ) -> Result<BackendView, ControlError> {
        let mut s = self.snapshot(true);
        let l = s.listeners.swap_remove(li);
        l.backends
            .into_iter()
            .find(|b| b.id == id)
            .map(BackendView::from)
            .ok_or_else(|| ControlError::conflict("the backend was removed meanwhile"))
    }

    /// `GET /tables`.
    pub fn tables_view(&self) -> TablesView {
        let s = self.snapshot(false);
        TablesView {
            listeners: s
                .listeners
                .into_iter()
                .map(|l| ListenerTables {
                    flows: TableView {
                        entries: l.tables.flows,
                        capacity: l.tables.max_flows,
                        idle_timeout_secs: l.tables.flow_idle.as_secs(),
                        allocated_bytes: l.tables.flow_bytes,
                        expired: l.counters.event(Event::FlowExpired),
                        evicted: l.counters.event(Event::FlowEvicted),
                    },
                    bindings: TableView {
                        entries: l.tables.bindings,
                        capacity: l.tables.max_bindings,
                        idle_timeout_secs: l.tables.binding_idle.as_secs(),
                        allocated_bytes: l.tables.binding_bytes,
                        expired: l.counters.event(Event::BindingExpired),
                        evicted: l.counters.event(Event::BindingEvicted),
                    },
                    upstreams_open: l.stat("upstreams_open").unwrap_or(0),
                    name: l.name,
                })
                .collect(),
        }
    }
}

/// `GET /backends`.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct BackendsView {
    /// Configuration generation.
    pub generation: u64,
    /// Whether health checks run.
    pub health_checks: bool,
    /// Listeners.
    pub listeners: Vec<ListenerView>,
}

/// A listener in [`BackendsView`].
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ListenerView {
    /// Name.
    pub name: String,
    /// Bound address.
    pub address: String,
    /// `cid` or `address`.
    pub routing: String,
    /// CID length.
    pub cid_length: Option<usize>,
    /// Flows stored.
    pub flows: usize,
    /// Bindings stored.
    pub bindings: usize,
    /// Backends.
    pub backends: Vec<BackendView>,
}

/// A backend in the admin API.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct BackendView {
    /// Name.
    pub name: String,
    /// Internal id (stable across reloads while name and address stay).
    pub id: u16,
    /// Address.
    pub address: String,
    /// What the data plane applies: `up`, `draining` or `down` (down too where the
    /// plane cannot reach it: see `unreachable`).
    pub state: String,
    /// Why the data plane cannot forward to it whatever the operator and the health
    /// checks say: `no_mac` (xdp-dr: no MAC address for it in the neighbour table on
    /// the listener's interface). Absent when it can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
    /// The operator's state (config file, drain/undrain).
    pub admin_state: String,
    /// `healthy`, `unhealthy`, `unchecked` (not yet checked) or `off` (no checks).
    pub health: String,
    /// The last check's result (`hello_verify_request`, `timeout`...).
    pub last_check: Option<String>,
    /// Consecutive check results against the current health so far.
    pub health_pending: u32,
    /// Seconds since the health last changed (`None`: never changed).
    pub health_changed_secs_ago: Option<f64>,
    /// Weight.
    pub weight: u32,
    /// Live flows.
    pub flows: usize,
    /// Live CID bindings.
    pub bindings: usize,
    /// Traffic to and from the backend.
    pub traffic: TrafficView,
}

/// Traffic of one backend.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct TrafficView {
    /// Datagrams sent to it.
    pub to_backend_datagrams: u64,
    /// Bytes sent to it.
    pub to_backend_bytes: u64,
    /// Datagrams received from it.
    pub from_backend_datagrams: u64,
    /// Bytes received from it.
    pub from_backend_bytes: u64,
}

impl From<BackendSnapshot> for BackendView {
    fn from(b: BackendSnapshot) -> Self {
        BackendView {
            name: b.name,
            id: b.id.0,
            address: b.address.to_string(),
            state: b.state.name().into(),
            unreachable: b.unreachable.map(Into::into),
            admin_state: b.admin.name().into(),
            health: if !b.checks_enabled {
                "off"
            } else if b.last_check.is_none() {
                "unchecked"
            } else if b.healthy {
                "healthy"
            } else {
                "unhealthy"
            }
            .into(),
            last_check: b.last_check.map(|r| r.name().into()),
            health_pending: b.pending,
            health_changed_secs_ago: b.health_changed_secs.map(|s| (s * 10.0).round() / 10.0),
            weight: b.weight,
            flows: b.flows,
            bindings: b.bindings,
            traffic: TrafficView {
                to_backend_datagrams: b.traffic.to_backend_datagrams,
                to_backend_bytes: b.traffic.to_backend_bytes,
                from_backend_datagrams: b.traffic.from_backend_datagrams,
                from_backend_bytes: b.traffic.from_backend_bytes,
            },
        }
    }
}

/// `GET /tables`.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct TablesView {
    /// Listeners.
    pub listeners: Vec<ListenerTables>,
}

/// One listener's tables.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct ListenerTables {
    /// Listener name.
    pub name: String,
    /// The flow table.
    pub flows: TableView,
    /// The CID binding table.
    pub bindings: TableView,
    /// Upstream sockets open.
    pub upstreams_open: u64,
}

/// One table.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct TableView {
    /// Entries stored (idle ones not yet swept included).
    pub entries: usize,
    /// Bound.
    pub capacity: usize,
    /// Idle timeout.
    pub idle_timeout_secs: u64,
    /// Bytes allocated.
    pub allocated_bytes: usize,
    /// Entries expired so far.
    pub expired: u64,
    /// Live entries evicted so far (table full).
    pub evicted: u64,
}
