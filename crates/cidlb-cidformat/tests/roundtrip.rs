//! Property tests: every configuration the draft allows round-trips every server ID and
//! nonce; generators' CIDs decode to their server ID; arbitrary bytes never panic.

use cidlb_cidformat::{
    CidGenerator, FormatSet, PrefixFormat, QuicLbConfig, QuicLbParams, ServerId, Undecodable,
};
use cidlb_core::CidFormat;
use proptest::prelude::*;

/// Any valid configuration: rotation 0..=6, server ID 1..=15, nonce 4..=18, sum ≤ 19,
/// with or without key and length self-description.
fn params() -> impl Strategy<Value = QuicLbParams> {
    (
        0u8..=6,
        1usize..=15,
        any::<Option<[u8; 16]>>(),
        any::<bool>(),
    )
        .prop_flat_map(|(rotation, sid, key, sd)| {
            (4usize..=19 - sid).prop_map(move |nonce| QuicLbParams {
                rotation,
                server_id_len: sid,
                nonce_len: nonce,
                key,
                self_describing_length: sd,
            })
        })
}

fn params_and_ids() -> impl Strategy<Value = (QuicLbParams, Vec<u8>, Vec<u8>, u8)> {
    params().prop_flat_map(|p| {
        (
            Just(p),
            proptest::collection::vec(any::<u8>(), p.server_id_len),
            proptest::collection::vec(any::<u8>(), p.nonce_len),
            any::<u8>(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn encode_then_decode((p, sid, nonce, random) in params_and_ids()) {
        let c = QuicLbConfig::new(p).unwrap();
        let cid = c.encode(&sid, &nonce, random).unwrap();
        prop_assert_eq!(cid.len(), 1 + sid.len() + nonce.len());
        prop_assert_eq!(cid[0] >> 5, p.rotation);
        if p.self_describing_length {
            prop_assert_eq!(usize::from(cid[0] & 0x1f) + 1, cid.len());
        } else {
            prop_assert_eq!(cid[0] & 0x1f, random & 0x1f);
        }
        prop_assert_eq!(c.decode(&cid), ServerId::new(&sid));
        let (s, n) = c.decode_full(&cid).unwrap();
        prop_assert_eq!(s.as_bytes(), &sid[..]);
        prop_assert_eq!(n, nonce.clone());
        if p.key.is_some() && sid.len() + nonce.len() >= 8 {
            // Encrypted: the server ID does not show (a false alarm needs the whole ID
            // to survive encryption by chance).
            prop_assert_ne!(&cid[1..], &[&sid[..], &nonce[..]].concat()[..]);
        }
        let set = FormatSet::quic_lb(vec![c]).unwrap();
        prop_assert_eq!(set.cid_len(&cid), Some(cid.len()));
        prop_assert_eq!(CidFormat::server_id(&set, &cid), ServerId::new(&sid));
    }

    #[test]
    fn other_rotations_do_not_decode((p, sid, nonce, random) in params_and_ids(), other in 0u8..=7) {
        prop_assume!(other != p.rotation);
        let c = QuicLbConfig::new(p).unwrap();
        let mut cid = c.encode(&sid, &nonce, random).unwrap().as_bytes().to_vec();
        cid[0] = other << 5 | (cid[0] & 0x1f);
        prop_assert_eq!(c.decode(&cid), None);
        let set = FormatSet::quic_lb(vec![c]).unwrap();
        let want = if other == 7 {
            Undecodable::Unroutable
        } else {
            Undecodable::UnknownRotation(other)
        };
        prop_assert_eq!(set.decode(&cid), Err(want));
    }

    #[test]
    fn generators_issue_decodable_distinct_cids(p in params(), seed in any::<u64>()) {
        let c = QuicLbConfig::new(p).unwrap();
        let sid: Vec<u8> = (0..p.server_id_len).map(|i| (seed >> (i % 8 * 8)) as u8).collect();
        let mut g = CidGenerator::quic_lb(c.clone(), &sid).unwrap();
        let set = FormatSet::quic_lb(vec![c]).unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let cid = g.next_cid().unwrap();
            prop_assert_eq!(cid.len(), g.cid_len());
            prop_assert_eq!(set.decode(&cid).map(|d| d.server_id), Ok(ServerId::new(&sid).unwrap()));
            // Distinct nonces: distinct plaintexts, so distinct CIDs after the first octet.
            prop_assert!(seen.insert(cid[1..].to_vec()));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40), p in params()) {
        let set = FormatSet::quic_lb(vec![QuicLbConfig::new(p).unwrap()]).unwrap();
        let _ = set.decode(&bytes);
        if let Some(n) = set.cid_len(&bytes) {
            prop_assert!((1..=32).contains(&n));
        }
        let prefix = FormatSet::prefix(PrefixFormat::new(1 + p.server_id_len % 4).unwrap());
        let _ = prefix.decode(&bytes);
        prop_assert_eq!(prefix.cid_len(&bytes), None);
    }

    #[test]
    fn prefix_round_trip(sid in proptest::collection::vec(any::<u8>(), 1..=15), extra in 1usize..=8) {
        let f = PrefixFormat::new(sid.len()).unwrap();
        let mut g = CidGenerator::prefix(f, &sid, sid.len() + extra).unwrap();
        let cid = g.next_cid().unwrap();
        prop_assert_eq!(&cid[..sid.len()], &sid[..]);
        let set = FormatSet::prefix(f);
        prop_assert_eq!(set.decode(&cid).map(|d| d.server_id), Ok(ServerId::new(&sid).unwrap()));
    }
}
