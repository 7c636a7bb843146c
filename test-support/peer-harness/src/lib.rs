//! Test support: the stack-independent half of cidlb's real-DTLS test peers.
//!
//! `cidlb-test-mbedtls` (Mbed TLS, DTLS 1.2) and `cidlb-test-wolfssl` (wolfSSL,
//! DTLS 1.3) each implement [`DtlsStack`] over their FFI; everything else lives here:
//!
//! * [`DtlsServer`]: an echo server on its own thread that issues CIDs starting with a
//!   chosen prefix (or from a [`CidSource`]), demultiplexes datagrams by CID (or by
//!   address before the handshake), and follows a client to a new address only after
//!   authenticating a record from it (RFC 9146 §6, RFC 9147 §11), counting everything
//!   in [`ServerStats`] and showing where each session's peer is
//!   ([`DtlsServer::peers`]); it can be [`pause`](DtlsServer::pause)d and resumed, as
//!   `kill -STOP` / `kill -CONT` would a server process;
//! * [`DtlsClient`]: a blocking client that can [`rebind`](DtlsClient::rebind) its
//!   socket mid-session, as a NAT would, and capture its datagrams;
//! * [`suite`] and [`relay`]: the tests both peer crates run against themselves,
//!   written once, generic over the stack.
//!
//! Everything is plain `std::net::UdpSocket`s plus threads, and every wait is bounded.
//! This crate has no `unsafe` and no DTLS stack of its own; it is for tests only and
//! never published.

mod client;
pub mod relay;
mod server;
mod stack;
pub mod suite;

pub use client::{ClientConfig, Direction, DtlsClient};
pub use server::{CidSource, DtlsServer, ServerConfig, ServerStats};
pub use stack::{CidRecord, DtlsSession, DtlsStack, Handshake, Read, RecordCheck, Timer};

/// PSK identity used by [`ServerConfig::new`] and [`ClientConfig::new`].
pub const DEFAULT_PSK_IDENTITY: &[u8] = b"cidlb-test";

/// Pre-shared key used by [`ServerConfig::new`] and [`ClientConfig::new`] (16 bytes).
pub const DEFAULT_PSK: &[u8] = b"cidlb-test-psk-!";
