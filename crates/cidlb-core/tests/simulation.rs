//! A deterministic simulation: many clients behind NATs that rebind (new port, new IP)
//! across several backends that issue their own CIDs. Every CID-bearing datagram after
//! the handshake must reach the backend that issued its CID. The same traffic through
//! address-only routing (consistent hash of address:port with affinity, what an
//! address-based balancer does) is counted to show what CID routing saves.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use cidlb_core::{Backend, BackendId, CidRouting, RouteOutcome, Router, RouterConfig, Verdict};
use cidlb_wire::build;
use cidlb_wire::ContentType;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Phase {
    Hello,
    Cookie,
    Established,
}

struct Client {
    addr: SocketAddr,
    phase: Phase,
    backend: Option<BackendId>, // who holds the session (ground truth)
    cid: Vec<u8>,
    seq: u64,
    asleep_until: u64,
}

struct Stats {
    cid_datagrams: u64,
    correct: u64,
    baseline_correct: u64,
    rebinds: u64,
    handshakes: u64,
    cookie_mismatch: u64,
}

fn run(n_backends: u16, n_clients: usize, seed: u64) -> Stats {
    let t0 = Instant::now();
    let mut cfg = RouterConfig::new(CidRouting::fixed(6), [seed, 2, 3, 4]);
    cfg.flow_idle = Duration::from_secs(300);
    cfg.binding_idle = Duration::from_secs(6 * 3600);
    cfg.max_flows = 10_000;
    cfg.max_bindings = 10_000;
    let mut r = Router::new(cfg, t0);
    let backends: Vec<Backend> = (0..n_backends)
        .map(|i| {
            Backend::new(
                i,
                format!("dtls-{i}"),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 1, i as u8 + 1)), 5684),
            )
        })
        .collect();
    r.set_backends(backends).unwrap();

    let mut rng = Rng(seed | 1);
    let mut next_port = 20_000u16;
    let mut fresh_addr = |rng: &mut Rng, ip: Option<IpAddr>| {
        next_port = next_port.wrapping_add(1).max(1024);
        let ip = ip.unwrap_or_else(|| {
            IpAddr::V4(Ipv4Addr::new(
                100,
                64,
                rng.below(256) as u8,
                rng.below(256) as u8,
            ))
        });
        SocketAddr::new(ip, next_port)
    };
    let mut clients: Vec<Client> = (0..n_clients)
        .map(|_| Client {
            addr: fresh_addr(&mut rng, None),
            phase: Phase::Hello,
            backend: None,
            cid: Vec::new(),
            seq: 1,
            asleep_until: 0,
        })
        .collect();
    // Which backend issued which CID (ground truth on the backends' side).
    let mut issued: HashMap<Vec<u8>, BackendId> = HashMap::new();
    // Address-only baseline: consistent hash of address:port, sticky per address.
    let mut baseline: HashMap<SocketAddr, BackendId> = HashMap::new();
    let mut st = Stats {
        cid_datagrams: 0,
        correct: 0,
        baseline_correct: 0,
        rebinds: 0,
        handshakes: 0,
        cookie_mismatch: 0,
    };

    // Two simulated hours in one-second steps; each client acts ~ every 30 s.
    for sec in 0..7200u64 {
        let now = t0 + Duration::from_secs(sec);
        if sec % 10 == 0 {
            r.sweep(now, 2_000);
        }
        for c in clients.iter_mut() {
            if sec < c.asleep_until || !rng.chance(3) {
                continue;
            }
            match c.phase {
                Phase::Hello | Phase::Cookie => {
                    let cookie: &[u8] = if c.phase == Phase::Cookie {
                        &[7; 16]
                    } else {
                        &[]
                    };
                    let d = build::client_hello_datagram([3; 32], cookie, Some(&[]));
                    let Verdict::Forward { backend, .. } = r.route(now, c.addr, &d) else {
                        panic!("ClientHello not forwarded");
                    };
                    if c.phase == Phase::Hello {
                        // The backend answers with a HelloVerifyRequest (cookie).
                        c.backend = Some(backend);
                        r.handle_backend_datagram(
                            now,
                            backend,
                            c.addr,
                            &build::hello_verify_request_datagram(&[7; 16]),
                        );
                        c.phase = Phase::Cookie;
                    } else {
                        // The cookie must come back to the backend that issued it.
                        if c.backend != Some(backend) {
                            st.cookie_mismatch += 1;
                        }
                        c.backend = Some(backend);
                        let mut cid = vec![backend.0 as u8];
                        cid.extend((0..5).map(|_| rng.below(256) as u8));
                        issued.insert(cid.clone(), backend);
                        r.handle_backend_datagram(
                            now,
                            backend,
                            c.addr,
                            &build::server_hello_datagram([4; 32], Some(&cid)),
                        );
                        c.cid = cid;
                        c.phase = Phase::Established;
                        st.handshakes += 1;
                        // Second flight: CKE + CCS + Finished (first CID record).
                        let mut d = Vec::new();
                        build::plaintext(ContentType::HANDSHAKE, 0, 2, &[16, 0, 0, 1, 0], &mut d);
                        build::plaintext(ContentType::CHANGE_CIPHER_SPEC, 0, 3, &[1], &mut d);
                        build::cid12(1, 0, &c.cid, &[0; 40], &mut d);
                        check(&mut r, &mut st, &mut baseline, &issued, now, c, &d);
                    }
                }
                Phase::Established => {
                    // NAT behaviour: sometimes a new port, sometimes a new IP as well.
                    if rng.chance(10) {
                        st.rebinds += 1;
                        let same_ip = rng.chance(50).then_some(c.addr.ip());
                        c.addr = fresh_addr(&mut rng, same_ip);
                    }
                    let mut d = Vec::new();
                    build::cid12(1, c.seq, &c.cid, &[0xab; 32], &mut d);
                    c.seq += 1;
                    check(&mut r, &mut st, &mut baseline, &issued, now, c, &d);
                    // The backend answers (application data, client's CID unknown to us).
                    let mut reply = Vec::new();
                    build::cid12(1, c.seq, &[9, 9, 9, 9], &[0xcd; 32], &mut reply);
                    r.handle_backend_datagram(now, c.backend.unwrap(), c.addr, &reply);
                    // Devices sleep longer than the flow timeout, shorter than bindings.
                    if rng.chance(5) {
                        c.asleep_until = sec + 600 + rng.below(1800);
                    }
                }
            }
        }
    }
    assert!(r.flow_count() <= 10_000 && r.binding_count() <= 10_000);
    let c = r.counters();
    eprintln!(
        "router counters: learned={} flow={} hashed={} unknown_cid={} cid_by_flow={}",
        c.routed(RouteOutcome::Learned),
        c.routed(RouteOutcome::Flow),
        c.routed(RouteOutcome::Hashed),
        c.routed(RouteOutcome::UnknownCid),
        c.routed(RouteOutcome::CidByFlow)
    );
    st
}

fn check(
    r: &mut Router,
    st: &mut Stats,
    baseline: &mut HashMap<SocketAddr, BackendId>,
    issued: &HashMap<Vec<u8>, BackendId>,
    now: Instant,
    c: &Client,
    d: &[u8],
) {
    let owner = issued[&c.cid];
    st.cid_datagrams += 1;
    if let Verdict::Forward { backend, .. } = r.route(now, c.addr, d) {
        if backend == owner {
            st.correct += 1;
        }
    }
    let b = *baseline
        .entry(c.addr)
        .or_insert_with(|| r.hashed_backend(c.addr).unwrap());
    if b == owner {
        st.baseline_correct += 1;
    }
}

#[test]
fn rebinding_clients_always_reach_their_backend() {
    for (backends, clients, seed) in [(3u16, 300usize, 1u64), (4, 300, 2), (5, 400, 3)] {
        let st = run(backends, clients, seed);
        let misrouted = st.cid_datagrams - st.correct;
        let base_misrouted = st.cid_datagrams - st.baseline_correct;
        eprintln!(
            "{backends} backends, {clients} clients: {} handshakes, {} rebinds, {} CID datagrams; \
             cidlb misrouted {misrouted} ({:.2}%), address-only misrouted {base_misrouted} ({:.1}%)",
            st.handshakes,
            st.rebinds,
            st.cid_datagrams,
            100.0 * misrouted as f64 / st.cid_datagrams as f64,
            100.0 * base_misrouted as f64 / st.cid_datagrams as f64,
        );
        assert!(
            st.handshakes as usize >= clients * 9 / 10,
            "most clients completed a handshake"
        );
        assert!(st.rebinds > 1000, "the scenario rebinds");
        assert_eq!(
            st.cookie_mismatch, 0,
            "cookie retries land on the same backend"
        );
        assert_eq!(
            misrouted, 0,
            "every CID datagram reaches the issuing backend"
        );
        // The baseline must lose sessions, or this scenario proves nothing.
        assert!(
            base_misrouted * 3 > st.cid_datagrams,
            "address-only routing loses sessions"
        );
    }
}
