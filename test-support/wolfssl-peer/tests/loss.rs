//! Handshakes survive the loss of any flight: both sides' retransmission timers work
//! (`wolfSSL_dtls_got_timeout`, driven by the peers' own timers).

use std::time::Duration;

use cidlb_test_peer_harness::relay::{any, DropOnce};
use cidlb_test_peer_harness::suite::{self, LossExpectations};
use cidlb_test_wolfssl::record;
use cidlb_test_wolfssl::Wolfssl;

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
    suite::every_lost_flight_is_retransmitted::<Wolfssl>(
        vec![
            // The first ClientHello: the client's timer resends it.
            DropOnce::client_to_server(any),
            // The ServerHello: the server's timer resends its whole flight.
            DropOnce::server_to_client(server_hello),
            // The first encrypted record of the server (EncryptedExtensions), from the
            // retransmitted flight: the server resends again.
            DropOnce::server_to_client(carries_cid),
            // The client's Finished, its first record with the server's CID: the server
            // resends its flight, and the client, which has not had an ACK, resends
            // its Finished.
            DropOnce::client_to_server(carries_cid),
        ],
        LossExpectations {
            // The losses can only be repaired by retransmission timers (1 s at first).
            min_handshake: Duration::from_millis(900),
            echo_timeout: Duration::from_secs(6),
            exactly_one_echo: false,
        },
    );
}
