//! Parse + route cost per client datagram whose CID is routable (encoded), with real
//! formats (server-ID prefix, QUIC-LB four-pass and single-pass AES), 8 backends, 4096
//! sessions from known client addresses: once with no learned binding (the stateless
//! path: a balancer that never saw the ServerHello, e.g. after a restart or in direct
//! routing), once with a learned binding for every CID (a balancer that saw the
//! handshakes), and once with no binding for the measured CIDs but 100k learned
//! bindings of other sessions in the table (a balancer that restarted and has learned
//! new sessions since). Prints figures; asserts nothing.
//!
//! `cargo bench -p cidlb-cidformat --bench encoded`

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cidlb_cidformat::{CidGenerator, FormatSet, PrefixFormat, QuicLbConfig, QuicLbParams};
use cidlb_core::{Backend, BackendId, CidRouting, Router, RouterConfig, ServerId, Verdict};
use cidlb_wire::build;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SESSIONS: u32 = 4096;

fn client(i: u32) -> SocketAddr {
    SocketAddr::from((
        [100, 64, (i >> 8) as u8, i as u8],
        10_000 + (i % 1000) as u16,
    ))
}

fn quic_lb(key: Option<[u8; 16]>, nonce_len: usize) -> QuicLbConfig {
    QuicLbConfig::new(QuicLbParams {
        rotation: 0,
        server_id_len: 1,
        nonce_len,
        key,
        self_describing_length: false,
    })
    .expect("a valid QUIC-LB configuration")
}

/// How the measured sessions' CIDs stand in the router.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bindings {
    /// No binding at all.
    None,
    /// No binding for the measured CIDs, 100k for other sessions.
    Others,
    /// A learned binding for each.
    Learned,
}

/// A router over `set` with 8 backends (server IDs 01..08), and one generator each.
fn setup(
    set: FormatSet,
    cid_len: usize,
    bindings: Bindings,
    now: Instant,
) -> (Router, Vec<(SocketAddr, Vec<u8>)>) {
    let set = Arc::new(set);
    let mut cfg = RouterConfig::new(
        CidRouting {
            fixed_len: Some(cid_len),
            format: Some(set.clone()),
        },
        [1, 2, 3, 4],
    );
    cfg.binding_idle = Duration::from_secs(24 * 3600);
    let mut r = Router::new(cfg, now);
    r.set_backends(
        (0..8u16)
            .map(|i| {
                let mut b = Backend::new(
                    i,
                    format!("b{i}"),
                    SocketAddr::from(([127, 0, 0, 1], 5000 + i)),
                );
                b.server_id = ServerId::new(&[i as u8 + 1]);
                b
            })
            .collect(),
    )
    .expect("a valid backend set");
    let mut gens: Vec<CidGenerator> = (0..8u8)
        .map(|i| {
            let (rotation, len) = match set.prefix_format() {
                Some(_) => (None, Some(cid_len)),
                None => (Some(0), None),
            };
            CidGenerator::for_set(&set, rotation, &[i + 1], len).expect("a generator")
        })
        .collect();
    if bindings == Bindings::Others {
        for i in 0..100_000u32 {
            let b = (i % 8) as usize;
            let cid = gens[b].next_cid().expect("a CID");
            let sh = build::server_hello_datagram([0; 32], Some(cid.as_bytes()));
            let other = SocketAddr::from(([198, 18, (i >> 8) as u8, i as u8], 20_000));
            r.handle_backend_datagram(now, BackendId(b as u16), other, &sh);
        }
    }
    let mut inputs = Vec::new();
    for i in 0..SESSIONS {
        let b = (i % 8) as usize;
        let cid = gens[b].next_cid().expect("a CID");
        if bindings == Bindings::Learned {
            let sh = build::server_hello_datagram([0; 32], Some(cid.as_bytes()));
            r.handle_backend_datagram(now, BackendId(b as u16), client(i), &sh);
        }
        let mut d = Vec::new();
        build::cid12(1, 1, cid.as_bytes(), &[0; 48], &mut d);
        // The client's address has been seen: its flow exists, as in steady state.
        let v = r.route(now, client(i), &d);
        assert!(matches!(v, Verdict::Forward { backend, .. } if backend == BackendId(b as u16)));
        inputs.push((client(i), d));
    }
    (r, inputs)
}

/// Builds a format set from a key.
type MakeSet = fn([u8; 16]) -> FormatSet;

fn bench_encoded(c: &mut Criterion) {
    let now = Instant::now();
    let key = [
        0x8f, 0x95, 0xf0, 0x92, 0x45, 0x76, 0x5f, 0x80, 0x25, 0x69, 0x34, 0xe5, 0x0c, 0x66, 0x20,
        0x7f,
    ];
    // (name, CID length, format): QUIC-LB CIDs are the first octet, the server ID and
    // the nonce; single-pass AES needs server ID + nonce = 16 octets.
    let formats: [(&str, usize, MakeSet); 3] = [
        ("prefix", 8, |_| {
            FormatSet::prefix(PrefixFormat::new(1).expect("a prefix format"))
        }),
        ("quic_lb_four_pass", 8, |k| {
            FormatSet::quic_lb(vec![quic_lb(Some(k), 6)]).expect("a set")
        }),
        ("quic_lb_single_pass", 17, |k| {
            FormatSet::quic_lb(vec![quic_lb(Some(k), 15)]).expect("a set")
        }),
    ];
    let mut g = c.benchmark_group("route_encoded_cid");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));
    for (name, cid_len, make) in formats {
        for bindings in [Bindings::None, Bindings::Others, Bindings::Learned] {
            let (mut r, inputs) = setup(make(key), cid_len, bindings, now);
            let mut k = 0usize;
            let id = format!(
                "{name}/{}",
                match bindings {
                    Bindings::None => "no_binding",
                    Bindings::Others => "no_binding_100k_others",
                    Bindings::Learned => "learned",
                }
            );
            g.bench_function(id, |b| {
                b.iter(|| {
                    let (a, d) = &inputs[k % inputs.len()];
                    k += 1;
                    black_box(r.route(now, *a, d))
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench_encoded);
criterion_main!(benches);
