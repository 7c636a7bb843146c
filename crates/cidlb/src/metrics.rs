//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4).
//!
//! Every family is declared once, below: a variant of [`DaemonFamily`],
//! [`ListenerFamily`], [`BackendFamily`] or [`AdminFamily`] with its name, type and
//! help (the variant's doc comment), or a data-plane counter of `cidlb_net` (its doc
//! comment too). Each family's samples are written by an exhaustive `match` on its
//! variant, so a family cannot be declared without samples, and [`families`] (used by
//! the docs tests and by `tests/ops.rs`) walks the same lists in the same order as
//! [`render`].
//!
//! Label values for routing outcomes, drop reasons and events are the `snake_case`
//! names of [`RouteOutcome`], [`DropReason`] and [`Event`]: every variant is exported,
//! zero or not, so a dashboard can rely on each series existing. `docs/metrics.md`
//! lists every family; tests keep it in step with this file.
//!
//! Written by hand rather than with the `prometheus-client` crate (0.26), measured:
//! its Prometheus 0.0.4 text encoder (new in 0.26; it appends `_total` to a counter
//! registered without it) and a custom `Collector` reading the snapshot wrote exactly
//! these bytes, so names and docs could have stayed. But a collector is `'static`, so
//! each scrape clones the [`Snapshot`] into a fresh registry; it brings seven crates
//! (`parking_lot` and its own, `dtoa`, a derive macro); and it is slower: for 3
//! listeners × 100 backends (8,009 samples, 659 KiB), release build, 0.82 ms per
//! scrape (its OpenMetrics encoder alike) against 0.54 ms here (0.80 ms before the
//! families were declared once). What it would replace is `Expo` and its escaping,
//! fifty lines checked by the tests below (escaping, valid and unique names and
//! series, `_total` iff counter).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use cidlb_core::plane::{StatInfo, StatKind};
use cidlb_core::{BackendState, DropReason, Event, RouteOutcome};
use cidlb_net::health::ProbeResult;
use strum::IntoEnumIterator;

use crate::control::{BackendSnapshot, ListenerSnapshot, Snapshot};
use crate::http::HttpCounts;

/// Content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A family's type (`# TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (from the daemon's start); the name ends in `_total`.
    Counter,
    /// A current value.
    Gauge,
}

impl Kind {
    /// The word of the `# TYPE` line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One metric family: what its `# HELP` and `# TYPE` lines say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Family {
    /// The metric name.
    pub name: Cow<'static, str>,
    /// Counter or gauge.
    pub kind: Kind,
    /// One line of help.
    pub help: &'static str,
}

/// Declares an enum of families: each variant's doc comment is its help, then its
/// type and name (`Variant: Kind = "name"`).
macro_rules! families {
    (
        $(#[$meta:meta])*
        pub enum $Enum:ident {
            $( $(#[doc = $doc:literal])+ $Variant:ident: $kind:ident = $name:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $Enum {
            $( $(#[doc = $doc])+ $Variant, )*
        }

        impl $Enum {
            /// Every family of this scope, in exposition order.
            pub const ALL: &'static [$Enum] = &[$( $Enum::$Variant, )*];

            /// Name, type and help.
            pub const fn family(self) -> Family {
                match self {
                    $( $Enum::$Variant => Family {
                        name: Cow::Borrowed($name),
                        kind: Kind::$kind,
                        help: concat!($($doc),+).trim_ascii(),
                    }, )*
                }
            }
        }
    };
}

families! {
    /// Families of the daemon as a whole.
    pub enum DaemonFamily {
        /// Always 1; the version is a label.
        BuildInfo: Gauge = "cidlb_build_info",
        /// When the daemon started (Unix time).
        StartTime: Gauge = "cidlb_start_time_seconds",
        /// Configuration generation: 1 at start, +1 per applied reload.
        ConfigGeneration: Gauge = "cidlb_config_generation",
        /// Reloads by result (ok, rejected).
        ConfigReloads: Counter = "cidlb_config_reloads_total",
        /// How long the last applied reload took, reading the file included (0 before
        /// the first).
        ConfigReloadSeconds: Gauge = "cidlb_config_reload_seconds",
    }
}

families! {
    /// Families with series per listener (label `listener`).
    pub enum ListenerFamily {
        /// Client datagrams forwarded, by routing outcome.
        Routed: Counter = "cidlb_routed_total",
        /// Client datagrams dropped, by reason.
        Dropped: Counter = "cidlb_dropped_total",
        /// Routing events (NAT rebinding = cid_new_address, handshakes = client_hello,
        /// expiries, evictions...).
        Events: Counter = "cidlb_events_total",
        /// Flows stored (client address:port -> backend).
        Flows: Gauge = "cidlb_flows",
        /// CID bindings stored (CID -> backend).
        Bindings: Gauge = "cidlb_bindings",
        /// Bound of the flow table (limits.max_flows).
        FlowsMax: Gauge = "cidlb_flows_max",
        /// Bound of the binding table (limits.max_bindings).
        BindingsMax: Gauge = "cidlb_bindings_max",
        /// Memory allocated by a routing table (flows, bindings, sources: the per-source
        /// new-flow limiter).
        TableBytes: Gauge = "cidlb_table_bytes",
    }
}

families! {
    /// Families with series per backend (labels `listener`, `backend`).
    pub enum BackendFamily {
        /// Always 1; the backend's address is a label.
        Info: Gauge = "cidlb_backend_info",
        /// 1 while health checks pass (or are off), 0 while the backend is failing them.
        Up: Gauge = "cidlb_backend_up",
        /// 1 for the state the data plane applies (up, draining, down; down too where it
        /// cannot reach the backend, e.g. xdp-dr without its MAC).
        State: Gauge = "cidlb_backend_state",
        /// 1 for the operator's state (up, draining, down).
        AdminState: Gauge = "cidlb_backend_admin_state",
        /// The backend's weight.
        Weight: Gauge = "cidlb_backend_weight",
        /// Live flows to the backend.
        Flows: Gauge = "cidlb_backend_flows",
        /// Live CID bindings to the backend.
        Bindings: Gauge = "cidlb_backend_bindings",
        /// Datagrams to (direction=to_backend) and from (from_backend) the backend.
        Datagrams: Counter = "cidlb_backend_datagrams_total",
        /// Bytes to (direction=to_backend) and from (from_backend) the backend.
        Bytes: Counter = "cidlb_backend_bytes_total",
        /// Health-check results by result.
        HealthChecks: Counter = "cidlb_health_checks_total",
        /// Health flips, by the health reached (to=up, to=down).
        HealthTransitions: Counter = "cidlb_health_transitions_total",
    }
}

families! {
    /// Families of the admin API's own server.
    pub enum AdminFamily {
        /// Admin API connections by outcome (served, bad_request, timed_out, closed_early,
        /// handler_panic, evicted).
        Connections: Counter = "cidlb_admin_connections_total",
        /// Admin API accepts that failed (e.g. out of file descriptors); retried every
        /// 100 ms.
        AcceptErrors: Counter = "cidlb_admin_accept_errors_total",
    }
}

/// The data planes' own counters, as each plane declares them (name, kind, help): the
/// NAT plane's, then the XDP plane's (the program's, then its slow path's). A listener
/// has samples of its own plane's only.
fn data_plane_stats() -> impl Iterator<Item = &'static StatInfo> {
    cidlb_net::NAT_STATS
        .iter()
        .chain(cidlb_xdp::XDP_STATS)
        .chain(&cidlb_xdp::SLOW_PATH_STATS)
}

/// The family of a data-plane counter: `cidlb_listener_` + its name, + `_total` for a
/// counter; its help is the plane's declaration of it.
fn data_plane_family(s: &StatInfo) -> Family {
    let (kind, suffix) = match s.kind {
        StatKind::Gauge => (Kind::Gauge, ""),
        StatKind::Counter => (Kind::Counter, "_total"),
    };
    Family {
        name: format!("cidlb_listener_{}{suffix}", s.name).into(),
        kind,
        help: s.help,
    }
}

/// Every data-plane family, in exposition order.
fn data_plane_families() -> impl Iterator<Item = Family> {
    data_plane_stats().map(data_plane_family)
}

/// Every metric family, in exposition order (the order of [`render`]).
pub fn families() -> Vec<Family> {
    DaemonFamily::ALL
        .iter()
        .map(|f| f.family())
        .chain(ListenerFamily::ALL.iter().map(|f| f.family()))
        .chain(data_plane_families())
        .chain(BackendFamily::ALL.iter().map(|f| f.family()))
        .chain(AdminFamily::ALL.iter().map(|f| f.family()))
        .collect()
}

/// The `state` label values of `cidlb_backend_state` and `cidlb_backend_admin_state`.
const STATES: [(BackendState, &str); 3] = [
    (BackendState::Up, "up"),
    (BackendState::Draining, "draining"),
    (BackendState::Down, "down"),
];

impl DaemonFamily {
    fn write(self, s: &Snapshot, e: &mut Expo) {
        match self {
            DaemonFamily::BuildInfo => e.sample(&[("version", env!("CARGO_PKG_VERSION"))], 1),
            DaemonFamily::StartTime => {
                let start = s
                    .started
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                e.sample(&[], start);
            }
            DaemonFamily::ConfigGeneration => e.sample(&[], s.generation),
            DaemonFamily::ConfigReloads => {
                e.sample(&[("result", "ok")], s.reloads_ok);
                e.sample(&[("result", "rejected")], s.reloads_rejected);
            }
            DaemonFamily::ConfigReloadSeconds => e.sample(&[], s.last_reload.as_secs_f64()),
        }
    }
}

impl ListenerFamily {
    fn write(self, l: &ListenerSnapshot, e: &mut Expo) {
        let name = l.name.as_str();
        let c = &l.counters;
        match self {
            ListenerFamily::Routed => {
                for o in RouteOutcome::iter() {
                    e.sample(&[("listener", name), ("outcome", o.into())], c.routed(o));
                }
            }
            ListenerFamily::Dropped => {
                for d in DropReason::iter() {
                    e.sample(&[("listener", name), ("reason", d.into())], c.dropped(d));
                }
            }
            ListenerFamily::Events => {
                for ev in Event::iter() {
                    e.sample(&[("listener", name), ("event", ev.into())], c.event(ev));
                }
            }
            ListenerFamily::Flows => e.sample(&[("listener", name)], l.tables.flows),
            ListenerFamily::Bindings => e.sample(&[("listener", name)], l.tables.bindings),
            ListenerFamily::FlowsMax => e.sample(&[("listener", name)], l.tables.max_flows),
            ListenerFamily::BindingsMax => e.sample(&[("listener", name)], l.tables.max_bindings),
            ListenerFamily::TableBytes => {
                for (table, n) in [
                    ("flows", l.tables.flow_bytes),
                    ("bindings", l.tables.binding_bytes),
                    ("sources", l.tables.source_bytes),
                ] {
                    e.sample(&[("listener", name), ("table", table)], n);
                }
            }
        }
    }
}

impl BackendFamily {
    fn write(self, l: &ListenerSnapshot, b: &BackendSnapshot, e: &mut Expo) {
        let (ln, bn) = (l.name.as_str(), b.name.as_str());
        let states = |e: &mut Expo, st: BackendState| {
            for (s, word) in STATES {
                let labels = [("listener", ln), ("backend", bn), ("state", word)];
                e.sample(&labels, u8::from(st == s));
            }
        };
        let directions = |e: &mut Expo, to: u64, from: u64| {
            for (dir, n) in [("to_backend", to), ("from_backend", from)] {
                e.sample(&[("listener", ln), ("backend", bn), ("direction", dir)], n);
            }
        };
        let t = &b.traffic;
        match self {
            BackendFamily::Info => {
                let addr = b.address.to_string();
                let labels = [("listener", ln), ("backend", bn), ("address", &addr)];
                e.sample(&labels, 1);
            }
            BackendFamily::Up => {
                e.sample(&[("listener", ln), ("backend", bn)], u8::from(b.healthy))
            }
            BackendFamily::State => states(e, b.state),
            BackendFamily::AdminState => states(e, b.admin),
            BackendFamily::Weight => e.sample(&[("listener", ln), ("backend", bn)], b.weight),
            BackendFamily::Flows => e.sample(&[("listener", ln), ("backend", bn)], b.flows),
            BackendFamily::Bindings => e.sample(&[("listener", ln), ("backend", bn)], b.bindings),
            BackendFamily::Datagrams => {
                directions(e, t.to_backend_datagrams, t.from_backend_datagrams)
            }
            BackendFamily::Bytes => directions(e, t.to_backend_bytes, t.from_backend_bytes),
            BackendFamily::HealthChecks => {
                // `checks` is indexed like `ProbeResult::ALL`.
                for (r, n) in ProbeResult::ALL.iter().zip(b.checks) {
                    let labels = [("listener", ln), ("backend", bn), ("result", r.name())];
                    e.sample(&labels, n);
                }
            }
            BackendFamily::HealthTransitions => {
                for (to, n) in [("up", b.went_up), ("down", b.went_down)] {
                    e.sample(&[("listener", ln), ("backend", bn), ("to", to)], n);
                }
            }
        }
    }
}

impl AdminFamily {
    fn write(self, a: &HttpCounts, e: &mut Expo) {
        match self {
            AdminFamily::Connections => {
                for (o, n) in a.by_outcome() {
                    e.sample(&[("outcome", o.into())], n);
                }
            }
            AdminFamily::AcceptErrors => e.sample(&[], a.accept_errors),
        }
    }
}

/// The exposition being written: samples go to the family last started.
struct Expo {
    out: String,
    name: Cow<'static, str>,
}

impl Expo {
    fn new(capacity: usize) -> Expo {
        Expo {
            out: String::with_capacity(capacity),
            name: Cow::Borrowed(""),
        }
    }

    /// Starts family `f`: its `# HELP` and `# TYPE` lines.
    fn family(&mut self, f: Family) {
        let _ = writeln!(self.out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(self.out, "# TYPE {} {}", f.name, f.kind);
        self.name = f.name;
    }

    /// One sample of the current family.
    fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(&self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_into(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Renders the exposition of `s`.
pub fn render(s: &Snapshot, admin: &HttpCounts) -> String {
    let backends: usize = s.listeners.iter().map(|l| l.backends.len()).sum();
    let mut e = Expo::new(16 * 1024 + backends * 2300);
    for &f in DaemonFamily::ALL {
        e.family(f.family());
        f.write(s, &mut e);
    }
    for &f in ListenerFamily::ALL {
        e.family(f.family());
        for l in &s.listeners {
            f.write(l, &mut e);
        }
    }
    for stat in data_plane_stats() {
        e.family(data_plane_family(stat));
        for l in &s.listeners {
            // A listener whose plane has no such counter has no sample.
            if let Some(v) = l.stat(stat.name) {
                e.sample(&[("listener", &l.name)], v);
            }
        }
    }
    for &f in BackendFamily::ALL {
        e.family(f.family());
        for l in &s.listeners {
            for b in &l.backends {
                f.write(l, b, &mut e);
            }
        }
    }
    for &f in AdminFamily::ALL {
        e.family(f.family());
        f.write(admin, &mut e);
    }
    e.out
}

/// The label-value tables of `docs/metrics.md` (between its `BEGIN GENERATED` and
/// `END GENERATED` markers), generated from the enums' doc comments so that the
/// reference cannot drift from the code.
pub fn reference_tables() -> String {
    use strum::EnumMessage;
    fn doc(d: Option<&str>) -> String {
        d.unwrap_or("")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    }
    let mut o = String::new();
    // Rows of cells after the first (the label value or metric, in backquotes).
    let mut table = |title: &str, head: &[&str], rows: Vec<(String, Vec<String>)>| {
        let _ = writeln!(o, "### {title}\n");
        let _ = writeln!(o, "| {} |", head.join(" | "));
        let _ = writeln!(o, "|{}", " --- |".repeat(head.len()));
        for (name, cells) in rows {
            let _ = writeln!(o, "| `{name}` | {} |", cells.join(" | "));
        }
        let _ = writeln!(o);
    };
    table(
        "Routing outcomes (`cidlb_routed_total`)",
        &["`outcome`", "meaning"],
        RouteOutcome::iter()
            .map(|x| {
                (
                    <&str>::from(x).to_string(),
                    vec![doc(x.get_documentation())],
                )
            })
            .collect(),
    );
    table(
        "Drop reasons (`cidlb_dropped_total`)",
        &["`reason`", "meaning"],
        DropReason::iter()
            .map(|x| {
                (
                    <&str>::from(x).to_string(),
                    vec![doc(x.get_documentation())],
                )
            })
            .collect(),
    );
    table(
        "Events (`cidlb_events_total`)",
        &["`event`", "meaning"],
        Event::iter()
            .map(|x| {
                (
                    <&str>::from(x).to_string(),
                    vec![doc(x.get_documentation())],
                )
            })
            .collect(),
    );
    table(
        "Health-check results (`cidlb_health_checks_total`)",
        &["`result`", "meaning"],
        ProbeResult::ALL
            .iter()
            .map(|r| (r.name().to_string(), vec![r.description().to_string()]))
            .collect(),
    );
    table(
        "Data-plane counters (per listener: a NAT listener has the ones from `client_datagrams` to `event_logs_suppressed`, an `xdp-dr` listener those from `passed_other` on)",
        &["metric", "type", "meaning"],
        data_plane_families()
            .map(|f| {
                (
                    f.name.into_owned(),
                    vec![f.kind.to_string(), f.help.to_string()],
                )
            })
            .collect(),
    );
    table(
        "Admin API connections (`cidlb_admin_connections_total`)",
        &["`outcome`", "meaning"],
        HttpCounts::default()
            .by_outcome()
            .map(|(x, _)| {
                let name: &str = x.into();
                (name.to_string(), vec![doc(x.get_documentation())])
            })
            .collect(),
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};
    use std::time::{Duration, Instant};

    use cidlb_core::plane::Traffic;
    use cidlb_core::{BackendId, Counters};
    use cidlb_net::StatsSnapshot;

    use crate::http::HttpStats;

    /// A snapshot with `nl` listeners of `nb` backends each, every counter distinct;
    /// the first listener's name needs escaping.
    fn snapshot(nl: usize, nb: usize) -> Snapshot {
        let mut k = 0u64;
        let mut next = || {
            k += 1;
            k
        };
        let states = [BackendState::Up, BackendState::Draining, BackendState::Down];
        let mut listeners = Vec::new();
        for li in 0..nl {
            let mut counters = Counters::default();
            for x in counters
                .routed
                .iter_mut()
                .chain(counters.dropped.iter_mut())
                .chain(counters.events.iter_mut())
            {
                *x = next();
            }
            let stats = StatsSnapshot {
                client_datagrams: next(),
                client_bytes: next(),
                oversized_datagrams: next(),
                upstream_datagrams: next(),
                upstream_bytes: next(),
                upstream_send_errors: next(),
                backend_datagrams: next(),
                backend_bytes: next(),
                reply_datagrams: next(),
                reply_send_errors: next(),
                upstreams_opened: next(),
                upstreams_expired: next(),
                upstreams_evicted: next(),
                upstream_open_errors: next(),
                transparent_bind_errors: next(),
                upstreams_open: next(),
                event_logs_suppressed: next(),
            }
            .samples();
            // The second of three or more listeners is an XDP one (its plane's own
            // counters instead of the NAT plane's).
            let stats = if li == 2 {
                cidlb_xdp::XDP_STATS
                    .iter()
                    .chain(&cidlb_xdp::SLOW_PATH_STATS)
                    .map(|s| (*s, next()))
                    .collect()
            } else {
                stats
            };
            let mut l = ListenerSnapshot {
                name: if li == 0 {
                    "we\"ird\\na\nme".into()
                } else {
                    format!("l{li}")
                },
                address: "127.0.0.1:4433".parse().unwrap(),
                routing: Default::default(),
                cid_length: Some(8),
                counters,
                tables: cidlb_core::plane::TableSizes {
                    flows: next() as usize,
                    bindings: next() as usize,
                    max_flows: next() as usize,
                    max_bindings: next() as usize,
                    flow_idle: Duration::from_secs(600),
                    binding_idle: Duration::from_secs(86400),
                    flow_bytes: next() as usize,
                    binding_bytes: next() as usize,
                    source_bytes: next() as usize,
                },
                stats,
                backends: Vec::new(),
            };
            for bi in 0..nb {
                l.backends.push(BackendSnapshot {
                    name: format!("backend-{bi}"),
                    id: BackendId(bi as u16),
                    address: format!("10.0.{li}.{bi}:4433").parse().unwrap(),
                    state: states[bi % 3],
                    unreachable: None,
                    admin: states[(bi / 3) % 3],
                    healthy: bi % 2 == 0,
                    checks_enabled: true,
                    last_check: None,
                    pending: 0,
                    health_changed_secs: None,
                    weight: next() as u32,
                    flows: next() as usize,
                    bindings: next() as usize,
                    traffic: Traffic {
                        to_backend_datagrams: next(),
                        to_backend_bytes: next(),
                        from_backend_datagrams: next(),
                        from_backend_bytes: next(),
                    },
                    checks: std::array::from_fn(|_| next()),
                    went_up: next(),
                    went_down: next(),
                });
            }
            listeners.push(l);
        }
        Snapshot {
            generation: next(),
            started: UNIX_EPOCH + Duration::from_millis(1_714_000_000_123),
            reloads_ok: next(),
            reloads_rejected: next(),
            last_reload: Duration::from_millis(next()),
            health: Default::default(),
            listeners,
        }
    }

    /// The admin server's counts: outcome number i counted i + 1 times, one accept
    /// error.
    fn admin_counts() -> HttpCounts {
        let admin = HttpStats::default();
        for (i, (o, _)) in HttpCounts::default().by_outcome().enumerate() {
            for _ in 0..=i {
                admin.count(o);
            }
        }
        admin.count_accept_error();
        admin.get()
    }

    /// A sample line split into its name, labels (values unescaped) and value.
    fn parse_sample(line: &str) -> (&str, Vec<(String, String)>, &str) {
        let (series, value) = line.rsplit_once(' ').expect("a value");
        let Some((name, rest)) = series.split_once('{') else {
            return (series, Vec::new(), value);
        };
        let mut labels = Vec::new();
        let mut rest = rest.strip_suffix('}').expect("labels end with }");
        while !rest.is_empty() {
            let (k, v) = rest.split_once("=\"").expect("label=\"value\"");
            let mut val = String::new();
            let mut chars = v.char_indices();
            let end = loop {
                match chars.next().expect("a closing quote") {
                    (_, '\\') => match chars.next().expect("an escaped char").1 {
                        '\\' => val.push('\\'),
                        '"' => val.push('"'),
                        'n' => val.push('\n'),
                        c => panic!("bad escape \\{c} in {line:?}"),
                    },
                    (i, '"') => break i,
                    (_, '\n') => panic!("raw line feed in {line:?}"),
                    (_, c) => val.push(c),
                }
            };
            labels.push((k.to_string(), val));
            rest = &v[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
        (name, labels, value)
    }

    fn valid_name(n: &str) -> bool {
        n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    }

    #[test]
    fn label_values_are_escaped() {
        let mut e = Expo::new(0);
        e.name = "m".into();
        e.sample(&[("a", "x\"y\\z\nw")], 3);
        assert_eq!(e.out, "m{a=\"x\\\"y\\\\z\\nw\"} 3\n");
    }

    #[test]
    fn family_names_are_valid_and_unique() {
        let mut seen = HashSet::new();
        for Family { name, kind, help } in families() {
            assert!(seen.insert(name.clone()), "{name} twice");
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            assert!(name.starts_with("cidlb_"));
            assert_eq!(kind == Kind::Counter, name.ends_with("_total"), "{name}");
            assert!(!help.is_empty() && !help.contains(['\n', '\\']), "{name}");
            assert!(
                !help.starts_with(' ') && !help.contains("  "),
                "{name}: {help:?}"
            );
        }
    }

    /// The exposition is well-formed: every family of [`families`] once, in order,
    /// each sample under its own family with valid, escaped labels, and no series
    /// twice.
    #[test]
    fn exposition_is_every_family_with_valid_unique_samples() {
        let s = snapshot(3, 4);
        let text = render(&s, &admin_counts());
        let fams = families();
        let mut declared = Vec::new();
        let mut series = HashSet::new();
        let mut samples: HashMap<String, usize> = HashMap::new();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if let Some(help) = line.strip_prefix("# HELP ") {
                let ty = lines.next().expect("# TYPE after # HELP");
                let (name, help) = help.split_once(' ').unwrap();
                let (tname, kind) = ty.strip_prefix("# TYPE ").unwrap().split_once(' ').unwrap();
                assert_eq!(name, tname);
                declared.push((name.to_string(), kind.to_string(), help.to_string()));
                continue;
            }
            assert!(!line.starts_with('#'), "{line}");
            let (name, labels, value) = parse_sample(line);
            let current = &declared.last().expect("a family before its samples").0;
            assert_eq!(name, current, "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let mut keys = HashSet::new();
            for (k, _) in &labels {
                assert!(valid_name(k) && !k.starts_with("__"), "{line}");
                assert!(keys.insert(k.clone()), "label twice: {line}");
            }
            assert!(
                series.insert((name.to_string(), labels)),
                "series twice: {line}"
            );
            *samples.entry(name.to_string()).or_default() += 1;
        }
        let want: Vec<_> = fams
            .iter()
            .map(|f| (f.name.to_string(), f.kind.to_string(), f.help.to_string()))
            .collect();
        assert_eq!(declared, want);
        for f in &fams {
            assert!(
                samples.get(&*f.name).copied().unwrap_or(0) > 0,
                "{} has no sample",
                f.name
            );
        }
        // The escaped listener name came back whole.
        assert!(series.contains(&(
            "cidlb_flows".to_string(),
            vec![("listener".to_string(), "we\"ird\\na\nme".to_string())]
        )));
        // Values land where they belong.
        let l = &s.listeners[1];
        assert!(text.contains(&format!(
            "\ncidlb_listener_upstreams_open{{listener=\"l1\"}} {}\n",
            l.stat("upstreams_open").unwrap()
        )));
        assert!(text.contains(&format!(
            "\ncidlb_listener_upstream_send_errors_total{{listener=\"l1\"}} {}\n",
            l.stat("upstream_send_errors").unwrap()
        )));
        let b = &l.backends[2];
        assert!(text.contains(&format!(
            "\ncidlb_backend_bytes_total{{listener=\"l1\",backend=\"backend-2\",direction=\"from_backend\"}} {}\n",
            b.traffic.from_backend_bytes
        )));
        assert!(text.contains(&format!(
            "\ncidlb_health_checks_total{{listener=\"l1\",backend=\"backend-2\",result=\"no_socket\"}} {}\n",
            b.checks[8]
        )));
        assert!(text.contains(
            "\ncidlb_backend_state{listener=\"l1\",backend=\"backend-2\",state=\"down\"} 1\n"
        ));
        assert!(text.contains("\ncidlb_admin_connections_total{outcome=\"served\"} 1\n"));
        assert!(text.contains("\ncidlb_admin_connections_total{outcome=\"handler_panic\"} 5\n"));
        assert!(text.contains("\ncidlb_admin_accept_errors_total 1\n"));
        assert!(text.contains("\ncidlb_start_time_seconds 1714000000.123\n"));
    }

    /// Prints what a scrape of 3 listeners × 100 backends costs (no assertion on time):
    /// `cargo test --release -p cidlb --lib metrics::tests::render_timing -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, run in release"]
    fn render_timing() {
        let s = snapshot(3, 100);
        let n = 500;
        let mut bytes = 0;
        let t = Instant::now();
        for _ in 0..n {
            bytes += render(&s, &admin_counts()).len();
        }
        let samples = render(&s, &admin_counts())
            .lines()
            .filter(|l| !l.starts_with('#'))
            .count();
        eprintln!(
            "render 3 listeners x 100 backends: {:?} per scrape, {} samples, {} bytes",
            t.elapsed() / n,
            samples,
            bytes / n as usize
        );
    }

    /// The generated part of docs/metrics.md is what the code says. Run with
    /// `CIDLB_BLESS=1` to rewrite it after changing an enum.
    #[test]
    fn docs_tables_are_generated_from_the_enums() {
        const BEGIN: &str = "<!-- BEGIN GENERATED";
        const END: &str = "<!-- END GENERATED -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md");
        let doc = std::fs::read_to_string(path).expect("docs/metrics.md");
        let b = doc.find(BEGIN).expect("BEGIN GENERATED marker");
        let b = b + doc[b..].find("-->").expect("end of marker") + 3;
        let e = doc.find(END).expect("END GENERATED marker");
        let want = format!("\n\n{}", reference_tables());
        if doc[b..e] != want {
            if std::env::var_os("CIDLB_BLESS").is_some() {
                let new = format!("{}{}{}", &doc[..b], want, &doc[e..]);
                std::fs::write(path, new).expect("rewrite docs/metrics.md");
            } else {
                panic!(
                    "docs/metrics.md is out of date with the enums; run \
                     `CIDLB_BLESS=1 cargo test -p cidlb --lib metrics` to regenerate it"
                );
            }
        }
    }

    /// Every family has a row in the table of docs/metrics.md (the data plane's
    /// `cidlb_listener_*` one row) with its type and every label it is exported with,
    /// and every label value generated from an enum is listed.
    #[test]
    fn docs_list_every_family_its_type_labels_and_values() {
        let doc = include_str!("../../../docs/metrics.md");
        let rows: HashMap<&str, Vec<&str>> = doc
            .lines()
            .filter_map(|l| {
                // "| `cidlb_name` | type | labels | what |"
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let name = cells.get(1)?.strip_prefix("`cidlb_")?.strip_suffix('`')?;
                Some((name, cells[2..].to_vec()))
            })
            .collect();
        let mut labels: HashMap<String, HashSet<String>> = HashMap::new();
        for line in render(&snapshot(3, 1), &admin_counts())
            .lines()
            .filter(|l| !l.starts_with('#'))
        {
            let (name, ls, _) = parse_sample(line);
            labels
                .entry(name.to_string())
                .or_default()
                .extend(ls.into_iter().map(|(k, _)| k));
        }
        for f in families() {
            let data_plane = f.name.starts_with("cidlb_listener_");
            let key = if data_plane {
                "listener_*"
            } else {
                &f.name["cidlb_".len()..]
            };
            let row = rows
                .get(key)
                .unwrap_or_else(|| panic!("docs/metrics.md has no row for `{}`", f.name));
            if data_plane {
                assert_eq!(row[0], "counter / gauge", "type of `cidlb_listener_*`");
                assert!(
                    doc.contains(&format!("| `{}` |", f.name)),
                    "{} not in the table",
                    f.name
                );
            } else {
                assert_eq!(
                    row[0],
                    f.kind.as_str(),
                    "type of `{}` in docs/metrics.md",
                    f.name
                );
            }
            let used = &labels[&*f.name];
            for l in used {
                assert!(
                    row[1].contains(&format!("`{l}`")),
                    "docs/metrics.md: `{}` lacks its label `{l}`",
                    f.name
                );
            }
            if used.is_empty() {
                assert!(matches!(row[1], "" | "—"), "`{}` has no labels", f.name);
            }
        }
        let values = RouteOutcome::iter()
            .map(<&str>::from)
            .chain(DropReason::iter().map(<&str>::from))
            .chain(Event::iter().map(<&str>::from))
            .chain(ProbeResult::ALL.iter().map(|r| r.name()))
            .chain(HttpCounts::default().by_outcome().map(|(o, _)| o.into()));
        for v in values {
            assert!(
                doc.contains(&format!("`{v}`")),
                "docs/metrics.md lacks `{v}`"
            );
        }
    }
}
