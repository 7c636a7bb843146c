//! A worker's NAT-mode upstream flows: (listener, client address, backend) → a socket
//! connected to the backend from its own source port.

use std::net::SocketAddr;
use std::time::Instant;

use cidlb_core::table::{BoundedTable, Entry, Inserted, Tick};
use cidlb_core::{BackendId, FlowKey};
use slab::Slab;

/// The key of an upstream flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct UpKey {
    pub listener: u16,
    pub backend: BackendId,
    pub client: FlowKey,
}

/// One upstream flow.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub key: UpKey,
    pub client: SocketAddr,
    pub socket: mio::net::UdpSocket,
}

/// Upstream flows: a slab (stable indices = mio tokens) indexed by a bounded table that
/// expires idle flows and evicts when full.
#[derive(Debug)]
pub(crate) struct Upstreams {
    pub slab: Slab<Upstream>,
    index: BoundedTable<UpKey, usize>,
    epoch: Instant,
}

impl Upstreams {
    pub fn new(capacity: usize, idle_secs: Tick, seed: [u64; 4], epoch: Instant) -> Self {
        Upstreams {
            slab: Slab::new(),
            index: BoundedTable::new(capacity, idle_secs, seed),
            epoch,
        }
    }

    pub fn tick(&self, now: Instant) -> Tick {
        now.saturating_duration_since(self.epoch)
            .as_secs()
            .min(u64::from(Tick::MAX)) as Tick
    }

    /// The live flow for `key`, refreshed.
    pub fn get(&mut self, key: &UpKey, now: Instant) -> Option<usize> {
        let t = self.tick(now);
        self.index.touch(key, t).0.map(|e| e.value)
    }

    /// Changes the bound and the idle timeout (a reload changed the flow settings).
    pub fn set_limits(&mut self, capacity: usize, idle_secs: Tick) {
        self.index.set_capacity(capacity);
        self.index.set_idle_timeout(idle_secs);
    }

    /// Marks the flow at `slot` used (a reply went through it).
    pub fn touch_slot(&mut self, slot: usize, now: Instant) {
        if let Some(u) = self.slab.get(slot) {
            let key = u.key;
            let t = self.tick(now);
            self.index.touch(&key, t);
        }
    }

    /// Stores a new flow; returns its slot and the flow it displaced, if any (the caller
    /// deregisters and drops it). `live` says whether the displaced flow was still live.
    pub fn insert(&mut self, up: Upstream, now: Instant) -> (usize, Option<(Upstream, bool)>) {
        let t = self.tick(now);
        let key = up.key;
        let slot = self.slab.insert(up);
        let gone = match self.index.insert(key, slot, t, |_| true) {
            Inserted::Evicted { value, live, .. } => Some((self.slab.remove(value), live)),
            Inserted::Replaced | Inserted::New | Inserted::Refused => None,
        };
        (slot, gone)
    }

    /// Removes up to `budget` idle flows' worth of scanning; hands each closed flow out.
    pub fn sweep(&mut self, now: Instant, budget: usize, mut closed: impl FnMut(Upstream)) {
        let t = self.tick(now);
        let slab = &mut self.slab;
        self.index.sweep_with(t, budget, |e: Entry<UpKey, usize>| {
            closed(slab.remove(e.value));
        });
    }
}
