//! The maps at the size the brief asks for: 1,000,000 flows and 1,000,000 bindings,
//! sized from the listener's `max_flows` / `max_bindings`, filled, and still routing;
//! prints the kernel's memory per entry.

mod support;

use std::net::{IpAddr, SocketAddr};

use cidlb_core::plane::ListenerPlane;
use cidlb_core::{BackendId, CidRouting, MultiCidPolicy, RouteOutcome, RouterConfig};
use cidlb_xdp::XDP_TX;
use support::*;

const N: usize = 1_000_000;

fn cid(i: usize) -> Vec<u8> {
    (i as u64).to_be_bytes().to_vec()
}

fn client(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
        1024 + (i % 50000) as u16,
    )
}

#[test]
fn a_million_flows_and_a_million_bindings() {
    let mut cfg = RouterConfig::new(CidRouting::fixed(8), [1, 2, 3, 4]);
    cfg.multi_cid = MultiCidPolicy::First;
    cfg.max_flows = N;
    cfg.max_bindings = N;
    let Some(l) = load_or_skip(
        "capacity",
        listener_config(vip(false), cfg, None, backends(3)),
    ) else {
        return;
    };
    l.fill(N, cid, client, BackendId(2)).unwrap();
    let snap = l.snapshot(true);
    assert_eq!(snap.tables.max_flows, N);
    assert_eq!(snap.tables.max_bindings, N);
    // The kernel's LRU may have recycled a few entries on the way to full.
    assert!(snap.tables.flows >= N * 99 / 100, "{:?}", snap.tables);
    assert!(snap.tables.bindings >= N * 99 / 100, "{:?}", snap.tables);
    // Routing still works at the far end of the tables.
    let mut d = Vec::new();
    cidlb_wire::build::cid12(1, 1, &cid(N - 1), b"x", &mut d);
    let out = l
        .test_run(&frame(client(N - 1), vip(false), &d, &Framing::default()))
        .unwrap();
    assert_eq!(out.action, XDP_TX);
    assert_eq!(out.frame[..6], backend_mac(2));
    assert_eq!(l.snapshot(false).counters.routed(RouteOutcome::Seeded), 1);
    let [(fb, fcap), (bb, bcap)] = l.map_memory().unwrap();
    eprintln!(
        "flows: {fcap} entries, {fb} bytes ({} per entry); bindings: {bcap} entries, {bb} bytes ({} per entry)",
        fb / fcap,
        bb / bcap
    );
}
