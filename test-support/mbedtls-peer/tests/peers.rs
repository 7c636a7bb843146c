//! Real Mbed TLS clients against real Mbed TLS servers, on loopback addresses only.
//! Every wait is bounded.

use std::net::{SocketAddr, UdpSocket};
use std::thread;
use std::time::Duration;

use cidlb_test_mbedtls::record::{self, TLS12_CID};
use cidlb_test_mbedtls::{
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

#[test]
fn handshake_and_echo() {
    let server = server(6);
    let mut client = client(&server);

    let server_cid = client.peer_cid();
    assert_eq!(server_cid.len(), 6);
    assert_eq!(server_cid[..2], PREFIX);
    assert_eq!(client.own_cid().len(), 4);
    assert_eq!(client.ciphersuite(), "TLS-PSK-WITH-AES-128-CCM-8");

    for i in 0..5 {
        client
            .echo(format!("hello {i}").as_bytes(), TIMEOUT)
            .expect("echo");
    }
    let stats = server.stats();
    assert_eq!(stats.handshakes, 1);
    assert_eq!(stats.hello_verify_requests, 1);
    assert_eq!(stats.active_sessions, 1);
    assert_eq!(stats.echoed, 5);
    assert_eq!(stats.migrations, 0);
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
    // The client's application data goes in a tls12_cid record carrying the server's
    // CID; the server's replies carry no CID.
    let captured = client.captured();
    let (_, last_sent) = captured
        .iter()
        .rev()
        .find(|(d, _)| *d == Direction::ClientToServer)
        .expect("sent something");
    let cid_record = record::first_cid_record(last_sent, 5).expect("CID record");
    assert_eq!(cid_record.cid, server_cid);
    let (_, last_received) = captured.last().expect("received something");
    assert!(record::records(last_received, 0).all(|r| r.content_type != TLS12_CID));
}

#[test]
fn wrong_psk_fails_the_handshake() {
    let server = server(4);
    let mut config = ClientConfig::new(server.local_addr());
    config.psk = b"not the right key".to_vec();
    config.handshake_timeout = Duration::from_secs(3);
    assert!(DtlsClient::connect(config).is_err());
    let stats = server.wait_for_stats(TIMEOUT, |s| s.failed_handshakes == 1);
    assert_eq!(stats.failed_handshakes, 1);
    assert_eq!(stats.handshakes, 0);
}

#[test]
fn twenty_concurrent_clients_twenty_handshakes() {
    let server = server(4);
    let server_addr = server.local_addr();
    let cids: Vec<Vec<u8>> = thread::scope(|scope| {
        let workers: Vec<_> = (0..20)
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
    assert_eq!(unique.len(), 20, "every session has its own CID");
    assert!(cids.iter().all(|cid| cid[..2] == PREFIX));

    let stats = server.stats();
    assert_eq!(stats.handshakes, 20);
    assert_eq!(stats.active_sessions, 20);
    assert!(stats.echoed >= 100, "{stats:?}");
    assert_eq!(stats.migrations, 0);
    assert_eq!(stats.failed_handshakes, 0);
}

#[test]
fn one_hundred_and_twenty_sessions_at_once() {
    let server = server(4);
    let mut clients: Vec<DtlsClient> = (0..120).map(|_| client(&server)).collect();
    for (n, client) in clients.iter_mut().enumerate() {
        client
            .echo(format!("still here {n}").as_bytes(), TIMEOUT)
            .expect("echo");
    }
    let stats = server.stats();
    assert_eq!(stats.handshakes, 120);
    assert_eq!(stats.active_sessions, 120);
    assert_eq!(stats.echoed, 120);
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

/// The datagram holding the client's last application-data record, and that record's
/// offset within it.
fn last_app_datagram(client: &DtlsClient, cid_len: usize) -> (Vec<u8>, usize) {
    let captured = client.captured();
    let (_, datagram) = captured
        .iter()
        .rev()
        .find(|(d, _)| *d == Direction::ClientToServer)
        .expect("the client sent something");
    let offset = record::first_cid_record(datagram, cid_len)
        .expect("application data travels in a tls12_cid record")
        .offset;
    (datagram.clone(), offset)
}

fn captured_client(server: &DtlsServer) -> DtlsClient {
    let mut config = ClientConfig::new(server.local_addr());
    config.capture = true;
    DtlsClient::connect(config).expect("handshake")
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
    let (datagram, _) = last_app_datagram(&client, 4);

    let attacker = UdpSocket::bind("127.0.0.2:0").expect("attacker socket");
    attacker
        .send_to(&datagram, server.local_addr())
        .expect("send");

    let stats = server.wait_for_stats(TIMEOUT, |s| s.replays >= 1);
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
    let (mut datagram, offset) = last_app_datagram(&client, 4);

    // Same CID, a sequence number far ahead (so not a replay), original ciphertext:
    // the sequence number is authenticated, so the record fails authentication.
    datagram[offset + 9] = datagram[offset + 9].wrapping_add(1);
    let attacker = UdpSocket::bind("127.0.0.1:0").expect("attacker socket");
    attacker
        .send_to(&datagram, server.local_addr())
        .expect("send");

    let stats = server.wait_for_stats(TIMEOUT, |s| s.auth_failures >= 1);
    assert_eq!(stats.auth_failures, 1, "{stats:?}");
    assert_eq!(stats.replays, 0, "{stats:?}");
    assert_peer_stayed(&server, &mut client, stats);
}

#[test]
fn unknown_cid_is_dropped() {
    let server = server(4);
    let mut client = captured_client(&server);
    client.echo(b"genuine", TIMEOUT).expect("echo");
    let (mut datagram, offset) = last_app_datagram(&client, 4);
    // Flip the random part of the CID.
    datagram[offset + record::CID_OFFSET + 3] ^= 0xff;
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
    assert_eq!(stats.closed_sessions, 1);
    assert_eq!(stats.active_sessions, 0);
}

#[test]
fn invalid_server_configs_are_refused() {
    let bind = addr("127.0.0.1:0");
    assert!(DtlsServer::spawn(ServerConfig::new(bind, [1, 2, 3, 4], 4)).is_err());
    assert!(DtlsServer::spawn(ServerConfig::new(bind, [1], 33)).is_err());
    assert!(DtlsServer::spawn(ServerConfig::new(bind, [1], 0)).is_err());
}

#[test]
fn peers_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<DtlsClient>();
    assert_send::<DtlsServer>();
}
