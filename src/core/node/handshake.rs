//! Key agreement: answering initiations and responses after the cheap checks (length, mac1, the
//! cookie check under load, rate limit), admission by certificate, cookie replies both ways, and
//! driving our own initiations with retransmission.
//!
//! Invariants: no Diffie-Hellman work before mac1 and the rate limiter, and, for a direct
//! initiation while the node is under load, before a valid mac2 proved that its sender receives at
//! its source address (otherwise it gets a cookie reply and nothing else); no peer entry before the
//! certificate verified and the initiation proved newer than the last one accepted; every session
//! change goes through `peer::Sessions`, whose retired indices leave the index table.

use meshd_crypto::{
    compute_mac1, cookie_key, open_cookie, respond, verify_mac1, CertError, Certificate, Initiator,
    PublicKey,
};
use tracing::{debug, info, warn};

use super::api::{direct_address, Origin};
use crate::core::cookie::mac2_for;
use crate::core::limit::{HandshakeKind, HandshakeSource};
use crate::core::peer::{
    retry_delay, HandshakeProgress, Initiation, Route, Session, RELAY_AFTER_ATTEMPTS,
};
use crate::wire::{
    emit_cipher_extension, emit_features_extension, handshake_init_len, handshake_response_len,
    CookieReply, HandshakeExtensions, HandshakeInit, HandshakeResponse, COOKIE_REPLY_LEN,
    FEATURE_PARTIAL_CHECKSUM,
};

/// Bytes of the initiation timestamp in front of the certificate in a HandshakeInit payload.
const TIMESTAMP_LEN: usize = 8;

/// Why a handshake's certificate was refused.
pub(super) enum Refusal {
    Malformed,
    Invalid(CertError),
    WrongKey,
    Revoked,
    /// A member, but the two have no data-path cipher in common (one is configured for a cipher
    /// the other does not accept).
    NoCommonCipher,
}

use super::*;

impl Node {
    /// Checks the certificate a handshake carried for the key the handshake proved.
    /// The certificate must be followed only by well-formed extensions (cipher negotiation),
    /// which are returned for the caller.
    pub(super) fn admit<'b>(
        &self,
        now: Instant,
        bytes: &'b [u8],
        proven: &PublicKey,
    ) -> Result<(Certificate, HandshakeExtensions<'b>), Refusal> {
        let (certificate, used) = Certificate::decode(bytes).map_err(|_| Refusal::Malformed)?;
        let extensions = bytes
            .get(used..)
            .and_then(|rest| HandshakeExtensions::new_checked(rest).ok())
            .ok_or(Refusal::Malformed)?;
        if certificate.static_key != *proven {
            return Err(Refusal::WrongKey);
        }
        if self.revoked.contains(proven) {
            return Err(Refusal::Revoked);
        }
        certificate
            .verify(&self.network, self.unix_secs(now))
            .map_err(Refusal::Invalid)?;
        Ok((certificate, extensions))
    }

    pub(super) fn count_refusal(
        &mut self,
        now: Instant,
        refusal: Refusal,
        key: &PublicKey,
        origin: Origin,
    ) {
        let reason = match refusal {
            Refusal::Malformed => {
                self.counters.rx_handshake_no_certificate += 1;
                "no well-formed certificate".to_string()
            }
            Refusal::Invalid(e) => {
                self.counters.rx_handshake_bad_certificate += 1;
                e.to_string()
            }
            Refusal::WrongKey => {
                self.counters.rx_handshake_bad_certificate += 1;
                "certificate names another key".to_string()
            }
            Refusal::Revoked => {
                self.counters.rx_handshake_revoked += 1;
                "key is revoked".to_string()
            }
            Refusal::NoCommonCipher => {
                self.counters.rx_handshake_no_common_cipher += 1;
                let accepted: Vec<&str> = self.ciphers.accepted().map(|c| c.as_str()).collect();
                // The sender controls how often this happens, so say it rarely.
                if self.next_admission_warning.is_none_or(|t| now >= t) {
                    self.next_admission_warning = Some(now + ADMISSION_WARNING_INTERVAL);
                    warn!(key = %key, ?origin, accepted = ?accepted, "refused a handshake: the member accepts none of this node's ciphers (check `cipher` in both configs)");
                }
                return;
            }
        };
        // The sender controls how often this happens, so say it rarely.
        if self.next_admission_warning.is_none_or(|t| now >= t) {
            self.next_admission_warning = Some(now + ADMISSION_WARNING_INTERVAL);
            warn!(key = %key, ?origin, %reason, "refused a handshake: not an admitted member of this network");
        }
    }

    /// The initiator has proven it holds the keys of the session we answered: start using it.
    pub(super) fn promote_next(&mut self, now: Instant, id: PeerId) {
        let peer = &mut self.peers[id as usize];
        let Some((retired, was_up)) = peer.sessions.promote_next() else {
            return;
        };
        peer.handshake = HandshakeProgress::default();
        self.retire(retired);
        if !was_up {
            info!(peer = %self.peers[id as usize].name, "peer up");
        }
        self.flush_pending(now, id);
    }

    /// The cheapest authentication of a handshake message, before any other work: mac1, keyed
    /// by our public key; a failure is counted (`rx_bad_mac1`).
    fn mac1_verified(&mut self, covered: &[u8], mac1: &[u8]) -> bool {
        let valid = verify_mac1(&self.our_mac1_key, covered, mac1);
        if !valid {
            self.counters.rx_bad_mac1 += 1;
        }
        valid
    }

    pub(super) fn on_handshake_init(&mut self, now: Instant, origin: Origin, datagram: &[u8]) {
        let init = match HandshakeInit::new_checked(datagram) {
            Ok(m) => m,
            Err(e) => return self.count_wire_error(e),
        };
        if !self.mac1_verified(init.mac1_covered(), init.mac1()) {
            return;
        }
        // A relayed initiation's sender was authenticated by its relay; a direct one may come
        // from a spoofed address, which under load must first prove it receives there.
        if let Origin::Direct(from) = origin {
            let covered = init.mac2_covered();
            if self
                .cookies
                .mac2_valid(now, &mut self.rng, from, covered, init.mac2())
            {
                self.counters.rx_handshake_mac2 += 1;
            } else if self.limiter.must_challenge(now) {
                return self.send_cookie_reply(now, from, init.sender_index(), init.mac1());
            }
        }
        if !self.limiter_allows(now, HandshakeKind::Initiation, origin) {
            self.counters.rx_handshake_ratelimited += 1;
            return;
        }
        self.counters.rx_handshake_dh += 1;
        let responder = match respond(&self.secret, NOISE_PROLOGUE, &mut self.rng, init.noise()) {
            Ok(r) => r,
            Err(_) => {
                self.counters.rx_handshake_failed += 1;
                return;
            }
        };
        let remote = responder.remote_static();
        if let Origin::Relayed { source, .. } = origin {
            if source != remote {
                self.counters.rx_relay_mismatch += 1;
                return;
            }
        }
        let payload = responder.payload();
        let Some((timestamp, certificate)) = payload.split_first_chunk::<TIMESTAMP_LEN>() else {
            self.counters.rx_handshake_no_certificate += 1;
            return;
        };
        let timestamp = u64::from_be_bytes(*timestamp);
        let (certificate, cipher, features) = match self.admit(now, certificate, &remote) {
            Ok((c, extensions)) => match self.ciphers.choose(extensions.ciphers()) {
                Some(cipher) => (c, cipher, extensions.features()),
                None => {
                    let refusal = Refusal::NoCommonCipher;
                    return self.count_refusal(now, refusal, &remote, origin);
                }
            },
            Err(refusal) => return self.count_refusal(now, refusal, &remote, origin),
        };
        // Checked before the peer is added, so a replay never creates or updates an entry.
        let last_accepted = self
            .by_key
            .get(&remote)
            .map_or(0, |&id| self.peers[id as usize].last_init_timestamp);
        if timestamp <= last_accepted {
            self.counters.rx_handshake_replayed += 1;
            return;
        }
        let Some(id) = self.add_member(&certificate, direct_address(origin)) else {
            self.counters.rx_member_table_full += 1;
            return;
        };
        let sender_index = init.sender_index();
        let local_index = self.by_index.allocate(&mut self.rng, id);
        let mut packet = self.pool.take();
        let mut payload = self.certificate_bytes.clone();
        emit_cipher_extension(&mut payload, &[cipher.id()]);
        emit_features_extension(&mut payload, self.features());
        let len = handshake_response_len(payload.len());
        let area = &mut packet.frame_area()[..len];
        let mut msg = HandshakeResponse::new_emit(area).expect("buffer holds a response");
        msg.fill_header();
        msg.set_sender_index(local_index);
        msg.set_receiver_index(sender_index);
        let keys = match responder.write_response(&payload, msg.noise_mut()) {
            Ok((_, secrets)) => secrets.load(cipher),
            Err(_) => {
                self.counters.rx_handshake_failed += 1;
                self.by_index.release_unused(local_index);
                self.pool.give(packet);
                return;
            }
        };
        let peer = &mut self.peers[id as usize];
        let mac1 = compute_mac1(&peer.mac1_key, msg.mac1_covered());
        msg.set_mac1(&mac1);
        msg.set_mac2(&[0; 16]);
        packet.set_frame_len(len);

        peer.last_init_timestamp = timestamp;
        peer.last_handshake = Some(now);
        let mut session = Session::new(local_index, sender_index, keys, now, false);
        session.partial_checksums = features & FEATURE_PARTIAL_CHECKSUM != 0;
        let retired = peer.sessions.install_answered(session);
        self.retire(retired);
        self.counters.handshakes_completed += 1;
        // The initiator chose the way it came (direct, or a relay after direct failed): answer
        // and carry on the same way.
        self.adopt_route(now, id, origin);
        self.transmit(now, id, origin.route_back(), packet);
        let seen_at = self.origin_address(origin);
        self.membership
            .session_established(now, &certificate, seen_at);
        self.pump_membership(now);
        debug!(peer = %self.peers[id as usize].name, ?origin, "answered handshake");
    }

    pub(super) fn on_handshake_response(&mut self, now: Instant, origin: Origin, datagram: &[u8]) {
        let resp = match HandshakeResponse::new_checked(datagram) {
            Ok(m) => m,
            Err(e) => return self.count_wire_error(e),
        };
        if !self.mac1_verified(resp.mac1_covered(), resp.mac1()) {
            return;
        }
        let index = resp.receiver_index();
        let Some(id) = self.by_index.lookup(index) else {
            self.counters.rx_unknown_index += 1;
            return;
        };
        if !self.limiter_allows(now, HandshakeKind::Response, origin) {
            self.counters.rx_handshake_ratelimited += 1;
            return;
        }
        let peer = &mut self.peers[id as usize];
        let Some(initiation) = peer.sessions.initiation_mut(index) else {
            self.counters.rx_unknown_index += 1;
            return;
        };
        // A forged response must not cancel the real one still on its way, so a failure leaves
        // the initiation in place.
        let (payload, keys) = match initiation.initiator.try_read_response(resp.noise()) {
            Ok(done) => done,
            Err(_) => {
                self.counters.rx_handshake_failed += 1;
                return;
            }
        };
        let remote = peer.public_key;
        let admitted = self
            .admit(now, &payload, &remote)
            .and_then(
                |(c, extensions)| match self.ciphers.accept_choice(extensions.ciphers()) {
                    Some(cipher) => Ok((c, cipher, extensions.features())),
                    None => Err(Refusal::NoCommonCipher),
                },
            );
        let (certificate, cipher, features) = match admitted {
            Ok(admitted) => admitted,
            Err(refusal) => {
                // The responder proved its key but is not a member: give up on this attempt.
                let retired = self.peers[id as usize].sessions.abandon_initiation();
                self.retire(retired);
                return self.count_refusal(now, refusal, &remote, origin);
            }
        };
        if let Origin::Relayed { source, .. } = origin {
            if source != remote {
                self.counters.rx_relay_mismatch += 1;
                return;
            }
        }
        self.add_member(&certificate, direct_address(origin));
        let peer = &mut self.peers[id as usize];
        let mut session = Session::new(index, resp.sender_index(), keys.load(cipher), now, true);
        session.partial_checksums = features & FEATURE_PARTIAL_CHECKSUM != 0;
        let (retired, was_up) = peer.sessions.install_initiated(session);
        peer.handshake = HandshakeProgress::default();
        peer.last_handshake = Some(now);
        self.counters.handshakes_completed += 1;
        if !was_up {
            info!(peer = %peer.name, ?origin, "peer up");
        }
        self.retire(retired);
        self.adopt_route(now, id, origin);
        self.flush_pending(now, id);
        let seen_at = self.origin_address(origin);
        self.membership
            .session_established(now, &certificate, seen_at);
        self.pump_membership(now);
    }

    /// The rate limiter's verdict for a handshake message: charged to the sender's address (an
    /// IPv6 one per /64), or for a relayed one to the member that sent it (its relay
    /// authenticated it), so one member's relayed handshakes cannot spend another's budget.
    pub(super) fn limiter_allows(
        &mut self,
        now: Instant,
        kind: HandshakeKind,
        origin: Origin,
    ) -> bool {
        let source = match origin {
            Origin::Direct(from) => HandshakeSource::of_ip(from.ip()),
            Origin::Relayed { source, .. } => HandshakeSource::Member(source),
        };
        self.limiter.allow_handshake(now, kind, source)
    }

    /// Answers an initiation from `from` with a cookie reply instead of any DH work (the node is
    /// under load and the initiation's mac2 did not prove its source address).
    fn send_cookie_reply(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sender_index: u32,
        mac1: &[u8],
    ) {
        let mut packet = self.pool.take();
        let area = &mut packet.frame_area()[..COOKIE_REPLY_LEN];
        self.cookies
            .write_reply(now, &mut self.rng, from, sender_index, mac1, area);
        packet.set_frame_len(COOKIE_REPLY_LEN);
        self.counters.tx_cookie_replies += 1;
        self.queue_transmit(DeferredTransmit {
            destination: from,
            packet,
            seal: None,
        });
    }

    /// A cookie reply to one of our initiations: kept for the peer, so the next initiation to it
    /// (the retransmission, on its usual schedule) carries mac2. It is not answered at once, so a
    /// forged reply cannot make us send faster.
    pub(super) fn on_cookie_reply(&mut self, now: Instant, datagram: &[u8]) {
        let reply = match CookieReply::new_checked(datagram) {
            Ok(m) => m,
            Err(e) => return self.count_wire_error(e),
        };
        let index = reply.receiver_index();
        let Some(id) = self.by_index.lookup(index) else {
            self.counters.rx_unknown_index += 1;
            return;
        };
        let peer = &mut self.peers[id as usize];
        let Some(initiation) = peer.sessions.initiation_mut(index) else {
            self.counters.rx_unknown_index += 1;
            return;
        };
        let key = cookie_key(&peer.public_key);
        match open_cookie(&key, reply.nonce(), reply.sealed_cookie(), &initiation.mac1) {
            Ok(cookie) => {
                peer.cookie = Some((cookie, now));
                self.counters.rx_cookie_replies += 1;
                debug!(peer = %peer.name, "responder is under load: got a cookie");
            }
            Err(_) => self.counters.rx_bad_cookie_reply += 1,
        }
    }

    /// The address a datagram came from, or its relay's (for logs and the membership layer).
    pub(super) fn origin_address(&self, origin: Origin) -> SocketAddr {
        match origin {
            Origin::Direct(from) => from,
            Origin::Relayed { relay, .. } => self.peers[relay as usize]
                .endpoint
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
        }
    }

    /// Starts a handshake round with the peer unless one is already running.
    pub(super) fn start_handshake(&mut self, now: Instant, id: PeerId) {
        let peer = &mut self.peers[id as usize];
        if peer.handshake.in_progress() || self.revoked.contains(&peer.public_key) {
            return;
        }
        if peer.endpoint.is_none() && self.pick_relay(id, None, 0).is_none() {
            return;
        }
        let peer = &mut self.peers[id as usize];
        peer.handshake = HandshakeProgress {
            attempts: 0,
            started: Some(now),
            next_attempt: Some(now),
        };
        self.send_initiation(now, id);
    }

    /// Sends a fresh initiation (new ephemeral key and index) and schedules the retransmission.
    pub(super) fn send_initiation(&mut self, now: Instant, id: PeerId) {
        let Some(route) = self.initiation_route(id) else {
            self.peers[id as usize].handshake = HandshakeProgress::default();
            return;
        };
        let retired = self.peers[id as usize].sessions.abandon_initiation();
        self.retire(retired);
        let remote = self.peers[id as usize].public_key;
        let mut initiator = match Initiator::new(
            &self.secret,
            &remote,
            NOISE_PROLOGUE,
            &mut self.rng,
        ) {
            Ok(i) => i,
            Err(e) => {
                warn!(peer = %self.peers[id as usize].name, error = %e, "cannot start handshake");
                return;
            }
        };
        let timestamp = self.next_timestamp(now);
        let local_index = self.by_index.allocate(&mut self.rng, id);
        let mut packet = self.pool.take();
        let offer = self.ciphers.offer();
        let mut payload =
            Vec::with_capacity(TIMESTAMP_LEN + self.certificate_bytes.len() + 5 + offer.len());
        payload.extend_from_slice(&timestamp.to_be_bytes());
        payload.extend_from_slice(&self.certificate_bytes);
        emit_cipher_extension(&mut payload, &offer);
        emit_features_extension(&mut payload, self.features());
        let len = handshake_init_len(payload.len());
        let area = &mut packet.frame_area()[..len];
        let mut msg = HandshakeInit::new_emit(area).expect("buffer holds an initiation");
        msg.fill_header();
        msg.set_sender_index(local_index);
        if initiator.write_init(&payload, msg.noise_mut()).is_err() {
            self.by_index.release_unused(local_index);
            self.pool.give(packet);
            return;
        }
        let peer = &mut self.peers[id as usize];
        let mac1 = compute_mac1(&peer.mac1_key, msg.mac1_covered());
        msg.set_mac1(&mac1);
        let mac2 = mac2_for(peer.cookie, now, msg.mac2_covered());
        msg.set_mac2(&mac2);
        packet.set_frame_len(len);

        // The old initiation was abandoned above, so nothing is retired here.
        let retired = peer.sessions.start_initiation(Initiation {
            initiator,
            local_index,
            mac1,
        });
        let delay = retry_delay(peer.handshake.attempts);
        let jitter_ms = self.rng.next_u32() as u64 % (delay.as_millis() as u64 / 4 + 1);
        self.retire(retired);
        let peer = &mut self.peers[id as usize];
        peer.handshake.attempts += 1;
        peer.handshake.next_attempt = Some(now + delay + Duration::from_millis(jitter_ms));
        self.counters.handshakes_initiated += 1;
        debug!(peer = %peer.name, attempt = peer.handshake.attempts, ?route, "sent handshake initiation");
        self.transmit(now, id, route, packet);
    }

    /// Where an initiation goes. A rekey takes the route in use. A new session is tried directly
    /// first; after [`RELAY_AFTER_ATTEMPTS`] unanswered attempts, attempts alternate between a
    /// relay (a different one each time round) and direct, so whichever works first wins.
    pub(super) fn initiation_route(&self, id: PeerId) -> Option<Route> {
        let peer = &self.peers[id as usize];
        if peer.sessions.is_up() {
            if let Some(route) = self.route(id) {
                return Some(route);
            }
        }
        let attempts = peer.handshake.attempts;
        let direct = peer.endpoint.map(Route::Direct);
        let relayed = || {
            let turn = attempts.saturating_sub(RELAY_AFTER_ATTEMPTS) / 2;
            self.pick_relay(id, None, turn).map(Route::Relay)
        };
        let relay_turn =
            attempts >= RELAY_AFTER_ATTEMPTS && (attempts - RELAY_AFTER_ATTEMPTS) % 2 == 0;
        if relay_turn || direct.is_none() {
            relayed().or(direct)
        } else {
            direct
        }
    }
}
