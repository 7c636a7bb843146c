//! Health results: the probe targets, and what a round of results changes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use cidlb_core::{Backend, BackendId, BackendSetError, BackendState, HealthThresholds, Router};
use cidlb_net::health::{ProbeResult, ProbeTarget};
use tracing::{info, warn};

use super::registry::ListenerCtl;
use super::Daemon;
use crate::config::{HealthConfig, ListenerConfig};

/// Health flips logged one by one per round; the rest are summed up in one line each
/// way (a round can flip tens of thousands of backends: the metrics count every one).
const LOGGED_FLIPS: usize = 32;

impl Daemon {
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
    ///
    /// O(backends): a listener whose round flips backends gets them in one step (one
    /// Maglev build, outside the plane's lock), not one rebuild per backend.
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
        let st = &mut *st;
        let (cfg, listeners) = (&st.config, &mut st.listeners);
        // Per listener: backend id -> position, built when first needed.
        let mut index: Vec<Option<HashMap<BackendId, usize>>> = vec![None; listeners.len()];
        // Per listener: the backends whose effective state changed.
        let mut flipped: Vec<Vec<(BackendId, BackendState)>> = vec![Vec::new(); listeners.len()];
        let (mut up, mut down) = (0usize, 0usize);
        for (&(li, id, target), &r) in targets.iter().zip(results) {
            let Some(lc) = listeners.get_mut(li) else {
                continue;
            };
            let idx = index[li].get_or_insert_with(|| {
                lc.backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (b.id, i))
                    .collect()
            });
            let Some(b) = idx
                .get(&id)
                .map(|&i| &mut lc.backends[i])
                .filter(|b| b.addr == target.addr)
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
            let lname = &cfg.listeners[li].name;
            if healthy {
                b.went_up += 1;
                up += 1;
                if up <= LOGGED_FLIPS {
                    info!(listener = %lname, backend = %b.name, address = %b.addr,
                        "backend is healthy again ({} checks in a row answered); it takes traffic", th.rise);
                }
            } else {
                b.went_down += 1;
                down += 1;
                if down <= LOGGED_FLIPS {
                    warn!(listener = %lname, backend = %b.name, address = %b.addr, last = r.name(),
                        "backend is DOWN ({} checks in a row failed); new flows and its traffic go elsewhere", th.fall);
                }
            }
            flipped[li].push((id, b.effective(true)));
        }
        if up > LOGGED_FLIPS {
            info!(
                more = up - LOGGED_FLIPS,
                total = up,
                "and more backends are healthy again in this round (GET /backends lists them)"
            );
        }
        if down > LOGGED_FLIPS {
            warn!(
                more = down - LOGGED_FLIPS,
                total = down,
                "and more backends are DOWN in this round (GET /backends lists them)"
            );
        }
        for (li, changes) in flipped.iter().enumerate() {
            let Some(plane) = self.plane.listeners().get(li) else {
                continue;
            };
            if changes.is_empty() {
                continue;
            }
            // One Maglev build for the whole round, outside the plane's lock, then
            // one swap.
            match self.swap_backends(&listeners[li], &cfg.listeners[li], li, true) {
                Ok(()) => continue,
                // Stopping: the plane is about to go.
                Err(BackendSetError::Cancelled) => return,
                Err(e) => warn!(listener = %cfg.listeners[li].name, error = %e,
                    "cannot apply the health changes at once; applying them one by one"),
            }
            for &(id, state) in changes {
                plane.set_backend_state(id, state);
            }
        }
    }
}

impl Daemon {
    /// Installs listener `li`'s backend set as the control state `lc` describes it now
    /// (after health flips, a drain or a weight change): its Maglev table is built here,
    /// outside the plane's lock, and swapped in at once. A plane's own per-change
    /// rebuild (`set_backend_state`) holds its lock for the build: seconds with a large
    /// table, while the listener forwards nothing. Call with the control state locked
    /// (so that two swaps cannot interleave).
    pub(super) fn swap_backends(
        &self,
        lc: &ListenerCtl,
        lcfg: &ListenerConfig,
        li: usize,
        health_enabled: bool,
    ) -> Result<(), BackendSetError> {
        let plane = self.listener(li);
        let rc = plane.router_config();
        let stopping = || self.stopping.load(Ordering::Relaxed);
        let prepared = Router::prepare_backends_unless(
            &rc,
            plane_backends(lc, lcfg, health_enabled),
            &stopping,
        )?;
        plane.reconfigure(rc, prepared);
        Ok(())
    }
}

/// The backend set a listener's plane routes with, as the control state describes it
/// (ids, states with health applied, weights, server IDs): what [`Daemon::apply_config`]
/// installs, for the control state as it is now.
///
/// [`Daemon::apply_config`]: super::Daemon::apply_config
fn plane_backends(lc: &ListenerCtl, lcfg: &ListenerConfig, health_enabled: bool) -> Vec<Backend> {
    // The control view lists the configuration's backends, in its order.
    debug_assert_eq!(lc.backends.len(), lcfg.backends.len());
    lc.backends
        .iter()
        .zip(&lcfg.backends)
        .map(|(c, b)| {
            debug_assert_eq!(c.name, b.name);
            Backend {
                id: c.id,
                name: c.name.clone(),
                addr: c.addr,
                weight: c.weight,
                state: c.effective(health_enabled),
                server_id: lcfg.backend_server_id(b),
            }
        })
        .collect()
}
