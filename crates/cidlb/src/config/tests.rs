//! Tests of the whole way from TOML text to a [`Config`] or a [`ConfigError`], and the
//! helpers that the tests of the submodules share.

use std::fmt::Write as _;

use super::load::quick_flag;
use super::validate::{is_prime, prev_prime};
use super::*;

pub(super) const EXAMPLE: &str = include_str!("../../examples/cidlb.toml");

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, "cidlb.toml")
}

fn err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(c) => panic!("accepted:\n{text}\n=> {c:?}"),
        Err(e) => e,
    }
}

/// A valid listener with `extra` lines appended to its table, then two backends.
pub(super) fn one_listener(extra: &str) -> String {
    format!(
        "[[listener]]\naddress = \"0.0.0.0:5684\"\ncid_length = 6\n{extra}\n\
         [[listener.backend]]\naddress = \"10.0.0.1:5684\"\n\
         [[listener.backend]]\naddress = \"10.0.0.2:5684\"\n"
    )
}

/// Asserts the error's path and that its display contains every fragment.
pub(super) fn check(text: &str, path: &str, fragments: &[&str]) -> ConfigError {
    let e = err(text);
    assert_eq!(e.path(), Some(path), "wrong path in: {e}\nfor:\n{text}");
    let shown = e.to_string();
    assert!(shown.starts_with("cidlb.toml: "), "{shown}");
    for f in fragments {
        assert!(shown.contains(f), "{shown:?} lacks {f:?}");
    }
    e
}

#[test]
fn reference_example_parses() {
    let c = parse(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.workers, Some(2));
    assert_eq!(c.timeouts.flow_idle, Duration::from_secs(600));
    assert_eq!(c.timeouts.cid_binding_idle, Duration::from_secs(86_400));
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.hashing, Hashing::default());
    assert!(c.listeners.len() >= 2);
    let l = &c.listeners[0];
    assert_eq!(l.name, "coaps");
    assert_eq!(l.address, "0.0.0.0:5684".parse().unwrap());
    assert_eq!(l.cid_length, Some(6));
    assert_eq!(l.multi_cid, MultiCidPolicy::First);
    assert_eq!(l.routing, RoutingMode::Cid);
    assert_eq!(l.upstream_source, Some("10.0.0.5".parse().unwrap()));
    assert_eq!(l.backends[0].name, "dtls-1");
    assert_eq!(l.backends[0].address, "10.0.0.1:5684".parse().unwrap());
    assert_eq!(l.backends[0].weight, 1);
    assert_eq!(l.backends[0].state, BackendState::Up);
    // Every enum value appears somewhere in the example.
    let all_b = || c.listeners.iter().flat_map(|l| &l.backends);
    for s in [BackendState::Up, BackendState::Draining, BackendState::Down] {
        assert!(all_b().any(|b| b.state == s), "{s:?}");
    }
    assert!(c
        .listeners
        .iter()
        .any(|l| l.routing == RoutingMode::Address));
    let ex = c.explain();
    for b in all_b() {
        assert!(ex.contains(&b.name), "{ex}");
    }
}

#[test]
fn new_flows_per_source() {
    let base = one_listener("");
    let limits = |head: &str| {
        parse(&format!("[limits]\n{head}\n{base}"))
            .unwrap_or_else(|e| panic!("{e}"))
            .limits
    };
    assert_eq!(limits("").new_flow_limit(), None);
    assert_eq!(limits("new_flows_per_source = 0").new_flow_limit(), None);
    assert_eq!(
        limits("new_flows_per_source = 0\nnew_flows_burst = 0").new_flow_limit(),
        None
    );
    let l = limits("new_flows_per_source = 100\nnew_flows_burst = 200");
    assert_eq!((l.new_flows_per_source, l.new_flows_burst), (100, 200));
    assert_eq!(l.new_flow_limit(), Some((100, 200)));
    // The burst defaults to the rate.
    assert_eq!(
        limits("new_flows_per_source = 50").new_flow_limit(),
        Some((50, 50))
    );
    assert_eq!(
        limits("new_flows_per_source = 50\nnew_flows_burst = 0").new_flow_limit(),
        Some((50, 50))
    );
    // The router gets it.
    let c = parse(&format!(
        "[limits]\nnew_flows_per_source = 7\nnew_flows_burst = 9\n{base}"
    ))
    .unwrap();
    let specs = crate::specs::listener_specs(&c, [1, 2, 3, 4]);
    assert_eq!(specs[0].router.new_flows_per_source, Some((7, 9)));
    assert!(c
        .explain()
        .contains("new_flows_per_source = 7, new_flows_burst = 9"));
    assert_eq!(
        crate::specs::listener_specs(&parse(&base).unwrap(), [1, 2, 3, 4])[0]
            .router
            .new_flows_per_source,
        None
    );

    let e = |head: &str, fragments: &[&str]| {
        check(
            &format!("[limits]\n{head}\n{base}"),
            if head.contains("burst") {
                "limits.new_flows_burst"
            } else {
                "limits.new_flows_per_source"
            },
            fragments,
        )
    };
    e(
        "new_flows_per_source = -1",
        &["-1 is out of range 0..=1000000"],
    );
    e(
        "new_flows_per_source = 1000001",
        &["out of range 0..=1000000"],
    );
    e(
        "new_flows_per_source = 10\nnew_flows_burst = 1000001",
        &["out of range 0..=1000000"],
    );
    e(
        "new_flows_burst = 200",
        &["limits.new_flows_per_source is 0 or absent", "line 2"],
    );
    e(
        "new_flows_per_source = 100\nnew_flows_burst = 50",
        &["50 is smaller than limits.new_flows_per_source (100)"],
    );
    // Every key of the section appears in the reference example.
    for key in [
        "max_flows",
        "max_bindings",
        "new_flows_per_source",
        "new_flows_burst",
    ] {
        assert!(
            EXAMPLE.lines().any(|l| l.starts_with(&format!("{key} ="))),
            "{key}"
        );
    }
}

#[test]
fn minimal_config_gets_defaults() {
    let c = parse(
        "[[listener]]\naddress = \"127.0.0.1:5684\"\ncid_length = 4\n\
         [[listener.backend]]\naddress = \"127.0.0.1:6000\"\n",
    )
    .unwrap();
    assert_eq!(c.workers, None);
    assert!(c.effective_workers() >= 1);
    assert_eq!(c.timeouts.flow_idle, Duration::from_secs(600));
    assert_eq!(c.timeouts.cid_binding_idle, Duration::from_secs(24 * 3600));
    assert_eq!(c.limits.max_flows, 100_000);
    assert_eq!(c.limits.max_bindings, 1_000_000);
    assert_eq!(c.hashing.seed, 0);
    assert_eq!(c.hashing.maglev_table_size, 65_537);
    let l = &c.listeners[0];
    assert_eq!(l.name, "listener-0");
    assert_eq!(l.multi_cid, MultiCidPolicy::First);
    assert_eq!(l.routing, RoutingMode::Cid);
    assert_eq!(l.upstream_source, None);
    assert_eq!(
        l.backends,
        vec![BackendConfig {
            name: "127.0.0.1:6000".into(),
            address: "127.0.0.1:6000".parse().unwrap(),
            weight: 1,
            state: BackendState::Up,
            server_id: None,
            dns: None,
        }]
    );
}

#[test]
fn every_value_is_read() {
    let c = parse(
        "workers = 3\n\
         [timeouts]\nflow_idle = \"90s\"\ncid_binding_idle = \"1h 30m\"\n\
         [limits]\nmax_flows = 7\nmax_bindings = 9\n\
         [hashing]\nseed = 42\nmaglev_table_size = 251\n\
         [[listener]]\nname = \"a\"\naddress = \"[::1]:5684\"\ncid_length = 32\n\
         multi_cid = \"split\"\nupstream_source = \"::1\"\n\
         [[listener.backend]]\nname = \"x\"\naddress = \"[::1]:7000\"\nweight = 10000\nstate = \"draining\"\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nrouting = \"address\"\nmulti_cid = \"drop\"\n\
         [[listener.backend]]\naddress = \"127.0.0.1:7000\"\nweight = 0\nstate = \"down\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.workers, Some(3));
    assert_eq!(c.timeouts.flow_idle, Duration::from_secs(90));
    assert_eq!(c.timeouts.cid_binding_idle, Duration::from_secs(5400));
    assert_eq!(
        c.limits,
        Limits {
            max_flows: 7,
            max_bindings: 9,
            new_flows_per_source: 0,
            new_flows_burst: 0,
        }
    );
    assert_eq!(
        c.hashing,
        Hashing {
            seed: 42,
            maglev_table_size: 251
        }
    );
    let (a, b) = (&c.listeners[0], &c.listeners[1]);
    assert_eq!(
        (a.cid_length, a.multi_cid),
        (Some(32), MultiCidPolicy::Split)
    );
    assert_eq!(a.upstream_source, Some("::1".parse().unwrap()));
    assert_eq!(a.backends[0].weight, 10_000);
    assert_eq!(a.backends[0].state, BackendState::Draining);
    assert_eq!(b.name, "listener-1");
    assert_eq!((b.routing, b.cid_length), (RoutingMode::Address, None));
    assert_eq!(b.multi_cid, MultiCidPolicy::Drop);
    assert_eq!(
        (b.backends[0].weight, b.backends[0].state),
        (0, BackendState::Down)
    );
}

#[test]
fn brief_examples_of_messages() {
    let e = err("[[listener]]\naddress = \"0.0.0.0:5684\"\ncid_length = 6\n\
         [[listener.backend]]\naddress = \"10.0.0.2:5684\"\n\
         [[listener.backend]]\naddress = \"10.0.0.1\"\n");
    assert_eq!(
        e.to_string(),
        "cidlb.toml: listener[0].backend[1].address: invalid socket address \"10.0.0.1\" (expected IP:PORT) (line 7, column 11)"
    );
    assert_eq!(e.kind(), ConfigErrorKind::InvalidValue);
    assert_eq!(
        e.location(),
        Some(Location {
            line: 7,
            column: 11
        })
    );
    assert_eq!(
        e.message(),
        "invalid socket address \"10.0.0.1\" (expected IP:PORT)"
    );
    assert_eq!(e.origin(), "cidlb.toml");

    check(
        &one_listener("").replace("cid_length = 6", "cid_length = 40"),
        "listener[0].cid_length",
        &["listener[0].cid_length: 40 is out of range 1..=32"],
    );

    let two = format!(
        "{}{}",
        one_listener("name = \"coaps\""),
        one_listener("name = \"coaps\"").replace("5684\"\ncid", "5685\"\ncid")
    );
    check(
        &two,
        "listener[1].name",
        &["listener[1].name: duplicate listener name \"coaps\""],
    );

    let e = check(
        &one_listener("backnd = 1"),
        "listener[0].backnd",
        &[
            "unknown key listener[0].backnd",
            "allowed here: name, address, cid_length",
        ],
    );
    assert_eq!(e.kind(), ConfigErrorKind::UnknownKey);
}

#[test]
fn syntax_errors_have_line_and_column() {
    let e = err("workers = 2\n[[listener]\n");
    assert_eq!(e.kind(), ConfigErrorKind::Syntax);
    assert_eq!(e.path(), None);
    assert_eq!(e.location().map(|l| l.line), Some(2));
    assert!(
        e.to_string()
            .starts_with("cidlb.toml: TOML syntax error at line 2, column "),
        "{e}"
    );
    assert!(!e.to_string().contains('\n'), "{e}");

    let e = err("workers = 2\nworkers = 3\n");
    assert_eq!(e.kind(), ConfigErrorKind::Syntax);
    assert!(e.to_string().contains("line 2"), "{e}");
    assert!(e.to_string().contains("duplicate key"), "{e}");

    let e = err("a = \"é\"\nb = ");
    assert_eq!(e.location().map(|l| l.line), Some(2), "{e}");
}

#[test]
fn unknown_keys_at_every_level() {
    let base = one_listener("");
    let cases: [(&str, String, &str); 7] = [
        (
            "workerz",
            format!("workerz = 1\n{base}"),
            "workers, timeouts, limits, hashing, health, admin, log, resolver, listener",
        ),
        (
            "timeouts.flow",
            format!("[timeouts]\nflow = \"1s\"\n{base}"),
            "flow_idle, cid_binding_idle",
        ),
        (
            "limits.max_flow",
            format!("[limits]\nmax_flow = 1\n{base}"),
            "max_flows, max_bindings, new_flows_per_source, new_flows_burst",
        ),
        (
            "hashing.sed",
            format!("[hashing]\nsed = 1\n{base}"),
            "seed, maglev_table_size",
        ),
        ("listener[0].backnd", one_listener("backnd = 1"), "backend"),
        (
            "listener[0].backend[1].wieght",
            format!("{base}wieght = 2\n"),
            "name, address, weight, state",
        ),
        (
            "backend",
            format!("{base}[[backend]]\naddress = \"10.0.0.9:1\"\n"),
            "[[listener.backend]]",
        ),
    ];
    for (path, text, allowed) in cases {
        let e = err(&text);
        assert_eq!(e.kind(), ConfigErrorKind::UnknownKey, "{e}");
        assert_eq!(e.path(), Some(path), "{e}");
        let s = e.to_string();
        assert!(s.contains(&format!("unknown key {path}")), "{s}");
        assert!(s.contains(allowed), "{s}");
        assert!(e.location().is_some(), "{s}");
    }
    // A sub-table of a listener with a typo.
    let e = err(&format!("{base}[listener.bakend]\n"));
    assert_eq!(e.path(), Some("listener[0].bakend"), "{e}");
}

#[test]
fn wrong_types_name_the_key() {
    check(
        &format!("workers = \"2\"\n{}", one_listener("")),
        "workers",
        &["expected an integer"],
    );
    check(
        &one_listener("name = 3"),
        "listener[0].name",
        &["invalid type", "expected a string"],
    );
    check(
        &one_listener("multi_cid = \"all\""),
        "listener[0].multi_cid",
        &["unknown value \"all\"", "first, split, drop"],
    );
    check(
        &one_listener("routing = \"ip\""),
        "listener[0].routing",
        &["cid, address"],
    );
    check(
        &format!("{}state = \"sick\"\n", one_listener("")),
        "listener[0].backend[1].state",
        &["up, draining, down"],
    );
    check(
        "[listener]\naddress = \"0.0.0.0:1\"\n",
        "listener",
        &["[[listener]]"],
    );
    check(
        &format!("[timeouts]\nflow_idle = 600\n{}", one_listener("")),
        "timeouts.flow_idle",
        &["600 has no unit", "\"600s\""],
    );
    check(
        &format!(
            "[timeouts]\nflow_idle = \"10 minits\"\n{}",
            one_listener("")
        ),
        "timeouts.flow_idle",
        &["invalid duration \"10 minits\""],
    );
    check(
        &format!("[timeouts]\nflow_idle = true\n{}", one_listener("")),
        "timeouts.flow_idle",
        &["expected a duration"],
    );
    let e = err(&format!("[hashing]\nseed = -1\n{}", one_listener("")));
    assert_eq!(e.path(), Some("hashing.seed"), "{e}");
    for e in [
        err(&one_listener("name = 3")),
        err(&format!("workers = \"2\"\n{}", one_listener(""))),
    ] {
        assert!(!e.to_string().contains("$__serde"), "{e}");
    }
}

#[test]
fn validation_errors_name_the_key() {
    let base = one_listener("");
    let b1 = "[[listener.backend]]\naddress = \"10.0.0.1:5684\"\n";
    // (text, path, fragment)
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "workers = 1\n".into(),
            "listener",
            "at least one [[listener]]",
        ),
        (
            "[[listener]]\naddress = \"0.0.0.0:5684\"\ncid_length = 6\n".into(),
            "listener[0].backend",
            "at least one backend",
        ),
        (
            format!(
                "{base}{}",
                base.replace(":5684\"\ncid", ":5684\"\nname = \"listener-0\"\ncid")
            ),
            "listener[1].name",
            "duplicate listener name \"listener-0\"",
        ),
        (
            format!("{base}{base}"),
            "listener[1].address",
            "duplicate listener address 0.0.0.0:5684",
        ),
        (
            format!("{base}name = \"10.0.0.1:5684\"\n"),
            "listener[0].backend[1].name",
            "duplicate backend name \"10.0.0.1:5684\"",
        ),
        (
            format!("{base}{b1}"),
            "listener[0].backend[2].address",
            "duplicate backend address 10.0.0.1:5684",
        ),
        (
            base.replace("cid_length = 6\n", ""),
            "listener[0].cid_length",
            "required",
        ),
        (
            base.replace("cid_length = 6", "cid_length = 0"),
            "listener[0].cid_length",
            "0 is out of range 1..=32",
        ),
        (
            base.replace("cid_length = 6", "cid_length = 33"),
            "listener[0].cid_length",
            "33 is out of range 1..=32",
        ),
        (
            base.replace("cid_length = 6", "routing = \"address\"\ncid_length = 99"),
            "listener[0].cid_length",
            "out of range",
        ),
        (
            base.replace("address = \"0.0.0.0:5684\"\n", ""),
            "listener[0].address",
            "required",
        ),
        (
            base.replace("0.0.0.0:5684", "localhost:5684"),
            "listener[0].address",
            "host names are not resolved",
        ),
        (
            base.replace("0.0.0.0:5684", "::1:5684"),
            "listener[0].address",
            "brackets",
        ),
        (
            base.replace("address = \"10.0.0.2:5684\"", "weight = 1"),
            "listener[0].backend[1].address",
            "required",
        ),
        (
            base.replace("10.0.0.2:5684", "0.0.0.0:5684"),
            "listener[0].backend[1].address",
            "cannot be a destination",
        ),
        (
            base.replace("10.0.0.2:5684", "10.0.0.2:0"),
            "listener[0].backend[1].address",
            "cannot be a destination",
        ),
        (
            base.replace("0.0.0.0:5684", "10.0.0.2:5684"),
            "listener[0].backend[1].address",
            "loop",
        ),
        (
            format!("{base}weight = 10001\n"),
            "listener[0].backend[1].weight",
            "10001 is out of range 0..=10000",
        ),
        (
            format!("{base}weight = -1\n"),
            "listener[0].backend[1].weight",
            "-1 is out of range 0..=10000",
        ),
        (
            format!("{base}name = \"a b\"\n"),
            "listener[0].backend[1].name",
            "invalid name",
        ),
        (
            format!("{base}name = \"\"\n"),
            "listener[0].backend[1].name",
            "invalid name",
        ),
        (
            one_listener("name = \"\""),
            "listener[0].name",
            "invalid name",
        ),
        (
            one_listener("upstream_source = \"10.0.0.5:1\""),
            "listener[0].upstream_source",
            "invalid IP address",
        ),
        (
            one_listener("upstream_source = \"::1\""),
            "listener[0].upstream_source",
            "IPv6",
        ),
        (
            format!("[timeouts]\nflow_idle = \"0s\"\n{base}"),
            "timeouts.flow_idle",
            "too short",
        ),
        (
            format!("[timeouts]\ncid_binding_idle = \"500ms\"\n{base}"),
            "timeouts.cid_binding_idle",
            "too short",
        ),
        (
            format!("[timeouts]\ncid_binding_idle = \"2y\"\n{base}"),
            "timeouts.cid_binding_idle",
            "too long",
        ),
        (
            format!("[limits]\nmax_flows = 0\n{base}"),
            "limits.max_flows",
            "0 is out of range 1..=100000000",
        ),
        (
            format!("[limits]\nmax_bindings = 100000001\n{base}"),
            "limits.max_bindings",
            "out of range 1..=100000000",
        ),
        (
            format!("[hashing]\nmaglev_table_size = 65536\n{base}"),
            "hashing.maglev_table_size",
            "65536 is not a prime number (the next prime is 65537)",
        ),
        (
            format!("[hashing]\nmaglev_table_size = 250\n{base}"),
            "hashing.maglev_table_size",
            "250 is out of range 251..=16777216",
        ),
        (
            format!("[hashing]\nmaglev_table_size = 16777259\n{base}"),
            "hashing.maglev_table_size",
            "out of range 251..=16777216",
        ),
        (
            format!("[hashing]\nmaglev_table_size = 16777215\n{base}"),
            "hashing.maglev_table_size",
            "largest allowed prime is 16777213",
        ),
        (
            format!("workers = 0\n{base}"),
            "workers",
            "0 is out of range 1..=256",
        ),
        (
            format!("workers = 257\n{base}"),
            "workers",
            "257 is out of range 1..=256",
        ),
    ];
    for (text, path, fragment) in &cases {
        let e = check(text, path, &[fragment]);
        assert!(
            matches!(
                e.kind(),
                ConfigErrorKind::InvalidValue | ConfigErrorKind::MissingKey
            ),
            "{e}"
        );
    }
}

#[test]
fn maglev_table_must_exceed_backend_count() {
    let mut text = String::from("[hashing]\nmaglev_table_size = 251\n[[listener]]\naddress = \"0.0.0.0:5684\"\ncid_length = 6\n");
    for i in 0..251 {
        let _ = write!(
            text,
            "[[listener.backend]]\naddress = \"10.0.{}.{}:5684\"\n",
            i / 200,
            i % 200 + 1
        );
    }
    check(
        &text,
        "hashing.maglev_table_size",
        &["larger than the number of backends", "(251)"],
    );
    // 250 backends fit (with an unevenness warning).
    let cut = text.rfind("[[listener.backend]]").unwrap();
    let c = parse(&text[..cut]).unwrap();
    assert!(c.warnings().iter().any(|w| w.contains("spread unevenly")));
}

#[test]
fn helpers() {
    assert!(is_prime(65_537) && is_prime(251) && is_prime(2) && !is_prime(1) && !is_prime(65_536));
    assert_eq!(prev_prime(MAX_MAGLEV_TABLE_SIZE), 16_777_213);
    assert_eq!(fmt_duration(Duration::from_secs(86_400)), "24h");
    assert_eq!(fmt_duration(Duration::from_secs(600)), "10m");
    assert_eq!(fmt_duration(Duration::from_secs(61)), "61s");
    assert_eq!(
        quick_flag("listener[0].backend[12].address"),
        "--backend #13"
    );
}

#[test]
fn backends_by_dns_name() {
    let base = "[[listener]]\naddress = \"127.0.0.1:5684\"\ncid_length = 4\n";
    let c = parse(&format!(
        "[resolver]\nservers = [\"127.0.0.53\", \"[::1]:5353\"]\ninterval = \"30s\"\n{base}\
         [[listener.backend]]\nname = \"dtls\"\naddress = \"DTLS.svc.cluster.local.:5684\"\n\
         [[listener.backend]]\naddress = \"10.0.0.1:5684\"\n"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let b = &c.listeners[0].backends[0];
    let d = b.dns.as_ref().expect("a DNS backend");
    assert_eq!((d.host.as_str(), d.port), ("dtls.svc.cluster.local", 5684));
    assert!(c.has_dns_backends());
    assert_eq!(
        c.resolver.servers,
        [
            "127.0.0.53:53".parse().unwrap(),
            "[::1]:5353".parse().unwrap()
        ]
    );
    assert_eq!(c.resolver.interval, std::time::Duration::from_secs(30));
    assert!(c.listeners[0].backends[1].dns.is_none());
    // A DNS backend may be several servers: no server_id.
    check(
        &format!("{base}[[listener.backend]]\naddress = \"a.example:1\"\nserver_id = \"01\"\n"),
        "listener[0].backend[0].server_id",
        &["DNS name"],
    );
    check(
        &format!(
            "{base}[[listener.backend]]\naddress = \"a.example:1\"\n[[listener.backend]]\nname = \"x\"\naddress = \"A.example:1\"\n"
        ),
        "listener[0].backend[1].address",
        &["duplicate backend name a.example:1"],
    );
    check(
        &format!("{base}[[listener.backend]]\naddress = \"bad_name:1\"\n"),
        "listener[0].backend[0].address",
        &["NAME:PORT"],
    );
    check(
        "[resolver]\ninterval = \"0s\"\n[[listener]]\naddress = \"127.0.0.1:5684\"\ncid_length = 4\n[[listener.backend]]\naddress = \"10.0.0.1:1\"\n",
        "resolver.interval",
        &["out of range"],
    );
}

#[test]
fn transparent_upstream() {
    let c = parse(&one_listener("upstream = \"transparent\"")).unwrap();
    let l = &c.listeners[0];
    assert_eq!(l.upstream, UpstreamMode::Transparent);
    assert_eq!(l.reply_fwmark, None);
    let shown = c.explain();
    assert!(
        shown.contains("bind to the client's own address"),
        "{shown}"
    );
    assert!(shown.contains("CAP_NET_ADMIN"), "{shown}");
    // The example's wildcard address: a client with source port 5684 cannot be served.
    assert!(
        c.warnings()
            .iter()
            .any(|w| w.contains("wildcard address 0.0.0.0") && w.contains("source port is 5684")),
        "{:?}",
        c.warnings()
    );
    let nat = parse(&one_listener("upstream = \"nat\"")).unwrap();
    assert_eq!(nat.listeners[0].upstream, UpstreamMode::Nat);
    assert_eq!(
        parse(&one_listener("")).unwrap().listeners[0].upstream,
        UpstreamMode::Nat
    );
    let marked = parse(&one_listener(
        "upstream = \"transparent\"\nreply_fwmark = 0x10",
    ))
    .unwrap();
    assert_eq!(marked.listeners[0].reply_fwmark, Some(16));
    assert!(marked.explain().contains("firewall mark 0x10"));

    let cases = [
        (
            one_listener("upstream = \"tproxy\""),
            "listener[0].upstream",
            "unknown value \"tproxy\" (expected one of: nat, transparent)",
        ),
        (
            one_listener("upstream = \"transparent\"\nupstream_source = \"10.0.0.5\""),
            "listener[0].upstream_source",
            "does not apply with upstream = \"transparent\"",
        ),
        (
            one_listener("reply_fwmark = 1"),
            "listener[0].reply_fwmark",
            "applies to upstream = \"transparent\" only",
        ),
        (
            one_listener("upstream = \"transparent\"\nreply_fwmark = 0"),
            "listener[0].reply_fwmark",
            "0 is out of range 1..=4294967295",
        ),
        (
            one_listener("upstream = \"transparent\"")
                .replace("10.0.0.2:5684", "[2001:db8::2]:5684"),
            "listener[0].backend[1].address",
            "is an IPv6 address but the listener's (0.0.0.0:5684) is IPv4",
        ),
    ];
    for (text, path, fragment) in &cases {
        check(text, path, &[fragment]);
    }

    // Two transparent listeners may not share a backend; a NAT one may.
    let two = |second: &str| {
        format!(
            "{}\n[[listener]]\nname = \"b\"\naddress = \"0.0.0.0:5685\"\ncid_length = 6\n{second}\n\
             [[listener.backend]]\naddress = \"10.0.0.2:5684\"\n",
            one_listener("upstream = \"transparent\"")
        )
    };
    check(
        &two("upstream = \"transparent\""),
        "listener[1].backend[0].address",
        &[
            "10.0.0.2:5684 is also a backend of listener \"listener-0\"",
            "tell",
        ],
    );
    parse(&two("")).unwrap();
}

/// A valid `forwarding = "xdp-dr"` listener on the VIP 10.0.0.100 with `extra` lines.
fn xdp_listener(extra: &str) -> String {
    format!(
        "[[listener]]\naddress = \"10.0.0.100:5684\"\ncid_length = 6\nforwarding = \"xdp-dr\"\n\
         interface = \"eth0\"\n{extra}\n\
         [[listener.backend]]\naddress = \"10.0.0.1:5684\"\n\
         [[listener.backend]]\naddress = \"10.0.0.2:5684\"\n"
    )
}

#[test]
fn forwarding_defaults_to_nat_and_xdp_dr_parses() {
    let c = parse(&one_listener("")).unwrap();
    assert_eq!(c.listeners[0].forwarding, Forwarding::Nat);
    let c = parse(&xdp_listener("")).unwrap();
    assert_eq!(
        c.listeners[0].forwarding,
        Forwarding::XdpDr(XdpDr {
            interfaces: vec!["eth0".into()],
            mode: XdpAttachMode::Native,
            pin_dir: Some(DEFAULT_PIN_DIR.into()),
            keep_pinned: false,
        })
    );
    let c = parse(&xdp_listener("xdp_mode = \"generic\"")).unwrap();
    let Forwarding::XdpDr(x) = &c.listeners[0].forwarding else {
        panic!("xdp-dr")
    };
    assert_eq!(x.mode, XdpAttachMode::Generic);
    let c = parse(&xdp_listener("pin_dir = \"\"\nkeep_pinned = true")).unwrap();
    let Forwarding::XdpDr(x) = &c.listeners[0].forwarding else {
        panic!("xdp-dr")
    };
    assert_eq!((x.pin_dir.as_ref(), x.keep_pinned), (None, true));
    check(
        &xdp_listener("pin_dir = \"bpf/cidlb\""),
        "listener[0].pin_dir",
        &["absolute path"],
    );
    check(
        &one_listener("keep_pinned = true"),
        "listener[0].keep_pinned",
        &["only used with"],
    );
    // A one-element list is one interface.
    let text = xdp_listener("").replace("interface = \"eth0\"", "interface = [\"eth1\"]");
    let c = parse(&text).unwrap();
    assert_eq!(
        c.listeners[0].forwarding.to_string(),
        "xdp-dr on eth1 (native)"
    );
    let shown = c.explain();
    assert!(shown.contains("direct routing in XDP"), "{shown}");
    assert!(shown.contains("never sees a ServerHello"), "{shown}");
    assert!(shown.contains("arp_ignore=1"), "{shown}");
    assert!(!shown.contains("Upstream sockets"), "{shown}");
}

#[test]
fn xdp_dr_rejects_what_the_program_cannot_do() {
    check(
        &xdp_listener("multi_cid = \"split\""),
        "listener[0].multi_cid",
        &["\"split\" is not supported", "xdp-dr", "line 6"],
    );
    check(
        &xdp_listener("upstream_source = \"10.0.0.5\""),
        "listener[0].upstream_source",
        &["no upstream sockets"],
    );
    check(
        &format!("[limits]\nnew_flows_per_source = 5\n{}", xdp_listener("")),
        "limits.new_flows_per_source",
        &["listener \"listener-0\"", "xdp-dr", "line 2"],
    );
    check(
        &xdp_listener("").replace("10.0.0.100:5684", "0.0.0.0:5684"),
        "listener[0].address",
        &["virtual address itself"],
    );
    check(
        &xdp_listener("").replace("10.0.0.100:5684", "10.0.0.100:0"),
        "listener[0].address",
        &["non-zero port"],
    );
    check(
        &xdp_listener("").replace("interface = \"eth0\"\n", ""),
        "listener[0].interface",
        &["required key is missing", "xdp-dr"],
    );
    check(
        &xdp_listener("").replace("\"eth0\"", "[\"eth0\", \"eth1\", \"eth0\"]"),
        "listener[0].interface",
        &["eth0", "listed twice"],
    );
    check(
        &xdp_listener("").replace(
            "\"eth0\"",
            "[\"e0\", \"e1\", \"e2\", \"e3\", \"e4\", \"e5\", \"e6\", \"e7\", \"e8\"]",
        ),
        "listener[0].interface",
        &["9 interfaces", "1 to 8"],
    );
    // Two xdp-dr listeners on one interface (the second on eth1 and eth0).
    let two = xdp_listener("")
        + &xdp_listener("name = \"second\"")
            .replace("10.0.0.100:5684", "10.0.0.101:5684")
            .replace("\"eth0\"", "[\"eth1\", \"eth0\"]");
    check(
        &two,
        "listener[1].interface",
        &[
            "interface \"eth0\" is already used by listener[0]",
            "one xdp-dr listener per interface",
        ],
    );
    let apart = xdp_listener("")
        + &xdp_listener("name = \"second\"")
            .replace("10.0.0.100:5684", "10.0.0.101:5684")
            .replace("\"eth0\"", "[\"eth1\", \"eth2\"]");
    assert!(parse(&apart).is_ok(), "{:?}", parse(&apart).err());
    check(
        &xdp_listener("").replace("\"eth0\"", "\"a/b\""),
        "listener[0].interface",
        &["invalid interface name"],
    );
    check(
        &xdp_listener("xdp_mode = \"offload\""),
        "listener[0].xdp_mode",
        &["native, generic"],
    );
    check(
        &one_listener("forwarding = \"dr\""),
        "listener[0].forwarding",
        &["nat, xdp-dr"],
    );
    // XDP keys on a NAT listener are a mistake, not silently ignored.
    check(
        &one_listener("interface = \"eth0\""),
        "listener[0].interface",
        &["only used with forwarding = \"xdp-dr\""],
    );
    check(
        &one_listener("xdp_mode = \"native\""),
        "listener[0].xdp_mode",
        &["only used with"],
    );
}
