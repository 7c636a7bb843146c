//! The admin HTTP server: metrics, backends, drain/undrain, weights, lookups, reload.
//!
//! Plain HTTP/1.1 on `admin.address` (loopback by default: the API has no
//! authentication, anyone who reaches it can drain backends). Requests are served one
//! at a time on one thread ([`http`]: bounded connections, sizes and time, survives
//! running out of descriptors); every answer but `/metrics` is JSON, errors are
//! `{"error": "..."}` with a 4xx/5xx status.
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | GET | `/metrics` | Prometheus text format |
//! | GET | `/backends` | every listener and backend: state, health, weight, flows, bindings, traffic |
//! | POST | `/backends/NAME/drain` | no new flows for the backend; its sessions keep working |
//! | POST | `/backends/NAME/undrain` | back to `up` |
//! | POST | `/backends/NAME/weight?value=N` | set the weight (or a body `{"weight": N}`) |
//! | GET | `/lookup/cid/HEX[?client=IP:PORT]` | which backend a CID goes to (from that sender), and why |
//! | GET | `/lookup/client/IP:PORT` | which backend a client address goes to, and why |
//! | GET | `/lookup/client/IP` | the flows of a client IP (every port it used) |
//! | GET | `/flows` | live flows; `?backend=NAME&client=IP[:PORT]&limit=N&cursor=C` |
//! | GET | `/bindings` | live CID bindings; `?backend=NAME&cid=HEXPREFIX&source=learned\|seeded&limit=N&cursor=C` |
//! | GET | `/tables` | sizes, bounds, timeouts, expiries and evictions of the tables |
//! | POST | `/reload` | re-read the configuration file (like SIGHUP) |
//!
//! Backend and lookup endpoints take `?listener=NAME`, required only when the name is
//! ambiguous (several listeners).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use cidlb_core::BackendState;
use serde::Serialize;
use tracing::{debug, warn};

use crate::control::{ControlError, Daemon, ErrorKind, ListingQuery};
use crate::http::{HttpServer, HttpStats, Limits, Request, Response};

/// The running admin server.
#[derive(Debug)]
pub struct AdminServer {
    http: HttpServer,
}

impl AdminServer {
    /// Binds `addr` and serves `daemon` on a thread of its own.
    pub fn start(addr: SocketAddr, daemon: Arc<Daemon>) -> std::io::Result<AdminServer> {
        let listener = TcpListener::bind(addr)?;
        let stats = Arc::new(HttpStats::default());
        let own = stats.clone();
        let http = HttpServer::start(
            listener,
            "cidlb-admin",
            Limits::default(),
            stats,
            Box::new(move |req: &Request<'_>| handle(&daemon, &own, req)),
        )?;
        Ok(AdminServer { http })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// Stops serving and waits for the thread.
    pub fn stop(self) {
        self.http.stop();
    }
}

fn json<T: Serialize>(status: u16, v: &T) -> Response {
    match serde_json::to_string_pretty(v) {
        Ok(mut s) => {
            s.push('\n');
            Response::json(status, s)
        }
        Err(e) => Response::error(500, &format!("cannot encode the answer: {e}")),
    }
}

/// The HTTP status of a control-plane error.
fn status(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::Invalid => 400,
        ErrorKind::NotFound => 404,
        ErrorKind::Conflict => 409,
    }
}

fn error(e: &ControlError) -> Response {
    Response::error(status(e.kind), &e.message)
}

fn not_allowed(method: &str, path: &str, allow: &'static str) -> Response {
    let mut r = Response::error(
        405,
        &format!("{method} is not allowed on {path}; use {allow}"),
    );
    r.headers.push(("Allow", allow.to_string()));
    r
}

fn handle(daemon: &Daemon, stats: &HttpStats, req: &Request<'_>) -> Response {
    let (path, query) = req.target.split_once('?').unwrap_or((req.target, ""));
    let body = String::from_utf8_lossy(req.body);
    let resp = route(daemon, stats, req.method, path, query, &body);
    debug!(
        method = req.method,
        path,
        status = resp.status,
        "admin request"
    );
    resp
}

/// Query parameter `key`, percent-decoded.
fn param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn route(
    daemon: &Daemon,
    stats: &HttpStats,
    method: &str,
    path: &str,
    query: &str,
    body: &str,
) -> Response {
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let listener = param(query, "listener");
    let listener = listener.as_deref();
    let get = method == "GET" || method == "HEAD";
    let post = method == "POST";
    let result = |r: Result<Response, ControlError>| r.unwrap_or_else(|e| error(&e));
    match segs.as_slice() {
        [] if get => json(200, &index()),
        ["metrics"] if get => Response {
            status: 200,
            content_type: crate::metrics::CONTENT_TYPE,
            headers: Vec::new(),
            body: crate::metrics::render(&daemon.snapshot(true), &stats.get()).into_bytes(),
        },
        ["backends"] if get => json(200, &daemon.backends_view()),
        ["tables"] if get => json(200, &daemon.tables_view()),
        ["backends", name, "drain"] if post => result(
            daemon
                .set_admin_state(listener, name, BackendState::Draining)
                .map(|v| json(200, &v)),
        ),
        ["backends", name, "undrain"] if post => result(
            daemon
                .set_admin_state(listener, name, BackendState::Up)
                .map(|v| json(200, &v)),
        ),
        ["backends", name, "weight"] if post => result(
            weight_value(query, body)
                .and_then(|w| daemon.set_weight(listener, name, w))
                .map(|v| json(200, &v)),
        ),
        ["lookup", "cid", hex] if get => {
            let client = param(query, "client");
            result(
                daemon
                    .lookup_cid(listener, hex, client.as_deref())
                    .map(|v| json(200, &v)),
            )
        }
        ["lookup", "client", addr] if get => {
            if addr.parse::<std::net::SocketAddr>().is_ok() {
                result(daemon.lookup_client(listener, addr).map(|v| json(200, &v)))
            } else {
                // An IP alone: its flows (every port it has used).
                let (limit, cursor) = (param(query, "limit"), param(query, "cursor"));
                let q = ListingQuery {
                    listener,
                    client: Some(addr),
                    limit: limit.as_deref(),
                    cursor: cursor.as_deref(),
                    ..ListingQuery::default()
                };
                result(daemon.flows(&q).map(|v| json(200, &v)))
            }
        }
        ["flows"] if get => {
            let p = |k| param(query, k);
            let (backend, client, limit, cursor) =
                (p("backend"), p("client"), p("limit"), p("cursor"));
            let q = ListingQuery {
                listener,
                backend: backend.as_deref(),
                client: client.as_deref(),
                limit: limit.as_deref(),
                cursor: cursor.as_deref(),
                ..ListingQuery::default()
            };
            result(daemon.flows(&q).map(|v| json(200, &v)))
        }
        ["bindings"] if get => {
            let p = |k| param(query, k);
            let (backend, cid, source, limit, cursor) =
                (p("backend"), p("cid"), p("source"), p("limit"), p("cursor"));
            let q = ListingQuery {
                listener,
                backend: backend.as_deref(),
                cid: cid.as_deref(),
                source: source.as_deref(),
                limit: limit.as_deref(),
                cursor: cursor.as_deref(),
                ..ListingQuery::default()
            };
            result(daemon.bindings(&q).map(|v| json(200, &v)))
        }
        ["reload"] if post => {
            let r = daemon.reload();
            result(r.map(|rep| json(200, &rep)))
        }
        []
        | ["metrics"]
        | ["backends"]
        | ["tables"]
        | ["flows"]
        | ["bindings"]
        | ["lookup", "cid", _]
        | ["lookup", "client", _] => not_allowed(method, path, "GET"),
        ["backends", _, "drain" | "undrain" | "weight"] | ["reload"] => {
            not_allowed(method, path, "POST")
        }
        _ => {
            if !get && !post {
                warn!(%method, path, "admin: unexpected request");
            }
            Response::error(404, &format!("no such endpoint: {path} (GET / lists them)"))
        }
    }
}

fn weight_value(query: &str, body: &str) -> Result<u32, ControlError> {
    let raw = match param(query, "value") {
        Some(v) => v,
        None => {
            let b = body.trim();
            if b.starts_with('{') {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct W {
                    weight: u64,
                }
                let w: W = serde_json::from_str(b).map_err(|e| {
                    ControlError::invalid(format!("body: expected {{\"weight\": N}} ({e})"))
                })?;
                w.weight.to_string()
            } else if b.is_empty() {
                return Err(ControlError::invalid(
                    "give the weight as ?value=N or as a body {\"weight\": N}",
                ));
            } else {
                b.to_string()
            }
        }
    };
    raw.trim()
        .parse::<u32>()
        .map_err(|_| ControlError::invalid(format!("weight {raw:?} is not an integer 0..=10000")))
}

#[derive(Serialize)]
struct Index {
    endpoints: Vec<&'static str>,
}

fn index() -> Index {
    Index {
        endpoints: vec![
            "GET /metrics",
            "GET /backends",
            "POST /backends/NAME/drain[?listener=NAME]",
            "POST /backends/NAME/undrain[?listener=NAME]",
            "POST /backends/NAME/weight?value=N[&listener=NAME]",
            "GET /lookup/cid/HEX[?listener=NAME][&client=IP:PORT]",
            "GET /lookup/client/IP:PORT[?listener=NAME]",
            "GET /lookup/client/IP[?listener=NAME]",
            "GET /flows[?listener=NAME][&backend=NAME][&client=IP[:PORT]][&limit=N][&cursor=C]",
            "GET /bindings[?listener=NAME][&backend=NAME][&cid=HEXPREFIX][&source=learned|seeded][&limit=N][&cursor=C]",
            "GET /tables",
            "POST /reload",
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_percent_decoding() {
        assert_eq!(
            param("listener=a%20b&value=3", "value").as_deref(),
            Some("3")
        );
        assert_eq!(
            param("listener=a%20b&value=3", "listener").as_deref(),
            Some("a b")
        );
        assert_eq!(param("x", "x").as_deref(), Some(""));
        assert_eq!(param("", "x"), None);
        assert_eq!(percent_decode("%5B%3A%3A1%5D%3A5684"), "[::1]:5684");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn weight_forms() {
        assert_eq!(weight_value("value=7", ""), Ok(7));
        assert_eq!(weight_value("", "{\"weight\": 3}"), Ok(3));
        assert_eq!(weight_value("", "5\n"), Ok(5));
        assert!(weight_value("", "").is_err());
        assert!(weight_value("value=-1", "").is_err());
        assert!(weight_value("", "{\"w\": 1}").is_err());
    }
}
