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
//!   each part goes to a backend that exists.
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
    Backend, BackendId, BackendState, CidRoute, CidRouting, ClientRoute, DropReason,
    MultiCidPolicy, Router, RouterConfig, Verdict,
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
    let mut cfg = RouterConfig::new(CidRouting::fixed(CID_LEN), [9, 8, 7, 6]);
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
                .map(|i| Backend::new(u16::from(i), format!("b{i}"), addr(200 + i)))
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
                // Whether this datagram may not be refused by the limiter.
                let has_flow = matches!(
                    r.explain_client(now, addr(*from)),
                    ClientRoute::Flow { serves: true, .. }
                );
                let known_cid = first_cid(kind).is_some_and(|c| {
                    matches!(
                        r.explain_cid(now, &c),
                        CidRoute::Encoded { serves: true, .. }
                            | CidRoute::Bound { serves: true, .. }
                    )
                });
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
                        assert!(!has_flow, "an existing flow was rate limited");
                        assert!(!known_cid, "a known CID was rate limited");
                    }
                    Verdict::Drop(_) => {}
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
