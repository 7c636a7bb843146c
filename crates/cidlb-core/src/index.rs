//! The hash index of [`crate::table::BoundedTable`]: open addressing with linear
//! probing over 8-byte slots, each holding 32 bits of the key's hash (the tag) and the
//! position of the entry in the table's dense storage.
//!
//! Why not `hashbrown::HashTable`, which it replaced: a lookup there is three dependent
//! cache misses in a large table (control bytes, bucket, entry) and its API cannot start
//! one before the key is compared. Here the first probe position is a pure function of
//! the hash, so a batch of lookups can load every first slot, then every entry, before
//! any is needed ([`Index::first_slot`]): the misses of a batch overlap instead of
//! adding up. Linear probing keeps a probe within one or two cache lines; the load
//! factor stays at or below one half, and removal shifts later slots back (no
//! tombstones), so probe lengths do not grow as entries come and go.

/// A slot no entry uses.
const EMPTY: u64 = u64::MAX;
/// The tag's half of a slot (and of a hash).
const TAG: u64 = 0xffff_ffff_0000_0000;

/// Maps 64-bit hashes to `u32` positions; the caller resolves tag collisions by
/// comparing keys at the positions offered.
#[derive(Clone, Debug, Default)]
pub(crate) struct Index {
    slots: Vec<u64>,
    len: usize,
}

impl Index {
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Where the probe for a hash (or a slot holding its tag) starts.
    fn home(&self, h: u64) -> usize {
        (h >> 32) as usize & self.mask()
    }

    /// Slots allocated (for memory reporting).
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The first slot a lookup of `h` reads, loaded now so that it is in cache when the
    /// lookup comes (the value means nothing to the caller; pass it to `black_box`).
    pub(crate) fn first_slot(&self, h: u64) -> u64 {
        if self.slots.is_empty() {
            return EMPTY;
        }
        self.slots[self.home(h)]
    }

    /// The slot holding `h`'s tag whose position satisfies `eq`.
    fn find_slot(&self, h: u64, mut eq: impl FnMut(u32) -> bool) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let (mask, tag) = (self.mask(), h & TAG);
        let mut p = self.home(h);
        // Ends: at most half the slots are used, so an empty one comes.
        loop {
            let s = self.slots[p];
            if s == EMPTY {
                return None;
            }
            if s & TAG == tag && eq(s as u32) {
                return Some(p);
            }
            p = (p + 1) & mask;
        }
    }

    /// The position stored under `h` that satisfies `eq` (the caller's key compare).
    pub(crate) fn find(&self, h: u64, eq: impl FnMut(u32) -> bool) -> Option<u32> {
        self.find_slot(h, eq).map(|p| self.slots[p] as u32)
    }

    /// Stores position `pos` under `h` (the caller knows the key is not present).
    pub(crate) fn insert(&mut self, h: u64, pos: u32) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.mask();
        let mut p = self.home(h);
        while self.slots[p] != EMPTY {
            p = (p + 1) & mask;
        }
        self.slots[p] = (h & TAG) | u64::from(pos);
        self.len += 1;
    }

    /// Removes the slot of `h` holding position `pos`; false when there is none.
    pub(crate) fn remove(&mut self, h: u64, pos: u32) -> bool {
        let Some(mut hole) = self.find_slot(h, |q| q == pos) else {
            return false;
        };
        // Backward-shift deletion: move each later slot of the cluster into the hole if
        // the hole lies on its probe path (between its home and where it sits).
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s == EMPTY {
                break;
            }
            let from_home = j.wrapping_sub(self.home(s)) & mask;
            let from_hole = j.wrapping_sub(hole) & mask;
            if from_home >= from_hole {
                self.slots[hole] = s;
                hole = j;
            }
        }
        self.slots[hole] = EMPTY;
        self.len -= 1;
        true
    }

    /// Changes the position stored under `h` from `old` to `new`.
    pub(crate) fn repoint(&mut self, h: u64, old: u32, new: u32) -> bool {
        match self.find_slot(h, |q| q == old) {
            Some(p) => {
                self.slots[p] = (self.slots[p] & TAG) | u64::from(new);
                true
            }
            None => false,
        }
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(16);
        let old = core::mem::replace(&mut self.slots, vec![EMPTY; size]);
        let mask = size - 1;
        for s in old.into_iter().filter(|&s| s != EMPTY) {
            let mut p = self.home(s);
            while self.slots[p] != EMPTY {
                p = (p + 1) & mask;
            }
            self.slots[p] = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// Against a model: after any sequence of inserts, removals and repoints, every
        /// stored (hash, position) pair is found and nothing else is. Hashes are drawn
        /// from a small set with few distinct homes, so clusters, wrap-around and
        /// equal tags are the common case.
        #[test]
        fn agrees_with_a_model(ops in prop::collection::vec((0u8..3, 0u64..40, 0u32..64), 1..400)) {
            let mut ix = Index::default();
            let mut model: HashMap<u32, u64> = HashMap::new(); // position -> hash
            let hash = |k: u64| (k % 7) << 60 | (k % 5) << 32 | k;
            for (op, k, pos) in ops {
                let h = hash(k);
                match op {
                    0 if !model.contains_key(&pos) => {
                        ix.insert(h, pos);
                        model.insert(pos, h);
                    }
                    1 => {
                        let same_tag = model.get(&pos).is_some_and(|&m| m & TAG == h & TAG);
                        prop_assert_eq!(ix.remove(h, pos), same_tag);
                        if same_tag {
                            model.remove(&pos);
                        }
                    }
                    2 => {
                        let new = pos + 64;
                        if model.get(&pos).is_some_and(|&m| m & TAG == h & TAG) && !model.contains_key(&new) {
                            prop_assert!(ix.repoint(h, pos, new));
                            let m = model.remove(&pos).unwrap();
                            model.insert(new, m);
                        }
                    }
                    _ => {}
                }
                prop_assert_eq!(ix.len, model.len());
                prop_assert!(ix.len * 2 <= ix.capacity());
                for (&p, &m) in &model {
                    prop_assert_eq!(ix.find(m, |q| q == p), Some(p));
                }
                for p in 0..128u32 {
                    if !model.contains_key(&p) {
                        prop_assert_eq!(ix.find(hash(u64::from(p) % 40), |q| q == p), None);
                    }
                }
            }
        }
    }

    #[test]
    fn first_slot_of_an_empty_index_is_empty() {
        let ix = Index::default();
        assert_eq!(ix.first_slot(42), EMPTY);
        assert_eq!(ix.find(42, |_| true), None);
    }
}
