//! The control plane in process: a real data plane (sockets on 127.0.0.1) with a
//! [`Daemon`] around it, driven through its API. Reload semantics, backend ids across
//! reloads, drain vs. health, restart-only changes.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use cidlb::config::Config;
use cidlb::control::{Daemon, Overrides};
use cidlb::run::listener_specs;
use cidlb_core::{BackendId, BackendState, Verdict};
use cidlb_net::health::{ProbeResult, ProbeTarget};
use cidlb_net::{DataPlane, DataPlaneConfig};
use cidlb_wire::build;

/// UDP sockets that stand in for backends (nothing needs to answer here).
fn ports(n: usize) -> Vec<(UdpSocket, SocketAddr)> {
    (0..n)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let a = s.local_addr().unwrap();
            (s, a)
        })
        .collect()
}

fn config(backends: &[(&str, SocketAddr, &str)], extra: &str) -> Config {
    let mut t = format!(
        "workers = 1\n{extra}\n[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\ncid_length = 4\n"
    );
    for (name, addr, more) in backends {
        t.push_str(&format!(
            "[[listener.backend]]\nname = \"{name}\"\naddress = \"{addr}\"\n{more}\n"
        ));
    }
    Config::from_toml_str(&t, "test.toml").unwrap_or_else(|e| panic!("{e}\n{t}"))
}

fn daemon(cfg: Config) -> Daemon {
    let secret = [1, 2, 3, 4];
    let plane = DataPlane::start(
        listener_specs(&cfg, secret),
        DataPlaneConfig {
            workers: 1,
            ..DataPlaneConfig::default()
        },
    )
    .unwrap();
    Daemon::new(plane, cfg, secret, None, Overrides::default())
}

/// Routes a ClientHello from `client` through the listener's router (as a worker
/// would) and teaches it a CID binding from the chosen backend's ServerHello.
fn session(d: &Daemon, client: SocketAddr, cid: [u8; 4]) -> BackendId {
    let l = &d.plane().listeners()[0];
    let mut r = l.router.lock().unwrap();
    let now = Instant::now();
    let Verdict::Forward { backend, .. } = r.route(
        now,
        client,
        &build::client_hello_datagram([1; 32], &[], None),
    ) else {
        panic!("not forwarded")
    };
    r.handle_backend_datagram(
        now,
        backend,
        client,
        &build::server_hello_datagram([2; 32], Some(&cid)),
    );
    backend
}

fn cid_route(d: &Daemon, client: SocketAddr, cid: [u8; 4]) -> Option<BackendId> {
    let mut rec = Vec::new();
    build::cid12(1, 1, &cid, &[0; 24], &mut rec);
    let l = &d.plane().listeners()[0];
    match l.router.lock().unwrap().route(Instant::now(), client, &rec) {
        Verdict::Forward { backend, .. } => Some(backend),
        _ => None,
    }
}

fn ids(d: &Daemon) -> Vec<(String, BackendId)> {
    d.snapshot(false).listeners[0]
        .backends
        .iter()
        .map(|b| (b.name.clone(), b.id))
        .collect()
}

fn clients(n: u16) -> Vec<(SocketAddr, [u8; 4])> {
    (0..n)
        .map(|i| {
            (
                format!("127.0.0.1:{}", 20000 + i).parse().unwrap(),
                [0xc0, 0, (i >> 8) as u8, i as u8],
            )
        })
        .collect()
}

#[test]
fn reload_keeps_ids_by_name_and_every_binding() {
    let p = ports(4);
    let (a, b, c) = (p[0].1, p[1].1, p[2].1);
    let d = daemon(config(&[("a", a, ""), ("b", b, "")], ""));
    let cs = clients(60);
    let owners: Vec<BackendId> = cs.iter().map(|(cl, cid)| session(&d, *cl, *cid)).collect();
    let before = ids(&d);

    // Add c, reorder the file: ids follow names, not positions.
    let rep = d
        .apply_config(config(&[("c", c, ""), ("b", b, ""), ("a", a, "")], ""))
        .unwrap();
    assert_eq!(rep.generation, 2);
    assert!(
        rep.changes
            .iter()
            .any(|l| l.contains("\"c\"") && l.contains("added")),
        "{rep:?}"
    );
    let after = ids(&d);
    for (name, id) in &before {
        assert!(
            after.contains(&(name.clone(), *id)),
            "{name} kept its id: {after:?}"
        );
    }
    let c_id = after.iter().find(|x| x.0 == "c").unwrap().1;
    assert!(
        before.iter().all(|x| x.1 != c_id),
        "a new name gets a new id"
    );
    for ((cl, cid), owner) in cs.iter().zip(&owners) {
        assert_eq!(cid_route(&d, *cl, *cid), Some(*owner), "binding survived");
    }

    // Remove b: only b's sessions move.
    d.apply_config(config(&[("c", c, ""), ("a", a, "")], ""))
        .unwrap();
    let b_id = before.iter().find(|x| x.0 == "b").unwrap().1;
    for ((cl, cid), owner) in cs.iter().zip(&owners) {
        let now_at = cid_route(&d, *cl, *cid).unwrap();
        if *owner == b_id {
            assert_ne!(now_at, b_id);
        } else {
            assert_eq!(now_at, *owner);
        }
    }

    // b comes back (same name and address): its old id, so its bindings lead to it.
    d.apply_config(config(&[("c", c, ""), ("a", a, ""), ("b", b, "")], ""))
        .unwrap();
    assert!(ids(&d).contains(&("b".to_string(), b_id)));
    // A known name at a new address is another server: a new id.
    d.apply_config(config(&[("c", c, ""), ("a", a, ""), ("b", p[3].1, "")], ""))
        .unwrap();
    let b2 = ids(&d).into_iter().find(|x| x.0 == "b").unwrap().1;
    assert_ne!(b2, b_id);
    assert!(ids(&d).iter().all(|x| x.1 != b_id || x.0 == "b"));
}

#[test]
fn a_drain_survives_reloads_that_do_not_touch_that_backend() {
    let p = ports(2);
    let d = daemon(config(&[("a", p[0].1, ""), ("b", p[1].1, "")], ""));
    let v = d
        .set_admin_state(None, "b", BackendState::Draining)
        .unwrap();
    assert_eq!(v.state, "draining");
    // New flows all go to a now.
    for i in 0..50u16 {
        let cl: SocketAddr = format!("127.0.0.2:{}", 30000 + i).parse().unwrap();
        assert_eq!(
            session(&d, cl, [1, 1, (i >> 8) as u8, i as u8]),
            BackendId(0)
        );
    }
    // A reload that changes something else keeps the drain...
    d.apply_config(config(
        &[("a", p[0].1, "weight = 3"), ("b", p[1].1, "")],
        "[timeouts]\nflow_idle = \"5m\"",
    ))
    .unwrap();
    let snap = d.snapshot(false);
    let b = &snap.listeners[0].backends[1];
    assert_eq!(b.admin, BackendState::Draining);
    assert_eq!(snap.listeners[0].backends[0].weight, 3);
    assert_eq!(snap.listeners[0].flow_idle, Duration::from_secs(300));
    let r = d.plane().listeners()[0]
        .router
        .lock()
        .unwrap()
        .config()
        .flow_idle;
    assert_eq!(
        r,
        Duration::from_secs(300),
        "the router got the new timeout"
    );
    // ...and one that sets the backend's state in the file wins.
    d.apply_config(config(
        &[
            ("a", p[0].1, "weight = 3"),
            ("b", p[1].1, "state = \"down\""),
        ],
        "",
    ))
    .unwrap();
    assert_eq!(
        d.snapshot(false).listeners[0].backends[1].admin,
        BackendState::Down
    );
    // Operator weight changes follow the same rule.
    d.set_weight(Some("l"), "a", 7).unwrap();
    d.apply_config(config(
        &[
            ("a", p[0].1, "weight = 3"),
            ("b", p[1].1, "state = \"down\""),
        ],
        "[limits]\nmax_flows = 5000",
    ))
    .unwrap();
    assert_eq!(d.snapshot(false).listeners[0].backends[0].weight, 7);
    assert!(d.set_weight(None, "a", 10_001).is_err());
    let e = d
        .set_admin_state(None, "nope", BackendState::Up)
        .unwrap_err();
    assert_eq!(e.status, 404);
}

#[test]
fn health_never_undoes_a_drain_and_a_drained_backend_can_fail() {
    let p = ports(2);
    let d = daemon(config(
        &[("a", p[0].1, ""), ("b", p[1].1, "")],
        "[health]\nrise = 2\nfall = 2",
    ));
    let (_, targets) = d.health_targets();
    assert_eq!(targets.len(), 2);
    let round = |b_result: ProbeResult| {
        let (_, t) = d.health_targets();
        let results: Vec<ProbeResult> = t
            .iter()
            .map(|(_, id, _)| {
                if *id == BackendId(1) {
                    b_result
                } else {
                    ProbeResult::HelloVerifyRequest
                }
            })
            .collect();
        d.apply_health(&t, &results);
    };
    // Probes that found no socket here (out of descriptors) say nothing about the
    // backend: any number of them leaves its health alone, and they are counted.
    for _ in 0..5 {
        round(ProbeResult::NoSocket);
    }
    let no_socket = ProbeResult::ALL
        .iter()
        .position(|r| *r == ProbeResult::NoSocket)
        .unwrap();
    let b = d.snapshot(false).listeners[0].backends[1].clone();
    assert!(
        b.healthy && b.went_down == 0,
        "no_socket results took it down"
    );
    assert_eq!(b.checks[no_socket], 5);
    d.set_admin_state(None, "b", BackendState::Draining)
        .unwrap();
    round(ProbeResult::Timeout);
    let s = |d: &Daemon| d.snapshot(false).listeners[0].backends[1].clone();
    assert_eq!(
        s(&d).state,
        BackendState::Draining,
        "one failure is not enough"
    );
    round(ProbeResult::Refused);
    assert_eq!(s(&d).state, BackendState::Down);
    assert!(!s(&d).healthy);
    assert_eq!(s(&d).went_down, 1);
    // Undrain while unhealthy: still down.
    d.set_admin_state(None, "b", BackendState::Up).unwrap();
    assert_eq!(s(&d).state, BackendState::Down);
    round(ProbeResult::HelloVerifyRequest);
    round(ProbeResult::Alert);
    assert_eq!(s(&d).state, BackendState::Up);
    assert_eq!(s(&d).went_up, 1);
    // Results for a target that moved meanwhile are ignored.
    let stale = [(
        0,
        BackendId(1),
        ProbeTarget {
            addr: "127.0.0.1:1".parse().unwrap(),
            source: None,
        },
    )];
    d.apply_health(&stale, &[ProbeResult::Timeout; 1]);
    d.apply_health(&stale, &[ProbeResult::Timeout; 1]);
    assert_eq!(s(&d).state, BackendState::Up);
    // Turning checks off by reload makes every backend healthy again.
    round(ProbeResult::Timeout);
    round(ProbeResult::Timeout);
    assert_eq!(s(&d).state, BackendState::Down);
    d.apply_config(config(
        &[("a", p[0].1, ""), ("b", p[1].1, "")],
        "[health]\nenabled = false",
    ))
    .unwrap();
    assert_eq!(s(&d).state, BackendState::Up);
}

#[test]
fn changes_that_need_a_restart_reject_the_whole_reload() {
    let p = ports(3);
    let cfg = config(&[("a", p[0].1, ""), ("b", p[1].1, "")], "");
    let d = daemon(cfg.clone());
    let mut moved = config(
        &[("a", p[0].1, ""), ("b", p[1].1, ""), ("c", p[2].1, "")],
        "",
    );
    moved.listeners[0].address = "127.0.0.1:1".parse().unwrap();
    let e = d.apply_config(moved).unwrap_err();
    assert_eq!(e.status, 409);
    assert!(e.message.contains("needs a restart"), "{e}");
    assert!(e.message.contains("address"), "{e}");
    assert!(e.message.contains("nothing was changed"), "{e}");
    // Nothing changed: c was not added, generation 1.
    let snap = d.snapshot(false);
    assert_eq!(snap.generation, 1);
    assert_eq!(snap.listeners[0].backends.len(), 2);

    let mut more_workers = cfg.clone();
    more_workers.workers = Some(3);
    assert!(d
        .apply_config(more_workers)
        .unwrap_err()
        .message
        .contains("workers"));
    let mut renamed = cfg.clone();
    renamed.listeners[0].name = "other".into();
    assert!(d
        .apply_config(renamed)
        .unwrap_err()
        .message
        .contains("listeners"));
    let mut admin = cfg;
    admin.admin.address = Some("127.0.0.1:1".parse().unwrap());
    assert!(d
        .apply_config(admin)
        .unwrap_err()
        .message
        .contains("[admin]"));
    // Without a file there is nothing to reload.
    assert_eq!(d.reload().unwrap_err().status, 409);
}

#[test]
fn lookups_explain_routing() {
    let p = ports(2);
    let d = daemon(config(&[("a", p[0].1, ""), ("b", p[1].1, "")], ""));
    let cl: SocketAddr = "127.0.0.3:4000".parse().unwrap();
    let owner = session(&d, cl, [0xde, 0xad, 0xbe, 0xef]);
    let name = if owner == BackendId(0) { "a" } else { "b" };
    let v = d.lookup_cid(None, "de:ad:be:ef").unwrap();
    assert_eq!(v.route, "learned");
    assert_eq!(v.backend.as_ref().unwrap().name, name);
    assert!(v.reason.contains("ServerHello"), "{}", v.reason);
    let v = d.lookup_cid(Some("l"), "01020304").unwrap();
    assert_eq!(v.route, "unknown");
    assert!(v.backend.is_some());
    let v = d.lookup_client(None, "127.0.0.3:4000").unwrap();
    assert_eq!(v.route, "flow");
    assert_eq!(v.backend.as_ref().unwrap().name, name);
    let v = d.lookup_client(None, "[::1]:9").unwrap();
    assert_eq!(v.route, "new");
    assert_eq!(d.lookup_cid(None, "xyz").unwrap_err().status, 400);
    assert_eq!(d.lookup_cid(Some("zz"), "01").unwrap_err().status, 404);
    assert_eq!(d.lookup_client(None, "nope").unwrap_err().status, 400);
    let t = d.tables_view();
    assert_eq!(t.listeners[0].flows.entries, 1);
    assert_eq!(t.listeners[0].bindings.entries, 1);
    let b = d.backends_view();
    let total: usize = b.listeners[0].backends.iter().map(|x| x.bindings).sum();
    assert_eq!(total, 1);
    assert_eq!(b.listeners[0].backends[0].health, "unchecked");
}

#[test]
fn reload_applies_the_per_source_new_flow_limit() {
    let p = ports(2);
    let backends = [("a", p[0].1, ""), ("b", p[1].1, "")];
    let d = daemon(config(&backends, ""));
    let hello = build::client_hello_datagram([1; 32], &[], None);
    let route = |port: u16| {
        let client: SocketAddr = format!("127.0.0.9:{port}").parse().unwrap();
        let l = &d.plane().listeners()[0];
        let v = l
            .router
            .lock()
            .unwrap()
            .route(Instant::now(), client, &hello);
        v
    };
    // Off by default: many new flows from one source.
    for port in 1000..1050 {
        assert!(matches!(route(port), Verdict::Forward { .. }));
    }
    // A session from that source, before the limit.
    let cid = [0xc1, 2, 3, 4];
    let owner = session(&d, "127.0.0.9:2000".parse().unwrap(), cid);

    let rep = d
        .apply_config(config(
            &backends,
            "[limits]\nnew_flows_per_source = 2\nnew_flows_burst = 3",
        ))
        .unwrap();
    assert!(
        rep.changes
            .iter()
            .any(|l| l.contains("limits.new_flows_per_source: 0 -> 2")),
        "{rep:?}"
    );
    assert_eq!(
        d.plane().listeners()[0]
            .router
            .lock()
            .unwrap()
            .config()
            .new_flows_per_source,
        Some((2, 3))
    );
    let verdicts: Vec<Verdict> = (3000..3010).map(route).collect();
    let forwarded = verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Forward { .. }))
        .count();
    // 3 at once, and at most 2 more if a second boundary passed meanwhile.
    assert!((3..=5).contains(&forwarded), "{verdicts:?}");
    assert!(verdicts.contains(&Verdict::Drop(cidlb_core::DropReason::SourceRateLimited)));
    // Existing flows and the bound CID (from a new port) still route.
    assert!(matches!(route(1000), Verdict::Forward { .. }));
    assert_eq!(
        cid_route(&d, "127.0.0.9:4000".parse().unwrap(), cid),
        Some(owner)
    );

    // And off again.
    d.apply_config(config(&backends, "")).unwrap();
    assert!(matches!(route(5000), Verdict::Forward { .. }));
}
