//! Routable CIDs in the daemon: the validated `[listener.cid_format]` and backend
//! `server_id` settings, the [`FormatSet`] and router inputs built from them, their part
//! of `check-config`'s explanation, and the `cidlb cid encode` / `cidlb cid decode`
//! commands.
//!
//! The formats themselves live in the `cidlb-cidformat` crate (QUIC-LB pinned to
//! draft-ietf-quic-load-balancers-21, and the server-ID prefix format); see
//! `docs/routable-cids.md`.

use std::fmt::Write as _;
use std::sync::Arc;

use cidlb_cidformat::{
    hex_string, parse_hex, CidGenerator, FormatSet, PrefixFormat, QuicLbConfig, QuicLbParams,
    ServerId, DRAFT,
};
use cidlb_core::{BackendState, CidFormat, CidRouting};

use crate::config::{BackendConfig, Config, ListenerConfig, RoutingMode};

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
fn rotations(params: &[QuicLbParams]) -> String {
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

// ------------------------------------------------------------------ cidlb cid ...

/// The listener named `name`, else the only listener with a CID format.
fn pick_listener<'a>(cfg: &'a Config, name: Option<&str>) -> Result<&'a ListenerConfig, String> {
    if let Some(n) = name {
        let l = cfg
            .listeners
            .iter()
            .find(|l| l.name == n)
            .ok_or_else(|| format!("no listener is named {n:?}"))?;
        if l.cid_format.is_none() {
            return Err(format!(
                "listener {n:?} has no [listener.cid_format]: its CIDs are not routable"
            ));
        }
        return Ok(l);
    }
    let with: Vec<&ListenerConfig> = cfg
        .listeners
        .iter()
        .filter(|l| l.cid_format.is_some())
        .collect();
    match with.as_slice() {
        [] => Err("no listener has a [listener.cid_format]".into()),
        [one] => Ok(one),
        many => Err(format!(
            "several listeners have a cid_format ({}): choose one with --listener NAME",
            many.iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `cidlb cid encode`: `count` new CIDs for `server_id` (hex), one per line.
pub fn encode(
    cfg: &Config,
    listener: Option<&str>,
    server_id: &str,
    rotation: Option<u8>,
    count: usize,
) -> Result<String, String> {
    let l = pick_listener(cfg, listener)?;
    let set = l
        .format_set()
        .ok_or("the listener's CID format is invalid")?;
    let sid = parse_server_id(server_id)?;
    let rotation = match (l.cid_format.as_ref(), rotation) {
        (Some(CidFormatConfig::QuicLb(params)), None) => match params.as_slice() {
            [one] => Some(one.rotation),
            _ => {
                return Err(format!(
                    "listener {:?} has several configurations (rotations {}): choose one with --rotation N",
                    l.name,
                    rotations(params)
                ))
            }
        },
        (_, r) => r,
    };
    let mut g = CidGenerator::for_set(&set, rotation, sid.as_bytes(), l.cid_length)
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    for _ in 0..count {
        let cid = g.next_cid().map_err(|e| e.to_string())?;
        let _ = writeln!(out, "{cid}");
    }
    Ok(out)
}

/// `cidlb cid decode`: what `cid` (hex) decodes to on the listener, and which backend
/// it reaches. `Err` (exit status 1) when it does not reach a backend by encoding; the
/// text then says why.
pub fn decode(cfg: &Config, listener: Option<&str>, cid: &str) -> Result<String, String> {
    let l = pick_listener(cfg, listener)?;
    let set = l
        .format_set()
        .ok_or("the listener's CID format is invalid")?;
    let bytes = parse_hex(cid).ok_or_else(|| format!("{cid:?} is not hex"))?;
    let mut o = String::new();
    let _ = writeln!(o, "listener:  {}", l.name);
    let _ = writeln!(
        o,
        "cid:       {} ({} octets)",
        hex_string(&bytes),
        bytes.len()
    );
    if let Some(n) = set.cid_len(&bytes) {
        if n != bytes.len() {
            let _ = writeln!(
                o,
                "note:      its first octet makes it a {n}-octet CID for this listener"
            );
        }
    }
    match l.cid_format.as_ref() {
        Some(CidFormatConfig::Prefix { prefix_length }) => {
            let _ = writeln!(o, "format:    prefix ({prefix_length}-octet server ID)");
        }
        _ => {
            let _ = writeln!(o, "format:    quic-lb ({DRAFT})");
        }
    }
    let d = match set.decode(&bytes) {
        Ok(d) => d,
        Err(e) => {
            let _ = writeln!(o, "result:    does not decode: {e}");
            let _ = writeln!(
                o,
                "           (cidlb routes it by learned binding, flow or hash instead)"
            );
            return Err(o);
        }
    };
    if let Some(r) = d.rotation {
        let c = set.config(r).expect("decoded by it");
        let _ = writeln!(
            o,
            "rotation:  {r} ({}, {}-octet server IDs, {}-octet nonces)",
            c.mode(),
            c.server_id_len(),
            c.nonce_len()
        );
        if let Some((_, nonce)) = c.decode_full(&bytes) {
            let _ = writeln!(o, "nonce:     {}", hex_string(&nonce));
        }
    }
    let _ = writeln!(o, "server id: {}", hex_string(d.server_id.as_bytes()));
    let backend = l
        .backends
        .iter()
        .find(|b| l.backend_server_id(b) == Some(d.routing_id));
    match backend {
        Some(b) => {
            let state = match b.state {
                BackendState::Up => "up",
                BackendState::Draining => "draining",
                BackendState::Down => "down: its traffic falls through to other routing",
            };
            let _ = writeln!(
                o,
                "backend:   {} ({}, {state} in this file)",
                b.name, b.address
            );
            if b.state == BackendState::Down {
                return Err(o);
            }
            Ok(o)
        }
        None => {
            let _ = writeln!(
                o,
                "backend:   none: no backend of listener {:?} has this server ID (cidlb counts it as encoded_unknown_server and routes it by learned binding, flow or hash)",
                l.name
            );
            Err(o)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
        [[listener]]
        name = "coaps"
        address = "127.0.0.1:5684"
        cid_length = 9

          [listener.cid_format]
          format = "quic-lb"

            [[listener.cid_format.config]]
            rotation = 0
            server_id_length = 1
            nonce_length = 7

            [[listener.cid_format.config]]
            rotation = 1
            server_id_length = 2
            nonce_length = 6
            key = "8f95f09245765f80256934e50c66207f"

          [[listener.backend]]
          name = "a"
          address = "127.0.0.1:6001"
          server_id = { 0 = "01", 1 = "0a01" }

          [[listener.backend]]
          name = "b"
          address = "127.0.0.1:6002"
          server_id = { 0 = "02", 1 = "0a02" }
    "#;

    fn cfg() -> Config {
        Config::from_toml_str(TOML, "t.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn encode_then_decode_per_rotation() {
        let c = cfg();
        let err = encode(&c, None, "0a01", None, 1).unwrap_err();
        assert!(err.contains("--rotation"), "{err}");
        let cid = encode(&c, None, "0a02", Some(1), 1).unwrap();
        let shown = decode(&c, Some("coaps"), cid.trim()).unwrap();
        assert!(shown.contains("rotation:  1 (four-pass"), "{shown}");
        assert!(shown.contains("server id: 0a02"), "{shown}");
        assert!(
            shown.contains("backend:   b (127.0.0.1:6002, up"),
            "{shown}"
        );
        let cid = encode(&c, None, "01", Some(0), 3).unwrap();
        assert_eq!(cid.lines().count(), 3);
        let shown = decode(&c, None, cid.lines().next().unwrap()).unwrap();
        assert!(shown.contains("backend:   a "), "{shown}");
        assert!(shown.contains("plaintext"), "{shown}");
        // An ID nobody has, and a CID of an unknown rotation.
        let cid = encode(&c, None, "0a09", Some(1), 1).unwrap();
        let shown = decode(&c, None, cid.trim()).unwrap_err();
        assert!(
            shown.contains("not allocated in config rotation 1"),
            "{shown}"
        );
        let shown = decode(&c, None, "4012345678abcdef00").unwrap_err();
        assert!(shown.contains("config rotation 2"), "{shown}");
        let shown = decode(&c, None, "e012345678abcdef00").unwrap_err();
        assert!(shown.contains("unroutable"), "{shown}");
        assert!(encode(&c, None, "0a01", Some(5), 1).is_err());
        assert!(encode(&c, Some("nope"), "0a01", Some(1), 1).is_err());
        assert!(decode(&c, None, "xyz").is_err());
    }

    #[test]
    fn routing_ids_must_differ() {
        // Two configurations with 1-octet IDs: a has 01 only in rotation 1, b has 01
        // only in rotation 0. Each configuration is fine, but the router would know
        // both backends as 01.
        let text = TOML
            .replace("server_id_length = 2", "server_id_length = 1")
            .replace("{ 0 = \"01\", 1 = \"0a01\" }", "{ 1 = \"01\" }")
            .replace("{ 0 = \"02\", 1 = \"0a02\" }", "{ 0 = \"01\" }");
        let e = Config::from_toml_str(&text, "t.toml").unwrap_err();
        assert_eq!(e.path(), Some("listener[0].backend[1].server_id"), "{e}");
        assert!(e.to_string().contains("lowest config rotation"), "{e}");
    }

    #[test]
    fn routing_inputs() {
        let c = cfg();
        let l = &c.listeners[0];
        let set = l.format_set().unwrap();
        assert_eq!(set.configs().count(), 2);
        let r = l.cid_routing();
        assert_eq!(r.fixed_len, Some(9));
        assert!(r.format.is_some());
        // Backend a is known to the router by its lowest rotation's ID, 01, whatever
        // rotation its CID uses.
        assert_eq!(l.backend_server_id(&l.backends[0]), ServerId::new(&[0x01]));
        let mut g = CidGenerator::for_set(&set, Some(1), &[0x0a, 0x01], None).unwrap();
        let cid = g.next_cid().unwrap();
        assert_eq!(CidFormat::server_id(&set, &cid), ServerId::new(&[0x01]));
        let mut explained = String::new();
        explain_listener(&mut explained, l);
        assert!(explained.contains("config rotation 1 (first octet 0b001xxxxx): 2-octet server IDs, 6-octet nonces, four-pass AES-128 Feistel, 9-octet CIDs"), "{explained}");
        assert!(explained.contains("a = 0: 01, 1: 0a01"), "{explained}");
        let mut w = Vec::new();
        warnings(l, &mut w);
        assert!(
            w.iter().any(|w| w.contains("config rotation 0 has no key")),
            "{w:?}"
        );
        assert!(!w.iter().any(|w| w.contains("makes")), "{w:?}");
    }
}
