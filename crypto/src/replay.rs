//! Anti-replay for one receive key: which message counters have already been accepted.
//!
//! Owns [`ReplayWindow`], a sliding bitmap over the most recent [`REPLAY_WINDOW`] counters
//! ending at the highest counter accepted so far. A counter is new if it is above the highest,
//! or inside the window with its bit clear; anything older than the window is refused, since
//! its bit is no longer kept. Invariants: the bitmap is a fixed array of words used as a ring
//! (word `counter / 64` lives at slot `(counter / 64) % WORDS`); the words between the highest
//! counter's word and the oldest in-window word are always the current ones, because moving
//! the highest counter forward clears every slot it passes over, or the whole ring for a jump
//! of at least a ring's length. Nothing allocates, and all operations are O(1) except a jump,
//! which clears at most `WORDS` words.

use core::fmt;

/// How many counters, ending at the highest accepted, are tracked. Counters at or below
/// `highest - REPLAY_WINDOW` are refused. Larger than the 2048 the protocol needs, so that
/// reordering across several receive queues does not cost packets.
pub const REPLAY_WINDOW: u64 = 8192;

const WORD_BITS: u64 = u64::BITS as u64;

/// One word more than the window needs: the word holding the highest counter is only partly
/// inside the window, so the oldest in-window counter may sit one word further back.
const WORDS: usize = (REPLAY_WINDOW / WORD_BITS) as usize + 1;

/// Sliding bitmap of accepted counters. Use [`ReplayWindow::check`] before decrypting (cheap,
/// no state change) and [`ReplayWindow::accept`] after the tag has verified, so forged packets
/// cannot move the window.
#[derive(Clone)]
pub struct ReplayWindow {
    words: [u64; WORDS],
    /// The highest accepted counter, if any counter was accepted.
    highest: Option<u64>,
}

impl ReplayWindow {
    /// An empty window: every counter is new.
    pub fn new() -> Self {
        ReplayWindow {
            words: [0; WORDS],
            highest: None,
        }
    }

    /// The highest counter accepted so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Whether `counter` would be accepted now: not already seen and not older than the window.
    pub fn check(&self, counter: u64) -> bool {
        match self.highest {
            None => true,
            Some(highest) if counter > highest => true,
            Some(highest) if highest - counter >= REPLAY_WINDOW => false,
            Some(_) => {
                let (slot, mask) = Self::position(counter);
                self.words[slot] & mask == 0
            }
        }
    }

    /// Records `counter` as received. Returns false (and changes nothing) if it is a
    /// duplicate or older than the window. Call only after authentication succeeded.
    pub fn accept(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        match self.highest {
            Some(highest) if counter <= highest => {}
            Some(highest) => {
                self.advance(highest / WORD_BITS, counter / WORD_BITS);
                self.highest = Some(counter);
            }
            None => self.highest = Some(counter),
        }
        let (slot, mask) = Self::position(counter);
        self.words[slot] |= mask;
        true
    }

    /// Clears the slots of every word after `from_word` up to and including `to_word`: they
    /// held counters that have now fallen out of the window.
    fn advance(&mut self, from_word: u64, to_word: u64) {
        let distance = to_word - from_word;
        if distance >= WORDS as u64 {
            self.words = [0; WORDS];
            return;
        }
        for word in from_word + 1..=to_word {
            self.words[Self::slot(word)] = 0;
        }
    }

    fn slot(word: u64) -> usize {
        // Fits: the remainder is below WORDS.
        (word % WORDS as u64) as usize
    }

    fn position(counter: u64) -> (usize, u64) {
        (
            Self::slot(counter / WORD_BITS),
            1u64 << (counter % WORD_BITS),
        )
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("highest", &self.highest)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    /// The specification, written as plainly as possible.
    #[derive(Default)]
    struct Model {
        seen: HashSet<u64>,
        highest: Option<u64>,
    }

    impl Model {
        fn check(&self, counter: u64) -> bool {
            if self.seen.contains(&counter) {
                return false;
            }
            match self.highest {
                Some(highest) => counter > highest || highest - counter < REPLAY_WINDOW,
                None => true,
            }
        }

        fn accept(&mut self, counter: u64) -> bool {
            if !self.check(counter) {
                return false;
            }
            self.seen.insert(counter);
            self.highest = Some(self.highest.map_or(counter, |h| h.max(counter)));
            true
        }
    }

    #[test]
    fn in_order_and_duplicates() {
        let mut window = ReplayWindow::new();
        assert_eq!(window.highest(), None);
        for counter in 0..20_000 {
            assert!(window.check(counter));
            assert!(window.accept(counter));
            assert!(!window.check(counter));
            assert!(!window.accept(counter));
        }
        assert_eq!(window.highest(), Some(19_999));
    }

    #[test]
    fn reordering_inside_the_window_is_accepted_once() {
        let mut window = ReplayWindow::new();
        assert!(window.accept(10_000));
        let oldest = 10_000 - REPLAY_WINDOW + 1;
        // Every counter still inside the window, newest first.
        for counter in (oldest..10_000).rev() {
            assert!(window.accept(counter), "{counter}");
        }
        for counter in oldest..=10_000 {
            assert!(!window.accept(counter), "{counter}");
        }
        assert!(!window.check(oldest - 1));
        assert!(!window.accept(oldest - 1));
        assert_eq!(window.highest(), Some(10_000));
    }

    #[test]
    fn window_edge_is_exact_at_every_bit_offset() {
        for highest in [
            REPLAY_WINDOW,
            REPLAY_WINDOW + 1,
            REPLAY_WINDOW + 63,
            5 * REPLAY_WINDOW + 17,
        ] {
            let mut window = ReplayWindow::new();
            assert!(window.accept(highest));
            assert!(window.check(highest - REPLAY_WINDOW + 1), "{highest}");
            assert!(!window.check(highest - REPLAY_WINDOW), "{highest}");
        }
    }

    #[test]
    fn small_counters_before_the_window_fills() {
        let mut window = ReplayWindow::new();
        assert!(window.accept(5));
        assert!(window.accept(0));
        assert!(window.accept(3));
        assert!(!window.accept(0));
        assert_eq!(window.highest(), Some(5));
    }

    #[test]
    fn big_jumps_clear_stale_bits() {
        let mut window = ReplayWindow::new();
        for counter in 0..200 {
            window.accept(counter);
        }
        // Same slots, one ring length later: must not inherit the old bits.
        let jump = WORDS as u64 * WORD_BITS;
        assert!(window.accept(jump + 199));
        for counter in jump..jump + 199 {
            assert!(window.check(counter), "{counter}");
        }
        // And a jump to the top of the counter space.
        assert!(window.accept(u64::MAX - 1));
        assert!(window.check(u64::MAX));
        assert!(window.accept(u64::MAX));
        assert!(!window.accept(u64::MAX));
        assert!(window.accept(u64::MAX - REPLAY_WINDOW + 1));
        assert!(!window.check(u64::MAX - REPLAY_WINDOW));
        assert!(!window.check(0));
    }

    #[test]
    fn check_does_not_change_state() {
        let mut window = ReplayWindow::new();
        assert!(window.check(7));
        assert!(window.check(7));
        assert_eq!(window.highest(), None);
        assert!(window.accept(7));
    }

    /// One step of a test sequence: a counter relative to the current highest (to exercise
    /// the window and its edges) or an absolute one (to exercise jumps in both directions).
    #[derive(Debug, Clone)]
    enum Step {
        Near(i64),
        Absolute(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        let window = REPLAY_WINDOW as i64;
        prop_oneof![
            6 => (-2 * window..64i64).prop_map(Step::Near),
            2 => (-window - 70..-window + 70).prop_map(Step::Near),
            1 => (0..20 * window).prop_map(Step::Near),
            1 => any::<u64>().prop_map(Step::Absolute),
            1 => (u64::MAX - 3 * REPLAY_WINDOW..=u64::MAX).prop_map(Step::Absolute),
            1 => (0..4 * REPLAY_WINDOW).prop_map(Step::Absolute),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn matches_the_model(steps in proptest::collection::vec(step(), 1..400)) {
            let mut window = ReplayWindow::new();
            let mut model = Model::default();
            for step in steps {
                let base = model.highest.unwrap_or(0);
                let counter = match step {
                    Step::Near(offset) => base.saturating_add_signed(offset),
                    Step::Absolute(counter) => counter,
                };
                prop_assert_eq!(window.check(counter), model.check(counter), "check {}", counter);
                prop_assert_eq!(window.accept(counter), model.accept(counter), "accept {}", counter);
                prop_assert_eq!(window.highest(), model.highest);
                // Re-probe a few counters around the edge after every step.
                if let Some(highest) = model.highest {
                    for probe in [highest.saturating_sub(REPLAY_WINDOW), highest.saturating_sub(REPLAY_WINDOW - 1), highest.saturating_sub(1), highest] {
                        prop_assert_eq!(window.check(probe), model.check(probe), "probe {}", probe);
                    }
                }
            }
        }
    }
}
