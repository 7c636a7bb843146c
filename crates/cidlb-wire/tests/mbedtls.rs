//! Bytes captured from a real Mbed TLS 3.6.5 DTLS 1.2 handshake with RFC 9146 CIDs
//! (see the header of the vectors file for how and what each datagram holds).

use cidlb_wire::handshake::{self, ext};
use cidlb_wire::{inspect, ContentType, Header, Records};

const CAPTURE: &str = include_str!("vectors/mbedtls-3.6.5-cid-handshake.txt");
const SERVER_CID: [u8; 4] = [0xc1, 0xff, 0x01, 0x26];
const CLIENT_CID: [u8; 4] = [0xa7, 0xfd, 0x3a, 0x84];

fn datagrams() -> Vec<(&'static str, Vec<u8>)> {
    CAPTURE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (dir, hex) = l.split_once(' ').expect("direction and hex");
            (dir, hex::decode(hex.trim()).expect("hex"))
        })
        .collect()
}

#[test]
fn every_datagram_is_well_formed() {
    let d = datagrams();
    assert_eq!(d.len(), 8);
    for (dir, bytes) in &d {
        // Both CIDs are 4 bytes long in this capture.
        let info = inspect(bytes, 4usize).unwrap_or_else(|e| panic!("{dir}: {e}"));
        let want = if *dir == "c2s" {
            SERVER_CID
        } else {
            CLIENT_CID
        };
        if let Some(cid) = info.first_cid {
            assert_eq!(cid, want, "{dir}: client records carry the server's CID");
        }
        assert!(!info.mixed_cids);
    }
}

#[test]
fn client_hellos_announce_the_client_cid() {
    let d = datagrams();
    let first = handshake::find_client_hello(&d[0].1, 4usize)
        .unwrap()
        .unwrap();
    assert!(first.cookie.is_empty());
    let c = first.connection_id.unwrap();
    assert_eq!((c.ext_type, c.cid), (ext::CONNECTION_ID, &CLIENT_CID[..]));
    assert!(inspect(&d[0].1, 4usize).unwrap().client_hello);
    let retry = handshake::find_client_hello(&d[2].1, 4usize)
        .unwrap()
        .unwrap();
    assert_eq!(
        retry.cookie.len(),
        32,
        "cookie echoed from the HelloVerifyRequest"
    );
}

#[test]
fn hello_verify_request_then_server_hello_with_the_server_cid() {
    let d = datagrams();
    let hvr = handshake::scan_server_flight(&d[1].1);
    assert!(hvr.hello_verify_request && hvr.server_hello.is_none());
    // ServerHello + ServerHelloDone in one record... or datagram: either way found.
    let f = handshake::scan_server_flight(&d[3].1);
    let c = f.server_hello.unwrap().connection_id.unwrap();
    assert_eq!((c.ext_type, c.cid), (ext::CONNECTION_ID, &SERVER_CID[..]));
    assert!(!f.fragmented_server_hello && !f.malformed);
    for later in &d[4..] {
        assert!(handshake::scan_server_flight(&later.1)
            .server_hello
            .is_none());
    }
}

#[test]
fn finished_shares_a_datagram_with_cke_and_ccs() {
    let d = datagrams();
    let (dir, flight) = &d[4];
    assert_eq!(*dir, "c2s");
    let recs: Vec<_> = Records::new(flight, 4usize).map(Result::unwrap).collect();
    let types: Vec<_> = recs.iter().map(|r| r.header.content_type()).collect();
    assert_eq!(
        types,
        [
            ContentType::HANDSHAKE,
            ContentType::CHANGE_CIPHER_SPEC,
            ContentType::TLS12_CID
        ]
    );
    assert!(matches!(
        recs[2].header,
        Header::Cid12 {
            epoch: 1,
            sequence: 0,
            ..
        }
    ));
    let info = inspect(flight, 4usize).unwrap();
    assert_eq!(
        (info.first_cid_record, info.first_cid),
        (2, Some(&SERVER_CID[..]))
    );
}
