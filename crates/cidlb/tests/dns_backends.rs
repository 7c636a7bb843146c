//! Backends given by DNS name, against a real DNS server: dnsmasq, started by the test on
//! 127.0.0.1 with a hosts file the test rewrites (dnsmasq reads it again on SIGHUP).
//! cidlb resolves `dtls.test:PORT` every second: the addresses become backends; an
//! address that stays keeps its id and its CID bindings; a new one is added; one that
//! goes away drains (its sessions continue). Needs the `dnsmasq` binary (Debian's
//! dnsmasq-base): skipped without it, a failure when CIDLB_REQUIRE_PRIVILEGED=1.
//! Loopback only; every wait is a bounded poll.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cidlb::control::BackendsView;
use common::{Balancer, TempDir};

struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

use cidlb_test_netns::required;

fn backends(lb: &Balancer) -> Vec<(String, String, u16)> {
    let (_, body) = cidlb::status::request(lb.admin.unwrap(), "GET", "/backends", None).unwrap();
    let v: BackendsView = serde_json::from_str(&body).unwrap();
    v.listeners[0]
        .backends
        .iter()
        .map(|b| (b.name.clone(), b.admin_state.clone(), b.id))
        .collect()
}

fn wait_for(
    lb: &Balancer,
    what: &str,
    ok: impl Fn(&[(String, String, u16)]) -> bool,
) -> Vec<(String, String, u16)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let b = backends(lb);
        if ok(&b) {
            return b;
        }
        assert!(Instant::now() < deadline, "{what}: {b:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dns_backends_follow_their_records() {
    if Command::new("dnsmasq").arg("--version").output().is_err() {
        assert!(
            !required(),
            "dnsmasq is missing (apt-get install dnsmasq-base)"
        );
        println!("skipped: dnsmasq is not installed");
        return;
    }
    let dir = TempDir::new("dns");
    // Three backend sockets on one port, three addresses.
    let first = UdpSocket::bind("127.0.0.21:0").unwrap();
    let port = first.local_addr().unwrap().port();
    let socks = [
        first,
        UdpSocket::bind(("127.0.0.22", port)).unwrap(),
        UdpSocket::bind(("127.0.0.23", port)).unwrap(),
    ];
    let hosts = dir.0.join("hosts");
    std::fs::write(&hosts, "127.0.0.21 dtls.test\n127.0.0.22 dtls.test\n").unwrap();
    let dns_port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dnsmasq = Dnsmasq(
        Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--user=root",
                "--pid-file=",
                "--local-ttl=0",
                "--local=/test/",
            ])
            .arg(format!("--port={dns_port}"))
            .arg(format!("--addn-hosts={}", hosts.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq starts"),
    );
    // The server answers before cidlb starts.
    let server: SocketAddr = format!("127.0.0.1:{dns_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(cidlb::dns::resolve("dtls.test", &[server], Duration::from_millis(300)), cidlb::dns::Answer::Addresses(ref a) if a.len() == 2)
    {
        assert!(Instant::now() < deadline, "dnsmasq does not answer");
        std::thread::sleep(Duration::from_millis(100));
    }
    let cfg = dir.0.join("cidlb.toml");
    std::fs::write(
        &cfg,
        format!(
            "[resolver]\nservers = [\"{server}\"]\ninterval = \"1s\"\n[health]\nenabled = false\n\
             [[listener]]\nname = \"l\"\naddress = \"127.0.0.1:0\"\ncid_length = 4\n\
             [[listener.backend]]\nname = \"dtls\"\naddress = \"dtls.test:{port}\"\n"
        ),
    )
    .unwrap();
    let lb = Balancer::spawn_config(&cfg);
    let a21 = format!("dtls/127.0.0.21:{port}");
    let a22 = format!("dtls/127.0.0.22:{port}");
    let a23 = format!("dtls/127.0.0.23:{port}");
    let start = wait_for(&lb, "both addresses", |b| b.len() == 2);
    assert_eq!(
        start.iter().map(|b| b.0.clone()).collect::<Vec<_>>(),
        [a21.clone(), a22.clone()]
    );
    // A session: its ClientHello reaches one of them, whose ServerHello teaches a CID.
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client
        .send_to(
            &cidlb_wire::build::client_hello_datagram([9; 32], &[], None),
            lb.addr,
        )
        .unwrap();
    let mut buf = [0u8; 2048];
    let (owner, upstream) = {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut got = None;
            for (i, s) in socks.iter().enumerate() {
                s.set_nonblocking(true).unwrap();
                if let Ok((_, from)) = s.recv_from(&mut buf) {
                    got = Some((i, from));
                }
            }
            if let Some(g) = got {
                break g;
            }
            assert!(Instant::now() < deadline, "no backend got the ClientHello");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let cid = [0xd5, 0, 0, 1];
    socks[owner]
        .send_to(
            &cidlb_wire::build::server_hello_datagram([1; 32], Some(&cid)),
            upstream,
        )
        .unwrap();
    client
        .recv_from(&mut buf)
        .expect("the ServerHello reaches the client");
    let owner_name = [&a21, &a22][owner].clone();

    // The records change: .22 goes, .23 comes.
    std::fs::write(&hosts, "127.0.0.21 dtls.test\n127.0.0.23 dtls.test\n").unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &dnsmasq.0.id().to_string()])
        .status();
    let after = wait_for(&lb, ".23 added, .22 draining", |b| {
        b.iter().any(|x| x.0 == a23 && x.1 == "up")
            && b.iter().any(|x| x.0 == a22 && x.1 == "draining")
    });
    // The address that stayed kept its id (its flows and bindings with it).
    let id = |v: &[(String, String, u16)], n: &str| v.iter().find(|x| x.0 == n).map(|x| x.2);
    assert_eq!(id(&start, &a21), id(&after, &a21));
    assert_eq!(
        id(&start, &a22),
        id(&after, &a22),
        "the gone address drains, same id"
    );
    // The session's CID still leads to its backend (up or draining).
    let (_, body) = cidlb::status::request(
        lb.admin.unwrap(),
        "GET",
        &format!("/lookup/cid/{}", "d5000001"),
        None,
    )
    .unwrap();
    assert!(
        body.contains("\"learned\"") && body.contains(&owner_name),
        "{body}"
    );
}
