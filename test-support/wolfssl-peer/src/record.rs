//! Minimal DTLS 1.3 record parsing: enough for a server to demultiplex datagrams by
//! connection ID, and for tests to describe and check what went over the wire.
//!
//! Two record formats share a datagram's first byte (RFC 9147 §4.1):
//!
//! * `DTLSPlaintext` (first byte 20–26): type(1) version(2) epoch(2) sequence(6)
//!   length(2), then the fragment. DTLS 1.3 sends ClientHello, ServerHello (and
//!   HelloRetryRequest) and alerts before keys exist this way, never with a CID.
//! * the unified header of `DTLSCiphertext` (first byte `001CSLEE`, 32–63): C = CID
//!   present right after the first byte (its length is not on the wire: the receiver
//!   knows it, having issued it), S = 16-bit sequence number (else 8-bit), L = 2-byte
//!   length present (else the record runs to the end of the datagram), EE = low bits of
//!   the epoch (RFC 9147 §4).

/// Content type `change_cipher_spec` (sent by DTLS 1.3 only in middlebox mode).
pub const CHANGE_CIPHER_SPEC: u8 = 20;
/// Content type `alert`.
pub const ALERT: u8 = 21;
/// Content type `handshake`.
pub const HANDSHAKE: u8 = 22;
/// Content type `application_data`.
pub const APPLICATION_DATA: u8 = 23;
/// Content type `ack` (RFC 9147 §7).
pub const ACK: u8 = 26;

/// Handshake type `client_hello`.
pub const CLIENT_HELLO: u8 = 1;
/// Handshake type `server_hello` (also used for HelloRetryRequest).
pub const SERVER_HELLO: u8 = 2;

/// Extension type `connection_id` (RFC 9146 §3; also DTLS 1.3, RFC 9147 §9).
pub const CONNECTION_ID_EXTENSION: u16 = 54;

/// Length of a `DTLSPlaintext` record header.
pub const PLAINTEXT_HEADER_LEN: usize = 13;
/// Length of a DTLS handshake message header: type(1) length(3) message_seq(2)
/// fragment_offset(3) fragment_length(3).
pub const HANDSHAKE_HEADER_LEN: usize = 12;

/// The `random` of a ServerHello that is a HelloRetryRequest (RFC 8446 §4.1.3):
/// SHA-256 of "HelloRetryRequest".
pub const HELLO_RETRY_REQUEST_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// Whether a unified header's first byte has the C (CID present) bit.
pub fn has_cid_bit(first: u8) -> bool {
    is_unified(first) && first & 0x10 != 0
}

/// Whether `first` starts an RFC 9147 unified header (`001xxxxx`).
pub fn is_unified(first: u8) -> bool {
    first & 0xe0 == 0x20
}

/// What kind of record a [`Record`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind<'a> {
    /// A `DTLSPlaintext` record.
    Plaintext {
        /// Its content type.
        content_type: u8,
        /// Its epoch.
        epoch: u16,
        /// Its 48-bit sequence number.
        sequence: u64,
        /// Its fragment.
        fragment: &'a [u8],
    },
    /// A `DTLSCiphertext` record with a unified header.
    Ciphertext {
        /// The header's first byte (`001CSLEE`).
        first: u8,
        /// The CID, when the C bit is set.
        cid: Option<&'a [u8]>,
        /// The encrypted record: sequence number (encrypted too), then the
        /// ciphertext.
        encrypted: &'a [u8],
    },
}

/// One record of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Offset of the record within its datagram.
    pub offset: usize,
    /// The whole record, header included.
    pub bytes: &'a [u8],
    /// Its parsed header.
    pub kind: Kind<'a>,
}

/// The records of `datagram`, in order, stopping at the first that does not parse.
/// `cid_len` is the length of the CIDs in unified headers (the receiver's own).
pub fn records(datagram: &[u8], cid_len: usize) -> impl Iterator<Item = Record<'_>> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        let record = parse(&datagram[offset..], offset, cid_len)?;
        offset += record.bytes.len();
        Some(record)
    })
}

fn parse(rest: &[u8], offset: usize, cid_len: usize) -> Option<Record<'_>> {
    let first = *rest.first()?;
    if (20..=26).contains(&first) {
        let header = rest.get(..PLAINTEXT_HEADER_LEN)?;
        let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
        let bytes = rest.get(..PLAINTEXT_HEADER_LEN + len)?;
        let sequence = header[5..11]
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        return Some(Record {
            offset,
            bytes,
            kind: Kind::Plaintext {
                content_type: first,
                epoch: u16::from_be_bytes([header[3], header[4]]),
                sequence,
                fragment: &bytes[PLAINTEXT_HEADER_LEN..],
            },
        });
    }
    if !is_unified(first) {
        return None;
    }
    let mut pos = 1;
    let cid = if first & 0x10 != 0 {
        let cid = rest.get(pos..pos + cid_len)?;
        pos += cid_len;
        Some(cid)
    } else {
        None
    };
    let seq_len = if first & 0x08 != 0 { 2 } else { 1 };
    let end = if first & 0x04 != 0 {
        let len = rest.get(pos + seq_len..pos + seq_len + 2)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        pos + seq_len + 2 + len
    } else {
        rest.len()
    };
    let bytes = rest.get(..end)?;
    let encrypted = bytes.get(pos..)?;
    Some(Record {
        offset,
        bytes,
        kind: Kind::Ciphertext {
            first,
            cid,
            encrypted,
        },
    })
}

/// The CID of the first record of `datagram` that carries one (a unified header with
/// the C bit), given the length of the CIDs the receiver issued.
pub fn first_cid(datagram: &[u8], cid_len: usize) -> Option<&[u8]> {
    records(datagram, cid_len).find_map(|r| match r.kind {
        Kind::Ciphertext { cid, .. } => cid,
        Kind::Plaintext { .. } => None,
    })
}

/// Whether `datagram` begins with a plaintext handshake record holding (the start of) a
/// ClientHello: what may start a new session on a server.
pub fn starts_with_client_hello(datagram: &[u8]) -> bool {
    matches!(
        records(datagram, 0).next(),
        Some(Record {
            kind: Kind::Plaintext {
                content_type: HANDSHAKE,
                epoch: 0,
                fragment,
                ..
            },
            ..
        }) if fragment.first() == Some(&CLIENT_HELLO)
    )
}

/// A ClientHello, ServerHello or HelloRetryRequest seen in a plaintext record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// [`CLIENT_HELLO`] or [`SERVER_HELLO`].
    pub msg_type: u8,
    /// Whether this ServerHello is a HelloRetryRequest.
    pub retry_request: bool,
    /// Its extensions: type and body, in order.
    pub extensions: Vec<(u16, Vec<u8>)>,
}

impl Hello {
    /// The CID announced in the `connection_id` extension (54), if present: the CID
    /// that the sender of this message wants to receive in its peer's records.
    pub fn connection_id(&self) -> Option<Vec<u8>> {
        let (_, body) = self
            .extensions
            .iter()
            .find(|(t, _)| *t == CONNECTION_ID_EXTENSION)?;
        let len = usize::from(*body.first()?);
        body.get(1..1 + len).map(<[u8]>::to_vec)
    }

    /// Whether the `connection_id` extension (54) is present.
    pub fn has_connection_id_extension(&self) -> bool {
        self.extensions
            .iter()
            .any(|(t, _)| *t == CONNECTION_ID_EXTENSION)
    }
}

/// The hellos in the plaintext handshake records of `datagram` (unfragmented ones only).
pub fn hellos(datagram: &[u8]) -> Vec<Hello> {
    records(datagram, 0)
        .filter_map(|r| match r.kind {
            Kind::Plaintext {
                content_type: HANDSHAKE,
                fragment,
                ..
            } => parse_hello(fragment),
            _ => None,
        })
        .collect()
}

fn parse_hello(message: &[u8]) -> Option<Hello> {
    let header = message.get(..HANDSHAKE_HEADER_LEN)?;
    let msg_type = header[0];
    let length = u24(&header[1..4]);
    let fragment_offset = u24(&header[6..9]);
    let fragment_length = u24(&header[9..12]);
    if fragment_offset != 0 || fragment_length != length {
        return None;
    }
    let body = message.get(HANDSHAKE_HEADER_LEN..HANDSHAKE_HEADER_LEN + length)?;
    let mut r = Reader(body);
    r.take(2)?; // legacy_version
    let random = r.take(32)?;
    let retry_request = msg_type == SERVER_HELLO && random == HELLO_RETRY_REQUEST_RANDOM;
    let session_id_len = usize::from(r.take(1)?[0]);
    r.take(session_id_len)?;
    match msg_type {
        CLIENT_HELLO => {
            let cookie_len = usize::from(r.take(1)?[0]); // DTLS legacy_cookie
            r.take(cookie_len)?;
            let suites_len = usize::from(r.u16()?);
            r.take(suites_len)?;
            let compression_len = usize::from(r.take(1)?[0]);
            r.take(compression_len)?;
        }
        SERVER_HELLO => {
            r.take(2)?; // cipher_suite
            r.take(1)?; // legacy_compression_method
        }
        _ => return None,
    }
    let mut extensions = Vec::new();
    if !r.0.is_empty() {
        let ext_len = usize::from(r.u16()?);
        let mut e = Reader(r.take(ext_len)?);
        while !e.0.is_empty() {
            let ext_type = e.u16()?;
            let len = usize::from(e.u16()?);
            extensions.push((ext_type, e.take(len)?.to_vec()));
        }
    }
    Some(Hello {
        msg_type,
        retry_request,
        extensions,
    })
}

fn u24(b: &[u8]) -> usize {
    (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2])
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

/// A one-line description of each record of `datagram`, for logs and test vectors,
/// e.g. `plaintext handshake(22) epoch 0 seq 0 len 120 [client_hello]` or
/// `ciphertext 0x3e cid 0a1b2c3d len 38`.
pub fn describe(datagram: &[u8], cid_len: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut parsed = 0;
    for r in records(datagram, cid_len) {
        parsed = r.offset + r.bytes.len();
        out.push(match r.kind {
            Kind::Plaintext {
                content_type,
                epoch,
                sequence,
                fragment,
            } => {
                let name = match content_type {
                    CHANGE_CIPHER_SPEC => "change_cipher_spec",
                    ALERT => "alert",
                    HANDSHAKE => "handshake",
                    APPLICATION_DATA => "application_data",
                    ACK => "ack",
                    _ => "other",
                };
                let mut line = format!(
                    "plaintext {name}({content_type}) epoch {epoch} seq {sequence} len {}",
                    fragment.len()
                );
                if content_type == HANDSHAKE {
                    if let Some(h) = parse_hello(fragment) {
                        let what = match (h.msg_type, h.retry_request) {
                            (CLIENT_HELLO, _) => "client_hello",
                            (_, true) => "hello_retry_request",
                            _ => "server_hello",
                        };
                        let cid = match h.connection_id() {
                            Some(cid) => format!(" connection_id={}", hex(&cid)),
                            None if h.has_connection_id_extension() => {
                                " connection_id=(empty)".to_string()
                            }
                            None => String::new(),
                        };
                        let types: Vec<String> =
                            h.extensions.iter().map(|(t, _)| t.to_string()).collect();
                        line += &format!(" [{what} ext {}{cid}]", types.join(","));
                    }
                }
                line
            }
            Kind::Ciphertext {
                first,
                cid,
                encrypted,
            } => {
                let cid = cid.map_or_else(|| "none".to_string(), hex);
                format!("ciphertext {first:#04x} cid {cid} len {}", encrypted.len())
            }
        });
    }
    if parsed < datagram.len() {
        out.push(format!("unparsed {} bytes", datagram.len() - parsed));
    }
    out
}

/// Lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_header_with_cid_and_length() {
        // 001 C=1 S=1 L=1 EE=10, CID 4 bytes, seq 2, length 3.
        let d = [0x3e, 1, 2, 3, 4, 0xaa, 0xbb, 0, 3, 9, 9, 9];
        assert_eq!(first_cid(&d, 4), Some(&[1, 2, 3, 4][..]));
        let r: Vec<_> = records(&d, 4).collect();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].bytes.len(), d.len());
    }

    #[test]
    fn unified_header_without_cid() {
        let d = [0x2f, 0xaa, 0xbb, 0, 1, 9];
        assert_eq!(first_cid(&d, 4), None);
        assert!(!has_cid_bit(d[0]));
    }

    #[test]
    fn plaintext_then_ciphertext() {
        let mut d = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, CLIENT_HELLO];
        d.extend([0x3c, 7, 7, 7, 7, 0x01, 0x00, 0x00, 0x02, 5, 5]);
        assert!(starts_with_client_hello(&d));
        assert_eq!(first_cid(&d, 4), Some(&[7, 7, 7, 7][..]));
    }

    #[test]
    fn truncated_input_is_not_a_record() {
        assert_eq!(records(&[0x3e, 1, 2], 4).count(), 0);
        assert_eq!(records(&[22, 0xfe], 4).count(), 0);
        assert!(!starts_with_client_hello(&[]));
    }
}
