//! End to end with real DTLS stacks: Mbed TLS 3.6.5 DTLS 1.2 servers that issue their
//! own CIDs behind the real `cidlb` binary, real clients behind a simulated NAT that
//! rebinds their source port and address mid-session.
//!
//! Assertions are on what the servers and clients see (handshake counters, echoed
//! application data), not on the balancer's view of itself. Every socket is on
//! 127.0.0.0/8; every wait is bounded.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use cidlb_test_mbedtls::scenario::{self, Move, Outcome, ScenarioConfig};
use cidlb_test_mbedtls::{ClientConfig, Direction, DtlsClient, DtlsServer, ServerConfig};
use common::Balancer;

const CID_LEN: usize = 4;
const ECHO_TIMEOUT: Duration = Duration::from_millis(400);

fn servers(n: u8) -> Vec<DtlsServer> {
    (0..n)
        .map(|i| {
            // Each server's CIDs start with its own prefix (as routable CIDs would).
            let cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), vec![0xa0 + i], CID_LEN);
            DtlsServer::spawn(cfg).expect("DTLS server starts")
        })
        .collect()
}

/// The shared rebinding scenario through `lb` (handshake, echo, then a new port, a new
/// IP 127.0.x.y and port, a new port again, echoing after each), `clients` clients on
/// `threads` threads.
fn scenario(lb: SocketAddr, clients: usize, threads: usize) -> Outcome {
    let mut cfg = ScenarioConfig::new(lb, clients);
    cfg.threads = threads;
    cfg.cid_len = CID_LEN;
    cfg.moves = Move::STANDARD.to_vec();
    cfg.echo_timeout = ECHO_TIMEOUT;
    cfg.handshake_timeout = Duration::from_secs(10);
    scenario::run(&cfg)
}

fn handshakes(servers: &[DtlsServer]) -> u64 {
    servers.iter().map(|s| s.stats().handshakes).sum()
}

#[test]
fn sessions_survive_port_and_address_rebinding() {
    let servers = servers(3);
    let backends: Vec<SocketAddr> = servers.iter().map(|s| s.local_addr()).collect();
    let lb = Balancer::quick(&backends, CID_LEN, "cid");
    let clients = 60;
    let o = scenario(lb.addr, clients, 6);
    let per_server: Vec<_> = servers.iter().map(|s| s.stats()).collect();
    eprintln!("CID routing: {o:?}; servers: {per_server:#?}");
    assert_eq!(o.failed_handshakes, 0);
    assert_eq!(o.failed_rebinds, 0);
    assert_eq!(o.lost, 0, "every message echoed end to end");
    assert_eq!(o.echoed, clients * 4);
    assert_eq!(
        handshakes(&servers),
        clients as u64,
        "exactly one handshake per client"
    );
    // The sessions really moved: each client moved three times, the servers saw it.
    let migrations: u64 = per_server.iter().map(|s| s.migrations).sum();
    assert_eq!(migrations, clients as u64 * 3);
    // And the load was spread: every server holds sessions.
    assert!(per_server.iter().all(|s| s.handshakes > 0));
}

#[test]
fn address_only_routing_loses_sessions() {
    // The same scenario through address-only routing (what an address-hashing
    // balancer does) must lose sessions, or the test above proves nothing.
    let servers = servers(3);
    let backends: Vec<SocketAddr> = servers.iter().map(|s| s.local_addr()).collect();
    let lb = Balancer::quick(&backends, CID_LEN, "address");
    let clients = 24;
    let o = scenario(lb.addr, clients, 6);
    eprintln!("address-only routing: {o:?}");
    assert_eq!(o.failed_handshakes, 0);
    assert_eq!(o.failed_rebinds, 0);
    // With 3 backends each move lands elsewhere 2 times in 3; a lost session stays lost.
    assert!(
        o.lost > clients,
        "expected most rebound sessions lost, got {o:?}"
    );
    let unknown: u64 = servers.iter().map(|s| s.stats().unknown_cid).sum();
    assert!(unknown > 0, "servers saw CIDs they never issued");
}

#[test]
fn replayed_record_from_another_address_does_not_divert_replies() {
    let servers = servers(3);
    let backends: Vec<SocketAddr> = servers.iter().map(|s| s.local_addr()).collect();
    let lb = Balancer::quick(&backends, CID_LEN, "cid");
    let mut cfg = ClientConfig::new(lb.addr);
    cfg.bind = "127.0.0.1:0".parse().unwrap();
    cfg.own_cid_len = CID_LEN;
    cfg.capture = true;
    let mut client = DtlsClient::connect(cfg).expect("handshake through cidlb");
    client.echo(b"before", ECHO_TIMEOUT).expect("echo");
    // The attacker replays the client's last CID record from another address.
    let genuine = client
        .captured()
        .into_iter()
        .rev()
        .find(|(d, bytes)| *d == Direction::ClientToServer && bytes[0] == 25)
        .map(|(_, b)| b)
        .expect("a CID record was sent");
    let attacker = UdpSocket::bind("127.0.0.66:0").unwrap();
    attacker
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for _ in 0..3 {
        attacker.send_to(&genuine, lb.addr).unwrap();
    }
    // The genuine client keeps its session and its replies.
    for i in 0..5 {
        client
            .echo(format!("after {i}").as_bytes(), ECHO_TIMEOUT)
            .expect("the genuine client still gets its echoes");
    }
    // The attacker gets nothing back.
    let mut buf = [0u8; 2048];
    assert!(
        attacker.recv_from(&mut buf).is_err(),
        "nothing is sent to the attacker"
    );
    let stats: Vec<_> = servers.iter().map(|s| s.stats()).collect();
    let migrations: u64 = stats.iter().map(|s| s.migrations).sum();
    let rejected: u64 = stats
        .iter()
        .map(|s| s.replays + s.migrations_rejected)
        .sum();
    assert_eq!(migrations, 0, "the session never moved");
    assert!(
        rejected >= 1,
        "the replay reached the backend and was rejected: {stats:?}"
    );
    assert_eq!(handshakes(&servers), 1);
}
