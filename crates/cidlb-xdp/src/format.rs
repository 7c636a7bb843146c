//! The listener's CID format as the program decodes it.
//!
//! The Router sees a CID format through `cidlb_core::CidFormat` (lengths and server
//! IDs, opaque); the program needs the format's parameters: the prefix length, or each
//! QUIC-LB configuration's server ID and nonce lengths, whether it is encrypted, whether
//! it self-describes its length, and its server ID map. An [`XdpCidFormat`] is built
//! from those parameters and builds the `FormatSet` the Router and the slow path use,
//! so the program and the core read CIDs from one description.

use std::sync::Arc;

use cidlb_cidformat::{FormatError, FormatSet, PrefixFormat, QuicLbConfig, ServerId};
use cidlb_core::{CidFormat, CidRouting};

use crate::abi;

/// A configuration's server ID map: (server ID in the CID, routing ID of its backend).
pub type ServerIdMap = Vec<(ServerId, ServerId)>;

/// A routable-CID format that the XDP program decodes (prefix, plaintext QUIC-LB) or
/// sends to the slow path (encrypted QUIC-LB); see the crate docs.
#[derive(Clone, Debug)]
pub struct XdpCidFormat {
    set: FormatSet,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Prefix(PrefixFormat),
    QuicLb {
        configs: Vec<QuicLbConfig>,
        maps: Vec<(u8, ServerIdMap)>,
    },
}

impl XdpCidFormat {
    /// The server-ID prefix format.
    pub fn prefix(format: PrefixFormat) -> XdpCidFormat {
        XdpCidFormat {
            set: FormatSet::prefix(format),
            kind: Kind::Prefix(format),
        }
    }

    /// QUIC-LB configurations (at most one per rotation codepoint), with a server ID
    /// map for some of them (`FormatSet::with_server_id_map`).
    pub fn quic_lb(
        configs: Vec<QuicLbConfig>,
        maps: Vec<(u8, ServerIdMap)>,
    ) -> Result<XdpCidFormat, FormatError> {
        let mut set = FormatSet::quic_lb(configs.clone())?;
        for (rotation, map) in &maps {
            set = set.with_server_id_map(*rotation, map.clone())?;
        }
        Ok(XdpCidFormat {
            set,
            kind: Kind::QuicLb { configs, maps },
        })
    }

    /// The format of `set` (its parameters and server ID maps), as the program decodes
    /// it.
    pub fn from_set(set: &FormatSet) -> XdpCidFormat {
        if let Some(p) = set.prefix_format() {
            return XdpCidFormat::prefix(p);
        }
        let configs: Vec<QuicLbConfig> = set.configs().cloned().collect();
        let maps = configs
            .iter()
            .filter_map(|c| Some((c.rotation(), set.server_id_map(c.rotation())?.to_vec())))
            .collect();
        XdpCidFormat {
            set: set.clone(),
            kind: Kind::QuicLb { configs, maps },
        }
    }

    /// The format a router configuration's `CidRouting` carries, when it is a
    /// `FormatSet` (what the daemon builds from `[listener.cid_format]`).
    pub fn from_routing(routing: &CidRouting) -> Option<XdpCidFormat> {
        let any = routing.format.as_ref()?.as_any()?;
        any.downcast_ref::<FormatSet>().map(XdpCidFormat::from_set)
    }

    /// The QUIC-LB rotations whose configuration or server ID map differ between `self`
    /// and `other` (all eight when one is the prefix format): cached decodings of their
    /// CIDs are stale.
    pub fn changed_rotations(&self, other: &XdpCidFormat) -> Vec<u8> {
        (0..8u8)
            .filter(|&r| {
                self.set.prefix_format() != other.set.prefix_format()
                    || self.set.config(r) != other.set.config(r)
                    || self.set.server_id_map(r) != other.set.server_id_map(r)
            })
            .collect()
    }

    /// The same format as the core reads it.
    pub fn format_set(&self) -> &FormatSet {
        &self.set
    }

    /// The Router's view of this format with CIDs of `fixed_len` where the format does
    /// not tell the length (what `RouterConfig::cid` must be for the core to route as
    /// the program does).
    pub fn cid_routing(&self, fixed_len: Option<usize>) -> CidRouting {
        CidRouting {
            fixed_len,
            format: Some(Arc::new(self.set.clone()) as Arc<dyn CidFormat>),
        }
    }

    /// Whether some configuration needs the slow path (encrypted QUIC-LB).
    pub fn has_encrypted(&self) -> bool {
        match &self.kind {
            Kind::Prefix(_) => false,
            Kind::QuicLb { configs, .. } => configs.iter().any(QuicLbConfig::is_encrypted),
        }
    }

    /// Fills the program's format fields.
    pub(crate) fn program_tables(&self, c: &mut abi::Config) {
        c.rot = [abi::Rotation::default(); 8];
        match &self.kind {
            Kind::Prefix(p) => {
                c.format = abi::FORMAT_PREFIX;
                c.prefix_len = p.server_id_len() as u8;
            }
            Kind::QuicLb { configs, maps } => {
                c.format = abi::FORMAT_QUIC_LB;
                c.prefix_len = 0;
                c.rot[7].mode = abi::ROT_UNROUTABLE;
                for q in configs {
                    let r = usize::from(q.rotation());
                    let mut flags = 0;
                    if q.self_describing_length() {
                        flags |= abi::ROT_SELF_DESCRIBING;
                    }
                    if maps.iter().any(|(m, _)| usize::from(*m) == r) {
                        flags |= abi::ROT_HAS_MAP;
                    }
                    c.rot[r] = abi::Rotation {
                        mode: if q.is_encrypted() {
                            abi::ROT_ENCRYPTED
                        } else {
                            abi::ROT_PLAINTEXT
                        },
                        sid_len: q.server_id_len() as u8,
                        min_len: q.cid_len() as u8,
                        flags,
                    };
                }
            }
        }
    }

    /// The server ID maps of plaintext configurations, as `sids` entries (encoded server
    /// ID → routing ID). Encrypted configurations' maps are applied by the slow path.
    pub(crate) fn map_entries(&self) -> Vec<(abi::SidKey, abi::SidVal)> {
        let Kind::QuicLb { configs, maps } = &self.kind else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (rotation, map) in maps {
            let plaintext = configs
                .iter()
                .any(|c| c.rotation() == *rotation && !c.is_encrypted());
            if !plaintext {
                continue;
            }
            for (sid, routing) in map {
                let r = routing.as_bytes();
                let mut v = abi::SidVal {
                    backend: abi::NO_BACKEND,
                    len: r.len() as u8,
                    id: [0; 15],
                };
                v.id[..r.len()].copy_from_slice(r);
                out.push((abi::SidKey::new(*rotation, sid.as_bytes()), v));
            }
        }
        out
    }
}

/// The program's CID length table from the listener's `CidRouting`: for every first
/// octet, what `CidLength for &CidRouting` says (a format reads its length from the
/// first octet only, as QUIC-LB does), and the length when no octet follows.
pub(crate) fn length_table(routing: &CidRouting, c: &mut abi::Config) {
    use cidlb_wire::CidLength;
    let code = |n: Option<usize>| match n {
        None => abi::LEN_UNKNOWN,
        Some(n) if n > abi::MAX_CID_LEN => abi::LEN_TOO_LONG,
        Some(n) => n as u8,
    };
    for b in 0..=255u8 {
        c.cid_len[usize::from(b)] = code(routing.cid_len(&[b]));
    }
    c.len_if_empty = code(routing.cid_len(&[]));
}
