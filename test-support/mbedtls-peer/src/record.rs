//! Just enough DTLS 1.2 record-layer parsing to route datagrams and describe captures.
//!
//! A DTLS 1.2 record header is `type(1) version(2) epoch(2) sequence_number(6)
//! length(2)`, 13 bytes. An RFC 9146 record (content type 25, `tls12_cid`) carries the
//! connection ID between the sequence number and the length:
//! `type(1) version(2) epoch(2) sequence_number(6) cid(n) length(2)`. The CID length `n`
//! is not on the wire; the receiver knows it because it chose the CID.

/// Content type `change_cipher_spec`.
pub const CHANGE_CIPHER_SPEC: u8 = 20;
/// Content type `alert`.
pub const ALERT: u8 = 21;
/// Content type `handshake`.
pub const HANDSHAKE: u8 = 22;
/// Content type `application_data`.
pub const APPLICATION_DATA: u8 = 23;
/// Content type `tls12_cid` (RFC 9146): an encrypted record carrying a connection ID.
pub const TLS12_CID: u8 = 25;

/// Handshake message type `client_hello`.
pub const CLIENT_HELLO: u8 = 1;

/// Offset of the CID in a `tls12_cid` record (after type, version, epoch, sequence).
pub const CID_OFFSET: usize = 11;
/// Length of a record header without CID.
pub const HEADER_LEN: usize = 13;

/// One record of a datagram, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Offset of the record's first byte in the datagram.
    pub offset: usize,
    /// Content type (outer type for `tls12_cid` records).
    pub content_type: u8,
    /// Epoch.
    pub epoch: u16,
    /// 48-bit sequence number.
    pub sequence: u64,
    /// Connection ID (empty unless `content_type` is [`TLS12_CID`]).
    pub cid: &'a [u8],
    /// The record payload (ciphertext once the epoch is non-zero).
    pub fragment: &'a [u8],
    /// The whole record, header included.
    pub bytes: &'a [u8],
}

impl Record<'_> {
    /// For a plaintext handshake record (epoch 0), the handshake message type.
    pub fn handshake_type(&self) -> Option<u8> {
        (self.content_type == HANDSHAKE && self.epoch == 0)
            .then(|| self.fragment.first().copied())
            .flatten()
    }
}

/// Iterates over the records of `datagram`, reading `cid_len`-byte CIDs in
/// `tls12_cid` records. Stops at the first truncated record.
pub fn records(datagram: &[u8], cid_len: usize) -> Records<'_> {
    Records {
        datagram,
        offset: 0,
        cid_len,
    }
}

/// Iterator returned by [`records`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    datagram: &'a [u8],
    offset: usize,
    cid_len: usize,
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        let rest = self.datagram.get(self.offset..)?;
        let content_type = *rest.first()?;
        let cid_len = if content_type == TLS12_CID {
            self.cid_len
        } else {
            0
        };
        let header_len = HEADER_LEN + cid_len;
        let header = rest.get(..header_len)?;
        let length = usize::from(u16::from_be_bytes([
            header[header_len - 2],
            header[header_len - 1],
        ]));
        let bytes = rest.get(..header_len + length)?;
        let record = Record {
            offset: self.offset,
            content_type,
            epoch: u16::from_be_bytes([header[3], header[4]]),
            sequence: header[5..CID_OFFSET]
                .iter()
                .fold(0, |acc, &b| (acc << 8) | u64::from(b)),
            cid: &header[CID_OFFSET..CID_OFFSET + cid_len],
            fragment: &bytes[header_len..],
            bytes,
        };
        self.offset += bytes.len();
        Some(record)
    }
}

/// The first `tls12_cid` record of `datagram`, whose CID says which session it is for.
pub fn first_cid_record(datagram: &[u8], cid_len: usize) -> Option<Record<'_>> {
    records(datagram, cid_len).find(|r| r.content_type == TLS12_CID)
}

/// Whether `datagram` starts with a plaintext ClientHello, the only thing that may
/// open a new session.
pub fn starts_with_client_hello(datagram: &[u8]) -> bool {
    records(datagram, 0)
        .next()
        .is_some_and(|r| r.handshake_type() == Some(CLIENT_HELLO))
}

/// Name of a content type, as in the RFCs.
pub fn content_type_name(content_type: u8) -> &'static str {
    match content_type {
        CHANGE_CIPHER_SPEC => "change_cipher_spec",
        ALERT => "alert",
        HANDSHAKE => "handshake",
        APPLICATION_DATA => "application_data",
        TLS12_CID => "tls12_cid",
        _ => "unknown",
    }
}

/// Name of a handshake message type, as in the RFCs.
pub fn handshake_type_name(handshake_type: u8) -> &'static str {
    match handshake_type {
        0 => "hello_request",
        CLIENT_HELLO => "client_hello",
        2 => "server_hello",
        3 => "hello_verify_request",
        4 => "new_session_ticket",
        11 => "certificate",
        12 => "server_key_exchange",
        13 => "certificate_request",
        14 => "server_hello_done",
        15 => "certificate_verify",
        16 => "client_key_exchange",
        20 => "finished",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(content_type: u8, epoch: u16, seq: u8, cid: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut r = vec![content_type, 0xfe, 0xfd];
        r.extend_from_slice(&epoch.to_be_bytes());
        r.extend_from_slice(&[0, 0, 0, 0, 0, seq]);
        r.extend_from_slice(cid);
        r.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
        r.extend_from_slice(payload);
        r
    }

    #[test]
    fn finds_the_cid_after_plaintext_records() {
        let mut datagram = record(HANDSHAKE, 0, 3, &[], &[16, 0, 0, 1, 9]);
        datagram.extend(record(CHANGE_CIPHER_SPEC, 0, 4, &[], &[1]));
        datagram.extend(record(TLS12_CID, 1, 0, &[0xc1, 2, 3, 4], &[0xaa; 40]));
        let all: Vec<_> = records(&datagram, 4).collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].handshake_type(), Some(16));
        let cid = first_cid_record(&datagram, 4).unwrap();
        assert_eq!(cid.cid, [0xc1, 2, 3, 4]);
        assert_eq!(cid.epoch, 1);
        assert_eq!(cid.offset, all[2].offset);
        assert_eq!(cid.bytes.len(), 13 + 4 + 40);
        assert_eq!(&datagram[cid.offset..], cid.bytes);
    }

    #[test]
    fn stops_at_truncation() {
        let mut datagram = record(HANDSHAKE, 0, 0, &[], &[CLIENT_HELLO, 0, 0]);
        assert!(starts_with_client_hello(&datagram));
        datagram.extend(record(TLS12_CID, 1, 0, &[9; 4], &[0; 8]));
        datagram.truncate(datagram.len() - 1);
        assert_eq!(records(&datagram, 4).count(), 1);
        assert!(first_cid_record(&datagram, 4).is_none());
        assert!(!starts_with_client_hello(&[]));
    }
}
