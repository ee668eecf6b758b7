//! From the TAP out: switching a frame to its peers, answering frames too big for the path,
//! sealing on the current session and queueing the datagram on the route in use.
//!
//! Invariant: a payload leaves only sealed on the peer's current session (or deferred, for the
//! worker to seal outside the lock); without a usable session it waits in the peer's bounded
//! pending queue while a handshake runs.

use meshd_crypto::{CryptoError, Sealer};
use tracing::debug;

use super::api::DeferredTransmit;
use crate::core::frames::{too_big_reply, Ipv4Fragmenter, NoReply};
use crate::core::peer::{Route, PENDING_FRAMES_MAX};
use crate::core::switch::{Forward, Learned, Port};
use crate::wire::{emit_data_header, EthernetFrame, MacAddr, PayloadKind, RELAY_ENVELOPE_LEN};

use super::*;

impl Node {
    /// Switches a frame read from the TAP to the peers it must reach.
    pub fn handle_tap_frame(&mut self, now: Instant, frame: PacketBuf) {
        self.observe(now);
        match self.switch_from_tap(now, &frame) {
            Some(forward) => self.forward_tap_frame(now, forward, frame),
            None => self.pool.give(frame),
        }
    }

    /// Switches the segments of one super-frame read from the TAP. The segmenter copies the
    /// super-frame's headers into every segment, so the switch decides once (learning the
    /// source, looking up the destination) and the decision holds for every segment with the
    /// same MACs: nothing on the way out changes the FDB. A segment with other MACs gets its own.
    pub fn handle_tap_segments(
        &mut self,
        now: Instant,
        segments: impl IntoIterator<Item = PacketBuf>,
    ) {
        self.observe(now);
        let mut decided: Option<((MacAddr, MacAddr), Option<Forward>)> = None;
        for frame in segments {
            let macs = EthernetFrame::new_checked(frame.bytes())
                .ok()
                .map(|eth| (eth.src(), eth.dst()));
            let forward = match decided {
                Some((seen, forward)) if macs == Some(seen) => forward,
                _ => {
                    let forward = self.switch_from_tap(now, &frame);
                    decided = macs.map(|m| (m, forward));
                    forward
                }
            };
            match forward {
                Some(forward) => self.forward_tap_frame(now, forward, frame),
                None => self.pool.give(frame),
            }
        }
    }

    /// The switch's decision for a frame from the TAP (its source learned as local), or `None`
    /// (counted) for a frame that cannot go anywhere.
    fn switch_from_tap(&mut self, now: Instant, frame: &PacketBuf) -> Option<Forward> {
        let (src, dst) = match EthernetFrame::new_checked(frame.bytes()) {
            Ok(eth) => (eth.src(), eth.dst()),
            Err(_) => {
                self.counters.tx_bad_frame += 1;
                return None;
            }
        };
        if crate::core::guard::is_reserved_group(dst) {
            // A Linux bridge keeps these on the host; so does the switch across hosts.
            self.counters.tx_l2_reserved += 1;
            return None;
        }
        if let Learned::Moved { from } = self.fdb.learn(now, src, Port::Local) {
            debug!(mac = %src, from = ?from, "MAC moved to this host");
        }
        Some(self.fdb.forward_from_local(now, dst))
    }

    fn forward_tap_frame(&mut self, now: Instant, forward: Forward, mut frame: PacketBuf) {
        match forward {
            Forward::Drop | Forward::Local => self.pool.give(frame),
            Forward::Unicast(peer) => {
                self.counters.frames_from_tap += 1;
                self.send_frame(now, peer, frame);
            }
            Forward::Flood => {
                frame.complete_checksum();
                self.flood(now, frame)
            }
        }
    }

    pub(super) fn flood(&mut self, now: Instant, frame: PacketBuf) {
        // Peers worth sending to: those with a session, or a way to handshake with them.
        let eligible = |p: &Peer| p.sessions.is_up() || p.endpoint.is_some();
        let len = frame.len();
        let mut last = None;
        let mut narrowest_refused = None;
        for id in 0..self.peers.len() {
            if !eligible(&self.peers[id]) {
                continue;
            }
            let limit = self.frame_limit(id as PeerId);
            if len <= limit {
                last = Some(id);
            } else {
                narrowest_refused = Some(narrowest_refused.map_or(limit, |l: usize| l.min(limit)));
            }
        }
        if let Some(limit) = narrowest_refused {
            // One answer for the whole flood, with the narrowest path it did not fit.
            let mut copy = self.pool.take();
            copy.copy_frame_from(frame.bytes());
            self.frame_too_big(now, copy, limit, None);
        }
        let Some(last) = last else {
            self.pool.give(frame);
            return;
        };
        self.counters.frames_flooded += 1;
        self.counters.frames_from_tap += 1;
        for id in 0..last {
            if eligible(&self.peers[id]) && len <= self.frame_limit(id as PeerId) {
                let mut copy = self.pool.take();
                copy.copy_frame_from(frame.bytes());
                self.send_payload(now, id as PeerId, PayloadKind::Ethernet, copy);
            }
        }
        // The last recipient gets the original buffer: one copy fewer per flood.
        self.send_payload(now, last as PeerId, PayloadKind::Ethernet, frame);
    }

    /// Sends a frame to one peer, or answers its sender if it is too big for the path.
    /// A frame whose L4 checksum was left partial goes so only to a peer whose current session
    /// accepts it; for any other it is completed here first.
    pub(super) fn send_frame(&mut self, now: Instant, id: PeerId, mut frame: PacketBuf) {
        let limit = self.frame_limit(id);
        if frame.len() > limit {
            frame.complete_checksum();
            return self.frame_too_big(now, frame, limit, Some(id));
        }
        let mut kind = PayloadKind::Ethernet;
        if frame.partial_checksum().is_some() {
            if self.accepts_partial_checksums(now, id) {
                kind = PayloadKind::EthernetPartialChecksum;
                self.counters.tx_partial_checksum += 1;
            } else {
                frame.complete_checksum();
            }
        }
        self.send_payload(now, id, kind, frame);
    }

    /// Whether a frame sent to peer `id` now leaves on a session whose peer accepts partial L4
    /// checksums.
    #[inline]
    pub(super) fn accepts_partial_checksums(&self, now: Instant, id: PeerId) -> bool {
        self.session_usable(now, id)
            && self.peers[id as usize]
                .sessions
                .current()
                .is_some_and(|s| s.partial_checksums)
    }

    /// The largest Ethernet frame that reaches peer `id` whole on the route in use: what its path
    /// MTU search found (or assumes), less the data message's overhead. Without a session the
    /// route is not known yet, so frames are queued at any size the TAP delivers.
    pub(super) fn frame_limit(&self, id: PeerId) -> usize {
        let peer = &self.peers[id as usize];
        match (peer.sessions.current(), &peer.path.pmtu) {
            (Some(_), Some((_, search))) => search.current() - DATA_OVERHEAD,
            (Some(_), None) => match self.route(id) {
                Some(route) => self.pmtu_bounds(route).1 - DATA_OVERHEAD,
                None => self.max_frame,
            },
            (None, _) => self.max_frame,
        }
    }

    /// How the io layer should cut a super-frame to `dst`: the largest frame that reaches
    /// whatever `dst` is behind (TCP segments cut to fit need no ICMP round trip), and whether the segments may leave with partial checksums (one
    /// peer, whose current session accepts them; a flood or the host itself gets full ones).
    pub fn segment_plan(&self, now: Instant, dst: MacAddr) -> SegmentPlan {
        let (max_frame, partial_checksums) = match self.fdb.lookup(now, dst) {
            Some(Port::Peer(id)) if !dst.is_multicast() => (
                self.frame_limit(id),
                self.accepts_partial_checksums(now, id),
            ),
            Some(Port::Local) => (self.max_frame, false),
            _ => {
                let narrowest = (0..self.peers.len() as PeerId)
                    .filter(|&id| self.peers[id as usize].sessions.is_up())
                    .map(|id| self.frame_limit(id))
                    .min();
                (narrowest.unwrap_or(self.max_frame), false)
            }
        };
        SegmentPlan {
            max_frame,
            partial_checksums,
        }
    }

    /// A frame does not fit the path (`limit` bytes of frame): answer an IP sender with ICMP
    /// "fragmentation needed" / "packet too big" so it sends smaller, fragment an IPv4 packet that
    /// allows it (towards `peer`), and count everything else as dropped.
    pub(super) fn frame_too_big(
        &mut self,
        now: Instant,
        frame: PacketBuf,
        limit: usize,
        peer: Option<PeerId>,
    ) {
        let l2 = EthernetFrame::new_checked(frame.bytes())
            .map_or(ETHERNET_HEADER_LEN, |f| f.header_len());
        let mtu = u16::try_from(limit.saturating_sub(l2)).unwrap_or(u16::MAX);
        let mut answer = self.pool.take();
        match too_big_reply(frame.bytes(), mtu, answer.frame_area()) {
            Ok(len) => {
                // The queue is checked first so a full one does not spend a token.
                if self.tap_out.len() >= TAP_OUT_MAX || !self.too_big_budget.try_take(now) {
                    self.counters.tx_too_big_ratelimited += 1;
                    self.pool.give(answer);
                } else {
                    self.counters.tx_too_big_icmp += 1;
                    answer.set_frame_len(len);
                    self.tap_out.push_back(answer);
                }
            }
            Err(NoReply::FragmentsAllowed) if peer.is_some() => {
                self.pool.give(answer);
                let id = peer.expect("checked");
                self.fragment(now, id, &frame, limit);
            }
            Err(reason) => {
                let counter = match reason {
                    NoReply::NotIp => &mut self.counters.tx_too_big_not_ip,
                    NoReply::IcmpError => &mut self.counters.tx_too_big_icmp_error,
                    NoReply::GroupDestination => &mut self.counters.tx_too_big_group,
                    _ => &mut self.counters.tx_too_big_dropped,
                };
                *counter += 1;
                self.pool.give(answer);
            }
        }
        self.pool.give(frame);
    }

    /// Sends an IPv4 packet that allows fragmentation as fragments that fit `limit`.
    pub(super) fn fragment(&mut self, now: Instant, id: PeerId, frame: &PacketBuf, limit: usize) {
        let Ok(mut fragments) = Ipv4Fragmenter::new(frame.bytes(), limit) else {
            self.counters.tx_too_big_dropped += 1;
            return;
        };
        self.counters.tx_too_big_fragmented += 1;
        loop {
            let mut piece = self.pool.take();
            match fragments.next_into(piece.frame_area()) {
                Some(len) => {
                    piece.set_frame_len(len);
                    self.send_payload(now, id, PayloadKind::Ethernet, piece);
                }
                None => {
                    self.pool.give(piece);
                    return;
                }
            }
        }
    }

    /// A frame the node generated for the TAP (an ICMP answer); the io layer writes it and gives
    /// the buffer back with `recycle`.
    pub fn poll_tap_frame(&mut self) -> Option<PacketBuf> {
        self.tap_out.pop_front()
    }

    /// Sends a payload of `kind` to one peer now if it has a session, else queues it and starts a
    /// handshake.
    pub(super) fn send_payload(
        &mut self,
        now: Instant,
        id: PeerId,
        kind: PayloadKind,
        frame: PacketBuf,
    ) {
        if self.session_usable(now, id) {
            self.seal_and_queue(now, id, kind, frame);
            let s = self.peers[id as usize]
                .sessions
                .current()
                .expect("checked usable");
            if now >= s.rekey_at() && s.we_initiated {
                self.start_handshake(now, id);
            }
        } else {
            let peer = &mut self.peers[id as usize];
            if peer.pending.len() >= PENDING_FRAMES_MAX {
                if let Some((_, old)) = peer.pending.pop_front() {
                    self.counters.tx_no_session += 1;
                    self.pool.give(old);
                }
            }
            self.peers[id as usize].pending.push_back((kind, frame));
            self.start_handshake(now, id);
        }
    }

    /// Whether peer `id`'s current session can carry a datagram now: not expired, counters left.
    #[inline]
    pub(super) fn session_usable(&self, now: Instant, id: PeerId) -> bool {
        self.peers[id as usize].sessions.current().is_some_and(|s| {
            !s.expired(now) && s.send.counter() < s.send.cipher().rekey_after_messages()
        })
    }

    /// Encrypts `packet` in place on the peer's current session and queues the datagram on the
    /// peer's route.
    pub(super) fn seal_and_queue(
        &mut self,
        now: Instant,
        id: PeerId,
        kind: PayloadKind,
        packet: PacketBuf,
    ) {
        let route = self.route(id);
        self.seal_and_route(now, id, kind, packet, route);
    }

    /// Encrypts `packet` in place on the peer's current session and queues it on `route`.
    pub(super) fn seal_and_route(
        &mut self,
        now: Instant,
        id: PeerId,
        kind: PayloadKind,
        mut packet: PacketBuf,
        route: Option<Route>,
    ) {
        let peer = &mut self.peers[id as usize];
        let (Some(session), Some(route)) = (peer.sessions.current_mut(), route) else {
            self.counters.tx_no_route += 1;
            self.pool.give(packet);
            return;
        };
        let plain_len = packet.len();
        let defer = self.defer_sealing && matches!(route, Route::Direct(_));
        let sealed = session.send.next_counter().and_then(|counter| {
            let remote = session.remote_index;
            let send = &session.send;
            packet.seal_with(|head, body, tail| {
                emit_data_header(head, kind, remote, counter);
                if defer {
                    return Ok::<Option<(Sealer, u64)>, CryptoError>(Some((
                        send.sealer().clone(),
                        counter,
                    )));
                }
                let tag = send.sealer().seal_in_place(counter, head, body)?;
                tail.copy_from_slice(&tag);
                Ok(None)
            })
        });
        match sealed {
            Ok(Some(seal)) => {
                peer.note_sent(now, kind, plain_len);
                let Route::Direct(destination) = route else {
                    unreachable!("only direct routes defer sealing")
                };
                self.queue_transmit(DeferredTransmit {
                    destination,
                    packet,
                    seal: Some(seal),
                });
            }
            Ok(None) => {
                peer.note_sent(now, kind, plain_len);
                self.transmit(now, id, route, packet);
            }
            Err(_) => {
                self.counters.tx_counter_exhausted += 1;
                self.pool.give(packet);
                self.start_handshake(now, id);
            }
        }
    }

    /// Queues a finished datagram for peer `id` on `route`: as it is to a direct endpoint, or
    /// inside a relay envelope sealed for the relay.
    pub(super) fn transmit(&mut self, now: Instant, id: PeerId, route: Route, packet: PacketBuf) {
        let relay = match route {
            Route::Direct(destination) => {
                self.queue_transmit(DeferredTransmit {
                    destination,
                    packet,
                    seal: None,
                });
                return;
            }
            Route::Relay(relay) => relay,
        };
        if !self.can_relay(relay) || packet.len() + RELAY_ENVELOPE_LEN > self.pool.max_frame() {
            self.counters.tx_no_route += 1;
            self.pool.give(packet);
            return;
        }
        let mut envelope = self.pool.take();
        let area = envelope.frame_area();
        area[..RELAY_ENVELOPE_LEN].copy_from_slice(self.peers[id as usize].public_key.as_bytes());
        area[RELAY_ENVELOPE_LEN..RELAY_ENVELOPE_LEN + packet.len()].copy_from_slice(packet.bytes());
        envelope.set_frame_len(RELAY_ENVELOPE_LEN + packet.len());
        self.pool.give(packet);
        self.counters.tx_relayed += 1;
        let direct = self.peers[relay as usize].endpoint.map(Route::Direct);
        self.seal_and_route(now, relay, PayloadKind::Relay, envelope, direct);
    }

    pub(super) fn send_keepalive(&mut self, now: Instant, id: PeerId) {
        let mut packet = self.pool.take();
        packet.set_frame_len(0);
        self.counters.keepalives_sent += 1;
        self.seal_and_queue(now, id, PayloadKind::Keepalive, packet);
    }

    pub(super) fn flush_pending(&mut self, now: Instant, id: PeerId) {
        let pending = std::mem::take(&mut self.peers[id as usize].pending);
        let had_any = !pending.is_empty();
        for (kind, frame) in pending {
            self.seal_and_queue(now, id, kind, frame);
        }
        if !had_any
            && self.peers[id as usize]
                .sessions
                .current()
                .is_some_and(|s| s.we_initiated)
        {
            // The responder only starts sending on a session once it has received on it.
            self.send_keepalive(now, id);
        }
    }
}
