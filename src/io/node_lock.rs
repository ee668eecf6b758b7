//! The data-path lock: the one way to reach the node, and the proof that nothing slow runs under it.
//!
//! Owns the mutex around the node and a thread-local count of the node guards this thread holds.
//! [`NodeLock::lock`] is the only way to take the node; its guard raises the count and lowers it on
//! drop (also when unwinding). Every function that touches the state directory calls
//! [`ensure_unlocked`] first, which refuses while this thread holds the node: a `debug_assert`
//! fails in debug builds and tests, and release builds return an error (logged by the caller, the
//! node keeps what it had) and count it in [`violations`]. Invariants: no file I/O or fsync runs
//! while a worker's guard is alive, so a slow disk stalls at most the thread that writes, never the
//! data path of the others; a guard is never held across an `.await` (it is `!Send`, and the
//! workers take it only in synchronous helpers). Cost: two thread-local increments per lock taken,
//! once per batch, nothing per packet.

use std::cell::Cell;
use std::io;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use crate::core::Node;

thread_local! {
    /// Node guards alive on this thread.
    static HELD: Cell<u32> = const { Cell::new(0) };
}

/// State-directory operations refused because their thread held the node (release builds).
static VIOLATIONS: AtomicU64 = AtomicU64::new(0);

/// The node every worker shares.
pub struct NodeLock(Mutex<Node>);

/// The node, taken for one worker's lane; file I/O is refused on this thread until it drops.
pub struct NodeGuard<'a> {
    guard: MutexGuard<'a, Node>,
}

impl NodeLock {
    pub fn new(node: Node) -> NodeLock {
        NodeLock(Mutex::new(node))
    }

    /// Takes the node for worker `lane`: what the node produces until the guard drops is queued
    /// on that worker's lane, which only that worker drains (see `Node::set_lane`). Lock poisoning
    /// would mean a worker panicked mid-update; the node's own invariants are checked by its
    /// tests, and the daemon keeps serving rather than cascading the panic.
    pub fn lock(&self, lane: u8) -> NodeGuard<'_> {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        HELD.with(|held| held.set(held.get() + 1));
        guard.set_lane(lane);
        NodeGuard { guard }
    }
}

impl Drop for NodeGuard<'_> {
    fn drop(&mut self) {
        HELD.with(|held| held.set(held.get().saturating_sub(1)));
    }
}

impl Deref for NodeGuard<'_> {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.guard
    }
}

impl DerefMut for NodeGuard<'_> {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.guard
    }
}

/// Whether this thread holds the node now.
pub fn held() -> bool {
    HELD.with(Cell::get) > 0
}

/// How many state-directory operations were refused because they ran under the node lock.
pub fn violations() -> u64 {
    VIOLATIONS.load(Relaxed)
}

/// The release-build half of [`ensure_unlocked`]: an error (and a count) if this thread holds the
/// node.
fn refuse_if_held(what: &str) -> io::Result<()> {
    if !held() {
        return Ok(());
    }
    VIOLATIONS.fetch_add(1, Relaxed);
    Err(io::Error::other(format!(
        "{what} refused: it would run under the data-path lock"
    )))
}

/// Called first by every function that reads, writes or syncs the state directory: fails a debug
/// assertion, or in release returns an error, when this thread holds the node.
pub fn ensure_unlocked(what: &str) -> io::Result<()> {
    let result = refuse_if_held(what);
    debug_assert!(
        result.is_ok(),
        "{what} under the data-path lock (see src/io/node_lock.rs)"
    );
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::path::PathBuf;
    use std::time::Instant;

    use meshd_crypto::{Certificate, NetworkSecret, StaticSecret};

    use crate::core::switch::FdbConfig;
    use crate::core::NodeConfig;

    fn node() -> Node {
        let network = NetworkSecret::from_seed([7; 32]);
        let secret = StaticSecret::from_bytes([3; 32]);
        let certificate = Certificate::issue(
            &network,
            "h1",
            secret.public_key(),
            secret.signing_key().public(),
            1_800_000_000,
            1_800_086_400,
            false,
        )
        .unwrap();
        Node::new(NodeConfig {
            network_secret: None,
            certificate_lifetime: std::time::Duration::from_secs(86_400),
            advertise: Vec::new(),
            revocations: Vec::new(),
            network: network.network_id(),
            certificate,
            secret,
            peers: Vec::new(),
            fdb: FdbConfig::default(),
            max_frame: 1518,
            underlay_mtu: 1500,
            rng_seed: [1; 32],
            ciphers: crate::core::cipher::CipherPolicy::new(Default::default(), false),
            now: Instant::now(),
            unix_nanos_at_now: 1_800_000_100 * 1_000_000_000,
        })
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("meshd-node-lock-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A state-directory write under the node's guard trips the check (a panic in debug builds,
    /// an error and a count in release) and writes nothing; the same write after the guard drops
    /// goes through.
    #[test]
    fn a_state_write_under_the_node_lock_is_refused_and_not_otherwise() {
        let dir = temp_dir("write");
        let members = dir.join("members");
        let lock = NodeLock::new(node());
        let before = violations();
        let under_lock = catch_unwind(AssertUnwindSafe(|| {
            let node = lock.lock(1);
            let written = crate::enroll::write_atomically(&members, b"under the lock\n");
            drop(node);
            written
        }));
        if cfg!(debug_assertions) {
            let panic = under_lock.expect_err("debug builds fail the assertion");
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .unwrap_or_default();
            assert!(message.contains("under the data-path lock"), "{message}");
        } else {
            let err = under_lock
                .unwrap()
                .expect_err("release builds return an error");
            assert!(err.to_string().contains("data-path lock"), "{err}");
        }
        assert!(violations() > before, "the refusal is counted");
        assert!(!members.exists(), "nothing was written under the lock");
        assert!(!held(), "unwinding released the flag with the guard");

        // The same write with the node released, as the duties do it.
        let node = lock.lock(1);
        let reachable = node.reachable_members(8);
        drop(node);
        crate::enroll::write_atomically(&members, b"after the lock\n").unwrap();
        assert_eq!(std::fs::read(&members).unwrap(), b"after the lock\n");
        assert!(reachable.is_empty());

        // Every state-directory entry point checks, reads included.
        let mut state = super::super::state::StateDir::new(dir.clone());
        let node = lock.lock(0);
        for attempt in [
            catch_unwind(AssertUnwindSafe(|| {
                super::super::invites::load_pending(&dir).map(drop)
            })),
            catch_unwind(AssertUnwindSafe(|| {
                super::super::state::write_revocation(&dir, &revocation()).map(drop)
            })),
            catch_unwind(AssertUnwindSafe(|| {
                crate::enroll::create_state_dir(&dir.join("sub"))
            })),
        ] {
            match attempt {
                Err(panic) if !cfg!(debug_assertions) => std::panic::resume_unwind(panic),
                Err(_) => {}
                Ok(result) => assert!(result.is_err()),
            }
        }
        drop(node);
        assert!(state.scan_invites().is_some_and(|p| p.is_empty()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn revocation() -> crate::core::membership::Revocation {
        let network = NetworkSecret::from_seed([7; 32]);
        let key = StaticSecret::from_bytes([4; 32]).public_key();
        crate::core::membership::Revocation::issue(
            &network,
            key,
            "h2",
            1_800_000_000,
            1_800_086_400,
        )
        .unwrap()
    }

    #[test]
    fn the_flag_follows_the_guards_of_this_thread_only() {
        assert!(!held());
        assert!(refuse_if_held("reading").is_ok());
        let cell = Cell::new(0u32);
        HELD.with(|h| cell.set(h.get()));
        {
            // A second guard (nested helpers) keeps the flag up until both drop.
            HELD.with(|h| h.set(h.get() + 2));
            assert!(held());
            let before = violations();
            let err = refuse_if_held("writing members").unwrap_err();
            assert!(err.to_string().contains("writing members"), "{err}");
            assert!(violations() > before);
            std::thread::spawn(|| assert!(!held(), "another thread is not under our lock"))
                .join()
                .unwrap();
            HELD.with(|h| h.set(h.get() - 1));
            assert!(held());
            HELD.with(|h| h.set(h.get() - 1));
        }
        assert!(!held());
        assert_eq!(HELD.with(Cell::get), cell.get());
    }
}
