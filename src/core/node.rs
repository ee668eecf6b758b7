//! The node state machine: handshakes, sessions, timers and the switch, driven by `(now, bytes)`.
//!
//! Inputs: frames read from the TAP (`handle_tap_frame`), datagrams from the UDP socket
//! (`handle_datagram`) and the passage of time (`handle_timeout`). Outputs: datagrams to send
//! (`poll_transmit`), frames to write to the TAP (returned by `handle_datagram` as a range of the
//! caller's buffer, so received frames are decrypted in place and never copied), and `poll_timeout`.
//! For several workers sharing one node, the same inputs come split so the AEAD runs outside the
//! node: `begin_datagram` / `OpenJob::open` / `finish_datagram`, and datagrams queued per lane
//! (`set_lane`, `poll_deferred_transmit`) and sealed by the worker that drains them.
//!
//! Invariants: every local index in `by_index` belongs to exactly one session or pending initiation
//! of the peer it maps to, and is removed when that session or initiation goes; a frame received
//! from a peer is only ever delivered to the TAP (split horizon), so a full mesh cannot loop; a
//! packet is authenticated before anything about it (endpoint, FDB, counters of good traffic) is
//! believed; no Diffie-Hellman work is done for a handshake message before its mac1 verified and
//! the rate limiter let it through; what an input produces is queued on the lane set when it
//! came in, and only that lane's worker sends it, so one flow never leaves through two sockets at
//! once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use meshd_crypto::{
    compute_mac1, mac1_key, respond, verify_mac1, CertError, Certificate, CoreRng, CryptoError,
    Initiator, NetworkId, NetworkSecret, Opener, PublicKey, Sealer, StaticSecret,
    REKEY_AFTER_MESSAGES,
};
use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::buffer::{BufferPool, PacketBuf};
use super::counters::Counters;
use super::frames::{too_big_reply, Ipv4Fragmenter, NoReply};
use super::invite::{InviteBook, JoinContext, JoinOutcome, PendingInvite};
use super::membership::{
    Membership, MembershipConfig, MembershipError, MembershipEvent, Revocation,
};
use super::peer::{
    retry_delay, HandshakeProgress, Initiation, Peer, ProbePurpose, Route, SentProbe, Session,
    Slot, BLACK_HOLE_AFTER, CANDIDATES_MAX, DEAD_AFTER, DIRECT_RETRY_INTERVAL, KEEPALIVE_INTERVAL,
    PATH_LOST_AFTER, PENDING_FRAMES_MAX, PROBE_INTERVAL, PROBE_TIMEOUT, REJECT_AFTER_TIME,
    RELAY_AFTER_ATTEMPTS,
};
use super::pmtu::PmtuSearch;
use super::ratelimit::{HandshakeLimiter, LIMITER_SWEEP_INTERVAL};
use super::switch::{Fdb, FdbConfig, Forward, Learned, PeerId, Port};
use crate::wire::{
    classify, emit_data_header, handshake_init_len, handshake_response_len, Data, EthernetFrame,
    HandshakeInit, HandshakeResponse, MessageType, PayloadKind, WireError, DATA_HEADER_LEN,
    HANDSHAKE_INIT_MAX_LEN,
};
use crate::wire::{BootstrapMember, InviteId, JoinRequest, MacAddr};
use crate::wire::{
    Probe, ProbeAck, RelayEnvelope, DATA_OVERHEAD, ETHERNET_HEADER_LEN, PROBE_ACK_MAX_LEN,
    PROBE_MIN_LEN, RELAY_ENVELOPE_LEN, RELAY_OVERHEAD,
};

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
/// Datagram size every path is assumed to carry: IPv6's minimum link MTU (1280) less an IPv6 and
/// a UDP header. The path MTU search never reports less.
pub const BASE_DATAGRAM: usize = 1280 - 48;
/// Underlay link MTU assumed when the io layer cannot tell.
pub const DEFAULT_UNDERLAY_MTU: usize = 1500;
/// ICMP too-big answers the node writes to the bridge per second, at most (a sender that ignores
/// them must not turn the node into a packet generator).
const TOO_BIG_ANSWERS_PER_SECOND: u32 = 100;
/// Frames the node itself generated for the TAP that may wait for the io layer.
const TAP_OUT_MAX: usize = 256;
/// Addresses other members saw this node's probes come from that are remembered (and published).
const OBSERVED_MAX: usize = 2;
/// The address a datagram came from when it came directly.
fn direct_address(origin: Origin) -> Option<SocketAddr> {
    match origin {
        Origin::Direct(from) => Some(from),
        Origin::Relayed { .. } => None,
    }
}

/// Size of a liveness probe datagram: the smallest probe.
const LIVENESS_PROBE_LEN: usize = DATA_OVERHEAD + PROBE_MIN_LEN;

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
    /// MTU of the underlay link datagrams leave on (the largest of the host's links when it is
    /// not known which); the ceiling of every path MTU search.
    pub underlay_mtu: usize,
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

/// A datagram to send whose payload may still have to be encrypted: its header is written and its
/// counter reserved by the node, and [`DeferredTransmit::seal`] finishes it. This is how workers
/// that share one node seal outside the node's lock, in parallel. The packet is private until
/// sealed, so plaintext cannot leave by mistake.
pub struct DeferredTransmit {
    destination: SocketAddr,
    packet: PacketBuf,
    seal: Option<(Sealer, u64)>,
}

impl DeferredTransmit {
    /// Encrypts the payload in place (when it still needs it) and hands the datagram out. `lane`
    /// goes into the data header's lane byte (the sending worker, a steering hint for receivers
    /// with several workers) before sealing, since the header is authenticated. On failure the
    /// buffer comes back for recycling.
    pub fn seal(self, lane: u8) -> Result<Transmit, PacketBuf> {
        let DeferredTransmit {
            destination,
            mut packet,
            seal,
        } = self;
        if let Some((sealer, counter)) = seal {
            let (head, body, tail) = packet.sealed_parts_mut();
            crate::wire::set_lane(head, lane);
            match sealer.seal_in_place(counter, head, body) {
                Ok(tag) => tail.copy_from_slice(&tag),
                Err(_) => return Err(packet),
            }
        }
        Ok(Transmit {
            destination,
            packet,
        })
    }
}

/// What the first, cheap half of receiving a datagram decided (see [`Node::begin_datagram`]).
pub enum Inbound {
    /// Fully handled (anything but data, or data refused before decryption).
    Done(Received),
    /// A data message for a known session: open it with [`OpenJob::open`], then hand it to
    /// [`Node::finish_datagram`].
    Open(OpenJob),
}

/// A data message that passed every check short of decryption, with the key to open it.
pub struct OpenJob {
    from: SocketAddr,
    opener: Opener,
    index: u32,
    counter: u64,
    kind: PayloadKind,
    /// The plaintext's length once opened; `None` until then, or when authentication failed.
    plain_len: Option<usize>,
}

impl OpenJob {
    /// Authenticates and decrypts `datagram` (the same bytes given to `begin_datagram`) in place.
    /// Needs no access to the node, so it runs outside any lock on it.
    pub fn open(&mut self, datagram: &mut [u8]) {
        let (header, body) = datagram.split_at_mut(DATA_HEADER_LEN);
        self.plain_len = self
            .opener
            .open_in_place(self.counter, header, body)
            .ok()
            .map(|plain| plain.len());
    }
}

/// Where a datagram came from: straight from an address, or out of a relay envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Direct(SocketAddr),
    Relayed { relay: PeerId, source: PublicKey },
}

impl Origin {
    /// The route an answer to this datagram takes: the way it came.
    fn route_back(self) -> Route {
        match self {
            Origin::Direct(from) => Route::Direct(from),
            Origin::Relayed { relay, .. } => Route::Relay(relay),
        }
    }
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
    /// Datagrams to send, one queue per lane (data-path worker). What a worker's input produces
    /// is queued on its lane and leaves through its socket, so one flow's datagrams are never
    /// split between two workers sending at once, which would reorder them on the wire.
    transmits: Vec<VecDeque<DeferredTransmit>>,
    /// The lane whose queue receives the datagrams produced from now on (see `set_lane`).
    lane: usize,
    /// Whether datagrams on direct routes leave the node unsealed, for the caller to seal.
    defer_sealing: bool,
    pool: BufferPool,
    /// Largest Ethernet frame delivered to the TAP.
    max_frame: usize,
    underlay_mtu: usize,
    /// Frames the node generated for the TAP (ICMP too-big answers), for the io layer to write.
    tap_out: VecDeque<PacketBuf>,
    /// Too-big answers left in the current one-second window, and when the window ends.
    too_big_budget: (u32, Instant),
    /// Addresses members saw our probes come from (newest last), published with `advertise`.
    observed: Vec<SocketAddr>,
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
            transmits: vec![VecDeque::new()],
            lane: 0,
            defer_sealing: false,
            // Buffers also carry handshake messages, and either inside a relay envelope.
            pool: BufferPool::new(
                config.max_frame.max(HANDSHAKE_INIT_MAX_LEN) + RELAY_OVERHEAD,
                POOL_IDLE_MAX,
            ),
            max_frame: config.max_frame,
            underlay_mtu: config.underlay_mtu,
            tap_out: VecDeque::new(),
            too_big_budget: (TOO_BIG_ANSWERS_PER_SECOND, config.now),
            observed: Vec::new(),
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
            peer.path.reset_route();
            peer.path.relay = None;
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

    fn count_refusal(&mut self, now: Instant, refusal: Refusal, key: &PublicKey, origin: Origin) {
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
            warn!(key = %key, ?origin, %reason, "refused a handshake: not an admitted member of this network");
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

    /// The frame capacity of the node's buffers, for callers that keep pools of their own.
    pub fn buffer_frame_len(&self) -> usize {
        self.pool.max_frame()
    }

    /// Idle buffers in the node's pool.
    pub fn idle_buffers(&self) -> usize {
        self.pool.idle()
    }

    /// The next datagram to send, sealed, from any lane.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        while let Some(deferred) = self.transmits.iter_mut().find_map(VecDeque::pop_front) {
            match deferred.seal(0) {
                Ok(transmit) => return Some(transmit),
                Err(packet) => {
                    self.counters.tx_seal_failed += 1;
                    self.pool.give(packet);
                }
            }
        }
        None
    }

    /// The next datagram queued on `lane`, possibly still to be sealed by the caller (only when
    /// [`Node::set_deferred_sealing`] is on). Sealing is what costs; this lets it run outside the
    /// lock of a node shared by several workers.
    pub fn poll_deferred_transmit(&mut self, lane: u8) -> Option<DeferredTransmit> {
        let lane = usize::from(lane) % self.transmits.len();
        self.transmits[lane].pop_front()
    }

    /// Gives the node `lanes` transmit queues, one per data-path worker (at least one). Called
    /// before the node runs; datagrams already queued stay on lane 0.
    pub fn set_lanes(&mut self, lanes: u8) {
        let lanes = usize::from(lanes.max(1));
        let dropped: Vec<_> = self
            .transmits
            .drain(lanes.min(self.transmits.len())..)
            .collect();
        self.transmits.resize_with(lanes, VecDeque::new);
        self.transmits[0].extend(dropped.into_iter().flatten());
        self.lane %= lanes;
    }

    /// Makes `lane` the queue for the datagrams produced by the inputs that follow: a worker
    /// sets its own lane each time it takes the node, and later drains that lane alone.
    pub fn set_lane(&mut self, lane: u8) {
        self.lane = usize::from(lane) % self.transmits.len();
    }

    fn queue_transmit(&mut self, transmit: DeferredTransmit) {
        self.transmits[self.lane].push_back(transmit);
    }

    /// Whether data datagrams on direct routes are queued unsealed (see
    /// [`Node::poll_deferred_transmit`]). Off by default: `poll_transmit` seals either way.
    pub fn set_deferred_sealing(&mut self, on: bool) {
        self.defer_sealing = on;
    }

    /// Counts a datagram whose deferred seal failed (the caller recycles its buffer).
    pub fn count_seal_failure(&mut self) {
        self.counters.tx_seal_failed += 1;
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
        // Peers worth sending to: those with a session, or a way to handshake with them.
        let eligible = |p: &Peer| p.current.is_some() || p.endpoint.is_some();
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
    fn send_frame(&mut self, now: Instant, id: PeerId, frame: PacketBuf) {
        let limit = self.frame_limit(id);
        if frame.len() > limit {
            return self.frame_too_big(now, frame, limit, Some(id));
        }
        self.send_payload(now, id, PayloadKind::Ethernet, frame);
    }

    /// The largest Ethernet frame that reaches peer `id` whole on the route in use: what its path
    /// MTU search found (or assumes), less the data message's overhead. Without a session the
    /// route is not known yet, so frames are queued at any size the TAP delivers.
    fn frame_limit(&self, id: PeerId) -> usize {
        let peer = &self.peers[id as usize];
        match (&peer.current, &peer.path.pmtu) {
            (Some(_), Some((_, search))) => search.current() - DATA_OVERHEAD,
            (Some(_), None) => match self.route(id) {
                Some(route) => self.pmtu_bounds(route).1 - DATA_OVERHEAD,
                None => self.max_frame,
            },
            (None, _) => self.max_frame,
        }
    }

    /// The largest frame that reaches whatever `dst` is behind, for the io layer, which cuts TCP
    /// super-frames read from the TAP into segments that fit (so TCP needs no ICMP round trip).
    pub fn frame_limit_for(&self, now: Instant, dst: MacAddr) -> usize {
        match self.fdb.lookup(now, dst) {
            Some(Port::Peer(id)) if !dst.is_multicast() => self.frame_limit(id),
            Some(Port::Local) => self.max_frame,
            _ => (0..self.peers.len() as PeerId)
                .filter(|&id| self.peers[id as usize].current.is_some())
                .map(|id| self.frame_limit(id))
                .min()
                .unwrap_or(self.max_frame),
        }
    }

    /// A frame does not fit the path (`limit` bytes of frame): answer an IP sender with ICMP
    /// "fragmentation needed" / "packet too big" so it sends smaller, fragment an IPv4 packet that
    /// allows it (towards `peer`), and count everything else as dropped.
    fn frame_too_big(
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
                if now >= self.too_big_budget.1 {
                    self.too_big_budget =
                        (TOO_BIG_ANSWERS_PER_SECOND, now + Duration::from_secs(1));
                }
                if self.too_big_budget.0 == 0 || self.tap_out.len() >= TAP_OUT_MAX {
                    self.counters.tx_too_big_ratelimited += 1;
                    self.pool.give(answer);
                } else {
                    self.too_big_budget.0 -= 1;
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
    fn fragment(&mut self, now: Instant, id: PeerId, frame: &PacketBuf, limit: usize) {
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
    fn send_payload(&mut self, now: Instant, id: PeerId, kind: PayloadKind, frame: PacketBuf) {
        if self.session_usable(now, id) {
            self.seal_and_queue(now, id, kind, frame);
            let s = self.peers[id as usize]
                .current
                .as_ref()
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
    fn session_usable(&self, now: Instant, id: PeerId) -> bool {
        self.peers[id as usize]
            .current
            .as_ref()
            .is_some_and(|s| !s.expired(now) && s.send.counter() < REKEY_AFTER_MESSAGES)
    }

    /// The route datagrams to peer `id` take now: through its relay while it has one that still
    /// reaches it directly, else straight to its endpoint.
    fn route(&self, id: PeerId) -> Option<Route> {
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
    fn can_relay(&self, relay: PeerId) -> bool {
        let r = &self.peers[relay as usize];
        r.current.is_some()
            && r.path.relay.is_none()
            && r.endpoint.is_some()
            && r.path.misses == 0
            && !self.revoked.contains(&r.public_key)
    }

    /// A member to relay through to `target`, other than `avoid`; `turn` rotates through the
    /// candidates so a relay that does not deliver is followed by the next one.
    fn pick_relay(&self, target: PeerId, avoid: Option<PeerId>, turn: u32) -> Option<PeerId> {
        let candidates = (0..self.peers.len() as PeerId)
            .filter(|&r| r != target && Some(r) != avoid && self.can_relay(r));
        let count = candidates.clone().count();
        if count == 0 {
            return None;
        }
        candidates.clone().nth(turn as usize % count)
    }

    /// Encrypts `packet` in place on the peer's current session and queues the datagram on the
    /// peer's route.
    fn seal_and_queue(&mut self, now: Instant, id: PeerId, kind: PayloadKind, packet: PacketBuf) {
        let route = self.route(id);
        self.seal_and_route(now, id, kind, packet, route);
    }

    /// Encrypts `packet` in place on the peer's current session and queues it on `route`.
    fn seal_and_route(
        &mut self,
        now: Instant,
        id: PeerId,
        kind: PayloadKind,
        mut packet: PacketBuf,
        route: Option<Route>,
    ) {
        let peer = &mut self.peers[id as usize];
        let (Some(session), Some(route)) = (peer.current.as_mut(), route) else {
            self.counters.tx_no_route += 1;
            self.pool.give(packet);
            return;
        };
        let plain_len = packet.len() as u64;
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
                peer.tx_bytes += plain_len;
                peer.last_sent = Some(now);
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
                peer.tx_bytes += plain_len;
                peer.last_sent = Some(now);
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
    fn transmit(&mut self, now: Instant, id: PeerId, route: Route, packet: PacketBuf) {
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
    fn dispatch(&mut self, now: Instant, origin: Origin, datagram: &mut [u8]) -> Received {
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
            Ok(MessageType::JoinRequest) => {
                if let Origin::Direct(from) = origin {
                    self.on_join_request(now, from, datagram);
                } else {
                    self.counters.rx_unknown_type += 1;
                }
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
                self.queue_transmit(DeferredTransmit {
                    destination: from,
                    packet,
                    seal: None,
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

    fn on_data(&mut self, now: Instant, origin: Origin, datagram: &mut [u8]) -> Received {
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
    fn data_job(
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
    fn locate_index(&self, index: u32) -> Option<(PeerId, Slot)> {
        let &id = self.by_index.get(&index)?;
        let slot = self.peers[id as usize].slot_of(index)?;
        Some((id, slot))
    }

    fn session_by_index(&mut self, index: u32) -> Option<&mut Session> {
        let (id, slot) = self.locate_index(index)?;
        self.peers[id as usize].session_mut(slot)
    }

    /// A data message after its decryption was tried: the replay window, then what it carries.
    fn data_opened(
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
        let session = peer.session_mut(slot).expect("locate_index found it");
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
        peer.last_received = Some(now);
        peer.rx_bytes += plain_len as u64;
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

    fn on_ethernet(
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

    /// An authenticated packet of `kind` arrived from peer `id` straight from `from`. While the
    /// peer is reached directly, its endpoint follows its packets (roaming, as WireGuard does).
    /// While it is relayed, anything but a probe means the peer confirmed a direct round trip and
    /// switched to it, so this side switches too; probes alone prove only one direction.
    fn direct_packet(&mut self, now: Instant, id: PeerId, from: SocketAddr, kind: PayloadKind) {
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

    /// Forwards a relay envelope from member `from_id` to the member it names, over a direct
    /// session only, with the sender's key in place of the destination's.
    fn forward_relayed(&mut self, now: Instant, from_id: PeerId, payload: &[u8]) {
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

    /// Acknowledges a probe the way it came, saying which address it came from.
    fn answer_probe(
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

    fn on_probe_ack(&mut self, now: Instant, id: PeerId, origin: Origin, ack: ProbeAck) {
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
            peer.path.misses = 0;
            peer.path.confirmed = Some(now);
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
            self.note_observed(observed);
        }
    }

    /// Moves peer `id` from its relay to the direct endpoint `addr`, which just proved it works.
    fn go_direct(&mut self, now: Instant, id: PeerId, addr: SocketAddr) {
        let peer = &mut self.peers[id as usize];
        let changed = peer.endpoint != Some(addr) || peer.path.relay.is_some();
        peer.endpoint = Some(addr);
        if peer.path.relay.take().is_some() {
            self.counters.path_to_direct += 1;
            info!(peer = %peer.name, endpoint = %addr, "peer reached directly again");
        }
        if changed {
            peer.path.reset_route();
            peer.path.next_liveness = Some(now + PROBE_INTERVAL);
        }
        peer.path.misses = 0;
        peer.path.confirmed = Some(now);
    }

    /// Sends peer `id`'s traffic through `relay` from now on.
    fn go_relayed(&mut self, now: Instant, id: PeerId, relay: PeerId) {
        let relay_name = self.peers[relay as usize].name.clone();
        let peer = &mut self.peers[id as usize];
        if peer.path.relay == Some(relay) {
            return;
        }
        if peer.path.relay.replace(relay).is_none() {
            self.counters.path_to_relay += 1;
        }
        info!(peer = %peer.name, via = %relay_name, "peer not reachable directly: relaying");
        peer.path.reset_route();
        peer.path.next_liveness = Some(now + PROBE_INTERVAL);
        peer.path.next_candidate = Some(now + DIRECT_RETRY_INTERVAL);
    }

    /// Another member saw our probe come from `addr`: if that is not an address we advertise, it
    /// is how a NAT in front of us maps us, and worth publishing so members can call us there.
    fn note_observed(&mut self, addr: SocketAddr) {
        if self.advertise.contains(&addr) || self.observed.contains(&addr) {
            return;
        }
        if self.observed.len() >= OBSERVED_MAX {
            self.observed.remove(0);
        }
        self.observed.push(addr);
        debug!(%addr, "learned an address members see this node at");
        self.publish_endpoints();
    }

    /// Replaces the endpoints this node advertises (the io layer re-reads the host's addresses
    /// when `advertise` is not configured) and publishes them with what members observed.
    pub fn set_advertise(&mut self, endpoints: Vec<SocketAddr>) {
        if endpoints == self.advertise {
            return;
        }
        info!(?endpoints, "advertised endpoints changed");
        self.advertise = endpoints;
        self.observed.retain(|a| !self.advertise.contains(a));
        self.publish_endpoints();
        // This host may have moved: probe every peer now, so each sees our packets come from
        // the new address and follows (roaming) instead of waiting for the next probe round.
        for peer in &mut self.peers {
            if peer.current.is_some() {
                peer.path.next_liveness = Some(self.last_now);
            }
        }
    }

    fn publish_endpoints(&mut self) {
        let mut endpoints: Vec<SocketAddr> = self.observed.iter().rev().copied().collect();
        endpoints.extend(self.advertise.iter().copied());
        endpoints.truncate(CANDIDATES_MAX);
        self.membership.set_endpoints(endpoints);
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

    fn on_handshake_init(&mut self, now: Instant, origin: Origin, datagram: &[u8]) {
        let init = match HandshakeInit::new_checked(datagram) {
            Ok(m) => m,
            Err(e) => return self.count_wire_error(e),
        };
        if !verify_mac1(&self.our_mac1_key, init.mac1_covered(), init.mac1()) {
            self.counters.rx_bad_mac1 += 1;
            return;
        }
        if !self.limiter_allows(now, origin) {
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
        let certificate = match self.admit(now, certificate, &remote) {
            Ok(c) => c,
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
        peer.last_handshake = Some(now);
        let session = Session::new(local_index, sender_index, keys, now, false);
        if let Some(old) = peer.next.replace(session) {
            self.by_index.remove(&old.local_index);
        }
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

    fn on_handshake_response(&mut self, now: Instant, origin: Origin, datagram: &[u8]) {
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
        if !self.limiter_allows(now, origin) {
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
        peer.initiation = None;
        let session = Session::new(index, resp.sender_index(), keys, now, true);
        if let Some(old) = peer.previous.take() {
            self.by_index.remove(&old.local_index);
        }
        let was_up = peer.current.is_some();
        peer.previous = peer.current.replace(session);
        peer.handshake = HandshakeProgress::default();
        peer.last_handshake = Some(now);
        self.counters.handshakes_completed += 1;
        if !was_up {
            info!(peer = %peer.name, ?origin, "peer up");
        }
        self.adopt_route(now, id, origin);
        self.flush_pending(now, id);
        let seen_at = self.origin_address(origin);
        self.membership
            .session_established(now, &certificate, seen_at);
        self.pump_membership(now);
    }

    /// The rate limiter's verdict for a handshake message: keyed by the sender's address, or by
    /// the relay's for a relayed one (only members relay, and each relay is one source).
    fn limiter_allows(&mut self, now: Instant, origin: Origin) -> bool {
        let ip = match origin {
            Origin::Direct(from) => Some(from.ip()),
            Origin::Relayed { relay, .. } => self.peers[relay as usize].endpoint.map(|e| e.ip()),
        };
        ip.is_none_or(|ip| self.limiter.allow(now, ip))
    }

    /// The address a datagram came from, or its relay's (for logs and the membership layer).
    fn origin_address(&self, origin: Origin) -> SocketAddr {
        match origin {
            Origin::Direct(from) => from,
            Origin::Relayed { relay, .. } => self.peers[relay as usize]
                .endpoint
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
        }
    }

    /// A handshake with peer `id` just completed over `origin`: use that route from now on.
    fn adopt_route(&mut self, now: Instant, id: PeerId, origin: Origin) {
        match origin {
            Origin::Direct(from) => self.go_direct(now, id, from),
            Origin::Relayed { relay, .. } => self.go_relayed(now, id, relay),
        }
    }

    // ---------------------------------------------------------------- handshakes we drive

    /// Starts a handshake round with the peer unless one is already running.
    fn start_handshake(&mut self, now: Instant, id: PeerId) {
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
    fn send_initiation(&mut self, now: Instant, id: PeerId) {
        let Some(route) = self.initiation_route(id) else {
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
        debug!(peer = %peer.name, attempt = peer.handshake.attempts, ?route, "sent handshake initiation");
        self.transmit(now, id, route, packet);
    }

    /// Where an initiation goes. A rekey takes the route in use. A new session is tried directly
    /// first; after [`RELAY_AFTER_ATTEMPTS`] unanswered attempts, attempts alternate between a
    /// relay (a different one each time round) and direct, so whichever works first wins.
    fn initiation_route(&self, id: PeerId) -> Option<Route> {
        let peer = &self.peers[id as usize];
        if peer.current.is_some() {
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
            peer.path.reset_route();
            peer.path.relay = None;
            self.fdb.remove_port(Port::Peer(id));
        }
        if wanted && self.peers[id as usize].current.is_some() {
            self.path_timers(now, id);
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
                None => peer.endpoint.is_some() || !peer.pending.is_empty(),
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

    /// Probes the route in use for liveness and size, moves to a relay (or the next one) when it
    /// stops answering, and while relayed looks for the way back to a direct endpoint.
    fn path_timers(&mut self, now: Instant, id: PeerId) {
        let Some(route) = self.route(id) else { return };
        // Probes not answered in time are lost; lost liveness probes on the route in use count.
        let peer = &mut self.peers[id as usize];
        let (mut lost, mut lost_full_size) = (0, 0);
        peer.path.probes.retain(|p| {
            let pending = now < p.sent + PROBE_TIMEOUT;
            if !pending && p.route == route {
                match p.purpose {
                    ProbePurpose::Liveness => lost += 1,
                    ProbePurpose::Confirm => lost_full_size += 1,
                    _ => {}
                }
            }
            pending
        });
        if lost > 0 {
            peer.path.misses += lost;
            peer.path.next_liveness = Some(now);
        } else if lost_full_size > 0 {
            peer.path.confirm_misses += lost_full_size;
            peer.path.next_liveness = Some(now);
            if peer.path.confirm_misses >= BLACK_HOLE_AFTER {
                // Small probes get through and full-size ones do not: the path narrowed under
                // us (a new link on the way, a tunnel, a changed MTU). Search it again.
                peer.path.confirm_misses = 0;
                if let Some((_, search)) = peer.path.pmtu.as_mut() {
                    info!(peer = %peer.name, was = search.current(), "full-size packets lost on the path: measuring its MTU again");
                    search.suspect_black_hole(now);
                    self.counters.pmtu_black_holes += 1;
                }
            }
        }
        if peer.path.misses >= PATH_LOST_AFTER {
            self.route_lost(now, id, route);
            return;
        }
        let peer = &mut self.peers[id as usize];
        let due = peer.path.next_liveness.get_or_insert(now + PROBE_INTERVAL);
        if now >= *due {
            *due = now
                + if peer.path.misses > 0 {
                    PROBE_TIMEOUT
                } else {
                    PROBE_INTERVAL
                };
            self.send_probe(
                now,
                id,
                route,
                ProbePurpose::Liveness,
                LIVENESS_PROBE_LEN,
                None,
            );
            // With it, one probe of the size in use, so a path that narrows is noticed.
            let settled_size = self.peers[id as usize]
                .path
                .pmtu
                .as_ref()
                .filter(|(r, search)| *r == route && search.settled())
                .map(|(_, search)| search.current());
            if let Some(size) = settled_size.filter(|&s| s > LIVENESS_PROBE_LEN) {
                self.send_probe(now, id, route, ProbePurpose::Confirm, size, None);
            }
        }
        let peer = &mut self.peers[id as usize];
        if peer.path.relay.is_some() {
            let due = peer
                .path
                .next_candidate
                .get_or_insert(now + DIRECT_RETRY_INTERVAL);
            if now >= *due {
                *due = now + DIRECT_RETRY_INTERVAL;
                let endpoint = peer.endpoint;
                if let Some(addr) = peer.path.next_candidate_after(endpoint) {
                    let route = Route::Direct(addr);
                    self.send_probe(
                        now,
                        id,
                        route,
                        ProbePurpose::Candidate,
                        LIVENESS_PROBE_LEN,
                        None,
                    );
                }
            }
        }
        self.pmtu_timers(now, id, route);
    }

    /// Runs the path MTU search of the route in use, starting one for a new route.
    fn pmtu_timers(&mut self, now: Instant, id: PeerId, route: Route) {
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
    fn pmtu_bounds(&self, route: Route) -> (usize, usize) {
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
    fn send_probe(
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
    fn route_lost(&mut self, now: Instant, id: PeerId, route: Route) {
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
                for t in [p.path.next_liveness, p.path.next_candidate]
                    .into_iter()
                    .flatten()
                {
                    consider(t);
                }
                if let Some(oldest) = p.path.probes.iter().map(|probe| probe.sent).min() {
                    consider(oldest + PROBE_TIMEOUT);
                }
                if let Some(t) = p.path.pmtu.as_ref().and_then(|(_, m)| m.poll_timeout()) {
                    consider(t);
                }
                if p.path.next_liveness.is_none() {
                    // A new session: its path timers start at the next `handle_timeout`.
                    consider(self.last_now);
                }
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

    /// The name of the relay peer `id` is reached through, if it has a session and is relayed.
    fn via(&self, id: PeerId) -> Option<String> {
        let peer = &self.peers[id as usize];
        peer.current.as_ref()?;
        match self.route(id)? {
            Route::Relay(relay) => Some(self.peers[relay as usize].name.clone()),
            Route::Direct(_) => None,
        }
    }

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
            .enumerate()
            .map(|(id, p)| PeerStatus {
                name: p.name.clone(),
                public_key: p.public_key.to_string(),
                endpoint: p.endpoint.map(|e| e.to_string()),
                state: p.state(now).to_string(),
                via: self.via(id as PeerId),
                path_mtu: p
                    .current
                    .as_ref()
                    .map(|_| (self.frame_limit(id as PeerId) - ETHERNET_HEADER_LEN) as u32),
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
                let id = self.by_key.get(&m.key).copied();
                let peer = id.map(|id| &self.peers[id as usize]);
                let via = id.and_then(|id| self.via(id));
                MemberStatus {
                    direct: peer.is_some_and(|p| p.current.is_some()) && via.is_none(),
                    admin: peer
                        .and_then(|p| p.certificate.as_ref())
                        .is_some_and(|c| c.admin),
                    name: m.name,
                    public_key: m.key.to_string(),
                    certificate_expires: m.cert_expires_at,
                    state: m.state.as_str().to_string(),
                    endpoints: m.endpoints.iter().map(|e| e.to_string()).collect(),
                    via,
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
    /// The member this peer is reached through, when the direct path does not work.
    pub via: Option<String>,
    /// The largest IP packet that reaches this peer whole (what ICMP too-big answers advertise);
    /// `None` without a session.
    #[serde(default)]
    pub path_mtu: Option<u32>,
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
    /// The member this one is reached through, when the direct path does not work.
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
