//! The control plane in process: a real data plane (sockets on 127.0.0.1) with a
//! [`Daemon`] around it, driven through its API. Reload semantics, backend ids across
//! reloads, drain vs. health, restart-only changes.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use cidlb::config::Config;
use cidlb::control::{Daemon, ErrorKind, Overrides};
use cidlb::specs::listener_specs;
use cidlb_core::{BackendId, BackendState};
use cidlb_net::health::{ProbeResult, ProbeTarget};
use cidlb_net::{DataPlaneConfig, NatPlane};
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
    let plane = NatPlane::start(
        listener_specs(&cfg, secret),
        DataPlaneConfig {
            workers: 1,
            ..DataPlaneConfig::default()
        },
    )
    .unwrap();
    Daemon::new(Box::new(plane), cfg, secret, None, Overrides::default())
}

const WAIT: Duration = Duration::from_secs(5);

/// The listener's address.
fn listener(d: &Daemon) -> SocketAddr {
    d.plane().listeners()[0].local_addr()
}

/// The id of the backend at `addr`.
fn id_of(d: &Daemon, addr: SocketAddr) -> BackendId {
    d.snapshot(false).listeners[0]
        .backends
        .iter()
        .find(|b| b.address == addr)
        .map(|b| b.id)
        .expect("a backend at that address")
}

/// Waits until one of `backends` receives a datagram that contains `marker` (others
/// are skipped); returns its index and the sender (cidlb's upstream socket).
fn received(backends: &[(UdpSocket, SocketAddr)], marker: &[u8]) -> Option<(usize, SocketAddr)> {
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 2048];
    for (s, _) in backends {
        s.set_nonblocking(true).unwrap();
    }
    while Instant::now() < deadline {
        for (i, (s, _)) in backends.iter().enumerate() {
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                if buf[..n].windows(marker.len()).any(|w| w == marker) {
                    return Some((i, from));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// A DTLS session as the balancer sees one: a ClientHello from a fresh port on
/// `client_ip` reaches a backend, which answers with a ServerHello announcing `cid`
/// through cidlb (where the binding is learned) to the client. Returns the client's
/// address and the backend that got the session.
fn session(
    d: &Daemon,
    backends: &[(UdpSocket, SocketAddr)],
    client_ip: &str,
    cid: [u8; 4],
) -> (SocketAddr, BackendId) {
    let c = UdpSocket::bind(format!("{client_ip}:0")).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    // The ClientHello's random tells this session's datagram from others.
    let mut random = [0u8; 32];
    for (i, b) in random.iter_mut().enumerate() {
        *b = cid[i % 4] ^ (i as u8);
    }
    c.send_to(
        &build::client_hello_datagram(random, &[], None),
        listener(d),
    )
    .unwrap();
    let (i, upstream) = received(backends, &random).expect("the ClientHello reaches a backend");
    backends[i]
        .0
        .send_to(&build::server_hello_datagram([2; 32], Some(&cid)), upstream)
        .unwrap();
    let mut buf = [0u8; 2048];
    c.recv_from(&mut buf)
        .expect("the ServerHello reaches the client");
    let addr = c.local_addr().unwrap();
    // Kept open to the end of the test: a port given back could be handed to the next
    // session, which would then share this one's flow.
    CLIENTS.lock().unwrap().push(c);
    (addr, id_of(d, backends[i].1))
}

/// The client sockets of [`session`], kept open.
static CLIENTS: std::sync::Mutex<Vec<UdpSocket>> = std::sync::Mutex::new(Vec::new());

/// Where a CID record from `client` goes now: the plane's own explanation (the
/// decision it takes; the property tests of the core hold the two equal).
fn cid_route(d: &Daemon, client: SocketAddr, cid: [u8; 4]) -> Option<BackendId> {
    d.plane().listeners()[0]
        .explain_cid(&cid, Some(client))
        .decision
        .backend()
}

/// Client datagrams routed plus dropped so far.
fn outcomes(d: &Daemon) -> u64 {
    let l = &d.snapshot(false).listeners[0];
    l.counters.total_routed() + l.counters.total_dropped()
}

/// Waits until the listener has an outcome for `n` datagrams in all.
fn wait_outcomes(d: &Daemon, n: u64) {
    let deadline = Instant::now() + WAIT;
    while outcomes(d) < n {
        assert!(
            Instant::now() < deadline,
            "datagrams were not routed in time"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn ids(d: &Daemon) -> Vec<(String, BackendId)> {
    d.snapshot(false).listeners[0]
        .backends
        .iter()
        .map(|b| (b.name.clone(), b.id))
        .collect()
}

#[test]
fn reload_keeps_ids_by_name_and_every_binding() {
    let p = ports(4);
    let (a, b, c) = (p[0].1, p[1].1, p[2].1);
    let d = daemon(config(&[("a", a, ""), ("b", b, "")], ""));
    let (cs, owners): (Vec<(SocketAddr, [u8; 4])>, Vec<BackendId>) = (0..60u16)
        .map(|i| {
            let cid = [0xc0, 0, (i >> 8) as u8, i as u8];
            let (cl, owner) = session(&d, &p[..2], "127.0.0.1", cid);
            ((cl, cid), owner)
        })
        .unzip();
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
        let (_, owner) = session(&d, &p, "127.0.0.2", [1, 1, (i >> 8) as u8, i as u8]);
        assert_eq!(owner, BackendId(0));
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
    assert_eq!(snap.listeners[0].tables.flow_idle, Duration::from_secs(300));
    let r = d.plane().listeners()[0].router_config().flow_idle;
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
    assert_eq!(e.kind, ErrorKind::NotFound);
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
    assert_eq!(e.kind, ErrorKind::Conflict);
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
    assert_eq!(d.reload().unwrap_err().kind, ErrorKind::Conflict);
}

#[test]
fn lookups_explain_routing() {
    let p = ports(2);
    let d = daemon(config(&[("a", p[0].1, ""), ("b", p[1].1, "")], ""));
    let (cl, owner) = session(&d, &p, "127.0.0.3", [0xde, 0xad, 0xbe, 0xef]);
    let name = if owner == BackendId(0) { "a" } else { "b" };
    let v = d.lookup_cid(None, "de:ad:be:ef", None).unwrap();
    assert_eq!(v.route, "learned");
    assert_eq!(v.backend.as_ref().unwrap().name, name);
    assert!(v.reason.contains("ServerHello"), "{}", v.reason);
    let v = d.lookup_cid(Some("l"), "01020304", None).unwrap();
    assert_eq!(v.route, "unknown");
    assert!(v.backend.is_some());
    let v = d.lookup_client(None, &cl.to_string()).unwrap();
    assert_eq!(v.route, "flow");
    assert_eq!(v.backend.as_ref().unwrap().name, name);
    let v = d.lookup_client(None, "[::1]:9").unwrap();
    assert_eq!(v.route, "new");
    assert_eq!(
        d.lookup_cid(None, "xyz", None).unwrap_err().kind,
        ErrorKind::Invalid
    );
    assert_eq!(
        d.lookup_cid(Some("zz"), "01", None).unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        d.lookup_client(None, "nope").unwrap_err().kind,
        ErrorKind::Invalid
    );
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
    // Sends `n` ClientHellos, each from a new port of 127.0.0.9, and returns how many
    // were dropped by the per-source limit.
    let limited = |n: u64, from: &[UdpSocket]| -> u64 {
        let before = outcomes(&d);
        let drops = |d: &Daemon| {
            d.snapshot(false).listeners[0]
                .counters
                .dropped(cidlb_core::DropReason::SourceRateLimited)
        };
        let dropped = drops(&d);
        for s in from.iter().take(n as usize) {
            s.send_to(&hello, listener(&d)).unwrap();
        }
        wait_outcomes(&d, before + n);
        drops(&d) - dropped
    };
    let fresh = |n: usize| -> Vec<UdpSocket> {
        (0..n)
            .map(|_| UdpSocket::bind("127.0.0.9:0").unwrap())
            .collect()
    };
    // Off by default: many new flows from one source.
    let early = fresh(50);
    assert_eq!(limited(50, &early), 0);
    // A session from that source, before the limit.
    let cid = [0xc1, 2, 3, 4];
    let (_, owner) = session(&d, &p, "127.0.0.9", cid);

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
            .router_config()
            .new_flows_per_source,
        Some((2, 3))
    );
    let dropped = limited(10, &fresh(10));
    // 3 at once, and at most 2 more if a second boundary passed meanwhile.
    assert!((5..=7).contains(&dropped), "{dropped} of 10 dropped");
    // Existing flows and the bound CID (from a new port) still route.
    assert_eq!(limited(1, &early), 0);
    let new_port = UdpSocket::bind("127.0.0.9:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert_eq!(cid_route(&d, new_port, cid), Some(owner));

    // And off again.
    d.apply_config(config(&backends, "")).unwrap();
    assert_eq!(limited(5, &fresh(5)), 0);
}

#[test]
fn flows_and_bindings_are_listed_in_pages_with_filters() {
    use cidlb::control::ListingQuery;
    let p = ports(2);
    let d = daemon(config(&[("a", p[0].1, ""), ("b", p[1].1, "")], ""));
    let mut owners = Vec::new();
    for i in 0..60u16 {
        let ip = if i < 40 { "127.0.0.1" } else { "127.0.0.5" };
        let cid = [0xc0, 1, (i >> 8) as u8, i as u8];
        owners.push(session(&d, &p, ip, cid));
    }
    // Every flow once, in pages of 25.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let c = cursor.map(|c: u64| c.to_string());
        let v = d
            .flows(&ListingQuery {
                limit: Some("25"),
                cursor: c.as_deref(),
                ..ListingQuery::default()
            })
            .unwrap();
        assert!(v.flows.len() <= 25);
        seen.extend(v.flows.into_iter().map(|f| f.client));
        match v.next_cursor {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 60);
    // By backend: the two lists add up, each flow where its session is.
    let by = |b: &str| {
        d.flows(&ListingQuery {
            backend: Some(b),
            limit: Some("1000"),
            ..ListingQuery::default()
        })
        .unwrap()
        .flows
    };
    let (fa, fb) = (by("a"), by("b"));
    assert_eq!(fa.len() + fb.len(), 60);
    assert_eq!(
        fa.len(),
        owners.iter().filter(|(_, o)| *o == BackendId(0)).count()
    );
    // By client IP, with or without a port.
    let ip5 = d
        .flows(&ListingQuery {
            client: Some("127.0.0.5"),
            limit: Some("1000"),
            ..ListingQuery::default()
        })
        .unwrap();
    assert_eq!(ip5.flows.len(), 20);
    let one = owners[45].0.to_string();
    let v = d
        .flows(&ListingQuery {
            client: Some(&one),
            ..ListingQuery::default()
        })
        .unwrap();
    assert_eq!(v.flows.len(), 1);
    assert_eq!(v.flows[0].client, one);
    // Bindings by CID prefix and source.
    let v = d
        .bindings(&ListingQuery {
            cid: Some("c0:01"),
            source: Some("learned"),
            limit: Some("1000"),
            ..ListingQuery::default()
        })
        .unwrap();
    assert_eq!(v.bindings.len(), 60);
    assert!(v.bindings.iter().all(|b| b.cid.starts_with("c001")));
    let v = d
        .bindings(&ListingQuery {
            cid: Some("c0010000"),
            ..ListingQuery::default()
        })
        .unwrap();
    assert_eq!(v.bindings.len(), 1);
    let none = d
        .bindings(&ListingQuery {
            source: Some("seeded"),
            ..ListingQuery::default()
        })
        .unwrap();
    assert!(none.bindings.is_empty());
    // Bad requests say what is wrong.
    for q in [
        ListingQuery {
            limit: Some("0"),
            ..ListingQuery::default()
        },
        ListingQuery {
            limit: Some("5000"),
            ..ListingQuery::default()
        },
        ListingQuery {
            client: Some("nope"),
            ..ListingQuery::default()
        },
        ListingQuery {
            cursor: Some("x"),
            ..ListingQuery::default()
        },
    ] {
        assert_eq!(d.flows(&q).unwrap_err().kind, ErrorKind::Invalid);
    }
    let e = d
        .flows(&ListingQuery {
            backend: Some("zz"),
            ..ListingQuery::default()
        })
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    let e = d
        .bindings(&ListingQuery {
            cid: Some("xyz"),
            ..ListingQuery::default()
        })
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Invalid);
}

#[test]
fn a_state_file_keeps_drains_and_weights_across_restarts() {
    let p = ports(2);
    let dir = std::env::temp_dir().join(format!("cidlb-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.json");
    let extra = format!("[admin]\nstate_file = \"{}\"", state.display());
    let backends = [("a", p[0].1, ""), ("b", p[1].1, "")];
    let view = |d: &Daemon| {
        d.snapshot(false).listeners[0]
            .backends
            .iter()
            .map(|b| (b.name.clone(), b.admin, b.weight))
            .collect::<Vec<_>>()
    };
    {
        let d = daemon(config(&backends, &extra));
        d.set_admin_state(None, "b", BackendState::Draining)
            .unwrap();
        d.set_weight(None, "a", 5).unwrap();
    }
    assert!(state.exists());
    // A restart with the same file: the operator's changes are back.
    let d = daemon(config(&backends, &extra));
    assert_eq!(
        view(&d),
        [
            ("a".to_string(), BackendState::Up, 5),
            ("b".to_string(), BackendState::Draining, 1)
        ]
    );
    // New flows avoid the drained backend, as before the restart.
    for i in 0..20u16 {
        let (_, owner) = session(&d, &p, "127.0.0.6", [6, 6, (i >> 8) as u8, i as u8]);
        assert_eq!(owner, BackendId(0));
    }
    drop(d);
    // The file changed a's weight since: the file wins there; b's drain stays.
    let d = daemon(config(
        &[("a", p[0].1, "weight = 3"), ("b", p[1].1, "")],
        &extra,
    ));
    assert_eq!(
        view(&d),
        [
            ("a".to_string(), BackendState::Up, 3),
            ("b".to_string(), BackendState::Draining, 1)
        ]
    );
    // Undrained: nothing differs from the file any more.
    d.set_admin_state(None, "b", BackendState::Up).unwrap();
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(!text.contains("\"b\""), "{text}");
    drop(d);
    // A broken state file is ignored (warned), not fatal.
    std::fs::write(&state, "not json").unwrap();
    let d = daemon(config(&backends, &extra));
    assert_eq!(view(&d)[1].1, BackendState::Up);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A config text of `ports` (the backends a..) plus `n` more backends "x0".. at
/// addresses where nothing listens (127.3.0.0/16), with `extra` settings.
fn big_config(named: &[(&str, SocketAddr)], n: usize, extra: &str) -> Config {
    let mut t = format!(
        "workers = 1\n{extra}\n[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\ncid_length = 4\n"
    );
    for (name, addr) in named {
        t.push_str(&format!(
            "[[listener.backend]]\nname = \"{name}\"\naddress = \"{addr}\"\n"
        ));
    }
    for i in 0..n {
        t.push_str(&format!(
            "[[listener.backend]]\nname = \"x{i}\"\naddress = \"127.3.{}.{}:{}\"\n",
            i / 250,
            i % 250 + 1,
            7000 + i / 62_500
        ));
    }
    Config::from_toml_str(&t, "big.toml").unwrap_or_else(|e| panic!("{e}"))
}

/// A reload from 3 to 10,003 backends and back, and again, on a real data plane: ids,
/// bindings and health stay right, one round of health results that takes 10,000
/// backends down applies in one step, and each step is timed (printed, and reported as
/// `duration_ms` and `cidlb_config_reload_seconds`; no timing is asserted).
#[test]
fn reload_to_ten_thousand_backends_and_back() {
    const N: usize = 10_000;
    let p = ports(3);
    let named = [("a", p[0].1), ("b", p[1].1), ("c", p[2].1)];
    let health = "[health]\nrise = 1\nfall = 1";
    let d = daemon(big_config(&named, 0, health));
    let sessions: Vec<((SocketAddr, [u8; 4]), BackendId)> = (0..30u16)
        .map(|i| {
            let cid = [0xd0, 0, (i >> 8) as u8, i as u8];
            let (cl, owner) = session(&d, &p, "127.0.0.1", cid);
            ((cl, cid), owner)
        })
        .collect();
    let first = ids(&d);
    let bindings_route = |d: &Daemon| {
        for ((cl, cid), owner) in &sessions {
            assert_eq!(cid_route(d, *cl, *cid), Some(*owner), "a binding moved");
        }
    };
    let mut timings = Vec::new();
    let step = |what: &str, cfg: Config, timings: &mut Vec<String>| {
        let t = Instant::now();
        let rep = d
            .apply_config(cfg)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        timings.push(format!(
            "{what}: {:.1} ms ({:?} wall, {} changes)",
            rep.duration_ms,
            t.elapsed(),
            rep.changes.len()
        ));
        rep
    };

    // Up to 10,003: the three keep their ids, the others get fresh, distinct ones.
    let big = big_config(&named, N, health);
    let rep = step("3 -> 10,003", big.clone(), &mut timings);
    assert_eq!(rep.generation, 2);
    assert_eq!(
        rep.changes.iter().filter(|c| c.contains("added")).count(),
        N
    );
    assert!(rep.duration_ms > 0.0);
    let up = ids(&d);
    assert_eq!(up.len(), N + 3);
    assert_eq!(&up[..3], &first[..]);
    let distinct: std::collections::HashSet<BackendId> = up.iter().map(|x| x.1).collect();
    assert_eq!(distinct.len(), N + 3);
    bindings_route(&d);
    // The plane has the whole set: new CIDs hash over all of them.
    let hashed: std::collections::HashSet<BackendId> = (0..2000u32)
        .filter_map(|i| {
            d.plane().listeners()[0]
                .explain_cid(&i.to_be_bytes(), None)
                .hashed
        })
        .collect();
    assert!(hashed.len() > 1000, "{} backends hashed", hashed.len());
    assert!(hashed.iter().all(|id| distinct.contains(id)));

    // One round of health results: the three answer, the 10,000 do not.
    let (_, targets) = d.health_targets();
    assert_eq!(targets.len(), N + 3);
    let results: Vec<ProbeResult> = targets
        .iter()
        .map(|(_, id, _)| {
            if first.iter().any(|x| x.1 == *id) {
                ProbeResult::HelloVerifyRequest
            } else {
                ProbeResult::Timeout
            }
        })
        .collect();
    let t = Instant::now();
    d.apply_health(&targets, &results);
    timings.push(format!(
        "one health round taking {N} backends down: {:?}",
        t.elapsed()
    ));
    let snap = d.snapshot(false);
    let downs = snap.listeners[0]
        .backends
        .iter()
        .filter(|b| b.state == BackendState::Down)
        .count();
    assert_eq!(downs, N);
    // New CIDs now hash to the three only.
    for i in 0..200u32 {
        let h = d.plane().listeners()[0]
            .explain_cid(&i.to_be_bytes(), None)
            .hashed
            .expect("three backends take new flows");
        assert!(first.iter().any(|x| x.1 == h), "{h:?} is down");
    }
    bindings_route(&d);

    // Back to 3: the others are removed, the three unchanged.
    let rep = step("10,003 -> 3", big_config(&named, 0, health), &mut timings);
    assert_eq!(
        rep.changes.iter().filter(|c| c.contains("removed")).count(),
        N
    );
    assert_eq!(ids(&d), first);
    bindings_route(&d);

    // And up again: every one of the 10,000 gets its old id back.
    step("3 -> 10,003 again", big, &mut timings);
    assert_eq!(ids(&d), up);
    bindings_route(&d);
    let metrics = cidlb::metrics::render(&d.snapshot(false), &Default::default());
    let gauge: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cidlb_config_reload_seconds "))
        .expect("the reload gauge")
        .parse()
        .unwrap();
    assert!(gauge > 0.0);
    for t in &timings {
        eprintln!("{t}");
    }
}
