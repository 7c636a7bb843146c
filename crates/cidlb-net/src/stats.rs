//! Data-plane counters (the router counts routing outcomes; these count sockets).
//!
//! Each per-listener counter is declared once, in the `stats!` list below: its doc
//! comment (which is also its metric help), its kind and its name. From that list the
//! macro makes the atomics the workers add to ([`ListenerStats`]), their plain copy
//! ([`StatsSnapshot`]) and one [`ListenerStat`] per counter, so that the metrics
//! iterate typed `(stat, value)` pairs instead of matching names.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use cidlb_core::BackendId;

/// Whether a data-plane value only grows or goes up and down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StatKind {
    /// Only grows, from the daemon's start.
    Counter,
    /// A current level (it goes up and down).
    Gauge,
}

macro_rules! stats {
    ($( $(#[doc = $doc:literal])+ $Variant:ident $field:ident: $kind:ident, )*) => {
        /// One per-listener data-plane counter: a field of [`ListenerStats`] and of
        /// [`StatsSnapshot`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ListenerStat {
            $( $(#[doc = $doc])+ $Variant, )*
        }

        impl ListenerStat {
            /// Every counter, in declaration order (the order of the metrics).
            pub const ALL: &'static [ListenerStat] = &[$( ListenerStat::$Variant, )*];

            /// The field's name (`snake_case`): the stem of the metric's name.
            pub const fn name(self) -> &'static str {
                match self {
                    $( ListenerStat::$Variant => stringify!($field), )*
                }
            }

            /// The doc comment on one line: the metric's help.
            pub const fn help(self) -> &'static str {
                match self {
                    $( ListenerStat::$Variant => concat!($($doc),+).trim_ascii(), )*
                }
            }

            /// Whether the value is a current level that goes down too (a gauge), rather
            /// than a count that only grows.
            pub const fn is_gauge(self) -> bool {
                match self {
                    $( ListenerStat::$Variant => matches!(StatKind::$kind, StatKind::Gauge), )*
                }
            }
        }

        /// Per-listener data-plane counters, updated by every worker.
        #[derive(Debug, Default)]
        pub struct ListenerStats {
            $( $(#[doc = $doc])+ pub $field: AtomicU64, )*
        }

        /// A plain copy of [`ListenerStats`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct StatsSnapshot {
            $( $(#[doc = $doc])+ pub $field: u64, )*
        }

        impl ListenerStats {
            /// Reads every counter.
            pub fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot { $( $field: self.$field.load(Relaxed), )* }
            }
        }

        impl StatsSnapshot {
            /// The value of `stat`.
            pub const fn get(&self, stat: ListenerStat) -> u64 {
                match stat {
                    $( ListenerStat::$Variant => self.$field, )*
                }
            }
        }
    };
}

stats! {
    /// Datagrams received from clients.
    ClientDatagrams client_datagrams: Counter,
    /// Bytes received from clients.
    ClientBytes client_bytes: Counter,
    /// Client datagrams larger than the receive slot (17 KiB), dropped.
    OversizedDatagrams oversized_datagrams: Counter,
    /// Datagrams sent to backends.
    UpstreamDatagrams upstream_datagrams: Counter,
    /// Bytes sent to backends.
    UpstreamBytes upstream_bytes: Counter,
    /// Sends to a backend that failed (buffer full, ICMP unreachable...).
    UpstreamSendErrors upstream_send_errors: Counter,
    /// Datagrams received from backends.
    BackendDatagrams backend_datagrams: Counter,
    /// Bytes received from backends.
    BackendBytes backend_bytes: Counter,
    /// Datagrams sent back to clients.
    ReplyDatagrams reply_datagrams: Counter,
    /// Sends to a client that failed.
    ReplySendErrors reply_send_errors: Counter,
    /// Upstream flows (sockets) opened.
    UpstreamsOpened upstreams_opened: Counter,
    /// Upstream flows closed after their idle timeout.
    UpstreamsExpired upstreams_expired: Counter,
    /// Upstream flows closed to make room (table full).
    UpstreamsEvicted upstreams_evicted: Counter,
    /// Upstream sockets that could not be opened (e.g. out of file descriptors).
    UpstreamOpenErrors upstream_open_errors: Counter,
    /// Upstream flows open now.
    UpstreamsOpen upstreams_open: Gauge,
}

impl ListenerStats {
    pub(crate) fn add(&self, c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
}

impl StatsSnapshot {
    /// Every counter, in declaration order: `ListenerStat::ALL`, reachable from here
    /// (the crate re-exports this type, not `ListenerStat`).
    pub const STATS: &'static [ListenerStat] = ListenerStat::ALL;

    /// Every counter with its value, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (ListenerStat, u64)> + '_ {
        ListenerStat::ALL.iter().map(move |&s| (s, self.get(s)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stat_has_its_own_field_name_and_help() {
        let stats = ListenerStats::default();
        // A distinct value in every field, through the workers' API.
        let fields = [
            &stats.client_datagrams,
            &stats.client_bytes,
            &stats.oversized_datagrams,
            &stats.upstream_datagrams,
            &stats.upstream_bytes,
            &stats.upstream_send_errors,
            &stats.backend_datagrams,
            &stats.backend_bytes,
            &stats.reply_datagrams,
            &stats.reply_send_errors,
            &stats.upstreams_opened,
            &stats.upstreams_expired,
            &stats.upstreams_evicted,
            &stats.upstream_open_errors,
            &stats.upstreams_open,
        ];
        assert_eq!(fields.len(), ListenerStat::ALL.len());
        for (i, f) in fields.iter().enumerate() {
            stats.add(f, i as u64 + 1);
        }
        let snap = stats.snapshot();
        let values: Vec<u64> = snap.iter().map(|(_, v)| v).collect();
        assert_eq!(values, (1..=fields.len() as u64).collect::<Vec<_>>());
        assert_eq!(snap.get(ListenerStat::UpstreamSendErrors), 6);
        assert_eq!(snap.upstream_send_errors, 6);

        let mut names = std::collections::HashSet::new();
        for s in ListenerStat::ALL {
            assert!(names.insert(s.name()), "{s:?} twice");
            let h = s.help();
            assert!(
                !h.is_empty() && !h.starts_with(' ') && h.ends_with('.'),
                "{s:?}: {h:?}"
            );
            assert!(!h.contains("  ") && !h.contains('\n'), "{s:?}: {h:?}");
        }
        assert_eq!(ListenerStat::ClientDatagrams.name(), "client_datagrams");
        assert_eq!(
            ListenerStat::UpstreamSendErrors.help(),
            "Sends to a backend that failed (buffer full, ICMP unreachable...)."
        );
        let gauges: Vec<_> = ListenerStat::ALL.iter().filter(|s| s.is_gauge()).collect();
        assert_eq!(gauges, [&ListenerStat::UpstreamsOpen]);
    }
}
