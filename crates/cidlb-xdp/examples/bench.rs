//! Nanoseconds per packet of the XDP program, through `BPF_PROG_TEST_RUN` (the
//! kernel's own clock around `repeat` runs of one frame), with 1k and 1M entries in the
//! flow and binding tables. Prints a table; asserts nothing about time.
//!
//! ```text
//! cargo run --release -p cidlb-xdp --example bench        # needs root (BPF)
//! CIDLB_XDP_BENCH_SIZES=1000 cargo run --release -p cidlb-xdp --example bench
//! ```
//!
//! A case that changes the tables when it runs (the first datagram of a new address
//! creates a flow) is measured over distinct frames, one run each, so it includes the
//! kernel's per-run overhead; every other case repeats one frame.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use cidlb_cidformat::{PrefixFormat, QuicLbConfig, QuicLbParams};
use cidlb_core::{Backend, BackendId, CidRouting, MultiCidPolicy, RouterConfig, ServerId};
use cidlb_wire::build;
use cidlb_xdp::{XdpCidFormat, XdpListener, XdpListenerConfig, XDP_DROP, XDP_TX};

const VIP: [u8; 4] = [198, 51, 100, 10];
const PORT: u16 = 5684;
const REPEAT: u32 = 1_000_000;

fn frame(client: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let IpAddr::V4(src) = client.ip() else {
        unreachable!()
    };
    let mut f = vec![2, 0, 0, 0, 0, 0xfe, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = (20 + 8 + payload.len()) as u16;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&VIP);
    f.extend_from_slice(&client.port().to_be_bytes());
    f.extend_from_slice(&PORT.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

fn client(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
        1024 + (i % 50000) as u16,
    )
}

fn cid_of(i: usize) -> Vec<u8> {
    // Eight octets, first octet 0x30..0x3f (no server ID of the formats below).
    let mut c = vec![0x30 | (i as u8 & 0x0f)];
    c.extend_from_slice(&(i as u64).to_be_bytes()[1..]);
    c
}

fn cid12(cid: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::new();
    build::cid12(1, 9, cid, payload, &mut d);
    d
}

fn quic_lb(rotation: u8, nonce: usize, key: Option<[u8; 16]>) -> QuicLbConfig {
    QuicLbConfig::new(QuicLbParams {
        rotation,
        server_id_len: 1,
        nonce_len: nonce,
        key,
        self_describing_length: false,
    })
    .unwrap()
}

struct Setup {
    l: XdpListener,
}

fn listener(n: usize, format: Option<XdpCidFormat>, cid_len: usize) -> Setup {
    let routing = match &format {
        Some(f) => f.cid_routing(Some(cid_len)),
        None => CidRouting::fixed(cid_len),
    };
    let mut cfg = RouterConfig::new(routing, [1, 2, 3, 4]);
    cfg.multi_cid = MultiCidPolicy::First;
    cfg.max_flows = n.max(1024);
    cfg.max_bindings = n.max(1024);
    let backends: Vec<Backend> = (0..4u16)
        .map(|i| {
            let mut b = Backend::new(
                i,
                format!("b{i}"),
                SocketAddr::new(IpAddr::from([10, 9, 0, i as u8 + 1]), PORT),
            );
            b.server_id = ServerId::new(&[0x10 + i as u8]);
            b
        })
        .collect();
    let macs = backends
        .iter()
        .map(|b| (b.addr.ip(), [2, 0xbe, 0, 0, 0, b.id.0 as u8]))
        .collect();
    let l = XdpListener::new(XdpListenerConfig {
        name: "bench".into(),
        addr: SocketAddr::new(IpAddr::from(VIP), PORT),
        router: cfg,
        format,
        backends,
        backend_macs: macs,
        backend_ports: Vec::new(),
        src_mac: [2, 0, 0, 0, 0, 0xfe],
        attach: None,
    })
    .unwrap_or_else(|e| {
        eprintln!("cannot load the XDP program (run as root): {e}");
        std::process::exit(1)
    });
    let t = Instant::now();
    l.fill(n, cid_of, client, BackendId(1)).unwrap();
    if n >= 100_000 {
        eprintln!("filled {n} bindings and {n} flows in {:?}", t.elapsed());
    }
    Setup { l }
}

/// Median over 3 rounds of `REPEAT` runs, ns per run; checks the action first.
/// Punt runs: fewer than the `punts` ring buffer holds (658 records).
const PUNT_RUN: u32 = 500;

fn ns(s: &Setup, f: &[u8], want: u32) -> f64 {
    let out = s.l.test_run(f).unwrap();
    assert_eq!(out.action, want, "unexpected action");
    let mut v: Vec<f64> = (0..3)
        .map(|_| s.l.bench_run(f, REPEAT).unwrap().as_nanos() as f64)
        .collect();
    v.sort_by(f64::total_cmp);
    v[1]
}

/// Distinct frames, one run each (cases that change the tables).
fn ns_each(s: &Setup, frames: impl Iterator<Item = Vec<u8>>) -> f64 {
    let mut total = Duration::ZERO;
    let mut k = 0;
    for f in frames {
        total += s.l.bench_run(&f, 1).unwrap();
        k += 1;
    }
    total.as_nanos() as f64 / k as f64
}

fn main() {
    let sizes: Vec<usize> = std::env::var("CIDLB_XDP_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 1_000_000]);
    let mut rows: Vec<(String, Vec<f64>)> = Vec::new();
    let mut put = |name: &str, col: usize, v: f64| {
        if let Some(r) = rows.iter_mut().find(|r| r.0 == name) {
            r.1[col] = v;
        } else {
            let mut vals = vec![f64::NAN; 8];
            vals[col] = v;
            rows.push((name.to_string(), vals));
        }
    };
    let mut memory = Vec::new();
    for (col, &n) in sizes.iter().enumerate() {
        let s = listener(n, None, 8);
        let mid = n / 2;
        let known = client(mid);
        // A CID hit: a seeded binding, used again from the same address.
        put(
            "CID hit (binding, same address)",
            col,
            ns(
                &s,
                &frame(known, &cid12(&cid_of(mid), b"0123456789abcdef")),
                XDP_TX,
            ),
        );
        // A binding miss on a known flow that has seeded its share: routed by the flow.
        put(
            "CID miss (unknown CID, known flow)",
            col,
            ns(
                &s,
                &frame(known, &cid12(&[0x99; 8], b"0123456789abcdef")),
                XDP_TX,
            ),
        );
        put(
            "handshake, no CID (known flow)",
            col,
            ns(
                &s,
                &frame(known, &build::client_hello_datagram([5; 32], &[], None)),
                XDP_TX,
            ),
        );
        // The Mbed TLS 1.2 flight shape: CKE + CCS + Finished, the CID in record 3.
        let mut three = Vec::new();
        build::plaintext(
            cidlb_wire::ContentType::HANDSHAKE,
            0,
            2,
            &[16; 40],
            &mut three,
        );
        build::plaintext(
            cidlb_wire::ContentType::CHANGE_CIPHER_SPEC,
            0,
            3,
            &[1],
            &mut three,
        );
        three.extend(cid12(&cid_of(mid), &[0xee; 40]));
        put(
            "three records, CID in the third (hit)",
            col,
            ns(&s, &frame(known, &three), XDP_TX),
        );
        // The same hit over distinct CIDs spread over the table (cache misses at 1M),
        // and what a run costs the kernel's harness by itself (a frame for another port,
        // passed at once): subtract it from the starred rows.
        put(
            "per-run overhead: a frame for another port, passed*",
            col,
            ns_each(
                &s,
                (0..2000).map(|i| {
                    let mut f = frame(client(i), b"x");
                    f[36] = 0x99;
                    f
                }),
            ),
        );
        let spread = |i: usize| (i * 7919) % n;
        put(
            "CID hit, 2000 distinct CIDs across the table*",
            col,
            ns_each(
                &s,
                (0..2000).map(|i| {
                    frame(
                        client(spread(i)),
                        &cid12(&cid_of(spread(i)), b"0123456789abcdef"),
                    )
                }),
            ),
        );
        // The same kind of hit, from another known address than the binding's last:
        // the binding and the sender's flow are both read.
        put(
            "CID hit from another known address, 2000 distinct*",
            col,
            ns_each(
                &s,
                (2000..4000).map(|i| {
                    frame(
                        client(spread(i) ^ 1),
                        &cid12(&cid_of(spread(i)), b"0123456789abcdef"),
                    )
                }),
            ),
        );
        let base = 5_000_000;
        put(
            "new address, no CID (Maglev, flow created)*",
            col,
            ns_each(
                &s,
                (0..2000).map(|i| {
                    frame(
                        client(base + i),
                        &build::client_hello_datagram([5; 32], &[], None),
                    )
                }),
            ),
        );
        put(
            "new address, unknown CID (Maglev on the CID)*",
            col,
            ns_each(
                &s,
                (0..2000)
                    .map(|i| frame(client(base + 10_000 + i), &cid12(&cid_of(base + i), b"x"))),
            ),
        );
        memory.push((n, s.l.map_memory().unwrap()));
        drop(s);

        // Encoded CIDs: each from a known flow (an encoded CID checks the flow).
        let prefix = listener(n, Some(XdpCidFormat::prefix(PrefixFormat::CALIFORNIUM)), 8);
        let c = [0x12, 1, 2, 3, 4, 5, 6, 7];
        put(
            "encoded: prefix",
            col,
            ns(
                &prefix,
                &frame(known, &cid12(&c, b"0123456789abcdef")),
                XDP_TX,
            ),
        );
        drop(prefix);
        let plain = XdpCidFormat::quic_lb(vec![quic_lb(0, 6, None)], vec![]).unwrap();
        let c = plain
            .format_set()
            .config(0)
            .unwrap()
            .encode(&[0x12], &[7; 6], 0)
            .unwrap();
        let s = listener(n, Some(plain), 8);
        put(
            "encoded: QUIC-LB plaintext",
            col,
            ns(&s, &frame(known, &cid12(&c, b"0123456789abcdef")), XDP_TX),
        );
        drop(s);
        for (name, cfg, len) in [
            (
                "encoded: QUIC-LB single-pass AES (cached)",
                quic_lb(1, 15, Some([0x3c; 16])),
                17,
            ),
            (
                "encoded: QUIC-LB four-pass (cached)",
                quic_lb(2, 6, Some([0x5a; 16])),
                8,
            ),
        ] {
            let f = XdpCidFormat::quic_lb(vec![cfg.clone()], vec![]).unwrap();
            let c = cfg.encode(&[0x12], &vec![7; cfg.nonce_len()], 0).unwrap();
            let s = listener(n, Some(f.clone()), len);
            let fr = frame(known, &cid12(&c, b"0123456789abcdef"));
            assert_eq!(s.l.test_run(&fr).unwrap().action, XDP_DROP, "first: punted");
            // The punt path itself (a ring buffer record with the frame): runs of
            // PUNT_RUN (fewer than the queue holds), the queue emptied between them.
            let mut v: Vec<f64> = (0..3u8)
                .map(|k| {
                    s.l.service_punts();
                    let other = cfg
                        .encode(&[0x12], &vec![8 + k; cfg.nonce_len()], 0)
                        .unwrap();
                    let f = frame(known, &cid12(&other, b"x"));
                    assert_eq!(s.l.test_run(&f).unwrap().action, XDP_DROP, "punted");
                    s.l.bench_run(&f, PUNT_RUN).unwrap().as_nanos() as f64
                })
                .collect();
            v.sort_by(f64::total_cmp);
            put(
                &format!(
                    "{} — first datagram, punted",
                    name.trim_end_matches(" (cached)")
                ),
                col,
                v[1],
            );
            s.l.service_punts();
            put(name, col, ns(&s, &fr, XDP_TX));
            // The slow path's decoding, in userspace, per CID.
            let set = f.format_set();
            let t = Instant::now();
            let k = 200_000;
            for i in 0..k {
                let mut x = c.to_vec();
                x[len - 1] ^= i as u8;
                std::hint::black_box(set.decode(&x).ok());
            }
            put(
                &format!(
                    "{} — slow path decode (userspace)",
                    name.trim_end_matches(" (cached)")
                ),
                col,
                t.elapsed().as_nanos() as f64 / k as f64,
            );
        }
    }
    let head: Vec<String> = sizes.iter().map(|n| format!("{n} entries")).collect();
    println!("| case (ns per packet) | {} |", head.join(" | "));
    println!("| --- |{}", " ---: |".repeat(sizes.len()));
    for (name, vals) in &rows {
        let cells: Vec<String> = vals[..sizes.len()]
            .iter()
            .map(|v| format!("{v:.0}"))
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    println!();
    println!("* distinct frames, one run each: includes the kernel's per-run overhead.");
    println!();
    println!("| table | entries | kernel memory (memlock) | bytes per entry |");
    println!("| --- | ---: | ---: | ---: |");
    for (n, m) in memory {
        for (name, (bytes, cap)) in ["flows", "bindings"].iter().zip(m) {
            println!(
                "| {name} | {cap} (filled {n}) | {bytes} | {:.0} |",
                bytes as f64 / cap as f64
            );
        }
    }
}
