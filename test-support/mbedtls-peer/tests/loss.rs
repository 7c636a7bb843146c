//! Handshakes survive the loss of any flight: both sides' retransmission timers work.

use std::time::Duration;

use cidlb_test_mbedtls::record::{self, TLS12_CID};
use cidlb_test_mbedtls::Mbedtls;
use cidlb_test_peer_harness::relay::{any, DropOnce};
use cidlb_test_peer_harness::suite::{self, LossExpectations};

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
    suite::every_lost_flight_is_retransmitted::<Mbedtls>(
        vec![
            // The first ClientHello: the client's timer resends it.
            DropOnce::client_to_server(any),
            // ServerHello + ServerHelloDone: the client resends its ClientHello and the
            // server answers the duplicate by resending its flight.
            DropOnce::server_to_client(server_hello),
            // ClientKeyExchange + ChangeCipherSpec + Finished: timers on both sides.
            DropOnce::client_to_server(carries_cid),
            // The server's ChangeCipherSpec + Finished, sent when its handshake is
            // already over: the client resends its last flight and the server, which
            // kept its own, resends it.
            DropOnce::server_to_client(carries_cid),
        ],
        LossExpectations {
            // Three of the losses can only be repaired by a 200 ms retransmission timer
            // (the third is also repaired when the server's timer resends its previous
            // flight).
            min_handshake: Duration::from_millis(600),
            echo_timeout: Duration::from_secs(5),
            exactly_one_echo: true,
        },
    );
}
