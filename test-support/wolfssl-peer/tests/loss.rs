//! Handshakes survive the loss of any flight: both sides' retransmission timers work
//! (`wolfSSL_dtls_got_timeout`, driven by the peers' own timers).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use cidlb_test_wolfssl::record;
use cidlb_test_wolfssl::{ClientConfig, Direction, DtlsClient, DtlsServer, ServerConfig};

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

fn server_hello(datagram: &[u8]) -> bool {
    record::hellos(datagram)
        .iter()
        .any(|h| h.msg_type == record::SERVER_HELLO && !h.retry_request)
}

fn carries_cid(datagram: &[u8]) -> bool {
    datagram.first().is_some_and(|&b| record::has_cid_bit(b))
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
            // The ServerHello: the server's timer resends its whole flight.
            DropOnce {
                direction: Direction::ServerToClient,
                matches: server_hello,
            },
            // The first encrypted record of the server (EncryptedExtensions), from the
            // retransmitted flight: the server resends again.
            DropOnce {
                direction: Direction::ServerToClient,
                matches: carries_cid,
            },
            // The client's Finished, its first record with the server's CID: the server
            // resends its flight, and the client, which has not had an ACK, resends
            // its Finished.
            DropOnce {
                direction: Direction::ClientToServer,
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
        .echo(b"made it", Duration::from_secs(6))
        .expect("echo");

    assert_eq!(relay.finish(), 4, "all four drops happened");
    let stats = server.stats();
    eprintln!("handshake took {took:?}; {stats:?}");
    assert_eq!(stats.handshakes, 1, "{stats:?}");
    assert_eq!(stats.failed_handshakes, 0, "{stats:?}");
    assert!(stats.echoed >= 1, "{stats:?}");
    // The losses can only be repaired by retransmission timers (1 s at first).
    assert!(took >= Duration::from_millis(900), "took {took:?}");
}
