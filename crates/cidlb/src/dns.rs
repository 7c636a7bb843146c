//! Backends given by DNS name (`address = "NAME:PORT"`): resolution and expansion.
//!
//! A DNS backend stands for every address its name resolves to (A and AAAA records).
//! At start, at every reload and every `resolver.interval`, each name is asked of the
//! configured servers (`[resolver] servers`, else the `nameserver` lines of
//! `/etc/resolv.conf`) with a query of our own (`hickory-proto` builds and reads the
//! messages; UDP, one query per record type, bounded by `resolver.timeout`), and the
//! configuration is *expanded*: the DNS backend `dtls` at `dtls.svc:5684` that resolves
//! to 10.0.0.1 and 10.0.0.2 becomes the backends `dtls/10.0.0.1:5684` and
//! `dtls/10.0.0.2:5684`. A change applies like a reload: an address that stays keeps its
//! name and id, so its flows and CID bindings; a new one is added; one that is no
//! longer resolved is kept *draining* (its sessions continue, it gets no new flows) for
//! `timeouts.flow_idle`, then removed. A name that cannot be resolved (no answer, a
//! server failure) keeps its last addresses; a name that no longer exists (NXDOMAIN, or
//! no records) has none.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use cidlb_core::{BackendState, OwnAddresses};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tracing::warn;

use crate::config::{Config, DnsName};

/// The servers of `/etc/resolv.conf` (port 53), for when `[resolver] servers` is unset.
pub fn system_servers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// What a name resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// These addresses (sorted; empty: the name has no A or AAAA record).
    Addresses(Vec<IpAddr>),
    /// No server answered, or each answered with an error: keep what was known.
    Failed(String),
}

fn query(id: u16, name: &Name, t: RecordType) -> Result<Vec<u8>, String> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name.clone(), t));
    m.to_vec()
        .map_err(|e| format!("cannot build a DNS query: {e}"))
}

/// Resolves `host` (A and AAAA) with the first of `servers` that answers.
pub fn resolve(host: &str, servers: &[SocketAddr], timeout: Duration) -> Answer {
    let name = match Name::from_ascii(format!("{host}.")) {
        Ok(n) => n,
        Err(e) => return Answer::Failed(format!("{host:?} is not a DNS name: {e}")),
    };
    let mut errors = Vec::new();
    for server in servers {
        match ask(&name, *server, timeout) {
            Ok(a) => return Answer::Addresses(a),
            Err(e) => errors.push(format!("{server}: {e}")),
        }
    }
    if servers.is_empty() {
        errors.push("no DNS server ([resolver] servers, or nameserver in /etc/resolv.conf)".into());
    }
    Answer::Failed(errors.join("; "))
}

/// One server: an A and an AAAA query, both answered within `timeout`.
fn ask(name: &Name, server: SocketAddr, timeout: Duration) -> Result<Vec<IpAddr>, String> {
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
    s.connect(server).map_err(|e| e.to_string())?;
    let mut ids = [0u8; 4];
    getrandom::getrandom(&mut ids).map_err(|e| e.to_string())?;
    let want = [
        (u16::from_be_bytes([ids[0], ids[1]]), RecordType::A),
        (u16::from_be_bytes([ids[2], ids[3]]), RecordType::AAAA),
    ];
    for (id, t) in want {
        s.send(&query(id, name, t)?).map_err(|e| e.to_string())?;
    }
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<u16> = want.iter().map(|w| w.0).collect();
    let mut out = Vec::new();
    let (mut answered, mut refused) = (0, Vec::new());
    let mut buf = [0u8; 4096];
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no answer in time".into());
        }
        s.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
        let n = match s.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("no answer in time".into())
            }
            Err(e) => return Err(e.to_string()),
        };
        // Anything that is not an answer to one of our queries is ignored.
        let Ok(m) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let Some(i) = pending.iter().position(|id| *id == m.metadata.id) else {
            continue;
        };
        if m.metadata.message_type != MessageType::Response {
            continue;
        }
        pending.swap_remove(i);
        match m.metadata.response_code {
            ResponseCode::NoError | ResponseCode::NXDomain => answered += 1,
            // One record type refused (e.g. AAAA by a server that has only A records
            // and no upstream): the other may still answer.
            rc => {
                refused.push(rc.to_string());
                continue;
            }
        }
        for r in &m.answers {
            match &r.data {
                RData::A(a) => out.push(IpAddr::V4(a.0)),
                RData::AAAA(a) => out.push(IpAddr::V6(a.0)),
                _ => {}
            }
        }
    }
    if answered == 0 {
        return Err(format!("the server answered {}", refused.join(", ")));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// What the names resolved to, with the addresses that went away and since when.
#[derive(Clone, Debug, Default)]
pub struct Resolved {
    /// The current addresses of each name.
    pub names: BTreeMap<DnsName, Vec<IpAddr>>,
    /// Addresses no longer resolved, kept draining until their grace ends.
    pub gone: BTreeMap<(DnsName, IpAddr), Instant>,
}

impl Resolved {
    /// Resolves every DNS backend name of `file` again; returns whether anything
    /// changed (addresses, or a gone address whose grace `grace` ran out at `now`).
    pub fn refresh(&mut self, file: &Config, now: Instant, grace: Duration) -> bool {
        let servers = if file.resolver.servers.is_empty() {
            system_servers()
        } else {
            file.resolver.servers.clone()
        };
        let mut wanted: Vec<DnsName> = file
            .listeners
            .iter()
            .flat_map(|l| l.backends.iter().filter_map(|b| b.dns.clone()))
            .collect();
        wanted.sort();
        wanted.dedup();
        let mut changed = false;
        let mut next = BTreeMap::new();
        for n in wanted {
            let old = self.names.get(&n).cloned();
            let now_addrs = match resolve(&n.host, &servers, file.resolver.timeout) {
                Answer::Addresses(a) => a,
                Answer::Failed(e) => {
                    warn!(name = %n.host, error = %e,
                        "cannot resolve a backend name; its last addresses stay");
                    old.clone().unwrap_or_default()
                }
            };
            for ip in old.iter().flatten() {
                if !now_addrs.contains(ip) {
                    self.gone.entry((n.clone(), *ip)).or_insert(now);
                }
            }
            for ip in &now_addrs {
                self.gone.remove(&(n.clone(), *ip));
            }
            if old.as_ref() != Some(&now_addrs) {
                changed = true;
            }
            next.insert(n, now_addrs);
        }
        let before = self.gone.len();
        self.gone.retain(|(n, _), since| {
            next.contains_key(n) && now.saturating_duration_since(*since) < grace
        });
        changed |= self.gone.len() != before;
        self.names = next;
        changed
    }

    /// `file` with every DNS backend replaced by one backend per address (named
    /// `NAME/IP:PORT`, the same weight and state; addresses gone but in their grace
    /// draining). Addresses a listener of the file receives on, duplicates of other
    /// backends, and addresses of the wrong family for `upstream_source` are left out
    /// (logged).
    pub fn expand(&self, file: &Config) -> Config {
        let mut cfg = file.clone();
        let listen: Vec<SocketAddr> = file.listeners.iter().map(|l| l.address).collect();
        let own = OwnAddresses::new(&listen, &cidlb_net::sys::local_ips());
        for l in &mut cfg.listeners {
            let mut out = Vec::with_capacity(l.backends.len());
            let statics: Vec<SocketAddr> = l
                .backends
                .iter()
                .filter(|b| b.dns.is_none())
                .map(|b| b.address)
                .collect();
            for b in &l.backends {
                let Some(d) = &b.dns else {
                    out.push(b.clone());
                    continue;
                };
                let mut addrs: Vec<(IpAddr, bool)> = self
                    .names
                    .get(d)
                    .into_iter()
                    .flatten()
                    .map(|ip| (*ip, false))
                    .collect();
                addrs.extend(
                    self.gone
                        .keys()
                        .filter(|(n, _)| n == d)
                        .map(|(_, ip)| (*ip, true)),
                );
                addrs.sort();
                addrs.dedup_by_key(|a| a.0);
                for (ip, gone) in addrs {
                    let address = SocketAddr::new(ip, d.port);
                    let why = if own.contains(address) {
                        Some("the listener itself receives on it")
                    } else if statics.contains(&address)
                        || out
                            .iter()
                            .any(|o: &crate::config::BackendConfig| o.address == address)
                    {
                        Some("another backend has that address")
                    } else if l
                        .upstream_source
                        .is_some_and(|s| s.is_ipv4() != ip.is_ipv4())
                    {
                        Some("upstream_source is of the other address family")
                    } else if ip.is_unspecified() || ip.is_multicast() {
                        Some("not a unicast address")
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        warn!(listener = %l.name, backend = %b.name, %address,
                            "a resolved address is left out: {why}");
                        continue;
                    }
                    let mut e = b.clone();
                    e.name = format!("{}/{address}", b.name);
                    e.address = address;
                    e.dns = None;
                    if gone {
                        e.state = BackendState::Draining;
                    }
                    out.push(e);
                }
            }
            l.backends = out;
        }
        cfg
    }
}
