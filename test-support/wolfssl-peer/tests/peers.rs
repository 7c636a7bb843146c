//! Real wolfSSL DTLS 1.3 clients against real wolfSSL DTLS 1.3 servers, on loopback
//! addresses only. Every wait is bounded.

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::Duration;

use cidlb_test_wolfssl::record::{self, Kind};
use cidlb_test_wolfssl::{
    ClientConfig, Direction, DtlsClient, DtlsServer, ServerConfig, ServerStats,
};

const TIMEOUT: Duration = Duration::from_secs(5);
const PREFIX: [u8; 2] = [0xc1, 0xd0];

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("valid socket address")
}

fn server(cid_len: usize) -> DtlsServer {
    DtlsServer::spawn(ServerConfig::new(addr("127.0.0.1:0"), PREFIX, cid_len)).expect("server")
}

fn client(server: &DtlsServer) -> DtlsClient {
    DtlsClient::connect(ClientConfig::new(server.local_addr())).expect("handshake")
}

fn captured_client(server: &DtlsServer) -> DtlsClient {
    let mut config = ClientConfig::new(server.local_addr());
    config.capture = true;
    DtlsClient::connect(config).expect("handshake")
}

#[test]
fn handshake_and_echo() {
    let server = server(6);
    let mut client = client(&server);

    assert_eq!(client.version(), "DTLSv1.3");
    let server_cid = client.peer_cid();
    assert_eq!(server_cid.len(), 6);
    assert_eq!(server_cid[..2], PREFIX);
    assert_eq!(client.own_cid().len(), 4);
    assert_eq!(client.ciphersuite(), "TLS13-AES128-GCM-SHA256");

    for i in 0..5 {
        client
            .echo(format!("hello {i}").as_bytes(), TIMEOUT)
            .expect("echo");
    }
    let stats = server.stats();
    assert_eq!(stats.handshakes, 1, "{stats:?}");
    assert_eq!(stats.hello_retry_requests, 1, "{stats:?}");
    assert_eq!(stats.active_sessions, 1);
    assert_eq!(stats.echoed, 5);
    assert_eq!(stats.migrations, 0);
    assert_eq!(stats.failed_handshakes, 0);
}

/// What the handshake and the records look like on the wire, as these tests rely on
/// it (and as a balancer in front of these peers sees it).
#[test]
fn wire_format() {
    let server = server(4);
    let mut client = captured_client(&server);
    client.echo(b"on the wire", TIMEOUT).expect("echo");
    let server_cid = client.peer_cid();
    let client_cid = client.own_cid();
    let captured = client.captured();
    // Both sides issue 4-byte CIDs here.
    for (dir, datagram) in &captured {
        eprintln!(
            "{} {:02x?}.. {:?}",
            dir.as_str(),
            &datagram[..datagram.len().min(8)],
            record::describe(datagram, 4)
        );
    }

    // Cookie round trip: ClientHello, HelloRetryRequest, ClientHello again.
    let hellos: Vec<(Direction, record::Hello)> = captured
        .iter()
        .flat_map(|(d, dg)| record::hellos(dg).into_iter().map(move |h| (*d, h)))
        .collect();
    assert!(hellos.len() >= 4, "{hellos:?}");
    assert_eq!(hellos[0].0, Direction::ClientToServer);
    assert_eq!(hellos[0].1.msg_type, record::CLIENT_HELLO);
    assert_eq!(hellos[1].0, Direction::ServerToClient);
    assert!(hellos[1].1.retry_request, "a HelloRetryRequest comes first");
    assert_eq!(hellos[2].1.msg_type, record::CLIENT_HELLO);
    // Each ClientHello announces the client's CID in extension 54.
    assert_eq!(hellos[0].1.connection_id(), Some(client_cid.clone()));
    assert_eq!(hellos[2].1.connection_id(), Some(client_cid.clone()));
    let server_hello = hellos
        .iter()
        .find(|(_, h)| h.msg_type == record::SERVER_HELLO && !h.retry_request)
        .map(|(_, h)| h)
        .expect("a ServerHello");
    // The server's CID travels in the plaintext ServerHello (extension 54).
    assert_eq!(server_hello.connection_id(), Some(server_cid.clone()));

    // Every encrypted record the client sends carries the server's CID in a unified
    // header with the C bit; every one the server sends carries the client's CID.
    let mut client_cid_records = 0;
    for (dir, datagram) in &captured {
        for r in record::records(datagram, 4) {
            if let Kind::Ciphertext { first, cid, .. } = r.kind {
                assert!(record::has_cid_bit(first), "{first:#04x}");
                let expected = match dir {
                    Direction::ClientToServer => {
                        client_cid_records += 1;
                        &server_cid
                    }
                    Direction::ServerToClient => &client_cid,
                };
                assert_eq!(cid, Some(expected.as_slice()));
            }
        }
    }
    assert!(client_cid_records >= 2, "Finished and application data");
}

#[test]
fn client_without_own_cid_still_uses_the_servers() {
    let server = server(5);
    let mut config = ClientConfig::new(server.local_addr());
    config.own_cid_len = 0;
    config.capture = true;
    let mut client = DtlsClient::connect(config).expect("handshake");
    client.echo(b"no cid for me", TIMEOUT).expect("echo");

    assert!(client.own_cid().is_empty());
    let server_cid = client.peer_cid();
    assert_eq!(server_cid.len(), 5);
    let captured = client.captured();
    let (_, last_sent) = captured
        .iter()
        .rev()
        .find(|(d, _)| *d == Direction::ClientToServer)
        .expect("sent something");
    assert_eq!(record::first_cid(last_sent, 5), Some(server_cid.as_slice()));
    // The server's records carry no CID (unified header without the C bit).
    let (_, last_received) = captured.last().expect("received something");
    assert!(record::is_unified(last_received[0]));
    assert!(!record::has_cid_bit(last_received[0]));
}

#[test]
fn wrong_psk_fails_the_handshake() {
    let server = server(4);
    let mut config = ClientConfig::new(server.local_addr());
    config.psk = b"not the right key".to_vec();
    config.handshake_timeout = Duration::from_secs(3);
    assert!(DtlsClient::connect(config).is_err());
    let stats = server.wait_for_stats(TIMEOUT, |s| s.failed_handshakes == 1);
    assert_eq!(stats.failed_handshakes, 1, "{stats:?}");
    assert_eq!(stats.handshakes, 0);
}

#[test]
fn ten_concurrent_clients_ten_handshakes() {
    let server = server(4);
    let server_addr = server.local_addr();
    let cids: Vec<Vec<u8>> = thread::scope(|scope| {
        let workers: Vec<_> = (0..10)
            .map(|n| {
                scope.spawn(move || {
                    let mut client =
                        DtlsClient::connect(ClientConfig::new(server_addr)).expect("handshake");
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
    assert_eq!(unique.len(), 10, "every session has its own CID");
    assert!(cids.iter().all(|cid| cid[..2] == PREFIX));

    let stats = server.stats();
    assert_eq!(stats.handshakes, 10, "{stats:?}");
    assert_eq!(stats.active_sessions, 10);
    assert!(stats.echoed >= 50, "{stats:?}");
    assert_eq!(stats.migrations, 0);
    assert_eq!(stats.failed_handshakes, 0);
}

#[test]
fn rebinding_to_a_new_port_and_a_new_address_keeps_the_session() {
    let server = server(4);
    let mut client = client(&server);
    client.echo(b"before", TIMEOUT).expect("echo");
    let first = client.local_addr().expect("addr");

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
}

/// The client's last datagram holding application data (a CID record).
fn last_app_datagram(client: &DtlsClient) -> Vec<u8> {
    client
        .captured()
        .into_iter()
        .rev()
        .find(|(d, dg)| *d == Direction::ClientToServer && record::has_cid_bit(dg[0]))
        .map(|(_, dg)| dg)
        .expect("the client sent a CID record")
}

fn assert_peer_stayed(server: &DtlsServer, client: &mut DtlsClient, stats: ServerStats) {
    assert_eq!(stats.migrations, 0, "{stats:?}");
    assert_eq!(stats.migrations_rejected, 1, "{stats:?}");
    // Echoes still reach the genuine client at its own address.
    client
        .echo(b"still mine", TIMEOUT)
        .expect("echo to the genuine client");
    let stats = server.stats();
    assert_eq!(stats.migrations, 0);
    assert_eq!(stats.handshakes, 1);
}

#[test]
fn replayed_cid_record_from_another_address_does_not_move_the_peer() {
    let server = server(4);
    let mut client = captured_client(&server);
    client.echo(b"genuine", TIMEOUT).expect("echo");
    let datagram = last_app_datagram(&client);

    let attacker = UdpSocket::bind("127.0.0.2:0").expect("attacker socket");
    attacker
        .send_to(&datagram, server.local_addr())
        .expect("send");

    let stats = server.wait_for_stats(TIMEOUT, |s| s.migrations_rejected >= 1);
    assert_eq!(stats.replays, 1, "{stats:?}");
    assert_eq!(stats.auth_failures, 0, "{stats:?}");
    // The attacker got nothing back.
    attacker
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    assert!(attacker.recv_from(&mut [0; 2048]).is_err());
    assert_peer_stayed(&server, &mut client, stats);
}

#[test]
fn forged_cid_record_from_another_address_does_not_move_the_peer() {
    let server = server(4);
    let mut client = captured_client(&server);
    client.echo(b"genuine", TIMEOUT).expect("echo");
    let mut datagram = last_app_datagram(&client);

    // Same CID, a flipped ciphertext byte: the record fails authentication.
    let last = datagram.len() - 1;
    datagram[last] ^= 0x01;
    let attacker = UdpSocket::bind("127.0.0.1:0").expect("attacker socket");
    attacker
        .send_to(&datagram, server.local_addr())
        .expect("send");

    let stats = server.wait_for_stats(TIMEOUT, |s| s.migrations_rejected >= 1);
    assert_eq!(stats.auth_failures, 1, "{stats:?}");
    assert_eq!(stats.replays, 0, "{stats:?}");
    assert_peer_stayed(&server, &mut client, stats);
}

#[test]
fn unknown_cid_is_dropped() {
    let server = server(4);
    let mut client = captured_client(&server);
    client.echo(b"genuine", TIMEOUT).expect("echo");
    let mut datagram = last_app_datagram(&client);
    // Flip the random part of the CID (offset 1 is the CID in a unified header).
    datagram[4] ^= 0xff;
    let other = UdpSocket::bind("127.0.0.1:0").expect("socket");
    other.send_to(&datagram, server.local_addr()).expect("send");
    let stats = server.wait_for_stats(TIMEOUT, |s| s.unknown_cid >= 1);
    assert_eq!(stats.unknown_cid, 1);
    assert_eq!(stats.migrations, 0);
}

#[test]
fn closing_ends_the_session() {
    let server = server(4);
    let mut client = client(&server);
    client.echo(b"bye soon", TIMEOUT).expect("echo");
    client.close().expect("close_notify");
    let stats = server.wait_for_stats(TIMEOUT, |s| s.closed_sessions == 1);
    assert_eq!(stats.closed_sessions, 1, "{stats:?}");
    assert_eq!(stats.active_sessions, 0);
}

#[test]
fn invalid_configs_are_refused() {
    let bind = addr("127.0.0.1:0");
    assert!(DtlsServer::spawn(ServerConfig::new(bind, [1, 2, 3, 4], 4)).is_err());
    assert!(DtlsServer::spawn(ServerConfig::new(bind, [1], 11)).is_err());
    assert!(DtlsServer::spawn(ServerConfig::new(bind, [1], 0)).is_err());
    let mut config = ServerConfig::new(bind, [1], 4);
    config.psk_identity = b"nul\0inside".to_vec();
    assert!(DtlsServer::spawn(config).is_err());
    let mut client = ClientConfig::new(bind);
    client.own_cid_len = 11;
    assert!(DtlsClient::connect(client).is_err());
}

#[test]
fn peers_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<DtlsClient>();
    assert_send::<DtlsServer>();
}
