//! Fuzz the record walker: the first input byte picks the CID length (0–32), the rest
//! is the datagram. The invariants are the ones the property tests check
//! (`cidlb_wire::invariants::check_walk`): one property body, two drivers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, datagram)) = data.split_first() else {
        return;
    };
    let cid_len = usize::from(first % 33);
    cidlb_wire::invariants::check_walk(datagram, cid_len);
});
