//! A listener's CID format: one prefix format, or several QUIC-LB configurations at once.

use std::fmt;

use cidlb_core::CidFormat;

use crate::quic_lb::{described_len, rotation_of, QuicLbConfig, MAX_ROTATION, UNROUTABLE_ROTATION};
use crate::{hex_string, FormatError, PrefixFormat, ServerId};

const SLOTS: usize = MAX_ROTATION as usize + 1;

/// A configuration's server IDs, each with the ID the router knows its backend by.
type ServerIdMap = Vec<(ServerId, ServerId)>;

/// What a balancer listener knows about its backends' CIDs.
///
/// With QUIC-LB, up to seven configurations live at once, one per config rotation
/// codepoint; the first octet of a CID selects the one that decodes it. That is how a
/// new key or a new server-ID allocation is rolled out: add the new configuration at a
/// free codepoint on every balancer, switch the servers to it, and remove the old one
/// once no session uses its CIDs any more.
///
/// Each configuration may carry a *server ID map* (`with_server_id_map`): the server
/// IDs it allocates, each mapped to the ID the router knows the backend by. Without a
/// map, a decoded server ID is looked up as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatSet {
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    QuicLb {
        configs: Box<[Option<QuicLbConfig>; SLOTS]>,
        maps: Box<[Option<ServerIdMap>; SLOTS]>,
    },
    Prefix(PrefixFormat),
}

/// A CID that decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// The configuration that decoded it (QUIC-LB), `None` for the prefix format.
    pub rotation: Option<u8>,
    /// The server ID as encoded in the CID.
    pub server_id: ServerId,
    /// The ID the router looks the backend up by: `server_id`, or what the
    /// configuration's server ID map maps it to.
    pub routing_id: ServerId,
}

/// Why a CID does not decode (the draft's "unroutable" cases).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Undecodable {
    /// An empty CID.
    Empty,
    /// Config rotation 0b111: a server without configuration issued it (QUIC-LB
    /// "Configuration Failover"); it never carries a server ID.
    Unroutable,
    /// No configuration uses this config rotation codepoint.
    UnknownRotation(u8),
    /// Shorter than the configuration's CIDs.
    TooShort {
        /// The configuration, if QUIC-LB.
        rotation: Option<u8>,
        /// Octets needed.
        need: usize,
        /// Octets present.
        got: usize,
    },
    /// The first octet self-describes another length than the CID has.
    LengthMismatch {
        /// The self-described length (first octet included).
        described: usize,
        /// The CID's length.
        got: usize,
    },
    /// The server ID is not in the configuration's server ID map.
    NotAllocated {
        /// The configuration.
        rotation: u8,
        /// The server ID found.
        server_id: ServerId,
    },
}

impl fmt::Display for Undecodable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Undecodable::Empty => f.write_str("the CID is empty"),
            Undecodable::Unroutable => f.write_str(
                "config rotation bits 0b111: an unroutable CID (issued by a server without a QUIC-LB configuration)",
            ),
            Undecodable::UnknownRotation(r) => write!(
                f,
                "config rotation {r} (first octet 0b{r:03b}xxxxx): no configuration of this listener uses it"
            ),
            Undecodable::TooShort {
                rotation: Some(r),
                need,
                got,
            } => write!(
                f,
                "{got} octets, but CIDs of config rotation {r} have at least {need}"
            ),
            Undecodable::TooShort {
                rotation: None,
                need,
                got,
            } => write!(f, "{got} octets, but the prefix format needs at least {need}"),
            Undecodable::LengthMismatch { described, got } => write!(
                f,
                "the first octet describes a {described}-octet CID, but this one has {got}"
            ),
            Undecodable::NotAllocated {
                rotation,
                server_id,
            } => write!(
                f,
                "server ID {} is not allocated in config rotation {rotation}",
                hex_string(server_id.as_bytes())
            ),
        }
    }
}

impl FormatSet {
    /// QUIC-LB with `configs`, at most one per rotation codepoint, at least one.
    pub fn quic_lb(configs: Vec<QuicLbConfig>) -> Result<FormatSet, FormatError> {
        if configs.is_empty() {
            return Err(FormatError::Empty);
        }
        let mut slots: [Option<QuicLbConfig>; SLOTS] = Default::default();
        for c in configs {
            let r = c.rotation();
            let slot = &mut slots[usize::from(r)];
            if slot.is_some() {
                return Err(FormatError::DuplicateRotation(r));
            }
            *slot = Some(c);
        }
        Ok(FormatSet {
            kind: Kind::QuicLb {
                configs: Box::new(slots),
                maps: Box::default(),
            },
        })
    }

    /// The server-ID prefix format.
    pub fn prefix(format: PrefixFormat) -> FormatSet {
        FormatSet {
            kind: Kind::Prefix(format),
        }
    }

    /// Gives configuration `rotation` a server ID map: the server IDs it allocates, each
    /// with the ID the router knows its backend by. A server ID missing from the map
    /// then does not decode ([`Undecodable::NotAllocated`]).
    pub fn with_server_id_map(
        mut self,
        rotation: u8,
        map: ServerIdMap,
    ) -> Result<FormatSet, FormatError> {
        let Kind::QuicLb { configs, maps } = &mut self.kind else {
            return Err(FormatError::NoSuchRotation(rotation));
        };
        let Some(config) = configs.get(usize::from(rotation)).and_then(Option::as_ref) else {
            return Err(FormatError::NoSuchRotation(rotation));
        };
        for (i, (sid, _)) in map.iter().enumerate() {
            if sid.as_bytes().len() != config.server_id_len() {
                return Err(FormatError::MappedServerIdLength {
                    rotation,
                    expected: config.server_id_len(),
                    got: sid.as_bytes().len(),
                });
            }
            if map[..i].iter().any(|(s, _)| s == sid) {
                return Err(FormatError::DuplicateServerId {
                    rotation,
                    server_id: *sid,
                });
            }
        }
        maps[usize::from(rotation)] = Some(map);
        Ok(self)
    }

    /// The QUIC-LB configuration at `rotation`, if any.
    pub fn config(&self, rotation: u8) -> Option<&QuicLbConfig> {
        match &self.kind {
            Kind::QuicLb { configs, .. } => configs.get(usize::from(rotation))?.as_ref(),
            Kind::Prefix(_) => None,
        }
    }

    /// The QUIC-LB configurations, by rotation codepoint (none for the prefix format).
    pub fn configs(&self) -> impl Iterator<Item = &QuicLbConfig> {
        let configs: &[Option<QuicLbConfig>] = match &self.kind {
            Kind::QuicLb { configs, .. } => &configs[..],
            Kind::Prefix(_) => &[],
        };
        configs.iter().flatten()
    }

    /// The server ID map of the QUIC-LB configuration at `rotation`, if it has one
    /// ([`FormatSet::with_server_id_map`]).
    pub fn server_id_map(&self, rotation: u8) -> Option<&[(ServerId, ServerId)]> {
        match &self.kind {
            Kind::QuicLb { maps, .. } => maps.get(usize::from(rotation))?.as_deref(),
            Kind::Prefix(_) => None,
        }
    }

    /// The prefix format, if that is this set's format.
    pub fn prefix_format(&self) -> Option<PrefixFormat> {
        match &self.kind {
            Kind::Prefix(p) => Some(*p),
            Kind::QuicLb { .. } => None,
        }
    }

    /// The CID length that the CID starting at `at` declares or that its configuration
    /// fixes; `None` leaves it to the listener's fixed length.
    ///
    /// * a configured rotation with length self-description: the first octet's length;
    /// * a configured rotation without: the configuration's CID length;
    /// * rotation 0b111 (unroutable CIDs, which "MUST self-encode their length"): the
    ///   first octet's length, but only when every configuration self-describes too.
    ///   Otherwise the listener may also carry CIDs from servers that do not use
    ///   QUIC-LB, and one in eight of their random first octets starts with 0b111;
    /// * anything else, and the prefix format: `None`.
    pub fn cid_len(&self, at: &[u8]) -> Option<usize> {
        let Kind::QuicLb { configs, .. } = &self.kind else {
            return None;
        };
        let first = *at.first()?;
        let r = rotation_of(first);
        if r == UNROUTABLE_ROTATION {
            let all = configs.iter().flatten().all(|c| c.self_describing_length());
            return all.then(|| described_len(first));
        }
        let c = configs[usize::from(r)].as_ref()?;
        Some(if c.self_describing_length() {
            described_len(first)
        } else {
            c.cid_len()
        })
    }

    /// Decodes `cid`, or says why it does not decode.
    pub fn decode(&self, cid: &[u8]) -> Result<Decoded, Undecodable> {
        let first = *cid.first().ok_or(Undecodable::Empty)?;
        match &self.kind {
            Kind::Prefix(p) => {
                let sid = p.decode(cid).ok_or(Undecodable::TooShort {
                    rotation: None,
                    need: p.server_id_len() + 1,
                    got: cid.len(),
                })?;
                Ok(Decoded {
                    rotation: None,
                    server_id: sid,
                    routing_id: sid,
                })
            }
            Kind::QuicLb { configs, maps } => {
                let r = rotation_of(first);
                if r == UNROUTABLE_ROTATION {
                    return Err(Undecodable::Unroutable);
                }
                let c = configs[usize::from(r)]
                    .as_ref()
                    .ok_or(Undecodable::UnknownRotation(r))?;
                if c.self_describing_length() && described_len(first) != cid.len() {
                    return Err(Undecodable::LengthMismatch {
                        described: described_len(first),
                        got: cid.len(),
                    });
                }
                let sid = c.decode(cid).ok_or(Undecodable::TooShort {
                    rotation: Some(r),
                    need: c.cid_len(),
                    got: cid.len(),
                })?;
                let routing_id = match &maps[usize::from(r)] {
                    None => sid,
                    Some(map) => map
                        .iter()
                        .find(|(s, _)| *s == sid)
                        .map(|&(_, routing)| routing)
                        .ok_or(Undecodable::NotAllocated {
                            rotation: r,
                            server_id: sid,
                        })?,
                };
                Ok(Decoded {
                    rotation: Some(r),
                    server_id: sid,
                    routing_id,
                })
            }
        }
    }
}

impl CidFormat for FormatSet {
    fn cid_len(&self, at: &[u8]) -> Option<usize> {
        FormatSet::cid_len(self, at)
    }

    fn server_id(&self, cid: &[u8]) -> Option<ServerId> {
        self.decode(cid).ok().map(|d| d.routing_id)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::QuicLbParams;

    fn config(rotation: u8, sid: usize, nonce: usize, sd: bool) -> QuicLbConfig {
        QuicLbConfig::new(QuicLbParams {
            rotation,
            server_id_len: sid,
            nonce_len: nonce,
            key: Some([rotation; 16]),
            self_describing_length: sd,
        })
        .unwrap()
    }

    fn sid(b: &[u8]) -> ServerId {
        ServerId::new(b).unwrap()
    }

    #[test]
    fn rotation_selects_the_configuration() {
        let c0 = config(0, 1, 4, false);
        let c1 = config(1, 2, 6, false);
        let set = FormatSet::quic_lb(vec![c0.clone(), c1.clone()]).unwrap();
        let a = c0.encode(&[7], &[1, 2, 3, 4], 0).unwrap();
        let b = c1.encode(&[7, 8], &[1, 2, 3, 4, 5, 6], 0).unwrap();
        assert_eq!(set.decode(&a).unwrap().server_id, sid(&[7]));
        assert_eq!(set.decode(&b).unwrap().server_id, sid(&[7, 8]));
        assert_eq!(set.decode(&b).unwrap().rotation, Some(1));
        assert_eq!(set.cid_len(&a), Some(6));
        assert_eq!(set.cid_len(&b), Some(9));
        // Rotation 2 has no configuration: unroutable, length left to the listener.
        let mut c = b.as_bytes().to_vec();
        c[0] = 0x40;
        assert_eq!(set.decode(&c), Err(Undecodable::UnknownRotation(2)));
        assert_eq!(set.cid_len(&c), None);
        assert_eq!(CidFormat::server_id(&set, &c), None);
        // The same octets under rotation 1 with another key decode to something else:
        // a CID of one configuration is never read with another's parameters.
        let set1 = FormatSet::quic_lb(vec![c1.clone()]).unwrap();
        assert_eq!(set1.decode(&a), Err(Undecodable::UnknownRotation(0)));
        assert_eq!(
            FormatSet::quic_lb(vec![c0.clone(), c0.clone()]).unwrap_err(),
            FormatError::DuplicateRotation(0)
        );
        assert_eq!(FormatSet::quic_lb(vec![]).unwrap_err(), FormatError::Empty);
    }

    #[test]
    fn unroutable_codepoint() {
        let sd = FormatSet::quic_lb(vec![config(0, 1, 4, true)]).unwrap();
        let fixed = FormatSet::quic_lb(vec![config(0, 1, 4, false)]).unwrap();
        let cid = [0b111_00111, 1, 2, 3, 4, 5, 6, 7];
        assert_eq!(sd.decode(&cid), Err(Undecodable::Unroutable));
        assert_eq!(fixed.decode(&cid), Err(Undecodable::Unroutable));
        // Self-described length only when every configuration self-describes.
        assert_eq!(sd.cid_len(&cid), Some(8));
        assert_eq!(fixed.cid_len(&cid), None);
        assert_eq!(sd.decode(&[]), Err(Undecodable::Empty));
    }

    #[test]
    fn length_checks() {
        let c = config(3, 2, 5, true);
        let set = FormatSet::quic_lb(vec![c.clone()]).unwrap();
        let cid = c.encode(&[1, 2], &[0; 5], 0).unwrap();
        assert_eq!(set.cid_len(&cid), Some(8));
        assert_eq!(
            set.decode(&cid[..7]),
            Err(Undecodable::LengthMismatch {
                described: 8,
                got: 7
            })
        );
        let fixed = config(3, 2, 5, false);
        let set = FormatSet::quic_lb(vec![fixed]).unwrap();
        assert_eq!(
            set.decode(&cid[..7]),
            Err(Undecodable::TooShort {
                rotation: Some(3),
                need: 8,
                got: 7
            })
        );
        assert!(Undecodable::TooShort {
            rotation: Some(3),
            need: 8,
            got: 7
        }
        .to_string()
        .contains("at least 8"));
    }

    #[test]
    fn server_id_maps() {
        let c0 = config(0, 1, 4, false);
        let c1 = config(1, 2, 4, false);
        // Backend "a" is 01 under rotation 0 and 0a01 under rotation 1; the router knows
        // it as 01.
        let set = FormatSet::quic_lb(vec![c0.clone(), c1.clone()])
            .unwrap()
            .with_server_id_map(1, vec![(sid(&[0x0a, 0x01]), sid(&[0x01]))])
            .unwrap();
        let new = c1.encode(&[0x0a, 0x01], &[9; 4], 0).unwrap();
        let d = set.decode(&new).unwrap();
        assert_eq!(
            (d.server_id, d.routing_id),
            (sid(&[0x0a, 0x01]), sid(&[0x01]))
        );
        let stray = c1.encode(&[0x0a, 0x02], &[9; 4], 0).unwrap();
        assert_eq!(
            set.decode(&stray),
            Err(Undecodable::NotAllocated {
                rotation: 1,
                server_id: sid(&[0x0a, 0x02])
            })
        );
        // Rotation 0 has no map: IDs pass through.
        let old = c0.encode(&[0x01], &[9; 4], 0).unwrap();
        assert_eq!(set.decode(&old).unwrap().routing_id, sid(&[0x01]));
        let bad = FormatSet::quic_lb(vec![c1.clone()]).unwrap();
        assert_eq!(
            bad.clone()
                .with_server_id_map(1, vec![(sid(&[1]), sid(&[1]))])
                .unwrap_err(),
            FormatError::MappedServerIdLength {
                rotation: 1,
                expected: 2,
                got: 1
            }
        );
        assert_eq!(
            bad.clone()
                .with_server_id_map(
                    1,
                    vec![(sid(&[1, 1]), sid(&[1])), (sid(&[1, 1]), sid(&[2]))]
                )
                .unwrap_err(),
            FormatError::DuplicateServerId {
                rotation: 1,
                server_id: sid(&[1, 1])
            }
        );
        assert_eq!(
            bad.with_server_id_map(4, vec![]).unwrap_err(),
            FormatError::NoSuchRotation(4)
        );
    }

    #[test]
    fn prefix_set() {
        let set = FormatSet::prefix(PrefixFormat::CALIFORNIUM);
        assert_eq!(set.cid_len(&[0xe0, 1, 2]), None);
        let d = set.decode(&[0x42, 1, 2, 3]).unwrap();
        assert_eq!((d.rotation, d.server_id), (None, sid(&[0x42])));
        assert_eq!(
            set.decode(&[0x42]),
            Err(Undecodable::TooShort {
                rotation: None,
                need: 2,
                got: 1
            })
        );
        assert_eq!(set.configs().count(), 0);
        assert_eq!(set.prefix_format(), Some(PrefixFormat::CALIFORNIUM));
    }
}
