//! DTLS record headers and a walker over the records of one datagram.
//!
//! Three header shapes exist on the wire, told apart by the first byte
//! (RFC 9147 §4.1):
//!
//! ```text
//! DTLS 1.0/1.2 plaintext, 13 bytes (RFC 6347 §4.1):
//!   type(1) version(2) epoch(2) sequence_number(6) length(2) | fragment
//! RFC 9146 tls12_cid (type 25):
//!   25(1) version(2) epoch(2) sequence_number(6) cid(n) length(2) | enc_content
//! RFC 9147 unified header, first byte 001CSLEE:
//!   first(1) [cid(n) if C] seq(1 or 2 if S) [length(2) if L] | enc_record
//! ```

use crate::cid::{CidLength, MAX_CID_LEN};
use crate::reader::Reader;

/// A TLS `ContentType` byte. Kept open (any `u8` is representable) so that unknown
/// values can be reported; the parser decides which ones it accepts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentType(pub u8);

impl ContentType {
    /// `change_cipher_spec(20)`.
    pub const CHANGE_CIPHER_SPEC: Self = Self(20);
    /// `alert(21)`.
    pub const ALERT: Self = Self(21);
    /// `handshake(22)`.
    pub const HANDSHAKE: Self = Self(22);
    /// `application_data(23)`.
    pub const APPLICATION_DATA: Self = Self(23);
    /// `heartbeat(24)` (RFC 6520).
    pub const HEARTBEAT: Self = Self(24);
    /// `tls12_cid(25)` (RFC 9146 §4): the outer type of a record that carries a CID.
    pub const TLS12_CID: Self = Self(25);
    /// `ack(26)` (RFC 9147 §7).
    pub const ACK: Self = Self(26);
    /// `return_routability_check(27)` (RFC 9853).
    pub const RETURN_ROUTABILITY_CHECK: Self = Self(27);

    /// The registered name, if any.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            20 => "change_cipher_spec",
            21 => "alert",
            22 => "handshake",
            23 => "application_data",
            24 => "heartbeat",
            25 => "tls12_cid",
            26 => "ack",
            27 => "return_routability_check",
            _ => return None,
        })
    }
}

impl core::fmt::Debug for ContentType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "ContentType({:#04x})", self.0),
        }
    }
}

/// Why a datagram is not a sequence of well-formed DTLS records.
///
/// Small and `Copy`: the routing core turns each into a counted drop reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WireError {
    /// The datagram has no bytes.
    Empty,
    /// The first byte of a record is neither a DTLS plaintext content type (20–27)
    /// nor a DTLS 1.3 unified header (`001xxxxx`, 32–63).
    NotDtls {
        /// The offending byte.
        first_byte: u8,
    },
    /// A plaintext or `tls12_cid` header whose version's major byte is not 0xfe
    /// (DTLS versions are 0xfeff, 0xfefd, 0xfefc): most likely TLS or garbage.
    BadVersion {
        /// The two version bytes.
        version: u16,
    },
    /// The datagram ends inside a record header (including its CID).
    TruncatedHeader,
    /// A record's length field runs past the end of the datagram.
    LengthOverrun,
    /// The listener could not tell how long the CID at this position is.
    UnknownCidLength,
    /// The CID is longer than [`MAX_CID_LEN`].
    CidTooLong,
}

impl WireError {
    /// A stable snake_case name, usable as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            WireError::Empty => "empty",
            WireError::NotDtls { .. } => "not_dtls",
            WireError::BadVersion { .. } => "bad_version",
            WireError::TruncatedHeader => "truncated_header",
            WireError::LengthOverrun => "length_overrun",
            WireError::UnknownCidLength => "unknown_cid_length",
            WireError::CidTooLong => "cid_too_long",
        }
    }
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WireError::Empty => write!(f, "empty datagram"),
            WireError::NotDtls { first_byte } => {
                write!(f, "not DTLS: record starts with {first_byte:#04x}")
            }
            WireError::BadVersion { version } => {
                write!(f, "not DTLS: record version {version:#06x}")
            }
            WireError::TruncatedHeader => write!(f, "datagram ends inside a record header"),
            WireError::LengthOverrun => {
                write!(f, "record length runs past the end of the datagram")
            }
            WireError::UnknownCidLength => write!(f, "CID length cannot be determined"),
            WireError::CidTooLong => write!(f, "CID longer than {MAX_CID_LEN} bytes"),
        }
    }
}

impl std::error::Error for WireError {}

/// The header of one record, by shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// A DTLS 1.0/1.2 (or DTLS 1.3 epoch-0) plaintext-format header, 13 bytes.
    Plaintext {
        /// Content type.
        content_type: ContentType,
        /// Record version, e.g. 0xfefd.
        version: u16,
        /// Epoch.
        epoch: u16,
        /// 48-bit sequence number.
        sequence: u64,
    },
    /// An RFC 9146 `tls12_cid` record header (outer type 25).
    Cid12 {
        /// Record version.
        version: u16,
        /// Epoch.
        epoch: u16,
        /// 48-bit sequence number.
        sequence: u64,
    },
    /// An RFC 9147 §4 unified header (DTLS 1.3 ciphertext).
    Unified {
        /// The first byte, `001CSLEE`.
        flags: u8,
        /// The sequence number field as sent (encrypted on the wire; 8 or 16 bits).
        encrypted_sequence: u16,
        /// Whether the header had a length field (L bit); without one the record ran
        /// to the end of the datagram.
        has_length: bool,
    },
}

impl Header {
    /// The epoch (for unified headers, the low two bits the header carries).
    pub fn epoch(&self) -> u16 {
        match *self {
            Header::Plaintext { epoch, .. } | Header::Cid12 { epoch, .. } => epoch,
            Header::Unified { flags, .. } => u16::from(flags & 0x03),
        }
    }

    /// The outer content type: the plaintext type, 25 for `tls12_cid`, and
    /// `application_data` for unified headers (whose real type is encrypted).
    pub fn content_type(&self) -> ContentType {
        match *self {
            Header::Plaintext { content_type, .. } => content_type,
            Header::Cid12 { .. } => ContentType::TLS12_CID,
            Header::Unified { .. } => ContentType::APPLICATION_DATA,
        }
    }
}

/// One record inside a datagram: a checked view, every slice lies inside the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Offset of the record's first byte in the datagram.
    pub offset: usize,
    /// The whole record, header included.
    pub bytes: &'a [u8],
    /// The parsed header.
    pub header: Header,
    /// The Connection ID, for `tls12_cid` records and unified headers with the C bit.
    pub cid: Option<&'a [u8]>,
    /// What follows the header: a plaintext fragment or encrypted content.
    pub payload: &'a [u8],
}

impl Record<'_> {
    /// Offset one past the record's last byte in the datagram.
    pub fn end(&self) -> usize {
        self.offset + self.bytes.len()
    }
}

/// Plaintext header length (RFC 6347 §4.1).
pub const PLAINTEXT_HEADER_LEN: usize = 13;

/// Walks the records of one datagram in order.
///
/// Yields `Ok(record)` for each well-formed record; on the first malformed one it yields
/// one `Err` and then stops. A datagram is well formed when the walk ends without an
/// error: the records then tile it exactly, with no gap, no overlap and no trailing byte.
#[derive(Clone, Debug)]
pub struct Records<'a, L> {
    datagram: &'a [u8],
    pos: usize,
    cid_len: L,
    done: bool,
}

impl<'a, L: CidLength> Records<'a, L> {
    /// Starts a walk over `datagram`; `cid_len` says how long CIDs are.
    pub fn new(datagram: &'a [u8], cid_len: L) -> Self {
        Records {
            datagram,
            pos: 0,
            cid_len,
            done: false,
        }
    }

    fn parse_one(&self, at: usize) -> Result<Record<'a>, WireError> {
        let rest = self.datagram.get(at..).unwrap_or_default();
        let first = *rest.first().ok_or(WireError::TruncatedHeader)?;
        //= https://www.rfc-editor.org/rfc/rfc9147#section-4.1
        //# If the first byte is alert(21), handshake(22), or ack(proposed, 26), the
        //# record MUST be interpreted as a DTLSPlaintext record.
        //
        //# If the first byte is any other value, then receivers MUST check to see if the
        //# leading bits of the first byte are 001.  If so, the implementation MUST
        //# process the record as DTLSCiphertext; the true content type will be inside
        //# the protected portion.
        //
        //# Otherwise, the record MUST be rejected as if it had failed deprotection
        //
        // DTLS 1.2 peers also send change_cipher_spec(20), application_data(23),
        // heartbeat(24) and tls12_cid(25) in the 13-byte form, and RFC 9853 adds
        // return_routability_check(27); all of 20..=27 are plaintext-format headers.
        let (header, cid, payload_start, payload_len) = match first {
            20..=27 => {
                let mut r = Reader::new(rest);
                let ct = ContentType(r.u8().ok_or(WireError::TruncatedHeader)?);
                let version = r.u16().ok_or(WireError::TruncatedHeader)?;
                let epoch = r.u16().ok_or(WireError::TruncatedHeader)?;
                let sequence = r.u48().ok_or(WireError::TruncatedHeader)?;
                if version >> 8 != 0xfe {
                    return Err(WireError::BadVersion { version });
                }
                let cid = if ct == ContentType::TLS12_CID {
                    //= https://www.rfc-editor.org/rfc/rfc9146#section-4
                    //# opaque cid[cid_length];               // New field
                    //
                    // The CID sits between the sequence number and the length, and
                    // its length is known only to the receiver.
                    Some(self.read_cid(&mut r)?)
                } else {
                    None
                };
                let len = r.u16().ok_or(WireError::TruncatedHeader)?;
                let header = if ct == ContentType::TLS12_CID {
                    Header::Cid12 {
                        version,
                        epoch,
                        sequence,
                    }
                } else {
                    Header::Plaintext {
                        content_type: ct,
                        version,
                        epoch,
                        sequence,
                    }
                };
                (header, cid, rest.len() - r.rest().len(), usize::from(len))
            }
            32..=63 => {
                //= https://www.rfc-editor.org/rfc/rfc9147#section-4
                //# 0 1 2 3 4 5 6 7
                //# +-+-+-+-+-+-+-+-+
                //# |0|0|1|C|S|L|E E|
                //# +-+-+-+-+-+-+-+-+
                //# | Connection ID |   Legend:
                //# | (if any,      |
                //# /  length as    /   C   - Connection ID (CID) present
                //# |  negotiated)  |   S   - Sequence number length
                //# +-+-+-+-+-+-+-+-+   L   - Length present
                //# |  8 or 16 bit  |   E   - Epoch
                //# |Sequence Number|
                //# +-+-+-+-+-+-+-+-+
                //# | 16 bit Length |
                //# | (if present)  |
                //# +-+-+-+-+-+-+-+-+
                let mut r = Reader::new(rest);
                let flags = r.u8().ok_or(WireError::TruncatedHeader)?;
                let cid = if flags & 0x10 != 0 {
                    Some(self.read_cid(&mut r)?)
                } else {
                    None
                };
                let encrypted_sequence = if flags & 0x08 != 0 {
                    r.u16().ok_or(WireError::TruncatedHeader)?
                } else {
                    u16::from(r.u8().ok_or(WireError::TruncatedHeader)?)
                };
                let has_length = flags & 0x04 != 0;
                let header_len = rest.len() - r.rest().len();
                let len = if has_length {
                    usize::from(r.u16().ok_or(WireError::TruncatedHeader)?)
                } else {
                    //= https://www.rfc-editor.org/rfc/rfc9147#section-4
                    //# The length field MAY be omitted by clearing the L bit, which
                    //# means that the record consumes the entire rest of the datagram
                    //# in the lower level transport.
                    rest.len() - header_len
                };
                let header = Header::Unified {
                    flags,
                    encrypted_sequence,
                    has_length,
                };
                (header, cid, rest.len() - r.rest().len(), len)
            }
            other => return Err(WireError::NotDtls { first_byte: other }),
        };
        let end = payload_start
            .checked_add(payload_len)
            .ok_or(WireError::LengthOverrun)?;
        //= https://www.rfc-editor.org/rfc/rfc9147#section-4.3
        //# Records MUST NOT span datagrams.
        let bytes = rest.get(..end).ok_or(WireError::LengthOverrun)?;
        Ok(Record {
            offset: at,
            bytes,
            header,
            cid,
            payload: &bytes[payload_start..],
        })
    }

    fn read_cid(&self, r: &mut Reader<'a>) -> Result<&'a [u8], WireError> {
        let n = self
            .cid_len
            .cid_len(r.rest())
            .ok_or(WireError::UnknownCidLength)?;
        if n > MAX_CID_LEN {
            return Err(WireError::CidTooLong);
        }
        r.take(n).ok_or(WireError::TruncatedHeader)
    }
}

impl<'a, L: CidLength> Iterator for Records<'a, L> {
    type Item = Result<Record<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.pos >= self.datagram.len() {
            self.done = true;
            return if self.datagram.is_empty() {
                Some(Err(WireError::Empty))
            } else {
                None
            };
        }
        match self.parse_one(self.pos) {
            Ok(rec) => {
                self.pos = rec.end();
                Some(Ok(rec))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
