//! The `cidlb cid encode` / `cidlb cid decode` commands: routable CIDs of a
//! configuration's listener, made and read by hand. The configuration side of routable
//! CIDs (`[listener.cid_format]`, `server_id`) is `crate::config::routable`.
//!
//! The formats themselves live in the `cidlb-cidformat` crate (QUIC-LB pinned to
//! draft-ietf-quic-load-balancers-21, and the server-ID prefix format); see
//! `docs/routable-cids.md`.

use std::fmt::Write as _;

use cidlb_cidformat::{hex_string, parse_cid, CidGenerator, DRAFT};
use cidlb_core::BackendState;

use crate::config::routable::rotations;
use crate::config::{parse_server_id, CidFormatConfig, Config, ListenerConfig};

// ------------------------------------------------------------------ cidlb cid ...

/// `cidlb cid keygen`: 16 random octets from the OS, as 32 hex digits.
pub fn keygen() -> Result<String, String> {
    let mut k = [0u8; 16];
    getrandom::getrandom(&mut k).map_err(|e| format!("no randomness from the OS: {e}"))?;
    Ok(hex_string(&k))
}

/// Writes `key` and a newline to a new file at `path` that only its owner can read
/// (an existing file is an error: keys are not overwritten by accident).
pub fn write_key_file(path: &std::path::Path, key: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    writeln!(f, "{key}").map_err(|e| format!("cannot write {}: {e}", path.display()))
}

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
    let bytes = parse_cid(cid)?.as_bytes().to_vec();
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
    use crate::config::routable::{explain_listener, warnings};
    use cidlb_cidformat::ServerId;
    use cidlb_core::CidFormat;

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
        // The same CID text as the admin API's lookups accept (`parse_cid`).
        let cid = encode(&c, None, "01", Some(0), 1).unwrap();
        let hex = cid.trim();
        let spaced: Vec<String> = (0..hex.len() / 2)
            .map(|i| hex[2 * i..2 * i + 2].to_uppercase())
            .collect();
        let shown = decode(&c, None, &format!("0x{}", spaced.join(":"))).unwrap();
        assert!(shown.contains("backend:   a "), "{shown}");
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
