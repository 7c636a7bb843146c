//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4).
//!
//! Written by hand rather than through a metrics registry: every number already lives
//! where the data plane keeps it (the router's counters under the listener's lock, the
//! data plane's atomics, the control plane's health counts), and a scrape reads one
//! consistent [`Snapshot`] of them. A registry would need each counter mirrored on the
//! hot path or a custom collector doing the same reading; the exposition itself is a
//! few lines of text per family, checked by the tests below.
//!
//! Label values for routing outcomes, drop reasons and events are the `snake_case`
//! names of [`RouteOutcome`], [`DropReason`] and [`Event`]: every variant is exported,
//! zero or not, so a dashboard can rely on each series existing. `docs/metrics.md`
//! lists every family; a test keeps it in step with this file.

use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use cidlb_core::{BackendState, DropReason, Event, RouteOutcome};
use cidlb_net::health::ProbeResult;
use cidlb_net::StatsSnapshot;
use strum::IntoEnumIterator;

use crate::admin::HttpCounts;
use crate::control::{state_word, BackendSnapshot, ListenerSnapshot, Snapshot};

/// Content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A per-listener gauge read from a snapshot.
type ListenerGauge = fn(&ListenerSnapshot) -> usize;
/// Writes one backend's samples, given its `listener` and `backend` labels.
type PerBackend<'a> = dyn Fn(&mut Expo, &[(&str, &str)], &BackendSnapshot) + 'a;

struct Expo {
    out: String,
}

impl Expo {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
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

/// Every metric family name with its type and help, in exposition order (used by the
/// exposition itself, and by the test that checks `docs/metrics.md`).
pub fn families() -> Vec<(String, &'static str, String)> {
    let mut v: Vec<(String, &'static str, String)> = vec![
        ("cidlb_build_info".into(), "gauge", "Always 1; the version is a label.".into()),
        ("cidlb_start_time_seconds".into(), "gauge", "When the daemon started (Unix time).".into()),
        ("cidlb_config_generation".into(), "gauge", "Configuration generation: 1 at start, +1 per applied reload.".into()),
        ("cidlb_config_reloads_total".into(), "counter", "Reloads by result (ok, rejected).".into()),
        ("cidlb_routed_total".into(), "counter", "Client datagrams forwarded, by routing outcome.".into()),
        ("cidlb_dropped_total".into(), "counter", "Client datagrams dropped, by reason.".into()),
        ("cidlb_events_total".into(), "counter", "Routing events (NAT rebinding = cid_new_address, handshakes = client_hello, expiries, evictions...).".into()),
        ("cidlb_flows".into(), "gauge", "Flows stored (client address:port -> backend).".into()),
        ("cidlb_bindings".into(), "gauge", "CID bindings stored (CID -> backend).".into()),
        ("cidlb_flows_max".into(), "gauge", "Bound of the flow table (limits.max_flows).".into()),
        ("cidlb_bindings_max".into(), "gauge", "Bound of the binding table (limits.max_bindings).".into()),
        ("cidlb_table_bytes".into(), "gauge", "Memory allocated by a routing table (flows, bindings, sources: the per-source new-flow limiter).".into()),
    ];
    for stat in StatsSnapshot::STATS {
        let (full, kind) = stat_family(stat.name(), stat.is_gauge());
        v.push((full, kind, stat.help().to_string()));
    }
    v.extend([
        (
            "cidlb_backend_info".into(),
            "gauge",
            "Always 1; the backend's address is a label.".into(),
        ),
        (
            "cidlb_backend_up".into(),
            "gauge",
            "1 while health checks pass (or are off), 0 while the backend is failing them.".into(),
        ),
        (
            "cidlb_backend_state".into(),
            "gauge",
            "1 for the state the router applies (up, draining, down).".into(),
        ),
        (
            "cidlb_backend_admin_state".into(),
            "gauge",
            "1 for the operator's state (up, draining, down).".into(),
        ),
        (
            "cidlb_backend_weight".into(),
            "gauge",
            "The backend's weight.".into(),
        ),
        (
            "cidlb_backend_flows".into(),
            "gauge",
            "Live flows to the backend.".into(),
        ),
        (
            "cidlb_backend_bindings".into(),
            "gauge",
            "Live CID bindings to the backend.".into(),
        ),
        (
            "cidlb_backend_datagrams_total".into(),
            "counter",
            "Datagrams to (direction=to_backend) and from (from_backend) the backend.".into(),
        ),
        (
            "cidlb_backend_bytes_total".into(),
            "counter",
            "Bytes to (direction=to_backend) and from (from_backend) the backend.".into(),
        ),
        (
            "cidlb_health_checks_total".into(),
            "counter",
            "Health-check results by result.".into(),
        ),
        (
            "cidlb_health_transitions_total".into(),
            "counter",
            "Health flips, by the health reached (to=up, to=down).".into(),
        ),
        (
            "cidlb_admin_connections_total".into(),
            "counter",
            "Admin API connections by outcome (served, bad_request, timed_out, closed_early, handler_panic).".into(),
        ),
        (
            "cidlb_admin_accept_errors_total".into(),
            "counter",
            "Admin API accepts that failed (e.g. out of file descriptors); retried every 100 ms.".into(),
        ),
    ]);
    v
}

/// The name and type of a data-plane counter's family.
fn stat_family(name: &str, is_gauge: bool) -> (String, &'static str) {
    if is_gauge {
        (format!("cidlb_listener_{name}"), "gauge")
    } else {
        (format!("cidlb_listener_{name}_total"), "counter")
    }
}

/// Renders the exposition of `s`.
pub fn render(s: &Snapshot) -> String {
    let fams = families();
    let mut e = Expo {
        out: String::with_capacity(16 * 1024),
    };
    let fam = |e: &mut Expo, name: &str| {
        let (_, kind, help) = fams
            .iter()
            .find(|f| f.0 == name)
            .unwrap_or_else(|| panic!("family {name} is listed in families()"));
        e.family(name, kind, help);
    };
    let ls = &s.listeners;

    fam(&mut e, "cidlb_build_info");
    e.sample(
        "cidlb_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    fam(&mut e, "cidlb_start_time_seconds");
    let start = s
        .started
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    e.sample("cidlb_start_time_seconds", &[], start);
    fam(&mut e, "cidlb_config_generation");
    e.sample("cidlb_config_generation", &[], s.generation);
    fam(&mut e, "cidlb_config_reloads_total");
    e.sample(
        "cidlb_config_reloads_total",
        &[("result", "ok")],
        s.reloads_ok,
    );
    e.sample(
        "cidlb_config_reloads_total",
        &[("result", "rejected")],
        s.reloads_rejected,
    );

    fam(&mut e, "cidlb_routed_total");
    for l in ls {
        for o in RouteOutcome::iter() {
            e.sample(
                "cidlb_routed_total",
                &[("listener", &l.name), ("outcome", o.into())],
                l.counters.routed(o),
            );
        }
    }
    fam(&mut e, "cidlb_dropped_total");
    for l in ls {
        for d in DropReason::iter() {
            e.sample(
                "cidlb_dropped_total",
                &[("listener", &l.name), ("reason", d.into())],
                l.counters.dropped(d),
            );
        }
    }
    fam(&mut e, "cidlb_events_total");
    for l in ls {
        for ev in Event::iter() {
            e.sample(
                "cidlb_events_total",
                &[("listener", &l.name), ("event", ev.into())],
                l.counters.event(ev),
            );
        }
    }
    let per_listener: [(&str, ListenerGauge); 4] = [
        ("cidlb_flows", |l| l.flows),
        ("cidlb_bindings", |l| l.bindings),
        ("cidlb_flows_max", |l| l.max_flows),
        ("cidlb_bindings_max", |l| l.max_bindings),
    ];
    for (name, get) in per_listener {
        fam(&mut e, name);
        for l in ls {
            e.sample(name, &[("listener", &l.name)], get(l));
        }
    }
    fam(&mut e, "cidlb_table_bytes");
    for l in ls {
        e.sample(
            "cidlb_table_bytes",
            &[("listener", &l.name), ("table", "flows")],
            l.flow_bytes,
        );
        e.sample(
            "cidlb_table_bytes",
            &[("listener", &l.name), ("table", "bindings")],
            l.binding_bytes,
        );
        e.sample(
            "cidlb_table_bytes",
            &[("listener", &l.name), ("table", "sources")],
            l.source_bytes,
        );
    }
    for &stat in StatsSnapshot::STATS {
        let (full, _) = stat_family(stat.name(), stat.is_gauge());
        fam(&mut e, &full);
        for l in ls {
            e.sample(&full, &[("listener", &l.name)], l.stats.get(stat));
        }
    }

    // Per backend.
    let each = |e: &mut Expo, f: &PerBackend| {
        for l in ls {
            for b in &l.backends {
                f(e, &[("listener", &l.name), ("backend", &b.name)], b);
            }
        }
    };
    fam(&mut e, "cidlb_backend_info");
    each(&mut e, &|e, lb, b| {
        let addr = b.address.to_string();
        let mut labels = lb.to_vec();
        labels.push(("address", &addr));
        e.sample("cidlb_backend_info", &labels, 1);
    });
    fam(&mut e, "cidlb_backend_up");
    each(&mut e, &|e, lb, b| {
        e.sample("cidlb_backend_up", lb, u8::from(b.healthy))
    });
    for (name, get) in [
        (
            "cidlb_backend_state",
            (|b: &BackendSnapshot| b.state) as fn(&BackendSnapshot) -> BackendState,
        ),
        ("cidlb_backend_admin_state", |b: &BackendSnapshot| b.admin),
    ] {
        fam(&mut e, name);
        each(&mut e, &|e, lb, b| {
            for st in [BackendState::Up, BackendState::Draining, BackendState::Down] {
                let mut labels = lb.to_vec();
                labels.push(("state", state_word(st)));
                e.sample(name, &labels, u8::from(get(b) == st));
            }
        });
    }
    fam(&mut e, "cidlb_backend_weight");
    each(&mut e, &|e, lb, b| {
        e.sample("cidlb_backend_weight", lb, b.weight)
    });
    fam(&mut e, "cidlb_backend_flows");
    each(&mut e, &|e, lb, b| {
        e.sample("cidlb_backend_flows", lb, b.flows)
    });
    fam(&mut e, "cidlb_backend_bindings");
    each(&mut e, &|e, lb, b| {
        e.sample("cidlb_backend_bindings", lb, b.bindings)
    });
    for (name, to, from) in [
        (
            "cidlb_backend_datagrams_total",
            (|b: &BackendSnapshot| b.traffic.to_backend_datagrams) as fn(&BackendSnapshot) -> u64,
            (|b: &BackendSnapshot| b.traffic.from_backend_datagrams) as fn(&BackendSnapshot) -> u64,
        ),
        (
            "cidlb_backend_bytes_total",
            |b: &BackendSnapshot| b.traffic.to_backend_bytes,
            |b: &BackendSnapshot| b.traffic.from_backend_bytes,
        ),
    ] {
        fam(&mut e, name);
        each(&mut e, &|e, lb, b| {
            let mut labels = lb.to_vec();
            labels.push(("direction", "to_backend"));
            e.sample(name, &labels, to(b));
            labels.pop();
            labels.push(("direction", "from_backend"));
            e.sample(name, &labels, from(b));
        });
    }
    fam(&mut e, "cidlb_health_checks_total");
    each(&mut e, &|e, lb, b| {
        for (k, r) in ProbeResult::ALL.iter().enumerate() {
            let mut labels = lb.to_vec();
            labels.push(("result", r.name()));
            e.sample("cidlb_health_checks_total", &labels, b.checks[k]);
        }
    });
    fam(&mut e, "cidlb_health_transitions_total");
    each(&mut e, &|e, lb, b| {
        let mut labels = lb.to_vec();
        labels.push(("to", "up"));
        e.sample("cidlb_health_transitions_total", &labels, b.went_up);
        labels.pop();
        labels.push(("to", "down"));
        e.sample("cidlb_health_transitions_total", &labels, b.went_down);
    });
    fam(&mut e, "cidlb_admin_connections_total");
    let a = &s.admin;
    for (outcome, n) in a.by_outcome() {
        e.sample(
            "cidlb_admin_connections_total",
            &[("outcome", outcome.into())],
            n,
        );
    }
    fam(&mut e, "cidlb_admin_accept_errors_total");
    e.sample("cidlb_admin_accept_errors_total", &[], a.accept_errors);
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
        "Data-plane counters (per listener)",
        &["metric", "type", "meaning"],
        StatsSnapshot::STATS
            .iter()
            .map(|s| {
                let (full, kind) = stat_family(s.name(), s.is_gauge());
                (full, vec![kind.to_string(), s.help().to_string()])
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
    use std::collections::HashSet;

    #[test]
    fn label_values_are_escaped() {
        let mut e = Expo { out: String::new() };
        e.sample("m", &[("a", "x\"y\\z\nw")], 3);
        assert_eq!(e.out, "m{a=\"x\\\"y\\\\z\\nw\"} 3\n");
    }

    #[test]
    fn family_names_are_valid_and_unique() {
        let mut seen = HashSet::new();
        for (name, kind, help) in families() {
            assert!(seen.insert(name.clone()), "{name} twice");
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
            assert!(name.starts_with("cidlb_"));
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
            assert!(!help.is_empty() && !help.contains('\n'));
        }
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

    /// Every family in `families()` is listed in docs/metrics.md, and so is every
    /// label value generated from an enum.
    #[test]
    fn docs_list_every_family_and_label_value() {
        let doc = include_str!("../../../docs/metrics.md");
        for (name, _, _) in families() {
            assert!(
                doc.contains(&format!("`{name}`")),
                "docs/metrics.md lacks `{name}`"
            );
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
