//! Data-plane counters (the router counts routing outcomes; these count sockets).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use cidlb_core::BackendId;

macro_rules! stats {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Per-listener data-plane counters, updated by every worker.
        #[derive(Debug, Default)]
        pub struct ListenerStats {
            $( $(#[$doc])* pub $name: AtomicU64, )*
        }

        /// A plain copy of [`ListenerStats`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct StatsSnapshot {
            $( $(#[$doc])* pub $name: u64, )*
        }

        impl ListenerStats {
            /// Reads every counter.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $( $name: self.$name.load(Relaxed), )* }
            }
        }

        impl StatsSnapshot {
            /// `(name, value)` pairs, for metrics export.
            pub fn pairs(&self) -> Vec<(&'static str, u64)> {
                vec![ $( (stringify!($name), self.$name), )* ]
            }
        }
    };
}

stats! {
    /// Datagrams received from clients.
    client_datagrams,
    /// Bytes received from clients.
    client_bytes,
    /// Client datagrams larger than the receive slot (17 KiB), dropped.
    oversized_datagrams,
    /// Datagrams sent to backends.
    upstream_datagrams,
    /// Bytes sent to backends.
    upstream_bytes,
    /// Sends to a backend that failed (buffer full, ICMP unreachable...).
    upstream_send_errors,
    /// Datagrams received from backends.
    backend_datagrams,
    /// Bytes received from backends.
    backend_bytes,
    /// Datagrams sent back to clients.
    reply_datagrams,
    /// Sends to a client that failed.
    reply_send_errors,
    /// Upstream flows (sockets) opened.
    upstreams_opened,
    /// Upstream flows closed after their idle timeout.
    upstreams_expired,
    /// Upstream flows closed to make room (table full).
    upstreams_evicted,
    /// Upstream sockets that could not be opened (e.g. out of file descriptors).
    upstream_open_errors,
    /// Upstream flows open now.
    upstreams_open,
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

/// A plain copy of [`BackendTraffic`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficSnapshot {
    /// Datagrams sent to the backend.
    pub to_backend_datagrams: u64,
    /// Bytes sent to the backend.
    pub to_backend_bytes: u64,
    /// Datagrams received from the backend.
    pub from_backend_datagrams: u64,
    /// Bytes received from the backend.
    pub from_backend_bytes: u64,
}

impl TrafficSnapshot {
    /// `self - base`, field by field (saturating): counts since `base` was taken.
    pub fn since(&self, base: &TrafficSnapshot) -> TrafficSnapshot {
        TrafficSnapshot {
            to_backend_datagrams: self
                .to_backend_datagrams
                .saturating_sub(base.to_backend_datagrams),
            to_backend_bytes: self.to_backend_bytes.saturating_sub(base.to_backend_bytes),
            from_backend_datagrams: self
                .from_backend_datagrams
                .saturating_sub(base.from_backend_datagrams),
            from_backend_bytes: self
                .from_backend_bytes
                .saturating_sub(base.from_backend_bytes),
        }
    }
}

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
