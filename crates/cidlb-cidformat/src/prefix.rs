//! The server-ID prefix format: the first octets of the CID are the server ID, the rest
//! is random. No rotation bits, no length self-description, no key.
//!
//! Eclipse Californium's `MultiNodeConnectionIdGenerator` is this format with a
//! one-octet prefix: it "encodes node id into first byte of generated connection id",
//! the other octets random, for CIDs of a fixed length (`DTLS_CONNECTION_ID_LENGTH`, at
//! least 2). A Californium cluster goes behind cidlb unchanged: `prefix_length = 1` and
//! each backend's `server_id` = its node ID as one hex octet.

use crate::{FormatError, ServerId};

/// A server ID in the first `server_id_len` octets of every CID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PrefixFormat {
    server_id_len: usize,
}

impl PrefixFormat {
    /// Californium's node ID: one octet.
    pub const CALIFORNIUM: PrefixFormat = PrefixFormat { server_id_len: 1 };

    /// A prefix of `server_id_len` octets, `1..=15`.
    pub fn new(server_id_len: usize) -> Result<PrefixFormat, FormatError> {
        if !(1..=ServerId::MAX_LEN).contains(&server_id_len) {
            return Err(FormatError::ServerIdLength(server_id_len));
        }
        Ok(PrefixFormat { server_id_len })
    }

    /// Length of the server ID prefix.
    pub fn server_id_len(&self) -> usize {
        self.server_id_len
    }

    /// Checks that CIDs of `cid_len` octets can carry the prefix and at least one other
    /// octet, within [`crate::MAX_CID_LEN`].
    pub fn check_cid_len(&self, cid_len: usize) -> Result<(), FormatError> {
        if cid_len <= self.server_id_len || cid_len > crate::MAX_CID_LEN {
            return Err(FormatError::CidLength(cid_len));
        }
        Ok(())
    }

    /// The server ID of `cid`: its first octets. `None` when the CID has no octet after
    /// them.
    pub fn decode(&self, cid: &[u8]) -> Option<ServerId> {
        if cid.len() <= self.server_id_len {
            return None;
        }
        ServerId::new(&cid[..self.server_id_len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn californium_node_id_in_byte_0() {
        let f = PrefixFormat::CALIFORNIUM;
        assert_eq!(f.decode(&[0x07, 0xaa, 0xbb]).unwrap().as_bytes(), &[0x07]);
        assert_eq!(f.decode(&[0x07]), None);
        assert_eq!(PrefixFormat::new(0), Err(FormatError::ServerIdLength(0)));
        assert_eq!(PrefixFormat::new(16), Err(FormatError::ServerIdLength(16)));
        let f = PrefixFormat::new(2).unwrap();
        assert_eq!(f.check_cid_len(2), Err(FormatError::CidLength(2)));
        assert_eq!(f.check_cid_len(33), Err(FormatError::CidLength(33)));
        assert_eq!(f.check_cid_len(3), Ok(()));
    }
}
