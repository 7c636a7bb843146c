//! The program on a real interface: network namespaces that this test creates and
//! removes, joined by a bridge, with only addresses inside them (10.77.0.0/24).
//!
//! ```text
//!   client ns (10.77.0.2)      lb ns (no address; the program on veth0)
//!        veth0                      veth0
//!          |                          |          (XDP_PASS on sw-lb: a veth's XDP_TX
//!        sw-c -------- br0 -------- sw-lb         reaches its peer only if the peer
//!                     /    \                      has an XDP program)
//!                 sw-b0    sw-b1       switch ns
//!                   |        |
//!                 veth0    veth0       backend ns b0 (10.77.0.10), b1 (10.77.0.11),
//!                                      each with the VIP 10.77.0.100 on its loopback
//! ```
//!
//! The client sends DTLS-shaped datagrams to the VIP (a static neighbour entry points
//! it at the balancer's MAC, as a router would); the program rewrites the destination
//! MAC and sends them back out; the bridge delivers them to the backend; the backend's
//! socket sees the client's own address (direct routing preserves it) and answers the
//! client directly, from the VIP. A CID seeded on one client port reaches the same
//! backend from another port (a NAT rebinding).
//!
//! The roles run as child processes of this test binary inside the namespaces (`ip
//! netns exec ... <this binary> netns_role --exact`), each bounded in time.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const VIP: &str = "10.77.0.100";
const PORT: u16 = 5684;
const LB_MAC: &str = "02:77:00:00:00:01";
const CLIENT_MAC: &str = "02:77:00:00:00:02";
const BACKEND_MACS: [&str; 2] = ["02:77:00:00:00:10", "02:77:00:00:00:11"];
const BACKEND_IPS: [&str; 2] = ["10.77.0.10", "10.77.0.11"];
use cidlb_test_netns::{dr_backend, ip, neigh_permanent, say, switch, Namespaces, Proc};

const ROLE: &str = "CIDLB_NETNS_ROLE";

fn mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (i, p) in s.split(':').enumerate() {
        m[i] = u8::from_str_radix(p, 16).unwrap();
    }
    m
}

/// The namespaces of this test run.
trait Named {
    fn name(&self, role: &str) -> String;
}

impl Named for Namespaces {
    fn name(&self, role: &str) -> String {
        format!("cidlb-{role}-{}", std::process::id())
    }
}

fn setup() -> Result<Namespaces, String> {
    let mut ns = Namespaces::default();
    for role in ["sw", "lb", "c", "b0", "b1"] {
        let n = ns.name(role);
        ip(&["netns", "add", &n])?;
        ns.names.push(n);
    }
    let names: Vec<String> = ["lb", "c", "b0", "b1"].iter().map(|r| ns.name(r)).collect();
    switch(
        &ns.name("sw"),
        &[
            (&names[0], "lb", LB_MAC),
            (&names[1], "c", CLIENT_MAC),
            (&names[2], "b0", BACKEND_MACS[0]),
            (&names[3], "b1", BACKEND_MACS[1]),
        ],
    )?;
    let c = ns.name("c");
    ip(&["-n", &c, "addr", "add", "10.77.0.2/24", "dev", "veth0"])?;
    // The VIP is the balancer's: a router in front of it would resolve it so.
    neigh_permanent(&c, VIP, LB_MAC, "veth0")?;
    for (i, b) in ["b0", "b1"].iter().enumerate() {
        dr_backend(&ns.name(b), &format!("{}/24", BACKEND_IPS[i]), VIP)?;
    }
    Ok(ns)
}

/// A role running in a namespace; its stdout lines come through a channel.
/// A part of this test run in a namespace (this binary, as the `netns_role` test).
fn role(ns: &str, role: &str, env: &[(&str, String)]) -> Proc {
    let mut env = env.to_vec();
    env.push((ROLE, role.to_string()));
    Proc::role(ns, "netns_role", &env)
}

fn cid12(cid: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    cidlb_wire::build::cid12(1, 1, cid, payload, &mut d);
    d
}

/// The client's datagrams: (source port, payload).
fn script() -> Vec<(u16, Vec<u8>)> {
    let cid = [0xc1, 0xd0, 0x0c, 0x1d];
    vec![
        (
            41000,
            cidlb_wire::build::client_hello_datagram([1; 32], &[], None),
        ),
        (41000, cid12(&cid, b"finished")),
        (41000, cid12(&cid, b"ping-1")),
        // The client's NAT rebinds: a new port, the same CID.
        (42000, cid12(&cid, b"ping-2")),
        (43000, cid12(&[0xde, 0xad, 0xbe, 0xef], b"unknown")),
        (
            43001,
            cidlb_wire::build::client_hello_datagram([2; 32], &[], None),
        ),
        (
            43002,
            cidlb_wire::build::client_hello_datagram([3; 32], &[], None),
        ),
        (
            43003,
            cidlb_wire::build::client_hello_datagram([4; 32], &[], None),
        ),
    ]
}

#[test]
fn direct_routing_through_network_namespaces() {
    let probe = Command::new("ip").args(["netns", "list"]).output();
    let ns = match probe.map_err(|e| e.to_string()).and_then(|_| setup()) {
        Ok(ns) => ns,
        Err(e) => {
            if support::required() {
                panic!("cannot set up network namespaces: {e}");
            }
            support::say_skip(&format!(
                "SKIP direct_routing_through_network_namespaces: {e}; set {}=1 to fail instead",
                support::REQUIRE
            ));
            return;
        }
    };
    let pass = role(&ns.name("sw"), "pass", &[]);
    pass.expect_prefix("ready", Duration::from_secs(20));
    let (client_lines, got, lb_lines) = run_part(&ns, "lb", "client");
    eprintln!("client: {client_lines:#?}\nbackends: {got:#?}\nlb: {lb_lines:#?}");

    // Every datagram reached exactly one backend, with the client's own address.
    let script = script();
    let seen_at = delivered(&got, script.len(), |from, hex| {
        script
            .iter()
            .position(|(port, p)| hex::encode(p) == hex && from.port() == *port)
    });
    assert!(
        seen_at.iter().all(Option::is_some),
        "every datagram reaches a backend: {seen_at:?}"
    );
    // The flow, its CID, and the CID from the rebound port: one backend.
    assert_eq!(seen_at[0], seen_at[1]);
    assert_eq!(seen_at[1], seen_at[2]);
    assert_eq!(
        seen_at[2], seen_at[3],
        "the rebound client reaches its backend"
    );
    // Backends answered the client directly, from the VIP.
    assert_eq!(
        replies(&client_lines),
        script.len(),
        "direct replies: {client_lines:?}"
    );
    assert!(client_lines
        .iter()
        .filter(|l| l.starts_with("reply "))
        .all(|l| l.contains(&format!("{VIP}:{PORT}"))));
    let counts = lb_lines
        .iter()
        .find(|l| l.starts_with("routed "))
        .expect("the balancer's counters");
    assert!(counts.contains("hashed=4"), "{counts}");
    assert!(counts.contains("cid_by_flow=1"), "{counts}");
    assert!(counts.contains("seeded=2"), "{counts}");
    assert!(counts.contains("unknown_cid=1"), "{counts}");

    // Encrypted QUIC-LB CIDs, each new to the program and sent once: the program queues
    // each datagram for the slow path, which decodes the CID, routes the frame again
    // and sends it out of veth0: none is lost, each reaches the backend its CID names.
    let (client_lines, got, lb_lines) = run_part(&ns, "lb-encrypted", "client-encrypted");
    eprintln!("encrypted: client {client_lines:#?}\nbackends: {got:#?}\nlb: {lb_lines:#?}");
    let sent = encrypted_script();
    let seen_at = delivered(&got, sent.len(), |_, hex| {
        sent.iter().position(|(_, p)| hex::encode(p) == hex)
    });
    for (i, (backend, _)) in sent.iter().enumerate() {
        assert_eq!(
            seen_at[i],
            Some(*backend),
            "datagram {i} (its CID new to the program, sent once) reaches backend {backend}: {seen_at:?}"
        );
    }
    assert_eq!(
        replies(&client_lines),
        sent.len(),
        "direct replies: {client_lines:?}"
    );
    let stats = lb_lines
        .iter()
        .find(|l| l.starts_with("stats "))
        .expect("the balancer's stats");
    let n = sent.len();
    assert!(
        stats.contains(&format!(" punted_encrypted_cids={n} ")),
        "{stats}"
    );
    assert!(
        stats.contains(&format!(" slow_path_forwarded={n} ")),
        "{stats}"
    );
    assert!(stats.contains(" slow_path_unsent=0 "), "{stats}");
    drop(pass);
}

/// `stats name=value ... ` of a plane's own counters (each followed by a space).
fn stats_line(s: &cidlb_core::plane::PlaneSnapshot) -> String {
    let mut line = String::from("stats ");
    for (i, v) in &s.stats {
        line.push_str(&format!("{}={v} ", i.name));
    }
    line
}

/// The balancer's listener on veth0: two backends (server IDs 0x10 and 0x11), 4-octet
/// CIDs without `format`, else `format`'s (17 octets).
fn lb_config(format: Option<cidlb_xdp::XdpCidFormat>) -> cidlb_xdp::XdpListenerConfig {
    let backends: Vec<cidlb_core::Backend> = (0..2u16)
        .map(|i| {
            let mut b = cidlb_core::Backend::new(
                i,
                format!("b{i}"),
                format!("{}:{PORT}", BACKEND_IPS[usize::from(i)])
                    .parse()
                    .unwrap(),
            );
            b.server_id = cidlb_core::ServerId::new(&[0x10 + i as u8]);
            b
        })
        .collect();
    let cid = match &format {
        Some(f) => f.cid_routing(Some(17)),
        None => cidlb_core::CidRouting::fixed(4),
    };
    let mut router = cidlb_core::RouterConfig::new(cid, [1, 2, 3, 4]);
    router.max_flows = 1024;
    router.max_bindings = 1024;
    cidlb_xdp::XdpListenerConfig {
        name: "netns".into(),
        addr: format!("{VIP}:{PORT}").parse().unwrap(),
        router,
        format,
        backends,
        backend_macs: (0..2)
            .map(|i| (BACKEND_IPS[i].parse().unwrap(), mac(BACKEND_MACS[i])))
            .collect(),
        backend_ports: Vec::new(),
        src_mac: mac(LB_MAC),
        attach: Some(cidlb_xdp::Attach {
            interface: "veth0".into(),
            more: Vec::new(),
            mode: cidlb_xdp::XdpMode::Driver,
            pin: None,
        }),
    }
}

/// How many replies a client role got.
fn replies(client_lines: &[String]) -> usize {
    client_lines
        .iter()
        .filter(|l| l.starts_with("reply "))
        .count()
}

/// One part of the test: the balancer role `lb`, the two backends, then the client role
/// `client` to its end; what each printed (client, backends, balancer).
fn run_part(
    ns: &Namespaces,
    lb: &str,
    client: &str,
) -> (Vec<String>, Vec<Vec<String>>, Vec<String>) {
    let lb = role(&ns.name("lb"), lb, &[]);
    lb.expect_prefix("ready", Duration::from_secs(20));
    let backends: Vec<Proc> = ["b0", "b1"]
        .iter()
        .map(|b| {
            let r = role(&ns.name(b), "backend", &[]);
            r.expect_prefix("ready", Duration::from_secs(20));
            r
        })
        .collect();
    let client_lines = role(&ns.name("c"), client, &[]).finish(Duration::from_secs(60));
    let got = backends
        .into_iter()
        .map(|b| b.finish(Duration::from_secs(30)))
        .collect();
    (client_lines, got, lb.finish(Duration::from_secs(30)))
}

/// Which backend got each datagram of a script (`which` names a `got` line's datagram,
/// from its source and hex payload, by its index): each once at most, each from the
/// client's own address.
fn delivered(
    got: &[Vec<String>],
    n: usize,
    which: impl Fn(SocketAddr, &str) -> Option<usize>,
) -> Vec<Option<usize>> {
    let mut seen_at = vec![None; n];
    for (b, lines) in got.iter().enumerate() {
        for l in lines.iter().filter(|l| l.starts_with("got ")) {
            let mut parts = l.split(' ');
            parts.next();
            let from: SocketAddr = parts.next().unwrap().parse().unwrap();
            let hex = parts.next().unwrap();
            let i = which(from, hex)
                .unwrap_or_else(|| panic!("backend {b} got an unexpected datagram: {l}"));
            assert_eq!(
                from.ip().to_string(),
                "10.77.0.2",
                "the client's address is preserved"
            );
            assert!(seen_at[i].is_none(), "datagram {i} delivered twice");
            seen_at[i] = Some(b);
        }
    }
    seen_at
}

/// The encrypted QUIC-LB format of the second part (single-pass AES: 1-octet server
/// IDs, 15-octet nonces, 17-octet CIDs).
fn encrypted_format() -> cidlb_cidformat::QuicLbConfig {
    cidlb_cidformat::QuicLbConfig::new(cidlb_cidformat::QuicLbParams {
        rotation: 1,
        server_id_len: 1,
        nonce_len: 15,
        key: Some([0x3c; 16]),
        self_describing_length: false,
    })
    .unwrap()
}

/// (backend, datagram): 16 datagrams, each with a CID of its own naming backend i % 2
/// (server IDs 0x10 and 0x11).
fn encrypted_script() -> Vec<(usize, Vec<u8>)> {
    let q = encrypted_format();
    (0..16u8)
        .map(|i| {
            let b = usize::from(i % 2);
            let cid = q.encode(&[0x10 + i % 2], &[i; 15], 0).unwrap();
            (b, cid12(&cid, format!("encrypted-{i}").as_bytes()))
        })
        .collect()
}

/// The roles (does nothing unless run by the test above, with CIDLB_NETNS_ROLE set).
#[test]
fn netns_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let stdin_closed = || {
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut s = String::new();
            while std::io::stdin().read_line(&mut s).is_ok_and(|n| n > 0) {}
            let _ = tx.send(());
        });
        rx
    };
    // libtest has written "test netns_role ... " without a newline: end that line.
    say("");
    match role.as_str() {
        "pass" => {
            let _p = cidlb_xdp::XdpPass::attach("sw-lb", cidlb_xdp::XdpMode::Driver)
                .expect("the pass program on sw-lb");
            say("ready");
            let _ = stdin_closed().recv_timeout(Duration::from_secs(60));
        }
        "lb" => {
            use cidlb_core::plane::ListenerPlane;
            let l = cidlb_xdp::XdpListener::new(lb_config(None)).expect("the listener on veth0");
            say("ready");
            let _ = stdin_closed().recv_timeout(Duration::from_secs(60));
            let s = l.snapshot(false);
            let mut line = String::from("routed");
            for o in <cidlb_core::RouteOutcome as strum::IntoEnumIterator>::iter() {
                let name: &'static str = o.into();
                line.push_str(&format!(" {name}={}", s.counters.routed(o)));
            }
            say(&line);
            say(&format!("dropped {:?}", s.counters.dropped));
            say(&stats_line(&s));
        }
        "lb-encrypted" => {
            use cidlb_core::plane::DataPlane;
            let format = cidlb_xdp::XdpCidFormat::quic_lb(vec![encrypted_format()], vec![])
                .expect("the format");
            let plane = cidlb_xdp::XdpPlane::start(vec![lb_config(Some(format))])
                .expect("the plane on veth0");
            say("ready");
            let _ = stdin_closed().recv_timeout(Duration::from_secs(60));
            let s = plane.listeners()[0].snapshot(false);
            say(&stats_line(&s));
        }
        "client-encrypted" => {
            // Each datagram once (no retry: the point is that the first is not lost),
            // then a bounded wait for the backend's direct reply.
            for (i, (_, payload)) in encrypted_script().into_iter().enumerate() {
                let sock =
                    UdpSocket::bind(("10.77.0.2", 44000 + i as u16)).expect("bind the client");
                sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                sock.send_to(&payload, (VIP, PORT)).unwrap();
                let mut buf = [0u8; 2048];
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => say(&format!("reply {i} {from} {}", n)),
                    Err(e) => say(&format!("noreply {i}: {e}")),
                }
            }
        }
        "backend" => {
            let sock = UdpSocket::bind((VIP, PORT)).expect("bind the backend to the VIP");
            sock.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            say("ready");
            let done = stdin_closed();
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut buf = [0u8; 2048];
            while Instant::now() < deadline && done.try_recv().is_err() {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    say(&format!("got {from} {}", hex::encode(&buf[..n])));
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        }
        "client" => {
            for (port, payload) in script() {
                let sock = UdpSocket::bind(("10.77.0.2", port)).expect("bind the client");
                sock.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let mut buf = [0u8; 2048];
                // Bounded retries: the first datagrams may meet a cold bridge.
                for _ in 0..10 {
                    sock.send_to(&payload, (VIP, PORT)).unwrap();
                    if let Ok((n, from)) = sock.recv_from(&mut buf) {
                        say(&format!("reply {from} {}", hex::encode(&buf[..n])));
                        break;
                    }
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
}
