//! The balancer's own addresses: a datagram from one of them is never routed.
//!
//! A client datagram whose source is an address that one of the balancer's listeners
//! receives on is either spoofed or a loop: answering it would send the reply to the
//! balancer itself (a ClientHello spoofed from the listener's address, a backend
//! configured at the listener's address). [`OwnAddresses`] says which sources those
//! are; the router drops them as [`crate::DropReason::FromOwnAddress`].

use std::net::{IpAddr, SocketAddr};

/// The addresses the balancer's listeners receive on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnAddresses {
    /// Listener ports, each with its IP, or `None` for a wildcard listener (it
    /// receives on every local IP of its family, and IPv4 too for `[::]`).
    listeners: Vec<(u16, Option<IpAddr>, bool)>,
    /// The host's own IPs (beyond loopback, which is always local), for wildcard
    /// listeners.
    local: Vec<IpAddr>,
}

/// IPv4-mapped IPv6 as IPv4, so that both spellings compare equal.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl OwnAddresses {
    /// The addresses of listeners bound to `listeners` on a host whose IPs (other than
    /// loopback) are `local`. A listener on port 0 (a port picked by the kernel) must
    /// be given with its real port.
    pub fn new(listeners: &[SocketAddr], local: &[IpAddr]) -> OwnAddresses {
        OwnAddresses {
            listeners: listeners
                .iter()
                .map(|l| {
                    let ip = l.ip();
                    let wildcard = ip.is_unspecified();
                    (
                        l.port(),
                        (!wildcard).then(|| canonical_ip(ip)),
                        ip.is_ipv6(),
                    )
                })
                .collect(),
            local: local.iter().map(|ip| canonical_ip(*ip)).collect(),
        }
    }

    /// The same host IPs with the listeners' real (bound) addresses: a listener
    /// configured on port 0 gets its port when it is bound.
    pub fn with_listeners(&self, listeners: &[SocketAddr]) -> OwnAddresses {
        let mut o = OwnAddresses::new(listeners, &[]);
        o.local = self.local.clone();
        o
    }

    /// Whether a datagram sent to `to` reaches one of the listeners: the same port, and
    /// the same IP (either spelling of IPv4), or a wildcard listener and a loopback or
    /// local IP of its family (`[::]` also receives IPv4: Linux sockets are dual-stack
    /// unless `IPV6_V6ONLY`).
    #[inline]
    pub fn contains(&self, to: SocketAddr) -> bool {
        for &(port, ip, v6) in &self.listeners {
            if to.port() != port {
                continue;
            }
            let t = canonical_ip(to.ip());
            let hit = match ip {
                Some(ip) => ip == t,
                None => (v6 || t.is_ipv4()) && (t.is_loopback() || self.local.contains(&t)),
            };
            if hit {
                return true;
            }
        }
        false
    }

    /// Whether there are no listeners (nothing is own).
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn own_addresses() {
        let local: Vec<IpAddr> = vec![
            "192.0.2.10".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ];
        let own = OwnAddresses::new(
            &[a("0.0.0.0:5684"), a("127.0.0.1:7000"), a("[::]:8000")],
            &local,
        );
        assert!(own.contains(a("127.0.0.1:5684")));
        assert!(own.contains(a("127.3.2.1:5684")), "all of 127/8 is local");
        assert!(own.contains(a("192.0.2.10:5684")));
        assert!(own.contains(a("[::ffff:127.0.0.1]:5684")));
        assert!(!own.contains(a("192.0.2.11:5684")));
        assert!(!own.contains(a("192.0.2.10:5685")));
        assert!(
            !own.contains(a("[::1]:5684")),
            "0.0.0.0 does not receive IPv6"
        );
        assert!(own.contains(a("[::ffff:127.0.0.1]:7000")));
        assert!(!own.contains(a("127.0.0.2:7000")));
        assert!(own.contains(a("[::1]:8000")));
        assert!(own.contains(a("[2001:db8::10]:8000")));
        assert!(own.contains(a("127.0.0.1:8000")), "[::] is dual-stack");
        assert!(!own.contains(a("[2001:db8::11]:8000")));
        assert!(OwnAddresses::default().is_empty());
    }
}
