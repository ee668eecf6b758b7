//! The inviter's side of the join exchange: [`JoinGate`] is the cheap checks of a join request
//! (length, version, type, mac1), which a running node and its io workers run before anything
//! else; [`InviteBook`] answers the requests that passed them, cheapest check first, and admits
//! each invitation's one key (see the parent module for the invariants). The bootstrap member
//! list is asked for only when a reply that carries it is about to be written, so a request that
//! is not admitted never makes the node walk its member table.

use std::collections::HashMap;
use std::net::SocketAddr;

use meshd_crypto::{
    compute_mac1, mac1_key, respond, valid_member_name, verify_mac1, Certificate, CoreRng,
    CryptoError, NetworkId, NetworkSecret, PublicKey, StaticSecret,
};

use crate::wire::{
    constant_time_eq, emit_join_refused, InviteId, JoinRequest, JoinResponse, RefusalReason,
    RequestPayload, ResponsePayload, WireError, JOIN_REFUSED_LEN, MAX_RESPONSE_PAYLOAD,
};

use super::*;
use crate::core::ranges::{choose_range, ContainerNetwork, Grant, Range4};

/// What the inviter's node lends the book for one request.
pub struct JoinContext<'a> {
    /// Unix seconds (wall clock: invitations and certificates are dated).
    pub now_unix: u64,
    /// The inviter's static key; requests are Noise initiations to it.
    pub local: &'a StaticSecret,
    /// `mac1_key(local.public_key())`, computed once by the node.
    pub our_mac1_key: &'a [u8; 32],
    /// This node's network.
    pub network: NetworkId,
    /// The network key if this node is an admin; without it every request is refused `NotAdmin`.
    pub network_secret: Option<&'a NetworkSecret>,
    pub rng: &'a mut CoreRng,
    /// Whether a live member holds `name` under a key other than the given one.
    pub name_taken: &'a dyn Fn(&str, &PublicKey) -> bool,
    /// Members to hand to the new node, best first (the inviter itself should be among them); as
    /// many as fit are sent. Called only when an admission's reply is written: building the list
    /// walks the node's member table, which no unadmitted request may cost.
    pub bootstrap: &'a dyn Fn() -> Vec<BootstrapMember>,
    /// Seconds a new certificate is valid.
    pub certificate_lifetime: u64,
    /// The network's container address space (from the admin's own grant), if it has one:
    /// then every admitted member is granted a range of it.
    pub container_network: Option<ContainerNetwork>,
    /// The ranges that are not in the pool (held or in their grace period), as the membership
    /// table knows them. Called only when a certificate is about to be issued.
    pub ranges_out_of_pool: &'a dyn Fn() -> Vec<Range4>,
}

/// A request the book accepted. The io layer must persist `mark_used(invite_id, name, key)` and
/// only once that succeeded send `reply`; if persisting fails it sends nothing, and the joiner's
/// retry yields the same admission again (`repeated`), which retries the write.
#[derive(Clone, Debug)]
pub struct Admission {
    pub invite_id: InviteId,
    pub name: String,
    pub key: PublicKey,
    pub certificate: Certificate,
    /// Where the new node says it can be reached (0 to 8 addresses, unverified).
    pub endpoints: Vec<SocketAddr>,
    /// The JoinResponse datagram, to send to the request's source.
    pub reply: Vec<u8>,
    /// True when this re-sends the certificate of an earlier admission of the same key.
    pub repeated: bool,
}

/// Why the book dropped a request without answering.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum JoinDrop {
    /// Not a well-formed JoinRequest.
    Malformed(WireError),
    /// mac1 did not verify.
    BadMac1,
    /// Noise processing or writing the response failed.
    HandshakeFailed,
}

impl JoinDrop {
    /// A short, stable label for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            JoinDrop::Malformed(e) => e.as_str(),
            JoinDrop::BadMac1 => "bad_mac1",
            JoinDrop::HandshakeFailed => "handshake_failed",
        }
    }
}

/// What the node does with a join request.
#[derive(Clone, Debug)]
pub enum JoinOutcome {
    /// Persist the admission, then send its reply.
    Admitted(Box<Admission>),
    /// Send `reply` (a JoinRefused) back to the source.
    Refused {
        reason: RefusalReason,
        reply: [u8; JOIN_REFUSED_LEN],
    },
    /// Send nothing; the reason is already counted.
    Dropped(JoinDrop),
}

impl JoinOutcome {
    /// The datagram to send back, if any (for an admission: only after persisting it).
    pub fn reply(&self) -> Option<&[u8]> {
        match self {
            JoinOutcome::Admitted(admission) => Some(&admission.reply),
            JoinOutcome::Refused { reply, .. } => Some(reply),
            JoinOutcome::Dropped(_) => None,
        }
    }
}

/// The cheap checks of a join request, cheapest first: length, version and type, then mac1
/// (keyed by this node's public key, so only a sender that knows it gets further). No table, no
/// disk and no DH is touched before a request passed them. `Copy`, so an io worker keeps its own.
#[derive(Clone, Copy)]
pub struct JoinGate {
    our_mac1_key: [u8; 32],
}

impl JoinGate {
    /// The gate of the node whose `mac1_key(public key)` is `our_mac1_key`.
    pub const fn new(our_mac1_key: [u8; 32]) -> Self {
        JoinGate { our_mac1_key }
    }

    /// The request in `datagram` if it passed every cheap check; otherwise why not.
    pub fn check<'d>(&self, datagram: &'d [u8]) -> Result<JoinRequest<&'d [u8]>, JoinDrop> {
        let request = JoinRequest::new_checked(datagram).map_err(JoinDrop::Malformed)?;
        if !verify_mac1(&self.our_mac1_key, request.mac1_covered(), request.mac1()) {
            return Err(JoinDrop::BadMac1);
        }
        Ok(request)
    }
}

impl std::fmt::Debug for JoinGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinGate")
    }
}

/// The invitation a request names, as found before any DH.
enum Target {
    Pending(PendingInvite),
    Used(Box<UsedInvite>),
}

/// An invitation used since this book was created.
#[derive(Clone, Debug)]
struct UsedInvite {
    secret_hash: [u8; 32],
    expires_at: u64,
    key: PublicKey,
    name: String,
    certificate: Certificate,
    used_at: u64,
}

/// The inviter's invitations; see the module documentation.
#[derive(Debug, Default)]
pub struct InviteBook {
    pending: HashMap<InviteId, PendingInvite>,
    used: HashMap<InviteId, UsedInvite>,
    counters: JoinCounters,
}

impl InviteBook {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the pending invitations with `invites` (the io layer re-reads the invites
    /// directory and hands the result in). Entries whose id does not match their hash are ignored.
    /// Invitations used since start stay used even if they appear here again.
    pub fn set_pending(&mut self, invites: Vec<PendingInvite>) {
        self.pending = invites
            .into_iter()
            .filter(PendingInvite::is_consistent)
            .map(|invite| (invite.id, invite))
            .collect();
    }

    /// The pending invitations, by id.
    pub fn pending(&self) -> impl Iterator<Item = &PendingInvite> {
        self.pending.values()
    }

    pub fn counters(&self) -> &JoinCounters {
        &self.counters
    }

    /// Forgets used invitations that can matter no more: expired, and past the resend window.
    fn prune(&mut self, now: u64) {
        self.used.retain(|_, used| {
            now < used.expires_at || now < used.used_at.saturating_add(RESEND_WINDOW_SECS)
        });
    }

    fn refuse(counter: &mut u64, reason: RefusalReason, id: &InviteId) -> JoinOutcome {
        *counter += 1;
        JoinOutcome::Refused {
            reason,
            reply: emit_join_refused(reason, id),
        }
    }

    /// Processes one JoinRequest datagram that arrived from `from`: the [`JoinGate`] checks, then
    /// [`InviteBook::handle_checked`]. For callers that did not run the gate themselves.
    pub fn handle_request(
        &mut self,
        ctx: &mut JoinContext<'_>,
        from: SocketAddr,
        datagram: &[u8],
    ) -> JoinOutcome {
        match JoinGate::new(*ctx.our_mac1_key).check(datagram) {
            Ok(request) => self.handle_checked(ctx, from, request),
            Err(drop) => {
                let c = &mut self.counters;
                c.join_rx_requests += 1;
                match drop {
                    JoinDrop::Malformed(_) => c.join_rx_malformed += 1,
                    JoinDrop::BadMac1 => c.join_rx_bad_mac1 += 1,
                    JoinDrop::HandshakeFailed => c.join_rx_handshake_failed += 1,
                }
                JoinOutcome::Dropped(drop)
            }
        }
    }

    /// Processes one JoinRequest that passed the [`JoinGate`] and arrived from `_from` (the
    /// caller rate-limits by it beforehand and sends any reply back to it). See the module
    /// documentation for the order of checks.
    pub fn handle_checked(
        &mut self,
        ctx: &mut JoinContext<'_>,
        _from: SocketAddr,
        request: JoinRequest<&[u8]>,
    ) -> JoinOutcome {
        let now = ctx.now_unix;
        let c = &mut self.counters;
        c.join_rx_requests += 1;
        let id = request.invite_id();
        if request.network() != *ctx.network.as_bytes() {
            return Self::refuse(
                &mut c.join_rx_wrong_network,
                RefusalReason::WrongNetwork,
                &id,
            );
        }
        let Some(network_secret) = ctx.network_secret else {
            return Self::refuse(&mut c.join_rx_not_admin, RefusalReason::NotAdmin, &id);
        };

        self.prune(now);
        let c = &mut self.counters;
        // Which invitation, and what the secret must hash to; all without DH.
        let target = match (self.used.get(&id), self.pending.get(&id)) {
            (Some(used), _) if now < used.used_at.saturating_add(RESEND_WINDOW_SECS) => {
                Target::Used(Box::new(used.clone()))
            }
            (Some(_), _) => {
                return Self::refuse(&mut c.join_rx_already_used, RefusalReason::AlreadyUsed, &id)
            }
            (None, None) => {
                return Self::refuse(
                    &mut c.join_rx_unknown_invite,
                    RefusalReason::UnknownInvite,
                    &id,
                )
            }
            (None, Some(pending)) if now >= pending.expires_at => {
                return Self::refuse(&mut c.join_rx_expired, RefusalReason::Expired, &id)
            }
            (None, Some(pending)) => Target::Pending(pending.clone()),
        };
        let secret_hash = match &target {
            Target::Used(used) => used.secret_hash,
            Target::Pending(pending) => pending.secret_hash,
        };

        let responder = match respond(ctx.local, JOIN_PROLOGUE, ctx.rng, request.noise()) {
            Ok(responder) => responder,
            Err(_) => {
                c.join_rx_handshake_failed += 1;
                return JoinOutcome::Dropped(JoinDrop::HandshakeFailed);
            }
        };
        let joiner = responder.remote_static();
        let Some(payload) = RequestPayload::decode(responder.payload()) else {
            return Self::refuse(&mut c.join_rx_bad_payload, RefusalReason::Malformed, &id);
        };
        if !constant_time_eq(&payload.secret.hash(), &secret_hash) {
            return Self::refuse(&mut c.join_rx_bad_secret, RefusalReason::UnknownInvite, &id);
        }

        let (certificate, expires_at, repeated) = match target {
            Target::Used(used) if used.key == joiner => (used.certificate, used.expires_at, true),
            Target::Used(_) => {
                return Self::refuse(&mut c.join_rx_already_used, RefusalReason::AlreadyUsed, &id)
            }
            Target::Pending(pending) => {
                let name = &payload.name;
                if !valid_member_name(name) || pending.name.as_ref().is_some_and(|n| n != name) {
                    return Self::refuse(
                        &mut c.join_rx_name_refused,
                        RefusalReason::NameRefused,
                        &id,
                    );
                }
                let issued_here = self
                    .used
                    .values()
                    .any(|used| used.name == *name && used.key != joiner);
                if issued_here || (ctx.name_taken)(name, &joiner) {
                    return Self::refuse(&mut c.join_rx_name_taken, RefusalReason::NameTaken, &id);
                }
                let grant = match ctx.container_network {
                    None if pending.range.is_some() => {
                        return Self::refuse(&mut c.join_rx_no_range, RefusalReason::NoRange, &id)
                    }
                    None => None,
                    Some(network) => {
                        // Ranges this book granted are held even before gossip carries them.
                        let mut taken = (ctx.ranges_out_of_pool)();
                        taken.extend(self.used.values().filter_map(|u| {
                            let g = u.certificate.grant.as_ref()?;
                            Range4::new(g.range.0, g.range.1).ok()
                        }));
                        match choose_range(&network, pending.range, &taken)
                            .ok()
                            .and_then(|range| Grant::new(network, range, now))
                        {
                            Some(grant) => Some(grant.to_certificate()),
                            None => {
                                return Self::refuse(
                                    &mut c.join_rx_no_range,
                                    RefusalReason::NoRange,
                                    &id,
                                )
                            }
                        }
                    }
                };
                match Certificate::issue(
                    network_secret,
                    name,
                    joiner,
                    payload.signing_key,
                    now,
                    now.saturating_add(ctx.certificate_lifetime),
                    false,
                )
                .and_then(|certificate| certificate.with_grant(network_secret, grant))
                {
                    Ok(certificate) => (certificate, pending.expires_at, false),
                    Err(_) => {
                        return Self::refuse(
                            &mut c.join_rx_issue_failed,
                            RefusalReason::Malformed,
                            &id,
                        )
                    }
                }
            }
        };

        let Some((payload_bytes, _)) = ResponsePayload::encode(
            &certificate.encode(),
            &(ctx.bootstrap)(),
            MAX_RESPONSE_PAYLOAD,
        ) else {
            return Self::refuse(&mut c.join_rx_issue_failed, RefusalReason::Malformed, &id);
        };
        let mut reply = vec![0u8; JoinResponse::len_for_payload(payload_bytes.len())];
        let written = match JoinResponse::new_emit(&mut reply[..]) {
            Ok(mut message) => {
                message.set_invite_id(&id);
                responder.write_response(&payload_bytes, message.noise_mut())
            }
            Err(_) => Err(CryptoError::BufferTooSmall),
        };
        if written.is_err() {
            c.join_rx_handshake_failed += 1;
            return JoinOutcome::Dropped(JoinDrop::HandshakeFailed);
        }
        let mut message = JoinResponse::new_unchecked(&mut reply[..]);
        let mac = compute_mac1(&mac1_key(&joiner), message.mac1_covered());
        message.set_mac1(&mac);

        if repeated {
            c.join_resent += 1;
        } else {
            c.join_admitted += 1;
            self.pending.remove(&id);
            self.used.insert(
                id,
                UsedInvite {
                    secret_hash,
                    expires_at,
                    key: joiner,
                    name: certificate.name.clone(),
                    certificate: certificate.clone(),
                    used_at: now,
                },
            );
        }
        JoinOutcome::Admitted(Box::new(Admission {
            invite_id: id,
            name: certificate.name.clone(),
            key: joiner,
            certificate,
            endpoints: payload.endpoints,
            reply,
            repeated,
        }))
    }
}
