//! `cidlb-loadgen`: DTLS-shaped load for cidlb (or any UDP proxy), with backend sinks
//! that check routing.
//!
//! - Sinks (backends): each answers a ClientHello with a ServerHello whose
//!   `connection_id` extension issues a CID starting with the sink's index (so a
//!   balancer can learn it), then counts CID records and whether their CID was issued by
//!   this sink — i.e. whether the balancer routed them correctly — and echoes them in
//!   request/response mode.
//! - Clients: N sockets; each does the hello exchange through the proxy, then sends
//!   datagrams of the given size and shape (`--shape`: one `tls12_cid` record, three
//!   of them, or a plaintext handshake + ChangeCipherSpec + CID record flight), open
//!   loop (one-way, paced at `--rate`) or closed loop (request/response, one in flight
//!   per client), optionally rebinding (new source port, or new 127.x address) every K
//!   datagrams, as a NAT would.
//!
//! - `--role clients|sinks` runs one half, e.g. each in its own network namespace
//!   (`bench/transparent`), with `--client-ip` for the clients' source address.
//!
//! Records are DTLS-shaped (valid headers, CIDs, hellos), not encrypted: this measures
//! the balancer, not a DTLS stack. Prints a summary; `--json FILE` writes it for
//! machines. Every loop is bounded by `--duration`.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cidlb_wire::{build, handshake, inspect, ContentType};
use clap::Parser;
use mio::{Events, Interest, Poll, Token};

/// DTLS-shaped load through a UDP proxy, with sinks that check routing.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// The proxy under test; it must forward to the sinks.
    #[arg(long)]
    target: SocketAddr,
    /// First sink address; sink i listens on port + i.
    #[arg(long, default_value = "127.0.0.1:7001")]
    sink_base: SocketAddr,
    /// Number of sinks (backends).
    #[arg(long, default_value_t = 3)]
    sinks: u8,
    /// Concurrent clients (each its own socket and session).
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// CID length the sinks issue.
    #[arg(long, default_value_t = 4)]
    cid_len: usize,
    /// Datagram size in bytes (approximate for shapes of several records).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// What each datagram holds.
    #[arg(long, value_enum, default_value_t = Shape::Cid)]
    shape: Shape,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Closed loop: each client keeps one datagram in flight and waits for its echo.
    #[arg(long)]
    request_response: bool,
    /// One-way: total send rate in datagrams/s (0 = as fast as possible; sinks share
    /// the generator's CPU, so an unpaced sender starves them).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Each client moves to a new source port every K of its datagrams (0 = never).
    #[arg(long, default_value_t = 0)]
    rebind_every: u64,
    /// When rebinding, also move to a new 127.x.y.z address (not only a new port).
    #[arg(long)]
    rebind_ip: bool,
    /// Process id of the proxy, to report its CPU time per datagram (repeat for a
    /// proxy with several processes: their CPU times are added).
    #[arg(long)]
    proxy_pid: Vec<u32>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// The clients' source IP (without --rebind-ip).
    #[arg(long, default_value = "127.0.0.1")]
    client_ip: IpAddr,
    /// Which half to run: both (default), only the clients (the sinks run in another
    /// process, e.g. in another network namespace: deliveries are then counted from
    /// the clients' side, which only request/response can do), or only the sinks (for
    /// --duration seconds plus 2, printing what they received).
    #[arg(long, value_enum, default_value_t = Role::Both)]
    role: Role,
}

/// Which half of the load generator runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Clients and sinks.
    Both,
    /// Clients only.
    Clients,
    /// Sinks only.
    Sinks,
}

/// What a client datagram holds.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// One `tls12_cid` record.
    Cid,
    /// Three `tls12_cid` records with the client's CID (stacks pack records).
    Multi,
    /// A plaintext handshake record (epoch 0, a ClientKeyExchange-like header), a
    /// ChangeCipherSpec record and a `tls12_cid` record: the shape of a DTLS 1.2
    /// client's CKE + CCS + Finished flight, routed by the CID of its last record.
    Flight,
}

impl Shape {
    /// Bytes of one CID record's payload for a datagram of about `size` bytes.
    fn payload_len(self, size: usize, cid_len: usize) -> usize {
        let cid_record = 13 + cid_len;
        match self {
            Shape::Cid => size.saturating_sub(cid_record),
            Shape::Multi => size.saturating_sub(3 * cid_record) / 3,
            Shape::Flight => size.saturating_sub((13 + 12) + (13 + 1) + cid_record),
        }
        .max(1)
    }
}

/// Counters of all sinks.
#[derive(Default)]
struct SinkStats {
    received: AtomicU64,
    correct: AtomicU64,
    hellos: AtomicU64,
}

fn spawn_sinks(a: &Args, stop: Arc<AtomicBool>, echo: bool) -> Arc<SinkStats> {
    let stats = Arc::new(SinkStats::default());
    for i in 0..a.sinks {
        let addr = SocketAddr::new(a.sink_base.ip(), a.sink_base.port() + u16::from(i));
        let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("sink {addr}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(50))).ok();
        let (stats, stop, cid_len) = (stats.clone(), stop.clone(), a.cid_len);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            let mut issued = 0u32;
            while !stop.load(Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let d = &buf[..n];
                match inspect(d, cid_len) {
                    Ok(info) if info.client_hello => {
                        issued += 1;
                        // Byte 0 names the sink; the rest numbers the session.
                        let mut cid = vec![i; cid_len.max(1)];
                        let k = (cid.len() - 1).min(4);
                        let at = cid.len() - k;
                        cid[at..].copy_from_slice(&issued.to_be_bytes()[4 - k..]);
                        let sh = build::server_hello_datagram([0; 32], Some(&cid));
                        let _ = sock.send_to(&sh, from);
                        stats.hellos.fetch_add(1, Relaxed);
                    }
                    Ok(info) => {
                        stats.received.fetch_add(1, Relaxed);
                        if info.first_cid.and_then(|c| c.first()) == Some(&i) {
                            stats.correct.fetch_add(1, Relaxed);
                        }
                        if echo {
                            let _ = sock.send_to(d, from);
                        }
                    }
                    Err(_) => {
                        stats.received.fetch_add(1, Relaxed);
                    }
                }
            }
        });
    }
    stats
}

/// CPU seconds (user + system) of a process, from /proc (all its threads).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

struct Client {
    sock: UdpSocket,
    cid: Vec<u8>,
    seq: u64,
    sent: u64,
    in_flight: Option<Instant>,
}

fn bind_client(ip: IpAddr) -> std::io::Result<UdpSocket> {
    UdpSocket::bind(SocketAddr::new(ip, 0))
}

fn handshake_client(target: SocketAddr, cid_len: usize, ip: IpAddr) -> std::io::Result<Client> {
    let sock = bind_client(ip)?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    let hello = build::client_hello_datagram([1; 32], &[], Some(&[]));
    let mut buf = [0u8; 2048];
    for _ in 0..5 {
        sock.send_to(&hello, target)?;
        if let Ok(n) = sock.recv(&mut buf) {
            let f = handshake::scan_server_flight(&buf[..n]);
            if let Some(c) = f.server_hello.and_then(|h| h.connection_id) {
                if c.cid.len() == cid_len {
                    sock.set_nonblocking(true)?;
                    return Ok(Client {
                        sock,
                        cid: c.cid.to_vec(),
                        seq: 1,
                        sent: 0,
                        in_flight: None,
                    });
                }
            }
        }
    }
    Err(std::io::Error::new(
        ErrorKind::TimedOut,
        "no ServerHello through the proxy",
    ))
}

/// The next address a rebinding client moves to.
struct Rebinder {
    next_ip: u32,
    with_ip: bool,
    base: IpAddr,
}

impl Rebinder {
    fn ip(&mut self) -> IpAddr {
        if !self.with_ip {
            return self.base;
        }
        self.next_ip = self.next_ip % 60_000 + 1;
        let n = self.next_ip;
        Ipv4Addr::new(127, 1 + (n >> 8) as u8, n as u8, 2).into()
    }
}

#[derive(Default)]
struct Totals {
    sent: u64,
    rebinds: u64,
    lost: u64,
    rtts_us: Vec<u32>,
}

fn datagram(c: &mut Client, shape: Shape, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    match shape {
        Shape::Cid => {}
        Shape::Multi => {
            for _ in 0..2 {
                build::cid12(1, c.seq, &c.cid, payload, out);
                c.seq += 1;
            }
        }
        Shape::Flight => {
            // msg_type 16 (client_key_exchange), length 0, message_seq, fragment 0/0.
            let cke = [16, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0];
            build::plaintext(ContentType::HANDSHAKE, 0, c.seq, &cke, out);
            build::plaintext(ContentType::CHANGE_CIPHER_SPEC, 0, c.seq + 1, &[1], out);
            c.seq += 2;
        }
    }
    build::cid12(1, c.seq, &c.cid, payload, out);
    c.seq += 1;
}

fn one_way(a: &Args, clients: &mut [Client], payload: &[u8], rb: &mut Rebinder) -> Totals {
    let mut t = Totals::default();
    let mut d = Vec::with_capacity(a.size);
    let t0 = Instant::now();
    let dur = Duration::from_secs_f64(a.duration);
    while t0.elapsed() < dur {
        if a.rate > 0 {
            let allowed = (t0.elapsed().as_secs_f64() * a.rate as f64) as u64;
            if t.sent >= allowed {
                std::thread::sleep(Duration::from_micros(100));
                continue;
            }
        }
        for c in clients.iter_mut() {
            datagram(c, a.shape, payload, &mut d);
            match c.sock.send_to(&d, a.target) {
                Ok(_) => {
                    t.sent += 1;
                    c.sent += 1;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => {}
            }
            if a.rebind_every > 0 && c.sent.is_multiple_of(a.rebind_every) {
                if let Ok(s) = bind_client(rb.ip()) {
                    s.set_nonblocking(true).ok();
                    c.sock = s;
                    t.rebinds += 1;
                }
            }
        }
    }
    t
}

fn request_response(a: &Args, clients: &mut [Client], payload: &[u8], rb: &mut Rebinder) -> Totals {
    let mut t = Totals::default();
    let mut poll = Poll::new().expect("epoll");
    let mut socks: Vec<mio::net::UdpSocket> = Vec::with_capacity(clients.len());
    for (k, c) in clients.iter().enumerate() {
        let mut s = mio::net::UdpSocket::from_std(c.sock.try_clone().expect("dup"));
        poll.registry()
            .register(&mut s, Token(k), Interest::READABLE)
            .expect("register");
        socks.push(s);
    }
    let mut d = Vec::with_capacity(a.size);
    let mut buf = [0u8; 4096];
    let t0 = Instant::now();
    let dur = Duration::from_secs_f64(a.duration);
    for (k, c) in clients.iter_mut().enumerate() {
        datagram(c, a.shape, payload, &mut d);
        if socks[k].send_to(&d, a.target).is_ok() {
            c.in_flight = Some(Instant::now());
            t.sent += 1;
        }
    }
    let mut events = Events::with_capacity(1024);
    let mut last_scan = Instant::now();
    while t0.elapsed() < dur {
        let _ = poll.poll(&mut events, Some(Duration::from_millis(10)));
        for ev in events.iter() {
            let k = ev.token().0;
            loop {
                match socks[k].recv(&mut buf) {
                    Ok(_) => {
                        let c = &mut clients[k];
                        let Some(s) = c.in_flight.take() else {
                            continue; // a late echo of a datagram already given up on
                        };
                        t.rtts_us
                            .push(s.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        c.sent += 1;
                        if a.rebind_every > 0 && c.sent.is_multiple_of(a.rebind_every) {
                            if let Ok(s) = bind_client(rb.ip()) {
                                s.set_nonblocking(true).ok();
                                let mut m = mio::net::UdpSocket::from_std(s);
                                let _ = poll.registry().deregister(&mut socks[k]);
                                poll.registry()
                                    .register(&mut m, Token(k), Interest::READABLE)
                                    .expect("register");
                                socks[k] = m;
                                t.rebinds += 1;
                            }
                        }
                        datagram(c, a.shape, payload, &mut d);
                        if socks[k].send_to(&d, a.target).is_ok() {
                            c.in_flight = Some(Instant::now());
                            t.sent += 1;
                        }
                        // Keep draining: edge-triggered readiness, and a late echo of
                        // an earlier datagram may be queued too.
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => break,
                }
            }
        }
        // A datagram lost on the way: count it and send the next one.
        if last_scan.elapsed() > Duration::from_millis(100) {
            last_scan = Instant::now();
            for (k, c) in clients.iter_mut().enumerate() {
                if c.in_flight
                    .is_some_and(|s| s.elapsed() > Duration::from_millis(500))
                {
                    t.lost += 1;
                    datagram(c, a.shape, payload, &mut d);
                    if socks[k].send_to(&d, a.target).is_ok() {
                        c.in_flight = Some(Instant::now());
                        t.sent += 1;
                    }
                }
            }
        }
    }
    t
}

fn main() {
    let a = Args::parse();
    let stop = Arc::new(AtomicBool::new(false));
    if a.role == Role::Sinks {
        let stats = spawn_sinks(&a, stop.clone(), a.request_response);
        std::thread::sleep(Duration::from_secs_f64(a.duration + 2.0));
        stop.store(true, Relaxed);
        println!("sinks received     {}", stats.received.load(Relaxed));
        println!("correct backend    {}", stats.correct.load(Relaxed));
        println!("hellos             {}", stats.hellos.load(Relaxed));
        return;
    }
    let stats = if a.role == Role::Both {
        spawn_sinks(&a, stop.clone(), a.request_response)
    } else {
        Arc::new(SinkStats::default())
    };
    let mut clients: Vec<Client> = (0..a.clients)
        .map(|_| {
            handshake_client(a.target, a.cid_len, a.client_ip)
                .expect("client hello exchange through the proxy")
        })
        .collect();
    let payload = vec![0x5au8; a.shape.payload_len(a.size, a.cid_len)];
    let mut rb = Rebinder {
        next_ip: 0,
        with_ip: a.rebind_ip,
        base: a.client_ip,
    };
    let proxy_cpu = || -> Option<f64> {
        (!a.proxy_pid.is_empty())
            .then(|| {
                a.proxy_pid
                    .iter()
                    .map(|&p| cpu_seconds(p))
                    .sum::<Option<f64>>()
            })
            .flatten()
    };
    let cpu0 = proxy_cpu();
    let base = stats.received.load(Relaxed);
    let base_ok = stats.correct.load(Relaxed);
    let t0 = Instant::now();
    let mut t = if a.request_response {
        request_response(&a, &mut clients, &payload, &mut rb)
    } else {
        one_way(&a, &mut clients, &payload, &mut rb)
    };
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = proxy_cpu();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Relaxed);
    let (received, correct) = if a.role == Role::Clients {
        // The sinks are elsewhere: a round trip is one datagram delivered each way
        // (one-way load is counted as sent, an upper bound).
        let n = if a.request_response {
            t.rtts_us.len() as u64
        } else {
            t.sent
        };
        (n, 0)
    } else {
        (
            stats.received.load(Relaxed) - base,
            stats.correct.load(Relaxed) - base_ok,
        )
    };
    let forwarded = if a.request_response {
        2 * received
    } else {
        received
    };
    let cpu_us = match (cpu0, cpu1) {
        (Some(x), Some(y)) => Some((y - x) * 1e6 / forwarded.max(1) as f64),
        _ => None,
    };
    t.rtts_us.sort_unstable();
    let pct = |q: f64| -> Option<u32> {
        (!t.rtts_us.is_empty()).then(|| t.rtts_us[((t.rtts_us.len() - 1) as f64 * q) as usize])
    };
    let mode = if a.request_response {
        "request_response"
    } else {
        "one_way"
    };
    println!("mode               {mode}");
    println!("clients            {}", a.clients);
    println!("datagram size      {} bytes ({:?})", a.size, a.shape);
    println!(
        "sent               {} ({:.0}/s)",
        t.sent,
        t.sent as f64 / elapsed
    );
    println!(
        "delivered          {received} ({:.0}/s, {:.1}% of sent)",
        received as f64 / elapsed,
        100.0 * received as f64 / t.sent.max(1) as f64
    );
    if a.role == Role::Clients {
        println!("correct backend    (counted by the sinks' process)");
    } else {
        println!(
            "correct backend    {correct} ({:.3}% of delivered)",
            100.0 * correct as f64 / received.max(1) as f64
        );
    }
    println!("rebinds            {}", t.rebinds);
    if let Some(c) = cpu_us {
        println!("proxy CPU          {c:.2} µs per forwarded datagram");
    }
    if a.request_response {
        println!(
            "round trips        {} ({:.0}/s), lost {}",
            t.rtts_us.len(),
            t.rtts_us.len() as f64 / elapsed,
            t.lost
        );
        if let (Some(p50), Some(p99)) = (pct(0.5), pct(0.99)) {
            println!("latency µs         p50 {p50} p99 {p99}");
        }
    }
    if let Some(path) = &a.json {
        let j = serde_json::json!({
            "mode": mode,
            "clients": a.clients,
            "size": a.size,
            "shape": format!("{:?}", a.shape).to_lowercase(),
            "duration_s": elapsed,
            "sent": t.sent,
            "delivered": received,
            "delivered_per_s": received as f64 / elapsed,
            "correct": correct,
            "correct_share": correct as f64 / received.max(1) as f64,
            "rebinds": t.rebinds,
            "proxy_cpu_us_per_datagram": cpu_us,
            "round_trips": t.rtts_us.len(),
            "round_trips_per_s": t.rtts_us.len() as f64 / elapsed,
            "lost": t.lost,
            "latency_p50_us": pct(0.5),
            "latency_p99_us": pct(0.99),
        });
        std::fs::write(path, serde_json::to_string_pretty(&j).expect("json"))
            .expect("write --json file");
    }
}
