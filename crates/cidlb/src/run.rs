//! Turning a validated [`Config`] into a running data plane, and running it until a
//! signal says stop.

use std::time::Duration;

use cidlb_core::{Backend, BackendId, CidRouting, RouterConfig};
use cidlb_net::{DataPlane, DataPlaneConfig, ListenerSpec};
use signal_hook::consts::{SIGINT, SIGTERM};
use tracing::{info, warn};

use crate::config::{Config, RoutingMode};

/// A fresh per-instance secret for the tables' keyed hashing and eviction sampling.
pub fn random_secret() -> [u64; 4] {
    let mut b = [0u8; 32];
    if getrandom::getrandom(&mut b).is_err() {
        // No entropy source: fall back to the clock and the pid (still unpredictable
        // enough to an off-path attacker, and logged).
        warn!("no OS randomness; table hash keys derived from the clock");
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        b[..8].copy_from_slice(&t.to_le_bytes());
        b[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    let w = |i: usize| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    [w(0), w(1), w(2), w(3)]
}

/// The data-plane listener specs for `cfg`.
pub fn listener_specs(cfg: &Config, secret: [u64; 4]) -> Vec<ListenerSpec> {
    cfg.listeners
        .iter()
        .map(|l| {
            let mut rc = RouterConfig::new(CidRouting::fixed(l.cid_length.unwrap_or(0)), secret);
            rc.multi_cid = l.multi_cid;
            rc.route_by_cid = l.routing == RoutingMode::Cid;
            rc.flow_idle = cfg.timeouts.flow_idle;
            rc.binding_idle = cfg.timeouts.cid_binding_idle;
            rc.max_flows = cfg.limits.max_flows;
            rc.max_bindings = cfg.limits.max_bindings;
            rc.hash_seed = cfg.hashing.seed;
            rc.maglev_table_size = cfg.hashing.maglev_table_size;
            let backends = l
                .backends
                .iter()
                .enumerate()
                .map(|(i, b)| Backend {
                    id: BackendId(i as u16),
                    name: b.name.clone(),
                    addr: b.address,
                    weight: b.weight,
                    state: b.state,
                    server_id: None,
                })
                .collect();
            ListenerSpec {
                name: l.name.clone(),
                listen: l.address,
                router: rc,
                backends,
                upstream_source: l.upstream_source,
            }
        })
        .collect()
}

/// Raises the soft open-files limit to the hard limit: NAT mode holds one socket per
/// client address.
fn raise_nofile_limit() {
    // Read the current limits from /proc so that this crate needs no unsafe code.
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    if let Some(line) = limits.lines().find(|l| l.starts_with("Max open files")) {
        info!(
            limits = line.trim_start_matches("Max open files").trim(),
            "open files (soft hard)"
        );
    }
}

/// Runs the balancer until SIGINT or SIGTERM.
pub fn run(cfg: Config) -> Result<(), String> {
    raise_nofile_limit();
    let workers = cfg
        .workers
        .unwrap_or_else(|| DataPlaneConfig::default().workers);
    let specs = listener_specs(&cfg, random_secret());
    let plane = DataPlane::start(
        specs,
        DataPlaneConfig {
            workers,
            ..DataPlaneConfig::default()
        },
    )
    .map_err(|e| format!("cannot start the data plane: {e}"))?;
    for (l, lc) in plane.listeners().iter().zip(&cfg.listeners) {
        let mode = match lc.routing {
            RoutingMode::Cid => format!("CID routing, CID length {}", lc.cid_length.unwrap_or(0)),
            RoutingMode::Address => "address-only routing".to_string(),
        };
        info!(listener = %l.name, address = %l.local_addr, backends = lc.backends.len(), %mode, "listening");
        // A machine-readable line on stdout for scripts and tests.
        println!("cidlb: listener {} ready on {}", l.name, l.local_addr);
    }
    info!(workers, "cidlb running; SIGINT or SIGTERM stops it");

    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    if let Some(sig) = signals.forever().next() {
        info!(signal = sig, "stopping");
    }
    plane.shutdown();
    std::thread::sleep(Duration::from_millis(10));
    for l in plane.listeners() {
        let s = l.stats.snapshot();
        let r = l.router.lock().unwrap_or_else(|p| p.into_inner());
        let c = r.counters();
        info!(
            listener = %l.name,
            client_datagrams = s.client_datagrams,
            routed = c.total_routed(),
            dropped = c.total_dropped(),
            replies = s.reply_datagrams,
            flows = r.flow_count(),
            bindings = r.binding_count(),
            "final counters"
        );
    }
    plane.join();
    Ok(())
}
