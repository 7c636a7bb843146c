//! Active health checks that speak DTLS.
//!
//! A [`Prober`] sends each backend a real-enough DTLS 1.2 ClientHello (one plaintext
//! handshake record, cipher suite `TLS_PSK_WITH_AES_128_CCM_8`, no cookie). A DTLS
//! server answers a ClientHello without a cookie with a HelloVerifyRequest (DTLS 1.2,
//! RFC 6347 §4.2.1), a HelloRetryRequest or ServerHello (DTLS 1.3), or an alert when it
//! dislikes the offer: **any reply made of well-formed DTLS records means the server is
//! alive**. A timeout, an ICMP port unreachable (`refused`) or a reply that is not DTLS
//! means it is not.
//!
//! **Sockets are bounded.** Up to [`PROBE_SOCKET_BUDGET`] backends (at most an eighth
//! of the open-files limit) get a UDP socket of their own, connected to the backend
//! (the kernel reports its ICMP errors as `ECONNREFUSED`) and kept across rounds. Every
//! other backend is probed through one shared, unconnected socket per source address
//! and family: its answers are matched by their source address, and its ICMP errors are
//! read from the socket's error queue (`IP_RECVERR`), which names the destination each
//! is about, so `refused` is reported for those backends too. A reload to 65,535
//! backends therefore opens at most the budget plus a socket or two, and one round is
//! O(backends).
//!
//! The probes never reach a client: replies arrive on the prober's own sockets, which
//! the data plane does not read. Servers that keep state per cookie exchange see the
//! prober as one peer per socket, whose half-open handshake they replace at each probe.
//!
//! The prober only measures; deciding when health flips (rise/fall) is
//! [`cidlb_core::HealthTracker`]'s job, and applying it the daemon's.

use std::collections::HashMap;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use cidlb_wire::handshake::HandshakeType;
use cidlb_wire::{build, ContentType, Header, Records};
use mio::{Events, Interest, Poll, Token};

use crate::sys;

/// Where to send a probe: a backend address, and the local IP to send from (the
/// listener's `upstream_source`, so that probes take the path data traffic takes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProbeTarget {
    /// The backend.
    pub addr: SocketAddr,
    /// Local source IP; `None` lets the kernel choose.
    pub source: Option<IpAddr>,
}

/// What one probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeResult {
    /// Alive: the first record of the reply was a HelloVerifyRequest (DTLS 1.2 cookie
    /// exchange).
    HelloVerifyRequest,
    /// Alive: a ServerHello (or a DTLS 1.3 HelloRetryRequest, which has its shape).
    ServerHello,
    /// Alive: a DTLS alert (e.g. no shared cipher suite).
    Alert,
    /// Alive: some other well-formed DTLS records.
    OtherDtls,
    /// Dead: no reply within the timeout.
    Timeout,
    /// Dead: ICMP port unreachable (nothing listens on the port).
    Refused,
    /// Dead: something replied, but not with DTLS records.
    NotDtls,
    /// Dead: the probe could not be sent (no route, socket error...).
    Error,
    /// No verdict: no probe socket could be opened here (out of file descriptors or
    /// memory). A local shortage says nothing about the backend, and marking every
    /// backend down for it would turn the shortage into an outage: health stays as
    /// it was.
    NoSocket,
}

impl ProbeResult {
    /// Every result, in a fixed order (for metrics).
    pub const ALL: [ProbeResult; 9] = [
        ProbeResult::HelloVerifyRequest,
        ProbeResult::ServerHello,
        ProbeResult::Alert,
        ProbeResult::OtherDtls,
        ProbeResult::Timeout,
        ProbeResult::Refused,
        ProbeResult::NotDtls,
        ProbeResult::Error,
        ProbeResult::NoSocket,
    ];

    /// Whether this result says the backend is alive.
    pub fn is_alive(self) -> bool {
        matches!(
            self,
            ProbeResult::HelloVerifyRequest
                | ProbeResult::ServerHello
                | ProbeResult::Alert
                | ProbeResult::OtherDtls
        )
    }

    /// Whether this result counts towards `rise` / `fall` (all but [`NoSocket`]).
    ///
    /// [`NoSocket`]: ProbeResult::NoSocket
    pub fn is_verdict(self) -> bool {
        self != ProbeResult::NoSocket
    }

    /// The result of a probe whose socket could not be opened (or registered).
    /// Short of descriptors or memory (including a descriptor refused because it lies
    /// in the part of the reserve kept for the admin API, `sys::fd_admin_reserve`):
    /// [`NoSocket`](ProbeResult::NoSocket); anything else: [`Error`](ProbeResult::Error).
    pub fn of_socket_error(e: &io::Error) -> ProbeResult {
        if sys::is_fd_shortage(e) {
            ProbeResult::NoSocket
        } else {
            ProbeResult::Error
        }
    }

    /// What the result means, in one sentence (for the metrics reference).
    pub fn description(self) -> &'static str {
        match self {
            ProbeResult::HelloVerifyRequest => {
                "Alive: the backend answered with a HelloVerifyRequest (DTLS 1.2 cookie exchange)."
            }
            ProbeResult::ServerHello => {
                "Alive: a ServerHello (or a DTLS 1.3 HelloRetryRequest, which has its shape)."
            }
            ProbeResult::Alert => "Alive: a DTLS alert (e.g. no shared cipher suite).",
            ProbeResult::OtherDtls => "Alive: other well-formed DTLS records.",
            ProbeResult::Timeout => "Failed: no answer within `health.timeout`.",
            ProbeResult::Refused => {
                "Failed: ICMP port unreachable (nothing listens on the backend's port)."
            }
            ProbeResult::NotDtls => "Failed: an answer that is not made of DTLS records.",
            ProbeResult::Error => "Failed: the probe could not be sent (no route, socket error).",
            ProbeResult::NoSocket => {
                "Not counted: no probe socket could be opened here (out of file descriptors \
                 or memory); the backend's health stays as it was."
            }
        }
    }

    /// `snake_case` name, used as a metric label and in the admin API.
    pub fn name(self) -> &'static str {
        match self {
            ProbeResult::HelloVerifyRequest => "hello_verify_request",
            ProbeResult::ServerHello => "server_hello",
            ProbeResult::Alert => "alert",
            ProbeResult::OtherDtls => "other_dtls",
            ProbeResult::Timeout => "timeout",
            ProbeResult::Refused => "refused",
            ProbeResult::NotDtls => "not_dtls",
            ProbeResult::Error => "error",
            ProbeResult::NoSocket => "no_socket",
        }
    }
}

/// Classifies a reply to a probe: `None` when it is not made of well-formed DTLS
/// records (CIDs cannot appear in a reply to a ClientHello, so none are expected).
pub fn classify_reply(datagram: &[u8]) -> Option<ProbeResult> {
    let mut first = None;
    for rec in Records::new(datagram, 0usize) {
        let rec = rec.ok()?;
        if first.is_none() {
            first = Some(match rec.header {
                Header::Plaintext {
                    content_type: ContentType::ALERT,
                    ..
                } => ProbeResult::Alert,
                Header::Plaintext {
                    content_type: ContentType::HANDSHAKE,
                    ..
                } => match rec.payload.first().map(|&t| HandshakeType(t)) {
                    Some(HandshakeType::HELLO_VERIFY_REQUEST) => ProbeResult::HelloVerifyRequest,
                    Some(HandshakeType::SERVER_HELLO) => ProbeResult::ServerHello,
                    _ => ProbeResult::OtherDtls,
                },
                _ => ProbeResult::OtherDtls,
            });
        }
    }
    first
}

/// Largest reply read (a ServerHello flight can be several kilobytes).
const MAX_REPLY: usize = 17 * 1024;

/// Per-backend (connected) probe sockets a [`Prober`] keeps at most; the other backends
/// are probed through one shared socket per source address.
pub const PROBE_SOCKET_BUDGET: usize = 256;

/// The per-backend sockets a prober with `budget` keeps under an open-files limit of
/// `limit`: the budget, at most an eighth of the limit.
pub fn probe_socket_budget(budget: usize, limit: Option<u64>) -> usize {
    match limit {
        Some(l) => budget.min(usize::try_from(l / 8).unwrap_or(usize::MAX)),
        None => budget,
    }
}

/// The most descriptors a [`Prober::new`] holds under an open-files limit of `limit`
/// when its targets use `sources` distinct (source address, address family) pairs
/// (one per listener at most): its per-backend sockets plus one shared socket each.
pub fn max_probe_sockets(limit: Option<u64>, sources: usize) -> usize {
    probe_socket_budget(PROBE_SOCKET_BUDGET, limit) + sources
}

/// Probes sent between two looks at the answers (so that answers arriving while a
/// large round is sent do not overflow the shared sockets' buffers).
const SEND_BURST: usize = 64;

/// How often a send on a shared socket is tried again after it reported an error that
/// may be another destination's ICMP error (see [`Prober::send_shared`]).
const SEND_RETRIES: usize = 4;

/// A shared socket: per source address (the listener's `upstream_source`, or none) and
/// address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SharedKey {
    source: Option<IpAddr>,
    v4: bool,
}

impl SharedKey {
    fn of(t: &ProbeTarget) -> SharedKey {
        SharedKey {
            source: t.source,
            v4: t.addr.is_ipv4(),
        }
    }
}

/// Who owns a token.
#[derive(Clone, Copy, Debug)]
enum Owner {
    Own(ProbeTarget),
    Shared(SharedKey),
}

struct ProbeSocket {
    socket: mio::net::UdpSocket,
    token: Token,
}

/// What is waited for during one round.
struct Round {
    results: Vec<Option<ProbeResult>>,
    /// Per-backend socket's token -> the target's index.
    own: HashMap<Token, usize>,
    /// (shared socket, backend address) -> the target's index.
    shared: HashMap<(SharedKey, SocketAddr), usize>,
    /// Probes sent whose result is not known yet.
    pending: usize,
}

impl Round {
    /// Records `r` for target `i`: the first result counts, except that an answer
    /// that says alive beats an earlier one that does not.
    fn record(&mut self, i: usize, r: ProbeResult) {
        match self.results[i] {
            None => {
                self.results[i] = Some(r);
                self.pending = self.pending.saturating_sub(1);
            }
            Some(old) if !old.is_alive() && r.is_alive() => self.results[i] = Some(r),
            Some(_) => {}
        }
    }
}

/// An address as received: flow information is not part of who sent it.
fn peer(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(mut v6) => {
            v6.set_flowinfo(0);
            SocketAddr::V6(v6)
        }
        v4 => v4,
    }
}

/// Sends DTLS ClientHello probes and waits for the answers (see the module docs).
///
/// Descriptors are bounded: up to a budget ([`PROBE_SOCKET_BUDGET`], at most an eighth
/// of the open-files limit) of targets get a UDP socket of their own, connected to the
/// backend and kept across rounds; every other target is probed through one shared,
/// unconnected socket per source address and family, whose answers are told apart by
/// their source address and whose ICMP errors (port unreachable: `refused`) arrive on
/// its error queue with the destination they concern. A per-backend socket that cannot
/// be opened for want of descriptors falls back to the shared one; the shared ones may
/// use part of the descriptors kept free of upstream sockets, never the part kept for
/// the admin API and reloads (`sys::fd_admin_reserve`).
pub struct Prober {
    poll: Poll,
    events: Events,
    budget: usize,
    own: HashMap<ProbeTarget, ProbeSocket>,
    shared: HashMap<SharedKey, ProbeSocket>,
    tokens: HashMap<Token, Owner>,
    next_token: usize,
    rng: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Prober({} own sockets, {} shared)",
            self.own.len(),
            self.shared.len()
        )
    }
}

impl Prober {
    /// A prober with the default budget of per-backend sockets; `seed` varies the
    /// ClientHello randoms (not a secret).
    pub fn new(seed: u64) -> io::Result<Prober> {
        Prober::with_budget(seed, PROBE_SOCKET_BUDGET)
    }

    /// A prober that keeps at most `budget` per-backend sockets (0: every probe goes
    /// through the shared sockets).
    pub fn with_budget(seed: u64, budget: usize) -> io::Result<Prober> {
        Ok(Prober {
            poll: Poll::new()?,
            events: Events::with_capacity(256),
            budget,
            own: HashMap::new(),
            shared: HashMap::new(),
            tokens: HashMap::new(),
            next_token: 0,
            rng: seed | 1,
            buf: vec![0; MAX_REPLY],
        })
    }

    /// Sockets open: per-backend ones plus shared ones.
    pub fn open_sockets(&self) -> usize {
        self.own.len() + self.shared.len()
    }

    /// Per-backend sockets open.
    pub fn own_sockets(&self) -> usize {
        self.own.len()
    }

    /// Closes the sockets no target of `keep` uses any more (backends removed by a
    /// reload). O(sockets + `keep`).
    pub fn retain(&mut self, keep: &[ProbeTarget]) {
        let keep_own: std::collections::HashSet<&ProbeTarget> = keep.iter().collect();
        // Shared sockets of targets without a socket of their own.
        let keep_shared: std::collections::HashSet<SharedKey> = keep
            .iter()
            .filter(|t| !self.own.contains_key(t))
            .map(SharedKey::of)
            .collect();
        let registry = self.poll.registry();
        let tokens = &mut self.tokens;
        self.own.retain(|t, s| {
            let k = keep_own.contains(t);
            if !k {
                let _ = registry.deregister(&mut s.socket);
                tokens.remove(&s.token);
            }
            k
        });
        self.shared.retain(|key, s| {
            let k = keep_shared.contains(key);
            if !k {
                let _ = registry.deregister(&mut s.socket);
                tokens.remove(&s.token);
            }
            k
        });
    }

    fn client_hello(&mut self) -> Vec<u8> {
        let mut random = [0u8; 32];
        for chunk in random.chunks_mut(8) {
            // xorshift64*: the random only has to differ between probes.
            let mut x = self.rng;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.rng = x;
            chunk.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        build::client_hello_datagram(random, &[], None)
    }

    fn register(&mut self, std: std::net::UdpSocket, owner: Owner) -> io::Result<ProbeSocket> {
        let mut socket = mio::net::UdpSocket::from_std(std);
        let token = Token(self.next_token);
        self.next_token = self.next_token.wrapping_add(1);
        self.poll
            .registry()
            .register(&mut socket, token, Interest::READABLE)?;
        self.tokens.insert(token, owner);
        Ok(ProbeSocket { socket, token })
    }

    /// The target's own socket: the one it has, or a new one within the budget.
    /// `Ok(None)`: use the shared socket.
    fn own_socket(&mut self, t: ProbeTarget, budget: usize) -> io::Result<Option<Token>> {
        if let Some(s) = self.own.get(&t) {
            return Ok(Some(s.token));
        }
        if self.own.len() >= budget {
            return Ok(None);
        }
        let opened =
            sys::probe_socket(t.source, t.addr).and_then(|std| self.register(std, Owner::Own(t)));
        match opened {
            Ok(s) => {
                let tok = s.token;
                self.own.insert(t, s);
                Ok(Some(tok))
            }
            // Short of descriptors: the shared socket may still do.
            Err(e) if sys::is_fd_shortage(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The shared socket for `key`, opened if needed.
    fn shared_socket(&mut self, key: SharedKey) -> io::Result<()> {
        if !self.shared.contains_key(&key) {
            let std = sys::shared_probe_socket(key.source, key.v4)?;
            let s = self.register(std, Owner::Shared(key))?;
            self.shared.insert(key, s);
        }
        Ok(())
    }

    /// Probes every target at once and waits at most `timeout` for the answers.
    /// Returns one result per target, in order (a target listed twice is probed once).
    /// O(targets); at most [`PROBE_SOCKET_BUDGET`] plus one socket per source address
    /// and family are open.
    pub fn probe(&mut self, targets: &[ProbeTarget], timeout: Duration) -> Vec<ProbeResult> {
        let deadline = Instant::now() + timeout;
        let budget = probe_socket_budget(self.budget, sys::nofile_soft_limit());
        let mut round = Round {
            results: vec![None; targets.len()],
            own: HashMap::new(),
            shared: HashMap::new(),
            pending: 0,
        };
        let mut first: HashMap<ProbeTarget, usize> = HashMap::with_capacity(targets.len());
        let mut dups: Vec<(usize, usize)> = Vec::new();
        let mut drained: Vec<SharedKey> = Vec::new();
        let mut sent = 0usize;
        for (i, &t) in targets.iter().enumerate() {
            if let Some(&j) = first.get(&t) {
                // Same target twice: share the first one's probe.
                dups.push((i, j));
                continue;
            }
            first.insert(t, i);
            let hello = self.client_hello();
            match self.own_socket(t, budget) {
                Ok(Some(tok)) => self.send_own(&mut round, i, t, tok, &hello),
                Ok(None) => {
                    let key = SharedKey::of(&t);
                    if let Err(e) = self.shared_socket(key) {
                        round.results[i] = Some(ProbeResult::of_socket_error(&e));
                        continue;
                    }
                    if !drained.contains(&key) {
                        // Late answers to the last round (and its ICMP errors) must not
                        // count for this one.
                        drained.push(key);
                        self.read_shared(&mut round, key, true);
                    }
                    self.send_shared(&mut round, i, t, key, &hello, deadline);
                }
                Err(e) => round.results[i] = Some(ProbeResult::of_socket_error(&e)),
            }
            sent += 1;
            if sent.is_multiple_of(SEND_BURST) {
                self.service(&mut round, Some(Duration::ZERO));
            }
        }
        while round.pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.service(&mut round, Some(left));
        }
        let mut results = round.results;
        for (i, j) in dups {
            results[i] = results[j];
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(ProbeResult::Timeout))
            .collect()
    }

    fn send_own(&mut self, round: &mut Round, i: usize, t: ProbeTarget, tok: Token, hello: &[u8]) {
        let Some(s) = self.own.get_mut(&t) else {
            return;
        };
        let buf = &mut self.buf;
        // Late answers to earlier probes (and stale ICMP errors) must not count for
        // this one.
        loop {
            match s.socket.recv(buf) {
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => continue, // a pending ICMP error, consumed
            }
        }
        match s.socket.send(hello) {
            Ok(_) => {
                round.own.insert(tok, i);
                round.pending += 1;
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                round.results[i] = Some(ProbeResult::Refused)
            }
            Err(_) => round.results[i] = Some(ProbeResult::Error),
        }
    }

    /// Sends on a shared socket. Its pending error (`IP_RECVERR` sets it for every ICMP
    /// error, whichever destination it is about) fails the next send once, without
    /// sending: the error queue is read (those errors are results too) and the send
    /// tried again. A full send buffer waits for the answers a little.
    fn send_shared(
        &mut self,
        round: &mut Round,
        i: usize,
        t: ProbeTarget,
        key: SharedKey,
        hello: &[u8],
        deadline: Instant,
    ) {
        let mut tries = 0;
        loop {
            let Some(s) = self.shared.get(&key) else {
                round.results[i] = Some(ProbeResult::Error);
                return;
            };
            match s.socket.send_to(hello, t.addr) {
                Ok(_) => {
                    round.shared.insert((key, peer(t.addr)), i);
                    round.pending += 1;
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        round.results[i] = Some(ProbeResult::Error);
                        return;
                    }
                    self.service(round, Some(Duration::from_millis(1)));
                }
                Err(_) if tries < SEND_RETRIES => {
                    tries += 1;
                    self.read_shared(round, key, false);
                }
                Err(_) => {
                    round.results[i] = Some(ProbeResult::Error);
                    return;
                }
            }
        }
    }

    /// Reads everything a shared socket holds: answers, then its error queue.
    /// `discard`: nothing counts (stale answers from an earlier round).
    fn read_shared(&mut self, round: &mut Round, key: SharedKey, discard: bool) {
        let Some(s) = self.shared.get(&key) else {
            return;
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&s.socket);
        let buf = &mut self.buf;
        // Bounded: each failed receive clears the socket's pending error, each queue
        // entry read is gone.
        for _ in 0..64 {
            let mut failed = false;
            loop {
                match s.socket.recv_from(buf) {
                    Ok((n, from)) => {
                        if discard {
                            continue;
                        }
                        if let Some(&i) = round.shared.get(&(key, peer(from))) {
                            let r = classify_reply(&buf[..n]).unwrap_or(ProbeResult::NotDtls);
                            round.record(i, r);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    // The socket's pending error (an ICMP error, also queued unless the
                    // buffer was full): read the queue below, then read on.
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            let mut errors = 0;
            loop {
                match sys::recv_error(fd) {
                    Ok(sys::QueuedError::Icmp(to, e)) => {
                        errors += 1;
                        if discard {
                            continue;
                        }
                        if let Some(&i) = round.shared.get(&(key, peer(to))) {
                            round.record(
                                i,
                                if e.kind() == ErrorKind::ConnectionRefused {
                                    ProbeResult::Refused
                                } else {
                                    ProbeResult::Error
                                },
                            );
                        }
                    }
                    Ok(sys::QueuedError::Other) => errors += 1,
                    Ok(sys::QueuedError::Empty) | Err(_) => break,
                }
            }
            if !failed && errors == 0 {
                break;
            }
        }
    }

    /// Waits at most `timeout` for answers and records them.
    fn service(&mut self, round: &mut Round, timeout: Option<Duration>) {
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            if e.kind() != ErrorKind::Interrupted {
                // Nothing sensible to do but let the deadline pass.
                std::thread::sleep(timeout.unwrap_or_default().min(Duration::from_millis(10)));
            }
            return;
        }
        let tokens: Vec<Token> = self.events.iter().map(|e| e.token()).collect();
        for tok in tokens {
            match self.tokens.get(&tok).copied() {
                Some(Owner::Own(t)) => self.read_own(round, t, tok),
                Some(Owner::Shared(key)) => self.read_shared(round, key, false),
                None => {}
            }
        }
    }

    fn read_own(&mut self, round: &mut Round, t: ProbeTarget, tok: Token) {
        let Some(s) = self.own.get_mut(&t) else {
            return;
        };
        let buf = &mut self.buf;
        // Edge-triggered: read until the socket is empty.
        let mut found = None;
        loop {
            match s.socket.recv(buf) {
                Ok(n) => {
                    if found.is_none_or(|r: ProbeResult| !r.is_alive()) {
                        found = Some(classify_reply(&buf[..n]).unwrap_or(ProbeResult::NotDtls));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    found = found.or(Some(ProbeResult::Refused));
                }
                Err(_) => {
                    found = found.or(Some(ProbeResult::Error));
                }
            }
        }
        if let Some(r) = found {
            if let Some(i) = round.own.remove(&tok) {
                round.record(i, r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    fn target(addr: SocketAddr) -> ProbeTarget {
        ProbeTarget { addr, source: None }
    }

    #[test]
    fn a_local_shortage_is_no_verdict_other_socket_errors_fail() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            let r = ProbeResult::of_socket_error(&io::Error::from_raw_os_error(errno));
            assert_eq!(r, ProbeResult::NoSocket, "errno {errno}");
            assert!(!r.is_verdict() && !r.is_alive());
        }
        for errno in [libc::ENETUNREACH, libc::EADDRNOTAVAIL, libc::EACCES] {
            let r = ProbeResult::of_socket_error(&io::Error::from_raw_os_error(errno));
            assert_eq!(r, ProbeResult::Error, "errno {errno}");
            assert!(r.is_verdict());
        }
        assert_eq!(
            ProbeResult::of_socket_error(&io::Error::other("reserve")),
            ProbeResult::Error
        );
    }

    #[test]
    fn classifies_replies() {
        assert_eq!(
            classify_reply(&build::hello_verify_request_datagram(&[1, 2, 3])),
            Some(ProbeResult::HelloVerifyRequest)
        );
        assert_eq!(
            classify_reply(&build::server_hello_datagram([1; 32], Some(&[1, 2]))),
            Some(ProbeResult::ServerHello)
        );
        let mut alert = Vec::new();
        build::plaintext(ContentType::ALERT, 0, 0, &[2, 40], &mut alert);
        assert_eq!(classify_reply(&alert), Some(ProbeResult::Alert));
        assert_eq!(classify_reply(b"HTTP/1.1 400 Bad Request\r\n"), None);
        assert_eq!(classify_reply(&[]), None);
        // A valid record followed by garbage is not DTLS.
        let mut bad = build::hello_verify_request_datagram(&[1]);
        bad.push(0xff);
        assert_eq!(classify_reply(&bad), None);
    }

    /// A fake server that answers every datagram with `reply`, `rounds` times.
    fn serve(s: UdpSocket, reply: Vec<u8>, rounds: usize) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut b = [0u8; 2048];
            for _ in 0..rounds {
                let Ok((n, from)) = s.recv_from(&mut b) else {
                    return;
                };
                // What arrives is a well-formed ClientHello.
                let info = cidlb_wire::inspect(&b[..n], 0usize).unwrap();
                assert!(info.client_hello);
                s.send_to(&reply, from).unwrap();
            }
        })
    }

    /// Every kind of result, through per-backend sockets (`budget` 256), the shared
    /// socket alone (0), and both (2).
    #[test]
    fn answers_timeouts_and_refusals() {
        for budget in [PROBE_SOCKET_BUDGET, 0, 2] {
            // A server that answers with a HelloVerifyRequest, one that answers with
            // junk, one that never answers, and a closed port.
            let answering = UdpSocket::bind("127.0.0.1:0").unwrap();
            let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
            let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
            let closed = {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.local_addr().unwrap()
            };
            let a = answering.local_addr().unwrap();
            let j = junk.local_addr().unwrap();
            let t1 = serve(answering, build::hello_verify_request_datagram(&[7; 20]), 2);
            let t2 = serve(junk, b"not dtls".to_vec(), 2);
            let mut p = Prober::with_budget(42, budget).unwrap();
            let targets = [
                target(a),
                target(j),
                target(silent.local_addr().unwrap()),
                target(closed),
                target(a),
            ];
            for _ in 0..2 {
                let r = p.probe(&targets, Duration::from_millis(300));
                assert_eq!(
                    r,
                    vec![
                        ProbeResult::HelloVerifyRequest,
                        ProbeResult::NotDtls,
                        ProbeResult::Timeout,
                        ProbeResult::Refused,
                        ProbeResult::HelloVerifyRequest,
                    ],
                    "budget {budget}"
                );
            }
            t1.join().unwrap();
            t2.join().unwrap();
            let own = budget.min(4);
            assert_eq!(p.own_sockets(), own, "budget {budget}");
            assert_eq!(p.open_sockets(), own + usize::from(own < 4));
            p.retain(&[target(a)]);
            assert_eq!(p.open_sockets(), 1);
            p.retain(&[]);
            assert_eq!(p.open_sockets(), 0);
        }
    }

    /// Answers to the shared socket are told apart by their source: a reply from an
    /// address that was not probed counts for nobody.
    #[test]
    fn shared_answers_count_for_their_source_only() {
        let probed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut p = Prober::with_budget(7, 0).unwrap();
        let t = target(probed.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            probed
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut b = [0u8; 2048];
            let (_, from) = probed.recv_from(&mut b).unwrap();
            // Someone else answers in its place.
            other
                .send_to(&build::hello_verify_request_datagram(&[1]), from)
                .unwrap();
        });
        assert_eq!(
            p.probe(&[t], Duration::from_millis(300)),
            vec![ProbeResult::Timeout]
        );
        h.join().unwrap();
    }

    /// 5,000 backends (sockets on 127.0.0.1), half of which answer: the prober keeps
    /// at most its budget of per-backend sockets plus one shared socket, and every
    /// result is right, round after round.
    #[test]
    fn thousands_of_targets_within_the_socket_budget() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        // This process needs 5,000 sockets of its own for the backends.
        let (soft, _) = sys::raise_nofile_limit().unwrap();
        let n = 5000.min(
            usize::try_from(soft)
                .unwrap_or(usize::MAX)
                .saturating_sub(600)
                / 2
                * 2,
        );
        assert!(
            n >= 2 * PROBE_SOCKET_BUDGET,
            "open-files limit {soft} too low"
        );
        let answering: Vec<UdpSocket> = (0..n / 2)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let silent: Vec<UdpSocket> = (0..n / 2)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        // Interleaved, so that both kinds get per-backend and shared sockets.
        let mut targets = Vec::with_capacity(n);
        for (a, s) in answering.iter().zip(&silent) {
            targets.push(target(a.local_addr().unwrap()));
            targets.push(target(s.local_addr().unwrap()));
        }
        // One thread answers for all the answering backends.
        let stop = Arc::new(AtomicBool::new(false));
        let server = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut poll = Poll::new().unwrap();
                let mut socks: Vec<mio::net::UdpSocket> = answering
                    .into_iter()
                    .map(|s| {
                        s.set_nonblocking(true).unwrap();
                        mio::net::UdpSocket::from_std(s)
                    })
                    .collect();
                for (i, s) in socks.iter_mut().enumerate() {
                    poll.registry()
                        .register(s, Token(i), Interest::READABLE)
                        .unwrap();
                }
                let reply = build::hello_verify_request_datagram(&[9; 20]);
                let mut events = Events::with_capacity(1024);
                let mut b = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    poll.poll(&mut events, Some(Duration::from_millis(50)))
                        .unwrap();
                    for e in events.iter() {
                        let s = &socks[e.token().0];
                        while let Ok((_, from)) = s.recv_from(&mut b) {
                            let _ = s.send_to(&reply, from);
                        }
                    }
                }
            })
        };
        let mut p = Prober::new(3).unwrap();
        for round in 0..2 {
            let started = Instant::now();
            let r = p.probe(&targets, Duration::from_secs(3));
            let took = started.elapsed();
            let wrong: Vec<(usize, ProbeResult)> = r
                .iter()
                .enumerate()
                .filter(|(i, r)| {
                    **r != if i % 2 == 0 {
                        ProbeResult::HelloVerifyRequest
                    } else {
                        ProbeResult::Timeout
                    }
                })
                .map(|(i, r)| (i, *r))
                .take(10)
                .collect();
            assert!(wrong.is_empty(), "round {round}: wrong results {wrong:?}");
            assert!(
                p.open_sockets() <= PROBE_SOCKET_BUDGET + 1,
                "round {round}: {} sockets for {n} targets",
                p.open_sockets()
            );
            eprintln!(
                "round {round}: {n} targets in {took:?} with {} sockets ({} per-backend)",
                p.open_sockets(),
                p.own_sockets()
            );
        }
        stop.store(true, Ordering::Relaxed);
        server.join().unwrap();
        drop(silent);
    }
}
