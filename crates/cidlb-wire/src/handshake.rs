//! Just enough of the DTLS handshake to learn Connection IDs from hellos.
//!
//! The `connection_id` extension travels in ClientHello and ServerHello, which are
//! plaintext in both DTLS 1.2 and 1.3. Each side announces the CID it wants to
//! *receive*, so the CID a client writes into its records is the one in the
//! **ServerHello**: that is what a balancer learns on the backend-to-client path.
//!
//! Only complete handshake messages are parsed: a fragment (`fragment_offset != 0` or
//! `fragment_length != length`) is reported but never read as a hello, so a message cut
//! across records or datagrams cannot be misread.

use crate::cid::CidLength;
use crate::reader::Reader;
use crate::record::{ContentType, Header, Records};

/// A handshake message type (open: any `u8` is representable).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HandshakeType(pub u8);

impl HandshakeType {
    /// `client_hello(1)`.
    pub const CLIENT_HELLO: Self = Self(1);
    /// `server_hello(2)`.
    pub const SERVER_HELLO: Self = Self(2);
    /// `hello_verify_request(3)` (DTLS 1.0/1.2 cookie exchange, RFC 6347 §4.2.1).
    pub const HELLO_VERIFY_REQUEST: Self = Self(3);
}

/// The `connection_id` extension codepoints seen in the field.
pub mod ext {
    /// RFC 9146 `connection_id`.
    pub const CONNECTION_ID: u16 = 54;
    /// The early IANA allocation used by draft-ietf-tls-dtls-connection-id before -08.
    pub const CONNECTION_ID_DRAFT: u16 = 53;
    /// Mbed TLS's legacy (pre-RFC) codepoint.
    pub const CONNECTION_ID_MBEDTLS_LEGACY: u16 = 254;
}

/// Why a handshake message could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HandshakeError {
    /// The 12-byte DTLS handshake header or its fragment runs past the record.
    Truncated,
    /// `fragment_offset + fragment_length` exceeds the message `length`.
    BadFragment,
    /// A hello body is malformed (a vector runs past its container, trailing bytes).
    BadHello,
}

/// One handshake message fragment inside a plaintext handshake record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeFragment<'a> {
    /// Message type.
    pub msg_type: HandshakeType,
    /// Length of the whole message.
    pub length: u32,
    /// `message_seq`.
    pub message_seq: u16,
    /// Where this fragment starts in the message.
    pub fragment_offset: u32,
    /// The fragment's bytes.
    pub fragment: &'a [u8],
}

impl HandshakeFragment<'_> {
    /// Whether this fragment is the whole message.
    pub fn is_complete(&self) -> bool {
        self.fragment_offset == 0 && self.fragment.len() as u64 == u64::from(self.length)
    }
}

/// Walks the handshake fragments in one record's payload.
#[derive(Clone, Debug)]
pub struct HandshakeFragments<'a> {
    r: Reader<'a>,
    done: bool,
}

impl<'a> HandshakeFragments<'a> {
    /// Walks `payload`, the fragment of a plaintext `handshake(22)` record.
    pub fn new(payload: &'a [u8]) -> Self {
        HandshakeFragments {
            r: Reader::new(payload),
            done: false,
        }
    }

    fn parse_one(&mut self) -> Result<HandshakeFragment<'a>, HandshakeError> {
        //= https://www.rfc-editor.org/rfc/rfc6347#section-4.2.2
        //# struct {
        //#   HandshakeType msg_type;
        //#   uint24 length;
        //#   uint16 message_seq;                               // New field
        //#   uint24 fragment_offset;                           // New field
        //#   uint24 fragment_length;                           // New field
        let t = HandshakeError::Truncated;
        let msg_type = HandshakeType(self.r.u8().ok_or(t)?);
        let length = self.r.u24().ok_or(t)?;
        let message_seq = self.r.u16().ok_or(t)?;
        let fragment_offset = self.r.u24().ok_or(t)?;
        let fragment_length = self.r.u24().ok_or(t)?;
        if u64::from(fragment_offset) + u64::from(fragment_length) > u64::from(length) {
            return Err(HandshakeError::BadFragment);
        }
        let fragment = self.r.take(fragment_length as usize).ok_or(t)?;
        Ok(HandshakeFragment {
            msg_type,
            length,
            message_seq,
            fragment_offset,
            fragment,
        })
    }
}

impl<'a> Iterator for HandshakeFragments<'a> {
    type Item = Result<HandshakeFragment<'a>, HandshakeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.r.is_empty() {
            return None;
        }
        let out = self.parse_one();
        self.done = out.is_err();
        Some(out)
    }
}

/// A `connection_id` extension value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionIdExt<'a> {
    /// Which codepoint carried it (54, 53 or 254).
    pub ext_type: u16,
    /// The CID the sender of the hello wants to receive (may be empty).
    pub cid: &'a [u8],
}

/// The parts of a ClientHello or ServerHello that routing needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello<'a> {
    /// `client_version` / `server_version` (legacy version in DTLS 1.3).
    pub version: u16,
    /// The ClientHello cookie (empty in a first ClientHello and in ServerHellos).
    pub cookie: &'a [u8],
    /// The `connection_id` extension, if present (54 preferred over 53 and 254).
    pub connection_id: Option<ConnectionIdExt<'a>>,
}

/// Parses a complete ClientHello body (RFC 6347 §4.2.1; RFC 9147 §5.3).
pub fn parse_client_hello(body: &[u8]) -> Result<Hello<'_>, HandshakeError> {
    let e = HandshakeError::BadHello;
    let mut r = Reader::new(body);
    let version = r.u16().ok_or(e)?;
    r.take(32).ok_or(e)?; // random
    let session_id = r.vec8().ok_or(e)?;
    if session_id.len() > 32 {
        return Err(e);
    }
    let cookie = r.vec8().ok_or(e)?;
    r.vec16().ok_or(e)?; // cipher_suites
    r.vec8().ok_or(e)?; // compression_methods
    let connection_id = parse_extensions(&mut r)?;
    Ok(Hello {
        version,
        cookie,
        connection_id,
    })
}

/// Parses a complete ServerHello body (RFC 5246 §7.4.1.3; RFC 9147 §5.4 keeps the
/// legacy layout).
pub fn parse_server_hello(body: &[u8]) -> Result<Hello<'_>, HandshakeError> {
    let e = HandshakeError::BadHello;
    let mut r = Reader::new(body);
    let version = r.u16().ok_or(e)?;
    r.take(32).ok_or(e)?; // random
    let session_id = r.vec8().ok_or(e)?;
    if session_id.len() > 32 {
        return Err(e);
    }
    r.u16().ok_or(e)?; // cipher_suite
    r.u8().ok_or(e)?; // compression_method
    let connection_id = parse_extensions(&mut r)?;
    Ok(Hello {
        version,
        cookie: &[],
        connection_id,
    })
}

/// Reads the optional extensions block that ends a hello; the body must end with it.
fn parse_extensions<'a>(r: &mut Reader<'a>) -> Result<Option<ConnectionIdExt<'a>>, HandshakeError> {
    let e = HandshakeError::BadHello;
    //= https://www.rfc-editor.org/rfc/rfc5246#section-7.4.1.2
    //# The presence of extensions can be detected by determining whether
    //# there are bytes following the compression_methods at the end of the
    //# ClientHello.
    //
    // The same holds for the ServerHello: no bytes left, no extensions.
    if r.is_empty() {
        return Ok(None);
    }
    let exts = r.vec16().ok_or(e)?;
    if !r.is_empty() {
        return Err(e);
    }
    let mut er = Reader::new(exts);
    let mut found: Option<ConnectionIdExt<'a>> = None;
    while !er.is_empty() {
        let ext_type = er.u16().ok_or(e)?;
        let data = er.vec16().ok_or(e)?;
        if matches!(
            ext_type,
            ext::CONNECTION_ID | ext::CONNECTION_ID_DRAFT | ext::CONNECTION_ID_MBEDTLS_LEGACY
        ) {
            //= https://www.rfc-editor.org/rfc/rfc9146#section-3
            //# struct {
            //#     opaque cid<0..2^8-1>;
            //# } ConnectionId;
            let mut dr = Reader::new(data);
            let cid = dr.vec8().ok_or(e)?;
            if !dr.is_empty() {
                return Err(e);
            }
            let better = match found {
                None => true,
                Some(f) => f.ext_type != ext::CONNECTION_ID && ext_type == ext::CONNECTION_ID,
            };
            if better {
                found = Some(ConnectionIdExt { ext_type, cid });
            }
        }
    }
    Ok(found)
}

/// What a backend's datagram says about the handshake, for learning CIDs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerFlight<'a> {
    /// The first complete ServerHello, parsed.
    pub server_hello: Option<Hello<'a>>,
    /// A HelloVerifyRequest (cookie exchange) was seen.
    pub hello_verify_request: bool,
    /// A ServerHello was seen only as a fragment: nothing can be learned from it.
    pub fragmented_server_hello: bool,
    /// A plaintext handshake record or hello was malformed.
    pub malformed: bool,
}

/// The CID length of records on the backend-to-client path is the *client's* CID length,
/// which the balancer does not know; such records end the scan (the hellos come first).
struct ReturnPathCidLength;

impl CidLength for ReturnPathCidLength {
    fn cid_len(&self, _at: &[u8]) -> Option<usize> {
        None
    }
}

/// Scans a backend-to-client datagram for the plaintext server hellos.
///
/// Records are walked until the first one whose CID length is unknown (the client's
/// CID) or the first malformed one; what came before is still reported. This never
/// affects forwarding: the datagram is forwarded whatever the scan finds.
pub fn scan_server_flight(datagram: &[u8]) -> ServerFlight<'_> {
    let mut out = ServerFlight::default();
    for rec in Records::new(datagram, ReturnPathCidLength) {
        let Ok(rec) = rec else { break };
        let Header::Plaintext {
            content_type: ContentType::HANDSHAKE,
            epoch: 0,
            ..
        } = rec.header
        else {
            continue;
        };
        for frag in HandshakeFragments::new(rec.payload) {
            let Ok(frag) = frag else {
                out.malformed = true;
                break;
            };
            match frag.msg_type {
                HandshakeType::HELLO_VERIFY_REQUEST => out.hello_verify_request = true,
                HandshakeType::SERVER_HELLO if out.server_hello.is_none() => {
                    if !frag.is_complete() {
                        out.fragmented_server_hello = true;
                    } else {
                        match parse_server_hello(frag.fragment) {
                            Ok(h) => out.server_hello = Some(h),
                            Err(_) => out.malformed = true,
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Finds the first complete ClientHello in a client datagram and parses it.
pub fn find_client_hello<L: CidLength>(
    datagram: &[u8],
    cid_len: L,
) -> Option<Result<Hello<'_>, HandshakeError>> {
    for rec in Records::new(datagram, cid_len) {
        let Ok(rec) = rec else { return None };
        if let Header::Plaintext {
            content_type: ContentType::HANDSHAKE,
            epoch: 0,
            ..
        } = rec.header
        {
            for frag in HandshakeFragments::new(rec.payload) {
                match frag {
                    Ok(f) if f.msg_type == HandshakeType::CLIENT_HELLO && f.is_complete() => {
                        return Some(parse_client_hello(f.fragment));
                    }
                    Ok(_) => {}
                    Err(e) => return Some(Err(e)),
                }
            }
        }
    }
    None
}
