//! The control view of every backend, and the registry of backend ids.
//!
//! **Backend ids across reloads.** Flows and CID bindings refer to backends by
//! [`BackendId`]. A backend keeps its id as long as its *name* and address stay the
//! same, so its flows and bindings survive any reload. A new name (or a known name at a
//! new address: another server, whose sessions are elsewhere) gets an id never used
//! before by this listener; ids of removed backends are reused only once every flow and
//! binding that could refer to them has expired. A removed backend that comes back
//! (same name, same address) gets its old id again: the bindings of the sessions it
//! still holds lead to it.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cidlb_core::plane::Traffic;
use cidlb_core::{effective_state, BackendId, BackendState, HealthTracker};
use cidlb_net::health::ProbeResult;

use super::error::ControlError;
use crate::config::ListenerConfig;

/// One backend as the control plane sees it.
#[derive(Clone, Debug)]
pub(super) struct BackendCtl {
    pub id: BackendId,
    pub name: String,
    pub addr: SocketAddr,
    /// The operator's state (config file, then drain/undrain).
    pub admin: BackendState,
    pub weight: u32,
    pub health: HealthTracker,
    pub last_check: Option<ProbeResult>,
    pub health_changed: Option<Instant>,
    pub checks: [u64; ProbeResult::ALL.len()],
    pub went_up: u64,
    pub went_down: u64,
    /// Traffic counters of the id when this backend got it (ids can be reused).
    pub traffic_base: Traffic,
}

impl BackendCtl {
    /// A backend as the file describes it, unchecked.
    pub fn new(
        id: BackendId,
        b: &crate::config::BackendConfig,
        traffic_base: Traffic,
    ) -> BackendCtl {
        BackendCtl {
            id,
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
            traffic_base,
        }
    }

    /// The state the router applies: `down` while unhealthy, else the operator's.
    pub fn effective(&self, health_enabled: bool) -> BackendState {
        effective_state(self.admin, self.health.is_healthy() || !health_enabled)
    }
}

/// A removed backend whose id is kept aside.
#[derive(Clone, Debug)]
pub(super) struct Retired {
    pub id: BackendId,
    pub name: String,
    pub addr: SocketAddr,
    pub at: Instant,
}

/// One listener's backends and id registry.
#[derive(Debug)]
pub(super) struct ListenerCtl {
    pub backends: Vec<BackendCtl>,
    /// Next id never handed out.
    pub next_id: u32,
    /// Removed backends: their id, name, address and when they were removed.
    pub retired: Vec<Retired>,
}

/// A listener's backends after a reload, built aside (nothing is changed until every
/// listener's is built).
#[derive(Debug)]
pub(super) struct Staged {
    pub backends: Vec<BackendCtl>,
    pub next_id: u32,
    pub retired: Vec<Retired>,
}

impl ListenerCtl {
    /// The backends of a listener at start: ids in file order (as the plane was
    /// started with).
    pub fn at_start(l: &ListenerConfig) -> ListenerCtl {
        let backends: Vec<BackendCtl> = l
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| BackendCtl::new(BackendId(i as u16), b, Traffic::default()))
            .collect();
        ListenerCtl {
            next_id: backends.len() as u32,
            backends,
            retired: Vec::new(),
        }
    }

    /// The backends after a reload from `old_l` to `new_l` (see the module docs for
    /// ids). The file wins where it changed; elsewhere the operator's runtime choices
    /// (drain, weight) stay. One line per change goes to `changes`. O(backends +
    /// retired ids).
    pub fn stage(
        &self,
        old_l: &ListenerConfig,
        new_l: &ListenerConfig,
        now: Instant,
        keep_ids_for: Duration,
        traffic_of: &dyn Fn(BackendId) -> Traffic,
        changes: &mut Vec<String>,
    ) -> Result<Staged, ControlError> {
        let lname = &new_l.name;
        let mut next_id = self.next_id;
        // Lookups by name and address, built once (lists may hold 65,535 backends).
        let current: HashMap<(&str, SocketAddr), &BackendCtl> = self
            .backends
            .iter()
            .map(|b| ((b.name.as_str(), b.addr), b))
            .collect();
        let old_by_name: HashMap<&str, &crate::config::BackendConfig> = old_l
            .backends
            .iter()
            .map(|b| (b.name.as_str(), b))
            .collect();
        let mut retired = RetiredIds::new(&self.retired);
        let mut ctls: Vec<BackendCtl> = Vec::with_capacity(new_l.backends.len());
        for nb in &new_l.backends {
            let ctl = match current.get(&(nb.name.as_str(), nb.address)) {
                Some(&b) => {
                    let mut b = b.clone();
                    let ob = old_by_name.get(nb.name.as_str());
                    if ob.is_none_or(|o| o.state != nb.state) {
                        if b.admin != nb.state {
                            changes.push(format!(
                                "listener {lname:?}: backend {:?} state {} -> {}",
                                nb.name,
                                b.admin.name(),
                                nb.state.name()
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
                    // The same server back (name and address) gets its old id, so the
                    // bindings of its sessions still lead to it.
                    let id = retired
                        .take(&nb.name, nb.address)
                        .or_else(|| {
                            allocate_id(&mut next_id, &mut retired, now, keep_ids_for)
                        })
                        .ok_or_else(|| {
                            ControlError::conflict(format!(
                                "listener {lname:?}: no backend id is free (65536 backends were added since start and removed ones may still have flows or CID bindings); restart cidlb"
                            ))
                        })?;
                    changes.push(format!(
                        "listener {lname:?}: backend {:?} at {} added",
                        nb.name, nb.address
                    ));
                    BackendCtl::new(id, nb, traffic_of(id))
                }
            };
            ctls.push(ctl);
        }
        let kept: HashSet<BackendId> = ctls.iter().map(|c| c.id).collect();
        let mut retired = retired.into_vec();
        for b in &self.backends {
            if !kept.contains(&b.id) {
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
        Ok(Staged {
            backends: ctls,
            next_id,
            retired,
        })
    }

    /// Puts a staged set in place.
    pub fn install(&mut self, s: Staged) {
        self.backends = s.backends;
        self.next_id = s.next_id;
        self.retired = s.retired;
    }
}

/// The retired ids while a reload is staged: found by name and address, or the one
/// retired longest ago, each in O(1) amortized (instead of a scan of the list per
/// backend).
struct RetiredIds {
    entries: Vec<Option<Retired>>,
    by_key: HashMap<(String, SocketAddr), usize>,
    /// Positions in `entries`, oldest first (built on first use).
    by_age: Option<Vec<usize>>,
    /// How far `by_age` has been consumed.
    next_oldest: usize,
}

impl RetiredIds {
    fn new(retired: &[Retired]) -> RetiredIds {
        RetiredIds {
            by_key: retired
                .iter()
                .enumerate()
                .map(|(i, r)| ((r.name.clone(), r.addr), i))
                .collect(),
            entries: retired.iter().cloned().map(Some).collect(),
            by_age: None,
            next_oldest: 0,
        }
    }

    /// The id of the removed backend with this name and address, taken out.
    fn take(&mut self, name: &str, addr: SocketAddr) -> Option<BackendId> {
        let i = self.by_key.remove(&(name.to_string(), addr))?;
        self.entries[i].take().map(|r| r.id)
    }

    /// The id retired longest ago, if it was retired more than `keep_for` before
    /// `now`, taken out.
    fn take_oldest(&mut self, now: Instant, keep_for: Duration) -> Option<BackendId> {
        let entries = &self.entries;
        let by_age = self.by_age.get_or_insert_with(|| {
            let mut v: Vec<usize> = (0..entries.len()).collect();
            v.sort_by_key(|&i| entries[i].as_ref().map(|r| r.at));
            v
        });
        while let Some(&i) = by_age.get(self.next_oldest) {
            match &self.entries[i] {
                None => self.next_oldest += 1,
                Some(r) if now.saturating_duration_since(r.at) > keep_for => {
                    self.next_oldest += 1;
                    let r = self.entries[i].take().expect("checked");
                    self.by_key.remove(&(r.name, r.addr));
                    return Some(r.id);
                }
                Some(_) => return None,
            }
        }
        None
    }

    fn into_vec(self) -> Vec<Retired> {
        self.entries.into_iter().flatten().collect()
    }
}

/// Picks an id for a new backend: one never used, else the one retired longest ago if
/// nothing can refer to it any more.
fn allocate_id(
    next_id: &mut u32,
    retired: &mut RetiredIds,
    now: Instant,
    keep_for: Duration,
) -> Option<BackendId> {
    if *next_id <= u32::from(u16::MAX) {
        let id = BackendId(*next_id as u16);
        *next_id += 1;
        return Some(id);
    }
    retired.take_oldest(now, keep_for)
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
        let mut retired = RetiredIds::new(&[r(3), r(1)]);
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
        assert_eq!(retired.into_vec().len(), 1);
    }
}
