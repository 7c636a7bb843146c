//! Listings of a listener's sessions: `GET /flows` and `GET /bindings`, with filters, a
//! limit and a cursor. Each request does bounded work (the plane looks at most
//! `cidlb_core::plane::MAX_SCAN` table entries and returns at most
//! `cidlb_core::plane::MAX_PAGE`); a listing that stops early says where to go on.

use std::net::{IpAddr, SocketAddr};

use cidlb_cidformat::{hex_string, parse_hex};
use cidlb_core::plane::{BindingFilter, FlowFilter, MAX_PAGE};
use cidlb_core::{BackendId, BindingSource};
use serde::{Deserialize, Serialize};

use super::error::ControlError;
use super::{Daemon, State};

/// What a listing asks for, as the admin API's query parameters give it.
#[derive(Clone, Debug, Default)]
pub struct ListingQuery<'a> {
    /// `?listener=NAME` (needed with several listeners).
    pub listener: Option<&'a str>,
    /// `?backend=NAME`.
    pub backend: Option<&'a str>,
    /// `?client=IP` or `?client=IP:PORT` (flows only).
    pub client: Option<&'a str>,
    /// `?cid=HEX`: a CID prefix (bindings only).
    pub cid: Option<&'a str>,
    /// `?source=learned|seeded` (bindings only).
    pub source: Option<&'a str>,
    /// `?limit=N` (default 100, at most `MAX_PAGE`).
    pub limit: Option<&'a str>,
    /// `?cursor=N`, from a previous page's `next_cursor`.
    pub cursor: Option<&'a str>,
}

/// `GET /flows`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowsView {
    /// Listener.
    pub listener: String,
    /// The flows of this page.
    pub flows: Vec<FlowView>,
    /// Where the next page starts (`?cursor=`); `None`: the table's end was reached.
    pub next_cursor: Option<u64>,
    /// Table entries looked at for this page.
    pub scanned: usize,
}

/// One flow.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowView {
    /// The client's address.
    pub client: String,
    /// Its backend.
    pub backend: String,
    /// Seconds since it was last used.
    pub idle_secs: u32,
}

/// `GET /bindings`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BindingsView {
    /// Listener.
    pub listener: String,
    /// The bindings of this page.
    pub bindings: Vec<BindingView>,
    /// Where the next page starts (`?cursor=`); `None`: the table's end was reached.
    pub next_cursor: Option<u64>,
    /// Table entries looked at for this page.
    pub scanned: usize,
}

/// One CID binding.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BindingView {
    /// The CID, hex.
    pub cid: String,
    /// Its backend.
    pub backend: String,
    /// `learned` (from the backend's ServerHello) or `seeded` (from a flow).
    pub source: String,
    /// Seconds since it was last used.
    pub idle_secs: u32,
}

/// The word of a binding source.
pub(crate) fn source_word(s: BindingSource) -> &'static str {
    match s {
        BindingSource::Learned => "learned",
        BindingSource::Seeded => "seeded",
    }
}

/// A client given as `IP` or `IP:PORT` (IPv6 with a port in brackets).
pub(crate) fn parse_client_filter(s: &str) -> Result<(IpAddr, Option<u16>), ControlError> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok((a.ip(), Some(a.port())));
    }
    let ip = s.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>().map(|ip| (ip, None)).map_err(|_| {
        ControlError::invalid(format!(
            "{s:?} is not a client IP or IP:PORT (IPv6 with a port in brackets)"
        ))
    })
}

impl State {
    fn backend_id(&self, li: usize, name: &str) -> Result<BackendId, ControlError> {
        self.listeners[li]
            .backends
            .iter()
            .find(|b| b.name == name)
            .map(|b| b.id)
            .ok_or_else(|| {
                ControlError::not_found(format!(
                    "listener {:?} has no backend named {name:?}",
                    self.config.listeners[li].name
                ))
            })
    }
}

fn limit_cursor(q: &ListingQuery<'_>) -> Result<(usize, u64), ControlError> {
    let limit = match q.limit {
        None => 100,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ControlError::invalid(format!("limit {s:?}: expected 1 to {MAX_PAGE}"))
            })?,
    };
    let cursor = match q.cursor {
        None => 0,
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| ControlError::invalid(format!("cursor {s:?}: expected a number")))?,
    };
    Ok((limit, cursor))
}

impl Daemon {
    /// `GET /flows`: live flows, filtered by backend and client.
    pub fn flows(&self, q: &ListingQuery<'_>) -> Result<FlowsView, ControlError> {
        let (limit, cursor) = limit_cursor(q)?;
        let st = self.state();
        let li = st.listener_index(q.listener)?;
        let mut f = FlowFilter::default();
        if let Some(b) = q.backend {
            f.backend = Some(st.backend_id(li, b)?);
        }
        if let Some(c) = q.client {
            let (ip, port) = parse_client_filter(c)?;
            f.ip = Some(ip);
            f.port = port;
        }
        let page = self.listener(li).flows(&f, cursor, limit);
        Ok(FlowsView {
            listener: st.config.listeners[li].name.clone(),
            flows: page
                .items
                .iter()
                .map(|e| FlowView {
                    client: e.client.to_string(),
                    backend: st.backend_name(li, e.backend),
                    idle_secs: e.idle_secs,
                })
                .collect(),
            next_cursor: page.next,
            scanned: page.scanned,
        })
    }

    /// `GET /bindings`: live CID bindings, filtered by backend, CID prefix and source.
    pub fn bindings(&self, q: &ListingQuery<'_>) -> Result<BindingsView, ControlError> {
        let (limit, cursor) = limit_cursor(q)?;
        let st = self.state();
        let li = st.listener_index(q.listener)?;
        let mut f = BindingFilter::default();
        if let Some(b) = q.backend {
            f.backend = Some(st.backend_id(li, b)?);
        }
        if let Some(c) = q.cid {
            f.cid_prefix = parse_hex(c)
                .filter(|p| p.len() <= cidlb_core::MAX_CID_LEN)
                .ok_or_else(|| {
                    ControlError::invalid(format!(
                        "cid {c:?}: expected a CID prefix in hex (whole octets, at most {})",
                        cidlb_core::MAX_CID_LEN
                    ))
                })?;
        }
        f.source = match q.source {
            None => None,
            Some("learned") => Some(BindingSource::Learned),
            Some("seeded") => Some(BindingSource::Seeded),
            Some(s) => {
                return Err(ControlError::invalid(format!(
                    "source {s:?}: expected learned or seeded"
                )))
            }
        };
        let page = self.listener(li).bindings(&f, cursor, limit);
        Ok(BindingsView {
            listener: st.config.listeners[li].name.clone(),
            bindings: page
                .items
                .iter()
                .map(|e| BindingView {
                    cid: hex_string(e.cid.as_bytes()),
                    backend: st.backend_name(li, e.backend),
                    source: source_word(e.source).into(),
                    idle_secs: e.idle_secs,
                })
                .collect(),
            next_cursor: page.next,
            scanned: page.scanned,
        })
    }
}
