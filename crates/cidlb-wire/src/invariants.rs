//! Invariants of the record walker, shared by the property tests and the fuzz target
//! (one property body, several drivers, as in s2n-quic).

use crate::{handshake, inspect, CidLength, Records};

/// Walks `datagram` and panics if any invariant of the walker is broken:
///
/// - records start at 0 and tile the datagram: each starts where the previous ended,
///   none is empty, none reaches past the end;
/// - every slice (`bytes`, `cid`, `payload`) lies inside its record, in order;
/// - the walk either ends exactly at the end of the datagram or with exactly one error
///   (every byte is accounted for, or the datagram is rejected);
/// - [`inspect`] agrees with the walk (record count, first CID, mixed CIDs, error);
/// - the return-path scan and ClientHello search terminate without panicking.
pub fn check_walk<L: CidLength + Copy>(datagram: &[u8], cid_len: L) {
    let base = datagram.as_ptr() as usize;
    let mut expected_offset = 0usize;
    let mut count = 0usize;
    let mut first_cid: Option<&[u8]> = None;
    let mut mixed = false;
    let mut error = None;
    for item in Records::new(datagram, cid_len) {
        assert!(error.is_none(), "walker yielded after an error");
        match item {
            Ok(rec) => {
                assert_eq!(rec.offset, expected_offset, "gap or overlap");
                assert!(!rec.bytes.is_empty(), "empty record");
                let start = rec.bytes.as_ptr() as usize - base;
                assert_eq!(start, rec.offset);
                assert!(rec.end() <= datagram.len(), "record past the end");
                let rec_start = rec.bytes.as_ptr() as usize;
                let rec_end = rec_start + rec.bytes.len();
                let p = rec.payload.as_ptr() as usize;
                assert!(p >= rec_start && p + rec.payload.len() == rec_end);
                if let Some(cid) = rec.cid {
                    let c = cid.as_ptr() as usize;
                    assert!(c > rec_start && c + cid.len() <= p, "CID outside header");
                    match first_cid {
                        None => first_cid = Some(cid),
                        Some(f) if f != cid => mixed = true,
                        _ => {}
                    }
                }
                expected_offset = rec.end();
                count += 1;
            }
            Err(e) => error = Some(e),
        }
    }
    match inspect(datagram, cid_len) {
        Ok(info) => {
            assert!(error.is_none());
            assert_eq!(expected_offset, datagram.len(), "trailing bytes accepted");
            assert_eq!(info.records, count);
            assert!(count > 0);
            assert_eq!(info.first_cid, first_cid);
            assert_eq!(info.mixed_cids, mixed);
        }
        Err(e) => assert_eq!(Some(e), error, "inspect and walk disagree"),
    }
    let flight = handshake::scan_server_flight(datagram);
    if let Some(h) = flight.server_hello {
        if let Some(c) = h.connection_id {
            let c0 = c.cid.as_ptr() as usize;
            assert!(c0 >= base && c0 + c.cid.len() <= base + datagram.len());
        }
    }
    let _ = handshake::find_client_hello(datagram, cid_len);
}
