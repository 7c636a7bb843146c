//! The four-pass Feistel network of QUIC-LB (draft-ietf-quic-load-balancers-21,
//! "General Case: Four-Pass Encryption"), with AES-128-ECB as its round function.
//!
//! The input is split into two halves of `half_len = ceil(len / 2)` octets. With an odd
//! length the middle octet is shared: the left half keeps its high nibble (its low
//! nibble cleared), the right half its low nibble (its high nibble cleared), and every
//! pass clears those nibbles again. A round function expands one half into a 16-octet
//! AES block, encrypts it, and XORs the first `half_len` octets into the other half.
//!
//! Besides CIDs, the generator uses the same permutation under a private random key to
//! turn a counter into plaintext nonces that never repeat and show no pattern.

use aes::cipher::generic_array::GenericArray;
use aes::cipher::BlockEncrypt;
use aes::Aes128;

/// Longest half: the 16-octet AES input minus the length and pass octets.
pub(crate) const MAX_HALF: usize = 14;
/// Longest input the network handles here.
pub(crate) const MAX_LEN: usize = 2 * MAX_HALF;

/// The two halves of a plaintext or ciphertext, as the draft's `left_N` / `right_N`.
#[derive(Clone, Copy)]
struct Halves {
    left: [u8; MAX_HALF],
    right: [u8; MAX_HALF],
    len: usize,
    half: usize,
    odd: bool,
}

impl Halves {
    /// Algorithm step 2: "splits plaintext_CID into components left_0 and right_0 of
    /// equal length half_len. If plaintext_len is odd, right_0 clears its first four
    /// bits, and left_0 clears its last four bits."
    fn split(data: &[u8]) -> Halves {
        let len = data.len();
        debug_assert!((1..=MAX_LEN).contains(&len));
        let half = len.div_ceil(2);
        let mut h = Halves {
            left: [0; MAX_HALF],
            right: [0; MAX_HALF],
            len,
            half,
            odd: len % 2 == 1,
        };
        h.left[..half].copy_from_slice(&data[..half]);
        h.right[..half].copy_from_slice(&data[len - half..]);
        h.clear_left();
        h.clear_right();
        h
    }

    /// Algorithm step 12: "concatenates left_2 with right_2 ... If plaintext_len is odd,
    /// the four least significant bits of left_2 and four most significant bits of
    /// right_2, which are all zero, are stripped off before concatenation".
    fn join(&self, out: &mut [u8]) {
        let (half, len) = (self.half, self.len);
        if self.odd {
            out[..half].copy_from_slice(&self.left[..half]);
            out[half - 1] |= self.right[0];
            out[half..len].copy_from_slice(&self.right[1..half]);
        } else {
            out[..half].copy_from_slice(&self.left[..half]);
            out[half..len].copy_from_slice(&self.right[..half]);
        }
    }

    /// "If the plaintext_len is odd, clear the last four bits of left_N."
    fn clear_left(&mut self) {
        if self.odd {
            self.left[self.half - 1] &= 0xf0;
        }
    }

    /// "If the plaintext_len is odd, clear the first four bits of right_N."
    fn clear_right(&mut self) {
        if self.odd {
            self.right[0] &= 0x0f;
        }
    }
}

/// `truncate(AES_ECB(key, expand(len, pass, src)), half_len)`, XORed into `dst`.
///
/// "The expand(length, pass, input_bytes) function concatenates three arguments and
/// outputs 16 zero-padded octets": `input_bytes`, zeros, `length` as the fifteenth
/// octet and `pass` as the sixteenth (draft-19 moved the two to the end; four-pass
/// vectors of drafts up to 17 differ for that reason).
fn round(cipher: &Aes128, len: usize, pass: u8, src: &[u8], dst: &mut [u8]) {
    let mut block = GenericArray::from([0u8; 16]);
    block[..src.len()].copy_from_slice(src);
    block[14] = len as u8;
    block[15] = pass;
    cipher.encrypt_block(&mut block);
    for (d, k) in dst.iter_mut().zip(block.iter()) {
        *d ^= k;
    }
}

/// Encrypts `data` (1 to [`MAX_LEN`] octets) in place: algorithm steps 2 to 12.
pub(crate) fn encrypt(cipher: &Aes128, data: &mut [u8]) {
    let mut h = Halves::split(data);
    let (len, half) = (h.len, h.half);
    // Steps 3-5: right_1 = right_0 ^ truncate(AES(expand(len, 1, left_0))).
    round(cipher, len, 1, &h.left[..half], &mut h.right[..half]);
    h.clear_right();
    // Steps 6-7: left_1 = left_0 ^ truncate(AES(expand(len, 2, right_1))).
    round(cipher, len, 2, &h.right[..half], &mut h.left[..half]);
    h.clear_left();
    // Steps 8-9: right_2 = right_1 ^ truncate(AES(expand(len, 3, left_1))).
    round(cipher, len, 3, &h.left[..half], &mut h.right[..half]);
    h.clear_right();
    // Steps 10-11: left_2 = left_1 ^ truncate(AES(expand(len, 4, right_2))).
    round(cipher, len, 4, &h.right[..half], &mut h.left[..half]);
    h.clear_left();
    h.join(data);
}

/// Decrypts `data` in place ("Load Balancer Actions", four-pass case). When the first
/// `wanted` octets lie entirely in the left half (`2 * wanted <= len`, i.e. the nonce is
/// at least as long as the server ID) three passes suffice, and only those octets of the
/// result are meaningful; otherwise all four passes run and all of `data` is plaintext.
///
/// The draft's pseudocode clears `left_1` after computing `right_1`; it must clear
/// `right_1` (followed literally, encrypted test vector 1 decodes to the wrong server
/// ID). This follows the encryption steps, which are right.
pub(crate) fn decrypt(cipher: &Aes128, data: &mut [u8], wanted: usize) {
    let mut h = Halves::split(data);
    let (len, half) = (h.len, h.half);
    // left_1 = left_2 ^ truncate(AES(expand(len, 4, right_2)))
    round(cipher, len, 4, &h.right[..half], &mut h.left[..half]);
    h.clear_left();
    // right_1 = right_2 ^ truncate(AES(expand(len, 3, left_1)))
    round(cipher, len, 3, &h.left[..half], &mut h.right[..half]);
    h.clear_right(); // erratum: the draft says clear_first_bits(left_1, 4)
                     // left_0 = left_1 ^ truncate(AES(expand(len, 2, right_1)))
    round(cipher, len, 2, &h.right[..half], &mut h.left[..half]);
    h.clear_left();
    if 2 * wanted > len {
        // right_0 = right_1 ^ truncate(AES(expand(len, 1, left_0)))
        round(cipher, len, 1, &h.left[..half], &mut h.right[..half]);
        h.clear_right();
    }
    h.join(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::KeyInit;

    fn key(k: [u8; 16]) -> Aes128 {
        Aes128::new(&GenericArray::from(k))
    }

    #[test]
    fn split_and_join_an_odd_length() {
        // The draft's example: 0x7040b81b55ccf3 splits into 0x7040b810 and 0x0b55ccf3.
        let data = [0x70, 0x40, 0xb8, 0x1b, 0x55, 0xcc, 0xf3];
        let h = Halves::split(&data);
        assert_eq!(h.left[..4], [0x70, 0x40, 0xb8, 0x10]);
        assert_eq!(h.right[..4], [0x0b, 0x55, 0xcc, 0xf3]);
        let mut out = [0u8; 7];
        h.join(&mut out);
        assert_eq!(out, data);
    }

    #[test]
    fn expand_puts_length_and_pass_last() {
        // expand(0x06, 0x02, 0xaaba3c) = 0xaaba3c00000000000000000000000602: check it
        // through the round function with a known AES output (encrypting the expanded
        // block directly must give the same keystream).
        let c = key([7; 16]);
        let mut direct = GenericArray::from([
            0xaa, 0xba, 0x3c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x06, 0x02,
        ]);
        c.encrypt_block(&mut direct);
        let mut dst = [0u8; 3];
        round(&c, 6, 2, &[0xaa, 0xba, 0x3c], &mut dst);
        assert_eq!(dst, direct[..3]);
    }

    #[test]
    fn every_length_round_trips() {
        let c = key([0x42; 16]);
        for len in 1..=MAX_LEN {
            let plain: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
            let mut data = plain.clone();
            encrypt(&c, &mut data);
            if len >= 4 {
                assert_ne!(data, plain, "len {len}");
            }
            let mut back = data.clone();
            decrypt(&c, &mut back, len);
            assert_eq!(back, plain, "len {len}");
            let mut prefix = data.clone();
            decrypt(&c, &mut prefix, len / 2);
            assert_eq!(prefix[..len / 2], plain[..len / 2], "len {len}");
        }
    }
}
