//! The daemon's control plane: what the operator and the health checks change while
//! the data plane runs.
//!
//! A [`Daemon`] owns the running data plane (any [`DataPlane`]: it talks to each
//! listener's plane only through [`cidlb_core::plane::ListenerPlane`]) and, per
//! listener, the control view of each backend: its stable id, the operator's state and
//! weight, its health, and its counters. Three things change backends at run time, all
//! through here, one job per module:
//!
//! - **health checks** (`health.rs`: [`Daemon::apply_health`]) flip a backend's
//!   *health* after `rise`/`fall` consecutive results;
//! - **the operator** (`operator.rs`: [`Daemon::set_admin_state`],
//!   [`Daemon::set_weight`]) drains, undrains and reweights;
//! - **a reload** (`reload.rs`: [`Daemon::reload`], [`Daemon::apply_config`]) replaces
//!   the backend sets, timeouts, limits and health settings, all or nothing.
//!
//! Reading: `snapshot.rs` ([`Daemon::snapshot`], what metrics and views are made of),
//! `views.rs` (the admin API's JSON), `lookup.rs` (where a CID or address goes, and
//! why, in words, from the core's own decision). Backend ids: `registry.rs`. Errors
//! are a [`ControlError`] of an [`ErrorKind`]; the admin API maps kinds to HTTP
//! statuses.
//!
//! Health and the operator's state are kept apart: the plane is given
//! [`cidlb_core::effective_state`] — `down` while unhealthy, else the operator's state
//! — so a health check never undoes a drain.
//!
//! Lock order: the control state first, then whatever a plane locks inside.

mod error;
mod health;
mod listing;
mod lookup;
mod operator;
mod registry;
mod reload;
mod saved;
mod snapshot;
mod views;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use cidlb_core::plane::{DataPlane, ListenerPlane};
use cidlb_core::BackendId;

pub use self::error::{ControlError, ErrorKind};
pub use self::listing::{BindingView, BindingsView, FlowView, FlowsView, ListingQuery};
pub use self::lookup::{BackendRef, CidLookup, ClientLookup};
use self::registry::ListenerCtl;
pub use self::reload::ReloadReport;
pub use self::snapshot::{BackendSnapshot, ListenerSnapshot, Snapshot};
pub use self::views::{
    BackendView, BackendsView, ListenerTables, ListenerView, TableView, TablesView, TrafficView,
};
use crate::config::Config;

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

#[derive(Debug)]
struct State {
    config: Config,
    listeners: Vec<ListenerCtl>,
    generation: u64,
}

/// The running balancer: data plane plus control state (see the module docs).
pub struct Daemon {
    plane: Box<dyn DataPlane>,
    secret: [u64; 4],
    config_path: Option<PathBuf>,
    overrides: Overrides,
    started: SystemTime,
    state: Mutex<State>,
    reloads_ok: AtomicU64,
    reloads_rejected: AtomicU64,
    /// The file's configuration and what its DNS backend names resolved to, when it has
    /// some (the running configuration is its expansion, see [`crate::dns`]).
    dns: Mutex<Option<DnsState>>,
    /// How long the last applied reload took, in microseconds (0: none yet).
    last_reload_micros: AtomicU64,
    /// Set when cidlb stops: a reload in progress gives up ([`Daemon::stop_flag`]).
    stopping: Arc<AtomicBool>,
}

/// See [`Daemon::dns`].
#[derive(Debug)]
struct DnsState {
    file: Config,
    resolved: crate::dns::Resolved,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// Wraps a data plane started from `config` by [`crate::specs::listener_specs`]
    /// with the same `secret` (backend ids are the backends' positions in the file).
    pub fn new(
        plane: Box<dyn DataPlane>,
        config: Config,
        secret: [u64; 4],
        config_path: Option<PathBuf>,
        overrides: Overrides,
    ) -> Daemon {
        let listeners = config.listeners.iter().map(ListenerCtl::at_start).collect();
        let d = Daemon {
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
            dns: Mutex::new(None),
            last_reload_micros: AtomicU64::new(0),
            stopping: Arc::new(AtomicBool::new(false)),
        };
        d.restore();
        d
    }

    /// Tells the daemon that its configuration is the expansion of `file`'s DNS
    /// backends by `resolved` (`run` resolved them before starting the plane); from
    /// then on [`Daemon::refresh_dns`] and reloads resolve them again.
    pub fn set_dns(&self, file: Config, resolved: crate::dns::Resolved) {
        *self.dns.lock().unwrap_or_else(|p| p.into_inner()) = Some(DnsState { file, resolved });
    }

    /// Resolves the file's DNS backend names again and applies what changed, like a
    /// reload (see [`crate::dns`]); nothing when there are none or nothing changed.
    pub fn refresh_dns(&self) {
        let mut g = self.dns.lock().unwrap_or_else(|p| p.into_inner());
        let Some(d) = g.as_mut() else { return };
        let grace = d.file.timeouts.flow_idle;
        if !d
            .resolved
            .refresh(&d.file, std::time::Instant::now(), grace)
        {
            return;
        }
        let expanded = d.resolved.expand(&d.file);
        drop(g);
        match self.apply_config(expanded) {
            Ok(rep) => {
                tracing::info!(
                    generation = rep.generation,
                    changes = rep.changes.len(),
                    "backend names resolved to other addresses; applied"
                );
                for c in &rep.changes {
                    tracing::info!("dns: {c}");
                }
            }
            Err(e) => tracing::warn!("backend names resolved to other addresses, not applied: {e}"),
        }
    }

    /// Applies the state file's drains and weights, where the configuration file has
    /// not changed those backends since they were saved.
    fn restore(&self) {
        let mut st = self.state();
        let Some(path) = st.config.state_file.clone() else {
            return;
        };
        let saved = match saved::Saved::load(&path) {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("state file not applied: {e}");
                return;
            }
        };
        let health_enabled = st.config.health.enabled;
        let mut changed: Vec<Vec<(cidlb_core::BackendId, cidlb_core::BackendState, u32)>> =
            vec![Vec::new(); st.listeners.len()];
        for (li, name, state, weight) in saved.apply(&mut st) {
            if let Some(b) = st.listeners[li].backends.iter().find(|b| b.name == name) {
                changed[li].push((b.id, b.effective(health_enabled), weight));
            }
            tracing::info!(listener = %st.config.listeners[li].name, backend = %name,
                state = state.name(), weight, state_file = %path.display(),
                "restored the operator's state and weight of a backend");
        }
        // One swap per listener (one Maglev build, outside the plane's lock).
        for (li, changes) in changed.into_iter().enumerate() {
            if !changes.is_empty() {
                self.apply_one(&st, li, |plane| {
                    for (id, state, weight) in changes {
                        plane.set_backend_state(id, state);
                        plane.set_backend_weight(id, weight);
                    }
                });
            }
        }
    }

    /// Writes the state file, if there is one (after an operator action or a reload).
    fn save_state(&self, st: &State) {
        if let Some(path) = &st.config.state_file {
            if let Err(e) = saved::Saved::of(st).save(path) {
                tracing::warn!(state_file = %path.display(), error = %e,
                    "cannot write the state file: this operator change is lost at restart");
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The data plane.
    pub fn plane(&self) -> &dyn DataPlane {
        &*self.plane
    }

    fn listener(&self, li: usize) -> &Arc<dyn ListenerPlane> {
        &self.plane.listeners()[li]
    }

    /// The configuration in force.
    pub fn config(&self) -> Config {
        self.state().config.clone()
    }

    /// The configuration file reloads read, if the daemon was started with one.
    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.config_path.as_deref()
    }

    /// A flag to set when cidlb is stopping (`run` has SIGINT and SIGTERM set it): a
    /// reload in progress then gives up at its next step (before each listener's
    /// backend set is built, and before the swap), changing nothing, so that a stop
    /// does not wait for a long reload to finish.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stopping.clone()
    }

    /// Stops the data plane (its threads end; dropping the daemon waits for them).
    pub fn shutdown(&self) {
        self.plane.shutdown();
    }
}

impl State {
    /// The index of the listener named `listener`, or the only one.
    fn listener_index(&self, listener: Option<&str>) -> Result<usize, ControlError> {
        match listener {
            Some(n) => self
                .config
                .listeners
                .iter()
                .position(|l| l.name == n)
                .ok_or_else(|| ControlError::not_found(format!("no listener named {n:?}"))),
            None if self.config.listeners.len() == 1 => Ok(0),
            None => Err(ControlError::invalid(format!(
                "there are {} listeners: add ?listener=NAME ({})",
                self.config.listeners.len(),
                self.config
                    .listeners
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// A backend of listener `li` by id.
    fn backend(&self, li: usize, id: BackendId) -> Option<&registry::BackendCtl> {
        self.listeners[li].backends.iter().find(|b| b.id == id)
    }
}
