//! Builders for DTLS-shaped records: for tests, simulations and the load generator.
//!
//! These produce syntactically valid records (headers, handshake framing, hellos with
//! a `connection_id` extension); payloads are whatever the caller passes, not real
//! ciphertext. They prove that the parser agrees with itself — end-to-end proof needs
//! real DTLS stacks.

use crate::handshake::{ext, HandshakeType};
use crate::record::ContentType;

/// Appends a 13-byte-header plaintext record.
pub fn plaintext(ct: ContentType, epoch: u16, seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    out.push(ct.0);
    out.extend_from_slice(&0xfefdu16.to_be_bytes());
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes()[2..]);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Appends an RFC 9146 `tls12_cid` record.
pub fn cid12(epoch: u16, seq: u64, cid: &[u8], payload: &[u8], out: &mut Vec<u8>) {
    out.push(ContentType::TLS12_CID.0);
    out.extend_from_slice(&0xfefdu16.to_be_bytes());
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes()[2..]);
    out.extend_from_slice(cid);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
}

/// Appends an RFC 9147 unified-header record: C bit from `cid`, S bit (16-bit sequence)
/// always, L bit from `with_length`, epoch bits from `epoch`.
pub fn unified(
    cid: Option<&[u8]>,
    epoch: u8,
    seq: u16,
    with_length: bool,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let mut first = 0x20 | 0x08 | (epoch & 0x03);
    if cid.is_some() {
        first |= 0x10;
    }
    if with_length {
        first |= 0x04;
    }
    out.push(first);
    if let Some(c) = cid {
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&seq.to_be_bytes());
    if with_length {
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// A complete (unfragmented) DTLS handshake message: 12-byte header + body.
pub fn handshake_message(msg_type: HandshakeType, message_seq: u16, body: &[u8]) -> Vec<u8> {
    let len = (body.len() as u32).to_be_bytes();
    let mut m = Vec::with_capacity(12 + body.len());
    m.push(msg_type.0);
    m.extend_from_slice(&len[1..]);
    m.extend_from_slice(&message_seq.to_be_bytes());
    m.extend_from_slice(&[0, 0, 0]);
    m.extend_from_slice(&len[1..]);
    m.extend_from_slice(body);
    m
}

fn cid_extension(cid: Option<&[u8]>, out: &mut Vec<u8>) {
    let Some(cid) = cid else {
        return;
    };
    let mut exts = Vec::new();
    exts.extend_from_slice(&ext::CONNECTION_ID.to_be_bytes());
    exts.extend_from_slice(&((cid.len() + 1) as u16).to_be_bytes());
    exts.push(cid.len() as u8);
    exts.extend_from_slice(cid);
    out.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    out.extend_from_slice(&exts);
}

/// A ClientHello body with `cookie` and, if given, a `connection_id` extension
/// announcing the CID the client wants to receive.
pub fn client_hello_body(random: [u8; 32], cookie: &[u8], cid: Option<&[u8]>) -> Vec<u8> {
    let mut b = vec![0xfe, 0xfd];
    b.extend_from_slice(&random);
    b.push(0); // session_id
    b.push(cookie.len() as u8);
    b.extend_from_slice(cookie);
    b.extend_from_slice(&[0, 2, 0xc0, 0xa8]); // one cipher suite
    b.extend_from_slice(&[1, 0]); // null compression
    cid_extension(cid, &mut b);
    b
}

/// A ServerHello body, with a `connection_id` extension when `cid` is given.
pub fn server_hello_body(random: [u8; 32], cid: Option<&[u8]>) -> Vec<u8> {
    let mut b = vec![0xfe, 0xfd];
    b.extend_from_slice(&random);
    b.push(0); // session_id
    b.extend_from_slice(&[0xc0, 0xa8]);
    b.push(0);
    cid_extension(cid, &mut b);
    b
}

/// A datagram holding one plaintext handshake record with a ClientHello.
pub fn client_hello_datagram(random: [u8; 32], cookie: &[u8], cid: Option<&[u8]>) -> Vec<u8> {
    let msg = handshake_message(
        HandshakeType::CLIENT_HELLO,
        0,
        &client_hello_body(random, cookie, cid),
    );
    let mut d = Vec::new();
    plaintext(ContentType::HANDSHAKE, 0, 0, &msg, &mut d);
    d
}

/// A datagram holding one plaintext handshake record with a ServerHello.
pub fn server_hello_datagram(random: [u8; 32], cid: Option<&[u8]>) -> Vec<u8> {
    let msg = handshake_message(
        HandshakeType::SERVER_HELLO,
        0,
        &server_hello_body(random, cid),
    );
    let mut d = Vec::new();
    plaintext(ContentType::HANDSHAKE, 0, 0, &msg, &mut d);
    d
}

/// A datagram holding a HelloVerifyRequest with `cookie`.
pub fn hello_verify_request_datagram(cookie: &[u8]) -> Vec<u8> {
    let mut body = vec![0xfe, 0xff, cookie.len() as u8];
    body.extend_from_slice(cookie);
    let msg = handshake_message(HandshakeType::HELLO_VERIFY_REQUEST, 0, &body);
    let mut d = Vec::new();
    plaintext(ContentType::HANDSHAKE, 0, 0, &msg, &mut d);
    d
}
