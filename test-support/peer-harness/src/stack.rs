//! What a DTLS stack must provide for the generic [`DtlsServer`](crate::DtlsServer)
//! and [`DtlsClient`](crate::DtlsClient).

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use crate::{ClientConfig, ServerConfig};

/// A DTLS implementation with RFC 9146 / RFC 9147 connection IDs: how to make sessions,
/// and just enough of its record format to demultiplex datagrams by CID.
pub trait DtlsStack: 'static {
    /// One side of one DTLS association.
    type Session: DtlsSession;
    /// What a server keeps to make its sessions (e.g. a shared configuration).
    type ServerContext: Send + 'static;

    /// Short name of the stack, e.g. `mbedtls`; names server threads.
    const NAME: &'static str;
    /// Longest CID a session of this stack can issue.
    const CID_MAX_LEN: usize;
    /// Offset of the CID within a record carrying one (see
    /// [`first_cid_record`](Self::first_cid_record)).
    const RECORD_CID_OFFSET: usize;

    /// Checks a PSK identity and key against the stack's limits.
    fn validate_psk(identity: &[u8], psk: &[u8]) -> io::Result<()>;

    /// Sets up what [`server_session`](Self::server_session) needs, on the caller's
    /// thread, so that a stack that cannot be set up fails `DtlsServer::spawn`.
    fn server_context(config: &ServerConfig) -> io::Result<Self::ServerContext>;

    /// A server session issuing `cid` (possibly empty) for a client at `peer`, ready to
    /// take that client's first ClientHello.
    fn server_session(
        context: &Self::ServerContext,
        cid: &[u8],
        peer: SocketAddr,
    ) -> io::Result<Self::Session>;

    /// A client session issuing `own_cid` (possibly empty), configured from `config`.
    fn client_session(config: &ClientConfig, own_cid: &[u8]) -> io::Result<Self::Session>;

    /// The first record of `datagram` that carries a CID, given the length of the CIDs
    /// the receiver issued (the length is not on the wire).
    fn first_cid_record(datagram: &[u8], cid_len: usize) -> Option<CidRecord<'_>>;

    /// Whether `datagram` starts with a plaintext ClientHello, the only thing that may
    /// open a new session on a server.
    fn starts_with_client_hello(datagram: &[u8]) -> bool;
}

/// A record carrying a connection ID, borrowed from its datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidRecord<'a> {
    /// Offset of the record's first byte in the datagram.
    pub offset: usize,
    /// The connection ID.
    pub cid: &'a [u8],
    /// The whole record, header included.
    pub bytes: &'a [u8],
}

/// One DTLS session with in-memory datagram I/O: datagrams go in through
/// [`feed`](Self::feed) and come out of [`take_output`](Self::take_output); the session
/// never sees a socket.
pub trait DtlsSession: Send + 'static {
    /// Hands one received datagram to the session, for the next
    /// [`handshake`](Self::handshake) or [`read`](Self::read).
    fn feed(&mut self, datagram: Vec<u8>);
    /// Whether a datagram given to [`feed`](Self::feed) has not been consumed yet.
    fn has_input(&self) -> bool;
    /// Takes the datagrams the session queued since the last call.
    fn take_output(&mut self) -> Vec<Vec<u8>>;

    /// When the retransmission timer expires (`None` when it is not running).
    fn timer_deadline(&self) -> Option<Instant>;
    /// Called when [`timer_deadline`](Self::timer_deadline) may have passed.
    fn on_timer(&mut self) -> io::Result<Timer>;

    /// Advances the handshake with the pending input.
    fn handshake(&mut self) -> io::Result<Handshake>;
    /// Reads application data into `buf` (at most one record's worth).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<Read>;
    /// Queues `data` as application data.
    fn write(&mut self, data: &[u8]) -> io::Result<()>;
    /// Queues a close_notify alert.
    fn close_notify(&mut self) -> io::Result<()>;

    /// The CID this side issued and receives in records, if CIDs are in use.
    fn own_cid(&mut self) -> Option<Vec<u8>>;
    /// The CID the peer issued, which this side puts in its records, if CIDs are in use.
    fn peer_cid(&mut self) -> Option<Vec<u8>>;
    /// Name of the negotiated cipher suite.
    fn ciphersuite(&mut self) -> String;
    /// The protocol version in use, e.g. `DTLSv1.3`.
    fn version(&mut self) -> String;

    /// Server only: the session answered [`Handshake::CookieSent`]; make it ready for
    /// the ClientHello with the cookie from `peer`. Default: nothing to do.
    fn reset_after_cookie(&mut self, peer: SocketAddr) -> io::Result<()> {
        let _ = peer;
        Ok(())
    }

    /// Server only: checks, without changing the session, whether `record` (the first
    /// CID record of a datagram for this established session) is authentic and fresh.
    /// The server moves a session to a new address only for such a record
    /// (RFC 9146 §6). Stacks that cannot tell before processing the record answer
    /// [`RecordCheck::Fresh`] (the default) and report drops through
    /// [`auth_failures`](Self::auth_failures) instead.
    fn check_record(&mut self, record: &[u8]) -> RecordCheck {
        let _ = record;
        RecordCheck::Fresh
    }

    /// Records dropped so far for failed authentication, for stacks that count them
    /// (see [`check_record`](Self::check_record)); `None` (the default) when
    /// `check_record` does the counting. With `Some`, the server also counts a datagram
    /// of an established session that yields nothing at all (no data, no reply, no
    /// authentication failure) as a replay.
    fn auth_failures(&mut self) -> Option<u64> {
        None
    }
}

/// Outcome of [`DtlsSession::handshake`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// The handshake is complete.
    Done,
    /// More input (or a timer expiry) is needed.
    WantInput,
    /// Server only: a cookie request (HelloVerifyRequest, or HelloRetryRequest with a
    /// cookie) was queued; see [`DtlsSession::reset_after_cookie`].
    CookieSent,
}

/// Outcome of [`DtlsSession::read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// This many bytes of application data were read.
    Data(usize),
    /// More input (or a timer expiry) is needed.
    WantInput,
    /// The peer sent close_notify.
    Closed,
    /// Server only: a new ClientHello with a valid cookie arrived from the same address
    /// and port; the session was reset and goes back to handshaking.
    Reconnect,
}

/// What [`DtlsSession::check_record`] concluded about a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordCheck {
    /// Authentic and not seen before.
    Fresh,
    /// Failed authentication (bad MAC / AEAD tag).
    BadMac,
    /// Authentic but replayed or otherwise unexpected in the current state.
    Unexpected,
    /// Malformed, or any other error.
    Invalid,
}

/// What [`DtlsSession::on_timer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The stack retransmitted what it had to (if the timer had expired); its output
    /// is ready.
    Handled,
    /// The stack retransmits from within [`handshake`](DtlsSession::handshake) and
    /// [`read`](DtlsSession::read): the caller should run those now.
    Pump,
}
