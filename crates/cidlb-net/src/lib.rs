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
//! All `unsafe` (batched syscalls) lives in [`sys`].

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod health;
mod stats;
pub mod sys;
mod upstream;
mod worker;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cidlb_core::{Backend, Router, RouterConfig};

pub use stats::{BackendTraffic, ListenerStats, StatsSnapshot, TrafficSnapshot, TrafficTable};

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
    /// Source IP for upstream sockets (default: unspecified, the kernel picks).
    pub upstream_source: Option<IpAddr>,
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

/// A listener's shared state: its router and counters.
#[derive(Debug)]
pub struct ListenerShared {
    /// Name.
    pub name: String,
    /// Bound address (the real port when 0 was asked for).
    pub local_addr: SocketAddr,
    /// The routing state, shared by all workers.
    pub router: Mutex<Router>,
    /// Data-plane counters.
    pub stats: ListenerStats,
    /// Datagrams and bytes to and from each backend, by backend id.
    pub traffic: TrafficTable,
    /// Source IP of upstream sockets (`None`: chosen by the kernel).
    pub upstream_source: Option<IpAddr>,
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

/// The running data plane.
#[derive(Debug)]
pub struct DataPlane {
    listeners: Vec<Arc<ListenerShared>>,
    stop: Arc<AtomicBool>,
    wakers: Vec<Arc<mio::Waker>>,
    threads: Vec<JoinHandle<()>>,
    limits: Arc<UpstreamLimits>,
}

impl DataPlane {
    /// Binds every listener on every worker and starts the workers.
    pub fn start(specs: Vec<ListenerSpec>, cfg: DataPlaneConfig) -> io::Result<DataPlane> {
        let workers = cfg.workers.max(1);
        let now = Instant::now();
        let mut listeners = Vec::new();
        // Worker 0's sockets are bound first; with port 0 the others reuse its port.
        let mut sockets: Vec<Vec<std::net::UdpSocket>> = (0..workers).map(|_| Vec::new()).collect();
        for spec in specs {
            sys::ensure_port_free(spec.listen)?;
            let first = sys::bind_reuseport(spec.listen, cfg.socket_buffer)?;
            let local_addr = first.local_addr()?;
            sockets[0].push(first);
            for w in sockets.iter_mut().skip(1) {
                w.push(sys::bind_reuseport(local_addr, cfg.socket_buffer)?);
            }
            let mut router = Router::new(spec.router, now);
            router
                .set_backends(spec.backends)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
            listeners.push(Arc::new(ListenerShared {
                name: spec.name,
                local_addr,
                router: Mutex::new(router),
                stats: ListenerStats::default(),
                traffic: TrafficTable::default(),
                upstream_source: spec.upstream_source,
            }));
        }
        let limits = Arc::new(upstream_limits(&listeners));
        let stop = Arc::new(AtomicBool::new(false));
        let mut wakers = Vec::new();
        let mut threads = Vec::new();
        for (i, socks) in sockets.into_iter().enumerate() {
            let w = worker::Worker::new(i, listeners.clone(), socks, stop.clone(), limits.clone())?;
            wakers.push(w.waker());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("cidlb-worker-{i}"))
                    .spawn(move || w.run())?,
            );
        }
        Ok(DataPlane {
            listeners,
            stop,
            wakers,
            threads,
            limits,
        })
    }

    /// Re-reads the bound and idle timeout of the workers' upstream flows from the
    /// routers' settings (their `max_flows` and `flow_idle`), after a reload changed
    /// them: each worker applies them at its next sweep.
    pub fn refresh_upstream_limits(&self) {
        let l = upstream_limits(&self.listeners);
        self.limits
            .capacity
            .store(l.capacity.into_inner(), Ordering::Relaxed);
        self.limits
            .idle_secs
            .store(l.idle_secs.into_inner(), Ordering::Relaxed);
    }

    /// The listeners (routers and counters), in spec order.
    pub fn listeners(&self) -> &[Arc<ListenerShared>] {
        &self.listeners
    }

    /// Asks every worker to stop.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in &self.wakers {
            let _ = w.wake();
        }
    }

    /// Stops and waits for the workers.
    pub fn join(mut self) {
        self.shutdown();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.shutdown();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Upstream-flow bounds derived from the routers: a worker may hold every flow of every
/// listener in the worst case, and keeps an upstream socket as long as its flow lives.
fn upstream_limits(listeners: &[Arc<ListenerShared>]) -> UpstreamLimits {
    let mut cap = 0usize;
    let mut idle = Duration::ZERO;
    for l in listeners {
        let r = l.router.lock().unwrap_or_else(|p| p.into_inner());
        cap = cap.saturating_add(r.config().max_flows);
        idle = idle.max(r.config().flow_idle);
    }
    UpstreamLimits {
        capacity: AtomicUsize::new(cap.max(1)),
        idle_secs: AtomicU32::new(idle.as_secs().min(u64::from(u32::MAX)) as u32),
    }
}

/// How often workers expire idle state.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_millis(250);
