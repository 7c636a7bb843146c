//! A DTLS echo server that issues routable CIDs and follows its clients across
//! address changes the RFC 9146 / RFC 9147 way, on any [`DtlsStack`].

use std::collections::HashMap;
use std::io;
use std::marker::PhantomData;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::stack::{DtlsSession, DtlsStack, Handshake, Read, RecordCheck, Timer};
use crate::{DEFAULT_PSK, DEFAULT_PSK_IDENTITY};

/// Longest the server thread sleeps in `recv_from` before checking timers and `stop`.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// A session whose handshake has not completed after this long without traffic is
/// forgotten (this also bounds the state kept for cookie round trips).
const HANDSHAKE_IDLE_LIMIT: Duration = Duration::from_secs(20);
/// Bounds the work done on one datagram or timer expiry.
const MAX_STEPS_PER_EVENT: usize = 64;
/// Largest datagram the server reads.
const MAX_DATAGRAM: usize = 65_535;

/// Where a [`DtlsServer`] takes the CID of each new session from, instead of its
/// prefix and random bytes: e.g. a routable-CID generator (QUIC-LB, prefix format).
///
/// Called once per new session, on the server thread; it must return `cid_len` octets
/// (a CID of another length, or one already in use after 1000 tries, drops the
/// ClientHello, counted in [`ServerStats::dropped`]).
#[derive(Clone)]
pub struct CidSource(Arc<dyn Fn() -> Vec<u8> + Send + Sync>);

impl CidSource {
    /// A source calling `f` for every new session.
    pub fn new(f: impl Fn() -> Vec<u8> + Send + Sync + 'static) -> Self {
        CidSource(Arc::new(f))
    }

    fn next(&self) -> Vec<u8> {
        (self.0)()
    }
}

impl std::fmt::Debug for CidSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CidSource(..)")
    }
}

/// Two sources are equal when they are the same closure.
impl PartialEq for CidSource {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for CidSource {}

/// How to run a [`DtlsServer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address of the UDP socket; port 0 picks a free port.
    pub bind: SocketAddr,
    /// First bytes of every CID this server issues, so that a balancer can route by
    /// prefix. Shorter than `cid_len`.
    pub cid_prefix: Vec<u8>,
    /// Total length of the CIDs this server issues: `cid_prefix` followed by at least
    /// one random byte. At most the stack's [`DtlsStack::CID_MAX_LEN`]; 0 means the
    /// server asks clients not to put a CID in their records (it then demultiplexes by
    /// address only).
    pub cid_len: usize,
    /// PSK identity clients must present (within the stack's limits).
    pub psk_identity: Vec<u8>,
    /// The pre-shared key (within the stack's limits).
    pub psk: Vec<u8>,
    /// Where CIDs come from; `None` (the default): `cid_prefix` then random bytes.
    /// With a source, `cid_prefix` is unused.
    pub cid_source: Option<CidSource>,
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
            cid_source: None,
        }
    }

    /// Takes each session's CID from `source` (see [`CidSource`]).
    pub fn with_cid_source(mut self, source: CidSource) -> Self {
        self.cid_source = Some(source);
        self
    }

    fn validate<S: DtlsStack>(&self) -> io::Result<()> {
        let invalid = |msg: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        if self.cid_len > S::CID_MAX_LEN {
            return invalid(&format!(
                "cid_len is larger than {} ({})",
                S::CID_MAX_LEN,
                S::NAME
            ));
        }
        if self.cid_len > 0 && self.cid_source.is_none() && self.cid_prefix.len() >= self.cid_len {
            return invalid("cid_prefix must leave at least one random byte in the CID");
        }
        if self.cid_len == 0 && !self.cid_prefix.is_empty() {
            return invalid("cid_prefix must be empty when cid_len is 0");
        }
        if self.cid_len == 0 && self.cid_source.is_some() {
            return invalid("a cid_source needs a cid_len");
        }
        S::validate_psk(&self.psk_identity, &self.psk)
    }
}

/// Counters kept by a [`DtlsServer`]; a snapshot is returned by [`DtlsServer::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Full handshakes completed (one per session, plus one per client that reconnected
    /// from the same address and port).
    pub handshakes: u64,
    /// Cookie requests sent: HelloVerifyRequests (DTLS 1.2) or HelloRetryRequests with
    /// a cookie (DTLS 1.3). One per cookie round trip (and, for stacks that answer
    /// statelessly, one per retransmitted first ClientHello).
    pub cookie_requests: u64,
    /// Handshakes that failed, or gave up retransmitting, after the cookie exchange.
    pub failed_handshakes: u64,
    /// Sessions currently established.
    pub active_sessions: u64,
    /// Established sessions that ended (close_notify or a fatal error).
    pub closed_sessions: u64,
    /// Times a session's peer address changed, each after the stack authenticated
    /// application data from the new address (RFC 9146 §6, RFC 9147 §11).
    pub migrations: u64,
    /// Datagrams with a known CID from a new address that did not move the session:
    /// their first CID record failed authentication, was a replay or was malformed, or
    /// they held no application data.
    pub migrations_rejected: u64,
    /// Datagrams (or, for stacks that count drops themselves, records) for an
    /// established session, from any address, that failed authentication (bad AEAD
    /// tag / MAC); dropped.
    pub auth_failures: u64,
    /// Datagrams for an established session, from any address, rejected as replays:
    /// their first CID record is authentic but replayed or otherwise unexpected, or
    /// (for stacks that drop replays silently, see [`DtlsSession::auth_failures`]) they
    /// gave the stack nothing to do.
    pub replays: u64,
    /// Datagrams whose CID no session owns.
    pub unknown_cid: u64,
    /// Other datagrams dropped: unparsable, or not a ClientHello from an unknown
    /// address, or during a handshake from an address other than the client's.
    pub dropped: u64,
    /// Application-data messages echoed.
    pub echoed: u64,
}

/// A real DTLS server with connection IDs, echoing application data, on its own thread.
///
/// It demultiplexes datagrams itself: a datagram holding a CID record goes to the
/// session that issued that CID, any other datagram to the session of its source
/// address, and a ClientHello from an unknown address starts a new session (after a
/// cookie round trip). A session follows its client to a new address only once the
/// stack has authenticated application data from there.
///
/// The thread stops on [`stop`](Self::stop) or drop, and stalls (as a process under
/// `kill -STOP` would) between [`pause`](Self::pause) and [`resume`](Self::resume).
pub struct DtlsServer<S: DtlsStack> {
    local_addr: SocketAddr,
    counters: Counters,
    peers: Peers,
    stop: Arc<AtomicBool>,
    pause: Arc<Pause>,
    thread: Option<JoinHandle<()>>,
    stack: PhantomData<fn() -> S>,
}

impl<S: DtlsStack> std::fmt::Debug for DtlsServer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsServer")
            .field("stack", &S::NAME)
            .field("local_addr", &self.local_addr)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl<S: DtlsStack> DtlsServer<S> {
    /// Binds the socket and starts the server thread.
    pub fn spawn(config: ServerConfig) -> io::Result<DtlsServer<S>> {
        config.validate::<S>()?;
        // Fail here, not on the server thread, if the stack cannot be set up.
        let context = S::server_context(&config)?;
        let socket = UdpSocket::bind(config.bind)?;
        socket.set_read_timeout(Some(POLL_INTERVAL))?;
        let local_addr = socket.local_addr()?;
        let counters = Counters::default();
        let peers = Peers::default();
        let stop = Arc::new(AtomicBool::new(false));
        let pause = Arc::new(Pause::default());
        let mut server = Server::<S> {
            socket,
            context,
            cid_prefix: config.cid_prefix,
            cid_len: config.cid_len,
            cid_source: config.cid_source,
            sessions: HashMap::new(),
            by_addr: HashMap::new(),
            by_cid: HashMap::new(),
            next_id: 0,
            counters: counters.clone(),
            peers: peers.clone(),
            stop: Arc::clone(&stop),
            pause: Arc::clone(&pause),
        };
        let thread = thread::Builder::new()
            .name(format!("{}-server-{local_addr}", S::NAME))
            .spawn(move || server.run())?;
        Ok(DtlsServer {
            local_addr,
            counters,
            peers,
            stop,
            pause,
            thread: Some(thread),
            stack: PhantomData,
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

    /// Every peer address that application data was echoed to (the clients' addresses
    /// as this server saw them), sorted.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
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

    /// Stalls the server as `kill -STOP` stalls a UDP server process: from the time this
    /// returns until [`resume`](Self::resume), the server thread reads nothing from its
    /// socket, sends nothing and runs no timers. Datagrams that arrive meanwhile wait in
    /// the socket's receive buffer (or are dropped by the kernel when it is full) and are
    /// handled after `resume`, like a stopped process's; sessions and counters stay.
    ///
    /// Returns once the thread has stalled: within about one poll interval plus the
    /// datagram it may be handling (at most 5 s; at once if the thread has ended).
    pub fn pause(&self) {
        let mut state = self.pause.lock();
        state.requested = true;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !state.parked
            && self.thread.as_ref().is_some_and(|t| !t.is_finished())
            && Instant::now() < deadline
        {
            state = self
                .pause
                .changed
                .wait_timeout(state, POLL_INTERVAL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Ends a [`pause`](Self::pause): the server thread reads its socket again, starting
    /// with whatever the kernel queued meanwhile (`SIGCONT`). Does nothing if the server
    /// is not paused.
    pub fn resume(&self) {
        self.pause.lock().requested = false;
        self.pause.changed.notify_all();
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

impl<S: DtlsStack> Drop for DtlsServer<S> {
    fn drop(&mut self) {
        self.stop();
    }
}

type SessionId = u64;

/// One client's DTLS state.
struct Session<T> {
    ssl: T,
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
    /// A cookie request was queued; the session waits for the ClientHello with the
    /// cookie.
    cookie_sent: bool,
    /// The client restarted its handshake from the same address and port.
    reconnected: bool,
    echoed: u64,
    closed: bool,
    /// Authentication failures the stack counted (see [`DtlsSession::auth_failures`]).
    auth_failures: u64,
    /// The event may have been a silently dropped replay: it gave an established
    /// session of a stack that counts its own drops nothing to do. It was one if the
    /// session queued no reply either.
    maybe_replay: bool,
}

impl<T: DtlsSession> Session<T> {
    /// Runs the stack on the pending input (or timer expiry) until it wants more input,
    /// echoing any application data read.
    fn pump(&mut self, buf: &mut [u8]) -> io::Result<Progress> {
        let mut progress = Progress::default();
        // Only drops in an established session count: during a handshake, duplicates
        // of retransmitted flights are routine.
        let was_established = self.established;
        let failures_before = self.ssl.auth_failures();
        self.pump_inner(buf, &mut progress)?;
        if let (true, Some(before)) = (was_established, failures_before) {
            let after = self.ssl.auth_failures().unwrap_or(before);
            progress.auth_failures = after.saturating_sub(before);
            progress.maybe_replay =
                progress.echoed == 0 && !progress.closed && progress.auth_failures == 0;
        }
        Ok(progress)
    }

    fn pump_inner(&mut self, buf: &mut [u8], progress: &mut Progress) -> io::Result<()> {
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
                    // The same address and port started a new handshake; the stack has
                    // already reset the session, keeping that ClientHello.
                    Read::Reconnect => {
                        self.established = false;
                        progress.reconnected = true;
                    }
                }
            } else {
                match self.ssl.handshake()? {
                    Handshake::Done => {
                        self.established = true;
                        progress.handshake_completed = true;
                    }
                    // A stack may check its retransmission timer before reading, so
                    // the pending datagram may still be waiting after a resend.
                    Handshake::WantInput if self.ssl.has_input() => {}
                    Handshake::WantInput => break,
                    Handshake::CookieSent => {
                        progress.cookie_sent = true;
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

/// State of the server thread.
struct Server<S: DtlsStack> {
    socket: UdpSocket,
    context: S::ServerContext,
    cid_prefix: Vec<u8>,
    cid_len: usize,
    cid_source: Option<CidSource>,
    sessions: HashMap<SessionId, Session<S::Session>>,
    by_addr: HashMap<SocketAddr, SessionId>,
    by_cid: HashMap<Vec<u8>, SessionId>,
    next_id: SessionId,
    counters: Counters,
    peers: Peers,
    stop: Arc<AtomicBool>,
    pause: Arc<Pause>,
}

impl<S: DtlsStack> Server<S> {
    fn run(&mut self) {
        let mut datagram = vec![0u8; MAX_DATAGRAM];
        let mut scratch = vec![0u8; MAX_DATAGRAM];
        while !self.stop.load(Ordering::Relaxed) {
            self.stall_while_paused();
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let timeout = self.poll_timeout();
            // Only fails for a zero duration, which `poll_timeout` never returns.
            let _ = self.socket.set_read_timeout(Some(timeout));
            // Errors are timeouts, or ICMP errors reported for earlier sends: nothing to
            // do either way.
            if let Ok((len, src)) = self.socket.recv_from(&mut datagram) {
                self.on_datagram(&datagram[..len], src, &mut scratch);
            }
            self.on_timers(&mut scratch);
            self.forget_stale_handshakes();
        }
    }

    /// While [`DtlsServer::pause`] holds, does nothing at all (checking `stop` every
    /// poll interval).
    fn stall_while_paused(&self) {
        let mut state = self.pause.lock();
        if !state.requested {
            return;
        }
        state.parked = true;
        self.pause.changed.notify_all();
        while state.requested && !self.stop.load(Ordering::Relaxed) {
            state = self
                .pause
                .changed
                .wait_timeout(state, POLL_INTERVAL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        state.parked = false;
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
        if self.cid_len > 0 {
            if let Some(cid_record) = S::first_cid_record(datagram, self.cid_len) {
                match self.by_cid.get(cid_record.cid) {
                    Some(&id) => self.on_cid_datagram(id, datagram, cid_record.bytes, src, scratch),
                    None => self.counters.update(|s| s.unknown_cid += 1),
                }
                return;
            }
        }
        match self.by_addr.get(&src) {
            Some(&id) => self.deliver(id, datagram, src, scratch),
            None if S::starts_with_client_hello(datagram) => {
                self.new_session(datagram, src, scratch)
            }
            None => self.counters.update(|s| s.dropped += 1),
        }
    }

    /// A datagram carrying the CID of session `id`, whose first CID record is `record`.
    fn on_cid_datagram(
        &mut self,
        id: SessionId,
        datagram: &[u8],
        record: &[u8],
        src: SocketAddr,
        scratch: &mut [u8],
    ) {
        let session = self.sessions.get_mut(&id).expect("CID index is consistent");
        let moving = src != session.peer;
        if !session.established {
            // The client's Finished is its first CID record. A handshake does not move
            // between addresses.
            if moving {
                self.counters.update(|s| s.dropped += 1);
            } else {
                self.deliver(id, datagram, src, scratch);
            }
            return;
        }
        // A stack would drop a forged or replayed record silently; checking it first
        // (where the stack can) tells the cases apart for the counters, and RFC 9146 §6
        // wants a new address considered only for an authentic, fresh record.
        let rejected = match session.ssl.check_record(record) {
            RecordCheck::Fresh => return self.deliver(id, datagram, src, scratch),
            RecordCheck::BadMac => |s: &mut ServerStats| s.auth_failures += 1,
            RecordCheck::Unexpected => |s: &mut ServerStats| s.replays += 1,
            RecordCheck::Invalid => |s: &mut ServerStats| s.dropped += 1,
        };
        self.counters.update(|s| {
            rejected(s);
            s.migrations_rejected += u64::from(moving);
        });
    }

    fn new_session(&mut self, datagram: &[u8], src: SocketAddr, scratch: &mut [u8]) {
        let Some(cid) = self.fresh_cid() else {
            self.counters.update(|s| s.dropped += 1);
            return;
        };
        let Ok(ssl) = S::server_session(&self.context, &cid, src) else {
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

    /// A CID not in use: from the [`CidSource`], else the configured prefix, then
    /// random bytes. `None` if the source gives a CID of the wrong length, or only
    /// CIDs in use.
    fn fresh_cid(&self) -> Option<Vec<u8>> {
        if let Some(source) = &self.cid_source {
            for _ in 0..1000 {
                let cid = source.next();
                if cid.len() != self.cid_len {
                    return None;
                }
                if !self.by_cid.contains_key(&cid) {
                    return Some(cid);
                }
            }
            return None;
        }
        let mut cid = self.cid_prefix.clone();
        cid.resize(self.cid_len, 0);
        for _ in 0..1000 {
            if getrandom::fill(&mut cid[self.cid_prefix.len()..]).is_ok()
                && !self.by_cid.contains_key(&cid)
            {
                break;
            }
        }
        Some(cid)
    }

    /// Feeds `datagram` from `src` to session `id`. If `src` is not the session's
    /// current peer (only possible for an established session reached by CID), the
    /// datagram has already passed `check_record`, and the session moves to `src` if
    /// the stack then reads application data from it.
    fn deliver(&mut self, id: SessionId, datagram: &[u8], src: SocketAddr, scratch: &mut [u8]) {
        let session = self
            .sessions
            .get_mut(&id)
            .expect("session index is consistent");
        session.last_activity = Instant::now();
        session.ssl.feed(datagram.to_vec());
        let result = session.pump(scratch);
        let migrate = src != session.peer;
        if migrate {
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

    fn on_timers(&mut self, scratch: &mut [u8]) {
        let now = Instant::now();
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.ssl.timer_deadline().is_some_and(|d| d <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            let session = self.sessions.get_mut(&id).expect("id was just listed");
            let result = match session.ssl.on_timer() {
                Ok(Timer::Pump) => session.pump(scratch),
                Ok(Timer::Handled) => Ok(Progress::default()),
                Err(e) => Err(e),
            };
            self.after_pump(id, result);
        }
    }

    /// Sends what the session queued, updates the counters, and ends the session if it
    /// is over.
    fn after_pump(&mut self, id: SessionId, result: io::Result<Progress>) {
        let session = self
            .sessions
            .get_mut(&id)
            .expect("session index is consistent");
        let output = session.ssl.take_output();
        // Counters first: a client that sees the reply may look at them at once.
        match &result {
            Ok(p) => self.counters.update(|s| {
                s.handshakes += u64::from(p.handshake_completed);
                s.active_sessions += u64::from(p.handshake_completed);
                s.active_sessions -= u64::from(p.reconnected);
                s.cookie_requests += u64::from(p.cookie_sent);
                s.echoed += p.echoed;
                s.auth_failures += p.auth_failures;
                s.replays += u64::from(p.maybe_replay && output.is_empty());
            }),
            Err(_) if !session.established => self.counters.update(|s| s.failed_handshakes += 1),
            Err(_) => {}
        }
        if matches!(&result, Ok(p) if p.echoed > 0) {
            self.peers
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(session.peer);
        }
        for datagram in output {
            // Best effort, as UDP is; a failure looks like loss to the peer.
            let _ = self.socket.send_to(&datagram, session.peer);
        }
        match result {
            Ok(p) if p.cookie_sent => {
                // Stay ready for the ClientHello with the cookie, from the same address.
                let peer = session.peer;
                if session.ssl.reset_after_cookie(peer).is_err() {
                    self.remove(id);
                }
            }
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

/// [`DtlsServer::pause`] and [`DtlsServer::resume`] talking to the server thread.
#[derive(Debug, Default)]
struct Pause {
    state: Mutex<PauseState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct PauseState {
    /// Set by `pause`, cleared by `resume`.
    requested: bool,
    /// Set by the server thread while it stalls.
    parked: bool,
}

impl Pause {
    fn lock(&self) -> std::sync::MutexGuard<'_, PauseState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The shared counters: written by the server thread, read by [`DtlsServer::stats`].
#[derive(Debug, Clone, Default)]
struct Counters(Arc<Mutex<ServerStats>>);

/// The peer addresses a server echoed to.
#[derive(Debug, Clone, Default)]
struct Peers(Arc<Mutex<std::collections::BTreeSet<SocketAddr>>>);

impl Counters {
    fn update(&self, update: impl FnOnce(&mut ServerStats)) {
        update(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn snapshot(&self) -> ServerStats {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
