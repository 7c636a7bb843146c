//! Transparent NAT (`upstream = "transparent"`) end to end, in network namespaces this
//! test creates and removes: real Mbed TLS 3.6.5 DTLS 1.2 servers see each client's own
//! address through the real `cidlb` binary.
//!
//! ```text
//!   clients ns (10.200.0.0/16 local)            backend ns b0  10.1.0.2 (DTLS server :5684)
//!     c0 10.255.0.2 ---- lc 10.255.0.1  balancer   lb0 10.1.0.1 ---- uplink  route 10.200/16 via lb
//!                        lo 10.100.0.1  ns         lb1 10.1.1.1 ---- b1 ... (three routed links)
//!   attacker ns          lx 10.254.0.1             lb2 10.1.2.1 ---- b2
//!     x0 10.254.0.2 ----/
//! ```
//!
//! The clients' namespace owns the whole 10.200.0.0/16 (a local route), so clients bind
//! any address in it; the balancer routes that prefix to it; each backend's only route
//! beyond its link is the clients' prefix via the balancer. cidlb listens on the VIP
//! 10.100.0.1:5684 with learned routing only (no routable CIDs: the servers issue CIDs
//! `a0+i ...`, random but for the first byte, which tells the test which server holds a
//! session). The balancer's policy routing delivers the backends' replies for client
//! addresses locally (`ip rule add from 10.1.i.2 ipproto udp sport 5684 lookup 100`,
//! `ip route add local 0.0.0.0/0 dev lo table 100`).
//!
//! What is checked, in order:
//! * without that routing, and without CAP_NET_ADMIN/CAP_NET_RAW, cidlb refuses to start
//!   and says what is missing (the command to add; the capability);
//! * with it, health checks pass (they come from the balancer's own address), 24
//!   clients on 24 addresses complete their handshakes, and every server's sessions
//!   are at the clients' own addresses (the servers' peer addresses, read from the
//!   servers);
//! * each client moves to a new port, then to a new address and port: every echo comes
//!   back, one handshake per client in all, each session followed its client (two
//!   migrations each), and the servers see the new addresses; the routing was learned
//!   from ServerHellos (`learned` outcomes, no `encoded` ones);
//! * an attacker in a third namespace sends records with a victim's CID from the
//!   victim's own address:port, from its IP with another port, and from its own
//!   address: all reach the victim's server (none goes elsewhere), fail authentication
//!   there, move nothing; the attacker gets nothing back; the victim's session works on;
//! * a client on the balancer host itself, whose address:port the balancer's own
//!   socket cannot take, is a counted drop (`transparent_bind_errors`);
//! * a reload that adds a backend whose replies would not come back is rejected with
//!   the command to add, and one that changes `upstream` needs a restart.
//!
//! The links are dual-stack (fd00:255::/64 clients' link, fd00:1:i::/64 backends',
//! clients in fd00:200::/64, VIP fd00:100::1): a second, smaller test runs over IPv6
//! (`IPV6_TRANSPARENT`, `ip -6 rule`).
//!
//! Needs root (network namespaces); prints why and skips otherwise, unless
//! `CIDLB_REQUIRE_PRIVILEGED=1` (scripts/test.sh) makes it fail. Every wait is a
//! bounded poll; nothing asserts on timing. Namespaces are removed on drop, even after a
//! panic, and leftovers of killed runs are removed at the next start.

mod common;

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cidlb_test_mbedtls::{ClientConfig, DtlsClient, DtlsServer, ServerConfig};
use common::{Balancer, TempDir};

const CID_LEN: usize = 4;
const PORT: u16 = 5684;
const BACKENDS: u8 = 3;
const CLIENTS: usize = 24;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, 0, 1);
const ECHO_TIMEOUT: Duration = Duration::from_millis(900);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(8);
const DEADLINE: Duration = Duration::from_secs(20);
/// Names of this test's namespaces start with this, then the pid.
const NS_PREFIX: &str = "cidlbtp-";
use cidlb_test_netns::{ip, REQUIRE};

// ------------------------------------------------------------- namespaces

/// Writes a sysctl inside namespace `ns` (its /proc/sys/net is the namespace's).
fn sysctl(ns: &str, key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let ok = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "sh",
            "-c",
            &format!("echo {value} > {path}"),
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "sysctl {key}={value} in {ns}");
}

/// `ip` with the arguments of `line`, split at spaces.
fn ipl(line: &str) -> Result<(), String> {
    ip(&line.split_whitespace().collect::<Vec<_>>())
}

/// The namespaces of one test, removed on drop.
struct Net {
    prefix: String,
    created: Vec<String>,
}

impl Net {
    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// Backend `i`'s server address, IPv4 or IPv6.
    fn backend(i: u8, v6: bool) -> SocketAddr {
        if v6 {
            SocketAddr::new(format!("fd00:1:{i}::2").parse().unwrap(), PORT)
        } else {
            SocketAddr::from(([10, 1, i, 2], PORT))
        }
    }

    /// Creates the topology of the module docs (without the reply routing), dual-stack.
    /// `Err` when this process cannot make namespaces at all; any later failure panics
    /// (after removing what was made).
    fn create(tag: &str) -> Result<Net, String> {
        remove_leftovers();
        let mut net = Net {
            prefix: format!("{NS_PREFIX}{}-{tag}", std::process::id()),
            created: Vec::new(),
        };
        let first = net.ns("cl");
        ip(&["netns", "add", &first])?;
        net.created.push(first);
        net.build()
            .unwrap_or_else(|e| panic!("setting up the namespaces: {e}"));
        Ok(net)
    }

    fn build(&mut self) -> Result<(), String> {
        let mut roles = vec!["cl".to_string(), "lb".into(), "x".into()];
        roles.extend((0..BACKENDS).map(|i| format!("b{i}")));
        for r in &roles {
            let n = self.ns(r);
            if !self.created.contains(&n) {
                ip(&["netns", "add", &n])?;
                self.created.push(n.clone());
            }
            ipl(&format!("-n {n} link set lo up"))?;
        }
        let (cl, lb, x) = (self.ns("cl"), self.ns("lb"), self.ns("x"));
        // Clients: they own 10.200.0.0/16 and fd00:200::/64.
        self.link(
            (&cl, "c0", "10.255.0.2/30", "fd00:255::2/64"),
            (&lb, "lc", "10.255.0.1/30", "fd00:255::1/64"),
        )?;
        for line in [
            format!("-n {cl} route add local 10.200.0.0/16 dev lo"),
            format!("-n {cl} route add default via 10.255.0.1"),
            format!("-n {cl} -6 route add local fd00:200::/64 dev lo"),
            format!("-n {cl} -6 route add default via fd00:255::1"),
            format!("-n {lb} route add 10.200.0.0/16 via 10.255.0.2"),
            format!("-n {lb} -6 route add fd00:200::/64 via fd00:255::2"),
            format!("-n {lb} addr add {VIP}/32 dev lo"),
            format!("-n {lb} -6 addr add {VIP6}/128 dev lo"),
        ] {
            ipl(&line)?;
        }
        // IPv6 binds only configured addresses, unless told otherwise.
        sysctl(&cl, "net.ipv6.ip_nonlocal_bind", "1");
        // Backends, each on its own routed link; their route to the clients is via the
        // balancer.
        for i in 0..BACKENDS {
            let b = self.ns(&format!("b{i}"));
            self.link(
                (
                    &b,
                    "uplink",
                    &format!("10.1.{i}.2/24"),
                    &format!("fd00:1:{i}::2/64"),
                ),
                (
                    &lb,
                    &format!("lb{i}"),
                    &format!("10.1.{i}.1/24"),
                    &format!("fd00:1:{i}::1/64"),
                ),
            )?;
            ipl(&format!("-n {b} route add 10.200.0.0/16 via 10.1.{i}.1"))?;
            ipl(&format!(
                "-n {b} -6 route add fd00:200::/64 via fd00:1:{i}::1"
            ))?;
        }
        // The attacker: its own link; it owns 10.200.0.0/16 too, to send from the
        // clients' addresses.
        self.link(
            (&x, "x0", "10.254.0.2/30", "fd00:254::2/64"),
            (&lb, "lx", "10.254.0.1/30", "fd00:254::1/64"),
        )?;
        ipl(&format!("-n {x} route add default via 10.254.0.1"))?;
        ipl(&format!("-n {x} route add local 10.200.0.0/16 dev lo"))?;
        // No reverse-path filtering on the balancer: the spoofed datagrams must reach
        // cidlb for the test to mean anything (a production balancer would drop them
        // at the door with rp_filter = 1).
        sysctl(&lb, "net.ipv4.conf.all.rp_filter", "0");
        sysctl(&lb, "net.ipv4.conf.lx.rp_filter", "0");
        Ok(())
    }

    /// A veth pair between two namespaces, addressed (IPv4, IPv6 without duplicate
    /// address detection, so that the addresses are usable at once) and up.
    fn link(&self, a: (&str, &str, &str, &str), b: (&str, &str, &str, &str)) -> Result<(), String> {
        ipl(&format!(
            "link add name {} netns {} type veth peer name {} netns {}",
            a.1, a.0, b.1, b.0
        ))?;
        for (ns, dev, v4, v6) in [a, b] {
            ipl(&format!("-n {ns} addr add {v4} dev {dev}"))?;
            ipl(&format!("-n {ns} -6 addr add {v6} dev {dev} nodad"))?;
            ipl(&format!("-n {ns} link set {dev} up"))?;
        }
        Ok(())
    }

    /// The balancer's policy routing for the backends' replies to client addresses.
    fn reply_routing(&self, v6: bool) {
        let lb = self.ns("lb");
        let (f, all) = if v6 {
            ("-6", "::/0")
        } else {
            ("-4", "0.0.0.0/0")
        };
        for i in 0..BACKENDS {
            let from = Net::backend(i, v6).ip();
            ipl(&format!(
                "-n {lb} {f} rule add from {from} ipproto udp sport {PORT} lookup 100"
            ))
            .unwrap();
        }
        ipl(&format!(
            "-n {lb} {f} route add local {all} dev lo table 100"
        ))
        .unwrap();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in self.created.iter().rev() {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

/// Removes namespaces left by runs of this test that were killed (their pid is gone).
fn remove_leftovers() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// The topology, or `None` (after saying why) where namespaces cannot be made and
/// [`REQUIRE`] is not set.
fn net_or_skip(test: &str, tag: &str) -> Option<Net> {
    match Net::create(tag) {
        Ok(n) => Some(n),
        Err(e) if std::env::var(REQUIRE).as_deref() != Ok("1") => {
            eprintln!(
                "SKIP {test}: cannot set up network namespaces ({e}); needs root. Set \
                 {REQUIRE}=1 to fail instead"
            );
            None
        }
        Err(e) => panic!("{test}: cannot set up network namespaces: {e}"),
    }
}

/// Runs `f` on a thread inside namespace `ns` (sockets it creates stay there; threads
/// it spawns are there too).
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let file = std::fs::File::open(format!("/run/netns/{ns}"))
                .unwrap_or_else(|e| panic!("namespace {ns}: {e}"));
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {ns}: {e}"));
            f()
        });
        h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

// ------------------------------------------------------------- balancer

/// The listener's address (the VIP), IPv4 or IPv6.
fn vip(v6: bool) -> SocketAddr {
    let ip: IpAddr = if v6 { VIP6.into() } else { VIP.into() };
    SocketAddr::new(ip, PORT)
}

/// The balancer's configuration: the three backends (and `extra_backend`).
fn config(v6: bool, extra_backend: Option<SocketAddr>, upstream: &str) -> String {
    let mut t = format!(
        "workers = 2\n[health]\ninterval = \"200ms\"\ntimeout = \"200ms\"\nrise = 2\nfall = 3\n\n\
         [[listener]]\nname = \"dtls\"\naddress = \"{}\"\ncid_length = {CID_LEN}\nupstream = \"{upstream}\"\n",
        vip(v6)
    );
    let mut backends: Vec<SocketAddr> = (0..BACKENDS).map(|i| Net::backend(i, v6)).collect();
    backends.extend(extra_backend);
    for (i, b) in backends.iter().enumerate() {
        t.push_str(&format!(
            "\n  [[listener.backend]]\n  name = \"b{i}\"\n  address = \"{b}\"\n"
        ));
    }
    t
}

/// Runs `cidlb run --config PATH` in the balancer's namespace, behind `wrapper` (a
/// command and its arguments, e.g. setpriv), expecting it to fail at start; returns
/// its stderr.
fn failed_start(net: &Net, path: &std::path::Path, wrapper: &[&str]) -> String {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &net.ns("lb")])
        .args(wrapper)
        .arg(env!("CARGO_BIN_EXE_cidlb"))
        .args(["run", "--config", &path.display().to_string()])
        .args(["--admin", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("cidlb starts");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cidlb started although it should have refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "cidlb exited with success: {err}");
    err
}

/// `METHOD path` on the admin API (in the balancer's namespace).
fn admin(net: &Net, addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    in_ns(&net.ns("lb"), || {
        cidlb::status::request(addr, method, path, None).unwrap_or_else(|e| panic!("{e}"))
    })
}

fn get(net: &Net, addr: SocketAddr, path: &str) -> String {
    let (code, body) = admin(net, addr, "GET", path);
    assert_eq!(code, 200, "GET {path}: {body}");
    body
}

/// The value of the sample `name{labels}` (labels as written, e.g.
/// `listener="dtls",outcome="learned"`), 0 if absent.
fn metric(text: &str, name: &str, labels: &str) -> u64 {
    let key = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap_or(0.0) as u64)
}

/// Polls `cond` until it holds, or panics after [`DEADLINE`] saying `what`.
fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    common::wait_until(what, DEADLINE, cond);
}

// ------------------------------------------------------------- peers

/// Backend `i`'s server, in its namespace, issuing CIDs `a0+i ...`.
fn server(net: &Net, i: u8, v6: bool) -> DtlsServer {
    in_ns(&net.ns(&format!("b{i}")), || {
        DtlsServer::spawn(ServerConfig::new(
            Net::backend(i, v6),
            vec![0xa0 + i],
            CID_LEN,
        ))
        .expect("DTLS server starts")
    })
}

fn client_config(bind: SocketAddr) -> ClientConfig {
    let mut cfg = ClientConfig::new(vip(bind.is_ipv6()));
    cfg.bind = bind;
    cfg.own_cid_len = CID_LEN;
    cfg.handshake_timeout = HANDSHAKE_TIMEOUT;
    cfg
}

/// Which server holds a client's session (from the first byte of its CID).
fn owner(c: &mut DtlsClient) -> usize {
    usize::from(c.peer_cid()[0].wrapping_sub(0xa0))
}

/// Clients whose session is not at their own current address on the server that
/// holds it (as that server reports its peers).
fn misplaced(servers: &[DtlsServer], clients: &mut [DtlsClient]) -> Vec<String> {
    let peers: Vec<Vec<(Vec<u8>, SocketAddr)>> = servers.iter().map(|s| s.peers()).collect();
    let mut bad = Vec::new();
    for c in clients.iter_mut() {
        let (cid, at) = (c.peer_cid(), c.local_addr().unwrap());
        let o = owner(c);
        let seen = peers
            .get(o)
            .and_then(|p| p.iter().find(|(k, _)| *k == cid))
            .map(|(_, a)| *a);
        if seen != Some(at) {
            bad.push(format!(
                "client at {at} (CID {cid:02x?}): server b{o} sees {seen:?}"
            ));
        }
    }
    bad
}

fn echo_all(clients: &mut [DtlsClient], round: &str) -> usize {
    let mut lost = 0;
    for (i, c) in clients.iter_mut().enumerate() {
        if let Err(e) = c.echo(format!("{round} {i}").as_bytes(), ECHO_TIMEOUT) {
            eprintln!("{round}: client {i} at {:?}: {e}", c.local_addr());
            lost += 1;
        }
    }
    lost
}

// ------------------------------------------------------------- the test

#[test]
fn transparent_nat_keeps_client_addresses_sessions_and_learning() {
    let Some(net) = net_or_skip(
        "transparent_nat_keeps_client_addresses_sessions_and_learning",
        "e2e",
    ) else {
        return;
    };
    let dir = TempDir::new("e2e-transparent");
    let path = dir.0.join("cidlb.toml");
    std::fs::write(&path, config(false, None, "transparent")).unwrap();
    let servers: Vec<DtlsServer> = (0..BACKENDS).map(|i| server(&net, i, false)).collect();

    // Without the reply routing, and then without the capability, cidlb refuses to
    // start and says what is missing.
    let err = failed_start(&net, &path, &[]);
    assert!(
        err.contains("replies of backend 10.1.0.2:5684 to clients would not reach cidlb")
            && err.contains("`ip rule add from 10.1.0.2 ipproto udp sport 5684 lookup 100`")
            && err.contains("`ip route add local 0.0.0.0/0 dev lo table 100`"),
        "{err}"
    );
    net.reply_routing(false);
    if Command::new("setpriv").arg("--version").output().is_ok() {
        let err = failed_start(
            &net,
            &path,
            &[
                "setpriv",
                "--inh-caps=-all",
                "--bounding-set=-net_admin,-net_raw",
                "--",
            ],
        );
        assert!(
            err.contains("needs the CAP_NET_ADMIN or CAP_NET_RAW capability"),
            "{err}"
        );
    } else {
        eprintln!("setpriv is missing: the capability check is not exercised");
    }

    // With both, it starts, and health checks (from its own address) pass.
    let lb = Balancer::spawn_in(
        Some(&net.ns("lb")),
        &["run".into(), "--config".into(), path.display().to_string()],
    );
    let api = lb.admin.expect("the admin API is up");
    wait_until("every backend is healthy", || {
        let v: serde_json::Value = serde_json::from_str(&get(&net, api, "/backends")).unwrap();
        v["listeners"][0]["backends"]
            .as_array()
            .is_some_and(|b| b.iter().all(|b| b["health"] == "healthy"))
    });

    // Clients on many addresses handshake at once.
    let cl = net.ns("cl");
    let results: Vec<io::Result<DtlsClient>> = in_ns(&cl, || {
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..CLIENTS)
                .map(|i| {
                    let bind = SocketAddr::from(([10, 200, 0, 1 + i as u8], 0));
                    s.spawn(move || DtlsClient::connect(client_config(bind)))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        })
    });
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    let stats: Vec<_> = servers.iter().map(|s| s.stats()).collect();
    assert!(
        failed.is_empty(),
        "handshakes through transparent cidlb failed: {failed:?}; servers: {stats:#?}"
    );
    let mut clients: Vec<DtlsClient> = results.into_iter().map(Result::unwrap).collect();
    let mut per_server: BTreeMap<usize, u64> = BTreeMap::new();
    for c in clients.iter_mut() {
        *per_server.entry(owner(c)).or_default() += 1;
    }
    eprintln!("sessions per server: {per_server:?}");
    let handshakes =
        |servers: &[DtlsServer]| servers.iter().map(|s| s.stats().handshakes).sum::<u64>();
    assert_eq!(handshakes(&servers), CLIENTS as u64);
    // The servers see each client's own address.
    let bad = misplaced(&servers, &mut clients);
    assert!(
        bad.is_empty(),
        "sessions not at their client's address: {bad:#?}"
    );
    for (i, s) in servers.iter().enumerate() {
        for (_, a) in s.peers() {
            assert!(
                a.ip().to_string().starts_with("10.200.0."),
                "server b{i} sees a peer at {a}, not a client address"
            );
        }
    }

    // Echo, then a new port, then a new address and port.
    assert_eq!(
        echo_all(&mut clients, "first"),
        0,
        "echoes lost before any move"
    );
    in_ns(&cl, || {
        for c in clients.iter_mut() {
            let ip = c.local_addr().unwrap().ip();
            c.rebind(SocketAddr::new(ip, 0))
                .expect("rebind to a new port");
        }
    });
    assert_eq!(
        echo_all(&mut clients, "new port"),
        0,
        "echoes lost after a new port"
    );
    in_ns(&cl, || {
        for (i, c) in clients.iter_mut().enumerate() {
            c.rebind(SocketAddr::from(([10, 200, 1, 1 + i as u8], 0)))
                .expect("rebind to a new address");
        }
    });
    assert_eq!(
        echo_all(&mut clients, "new address"),
        0,
        "echoes lost after a new address"
    );
    let stats: Vec<_> = servers.iter().map(|s| s.stats()).collect();
    assert_eq!(
        handshakes(&servers),
        CLIENTS as u64,
        "one handshake per client, none repeated: {stats:#?}"
    );
    for (i, s) in stats.iter().enumerate() {
        let n = per_server.get(&i).copied().unwrap_or(0);
        assert_eq!(
            s.migrations,
            2 * n,
            "b{i}'s {n} sessions moved twice each: {s:?}"
        );
    }
    let bad = misplaced(&servers, &mut clients);
    assert!(
        bad.is_empty(),
        "sessions not at their client's new address: {bad:#?}"
    );

    // Learned routing: the CIDs were learned from the servers' ServerHellos.
    let m = get(&net, api, "/metrics");
    let l = "listener=\"dtls\"";
    let learned = metric(
        &m,
        "cidlb_routed_total",
        &format!("{l},outcome=\"learned\""),
    );
    let encoded = metric(
        &m,
        "cidlb_routed_total",
        &format!("{l},outcome=\"encoded\""),
    );
    let bindings = metric(
        &m,
        "cidlb_events_total",
        &format!("{l},event=\"binding_learned\""),
    );
    let opened = metric(&m, "cidlb_listener_upstreams_opened_total", l);
    eprintln!("learned {learned}, encoded {encoded}, bindings learned {bindings}, upstreams opened {opened}");
    assert!(
        learned >= 3 * CLIENTS as u64,
        "{learned} datagrams routed by learned bindings"
    );
    assert_eq!(encoded, 0);
    assert!(bindings >= CLIENTS as u64, "{bindings} bindings learned");
    assert!(
        opened >= 3 * CLIENTS as u64,
        "a transparent upstream flow per client address: {opened}"
    );

    // An attacker spoofs the victim's address and sends records with its CID.
    let victim = &mut clients[0];
    let (vcid, vaddr, vo) = (
        victim.peer_cid(),
        victim.local_addr().unwrap(),
        owner(victim),
    );
    let before: Vec<_> = servers.iter().map(|s| s.stats()).collect();
    let from = [
        vaddr,
        SocketAddr::new(vaddr.ip(), 0),
        SocketAddr::from(([10, 254, 0, 2], 0)),
    ];
    let per_source = 3u64;
    let answered = in_ns(&net.ns("x"), || {
        let socks: Vec<UdpSocket> = from.iter().map(|a| UdpSocket::bind(a).unwrap()).collect();
        for (k, s) in socks.iter().enumerate() {
            for n in 0..per_source {
                let mut d = Vec::new();
                let junk: Vec<u8> = (0..48)
                    .map(|b| (b * 7 + k * 13 + n as usize) as u8)
                    .collect();
                cidlb_wire::build::cid12(1, (1 << 40) + n, &vcid, &junk, &mut d);
                s.send_to(&d, vip(false)).unwrap();
            }
        }
        // Nothing comes back to the attacker (a bounded wait, not a timing check).
        socks
            .iter()
            .filter(|s| {
                s.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
                s.recv_from(&mut [0u8; 2048]).is_ok()
            })
            .count()
    });
    let forged = per_source * from.len() as u64;
    let after = servers[vo].wait_for_stats(DEADLINE, |s| {
        s.auth_failures >= before[vo].auth_failures + forged
    });
    eprintln!("victim's server b{vo} after the spoofing: {after:?}");
    assert_eq!(
        after.auth_failures - before[vo].auth_failures,
        forged,
        "every forged record reached the victim's server and failed authentication there"
    );
    assert_eq!(after.migrations, before[vo].migrations, "nothing moved");
    assert_eq!(
        after.migrations_rejected - before[vo].migrations_rejected,
        2 * per_source,
        "the records from new addresses were refused as moves"
    );
    for (i, s) in servers.iter().enumerate().filter(|(i, _)| *i != vo) {
        let (a, b) = (s.stats(), before[i]);
        assert_eq!(
            (a.auth_failures, a.unknown_cid, a.dropped),
            (b.auth_failures, b.unknown_cid, b.dropped),
            "b{i} saw some of the forged records"
        );
    }
    assert_eq!(answered, 0, "the attacker got answers");
    assert_eq!(
        servers[vo]
            .peers()
            .iter()
            .find(|(k, _)| *k == vcid)
            .map(|p| p.1),
        Some(vaddr),
        "the victim's session stayed at its address"
    );
    clients[0]
        .echo(b"still mine", ECHO_TIMEOUT)
        .expect("the victim's session works on");
    assert_eq!(handshakes(&servers), CLIENTS as u64);

    // A client on the balancer host itself: its address:port is taken by its own
    // socket, so cidlb cannot bind its upstream socket there; a counted drop.
    let bind_errors = || {
        metric(
            &get(&net, api, "/metrics"),
            "cidlb_listener_transparent_bind_errors_total",
            l,
        )
    };
    assert_eq!(bind_errors(), 0);
    // (The socket stays open until the drop is counted.)
    let local = in_ns(&net.ns("lb"), || {
        let s = UdpSocket::bind("10.255.0.1:0").unwrap();
        let hello = cidlb_wire::build::client_hello_datagram([7; 32], &[], Some(&[]));
        s.send_to(&hello, vip(false)).unwrap();
        s
    });
    wait_until(
        "the local client's datagram is counted as a bind error",
        || bind_errors() >= 1,
    );
    drop(local);

    // Reloads: a backend whose replies would not come back is refused, and so is a
    // change of upstream mode.
    std::fs::write(
        &path,
        config(false, Some("10.1.0.2:5685".parse().unwrap()), "transparent"),
    )
    .unwrap();
    let (code, body) = admin(&net, api, "POST", "/reload");
    assert_ne!(code, 200, "{body}");
    assert!(
        body.contains("backend \\\"b3\\\"") || body.contains("backend \"b3\""),
        "{body}"
    );
    assert!(
        body.contains("ip rule add from 10.1.0.2 ipproto udp sport 5685 lookup 100"),
        "{body}"
    );
    std::fs::write(&path, config(false, None, "nat")).unwrap();
    let (code, body) = admin(&net, api, "POST", "/reload");
    assert_ne!(code, 200, "{body}");
    assert!(body.contains("upstream transparent -> nat"), "{body}");
    // The sessions are untouched.
    assert_eq!(echo_all(&mut clients, "after the reloads"), 0);
    drop(lb);
}

/// The same over IPv6 (`IPV6_TRANSPARENT`, `ip -6 rule`), smaller: the start-up check,
/// the servers seeing the clients' addresses, a move to a new address and port.
#[test]
fn transparent_nat_over_ipv6() {
    let Some(net) = net_or_skip("transparent_nat_over_ipv6", "v6") else {
        return;
    };
    let dir = TempDir::new("e2e-transparent-v6");
    let path = dir.0.join("cidlb.toml");
    std::fs::write(&path, config(true, None, "transparent")).unwrap();
    let servers: Vec<DtlsServer> = (0..BACKENDS).map(|i| server(&net, i, true)).collect();
    let err = failed_start(&net, &path, &[]);
    assert!(
        err.contains("`ip -6 rule add from fd00:1::2 ipproto udp sport 5684 lookup 100`"),
        "{err}"
    );
    assert!(
        err.contains("`ip -6 route add local ::/0 dev lo table 100`"),
        "{err}"
    );
    net.reply_routing(true);
    let lb = Balancer::spawn_in(
        Some(&net.ns("lb")),
        &["run".into(), "--config".into(), path.display().to_string()],
    );
    let api = lb.admin.expect("the admin API is up");

    let n = 6;
    let cl = net.ns("cl");
    let mut clients: Vec<DtlsClient> = in_ns(&cl, || {
        (0..n)
            .map(|i| {
                let bind = SocketAddr::new(format!("fd00:200::{}", i + 1).parse().unwrap(), 0);
                DtlsClient::connect(client_config(bind)).expect("handshake over IPv6")
            })
            .collect()
    });
    let bad = misplaced(&servers, &mut clients);
    assert!(
        bad.is_empty(),
        "sessions not at their client's address: {bad:#?}"
    );
    in_ns(&cl, || {
        for (i, c) in clients.iter_mut().enumerate() {
            let to: IpAddr = format!("fd00:200::1:{}", i + 1).parse().unwrap();
            c.rebind(SocketAddr::new(to, 0)).expect("rebind");
        }
    });
    assert_eq!(echo_all(&mut clients, "v6 new address"), 0, "echoes lost");
    let bad = misplaced(&servers, &mut clients);
    assert!(
        bad.is_empty(),
        "sessions not at their client's new address: {bad:#?}"
    );
    let stats: Vec<_> = servers.iter().map(|s| s.stats()).collect();
    assert_eq!(
        stats.iter().map(|s| s.handshakes).sum::<u64>(),
        n as u64,
        "{stats:#?}"
    );
    assert_eq!(stats.iter().map(|s| s.migrations).sum::<u64>(), n as u64);
    let m = get(&net, api, "/metrics");
    let learned = metric(
        &m,
        "cidlb_routed_total",
        "listener=\"dtls\",outcome=\"learned\"",
    );
    assert!(
        learned >= n as u64,
        "{learned} datagrams routed by learned bindings"
    );
    drop(lb);
}
