//! Real Mbed TLS clients against real Mbed TLS servers, on loopback addresses only: the
//! shared suite of `cidlb_test_peer_harness::suite`, plus what only DTLS 1.2 records
//! show. Every wait is bounded.

use cidlb_test_mbedtls::record::{self, TLS12_CID};
use cidlb_test_mbedtls::Mbedtls;
use cidlb_test_peer_harness::suite;

#[test]
fn handshake_and_echo() {
    suite::handshake_and_echo::<Mbedtls>("TLS-PSK-WITH-AES-128-CCM-8", "DTLSv1.2");
}

#[test]
fn client_without_own_cid_still_uses_the_servers() {
    let last_received = suite::client_without_own_cid_still_uses_the_servers::<Mbedtls>();
    assert!(record::records(&last_received, 0).all(|r| r.content_type != TLS12_CID));
}

#[test]
fn wrong_psk_fails_the_handshake() {
    suite::wrong_psk_fails_the_handshake::<Mbedtls>();
}

#[test]
fn twenty_concurrent_clients_twenty_handshakes() {
    suite::concurrent_clients::<Mbedtls>(20);
}

#[test]
fn one_hundred_and_twenty_sessions_at_once() {
    suite::many_sessions_at_once::<Mbedtls>(120);
}

#[test]
fn rebinding_to_a_new_port_and_a_new_address_keeps_the_session() {
    suite::rebinding_to_a_new_port_and_a_new_address_keeps_the_session::<Mbedtls>();
}

#[test]
fn replayed_cid_record_from_another_address_does_not_move_the_peer() {
    suite::replayed_cid_record_from_another_address_does_not_move_the_peer::<Mbedtls>();
}

#[test]
fn forged_cid_record_from_another_address_does_not_move_the_peer() {
    // Same CID, a sequence number far ahead (so not a replay), original ciphertext: the
    // sequence number is authenticated, so the record fails authentication.
    suite::forged_cid_record_from_another_address_does_not_move_the_peer::<Mbedtls>(
        |datagram, offset| datagram[offset + 9] = datagram[offset + 9].wrapping_add(1),
    );
}

#[test]
fn unknown_cid_is_dropped() {
    suite::unknown_cid_is_dropped::<Mbedtls>();
}

#[test]
fn closing_ends_the_session() {
    suite::closing_ends_the_session::<Mbedtls>();
}

#[test]
fn invalid_server_configs_are_refused() {
    suite::invalid_configs_are_refused::<Mbedtls>();
}

#[test]
fn peers_can_move_between_threads() {
    suite::peers_can_move_between_threads::<Mbedtls>();
}

#[test]
fn paused_server_answers_nothing_until_resumed() {
    suite::paused_server_answers_nothing_until_resumed::<Mbedtls>();
}
