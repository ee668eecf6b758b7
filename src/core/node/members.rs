//! The member table and its bridges: members learned by gossip or handshakes, revocations, the
//! membership layer's messages and events, and join requests from new hosts.
//!
//! Invariants: a revoked key has no session, no pending frame and no FDB entry, and gets no new
//! peer entry; the table never grows past `MEMBER_TABLE_MAX`.

use crate::core::ranges::Grant;
use std::cell::Cell;

use meshd_crypto::{Certificate, PublicKey};
use tracing::{debug, info, warn};

use super::api::{DeferredTransmit, NodeEvent, PeerSpec};
use crate::core::invite::{JoinContext, JoinDrop, JoinGate, JoinOutcome, PendingInvite};
use crate::core::membership::{MembershipError, MembershipEvent, Revocation};
use crate::core::peer::{HandshakeProgress, CANDIDATES_MAX};
use crate::core::switch::Port;
use crate::wire::{BootstrapMember, PayloadKind};

use super::*;

impl Node {
    /// Refuses `key` from now on: its sessions, pending frames and FDB entries go at once and its
    /// handshakes are refused (`rx_handshake_revoked`).
    pub fn revoke(&mut self, key: PublicKey) {
        if !self.revoked.insert(key) {
            return;
        }
        if let Some(&id) = self.by_key.get(&key) {
            let peer = &mut self.peers[id as usize];
            warn!(peer = %peer.name, key = %key, "member revoked: dropping its sessions");
            let retired = peer.sessions.clear();
            peer.handshake = HandshakeProgress::default();
            peer.endpoint = None;
            peer.path.reset_route();
            peer.path.relay = None;
            for (_, frame) in std::mem::take(&mut peer.pending) {
                self.pool.give(frame);
            }
            self.retire(retired);
            self.fdb.remove_port(Port::Peer(id));
        }
    }

    /// Up to `max` members with a session up right now and the endpoint they are reached at:
    /// what a restarted node can call if its configured bootstrap members are gone.
    pub fn reachable_members(&self, max: usize) -> Vec<PeerSpec> {
        self.peers
            .iter()
            .filter(|p| p.sessions.is_up() && !self.revoked.contains(&p.public_key))
            .filter_map(|p| {
                Some(PeerSpec {
                    name: p.name.clone(),
                    public_key: p.public_key,
                    endpoint: Some(p.endpoint?),
                })
            })
            .take(max)
            .collect()
    }

    /// Whether `key` was revoked.
    pub fn is_revoked(&self, key: &PublicKey) -> bool {
        self.revoked.contains(key)
    }

    /// Adds a member learned by gossip (or updates its endpoint), so frames and handshakes can
    /// reach it. Returns its id; `None` if it is us, revoked, or the table is full.
    pub fn add_member(
        &mut self,
        certificate: &Certificate,
        endpoint: Option<SocketAddr>,
    ) -> Option<PeerId> {
        let key = certificate.static_key;
        if key == self.public_key || self.revoked.contains(&key) {
            return None;
        }
        let id = match self.by_key.get(&key) {
            Some(&id) => id,
            None => {
                if self.peers.len() >= MEMBER_TABLE_MAX {
                    return None;
                }
                let id = self.peers.len() as PeerId;
                self.peers
                    .push(Peer::new(certificate.name.clone(), key, endpoint));
                self.by_key.insert(key, id);
                id
            }
        };
        let peer = &mut self.peers[id as usize];
        if peer.endpoint.is_none() || !peer.sessions.is_up() {
            if let Some(e) = endpoint {
                peer.endpoint = Some(e);
            }
        }
        let newer = peer
            .certificate
            .as_ref()
            .is_none_or(|c| c.expires_at < certificate.expires_at);
        if newer {
            peer.name = certificate.name.clone();
            peer.grant = certificate.grant.as_ref().and_then(Grant::from_certificate);
            peer.certificate = Some(certificate.clone());
        }
        Some(id)
    }

    /// The cheap checks of a join request (length, version, type, mac1), as the io workers run
    /// them before deciding to look at the invitations on disk.
    pub fn join_gate(&self) -> JoinGate {
        JoinGate::new(self.our_mac1_key)
    }

    /// Answers a new host's join request. The cheap checks (length, version, type, mac1) come
    /// first and are counted like any datagram's (`rx_malformed`, `rx_bad_version`,
    /// `rx_bad_mac1`), then the rate limiter, then the invite book's DH. The member table is
    /// walked only for an authenticated request (the name check) and an admission's reply (the
    /// bootstrap list). An admission is handed to the io layer as an event, which records the
    /// invitation as used on disk before it sends the reply.
    pub(super) fn on_join_request(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let request = match self.join_gate().check(datagram) {
            Ok(request) => request,
            Err(JoinDrop::Malformed(e)) => return self.count_wire_error(e),
            Err(JoinDrop::BadMac1 | JoinDrop::HandshakeFailed) => {
                self.counters.rx_bad_mac1 += 1;
                return;
            }
        };
        if !self.limiter.allow(now, from.ip()) {
            self.counters.rx_handshake_ratelimited += 1;
            return;
        }
        let now_unix = self.unix_secs(now);
        let visited = Cell::new(0u64);
        let (peers, revoked, membership) = (&self.peers, &self.revoked, &self.membership);
        let own = (self.certificate.name.as_str(), self.public_key);
        let name_taken = |name: &str, key: &PublicKey| {
            (own.0 == name && own.1 != *key)
                || peers.iter().any(|p| {
                    visited.set(visited.get() + 1);
                    p.name == name && p.public_key != *key && !revoked.contains(&p.public_key)
                })
        };
        let advertise = &self.advertise;
        let bootstrap = || bootstrap_members(own, advertise, peers, revoked, &visited);
        let mut ctx = JoinContext {
            now_unix,
            local: &self.secret,
            our_mac1_key: &self.our_mac1_key,
            network: self.network,
            network_secret: self.network_secret.as_ref(),
            rng: &mut self.rng,
            name_taken: &name_taken,
            bootstrap: &bootstrap,
            certificate_lifetime: self.certificate_lifetime.as_secs(),
            container_network: membership.grant().map(|g| g.network),
            ranges_out_of_pool: &|| membership.ranges_out_of_pool(),
        };
        let outcome = self.invites.handle_checked(&mut ctx, from, request);
        self.counters.join_table_entries_visited += visited.get();
        match outcome {
            JoinOutcome::Admitted(admission) => {
                info!(name = %admission.name, key = %admission.key, %from, repeated = admission.repeated, "admitted a new member by invitation");
                self.events.push_back(NodeEvent::JoinAdmitted {
                    invite_id: admission.invite_id,
                    name: admission.name,
                    key: admission.key,
                    reply: admission.reply,
                    destination: from,
                });
            }
            JoinOutcome::Refused { reason, reply } => {
                info!(%from, reason = reason.as_str(), "refused a join request");
                let mut packet = self.pool.take();
                packet.copy_frame_from(&reply);
                self.queue_transmit(DeferredTransmit {
                    destination: from,
                    packet,
                    seal: None,
                });
            }
            JoinOutcome::Dropped(_) => {}
        }
    }

    /// The invitations the inviter's state directory holds (the io layer re-reads it).
    pub fn set_pending_invites(&mut self, invites: Vec<PendingInvite>) {
        self.invites.set_pending(invites);
    }

    /// Sends what the membership layer queued (inside the tunnels, handshaking where needed)
    /// and acts on what it learned: members to reach, revocations, our renewed certificate.
    pub(super) fn pump_membership(&mut self, now: Instant) {
        loop {
            let mut progressed = false;
            while let Some((key, payload)) = self.membership.poll_transmit() {
                progressed = true;
                let Some(&id) = self.by_key.get(&key) else {
                    self.counters.tx_membership_no_member += 1;
                    continue;
                };
                if payload.len() > self.pool.max_frame() {
                    self.counters.tx_membership_oversize += 1;
                    continue;
                }
                let mut packet = self.pool.take();
                packet.copy_frame_from(&payload);
                self.send_payload(now, id, PayloadKind::Membership, packet);
            }
            while let Some(event) = self.membership.poll_event() {
                progressed = true;
                self.on_membership_event(now, event);
            }
            if !progressed {
                return;
            }
        }
    }

    pub(super) fn on_membership_event(&mut self, now: Instant, event: MembershipEvent) {
        match event {
            MembershipEvent::MemberUp {
                key,
                name,
                endpoints,
                certificate,
            } => {
                debug!(member = %name, %key, ?endpoints, "member up");
                if let Some(id) = self.add_member(&certificate, endpoints.first().copied()) {
                    let candidates = &mut self.peers[id as usize].path.candidates;
                    *candidates = endpoints;
                    candidates.truncate(CANDIDATES_MAX);
                    if self.full_mesh() {
                        self.start_handshake(now, id);
                    }
                }
            }
            MembershipEvent::MemberDown { key } => {
                if let Some(&id) = self.by_key.get(&key) {
                    debug!(member = %self.peers[id as usize].name, "member down (gossip)");
                }
            }
            MembershipEvent::MemberForgotten { key } => {
                if let Some(&id) = self.by_key.get(&key) {
                    let peer = &mut self.peers[id as usize];
                    if !peer.sessions.is_up() {
                        // Stop calling a member gossip has given up on; it announces itself
                        // again when it returns.
                        peer.endpoint = None;
                        peer.handshake = HandshakeProgress::default();
                        let retired = peer.sessions.abandon_initiation();
                        self.retire(retired);
                    }
                }
            }
            MembershipEvent::Revoked { revocation } => {
                self.revoke(revocation.static_key);
                self.events.push_back(NodeEvent::Revoked(revocation));
            }
            MembershipEvent::CertificateRenewed { certificate } => {
                info!(expires_at = certificate.expires_at, "certificate renewed");
                self.set_certificate(certificate.clone());
                self.events
                    .push_back(NodeEvent::CertificateRenewed(certificate));
            }
        }
    }

    /// Whether this node keeps a session with every member (small networks) or makes them on
    /// demand (see [`FULL_MESH_MAX`]).
    pub(super) fn full_mesh(&self) -> bool {
        self.peers.len() <= FULL_MESH_MAX
    }

    /// Applies a revocation an admin wrote into the state directory: verified, applied at once,
    /// and spread by gossip.
    pub fn apply_revocation(
        &mut self,
        now: Instant,
        revocation: Revocation,
    ) -> Result<(), MembershipError> {
        let key = revocation.static_key;
        self.membership.revoke(now, revocation)?;
        self.revoke(key);
        self.pump_membership(now);
        Ok(())
    }
}

/// Who a new member is told about: this node (`own`: name and key, reached at `advertise`), then
/// members with a session and an endpoint. Counts the table entries it looks at in `visited`.
fn bootstrap_members(
    own: (&str, PublicKey),
    advertise: &[SocketAddr],
    peers: &[Peer],
    revoked: &HashSet<PublicKey>,
    visited: &Cell<u64>,
) -> Vec<BootstrapMember> {
    let mut members = vec![BootstrapMember {
        name: own.0.to_owned(),
        key: own.1,
        endpoints: advertise.to_vec(),
    }];
    members.extend(
        peers
            .iter()
            .inspect(|_| visited.set(visited.get() + 1))
            .filter(|p| p.sessions.is_up() && !revoked.contains(&p.public_key))
            .filter_map(|p| {
                Some(BootstrapMember {
                    name: p.name.clone(),
                    key: p.public_key,
                    endpoints: vec![p.endpoint?],
                })
            })
            .take(BOOTSTRAP_PEERS_MAX),
    );
    members
}
