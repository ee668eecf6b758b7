//! From the socket in: the cheap checks of a datagram (cheapest first), the two halves of opening
//! a data message, and what an authenticated payload means (a frame, gossip, a relay envelope, a
//! probe).
//!
//! Invariants: nothing about a packet (endpoint, FDB, traffic clocks) is believed before it is
//! authenticated and passed the replay window; a frame from a peer only ever goes to the TAP
//! (split horizon); a relay envelope found inside a relayed datagram is dropped (one hop).

use crate::core::frames::PartialChecksum;
use crate::core::guard::{self, GuardDrop, SourceMac, LEARN_BURST, LEARN_RATE};
use crate::core::limit::TokenBucket;
use crate::wire::source_claim;
use std::ops::Range;

use meshd_crypto::PublicKey;
use tracing::debug;

use super::api::{direct_address, Inbound, OpenJob, Origin, Received};
use crate::core::peer::{Route, Session, Slot};
use crate::core::switch::{Forward, Learned, Port};
use crate::wire::{
    classify, Data, EthernetFrame, MessageType, PayloadKind, ProbeAck, RelayEnvelope, WireError,
    DATA_HEADER_LEN, RELAY_ENVELOPE_LEN,
};

use super::*;

impl Node {
    /// Processes one received datagram. A received Ethernet frame is decrypted in place and its
    /// range inside `datagram` returned for the caller to write to the TAP.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
    ) -> Received {
        self.observe(now);
        self.counters.rx_datagrams += 1;
        self.dispatch(now, Origin::Direct(from), datagram)
    }

    /// The first half of receiving a datagram, for callers that open data messages outside the
    /// node (workers sharing one node under a lock decrypt in parallel, without it). Everything
    /// but a data message for a live session is handled here at once; such a message comes back
    /// as an [`OpenJob`] that passed every cheap check (index, lifetime, replay window). After
    /// [`OpenJob::open`], [`Node::finish_datagram`] does the rest with the same bytes.
    pub fn begin_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &mut [u8],
    ) -> Inbound {
        self.observe(now);
        self.counters.rx_datagrams += 1;
        if classify(datagram) != Ok(MessageType::Data) {
            return Inbound::Done(self.dispatch(now, Origin::Direct(from), datagram));
        }
        match self.data_job(now, from, datagram) {
            Ok(job) => Inbound::Open(job),
            Err(received) => Inbound::Done(received),
        }
    }

    /// The second half of [`Node::begin_datagram`]: `datagram` was opened by `job`.
    pub fn finish_datagram(&mut self, now: Instant, job: OpenJob, datagram: &mut [u8]) -> Received {
        self.observe(now);
        let origin = Origin::Direct(job.from);
        self.data_opened(now, origin, job, datagram)
    }

    /// Processes one datagram, received directly or taken out of a relay envelope.
    pub(super) fn dispatch(
        &mut self,
        now: Instant,
        origin: Origin,
        datagram: &mut [u8],
    ) -> Received {
        match classify(datagram) {
            Ok(MessageType::Data) => self.on_data(now, origin, datagram),
            Ok(MessageType::HandshakeInit) => {
                self.on_handshake_init(now, origin, datagram);
                Received::Nothing
            }
            Ok(MessageType::HandshakeResponse) => {
                self.on_handshake_response(now, origin, datagram);
                Received::Nothing
            }
            Ok(MessageType::CookieReply) => {
                self.on_cookie_reply(now, datagram);
                Received::Nothing
            }
            Ok(MessageType::JoinRequest) => {
                if let Origin::Direct(from) = origin {
                    self.on_join_request(now, from, datagram);
                } else {
                    self.counters.rx_unknown_type += 1;
                }
                Received::Nothing
            }
            // Join answers go to `meshd join`'s own socket, never to a running node.
            Ok(MessageType::JoinResponse | MessageType::JoinRefused | MessageType::Unknown(_)) => {
                self.counters.rx_unknown_type += 1;
                Received::Nothing
            }
            Err(e) => {
                self.count_wire_error(e);
                Received::Nothing
            }
        }
    }

    pub(super) fn count_wire_error(&mut self, e: WireError) {
        match e {
            WireError::BadVersion(_) => self.counters.rx_bad_version += 1,
            _ => self.counters.rx_malformed += 1,
        }
    }

    pub(super) fn on_data(
        &mut self,
        now: Instant,
        origin: Origin,
        datagram: &mut [u8],
    ) -> Received {
        // The address only matters for direct datagrams; `data_opened` takes it from `origin`.
        let from = direct_address(origin).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let mut job = match self.data_job(now, from, datagram) {
            Ok(job) => job,
            Err(received) => return received,
        };
        job.open(datagram);
        self.data_opened(now, origin, job, datagram)
    }

    /// The checks of a data message before decryption, cheapest first: its length, a session
    /// with its index, the session's lifetime, the replay window.
    pub(super) fn data_job(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<OpenJob, Received> {
        let (index, counter, kind) = match Data::new_checked(datagram) {
            Ok(d) => (d.receiver_index(), d.counter(), d.payload_kind()),
            Err(e) => {
                self.count_wire_error(e);
                return Err(Received::Nothing);
            }
        };
        let Some(session) = self.session_by_index(index) else {
            self.counters.rx_unknown_index += 1;
            return Err(Received::Nothing);
        };
        if session.expired(now) {
            self.counters.rx_expired_session += 1;
            return Err(Received::Nothing);
        }
        if !session.replay.check(counter) {
            self.counters.rx_replayed += 1;
            return Err(Received::Nothing);
        }
        Ok(OpenJob {
            from,
            opener: session.recv.opener().clone(),
            index,
            counter,
            kind,
            plain_len: None,
        })
    }

    /// The peer and session slot that our local `index` names, if it still names one.
    #[inline]
    pub(super) fn locate_index(&self, index: u32) -> Option<(PeerId, Slot)> {
        let id = self.by_index.lookup(index)?;
        let slot = self.peers[id as usize].sessions.slot_of(index)?;
        Some((id, slot))
    }

    #[inline]
    pub(super) fn session_by_index(&mut self, index: u32) -> Option<&mut Session> {
        let (id, slot) = self.locate_index(index)?;
        self.peers[id as usize].sessions.session_mut(slot)
    }

    /// A data message after its decryption was tried: the replay window, then what it carries.
    pub(super) fn data_opened(
        &mut self,
        now: Instant,
        origin: Origin,
        job: OpenJob,
        datagram: &mut [u8],
    ) -> Received {
        let OpenJob {
            index,
            counter,
            kind,
            plain_len,
            opener,
            ..
        } = job;
        let Some(plain_len) = plain_len else {
            self.counters.rx_decrypt_failed += 1;
            return Received::Nothing;
        };
        // Between the halves the session may have been replaced (a rekey on another worker) and
        // its index even reused: only the very key that opened the message may count it.
        let Some((id, slot)) = self.locate_index(index) else {
            self.counters.rx_unknown_index += 1;
            return Received::Nothing;
        };
        let peer = &mut self.peers[id as usize];
        let session = peer
            .sessions
            .session_mut(slot)
            .expect("locate_index found it");
        if !session.recv.opener().same_key(&opener) {
            self.counters.rx_unknown_index += 1;
            return Received::Nothing;
        }
        let datagram_len = datagram.len();
        if !session.replay.accept(counter) {
            self.counters.rx_replayed += 1;
            return Received::Nothing;
        }

        // Authenticated from here on.
        if let Origin::Relayed { source, .. } = origin {
            if source != peer.public_key {
                self.counters.rx_relay_mismatch += 1;
                return Received::Nothing;
            }
        }
        peer.note_received(now, kind, plain_len);
        if let Origin::Direct(from) = origin {
            self.direct_packet(now, id, from, kind);
        }
        if slot == Slot::Next {
            self.promote_next(now, id);
        }
        let frame = DATA_HEADER_LEN..DATA_HEADER_LEN + plain_len;
        let relayed = matches!(origin, Origin::Relayed { .. });
        match kind {
            PayloadKind::Keepalive => Received::Nothing,
            PayloadKind::Membership => {
                let key = self.peers[id as usize].public_key;
                self.membership.handle_message(now, key, &datagram[frame]);
                self.pump_membership(now);
                Received::Nothing
            }
            PayloadKind::Ethernet => self.on_ethernet(now, id, datagram, frame),
            PayloadKind::EthernetPartialChecksum => {
                // Checked before the switch sees it: the TAP's kernel (or the io layer) will
                // complete the checksum where this says, so it must be a TCP or UDP segment.
                let Some(at) = PartialChecksum::of(&datagram[frame.clone()]) else {
                    self.counters.rx_partial_checksum_malformed += 1;
                    return Received::Nothing;
                };
                match self.on_ethernet(now, id, datagram, frame) {
                    Received::Frame(range) => {
                        self.counters.rx_partial_checksum += 1;
                        Received::FramePartialChecksum(range, at)
                    }
                    other => other,
                }
            }
            PayloadKind::Relay | PayloadKind::Relayed if relayed => {
                self.counters.rx_relay_nested += 1;
                Received::Nothing
            }
            PayloadKind::Relay => {
                self.forward_relayed(now, id, &datagram[frame]);
                Received::Nothing
            }
            PayloadKind::Relayed => {
                let Ok(envelope) = RelayEnvelope::new_checked(&datagram[frame.clone()]) else {
                    self.counters.rx_malformed += 1;
                    return Received::Nothing;
                };
                let source = PublicKey::from_bytes(envelope.key());
                let inner = frame.start + RELAY_ENVELOPE_LEN..frame.end;
                let offset = inner.start;
                let origin = Origin::Relayed { relay: id, source };
                match self.dispatch(now, origin, &mut datagram[inner]) {
                    Received::Frame(r) => Received::Frame(r.start + offset..r.end + offset),
                    Received::FramePartialChecksum(r, at) => {
                        Received::FramePartialChecksum(r.start + offset..r.end + offset, at)
                    }
                    Received::Nothing => Received::Nothing,
                }
            }
            PayloadKind::Probe => {
                self.answer_probe(now, id, origin, &datagram[frame], datagram_len);
                Received::Nothing
            }
            PayloadKind::ProbeAck => {
                match ProbeAck::parse(&datagram[frame]) {
                    Ok(ack) => self.on_probe_ack(now, id, origin, ack),
                    Err(_) => self.counters.rx_malformed += 1,
                }
                Received::Nothing
            }
            PayloadKind::Unknown(_) => {
                self.counters.rx_unknown_kind += 1;
                Received::Nothing
            }
        }
    }

    pub(super) fn on_ethernet(
        &mut self,
        now: Instant,
        id: PeerId,
        datagram: &[u8],
        frame: Range<usize>,
    ) -> Received {
        if frame.len() > self.max_frame {
            self.counters.rx_oversize += 1;
            return Received::Nothing;
        }
        let bytes = &datagram[frame.clone()];
        let (src, dst) = match EthernetFrame::new_checked(bytes) {
            Ok(eth) => (eth.src(), eth.dst()),
            Err(_) => {
                self.counters.rx_bad_frame += 1;
                return Received::Nothing;
            }
        };
        let source_mac = match self.fdb.lookup(now, src) {
            // Never learned: nothing to move, nothing to spend.
            _ if src.is_multicast() || src.is_zero() => SourceMac::Here,
            None => SourceMac::New,
            Some(Port::Peer(p)) if p == id => SourceMac::Here,
            Some(_) => SourceMac::Elsewhere,
        };
        let peer = &mut self.peers[id as usize];
        let budget = peer
            .learning
            .get_or_insert_with(|| TokenBucket::new(now, LEARN_RATE, LEARN_BURST));
        let verdict = guard::check_remote(
            self.guard,
            dst,
            || source_claim(bytes),
            peer.grant.as_ref(),
            source_mac,
            budget,
            now,
        );
        if let Err(drop) = verdict {
            let c = &mut self.counters;
            *match drop {
                GuardDrop::Reserved => &mut c.rx_l2_reserved,
                GuardDrop::RouterAdvertisement => &mut c.rx_l2_router_advertisement,
                GuardDrop::ForeignSource => &mut c.rx_l2_foreign_source,
                GuardDrop::Malformed => &mut c.rx_l2_malformed,
                GuardDrop::UnprovenMove => &mut c.rx_l2_unproven_move,
                GuardDrop::LearningLimited => &mut c.rx_l2_learning_limited,
            } += 1;
            return Received::Nothing;
        }
        if let Learned::Moved { from } = self.fdb.learn(now, src, Port::Peer(id)) {
            debug!(mac = %src, from = ?from, peer = %self.peers[id as usize].name, "MAC moved");
        }
        match self.fdb.forward_from_peer(now, id, dst) {
            Forward::Local => {
                self.counters.frames_to_tap += 1;
                Received::Frame(frame)
            }
            _ => Received::Nothing,
        }
    }

    /// Forwards a relay envelope from member `from_id` to the member it names, over a direct
    /// session only, with the sender's key in place of the destination's.
    pub(super) fn forward_relayed(&mut self, now: Instant, from_id: PeerId, payload: &[u8]) {
        let Ok(envelope) = RelayEnvelope::new_checked(payload) else {
            self.counters.rx_malformed += 1;
            return;
        };
        let key = PublicKey::from_bytes(envelope.key());
        let Some(&to) = self.by_key.get(&key) else {
            self.counters.relay_no_route += 1;
            return;
        };
        if to == from_id || !self.session_usable(now, to) || !self.can_relay(to) {
            self.counters.relay_no_route += 1;
            return;
        }
        if payload.len() > self.pool.max_frame() {
            self.counters.relay_too_big += 1;
            return;
        }
        let mut packet = self.pool.take();
        let area = packet.frame_area();
        area[..RELAY_ENVELOPE_LEN]
            .copy_from_slice(self.peers[from_id as usize].public_key.as_bytes());
        area[RELAY_ENVELOPE_LEN..payload.len()].copy_from_slice(envelope.inner());
        packet.set_frame_len(payload.len());
        self.counters.relay_forwarded += 1;
        let direct = self.peers[to as usize].endpoint.map(Route::Direct);
        self.seal_and_route(now, to, PayloadKind::Relayed, packet, direct);
    }
}
