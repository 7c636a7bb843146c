//! What the router needs to know about one client datagram, in one pass.

use crate::cid::CidLength;
use crate::handshake::HandshakeType;
use crate::record::{ContentType, Header, Records};

/// The routing-relevant facts of a well-formed datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatagramInfo<'a> {
    /// Number of records (at least one).
    pub records: usize,
    /// The CID of the first record that carries one. In a real DTLS 1.2 handshake the
    /// client's first CID record (Finished) follows ClientKeyExchange and
    /// ChangeCipherSpec in the same datagram, so this is not always the first record.
    pub first_cid: Option<&'a [u8]>,
    /// Index of the record that carried `first_cid`.
    pub first_cid_record: usize,
    /// Whether a later record carries a CID different from `first_cid`.
    pub mixed_cids: bool,
    /// Whether the datagram holds a plaintext epoch-0 handshake record whose first
    /// message is a ClientHello: a handshake starting (or a cookie retry).
    pub client_hello: bool,
}

/// Walks every record of `datagram` and summarises it for routing.
///
/// The whole datagram is rejected on the first malformed record: either every byte
/// belongs to a well-formed record, or the result is an error.
pub fn inspect<L: CidLength>(
    datagram: &[u8],
    cid_len: L,
) -> Result<DatagramInfo<'_>, crate::WireError> {
    let mut info = DatagramInfo {
        records: 0,
        first_cid: None,
        first_cid_record: 0,
        mixed_cids: false,
        client_hello: false,
    };
    for rec in Records::new(datagram, cid_len) {
        let rec = rec?;
        if let Some(cid) = rec.cid {
            match info.first_cid {
                None => {
                    info.first_cid = Some(cid);
                    info.first_cid_record = info.records;
                }
                Some(first) if first != cid => info.mixed_cids = true,
                Some(_) => {}
            }
        }
        if let Header::Plaintext {
            content_type: ContentType::HANDSHAKE,
            epoch: 0,
            ..
        } = rec.header
        {
            if rec.payload.first() == Some(&HandshakeType::CLIENT_HELLO.0) {
                info.client_hello = true;
            }
        }
        info.records += 1;
    }
    Ok(info)
}
