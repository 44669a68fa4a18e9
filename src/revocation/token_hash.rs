//! The SHA-256 a `token_sha256` rule matches, and the ECDSA malleability it must survive.
//!
//! An ECDSA signature (r, s) is equally valid as (r, n − s), where n is the curve order. So
//! whoever holds an ES256/ES384 token can mint a second, different token string that says the
//! same thing and verifies. A rule keyed by the hash of one form must catch the other
//! (SPEC §3): for those algorithms we hash both forms.

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;

/// Order n of the P-256 group (SEC 2, §2.4.2), big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// Order n of the P-384 group (SEC 2, §2.5.1), big-endian.
const P384_ORDER: [u8; 48] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf,
    0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
];

/// Lowercase-hex-decodable SHA-256 of a compact token string.
pub fn sha256(token: &str) -> [u8; 32] {
    let d = digest(&SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A short, non-reversible handle for a token in logs: the first 12 hex digits of its
/// SHA-256 (`digest`). Never log the token itself.
pub fn hex_prefix(digest: &[u8; 32]) -> String {
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// The hashes a `token_sha256` rule may match for this token (whose SHA-256 is `digest`):
/// its own, plus, for ES256 and ES384, the hash of the same token with the signature's `s`
/// replaced by `n − s`.
pub fn token_hashes(token: &str, digest: [u8; 32], alg: Algorithm) -> Vec<[u8; 32]> {
    let mut hashes = vec![digest];
    let order: &[u8] = match alg {
        Algorithm::ES256 => &P256_ORDER,
        Algorithm::ES384 => &P384_ORDER,
        _ => return hashes,
    };
    if let Some(twin) = ecdsa_twin(token, order) {
        hashes.push(sha256(&twin));
    }
    hashes
}

/// The token with its ECDSA signature's `s` flipped to `n − s`, or None when the signature
/// does not have the JWS shape (`r || s`, each as long as the order).
fn ecdsa_twin(token: &str, order: &[u8]) -> Option<String> {
    let (signed, sig_b64) = token.rsplit_once('.')?;
    let sig = URL_SAFE_NO_PAD.decode(sig_b64).ok()?;
    if sig.len() != 2 * order.len() {
        return None;
    }
    let (r, s) = sig.split_at(order.len());
    let flipped = sub_be(order, s)?;
    let mut twin_sig = Vec::with_capacity(sig.len());
    twin_sig.extend_from_slice(r);
    twin_sig.extend_from_slice(&flipped);
    Some(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(twin_sig)))
}

/// a − b for equal-length big-endian unsigned integers; None when b is zero or b ≥ a, where
/// no valid twin exists.
fn sub_be(a: &[u8], b: &[u8]) -> Option<Vec<u8>> {
    if b.iter().all(|&x| x == 0) || b >= a {
        return None;
    }
    let mut out = vec![0u8; a.len()];
    let mut borrow = 0i16;
    for i in (0..a.len()).rev() {
        let mut d = i16::from(a[i]) - i16::from(b[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        // d is in 0..=255 here, so the cast is lossless.
        out[i] = d as u8;
    }
    Some(out)
}

/// Re-encodes an ES256/ES384 token into its malleated twin; public for tests that prove the
/// twin is still caught.
pub fn malleate(token: &str, alg: Algorithm) -> Option<String> {
    match alg {
        Algorithm::ES256 => ecdsa_twin(token, &P256_ORDER),
        Algorithm::ES384 => ecdsa_twin(token, &P384_ORDER),
        _ => None,
    }
}

/// Parses 64 lowercase hex digits.
pub fn parse_hex_sha256(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sha256_of_test_is_the_spec_example() {
        let h =
            parse_hex_sha256("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
                .unwrap();
        assert_eq!(sha256("test"), h);
    }

    #[test]
    fn uppercase_or_short_hashes_are_rejected() {
        assert!(parse_hex_sha256(&"A".repeat(64)).is_none());
        assert!(parse_hex_sha256("abc").is_none());
    }

    #[test]
    fn subtraction_borrows_across_bytes() {
        assert_eq!(sub_be(&[1, 0], &[0, 1]), Some(vec![0, 255]));
        assert_eq!(sub_be(&[1, 0], &[1, 0]), None);
        assert_eq!(sub_be(&[1, 0], &[0, 0]), None);
    }

    #[test]
    fn flipping_twice_gives_back_the_original_token() {
        let sig = URL_SAFE_NO_PAD.encode([7u8; 64]);
        let token = format!("aaa.bbb.{sig}");
        let twin = malleate(&token, Algorithm::ES256).unwrap();
        assert_ne!(twin, token);
        assert_eq!(malleate(&twin, Algorithm::ES256).unwrap(), token);
        assert_eq!(
            token_hashes(&token, sha256(&token), Algorithm::ES256).len(),
            2
        );
        assert_eq!(
            token_hashes(&token, sha256(&token), Algorithm::RS256).len(),
            1
        );
    }
}
