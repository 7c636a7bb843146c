//! What `cidlb check-config` prints: [`Config::explain`] and [`Config::warnings`].

use std::fmt::Write as _;

use cidlb_core::{BackendState, MultiCidPolicy};

use super::{
    cpu_count, fmt_duration, Config, Forwarding, ListenerConfig, RoutingMode, UpstreamMode,
    XdpAttachMode, XdpDr,
};

/// The lines of `check-config` for a listener with `forwarding = "xdp-dr"`.
fn explain_xdp(o: &mut String, l: &ListenerConfig, x: &XdpDr) {
    let ifs = x.interfaces.join(", ");
    let _ = writeln!(
        o,
        "  Forwarding: direct routing in XDP (forwarding = \"xdp-dr\") on {ifs}, {} mode.",
        x.mode
    );
    match x.mode {
        XdpAttachMode::Native => {
            let _ = writeln!(o, "    The program runs in the NIC's driver (xdp_mode = \"native\"); a driver without native XDP");
            let _ = writeln!(o, "    refuses it at start: then use xdp_mode = \"generic\" (slower) or forwarding = \"nat\".");
        }
        XdpAttachMode::Generic => {
            let _ = writeln!(o, "    The program runs in the kernel's generic XDP hook (xdp_mode = \"generic\"): any interface, much slower than native.");
        }
    }
    let _ = writeln!(o, "    {} is the virtual address: frames to it get the backend's MAC and go back out of {ifs};", l.address);
    let _ = writeln!(o, "    IP and UDP are untouched, so the backends see each client's own address and answer it directly.");
    let _ = writeln!(o, "    Each backend must hold {} on its loopback (arp_ignore=1, arp_announce=2), run its DTLS", l.address.ip());
    let _ = writeln!(
        o,
        "    server on {} (and on its own address, for the health checks), and be on the same L2",
        l.address
    );
    let _ = writeln!(o, "    segment as {ifs}: its MAC comes from the kernel's neighbour table; a backend without one gets no traffic.");
    if l.routing == RoutingMode::Cid {
        let _ = writeln!(o, "    The balancer never sees a ServerHello (replies bypass it): CIDs route by their encoding");
        let _ = writeln!(o, "    ([listener.cid_format]), or by the flow they first appear on (seeded), else by hashing the CID.");
        if l.cid_format.is_none() {
            let _ = writeln!(o, "    Without a cid_format, a client that rebinds before its CID was seen on a known flow is placed by");
            let _ = writeln!(o, "    hashing its CID: give the servers routable CIDs for sessions that survive every rebinding.");
        }
    }
    let _ = writeln!(o, "    No upstream sockets and no file descriptor per session; table sizes are fixed when the program loads.");
}

impl Config {
    /// A readable summary of what this configuration makes the balancer do, with
    /// warnings about likely mistakes (what `cidlb check-config FILE` prints).
    pub fn explain(&self) -> String {
        let mut o = String::new();
        let cpus = cpu_count();
        let nb: usize = self.listeners.iter().map(|l| l.backends.len()).sum();
        let _ = writeln!(
            o,
            "Configuration is valid: {} listener{}, {} backend{} in total.",
            self.listeners.len(),
            plural(self.listeners.len()),
            nb,
            plural(nb)
        );
        match self.workers {
            Some(w) => {
                let _ = writeln!(
                    o,
                    "Worker threads: {w} (this machine has {cpus} CPU{}).",
                    plural(cpus)
                );
            }
            None => {
                let _ = writeln!(o, "Worker threads: one per CPU ({cpus} on this machine).");
            }
        }

        for l in &self.listeners {
            let _ = writeln!(o);
            let _ = writeln!(o, "Listener {:?} on UDP {}", l.name, l.address);
            if l.address.port() == 0 {
                let _ = writeln!(o, "  (port 0: the kernel picks a free port at start-up)");
            }
            match l.routing {
                RoutingMode::Cid => {
                    if let Some(n) = l.cid_length {
                        let _ = writeln!(
                            o,
                            "  Routing: by DTLS Connection ID. CIDs are {n} byte{} long (the length is not on the wire:",
                            plural(n)
                        );
                        let _ = writeln!(o, "    it must match what the servers issue).");
                    } else {
                        let _ = writeln!(o, "  Routing: by DTLS Connection ID; CID lengths come from the QUIC-LB configurations below.");
                    }
                    let _ = writeln!(o, "    - A record with a CID goes to the backend that issued it (learned from its ServerHello),");
                    let _ = writeln!(o, "      so a device whose NAT changed its address still reaches its session.");
                    let _ = writeln!(o, "    - Records without a CID (handshakes) stick to the client's address:port;");
                    let _ = writeln!(o, "      a new client is placed by Maglev consistent hashing over the backends that take new flows.");
                    let _ = writeln!(
                        o,
                        "    - A datagram whose records carry different CIDs is {}.",
                        match l.multi_cid {
                            MultiCidPolicy::First =>
                                "routed by its first CID (multi_cid = \"first\")",
                            MultiCidPolicy::Split =>
                                "split into one datagram per backend (multi_cid = \"split\")",
                            MultiCidPolicy::Drop => "dropped (multi_cid = \"drop\")",
                        }
                    );
                }
                RoutingMode::Address => {
                    let _ = writeln!(o, "  Routing: by client address:port only (routing = \"address\"), like a plain UDP balancer.");
                    let _ = writeln!(o, "    A client whose NAT changes its address is placed afresh and usually loses its DTLS session.");
                    let _ = writeln!(o, "    Meant for comparison with CID routing.");
                }
            }
            super::routable::explain_listener(&mut o, l);
            match (l.upstream, l.upstream_source) {
                _ if l.forwarding.is_xdp() => {
                    if let Forwarding::XdpDr(x) = &l.forwarding {
                        explain_xdp(&mut o, l, x);
                    }
                }
                (UpstreamMode::Transparent, _) => {
                    let _ = writeln!(o, "  Upstream sockets (one per client address:port and backend) bind to the client's own address and");
                    let _ = writeln!(o, "    port (upstream = \"transparent\"): the servers see each client's address. They must route the");
                    let _ = writeln!(o, "    clients' addresses back through this balancer, and its policy routing must deliver their replies");
                    let _ = writeln!(o, "    to cidlb; at start cidlb checks that, and the CAP_NET_ADMIN or CAP_NET_RAW capability it needs");
                    let _ = writeln!(o, "    (docs/operation.md, \"Transparent NAT\").");
                    if let Some(m) = l.reply_fwmark {
                        let _ = writeln!(o, "    Replies are routed by firewall mark {m:#x} (reply_fwmark), which the host's netfilter rules set.");
                    }
                    let _ = writeln!(
                        o,
                        "    Health checks still come from the balancer's own address."
                    );
                }
                (UpstreamMode::Nat, Some(ip)) => {
                    let _ = writeln!(
                        o,
                        "  Upstream sockets (one per client address:port) bind to {ip}."
                    );
                }
                (UpstreamMode::Nat, None) => {
                    let _ = writeln!(o, "  Upstream sockets (one per client address:port) bind to an address the kernel picks.");
                }
            }
            let total: u64 = l
                .backends
                .iter()
                .filter(|b| b.state == BackendState::Up)
                .map(|b| u64::from(b.weight))
                .sum();
            let _ = writeln!(o, "  Backends ({}):", l.backends.len());
            let wn = l.backends.iter().map(|b| b.name.len()).max().unwrap_or(0);
            let wa = l
                .backends
                .iter()
                .map(|b| b.address.to_string().len())
                .max()
                .unwrap_or(0);
            for b in &l.backends {
                let share = if b.state != BackendState::Up || b.weight == 0 || total == 0 {
                    match b.state {
                        BackendState::Down => "gets no traffic".to_owned(),
                        BackendState::Draining => "no new flows; existing ones continue".to_owned(),
                        BackendState::Up => {
                            "no new flows (weight 0); existing ones continue".to_owned()
                        }
                    }
                } else {
                    format!(
                        "~{:.1}% of new flows",
                        100.0 * f64::from(b.weight) / total as f64
                    )
                };
                let _ = writeln!(
                    o,
                    "    {:wn$}  {:wa$}  weight {:<5} {:<8}  {share}",
                    b.name,
                    b.address.to_string(),
                    b.weight,
                    b.state.name(),
                );
            }
        }

        let t = &self.timeouts;
        let _ = writeln!(o);
        let _ = writeln!(o, "Timeouts:");
        let _ = writeln!(
            o,
            "  flow_idle = {}: a client address:port keeps its backend and upstream socket for {} after its last datagram.",
            fmt_duration(t.flow_idle),
            fmt_duration(t.flow_idle)
        );
        let _ = writeln!(
            o,
            "  cid_binding_idle = {}: a Connection ID keeps its backend for {} after its last datagram.",
            fmt_duration(t.cid_binding_idle),
            fmt_duration(t.cid_binding_idle)
        );
        let _ = writeln!(
            o,
            "Limits (per listener; when a table is full, an idle entry is evicted):"
        );
        let _ = writeln!(
            o,
            "  max_flows = {}, max_bindings = {}",
            self.limits.max_flows, self.limits.max_bindings
        );
        match self.limits.new_flow_limit() {
            Some((rate, burst)) => {
                let _ = writeln!(
                    o,
                    "  new_flows_per_source = {rate}, new_flows_burst = {burst}: one source (IPv4 \
                     address, IPv6 /64) may open {burst} new flows at once, then {rate} a second; \
                     datagrams of existing flows and known Connection IDs are never limited."
                );
            }
            None => {
                let _ = writeln!(
                    o,
                    "  new_flows_per_source = 0: new flows are not limited per source."
                );
            }
        }
        let _ = writeln!(
            o,
            "  Each flow holds one upstream UDP socket: the daemon's open-files limit (ulimit -n) \
             should be at least {} (with {} worker{}).",
            self.descriptors(),
            self.effective_workers(),
            plural(self.effective_workers())
        );
        let _ = writeln!(
            o,
            "Hashing: Maglev seed {}, table size {} (use the same values on every balancer instance).",
            self.hashing.seed, self.hashing.maglev_table_size
        );
        let h = &self.health;
        if h.enabled {
            let _ = writeln!(
                o,
                "Health checks: a DTLS ClientHello to every backend each {} (answer within {}); down after {} failure{} in a row, up again after {} success{}.",
                fmt_duration(h.interval),
                fmt_duration(h.timeout),
                h.fall,
                plural(h.fall as usize),
                h.rise,
                if h.rise == 1 { "" } else { "es" }
            );
        } else {
            let _ = writeln!(o, "Health checks: off (every backend counts as healthy).");
        }
        if self.admin.enabled {
            let _ = writeln!(
                o,
                "Admin API: http://{}/ (metrics, backends, drain, reload).",
                self.admin.address()
            );
        } else {
            let _ = writeln!(o, "Admin API: off.");
        }

        let warnings = self.warnings();
        let _ = writeln!(o);
        if warnings.is_empty() {
            let _ = writeln!(o, "No warnings.");
        } else {
            let _ = writeln!(o, "Warnings ({}):", warnings.len());
            for w in &warnings {
                let _ = writeln!(o, "  - {w}");
            }
        }
        o
    }

    /// Likely mistakes that are not errors (also listed by [`Config::explain`]).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.admin.enabled && !self.admin.address().ip().is_loopback() {
            w.push(format!(
                "admin.address {} is not a loopback address: anyone who reaches it can drain backends and reload the configuration (the API has no authentication)",
                self.admin.address()
            ));
        }
        let cpus = cpu_count();
        if let Some(n) = self.workers {
            if n > cpus {
                w.push(format!(
                    "workers = {n} is more than the {cpus} CPU{} of this machine: threads will compete for CPUs",
                    plural(cpus)
                ));
            }
        }
        let t = &self.timeouts;
        if t.cid_binding_idle < t.flow_idle {
            w.push(format!(
                "timeouts.cid_binding_idle ({}) is shorter than timeouts.flow_idle ({}): CID bindings exist to outlive flows (a device that sleeps, then comes back from a new address, needs its binding)",
                fmt_duration(t.cid_binding_idle),
                fmt_duration(t.flow_idle)
            ));
        }
        for l in &self.listeners {
            let n = l.backends.len();
            if n == 1 {
                w.push(format!(
                    "listener {:?} has a single backend: nothing is balanced (fine for a test)",
                    l.name
                ));
            }
            if !l
                .backends
                .iter()
                .any(|b| b.state == BackendState::Up && b.weight > 0)
            {
                w.push(format!(
                    "listener {:?}: no backend takes new flows (each has weight 0 or is draining/down): new clients will be dropped",
                    l.name
                ));
            }
            if n > 1 && self.hashing.maglev_table_size < n.saturating_mul(100) {
                w.push(format!(
                    "hashing.maglev_table_size = {} is less than 100 x the {n} backends of listener {:?}: new flows will be spread unevenly",
                    self.hashing.maglev_table_size, l.name
                ));
            }
            if l.routing == RoutingMode::Address {
                if let Some(c) = l.cid_length {
                    w.push(format!(
                        "listener {:?}: cid_length = {c} has no effect with routing = \"address\"",
                        l.name
                    ));
                }
            }
            super::routable::warnings(l, &mut w);
            if l.upstream == UpstreamMode::Transparent && l.address.ip().is_unspecified() {
                w.push(format!(
                    "listener {:?}: upstream = \"transparent\" on the wildcard address {}: a client whose source port is {} cannot have an upstream socket with its own address:port (the listener's wildcard socket holds that port); bind the listener to its own address",
                    l.name,
                    l.address.ip(),
                    l.address.port()
                ));
            }
            if let Some(ip) = l.upstream_source {
                if ip.is_loopback() && l.backends.iter().any(|b| !b.address.ip().is_loopback()) {
                    w.push(format!(
                        "listener {:?}: upstream_source {ip} is a loopback address but some backends are not: they cannot be reached from it",
                        l.name
                    ));
                }
            }
        }
        for (i, a) in self.listeners.iter().enumerate() {
            for b in &self.listeners[i + 1..] {
                let (x, y) = (a.address, b.address);
                if x.port() != 0
                    && x.port() == y.port()
                    && x.ip() != y.ip()
                    && (x.ip().is_unspecified() || y.ip().is_unspecified())
                {
                    w.push(format!(
                        "listeners {:?} ({x}) and {:?} ({y}) share port {} and one binds a wildcard address: the second bind may fail",
                        a.name,
                        b.name,
                        x.port()
                    ));
                }
            }
        }
        w
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{one_listener, parse};

    #[test]
    fn explain_mentions_everything() {
        let c = parse(&format!(
            "workers = 256\n[timeouts]\nflow_idle = \"2h\"\ncid_binding_idle = \"1h\"\n{}\
             [[listener]]\nname = \"solo\"\naddress = \"0.0.0.0:5685\"\nrouting = \"address\"\n\
             [[listener.backend]]\nname = \"lonely\"\naddress = \"10.0.0.3:5684\"\nweight = 0\n",
            one_listener("name = \"coaps\"")
        ))
        .unwrap();
        let ex = c.explain();
        for needle in [
            "\"coaps\"",
            "0.0.0.0:5684",
            "6 bytes",
            "Connection ID",
            "10.0.0.1:5684",
            "10.0.0.2:5684",
            "~50.0% of new flows",
            "\"solo\"",
            "address:port only",
            "lonely",
            "flow_idle = 2h",
            "cid_binding_idle = 1h",
            "max_flows = 100000",
            "65537",
            "Warnings",
        ] {
            assert!(ex.contains(needle), "explain lacks {needle:?}:\n{ex}");
        }
        let w = c.warnings();
        let has = |s: &str| w.iter().any(|x| x.contains(s));
        assert!(has("single backend"), "{w:?}");
        assert!(has("no backend takes new flows"), "{w:?}");
        assert!(has("shorter than timeouts.flow_idle"), "{w:?}");
        if cpu_count() < 256 {
            assert!(has("workers = 256"), "{w:?}");
        }

        let quiet = Config::quick(
            "0.0.0.0:5684".parse().unwrap(),
            &[
                "10.0.0.1:5684".parse().unwrap(),
                "10.0.0.2:5684".parse().unwrap(),
            ],
            6,
        )
        .unwrap();
        assert!(quiet.warnings().is_empty(), "{:?}", quiet.warnings());
        assert!(quiet.explain().contains("No warnings."));
        assert!(quiet.explain().contains("backend-0"));
    }
}
