//! wolfSSL 5.9.4 as a [`DtlsStack`]: DTLS 1.3 with RFC 9147 connection IDs.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use cidlb_test_peer_harness::{
    CidRecord, ClientConfig, DtlsSession, DtlsStack, Handshake, Read, ServerConfig, Timer,
};

use crate::ffi::{self, Endpoint, Ssl};
use crate::record::{self, Kind};

/// wolfSSL 5.9.4 (DTLS 1.3, PSK with `psk_dhe_ke`, suite `TLS13-AES128-GCM-SHA256`), for
/// [`DtlsServer`](crate::DtlsServer) and [`DtlsClient`](crate::DtlsClient).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wolfssl {}

/// One wolfSSL session: a `WOLFSSL` object with in-memory datagram I/O.
pub struct WolfsslSession {
    ssl: Ssl,
    endpoint: Endpoint,
}

/// What a server needs to make its sessions: the PSK.
pub struct WolfsslServerContext {
    psk_identity: Vec<u8>,
    psk: Vec<u8>,
}

impl DtlsStack for Wolfssl {
    type Session = WolfsslSession;
    type ServerContext = WolfsslServerContext;

    const NAME: &'static str = "wolfssl";
    const CID_MAX_LEN: usize = ffi::CID_MAX_LEN;
    /// In a unified header the CID comes right after the first byte.
    const RECORD_CID_OFFSET: usize = 1;

    fn validate_psk(identity: &[u8], psk: &[u8]) -> io::Result<()> {
        crate::validate_psk(identity, psk)
    }

    fn server_context(config: &ServerConfig) -> io::Result<WolfsslServerContext> {
        // Fails if wolfSSL cannot be set up.
        drop(Ssl::new(
            Endpoint::Server,
            &config.psk_identity,
            &config.psk,
        )?);
        Ok(WolfsslServerContext {
            psk_identity: config.psk_identity.clone(),
            psk: config.psk.clone(),
        })
    }

    fn server_session(
        context: &WolfsslServerContext,
        cid: &[u8],
        _peer: SocketAddr,
    ) -> io::Result<WolfsslSession> {
        let mut ssl = Ssl::new(Endpoint::Server, &context.psk_identity, &context.psk)?;
        ssl.enable_cid(cid)?;
        Ok(WolfsslSession {
            ssl,
            endpoint: Endpoint::Server,
        })
    }

    fn client_session(config: &ClientConfig, own_cid: &[u8]) -> io::Result<WolfsslSession> {
        let mut ssl = Ssl::new(Endpoint::Client, &config.psk_identity, &config.psk)?;
        ssl.enable_cid(own_cid)?;
        Ok(WolfsslSession {
            ssl,
            endpoint: Endpoint::Client,
        })
    }

    fn first_cid_record(datagram: &[u8], cid_len: usize) -> Option<CidRecord<'_>> {
        record::records(datagram, cid_len).find_map(|r| match r.kind {
            Kind::Ciphertext { cid: Some(cid), .. } => Some(CidRecord {
                offset: r.offset,
                cid,
                bytes: r.bytes,
            }),
            _ => None,
        })
    }

    fn starts_with_client_hello(datagram: &[u8]) -> bool {
        record::starts_with_client_hello(datagram)
    }
}

impl DtlsSession for WolfsslSession {
    fn feed(&mut self, datagram: Vec<u8>) {
        self.ssl.feed(datagram);
    }

    fn has_input(&self) -> bool {
        self.ssl.has_input()
    }

    fn take_output(&mut self) -> Vec<Vec<u8>> {
        self.ssl.take_output()
    }

    fn timer_deadline(&self) -> Option<Instant> {
        self.ssl.timer_deadline()
    }

    /// wolfSSL retransmits when told the timer fired (`wolfSSL_dtls_got_timeout`).
    fn on_timer(&mut self) -> io::Result<Timer> {
        self.ssl.on_timer()?;
        Ok(Timer::Handled)
    }

    fn handshake(&mut self) -> io::Result<Handshake> {
        let queued = self.ssl.output_len();
        let step = self.ssl.handshake()?;
        // Before a ClientHello with a valid cookie, a wolfSSL server answers
        // statelessly, and what it sends is a HelloRetryRequest.
        if self.endpoint == Endpoint::Server
            && !self.ssl.is_stateful()
            && self.ssl.output_len() > queued
        {
            return Ok(Handshake::CookieSent);
        }
        Ok(match step {
            ffi::Handshake::Done => Handshake::Done,
            ffi::Handshake::WantInput => Handshake::WantInput,
        })
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<Read> {
        Ok(match self.ssl.read(buf)? {
            ffi::Read::Data(n) => Read::Data(n),
            ffi::Read::WantInput => Read::WantInput,
            ffi::Read::Closed => Read::Closed,
        })
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        Ok(self.ssl.write(data)?)
    }

    fn close_notify(&mut self) -> io::Result<()> {
        Ok(self.ssl.close_notify()?)
    }

    fn own_cid(&mut self) -> Option<Vec<u8>> {
        self.ssl.own_cid()
    }

    fn peer_cid(&mut self) -> Option<Vec<u8>> {
        self.ssl.peer_cid()
    }

    fn ciphersuite(&mut self) -> String {
        self.ssl.cipher_name()
    }

    fn version(&mut self) -> String {
        self.ssl.version()
    }

    /// wolfSSL drops DTLS 1.3 records that fail authentication, or are replays, without
    /// an error; its drop statistics count the former (`wolfSSL_dtls_get_drop_stats`).
    fn auth_failures(&mut self) -> Option<u64> {
        Some(self.ssl.auth_failures())
    }
}
