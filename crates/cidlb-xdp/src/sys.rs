//! The crate's only `unsafe`: marking the map types as plain data for aya, reading the
//! clock the program reads, and the slow path's `AF_PACKET` socket.
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
// SAFETY: see above.
unsafe impl aya::Pod for abi::Port {}

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

/// Nanoseconds of `CLOCK_MONOTONIC_COARSE`: the clock of the program's
/// `bpf_ktime_get_coarse_ns()` (the punt records' `queued_ns`).
pub fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: as in `monotonic_secs`.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts);
    }
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// A send-only `AF_PACKET` socket bound to one interface: the slow path sends the
/// frames the program forwards on its second run (`XDP_TX` out of the same interface)
/// through it. Protocol 0: it receives nothing.
#[derive(Debug)]
pub struct PacketSocket {
    fd: std::os::fd::OwnedFd,
}

impl PacketSocket {
    /// Opens it on `interface` (needs CAP_NET_RAW).
    pub fn open(interface: &str) -> std::io::Result<PacketSocket> {
        use std::os::fd::FromRawFd;
        let name = std::ffi::CString::new(interface)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: `name` is a live NUL-terminated string for the duration of the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: plain socket(2); the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor this function owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = 0;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a live, initialised sockaddr_ll and the length passed is its
        // size; `fd` is an open socket.
        let r = unsafe {
            libc::bind(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                (&raw const sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(PacketSocket { fd })
    }

    /// Sends one whole Ethernet frame out of the interface.
    pub fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        // SAFETY: `frame` is a live slice of `frame.len()` bytes; `fd` is open.
        let n = unsafe {
            libc::send(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                frame.as_ptr().cast(),
                frame.len(),
                0,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}
