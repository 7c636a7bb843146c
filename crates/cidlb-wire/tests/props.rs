//! Property tests: the walker's invariants on arbitrary bytes, and a round trip through a
//! test-only encoder of well-formed records.

use cidlb_wire::invariants::check_walk;
use cidlb_wire::{inspect, Records};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn arbitrary_bytes_keep_invariants(d in proptest::collection::vec(any::<u8>(), 0..300), n in 0usize..12) {
        check_walk(&d, n);
    }

    #[test]
    fn dtls_looking_bytes_keep_invariants(
        first in prop_oneof![20u8..=27, 32u8..=63],
        rest in proptest::collection::vec(any::<u8>(), 0..120),
        n in 0usize..12,
    ) {
        let mut d = vec![first, 0xfe, 0xfd];
        d.extend(rest);
        check_walk(&d, n);
    }

    #[test]
    fn encoded_records_round_trip(recs in proptest::collection::vec(arb_record(), 1..8), n in 0usize..9) {
        let mut d = Vec::new();
        let mut expect = Vec::new();
        for (i, r) in recs.iter().enumerate() {
            // An unified header without length must be last.
            let last = i + 1 == recs.len();
            let start = d.len();
            let cid = encode(r, n, last, &mut d);
            expect.push((start, d.len(), cid));
        }
        check_walk(&d, n);
        let got: Vec<_> = Records::new(&d, n).map(|r| r.unwrap()).collect();
        prop_assert_eq!(got.len(), expect.len());
        for (g, (s, e, cid)) in got.iter().zip(&expect) {
            prop_assert_eq!((g.offset, g.end()), (*s, *e));
            prop_assert_eq!(g.cid.map(<[u8]>::to_vec), cid.clone());
        }
        let info = inspect(&d, n).unwrap();
        prop_assert_eq!(info.records, recs.len());
    }
}

#[derive(Clone, Debug)]
enum Rec {
    Plain {
        ct: u8,
        payload: Vec<u8>,
    },
    Cid12 {
        cid_seed: u8,
        payload: Vec<u8>,
    },
    Unified {
        flags: u8,
        cid_seed: u8,
        payload: Vec<u8>,
    },
}

fn arb_record() -> impl Strategy<Value = Rec> {
    let payload = proptest::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        (prop_oneof![20u8..=24, 26u8..=27], payload.clone())
            .prop_map(|(ct, payload)| Rec::Plain { ct, payload }),
        (any::<u8>(), payload.clone())
            .prop_map(|(cid_seed, payload)| Rec::Cid12 { cid_seed, payload }),
        (0u8..32, any::<u8>(), payload).prop_map(|(f, cid_seed, payload)| Rec::Unified {
            flags: 0x20 | f,
            cid_seed,
            payload
        }),
    ]
}

/// Appends one record; returns the CID it carries.
fn encode(r: &Rec, n: usize, last: bool, d: &mut Vec<u8>) -> Option<Vec<u8>> {
    let cid_of = |seed: u8| {
        (0..n)
            .map(|i| seed.wrapping_add(i as u8))
            .collect::<Vec<u8>>()
    };
    match r {
        Rec::Plain { ct, payload } => {
            d.extend([*ct, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9]);
            d.extend((payload.len() as u16).to_be_bytes());
            d.extend(payload);
            None
        }
        Rec::Cid12 { cid_seed, payload } => {
            let cid = cid_of(*cid_seed);
            d.extend([25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9]);
            d.extend(&cid);
            d.extend((payload.len() as u16).to_be_bytes());
            d.extend(payload);
            Some(cid)
        }
        Rec::Unified {
            flags,
            cid_seed,
            payload,
        } => {
            // Only the last record may omit its length.
            let flags = if last { *flags } else { flags | 0x04 };
            d.push(flags);
            let cid = (flags & 0x10 != 0).then(|| cid_of(*cid_seed));
            if let Some(c) = &cid {
                d.extend(c);
            }
            if flags & 0x08 != 0 {
                d.extend([0x12, 0x34]);
            } else {
                d.push(0x12);
            }
            if flags & 0x04 != 0 {
                d.extend((payload.len() as u16).to_be_bytes());
            }
            d.extend(payload);
            cid
        }
    }
}
