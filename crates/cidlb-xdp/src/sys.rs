//! The crate's only `unsafe`: marking the map types as plain data for aya, and reading
//! the clock the program reads.
#![allow(unsafe_code)]

use crate::abi;

// Why the impls below are sound: aya's `Pod` requires a `Copy + 'static` type that any
// bit pattern of its size is a valid value of, because map values are copied from
// kernel memory as bytes. Each type is `#[repr(C)]` with only integer and integer-array
// fields (no references, bools, enums or niches), and its padding is explicit fields,
// so every byte pattern is a valid value and no byte is uninitialised when copied out.

// SAFETY: see above.
unsafe impl aya::Pod for abi::Config {}
// SAFETY: see above.
unsafe impl aya::Pod for abi::Backend {}
// SAFETY: see above.
unsafe impl aya::Pod for abi::CidKey {}
// SAFETY: see above.
unsafe impl aya::Pod for abi::Binding {}
// SAFETY: see above.
unsafe impl aya::Pod for abi::FlowKey {}
// SAFETY: see above.
unsafe impl aya::Pod for abi::Flow {}
// SAFETY: see above.
unsafe impl aya::Pod for abi::SidKey {}
// SAFETY: see above.
unsafe impl aya::Pod for abi::SidVal {}
// SAFETY: see above.
unsafe impl aya::Pod for abi::Decoded {}
// SAFETY: see above.
unsafe impl aya::Pod for abi::Traffic {}

/// Whole seconds of `CLOCK_MONOTONIC_COARSE`: the clock of the program's
/// `bpf_ktime_get_coarse_ns()`, in the unit its tables' `last_seen` fields use.
pub fn monotonic_secs() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through the pointer, which points to
    // a live, writable, properly aligned local; CLOCK_MONOTONIC_COARSE exists on Linux
    // since 2.6.32, so the call cannot fail (and on failure `ts` stays zero, still a
    // valid value).
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts);
    }
    ts.tv_sec as u32
}
