//! Fuzz the router with event sequences: the input bytes decode into client datagrams
//! (raw bytes, CID records, mixed-CID datagrams, ClientHellos), backend datagrams
//! (ServerHellos announcing CIDs, CID records), time steps, backend state changes and
//! sweeps (`cidlb_core::invariants::decode`), run against a router with small table
//! bounds. The invariants are the ones the property test checks
//! (`cidlb_core::invariants::check_events`): one property body, two drivers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (policy, events) = cidlb_core::invariants::decode(data);
    cidlb_core::invariants::check_events(policy, &events);
});
