//! Turning a validated [`Config`] into a running data plane, and running it until a
//! signal says stop.

use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cidlb_core::plane::ListenerPlane;
use cidlb_net::{DataPlaneConfig, NatPlane};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tracing::{info, warn};

use crate::admin::AdminServer;
use crate::config::{Config, Forwarding, RoutingMode};
use crate::control::Daemon;
use crate::health::StopSignal;
use crate::specs::{listener_specs, random_secret};

/// Raises the soft open-files limit to the hard limit (NAT mode holds one socket per
/// client address) and warns, with the numbers, when it cannot hold what `cfg` may
/// open: past it, new flows fail to get an upstream socket (counted as
/// `upstream_open_errors`) while existing sessions, the admin API and the health checks
/// keep working.
fn raise_nofile_limit(cfg: &Config) {
    let need = cfg.descriptors();
    match cidlb_net::sys::raise_nofile_limit() {
        Ok((soft, hard)) => {
            info!(soft, hard, needed = need.total(), "open files limit");
            if (soft as u128) < need.total() as u128 {
                warn!(
                    limit = soft,
                    needed = need.total(),
                    "the open-files limit ({soft}) is below what this configuration can open \
                     ({need}): once it is reached, new flows are dropped (upstream_open_errors); \
                     raise LimitNOFILE / ulimit -n or lower limits.max_flows"
                );
            }
        }
        Err(e) => warn!(error = %e, "cannot read or raise the open files limit"),
    }
}

/// What [`start_planes`] started: the plane, the XDP listeners whose MACs the
/// neighbour resolver keeps current, and those whose pins a clean shutdown removes.
type Started = (
    crate::xdp::Planes,
    Vec<crate::xdp::Watched>,
    Vec<Arc<cidlb_xdp::XdpListener>>,
);

/// Starts the NAT plane for the `forwarding = "nat"` listeners and the XDP plane for
/// the `forwarding = "xdp-dr"` ones (backend MACs from the neighbour table), as one
/// data plane in configuration order; and the XDP listeners whose MACs the neighbour
/// resolver keeps current.
fn start_planes(cfg: &Config, secret: [u64; 4], workers: usize) -> Result<Started, String> {
    let specs = listener_specs(cfg, secret);
    let is_xdp: Vec<bool> = cfg
        .listeners
        .iter()
        .map(|l| l.forwarding.is_xdp())
        .collect();
    let mut nat_specs = Vec::new();
    let mut xdp_specs = Vec::new();
    for (spec, l) in specs.into_iter().zip(&cfg.listeners) {
        match &l.forwarding {
            Forwarding::Nat => nat_specs.push(spec),
            Forwarding::XdpDr(x) => xdp_specs.push((spec, l, x)),
        }
    }
    let nat = if nat_specs.is_empty() {
        None
    } else {
        Some(
            NatPlane::start(
                nat_specs,
                DataPlaneConfig {
                    workers,
                    ..DataPlaneConfig::default()
                },
            )
            .map_err(|e| format!("cannot start the data plane: {e}"))?,
        )
    };
    let mut watched = Vec::new();
    let mut unpin = Vec::new();
    let xdp = if xdp_specs.is_empty() {
        None
    } else {
        let addrs: Vec<std::net::SocketAddr> = xdp_specs
            .iter()
            .flat_map(|(s, _, _)| s.backends.iter().map(|b| b.addr))
            .collect();
        let table = crate::xdp::resolve_at_start(&addrs, Duration::from_secs(1));
        let mut configs = Vec::new();
        let mut ifaces = Vec::new();
        let mut keep = Vec::new();
        for (spec, l, x) in xdp_specs {
            let (c, interfaces) = crate::xdp::xdp_listener_config(l, x, spec, &table)?;
            ifaces.push(interfaces);
            keep.push(x.keep_pinned);
            configs.push(c);
        }
        let plane = cidlb_xdp::XdpPlane::start(configs).map_err(|e| {
            format!(
                "cannot start the XDP plane: {e}{}",
                if e.is_permission() {
                    " (XDP needs root or CAP_BPF + CAP_NET_ADMIN)"
                } else if matches!(e, cidlb_xdp::XdpError::Attach(_)) {
                    " (a driver without native XDP refuses it: try xdp_mode = \"generic\", or forwarding = \"nat\")"
                } else {
                    ""
                }
            )
        })?;
        for ((l, iface), keep) in plane.xdp_listeners().iter().zip(ifaces).zip(keep) {
            let names: Vec<&str> = iface.iter().map(|(n, _)| n.as_str()).collect();
            info!(listener = %l.name(), interface = %names.join(","), pinned = l.pinned(),
                "XDP program attached (direct routing)");
            if !keep {
                unpin.push(l.clone());
            }
            watched.push(crate::xdp::Watched {
                listener: l.clone(),
                interfaces: iface,
            });
        }
        Some(Arc::new(plane))
    };
    Ok((crate::xdp::Planes::new(nat, xdp, &is_xdp), watched, unpin))
}

/// How [`run_with`] was started, beyond the configuration itself.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The configuration file that reloads (SIGHUP, `POST /reload`) read again; `None`
    /// for the quick start.
    pub config_path: Option<std::path::PathBuf>,
    /// Command-line settings applied over the file at start and at every reload.
    pub overrides: crate::control::Overrides,
}

/// Runs the balancer until SIGINT or SIGTERM (quick start: no file to reload).
pub fn run(cfg: Config) -> Result<(), String> {
    run_with(cfg, RunOptions::default())
}

/// Runs the balancer until SIGINT or SIGTERM: the data plane, the health checks, the
/// admin API; SIGHUP reloads the configuration file.
pub fn run_with(mut cfg: Config, opts: RunOptions) -> Result<(), String> {
    let started = Instant::now();
    opts.overrides.apply(&mut cfg);
    // Before anything else: SIGHUP's default action would end the process.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    // Backends given by DNS name: resolved now (each query bounded by
    // resolver.timeout), the plane starts with the expansion.
    let dns = cfg.has_dns_backends().then(|| {
        let mut r = crate::dns::Resolved::default();
        r.refresh(&cfg, std::time::Instant::now(), cfg.timeouts.flow_idle);
        (cfg.clone(), r)
    });
    if let Some((file, r)) = &dns {
        cfg = r.expand(file);
    }
    raise_nofile_limit(&cfg);
    let workers = cfg
        .workers
        .unwrap_or_else(|| DataPlaneConfig::default().workers);
    let secret = random_secret();
    // The data plane is built aside (65,535 backends and their Maglev tables take a
    // moment): SIGINT or SIGTERM meanwhile stops at once, SIGHUP reloads once running.
    let (built, reload_pending) = {
        let (tx, rx) = std::sync::mpsc::channel();
        let (c, path, overrides) = (
            cfg.clone(),
            opts.config_path.clone(),
            opts.overrides.clone(),
        );
        std::thread::Builder::new()
            .name("cidlb-start".into())
            .spawn(move || {
                let r = start_planes(&c, secret, workers).map(|(plane, watched, unpin)| {
                    let d = Daemon::new(Box::new(plane), c, secret, path, overrides);
                    (d, watched, unpin)
                });
                // Dropped here (workers joined) if start-up was given up meanwhile.
                let _ = tx.send(r);
            })
            .map_err(|e| format!("cannot start the data plane: {e}"))?;
        let mut reload = false;
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(r) => break (r, reload),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err("cannot start the data plane: its thread failed".into())
                }
            }
            for sig in signals.pending() {
                if sig == SIGHUP {
                    reload = true;
                } else {
                    info!(
                        signal = sig,
                        after_ms = started.elapsed().as_millis() as u64,
                        "stopping during start-up"
                    );
                    return Ok(());
                }
            }
        }
    };
    let (daemon, watched, unpin) = built?;
    let daemon = Arc::new(daemon);
    // A stop gives up a reload in progress (SIGHUP's, or the admin API's) at its next step.
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register(sig, daemon.stop_flag())
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    }
    for (l, lc) in daemon.plane().listeners().iter().zip(&cfg.listeners) {
        let mode = match lc.routing {
            RoutingMode::Cid => format!("CID routing, CID length {}", lc.cid_length.unwrap_or(0)),
            RoutingMode::Address => "address-only routing".to_string(),
        };
        info!(listener = %l.name(), address = %l.local_addr(), backends = lc.backends.len(), %mode,
            forwarding = %lc.forwarding, upstream = %lc.upstream, "listening");
    }
    let stop = Arc::new(StopSignal::default());
    let neigh = if watched.is_empty() {
        None
    } else {
        Some(
            crate::xdp::MacResolver::new(watched)
                .spawn(stop.clone())
                .map_err(|e| format!("cannot start the neighbour resolver: {e}"))?,
        )
    };
    let health = crate::health::spawn(daemon.clone(), stop.clone(), secret[2])
        .map_err(|e| format!("cannot start the health checks: {e}"))?;
    let resolver = match dns {
        Some((file, resolved)) => {
            let every = file.resolver.interval;
            daemon.set_dns(file, resolved);
            let (d, s) = (daemon.clone(), stop.clone());
            Some(
                std::thread::Builder::new()
                    .name("cidlb-resolver".into())
                    .spawn(move || {
                        while !s.wait_until(std::time::Instant::now() + every) {
                            d.refresh_dns();
                        }
                    })
                    .map_err(|e| format!("cannot start the resolver: {e}"))?,
            )
        }
        None => None,
    };
    let admin = if cfg.admin.enabled {
        let addr = cfg.admin.address();
        match AdminServer::start(addr, daemon.clone()) {
            Ok(a) => Some(a),
            Err(e) if cfg.admin.address.is_none() => {
                warn!(address = %addr, error = %e,
                    "admin API not started: cannot bind its default address (set admin.address or --admin)");
                None
            }
            Err(e) => {
                stop.stop();
                let _ = health.join();
                return Err(format!(
                    "cannot serve the admin API on {addr}: {e} (admin.address, --admin)"
                ));
            }
        }
    } else {
        None
    };
    // Machine-readable lines on stdout for scripts and tests; the admin line comes
    // first so that whoever waits for the ready lines has both.
    if let Some(a) = &admin {
        println!("cidlb: admin API listening on {}", a.local_addr());
        info!(address = %a.local_addr(), "admin API: GET /metrics, /backends, /tables; POST /reload");
    }
    for l in daemon.plane().listeners() {
        println!("cidlb: listener {} ready on {}", l.name(), l.local_addr());
    }
    info!(
        workers,
        reload = opts.config_path.is_some(),
        duration_ms = started.elapsed().as_secs_f64() * 1e3,
        "cidlb running; SIGINT or SIGTERM stops it, SIGHUP reloads the configuration file"
    );
    if reload_pending && opts.config_path.is_some() {
        info!("SIGHUP during start-up: reloading the configuration file");
        let _ = daemon.reload();
    }

    for sig in signals.forever() {
        if sig == SIGHUP {
            if opts.config_path.is_some() {
                info!("SIGHUP: reloading the configuration file");
                // Logged, and counted, by reload() itself.
                let _ = daemon.reload();
            } else {
                warn!("SIGHUP ignored: cidlb was started without --config, there is no file to reload");
            }
            continue;
        }
        info!(signal = sig, "stopping");
        break;
    }
    if let Some(a) = admin {
        a.stop();
    }
    stop.stop();
    let _ = health.join();
    if let Some(r) = resolver {
        let _ = r.join();
    }
    if let Some(n) = neigh {
        let _ = n.join();
    }
    daemon.shutdown();
    // A clean shutdown removes the XDP pins (unless keep_pinned): the programs detach
    // when the plane drops. After kill -9 they stay, and forward until a restart.
    for l in &unpin {
        if let Err(e) = l.unpin() {
            warn!(listener = %l.name(), error = %e, "cannot remove the XDP pins");
        }
    }
    std::thread::sleep(Duration::from_millis(10));
    for l in daemon.snapshot(false).listeners {
        info!(
            listener = %l.name,
            client_datagrams = l.stat("client_datagrams").unwrap_or(0),
            routed = l.counters.total_routed(),
            dropped = l.counters.total_dropped(),
            replies = l.stat("reply_datagrams").unwrap_or(0),
            flows = l.tables.flows,
            bindings = l.tables.bindings,
            "final counters"
        );
    }
    // Dropping the last reference joins the workers.
    drop(daemon);
    Ok(())
}
