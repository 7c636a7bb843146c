//! Fuzz-style properties of the XDP program, through `BPF_PROG_TEST_RUN`.
//!
//! The verifier proves memory safety; these prove behaviour on random and mutated
//! frames: the program always returns a verdict (drop, pass, or tx), never touches a
//! byte outside the two MAC fields it owns (and only on tx, to a backend's MAC), and on
//! well-formed frames to the listener it routes each datagram of a random sequence as a
//! cidlb-core Router fed the same sequence does.

mod support;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Instant;

use cidlb_core::plane::ListenerPlane;
use cidlb_core::{MultiCidPolicy, Router, Verdict};
use cidlb_wire::build;
use cidlb_wire::ContentType;
use cidlb_xdp::{XdpListener, XDP_DROP, XDP_PASS, XDP_TX};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::*;

const BACKENDS: u16 = 4;

fn check_frame(x: &XdpListener, input: &[u8]) -> (u32, Vec<u8>) {
    let out = x.test_run(input).expect("BPF_PROG_TEST_RUN");
    assert!(
        matches!(out.action, XDP_DROP | XDP_PASS | XDP_TX),
        "verdict {}",
        out.action
    );
    assert_eq!(out.frame.len(), input.len(), "frame length");
    if input.len() >= 12 {
        assert_eq!(out.frame[12..], input[12..], "bytes after the MACs");
    }
    if out.action == XDP_TX {
        assert!(
            (0..BACKENDS).any(|i| out.frame[..6] == backend_mac(i)),
            "dst MAC {:02x?} is no backend's",
            &out.frame[..6]
        );
        assert_eq!(out.frame[6..12], LB_MAC, "src MAC");
    } else {
        assert_eq!(out.frame, input, "a frame not sent is untouched");
    }
    (out.action, out.frame)
}

/// One DTLS-ish record: valid shapes with random fields, CIDs from a small pool so
/// that bindings and mixed CIDs occur.
fn record() -> impl Strategy<Value = Vec<u8>> {
    let cid = prop_oneof![
        Just(vec![1u8, 2, 3, 4]),
        Just(vec![9u8, 9, 9, 9]),
        Just(vec![0xc1, 0xff, 0x01, 0x26]),
        proptest::collection::vec(any::<u8>(), 4),
    ];
    let payload = proptest::collection::vec(any::<u8>(), 0..24);
    prop_oneof![
        (cid.clone(), payload.clone()).prop_map(|(c, p)| {
            let mut d = Vec::new();
            build::cid12(1, 3, &c, &p, &mut d);
            d
        }),
        (cid, payload.clone(), any::<bool>(), any::<u16>()).prop_map(|(c, p, l, s)| {
            let mut d = Vec::new();
            build::unified(Some(&c), 1, s, l, &p, &mut d);
            d
        }),
        (20u8..=27, payload.clone()).prop_map(|(t, p)| {
            let mut d = Vec::new();
            build::plaintext(ContentType(t), 0, 1, &p, &mut d);
            d
        }),
        Just(build::client_hello_datagram([3; 32], &[], None)),
        proptest::collection::vec(any::<u8>(), 0..16),
    ]
}

/// A datagram: a few records, maybe cut short or with a byte flipped.
fn datagram() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(record(), 1..5),
        proptest::option::of(any::<prop::sample::Index>()),
        proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
    )
        .prop_map(|(recs, cut, flip)| {
            let mut d = recs.concat();
            if let Some(c) = cut {
                if !d.is_empty() {
                    d.truncate(c.index(d.len()));
                }
            }
            if let Some((i, b)) = flip {
                if !d.is_empty() {
                    let i = i.index(d.len());
                    d[i] ^= b;
                }
            }
            d
        })
}

fn client() -> impl Strategy<Value = (bool, u8, u16)> {
    (
        any::<bool>(),
        1u8..6,
        prop_oneof![Just(40000u16), Just(40001), any::<u16>()],
    )
}

fn addr(v6: bool, host: u8, port: u16) -> SocketAddr {
    if v6 {
        SocketAddr::new(
            std::net::IpAddr::from([
                0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, host,
            ]),
            port,
        )
    } else {
        SocketAddr::new(std::net::IpAddr::from([192, 0, 2, host]), port)
    }
}

#[test]
fn random_bytes_always_get_a_verdict_and_only_macs_change() {
    let cfg = listener_config(
        vip(false),
        router_config(4, None, MultiCidPolicy::First),
        None,
        backends(BACKENDS),
    );
    let Some(x) = load_or_skip("random bytes", cfg) else {
        return;
    };
    let mut runner = TestRunner::new(Config {
        cases: 3000,
        ..Config::default()
    });
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..300), |f| {
            // The kernel wants at least an Ethernet header for XDP test runs.
            if f.len() >= 14 {
                check_frame(&x, &f);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_frames_always_get_a_verdict_and_only_macs_change() {
    for v6 in [false, true] {
        let cfg = listener_config(
            vip(v6),
            router_config(4, None, MultiCidPolicy::First),
            None,
            backends(BACKENDS),
        );
        let Some(x) = load_or_skip("mutated frames", cfg) else {
            return;
        };
        let mut runner = TestRunner::new(Config {
            cases: 2000,
            ..Config::default()
        });
        let strategy = (
            datagram(),
            client(),
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            any::<bool>(),
            0usize..40,
        );
        runner
            .run(&strategy, |(d, (_, host, port), flips, vlan, pad)| {
                let framing = Framing {
                    vlan: vlan.then_some(7),
                    padding: pad,
                    ..Framing::default()
                };
                let mut f = frame(addr(v6, host, port), vip(v6), &d, &framing);
                for (i, b) in flips {
                    let i = i.index(f.len());
                    f[i] ^= b;
                }
                check_frame(&x, &f);
                Ok(())
            })
            .unwrap();
    }
}

#[test]
fn random_datagram_sequences_route_as_the_core_does() {
    for policy in [MultiCidPolicy::First, MultiCidPolicy::Drop] {
        let cfg = router_config(4, None, policy);
        let t0 = Instant::now();
        let mut router = Router::new(cfg.clone(), t0);
        router.set_backends(backends(BACKENDS)).unwrap();
        let Some(x) = load_or_skip(
            "sequences",
            listener_config(vip(false), cfg, None, backends(BACKENDS)),
        ) else {
            return;
        };
        let router = RefCell::new(router);
        let mut runner = TestRunner::new(Config {
            cases: 1500,
            ..Config::default()
        });
        let strategy = (
            datagram(),
            client(),
            proptest::option::weighted(0.05, 0u16..BACKENDS),
        );
        runner
            .run(&strategy, |(d, (_, host, port), flip_state)| {
                let mut r = router.borrow_mut();
                if let Some(id) = flip_state {
                    // Now and then a backend goes down or comes back.
                    let id = cidlb_core::BackendId(id);
                    let state = match r.backend(id).map(|b| b.state) {
                        Some(cidlb_core::BackendState::Up) => cidlb_core::BackendState::Down,
                        _ => cidlb_core::BackendState::Up,
                    };
                    r.set_backend_state(id, state);
                    x.set_backend_state(id, state);
                }
                let c = addr(false, host, port);
                let f = frame(c, vip(false), &d, &Framing::default());
                let (action, out) = check_frame(&x, &f);
                if action == XDP_PASS {
                    // More records than the program walks: nothing was changed.
                    return Ok(());
                }
                let v = r.route(t0, c, &d);
                match v {
                    Verdict::Forward { backend, .. } => {
                        prop_assert_eq!(action, XDP_TX, "{:?} for {:02x?}", v, d);
                        prop_assert_eq!(&out[..6], &backend_mac(backend.0)[..]);
                    }
                    _ => prop_assert_eq!(action, XDP_DROP, "{:?} for {:02x?}", v, d),
                }
                let xs = x.snapshot(false).counters;
                prop_assert_eq!(&xs, r.counters(), "counters after {:02x?}", d);
                Ok(())
            })
            .unwrap();
    }
}
