//! Certificate renewal: this node asks an admin for a fresh certificate before its own runs
//! out, and an admin answers other members' requests.
//!
//! Owns [`Renewal`]: the network key (admins only), the lifetime of the certificates this node
//! issues, when to ask again, and the budget of certificates issued for others. A node asks
//! once the last third of its certificate's life began, of a random admin foca considers alive
//! (an admin renews itself locally), again after [`RENEW_RETRY`] without an answer.
//!
//! Invariants: a certificate is issued only for a member whose verified record is held here,
//! only once half of its current certificate's life is gone (at once if the member's address
//! range lost a conflict: see ranges.rs), and within the renewal budget; it copies everything but
//! the validity window from the member's current certificate, and the range when that lost (a new
//! one, granted now). A renewal answer is installed only if it is a valid certificate of this
//! network for exactly this node's key, signing key, name and admin flag, and expires later than
//! the current one or grants another range.

use std::time::{Duration, Instant};

use meshd_crypto::{Certificate, NetworkSecret, PublicKey};
use rand_core::RngCore as _;
use tracing::{debug, info, warn};

use super::ranges::RANGE_RENEW_RETRY;
use super::registry::{lock, KeyEntry};
use super::{Membership, MembershipEvent, RENEW_BURST, RENEW_RATE, RENEW_RETRY};
use crate::core::limit::TokenBucket;
use crate::core::ranges::{free_range_for, Grant};
use crate::wire::membership::{
    emit_renew_request, emit_renew_response, RenewRequest, RenewResponse,
};

/// What this node needs to renew its certificate and, as admin, others'.
pub(super) struct Renewal {
    /// Admins only: the network key, used to answer renewal requests (and renew locally).
    pub network_secret: Option<NetworkSecret>,
    /// Lifetime of certificates this node issues.
    pub certificate_lifetime: Duration,
    /// No request before this instant (one is outstanding).
    pub next_attempt: Option<Instant>,
    /// Certificates issued for others.
    pub budget: TokenBucket,
}

impl Renewal {
    pub fn new(
        now: Instant,
        network_secret: Option<NetworkSecret>,
        certificate_lifetime: Duration,
    ) -> Renewal {
        Renewal {
            network_secret,
            certificate_lifetime,
            next_attempt: None,
            budget: TokenBucket::new(now, u64::from(RENEW_RATE), u64::from(RENEW_BURST)),
        }
    }
}

impl Membership {
    /// Due once the last third of the certificate's life began, or at once when this node's
    /// address range lost a conflict.
    pub(super) fn renewal_due(&self, now_unix: u64) -> bool {
        let c = &self.certificate;
        let lifetime = c.expires_at.saturating_sub(c.issued_at);
        now_unix >= c.expires_at.saturating_sub(lifetime / 3) || self.own_range_lost()
    }

    /// A fresh certificate for the holder of `current`: the same in everything but its validity
    /// window, and its range if that lost a conflict (then a free range picked from the member's
    /// key, granted now).
    fn reissue(
        &mut self,
        secret: &NetworkSecret,
        current: &Certificate,
        now_unix: u64,
    ) -> Option<Certificate> {
        let mut grant = current.grant;
        if self.ranges.lost(&current.static_key) {
            let taken = self.ranges_out_of_pool();
            let network = current
                .grant
                .as_ref()
                .and_then(Grant::from_certificate)?
                .network;
            match free_range_for(&network, &current.static_key, &taken)
                .ok()
                .and_then(|range| Grant::new(network, range, now_unix))
            {
                Some(new) => {
                    self.counters.ranges_reassigned += 1;
                    info!(member = %current.name, range = %new.range, "membership: granted a new address range");
                    grant = Some(new.to_certificate());
                }
                None => {
                    warn!(member = %current.name, "membership: no free address range to replace a conflicting one");
                }
            }
        }
        let issued = Certificate::issue(
            secret,
            &current.name,
            current.static_key,
            current.signing_key,
            now_unix,
            now_unix.saturating_add(self.renewal.certificate_lifetime.as_secs()),
            current.admin,
        )
        .and_then(|c| c.with_grant(secret, grant));
        if issued.is_err() {
            self.counters.foca_errors += 1;
        }
        issued.ok()
    }

    pub(super) fn on_renew_request(&mut self, now: Instant, from: PublicKey, body: &[u8]) {
        if RenewRequest::new_checked(body).is_err() {
            self.counters.renew_request_malformed += 1;
            return;
        }
        let Some(secret) = self.renewal.network_secret.clone() else {
            self.counters.renew_not_admin += 1;
            return;
        };
        let (current, now_unix) = {
            let registry = lock(&self.registry);
            (
                registry.record(&from).and_then(|r| r.certificate()),
                registry.now_unix,
            )
        };
        let Some(current) = current else {
            self.counters.renew_unknown_member += 1;
            return;
        };
        let lifetime = current.expires_at.saturating_sub(current.issued_at);
        if current.expires_at.saturating_sub(now_unix) > lifetime / 2
            && !self.ranges.lost(&current.static_key)
        {
            self.counters.renew_too_early += 1;
            return;
        }
        if !self.renewal.budget.try_take(now) {
            self.counters.renew_throttled += 1;
            return;
        }
        if let Some(certificate) = self.reissue(&secret, &current, now_unix) {
            self.counters.renewals_issued += 1;
            info!(member = %current.name, "membership: renewed a member's certificate");
            self.queue(from, emit_renew_response(&certificate.encode()));
        }
    }

    pub(super) fn on_renew_response(&mut self, body: &[u8]) {
        let now_unix = lock(&self.registry).now_unix;
        let certificate_bytes = RenewResponse::new_checked(body).map(|r| r.certificate_bytes());
        let decoded = certificate_bytes.map(|bytes| (bytes.len(), Certificate::decode(bytes)));
        let valid = match decoded {
            Ok((len, Ok((certificate, used)))) if used == len => {
                let c = &certificate;
                let ours = &self.certificate;
                let fits = c.network == self.network
                    && c.static_key == ours.static_key
                    && c.signing_key == ours.signing_key
                    && c.name == ours.name
                    && c.admin == ours.admin
                    && (c.expires_at > ours.expires_at || c.grant != ours.grant)
                    && c.verify(&self.network, now_unix).is_ok();
                fits.then_some(certificate)
            }
            _ => None,
        };
        match valid {
            Some(certificate) => self.install_certificate(certificate),
            None => self.counters.renew_response_bad += 1,
        }
    }

    pub(super) fn install_certificate(&mut self, certificate: Certificate) {
        info!(
            expires_at = certificate.expires_at,
            "membership: certificate renewed"
        );
        self.certificate = certificate.clone();
        self.renewal.next_attempt = None;
        self.bump_version();
        self.counters.certificates_renewed += 1;
        self.events
            .push_back(MembershipEvent::CertificateRenewed { certificate });
        self.publish_own_record();
    }

    pub(super) fn renew(&mut self, now: Instant, now_unix: u64) {
        if !self.renewal_due(now_unix) || self.renewal.next_attempt.is_some_and(|t| now < t) {
            return;
        }
        // A range that lost a conflict is asked about again soon: the admin asked first may not
        // have seen the conflict yet (it answers nothing then).
        let retry = if self.own_range_lost() {
            RANGE_RENEW_RETRY
        } else {
            RENEW_RETRY
        };
        self.renewal.next_attempt = Some(now + retry);
        if let Some(secret) = self.renewal.network_secret.clone() {
            let current = self.certificate.clone();
            if let Some(certificate) = self.reissue(&secret, &current, now_unix) {
                self.install_certificate(certificate);
            }
            return;
        }
        let admins: Vec<PublicKey> = {
            let registry = lock(&self.registry);
            registry
                .slots
                .iter()
                .filter(|(key, slot)| {
                    **key != self.me.key
                        && matches!(slot, KeyEntry::Member(r) if r.admin)
                        && self.live.get(key).is_some_and(|l| l.active)
                })
                .map(|(key, _)| *key)
                .collect()
        };
        if admins.is_empty() {
            debug!("membership: certificate renewal due but no admin is reachable");
            return;
        }
        let admin = admins[self.rng.next_u32() as usize % admins.len()];
        self.counters.renew_requests_sent += 1;
        self.queue(admin, emit_renew_request());
    }
}
