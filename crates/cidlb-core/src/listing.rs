//! Listings of a router's tables (`GET /flows`, `GET /bindings`): filters, entries and
//! pages, bounded in work per request. Planes return them through
//! [`crate::plane::ListenerPlane::flows`] and `bindings`.

use std::net::{IpAddr, SocketAddr};

use crate::backend::BackendId;
use crate::keys::{BindingSource, CidKey};

/// Which flows a listing shows (every field that is set must match).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowFilter {
    /// Flows to this backend.
    pub backend: Option<BackendId>,
    /// Flows of this client IP (IPv4-mapped IPv6 matches IPv4).
    pub ip: Option<IpAddr>,
    /// Flows from this client port (with `ip`: one address).
    pub port: Option<u16>,
}

/// Which CID bindings a listing shows (every field that is set must match).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BindingFilter {
    /// Bindings to this backend.
    pub backend: Option<BackendId>,
    /// Bindings whose CID starts with these octets.
    pub cid_prefix: Vec<u8>,
    /// Learned or seeded bindings only.
    pub source: Option<BindingSource>,
}

/// One flow in a listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowEntry {
    /// The client's address.
    pub client: SocketAddr,
    /// Its backend.
    pub backend: BackendId,
    /// Seconds since it was last used.
    pub idle_secs: u32,
}

/// One CID binding in a listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindingEntry {
    /// The CID.
    pub cid: CidKey,
    /// Its backend.
    pub backend: BackendId,
    /// Learned or seeded.
    pub source: BindingSource,
    /// Seconds since it was last used.
    pub idle_secs: u32,
}

/// The most entries one listing returns.
pub const MAX_PAGE: usize = 1000;
/// The most table entries one listing looks at (its work is bounded whatever the
/// filter; a listing that stops there gives a cursor to go on from).
pub const MAX_SCAN: usize = 65_536;

/// One page of a listing: the entries, and where the next page starts (`None`: the
/// table was walked to its end). A table walk sees no consistent snapshot: entries
/// created or removed between pages may be missed or shown twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The matching entries.
    pub items: Vec<T>,
    /// Where the next page starts.
    pub next: Option<u64>,
    /// Table entries looked at for this page.
    pub scanned: usize,
}

impl<T> Default for Page<T> {
    fn default() -> Self {
        Page {
            items: Vec::new(),
            next: None,
            scanned: 0,
        }
    }
}
