//! The routing hot path (cidlb-core, used by this data plane) allocates nothing: routing datagrams of known sessions (and their
//! replies) performs zero heap allocations. Counted with a global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use cidlb_core::{Backend, BackendId, CidRouting, Router, RouterConfig, Verdict};
use cidlb_wire::build;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

#[test]
fn routing_known_sessions_does_not_allocate() {
    let now = Instant::now();
    let mut r = Router::new(RouterConfig::new(CidRouting::fixed(4), [5, 6, 7, 8]), now);
    r.set_backends(
        (0..3)
            .map(|i| {
                Backend::new(
                    i,
                    format!("b{i}"),
                    SocketAddr::from(([127, 0, 0, 1], 6000 + i)),
                )
            })
            .collect(),
    )
    .unwrap();
    let clients: Vec<SocketAddr> = (0..100u16)
        .map(|i| SocketAddr::from(([10, 0, 0, 1], 1000 + i)))
        .collect();
    let mut datagrams = Vec::new();
    let mut replies = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let cid = [0xc0, 0, 0, i as u8];
        r.handle_backend_datagram(
            now,
            BackendId((i % 3) as u16),
            *c,
            &build::server_hello_datagram([0; 32], Some(&cid)),
        );
        let mut d = Vec::new();
        build::cid12(1, 1, &cid, &[0; 64], &mut d);
        // First datagram of each session: creates its flow (allocation allowed here).
        assert!(matches!(r.route(now, *c, &d), Verdict::Forward { .. }));
        datagrams.push(d);
        let mut rep = Vec::new();
        build::cid12(1, 1, &[9, 9], &[0; 64], &mut rep);
        replies.push(rep);
    }
    let before = ALLOCS.load(Relaxed);
    for round in 0..100 {
        for (i, c) in clients.iter().enumerate() {
            let v = r.route(now, *c, &datagrams[i]);
            assert!(matches!(v, Verdict::Forward { .. }), "round {round}");
            r.handle_backend_datagram(now, BackendId((i % 3) as u16), *c, &replies[i]);
        }
    }
    let after = ALLOCS.load(Relaxed);
    assert_eq!(after - before, 0, "allocations on the hot path");
}
