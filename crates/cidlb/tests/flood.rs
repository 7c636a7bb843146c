//! Hostile traffic against the real `cidlb` binary in front of three real Mbed TLS
//! 3.6.5 DTLS 1.2 CID servers, with small table bounds (2000 flows, 2000 bindings),
//! while real DTLS sessions keep echoing and rebinding:
//!
//! - (a) `tls12_cid` records with random CIDs from thousands of source addresses
//!   127.0.x.y (new flows; a few records per address, so bindings get seeded too);
//! - (b) truncated, length-overrunning, wrong-version, empty, oversized and non-DTLS
//!   datagrams;
//! - (c) replays of a genuine client's captured CID record from other addresses.
//!
//! Asserted: every real session's echoes arrive with no new handshake, the tables stay
//! within their bounds (polled during the flood), the learned bindings survive the
//! seeded ones, the drop counters name the reasons, and nothing amplifies: no attacker
//! socket receives a single byte (the backends answer nothing to these), so the genuine
//! clients' traffic never goes to an attacker's address. Bounded: a few seconds,
//! loopback only.

mod common;

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use cidlb_test_mbedtls::{ClientConfig, Direction, DtlsClient, DtlsServer, ServerConfig};
use common::{Balancer, TempDir};

const CID_LEN: usize = 4;
const MAX_FLOWS: usize = 2000;
const MAX_BINDINGS: usize = 2000;
const SESSIONS: usize = 12;
/// Generous: the flood shares two cores with the sessions.
const ECHO_TIMEOUT: Duration = Duration::from_secs(3);
/// Attacker sockets kept open at once (each is checked for received bytes before it is
/// closed, and the last ones after the flood).
const OPEN_SOCKETS: usize = 256;

fn http(admin: SocketAddr, method: &str, path: &str) -> (u16, String) {
    cidlb::status::request(admin, method, path, None).unwrap_or_else(|e| panic!("{e}"))
}

/// A metric's value from the exposition (labels in exposition order).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series}"))
}

/// A tiny deterministic generator (xorshift64*): the test needs variety, not secrecy.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A `tls12_cid` record (RFC 9146 §4): type 25, DTLS 1.2, epoch 1, seq, CID, length,
/// "encrypted" payload.
fn cid_record(cid: &[u8], seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut d = vec![25, 0xfe, 0xfd, 0, 1];
    d.extend_from_slice(&seq.to_be_bytes()[2..]);
    d.extend_from_slice(cid);
    d.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    d.extend_from_slice(payload);
    d
}

/// Attacker sockets: bound one after another on fresh addresses, at most
/// [`OPEN_SOCKETS`] open; every byte any of them receives is counted.
struct Attackers {
    open: VecDeque<UdpSocket>,
    received: u64,
    sockets: u64,
}

impl Attackers {
    fn new() -> Self {
        Attackers {
            open: VecDeque::new(),
            received: 0,
            sockets: 0,
        }
    }

    fn bind(&mut self, ip: Ipv4Addr) -> &UdpSocket {
        if self.open.len() >= OPEN_SOCKETS {
            let s = self.open.pop_front().unwrap();
            self.received += drain(&s);
        }
        let s = UdpSocket::bind((ip, 0)).expect("bind an attacker socket on 127/8");
        s.set_nonblocking(true).unwrap();
        self.sockets += 1;
        self.open.push_back(s);
        self.open.back().unwrap()
    }

    /// Waits a little for late answers, then counts what every open socket received.
    fn finish(mut self) -> (u64, u64) {
        thread::sleep(Duration::from_millis(300));
        for s in self.open.drain(..) {
            self.received += drain(&s);
        }
        (self.received, self.sockets)
    }
}

/// Bytes waiting on a non-blocking socket.
fn drain(s: &UdpSocket) -> u64 {
    let mut buf = [0u8; 65536];
    let mut n = 0;
    while let Ok((len, from)) = s.recv_from(&mut buf) {
        eprintln!(
            "attacker {:?} received {len} bytes from {from}",
            s.local_addr()
        );
        // An empty datagram counts too.
        n += len as u64 + 1;
    }
    n
}

/// Sends without stopping at a full socket buffer (the flood is best effort).
fn send(s: &UdpSocket, d: &[u8], to: SocketAddr) {
    loop {
        match s.send_to(d, to) {
            Ok(_) => return,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::yield_now(),
            Err(_) => return,
        }
    }
}

/// Every few datagrams, a pause: a flood, but one that leaves the sessions' datagrams
/// a chance in the balancer's receive buffer (the kernel caps it at rmem_max).
fn pace(i: usize) {
    if i % 64 == 63 {
        thread::sleep(Duration::from_millis(1));
    }
}

#[derive(Default, Debug)]
struct Sent {
    random_cid: AtomicU64,
    truncated_header: AtomicU64,
    length_overrun: AtomicU64,
    bad_version: AtomicU64,
    not_dtls: AtomicU64,
    empty: AtomicU64,
    oversized: AtomicU64,
    replays: AtomicU64,
}

#[test]
fn floods_do_not_break_sessions_fill_tables_or_amplify() {
    let t0 = Instant::now();
    let dir = TempDir::new("flood");
    let servers: Vec<DtlsServer> = (0..3u8)
        .map(|i| {
            let cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap(), vec![0xa0 + i], CID_LEN);
            DtlsServer::spawn(cfg).expect("DTLS server starts")
        })
        .collect();
    let mut cfg = format!(
        "workers = 2\n\n[limits]\nmax_flows = {MAX_FLOWS}\nmax_bindings = {MAX_BINDINGS}\n\n\
         [[listener]]\nname = \"dtls\"\naddress = \"127.0.0.1:0\"\ncid_length = {CID_LEN}\n"
    );
    for (i, s) in servers.iter().enumerate() {
        cfg.push_str(&format!(
            "\n  [[listener.backend]]\n  name = \"b{i}\"\n  address = \"{}\"\n",
            s.local_addr()
        ));
    }
    let path = dir.0.join("cidlb.toml");
    std::fs::write(&path, cfg).unwrap();
    let lb = Balancer::spawn_config(&path);
    let admin = lb.admin.expect("the admin API is up");
    let to = lb.addr;

    // The genuine sessions: each handshakes, then echoes and rebinds (every third
    // echo: a new port, or a new address 127.0.60+.x) until the flood is over, and a
    // few echoes more.
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(Barrier::new(SESSIONS + 1));
    let (cid_tx, cid_rx) = std::sync::mpsc::channel::<(Vec<u8>, Option<Vec<u8>>)>();
    let sessions: Vec<_> = (0..SESSIONS)
        .map(|k| {
            let (stop, ready, cid_tx) = (stop.clone(), ready.clone(), cid_tx.clone());
            thread::spawn(move || {
                let mut c = ClientConfig::new(to);
                c.own_cid_len = CID_LEN;
                c.handshake_timeout = Duration::from_secs(10);
                c.capture = k == 0;
                let mut dtls = DtlsClient::connect(c).expect("handshake through cidlb");
                dtls.echo(b"first", ECHO_TIMEOUT).expect("first echo");
                // Client 0's last CID record is what the attacker replays.
                let genuine = (k == 0).then(|| {
                    dtls.captured()
                        .into_iter()
                        .rev()
                        .find(|(d, b)| *d == Direction::ClientToServer && b[0] == 25)
                        .map(|(_, b)| b)
                        .expect("a CID record was sent")
                });
                cid_tx.send((dtls.peer_cid(), genuine)).unwrap();
                ready.wait();
                let (mut echoed, mut rebinds, mut round) = (1u64, 0u64, 0u32);
                let mut after_stop = 0;
                while after_stop < 3 {
                    if stop.load(Ordering::Relaxed) {
                        after_stop += 1;
                    }
                    round += 1;
                    if round % 3 == 0 {
                        let ip = if round % 6 == 0 {
                            Ipv4Addr::new(127, 0, 60 + (rebinds / 200) as u8, 1 + k as u8)
                        } else {
                            Ipv4Addr::LOCALHOST
                        };
                        dtls.rebind(SocketAddr::from((ip, 0))).expect("rebind");
                        rebinds += 1;
                    }
                    let msg = format!("session {k} round {round}");
                    dtls.echo(msg.as_bytes(), ECHO_TIMEOUT).unwrap_or_else(|e| {
                        panic!("session {k} lost its echo in round {round}: {e}")
                    });
                    echoed += 1;
                    thread::sleep(Duration::from_millis(20));
                }
                (echoed, rebinds)
            })
        })
        .collect();
    drop(cid_tx);
    let mut cids = Vec::new();
    let mut genuine = None;
    for _ in 0..SESSIONS {
        let (cid, g) = cid_rx.recv_timeout(Duration::from_secs(30)).unwrap();
        cids.push(cid);
        genuine = genuine.or(g);
    }
    let genuine = genuine.unwrap();
    ready.wait();
    let handshakes_before: u64 = servers.iter().map(|s| s.stats().handshakes).sum();
    assert_eq!(handshakes_before, SESSIONS as u64);
    let flood_start = Instant::now();

    let sent = Arc::new(Sent::default());
    // (a) Random CIDs from 5000 addresses, 4 records each: 5000 new flows (2.5× the
    // flow bound), then up to 4 seeded bindings per flow (far past the binding bound).
    let a = {
        let sent = sent.clone();
        thread::spawn(move || {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
            let mut at = Attackers::new();
            let mut i = 0;
            for n in 0..5000u32 {
                let ip = Ipv4Addr::new(127, 0, 100 + (n / 250) as u8, 1 + (n % 250) as u8);
                let s = at.bind(ip);
                for seq in 0..4 {
                    let mut cid = rng.next().to_be_bytes()[..CID_LEN].to_vec();
                    // Never one of the servers' prefixes (0xa0..=0xa2): never a real CID.
                    cid[0] &= 0x7f;
                    send(s, &cid_record(&cid, seq, &[0x5a; 40]), to);
                    sent.random_cid.fetch_add(1, Ordering::Relaxed);
                    pace(i);
                    i += 1;
                }
            }
            at.finish()
        })
    };
    // (b) Malformed datagrams from 64 addresses, 20000 in all.
    let b = {
        let sent = sent.clone();
        thread::spawn(move || {
            let mut rng = Rng(0x1234_5678_9abc_def1);
            let mut at = Attackers::new();
            let socks: Vec<UdpSocket> = (0..64u8)
                .map(|n| {
                    let s = UdpSocket::bind((Ipv4Addr::new(127, 0, 200, 1 + n), 0)).unwrap();
                    s.set_nonblocking(true).unwrap();
                    s
                })
                .collect();
            let good = cid_record(&[1, 2, 3, 4], 7, &[0u8; 32]);
            for i in 0..20_000usize {
                let s = &socks[i % socks.len()];
                let r = rng.next();
                let (d, counter): (Vec<u8>, &AtomicU64) = match i % 20 {
                    // The datagram ends inside a record header.
                    0..=4 => (
                        good[..1 + (r as usize % 14)].to_vec(),
                        &sent.truncated_header,
                    ),
                    // A record's length runs past the datagram's end.
                    5..=8 => (
                        good[..17 + (r as usize % 30)].to_vec(),
                        &sent.length_overrun,
                    ),
                    // A plaintext-format record with a TLS version.
                    9..=10 => {
                        let d = vec![23, 3, 3, 0, 1, 0, 0, 0, 0, 0, 9, 0, 2, 0xab, 0xcd];
                        (d, &sent.bad_version)
                    }
                    11 => (Vec::new(), &sent.empty),
                    12 => (vec![0xee; 20_000], &sent.oversized),
                    // Not DTLS: a first byte outside 20..=27 and 32..=63.
                    _ => {
                        let mut d: Vec<u8> =
                            (0..1 + r % 200).map(|j| (r >> (j % 56)) as u8).collect();
                        d[0] = [0u8, 1, 0x13, 0x1c, 0x40, 0x7f, 0x80, 0xff][(r % 8) as usize];
                        (d, &sent.not_dtls)
                    }
                };
                send(s, &d, to);
                counter.fetch_add(1, Ordering::Relaxed);
                pace(i);
            }
            at.sockets = socks.len() as u64;
            at.open.extend(socks);
            at.finish()
        })
    };
    // (c) Replays of client 0's last CID record from 2000 addresses, 5 each.
    let c = {
        let sent = sent.clone();
        thread::spawn(move || {
            let mut at = Attackers::new();
            let mut i = 0;
            for n in 0..2000u32 {
                let ip = Ipv4Addr::new(127, 0, 150 + (n / 250) as u8, 1 + (n % 250) as u8);
                let s = at.bind(ip);
                for _ in 0..5 {
                    send(s, &genuine, to);
                    sent.replays.fetch_add(1, Ordering::Relaxed);
                    pace(i);
                    i += 1;
                }
            }
            at.finish()
        })
    };

    // Meanwhile, the tables never pass their bounds.
    let (mut max_flows, mut max_bindings, mut polls) = (0u64, 0u64, 0);
    while !(a.is_finished() && b.is_finished() && c.is_finished()) {
        let (code, body) = http(admin, "GET", "/tables");
        assert_eq!(code, 200, "{body}");
        let t: serde_json::Value = serde_json::from_str(&body).unwrap();
        let l = &t["listeners"][0];
        let (f, bi) = (
            l["flows"]["entries"].as_u64().unwrap(),
            l["bindings"]["entries"].as_u64().unwrap(),
        );
        assert!(f <= MAX_FLOWS as u64, "flows {f} over the bound: {body}");
        assert!(
            bi <= MAX_BINDINGS as u64,
            "bindings {bi} over the bound: {body}"
        );
        (max_flows, max_bindings, polls) = (max_flows.max(f), max_bindings.max(bi), polls + 1);
        thread::sleep(Duration::from_millis(100));
    }
    let received = [a.join().unwrap(), b.join().unwrap(), c.join().unwrap()];
    let flood_time = flood_start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let results: Vec<(u64, u64)> = sessions.into_iter().map(|h| h.join().unwrap()).collect();
    let echoes: u64 = results.iter().map(|r| r.0).sum();
    let rebinds: u64 = results.iter().map(|r| r.1).sum();

    // No amplification, and nothing for the attackers at all.
    for (what, (bytes, sockets)) in ["random CIDs", "malformed", "replays"].iter().zip(received) {
        eprintln!("{what}: {sockets} attacker sockets received {bytes} bytes");
        assert_eq!(bytes, 0, "an attacker socket ({what}) received something");
    }
    // The sessions: every echo arrived (a lost one panics its thread), no handshake.
    let stats: Vec<_> = servers.iter().map(|s| s.stats()).collect();
    let handshakes: u64 = stats.iter().map(|s| s.handshakes).sum();
    assert_eq!(
        handshakes, SESSIONS as u64,
        "a session needed a new handshake"
    );
    assert!(
        rebinds >= SESSIONS as u64,
        "the sessions rebound: {results:?}"
    );
    // The replays reached a backend and were rejected there; random CIDs were unknown.
    let rejected: u64 = stats
        .iter()
        .map(|s| s.replays + s.migrations_rejected)
        .sum();
    let unknown: u64 = stats.iter().map(|s| s.unknown_cid).sum();
    assert!(rejected >= 1, "replays reached the backend: {stats:?}");
    assert!(unknown >= 1, "random CIDs reached the backends: {stats:?}");

    // The learned bindings survived the seeded flood.
    for cid in &cids {
        let hex: String = cid.iter().map(|b| format!("{b:02x}")).collect();
        let (code, body) = http(admin, "GET", &format!("/lookup/cid/{hex}"));
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["route"], "learned", "{body}");
    }

    let (code, m) = http(admin, "GET", "/metrics");
    assert_eq!(code, 200);
    let l = |name: &str, label: &str| metric(&m, &format!("{name}{{listener=\"dtls\",{label}}}"));
    let drop = |r: &str| l("cidlb_dropped_total", &format!("reason=\"{r}\""));
    let routed = |o: &str| l("cidlb_routed_total", &format!("outcome=\"{o}\""));
    let ev = |e: &str| l("cidlb_events_total", &format!("event=\"{e}\""));
    let plain = |name: &str| metric(&m, &format!("{name}{{listener=\"dtls\"}}"));
    let s = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
    eprintln!(
        "sent: {sent:?}\ndrops: not_dtls {} bad_version {} truncated_header {} \
         length_overrun {} empty {} oversized {}\nrouted: unknown_cid {} cid_by_flow {} \
         learned {} flow {} hashed {}\nevents: cid_new_address {} flow_created {} \
         flow_evicted {} binding_seeded {} binding_evicted {} binding_seed_refused {}\n\
         tables: max flows {max_flows}, max bindings {max_bindings} ({polls} polls), now \
         {} / {}; upstream sockets opened {}, open errors {}\nsessions: {SESSIONS}, \
         {echoes} echoes, {rebinds} rebinds, {handshakes} handshakes; servers {stats:?}\n\
         flood {flood_time:?}, test {:?}",
        drop("not_dtls"),
        drop("bad_version"),
        drop("truncated_header"),
        drop("length_overrun"),
        drop("empty"),
        plain("cidlb_listener_oversized_datagrams_total"),
        routed("unknown_cid"),
        routed("cid_by_flow"),
        routed("learned"),
        routed("flow"),
        routed("hashed"),
        ev("cid_new_address"),
        ev("flow_created"),
        ev("flow_evicted"),
        ev("binding_seeded"),
        ev("binding_evicted"),
        ev("binding_seed_refused"),
        plain("cidlb_flows"),
        plain("cidlb_bindings"),
        plain("cidlb_listener_upstreams_opened_total"),
        plain("cidlb_listener_upstream_open_errors_total"),
        t0.elapsed(),
    );
    // The tables stayed within bounds, and were full: the flood did evict.
    assert!(plain("cidlb_flows") <= MAX_FLOWS as f64);
    assert!(plain("cidlb_bindings") <= MAX_BINDINGS as f64);
    assert_eq!(plain("cidlb_flows_max"), MAX_FLOWS as f64);
    assert!(ev("flow_evicted") > 0.0, "5000+ new flows into 2000 slots");
    assert!(
        ev("binding_evicted") > 0.0,
        "seeded bindings evicted each other"
    );
    // Each malformed kind is dropped under its own name, never more than were sent
    // (the kernel may drop some of the flood before cidlb sees it).
    for (reason, n) in [
        ("not_dtls", s(&sent.not_dtls)),
        ("bad_version", s(&sent.bad_version)),
        ("truncated_header", s(&sent.truncated_header)),
        ("length_overrun", s(&sent.length_overrun)),
        ("empty", s(&sent.empty)),
    ] {
        let d = drop(reason);
        assert!(d > 0.0 && d <= n, "{reason}: {d} dropped, {n} sent");
    }
    let over = plain("cidlb_listener_oversized_datagrams_total");
    assert!(
        over > 0.0 && over <= s(&sent.oversized),
        "oversized: {over}"
    );
    // Random CIDs were routed as unknown (or by their address's flow), never learned.
    let attack_routed = routed("unknown_cid") + routed("cid_by_flow");
    assert!(attack_routed > 0.0 && attack_routed <= s(&sent.random_cid));
    assert_eq!(drop("no_backend"), 0.0);
    assert!(
        ev("cid_new_address") >= 1.0,
        "replays from new addresses were seen"
    );
}
