//! Handshakes survive the loss of any flight: both sides' retransmission timers work.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use cidlb_test_mbedtls::record::{self, TLS12_CID};
use cidlb_test_mbedtls::{ClientConfig, Direction, DtlsClient, DtlsServer, ServerConfig};

/// Drops the first datagram in `direction` for which `matches` holds.
struct DropOnce {
    direction: Direction,
    matches: fn(&[u8]) -> bool,
}

/// A UDP relay between one client and a server that drops chosen datagrams.
/// Runs until dropped, and for 30 s at most.
struct LossyRelay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl LossyRelay {
    fn start(server: SocketAddr, mut rules: Vec<DropOnce>) -> LossyRelay {
        let front = UdpSocket::bind("127.0.0.1:0").expect("front socket");
        let back = UdpSocket::bind("127.0.0.1:0").expect("back socket");
        back.connect(server).expect("connect");
        for socket in [&front, &back] {
            socket
                .set_read_timeout(Some(Duration::from_millis(2)))
                .expect("timeout");
        }
        let addr = front.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let give_up = Instant::now() + Duration::from_secs(30);
            let mut client = None;
            let mut dropped = 0;
            let mut buf = [0u8; 65_535];
            let mut should_drop = |direction: Direction, datagram: &[u8]| {
                let hit = rules
                    .iter()
                    .position(|r| r.direction == direction && (r.matches)(datagram));
                hit.map(|i| rules.remove(i)).is_some()
            };
            while !stop_flag.load(Ordering::Relaxed) && Instant::now() < give_up {
                if let Ok((len, src)) = front.recv_from(&mut buf) {
                    client = Some(src);
                    if should_drop(Direction::ClientToServer, &buf[..len]) {
                        dropped += 1;
                    } else {
                        let _ = back.send(&buf[..len]);
                    }
                }
                if let Ok(len) = back.recv(&mut buf) {
                    if should_drop(Direction::ServerToClient, &buf[..len]) {
                        dropped += 1;
                    } else if let Some(client) = client {
                        let _ = front.send_to(&buf[..len], client);
                    }
                }
            }
            dropped
        });
        LossyRelay {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the relay and returns how many datagrams it dropped.
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("relay thread")
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn any(_: &[u8]) -> bool {
    true
}

fn has_handshake_type(datagram: &[u8], handshake_type: u8) -> bool {
    record::records(datagram, 0).any(|r| r.handshake_type() == Some(handshake_type))
}

fn server_hello(datagram: &[u8]) -> bool {
    has_handshake_type(datagram, 2)
}

fn carries_cid(datagram: &[u8]) -> bool {
    record::first_cid_record(datagram, 4).is_some_and(|r| r.content_type == TLS12_CID)
}

#[test]
fn every_lost_flight_is_retransmitted() {
    let server = DtlsServer::spawn(ServerConfig::new("127.0.0.1:0".parse().unwrap(), [0xc1], 4))
        .expect("server");
    let relay = LossyRelay::start(
        server.local_addr(),
        vec![
            // The first ClientHello: the client's timer resends it.
            DropOnce {
                direction: Direction::ClientToServer,
                matches: any,
            },
            // ServerHello + ServerHelloDone: the client resends its ClientHello and the
            // server answers the duplicate by resending its flight.
            DropOnce {
                direction: Direction::ServerToClient,
                matches: server_hello,
            },
            // ClientKeyExchange + ChangeCipherSpec + Finished: timers on both sides.
            DropOnce {
                direction: Direction::ClientToServer,
                matches: carries_cid,
            },
            // The server's ChangeCipherSpec + Finished, sent when its handshake is
            // already over: the client resends its last flight and the server, which
            // kept its own, resends it.
            DropOnce {
                direction: Direction::ServerToClient,
                matches: carries_cid,
            },
        ],
    );

    let mut config = ClientConfig::new(relay.addr);
    config.handshake_timeout = Duration::from_secs(15);
    let started = Instant::now();
    let mut client = DtlsClient::connect(config).expect("handshake despite losses");
    let took = started.elapsed();
    client
        .echo(b"made it", Duration::from_secs(5))
        .expect("echo");

    assert_eq!(relay.finish(), 4, "all four drops happened");
    let stats = server.stats();
    assert_eq!(stats.handshakes, 1, "{stats:?}");
    assert_eq!(stats.failed_handshakes, 0, "{stats:?}");
    assert_eq!(stats.echoed, 1, "{stats:?}");
    // Three of the losses can only be repaired by a 200 ms retransmission timer (the
    // third is also repaired when the server's timer resends its previous flight).
    assert!(took >= Duration::from_millis(600), "took {took:?}");
}
