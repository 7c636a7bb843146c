//! `packaging/`: the Prometheus alert rules and the Grafana dashboard.
//!
//! `promtool check rules` checks the rules, `promtool test rules` runs their unit tests
//! (`cidlb-alerts.test.yml`), and every dashboard query goes through `promtool` as a
//! recording rule. Every metric family and every label value of an enumerated label
//! (outcome, reason, event...) that the rules, their tests or the dashboard name must be
//! in `docs/metrics.md` (which `cargo test -p cidlb --lib metrics` keeps in step with the
//! code), so none of them can drift from what cidlb exports.
//!
//! `promtool` comes with Debian's `prometheus` package (`scripts/test.sh` installs it).
//! Without it, the tests that need it say so and pass, unless `CIDLB_REQUIRE_PRIVILEGED=1`
//! (set by `scripts/test.sh`) makes them fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const RULES: &str = "packaging/prometheus/cidlb-alerts.yml";
const RULE_TESTS: &str = "packaging/prometheus/cidlb-alerts.test.yml";
const DASHBOARD: &str = "packaging/grafana/cidlb-dashboard.json";

/// Labels whose values are enumerated in docs/metrics.md.
const ENUM_LABELS: [&str; 8] = [
    "outcome",
    "reason",
    "event",
    "result",
    "state",
    "direction",
    "to",
    "table",
];

/// Set by scripts/test.sh: a test that lacks its tool fails instead of skipping.
const REQUIRE: &str = "CIDLB_REQUIRE_PRIVILEGED";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Whether `promtool` runs here; if not, skips `test` (prints why) or, with
/// `CIDLB_REQUIRE_PRIVILEGED=1`, fails it.
fn promtool_or_skip(test: &str) -> bool {
    let why = match Command::new("promtool").arg("--version").output() {
        Ok(out) if out.status.success() => return true,
        Ok(out) => format!("`promtool --version` failed: {}", out.status),
        Err(e) => format!("promtool not found: {e}"),
    };
    if std::env::var(REQUIRE).is_ok_and(|v| v == "1") {
        panic!("{test}: {why} (Debian package: prometheus)");
    }
    // Written to the stderr handle, past libtest's capture: a skip is seen.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {test}: {why}; install Debian's prometheus package, or set {REQUIRE}=1 to fail instead"
    );
    false
}

/// Runs `promtool ARGS` in `dir` and returns its output; fails the test on an error.
fn promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// The metric families of docs/metrics.md's tables (the family list and the data-plane
/// counters that its `cidlb_listener_*` row stands for).
fn documented_families() -> BTreeSet<String> {
    let doc = read("docs/metrics.md");
    let families: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `cidlb_"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(name, _)| format!("cidlb_{name}"))
        .filter(|name| !name.ends_with('*'))
        .collect();
    assert!(families.len() > 30, "{families:?}");
    families
}

/// Every word that docs/metrics.md quotes as code: the label values are among them.
fn documented_words() -> BTreeSet<String> {
    let doc = read("docs/metrics.md");
    doc.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The `cidlb_*` names in PromQL (or any) text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("cidlb_") {
        if text[..i].chars().next_back().is_some_and(ident_char) {
            continue;
        }
        let end = text[i..]
            .find(|c: char| !ident_char(c))
            .map_or(text.len(), |e| i + e);
        names.insert(text[i..end].to_owned());
    }
    names
}

/// The values that matchers on [`ENUM_LABELS`] compare with (`event="x"`,
/// `event=~"x|y"`, `event!="x"`), by label.
fn enum_label_values(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for label in ENUM_LABELS {
        for (i, _) in text.match_indices(label) {
            if text[..i].chars().next_back().is_some_and(ident_char) {
                continue;
            }
            let rest = text[i + label.len()..].trim_start();
            let Some(rest) = ["=~", "!~", "!=", "="]
                .iter()
                .find_map(|op| rest.strip_prefix(op))
            else {
                continue;
            };
            // In YAML or JSON text a quote may be escaped.
            let rest = rest.trim_start().trim_start_matches('\\');
            let Some(rest) = rest.strip_prefix('"') else {
                continue;
            };
            let value = &rest[..rest.find(['"', '\\']).unwrap_or(rest.len())];
            found
                .entry(label.to_owned())
                .or_default()
                .extend(value.split('|').map(str::to_owned));
        }
    }
    found
}

/// Fails unless every `cidlb_*` metric and every enumerated label value in `text` is
/// documented; `what` names the file.
fn assert_documented(what: &str, text: &str) {
    let families = documented_families();
    let unknown: Vec<String> = metric_names(text)
        .into_iter()
        .filter(|n| !families.contains(n))
        .collect();
    assert!(
        unknown.is_empty(),
        "{what} uses metrics that docs/metrics.md does not list: {unknown:?}"
    );
    let words = documented_words();
    for (label, values) in enum_label_values(text) {
        let unknown: Vec<&String> = values.iter().filter(|v| !words.contains(*v)).collect();
        assert!(
            unknown.is_empty(),
            "{what}: {label} values that docs/metrics.md does not document: {unknown:?}"
        );
    }
}

/// The alert names of the rules file.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_owned())
        .collect()
}

#[test]
fn alert_rules_pass_promtool_check() {
    if !promtool_or_skip("alert_rules_pass_promtool_check") {
        return;
    }
    let out = promtool(&workspace(), &["check", "rules", RULES]);
    let alerts = alert_names(&read(RULES));
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{out}"
    );
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    if !promtool_or_skip("alert_rules_pass_their_unit_tests") {
        return;
    }
    let dir = workspace().join("packaging/prometheus");
    let file = Path::new(RULE_TESTS).file_name().unwrap().to_str().unwrap();
    let out = promtool(&dir, &["test", "rules", file]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_is_tested_firing() {
    let tests = read(RULE_TESTS);
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for alert in alert_names(&read(RULES)) {
        let fires = lines.windows(3).any(|w| {
            w[0] == format!("alertname: {alert}")
                && w[1] == "exp_alerts:"
                && w[2].starts_with("- exp_labels:")
        });
        assert!(fires, "{RULE_TESTS} has no test where {alert} fires");
    }
}

#[test]
fn alert_rules_use_documented_metrics_and_labels() {
    let rules = read(RULES);
    assert_documented(RULES, &rules);
    assert_documented(RULE_TESTS, &read(RULE_TESTS));
    let used = metric_names(&rules);
    for needed in [
        "cidlb_backend_up",
        "cidlb_backend_state",
        "cidlb_flows_max",
        "cidlb_bindings_max",
        "cidlb_listener_upstream_open_errors_total",
        "cidlb_config_reloads_total",
        "cidlb_dropped_total",
        "cidlb_listener_client_datagrams_total",
    ] {
        assert!(used.contains(needed), "the rules do not use {needed}");
    }
    let alerts = alert_names(&rules);
    let unique: BTreeSet<&String> = alerts.iter().collect();
    assert_eq!(
        unique.len(),
        alerts.len(),
        "duplicate alert names: {alerts:?}"
    );
    // Every alert has a severity and a summary.
    for block in rules.split("- alert:").skip(1) {
        let name = block.lines().next().unwrap().trim();
        assert!(
            ["critical", "warning", "info"]
                .iter()
                .any(|s| block.contains(&format!("severity: {s}"))),
            "{name}: no severity"
        );
        assert!(block.contains("summary:"), "{name}: no summary");
    }
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is valid JSON")
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

/// Every PromQL query of the dashboard: panel targets and annotations.
fn dashboard_queries(d: &Value) -> Vec<String> {
    let mut queries: Vec<String> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| str_of(&t, "expr").to_owned())
        .collect();
    queries.extend(
        d["annotations"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["expr"].as_str().map(str::to_owned)),
    );
    queries
}

/// The series selectors of the dashboard's `label_values(SELECTOR, LABEL)` variables.
fn variable_selectors(d: &Value) -> Vec<String> {
    d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let q = str_of(&v["query"], "query");
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .unwrap_or_else(|| panic!("variable query {q:?}"));
            inner.rsplit_once(',').unwrap().0.trim().to_owned()
        })
        .collect()
}

/// `query` with Grafana's variables replaced as Prometheus would see them: the
/// interval variables by durations, the dashboard's own (multi-value regex matchers)
/// by `.*`.
fn substitute(query: &str, variables: &BTreeSet<String>) -> String {
    let mut q = query
        .replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h");
    for v in variables {
        q = q.replace(&format!("=~\"${v}\""), "=~\".*\"");
    }
    assert!(
        !q.contains('$'),
        "a variable outside a regex matcher, or an unknown one: {query}"
    );
    q
}

#[test]
fn dashboard_has_the_expected_structure() {
    let d = dashboard();
    assert!(!str_of(&d, "title").is_empty());
    let uid = str_of(&d, "uid");
    assert!(!uid.is_empty() && uid.len() <= 40, "uid {uid:?}");
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    assert!(d["tags"].as_array().unwrap().contains(&"cidlb".into()));

    // Variables: the data source, then instance, listener and backend filters.
    let vars = d["templating"]["list"].as_array().unwrap();
    let names: Vec<&str> = vars.iter().map(|v| str_of(v, "name")).collect();
    assert_eq!(names, ["datasource", "instance", "listener", "backend"]);
    assert_eq!(
        (str_of(&vars[0], "type"), str_of(&vars[0], "query")),
        ("datasource", "prometheus")
    );
    for v in &vars[1..] {
        assert_eq!(str_of(v, "type"), "query");
        assert_eq!(v["datasource"]["uid"], "${datasource}");
        assert_eq!(v["includeAll"], true);
        assert_eq!(v["allValue"], ".*", "All must be a regex that matches");
    }

    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(u64, u64, u64, u64, String)> = Vec::new();
    let mut titles = BTreeSet::new();
    let mut rows = 0;
    for p in panels {
        let title = str_of(p, "title").to_owned();
        assert!(!title.is_empty());
        let id = p["id"].as_u64().expect("a numeric id");
        assert!(ids.insert(id), "panel id {id} repeats");
        let kind = str_of(p, "type");
        assert!(
            ["row", "stat", "timeseries", "table", "state-timeline"].contains(&kind),
            "{title}: type {kind}"
        );
        let g = &p["gridPos"];
        let [h, w, x, y] = ["h", "w", "x", "y"].map(|k| {
            g[k].as_u64()
                .unwrap_or_else(|| panic!("{title}: gridPos.{k}"))
        });
        assert!(h >= 1 && w >= 1 && x + w <= 24, "{title}: {g}");
        for (bx, by, bw, bh, other) in &boxes {
            let apart = x + w <= *bx || bx + bw <= x || y + h <= *by || by + bh <= y;
            assert!(apart, "{title} overlaps {other}");
        }
        boxes.push((x, y, w, h, title.clone()));
        if kind == "row" {
            rows += 1;
            assert_eq!((w, h), (24, 1), "{title}");
            continue;
        }
        assert!(titles.insert(title.clone()), "two panels named {title}");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let refs: BTreeSet<&str> = targets.iter().map(|t| str_of(t, "refId")).collect();
        assert_eq!(refs.len(), targets.len(), "{title}: refIds repeat");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            assert!(!str_of(t, "expr").trim().is_empty(), "{title}");
        }
    }
    assert!(rows >= 5, "{rows} rows");
    assert!(panels.len() >= 30, "{} panels", panels.len());
    // Panels follow their row: top to bottom.
    let ys: Vec<u64> = panels
        .iter()
        .map(|p| p["gridPos"]["y"].as_u64().unwrap())
        .collect();
    assert!(ys.windows(2).all(|w| w[0] <= w[1]), "{ys:?}");
}

#[test]
fn dashboard_uses_documented_metrics_and_labels() {
    let d = dashboard();
    let mut text = dashboard_queries(&d).join("\n");
    text.push('\n');
    text.push_str(&variable_selectors(&d).join("\n"));
    assert_documented(DASHBOARD, &text);
    let used = metric_names(&text);
    for needed in [
        "cidlb_routed_total",
        "cidlb_dropped_total",
        "cidlb_events_total",
        "cidlb_flows",
        "cidlb_flows_max",
        "cidlb_bindings",
        "cidlb_bindings_max",
        "cidlb_backend_up",
        "cidlb_backend_state",
        "cidlb_backend_datagrams_total",
        "cidlb_backend_bytes_total",
        "cidlb_listener_upstream_open_errors_total",
        "cidlb_admin_connections_total",
        "cidlb_config_reloads_total",
    ] {
        assert!(
            used.contains(needed),
            "the dashboard does not show {needed}"
        );
    }
    assert!(
        enum_label_values(&text)["event"].contains("cid_new_address"),
        "the dashboard does not show NAT rebinding"
    );
}

#[test]
fn dashboard_queries_parse() {
    if !promtool_or_skip("dashboard_queries_parse") {
        return;
    }
    let d = dashboard();
    let variables: BTreeSet<String> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| str_of(v, "name").to_owned())
        .collect();
    let mut queries = dashboard_queries(&d);
    queries.extend(variable_selectors(&d));
    // Each query as a recording rule: promtool parses it (JSON is YAML).
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            serde_json::json!({
                "record": format!("dashboard_query_{i}"),
                "expr": substitute(q, &variables),
            })
        })
        .collect();
    let n = rules.len();
    let file = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    let dir = std::env::temp_dir().join(format!("cidlb-packaging-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dashboard-queries.yml");
    std::fs::write(&path, file.to_string()).unwrap();
    let out = promtool(&dir, &["check", "rules", "dashboard-queries.yml"]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.contains(&format!("SUCCESS: {n} rules found")), "{out}");
}

#[test]
fn docs_point_to_the_packaging_files() {
    for doc in ["README.md", "docs/operation.md"] {
        let text = read(doc);
        for file in [RULES, DASHBOARD] {
            let name = Path::new(file).file_name().unwrap().to_str().unwrap();
            assert!(text.contains(name), "{doc} does not mention {file}");
        }
    }
}

#[test]
fn the_checks_catch_drift() {
    // The scanners see what they must, so that the tests above cannot pass vacuously.
    let q = r#"sum(rate(cidlb_events_total{event=~"cid_new_address|flow_evicted", listener="x"}[5m])) / cidlb_flows_max"#;
    assert_eq!(
        metric_names(q),
        BTreeSet::from(["cidlb_events_total".into(), "cidlb_flows_max".into()])
    );
    assert_eq!(
        enum_label_values(q)["event"],
        BTreeSet::from(["cid_new_address".into(), "flow_evicted".into()])
    );
    assert_eq!(
        enum_label_values(r#"{"expr": "x{reason=\"no_backend\"}"}"#)["reason"],
        BTreeSet::from(["no_backend".into()])
    );
    let words = documented_words();
    assert!(words.contains("cid_new_address") && words.contains("rejected"));
    assert!(!words.contains("cid_new_addr"));
    let families = documented_families();
    assert!(families.contains("cidlb_listener_upstream_open_errors_total"));
    assert!(!families.contains("cidlb_listener_*"));
    let vars = BTreeSet::from(["listener".to_owned()]);
    assert_eq!(
        substitute(
            r#"rate(cidlb_flows{listener=~"$listener"}[$__rate_interval])"#,
            &vars
        ),
        r#"rate(cidlb_flows{listener=~".*"}[5m])"#
    );
}
