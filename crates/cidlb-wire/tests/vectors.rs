//! Hex vectors, spaces at field boundaries. Built by hand from the RFC layouts; the
//! bytes captured from a real Mbed TLS handshake are in `mbedtls.rs`.

use cidlb_wire::handshake::{self, ext, HandshakeFragments, HandshakeType};
use cidlb_wire::{inspect, ContentType, Header, Records, WireError};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.split_whitespace().collect::<String>()).expect("valid hex in test vector")
}

const RANDOM: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

fn server_hello_54() -> Vec<u8> {
    h(&format!(
        "16 fefd 0000 000000000001 003d  02 000031 0001 000000 000031  fefd {RANDOM} 00 c0a8 00 \
         0009 0036 0005 04 c1d00007"
    ))
}

#[test]
fn plaintext_header_fields() {
    let d = h("17 fefd 0001 000000000007 0003  aabbcc");
    let recs: Vec<_> = Records::new(&d, 4usize).collect();
    assert_eq!(recs.len(), 1);
    let r = recs[0].unwrap();
    assert_eq!(
        r.header,
        Header::Plaintext {
            content_type: ContentType::APPLICATION_DATA,
            version: 0xfefd,
            epoch: 1,
            sequence: 7
        }
    );
    assert_eq!(r.cid, None);
    assert_eq!(r.payload, &[0xaa, 0xbb, 0xcc]);
}

#[test]
fn tls12_cid_record_cid_at_offset_11() {
    let d = h("19 fefd 0001 000000000002 c1d00007 0004  01020304");
    let r = Records::new(&d, 4usize).next().unwrap().unwrap();
    assert_eq!(
        r.header,
        Header::Cid12 {
            version: 0xfefd,
            epoch: 1,
            sequence: 2
        }
    );
    assert_eq!(r.cid, Some(&h("c1d00007")[..]));
    assert_eq!(r.payload, &h("01020304")[..]);
    // The same bytes read with another CID length are another record (or none): the
    // length comes from configuration, not from the wire.
    assert_eq!(
        Records::new(&d, 6usize).next().unwrap(),
        Err(WireError::LengthOverrun)
    );
}

#[test]
fn unified_header_with_cid_long_seq_and_length() {
    // 0x3e = 001 C=1 S=1 L=1 EE=10
    let d = h("3e c1d00007 1234 0002 abcd   3e c1d00007 1235 0001 ef");
    let recs: Vec<_> = Records::new(&d, 4usize).map(Result::unwrap).collect();
    assert_eq!(recs.len(), 2);
    assert_eq!(
        recs[0].header,
        Header::Unified {
            flags: 0x3e,
            encrypted_sequence: 0x1234,
            has_length: true
        }
    );
    assert_eq!(recs[0].header.epoch(), 2);
    assert_eq!(recs[0].cid, Some(&h("c1d00007")[..]));
    assert_eq!(recs[1].offset, 11);
    assert_eq!(recs[1].payload, &[0xef]);
}

#[test]
fn unified_header_without_length_runs_to_end() {
    // 0x21 = 001 C=0 S=0 L=0 EE=01: 8-bit sequence, no length.
    let d = h("21 07  aabbccddeeff");
    let r = Records::new(&d, 4usize).next().unwrap().unwrap();
    assert_eq!(r.cid, None);
    assert_eq!(r.payload.len(), 6);
    assert_eq!(r.end(), d.len());
    // With C set and no length.
    let d = h("30 c1d00007 07  aabb");
    let info = inspect(&d, 4usize).unwrap();
    assert_eq!(info.first_cid, Some(&h("c1d00007")[..]));
    assert_eq!(info.records, 1);
}

#[test]
fn first_cid_need_not_be_in_first_record() {
    // ClientKeyExchange (22) + ChangeCipherSpec (20) + Finished in a tls12_cid record,
    // the shape of a real DTLS 1.2 client's second flight.
    let d = h("16 fefd 0000 000000000002 0005  1000000100 \
               14 fefd 0000 000000000003 0001  01 \
               19 fefd 0001 000000000000 c1d00007 0003  aabbcc");
    let info = inspect(&d, 4usize).unwrap();
    assert_eq!(info.records, 3);
    assert_eq!(info.first_cid_record, 2);
    assert_eq!(info.first_cid, Some(&h("c1d00007")[..]));
    assert!(!info.mixed_cids);
    assert!(!info.client_hello);
}

#[test]
fn mixed_cids_reported() {
    let d = h("19 fefd 0001 000000000001 c1d00007 0001  aa \
               19 fefd 0001 000000000002 c1d00007 0001  bb \
               19 fefd 0001 000000000001 c2000009 0001  cc");
    let info = inspect(&d, 4usize).unwrap();
    assert_eq!(info.first_cid, Some(&h("c1d00007")[..]));
    assert!(info.mixed_cids);
}

#[test]
fn malformed_datagrams_are_rejected_with_a_reason() {
    let cases: &[(&str, WireError)] = &[
        ("", WireError::Empty),
        ("47 4554 20", WireError::NotDtls { first_byte: 0x47 }),
        ("40 00", WireError::NotDtls { first_byte: 0x40 }),
        ("13 fefd", WireError::NotDtls { first_byte: 0x13 }),
        (
            "16 0303 0000 000000000000 0000",
            WireError::BadVersion { version: 0x0303 },
        ),
        ("16 fefd 0000 0000", WireError::TruncatedHeader),
        (
            "16 fefd 0000 000000000000 0005  0102",
            WireError::LengthOverrun,
        ),
        ("19 fefd 0001 000000000000 c1d0", WireError::TruncatedHeader),
        ("3e c1d0", WireError::TruncatedHeader),
        ("3c 12 00", WireError::TruncatedHeader),
        // A valid record followed by trailing garbage: the whole datagram is rejected.
        (
            "17 fefd 0001 000000000001 0001  aa  ff",
            WireError::NotDtls { first_byte: 0xff },
        ),
    ];
    for (hex, want) in cases {
        assert_eq!(inspect(&h(hex), 4usize), Err(*want), "vector {hex:?}");
    }
    assert_eq!(
        inspect(&h("19 fefd 0001 000000000000 c1d00007 0000"), 40usize),
        Err(WireError::CidTooLong)
    );
}

#[test]
fn unknown_cid_length_from_a_format() {
    /// A self-describing format: low 5 bits of the first CID octet + 1 (QUIC-LB style),
    /// refusing the 0b111 config-rotation codepoint.
    struct SelfDescribing;
    impl cidlb_wire::CidLength for SelfDescribing {
        fn cid_len(&self, at: &[u8]) -> Option<usize> {
            let first = *at.first()?;
            (first >> 5 != 0b111).then_some(usize::from(first & 0x1f) + 1)
        }
    }
    let d = h("19 fefd 0001 000000000000 03aabbcc 0001  00");
    assert_eq!(
        inspect(&d, SelfDescribing).unwrap().first_cid,
        Some(&h("03aabbcc")[..])
    );
    let d = h("19 fefd 0001 000000000000 e3aabbcc 0001  00");
    assert_eq!(
        inspect(&d, SelfDescribing),
        Err(WireError::UnknownCidLength)
    );
}

#[test]
fn server_hello_cid_extension_54() {
    let d = server_hello_54();
    let f = handshake::scan_server_flight(&d);
    let sh = f.server_hello.expect("complete ServerHello");
    assert_eq!(sh.version, 0xfefd);
    let c = sh.connection_id.unwrap();
    assert_eq!(c.ext_type, ext::CONNECTION_ID);
    assert_eq!(c.cid, &h("c1d00007")[..]);
    assert!(!f.fragmented_server_hello && !f.malformed);
}

#[test]
fn legacy_codepoints_and_preference_for_54() {
    let d = h(&format!(
        "16 fefd 0000 000000000001 003d  02 000031 0001 000000 000031  fefd {RANDOM} 00 c0a8 00 \
         0009 00fe 0005 04 c1d00007"
    ));
    let c = handshake::scan_server_flight(&d)
        .server_hello
        .unwrap()
        .connection_id
        .unwrap();
    assert_eq!((c.ext_type, c.cid), (254, &h("c1d00007")[..]));

    let d = h(&format!(
        "16 fefd 0000 000000000001 0044  02 000038 0001 000000 000038  fefd {RANDOM} 00 c0a8 00 \
         0010 00fe 0003 02 aaaa 0036 0005 04 c1d00007"
    ));
    let c = handshake::scan_server_flight(&d)
        .server_hello
        .unwrap()
        .connection_id
        .unwrap();
    assert_eq!((c.ext_type, c.cid), (54, &h("c1d00007")[..]));
}

#[test]
fn server_hello_without_extensions() {
    let d = h(&format!(
        "16 fefd 0000 000000000001 0032  02 000026 0001 000000 000026  fefd {RANDOM} 00 c0a8 00"
    ));
    let sh = handshake::scan_server_flight(&d).server_hello.unwrap();
    assert_eq!(sh.connection_id, None);
}

#[test]
fn several_messages_in_one_record() {
    // ServerHello + ServerHelloDone in one record.
    let d = h(&format!(
        "16 fefd 0000 000000000001 0049  02 000031 0001 000000 000031  fefd {RANDOM} 00 c0a8 00 \
         0009 0036 0005 04 c1d00007  0e 000000 0002 000000 000000"
    ));
    let rec = Records::new(&d, 0usize).next().unwrap().unwrap();
    let types: Vec<_> = HandshakeFragments::new(rec.payload)
        .map(|f| f.unwrap().msg_type)
        .collect();
    assert_eq!(types, [HandshakeType::SERVER_HELLO, HandshakeType(14)]);
    let c = handshake::scan_server_flight(&d).server_hello.unwrap();
    assert_eq!(c.connection_id.unwrap().cid, &h("c1d00007")[..]);
}

#[test]
fn fragmented_server_hello_is_not_read() {
    // The first 20 bytes of a 49-byte ServerHello: fragment_offset 0, fragment_length 20.
    let d = h(&format!(
        "16 fefd 0000 000000000001 0020  02 000031 0001 000000 000014  fefd {}",
        &RANDOM[..36]
    ));
    let f = handshake::scan_server_flight(&d);
    assert_eq!(f.server_hello, None);
    assert!(f.fragmented_server_hello);
    // The tail, whose bytes look like an extension block, must not be read either.
    let d = h(
        "16 fefd 0000 000000000002 001b  02 000031 0001 000014 00000f  \
               00 c0a8 00 0009 0036 0005 04 c1d00007 00",
    );
    let f = handshake::scan_server_flight(&d);
    assert_eq!(f.server_hello, None);
    assert!(f.fragmented_server_hello);
}

#[test]
fn bad_fragment_bounds() {
    let d = h("16 fefd 0000 000000000001 000e  02 000001 0001 000001 000001  00 00");
    let rec = Records::new(&d, 0usize).next().unwrap().unwrap();
    let first = HandshakeFragments::new(rec.payload).next().unwrap();
    assert_eq!(first, Err(handshake::HandshakeError::BadFragment));
    assert!(handshake::scan_server_flight(&d).malformed);
}

#[test]
fn server_hello_followed_by_unified_records() {
    // DTLS 1.3: the ServerHello is plaintext, then encrypted records carrying the
    // client's CID, whose length the balancer does not know. The scan stops there.
    let mut d = server_hello_54();
    d.extend(h("3e 0a0b 0001 0002 aabb"));
    let f = handshake::scan_server_flight(&d);
    assert_eq!(
        f.server_hello.unwrap().connection_id.unwrap().cid,
        &h("c1d00007")[..]
    );
}

#[test]
fn client_hello_and_hello_verify_request() {
    let d = h(&format!(
        "16 fefd 0000 000000000000 0043  01 000037 0000 000000 000037  fefd {RANDOM} 00 \
         04 01020304 0002 c0a8 01 00 0007 0036 0003 02 aabb"
    ));
    let info = inspect(&d, 4usize).unwrap();
    assert!(info.client_hello);
    assert_eq!(info.first_cid, None);
    let ch = handshake::find_client_hello(&d, 4usize).unwrap().unwrap();
    assert_eq!(ch.cookie, &h("01020304")[..]);
    assert_eq!(ch.connection_id.unwrap().cid, &h("aabb")[..]);

    let d = h("16 fefd 0000 000000000000 0013  03 000007 0000 000000 000007  fefd 04 01020304");
    let f = handshake::scan_server_flight(&d);
    assert!(f.hello_verify_request);
    assert_eq!(f.server_hello, None);
}

#[test]
fn builders_agree_with_the_parser() {
    use cidlb_wire::build;
    let d = build::server_hello_datagram([7; 32], Some(&[1, 2, 3]));
    let sh = handshake::scan_server_flight(&d).server_hello.unwrap();
    assert_eq!(sh.connection_id.unwrap().cid, &[1, 2, 3]);
    let d = build::client_hello_datagram([7; 32], &[9, 9], Some(&[4]));
    let ch = handshake::find_client_hello(&d, 3usize).unwrap().unwrap();
    assert_eq!(
        (ch.cookie, ch.connection_id.unwrap().cid),
        (&[9u8, 9][..], &[4u8][..])
    );
    assert!(
        handshake::scan_server_flight(&build::hello_verify_request_datagram(&[1]))
            .hello_verify_request
    );
    let mut d = Vec::new();
    build::unified(Some(&[5, 6, 7]), 3, 9, true, b"xy", &mut d);
    build::cid12(1, 2, &[5, 6, 8], b"z", &mut d);
    build::unified(None, 3, 9, false, b"tail", &mut d);
    let info = inspect(&d, 3usize).unwrap();
    assert_eq!(
        (info.records, info.first_cid, info.mixed_cids),
        (3, Some(&[5u8, 6, 7][..]), true)
    );
}
