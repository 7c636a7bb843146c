//! A `FormatSet` in the routing core: encoded routing comes first, CIDs that do not
//! decode to a live backend fall through to the next step and are counted, and
//! self-described lengths let CIDs of several lengths share a listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use cidlb_cidformat::{CidGenerator, FormatSet, QuicLbConfig, QuicLbParams, ServerId};
use cidlb_core::{
    Backend, BackendId, BackendState, CidRouting, Event, RouteOutcome, Router, RouterConfig,
    Verdict,
};
use cidlb_wire::build;

fn config(rotation: u8, sid: usize, nonce: usize, sd: bool) -> QuicLbConfig {
    QuicLbConfig::new(QuicLbParams {
        rotation,
        server_id_len: sid,
        nonce_len: nonce,
        key: Some([0x5a; 16]),
        self_describing_length: sd,
    })
    .unwrap()
}

fn router(set: FormatSet, fixed_len: Option<usize>) -> Router {
    let cid = CidRouting {
        fixed_len,
        format: Some(Arc::new(set)),
    };
    let mut r = Router::new(RouterConfig::new(cid, [1, 2, 3, 4]), Instant::now());
    let backends = (0..3u8)
        .map(|i| {
            let mut b = Backend::new(
                u16::from(i),
                format!("b{i}"),
                SocketAddr::from(([127, 0, 0, 1], 7000 + u16::from(i))),
            );
            b.server_id = ServerId::new(&[0x10 + i]);
            b
        })
        .collect();
    r.set_backends(backends).unwrap();
    r
}

fn record(cid: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    build::cid12(1, 7, cid, &[0xaa; 24], &mut d);
    d
}

fn client(n: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], 40000 + n))
}

#[test]
fn encoded_first_then_fall_through_counted() {
    let c0 = config(0, 1, 6, false);
    let mut r = router(FormatSet::quic_lb(vec![c0.clone()]).unwrap(), Some(8));
    let now = Instant::now();
    // Every backend's CIDs reach it, from any new address: no state involved.
    for i in 0..3u8 {
        let mut g = CidGenerator::quic_lb(c0.clone(), &[0x10 + i]).unwrap();
        for n in 0..5 {
            let v = r.route(
                now,
                client(u16::from(i) * 10 + n),
                &record(&g.next_cid().unwrap()),
            );
            assert_eq!(
                v,
                Verdict::Forward {
                    backend: BackendId(u16::from(i)),
                    outcome: RouteOutcome::Encoded
                }
            );
        }
    }
    assert_eq!(r.counters().routed(RouteOutcome::Encoded), 15);
    // A server ID nobody has: falls through (Maglev on the CID), counted.
    let mut stray = CidGenerator::quic_lb(c0.clone(), &[0x77]).unwrap();
    let v = r.route(now, client(100), &record(&stray.next_cid().unwrap()));
    assert!(
        matches!(
            v,
            Verdict::Forward {
                outcome: RouteOutcome::UnknownCid,
                ..
            }
        ),
        "{v:?}"
    );
    assert_eq!(r.counters().event(Event::EncodedUnknownServer), 1);
    // A down backend's CIDs fall through too.
    r.set_backend_state(BackendId(1), BackendState::Down);
    let mut g1 = CidGenerator::quic_lb(c0.clone(), &[0x11]).unwrap();
    let v = r.route(now, client(101), &record(&g1.next_cid().unwrap()));
    assert!(
        !matches!(
            v,
            Verdict::Forward {
                backend: BackendId(1),
                ..
            }
        ),
        "{v:?}"
    );
    assert_eq!(r.counters().event(Event::EncodedUnknownServer), 2);
    // Unknown rotation and the unroutable codepoint: not decodable, counted.
    for first in [0x40u8, 0xe7] {
        let v = r.route(now, client(102), &record(&[first, 1, 2, 3, 4, 5, 6, 7]));
        assert!(matches!(v, Verdict::Forward { .. }), "{v:?}");
    }
    assert_eq!(r.counters().event(Event::EncodedUndecodable), 2);
}

#[test]
fn self_described_lengths_share_a_listener() {
    // Rotation 0 makes 6-octet CIDs, rotation 1 makes 12-octet ones; no fixed length.
    let c0 = config(0, 1, 4, true);
    let c1 = config(1, 1, 10, true);
    let mut r = router(
        FormatSet::quic_lb(vec![c0.clone(), c1.clone()]).unwrap(),
        None,
    );
    let now = Instant::now();
    let mut g0 = CidGenerator::quic_lb(c0, &[0x12]).unwrap();
    let mut g1 = CidGenerator::quic_lb(c1, &[0x10]).unwrap();
    let a = g0.next_cid().unwrap();
    let b = g1.next_cid().unwrap();
    assert_eq!((a.len(), b.len()), (6, 12));
    let v = r.route(now, client(1), &record(&a));
    assert_eq!(
        v,
        Verdict::Forward {
            backend: BackendId(2),
            outcome: RouteOutcome::Encoded
        }
    );
    let v = r.route(now, client(2), &record(&b));
    assert_eq!(
        v,
        Verdict::Forward {
            backend: BackendId(0),
            outcome: RouteOutcome::Encoded
        }
    );
    // A CID of no configured rotation has no known length: the datagram is dropped.
    let v = r.route(now, client(3), &record(&[0x40, 1, 2, 3, 4, 5]));
    assert!(matches!(v, Verdict::Drop(_)), "{v:?}");
}
