//! A UDP relay that loses chosen datagrams, to check that handshakes survive the loss
//! of any flight.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::Direction;

/// Drops the first datagram in `direction` for which `matches` holds.
#[derive(Debug, Clone, Copy)]
pub struct DropOnce {
    /// Which way the datagram travels.
    pub direction: Direction,
    /// Whether this is the datagram to drop.
    pub matches: fn(&[u8]) -> bool,
}

impl DropOnce {
    /// Drops the first datagram from the client for which `matches` holds.
    pub fn client_to_server(matches: fn(&[u8]) -> bool) -> Self {
        DropOnce {
            direction: Direction::ClientToServer,
            matches,
        }
    }

    /// Drops the first datagram from the server for which `matches` holds.
    pub fn server_to_client(matches: fn(&[u8]) -> bool) -> Self {
        DropOnce {
            direction: Direction::ServerToClient,
            matches,
        }
    }
}

/// A UDP relay between one client and a server that drops chosen datagrams.
/// Runs until dropped, and for 30 s at most.
#[derive(Debug)]
pub struct LossyRelay {
    /// Where the client sends its datagrams.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl LossyRelay {
    /// Starts relaying to `server`, dropping one datagram for each rule.
    pub fn start(server: SocketAddr, mut rules: Vec<DropOnce>) -> LossyRelay {
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
    pub fn finish(mut self) -> usize {
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

/// A [`DropOnce::matches`] for the first datagram in its direction.
pub fn any(_: &[u8]) -> bool {
    true
}
