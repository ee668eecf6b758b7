//! The one token bucket type of the core, and the handshake limiter built from it.
//!
//! [`TokenBucket`] bounds any rate the node must not exceed whatever its input does: handshake
//! (Diffie-Hellman) work, ICMP answers written to the bridge, membership pages and renewals.
//!
//! [`HandshakeLimiter`] owns the handshake budgets and the node's load state. Initiations and
//! responses have budgets of their own (a global bucket and a bucket per [`HandshakeSource`]), so
//! a flood of initiations never starves the responses to our own rekeys. A source is an IPv4
//! address, an IPv6 /64 (one host holds a whole /64) or, for a handshake that came through a
//! relay, the member that sent it (the relay authenticated it; the relay's own address is not the
//! sender). Each per-source table is bounded; a new source is refused in constant time while it is
//! full, and the periodic sweep forgets idle sources. The load state decides when initiations must
//! prove their source address with a cookie (mac2): the node is under load while initiations
//! without a valid mac2 come faster than [`UNCHALLENGED_PER_SECOND`], and for [`LOAD_HOLD`]
//! after.

use std::collections::HashMap;
use std::net::IpAddr;

use meshd_crypto::PublicKey;
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

/// Who a handshake is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeSource {
    /// A direct IPv4 sender (or an IPv4-mapped IPv6 one).
    V4([u8; 4]),
    /// A direct IPv6 sender's /64: a host is given a whole /64, so per /128 it would be
    /// 2^64 sources.
    V6Prefix([u8; 8]),
    /// The member that sent a relayed handshake, as its relay authenticated it.
    Member(PublicKey),
}

impl HandshakeSource {
    /// The source of a handshake received directly from `ip`.
    pub fn of_ip(ip: IpAddr) -> HandshakeSource {
        match ip {
            IpAddr::V4(v4) => HandshakeSource::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => HandshakeSource::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    HandshakeSource::V6Prefix(prefix)
                }
            },
        }
    }
}

/// Which of the two handshake messages is asking for DH work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeKind {
    Initiation,
    Response,
}

/// A global bucket and a bounded table of per-source buckets.
struct Budget {
    global: TokenBucket,
    per_source: HashMap<HandshakeSource, TokenBucket>,
}

impl Budget {
    fn new(now: Instant) -> Budget {
        Budget {
            global: TokenBucket::new(now, HANDSHAKES_PER_SECOND, HANDSHAKES_PER_SECOND / 5),
            per_source: HashMap::new(),
        }
    }

    fn allow(&mut self, now: Instant, source: HandshakeSource) -> bool {
        // Full: a new source is refused at once. Making room here would walk the table for every
        // packet of a flood of new sources; the periodic sweep makes room instead.
        let full = self.per_source.len() >= MAX_TRACKED_SOURCES;
        if full && !self.per_source.contains_key(&source) {
            return false;
        }
        let bucket = self.per_source.entry(source).or_insert_with(|| {
            TokenBucket::new(
                now,
                HANDSHAKES_PER_SOURCE_PER_SECOND,
                HANDSHAKES_PER_SOURCE_PER_SECOND,
            )
        });
        bucket.try_take(now) && self.global.try_take(now)
    }

    fn sweep(&mut self, now: Instant) {
        self.per_source.retain(|_, b| !b.is_full(now));
    }
}

/// The handshake budgets (initiations and responses apart) and the load state.
pub struct HandshakeLimiter {
    initiations: Budget,
    responses: Budget,
    /// Drained by every direct initiation without a valid mac2; empty means under load.
    unchallenged: TokenBucket,
    /// The node counts as under load until this instant.
    under_load_until: Option<Instant>,
}

/// Handshakes per second of each kind the node will process in total.
pub const HANDSHAKES_PER_SECOND: u64 = 500;
/// Handshakes per second of each kind from one source.
pub const HANDSHAKES_PER_SOURCE_PER_SECOND: u64 = 20;
/// Sources tracked at most, per kind.
pub const MAX_TRACKED_SOURCES: usize = 4096;
/// Initiations per second without a valid mac2 above which the node is under load, and then
/// answers such initiations with a cookie reply instead of DH work. Half the DH budget: below it,
/// a flood leaves legitimate initiations half the budget without any cookie round trip.
pub const UNCHALLENGED_PER_SECOND: u64 = HANDSHAKES_PER_SECOND / 2;
/// Initiations without a valid mac2 taken in a burst before the node counts as under load.
pub const UNCHALLENGED_BURST: u64 = 64;
/// How long the node stays under load after the rate last exceeded [`UNCHALLENGED_PER_SECOND`],
/// so a flood that is being answered with cookies keeps being answered with cookies.
pub const LOAD_HOLD: Duration = Duration::from_secs(1);

impl HandshakeLimiter {
    pub fn new(now: Instant) -> HandshakeLimiter {
        HandshakeLimiter {
            initiations: Budget::new(now),
            responses: Budget::new(now),
            unchallenged: TokenBucket::new(now, UNCHALLENGED_PER_SECOND, UNCHALLENGED_BURST),
            under_load_until: None,
        }
    }

    /// Whether a join request (an initiation to the inviter) received from `ip` may cost DH work
    /// now: charged to the initiation budget.
    pub fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        self.initiations.allow(now, HandshakeSource::of_ip(ip))
    }

    /// Whether a handshake message of `kind` from `source` may cost DH work now.
    pub fn allow_handshake(
        &mut self,
        now: Instant,
        kind: HandshakeKind,
        source: HandshakeSource,
    ) -> bool {
        match kind {
            HandshakeKind::Initiation => self.initiations.allow(now, source),
            HandshakeKind::Response => self.responses.allow(now, source),
        }
    }

    /// Records a direct initiation without a valid mac2 and says whether the node is under load,
    /// in which case the initiation must be answered with a cookie and not processed.
    pub fn must_challenge(&mut self, now: Instant) -> bool {
        if !self.unchallenged.try_take(now) {
            self.under_load_until = Some(now + LOAD_HOLD);
        }
        self.under_load(now)
    }

    /// Whether the node is under load (see [`HandshakeLimiter::must_challenge`]).
    pub fn under_load(&self, now: Instant) -> bool {
        self.under_load_until.is_some_and(|until| now < until)
    }

    /// Forgets sources that have been quiet long enough to have a full bucket.
    pub fn sweep(&mut self, now: Instant) {
        self.initiations.sweep(now);
        self.responses.sweep(now);
    }

    /// Sources tracked, of both kinds.
    pub fn tracked_sources(&self) -> usize {
        self.initiations.per_source.len() + self.responses.per_source.len()
    }
}

/// How often `HandshakeLimiter::sweep` is worth calling.
pub const LIMITER_SWEEP_INTERVAL: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(text: &str) -> HandshakeSource {
        HandshakeSource::of_ip(text.parse().unwrap())
    }

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
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let allowed = (0..1000)
            .filter(|_| l.allow_handshake(t0, HandshakeKind::Initiation, a))
            .count() as u64;
        assert_eq!(allowed, HANDSHAKES_PER_SOURCE_PER_SECOND);
        assert!(
            l.allow_handshake(t0, HandshakeKind::Initiation, b),
            "another source"
        );
    }

    #[test]
    fn initiations_cannot_starve_responses() {
        let t0 = Instant::now();
        let mut l = HandshakeLimiter::new(t0);
        let spent = (0..10_000u32)
            .filter(|&i| {
                let source = HandshakeSource::V4(Ipv4Addr::from(i).octets());
                l.allow_handshake(t0, HandshakeKind::Initiation, source)
            })
            .count() as u64;
        assert_eq!(
            spent,
            HANDSHAKES_PER_SECOND / 5,
            "the initiation burst is spent"
        );
        assert!(l.allow_handshake(t0, HandshakeKind::Response, ip("10.0.0.1")));
    }

    #[test]
    fn ipv6_sources_are_one_per_64() {
        let t0 = Instant::now();
        let mut l = HandshakeLimiter::new(t0);
        assert_eq!(ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff::9"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("::ffff:10.0.0.1"), ip("10.0.0.1"));
        let allowed = (0..1000u32)
            .filter(|i| {
                let text = format!("2001:db8:1:2:{:x}::1", i & 0xffff);
                l.allow_handshake(t0, HandshakeKind::Initiation, ip(&text))
            })
            .count() as u64;
        assert_eq!(allowed, HANDSHAKES_PER_SOURCE_PER_SECOND);
    }

    #[test]
    fn a_full_source_table_refuses_new_sources_until_the_sweep() {
        let t0 = Instant::now();
        let mut l = HandshakeLimiter::new(t0);
        let source = |i: u32| HandshakeSource::V4(Ipv4Addr::from(i).octets());
        // Refill the global bucket as we go, so only the table decides.
        let mut t = t0;
        for i in 0..MAX_TRACKED_SOURCES as u32 {
            t += Duration::from_millis(2);
            assert!(l.allow_handshake(t, HandshakeKind::Initiation, source(i)));
        }
        assert_eq!(l.tracked_sources(), MAX_TRACKED_SOURCES);
        t += Duration::from_millis(2);
        assert!(!l.allow_handshake(t, HandshakeKind::Initiation, source(1 << 30)));
        assert!(
            l.allow_handshake(t, HandshakeKind::Initiation, source(5)),
            "known source"
        );
        assert_eq!(l.tracked_sources(), MAX_TRACKED_SOURCES);
        l.sweep(t + Duration::from_secs(10));
        assert_eq!(l.tracked_sources(), 0);
        assert!(l.allow_handshake(
            t + Duration::from_secs(10),
            HandshakeKind::Initiation,
            source(1 << 30)
        ));
    }

    #[test]
    fn load_starts_above_the_unchallenged_rate_and_holds() {
        let t0 = Instant::now();
        let mut l = HandshakeLimiter::new(t0);
        // Below the rate: never under load.
        let step = Duration::from_millis(1000 / (UNCHALLENGED_PER_SECOND / 2));
        let mut t = t0;
        for _ in 0..1000 {
            t += step;
            assert!(!l.must_challenge(t));
        }
        // A burst past the (refilled) bucket: under load, and it holds while the flood goes on.
        t += Duration::from_secs(1);
        let challenged = (0..UNCHALLENGED_BURST * 2)
            .filter(|_| l.must_challenge(t))
            .count() as u64;
        assert_eq!(challenged, UNCHALLENGED_BURST);
        for _ in 0..10_000 {
            t += Duration::from_millis(1);
            assert!(
                l.must_challenge(t),
                "a 1,000/s flood keeps the node under load"
            );
        }
        // The hold runs from the last initiation the rate refused (at most 4 ms before `t`).
        assert!(l.under_load(t + LOAD_HOLD - Duration::from_millis(10)));
        assert!(!l.under_load(t + LOAD_HOLD));
    }
}
