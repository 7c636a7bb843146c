//! Mbed TLS 3.6.5 as a [`DtlsStack`]: DTLS 1.2 with RFC 9146 connection IDs.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cidlb_test_peer_harness::{
    CidRecord, ClientConfig, DtlsSession, DtlsStack, Handshake, Read, RecordCheck, ServerConfig,
    Timer,
};

use crate::ffi::{self, Config, ConfigParams, Endpoint, Ssl};
use crate::record;

/// Mbed TLS 3.6.5 (DTLS 1.2, PSK suite `TLS-PSK-WITH-AES-128-CCM-8`), for
/// [`DtlsServer`](crate::DtlsServer) and [`DtlsClient`](crate::DtlsClient).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mbedtls {}

/// One Mbed TLS session: an `mbedtls_ssl_context` with in-memory datagram I/O.
pub struct MbedtlsSession(Ssl);

impl std::fmt::Debug for MbedtlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MbedtlsSession(..)")
    }
}

/// What a server shares between its sessions: one `mbedtls_ssl_config`.
pub struct MbedtlsServerContext(Arc<Config>);

impl DtlsStack for Mbedtls {
    type Session = MbedtlsSession;
    type ServerContext = MbedtlsServerContext;

    const NAME: &'static str = "mbedtls";
    const CID_MAX_LEN: usize = ffi::CID_MAX_LEN;
    const RECORD_CID_OFFSET: usize = record::CID_OFFSET;

    fn validate_psk(identity: &[u8], psk: &[u8]) -> io::Result<()> {
        if psk.is_empty() || identity.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "psk and psk_identity must not be empty",
            ));
        }
        Ok(())
    }

    fn server_context(config: &ServerConfig) -> io::Result<MbedtlsServerContext> {
        let ssl_config = Config::new(&ConfigParams {
            endpoint: Endpoint::Server,
            psk_identity: &config.psk_identity,
            psk: &config.psk,
            cid_len: config.cid_len,
            retransmit_min: Duration::from_millis(200),
            retransmit_max: Duration::from_secs(6),
        })?;
        Ok(MbedtlsServerContext(ssl_config))
    }

    fn server_session(
        context: &MbedtlsServerContext,
        cid: &[u8],
        peer: SocketAddr,
    ) -> io::Result<MbedtlsSession> {
        let mut ssl = Ssl::new(&context.0)?;
        ssl.set_own_cid(cid)?;
        ssl.set_client_transport_id(&transport_id(peer))?;
        Ok(MbedtlsSession(ssl))
    }

    fn client_session(config: &ClientConfig, own_cid: &[u8]) -> io::Result<MbedtlsSession> {
        let ssl_config = Config::new(&ConfigParams {
            endpoint: Endpoint::Client,
            psk_identity: &config.psk_identity,
            psk: &config.psk,
            cid_len: config.own_cid_len,
            retransmit_min: Duration::from_millis(200),
            retransmit_max: config.handshake_timeout,
        })?;
        let mut ssl = Ssl::new(&ssl_config)?;
        ssl.set_own_cid(own_cid)?;
        Ok(MbedtlsSession(ssl))
    }

    fn first_cid_record(datagram: &[u8], cid_len: usize) -> Option<CidRecord<'_>> {
        record::first_cid_record(datagram, cid_len).map(|r| CidRecord {
            offset: r.offset,
            cid: r.cid,
            bytes: r.bytes,
        })
    }

    fn starts_with_client_hello(datagram: &[u8]) -> bool {
        record::starts_with_client_hello(datagram)
    }
}

impl DtlsSession for MbedtlsSession {
    fn feed(&mut self, datagram: Vec<u8>) {
        self.0.feed(datagram);
    }

    fn has_input(&self) -> bool {
        self.0.has_input()
    }

    fn take_output(&mut self) -> Vec<Vec<u8>> {
        self.0.take_output()
    }

    fn timer_deadline(&self) -> Option<Instant> {
        self.0.timer_deadline()
    }

    /// Mbed TLS checks its timer, and retransmits, within `handshake` and `read`.
    fn on_timer(&mut self) -> io::Result<Timer> {
        Ok(Timer::Pump)
    }

    fn handshake(&mut self) -> io::Result<Handshake> {
        Ok(match self.0.handshake()? {
            ffi::Handshake::Done => Handshake::Done,
            ffi::Handshake::WantInput => Handshake::WantInput,
            ffi::Handshake::HelloVerifyRequired => Handshake::CookieSent,
        })
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<Read> {
        Ok(match self.0.read(buf)? {
            ffi::Read::Data(n) => Read::Data(n),
            ffi::Read::WantInput => Read::WantInput,
            ffi::Read::Closed => Read::Closed,
            ffi::Read::Reconnect => Read::Reconnect,
        })
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        Ok(self.0.write(data)?)
    }

    fn close_notify(&mut self) -> io::Result<()> {
        Ok(self.0.close_notify()?)
    }

    fn own_cid(&mut self) -> Option<Vec<u8>> {
        self.0.own_cid()
    }

    fn peer_cid(&mut self) -> Option<Vec<u8>> {
        self.0.peer_cid()
    }

    fn ciphersuite(&mut self) -> String {
        self.0.ciphersuite()
    }

    /// Mbed TLS 3.6 implements no other DTLS version.
    fn version(&mut self) -> String {
        "DTLSv1.2".to_string()
    }

    /// Mbed TLS keeps no state across a HelloVerifyRequest: reset the context (keeping
    /// its configuration and CID) and bind the next cookie to the same client.
    fn reset_after_cookie(&mut self, peer: SocketAddr) -> io::Result<()> {
        self.0.session_reset()?;
        Ok(self.0.set_client_transport_id(&transport_id(peer))?)
    }

    fn check_record(&mut self, record: &[u8]) -> RecordCheck {
        match self.0.check_record(record) {
            ffi::RecordCheck::Fresh => RecordCheck::Fresh,
            ffi::RecordCheck::BadMac => RecordCheck::BadMac,
            ffi::RecordCheck::Unexpected => RecordCheck::Unexpected,
            ffi::RecordCheck::Invalid => RecordCheck::Invalid,
        }
    }
}

/// The client identity bound into HelloVerifyRequest cookies: its IP address and port.
fn transport_id(addr: SocketAddr) -> Vec<u8> {
    let mut id = match addr.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    id.extend_from_slice(&addr.port().to_be_bytes());
    id
}
