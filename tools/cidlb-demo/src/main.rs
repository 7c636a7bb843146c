//! `cidlb-demo`: watch cidlb keep DTLS sessions alive while a NAT moves the clients.
//!
//! It starts three real Mbed TLS DTLS 1.2 servers that issue Connection IDs, runs the
//! real `cidlb` binary in front of them, and sends clients through it that change port
//! and address mid-session (the shared scenario of `cidlb_test_mbedtls::scenario`).
//! Then it does the same with `cidlb run --routing address` (what an address-hashing
//! balancer does) and prints both side by side.
//!
//! Exit status: 0 when every session survived with CID routing, 1 when not, 2 when the
//! demo could not run (e.g. no `cidlb` binary).

mod balancer;
mod report;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cidlb_test_mbedtls::scenario::{self, Event, Move, ScenarioConfig};
use cidlb_test_mbedtls::{DtlsServer, ServerConfig};
use clap::Parser;

use balancer::{Balancer, Stopped};
use report::{RunReport, ServerTotals};

/// Length of the CIDs the servers issue (and that cidlb is told about).
const CID_LEN: usize = 4;
/// First CID byte of each server: server `i` (from 1) issues CIDs starting with
/// `CID_PREFIXES[i - 1]`.
const CID_PREFIXES: [u8; 3] = [0xa1, 0xb2, 0xc3];
/// Client threads running the scenario.
const CLIENT_THREADS: usize = 6;
/// The client whose every step is narrated.
const NARRATED: usize = 0;

/// Watch cidlb keep DTLS sessions alive while a NAT moves the clients, compared with
/// routing by address.
///
/// Starts 3 real DTLS 1.2 servers (Mbed TLS) on 127.0.0.1, the real cidlb in front of
/// them, and clients that change port and IP address mid-session. Runs twice: with
/// cidlb's CID routing, then with `--routing address`. Everything stays on this
/// machine (127.0.0.0/8) and takes a few seconds.
#[derive(Parser, Debug)]
#[command(name = "cidlb-demo", version, about, long_about)]
struct Args {
    /// The cidlb binary [default: `cidlb` in the same directory as this program].
    #[arg(long, value_name = "PATH")]
    cidlb: Option<PathBuf>,
    /// How many DTLS clients (sessions) each run has.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u16).range(1..=2000))]
    clients: u16,
    /// cidlb's log filter (its `--log-level`; RUST_LOG overrides it).
    #[arg(long, value_name = "FILTER", default_value = "info")]
    cidlb_log_level: String,
}

/// The two ways cidlb is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// `--routing cid`: by Connection ID.
    Cid,
    /// `--routing address`: by client address only.
    Address,
}

impl Routing {
    fn flag(self) -> &'static str {
        match self {
            Routing::Cid => "cid",
            Routing::Address => "address",
        }
    }

    /// Column title in the table.
    pub fn title(self) -> &'static str {
        match self {
            Routing::Cid => "CID routing",
            Routing::Address => "address-only",
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let started = Instant::now();
    let cidlb = match find_cidlb(args.cidlb.as_deref()) {
        Ok(path) => path,
        Err(e) => {
            eprintln!("cidlb-demo: {e}");
            return ExitCode::from(2);
        }
    };
    let clients = usize::from(args.clients);
    intro(&cidlb, clients);

    let mut reports = Vec::new();
    for (i, routing) in [Routing::Cid, Routing::Address].into_iter().enumerate() {
        match demo_run(i + 1, routing, &cidlb, clients, &args.cidlb_log_level) {
            Ok(report) => reports.push(report),
            Err(e) => {
                eprintln!("cidlb-demo: {e}");
                return ExitCode::from(2);
            }
        }
    }

    println!();
    println!("Results ({clients} clients per run, each moved 3 times):");
    println!();
    print!("{}", report::table(&reports));
    println!();
    println!("{}", report::conclusion(&reports[0], &reports[1]));
    println!();
    println!(
        "Demo finished in {:.1} s; cidlb and the servers are stopped.",
        started.elapsed().as_secs_f64()
    );
    if reports[0].outcome.all_survived() && reports[0].servers.handshakes == clients as u64 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The cidlb binary: `explicit` if given, else `cidlb` next to this program.
fn find_cidlb(explicit: Option<&Path>) -> Result<PathBuf, String> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this program's own path: {e}"))?
            .with_file_name("cidlb"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no cidlb binary at {}. Build it first (`cargo build --release -p cidlb`, or \
             run ./scripts/demo.sh, which builds both), or pass --cidlb PATH.",
            path.display()
        ))
    }
}

fn intro(cidlb: &Path, clients: usize) {
    println!("cidlb demo: DTLS sessions through a load balancer while a NAT moves the clients");
    println!("================================================================================");
    println!();
    println!("Devices behind a NAT do not keep their address: the NAT may give them a new");
    println!("port, or a new IP address, at any moment. A balancer that picks the server by");
    println!("the client's address then sends a moved device to a server that does not hold");
    println!("its DTLS session; the device's records are dropped and it must do a full");
    println!("handshake again. cidlb instead routes every record by its DTLS Connection ID");
    println!("(RFC 9146): the server chose it, and it does not change when the address does.");
    println!();
    println!("Everything below runs on this machine, on 127.0.0.0/8:");
    println!("  - 3 real DTLS 1.2 servers (Mbed TLS 3.6.5) that echo what they receive; each");
    println!(
        "    issues {CID_LEN}-byte CIDs starting with its own byte, so a CID tells which \
         server"
    );
    println!("    holds the session;");
    println!(
        "  - the real cidlb binary ({}) in front of them;",
        cidlb.display()
    );
    println!(
        "  - {clients} DTLS clients that each do a full handshake through cidlb, echo a \
         message,"
    );
    println!("    then move to a new port, to a new IP address and port, and to a new port");
    println!("    again, echoing after each move (a real device would also do a new handshake");
    println!("    once it notices that its session is gone, and so do these clients).");
    println!("This runs twice: once with CID routing, once with `--routing address`.");
}

/// One run: fresh servers, a fresh cidlb with `routing`, the scenario, then everything
/// stopped.
fn demo_run(
    number: usize,
    routing: Routing,
    cidlb: &Path,
    clients: usize,
    log_level: &str,
) -> Result<RunReport, String> {
    println!();
    let title = match routing {
        Routing::Cid => format!("Run {number} of 2: cidlb routes by Connection ID"),
        Routing::Address => format!(
            "Run {number} of 2: cidlb routes by client address only, like an \
             address-hashing balancer"
        ),
    };
    println!("{title}");
    println!("{}", "-".repeat(title.chars().count()));

    let servers = start_servers()?;
    let backends: Vec<SocketAddr> = servers.iter().map(DtlsServer::local_addr).collect();

    let mut cidlb_args: Vec<String> = vec!["run".into(), "--listen".into(), "127.0.0.1:0".into()];
    for b in &backends {
        cidlb_args.extend(["--backend".into(), b.to_string()]);
    }
    cidlb_args.extend([
        "--cid-len".into(),
        CID_LEN.to_string(),
        "--routing".into(),
        routing.flag().into(),
    ]);
    println!("Starting cidlb; its log (stderr) shows as it comes, its stdout is indented:");
    println!("  $ cidlb {}", cidlb_args.join(" "));
    let balancer = Balancer::start(cidlb, &cidlb_args, log_level)?;
    println!(
        "cidlb (pid {}) is listening on {}. Clients start now; client {NARRATED} is \
         followed step by step,",
        balancer.pid(),
        balancer.addr
    );
    println!("the others do the same at the same time.");

    let mut config = ScenarioConfig::new(balancer.addr, clients);
    config.threads = CLIENT_THREADS;
    config.cid_len = CID_LEN;
    config.moves = Move::STANDARD.to_vec();
    config.echo_timeout = Duration::from_millis(400);
    config.handshake_timeout = Duration::from_secs(5);
    config.reconnect_after_loss = true;

    let finished = AtomicUsize::new(0);
    let progress_step = clients.div_ceil(3).max(1);
    let run_started = Instant::now();
    let outcome = scenario::run_with(&config, |event| {
        narrate(routing, &event);
        if let Event::Finished { .. } | Event::HandshakeFailed { .. } = event {
            let done = finished.fetch_add(1, Ordering::Relaxed) + 1;
            if done.is_multiple_of(progress_step) || done == clients {
                println!("  ... {done} of {clients} clients done");
            }
        }
    });
    let elapsed = run_started.elapsed();
    let totals = ServerTotals::of(&servers);
    println!(
        "All clients done in {}: {} echoes delivered, {} lost; the servers did {} full \
         handshakes and moved {} sessions to a new address.",
        report::duration(elapsed),
        outcome.echoed,
        outcome.lost,
        totals.handshakes,
        totals.migrations
    );

    println!(
        "Stopping cidlb with SIGTERM (kill -TERM {}); it logs its final counters:",
        balancer.pid()
    );
    let stopped = balancer.stop();
    let stopped_cleanly = match stopped {
        Stopped::Exited(status) if status.success() => {
            println!("cidlb exited cleanly.");
            true
        }
        Stopped::Exited(status) => {
            println!("cidlb exited with {status}.");
            false
        }
        Stopped::Killed => {
            println!("cidlb did not exit after SIGTERM and was killed.");
            false
        }
    };
    drop(servers); // Each server's thread stops and is joined.
    Ok(RunReport {
        routing,
        outcome,
        servers: totals,
        elapsed,
        stopped_cleanly,
    })
}

fn start_servers() -> Result<Vec<DtlsServer>, String> {
    println!("Starting 3 DTLS servers:");
    CID_PREFIXES
        .iter()
        .enumerate()
        .map(|(i, &prefix)| {
            let bind = SocketAddr::from(([127, 0, 0, 1], 0));
            let server = DtlsServer::spawn(ServerConfig::new(bind, [prefix], CID_LEN))
                .map_err(|e| format!("cannot start a DTLS server: {e}"))?;
            println!(
                "  server {} on {}, its CIDs start with {prefix:02x}",
                i + 1,
                server.local_addr()
            );
            Ok(server)
        })
        .collect()
}

/// Prints what happens to the narrated client, and every failed handshake.
fn narrate(routing: Routing, event: &Event) {
    match event {
        Event::Connected { client, local, cid } if *client == NARRATED => println!(
            "  client {client} at {local}: full handshake done; its CID {} says server {} \
             holds its session",
            hex(cid),
            server_of(cid)
        ),
        Event::Echo {
            client,
            round,
            local,
            delivered,
        } if *client == NARRATED => {
            let what = match (round, delivered, routing) {
                (0, true, _) => "echo came back".to_string(),
                (_, true, Routing::Cid) => "echo came back: cidlb sent the record by its CID to \
                     the server holding the session, which checked it and moved the session \
                     here; no new handshake"
                    .to_string(),
                (_, true, Routing::Address) => "echo came back: by luck the new address hashed \
                     to the server holding the session"
                    .to_string(),
                (_, false, Routing::Cid) => {
                    "NO echo (unexpected with CID routing: see cidlb's log)".to_string()
                }
                (_, false, Routing::Address) => "NO echo: the new address hashed to a server \
                     that does not know this CID, which drops the record; the session is lost"
                    .to_string(),
            };
            println!("  client {client} at {local}: {what}");
        }
        Event::Rebound {
            client,
            kind,
            from,
            to,
        } if *client == NARRATED => {
            let what = match kind {
                Move::Port => "a new port",
                Move::Address => "a new IP address and port",
            };
            println!("  client {client}: the NAT gives it {what}: {from} -> {to}");
        }
        Event::Reconnected { client, local, cid } if *client == NARRATED => println!(
            "  client {client} at {local}: gives up on its session and does a new full \
             handshake; new CID {} (server {})",
            hex(cid),
            server_of(cid)
        ),
        Event::HandshakeFailed { client, error } => {
            println!("  client {client}: handshake FAILED: {error}")
        }
        _ => {}
    }
}

/// The number (from 1) of the server that issued `cid`, or `?`.
fn server_of(cid: &[u8]) -> String {
    cid.first()
        .and_then(|b| CID_PREFIXES.iter().position(|p| p == b))
        .map_or("?".into(), |i| (i + 1).to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
