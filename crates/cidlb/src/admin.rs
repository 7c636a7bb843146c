//! The admin HTTP server: metrics, backends, drain/undrain, weights, lookups, reload.
//!
//! Plain HTTP/1.1 on `admin.address` (loopback by default: the API has no
//! authentication, anyone who reaches it can drain backends). Requests are served one
//! at a time on one thread (`tiny_http` accepts connections on its own threads); every
//! answer but `/metrics` is JSON, errors are `{"error": "..."}` with a 4xx/5xx status.
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | GET | `/metrics` | Prometheus text format |
//! | GET | `/backends` | every listener and backend: state, health, weight, flows, bindings, traffic |
//! | POST | `/backends/NAME/drain` | no new flows for the backend; its sessions keep working |
//! | POST | `/backends/NAME/undrain` | back to `up` |
//! | POST | `/backends/NAME/weight?value=N` | set the weight (or a body `{"weight": N}`) |
//! | GET | `/lookup/cid/HEX` | which backend a CID goes to, and why |
//! | GET | `/lookup/client/IP:PORT` | which backend a client address goes to, and why |
//! | GET | `/tables` | sizes, bounds, timeouts, expiries and evictions of the tables |
//! | POST | `/reload` | re-read the configuration file (like SIGHUP) |
//!
//! Backend and lookup endpoints take `?listener=NAME`, required only when the name is
//! ambiguous (several listeners).

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use cidlb_core::BackendState;
use serde::Serialize;
use tiny_http::{Header, Method, Request, Response, Server};
use tracing::{debug, warn};

use crate::control::{ApiError, Daemon};

/// Largest request body read.
const MAX_BODY: u64 = 4096;

/// The running admin server.
pub struct AdminServer {
    current: Arc<Mutex<Arc<Server>>>,
    stopping: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminServer({})", self.addr)
    }
}

fn serve_on(listener: TcpListener) -> std::io::Result<Arc<Server>> {
    Server::from_listener(listener, None)
        .map(Arc::new)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl AdminServer {
    /// Binds `addr` and serves `daemon` on a thread of its own.
    pub fn start(addr: SocketAddr, daemon: Arc<Daemon>) -> std::io::Result<AdminServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let current = Arc::new(Mutex::new(serve_on(listener)?));
        let stopping = Arc::new(AtomicBool::new(false));
        let (cur, stop) = (current.clone(), stopping.clone());
        let thread = std::thread::Builder::new()
            .name("cidlb-admin".into())
            .spawn(move || serve(&daemon, addr, &cur, &stop))?;
        Ok(AdminServer {
            current,
            stopping,
            addr,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the thread.
    pub fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        lock(&self.current).unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves requests until stopped. `tiny_http` ends its accept thread, and closes the
/// listening socket, at the first failed `accept` (e.g. `EMFILE` when every descriptor
/// is taken); the API would then be gone until a restart. Instead the listener is bound
/// again on the same address, once a second until that works.
fn serve(daemon: &Daemon, addr: SocketAddr, current: &Mutex<Arc<Server>>, stopping: &AtomicBool) {
    loop {
        let server = lock(current).clone();
        let error = loop {
            match server.recv() {
                Ok(req) => handle(daemon, req),
                Err(e) => break e,
            }
        };
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        warn!(address = %addr, error = %error,
            "admin API stopped accepting connections; listening again in 1 s");
        loop {
            std::thread::sleep(Duration::from_secs(1));
            if stopping.load(Ordering::SeqCst) {
                return;
            }
            match TcpListener::bind(addr).and_then(serve_on) {
                Ok(s) => {
                    *lock(current) = s;
                    warn!(address = %addr, "admin API listening again");
                    break;
                }
                Err(e) => debug!(address = %addr, error = %e, "admin API cannot listen yet"),
            }
        }
        // `stop` may have unblocked the old server just before the swap.
        if stopping.load(Ordering::SeqCst) {
            return;
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

enum Reply {
    Json(u16, String),
    Text(u16, &'static str, String),
    NotAllowed(&'static str),
}

fn json<T: Serialize>(status: u16, v: &T) -> Reply {
    match serde_json::to_string_pretty(v) {
        Ok(mut s) => {
            s.push('\n');
            Reply::Json(status, s)
        }
        Err(e) => error(&ApiError::new(
            500,
            format!("cannot encode the answer: {e}"),
        )),
    }
}

fn error(e: &ApiError) -> Reply {
    #[derive(Serialize)]
    struct E<'a> {
        error: &'a str,
    }
    let body = serde_json::to_string(&E { error: &e.message })
        .unwrap_or_else(|_| "{\"error\":\"?\"}".into());
    Reply::Json(e.status, body + "\n")
}

fn handle(daemon: &Daemon, mut req: Request) {
    let method = req.method().clone();
    let url = req.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let mut body = String::new();
    if method == Method::Post {
        let _ = req.as_reader().take(MAX_BODY).read_to_string(&mut body);
    }
    let reply = route(daemon, &method, path, query, &body);
    let (status, resp) = match reply {
        Reply::Json(status, s) => (
            status,
            Response::from_string(s)
                .with_status_code(status)
                .with_header(header("Content-Type", "application/json")),
        ),
        Reply::Text(status, ct, s) => (
            status,
            Response::from_string(s)
                .with_status_code(status)
                .with_header(header("Content-Type", ct)),
        ),
        Reply::NotAllowed(allow) => {
            let Reply::Json(_, s) = error(&ApiError::new(
                405,
                format!("{method} is not allowed on {path}; use {allow}"),
            )) else {
                unreachable!("error() gives JSON")
            };
            (
                405,
                Response::from_string(s)
                    .with_status_code(405)
                    .with_header(header("Content-Type", "application/json"))
                    .with_header(header("Allow", allow)),
            )
        }
    };
    // Content-Length rather than chunked transfer: simpler for scripts and `cidlb status`.
    let resp = resp.with_chunked_threshold(usize::MAX);
    debug!(%method, path, status, "admin request");
    if let Err(e) = req.respond(resp) {
        debug!(error = %e, "admin: cannot send the answer");
    }
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

fn route(daemon: &Daemon, method: &Method, path: &str, query: &str, body: &str) -> Reply {
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let listener = param(query, "listener");
    let listener = listener.as_deref();
    let get = *method == Method::Get || *method == Method::Head;
    let post = *method == Method::Post;
    let result = |r: Result<Reply, ApiError>| r.unwrap_or_else(|e| error(&e));
    match segs.as_slice() {
        [] if get => json(200, &index()),
        ["metrics"] if get => Reply::Text(
            200,
            crate::metrics::CONTENT_TYPE,
            crate::metrics::render(&daemon.snapshot(true)),
        ),
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
            result(daemon.lookup_cid(listener, hex).map(|v| json(200, &v)))
        }
        ["lookup", "client", addr] if get => {
            result(daemon.lookup_client(listener, addr).map(|v| json(200, &v)))
        }
        ["reload"] if post => {
            let r = daemon.reload();
            result(r.map(|rep| json(200, &rep)))
        }
        []
        | ["metrics"]
        | ["backends"]
        | ["tables"]
        | ["lookup", "cid", _]
        | ["lookup", "client", _] => Reply::NotAllowed("GET"),
        ["backends", _, "drain" | "undrain" | "weight"] | ["reload"] => Reply::NotAllowed("POST"),
        _ => {
            if !get && !post {
                warn!(%method, path, "admin: unexpected request");
            }
            error(&ApiError::new(
                404,
                format!("no such endpoint: {path} (GET / lists them)"),
            ))
        }
    }
}

fn weight_value(query: &str, body: &str) -> Result<u32, ApiError> {
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
                    ApiError::new(400, format!("body: expected {{\"weight\": N}} ({e})"))
                })?;
                w.weight.to_string()
            } else if b.is_empty() {
                return Err(ApiError::new(
                    400,
                    "give the weight as ?value=N or as a body {\"weight\": N}",
                ));
            } else {
                b.to_string()
            }
        }
    };
    raw.trim()
        .parse::<u32>()
        .map_err(|_| ApiError::new(400, format!("weight {raw:?} is not an integer 0..=10000")))
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
            "GET /lookup/cid/HEX[?listener=NAME]",
            "GET /lookup/client/IP:PORT[?listener=NAME]",
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
