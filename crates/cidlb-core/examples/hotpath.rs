//! Routes N CID datagrams of known sessions (and N replies) through a `Router`, for
//! instruction counting under callgrind (`bench/callgrind.sh`): the difference between
//! two runs with different N, divided by the difference in N, is the cost of one
//! datagram with setup cancelled out.
//!
//! `cargo run --release -p cidlb-core --example hotpath -- N`

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use cidlb_core::{Backend, BackendId, CidRouting, Router, RouterConfig};
use cidlb_wire::build;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let now = Instant::now();
    let mut r = Router::new(RouterConfig::new(CidRouting::fixed(8), [1, 2, 3, 4]), now);
    r.set_backends(
        (0..4)
            .map(|i| {
                Backend::new(
                    i,
                    format!("b{i}"),
                    SocketAddr::from(([127, 0, 0, 1], 7000 + i)),
                )
            })
            .collect(),
    )
    .expect("valid backends");
    const SESSIONS: usize = 1024;
    let mut datagrams = Vec::with_capacity(SESSIONS);
    let mut reply = Vec::new();
    build::cid12(1, 9, &[7; 8], &[0; 64], &mut reply);
    for i in 0..SESSIONS {
        let client = SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 40_000));
        let cid = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes();
        r.handle_backend_datagram(
            now,
            BackendId((i % 4) as u16),
            client,
            &build::server_hello_datagram([0; 32], Some(&cid)),
        );
        let mut d = Vec::new();
        build::cid12(1, 1, &cid, &[0; 64], &mut d);
        r.route(now, client, &d);
        datagrams.push((client, d));
    }
    for k in 0..n {
        let (client, d) = &datagrams[k % SESSIONS];
        black_box(r.route(now, *client, d));
        black_box(r.handle_backend_datagram(now, BackendId((k % 4) as u16), *client, &reply));
    }
}
