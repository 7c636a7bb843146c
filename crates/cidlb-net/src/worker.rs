//! One worker thread of a userspace plane: what every userspace egress shares.
//!
//! The loop polls the worker's listener sockets and its egress's sockets (one mio
//! poll), reads client datagrams in batches (`recvmmsg`), routes each batch under one
//! lock of the listener's router, hands every forwarded datagram (or split part) to the
//! [`Egress`] grouped by backend, queues replies to clients for one `sendmmsg` per
//! round from the listener socket, and publishes its counters once per round.
//!
//! An [`Egress`] sends to backends and reads what they answer: `nat.rs` (one connected
//! upstream socket per client address and backend) is one; another userspace egress
//! (transparent NAT) is another implementation, not a copy of this loop.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cidlb_core::{BackendId, Notice, Router, SplitPart, Verdict};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use tracing::{debug, info, warn};

use crate::stats::BackendTraffic;
use crate::sys::{Received, Recv, RecvBatch, SendBatch};
use crate::{NatListener, SWEEP_EVERY};

const WAKER: Token = Token(usize::MAX);
/// Tokens from here on are listener sockets; the egress owns the tokens below.
pub(crate) const LISTENER_BASE: usize = usize::MAX / 2;
/// Datagrams read from one socket before others get a turn.
pub(crate) const BUDGET: usize = 64;
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
pub(crate) const RX_SLOT: usize = 17 * 1024;
/// Replies per `sendmmsg`.
const TX_BATCH: usize = 32;

/// Sends routed datagrams to backends and reads their answers (see the module docs).
pub(crate) trait Egress {
    /// Sends `data`, a datagram (or the records of a split part) from `client`, to
    /// `backend` of listener `li`, counting it in `w` when it leaves.
    fn forward(
        &mut self,
        w: &mut Shared,
        li: usize,
        client: SocketAddr,
        backend: BackendId,
        data: &[u8],
        now: Instant,
    );
    /// Serves a readiness event on one of the egress's own tokens (below
    /// [`LISTENER_BASE`]); true when that socket is drained.
    fn service(&mut self, w: &mut Shared, token: Token) -> bool;
    /// Periodic upkeep (expiring idle upstream state), every [`SWEEP_EVERY`].
    fn sweep(&mut self, w: &mut Shared, now: Instant);
}

/// Datagram counts of one loop round, per listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct LocalCounts {
    upstream_datagrams: u64,
    upstream_bytes: u64,
    backend_datagrams: u64,
    backend_bytes: u64,
}

/// The part of a worker that its egress may use: the poll registry, the listeners and
/// their sockets, the reply queues and the counters.
pub(crate) struct Shared {
    pub id: usize,
    poll: Poll,
    pub listeners: Vec<Arc<NatListener>>,
    sockets: Vec<mio::net::UdpSocket>,
    /// Replies queued per listener, flushed with one sendmmsg per round.
    tx: Vec<SendBatch>,
    /// Per listener, the per-backend traffic counters seen so far (by backend id),
    /// each with this worker's counts not yet published.
    traffic: Vec<Vec<(Arc<BackendTraffic>, [u64; 4])>>,
    /// Per listener, datagram counts not yet published (see [`Shared::publish`]).
    local: Vec<LocalCounts>,
    /// Notices taken from a router, with the backend's name, waiting to be logged.
    notices: Vec<(Notice, String)>,
    /// Reused buffer for taking notices.
    scratch_notices: Vec<Notice>,
    /// Per listener, this worker's event-log budget: (start of the current second,
    /// lines written in it).
    log_budget: Vec<(Instant, u32)>,
    workers: usize,
}

impl Shared {
    /// Takes the router's notices (under its lock, as `r`) for logging: each that this
    /// worker's share of the listener's `notices` budget per second allows keeps the
    /// backend's name; the rest are counted as suppressed.
    pub fn take_notices(&mut self, li: usize, r: &mut Router, now: Instant) {
        let rate = r.config().notices;
        let mut taken = std::mem::take(&mut self.scratch_notices);
        let dropped = r.take_notices(&mut taken);
        let mut suppressed = dropped;
        if !taken.is_empty() {
            // Each worker gets its share of the listener's budget.
            let share = rate.div_ceil(self.workers.max(1) as u32);
            let (start, used) = &mut self.log_budget[li];
            if now.saturating_duration_since(*start) >= Duration::from_secs(1) {
                *start = now;
                *used = 0;
            }
            for n in taken.drain(..) {
                if *used < share {
                    *used += 1;
                    let name = r
                        .backend(n.backend())
                        .map_or_else(|| format!("#{}", n.backend().0), |b| b.name.clone());
                    self.notices.push((n, name));
                } else {
                    suppressed += 1;
                }
            }
        }
        self.scratch_notices = taken;
        if suppressed > 0 {
            let l = &self.listeners[li];
            l.stats.add(&l.stats.event_logs_suppressed, suppressed);
        }
    }

    /// Writes the notices taken so far (outside every lock): one structured line each,
    /// target `cidlb::event`.
    pub fn log_notices(&mut self, li: usize) {
        if self.notices.is_empty() {
            return;
        }
        let listener = &self.listeners[li].name;
        for (n, backend) in self.notices.drain(..) {
            let cid = n.cid().map(hex);
            let client = n.client();
            info!(
                target: "cidlb::event",
                event = n.name(),
                listener = %listener,
                backend = %backend,
                client = client.map(tracing::field::display),
                cid = cid.as_deref(),
                "{}",
                describe(&n)
            );
        }
    }

    /// The registry the egress registers its sockets with (tokens below
    /// [`LISTENER_BASE`]).
    pub fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// Counts one datagram of `len` bytes sent to `backend` of listener `li`.
    pub fn sent_to_backend(&mut self, li: usize, backend: BackendId, len: usize) {
        let n = len as u64;
        let c = &mut self.local[li];
        c.upstream_datagrams += 1;
        c.upstream_bytes += n;
        let t = self.traffic(li, backend);
        t[0] += 1;
        t[1] += n;
    }

    /// Queues `data` from `backend` as a reply to `client` from listener `li`'s socket
    /// (flushing the queue when full), counting it.
    pub fn reply(&mut self, li: usize, backend: BackendId, client: SocketAddr, data: &[u8]) {
        let n = data.len() as u64;
        let c = &mut self.local[li];
        c.backend_datagrams += 1;
        c.backend_bytes += n;
        let t = self.traffic(li, backend);
        t[2] += 1;
        t[3] += n;
        if self.tx[li].is_full() {
            self.flush_replies();
        }
        if !self.tx[li].push(client, data) {
            let l = &self.listeners[li];
            l.stats.add(&l.stats.reply_send_errors, 1);
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

    /// Sends the queued replies, one `sendmmsg` per listener.
    pub fn flush_replies(&mut self) {
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
}

/// Lowercase hex of a CID.
fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// The message of a notice's log line.
fn describe(n: &Notice) -> &'static str {
    match n {
        Notice::NewSession { .. } => {
            "new session: a handshake from a new address, backend chosen by Maglev"
        }
        Notice::CidLearned { .. } => "CID learned from the backend's ServerHello",
        Notice::CidSeeded { .. } => "CID seeded from the flow it first appeared on",
        Notice::CidNewAddress { .. } => {
            "known CID from a new address (NAT rebinding, or a replay the backend will reject)"
        }
        Notice::FlowEvicted { .. } => "flow evicted: the flow table is full",
        Notice::BindingEvicted { .. } => "CID binding evicted: the binding table is full",
    }
}

/// A worker: the shared loop around an egress `E`.
pub(crate) struct Worker<E: Egress> {
    w: Shared,
    egress: E,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    scratch: Vec<u8>,
    /// Split plans of the current batch: (datagram index in the batch, part).
    parts: Vec<(usize, SplitPart)>,
    /// Verdicts of the current batch.
    verdicts: Vec<Verdict>,
    rx: Option<RecvBatch>,
    /// Sockets whose budget ran out before they were drained (edge-triggered epoll
    /// will not tell us again).
    pending: VecDeque<Token>,
}

impl<E: Egress> Worker<E> {
    pub fn new(
        id: usize,
        workers: usize,
        listeners: Vec<Arc<NatListener>>,
        sockets: Vec<std::net::UdpSocket>,
        stop: Arc<AtomicBool>,
        egress: E,
    ) -> std::io::Result<Worker<E>> {
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
        Ok(Worker {
            w: Shared {
                id,
                poll,
                listeners,
                sockets: socks,
                tx: (0..n_listeners)
                    .map(|_| SendBatch::new(TX_BATCH, RX_SLOT))
                    .collect(),
                traffic: vec![Vec::new(); n_listeners],
                local: vec![LocalCounts::default(); n_listeners],
                notices: Vec::new(),
                scratch_notices: Vec::new(),
                log_budget: vec![(Instant::now(), 0); n_listeners],
                workers,
            },
            egress,
            waker,
            stop,
            scratch: Vec::with_capacity(RX_SLOT),
            parts: Vec::with_capacity(cidlb_core::MAX_SPLIT_RECORDS * RX_BATCH),
            verdicts: Vec::with_capacity(RX_BATCH),
            rx: Some(RecvBatch::new(RX_BATCH, RX_SLOT)),
            pending: VecDeque::new(),
        })
    }

    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        let id = self.w.id;
        debug!(worker = id, "worker started");
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let timeout = if self.pending.is_empty() {
                next_sweep.saturating_duration_since(now)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.w.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    warn!(worker = id, error = %e, "poll failed");
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
            self.w.flush_replies();
            self.w.publish();
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_EVERY;
            }
        }
        self.w.flush_replies();
        self.w.publish();
        debug!(worker = id, "worker stopped");
    }

    fn service(&mut self, t: Token) {
        let drained = match t {
            WAKER => true,
            Token(i) if i >= LISTENER_BASE => self.read_clients(i - LISTENER_BASE),
            t => self.egress.service(&mut self.w, t),
        };
        if !drained && !self.pending.contains(&t) {
            self.pending.push_back(t);
        }
    }

    fn sweep(&mut self, now: Instant) {
        self.egress.sweep(&mut self.w, now);
        if self.w.id == 0 {
            for l in &self.w.listeners {
                l.router().sweep(now, 4096);
            }
        }
    }

    /// Reads client datagrams from listener `li` in batches; true when drained.
    fn read_clients(&mut self, li: usize) -> bool {
        let Some(mut rx) = self.rx.take() else {
            return true;
        };
        let fd = self.w.sockets[li].as_raw_fd();
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
        let l = self.w.listeners[li].clone();
        let now = Instant::now();
        self.parts.clear();
        self.verdicts.clear();
        let mut bytes = 0u64;
        let mut oversized = 0u64;
        {
            let mut r = l.router();
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
            self.w.take_notices(li, &mut r, now);
        }
        self.w.log_notices(li);
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
            let Received::Datagram(client, data) = rx.get(i) else {
                continue;
            };
            match verdicts[i] {
                Verdict::Forward { backend, .. } => {
                    self.egress
                        .forward(&mut self.w, li, client, backend, data, now)
                }
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
            self.egress
                .forward(&mut self.w, li, client, p.backend, &scratch, now);
            self.scratch = scratch;
        }
        self.parts = parts;
    }
}
