//! Lookups: where a datagram with a given CID, or without CID from a given address,
//! goes now, and why, in words. The decision is the core's own
//! ([`cidlb_core::decision`], through the plane's `explain_*`), so a lookup never
//! explains a route that the plane does not take; this module only words it.

use std::net::SocketAddr;

use cidlb_cidformat::{hex_string, parse_cid};
use cidlb_core::{AddressDecision, BackendId, CidDecision, CidExplanation, Decoded};
use serde::Serialize;

use super::error::ControlError;
use super::{Daemon, State};
use crate::config::RoutingMode;

impl State {
    fn backend_ref(&self, li: usize, id: BackendId) -> Option<BackendRef> {
        let health_enabled = self.config.health.enabled;
        self.backend(li, id).map(|b| BackendRef {
            name: b.name.clone(),
            address: b.addr.to_string(),
            state: b.effective(health_enabled).name(),
        })
    }

    pub(super) fn backend_name(&self, li: usize, id: BackendId) -> String {
        self.backend(li, id)
            .map_or_else(|| format!("#{}", id.0), |b| b.name.clone())
    }
}

fn parse_client(client: &str) -> Result<SocketAddr, ControlError> {
    client.parse().map_err(|_| {
        ControlError::invalid(format!(
            "{client:?} is not a client address (IP:PORT, IPv6 in brackets)"
        ))
    })
}

impl Daemon {
    /// `GET /lookup/cid/HEX[?client=IP:PORT]`: which backend a datagram with this CID
    /// goes to, and why. With `client`, for a datagram from that address (its flow
    /// counts); without, from an address that has no flow.
    pub fn lookup_cid(
        &self,
        listener: Option<&str>,
        hex: &str,
        client: Option<&str>,
    ) -> Result<CidLookup, ControlError> {
        let cid = parse_cid(hex).map_err(ControlError::invalid)?;
        let cid = cid.as_bytes();
        let client = client.map(parse_client).transpose()?;
        let st = self.state();
        let li = st.listener_index(listener)?;
        let lcfg = &st.config.listeners[li];
        if lcfg.routing == RoutingMode::Address {
            return Err(ControlError::invalid(format!(
                "listener {:?} routes by client address only (routing = \"address\"): CIDs play no part",
                lcfg.name
            )));
        }
        let e = self.listener(li).explain_cid(cid, client);
        let name = |id: BackendId| st.backend_name(li, id);
        let mut note = None;
        if lcfg.cid_length.is_some_and(|n| n != cid.len()) {
            note = Some(format!(
                "the listener's CIDs are {} bytes long; this one has {}",
                lcfg.cid_length.unwrap_or(0),
                cid.len()
            ));
        }
        let (kind, backend, serves, idle_secs, reason) = cid_reason(&e, &name);
        Ok(CidLookup {
            listener: lcfg.name.clone(),
            cid: hex_string(cid),
            client: client.map(|c| c.to_string()),
            route: kind,
            backend: backend.and_then(|b| st.backend_ref(li, b)),
            serves,
            idle_secs,
            reason,
            note,
        })
    }

    /// `GET /lookup/client/IP:PORT`: where a datagram without CID from this address
    /// goes, and why.
    pub fn lookup_client(
        &self,
        listener: Option<&str>,
        client: &str,
    ) -> Result<ClientLookup, ControlError> {
        let addr = parse_client(client)?;
        let st = self.state();
        let li = st.listener_index(listener)?;
        let e = self.listener(li).explain_client(addr);
        let name = |id: BackendId| st.backend_name(li, id);
        let hashed_name = |h: Option<BackendId>| {
            h.map_or_else(
                || "nothing: no backend takes new flows".to_string(),
                |b| format!("backend {}", name(b)),
            )
        };
        let idle_secs = e.flow.map(|f| f.idle_secs);
        let (kind, backend, serves, reason) = match (e.decision, e.flow) {
            (AddressDecision::Flow(b), f) => (
                "flow",
                Some(b),
                true,
                format!(
                    "the address has a flow to backend {} (last used {} s ago)",
                    name(b),
                    f.map_or(0, |f| f.idle_secs)
                ),
            ),
            (AddressDecision::Hashed(h), Some(f)) => (
                "flow",
                Some(f.backend),
                false,
                format!(
                    "the address's flow points to backend {}, which is down or gone: the next datagram is rescheduled to {}",
                    name(f.backend),
                    hashed_name(h)
                ),
            ),
            (AddressDecision::Hashed(h), None) => (
                "new",
                h,
                h.is_some(),
                format!(
                    "no flow: a new one would go to {} (Maglev on the address)",
                    hashed_name(h)
                ),
            ),
        };
        Ok(ClientLookup {
            listener: st.config.listeners[li].name.clone(),
            client: addr.to_string(),
            route: kind,
            backend: backend.and_then(|b| st.backend_ref(li, b)),
            serves,
            idle_secs,
            new_flow_backend: e.hashed.and_then(|b| st.backend_ref(li, b)),
            reason,
        })
    }
}

/// The lookup's route word, backend, whether it serves, idle seconds and reason text,
/// from the core's explanation (the decision routing takes).
fn cid_reason(
    e: &CidExplanation,
    name: &dyn Fn(BackendId) -> String,
) -> (&'static str, Option<BackendId>, bool, Option<u32>, String) {
    let decoded = match e.decoded {
        Decoded::Backend {
            server_id, backend, ..
        } => Some(format!(
            "it decodes to server ID {} of backend {}",
            hex_string(server_id.as_bytes()),
            name(backend)
        )),
        Decoded::UnknownServer(s) => Some(format!(
            "server ID {} decoded from it belongs to no backend",
            hex_string(s.as_bytes())
        )),
        Decoded::NoFormat | Decoded::Undecodable => None,
    };
    let idle = e.binding.map(|b| b.idle_secs);
    let down_binding = e.binding.filter(|b| !b.serves).map(|b| {
        format!(
            "its binding to backend {} is kept while that backend is down or gone; ",
            name(b.binding.backend)
        )
    });
    match e.decision {
        CidDecision::Learned(b) => (
            "learned",
            Some(b),
            true,
            idle,
            format!(
                "bound to backend {} (learned from its ServerHello); last used {} s ago{}",
                name(b),
                idle.unwrap_or(0),
                decoded.map_or(String::new(), |d| format!(
                    " ({d}, but a learned binding is the backend's own word and wins)"
                ))
            ),
        ),
        CidDecision::Encoded { backend, server_id } => (
            "encoded",
            Some(backend),
            true,
            None,
            format!(
                "{}the CID decodes to server ID {} of backend {} (stateless routing)",
                down_binding.unwrap_or_default(),
                hex_string(server_id.as_bytes()),
                name(backend)
            ),
        ),
        CidDecision::Seeded(b) => (
            "seeded",
            Some(b),
            true,
            idle,
            format!(
                "bound to backend {} (seeded from the flow the CID first appeared on); last used {} s ago",
                name(b),
                idle.unwrap_or(0)
            ),
        ),
        CidDecision::ByFlow { backend, seed } => (
            "flow",
            Some(backend),
            true,
            idle,
            format!(
                "{}the sender's flow goes to backend {}{}",
                down_binding.unwrap_or_default(),
                name(backend),
                if seed { ", and a binding is seeded from it" } else { "" }
            ),
        ),
        CidDecision::Hashed(h) => (
            "unknown",
            h,
            h.is_some(),
            idle,
            format!(
                "{}{}no serving binding: a datagram would follow its sender's flow if it has one, else Maglev on the CID picks {} (counted as unknown_cid)",
                down_binding.unwrap_or_default(),
                decoded.map_or(String::new(), |d| format!("{d}; ")),
                h.map_or_else(|| "nothing: no backend takes new flows".into(), |b| format!("backend {}", name(b))),
            ),
        ),
    }
}

/// A backend named in a lookup.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct BackendRef {
    /// Name.
    pub name: String,
    /// Address.
    pub address: String,
    /// State applied by the router.
    pub state: &'static str,
}

/// `GET /lookup/cid/HEX[?client=IP:PORT]`.
#[derive(Clone, Debug, Serialize)]
pub struct CidLookup {
    /// Listener.
    pub listener: String,
    /// The CID, hex.
    pub cid: String,
    /// The sender the lookup was made for (`?client=`), if any.
    pub client: Option<String>,
    /// `learned`, `encoded`, `seeded`, `flow` (the sender's flow) or `unknown`
    /// (Maglev on the CID): the routing step that decides.
    pub route: &'static str,
    /// The backend it goes to (for `unknown`: Maglev's choice for the CID).
    pub backend: Option<BackendRef>,
    /// Whether that backend takes the datagram now.
    pub serves: bool,
    /// Seconds since the binding was last used.
    pub idle_secs: Option<u32>,
    /// Why, in words.
    pub reason: String,
    /// A remark (e.g. a CID of another length than the listener's).
    pub note: Option<String>,
}

/// `GET /lookup/client/IP:PORT`.
#[derive(Clone, Debug, Serialize)]
pub struct ClientLookup {
    /// Listener.
    pub listener: String,
    /// The client address.
    pub client: String,
    /// `flow` or `new`.
    pub route: &'static str,
    /// The backend its CID-less datagrams go to.
    pub backend: Option<BackendRef>,
    /// Whether that backend takes them now.
    pub serves: bool,
    /// Seconds since the flow was last used.
    pub idle_secs: Option<u32>,
    /// Where a new flow from this address would go.
    pub new_flow_backend: Option<BackendRef>,
    /// Why, in words.
    pub reason: String,
}
