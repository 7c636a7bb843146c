//! NAT-mode mechanics of the data plane with plain UDP sockets on loopback: upstream
//! flows per client address, replies and backend-initiated datagrams following their
//! flow, rebinding onto a new flow to the same backend, and idle expiry. (The proof
//! with real DTLS stacks is in crates/cidlb/tests/e2e_*.rs.)

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use cidlb_core::plane::ListenerPlane;
use cidlb_core::{Backend, CidRouting, RouterConfig};
use cidlb_net::{DataPlaneConfig, ListenerSpec, NatPlane};
use cidlb_wire::build;

fn sock(addr: &str) -> UdpSocket {
    let s = UdpSocket::bind(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

fn recv(s: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 4096];
    s.recv_from(&mut buf)
        .ok()
        .map(|(n, a)| (buf[..n].to_vec(), a))
}

fn plane(backend: SocketAddr, flow_idle: Duration) -> NatPlane {
    let mut rc = RouterConfig::new(CidRouting::fixed(4), [1, 2, 3, 4]);
    rc.flow_idle = flow_idle;
    NatPlane::start(
        vec![ListenerSpec {
            name: "test".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            router: rc,
            backends: vec![Backend::new(0, "b0", backend)],
            upstream_source: None,
            upstream: cidlb_net::UpstreamMode::Nat,
        }],
        DataPlaneConfig {
            workers: 2,
            socket_buffer: 1 << 20,
        },
    )
    .unwrap()
}

fn cid_record(cid: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    build::cid12(1, 1, cid, payload, &mut d);
    d
}

#[test]
fn replies_and_backend_initiated_datagrams_follow_their_flow() {
    let backend = sock("127.0.0.1:0");
    let dp = plane(backend.local_addr().unwrap(), Duration::from_secs(600));
    let lb = dp.nat_listeners()[0].local_addr();
    let client = sock("127.0.0.1:0");

    // Handshake start: the backend sees a new upstream flow, answers with a CID.
    client
        .send_to(&build::client_hello_datagram([0; 32], &[], None), lb)
        .unwrap();
    let (_, up1) = recv(&backend).expect("ClientHello forwarded");
    assert_ne!(
        up1,
        client.local_addr().unwrap(),
        "NAT mode: the balancer's own port"
    );
    let cid = [0xc1, 0, 0, 7];
    backend
        .send_to(&build::server_hello_datagram([0; 32], Some(&cid)), up1)
        .unwrap();
    let (_, from) = recv(&client).expect("ServerHello forwarded back");
    assert_eq!(from, lb, "replies come from the listener address");

    // Backend-initiated later (e.g. an LwM2M notification): follows the flow.
    backend.send_to(b"notify", up1).unwrap();
    assert_eq!(recv(&client).unwrap().0, b"notify");

    // The client rebinds (new port) and sends a CID record: a new upstream flow.
    let rebound = sock("127.0.0.1:0");
    rebound.send_to(&cid_record(&cid, b"hi"), lb).unwrap();
    let (got, up2) = recv(&backend).expect("rebound CID record forwarded");
    assert_eq!(got, cid_record(&cid, b"hi"));
    assert_ne!(up2, up1, "a new address gets a new upstream flow");
    // The old path is not redirected: the backend decides (after authenticating) to
    // answer on the new flow, and only then does the rebound address get replies.
    backend.send_to(b"old path", up1).unwrap();
    assert_eq!(recv(&client).unwrap().0, b"old path");
    backend.send_to(b"new path", up2).unwrap();
    assert_eq!(recv(&rebound).unwrap().0, b"new path");
    let s = dp.nat_listeners()[0].stats();
    assert_eq!(s.upstreams_opened, 2);
    dp.join();
}

#[test]
fn idle_upstream_flows_expire() {
    let backend = sock("127.0.0.1:0");
    let dp = plane(backend.local_addr().unwrap(), Duration::from_secs(1));
    let lb = dp.nat_listeners()[0].local_addr();
    let client = sock("127.0.0.1:0");
    client
        .send_to(&cid_record(&[1, 2, 3, 4], b"x"), lb)
        .unwrap();
    let (_, up) = recv(&backend).expect("forwarded");
    // Wait well past the 1 s idle timeout (sweeps run every 250 ms), bounded.
    let mut expired = false;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(250));
        if dp.nat_listeners()[0].stats().upstreams_expired >= 1 {
            expired = true;
            break;
        }
    }
    assert!(expired, "the idle upstream flow was closed");
    // Nothing reaches the client through the closed flow any more.
    backend.send_to(b"late", up).unwrap();
    assert!(recv(&client).is_none());
    assert_eq!(dp.nat_listeners()[0].stats().upstreams_open, 0);
    dp.join();
}

#[test]
fn a_second_instance_on_the_same_address_is_refused() {
    let backend = sock("127.0.0.1:0");
    let first = plane(backend.local_addr().unwrap(), Duration::from_secs(600));
    let taken = first.nat_listeners()[0].local_addr();
    let mut rc = RouterConfig::new(CidRouting::fixed(4), [1, 2, 3, 4]);
    rc.flow_idle = Duration::from_secs(600);
    let second = NatPlane::start(
        vec![ListenerSpec {
            name: "again".into(),
            listen: taken,
            router: rc,
            backends: vec![Backend::new(0, "b0", backend.local_addr().unwrap())],
            upstream_source: None,
            upstream: cidlb_net::UpstreamMode::Nat,
        }],
        DataPlaneConfig {
            workers: 1,
            socket_buffer: 1 << 20,
        },
    );
    let err = second.expect_err("the address is taken");
    assert!(err.to_string().contains("already in use"), "{err}");
    first.join();
}

/// Clients sending fast, interleaved, to three backends: each client's datagrams reach
/// its backend in the order sent (the data plane groups a batch's sends by backend;
/// within a backend a client's datagrams must keep their order). Loopback does not
/// reorder, so any disorder would be the balancer's.
#[test]
fn each_clients_datagrams_keep_their_order() {
    // 12 clients: all on one backend would be a (1/3)^11 chance.
    const CLIENTS: u8 = 12;
    const EACH: u32 = 100;
    let backends: Vec<UdpSocket> = (0..3).map(|_| sock("127.0.0.1:0")).collect();
    let dp = NatPlane::start(
        vec![ListenerSpec {
            name: "test".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            router: RouterConfig::new(CidRouting::fixed(4), [1, 2, 3, 4]),
            backends: backends
                .iter()
                .enumerate()
                .map(|(i, b)| Backend::new(i as u16, format!("b{i}"), b.local_addr().unwrap()))
                .collect(),
            upstream_source: None,
            upstream: cidlb_net::UpstreamMode::Nat,
        }],
        DataPlaneConfig {
            workers: 1,
            socket_buffer: 1 << 20,
        },
    )
    .unwrap();
    let lb = dp.nat_listeners()[0].local_addr();
    // The backends read while the clients send (a burst left in a backend's default
    // receive buffer would overflow it); each stops after 1 s without a datagram.
    let readers: Vec<_> = backends
        .into_iter()
        .map(|s| {
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                let mut got = Vec::new();
                while let Some((d, from)) = recv(&s) {
                    let p = &d[d.len() - 4..];
                    got.push((from, u32::from_be_bytes([p[0], p[1], p[2], p[3]])));
                }
                got
            })
        })
        .collect();
    let clients: Vec<UdpSocket> = (0..CLIENTS).map(|_| sock("127.0.0.1:0")).collect();
    for seq in 0..EACH {
        for (c, s) in clients.iter().enumerate() {
            let mut payload = vec![c as u8];
            payload.extend_from_slice(&seq.to_be_bytes());
            s.send_to(&cid_record(&[0x10 + c as u8, 1, 2, 3], &payload), lb)
                .unwrap();
        }
        // Bursts of 60 interleaved datagrams: enough to fill the worker's batches,
        // small enough for the listener's receive buffer (capped by net.core.rmem_max).
        if seq % 5 == 4 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // Per (backend, upstream source): the sequence numbers in arrival order.
    let mut seen: std::collections::HashMap<(usize, SocketAddr), Vec<u32>> = Default::default();
    let mut total = 0u32;
    for (b, r) in readers.into_iter().enumerate() {
        for (from, seq) in r.join().expect("reader") {
            seen.entry((b, from)).or_default().push(seq);
            total += 1;
        }
    }
    assert!(
        total >= EACH * u32::from(CLIENTS) * 9 / 10,
        "only {total} datagrams arrived"
    );
    assert!(
        seen.len() >= usize::from(CLIENTS),
        "one upstream flow per client"
    );
    assert!(
        seen.keys()
            .map(|k| k.0)
            .collect::<std::collections::HashSet<_>>()
            .len()
            > 1,
        "the clients spread over several backends"
    );
    for (k, seqs) in &seen {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "datagrams of flow {k:?} reordered: {seqs:?}"
        );
    }
    drop(dp);
}
