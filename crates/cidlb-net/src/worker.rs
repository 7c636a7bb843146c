//! One worker thread: an epoll loop over its listener sockets and upstream flows.

use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cidlb_core::{BackendId, FlowKey, Router, SplitPart, Verdict};
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, warn};

use crate::stats::BackendTraffic;
use crate::sys::{Received, Recv, RecvBatch, SendBatch};
use crate::upstream::{UpKey, Upstream, Upstreams};
use crate::{sys, ListenerShared, UpstreamLimits, SWEEP_EVERY};

const WAKER: Token = Token(usize::MAX);
const LISTENER_BASE: usize = usize::MAX / 2;
/// Datagrams read from one socket before others get a turn.
const BUDGET: usize = 64;
/// Datagrams per `recvmmsg` on a listener socket.
const RX_BATCH: usize = 32;
/// From this many flows and bindings on, a received batch's table entries are loaded
/// ahead of routing ([`cidlb_core::Router::warm`]): in smaller tables they are in cache
/// anyway and warming costs more than it saves (`cargo bench -p cidlb-core --bench
/// route`, batch32 vs batch32_warm).
const WARM_FROM_ENTRIES: usize = 512 * 1024;
const _: () = assert!(
    RX_BATCH <= cidlb_core::WARM_BATCH,
    "warm sees the whole batch"
);
const _: () = assert!(RX_BATCH <= 256, "batch positions fit a u8");
/// Largest client datagram accepted (bigger ones are dropped and counted): DTLS
/// records are at most 2^14 bytes of plaintext plus expansion.
const RX_SLOT: usize = 17 * 1024;
/// Datagrams per `recvmmsg` on an upstream socket (one client's replies).
const UP_RX_BATCH: usize = 8;
/// Replies per `sendmmsg`.
const TX_BATCH: usize = 32;

fn lock(m: &Mutex<Router>) -> MutexGuard<'_, Router> {
    // A worker that panicked while holding the lock left a router that is still
    // structurally valid (every mutation is a single table operation): keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Datagram counts of one loop round, per listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LocalCounts {
    upstream_datagrams: u64,
    upstream_bytes: u64,
    backend_datagrams: u64,
    backend_bytes: u64,
}

pub(crate) struct Worker {
    id: usize,
    poll: Poll,
    waker: Arc<Waker>,
    listeners: Vec<Arc<ListenerShared>>,
    sockets: Vec<mio::net::UdpSocket>,
    ups: Upstreams,
    stop: Arc<AtomicBool>,
    scratch: Vec<u8>,
    /// Split plans of the current batch: (datagram index in the batch, part).
    parts: Vec<(usize, SplitPart)>,
    /// Verdicts of the current batch.
    verdicts: Vec<Verdict>,
    rx: Option<RecvBatch>,
    up_rx: Option<RecvBatch>,
    /// Replies queued per listener, flushed with one sendmmsg per round.
    tx: Vec<SendBatch>,
    /// Sockets whose budget ran out before they were drained (edge-triggered epoll
    /// will not tell us again).
    pending: VecDeque<Token>,
    last_open_error: Option<Instant>,
    /// Upstream-flow bounds shared with the control plane, and the values applied.
    limits: Arc<UpstreamLimits>,
    applied_limits: (usize, u32),
    /// Per listener, the per-backend traffic counters seen so far (by backend id),
    /// each with this worker's counts not yet published.
    traffic: Vec<Vec<(Arc<BackendTraffic>, [u64; 4])>>,
    /// Per listener, datagram counts not yet published (see [`Worker::publish`]).
    local: Vec<LocalCounts>,
}

impl Worker {
    pub fn new(
        id: usize,
        listeners: Vec<Arc<ListenerShared>>,
        sockets: Vec<std::net::UdpSocket>,
        stop: Arc<AtomicBool>,
        limits: Arc<UpstreamLimits>,
    ) -> io::Result<Worker> {
        let poll = Poll::new()?;
        let n_listeners = listeners.len();
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut socks = Vec::new();
        for (i, s) in sockets.into_iter().enumerate() {
            let mut s = mio::net::UdpSocket::from_std(s);
            poll.registry()
                .register(&mut s, Token(LISTENER_BASE + i), Interest::READABLE)?;
            socks.push(s);
        }
        let seed = listeners
            .last()
            .map_or([0; 4], |l| lock(&l.router).config().secret);
        // Each worker may hold every flow in the worst case.
        let capacity = limits.capacity.load(Ordering::Relaxed);
        let idle = limits.idle_secs.load(Ordering::Relaxed);
        Ok(Worker {
            id,
            poll,
            waker,
            listeners,
            sockets: socks,
            ups: Upstreams::new(
                capacity.max(1),
                idle,
                [seed[0] ^ id as u64, seed[1], seed[2], seed[3] ^ 0xabcd],
                Instant::now(),
            ),
            stop,
            scratch: Vec::with_capacity(RX_SLOT),
            parts: Vec::with_capacity(cidlb_core::MAX_SPLIT_RECORDS * RX_BATCH),
            verdicts: Vec::with_capacity(RX_BATCH),
            rx: Some(RecvBatch::new(RX_BATCH, RX_SLOT)),
            up_rx: Some(RecvBatch::new(UP_RX_BATCH, RX_SLOT)),
            tx: (0..n_listeners)
                .map(|_| SendBatch::new(TX_BATCH, RX_SLOT))
                .collect(),
            pending: VecDeque::new(),
            last_open_error: None,
            limits,
            applied_limits: (capacity, idle),
            traffic: vec![Vec::new(); n_listeners],
            local: vec![LocalCounts::default(); n_listeners],
        })
    }

    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        debug!(worker = self.id, "worker started");
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let timeout = if self.pending.is_empty() {
                next_sweep.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    warn!(worker = self.id, error = %e, "poll failed");
                }
                continue;
            }
            for ev in events.iter() {
                self.service(ev.token());
            }
            for _ in 0..self.pending.len() {
                if let Some(t) = self.pending.pop_front() {
                    self.service(t);
                }
            }
            self.flush_replies();
            self.publish();
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_EVERY;
            }
        }
        self.flush_replies();
        self.publish();
        debug!(worker = self.id, "worker stopped");
    }

    fn service(&mut self, t: Token) {
        let drained = match t {
            WAKER => true,
            Token(i) if i >= LISTENER_BASE => self.read_clients(i - LISTENER_BASE),
            Token(slot) => self.read_backend(slot),
        };
        if !drained && !self.pending.contains(&t) {
            self.pending.push_back(t);
        }
    }

    /// This worker's unpublished counts for backend `id` of listener `li`:
    /// [to datagrams, to bytes, from datagrams, from bytes].
    fn traffic(&mut self, li: usize, id: BackendId) -> &mut [u64; 4] {
        let i = usize::from(id.0);
        if self.traffic[li].len() <= i {
            let table = &self.listeners[li].traffic;
            let cache = &mut self.traffic[li];
            while cache.len() <= i {
                cache.push((table.get(BackendId(cache.len() as u16)), [0; 4]));
            }
        }
        &mut self.traffic[li][i].1
    }

    /// Publishes the counts gathered since the last call: one atomic add per counter
    /// per loop round instead of several per datagram, so the workers do not bounce
    /// shared cache lines on the hot path.
    fn publish(&mut self) {
        for (li, c) in self.local.iter_mut().enumerate() {
            if *c == LocalCounts::default() {
                continue;
            }
            let st = &self.listeners[li].stats;
            for (counter, n) in [
                (&st.upstream_datagrams, c.upstream_datagrams),
                (&st.upstream_bytes, c.upstream_bytes),
                (&st.backend_datagrams, c.backend_datagrams),
                (&st.backend_bytes, c.backend_bytes),
            ] {
                if n > 0 {
                    st.add(counter, n);
                }
            }
            *c = LocalCounts::default();
        }
        for per_listener in &mut self.traffic {
            for (shared, counts) in per_listener.iter_mut() {
                if *counts == [0; 4] {
                    continue;
                }
                let [td, tb, fd, fb] = *counts;
                shared.to_backend_datagrams.fetch_add(td, Ordering::Relaxed);
                shared.to_backend_bytes.fetch_add(tb, Ordering::Relaxed);
                shared
                    .from_backend_datagrams
                    .fetch_add(fd, Ordering::Relaxed);
                shared.from_backend_bytes.fetch_add(fb, Ordering::Relaxed);
                *counts = [0; 4];
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        let limits = (
            self.limits.capacity.load(Ordering::Relaxed),
            self.limits.idle_secs.load(Ordering::Relaxed),
        );
        if limits != self.applied_limits {
            self.ups.set_limits(limits.0.max(1), limits.1);
            self.applied_limits = limits;
        }
        let registry = self.poll.registry();
        let mut closed = 0u64;
        let mut per_listener = vec![0u64; self.listeners.len()];
        self.ups.sweep(now, 4096, |mut u: Upstream| {
            let _ = registry.deregister(&mut u.socket);
            closed += 1;
            per_listener[usize::from(u.key.listener)] += 1;
        });
        for (l, n) in self.listeners.iter().zip(per_listener) {
            if n > 0 {
                l.stats.add(&l.stats.upstreams_expired, n);
                l.stats
                    .upstreams_open
                    .fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if self.id == 0 {
            for l in &self.listeners {
                lock(&l.router).sweep(now, 4096);
            }
        }
    }

    /// Reads client datagrams from listener `li` in batches; true when drained.
    fn read_clients(&mut self, li: usize) -> bool {
        let Some(rx) = self.rx.take() else {
            return true;
        };
        let mut rx = rx;
        let fd = self.sockets[li].as_raw_fd();
        let mut drained = false;
        let mut budget = BUDGET;
        while budget > 0 {
            let (n, more) = match rx.next(fd) {
                Recv::Datagrams { n, more } => (n, more),
                Recv::Empty => {
                    drained = true;
                    break;
                }
                Recv::Error(e) => {
                    // ICMP errors surface here on some kernels; keep reading.
                    debug!(error = %e, "listener recv error");
                    budget = budget.saturating_sub(1);
                    continue;
                }
            };
            budget = budget.saturating_sub(n.max(1));
            self.on_client_batch(li, &rx, n);
            if !more {
                drained = true;
                break;
            }
        }
        self.rx = Some(rx);
        drained
    }

    /// Routes a batch under one lock, then forwards outside it.
    fn on_client_batch(&mut self, li: usize, rx: &RecvBatch, n: usize) {
        let l = self.listeners[li].clone();
        let now = Instant::now();
        self.parts.clear();
        self.verdicts.clear();
        let mut bytes = 0u64;
        let mut oversized = 0u64;
        {
            let mut r = lock(&l.router);
            if r.binding_count() + r.flow_count() >= WARM_FROM_ENTRIES {
                r.warm((0..n).filter_map(|i| match rx.get(i) {
                    Received::Datagram(from, d) => Some((from, d)),
                    Received::Truncated => None,
                }));
            }
            for i in 0..n {
                let v = match rx.get(i) {
                    Received::Datagram(from, d) => {
                        bytes += d.len() as u64;
                        let v = r.route(now, from, d);
                        if v == Verdict::Split {
                            self.parts.extend(r.split_parts().iter().map(|p| (i, *p)));
                        }
                        v
                    }
                    Received::Truncated => {
                        oversized += 1;
                        Verdict::Drop(cidlb_core::DropReason::LengthOverrun)
                    }
                };
                self.verdicts.push(v);
            }
        }
        l.stats.add(&l.stats.client_datagrams, n as u64);
        l.stats.add(&l.stats.client_bytes, bytes);
        if oversized > 0 {
            l.stats.add(&l.stats.oversized_datagrams, oversized);
        }
        let verdicts = std::mem::take(&mut self.verdicts);
        // Sends grouped by backend (a client's datagrams keep their order: the index
        // is part of the key): a backend on this host is woken once per group instead
        // of once per datagram, which the sender pays for on loopback.
        let mut order = [(0u16, 0u8); RX_BATCH];
        for (i, (o, v)) in order.iter_mut().zip(&verdicts).enumerate() {
            let backend = match v {
                Verdict::Forward { backend, .. } => backend.0,
                _ => u16::MAX,
            };
            *o = (backend, i as u8);
        }
        let order = &mut order[..verdicts.len()];
        order.sort_unstable();
        for &(_, i) in order.iter() {
            let i = usize::from(i);
            let v = &verdicts[i];
            let Received::Datagram(client, data) = rx.get(i) else {
                continue;
            };
            match *v {
                Verdict::Forward { backend, .. } => self.forward(li, client, backend, data, now),
                Verdict::Split => self.forward_split(li, i, client, data, now),
                Verdict::Drop(_) => {}
            }
        }
        self.verdicts = verdicts;
    }

    /// One datagram per backend, each the concatenation of that backend's records.
    fn forward_split(
        &mut self,
        li: usize,
        i: usize,
        client: SocketAddr,
        data: &[u8],
        now: Instant,
    ) {
        let parts = std::mem::take(&mut self.parts);
        let mut done: Vec<BackendId> = Vec::with_capacity(4);
        for (_, p) in parts.iter().filter(|(j, _)| *j == i) {
            if done.contains(&p.backend) {
                continue;
            }
            done.push(p.backend);
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            for (_, q) in parts
                .iter()
                .filter(|(j, q)| *j == i && q.backend == p.backend)
            {
                scratch.extend_from_slice(&data[q.start..q.end]);
            }
            self.forward(li, client, p.backend, &scratch, now);
            self.scratch = scratch;
        }
        self.parts = parts;
    }

    fn flush_replies(&mut self) {
        for (li, tx) in self.tx.iter_mut().enumerate() {
            if tx.is_empty() {
                continue;
            }
            let (sent, failed) = tx.flush(self.sockets[li].as_raw_fd());
            let l = &self.listeners[li];
            l.stats.add(&l.stats.reply_datagrams, sent as u64);
            if failed > 0 {
                l.stats.add(&l.stats.reply_send_errors, failed as u64);
            }
        }
    }

    fn forward(
        &mut self,
        li: usize,
        client: SocketAddr,
        backend: BackendId,
        data: &[u8],
        now: Instant,
    ) {
        let key = UpKey {
            listener: li as u16,
            backend,
            client: FlowKey::from(client),
        };
        let slot = match self.ups.get(&key, now) {
            Some(s) => s,
            None => match self.open(li, key, client, now) {
                Some(s) => s,
                None => return,
            },
        };
        let Some(up) = self.ups.slab.get(slot) else {
            return;
        };
        let l = &self.listeners[li];
        match up.socket.send(data) {
            Ok(_) => {
                let n = data.len() as u64;
                let c = &mut self.local[li];
                c.upstream_datagrams += 1;
                c.upstream_bytes += n;
                let t = self.traffic(li, backend);
                t[0] += 1;
                t[1] += n;
            }
            Err(e) => {
                l.stats.add(&l.stats.upstream_send_errors, 1);
                debug!(backend = backend.0, error = %e, "send to backend failed");
            }
        }
    }

    fn open(&mut self, li: usize, key: UpKey, client: SocketAddr, now: Instant) -> Option<usize> {
        let l = self.listeners[li].clone();
        let addr = lock(&l.router).backend(key.backend)?.addr;
        let sock = match sys::upstream_socket(l.upstream_source, addr) {
            Ok(s) => s,
            Err(e) => {
                l.stats.add(&l.stats.upstream_open_errors, 1);
                // One line per second at most: an fd exhaustion must not flood the log.
                if self
                    .last_open_error
                    .is_none_or(|t| now.duration_since(t) > Duration::from_secs(1))
                {
                    warn!(listener = %l.name, backend = %addr, error = %e,
                        "cannot open an upstream socket; datagram dropped (see upstream_open_errors)");
                    self.last_open_error = Some(now);
                }
                return None;
            }
        };
        let up = Upstream {
            key,
            client,
            socket: mio::net::UdpSocket::from_std(sock),
        };
        let (slot, gone) = self.ups.insert(up, now);
        if let Some((mut old, live)) = gone {
            let _ = self.poll.registry().deregister(&mut old.socket);
            let ol = &self.listeners[usize::from(old.key.listener)];
            ol.stats.add(
                if live {
                    &ol.stats.upstreams_evicted
                } else {
                    &ol.stats.upstreams_expired
                },
                1,
            );
            ol.stats.upstreams_open.fetch_sub(1, Ordering::Relaxed);
        }
        let up = self.ups.slab.get_mut(slot)?;
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut up.socket, Token(slot), Interest::READABLE)
        {
            warn!(error = %e, "cannot register an upstream socket");
        }
        l.stats.add(&l.stats.upstreams_opened, 1);
        l.stats.add(&l.stats.upstreams_open, 1);
        Some(slot)
    }

    /// Reads backend datagrams from the upstream flow in `slot`; true when drained.
    fn read_backend(&mut self, slot: usize) -> bool {
        let Some(mut rx) = self.up_rx.take() else {
            return true;
        };
        let mut drained = false;
        let now = Instant::now();
        let mut got = false;
        let mut budget = BUDGET;
        while budget > 0 {
            let Some(up) = self.ups.slab.get(slot) else {
                drained = true; // closed meanwhile
                break;
            };
            let (li, backend, client) = (usize::from(up.key.listener), up.key.backend, up.client);
            let (n, more) = match rx.next(up.socket.as_raw_fd()) {
                Recv::Datagrams { n, more } => (n, more),
                Recv::Empty => {
                    drained = true;
                    break;
                }
                Recv::Error(e) => {
                    // ECONNREFUSED after an ICMP port unreachable from the backend.
                    let l = &self.listeners[li];
                    l.stats.add(&l.stats.upstream_send_errors, 1);
                    debug!(error = %e, "upstream recv error");
                    budget -= 1;
                    continue;
                }
            };
            got = true;
            budget = budget.saturating_sub(n.max(1));
            let l = self.listeners[li].clone();
            {
                let mut r = lock(&l.router);
                for i in 0..n {
                    if let Received::Datagram(_, data) = rx.get(i) {
                        r.handle_backend_datagram(now, backend, client, data);
                    }
                }
            }
            for i in 0..n {
                let Received::Datagram(_, data) = rx.get(i) else {
                    l.stats.add(&l.stats.oversized_datagrams, 1);
                    continue;
                };
                let len = data.len() as u64;
                let c = &mut self.local[li];
                c.backend_datagrams += 1;
                c.backend_bytes += len;
                let t = self.traffic(li, backend);
                t[2] += 1;
                t[3] += len;
                if self.tx[li].is_full() {
                    self.flush_replies();
                }
                if !self.tx[li].push(client, data) {
                    l.stats.add(&l.stats.reply_send_errors, 1);
                }
            }
            if !more {
                drained = true;
                break;
            }
        }
        if got {
            self.ups.touch_slot(slot, now);
        }
        self.up_rx = Some(rx);
        drained
    }
}
