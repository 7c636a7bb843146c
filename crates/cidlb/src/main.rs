//! `cidlb`: a UDP load balancer that routes DTLS records by Connection ID.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use cidlb::config::{Config, RoutingMode};
use cidlb_core::MultiCidPolicy;
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// A UDP load balancer that routes DTLS by Connection ID (RFC 9146, RFC 9147), so that
/// sessions survive NAT rebinding: every record reaches the server that issued its CID.
#[derive(Parser, Debug)]
#[command(name = "cidlb", version, about, long_about = None)]
#[command(after_help = "Quick start, no config file:\n  \
    cidlb run --listen 0.0.0.0:5684 --backend 10.0.0.1:5684 --backend 10.0.0.2:5684 --cid-len 6\n\n\
    With a config file (see docs/configuration.md):\n  \
    cidlb check-config /etc/cidlb/cidlb.toml\n  \
    cidlb run --config /etc/cidlb/cidlb.toml")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (tracing EnvFilter syntax, e.g. `info`, `cidlb_net=debug`);
    /// RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the balancer (until SIGINT or SIGTERM).
    Run(RunArgs),
    /// Validate a configuration file and explain what it sets up.
    CheckConfig {
        /// The TOML configuration file.
        file: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// TOML configuration file (the other flags then must not be given).
    #[arg(long, short, conflicts_with_all = ["listen", "backends", "cid_len"])]
    config: Option<PathBuf>,
    /// Quick start: the address clients send to, e.g. 0.0.0.0:5684.
    #[arg(long, requires = "backends")]
    listen: Option<SocketAddr>,
    /// Quick start: a backend DTLS server (repeat for each).
    #[arg(long = "backend", value_name = "ADDR")]
    backends: Vec<SocketAddr>,
    /// Quick start: the length of the CIDs the backends issue (bytes, 1–32).
    #[arg(long)]
    cid_len: Option<usize>,
    /// Quick start: what to do with datagrams whose records carry different CIDs.
    #[arg(long, value_enum, default_value_t = MultiCid::First)]
    multi_cid: MultiCid,
    /// Quick start: `cid` routes by Connection ID; `address` routes by client address
    /// only (what an address-hashing balancer does), for comparisons.
    #[arg(long, value_enum, default_value_t = Routing::Cid)]
    routing: Routing,
    /// Worker threads, 1–256 (default: one per CPU; overrides the config's `workers`).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: Option<u16>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum MultiCid {
    First,
    Split,
    Drop,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Routing {
    Cid,
    Address,
}

fn quick_config(a: &RunArgs) -> Result<Config, String> {
    let listen = a
        .listen
        .ok_or("give --config FILE, or --listen ADDR with --backend ADDR and --cid-len N")?;
    let cid_len = match (a.cid_len, a.routing) {
        (Some(n), _) => n,
        (None, Routing::Address) => 0,
        (None, Routing::Cid) => {
            return Err(
                "--cid-len N is required: the length of the CIDs your backends issue \
                        (it is not on the wire)"
                    .into(),
            )
        }
    };
    let mut cfg = Config::quick(listen, &a.backends, cid_len.max(1)).map_err(|e| e.to_string())?;
    for l in &mut cfg.listeners {
        l.multi_cid = match a.multi_cid {
            MultiCid::First => MultiCidPolicy::First,
            MultiCid::Split => MultiCidPolicy::Split,
            MultiCid::Drop => MultiCidPolicy::Drop,
        };
        if let Routing::Address = a.routing {
            l.routing = RoutingMode::Address;
            if a.cid_len.is_none() {
                l.cid_length = None;
            }
        }
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cli.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::CheckConfig { file } => Config::load(&file)
            .map(|c| print!("{}", c.explain()))
            .map_err(|e| e.to_string()),
        Command::Run(args) => {
            let cfg = match &args.config {
                Some(path) => Config::load(path).map_err(|e| e.to_string()),
                None => quick_config(&args),
            };
            cfg.and_then(|mut c| {
                if let Some(w) = args.workers {
                    c.workers = Some(usize::from(w));
                }
                cidlb::run::run(c)
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cidlb: {e}");
            ExitCode::FAILURE
        }
    }
}
