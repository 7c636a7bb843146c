//! Invariants of the router under arbitrary event sequences, shared by the property
//! test (`tests/props.rs`, events from proptest strategies) and the `router_events`
//! fuzz target (events decoded from the fuzzer's bytes by [`decode`]): one property
//! body, two drivers, as `cidlb_wire::invariants` does for the record walker.
//!
//! [`check_events`] runs the events against a [`Router`] with small table bounds
//! ([`MAX_FLOWS`], [`MAX_BINDINGS`]) and panics if an invariant breaks:
//!
//! - no panic anywhere (route, return path, sweeps, state changes);
//! - after every event, `flow_count() <= MAX_FLOWS` and `binding_count() <= MAX_BINDINGS`;
//! - every client datagram gets exactly one outcome: routed + dropped counters grow by
//!   exactly 1;
//! - a forwarded datagram goes to a backend that exists;
//! - a split datagram's parts tile it (start at 0, contiguous, end at its length) and
//!   each part goes to a backend that exists;
//! - **explanation is routing**: before each client datagram with one CID (or none),
//!   [`Router::explain_cid`] / [`Router::explain_client`] for its sender predict the
//!   verdict exactly (backend and outcome; a predicted new flow may instead be refused
//!   by the per-source limit);
//! - **bindings are kept**: a client datagram never changes the backend of its CID's
//!   existing binding while that backend is in the set (only a backend's ServerHello
//!   rebinds a CID), whatever the CID decodes to and whether the backend is down.
//!
//! The router under test has a CID format ([`TestFormat`]) under which CIDs that
//! start with 1 or 2 decode to backends 0 and 1, 3 to a server ID nobody has, and 0
//! does not decode; backends 2 and 3 have no server ID, so their learned CIDs collide
//! with the encoding now and then, as random CIDs of real servers do.
//!
//! [`check_events_with`] also runs them with the per-source new-flow limit on and
//! checks, in addition:
//!
//! - the limiter's table stays within its bound (`MAX_FLOWS` sources);
//! - a datagram is refused as [`DropReason::SourceRateLimited`] only if it would have
//!   created a flow: never when its sender's address has a flow to a serving backend,
//!   and never when its (first) CID decodes or is bound to a serving backend.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cidlb_wire::build;

use crate::{
    AddressDecision, Backend, BackendId, BackendState, CidDecision, CidFormat, CidRouting,
    DropReason, MultiCidPolicy, RouteOutcome, Router, RouterConfig, ServerId, Verdict,
};

/// Flow table bound of the router under test.
pub const MAX_FLOWS: usize = 16;
/// Binding table bound of the router under test.
pub const MAX_BINDINGS: usize = 8;
/// Backends of the router under test (ids `0..BACKENDS`); events may name others.
pub const BACKENDS: u8 = 4;
/// CID length of the router under test.
pub const CID_LEN: usize = 4;

/// One input to the router.
#[derive(Clone, Debug)]
pub enum Ev {
    /// A client datagram from client address number `from`.
    Client {
        /// Client address number (see [`addr`]).
        from: u8,
        /// What the datagram is.
        kind: Kind,
    },
    /// A backend datagram from backend `b` to client address number `to`.
    Backend {
        /// Backend id (may name no backend).
        b: u8,
        /// Client address number.
        to: u8,
        /// The CID it carries or announces.
        cid: [u8; 4],
        /// A ServerHello announcing `cid` (else a CID record).
        hello: bool,
    },
    /// Time passes (seconds).
    Wait(u16),
    /// Backend `.0` goes to state `.1` (0 up, 1 draining, 2 down; others: up).
    State(u8, u8),
    /// An incremental sweep.
    Sweep,
}

/// A client datagram.
#[derive(Clone, Debug)]
pub enum Kind {
    /// Arbitrary bytes.
    Raw(Vec<u8>),
    /// One `tls12_cid` record with this CID.
    Cid([u8; 4]),
    /// A CID record, an alert, and a CID record with another CID.
    Mixed([u8; 4], [u8; 4]),
    /// A ClientHello.
    Hello,
}

/// Client (and backend) address number `i`.
pub fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, i / 16, i % 16], 1000 + u16::from(i)))
}

/// The multi-CID policy number `p` (modulo 3): first, split, drop.
pub fn policy(p: u8) -> MultiCidPolicy {
    [
        MultiCidPolicy::First,
        MultiCidPolicy::Split,
        MultiCidPolicy::Drop,
    ][usize::from(p % 3)]
}

/// The CID format of the router under test (see the module docs).
#[derive(Debug)]
pub struct TestFormat;

impl CidFormat for TestFormat {
    fn cid_len(&self, _at: &[u8]) -> Option<usize> {
        None
    }

    fn server_id(&self, cid: &[u8]) -> Option<ServerId> {
        match cid.first() {
            Some(&b @ 1..=3) => ServerId::new(&[b]),
            _ => None,
        }
    }
}

/// The bytes a client event sends.
pub fn client_datagram(kind: &Kind) -> Vec<u8> {
    match kind {
        Kind::Raw(d) => d.clone(),
        Kind::Cid(c) => {
            let mut d = Vec::new();
            build::cid12(1, 1, c, b"x", &mut d);
            d
        }
        Kind::Mixed(a, b) => {
            let mut d = Vec::new();
            build::cid12(1, 1, a, b"x", &mut d);
            build::plaintext(cidlb_wire::ContentType::ALERT, 0, 1, &[1, 0], &mut d);
            build::cid12(1, 2, b, b"y", &mut d);
            d
        }
        Kind::Hello => build::client_hello_datagram([0; 32], &[], None),
    }
}

/// Runs `events` against a fresh router (multi-CID policy `policy`) and panics if an
/// invariant breaks (see the module documentation).
pub fn check_events(policy: MultiCidPolicy, events: &[Ev]) {
    check_events_with(policy, None, events);
}

/// The first CID of a client event's datagram, if it has one.
fn first_cid(kind: &Kind) -> Option<[u8; 4]> {
    match kind {
        Kind::Cid(c) | Kind::Mixed(c, _) => Some(*c),
        Kind::Raw(_) | Kind::Hello => None,
    }
}

/// [`check_events`] with a per-source new-flow limit (`(rate per second, burst)`,
/// see [`RouterConfig::new_flows_per_source`]), checking the limiter's invariants too.
pub fn check_events_with(policy: MultiCidPolicy, limit: Option<(u32, u32)>, events: &[Ev]) {
    let t0 = Instant::now();
    let mut now = t0;
    let cid_routing = CidRouting {
        fixed_len: Some(CID_LEN),
        format: Some(std::sync::Arc::new(TestFormat)),
    };
    let mut cfg = RouterConfig::new(cid_routing, [9, 8, 7, 6]);
    cfg.max_flows = MAX_FLOWS;
    cfg.max_bindings = MAX_BINDINGS;
    cfg.maglev_table_size = 257;
    cfg.flow_idle = Duration::from_secs(300);
    cfg.binding_idle = Duration::from_secs(3600);
    cfg.multi_cid = policy;
    cfg.new_flows_per_source = limit;
    let make = || {
        let mut r = Router::new(cfg.clone(), t0);
        r.set_backends(
            (0..BACKENDS)
                .map(|i| {
                    let mut b = Backend::new(u16::from(i), format!("b{i}"), addr(200 + i));
                    b.server_id = (i < 2).then(|| ServerId::new(&[i + 1])).flatten();
                    b
                })
                .collect(),
        )
        .expect("a valid backend set");
        r
    };
    let mut r = make();
    // A twin that warms every datagram before routing it: warming changes nothing.
    let mut twin = make();
    for e in events {
        match e {
            Ev::Client { from, kind } => {
                let d = client_datagram(kind);
                // What the explanation predicts for this datagram (one CID or none).
                let predicted = predict(&r, now, addr(*from), kind, policy);
                // The CID's binding before: a client datagram must not rebind it.
                let bound_before = first_cid(kind).and_then(|c| r.binding(now, &c));
                let before = r.counters().total_routed() + r.counters().total_dropped();
                let v = r.route(now, addr(*from), &d);
                twin.warm(
                    [
                        (addr(*from), d.as_slice()),
                        (addr(*from ^ 1), &d[d.len() / 2..]),
                    ]
                    .into_iter(),
                );
                assert_eq!(
                    twin.route(now, addr(*from), &d),
                    v,
                    "warming changed a verdict"
                );
                let after = r.counters().total_routed() + r.counters().total_dropped();
                assert_eq!(after, before + 1, "exactly one outcome per datagram");
                match v {
                    Verdict::Forward { backend, .. } => {
                        assert!(r.backend(backend).is_some(), "forwarded to no backend")
                    }
                    Verdict::Split => {
                        let parts = r.split_parts();
                        assert!(!parts.is_empty(), "empty split");
                        assert_eq!(parts[0].start, 0, "split starts at 0");
                        assert_eq!(parts[parts.len() - 1].end, d.len(), "split ends early");
                        for w in parts.windows(2) {
                            assert_eq!(w[0].end, w[1].start, "split parts do not tile");
                        }
                        for p in parts {
                            assert!(p.start < p.end, "empty split part");
                            assert!(r.backend(p.backend).is_some(), "split to no backend");
                        }
                    }
                    Verdict::Drop(DropReason::SourceRateLimited) => {
                        assert!(limit.is_some(), "rate limited without a limit");
                    }
                    Verdict::Drop(_) => {}
                }
                if let Some(p) = predicted {
                    check_prediction(p, v);
                }
                if let (Some(c), Some(before)) = (first_cid(kind), bound_before) {
                    if r.backend(before.backend).is_some() {
                        let after = r.binding(now, &c).map(|b| (b.backend, b.source));
                        assert_eq!(
                            after,
                            Some((before.backend, before.source)),
                            "a client datagram rebound a CID"
                        );
                    }
                }
            }
            Ev::Backend { b, to, cid, hello } => {
                let d = if *hello {
                    build::server_hello_datagram([0; 32], Some(cid))
                } else {
                    let mut d = Vec::new();
                    build::cid12(1, 1, cid, b"r", &mut d);
                    d
                };
                r.handle_backend_datagram(now, BackendId(u16::from(*b)), addr(*to), &d);
                twin.handle_backend_datagram(now, BackendId(u16::from(*b)), addr(*to), &d);
            }
            Ev::Wait(s) => now += Duration::from_secs(u64::from(*s)),
            Ev::State(b, s) => {
                let s = match s {
                    1 => BackendState::Draining,
                    2 => BackendState::Down,
                    _ => BackendState::Up,
                };
                r.set_backend_state(BackendId(u16::from(*b)), s);
                twin.set_backend_state(BackendId(u16::from(*b)), s);
            }
            Ev::Sweep => {
                r.sweep(now, 8);
                twin.sweep(now, 8);
            }
        }
        assert!(r.flow_count() <= MAX_FLOWS, "flow table over its bound");
        assert!(
            r.binding_count() <= MAX_BINDINGS,
            "binding table over its bound"
        );
        assert!(
            r.source_count() <= MAX_FLOWS,
            "limiter table over its bound"
        );
    }
}

/// What the explanation says routing will do with a client event's datagram: a CID
/// decision, an address decision, or nothing to compare (raw bytes; mixed CIDs under a
/// policy other than `first`).
#[derive(Clone, Copy, Debug)]
enum Prediction {
    Cid(CidDecision),
    Address(AddressDecision),
}

fn predict(
    r: &Router,
    now: Instant,
    from: SocketAddr,
    kind: &Kind,
    policy: MultiCidPolicy,
) -> Option<Prediction> {
    match kind {
        Kind::Cid(c) => Some(Prediction::Cid(r.explain_cid(now, c, Some(from)).decision)),
        Kind::Mixed(c, _) if policy == MultiCidPolicy::First => {
            Some(Prediction::Cid(r.explain_cid(now, c, Some(from)).decision))
        }
        Kind::Hello => Some(Prediction::Address(r.explain_client(now, from).decision)),
        Kind::Mixed(..) | Kind::Raw(_) => None,
    }
}

/// The verdict is what the prediction said: same backend, same outcome; a predicted
/// new flow may be refused by the per-source limit instead, nothing else may.
fn check_prediction(p: Prediction, v: Verdict) {
    let (backend, outcome, new_flow) = match p {
        Prediction::Cid(d) => {
            let outcome = match d {
                CidDecision::Learned(_) => RouteOutcome::Learned,
                CidDecision::Encoded { .. } => RouteOutcome::Encoded,
                CidDecision::Seeded(_) => RouteOutcome::Seeded,
                CidDecision::ByFlow { .. } => RouteOutcome::CidByFlow,
                CidDecision::Hashed(_) => RouteOutcome::UnknownCid,
            };
            (d.backend(), outcome, matches!(d, CidDecision::Hashed(_)))
        }
        Prediction::Address(d) => {
            let outcome = match d {
                AddressDecision::Flow(_) => RouteOutcome::Flow,
                AddressDecision::Hashed(_) => RouteOutcome::Hashed,
            };
            (
                d.backend(),
                outcome,
                matches!(d, AddressDecision::Hashed(_)),
            )
        }
    };
    match (backend, v) {
        (
            Some(b),
            Verdict::Forward {
                backend,
                outcome: o,
            },
        ) => {
            assert_eq!(
                (backend, o),
                (b, outcome),
                "explanation {p:?} but routed {v:?}"
            )
        }
        (Some(_), Verdict::Drop(DropReason::SourceRateLimited)) if new_flow => {}
        (None, Verdict::Drop(DropReason::NoBackend)) => {}
        _ => panic!("explanation {p:?} but routed {v:?}"),
    }
}

/// Decodes fuzzer bytes into a policy and an event sequence (every input decodes; the
/// input's end ends the sequence). The first byte picks the policy; then each event is
/// a tag byte and its arguments:
///
/// | tag % 8 | event | arguments |
/// | --- | --- | --- |
/// | 0 | raw client datagram | from, length n (% 64), n bytes |
/// | 1, 2 | CID record (CID of 4 values per byte: small CID space, so CIDs collide) | from, cid(4) |
/// | 3 | mixed-CID datagram | from, cid(4), cid(4) |
/// | 4 | ClientHello | from |
/// | 5 | backend datagram | b (% 5: one that does not exist), to, cid(4), hello (bit 0) |
/// | 6 | wait, or a backend state change | 2 bytes: seconds (low bit 0), or backend, state |
/// | 7 | sweep | — |
pub fn decode(data: &[u8]) -> (MultiCidPolicy, Vec<Ev>) {
    let mut it = data.iter().copied();
    let p = policy(it.next().unwrap_or(0));
    let mut events = Vec::new();
    let cid = |it: &mut dyn Iterator<Item = u8>| -> Option<[u8; 4]> {
        let mut c = [0u8; 4];
        for b in &mut c {
            *b = it.next()? % 4;
        }
        Some(c)
    };
    while let Some(tag) = it.next() {
        let ev = match tag % 8 {
            0 => {
                let (Some(from), Some(n)) = (it.next(), it.next()) else {
                    break;
                };
                let d: Vec<u8> = it.by_ref().take(usize::from(n % 64)).collect();
                Ev::Client {
                    from,
                    kind: Kind::Raw(d),
                }
            }
            1 | 2 => {
                let Some(from) = it.next() else { break };
                let Some(c) = cid(&mut it) else { break };
                Ev::Client {
                    from,
                    kind: Kind::Cid(c),
                }
            }
            3 => {
                let Some(from) = it.next() else { break };
                let (Some(a), Some(b)) = (cid(&mut it), cid(&mut it)) else {
                    break;
                };
                Ev::Client {
                    from,
                    kind: Kind::Mixed(a, b),
                }
            }
            4 => {
                let Some(from) = it.next() else { break };
                Ev::Client {
                    from,
                    kind: Kind::Hello,
                }
            }
            5 => {
                let (Some(b), Some(to)) = (it.next(), it.next()) else {
                    break;
                };
                let Some(c) = cid(&mut it) else { break };
                let Some(h) = it.next() else { break };
                Ev::Backend {
                    b: b % (BACKENDS + 1),
                    to,
                    cid: c,
                    hello: h & 1 == 1,
                }
            }
            6 => {
                let (Some(a), Some(b)) = (it.next(), it.next()) else {
                    break;
                };
                if a & 1 == 0 {
                    Ev::Wait(u16::from_le_bytes([a, b]) % 4000)
                } else {
                    Ev::State((a >> 1) % (BACKENDS + 1), b % 3)
                }
            }
            _ => Ev::Sweep,
        };
        events.push(ev);
    }
    (p, events)
}
