//! A bounded hash table with idle expiry and eviction an attacker cannot steer cheaply.
//!
//! Entries live densely in a `Vec`; an open-addressing index of 8-byte slots
//! ([`crate::index`]) maps a keyed hash of the key (`ahash` with per-instance seeds) to
//! their positions, so the key is stored once. Batch lookups can load their index slots
//! and entries ahead of use ([`BoundedTable::warm_slot`]), so that a batch's cache misses
//! overlap.
//!
//! - **Bound**: the table never holds more than `capacity` entries.
//! - **Expiry**: an entry idle for longer than the table's timeout is dead. Lookups drop
//!   dead entries lazily and [`BoundedTable::sweep`] walks a bounded number of entries
//!   per call, so no call does unbounded work.
//! - **Eviction** when full: [`EVICTION_SAMPLES`] entries are drawn at random (from a
//!   seeded generator the peer cannot observe) and the one idle the longest among those
//!   the caller allows to be evicted goes; when none may go, the insertion is refused.
//!   This approximates LRU (as Redis does) without a list an attacker could order, and
//!   lets the caller protect valuable entries (e.g. learned CID bindings from seeded
//!   ones).

use core::hash::Hash;

use ahash::RandomState;

use crate::index::Index;

/// How many random entries are looked at to pick a victim when the table is full.
pub const EVICTION_SAMPLES: usize = 8;

/// Seconds since the owner's epoch; `u32` lasts 136 years and keeps entries small.
pub type Tick = u32;

/// One stored entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<K, V> {
    /// The key.
    pub key: K,
    /// The value.
    pub value: V,
    /// When the entry was last used.
    pub last_seen: Tick,
}

/// What [`BoundedTable::insert`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inserted<K, V> {
    /// The key was new and there was room (or room was made by dropping dead entries).
    New,
    /// The key existed; its value was replaced.
    Replaced,
    /// The table was full: this entry was removed to make room. `live` is false when it
    /// had already expired (its removal was due anyway).
    Evicted {
        /// The removed key.
        key: K,
        /// Its value, for the owner to release what it holds.
        value: V,
        /// Whether it was still live.
        live: bool,
    },
    /// The table was full and no sampled entry could be evicted: nothing was stored.
    Refused,
}

/// A bounded, keyed-hash table with idle expiry and sampled eviction.
#[derive(Clone, Debug)]
pub struct BoundedTable<K, V> {
    entries: Vec<Entry<K, V>>,
    index: Index,
    hasher: RandomState,
    capacity: usize,
    idle: Tick,
    rng: u64,
    cursor: usize,
}

impl<K: Hash + Eq + Clone, V> BoundedTable<K, V> {
    /// A table of at most `capacity` entries that expire after `idle` seconds unused.
    /// `seed` keys both the hash and the eviction sampler; give each instance its own.
    pub fn new(capacity: usize, idle: Tick, seed: [u64; 4]) -> Self {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        BoundedTable {
            entries: Vec::new(),
            index: Index::default(),
            hasher: RandomState::with_seeds(seed[0], seed[1], seed[2], seed[3]),
            capacity,
            idle,
            rng: seed[0] ^ seed[3].rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15,
            cursor: 0,
        }
    }

    /// Number of entries, live or not yet swept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The idle timeout in seconds.
    pub fn idle_timeout(&self) -> Tick {
        self.idle
    }

    /// Changes the idle timeout (takes effect at the next lookup or sweep).
    pub fn set_idle_timeout(&mut self, idle: Tick) {
        self.idle = idle;
    }

    /// Changes the bound. Shrinking does not drop entries at once; inserts evict until
    /// the table is back under the bound.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.clamp(1, u32::MAX as usize);
    }

    /// Bytes allocated by the table (entries and index), for memory reporting.
    pub fn allocated_bytes(&self) -> usize {
        self.entries.capacity() * core::mem::size_of::<Entry<K, V>>()
            + self.index.capacity() * core::mem::size_of::<u64>()
    }

    fn is_dead(&self, e: &Entry<K, V>, now: Tick) -> bool {
        now.saturating_sub(e.last_seen) > self.idle
    }

    fn find(&self, key: &K) -> Option<usize> {
        self.find_hashed(self.hasher.hash_one(key), key)
    }

    fn find_hashed(&self, h: u64, key: &K) -> Option<usize> {
        let entries = &self.entries;
        self.index
            .find(h, |i| entries[i as usize].key == *key)
            .map(|i| i as usize)
    }

    /// The keyed hash of `key` (for [`Self::warm`]).
    pub fn hash(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Software pipelining for a batch of lookups, first step: loads the index slot
    /// where the lookup of hash `h` starts. Run it for every key of a batch, then
    /// [`Self::warm_entry`] for every key, then the real lookups: the batch's cache
    /// misses then overlap instead of adding up. Changes nothing; the value returned
    /// only keeps the load from being optimised away (pass it to `black_box`).
    pub fn warm_slot(&self, h: u64) -> u64 {
        self.index.first_slot(h)
    }

    /// Second step of [`Self::warm_slot`]: looks `key` (of hash `h`) up and loads its
    /// entry.
    pub fn warm_entry(&self, h: u64, key: &K) -> u64 {
        self.find_hashed(h, key)
            .map_or(0, |i| u64::from(self.entries[i].last_seen))
    }

    /// Looks `key` up without touching it; dead entries are not returned.
    pub fn peek(&self, key: &K, now: Tick) -> Option<&Entry<K, V>> {
        let e = &self.entries[self.find(key)?];
        (!self.is_dead(e, now)).then_some(e)
    }

    /// Looks `key` up and marks it used at `now`. A dead entry is removed and `None`
    /// returned; the second value says whether that happened.
    pub fn touch(&mut self, key: &K, now: Tick) -> (Option<&mut Entry<K, V>>, bool) {
        let Some(i) = self.find(key) else {
            return (None, false);
        };
        if self.is_dead(&self.entries[i], now) {
            self.remove_at(i);
            return (None, true);
        }
        let e = &mut self.entries[i];
        e.last_seen = now;
        (Some(e), false)
    }

    /// Removes `key`; returns its value.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.find(key)?;
        Some(self.remove_at(i).value)
    }

    fn remove_at(&mut self, i: usize) -> Entry<K, V> {
        let h = self.hasher.hash_one(&self.entries[i].key);
        let removed = self.index.remove(h, i as u32);
        debug_assert!(removed, "every entry is indexed");
        let last = self.entries.len() - 1;
        if i != last {
            // The last entry moves into slot `i`: repoint its index entry.
            let h = self.hasher.hash_one(&self.entries[last].key);
            let moved = self.index.repoint(h, last as u32, i as u32);
            debug_assert!(moved, "every entry is indexed");
        }
        self.entries.swap_remove(i)
    }

    /// Inserts or replaces `key`. When the table is full, one entry is evicted among
    /// [`EVICTION_SAMPLES`] random ones: a dead one if seen, else the least recently
    /// used one for which `may_evict` is true; if there is none, the insert is refused.
    pub fn insert(
        &mut self,
        key: K,
        value: V,
        now: Tick,
        may_evict: impl Fn(&V) -> bool,
    ) -> Inserted<K, V> {
        if let Some(i) = self.find(&key) {
            let e = &mut self.entries[i];
            e.value = value;
            e.last_seen = now;
            return Inserted::Replaced;
        }
        let mut out = Inserted::New;
        while self.entries.len() >= self.capacity {
            match self.pick_victim(now, &may_evict) {
                Some((i, dead)) => {
                    let gone = self.remove_at(i);
                    out = Inserted::Evicted {
                        key: gone.key,
                        value: gone.value,
                        live: !dead,
                    };
                }
                None => return Inserted::Refused,
            }
        }
        let i = self.entries.len() as u32;
        let h = self.hasher.hash_one(&key);
        self.entries.push(Entry {
            key,
            value,
            last_seen: now,
        });
        self.index.insert(h, i);
        out
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: cheap, and its seed never leaves the process.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick_victim(&mut self, now: Tick, may_evict: &impl Fn(&V) -> bool) -> Option<(usize, bool)> {
        let n = self.entries.len();
        let mut best: Option<(usize, Tick)> = None;
        for _ in 0..EVICTION_SAMPLES {
            let i = (self.next_random() % n as u64) as usize;
            let e = &self.entries[i];
            if self.is_dead(e, now) {
                return Some((i, true));
            }
            if may_evict(&e.value) && best.is_none_or(|(_, seen)| e.last_seen < seen) {
                best = Some((i, e.last_seen));
            }
        }
        best.map(|(i, _)| (i, false))
    }

    /// Removes dead entries among the next `budget` entries (a cursor walks the table
    /// round-robin across calls). Returns how many were removed.
    pub fn sweep(&mut self, now: Tick, budget: usize) -> usize {
        self.sweep_with(now, budget, |_| {})
    }

    /// [`Self::sweep`], handing each removed entry to `on_remove`.
    pub fn sweep_with(
        &mut self,
        now: Tick,
        budget: usize,
        mut on_remove: impl FnMut(Entry<K, V>),
    ) -> usize {
        let mut removed = 0;
        for _ in 0..budget {
            if self.entries.is_empty() {
                break;
            }
            if self.cursor >= self.entries.len() {
                self.cursor = 0;
            }
            if self.is_dead(&self.entries[self.cursor], now) {
                // The last entry moved into `cursor`: look at it next, don't advance.
                on_remove(self.remove_at(self.cursor));
                removed += 1;
            } else {
                self.cursor += 1;
            }
        }
        removed
    }

    /// Iterates over all entries (live or not yet swept), in storage order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry<K, V>> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: [u64; 4] = [1, 2, 3, 4];

    #[test]
    fn insert_touch_remove() {
        let mut t = BoundedTable::new(10, 100, SEED);
        assert_eq!(t.insert(1u32, "a", 0, |_| true), Inserted::New);
        assert_eq!(t.insert(2u32, "b", 0, |_| true), Inserted::New);
        assert_eq!(t.insert(1u32, "c", 5, |_| true), Inserted::Replaced);
        assert_eq!(t.touch(&1, 6).0.unwrap().value, "c");
        assert_eq!(t.remove(&1), Some("c"));
        assert_eq!(t.touch(&1, 6).0, None);
        assert_eq!(t.touch(&2, 6).0.unwrap().value, "b");
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn dead_entries_vanish_on_lookup_and_sweep() {
        let mut t = BoundedTable::new(100, 10, SEED);
        for k in 0..50u32 {
            t.insert(k, k, 0, |_| true);
        }
        t.touch(&7, 5);
        assert_eq!(t.touch(&3, 11), (None, true), "idle 11 s > 10 s");
        assert!(t.peek(&7, 11).is_some());
        let removed = t.sweep(11, 1000);
        assert_eq!(removed, 48);
        assert_eq!(t.len(), 1);
        for k in 0..50u32 {
            assert_eq!(t.peek(&k, 11).is_some(), k == 7, "key {k}");
        }
    }

    #[test]
    fn bound_holds_and_index_stays_consistent() {
        let mut t = BoundedTable::new(64, 1_000_000, SEED);
        let mut evicted = 0;
        for k in 0..10_000u32 {
            match t.insert(k, k * 2, k, |_| true) {
                Inserted::Evicted { live: true, .. } => evicted += 1,
                Inserted::New => {}
                other => panic!("unexpected {other:?}"),
            }
            assert!(t.len() <= 64);
        }
        assert_eq!(evicted, 10_000 - 64);
        // Every stored entry is found through the index and maps to its value.
        let keys: Vec<u32> = t.iter().map(|e| e.key).collect();
        for k in keys {
            assert_eq!(t.peek(&k, 10_000).unwrap().value, k * 2);
        }
    }

    #[test]
    fn eviction_prefers_old_entries() {
        // 1000 entries, 900 old and 100 recently used; insert 100 more. With 8 samples
        // a recent entry is evicted only if all 8 samples are recent (~1e-8 each time).
        let mut t = BoundedTable::new(1000, u32::MAX, SEED);
        for k in 0..1000u32 {
            t.insert(k, (), if k < 900 { 0 } else { 50 }, |_| true);
        }
        for k in 1000..1100u32 {
            t.insert(k, (), 60, |_| true);
        }
        let recent_kept = (900..1000u32).filter(|k| t.peek(k, 60).is_some()).count();
        assert_eq!(recent_kept, 100);
    }

    #[test]
    fn protected_entries_are_never_evicted() {
        let mut t = BoundedTable::new(16, u32::MAX, SEED);
        for k in 0..16u32 {
            t.insert(k, true, 0, |_| true); // `true` = protected
        }
        for k in 16..100u32 {
            assert_eq!(t.insert(k, false, 1, |&p| !p), Inserted::Refused);
        }
        assert_eq!(t.len(), 16);
        assert!((0..16u32).all(|k| t.peek(&k, 1).is_some()));
    }
}
