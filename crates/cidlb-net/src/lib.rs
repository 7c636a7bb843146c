//! cidlb's data plane: sockets, threads and NAT-mode forwarding around the sans-IO
//! [`cidlb_core::Router`].
//!
//! **NAT mode.** Each client address:port gets its own upstream flow (its own balancer
//! source port) towards the backend its datagrams route to. Replies that arrive on that
//! upstream socket go back to that client address from the listener's address. A client
//! that rebinds gets a *new* upstream flow to the same backend; the backend's DTLS stack
//! authenticates the record and moves its peer to the new flow, and its replies then go
//! to the new address. The balancer never redirects an existing path, so a spoofed record
//! with a stolen CID reaches the backend, fails authentication, and changes nothing.
//!
//! **Threads.** `workers` threads each own one `SO_REUSEPORT` socket per listener, an
//! epoll instance (mio) and their upstream sockets; the kernel spreads client 4-tuples
//! over the workers, so one client address always lands on one worker. The routers (one
//! per listener: flows, CID bindings, Maglev) are shared behind a mutex so that a
//! binding learned on one worker routes a rebound client on another.
//!
//! **Layout.** [`NatPlane`] implements the control plane's
//! [`cidlb_core::plane::DataPlane`], and each [`NatListener`] its
//! [`cidlb_core::plane::ListenerPlane`]; the routers are private to this crate. A
//! worker is two parts: `worker.rs`, what every userspace plane shares (the event
//! loop, listener sockets, batched receive, routing a batch under one lock, replies
//! to clients from the listener socket, counters), and an *egress* (`worker::Egress`)
//! that sends routed datagrams to backends and reads what they answer: `nat.rs`, one
//! connected upstream socket per (client address, backend), where CIDs are learned
//! from ServerHellos. A second userspace egress would be a second implementation of
//! `Egress`, not a copy of the loop.
//!
//! **Transparent NAT** ([`transparent`], a listener's [`UpstreamMode`]) is the NAT
//! egress with another way of opening its upstream sockets: bound to the client's own
//! address and port (`IP_TRANSPARENT`), so the servers see the client. Nothing else
//! differs (table, return path, learning, limits); the host's policy routing brings
//! the replies back, which [`transparent::check_host`] verifies at start.
//!
//! All `unsafe` (batched syscalls, socket options, the netlink route query) lives in
//! [`sys`].

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod health;
mod nat;
mod stats;
pub mod sys;
pub mod transparent;
mod upstream;
mod worker;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cidlb_core::plane::{
    BackendCounts, BindingEntry, BindingFilter, FlowEntry, FlowFilter, ListenerPlane, Page,
    PlaneSnapshot, TableSizes, Traffic,
};
use cidlb_core::{
    Backend, BackendId, BackendState, CidExplanation, ClientExplanation, PreparedBackends, Router,
    RouterConfig,
};

pub use stats::{
    BackendTraffic, ListenerStats, StatsSnapshot, TrafficSnapshot, TrafficTable, NAT_STATS,
};
pub use transparent::UpstreamMode;

/// One listener to serve.
#[derive(Clone, Debug)]
pub struct ListenerSpec {
    /// Name, for logs and metrics.
    pub name: String,
    /// The address clients send to.
    pub listen: SocketAddr,
    /// Router settings (CID length and format, policies, timeouts, limits).
    pub router: RouterConfig,
    /// The backends.
    pub backends: Vec<Backend>,
    /// Source IP for upstream sockets (default: unspecified, the kernel picks); NAT
    /// mode only.
    pub upstream_source: Option<IpAddr>,
    /// How upstream sockets are opened: NAT (the default) or transparent NAT.
    pub upstream: UpstreamMode,
}

/// Data plane settings.
#[derive(Clone, Debug)]
pub struct DataPlaneConfig {
    /// Worker threads (≥ 1).
    pub workers: usize,
    /// Socket receive/send buffer size requested for listener sockets.
    pub socket_buffer: usize,
}

impl Default for DataPlaneConfig {
    fn default() -> Self {
        DataPlaneConfig {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            socket_buffer: 4 << 20,
        }
    }
}

/// One listener of the NAT plane: its router (shared by the workers, private to the
/// plane) and counters. The control plane sees it as a [`ListenerPlane`].
#[derive(Debug)]
pub struct NatListener {
    name: String,
    local_addr: SocketAddr,
    /// The routing state, shared by all workers; nothing outside this crate locks it.
    router: Mutex<Router>,
    /// Data-plane counters.
    stats: ListenerStats,
    /// Datagrams and bytes to and from each backend, by backend id.
    traffic: TrafficTable,
    /// Source IP of upstream sockets (`None`: chosen by the kernel).
    upstream_source: Option<IpAddr>,
    /// Every listener's bound address (the plane's own addresses, with real ports).
    bound: Arc<[SocketAddr]>,
    /// How upstream sockets are opened.
    upstream: UpstreamMode,
}

impl NatListener {
    /// The router, locked. A worker that panicked while holding the lock left a router
    /// that is still structurally valid (every mutation is a single table operation):
    /// keep serving.
    pub(crate) fn router(&self) -> MutexGuard<'_, Router> {
        self.router.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The data-plane counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}

impl ListenerPlane for NatListener {
    fn name(&self) -> &str {
        &self.name
    }

    fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    fn reconfigure(&self, mut cfg: RouterConfig, backends: PreparedBackends) {
        cfg.own_addresses = cfg.own_addresses.with_listeners(&self.bound);
        self.router().reconfigure(cfg, backends);
    }

    fn set_backend_state(&self, id: BackendId, state: BackendState) -> bool {
        self.router().set_backend_state(id, state)
    }

    fn set_backend_weight(&self, id: BackendId, weight: u32) -> bool {
        self.router().set_backend_weight(id, weight)
    }

    fn explain_cid(&self, cid: &[u8], client: Option<SocketAddr>) -> CidExplanation {
        self.router().explain_cid(Instant::now(), cid, client)
    }

    fn explain_client(&self, client: SocketAddr) -> ClientExplanation {
        self.router().explain_client(Instant::now(), client)
    }

    fn snapshot(&self, per_backend: bool) -> PlaneSnapshot {
        let r = self.router();
        let (flow_bytes, binding_bytes) = r.table_bytes();
        let cfg = r.config();
        let tables = TableSizes {
            flows: r.flow_count(),
            bindings: r.binding_count(),
            max_flows: cfg.max_flows,
            max_bindings: cfg.max_bindings,
            flow_idle: cfg.flow_idle,
            binding_idle: cfg.binding_idle,
            flow_bytes,
            binding_bytes,
            source_bytes: r.source_table_bytes(),
        };
        let per_backend = if per_backend {
            r.per_backend_counts(Instant::now())
                .into_iter()
                .map(|(backend, flows, bindings)| BackendCounts {
                    backend,
                    flows,
                    bindings,
                })
                .collect()
        } else {
            Vec::new()
        };
        let counters = r.counters().clone();
        drop(r);
        let stats = self.stats.snapshot().samples();
        PlaneSnapshot {
            counters,
            tables,
            stats,
            per_backend,
            unreachable: Vec::new(),
        }
    }

    fn traffic(&self, id: BackendId) -> Traffic {
        self.traffic.snapshot(id)
    }

    fn router_config(&self) -> RouterConfig {
        self.router().config().clone()
    }

    fn flows(&self, filter: &FlowFilter, cursor: u64, limit: usize) -> Page<FlowEntry> {
        self.router()
            .flows_page(Instant::now(), filter, cursor, limit)
    }

    fn bindings(&self, filter: &BindingFilter, cursor: u64, limit: usize) -> Page<BindingEntry> {
        self.router()
            .bindings_page(Instant::now(), filter, cursor, limit)
    }
}

/// Bounds of the workers' upstream-flow tables, changeable at run time (a reload);
/// workers pick a change up at their next sweep.
#[derive(Debug)]
pub(crate) struct UpstreamLimits {
    /// Most upstream flows per worker.
    pub capacity: AtomicUsize,
    /// Idle timeout of an upstream flow, in seconds.
    pub idle_secs: AtomicU32,
}

/// The running NAT data plane.
#[derive(Debug)]
pub struct NatPlane {
    listeners: Vec<Arc<NatListener>>,
    /// The same listeners, as the control plane sees them.
    planes: Vec<Arc<dyn ListenerPlane>>,
    stop: Arc<AtomicBool>,
    wakers: Vec<Arc<mio::Waker>>,
    threads: Vec<JoinHandle<()>>,
    limits: Arc<UpstreamLimits>,
    workers: usize,
}

impl NatPlane {
    /// Binds every listener on every worker and starts the workers.
    pub fn start(specs: Vec<ListenerSpec>, cfg: DataPlaneConfig) -> io::Result<NatPlane> {
        let workers = cfg.workers.max(1);
        let now = Instant::now();
        let mut listeners = Vec::new();
        // Worker 0's sockets are bound first; with port 0 the others reuse its port.
        let mut sockets: Vec<Vec<std::net::UdpSocket>> = (0..workers).map(|_| Vec::new()).collect();
        let mut bound_specs = Vec::new();
        for spec in specs {
            if let UpstreamMode::Transparent { reply_fwmark } = spec.upstream {
                transparent::check_host(
                    spec.listen,
                    spec.backends.iter().map(|b| b.addr),
                    reply_fwmark,
                )
                .map_err(|e| {
                    let kind = if e.is_permission() {
                        io::ErrorKind::PermissionDenied
                    } else {
                        io::ErrorKind::Other
                    };
                    io::Error::new(kind, format!("listener {:?}: {e}", spec.name))
                })?;
            }
            sys::ensure_port_free(spec.listen)?;
            let first = sys::bind_reuseport(spec.listen, cfg.socket_buffer)?;
            let local_addr = first.local_addr()?;
            sockets[0].push(first);
            for w in sockets.iter_mut().skip(1) {
                w.push(sys::bind_reuseport(local_addr, cfg.socket_buffer)?);
            }
            bound_specs.push((spec, local_addr));
        }
        // The plane's own addresses, with the ports the kernel picked for port 0.
        let bound: Arc<[SocketAddr]> = bound_specs.iter().map(|(_, a)| *a).collect();
        for (spec, local_addr) in bound_specs {
            let mut rc = spec.router;
            rc.own_addresses = rc.own_addresses.with_listeners(&bound);
            let mut router = Router::new(rc, now);
            router
                .set_backends(spec.backends)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            listeners.push(Arc::new(NatListener {
                name: spec.name,
                local_addr,
                router: Mutex::new(router),
                stats: ListenerStats::default(),
                traffic: TrafficTable::default(),
                upstream_source: spec.upstream_source,
                bound: bound.clone(),
                upstream: spec.upstream,
            }));
        }
        let limits = Arc::new(upstream_limits(&listeners, workers));
        let stop = Arc::new(AtomicBool::new(false));
        let mut wakers = Vec::new();
        let mut threads = Vec::new();
        for (i, socks) in sockets.into_iter().enumerate() {
            let egress = nat::NatEgress::new(i, &listeners, limits.clone());
            let w =
                worker::Worker::new(i, workers, listeners.clone(), socks, stop.clone(), egress)?;
            wakers.push(w.waker());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("cidlb-worker-{i}"))
                    .spawn(move || w.run())?,
            );
        }
        let planes = listeners
            .iter()
            .map(|l| l.clone() as Arc<dyn ListenerPlane>)
            .collect();
        Ok(NatPlane {
            listeners,
            planes,
            stop,
            wakers,
            threads,
            limits,
            workers,
        })
    }

    /// The listeners with their NAT-specific counters, in spec order.
    pub fn nat_listeners(&self) -> &[Arc<NatListener>] {
        &self.listeners
    }

    /// Stops and waits for the workers.
    pub fn join(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        cidlb_core::plane::DataPlane::shutdown(self);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl cidlb_core::plane::DataPlane for NatPlane {
    fn listeners(&self) -> &[Arc<dyn ListenerPlane>] {
        &self.planes
    }

    /// Re-reads the bound and idle timeout of the workers' upstream flows from the
    /// routers' settings (their `max_flows` and `flow_idle`), after a reload changed
    /// them: each worker applies them at its next sweep.
    fn refresh_limits(&self) {
        let l = upstream_limits(&self.listeners, self.workers);
        self.limits
            .capacity
            .store(l.capacity.into_inner(), Ordering::Relaxed);
        self.limits
            .idle_secs
            .store(l.idle_secs.into_inner(), Ordering::Relaxed);
    }

    fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in &self.wakers {
            let _ = w.wake();
        }
    }
}

impl Drop for NatPlane {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Upstream-flow bounds derived from the routers: the listeners' `max_flows` together,
/// shared out between the workers (rounded up), so that all workers together hold at
/// most that many upstream sockets (plus fewer than `workers` for the rounding), and
/// the same idle timeout as the flows. A worker whose share is full evicts one of its
/// own flows (sampled, like the router's tables); an expired flow closes its socket.
///
/// The kernel spreads client 4-tuples over the workers' `SO_REUSEPORT` sockets evenly
/// (a hash), so each worker sees about its share of the flows.
fn upstream_limits(listeners: &[Arc<NatListener>], workers: usize) -> UpstreamLimits {
    let mut total = 0usize;
    let mut idle = Duration::ZERO;
    for l in listeners {
        let r = l.router();
        total = total.saturating_add(r.config().max_flows);
        idle = idle.max(r.config().flow_idle);
    }
    UpstreamLimits {
        capacity: AtomicUsize::new(worker_share(total, workers)),
        idle_secs: AtomicU32::new(idle.as_secs().min(u64::from(u32::MAX)) as u32),
    }
}

/// One worker's share of `total` upstream flows.
pub fn worker_share(total: usize, workers: usize) -> usize {
    total.div_ceil(workers.max(1)).max(1)
}

/// How often workers expire idle state.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_millis(250);
