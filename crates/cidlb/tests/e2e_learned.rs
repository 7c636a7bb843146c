//! A CID binding learned from a backend's ServerHello is authoritative: real Mbed TLS
//! 3.6.5 DTLS 1.2 servers and clients behind the real `cidlb` binary.
//!
//! * **Learned beats encoded.** A listener with the server-ID prefix format
//!   (`prefix_length = 1`): backends `a` (server ID 01) and `b` (02) issue prefix-format
//!   CIDs from a generator for their ID; backend `c` has no server ID, and its CIDs happen
//!   to start with 01 (`01 c0 ..`), `a`'s ID. The balancer learns each of `c`'s CIDs
//!   from `c`'s ServerHello, so the client's Finished (its first record with the CID)
//!   and everything after must go to `c`, not to `a`, where the CID decodes to. Clients
//!   whose first datagram Maglev sends to each backend (picked with the admin API's
//!   `/lookup/client`) all complete their handshake, echo, and keep their sessions
//!   across a new port and a new 127.x address, with one handshake each.
//! * **A stalled backend gets its sessions back.** Three backends, learned routing only.
//!   Backend `b1` stalls (its server stops reading its socket, as under `kill -STOP`)
//!   until the health checks mark it down; meanwhile its clients keep sending, and the
//!   balancer forwards those datagrams elsewhere (no other backend holds the sessions,
//!   so they go unanswered). That must not replace the learned binding CID → `b1`:
//!   once `b1` resumes and is healthy again, its clients' echoes come back from `b1`,
//!   with no new handshake (the clients never re-handshake on their own).
//!
//! Health checks run every 200 ms (timeout 200 ms, rise 2, fall 3) where they matter.
//! Assertions are on what the DTLS servers and clients see (handshakes, echoes,
//! migrations), plus what the admin API reports. Every socket is on 127.0.0.0/8; every
//! wait polls a condition until a generous deadline; nothing asserts on timing.

mod common;

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cidlb::control::{BackendView, BackendsView};
use cidlb_cidformat::{hex_string, CidGenerator, PrefixFormat};
use cidlb_test_mbedtls::{CidSource, ClientConfig, DtlsClient, DtlsServer, ServerConfig};
use common::{Balancer, TempDir};

const ECHO_TIMEOUT: Duration = Duration::from_millis(900);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(6);
const DEADLINE: Duration = Duration::from_secs(15);
const HEALTH: &str = "[health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 3\n";

// ------------------------------------------------------------------ helpers

/// Starts `cidlb run --config` on `text` (kept in `dir`).
fn start(dir: &TempDir, text: &str) -> (Balancer, SocketAddr) {
    let path = dir.0.join("cidlb.toml");
    std::fs::write(&path, text).unwrap();
    let lb = Balancer::spawn_config(&path);
    let admin = lb.admin.expect("the admin API is up");
    (lb, admin)
}

fn http(admin: SocketAddr, path: &str) -> String {
    let (code, body) =
        cidlb::status::request(admin, "GET", path, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code, 200, "GET {path}: {body}");
    body
}

fn backend(admin: SocketAddr, name: &str) -> BackendView {
    let v: BackendsView = serde_json::from_str(&http(admin, "/backends")).unwrap();
    v.listeners[0]
        .backends
        .iter()
        .find(|b| b.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no backend {name}"))
}

fn healthy(admin: SocketAddr, name: &str) -> bool {
    let b = backend(admin, name);
    b.state == "up" && b.health == "healthy"
}

/// Polls `cond` until it holds, or panics after [`DEADLINE`] saying `what`.
fn wait_until(what: &str, cond: impl FnMut() -> bool) -> Duration {
    common::wait_until(what, DEADLINE, cond)
}

/// The backend a CID-less datagram from `client` would open a flow to (Maglev on the
/// address), as the admin API says.
fn new_flow_backend(admin: SocketAddr, client: SocketAddr) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&http(admin, &format!("/lookup/client/{client}"))).unwrap();
    assert_eq!(v["route"], "new", "{client} already has a flow: {v}");
    v["new_flow_backend"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("no backend for {client}: {v}"))
        .to_string()
}

/// Client addresses on `ip`, `n` for each `(backend, n)` of `wanted`: addresses whose
/// ClientHello Maglev sends to that backend. Ports are free ephemeral ports (bound and
/// released here, so that concurrent runs do not collide), which the clients bind again.
fn addresses(
    admin: SocketAddr,
    ip: Ipv4Addr,
    wanted: &[(&str, usize)],
) -> Vec<(String, SocketAddr)> {
    let mut found: BTreeMap<String, Vec<SocketAddr>> = BTreeMap::new();
    let total: usize = wanted.iter().map(|w| w.1).sum();
    let enough = |found: &BTreeMap<String, Vec<SocketAddr>>| {
        wanted
            .iter()
            .all(|(name, n)| found.get(*name).is_some_and(|v| v.len() >= *n))
    };
    for _ in 0..50 * total {
        if enough(&found) {
            break;
        }
        let addr = UdpSocket::bind((ip, 0)).unwrap().local_addr().unwrap();
        found
            .entry(new_flow_backend(admin, addr))
            .or_default()
            .push(addr);
    }
    assert!(enough(&found), "client addresses for {wanted:?}: {found:?}");
    wanted
        .iter()
        .flat_map(|(name, n)| found[*name][..*n].iter().map(|&a| (name.to_string(), a)))
        .collect()
}

fn client_config(lb: SocketAddr, bind: SocketAddr, cid_len: usize) -> ClientConfig {
    let mut cfg = ClientConfig::new(lb);
    cfg.bind = bind;
    cfg.own_cid_len = cid_len;
    cfg.handshake_timeout = HANDSHAKE_TIMEOUT;
    cfg
}

/// `127.<net>.<round>.<i + 1>`: a fresh address per (test, round, client).
fn fresh_ip(net: u8, round: u8, i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, net, round, 1 + i as u8))
}

fn handshakes(servers: &[&DtlsServer]) -> u64 {
    servers.iter().map(|s| s.stats().handshakes).sum()
}

// ------------------------------------------------------------ learned beats encoded

/// CIDs of 6 octets: the 1-octet prefix (server ID) and 5 more.
const PREFIX_CID_LEN: usize = 6;

/// A server whose CIDs come from a prefix-format generator for `server_id`.
fn prefix_server(server_id: u8) -> DtlsServer {
    let g = Mutex::new(
        CidGenerator::prefix(PrefixFormat::CALIFORNIUM, &[server_id], PREFIX_CID_LEN).unwrap(),
    );
    let g = Arc::new(g);
    let source = CidSource::new(move || {
        let mut g = g.lock().unwrap_or_else(PoisonError::into_inner);
        g.next_cid().map(|c| c.to_vec()).unwrap_or_default()
    });
    let cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), Vec::new(), PREFIX_CID_LEN)
        .with_cid_source(source);
    DtlsServer::spawn(cfg).expect("DTLS server starts")
}

#[test]
fn learned_binding_beats_a_colliding_encoded_server_id() {
    let a = prefix_server(0x01);
    let b = prefix_server(0x02);
    // No server ID, no generator: its CIDs start with 01 c0, which decodes to a.
    let c = DtlsServer::spawn(ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        vec![0x01, 0xc0],
        PREFIX_CID_LEN,
    ))
    .expect("DTLS server starts");
    let servers = [&a, &b, &c];
    let dir = TempDir::new("e2e-learned-encoded");
    let text = format!(
        "workers = 2\n\n[[listener]]\nname = \"dtls\"\naddress = \"127.0.0.1:0\"\ncid_length = {PREFIX_CID_LEN}\n\n  [listener.cid_format]\n  format = \"prefix\"\n  prefix_length = 1\n\n  [[listener.backend]]\n  name = \"a\"\n  address = \"{}\"\n  server_id = \"01\"\n\n  [[listener.backend]]\n  name = \"b\"\n  address = \"{}\"\n  server_id = \"02\"\n\n  [[listener.backend]]\n  name = \"c\"\n  address = \"{}\"\n",
        a.local_addr(),
        b.local_addr(),
        c.local_addr()
    );
    let (lb, admin) = start(&dir, &text);

    // Four clients per backend, all handshaking at once (a client whose handshake
    // cannot finish costs HANDSHAKE_TIMEOUT, once).
    let names = ["a", "b", "c"];
    let per = 4;
    let wanted: Vec<(&str, usize)> = names.iter().map(|&n| (n, per)).collect();
    let picked = addresses(admin, Ipv4Addr::new(127, 31, 0, 1), &wanted);
    let results: Vec<(String, io::Result<DtlsClient>)> = std::thread::scope(|s| {
        let handles: Vec<_> = picked
            .iter()
            .map(|(name, addr)| {
                let cfg = client_config(lb.addr, *addr, CID_LEN);
                let name = name.clone();
                s.spawn(move || (name, DtlsClient::connect(cfg)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let stats: Vec<_> = servers.iter().map(|s| s.stats()).collect();
    let mut failed: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, r) in &results {
        if let Err(e) = r {
            eprintln!("a client whose ClientHello went to {name}: {e}");
            *failed.entry(name.as_str()).or_default() += 1;
        }
    }
    eprintln!("handshakes: {failed:?} failed; servers a, b, c: {stats:#?}");
    assert!(
        failed.is_empty(),
        "clients that failed their handshake, by backend their ClientHello went to \
         (of {per} each): {failed:?}; handshakes completed by a, b, c: {:?}; CIDs a did \
         not know (c's clients' Finished): {}",
        stats.iter().map(|s| s.handshakes).collect::<Vec<_>>(),
        stats[0].unknown_cid,
    );
    for (s, name) in stats.iter().zip(names) {
        assert_eq!(s.handshakes, per as u64, "{name}: {s:?}");
    }
    let mut clients: Vec<(String, DtlsClient)> =
        results.into_iter().map(|(n, r)| (n, r.unwrap())).collect();
    for (name, cl) in &mut clients {
        let cid = cl.peer_cid();
        // a's and c's CIDs both start with 01 (c's with 01 c0).
        let prefix = if name == "b" { 0x02 } else { 0x01 };
        assert_eq!(cid[0], prefix, "{name} issued {cid:02x?}");
        if name == "c" {
            assert_eq!(cid[1], 0xc0, "c issued {cid:02x?}");
        }
    }

    // Echo, then a new port, then a new address; echo after each.
    let mut lost: BTreeMap<String, usize> = BTreeMap::new();
    for round in 0..3u8 {
        for (i, (name, cl)) in clients.iter_mut().enumerate() {
            match round {
                0 => {}
                1 => {
                    let ip = cl.local_addr().unwrap().ip();
                    cl.rebind(SocketAddr::new(ip, 0)).expect("rebind");
                }
                _ => cl
                    .rebind(SocketAddr::new(fresh_ip(31, round, i), 0))
                    .expect("rebind"),
            }
            if cl
                .echo(format!("round {round} client {i}").as_bytes(), ECHO_TIMEOUT)
                .is_err()
            {
                *lost.entry(name.clone()).or_default() += 1;
            }
        }
    }
    let stats: Vec<_> = servers.iter().map(|s| s.stats()).collect();
    eprintln!("after the moves: lost {lost:?}; servers a, b, c: {stats:#?}");
    assert!(lost.is_empty(), "echoes lost, by backend: {lost:?}");
    assert_eq!(
        handshakes(&servers),
        3 * per as u64,
        "one handshake per client, none repeated"
    );
    for (s, name) in stats.iter().zip(names) {
        assert_eq!(
            s.migrations,
            2 * per as u64,
            "{name}'s sessions moved twice: {s:?}"
        );
    }

    // The operator's lookup tells the truth: c's CIDs go to c (whatever they decode to).
    for (name, cl) in clients.iter_mut().filter(|(n, _)| n == "c") {
        let cid = hex_string(&cl.peer_cid());
        let v: serde_json::Value =
            serde_json::from_str(&http(admin, &format!("/lookup/cid/{cid}"))).unwrap();
        assert_eq!(
            v["backend"]["name"],
            name.as_str(),
            "GET /lookup/cid/{cid} disagrees with where its datagrams went: {v}"
        );
    }
}

// ------------------------------------------------------- a stalled backend comes back

const CID_LEN: usize = 4;

/// Backend `b<i>`'s server: CIDs start with `0xa0 + i`, so a client's CID tells which
/// server holds its session.
fn server(i: u8) -> DtlsServer {
    DtlsServer::spawn(ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        vec![0xa0 + i],
        CID_LEN,
    ))
    .expect("DTLS server starts")
}

#[test]
fn sessions_of_a_stalled_backend_come_back_when_it_does() {
    let servers: Vec<DtlsServer> = (0..3).map(server).collect();
    let all: Vec<&DtlsServer> = servers.iter().collect();
    let dir = TempDir::new("e2e-learned-stall");
    let mut text = format!(
        "workers = 2\n{HEALTH}\n[[listener]]\nname = \"dtls\"\naddress = \"127.0.0.1:0\"\ncid_length = {CID_LEN}\n"
    );
    for (i, s) in servers.iter().enumerate() {
        text.push_str(&format!(
            "\n  [[listener.backend]]\n  name = \"b{i}\"\n  address = \"{}\"\n",
            s.local_addr()
        ));
    }
    let (lb, admin) = start(&dir, &text);
    wait_until("every backend answers its health checks", || {
        (0..3).all(|i| healthy(admin, &format!("b{i}")))
    });

    // Three sessions on b1 (the one that stalls), one on each of the others.
    let picked = addresses(
        admin,
        Ipv4Addr::new(127, 32, 0, 1),
        &[("b1", 3), ("b0", 1), ("b2", 1)],
    );
    let mut stalled = Vec::new();
    let mut others = Vec::new();
    for (name, addr) in &picked {
        let mut c = DtlsClient::connect(client_config(lb.addr, *addr, CID_LEN))
            .unwrap_or_else(|e| panic!("a client of {name}: handshake through cidlb: {e}"));
        let owner = usize::from(c.peer_cid()[0] - 0xa0);
        assert_eq!(
            format!("b{owner}"),
            *name,
            "the session is where Maglev said"
        );
        c.echo(b"hello", ECHO_TIMEOUT)
            .unwrap_or_else(|e| panic!("a client of {name}: first echo: {e}"));
        if name == "b1" {
            stalled.push(c);
        } else {
            others.push(c);
        }
    }
    assert_eq!((stalled.len(), others.len()), (3, 2));
    let hs = handshakes(&all);
    assert_eq!(hs, 5);
    let b1_hs = servers[1].stats().handshakes;

    // b1 stalls until it is marked down.
    servers[1].pause();
    let took = wait_until("b1 is marked down", || {
        let b = backend(admin, "b1");
        b.state == "down" && b.health == "unhealthy"
    });
    eprintln!("b1 marked down {took:?} after it stalled");

    // Its clients keep sending (three records each); nobody answers them: no other
    // backend holds their sessions.
    for (i, c) in stalled.iter_mut().enumerate() {
        assert!(
            c.echo(format!("stalled {i}").as_bytes(), ECHO_TIMEOUT)
                .is_err(),
            "an echo from a stalled backend's session"
        );
    }
    // The other backends serve on.
    for (i, c) in others.iter_mut().enumerate() {
        c.echo(format!("others {i}").as_bytes(), ECHO_TIMEOUT)
            .unwrap_or_else(|e| panic!("a session on a healthy backend: {e}"));
    }
    let lookups = |stalled: &mut [DtlsClient]| -> Vec<String> {
        stalled
            .iter_mut()
            .map(|c| {
                let cid = hex_string(&c.peer_cid());
                let v: serde_json::Value =
                    serde_json::from_str(&http(admin, &format!("/lookup/cid/{cid}"))).unwrap();
                format!("{cid}: {} -> {}", v["route"], v["backend"]["name"])
            })
            .collect()
    };
    let during = lookups(&mut stalled);
    eprintln!("b1's CIDs while it is down: {during:?}");

    // b1 resumes and passes its health checks again.
    servers[1].resume();
    let took = wait_until("b1 is healthy again", || healthy(admin, "b1"));
    eprintln!("b1 healthy again {took:?} after it resumed");

    // Its sessions work again, from the same address and from a new port.
    let echoed_before = servers[1].stats().echoed;
    let mut lost = 0;
    for round in 0..2 {
        for (i, c) in stalled.iter_mut().enumerate() {
            if round == 1 {
                let ip = c.local_addr().unwrap().ip();
                c.rebind(SocketAddr::new(ip, 0)).expect("rebind");
            }
            if c.echo(format!("back {round} {i}").as_bytes(), ECHO_TIMEOUT)
                .is_err()
            {
                lost += 1;
            }
        }
    }
    let after = lookups(&mut stalled);
    let stats: Vec<_> = servers.iter().map(|s| s.stats()).collect();
    eprintln!(
        "after b1 came back: {lost} of 6 echoes lost; lookups {after:?}; servers: {stats:#?}"
    );
    assert_eq!(
        lost,
        0,
        "echoes lost by b1's 3 sessions after it came back (of 6); b1 echoed {} of them; \
         CIDs while b1 was down: {during:?}; after: {after:?}",
        stats[1].echoed - echoed_before
    );
    assert_eq!(
        servers[1].stats().handshakes,
        b1_hs,
        "no new handshake on b1"
    );
    assert_eq!(handshakes(&all), hs, "no new handshake anywhere");
    assert!(
        stats[1].echoed - echoed_before >= 6,
        "b1 echoed its sessions' messages: {:?}",
        stats[1]
    );
    for c in &mut others {
        c.echo(b"still here", ECHO_TIMEOUT)
            .expect("a session on a healthy backend");
    }
}
