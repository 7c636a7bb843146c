//! The NAT egress: one upstream socket per (listener, client address, backend),
//! connected to the backend from its own source port; what arrives on it goes back to
//! that client address from the listener's socket, after the router has looked at it
//! (this is where CID bindings are learned from ServerHellos).
//!
//! A rebound client gets a new upstream socket to the same backend: an existing path
//! is never redirected (see the crate docs).
//!
//! A transparent listener ([`UpstreamMode::Transparent`]) differs only in how the
//! socket is opened: bound to the client's own address and port (`transparent.rs`).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cidlb_core::{BackendId, FlowKey};
use mio::{Interest, Token};
use tracing::{debug, warn};

use crate::sys::{Received, Recv, RecvBatch};
use crate::upstream::{UpKey, Upstream, Upstreams};
use crate::worker::{Egress, Shared, BUDGET, RX_SLOT};
use crate::{sys, NatListener, UpstreamLimits, UpstreamMode};

/// Datagrams per `recvmmsg` on an upstream socket (one client's replies).
const UP_RX_BATCH: usize = 8;

/// One worker's NAT egress.
pub(crate) struct NatEgress {
    ups: Upstreams,
    up_rx: Option<RecvBatch>,
    last_open_error: Option<Instant>,
    /// Upstream-flow bounds shared with the control plane, and the values applied.
    limits: Arc<UpstreamLimits>,
    applied_limits: (usize, u32),
}

impl NatEgress {
    pub fn new(
        worker: usize,
        listeners: &[Arc<NatListener>],
        limits: Arc<UpstreamLimits>,
    ) -> NatEgress {
        let seed = listeners
            .last()
            .map_or([0; 4], |l| l.router().config().secret);
        // This worker's share of the listeners' flows (see `upstream_limits`).
        let capacity = limits.capacity.load(Ordering::Relaxed);
        let idle = limits.idle_secs.load(Ordering::Relaxed);
        NatEgress {
            ups: Upstreams::new(
                capacity.max(1),
                idle,
                [seed[0] ^ worker as u64, seed[1], seed[2], seed[3] ^ 0xabcd],
                Instant::now(),
            ),
            up_rx: Some(RecvBatch::new(UP_RX_BATCH, RX_SLOT)),
            last_open_error: None,
            limits,
            applied_limits: (capacity, idle),
        }
    }

    /// Opens the upstream flow for `key`; `None` when no socket can be had (counted).
    fn open(
        &mut self,
        w: &mut Shared,
        li: usize,
        key: UpKey,
        client: SocketAddr,
        now: Instant,
    ) -> Option<usize> {
        let l = w.listeners[li].clone();
        let addr = l.router().backend(key.backend)?.addr;
        let opened = match l.upstream {
            UpstreamMode::Nat => {
                sys::upstream_socket(l.upstream_source, addr).map_err(|e| (false, e))
            }
            UpstreamMode::Transparent { .. } => {
                sys::transparent_socket(client, addr).map_err(|e| (e.source_refused, e.error))
            }
        };
        let sock = match opened {
            Ok(s) => s,
            Err((source_refused, e)) => {
                let (counter, what) = if source_refused {
                    (&l.stats.transparent_bind_errors, "transparent_bind_errors")
                } else {
                    (&l.stats.upstream_open_errors, "upstream_open_errors")
                };
                l.stats.add(counter, 1);
                // One line per second at most: an fd exhaustion must not flood the log.
                if self
                    .last_open_error
                    .is_none_or(|t| now.duration_since(t) > Duration::from_secs(1))
                {
                    warn!(listener = %l.name, %client, backend = %addr, error = %e,
                        "cannot open an upstream socket; datagram dropped (see {what})");
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
            let _ = w.registry().deregister(&mut old.socket);
            let ol = &w.listeners[usize::from(old.key.listener)];
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
        if let Err(e) = w
            .registry()
            .register(&mut up.socket, Token(slot), Interest::READABLE)
        {
            warn!(error = %e, "cannot register an upstream socket");
        }
        l.stats.add(&l.stats.upstreams_opened, 1);
        l.stats.add(&l.stats.upstreams_open, 1);
        Some(slot)
    }
}

impl Egress for NatEgress {
    fn forward(
        &mut self,
        w: &mut Shared,
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
            None => match self.open(w, li, key, client, now) {
                Some(s) => s,
                None => return,
            },
        };
        let Some(up) = self.ups.slab.get(slot) else {
            return;
        };
        match up.socket.send(data) {
            Ok(_) => w.sent_to_backend(li, backend, data.len()),
            Err(e) => {
                let l = &w.listeners[li];
                l.stats.add(&l.stats.upstream_send_errors, 1);
                debug!(backend = backend.0, error = %e, "send to backend failed");
            }
        }
    }

    /// Reads backend datagrams from the upstream flow in slot `token`; true when
    /// drained.
    fn service(&mut self, w: &mut Shared, token: Token) -> bool {
        let slot = token.0;
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
                    let l = &w.listeners[li];
                    l.stats.add(&l.stats.upstream_send_errors, 1);
                    debug!(error = %e, "upstream recv error");
                    budget -= 1;
                    continue;
                }
            };
            got = true;
            budget = budget.saturating_sub(n.max(1));
            let l = w.listeners[li].clone();
            {
                // The return path: learn CIDs from ServerHellos, refresh the flow.
                let mut r = l.router();
                for i in 0..n {
                    if let Received::Datagram(_, data) = rx.get(i) {
                        r.handle_backend_datagram(now, backend, client, data);
                    }
                }
                w.take_notices(li, &mut r, now);
            }
            w.log_notices(li);
            for i in 0..n {
                match rx.get(i) {
                    Received::Datagram(_, data) => w.reply(li, backend, client, data),
                    Received::Truncated => l.stats.add(&l.stats.oversized_datagrams, 1),
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

    fn sweep(&mut self, w: &mut Shared, now: Instant) {
        let limits = (
            self.limits.capacity.load(Ordering::Relaxed),
            self.limits.idle_secs.load(Ordering::Relaxed),
        );
        if limits != self.applied_limits {
            self.ups.set_limits(limits.0.max(1), limits.1);
            self.applied_limits = limits;
        }
        let registry = w.registry();
        let mut per_listener = vec![0u64; w.listeners.len()];
        self.ups.sweep(now, 4096, |mut u: Upstream| {
            let _ = registry.deregister(&mut u.socket);
            per_listener[usize::from(u.key.listener)] += 1;
        });
        for (l, n) in w.listeners.iter().zip(per_listener) {
            if n > 0 {
                l.stats.add(&l.stats.upstreams_expired, n);
                l.stats.upstreams_open.fetch_sub(n, Ordering::Relaxed);
            }
        }
    }
}
