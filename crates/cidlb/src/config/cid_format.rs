//! Routable CIDs: a listener's `[listener.cid_format]` and the `server_id`s of its
//! backends, checked against each other.

use super::model::{RawCidFormat, RawFormatKind, RawListener, RawServerId, Sp};
use super::validate::{Ctx, R};
use super::{BackendConfig, ConfigErrorKind};

impl Ctx<'_> {
    fn required_int(
        &self,
        path: &str,
        v: &Sp<i64>,
        range: std::ops::RangeInclusive<i64>,
        what: &str,
    ) -> R<i64> {
        match v {
            None => Err(self.missing(path, format!("required key is missing ({what})"))),
            Some(_) => self.int(path, v, range, 0),
        }
    }

    /// `[listener.cid_format]` of listener path `p`.
    /// Reads an AES-128 key from `key_file` (32 hex digits; surrounding whitespace and
    /// a final newline are fine), relative paths from the configuration file's folder.
    /// Read at start and at every reload; no error ever shows the key.
    fn key_file(&self, path: &str, f: &toml::Spanned<String>) -> R<[u8; 16]> {
        let name = f.get_ref();
        let base = std::path::Path::new(self.origin)
            .parent()
            .unwrap_or(std::path::Path::new("."));
        let file = base.join(name);
        let meta = std::fs::metadata(&file).map_err(|e| {
            self.invalid(
                path,
                f,
                format!("cannot read the key file {}: {e}", file.display()),
            )
        })?;
        if meta.len() > 4096 {
            return Err(self.invalid(
                path,
                f,
                format!(
                    "{} is not a key file ({} bytes)",
                    file.display(),
                    meta.len()
                ),
            ));
        }
        let text = std::fs::read_to_string(&file).map_err(|e| {
            self.invalid(
                path,
                f,
                format!("cannot read the key file {}: {e}", file.display()),
            )
        })?;
        super::routable::parse_key(text.trim())
            .map_err(|e| self.invalid(path, f, format!("{}: {e}", file.display())))
    }

    pub(super) fn cid_format(
        &self,
        p: &str,
        rf: &RawCidFormat,
    ) -> R<super::routable::CidFormatConfig> {
        use super::routable::CidFormatConfig;
        let fp = format!("{p}.cid_format");
        let kind = match &rf.format {
            Some(k) => *k.get_ref(),
            None => {
                return Err(self.missing(
                    &format!("{fp}.format"),
                    "required key is missing (\"quic-lb\" or \"prefix\")",
                ))
            }
        };
        match kind {
            RawFormatKind::Prefix => {
                if !rf.configs.is_empty() {
                    return Err(self.err(
                        ConfigErrorKind::InvalidValue,
                        format!("{fp}.config"),
                        "[[listener.cid_format.config]] tables belong to format = \"quic-lb\"",
                        None,
                    ));
                }
                let n = self.int(
                    &format!("{fp}.prefix_length"),
                    &rf.prefix_length,
                    1..=cidlb_cidformat::ServerId::MAX_LEN as i64,
                    1,
                )? as usize;
                Ok(CidFormatConfig::Prefix { prefix_length: n })
            }
            RawFormatKind::QuicLb => {
                if let Some(s) = &rf.prefix_length {
                    return Err(self.invalid(
                        &format!("{fp}.prefix_length"),
                        s,
                        "prefix_length belongs to format = \"prefix\"",
                    ));
                }
                if rf.configs.is_empty() {
                    return Err(self.missing(
                        &format!("{fp}.config"),
                        "format = \"quic-lb\" needs at least one [[listener.cid_format.config]] table",
                    ));
                }
                let mut out: Vec<cidlb_cidformat::QuicLbParams> = Vec::new();
                for (k, rc) in rf.configs.iter().enumerate() {
                    let cp = format!("{fp}.config[{k}]");
                    let rotation = self.required_int(
                        &format!("{cp}.rotation"),
                        &rc.rotation,
                        0..=6,
                        "the config rotation codepoint, 0..=6: the first three bits of the CIDs",
                    )? as u8;
                    if let Some(j) = out.iter().position(|o| o.rotation == rotation) {
                        let s = rc.rotation.as_ref().expect("required");
                        return Err(self.invalid(
                            &format!("{cp}.rotation"),
                            s,
                            format!(
                                "config rotation {rotation} is already used by {fp}.config[{j}]"
                            ),
                        ));
                    }
                    let server_id_len = self.required_int(
                        &format!("{cp}.server_id_length"),
                        &rc.server_id_length,
                        1..=15,
                        "octets of server ID, 1..=15",
                    )? as usize;
                    let nonce_len = self.required_int(
                        &format!("{cp}.nonce_length"),
                        &rc.nonce_length,
                        4..=18,
                        "octets of nonce, 4..=18",
                    )? as usize;
                    if server_id_len + nonce_len > 19 {
                        let s = rc.nonce_length.as_ref().expect("required");
                        return Err(self.invalid(
                            &format!("{cp}.nonce_length"),
                            s,
                            format!(
                                "server_id_length {server_id_len} + nonce_length {nonce_len} = {}: QUIC-LB allows at most 19 octets",
                                server_id_len + nonce_len
                            ),
                        ));
                    }
                    let key = match (&rc.key, &rc.key_file) {
                        (None, None) => None,
                        (Some(s), None) => Some(
                            super::routable::parse_key(s.get_ref())
                                .map_err(|e| self.invalid(&format!("{cp}.key"), s, e))?,
                        ),
                        (None, Some(f)) => Some(self.key_file(&format!("{cp}.key_file"), f)?),
                        (Some(_), Some(f)) => return Err(self.invalid(
                            &format!("{cp}.key_file"),
                            f,
                            "give the key either inline (key) or in a file (key_file), not both",
                        )),
                    };
                    out.push(cidlb_cidformat::QuicLbParams {
                        rotation,
                        server_id_len,
                        nonce_len,
                        key,
                        self_describing_length: rc
                            .self_describing_length
                            .as_ref()
                            .is_some_and(|b| *b.get_ref()),
                    });
                }
                Ok(CidFormatConfig::QuicLb(out))
            }
        }
    }

    /// Reads the backends' `server_id`s and checks them against the listener's format
    /// (lengths, rotations, uniqueness); also the prefix format against `cid_length`.
    pub(super) fn routable_cids(
        &self,
        p: &str,
        rl: &RawListener,
        format: Option<&super::routable::CidFormatConfig>,
        cid_length: Option<usize>,
        backends: &mut [BackendConfig],
    ) -> R<()> {
        use super::routable::{parse_server_id, CidFormatConfig, ServerIdConfig};
        use cidlb_cidformat::hex_string;
        if let (Some(CidFormatConfig::Prefix { prefix_length }), Some(n)) = (format, cid_length) {
            if n <= *prefix_length {
                let e = format!(
                    "prefix_length {prefix_length} leaves no octet of the {n}-octet CIDs (cid_length) for randomness"
                );
                let path = format!("{p}.cid_format.prefix_length");
                return Err(
                    match rl
                        .cid_format
                        .as_ref()
                        .and_then(|f| f.prefix_length.as_ref())
                    {
                        Some(s) => self.invalid(&path, s, e),
                        None => self.err(ConfigErrorKind::InvalidValue, path, e, None),
                    },
                );
            }
        }
        for (j, rb) in rl.backends.iter().enumerate() {
            let Some(s) = &rb.server_id else { continue };
            let sp = format!("{p}.backend[{j}].server_id");
            let parsed = match s.get_ref() {
                RawServerId::One(hex) => {
                    ServerIdConfig::All(parse_server_id(hex).map_err(|e| self.invalid(&sp, s, e))?)
                }
                RawServerId::PerRotation(entries) => {
                    if entries.is_empty() {
                        return Err(self.invalid(
                            &sp,
                            s,
                            "an empty table: give { ROTATION = \"HEX\", ... }",
                        ));
                    }
                    let mut v = Vec::with_capacity(entries.len());
                    for (key, hex) in entries {
                        let r = key.parse::<u8>().ok().filter(|r| *r <= 6).ok_or_else(|| {
                            self.invalid(
                                &sp,
                                s,
                                format!("{key:?} is not a config rotation (0..=6)"),
                            )
                        })?;
                        v.push((
                            r,
                            parse_server_id(hex).map_err(|e| self.invalid(&sp, s, e))?,
                        ));
                    }
                    v.sort_by_key(|(r, _)| *r);
                    ServerIdConfig::PerRotation(v)
                }
            };
            match (format, &parsed) {
                (Some(CidFormatConfig::Prefix { prefix_length }), ServerIdConfig::All(id)) => {
                    if id.as_bytes().len() != *prefix_length {
                        return Err(self.invalid(
                            &sp,
                            s,
                            format!(
                                "server ID {} has {} octet(s) but cid_format.prefix_length = {prefix_length}",
                                hex_string(id.as_bytes()),
                                id.as_bytes().len()
                            ),
                        ));
                    }
                }
                (Some(CidFormatConfig::Prefix { .. }), ServerIdConfig::PerRotation(_)) => {
                    return Err(self.invalid(
                        &sp,
                        s,
                        "server IDs per config rotation need format = \"quic-lb\"",
                    ));
                }
                (Some(CidFormatConfig::QuicLb(params)), ServerIdConfig::All(id)) => {
                    let n = id.as_bytes().len();
                    if let Some(c) = params.iter().find(|c| c.server_id_len != n) {
                        return Err(self.invalid(
                            &sp,
                            s,
                            format!(
                                "server ID {} has {n} octet(s) but config rotation {} uses {}-octet server IDs (give one per rotation: server_id = {{ 0 = \"..\", 1 = \"....\" }})",
                                hex_string(id.as_bytes()),
                                c.rotation,
                                c.server_id_len
                            ),
                        ));
                    }
                }
                (Some(CidFormatConfig::QuicLb(params)), ServerIdConfig::PerRotation(v)) => {
                    for (r, id) in v {
                        let Some(c) = params.iter().find(|c| c.rotation == *r) else {
                            return Err(self.invalid(
                                &sp,
                                s,
                                format!("config rotation {r} is not configured in {p}.cid_format"),
                            ));
                        };
                        if id.as_bytes().len() != c.server_id_len {
                            return Err(self.invalid(
                                &sp,
                                s,
                                format!(
                                    "server ID {} has {} octet(s) but config rotation {r} uses {}-octet server IDs",
                                    hex_string(id.as_bytes()),
                                    id.as_bytes().len(),
                                    c.server_id_len
                                ),
                            ));
                        }
                    }
                }
                (None, _) => {}
            }
            backends[j].server_id = Some(parsed);
        }
        // Unique within each configuration, and in the router's view (routing IDs).
        let scopes: Vec<Option<u8>> = match format {
            Some(CidFormatConfig::QuicLb(params)) => {
                params.iter().map(|c| Some(c.rotation)).collect()
            }
            _ => vec![None],
        };
        let dup = |j: usize, msg: String| {
            let s = rl.backends[j].server_id.as_ref().expect("parsed");
            self.invalid(&format!("{p}.backend[{j}].server_id"), s, msg)
        };
        for scope in scopes {
            let mut seen = std::collections::HashMap::new();
            for (j, b) in backends.iter().enumerate() {
                let Some(id) = b.server_id.as_ref().and_then(|s| s.for_rotation(scope)) else {
                    continue;
                };
                if let Some(k) = seen.insert(id, j) {
                    return Err(dup(
                        j,
                        format!(
                            "server ID {} is already used by {p}.backend[{k}]{}",
                            hex_string(id.as_bytes()),
                            scope.map_or(String::new(), |r| format!(" in config rotation {r}"))
                        ),
                    ));
                }
            }
        }
        let mut seen = std::collections::HashMap::new();
        for (j, b) in backends.iter().enumerate() {
            let Some(id) = b.server_id.as_ref().map(ServerIdConfig::routing_id) else {
                continue;
            };
            if let Some(k) = seen.insert(id, j) {
                return Err(dup(
                    j,
                    format!(
                        "the balancer tells backends apart by the server ID of their lowest config rotation, and {} is also that of {p}.backend[{k}]: give them different IDs there",
                        hex_string(id.as_bytes())
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{check, one_listener, parse};

    /// A listener with `format` lines in its `[listener.cid_format]` and `b0`/`b1` lines
    /// in its two backends.
    fn with_format(cid_length: &str, format: &str, b0: &str, b1: &str) -> String {
        format!(
            "[[listener]]\naddress = \"0.0.0.0:5684\"\n{cid_length}\n\
             [listener.cid_format]\n{format}\n\
             [[listener.backend]]\naddress = \"10.0.0.1:5684\"\n{b0}\n\
             [[listener.backend]]\naddress = \"10.0.0.2:5684\"\n{b1}\n"
        )
    }

    const QLB: &str = "format = \"quic-lb\"\n\
        [[listener.cid_format.config]]\nrotation = 0\nserver_id_length = 1\nnonce_length = 6\n\
        key = \"8f95f09245765f80256934e50c66207f\"\n\
        [[listener.cid_format.config]]\nrotation = 1\nserver_id_length = 2\nnonce_length = 5\n\
        self_describing_length = true\n";

    #[test]
    fn cid_format_and_server_ids() {
        use crate::config::routable::{CidFormatConfig, ServerIdConfig};
        // QUIC-LB: cid_length becomes optional; server IDs per rotation.
        let c = parse(&with_format(
            "",
            QLB,
            "server_id = { 0 = \"01\", 1 = \"0a01\" }",
            "server_id = { 1 = \"0a02\", 0 = \"02\" }",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let l = &c.listeners[0];
        assert_eq!(l.cid_length, None);
        let Some(CidFormatConfig::QuicLb(p)) = &l.cid_format else {
            panic!("{:?}", l.cid_format)
        };
        assert_eq!(
            (p[0].rotation, p[0].server_id_len, p[0].nonce_len),
            (0, 1, 6)
        );
        assert_eq!(p[0].key.map(|k| k[0]), Some(0x8f));
        assert!(!p[0].self_describing_length && p[1].self_describing_length);
        assert_eq!(p[1].key, None);
        let sid = |b: &[u8]| cidlb_cidformat::ServerId::new(b).unwrap();
        assert_eq!(
            l.backends[1].server_id,
            Some(ServerIdConfig::PerRotation(vec![
                (0, sid(&[2])),
                (1, sid(&[0x0a, 2]))
            ]))
        );
        assert!(
            c.explain().contains("Routable CIDs: QUIC-LB"),
            "{}",
            c.explain()
        );
        assert!(
            c.warnings()
                .iter()
                .any(|w| w.contains("config rotation 1 has no key")),
            "{:?}",
            c.warnings()
        );
        // Prefix (Californium): one plain server ID per backend.
        let c = parse(&with_format(
            "cid_length = 6",
            "format = \"prefix\"",
            "server_id = \"07\"",
            "",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let l = &c.listeners[0];
        assert_eq!(
            l.cid_format,
            Some(CidFormatConfig::Prefix { prefix_length: 1 })
        );
        assert_eq!(
            l.backends[0].server_id,
            Some(ServerIdConfig::All(sid(&[7])))
        );
        assert!(c
            .warnings()
            .iter()
            .any(|w| w.contains("learned routing only")));
        // A server_id without a format is only a warning.
        let c = parse(&one_listener("").replace(
            "address = \"10.0.0.1:5684\"\n",
            "address = \"10.0.0.1:5684\"\nserver_id = \"01\"\n",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(c
            .warnings()
            .iter()
            .any(|w| w.contains("server IDs are unused")));
    }

    #[test]
    fn cid_format_errors_name_the_key() {
        let q = |b0: &str, b1: &str| with_format("cid_length = 8", QLB, b0, b1);
        let cases: Vec<(String, &str, &[&str])> = vec![
            (
                with_format("", "", "", ""),
                "listener[0].cid_format.format",
                &["required key is missing (\"quic-lb\" or \"prefix\")"],
            ),
            (
                with_format("", "format = \"qlb\"", "", ""),
                "listener[0].cid_format.format",
                &["unknown value \"qlb\" (expected one of: quic-lb, prefix)"],
            ),
            (
                with_format("", "format = \"quic-lb\"", "", ""),
                "listener[0].cid_format.config",
                &["at least one [[listener.cid_format.config]]"],
            ),
            (
                with_format("", &QLB.replace("rotation = 1", "rotation = 7"), "", ""),
                "listener[0].cid_format.config[1].rotation",
                &["7 is out of range 0..=6"],
            ),
            (
                with_format("", &QLB.replace("rotation = 1", "rotation = 0"), "", ""),
                "listener[0].cid_format.config[1].rotation",
                &["config rotation 0 is already used by listener[0].cid_format.config[0]"],
            ),
            (
                with_format("", &QLB.replace("nonce_length = 5", "nonce_length = 18"), "", ""),
                "listener[0].cid_format.config[1].nonce_length",
                &["server_id_length 2 + nonce_length 18 = 20: QUIC-LB allows at most 19 octets"],
            ),
            (
                with_format("", &QLB.replace("nonce_length = 5\n", ""), "", ""),
                "listener[0].cid_format.config[1].nonce_length",
                &["required key is missing (octets of nonce, 4..=18)"],
            ),
            (
                with_format("", &QLB.replace("66207f", "66207"), "", ""),
                "listener[0].cid_format.config[0].key",
                &["not hex: expected 32 hex digits"],
            ),
            (
                with_format("", &QLB.replace("8f95f092", ""), "", ""),
                "listener[0].cid_format.config[0].key",
                &["the key has 12 octets: expected 32 hex digits"],
            ),
            (
                with_format("", &QLB.replace("rotation = 1", "rotaton = 1"), "", ""),
                "listener[0].cid_format.config[1].rotaton",
                &["unknown key", "allowed here: rotation, server_id_length, nonce_length, key, key_file, self_describing_length"],
            ),
            (
                with_format("", &QLB.replace("format = \"quic-lb\"\n", "format = \"quic-lb\"\nprefix_length = 2\n"), "", ""),
                "listener[0].cid_format.prefix_length",
                &["prefix_length belongs to format = \"prefix\""],
            ),
            (
                with_format("cid_length = 6", &QLB.replace("quic-lb", "prefix"), "", ""),
                "listener[0].cid_format.config",
                &["belong to format = \"quic-lb\""],
            ),
            (
                with_format("", "format = \"prefix\"", "", ""),
                "listener[0].cid_length",
                &["required key is missing"],
            ),
            (
                with_format("cid_length = 2", "format = \"prefix\"\nprefix_length = 2", "", ""),
                "listener[0].cid_format.prefix_length",
                &["leaves no octet of the 2-octet CIDs"],
            ),
            (
                with_format("cid_length = 6", "format = \"prefix\"", "server_id = \"0a01\"", ""),
                "listener[0].backend[0].server_id",
                &["server ID 0a01 has 2 octet(s) but cid_format.prefix_length = 1"],
            ),
            (
                q("server_id = \"01\"", ""),
                "listener[0].backend[0].server_id",
                &["server ID 01 has 1 octet(s) but config rotation 1 uses 2-octet server IDs", "one per rotation"],
            ),
            (
                q("server_id = { 0 = \"01\", 2 = \"0a01\" }", ""),
                "listener[0].backend[0].server_id",
                &["config rotation 2 is not configured in listener[0].cid_format"],
            ),
            (
                q("server_id = { 0 = \"01\", 1 = \"0a01\" }", "server_id = { 0 = \"02\", 1 = \"0a01\" }"),
                "listener[0].backend[1].server_id",
                &["server ID 0a01 is already used by listener[0].backend[0] in config rotation 1"],
            ),
            (
                q("server_id = { x = \"01\" }", ""),
                "listener[0].backend[0].server_id",
                &["\"x\" is not a config rotation (0..=6)"],
            ),
            (
                q("server_id = \"zz\"", ""),
                "listener[0].backend[0].server_id",
                &["invalid server ID \"zz\": expected 1 to 15 octets in hex"],
            ),
            (
                q("server_id = 1", ""),
                "listener[0].backend[0].server_id",
                &["expected a server ID in hex"],
            ),
        ];
        for (text, path, fragments) in cases {
            let e = check(&text, path, fragments);
            assert!(
                !e.to_string().contains("8f95f092"),
                "a key in an error: {e}"
            );
        }
    }
}
