//! Routes and probes: which way a peer's datagrams go (direct, or through a relay that reaches
//! it), probes that check the route and measure its MTU, going relayed when it stops answering
//! and back to direct when a candidate answers, and the addresses members see us at.
//!
//! Invariant: a relay is only a member with a working direct path, so a datagram crosses at most
//! one relay.

use rand_core::RngCore;
use tracing::{debug, info};

use super::api::Origin;
use super::endpoints::Report;
use crate::core::peer::{ProbePurpose, Route, SentProbe, CANDIDATES_MAX, PROBE_INTERVAL};
use crate::core::pmtu::PmtuSearch;
use crate::wire::{PayloadKind, Probe, ProbeAck, PROBE_ACK_MAX_LEN};

use super::*;

impl Node {
    /// The route datagrams to peer `id` take now: through its relay while it has one that still
    /// reaches it directly, else straight to its endpoint.
    pub(super) fn route(&self, id: PeerId) -> Option<Route> {
        let peer = &self.peers[id as usize];
        if let Some(relay) = peer.path.relay {
            if self.can_relay(relay) {
                return Some(Route::Relay(relay));
            }
        }
        peer.endpoint.map(Route::Direct)
    }

    /// Whether member `relay` can carry datagrams for others: a usable session on a direct path
    /// that answers (relayed paths are never relayed again: one hop, so no loops).
    pub(super) fn can_relay(&self, relay: PeerId) -> bool {
        let r = &self.peers[relay as usize];
        r.sessions.is_up()
            && r.path.relay.is_none()
            && r.endpoint.is_some()
            && r.path.misses == 0
            && !self.revoked.contains(&r.public_key)
    }

    /// A member to relay through to `target`, other than `avoid`; `turn` rotates through the
    /// candidates so a relay that does not deliver is followed by the next one.
    pub(super) fn pick_relay(
        &self,
        target: PeerId,
        avoid: Option<PeerId>,
        turn: u32,
    ) -> Option<PeerId> {
        let candidates = (0..self.peers.len() as PeerId)
            .filter(|&r| r != target && Some(r) != avoid && self.can_relay(r));
        let count = candidates.clone().count();
        if count == 0 {
            return None;
        }
        candidates.clone().nth(turn as usize % count)
    }

    /// An authenticated packet of `kind` arrived from peer `id` straight from `from`. While the
    /// peer is reached directly, its endpoint follows its packets (roaming, as WireGuard does).
    /// While it is relayed, anything but a probe means the peer confirmed a direct round trip and
    /// switched to it, so this side switches too; probes alone prove only one direction.
    pub(super) fn direct_packet(
        &mut self,
        now: Instant,
        id: PeerId,
        from: SocketAddr,
        kind: PayloadKind,
    ) {
        let peer = &mut self.peers[id as usize];
        if peer.path.relay.is_some() {
            if !matches!(kind, PayloadKind::Probe | PayloadKind::ProbeAck) {
                self.go_direct(now, id, from);
            }
        } else if peer.endpoint != Some(from) {
            info!(peer = %peer.name, old = ?peer.endpoint, new = %from, "peer endpoint changed");
            peer.endpoint = Some(from);
            peer.path.reset_route();
        }
    }

    /// Acknowledges a probe the way it came, saying which address it came from.
    pub(super) fn answer_probe(
        &mut self,
        now: Instant,
        id: PeerId,
        origin: Origin,
        payload: &[u8],
        datagram_len: usize,
    ) {
        let Ok(probe_id) = Probe::id(payload) else {
            self.counters.rx_malformed += 1;
            return;
        };
        let ack = ProbeAck {
            id: probe_id,
            size: u16::try_from(datagram_len).unwrap_or(u16::MAX),
            observed: match origin {
                Origin::Direct(from) => Some(from),
                Origin::Relayed { .. } => None,
            },
        };
        let mut packet = self.pool.take();
        let len = ack.emit(&mut packet.frame_area()[..PROBE_ACK_MAX_LEN]);
        packet.set_frame_len(len);
        self.seal_and_route(
            now,
            id,
            PayloadKind::ProbeAck,
            packet,
            Some(origin.route_back()),
        );
    }

    pub(super) fn on_probe_ack(&mut self, now: Instant, id: PeerId, origin: Origin, ack: ProbeAck) {
        let peer = &mut self.peers[id as usize];
        let Some(at) = peer.path.probes.iter().position(|p| p.id == ack.id) else {
            self.counters.rx_probe_ack_unknown += 1;
            return;
        };
        let probe = peer.path.probes[at];
        if probe.route != origin.route_back() {
            self.counters.rx_probe_ack_wrong_path += 1;
            return;
        }
        peer.path.probes.remove(at);
        self.counters.probe_acks += 1;
        let in_use = self.route(id) == Some(probe.route);
        let peer = &mut self.peers[id as usize];
        if in_use {
            peer.path.confirm(now);
        }
        let key = peer.public_key;
        if in_use && probe.purpose == ProbePurpose::Liveness && self.membership.is_down(&key) {
            // The path answers, so the member is not down: both sides of a healed partition
            // hold each other down and would otherwise wait for the periodic announcement.
            if let Some(certificate) = self.peers[id as usize].certificate.clone() {
                let seen_at = self.origin_address(origin);
                self.membership
                    .session_established(now, &certificate, seen_at);
                self.pump_membership(now);
            }
        }
        let peer = &mut self.peers[id as usize];
        match probe.purpose {
            ProbePurpose::Liveness => {}
            ProbePurpose::Confirm => peer.path.confirm_misses = 0,
            ProbePurpose::Candidate => {
                if let Route::Direct(addr) = probe.route {
                    if peer.path.relay.is_some() {
                        self.go_direct(now, id, addr);
                    }
                }
            }
            ProbePurpose::Pmtu => {
                if let Some((route, search)) = peer.path.pmtu.as_mut() {
                    if *route == probe.route {
                        search.on_ack(now, ack.id);
                    }
                }
            }
        }
        if let (Route::Direct(_), Some(observed)) = (probe.route, ack.observed) {
            self.note_observed(now, id, observed);
        }
    }

    /// Moves peer `id` from its relay to the direct endpoint `addr`, which just proved it works.
    pub(super) fn go_direct(&mut self, now: Instant, id: PeerId, addr: SocketAddr) {
        let peer = &mut self.peers[id as usize];
        let changed = peer.endpoint != Some(addr) || peer.path.relay.is_some();
        peer.endpoint = Some(addr);
        if peer.path.leave_relay() {
            self.counters.path_to_direct += 1;
            info!(peer = %peer.name, endpoint = %addr, "peer reached directly again");
        }
        if changed {
            peer.path.reset_route();
            peer.path.next_liveness = Some(now + PROBE_INTERVAL);
        }
        peer.path.confirm(now);
    }

    /// Sends peer `id`'s traffic through `relay` from now on.
    pub(super) fn go_relayed(&mut self, now: Instant, id: PeerId, relay: PeerId) {
        let relay_name = self.peers[relay as usize].name.clone();
        let peer = &mut self.peers[id as usize];
        let Some(was_direct) = peer.path.enter_relay(now, relay) else {
            return;
        };
        if was_direct {
            self.counters.path_to_relay += 1;
        }
        info!(peer = %peer.name, via = %relay_name, "peer not reachable directly: relaying");
    }

    /// Member `id` saw our probe come from `addr`. If that is not an address we advertise, it may
    /// be how a NAT in front of us maps us, worth publishing so members can call us there; but
    /// one member's word is not enough (it could steer new sessions anywhere and make us re-sign
    /// our record at every probe): it is published once a second member reports it too.
    pub(super) fn note_observed(&mut self, now: Instant, id: PeerId, addr: SocketAddr) {
        if self.advertise.contains(&addr) {
            return;
        }
        self.counters.observed_reports += 1;
        let reporter = self.peers[id as usize].public_key;
        if self.observed.report(reporter, addr, &self.advertise) == Report::Confirmed {
            self.counters.observed_confirmed += 1;
            debug!(%addr, "two members see this node at an address: publishing it");
            self.publish_endpoints(now);
        }
    }

    /// Replaces the endpoints this node advertises (the io layer re-reads the host's addresses
    /// when `advertise` is not configured) and publishes them with what members observed.
    pub fn set_advertise(&mut self, endpoints: Vec<SocketAddr>) {
        if endpoints == self.advertise {
            return;
        }
        info!(?endpoints, "advertised endpoints changed");
        self.advertise = endpoints;
        self.observed.drop_advertised(&self.advertise);
        self.publish_endpoints(self.last_now);
        // This host may have moved: probe every peer now, so each sees our packets come from
        // the new address and follows (roaming) instead of waiting for the next probe round.
        for peer in &mut self.peers {
            if peer.sessions.is_up() {
                peer.path.next_liveness = Some(self.last_now);
            }
        }
    }

    /// Our endpoints changed: re-sign and gossip our record now if the publishing budget allows,
    /// else when it does (`flush_endpoints` from the timer pass).
    pub(super) fn publish_endpoints(&mut self, now: Instant) {
        self.observed.mark_changed();
        self.flush_endpoints(now);
    }

    /// Publishes a held-back endpoint change if the budget allows it now.
    pub(super) fn flush_endpoints(&mut self, now: Instant) {
        if !self.observed.take_publish(now) {
            return;
        }
        let mut endpoints: Vec<SocketAddr> = self.observed.confirmed().collect();
        endpoints.extend(self.advertise.iter().copied());
        endpoints.truncate(CANDIDATES_MAX);
        self.counters.endpoint_records_published += 1;
        self.membership.set_endpoints(endpoints);
    }

    /// A handshake with peer `id` just completed over `origin`: use that route from now on.
    pub(super) fn adopt_route(&mut self, now: Instant, id: PeerId, origin: Origin) {
        match origin {
            Origin::Direct(from) => self.go_direct(now, id, from),
            Origin::Relayed { relay, .. } => self.go_relayed(now, id, relay),
        }
    }

    /// Probes the route in use for liveness and size, moves to a relay (or the next one) when it
    /// stops answering, and while relayed looks for the way back to a direct endpoint.
    pub(super) fn path_timers(&mut self, now: Instant, id: PeerId) {
        let Some(route) = self.route(id) else { return };
        // Probes not answered in time are lost; lost liveness probes on the route in use count.
        let peer = &mut self.peers[id as usize];
        let losses = peer.path.expire_probes(now, route);
        if losses.black_hole {
            // Small probes get through and full-size ones do not: the path narrowed under us (a
            // new link on the way, a tunnel, a changed MTU). Search it again.
            if let Some((_, search)) = peer.path.pmtu.as_mut() {
                info!(peer = %peer.name, was = search.current(), "full-size packets lost on the path: measuring its MTU again");
                search.suspect_black_hole(now);
                self.counters.pmtu_black_holes += 1;
            }
        }
        if losses.route_lost {
            self.route_lost(now, id, route);
            return;
        }
        if self.peers[id as usize].path.liveness_due(now) {
            self.send_probe(
                now,
                id,
                route,
                ProbePurpose::Liveness,
                LIVENESS_PROBE_LEN,
                None,
            );
            // With it, one probe of the size in use, so a path that narrows is noticed.
            let settled_size = self.peers[id as usize].path.settled_size(route);
            if let Some(size) = settled_size.filter(|&s| s > LIVENESS_PROBE_LEN) {
                self.send_probe(now, id, route, ProbePurpose::Confirm, size, None);
            }
        }
        let peer = &mut self.peers[id as usize];
        if peer.path.candidate_due(now) {
            let endpoint = peer.endpoint;
            if let Some(addr) = peer.path.next_candidate_after(endpoint) {
                self.send_probe(
                    now,
                    id,
                    Route::Direct(addr),
                    ProbePurpose::Candidate,
                    LIVENESS_PROBE_LEN,
                    None,
                );
            }
        }
        self.pmtu_timers(now, id, route);
    }

    /// Runs the path MTU search of the route in use, starting one for a new route.
    pub(super) fn pmtu_timers(&mut self, now: Instant, id: PeerId, route: Route) {
        let (floor, ceiling) = self.pmtu_bounds(route);
        let peer = &mut self.peers[id as usize];
        match &mut peer.path.pmtu {
            Some((r, _)) if *r == route => {}
            slot => *slot = Some((route, PmtuSearch::new(now, floor, ceiling))),
        }
        let rng = &mut self.rng;
        let probes = match peer.path.pmtu.as_mut() {
            Some((_, search)) => search.poll_probes(now, &mut || rng.next_u32()),
            None => return,
        };
        for probe in probes {
            self.send_probe(
                now,
                id,
                route,
                ProbePurpose::Pmtu,
                probe.size,
                Some(probe.id),
            );
        }
    }

    /// The datagram sizes a path MTU search on `route` works between: what every path carries,
    /// and what the local link (or, through a relay, the path to the relay) can send, never more
    /// than the largest frame this node carries needs.
    pub(super) fn pmtu_bounds(&self, route: Route) -> (usize, usize) {
        let largest_needed = self.max_frame + DATA_OVERHEAD;
        let ceiling = match route {
            Route::Direct(addr) => {
                let ip_udp = if addr.is_ipv4() { 20 + 8 } else { 40 + 8 };
                self.underlay_mtu.saturating_sub(ip_udp).min(largest_needed)
            }
            Route::Relay(relay) => {
                let r = &self.peers[relay as usize];
                let to_relay = match (&r.path.pmtu, r.endpoint) {
                    (Some((_, search)), _) => search.current(),
                    (None, Some(addr)) => self.pmtu_bounds(Route::Direct(addr)).1,
                    (None, None) => BASE_DATAGRAM,
                };
                to_relay.saturating_sub(RELAY_OVERHEAD).min(largest_needed)
            }
        };
        let ceiling = ceiling.max(LIVENESS_PROBE_LEN);
        (BASE_DATAGRAM.min(ceiling), ceiling)
    }

    /// Sends a probe of `size` datagram bytes to peer `id` on `route` and remembers it.
    pub(super) fn send_probe(
        &mut self,
        now: Instant,
        id: PeerId,
        route: Route,
        purpose: ProbePurpose,
        size: usize,
        probe_id: Option<u32>,
    ) {
        let extra = if matches!(route, Route::Relay(_)) {
            RELAY_OVERHEAD
        } else {
            0
        };
        let payload_len = size.saturating_sub(DATA_OVERHEAD).max(PROBE_MIN_LEN);
        if payload_len + extra > self.pool.max_frame() {
            return;
        }
        let probe_id = probe_id.unwrap_or_else(|| self.rng.next_u32());
        let mut packet = self.pool.take();
        Probe::emit(&mut packet.frame_area()[..payload_len], probe_id);
        packet.set_frame_len(payload_len);
        self.peers[id as usize].path.remember_probe(SentProbe {
            id: probe_id,
            route,
            purpose,
            sent: now,
        });
        self.counters.probes_sent += 1;
        self.seal_and_route(now, id, PayloadKind::Probe, packet, Some(route));
    }

    /// The route in use stopped answering probes: try a relay (another one, if this was one);
    /// with no relay left, go back to trying direct and let the session's own timers decide.
    pub(super) fn route_lost(&mut self, now: Instant, id: PeerId, route: Route) {
        let peer = &mut self.peers[id as usize];
        peer.path.misses = 0;
        peer.path.rotation = peer.path.rotation.wrapping_add(1);
        let turn = peer.path.rotation;
        let avoid = match route {
            Route::Relay(r) => Some(r),
            Route::Direct(_) => None,
        };
        match (self.pick_relay(id, avoid, turn), route) {
            (Some(relay), _) => self.go_relayed(now, id, relay),
            (None, Route::Relay(_)) => {
                let peer = &mut self.peers[id as usize];
                peer.path.relay = None;
                peer.path.reset_route();
                info!(peer = %peer.name, "relay lost and no other: trying direct");
            }
            (None, Route::Direct(_)) => {
                let peer = &mut self.peers[id as usize];
                peer.path.next_liveness = Some(now + PROBE_INTERVAL);
                debug!(peer = %peer.name, "direct path not answering and no relay available");
            }
        }
    }
}
