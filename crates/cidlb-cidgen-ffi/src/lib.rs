//! The C ABI of cidlb's routable CID generator: `libcidlb_cidgen.a` / `.so` and
//! `include/cidlb_cidgen.h`.
//!
//! A C DTLS server creates one generator for its server ID and asks it for a CID before
//! each handshake, then hands the CID to its stack:
//!
//! ```c
//! cidlb_cidgen *gen;
//! cidlb_quic_lb_config cfg = { .rotation = 0, .server_id_length = 2, .nonce_length = 6,
//!                              .self_describing_length = 0, .key = key16 };
//! if (cidlb_cidgen_new_quic_lb(&cfg, my_server_id, 2, &gen) != CIDLB_OK) abort();
//! unsigned char cid[CIDLB_CID_MAX_LEN]; size_t len;
//! if (cidlb_cidgen_next(gen, cid, sizeof cid, &len) == CIDLB_OK)
//!     mbedtls_ssl_set_cid(&ssl, MBEDTLS_SSL_CID_ENABLED, cid, len);
//! ```
//!
//! A server that restarts cleanly can save its generator's state
//! ([`cidlb_cidgen_counter`], [`cidlb_cidgen_issued`]) and [`cidlb_cidgen_resume`] it,
//! so that the new generator continues the nonce sequence instead of starting at a new
//! random point; [`cidlb_cidgen_remaining`] says how long the nonce space lasts.
//!
//! `examples/mbedtls_cid.c` is a complete program; `tests/c_example.rs` builds and runs
//! it against both libraries (also with the commands of `docs/routable-cids.md`, as
//! written) and decodes its output with the Rust decoder, in the configuration of
//! `crates/cidlb/examples/cidlb.toml`'s routable listener.
//!
//! Every function checks its pointers for NULL, never unwinds into C (a panic becomes
//! [`CIDLB_ERR_PANIC`]), and a generator may be used from several threads at once (it
//! holds a mutex). This crate is the workspace's one place besides the test-support FFI
//! with `unsafe`; each block says why it is sound.

#![deny(unsafe_op_in_unsafe_fn)]
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};

use cidlb_cidformat::{CidGenerator, GeneratorError, PrefixFormat, QuicLbConfig, QuicLbParams};

pub use cidlb_cidformat;

/// Success.
pub const CIDLB_OK: c_int = 0;
/// A required pointer was NULL.
pub const CIDLB_ERR_NULL: c_int = -1;
/// The configuration or server ID is invalid (lengths, rotation...).
pub const CIDLB_ERR_INVALID: c_int = -2;
/// The output buffer is shorter than the CID.
pub const CIDLB_ERR_BUFFER_TOO_SMALL: c_int = -3;
/// The nonce space of this key and server ID is used up: switch to a new configuration.
pub const CIDLB_ERR_EXHAUSTED: c_int = -4;
/// The operating system's random source failed.
pub const CIDLB_ERR_RANDOM: c_int = -5;
/// An internal error (a Rust panic, caught).
pub const CIDLB_ERR_PANIC: c_int = -6;
/// Longest CID a generator issues (a buffer of this size always suffices).
pub const CIDLB_CID_MAX_LEN: usize = 32;
/// Longest counter [`cidlb_cidgen_counter`] writes (the longest QUIC-LB nonce).
pub const CIDLB_COUNTER_MAX_LEN: usize = 18;
/// What [`cidlb_cidgen_remaining`] returns for no limit (the prefix format, nonces of 16
/// octets or more) or a count that does not fit 64 bits.
pub const CIDLB_REMAINING_UNLIMITED: u64 = u64::MAX;

/// A QUIC-LB (draft-ietf-quic-load-balancers-21) configuration, as C sees it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cidlb_quic_lb_config {
    /// Config rotation codepoint, 0..=6.
    pub rotation: u8,
    /// Server ID length in octets, 1..=15.
    pub server_id_length: u8,
    /// Nonce length in octets, 4..=18; with the server ID at most 19.
    pub nonce_length: u8,
    /// Non-zero: the first octet carries the CID length minus one.
    pub self_describing_length: u8,
    /// 16-octet AES-128 key, or NULL for plaintext CIDs.
    pub key: *const u8,
}

/// An opaque generator of routable CIDs for one server ID.
pub struct cidlb_cidgen {
    inner: Mutex<CidGenerator>,
}

/// The generator behind `generator`, locked; `None` for NULL.
///
/// # Safety
/// `generator` must be NULL or come from `publish` and not be freed, for `'a`.
unsafe fn locked<'a>(generator: *const cidlb_cidgen) -> Option<MutexGuard<'a, CidGenerator>> {
    // SAFETY: non-NULL (checked by `as_ref`), created by `publish` and not freed
    // (caller's guarantee); only shared access is taken, and the mutex serialises
    // mutation.
    let g = unsafe { generator.as_ref() }?;
    Some(g.inner.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Copies `bytes` to `out` (capacity `out_cap`) and their length to `*out_len`:
/// [`CIDLB_OK`], or [`CIDLB_ERR_BUFFER_TOO_SMALL`] with nothing written.
///
/// # Safety
/// `out` must point to `out_cap` writable octets that do not overlap `bytes`;
/// `out_len` must be valid for a write.
unsafe fn write_out(bytes: &[u8], out: *mut u8, out_cap: usize, out_len: *mut usize) -> c_int {
    if out_cap < bytes.len() {
        return CIDLB_ERR_BUFFER_TOO_SMALL;
    }
    // SAFETY: `out` has `out_cap >= bytes.len()` writable octets and does not overlap
    // `bytes` (caller's guarantee, length checked above).
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), out, bytes.len()) };
    // SAFETY: valid for a write (caller's guarantee).
    unsafe { out_len.write(bytes.len()) };
    CIDLB_OK
}

fn status(e: &GeneratorError) -> c_int {
    match e {
        GeneratorError::Exhausted { .. } => CIDLB_ERR_EXHAUSTED,
        GeneratorError::Random(_) => CIDLB_ERR_RANDOM,
        GeneratorError::Format(_) | GeneratorError::NoConfiguration(_) => CIDLB_ERR_INVALID,
    }
}

/// Runs `f`, turning a panic into [`CIDLB_ERR_PANIC`] (unwinding into C is undefined).
fn guard(f: impl FnOnce() -> c_int) -> c_int {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(CIDLB_ERR_PANIC)
}

/// Boxes `generator` and stores the pointer in `*out`.
///
/// # Safety
/// `out` must be valid for a pointer write.
unsafe fn publish(generator: CidGenerator, out: *mut *mut cidlb_cidgen) -> c_int {
    let handle = Box::new(cidlb_cidgen {
        inner: Mutex::new(generator),
    });
    // SAFETY: the caller guarantees `out` is valid for writes (checked non-NULL).
    unsafe { out.write(Box::into_raw(handle)) };
    CIDLB_OK
}

/// Creates a QUIC-LB generator for `server_id` (`server_id_len` octets, the
/// configuration's server ID length). Its nonce counter starts at a random value.
///
/// Returns [`CIDLB_OK`] and stores the generator in `*out`, or an error code (and leaves
/// `*out` untouched). Free it with [`cidlb_cidgen_free`].
///
/// # Safety
/// `config` must point to a valid `cidlb_quic_lb_config` whose `key` is NULL or points
/// to 16 readable octets; `server_id` must point to `server_id_len` readable octets; `out`
/// must be valid for a pointer write.
#[no_mangle]
pub unsafe extern "C" fn cidlb_cidgen_new_quic_lb(
    config: *const cidlb_quic_lb_config,
    server_id: *const u8,
    server_id_len: usize,
    out: *mut *mut cidlb_cidgen,
) -> c_int {
    guard(|| {
        if config.is_null() || server_id.is_null() || out.is_null() {
            return CIDLB_ERR_NULL;
        }
        // SAFETY: non-NULL, and the caller guarantees it points to a valid config.
        let c = unsafe { *config };
        let key = if c.key.is_null() {
            None
        } else {
            let mut k = [0u8; 16];
            // SAFETY: the caller guarantees 16 readable octets at a non-NULL `key`; `k`
            // is a distinct local buffer of 16 octets.
            unsafe { std::ptr::copy_nonoverlapping(c.key, k.as_mut_ptr(), 16) };
            Some(k)
        };
        if server_id_len > CIDLB_CID_MAX_LEN {
            return CIDLB_ERR_INVALID;
        }
        // SAFETY: non-NULL, and the caller guarantees `server_id_len` readable octets
        // that stay valid for this call.
        let sid = unsafe { std::slice::from_raw_parts(server_id, server_id_len) };
        let params = QuicLbParams {
            rotation: c.rotation,
            server_id_len: usize::from(c.server_id_length),
            nonce_len: usize::from(c.nonce_length),
            key,
            self_describing_length: c.self_describing_length != 0,
        };
        let generator = QuicLbConfig::new(params)
            .map_err(GeneratorError::from)
            .and_then(|cfg| CidGenerator::quic_lb(cfg, sid));
        match generator {
            // SAFETY: `out` is non-NULL and the caller guarantees it is writable.
            Ok(g) => unsafe { publish(g, out) },
            Err(e) => status(&e),
        }
    })
}

/// Creates a prefix-format generator: CIDs of `cid_len` octets that start with
/// `server_id` (`server_id_len` octets, 1..=15), the rest random. Eclipse Californium's
/// cluster format is `server_id_len = 1` (the node ID).
///
/// # Safety
/// `server_id` must point to `server_id_len` readable octets; `out` must be valid for a
/// pointer write.
#[no_mangle]
pub unsafe extern "C" fn cidlb_cidgen_new_prefix(
    server_id: *const u8,
    server_id_len: usize,
    cid_len: usize,
    out: *mut *mut cidlb_cidgen,
) -> c_int {
    guard(|| {
        if server_id.is_null() || out.is_null() {
            return CIDLB_ERR_NULL;
        }
        if server_id_len > CIDLB_CID_MAX_LEN {
            return CIDLB_ERR_INVALID;
        }
        // SAFETY: non-NULL, and the caller guarantees `server_id_len` readable octets.
        let sid = unsafe { std::slice::from_raw_parts(server_id, server_id_len) };
        let generator = PrefixFormat::new(server_id_len)
            .map_err(GeneratorError::from)
            .and_then(|f| CidGenerator::prefix(f, sid, cid_len));
        match generator {
            // SAFETY: `out` is non-NULL and the caller guarantees it is writable.
            Ok(g) => unsafe { publish(g, out) },
            Err(e) => status(&e),
        }
    })
}

/// Writes the next CID into `out` (capacity `out_cap` octets) and its length into
/// `*out_len`. Thread-safe.
///
/// Returns [`CIDLB_OK`], [`CIDLB_ERR_BUFFER_TOO_SMALL`] (nothing consumed),
/// [`CIDLB_ERR_EXHAUSTED`] (no nonce left under this key: switch configuration) or
/// another error code.
///
/// # Safety
/// `generator` must come from a `cidlb_cidgen_new_*` function and not be freed; `out`
/// must point to `out_cap` writable octets; `out_len` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cidlb_cidgen_next(
    generator: *mut cidlb_cidgen,
    out: *mut u8,
    out_cap: usize,
    out_len: *mut usize,
) -> c_int {
    guard(|| {
        if out.is_null() || out_len.is_null() {
            return CIDLB_ERR_NULL;
        }
        // SAFETY: see `locked` (caller's guarantee).
        let Some(mut g) = (unsafe { locked(generator) }) else {
            return CIDLB_ERR_NULL;
        };
        if out_cap < g.cid_len() {
            return CIDLB_ERR_BUFFER_TOO_SMALL;
        }
        match g.next_cid() {
            // SAFETY: `out` and `out_len` as the caller guarantees; the local `cid`
            // cannot overlap `out`.
            Ok(cid) => unsafe { write_out(&cid, out, out_cap, out_len) },
            Err(e) => status(&e),
        }
    })
}

/// Length of the CIDs `generator` issues (what `mbedtls_ssl_conf_cid` must be given), or
/// 0 if `generator` is NULL.
///
/// # Safety
/// `generator` must be NULL or come from a `cidlb_cidgen_new_*` function and not be
/// freed.
#[no_mangle]
pub unsafe extern "C" fn cidlb_cidgen_cid_len(generator: *const cidlb_cidgen) -> usize {
    // SAFETY: see `locked` (caller's guarantee).
    unsafe { locked(generator) }.map_or(0, |g| g.cid_len())
}

/// Writes the generator's counter (QUIC-LB: the next nonce, `nonce_length` octets) into
/// `out` (capacity `out_cap`) and its length into `*out_len`: with
/// [`cidlb_cidgen_issued`], what a server saves at a clean shutdown to
/// [`cidlb_cidgen_resume`] after its restart. The prefix format has no counter: length 0.
///
/// Returns [`CIDLB_OK`], [`CIDLB_ERR_BUFFER_TOO_SMALL`] (a buffer of
/// [`CIDLB_COUNTER_MAX_LEN`] octets always suffices) or [`CIDLB_ERR_NULL`].
///
/// # Safety
/// `generator` must come from a `cidlb_cidgen_new_*` function and not be freed; `out`
/// must point to `out_cap` writable octets; `out_len` must be valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cidlb_cidgen_counter(
    generator: *const cidlb_cidgen,
    out: *mut u8,
    out_cap: usize,
    out_len: *mut usize,
) -> c_int {
    guard(|| {
        if out.is_null() || out_len.is_null() {
            return CIDLB_ERR_NULL;
        }
        // SAFETY: see `locked` (caller's guarantee).
        let Some(counter) = (unsafe { locked(generator) }).map(|g| g.counter()) else {
            return CIDLB_ERR_NULL;
        };
        // SAFETY: `out` and `out_len` as the caller guarantees; the local `counter`
        // cannot overlap `out`.
        unsafe { write_out(&counter, out, out_cap, out_len) }
    })
}

/// Resumes a saved generator: sets the counter (`counter_len` octets, the nonce length)
/// and the count of CIDs issued to what [`cidlb_cidgen_counter`] and
/// [`cidlb_cidgen_issued`] returned after the previous generator's last CID. The
/// generator then continues that nonce sequence, and its exhaustion counts both.
/// Call it on a new generator of the same configuration and server ID, before its first
/// CID.
///
/// Returns [`CIDLB_OK`]; [`CIDLB_ERR_INVALID`] for a counter of the wrong length, a
/// plaintext configuration (its nonce permutation key is private to each generator, so
/// resuming would not prevent repeats), the prefix format (no counter) or a generator
/// that has issued a CID already; [`CIDLB_ERR_EXHAUSTED`] when `issued` exceeds the
/// nonce space; or [`CIDLB_ERR_NULL`]. On error the generator is unchanged.
///
/// # Safety
/// `generator` must come from a `cidlb_cidgen_new_*` function and not be freed;
/// `counter` must point to `counter_len` readable octets.
#[no_mangle]
pub unsafe extern "C" fn cidlb_cidgen_resume(
    generator: *mut cidlb_cidgen,
    counter: *const u8,
    counter_len: usize,
    issued: u64,
) -> c_int {
    guard(|| {
        if generator.is_null() || counter.is_null() {
            return CIDLB_ERR_NULL;
        }
        if counter_len > CIDLB_COUNTER_MAX_LEN {
            return CIDLB_ERR_INVALID;
        }
        // SAFETY: non-NULL, and the caller guarantees `counter_len` readable octets that
        // stay valid for this call.
        let saved = unsafe { std::slice::from_raw_parts(counter, counter_len) };
        // SAFETY: see `locked` (caller's guarantee; non-NULL, checked above).
        let Some(mut g) = (unsafe { locked(generator) }) else {
            return CIDLB_ERR_NULL;
        };
        match g.resume(saved, u128::from(issued)) {
            Ok(()) => CIDLB_OK,
            Err(e) => status(&e),
        }
    })
}

/// CIDs issued so far (after [`cidlb_cidgen_resume`]: by this generator and the ones it
/// continues), saturating at `UINT64_MAX`; 0 if `generator` is NULL.
///
/// # Safety
/// `generator` must be NULL or come from a `cidlb_cidgen_new_*` function and not be
/// freed.
#[no_mangle]
pub unsafe extern "C" fn cidlb_cidgen_issued(generator: *const cidlb_cidgen) -> u64 {
    // SAFETY: see `locked` (caller's guarantee).
    unsafe { locked(generator) }.map_or(0, |g| u64::try_from(g.issued()).unwrap_or(u64::MAX))
}

/// CIDs the generator can still issue before [`CIDLB_ERR_EXHAUSTED`]: a server rolls out
/// a new configuration long before 0. [`CIDLB_REMAINING_UNLIMITED`] (`UINT64_MAX`) when
/// there is no limit (the prefix format, nonces of 16 octets or more) or the count does
/// not fit 64 bits; 0 if `generator` is NULL.
///
/// # Safety
/// `generator` must be NULL or come from a `cidlb_cidgen_new_*` function and not be
/// freed.
#[no_mangle]
pub unsafe extern "C" fn cidlb_cidgen_remaining(generator: *const cidlb_cidgen) -> u64 {
    // SAFETY: see `locked` (caller's guarantee).
    unsafe { locked(generator) }.map_or(0, |g| {
        g.remaining()
            .and_then(|r| u64::try_from(r).ok())
            .unwrap_or(CIDLB_REMAINING_UNLIMITED)
    })
}

/// Frees a generator. NULL is accepted and ignored.
///
/// # Safety
/// `generator` must be NULL or come from a `cidlb_cidgen_new_*` function, not be freed
/// already, and not be in use by another thread.
#[no_mangle]
pub unsafe extern "C" fn cidlb_cidgen_free(generator: *mut cidlb_cidgen) {
    if generator.is_null() {
        return;
    }
    // SAFETY: it was made by `Box::into_raw` in `publish` and is freed only once
    // (caller's guarantee).
    drop(unsafe { Box::from_raw(generator) });
}

/// A static, NUL-terminated English description of a status code.
#[no_mangle]
pub extern "C" fn cidlb_cidgen_strerror(code: c_int) -> *const c_char {
    let s: &'static [u8] = match code {
        CIDLB_OK => b"success\0",
        CIDLB_ERR_NULL => b"a required pointer is NULL\0",
        CIDLB_ERR_INVALID => b"invalid configuration or server ID\0",
        CIDLB_ERR_BUFFER_TOO_SMALL => b"output buffer too small for the CID\0",
        CIDLB_ERR_EXHAUSTED => b"nonce space exhausted: switch to a configuration with a new key\0",
        CIDLB_ERR_RANDOM => b"no randomness from the operating system\0",
        CIDLB_ERR_PANIC => b"internal error\0",
        _ => b"unknown status code\0",
    };
    s.as_ptr().cast()
}

/// The QUIC-LB draft revision implemented, as a static NUL-terminated string
/// (`"draft-ietf-quic-load-balancers-21"`).
#[no_mangle]
pub extern "C" fn cidlb_cidgen_quic_lb_draft() -> *const c_char {
    c"draft-ietf-quic-load-balancers-21".as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;
    use std::ptr;

    #[test]
    fn create_generate_free() {
        let key = [0x11u8; 16];
        let cfg = cidlb_quic_lb_config {
            rotation: 1,
            server_id_length: 2,
            nonce_length: 6,
            self_describing_length: 1,
            key: key.as_ptr(),
        };
        let sid = [0xbe, 0xef];
        let mut g: *mut cidlb_cidgen = ptr::null_mut();
        // SAFETY: valid pointers to live locals.
        let rc = unsafe { cidlb_cidgen_new_quic_lb(&cfg, sid.as_ptr(), 2, &mut g) };
        assert_eq!(rc, CIDLB_OK);
        // SAFETY: `g` is live.
        assert_eq!(unsafe { cidlb_cidgen_cid_len(g) }, 9);
        let mut buf = [0u8; CIDLB_CID_MAX_LEN];
        let mut len = 0usize;
        // SAFETY: `g` is live, `buf` has 8 writable octets (too few on purpose).
        let rc = unsafe { cidlb_cidgen_next(g, buf.as_mut_ptr(), 8, &mut len) };
        assert_eq!(rc, CIDLB_ERR_BUFFER_TOO_SMALL);
        // SAFETY: as above, with the whole buffer.
        let rc = unsafe { cidlb_cidgen_next(g, buf.as_mut_ptr(), buf.len(), &mut len) };
        assert_eq!((rc, len, buf[0]), (CIDLB_OK, 9, 0b001_01000));
        let config = QuicLbConfig::new(QuicLbParams {
            rotation: 1,
            server_id_len: 2,
            nonce_len: 6,
            key: Some(key),
            self_describing_length: true,
        })
        .unwrap();
        assert_eq!(config.decode(&buf[..len]).unwrap().as_bytes(), &sid);
        // SAFETY: `g` is live and freed once.
        unsafe { cidlb_cidgen_free(g) };
        // SAFETY: NULL is accepted.
        unsafe { cidlb_cidgen_free(ptr::null_mut()) };
    }

    /// A QUIC-LB generator for server ID 0a01 (5-octet nonces), with or without a key.
    fn quic_lb(key: Option<&[u8; 16]>) -> *mut cidlb_cidgen {
        let cfg = cidlb_quic_lb_config {
            rotation: 1,
            server_id_length: 2,
            nonce_length: 5,
            self_describing_length: 0,
            key: key.map_or(ptr::null(), |k| k.as_ptr()),
        };
        let sid = [0x0a, 0x01];
        let mut g: *mut cidlb_cidgen = ptr::null_mut();
        // SAFETY: valid pointers to live locals.
        let rc = unsafe { cidlb_cidgen_new_quic_lb(&cfg, sid.as_ptr(), 2, &mut g) };
        assert_eq!(rc, CIDLB_OK);
        g
    }

    /// The generator's counter.
    fn counter(g: *const cidlb_cidgen) -> Vec<u8> {
        let mut buf = [0u8; CIDLB_COUNTER_MAX_LEN];
        let mut len = 0usize;
        // SAFETY: `g` is live, `buf` has `buf.len()` writable octets.
        let rc = unsafe { cidlb_cidgen_counter(g, buf.as_mut_ptr(), buf.len(), &mut len) };
        assert_eq!(rc, CIDLB_OK);
        buf[..len].to_vec()
    }

    /// The next CID.
    fn next(g: *mut cidlb_cidgen) -> Vec<u8> {
        let mut buf = [0u8; CIDLB_CID_MAX_LEN];
        let mut len = 0usize;
        // SAFETY: `g` is live, `buf` has `buf.len()` writable octets.
        let rc = unsafe { cidlb_cidgen_next(g, buf.as_mut_ptr(), buf.len(), &mut len) };
        assert_eq!(rc, CIDLB_OK);
        buf[..len].to_vec()
    }

    #[test]
    fn counter_resume_issued_remaining() {
        let key = [0x22u8; 16];
        let a = quic_lb(Some(&key));
        let first: Vec<Vec<u8>> = (0..5).map(|_| next(a)).collect();
        let saved = counter(a);
        assert_eq!(saved.len(), 5);
        // SAFETY: `a` is live.
        let (issued, remaining) = unsafe { (cidlb_cidgen_issued(a), cidlb_cidgen_remaining(a)) };
        assert_eq!((issued, remaining), (5, (1u64 << 40) - 5));

        let b = quic_lb(Some(&key));
        // SAFETY: `b` is live, `saved` readable.
        let rc = unsafe { cidlb_cidgen_resume(b, saved.as_ptr(), saved.len(), issued) };
        assert_eq!(rc, CIDLB_OK);
        // SAFETY: `b` is live.
        assert_eq!(unsafe { cidlb_cidgen_remaining(b) }, remaining);
        assert_eq!(counter(b), saved);
        let (x, y) = (next(a), next(b));
        let config = QuicLbConfig::new(QuicLbParams {
            rotation: 1,
            server_id_len: 2,
            nonce_len: 5,
            key: Some(key),
            self_describing_length: false,
        })
        .unwrap();
        let nonce = |c: &[u8]| config.decode_full(c).unwrap().1;
        assert_eq!(nonce(&x), nonce(&y), "b continues where a stopped");
        assert!(first.iter().all(|c| nonce(c) != nonce(&y)));
        // SAFETY: `b` is live.
        assert_eq!(unsafe { cidlb_cidgen_issued(b) }, 6);

        // Refused on a generator that has issued a CID; unchanged then.
        let before = counter(b);
        // SAFETY: `b` is live, `saved` readable.
        let rc = unsafe { cidlb_cidgen_resume(b, saved.as_ptr(), saved.len(), 0) };
        assert_eq!((rc, counter(b)), (CIDLB_ERR_INVALID, before));

        let c = quic_lb(Some(&key));
        // SAFETY: `c` is live; a counter of the wrong length, an over-long one, and a
        // count beyond the nonce space.
        unsafe {
            assert_eq!(
                cidlb_cidgen_resume(c, saved.as_ptr(), 4, 0),
                CIDLB_ERR_INVALID
            );
            let long = [0u8; 64];
            assert_eq!(
                cidlb_cidgen_resume(c, long.as_ptr(), 64, 0),
                CIDLB_ERR_INVALID
            );
            let rc = cidlb_cidgen_resume(c, saved.as_ptr(), 5, (1u64 << 40) + 1);
            assert_eq!(rc, CIDLB_ERR_EXHAUSTED);
            assert_eq!(cidlb_cidgen_resume(c, ptr::null(), 5, 0), CIDLB_ERR_NULL);
            assert_eq!(cidlb_cidgen_issued(c), 0);
        }
        // Resuming at the very end: one CID left, then exhausted.
        // SAFETY: `c` is live, `saved` readable; `buf` has room for a CID.
        unsafe {
            let rc = cidlb_cidgen_resume(c, saved.as_ptr(), 5, (1u64 << 40) - 1);
            assert_eq!((rc, cidlb_cidgen_remaining(c)), (CIDLB_OK, 1));
            next(c);
            let mut buf = [0u8; CIDLB_CID_MAX_LEN];
            let mut len = 0usize;
            let rc = cidlb_cidgen_next(c, buf.as_mut_ptr(), buf.len(), &mut len);
            assert_eq!((rc, cidlb_cidgen_remaining(c)), (CIDLB_ERR_EXHAUSTED, 0));
        }

        // Plaintext: the counter reads, but resuming is refused.
        let p = quic_lb(None);
        let pc = counter(p);
        // SAFETY: `p` is live, `pc` readable.
        let rc = unsafe { cidlb_cidgen_resume(p, pc.as_ptr(), pc.len(), 0) };
        assert_eq!(rc, CIDLB_ERR_INVALID);

        // Prefix: no counter, no limit.
        let sid = [0x2a];
        let mut q: *mut cidlb_cidgen = ptr::null_mut();
        // SAFETY: valid pointers to live locals.
        let rc = unsafe { cidlb_cidgen_new_prefix(sid.as_ptr(), 1, 6, &mut q) };
        assert_eq!(rc, CIDLB_OK);
        assert!(counter(q).is_empty());
        next(q);
        // SAFETY: `q` is live; `pc` is readable.
        unsafe {
            assert_eq!(cidlb_cidgen_remaining(q), CIDLB_REMAINING_UNLIMITED);
            assert_eq!(cidlb_cidgen_issued(q), 1);
            assert_eq!(cidlb_cidgen_resume(q, pc.as_ptr(), 0, 0), CIDLB_ERR_INVALID);
        }

        // NULLs and a short buffer.
        let mut small = [0u8; 4];
        let mut len = 0usize;
        // SAFETY: NULL is checked; `small` has 4 writable octets.
        unsafe {
            assert_eq!(cidlb_cidgen_issued(ptr::null()), 0);
            assert_eq!(cidlb_cidgen_remaining(ptr::null()), 0);
            let rc = cidlb_cidgen_counter(ptr::null(), small.as_mut_ptr(), 4, &mut len);
            assert_eq!(rc, CIDLB_ERR_NULL);
            let rc = cidlb_cidgen_counter(a, small.as_mut_ptr(), 4, &mut len);
            assert_eq!(rc, CIDLB_ERR_BUFFER_TOO_SMALL);
        }
        for g in [a, b, c, p, q] {
            // SAFETY: each is live and freed once.
            unsafe { cidlb_cidgen_free(g) };
        }
    }

    #[test]
    fn errors() {
        let mut g: *mut cidlb_cidgen = ptr::null_mut();
        let sid = [1u8];
        let bad = cidlb_quic_lb_config {
            rotation: 7,
            server_id_length: 1,
            nonce_length: 4,
            self_describing_length: 0,
            key: ptr::null(),
        };
        // SAFETY: valid pointers; the config is invalid on purpose.
        let rc = unsafe { cidlb_cidgen_new_quic_lb(&bad, sid.as_ptr(), 1, &mut g) };
        assert_eq!(rc, CIDLB_ERR_INVALID);
        assert!(g.is_null());
        // SAFETY: NULL config is checked.
        let rc = unsafe { cidlb_cidgen_new_quic_lb(ptr::null(), sid.as_ptr(), 1, &mut g) };
        assert_eq!(rc, CIDLB_ERR_NULL);
        // SAFETY: valid pointers; 1-octet CIDs cannot hold a 1-octet prefix and more.
        let rc = unsafe { cidlb_cidgen_new_prefix(sid.as_ptr(), 1, 1, &mut g) };
        assert_eq!(rc, CIDLB_ERR_INVALID);
        // SAFETY: valid pointers.
        let rc = unsafe { cidlb_cidgen_new_prefix(sid.as_ptr(), 1, 6, &mut g) };
        assert_eq!(rc, CIDLB_OK);
        // SAFETY: NULL output pointers are checked.
        let rc = unsafe { cidlb_cidgen_next(g, ptr::null_mut(), 0, ptr::null_mut()) };
        assert_eq!(rc, CIDLB_ERR_NULL);
        // SAFETY: `g` is live and freed once.
        unsafe { cidlb_cidgen_free(g) };
        // SAFETY: NULL is accepted.
        assert_eq!(unsafe { cidlb_cidgen_cid_len(ptr::null()) }, 0);
        for code in [0, -1, -2, -3, -4, -5, -6, 42] {
            // SAFETY: strerror returns a static NUL-terminated string.
            let s = unsafe { CStr::from_ptr(cidlb_cidgen_strerror(code)) };
            assert!(!s.to_bytes().is_empty());
        }
        // SAFETY: a static NUL-terminated string.
        let d = unsafe { CStr::from_ptr(cidlb_cidgen_quic_lb_draft()) };
        assert_eq!(d.to_str().unwrap(), cidlb_cidformat::DRAFT);
    }
}
