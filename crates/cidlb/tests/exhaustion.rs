//! File-descriptor exhaustion against the real `cidlb` binary: it runs with an
//! open-files limit of 64 (soft and hard, so its raise to the hard limit changes
//! nothing) in front of a real Mbed TLS 3.6.5 DTLS 1.2 CID server. One real DTLS session
//! is established first (its upstream socket exists); then 200 source addresses
//! 127.0.1.x send CID records for a few seconds, each needing an upstream socket of its
//! own: far more than the limit allows.
//!
//! Asserted: cidlb keeps running and answers its admin API (upstream sockets leave the
//! last descriptors free for it, `cidlb_net::sys::fd_reserve`), counts the failures
//! (`cidlb_listener_upstream_open_errors_total`), logs the out-of-fd warning at most
//! about once per second per worker (its stderr is captured here), and the established
//! session keeps echoing throughout and afterwards. A reload during the flood adds a
//! second server: its health checks must get answers (their socket comes from the
//! reserve) and never mark it down. A second test takes the reserve with idle admin
//! connections until the admin server's `accept` fails, and checks that the API answers
//! again while they are still held (it closes them at its timeout). A third reloads to
//! 2,000 backends more (health probes to all of them) and checks that the probes stay
//! within their socket budget, the admin API keeps answering and SIGHUP can still read
//! the file. Bounded (a few seconds each), loopback only;
//! waits are polls with deadlines, never timing assertions.

mod common;

use common::TempDir;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cidlb_test_mbedtls::{ClientConfig, DtlsClient, DtlsServer, ServerConfig};

const CID_LEN: usize = 4;
const WORKERS: u64 = 2;
/// The open-files limit of the balancer (soft = hard).
const NOFILE: u32 = 64;
/// Flood source addresses, each wanting its own upstream socket.
const SOURCES: u8 = 200;
/// Rounds of one record per source (a round every 100 ms).
const ROUNDS: u64 = 25;
const ECHO_TIMEOUT: Duration = Duration::from_secs(3);
const OPEN_ERROR_LOG: &str = "cannot open an upstream socket";

/// `cidlb run --config PATH` under `ulimit -n NOFILE`, with stdout *and* stderr
/// captured (`common::Balancer` pipes stdout only). Killed on drop.
struct Limited {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Limited {
    fn spawn(config: &std::path::Path) -> Limited {
        // `ulimit -n` without -S/-H sets both limits (POSIX sh, dash and bash alike).
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n {NOFILE} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_cidlb"))
            .args(["run", "--config"])
            .arg(config)
            .args(["--admin", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cidlb starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        {
            let pipe = child.stderr.take().unwrap();
            let lines = stderr.clone();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("cidlb: admin API listening on ") {
                    let _ = tx.send((true, a.parse::<SocketAddr>().expect("admin address")));
                } else if let Some((_, a)) = line.rsplit_once(" ready on ") {
                    let _ = tx.send((false, a.parse::<SocketAddr>().expect("ready address")));
                }
            }
        });
        let mut admin = None;
        let addr = loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok((true, a)) => admin = Some(a),
                Ok((false, a)) => break a,
                Err(e) => panic!(
                    "no ready line from cidlb ({e}); stderr: {:?}",
                    stderr.lock().unwrap()
                ),
            }
        };
        Limited {
            child,
            addr,
            admin: admin.expect("the admin line comes before the ready line"),
            stderr,
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn open_error_lines(&self) -> usize {
        let lines = self.stderr.lock().unwrap();
        lines.iter().filter(|l| l.contains(OPEN_ERROR_LOG)).count()
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An admin request; `None` while the balancer cannot accept the connection.
fn try_http(admin: SocketAddr, path: &str) -> Option<String> {
    match cidlb::status::request(admin, "GET", path, None) {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series}"))
}

/// A `tls12_cid` record (RFC 9146 §4) with an unknown CID.
fn cid_record(cid: &[u8], seq: u64) -> Vec<u8> {
    let mut d = vec![25, 0xfe, 0xfd, 0, 1];
    d.extend_from_slice(&seq.to_be_bytes()[2..]);
    d.extend_from_slice(cid);
    d.extend_from_slice(&40u16.to_be_bytes());
    d.extend_from_slice(&[0x5a; 40]);
    d
}

#[test]
fn out_of_fds_drops_new_flows_logs_rarely_and_keeps_sessions() {
    let t0 = Instant::now();
    let dir = TempDir::new("exh");
    let server = DtlsServer::spawn(ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        vec![0xa0],
        CID_LEN,
    ))
    .expect("DTLS server starts");
    // A second server, added by a reload during the flood.
    let second = DtlsServer::spawn(ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        vec![0xb0],
        CID_LEN,
    ))
    .expect("DTLS server starts");
    // Short flow idle: once the flood stops, its flows expire and their sockets close.
    // Fast health checks: a backend whose probes fail is down within 0.75 s.
    let cfg = |servers: &[SocketAddr]| {
        let mut t = format!(
            "workers = {WORKERS}\n\n[timeouts]\nflow_idle = \"2s\"\n\n\
             [health]\ninterval = \"250ms\"\ntimeout = \"200ms\"\n\n\
             [[listener]]\nname = \"dtls\"\naddress = \"127.0.0.1:0\"\ncid_length = {CID_LEN}\n"
        );
        for (i, a) in servers.iter().enumerate() {
            t.push_str(&format!(
                "\n[[listener.backend]]\nname = \"b{i}\"\naddress = \"{a}\"\n"
            ));
        }
        t
    };
    let path = dir.0.join("cidlb.toml");
    std::fs::write(&path, cfg(&[server.local_addr()])).unwrap();
    let mut lb = Limited::spawn(&path);
    let started = Instant::now();

    // The real session, established before the flood.
    let mut c = ClientConfig::new(lb.addr);
    c.own_cid_len = CID_LEN;
    c.handshake_timeout = Duration::from_secs(10);
    let mut dtls = DtlsClient::connect(c).expect("handshake through cidlb");
    dtls.echo(b"before", ECHO_TIMEOUT)
        .expect("echo before the flood");

    // The flood: 200 sources, one record each per round; every one of them needs a new
    // upstream socket, which the fd limit refuses to most.
    let sources: Vec<UdpSocket> = (1..=SOURCES)
        .map(|x| UdpSocket::bind((Ipv4Addr::new(127, 0, 1, x), 0)).expect("bind on 127/8"))
        .collect();
    let mut echoes = 1u64;
    for round in 0..ROUNDS {
        for (i, s) in sources.iter().enumerate() {
            // CID prefix 0x10: never the server's (0xa0), so never a real session.
            let cid = [0x10, i as u8, round as u8, 0x77];
            let _ = s.send_to(&cid_record(&cid, round), lb.addr);
        }
        if round == 5 {
            // The flood has taken every descriptor but the reserve: the new backend's
            // probe socket must come from the reserve (and a config file be read).
            std::fs::write(&path, cfg(&[server.local_addr(), second.local_addr()])).unwrap();
            let r = cidlb::status::request(lb.admin, "POST", "/reload", None);
            assert!(matches!(r, Ok((200, _))), "reload during the flood: {r:?}");
        }
        let msg = format!("during round {round}");
        dtls.echo(msg.as_bytes(), ECHO_TIMEOUT)
            .unwrap_or_else(|e| panic!("the session lost its echo in round {round}: {e}"));
        echoes += 1;
        thread::sleep(Duration::from_millis(100));
    }
    assert!(lb.alive(), "cidlb died under fd exhaustion");

    // The admin API answers (polled: while every fd is taken it may not accept), and the
    // failures were counted. The session keeps echoing meanwhile (and keeps its flow).
    let deadline = Instant::now() + Duration::from_secs(20);
    let metrics = loop {
        if let Some(m) = try_http(lb.admin, "/metrics") {
            if metric(
                &m,
                "cidlb_listener_upstream_open_errors_total{listener=\"dtls\"}",
            ) > 0.0
            {
                break m;
            }
        }
        assert!(lb.alive(), "cidlb died under fd exhaustion");
        assert!(
            Instant::now() < deadline,
            "no admin answer with open errors; stderr: {:?}",
            lb.stderr.lock().unwrap()
        );
        dtls.echo(b"waiting for the admin API", ECHO_TIMEOUT)
            .expect("echo while waiting for the admin API");
        echoes += 1;
        thread::sleep(Duration::from_millis(200));
    };
    let plain = |name: &str| metric(&metrics, &format!("{name}{{listener=\"dtls\"}}"));
    let b1 = |family: &str, label: &str| {
        metric(
            &metrics,
            &format!("cidlb_health_{family}{{listener=\"dtls\",backend=\"b1\",{label}}}"),
        )
    };
    let b1_alive = b1("checks_total", "result=\"hello_verify_request\"");
    assert!(
        b1_alive >= 1.0,
        "the added backend's probes never got an answer"
    );
    assert_eq!(
        (
            b1("checks_total", "result=\"error\""),
            b1("transitions_total", "to=\"down\"")
        ),
        (0.0, 0.0),
        "the added backend's probes failed during the flood"
    );
    let open_errors = plain("cidlb_listener_upstream_open_errors_total");
    let opened = plain("cidlb_listener_upstreams_opened_total");

    // After the flood the flood's flows expire, their sockets close: the balancer is
    // back to normal (tables report, the session still echoes).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(t) = try_http(lb.admin, "/tables") {
            let t: serde_json::Value = serde_json::from_str(&t).unwrap();
            if t["listeners"][0]["flows"]["entries"].as_u64() == Some(1) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the flood's flows never expired");
        dtls.echo(b"after the flood", ECHO_TIMEOUT)
            .expect("echo after the flood");
        echoes += 1;
        thread::sleep(Duration::from_millis(200));
    }
    dtls.echo(b"last", ECHO_TIMEOUT).expect("last echo");
    echoes += 1;
    assert!(lb.alive(), "cidlb died");
    let lifetime = started.elapsed();
    let handshakes = server.stats().handshakes;
    let log_lines = lb.open_error_lines();
    eprintln!(
        "fd limit {NOFILE}: {} flood datagrams from {SOURCES} sources; upstreams opened \
         {opened}, open errors {open_errors}; {log_lines} warning lines in {lifetime:?} \
         ({WORKERS} workers); session: {echoes} echoes, {handshakes} handshake(s); \
         test {:?}",
        ROUNDS * SOURCES as u64,
        t0.elapsed()
    );

    assert!(open_errors > 0.0, "no upstream open errors counted");
    assert!(
        open_errors >= 10.0 * log_lines as f64,
        "the log is not rate-limited: {open_errors} errors, {log_lines} lines"
    );
    assert!(log_lines >= 1, "the out-of-fd warning was never logged");
    // At most one line per second per worker (+1 each for the first second).
    let bound = WORKERS * (lifetime.as_secs() + 2);
    assert!(
        log_lines as u64 <= bound,
        "{log_lines} warning lines in {lifetime:?}: more than one per second per worker"
    );
    assert_eq!(handshakes, 1, "the session needed a new handshake");
}

/// The admin API's `accept` fails when every descriptor is taken (here by idle admin
/// connections, under an open-files limit of 64). The API must keep its listener, count
/// the failures, close the idle connections at its request timeout (10 s) and answer
/// again, while they are still held open by this test: idle clients cannot lock an
/// operator out. (With `tiny_http`, used before, the accept thread either stopped at
/// the first `EMFILE` or panicked on it, and the API was gone until a restart.)
#[test]
fn admin_api_survives_descriptor_exhaustion_by_idle_connections() {
    let dir = TempDir::new("adm");
    let backend = UdpSocket::bind("127.0.0.1:0").unwrap();
    let cfg = format!(
        "workers = 1\n\n[[listener]]\nname = \"dtls\"\naddress = \"127.0.0.1:0\"\n\
         cid_length = {CID_LEN}\n\n[[listener.backend]]\nname = \"b0\"\naddress = \"{}\"\n",
        backend.local_addr().unwrap()
    );
    let path = dir.0.join("cidlb.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut lb = Limited::spawn(&path);
    assert!(
        try_http(lb.admin, "/tables").is_some(),
        "admin API answers at first"
    );
    let logged =
        |lb: &Limited, what: &str| lb.stderr.lock().unwrap().iter().any(|l| l.contains(what));

    // Idle connections until the balancer runs out of descriptors: its accept fails.
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !logged(&lb, "admin API cannot accept connections") {
        assert!(
            Instant::now() < deadline,
            "accept never failed; stderr: {:?}",
            lb.stderr.lock().unwrap()
        );
        assert!(
            held.len() < 4 * NOFILE as usize,
            "{} connections and accept still works",
            held.len()
        );
        if let Ok(c) = std::net::TcpStream::connect_timeout(&lb.admin, Duration::from_millis(200)) {
            held.push(c);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let failed_after = held.len();

    // Still holding them: the API answers again once the idle ones time out.
    let deadline = Instant::now() + Duration::from_secs(40);
    let metrics = loop {
        assert!(lb.alive(), "cidlb died");
        assert!(
            Instant::now() < deadline,
            "the admin API never came back; stderr: {:?}",
            lb.stderr.lock().unwrap()
        );
        if let Some(m) = try_http(lb.admin, "/metrics") {
            break m;
        }
        thread::sleep(Duration::from_millis(200));
    };
    assert!(metric(&metrics, "cidlb_admin_accept_errors_total") >= 1.0);
    let timed_out = metric(
        &metrics,
        "cidlb_admin_connections_total{outcome=\"timed_out\"}",
    );
    assert!(timed_out >= 1.0, "no idle connection timed out");
    assert!(logged(&lb, "admin API accepting connections again"));
    // The held connections were closed by the balancer, not by this test.
    let mut first = held.swap_remove(0);
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        std::io::Read::read(&mut first, &mut buf).expect("EOF, not a timeout"),
        0,
        "the idle connection was not closed"
    );
    drop(held);
    eprintln!(
        "accept failed after {failed_after} idle connections; {timed_out} timed out and \
         the admin API answers again"
    );
}

/// Descriptors the process `pid` holds now.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// A reload to 2,000 more backends under an open-files limit of 64: health probes to
/// all of them (nothing listens at their addresses), yet the prober holds at most its
/// budget of sockets (an eighth of the limit, plus a shared one), never the
/// descriptors kept for the admin API and for reading the file. The API answers, the
/// real backend keeps passing its checks, the others are found dead (`refused` or
/// `timeout`, never `no_socket`), and a SIGHUP back to one backend is applied. (Before
/// the fix each backend got a probe socket of its own, kept across rounds, which took
/// every descriptor: the API failed to accept and SIGHUP could not open the file.)
#[test]
fn a_reload_to_many_backends_keeps_the_admin_api_and_sighup() {
    const MORE: usize = 2000;
    let dir = TempDir::new("many");
    let server = DtlsServer::spawn(ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        vec![0xa0],
        CID_LEN,
    ))
    .expect("DTLS server starts");
    let cfg = |more: usize| {
        let mut t = format!(
            "workers = 1\n\n[health]\ninterval = \"250ms\"\ntimeout = \"200ms\"\n\n\
             [[listener]]\nname = \"dtls\"\naddress = \"127.0.0.1:0\"\ncid_length = {CID_LEN}\n\n\
             [[listener.backend]]\nname = \"b0\"\naddress = \"{}\"\n",
            server.local_addr()
        );
        for i in 0..more {
            t.push_str(&format!(
                "\n[[listener.backend]]\nname = \"x{i}\"\naddress = \"127.4.{}.{}:9\"\n",
                i / 250,
                i % 250 + 1
            ));
        }
        t
    };
    let path = dir.0.join("cidlb.toml");
    std::fs::write(&path, cfg(0)).unwrap();
    let mut lb = Limited::spawn(&path);
    let pid = lb.child.id();
    let at_start = open_fds(pid);

    std::fs::write(&path, cfg(MORE)).unwrap();
    let r = cidlb::status::request(lb.admin, "POST", "/reload", None);
    assert!(
        matches!(r, Ok((200, _))),
        "reload to {MORE} more backends: {r:?}"
    );

    // Rounds of checks go by; meanwhile the descriptors stay within the probes' budget.
    let series = |m: &str, backend: &str, result: &str| {
        metric(
            m,
            &format!(
                "cidlb_health_checks_total{{listener=\"dtls\",backend=\"{backend}\",result=\"{result}\"}}"
            ),
        )
    };
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        peak = peak.max(open_fds(pid));
        assert!(lb.alive(), "cidlb died");
        assert!(
            Instant::now() < deadline,
            "no health verdicts for the new backends (fds {} of {NOFILE}); stderr: {:?}",
            open_fds(pid),
            lb.stderr.lock().unwrap()
        );
        if let Some(m) = try_http(lb.admin, "/metrics") {
            let last = format!("x{}", MORE - 1);
            let dead = series(&m, &last, "refused") + series(&m, &last, "timeout");
            if dead >= 2.0 && series(&m, "b0", "hello_verify_request") >= 3.0 {
                break m;
            }
        }
        thread::sleep(Duration::from_millis(50));
    };
    for b in ["b0", "x0", "x1000", &format!("x{}", MORE - 1)] {
        assert_eq!(series(&metrics, b, "no_socket"), 0.0, "{b} found no socket");
        assert_eq!(series(&metrics, b, "error"), 0.0, "{b} had probe errors");
    }
    assert_eq!(
        metric(
            &metrics,
            "cidlb_health_transitions_total{listener=\"dtls\",backend=\"b0\",to=\"down\"}"
        ),
        0.0,
        "the real backend was marked down"
    );
    // A few more rounds, and the API answers every time.
    for _ in 0..10 {
        peak = peak.max(open_fds(pid));
        assert!(
            try_http(lb.admin, "/backends").is_some(),
            "the admin API stopped answering (fds {} of {NOFILE})",
            open_fds(pid)
        );
        thread::sleep(Duration::from_millis(100));
    }
    let admin_reserve = cidlb_net::sys::fd_admin_reserve(NOFILE.into()) as usize;
    assert!(
        peak + admin_reserve <= NOFILE as usize,
        "{peak} of {NOFILE} descriptors in use: the admin reserve ({admin_reserve}) was taken"
    );

    // SIGHUP back to one backend: the file can be read, the reload is applied.
    std::fs::write(&path, cfg(0)).unwrap();
    let ok = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(lb.alive(), "cidlb died");
        assert!(
            Instant::now() < deadline,
            "the SIGHUP reload was not applied; stderr: {:?}",
            lb.stderr.lock().unwrap()
        );
        if let Some(m) = try_http(lb.admin, "/metrics") {
            assert_eq!(
                metric(&m, "cidlb_config_reloads_total{result=\"rejected\"}"),
                0.0,
                "a reload was rejected; stderr: {:?}",
                lb.stderr.lock().unwrap()
            );
            if metric(&m, "cidlb_config_generation") == 3.0 {
                break;
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    // The probe sockets of the removed backends are closed at the next round.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_fds(pid) > at_start + 1 {
        assert!(
            Instant::now() < deadline,
            "{} descriptors open, {at_start} at start",
            open_fds(pid)
        );
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "{MORE} more backends under a limit of {NOFILE}: {at_start} descriptors at start, \
         peak {peak}, {} after the reload back",
        open_fds(pid)
    );
}
