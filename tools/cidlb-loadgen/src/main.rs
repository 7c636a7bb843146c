//! `cidlb-loadgen`: DTLS-shaped load for cidlb (or any UDP proxy), with backends that
//! check routing.
//!
//! - `sink`: backend sinks. Each answers a ClientHello with a ServerHello whose
//!   `connection_id` extension issues a CID starting with the sink's index, so a
//!   balancer learns it; then counts the CID records it receives and whether their CID
//!   was issued by this sink (correct routing), and echoes them if asked.
//! - `blast`: N clients handshake (one ClientHello / ServerHello), then send CID records
//!   of a given size, open loop (one-way) or closed loop (request/response), optionally
//!   rebinding (new source port) at a rate.
//! - `run`: sinks + blast in one process against a proxy address, printing figures.
//!
//! Records are DTLS-shaped (valid headers, CIDs, hellos), not encrypted: this measures
//! the balancer, not a DTLS stack.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cidlb_wire::{build, handshake, inspect};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(about = "DTLS-shaped load for cidlb, with sinks that check routing")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Sinks and clients in one process: start sinks, point clients at `--target`.
    Run {
        /// The proxy under test; it must forward to the sinks (`--sink-base`...).
        #[arg(long)]
        target: SocketAddr,
        #[command(flatten)]
        sinks: SinkArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Only the sinks (until killed or `--duration`).
    Sink {
        #[command(flatten)]
        sinks: SinkArgs,
        /// Stop after this long.
        #[arg(long, default_value = "60s", value_parser = humantime_duration)]
        duration: Duration,
    },
}

#[derive(clap::Args, Debug, Clone)]
struct SinkArgs {
    /// First sink address; sink i listens on port + i.
    #[arg(long, default_value = "127.0.0.1:7001")]
    sink_base: SocketAddr,
    /// Number of sinks (backends).
    #[arg(long, default_value_t = 3)]
    sinks: u8,
    /// Echo every CID record back (request/response mode needs it).
    #[arg(long)]
    echo: bool,
}

#[derive(clap::Args, Debug, Clone)]
struct LoadArgs {
    /// Concurrent clients (each its own socket and session).
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// CID length the sinks issue.
    #[arg(long, default_value_t = 4)]
    cid_len: usize,
    /// Datagram size in bytes (one tls12_cid record).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// How long to send.
    #[arg(long, default_value = "5s", value_parser = humantime_duration)]
    duration: Duration,
    /// Closed loop: each client keeps one datagram in flight and waits for its echo.
    #[arg(long)]
    request_response: bool,
    /// Rebind one client to a new source port every N datagrams (0 = never).
    #[arg(long, default_value_t = 0)]
    rebind_every: u64,
    /// Total send rate in datagrams per second (0 = as fast as possible). Pace below
    /// saturation to measure CPU per datagram and latency; one-way sinks share the
    /// generator's CPU, so an unpaced sender starves them.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Process id of the proxy, to report its CPU time per datagram.
    #[arg(long)]
    proxy_pid: Option<u32>,
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("bad duration unit in {s:?} (ms, s, m)")),
    }
}

/// Counters of all sinks.
#[derive(Default)]
struct SinkStats {
    received: AtomicU64,
    correct: AtomicU64,
    hellos: AtomicU64,
}

fn spawn_sinks(a: &SinkArgs, stop: Arc<AtomicBool>, cid_len: usize) -> Arc<SinkStats> {
    let stats = Arc::new(SinkStats::default());
    for i in 0..a.sinks {
        let addr = SocketAddr::new(a.sink_base.ip(), a.sink_base.port() + u16::from(i));
        let sock = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("sink {addr}: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(50))).ok();
        let (stats, stop, echo) = (stats.clone(), stop.clone(), a.echo);
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

/// CPU seconds (user + system) of a process, from /proc.
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
}

fn handshake_client(target: SocketAddr, cid_len: usize) -> std::io::Result<Client> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    let hello = build::client_hello_datagram([1; 32], &[], Some(&[]));
    let mut buf = [0u8; 2048];
    for _ in 0..5 {
        sock.send_to(&hello, target)?;
        if let Ok(n) = sock.recv(&mut buf) {
            let f = handshake::scan_server_flight(&buf[..n]);
            if let Some(c) = f.server_hello.and_then(|h| h.connection_id) {
                if c.cid.len() == cid_len {
                    return Ok(Client {
                        sock,
                        cid: c.cid.to_vec(),
                        seq: 1,
                    });
                }
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no ServerHello",
    ))
}

fn run(target: SocketAddr, sinks: &SinkArgs, load: &LoadArgs) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut sinks = sinks.clone();
    sinks.echo |= load.request_response;
    let stats = spawn_sinks(&sinks, stop.clone(), load.cid_len);
    let mut clients: Vec<Client> = (0..load.clients)
        .map(|_| {
            handshake_client(target, load.cid_len).expect("client handshake through the proxy")
        })
        .collect();
    let payload_len = load.size.saturating_sub(11 + load.cid_len + 2).max(1);
    let payload = vec![0x5au8; payload_len];
    let mut dgram = Vec::with_capacity(load.size);
    let cpu0 = load.proxy_pid.and_then(cpu_seconds);
    let base = stats.received.load(Relaxed);
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut rebinds = 0u64;
    let mut rtts: Vec<u32> = Vec::new();
    let mut buf = [0u8; 2048];
    if load.request_response {
        for c in &clients {
            c.sock.set_nonblocking(true).ok();
        }
    }
    let mut in_flight: Vec<Option<Instant>> = vec![None; clients.len()];
    while t0.elapsed() < load.duration {
        if load.rate > 0 {
            // Pace: never ahead of rate × elapsed.
            let allowed = (t0.elapsed().as_secs_f64() * load.rate as f64) as u64;
            if sent >= allowed {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
        }
        for (k, c) in clients.iter_mut().enumerate() {
            if load.request_response {
                if let Some(t) = in_flight[k] {
                    match c.sock.recv(&mut buf) {
                        Ok(_) => {
                            rtts.push(t.elapsed().as_micros() as u32);
                            in_flight[k] = None;
                        }
                        Err(_) if t.elapsed() > Duration::from_millis(200) => in_flight[k] = None,
                        Err(_) => continue,
                    }
                }
            }
            dgram.clear();
            build::cid12(1, c.seq, &c.cid, &payload, &mut dgram);
            c.seq += 1;
            if c.sock.send_to(&dgram, target).is_ok() {
                sent += 1;
                if load.request_response {
                    in_flight[k] = Some(Instant::now());
                }
            }
            if load.rebind_every > 0 && sent.is_multiple_of(load.rebind_every) {
                if let Ok(s) = UdpSocket::bind("127.0.0.1:0") {
                    s.set_nonblocking(load.request_response).ok();
                    c.sock = s;
                    in_flight[k] = None;
                    rebinds += 1;
                }
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Relaxed);
    let received = stats.received.load(Relaxed) - base;
    let correct = stats.correct.load(Relaxed);
    let cpu = match (cpu0, load.proxy_pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    println!(
        "mode               {}",
        if load.request_response {
            "request/response"
        } else {
            "one-way"
        }
    );
    println!("clients            {}", load.clients);
    println!("datagram size      {} bytes", load.size);
    println!("sent               {sent} ({:.0}/s)", sent as f64 / elapsed);
    println!(
        "delivered          {received} ({:.0}/s, {:.1}% of sent)",
        received as f64 / elapsed,
        100.0 * received as f64 / sent.max(1) as f64
    );
    println!(
        "correct backend    {correct} ({:.3}% of delivered)",
        100.0 * correct as f64 / received.max(1) as f64
    );
    println!("rebinds            {rebinds}");
    if let Some(cpu) = cpu {
        let forwarded = if load.request_response {
            2 * received
        } else {
            received
        };
        println!(
            "proxy CPU          {cpu:.2} s, {:.2} µs per forwarded datagram",
            cpu * 1e6 / forwarded.max(1) as f64
        );
    }
    if !rtts.is_empty() {
        rtts.sort_unstable();
        let p = |q: f64| rtts[((rtts.len() - 1) as f64 * q) as usize];
        println!(
            "round trips        {} ({:.0}/s)",
            rtts.len(),
            rtts.len() as f64 / elapsed
        );
        println!(
            "latency µs         p50 {} p99 {} max {}",
            p(0.5),
            p(0.99),
            p(1.0)
        );
    }
}

fn main() {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run {
            target,
            sinks,
            load,
        } => run(target, &sinks, &load),
        Cmd::Sink { sinks, duration } => {
            let stop = Arc::new(AtomicBool::new(false));
            let stats = spawn_sinks(&sinks, stop.clone(), 4);
            std::thread::sleep(duration);
            stop.store(true, Relaxed);
            println!(
                "received {} correct {}",
                stats.received.load(Relaxed),
                stats.correct.load(Relaxed)
            );
        }
    }
}
