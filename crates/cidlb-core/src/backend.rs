//! Backends: the DTLS servers behind a listener.

use std::net::SocketAddr;

/// A backend's identity inside the router. The daemon assigns it and keeps it stable
/// across reloads, because flows and CID bindings refer to backends by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub u16);

/// A server ID carried inside routable CIDs (QUIC-LB server IDs are 1–15 octets).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerId {
    len: u8,
    bytes: [u8; ServerId::MAX_LEN],
}

impl ServerId {
    /// Longest server ID.
    pub const MAX_LEN: usize = 15;

    /// A server ID from its octets; `None` when empty or longer than [`Self::MAX_LEN`].
    pub fn new(octets: &[u8]) -> Option<Self> {
        if octets.is_empty() || octets.len() > Self::MAX_LEN {
            return None;
        }
        let mut bytes = [0; Self::MAX_LEN];
        bytes[..octets.len()].copy_from_slice(octets);
        Some(ServerId {
            len: octets.len() as u8,
            bytes,
        })
    }

    /// The octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl core::fmt::Debug for ServerId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ServerId(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// Whether a backend takes traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendState {
    /// Healthy: takes new flows and handshakes, and its existing traffic.
    Up,
    /// Operator-drained: gets no new flows or handshakes; its flows and CID bindings keep
    /// working until they expire.
    Draining,
    /// Failed (health checks): gets nothing; traffic bound to it is rerouted (the
    /// sessions it held are lost anyway, and elsewhere the client learns so quickly).
    Down,
}

impl BackendState {
    /// The state's word in logs, metrics labels, the admin API and the configuration
    /// file: `up`, `draining` or `down`.
    pub fn name(self) -> &'static str {
        match self {
            BackendState::Up => "up",
            BackendState::Draining => "draining",
            BackendState::Down => "down",
        }
    }
}

/// One backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backend {
    /// Stable identity.
    pub id: BackendId,
    /// Stable name; Maglev positions derive from it, so every balancer instance with the
    /// same names agrees on where new flows go.
    pub name: String,
    /// Where datagrams for it go.
    pub addr: SocketAddr,
    /// Relative share of new flows (0 = none).
    pub weight: u32,
    /// Up, draining or down.
    pub state: BackendState,
    /// The server ID that routable CIDs of this backend carry, if any.
    pub server_id: Option<ServerId>,
}

impl Backend {
    /// An up backend of weight 1 without server ID.
    pub fn new(id: u16, name: impl Into<String>, addr: SocketAddr) -> Self {
        Backend {
            id: BackendId(id),
            name: name.into(),
            addr,
            weight: 1,
            state: BackendState::Up,
            server_id: None,
        }
    }

    /// Whether new flows and handshakes may go to it.
    pub fn takes_new_flows(&self) -> bool {
        self.state == BackendState::Up && self.weight > 0
    }
}
