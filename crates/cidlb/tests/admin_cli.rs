//! The admin commands of the CLI against the real `cidlb` binary: `drain`, `undrain`,
//! `weight`, `lookup`, `flows`, `bindings`, `reload` and `status`, each finding the admin
//! API through `--config FILE` (its `[admin] address`). Loopback only; bounded.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use common::{Balancer, TempDir};

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

use common::cidlb_cli as cli;

fn write_config(path: &Path, admin: u16, backends: &[SocketAddr], listen: &str) {
    let mut t = format!(
        "[admin]\naddress = \"127.0.0.1:{admin}\"\n[health]\nenabled = false\n\
         [[listener]]\nname = \"l\"\naddress = \"{listen}\"\ncid_length = 4\n"
    );
    for (i, b) in backends.iter().enumerate() {
        t.push_str(&format!(
            "[[listener.backend]]\nname = \"b{i}\"\naddress = \"{b}\"\n"
        ));
    }
    std::fs::write(path, t).unwrap();
}

#[test]
fn admin_commands_find_the_api_through_the_config_file() {
    let dir = TempDir::new("admin-cli");
    let sinks: Vec<UdpSocket> = (0..2)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<SocketAddr> = sinks.iter().map(|s| s.local_addr().unwrap()).collect();
    let cfg = dir.0.join("cidlb.toml");
    let admin = free_tcp_port();
    write_config(&cfg, admin, &addrs, "127.0.0.1:0");
    // --admin as in the file (Balancer::spawn would pick a free port otherwise).
    let lb = Balancer::spawn(&[
        "run".into(),
        "--config".into(),
        cfg.display().to_string(),
        "--admin".into(),
        format!("127.0.0.1:{admin}"),
    ]);
    let c = cfg.to_str().unwrap();

    let (code, out) = cli(&["drain", "b0", "--config", c]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("backend b0") && out.contains("operator's state draining"),
        "{out}"
    );
    let (code, out) = cli(&["weight", "b1", "7", "-c", c]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("weight 7"), "{out}");
    // status marks what differs from the file.
    let (code, out) = cli(&["status", "-c", c]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("draining*") && out.contains(" 7*"), "{out}");
    assert!(out.contains("differs from the configuration file"), "{out}");
    let (code, out) = cli(&["undrain", "b0", "-c", c]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("operator's state up"), "{out}");
    // An error answer is an exit status and the API's words.
    let (code, out) = cli(&["drain", "nope", "-c", c]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("no backend named \"nope\""), "{out}");

    // A session-less datagram makes a flow; lookups and listings see it.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let hello = cidlb_wire::build::client_hello_datagram([3; 32], &[], None);
    client.send_to(&hello, lb.addr).unwrap();
    let me = client.local_addr().unwrap().to_string();
    let mut listed = String::new();
    for _ in 0..100 {
        let (code, out) = cli(&["flows", "-c", c]);
        assert_eq!(code, 0, "{out}");
        if out.contains(&me) {
            listed = out;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(listed.contains("1 flows"), "{listed}");
    let (code, out) = cli(&["lookup", "client", &me, "-c", c]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("route:   flow"), "{out}");
    let (code, out) = cli(&["lookup", "client", "127.0.0.1", "-c", c]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&me), "{out}");
    let (code, out) = cli(&["lookup", "cid", "0x01:02:03:04", "-c", c]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("route:   unknown"), "{out}");
    let (code, out) = cli(&["bindings", "-c", c, "--source", "learned"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("0 CID bindings"), "{out}");

    // reload: validated here first, then by the daemon.
    let (code, out) = cli(&["reload", "-c", c]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("reloaded: configuration generation 2"),
        "{out}"
    );
    std::fs::write(&cfg, "[[listener]]\nname = 1\n").unwrap();
    let (code, out) = cli(&["reload", "--admin", &format!("127.0.0.1:{admin}"), "-c", c]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("not reloaded") && out.contains("listener[0].name"),
        "{out}"
    );
    // A change that needs a restart: the daemon says no, with 409.
    write_config(&cfg, admin, &addrs, "127.0.0.1:1");
    let (code, out) = cli(&["reload", "-c", c]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("HTTP 409") && out.contains("restart"), "{out}");
    drop(lb);
}
