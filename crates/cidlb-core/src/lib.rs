//! The sans-IO routing core of cidlb.
//!
//! A [`Router`] holds one listener's state: the backends, a flow table (client
//! address → backend), a CID binding table (CID → backend that issued it) and a Maglev
//! table for new flows. It reads no clock and touches no socket: every entry point takes
//! `now`, so the same inputs always give the same decisions.
//!
//! Routing order for a client datagram ([`decision`], where it is written once and
//! documented step by step; `docs/architecture.md`):
//!
//! 1. With a CID (the first record that carries one): a binding learned from a
//!    backend's ServerHello, else the CID format's encoding (a server ID of a live
//!    backend), else a seeded binding, else the client address's flow (seeding a
//!    binding when the CID has none), else Maglev keyed by the CID, counted as
//!    unknown.
//! 2. Without a CID: the address's flow, else Maglev keyed by the address.
//!
//! Every outcome and drop reason is a variant of [`RouteOutcome`] / [`DropReason`] with
//! a counter in [`Counters`].
//!
//! ```
//! use std::time::Instant;
//! use cidlb_core::{Backend, CidRouting, Router, RouterConfig, Verdict};
//!
//! let now = Instant::now();
//! let mut r = Router::new(RouterConfig::new(CidRouting::fixed(4), [1, 2, 3, 4]), now);
//! r.set_backends(vec![
//!     Backend::new(0, "a", "127.0.0.1:5684".parse().unwrap()),
//!     Backend::new(1, "b", "127.0.0.1:5685".parse().unwrap()),
//! ]).unwrap();
//! let client = "192.0.2.7:40000".parse().unwrap();
//! // A plaintext handshake record (no CID): scheduled by Maglev on the address.
//! let hello = [22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1];
//! assert!(matches!(r.route(now, client, &hello), Verdict::Forward { .. }));
//! ```

#![forbid(unsafe_code)]

mod backend;
pub mod decision;
mod health;
mod index;
#[doc(hidden)]
pub mod invariants;
mod keys;
pub mod listing;
pub mod maglev;
pub mod notice;
mod outcome;
pub mod own;
pub mod plane;
mod router;
pub mod table;

/// Longest CID the balancer handles (the wire parser's bound, re-exported).
pub use cidlb_wire::MAX_CID_LEN;

pub use backend::{Backend, BackendId, BackendState, ServerId};
pub use decision::{AddressDecision, CidDecision, Decoded};
pub use health::{effective_state, HealthThresholds, HealthTracker};
pub use keys::{Binding, BindingSource, CidKey, Flow, FlowKey};
pub use notice::Notice;
pub use outcome::{Counters, DropReason, Event, RouteOutcome};
pub use own::OwnAddresses;
pub use router::{
    BackendSetError, BindingView, CidExplanation, CidFormat, CidRouting, ClientExplanation,
    FlowView, MultiCidPolicy, PreparedBackends, ReturnOutcome, Router, RouterConfig, SplitPart,
    Verdict, MAX_SPLIT_RECORDS, WARM_BATCH,
};
