//! Validation: turning the raw model into a [`Config`], every default filled in and
//! every rule checked, with errors that name the key path and, when known, the line.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use cidlb_core::{BackendState, MultiCidPolicy};
use toml::Spanned;

use super::model::{
    RawAdmin, RawBackend, RawConfig, RawDuration, RawForwarding, RawHashing, RawHealth,
    RawInterfaces, RawLimits, RawListener, RawLogFormat, RawMultiCid, RawRouting, RawState,
    RawUpstream, RawXdpMode, Sp,
};
use super::shown;
use super::{
    fmt_duration, AdminConfig, BackendConfig, Config, ConfigError, ConfigErrorKind, Forwarding,
    Hashing, HealthConfig, Limits, ListenerConfig, Location, RoutingMode, Timeouts, UpstreamMode,
    XdpAttachMode, XdpDr, DEFAULT_CID_BINDING_IDLE, DEFAULT_FLOW_IDLE, DEFAULT_HASH_SEED,
    DEFAULT_MAGLEV_TABLE_SIZE, DEFAULT_MAX_BINDINGS, DEFAULT_MAX_FLOWS, MAX_BACKENDS, MAX_CID_LEN,
    MAX_HEALTH_INTERVAL, MAX_HEALTH_THRESHOLD, MAX_IDLE, MAX_MAGLEV_TABLE_SIZE, MAX_NAME_LEN,
    MAX_NEW_FLOWS_PER_SOURCE, MAX_TABLE_ENTRIES, MAX_WEIGHT, MAX_WORKERS, MIN_HEALTH_INTERVAL,
    MIN_HEALTH_TIMEOUT, MIN_IDLE, MIN_MAGLEV_TABLE_SIZE,
};

/// `NAME:PORT` with a DNS host name (letters, digits, `-` and `.`, at most 253
/// characters, not all digits and dots), lowercased; `None` for anything else (an
/// `IP:PORT` included).
fn dns_name(s: &str) -> Option<super::DnsName> {
    let s = s.trim();
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(label_ok)
        && host.bytes().any(|b| b.is_ascii_alphabetic());
    ok.then_some(super::DnsName { host, port })
}

/// Longest error message (bytes); longer ones are cut (values are cut by `shown` first).
const MAX_MESSAGE: usize = 1024;

pub(super) struct Ctx<'a> {
    pub(super) origin: &'a str,
    /// The TOML text, to turn spans into lines; `None` for [`Config::quick`].
    pub(super) text: Option<&'a str>,
}

pub(super) type R<T> = Result<T, ConfigError>;

impl Ctx<'_> {
    fn location(&self, span: Option<Range<usize>>) -> Option<Location> {
        let text = self.text?;
        let span = span?;
        let start = span.start.min(text.len());
        let start = (0..=start)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        let before = &text[..start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Some(Location { line, column })
    }

    pub(super) fn err(
        &self,
        kind: ConfigErrorKind,
        path: impl Into<String>,
        message: impl Into<String>,
        span: Option<Range<usize>>,
    ) -> ConfigError {
        // A last bound on what a message (or a key path made of the file's keys) can
        // quote; values are cut by `shown` first.
        let bound = |mut t: String, max: usize| {
            if t.len() > max {
                let keep = (0..=max)
                    .rev()
                    .find(|&i| t.is_char_boundary(i))
                    .unwrap_or(0);
                let cut = t.len() - keep;
                t.truncate(keep);
                t.push_str(&format!("... ({cut} more bytes)"));
            }
            t
        };
        let path = bound(path.into(), MAX_MESSAGE / 4);
        let message = bound(message.into(), MAX_MESSAGE);
        ConfigError {
            origin: self.origin.to_owned(),
            kind,
            path: (!path.is_empty()).then_some(path),
            message,
            location: self.location(span),
            source: None,
        }
    }

    pub(super) fn invalid<T>(
        &self,
        path: &str,
        v: &Spanned<T>,
        message: impl Into<String>,
    ) -> ConfigError {
        self.err(ConfigErrorKind::InvalidValue, path, message, Some(v.span()))
    }

    pub(super) fn missing(&self, path: &str, why: impl Into<String>) -> ConfigError {
        self.err(ConfigErrorKind::MissingKey, path, why, None)
    }

    /// Turns a deserialization error into a `ConfigError` with a clean key path.
    pub(super) fn serde_error(
        &self,
        e: &serde_path_to_error::Error<toml::de::Error>,
    ) -> ConfigError {
        use serde_path_to_error::Segment;
        let mut path = String::new();
        let mut last_key = None;
        for seg in e.path().iter() {
            match seg {
                Segment::Seq { index } => {
                    let _ = write!(path, "[{index}]");
                }
                Segment::Map { key } | Segment::Enum { variant: key } => {
                    if key.starts_with("$__serde_spanned_private") {
                        continue;
                    }
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                    last_key = Some(key.as_str());
                }
                Segment::Unknown => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push('?');
                }
            }
        }
        let inner = e.inner();
        let span = inner.span();
        let msg = inner.message().trim().replace('\n', "; ");
        if path.is_empty() {
            // Only the parser itself fails without a path (syntax, duplicate keys).
            return self.err(ConfigErrorKind::Syntax, "", msg, span);
        }
        if let Some(rest) = msg.strip_prefix("unknown field `") {
            // "unknown field `x`, expected one of `a`, `b`" / "expected `a` or `b`"
            let allowed: Vec<&str> = rest
                .split('`')
                .skip(1)
                .enumerate()
                .filter(|(i, _)| i % 2 == 1)
                .map(|(_, s)| s)
                .collect();
            let mut hint = if allowed.is_empty() {
                String::from("no keys are allowed here")
            } else {
                format!("allowed here: {}", allowed.join(", "))
            };
            if path == "backend" || path == "backends" {
                hint.push_str(" (backends belong to a listener: [[listener.backend]])");
            } else if path == "listeners" {
                hint.push_str(" (write [[listener]])");
            } else if path.ends_with(".backends") {
                hint.push_str(" (write [[listener.backend]])");
            }
            return self.err(ConfigErrorKind::UnknownKey, path, hint, span);
        }
        let msg = if msg.contains("expected a sequence")
            && matches!(last_key, Some("listener" | "backend"))
        {
            let table = if last_key == Some("listener") {
                "[[listener]]"
            } else {
                "[[listener.backend]]"
            };
            format!("expected an array of tables: write {table} with double brackets ({msg})")
        } else if let Some(rest) = msg.strip_prefix("unknown variant `") {
            let mut parts = rest.split('`');
            let got = parts.next().unwrap_or_default();
            let allowed: Vec<&str> = parts
                .enumerate()
                .filter(|(i, _)| i % 2 == 1)
                .map(|(_, s)| s)
                .collect();
            format!(
                "unknown value {got:?} (expected one of: {})",
                allowed.join(", ")
            )
        } else {
            msg.replace("expected i64", "expected an integer")
                .replace("expected a string", "expected a string (in quotes)")
        };
        self.err(ConfigErrorKind::InvalidValue, path, msg, span)
    }

    pub(super) fn int(
        &self,
        path: &str,
        v: &Sp<i64>,
        range: std::ops::RangeInclusive<i64>,
        default: i64,
    ) -> R<i64> {
        match v {
            None => Ok(default),
            Some(s) if range.contains(s.get_ref()) => Ok(*s.get_ref()),
            Some(s) => Err(self.invalid(
                path,
                s,
                format!(
                    "{} is out of range {}..={}",
                    s.get_ref(),
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    fn duration(&self, path: &str, v: &Sp<RawDuration>, default: Duration) -> R<Duration> {
        let Some(s) = v else { return Ok(default) };
        let d = s.get_ref().0;
        if d < MIN_IDLE {
            return Err(self.invalid(
                path,
                s,
                format!(
                    "{} is too short: at least 1s (the tables count whole seconds)",
                    fmt_duration(d)
                ),
            ));
        }
        if d > MAX_IDLE {
            return Err(self.invalid(
                path,
                s,
                format!("{} is too long: at most 365d", fmt_duration(d)),
            ));
        }
        Ok(d)
    }

    fn name(&self, path: &str, v: &Spanned<String>) -> R<String> {
        let n = v.get_ref();
        if n.is_empty() || n.len() > MAX_NAME_LEN || !n.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.invalid(
                path,
                v,
                format!(
                    "invalid name {}: use 1 to {MAX_NAME_LEN} printable ASCII characters without spaces",
                    shown(n)
                ),
            ));
        }
        Ok(n.clone())
    }

    fn socket_addr(&self, path: &str, v: &Spanned<String>) -> R<SocketAddr> {
        let s = v.get_ref();
        s.trim().parse::<SocketAddr>().map_err(|_| {
            let hint = if !s.contains(':') {
                "expected IP:PORT"
            } else if s.bytes().any(|b| b.is_ascii_alphabetic())
                && s.parse::<IpAddr>().is_err()
                && !s.starts_with('[')
                && s.split(':')
                    .next()
                    .is_some_and(|h| h.parse::<IpAddr>().is_err())
                && s.matches(':').count() == 1
            {
                "expected IP:PORT; host names are not resolved"
            } else if s.matches(':').count() > 1 && !s.starts_with('[') {
                "expected IP:PORT; write IPv6 addresses in brackets, e.g. [::1]:5684"
            } else {
                "expected IP:PORT"
            };
            self.invalid(
                path,
                v,
                format!("invalid socket address {} ({hint})", shown(s)),
            )
        })
    }

    pub(super) fn validate(&self, raw: &RawConfig) -> R<Config> {
        let workers = match &raw.workers {
            None => None,
            Some(_) => Some(self.int("workers", &raw.workers, 1..=MAX_WORKERS as i64, 1)? as usize),
        };

        let t = raw.timeouts.as_ref();
        let timeouts = Timeouts {
            flow_idle: self.duration(
                "timeouts.flow_idle",
                &t.and_then(|t| t.flow_idle.clone()),
                DEFAULT_FLOW_IDLE,
            )?,
            cid_binding_idle: self.duration(
                "timeouts.cid_binding_idle",
                &t.and_then(|t| t.cid_binding_idle.clone()),
                DEFAULT_CID_BINDING_IDLE,
            )?,
        };

        let default_limits = RawLimits::default();
        let l = raw.limits.as_ref().unwrap_or(&default_limits);
        let max = MAX_TABLE_ENTRIES as i64;
        let mut limits = Limits {
            max_flows: self.int(
                "limits.max_flows",
                &l.max_flows,
                1..=max,
                DEFAULT_MAX_FLOWS as i64,
            )? as usize,
            max_bindings: self.int(
                "limits.max_bindings",
                &l.max_bindings,
                1..=max,
                DEFAULT_MAX_BINDINGS as i64,
            )? as usize,
            new_flows_per_source: self.int(
                "limits.new_flows_per_source",
                &l.new_flows_per_source,
                0..=i64::from(MAX_NEW_FLOWS_PER_SOURCE),
                0,
            )? as u32,
            new_flows_burst: 0,
        };
        let burst = self.int(
            "limits.new_flows_burst",
            &l.new_flows_burst,
            0..=i64::from(MAX_NEW_FLOWS_PER_SOURCE),
            0,
        )? as u32;
        let rate = limits.new_flows_per_source;
        limits.new_flows_burst = match &l.new_flows_burst {
            Some(b) if burst > 0 && rate == 0 => {
                return Err(self.invalid(
                    "limits.new_flows_burst",
                    b,
                    format!(
                        "{burst} is set, but limits.new_flows_per_source is 0 or absent (the \
                         limit is off); set both, or neither"
                    ),
                ))
            }
            Some(b) if burst > 0 && burst < rate => {
                return Err(self.invalid(
                    "limits.new_flows_burst",
                    b,
                    format!(
                        "{burst} is smaller than limits.new_flows_per_source ({rate}): the \
                         bucket refills once a second, so that rate could never be reached"
                    ),
                ))
            }
            _ if burst == 0 => rate,
            _ => burst,
        };

        let default_hashing = RawHashing::default();
        let h = raw.hashing.as_ref().unwrap_or(&default_hashing);
        let seed = self.int(
            "hashing.seed",
            &h.seed,
            0..=i64::MAX,
            DEFAULT_HASH_SEED as i64,
        )? as u64;
        let size_path = "hashing.maglev_table_size";
        let maglev_table_size = self.int(
            size_path,
            &h.maglev_table_size,
            MIN_MAGLEV_TABLE_SIZE as i64..=MAX_MAGLEV_TABLE_SIZE as i64,
            DEFAULT_MAGLEV_TABLE_SIZE as i64,
        )? as usize;
        if !is_prime(maglev_table_size) {
            let s = h.maglev_table_size.as_ref().expect("the default is prime");
            let hint = match next_prime(maglev_table_size) {
                Some(p) if p <= MAX_MAGLEV_TABLE_SIZE => format!(" (the next prime is {p})"),
                _ => format!(
                    " (the largest allowed prime is {})",
                    prev_prime(MAX_MAGLEV_TABLE_SIZE)
                ),
            };
            return Err(self.invalid(
                size_path,
                s,
                format!("{maglev_table_size} is not a prime number{hint}"),
            ));
        }
        let hashing = Hashing {
            seed,
            maglev_table_size,
        };

        if raw.listeners.is_empty() {
            return Err(self.missing("listener", "at least one [[listener]] table is required"));
        }
        let mut listeners: Vec<ListenerConfig> = Vec::with_capacity(raw.listeners.len());
        for (i, rl) in raw.listeners.iter().enumerate() {
            let lc = self.listener(i, rl)?;
            let p = format!("listener[{i}]");
            if let Some((j, _)) = listeners
                .iter()
                .enumerate()
                .find(|(_, o)| o.name == lc.name)
            {
                let e = format!(
                    "duplicate listener name {:?} (already used by listener[{j}])",
                    lc.name
                );
                return Err(match &rl.name {
                    Some(s) => self.invalid(&format!("{p}.name"), s, e),
                    None => self.err(ConfigErrorKind::InvalidValue, format!("{p}.name"), e, None),
                });
            }
            if lc.address.port() != 0 {
                if let Some((j, _)) = listeners
                    .iter()
                    .enumerate()
                    .find(|(_, o)| o.address == lc.address)
                {
                    let s = rl.address.as_ref().expect("validated");
                    return Err(self.invalid(
                        &format!("{p}.address"),
                        s,
                        format!(
                            "duplicate listener address {} (already used by listener[{j}])",
                            lc.address
                        ),
                    ));
                }
            }
            // One program per interface: two xdp-dr listeners cannot share one.
            if let super::Forwarding::XdpDr(x) = &lc.forwarding {
                let shared = listeners
                    .iter()
                    .enumerate()
                    .find_map(|(j, o)| match &o.forwarding {
                        super::Forwarding::XdpDr(ox) => ox
                            .interfaces
                            .iter()
                            .find(|i| x.interfaces.contains(i))
                            .map(|i| (j, i.clone())),
                        super::Forwarding::Nat => None,
                    });
                if let Some((j, i)) = shared {
                    let s = rl.interface.as_ref().expect("validated");
                    return Err(self.invalid(
                        &format!("{p}.interface"),
                        s,
                        format!(
                            "interface {} is already used by listener[{j}] (one xdp-dr listener per interface: its program holds the interface)",
                            shown(&i)
                        ),
                    ));
                }
            }
            if lc.backends.len() >= maglev_table_size {
                let e = format!(
                    "{maglev_table_size} must be larger than the number of backends of listener {:?} ({}); pick a prime of at least {}",
                    lc.name,
                    lc.backends.len(),
                    next_prime(lc.backends.len().saturating_mul(100)).map_or(MAX_MAGLEV_TABLE_SIZE, |p| p.min(prev_prime(MAX_MAGLEV_TABLE_SIZE))),
                );
                return Err(match &h.maglev_table_size {
                    Some(s) => self.invalid(size_path, s, e),
                    None => self.err(ConfigErrorKind::InvalidValue, size_path, e, None),
                });
            }
            if lc.forwarding.is_xdp() && limits.new_flows_per_source > 0 {
                let s = l
                    .new_flows_per_source
                    .as_ref()
                    .expect("non-zero is explicit");
                return Err(self.invalid(
                    "limits.new_flows_per_source",
                    s,
                    format!(
                        "not supported by listener {:?} ({p}), which forwards with \
                         forwarding = \"xdp-dr\": the XDP program has no per-source limiter \
                         yet; set 0 or remove it",
                        lc.name
                    ),
                ));
            }
            listeners.push(lc);
        }
        // Two transparent listeners with one backend: a client of both, from one
        // address:port, would be one peer to that backend (and one 4-tuple to the kernel).
        for (i, lc) in listeners.iter().enumerate() {
            if lc.upstream != UpstreamMode::Transparent {
                continue;
            }
            for (j, b) in lc.backends.iter().enumerate() {
                let other = listeners[..i].iter().find(|o| {
                    o.upstream == UpstreamMode::Transparent
                        && o.backends.iter().any(|ob| ob.address == b.address)
                });
                if let Some(o) = other {
                    let s = raw.listeners[i].backends[j]
                        .address
                        .as_ref()
                        .expect("validated");
                    return Err(self.invalid(
                        &format!("listener[{i}].backend[{j}].address"),
                        s,
                        format!(
                            "{} is also a backend of listener {:?}, and both have upstream = \"transparent\": the backend sees each client's own address, so it could not tell a client's sessions through the two listeners apart; give each listener its own backend addresses (ports)",
                            b.address, o.name
                        ),
                    ));
                }
            }
        }
        // A backend at an address that one of our own listeners receives on would loop
        // datagrams (and health probes) through the balancer forever: the listener's
        // own address in either spelling of IPv4, or a loopback or local IP of this
        // host on the port of a wildcard listener.
        let local = cidlb_net::sys::local_ips();
        for (i, lc) in listeners.iter().enumerate() {
            for (j, b) in lc
                .backends
                .iter()
                .enumerate()
                .filter(|(_, b)| b.dns.is_none())
            {
                let own = listeners.iter().find(|o| {
                    cidlb_core::OwnAddresses::new(&[o.address], &local).contains(b.address)
                });
                if let Some(own) = own {
                    let s = raw.listeners[i].backends[j]
                        .address
                        .as_ref()
                        .expect("validated");
                    let how = if own.address.ip().is_unspecified() {
                        format!(
                            "listener {:?} on {} receives on every local address of this host, port {}",
                            own.name,
                            own.address,
                            own.address.port()
                        )
                    } else {
                        format!(
                            "it is the address of listener {:?} ({})",
                            own.name, own.address
                        )
                    };
                    return Err(self.invalid(
                        &format!("listener[{i}].backend[{j}].address"),
                        s,
                        format!(
                            "{} would loop datagrams back into the balancer: {how} (a backend must be another server)",
                            b.address
                        ),
                    ));
                }
            }
        }

        let health = self.health(raw.health.as_ref())?;
        let admin = self.admin(raw.admin.as_ref())?;
        let resolver = self.resolver(raw.resolver.as_ref())?;
        let state_file = match raw.admin.as_ref().and_then(|a| a.state_file.as_ref()) {
            None => None,
            Some(s) if s.get_ref().is_empty() => {
                return Err(self.invalid("admin.state_file", s, "an empty path"))
            }
            Some(s) => Some(
                std::path::Path::new(self.origin)
                    .parent()
                    .unwrap_or(std::path::Path::new("."))
                    .join(s.get_ref()),
            ),
        };
        let log = match &raw.log {
            None => super::LogConfig::default(),
            Some(l) => super::LogConfig {
                format: match l.format.as_ref().map(|f| *f.get_ref()) {
                    None | Some(RawLogFormat::Plain) => super::LogFormat::Plain,
                    Some(RawLogFormat::Json) => super::LogFormat::Json,
                },
                events_per_second: self.int(
                    "log.events_per_second",
                    &l.events_per_second,
                    0..=i64::from(super::MAX_EVENTS_PER_SECOND),
                    i64::from(super::DEFAULT_EVENTS_PER_SECOND),
                )? as u32,
            },
        };

        Ok(Config {
            workers,
            timeouts,
            limits,
            hashing,
            health,
            admin,
            log,
            resolver,
            state_file,
            listeners,
        })
    }

    fn resolver(&self, raw: Option<&super::model::RawResolver>) -> R<super::ResolverConfig> {
        let d = super::ResolverConfig::default();
        let Some(r) = raw else { return Ok(d) };
        let mut servers = Vec::new();
        for (i, s) in r.servers.iter().flatten().enumerate() {
            let path = format!("resolver.servers[{i}]");
            let t = s.get_ref().trim();
            let a = match t.parse::<IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, 53),
                Err(_) => self.socket_addr(&path, s)?,
            };
            servers.push(a);
        }
        Ok(super::ResolverConfig {
            servers,
            interval: self.duration_within(
                "resolver.interval",
                &r.interval,
                d.interval,
                Duration::from_secs(1),
                Duration::from_secs(86_400),
            )?,
            timeout: self.duration_within(
                "resolver.timeout",
                &r.timeout,
                d.timeout,
                Duration::from_millis(100),
                Duration::from_secs(30),
            )?,
        })
    }

    /// A duration within `min..=max`, else the error names the key and the range;
    /// `default` when unset.
    fn duration_within(
        &self,
        path: &str,
        v: &Sp<RawDuration>,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> R<Duration> {
        let Some(s) = v else { return Ok(default) };
        let got = s.get_ref().0;
        if got < min || got > max {
            return Err(self.invalid(
                path,
                s,
                format!(
                    "{} is out of range {}..={}",
                    fmt_duration(got),
                    fmt_duration(min),
                    fmt_duration(max)
                ),
            ));
        }
        Ok(got)
    }

    fn health(&self, raw: Option<&RawHealth>) -> R<HealthConfig> {
        let d = HealthConfig::default();
        let Some(h) = raw else { return Ok(d) };
        let bounded = |path: &str, v: &Sp<RawDuration>, default, min, max| {
            self.duration_within(path, v, default, min, max)
        };
        let interval = bounded(
            "health.interval",
            &h.interval,
            d.interval,
            MIN_HEALTH_INTERVAL,
            MAX_HEALTH_INTERVAL,
        )?;
        let timeout = bounded(
            "health.timeout",
            &h.timeout,
            d.timeout.min(interval),
            MIN_HEALTH_TIMEOUT,
            MAX_HEALTH_INTERVAL,
        )?;
        if timeout > interval {
            let s = h
                .timeout
                .as_ref()
                .expect("only an explicit timeout exceeds it");
            return Err(self.invalid(
                "health.timeout",
                s,
                format!(
                    "{} is longer than health.interval ({}): a check must end before the next one starts",
                    fmt_duration(timeout),
                    fmt_duration(interval)
                ),
            ));
        }
        let max = i64::from(MAX_HEALTH_THRESHOLD);
        Ok(HealthConfig {
            enabled: h.enabled.as_ref().is_none_or(|e| *e.get_ref()),
            interval,
            timeout,
            rise: self.int("health.rise", &h.rise, 1..=max, i64::from(d.rise))? as u32,
            fall: self.int("health.fall", &h.fall, 1..=max, i64::from(d.fall))? as u32,
        })
    }

    fn admin(&self, raw: Option<&RawAdmin>) -> R<AdminConfig> {
        let Some(a) = raw else {
            return Ok(AdminConfig::default());
        };
        let address = match &a.address {
            Some(s) => Some(self.socket_addr("admin.address", s)?),
            None => None,
        };
        Ok(AdminConfig {
            enabled: a.enabled.as_ref().is_none_or(|e| *e.get_ref()),
            address,
        })
    }

    fn listener(&self, i: usize, rl: &RawListener) -> R<ListenerConfig> {
        let p = format!("listener[{i}]");
        let name = match &rl.name {
            Some(s) => self.name(&format!("{p}.name"), s)?,
            None => format!("listener-{i}"),
        };
        let address = match &rl.address {
            Some(s) => self.socket_addr(&format!("{p}.address"), s)?,
            None => return Err(self.missing(
                &format!("{p}.address"),
                "required key is missing (the local IP:PORT to listen on, e.g. \"0.0.0.0:5684\")",
            )),
        };
        let routing = match rl.routing.as_ref().map(|s| *s.get_ref()) {
            None | Some(RawRouting::Cid) => RoutingMode::Cid,
            Some(RawRouting::Address) => RoutingMode::Address,
        };
        let cid_format = match &rl.cid_format {
            Some(f) => Some(self.cid_format(&p, f)?),
            None => None,
        };
        let cid_path = format!("{p}.cid_length");
        let cid_length = match &rl.cid_length {
            None if routing == RoutingMode::Cid
                && !matches!(cid_format, Some(super::routable::CidFormatConfig::QuicLb(_))) =>
            {
                return Err(self.missing(
                    &cid_path,
                    format!("required key is missing when routing = \"cid\" (the length, 1..={MAX_CID_LEN} bytes, of the CIDs your DTLS servers issue: it is not on the wire)"),
                ))
            }
            None => None,
            Some(_) => Some(self.int(&cid_path, &rl.cid_length, 1..=MAX_CID_LEN as i64, 1)? as usize),
        };
        let multi_cid = match rl.multi_cid.as_ref().map(|s| *s.get_ref()) {
            None | Some(RawMultiCid::First) => MultiCidPolicy::First,
            Some(RawMultiCid::Split) => MultiCidPolicy::Split,
            Some(RawMultiCid::Drop) => MultiCidPolicy::Drop,
        };
        let upstream_source = match &rl.upstream_source {
            None => None,
            Some(s) => Some(s.get_ref().trim().parse::<IpAddr>().map_err(|_| {
                self.invalid(
                    &format!("{p}.upstream_source"),
                    s,
                    format!(
                        "invalid IP address {:?} (expected an IP without port, e.g. \"10.0.0.5\")",
                        s.get_ref()
                    ),
                )
            })?),
        };
        let upstream = match rl.upstream.as_ref().map(|s| *s.get_ref()) {
            None | Some(RawUpstream::Nat) => UpstreamMode::Nat,
            Some(RawUpstream::Transparent) => UpstreamMode::Transparent,
        };
        if let (UpstreamMode::Transparent, Some(s)) = (upstream, &rl.upstream_source) {
            return Err(self.invalid(
                &format!("{p}.upstream_source"),
                s,
                "does not apply with upstream = \"transparent\": each upstream socket takes its client's own address (remove it; health checks bind to an address the kernel picks)",
            ));
        }
        let mark_path = format!("{p}.reply_fwmark");
        let reply_fwmark = match &rl.reply_fwmark {
            None => None,
            Some(s) if upstream != UpstreamMode::Transparent => {
                return Err(self.invalid(
                    &mark_path,
                    s,
                    "applies to upstream = \"transparent\" only (the mark of the backends' replies to clients' addresses)",
                ))
            }
            Some(_) => Some(self.int(&mark_path, &rl.reply_fwmark, 1..=i64::from(u32::MAX), 1)? as u32),
        };

        let bp = format!("{p}.backend");
        if rl.backends.is_empty() {
            return Err(self.missing(
                &bp,
                "a listener needs at least one backend ([[listener.backend]] table)",
            ));
        }
        if rl.backends.len() > MAX_BACKENDS {
            return Err(self.err(
                ConfigErrorKind::InvalidValue,
                &bp,
                format!(
                    "{} backends, at most {MAX_BACKENDS} are supported",
                    rl.backends.len()
                ),
                None,
            ));
        }
        let mut backends: Vec<BackendConfig> = Vec::with_capacity(rl.backends.len());
        // Duplicate detection in O(n log n): lists may hold tens of thousands.
        let mut names = std::collections::HashMap::with_capacity(rl.backends.len());
        let mut addrs = std::collections::HashMap::with_capacity(rl.backends.len());
        let mut dns_names = std::collections::HashMap::new();
        for (j, rb) in rl.backends.iter().enumerate() {
            let bpj = format!("{bp}[{j}]");
            let b = self.backend(&bpj, rb)?;
            if let Some(d) = &b.dns {
                // Its addresses are checked when it is resolved (crate::dns).
                if let Some(k) = dns_names.insert(d.clone(), j) {
                    let s = rb.address.as_ref().expect("validated");
                    return Err(self.invalid(
                        &format!("{bpj}.address"),
                        s,
                        format!(
                            "duplicate backend name {}:{} (already used by {bp}[{k}])",
                            d.host, d.port
                        ),
                    ));
                }
            } else if let Some(ip) = upstream_source {
                if ip.is_ipv4() != b.address.is_ipv4() {
                    let s = rl.upstream_source.as_ref().expect("set");
                    return Err(self.invalid(
                        &format!("{p}.upstream_source"),
                        s,
                        format!(
                            "{ip} is an {} address but backend {:?} ({bpj}) is at the {} address {}",
                            family(ip),
                            b.name,
                            family(b.address.ip()),
                            b.address
                        ),
                    ));
                }
            }
            if b.dns.is_none()
                && upstream == UpstreamMode::Transparent
                && address.is_ipv4() != b.address.is_ipv4()
            {
                let s = rb.address.as_ref().expect("validated");
                return Err(self.invalid(
                    &format!("{bpj}.address"),
                    s,
                    format!(
                        "{} is an {} address but the listener's ({address}) is {}: with upstream = \"transparent\" the client's own address is the source towards the backend, so both must be of one family",
                        b.address,
                        family(b.address.ip()),
                        family(address.ip())
                    ),
                ));
            }
            if b.dns.is_some() {
                // (duplicate names: above)
            } else if let Some(k) = addrs.insert(b.address, j) {
                let s = rb.address.as_ref().expect("validated");
                return Err(self.invalid(
                    &format!("{bpj}.address"),
                    s,
                    format!(
                        "duplicate backend address {} (already used by {bp}[{k}])",
                        b.address
                    ),
                ));
            }
            if let Some(k) = names.insert(b.name.clone(), j) {
                let e = format!(
                    "duplicate backend name {:?} (already used by {bp}[{k}]){}",
                    b.name,
                    if rb.name.is_none() {
                        "; a backend without a name is named after its address"
                    } else {
                        ""
                    }
                );
                return Err(match &rb.name {
                    Some(s) => self.invalid(&format!("{bpj}.name"), s, e),
                    None => self.err(
                        ConfigErrorKind::InvalidValue,
                        format!("{bpj}.name"),
                        e,
                        None,
                    ),
                });
            }
            backends.push(b);
        }
        self.routable_cids(&p, rl, cid_format.as_ref(), cid_length, &mut backends)?;
        let forwarding = self.forwarding(&p, rl, address, multi_cid)?;

        Ok(ListenerConfig {
            name,
            address,
            cid_length,
            multi_cid,
            routing,
            upstream_source,
            upstream,
            reply_fwmark,
            cid_format,
            forwarding,
            backends,
        })
    }

    /// `forwarding`, `interface`, `xdp_mode`, and what direct routing in XDP cannot do.
    fn forwarding(
        &self,
        p: &str,
        rl: &RawListener,
        address: SocketAddr,
        multi_cid: MultiCidPolicy,
    ) -> R<Forwarding> {
        let xdp = matches!(
            rl.forwarding.as_ref().map(|s| *s.get_ref()),
            Some(RawForwarding::XdpDr)
        );
        if !xdp {
            for (key, set) in [
                ("interface", rl.interface.as_ref().map(|s| s.span())),
                ("xdp_mode", rl.xdp_mode.as_ref().map(|s| s.span())),
                ("pin_dir", rl.pin_dir.as_ref().map(|s| s.span())),
                ("keep_pinned", rl.keep_pinned.as_ref().map(|s| s.span())),
            ] {
                if let Some(span) = set {
                    return Err(self.err(
                        ConfigErrorKind::InvalidValue,
                        format!("{p}.{key}"),
                        "only used with forwarding = \"xdp-dr\" (this listener forwards by NAT)",
                        Some(span),
                    ));
                }
            }
            return Ok(Forwarding::Nat);
        }
        let fwd = rl.forwarding.as_ref().expect("xdp-dr is set");
        let why = " with forwarding = \"xdp-dr\"";
        if address.ip().is_unspecified() || address.port() == 0 {
            let s = rl.address.as_ref().expect("validated");
            return Err(self.invalid(
                &format!("{p}.address"),
                s,
                format!(
                    "{address}: direct routing needs the virtual address itself (a specific IP \
                     and a non-zero port: the program matches it, and the backends hold it on \
                     their loopback){why}"
                ),
            ));
        }
        if multi_cid == MultiCidPolicy::Split {
            let s = rl.multi_cid.as_ref().expect("split is explicit");
            return Err(self.invalid(
                &format!("{p}.multi_cid"),
                s,
                format!(
                    "\"split\" is not supported{why}: the program forwards whole frames and \
                     cannot cut a datagram into one per backend (use \"first\" or \"drop\")"
                ),
            ));
        }
        if let Some(s) = &rl.upstream_source {
            return Err(self.invalid(
                &format!("{p}.upstream_source"),
                s,
                format!(
                    "not used{why}: there are no upstream sockets, the client's own address \
                     reaches the backends"
                ),
            ));
        }
        let ipath = format!("{p}.interface");
        let Some(raw_if) = &rl.interface else {
            return Err(self.err(
                ConfigErrorKind::MissingKey,
                ipath,
                format!(
                    "required key is missing{why} (the interface the virtual address is \
                     reached through, e.g. \"eth0\")"
                ),
                Some(fwd.span()),
            ));
        };
        let interfaces = match raw_if.get_ref() {
            RawInterfaces::One(s) => vec![s.clone()],
            RawInterfaces::Many(v) => v.clone(),
        };
        if interfaces.is_empty() || interfaces.len() > 8 {
            return Err(self.invalid(
                &ipath,
                raw_if,
                format!(
                    "{} interfaces: the program runs on 1 to 8 interfaces per listener",
                    interfaces.len()
                ),
            ));
        }
        if let Some(d) = interfaces
            .iter()
            .enumerate()
            .find_map(|(k, i)| interfaces[..k].contains(i).then_some(i))
        {
            return Err(self.invalid(
                &ipath,
                raw_if,
                format!("interface {} is listed twice", shown(d)),
            ));
        }
        for i in &interfaces {
            let ok = !i.is_empty()
                && i.len() < 16
                && i != "."
                && i != ".."
                && i.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
            if !ok {
                return Err(self.invalid(
                    &ipath,
                    raw_if,
                    format!(
                        "invalid interface name {} (1 to 15 characters, no '/', ':' or spaces)",
                        shown(i)
                    ),
                ));
            }
        }
        let mode = match rl.xdp_mode.as_ref().map(|s| *s.get_ref()) {
            None | Some(RawXdpMode::Native) => XdpAttachMode::Native,
            Some(RawXdpMode::Generic) => XdpAttachMode::Generic,
        };
        let pin_dir = match &rl.pin_dir {
            None => Some(std::path::PathBuf::from(super::DEFAULT_PIN_DIR)),
            Some(s) if s.get_ref().is_empty() => None,
            Some(s) if !s.get_ref().starts_with('/') => {
                return Err(self.invalid(
                    &format!("{p}.pin_dir"),
                    s,
                    format!(
                        "{}: an absolute path on a bpf filesystem is needed (or \"\" for no pins)",
                        shown(s.get_ref())
                    ),
                ))
            }
            Some(s) => Some(std::path::PathBuf::from(s.get_ref())),
        };
        let keep_pinned = rl.keep_pinned.as_ref().is_some_and(|k| *k.get_ref());
        Ok(Forwarding::XdpDr(XdpDr {
            interfaces,
            mode,
            pin_dir,
            keep_pinned,
        }))
    }

    /// A backend's `weight` (default 1) and `state` (default up).
    fn weight_and_state(&self, p: &str, rb: &RawBackend) -> R<(u32, BackendState)> {
        let weight = self.int(
            &format!("{p}.weight"),
            &rb.weight,
            0..=i64::from(MAX_WEIGHT),
            1,
        )? as u32;
        let state = match rb.state.as_ref().map(|s| *s.get_ref()) {
            None | Some(RawState::Up) => BackendState::Up,
            Some(RawState::Draining) => BackendState::Draining,
            Some(RawState::Down) => BackendState::Down,
        };
        Ok((weight, state))
    }

    fn backend(&self, p: &str, rb: &RawBackend) -> R<BackendConfig> {
        let apath = format!("{p}.address");
        let (address, dns) = match &rb.address {
            Some(s) => match dns_name(s.get_ref()) {
                Some(d) => {
                    if let Some(sid) = &rb.server_id {
                        return Err(self.invalid(
                            &format!("{p}.server_id"),
                            sid,
                            "a backend given by DNS name may be several servers: give each its own entry with its server_id",
                        ));
                    }
                    (SocketAddr::from(([0, 0, 0, 0], d.port)), Some(d))
                }
                None => match s.get_ref().trim().parse::<SocketAddr>() {
                    Ok(a) => (a, None),
                    Err(_) if s.get_ref().bytes().any(|b| b.is_ascii_alphabetic())
                        && !s.get_ref().contains('[') =>
                    {
                        return Err(self.invalid(
                            &apath,
                            s,
                            format!(
                                "invalid backend address {} (expected IP:PORT or NAME:PORT, a DNS name of letters, digits, - and .)",
                                shown(s.get_ref())
                            ),
                        ))
                    }
                    Err(_) => (self.socket_addr(&apath, s)?, None),
                },
            },
            None => {
                return Err(self.missing(
                    &apath,
                    "required key is missing (the backend's IP:PORT, e.g. \"10.0.0.1:5684\", or NAME:PORT)",
                ))
            }
        };
        if let Some(d) = dns {
            let name = match &rb.name {
                Some(s) => self.name(&format!("{p}.name"), s)?,
                None => format!("{}:{}", d.host, d.port),
            };
            let (weight, state) = self.weight_and_state(p, rb)?;
            return Ok(BackendConfig {
                name,
                address,
                weight,
                state,
                server_id: None,
                dns: Some(d),
            });
        }
        let broadcast = matches!(address.ip(), IpAddr::V4(v4) if v4.is_broadcast());
        if address.ip().is_unspecified()
            || address.port() == 0
            || address.ip().is_multicast()
            || broadcast
        {
            let s = rb.address.as_ref().expect("set");
            return Err(self.invalid(
                &apath,
                s,
                format!("{address} cannot be a destination (needs a unicast IP: not a wildcard, multicast or broadcast address; and a non-zero port)"),
            ));
        }
        let name = match &rb.name {
            Some(s) => self.name(&format!("{p}.name"), s)?,
            None => address.to_string(),
        };
        let (weight, state) = self.weight_and_state(p, rb)?;
        Ok(BackendConfig {
            name,
            address,
            weight,
            state,
            dns: None,
            // Checked against the listener's cid_format by `routable_cids`.
            server_id: None,
        })
    }
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

pub(super) fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

fn next_prime(n: usize) -> Option<usize> {
    (n..=MAX_MAGLEV_TABLE_SIZE).find(|&k| is_prime(k))
}

pub(super) fn prev_prime(n: usize) -> usize {
    (2..=n).rev().find(|&k| is_prime(k)).unwrap_or(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_65535_backends() {
        let raw = RawConfig {
            workers: None,
            timeouts: None,
            limits: None,
            hashing: None,
            health: None,
            admin: None,
            log: None,
            resolver: None,
            listeners: vec![RawListener {
                address: Some(Spanned::new(0..0, "0.0.0.0:5684".into())),
                cid_length: Some(Spanned::new(0..0, 6)),
                backends: (0..=MAX_BACKENDS)
                    .map(|i| RawBackend {
                        address: Some(Spanned::new(
                            0..0,
                            format!("10.1.{}.{}:5684", i / 256, i % 256),
                        )),
                        ..RawBackend::default()
                    })
                    .collect(),
                ..RawListener::default()
            }],
        };
        let ctx = Ctx {
            origin: "x",
            text: None,
        };
        let e = ctx.validate(&raw).unwrap_err();
        assert_eq!(e.path(), Some("listener[0].backend"));
        assert!(
            e.to_string().contains("65536 backends, at most 65535"),
            "{e}"
        );
    }
}
