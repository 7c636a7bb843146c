//! The `[health]` and `[admin]` configuration sections.

use std::time::Duration;

use cidlb::config::{Config, ConfigErrorKind, HealthConfig, DEFAULT_ADMIN_ADDRESS};

const BASE: &str = "[[listener]]\naddress = \"0.0.0.0:5684\"\ncid_length = 6\n\
                    [[listener.backend]]\naddress = \"10.0.0.1:5684\"\n\
                    [[listener.backend]]\naddress = \"10.0.0.2:5684\"\n";

fn parse(head: &str) -> Result<Config, cidlb::config::ConfigError> {
    Config::from_toml_str(&format!("{head}\n{BASE}"), "cidlb.toml")
}

#[test]
fn defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.health, HealthConfig::default());
    assert!(c.health.enabled);
    assert_eq!(c.health.interval, Duration::from_secs(2));
    assert_eq!(c.health.timeout, Duration::from_secs(1));
    assert_eq!((c.health.rise, c.health.fall), (2, 3));
    assert!(c.admin.enabled);
    assert_eq!(c.admin.address, None);
    assert_eq!(c.admin.address(), DEFAULT_ADMIN_ADDRESS);
    assert_eq!(DEFAULT_ADMIN_ADDRESS.to_string(), "127.0.0.1:9684");
    let ex = c.explain();
    assert!(ex.contains("Health checks: a DTLS ClientHello"), "{ex}");
    assert!(ex.contains("Admin API: http://127.0.0.1:9684/"), "{ex}");
}

#[test]
fn every_key_is_read() {
    let c = parse(
        "[health]\nenabled = false\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 4\nfall = 5\n\
         [admin]\nenabled = false\naddress = \"[::1]:9000\"\n",
    )
    .unwrap();
    assert!(!c.health.enabled);
    assert_eq!(c.health.interval, Duration::from_millis(200));
    assert_eq!(c.health.timeout, Duration::from_millis(150));
    assert_eq!((c.health.rise, c.health.fall), (4, 5));
    assert!(!c.admin.enabled);
    assert_eq!(c.admin.address, Some("[::1]:9000".parse().unwrap()));
    assert!(c.explain().contains("Health checks: off"));
    assert!(c.explain().contains("Admin API: off"));
    // A short interval without a timeout: the timeout shrinks to fit.
    let c = parse("[health]\ninterval = \"300ms\"").unwrap();
    assert_eq!(c.health.timeout, Duration::from_millis(300));
}

#[test]
fn the_reference_example_sets_both_sections() {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cidlb.toml");
    let c = Config::load(std::path::Path::new(p)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.health, HealthConfig::default());
    assert_eq!(c.admin.address, Some(DEFAULT_ADMIN_ADDRESS));
}

#[test]
fn errors_name_the_key() {
    let cases: [(&str, &str, &str); 9] = [
        (
            "[health]\ninterval = \"10ms\"",
            "health.interval",
            "out of range 50ms..=1h",
        ),
        (
            "[health]\ninterval = \"2h\"",
            "health.interval",
            "out of range",
        ),
        (
            "[health]\ntimeout = \"5ms\"",
            "health.timeout",
            "out of range 10ms",
        ),
        (
            "[health]\ninterval = \"1s\"\ntimeout = \"2s\"",
            "health.timeout",
            "longer than health.interval",
        ),
        ("[health]\nrise = 0", "health.rise", "out of range 1..=100"),
        (
            "[health]\nfall = 101",
            "health.fall",
            "out of range 1..=100",
        ),
        ("[health]\ninterval = 5", "health.interval", "has no unit"),
        (
            "[admin]\naddress = \"localhost:9684\"",
            "admin.address",
            "host names are not resolved",
        ),
        (
            "[health]\nenabled = \"yes\"",
            "health.enabled",
            "invalid type",
        ),
    ];
    for (head, path, fragment) in cases {
        let e = parse(head).unwrap_err();
        assert_eq!(e.path(), Some(path), "{e}");
        assert!(e.to_string().contains(fragment), "{e} lacks {fragment:?}");
    }
    let e = parse("[health]\nintervall = \"1s\"").unwrap_err();
    assert_eq!(e.kind(), ConfigErrorKind::UnknownKey);
    assert!(
        e.to_string()
            .contains("allowed here: enabled, interval, timeout, rise, fall"),
        "{e}"
    );
    let e = parse("[admin]\nport = 1").unwrap_err();
    assert!(
        e.to_string().contains("allowed here: enabled, address"),
        "{e}"
    );
}

#[test]
fn a_public_admin_address_is_warned_about() {
    let c = parse("[admin]\naddress = \"0.0.0.0:9684\"").unwrap();
    assert!(
        c.warnings()
            .iter()
            .any(|w| w.contains("not a loopback address")),
        "{:?}",
        c.warnings()
    );
    assert!(parse("")
        .unwrap()
        .warnings()
        .iter()
        .all(|w| !w.contains("admin")));
}
