//! The raw serde model of the TOML file: every key optional and carrying its span,
//! unknown keys rejected. `validate` turns it into the public types.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub(super) type Sp<T> = Option<Spanned<T>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) workers: Sp<i64>,
    pub(super) timeouts: Option<RawTimeouts>,
    pub(super) limits: Option<RawLimits>,
    pub(super) hashing: Option<RawHashing>,
    pub(super) health: Option<RawHealth>,
    pub(super) admin: Option<RawAdmin>,
    pub(super) log: Option<RawLog>,
    pub(super) resolver: Option<RawResolver>,
    #[serde(default, rename = "listener")]
    pub(super) listeners: Vec<RawListener>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub(super) enabled: Sp<bool>,
    pub(super) interval: Sp<RawDuration>,
    pub(super) timeout: Sp<RawDuration>,
    pub(super) rise: Sp<i64>,
    pub(super) fall: Sp<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResolver {
    pub(super) servers: Option<Vec<Spanned<String>>>,
    pub(super) interval: Sp<RawDuration>,
    pub(super) timeout: Sp<RawDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) format: Option<Spanned<RawLogFormat>>,
    pub(super) events_per_second: Sp<i64>,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawLogFormat {
    Plain,
    Json,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) enabled: Sp<bool>,
    pub(super) address: Sp<String>,
    pub(super) state_file: Sp<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub(super) flow_idle: Sp<RawDuration>,
    pub(super) cid_binding_idle: Sp<RawDuration>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_flows: Sp<i64>,
    pub(super) max_bindings: Sp<i64>,
    pub(super) new_flows_per_source: Sp<i64>,
    pub(super) new_flows_burst: Sp<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHashing {
    pub(super) seed: Sp<i64>,
    pub(super) maglev_table_size: Sp<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    pub(super) name: Sp<String>,
    pub(super) address: Sp<String>,
    pub(super) cid_length: Sp<i64>,
    pub(super) multi_cid: Sp<RawMultiCid>,
    pub(super) routing: Sp<RawRouting>,
    pub(super) upstream_source: Sp<String>,
    pub(super) upstream: Sp<RawUpstream>,
    pub(super) reply_fwmark: Sp<i64>,
    pub(super) forwarding: Sp<RawForwarding>,
    pub(super) interface: Sp<RawInterfaces>,
    pub(super) xdp_mode: Sp<RawXdpMode>,
    pub(super) pin_dir: Sp<String>,
    pub(super) keep_pinned: Sp<bool>,
    pub(super) cid_format: Option<RawCidFormat>,
    #[serde(default, rename = "backend")]
    pub(super) backends: Vec<RawBackend>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub(super) name: Sp<String>,
    pub(super) address: Sp<String>,
    pub(super) weight: Sp<i64>,
    pub(super) state: Sp<RawState>,
    pub(super) server_id: Sp<RawServerId>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawMultiCid {
    First,
    Split,
    Drop,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawRouting {
    Cid,
    Address,
}

#[derive(Deserialize, Clone, Copy)]
pub(super) enum RawForwarding {
    #[serde(rename = "nat")]
    Nat,
    #[serde(rename = "xdp-dr")]
    XdpDr,
}

/// `interface = "eth0"` or `interface = ["eth0", "eth1"]`.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum RawInterfaces {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawXdpMode {
    Native,
    Generic,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawUpstream {
    Nat,
    Transparent,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawState {
    Up,
    Draining,
    Down,
}

/// `[listener.cid_format]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCidFormat {
    pub(super) format: Sp<RawFormatKind>,
    pub(super) prefix_length: Sp<i64>,
    #[serde(default, rename = "config")]
    pub(super) configs: Vec<RawQuicLbConfig>,
}

#[derive(Deserialize, Clone, Copy)]
pub(super) enum RawFormatKind {
    #[serde(rename = "quic-lb")]
    QuicLb,
    #[serde(rename = "prefix")]
    Prefix,
}

/// `[[listener.cid_format.config]]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQuicLbConfig {
    pub(super) rotation: Sp<i64>,
    pub(super) server_id_length: Sp<i64>,
    pub(super) nonce_length: Sp<i64>,
    pub(super) key: Sp<String>,
    pub(super) key_file: Sp<String>,
    pub(super) self_describing_length: Sp<bool>,
}

/// A backend's `server_id`: `"0a01"` or `{ 0 = "01", 1 = "0a01" }`.
pub(super) enum RawServerId {
    One(String),
    PerRotation(Vec<(String, String)>),
}

impl<'de> Deserialize<'de> for RawServerId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawServerId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a server ID in hex (\"0a01\") or a table of them by config rotation ({ 0 = \"01\", 1 = \"0a01\" })",
                )
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RawServerId, E> {
                Ok(RawServerId::One(s.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<RawServerId, A::Error> {
                let mut v = Vec::new();
                while let Some(entry) = m.next_entry::<String, String>()? {
                    v.push(entry);
                }
                Ok(RawServerId::PerRotation(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written the humantime way (`"90s"`, `"10m"`, `"24h"`, `"1h 30m"`).
#[derive(Clone, Copy)]
pub(super) struct RawDuration(pub(super) Duration);

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"90s\", \"10m\" or \"24h\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<RawDuration, E> {
                humantime::parse_duration(s).map(RawDuration).map_err(|e| {
                    E::custom(format_args!(
                        "invalid duration {s:?}: {e} (write e.g. \"90s\", \"10m\", \"24h\")"
                    ))
                })
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Err(E::custom(format_args!(
                    "{v} has no unit: write a duration string such as \"{v}s\" or \"{v}m\""
                )))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Err(E::custom(format_args!(
                    "{v} has no unit: write a duration string such as \"{v}s\" or \"{v}m\""
                )))
            }
        }
        d.deserialize_any(V)
    }
}
