//! Routable CIDs in the configuration: the validated `[listener.cid_format]` and
//! backend `server_id` settings, the [`FormatSet`] and router inputs built from them,
//! and their part of `check-config`'s explanation and warnings.
//!
//! The formats themselves live in the `cidlb-cidformat` crate (QUIC-LB pinned to
//! draft-ietf-quic-load-balancers-21, and the server-ID prefix format); see
//! `docs/routable-cids.md`. The `cidlb cid` commands are in `crate::cid`.

use std::fmt::Write as _;
use std::sync::Arc;

use cidlb_cidformat::{
    hex_string, parse_hex, FormatSet, PrefixFormat, QuicLbConfig, QuicLbParams, ServerId, DRAFT,
};
use cidlb_core::{CidFormat, CidRouting};

use super::{BackendConfig, ListenerConfig, RoutingMode};

/// How a listener's backends put their server ID into their CIDs
/// (`[listener.cid_format]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CidFormatConfig {
    /// `format = "quic-lb"`: one or more QUIC-LB configurations
    /// (`[[listener.cid_format.config]]`), at most one per config rotation codepoint.
    QuicLb(Vec<QuicLbParams>),
    /// `format = "prefix"`: the first `prefix_length` octets of every CID are the
    /// server ID (Eclipse Californium: 1).
    Prefix {
        /// Server ID octets at the start of the CID, `1..=15`.
        prefix_length: usize,
    },
}

/// A backend's server ID (`server_id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerIdConfig {
    /// `server_id = "0a01"`: the same in every configuration.
    All(ServerId),
    /// `server_id = { 0 = "01", 1 = "0a01" }`: one per QUIC-LB config rotation (a new
    /// configuration may allocate server IDs afresh, e.g. longer ones, or different
    /// ones for encrypted CIDs than for plaintext ones). Sorted by rotation.
    PerRotation(Vec<(u8, ServerId)>),
}

impl ServerIdConfig {
    /// The server ID in configuration `rotation` (`None`: the prefix format).
    pub fn for_rotation(&self, rotation: Option<u8>) -> Option<ServerId> {
        match (self, rotation) {
            (ServerIdConfig::All(s), _) => Some(*s),
            (ServerIdConfig::PerRotation(v), Some(r)) => {
                v.iter().find(|(x, _)| *x == r).map(|&(_, s)| s)
            }
            (ServerIdConfig::PerRotation(_), None) => None,
        }
    }

    /// The ID the router knows the backend by: the server ID, or with one per rotation,
    /// the one of its lowest rotation.
    pub fn routing_id(&self) -> ServerId {
        match self {
            ServerIdConfig::All(s) => *s,
            ServerIdConfig::PerRotation(v) => v[0].1,
        }
    }

    /// `0a01`, or `0: 01, 1: 0a01`.
    pub fn describe(&self) -> String {
        match self {
            ServerIdConfig::All(s) => hex_string(s.as_bytes()),
            ServerIdConfig::PerRotation(v) => v
                .iter()
                .map(|(r, s)| format!("{r}: {}", hex_string(s.as_bytes())))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// Parses a server ID written in hex (1 to 15 octets).
pub(crate) fn parse_server_id(text: &str) -> Result<ServerId, String> {
    parse_hex(text)
        .and_then(|b| ServerId::new(&b))
        .ok_or_else(|| {
            format!("invalid server ID {text:?}: expected 1 to 15 octets in hex, e.g. \"0a01\"")
        })
}

/// Parses an AES-128 key written as 32 hex digits. The error never echoes the key.
pub(crate) fn parse_key(text: &str) -> Result<[u8; 16], String> {
    match parse_hex(text) {
        Some(b) => b.try_into().map_err(|b: Vec<u8>| {
            format!(
                "the key has {} octets: expected 32 hex digits (a 16-octet AES-128 key)",
                b.len()
            )
        }),
        None => Err("the key is not hex: expected 32 hex digits (a 16-octet AES-128 key)".into()),
    }
}

impl ListenerConfig {
    /// The listener's CID format for encoded routing, if it has one. With per-rotation
    /// server IDs, each configuration gets a server ID map onto
    /// [`ServerIdConfig::routing_id`].
    pub fn format_set(&self) -> Option<FormatSet> {
        match self.cid_format.as_ref()? {
            CidFormatConfig::Prefix { prefix_length } => {
                Some(FormatSet::prefix(PrefixFormat::new(*prefix_length).ok()?))
            }
            CidFormatConfig::QuicLb(params) => {
                let configs = params
                    .iter()
                    .map(|p| QuicLbConfig::new(*p))
                    .collect::<Result<Vec<_>, _>>()
                    .ok()?;
                let mut set = FormatSet::quic_lb(configs).ok()?;
                let per_rotation = self
                    .backends
                    .iter()
                    .any(|b| matches!(b.server_id, Some(ServerIdConfig::PerRotation(_))));
                if per_rotation {
                    for p in params {
                        let map = self
                            .backends
                            .iter()
                            .filter_map(|b| b.server_id.as_ref())
                            .filter_map(|s| {
                                Some((s.for_rotation(Some(p.rotation))?, s.routing_id()))
                            })
                            .collect();
                        set = set.with_server_id_map(p.rotation, map).ok()?;
                    }
                }
                Some(set)
            }
        }
    }

    /// How the router finds CIDs and whether they are routable: the fixed
    /// `cid_length` (if any) and the format (if any).
    pub fn cid_routing(&self) -> CidRouting {
        match self.format_set() {
            Some(set) if self.routing == RoutingMode::Cid => CidRouting {
                fixed_len: self.cid_length,
                format: Some(Arc::new(set) as Arc<dyn CidFormat>),
            },
            _ => CidRouting::fixed(self.cid_length.unwrap_or(0)),
        }
    }

    /// The server ID the router knows `backend` by, when this listener has a format.
    pub fn backend_server_id(&self, backend: &BackendConfig) -> Option<ServerId> {
        self.cid_format.as_ref()?;
        backend.server_id.as_ref().map(ServerIdConfig::routing_id)
    }
}

/// The rotations of a listener's QUIC-LB configurations, for messages: "0, 1".
pub(crate) fn rotations(params: &[QuicLbParams]) -> String {
    params
        .iter()
        .map(|p| p.rotation.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn mode_text(p: &QuicLbParams) -> String {
    match QuicLbConfig::new(*p) {
        Ok(c) => c.mode().to_string(),
        Err(e) => e.to_string(),
    }
}

/// `check-config`'s lines about a listener's CID format (nothing without one).
pub(crate) fn explain_listener(o: &mut String, l: &ListenerConfig) {
    let Some(f) = &l.cid_format else { return };
    match f {
        CidFormatConfig::QuicLb(params) => {
            let _ = writeln!(
                o,
                "  Routable CIDs: QUIC-LB ({DRAFT}); a CID whose config rotation, server ID and backend all check"
            );
            let _ = writeln!(
                o,
                "    out is routed statelessly (encoded), before any learned binding; any other CID falls through (counted)."
            );
            for p in params {
                let len = if p.self_describing_length {
                    "length in the first octet".to_owned()
                } else {
                    format!("{}-octet CIDs", 1 + p.server_id_len + p.nonce_len)
                };
                let _ = writeln!(
                    o,
                    "    config rotation {} (first octet 0b{:03b}xxxxx): {}-octet server IDs, {}-octet nonces, {}, {len}",
                    p.rotation,
                    p.rotation,
                    p.server_id_len,
                    p.nonce_len,
                    mode_text(p),
                );
            }
        }
        CidFormatConfig::Prefix { prefix_length } => {
            let _ = writeln!(
                o,
                "  Routable CIDs: the first {prefix_length} octet{} of every CID {} the backend's server ID (Eclipse Californium: 1);",
                if *prefix_length == 1 { "" } else { "s" },
                if *prefix_length == 1 { "is" } else { "are" },
            );
            let _ = writeln!(
                o,
                "    such CIDs are routed statelessly (encoded), before any learned binding; others fall through (counted)."
            );
        }
    }
    let with: Vec<String> = l
        .backends
        .iter()
        .filter_map(|b| Some(format!("{} = {}", b.name, b.server_id.as_ref()?.describe())))
        .collect();
    if with.is_empty() {
        let _ = writeln!(
            o,
            "    No backend has a server_id: nothing is routed by encoding."
        );
    } else {
        let _ = writeln!(o, "    Server IDs: {}", with.join("; "));
    }
}

/// Likely mistakes with routable CIDs on listener `l`.
pub(crate) fn warnings(l: &ListenerConfig, w: &mut Vec<String>) {
    let Some(f) = &l.cid_format else {
        if l.backends.iter().any(|b| b.server_id.is_some()) {
            w.push(format!(
                "listener {:?}: backends have a server_id but the listener has no [listener.cid_format]: server IDs are unused",
                l.name
            ));
        }
        return;
    };
    if l.routing == RoutingMode::Address {
        w.push(format!(
            "listener {:?}: cid_format has no effect with routing = \"address\"",
            l.name
        ));
    }
    let missing: Vec<&str> = l
        .backends
        .iter()
        .filter(|b| b.server_id.is_none())
        .map(|b| b.name.as_str())
        .collect();
    if !missing.is_empty() && missing.len() < l.backends.len() {
        w.push(format!(
            "listener {:?}: backends without server_id ({}) are reached by learned routing only: their sessions do not survive a balancer restart or a move to another instance",
            l.name,
            missing.join(", ")
        ));
    } else if missing.len() == l.backends.len() {
        w.push(format!(
            "listener {:?} has a cid_format but no backend has a server_id: nothing is routed by encoding",
            l.name
        ));
    }
    if let CidFormatConfig::QuicLb(params) = f {
        if l.cid_length.is_none() && !params.iter().all(|p| p.self_describing_length) {
            w.push(format!(
                "listener {:?}: without cid_length, CIDs of other config rotations than {} cannot be parsed and are dropped (set cid_length to the length of CIDs not issued by QUIC-LB)",
                l.name,
                rotations(params)
            ));
        }
        for p in params {
            if p.key.is_none() {
                w.push(format!(
                    "listener {:?}: config rotation {} has no key: anyone can read the server ID in its CIDs and link a device's addresses",
                    l.name, p.rotation
                ));
            }
            let len = 1 + p.server_id_len + p.nonce_len;
            if let Some(n) = l.cid_length {
                if !p.self_describing_length && n != len {
                    w.push(format!(
                        "listener {:?}: config rotation {} makes {len}-octet CIDs but cid_length = {n}: CIDs of that rotation are read as {len} octets (is the servers' DTLS CID length {len}?)",
                        l.name, p.rotation
                    ));
                }
            }
        }
    }
}
