//! Cookies: how a responder under load makes an initiator prove it can receive at its source
//! address before the responder spends any Diffie-Hellman work on it (WireGuard's mac2 design).
//!
//! Owns the cookie secret ([`CookieSecret`]), the cookie of a source address, mac2 (a keyed MAC
//! under the cookie over a handshake message up to mac2) and the sealing of a cookie in a
//! CookieReply (ChaCha20-Poly1305 from ring under a key derived from the responder's public key,
//! with a random nonce and the initiation's mac1 as associated data, so a reply is bound to the
//! one initiation it answers). The key is public by design (whoever knows the responder's public
//! key can derive it, as in WireGuard): the encryption hides the cookie from observers who do
//! not, and the mac1 binding keeps a reply from serving another initiation. So a random 96-bit
//! nonce is enough; a repeat would reveal nothing the key's holders cannot already read.
//! Invariants: none of these functions does DH work; the cookie secret is zeroized on drop and
//! never printed; every comparison of a MAC is constant time. The caller owns the secret's
//! rotation (this crate reads no clock).

use core::fmt;

use blake2::digest::consts::U16;
use blake2::digest::{Digest, Mac};
use blake2::{Blake2s256, Blake2sMac};
use rand_core::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::keys::PublicKey;
use crate::rng::CoreRng;
use crate::session::TAG_LEN;
use crate::CryptoError;

/// Length of a cookie (and of the mac2 it keys).
pub const COOKIE_LEN: usize = 16;
/// Length of mac2.
pub const MAC2_LEN: usize = 16;
/// Length of the random ChaCha20-Poly1305 nonce of a CookieReply.
pub const COOKIE_NONCE_LEN: usize = 12;
/// Length of a sealed cookie: the cookie and its tag.
pub const SEALED_COOKIE_LEN: usize = COOKIE_LEN + TAG_LEN;

/// A cookie: a MAC of the source address under the responder's current [`CookieSecret`].
pub type Cookie = [u8; COOKIE_LEN];

/// Domain separation of the key that seals cookie replies to initiators of `receiver`.
const COOKIE_LABEL: &[u8] = b"meshd-cookie-v1";

/// The responder's secret that cookies are MACs under. Rotating it (the caller does, every two
/// minutes) expires every cookie handed out under the old one.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct CookieSecret([u8; 32]);

impl CookieSecret {
    /// A fresh secret from the core's seeded generator.
    pub fn generate(rng: &mut CoreRng) -> CookieSecret {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        CookieSecret(bytes)
    }

    /// The cookie of a source address (its IP bytes followed by its port, as the caller encodes
    /// them): keyed BLAKE2s-128 under this secret.
    pub fn cookie(&self, source: &[u8]) -> Cookie {
        keyed_mac(&self.0, source)
    }
}

impl fmt::Debug for CookieSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CookieSecret(..)")
    }
}

fn keyed_mac(key: &[u8], msg: &[u8]) -> [u8; 16] {
    // Keys of 1 to 32 bytes are valid for BLAKE2s; ours are 16 or 32, so this cannot fail.
    let mut mac = Blake2sMac::<U16>::new_with_salt_and_personal(key, &[], &[])
        .expect("BLAKE2s takes keys of up to 32 bytes");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// mac2 of a handshake message: keyed BLAKE2s-128 under `cookie` over every byte before mac2.
pub fn compute_mac2(cookie: &Cookie, msg: &[u8]) -> [u8; MAC2_LEN] {
    keyed_mac(cookie, msg)
}

/// Checks `mac` against mac2 of `msg` under `cookie`, in constant time.
pub fn verify_mac2(cookie: &Cookie, msg: &[u8], mac: &[u8]) -> bool {
    constant_time_eq(&compute_mac2(cookie, msg), mac)
}

/// The key that seals cookie replies sent by `receiver` (the responder): BLAKE2s-256(
/// `"meshd-cookie-v1"` || its public key). The initiator knows that key, which is all it needs.
pub fn cookie_key(receiver: &PublicKey) -> [u8; 32] {
    let mut hasher = Blake2s256::new();
    hasher.update(COOKIE_LABEL);
    hasher.update(receiver.as_bytes());
    hasher.finalize().into()
}

fn reply_cipher(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("32 bytes is the key length"))
}

/// Seals `cookie` for a CookieReply: ChaCha20-Poly1305 under `key` ([`cookie_key`] of the
/// responder) with the random `nonce`, and the answered initiation's mac1 as associated data.
pub fn seal_cookie(
    key: &[u8; 32],
    nonce: &[u8; COOKIE_NONCE_LEN],
    cookie: &Cookie,
    mac1: &[u8],
) -> [u8; SEALED_COOKIE_LEN] {
    let mut sealed = [0u8; SEALED_COOKIE_LEN];
    sealed[..COOKIE_LEN].copy_from_slice(cookie);
    let tag = reply_cipher(key)
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(mac1),
            &mut sealed[..COOKIE_LEN],
        )
        .expect("16 bytes are far below the AEAD's limit");
    sealed[COOKIE_LEN..].copy_from_slice(tag.as_ref());
    sealed
}

/// Opens a sealed cookie from a CookieReply; fails unless it was sealed under `key` with this
/// `nonce` for the initiation whose mac1 is `mac1`.
pub fn open_cookie(
    key: &[u8; 32],
    nonce: &[u8; COOKIE_NONCE_LEN],
    sealed: &[u8],
    mac1: &[u8],
) -> Result<Cookie, CryptoError> {
    if sealed.len() != SEALED_COOKIE_LEN {
        return Err(CryptoError::Decrypt);
    }
    let mut cookie = [0u8; COOKIE_LEN];
    cookie.copy_from_slice(&sealed[..COOKIE_LEN]);
    let tag: [u8; TAG_LEN] = sealed[COOKIE_LEN..].try_into().expect("length checked");
    reply_cipher(key)
        .open_in_place_separate_tag(
            Nonce::assume_unique_for_key(*nonce),
            Aad::from(mac1),
            Tag::from(tag),
            &mut cookie,
            0..,
        )
        .map_err(|_| CryptoError::Decrypt)?;
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::StaticSecret;

    fn responder() -> PublicKey {
        StaticSecret::from_bytes([7; 32]).public_key()
    }

    #[test]
    fn cookie_depends_on_the_secret_and_the_source() {
        let mut rng = CoreRng::from_seed([1; 32]);
        let a = CookieSecret::generate(&mut rng);
        let b = CookieSecret::generate(&mut rng);
        assert_eq!(a.cookie(b"10.0.0.1:1"), a.cookie(b"10.0.0.1:1"));
        assert_ne!(a.cookie(b"10.0.0.1:1"), a.cookie(b"10.0.0.1:2"));
        assert_ne!(a.cookie(b"10.0.0.1:1"), b.cookie(b"10.0.0.1:1"));
    }

    #[test]
    fn mac2_verifies_only_under_its_cookie_and_message() {
        let cookie = [3u8; COOKIE_LEN];
        let mac = compute_mac2(&cookie, b"message");
        assert!(verify_mac2(&cookie, b"message", &mac));
        assert!(!verify_mac2(&[4; COOKIE_LEN], b"message", &mac));
        assert!(!verify_mac2(&cookie, b"messagf", &mac));
        assert!(!verify_mac2(&cookie, b"message", &[0; MAC2_LEN]));
        assert!(!verify_mac2(&cookie, b"message", &mac[..15]));
    }

    #[test]
    fn sealed_cookie_opens_only_for_its_initiation_and_responder() {
        let key = cookie_key(&responder());
        let nonce = [9u8; COOKIE_NONCE_LEN];
        let cookie = [5u8; COOKIE_LEN];
        let mac1 = [6u8; 16];
        let sealed = seal_cookie(&key, &nonce, &cookie, &mac1);
        assert_eq!(open_cookie(&key, &nonce, &sealed, &mac1), Ok(cookie));
        assert!(open_cookie(&key, &nonce, &sealed, &[7u8; 16]).is_err());
        let other = cookie_key(&StaticSecret::from_bytes([8; 32]).public_key());
        assert!(open_cookie(&other, &nonce, &sealed, &mac1).is_err());
        assert!(open_cookie(&key, &[0; COOKIE_NONCE_LEN], &sealed, &mac1).is_err());
        for at in 0..SEALED_COOKIE_LEN {
            let mut flipped = sealed;
            flipped[at] ^= 1;
            assert!(open_cookie(&key, &nonce, &flipped, &mac1).is_err());
        }
        assert!(open_cookie(&key, &nonce, &sealed[..31], &mac1).is_err());
    }
}
