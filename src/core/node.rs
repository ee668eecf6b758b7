//! The node state machine: handshakes, sessions, timers and the switch, driven by `(now, bytes)`.
//!
//! Inputs: frames read from the TAP (`handle_tap_frame`), datagrams from the UDP socket
//! (`handle_datagram`) and the passage of time (`handle_timeout`). Outputs: datagrams to send
//! (`poll_transmit`), frames to write to the TAP (returned by `handle_datagram` as a range of the
//! caller's buffer, so received frames are decrypted in place and never copied), and `poll_timeout`.
//!
//! Invariants: every local index in `by_index` belongs to exactly one session or pending initiation
//! of the peer it maps to, and is removed when that session or initiation goes; a frame received
//! from a peer is only ever delivered to the TAP (split horizon), so a full mesh cannot loop; a
//! packet is authenticated before anything about it (endpoint, FDB, counters of good traffic) is
//! believed; no Diffie-Hellman work is done for a handshake message before its mac1 verified and
//! the rate limiter let it through.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use meshd_crypto::{
    compute_mac1, mac1_key, respond, verify_mac1, CertError, Certificate, CoreRng, CryptoError,
    Initiator, NetworkId, NetworkSecret, PublicKey, StaticSecret, REKEY_AFTER_MESSAGES,
};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::buffer::{BufferPool, PacketBuf};
use super::counters::Counters;
use super::invite::{InviteBook, JoinContext, JoinOutcome, PendingInvite};
use super::membership::{
    Membership, MembershipConfig, MembershipError, MembershipEvent, Revocation,
};
use super::peer::{
    retry_delay, HandshakeProgress, Initiation, Peer, Session, Slot, DEAD_AFTER,
    KEEPALIVE_INTERVAL, PENDING_FRAMES_MAX, REJECT_AFTER_TIME,
};
use super::ratelimit::{HandshakeLimiter, LIMITER_SWEEP_INTERVAL};
use super::switch::{Fdb, FdbConfig, Forward, Learned, PeerId, Port};
use crate::wire::{
    classify, emit_data_header, handshake_init_len, handshake_response_len, Data, EthernetFrame,
    HandshakeInit, HandshakeResponse, MessageType, PayloadKind, WireError, DATA_HEADER_LEN,
    HANDSHAKE_INIT_MAX_LEN,
};
use crate::wire::{BootstrapMember, InviteId, JoinRequest};

/// Bound into every handshake so a meshd node never completes one with another protocol.
pub const NOISE_PROLOGUE: &[u8] = b"meshd v1";
/// How often aged FDB entries and idle rate-limiter sources are swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// At most one warning about refused certificates per this interval.
const ADMISSION_WARNING_INTERVAL: Duration = Duration::from_secs(60);
/// Members this node keeps state for; beyond it, new members' handshakes are refused (counted).
pub const MEMBER_TABLE_MAX: usize = 65_536;
/// Up to this many members a node keeps a session with every one of them (keepalives every 10 s
/// cost 256 × 32 B / 10 s ≈ 1 kB/s); beyond it, sessions are made when a frame or gossip needs
/// one and left to expire when idle, so a 10,000-member network does not mean 10,000 sessions
/// per node.
pub const FULL_MESH_MAX: usize = 256;
/// In a network larger than [`FULL_MESH_MAX`], a session idle this long is left to expire.
pub const ON_DEMAND_IDLE: Duration = Duration::from_secs(120);
/// Members besides itself an inviter names to a new host (gossip tells it the rest).
const BOOTSTRAP_PEERS_MAX: usize = 4;
/// Bytes of the initiation timestamp in front of the certificate in a HandshakeInit payload.
const TIMESTAMP_LEN: usize = 8;
/// Idle buffers the pool keeps for reuse.
const POOL_IDLE_MAX: usize = 1024;

/// A bootstrap peer from the config: a member to contact at start. Its name is replaced by the
/// name in its certificate once a handshake proves it.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    pub name: String,
    pub public_key: PublicKey,
    pub endpoint: Option<SocketAddr>,
}

/// Everything a node is built from. The io layer supplies the random seed and the wall-clock time
/// that corresponds to `now`, so the core itself never asks the OS for either.
pub struct NodeConfig {
    pub secret: StaticSecret,
    /// Admins hold the network key: they answer join requests and renewals.
    pub network_secret: Option<NetworkSecret>,
    /// Lifetime of certificates this node issues (admins).
    pub certificate_lifetime: Duration,
    /// Endpoints this node tells others to reach it on.
    pub advertise: Vec<SocketAddr>,
    /// Revocations from the state directory.
    pub revocations: Vec<Revocation>,
    /// The network this node belongs to: peers must hold a certificate it signed.
    pub network: NetworkId,
    /// This node's own certificate, shown to every peer in the handshake.
    pub certificate: Certificate,
    pub peers: Vec<PeerSpec>,
    pub fdb: FdbConfig,
    /// Largest Ethernet frame carried (TAP MTU + Ethernet header + one VLAN tag).
    pub max_frame: usize,
    pub rng_seed: [u8; 32],
    pub now: Instant,
    /// Nanoseconds since the Unix epoch at `now`; used for replay-proof initiation timestamps.
    pub unix_nanos_at_now: u64,
}

/// A datagram to send.
pub struct Transmit {
    pub destination: SocketAddr,
    pub packet: PacketBuf,
}

/// What `handle_datagram` found in a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// An Ethernet frame for the TAP, at this range of the datagram buffer.
    Frame(Range<usize>),
    /// Nothing for the TAP (a handshake, keepalive, or a dropped packet, counted).
    Nothing,
}

/// Something the node learned that the layers around it (membership, io) act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A revocation this node had not known (learned by gossip or applied locally): persist it.
    Revoked(Revocation),
    /// This node's certificate was renewed by an admin: persist it.
    CertificateRenewed(Certificate),
    /// An invitation was redeemed: record it as used on disk, then send `reply` to
    /// `destination` (in that order, so a crash in between cannot let the token work twice).
    JoinAdmitted {
        invite_id: InviteId,
        name: String,
        key: PublicKey,
        reply: Vec<u8>,
        destination: SocketAddr,
    },
}

/// Index keys are random, so hashing them again buys nothing; lookups by attacker-chosen keys
/// cannot degrade the table because only this node inserts.
#[derive(Default)]
struct IndexHasher(u64);

impl Hasher for IndexHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IndexMap = HashMap<u32, PeerId, BuildHasherDefault<IndexHasher>>;

pub struct Node {
    secret: StaticSecret,
    public_key: PublicKey,
    network: NetworkId,
    certificate: Certificate,
    /// Our certificate's encoding, as sent in every handshake.
    certificate_bytes: Vec<u8>,
    revoked: std::collections::HashSet<PublicKey>,
    events: VecDeque<NodeEvent>,
    network_secret: Option<NetworkSecret>,
    certificate_lifetime: Duration,
    advertise: Vec<SocketAddr>,
    invites: InviteBook,
    membership: Membership,
    our_mac1_key: [u8; 32],
    rng: CoreRng,
    peers: Vec<Peer>,
    by_key: HashMap<PublicKey, PeerId>,
    by_index: IndexMap,
    fdb: Fdb,
    limiter: HandshakeLimiter,
    transmits: VecDeque<Transmit>,
    pool: BufferPool,
    /// Largest Ethernet frame delivered to the TAP.
    max_frame: usize,
    counters: Counters,
    clock_base: (Instant, u64),
    last_timestamp: u64,
    last_now: Instant,
    next_sweep: Instant,
    next_admission_warning: Option<Instant>,
}

/// Why a handshake's certificate was refused.
enum Refusal {
    Malformed,
    Invalid(CertError),
    WrongKey,
    Revoked,
}

impl Node {
    pub fn new(config: NodeConfig) -> Node {
        let public_key = config.secret.public_key();
        let mut rng = CoreRng::from_seed(config.rng_seed);
        let mut membership_seed = [0u8; 32];
        rng.fill_bytes(&mut membership_seed);
        let revoked = config
            .revocations
            .iter()
            .filter(|r| r.verify(&config.network))
            .map(|r| r.static_key)
            .collect();
        let membership = Membership::new(MembershipConfig {
            network: config.network,
            certificate: config.certificate.clone(),
            signing_key: config.secret.signing_key(),
            network_secret: config.network_secret.clone(),
            endpoints: config.advertise.clone(),
            revocations: config.revocations,
            now: config.now,
            unix_secs_at_now: config.unix_nanos_at_now / 1_000_000_000,
            rng_seed: membership_seed,
            certificate_lifetime: config.certificate_lifetime,
        });
        let peers: Vec<Peer> = config
            .peers
            .into_iter()
            .map(|p| {
                let mut peer = Peer::new(p.name, p.public_key, p.endpoint);
                peer.bootstrap = true;
                peer
            })
            .collect();
        let by_key = peers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.public_key, i as PeerId))
            .collect();
        Node {
            network: config.network,
            certificate_bytes: config.certificate.encode(),
            certificate: config.certificate,
            revoked,
            events: VecDeque::new(),
            membership,
            network_secret: config.network_secret,
            certificate_lifetime: config.certificate_lifetime,
            advertise: config.advertise,
            invites: InviteBook::new(),
            our_mac1_key: mac1_key(&public_key),
            public_key,
            secret: config.secret,
            rng,
            peers,
            by_key,
            by_index: IndexMap::default(),
            fdb: Fdb::new(config.fdb),
            limiter: HandshakeLimiter::new(config.now),
            transmits: VecDeque::new(),
            // Buffers also carry handshake messages, so they are never smaller than one.
            pool: BufferPool::new(config.max_frame.max(HANDSHAKE_INIT_MAX_LEN), POOL_IDLE_MAX),
            max_frame: config.max_frame,
            counters: Counters::default(),
            clock_base: (config.now, config.unix_nanos_at_now),
            last_timestamp: 0,
            last_now: config.now,
            next_sweep: config.now + SWEEP_INTERVAL,
            next_admission_warning: None,
        }
    }

    /// The network this node belongs to.
    pub fn network(&self) -> NetworkId {
        self.network
    }

    /// This node's certificate.
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// Replaces this node's certificate (after a renewal); later handshakes carry the new one.
    pub fn set_certificate(&mut self, certificate: Certificate) {
        self.certificate_bytes = certificate.encode();
        self.certificate = certificate;
    }

    /// The next event for the layers around the node.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// Unix seconds at `now`, from the wall-clock reading the io layer gave at start.
    pub fn unix_secs(&self, now: Instant) -> u64 {
        self.unix_nanos(now) / 1_000_000_000
    }

    /// Unix nanoseconds at `now`, derived from the `(Instant, unix nanos)` pair given at start.
    fn unix_nanos(&self, now: Instant) -> u64 {
        let (base_instant, base_nanos) = self.clock_base;
        let elapsed = now.saturating_duration_since(base_instant).as_nanos() as u64;
        base_nanos.saturating_add(elapsed)
    }

    /// Refuses `key` from now on: its sessions, pending frames and FDB entries go at once and its
    /// handshakes are refused (`rx_handshake_revoked`).
    pub fn revoke(&mut self, key: PublicKey) {
        if !self.revoked.insert(key) {
            return;
        }
        if let Some(&id) = self.by_key.get(&key) {
            let peer = &mut self.peers[id as usize];
            warn!(peer = %peer.name, key = %key, "member revoked: dropping its sessions");
            let sessions = [peer.current.take(), peer.previous.take(), peer.next.take()];
            let indices: Vec<u32> = sessions
                .iter()
                .flatten()
                .map(|s| s.local_index)
                .chain(peer.initiation.take().map(|i| i.local_index))
                .collect();
            peer.handshake = HandshakeProgress::default();
            peer.endpoint = None;
            for (_, frame) in std::mem::take(&mut peer.pending) {
                self.pool.give(frame);
            }
            for index in indices {
                self.by_index.remove(&index);
            }
            self.fdb.remove_port(Port::Peer(id));
        }
    }

    /// Up to `max` members with a session up right now and the endpoint they are reached at:
    /// what a restarted node can call if its configured bootstrap members are gone.
    pub fn reachable_members(&self, max: usize) -> Vec<PeerSpec> {
        self.peers
            .iter()
            .filter(|p| p.current.is_some() && !self.revoked.contains(&p.public_key))
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
        if peer.endpoint.is_none() || peer.current.is_none() {
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
            peer.certificate = Some(certificate.clone());
        }
        Some(id)
    }

    /// Checks the certificate a handshake carried for the key the handshake proved.
    fn admit(
        &self,
        now: Instant,
        bytes: &[u8],
        proven: &PublicKey,
    ) -> Result<Certificate, Refusal> {
        let (certificate, used) = Certificate::decode(bytes).map_err(|_| Refusal::Malformed)?;
        if used != bytes.len() {
            return Err(Refusal::Malformed);
        }
        if certificate.static_key != *proven {
            return Err(Refusal::WrongKey);
        }
        if self.revoked.contains(proven) {
            return Err(Refusal::Revoked);
        }
        certificate
            .verify(&self.network, self.unix_secs(now))
            .map_err(Refusal::Invalid)?;
        Ok(certificate)
    }

    fn count_refusal(&mut self, now: Instant, refusal: Refusal, key: &PublicKey, from: SocketAddr) {
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
        };
        // The sender controls how often this happens, so say it rarely.
        if self.next_admission_warning.is_none_or(|t| now >= t) {
            self.next_admission_warning = Some(now + ADMISSION_WARNING_INTERVAL);
            warn!(key = %key, %from, %reason, "refused a handshake: not an admitted member of this network");
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.public_key
    }

    /// The largest frame this node carries (a buffer from `take_buffer` holds at least this).
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// A buffer to read a frame into; give it back through `handle_tap_frame` or `recycle`.
    pub fn take_buffer(&mut self) -> PacketBuf {
        self.pool.take()
    }

    /// Returns a buffer (typically a sent `Transmit`'s) for reuse.
    pub fn recycle(&mut self, buf: PacketBuf) {
        self.pool.give(buf);
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next transmit without taking it, so the io layer can batch equal-sized datagrams to one
    /// destination into a single segmentation-offload send.
    pub fn peek_transmit(&self) -> Option<&Transmit> {
        self.transmits.front()
    }

    /// Counters, with the switch's own counts folded in.
    pub fn counters(&self) -> Counters {
        let mut c = self.counters.clone();
        c.fdb_moves = self.fdb.moves();
        c.fdb_evictions = self.fdb.evictions();
        c
    }

    fn observe(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
    }

    /// A strictly increasing wall-clock timestamp, so a restarted node's initiations are newer
    /// than any it sent before (as long as the host clock does not step back past them).
    fn next_timestamp(&mut self, now: Instant) -> u64 {
        let ts = self.unix_nanos(now).max(self.last_timestamp + 1);
        self.last_timestamp = ts;
        ts
    }

    fn alloc_index(&mut self, peer: PeerId) -> u32 {
        loop {
            let index = self.rng.next_u32();
            if let std::collections::hash_map::Entry::Vacant(e) = self.by_index.entry(index) {
                e.insert(peer);
                return index;
            }
        }
    }

    // ---------------------------------------------------------------- frames from the TAP

    /// Switches a frame read from the TAP to the peers it must reach.
    pub fn handle_tap_frame(&mut self, now: Instant, frame: PacketBuf) {
        self.observe(now);
        let (src, dst) = match EthernetFrame::new_checked(frame.bytes()) {
            Ok(eth) => (eth.src(), eth.dst()),
            Err(_) => {
                self.counters.tx_bad_frame += 1;
                self.pool.give(frame);
                return;
            }
        };
        if let Learned::Moved { from } = self.fdb.learn(now, src, Port::Local) {
            debug!(mac = %src, from = ?from, "MAC moved to this host");
        }
        match self.fdb.forward_from_local(now, dst) {
            Forward::Drop | Forward::Local => self.pool.give(frame),
            Forward::Unicast(peer) => {
                self.counters.frames_from_tap += 1;
                self.send_frame(now, peer, frame);
            }
            Forward::Flood => self.flood(now, frame),
        }
    }

    fn flood(&mut self, now: Instant, frame: PacketBuf) {
        // Peers worth sending to: those with a session, or an endpoint to handshake with.
        let eligible = |p: &Peer| p.current.is_some() || p.endpoint.is_some();
        let Some(last) = self.peers.iter().rposition(eligible) else {
            self.pool.give(frame);
            return;
        };
        self.counters.frames_flooded += 1;
        self.counters.frames_from_tap += 1;
        for id in 0..last {
            if eligible(&self.peers[id]) {
                let mut copy = self.pool.take();
                copy.copy_frame_from(frame.bytes());
                self.send_frame(now, id as PeerId, copy);
            }
        }
        // The last recipient gets the original buffer: one copy fewer per flood.
        self.send_frame(now, last as PeerId, frame);
    }

    /// Sends a frame to one peer now if it has a session, else queues it and starts a handshake.
    fn send_frame(&mut self, now: Instant, id: PeerId, frame: PacketBuf) {
        self.send_payload(now, id, PayloadKind::Ethernet, frame);
    }

    /// Sends a payload of `kind` to one peer now if it has a session, else queues it and starts a
    /// handshake.
    fn send_payload(&mut self, now: Instant, id: PeerId, kind: PayloadKind, frame: PacketBuf) {
        let peer = &mut self.peers[id as usize];
        let usable = peer
            .current
            .as_ref()
            .is_some_and(|s| !s.expired(now) && s.send.counter() < REKEY_AFTER_MESSAGES);
        if usable {
            self.seal_and_queue(now, id, kind, frame);
            let s = self.peers[id as usize]
                .current
                .as_ref()
                .expect("checked usable");
            if now >= s.rekey_at() && s.we_initiated {
                self.start_handshake(now, id);
            }
        } else {
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

    /// Encrypts `packet` in place on the peer's current session and queues the datagram.
    fn seal_and_queue(
        &mut self,
        now: Instant,
        id: PeerId,
        kind: PayloadKind,
        mut packet: PacketBuf,
    ) {
        let peer = &mut self.peers[id as usize];
        let (Some(session), Some(destination)) = (peer.current.as_mut(), peer.endpoint) else {
            self.pool.give(packet);
            return;
        };
        let plain_len = packet.len() as u64;
        let sealed = session.send.next_counter().and_then(|counter| {
            let remote = session.remote_index;
            let send = &session.send;
            packet.seal_with(|head, body, tail| {
                emit_data_header(head, kind, remote, counter);
                let tag = send.seal_in_place(counter, head, body)?;
                tail.copy_from_slice(&tag);
                Ok::<(), CryptoError>(())
            })
        });
        match sealed {
            Ok(()) => {
                peer.tx_bytes += plain_len;
                peer.last_sent = Some(now);
                self.transmits.push_back(Transmit {
                    destination,
                    packet,
                });
            }
            Err(_) => {
                self.counters.tx_counter_exhausted += 1;
                self.pool.give(packet);
                self.start_handshake(now, id);
            }
        }
    }

    fn send_keepalive(&mut self, now: Instant, id: PeerId) {
        let mut packet = self.pool.take();
        packet.set_frame_len(0);
        self.counters.keepalives_sent += 1;
        self.seal_and_queue(now, id, PayloadKind::Keepalive, packet);
    }

    fn flush_pending(&mut self, now: Instant, id: PeerId) {
        let pending = std::mem::take(&mut self.peers[id as usize].pending);
        let had_any = !pending.is_empty();
        for (kind, frame) in pending {
            self.seal_and_queue(now, id, kind, frame);
        }
        if !had_any
            && self.peers[id as usize]
                .current
                .as_ref()
                .is_some_and(|s| s.we_initiated)
        {
            // The responder only starts sending on a session once it has received on it.
            self.send_keepalive(now, id);
        }
    }

    // ---------------------------------------------------------------- datagrams from the network

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
        match classify(datagram) {
            Ok(MessageType::Data) => self.on_data(now, from, datagram),
            Ok(MessageType::HandshakeInit) => {
                self.on_handshake_init(now, from, datagram);
                Received::Nothing
            }
            Ok(MessageType::HandshakeResponse) => {
                self.on_handshake_response(now, from, datagram);
                Received::Nothing
            }
            Ok(MessageType::JoinRequest) => {
                self.on_join_request(now, from, datagram);
                Received::Nothing
            }
            // Join answers go to `meshd join`'s own socket, never to a running node.
            Ok(
                MessageType::CookieReply
                | MessageType::JoinResponse
                | MessageType::JoinRefused
                | MessageType::Unknown(_),
            ) => {
                self.counters.rx_unknown_type += 1;
                Received::Nothing
            }
            Err(e) => {
                self.count_wire_error(e);
                Received::Nothing
            }
        }
    }

    /// Answers a new host's join request: cheap checks (length, mac1) and the rate limiter come
    /// before the invite book's DH. An admission is handed to the io layer as an event, which
    /// records the invitation as used on disk before it sends the reply.
    fn on_join_request(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let mac1_ok = JoinRequest::new_checked(datagram)
            .is_ok_and(|r| verify_mac1(&self.our_mac1_key, r.mac1_covered(), r.mac1()));
        if mac1_ok && !self.limiter.allow(now, from.ip()) {
            self.counters.rx_handshake_ratelimited += 1;
            return;
        }
        let now_unix = self.unix_secs(now);
        let bootstrap = self.bootstrap_members();
        let peers = &self.peers;
        let own = (self.certificate.name.as_str(), self.public_key);
        let name_taken = |name: &str, key: &PublicKey| {
            (own.0 == name && own.1 != *key)
                || peers.iter().any(|p| {
                    p.name == name && p.public_key != *key && !self.revoked.contains(&p.public_key)
                })
        };
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
        };
        match self.invites.handle_request(&mut ctx, from, datagram) {
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
                self.transmits.push_back(Transmit {
                    destination: from,
                    packet,
                });
            }
            JoinOutcome::Dropped(_) => {}
        }
    }

    /// Who a new member is told about: this node, then members with a session and an endpoint.
    fn bootstrap_members(&self) -> Vec<BootstrapMember> {
        let mut members = vec![BootstrapMember {
            name: self.certificate.name.clone(),
            key: self.public_key,
            endpoints: self.advertise.clone(),
        }];
        members.extend(
            self.peers
                .iter()
                .filter(|p| p.current.is_some() && !self.revoked.contains(&p.public_key))
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

    /// The invitations the inviter's state directory holds (the io layer re-reads it).
    pub fn set_pending_invites(&mut self, invites: Vec<PendingInvite>) {
        self.invites.set_pending(invites);
    }

    fn count_wire_error(&mut self, e: WireError) {
        match e {
            WireError::BadVersion(_) => self.counters.rx_bad_version += 1,
            _ => self.counters.rx_malformed += 1,
        }
    }

    fn on_data(&mut self, now: Instant, from: SocketAddr, datagram: &mut [u8]) -> Received {
        let (index, counter, kind) = match Data::new_checked(&*datagram) {
            Ok(d) => (d.receiver_index(), d.counter(), d.payload_kind()),
            Err(e) => {
                self.count_wire_error(e);
                return Received::Nothing;
            }
        };
        let Some(&id) = self.by_index.get(&index) else {
            self.counters.rx_unknown_index += 1;
            return Received::Nothing;
        };
        let peer = &mut self.peers[id as usize];
        let Some(slot) = peer.slot_of(index) else {
            self.counters.rx_unknown_index += 1;
            return Received::Nothing;
        };
        let session = peer.session_mut(slot).expect("slot_of found it");
        if session.expired(now) {
            self.counters.rx_expired_session += 1;
            return Received::Nothing;
        }
        if !session.replay.check(counter) {
            self.counters.rx_replayed += 1;
            return Received::Nothing;
        }
        let (header, body) = datagram.split_at_mut(DATA_HEADER_LEN);
        let plain_len = match session.recv.open_in_place(counter, header, body) {
            Ok(plain) => plain.len(),
            Err(_) => {
                self.counters.rx_decrypt_failed += 1;
                return Received::Nothing;
            }
        };
        if !session.replay.accept(counter) {
            self.counters.rx_replayed += 1;
            return Received::Nothing;
        }

        // Authenticated from here on.
        peer.last_received = Some(now);
        peer.rx_bytes += plain_len as u64;
        if peer.endpoint != Some(from) {
            info!(peer = %peer.name, old = ?peer.endpoint, new = %from, "peer endpoint changed");
            peer.endpoint = Some(from);
        }
        if slot == Slot::Next {
            self.promote_next(now, id);
        }
        let frame = DATA_HEADER_LEN..DATA_HEADER_LEN + plain_len;
        match kind {
            PayloadKind::Keepalive => Received::Nothing,
            PayloadKind::Membership => {
                let key = self.peers[id as usize].public_key;
                self.membership.handle_message(now, key, &datagram[frame]);
                self.pump_membership(now);
                Received::Nothing
            }
            PayloadKind::Ethernet => {
                if plain_len > self.max_frame {
                    self.counters.rx_oversize += 1;
                    return Received::Nothing;
                }
                let (src, dst) = match EthernetFrame::new_checked(&datagram[frame.clone()]) {
                    Ok(eth) => (eth.src(), eth.dst()),
                    Err(_) => {
                        self.counters.rx_bad_frame += 1;
                        return Received::Nothing;
                    }
                };
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
            PayloadKind::Unknown(_) => {
                self.counters.rx_unknown_kind += 1;
                Received::Nothing
            }
        }
    }

    /// The initiator has proven it holds the keys of the session we answered: start using it.
    fn promote_next(&mut self, now: Instant, id: PeerId) {
        let peer = &mut self.peers[id as usize];
        let Some(next) = peer.next.take() else { return };
        let was_up = peer.current.is_some();
        if let Some(old) = peer.previous.take() {
            self.by_index.remove(&old.local_index);
        }
        peer.previous = peer.current.replace(next);
        peer.handshake = HandshakeProgress::default();
        if let Some(init) = peer.initiation.take() {
            self.by_index.remove(&init.local_index);
        }
        if !was_up {
            info!(peer = %peer.name, "peer up");
        }
        self.flush_pending(now, id);
    }

    fn on_handshake_init(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let init = match HandshakeInit::new_checked(datagram) {
            Ok(m) => m,
            Err(e) => return self.count_wire_error(e),
        };
        if !verify_mac1(&self.our_mac1_key, init.mac1_covered(), init.mac1()) {
            self.counters.rx_bad_mac1 += 1;
            return;
        }
        if !self.limiter.allow(now, from.ip()) {
            self.counters.rx_handshake_ratelimited += 1;
            return;
        }
        let responder = match respond(&self.secret, NOISE_PROLOGUE, &mut self.rng, init.noise()) {
            Ok(r) => r,
            Err(_) => {
                self.counters.rx_handshake_failed += 1;
                return;
            }
        };
        let remote = responder.remote_static();
        let payload = responder.payload();
        let Some((timestamp, certificate)) = payload.split_first_chunk::<TIMESTAMP_LEN>() else {
            self.counters.rx_handshake_no_certificate += 1;
            return;
        };
        let timestamp = u64::from_be_bytes(*timestamp);
        let certificate = match self.admit(now, certificate, &remote) {
            Ok(c) => c,
            Err(refusal) => return self.count_refusal(now, refusal, &remote, from),
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
        let Some(id) = self.add_member(&certificate, Some(from)) else {
            self.counters.rx_member_table_full += 1;
            return;
        };
        let sender_index = init.sender_index();
        let local_index = self.alloc_index(id);
        let mut packet = self.pool.take();
        let len = handshake_response_len(self.certificate_bytes.len());
        let area = &mut packet.frame_area()[..len];
        let mut msg = HandshakeResponse::new_emit(area).expect("buffer holds a response");
        msg.fill_header();
        msg.set_sender_index(local_index);
        msg.set_receiver_index(sender_index);
        let keys = match responder.write_response(&self.certificate_bytes, msg.noise_mut()) {
            Ok((_, keys)) => keys,
            Err(_) => {
                self.counters.rx_handshake_failed += 1;
                self.by_index.remove(&local_index);
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
        peer.endpoint = Some(from);
        peer.last_handshake = Some(now);
        let session = Session::new(local_index, sender_index, keys, now, false);
        if let Some(old) = peer.next.replace(session) {
            self.by_index.remove(&old.local_index);
        }
        self.counters.handshakes_completed += 1;
        self.membership.session_established(now, &certificate, from);
        self.pump_membership(now);
        debug!(peer = %self.peers[id as usize].name, %from, "answered handshake");
        self.transmits.push_back(Transmit {
            destination: from,
            packet,
        });
    }

    fn on_handshake_response(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let resp = match HandshakeResponse::new_checked(datagram) {
            Ok(m) => m,
            Err(e) => return self.count_wire_error(e),
        };
        if !verify_mac1(&self.our_mac1_key, resp.mac1_covered(), resp.mac1()) {
            self.counters.rx_bad_mac1 += 1;
            return;
        }
        let index = resp.receiver_index();
        let Some(&id) = self.by_index.get(&index) else {
            self.counters.rx_unknown_index += 1;
            return;
        };
        if !self.limiter.allow(now, from.ip()) {
            self.counters.rx_handshake_ratelimited += 1;
            return;
        }
        let peer = &mut self.peers[id as usize];
        let Some(initiation) = peer.initiation.as_mut().filter(|i| i.local_index == index) else {
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
        let certificate = match self.admit(now, &payload, &remote) {
            Ok(c) => c,
            Err(refusal) => {
                // The responder proved its key but is not a member: give up on this attempt.
                if let Some(init) = self.peers[id as usize].initiation.take() {
                    self.by_index.remove(&init.local_index);
                }
                return self.count_refusal(now, refusal, &remote, from);
            }
        };
        self.add_member(&certificate, Some(from));
        let peer = &mut self.peers[id as usize];
        peer.initiation = None;
        let session = Session::new(index, resp.sender_index(), keys, now, true);
        if let Some(old) = peer.previous.take() {
            self.by_index.remove(&old.local_index);
        }
        let was_up = peer.current.is_some();
        peer.previous = peer.current.replace(session);
        peer.handshake = HandshakeProgress::default();
        peer.last_handshake = Some(now);
        peer.endpoint = Some(from);
        self.counters.handshakes_completed += 1;
        if !was_up {
            info!(peer = %peer.name, endpoint = %from, "peer up");
        }
        self.flush_pending(now, id);
        self.membership.session_established(now, &certificate, from);
        self.pump_membership(now);
    }

    // ---------------------------------------------------------------- handshakes we drive

    /// Starts a handshake round with the peer unless one is already running.
    fn start_handshake(&mut self, now: Instant, id: PeerId) {
        let peer = &mut self.peers[id as usize];
        if peer.handshake.in_progress()
            || peer.endpoint.is_none()
            || self.revoked.contains(&peer.public_key)
        {
            return;
        }
        peer.handshake = HandshakeProgress {
            attempts: 0,
            started: Some(now),
            next_attempt: Some(now),
        };
        self.send_initiation(now, id);
    }

    /// Sends a fresh initiation (new ephemeral key and index) and schedules the retransmission.
    fn send_initiation(&mut self, now: Instant, id: PeerId) {
        let Some(destination) = self.peers[id as usize].endpoint else {
            self.peers[id as usize].handshake = HandshakeProgress::default();
            return;
        };
        if let Some(old) = self.peers[id as usize].initiation.take() {
            self.by_index.remove(&old.local_index);
        }
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
        let local_index = self.alloc_index(id);
        let mut packet = self.pool.take();
        let mut payload = Vec::with_capacity(TIMESTAMP_LEN + self.certificate_bytes.len());
        payload.extend_from_slice(&timestamp.to_be_bytes());
        payload.extend_from_slice(&self.certificate_bytes);
        let len = handshake_init_len(payload.len());
        let area = &mut packet.frame_area()[..len];
        let mut msg = HandshakeInit::new_emit(area).expect("buffer holds an initiation");
        msg.fill_header();
        msg.set_sender_index(local_index);
        if initiator.write_init(&payload, msg.noise_mut()).is_err() {
            self.by_index.remove(&local_index);
            self.pool.give(packet);
            return;
        }
        let peer = &mut self.peers[id as usize];
        let mac1 = compute_mac1(&peer.mac1_key, msg.mac1_covered());
        msg.set_mac1(&mac1);
        msg.set_mac2(&[0; 16]);
        packet.set_frame_len(len);

        peer.initiation = Some(Initiation {
            initiator,
            local_index,
        });
        let delay = retry_delay(peer.handshake.attempts);
        let jitter_ms = self.rng.next_u32() as u64 % (delay.as_millis() as u64 / 4 + 1);
        let peer = &mut self.peers[id as usize];
        peer.handshake.attempts += 1;
        peer.handshake.next_attempt = Some(now + delay + Duration::from_millis(jitter_ms));
        self.counters.handshakes_initiated += 1;
        debug!(peer = %peer.name, attempt = peer.handshake.attempts, %destination, "sent handshake initiation");
        self.transmits.push_back(Transmit {
            destination,
            packet,
        });
    }

    // ---------------------------------------------------------------- timers

    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
        for id in 0..self.peers.len() as PeerId {
            self.peer_timers(now, id);
        }
        if now >= self.next_sweep {
            self.fdb.expire(now);
            self.limiter.sweep(now);
            self.next_sweep = now + SWEEP_INTERVAL.min(LIMITER_SWEEP_INTERVAL);
        }
        self.membership.handle_timeout(now);
        self.pump_membership(now);
    }

    /// Sends what the membership layer queued (inside the tunnels, handshaking where needed)
    /// and acts on what it learned: members to reach, revocations, our renewed certificate.
    fn pump_membership(&mut self, now: Instant) {
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

    fn on_membership_event(&mut self, now: Instant, event: MembershipEvent) {
        match event {
            MembershipEvent::MemberUp {
                key,
                name,
                endpoints,
                certificate,
            } => {
                debug!(member = %name, %key, ?endpoints, "member up");
                if let Some(id) = self.add_member(&certificate, endpoints.first().copied()) {
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
                    if peer.current.is_none() {
                        // Stop calling a member gossip has given up on; it announces itself
                        // again when it returns.
                        peer.endpoint = None;
                        peer.handshake = HandshakeProgress::default();
                        if let Some(init) = peer.initiation.take() {
                            self.by_index.remove(&init.local_index);
                        }
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
    fn full_mesh(&self) -> bool {
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

    fn peer_timers(&mut self, now: Instant, id: PeerId) {
        let peer = &mut self.peers[id as usize];
        for slot in [&mut peer.current, &mut peer.previous, &mut peer.next] {
            if slot.as_ref().is_some_and(|s| s.expired(now)) {
                let s = slot.take().expect("checked");
                self.by_index.remove(&s.local_index);
            }
        }
        let wanted = self.wants_session(id, now);
        let peer = &mut self.peers[id as usize];
        let dead = wanted
            && peer.current.is_some()
            && peer
                .last_heard()
                .is_some_and(|t| now.saturating_duration_since(t) >= DEAD_AFTER);
        if dead {
            warn!(peer = %peer.name, "peer down: nothing received for {}s", DEAD_AFTER.as_secs());
            for s in [peer.current.take(), peer.previous.take(), peer.next.take()]
                .into_iter()
                .flatten()
            {
                self.by_index.remove(&s.local_index);
            }
            self.fdb.remove_port(Port::Peer(id));
        }
        let peer = &self.peers[id as usize];
        if let Some(s) = peer.current.as_ref().filter(|_| wanted) {
            let idle_since = peer.last_sent.unwrap_or(s.created).max(s.created);
            if now.saturating_duration_since(idle_since) >= KEEPALIVE_INTERVAL {
                self.send_keepalive(now, id);
            }
        }
        let peer = &self.peers[id as usize];
        let needs_session = wanted
            && match &peer.current {
                None => peer.endpoint.is_some(),
                Some(s) => now >= s.rekey_at(),
            };
        if peer.handshake.in_progress() {
            if peer.handshake.next_attempt.is_some_and(|t| now >= t) {
                self.send_initiation(now, id);
            }
        } else if needs_session {
            self.start_handshake(now, id);
        }
        let peer = &mut self.peers[id as usize];
        if peer.current.is_none() && !peer.pending.is_empty() && peer.state(now) == "down" {
            let n = peer.pending.len() as u64;
            self.counters.tx_no_session += n;
            for (_, frame) in std::mem::take(&mut peer.pending) {
                self.pool.give(frame);
            }
        }
    }

    /// Whether the node keeps a session with this peer alive (keepalives, rekeys, redials): always
    /// in a full mesh; in a large network only for bootstrap members and peers that carried
    /// traffic recently, so idle sessions expire instead of piling up.
    fn wants_session(&self, id: PeerId, now: Instant) -> bool {
        let peer = &self.peers[id as usize];
        if self.full_mesh() || peer.bootstrap || !peer.pending.is_empty() {
            return true;
        }
        [peer.last_sent, peer.last_received]
            .into_iter()
            .flatten()
            .any(|t| now.saturating_duration_since(t) < ON_DEMAND_IDLE)
    }

    /// When `handle_timeout` next has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.next_sweep;
        if let Some(t) = self.membership.poll_timeout() {
            next = next.min(t);
        }
        for p in &self.peers {
            let mut consider = |t: Instant| next = next.min(t);
            if let Some(t) = p.handshake.next_attempt {
                consider(t);
            }
            for s in [&p.current, &p.previous, &p.next].into_iter().flatten() {
                consider(s.created + REJECT_AFTER_TIME);
            }
            if let Some(s) = &p.current {
                consider(p.last_sent.unwrap_or(s.created).max(s.created) + KEEPALIVE_INTERVAL);
                if let Some(t) = p.last_heard() {
                    consider(t + DEAD_AFTER);
                }
                if !p.handshake.in_progress() {
                    consider(s.rekey_at());
                }
            } else if p.endpoint.is_some()
                && !p.handshake.in_progress()
                && (self.full_mesh() || p.bootstrap || !p.pending.is_empty())
            {
                consider(self.last_now);
            }
        }
        Some(next)
    }

    // ---------------------------------------------------------------- status

    /// Verifies the index invariant of the module docs: every registered local index belongs to a
    /// session or pending initiation of the peer it maps to, and every such index is registered.
    /// Cheap enough for tests to call after every event; not used on the data path.
    #[doc(hidden)]
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut owned = 0;
        for (id, peer) in self.peers.iter().enumerate() {
            for index in peer.local_indices() {
                owned += 1;
                match self.by_index.get(&index) {
                    Some(&p) if p as usize == id => {}
                    other => {
                        return Err(format!(
                            "peer {} owns index {index} but the map says {other:?}",
                            peer.name
                        ))
                    }
                }
            }
        }
        if owned != self.by_index.len() {
            return Err(format!(
                "{} indices registered but {owned} owned: a session was dropped without its index",
                self.by_index.len()
            ));
        }
        Ok(())
    }

    pub fn status(&self, now: Instant) -> CoreStatus {
        let peers = self
            .peers
            .iter()
            .map(|p| PeerStatus {
                name: p.name.clone(),
                public_key: p.public_key.to_string(),
                endpoint: p.endpoint.map(|e| e.to_string()),
                state: p.state(now).to_string(),
                via: None,
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
                last_handshake_secs_ago: p
                    .last_handshake
                    .map(|t| now.saturating_duration_since(t).as_secs()),
            })
            .collect();
        let mut fdb: Vec<FdbEntryStatus> = self
            .fdb
            .iter(now)
            .map(|(mac, port, age)| FdbEntryStatus {
                mac: mac.to_string(),
                port: match port {
                    Port::Local => "local".to_string(),
                    Port::Peer(id) => self.peers[id as usize].name.clone(),
                },
                age_secs: age.as_secs(),
            })
            .collect();
        fdb.sort_by(|a, b| a.mac.cmp(&b.mac));
        let members = self
            .membership
            .members(now)
            .into_iter()
            .filter(|m| m.key != self.public_key)
            .map(|m| {
                let peer = self.by_key.get(&m.key).map(|&id| &self.peers[id as usize]);
                MemberStatus {
                    direct: peer.is_some_and(|p| p.current.is_some()),
                    admin: peer
                        .and_then(|p| p.certificate.as_ref())
                        .is_some_and(|c| c.admin),
                    name: m.name,
                    public_key: m.key.to_string(),
                    certificate_expires: m.cert_expires_at,
                    state: m.state.as_str().to_string(),
                    endpoints: m.endpoints.iter().map(|e| e.to_string()).collect(),
                    via: None,
                }
            })
            .collect();
        CoreStatus {
            network: self.network.to_string(),
            certificate_expires: self.certificate.expires_at,
            members,
            public_key: self.public_key.to_string(),
            peers,
            fdb,
            counters: self
                .counters()
                .iter()
                .chain(self.invites.counters().iter())
                .chain(self.membership.counters().iter())
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    pub public_key: String,
    pub endpoint: Option<String>,
    pub state: String,
    /// The relay this peer is reached through; always direct until relaying exists.
    pub via: Option<String>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub last_handshake_secs_ago: Option<u64>,
}

/// One member of the network as `meshd status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    pub name: String,
    pub public_key: String,
    /// Unix seconds.
    pub certificate_expires: u64,
    /// "alive", "suspect", "down" or "revoked", as gossip sees it.
    pub state: String,
    pub endpoints: Vec<String>,
    /// Whether this node has a session with the member right now.
    pub direct: bool,
    /// The relay the member is reached through; always direct until relaying exists.
    pub via: Option<String>,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FdbEntryStatus {
    pub mac: String,
    pub port: String,
    pub age_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CoreStatus {
    pub network: String,
    /// This node's own certificate expiry (unix seconds).
    pub certificate_expires: u64,
    pub members: Vec<MemberStatus>,
    pub public_key: String,
    pub peers: Vec<PeerStatus>,
    pub fdb: Vec<FdbEntryStatus>,
    pub counters: BTreeMap<String, u64>,
}
