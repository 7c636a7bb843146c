//! The keys and values of the router's two tables.

use std::net::{IpAddr, SocketAddr};

use cidlb_wire::MAX_CID_LEN;

use crate::backend::BackendId;

/// A client's transport address, compact (IPv4 as IPv4-mapped IPv6).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct FlowKey {
    ip: [u8; 16],
    port: u16,
}

impl From<SocketAddr> for FlowKey {
    fn from(a: SocketAddr) -> Self {
        let ip = match a.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        FlowKey { ip, port: a.port() }
    }
}

impl FlowKey {
    /// The address back as a `SocketAddr` (IPv4-mapped addresses become IPv4).
    pub fn addr(&self) -> SocketAddr {
        let v6 = std::net::Ipv6Addr::from(self.ip);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        };
        SocketAddr::new(ip, self.port)
    }

    /// The source the per-source new-flow limit counts against: the IPv4 address
    /// (/32), or the IPv6 address's /64 prefix (one host or subscriber usually has a
    /// whole /64).
    pub(crate) fn source(&self) -> SourceKey {
        let mut b = [0u8; 9];
        if let Some(v4) = std::net::Ipv6Addr::from(self.ip).to_ipv4_mapped() {
            b[0] = 4;
            b[1..5].copy_from_slice(&v4.octets());
        } else {
            b[0] = 6;
            b[1..].copy_from_slice(&self.ip[..8]);
        }
        SourceKey(b)
    }

    /// The 18 bytes the Maglev hash of a new flow is computed over.
    pub(crate) fn hash_input(&self) -> [u8; 18] {
        let mut b = [0u8; 18];
        b[..16].copy_from_slice(&self.ip);
        b[16..].copy_from_slice(&self.port.to_be_bytes());
        b
    }
}

/// A client address's affinity to a backend.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Flow {
    /// The backend this address's CID-less datagrams go to.
    pub backend: BackendId,
    /// How many bindings this flow has seeded (bounded per flow).
    pub(crate) seeds: u8,
}

/// A source of new flows: address family, then the IPv4 address or IPv6 /64 prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SourceKey([u8; 9]);

/// A source's new-flow token bucket (whole tokens, refilled per whole second).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TokenBucket {
    tokens: u32,
    refilled: u32,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub(crate) fn full(now: u32, burst: u32) -> Self {
        TokenBucket {
            tokens: burst,
            refilled: now,
        }
    }

    /// Refills `rate` tokens per second elapsed (up to `burst`), then spends one if
    /// there is one.
    pub(crate) fn take(&mut self, now: u32, rate: u32, burst: u32) -> bool {
        let elapsed = now.saturating_sub(self.refilled);
        if elapsed > 0 {
            let add = u64::from(elapsed) * u64::from(rate);
            self.tokens = (u64::from(self.tokens) + add).min(u64::from(burst)) as u32;
            self.refilled = now;
        }
        self.tokens = self.tokens.min(burst);
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// A CID stored inline (no allocation per binding).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CidKey {
    len: u8,
    bytes: [u8; MAX_CID_LEN],
}

impl core::hash::Hash for CidKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        state.write(self.as_bytes());
    }
}

impl CidKey {
    /// `None` when longer than [`MAX_CID_LEN`].
    pub fn new(cid: &[u8]) -> Option<Self> {
        if cid.len() > MAX_CID_LEN {
            return None;
        }
        let mut bytes = [0; MAX_CID_LEN];
        bytes[..cid.len()].copy_from_slice(cid);
        Some(CidKey {
            len: cid.len() as u8,
            bytes,
        })
    }

    /// The CID.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Where a binding came from.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum BindingSource {
    /// From the backend's ServerHello: authoritative.
    Learned,
    /// From the flow a CID first appeared on: a guess that is right when the balancer
    /// missed the handshake; a learned binding replaces it, and seeded bindings can never
    /// evict learned ones.
    Seeded,
}

/// A CID's binding to the backend that issued it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Binding {
    /// The backend.
    pub backend: BackendId,
    /// Learned or seeded.
    pub source: BindingSource,
    /// Keyed tag of the client address that last used this CID: a datagram from the
    /// same address skips the flow table; another address is a rebinding to look at.
    pub(crate) addr_tag: u32,
}

impl Binding {
    /// A binding as a plane outside this crate reports it in an explanation (e.g. the
    /// XDP plane, whose maps hold their own address tags): no address tag.
    pub fn new(backend: BackendId, source: BindingSource) -> Self {
        Binding {
            backend,
            source,
            addr_tag: 0,
        }
    }
}
