//! Backend changes at run time: reloads keep flows and bindings, draining and health
//! only change where new flows go, and the admin lookups say what routing would do.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cidlb_core::{
    AddressDecision, Backend, BackendId, BackendState, BindingSource, CidDecision, CidRouting,
    RouteOutcome, Router, RouterConfig, Verdict,
};
use cidlb_wire::build;

const CID_LEN: usize = 4;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn backend(id: u16, name: &str) -> Backend {
    Backend::new(id, name, addr(&format!("127.0.0.1:{}", 6000 + id)))
}

fn router(backends: Vec<Backend>, now: Instant) -> Router {
    let mut cfg = RouterConfig::new(CidRouting::fixed(CID_LEN), [1, 2, 3, 4]);
    cfg.maglev_table_size = 251;
    let mut r = Router::new(cfg, now);
    r.set_backends(backends).unwrap();
    r
}

fn hello() -> Vec<u8> {
    build::client_hello_datagram([7; 32], &[], None)
}

fn cid_record(cid: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    build::cid12(1, 1, cid, &[0xaa; 24], &mut d);
    d
}

fn target(v: Verdict) -> BackendId {
    match v {
        Verdict::Forward { backend, .. } => backend,
        other => panic!("not forwarded: {other:?}"),
    }
}

/// Many clients, each with a flow and a learned CID binding.
fn populate(r: &mut Router, now: Instant, n: u16) -> Vec<(SocketAddr, [u8; 4], BackendId)> {
    (0..n)
        .map(|i| {
            let client = addr(&format!("192.0.2.{}:{}", 1 + i % 200, 10000 + i));
            let b = target(r.route(now, client, &hello()));
            let cid = [0xc0, 0, (i >> 8) as u8, i as u8];
            let sh = build::server_hello_datagram([9; 32], Some(&cid));
            r.handle_backend_datagram(now, b, client, &sh);
            (client, cid, b)
        })
        .collect()
}

#[test]
fn reload_adding_a_backend_keeps_every_flow_and_binding() {
    let now = Instant::now();
    let mut r = router(vec![backend(0, "a"), backend(1, "b")], now);
    let sessions = populate(&mut r, now, 300);
    let cfg = r.config().clone();
    let prepared = Router::prepare_backends(
        &cfg,
        vec![backend(0, "a"), backend(1, "b"), backend(2, "c")],
    )
    .unwrap();
    r.reconfigure(cfg, prepared);
    for (client, cid, b) in &sessions {
        assert_eq!(
            r.route(now, *client, &cid_record(cid)),
            Verdict::Forward {
                backend: *b,
                outcome: RouteOutcome::Learned
            }
        );
        assert_eq!(target(r.route(now, *client, &hello())), *b, "flow kept");
    }
    // New clients reach the new backend too.
    let news = (0..300)
        .map(|i| target(r.route(now, addr(&format!("198.51.100.1:{}", 20000 + i)), &hello())))
        .filter(|b| *b == BackendId(2))
        .count();
    assert!(news > 50, "{news}");
}

#[test]
fn removing_a_backend_moves_only_its_own_sessions() {
    let now = Instant::now();
    let mut r = router(vec![backend(0, "a"), backend(1, "b"), backend(2, "c")], now);
    let sessions = populate(&mut r, now, 300);
    r.set_backends(vec![backend(0, "a"), backend(2, "c")])
        .unwrap();
    let mut moved = 0;
    for (client, cid, b) in &sessions {
        let now_at = target(r.route(now, *client, &cid_record(cid)));
        if *b == BackendId(1) {
            assert_ne!(now_at, BackendId(1));
            moved += 1;
        } else {
            assert_eq!(now_at, *b, "a session of a remaining backend stays");
        }
    }
    assert!(moved > 0);
}

#[test]
fn draining_keeps_sessions_and_takes_no_new_flows() {
    let now = Instant::now();
    let mut r = router(vec![backend(0, "a"), backend(1, "b")], now);
    let sessions = populate(&mut r, now, 200);
    assert!(r.set_backend_state(BackendId(1), BackendState::Draining));
    for (client, cid, b) in &sessions {
        assert_eq!(target(r.route(now, *client, &cid_record(cid))), *b);
        assert_eq!(target(r.route(now, *client, &hello())), *b);
    }
    for i in 0..200 {
        let c = addr(&format!("198.51.100.2:{}", 30000 + i));
        assert_eq!(target(r.route(now, c, &hello())), BackendId(0));
    }
}

#[test]
fn reconfigure_applies_timeouts_and_bounds() {
    let now = Instant::now();
    let mut r = router(vec![backend(0, "a")], now);
    populate(&mut r, now, 20);
    let mut cfg = r.config().clone();
    cfg.flow_idle = Duration::from_secs(5);
    cfg.binding_idle = Duration::from_secs(7);
    cfg.max_flows = 10;
    cfg.maglev_table_size = 509;
    cfg.secret = [9, 9, 9, 9];
    let prepared = Router::prepare_backends(&cfg, r.backends().to_vec()).unwrap();
    r.reconfigure(cfg, prepared);
    assert_eq!(r.config().flow_idle, Duration::from_secs(5));
    assert_eq!(r.config().maglev_table_size, 509);
    assert_eq!(r.config().secret, [1, 2, 3, 4], "the table secret is kept");
    // Existing entries are still found (same secret), then expire by the new timeout.
    assert_eq!(r.binding_count(), 20);
    let later = now + Duration::from_secs(6);
    let c = addr("192.0.2.1:10000");
    assert!(r.flow(later, c).is_none());
    assert!(r.binding(later, &[0xc0, 0, 0, 0]).is_some());
    assert!(r
        .binding(now + Duration::from_secs(8), &[0xc0, 0, 0, 0])
        .is_none());
    // The smaller bound holds for new entries.
    for i in 0..50 {
        r.route(now, addr(&format!("203.0.113.1:{}", 1000 + i)), &hello());
    }
    assert!(r.flow_count() <= 10, "{}", r.flow_count());
}

#[test]
fn prepare_rejects_a_bad_set_without_touching_the_router() {
    let now = Instant::now();
    let r = router(vec![backend(0, "a")], now);
    let e = Router::prepare_backends(r.config(), vec![backend(0, "a"), backend(0, "b")]);
    assert!(e.is_err());
    let e = Router::prepare_backends(r.config(), vec![backend(0, "a"), backend(1, "a")]);
    assert!(e.is_err());
    assert_eq!(r.backends().len(), 1);
}

#[test]
fn explain_says_where_and_why() {
    let now = Instant::now();
    let mut r = router(vec![backend(0, "a"), backend(1, "b")], now);
    let sessions = populate(&mut r, now, 10);
    let (client, cid, b) = sessions[0];
    let e = r.explain_cid(now, &cid, None);
    assert_eq!(e.decision, CidDecision::Learned(b));
    let bound = e.binding.expect("a binding");
    assert_eq!(bound.binding.source, BindingSource::Learned);
    assert!(bound.serves && bound.exists);
    let e = r.explain_cid(now, &[1, 2, 3, 4], None);
    assert!(matches!(e.decision, CidDecision::Hashed(Some(_))));
    let e = r.explain_client(now, client);
    assert_eq!(e.decision, AddressDecision::Flow(b));
    assert!(e.flow.is_some_and(|f| f.serves));
    let fresh = addr("203.0.113.9:4444");
    let e = r.explain_client(now, fresh);
    assert_eq!(e.decision, AddressDecision::Hashed(r.hashed_backend(fresh)));
    assert_eq!(e.flow, None);
    // A down backend: the binding no longer serves; the sender's flow is down too, so
    // the datagram would be rescheduled by Maglev, and the binding kept.
    r.set_backend_state(b, BackendState::Down);
    let e = r.explain_cid(now, &cid, Some(client));
    assert!(e.binding.is_some_and(|v| !v.serves && v.exists));
    assert!(matches!(e.decision, CidDecision::Hashed(Some(x)) if x != b));
    // Explaining changes nothing.
    assert_eq!(r.counters().total_routed(), 10);
}
