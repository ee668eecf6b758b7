//! The addresses this node publishes in its signed member record besides the ones it advertises:
//! what other members' probe answers say our probes came from (how a NAT in front of us maps us),
//! and when a changed list may be re-signed and gossiped.
//!
//! [`ObservedEndpoints`] owns the reports, the confirmed addresses and the publishing budget.
//! Invariants: an address is published only when two distinct members report it (each member's
//! latest report counts once, so one member answering every probe with a new address confirms
//! nothing and can only overwrite its own report); the reports are bounded by
//! [`REPORTERS_MAX`]; the record is re-signed at most as often as one [`TokenBucket`] allows
//! ([`PUBLISH_PER_SECOND`], bursts of [`PUBLISH_BURST`]), and a change the bucket holds back is
//! kept and published as soon as it allows, never lost.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshd_crypto::PublicKey;

use crate::core::limit::TokenBucket;

/// Confirmed observed addresses remembered and published (newest first), at most.
pub(super) const OBSERVED_MAX: usize = 2;
/// Members whose latest report is remembered, at most (the oldest report goes first).
pub const REPORTERS_MAX: usize = 64;
/// Distinct members that must report an address before it is published.
pub const CONFIRMATIONS: usize = 2;
/// Re-signed records for new endpoints per second, at most, after a burst of [`PUBLISH_BURST`].
pub const PUBLISH_PER_SECOND: u64 = 1;
/// How many endpoint changes may be published back to back.
pub const PUBLISH_BURST: u64 = 4;

/// What the node does after a report.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum Report {
    /// Nothing new: advertised, already confirmed, or not confirmed yet.
    Noted,
    /// The address was just confirmed: the published list changed.
    Confirmed,
}

/// See the module documentation.
#[derive(Debug)]
pub(super) struct ObservedEndpoints {
    /// Each reporter's latest report, oldest first.
    reports: Vec<(PublicKey, SocketAddr)>,
    /// Confirmed addresses, newest last.
    confirmed: Vec<SocketAddr>,
    budget: TokenBucket,
    /// A change waiting for the budget: publish it at `retry_at` at the latest.
    pending: bool,
    retry_at: Option<Instant>,
}

impl ObservedEndpoints {
    pub(super) fn new(now: Instant) -> Self {
        ObservedEndpoints {
            reports: Vec::new(),
            confirmed: Vec::new(),
            budget: TokenBucket::new(now, PUBLISH_PER_SECOND, PUBLISH_BURST),
            pending: false,
            retry_at: None,
        }
    }

    /// Member `reporter` saw our probe come from `addr` (`advertise`: what we publish anyway).
    pub(super) fn report(
        &mut self,
        reporter: PublicKey,
        addr: SocketAddr,
        advertise: &[SocketAddr],
    ) -> Report {
        if advertise.contains(&addr) || self.confirmed.contains(&addr) {
            return Report::Noted;
        }
        self.reports.retain(|(key, _)| *key != reporter);
        if self.reports.len() >= REPORTERS_MAX {
            self.reports.remove(0);
        }
        self.reports.push((reporter, addr));
        let reporters = self.reports.iter().filter(|(_, a)| *a == addr).count();
        if reporters < CONFIRMATIONS {
            return Report::Noted;
        }
        if self.confirmed.len() >= OBSERVED_MAX {
            self.confirmed.remove(0);
        }
        self.confirmed.push(addr);
        self.reports.retain(|(_, a)| *a != addr);
        self.pending = true;
        Report::Confirmed
    }

    /// Forgets confirmed addresses that are now advertised anyway.
    pub(super) fn drop_advertised(&mut self, advertise: &[SocketAddr]) {
        self.confirmed.retain(|a| !advertise.contains(a));
    }

    /// The confirmed addresses, newest first.
    pub(super) fn confirmed(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.confirmed.iter().rev().copied()
    }

    /// Records that the published list changed and must be re-signed.
    pub(super) fn mark_changed(&mut self) {
        self.pending = true;
    }

    /// Whether a pending change may be published now (taking a token if so). If the budget holds
    /// it back, [`ObservedEndpoints::deadline`] says when to ask again.
    pub(super) fn take_publish(&mut self, now: Instant) -> bool {
        if !self.pending {
            return false;
        }
        if self.budget.try_take(now) {
            self.pending = false;
            self.retry_at = None;
            true
        } else {
            // A bucket that refills at PUBLISH_PER_SECOND holds a whole token again after this.
            self.retry_at = Some(now + Duration::from_secs(1) / PUBLISH_PER_SECOND as u32);
            false
        }
    }

    /// When a held-back change should be published, if one is waiting.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.retry_at.filter(|_| self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    fn addr(n: u16) -> SocketAddr {
        SocketAddr::from(([198, 51, 100, 7], n))
    }

    #[test]
    fn one_member_confirms_nothing_and_two_confirm() {
        let now = Instant::now();
        let mut observed = ObservedEndpoints::new(now);
        for port in 1..=100 {
            assert_eq!(observed.report(key(1), addr(port), &[]), Report::Noted);
        }
        assert_eq!(observed.reports.len(), 1, "one member holds one report");
        assert_eq!(observed.confirmed().count(), 0);
        assert!(!observed.take_publish(now));
        assert_eq!(observed.report(key(2), addr(100), &[]), Report::Confirmed);
        assert_eq!(observed.confirmed().collect::<Vec<_>>(), vec![addr(100)]);
        assert_eq!(observed.report(key(3), addr(100), &[]), Report::Noted);
        assert_eq!(
            observed.report(key(2), addr(100), &[addr(100)]),
            Report::Noted
        );
    }

    #[test]
    fn a_held_back_change_is_published_when_the_budget_allows() {
        let start = Instant::now();
        let mut observed = ObservedEndpoints::new(start);
        let mut published = 0;
        for _ in 0..100 {
            observed.mark_changed();
            published += u64::from(observed.take_publish(start));
        }
        assert_eq!(published, PUBLISH_BURST);
        let retry = observed.deadline().expect("a change is waiting");
        assert!(retry > start);
        assert!(observed.take_publish(retry), "published at its deadline");
        assert_eq!(observed.deadline(), None);
        assert!(!observed.take_publish(retry), "nothing left to publish");
    }
}
