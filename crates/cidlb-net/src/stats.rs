//! Data-plane counters (the router counts routing outcomes; these count sockets).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use cidlb_core::plane::{StatInfo, StatKind};
use cidlb_core::BackendId;

/// Declares each counter once: its doc comment is its help text, its kind says counter
/// or gauge; the struct of atomics, its plain copy and the list of [`StatInfo`] all
/// come from that one declaration.
macro_rules! stats {
    ($( $(#[doc = $doc:literal])+ $name:ident : $kind:ident ),* $(,)?) => {
        /// Per-listener data-plane counters, updated by every worker.
        #[derive(Debug, Default)]
        pub struct ListenerStats {
            $( $(#[doc = $doc])+ pub $name: AtomicU64, )*
        }

        /// A plain copy of [`ListenerStats`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct StatsSnapshot {
            $( $(#[doc = $doc])+ pub $name: u64, )*
        }

        /// What each of the NAT plane's counters is, in declaration order.
        pub const NAT_STATS: &[StatInfo] = &[
            $( StatInfo { name: stringify!($name), help: concat!($($doc),+).trim_ascii(), kind: StatKind::$kind }, )*
        ];

        impl ListenerStats {
            /// Reads every counter.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $( $name: self.$name.load(Relaxed), )* }
            }
        }

        impl StatsSnapshot {
            /// Every counter with what it is, in declaration order ([`NAT_STATS`]).
            pub fn samples(&self) -> Vec<(StatInfo, u64)> {
                NAT_STATS.iter().copied().zip([ $( self.$name, )* ]).collect()
            }
        }
    };
}

stats! {
    /// Datagrams received from clients.
    client_datagrams: Counter,
    /// Bytes received from clients.
    client_bytes: Counter,
    /// Client datagrams larger than the receive slot (17 KiB), dropped.
    oversized_datagrams: Counter,
    /// Datagrams sent to backends.
    upstream_datagrams: Counter,
    /// Bytes sent to backends.
    upstream_bytes: Counter,
    /// Sends to a backend that failed (buffer full, ICMP unreachable...).
    upstream_send_errors: Counter,
    /// Datagrams received from backends.
    backend_datagrams: Counter,
    /// Bytes received from backends.
    backend_bytes: Counter,
    /// Datagrams sent back to clients.
    reply_datagrams: Counter,
    /// Sends to a client that failed.
    reply_send_errors: Counter,
    /// Upstream flows (sockets) opened.
    upstreams_opened: Counter,
    /// Upstream flows closed after their idle timeout.
    upstreams_expired: Counter,
    /// Upstream flows closed to make room (table full).
    upstreams_evicted: Counter,
    /// Upstream sockets that could not be opened (e.g. out of file descriptors).
    upstream_open_errors: Counter,
    /// Transparent mode: upstream sockets that could not take the client's address:port as their source (in use on this host, e.g. by a client on the balancer itself or a wildcard bind of that port); datagram dropped.
    transparent_bind_errors: Counter,
    /// Upstream flows open now.
    upstreams_open: Gauge,
    /// Event log lines (new sessions, CIDs learned or seeded, rebindings, evictions) not
    /// written because the listener's `log.events_per_second` was spent.
    event_logs_suppressed: Counter,
}

impl ListenerStats {
    pub(crate) fn add(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
}

/// Datagrams and bytes between the balancer and one backend, in each direction.
#[derive(Debug, Default)]
pub struct BackendTraffic {
    /// Datagrams sent to the backend.
    pub to_backend_datagrams: AtomicU64,
    /// Bytes sent to the backend.
    pub to_backend_bytes: AtomicU64,
    /// Datagrams received from the backend.
    pub from_backend_datagrams: AtomicU64,
    /// Bytes received from the backend.
    pub from_backend_bytes: AtomicU64,
}

/// A plain copy of [`BackendTraffic`]: the data-plane interface's
/// [`Traffic`](cidlb_core::plane::Traffic).
pub type TrafficSnapshot = cidlb_core::plane::Traffic;

impl BackendTraffic {
    /// Reads the counters.
    pub fn snapshot(&self) -> TrafficSnapshot {
        TrafficSnapshot {
            to_backend_datagrams: self.to_backend_datagrams.load(Relaxed),
            to_backend_bytes: self.to_backend_bytes.load(Relaxed),
            from_backend_datagrams: self.from_backend_datagrams.load(Relaxed),
            from_backend_bytes: self.from_backend_bytes.load(Relaxed),
        }
    }
}

/// One listener's per-backend traffic counters, indexed by [`BackendId`]. It grows on
/// demand (a reload that adds backends needs nothing more); an id's counters are never
/// replaced, so workers may cache them.
#[derive(Debug, Default)]
pub struct TrafficTable {
    slots: std::sync::RwLock<Vec<std::sync::Arc<BackendTraffic>>>,
}

impl TrafficTable {
    /// The counters of backend `id`, created if needed.
    pub fn get(&self, id: BackendId) -> std::sync::Arc<BackendTraffic> {
        let i = usize::from(id.0);
        if let Some(t) = self.slots.read().unwrap_or_else(|p| p.into_inner()).get(i) {
            return t.clone();
        }
        let mut w = self.slots.write().unwrap_or_else(|p| p.into_inner());
        while w.len() <= i {
            w.push(std::sync::Arc::default());
        }
        w[i].clone()
    }

    /// A copy of backend `id`'s counters (zero if it never had traffic).
    pub fn snapshot(&self, id: BackendId) -> TrafficSnapshot {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(usize::from(id.0))
            .map(|t| t.snapshot())
            .unwrap_or_default()
    }
}
