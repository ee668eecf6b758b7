//! The local session index table: which peer each of our 32-bit session indices belongs to.
//!
//! Indices are drawn at random (so a sender cannot guess another session's) and registered here
//! the moment a session or initiation takes one; [`Sessions`](super::Sessions) transitions return
//! the indices they drop as [`Retired`], and [`IndexTable::release`] is the only way one leaves.
//! Invariant (checked by `Node::check_invariants` in the simulation tests): the table holds
//! exactly the indices that the peers' session slots hold, each mapped to its own peer.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use meshd_crypto::CoreRng;
use rand_core::RngCore;

use super::sessions::Retired;
use crate::core::switch::PeerId;

/// Index keys are random, so hashing them again buys nothing; lookups by attacker-chosen keys
/// cannot degrade the table because only this node inserts.
#[derive(Default)]
struct IndexHasher(u64);

impl Hasher for IndexHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Default)]
pub(crate) struct IndexTable {
    map: HashMap<u32, PeerId, BuildHasherDefault<IndexHasher>>,
}

impl IndexTable {
    /// Draws an unused random index and registers it for `peer`.
    pub fn allocate(&mut self, rng: &mut CoreRng, peer: PeerId) -> u32 {
        loop {
            let index = rng.next_u32();
            if let std::collections::hash_map::Entry::Vacant(e) = self.map.entry(index) {
                e.insert(peer);
                return index;
            }
        }
    }

    /// The peer `index` belongs to.
    #[inline]
    pub fn lookup(&self, index: u32) -> Option<PeerId> {
        self.map.get(&index).copied()
    }

    /// Forgets indices whose sessions or initiations are gone.
    pub fn release(&mut self, retired: Retired) {
        for index in retired.iter() {
            self.map.remove(&index);
        }
    }

    /// Forgets one index that was allocated but never installed (the message failed).
    pub fn release_unused(&mut self, index: u32) {
        self.map.remove(&index);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}
