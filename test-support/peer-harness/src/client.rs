//! A DTLS client with connection IDs that can change its source address mid-session,
//! on any [`DtlsStack`].

use std::io;
use std::marker::PhantomData;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::stack::{DtlsSession, DtlsStack, Handshake, Read};
use crate::{DEFAULT_PSK, DEFAULT_PSK_IDENTITY};

/// Largest datagram the client reads.
const MAX_DATAGRAM: usize = 65_535;
/// How many times [`DtlsClient::echo`] sends its message before giving up.
const ECHO_ATTEMPTS: u32 = 3;

/// How to connect a [`DtlsClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Where to send datagrams (the server, or a balancer in front of it). Only
    /// datagrams from this address are accepted.
    pub server: SocketAddr,
    /// Local address of the UDP socket; port 0 picks a free port.
    pub bind: SocketAddr,
    /// PSK identity to present (within the stack's limits).
    pub psk_identity: Vec<u8>,
    /// The pre-shared key (within the stack's limits).
    pub psk: Vec<u8>,
    /// Length of the CID this client asks the server to put in its records (random
    /// bytes); 0 asks for none while still using the server's CID. At most the stack's
    /// [`DtlsStack::CID_MAX_LEN`].
    pub own_cid_len: usize,
    /// Upper bound on the whole handshake, retransmissions included.
    pub handshake_timeout: Duration,
    /// Whether to record every datagram sent and received (see
    /// [`DtlsClient::captured`]).
    pub capture: bool,
}

impl ClientConfig {
    /// A client of `server` on `127.0.0.1:0`, asking for a 4-byte CID, with
    /// [`DEFAULT_PSK_IDENTITY`], [`DEFAULT_PSK`], a 10 s handshake timeout and no
    /// capture.
    pub fn new(server: SocketAddr) -> Self {
        Self {
            server,
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            psk_identity: DEFAULT_PSK_IDENTITY.to_vec(),
            psk: DEFAULT_PSK.to_vec(),
            own_cid_len: 4,
            handshake_timeout: Duration::from_secs(10),
            capture: false,
        }
    }
}

/// Direction of a captured datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sent by the client.
    ClientToServer,
    /// Received by the client.
    ServerToClient,
}

impl Direction {
    /// `"c2s"` or `"s2c"`, as in the test-vector files.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToServer => "c2s",
            Direction::ServerToClient => "s2c",
        }
    }
}

/// A real DTLS client with an established session using connection IDs.
///
/// All calls block the calling thread for at most the timeout they are given.
pub struct DtlsClient<S: DtlsStack> {
    socket: UdpSocket,
    server: SocketAddr,
    ssl: S::Session,
    capture: Option<Vec<(Direction, Vec<u8>)>>,
    buf: Vec<u8>,
    stack: PhantomData<fn() -> S>,
}

impl<S: DtlsStack> std::fmt::Debug for DtlsClient<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DtlsClient")
            .field("stack", &S::NAME)
            .field("local_addr", &self.socket.local_addr().ok())
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl<S: DtlsStack> DtlsClient<S> {
    /// Binds a socket and performs a full handshake (with the server's cookie round
    /// trip) negotiating connection IDs.
    ///
    /// Fails with [`io::ErrorKind::TimedOut`] if it takes longer than
    /// `config.handshake_timeout`.
    pub fn connect(config: ClientConfig) -> io::Result<DtlsClient<S>> {
        if config.own_cid_len > S::CID_MAX_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "own_cid_len is larger than {} ({})",
                    S::CID_MAX_LEN,
                    S::NAME
                ),
            ));
        }
        S::validate_psk(&config.psk_identity, &config.psk)?;
        let deadline = Instant::now() + config.handshake_timeout;
        let mut own_cid = vec![0; config.own_cid_len];
        getrandom::fill(&mut own_cid).map_err(io::Error::other)?;
        let ssl = S::client_session(&config, &own_cid)?;
        let mut client = DtlsClient::<S> {
            socket: UdpSocket::bind(config.bind)?,
            server: config.server,
            ssl,
            capture: config.capture.then(Vec::new),
            buf: vec![0; MAX_DATAGRAM],
            stack: PhantomData,
        };
        loop {
            let step = client.ssl.handshake();
            client.flush()?;
            match step? {
                Handshake::Done => return Ok(client),
                Handshake::WantInput if client.ssl.has_input() => continue,
                Handshake::WantInput | Handshake::CookieSent => {}
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "DTLS handshake timed out",
                ));
            }
            client.wait(deadline)?;
        }
    }

    /// Sends `data` as one application-data record.
    pub fn send(&mut self, data: &[u8]) -> io::Result<()> {
        self.ssl.write(data)?;
        self.flush()
    }

    /// Waits up to `timeout` for the next application-data message.
    ///
    /// Fails with [`io::ErrorKind::TimedOut`] if none arrives, and with
    /// [`io::ErrorKind::ConnectionAborted`] if the server closed the session.
    pub fn recv(&mut self, timeout: Duration) -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut data = vec![0; MAX_DATAGRAM];
        loop {
            let read = self.ssl.read(&mut data);
            self.flush()?;
            match read? {
                Read::Data(n) => {
                    data.truncate(n);
                    return Ok(data);
                }
                Read::Closed => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "server sent close_notify",
                    ))
                }
                Read::WantInput | Read::Reconnect => {}
            }
            if self.ssl.has_input() {
                continue;
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no application data",
                ));
            }
            self.wait(deadline)?;
        }
    }

    /// Sends `message` and waits for the server to send the same bytes back, within
    /// `timeout` overall. The message is sent again (as a new record) up to twice if no
    /// echo comes within a third of `timeout`; other messages received meanwhile (late
    /// echoes of earlier messages) are discarded.
    pub fn echo(&mut self, message: &[u8], timeout: Duration) -> io::Result<()> {
        let attempt_timeout = timeout / ECHO_ATTEMPTS;
        for _ in 0..ECHO_ATTEMPTS {
            self.send(message)?;
            let deadline = Instant::now() + attempt_timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.recv(left) {
                    Ok(reply) if reply == message => return Ok(()),
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no echo after {ECHO_ATTEMPTS} attempts"),
        ))
    }

    /// Replaces the UDP socket by a new one bound to `new_bind`, keeping the DTLS
    /// session: to the server this looks like a NAT rebinding. The old socket is closed.
    pub fn rebind(&mut self, new_bind: SocketAddr) -> io::Result<()> {
        self.socket = UdpSocket::bind(new_bind)?;
        Ok(())
    }

    /// Sends to `server` from now on, and accepts datagrams only from it: e.g. another
    /// balancer instance in front of the same servers. The DTLS session is kept; to the
    /// server this looks like the client moving to the other balancer's address.
    pub fn set_server(&mut self, server: SocketAddr) {
        self.server = server;
    }

    /// Where datagrams go now.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Sends a close_notify alert and closes the socket.
    pub fn close(mut self) -> io::Result<()> {
        self.ssl.close_notify()?;
        self.flush()
    }

    /// The local address of the current socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The CID the server issued, which this client puts in its records (empty if the
    /// server issued an empty CID).
    pub fn peer_cid(&mut self) -> Vec<u8> {
        self.ssl.peer_cid().unwrap_or_default()
    }

    /// The CID this client issued, which the server puts in its records (empty if
    /// `own_cid_len` was 0).
    pub fn own_cid(&mut self) -> Vec<u8> {
        self.ssl.own_cid().unwrap_or_default()
    }

    /// Name of the negotiated cipher suite, e.g. `TLS-PSK-WITH-AES-128-CCM-8` or
    /// `TLS13-AES128-GCM-SHA256`.
    pub fn ciphersuite(&mut self) -> String {
        self.ssl.ciphersuite()
    }

    /// The protocol version in use: `DTLSv1.2` or `DTLSv1.3`.
    pub fn version(&mut self) -> String {
        self.ssl.version()
    }

    /// Every datagram sent and received so far, in order, if `capture` was set.
    pub fn captured(&self) -> Vec<(Direction, Vec<u8>)> {
        self.capture.clone().unwrap_or_default()
    }

    /// Sends what the stack queued.
    fn flush(&mut self) -> io::Result<()> {
        for datagram in self.ssl.take_output() {
            self.socket.send_to(&datagram, self.server)?;
            if let Some(capture) = &mut self.capture {
                capture.push((Direction::ClientToServer, datagram));
            }
        }
        Ok(())
    }

    /// Waits until `deadline` for one datagram from the server and queues it for the
    /// stack; if the retransmission timer fires first, lets the stack retransmit.
    fn wait(&mut self, deadline: Instant) -> io::Result<()> {
        let wake = self
            .ssl
            .timer_deadline()
            .map_or(deadline, |t| t.min(deadline));
        let received = self.receive_until(wake)?;
        if !received {
            // A stack answering `Timer::Pump` retransmits in the caller's next
            // `handshake` or `read`.
            self.ssl.on_timer()?;
            self.flush()?;
        }
        Ok(())
    }

    /// Waits until `deadline` for one datagram from the server and feeds it to the stack.
    /// Returns whether one arrived.
    fn receive_until(&mut self, deadline: Instant) -> io::Result<bool> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            self.socket.set_read_timeout(Some(left))?;
            match self.socket.recv_from(&mut self.buf) {
                Ok((len, src)) if src == self.server => {
                    let datagram = self.buf[..len].to_vec();
                    if let Some(capture) = &mut self.capture {
                        capture.push((Direction::ServerToClient, datagram.clone()));
                    }
                    self.ssl.feed(datagram);
                    return Ok(true);
                }
                // Not from the server: ignore.
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(false)
                }
                // An ICMP error for an earlier send (e.g. nobody listening yet): the
                // retransmission timer deals with it.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            }
        }
    }
}
