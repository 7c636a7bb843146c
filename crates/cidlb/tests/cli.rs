//! The binary's command line: help, config checking, clean shutdown.

mod common;

use std::process::Command;

fn cidlb(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cidlb"))
        .args(args)
        .output()
        .expect("cidlb runs")
}

#[test]
fn help_names_the_quick_start_flags() {
    let out = cidlb(&["run", "--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--backend",
        "--cid-len",
        "--config",
        "--routing",
        "--multi-cid",
    ] {
        assert!(text.contains(flag), "run --help mentions {flag}");
    }
}

#[test]
fn check_config_accepts_the_reference_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cidlb.toml");
    let out = cidlb(&["check-config", example]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty());
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = common::TempDir::new("cli");
    let path = dir.0.join("bad.toml");
    std::fs::write(
        &path,
        "[[listener]]\naddress = \"127.0.0.1:5684\"\ncid_length = 4\n\
         [[listener.backend]]\naddress = \"127.0.0.1\"\n",
    )
    .unwrap();
    let out = cidlb(&["check-config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listener[0].backend[0].address"),
        "error names the key: {err}"
    );
}

#[test]
fn quick_start_without_cid_len_is_refused_with_a_reason() {
    let out = cidlb(&["run", "--listen", "127.0.0.1:0", "--backend", "127.0.0.1:9"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cid-len"));
}

#[test]
fn sigterm_stops_cleanly() {
    let backend = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut lb = common::Balancer::quick(&[backend.local_addr().unwrap()], 4, "cid");
    assert!(lb.terminate(), "exit status 0 after SIGTERM");
}
