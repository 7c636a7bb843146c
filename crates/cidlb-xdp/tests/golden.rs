//! The golden table: crafted frames through the XDP program (`BPF_PROG_TEST_RUN`) and
//! the same datagrams through a cidlb-core `Router` with the same state. For every
//! case: the XDP action, the rewritten MACs (and nothing else changed), the counters
//! that moved, and the Router's verdict and counters must agree; after every case the
//! plane's explanations must equal the Router's.

mod support;

use std::net::SocketAddr;
use std::time::Instant;

use cidlb_cidformat::{PrefixFormat, QuicLbConfig, QuicLbParams, ServerId};
use cidlb_core::plane::ListenerPlane;
use cidlb_core::{
    Backend, BackendId, BackendState, Counters, DropReason, MultiCidPolicy, RouteOutcome, Router,
    RouterConfig, Verdict,
};
use cidlb_wire::build;
use cidlb_wire::ContentType;
use cidlb_xdp::{XdpCidFormat, XdpListener, XDP_DROP, XDP_PASS, XDP_TX};
use support::*;

/// What one frame should do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// Whatever the Router says (forward or drop), and the program must agree.
    Core,
    /// Passed to the stack, counted in this plane statistic; the Router is not asked.
    Pass(&'static str),
}

struct Harness {
    name: &'static str,
    xdp: XdpListener,
    router: Router,
    t0: Instant,
    v6: bool,
    /// CIDs and clients to compare explanations for.
    cids: Vec<Vec<u8>>,
    clients: Vec<SocketAddr>,
    cases: usize,
}

fn counters_delta(after: &Counters, before: &Counters) -> Counters {
    let mut d = Counters::default();
    for (i, v) in d.routed.iter_mut().enumerate() {
        *v = after.routed[i] - before.routed[i];
    }
    for (i, v) in d.dropped.iter_mut().enumerate() {
        *v = after.dropped[i] - before.dropped[i];
    }
    for (i, v) in d.events.iter_mut().enumerate() {
        *v = after.events[i] - before.events[i];
    }
    d
}

fn stat(x: &XdpListener, name: &str) -> u64 {
    x.snapshot(false)
        .stats
        .iter()
        .find(|(s, _)| s.name == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no stat {name}"))
}

impl Harness {
    fn new(
        name: &'static str,
        cfg: RouterConfig,
        format: Option<XdpCidFormat>,
        backends: Vec<Backend>,
        v6: bool,
    ) -> Option<Harness> {
        let t0 = Instant::now();
        let mut router = Router::new(cfg.clone(), t0);
        router.set_backends(backends.clone()).unwrap();
        let xdp = load_or_skip(name, listener_config(vip(v6), cfg, format, backends))?;
        Some(Harness {
            name,
            xdp,
            router,
            t0,
            v6,
            cids: Vec::new(),
            clients: Vec::new(),
            cases: 0,
        })
    }

    fn client(&self, i: u16) -> SocketAddr {
        if self.v6 {
            SocketAddr::new(
                std::net::IpAddr::from([
                    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, i as u8,
                ]),
                40000 + i,
            )
        } else {
            SocketAddr::new(std::net::IpAddr::from([192, 0, 2, i as u8]), 40000 + i)
        }
    }

    /// Runs one frame through both and checks they agree; returns the Router's verdict.
    fn frame(
        &mut self,
        what: &str,
        client: SocketAddr,
        payload: &[u8],
        framing: &Framing,
        want: Want,
    ) -> Option<Verdict> {
        self.cases += 1;
        if !self.clients.contains(&client) {
            self.clients.push(client);
        }
        let f = frame(client, vip(self.v6), payload, framing);
        let before = self.xdp.snapshot(false);
        let out = self.xdp.test_run(&f).unwrap();
        let ctx = format!("{} / {what}", self.name);
        // The program owns the two MAC fields and nothing else.
        assert_eq!(out.frame.len(), f.len(), "{ctx}: frame length");
        assert_eq!(
            out.frame[12..],
            f[12..],
            "{ctx}: bytes after the MACs changed"
        );
        match want {
            Want::Pass(stat_name) => {
                assert_eq!(out.action, XDP_PASS, "{ctx}: action");
                assert_eq!(out.frame, f, "{ctx}: a passed frame is untouched");
                let after = self.xdp.snapshot(false);
                let (b, a) = (
                    before
                        .stats
                        .iter()
                        .find(|(s, _)| s.name == stat_name)
                        .unwrap()
                        .1,
                    after
                        .stats
                        .iter()
                        .find(|(s, _)| s.name == stat_name)
                        .unwrap()
                        .1,
                );
                assert_eq!(a - b, 1, "{ctx}: {stat_name}");
                assert_eq!(
                    counters_delta(&after.counters, &before.counters),
                    Counters::default(),
                    "{ctx}: a passed frame moves no routing counter"
                );
                None
            }
            Want::Core => {
                let mut out = out;
                let mut before = before;
                let punted_before = before
                    .stats
                    .iter()
                    .find(|(s, _)| s.name == "punted_encrypted_cids")
                    .map_or(0, |(_, v)| *v);
                if stat(&self.xdp, "punted_encrypted_cids") > punted_before {
                    // An encrypted CID the slow path has not seen: the frame is queued
                    // for it (and taken off the wire); it decodes the CID (and, on an
                    // attached listener, routes the frame again and sends it), and the
                    // next datagram is routed by the program.
                    assert_eq!(out.action, XDP_DROP, "{ctx}: a punted frame is taken");
                    assert_eq!(out.frame, f, "{ctx}: a punted frame is untouched");
                    assert_eq!(
                        counters_delta(&self.xdp.snapshot(false).counters, &before.counters),
                        Counters::default(),
                        "{ctx}: a punt moves no routing counter"
                    );
                    assert_eq!(self.xdp.service_punts(), 1, "{ctx}: slow path");
                    before = self.xdp.snapshot(false);
                    out = self.xdp.test_run(&f).unwrap();
                }
                let after = self.xdp.snapshot(false);
                let rb = self.router.counters().clone();
                let verdict = self.router.route(self.t0, client, payload);
                let rd = counters_delta(self.router.counters(), &rb);
                let xd = counters_delta(&after.counters, &before.counters);
                match verdict {
                    Verdict::Forward { backend, .. } => {
                        assert_eq!(out.action, XDP_TX, "{ctx}: action, router said {verdict:?}");
                        assert_eq!(
                            out.frame[..6],
                            backend_mac(backend.0),
                            "{ctx}: dst MAC ({verdict:?})"
                        );
                        assert_eq!(out.frame[6..12], LB_MAC, "{ctx}: src MAC");
                    }
                    Verdict::Drop(_) => {
                        assert_eq!(
                            out.action, XDP_DROP,
                            "{ctx}: action, router said {verdict:?}"
                        );
                        assert_eq!(out.frame, f, "{ctx}: a dropped frame is untouched");
                    }
                    Verdict::Split => panic!("{ctx}: split"),
                }
                assert_eq!(
                    xd, rd,
                    "{ctx}: counters (xdp left, router right), {verdict:?}"
                );
                self.explanations(&ctx);
                Some(verdict)
            }
        }
    }

    fn dgram(&mut self, what: &str, client: SocketAddr, payload: &[u8]) -> Verdict {
        self.frame(what, client, payload, &Framing::default(), Want::Core)
            .unwrap()
    }

    fn expect(&mut self, what: &str, client: SocketAddr, payload: &[u8], want: Verdict) {
        let got = self.dgram(what, client, payload);
        assert_eq!(got, want, "{} / {what}: the golden verdict", self.name);
    }

    fn explanations(&self, ctx: &str) {
        for c in &self.clients {
            let x = self.xdp.explain_client(*c);
            let r = self.router.explain_client(self.t0, *c);
            assert_eq!(x.decision, r.decision, "{ctx}: explain_client {c}");
            assert_eq!(x.hashed, r.hashed, "{ctx}: explain_client {c} hashed");
            assert_eq!(
                x.flow.map(|f| (f.backend, f.serves)),
                r.flow.map(|f| (f.backend, f.serves)),
                "{ctx}: explain_client {c} flow"
            );
        }
        for cid in &self.cids {
            for c in self.clients.iter().map(|c| Some(*c)).chain([None]) {
                let x = self.xdp.explain_cid(cid, c);
                let r = self.router.explain_cid(self.t0, cid, c);
                assert_eq!(
                    x.decision, r.decision,
                    "{ctx}: explain_cid {cid:02x?} from {c:?}"
                );
                assert_eq!(x.decoded, r.decoded, "{ctx}: decoded {cid:02x?}");
                assert_eq!(x.hashed, r.hashed, "{ctx}: hashed {cid:02x?}");
                assert_eq!(
                    x.binding
                        .map(|b| (b.binding.backend, b.binding.source, b.serves, b.exists)),
                    r.binding
                        .map(|b| (b.binding.backend, b.binding.source, b.serves, b.exists)),
                    "{ctx}: binding {cid:02x?}"
                );
            }
        }
    }

    fn watch(&mut self, cid: &[u8]) {
        self.cids.push(cid.to_vec());
    }

    /// Learned binding: the Router learns it from a ServerHello, the plane is told.
    fn learn(&mut self, cid: &[u8], backend: u16, client: SocketAddr) {
        let sh = build::server_hello_datagram([7; 32], Some(cid));
        self.router
            .handle_backend_datagram(self.t0, BackendId(backend), client, &sh);
        self.xdp.learn_binding(cid, BackendId(backend)).unwrap();
        self.watch(cid);
    }

    fn set_state(&mut self, id: u16, state: BackendState) {
        assert!(self.router.set_backend_state(BackendId(id), state));
        assert!(self.xdp.set_backend_state(BackendId(id), state));
    }
}

fn fwd(backend: u16, outcome: RouteOutcome) -> Verdict {
    Verdict::Forward {
        backend: BackendId(backend),
        outcome,
    }
}

fn cid12(cid: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    build::cid12(1, 7, cid, payload, &mut d);
    d
}

fn hello() -> Vec<u8> {
    build::client_hello_datagram([9; 32], &[], None)
}

/// The last backend a forward went to.
fn backend_of(v: Verdict) -> u16 {
    match v {
        Verdict::Forward { backend, .. } => backend.0,
        other => panic!("not forwarded: {other:?}"),
    }
}

#[test]
fn dtls12_fixed_cids_ipv4_and_ipv6() {
    for v6 in [false, true] {
        let name = if v6 { "dtls12 v6" } else { "dtls12 v4" };
        let cfg = router_config(4, None, MultiCidPolicy::First);
        let Some(mut h) = Harness::new(name, cfg, None, backends(3), v6) else {
            return;
        };
        let (a, b, c) = (h.client(1), h.client(2), h.client(3));
        // No CID: Maglev on the address, then the flow.
        let v = h.dgram("client hello", a, &hello());
        assert!(matches!(
            v,
            Verdict::Forward {
                outcome: RouteOutcome::Hashed,
                ..
            }
        ));
        let flow_backend = backend_of(v);
        h.expect("retry", a, &hello(), fwd(flow_backend, RouteOutcome::Flow));
        // A CID first seen on that flow is seeded from it; then it is known.
        let cid = [0xc1, 0xd0, 0x00, 0x07];
        h.watch(&cid);
        h.expect(
            "first CID on the flow",
            a,
            &cid12(&cid, b"finished"),
            fwd(flow_backend, RouteOutcome::CidByFlow),
        );
        h.expect(
            "seeded",
            a,
            &cid12(&cid, b"app"),
            fwd(flow_backend, RouteOutcome::Seeded),
        );
        // The client rebinds: the CID still goes to its backend; the new address gets
        // a flow there.
        h.expect(
            "rebound",
            b,
            &cid12(&cid, b"app"),
            fwd(flow_backend, RouteOutcome::Seeded),
        );
        h.expect(
            "rebound, no CID",
            b,
            &hello(),
            fwd(flow_backend, RouteOutcome::Flow),
        );
        // An unknown CID from a new address: Maglev on the CID.
        let unknown = [0xde, 0xad, 0xbe, 0xef];
        h.watch(&unknown);
        let v = h.dgram("unknown CID", c, &cid12(&unknown, b"x"));
        assert!(matches!(
            v,
            Verdict::Forward {
                outcome: RouteOutcome::UnknownCid,
                ..
            }
        ));
        // A learned binding beats everything; the address's flow is not moved.
        let learned = [0x1e, 0xa2, 0x4e, 0xd0];
        let other = (flow_backend + 1) % 3;
        h.learn(&learned, other, a);
        h.expect(
            "learned",
            a,
            &cid12(&learned, b"x"),
            fwd(other, RouteOutcome::Learned),
        );
        h.expect(
            "flow kept",
            a,
            &hello(),
            fwd(flow_backend, RouteOutcome::Flow),
        );
        // DTLS 1.3 unified headers: with length, without (runs to the end), 8-bit seq.
        let mut d = Vec::new();
        build::unified(Some(&cid), 1, 300, true, b"ciphertext", &mut d);
        h.expect(
            "unified C S L",
            a,
            &d,
            fwd(flow_backend, RouteOutcome::Seeded),
        );
        let mut d = Vec::new();
        build::unified(Some(&cid), 2, 5, false, b"to the end", &mut d);
        h.expect(
            "unified without length",
            a,
            &d,
            fwd(flow_backend, RouteOutcome::Seeded),
        );
        let d = [0x31, 0xc1, 0xd0, 0x00, 0x07, 0x05, 0xaa, 0xbb];
        h.expect(
            "unified 8-bit seq",
            a,
            &d,
            fwd(flow_backend, RouteOutcome::Seeded),
        );
        let mut d = Vec::new();
        build::unified(None, 3, 1, true, b"no cid", &mut d);
        h.expect(
            "unified without CID",
            a,
            &d,
            fwd(flow_backend, RouteOutcome::Flow),
        );
        // Backend down: the learned binding falls through (to the flow), is kept.
        h.set_state(other, BackendState::Down);
        let v = h.dgram("learned, backend down", a, &cid12(&learned, b"x"));
        assert_eq!(v, fwd(flow_backend, RouteOutcome::CidByFlow));
        h.set_state(other, BackendState::Up);
        h.expect(
            "learned, back up",
            a,
            &cid12(&learned, b"x"),
            fwd(other, RouteOutcome::Learned),
        );
        // Draining: existing traffic goes on.
        h.set_state(flow_backend, BackendState::Draining);
        h.expect(
            "draining: flow",
            a,
            &hello(),
            fwd(flow_backend, RouteOutcome::Flow),
        );
        h.expect(
            "draining: seeded",
            a,
            &cid12(&cid, b"x"),
            fwd(flow_backend, RouteOutcome::Seeded),
        );
        let d = h.client(9);
        let v = h.dgram("draining: new flow elsewhere", d, &hello());
        assert_ne!(backend_of(v), flow_backend);
        // Nothing up: no backend.
        for i in 0..3 {
            h.set_state(i, BackendState::Down);
        }
        h.expect(
            "all down",
            h.client(10),
            &hello(),
            Verdict::Drop(DropReason::NoBackend),
        );
        h.expect(
            "all down, CID",
            h.client(10),
            &cid12(&unknown, b"x"),
            Verdict::Drop(DropReason::NoBackend),
        );
        eprintln!("{name}: {} cases agree", h.cases);
    }
}

#[test]
fn the_captured_mbedtls_handshake() {
    for learn in [false, true] {
        let name = if learn {
            "mbedtls learned"
        } else {
            "mbedtls seeded"
        };
        let cfg = router_config(4, None, MultiCidPolicy::First);
        let Some(mut h) = Harness::new(name, cfg, None, backends(4), false) else {
            return;
        };
        let client = h.client(5);
        let server_cid = [0xc1, 0xff, 0x01, 0x26];
        h.watch(&server_cid);
        let mut outcomes = Vec::new();
        let mut first_backend = None;
        for (i, (dir, bytes)) in mbedtls_capture().into_iter().enumerate() {
            if dir == "s2c" {
                if learn && i == 3 {
                    // The ServerHello: the NAT plane learns the CID; here the daemon
                    // would install it.
                    let b = first_backend.unwrap();
                    h.router
                        .handle_backend_datagram(h.t0, BackendId(b), client, &bytes);
                    h.xdp.learn_binding(&server_cid, BackendId(b)).unwrap();
                }
                continue;
            }
            let v = h.dgram(&format!("datagram {}", i + 1), client, &bytes);
            first_backend.get_or_insert(backend_of(v));
            assert_eq!(Some(backend_of(v)), first_backend, "{name}: one backend");
            outcomes.push(match v {
                Verdict::Forward { outcome, .. } => outcome,
                _ => unreachable!(),
            });
        }
        use RouteOutcome::*;
        let want = if learn {
            [Hashed, Flow, Learned, Learned]
        } else {
            // CKE + CCS + Finished: the CID is in the third record, first seen on the flow.
            [Hashed, Flow, CidByFlow, Seeded]
        };
        assert_eq!(outcomes, want, "{name}");
    }
}

#[test]
fn framing_and_malformed_datagrams() {
    let cfg = router_config(4, None, MultiCidPolicy::First);
    let Some(mut h) = Harness::new("framing", cfg, None, backends(2), false) else {
        return;
    };
    let a = h.client(1);
    let cid = [1, 2, 3, 4];
    h.watch(&cid);
    let vlan = Framing {
        vlan: Some(42),
        ..Framing::default()
    };
    h.frame("802.1Q", a, &hello(), &vlan, Want::Core);
    let opts = Framing {
        ip_options: vec![1, 1, 1, 0], // NOP NOP NOP EOL: IHL 6
        ..Framing::default()
    };
    h.frame("IPv4 options", a, &cid12(&cid, b"x"), &opts, Want::Core);
    let padded = Framing {
        padding: 30,
        ..Framing::default()
    };
    let tiny = [23u8, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9, 0, 0];
    h.frame(
        "Ethernet padding after a short datagram",
        a,
        &tiny,
        &padded,
        Want::Core,
    );
    let frag = Framing {
        frag: 0x2000, // MF
        ..Framing::default()
    };
    h.frame(
        "first fragment",
        a,
        &hello(),
        &frag,
        Want::Pass("passed_fragments"),
    );
    let later = Framing {
        frag: 0x0010,
        ..Framing::default()
    };
    h.frame(
        "later fragment",
        a,
        &hello(),
        &later,
        Want::Pass("passed_fragments"),
    );
    let port = Framing {
        dst_port: 9999,
        ..Framing::default()
    };
    h.frame(
        "another port",
        a,
        &hello(),
        &port,
        Want::Pass("passed_other"),
    );
    // Malformed datagrams: dropped with the core's reasons.
    use DropReason::*;
    let mut overlong = cid12(&cid, b"abc");
    overlong.pop();
    let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        ("empty", vec![], Empty),
        ("not DTLS", vec![0x40, 1, 2, 3], NotDtls),
        (
            "TLS version",
            vec![23, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            BadVersion,
        ),
        (
            "truncated header",
            vec![22, 0xfe, 0xfd, 0, 0, 0, 0],
            TruncatedHeader,
        ),
        (
            "truncated CID",
            vec![25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0xaa, 0xbb],
            TruncatedHeader,
        ),
        ("overlong record", overlong, LengthOverrun),
        (
            "good then garbage",
            [cid12(&cid, b"x"), vec![0x99]].concat(),
            NotDtls,
        ),
        ("unified truncated", vec![0x3c, 1, 2], TruncatedHeader),
    ];
    for (what, d, reason) in cases {
        h.expect(what, a, &d, Verdict::Drop(reason));
    }
    // More records than the program walks: passed to the stack (the Router would walk
    // them all).
    let mut many = Vec::new();
    for i in 0..17 {
        build::plaintext(ContentType::APPLICATION_DATA, 1, i, b"", &mut many);
    }
    h.frame(
        "17 records",
        a,
        &many,
        &Framing::default(),
        Want::Pass("passed_too_many_records"),
    );
    let mut sixteen = Vec::new();
    for i in 0..16 {
        build::plaintext(ContentType::APPLICATION_DATA, 1, i, b"", &mut sixteen);
    }
    h.frame("16 records", a, &sixteen, &Framing::default(), Want::Core);
    eprintln!("framing: {} cases agree", h.cases);
}

#[test]
fn mixed_cids_under_each_policy() {
    for policy in [MultiCidPolicy::First, MultiCidPolicy::Drop] {
        let cfg = router_config(4, None, policy);
        let Some(mut h) = Harness::new("mixed", cfg, None, backends(3), false) else {
            return;
        };
        let a = h.client(1);
        let (x, y) = ([1, 1, 1, 1], [2, 2, 2, 2]);
        h.watch(&x);
        h.watch(&y);
        let d = [cid12(&x, b"a"), cid12(&y, b"b")].concat();
        let v = h.dgram("two CIDs", a, &d);
        match policy {
            MultiCidPolicy::Drop => assert_eq!(v, Verdict::Drop(DropReason::MixedCids)),
            _ => assert!(matches!(v, Verdict::Forward { .. })),
        }
        let same = [cid12(&x, b"a"), cid12(&x, b"b")].concat();
        let v = h.dgram("the same CID twice", a, &same);
        assert!(matches!(v, Verdict::Forward { .. }));
        // A different length in DTLS 1.3 needs a format; the same length, other bytes:
        let mut d = cid12(&x, b"a");
        build::unified(Some(&[1, 1, 1, 2]), 1, 1, true, b"c", &mut d);
        h.dgram("1.2 then 1.3 record, last byte differs", a, &d);
    }
    let cfg = router_config(4, None, MultiCidPolicy::Split);
    let err = XdpListener::new(listener_config(vip(false), cfg, None, backends(1))).unwrap_err();
    assert!(err.to_string().contains("split"), "{err}");
}

#[test]
fn long_and_unknown_cid_lengths() {
    let cfg = router_config(33, None, MultiCidPolicy::First);
    let Some(mut h) = Harness::new("long", cfg, None, backends(2), false) else {
        return;
    };
    h.expect(
        "CID too long",
        h.client(1),
        &cid12(&[7; 33], b"x"),
        Verdict::Drop(DropReason::CidTooLong),
    );
    // QUIC-LB without a fixed length: a rotation without configuration has no length.
    let q = QuicLbConfig::new(QuicLbParams {
        rotation: 0,
        server_id_len: 1,
        nonce_len: 4,
        key: None,
        self_describing_length: false,
    })
    .unwrap();
    let f = XdpCidFormat::quic_lb(vec![q], vec![]).unwrap();
    let mut cfg = router_config(4, Some(&f), MultiCidPolicy::First);
    cfg.cid = f.cid_routing(None);
    let Some(mut h) = Harness::new("unknown length", cfg, Some(f), backends(2), false) else {
        return;
    };
    let d = cid12(&[0x60, 1, 2, 3, 4, 5], b"x");
    h.expect(
        "unknown CID length",
        h.client(1),
        &d,
        Verdict::Drop(DropReason::UnknownCidLength),
    );
    let d = cid12(&[0x00, 0x11, 2, 3, 4, 5], b"x");
    h.expect(
        "QUIC-LB length",
        h.client(1),
        &d,
        fwd(1, RouteOutcome::Encoded),
    );
}

fn quic_lb(
    rotation: u8,
    sid: usize,
    nonce: usize,
    key: Option<[u8; 16]>,
    sd: bool,
) -> QuicLbConfig {
    QuicLbConfig::new(QuicLbParams {
        rotation,
        server_id_len: sid,
        nonce_len: nonce,
        key,
        self_describing_length: sd,
    })
    .unwrap()
}

#[test]
fn encoded_cids_of_every_format() {
    // Backend i has server ID [0x10 + i] (support::backends).
    let sid = |b: u8| ServerId::new(&[b]).unwrap();
    let formats: Vec<(&str, XdpCidFormat, usize)> = vec![
        (
            "prefix (Californium)",
            XdpCidFormat::prefix(PrefixFormat::CALIFORNIUM),
            6,
        ),
        (
            "QUIC-LB plaintext",
            XdpCidFormat::quic_lb(vec![quic_lb(0, 1, 6, None, false)], vec![]).unwrap(),
            8,
        ),
        (
            "QUIC-LB plaintext, self-describing, with a server ID map",
            XdpCidFormat::quic_lb(
                vec![quic_lb(1, 1, 6, None, true)],
                vec![(
                    1,
                    vec![
                        (sid(0xa0), sid(0x10)),
                        (sid(0xa1), sid(0x11)),
                        (sid(0xa9), sid(0x99)),
                    ],
                )],
            )
            .unwrap(),
            8,
        ),
        (
            "QUIC-LB single-pass AES",
            XdpCidFormat::quic_lb(vec![quic_lb(2, 1, 15, Some([0x3c; 16]), false)], vec![])
                .unwrap(),
            17,
        ),
        (
            "QUIC-LB four-pass",
            XdpCidFormat::quic_lb(vec![quic_lb(3, 1, 6, Some([0x5a; 16]), true)], vec![]).unwrap(),
            8,
        ),
    ];
    for (name, f, len) in formats {
        let cfg = router_config(len, Some(&f), MultiCidPolicy::First);
        let Some(mut h) = Harness::new(name, cfg, Some(f.clone()), backends(3), false) else {
            return;
        };
        let a = h.client(1);
        let set = f.format_set();
        // A CID for server ID `s` in this format.
        let make = |s: u8, nonce: u8| -> Vec<u8> {
            match set.configs().next() {
                None => {
                    let mut c = vec![s];
                    c.extend(std::iter::repeat_n(nonce, len - 1));
                    c
                }
                Some(q) => q
                    .encode(&[s], &vec![nonce; q.nonce_len()], nonce)
                    .unwrap()
                    .to_vec(),
            }
        };
        let mapped = name.contains("map");
        let (s1, s_unknown) = if mapped { (0xa1, 0xa9) } else { (0x11, 0x77) };
        let c1 = make(s1, 3);
        h.watch(&c1);
        h.expect(
            "encoded to b1",
            a,
            &cid12(&c1, b"x"),
            fwd(1, RouteOutcome::Encoded),
        );
        h.expect(
            "again (cached for encrypted)",
            a,
            &cid12(&c1, b"y"),
            fwd(1, RouteOutcome::Encoded),
        );
        let c2 = make(s_unknown, 4);
        h.watch(&c2);
        let v = h.dgram("unknown server ID", h.client(2), &cid12(&c2, b"x"));
        assert!(
            matches!(
                v,
                Verdict::Forward {
                    outcome: RouteOutcome::UnknownCid,
                    ..
                }
            ),
            "{name}: {v:?}"
        );
        if mapped {
            // Not in the map: undecodable.
            let c3 = make(0xb5, 4);
            h.watch(&c3);
            h.dgram("server ID not allocated", h.client(3), &cid12(&c3, b"x"));
        }
        // A down backend's CIDs fall through; draining ones still route.
        h.set_state(1, BackendState::Down);
        h.dgram("encoded, backend down", a, &cid12(&c1, b"x"));
        h.set_state(1, BackendState::Draining);
        h.expect(
            "encoded, draining",
            a,
            &cid12(&c1, b"x"),
            fwd(1, RouteOutcome::Encoded),
        );
        // A learned binding beats the encoding.
        let c4 = make(0x10, 9);
        h.learn(&c4, 2, a);
        h.expect(
            "learned beats encoded",
            a,
            &cid12(&c4, b"x"),
            fwd(2, RouteOutcome::Learned),
        );
        if set.configs().next().is_some() {
            // The unroutable codepoint, and a rotation without configuration.
            let mut u = c1.clone();
            u[0] = 0xe0 | (u[0] & 0x1f);
            h.watch(&u);
            h.dgram("unroutable 0b111", h.client(4), &cid12(&u, b"x"));
        }
        eprintln!("{name}: {} cases agree", h.cases);
    }
}

#[test]
fn address_only_mode() {
    let mut cfg = router_config(4, None, MultiCidPolicy::First);
    cfg.route_by_cid = false;
    let Some(mut h) = Harness::new("address only", cfg, None, backends(3), false) else {
        return;
    };
    let a = h.client(1);
    let v = h.dgram("garbage, by address", a, &[0x99, 1, 2]);
    let b = backend_of(v);
    h.expect(
        "a CID, by address",
        a,
        &cid12(&[1, 2, 3, 4], b"x"),
        fwd(b, RouteOutcome::Flow),
    );
    h.expect("empty", a, &[], Verdict::Drop(DropReason::Empty));
}

#[test]
fn maglev_agrees_with_the_router_over_many_addresses_and_cids() {
    // Hundreds of new flows and unknown CIDs of every length 1..=32: each lands where
    // the Router's Maglev (xxh3 with the listener's seed, over the CID or the address)
    // sends it, so XDP and NAT instances agree. A self-describing QUIC-LB configuration
    // gives one listener CIDs of every length (the first octet says it); server ID 0x77
    // is no backend's, so each falls through to Maglev on the CID.
    let f = XdpCidFormat::quic_lb(vec![quic_lb(0, 1, 4, None, true)], vec![]).unwrap();
    let cfg = router_config(8, Some(&f), MultiCidPolicy::First);
    let Some(mut h) = Harness::new("maglev", cfg, Some(f), backends(5), false) else {
        return;
    };
    for i in 0..256u16 {
        let c = SocketAddr::new(
            std::net::IpAddr::from([203, 0, (i >> 8) as u8, i as u8]),
            1000 + i,
        );
        h.frame("new address", c, &hello(), &Framing::default(), Want::Core);
        let n = 1 + usize::from(i % 32);
        let mut cid: Vec<u8> = (0..n)
            .map(|j| (i as u8).wrapping_mul(31) ^ j as u8)
            .collect();
        cid[0] = (n - 1) as u8;
        if n > 1 {
            cid[1] = 0x77;
        }
        let d = SocketAddr::new(
            std::net::IpAddr::from([198, 18, (i >> 8) as u8, i as u8]),
            2000 + i,
        );
        let v = h.frame(
            "unknown CID",
            d,
            &cid12(&cid, b"x"),
            &Framing::default(),
            Want::Core,
        );
        assert!(
            matches!(
                v,
                Some(Verdict::Forward {
                    outcome: RouteOutcome::UnknownCid,
                    ..
                })
            ),
            "{v:?}"
        );
        h.clients.clear();
    }
}

#[test]
fn the_plane_runs_the_slow_path_by_itself() {
    use cidlb_core::plane::DataPlane;
    let q = quic_lb(2, 1, 15, Some([0x3c; 16]), false);
    let f = XdpCidFormat::quic_lb(vec![q.clone()], vec![]).unwrap();
    let cfg = router_config(17, Some(&f), MultiCidPolicy::First);
    let plane = match cidlb_xdp::XdpPlane::start(vec![listener_config(
        vip(false),
        cfg,
        Some(f),
        backends(3),
    )]) {
        Ok(p) => p,
        Err(e) if skip_on("plane", &e) => return,
        Err(e) => panic!("{e}"),
    };
    let l = &plane.xdp_listeners()[0];
    assert_eq!(plane.listeners().len(), 1);
    let c = q.encode(&[0x11], &[5; 15], 0).unwrap();
    let mut d = Vec::new();
    build::cid12(1, 1, &c, b"x", &mut d);
    let fr = frame(
        "192.0.2.9:4444".parse().unwrap(),
        vip(false),
        &d,
        &Framing::default(),
    );
    assert_eq!(
        l.test_run(&fr).unwrap().action,
        XDP_DROP,
        "first datagram: punted (queued with its frame)"
    );
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let out = l.test_run(&fr).unwrap();
        if out.action == XDP_TX {
            assert_eq!(out.frame[..6], backend_mac(1));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow path never decoded the CID"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The plane counts its tables by itself too: the frame's flow shows in a snapshot
    // that does not walk (`/tables`, the metrics) within a counting period or two.
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let t = plane.listeners()[0].snapshot(false).tables;
        if t.flows >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the plane never counted its tables: {t:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    plane.shutdown();
}

#[test]
fn the_loaders_address_tag_is_the_programs() {
    // fill() stores each binding's tag as the program computes it (so that benchmarks
    // start from the steady state: a datagram from the same address skips the flow).
    let cfg = router_config(8, None, MultiCidPolicy::First);
    let secret = cfg.secret[1];
    let Some(x) = load_or_skip("tag", listener_config(vip(false), cfg, None, backends(2))) else {
        return;
    };
    for (i, c) in ["192.0.2.1:1", "192.0.2.200:65535", "[2001:db8::7]:5684"]
        .iter()
        .enumerate()
    {
        let c: SocketAddr = c.parse().unwrap();
        let v6 = c.is_ipv6();
        let x6;
        let x = if v6 {
            let cfg = router_config(8, None, MultiCidPolicy::First);
            x6 =
                load_or_skip("tag v6", listener_config(vip(true), cfg, None, backends(2))).unwrap();
            &x6
        } else {
            &x
        };
        let cid = [0x40, i as u8, 1, 2, 3, 4, 5, 6];
        x.learn_binding(&cid, BackendId(1)).unwrap();
        let mut d = Vec::new();
        build::cid12(1, 1, &cid, b"x", &mut d);
        assert_eq!(
            x.test_run(&frame(c, vip(v6), &d, &Framing::default()))
                .unwrap()
                .action,
            XDP_TX
        );
        let b = x.binding_entry(&cid).unwrap();
        assert_eq!(
            b.addr_tag,
            cidlb_xdp::abi::FlowKey::from(c).tag(secret),
            "{c}"
        );
    }
}

#[test]
fn a_reload_changes_the_cid_format() {
    // QUIC-LB rotation 0 plaintext; a reload adds rotation 1 (encrypted), then changes
    // rotation 1's key: the program decodes by the new tables at once, and the cached
    // decodings of a changed rotation are dropped (decoded again by the slow path).
    let r0 = quic_lb(0, 1, 7, None, false);
    let r1 = quic_lb(1, 1, 15, Some([0x41; 16]), false);
    let r1b = quic_lb(1, 1, 15, Some([0x42; 16]), false);
    let f0 = XdpCidFormat::quic_lb(vec![r0.clone()], vec![]).unwrap();
    let cfg = router_config(9, Some(&f0), MultiCidPolicy::First);
    // (An encrypted rotation may come later: the cache must exist from the start.)
    let f01 = XdpCidFormat::quic_lb(vec![r0.clone(), r1.clone()], vec![]).unwrap();
    let Some(x) = load_or_skip(
        "format reload",
        listener_config(vip(false), cfg.clone(), Some(f01.clone()), backends(3)),
    ) else {
        return;
    };
    let reload = |f: &XdpCidFormat| {
        let mut c = cfg.clone();
        c.cid = f.cid_routing(Some(9));
        let prepared = cidlb_core::Router::prepare_backends(&c, backends(3)).unwrap();
        x.reconfigure(c, prepared);
    };
    reload(&f0);
    let client: SocketAddr = "192.0.2.7:4000".parse().unwrap();
    let run = |cid: &[u8]| {
        let mut d = Vec::new();
        build::cid12(1, 1, cid, b"x", &mut d);
        x.test_run(&frame(client, vip(false), &d, &Framing::default()))
            .unwrap()
    };
    // Rotation 1 is unknown under f0 (its CIDs are not even 17 octets long there).
    let c1 = r1.encode(&[0x12], &[9; 15], 0).unwrap();
    let punted = |x: &XdpListener| stat(x, "punted_encrypted_cids");
    assert_ne!(run(&c1).action, XDP_TX);
    assert_eq!(punted(&x), 0, "rotation 1 is not configured: not punted");
    // Reload with rotation 1: its CIDs are punted, decoded, then routed to their backend.
    reload(&f01);
    assert_eq!(run(&c1).action, XDP_DROP, "punted");
    assert_eq!(punted(&x), 1);
    x.service_punts();
    let out = run(&c1);
    assert_eq!(out.action, XDP_TX);
    assert_eq!(out.frame[..6], backend_mac(2), "server ID 0x12 is b2");
    // A reload that changes nothing keeps the cache.
    reload(&f01);
    assert_eq!(run(&c1).action, XDP_TX, "still cached");
    assert_eq!(punted(&x), 1);
    // Rotation 1's key changes: its cached decoding is dropped; the CID (made with the
    // old key) is punted again and now decodes to something else.
    let f01b = XdpCidFormat::quic_lb(vec![r0.clone(), r1b], vec![]).unwrap();
    reload(&f01b);
    assert_eq!(run(&c1).action, XDP_DROP, "punted again");
    assert_eq!(punted(&x), 2);
    // Rotation 0 (plaintext) routed by the program throughout.
    let c0 = r0.encode(&[0x11], &[3; 7], 0).unwrap();
    let out = run(&c0);
    assert_eq!(out.action, XDP_TX);
    assert_eq!(out.frame[..6], backend_mac(1), "server ID 0x11 is b1");
}
