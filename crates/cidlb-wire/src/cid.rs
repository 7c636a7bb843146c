//! How long is a Connection ID? The seam between the wire and the listener.
//!
//! The CID length is not on the wire: neither RFC 9146 `tls12_cid` records nor RFC 9147
//! unified headers carry it. The receiver knows it, either because every CID it issues
//! has one fixed length, or because the CID describes its own length (the QUIC-LB
//! format's first octet). [`CidLength`] covers both: a plain `usize` is a fixed length,
//! and a CID format implements the trait by reading the bytes where the CID starts.

/// The longest CID this crate will hand out. RFC 9146 §3 allows up to 255 bytes
/// (`opaque cid<0..2^8-1>`); real stacks issue at most 32 (Mbed TLS) or 20 (QUIC-LB).
/// Longer CIDs are reported as [`WireError::CidTooLong`](crate::WireError::CidTooLong)
/// so that tables downstream can store CIDs inline.
pub const MAX_CID_LEN: usize = 32;

/// Tells the parser how many bytes of CID start at a given position.
pub trait CidLength {
    /// `at` is the rest of the record from the first CID byte on. Returns the CID's
    /// length, or `None` when it cannot be determined (the record is then rejected as
    /// [`WireError::UnknownCidLength`](crate::WireError::UnknownCidLength)).
    fn cid_len(&self, at: &[u8]) -> Option<usize>;
}

/// A fixed CID length: every CID this listener receives has this many bytes.
impl CidLength for usize {
    #[inline]
    fn cid_len(&self, _at: &[u8]) -> Option<usize> {
        Some(*self)
    }
}

impl<T: CidLength + ?Sized> CidLength for &T {
    #[inline]
    fn cid_len(&self, at: &[u8]) -> Option<usize> {
        (**self).cid_len(at)
    }
}
