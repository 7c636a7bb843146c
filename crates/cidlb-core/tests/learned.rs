//! Learned bindings are authoritative: a CID learned from backend B's ServerHello
//! reaches B whatever it decodes to, and nothing but a ServerHello rebinds it: not a
//! stall of B (marked down, its clients rerouted meanwhile), not a flow elsewhere.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cidlb_core::invariants::TestFormat;
use cidlb_core::{
    Backend, BackendId, BackendState, BindingSource, CidRouting, Event, RouteOutcome, Router,
    RouterConfig, ServerId, Verdict,
};
use cidlb_wire::build;

const A: BackendId = BackendId(0);
const C: BackendId = BackendId(2);

/// Backends a (server ID 1), b (2) and c (none), under the test format: CIDs that
/// start with 1 decode to a.
fn router(now: Instant) -> Router {
    let cid = CidRouting {
        fixed_len: Some(4),
        format: Some(Arc::new(TestFormat)),
    };
    let mut r = Router::new(RouterConfig::new(cid, [5, 6, 7, 8]), now);
    r.set_backends(
        (0..3u8)
            .map(|i| {
                let mut b = Backend::new(
                    u16::from(i),
                    format!("{}", (b'a' + i) as char),
                    SocketAddr::from(([127, 0, 0, 1], 6000 + u16::from(i))),
                );
                b.server_id = (i < 2).then(|| ServerId::new(&[i + 1])).flatten();
                b
            })
            .collect(),
    )
    .unwrap();
    r
}

fn record(cid: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    build::cid12(1, 1, cid, b"finished", &mut d);
    d
}

fn client(i: u16) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, 7], 40_000 + i))
}

#[test]
fn a_learned_cid_beats_its_encoding() {
    let now = Instant::now();
    let mut r = router(now);
    // c has no server ID; its random CID happens to start with a's server ID.
    let cid = [1, 0xc0, 0xff, 0xee];
    r.handle_backend_datagram(
        now,
        C,
        client(1),
        &build::server_hello_datagram([0; 32], Some(&cid)),
    );
    assert_eq!(
        r.route(now, client(1), &record(&cid)),
        Verdict::Forward {
            backend: C,
            outcome: RouteOutcome::Learned
        }
    );
    // From a new address (NAT rebinding) too.
    assert_eq!(
        r.route(now, client(2), &record(&cid)),
        Verdict::Forward {
            backend: C,
            outcome: RouteOutcome::Learned
        }
    );
    // A CID of the same shape without a binding is a's, by its encoding.
    assert_eq!(
        r.route(now, client(3), &record(&[1, 2, 3, 0])),
        Verdict::Forward {
            backend: A,
            outcome: RouteOutcome::Encoded
        }
    );
}

#[test]
fn a_stalled_backend_gets_its_sessions_back() {
    let t0 = Instant::now();
    let mut r = router(t0);
    let cids: Vec<[u8; 4]> = (0..3u8).map(|i| [0, 0xcc, i, 7]).collect();
    for (i, cid) in cids.iter().enumerate() {
        let hello = build::server_hello_datagram([0; 32], Some(cid));
        r.handle_backend_datagram(t0, C, client(i as u16), &hello);
        assert!(matches!(
            r.route(t0, client(i as u16), &record(cid)),
            Verdict::Forward { backend: C, .. }
        ));
    }
    // c stalls: health checks mark it down; its clients keep sending, from their
    // addresses and from new ones, for a while.
    r.set_backend_state(C, BackendState::Down);
    for s in 0..20u64 {
        let now = t0 + Duration::from_millis(500 * s);
        for (i, cid) in cids.iter().enumerate() {
            let from = client(i as u16 + 100 * (s as u16 % 2));
            match r.route(now, from, &record(cid)) {
                Verdict::Forward { backend, .. } => assert_ne!(backend, C),
                v => panic!("{v:?}"),
            }
        }
    }
    assert!(
        r.counters().event(Event::BindingSeeded) == 0,
        "a seed replaced a binding"
    );
    // c is back: every session routes to it again, learned.
    r.set_backend_state(C, BackendState::Up);
    let now = t0 + Duration::from_secs(11);
    for (i, cid) in cids.iter().enumerate() {
        assert_eq!(
            r.route(now, client(i as u16), &record(cid)),
            Verdict::Forward {
                backend: C,
                outcome: RouteOutcome::Learned
            }
        );
        let b = r.binding(now, cid).unwrap();
        assert_eq!((b.backend, b.source), (C, BindingSource::Learned));
    }
}

#[test]
fn notices_tell_each_notable_event_with_its_details() {
    use cidlb_core::Notice;
    let t0 = Instant::now();
    let mut r = router(t0);
    let hello = build::client_hello_datagram([1; 32], &[], None);
    // Off by default: nothing queued.
    r.route(t0, client(1), &hello);
    let mut out = Vec::new();
    assert_eq!(r.take_notices(&mut out), 0);
    assert!(out.is_empty());

    let mut cfg = r.config().clone();
    cfg.notices = 10;
    let backends = Router::prepare_backends(&cfg, r.backends().to_vec()).unwrap();
    r.reconfigure(cfg, backends);
    let Verdict::Forward { backend, .. } = r.route(t0, client(2), &hello) else {
        panic!("not forwarded")
    };
    let cid = [0, 0xaa, 0xbb, 0xcc];
    r.handle_backend_datagram(
        t0,
        backend,
        client(2),
        &build::server_hello_datagram([0; 32], Some(&cid)),
    );
    r.route(t0, client(3), &record(&cid));
    // A CID nobody knows, from an address with a flow: seeded.
    r.route(t0, client(2), &record(&[0, 9, 9, 9]));
    assert_eq!(r.take_notices(&mut out), 0);
    let names: Vec<&str> = out.iter().map(Notice::name).collect();
    assert_eq!(
        names,
        [
            "new_session",
            "binding_learned",
            "cid_new_address",
            "binding_seeded"
        ]
    );
    assert_eq!(out[2].client(), Some(client(3)));
    assert_eq!(out[2].cid(), Some(&cid[..]));
    assert!(out.iter().all(|n| n.backend() == backend));
    // Taken: the queue is empty again.
    let mut again = Vec::new();
    r.take_notices(&mut again);
    assert!(again.is_empty());
    // Bounded: what does not fit is counted.
    for i in 0..(cidlb_core::notice::MAX_NOTICES as u16 + 10) {
        r.route(t0, SocketAddr::from(([198, 51, 100, 9], i)), &hello);
    }
    let mut many = Vec::new();
    assert_eq!(r.take_notices(&mut many), 10);
    assert_eq!(many.len(), cidlb_core::notice::MAX_NOTICES);
}
