//! Glue between snow and meshd's own randomness and X25519.
//!
//! Owns the `CryptoResolver` every handshake is built with: its RNG is a [`CoreRng`] forked by
//! the caller (so snow never reaches the OS random source and tests replay exactly), its
//! Curve25519 DH is [`X25519`] below, and hashing and the handshake cipher are delegated to
//! snow's `DefaultResolver`. Invariants: the resolver hands its RNG out at most once, so two
//! handshake states can never share a random stream; `X25519` zeroizes its private scalar (and
//! the copy of the local static pair it uses to skip recomputing that public key) on drop, and
//! refuses an all-zero shared secret (the sign of a low-order peer point).

use core::cell::Cell;

use curve25519_dalek::montgomery::MontgomeryPoint;
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::keys::StaticSecret;
use crate::rng::CoreRng;

const X25519_LEN: usize = 32;

/// The X25519 public key of `private` (clamped as RFC 7748 specifies).
pub(crate) fn x25519_public(private: &[u8; X25519_LEN]) -> [u8; X25519_LEN] {
    let scalar = Zeroizing::new(*private);
    MontgomeryPoint::mul_base_clamped(*scalar).to_bytes()
}

/// Snow resolver for one handshake: a one-shot RNG plus meshd's X25519, which already knows
/// the local static key pair so snow's loading of it costs no scalar multiplication.
pub(crate) struct CoreResolver {
    rng: Cell<Option<CoreRng>>,
    local: KnownPair,
}

impl CoreResolver {
    pub(crate) fn new(rng: CoreRng, local: &StaticSecret) -> Self {
        CoreResolver {
            rng: Cell::new(Some(rng)),
            local: KnownPair {
                private: *local.as_bytes(),
                public: *local.public_key().as_bytes(),
            },
        }
    }
}

/// A private key whose public half is already computed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
struct KnownPair {
    private: [u8; X25519_LEN],
    #[zeroize(skip)]
    public: [u8; X25519_LEN],
}

impl CryptoResolver for CoreResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        // A second request gets nothing (and snow fails the build) rather than a copy of the
        // same stream.
        self.rng.take().map(|rng| Box::new(rng) as Box<dyn Random>)
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519 {
                known: Some(self.local.clone()),
                ..X25519::default()
            })),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// Curve25519 Diffie-Hellman for snow, wiping its private scalar on drop.
#[derive(Default, Zeroize, ZeroizeOnDrop)]
pub(crate) struct X25519 {
    private: [u8; X25519_LEN],
    #[zeroize(skip)]
    public: [u8; X25519_LEN],
    /// Wipes itself on drop.
    #[zeroize(skip)]
    known: Option<KnownPair>,
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        X25519_LEN
    }

    fn priv_len(&self) -> usize {
        X25519_LEN
    }

    fn set(&mut self, privkey: &[u8]) {
        // Only StaticSecret bytes reach here, always priv_len() long; `set` cannot report an
        // error, so any other length would leave the key zeroed rather than half-copied.
        self.private.zeroize();
        if let Ok(bytes) = <[u8; X25519_LEN]>::try_from(privkey) {
            self.private = bytes;
        }
        self.public = match &self.known {
            Some(known) if equal_in_constant_time(&self.private, &known.private) => known.public,
            _ => x25519_public(&self.private),
        };
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        rng.try_fill_bytes(&mut self.private)?;
        self.public = x25519_public(&self.private);
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        &self.private
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let peer = pubkey
            .get(..X25519_LEN)
            .and_then(|bytes| <[u8; X25519_LEN]>::try_from(bytes).ok())
            .ok_or(snow::Error::Dh)?;
        let out = out.get_mut(..X25519_LEN).ok_or(snow::Error::Dh)?;
        let shared = Zeroizing::new(MontgomeryPoint(peer).mul_clamped(self.private).to_bytes());
        // Constant-time all-zero test: a low-order peer point contributes nothing secret.
        if shared.iter().fold(0u8, |acc, byte| acc | byte) == 0 {
            return Err(snow::Error::Dh);
        }
        out.copy_from_slice(&shared[..]);
        Ok(())
    }
}

fn equal_in_constant_time(a: &[u8; X25519_LEN], b: &[u8; X25519_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::tests::hex32;

    #[test]
    fn rfc7748_shared_secret_vector() {
        // RFC 7748 section 6.1.
        let alice = hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let bob_public = hex32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let shared = hex32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        let mut dh = X25519::default();
        dh.set(&alice);
        let mut out = [0u8; 56];
        dh.dh(&bob_public, &mut out).unwrap();
        assert_eq!(out[..32], shared);
    }

    #[test]
    fn low_order_point_and_short_input_are_refused() {
        let mut dh = X25519::default();
        dh.set(&[5u8; 32]);
        let mut out = [0u8; 32];
        assert!(dh.dh(&[0u8; 32], &mut out).is_err());
        assert!(dh.dh(&[9u8; 31], &mut out).is_err());
        assert!(dh.dh(&[9u8; 32], &mut [0u8; 31]).is_err());
    }

    #[test]
    fn known_pair_shortcut_gives_the_same_public_keys() {
        let local = StaticSecret::from_bytes([7; 32]);
        let resolver = CoreResolver::new(CoreRng::from_seed([0; 32]), &local);
        let mut dh = resolver.resolve_dh(&DHChoice::Curve25519).unwrap();
        dh.set(local.as_bytes());
        assert_eq!(dh.pubkey(), local.public_key().as_bytes());
        dh.set(&[8; 32]);
        assert_eq!(dh.pubkey(), &x25519_public(&[8; 32]));
    }

    #[test]
    fn rng_is_handed_out_once() {
        let local = StaticSecret::from_bytes([7; 32]);
        let resolver = CoreResolver::new(CoreRng::from_seed([0; 32]), &local);
        assert!(resolver.resolve_rng().is_some());
        assert!(resolver.resolve_rng().is_none());
    }
}
