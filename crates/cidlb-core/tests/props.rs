//! Arbitrary event sequences against the router: no panic, tables within their bounds,
//! every client datagram gets exactly one outcome, split plans tile their datagram.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cidlb_core::{
    Backend, BackendId, BackendState, CidRouting, MultiCidPolicy, Router, RouterConfig, Verdict,
};
use cidlb_wire::build;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Ev {
    Client {
        from: u8,
        kind: Kind,
    },
    Backend {
        b: u8,
        to: u8,
        cid: [u8; 4],
        hello: bool,
    },
    Wait(u16),
    State(u8, u8),
    Sweep,
}

#[derive(Clone, Debug)]
enum Kind {
    Raw(Vec<u8>),
    Cid([u8; 4]),
    Mixed([u8; 4], [u8; 4]),
    Hello,
}

fn ev() -> impl Strategy<Value = Ev> {
    let kind = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Kind::Raw),
        any::<[u8; 4]>().prop_map(Kind::Cid),
        (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(a, b)| Kind::Mixed(a, b)),
        Just(Kind::Hello),
    ];
    prop_oneof![
        4 => (any::<u8>(), kind).prop_map(|(from, kind)| Ev::Client { from, kind }),
        2 => (0u8..4, any::<u8>(), any::<[u8; 4]>(), any::<bool>())
            .prop_map(|(b, to, cid, hello)| Ev::Backend { b, to, cid, hello }),
        1 => (0u16..4000).prop_map(Ev::Wait),
        1 => (0u8..4, 0u8..3).prop_map(|(b, s)| Ev::State(b, s)),
        1 => Just(Ev::Sweep),
    ]
}

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, i / 16, i % 16], 1000 + u16::from(i)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn router_invariants(events in proptest::collection::vec(ev(), 1..200), policy in 0u8..3) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut cfg = RouterConfig::new(CidRouting::fixed(4), [9, 8, 7, 6]);
        cfg.max_flows = 16;
        cfg.max_bindings = 8;
        cfg.maglev_table_size = 257;
        cfg.flow_idle = Duration::from_secs(300);
        cfg.binding_idle = Duration::from_secs(3600);
        cfg.multi_cid = [MultiCidPolicy::First, MultiCidPolicy::Split, MultiCidPolicy::Drop][policy as usize];
        let mut r = Router::new(cfg, t0);
        r.set_backends((0..4).map(|i| Backend::new(i, format!("b{i}"), addr(200 + i as u8))).collect()).unwrap();
        for e in events {
            match e {
                Ev::Client { from, kind } => {
                    let d = match kind {
                        Kind::Raw(d) => d,
                        Kind::Cid(c) => { let mut d = Vec::new(); build::cid12(1, 1, &c, b"x", &mut d); d }
                        Kind::Mixed(a, b) => {
                            let mut d = Vec::new();
                            build::cid12(1, 1, &a, b"x", &mut d);
                            build::plaintext(cidlb_wire::ContentType::ALERT, 0, 1, &[1, 0], &mut d);
                            build::cid12(1, 2, &b, b"y", &mut d);
                            d
                        }
                        Kind::Hello => build::client_hello_datagram([0; 32], &[], None),
                    };
                    let before = r.counters().total_routed() + r.counters().total_dropped();
                    let v = r.route(now, addr(from), &d);
                    let after = r.counters().total_routed() + r.counters().total_dropped();
                    prop_assert_eq!(after, before + 1, "exactly one outcome");
                    match v {
                        Verdict::Forward { backend, .. } => prop_assert!(r.backend(backend).is_some()),
                        Verdict::Split => {
                            let parts = r.split_parts();
                            prop_assert!(!parts.is_empty());
                            prop_assert_eq!(parts[0].start, 0);
                            prop_assert_eq!(parts[parts.len() - 1].end, d.len());
                            for w in parts.windows(2) {
                                prop_assert_eq!(w[0].end, w[1].start);
                            }
                        }
                        Verdict::Drop(_) => {}
                    }
                }
                Ev::Backend { b, to, cid, hello } => {
                    let d = if hello {
                        build::server_hello_datagram([0; 32], Some(&cid))
                    } else {
                        let mut d = Vec::new();
                        build::cid12(1, 1, &cid, b"r", &mut d);
                        d
                    };
                    r.handle_backend_datagram(now, BackendId(b.into()), addr(to), &d);
                }
                Ev::Wait(s) => now += Duration::from_secs(s.into()),
                Ev::State(b, s) => {
                    let s = [BackendState::Up, BackendState::Draining, BackendState::Down][s as usize];
                    r.set_backend_state(BackendId(b.into()), s);
                }
                Ev::Sweep => r.sweep(now, 8),
            }
            prop_assert!(r.flow_count() <= 16);
            prop_assert!(r.binding_count() <= 8);
        }
    }
}
