//! Shared by the tests that need BPF: frames, listeners, and the skip rule.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};

use cidlb_core::{Backend, CidRouting, MultiCidPolicy, RouterConfig};
use cidlb_xdp::{XdpCidFormat, XdpError, XdpListener, XdpListenerConfig};

/// Set by scripts/test.sh: a test that cannot use BPF fails instead of skipping.
pub use cidlb_test_netns::{required, say_skip, REQUIRE};

/// Skips (prints why and returns `None`) or fails, as [`required`] says, when the
/// program cannot be loaded here.
pub fn load_or_skip(test: &str, cfg: XdpListenerConfig) -> Option<XdpListener> {
    match XdpListener::new(cfg) {
        Ok(l) => Some(l),
        Err(e) if e.is_permission() && !required() => {
            say_skip(&format!(
                "SKIP {test}: BPF is not allowed here ({e}); set {REQUIRE}=1 to fail instead"
            ));
            None
        }
        Err(e) => panic!("{test}: {e}"),
    }
}

/// Whether `err` is a permission problem that allows a skip.
pub fn skip_on(test: &str, err: &XdpError) -> bool {
    if err.is_permission() && !required() {
        say_skip(&format!(
            "SKIP {test}: {err}; set {REQUIRE}=1 to fail instead"
        ));
        return true;
    }
    false
}

pub const VIP4: [u8; 4] = [198, 51, 100, 10];
pub const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
pub const PORT: u16 = 5684;
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// The MAC of backend `i` (its address is 10.9.0.(i+1)).
pub fn backend_mac(i: u16) -> [u8; 6] {
    [0x02, 0xbe, 0, 0, (i >> 8) as u8, i as u8]
}

pub fn backend_ip(i: u16) -> IpAddr {
    IpAddr::from([10, 9, (i >> 8) as u8, (i & 0xff) as u8 + 1])
}

/// `n` up backends named b0, b1, ... with server IDs `[0x10 + i]`.
pub fn backends(n: u16) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            let mut b = Backend::new(i, format!("b{i}"), SocketAddr::new(backend_ip(i), PORT));
            b.server_id = cidlb_core::ServerId::new(&[0x10 + i as u8]);
            b
        })
        .collect()
}

pub fn router_config(
    cid_len: usize,
    format: Option<&XdpCidFormat>,
    multi: MultiCidPolicy,
) -> RouterConfig {
    let cid = match format {
        Some(f) => f.cid_routing(Some(cid_len)),
        None => CidRouting::fixed(cid_len),
    };
    let mut cfg = RouterConfig::new(cid, [11, 22, 33, 44]);
    cfg.multi_cid = multi;
    cfg.max_flows = 4096;
    cfg.max_bindings = 4096;
    cfg.hash_seed = 0x5eed;
    cfg
}

pub fn listener_config(
    addr: SocketAddr,
    router: RouterConfig,
    format: Option<XdpCidFormat>,
    backends: Vec<cidlb_core::Backend>,
) -> XdpListenerConfig {
    let macs = backends
        .iter()
        .map(|b| (b.addr.ip(), backend_mac(b.id.0)))
        .collect();
    XdpListenerConfig {
        name: "test".into(),
        addr,
        router,
        format,
        backends,
        backend_macs: macs,
        backend_ports: Vec::new(),
        src_mac: LB_MAC,
        attach: None,
    }
}

pub fn vip(v6: bool) -> SocketAddr {
    if v6 {
        SocketAddr::new(IpAddr::from(VIP6), PORT)
    } else {
        SocketAddr::new(IpAddr::from(VIP4), PORT)
    }
}

fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// How to frame a datagram.
#[derive(Clone, Debug)]
pub struct Framing {
    pub vlan: Option<u16>,
    /// IPv4 options (a multiple of 4 bytes).
    pub ip_options: Vec<u8>,
    /// IPv4 flags/fragment offset field.
    pub frag: u16,
    /// IPv6 next header (17 = UDP).
    pub next_header: u8,
    pub dst_port: u16,
    /// Ethernet padding after the IP packet.
    pub padding: usize,
}

impl Default for Framing {
    fn default() -> Self {
        Framing {
            vlan: None,
            ip_options: Vec::new(),
            frag: 0x4000, // DF
            next_header: 17,
            dst_port: PORT,
            padding: 0,
        }
    }
}

/// An Ethernet frame from `client` to `dst`'s address carrying `payload` over UDP.
pub fn frame(client: SocketAddr, dst: SocketAddr, payload: &[u8], f: &Framing) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&LB_MAC);
    out.extend_from_slice(&CLIENT_MAC);
    if let Some(tag) = f.vlan {
        out.extend_from_slice(&0x8100u16.to_be_bytes());
        out.extend_from_slice(&tag.to_be_bytes());
    }
    let mut udp = Vec::new();
    udp.extend_from_slice(&client.port().to_be_bytes());
    udp.extend_from_slice(&f.dst_port.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    match (client.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&0x0800u16.to_be_bytes());
            let ihl = 5 + f.ip_options.len() / 4;
            let mut ip = vec![
                0x40 | ihl as u8,
                0,
                0,
                0,
                0x12,
                0x34,
                (f.frag >> 8) as u8,
                f.frag as u8,
                64,
                17,
                0,
                0,
            ];
            let total = (ihl * 4 + udp.len()) as u16;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            ip.extend_from_slice(&f.ip_options);
            let c = csum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            out.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            out.extend_from_slice(&0x86ddu16.to_be_bytes());
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(udp.len() as u16).to_be_bytes());
            out.push(f.next_header);
            out.push(64);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed address families"),
    }
    out.extend_from_slice(&udp);
    out.extend(std::iter::repeat_n(0u8, f.padding));
    out
}

/// The captured Mbed TLS 3.6.5 DTLS 1.2 handshake (cidlb-wire's test vectors).
pub fn mbedtls_capture() -> Vec<(&'static str, Vec<u8>)> {
    const CAPTURE: &str =
        include_str!("../../../cidlb-wire/tests/vectors/mbedtls-3.6.5-cid-handshake.txt");
    CAPTURE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (dir, hex) = l.split_once(' ').expect("direction and hex");
            (dir, hex::decode(hex.trim()).expect("hex"))
        })
        .collect()
}
