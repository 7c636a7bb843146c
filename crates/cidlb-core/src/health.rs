//! Health from active checks: a backend's health flips only after a run of
//! consecutive results that disagree with it (pingora's `rise`/`fall` rule).
//!
//! Sans-IO like the rest of the crate: the daemon sends the probes and feeds each result
//! to [`HealthTracker::observe`]; the tracker says when the backend's health changes.
//!
//! Health is kept apart from the operator's choice ([`BackendState`]): the state the
//! router applies is [`effective_state`] — `Down` while unhealthy, else what the
//! operator set. So a health check never undoes a drain, and a drained backend that
//! fails its checks is still reported as failing.
//!
//! ```
//! use cidlb_core::{HealthThresholds, HealthTracker};
//!
//! let th = HealthThresholds { rise: 2, fall: 3 };
//! let mut h = HealthTracker::new(true);
//! assert_eq!(h.observe(false, th), None); // 1 failure
//! assert_eq!(h.observe(true, th), None); // a success resets the run
//! assert_eq!(h.observe(false, th), None);
//! assert_eq!(h.observe(false, th), None);
//! assert_eq!(h.observe(false, th), Some(false)); // 3 in a row: down
//! assert_eq!(h.observe(true, th), None);
//! assert_eq!(h.observe(true, th), Some(true)); // 2 in a row: up again
//! ```

use crate::backend::BackendState;

/// How many consecutive results flip a backend's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HealthThresholds {
    /// Consecutive successes that bring an unhealthy backend back (≥ 1).
    pub rise: u32,
    /// Consecutive failures that take a healthy backend out (≥ 1).
    pub fall: u32,
}

/// One backend's health as seen by active checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HealthTracker {
    healthy: bool,
    /// Consecutive results that disagree with `healthy`.
    against: u32,
}

impl HealthTracker {
    /// A tracker starting healthy or not. The daemon starts backends healthy, so a new
    /// balancer serves at once; a dead backend is taken out after `fall` checks.
    pub fn new(healthy: bool) -> Self {
        HealthTracker {
            healthy,
            against: 0,
        }
    }

    /// Whether the backend is healthy.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Consecutive results so far that disagree with the current health (they flip it
    /// when they reach the threshold).
    pub fn pending(&self) -> u32 {
        self.against
    }

    /// Records one check result (`ok`: the backend answered). Returns the new health
    /// when this result flips it.
    pub fn observe(&mut self, ok: bool, th: HealthThresholds) -> Option<bool> {
        if ok == self.healthy {
            self.against = 0;
            return None;
        }
        self.against = self.against.saturating_add(1);
        let needed = if ok { th.rise } else { th.fall }.max(1);
        if self.against >= needed {
            self.healthy = ok;
            self.against = 0;
            Some(ok)
        } else {
            None
        }
    }
}

/// The state the router should apply: `Down` while health checks say the backend is
/// unhealthy, else the operator's state (`Up`, `Draining` or `Down`).
pub fn effective_state(admin: BackendState, healthy: bool) -> BackendState {
    if healthy {
        admin
    } else {
        BackendState::Down
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TH: HealthThresholds = HealthThresholds { rise: 2, fall: 3 };

    #[test]
    fn flips_only_after_consecutive_results() {
        let mut h = HealthTracker::new(true);
        // Alternating results never flip it.
        for i in 0..20 {
            assert_eq!(h.observe(i % 2 == 1, TH), None);
        }
        assert!(h.is_healthy());
        assert_eq!(h.observe(false, TH), None);
        assert_eq!(h.observe(false, TH), None);
        assert_eq!(h.pending(), 2);
        assert_eq!(h.observe(false, TH), Some(false));
        assert_eq!(h.pending(), 0);
        // Further failures change nothing.
        assert_eq!(h.observe(false, TH), None);
        assert_eq!(h.observe(true, TH), None);
        assert_eq!(h.observe(true, TH), Some(true));
        assert!(h.is_healthy());
    }

    #[test]
    fn thresholds_of_one_and_zero_flip_at_once() {
        for n in [0, 1] {
            let th = HealthThresholds { rise: n, fall: n };
            let mut h = HealthTracker::new(false);
            assert_eq!(h.observe(true, th), Some(true));
            assert_eq!(h.observe(false, th), Some(false));
        }
    }

    #[test]
    fn health_never_undoes_a_drain() {
        use BackendState::*;
        for admin in [Up, Draining, Down] {
            assert_eq!(effective_state(admin, true), admin);
            assert_eq!(effective_state(admin, false), Down);
        }
    }
}
