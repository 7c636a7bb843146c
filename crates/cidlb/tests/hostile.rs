//! Hostile traffic and careless configurations, second round (each test failed before
//! its fix): against the real `cidlb` binary, loopback only, bounded in time and count;
//! waits are polls with deadlines, never timing assertions.
//!
//! - a spoofed-source flood with 2 workers keeps the upstream sockets (and the process's
//!   descriptors) within `limits.max_flows`, not workers × `max_flows`;
//! - self-loops (a backend at an address the listener itself receives) are refused by
//!   `check-config`, `run` and reload, and a datagram whose source is the listener's own
//!   address is dropped and counted, never answered;
//! - small ones: `--cid-len 0`, a broadcast backend, an oversized file, a huge value in
//!   an error, idle admin connections that would starve a real request.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Balancer, TempDir};

const DEADLINE: Duration = Duration::from_secs(10);

fn http(admin: SocketAddr, method: &str, path: &str) -> (u16, String) {
    cidlb::status::request(admin, method, path, None).unwrap_or_else(|e| panic!("{e}"))
}

/// A metric's value from the exposition (labels in exposition order).
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series}"))
}

fn metrics(lb: &Balancer) -> String {
    http(lb.admin.expect("admin API"), "GET", "/metrics").1
}

/// A `tls12_cid` record: type 25, DTLS 1.2, epoch 1, sequence 1, the CID, a payload.
fn cid_record(cid: &[u8]) -> Vec<u8> {
    let mut d = vec![25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1];
    d.extend_from_slice(cid);
    d.extend_from_slice(&8u16.to_be_bytes());
    d.extend_from_slice(&[0xab; 8]);
    d
}

/// Descriptors the process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

use common::cidlb_cli as cidlb;

#[test]
fn a_spoofed_source_flood_keeps_upstream_sockets_within_max_flows() {
    const MAX_FLOWS: u64 = 300;
    const WORKERS: u64 = 2;
    const SOURCES: u32 = 1500;
    let dir = TempDir::new("hostile-fds");
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let cfg = dir.0.join("cidlb.toml");
    write(
        &cfg,
        &format!(
            "workers = {WORKERS}\n[limits]\nmax_flows = {MAX_FLOWS}\n[health]\nenabled = false\n\
             [[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\ncid_length = 4\n\
             [[listener.backend]]\nname = \"sink\"\naddress = \"{}\"\n",
            sink.local_addr().unwrap()
        ),
    );
    let lb = Balancer::spawn_config(&cfg);
    let pid = lb.child.id();
    let before = open_fds(pid);
    // Each source address wants a flow, an upstream socket, a seeded binding.
    for i in 0..SOURCES {
        let ip = format!("127.0.{}.{}", 10 + i / 250, 1 + i % 250);
        let s = UdpSocket::bind(format!("{ip}:0")).unwrap();
        s.send_to(&cid_record(&i.to_be_bytes()), lb.addr).unwrap();
    }
    let deadline = Instant::now() + DEADLINE;
    loop {
        let m = metrics(&lb);
        let seen = metric(&m, "cidlb_listener_client_datagrams_total{listener=\"l\"}");
        if seen >= u64::from(SOURCES) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{seen} of {SOURCES} datagrams seen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = metrics(&lb);
    let open = metric(&m, "cidlb_listener_upstreams_open{listener=\"l\"}");
    let fds = open_fds(pid);
    println!(
        "upstream sockets open: {open} (max_flows {MAX_FLOWS}, {WORKERS} workers); \
         descriptors {before} before the flood, {fds} after"
    );
    // The workers' shares add up to max_flows (rounded up per worker).
    assert!(
        open <= MAX_FLOWS + WORKERS,
        "{open} upstream sockets for max_flows {MAX_FLOWS}"
    );
    assert!(
        fds as u64 <= before as u64 + MAX_FLOWS + WORKERS,
        "{fds} descriptors ({before} before the flood)"
    );
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config_with(listen: &str, backend: &str) -> String {
    format!(
        "[health]\nenabled = false\n[[listener]]\nname = \"l\"\naddress = \"{listen}\"\n\
         cid_length = 4\n[[listener.backend]]\nname = \"b\"\naddress = \"{backend}\"\n"
    )
}

#[test]
fn self_loops_are_refused_by_check_config_run_and_reload() {
    let dir = TempDir::new("hostile-loops");
    let cfg = dir.0.join("loop.toml");
    let p = free_port();
    for (listen, backend) in [
        (format!("0.0.0.0:{p}"), format!("127.0.0.1:{p}")),
        (format!("0.0.0.0:{p}"), format!("127.9.8.7:{p}")),
        (format!("127.0.0.1:{p}"), format!("[::ffff:127.0.0.1]:{p}")),
        (format!("[::]:{p}"), format!("[::1]:{p}")),
        (format!("[::]:{p}"), format!("127.0.0.1:{p}")),
    ] {
        write(&cfg, &config_with(&listen, &backend));
        let (code, out) = cidlb(&["check-config", cfg.to_str().unwrap()]);
        assert_ne!(code, 0, "{listen} with backend {backend} passed:\n{out}");
        assert!(
            out.contains("listener[0].backend[0].address") && out.contains("loop"),
            "{listen} / {backend}: {out}"
        );
        let (code, out) = cidlb(&["run", "--config", cfg.to_str().unwrap()]);
        assert_ne!(
            code, 0,
            "run accepted {listen} with backend {backend}: {out}"
        );
    }
    // Another port, or another address than a specific listener's, is another server.
    write(
        &cfg,
        &config_with(&format!("127.0.0.1:{p}"), &format!("127.0.0.2:{p}")),
    );
    let (code, out) = cidlb(&["check-config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");

    // A reload to a self-loop is rejected; the balancer keeps running.
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    write(
        &cfg,
        &config_with(
            &format!("0.0.0.0:{p}"),
            &sink.local_addr().unwrap().to_string(),
        ),
    );
    let lb = Balancer::spawn_config(&cfg);
    write(
        &cfg,
        &config_with(&format!("0.0.0.0:{p}"), &format!("127.0.0.1:{p}")),
    );
    let (status, body) = http(lb.admin.unwrap(), "POST", "/reload");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("loop"), "{body}");
    let m = metrics(&lb);
    assert_eq!(
        metric(&m, "cidlb_config_reloads_total{result=\"rejected\"}"),
        1
    );
}

#[test]
fn a_datagram_from_the_listeners_own_address_is_dropped_and_counted() {
    let dir = TempDir::new("hostile-own");
    let backend = UdpSocket::bind("127.0.0.1:0").unwrap();
    backend
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let p = free_port();
    let cfg = dir.0.join("cidlb.toml");
    write(
        &cfg,
        &config_with(
            &format!("0.0.0.0:{p}"),
            &backend.local_addr().unwrap().to_string(),
        ),
    );
    let lb = Balancer::spawn_config(&cfg);
    // A ClientHello "from" 127.0.0.2:P, an address the wildcard listener receives on:
    // a socket bound there too (SO_REUSEPORT, as the listener's are) sends it.
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    s.set_reuse_port(true).unwrap();
    let spoof: SocketAddr = format!("127.0.0.2:{p}").parse().unwrap();
    s.bind(&spoof.into()).unwrap();
    let spoofer: UdpSocket = s.into();
    let hello = cidlb_wire::build::client_hello_datagram([7; 32], &[], None);
    let to: SocketAddr = format!("127.0.0.1:{p}").parse().unwrap();
    for _ in 0..5 {
        spoofer.send_to(&hello, to).unwrap();
    }
    // The same ClientHello from an ordinary address is forwarded: the listener works.
    let honest = UdpSocket::bind("127.0.0.1:0").unwrap();
    honest.send_to(&hello, to).unwrap();
    let mut buf = [0u8; 2048];
    let mut from = Vec::new();
    while let Ok((_, f)) = backend.recv_from(&mut buf) {
        from.push(f);
    }
    assert_eq!(from.len(), 1, "the backend got {from:?}");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let m = metrics(&lb);
        let dropped = metric(
            &m,
            "cidlb_dropped_total{listener=\"l\",reason=\"from_own_address\"}",
        );
        if dropped == 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{dropped} of 5 dropped as from_own_address"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn careless_command_lines_and_files_get_clear_bounded_errors() {
    let dir = TempDir::new("hostile-small");
    // --cid-len 0 is refused, as the file form refuses cid_length = 0.
    let (code, out) = cidlb(&[
        "run",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        "127.0.0.1:9",
        "--cid-len",
        "0",
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("--cid-len 0"), "{out}");
    // A broadcast backend.
    let cfg = dir.0.join("bcast.toml");
    write(&cfg, &config_with("127.0.0.1:5684", "255.255.255.255:5684"));
    let (code, out) = cidlb(&["check-config", cfg.to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("broadcast"), "{out}");
    // A 50 MB name: the error names the key and stays short.
    let huge = "x".repeat(50 << 20);
    write(
        &cfg,
        &config_with("127.0.0.1:5684", "127.0.0.1:6000")
            .replace("name = \"l\"", &format!("name = \"{huge} y\"")),
    );
    let (code, out) = cidlb(&["check-config", cfg.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(out.len() < 4096, "an error of {} bytes", out.len());
    assert!(out.contains("larger than 16 MiB"), "{out}");
    let big = "y".repeat(1 << 20);
    write(
        &cfg,
        &config_with("127.0.0.1:5684", "127.0.0.1:6000")
            .replace("name = \"l\"", &format!("name = \"{big} y\"")),
    );
    let (code, out) = cidlb(&["check-config", cfg.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        out.contains("listener[0].name"),
        "{}",
        &out[..out.len().min(500)]
    );
    assert!(out.len() < 4096, "an error of {} bytes", out.len());
}

#[test]
fn run_warns_with_the_numbers_when_the_descriptor_limit_is_too_low() {
    let dir = TempDir::new("hostile-nofile");
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let cfg = dir.0.join("cidlb.toml");
    write(
        &cfg,
        &format!(
            "workers = 1\n[limits]\nmax_flows = 100000\n{}",
            config_with("127.0.0.1:0", &sink.local_addr().unwrap().to_string())
        ),
    );
    // `ulimit -n` without -S/-H sets both limits, so cidlb cannot raise it.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_cidlb"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + DEADLINE;
    let mut warning = None;
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            if l.contains("open-files limit") {
                warning = Some(l);
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let w = warning.expect("a warning about the open-files limit");
    assert!(
        w.contains("(256)") && w.contains("100000 upstream sockets"),
        "{w}"
    );
}
