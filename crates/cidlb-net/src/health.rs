//! Active health checks that speak DTLS.
//!
//! A [`Prober`] sends each backend a real-enough DTLS 1.2 ClientHello (one plaintext
//! handshake record, cipher suite `TLS_PSK_WITH_AES_128_CCM_8`, no cookie) from its own
//! UDP socket, one per backend address, connected to the backend. A DTLS server answers
//! a ClientHello without a cookie with a HelloVerifyRequest (DTLS 1.2, RFC 6347
//! §4.2.1), a HelloRetryRequest or ServerHello (DTLS 1.3), or an alert when it dislikes
//! the offer: **any reply made of well-formed DTLS records means the server is alive**.
//! A timeout, an ICMP port unreachable (`ECONNREFUSED` on the connected socket) or a
//! reply that is not DTLS means it is not.
//!
//! The probes never reach a client: replies arrive on the prober's own sockets, which
//! the data plane does not read. Servers that keep state per cookie exchange see one
//! peer per backend (the prober's socket), whose half-open handshake they replace at
//! each probe.
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
    pub fn of_socket_error(e: &io::Error) -> ProbeResult {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                ProbeResult::NoSocket
            }
            _ => ProbeResult::Error,
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

struct ProbeSocket {
    socket: mio::net::UdpSocket,
    token: Token,
}

/// Sends DTLS ClientHello probes and waits for the answers (see the module docs). Owns
/// one connected UDP socket per target, kept across rounds.
pub struct Prober {
    poll: Poll,
    events: Events,
    sockets: HashMap<ProbeTarget, ProbeSocket>,
    next_token: usize,
    rng: u64,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prober({} sockets)", self.sockets.len())
    }
}

impl Prober {
    /// A prober; `seed` varies the ClientHello randoms (not a secret).
    pub fn new(seed: u64) -> io::Result<Prober> {
        Ok(Prober {
            poll: Poll::new()?,
            events: Events::with_capacity(256),
            sockets: HashMap::new(),
            next_token: 0,
            rng: seed | 1,
            buf: vec![0; MAX_REPLY],
        })
    }

    /// Sockets open (one per target probed and not yet retired).
    pub fn open_sockets(&self) -> usize {
        self.sockets.len()
    }

    /// Closes the sockets of targets not in `keep` (backends removed by a reload).
    pub fn retain(&mut self, keep: &[ProbeTarget]) {
        let registry = self.poll.registry();
        self.sockets.retain(|t, s| {
            let k = keep.contains(t);
            if !k {
                let _ = registry.deregister(&mut s.socket);
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

    fn socket(&mut self, t: ProbeTarget) -> io::Result<&mut ProbeSocket> {
        if !self.sockets.contains_key(&t) {
            let mut socket = mio::net::UdpSocket::from_std(sys::probe_socket(t.source, t.addr)?);
            let token = Token(self.next_token);
            self.next_token = self.next_token.wrapping_add(1);
            self.poll
                .registry()
                .register(&mut socket, token, Interest::READABLE)?;
            self.sockets.insert(t, ProbeSocket { socket, token });
        }
        Ok(self.sockets.get_mut(&t).expect("inserted above"))
    }

    /// Probes every target at once and waits at most `timeout` for the answers.
    /// Returns one result per target, in order (a target listed twice is probed once).
    pub fn probe(&mut self, targets: &[ProbeTarget], timeout: Duration) -> Vec<ProbeResult> {
        let deadline = Instant::now() + timeout;
        let mut results: Vec<Option<ProbeResult>> = vec![None; targets.len()];
        // Token -> indices of `targets` waiting on it.
        let mut waiting: HashMap<Token, Vec<usize>> = HashMap::new();
        let mut buf = std::mem::take(&mut self.buf);
        for (i, &t) in targets.iter().enumerate() {
            if let Some(j) = targets[..i].iter().position(|o| *o == t) {
                // Same target twice: share the first one's probe.
                if let Some(tok) = self.sockets.get(&t).map(|s| s.token) {
                    if let Some(w) = waiting.get_mut(&tok) {
                        w.push(i);
                        continue;
                    }
                }
                results[i] = results[j];
                continue;
            }
            let hello = self.client_hello();
            let s = match self.socket(t) {
                Ok(s) => s,
                Err(e) => {
                    results[i] = Some(ProbeResult::of_socket_error(&e));
                    continue;
                }
            };
            // Late answers to earlier probes (and stale ICMP errors) must not count
            // for this one.
            loop {
                match s.socket.recv(&mut buf) {
                    Ok(_) => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => continue, // a pending ICMP error, consumed
                }
            }
            match s.socket.send(&hello) {
                Ok(_) => {
                    waiting.entry(s.token).or_default().push(i);
                }
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                    results[i] = Some(ProbeResult::Refused)
                }
                Err(_) => results[i] = Some(ProbeResult::Error),
            }
        }
        let by_token: HashMap<Token, ProbeTarget> =
            self.sockets.iter().map(|(t, s)| (s.token, *t)).collect();
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Err(e) = self.poll.poll(&mut self.events, Some(left)) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            let tokens: Vec<Token> = self.events.iter().map(|e| e.token()).collect();
            for tok in tokens {
                let Some(t) = by_token.get(&tok) else {
                    continue;
                };
                let Some(s) = self.sockets.get_mut(t) else {
                    continue;
                };
                // Edge-triggered: read until the socket is empty.
                let mut found = None;
                loop {
                    match s.socket.recv(&mut buf) {
                        Ok(n) => {
                            if found.is_none_or(|r: ProbeResult| !r.is_alive()) {
                                found =
                                    Some(classify_reply(&buf[..n]).unwrap_or(ProbeResult::NotDtls));
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
                    if let Some(idx) = waiting.remove(&tok) {
                        for i in idx {
                            results[i] = Some(r);
                        }
                    }
                }
            }
        }
        self.buf = buf;
        // Duplicates resolved after their first target.
        for i in 0..targets.len() {
            if results[i].is_none() {
                if let Some(j) = targets[..i].iter().position(|o| *o == targets[i]) {
                    results[i] = results[j];
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(ProbeResult::Timeout))
            .collect()
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

    #[test]
    fn answers_timeouts_and_refusals() {
        // A fake server that answers every datagram with a HelloVerifyRequest, one that
        // answers with junk, one that never answers, and a closed port.
        let answering = UdpSocket::bind("127.0.0.1:0").unwrap();
        let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let closed = {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let serve = |s: UdpSocket, reply: Vec<u8>| {
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut b = [0u8; 2048];
                for _ in 0..2 {
                    let Ok((n, from)) = s.recv_from(&mut b) else {
                        return;
                    };
                    // What arrives is a well-formed ClientHello.
                    let info = cidlb_wire::inspect(&b[..n], 0usize).unwrap();
                    assert!(info.client_hello);
                    s.send_to(&reply, from).unwrap();
                }
            })
        };
        let a = answering.local_addr().unwrap();
        let j = junk.local_addr().unwrap();
        let t1 = serve(answering, build::hello_verify_request_datagram(&[7; 20]));
        let t2 = serve(junk, b"not dtls".to_vec());
        let mut p = Prober::new(42).unwrap();
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
                ]
            );
        }
        t1.join().unwrap();
        t2.join().unwrap();
        assert_eq!(p.open_sockets(), 4);
        p.retain(&[target(a)]);
        assert_eq!(p.open_sockets(), 1);
    }
}
