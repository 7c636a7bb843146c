//! Real wolfSSL DTLS 1.3 clients against real wolfSSL DTLS 1.3 servers, on loopback
//! addresses only: the shared suite of `cidlb_test_peer_harness::suite`, plus what only
//! DTLS 1.3 records show. Every wait is bounded.

use cidlb_test_peer_harness::suite::{self, TIMEOUT};
use cidlb_test_wolfssl::record::{self, Kind};
use cidlb_test_wolfssl::{ClientConfig, Direction, DtlsClient, DtlsServer, ServerConfig, Wolfssl};

#[test]
fn handshake_and_echo() {
    suite::handshake_and_echo::<Wolfssl>("TLS13-AES128-GCM-SHA256", "DTLSv1.3");
}

/// What the handshake and the records look like on the wire, as these tests rely on
/// it (and as a balancer in front of these peers sees it).
#[test]
fn wire_format() {
    let server = suite::server::<Wolfssl>(4);
    let mut client = suite::captured_client(&server);
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
    let last_received = suite::client_without_own_cid_still_uses_the_servers::<Wolfssl>();
    // The server's records carry no CID (unified header without the C bit).
    assert!(record::is_unified(last_received[0]));
    assert!(!record::has_cid_bit(last_received[0]));
}

#[test]
fn wrong_psk_fails_the_handshake() {
    suite::wrong_psk_fails_the_handshake::<Wolfssl>();
}

#[test]
fn ten_concurrent_clients_ten_handshakes() {
    suite::concurrent_clients::<Wolfssl>(10);
}

#[test]
fn rebinding_to_a_new_port_and_a_new_address_keeps_the_session() {
    suite::rebinding_to_a_new_port_and_a_new_address_keeps_the_session::<Wolfssl>();
}

#[test]
fn replayed_cid_record_from_another_address_does_not_move_the_peer() {
    suite::replayed_cid_record_from_another_address_does_not_move_the_peer::<Wolfssl>();
}

#[test]
fn forged_cid_record_from_another_address_does_not_move_the_peer() {
    // Same CID, a flipped ciphertext byte: the record fails authentication.
    suite::forged_cid_record_from_another_address_does_not_move_the_peer::<Wolfssl>(
        |datagram, _| {
            let last = datagram.len() - 1;
            datagram[last] ^= 0x01;
        },
    );
}

#[test]
fn unknown_cid_is_dropped() {
    suite::unknown_cid_is_dropped::<Wolfssl>();
}

#[test]
fn closing_ends_the_session() {
    suite::closing_ends_the_session::<Wolfssl>();
}

#[test]
fn invalid_configs_are_refused() {
    suite::invalid_configs_are_refused::<Wolfssl>();
    let bind = suite::addr("127.0.0.1:0");
    let mut config = ServerConfig::new(bind, [1], 4);
    config.psk_identity = b"nul\0inside".to_vec();
    assert!(DtlsServer::spawn(config).is_err());
    let mut client = ClientConfig::new(bind);
    client.psk = vec![0; 65];
    assert!(DtlsClient::connect(client).is_err());
}

#[test]
fn peers_can_move_between_threads() {
    suite::peers_can_move_between_threads::<Wolfssl>();
}
