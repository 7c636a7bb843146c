//! The backend side: issuing routable CIDs for one server ID.

use std::fmt;

use aes::cipher::generic_array::GenericArray;
use aes::cipher::KeyInit;
use aes::Aes128;

use crate::quic_lb::NONCE_LEN;
use crate::{feistel, Cid, FormatError, FormatSet, PrefixFormat, QuicLbConfig, ServerId};

/// Longest nonce ([`NONCE_LEN`]'s upper bound).
const MAX_NONCE: usize = 18;

/// Issues the CIDs of one server: its server ID, a nonce that never repeats, and the
/// format's other bits.
///
/// * **QUIC-LB with a key**: the nonce is a counter that starts at a random value and
///   counts up by one per CID, wrapping modulo `2^(8 × nonce length)`; after that many
///   CIDs the nonce space is used up and [`next_cid`](Self::next_cid) fails with
///   [`GeneratorError::Exhausted`] rather than repeat one. The draft: "If servers simply
///   increment the nonce by one with each generated connection ID, then it is safe to use
///   the existing keys until any server's nonce counter exhausts the allocated space";
///   "the server MUST NOT reuse a nonce until it switches to a configuration with new
///   keys". Encryption hides the counter.
/// * **QUIC-LB without a key**: plaintext nonces must have "no observable relationship"
///   to earlier ones, so the counter goes through a permutation keyed by a random
///   per-generator AES key (the same four-pass Feistel network): nonces look random and
///   still never repeat, with the same exhaustion rule.
/// * **Prefix**: the octets after the server ID are random (as Californium does), so two
///   CIDs may collide, rarely; a server should check that a new CID is not in use.
///
/// The first octet's five low bits are random unless the configuration self-describes
/// the length. A generator is `Send + Sync`; `next_cid` takes `&mut self`, so share one
/// behind a mutex (the C ABI does) rather than make one per thread.
///
/// Two generators for one server ID and key (one per thread, or one before and one
/// after a server restart) each start at a random point: after `k` CIDs each, their
/// nonce ranges overlap with a probability of about `2k / 2^(8 × nonce length)`,
/// negligible for long nonces but not for 4-octet ones. One generator per server ID is
/// the safe choice; [`counter`](Self::counter), [`issued`](Self::issued) and
/// [`resume`](Self::resume) let a server save its state and resume after a restart.
pub struct CidGenerator {
    kind: Kind,
    server_id: ServerId,
    issued: u128,
    /// How many CIDs the nonce space holds, `None` when more than `u128` counts.
    capacity: Option<u128>,
}

enum Kind {
    QuicLb(Box<QuicLbState>),
    Prefix {
        format: PrefixFormat,
        cid_len: usize,
    },
}

struct QuicLbState {
    config: QuicLbConfig,
    /// The next nonce (or, plaintext, the next input of the permutation), big
    /// endian, `config.nonce_len()` octets.
    counter: [u8; MAX_NONCE],
    /// Plaintext configurations only: the private key of the nonce permutation.
    mask: Option<Aes128>,
}

impl fmt::Debug for CidGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("CidGenerator");
        match &self.kind {
            Kind::QuicLb(q) => d.field("config", &q.config),
            Kind::Prefix { format, cid_len } => d.field("prefix", format).field("cid_len", cid_len),
        };
        d.field("server_id", &self.server_id)
            .field("issued", &self.issued)
            .finish_non_exhaustive()
    }
}

/// Why a generator could not be made or could not issue a CID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GeneratorError {
    /// The server ID or lengths do not fit the format.
    Format(FormatError),
    /// Every nonce of this configuration and server ID has been used: switch to a
    /// configuration with a new key (a new rotation codepoint).
    Exhausted {
        /// CIDs issued.
        issued: u128,
    },
    /// The operating system's random source failed.
    Random(String),
    /// The set has no configuration at that rotation, or the request does not suit the
    /// set's format (a rotation for the prefix format, no CID length for it).
    NoConfiguration(String),
}

impl fmt::Display for GeneratorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GeneratorError::Format(e) => e.fmt(f),
            GeneratorError::Exhausted { issued } => write!(
                f,
                "nonce space exhausted after {issued} CIDs: switch to a new configuration (new key)"
            ),
            GeneratorError::Random(e) => write!(f, "no randomness from the OS: {e}"),
            GeneratorError::NoConfiguration(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for GeneratorError {}

impl From<FormatError> for GeneratorError {
    fn from(e: FormatError) -> Self {
        GeneratorError::Format(e)
    }
}

fn random(buf: &mut [u8]) -> Result<(), GeneratorError> {
    getrandom::fill(buf).map_err(|e| GeneratorError::Random(e.to_string()))
}

impl CidGenerator {
    /// A generator of `config` CIDs for `server_id` (of the configuration's server ID
    /// length), starting its counter at a random value.
    pub fn quic_lb(config: QuicLbConfig, server_id: &[u8]) -> Result<CidGenerator, GeneratorError> {
        if server_id.len() != config.server_id_len() {
            return Err(FormatError::WrongServerIdLength {
                expected: config.server_id_len(),
                got: server_id.len(),
            }
            .into());
        }
        let server_id = ServerId::new(server_id).expect("length checked by the config");
        let n = config.nonce_len();
        debug_assert!(NONCE_LEN.contains(&n));
        let mut counter = [0u8; MAX_NONCE];
        random(&mut counter[..n])?;
        let mask = if config.is_encrypted() {
            None
        } else {
            let mut k = [0u8; 16];
            random(&mut k)?;
            Some(Aes128::new(&GenericArray::from(k)))
        };
        let capacity = 1u128.checked_shl(8 * n as u32).filter(|_| n < 16);
        Ok(CidGenerator {
            kind: Kind::QuicLb(Box::new(QuicLbState {
                config,
                counter,
                mask,
            })),
            server_id,
            issued: 0,
            capacity,
        })
    }

    /// A generator of `cid_len`-octet prefix-format CIDs for `server_id`.
    pub fn prefix(
        format: PrefixFormat,
        server_id: &[u8],
        cid_len: usize,
    ) -> Result<CidGenerator, GeneratorError> {
        if server_id.len() != format.server_id_len() {
            return Err(FormatError::WrongServerIdLength {
                expected: format.server_id_len(),
                got: server_id.len(),
            }
            .into());
        }
        format.check_cid_len(cid_len)?;
        Ok(CidGenerator {
            kind: Kind::Prefix { format, cid_len },
            server_id: ServerId::new(server_id).expect("length checked by the format"),
            issued: 0,
            capacity: None,
        })
    }

    /// A generator for `server_id` in a listener's format: QUIC-LB configuration
    /// `rotation`, or the prefix format with CIDs of `cid_len` octets.
    pub fn for_set(
        set: &FormatSet,
        rotation: Option<u8>,
        server_id: &[u8],
        cid_len: Option<usize>,
    ) -> Result<CidGenerator, GeneratorError> {
        if let Some(p) = set.prefix_format() {
            if rotation.is_some() {
                return Err(GeneratorError::NoConfiguration(
                    "the prefix format has no config rotation".into(),
                ));
            }
            let n = cid_len.ok_or_else(|| {
                GeneratorError::NoConfiguration("the prefix format needs the CID length".into())
            })?;
            return CidGenerator::prefix(p, server_id, n);
        }
        let r = match rotation {
            Some(r) => r,
            None => set.configs().map(QuicLbConfig::rotation).max().unwrap_or(0),
        };
        let config = set.config(r).ok_or_else(|| {
            GeneratorError::NoConfiguration(format!("no configuration uses config rotation {r}"))
        })?;
        CidGenerator::quic_lb(config.clone(), server_id)
    }

    /// Sets the counter (QUIC-LB only): the next nonce (encrypted configurations), or the
    /// next input of the nonce permutation (plaintext ones). `counter` has the nonce's
    /// length. For resuming a saved [`counter`](Self::counter), and for test vectors.
    pub fn starting_at(mut self, start: &[u8]) -> Result<CidGenerator, GeneratorError> {
        let Kind::QuicLb(q) = &mut self.kind else {
            return Err(GeneratorError::NoConfiguration(
                "the prefix format has no nonce counter".into(),
            ));
        };
        if start.len() != q.config.nonce_len() {
            return Err(FormatError::WrongNonceLength {
                expected: q.config.nonce_len(),
                got: start.len(),
            }
            .into());
        }
        q.counter[..start.len()].copy_from_slice(start);
        Ok(self)
    }

    /// Resumes a saved generator (encrypted QUIC-LB only): sets the
    /// [`counter`](Self::counter) and the [`issued`](Self::issued) count saved after the
    /// previous generator's last CID, so that this one continues its nonce sequence and
    /// still stops with [`GeneratorError::Exhausted`] when the whole nonce space
    /// (counted over both) is used. For a generator that has issued nothing yet.
    ///
    /// Refused, leaving the generator as it was, for plaintext configurations (each
    /// generator permutes its nonces under a private random key that is not saved, so a
    /// resumed counter would not prevent repeats), the prefix format (no counter), a
    /// generator that has issued a CID, and a counter of another length than the nonce.
    /// An `issued` larger than the nonce space is [`GeneratorError::Exhausted`].
    pub fn resume(&mut self, counter: &[u8], issued: u128) -> Result<(), GeneratorError> {
        if self.issued != 0 {
            return Err(GeneratorError::NoConfiguration(
                "resume a generator before it issues a CID".into(),
            ));
        }
        let Kind::QuicLb(q) = &mut self.kind else {
            return Err(GeneratorError::NoConfiguration(
                "the prefix format has no nonce counter".into(),
            ));
        };
        if q.mask.is_some() {
            return Err(GeneratorError::NoConfiguration(
                "a plaintext configuration's nonce permutation is private to each \
                 generator: resuming its counter would not prevent repeats"
                    .into(),
            ));
        }
        if counter.len() != q.config.nonce_len() {
            return Err(FormatError::WrongNonceLength {
                expected: q.config.nonce_len(),
                got: counter.len(),
            }
            .into());
        }
        if self.capacity.is_some_and(|c| issued > c) {
            return Err(GeneratorError::Exhausted { issued });
        }
        q.counter[..counter.len()].copy_from_slice(counter);
        self.issued = issued;
        Ok(())
    }

    /// The next counter value (QUIC-LB), to save and hand to
    /// [`resume`](Self::resume) (or [`starting_at`](Self::starting_at)) later; empty for
    /// the prefix format.
    pub fn counter(&self) -> Vec<u8> {
        match &self.kind {
            Kind::QuicLb(q) => q.counter[..q.config.nonce_len()].to_vec(),
            Kind::Prefix { .. } => Vec::new(),
        }
    }

    /// The server ID this generator encodes.
    pub fn server_id(&self) -> ServerId {
        self.server_id
    }

    /// Length of the CIDs it issues (what the DTLS stack must be configured for, e.g.
    /// `mbedtls_ssl_conf_cid`).
    pub fn cid_len(&self) -> usize {
        match &self.kind {
            Kind::QuicLb(q) => q.config.cid_len(),
            Kind::Prefix { cid_len, .. } => *cid_len,
        }
    }

    /// CIDs issued so far.
    pub fn issued(&self) -> u128 {
        self.issued
    }

    /// CIDs it can still issue before its nonce space is exhausted; `None` when
    /// unlimited (prefix format) or beyond `u128`.
    pub fn remaining(&self) -> Option<u128> {
        self.capacity.map(|c| c - self.issued)
    }

    /// The next CID.
    pub fn next_cid(&mut self) -> Result<Cid, GeneratorError> {
        if self.capacity.is_some_and(|c| self.issued >= c) {
            return Err(GeneratorError::Exhausted {
                issued: self.issued,
            });
        }
        let cid = match &mut self.kind {
            Kind::QuicLb(q) => {
                let QuicLbState {
                    config,
                    counter,
                    mask,
                } = &mut **q;
                let n = config.nonce_len();
                let mut nonce = [0u8; MAX_NONCE];
                nonce[..n].copy_from_slice(&counter[..n]);
                if let Some(mask) = mask {
                    feistel::encrypt(mask, &mut nonce[..n]);
                }
                increment(&mut counter[..n]);
                let mut r = [0u8; 1];
                if !config.self_describing_length() {
                    random(&mut r)?;
                }
                config.encode(self.server_id.as_bytes(), &nonce[..n], r[0])?
            }
            Kind::Prefix { cid_len, .. } => {
                let mut b = [0u8; crate::MAX_CID_LEN];
                let s = self.server_id.as_bytes();
                b[..s.len()].copy_from_slice(s);
                random(&mut b[s.len()..*cid_len])?;
                Cid::new(&b[..*cid_len]).expect("length checked")
            }
        };
        self.issued += 1;
        Ok(cid)
    }
}

/// Adds one to a big-endian counter, modulo `2^(8 × len)`.
fn increment(counter: &mut [u8]) {
    for b in counter.iter_mut().rev() {
        let (v, carry) = b.overflowing_add(1);
        *b = v;
        if !carry {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QuicLbParams;
    use std::collections::HashSet;

    fn config(key: Option<[u8; 16]>, sd: bool) -> QuicLbConfig {
        QuicLbConfig::new(QuicLbParams {
            rotation: 2,
            server_id_len: 2,
            nonce_len: 4,
            key,
            self_describing_length: sd,
        })
        .unwrap()
    }

    #[test]
    fn counter_wraps_and_counts() {
        let mut c = [0x00, 0xff, 0xff];
        increment(&mut c);
        assert_eq!(c, [0x01, 0x00, 0x00]);
        let mut c = [0xff, 0xff];
        increment(&mut c);
        assert_eq!(c, [0, 0]);
    }

    #[test]
    fn encrypted_nonces_are_the_counter() {
        let cfg = config(Some([9; 16]), true);
        let mut g = CidGenerator::quic_lb(cfg.clone(), &[0xab, 0xcd])
            .unwrap()
            .starting_at(&[0xff, 0xff, 0xff, 0xfe])
            .unwrap();
        let nonces: Vec<Vec<u8>> = (0..3)
            .map(|_| cfg.decode_full(&g.next_cid().unwrap()).unwrap().1)
            .collect();
        assert_eq!(
            nonces,
            [vec![0xff, 0xff, 0xff, 0xfe], vec![0xff; 4], vec![0; 4]]
        );
        assert_eq!(g.counter(), [0, 0, 0, 1]);
        assert_eq!(g.issued(), 3);
        assert_eq!(g.remaining(), Some((1u128 << 32) - 3));
    }

    #[test]
    fn resume_continues_the_counter_and_the_count() {
        let cfg = config(Some([5; 16]), false);
        let mut a = CidGenerator::quic_lb(cfg.clone(), &[1, 2]).unwrap();
        let first: Vec<Cid> = (0..10).map(|_| a.next_cid().unwrap()).collect();
        let mut b = CidGenerator::quic_lb(cfg.clone(), &[1, 2]).unwrap();
        b.resume(&a.counter(), a.issued()).unwrap();
        assert_eq!((b.issued(), b.remaining()), (10, a.remaining()));
        let next = a.next_cid().unwrap();
        let resumed = b.next_cid().unwrap();
        let nonce = |c: &Cid| cfg.decode_full(c).unwrap().1;
        assert_eq!(nonce(&next), nonce(&resumed));
        assert!(first.iter().all(|c| nonce(c) != nonce(&resumed)));
        assert_eq!(b.counter(), a.counter());

        // The count carries over: a resumed generator stops where the first would have.
        let mut c = CidGenerator::quic_lb(cfg.clone(), &[1, 2]).unwrap();
        c.resume(&[0; 4], (1u128 << 32) - 1).unwrap();
        assert!(c.next_cid().is_ok());
        assert!(matches!(
            c.next_cid(),
            Err(GeneratorError::Exhausted { .. })
        ));
        let mut d = CidGenerator::quic_lb(cfg.clone(), &[1, 2]).unwrap();
        let before = d.counter();
        assert!(matches!(
            d.resume(&[0; 4], (1u128 << 32) + 1),
            Err(GeneratorError::Exhausted { .. })
        ));
        assert_eq!((d.counter(), d.issued()), (before, 0), "unchanged on error");
    }

    #[test]
    fn resume_is_refused_where_it_cannot_prevent_repeats() {
        let cfg = config(Some([5; 16]), false);
        let mut used = CidGenerator::quic_lb(cfg.clone(), &[1, 2]).unwrap();
        used.next_cid().unwrap();
        assert!(matches!(
            used.resume(&[0; 4], 0),
            Err(GeneratorError::NoConfiguration(_))
        ));
        let mut g = CidGenerator::quic_lb(cfg, &[1, 2]).unwrap();
        assert!(matches!(
            g.resume(&[0; 3], 0),
            Err(GeneratorError::Format(FormatError::WrongNonceLength { .. }))
        ));
        let mut plain = CidGenerator::quic_lb(config(None, false), &[1, 2]).unwrap();
        assert!(matches!(
            plain.resume(&[0; 4], 0),
            Err(GeneratorError::NoConfiguration(_))
        ));
        let mut prefix = CidGenerator::prefix(PrefixFormat::CALIFORNIUM, &[1], 6).unwrap();
        assert!(matches!(
            prefix.resume(&[], 0),
            Err(GeneratorError::NoConfiguration(_))
        ));
    }

    #[test]
    fn exhaustion_is_an_error_not_a_wrap_around() {
        let mut g = CidGenerator::quic_lb(config(Some([1; 16]), false), &[1, 2]).unwrap();
        g.issued = (1u128 << 32) - 2;
        assert!(g.next_cid().is_ok());
        assert!(g.next_cid().is_ok());
        assert_eq!(
            g.next_cid(),
            Err(GeneratorError::Exhausted {
                issued: 1u128 << 32
            })
        );
        assert_eq!(g.remaining(), Some(0));
        assert!(GeneratorError::Exhausted { issued: 5 }
            .to_string()
            .contains("new configuration"));
    }

    #[test]
    fn plaintext_nonces_are_permuted_and_unique() {
        let cfg = config(None, false);
        let mut g = CidGenerator::quic_lb(cfg.clone(), &[7, 7])
            .unwrap()
            .starting_at(&[0, 0, 0, 0])
            .unwrap();
        let mut seen = HashSet::new();
        let mut sequential = 0;
        let mut prev: Option<u32> = None;
        for _ in 0..5000 {
            let cid = g.next_cid().unwrap();
            assert_eq!(&cid[1..3], &[7, 7], "plaintext server ID");
            let n = u32::from_be_bytes(cid[3..7].try_into().unwrap());
            assert!(seen.insert(n), "nonce repeated");
            if prev.is_some_and(|p| p.wrapping_add(1) == n) {
                sequential += 1;
            }
            prev = Some(n);
        }
        assert!(sequential < 5, "plaintext nonces look like a counter");
    }

    #[test]
    fn first_octet_low_bits_random_unless_self_describing() {
        let mut g = CidGenerator::quic_lb(config(Some([3; 16]), false), &[1, 2]).unwrap();
        let lows: HashSet<u8> = (0..200).map(|_| g.next_cid().unwrap()[0]).collect();
        assert!(lows.iter().all(|b| b >> 5 == 2));
        assert!(lows.len() > 8, "{lows:?}");
        let mut g = CidGenerator::quic_lb(config(Some([3; 16]), true), &[1, 2]).unwrap();
        assert_eq!(g.next_cid().unwrap()[0], 0b010_00110);
    }

    #[test]
    fn prefix_generator() {
        let mut g = CidGenerator::prefix(PrefixFormat::CALIFORNIUM, &[0x2a], 6).unwrap();
        let a = g.next_cid().unwrap();
        let b = g.next_cid().unwrap();
        assert_eq!((a.len(), a[0], b[0]), (6, 0x2a, 0x2a));
        assert_ne!(a, b);
        assert_eq!(g.remaining(), None);
        assert!(CidGenerator::prefix(PrefixFormat::CALIFORNIUM, &[1, 2], 6).is_err());
        assert!(CidGenerator::prefix(PrefixFormat::CALIFORNIUM, &[1], 1).is_err());
        assert!(g.counter().is_empty());
    }

    #[test]
    fn for_set_picks_the_configuration() {
        let set = FormatSet::quic_lb(vec![config(Some([1; 16]), false)]).unwrap();
        let g = CidGenerator::for_set(&set, None, &[1, 2], None).unwrap();
        assert_eq!(g.cid_len(), 7);
        assert!(matches!(
            CidGenerator::for_set(&set, Some(0), &[1, 2], None),
            Err(GeneratorError::NoConfiguration(_))
        ));
        let p = FormatSet::prefix(PrefixFormat::CALIFORNIUM);
        assert!(CidGenerator::for_set(&p, None, &[1], None).is_err());
        assert!(CidGenerator::for_set(&p, Some(1), &[1], Some(4)).is_err());
        assert_eq!(
            CidGenerator::for_set(&p, None, &[1], Some(4))
                .unwrap()
                .cid_len(),
            4
        );
    }
}
