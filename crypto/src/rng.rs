//! The one source of randomness inside meshd's sans-IO core.
//!
//! Owns [`CoreRng`], a ChaCha20 stream generator. The io layer seeds one from the OS exactly
//! once at start-up; tests seed it with fixed bytes so whole simulations, handshakes included,
//! replay bit for bit. Invariants: a `CoreRng` is never cloned (two copies would emit the same
//! stream, which for ephemeral keys means key reuse), so handing randomness to another owner
//! goes through [`CoreRng::fork`], which reseeds the child from the parent's output. The state
//! is not printed by `Debug`.

use core::fmt;

use rand_chacha::rand_core::SeedableRng as _;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

/// A seeded ChaCha20 CSPRNG. Implements [`rand_core::RngCore`] + [`rand_core::CryptoRng`] and
/// snow's `Random`, so the same generator feeds key generation, Noise ephemerals and timer
/// jitter.
pub struct CoreRng {
    inner: ChaCha20Rng,
}

impl CoreRng {
    /// Creates a generator from a 32-byte seed. Seeds must be secret and uniformly random in
    /// production (take them from the OS); fixed seeds are for tests only.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        CoreRng {
            inner: ChaCha20Rng::from_seed(seed),
        }
    }

    /// Splits off an independent generator seeded from 32 bytes of this one's output.
    pub fn fork(&mut self) -> CoreRng {
        let mut seed = Zeroizing::new([0u8; 32]);
        self.inner.fill_bytes(&mut seed[..]);
        CoreRng::from_seed(*seed)
    }
}

impl RngCore for CoreRng {
    fn next_u32(&mut self) -> u32 {
        self.inner.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.inner.fill_bytes(dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.inner.try_fill_bytes(dest)
    }
}

impl CryptoRng for CoreRng {}

impl snow::types::Random for CoreRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.inner.fill_bytes(dest);
        Ok(())
    }
}

impl fmt::Debug for CoreRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CoreRng(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = CoreRng::from_seed([9; 32]);
        let mut b = CoreRng::from_seed([9; 32]);
        assert_eq!(a.next_u64(), b.next_u64());
        let (mut x, mut y) = ([0u8; 100], [0u8; 100]);
        a.fill_bytes(&mut x);
        b.fill_bytes(&mut y);
        assert_eq!(x, y);
        assert_ne!(CoreRng::from_seed([10; 32]).next_u64(), a.next_u64());
    }

    #[test]
    fn fork_is_deterministic_and_independent() {
        let mut parent_a = CoreRng::from_seed([1; 32]);
        let mut parent_b = CoreRng::from_seed([1; 32]);
        let mut child_a = parent_a.fork();
        let mut child_b = parent_b.fork();
        let child_word = child_a.next_u64();
        assert_eq!(child_word, child_b.next_u64());
        // The parent moved past the seed it gave away, and the child's stream differs from it.
        let parent_word = parent_a.next_u64();
        assert_ne!(parent_word, child_word);
        let mut second_child = parent_a.fork();
        assert_ne!(second_child.next_u64(), child_a.next_u64());
    }

    #[test]
    fn snow_random_draws_from_the_same_stream() {
        use snow::types::Random;
        let mut via_snow = CoreRng::from_seed([2; 32]);
        let mut via_rand = CoreRng::from_seed([2; 32]);
        let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
        Random::try_fill_bytes(&mut via_snow, &mut x).unwrap();
        via_rand.fill_bytes(&mut y);
        assert_eq!(x, y);
    }

    #[test]
    fn debug_hides_state() {
        assert_eq!(format!("{:?}", CoreRng::from_seed([0; 32])), "CoreRng(..)");
    }
}
