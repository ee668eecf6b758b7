//! Ed25519 signing keys: the network key that admits members, and each node's own signing key.
//!
//! Owns [`NetworkSecret`] (held by admins; its public half, the [`NetworkId`], names the network
//! and verifies every certificate and revocation), [`SigningKey`] (a node's key for signing its
//! own gossip record, derived from its X25519 static secret so a node has one key file) and
//! [`SigningPublicKey`]. Invariants: secret seeds are zeroized on drop and never printed; signing
//! is deterministic (Ed25519), so nothing here needs randomness; verification never panics on
//! any input. Callers start every signed message with a domain label of their own (certificate,
//! record, revocation), so a signature made for one purpose is never valid for another.

use core::fmt;
use core::str::FromStr;

use ring::digest::{Context, SHA256};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use zeroize::{Zeroize, Zeroizing};

use crate::keys::{decode_key, encode_key, BASE64_KEY_LEN, KEY_LEN};
use crate::{CryptoError, StaticSecret};

/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// Label under which a node's signing key is derived from its static secret.
const SIGNING_KEY_LABEL: &[u8] = b"meshd v1 node signing key\0";

/// An Ed25519 public key: a node's signing key or, as [`NetworkId`], a network's.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SigningPublicKey([u8; KEY_LEN]);

/// A network is named by the public half of its network key.
pub type NetworkId = SigningPublicKey;

impl SigningPublicKey {
    /// Wraps 32 bytes. Whether they are a valid curve point is only known when verifying.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        SigningPublicKey(bytes)
    }

    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Checks `signature` over `message` (which the caller starts with its domain label).
    /// False for any malformed key or signature.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        signature.len() == SIGNATURE_LEN
            && UnparsedPublicKey::new(&ED25519, &self.0)
                .verify(message, signature)
                .is_ok()
    }
}

impl fmt::Display for SigningPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; BASE64_KEY_LEN];
        f.write_str(encode_key(&self.0, &mut buf))
    }
}

impl fmt::Debug for SigningPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; BASE64_KEY_LEN];
        let text = encode_key(&self.0, &mut buf);
        write!(f, "SigningPublicKey({}..)", &text[..8])
    }
}

impl FromStr for SigningPublicKey {
    type Err = CryptoError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        decode_key(text).map(SigningPublicKey)
    }
}

fn sign_with(pair: &Ed25519KeyPair, message: &[u8]) -> [u8; SIGNATURE_LEN] {
    let mut out = [0u8; SIGNATURE_LEN];
    out.copy_from_slice(pair.sign(message).as_ref());
    out
}

/// Builds the key pair for a seed. Every 32-byte string is a valid Ed25519 seed.
fn pair_from_seed(seed: &[u8; KEY_LEN]) -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(seed).expect("any 32 bytes are an Ed25519 seed")
}

fn public_of(pair: &Ed25519KeyPair) -> SigningPublicKey {
    let mut bytes = [0u8; KEY_LEN];
    bytes.copy_from_slice(pair.public_key().as_ref());
    SigningPublicKey(bytes)
}

/// The network key: whoever holds it admits members and revokes them.
pub struct NetworkSecret {
    seed: Zeroizing<[u8; KEY_LEN]>,
    pair: Ed25519KeyPair,
}

impl NetworkSecret {
    /// The key for a 32-byte seed (from the OS random source when founding a network).
    pub fn from_seed(seed: [u8; KEY_LEN]) -> Self {
        let seed = Zeroizing::new(seed);
        let pair = pair_from_seed(&seed);
        NetworkSecret { seed, pair }
    }

    /// The network's public name.
    pub fn network_id(&self) -> NetworkId {
        public_of(&self.pair)
    }

    /// Signs `message`, which the caller starts with its domain label.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        sign_with(&self.pair, message)
    }

    /// The seed as base64, for the secret file (zeroized when dropped).
    pub fn to_base64(&self) -> Zeroizing<String> {
        let mut buf = Zeroizing::new([0u8; BASE64_KEY_LEN]);
        Zeroizing::new(encode_key(&self.seed, &mut buf).to_string())
    }

    /// Reads the secret file's text.
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let mut seed = decode_key(text)?;
        let secret = NetworkSecret::from_seed(seed);
        seed.zeroize();
        Ok(secret)
    }
}

impl Clone for NetworkSecret {
    fn clone(&self) -> Self {
        NetworkSecret::from_seed(*self.seed)
    }
}

impl fmt::Debug for NetworkSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetworkSecret(..)")
    }
}

/// A node's own signing key, derived from its static secret.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// The public half, carried in the node's certificate.
    pub fn public(&self) -> SigningPublicKey {
        public_of(&self.pair)
    }

    /// Signs `message`, which the caller starts with its domain label.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        sign_with(&self.pair, message)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({:?})", self.public())
    }
}

impl StaticSecret {
    /// The node's Ed25519 signing key: SHA-256 over a fixed label and this secret. One key file
    /// then holds both identities, and the label keeps the two uses apart.
    pub fn signing_key(&self) -> SigningKey {
        let mut ctx = Context::new(&SHA256);
        ctx.update(SIGNING_KEY_LABEL);
        ctx.update(self.as_bytes());
        let digest = ctx.finish();
        let mut seed = Zeroizing::new([0u8; KEY_LEN]);
        seed.copy_from_slice(digest.as_ref());
        SigningKey {
            pair: pair_from_seed(&seed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_signature_verifies_only_with_same_label_and_message() {
        let secret = NetworkSecret::from_seed([7; 32]);
        let id = secret.network_id();
        let sig = secret.sign(b"label-a message");
        assert!(id.verify(b"label-a message", &sig));
        assert!(!id.verify(b"label-b message", &sig));
        assert!(!id.verify(b"label-a message", &sig[..63]));
        let other = NetworkSecret::from_seed([8; 32]).network_id();
        assert!(!other.verify(b"label-a message", &sig));
    }

    #[test]
    fn signing_key_is_deterministic_per_static_secret() {
        let a = StaticSecret::from_bytes([1; 32]).signing_key().public();
        let b = StaticSecret::from_bytes([1; 32]).signing_key().public();
        let c = StaticSecret::from_bytes([2; 32]).signing_key().public();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let key = StaticSecret::from_bytes([1; 32]).signing_key();
        let sig = key.sign(b"lm");
        assert!(a.verify(b"lm", &sig));
    }

    #[test]
    fn network_secret_text_round_trip_and_redacted_debug() {
        let secret = NetworkSecret::from_seed([9; 32]);
        let back = NetworkSecret::from_base64(&secret.to_base64()).unwrap();
        assert_eq!(back.network_id(), secret.network_id());
        assert_eq!(format!("{secret:?}"), "NetworkSecret(..)");
        let id = secret.network_id();
        assert_eq!(id.to_string().parse::<NetworkId>().unwrap(), id);
    }

    #[test]
    fn verify_never_panics_on_garbage_keys() {
        let key = SigningPublicKey::from_bytes([0xff; 32]);
        assert!(!key.verify(b"", &[0u8; 64]));
        assert!(!key.verify(b"", &[]));
    }
}
