//! QUIC-LB routable CIDs, pinned to **draft-ietf-quic-load-balancers-21** (the revision
//! of August 2025; tag `draft-ietf-quic-load-balancers-21` of the quicwg/load-balancers
//! repository).
//!
//! ```text
//! QUIC-LB Connection ID {
//!     First Octet (8),            config rotation (3) | length or random bits (5)
//!     Plaintext Block (40..152) { Server ID (8..), Nonce (32..) }
//! }
//! ```
//!
//! Other revisions differ on the wire: drafts before -17 have two rotation bits, and
//! draft-19 moved the length and pass octets of the four-pass algorithm's AES input to
//! its end, so four-pass CIDs (and test vectors) of drafts up to 17 do not decode here.
//!
//! Quotes from the draft are marked `//#`; deliberate departures are listed in
//! `docs/routable-cids.md` ("Errata").

use std::fmt;

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use aes::Aes128;

use crate::{feistel, Cid, FormatError, ServerId};

/// The draft revision this module implements.
pub const DRAFT: &str = "draft-ietf-quic-load-balancers-21";

//# A configuration MUST NOT use the reserved identifier 0b111
/// The config rotation codepoint of unroutable CIDs ("Configuration Failover"): servers
/// without a configuration issue them, and they always self-encode their length.
pub const UNROUTABLE_ROTATION: u8 = 0b111;
/// Largest config rotation codepoint of a configuration.
pub const MAX_ROTATION: u8 = 6;
/// Server ID lengths, in octets ("MUST be at least 1 octet"; the YANG model: 1..15).
pub const SERVER_ID_LEN: std::ops::RangeInclusive<usize> = 1..=15;
/// Nonce lengths, in octets ("The nonce length MUST be at least 4 octets"; YANG 4..18).
pub const NONCE_LEN: std::ops::RangeInclusive<usize> = 4..=18;
//# the server ID and nonce lengths MUST sum to 19 octets or less.
/// Longest server ID + nonce.
pub const MAX_PLAINTEXT_LEN: usize = 19;

/// The rotation bits of a CID's first octet.
pub fn rotation_of(first_octet: u8) -> u8 {
    first_octet >> 5
}

/// The CID length a first octet self-describes: its five low bits ("the length of the
/// following connection ID, not including the first octet") plus one.
pub fn described_len(first_octet: u8) -> usize {
    usize::from(first_octet & 0x1f) + 1
}

/// The parameters of one QUIC-LB configuration (the draft's YANG `cid-configs` entry).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuicLbParams {
    /// Config rotation codepoint, `0..=6`: the three high bits of every CID's first octet.
    pub rotation: u8,
    /// Server ID length in octets, `1..=15`.
    pub server_id_len: usize,
    /// Nonce length in octets, `4..=18`; with the server ID at most 19.
    pub nonce_len: usize,
    /// AES-128 key; `None` for plaintext CIDs (which anyone can map to their server).
    pub key: Option<[u8; 16]>,
    /// Whether the first octet's five low bits carry the CID length minus one (else
    /// they are random).
    pub self_describing_length: bool,
}

impl fmt::Debug for QuicLbParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicLbParams")
            .field("rotation", &self.rotation)
            .field("server_id_len", &self.server_id_len)
            .field("nonce_len", &self.nonce_len)
            // Never print keys.
            .field("key", &self.key.map(|_| "<16 octets>"))
            .field("self_describing_length", &self.self_describing_length)
            .finish()
    }
}

/// How a configuration protects the server ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// No key: server ID and nonce in the clear.
    Plaintext,
    /// A key and server ID + nonce = 16 octets: one AES-128-ECB block.
    SinglePass,
    /// A key and any other length: the four-pass Feistel network.
    FourPass,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Plaintext => "plaintext",
            Mode::SinglePass => "single-pass AES-128-ECB",
            Mode::FourPass => "four-pass AES-128 Feistel",
        })
    }
}

/// A validated QUIC-LB configuration: encodes and decodes CIDs.
#[derive(Clone)]
pub struct QuicLbConfig {
    params: QuicLbParams,
    cipher: Option<Aes128>,
}

impl PartialEq for QuicLbConfig {
    fn eq(&self, other: &Self) -> bool {
        self.params == other.params
    }
}

impl Eq for QuicLbConfig {}

impl fmt::Debug for QuicLbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("QuicLbConfig").field(&self.params).finish()
    }
}

impl QuicLbConfig {
    /// Checks the parameters (rotation `0..=6`, server ID `1..=15`, nonce `4..=18`, sum
    /// at most 19) and prepares the cipher.
    pub fn new(params: QuicLbParams) -> Result<QuicLbConfig, FormatError> {
        if params.rotation > MAX_ROTATION {
            return Err(FormatError::Rotation(params.rotation));
        }
        if !SERVER_ID_LEN.contains(&params.server_id_len) {
            return Err(FormatError::ServerIdLength(params.server_id_len));
        }
        if !NONCE_LEN.contains(&params.nonce_len) {
            return Err(FormatError::NonceLength(params.nonce_len));
        }
        let sum = params.server_id_len + params.nonce_len;
        if sum > MAX_PLAINTEXT_LEN {
            return Err(FormatError::TooLong(sum));
        }
        let cipher = params.key.map(|k| Aes128::new(&GenericArray::from(k)));
        Ok(QuicLbConfig { params, cipher })
    }

    /// The parameters.
    pub fn params(&self) -> &QuicLbParams {
        &self.params
    }

    /// The config rotation codepoint.
    pub fn rotation(&self) -> u8 {
        self.params.rotation
    }

    /// Server ID length in octets.
    pub fn server_id_len(&self) -> usize {
        self.params.server_id_len
    }

    /// Nonce length in octets.
    pub fn nonce_len(&self) -> usize {
        self.params.nonce_len
    }

    /// Whether CIDs self-describe their length.
    pub fn self_describing_length(&self) -> bool {
        self.params.self_describing_length
    }

    /// Whether there is a key.
    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    /// Plaintext, single pass or four passes.
    pub fn mode(&self) -> Mode {
        match (&self.cipher, self.plaintext_len()) {
            (None, _) => Mode::Plaintext,
            (Some(_), 16) => Mode::SinglePass,
            (Some(_), _) => Mode::FourPass,
        }
    }

    /// Server ID + nonce length.
    pub fn plaintext_len(&self) -> usize {
        self.params.server_id_len + self.params.nonce_len
    }

    /// Length of the CIDs of this configuration: the first octet, server ID and nonce.
    pub fn cid_len(&self) -> usize {
        1 + self.plaintext_len()
    }

    /// The first octet: the rotation bits, then either the length self-description or
    /// the five low bits of `random`.
    ///
    //# A server not using this functionality SHOULD choose the five bits so as to have
    //# no observable relationship to previous connection IDs issued for that connection.
    pub fn first_octet(&self, random: u8) -> u8 {
        let low = if self.params.self_describing_length {
            (self.cid_len() - 1) as u8
        } else {
            random & 0x1f
        };
        self.params.rotation << 5 | low
    }

    /// Builds the CID for `server_id` and `nonce` ("Server Actions"); `random` supplies
    /// the first octet's low bits when the length is not self-described.
    pub fn encode(&self, server_id: &[u8], nonce: &[u8], random: u8) -> Result<Cid, FormatError> {
        if server_id.len() != self.params.server_id_len {
            return Err(FormatError::WrongServerIdLength {
                expected: self.params.server_id_len,
                got: server_id.len(),
            });
        }
        if nonce.len() != self.params.nonce_len {
            return Err(FormatError::WrongNonceLength {
                expected: self.params.nonce_len,
                got: nonce.len(),
            });
        }
        let mut out = [0u8; 1 + MAX_PLAINTEXT_LEN];
        let n = self.cid_len();
        out[0] = self.first_octet(random);
        out[1..1 + server_id.len()].copy_from_slice(server_id);
        out[1 + server_id.len()..n].copy_from_slice(nonce);
        match (&self.cipher, self.mode()) {
            (None, _) => {}
            (Some(c), Mode::SinglePass) => {
                //# All connection ID octets except the first form an AES-ECB block. This
                //# block is encrypted once
                let block = GenericArray::from_mut_slice(&mut out[1..17]);
                c.encrypt_block(block);
            }
            (Some(c), _) => feistel::encrypt(c, &mut out[1..n]),
        }
        Ok(Cid::new(&out[..n]).expect("at most 20 octets"))
    }

    /// The server ID encoded in `cid` ("Load Balancer Actions"), doing no more AES
    /// passes than needed. `None` when the CID is too short or its rotation bits are not
    /// this configuration's. Octets after the nonce are ignored (servers MAY append some).
    pub fn decode(&self, cid: &[u8]) -> Option<ServerId> {
        let mut plain = [0u8; MAX_PLAINTEXT_LEN];
        self.decrypt_into(cid, &mut plain, self.params.server_id_len)?;
        ServerId::new(&plain[..self.params.server_id_len])
    }

    /// The server ID and the nonce of `cid` (all four passes when encrypted): for tools
    /// and tests.
    pub fn decode_full(&self, cid: &[u8]) -> Option<(ServerId, Vec<u8>)> {
        let mut plain = [0u8; MAX_PLAINTEXT_LEN];
        let n = self.plaintext_len();
        self.decrypt_into(cid, &mut plain, n)?;
        let sid = ServerId::new(&plain[..self.params.server_id_len])?;
        Some((sid, plain[self.params.server_id_len..n].to_vec()))
    }

    /// Decrypts server ID + nonce into `plain`; only its first `wanted` octets are sure to
    /// be plaintext.
    fn decrypt_into(
        &self,
        cid: &[u8],
        plain: &mut [u8; MAX_PLAINTEXT_LEN],
        wanted: usize,
    ) -> Option<()> {
        let n = self.plaintext_len();
        if cid.len() < 1 + n || rotation_of(cid[0]) != self.params.rotation {
            return None;
        }
        let plain = &mut plain[..n];
        plain.copy_from_slice(&cid[1..1 + n]);
        match (&self.cipher, self.mode()) {
            (None, _) => {}
            (Some(c), Mode::SinglePass) => {
                c.decrypt_block(GenericArray::from_mut_slice(plain));
            }
            (Some(c), _) => feistel::decrypt(c, plain, wanted),
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(rotation: u8, sid: usize, nonce: usize, key: Option<[u8; 16]>) -> QuicLbParams {
        QuicLbParams {
            rotation,
            server_id_len: sid,
            nonce_len: nonce,
            key,
            self_describing_length: false,
        }
    }

    #[test]
    fn limits() {
        assert_eq!(
            QuicLbConfig::new(params(7, 1, 4, None)),
            Err(FormatError::Rotation(7))
        );
        assert_eq!(
            QuicLbConfig::new(params(0, 0, 4, None)),
            Err(FormatError::ServerIdLength(0))
        );
        assert_eq!(
            QuicLbConfig::new(params(0, 16, 4, None)),
            Err(FormatError::ServerIdLength(16))
        );
        assert_eq!(
            QuicLbConfig::new(params(0, 1, 3, None)),
            Err(FormatError::NonceLength(3))
        );
        assert_eq!(
            QuicLbConfig::new(params(0, 2, 18, None)),
            Err(FormatError::TooLong(20))
        );
        let c = QuicLbConfig::new(params(6, 1, 18, Some([1; 16]))).unwrap();
        assert_eq!(c.cid_len(), 20);
        assert_eq!(c.mode(), Mode::FourPass);
        assert_eq!(
            QuicLbConfig::new(params(0, 8, 8, Some([1; 16])))
                .unwrap()
                .mode(),
            Mode::SinglePass
        );
        assert_eq!(
            QuicLbConfig::new(params(0, 8, 8, None)).unwrap().mode(),
            Mode::Plaintext
        );
        // Keys never show in debug output.
        let shown = format!("{c:?}");
        assert!(
            shown.contains("<16 octets>") && !shown.contains("[1, 1"),
            "{shown}"
        );
    }

    #[test]
    fn encode_checks_lengths_and_first_octet() {
        let mut p = params(5, 2, 4, None);
        let c = QuicLbConfig::new(p).unwrap();
        assert_eq!(
            c.encode(&[1], &[0; 4], 0),
            Err(FormatError::WrongServerIdLength {
                expected: 2,
                got: 1
            })
        );
        assert_eq!(
            c.encode(&[1, 2], &[0; 5], 0),
            Err(FormatError::WrongNonceLength {
                expected: 4,
                got: 5
            })
        );
        let cid = c.encode(&[1, 2], &[3, 4, 5, 6], 0xff).unwrap();
        assert_eq!(cid.as_bytes(), &[0b101_11111, 1, 2, 3, 4, 5, 6]);
        p.self_describing_length = true;
        let c = QuicLbConfig::new(p).unwrap();
        let cid = c.encode(&[1, 2], &[3, 4, 5, 6], 0xff).unwrap();
        assert_eq!(cid[0], 0b101_00110);
        assert_eq!(described_len(cid[0]), cid.len());
        // Too short, or another rotation: no server ID.
        assert_eq!(c.decode(&cid[..6]), None);
        let mut other = cid;
        let mut bytes = other.as_bytes().to_vec();
        bytes[0] = 0b100_00110;
        other = Cid::new(&bytes).unwrap();
        assert_eq!(c.decode(&other), None);
        // Trailing octets are ignored.
        let mut longer = cid.as_bytes().to_vec();
        longer.push(0xee);
        assert_eq!(c.decode(&longer).unwrap().as_bytes(), &[1, 2]);
    }
}
