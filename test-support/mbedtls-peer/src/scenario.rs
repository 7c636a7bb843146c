//! The NAT-rebinding scenario: many real DTLS clients talking through a balancer while
//! their source port and address change mid-session.
//!
//! Each client does a full handshake through [`ScenarioConfig::balancer`] from
//! `127.0.0.1`, echoes one message, and then, for each entry of
//! [`ScenarioConfig::moves`], rebinds its socket (as a NAT would) and echoes again:
//!
//! ```text
//! handshake  echo  ─Port→  echo  ─Address→  echo  ─Port→  echo      (Move::STANDARD)
//! ```
//!
//! A balancer that routes by Connection ID delivers every echo with one handshake per
//! client; one that routes by address sends a moved client to a server that does not
//! hold its session about two times in three (with three servers), and the echo is lost.
//!
//! Everything is counted from the clients' side in an [`Outcome`]; what the servers saw
//! is in their own [`ServerStats`](crate::ServerStats). Every wait is bounded (by
//! [`ScenarioConfig::handshake_timeout`] and [`ScenarioConfig::echo_timeout`]), and all
//! sockets are on 127.0.0.0/8.
//!
//! ```
//! use cidlb_test_mbedtls::scenario::{self, ScenarioConfig};
//! use cidlb_test_mbedtls::{DtlsServer, ServerConfig};
//!
//! // Without a balancer, straight to one server: every session survives its moves.
//! let server = DtlsServer::spawn(ServerConfig::new("127.0.0.1:0".parse()?, [0xa0], 4))?;
//! let mut config = ScenarioConfig::new(server.local_addr(), 4);
//! config.threads = 2;
//! let outcome = scenario::run(&config);
//! assert_eq!(outcome.lost, 0);
//! assert_eq!(outcome.echoed, 4 * 4);
//! assert_eq!(outcome.sessions_survived, 4);
//! assert_eq!(server.stats().migrations, 4 * 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use crate::{ClientConfig, DtlsClient};

/// One change of a client's source address, as a NAT rebinding would make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Move {
    /// Same IP address, new (kernel-chosen) port.
    Port,
    /// A new IP address of 127.0.0.0/8, never used before by any client of the run,
    /// and a new port.
    Address,
}

impl Move {
    /// Port, then address and port, then port again: the moves the end-to-end tests
    /// and the demo make.
    pub const STANDARD: [Move; 3] = [Move::Port, Move::Address, Move::Port];
}

/// What [`run`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioConfig {
    /// Where the clients send their datagrams: the balancer's listener (or a server).
    pub balancer: SocketAddr,
    /// How many clients (sessions) to run, numbered from 0.
    pub clients: usize,
    /// How many threads run the clients (each runs its clients one after another);
    /// at least 1.
    pub threads: usize,
    /// Length of the CID each client asks the server to put in its records.
    pub cid_len: usize,
    /// The rebindings each client makes after its first echo; it echoes once more after
    /// each.
    pub moves: Vec<Move>,
    /// Upper bound on one echo (three sends of the message); past it the echo counts as
    /// lost.
    pub echo_timeout: Duration,
    /// Upper bound on one handshake.
    pub handshake_timeout: Duration,
    /// Whether a client whose echo was lost does a new full handshake from where it is
    /// now, as a real device would once it notices its session is gone. Without this, a
    /// client goes on with its lost session (and its later echoes are usually lost too).
    pub reconnect_after_loss: bool,
}

impl ScenarioConfig {
    /// `clients` clients of `balancer` on 6 threads, 4-byte CIDs, the
    /// [`Move::STANDARD`] moves, a 400 ms echo timeout, a 10 s handshake timeout, and no
    /// reconnection after a loss.
    pub fn new(balancer: SocketAddr, clients: usize) -> Self {
        Self {
            balancer,
            clients,
            threads: 6,
            cid_len: 4,
            moves: Move::STANDARD.to_vec(),
            echo_timeout: Duration::from_millis(400),
            handshake_timeout: Duration::from_secs(10),
            reconnect_after_loss: false,
        }
    }

    /// Echoes each client attempts: one before the moves and one after each.
    pub fn echoes_per_client(&self) -> usize {
        self.moves.len() + 1
    }
}

/// What the clients saw, summed over all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Clients run.
    pub clients: usize,
    /// Echoes that came back.
    pub echoed: usize,
    /// Echoes that did not come back within the echo timeout (or failed otherwise).
    pub lost: usize,
    /// Clients whose first handshake failed; they attempted no echo.
    pub failed_handshakes: usize,
    /// Clients that lost at least one echo.
    pub sessions_lost: usize,
    /// Clients that handshook once and got every echo back, across every move: their
    /// session survived all its rebindings.
    pub sessions_survived: usize,
    /// Moves that could not be made because binding the new socket failed (the system
    /// ran out of ports?); the echo of that round was not attempted.
    pub failed_rebinds: usize,
    /// New handshakes after a loss (only with
    /// [`reconnect_after_loss`](ScenarioConfig::reconnect_after_loss)).
    pub reconnects: usize,
    /// Of those, the ones that failed (the client then gives up).
    pub failed_reconnects: usize,
}

impl Outcome {
    /// Whether every session survived: every client handshook once, made every move
    /// and got every echo back.
    pub fn all_survived(&self) -> bool {
        self.sessions_survived == self.clients
    }
}

/// Something that happened to one client, reported to the observer of [`run_with`] as
/// it happens (from the client's thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The first handshake completed.
    Connected {
        /// The client's number.
        client: usize,
        /// The client's address.
        local: SocketAddr,
        /// The CID the server issued (which the client puts in its records).
        cid: Vec<u8>,
    },
    /// A handshake (the first one, or one after a loss) failed; the client stops.
    HandshakeFailed {
        /// The client's number.
        client: usize,
        /// Why.
        error: String,
    },
    /// The client's socket was replaced by one at a new address.
    Rebound {
        /// The client's number.
        client: usize,
        /// The kind of move.
        kind: Move,
        /// Old address.
        from: SocketAddr,
        /// New address.
        to: SocketAddr,
    },
    /// An echo was attempted.
    Echo {
        /// The client's number.
        client: usize,
        /// 0 before any move, `i` after the `i`-th move.
        round: usize,
        /// The client's address when it sent.
        local: SocketAddr,
        /// Whether the echo came back.
        delivered: bool,
    },
    /// After a lost echo, the client did a new full handshake from its current address
    /// (only with [`reconnect_after_loss`](ScenarioConfig::reconnect_after_loss)).
    Reconnected {
        /// The client's number.
        client: usize,
        /// The client's address.
        local: SocketAddr,
        /// The CID the (possibly different) server issued.
        cid: Vec<u8>,
    },
    /// The client is done with all its rounds.
    Finished {
        /// The client's number.
        client: usize,
        /// Whether every echo of this client came back in its first session.
        survived: bool,
    },
}

/// Runs the scenario and waits for every client to finish.
pub fn run(config: &ScenarioConfig) -> Outcome {
    run_with(config, |_| {})
}

/// Runs the scenario, calling `observer` for every [`Event`] as it happens (from the
/// client threads, so events of different clients interleave), and waits for every
/// client to finish.
pub fn run_with(config: &ScenarioConfig, observer: impl Fn(Event) + Sync) -> Outcome {
    let outcome = Mutex::new(Outcome {
        clients: config.clients,
        ..Outcome::default()
    });
    let next_client = AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..config.threads.max(1) {
            s.spawn(|| loop {
                let client = next_client.fetch_add(1, Ordering::Relaxed);
                if client >= config.clients {
                    break;
                }
                let result = run_client(config, client, &observer);
                let mut o = outcome.lock().unwrap_or_else(PoisonError::into_inner);
                o.echoed += result.echoed;
                o.lost += result.lost;
                o.failed_handshakes += usize::from(result.failed_handshake);
                o.sessions_lost += usize::from(result.lost > 0);
                o.sessions_survived += usize::from(
                    !result.failed_handshake
                        && result.failed_rebinds == 0
                        && result.echoed == config.echoes_per_client(),
                );
                o.failed_rebinds += result.failed_rebinds;
                o.reconnects += result.reconnects;
                o.failed_reconnects += result.failed_reconnects;
            });
        }
    });
    outcome.into_inner().unwrap_or_else(PoisonError::into_inner)
}

/// What one client saw.
#[derive(Debug, Default)]
struct ClientResult {
    failed_handshake: bool,
    echoed: usize,
    lost: usize,
    failed_rebinds: usize,
    reconnects: usize,
    failed_reconnects: usize,
}

fn run_client(config: &ScenarioConfig, client: usize, observer: &impl Fn(Event)) -> ClientResult {
    let mut result = ClientResult::default();
    let connect = |bind: SocketAddr| {
        let mut cfg = ClientConfig::new(config.balancer);
        cfg.bind = bind;
        cfg.own_cid_len = config.cid_len;
        cfg.handshake_timeout = config.handshake_timeout;
        DtlsClient::connect(cfg)
    };
    let start = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let mut dtls = match connect(start) {
        Ok(dtls) => dtls,
        Err(e) => {
            result.failed_handshake = true;
            observer(Event::HandshakeFailed {
                client,
                error: e.to_string(),
            });
            return result;
        }
    };
    let mut local = dtls.local_addr().unwrap_or(start);
    observer(Event::Connected {
        client,
        local,
        cid: dtls.peer_cid(),
    });
    let mut address_moves = 0;
    for round in 0..config.echoes_per_client() {
        if round > 0 {
            let kind = config.moves[round - 1];
            let ip = match kind {
                Move::Port => local.ip(),
                Move::Address => {
                    address_moves += 1;
                    fresh_ip(config.clients, client, address_moves - 1)
                }
            };
            let from = local;
            // Binding a 127/8 address with port 0 only fails if the system is out of
            // ports; count that rather than stopping the whole run.
            match dtls
                .rebind(SocketAddr::new(ip, 0))
                .and_then(|()| dtls.local_addr())
            {
                Ok(to) => {
                    local = to;
                    observer(Event::Rebound {
                        client,
                        kind,
                        from,
                        to,
                    });
                }
                Err(_) => {
                    result.failed_rebinds += 1;
                    continue;
                }
            }
        }
        let message = format!("client {client} round {round}");
        let delivered = dtls.echo(message.as_bytes(), config.echo_timeout).is_ok();
        observer(Event::Echo {
            client,
            round,
            local,
            delivered,
        });
        if delivered {
            result.echoed += 1;
            continue;
        }
        result.lost += 1;
        if config.reconnect_after_loss {
            result.reconnects += 1;
            // The new session starts from the address the client has now; the old
            // socket must be closed first so that the new one can take its place.
            drop(dtls);
            match connect(local) {
                Ok(new) => {
                    dtls = new;
                    observer(Event::Reconnected {
                        client,
                        local,
                        cid: dtls.peer_cid(),
                    });
                }
                Err(e) => {
                    result.failed_reconnects += 1;
                    observer(Event::HandshakeFailed {
                        client,
                        error: e.to_string(),
                    });
                    return result;
                }
            }
        }
    }
    observer(Event::Finished {
        client,
        survived: result.lost == 0 && result.failed_rebinds == 0,
    });
    result
}

/// The IP address of `client`'s `nth` move to a new address: 127.0.x.y with x ≥ 1, so
/// distinct from 127.0.0.1 and from every other client's and move's address.
fn fresh_ip(clients: usize, client: usize, nth: usize) -> IpAddr {
    let n = nth * clients + client;
    // 255 × 200 addresses are plenty for a test; past that they repeat.
    let x = 1 + (n / 200) % 255;
    let y = 2 + n % 200;
    IpAddr::V4(Ipv4Addr::new(127, 0, x as u8, y as u8))
}
