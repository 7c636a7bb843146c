//! Every routing outcome, drop reason and notable event, each with a counter.
//!
//! The enums double as metric labels (`snake_case` names via `strum`); their doc
//! comments (`EnumMessage::get_documentation`) become the metric reference
//! (`docs/metrics.md`, kept in step by a test).

use cidlb_wire::WireError;
use strum::{EnumCount, EnumIter, EnumMessage, IntoStaticStr};

/// How a forwarded client datagram (or, with the split policy, record group) was routed.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumCount, EnumIter, EnumMessage, IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum RouteOutcome {
    /// The CID decoded (CID format) to the server ID of a live backend: stateless.
    Encoded,
    /// The CID matched a binding learned from that backend's ServerHello.
    Learned,
    /// The CID matched a binding seeded earlier from the flow it first appeared on.
    Seeded,
    /// The CID was unknown but the client address had a flow: routed by the flow, and a
    /// binding seeded from it (e.g. the balancer missed the ServerHello, or a DTLS 1.3
    /// client switched to a CID issued in an encrypted NewConnectionId).
    CidByFlow,
    /// The CID was unknown and the address new: Maglev keyed by the CID, so every
    /// instance picks the same backend. The backend probably does not hold the session.
    UnknownCid,
    /// No CID: the client address's existing flow.
    Flow,
    /// No CID and a new address: Maglev keyed by the address (handshakes, cookie
    /// retries, DTLS without CID).
    Hashed,
}

/// Why a client datagram was not forwarded.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumCount, EnumIter, EnumMessage, IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum DropReason {
    /// The datagram was empty.
    Empty,
    /// A record started with a byte that is not DTLS (RFC 9147 §4.1 demultiplexing).
    NotDtls,
    /// A plaintext-format record had a non-DTLS version (e.g. TLS or garbage).
    BadVersion,
    /// The datagram ended inside a record header.
    TruncatedHeader,
    /// A record's length ran past the end of the datagram.
    LengthOverrun,
    /// The listener's CID format could not tell the CID's length.
    UnknownCidLength,
    /// The CID was longer than the supported maximum.
    CidTooLong,
    /// Records carried different CIDs and the listener's policy is `drop`.
    MixedCids,
    /// The split policy met more records than it plans for one datagram.
    TooManyRecords,
    /// No backend could take the datagram (none up, or all weights zero).
    NoBackend,
    /// The datagram would have created a flow, but its source (IPv4 address or IPv6
    /// /64) was over the listener's per-source new-flow limit. Datagrams of existing
    /// flows and CIDs that match an encoding or binding are never limited.
    SourceRateLimited,
    /// The datagram's source is an address the balancer's own listeners receive on (a
    /// spoofed source, or a loop through a backend configured at the listener's
    /// address): answering it would send the reply to the balancer itself.
    FromOwnAddress,
}

impl From<WireError> for DropReason {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Empty => DropReason::Empty,
            WireError::NotDtls { .. } => DropReason::NotDtls,
            WireError::BadVersion { .. } => DropReason::BadVersion,
            WireError::TruncatedHeader => DropReason::TruncatedHeader,
            WireError::LengthOverrun => DropReason::LengthOverrun,
            WireError::UnknownCidLength => DropReason::UnknownCidLength,
            WireError::CidTooLong => DropReason::CidTooLong,
        }
    }
}

/// Things worth counting that are not a datagram's single outcome.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, EnumCount, EnumIter, EnumMessage, IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum Event {
    /// A client datagram carried a ClientHello (a handshake starting, or its cookie retry).
    ClientHello,
    /// A backend answered with a HelloVerifyRequest (cookie exchange).
    HelloVerifyRequest,
    /// A binding was learned from a backend's ServerHello `connection_id` extension.
    BindingLearned,
    /// A learned binding replaced an existing binding to another backend.
    BindingReplaced,
    /// A binding was seeded from the flow a CID first appeared on.
    BindingSeeded,
    /// A seeded binding could not be stored: the table was full of learned bindings.
    BindingSeedRefused,
    /// A learned binding could not be stored: no sampled entry could be evicted.
    BindingLearnRefused,
    /// A ServerHello without (or with an empty) `connection_id` extension.
    ServerHelloWithoutCid,
    /// A ServerHello seen only in fragments: nothing learned.
    ServerHelloFragmented,
    /// A malformed plaintext handshake record on the backend-to-client path.
    ServerHelloMalformed,
    /// A known CID arrived from a client address without a flow: NAT rebinding (or a
    /// spoofed/replayed record; the backend's DTLS stack decides which).
    CidNewAddress,
    /// A CID routed to another backend than the client address's flow; the flow was
    /// not moved (an unauthenticated packet never moves a path).
    CidFlowConflict,
    /// A CID decoded to a server ID that no live backend has; routing fell through.
    EncodedUnknownServer,
    /// The listener has a CID format but the CID did not decode in it (QUIC-LB: the
    /// unroutable codepoint 0b111, a config rotation without configuration, too short,
    /// a server ID its configuration does not allocate); routing fell through.
    EncodedUndecodable,
    /// A binding pointed to a backend that is down or gone; routing fell through.
    BindingBackendUnavailable,
    /// A flow pointed to a backend that is down or gone; it was rescheduled.
    FlowRescheduled,
    /// A flow was created.
    FlowCreated,
    /// A flow expired (idle).
    FlowExpired,
    /// A live flow was evicted because the table was full.
    FlowEvicted,
    /// A binding expired (idle).
    BindingExpired,
    /// A live binding was evicted because the table was full.
    BindingEvicted,
    /// A datagram was split into per-backend datagrams (split policy).
    DatagramSplit,
    /// In a split datagram, a further CID group routed by encoding or binding (the
    /// datagram's own outcome is that of its first CID).
    SplitGroupKnown,
    /// In a split datagram, a further CID group with an unknown CID (Maglev on the CID).
    SplitGroupUnknown,
    /// A datagram with mixed CIDs was routed by its first CID (first policy).
    MixedCidsRoutedByFirst,
    /// A backend datagram for a client address with no flow (expired or never seen).
    ReturnWithoutFlow,
}

/// Counters for every outcome, drop reason and event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters {
    /// Indexed by `RouteOutcome as usize`.
    pub routed: [u64; RouteOutcome::COUNT],
    /// Indexed by `DropReason as usize`.
    pub dropped: [u64; DropReason::COUNT],
    /// Indexed by `Event as usize`.
    pub events: [u64; Event::COUNT],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            routed: [0; RouteOutcome::COUNT],
            dropped: [0; DropReason::COUNT],
            events: [0; Event::COUNT],
        }
    }
}

impl Counters {
    /// Count of one outcome.
    pub fn routed(&self, o: RouteOutcome) -> u64 {
        self.routed[o as usize]
    }

    /// Count of one drop reason.
    pub fn dropped(&self, d: DropReason) -> u64 {
        self.dropped[d as usize]
    }

    /// Count of one event.
    pub fn event(&self, e: Event) -> u64 {
        self.events[e as usize]
    }

    /// All datagrams routed (any outcome).
    pub fn total_routed(&self) -> u64 {
        self.routed.iter().sum()
    }

    /// All datagrams dropped (any reason).
    pub fn total_dropped(&self) -> u64 {
        self.dropped.iter().sum()
    }

    pub(crate) fn add_route(&mut self, o: RouteOutcome) {
        self.routed[o as usize] += 1;
    }

    pub(crate) fn add_drop(&mut self, d: DropReason) {
        self.dropped[d as usize] += 1;
    }

    pub(crate) fn add_event(&mut self, e: Event) {
        self.events[e as usize] += 1;
    }

    pub(crate) fn add_events(&mut self, e: Event, n: usize) {
        self.events[e as usize] += n as u64;
    }
}
