//! Test support: real wolfSSL 5.9.4 DTLS 1.3 peers with RFC 9147 connection IDs.
//!
//! A load balancer that routes DTLS by connection ID is only proven by real DTLS stacks
//! doing real handshakes through it. This crate wraps wolfSSL 5.9.4 (bundled by
//! `wolfssl-sys` 5.3.0, built with `WOLFSSL_DTLS_CID`: see the workspace's
//! `.cargo/config.toml`) as a [`DtlsStack`](cidlb_test_peer_harness::DtlsStack),
//! [`Wolfssl`], for the stack-independent servers and clients of
//! `cidlb-test-peer-harness` (MIT OR Apache-2.0; it does not depend on this crate):
//!
//! * [`DtlsServer`]: a DTLS 1.3 echo server on its own thread that issues CIDs starting
//!   with a chosen prefix, answers a first ClientHello with a cookie
//!   (HelloRetryRequest), demultiplexes datagrams by the CID in unified headers (or by
//!   address before the handshake), and follows a client to a new address only after
//!   wolfSSL has read authenticated application data from there (RFC 9146 §6,
//!   RFC 9147 §11), counting everything in [`ServerStats`];
//! * [`DtlsClient`]: a blocking DTLS 1.3 client that can [`rebind`](DtlsClient::rebind)
//!   its socket mid-session, as a NAT would, and capture its datagrams;
//! * [`record`]: minimal DTLS 1.3 record parsing (unified headers, hellos).
//!
//! Its API is that of the Mbed TLS DTLS 1.2 peers of `cidlb-test-mbedtls` (the same
//! harness), so that tests of both read alike. Both sides use a pre-shared key (with an ECDHE exchange,
//! `psk_dhe_ke`; suite `TLS13-AES128-GCM-SHA256`), plain `std::net::UdpSocket`s, and
//! bounded waits everywhere.
//!
//! **Licence.** wolfSSL is GPL-2.0-or-later, and so is this crate. It is for tests only:
//! never published, and only ever a `[dev-dependencies]` entry, so that no shipped
//! binary links it. It is also the one place in the workspace besides the Mbed TLS
//! peers that uses `unsafe` (FFI, confined to a private module).
//!
//! ```
//! use std::time::Duration;
//! use cidlb_test_wolfssl::{ClientConfig, DtlsClient, DtlsServer, ServerConfig};
//!
//! let server = DtlsServer::spawn(ServerConfig::new("127.0.0.1:0".parse()?, [0xc1], 4))?;
//! let mut client = DtlsClient::connect(ClientConfig::new(server.local_addr()))?;
//! client.echo(b"hello", Duration::from_secs(3))?;
//! assert_eq!(client.peer_cid()[0], 0xc1);
//! assert_eq!(client.version(), "DTLSv1.3");
//! assert_eq!(server.stats().handshakes, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs, unsafe_op_in_unsafe_fn)]

#[allow(unsafe_code)]
mod ffi;
pub mod record;
mod stack;

use std::io;

pub use cidlb_test_peer_harness::{
    CidSource, ClientConfig, Direction, ServerConfig, ServerStats, DEFAULT_PSK,
    DEFAULT_PSK_IDENTITY,
};
pub use stack::Wolfssl;

/// A real wolfSSL DTLS 1.3 server with RFC 9147 connection IDs, echoing application
/// data, on its own thread (see [`cidlb_test_peer_harness::DtlsServer`]).
pub type DtlsServer = cidlb_test_peer_harness::DtlsServer<Wolfssl>;

/// A real wolfSSL DTLS 1.3 client with an established session using connection IDs
/// (see [`cidlb_test_peer_harness::DtlsClient`]).
pub type DtlsClient = cidlb_test_peer_harness::DtlsClient<Wolfssl>;

/// Longest CID a peer of this crate issues: wolfSSL's `DTLS_CID_MAX_SIZE` in this build.
pub const CID_MAX_LEN: usize = ffi::CID_MAX_LEN;

/// Checks a PSK identity and key against wolfSSL's limits.
fn validate_psk(identity: &[u8], psk: &[u8]) -> io::Result<()> {
    let invalid = |msg: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
    if identity.is_empty() || identity.len() >= ffi::PSK_IDENTITY_MAX_LEN || identity.contains(&0) {
        return invalid("psk_identity must be 1 to 127 bytes without a NUL byte");
    }
    if psk.is_empty() || psk.len() > ffi::PSK_MAX_LEN {
        return invalid("psk must be 1 to 64 bytes");
    }
    Ok(())
}
