//! End to end with real DTLS 1.3 stacks: wolfSSL 5.9.4 DTLS 1.3 servers that issue their
//! own CIDs behind the real `cidlb` binary, real wolfSSL clients behind a simulated NAT
//! that rebinds their source port and address mid-session.
//!
//! DTLS 1.3 differs from the DTLS 1.2 of the Mbed TLS test on the wire: a
//! HelloRetryRequest cookie round trip, then encrypted handshake and application
//! records in unified headers (`0x3e`/`0x3f`) with the CID right after the first byte.
//!
//! Assertions are on what the servers and clients see (handshake counters, echoed
//! application data), not on the balancer's view of itself. Every socket is on
//! 127.0.0.0/8; every wait is bounded.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cidlb_test_wolfssl::{ClientConfig, DtlsClient, DtlsServer, ServerConfig, ServerStats};
use common::Balancer;

const CID_LEN: usize = 4;
const ECHO_TIMEOUT: Duration = Duration::from_millis(400);

fn servers(n: u8) -> Vec<DtlsServer> {
    (0..n)
        .map(|i| {
            // Each server's CIDs start with its own prefix (as routable CIDs would).
            let cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), vec![0xb0 + i], CID_LEN);
            DtlsServer::spawn(cfg).expect("DTLS server starts")
        })
        .collect()
}

#[derive(Default, Debug)]
struct Outcome {
    echoed: usize,
    lost: usize,
    failed_handshakes: usize,
}

/// `clients` clients each: handshake, echo, rebind to a new port, echo, rebind to a new
/// IP (127.0.x.y) and port, echo. Run on `threads` threads.
fn scenario(lb: SocketAddr, clients: usize, threads: usize) -> Outcome {
    let out = Arc::new(Mutex::new(Outcome::default()));
    std::thread::scope(|s| {
        for t in 0..threads {
            let out = out.clone();
            s.spawn(move || {
                for c in (t..clients).step_by(threads) {
                    let mut cfg = ClientConfig::new(lb);
                    cfg.bind = "127.0.0.1:0".parse().unwrap();
                    cfg.own_cid_len = CID_LEN;
                    cfg.handshake_timeout = Duration::from_secs(10);
                    let mut client = match DtlsClient::connect(cfg) {
                        Ok(cl) => cl,
                        Err(_) => {
                            out.lock().unwrap().failed_handshakes += 1;
                            continue;
                        }
                    };
                    let moves = [
                        "127.0.0.1:0".to_string(),
                        format!("127.0.{}.{}:0", 1 + c / 200, 2 + c % 200),
                    ];
                    for round in 0..=moves.len() {
                        if round > 0 {
                            client
                                .rebind(moves[round - 1].parse().unwrap())
                                .expect("rebind");
                        }
                        let msg = format!("client {c} round {round}");
                        let ok = client.echo(msg.as_bytes(), ECHO_TIMEOUT).is_ok();
                        let mut o = out.lock().unwrap();
                        if ok {
                            o.echoed += 1;
                        } else {
                            o.lost += 1;
                        }
                    }
                }
            });
        }
    });
    Arc::try_unwrap(out).unwrap().into_inner().unwrap()
}

fn total(stats: &[ServerStats], f: impl Fn(&ServerStats) -> u64) -> u64 {
    stats.iter().map(f).sum()
}

#[test]
fn dtls13_sessions_survive_port_and_address_rebinding() {
    let servers = servers(3);
    let backends: Vec<SocketAddr> = servers.iter().map(|s| s.local_addr()).collect();
    let lb = Balancer::quick(&backends, CID_LEN, "cid");
    let clients = 36;
    let o = scenario(lb.addr, clients, 6);
    let per_server: Vec<ServerStats> = servers.iter().map(|s| s.stats()).collect();
    eprintln!("CID routing: {o:?}; servers: {per_server:#?}");
    assert_eq!(o.failed_handshakes, 0);
    assert_eq!(o.lost, 0, "every message echoed end to end");
    assert_eq!(o.echoed, clients * 3);
    assert_eq!(
        total(&per_server, |s| s.handshakes),
        clients as u64,
        "exactly one handshake per client"
    );
    // The sessions really moved: each client moved twice, and the servers saw it.
    assert_eq!(total(&per_server, |s| s.migrations), clients as u64 * 2);
    assert_eq!(total(&per_server, |s| s.unknown_cid), 0);
    // And the load was spread: every server holds sessions.
    assert!(per_server.iter().all(|s| s.handshakes > 0));
}

#[test]
fn dtls13_address_only_routing_loses_sessions() {
    // The same scenario through address-only routing (what an address-hashing
    // balancer does) must lose sessions, or the test above proves nothing.
    let servers = servers(3);
    let backends: Vec<SocketAddr> = servers.iter().map(|s| s.local_addr()).collect();
    let lb = Balancer::quick(&backends, CID_LEN, "address");
    let clients = 30;
    let o = scenario(lb.addr, clients, 6);
    let per_server: Vec<ServerStats> = servers.iter().map(|s| s.stats()).collect();
    eprintln!("address-only routing: {o:?}");
    assert_eq!(o.failed_handshakes, 0);
    // With 3 backends each move lands elsewhere 2 times in 3.
    assert!(o.lost > 0, "expected rebound sessions lost, got {o:?}");
    assert!(
        total(&per_server, |s| s.unknown_cid) > 0,
        "servers saw CIDs they never issued"
    );
    // Nobody handshook again: the lost sessions are simply gone.
    assert_eq!(total(&per_server, |s| s.handshakes), clients as u64);
}
