//! The tests every peer crate runs against itself (real clients against real servers
//! of the same stack, on loopback addresses only), written once and generic over the
//! stack. Each function is the body of one `#[test]` and panics when it fails; the peer
//! crates call them from their `tests/peers.rs` and `tests/loss.rs`, passing what is
//! specific to their stack. Every wait is bounded.

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

use crate::relay::{DropOnce, LossyRelay};
use crate::{
    ClientConfig, Direction, DtlsClient, DtlsServer, DtlsStack, ServerConfig, ServerStats,
};

/// Bound on each echo (and on waiting for server counters).
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Prefix of the CIDs the test servers issue.
pub const PREFIX: [u8; 2] = [0xc1, 0xd0];

/// Parses a socket address.
pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("valid socket address")
}

/// A server on `127.0.0.1` issuing `cid_len`-byte CIDs starting with [`PREFIX`].
pub fn server<S: DtlsStack>(cid_len: usize) -> DtlsServer<S> {
    DtlsServer::spawn(ServerConfig::new(addr("127.0.0.1:0"), PREFIX, cid_len)).expect("server")
}

/// A client of `server` with the default configuration, handshake done.
pub fn client<S: DtlsStack>(server: &DtlsServer<S>) -> DtlsClient<S> {
    DtlsClient::connect(ClientConfig::new(server.local_addr())).expect("handshake")
}

/// A client of `server` that captures its datagrams, handshake done.
pub fn captured_client<S: DtlsStack>(server: &DtlsServer<S>) -> DtlsClient<S> {
    let mut config = ClientConfig::new(server.local_addr());
    config.capture = true;
    DtlsClient::connect(config).expect("handshake")
}

/// One handshake (with 6-byte server CIDs) and five echoes; the client sees the
/// expected cipher suite and protocol version, the server counts one cookie round trip.
pub fn handshake_and_echo<S: DtlsStack>(ciphersuite: &str, version: &str) {
    let server = server::<S>(6);
    let mut client = client(&server);

    assert_eq!(client.version(), version);
    let server_cid = client.peer_cid();
    assert_eq!(server_cid.len(), 6);
    assert_eq!(server_cid[..2], PREFIX);
    assert_eq!(client.own_cid().len(), 4);
    assert_eq!(client.ciphersuite(), ciphersuite);

    for i in 0..5 {
        client
            .echo(format!("hello {i}").as_bytes(), TIMEOUT)
            .expect("echo");
    }
    let stats = server.stats();
    assert_eq!(stats.handshakes, 1, "{stats:?}");
    assert_eq!(stats.cookie_requests, 1, "{stats:?}");
    assert_eq!(stats.active_sessions, 1);
    assert_eq!(stats.echoed, 5);
    assert_eq!(stats.migrations, 0);
    assert_eq!(stats.failed_handshakes, 0);
}

/// A client that issues no CID still puts the server's CID in its records, and the
/// server's records carry none. Returns the last datagram the client received, for
/// checks specific to the stack's record format.
pub fn client_without_own_cid_still_uses_the_servers<S: DtlsStack>() -> Vec<u8> {
    let server = server::<S>(5);
    let mut config = ClientConfig::new(server.local_addr());
    config.own_cid_len = 0;
    config.capture = true;
    let mut client = DtlsClient::<S>::connect(config).expect("handshake");
    client.echo(b"no cid for me", TIMEOUT).expect("echo");

    assert!(client.own_cid().is_empty());
    let server_cid = client.peer_cid();
    assert_eq!(server_cid.len(), 5);
    // The client's application data goes in a CID record carrying the server's CID;
    // the server's replies carry no CID.
    let captured = client.captured();
    let (_, last_sent) = captured
        .iter()
        .rev()
        .find(|(d, _)| *d == Direction::ClientToServer)
        .expect("sent something");
    let cid_record = S::first_cid_record(last_sent, 5).expect("CID record");
    assert_eq!(cid_record.cid, server_cid);
    let (_, last_received) = captured.last().expect("received something");
    assert_eq!(S::first_cid_record(last_received, 0), None);
    last_received.clone()
}

/// A client with the wrong key fails its handshake, and the server counts it.
pub fn wrong_psk_fails_the_handshake<S: DtlsStack>() {
    let server = server::<S>(4);
    let mut config = ClientConfig::new(server.local_addr());
    config.psk = b"not the right key".to_vec();
    config.handshake_timeout = Duration::from_secs(3);
    assert!(DtlsClient::<S>::connect(config).is_err());
    let stats = server.wait_for_stats(TIMEOUT, |s| s.failed_handshakes == 1);
    assert_eq!(stats.failed_handshakes, 1, "{stats:?}");
    assert_eq!(stats.handshakes, 0);
}

/// `clients` clients on their own threads, five echoes each: as many handshakes and
/// distinct CIDs.
pub fn concurrent_clients<S: DtlsStack>(clients: usize) {
    let server = server::<S>(4);
    let server_addr = server.local_addr();
    let cids: Vec<Vec<u8>> = thread::scope(|scope| {
        let workers: Vec<_> = (0..clients)
            .map(|n| {
                scope.spawn(move || {
                    let mut client = DtlsClient::<S>::connect(ClientConfig::new(server_addr))
                        .expect("handshake");
                    for i in 0..5 {
                        client
                            .echo(format!("client {n} message {i}").as_bytes(), TIMEOUT)
                            .expect("echo");
                    }
                    client.peer_cid()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("client thread"))
            .collect()
    });

    let mut unique = cids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), clients, "every session has its own CID");
    assert!(cids.iter().all(|cid| cid[..2] == PREFIX));

    let stats = server.stats();
    let clients = clients as u64;
    assert_eq!(stats.handshakes, clients, "{stats:?}");
    assert_eq!(stats.active_sessions, clients);
    assert!(stats.echoed >= 5 * clients, "{stats:?}");
    assert_eq!(stats.migrations, 0);
    assert_eq!(stats.failed_handshakes, 0);
}

/// `sessions` sessions held open at once by one thread, each echoing once.
pub fn many_sessions_at_once<S: DtlsStack>(sessions: usize) {
    let server = server::<S>(4);
    let mut clients: Vec<DtlsClient<S>> = (0..sessions).map(|_| client(&server)).collect();
    for (n, client) in clients.iter_mut().enumerate() {
        client
            .echo(format!("still here {n}").as_bytes(), TIMEOUT)
            .expect("echo");
    }
    let stats = server.stats();
    let sessions = sessions as u64;
    assert_eq!(stats.handshakes, sessions);
    assert_eq!(stats.active_sessions, sessions);
    assert_eq!(stats.echoed, sessions);
}

/// A client that moves to a new port, then to 127.0.0.2, keeps its session: the server
/// follows it without a new handshake.
pub fn rebinding_to_a_new_port_and_a_new_address_keeps_the_session<S: DtlsStack>() {
    let server = server::<S>(4);
    let mut client = client(&server);
    client.echo(b"before", TIMEOUT).expect("echo");
    let first = client.local_addr().expect("addr");
    let cid = client.peer_cid();
    assert_eq!(server.peers(), vec![(cid.clone(), first)]);

    client
        .rebind(addr("127.0.0.1:0"))
        .expect("rebind to a new port");
    let second = client.local_addr().expect("addr");
    assert_ne!(second.port(), first.port());
    client
        .echo(b"after new port", TIMEOUT)
        .expect("echo after rebinding");
    assert_eq!(server.stats().migrations, 1);

    client
        .rebind(addr("127.0.0.2:0"))
        .expect("rebind to 127.0.0.2");
    assert_eq!(
        client.local_addr().expect("addr").ip(),
        addr("127.0.0.2:0").ip()
    );
    client
        .echo(b"after new address", TIMEOUT)
        .expect("echo after moving to 127.0.0.2");
    client.echo(b"and again", TIMEOUT).expect("echo");

    let stats = server.stats();
    assert_eq!(stats.handshakes, 1, "no new handshake: {stats:?}");
    assert_eq!(stats.migrations, 2);
    assert_eq!(stats.migrations_rejected, 0);
    assert_eq!(stats.active_sessions, 1);
    assert_eq!(stats.echoed, 4);
    // The server sees the client where it is now.
    assert_eq!(
        server.peers(),
        vec![(cid, client.local_addr().expect("addr"))]
    );
}

/// The client's last datagram holding a CID record (its last application data), and
/// that record's offset within it.
pub fn last_app_datagram<S: DtlsStack>(client: &DtlsClient<S>, cid_len: usize) -> (Vec<u8>, usize) {
    client
        .captured()
        .into_iter()
        .rev()
        .filter(|(d, _)| *d == Direction::ClientToServer)
        .find_map(|(_, datagram)| {
            let offset = S::first_cid_record(&datagram, cid_len)?.offset;
            Some((datagram, offset))
        })
        .expect("the client sent a CID record")
}

fn assert_peer_stayed<S: DtlsStack>(
    server: &DtlsServer<S>,
    client: &mut DtlsClient<S>,
    stats: ServerStats,
) {
    assert_eq!(stats.migrations, 0, "{stats:?}");
    assert_eq!(stats.migrations_rejected, 1, "{stats:?}");
    // Echoes still reach the genuine client at its own address.
    client
        .echo(b"still mine", TIMEOUT)
        .expect("echo to the genuine client");
    let stats = server.stats();
    assert_eq!(stats.migrations, 0);
    assert_eq!(stats.handshakes, 1);
    assert_eq!(
        server.peers(),
        vec![(client.peer_cid(), client.local_addr().expect("addr"))]
    );
}

/// An attacker on another address replays the client's last record: counted as a
/// replay, not answered, and the session stays where it is.
pub fn replayed_cid_record_from_another_address_does_not_move_the_peer<S: DtlsStack>() {
    let server = server::<S>(4);
    let mut client = captured_client(&server);
    client.echo(b"genuine", TIMEOUT).expect("echo");
    let (datagram, _) = last_app_datagram(&client, 4);

    let attacker = UdpSocket::bind("127.0.0.2:0").expect("attacker socket");
    attacker
        .send_to(&datagram, server.local_addr())
        .expect("send");

    let stats = server.wait_for_stats(TIMEOUT, |s| s.replays >= 1 && s.migrations_rejected >= 1);
    assert_eq!(stats.replays, 1, "{stats:?}");
    assert_eq!(stats.auth_failures, 0, "{stats:?}");
    // The attacker got nothing back.
    attacker
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    assert!(attacker.recv_from(&mut [0; 2048]).is_err());
    assert_peer_stayed(&server, &mut client, stats);
}

/// An attacker on another address sends the client's last record altered by `forge`
/// (given the datagram and the record's offset in it) so that it is not a replay but
/// fails authentication: counted, and the session stays where it is.
pub fn forged_cid_record_from_another_address_does_not_move_the_peer<S: DtlsStack>(
    forge: fn(&mut [u8], usize),
) {
    let server = server::<S>(4);
    let mut client = captured_client(&server);
    client.echo(b"genuine", TIMEOUT).expect("echo");
    let (mut datagram, offset) = last_app_datagram(&client, 4);

    forge(&mut datagram, offset);
    let attacker = UdpSocket::bind("127.0.0.1:0").expect("attacker socket");
    attacker
        .send_to(&datagram, server.local_addr())
        .expect("send");

    let stats = server.wait_for_stats(TIMEOUT, |s| {
        s.auth_failures >= 1 && s.migrations_rejected >= 1
    });
    assert_eq!(stats.auth_failures, 1, "{stats:?}");
    assert_eq!(stats.replays, 0, "{stats:?}");
    assert_peer_stayed(&server, &mut client, stats);
}

/// A record whose CID no session owns is dropped and counted.
pub fn unknown_cid_is_dropped<S: DtlsStack>() {
    let server = server::<S>(4);
    let mut client = captured_client(&server);
    client.echo(b"genuine", TIMEOUT).expect("echo");
    let (mut datagram, offset) = last_app_datagram(&client, 4);
    // Flip the random part of the CID.
    datagram[offset + S::RECORD_CID_OFFSET + 3] ^= 0xff;
    let other = UdpSocket::bind("127.0.0.1:0").expect("socket");
    other.send_to(&datagram, server.local_addr()).expect("send");
    let stats = server.wait_for_stats(TIMEOUT, |s| s.unknown_cid >= 1);
    assert_eq!(stats.unknown_cid, 1);
    assert_eq!(stats.migrations, 0);
}

/// close_notify ends the session on the server.
pub fn closing_ends_the_session<S: DtlsStack>() {
    let server = server::<S>(4);
    let mut client = client(&server);
    client.echo(b"bye soon", TIMEOUT).expect("echo");
    client.close().expect("close_notify");
    let stats = server.wait_for_stats(TIMEOUT, |s| s.closed_sessions == 1);
    assert_eq!(stats.closed_sessions, 1, "{stats:?}");
    assert_eq!(stats.active_sessions, 0);
}

/// Configurations the stack cannot serve are refused up front.
pub fn invalid_configs_are_refused<S: DtlsStack>() {
    let bind = addr("127.0.0.1:0");
    let too_long = S::CID_MAX_LEN + 1;
    assert!(DtlsServer::<S>::spawn(ServerConfig::new(bind, [1, 2, 3, 4], 4)).is_err());
    assert!(DtlsServer::<S>::spawn(ServerConfig::new(bind, [1], too_long)).is_err());
    assert!(DtlsServer::<S>::spawn(ServerConfig::new(bind, [1], 0)).is_err());
    let mut config = ServerConfig::new(bind, [1], 4);
    config.psk = Vec::new();
    assert!(DtlsServer::<S>::spawn(config).is_err());
    let mut client = ClientConfig::new(bind);
    client.own_cid_len = too_long;
    assert!(DtlsClient::<S>::connect(client).is_err());
}

/// Clients and servers can be handed to other threads.
pub fn peers_can_move_between_threads<S: DtlsStack>() {
    fn assert_send<T: Send>() {}
    assert_send::<DtlsClient<S>>();
    assert_send::<DtlsServer<S>>();
}

/// A paused server handles nothing (as a process under `kill -STOP`); once resumed it
/// reads what was queued meanwhile, and the session goes on without a new handshake.
pub fn paused_server_answers_nothing_until_resumed<S: DtlsStack>() {
    let server = server::<S>(4);
    let mut client = client(&server);
    client.echo(b"before", TIMEOUT).expect("echo");
    server.pause();
    let before = server.stats();
    client.send(b"while paused").expect("send");
    assert!(
        client.recv(Duration::from_millis(300)).is_err(),
        "a paused server answered"
    );
    assert_eq!(server.stats(), before, "a paused server handled a datagram");
    server.resume();
    let late = client
        .recv(TIMEOUT)
        .expect("the record queued during the pause is echoed after resume");
    assert_eq!(late, b"while paused");
    client.echo(b"after", TIMEOUT).expect("echo after resume");
    let stats = server.stats();
    assert_eq!(stats.handshakes, 1, "{stats:?}");
    assert_eq!(stats.echoed, 3, "{stats:?}");
}

/// What [`every_lost_flight_is_retransmitted`] expects of a stack.
#[derive(Debug, Clone, Copy)]
pub struct LossExpectations {
    /// The handshake cannot be faster than this: the losses are only repaired by
    /// retransmission timers.
    pub min_handshake: Duration,
    /// Bound on the echo after the handshake.
    pub echo_timeout: Duration,
    /// Whether the server must have echoed exactly once (else at least once: a
    /// retransmitted record may be echoed again).
    pub exactly_one_echo: bool,
}

/// A handshake through a relay that drops one datagram per rule in `drops` still
/// completes, and an echo follows: both sides' retransmission timers work.
pub fn every_lost_flight_is_retransmitted<S: DtlsStack>(
    drops: Vec<DropOnce>,
    expect: LossExpectations,
) {
    let server =
        DtlsServer::<S>::spawn(ServerConfig::new(addr("127.0.0.1:0"), [0xc1], 4)).expect("server");
    let rules = drops.len();
    let relay = LossyRelay::start(server.local_addr(), drops);

    let mut config = ClientConfig::new(relay.addr);
    config.handshake_timeout = Duration::from_secs(15);
    let started = Instant::now();
    let mut client = DtlsClient::<S>::connect(config).expect("handshake despite losses");
    let took = started.elapsed();
    client.echo(b"made it", expect.echo_timeout).expect("echo");

    assert_eq!(relay.finish(), rules, "every drop happened");
    let stats = server.stats();
    eprintln!("handshake took {took:?}; {stats:?}");
    assert_eq!(stats.handshakes, 1, "{stats:?}");
    assert_eq!(stats.failed_handshakes, 0, "{stats:?}");
    if expect.exactly_one_echo {
        assert_eq!(stats.echoed, 1, "{stats:?}");
    } else {
        assert!(stats.echoed >= 1, "{stats:?}");
    }
    assert!(took >= expect.min_handshake, "took {took:?}");
}
