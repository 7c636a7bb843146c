//! Arbitrary event sequences against the router: no panic, tables within their bounds,
//! every client datagram gets exactly one outcome, forwarded backends exist, split plans
//! tile their datagram, explanations predict routing exactly, and a client datagram
//! never rebinds a CID whose backend is in the set. The property body is `cidlb_core::invariants::check_events`,
//! shared with the `router_events` fuzz target (one body, two drivers).

use cidlb_core::invariants::{check_events, check_events_with, decode, policy, Ev, Kind, BACKENDS};
use proptest::prelude::*;

/// CIDs from a small space (4 values per octet), so that the CIDs that backends
/// announce and clients send meet, and collide with the test format's encoding.
fn cid() -> impl Strategy<Value = [u8; 4]> {
    [0u8..4, 0u8..4, 0u8..4, 0u8..4]
}

/// Client addresses from a small space, so that flows are reused and rebinding happens.
fn who() -> impl Strategy<Value = u8> {
    prop_oneof![0u8..8, any::<u8>()]
}

fn ev() -> impl Strategy<Value = Ev> {
    let kind = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Kind::Raw),
        cid().prop_map(Kind::Cid),
        (cid(), cid()).prop_map(|(a, b)| Kind::Mixed(a, b)),
        Just(Kind::Hello),
    ];
    prop_oneof![
        4 => (who(), kind).prop_map(|(from, kind)| Ev::Client { from, kind }),
        2 => (0u8..=BACKENDS, who(), cid(), any::<bool>())
            .prop_map(|(b, to, cid, hello)| Ev::Backend { b, to, cid, hello }),
        1 => (0u16..4000).prop_map(Ev::Wait),
        1 => (0u8..=BACKENDS, 0u8..3).prop_map(|(b, s)| Ev::State(b, s)),
        1 => Just(Ev::Sweep),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn router_invariants(events in proptest::collection::vec(ev(), 1..200), p in 0u8..3) {
        check_events(policy(p), &events);
    }

    /// The same with a tight per-source new-flow limit: it refuses only datagrams that
    /// would create a flow (never existing flows or known CIDs).
    #[test]
    fn router_invariants_with_source_limit(
        events in proptest::collection::vec(ev(), 1..200),
        p in 0u8..3,
        rate in 0u32..3,
        burst in 0u32..4,
    ) {
        check_events_with(policy(p), Some((rate, burst)), &events);
    }

    /// The fuzz target's decoder accepts any bytes, and what it decodes keeps the
    /// invariants too (the fuzz target's driver, on proptest's inputs).
    #[test]
    fn decoded_bytes_keep_invariants(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let (p, events) = decode(&data);
        check_events(p, &events);
    }
}
