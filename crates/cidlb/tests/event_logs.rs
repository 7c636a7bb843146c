//! Event logs against the real `cidlb` binary: structured lines (here JSON, target
//! `cidlb::event`) for a new session, a CID learned from a ServerHello, a known CID
//! from a new address (NAT rebinding); at most `log.events_per_second` per listener,
//! the rest counted (`cidlb_listener_event_logs_suppressed_total`). A UDP socket plays
//! the backend (it answers a ServerHello). Loopback only, bounded.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use cidlb_wire::build;

struct Lb {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    lines: Receiver<String>,
}

impl Drop for Lb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(config: &str, dir: &std::path::Path) -> Lb {
    let path = dir.join("cidlb.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cidlb"))
        .args(["run", "--config"])
        .arg(&path)
        .args(["--admin", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let out = child.stdout.take().unwrap();
    let (atx, arx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = atx.send(l);
        }
    });
    let (mut addr, mut admin) = (None, None);
    while addr.is_none() || admin.is_none() {
        let l = arx
            .recv_timeout(Duration::from_secs(10))
            .expect("ready lines");
        if let Some(a) = l.strip_prefix("cidlb: admin API listening on ") {
            admin = a.parse().ok();
        }
        if let Some((_, a)) = l.rsplit_once(" ready on ") {
            addr = a.parse().ok();
        }
    }
    Lb {
        child,
        addr: addr.unwrap(),
        admin: admin.unwrap(),
        lines,
    }
}

fn metric(admin: SocketAddr, series: &str) -> u64 {
    let (_, text) = cidlb::status::request(admin, "GET", "/metrics", None).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series}"))
}

/// Event lines (JSON objects with target cidlb::event) seen until `done` says so or the
/// deadline passes.
fn events(lb: &Lb, mut done: impl FnMut(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !done(&seen) && Instant::now() < deadline {
        if let Ok(l) = lb.lines.recv_timeout(Duration::from_millis(100)) {
            let v: serde_json::Value = serde_json::from_str(&l)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {l}"));
            if v["target"] == "cidlb::event" {
                seen.push(v);
            }
        }
    }
    seen
}

fn config(backend: SocketAddr, rate: u32) -> String {
    format!(
        "workers = 1\n[log]\nformat = \"json\"\nevents_per_second = {rate}\n[health]\nenabled = false\n\
         [[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\ncid_length = 4\n\
         [[listener.backend]]\nname = \"b0\"\naddress = \"{backend}\"\n"
    )
}

fn record(cid: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    build::cid12(1, 1, cid, b"finished", &mut d);
    d
}

#[test]
fn a_session_its_cid_and_its_rebinding_are_logged_as_structured_lines() {
    let dir = std::env::temp_dir().join(format!("cidlb-events-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let backend = UdpSocket::bind("127.0.0.1:0").unwrap();
    backend
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let lb = spawn(&config(backend.local_addr().unwrap(), 1000), &dir);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client
        .send_to(&build::client_hello_datagram([5; 32], &[], None), lb.addr)
        .unwrap();
    let mut buf = [0u8; 2048];
    let (_, upstream) = backend.recv_from(&mut buf).unwrap();
    let cid = [0xde, 0xad, 0x00, 0x01];
    backend
        .send_to(&build::server_hello_datagram([6; 32], Some(&cid)), upstream)
        .unwrap();
    client
        .recv_from(&mut buf)
        .expect("the ServerHello comes back");
    // The client's NAT rebinds: the same CID from a new port.
    let moved = UdpSocket::bind("127.0.0.1:0").unwrap();
    moved.send_to(&record(&cid), lb.addr).unwrap();
    let seen = events(&lb, |s| {
        s.iter().any(|v| v["fields"]["event"] == "cid_new_address")
    });
    let kinds: Vec<&str> = seen
        .iter()
        .filter_map(|v| v["fields"]["event"].as_str())
        .collect();
    assert_eq!(
        kinds,
        ["new_session", "binding_learned", "cid_new_address"],
        "{seen:?}"
    );
    let rebind = &seen[2]["fields"];
    assert_eq!(rebind["cid"], "dead0001");
    assert_eq!(rebind["backend"], "b0");
    assert_eq!(rebind["listener"], "l");
    assert_eq!(rebind["client"], moved.local_addr().unwrap().to_string());
    assert_eq!(
        seen[0]["fields"]["client"],
        client.local_addr().unwrap().to_string()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn event_lines_are_rate_limited_and_the_rest_counted() {
    let dir = std::env::temp_dir().join(format!("cidlb-events-rate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let backend = UdpSocket::bind("127.0.0.1:0").unwrap();
    let lb = spawn(&config(backend.local_addr().unwrap(), 3), &dir);
    const SENT: u64 = 30;
    let start = Instant::now();
    for _ in 0..SENT {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.send_to(&build::client_hello_datagram([5; 32], &[], None), lb.addr)
            .unwrap();
    }
    let series = "cidlb_listener_event_logs_suppressed_total{listener=\"l\"}";
    let mut logged = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        logged.extend(events(&lb, |s| !s.is_empty()));
        let suppressed = metric(lb.admin, series);
        if logged.len() as u64 + suppressed == SENT {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} logged, {suppressed} suppressed",
            logged.len()
        );
    }
    let elapsed = start.elapsed().as_secs() + 1;
    assert!(
        logged.len() as u64 <= 3 * elapsed,
        "{} lines in {elapsed} s at 3 a second",
        logged.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
