//! Weighted Maglev consistent hashing: the lookup table that assigns new
//! flows (datagrams that carry no routable Connection ID yet) to backends.
//!
//! Every balancer instance builds its table independently from the same
//! backend set; because the construction below is a pure, platform-independent
//! function of `(backend keys, weights, table size)`, all instances produce
//! bit-identical tables and therefore agree on where a new flow goes, without
//! coordinating.
//!
//! # Algorithm
//!
//! This is the table population of Eisenbud et al., *"Maglev: A Fast and
//! Reliable Software Network Load Balancer"*, NSDI 2016, §3.4, extended with
//! weights.
//!
//! 1. **Permutations.** The table has `M` slots, `M` prime. Each backend `i`
//!    derives two 64-bit hashes `h1`, `h2` from its stable key (see
//!    [Key hashing](#key-hashing)) and sets
//!    `offset = h1 mod M` and `skip = (h2 mod (M − 1)) + 1`. Its preference
//!    list is `permutation[i][j] = (offset + j·skip) mod M` for
//!    `j = 0, 1, …, M − 1`; since `M` is prime and `1 ≤ skip < M`, this visits
//!    every slot exactly once.
//! 2. **Population.** Backends take *turns*. On its turn a backend walks
//!    forward along its own permutation from where it stopped last time and
//!    claims the first slot that is still empty. Population stops when all
//!    `M` slots are claimed.
//! 3. **Lookup.** A flow with hash `h` goes to the backend in slot `h mod M`:
//!    one division and one load, O(1).
//!
//! # Weights
//!
//! The paper's population gives every backend one turn per round. Here the
//! turns are scheduled in *virtual time* instead (stride scheduling / WFQ
//! finish times): backend `i` with weight `wᵢ > 0` takes its `j`-th turn
//! (`j = 1, 2, …`) at virtual time `j / wᵢ`, and turns are executed in
//! increasing virtual time. A backend of weight 3 therefore takes three turns
//! for every turn of a backend of weight 1, interleaved as evenly as possible.
//! Ties (equal virtual times) are broken by a canonical rank — the order of
//! `(h1, h2, key)` — so the result never depends on the order of the slice
//! passed in. Times are compared exactly (`j₁·w₂` vs `j₂·w₁` in integers), no
//! floating point is involved.
//!
//! Consequences:
//!
//! * With **equal weights** every backend's `j`-th turn happens at the same
//!   virtual time, so this is exactly the paper's round-robin population
//!   (with the canonical rank as the round order).
//! * **Only ratios matter**: weights `1:2:3` and `10:20:30` build identical
//!   tables.
//! * **Shares are exact up to rounding**: every turn claims exactly one slot,
//!   so with `N` eligible backends and total weight `W`, backend `i` owns
//!   between `M·wᵢ/W − 1` and `M·wᵢ/W + N·wᵢ/W` slots — independently of how
//!   the hashes fall. With equal weights, slot counts differ by at most one.
//! * **Weight 0 means "not eligible"**: such backends get no slots (they do not
//!   take turns). A positive weight that is tiny relative to the others may
//!   also round to zero slots.
//! * Build time is O(N log N + M log N) for the scheduling plus the
//!   permutation walks, expected O(M log M) in total (the paper's bound); for
//!   `M = 65 537` and a thousand backends this is a few milliseconds.
//!
//! # Eligibility
//!
//! The caller passes the backends that may receive *new* flows — healthy and
//! not draining — with a positive weight; any backend in the slice can
//! instead be excluded by giving it weight 0. Either way, [`MaglevTable::lookup`]
//! returns indices into the slice given to [`MaglevTable::new`], so callers can
//! keep one slice of all backends and express eligibility through weights.
//! Existing flows are pinned by their Connection ID, not by this table, so
//! rebuilding the table after a health change only affects where *new* flows
//! land.
//!
//! # Guarantees
//!
//! * **Determinism**: identical for identical inputs on every platform and
//!   every instance, and independent of the slice order (after mapping
//!   indices back to keys).
//! * **Balance**: see the share bounds above. For equal weights, each backend
//!   owns `⌊M/N⌋` or `⌈M/N⌉` slots, i.e. the imbalance is at most `N/M`
//!   relative (≈ 1.5 % for `N = 1000`, `M = 65 537`). Choose `M ≥ 100·N`.
//! * **Minimal disruption** (near-minimal, as in the paper): when a backend
//!   is removed, all of its slots move, plus a small fraction of the other
//!   slots; when one is added, it takes ≈ `1/(N+1)` of the slots, again plus
//!   a small extra churn among the others; changing one weight moves about as
//!   many slots as the change in its share. Maglev trades this extra churn for
//!   its balance and does not guarantee that it is zero. Measured with
//!   `M = 65 537` and equal weights: removing one of 3, 4, 5 or 10 backends
//!   reassigns at most 0.02 %, 0.10 %, 0.15 % or 0.52 % of the slots the
//!   removed backend did not own (worst case over which one is removed), and
//!   about 0.5–0.6 % for 100 or 1000 backends.
//!
//! # Key hashing
//!
//! The backend key hashes are fixed here and deliberately not taken from a
//! configurable hasher: `s = FNV-1a-64(key)` (offset basis
//! `0xcbf29ce484222325`, prime `0x100000001b3`), then `h1` and `h2` are the
//! first two outputs of a SplitMix64 generator seeded with `s` (increment
//! `0x9e3779b97f4a7c15`, finalizer constants `0xbf58476d1ce4e5b9` and
//! `0x94d049bb133111eb`). Changing any of this changes every table, so all
//! balancer instances of one deployment must run compatible versions. The
//! flow hash passed to [`MaglevTable::lookup`] is the caller's concern; it must
//! likewise be computed identically on every instance.
//!
//! # Example
//!
//! ```
//! use cidlb_core::maglev::{MaglevBackend, MaglevTable, DEFAULT_TABLE_SIZE};
//!
//! let backends = [
//!     MaglevBackend::new(b"backend-a", 1),
//!     MaglevBackend::new(b"backend-b", 2), // twice the share of backend-a
//!     MaglevBackend::new(b"backend-c", 0), // draining: gets no new flows
//! ];
//! let table = MaglevTable::new(&backends, DEFAULT_TABLE_SIZE)?;
//!
//! let flow_hash: u64 = 0x1234_5678_9abc_def0; // from the flow's 5-tuple etc.
//! let index = table.lookup(flow_hash).expect("there are eligible backends");
//! assert!(index == 0 || index == 1);
//!
//! let slots = table.slots_per_backend();
//! assert_eq!(slots.iter().sum::<usize>(), DEFAULT_TABLE_SIZE);
//! assert_eq!(slots[2], 0);
//! assert!(slots[1].abs_diff(2 * slots[0]) <= 3);
//!
//! // No eligible backend: the table is empty and routes nothing.
//! let none = MaglevTable::new(&[MaglevBackend::new(b"x", 0)], DEFAULT_TABLE_SIZE)?;
//! assert!(none.is_empty());
//! assert_eq!(none.lookup(flow_hash), None);
//! # Ok::<(), cidlb_core::maglev::MaglevError>(())
//! ```

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt;

/// The default number of slots, `M = 65 537` (a prime, as the algorithm
/// requires). Good for up to ~650 equally weighted backends at ≤ 1 %
/// imbalance (`M ≥ 100·N`).
pub const DEFAULT_TABLE_SIZE: usize = 65_537;

/// The largest accepted table size (`2^24` slots, 32 MiB of entries).
///
/// Bounds memory and keeps the internal arithmetic in 32 bits.
pub const MAX_TABLE_SIZE: usize = 1 << 24;

/// The largest accepted length of the backend slice given to
/// [`MaglevTable::new`] (entries store slice indices as `u16`, and one value
/// is reserved internally).
pub const MAX_BACKENDS: usize = u16::MAX as usize;

/// Marks a slot not yet claimed during population. Never present in a built,
/// non-empty table.
const EMPTY: u16 = u16::MAX;

/// One backend as seen by the Maglev table: a stable name and a weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaglevBackend<'a> {
    /// Stable name of the backend, identical on every balancer instance
    /// (for example its configured id or `address:port`). Only the bytes
    /// matter. Keys of backends with a positive weight must be distinct.
    pub key: &'a [u8],
    /// Relative share of new flows. `0` means "not eligible" (unhealthy or
    /// draining): the backend gets no slots. Only ratios between weights
    /// matter.
    pub weight: u32,
}

impl<'a> MaglevBackend<'a> {
    /// Creates a backend description from its stable key and weight.
    pub const fn new(key: &'a [u8], weight: u32) -> Self {
        Self { key, weight }
    }
}

/// Why a [`MaglevTable`] could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MaglevError {
    /// The table size is not a prime number (this includes 0 and 1).
    TableSizeNotPrime {
        /// The rejected table size.
        table_size: usize,
    },
    /// The table size exceeds [`MAX_TABLE_SIZE`].
    TableSizeTooLarge {
        /// The rejected table size.
        table_size: usize,
    },
    /// The table must have more slots than there are eligible backends.
    TableSizeTooSmall {
        /// The rejected table size.
        table_size: usize,
        /// Number of backends with a positive weight.
        eligible: usize,
    },
    /// The backend slice is longer than [`MAX_BACKENDS`].
    TooManyBackends {
        /// Length of the rejected slice.
        backends: usize,
    },
    /// Two backends with a positive weight have the same key; they would have
    /// identical permutations, and slot ownership would depend on slice order.
    DuplicateKey {
        /// Smaller of the two slice indices.
        first: usize,
        /// Larger of the two slice indices.
        second: usize,
    },
    /// [`MaglevTable::new_unless`] was told to stop.
    Cancelled,
}

impl fmt::Display for MaglevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::TableSizeNotPrime { table_size } => {
                write!(f, "Maglev table size {table_size} is not prime")
            }
            Self::TableSizeTooLarge { table_size } => write!(
                f,
                "Maglev table size {table_size} exceeds the maximum of {MAX_TABLE_SIZE}"
            ),
            Self::TableSizeTooSmall {
                table_size,
                eligible,
            } => write!(
                f,
                "Maglev table size {table_size} must exceed the number of eligible backends ({eligible})"
            ),
            Self::TooManyBackends { backends } => write!(
                f,
                "{backends} backends given to the Maglev table, at most {MAX_BACKENDS} are supported"
            ),
            Self::DuplicateKey { first, second } => write!(
                f,
                "Maglev backends {first} and {second} have the same key"
            ),
            Self::Cancelled => f.write_str("the Maglev table build was cancelled"),
        }
    }
}

impl std::error::Error for MaglevError {}

/// A populated Maglev lookup table mapping flow hashes to backends.
///
/// Immutable once built: to react to a backend-set or weight change, build a
/// new table and swap it in (for example behind an `Arc`). The table is
/// `Send + Sync` and cheap to query from many threads.
///
/// See the [module documentation](self) for the algorithm and its guarantees.
#[derive(Clone, PartialEq, Eq)]
pub struct MaglevTable {
    /// `entries[slot]` is the index, in the slice given to [`Self::new`], of
    /// the backend owning `slot`. Either empty (no eligible backend) or
    /// exactly `table_size` long and fully populated.
    entries: Box<[u16]>,
    /// The configured (prime) table size `M`, kept even when `entries` is
    /// empty.
    table_size: usize,
    /// Length of the slice given to [`Self::new`].
    backend_count: usize,
}

impl MaglevTable {
    /// Builds the table for `backends` with `table_size` slots.
    ///
    /// Backends with weight 0 get no slots; the others get slots in
    /// proportion to their weights (see the [module documentation](self)).
    /// Indices returned by [`Self::lookup`] refer to positions in `backends`.
    /// If no backend has a positive weight, the result is an empty table whose
    /// lookups return `None`.
    ///
    /// Use [`DEFAULT_TABLE_SIZE`] unless there are more than a few hundred
    /// backends; then pick a prime `table_size ≥ 100 ×` their number.
    ///
    /// # Errors
    ///
    /// * [`MaglevError::TableSizeTooLarge`] if `table_size > MAX_TABLE_SIZE`;
    /// * [`MaglevError::TableSizeNotPrime`] if `table_size` is not prime;
    /// * [`MaglevError::TooManyBackends`] if `backends.len() > MAX_BACKENDS`;
    /// * [`MaglevError::TableSizeTooSmall`] if `table_size` does not exceed
    ///   the number of backends with a positive weight;
    /// * [`MaglevError::DuplicateKey`] if two backends with a positive weight
    ///   share a key.
    pub fn new(backends: &[MaglevBackend<'_>], table_size: usize) -> Result<Self, MaglevError> {
        Self::new_unless(backends, table_size, &|| false)
    }

    /// [`Self::new`] that gives up with [`MaglevError::Cancelled`] as soon as `stop`
    /// returns true (asked every 65,536 slots: a table of 2^24 slots over 65,535
    /// backends takes seconds to build).
    pub fn new_unless(
        backends: &[MaglevBackend<'_>],
        table_size: usize,
        stop: &dyn Fn() -> bool,
    ) -> Result<Self, MaglevError> {
        if table_size > MAX_TABLE_SIZE {
            return Err(MaglevError::TableSizeTooLarge { table_size });
        }
        if !is_prime(table_size) {
            return Err(MaglevError::TableSizeNotPrime { table_size });
        }
        if backends.len() > MAX_BACKENDS {
            return Err(MaglevError::TooManyBackends {
                backends: backends.len(),
            });
        }

        let mut eligible: Vec<Candidate<'_>> = backends
            .iter()
            .enumerate()
            .filter(|(_, backend)| backend.weight > 0)
            .map(|(index, backend)| {
                let (h1, h2) = key_hashes(backend.key);
                Candidate {
                    // Lossless: `index < backends.len() <= MAX_BACKENDS`.
                    index: index as u16,
                    key: backend.key,
                    weight: backend.weight,
                    h1,
                    h2,
                }
            })
            .collect();

        if eligible.len() >= table_size {
            return Err(MaglevError::TableSizeTooSmall {
                table_size,
                eligible: eligible.len(),
            });
        }
        if eligible.is_empty() {
            return Ok(Self {
                entries: Box::default(),
                table_size,
                backend_count: backends.len(),
            });
        }

        // Canonical rank: independent of the slice order. Equal keys have
        // equal hashes, so duplicates end up adjacent.
        eligible.sort_unstable_by(|a, b| (a.h1, a.h2, a.key).cmp(&(b.h1, b.h2, b.key)));
        if let Some(pair) = eligible.windows(2).find(|pair| pair[0].key == pair[1].key) {
            let (a, b) = (usize::from(pair[0].index), usize::from(pair[1].index));
            return Err(MaglevError::DuplicateKey {
                first: a.min(b),
                second: a.max(b),
            });
        }

        let entries = populate(&eligible, table_size, stop).ok_or(MaglevError::Cancelled)?;
        Ok(Self {
            entries: entries.into_boxed_slice(),
            table_size,
            backend_count: backends.len(),
        })
    }

    /// Returns the index (into the slice given to [`Self::new`]) of the
    /// backend that owns `hash`, i.e. of the owner of slot `hash mod M`, or
    /// `None` if the table is empty (no eligible backend).
    ///
    /// `hash` should be a well-mixed hash of the flow, computed identically on
    /// every balancer instance.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        // The remainder is < len <= MAX_TABLE_SIZE, so the cast is lossless.
        let slot = (hash % self.entries.len() as u64) as usize;
        Some(usize::from(self.entries[slot]))
    }

    /// Number of populated slots: the table size `M`, or 0 if there is no
    /// eligible backend.
    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` if no backend was eligible, in which case [`Self::lookup`]
    /// always returns `None`.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The table size `M` the table was built with (also when it is empty).
    #[inline]
    pub fn table_size(&self) -> usize {
        self.table_size
    }

    /// Length of the backend slice the table was built from.
    #[inline]
    pub fn backend_count(&self) -> usize {
        self.backend_count
    }

    /// Number of slots owned by each backend, indexed like the slice given to
    /// [`Self::new`] (weight-0 backends own 0 slots). Sums to [`Self::len`].
    ///
    /// Intended for diagnostics and tests; O(M).
    pub fn slots_per_backend(&self) -> Vec<usize> {
        let mut counts = vec![0; self.backend_count];
        for &entry in self.entries.iter() {
            counts[usize::from(entry)] += 1;
        }
        counts
    }
}

impl fmt::Debug for MaglevTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The entries themselves (up to millions) are deliberately omitted.
        f.debug_struct("MaglevTable")
            .field("table_size", &self.table_size)
            .field("backend_count", &self.backend_count)
            .field("populated", &!self.entries.is_empty())
            .finish_non_exhaustive()
    }
}

/// An eligible backend during construction.
struct Candidate<'a> {
    /// Index in the caller's slice.
    index: u16,
    key: &'a [u8],
    weight: u32,
    h1: u64,
    h2: u64,
}

/// A backend's next turn in the population schedule.
///
/// Ordered by virtual time `claim / weight`, then by canonical `rank`; the
/// smallest turn goes first.
#[derive(Clone, Copy)]
struct Turn {
    /// 1-based number of the slot this turn claims for the backend.
    claim: u64,
    weight: u32,
    /// Position in the canonical order (unique per backend).
    rank: u32,
}

impl Ord for Turn {
    fn cmp(&self, other: &Self) -> Ordering {
        // claim/self.weight vs other.claim/other.weight, exactly. The
        // products are < 2^24 · 2^32, far below u128's range.
        let lhs = u128::from(self.claim) * u128::from(other.weight);
        let rhs = u128::from(other.claim) * u128::from(self.weight);
        lhs.cmp(&rhs).then(self.rank.cmp(&other.rank))
    }
}

impl PartialOrd for Turn {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Turn {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Turn {}

/// Fills all `table_size` slots. `eligible` is non-empty, in canonical order,
/// shorter than `table_size`; `table_size` is prime and `<= MAX_TABLE_SIZE`.
/// `None` when `stop` says so.
fn populate(
    eligible: &[Candidate<'_>],
    table_size: usize,
    stop: &dyn Fn() -> bool,
) -> Option<Vec<u16>> {
    // Lossless: table_size <= MAX_TABLE_SIZE = 2^24.
    let m = table_size as u32;
    // Per backend: next position in its permutation, and its skip.
    let mut cursors: Vec<(u32, u32)> = eligible
        .iter()
        .map(|c| {
            let offset = (c.h1 % u64::from(m)) as u32;
            let skip = (c.h2 % u64::from(m - 1)) as u32 + 1;
            (offset, skip)
        })
        .collect();

    let mut schedule: BinaryHeap<Reverse<Turn>> = eligible
        .iter()
        .enumerate()
        .map(|(rank, c)| {
            Reverse(Turn {
                claim: 1,
                weight: c.weight,
                // Lossless: fewer eligible backends than MAX_TABLE_SIZE.
                rank: rank as u32,
            })
        })
        .collect();

    let mut entries = vec![EMPTY; table_size];
    let mut filled = 0;
    while filled < table_size {
        if filled % (1 << 16) == 0 && stop() {
            return None;
        }
        let Some(mut top) = schedule.peek_mut() else {
            // Unreachable: every popped turn is replaced by the next one.
            break;
        };
        let turn = &mut top.0;
        let rank = turn.rank as usize;
        let (pos, skip) = &mut cursors[rank];
        // Walk the permutation to the next empty slot. Terminates: slots never
        // become empty again, so every slot this backend skipped so far is
        // full, and since its permutation covers all slots and the table is
        // not full, an empty slot lies ahead.
        loop {
            let slot = *pos as usize;
            *pos += *skip; // < 2·m <= 2^25, no overflow
            if *pos >= m {
                *pos -= m;
            }
            if entries[slot] == EMPTY {
                entries[slot] = eligible[rank].index;
                break;
            }
        }
        filled += 1;
        // Reschedule this backend; dropping `top` restores the heap order.
        turn.claim += 1;
    }
    debug_assert!(entries.iter().all(|&e| e != EMPTY));
    Some(entries)
}

/// The two permutation hashes `(h1, h2)` of a backend key: the first two
/// outputs of SplitMix64 seeded with FNV-1a-64 of the key. Fixed forever; see
/// the module documentation.
fn key_hashes(key: &[u8]) -> (u64, u64) {
    let mut state = fnv1a64(key);
    let h1 = splitmix64_next(&mut state);
    let h2 = splitmix64_next(&mut state);
    (h1, h2)
}

/// 64-bit FNV-1a.
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// One step of SplitMix64 (Steele, Lea, Flood; Vigna's reference constants).
fn splitmix64_next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Deterministic trial division; `n <= MAX_TABLE_SIZE`, so at most ~1400
/// iterations.
fn is_prime(n: usize) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    let mut d = 5;
    while d * d <= n {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: usize = DEFAULT_TABLE_SIZE;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("backend-{i}")).collect()
    }

    fn equal(keys: &[String]) -> Vec<MaglevBackend<'_>> {
        keys.iter()
            .map(|k| MaglevBackend::new(k.as_bytes(), 1))
            .collect()
    }

    fn build(backends: &[MaglevBackend<'_>]) -> MaglevTable {
        MaglevTable::new(backends, M).expect("valid table")
    }

    /// The key owning each slot.
    fn owners<'a>(table: &MaglevTable, backends: &[MaglevBackend<'a>]) -> Vec<&'a [u8]> {
        table
            .entries
            .iter()
            .map(|&e| backends[usize::from(e)].key)
            .collect()
    }

    /// Deterministic pseudo-random flow hashes.
    fn flow_hashes(seed: u64, n: usize) -> Vec<u64> {
        let mut state = seed;
        (0..n).map(|_| splitmix64_next(&mut state)).collect()
    }

    /// Deterministic Fisher–Yates shuffle.
    fn shuffle<T>(items: &mut [T], seed: u64) {
        let mut state = seed;
        for i in (1..items.len()).rev() {
            let j = (splitmix64_next(&mut state) % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }

    #[test]
    fn hash_functions_match_reference_vectors() {
        // FNV-1a-64 vectors from the FNV reference test suite.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        // SplitMix64 seeded with 0 (Vigna's reference implementation).
        let mut state = 0;
        assert_eq!(splitmix64_next(&mut state), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64_next(&mut state), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(splitmix64_next(&mut state), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn table_layout_is_pinned() {
        // A change here changes routing on every instance: it is a
        // compatibility break between balancer versions, not a test fix.
        let backends = [
            MaglevBackend::new(b"alpha", 1),
            MaglevBackend::new(b"beta", 2),
            MaglevBackend::new(b"gamma", 0),
            MaglevBackend::new(b"delta", 1),
        ];
        assert_eq!(
            key_hashes(b"alpha"),
            (0x1253_c85b_0c81_7711, 0x915f_970c_1d56_b87e)
        );
        let table = MaglevTable::new(&backends, 17).unwrap();
        assert_eq!(
            &*table.entries,
            &[1, 3, 0, 3, 0, 1, 0, 1, 1, 0, 3, 1, 1, 3, 1, 1, 1][..]
        );
    }

    #[test]
    fn is_prime_agrees_with_sieve() {
        let limit = 10_000;
        let mut composite = vec![false; limit];
        for i in 2..limit {
            if !composite[i] {
                for j in (i * i..limit).step_by(i) {
                    composite[j] = true;
                }
            }
        }
        for (n, &c) in composite.iter().enumerate() {
            assert_eq!(is_prime(n), n >= 2 && !c, "n = {n}");
        }
        assert!(is_prime(DEFAULT_TABLE_SIZE));
        assert!(is_prime(655_373));
        assert!(is_prime(16_777_213)); // largest prime below 2^24
        assert!(!is_prime(MAX_TABLE_SIZE));
        assert!(!is_prime(65_537 * 257));
    }

    #[test]
    fn deterministic_for_identical_input() {
        let keys = names(7);
        let backends: Vec<_> = keys
            .iter()
            .zip([1, 3, 0, 2, 5, 1, 4])
            .map(|(k, w)| MaglevBackend::new(k.as_bytes(), w))
            .collect();
        let a = build(&backends);
        let b = build(&backends);
        assert_eq!(a, b);
        assert_eq!(a.len(), M);
    }

    #[test]
    fn slice_order_does_not_change_slot_owners() {
        let keys = names(12);
        let backends: Vec<_> = keys
            .iter()
            .zip([1, 3, 0, 2, 5, 1, 4, 1, 1, 0, 2, 7])
            .map(|(k, w)| MaglevBackend::new(k.as_bytes(), w))
            .collect();
        let reference = owners(&build(&backends), &backends);

        let mut reversed = backends.clone();
        reversed.reverse();
        assert_eq!(owners(&build(&reversed), &reversed), reference);

        for seed in 1..=5 {
            let mut shuffled = backends.clone();
            shuffle(&mut shuffled, seed);
            assert_eq!(owners(&build(&shuffled), &shuffled), reference);
        }
    }

    #[test]
    fn equal_weights_match_the_papers_round_robin_population() {
        // Pseudocode 1 of the paper, run over the canonical order.
        let keys = names(9);
        let backends = equal(&keys);
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by_key(|&i| {
            let (h1, h2) = key_hashes(keys[i].as_bytes());
            (h1, h2, keys[i].clone())
        });
        for m in [11, 101, 1009, M] {
            let mut next: Vec<usize> = vec![0; keys.len()];
            let perm = |i: usize, j: usize| {
                let (h1, h2) = key_hashes(keys[i].as_bytes());
                let offset = (h1 % m as u64) as usize;
                let skip = (h2 % (m as u64 - 1)) as usize + 1;
                (offset + j * skip) % m
            };
            let mut expected: Vec<Option<usize>> = vec![None; m];
            let mut filled = 0;
            'outer: loop {
                for &i in &order {
                    let mut c = perm(i, next[i]);
                    while expected[c].is_some() {
                        next[i] += 1;
                        c = perm(i, next[i]);
                    }
                    expected[c] = Some(i);
                    next[i] += 1;
                    filled += 1;
                    if filled == m {
                        break 'outer;
                    }
                }
            }
            let table = MaglevTable::new(&backends, m).unwrap();
            let got: Vec<Option<usize>> = table.entries.iter().map(|&e| Some(e.into())).collect();
            assert_eq!(got, expected, "m = {m}");
        }
    }

    #[test]
    fn equal_weights_are_balanced() {
        let keys = names(5);
        let table = build(&equal(&keys));
        let slots = table.slots_per_backend();
        eprintln!("5 equal backends, M = {M}: slots {slots:?}");
        assert_eq!(slots.iter().sum::<usize>(), M);
        let ideal = M as f64 / 5.0;
        for &s in &slots {
            // Required: within ±2 % of M/5. Guaranteed: within one slot.
            assert!((s as f64 - ideal).abs() <= 0.02 * ideal, "{slots:?}");
            assert!(s == M / 5 || s == M / 5 + 1, "{slots:?}");
        }
    }

    #[test]
    fn weights_give_proportional_shares() {
        let keys = names(3);
        let backends: Vec<_> = keys
            .iter()
            .zip([1, 2, 3])
            .map(|(k, w)| MaglevBackend::new(k.as_bytes(), w))
            .collect();
        let slots = build(&backends).slots_per_backend();
        eprintln!("weights 1:2:3, M = {M}: slots {slots:?}");
        for (i, &s) in slots.iter().enumerate() {
            let expected = M as f64 * (i + 1) as f64 / 6.0;
            // Tolerance: share within 0.1 percentage points of w/W (≈ 66
            // slots); the construction guarantees within N = 3 slots.
            assert!(
                (s as f64 / M as f64 - (i + 1) as f64 / 6.0).abs() <= 0.001,
                "{slots:?}"
            );
            assert!((s as f64 - expected).abs() <= 3.0, "{slots:?}");
        }
    }

    #[test]
    fn weighted_share_bound_holds_for_skewed_weights() {
        let keys = names(40);
        let weights: Vec<u32> = (0..40u32).map(|i| 1 + i * i * 37 % 1000).collect();
        let backends: Vec<_> = keys
            .iter()
            .zip(&weights)
            .map(|(k, &w)| MaglevBackend::new(k.as_bytes(), w))
            .collect();
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        for m in [1009, M] {
            let slots = MaglevTable::new(&backends, m).unwrap().slots_per_backend();
            for (i, &s) in slots.iter().enumerate() {
                let ideal = m as f64 * f64::from(weights[i]) / total as f64;
                let over = 40.0 * f64::from(weights[i]) / total as f64;
                assert!(
                    s as f64 >= ideal - 1.0 && s as f64 <= ideal + over,
                    "m = {m}, backend {i}: {s} slots, ideal {ideal}"
                );
            }
        }
    }

    #[test]
    fn only_weight_ratios_matter() {
        let keys = names(4);
        let make = |scale: u32| -> Vec<MaglevBackend<'_>> {
            keys.iter()
                .zip([1, 2, 3, 5])
                .map(|(k, w)| MaglevBackend::new(k.as_bytes(), w * scale))
                .collect()
        };
        let base = build(&make(1));
        assert_eq!(build(&make(10)), base);
        assert_eq!(build(&make(1_000_000)), base);
    }

    /// Fraction of slots whose owner differs between `before` and `after`,
    /// among the slots that `skip` did not own in `before` (pass `None` to
    /// count over all slots).
    fn changed(before: &[&[u8]], after: &[&[u8]], skip: Option<&[u8]>) -> (usize, usize) {
        let mut considered = 0;
        let mut moved = 0;
        for (b, a) in before.iter().zip(after) {
            if Some(*b) == skip {
                continue;
            }
            considered += 1;
            if a != b {
                moved += 1;
            }
        }
        (moved, considered)
    }

    fn moved_flows(
        before: (&MaglevTable, &[MaglevBackend<'_>]),
        after: (&MaglevTable, &[MaglevBackend<'_>]),
        flows: &[u64],
    ) -> usize {
        flows
            .iter()
            .filter(|&&h| {
                let b = before.1[before.0.lookup(h).unwrap()].key;
                let a = after.1[after.0.lookup(h).unwrap()].key;
                a != b
            })
            .count()
    }

    #[test]
    fn removing_a_backend_disrupts_little_else() {
        let flows = flow_hashes(0xf10e, 100_000);
        for n in [3, 4, 5, 10] {
            let keys = names(n);
            let full = equal(&keys);
            let full_table = build(&full);
            let full_owners = owners(&full_table, &full);
            let mut worst_extra: f64 = 0.0;
            for removed in 0..n {
                let mut rest = full.clone();
                rest.remove(removed);
                let rest_table = build(&rest);
                let rest_owners = owners(&rest_table, &rest);
                let (extra, kept) = changed(&full_owners, &rest_owners, Some(full[removed].key));
                let extra = extra as f64 / kept as f64;
                worst_extra = worst_extra.max(extra);
                let moved = moved_flows((&full_table, &full), (&rest_table, &rest), &flows);
                eprintln!(
                    "remove 1 of {n}: {:.2} % of other slots changed owner; \
                     {moved} of {} flows moved ({:.2} %, ideal {:.2} %)",
                    100.0 * extra,
                    flows.len(),
                    100.0 * moved as f64 / flows.len() as f64,
                    100.0 / n as f64,
                );
                // Flows: the removed backend's share plus the extra churn.
                let moved = moved as f64 / flows.len() as f64;
                assert!(moved >= 1.0 / n as f64 - 0.01, "n = {n}");
                assert!(moved <= 1.0 / n as f64 + 0.02, "n = {n}");
            }
            // Measured at most 0.52 % (n = 10); allow 2 %.
            assert!(worst_extra <= 0.02, "n = {n}: {worst_extra}");
        }
    }

    #[test]
    fn adding_a_backend_takes_its_share_and_little_else() {
        let flows = flow_hashes(0xadd, 100_000);
        for n in [3, 4, 5, 10] {
            let keys = names(n + 1);
            let before = equal(&keys[..n]);
            let after = equal(&keys);
            let before_table = build(&before);
            let after_table = build(&after);
            let before_owners = owners(&before_table, &before);
            let after_owners = owners(&after_table, &after);
            let (moved, total) = changed(&before_owners, &after_owners, None);
            let moved = moved as f64 / total as f64;
            let newcomer = keys[n].as_bytes();
            let collateral = before_owners
                .iter()
                .zip(&after_owners)
                .filter(|(b, a)| b != a && **a != newcomer)
                .count() as f64
                / total as f64;
            let flows_moved = moved_flows((&before_table, &before), (&after_table, &after), &flows);
            eprintln!(
                "add 1 to {n}: {:.2} % of slots changed owner (ideal {:.2} %), \
                 {:.2} % between old backends; {flows_moved} of {} flows moved",
                100.0 * moved,
                100.0 / (n + 1) as f64,
                100.0 * collateral,
                flows.len(),
            );
            let ideal = 1.0 / (n + 1) as f64;
            assert!(moved >= ideal, "n = {n}");
            // Measured at most 0.29 % extra (n = 10); allow 2 %.
            assert!(moved <= ideal + 0.02, "n = {n}");
            assert!(collateral <= 0.02, "n = {n}");
            let flows_moved = flows_moved as f64 / flows.len() as f64;
            assert!((flows_moved - moved).abs() <= 0.01, "n = {n}");
        }
    }

    #[test]
    fn changing_a_weight_moves_about_the_share_difference() {
        let keys = names(5);
        let with = |w2: u32| -> Vec<MaglevBackend<'_>> {
            keys.iter()
                .enumerate()
                .map(|(i, k)| MaglevBackend::new(k.as_bytes(), if i == 2 { w2 } else { 2 }))
                .collect()
        };
        let base = with(2);
        let base_owners = owners(&build(&base), &base);
        for w2 in [1, 3, 4, 6] {
            let changed_set = with(w2);
            let changed_owners = owners(&build(&changed_set), &changed_set);
            let (moved, total) = changed(&base_owners, &changed_owners, None);
            let moved = moved as f64 / total as f64;
            let delta = (f64::from(w2) / f64::from(8 + w2) - 0.2).abs();
            eprintln!(
                "5 backends, weight of one 2 -> {w2}: {:.2} % of slots moved, share changed by {:.2} %",
                100.0 * moved,
                100.0 * delta
            );
            assert!(moved >= delta - 0.001 && moved <= delta + 0.02, "w2 = {w2}");
        }
    }

    #[test]
    fn zero_weight_backends_get_no_slots() {
        let keys = names(4);
        let backends: Vec<_> = keys
            .iter()
            .zip([0, 1, 0, 1])
            .map(|(k, w)| MaglevBackend::new(k.as_bytes(), w))
            .collect();
        let table = build(&backends);
        let slots = table.slots_per_backend();
        assert_eq!(slots.len(), 4);
        assert_eq!(slots[0], 0);
        assert_eq!(slots[2], 0);
        assert_eq!(slots[1] + slots[3], M);
        for h in flow_hashes(7, 1000) {
            let i = table.lookup(h).unwrap();
            assert!(i == 1 || i == 3);
        }
        // Zero-weight backends do not influence the eligible ones' slots.
        let only = [backends[1], backends[3]];
        assert_eq!(owners(&table, &backends), owners(&build(&only), &only));
        // Duplicate keys are allowed among ineligible backends.
        let dup = [
            MaglevBackend::new(b"same", 0),
            MaglevBackend::new(b"same", 1),
        ];
        assert_eq!(build(&dup).slots_per_backend(), vec![0, M]);
    }

    #[test]
    fn empty_or_all_zero_backend_set_routes_nothing() {
        let empty = build(&[]);
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert_eq!(empty.table_size(), M);
        assert_eq!(empty.lookup(0), None);
        assert_eq!(empty.lookup(u64::MAX), None);
        assert!(empty.slots_per_backend().is_empty());

        let zeros = [MaglevBackend::new(b"a", 0), MaglevBackend::new(b"b", 0)];
        let table = build(&zeros);
        assert!(table.is_empty());
        assert_eq!(table.lookup(42), None);
        assert_eq!(table.slots_per_backend(), vec![0, 0]);
        assert_eq!(table.backend_count(), 2);
    }

    #[test]
    fn single_backend_owns_everything() {
        let one = [MaglevBackend::new(b"solo", 5)];
        let table = build(&one);
        assert!(!table.is_empty());
        assert_eq!(table.len(), M);
        assert_eq!(table.slots_per_backend(), vec![M]);
        for h in flow_hashes(1, 1000).into_iter().chain([0, u64::MAX]) {
            assert_eq!(table.lookup(h), Some(0));
        }
        // The smallest legal table.
        let tiny = MaglevTable::new(&one, 2).unwrap();
        assert_eq!(tiny.slots_per_backend(), vec![2]);
    }

    #[test]
    fn lookup_uses_hash_modulo_table_size() {
        let keys = names(6);
        let table = build(&equal(&keys));
        for h in flow_hashes(3, 1000) {
            let slot = (h % M as u64) as usize;
            assert_eq!(table.lookup(h), Some(usize::from(table.entries[slot])));
            assert_eq!(table.lookup(slot as u64), table.lookup(h));
        }
    }

    #[test]
    fn invalid_parameters_are_rejected() {
        let one = [MaglevBackend::new(b"a", 1)];
        for size in [0, 1, 4, 9, 65_536, 65_535] {
            assert_eq!(
                MaglevTable::new(&one, size),
                Err(MaglevError::TableSizeNotPrime { table_size: size })
            );
        }
        assert_eq!(
            MaglevTable::new(&[], 0),
            Err(MaglevError::TableSizeNotPrime { table_size: 0 })
        );
        assert_eq!(
            MaglevTable::new(&one, 16_777_259), // prime, above 2^24
            Err(MaglevError::TableSizeTooLarge {
                table_size: 16_777_259
            })
        );
        assert_eq!(
            MaglevTable::new(&one, usize::MAX),
            Err(MaglevError::TableSizeTooLarge {
                table_size: usize::MAX
            })
        );

        let keys = names(3);
        let three = equal(&keys);
        assert_eq!(
            MaglevTable::new(&three, 3),
            Err(MaglevError::TableSizeTooSmall {
                table_size: 3,
                eligible: 3
            })
        );
        assert_eq!(
            MaglevTable::new(&three, 2),
            Err(MaglevError::TableSizeTooSmall {
                table_size: 2,
                eligible: 3
            })
        );
        assert!(MaglevTable::new(&three, 5).is_ok());
        // Ineligible backends do not count towards the minimum size.
        let mut mixed = three.clone();
        mixed[0].weight = 0;
        assert!(MaglevTable::new(&mixed, 3).is_ok());

        let dup = [
            MaglevBackend::new(b"x", 1),
            MaglevBackend::new(b"y", 1),
            MaglevBackend::new(b"x", 3),
        ];
        assert_eq!(
            MaglevTable::new(&dup, M),
            Err(MaglevError::DuplicateKey {
                first: 0,
                second: 2
            })
        );

        let many = vec![MaglevBackend::new(b"", 0); MAX_BACKENDS + 1];
        assert_eq!(
            MaglevTable::new(&many, M),
            Err(MaglevError::TooManyBackends {
                backends: MAX_BACKENDS + 1
            })
        );
        assert!(MaglevTable::new(&many[..MAX_BACKENDS], M)
            .unwrap()
            .is_empty());

        // Errors render as messages.
        assert!(MaglevError::TableSizeNotPrime { table_size: 4 }
            .to_string()
            .contains("not prime"));
    }

    #[test]
    fn last_slice_index_is_representable() {
        // The highest index a table can return is MAX_BACKENDS - 1.
        let mut backends = vec![MaglevBackend::new(b"", 0); MAX_BACKENDS];
        backends[MAX_BACKENDS - 1] = MaglevBackend::new(b"last", 1);
        let table = MaglevTable::new(&backends, 101).unwrap();
        assert_eq!(table.lookup(12_345), Some(MAX_BACKENDS - 1));
    }

    #[test]
    fn thousand_backends_build_and_balance() {
        let keys = names(1000);
        let backends = equal(&keys);
        let slots = build(&backends).slots_per_backend();
        let (min, max) = (*slots.iter().min().unwrap(), *slots.iter().max().unwrap());
        assert!(max - min <= 1, "min {min}, max {max}");
    }

    #[test]
    fn a_build_can_be_cancelled_and_otherwise_is_the_same() {
        let keys = names(100);
        let backends = equal(&keys);
        let asked = std::cell::Cell::new(0);
        // Told to stop at its second look: gives up mid-way.
        let r = MaglevTable::new_unless(&backends, 1_000_003, &|| {
            asked.set(asked.get() + 1);
            asked.get() > 1
        });
        assert_eq!(r, Err(MaglevError::Cancelled));
        assert_eq!(asked.get(), 2);
        let never = MaglevTable::new_unless(&backends, M, &|| false).unwrap();
        assert!(never == build(&backends));
    }

    /// 65,535 backends in the default table: every backend gets a slot or two, in
    /// linear-ish time (the reload of that many backends builds one).
    #[test]
    fn max_backends_in_the_default_table() {
        let keys = names(MAX_BACKENDS);
        let table = build(&equal(&keys));
        let slots = table.slots_per_backend();
        assert!(slots.iter().all(|&n| (1..=2).contains(&n)));
    }
}
