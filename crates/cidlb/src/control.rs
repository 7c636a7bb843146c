//! The daemon's control plane: what the operator and the health checks change while
//! the data plane runs.
//!
//! A [`Daemon`] owns the running [`DataPlane`] and, per listener, the control view of
//! each backend: its stable id, the operator's state and weight, its health, and its
//! counters. Three things change backends at run time, all through here:
//!
//! - **health checks** ([`Daemon::apply_health`]) flip a backend's *health* after
//!   `rise`/`fall` consecutive results;
//! - **the operator** ([`Daemon::set_admin_state`], [`Daemon::set_weight`]) drains,
//!   undrains and reweights;
//! - **a reload** ([`Daemon::reload`], [`Daemon::apply_config`]) replaces the backend
//!   sets, timeouts, limits and health settings.
//!
//! Health and the operator's state are kept apart: the router is given
//! [`effective_state`] — `down` while unhealthy, else the operator's state — so a
//! health check never undoes a drain.
//!
//! **Backend ids across reloads.** Flows and CID bindings refer to backends by
//! [`BackendId`]. A backend keeps its id as long as its *name* and address stay the
//! same, so its flows and bindings survive any reload. A new name (or a known name at a
//! new address: another server, whose sessions are elsewhere) gets an id never used
//! before by this listener; ids of removed backends are reused only once every flow and
//! binding that could refer to them has expired. A removed backend that comes back
//! (same name, same address) gets its old id again: the bindings of the sessions it
//! still holds lead to it.
//!
//! **Reload is all or nothing.** The new file is parsed and validated, compared with
//! the running configuration (changes that need a restart — listeners added, removed,
//! renamed or moved, `upstream_source`, `workers`, `[admin]` — reject it whole), every
//! listener's new backend set is checked and its Maglev table built, and only then is
//! each router swapped in one step under its lock. A rejected reload changes nothing.
//!
//! Lock order: the control state first, then a listener's router. Workers take only
//! the router lock.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use cidlb_core::{
    effective_state, AddressDecision, Backend, BackendId, BackendState, CidDecision,
    CidExplanation, Counters, Decoded, HealthThresholds, HealthTracker, Router,
};
use cidlb_net::health::{ProbeResult, ProbeTarget};
use cidlb_net::{DataPlane, ListenerShared, StatsSnapshot, TrafficSnapshot};
use serde::Serialize;
use tracing::{info, warn};

use crate::config::{Config, HealthConfig, ListenerConfig, RoutingMode, MAX_WEIGHT};
use crate::run::listener_specs;

/// Settings given on the command line that override the file on every (re)load.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `cidlb run --admin ADDR`.
    pub admin: Option<SocketAddr>,
    /// `cidlb run --workers N`.
    pub workers: Option<usize>,
}

impl Overrides {
    /// Applies the overrides to a freshly loaded configuration.
    pub fn apply(&self, cfg: &mut Config) {
        if let Some(a) = self.admin {
            cfg.admin.enabled = true;
            cfg.admin.address = Some(a);
        }
        if let Some(w) = self.workers {
            cfg.workers = Some(w);
        }
    }
}

/// An error of an admin operation: an HTTP status and a message for a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// One backend as the control plane sees it.
#[derive(Clone, Debug)]
struct BackendCtl {
    id: BackendId,
    name: String,
    addr: SocketAddr,
    /// The operator's state (config file, then drain/undrain).
    admin: BackendState,
    weight: u32,
    health: HealthTracker,
    last_check: Option<ProbeResult>,
    health_changed: Option<Instant>,
    checks: [u64; ProbeResult::ALL.len()],
    went_up: u64,
    went_down: u64,
    /// Traffic counters of the id when this backend got it (ids can be reused).
    traffic_base: TrafficSnapshot,
}

impl BackendCtl {
    fn effective(&self, health_enabled: bool) -> BackendState {
        effective_state(self.admin, self.health.is_healthy() || !health_enabled)
    }
}

/// A removed backend whose id is kept aside.
#[derive(Clone, Debug)]
struct Retired {
    id: BackendId,
    name: String,
    addr: SocketAddr,
    at: Instant,
}

#[derive(Debug)]
struct ListenerCtl {
    backends: Vec<BackendCtl>,
    /// Next id never handed out.
    next_id: u32,
    /// Removed backends: their id, name, address and when they were removed.
    retired: Vec<Retired>,
}

#[derive(Debug)]
struct State {
    config: Config,
    listeners: Vec<ListenerCtl>,
    generation: u64,
}

/// The running balancer: data plane plus control state (see the module docs).
pub struct Daemon {
    plane: DataPlane,
    secret: [u64; 4],
    config_path: Option<PathBuf>,
    overrides: Overrides,
    started: SystemTime,
    state: Mutex<State>,
    reloads_ok: AtomicU64,
    reloads_rejected: AtomicU64,
    admin: Arc<crate::admin::HttpStats>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

fn lock_router(l: &ListenerShared) -> MutexGuard<'_, Router> {
    l.router.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn state_word(s: BackendState) -> &'static str {
    match s {
        BackendState::Up => "up",
        BackendState::Draining => "draining",
        BackendState::Down => "down",
    }
}

impl Daemon {
    /// Wraps a data plane started from `config` (by [`listener_specs`]); the backends'
    /// ids are read from the routers.
    pub fn new(
        plane: DataPlane,
        config: Config,
        secret: [u64; 4],
        config_path: Option<PathBuf>,
        overrides: Overrides,
    ) -> Daemon {
        let listeners = config
            .listeners
            .iter()
            .zip(plane.listeners())
            .map(|(l, shared)| {
                let ids: HashMap<String, BackendId> = lock_router(shared)
                    .backends()
                    .iter()
                    .map(|b| (b.name.clone(), b.id))
                    .collect();
                let backends: Vec<BackendCtl> = l
                    .backends
                    .iter()
                    .map(|b| BackendCtl {
                        id: ids[&b.name],
                        name: b.name.clone(),
                        addr: b.address,
                        admin: b.state,
                        weight: b.weight,
                        health: HealthTracker::new(true),
                        last_check: None,
                        health_changed: None,
                        checks: [0; ProbeResult::ALL.len()],
                        went_up: 0,
                        went_down: 0,
                        traffic_base: TrafficSnapshot::default(),
                    })
                    .collect();
                ListenerCtl {
                    next_id: backends
                        .iter()
                        .map(|b| u32::from(b.id.0) + 1)
                        .max()
                        .unwrap_or(0),
                    backends,
                    retired: Vec::new(),
                }
            })
            .collect();
        Daemon {
            plane,
            secret,
            config_path,
            overrides,
            started: SystemTime::now(),
            state: Mutex::new(State {
                config,
                listeners,
                generation: 1,
            }),
            reloads_ok: AtomicU64::new(0),
            reloads_rejected: AtomicU64::new(0),
            admin: Arc::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The data plane.
    pub fn plane(&self) -> &DataPlane {
        &self.plane
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.state().config.clone()
    }

    /// The configuration file reloads read, if the daemon was started with one.
    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.config_path.as_deref()
    }

    // ------------------------------------------------------------------ health

    /// The health settings and every backend to probe: (listener index, backend id,
    /// target).
    pub fn health_targets(&self) -> (HealthConfig, Vec<(usize, BackendId, ProbeTarget)>) {
        let st = self.state();
        let mut out = Vec::new();
        for (li, (lc, lcfg)) in st.listeners.iter().zip(&st.config.listeners).enumerate() {
            for b in &lc.backends {
                out.push((
                    li,
                    b.id,
                    ProbeTarget {
                        addr: b.addr,
                        source: lcfg.upstream_source,
                    },
                ));
            }
        }
        (st.config.health, out)
    }

    /// Records one round of probe results (in the order of `targets`, as returned by
    /// [`Daemon::health_targets`]) and applies the health flips they cause. Results
    /// for backends removed or moved meanwhile are ignored.
    pub fn apply_health(
        &self,
        targets: &[(usize, BackendId, ProbeTarget)],
        results: &[ProbeResult],
    ) {
        let mut st = self.state();
        let h = st.config.health;
        if !h.enabled {
            return;
        }
        let th = HealthThresholds {
            rise: h.rise,
            fall: h.fall,
        };
        let now = Instant::now();
        let names: Vec<String> = st.config.listeners.iter().map(|l| l.name.clone()).collect();
        for (&(li, id, target), &r) in targets.iter().zip(results) {
            let Some(lc) = st.listeners.get_mut(li) else {
                continue;
            };
            let Some(b) = lc
                .backends
                .iter_mut()
                .find(|b| b.id == id && b.addr == target.addr)
            else {
                continue;
            };
            b.last_check = Some(r);
            if let Some(k) = ProbeResult::ALL.iter().position(|x| *x == r) {
                b.checks[k] += 1;
            }
            if !r.is_verdict() {
                continue;
            }
            let Some(healthy) = b.health.observe(r.is_alive(), th) else {
                continue;
            };
            b.health_changed = Some(now);
            if healthy {
                b.went_up += 1;
                info!(listener = %names[li], backend = %b.name, address = %b.addr,
                    "backend is healthy again ({} checks in a row answered); it takes traffic", th.rise);
            } else {
                b.went_down += 1;
                warn!(listener = %names[li], backend = %b.name, address = %b.addr, last = r.name(),
                    "backend is DOWN ({} checks in a row failed); new flows and its traffic go elsewhere", th.fall);
            }
            let eff = b.effective(true);
            if let Some(l) = self.plane.listeners().get(li) {
                lock_router(l).set_backend_state(id, eff);
            }
        }
    }

    // ------------------------------------------------------------------ operator

    fn find<'a>(
        st: &'a mut State,
        listener: Option<&str>,
        backend: &str,
    ) -> Result<(usize, &'a mut BackendCtl), ApiError> {
        let mut hits = Vec::new();
        for (li, l) in st.config.listeners.iter().enumerate() {
            if listener.is_some_and(|n| n != l.name) {
                continue;
            }
            if let Some(bi) = st.listeners[li]
                .backends
                .iter()
                .position(|b| b.name == backend)
            {
                hits.push((li, bi));
            }
        }
        if let Some(n) = listener {
            if !st.config.listeners.iter().any(|l| l.name == n) {
                return Err(ApiError::new(404, format!("no listener named {n:?}")));
            }
        }
        match hits.as_slice() {
            [] => Err(ApiError::new(
                404,
                match listener {
                    Some(n) => format!("listener {n:?} has no backend named {backend:?}"),
                    None => format!("no backend named {backend:?}"),
                },
            )),
            [(li, bi)] => Ok((*li, &mut st.listeners[*li].backends[*bi])),
            many => {
                let ls: Vec<String> = many
                    .iter()
                    .map(|(li, _)| format!("{:?}", st.config.listeners[*li].name))
                    .collect();
                Err(ApiError::new(
                    400,
                    format!(
                        "several listeners have a backend named {backend:?} ({}): add ?listener=NAME",
                        ls.join(", ")
                    ),
                ))
            }
        }
    }

    /// Sets the operator's state of a backend (drain: `Draining`, undrain: `Up`) and
    /// returns its view. `listener` may be left out when the name is unique.
    pub fn set_admin_state(
        &self,
        listener: Option<&str>,
        backend: &str,
        state: BackendState,
    ) -> Result<BackendView, ApiError> {
        let mut st = self.state();
        let health_enabled = st.config.health.enabled;
        let (li, b) = Self::find(&mut st, listener, backend)?;
        let old = b.admin;
        b.admin = state;
        let (id, eff) = (b.id, b.effective(health_enabled));
        let name = st.config.listeners[li].name.clone();
        if old != state {
            info!(listener = %name, backend, from = state_word(old), to = state_word(state),
                "operator changed the backend's state");
        }
        lock_router(&self.plane.listeners()[li]).set_backend_state(id, eff);
        drop(st);
        self.backend_view(li, id)
    }

    /// Sets a backend's weight (`0..=10000`) and returns its view.
    pub fn set_weight(
        &self,
        listener: Option<&str>,
        backend: &str,
        weight: u32,
    ) -> Result<BackendView, ApiError> {
        if weight > MAX_WEIGHT {
            return Err(ApiError::new(
                400,
                format!("weight {weight} is out of range 0..={MAX_WEIGHT}"),
            ));
        }
        let mut st = self.state();
        let (li, b) = Self::find(&mut st, listener, backend)?;
        let old = b.weight;
        b.weight = weight;
        let id = b.id;
        let name = st.config.listeners[li].name.clone();
        if old != weight {
            info!(listener = %name, backend, from = old, to = weight, "operator changed the backend's weight");
        }
        lock_router(&self.plane.listeners()[li]).set_backend_weight(id, weight);
        drop(st);
        self.backend_view(li, id)
    }

    // ------------------------------------------------------------------ reload

    /// Re-reads the configuration file and applies it ([`Daemon::apply_config`]).
    /// Counted in `cidlb_config_reloads_total`.
    pub fn reload(&self) -> Result<ReloadReport, ApiError> {
        let r = self.reload_inner();
        match &r {
            Ok(rep) => {
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                info!(
                    generation = rep.generation,
                    changes = rep.changes.len(),
                    "configuration reloaded"
                );
                for c in &rep.changes {
                    info!("reload: {c}");
                }
            }
            Err(e) => {
                self.reloads_rejected.fetch_add(1, Ordering::Relaxed);
                warn!(
                    "reload rejected, the running configuration stays: {}",
                    e.message
                );
            }
        }
        r
    }

    fn reload_inner(&self) -> Result<ReloadReport, ApiError> {
        let Some(path) = &self.config_path else {
            return Err(ApiError::new(
                409,
                "cidlb was started without --config: there is no file to reload",
            ));
        };
        let mut cfg = Config::load(path).map_err(|e| ApiError::new(400, e.to_string()))?;
        self.overrides.apply(&mut cfg);
        self.apply_config(cfg)
    }

    /// Applies a validated configuration to the running daemon, all or nothing (see
    /// the module docs).
    pub fn apply_config(&self, new: Config) -> Result<ReloadReport, ApiError> {
        let mut st = self.state();
        let old = st.config.clone();
        let restart = restart_needed(&old, &new);
        if !restart.is_empty() {
            return Err(ApiError::new(
                409,
                format!(
                    "the new configuration needs a restart ({}); nothing was changed",
                    restart.join("; ")
                ),
            ));
        }
        let now = Instant::now();
        let keep_ids_for = old
            .timeouts
            .flow_idle
            .max(old.timeouts.cid_binding_idle)
            .max(new.timeouts.flow_idle)
            .max(new.timeouts.cid_binding_idle);
        let mut changes = describe_settings(&old, &new);
        let specs = listener_specs(&new, self.secret);
        let health_enabled = new.health.enabled;
        // Phase 1: new control views, ids and prepared backend sets; nothing touched.
        let mut staged = Vec::with_capacity(specs.len());
        for (li, spec) in specs.into_iter().enumerate() {
            let lname = &new.listeners[li].name;
            let old_l = &old.listeners[li];
            let new_l = &new.listeners[li];
            let lc = &st.listeners[li];
            let mut next_id = lc.next_id;
            let mut retired = lc.retired.clone();
            let mut ctls: Vec<BackendCtl> = Vec::with_capacity(new_l.backends.len());
            for nb in &new_l.backends {
                let kept = lc
                    .backends
                    .iter()
                    .find(|b| b.name == nb.name && b.addr == nb.address);
                let ctl = match kept {
                    Some(b) => {
                        let mut b = b.clone();
                        let ob = old_l.backends.iter().find(|o| o.name == nb.name);
                        // The file wins where it changed; else the operator's runtime
                        // choice (drain, weight) stays.
                        if ob.is_none_or(|o| o.state != nb.state) {
                            if b.admin != nb.state {
                                changes.push(format!(
                                    "listener {lname:?}: backend {:?} state {} -> {}",
                                    nb.name,
                                    state_word(b.admin),
                                    state_word(nb.state)
                                ));
                            }
                            b.admin = nb.state;
                        }
                        if ob.is_none_or(|o| o.weight != nb.weight) {
                            if b.weight != nb.weight {
                                changes.push(format!(
                                    "listener {lname:?}: backend {:?} weight {} -> {}",
                                    nb.name, b.weight, nb.weight
                                ));
                            }
                            b.weight = nb.weight;
                        }
                        b
                    }
                    None => {
                        // The same server back (name and address) gets its old id, so
                        // the bindings of its sessions still lead to it.
                        let back = retired
                            .iter()
                            .position(|r| r.name == nb.name && r.addr == nb.address)
                            .map(|i| retired.swap_remove(i).id);
                        let id = back
                            .or_else(|| allocate_id(&mut next_id, &mut retired, now, keep_ids_for))
                            .ok_or_else(|| {
                                ApiError::new(
                                    409,
                                    format!(
                                        "listener {lname:?}: no backend id is free (65536 backends were added since start and removed ones may still have flows or CID bindings); restart cidlb"
                                    ),
                                )
                            })?;
                        changes.push(format!(
                            "listener {lname:?}: backend {:?} at {} added",
                            nb.name, nb.address
                        ));
                        BackendCtl {
                            id,
                            name: nb.name.clone(),
                            addr: nb.address,
                            admin: nb.state,
                            weight: nb.weight,
                            health: HealthTracker::new(true),
                            last_check: None,
                            health_changed: None,
                            checks: [0; ProbeResult::ALL.len()],
                            went_up: 0,
                            went_down: 0,
                            traffic_base: self.plane.listeners()[li].traffic.snapshot(id),
                        }
                    }
                };
                ctls.push(ctl);
            }
            for b in &lc.backends {
                if !ctls.iter().any(|c| c.id == b.id) {
                    retired.push(Retired {
                        id: b.id,
                        name: b.name.clone(),
                        addr: b.addr,
                        at: now,
                    });
                    changes.push(format!(
                        "listener {lname:?}: backend {:?} at {} removed (its flows and CID bindings fall back to the other backends)",
                        b.name, b.addr
                    ));
                }
            }
            if !health_enabled {
                for c in &mut ctls {
                    c.health = HealthTracker::new(true);
                }
            }
            let backends: Vec<Backend> = spec
                .backends
                .into_iter()
                .map(|mut b| {
                    let c = ctls
                        .iter()
                        .find(|c| c.name == b.name)
                        .expect("the spec lists the configuration's backends");
                    b.id = c.id;
                    b.state = c.effective(health_enabled);
                    b.weight = c.weight;
                    b
                })
                .collect();
            let prepared = Router::prepare_backends(&spec.router, backends).map_err(|e| {
                ApiError::new(400, format!("listener {lname:?}: {e}; nothing was changed"))
            })?;
            staged.push((spec.router, prepared, ctls, next_id, retired));
        }
        // Phase 2: swap. Nothing below fails.
        for (li, (router_cfg, prepared, ctls, next_id, retired)) in staged.into_iter().enumerate() {
            lock_router(&self.plane.listeners()[li]).reconfigure(router_cfg, prepared);
            let lc = &mut st.listeners[li];
            lc.backends = ctls;
            lc.next_id = next_id;
            lc.retired = retired;
        }
        self.plane.refresh_upstream_limits();
        st.config = new;
        st.generation += 1;
        Ok(ReloadReport {
            generation: st.generation,
            changes,
        })
    }

    // ------------------------------------------------------------------ views

    /// A snapshot of every listener and backend. `counts` walks the flow and binding
    /// tables for per-backend counts (O(table size) under each listener's lock).
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
            .map(|((shared, lc), lcfg)| {
                let r = lock_router(shared);
                let per: HashMap<BackendId, (usize, usize)> = if counts {
                    r.per_backend_counts(now)
                        .into_iter()
                        .map(|(id, f, b)| (id, (f, b)))
                        .collect()
                } else {
                    HashMap::new()
                };
                let (flow_bytes, binding_bytes) = r.table_bytes();
                let snap = ListenerSnapshot {
                    name: lcfg.name.clone(),
                    address: shared.local_addr,
                    routing: lcfg.routing,
                    cid_length: lcfg.cid_length,
                    counters: r.counters().clone(),
                    flows: r.flow_count(),
                    bindings: r.binding_count(),
                    max_flows: r.config().max_flows,
                    max_bindings: r.config().max_bindings,
                    flow_idle: r.config().flow_idle,
                    binding_idle: r.config().binding_idle,
                    flow_bytes,
                    binding_bytes,
                    source_bytes: r.source_table_bytes(),
                    stats: shared.stats.snapshot(),
                    backends: lc
                        .backends
                        .iter()
                        .map(|b| {
                            let (flows, bindings) = per.get(&b.id).copied().unwrap_or((0, 0));
                            BackendSnapshot {
                                name: b.name.clone(),
                                id: b.id,
                                address: b.addr,
                                state: b.effective(health_enabled),
                                admin: b.admin,
                                healthy: b.health.is_healthy() || !health_enabled,
                                checks_enabled: health_enabled,
                                last_check: b.last_check,
                                pending: b.health.pending(),
                                health_changed_secs: b
                                    .health_changed
                                    .map(|t| now.saturating_duration_since(t).as_secs_f64()),
                                weight: b.weight,
                                flows,
                                bindings,
                                traffic: shared.traffic.snapshot(b.id).since(&b.traffic_base),
                                checks: b.checks,
                                went_up: b.went_up,
                                went_down: b.went_down,
                            }
                        })
                        .collect(),
                };
                drop(r);
                snap
            })
            .collect();
        Snapshot {
            generation: st.generation,
            started: self.started,
            reloads_ok: self.reloads_ok.load(Ordering::Relaxed),
            reloads_rejected: self.reloads_rejected.load(Ordering::Relaxed),
            admin: self.admin.get(),
            health: st.config.health,
            listeners,
        }
    }

    /// Counters of the admin API's HTTP server.
    pub fn admin_stats(&self) -> &Arc<crate::admin::HttpStats> {
        &self.admin
    }

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
                    flows: l.flows,
                    bindings: l.bindings,
                    backends: l.backends.into_iter().map(BackendView::from).collect(),
                })
                .collect(),
        }
    }

    fn backend_view(&self, li: usize, id: BackendId) -> Result<BackendView, ApiError> {
        let mut s = self.snapshot(true);
        let l = s.listeners.swap_remove(li);
        l.backends
            .into_iter()
            .find(|b| b.id == id)
            .map(BackendView::from)
            .ok_or_else(|| ApiError::new(409, "the backend was removed meanwhile"))
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
                        entries: l.flows,
                        capacity: l.max_flows,
                        idle_timeout_secs: l.flow_idle.as_secs(),
                        allocated_bytes: l.flow_bytes,
                        expired: l.counters.event(cidlb_core::Event::FlowExpired),
                        evicted: l.counters.event(cidlb_core::Event::FlowEvicted),
                    },
                    bindings: TableView {
                        entries: l.bindings,
                        capacity: l.max_bindings,
                        idle_timeout_secs: l.binding_idle.as_secs(),
                        allocated_bytes: l.binding_bytes,
                        expired: l.counters.event(cidlb_core::Event::BindingExpired),
                        evicted: l.counters.event(cidlb_core::Event::BindingEvicted),
                    },
                    upstreams_open: l.stats.upstreams_open,
                    name: l.name,
                })
                .collect(),
        }
    }

    fn listener_index(&self, st: &State, listener: Option<&str>) -> Result<usize, ApiError> {
        match listener {
            Some(n) => st
                .config
                .listeners
                .iter()
                .position(|l| l.name == n)
                .ok_or_else(|| ApiError::new(404, format!("no listener named {n:?}"))),
            None if st.config.listeners.len() == 1 => Ok(0),
            None => Err(ApiError::new(
                400,
                format!(
                    "there are {} listeners: add ?listener=NAME ({})",
                    st.config.listeners.len(),
                    st.config
                        .listeners
                        .iter()
                        .map(|l| l.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    fn backend_ref(st: &State, li: usize, id: BackendId) -> Option<BackendRef> {
        let health_enabled = st.config.health.enabled;
        st.listeners[li]
            .backends
            .iter()
            .find(|b| b.id == id)
            .map(|b| BackendRef {
                name: b.name.clone(),
                address: b.addr.to_string(),
                state: state_word(b.effective(health_enabled)),
            })
    }

    /// `GET /lookup/cid/HEX`: which backend a datagram with this CID goes to, and why.
    pub fn lookup_cid(&self, listener: Option<&str>, hex: &str) -> Result<CidLookup, ApiError> {
        let cid = parse_hex(hex).ok_or_else(|| {
            ApiError::new(
                400,
                format!("{hex:?} is not a CID in hex (e.g. a0b1c2d3, or a0:b1:c2:d3)"),
            )
        })?;
        if cid.is_empty() || cid.len() > cidlb_wire::MAX_CID_LEN {
            return Err(ApiError::new(
                400,
                format!("a CID has 1 to {} bytes", cidlb_wire::MAX_CID_LEN),
            ));
        }
        let st = self.state();
        let li = self.listener_index(&st, listener)?;
        let lcfg = &st.config.listeners[li];
        if lcfg.routing == RoutingMode::Address {
            return Err(ApiError::new(
                400,
                format!(
                    "listener {:?} routes by client address only (routing = \"address\"): CIDs play no part",
                    lcfg.name
                ),
            ));
        }
        let e = lock_router(&self.plane.listeners()[li]).explain_cid(Instant::now(), &cid, None);
        let name = |id: BackendId| {
            Self::backend_ref(&st, li, id).map_or_else(|| format!("#{}", id.0), |b| b.name)
        };
        let mut note = None;
        if lcfg.cid_length.is_some_and(|n| n != cid.len()) {
            note = Some(format!(
                "the listener's CIDs are {} bytes long; this one has {}",
                lcfg.cid_length.unwrap_or(0),
                cid.len()
            ));
        }
        let (kind, backend, serves, idle_secs, reason) = cid_reason(&e, &name);
        Ok(CidLookup {
            listener: lcfg.name.clone(),
            cid: hex_string(&cid),
            route: kind,
            backend: backend.and_then(|b| Self::backend_ref(&st, li, b)),
            serves,
            idle_secs,
            reason,
            note,
        })
    }

    /// `GET /lookup/client/IP:PORT`: where a datagram without CID from this address
    /// goes, and why.
    pub fn lookup_client(
        &self,
        listener: Option<&str>,
        client: &str,
    ) -> Result<ClientLookup, ApiError> {
        let addr: SocketAddr = client.parse().map_err(|_| {
            ApiError::new(
                400,
                format!("{client:?} is not a client address (IP:PORT, IPv6 in brackets)"),
            )
        })?;
        let st = self.state();
        let li = self.listener_index(&st, listener)?;
        let e = lock_router(&self.plane.listeners()[li]).explain_client(Instant::now(), addr);
        let name = |id: BackendId| {
            Self::backend_ref(&st, li, id).map_or_else(|| format!("#{}", id.0), |b| b.name)
        };
        let hashed_name = |h: Option<BackendId>| {
            h.map_or_else(
                || "nothing: no backend takes new flows".to_string(),
                |b| format!("backend {}", name(b)),
            )
        };
        let hashed = e.hashed;
        let idle_secs = e.flow.map(|f| f.idle_secs);
        let (kind, backend, serves, reason) = match (e.decision, e.flow) {
            (AddressDecision::Flow(b), f) => (
                "flow",
                Some(b),
                true,
                format!(
                    "the address has a flow to backend {} (last used {} s ago)",
                    name(b),
                    f.map_or(0, |f| f.idle_secs)
                ),
            ),
            (AddressDecision::Hashed(h), Some(f)) => (
                "flow",
                Some(f.backend),
                false,
                format!(
                    "the address's flow points to backend {}, which is down or gone: the next datagram is rescheduled to {}",
                    name(f.backend),
                    hashed_name(h)
                ),
            ),
            (AddressDecision::Hashed(h), None) => (
                "new",
                h,
                h.is_some(),
                format!(
                    "no flow: a new one would go to {} (Maglev on the address)",
                    hashed_name(h)
                ),
            ),
        };
        Ok(ClientLookup {
            listener: st.config.listeners[li].name.clone(),
            client: addr.to_string(),
            route: kind,
            backend: backend.and_then(|b| Self::backend_ref(&st, li, b)),
            serves,
            idle_secs,
            new_flow_backend: hashed.and_then(|b| Self::backend_ref(&st, li, b)),
            reason,
        })
    }
}

/// The lookup's route word, backend, whether it serves, idle seconds and reason text,
/// from the core's explanation (the decision routing takes).
fn cid_reason(
    e: &CidExplanation,
    name: &dyn Fn(BackendId) -> String,
) -> (&'static str, Option<BackendId>, bool, Option<u32>, String) {
    let decoded = match e.decoded {
        Decoded::Backend {
            server_id, backend, ..
        } => Some(format!(
            "it decodes to server ID {} of backend {}",
            hex_string(server_id.as_bytes()),
            name(backend)
        )),
        Decoded::UnknownServer(s) => Some(format!(
            "server ID {} decoded from it belongs to no backend",
            hex_string(s.as_bytes())
        )),
        Decoded::NoFormat | Decoded::Undecodable => None,
    };
    let idle = e.binding.map(|b| b.idle_secs);
    let down_binding = e.binding.filter(|b| !b.serves).map(|b| {
        format!(
            "its binding to backend {} is kept while that backend is down or gone; ",
            name(b.binding.backend)
        )
    });
    match e.decision {
        CidDecision::Learned(b) => (
            "learned",
            Some(b),
            true,
            idle,
            format!(
                "bound to backend {} (learned from its ServerHello); last used {} s ago{}",
                name(b),
                idle.unwrap_or(0),
                decoded.map_or(String::new(), |d| format!(
                    " ({d}, but a learned binding is the backend's own word and wins)"
                ))
            ),
        ),
        CidDecision::Encoded { backend, server_id } => (
            "encoded",
            Some(backend),
            true,
            None,
            format!(
                "{}the CID decodes to server ID {} of backend {} (stateless routing)",
                down_binding.unwrap_or_default(),
                hex_string(server_id.as_bytes()),
                name(backend)
            ),
        ),
        CidDecision::Seeded(b) => (
            "seeded",
            Some(b),
            true,
            idle,
            format!(
                "bound to backend {} (seeded from the flow the CID first appeared on); last used {} s ago",
                name(b),
                idle.unwrap_or(0)
            ),
        ),
        CidDecision::ByFlow { backend, seed } => (
            "flow",
            Some(backend),
            true,
            idle,
            format!(
                "{}the sender's flow goes to backend {}{}",
                down_binding.unwrap_or_default(),
                name(backend),
                if seed { ", and a binding is seeded from it" } else { "" }
            ),
        ),
        CidDecision::Hashed(h) => (
            "unknown",
            h,
            h.is_some(),
            idle,
            format!(
                "{}{}no serving binding: a datagram would follow its sender's flow if it has one, else Maglev on the CID picks {} (counted as unknown_cid)",
                down_binding.unwrap_or_default(),
                decoded.map_or(String::new(), |d| format!("{d}; ")),
                h.map_or_else(|| "nothing: no backend takes new flows".into(), |b| format!("backend {}", name(b))),
            ),
        ),
    }
}

/// Picks an id for a new backend: one never used, else the one retired longest ago if
/// nothing can refer to it any more.
fn allocate_id(
    next_id: &mut u32,
    retired: &mut Vec<Retired>,
    now: Instant,
    keep_for: Duration,
) -> Option<BackendId> {
    if *next_id <= u32::from(u16::MAX) {
        let id = BackendId(*next_id as u16);
        *next_id += 1;
        return Some(id);
    }
    let (i, _) = retired
        .iter()
        .enumerate()
        .filter(|(_, r)| now.saturating_duration_since(r.at) > keep_for)
        .min_by_key(|(_, r)| r.at)?;
    Some(retired.swap_remove(i).id)
}

/// Changes between `old` and `new` that a reload cannot apply.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut v = Vec::new();
    let names = |c: &Config| {
        c.listeners
            .iter()
            .map(|l| l.name.clone())
            .collect::<Vec<_>>()
    };
    if names(old) != names(new) {
        v.push(format!(
            "the listeners changed from [{}] to [{}]",
            names(old).join(", "),
            names(new).join(", ")
        ));
        return v;
    }
    for (o, n) in old.listeners.iter().zip(&new.listeners) {
        if o.address != n.address {
            v.push(format!(
                "listener {:?}: address {} -> {}",
                o.name, o.address, n.address
            ));
        }
        if o.upstream_source != n.upstream_source {
            v.push(format!(
                "listener {:?}: upstream_source {} -> {}",
                o.name,
                o.upstream_source
                    .map_or("unset".into(), |i: IpAddr| i.to_string()),
                n.upstream_source
                    .map_or("unset".into(), |i: IpAddr| i.to_string())
            ));
        }
    }
    if old.workers != new.workers {
        v.push(format!(
            "workers {} -> {}",
            old.workers.map_or("unset".into(), |w| w.to_string()),
            new.workers.map_or("unset".into(), |w| w.to_string())
        ));
    }
    if old.admin != new.admin {
        v.push(format!(
            "[admin] {} on {} -> {} on {}",
            if old.admin.enabled { "on" } else { "off" },
            old.admin.address(),
            if new.admin.enabled { "on" } else { "off" },
            new.admin.address()
        ));
    }
    v
}

/// Human-readable changes of settings other than backends.
fn describe_settings(old: &Config, new: &Config) -> Vec<String> {
    let mut v = Vec::new();
    let mut diff = |what: &str, a: String, b: String| {
        if a != b {
            v.push(format!("{what}: {a} -> {b}"));
        }
    };
    let mut others = Vec::new();
    fn d(x: Duration) -> String {
        humantime::format_duration(x).to_string()
    }
    type Get = fn(&Config) -> String;
    let global: [(&str, Get); 13] = [
        ("timeouts.flow_idle", |c| d(c.timeouts.flow_idle)),
        ("timeouts.cid_binding_idle", |c| {
            d(c.timeouts.cid_binding_idle)
        }),
        ("limits.max_flows", |c| c.limits.max_flows.to_string()),
        ("limits.max_bindings", |c| c.limits.max_bindings.to_string()),
        ("limits.new_flows_per_source", |c| {
            c.limits.new_flows_per_source.to_string()
        }),
        ("limits.new_flows_burst", |c| {
            c.limits.new_flows_burst.to_string()
        }),
        ("hashing.seed", |c| c.hashing.seed.to_string()),
        ("hashing.maglev_table_size", |c| {
            c.hashing.maglev_table_size.to_string()
        }),
        ("health.enabled", |c| c.health.enabled.to_string()),
        ("health.interval", |c| d(c.health.interval)),
        ("health.timeout", |c| d(c.health.timeout)),
        ("health.rise", |c| c.health.rise.to_string()),
        ("health.fall", |c| c.health.fall.to_string()),
    ];
    for (what, get) in global {
        diff(what, get(old), get(new));
    }
    for (o, n) in old.listeners.iter().zip(&new.listeners) {
        let p = format!("listener {:?}:", o.name);
        type GetL = fn(&ListenerConfig) -> String;
        let per_listener: [(&str, GetL); 3] = [
            ("routing", |l| l.routing.to_string()),
            ("cid_length", |l| format!("{:?}", l.cid_length)),
            ("multi_cid", |l| format!("{:?}", l.multi_cid)),
        ];
        for (what, get) in per_listener {
            diff(&format!("{p} {what}"), get(o), get(n));
        }
        // Anything else of the listener (e.g. its CID format).
        let (mut o2, mut n2) = (o.clone(), n.clone());
        o2.backends.clear();
        n2.backends.clear();
        (o2.routing, o2.cid_length, o2.multi_cid) = (n2.routing, n2.cid_length, n2.multi_cid);
        if o2 != n2 {
            others.push(format!("{p} other listener settings changed"));
        }
    }
    v.extend(others);
    v
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !matches!(b, b':' | b'-' | b' '))
        .collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|p| {
            let h = (p[0] as char).to_digit(16)?;
            let l = (p[1] as char).to_digit(16)?;
            Some((h * 16 + l) as u8)
        })
        .collect()
}

fn hex_string(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

// ---------------------------------------------------------------------- snapshots

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
    /// The admin API's own counters.
    pub admin: crate::admin::HttpCounts,
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
    /// Flows stored.
    pub flows: usize,
    /// Bindings stored.
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
    /// Data-plane counters.
    pub stats: StatsSnapshot,
    /// The backends, in configuration order.
    pub backends: Vec<BackendSnapshot>,
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
    /// The state the router applies.
    pub state: BackendState,
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
    pub traffic: TrafficSnapshot,
    /// Check results, indexed like [`ProbeResult::ALL`].
    pub checks: [u64; ProbeResult::ALL.len()],
    /// Health flips to up.
    pub went_up: u64,
    /// Health flips to down.
    pub went_down: u64,
}

/// What a reload changed.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadReport {
    /// The new configuration generation.
    pub generation: u64,
    /// One line per change.
    pub changes: Vec<String>,
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
    /// What the router applies: `up`, `draining` or `down`.
    pub state: String,
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
            state: state_word(b.state).into(),
            admin_state: state_word(b.admin).into(),
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

/// A backend named in a lookup.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct BackendRef {
    /// Name.
    pub name: String,
    /// Address.
    pub address: String,
    /// State applied by the router.
    pub state: &'static str,
}

/// `GET /lookup/cid/HEX`.
#[derive(Clone, Debug, Serialize)]
pub struct CidLookup {
    /// Listener.
    pub listener: String,
    /// The CID, hex.
    pub cid: String,
    /// `encoded`, `learned`, `seeded` or `unknown`.
    pub route: &'static str,
    /// The backend it goes to (for `unknown`: Maglev's choice for the CID).
    pub backend: Option<BackendRef>,
    /// Whether that backend takes the datagram now.
    pub serves: bool,
    /// Seconds since the binding was last used.
    pub idle_secs: Option<u32>,
    /// Why, in words.
    pub reason: String,
    /// A remark (e.g. a CID of another length than the listener's).
    pub note: Option<String>,
}

/// `GET /lookup/client/IP:PORT`.
#[derive(Clone, Debug, Serialize)]
pub struct ClientLookup {
    /// Listener.
    pub listener: String,
    /// The client address.
    pub client: String,
    /// `flow` or `new`.
    pub route: &'static str,
    /// The backend its CID-less datagrams go to.
    pub backend: Option<BackendRef>,
    /// Whether that backend takes them now.
    pub serves: bool,
    /// Seconds since the flow was last used.
    pub idle_secs: Option<u32>,
    /// Where a new flow from this address would go.
    pub new_flow_backend: Option<BackendRef>,
    /// Why, in words.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_fresh_then_reused_only_after_expiry() {
        let now = Instant::now();
        let mut next = u32::from(u16::MAX) - 1;
        let r = |id| Retired {
            id: BackendId(id),
            name: format!("b{id}"),
            addr: "127.0.0.1:1".parse().unwrap(),
            at: now,
        };
        let mut retired = vec![r(3), r(1)];
        assert_eq!(
            allocate_id(&mut next, &mut retired, now, Duration::from_secs(60)),
            Some(BackendId(u16::MAX - 1))
        );
        assert_eq!(
            allocate_id(&mut next, &mut retired, now, Duration::from_secs(60)),
            Some(BackendId(u16::MAX))
        );
        // Exhausted: nothing retired long enough ago.
        assert_eq!(
            allocate_id(&mut next, &mut retired, now, Duration::from_secs(60)),
            None
        );
        let later = now + Duration::from_secs(61);
        let got = allocate_id(&mut next, &mut retired, later, Duration::from_secs(60));
        assert!(matches!(got, Some(BackendId(3 | 1))));
        assert_eq!(retired.len(), 1);
    }

    #[test]
    fn hex_cids() {
        assert_eq!(parse_hex("a0B1c2"), Some(vec![0xa0, 0xb1, 0xc2]));
        assert_eq!(parse_hex("a0:b1-c2"), Some(vec![0xa0, 0xb1, 0xc2]));
        assert_eq!(parse_hex("abc"), None);
        assert_eq!(parse_hex("zz"), None);
        assert_eq!(hex_string(&[0, 0xff]), "00ff");
    }
}
