//! One consistent reading of the control state and every listener's plane: what the
//! metrics and the admin views are made of.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use cidlb_core::plane::{StatInfo, TableSizes, Traffic};
use cidlb_core::{BackendId, BackendState, Counters};
use cidlb_net::health::ProbeResult;

use super::Daemon;
use crate::config::{HealthConfig, RoutingMode};

/// Everything the metrics and the admin API show, read at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Configuration generation (1 at start, +1 per applied reload).
    pub generation: u64,
    /// When the daemon started.
    pub started: SystemTime,
    /// Reloads applied.
    pub reloads_ok: u64,
    /// Reloads rejected.
    pub reloads_rejected: u64,
    /// How long the last applied reload took (zero before the first).
    pub last_reload: Duration,
    /// Health settings.
    pub health: HealthConfig,
    /// The listeners.
    pub listeners: Vec<ListenerSnapshot>,
}

/// One listener in a [`Snapshot`].
#[derive(Clone, Debug)]
pub struct ListenerSnapshot {
    /// Name.
    pub name: String,
    /// Bound address.
    pub address: SocketAddr,
    /// Routing mode.
    pub routing: RoutingMode,
    /// CID length.
    pub cid_length: Option<usize>,
    /// Router counters.
    pub counters: Counters,
    /// The plane's routing tables: sizes, bounds, timeouts, memory.
    pub tables: TableSizes,
    /// The plane's own counters, as it declares them.
    pub stats: Vec<(StatInfo, u64)>,
    /// The backends, in configuration order.
    pub backends: Vec<BackendSnapshot>,
}

impl ListenerSnapshot {
    /// The plane counter named `name`, if the plane has one.
    pub fn stat(&self, name: &str) -> Option<u64> {
        self.stats.iter().find(|(s, _)| s.name == name).map(|s| s.1)
    }
}

/// One backend in a [`Snapshot`].
#[derive(Clone, Debug)]
pub struct BackendSnapshot {
    /// Name.
    pub name: String,
    /// Id.
    pub id: BackendId,
    /// Address.
    pub address: SocketAddr,
    /// The state the data plane applies: the router's, or down where the plane cannot
    /// reach the backend (see `unreachable`).
    pub state: BackendState,
    /// Why the data plane cannot forward to it whatever its state (`no_mac`: direct
    /// routing has no MAC address for it); `None` when it can.
    pub unreachable: Option<&'static str>,
    /// The operator's state.
    pub admin: BackendState,
    /// Whether health checks pass (true when checks are off).
    pub healthy: bool,
    /// Whether health checks run.
    pub checks_enabled: bool,
    /// The last check's result.
    pub last_check: Option<ProbeResult>,
    /// Consecutive results against the current health.
    pub pending: u32,
    /// Seconds since health last flipped.
    pub health_changed_secs: Option<f64>,
    /// Weight.
    pub weight: u32,
    /// Live flows (0 unless counted).
    pub flows: usize,
    /// Live bindings (0 unless counted).
    pub bindings: usize,
    /// Traffic.
    pub traffic: Traffic,
    /// Check results, indexed like [`ProbeResult::ALL`].
    pub checks: [u64; ProbeResult::ALL.len()],
    /// Health flips to up.
    pub went_up: u64,
    /// Health flips to down.
    pub went_down: u64,
}

impl Daemon {
    /// A snapshot of every listener and backend. `counts` walks the flow and binding
    /// tables for per-backend counts (O(table size) in each plane).
    pub fn snapshot(&self, counts: bool) -> Snapshot {
        let st = self.state();
        let now = Instant::now();
        let health_enabled = st.config.health.enabled;
        let listeners = self
            .plane
            .listeners()
            .iter()
            .zip(&st.listeners)
            .zip(&st.config.listeners)
            .map(|((plane, lc), lcfg)| {
                let p = plane.snapshot(counts);
                let t = p.tables;
                let per_backend: HashMap<BackendId, (usize, usize)> = p
                    .per_backend
                    .iter()
                    .map(|c| (c.backend, (c.flows, c.bindings)))
                    .collect();
                ListenerSnapshot {
                    name: lcfg.name.clone(),
                    address: plane.local_addr(),
                    routing: lcfg.routing,
                    cid_length: lcfg.cid_length,
                    counters: p.counters,
                    tables: t,
                    stats: p.stats,
                    backends: lc
                        .backends
                        .iter()
                        .map(|b| {
                            let per = per_backend.get(&b.id);
                            let unreachable = p
                                .unreachable
                                .iter()
                                .find(|(id, _)| *id == b.id)
                                .map(|(_, why)| *why);
                            BackendSnapshot {
                                name: b.name.clone(),
                                id: b.id,
                                address: b.addr,
                                state: if unreachable.is_some() {
                                    BackendState::Down
                                } else {
                                    b.effective(health_enabled)
                                },
                                unreachable,
                                admin: b.admin,
                                healthy: b.health.is_healthy() || !health_enabled,
                                checks_enabled: health_enabled,
                                last_check: b.last_check,
                                pending: b.health.pending(),
                                health_changed_secs: b
                                    .health_changed
                                    .map(|t| now.saturating_duration_since(t).as_secs_f64()),
                                weight: b.weight,
                                flows: per.map_or(0, |c| c.0),
                                bindings: per.map_or(0, |c| c.1),
                                traffic: plane.traffic(b.id).since(&b.traffic_base),
                                checks: b.checks,
                                went_up: b.went_up,
                                went_down: b.went_down,
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        Snapshot {
            generation: st.generation,
            started: self.started,
            reloads_ok: self.reloads_ok.load(Ordering::Relaxed),
            reloads_rejected: self.reloads_rejected.load(Ordering::Relaxed),
            last_reload: Duration::from_micros(self.last_reload_micros.load(Ordering::Relaxed)),
            health: st.config.health,
            listeners,
        }
    }
}
