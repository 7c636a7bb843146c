//! The only module that touches wolfSSL directly, and the only one with `unsafe`.
//!
//! It offers one owned handle, [`Ssl`]: a `WOLFSSL` object for DTLS 1.3 only, with a
//! pre-shared key, RFC 9147 connection IDs, and in-memory I/O: the caller hands it whole
//! datagrams with [`Ssl::feed`] and collects what wolfSSL wants to send with
//! [`Ssl::take_output`]. wolfSSL therefore never blocks and never sees a socket or an
//! address; the caller owns the socket and decides where datagrams go, which is what a
//! CID-aware server needs (RFC 9146 §6, RFC 9147 §11). The retransmission timer is
//! kept here too ([`Ssl::timer_deadline`], [`Ssl::on_timer`]), driven by
//! `wolfSSL_dtls_get_current_timeout` and `wolfSSL_dtls_got_timeout`.
//!
//! # Thread safety
//!
//! wolfSSL is built with its own locking (`SINGLE_THREADED` is off, checked at compile
//! time through `wolfssl_sys::SINGLE_THREADED`). The two `WOLFSSL_CTX` objects (one per
//! side) are created once, never changed afterwards, and shared by all threads, which
//! wolfSSL allows. Each `WOLFSSL` object is used by one thread at a time (`Ssl` is `Send`, not
//! `Sync`, and every call takes `&mut self`).

use std::collections::VecDeque;
use std::ffi::{c_char, c_int, c_uchar, c_uint, c_ulong, c_void, CStr};
use std::fmt;
use std::mem;
use std::ptr::{self, NonNull};
use std::slice;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wolfssl_sys as sys;

// Sharing the contexts between threads needs wolfSSL's locking.
const _: () = assert!(
    !sys::SINGLE_THREADED,
    "this crate needs wolfSSL built with locking (not SINGLE_THREADED)"
);

/// Largest CID this build of wolfSSL accepts for its own side (`DTLS_CID_MAX_SIZE`).
pub(crate) const CID_MAX_LEN: usize = 10;

/// Longest PSK identity wolfSSL takes (`MAX_PSK_ID_LEN`).
pub(crate) const PSK_IDENTITY_MAX_LEN: usize = 128;

/// Longest pre-shared key wolfSSL takes (`MAX_PSK_KEY_LEN`).
pub(crate) const PSK_MAX_LEN: usize = 64;

/// First retransmission timeout, in seconds (wolfSSL's unit); doubled on each
/// retransmission. DTLS 1.3 also has a "quick" timeout of a quarter of this, after which
/// wolfSSL only sends ACKs.
const RETRANSMIT_INITIAL_SECS: c_int = 1;

/// Once the retransmission timeout would grow beyond this (in seconds), wolfSSL gives
/// up: 1 + 2 + 4 + 8 s of retransmissions.
const RETRANSMIT_MAX_SECS: c_int = 8;

/// A failed wolfSSL call: which call, and wolfSSL's (negative) error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Error {
    op: &'static str,
    code: c_int,
}

impl Error {
    fn new(op: &'static str, code: c_int) -> Self {
        Self { op, code }
    }

    /// Maps a `WOLFSSL_SUCCESS`-style return code.
    fn check(op: &'static str, ret: c_int) -> Result<(), Self> {
        if ret == sys::WOLFSSL_SUCCESS as c_int {
            Ok(())
        } else {
            Err(Self::new(op, ret))
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed: {} ({})",
            self.op,
            self.code,
            error_string(self.code)
        )
    }
}

impl std::error::Error for Error {}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        std::io::Error::other(e)
    }
}

/// wolfSSL's description of an error code.
fn error_string(code: c_int) -> String {
    let mut buf = [0 as c_char; 128];
    // SAFETY: `buf` is writable for its length, which wolfSSL is told; it always
    // NUL-terminates what it writes. The code is passed as wolfSSL's API expects (the
    // negative `int` converted to `unsigned long`, which it converts back).
    unsafe {
        sys::wolfSSL_ERR_error_string_n(code as c_ulong, buf.as_mut_ptr(), buf.len() as c_ulong);
        CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
    }
}

/// Which side of the handshake an [`Ssl`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Client,
    Server,
}

/// A `WOLFSSL_CTX` shared by every [`Ssl`] of one side; lives for the whole process.
struct Context(NonNull<sys::WOLFSSL_CTX>);

// SAFETY: the context is fully configured before it is shared and never changed
// afterwards; wolfSSL (built with locking, see the module docs) allows one context to back
// `WOLFSSL` objects on many threads.
unsafe impl Send for Context {}
// SAFETY: as above.
unsafe impl Sync for Context {}

/// Initialises wolfSSL once and returns the context for `endpoint`.
fn context(endpoint: Endpoint) -> Result<&'static Context, Error> {
    static INIT: OnceLock<Result<(), Error>> = OnceLock::new();
    static CLIENT: OnceLock<Result<Context, Error>> = OnceLock::new();
    static SERVER: OnceLock<Result<Context, Error>> = OnceLock::new();
    (*INIT.get_or_init(|| {
        // SAFETY: no preconditions; `OnceLock` runs it once.
        Error::check("wolfSSL_Init", unsafe { sys::wolfSSL_Init() })?;
        // SAFETY: no preconditions.
        let cid_max = unsafe { sys::wolfSSL_dtls_cid_max_size() };
        if usize::try_from(cid_max) != Ok(CID_MAX_LEN) {
            // Built without WOLFSSL_DTLS_CID, or with another DTLS_CID_MAX_SIZE.
            return Err(Error::new("wolfSSL_dtls_cid_max_size", cid_max));
        }
        Ok(())
    }))?;
    let cell = match endpoint {
        Endpoint::Client => &CLIENT,
        Endpoint::Server => &SERVER,
    };
    cell.get_or_init(|| new_context(endpoint))
        .as_ref()
        .map_err(|e| *e)
}

fn new_context(endpoint: Endpoint) -> Result<Context, Error> {
    // SAFETY: the method constructors have no preconditions; `wolfSSL_CTX_new` takes
    // ownership of the method (and frees it on failure).
    let ctx = unsafe {
        sys::wolfSSL_CTX_new(match endpoint {
            Endpoint::Client => sys::wolfDTLSv1_3_client_method(),
            Endpoint::Server => sys::wolfDTLSv1_3_server_method(),
        })
    };
    let ctx = NonNull::new(ctx).ok_or(Error::new("wolfSSL_CTX_new", 0))?;
    // SAFETY: `ctx` is a live context not yet shared; the callbacks are 'static
    // functions with the signatures wolfSSL declares.
    unsafe {
        sys::wolfSSL_CTX_SetIORecv(ctx.as_ptr(), Some(io_recv));
        sys::wolfSSL_CTX_SetIOSend(ctx.as_ptr(), Some(io_send));
        match endpoint {
            Endpoint::Client => {
                sys::wolfSSL_CTX_set_psk_client_callback(ctx.as_ptr(), Some(psk_client))
            }
            Endpoint::Server => {
                sys::wolfSSL_CTX_set_psk_server_callback(ctx.as_ptr(), Some(psk_server))
            }
        }
    }
    // The context is kept for the life of the process, so it is never freed.
    Ok(Context(ctx))
}

/// Outcome of a handshake step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// The handshake is complete.
    Done,
    /// More input (or a timer expiry) is needed.
    WantInput,
}

/// Outcome of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// This many bytes of application data were read (one record's worth).
    Data(usize),
    /// More input (or a timer expiry) is needed.
    WantInput,
    /// The peer sent close_notify.
    Closed,
}

/// Per-object state reached by the I/O and PSK callbacks (through the I/O context
/// pointer). It lives on the heap and never moves while its `WOLFSSL` exists.
struct State {
    endpoint: Endpoint,
    inbox: VecDeque<Vec<u8>>,
    outbox: Vec<Vec<u8>>,
    psk_identity: Vec<u8>,
    psk: Vec<u8>,
}

/// A `WOLFSSL` object (DTLS 1.3, PSK, CIDs) with in-memory, non-blocking datagram I/O.
pub(crate) struct Ssl {
    ssl: NonNull<sys::WOLFSSL>,
    state: NonNull<State>,
    /// When the retransmission timer fires (see [`Ssl::timer_deadline`]).
    deadline: Option<Instant>,
}

// SAFETY: `Ssl` exclusively owns its `WOLFSSL` object and its state; nothing in them is
// tied to a thread, and the shared context is thread-safe (see the module docs).
unsafe impl Send for Ssl {}

impl Ssl {
    /// Creates an object for `endpoint` presenting (client) or accepting (server) the
    /// PSK `psk` under `psk_identity`. The identity must not contain NUL bytes.
    pub(crate) fn new(endpoint: Endpoint, psk_identity: &[u8], psk: &[u8]) -> Result<Self, Error> {
        let ctx = context(endpoint)?;
        let state = NonNull::from(Box::leak(Box::new(State {
            endpoint,
            inbox: VecDeque::new(),
            outbox: Vec::new(),
            psk_identity: psk_identity.to_vec(),
            psk: psk.to_vec(),
        })));
        // SAFETY: `ctx` is a live, configured context.
        let raw = unsafe { sys::wolfSSL_new(ctx.0.as_ptr()) };
        let Some(raw) = NonNull::new(raw) else {
            // SAFETY: `state` came from `Box::leak` just above and nothing refers to it.
            drop(unsafe { Box::from_raw(state.as_ptr()) });
            return Err(Error::new("wolfSSL_new", 0));
        };
        let ssl = Ssl {
            ssl: raw,
            state,
            deadline: None,
        };
        // SAFETY: `raw` is a live object owned by `ssl` (freed by its Drop, also on the
        // error paths); the I/O contexts point to `state`, which outlives it.
        unsafe {
            sys::wolfSSL_SetIOReadCtx(raw.as_ptr(), state.as_ptr().cast());
            sys::wolfSSL_SetIOWriteCtx(raw.as_ptr(), state.as_ptr().cast());
            sys::wolfSSL_dtls_set_using_nonblock(raw.as_ptr(), 1);
            Error::check(
                "wolfSSL_dtls_set_timeout_init",
                sys::wolfSSL_dtls_set_timeout_init(raw.as_ptr(), RETRANSMIT_INITIAL_SECS),
            )?;
            Error::check(
                "wolfSSL_dtls_set_timeout_max",
                sys::wolfSSL_dtls_set_timeout_max(raw.as_ptr(), RETRANSMIT_MAX_SECS),
            )?;
        }
        Ok(ssl)
    }

    fn raw(&self) -> *mut sys::WOLFSSL {
        self.ssl.as_ptr()
    }

    fn state(&mut self) -> &mut State {
        // SAFETY: `state` is live for as long as `self`; wolfSSL only touches it from
        // within calls made through `&mut self`, so this borrow cannot overlap them.
        unsafe { self.state.as_mut() }
    }

    fn state_ref(&self) -> &State {
        // SAFETY: as in `state`; a shared borrow while no wolfSSL call is running.
        unsafe { self.state.as_ref() }
    }

    /// Enables RFC 9147 connection IDs (`wolfSSL_dtls_cid_use`) and sets the CID this
    /// side issues, which the peer then puts in its records (`wolfSSL_dtls_cid_set`).
    /// An empty `cid` asks the peer to send records without a CID while still accepting
    /// the peer's CID.
    pub(crate) fn enable_cid(&mut self, cid: &[u8]) -> Result<(), Error> {
        let mut cid = cid.to_vec();
        let len = c_uint::try_from(cid.len()).map_err(|_| Error::new("wolfSSL_dtls_cid_set", 0))?;
        // SAFETY: live object; `cid` is readable for `len` bytes and copied by wolfSSL
        // (the API takes a mutable pointer but does not write through it).
        unsafe {
            Error::check(
                "wolfSSL_dtls_cid_use",
                sys::wolfSSL_dtls_cid_use(self.raw()),
            )?;
            Error::check(
                "wolfSSL_dtls_cid_set",
                sys::wolfSSL_dtls_cid_set(self.raw(), cid.as_mut_ptr(), len),
            )
        }
    }

    /// Queues one received datagram; it is consumed by the next
    /// [`handshake`](Self::handshake) or [`read`](Self::read) (wolfSSL reads one
    /// datagram per call to its receive callback).
    pub(crate) fn feed(&mut self, datagram: Vec<u8>) {
        self.state().inbox.push_back(datagram);
    }

    /// Whether a datagram given to [`feed`](Self::feed) has not been consumed yet.
    pub(crate) fn has_input(&self) -> bool {
        !self.state_ref().inbox.is_empty()
    }

    /// Takes the datagrams wolfSSL has written since the last call.
    pub(crate) fn take_output(&mut self) -> Vec<Vec<u8>> {
        mem::take(&mut self.state().outbox)
    }

    /// How many datagrams wolfSSL has queued since the last [`take_output`](Self::take_output).
    pub(crate) fn output_len(&self) -> usize {
        self.state_ref().outbox.len()
    }

    /// The last error of the object, for a call that returned `ret`.
    fn last_error(&mut self, ret: c_int) -> c_int {
        // SAFETY: live object.
        unsafe { sys::wolfSSL_get_error(self.raw(), ret) }
    }

    /// Advances the handshake (`wolfSSL_connect` or `wolfSSL_accept`) with the pending
    /// input.
    pub(crate) fn handshake(&mut self) -> Result<Handshake, Error> {
        let before = self.output_len();
        let (op, ret) = match self.state_ref().endpoint {
            // SAFETY: live object with its I/O callbacks and contexts set.
            Endpoint::Client => ("wolfSSL_connect", unsafe {
                sys::wolfSSL_connect(self.raw())
            }),
            // SAFETY: as above.
            Endpoint::Server => ("wolfSSL_accept", unsafe { sys::wolfSSL_accept(self.raw()) }),
        };
        let result = if ret == sys::WOLFSSL_SUCCESS as c_int {
            Ok(Handshake::Done)
        } else {
            match self.last_error(ret) {
                e if e == sys::WOLFSSL_ERROR_WANT_READ as c_int
                    || e == sys::WOLFSSL_ERROR_WANT_WRITE as c_int =>
                {
                    Ok(Handshake::WantInput)
                }
                e => Err(Error::new(op, e)),
            }
        };
        self.rearm(self.output_len() > before);
        result
    }

    /// Reads application data into `buf` (at most one record's worth).
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> Result<Read, Error> {
        let before = self.output_len();
        let len = c_int::try_from(buf.len()).unwrap_or(c_int::MAX);
        // SAFETY: live object; `buf` is writable for `len` bytes.
        let ret = unsafe { sys::wolfSSL_read(self.raw(), buf.as_mut_ptr().cast(), len) };
        let result = if ret > 0 {
            Ok(Read::Data(ret.unsigned_abs() as usize))
        } else {
            match self.last_error(ret) {
                e if e == sys::WOLFSSL_ERROR_WANT_READ as c_int
                    || e == sys::WOLFSSL_ERROR_WANT_WRITE as c_int =>
                {
                    Ok(Read::WantInput)
                }
                e if e == sys::WOLFSSL_ERROR_ZERO_RETURN as c_int => Ok(Read::Closed),
                e => Err(Error::new("wolfSSL_read", e)),
            }
        };
        self.rearm(self.output_len() > before);
        result
    }

    /// Queues `data` as application data (one record; `data` must fit in one).
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        let len = c_int::try_from(data.len()).map_err(|_| Error::new("wolfSSL_write", 0))?;
        // SAFETY: live object; `data` is readable for `len` bytes.
        let ret = unsafe { sys::wolfSSL_write(self.raw(), data.as_ptr().cast(), len) };
        if ret == len {
            Ok(())
        } else {
            Err(Error::new("wolfSSL_write", self.last_error(ret)))
        }
    }

    /// Queues a close_notify alert (`wolfSSL_shutdown`).
    pub(crate) fn close_notify(&mut self) -> Result<(), Error> {
        // SAFETY: live object.
        let ret = unsafe { sys::wolfSSL_shutdown(self.raw()) };
        // 1: both sides closed; 2 (WOLFSSL_SHUTDOWN_NOT_DONE): ours sent, waiting for
        // the peer's, which a DTLS client need not wait for.
        if ret >= 0 || self.output_len() > 0 {
            Ok(())
        } else {
            Err(Error::new("wolfSSL_shutdown", self.last_error(ret)))
        }
    }

    /// Whether the handshake is complete (`wolfSSL_is_init_finished`).
    pub(crate) fn handshake_done(&self) -> bool {
        // SAFETY: live object.
        unsafe { sys::wolfSSL_is_init_finished(self.raw()) != 0 }
    }

    /// Server only: whether a ClientHello with a valid cookie has arrived, so that the
    /// object holds handshake state (before that, wolfSSL answers statelessly with a
    /// HelloRetryRequest carrying a cookie).
    pub(crate) fn is_stateful(&self) -> bool {
        // SAFETY: live object.
        unsafe { sys::wolfSSL_is_stateful(self.raw()) != 0 }
    }

    /// Whether the retransmission timer should run: during a stateful handshake, and
    /// afterwards while records wolfSSL sent wait for an ACK (RFC 9147 §7).
    fn needs_timer(&self) -> bool {
        if self.state_ref().endpoint == Endpoint::Server && !self.is_stateful() {
            return false;
        }
        // SAFETY: live object.
        !self.handshake_done() || unsafe { sys::wolfSSL_dtls13_has_pending_msg(self.raw()) != 0 }
    }

    /// The current retransmission timeout: wolfSSL's (doubling) timeout, or a quarter of
    /// it when DTLS 1.3 asks for a quick timeout (after which only ACKs are sent).
    fn retransmit_timeout(&self) -> Duration {
        // SAFETY: live object.
        let (secs, quick) = unsafe {
            (
                sys::wolfSSL_dtls_get_current_timeout(self.raw()),
                sys::wolfSSL_dtls13_use_quick_timeout(self.raw()) != 0,
            )
        };
        let ms = u64::try_from(secs.max(1)).unwrap_or(1) * 1000;
        Duration::from_millis(if quick { ms / 4 } else { ms })
    }

    /// Arms, re-arms or cancels the timer after a call into wolfSSL; `sent` tells
    /// whether that call queued datagrams (a new flight restarts the timer).
    fn rearm(&mut self, sent: bool) {
        if !self.needs_timer() {
            self.deadline = None;
        } else if sent || self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.retransmit_timeout());
        }
    }

    /// When the retransmission timer fires (`None` when it is not running).
    pub(crate) fn timer_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// If the timer has fired, tells wolfSSL (`wolfSSL_dtls_got_timeout`), which
    /// retransmits its last flight or sends ACKs; fails once wolfSSL gives up.
    pub(crate) fn on_timer(&mut self) -> Result<(), Error> {
        if self.deadline.is_none_or(|d| d > Instant::now()) {
            return Ok(());
        }
        // SAFETY: live object.
        let ret = unsafe { sys::wolfSSL_dtls_got_timeout(self.raw()) };
        if ret != sys::WOLFSSL_SUCCESS as c_int {
            let e = self.last_error(ret);
            self.deadline = None;
            return Err(Error::new("wolfSSL_dtls_got_timeout", e));
        }
        self.deadline = None;
        self.rearm(true);
        Ok(())
    }

    /// Records dropped so far because they failed authentication
    /// (`wolfSSL_dtls_get_drop_stats`, which needs `WOLFSSL_DTLS_DROP_STATS`). Its other
    /// counter is not used: DTLS 1.3 replays do not reach it.
    pub(crate) fn auth_failures(&mut self) -> u64 {
        let mut mac: c_uint = 0;
        // SAFETY: live object; the output is writable, the other may be null.
        let ret =
            unsafe { sys::wolfSSL_dtls_get_drop_stats(self.raw(), &mut mac, ptr::null_mut()) };
        if ret == sys::WOLFSSL_SUCCESS as c_int {
            u64::from(mac)
        } else {
            0
        }
    }

    /// The CID this side issued and receives in records (`wolfSSL_dtls_cid_get_rx`), if
    /// CIDs are in use and it is not empty.
    pub(crate) fn own_cid(&mut self) -> Option<Vec<u8>> {
        self.get_cid(
            sys::wolfSSL_dtls_cid_get_rx_size,
            sys::wolfSSL_dtls_cid_get_rx,
        )
    }

    /// The CID the peer issued, which this side puts in its records
    /// (`wolfSSL_dtls_cid_get_tx`), if CIDs were negotiated and it is not empty.
    pub(crate) fn peer_cid(&mut self) -> Option<Vec<u8>> {
        self.get_cid(
            sys::wolfSSL_dtls_cid_get_tx_size,
            sys::wolfSSL_dtls_cid_get_tx,
        )
    }

    fn get_cid(
        &mut self,
        size_of: unsafe extern "C" fn(*mut sys::WOLFSSL, *mut c_uint) -> c_int,
        get: unsafe extern "C" fn(*mut sys::WOLFSSL, *mut c_uchar, c_uint) -> c_int,
    ) -> Option<Vec<u8>> {
        let mut size: c_uint = 0;
        // SAFETY: live object; `size` is writable. Fails when CIDs are not in use (not
        // enabled, or not negotiated once the handshake got that far).
        let ret = unsafe { size_of(self.raw(), &mut size) };
        if ret != sys::WOLFSSL_SUCCESS as c_int || size == 0 {
            return None;
        }
        let mut cid = vec![0u8; size as usize];
        // SAFETY: live object; `cid` is writable for `size` bytes, as wolfSSL is told.
        let ret = unsafe { get(self.raw(), cid.as_mut_ptr(), size) };
        (ret == sys::WOLFSSL_SUCCESS as c_int).then_some(cid)
    }

    /// Name of the negotiated cipher suite, e.g. `TLS13-AES128-GCM-SHA256`.
    pub(crate) fn cipher_name(&self) -> String {
        // SAFETY: live object; the result is null or a static C string.
        cstr(unsafe { sys::wolfSSL_get_cipher_name(self.raw()) })
    }

    /// The protocol version in use, e.g. `DTLSv1.3`.
    pub(crate) fn version(&self) -> String {
        // SAFETY: live object; the result is null or a static C string.
        cstr(unsafe { sys::wolfSSL_get_version(self.raw()) })
    }
}

impl Drop for Ssl {
    fn drop(&mut self) {
        // SAFETY: the object and its state were created in `new` and are freed exactly
        // once here, the object first (it refers to the state through its I/O contexts).
        unsafe {
            sys::wolfSSL_free(self.ssl.as_ptr());
            drop(Box::from_raw(self.state.as_ptr()));
        }
    }
}

/// Copies a static C string (or null) into a `String`.
fn cstr(s: *const c_char) -> String {
    if s.is_null() {
        String::new()
    } else {
        // SAFETY: non-null strings returned by these wolfSSL getters are NUL-terminated
        // and static.
        unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
    }
}

/// The [`State`] registered as an object's I/O context.
///
/// # Safety
///
/// `ssl` must be an object created by [`Ssl::new`], inside a wolfSSL call made by its
/// owner (so that no other reference to the state exists).
unsafe fn state_of<'a>(ssl: *mut sys::WOLFSSL) -> Option<&'a mut State> {
    // SAFETY: per the contract, the read context is the live `State` of this object.
    unsafe { sys::wolfSSL_GetIOReadCtx(ssl).cast::<State>().as_mut() }
}

/// Receive callback: hands over the next queued datagram, or reports that there is none.
unsafe extern "C" fn io_recv(
    _ssl: *mut sys::WOLFSSL,
    buf: *mut c_char,
    sz: c_int,
    ctx: *mut c_void,
) -> c_int {
    // SAFETY: `ctx` is the `State` registered in `Ssl::new`, live while its object is,
    // and not otherwise borrowed during a wolfSSL call.
    let state = unsafe { &mut *ctx.cast::<State>() };
    let Some(datagram) = state.inbox.pop_front() else {
        return sys::IOerrors_WOLFSSL_CBIO_ERR_WANT_READ;
    };
    // wolfSSL reads a datagram into a buffer of at least its MTU; a longer datagram is
    // truncated here and then fails to parse, as it would on a real socket.
    let n = datagram.len().min(usize::try_from(sz).unwrap_or(0));
    // SAFETY: `buf` is writable for `sz >= n` bytes and does not overlap `datagram`.
    unsafe { ptr::copy_nonoverlapping(datagram.as_ptr(), buf.cast::<u8>(), n) };
    n as c_int
}

/// Send callback: queues the datagram for the owner of the [`Ssl`] to transmit.
unsafe extern "C" fn io_send(
    _ssl: *mut sys::WOLFSSL,
    buf: *mut c_char,
    sz: c_int,
    ctx: *mut c_void,
) -> c_int {
    let Ok(len) = usize::try_from(sz) else {
        return sys::IOerrors_WOLFSSL_CBIO_ERR_GENERAL;
    };
    // SAFETY: as in `io_recv`; `buf` is readable for `sz` bytes.
    unsafe {
        let state = &mut *ctx.cast::<State>();
        state
            .outbox
            .push(slice::from_raw_parts(buf.cast::<u8>(), len).to_vec());
    }
    sz
}

/// Client PSK callback: writes the identity (NUL-terminated) and the key.
unsafe extern "C" fn psk_client(
    ssl: *mut sys::WOLFSSL,
    _hint: *const c_char,
    identity: *mut c_char,
    id_max_len: c_uint,
    key: *mut c_uchar,
    key_max_len: c_uint,
) -> c_uint {
    // SAFETY: wolfSSL calls this from within `wolfSSL_connect` on our object.
    let Some(state) = (unsafe { state_of(ssl) }) else {
        return 0;
    };
    let (id, psk) = (&state.psk_identity, &state.psk);
    if id.len() >= id_max_len as usize || psk.len() > key_max_len as usize {
        return 0;
    }
    // SAFETY: `identity` is writable for `id_max_len > id.len()` bytes and `key` for
    // `key_max_len >= psk.len()` bytes.
    unsafe {
        ptr::copy_nonoverlapping(id.as_ptr(), identity.cast::<u8>(), id.len());
        *identity.add(id.len()) = 0;
        ptr::copy_nonoverlapping(psk.as_ptr(), key, psk.len());
    }
    psk.len() as c_uint
}

/// Server PSK callback: returns the key if the client's identity is the expected one.
unsafe extern "C" fn psk_server(
    ssl: *mut sys::WOLFSSL,
    identity: *const c_char,
    key: *mut c_uchar,
    key_max_len: c_uint,
) -> c_uint {
    // SAFETY: wolfSSL calls this from within `wolfSSL_accept` on our object.
    let Some(state) = (unsafe { state_of(ssl) }) else {
        return 0;
    };
    if identity.is_null() || state.psk.len() > key_max_len as usize {
        return 0;
    }
    // SAFETY: wolfSSL passes the identity NUL-terminated (it stores it with a
    // terminator, and identities are at most MAX_PSK_ID_LEN bytes).
    let offered = unsafe { CStr::from_ptr(identity) }.to_bytes();
    if offered != state.psk_identity.as_slice() {
        return 0;
    }
    // SAFETY: `key` is writable for `key_max_len >= psk.len()` bytes.
    unsafe { ptr::copy_nonoverlapping(state.psk.as_ptr(), key, state.psk.len()) };
    state.psk.len() as c_uint
}
