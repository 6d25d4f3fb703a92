//! CHAP (RFC 1994 with MD5, as RFC 7143 §12.1.3 uses it): the target challenges,
//! the initiator answers MD5(id ‖ secret ‖ challenge); optionally the initiator
//! challenges back (mutual CHAP).

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

pub use crate::export::Chap;

/// MD5(id ‖ secret ‖ challenge).
pub fn response(id: u8, secret: &[u8], challenge: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update([id]);
    h.update(secret);
    h.update(challenge);
    h.finalize().into()
}

/// Checks an initiator's `CHAP_R` in constant time.
pub fn verify(id: u8, secret: &[u8], challenge: &[u8], answer: &[u8]) -> bool {
    let want = response(id, secret, challenge);
    answer.len() == want.len() && bool::from(want.ct_eq(answer))
}

/// Decodes a CHAP binary value: `0x…` hex or `0b…` base64 (RFC 7143 §6.1).
pub fn decode_binary(v: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    if let Some(h) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        // An odd number of digits has an implied leading zero.
        let padded = if h.len() % 2 == 1 {
            format!("0{h}")
        } else {
            h.to_string()
        };
        hex::decode(padded).ok()
    } else if let Some(b) = v.strip_prefix("0b").or_else(|| v.strip_prefix("0B")) {
        base64::engine::general_purpose::STANDARD.decode(b).ok()
    } else {
        None
    }
}

pub fn encode_binary(b: &[u8]) -> String {
    format!("0x{}", hex::encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_verify_only_with_the_right_secret() {
        let ch = [7u8; 16];
        let r = response(3, b"secret-secret", &ch);
        assert!(verify(3, b"secret-secret", &ch, &r));
        assert!(!verify(3, b"secret-secreu", &ch, &r));
        assert!(!verify(4, b"secret-secret", &ch, &r));
        assert!(!verify(3, b"secret-secret", &ch, &r[..15]));
        // MD5(0x01 ‖ "a" ‖ 0x00000000), computed with Python's hashlib.
        assert_eq!(
            hex::encode(response(1, b"a", &[0u8; 4])),
            "7bf8ece08e2b30ce2684651b7ac591f8"
        );
    }

    #[test]
    fn binary_values_decode_in_both_forms() {
        assert_eq!(decode_binary("0x0a0B").unwrap(), vec![10, 11]);
        assert_eq!(decode_binary("0xabc").unwrap(), vec![0x0a, 0xbc]);
        assert_eq!(decode_binary("0bAQI=").unwrap(), vec![1, 2]);
        assert!(decode_binary("1234").is_none());
        assert!(decode_binary("0xzz").is_none());
        assert_eq!(encode_binary(&[1, 255]), "0x01ff");
    }
}
