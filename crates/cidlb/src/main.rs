//! `cidlb`: a UDP load balancer that routes DTLS records by Connection ID.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use cidlb::config::{Config, Forwarding, RoutingMode, XdpAttachMode, XdpDr};
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
    /// Log lines as plain text or JSON objects (default: the config's `log.format`,
    /// else plain).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormatArg>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormatArg {
    Plain,
    Json,
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
    /// Routable CIDs: make CIDs for a server ID, or tell which server ID and backend a
    /// CID maps to (docs/routable-cids.md).
    #[command(subcommand)]
    Cid(CidCommand),
    /// Show the listeners and backends of a running cidlb (from its admin API); with
    /// --config, values that differ from the file are marked.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the raw JSON of GET /backends instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Drain a backend of a running cidlb: no new flows; its sessions keep working.
    Drain {
        #[command(flatten)]
        admin: AdminArgs,
        /// The backend's name.
        backend: String,
    },
    /// Undrain a backend of a running cidlb: it takes new flows again.
    Undrain {
        #[command(flatten)]
        admin: AdminArgs,
        /// The backend's name.
        backend: String,
    },
    /// Set a backend's weight in a running cidlb (0..=10000).
    Weight {
        #[command(flatten)]
        admin: AdminArgs,
        /// The backend's name.
        backend: String,
        /// The new weight.
        weight: u32,
    },
    /// Where a running cidlb sends a CID or a client address, and why.
    #[command(subcommand)]
    Lookup(LookupCommand),
    /// Reload a running cidlb's configuration file (validated here first when --config
    /// is given); exits non-zero when the file is invalid or the reload is rejected.
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List a running cidlb's flows (client address -> backend).
    Flows {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        page: PageArgs,
        /// Only flows to this backend.
        #[arg(long, value_name = "NAME")]
        backend: Option<String>,
        /// Only flows of this client IP, or IP:PORT.
        #[arg(long, value_name = "IP[:PORT]")]
        client: Option<String>,
    },
    /// List a running cidlb's CID bindings (CID -> backend).
    Bindings {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(flatten)]
        page: PageArgs,
        /// Only bindings to this backend.
        #[arg(long, value_name = "NAME")]
        backend: Option<String>,
        /// Only CIDs that start with these octets (hex).
        #[arg(long, value_name = "HEX")]
        cid: Option<String>,
        /// Only learned or only seeded bindings.
        #[arg(long, value_parser = ["learned", "seeded"])]
        source: Option<String>,
    },
}

/// Where the admin API is.
#[derive(clap::Args, Debug)]
struct AdminArgs {
    /// The admin API's address (default: the one --config sets, else 127.0.0.1:9684).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// The configuration file of the running cidlb: its [admin] address is used.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The listener, when several have a backend of that name.
    #[arg(long, value_name = "NAME")]
    listener: Option<String>,
}

impl AdminArgs {
    fn address(&self) -> Result<SocketAddr, String> {
        cidlb::client::admin_address(self.admin, self.config.as_deref())
    }
}

/// A page of a listing.
#[derive(clap::Args, Debug)]
struct PageArgs {
    /// At most this many (1..=1000; default 100).
    #[arg(long, value_name = "N")]
    limit: Option<String>,
    /// Go on from a previous listing's cursor.
    #[arg(long, value_name = "C")]
    cursor: Option<String>,
}

#[derive(Subcommand, Debug)]
enum LookupCommand {
    /// Which backend a datagram with this CID goes to.
    Cid {
        #[command(flatten)]
        admin: AdminArgs,
        /// The CID in hex.
        cid: String,
        /// For a datagram from this address (its flow counts).
        #[arg(long, value_name = "IP:PORT")]
        client: Option<String>,
    },
    /// Which backend a client address's CID-less datagrams go to (an IP alone: its
    /// flows).
    Client {
        #[command(flatten)]
        admin: AdminArgs,
        /// IP:PORT, or an IP.
        client: String,
    },
}

fn admin_command(c: Command) -> Result<String, String> {
    use cidlb::client;
    match c {
        Command::Status { admin, json } => {
            let addr = admin.address()?;
            if json {
                return cidlb::status::request(addr, "GET", "/backends", None).and_then(
                    |(code, body)| {
                        if code == 200 {
                            Ok(body)
                        } else {
                            Err(format!("HTTP {code}: {}", body.trim()))
                        }
                    },
                );
            }
            let file = match &admin.config {
                Some(p) => Some(Config::load(p).map_err(|e| e.to_string())?),
                None => None,
            };
            cidlb::status::status_against(addr, file.as_ref())
        }
        Command::Drain { admin, backend } => {
            client::drain(admin.address()?, admin.listener.as_deref(), &backend, true)
        }
        Command::Undrain { admin, backend } => {
            client::drain(admin.address()?, admin.listener.as_deref(), &backend, false)
        }
        Command::Weight {
            admin,
            backend,
            weight,
        } => client::weight(
            admin.address()?,
            admin.listener.as_deref(),
            &backend,
            weight,
        ),
        Command::Lookup(LookupCommand::Cid { admin, cid, client }) => client::lookup_cid(
            admin.address()?,
            admin.listener.as_deref(),
            &cid,
            client.as_deref(),
        ),
        Command::Lookup(LookupCommand::Client { admin, client }) => {
            client::lookup_client(admin.address()?, admin.listener.as_deref(), &client)
        }
        Command::Reload { admin } => client::reload(admin.address()?, admin.config.as_deref()),
        Command::Flows {
            admin,
            page,
            backend,
            client,
        } => client::flows(
            admin.address()?,
            admin.listener.as_deref(),
            backend.as_deref(),
            client.as_deref(),
            page.limit.as_deref(),
            page.cursor.as_deref(),
        ),
        Command::Bindings {
            admin,
            page,
            backend,
            cid,
            source,
        } => client::bindings(
            admin.address()?,
            admin.listener.as_deref(),
            backend.as_deref(),
            cid.as_deref(),
            source.as_deref(),
            page.limit.as_deref(),
            page.cursor.as_deref(),
        ),
        _ => Err("not an admin command".into()),
    }
}

#[derive(Subcommand, Debug)]
enum CidCommand {
    /// Make a random AES-128 key for a QUIC-LB configuration (32 hex digits): printed,
    /// or written to a new file readable by its owner only (for `key_file`).
    Keygen {
        /// Write the key to this new file (mode 0600; an existing file is not touched).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print CIDs that a backend with this server ID issues (one per line, hex).
    Encode {
        /// The TOML configuration file with the listener's [listener.cid_format].
        #[arg(long, short)]
        config: PathBuf,
        /// The listener (default: the only one with a cid_format).
        #[arg(long, value_name = "NAME")]
        listener: Option<String>,
        /// The server ID, in hex (e.g. 0a01).
        #[arg(long, value_name = "HEX")]
        server_id: String,
        /// The QUIC-LB configuration to use (required when there are several).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=6))]
        rotation: Option<u8>,
        /// How many CIDs.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
        count: u16,
    },
    /// Explain a CID: its format, config rotation, server ID and backend, or why it
    /// does not decode (exit status 1 unless it reaches a backend by encoding).
    Decode {
        /// The TOML configuration file with the listener's [listener.cid_format].
        #[arg(long, short)]
        config: PathBuf,
        /// The listener (default: the only one with a cid_format).
        #[arg(long, value_name = "NAME")]
        listener: Option<String>,
        /// The CID in hex, as a packet capture or a device log shows it.
        #[arg(value_name = "CID_HEX")]
        cid: String,
    },
}

fn cid_command(c: CidCommand) -> Result<(), String> {
    match c {
        CidCommand::Keygen { out } => {
            let key = cidlb::cid::keygen()?;
            match out {
                None => println!("{key}"),
                Some(path) => {
                    cidlb::cid::write_key_file(&path, &key)?;
                    eprintln!(
                        "cidlb: wrote a new key to {} (mode 0600); set key_file = \"{}\"",
                        path.display(),
                        path.display()
                    );
                }
            }
            Ok(())
        }
        CidCommand::Encode {
            config,
            listener,
            server_id,
            rotation,
            count,
        } => {
            let cfg = Config::load(&config).map_err(|e| e.to_string())?;
            let out = cidlb::cid::encode(
                &cfg,
                listener.as_deref(),
                &server_id,
                rotation,
                usize::from(count),
            )?;
            print!("{out}");
            Ok(())
        }
        CidCommand::Decode {
            config,
            listener,
            cid,
        } => {
            let cfg = Config::load(&config).map_err(|e| e.to_string())?;
            match cidlb::cid::decode(&cfg, listener.as_deref(), &cid) {
                Ok(text) => {
                    print!("{text}");
                    Ok(())
                }
                Err(text) if text.contains('\n') => {
                    print!("{text}");
                    Err("the CID does not reach a backend by encoding".into())
                }
                Err(e) => Err(e),
            }
        }
    }
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// TOML configuration file (the other flags then must not be given).
    #[arg(long, short, conflicts_with_all = ["listen", "backends", "cid_len", "interface"])]
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
    /// Quick start: `nat` relays through userspace sockets; `xdp-dr` routes by direct
    /// routing in the in-kernel XDP program on --interface (--listen is then the
    /// virtual address the backends hold on their loopback; docs/xdp.md).
    #[arg(long, value_enum, default_value_t = ForwardingArg::Nat)]
    forwarding: ForwardingArg,
    /// Quick start with --forwarding xdp-dr: the interface the virtual address is
    /// reached through.
    #[arg(long, value_name = "IF")]
    interface: Option<String>,
    /// Quick start with --forwarding xdp-dr: `native` (in the driver) or `generic`.
    #[arg(long, value_enum, default_value_t = XdpModeArg::Native)]
    xdp_mode: XdpModeArg,
    /// Worker threads, 1–256 (default: one per CPU; overrides the config's `workers`).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: Option<u16>,
    /// Serve the admin API (metrics, backends, drain, reload) on ADDR, e.g.
    /// 127.0.0.1:9684 (overrides the config's `admin.address`; default 127.0.0.1:9684).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum MultiCid {
    First,
    Split,
    Drop,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ForwardingArg {
    Nat,
    XdpDr,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum XdpModeArg {
    Native,
    Generic,
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
        (Some(0), _) => {
            return Err(format!(
                "--cid-len 0: a CID has 1 to {} bytes (give the length of the CIDs your \
                 backends issue, or --routing address for DTLS without CIDs)",
                cidlb_core::MAX_CID_LEN
            ))
        }
        (Some(n), _) => n,
        (None, Routing::Address) => 1,
        (None, Routing::Cid) => {
            return Err(
                "--cid-len N is required: the length of the CIDs your backends issue \
                        (it is not on the wire)"
                    .into(),
            )
        }
    };
    let mut cfg = Config::quick(listen, &a.backends, cid_len).map_err(|e| e.to_string())?;
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
        if a.forwarding == ForwardingArg::XdpDr {
            let Some(interface) = a.interface.clone() else {
                return Err(
                    "--forwarding xdp-dr needs --interface IF (the interface the \
                            virtual address --listen is reached through)"
                        .into(),
                );
            };
            if l.address.ip().is_unspecified() || l.address.port() == 0 {
                return Err(format!(
                    "--listen {}: with --forwarding xdp-dr, give the virtual address itself \
                     (a specific IP and a non-zero port)",
                    l.address
                ));
            }
            if l.multi_cid == MultiCidPolicy::Split {
                return Err(
                    "--multi-cid split is not supported with --forwarding xdp-dr (the \
                            program forwards whole frames): use first or drop"
                        .into(),
                );
            }
            l.forwarding = Forwarding::XdpDr(XdpDr {
                pin_dir: Some(cidlb::config::DEFAULT_PIN_DIR.into()),
                keep_pinned: false,
                interfaces: vec![interface],
                mode: match a.xdp_mode {
                    XdpModeArg::Native => XdpAttachMode::Native,
                    XdpModeArg::Generic => XdpAttachMode::Generic,
                },
            });
        } else if a.interface.is_some() {
            return Err("--interface is only used with --forwarding xdp-dr".into());
        }
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The file's log format applies from the first line: read it first (its errors
    // are reported again, with the rest, when it is loaded for running).
    let file_format = match &cli.command {
        Command::Run(RunArgs {
            config: Some(path), ..
        }) => Config::load(path).ok().map(|c| c.log.format),
        _ => None,
    };
    let json = match cli.log_format {
        Some(LogFormatArg::Json) => true,
        Some(LogFormatArg::Plain) => false,
        None => file_format == Some(cidlb::config::LogFormat::Json),
    };
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cli.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        fmt.json().init();
    } else {
        fmt.with_ansi(std::io::stderr().is_terminal()).init();
    }
    let result = match cli.command {
        Command::Cid(c) => cid_command(c),
        Command::CheckConfig { file } => Config::load(&file)
            .map(|c| print!("{}", c.explain()))
            .map_err(|e| e.to_string()),
        Command::Run(args) => {
            let cfg = match &args.config {
                Some(path) => Config::load(path).map_err(|e| e.to_string()),
                None => quick_config(&args),
            };
            let opts = cidlb::run::RunOptions {
                config_path: args.config.clone(),
                overrides: cidlb::control::Overrides {
                    admin: args.admin,
                    workers: args.workers.map(usize::from),
                },
            };
            cfg.and_then(|c| cidlb::run::run_with(c, opts))
        }
        admin => admin_command(admin).map(|out| print!("{out}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cidlb: {e}");
            ExitCode::FAILURE
        }
    }
}
