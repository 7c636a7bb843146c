//! The harness's own tests: the shared peer suite run on a toy stack, a DTLS look-alike
//! without cryptography (a keyed checksum stands in for record protection), so that the
//! server loop, the client and the suite are checked without any FFI. A second toy,
//! which accepts forged and replayed records, shows that the suite can fail.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cidlb_test_peer_harness::relay::{any, DropOnce};
use cidlb_test_peer_harness::suite::{self, LossExpectations};
use cidlb_test_peer_harness::{
    CidRecord, ClientConfig, DtlsSession, DtlsStack, Handshake, Read, RecordCheck, ServerConfig,
    Timer,
};

// The toy's datagrams, one record each:
/// `[HELLO, has_cookie (0|1), key, cid_len, cid...]`, from the client.
const HELLO: u8 = 1;
/// `[COOKIE]`: the server's cookie request.
const COOKIE: u8 = 2;
/// `[SERVER_HELLO, cid...]`: the server's CID; the handshake is over.
const SERVER_HELLO: u8 = 3;
/// `[DATA_CID, cid..., seq (8 bytes), payload..., tag]`: data for a receiver with a CID.
const DATA_CID: u8 = 4;
/// `[DATA, seq (8 bytes), payload..., tag]`: data for a receiver without a CID.
const DATA: u8 = 5;
/// `[CLOSE]`: close_notify, or a fatal alert during the handshake.
const CLOSE: u8 = 6;

const RETRANSMIT: Duration = Duration::from_millis(100);

/// The toy stack; with `STRICT` false it skips the tag and replay checks.
enum Toy<const STRICT: bool> {}

/// The toy that checks its records.
type Strict = Toy<true>;
/// The toy that accepts anything.
type Lax = Toy<false>;

struct ToySession<const STRICT: bool> {
    client: bool,
    key: u8,
    own_cid: Vec<u8>,
    peer_cid: Option<Vec<u8>>,
    established: bool,
    inbox: VecDeque<Vec<u8>>,
    outbox: Vec<Vec<u8>>,
    /// Client: the last hello sent, resent when the timer fires.
    last_flight: Option<Vec<u8>>,
    deadline: Option<Instant>,
    send_seq: u64,
    /// Highest sequence number accepted.
    recv_seq: Option<u64>,
}

fn key(identity: &[u8], psk: &[u8]) -> u8 {
    identity
        .iter()
        .chain(psk)
        .fold(7u8, |k, &b| k.wrapping_mul(31).wrapping_add(b))
}

fn tag(key: u8, bytes: &[u8]) -> u8 {
    bytes.iter().fold(key, |t, &b| t.wrapping_mul(33) ^ b)
}

fn alert(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, msg)
}

impl<const STRICT: bool> ToySession<STRICT> {
    fn new(client: bool, key: u8, own_cid: &[u8]) -> Self {
        ToySession {
            client,
            key,
            own_cid: own_cid.to_vec(),
            peer_cid: None,
            established: false,
            inbox: VecDeque::new(),
            outbox: Vec::new(),
            last_flight: None,
            deadline: None,
            send_seq: 0,
            recv_seq: None,
        }
    }

    fn hello(&self, cookie: bool) -> Vec<u8> {
        let len = u8::try_from(self.own_cid.len()).expect("short CID");
        let mut hello = vec![HELLO, u8::from(cookie), self.key, len];
        hello.extend_from_slice(&self.own_cid);
        hello
    }

    fn server_hello(&self) -> Vec<u8> {
        let mut hello = vec![SERVER_HELLO];
        hello.extend_from_slice(&self.own_cid);
        hello
    }

    fn send_flight(&mut self, flight: Vec<u8>) {
        self.outbox.push(flight.clone());
        self.last_flight = Some(flight);
        self.deadline = Some(Instant::now() + RETRANSMIT);
    }

    /// A data record for this side: its sequence number and payload.
    fn open<'a>(&self, record: &'a [u8]) -> Result<(u64, &'a [u8]), RecordCheck> {
        let header = match record.first() {
            Some(&DATA_CID) => 1 + self.own_cid.len(),
            Some(&DATA) => 1,
            _ => return Err(RecordCheck::Invalid),
        };
        if record.len() < header + 9 {
            return Err(RecordCheck::Invalid);
        }
        let (body, last) = record.split_at(record.len() - 1);
        if STRICT && tag(self.key, body) != last[0] {
            return Err(RecordCheck::BadMac);
        }
        let seq = u64::from_be_bytes(body[header..header + 8].try_into().expect("8 bytes"));
        if STRICT && self.recv_seq.is_some_and(|highest| seq <= highest) {
            return Err(RecordCheck::Unexpected);
        }
        Ok((seq, &body[header + 8..]))
    }

    fn seal(&mut self, payload: &[u8]) -> Vec<u8> {
        let mut record = match &self.peer_cid {
            Some(cid) if !cid.is_empty() => [&[DATA_CID][..], cid].concat(),
            _ => vec![DATA],
        };
        record.extend_from_slice(&self.send_seq.to_be_bytes());
        self.send_seq += 1;
        record.extend_from_slice(payload);
        record.push(tag(self.key, &record));
        record
    }

    fn server_handshake(&mut self) -> io::Result<Handshake> {
        let Some(datagram) = self.inbox.pop_front() else {
            return Ok(Handshake::WantInput);
        };
        match datagram.as_slice() {
            [HELLO, 0, ..] => {
                self.outbox.push(vec![COOKIE]);
                Ok(Handshake::CookieSent)
            }
            [HELLO, 1, key, len, cid @ ..] if cid.len() == usize::from(*len) => {
                if *key != self.key {
                    self.outbox.push(vec![CLOSE]);
                    return Err(alert("unknown PSK"));
                }
                self.peer_cid = Some(cid.to_vec());
                self.established = true;
                self.outbox.push(self.server_hello());
                Ok(Handshake::Done)
            }
            _ => Ok(Handshake::WantInput),
        }
    }

    fn client_handshake(&mut self) -> io::Result<Handshake> {
        if self.last_flight.is_none() {
            self.send_flight(self.hello(false));
            return Ok(Handshake::WantInput);
        }
        let Some(datagram) = self.inbox.pop_front() else {
            return Ok(Handshake::WantInput);
        };
        match datagram.as_slice() {
            [COOKIE] => {
                self.send_flight(self.hello(true));
                Ok(Handshake::WantInput)
            }
            [SERVER_HELLO, cid @ ..] => {
                self.peer_cid = Some(cid.to_vec());
                self.established = true;
                self.deadline = None;
                Ok(Handshake::Done)
            }
            [CLOSE] => Err(alert("handshake failure")),
            _ => Ok(Handshake::WantInput),
        }
    }
}

impl<const STRICT: bool> DtlsStack for Toy<STRICT> {
    type Session = ToySession<STRICT>;
    type ServerContext = u8;

    const NAME: &'static str = "toy";
    const CID_MAX_LEN: usize = 16;
    const RECORD_CID_OFFSET: usize = 1;

    fn validate_psk(identity: &[u8], psk: &[u8]) -> io::Result<()> {
        if identity.is_empty() || psk.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty PSK"));
        }
        Ok(())
    }

    fn server_context(config: &ServerConfig) -> io::Result<u8> {
        Ok(key(&config.psk_identity, &config.psk))
    }

    fn server_session(key: &u8, cid: &[u8], _peer: SocketAddr) -> io::Result<Self::Session> {
        Ok(ToySession::new(false, *key, cid))
    }

    fn client_session(config: &ClientConfig, own_cid: &[u8]) -> io::Result<Self::Session> {
        let key = key(&config.psk_identity, &config.psk);
        Ok(ToySession::new(true, key, own_cid))
    }

    fn first_cid_record(datagram: &[u8], cid_len: usize) -> Option<CidRecord<'_>> {
        match datagram {
            [DATA_CID, rest @ ..] if rest.len() >= cid_len => Some(CidRecord {
                offset: 0,
                cid: &rest[..cid_len],
                bytes: datagram,
            }),
            _ => None,
        }
    }

    fn starts_with_client_hello(datagram: &[u8]) -> bool {
        datagram.first() == Some(&HELLO)
    }
}

impl<const STRICT: bool> DtlsSession for ToySession<STRICT> {
    fn feed(&mut self, datagram: Vec<u8>) {
        self.inbox.push_back(datagram);
    }

    fn has_input(&self) -> bool {
        !self.inbox.is_empty()
    }

    fn take_output(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outbox)
    }

    fn timer_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn on_timer(&mut self) -> io::Result<Timer> {
        if !self.established && self.deadline.is_some_and(|d| d <= Instant::now()) {
            if let Some(flight) = self.last_flight.clone() {
                self.send_flight(flight);
            }
        }
        Ok(Timer::Handled)
    }

    fn handshake(&mut self) -> io::Result<Handshake> {
        if self.client {
            self.client_handshake()
        } else {
            self.server_handshake()
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<Read> {
        let Some(datagram) = self.inbox.pop_front() else {
            return Ok(Read::WantInput);
        };
        match datagram.first() {
            Some(&CLOSE) => return Ok(Read::Closed),
            // The client did not get the ServerHello: send it again.
            Some(&HELLO) if !self.client => {
                self.outbox.push(self.server_hello());
                return Ok(Read::WantInput);
            }
            _ => {}
        }
        match self.open(&datagram) {
            Ok((seq, payload)) => {
                self.recv_seq = Some(self.recv_seq.map_or(seq, |highest| highest.max(seq)));
                buf[..payload.len()].copy_from_slice(payload);
                Ok(Read::Data(payload.len()))
            }
            // Dropped silently, as DTLS does.
            Err(_) => Ok(Read::WantInput),
        }
    }

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let record = self.seal(data);
        self.outbox.push(record);
        Ok(())
    }

    fn close_notify(&mut self) -> io::Result<()> {
        self.outbox.push(vec![CLOSE]);
        Ok(())
    }

    fn own_cid(&mut self) -> Option<Vec<u8>> {
        Some(self.own_cid.clone())
    }

    fn peer_cid(&mut self) -> Option<Vec<u8>> {
        self.peer_cid.clone()
    }

    fn ciphersuite(&mut self) -> String {
        "TOY-NULL-WITH-CHECKSUM".to_string()
    }

    fn version(&mut self) -> String {
        "TOYv1".to_string()
    }

    fn check_record(&mut self, record: &[u8]) -> RecordCheck {
        self.open(record)
            .map_or_else(|check| check, |_| RecordCheck::Fresh)
    }
}

#[test]
fn handshake_and_echo() {
    suite::handshake_and_echo::<Strict>("TOY-NULL-WITH-CHECKSUM", "TOYv1");
}

#[test]
fn client_without_own_cid_still_uses_the_servers() {
    let last_received = suite::client_without_own_cid_still_uses_the_servers::<Strict>();
    assert_eq!(last_received[0], DATA);
}

#[test]
fn wrong_psk_fails_the_handshake() {
    suite::wrong_psk_fails_the_handshake::<Strict>();
}

#[test]
fn ten_concurrent_clients_ten_handshakes() {
    suite::concurrent_clients::<Strict>(10);
}

#[test]
fn fifty_sessions_at_once() {
    suite::many_sessions_at_once::<Strict>(50);
}

#[test]
fn rebinding_to_a_new_port_and_a_new_address_keeps_the_session() {
    suite::rebinding_to_a_new_port_and_a_new_address_keeps_the_session::<Strict>();
}

#[test]
fn replayed_cid_record_from_another_address_does_not_move_the_peer() {
    suite::replayed_cid_record_from_another_address_does_not_move_the_peer::<Strict>();
}

/// Flips the tag.
fn forge(datagram: &mut [u8], _offset: usize) {
    let last = datagram.len() - 1;
    datagram[last] ^= 0x01;
}

#[test]
fn forged_cid_record_from_another_address_does_not_move_the_peer() {
    suite::forged_cid_record_from_another_address_does_not_move_the_peer::<Strict>(forge);
}

#[test]
fn unknown_cid_is_dropped() {
    suite::unknown_cid_is_dropped::<Strict>();
}

#[test]
fn closing_ends_the_session() {
    suite::closing_ends_the_session::<Strict>();
}

#[test]
fn invalid_configs_are_refused() {
    suite::invalid_configs_are_refused::<Strict>();
}

#[test]
fn peers_can_move_between_threads() {
    suite::peers_can_move_between_threads::<Strict>();
}

#[test]
fn paused_server_answers_nothing_until_resumed() {
    suite::paused_server_answers_nothing_until_resumed::<Strict>();
}

fn is_cookie(datagram: &[u8]) -> bool {
    datagram == [COOKIE]
}

fn is_server_hello(datagram: &[u8]) -> bool {
    datagram.first() == Some(&SERVER_HELLO)
}

#[test]
fn every_lost_flight_is_retransmitted() {
    suite::every_lost_flight_is_retransmitted::<Strict>(
        vec![
            DropOnce::client_to_server(any),
            DropOnce::server_to_client(is_cookie),
            DropOnce::server_to_client(is_server_hello),
        ],
        LossExpectations {
            // Each loss is repaired by the client's 100 ms timer.
            min_handshake: 3 * RETRANSMIT,
            echo_timeout: Duration::from_secs(3),
            exactly_one_echo: true,
        },
    );
}

// A stack that takes replayed or forged records for fresh ones lets an attacker move
// the session: the suite must catch it.

#[test]
#[should_panic(expected = "migrations: 1")]
fn a_stack_accepting_replays_fails_the_suite() {
    suite::replayed_cid_record_from_another_address_does_not_move_the_peer::<Lax>();
}

#[test]
#[should_panic(expected = "migrations: 1")]
fn a_stack_accepting_forgeries_fails_the_suite() {
    suite::forged_cid_record_from_another_address_does_not_move_the_peer::<Lax>(forge);
}
