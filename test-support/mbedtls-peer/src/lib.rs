//! Test support: real Mbed TLS 3.6.5 DTLS 1.2 peers with RFC 9146 connection IDs.
//!
//! A load balancer that routes DTLS by connection ID is only proven by real DTLS stacks
//! doing real handshakes through it. This crate wraps Mbed TLS 3.6.5 (bundled by
//! `mbedtls-rs-sys` 0.3.1) as a [`DtlsStack`](cidlb_test_peer_harness::DtlsStack),
//! [`Mbedtls`], for the stack-independent servers and clients of
//! `cidlb-test-peer-harness`:
//!
//! * [`DtlsServer`]: an echo server on its own thread that issues CIDs starting with a
//!   chosen prefix, demultiplexes datagrams by CID (or by address before the
//!   handshake), and follows a client to a new address only after authenticating a
//!   record from it (RFC 9146 §6), counting everything in [`ServerStats`];
//! * [`DtlsClient`]: a blocking client that can [`rebind`](DtlsClient::rebind) its
//!   socket mid-session, as a NAT would, and capture its datagrams.
//!
//! Both use a pre-shared key (suite `TLS-PSK-WITH-AES-128-CCM-8`) to keep handshakes
//! cheap, plain `std::net::UdpSocket`s, and bounded waits everywhere.
//!
//! This crate is for tests only and is never published: it is the one place in the
//! workspace that uses `unsafe` (FFI, confined to a private module).
//!
//! ```
//! use std::time::Duration;
//! use cidlb_test_mbedtls::{ClientConfig, DtlsClient, DtlsServer, ServerConfig};
//!
//! let server = DtlsServer::spawn(ServerConfig::new("127.0.0.1:0".parse()?, [0xc1], 4))?;
//! let mut client = DtlsClient::connect(ClientConfig::new(server.local_addr()))?;
//! client.echo(b"hello", Duration::from_secs(3))?;
//! assert_eq!(client.peer_cid()[0], 0xc1);
//! assert_eq!(server.stats().handshakes, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs, unsafe_op_in_unsafe_fn)]

// Provides the `critical-section` implementation (feature `std`) that Mbed TLS's Rust
// hooks in `mbedtls-rs-sys` need at link time.
use critical_section as _;

#[allow(unsafe_code)]
mod ffi;
pub mod record;
pub mod scenario;
mod stack;

pub use cidlb_test_peer_harness::{
    CidSource, ClientConfig, Direction, ServerConfig, ServerStats, DEFAULT_PSK,
    DEFAULT_PSK_IDENTITY,
};
pub use stack::Mbedtls;

/// A real Mbed TLS DTLS 1.2 server with RFC 9146 connection IDs, echoing application
/// data, on its own thread (see [`cidlb_test_peer_harness::DtlsServer`]).
pub type DtlsServer = cidlb_test_peer_harness::DtlsServer<Mbedtls>;

/// A real Mbed TLS DTLS 1.2 client with an established RFC 9146 session (see
/// [`cidlb_test_peer_harness::DtlsClient`]).
pub type DtlsClient = cidlb_test_peer_harness::DtlsClient<Mbedtls>;
