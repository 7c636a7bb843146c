//! Notices: the routing events an operator wants to see one by one (a new session, a CID
//! learned or seeded, a known CID from a new address, an eviction), with their
//! addresses, CIDs and backends. Counters count every event ([`crate::Event`]); a
//! notice is the same event with its details, for a log line.
//!
//! The router only queues them (sans-IO), and only when
//! [`RouterConfig::notices`](crate::RouterConfig::notices) is not 0; the data plane takes
//! them after each batch ([`Router::take_notices`](crate::Router::take_notices)) and
//! logs them at a bounded rate. The queue is bounded ([`MAX_NOTICES`]): what does not
//! fit is counted, never stored.

use std::net::SocketAddr;

use crate::backend::BackendId;
use crate::keys::CidKey;

/// Most notices queued between two takes (more are counted as dropped).
pub const MAX_NOTICES: usize = 1024;

/// One notable routing event, with its details.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A handshake's first datagram (a ClientHello from an address without flow) and
    /// the backend Maglev chose for it.
    NewSession {
        /// The client.
        client: SocketAddr,
        /// The backend chosen.
        backend: BackendId,
    },
    /// A CID learned from a backend's ServerHello.
    CidLearned {
        /// The CID.
        cid: CidKey,
        /// The backend that announced it.
        backend: BackendId,
        /// The client the ServerHello went to.
        client: SocketAddr,
    },
    /// A CID seeded from the flow it first appeared on.
    CidSeeded {
        /// The CID.
        cid: CidKey,
        /// The flow's backend.
        backend: BackendId,
        /// The client.
        client: SocketAddr,
    },
    /// A known CID arrived from an address without a flow: NAT rebinding (or a spoofed
    /// or replayed record; the backend's DTLS stack decides which).
    CidNewAddress {
        /// The CID.
        cid: CidKey,
        /// Its backend.
        backend: BackendId,
        /// The new address.
        client: SocketAddr,
    },
    /// A live flow was evicted to make room (the flow table was full).
    FlowEvicted {
        /// The flow's client.
        client: SocketAddr,
        /// Its backend.
        backend: BackendId,
    },
    /// A live CID binding was evicted to make room (the binding table was full).
    BindingEvicted {
        /// The CID.
        cid: CidKey,
        /// Its backend.
        backend: BackendId,
    },
}

impl Notice {
    /// The event's name: the same word as its counter's label in
    /// `cidlb_events_total{event=...}` (or `new_session`).
    pub fn name(&self) -> &'static str {
        match self {
            Notice::NewSession { .. } => "new_session",
            Notice::CidLearned { .. } => "binding_learned",
            Notice::CidSeeded { .. } => "binding_seeded",
            Notice::CidNewAddress { .. } => "cid_new_address",
            Notice::FlowEvicted { .. } => "flow_evicted",
            Notice::BindingEvicted { .. } => "binding_evicted",
        }
    }

    /// The backend it concerns.
    pub fn backend(&self) -> BackendId {
        match *self {
            Notice::NewSession { backend, .. }
            | Notice::CidLearned { backend, .. }
            | Notice::CidSeeded { backend, .. }
            | Notice::CidNewAddress { backend, .. }
            | Notice::FlowEvicted { backend, .. }
            | Notice::BindingEvicted { backend, .. } => backend,
        }
    }

    /// The client address it concerns, if any.
    pub fn client(&self) -> Option<SocketAddr> {
        match *self {
            Notice::NewSession { client, .. }
            | Notice::CidLearned { client, .. }
            | Notice::CidSeeded { client, .. }
            | Notice::CidNewAddress { client, .. }
            | Notice::FlowEvicted { client, .. } => Some(client),
            Notice::BindingEvicted { .. } => None,
        }
    }

    /// The CID it concerns, if any.
    pub fn cid(&self) -> Option<&[u8]> {
        match self {
            Notice::CidLearned { cid, .. }
            | Notice::CidSeeded { cid, .. }
            | Notice::CidNewAddress { cid, .. }
            | Notice::BindingEvicted { cid, .. } => Some(cid.as_bytes()),
            Notice::NewSession { .. } | Notice::FlowEvicted { .. } => None,
        }
    }
}
