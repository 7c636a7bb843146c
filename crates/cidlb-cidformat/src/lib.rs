//! Routable DTLS Connection IDs: CIDs that carry the ID of the server that issued them,
//! so that any balancer instance, restarted or not, routes them without shared state.
//!
//! Two formats:
//!
//! * **QUIC-LB**, pinned to `draft-ietf-quic-load-balancers-21` ([`quic_lb`]): a first
//!   octet with three config rotation bits (0b111 = unroutable) and five bits of optional
//!   length self-description, then a server ID and a nonce, in plaintext, encrypted in a
//!   single AES-128-ECB pass (server ID + nonce = 16 octets) or by a four-pass Feistel
//!   network (other lengths). The draft's appendix test vectors pass verbatim
//!   (`tests/vectors.rs`), except one that the draft itself gets wrong.
//! * **Prefix** ([`prefix`]): the server ID in the first octets of the CID, the rest
//!   random, as Eclipse Californium's `MultiNodeConnectionIdGenerator` does with a node
//!   ID in byte 0.
//!
//! A [`FormatSet`] is what a balancer listener holds: either one prefix format, or up to
//! seven QUIC-LB configurations at once, selected by each CID's rotation bits, so that
//! keys and server-ID allocations can be rotated while sessions holding old CIDs go on.
//! It implements [`cidlb_core::CidFormat`], the router's hook for "encoded" routing.
//!
//! A [`CidGenerator`] is what a backend holds: it issues CIDs for its server ID, and
//! under a key its nonces never repeat (a counter; running out is an error, never a
//! wrap-around). The DTLS server hands each CID to its stack (`mbedtls_ssl_set_cid`,
//! `wolfSSL_dtls_cid_set`); C servers use it through the `cidlb-cidgen-ffi` crate.
//!
//! ```
//! use cidlb_cidformat::{CidGenerator, FormatSet, QuicLbConfig, QuicLbParams};
//!
//! // Rotation 0: 2-octet server IDs, 6-octet nonces, encrypted (four passes: 2 + 6 ≠ 16).
//! let config = QuicLbConfig::new(QuicLbParams {
//!     rotation: 0,
//!     server_id_len: 2,
//!     nonce_len: 6,
//!     key: Some([0x8f; 16]),
//!     self_describing_length: false,
//! })?;
//! // The backend with server ID 0a01 issues CIDs...
//! let mut generator = CidGenerator::quic_lb(config.clone(), &[0x0a, 0x01])?;
//! let cid = generator.next_cid()?;
//! assert_eq!(cid.len(), 9);
//! // ...that every balancer with the same configuration decodes, with no state.
//! let formats = FormatSet::quic_lb(vec![config])?;
//! let decoded = formats.decode(&cid).unwrap();
//! assert_eq!(decoded.rotation, Some(0));
//! assert_eq!(decoded.server_id.as_bytes(), &[0x0a, 0x01]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

use std::fmt;

mod feistel;
mod generator;
pub mod prefix;
pub mod quic_lb;
mod set;

pub use cidlb_core::ServerId;
pub use generator::{CidGenerator, GeneratorError};
pub use prefix::PrefixFormat;
pub use quic_lb::{QuicLbConfig, QuicLbParams, DRAFT, UNROUTABLE_ROTATION};
pub use set::{Decoded, FormatSet, Undecodable};

/// Longest CID handled here: what the balancer's wire parser accepts (the one
/// definition is `cidlb_wire::MAX_CID_LEN`). QUIC-LB CIDs are at most 20 octets.
pub use cidlb_core::MAX_CID_LEN;

/// A Connection ID, stored inline (no allocation).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cid {
    len: u8,
    bytes: [u8; MAX_CID_LEN],
}

impl Cid {
    /// A CID from its octets; `None` when longer than [`MAX_CID_LEN`].
    pub fn new(octets: &[u8]) -> Option<Cid> {
        if octets.len() > MAX_CID_LEN {
            return None;
        }
        let mut bytes = [0; MAX_CID_LEN];
        bytes[..octets.len()].copy_from_slice(octets);
        Some(Cid {
            len: octets.len() as u8,
            bytes,
        })
    }

    /// The octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The octets as lowercase hex, without separators.
    pub fn to_hex(&self) -> String {
        hex_string(self.as_bytes())
    }
}

impl std::ops::Deref for Cid {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for Cid {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({})", self.to_hex())
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Lowercase hex of `bytes`, without separators.
pub fn hex_string(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses hex (upper or lower case; spaces, `:` and `-` between octets are ignored, as
/// is a leading `0x`). `None` on any other character or an odd number of digits.
pub fn parse_hex(text: &str) -> Option<Vec<u8>> {
    let t = text.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let digits: Vec<u8> = t
        .bytes()
        .filter(|b| !matches!(b, b' ' | b':' | b'-' | b'_'))
        .collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    digits
        .chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// Parses a CID that a person wrote: hex as [`parse_hex`] reads it (either case; `:`,
/// `-`, `_` or spaces between octets; a leading `0x`), 1 to [`MAX_CID_LEN`] octets.
/// Every CID given to cidlb by hand (the admin API's `/lookup/cid/`, `cidlb cid
/// decode`) goes through here, so they accept the same strings. The error says what
/// is wrong, for a person.
pub fn parse_cid(text: &str) -> Result<Cid, String> {
    let bytes = parse_hex(text).ok_or_else(|| {
        format!("{text:?} is not a CID in hex (e.g. a0b1c2d3, a0:b1:c2:d3 or 0xa0b1c2d3)")
    })?;
    if bytes.is_empty() {
        return Err(format!(
            "the CID is empty: a CID has 1 to {MAX_CID_LEN} octets"
        ));
    }
    Cid::new(&bytes).ok_or_else(|| {
        format!(
            "the CID has {} octets: a CID has 1 to {MAX_CID_LEN}",
            bytes.len()
        )
    })
}

/// Why a format or configuration was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FormatError {
    /// The config rotation codepoint is not in `0..=6` (0b111 means "unroutable").
    Rotation(u8),
    /// The server ID length is not in `1..=15`.
    ServerIdLength(usize),
    /// The nonce length is not in `4..=18`.
    NonceLength(usize),
    /// Server ID and nonce together are longer than 19 octets.
    TooLong(usize),
    /// Two configurations of one set use the same rotation codepoint.
    DuplicateRotation(u8),
    /// A set needs at least one configuration.
    Empty,
    /// The CID length (prefix format) cannot hold the server ID and at least one more
    /// octet, or is longer than [`MAX_CID_LEN`].
    CidLength(usize),
    /// A server ID map names a server ID of the wrong length for its configuration.
    MappedServerIdLength {
        /// The configuration.
        rotation: u8,
        /// Its server ID length.
        expected: usize,
        /// The length found.
        got: usize,
    },
    /// A server ID map lists one server ID twice.
    DuplicateServerId {
        /// The configuration.
        rotation: u8,
        /// The server ID.
        server_id: ServerId,
    },
    /// A server ID map is given for a rotation codepoint without configuration.
    NoSuchRotation(u8),
    /// A server ID to encode does not have the configuration's server ID length.
    WrongServerIdLength {
        /// The configuration's server ID length.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// A nonce to encode does not have the configuration's nonce length.
    WrongNonceLength {
        /// The configuration's nonce length.
        expected: usize,
        /// The length given.
        got: usize,
    },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::Rotation(r) => write!(
                f,
                "config rotation {r} is out of range 0..=6 (7, 0b111, marks unroutable CIDs)"
            ),
            FormatError::ServerIdLength(n) => {
                write!(f, "server ID length {n} is out of range 1..=15")
            }
            FormatError::NonceLength(n) => write!(f, "nonce length {n} is out of range 4..=18"),
            FormatError::TooLong(n) => write!(
                f,
                "server ID and nonce lengths add up to {n}: at most 19 octets"
            ),
            FormatError::DuplicateRotation(r) => {
                write!(f, "two configurations use config rotation {r}")
            }
            FormatError::Empty => f.write_str("at least one configuration is needed"),
            FormatError::CidLength(n) => write!(
                f,
                "CID length {n} must hold the server ID and at least one more octet, and be at most {MAX_CID_LEN}"
            ),
            FormatError::MappedServerIdLength {
                rotation,
                expected,
                got,
            } => write!(
                f,
                "config rotation {rotation} has {expected}-octet server IDs, not {got}"
            ),
            FormatError::DuplicateServerId {
                rotation,
                server_id,
            } => write!(
                f,
                "config rotation {rotation} maps server ID {} twice",
                hex_string(server_id.as_bytes())
            ),
            FormatError::NoSuchRotation(r) => {
                write!(f, "no configuration uses config rotation {r}")
            }
            FormatError::WrongServerIdLength { expected, got } => write!(
                f,
                "the server ID is {got} octets long; this configuration uses {expected}"
            ),
            FormatError::WrongNonceLength { expected, got } => write!(
                f,
                "the nonce is {got} octets long; this configuration uses {expected}"
            ),
        }
    }
}

impl std::error::Error for FormatError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_helpers() {
        assert_eq!(
            parse_hex("0x0a 0B:cd-ef"),
            Some(vec![0x0a, 0x0b, 0xcd, 0xef])
        );
        assert_eq!(parse_hex(""), Some(vec![]));
        assert_eq!(parse_hex("abc"), None);
        assert_eq!(parse_hex("zz"), None);
        assert_eq!(hex_string(&[0, 0xff]), "00ff");
        assert_eq!(
            parse_cid("0xA0:b1-c2 d3").map(|c| c.to_hex()),
            Ok("a0b1c2d3".to_string())
        );
        assert!(parse_cid("").is_err());
        assert!(parse_cid("abc").is_err());
        assert!(parse_cid(&"ab".repeat(MAX_CID_LEN + 1)).is_err());
        assert!(parse_cid(&"ab".repeat(MAX_CID_LEN)).is_ok());
        let c = Cid::new(&[1, 2]).unwrap();
        assert_eq!(format!("{c} {c:?}"), "0102 Cid(0102)");
        assert!(Cid::new(&[0; 33]).is_none());
    }
}
