//! From a validated [`Config`] to what the data plane is started and reconfigured
//! with: each listener's router settings and backend set.

use cidlb_core::{Backend, BackendId, OwnAddresses, RouterConfig};
use cidlb_net::ListenerSpec;
use tracing::warn;

use crate::config::{Config, RoutingMode, UpstreamMode};

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

/// Checks, for every backend that `new` adds to a transparent listener of `old`, that
/// the host would route its replies to clients back to cidlb
/// ([`cidlb_net::transparent::check_reply_route`], as at start). The error names the
/// listener and says what to add.
pub fn check_new_transparent_backends(old: &Config, new: &Config) -> Result<(), String> {
    for (o, n) in old.listeners.iter().zip(&new.listeners) {
        if n.upstream != UpstreamMode::Transparent {
            continue;
        }
        for b in &n.backends {
            if o.backends.iter().any(|ob| ob.address == b.address) {
                continue;
            }
            cidlb_net::transparent::check_reply_route(b.address, n.reply_fwmark)
                .map_err(|e| format!("listener {:?}, backend {:?}: {e}", n.name, b.name))?;
        }
    }
    Ok(())
}

/// The data-plane listener specs for `cfg`.
pub fn listener_specs(cfg: &Config, secret: [u64; 4]) -> Vec<ListenerSpec> {
    // Datagrams from the listeners' own addresses are dropped (the plane fills in the
    // real ports of listeners on port 0).
    let listen: Vec<std::net::SocketAddr> = cfg.listeners.iter().map(|l| l.address).collect();
    let own = OwnAddresses::new(&listen, &cidlb_net::sys::local_ips());
    cfg.listeners
        .iter()
        .map(|l| {
            // The fixed CID length, and the listener's CID format for encoded routing.
            let mut rc = RouterConfig::new(l.cid_routing(), secret);
            rc.multi_cid = l.multi_cid;
            rc.own_addresses = own.clone();
            rc.notices = cfg.log.events_per_second;
            rc.route_by_cid = l.routing == RoutingMode::Cid;
            rc.flow_idle = cfg.timeouts.flow_idle;
            rc.binding_idle = cfg.timeouts.cid_binding_idle;
            rc.max_flows = cfg.limits.max_flows;
            rc.max_bindings = cfg.limits.max_bindings;
            rc.new_flows_per_source = cfg.limits.new_flow_limit();
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
                    server_id: l.backend_server_id(b),
                })
                .collect();
            ListenerSpec {
                name: l.name.clone(),
                listen: l.address,
                router: rc,
                backends,
                upstream_source: l.upstream_source,
                upstream: match l.upstream {
                    UpstreamMode::Nat => cidlb_net::UpstreamMode::Nat,
                    UpstreamMode::Transparent => cidlb_net::UpstreamMode::Transparent {
                        reply_fwmark: l.reply_fwmark,
                    },
                },
            }
        })
        .collect()
}
