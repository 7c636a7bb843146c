//! Captures one real Mbed TLS DTLS 1.2 CID handshake plus one application-data echo
//! and writes it as a test-vector file for `cidlb-wire`.
//!
//! ```text
//! cargo run -p cidlb-test-mbedtls --example capture [OUTPUT]
//! ```
//!
//! OUTPUT defaults to
//! `crates/cidlb-wire/tests/vectors/mbedtls-3.6.5-cid-handshake.txt` in the workspace.
//! Every run makes new keys, CIDs and random values, so the file changes each time.

use std::error::Error;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use std::{env, fs};

use cidlb_test_mbedtls::record::{self, Record};
use cidlb_test_mbedtls::{ClientConfig, Direction, DtlsClient, DtlsServer, ServerConfig};

const CID_LEN: usize = 4;
const SERVER_CID_PREFIX: [u8; 1] = [0xc1];
const MESSAGE: &[u8] = b"ping";

fn main() -> Result<(), Box<dyn Error>> {
    let output = env::args_os().nth(1).map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../crates/cidlb-wire/tests/vectors/mbedtls-3.6.5-cid-handshake.txt")
        },
        PathBuf::from,
    );

    let server = DtlsServer::spawn(ServerConfig::new(
        "127.0.0.1:0".parse()?,
        SERVER_CID_PREFIX,
        CID_LEN,
    ))?;
    let mut config = ClientConfig::new(server.local_addr());
    config.own_cid_len = CID_LEN;
    config.capture = true;
    let mut client = DtlsClient::connect(config)?;
    client.echo(MESSAGE, Duration::from_secs(5))?;

    let stats = server.stats();
    if stats.handshakes != 1 || stats.echoed != 1 {
        return Err(format!("expected one handshake and one echo, got {stats:?}").into());
    }
    let captured = client.captured();
    let text = render(
        &captured,
        &client.own_cid(),
        &client.peer_cid(),
        &client.ciphersuite(),
    );
    if let Some(dir) = output.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&output, text)?;
    let output = output.canonicalize().unwrap_or(output);
    println!("wrote {} datagrams to {}", captured.len(), output.display());
    Ok(())
}

fn render(
    captured: &[(Direction, Vec<u8>)],
    client_cid: &[u8],
    server_cid: &[u8],
    ciphersuite: &str,
) -> String {
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    line("# One real DTLS 1.2 handshake with RFC 9146 connection IDs, then one");
    line(&format!(
        "# application-data echo ({:?}), as seen by the client's UDP socket.",
        String::from_utf8_lossy(MESSAGE)
    ));
    line("# Both peers: Mbed TLS 3.6.5 via the Rust crate mbedtls-rs-sys 0.3.1");
    line("# (crate cidlb-test-mbedtls, example `capture`), on 127.0.0.1.");
    line(&format!(
        "# Captured on {} (UTC).",
        utc_date(SystemTime::now())
    ));
    line(&format!(
        "# Cipher suite: {ciphersuite} (PSK, no certificates)."
    ));
    line(&format!(
        "# Client CID (issued by the client, carried in s2c tls12_cid records): {}",
        hex(client_cid)
    ));
    line(&format!(
        "# Server CID (issued by the server, carried in c2s tls12_cid records): {}",
        hex(server_cid)
    ));
    line(&format!(
        "# Both CIDs are {CID_LEN} bytes; the server's starts with the prefix {}.",
        hex(&SERVER_CID_PREFIX)
    ));
    line("# tls12_cid (25) record: type(1) version(2) epoch(2) seq(6) cid(4) length(2)");
    line("# then ciphertext; other records: type(1) version(2) epoch(2) seq(6) length(2).");
    line("# ClientHello and ServerHello carry extension 54 (connection_id) holding the CID");
    line("# the sender wants to receive. Encrypted records (CCM-8): explicit nonce(8)");
    line("# (= epoch + seq), ciphertext, tag(8); in tls12_cid records the ciphertext is of");
    line("# content + real content type(1) + zero padding to a multiple of 16 bytes.");
    line("# Format: one datagram per line, `c2s <hex>` (client to server) or `s2c <hex>`.");
    line("#");
    line("# Records in each datagram (inner types of encrypted records are inferred");
    line("# from the handshake: the first one after change_cipher_spec is Finished):");
    for (n, (direction, datagram)) in captured.iter().enumerate() {
        // CIDs in records are the receiver's.
        let cid_len = match direction {
            Direction::ClientToServer => server_cid.len(),
            Direction::ServerToClient => client_cid.len(),
        };
        let records: Vec<String> = describe(record::records(datagram, cid_len));
        line(&format!(
            "#  {:>2} {} ({} bytes): {}",
            n + 1,
            direction.as_str(),
            datagram.len(),
            records.join(" + ")
        ));
    }
    for (direction, datagram) in captured {
        line(&format!("{} {}", direction.as_str(), hex(datagram)));
    }
    out
}

fn describe<'a>(records: impl Iterator<Item = Record<'a>>) -> Vec<String> {
    let mut after_ccs = false;
    records
        .map(|r| {
            let name = record::content_type_name(r.content_type);
            let inner = if let Some(t) = r.handshake_type() {
                record::handshake_type_name(t).to_owned()
            } else if r.epoch > 0 && after_ccs {
                "encrypted finished".to_owned()
            } else if r.epoch > 0 {
                "encrypted application_data".to_owned()
            } else {
                String::new()
            };
            after_ccs = r.content_type == record::CHANGE_CIPHER_SPEC;
            let mut s = format!("{name}({}", r.content_type);
            if !r.cid.is_empty() {
                let _ = write!(s, ", cid {}", hex(r.cid));
            }
            let _ = write!(s, ", epoch {}, seq {}", r.epoch, r.sequence);
            if !inner.is_empty() {
                let _ = write!(s, ": {inner}");
            }
            s.push(')');
            s
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `YYYY-MM-DD` for `time`, in UTC.
fn utc_date(time: SystemTime) -> String {
    let days = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    // Howard Hinnant's civil-from-days algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
