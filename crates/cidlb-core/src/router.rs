//! The router: one listener's routing state machine.
//!
//! Sans-IO and deterministic: datagrams, addresses and `now` go in, decisions come out;
//! no clock is read and no socket touched, so a simulation can replay it exactly.
//!
//! Call order (one router per listener, used from one thread at a time):
//!
//! 1. [`Router::route`] for each client-to-balancer datagram; forward according to the
//!    returned [`Verdict`] (for [`Verdict::Split`], read [`Router::split_parts`]).
//! 2. [`Router::handle_backend_datagram`] for each backend-to-client datagram before
//!    forwarding it: this is where CID bindings are learned from ServerHellos.
//! 3. [`Router::sweep`] now and then (e.g. every 100 ms) to expire idle entries; each
//!    call does bounded work.
//! 4. Backend changes ([`Router::set_backends`], [`Router::set_backend_state`],
//!    [`Router::set_backend_weight`]) at any time between calls.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cidlb_wire::{handshake, inspect, CidLength, Records};

use crate::backend::{Backend, BackendId, BackendState, ServerId};
use crate::decision::{
    decide_address, decide_cid, AddressDecision, BindingFacts, CidDecision, Decoded, FlowFacts,
    Lookups,
};
use crate::keys::{Binding, BindingSource, CidKey, Flow, FlowKey, SourceKey, TokenBucket};
use crate::maglev::{MaglevBackend, MaglevError, MaglevTable};
use crate::outcome::{Counters, DropReason, Event, RouteOutcome};
use crate::table::{BoundedTable, Entry, Inserted, Tick};

/// A CID format: reads routable CIDs (QUIC-LB, a server-ID prefix...). The hook for
/// stateless "encoded" routing; formats themselves live elsewhere.
pub trait CidFormat: Send + Sync + fmt::Debug {
    /// The CID's length when the format describes it in the CID itself (QUIC-LB's
    /// length self-description), else `None` (the listener's fixed length applies).
    fn cid_len(&self, at: &[u8]) -> Option<usize>;
    /// The server ID encoded in `cid`, or `None` when the CID does not decode (not
    /// routable, unknown configuration, wrong length).
    fn server_id(&self, cid: &[u8]) -> Option<ServerId>;
    /// The format as `Any`, for a data plane that needs the concrete format's parameters
    /// (the XDP plane rebuilds its decoding tables from them on a reload); `None` by
    /// default.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// How the listener knows CID lengths and whether CIDs are routable.
#[derive(Clone, Debug)]
pub struct CidRouting {
    /// Every CID has this length, unless the format says otherwise for a given CID.
    /// `None` means the length comes from the format only.
    pub fixed_len: Option<usize>,
    /// The CID format for encoded routing, if any.
    pub format: Option<Arc<dyn CidFormat>>,
}

impl CidRouting {
    /// Fixed-length CIDs, no format: learned routing only.
    pub fn fixed(len: usize) -> Self {
        CidRouting {
            fixed_len: Some(len),
            format: None,
        }
    }
}

impl CidLength for &CidRouting {
    #[inline]
    fn cid_len(&self, at: &[u8]) -> Option<usize> {
        if let Some(f) = &self.format {
            if let Some(n) = f.cid_len(at) {
                return Some(n);
            }
        }
        self.fixed_len
    }
}

/// What to do with a datagram whose records carry different CIDs (possible in
/// DTLS 1.2; RFC 9147 forbids it in DTLS 1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MultiCidPolicy {
    /// Route the whole datagram by the first CID (counted).
    First,
    /// Split into one datagram per backend; records without CID go with the first CID.
    Split,
    /// Drop the datagram (counted).
    Drop,
}

/// Router settings.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// CID lengths and format.
    pub cid: CidRouting,
    /// Mixed-CID datagrams.
    pub multi_cid: MultiCidPolicy,
    /// Route by CID (true, the point of cidlb) or by client address only (false: what
    /// an address-hashing balancer does; for comparisons and for non-CID traffic).
    pub route_by_cid: bool,
    /// A flow (client address → backend) dies after this long without traffic.
    pub flow_idle: Duration,
    /// A CID binding dies after this long without traffic (hours: devices sleep).
    pub binding_idle: Duration,
    /// Most flows kept.
    pub max_flows: usize,
    /// Most CID bindings kept.
    pub max_bindings: usize,
    /// Maglev table size (a prime, larger than 100× the backend count for balance).
    pub maglev_table_size: usize,
    /// Seed of the Maglev flow/CID hash. Every balancer instance in front of the same
    /// backends must use the same value so they agree on new flows.
    pub hash_seed: u64,
    /// Per-instance secret keying the tables' hash and eviction sampling, so that an
    /// attacker cannot aim collisions or evictions. Use random bytes.
    pub secret: [u64; 4],
    /// Optional limit on NEW flows per source (IPv4 /32, IPv6 /64): a token bucket of
    /// `(rate per second, burst)`. Only datagrams that would create a flow spend a
    /// token (a CID-less datagram from a new address, or an unknown CID from an address
    /// without flow); datagrams of existing flows and datagrams whose CID decodes to a
    /// live backend or matches a binding are never limited. Over the limit:
    /// [`DropReason::SourceRateLimited`]. A burst of 0 refuses every new flow. `None`
    /// (default): off. The limiter's table holds at most `max_flows` sources.
    pub new_flows_per_source: Option<(u32, u32)>,
    /// The balancer's own listener addresses: datagrams from them are dropped
    /// ([`DropReason::FromOwnAddress`]). Default: none.
    pub own_addresses: crate::own::OwnAddresses,
    /// Queue a [`Notice`](crate::Notice) for each notable event, for the data plane to
    /// log at most this many per second per listener ([`Router::take_notices`]); 0
    /// (default): off.
    pub notices: u32,
}

impl RouterConfig {
    /// Defaults: flows idle 10 min, bindings idle 24 h, 1M of each, Maglev 65537.
    pub fn new(cid: CidRouting, secret: [u64; 4]) -> Self {
        RouterConfig {
            cid,
            multi_cid: MultiCidPolicy::First,
            route_by_cid: true,
            flow_idle: Duration::from_secs(600),
            binding_idle: Duration::from_secs(24 * 3600),
            max_flows: 1 << 20,
            max_bindings: 1 << 20,
            maglev_table_size: crate::maglev::DEFAULT_TABLE_SIZE,
            hash_seed: 0,
            secret,
            new_flows_per_source: None,
            own_addresses: crate::own::OwnAddresses::default(),
            notices: 0,
        }
    }
}

/// The decision for one client datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the whole datagram to `backend`.
    Forward {
        /// Where to.
        backend: BackendId,
        /// Why.
        outcome: RouteOutcome,
    },
    /// Forward the record groups listed by [`Router::split_parts`], one datagram per
    /// backend (split policy, records with different CIDs).
    Split,
    /// Do not forward.
    Drop(DropReason),
}

/// One record of a split datagram and where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitPart {
    /// Destination.
    pub backend: BackendId,
    /// Byte range of the record in the datagram.
    pub start: usize,
    /// End of that range (exclusive).
    pub end: usize,
}

/// Most records a split datagram may have (more: dropped as
/// [`DropReason::TooManyRecords`]).
pub const MAX_SPLIT_RECORDS: usize = 64;

/// What was learned from one backend datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnOutcome {
    /// Nothing to learn; forward it.
    Forward,
    /// A ServerHello announced a CID now bound to the sending backend; forward it.
    Learned,
}

/// Invalid backend set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendSetError {
    /// Two backends share an id.
    DuplicateId(BackendId),
    /// Two backends share a name.
    DuplicateName(String),
    /// Two backends share a server ID.
    DuplicateServerId(ServerId),
    /// The Maglev table could not be built.
    Maglev(String),
    /// [`Router::prepare_backends_unless`] was told to stop.
    Cancelled,
}

impl fmt::Display for BackendSetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendSetError::DuplicateId(id) => write!(f, "two backends have id {}", id.0),
            BackendSetError::DuplicateName(n) => write!(f, "two backends are named {n:?}"),
            BackendSetError::DuplicateServerId(s) => {
                write!(f, "two backends have server ID {s:?}")
            }
            BackendSetError::Maglev(e) => write!(f, "cannot build the Maglev table: {e}"),
            BackendSetError::Cancelled => f.write_str("building the backend set was cancelled"),
        }
    }
}

impl std::error::Error for BackendSetError {}

/// A checked backend set with its Maglev table, ready to be swapped into a router by
/// [`Router::reconfigure`] (see [`Router::prepare_backends`]).
#[derive(Debug)]
pub struct PreparedBackends {
    backends: Vec<Backend>,
    slot: Vec<Option<u16>>,
    /// Sorted by the server ID's octets.
    server_ids: Vec<(ServerId, BackendId)>,
    eligible: Vec<BackendId>,
    maglev: MaglevTable,
    table_size: usize,
}

impl PreparedBackends {
    /// The backends.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }
}

/// A binding as an explanation shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingView {
    /// The binding.
    pub binding: Binding,
    /// Whether its backend serves now (exists and is not down).
    pub serves: bool,
    /// Whether its backend is still in the backend set.
    pub exists: bool,
    /// Seconds since it was last used.
    pub idle_secs: u32,
}

impl From<BindingView> for BindingFacts {
    /// What the decision needs of a binding an explanation shows.
    fn from(v: BindingView) -> Self {
        BindingFacts {
            backend: v.binding.backend,
            source: v.binding.source,
            serves: v.serves,
            exists: v.exists,
        }
    }
}

/// A flow as an explanation shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowView {
    /// The flow's backend.
    pub backend: BackendId,
    /// Whether that backend serves now.
    pub serves: bool,
    /// Seconds since it was last used.
    pub idle_secs: u32,
}

/// Where a datagram carrying a given CID would go now, and the facts that decided it
/// ([`Router::explain_cid`]): the same [`decide_cid`] that routing runs, over the same
/// tables, read without changing them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CidExplanation {
    /// The decision routing would take now.
    pub decision: CidDecision,
    /// The CID's binding, if it has one (whether or not it decided).
    pub binding: Option<BindingView>,
    /// What the listener's CID format makes of the CID (whether or not it decided).
    pub decoded: Decoded,
    /// The sender's flow, when a sender was given and it has one.
    pub flow: Option<FlowView>,
    /// Maglev's choice for the CID (where step 5 would send it).
    pub hashed: Option<BackendId>,
}

/// Where a datagram without CID from a given client address would go now, and why
/// ([`Router::explain_client`]; the same [`decide_address`] that routing runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientExplanation {
    /// The decision routing would take now.
    pub decision: AddressDecision,
    /// The address's flow, if it has one.
    pub flow: Option<FlowView>,
    /// Where a new flow from this address would go (Maglev on the address).
    pub hashed: Option<BackendId>,
}

/// How many bindings one flow may seed (a DTLS 1.3 peer may switch CIDs a few times).
const MAX_SEEDS_PER_FLOW: u8 = 4;

/// One listener's routing state.
#[derive(Debug)]
pub struct Router {
    cfg: RouterConfig,
    epoch: Instant,
    backends: Vec<Backend>,
    /// `slot[id]` = index into `backends`.
    slot: Vec<Option<u16>>,
    /// Sorted by the server ID's octets (binary search in `decode`).
    server_ids: Vec<(ServerId, BackendId)>,
    /// Backends that take new flows, in Maglev's index order.
    eligible: Vec<BackendId>,
    maglev: MaglevTable,
    flows: BoundedTable<FlowKey, Flow>,
    bindings: BoundedTable<CidKey, Binding>,
    /// New-flow token buckets per source (used only with `new_flows_per_source`).
    sources: BoundedTable<SourceKey, TokenBucket>,
    counters: Counters,
    split: Vec<SplitPart>,
    /// Notices not yet taken, and how many did not fit.
    notices: Vec<crate::Notice>,
    notices_dropped: u64,
}

/// How many datagrams [`Router::warm`] prepares at once (the data plane's receive batch).
pub const WARM_BATCH: usize = 32;

fn secs(d: Duration) -> Tick {
    d.as_secs().min(u64::from(Tick::MAX)) as Tick
}

/// How long a source's bucket must stay unused to be full again (then forgetting it
/// changes nothing), plus a second of margin. Without refill: forever.
fn source_idle(limit: Option<(u32, u32)>) -> Tick {
    match limit {
        Some((rate, burst)) if rate > 0 => burst.div_ceil(rate).saturating_add(1),
        Some(_) => Tick::MAX,
        None => 1,
    }
}

fn source_table(cfg: &RouterConfig) -> BoundedTable<SourceKey, TokenBucket> {
    let s = cfg.secret;
    BoundedTable::new(
        cfg.max_flows,
        source_idle(cfg.new_flows_per_source),
        [s[2] ^ 0x2545_f491, s[0], s[3], s[1].rotate_left(29)],
    )
}

impl Router {
    /// A router with no backends; `now` is its epoch.
    pub fn new(cfg: RouterConfig, now: Instant) -> Self {
        let s = cfg.secret;
        let flows = BoundedTable::new(cfg.max_flows, secs(cfg.flow_idle), s);
        let bindings = BoundedTable::new(
            cfg.max_bindings,
            secs(cfg.binding_idle),
            [s[3], s[2], s[1], s[0] ^ 0x5bd1_e995],
        );
        let sources = source_table(&cfg);
        Router {
            maglev: MaglevTable::new(&[], cfg.maglev_table_size).unwrap_or_else(|_| {
                MaglevTable::new(&[], crate::maglev::DEFAULT_TABLE_SIZE)
                    .expect("the default table size is valid")
            }),
            cfg,
            epoch: now,
            backends: Vec::new(),
            slot: Vec::new(),
            server_ids: Vec::new(),
            eligible: Vec::new(),
            flows,
            bindings,
            sources,
            counters: Counters::default(),
            split: Vec::with_capacity(MAX_SPLIT_RECORDS),
            notices: Vec::new(),
            notices_dropped: 0,
        }
    }

    /// Queues a notice when they are on (bounded: see [`crate::notice::MAX_NOTICES`]).
    #[inline]
    fn note(&mut self, n: impl FnOnce() -> crate::Notice) {
        if self.cfg.notices > 0 {
            if self.notices.len() < crate::notice::MAX_NOTICES {
                self.notices.push(n());
            } else {
                self.notices_dropped += 1;
            }
        }
    }

    /// Moves the queued notices to `out` (appended) and returns how many did not fit in
    /// the queue since the last take.
    pub fn take_notices(&mut self, out: &mut Vec<crate::Notice>) -> u64 {
        out.append(&mut self.notices);
        std::mem::take(&mut self.notices_dropped)
    }

    fn tick(&self, now: Instant) -> Tick {
        secs(now.saturating_duration_since(self.epoch))
    }

    /// The configuration.
    pub fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    /// All counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Flows stored (including idle ones not yet swept).
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// CID bindings stored (including idle ones not yet swept).
    pub fn binding_count(&self) -> usize {
        self.bindings.len()
    }

    /// Sources tracked by the new-flow limiter (including idle ones not yet swept).
    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// Bytes allocated by the per-source new-flow limiter's table (empty unless
    /// [`RouterConfig::new_flows_per_source`] is set).
    pub fn source_table_bytes(&self) -> usize {
        self.sources.allocated_bytes()
    }

    /// Bytes allocated by the flow and binding tables.
    pub fn table_bytes(&self) -> (usize, usize) {
        (
            self.flows.allocated_bytes(),
            self.bindings.allocated_bytes(),
        )
    }

    // ---------------------------------------------------------------- backends

    /// Replaces the backend set. Flows and bindings that refer to backends still present
    /// (by id) keep working; those of removed backends fall through to the next routing
    /// step when next used.
    pub fn set_backends(&mut self, backends: Vec<Backend>) -> Result<(), BackendSetError> {
        let prepared = Self::prepare_backends(&self.cfg, backends)?;
        self.install(prepared);
        Ok(())
    }

    /// Checks a backend set and builds its lookup structures (the Maglev table) without
    /// touching any router, so that a reload can validate every listener first and
    /// then swap each in O(1) with [`Router::reconfigure`]. `cfg` supplies the Maglev
    /// table size.
    pub fn prepare_backends(
        cfg: &RouterConfig,
        backends: Vec<Backend>,
    ) -> Result<PreparedBackends, BackendSetError> {
        Self::prepare_backends_unless(cfg, backends, &|| false)
    }

    /// [`Router::prepare_backends`] that gives up ([`BackendSetError::Cancelled`]) as
    /// soon as `stop` returns true while the Maglev table is built. O(n) checks, then
    /// the Maglev build.
    pub fn prepare_backends_unless(
        cfg: &RouterConfig,
        backends: Vec<Backend>,
        stop: &dyn Fn() -> bool,
    ) -> Result<PreparedBackends, BackendSetError> {
        let mut slot: Vec<Option<u16>> = Vec::new();
        let mut server_ids = Vec::new();
        // Duplicates found in O(n): sets may hold 65,535 backends.
        let mut names = HashSet::with_capacity(backends.len());
        let mut sids = HashSet::new();
        for (i, b) in backends.iter().enumerate() {
            let id = usize::from(b.id.0);
            if slot.len() <= id {
                slot.resize(id + 1, None);
            }
            if slot[id].is_some() {
                return Err(BackendSetError::DuplicateId(b.id));
            }
            slot[id] = Some(i as u16);
            if !names.insert(b.name.as_str()) {
                return Err(BackendSetError::DuplicateName(b.name.clone()));
            }
            if let Some(sid) = b.server_id {
                if !sids.insert(sid) {
                    return Err(BackendSetError::DuplicateServerId(sid));
                }
                server_ids.push((sid, b.id));
            }
        }
        // Sorted by octets: `decode` finds a server ID by binary search.
        server_ids.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let (eligible, maglev) = Self::build_maglev(&backends, cfg.maglev_table_size, stop)?;
        Ok(PreparedBackends {
            backends,
            slot,
            server_ids,
            eligible,
            maglev,
            table_size: cfg.maglev_table_size,
        })
    }

    fn install(&mut self, p: PreparedBackends) {
        self.backends = p.backends;
        self.slot = p.slot;
        self.server_ids = p.server_ids;
        self.eligible = p.eligible;
        self.maglev = p.maglev;
        self.cfg.maglev_table_size = p.table_size;
    }

    /// Applies new settings and a prepared backend set at once (a configuration
    /// reload). Flows and CID bindings stay; backends keep them by id. From `cfg`:
    /// the CID routing (length and format), the mixed-CID policy, the routing mode,
    /// idle timeouts and table bounds (a smaller bound evicts as new entries arrive;
    /// a shorter timeout applies at the next lookup or sweep), the hash seed and the
    /// Maglev table size (taken from `backends`, which was built for it), and the
    /// per-source new-flow limit (buckets keep their tokens, capped at the new burst;
    /// turning the limit off forgets them). The table secret is kept: stored entries
    /// are keyed by it.
    pub fn reconfigure(&mut self, cfg: RouterConfig, backends: PreparedBackends) {
        let secret = self.cfg.secret;
        self.flows.set_capacity(cfg.max_flows);
        self.flows.set_idle_timeout(secs(cfg.flow_idle));
        self.bindings.set_capacity(cfg.max_bindings);
        self.bindings.set_idle_timeout(secs(cfg.binding_idle));
        if cfg.new_flows_per_source.is_none() {
            if !self.sources.is_empty() {
                self.sources = source_table(&self.cfg);
            }
        } else {
            self.sources.set_capacity(cfg.max_flows);
            self.sources
                .set_idle_timeout(source_idle(cfg.new_flows_per_source));
        }
        self.cfg = RouterConfig { secret, ..cfg };
        self.install(backends);
    }

    fn build_maglev(
        backends: &[Backend],
        size: usize,
        stop: &dyn Fn() -> bool,
    ) -> Result<(Vec<BackendId>, MaglevTable), BackendSetError> {
        let eligible: Vec<&Backend> = backends.iter().filter(|b| b.takes_new_flows()).collect();
        let input: Vec<MaglevBackend<'_>> = eligible
            .iter()
            .map(|b| MaglevBackend::new(b.name.as_bytes(), b.weight))
            .collect();
        let table = MaglevTable::new_unless(&input, size, stop).map_err(|e| match e {
            MaglevError::Cancelled => BackendSetError::Cancelled,
            e => BackendSetError::Maglev(e.to_string()),
        })?;
        Ok((eligible.iter().map(|b| b.id).collect(), table))
    }

    fn rebuild_maglev(&mut self) {
        // The backend set was valid when set, and eligibility changes cannot make it
        // invalid; keep the old table if building somehow fails.
        if let Ok((eligible, maglev)) =
            Self::build_maglev(&self.backends, self.cfg.maglev_table_size, &|| false)
        {
            self.eligible = eligible;
            self.maglev = maglev;
        }
    }

    /// Changes a backend's state; returns false if there is no such backend.
    pub fn set_backend_state(&mut self, id: BackendId, state: BackendState) -> bool {
        let Some(i) = self.index_of(id) else {
            return false;
        };
        if self.backends[i].state != state {
            self.backends[i].state = state;
            self.rebuild_maglev();
        }
        true
    }

    /// Changes a backend's weight; returns false if there is no such backend.
    pub fn set_backend_weight(&mut self, id: BackendId, weight: u32) -> bool {
        let Some(i) = self.index_of(id) else {
            return false;
        };
        if self.backends[i].weight != weight {
            self.backends[i].weight = weight;
            self.rebuild_maglev();
        }
        true
    }

    /// The backends.
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// One backend.
    pub fn backend(&self, id: BackendId) -> Option<&Backend> {
        self.index_of(id).map(|i| &self.backends[i])
    }

    #[inline]
    fn index_of(&self, id: BackendId) -> Option<usize> {
        index_in(&self.slot, id)
    }

    /// Exists and is not down: existing flows and bindings may use it.
    #[inline]
    fn serves(&self, id: BackendId) -> bool {
        serves(&self.slot, &self.backends, id)
    }

    fn maglev_pick(&self, input: &[u8]) -> Option<BackendId> {
        let h = xxhash_rust::xxh3::xxh3_64_with_seed(input, self.cfg.hash_seed);
        self.maglev.lookup(h).map(|i| self.eligible[i])
    }

    // ---------------------------------------------------------------- client path

    /// Prepares a batch of client datagrams for routing: loads the table entries their
    /// [`Router::route`] calls will look up (the CID binding of each datagram's first
    /// CID, else the client's flow), first every index slot, then every entry, so that
    /// the batch's cache misses overlap instead of adding up. In a table of a million
    /// bindings most lookups miss the cache; this keeps the cost per datagram close to
    /// that of a small table. Changes nothing; looks at the first [`WARM_BATCH`] items.
    pub fn warm<'a>(&self, batch: impl Iterator<Item = (SocketAddr, &'a [u8])>) {
        #[derive(Clone, Copy)]
        enum Key {
            Cid(u64, CidKey),
            Flow(u64, FlowKey),
        }
        let mut keys = [Key::Flow(0, FlowKey::from(SocketAddr::from(([0; 4], 0)))); WARM_BATCH];
        let mut n = 0;
        for (client, datagram) in batch.take(WARM_BATCH) {
            let cid = if self.cfg.route_by_cid {
                Records::new(datagram, &self.cfg.cid)
                    .next()
                    .and_then(Result::ok)
                    .and_then(|r| r.cid)
                    .and_then(CidKey::new)
            } else {
                None
            };
            keys[n] = match cid {
                Some(k) => {
                    let h = self.bindings.hash(&k);
                    core::hint::black_box(self.bindings.warm_slot(h));
                    Key::Cid(h, k)
                }
                None => {
                    let f = FlowKey::from(client);
                    let h = self.flows.hash(&f);
                    core::hint::black_box(self.flows.warm_slot(h));
                    Key::Flow(h, f)
                }
            };
            n += 1;
        }
        for key in &keys[..n] {
            core::hint::black_box(match key {
                Key::Cid(h, k) => self.bindings.warm_entry(*h, k),
                Key::Flow(h, f) => self.flows.warm_entry(*h, f),
            });
        }
    }

    /// Routes one datagram from `client` (its source address) at `now`.
    pub fn route(&mut self, now: Instant, client: SocketAddr, datagram: &[u8]) -> Verdict {
        if self.cfg.own_addresses.contains(client) {
            return self.drop(DropReason::FromOwnAddress);
        }
        let t = self.tick(now);
        if !self.cfg.route_by_cid {
            // Address-only mode: any datagram, by address, like an address-hashing
            // balancer (no DTLS validation either).
            if datagram.is_empty() {
                return self.drop(DropReason::Empty);
            }
            return self.route_by_address(t, FlowKey::from(client));
        }
        let info = match inspect(datagram, &self.cfg.cid) {
            Ok(info) => info,
            Err(e) => return self.drop(e.into()),
        };
        if info.client_hello {
            self.counters.add_event(Event::ClientHello);
        }
        let fkey = FlowKey::from(client);
        let Some(cid) = info.first_cid else {
            return self.route_by_address(t, fkey);
        };
        if info.mixed_cids {
            match self.cfg.multi_cid {
                MultiCidPolicy::Drop => return self.drop(DropReason::MixedCids),
                MultiCidPolicy::Split if info.records > MAX_SPLIT_RECORDS => {
                    return self.drop(DropReason::TooManyRecords)
                }
                MultiCidPolicy::Split => return self.route_split(t, fkey, datagram, cid),
                MultiCidPolicy::First => self.counters.add_event(Event::MixedCidsRoutedByFirst),
            }
        }
        self.route_cid(t, fkey, cid)
    }

    fn drop(&mut self, reason: DropReason) -> Verdict {
        self.counters.add_drop(reason);
        Verdict::Drop(reason)
    }

    fn forward(&mut self, backend: BackendId, outcome: RouteOutcome) -> Verdict {
        self.counters.add_route(outcome);
        Verdict::Forward { backend, outcome }
    }

    /// The live flow of `fkey`, refreshed; counts expiry.
    fn touch_flow(&mut self, t: Tick, fkey: &FlowKey) -> Option<Flow> {
        let (flow, expired) = self.flows.touch(fkey, t);
        let flow = flow.map(|e| e.value);
        if expired {
            self.counters.add_event(Event::FlowExpired);
        }
        flow
    }

    fn insert_flow(&mut self, t: Tick, fkey: FlowKey, backend: BackendId) {
        let r = self
            .flows
            .insert(fkey, Flow { backend, seeds: 0 }, t, |_| true);
        match r {
            Inserted::New => self.counters.add_event(Event::FlowCreated),
            Inserted::Evicted { key, value, live } => {
                self.counters.add_event(Event::FlowCreated);
                self.counters.add_event(if live {
                    Event::FlowEvicted
                } else {
                    Event::FlowExpired
                });
                if live {
                    self.note(|| crate::Notice::FlowEvicted {
                        client: key.addr(),
                        backend: value.backend,
                    });
                }
            }
            Inserted::Replaced | Inserted::Refused => {}
        }
    }

    /// No CID: [`decide_address`] over the live tables, then apply it.
    fn route_by_address(&mut self, t: Tick, fkey: FlowKey) -> Verdict {
        let mut l = Live::new(self, t, None, Some(fkey), None);
        let decision = decide_address(&mut l);
        let flow = l.flow;
        match decision {
            AddressDecision::Flow(b) => self.forward(b, RouteOutcome::Flow),
            AddressDecision::Hashed(None) => {
                if flow.is_some() {
                    self.counters.add_event(Event::FlowRescheduled);
                }
                self.drop(DropReason::NoBackend)
            }
            AddressDecision::Hashed(Some(b)) => {
                if flow.is_some() {
                    self.counters.add_event(Event::FlowRescheduled);
                } else if !self.take_new_flow_token(t, &fkey) {
                    return self.drop(DropReason::SourceRateLimited);
                } else {
                    self.note(|| crate::Notice::NewSession {
                        client: fkey.addr(),
                        backend: b,
                    });
                }
                self.insert_flow(t, fkey, b);
                self.forward(b, RouteOutcome::Hashed)
            }
        }
    }

    /// Spends one new-flow token of `fkey`'s source; false when the source is over its
    /// limit. Always true when the limit is off. Call only when a datagram would create
    /// a flow (never for existing flows or CIDs that matched an encoding or binding).
    fn take_new_flow_token(&mut self, t: Tick, fkey: &FlowKey) -> bool {
        let Some((rate, burst)) = self.cfg.new_flows_per_source else {
            return true;
        };
        let skey = fkey.source();
        if let (Some(e), _) = self.sources.touch(&skey, t) {
            return e.value.take(t, rate, burst);
        }
        // New source (or its bucket was idle long enough to be full again).
        let mut bucket = TokenBucket::full(t, burst);
        let ok = bucket.take(t, rate, burst);
        // Any source may be evicted: losing a bucket only gives that source a fresh
        // burst, and the table stays bounded.
        self.sources.insert(skey, bucket, t, |_| true);
        ok
    }

    /// A keyed 32-bit tag of a client address (collisions only cost a skipped flow
    /// refresh, never a wrong route).
    fn addr_tag(&self, fkey: &FlowKey) -> u32 {
        xxhash_rust::xxh3::xxh3_64_with_seed(&fkey.hash_input(), self.cfg.secret[1]) as u32
    }

    /// A CID: [`decide_cid`] over the live tables, then apply it (forward, seed a
    /// binding, create or keep the sender's flow).
    fn route_cid(&mut self, t: Tick, fkey: FlowKey, cid: &[u8]) -> Verdict {
        let tag = self.addr_tag(&fkey);
        let mut l = Live::new(self, t, Some(cid), Some(fkey), Some(tag));
        let decision = decide_cid(&mut l);
        let (same_addr, flow_seen, flow) = (l.same_addr, l.flow_seen, l.flow);
        let (b, outcome) = match decision {
            CidDecision::ByFlow { backend, seed } => {
                if seed {
                    self.seed(t, fkey, cid, backend, tag);
                }
                return self.forward(backend, RouteOutcome::CidByFlow);
            }
            CidDecision::Hashed(None) => {
                if flow.is_some() {
                    self.counters.add_event(Event::FlowRescheduled);
                }
                return self.drop(DropReason::NoBackend);
            }
            CidDecision::Hashed(Some(b)) => {
                if flow.is_some() {
                    self.counters.add_event(Event::FlowRescheduled);
                } else if !self.take_new_flow_token(t, &fkey) {
                    return self.drop(DropReason::SourceRateLimited);
                }
                self.insert_flow(t, fkey, b);
                return self.forward(b, RouteOutcome::UnknownCid);
            }
            CidDecision::Learned(b) => (b, RouteOutcome::Learned),
            CidDecision::Seeded(b) => (b, RouteOutcome::Seeded),
            CidDecision::Encoded { backend, .. } => (backend, RouteOutcome::Encoded),
        };
        // The CID said where to go. The sender's flow (the path replies take) is only
        // created when missing, never moved.
        if same_addr && outcome != RouteOutcome::Encoded {
            // Same binding, same address as last time: nothing else to check.
            return self.forward(b, outcome);
        }
        debug_assert!(!flow_seen, "known CIDs do not look at the flow");
        let flow = self.touch_flow(t, &fkey);
        let flow_serves = flow.is_some_and(|f| self.serves(f.backend));
        match flow {
            None => {
                self.counters.add_event(Event::CidNewAddress);
                if let Some(key) = CidKey::new(cid) {
                    self.note(|| crate::Notice::CidNewAddress {
                        cid: key,
                        backend: b,
                        client: fkey.addr(),
                    });
                }
                self.insert_flow(t, fkey, b);
            }
            Some(f) if f.backend != b => {
                if flow_serves {
                    //= https://www.rfc-editor.org/rfc/rfc9146#section-6
                    //# the receiver MUST NOT replace the address it uses for
                    //# sending records to its peer with the source address
                    //# specified in the received datagram, unless [...] The
                    //# received datagram has been cryptographically verified
                    //
                    // A balancer cannot verify records: the datagram goes where its
                    // CID says, but the address's flow (the path replies take) stays
                    // where it was.
                    self.counters.add_event(Event::CidFlowConflict);
                } else {
                    self.counters.add_event(Event::FlowRescheduled);
                    self.insert_flow(t, fkey, b);
                }
            }
            Some(_) => {}
        }
        self.forward(b, outcome)
    }

    /// Binds `cid` to `b` after [`decide_cid`] said to seed (the CID has no binding,
    /// or one to a backend that is gone).
    fn seed(&mut self, t: Tick, fkey: FlowKey, cid: &[u8], b: BackendId, tag: u32) {
        let Some(key) = CidKey::new(cid) else { return };
        let binding = Binding {
            backend: b,
            source: BindingSource::Seeded,
            addr_tag: tag,
        };
        // Seeded bindings may only evict other seeded bindings.
        match self
            .bindings
            .insert(key, binding, t, |v| v.source == BindingSource::Seeded)
        {
            Inserted::Refused => self.counters.add_event(Event::BindingSeedRefused),
            Inserted::Evicted {
                key: gone,
                value,
                live,
            } => {
                self.binding_evicted(gone, value, live);
                self.counters.add_event(Event::BindingSeeded);
                self.note(|| crate::Notice::CidSeeded {
                    cid: key,
                    backend: b,
                    client: fkey.addr(),
                });
            }
            _ => {
                self.counters.add_event(Event::BindingSeeded);
                self.note(|| crate::Notice::CidSeeded {
                    cid: key,
                    backend: b,
                    client: fkey.addr(),
                });
            }
        }
        if let (Some(e), _) = self.flows.touch(&fkey, t) {
            e.value.seeds = e.value.seeds.saturating_add(1);
        }
    }

    fn route_split(&mut self, t: Tick, fkey: FlowKey, datagram: &[u8], first: &[u8]) -> Verdict {
        // The first CID decides the datagram's primary backend and the flow.
        let (primary, primary_outcome) = match self.route_cid(t, fkey, first) {
            Verdict::Forward { backend, outcome } => (backend, outcome),
            other => return other,
        };
        let mut split = core::mem::take(&mut self.split);
        split.clear();
        // Distinct CIDs seen so far and their backends (few per datagram).
        let mut seen: [(usize, usize, BackendId); 8] = [(0, 0, primary); 8];
        let mut n_seen = 0;
        let cid_cfg = self.cfg.cid.clone();
        for rec in Records::new(datagram, &cid_cfg) {
            let Ok(rec) = rec else { break };
            let backend = match rec.cid {
                None => primary,
                Some(c) if c == first => primary,
                Some(c) => {
                    let off = c.as_ptr() as usize - datagram.as_ptr() as usize;
                    let known = seen[..n_seen]
                        .iter()
                        .find(|(o, l, _)| datagram[*o..*o + *l] == *c)
                        .map(|s| s.2);
                    match known {
                        Some(b) => b,
                        None => {
                            // The same decision without a sender: the flow is
                            // the primary CID's business.
                            let decision = decide_cid(&mut Live::new(self, t, Some(c), None, None));
                            let b = match decision {
                                d if d.is_known() => {
                                    self.counters.add_event(Event::SplitGroupKnown);
                                    d.backend().unwrap_or(primary)
                                }
                                d => {
                                    self.counters.add_event(Event::SplitGroupUnknown);
                                    d.backend().unwrap_or(primary)
                                }
                            };
                            if n_seen < seen.len() {
                                seen[n_seen] = (off, c.len(), b);
                                n_seen += 1;
                            }
                            b
                        }
                    }
                }
            };
            split.push(SplitPart {
                backend,
                start: rec.offset,
                end: rec.end(),
            });
        }
        let all_primary = split.iter().all(|p| p.backend == primary);
        self.split = split;
        if all_primary {
            return Verdict::Forward {
                backend: primary,
                outcome: primary_outcome,
            };
        }
        self.counters.add_event(Event::DatagramSplit);
        Verdict::Split
    }

    /// The records of the last [`Verdict::Split`] datagram and where each goes, in
    /// datagram order. Concatenate the records of each backend, in order, into one
    /// datagram for it.
    pub fn split_parts(&self) -> &[SplitPart] {
        &self.split
    }

    // ---------------------------------------------------------------- return path

    /// Looks at one datagram from `backend` to `client` before it is forwarded: refreshes
    /// the client's flow and learns a CID binding from a ServerHello.
    pub fn handle_backend_datagram(
        &mut self,
        now: Instant,
        backend: BackendId,
        client: SocketAddr,
        datagram: &[u8],
    ) -> ReturnOutcome {
        let t = self.tick(now);
        let fkey = FlowKey::from(client);
        if self.touch_flow(t, &fkey).is_none() {
            self.counters.add_event(Event::ReturnWithoutFlow);
        }
        // Hellos are plaintext handshake records and come first in their datagram;
        // anything else is forwarded without a look.
        if datagram.first() != Some(&22) || !self.cfg.route_by_cid {
            return ReturnOutcome::Forward;
        }
        let flight = handshake::scan_server_flight(datagram);
        if flight.hello_verify_request {
            self.counters.add_event(Event::HelloVerifyRequest);
        }
        if flight.fragmented_server_hello {
            self.counters.add_event(Event::ServerHelloFragmented);
        }
        if flight.malformed {
            self.counters.add_event(Event::ServerHelloMalformed);
        }
        let Some(hello) = flight.server_hello else {
            return ReturnOutcome::Forward;
        };
        let cid = match hello.connection_id {
            Some(c) if !c.cid.is_empty() => c.cid,
            _ => {
                self.counters.add_event(Event::ServerHelloWithoutCid);
                return ReturnOutcome::Forward;
            }
        };
        if self.learn(t, cid, backend, client) {
            ReturnOutcome::Learned
        } else {
            ReturnOutcome::Forward
        }
    }

    /// Counts (and notes) a binding that made room for another.
    fn binding_evicted(&mut self, cid: CidKey, old: Binding, live: bool) {
        if live {
            self.counters.add_event(Event::BindingEvicted);
            self.note(|| crate::Notice::BindingEvicted {
                cid,
                backend: old.backend,
            });
        } else {
            self.counters.add_event(Event::BindingExpired);
        }
    }

    fn learn(&mut self, t: Tick, cid: &[u8], backend: BackendId, client: SocketAddr) -> bool {
        let Some(key) = CidKey::new(cid) else {
            self.counters.add_event(Event::BindingLearnRefused);
            return false;
        };
        if let Some(old) = self.bindings.peek(&key, t) {
            if old.value.backend != backend {
                self.counters.add_event(Event::BindingReplaced);
            }
        }
        let binding = Binding {
            backend,
            source: BindingSource::Learned,
            // No client datagram has used it yet.
            addr_tag: 0,
        };
        match self.bindings.insert(key, binding, t, |_| true) {
            Inserted::Refused => {
                self.counters.add_event(Event::BindingLearnRefused);
                return false;
            }
            Inserted::Evicted {
                key: gone,
                value,
                live,
            } => self.binding_evicted(gone, value, live),
            Inserted::New | Inserted::Replaced => {}
        }
        self.counters.add_event(Event::BindingLearned);
        self.note(|| crate::Notice::CidLearned {
            cid: key,
            backend,
            client,
        });
        true
    }

    // ---------------------------------------------------------------- upkeep & lookups

    /// Expires idle entries among the next `budget` entries of each table.
    pub fn sweep(&mut self, now: Instant, budget: usize) {
        let t = self.tick(now);
        let f = self.flows.sweep(t, budget);
        let b = self.bindings.sweep(t, budget);
        self.sources.sweep(t, budget);
        self.counters.add_events(Event::FlowExpired, f);
        self.counters.add_events(Event::BindingExpired, b);
    }

    /// The live binding of `cid`, without touching it.
    pub fn binding(&self, now: Instant, cid: &[u8]) -> Option<Binding> {
        let key = CidKey::new(cid)?;
        self.bindings.peek(&key, self.tick(now)).map(|e| e.value)
    }

    /// The live flow of `client`, without touching it.
    pub fn flow(&self, now: Instant, client: SocketAddr) -> Option<Flow> {
        self.flows
            .peek(&FlowKey::from(client), self.tick(now))
            .map(|e| e.value)
    }

    /// Where a new flow from `client` would go (Maglev), ignoring existing state.
    pub fn hashed_backend(&self, client: SocketAddr) -> Option<BackendId> {
        self.maglev_pick(&FlowKey::from(client).hash_input())
    }

    /// Where a datagram carrying `cid` from `client` (if given) would be routed now,
    /// and why: [`decide_cid`] over the tables, changing nothing. Without `client` it
    /// explains a datagram from an address without a flow.
    pub fn explain_cid(
        &self,
        now: Instant,
        cid: &[u8],
        client: Option<SocketAddr>,
    ) -> CidExplanation {
        let t = self.tick(now);
        let mut p = Peek::new(self, t, Some(cid), client.map(FlowKey::from));
        let decision = decide_cid(&mut p);
        CidExplanation {
            decision,
            binding: p.binding_view(),
            decoded: p.decode(),
            flow: p.flow_view(),
            hashed: self.maglev_pick(cid),
        }
    }

    /// Where a datagram without CID from `client` would be routed now, and why:
    /// [`decide_address`] over the tables, changing nothing.
    pub fn explain_client(&self, now: Instant, client: SocketAddr) -> ClientExplanation {
        let t = self.tick(now);
        let fkey = FlowKey::from(client);
        let mut p = Peek::new(self, t, None, Some(fkey));
        let decision = decide_address(&mut p);
        ClientExplanation {
            decision,
            flow: p.flow_view(),
            hashed: self.maglev_pick(&fkey.hash_input()),
        }
    }

    /// A page of the live flows that match `f` (see [`crate::plane::ListenerPlane::flows`]).
    pub fn flows_page(
        &self,
        now: Instant,
        f: &crate::listing::FlowFilter,
        cursor: u64,
        limit: usize,
    ) -> crate::listing::Page<crate::listing::FlowEntry> {
        let t = self.tick(now);
        let idle = self.flows.idle_timeout();
        let want_ip = f.ip.map(crate::own::canonical_ip);
        page(self.flows.iter(), cursor, limit, |e| {
            if !now_alive(e.last_seen, t, idle) || f.backend.is_some_and(|b| b != e.value.backend) {
                return None;
            }
            let client = e.key.addr();
            if want_ip.is_some_and(|ip| ip != crate::own::canonical_ip(client.ip()))
                || f.port.is_some_and(|p| p != client.port())
            {
                return None;
            }
            Some(crate::listing::FlowEntry {
                client,
                backend: e.value.backend,
                idle_secs: t.saturating_sub(e.last_seen),
            })
        })
    }

    /// A page of the live CID bindings that match `f`.
    pub fn bindings_page(
        &self,
        now: Instant,
        f: &crate::listing::BindingFilter,
        cursor: u64,
        limit: usize,
    ) -> crate::listing::Page<crate::listing::BindingEntry> {
        let t = self.tick(now);
        let idle = self.bindings.idle_timeout();
        page(self.bindings.iter(), cursor, limit, |e| {
            let ok = now_alive(e.last_seen, t, idle)
                && f.backend.is_none_or(|b| b == e.value.backend)
                && f.source.is_none_or(|s| s == e.value.source)
                && e.key.as_bytes().starts_with(&f.cid_prefix);
            ok.then_some(crate::listing::BindingEntry {
                cid: e.key,
                backend: e.value.backend,
                source: e.value.source,
                idle_secs: t.saturating_sub(e.last_seen),
            })
        })
    }

    /// Counts per backend: (flows, bindings). Walks both tables: for admin use only.
    pub fn per_backend_counts(&self, now: Instant) -> Vec<(BackendId, usize, usize)> {
        let t = self.tick(now);
        let mut out: Vec<(BackendId, usize, usize)> =
            self.backends.iter().map(|b| (b.id, 0, 0)).collect();
        let pos = |id: BackendId| self.index_of(id);
        for e in self.flows.iter() {
            if now_alive(e.last_seen, t, self.flows.idle_timeout()) {
                if let Some(i) = pos(e.value.backend) {
                    out[i].1 += 1;
                }
            }
        }
        for e in self.bindings.iter() {
            if now_alive(e.last_seen, t, self.bindings.idle_timeout()) {
                if let Some(i) = pos(e.value.backend) {
                    out[i].2 += 1;
                }
            }
        }
        out
    }
}

/// Whether backend `id` exists and is not down (a free function so that callers can
/// hold a borrow of another field).
#[inline]
fn serves(slot: &[Option<u16>], backends: &[Backend], id: BackendId) -> bool {
    index_in(slot, id).is_some_and(|i| backends[i].state != BackendState::Down)
}

/// Where backend `id` is in the backend list, if it is in the set.
#[inline]
fn index_in(slot: &[Option<u16>], id: BackendId) -> Option<usize> {
    slot.get(usize::from(id.0))
        .copied()
        .flatten()
        .map(usize::from)
}

/// One page of a table walk: from position `cursor`, at most `limit` (capped at
/// [`crate::listing::MAX_PAGE`]) items that `pick` keeps, looking at most
/// [`crate::listing::MAX_SCAN`] entries.
fn page<'a, E: 'a, T>(
    entries: impl Iterator<Item = &'a E>,
    cursor: u64,
    limit: usize,
    mut pick: impl FnMut(&E) -> Option<T>,
) -> crate::listing::Page<T> {
    let limit = limit.min(crate::listing::MAX_PAGE);
    let start = usize::try_from(cursor).unwrap_or(usize::MAX);
    let mut items = Vec::new();
    let mut it = entries.skip(start).peekable();
    let mut scanned = 0;
    while items.len() < limit && scanned < crate::listing::MAX_SCAN {
        let Some(e) = it.next() else { break };
        scanned += 1;
        if let Some(x) = pick(e) {
            items.push(x);
        }
    }
    let next = it.peek().is_some().then(|| (start + scanned) as u64);
    crate::listing::Page {
        items,
        next,
        scanned,
    }
}

fn now_alive(last_seen: Tick, now: Tick, idle: Tick) -> bool {
    now.saturating_sub(last_seen) <= idle
}

// ------------------------------------------------------------------ the two lookups

/// What the CID format makes of `cid` (no counting).
fn decode(r: &Router, cid: &[u8]) -> Decoded {
    let Some(fmt) = r.cfg.cid.format.as_deref() else {
        return Decoded::NoFormat;
    };
    let Some(server_id) = fmt.server_id(cid) else {
        return Decoded::Undecodable;
    };
    let found = r
        .server_ids
        .binary_search_by(|(s, _)| s.as_bytes().cmp(server_id.as_bytes()))
        .ok()
        .map(|i| r.server_ids[i]);
    match found {
        Some((_, backend)) => Decoded::Backend {
            server_id,
            backend,
            serves: r.serves(backend),
        },
        None => Decoded::UnknownServer(server_id),
    }
}

/// [`Lookups`] for routing: answers from the tables, refreshing the entries it reads
/// and counting what it sees, and remembers what the caller needs afterwards.
struct Live<'r, 'c> {
    r: &'r mut Router,
    t: Tick,
    cid: Option<&'c [u8]>,
    fkey: Option<FlowKey>,
    /// The sender's address tag: a serving binding remembers it.
    tag: Option<u32>,
    /// The binding was last used from the same address (see [`Binding::addr_tag`]).
    same_addr: bool,
    /// Whether the flow was looked up, and what it was.
    flow_seen: bool,
    flow: Option<Flow>,
}

impl<'r, 'c> Live<'r, 'c> {
    fn new(
        r: &'r mut Router,
        t: Tick,
        cid: Option<&'c [u8]>,
        fkey: Option<FlowKey>,
        tag: Option<u32>,
    ) -> Self {
        Live {
            r,
            t,
            cid,
            fkey,
            tag,
            same_addr: false,
            flow_seen: false,
            flow: None,
        }
    }
}

impl Lookups for Live<'_, '_> {
    #[inline(always)]
    fn binding(&mut self) -> Option<BindingFacts> {
        let r = &mut *self.r;
        if r.bindings.is_empty() {
            // Nothing learned or seeded (encoded CIDs only, or just restarted): skip
            // hashing the CID.
            return None;
        }
        let key = CidKey::new(self.cid?)?;
        let (entry, expired) = r.bindings.touch(&key, self.t);
        if expired {
            r.counters.add_event(Event::BindingExpired);
        }
        let entry = entry?;
        let b = entry.value;
        let at = index_in(&r.slot, b.backend);
        let exists = at.is_some();
        let serves = at.is_some_and(|i| r.backends[i].state != BackendState::Down);
        if !serves {
            r.counters.add_event(Event::BindingBackendUnavailable);
        } else if let Some(tag) = self.tag {
            self.same_addr = b.addr_tag == tag;
            entry.value.addr_tag = tag;
        }
        Some(BindingFacts {
            backend: b.backend,
            source: b.source,
            serves,
            exists,
        })
    }

    fn decode(&mut self) -> Decoded {
        let Some(cid) = self.cid else {
            return Decoded::NoFormat;
        };
        let d = decode(self.r, cid);
        match d {
            Decoded::NoFormat | Decoded::Backend { serves: true, .. } => {}
            Decoded::Undecodable => self.r.counters.add_event(Event::EncodedUndecodable),
            Decoded::UnknownServer(_) | Decoded::Backend { serves: false, .. } => {
                self.r.counters.add_event(Event::EncodedUnknownServer)
            }
        }
        d
    }

    fn flow(&mut self) -> Option<FlowFacts> {
        let fkey = self.fkey?;
        self.flow_seen = true;
        self.flow = self.r.touch_flow(self.t, &fkey);
        self.flow.map(|f| FlowFacts {
            backend: f.backend,
            serves: self.r.serves(f.backend),
            may_seed: f.seeds < MAX_SEEDS_PER_FLOW,
        })
    }

    fn hashed(&mut self) -> Option<BackendId> {
        match (self.cid, self.fkey) {
            (Some(cid), _) => self.r.maglev_pick(cid),
            (None, Some(f)) => self.r.maglev_pick(&f.hash_input()),
            (None, None) => None,
        }
    }
}

/// [`Lookups`] for explanations: the same answers as [`Live`] from the same tables,
/// read without changing or counting anything.
struct Peek<'r, 'c> {
    r: &'r Router,
    t: Tick,
    cid: Option<&'c [u8]>,
    fkey: Option<FlowKey>,
}

impl<'r, 'c> Peek<'r, 'c> {
    fn new(r: &'r Router, t: Tick, cid: Option<&'c [u8]>, fkey: Option<FlowKey>) -> Self {
        Peek { r, t, cid, fkey }
    }

    fn binding_entry(&self) -> Option<&Entry<CidKey, Binding>> {
        self.r.bindings.peek(&CidKey::new(self.cid?)?, self.t)
    }

    fn flow_entry(&self) -> Option<&Entry<FlowKey, Flow>> {
        self.r.flows.peek(&self.fkey?, self.t)
    }

    fn binding_view(&self) -> Option<BindingView> {
        self.binding_entry().map(|e| BindingView {
            binding: e.value,
            serves: self.r.serves(e.value.backend),
            exists: index_in(&self.r.slot, e.value.backend).is_some(),
            idle_secs: self.t.saturating_sub(e.last_seen),
        })
    }

    fn flow_view(&self) -> Option<FlowView> {
        self.flow_entry().map(|e| FlowView {
            backend: e.value.backend,
            serves: self.r.serves(e.value.backend),
            idle_secs: self.t.saturating_sub(e.last_seen),
        })
    }
}

impl Lookups for Peek<'_, '_> {
    fn binding(&mut self) -> Option<BindingFacts> {
        self.binding_view().map(BindingFacts::from)
    }

    fn decode(&mut self) -> Decoded {
        self.cid.map_or(Decoded::NoFormat, |c| decode(self.r, c))
    }

    fn flow(&mut self) -> Option<FlowFacts> {
        self.flow_entry().map(|e| FlowFacts {
            backend: e.value.backend,
            serves: self.r.serves(e.value.backend),
            may_seed: e.value.seeds < MAX_SEEDS_PER_FLOW,
        })
    }

    fn hashed(&mut self) -> Option<BackendId> {
        match (self.cid, self.fkey) {
            (Some(cid), _) => self.r.maglev_pick(cid),
            (None, Some(f)) => self.r.maglev_pick(&f.hash_input()),
            (None, None) => None,
        }
    }
}
