//! The one conversion between the monotonic clock the core runs on and the wall clock that dates
//! certificates, revocations and initiation timestamps.
//!
//! The io layer reads the wall clock and hands the core an `(Instant, unix nanoseconds)` pair;
//! [`WallClock`] derives the wall-clock time of any later `Instant` from it. Invariant: the result
//! never goes below the anchor, and an `Instant` before the anchor maps to the anchor itself (the
//! core never sees time run backwards).

use std::time::Instant;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A wall-clock reading anchored to a monotonic instant.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    anchor: Instant,
    anchor_unix_nanos: u64,
}

impl WallClock {
    /// The wall clock read `unix_nanos` nanoseconds since the Unix epoch at `anchor`.
    pub fn new(anchor: Instant, unix_nanos: u64) -> WallClock {
        WallClock {
            anchor,
            anchor_unix_nanos: unix_nanos,
        }
    }

    /// Nanoseconds since the Unix epoch at `now`.
    pub fn unix_nanos(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.anchor).as_nanos();
        self.anchor_unix_nanos
            .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }

    /// Whole seconds since the Unix epoch at `now`.
    pub fn unix_secs(&self, now: Instant) -> u64 {
        self.unix_nanos(now) / NANOS_PER_SEC
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn follows_the_monotonic_clock_from_its_anchor() {
        let t0 = Instant::now();
        let clock = WallClock::new(t0, 1_800_000_000 * NANOS_PER_SEC + 999_999_999);
        assert_eq!(clock.unix_secs(t0), 1_800_000_000);
        assert_eq!(clock.unix_secs(t0 + Duration::from_nanos(1)), 1_800_000_001);
        assert_eq!(
            clock.unix_nanos(t0 + Duration::from_secs(5)),
            1_800_000_005 * NANOS_PER_SEC + 999_999_999
        );
    }

    #[test]
    fn an_instant_before_the_anchor_is_the_anchor() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let clock = WallClock::new(t0, 42 * NANOS_PER_SEC);
        assert_eq!(clock.unix_secs(t0 - Duration::from_secs(5)), 42);
    }
}
