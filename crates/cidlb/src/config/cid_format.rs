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
    pub(super) fn cid_format(&self, p: &str, rf: &RawCidFormat) -> R<crate::cid::CidFormatConfig> {
        use crate::cid::CidFormatConfig;
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
                    let key = match &rc.key {
                        None => None,
                        Some(s) => Some(
                            crate::cid::parse_key(s.get_ref())
                                .map_err(|e| self.invalid(&format!("{cp}.key"), s, e))?,
                        ),
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
        format: Option<&crate::cid::CidFormatConfig>,
        cid_length: Option<usize>,
        backends: &mut [BackendConfig],
    ) -> R<()> {
        use crate::cid::{parse_server_id, CidFormatConfig, ServerIdConfig};
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
