//! The one token bucket type of the core, and the handshake limiter built from it.
//!
//! [`TokenBucket`] bounds any rate the node must not exceed whatever its input does: handshake
//! (Diffie-Hellman) work, ICMP answers written to the bridge, membership pages and renewals. A flood of initiations that pass the cheap mac1 check must not starve the data path, so each one
//! costs a token from a global bucket and from a bucket for its source address. The per-source table
//! is bounded: when full it forgets idle sources, and if none are idle new sources are refused (the
//! global bucket still lets known-good traffic through once the flood's sources go quiet).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A token bucket in fixed-point nano-tokens so it is exact without floats.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: u64,
    burst: u64,
    nano_tokens: u64,
    last: Instant,
}

const NANO: u64 = 1_000_000_000;

impl TokenBucket {
    /// A full bucket of `burst` tokens that refills at `per_second`.
    pub fn new(now: Instant, per_second: u64, burst: u64) -> TokenBucket {
        TokenBucket {
            per_second,
            burst,
            nano_tokens: burst * NANO,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        let add = (elapsed.as_nanos() as u64).saturating_mul(self.per_second);
        self.nano_tokens = self.nano_tokens.saturating_add(add).min(self.burst * NANO);
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.nano_tokens >= NANO {
            self.nano_tokens -= NANO;
            true
        } else {
            false
        }
    }

    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.nano_tokens >= self.burst * NANO
    }
}

/// Global plus per-source limits for handshake processing.
pub struct HandshakeLimiter {
    global: TokenBucket,
    per_source: HashMap<IpAddr, TokenBucket>,
    per_source_rate: u64,
    per_source_burst: u64,
    max_sources: usize,
}

/// Handshakes per second the node will process in total.
pub const HANDSHAKES_PER_SECOND: u64 = 500;
/// Handshakes per second from one source address.
pub const HANDSHAKES_PER_SOURCE_PER_SECOND: u64 = 20;
/// Source addresses tracked at most.
pub const MAX_TRACKED_SOURCES: usize = 4096;

impl HandshakeLimiter {
    pub fn new(now: Instant) -> HandshakeLimiter {
        HandshakeLimiter {
            global: TokenBucket::new(now, HANDSHAKES_PER_SECOND, HANDSHAKES_PER_SECOND / 5),
            per_source: HashMap::new(),
            per_source_rate: HANDSHAKES_PER_SOURCE_PER_SECOND,
            per_source_burst: HANDSHAKES_PER_SOURCE_PER_SECOND,
            max_sources: MAX_TRACKED_SOURCES,
        }
    }

    /// Whether a handshake from `source` may be processed now.
    pub fn allow(&mut self, now: Instant, source: IpAddr) -> bool {
        if !self.per_source.contains_key(&source) && self.per_source.len() >= self.max_sources {
            self.per_source.retain(|_, b| !b.is_full(now));
            if self.per_source.len() >= self.max_sources {
                return false;
            }
        }
        let (rate, burst) = (self.per_source_rate, self.per_source_burst);
        let bucket = self
            .per_source
            .entry(source)
            .or_insert_with(|| TokenBucket::new(now, rate, burst));
        bucket.try_take(now) && self.global.try_take(now)
    }

    /// Forgets sources that have been quiet long enough to have a full bucket.
    pub fn sweep(&mut self, now: Instant) {
        self.per_source.retain(|_, b| !b.is_full(now));
    }

    pub fn tracked_sources(&self) -> usize {
        self.per_source.len()
    }
}

/// How often `HandshakeLimiter::sweep` is worth calling.
pub const LIMITER_SWEEP_INTERVAL: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(t0, 10, 2);
        assert!(b.try_take(t0) && b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(!b.try_take(t0 + Duration::from_millis(50)));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        assert!(b.try_take(t0 + Duration::from_secs(100)));
        assert!(b.try_take(t0 + Duration::from_secs(100)));
        assert!(
            !b.try_take(t0 + Duration::from_secs(100)),
            "burst caps refill"
        );
    }

    #[test]
    fn one_source_cannot_use_the_global_budget() {
        let t0 = Instant::now();
        let mut l = HandshakeLimiter::new(t0);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let allowed = (0..1000).filter(|_| l.allow(t0, a)).count() as u64;
        assert_eq!(allowed, HANDSHAKES_PER_SOURCE_PER_SECOND);
        assert!(l.allow(t0, b), "another source still gets through");
    }

    #[test]
    fn source_table_is_bounded() {
        let t0 = Instant::now();
        let mut l = HandshakeLimiter::new(t0);
        for i in 0..(MAX_TRACKED_SOURCES as u32 + 1000) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i));
            l.allow(t0, ip);
        }
        assert!(l.tracked_sources() <= MAX_TRACKED_SOURCES);
        l.sweep(t0 + Duration::from_secs(10));
        assert_eq!(l.tracked_sources(), 0);
    }
}
