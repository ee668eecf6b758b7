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
//! believed; no Diffie-Hellman work is done for a handshake message before its mac1 verified, a
//! direct initiation while under load proved its source address (mac2), and the rate limiter let
//! it through; what an input produces is queued on the lane set when it
//! came in, and only that lane's worker sends it, so one flow never leaves through two sockets at
//! once.
//!
//! The node is a facade: each piece of state has one owner that changes it, and the files here
//! route inputs to them. `api` holds the inputs and outputs; `send` the way from the TAP out;
//! `receive` the way from the socket in; `handshake` admission and key agreement; `members` the
//! member table and the bridge to gossip and joins; `paths` routes, relays and probes; `timers`
//! the timer pass and `poll_timeout`; `snapshot` the status. The owners: `peer::Sessions` (a
//! peer's sessions and key rotation), `peer::IndexTable` (session indices), `peer::PathState`
//! (a route and its probes), `switch::Fdb`, `limit` (token buckets and the load state),
//! `cookie::CookieIssuer` (the cookie secret), `membership::Membership`, `invite::InviteBook`,
//! `buffer::BufferPool`, `endpoints::ObservedEndpoints` (observed addresses and when our record
//! may be re-signed for them).

mod api;
mod endpoints;
mod handshake;
mod members;
mod paths;
mod receive;
mod send;
mod snapshot;
mod timers;

pub use api::{
    DeferredTransmit, Inbound, NodeConfig, NodeEvent, OpenJob, PeerSpec, Received, SegmentPlan,
    Transmit,
};
pub use endpoints::{CONFIRMATIONS, PUBLISH_BURST, PUBLISH_PER_SECOND, REPORTERS_MAX};
pub use snapshot::{FdbPortSnapshot, FdbSnapshot, MemberSnapshot, NodeSnapshot, PeerSnapshot};

use crate::core::guard::GuardPolicy;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshd_crypto::{
    mac1_key, Certificate, CoreRng, NetworkId, NetworkSecret, PublicKey, StaticSecret,
};
use rand_core::RngCore;

use super::buffer::{BufferPool, PacketBuf};
use super::cipher::CipherPolicy;
use super::clock::WallClock;
use super::cookie::CookieIssuer;
use super::counters::Counters;
use super::invite::InviteBook;
use super::limit::{HandshakeLimiter, TokenBucket};
use super::membership::{Membership, MembershipConfig};
use super::peer::{IndexTable, Peer, Retired};
use super::switch::{Fdb, PeerId};
use crate::wire::{
    DATA_OVERHEAD, ETHERNET_HEADER_LEN, HANDSHAKE_INIT_MAX_LEN, PROBE_MIN_LEN, RELAY_OVERHEAD,
};
use endpoints::ObservedEndpoints;

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
/// Idle buffers the pool keeps for reuse.
const POOL_IDLE_MAX: usize = 1024;
/// Datagram size every path is assumed to carry: IPv6's minimum link MTU (1280) less an IPv6 and
/// a UDP header. The path MTU search never reports less.
pub const BASE_DATAGRAM: usize = 1280 - 48;
/// Underlay link MTU assumed when the io layer cannot tell.
pub const DEFAULT_UNDERLAY_MTU: usize = 1500;
/// ICMP too-big answers the node writes to the bridge per second, at most (a sender that ignores
/// them must not turn the node into a packet generator).
const TOO_BIG_ANSWERS_PER_SECOND: u64 = 100;
/// Frames the node itself generated for the TAP that may wait for the io layer.
const TAP_OUT_MAX: usize = 256;
/// Size of a liveness probe datagram: the smallest probe.
const LIVENESS_PROBE_LEN: usize = DATA_OVERHEAD + PROBE_MIN_LEN;

pub struct Node {
    secret: StaticSecret,
    public_key: PublicKey,
    network: NetworkId,
    certificate: Certificate,
    /// Our certificate's encoding, as sent in every handshake.
    certificate_bytes: Vec<u8>,
    revoked: HashSet<PublicKey>,
    events: VecDeque<NodeEvent>,
    network_secret: Option<NetworkSecret>,
    certificate_lifetime: Duration,
    advertise: Vec<SocketAddr>,
    invites: InviteBook,
    membership: Membership,
    our_mac1_key: [u8; 32],
    /// The data-path ciphers this node accepts (negotiated in every handshake).
    ciphers: CipherPolicy,
    rng: CoreRng,
    peers: Vec<Peer>,
    by_key: HashMap<PublicKey, PeerId>,
    /// Our session indices and the peer each belongs to (the one table of them).
    by_index: IndexTable,
    fdb: Fdb,
    /// What the layer-2 guard enforces on members' frames.
    guard: GuardPolicy,
    limiter: HandshakeLimiter,
    /// The cookie secret and our cookie replies, for initiations while under load.
    cookies: CookieIssuer,
    /// Datagrams to send, one queue per lane (data-path worker). What a worker's input produces
    /// is queued on its lane and leaves through its socket, so one flow's datagrams are never
    /// split between two workers sending at once, which would reorder them on the wire.
    transmits: Vec<VecDeque<DeferredTransmit>>,
    /// The lane whose queue receives the datagrams produced from now on (see `set_lane`).
    lane: usize,
    /// Whether datagrams on direct routes leave the node unsealed, for the caller to seal.
    defer_sealing: bool,
    /// Whether this node announces that it accepts frames with partial L4 checksums (it completes
    /// them itself, or its TAP's kernel does).
    accept_partial_checksums: bool,
    pool: BufferPool,
    /// Largest Ethernet frame delivered to the TAP.
    max_frame: usize,
    underlay_mtu: usize,
    /// Frames the node generated for the TAP (ICMP too-big answers), for the io layer to write.
    tap_out: VecDeque<PacketBuf>,
    /// Bounds the too-big answers written to the bridge.
    too_big_budget: TokenBucket,
    /// Addresses members saw our probes come from, confirmed before they are published with
    /// `advertise`, and the budget for re-signing our record.
    observed: ObservedEndpoints,
    counters: Counters,
    clock: WallClock,
    last_timestamp: u64,
    last_now: Instant,
    next_sweep: Instant,
    next_admission_warning: Option<Instant>,
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
        let enforce_ranges = config.certificate.grant.is_some();
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
            ciphers: config.ciphers,
            public_key,
            secret: config.secret,
            rng,
            peers,
            by_key,
            by_index: IndexTable::default(),
            guard: GuardPolicy {
                enforce_ranges,
                drop_router_advertisements: config.fdb.drop_router_advertisements,
            },
            fdb: Fdb::new(config.fdb),
            limiter: HandshakeLimiter::new(config.now),
            cookies: CookieIssuer::new(&public_key),
            transmits: vec![VecDeque::new()],
            lane: 0,
            defer_sealing: false,
            accept_partial_checksums: true,
            // Buffers also carry handshake messages, and either inside a relay envelope.
            pool: BufferPool::new(
                config.max_frame.max(HANDSHAKE_INIT_MAX_LEN) + RELAY_OVERHEAD,
                POOL_IDLE_MAX,
            ),
            max_frame: config.max_frame,
            underlay_mtu: config.underlay_mtu,
            tap_out: VecDeque::new(),
            too_big_budget: TokenBucket::new(
                config.now,
                TOO_BIG_ANSWERS_PER_SECOND,
                TOO_BIG_ANSWERS_PER_SECOND,
            ),
            observed: ObservedEndpoints::new(config.now),
            counters: Counters::default(),
            clock: WallClock::new(config.now, config.unix_nanos_at_now),
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

    /// A fresh wall-clock reading from the io layer (`unix_nanos` at `now`), handed over at every
    /// tick so certificates, revocations and renewals are dated by the host's clock as it is now,
    /// also after NTP stepped it. Initiation timestamps stay strictly increasing regardless.
    pub fn set_wall_clock(&mut self, now: Instant, unix_nanos: u64) {
        self.clock = WallClock::new(now, unix_nanos);
        self.membership.set_wall_clock(now, unix_nanos);
    }

    /// This node's container address grant (from its current certificate), if it has one.
    pub fn grant(&self) -> Option<crate::core::ranges::Grant> {
        self.membership.grant()
    }

    /// Replaces this node's certificate (after a renewal); later handshakes carry the new one.
    pub fn set_certificate(&mut self, certificate: Certificate) {
        self.certificate_bytes = certificate.encode();
        self.guard.enforce_ranges = certificate.grant.is_some();
        self.certificate = certificate;
    }

    /// The next event for the layers around the node.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// Unix seconds at `now`, from the wall-clock reading the io layer gave at start.
    pub fn unix_secs(&self, now: Instant) -> u64 {
        self.clock.unix_secs(now)
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

    pub(super) fn queue_transmit(&mut self, transmit: DeferredTransmit) {
        self.transmits[self.lane].push_back(transmit);
    }

    /// Whether data datagrams on direct routes are queued unsealed (see
    /// [`Node::poll_deferred_transmit`]). Off by default: `poll_transmit` seals either way.
    pub fn set_deferred_sealing(&mut self, on: bool) {
        self.defer_sealing = on;
    }

    /// Whether handshakes from now on announce that this node accepts frames with partial L4
    /// checksums (on by default; off makes it look like a node that predates the feature).
    pub fn set_accept_partial_checksums(&mut self, on: bool) {
        self.accept_partial_checksums = on;
    }

    /// The data-path features this node announces in its handshakes.
    pub(super) fn features(&self) -> u8 {
        if self.accept_partial_checksums {
            crate::wire::FEATURE_PARTIAL_CHECKSUM
        } else {
            0
        }
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

    pub(super) fn observe(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
    }

    /// A strictly increasing wall-clock timestamp, so a restarted node's initiations are newer
    /// than any it sent before (as long as the host clock does not step back past them).
    pub(super) fn next_timestamp(&mut self, now: Instant) -> u64 {
        let ts = self.clock.unix_nanos(now).max(self.last_timestamp + 1);
        self.last_timestamp = ts;
        ts
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
                match self.by_index.lookup(index) {
                    Some(p) if p as usize == id => {}
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

    /// Releases the indices a session transition retired.
    pub(super) fn retire(&mut self, retired: Retired) {
        self.by_index.release(retired);
    }
}
