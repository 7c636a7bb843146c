//! Backend sets of the largest size (65,535): checked and built in linear time, and
//! server IDs found among thousands (by binary search since the set is prepared, not
//! by a scan per datagram).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use cidlb_core::{
    Backend, BackendSetError, CidFormat, CidRouting, Decoded, Router, RouterConfig, ServerId,
};

/// The first two octets of a CID are its server ID.
#[derive(Debug)]
struct TwoOctets;

impl CidFormat for TwoOctets {
    fn cid_len(&self, _at: &[u8]) -> Option<usize> {
        None
    }
    fn server_id(&self, cid: &[u8]) -> Option<ServerId> {
        ServerId::new(cid.get(..2)?)
    }
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 5684))
}

/// `n` backends; backend i has server ID `sid(i)`, a permutation of 1..=n in an order
/// unlike the backends'.
fn backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            let mut b = Backend::new(i as u16, format!("b{i}"), addr(i));
            b.server_id = ServerId::new(&sid(i, n));
            b
        })
        .collect()
}

fn sid(i: usize, n: usize) -> [u8; 2] {
    // A multiplier prime to n (40,503 = 3 × 13,501; n is 2^14 or 1000 here) permutes
    // 0..n.
    let v = (i * 40_503 % n + 1) as u16;
    v.to_be_bytes()
}

fn cfg() -> RouterConfig {
    let cid = CidRouting {
        fixed_len: Some(6),
        format: Some(Arc::new(TwoOctets)),
    };
    RouterConfig::new(cid, [1, 2, 3, 4])
}

#[test]
fn server_ids_are_found_among_thousands() {
    let n = 1 << 14;
    let now = Instant::now();
    let mut r = Router::new(cfg(), now);
    r.set_backends(backends(n)).unwrap();
    for i in 0..n {
        let s = sid(i, n);
        let e = r.explain_cid(now, &[s[0], s[1], 9, 9, 9, 9], None);
        match e.decoded {
            Decoded::Backend { backend, .. } => assert_eq!(usize::from(backend.0), i),
            d => panic!("backend {i}: {d:?}"),
        }
    }
    // 0 is nobody's.
    let e = r.explain_cid(now, &[0, 0, 9, 9, 9, 9], None);
    assert!(matches!(e.decoded, Decoded::UnknownServer(_)), "{e:?}");
}

#[test]
fn the_largest_set_is_checked_and_built_at_once() {
    let n = usize::from(u16::MAX);
    let started = Instant::now();
    let p = Router::prepare_backends(&cfg(), backends_plain(n)).unwrap();
    eprintln!("{n} backends prepared in {:?}", started.elapsed());
    assert_eq!(p.backends().len(), n);
    // Duplicates are still found, at the end of the list too.
    let mut dup = backends_plain(n);
    dup[n - 1].name = "b7".into();
    assert_eq!(
        Router::prepare_backends(&cfg(), dup).unwrap_err(),
        BackendSetError::DuplicateName("b7".into())
    );
    let mut dup = backends(1000);
    dup[999].server_id = dup[3].server_id;
    assert!(matches!(
        Router::prepare_backends(&cfg(), dup),
        Err(BackendSetError::DuplicateServerId(_))
    ));
    // A build that is told to stop gives up.
    assert_eq!(
        Router::prepare_backends_unless(&cfg(), backends_plain(10), &|| true).unwrap_err(),
        BackendSetError::Cancelled
    );
}

fn backends_plain(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| Backend::new(i as u16, format!("b{i}"), addr(i)))
        .collect()
}
