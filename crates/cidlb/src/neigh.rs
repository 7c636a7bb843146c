//! The kernel's neighbour table (ARP for IPv4, NDP for IPv6) over rtnetlink: where
//! direct routing (`forwarding = "xdp-dr"`) gets each backend's MAC address.
//!
//! [`dump`] reads the whole table (`RTM_GETNEIGH` with `NLM_F_DUMP`, both families);
//! [`probe`] makes the kernel resolve an address it has no entry for (a datagram to it
//! through the ordinary stack starts ARP / neighbour solicitation).

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr as NlAddr};

/// One neighbour entry with a link-layer address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// The interface index it was learned on.
    pub ifindex: u32,
    /// The neighbour's IP address.
    pub ip: IpAddr,
    /// Its MAC address.
    pub mac: [u8; 6],
    /// Whether the kernel still holds it usable (reachable, stale, delay, probe,
    /// permanent); incomplete and failed entries are not returned at all.
    pub state: &'static str,
}

/// The IPv4 and IPv6 neighbour entries that have a 6-octet MAC and a usable state.
pub fn dump() -> io::Result<Vec<Neighbour>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&NlAddr::new(0, 0))?;
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_DUMP | NLM_F_REQUEST;
    hdr.sequence_number = 1;
    let mut req = NetlinkMessage::new(
        hdr,
        NetlinkPayload::from(RouteNetlinkMessage::GetNeighbour(
            NeighbourMessage::default(),
        )),
    );
    req.finalize();
    let mut buf = vec![0; req.header.length as usize];
    req.serialize(&mut buf[..]);
    socket.send(&buf[..], 0)?;

    let mut out = Vec::new();
    let mut rx = vec![0u8; 1 << 16];
    // A dump ends with NLMSG_DONE; bounded in case the kernel never sends it.
    for _ in 0..100_000 {
        let size = socket.recv(&mut &mut rx[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let msg: NetlinkMessage<RouteNetlinkMessage> =
                NetlinkMessage::deserialize(&rx[offset..size])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(io::Error::other(format!("RTM_GETNEIGH: {e:?}")));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(n)) => {
                    if let Some(e) = entry(&n) {
                        out.push(e);
                    }
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
    Ok(out)
}

fn entry(n: &NeighbourMessage) -> Option<Neighbour> {
    if n.header.family != AddressFamily::Inet && n.header.family != AddressFamily::Inet6 {
        return None;
    }
    let state = match n.header.state {
        NeighbourState::Reachable => "reachable",
        NeighbourState::Stale => "stale",
        NeighbourState::Delay => "delay",
        NeighbourState::Probe => "probe",
        NeighbourState::Permanent => "permanent",
        _ => return None,
    };
    let ip = n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        _ => None,
    })?;
    let mac = n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(m) => <[u8; 6]>::try_from(m.as_slice()).ok(),
        _ => None,
    })?;
    if mac == [0; 6] {
        return None;
    }
    Some(Neighbour {
        ifindex: n.header.ifindex,
        ip,
        mac,
        state,
    })
}

/// Makes the kernel resolve `addr`'s IP: an empty UDP datagram to it through the
/// ordinary stack (the kernel sends ARP or a neighbour solicitation first; the DTLS
/// server ignores an empty datagram).
pub fn probe(addr: SocketAddr) -> io::Result<()> {
    let any: SocketAddr = if addr.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(any)?;
    s.send_to(&[], addr).map(|_| ())
}

/// An interface's index and MAC address (from sysfs).
pub fn interface(name: &str) -> io::Result<(u32, [u8; 6])> {
    let base = std::path::Path::new("/sys/class/net").join(name);
    let read = |f: &str| {
        std::fs::read_to_string(base.join(f)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("interface {name:?}: /sys/class/net/{name}/{f}: {e}"),
            )
        })
    };
    let ifindex: u32 = read("ifindex")?.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("interface {name:?}: bad ifindex"),
        )
    })?;
    let mac = parse_mac(read("address")?.trim()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("interface {name:?} has no Ethernet address"),
        )
    })?;
    Ok((ifindex, mac))
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut m {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_print() {
        let m = parse_mac("02:77:00:0a:Ff:01").unwrap();
        assert_eq!(m, [2, 0x77, 0, 10, 0xff, 1]);
        assert_eq!(fmt_mac(&m), "02:77:00:0a:ff:01");
        assert_eq!(parse_mac("02:77:00:0a:ff"), None);
        assert_eq!(parse_mac("02:77:00:0a:ff:01:02"), None);
    }

    #[test]
    fn the_loopback_interface_and_a_dump_read() {
        // Every Linux machine has lo (MAC 00:..:00) and a neighbour table to read.
        let (idx, mac) = interface("lo").expect("lo");
        assert!(idx >= 1);
        assert_eq!(mac, [0; 6]);
        dump().expect("RTM_GETNEIGH dump");
    }
}
