//! Operating cidlb with real processes: the real `cidlb` binary in front of real Mbed
//! TLS 3.6.5 DTLS 1.2 CID servers, driven through its admin API and signals.
//!
//! Health checks run every 200 ms (timeout 200 ms, rise 2, fall 3) to keep the tests
//! short (a loaded machine would have to delay three probes in a row to fake a failure). Every wait polls a condition until a generous deadline; nothing asserts on
//! timing. Assertions are on what the DTLS servers and clients see (handshakes,
//! echoes, migrations), plus what the admin API reports.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cidlb::control::{BackendView, BackendsView};
use cidlb_test_mbedtls::{ClientConfig, DtlsClient, DtlsServer, ServerConfig};
use common::{Balancer, TempDir};

const CID_LEN: usize = 4;
const ECHO_TIMEOUT: Duration = Duration::from_millis(900);
const DEADLINE: Duration = Duration::from_secs(15);
const HEALTH: &str = "[health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 3\n";

/// A DTLS server whose CIDs start with `0xa0 + i`, so a client's CID tells which
/// server holds its session.
fn server(i: u8, bind: SocketAddr) -> DtlsServer {
    // The port of a stopped server may be briefly taken by someone else's ephemeral
    // bind; retry a little.
    let mut last = None;
    for _ in 0..50 {
        match DtlsServer::spawn(ServerConfig::new(bind, vec![0xa0 + i], CID_LEN)) {
            Ok(s) => return s,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("DTLS server on {bind}: {last:?}")
}

fn servers(n: u8) -> Vec<DtlsServer> {
    (0..n)
        .map(|i| server(i, "127.0.0.1:0".parse().unwrap()))
        .collect()
}

/// Writes a configuration with one listener and `backends` (name, address, extra
/// lines).
fn write_config(path: &Path, backends: &[(&str, SocketAddr, &str)], extra: &str) {
    let mut t = format!(
        "workers = 2\n{HEALTH}{extra}\n[[listener]]\nname = \"dtls\"\naddress = \"127.0.0.1:0\"\ncid_length = {CID_LEN}\n"
    );
    for (name, addr, more) in backends {
        t.push_str(&format!(
            "\n  [[listener.backend]]\n  name = \"{name}\"\n  address = \"{addr}\"\n  {more}\n"
        ));
    }
    std::fs::write(path, t).unwrap();
}

/// Two Mbed TLS servers (b0, b1) behind cidlb started from a config file, both healthy.
struct Setup {
    _dir: TempDir,
    servers: Vec<DtlsServer>,
    lb: Balancer,
    admin: SocketAddr,
}

fn two_healthy_backends(name: &str) -> Setup {
    let dir = TempDir::new(name);
    let servers = servers(2);
    let cfg = dir.0.join("cidlb.toml");
    write_config(
        &cfg,
        &[
            ("b0", servers[0].local_addr(), ""),
            ("b1", servers[1].local_addr(), ""),
        ],
        "",
    );
    let (lb, admin) = start(&cfg);
    wait_until("every backend answers its health checks", || {
        all_healthy(admin)
    });
    Setup {
        _dir: dir,
        servers,
        lb,
        admin,
    }
}

fn start(config: &Path) -> (Balancer, SocketAddr) {
    let lb = Balancer::spawn(&[
        "run".into(),
        "--config".into(),
        config.display().to_string(),
    ]);
    let admin = lb.admin.expect("the admin API is up");
    (lb, admin)
}

fn http(admin: SocketAddr, method: &str, path: &str) -> (u16, String) {
    cidlb::status::request(admin, method, path, None).unwrap_or_else(|e| panic!("{e}"))
}

fn backends(admin: SocketAddr) -> BackendsView {
    let (code, body) = http(admin, "GET", "/backends");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn backend(admin: SocketAddr, name: &str) -> BackendView {
    backends(admin).listeners[0]
        .backends
        .iter()
        .find(|b| b.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no backend {name}"))
}

/// Polls `cond` until it holds, or panics after [`DEADLINE`] saying `what`.
fn wait_until(what: &str, cond: impl FnMut() -> bool) -> Duration {
    common::wait_until(what, DEADLINE, cond)
}

fn all_healthy(admin: SocketAddr) -> bool {
    backends(admin).listeners[0]
        .backends
        .iter()
        .all(|b| b.health == "healthy" && b.state == "up")
}

fn connect(lb: SocketAddr) -> DtlsClient {
    let mut cfg = ClientConfig::new(lb);
    cfg.own_cid_len = CID_LEN;
    cfg.handshake_timeout = Duration::from_secs(5);
    DtlsClient::connect(cfg).expect("handshake through cidlb")
}

/// Which server holds the client's session (from the CID the server issued).
fn owner(c: &mut DtlsClient) -> usize {
    usize::from(c.peer_cid()[0] - 0xa0)
}

fn handshakes(servers: &[DtlsServer]) -> u64 {
    servers.iter().map(|s| s.stats().handshakes).sum()
}

fn echo_all(clients: &mut [DtlsClient], tag: &str) {
    for (i, c) in clients.iter_mut().enumerate() {
        c.echo(format!("{tag} {i}").as_bytes(), ECHO_TIMEOUT)
            .unwrap_or_else(|e| panic!("client {i} lost its session ({tag}): {e}"));
    }
}

/// A metric's value from the exposition (labels in exposition order).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series}"))
}

fn sighup(lb: &Balancer) {
    let ok = Command::new("kill")
        .args(["-HUP", &lb.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[test]
fn killed_backend_is_marked_down_avoided_and_used_again_after_restart() {
    let dir = TempDir::new("kill");
    let mut servers = servers(3);
    let cfg = dir.0.join("cidlb.toml");
    let names = ["b0", "b1", "b2"];
    let list: Vec<_> = names
        .iter()
        .zip(&servers)
        .map(|(n, s)| (*n, s.local_addr(), ""))
        .collect();
    write_config(&cfg, &list, "");
    let (lb, admin) = start(&cfg);
    wait_until("every backend answers its health checks", || {
        all_healthy(admin)
    });

    // Kill b1: its port now answers with ICMP port unreachable.
    let dead = servers[1].local_addr();
    servers[1].stop();
    let took = wait_until("b1 is marked down", || backend(admin, "b1").state == "down");
    eprintln!("b1 marked down {took:?} after it was stopped (checks every 200 ms, fall 3)");
    let b1 = backend(admin, "b1");
    assert_eq!(b1.health, "unhealthy");
    assert_eq!(
        b1.admin_state, "up",
        "health does not touch the operator's state"
    );

    // New handshakes avoid it: every one completes, on b0 or b2.
    for _ in 0..12 {
        let mut c = connect(lb.addr);
        assert_ne!(owner(&mut c), 1);
        c.echo(b"hello", ECHO_TIMEOUT).unwrap();
    }

    // Restarted on the same port, it is used again.
    servers[1] = server(1, dead);
    wait_until("b1 is healthy again", || {
        let b = backend(admin, "b1");
        b.state == "up" && b.health == "healthy"
    });
    let mut landed = false;
    for _ in 0..60 {
        let mut c = connect(lb.addr);
        if owner(&mut c) == 1 {
            c.echo(b"back", ECHO_TIMEOUT).unwrap();
            landed = true;
            break;
        }
    }
    assert!(landed, "new clients reach the restarted backend");
    assert!(servers[1].stats().handshakes >= 1);

    let (_, m) = http(admin, "GET", "/metrics");
    let t = |to: &str| {
        metric(
            &m,
            &format!(
                "cidlb_health_transitions_total{{listener=\"dtls\",backend=\"b1\",to=\"{to}\"}}"
            ),
        )
    };
    assert_eq!(t("down"), 1.0);
    assert_eq!(t("up"), 1.0);
    assert!(
        metric(
            &m,
            "cidlb_health_checks_total{listener=\"dtls\",backend=\"b1\",result=\"refused\"}"
        ) >= 3.0
    );
    assert!(
        metric(
            &m,
            "cidlb_health_checks_total{listener=\"dtls\",backend=\"b0\",result=\"hello_verify_request\"}"
        ) >= 2.0
    );
}

#[test]
fn drained_backend_gets_no_new_flows_while_its_sessions_keep_working() {
    let Setup {
        _dir,
        servers,
        lb,
        admin,
    } = two_healthy_backends("drain");

    // Sessions on both backends.
    let mut clients = Vec::new();
    let mut per = [0usize; 2];
    for _ in 0..60 {
        if per.iter().all(|&n| n >= 3) {
            break;
        }
        let mut c = connect(lb.addr);
        per[owner(&mut c)] += 1;
        clients.push(c);
    }
    assert!(
        per.iter().all(|&n| n >= 3),
        "sessions on both backends: {per:?}"
    );
    echo_all(&mut clients, "before");

    let (code, body) = http(admin, "POST", "/backends/b1/drain");
    assert_eq!(code, 200, "{body}");
    let v: BackendView = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v.state.as_str(), v.admin_state.as_str()),
        ("draining", "draining")
    );
    assert!(v.flows >= 3, "its flows are still there: {v:?}");

    // Existing sessions keep working, including one that rebinds (its CID binding).
    echo_all(&mut clients, "draining");
    let moved = clients.iter_mut().position(|c| owner(c) == 1).unwrap();
    clients[moved]
        .rebind("127.0.0.1:0".parse().unwrap())
        .unwrap();
    clients[moved]
        .echo(b"after rebinding", ECHO_TIMEOUT)
        .unwrap();
    assert!(servers[1].stats().migrations >= 1);

    // New handshakes go to b0 only.
    let hs1 = servers[1].stats().handshakes;
    for _ in 0..12 {
        let mut c = connect(lb.addr);
        assert_eq!(owner(&mut c), 0, "a new session on the drained backend");
    }
    assert_eq!(servers[1].stats().handshakes, hs1);
    echo_all(&mut clients, "still draining");
    assert_eq!(handshakes(&servers), clients.len() as u64 + 12);

    // Undrain: it takes new sessions again.
    let (code, body) = http(admin, "POST", "/backends/b1/undrain");
    assert_eq!(code, 200, "{body}");
    let mut landed = false;
    for _ in 0..60 {
        let mut c = connect(lb.addr);
        if owner(&mut c) == 1 {
            landed = true;
            break;
        }
    }
    assert!(landed);
    // Unknown names and wrong methods answer with clear errors.
    let (code, body) = http(admin, "POST", "/backends/nope/drain");
    assert_eq!(code, 404);
    assert!(body.contains("no backend named \\\"nope\\\""), "{body}");
    assert_eq!(http(admin, "GET", "/backends/b1/drain").0, 405);
}

#[test]
fn reload_adding_a_backend_keeps_every_session() {
    let dir = TempDir::new("reload");
    let servers = servers(3);
    let cfg = dir.0.join("cidlb.toml");
    let b = |i: usize| servers[i].local_addr();
    write_config(&cfg, &[("b0", b(0), ""), ("b1", b(1), "")], "");
    let (lb, admin) = start(&cfg);
    wait_until("every backend answers its health checks", || {
        all_healthy(admin)
    });
    let mut clients: Vec<DtlsClient> = (0..8).map(|_| connect(lb.addr)).collect();
    echo_all(&mut clients, "before");
    assert_eq!(handshakes(&servers), 8);

    // SIGHUP with a third backend.
    write_config(
        &cfg,
        &[("b0", b(0), ""), ("b1", b(1), ""), ("b2", b(2), "")],
        "",
    );
    sighup(&lb);
    wait_until("the reload is applied", || backends(admin).generation == 2);
    assert_eq!(backends(admin).listeners[0].backends.len(), 3);
    echo_all(&mut clients, "after SIGHUP");
    for c in clients.iter_mut().take(3) {
        c.rebind("127.0.0.1:0".parse().unwrap()).unwrap();
        c.echo(b"rebound after reload", ECHO_TIMEOUT).unwrap();
    }
    assert_eq!(handshakes(&servers), 8, "no session needed a new handshake");
    wait_until("b2 answers its health checks", || all_healthy(admin));
    let mut landed = false;
    for _ in 0..60 {
        let mut c = connect(lb.addr);
        if owner(&mut c) == 2 {
            landed = true;
            break;
        }
    }
    assert!(landed, "new clients reach the added backend");

    // POST /reload: b2 gets weight 0, and a timeout changes.
    write_config(
        &cfg,
        &[
            ("b0", b(0), ""),
            ("b1", b(1), ""),
            ("b2", b(2), "weight = 0"),
        ],
        "[timeouts]\nflow_idle = \"5m\"\n",
    );
    let hs = handshakes(&servers);
    let (code, body) = http(admin, "POST", "/reload");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("weight 1 -> 0"), "{body}");
    assert!(body.contains("timeouts.flow_idle"), "{body}");
    echo_all(&mut clients, "after POST /reload");
    assert_eq!(handshakes(&servers), hs);
    for _ in 0..10 {
        let mut c = connect(lb.addr);
        assert_ne!(owner(&mut c), 2, "weight 0: no new sessions");
    }
    let (_, m) = http(admin, "GET", "/metrics");
    assert_eq!(metric(&m, "cidlb_config_reloads_total{result=\"ok\"}"), 2.0);
    assert_eq!(metric(&m, "cidlb_config_generation"), 3.0);
}

#[test]
fn bad_reload_is_rejected_and_the_running_configuration_stays() {
    let dir = TempDir::new("badreload");
    let servers = servers(2);
    let cfg = dir.0.join("cidlb.toml");
    let good = [
        ("b0", servers[0].local_addr(), ""),
        ("b1", servers[1].local_addr(), ""),
    ];
    write_config(&cfg, &good, "");
    let (mut lb, admin) = start(&cfg);
    let mut clients: Vec<DtlsClient> = (0..4).map(|_| connect(lb.addr)).collect();

    // A typo: rejected with the key's path, nothing changes.
    write_config(
        &cfg,
        &[good[0], ("b1", servers[1].local_addr(), "weigth = 2")],
        "",
    );
    let (code, body) = http(admin, "POST", "/reload");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("listener[0].backend[1].weigth"), "{body}");
    // The same through SIGHUP: the daemon keeps running with the old configuration.
    sighup(&lb);
    wait_until("the SIGHUP reload is rejected", || {
        let (_, m) = http(admin, "GET", "/metrics");
        metric(&m, "cidlb_config_reloads_total{result=\"rejected\"}") == 2.0
    });
    let (_, m) = http(admin, "GET", "/metrics");
    assert_eq!(metric(&m, "cidlb_config_generation"), 1.0);
    assert!(lb.child.try_wait().unwrap().is_none(), "still running");

    // A change that needs a restart: refused whole, saying why.
    let moved = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("weigth = 2", "")
        .replace("127.0.0.1:0", "127.0.0.1:1");
    std::fs::write(&cfg, moved).unwrap();
    let (code, body) = http(admin, "POST", "/reload");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("needs a restart"), "{body}");
    assert!(body.contains("address"), "{body}");

    let b = backends(admin);
    assert_eq!(b.generation, 1);
    assert!(b.listeners[0].backends.iter().all(|x| x.weight == 1));
    echo_all(&mut clients, "after rejected reloads");
    assert_eq!(handshakes(&servers), 4);
}

/// Checks one exposition line: `name{label="value",...} number`.
fn valid_sample(line: &str) -> bool {
    let (series, value) = match line.rsplit_once(' ') {
        Some(x) => x,
        None => return false,
    };
    if value.parse::<f64>().is_err() {
        return false;
    }
    let (name, labels) = match series.split_once('{') {
        Some((n, rest)) => (n, rest.strip_suffix('}')),
        None => (series, Some("")),
    };
    let Some(labels) = labels else { return false };
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':');
    // Label pairs: key="value" separated by commas; values may hold escaped quotes.
    let mut rest = labels;
    while !rest.is_empty() {
        let Some((k, v)) = rest.split_once("=\"") else {
            return false;
        };
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return false;
        }
        let mut end = None;
        let mut esc = false;
        for (i, c) in v.char_indices() {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let Some(e) = end else { return false };
        rest = &v[e + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    name_ok
}

#[test]
fn metrics_lookups_and_status_answer() {
    let Setup {
        _dir,
        servers: _servers,
        lb,
        admin,
    } = two_healthy_backends("metrics");
    let mut c = connect(lb.addr);
    c.echo(b"one", ECHO_TIMEOUT).unwrap();
    // A NAT rebinding: the known CID from a new port.
    c.rebind("127.0.0.1:0".parse().unwrap()).unwrap();
    c.echo(b"two", ECHO_TIMEOUT).unwrap();
    let who = format!("b{}", owner(&mut c));

    let (code, m) = http(admin, "GET", "/metrics");
    assert_eq!(code, 200);
    for f in cidlb::metrics::families() {
        let (name, kind) = (f.name, f.kind);
        assert!(
            m.contains(&format!("\n# TYPE {name} {kind}\n")),
            "{name} missing"
        );
    }
    for line in m.lines().filter(|l| !l.starts_with('#')) {
        assert!(valid_sample(line), "not a valid sample line: {line:?}");
    }
    let ev = |e: &str| {
        metric(
            &m,
            &format!("cidlb_events_total{{listener=\"dtls\",event=\"{e}\"}}"),
        )
    };
    assert!(ev("cid_new_address") >= 1.0, "the rebinding was seen");
    assert!(
        ev("client_hello") >= 2.0,
        "a handshake (and its cookie retry)"
    );
    assert!(ev("binding_learned") >= 1.0);
    assert!(
        metric(
            &m,
            "cidlb_routed_total{listener=\"dtls\",outcome=\"learned\"}"
        ) >= 2.0
    );
    let dg = |dir: &str| {
        metric(
            &m,
            &format!("cidlb_backend_datagrams_total{{listener=\"dtls\",backend=\"{who}\",direction=\"{dir}\"}}"),
        )
    };
    assert!(dg("to_backend") >= 4.0 && dg("from_backend") >= 4.0);
    assert_eq!(metric(&m, "cidlb_flows{listener=\"dtls\"}"), 2.0);
    assert_eq!(
        metric(
            &m,
            &format!("cidlb_backend_state{{listener=\"dtls\",backend=\"{who}\",state=\"up\"}}")
        ),
        1.0
    );

    // Lookups say where and why.
    let cid: String = c.peer_cid().iter().map(|b| format!("{b:02x}")).collect();
    let (code, body) = http(admin, "GET", &format!("/lookup/cid/{cid}"));
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["route"], "learned");
    assert_eq!(v["backend"]["name"], who.as_str());
    let me = c.local_addr().unwrap();
    let (code, body) = http(admin, "GET", &format!("/lookup/client/{me}?listener=dtls"));
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["route"], "flow");
    assert_eq!(v["backend"]["name"], who.as_str());
    assert_eq!(http(admin, "GET", "/lookup/cid/zz").0, 400);
    assert_eq!(http(admin, "GET", "/lookup/cid/01?listener=nope").0, 404);
    let (code, body) = http(admin, "GET", "/tables");
    assert_eq!(code, 200);
    let t: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(t["listeners"][0]["flows"]["entries"], 2);
    assert_eq!(t["listeners"][0]["bindings"]["entries"], 1);
    assert_eq!(http(admin, "GET", "/nope").0, 404);

    // `cidlb status` prints a table a person can read.
    let out = Command::new(env!("CARGO_BIN_EXE_cidlb"))
        .args(["status", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    for s in [
        "listener dtls",
        "BACKEND",
        "b0",
        "b1",
        "healthy",
        "TO BACKEND",
        "flows 2/",
    ] {
        assert!(text.contains(s), "status lacks {s:?}:\n{text}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_cidlb"))
        .args(["status", "--json", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let _: BackendsView = serde_json::from_slice(&out.stdout).unwrap();
}

#[test]
fn quick_start_serves_the_admin_api_but_has_nothing_to_reload() {
    let servers = servers(1);
    let lb = Balancer::quick(&[servers[0].local_addr()], CID_LEN, "cid");
    let admin = lb.admin.unwrap();
    let (code, body) = http(admin, "POST", "/reload");
    assert_eq!(code, 409);
    assert!(body.contains("without --config"), "{body}");
    assert_eq!(backend(admin, "backend-0").weight, 1);
    let (code, body) = http(admin, "POST", "/backends/backend-0/weight?value=5");
    assert_eq!(code, 200, "{body}");
    assert_eq!(backend(admin, "backend-0").weight, 5);
    let (code, _) = http(admin, "POST", "/backends/backend-0/weight?value=99999");
    assert_eq!(code, 400);
    // `cidlb status` against nothing says what is wrong.
    let out = Command::new(env!("CARGO_BIN_EXE_cidlb"))
        .args(["status", "--admin", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the admin API"));
}
