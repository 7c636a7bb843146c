//! Zero-copy, panic-free parsing of DTLS records for routing by Connection ID.
//!
//! This crate does no I/O and never allocates. Every function takes untrusted bytes and
//! either returns views that lie inside them or a small `Copy` error; no input can make
//! it panic or read out of bounds (see the property tests and the fuzz target).
//!
//! - [`Records`] walks the records of one datagram: DTLS 1.0/1.2 plaintext headers,
//!   RFC 9146 `tls12_cid` records and RFC 9147 unified headers.
//! - [`inspect`] summarises a client datagram for the router: the CID of the first
//!   record that carries one, and whether later records carry another.
//! - [`handshake`] reads the `connection_id` extension from ClientHello and ServerHello.
//!
//! The CID length is not on the wire; the caller says how to find it through
//! [`CidLength`] (a plain `usize` for a fixed length).
//!
//! ```
//! use cidlb_wire::inspect;
//! // A tls12_cid record: type 25, version fefd, epoch 1, seq 1, CID 4 bytes, length 2.
//! let dgram = [25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0xc1, 0xd0, 0x00, 0x07, 0, 2, 0xaa, 0xbb];
//! let info = inspect(&dgram, 4usize).unwrap();
//! assert_eq!(info.first_cid, Some(&[0xc1, 0xd0, 0x00, 0x07][..]));
//! assert_eq!(info.records, 1);
//! ```

#![forbid(unsafe_code)]

pub mod build;
mod cid;
mod datagram;
pub mod handshake;
#[doc(hidden)]
pub mod invariants;
mod reader;
mod record;

pub use cid::{CidLength, MAX_CID_LEN};
pub use datagram::{inspect, DatagramInfo};
pub use record::{ContentType, Header, Record, Records, WireError, PLAINTEXT_HEADER_LEN};
