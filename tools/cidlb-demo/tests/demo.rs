//! Runs the built demo end to end with a few clients, against the `cidlb` binary that
//! cargo built next to it.
//!
//! Cargo builds a package's binaries for its own integration tests only, so this test
//! cannot make cargo build `cidlb`: `cargo test --workspace` (the project's test
//! command) does, because `cidlb` has integration tests of its own, and puts it in the
//! same directory as `cidlb-demo`. Run alone (`cargo test -p cidlb-demo`), the test
//! needs `cargo build -p cidlb` first, and says so.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The demo bounds its own waits; this only keeps a hung demo from hanging the suite.
const DEMO_TIMEOUT: Duration = Duration::from_secs(90);

/// The `cidlb` binary next to the demo binary (`target/<profile>/cidlb`).
fn cidlb_binary() -> PathBuf {
    let demo = PathBuf::from(env!("CARGO_BIN_EXE_cidlb-demo"));
    let cidlb = demo.with_file_name(format!("cidlb{}", std::env::consts::EXE_SUFFIX));
    assert!(
        cidlb.is_file(),
        "no cidlb binary at {}: this test runs the demo against the real cidlb, which \
         `cargo test --workspace` builds but `cargo test -p cidlb-demo` does not. Run \
         `cargo build -p cidlb` (same profile and target directory) first.",
        cidlb.display()
    );
    cidlb
}

/// Runs the demo with `args`, waiting at most [`DEMO_TIMEOUT`].
fn demo(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cidlb-demo"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the demo starts");
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + DEMO_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the demo") {
            break status;
        }
        if Instant::now() >= deadline {
            kill(&mut child);
            panic!("the demo did not finish within {DEMO_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The two values (CID routing, address-only) of the table row `label`.
fn row<'a>(stdout: &'a str, label: &str) -> [&'a str; 2] {
    let line = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no row {label:?} in:\n{stdout}"));
    let values: Vec<&str> = line[label.len()..].split_whitespace().collect();
    match values[..] {
        [cid, address] => [cid, address],
        _ => panic!("row {label:?} does not have two values: {line:?}"),
    }
}

#[test]
fn demo_keeps_every_session_with_cid_routing_and_shows_address_routing_losing_them() {
    let cidlb = cidlb_binary();
    let started = Instant::now();
    let out = demo(&[
        "--clients",
        "6",
        "--cidlb",
        cidlb.to_str().expect("UTF-8 path"),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the demo failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    eprintln!("{stdout}");

    // CID routing: one handshake per client, every echo, every session.
    let [cid, _] = row(&stdout, "full DTLS handshakes on the servers");
    assert_eq!(cid, "6");
    let [cid, address] = row(&stdout, "echoes delivered");
    assert_eq!(cid, "24/24");
    assert_ne!(address, "24/24", "address-only routing lost nothing?");
    let [cid, address] = row(&stdout, "sessions that survived all rebinds");
    assert_eq!(cid, "6/6");
    assert_ne!(address, "6/6");
    let [cid, _] = row(&stdout, "session migrations seen by the servers");
    assert_eq!(cid, "18", "each client moved 3 times");
    assert_eq!(
        row(&stdout, "cidlb stopped cleanly on SIGTERM"),
        ["yes", "yes"]
    );
    assert!(stdout.contains("Conclusion: routing by Connection ID kept all 6 sessions"));
    // cidlb's own log reaches the terminal (here: the demo's stderr).
    assert!(stderr.contains("final counters"), "cidlb's log:\n{stderr}");
    eprintln!("the demo took {:?}", started.elapsed());
}

#[test]
fn a_missing_cidlb_binary_is_explained() {
    let out = demo(&["--cidlb", "/nonexistent/cidlb"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no cidlb binary at /nonexistent/cidlb") && stderr.contains("cargo build"),
        "{stderr}"
    );
}
