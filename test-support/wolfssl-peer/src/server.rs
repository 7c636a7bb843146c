//! A DTLS 1.3 echo server that issues routable CIDs and follows its clients across
//! address changes the RFC 9147 way.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::ffi::{self, Endpoint, Handshake, Read, Ssl};
use crate::{record, DEFAULT_PSK, DEFAULT_PSK_IDENTITY};

/// Longest the server thread sleeps in `recv_from` before checking timers and `stop`.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// A session whose handshake has not completed after this long without traffic is
/// forgotten (this also bounds the state kept for HelloRetryRequest round trips).
const HANDSHAKE_IDLE_LIMIT: Duration = Duration::from_secs(20);
/// Bounds the work done on one datagram or timer expiry.
const MAX_STEPS_PER_EVENT: usize = 64;
/// Largest datagram the server reads.
const MAX_DATAGRAM: usize = 65_535;

/// How to run a [`DtlsServer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address of the UDP socket; port 0 picks a free port.
    pub bind: SocketAddr,
    /// First bytes of every CID this server issues, so that a balancer can route by
    /// prefix. Shorter than `cid_len`.
    pub cid_prefix: Vec<u8>,
    /// Total length of the CIDs this server issues: `cid_prefix` followed by at least
    /// one random byte. At most 10 ([`CID_MAX_LEN`](crate::CID_MAX_LEN), wolfSSL's
    /// `DTLS_CID_MAX_SIZE` in this build); 0 means the server asks clients not to put a
    /// CID in their records (it then demultiplexes by address only).
    pub cid_len: usize,
    /// PSK identity clients must present (1 to 127 bytes, no NUL byte).
    pub psk_identity: Vec<u8>,
    /// The pre-shared key (1 to 64 bytes).
    pub psk: Vec<u8>,
}

impl ServerConfig {
    /// A server on `bind` issuing `cid_len`-byte CIDs that start with `cid_prefix`, using
    /// [`DEFAULT_PSK_IDENTITY`] and [`DEFAULT_PSK`].
    pub fn new(bind: SocketAddr, cid_prefix: impl Into<Vec<u8>>, cid_len: usize) -> Self {
        Self {
            bind,
            cid_prefix: cid_prefix.into(),
            cid_len,
            psk_identity: DEFAULT_PSK_IDENTITY.to_vec(),
            psk: DEFAULT_PSK.to_vec(),
        }
    }

    fn validate(&self) -> io::Result<()> {
        let invalid = |msg: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        if self.cid_len > ffi::CID_MAX_LEN {
            return invalid("cid_len is larger than 10 (wolfSSL's DTLS_CID_MAX_SIZE)");
        }
        if self.cid_len > 0 && self.cid_prefix.len() >= self.cid_len {
            return invalid("cid_prefix must leave at least one random byte in the CID");
        }
        if self.cid_len == 0 && !self.cid_prefix.is_empty() {
            return invalid("cid_prefix must be empty when cid_len is 0");
        }
        crate::validate_psk(&self.psk_identity, &self.psk)
    }
}

/// Counters kept by a [`DtlsServer`]; a snapshot is returned by [`DtlsServer::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Full handshakes completed (one per session).
    pub handshakes: u64,
    /// HelloRetryRequests with a cookie sent (one per cookie round trip, and one per
    /// retransmitted first ClientHello).
    pub hello_retry_requests: u64,
    /// Handshakes that failed, or gave up retransmitting, after the cookie exchange.
    pub failed_handshakes: u64,
    /// Sessions currently established.
    pub active_sessions: u64,
    /// Established sessions that ended (close_notify or a fatal error).
    pub closed_sessions: u64,
    /// Times a session's peer address changed, each after wolfSSL returned
    /// application data from a record that came from the new address (so the record
    /// was authenticated and fresh: RFC 9146 §6, RFC 9147 §11).
    pub migrations: u64,
    /// Datagrams with a known CID from a new address that did not move the session:
    /// wolfSSL read no application data from them (forged, replayed, malformed, or
    /// holding only ACKs or handshake messages).
    pub migrations_rejected: u64,
    /// Records for an established session that wolfSSL dropped because they failed
    /// authentication (AEAD tag), from any address (wolfSSL's drop statistics).
    pub auth_failures: u64,
    /// Datagrams for an established session, from any address, that authenticated (or
    /// were never decrypted) but gave wolfSSL nothing to do: no application data, no
    /// reply, no alert. wolfSSL drops DTLS 1.3 records outside its replay window
    /// silently, so this is how a replay shows; a duplicate ACK or handshake
    /// retransmission would count here too.
    pub replays: u64,
    /// Datagrams whose CID no session owns.
    pub unknown_cid: u64,
    /// Other datagrams dropped: unparsable, or not a ClientHello from an unknown
    /// address, or during a handshake from an address other than the client's.
    pub dropped: u64,
    /// Application-data messages echoed.
    pub echoed: u64,
}

/// A real wolfSSL DTLS 1.3 server with RFC 9147 connection IDs, echoing application
/// data, on its own thread.
///
/// It demultiplexes datagrams itself: a datagram holding a unified-header record with
/// the C bit goes to the session that issued that CID, any other datagram to the session
/// of its source address, and a ClientHello from an unknown address starts a new
/// session (after a HelloRetryRequest cookie round trip). A session follows its client
/// to a new address only once wolfSSL has returned application data read from a record
/// that came from there.
///
/// The thread stops on [`stop`](Self::stop) or drop.
#[derive(Debug)]
pub struct DtlsServer {
    local_addr: SocketAddr,
    counters: Counters,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DtlsServer {
    /// Binds the socket and starts the server thread.
    pub fn spawn(config: ServerConfig) -> io::Result<DtlsServer> {
        config.validate()?;
        // Fail here, not on the server thread, if wolfSSL cannot be set up.
        drop(Ssl::new(
            Endpoint::Server,
            &config.psk_identity,
            &config.psk,
        )?);
        let socket = UdpSocket::bind(config.bind)?;
        socket.set_read_timeout(Some(POLL_INTERVAL))?;
        let local_addr = socket.local_addr()?;
        let counters = Counters::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut server = Server {
            socket,
            config,
            sessions: HashMap::new(),
            by_addr: HashMap::new(),
            by_cid: HashMap::new(),
            next_id: 0,
            counters: counters.clone(),
            stop: Arc::clone(&stop),
        };
        let thread = thread::Builder::new()
            .name(format!("wolfssl-server-{local_addr}"))
            .spawn(move || server.run())?;
        Ok(DtlsServer {
            local_addr,
            counters,
            stop,
            thread: Some(thread),
        })
    }

    /// The address the server's socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ServerStats {
        self.counters.snapshot()
    }

    /// Polls [`stats`](Self::stats) until `done` holds or `timeout` passes; returns the
    /// last snapshot either way. Useful for counters that no reply to the client
    /// orders, such as rejected datagrams.
    pub fn wait_for_stats(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&ServerStats) -> bool,
    ) -> ServerStats {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.stats();
            if done(&stats) || Instant::now() >= deadline {
                return stats;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the server thread and waits for it (at most about one poll interval).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // A panic on the server thread has already been reported on stderr; the
            // tests see its effect through their own assertions.
            let _ = thread.join();
        }
    }
}

impl Drop for DtlsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

type SessionId = u64;

/// One client's DTLS state.
struct Session {
    ssl: Ssl,
    /// The CID this server issued for the session.
    cid: Vec<u8>,
    /// Where the client is now; replies go here.
    peer: SocketAddr,
    established: bool,
    last_activity: Instant,
}

/// What handling one event did to a session.
#[derive(Debug, Default)]
struct Progress {
    handshake_completed: bool,
    hello_retry_requests: u64,
    echoed: u64,
    closed: bool,
    auth_failures: u64,
    replays: u64,
}

impl Session {
    /// Runs wolfSSL on the pending input until it wants more, echoing any application
    /// data read.
    fn pump(&mut self, buf: &mut [u8]) -> Result<Progress, ffi::Error> {
        let mut progress = Progress::default();
        // Only drops in an established session count: during a handshake, duplicates
        // of retransmitted flights are routine.
        let was_established = self.established;
        let failures_before = self.ssl.auth_failures();
        let result = self.pump_inner(buf, &mut progress);
        if was_established && result.is_ok() {
            progress.auth_failures = self.ssl.auth_failures().saturating_sub(failures_before);
            let ignored = progress.echoed == 0
                && !progress.closed
                && progress.auth_failures == 0
                && self.ssl.output_len() == 0;
            progress.replays = u64::from(ignored);
        }
        result.map(|()| progress)
    }

    fn pump_inner(&mut self, buf: &mut [u8], progress: &mut Progress) -> Result<(), ffi::Error> {
        for _ in 0..MAX_STEPS_PER_EVENT {
            if self.established {
                match self.ssl.read(buf)? {
                    Read::Data(0) => {}
                    Read::Data(n) => {
                        self.ssl.write(&buf[..n])?;
                        progress.echoed += 1;
                    }
                    Read::WantInput if self.ssl.has_input() => {}
                    Read::WantInput => break,
                    Read::Closed => {
                        progress.closed = true;
                        break;
                    }
                }
            } else {
                let queued = self.ssl.output_len();
                let step = self.ssl.handshake()?;
                // Before a ClientHello with a valid cookie, wolfSSL answers
                // statelessly, and what it sends is a HelloRetryRequest.
                if !self.ssl.is_stateful() && self.ssl.output_len() > queued {
                    progress.hello_retry_requests += 1;
                }
                match step {
                    Handshake::Done => {
                        self.established = true;
                        progress.handshake_completed = true;
                    }
                    Handshake::WantInput if self.ssl.has_input() => {}
                    Handshake::WantInput => break,
                }
            }
        }
        Ok(())
    }
}

/// State of the server thread.
struct Server {
    socket: UdpSocket,
    config: ServerConfig,
    sessions: HashMap<SessionId, Session>,
    by_addr: HashMap<SocketAddr, SessionId>,
    by_cid: HashMap<Vec<u8>, SessionId>,
    next_id: SessionId,
    counters: Counters,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn run(&mut self) {
        let mut datagram = vec![0u8; MAX_DATAGRAM];
        let mut scratch = vec![0u8; MAX_DATAGRAM];
        while !self.stop.load(Ordering::Relaxed) {
            let timeout = self.poll_timeout();
            // Only fails for a zero duration, which `poll_timeout` never returns.
            let _ = self.socket.set_read_timeout(Some(timeout));
            // Errors are timeouts, or ICMP errors reported for earlier sends: nothing to
            // do either way.
            if let Ok((len, src)) = self.socket.recv_from(&mut datagram) {
                self.on_datagram(&datagram[..len], src, &mut scratch);
            }
            self.on_timers();
            self.forget_stale_handshakes();
        }
    }

    fn poll_timeout(&self) -> Duration {
        let now = Instant::now();
        self.sessions
            .values()
            .filter_map(|s| s.ssl.timer_deadline())
            .map(|deadline| deadline.saturating_duration_since(now))
            .fold(POLL_INTERVAL, Duration::min)
            .max(Duration::from_millis(1))
    }

    fn on_datagram(&mut self, datagram: &[u8], src: SocketAddr, scratch: &mut [u8]) {
        if self.config.cid_len > 0 {
            if let Some(cid) = record::first_cid(datagram, self.config.cid_len) {
                match self.by_cid.get(cid) {
                    Some(&id) => self.on_cid_datagram(id, datagram, src, scratch),
                    None => self.counters.update(|s| s.unknown_cid += 1),
                }
                return;
            }
        }
        match self.by_addr.get(&src) {
            Some(&id) => self.deliver(id, datagram, src, scratch),
            None if record::starts_with_client_hello(datagram) => {
                self.new_session(datagram, src, scratch)
            }
            None => self.counters.update(|s| s.dropped += 1),
        }
    }

    /// A datagram carrying the CID of session `id`.
    fn on_cid_datagram(
        &mut self,
        id: SessionId,
        datagram: &[u8],
        src: SocketAddr,
        scratch: &mut [u8],
    ) {
        let session = self.sessions.get(&id).expect("CID index is consistent");
        if !session.established && src != session.peer {
            // A handshake does not move between addresses.
            self.counters.update(|s| s.dropped += 1);
            return;
        }
        self.deliver(id, datagram, src, scratch);
    }

    fn new_session(&mut self, datagram: &[u8], src: SocketAddr, scratch: &mut [u8]) {
        let cid = self.fresh_cid();
        let ssl = Ssl::new(
            Endpoint::Server,
            &self.config.psk_identity,
            &self.config.psk,
        )
        .and_then(|mut ssl| {
            ssl.enable_cid(&cid)?;
            Ok(ssl)
        });
        let Ok(ssl) = ssl else {
            self.counters.update(|s| s.dropped += 1);
            return;
        };
        let id = self.next_id;
        self.next_id += 1;
        self.by_addr.insert(src, id);
        if !cid.is_empty() {
            self.by_cid.insert(cid.clone(), id);
        }
        self.sessions.insert(
            id,
            Session {
                ssl,
                cid,
                peer: src,
                established: false,
                last_activity: Instant::now(),
            },
        );
        self.deliver(id, datagram, src, scratch);
    }

    /// A CID not in use: the configured prefix, then random bytes.
    fn fresh_cid(&self) -> Vec<u8> {
        let prefix = &self.config.cid_prefix;
        let mut cid = prefix.clone();
        cid.resize(self.config.cid_len, 0);
        for _ in 0..1000 {
            if getrandom::fill(&mut cid[prefix.len()..]).is_ok() && !self.by_cid.contains_key(&cid)
            {
                break;
            }
        }
        cid
    }

    /// Feeds `datagram` from `src` to session `id`. If `src` is not the session's
    /// current peer (only possible for an established session reached by CID), the
    /// session moves to `src` if wolfSSL reads application data from the datagram.
    fn deliver(&mut self, id: SessionId, datagram: &[u8], src: SocketAddr, scratch: &mut [u8]) {
        let session = self
            .sessions
            .get_mut(&id)
            .expect("session index is consistent");
        session.last_activity = Instant::now();
        session.ssl.feed(datagram.to_vec());
        let result = session.pump(scratch);
        if src != session.peer {
            match &result {
                Ok(progress) if progress.echoed > 0 => {
                    let old = session.peer;
                    session.peer = src;
                    if self.by_addr.get(&old) == Some(&id) {
                        self.by_addr.remove(&old);
                    }
                    self.by_addr.insert(src, id);
                    self.counters.update(|s| s.migrations += 1);
                }
                _ => self.counters.update(|s| s.migrations_rejected += 1),
            }
        }
        self.after_pump(id, result);
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.ssl.timer_deadline().is_some_and(|d| d <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            let session = self.sessions.get_mut(&id).expect("id was just listed");
            let result = session.ssl.on_timer().map(|()| Progress::default());
            self.after_pump(id, result);
        }
    }

    /// Sends what the session queued, updates the counters, and ends the session if it
    /// is over.
    fn after_pump(&mut self, id: SessionId, result: Result<Progress, ffi::Error>) {
        let session = self
            .sessions
            .get_mut(&id)
            .expect("session index is consistent");
        // Counters first: a client that sees the reply may look at them at once.
        match &result {
            Ok(p) => self.counters.update(|s| {
                s.handshakes += u64::from(p.handshake_completed);
                s.active_sessions += u64::from(p.handshake_completed);
                s.hello_retry_requests += p.hello_retry_requests;
                s.echoed += p.echoed;
                s.auth_failures += p.auth_failures;
                s.replays += p.replays;
            }),
            Err(_) if !session.established => self.counters.update(|s| s.failed_handshakes += 1),
            Err(_) => {}
        }
        for datagram in session.ssl.take_output() {
            // Best effort, as UDP is; a failure looks like loss to the peer.
            let _ = self.socket.send_to(&datagram, session.peer);
        }
        match result {
            Ok(p) if p.closed => self.remove(id),
            Ok(_) => {}
            Err(_) => self.remove(id),
        }
    }

    fn remove(&mut self, id: SessionId) {
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        if self.by_addr.get(&session.peer) == Some(&id) {
            self.by_addr.remove(&session.peer);
        }
        if self.by_cid.get(&session.cid) == Some(&id) {
            self.by_cid.remove(&session.cid);
        }
        if session.established {
            self.counters.update(|s| {
                s.active_sessions -= 1;
                s.closed_sessions += 1;
            });
        }
    }

    fn forget_stale_handshakes(&mut self) {
        let now = Instant::now();
        let stale: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                !s.established && now.duration_since(s.last_activity) > HANDSHAKE_IDLE_LIMIT
            })
            .map(|(&id, _)| id)
            .collect();
        for id in stale {
            self.remove(id);
        }
    }
}

/// The shared counters: written by the server thread, read by [`DtlsServer::stats`].
#[derive(Debug, Clone, Default)]
struct Counters(Arc<Mutex<ServerStats>>);

impl Counters {
    fn update(&self, update: impl FnOnce(&mut ServerStats)) {
        update(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn snapshot(&self) -> ServerStats {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
