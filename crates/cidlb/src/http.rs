//! A small HTTP/1.1 server (the admin API's): one thread, one `mio` poll, bounded in
//! everything it holds. It knows nothing of cidlb: a handler turns a request into a
//! response.
//!
//! Why not a crate's server: `tiny_http` (used before) closes its listener for good at
//! the first failed `accept` and panics its accept thread when `try_clone` of an
//! accepted socket fails with `EMFILE`, so the API died silently exactly when an
//! operator needs it (descriptors exhausted by a flood); it also spends one thread per
//! idle connection. `hyper` would need an async runtime the daemon does not otherwise
//! have. Parsing is `httparse`'s; this module only owns the connections:
//!
//! - at most [`Limits::max_connections`] at once; past that, a new connection takes the
//!   slot of the oldest one still waiting for its request (so idle connections cannot
//!   starve a real request: they are dropped oldest first), or waits in the kernel's
//!   backlog while every connection is being answered;
//! - a request head of at most [`Limits::max_head`] bytes and a body of at most
//!   [`Limits::max_body`] (`Content-Length` only), else `431` / `413`;
//! - every connection is closed after one answer (`Connection: close`) or when
//!   [`Limits::timeout`] has passed since it was accepted, whichever comes first, so
//!   idle connections cannot hold the API;
//! - a failed `accept` (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) never closes the
//!   listener: it is counted, logged at most every 10 s, and tried again every 100 ms.
//!
//! How every connection ended ([`ConnOutcome`]) and every failed `accept` are counted in
//! [`HttpStats`].

use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use strum::{EnumCount, EnumIter, EnumMessage, IntoEnumIterator, IntoStaticStr};
use tracing::{debug, error, warn};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Connection slot `i` is token `FIRST_CONN + i`.
const FIRST_CONN: usize = 2;
/// How long accepting pauses after it failed for want of resources.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// At most one warning about failed accepts per this long.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(10);
/// Most headers in a request head.
const MAX_HEADERS: usize = 32;

/// What the server holds at most.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Bytes in a request head (request line and headers).
    pub max_head: usize,
    /// Bytes in a request body.
    pub max_body: usize,
    /// Time from accept to the last byte of the answer.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            max_head: 8 * 1024,
            max_body: 4 * 1024,
            timeout: Duration::from_secs(10),
        }
    }
}

/// How a connection to the server ended: the `outcome` label of
/// `cidlb_admin_connections_total` (`snake_case` names via `strum`; the doc comments
/// are the metrics reference).
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumCount, EnumIter, EnumMessage, IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum ConnOutcome {
    /// Answered by the handler.
    Served,
    /// Refused before the handler: malformed, too large or chunked (answered 400, 413,
    /// 431 or 501).
    BadRequest,
    /// Not finished 10 s after its accept (the server's timeout).
    TimedOut,
    /// The peer left, or the connection failed, before a whole request arrived.
    ClosedEarly,
    /// The handler panicked, answered 500 (such a connection counts as `served` too).
    HandlerPanic,
    /// Closed without an answer to make room: every slot was taken, and it was the
    /// connection that had waited longest for its request (idle connections cannot
    /// hold the API).
    Evicted,
}

/// Counters of the server, read by the metrics exposition.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// Connections by how they ended, indexed by `ConnOutcome as usize`.
    connections: [AtomicU64; ConnOutcome::COUNT],
    /// `accept` calls that failed (for example out of file descriptors).
    accept_errors: AtomicU64,
}

impl HttpStats {
    /// Counts a connection that ended with `o`.
    pub(crate) fn count(&self, o: ConnOutcome) {
        self.connections[o as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed `accept`.
    pub(crate) fn count_accept_error(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Plain copies of the counters.
    pub fn get(&self) -> HttpCounts {
        HttpCounts {
            connections: self
                .connections
                .each_ref()
                .map(|a| a.load(Ordering::Relaxed)),
            accept_errors: self.accept_errors.load(Ordering::Relaxed),
        }
    }
}

/// A copy of [`HttpStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HttpCounts {
    connections: [u64; ConnOutcome::COUNT],
    /// `accept` calls that failed (for example out of file descriptors).
    pub accept_errors: u64,
}

impl HttpCounts {
    /// Connections that ended with `o`.
    pub fn connections(&self, o: ConnOutcome) -> u64 {
        self.connections[o as usize]
    }

    /// Every outcome with its count, in declaration order.
    pub fn by_outcome(self) -> impl Iterator<Item = (ConnOutcome, u64)> {
        ConnOutcome::iter().map(move |o| (o, self.connections(o)))
    }
}

/// A whole request, borrowed from the connection's buffer.
#[derive(Debug)]
pub struct Request<'a> {
    /// `GET`, `POST`, ... as sent.
    pub method: &'a str,
    /// The request target: path and query.
    pub target: &'a str,
    /// The body (`Content-Length` bytes).
    pub body: &'a [u8],
}

/// An answer.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Further headers.
    pub headers: Vec<(&'static str, String)>,
    /// Body (not sent for `HEAD`; its length is).
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON answer.
    pub fn json(status: u16, body: String) -> Response {
        Response {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: body.into_bytes(),
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: &str) -> Response {
        let body = serde_json::json!({ "error": message }).to_string() + "\n";
        Response::json(status, body)
    }

    fn encode(&self, head_only: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.body.len());
        // Writes into a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        for (k, v) in &self.headers {
            let _ = write!(out, "{k}: {v}\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A whole request: where its method, target and body lie in the buffer.
    Done {
        method: (usize, usize),
        target: (usize, usize),
        body: (usize, usize),
    },
    /// Waiting for the body of a request that asked for `100 Continue`.
    ExpectsContinue,
    /// Refused: status and reason.
    Refused(u16, String),
}

fn span(buf: &[u8], s: &str) -> (usize, usize) {
    let start = s.as_ptr() as usize - buf.as_ptr() as usize;
    (start, start + s.len())
}

fn parse(buf: &[u8], limits: &Limits) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_head {
                return Parsed::Refused(
                    431,
                    format!("request head larger than {} bytes", limits.max_head),
                );
            }
            return Parsed::Partial;
        }
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Refused(431, format!("more than {MAX_HEADERS} request headers"))
        }
        Err(e) => return Parsed::Refused(400, format!("malformed request: {e}")),
    };
    if head_len > limits.max_head {
        return Parsed::Refused(
            431,
            format!("request head larger than {} bytes", limits.max_head),
        );
    }
    let mut length: Option<usize> = None;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Parsed::Refused(
                501,
                "request bodies with Transfer-Encoding are not supported; send Content-Length"
                    .into(),
            );
        }
        if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok());
            match (n, length) {
                (None, _) => return Parsed::Refused(400, "invalid Content-Length".into()),
                (Some(n), Some(l)) if n != l => {
                    return Parsed::Refused(400, "conflicting Content-Length headers".into())
                }
                (Some(n), _) => length = Some(n),
            }
        }
    }
    let length = length.unwrap_or(0);
    if length > limits.max_body {
        return Parsed::Refused(
            413,
            format!("request body larger than {} bytes", limits.max_body),
        );
    }
    if buf.len() < head_len + length {
        return if expect_continue && buf.len() == head_len {
            Parsed::ExpectsContinue
        } else {
            Parsed::Partial
        };
    }
    // Both are present once the parse is complete.
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Parsed::Refused(400, "malformed request line".into());
    };
    Parsed::Done {
        method: span(buf, method),
        target: span(buf, path),
        body: (head_len, head_len + length),
    }
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
    buf: Vec<u8>,
    /// The answer once there is one, and how much of it is sent.
    out: Option<(Vec<u8>, usize)>,
    continue_sent: bool,
}

/// How a connection ended.
enum End {
    Answered,
    Early,
}

/// The running server.
pub struct HttpServer {
    addr: SocketAddr,
    waker: Arc<Waker>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpServer({})", self.addr)
    }
}

/// The handler: gets a whole request, gives its answer.
pub type Handler = Box<dyn FnMut(&Request<'_>) -> Response + Send>;

impl HttpServer {
    /// Serves `listener` on a thread named `name`, answering with `handler`.
    pub fn start(
        listener: std::net::TcpListener,
        name: &str,
        limits: Limits,
        stats: Arc<HttpStats>,
        handler: Handler,
    ) -> io::Result<HttpServer> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stopping = Arc::new(AtomicBool::new(false));
        let mut server = Loop {
            poll,
            listener,
            addr,
            limits,
            stats,
            handler,
            conns: (0..limits.max_connections.max(1)).map(|_| None).collect(),
            accept_retry: None,
            full: false,
            accept_failures: 0,
            accept_logged: None,
        };
        let stop = stopping.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || server.run(&stop))?;
        Ok(HttpServer {
            addr,
            waker,
            stopping,
            thread: Some(thread),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (open connections are closed) and waits for the thread.
    pub fn stop(mut self) {
        self.signal_stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn signal_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            warn!(error = %e, "admin API: cannot wake its thread to stop it");
        }
    }
}

/// Dropped without [`HttpServer::stop`] (an early return): the thread still ends.
impl Drop for HttpServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.signal_stop();
        }
    }
}

struct Loop {
    poll: Poll,
    listener: TcpListener,
    addr: SocketAddr,
    limits: Limits,
    stats: Arc<HttpStats>,
    handler: Handler,
    conns: Vec<Option<Conn>>,
    /// When accepting is tried again after it failed.
    accept_retry: Option<Instant>,
    /// Every slot is taken: accepting waits for one to free.
    full: bool,
    /// Failed accepts since the last warning.
    accept_failures: u64,
    accept_logged: Option<Instant>,
}

impl Loop {
    fn run(&mut self, stopping: &AtomicBool) {
        let mut events = Events::with_capacity(64);
        loop {
            let now = Instant::now();
            let next = self
                .conns
                .iter()
                .flatten()
                .map(|c| c.deadline)
                .chain(self.accept_retry)
                .min();
            let timeout = next.map(|t| t.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                error!(address = %self.addr, error = %e, "admin API: poll failed; the API stops");
                return;
            }
            if stopping.load(Ordering::SeqCst) {
                return;
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(t) => self.drive(t - FIRST_CONN),
                }
            }
            let now = Instant::now();
            for slot in 0..self.conns.len() {
                if self.conns[slot].as_ref().is_some_and(|c| now >= c.deadline) {
                    self.stats.count(ConnOutcome::TimedOut);
                    self.close(slot);
                }
            }
            if self.accept_retry.is_some_and(|t| now >= t) {
                self.accept_retry = None;
                self.accept();
            }
        }
    }

    fn accept(&mut self) {
        if self.accept_retry.is_some() {
            return;
        }
        // Each turn takes a connection from the backlog (kept, or dropped when it cannot
        // be registered or was aborted) or ends the loop: bounded by the backlog.
        loop {
            let free = self.conns.iter().position(Option::is_none);
            if free.is_none() && self.oldest_idle().is_none() {
                // Every connection is being answered: the next waits in the backlog.
                self.full = true;
                return;
            }
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    self.accept_recovered();
                    let slot = match free {
                        Some(s) => s,
                        None => {
                            // The table is full of connections: the one that has waited
                            // longest for its request makes room.
                            let Some(s) = self.oldest_idle() else {
                                continue;
                            };
                            self.stats.count(ConnOutcome::Evicted);
                            if let Some(mut c) = self.conns[s].take() {
                                let _ = self.poll.registry().deregister(&mut c.stream);
                            }
                            s
                        }
                    };
                    let token = Token(FIRST_CONN + slot);
                    if let Err(e) = self.poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        debug!(error = %e, %peer, "admin API: cannot register a connection");
                        continue;
                    }
                    self.conns[slot] = Some(Conn {
                        stream,
                        peer,
                        deadline: Instant::now() + self.limits.timeout,
                        buf: Vec::new(),
                        out: None,
                        continue_sent: false,
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted
                            | ErrorKind::ConnectionAborted
                            | ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM...: the connection stays in the
                    // backlog; try again shortly rather than spin or give up.
                    self.stats.count_accept_error();
                    self.accept_failures += 1;
                    let now = Instant::now();
                    if self
                        .accept_logged
                        .is_none_or(|t| now.duration_since(t) >= ACCEPT_LOG_EVERY)
                    {
                        warn!(address = %self.addr, error = %e, failures = self.accept_failures,
                            "admin API cannot accept connections; trying again every 100 ms");
                        self.accept_logged = Some(now);
                        self.accept_failures = 0;
                    }
                    self.accept_retry = Some(now + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    /// The connection accepted first among those still reading their request.
    fn oldest_idle(&self) -> Option<usize> {
        self.conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                c.as_ref()
                    .filter(|c| c.out.is_none())
                    .map(|c| (i, c.deadline))
            })
            .min_by_key(|&(_, d)| d)
            .map(|(i, _)| i)
    }

    fn accept_recovered(&mut self) {
        if self.accept_logged.take().is_some() {
            warn!(address = %self.addr, "admin API accepting connections again");
            self.accept_failures = 0;
        }
    }

    fn close(&mut self, slot: usize) {
        if let Some(mut c) = self.conns[slot].take() {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
        if self.full {
            self.full = false;
            self.accept();
        }
    }

    fn drive(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let end = match step(conn, &self.limits, &self.stats, &mut self.handler) {
            Ok(None) => return,
            Ok(Some(end)) => end,
            Err(e) => {
                debug!(peer = %conn.peer, error = %e, "admin API: connection failed");
                End::Early
            }
        };
        if matches!(end, End::Early) {
            self.stats.count(ConnOutcome::ClosedEarly);
        }
        self.close(slot);
    }
}

/// Reads what there is, answers once the request is whole, writes what fits.
/// `Ok(None)`: wait for readiness.
fn step(
    conn: &mut Conn,
    limits: &Limits,
    stats: &HttpStats,
    handler: &mut Handler,
) -> io::Result<Option<End>> {
    if conn.out.is_none() {
        let cap = limits.max_head + limits.max_body;
        let mut chunk = [0u8; 4096];
        // A client may half-close after its request: answer it all the same.
        let mut eof = false;
        loop {
            match conn.stream.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    // Never hold more than a whole request could be (+1 so that
                    // "too large" is seen).
                    let keep = n.min(cap + 1 - conn.buf.len().min(cap + 1));
                    conn.buf.extend_from_slice(&chunk[..keep]);
                    if conn.buf.len() > cap {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let response = match parse(&conn.buf, limits) {
            Parsed::Partial | Parsed::ExpectsContinue if eof => return Ok(Some(End::Early)),
            Parsed::Partial => return Ok(None),
            Parsed::ExpectsContinue => {
                if !conn.continue_sent {
                    conn.continue_sent = true;
                    // Small enough for any empty socket buffer; if it does not go
                    // out, the client sends its body after its own timeout anyway.
                    let _ = conn.stream.write(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                return Ok(None);
            }
            Parsed::Refused(status, why) => {
                stats.count(ConnOutcome::BadRequest);
                debug!(peer = %conn.peer, status, why, "admin API: request refused");
                Response::error(status, &why).encode(false)
            }
            Parsed::Done {
                method,
                target,
                body,
            } => {
                let text = |(a, b): (usize, usize)| std::str::from_utf8(&conn.buf[a..b]);
                match (text(method), text(target)) {
                    (Ok(m), Ok(t)) => {
                        let req = Request {
                            method: m,
                            target: t,
                            body: &conn.buf[body.0..body.1],
                        };
                        let head_only = m == "HEAD";
                        let r =
                            catch_unwind(AssertUnwindSafe(|| handler(&req))).unwrap_or_else(|_| {
                                stats.count(ConnOutcome::HandlerPanic);
                                error!(method = m, target = t, "admin API: handler panicked");
                                Response::error(500, "internal error (logged)")
                            });
                        stats.count(ConnOutcome::Served);
                        r.encode(head_only)
                    }
                    _ => {
                        stats.count(ConnOutcome::BadRequest);
                        Response::error(400, "request line is not UTF-8").encode(false)
                    }
                }
            }
        };
        conn.out = Some((response, 0));
    }
    let Some((out, sent)) = conn.out.as_mut() else {
        return Ok(None);
    };
    while *sent < out.len() {
        match conn.stream.write(&out[*sent..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => *sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let _ = conn.stream.shutdown(std::net::Shutdown::Write);
    Ok(Some(End::Answered))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream as StdStream;

    fn limits() -> Limits {
        Limits {
            max_connections: 4,
            max_head: 256,
            max_body: 64,
            timeout: Duration::from_secs(5),
        }
    }

    fn parsed(raw: &str) -> Parsed {
        parse(raw.as_bytes(), &limits())
    }

    #[test]
    fn parses_whole_requests_only() {
        assert_eq!(
            parsed("GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            Parsed::Partial
        );
        let raw = "POST /reload?x=1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let Parsed::Done {
            method,
            target,
            body,
        } = parsed(raw)
        else {
            panic!("not done: {:?}", parsed(raw));
        };
        assert_eq!(&raw[method.0..method.1], "POST");
        assert_eq!(&raw[target.0..target.1], "/reload?x=1");
        assert_eq!(&raw[body.0..body.1], "abc");
        assert_eq!(
            parsed("POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nab"),
            Parsed::Partial
        );
        assert_eq!(
            parsed("POST / HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"),
            Parsed::ExpectsContinue
        );
    }

    #[test]
    fn refuses_what_it_cannot_serve() {
        let status = |raw: &str| match parsed(raw) {
            Parsed::Refused(s, _) => s,
            other => panic!("{raw:?} not refused: {other:?}"),
        };
        assert_eq!(status("GET / HTTP/1.1\r\nHo st: x\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(
            status("GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            status("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            501
        );
        assert_eq!(status("POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n"), 413);
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(300));
        assert_eq!(status(&long), 431);
        let many: String = (0..40).map(|i| format!("h{i}: v\r\n")).collect();
        assert_eq!(status(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
    }

    fn serve(limits: Limits) -> (HttpServer, Arc<HttpStats>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stats = Arc::new(HttpStats::default());
        let server = HttpServer::start(
            listener,
            "test-http",
            limits,
            stats.clone(),
            Box::new(|req: &Request<'_>| {
                if req.target == "/panic" {
                    panic!("asked to");
                }
                Response::json(
                    200,
                    format!(
                        "{} {} {}",
                        req.method,
                        req.target,
                        String::from_utf8_lossy(req.body)
                    ),
                )
            }),
        )
        .unwrap();
        (server, stats)
    }

    fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
        let mut s = StdStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(raw).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn answers_over_a_socket_and_counts() {
        let (server, stats) = serve(limits());
        let addr = server.local_addr();
        let r = exchange(addr, b"POST /w?v=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Length: 14\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nPOST /w?v=1 hi"), "{r}");
        // HEAD: the length of the body, not the body.
        let r = exchange(addr, b"HEAD /x HTTP/1.1\r\n\r\n");
        assert!(
            r.contains("Content-Length: 8\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        let r = exchange(addr, b"GET /panic HTTP/1.1\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 500 "), "{r}");
        let r = exchange(addr, b"GET / HTTP/1.1\r\nContent-Length: 1000\r\n\r\n");
        assert!(r.starts_with("HTTP/1.1 413 "), "{r}");
        // Sent in pieces, with a body after 100 Continue.
        let mut s = StdStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"POST /c HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
            .unwrap();
        let mut interim = [0u8; 25];
        s.read_exact(&mut interim).unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        s.write_all(b"abc").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.ends_with("POST /c abc"), "{out}");
        // A client that leaves early.
        drop(StdStream::connect(addr).unwrap());
        let deadline = Instant::now() + Duration::from_secs(5);
        while stats.get().connections(ConnOutcome::ClosedEarly) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        server.stop();
        let c = stats.get();
        let by: Vec<(&str, u64)> = c.by_outcome().map(|(o, n)| (o.into(), n)).collect();
        assert_eq!(
            by,
            [
                ("served", 4),
                ("bad_request", 1),
                ("timed_out", 0),
                ("closed_early", 1),
                ("handler_panic", 1),
                ("evicted", 0)
            ],
            "{c:?}"
        );
    }

    /// More idle connections than slots: a new connection takes the slot of the oldest
    /// idle one, so a real request is answered at once; the other idle one is closed at
    /// the timeout.
    #[test]
    fn idle_connections_make_room_for_a_request() {
        let (server, stats) = serve(Limits {
            max_connections: 2,
            timeout: Duration::from_millis(300),
            ..limits()
        });
        let addr = server.local_addr();
        let idle: Vec<StdStream> = (0..2).map(|_| StdStream::connect(addr).unwrap()).collect();
        let r = exchange(addr, b"GET /late HTTP/1.1\r\n\r\n");
        assert!(r.ends_with("GET /late "), "{r}");
        for mut c in idle {
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut b = Vec::new();
            // Closed (evicted or timed out) without an answer.
            assert!(
                c.read_to_end(&mut b).map_or(true, |n| n == 0),
                "an idle connection got data"
            );
        }
        server.stop();
        let c = stats.get();
        assert_eq!(c.connections(ConnOutcome::Evicted), 1, "{c:?}");
        assert_eq!(c.connections(ConnOutcome::TimedOut), 1, "{c:?}");
    }

    /// A slowloris: many more idle connections than slots, with a timeout far longer
    /// than the client waits. The request is still answered (it used to wait in the
    /// backlog for the idle ones to time out).
    #[test]
    fn a_slowloris_does_not_starve_a_request() {
        let (server, stats) = serve(Limits {
            max_connections: 4,
            timeout: Duration::from_secs(120),
            ..limits()
        });
        let addr = server.local_addr();
        let idle: Vec<StdStream> = (0..40).map(|_| StdStream::connect(addr).unwrap()).collect();
        // Half a request head each: they look like slow clients.
        for mut c in &idle {
            let _ = c.write_all(b"GET /m");
        }
        // `exchange` waits at most 5 s for the answer.
        let r = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(r.ends_with("GET /metrics "), "{r}");
        server.stop();
        assert!(stats.get().connections(ConnOutcome::Evicted) >= 36);
        drop(idle);
    }
}
