//! Health results: the probe targets, and what a round of results changes.

use std::time::Instant;

use cidlb_core::{BackendId, HealthThresholds};
use cidlb_net::health::{ProbeResult, ProbeTarget};
use tracing::{info, warn};

use super::Daemon;
use crate::config::HealthConfig;

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
                l.set_backend_state(id, eff);
            }
        }
    }
}
