//! Parse + route cost per client datagram with 1k, 100k and 1M CID bindings (and as
//! many flows), one at a time and in batches of 32 with and without `Router::warm`,
//! and the tables' bytes per entry. Prints figures; asserts nothing.
//!
//! `cargo bench -p cidlb-core --bench route`

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cidlb_core::{Backend, BackendId, CidRouting, Router, RouterConfig};
use cidlb_wire::build;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const CID_LEN: usize = 8;

fn client(i: u32) -> SocketAddr {
    SocketAddr::from((
        [100, 64 + (i >> 24) as u8, (i >> 16) as u8, (i >> 8) as u8],
        (i & 0xff) as u16 + 10_000,
    ))
}

fn cid(i: u32) -> [u8; CID_LEN] {
    let x = (u64::from(i)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x.to_be_bytes()
}

fn setup(n: u32, now: Instant) -> Router {
    let mut cfg = RouterConfig::new(CidRouting::fixed(CID_LEN), [1, 2, 3, 4]);
    cfg.max_bindings = 2 << 20;
    cfg.max_flows = 2 << 20;
    cfg.binding_idle = Duration::from_secs(24 * 3600);
    let mut r = Router::new(cfg, now);
    r.set_backends(
        (0..8)
            .map(|i| {
                Backend::new(
                    i,
                    format!("b{i}"),
                    SocketAddr::from(([127, 0, 0, 1], 5000 + i)),
                )
            })
            .collect(),
    )
    .unwrap();
    for i in 0..n {
        let sh = build::server_hello_datagram([0; 32], Some(&cid(i)));
        r.handle_backend_datagram(now, BackendId((i % 8) as u16), client(i), &sh);
        let mut d = Vec::new();
        build::cid12(1, 1, &cid(i), &[0; 48], &mut d);
        r.route(now, client(i), &d);
    }
    r
}

fn bench_route(c: &mut Criterion) {
    let now = Instant::now();
    let mut g = c.benchmark_group("route_cid_datagram");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(4));
    for n in [1_000u32, 100_000, 1_000_000] {
        let mut r = setup(n, now);
        let (fb, bb) = r.table_bytes();
        eprintln!(
            "{n} bindings: {:.1} bytes/binding, {n} flows: {:.1} bytes/flow",
            bb as f64 / r.binding_count() as f64,
            fb as f64 / r.flow_count() as f64
        );
        // 4096 random existing sessions, each datagram a 48-byte CID record.
        let mut x = 0x1234_5678u32;
        let inputs: Vec<(SocketAddr, Vec<u8>)> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = x % n;
                let mut d = Vec::new();
                build::cid12(1, 2, &cid(i), &[0; 48], &mut d);
                (client(i), d)
            })
            .collect();
        let mut k = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let (a, d) = &inputs[k & 4095];
                k += 1;
                black_box(r.route(now, *a, d))
            })
        });
        // The data plane's way: batches of 32 received datagrams, routed one by one,
        // without and with `Router::warm` first (time per batch; thrpt per datagram).
        for warm in [false, true] {
            let mut k = 0usize;
            g.throughput(Throughput::Elements(32));
            let name = if warm { "batch32_warm" } else { "batch32" };
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    let batch = &inputs[k & 4095 & !31..][..32];
                    k += 32;
                    if warm {
                        r.warm(batch.iter().map(|(a, d)| (*a, d.as_slice())));
                    }
                    for (a, d) in batch {
                        black_box(r.route(now, *a, d));
                    }
                })
            });
            g.throughput(Throughput::Elements(1));
        }
        // Rebinding: the same sessions from addresses the balancer has not seen
        // (binding hit + flow insert).
        let mut j = 0u32;
        g.bench_with_input(BenchmarkId::new("rebound", n), &n, |b, _| {
            b.iter(|| {
                let (_, d) = &inputs[(j & 4095) as usize];
                j = j.wrapping_add(1);
                let a = SocketAddr::from(([203, 0, (j >> 8) as u8, j as u8], 1 + (j >> 16) as u16));
                black_box(r.route(now, a, d))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("parse_only");
    let mut d = Vec::new();
    build::plaintext(
        cidlb_wire::ContentType::HANDSHAKE,
        0,
        2,
        &[16, 0, 0, 1, 0],
        &mut d,
    );
    build::plaintext(
        cidlb_wire::ContentType::CHANGE_CIPHER_SPEC,
        0,
        3,
        &[1],
        &mut d,
    );
    build::cid12(1, 0, &cid(7), &[0; 40], &mut d);
    g.bench_function("cke_ccs_finished", |b| {
        b.iter(|| black_box(cidlb_wire::inspect(black_box(&d), CID_LEN)))
    });
    g.finish();
}

criterion_group!(benches, bench_route);
criterion_main!(benches);
