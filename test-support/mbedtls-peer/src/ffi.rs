//! The only module that touches Mbed TLS directly, and the only one with `unsafe`.
//!
//! It offers two owned handles:
//!
//! * [`Config`]: one `mbedtls_ssl_config` (DTLS 1.2, PSK, RFC 9146 CIDs of a fixed
//!   length), plus the cookie context on the server side;
//! * [`Ssl`]: one `mbedtls_ssl_context` bound to a [`Config`], with in-memory I/O: the
//!   caller hands it whole datagrams with [`Ssl::feed`] and collects what Mbed TLS wants
//!   to send with [`Ssl::take_output`]. Mbed TLS therefore never blocks and never sees a
//!   socket; the caller owns the socket and decides where datagrams go, which is what a
//!   CID-aware server needs (RFC 9146 §6).
//!
//! # Thread safety
//!
//! This build of Mbed TLS has `MBEDTLS_THREADING_C` off, so its global state (the PSA
//! key store and random generator, debug settings) is not protected. Every call into
//! the library is made with [`LIBRARY`] held. Calls never block (the BIO callbacks only
//! touch memory), so the lock is held for CPU work only.

use std::ffi::{c_int, c_uchar, c_void, CStr};
use std::fmt;
use std::mem;
use std::ptr::{self, NonNull};
use std::slice;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use mbedtls_rs_sys as sys;

/// Serialises every call into Mbed TLS (see the module documentation).
static LIBRARY: Mutex<()> = Mutex::new(());

/// Cipher suites offered and accepted, zero-terminated as Mbed TLS wants them.
/// AES-128-CCM-8 keeps records short; GCM is a fallback any PSK peer has.
static CIPHERSUITES: [c_int; 3] = [
    sys::MBEDTLS_TLS_PSK_WITH_AES_128_CCM_8 as c_int,
    sys::MBEDTLS_TLS_PSK_WITH_AES_128_GCM_SHA256 as c_int,
    0,
];

/// `PSA_SUCCESS` (a macro that bindgen does not export).
const PSA_SUCCESS: sys::psa_status_t = 0;
/// `PSA_ERROR_INSUFFICIENT_ENTROPY` (a macro that bindgen does not export).
const PSA_ERROR_INSUFFICIENT_ENTROPY: sys::psa_status_t = -148;

/// Largest CID Mbed TLS accepts in this build.
pub(crate) const CID_MAX_LEN: usize = sys::MBEDTLS_SSL_CID_IN_LEN_MAX as usize;

fn library() -> MutexGuard<'static, ()> {
    LIBRARY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Initialises PSA Crypto once per process (Mbed TLS 3.6 requires it whenever TLS 1.3
/// is compiled in, even for DTLS 1.2).
fn init_library() -> Result<(), Error> {
    static INIT: OnceLock<sys::psa_status_t> = OnceLock::new();
    let status = *INIT.get_or_init(|| {
        let _guard = library();
        // SAFETY: no preconditions; idempotent, and serialised by the lock.
        unsafe { sys::psa_crypto_init() }
    });
    if status == PSA_SUCCESS {
        Ok(())
    } else {
        Err(Error::new("psa_crypto_init", status))
    }
}

/// A failed Mbed TLS call: which call, and its (negative) return code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Error {
    op: &'static str,
    code: c_int,
}

impl Error {
    fn new(op: &'static str, code: c_int) -> Self {
        Self { op, code }
    }

    fn check(op: &'static str, code: c_int) -> Result<c_int, Self> {
        if code < 0 {
            Err(Self::new(op, code))
        } else {
            Ok(code)
        }
    }

    /// Whether the handshake gave up after its last retransmission.
    pub(crate) fn is_timeout(&self) -> bool {
        self.code == sys::MBEDTLS_ERR_SSL_TIMEOUT
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: -0x{:04X}", self.op, self.code.unsigned_abs())?;
        if let Some(name) = error_name(self.code) {
            write!(f, " ({name})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        let kind = if e.is_timeout() {
            std::io::ErrorKind::TimedOut
        } else {
            std::io::ErrorKind::Other
        };
        std::io::Error::new(kind, e)
    }
}

/// Names of the codes these peers are likely to meet (`mbedtls_strerror` is not bound).
fn error_name(code: c_int) -> Option<&'static str> {
    Some(match code {
        sys::MBEDTLS_ERR_SSL_TIMEOUT => "SSL_TIMEOUT",
        sys::MBEDTLS_ERR_SSL_INVALID_MAC => "SSL_INVALID_MAC",
        sys::MBEDTLS_ERR_SSL_INVALID_RECORD => "SSL_INVALID_RECORD",
        sys::MBEDTLS_ERR_SSL_UNEXPECTED_RECORD => "SSL_UNEXPECTED_RECORD",
        sys::MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE => "SSL_FATAL_ALERT_MESSAGE",
        sys::MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY => "SSL_PEER_CLOSE_NOTIFY",
        sys::MBEDTLS_ERR_SSL_HANDSHAKE_FAILURE => "SSL_HANDSHAKE_FAILURE",
        sys::MBEDTLS_ERR_SSL_UNKNOWN_IDENTITY => "SSL_UNKNOWN_IDENTITY",
        sys::MBEDTLS_ERR_SSL_BAD_INPUT_DATA => "SSL_BAD_INPUT_DATA",
        sys::MBEDTLS_ERR_SSL_DECODE_ERROR => "SSL_DECODE_ERROR",
        sys::MBEDTLS_ERR_SSL_ALLOC_FAILED => "SSL_ALLOC_FAILED",
        sys::MBEDTLS_ERR_SSL_INTERNAL_ERROR => "SSL_INTERNAL_ERROR",
        sys::MBEDTLS_ERR_SSL_CONN_EOF => "SSL_CONN_EOF",
        _ => return None,
    })
}

/// Which side of the handshake a [`Config`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Client,
    Server,
}

/// What a [`Config`] is made from.
#[derive(Debug, Clone)]
pub(crate) struct ConfigParams<'a> {
    pub(crate) endpoint: Endpoint,
    pub(crate) psk_identity: &'a [u8],
    pub(crate) psk: &'a [u8],
    /// Length of the CIDs this side issues, and so of the CIDs in records it receives.
    pub(crate) cid_len: usize,
    /// First retransmission timeout; doubled on each retry up to `retransmit_max`.
    pub(crate) retransmit_min: Duration,
    /// Once the retransmission timeout would exceed this, the handshake fails.
    pub(crate) retransmit_max: Duration,
}

/// An `mbedtls_ssl_config` for DTLS 1.2 with PSK and RFC 9146 Connection IDs.
pub(crate) struct Config {
    conf: NonNull<sys::mbedtls_ssl_config>,
    /// Server only: the HelloVerifyRequest cookie key, referenced by `conf`.
    cookies: Option<NonNull<sys::mbedtls_ssl_cookie_ctx>>,
}

// SAFETY: `Config` exclusively owns its heap objects; after construction Mbed TLS only
// reads them, and every such read happens under `LIBRARY`.
unsafe impl Send for Config {}
// SAFETY: as above: shared access is read-only and serialised by `LIBRARY`.
unsafe impl Sync for Config {}

impl Config {
    /// Builds a configuration; the PSK and identity are copied.
    pub(crate) fn new(params: &ConfigParams<'_>) -> Result<Arc<Self>, Error> {
        init_library()?;
        // Declared before the guard so that, on an error path, it is dropped (which
        // takes the lock itself) after the guard is released.
        let mut config = Config {
            // SAFETY: an all-zero `mbedtls_ssl_config` is a valid argument for
            // `mbedtls_ssl_config_init`, which is called right below.
            conf: NonNull::from(Box::leak(Box::new(unsafe { mem::zeroed() }))),
            cookies: None,
        };
        let conf = config.conf.as_ptr();
        let _guard = library();
        let endpoint = match params.endpoint {
            Endpoint::Client => sys::MBEDTLS_SSL_IS_CLIENT,
            Endpoint::Server => sys::MBEDTLS_SSL_IS_SERVER,
        };
        // SAFETY: `conf` points to a live, initialised config owned by `config` (freed
        // by its Drop, also on the error paths); the slices outlive the calls, which
        // copy them; `CIPHERSUITES` and the callbacks are 'static.
        unsafe {
            sys::mbedtls_ssl_config_init(conf);
            Error::check(
                "mbedtls_ssl_config_defaults",
                sys::mbedtls_ssl_config_defaults(
                    conf,
                    endpoint as c_int,
                    sys::MBEDTLS_SSL_TRANSPORT_DATAGRAM as c_int,
                    sys::MBEDTLS_SSL_PRESET_DEFAULT as c_int,
                ),
            )?;
            sys::mbedtls_ssl_conf_rng(conf, Some(rng), ptr::null_mut());
            sys::mbedtls_ssl_conf_ciphersuites(conf, CIPHERSUITES.as_ptr());
            Error::check(
                "mbedtls_ssl_conf_psk",
                sys::mbedtls_ssl_conf_psk(
                    conf,
                    params.psk.as_ptr(),
                    params.psk.len(),
                    params.psk_identity.as_ptr(),
                    params.psk_identity.len(),
                ),
            )?;
            Error::check(
                "mbedtls_ssl_conf_cid",
                sys::mbedtls_ssl_conf_cid(
                    conf,
                    params.cid_len,
                    sys::MBEDTLS_SSL_UNEXPECTED_CID_IGNORE as c_int,
                ),
            )?;
            sys::mbedtls_ssl_conf_handshake_timeout(
                conf,
                millis(params.retransmit_min),
                millis(params.retransmit_max),
            );
        }
        if params.endpoint == Endpoint::Server {
            // SAFETY: all-zero is a valid argument for `mbedtls_ssl_cookie_init`.
            let cookies = NonNull::from(Box::leak(Box::new(unsafe { mem::zeroed() })));
            config.cookies = Some(cookies);
            // SAFETY: `cookies` is owned by `config` and outlives `conf`'s use of it
            // (Drop frees the config first); the functions are Mbed TLS's own.
            unsafe {
                sys::mbedtls_ssl_cookie_init(cookies.as_ptr());
                Error::check(
                    "mbedtls_ssl_cookie_setup",
                    sys::mbedtls_ssl_cookie_setup(cookies.as_ptr(), Some(rng), ptr::null_mut()),
                )?;
                sys::mbedtls_ssl_conf_dtls_cookies(
                    conf,
                    Some(sys::mbedtls_ssl_cookie_write),
                    Some(sys::mbedtls_ssl_cookie_check),
                    cookies.as_ptr().cast(),
                );
            }
        }
        Ok(Arc::new(config))
    }
}

impl Drop for Config {
    fn drop(&mut self) {
        let _guard = library();
        // SAFETY: both objects were leaked from boxes in `new` and initialised there;
        // no `Ssl` refers to this config any more (each holds an `Arc` to it).
        unsafe {
            sys::mbedtls_ssl_config_free(self.conf.as_ptr());
            drop(Box::from_raw(self.conf.as_ptr()));
            if let Some(cookies) = self.cookies {
                sys::mbedtls_ssl_cookie_free(cookies.as_ptr());
                drop(Box::from_raw(cookies.as_ptr()));
            }
        }
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

/// Outcome of a handshake step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// The handshake is complete.
    Done,
    /// More input (or a timer expiry) is needed.
    WantInput,
    /// Server only: a HelloVerifyRequest was queued; reset the context before the next
    /// ClientHello.
    HelloVerifyRequired,
}

/// Outcome of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// This many bytes of application data were read.
    Data(usize),
    /// More input (or a timer expiry) is needed.
    WantInput,
    /// The peer sent close_notify.
    Closed,
    /// Server only: a new ClientHello arrived from the same address and port with a
    /// valid cookie; Mbed TLS has reset the context and the caller should go back to
    /// handshaking (`MBEDTLS_SSL_DTLS_CLIENT_PORT_REUSE`).
    Reconnect,
}

/// What [`Ssl::check_record`] concluded about a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordCheck {
    /// Authentic and not seen before.
    Fresh,
    /// Failed authentication (bad MAC / AEAD tag).
    BadMac,
    /// Authentic but replayed or otherwise unexpected in the current state.
    Unexpected,
    /// Malformed, or any other error.
    Invalid,
}

/// The datagrams going in and out of an [`Ssl`], reached by the BIO callbacks.
#[derive(Default)]
struct Io {
    inbox: Option<Vec<u8>>,
    outbox: Vec<Vec<u8>>,
}

/// The DTLS retransmission timer, reached by the timer callbacks.
#[derive(Default)]
struct Timer {
    /// `(intermediate, final)` deadlines; `None` when cancelled.
    deadlines: Option<(Instant, Instant)>,
}

/// Heap state of an [`Ssl`]; it never moves because Mbed TLS keeps pointers into it.
struct SslState {
    ctx: sys::mbedtls_ssl_context,
    io: Io,
    timer: Timer,
}

/// An `mbedtls_ssl_context` with in-memory, non-blocking datagram I/O.
pub(crate) struct Ssl {
    state: NonNull<SslState>,
    /// Keeps the `mbedtls_ssl_config` that `state.ctx` points to alive.
    _config: Arc<Config>,
}

// SAFETY: `Ssl` exclusively owns its heap state; nothing in it is tied to a thread, and
// the library calls it makes are serialised by `LIBRARY`.
unsafe impl Send for Ssl {}

impl Ssl {
    /// Creates a context using `config`.
    pub(crate) fn new(config: &Arc<Config>) -> Result<Self, Error> {
        let state = Box::new(SslState {
            // SAFETY: all-zero is a valid argument for `mbedtls_ssl_init`, called below.
            ctx: unsafe { mem::zeroed() },
            io: Io::default(),
            timer: Timer::default(),
        });
        let ssl = Ssl {
            state: NonNull::from(Box::leak(state)),
            _config: Arc::clone(config),
        };
        let state = ssl.state.as_ptr();
        let _guard = library();
        // SAFETY: `state` is live and pinned on the heap until `Drop`, which also runs
        // on the error path; `ctx` is initialised before use; the config outlives the
        // context thanks to `_config`; the BIO and timer contexts point to fields of the
        // same pinned allocation, whose types the callbacks below expect.
        unsafe {
            let ctx = ptr::addr_of_mut!((*state).ctx);
            sys::mbedtls_ssl_init(ctx);
            Error::check(
                "mbedtls_ssl_setup",
                sys::mbedtls_ssl_setup(ctx, config.conf.as_ptr()),
            )?;
            sys::mbedtls_ssl_set_bio(
                ctx,
                ptr::addr_of_mut!((*state).io).cast(),
                Some(bio_send),
                Some(bio_recv),
                None,
            );
            sys::mbedtls_ssl_set_timer_cb(
                ctx,
                ptr::addr_of_mut!((*state).timer).cast(),
                Some(timer_set),
                Some(timer_get),
            );
        }
        Ok(ssl)
    }

    fn ctx(&mut self) -> *mut sys::mbedtls_ssl_context {
        // SAFETY: `state` is live for as long as `self`.
        unsafe { ptr::addr_of_mut!((*self.state.as_ptr()).ctx) }
    }

    fn io(&mut self) -> &mut Io {
        // SAFETY: `state` is live; Mbed TLS only touches `io` from within calls made
        // through `&mut self`, so this borrow cannot overlap with the callbacks.
        unsafe { &mut (*self.state.as_ptr()).io }
    }

    fn timer(&self) -> &Timer {
        // SAFETY: as in `io`; a shared borrow while no Mbed TLS call is running.
        unsafe { &(*self.state.as_ptr()).timer }
    }

    /// Enables RFC 9146 CIDs and sets the CID this side issues (its length must be the
    /// config's `cid_len`; it may be empty).
    pub(crate) fn set_own_cid(&mut self, cid: &[u8]) -> Result<(), Error> {
        let ctx = self.ctx();
        let _guard = library();
        // SAFETY: `ctx` is an initialised context; the CID is copied.
        let ret = unsafe {
            sys::mbedtls_ssl_set_cid(
                ctx,
                sys::MBEDTLS_SSL_CID_ENABLED as c_int,
                cid.as_ptr(),
                cid.len(),
            )
        };
        Error::check("mbedtls_ssl_set_cid", ret).map(drop)
    }

    /// Server only: identifies the client for HelloVerifyRequest cookies (its address).
    pub(crate) fn set_client_transport_id(&mut self, id: &[u8]) -> Result<(), Error> {
        let ctx = self.ctx();
        let _guard = library();
        // SAFETY: `ctx` is an initialised context; `id` is copied.
        let ret = unsafe { sys::mbedtls_ssl_set_client_transport_id(ctx, id.as_ptr(), id.len()) };
        Error::check("mbedtls_ssl_set_client_transport_id", ret).map(drop)
    }

    /// Resets the context for a new handshake, keeping its configuration and own CID.
    /// Queued output is kept; pending input is discarded.
    pub(crate) fn session_reset(&mut self) -> Result<(), Error> {
        self.io().inbox = None;
        let ctx = self.ctx();
        let _guard = library();
        // SAFETY: `ctx` is an initialised context.
        let ret = unsafe { sys::mbedtls_ssl_session_reset(ctx) };
        Error::check("mbedtls_ssl_session_reset", ret).map(drop)
    }

    /// Hands one received datagram to the context; it is consumed by the next
    /// [`handshake`](Self::handshake) or [`read`](Self::read). Replaces any datagram not
    /// yet consumed.
    pub(crate) fn feed(&mut self, datagram: Vec<u8>) {
        self.io().inbox = Some(datagram);
    }

    /// Whether a datagram given to [`feed`](Self::feed) has not been consumed yet.
    pub(crate) fn has_input(&self) -> bool {
        // SAFETY: as in `io`.
        unsafe { (*self.state.as_ptr()).io.inbox.is_some() }
    }

    /// Takes the datagrams Mbed TLS has written since the last call.
    pub(crate) fn take_output(&mut self) -> Vec<Vec<u8>> {
        mem::take(&mut self.io().outbox)
    }

    /// When the retransmission timer expires (`None` when it is not running).
    pub(crate) fn timer_deadline(&self) -> Option<Instant> {
        self.timer().deadlines.map(|(_, fin)| fin)
    }

    /// Advances the handshake with the pending input, or retransmits if the timer
    /// expired.
    pub(crate) fn handshake(&mut self) -> Result<Handshake, Error> {
        let ctx = self.ctx();
        let _guard = library();
        // SAFETY: `ctx` is an initialised, set-up context.
        match unsafe { sys::mbedtls_ssl_handshake(ctx) } {
            0 => Ok(Handshake::Done),
            sys::MBEDTLS_ERR_SSL_WANT_READ | sys::MBEDTLS_ERR_SSL_WANT_WRITE => {
                Ok(Handshake::WantInput)
            }
            sys::MBEDTLS_ERR_SSL_HELLO_VERIFY_REQUIRED => Ok(Handshake::HelloVerifyRequired),
            code => Err(Error::new("mbedtls_ssl_handshake", code)),
        }
    }

    /// Reads application data into `buf` (at most one record's worth).
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> Result<Read, Error> {
        let ctx = self.ctx();
        let _guard = library();
        // SAFETY: `ctx` is an initialised context; `buf` is writable for its length.
        let ret = unsafe { sys::mbedtls_ssl_read(ctx, buf.as_mut_ptr(), buf.len()) };
        match ret {
            n if n >= 0 => Ok(Read::Data(n.unsigned_abs() as usize)),
            sys::MBEDTLS_ERR_SSL_WANT_READ | sys::MBEDTLS_ERR_SSL_WANT_WRITE => Ok(Read::WantInput),
            sys::MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY => Ok(Read::Closed),
            sys::MBEDTLS_ERR_SSL_CLIENT_RECONNECT => Ok(Read::Reconnect),
            code => Err(Error::new("mbedtls_ssl_read", code)),
        }
    }

    /// Queues `data` as application data (one record per call to `mbedtls_ssl_write`).
    pub(crate) fn write(&mut self, mut data: &[u8]) -> Result<(), Error> {
        let ctx = self.ctx();
        let _guard = library();
        loop {
            // SAFETY: `ctx` is an initialised context; `data` is readable for its length.
            let ret = unsafe { sys::mbedtls_ssl_write(ctx, data.as_ptr(), data.len()) };
            let written = Error::check("mbedtls_ssl_write", ret)?.unsigned_abs() as usize;
            data = &data[written..];
            if data.is_empty() {
                return Ok(());
            }
            if written == 0 {
                return Err(Error::new(
                    "mbedtls_ssl_write",
                    sys::MBEDTLS_ERR_SSL_WANT_WRITE,
                ));
            }
        }
    }

    /// Queues a close_notify alert.
    pub(crate) fn close_notify(&mut self) -> Result<(), Error> {
        let ctx = self.ctx();
        let _guard = library();
        // SAFETY: `ctx` is an initialised context.
        let ret = unsafe { sys::mbedtls_ssl_close_notify(ctx) };
        Error::check("mbedtls_ssl_close_notify", ret).map(drop)
    }

    /// Checks whether `record` begins with an authentic record not seen before, without
    /// changing the context's state (`mbedtls_ssl_check_record`).
    pub(crate) fn check_record(&mut self, record: &[u8]) -> RecordCheck {
        // Mbed TLS decrypts in place, so give it a copy.
        let mut copy = record.to_vec();
        let ctx = self.ctx();
        let _guard = library();
        // SAFETY: `ctx` is an initialised context; `copy` is writable for its length.
        match unsafe { sys::mbedtls_ssl_check_record(ctx, copy.as_mut_ptr(), copy.len()) } {
            0 => RecordCheck::Fresh,
            sys::MBEDTLS_ERR_SSL_INVALID_MAC => RecordCheck::BadMac,
            sys::MBEDTLS_ERR_SSL_UNEXPECTED_RECORD => RecordCheck::Unexpected,
            _ => RecordCheck::Invalid,
        }
    }

    /// The CID this side issued and receives in records, if CIDs were negotiated.
    pub(crate) fn own_cid(&mut self) -> Option<Vec<u8>> {
        self.get_cid(sys::mbedtls_ssl_get_own_cid)
    }

    /// The CID the peer issued, which this side puts in its records, if CIDs were
    /// negotiated.
    pub(crate) fn peer_cid(&mut self) -> Option<Vec<u8>> {
        self.get_cid(sys::mbedtls_ssl_get_peer_cid)
    }

    fn get_cid(
        &mut self,
        get: unsafe extern "C" fn(
            *mut sys::mbedtls_ssl_context,
            *mut c_int,
            *mut c_uchar,
            *mut usize,
        ) -> c_int,
    ) -> Option<Vec<u8>> {
        let mut enabled: c_int = 0;
        let mut cid = [0u8; CID_MAX_LEN];
        let mut len = 0usize;
        let ctx = self.ctx();
        let _guard = library();
        // SAFETY: `ctx` is an initialised context; `cid` has the
        // `MBEDTLS_SSL_CID_IN_LEN_MAX` bytes both getters require.
        let ret = unsafe { get(ctx, &mut enabled, cid.as_mut_ptr(), &mut len) };
        (ret == 0 && enabled == sys::MBEDTLS_SSL_CID_ENABLED as c_int)
            .then(|| cid[..len.min(CID_MAX_LEN)].to_vec())
    }

    /// Name of the negotiated cipher suite (e.g. `TLS-PSK-WITH-AES-128-CCM-8`).
    pub(crate) fn ciphersuite(&mut self) -> String {
        let ctx = self.ctx();
        let _guard = library();
        // SAFETY: `ctx` is initialised; the result is null or a static C string.
        let name = unsafe { sys::mbedtls_ssl_get_ciphersuite(ctx) };
        if name.is_null() {
            String::new()
        } else {
            // SAFETY: non-null, NUL-terminated and 'static (Mbed TLS's suite table).
            unsafe { CStr::from_ptr(name) }
                .to_string_lossy()
                .into_owned()
        }
    }
}

impl Drop for Ssl {
    fn drop(&mut self) {
        let state = self.state.as_ptr();
        let _guard = library();
        // SAFETY: `state` came from `Box::leak` in `new` and is freed exactly once here;
        // `mbedtls_ssl_free` accepts a context that `mbedtls_ssl_setup` failed on.
        unsafe {
            sys::mbedtls_ssl_free(ptr::addr_of_mut!((*state).ctx));
            drop(Box::from_raw(state));
        }
    }
}

/// BIO send: queues the datagram for the owner of the [`Ssl`] to transmit.
unsafe extern "C" fn bio_send(ctx: *mut c_void, buf: *const c_uchar, len: usize) -> c_int {
    let Ok(written) = c_int::try_from(len) else {
        return sys::MBEDTLS_ERR_SSL_BAD_INPUT_DATA;
    };
    // SAFETY: `ctx` is the `Io` registered in `Ssl::new`, live while its context is, and
    // not otherwise borrowed during a library call; `buf` is readable for `len` bytes.
    unsafe {
        let io = &mut *ctx.cast::<Io>();
        io.outbox.push(slice::from_raw_parts(buf, len).to_vec());
    }
    written
}

/// BIO receive: hands over the pending datagram, or reports that there is none.
unsafe extern "C" fn bio_recv(ctx: *mut c_void, buf: *mut c_uchar, len: usize) -> c_int {
    // SAFETY: as in `bio_send`.
    let io = unsafe { &mut *ctx.cast::<Io>() };
    let Some(datagram) = io.inbox.take() else {
        return sys::MBEDTLS_ERR_SSL_WANT_READ;
    };
    // Mbed TLS offers its whole input buffer (> 16 KiB), so truncation cannot happen
    // for datagrams a loopback socket delivers; keep it safe anyway.
    let n = datagram.len().min(len).min(c_int::MAX as usize);
    // SAFETY: `buf` is writable for `len >= n` bytes and does not overlap `datagram`.
    unsafe { ptr::copy_nonoverlapping(datagram.as_ptr(), buf, n) };
    n as c_int
}

/// Timer set: `fin_ms == 0` cancels, otherwise arms both deadlines from now.
unsafe extern "C" fn timer_set(ctx: *mut c_void, int_ms: u32, fin_ms: u32) {
    // SAFETY: `ctx` is the `Timer` registered in `Ssl::new`, live while its context is.
    let timer = unsafe { &mut *ctx.cast::<Timer>() };
    timer.deadlines = (fin_ms != 0).then(|| {
        let now = Instant::now();
        (
            now + Duration::from_millis(int_ms.into()),
            now + Duration::from_millis(fin_ms.into()),
        )
    });
}

/// Timer get: -1 cancelled, 0 running, 1 intermediate delay passed, 2 final passed.
unsafe extern "C" fn timer_get(ctx: *mut c_void) -> c_int {
    // SAFETY: as in `timer_set`.
    let timer = unsafe { &*ctx.cast::<Timer>() };
    match timer.deadlines {
        None => -1,
        Some((intermediate, fin)) => {
            let now = Instant::now();
            if now >= fin {
                2
            } else if now >= intermediate {
                1
            } else {
                0
            }
        }
    }
}

/// `f_rng` for Mbed TLS: the operating system's generator.
unsafe extern "C" fn rng(_ctx: *mut c_void, out: *mut c_uchar, len: usize) -> c_int {
    if len == 0 {
        return 0;
    }
    // SAFETY: Mbed TLS passes a buffer writable for `len` bytes.
    let out = unsafe { slice::from_raw_parts_mut(out, len) };
    match getrandom::fill(out) {
        Ok(()) => 0,
        Err(_) => sys::MBEDTLS_ERR_SSL_INTERNAL_ERROR,
    }
}

/// The PSA external random source this build of Mbed TLS requires
/// (`MBEDTLS_PSA_CRYPTO_EXTERNAL_RNG`): the operating system's generator.
///
/// # Safety
///
/// Called by Mbed TLS only: `output` must be writable for `output_size` bytes and
/// `output_length` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mbedtls_psa_external_get_random(
    _context: *mut sys::mbedtls_psa_external_random_context_t,
    output: *mut u8,
    output_size: usize,
    output_length: *mut usize,
) -> sys::psa_status_t {
    if output_size > 0 {
        // SAFETY: the caller guarantees `output` is writable for `output_size` bytes.
        let out = unsafe { slice::from_raw_parts_mut(output, output_size) };
        if getrandom::fill(out).is_err() {
            return PSA_ERROR_INSUFFICIENT_ENTROPY;
        }
    }
    // SAFETY: the caller guarantees `output_length` is writable.
    unsafe { *output_length = output_size };
    PSA_SUCCESS
}
