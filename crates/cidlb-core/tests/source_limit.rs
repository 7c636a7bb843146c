//! The per-source limit on new flows (`RouterConfig::new_flows_per_source`): only
//! datagrams that would create a flow spend tokens; existing flows and CIDs that match
//! an encoding or a binding are never refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cidlb_core::{
    Backend, BackendId, CidFormat, CidRouting, DropReason, Event, RouteOutcome, Router,
    RouterConfig, ServerId, Verdict,
};
use cidlb_wire::build;

const LIMITED: Verdict = Verdict::Drop(DropReason::SourceRateLimited);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn v4(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 7], port))
}

/// Server ID = the CID's first byte when below 0x80 (else not routable).
#[derive(Debug)]
struct FirstByte;

impl CidFormat for FirstByte {
    fn cid_len(&self, _at: &[u8]) -> Option<usize> {
        None
    }
    fn server_id(&self, cid: &[u8]) -> Option<ServerId> {
        cid.first()
            .filter(|&&b| b < 0x80)
            .and_then(|&b| ServerId::new(&[b]))
    }
}

fn cfg(limit: Option<(u32, u32)>) -> RouterConfig {
    let mut c = RouterConfig::new(
        CidRouting {
            fixed_len: Some(4),
            format: Some(Arc::new(FirstByte)),
        },
        [1, 2, 3, 4],
    );
    c.maglev_table_size = 257;
    c.new_flows_per_source = limit;
    c
}

fn backends() -> Vec<Backend> {
    (0..3u8)
        .map(|i| {
            let mut b = Backend::new(u16::from(i), format!("b{i}"), addr("127.0.0.1:5684"));
            b.server_id = ServerId::new(&[i]);
            b
        })
        .collect()
}

fn router(limit: Option<(u32, u32)>, t0: Instant) -> Router {
    let mut r = Router::new(cfg(limit), t0);
    r.set_backends(backends()).unwrap();
    r
}

fn hello() -> Vec<u8> {
    build::client_hello_datagram([0; 32], &[], None)
}

fn cid_record(cid: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    build::cid12(1, 1, cid, b"x", &mut d);
    d
}

fn forwarded(v: Verdict) -> bool {
    matches!(v, Verdict::Forward { .. })
}

#[test]
fn within_burst_allowed_over_refused_and_counted() {
    let t0 = Instant::now();
    let mut r = router(Some((1, 3)), t0);
    for port in 1..=3 {
        assert!(forwarded(r.route(t0, v4(port), &hello())), "port {port}");
    }
    assert_eq!(r.route(t0, v4(4), &hello()), LIMITED);
    assert_eq!(r.route(t0, v4(5), &cid_record(&[0xf0, 1, 2, 3])), LIMITED);
    assert_eq!(r.counters().dropped(DropReason::SourceRateLimited), 2);
    assert_eq!(r.flow_count(), 3);
    assert_eq!(r.counters().event(Event::FlowCreated), 3);
    // Another source has its own bucket.
    assert!(forwarded(r.route(t0, addr("192.0.2.8:4"), &hello())));
    assert_eq!(r.source_count(), 2);
}

#[test]
fn refills_with_time() {
    let t0 = Instant::now();
    let mut r = router(Some((2, 4)), t0);
    for port in 1..=4 {
        assert!(forwarded(r.route(t0, v4(port), &hello())));
    }
    assert_eq!(r.route(t0, v4(10), &hello()), LIMITED);
    // Half a second: still nothing (whole seconds refill).
    let t = t0 + Duration::from_millis(500);
    assert_eq!(r.route(t, v4(10), &hello()), LIMITED);
    // One second: `rate` more.
    let t = t0 + Duration::from_secs(1);
    assert!(forwarded(r.route(t, v4(11), &hello())));
    assert!(forwarded(r.route(t, v4(12), &hello())));
    assert_eq!(r.route(t, v4(13), &hello()), LIMITED);
    // A long pause refills to the burst, not beyond.
    let t = t0 + Duration::from_secs(100);
    for port in 20..24 {
        assert!(forwarded(r.route(t, v4(port), &hello())), "port {port}");
    }
    assert_eq!(r.route(t, v4(24), &hello()), LIMITED);
    assert_eq!(r.counters().dropped(DropReason::SourceRateLimited), 4);
}

#[test]
fn existing_flows_unaffected() {
    let t0 = Instant::now();
    let mut r = router(Some((1, 2)), t0);
    assert!(forwarded(r.route(t0, v4(1), &hello())));
    // An unknown CID from an address without flow creates one (spends a token).
    assert!(forwarded(r.route(t0, v4(2), &cid_record(&[0xf0, 0, 0, 1]))));
    assert_eq!(r.route(t0, v4(3), &hello()), LIMITED);
    for _ in 0..10 {
        assert!(matches!(
            r.route(t0, v4(1), &hello()),
            Verdict::Forward {
                outcome: RouteOutcome::Flow,
                ..
            }
        ));
        // Another unknown CID on an existing flow: routed by the flow (seeding).
        assert!(matches!(
            r.route(t0, v4(2), &cid_record(&[0xf1, 0, 0, 2])),
            Verdict::Forward {
                outcome: RouteOutcome::CidByFlow | RouteOutcome::Seeded,
                ..
            }
        ));
    }
    assert_eq!(r.counters().dropped(DropReason::SourceRateLimited), 1);
}

#[test]
fn cid_bound_datagrams_from_a_limited_source_still_routed() {
    let t0 = Instant::now();
    let mut r = router(Some((1, 1)), t0);
    // A session learned from backend 2's ServerHello, with a client elsewhere.
    let cid = [0xaa, 0xbb, 0xcc, 0xdd];
    let sh = build::server_hello_datagram([0; 32], Some(&cid));
    r.handle_backend_datagram(t0, BackendId(2), addr("198.51.100.1:9"), &sh);
    // Exhaust 192.0.2.7's bucket.
    assert!(forwarded(r.route(t0, v4(1), &hello())));
    assert_eq!(r.route(t0, v4(2), &hello()), LIMITED);
    // Devices behind the same (CGNAT) address, with CIDs the backends issued, move
    // to new ports: never refused.
    assert_eq!(
        r.route(t0, v4(3), &cid_record(&cid)),
        Verdict::Forward {
            backend: BackendId(2),
            outcome: RouteOutcome::Learned
        }
    );
    assert_eq!(
        r.route(t0, v4(4), &cid_record(&[1, 9, 9, 9])),
        Verdict::Forward {
            backend: BackendId(1),
            outcome: RouteOutcome::Encoded
        }
    );
    // Their new addresses got flows (rebinding), which route CID-less datagrams too.
    assert!(matches!(
        r.route(t0, v4(3), &hello()),
        Verdict::Forward {
            outcome: RouteOutcome::Flow,
            ..
        }
    ));
    // An unknown CID from a new port of the limited source is a new flow: refused.
    assert_eq!(r.route(t0, v4(5), &cid_record(&[0xf0, 0, 0, 0])), LIMITED);
    assert_eq!(r.counters().dropped(DropReason::SourceRateLimited), 2);
}

#[test]
fn ipv6_sources_are_slash_64() {
    let t0 = Instant::now();
    let mut r = router(Some((1, 1)), t0);
    assert!(forwarded(r.route(
        t0,
        addr("[2001:db8:0:1::1]:1"),
        &hello()
    )));
    assert_eq!(
        r.route(t0, addr("[2001:db8:0:1:ffff::2]:1"), &hello()),
        LIMITED,
        "same /64"
    );
    assert!(forwarded(r.route(
        t0,
        addr("[2001:db8:0:2::1]:1"),
        &hello()
    )));
}

#[test]
fn off_by_default_and_by_reconfigure() {
    let t0 = Instant::now();
    let mut r = router(None, t0);
    for port in 1..=500 {
        assert!(forwarded(r.route(t0, v4(port), &hello())));
    }
    assert_eq!(r.source_count(), 0);
    assert_eq!(r.source_table_bytes(), 0, "no limiter, no memory");
    // A reload turns it on...
    let c = cfg(Some((1, 1)));
    let p = Router::prepare_backends(&c, backends()).unwrap();
    r.reconfigure(c, p);
    assert!(forwarded(r.route(t0, v4(1000), &hello())));
    assert_eq!(r.route(t0, v4(1001), &hello()), LIMITED);
    assert!(
        r.source_table_bytes() > 0,
        "the limiter's table is reported"
    );
    // ...and off again.
    let c = cfg(None);
    let p = Router::prepare_backends(&c, backends()).unwrap();
    r.reconfigure(c, p);
    assert!(forwarded(r.route(t0, v4(1002), &hello())));
    assert_eq!(r.source_count(), 0);
}

#[test]
fn limiter_table_is_bounded_and_swept() {
    let t0 = Instant::now();
    let mut c = cfg(Some((1, 2)));
    c.max_flows = 8;
    let mut r = Router::new(c, t0);
    r.set_backends(backends()).unwrap();
    for i in 0..200u8 {
        r.route(t0, SocketAddr::from(([10, 0, 0, i], 1)), &hello());
        assert!(r.source_count() <= 8);
    }
    // Buckets are forgotten once full again (burst / rate seconds, plus one).
    r.sweep(t0 + Duration::from_secs(10), 100);
    assert_eq!(r.source_count(), 0);
}
