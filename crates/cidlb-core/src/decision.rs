//! The routing decision for one client datagram: which backend, and why.
//!
//! This is the one place where the routing order lives. [`decide_cid`] (datagrams that
//! carry a CID) and [`decide_address`] (datagrams without one) take their facts from a
//! [`Lookups`] implementation and ask for them in the order of the steps below, so that
//! a lookup that is not needed is never made:
//!
//! - [`Router::route`](crate::Router::route) answers from its tables, refreshing and
//!   counting as it goes, and then applies the decision (forwards, seeds, moves flows);
//! - [`Router::explain_cid`](crate::Router::explain_cid) and
//!   [`Router::explain_client`](crate::Router::explain_client) answer from the same
//!   tables without changing them, so an explanation is the decision that routing
//!   would take (a property test holds the two equal);
//! - an in-kernel data plane (XDP) mirrors these steps over its own maps.
//!
//! ## A datagram with a CID ([`decide_cid`])
//!
//! 1. **Learned binding.** A binding learned from a backend's ServerHello is that
//!    backend's own word: it wins over everything while the backend serves (is not
//!    down). A server that issues random CIDs hits another backend's server ID now and
//!    then, so a decoding must never override it.
//! 2. **Encoded.** The listener's CID format decodes a server ID; the backend that has
//!    it takes the datagram while it serves (even draining: its sessions stay).
//! 3. **Seeded binding.** A binding seeded from the flow the CID first appeared on
//!    (the balancer missed the ServerHello: DTLS 1.3 NewConnectionId, a restart,
//!    direct routing) routes while its backend serves.
//! 4. **Flow.** The sender's address has a flow to a serving backend: that backend. A
//!    binding is seeded for the CID only if the CID has none, or has one to a backend
//!    that no longer exists: a binding to a backend that is merely down (a stall, a
//!    failed health check) is kept, so its sessions come back with it.
//! 5. **Hashed.** Maglev keyed by the CID (every instance agrees), counted as an
//!    unknown CID; `None` when no backend takes new flows.
//!
//! ## A datagram without a CID ([`decide_address`])
//!
//! 1. **Flow.** The sender's address has a flow to a serving backend: that backend.
//! 2. **Hashed.** Maglev keyed by the address (cookie retries land where the cookie
//!    was issued, on every instance); `None` when no backend takes new flows.

use crate::backend::{BackendId, ServerId};
use crate::keys::BindingSource;

/// What the listener's CID format makes of a CID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// The listener has no CID format.
    NoFormat,
    /// The format does not decode this CID (QUIC-LB's unroutable codepoint, an unknown
    /// configuration, a wrong length...).
    Undecodable,
    /// It decodes to a server ID that no backend has.
    UnknownServer(ServerId),
    /// It decodes to `backend`'s server ID.
    Backend {
        /// The server ID in the CID.
        server_id: ServerId,
        /// The backend that has it.
        backend: BackendId,
        /// Whether that backend serves (exists and is not down).
        serves: bool,
    },
}

/// A CID's binding, as the decision needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingFacts {
    /// The bound backend.
    pub backend: BackendId,
    /// Learned from a ServerHello or seeded from a flow.
    pub source: BindingSource,
    /// Whether the backend serves (exists and is not down).
    pub serves: bool,
    /// Whether the backend is still in the listener's backend set (down or not).
    pub exists: bool,
}

/// The sender's flow, as the decision needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowFacts {
    /// The flow's backend.
    pub backend: BackendId,
    /// Whether that backend serves (exists and is not down).
    pub serves: bool,
    /// Whether the flow may seed another binding (each flow seeds a bounded number).
    pub may_seed: bool,
}

/// The facts a decision asks for, each at most once and in the order of the steps.
pub trait Lookups {
    /// The CID's binding, if it has one (step 1; also used by step 3 and 4).
    fn binding(&mut self) -> Option<BindingFacts>;
    /// What the CID format decodes (step 2).
    fn decode(&mut self) -> Decoded;
    /// The sender's flow, if it has one (step 4 of a CID, step 1 without).
    fn flow(&mut self) -> Option<FlowFacts>;
    /// Maglev's choice for the CID, or for the address when there is no CID (last
    /// step); `None` when no backend takes new flows.
    fn hashed(&mut self) -> Option<BackendId>;
}

/// Where a datagram with a CID goes, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CidDecision {
    /// Step 1: a learned binding.
    Learned(BackendId),
    /// Step 2: the CID decodes to this backend's server ID.
    Encoded {
        /// The backend.
        backend: BackendId,
        /// Its server ID.
        server_id: ServerId,
    },
    /// Step 3: a seeded binding.
    Seeded(BackendId),
    /// Step 4: the sender's flow; `seed` says whether a binding is seeded for the CID.
    ByFlow {
        /// The flow's backend.
        backend: BackendId,
        /// Seed a binding CID → backend.
        seed: bool,
    },
    /// Step 5: Maglev on the CID (`None`: no backend takes new flows: drop).
    Hashed(Option<BackendId>),
}

impl CidDecision {
    /// The backend the datagram goes to (`None`: dropped for want of a backend).
    pub fn backend(&self) -> Option<BackendId> {
        match *self {
            CidDecision::Learned(b) | CidDecision::Seeded(b) => Some(b),
            CidDecision::Encoded { backend, .. } | CidDecision::ByFlow { backend, .. } => {
                Some(backend)
            }
            CidDecision::Hashed(b) => b,
        }
    }

    /// Whether the CID itself said where to go (steps 1–3: a binding or the encoding),
    /// as opposed to the sender's address or a hash.
    pub fn is_known(&self) -> bool {
        matches!(
            self,
            CidDecision::Learned(_) | CidDecision::Encoded { .. } | CidDecision::Seeded(_)
        )
    }
}

/// Decides where a datagram whose (first) CID the lookups describe goes (module docs:
/// steps 1–5).
// Inlined into each caller: on the hot path (a learned binding) it is a few
// compares, and a call costs more than the decision (bench/callgrind.sh).
#[inline(always)]
pub fn decide_cid(l: &mut impl Lookups) -> CidDecision {
    // Step 1: the backend's own word.
    let binding = l.binding();
    if let Some(b) = binding {
        if b.source == BindingSource::Learned && b.serves {
            return CidDecision::Learned(b.backend);
        }
    }
    // Step 2: the encoding.
    if let Decoded::Backend {
        server_id,
        backend,
        serves: true,
    } = l.decode()
    {
        return CidDecision::Encoded { backend, server_id };
    }
    // Step 3: a seeded binding.
    if let Some(b) = binding {
        if b.source == BindingSource::Seeded && b.serves {
            return CidDecision::Seeded(b.backend);
        }
    }
    // Step 4: the sender's flow; never seed over a binding whose backend still exists.
    if let Some(f) = l.flow() {
        if f.serves {
            let seed = f.may_seed && binding.is_none_or(|b| !b.exists);
            return CidDecision::ByFlow {
                backend: f.backend,
                seed,
            };
        }
    }
    // Step 5: Maglev on the CID.
    CidDecision::Hashed(l.hashed())
}

/// Where a datagram without CID goes, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressDecision {
    /// Step 1: the sender's flow.
    Flow(BackendId),
    /// Step 2: Maglev on the address (`None`: no backend takes new flows: drop).
    Hashed(Option<BackendId>),
}

impl AddressDecision {
    /// The backend the datagram goes to (`None`: dropped for want of a backend).
    pub fn backend(&self) -> Option<BackendId> {
        match *self {
            AddressDecision::Flow(b) => Some(b),
            AddressDecision::Hashed(b) => b,
        }
    }
}

/// Decides where a datagram without CID goes (module docs).
pub fn decide_address(l: &mut impl Lookups) -> AddressDecision {
    if let Some(f) = l.flow() {
        if f.serves {
            return AddressDecision::Flow(f.backend);
        }
    }
    AddressDecision::Hashed(l.hashed())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixed facts, recording which were asked for.
    #[derive(Default)]
    struct Facts {
        binding: Option<BindingFacts>,
        decoded: Option<Decoded>,
        flow: Option<FlowFacts>,
        hashed: Option<BackendId>,
        asked: Vec<&'static str>,
    }

    impl Lookups for Facts {
        fn binding(&mut self) -> Option<BindingFacts> {
            self.asked.push("binding");
            self.binding
        }
        fn decode(&mut self) -> Decoded {
            self.asked.push("decode");
            self.decoded.unwrap_or(Decoded::NoFormat)
        }
        fn flow(&mut self) -> Option<FlowFacts> {
            self.asked.push("flow");
            self.flow
        }
        fn hashed(&mut self) -> Option<BackendId> {
            self.asked.push("hashed");
            self.hashed
        }
    }

    const A: BackendId = BackendId(0);
    const B: BackendId = BackendId(1);
    const C: BackendId = BackendId(2);

    fn sid(x: u8) -> ServerId {
        ServerId::new(&[x]).unwrap()
    }

    fn bound(
        backend: BackendId,
        source: BindingSource,
        serves: bool,
        exists: bool,
    ) -> BindingFacts {
        BindingFacts {
            backend,
            source,
            serves,
            exists,
        }
    }

    fn flow(backend: BackendId, serves: bool) -> FlowFacts {
        FlowFacts {
            backend,
            serves,
            may_seed: true,
        }
    }

    #[test]
    fn a_learned_binding_beats_the_encoding_and_nothing_else_is_asked() {
        let mut f = Facts {
            binding: Some(bound(B, BindingSource::Learned, true, true)),
            decoded: Some(Decoded::Backend {
                server_id: sid(1),
                backend: A,
                serves: true,
            }),
            ..Facts::default()
        };
        assert_eq!(decide_cid(&mut f), CidDecision::Learned(B));
        assert_eq!(f.asked, ["binding"]);
    }

    #[test]
    fn the_encoding_beats_a_seeded_binding() {
        let mut f = Facts {
            binding: Some(bound(B, BindingSource::Seeded, true, true)),
            decoded: Some(Decoded::Backend {
                server_id: sid(1),
                backend: A,
                serves: true,
            }),
            ..Facts::default()
        };
        assert_eq!(
            decide_cid(&mut f),
            CidDecision::Encoded {
                backend: A,
                server_id: sid(1)
            }
        );
    }

    #[test]
    fn a_down_learned_backend_falls_through_but_its_binding_is_never_seeded_over() {
        let mut f = Facts {
            binding: Some(bound(B, BindingSource::Learned, false, true)),
            decoded: Some(Decoded::NoFormat),
            flow: Some(flow(C, true)),
            ..Facts::default()
        };
        assert_eq!(
            decide_cid(&mut f),
            CidDecision::ByFlow {
                backend: C,
                seed: false
            }
        );
        // A backend that is gone from the set may be seeded over.
        f.binding = Some(bound(B, BindingSource::Learned, false, false));
        assert_eq!(
            decide_cid(&mut f),
            CidDecision::ByFlow {
                backend: C,
                seed: true
            }
        );
    }

    #[test]
    fn no_binding_no_flow_is_hashed() {
        let mut f = Facts {
            decoded: Some(Decoded::UnknownServer(sid(9))),
            flow: Some(flow(A, false)),
            hashed: Some(C),
            ..Facts::default()
        };
        assert_eq!(decide_cid(&mut f), CidDecision::Hashed(Some(C)));
        assert_eq!(f.asked, ["binding", "decode", "flow", "hashed"]);
        let mut f = Facts::default();
        assert_eq!(decide_address(&mut f), AddressDecision::Hashed(None));
        let mut f = Facts {
            flow: Some(flow(B, true)),
            ..Facts::default()
        };
        assert_eq!(decide_address(&mut f), AddressDecision::Flow(B));
        assert_eq!(f.asked, ["flow"]);
    }
}
