//! Data-plane counters (the router counts routing outcomes; these count sockets).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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
