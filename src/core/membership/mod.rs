//! Who is in the mesh: SWIM membership (foca) plus signed member records, revocations and
//! certificate renewal, as a sans-IO state machine.
//!
//! Inputs: membership payloads received inside authenticated sessions
//! ([`Membership::handle_message`]), sessions the node established
//! ([`Membership::session_established`]), the passage of time ([`Membership::handle_timeout`])
//! and operator actions ([`Membership::revoke`], [`Membership::set_endpoints`]). Outputs:
//! payloads to send to a member inside its session ([`Membership::poll_transmit`]), events for
//! the node and the io layer ([`Membership::poll_event`]) and [`Membership::poll_timeout`].
//! Nothing here reads a clock, a socket or the OS random source: every random choice, foca's
//! included, comes from the seed in [`MembershipConfig`].
//!
//! Invariants: a member is reported ([`MembershipEvent::MemberUp`], [`Membership::members`])
//! only once its record verified (certificate against the network id and unexpired, key not
//! revoked, record signed by the certificate's signing key); a member foca knows without such a
//! record is sent nothing but foca's own messages; a foca packet is handed to foca only if the
//! sender identity inside it is the authenticated session key it arrived on, and foca takes a
//! member update only at the generation in that member's signed record; a revoked key's
//! record is dropped and refused, and its packets ignored, for as long as the revocation is
//! kept (at least until the newest certificate of the key seen expires), and a revocation
//! outranks every record when tables are compared; every payload dropped or item refused is
//! counted in [`MembershipCounters`]; no input panics; every payload this module emits is at
//! most [`MAX_PAYLOAD`] bytes.
//!
//! This file is the facade: the public types, [`Membership`]'s inputs and outputs, its own
//! record, the report of who is up, and housekeeping. The rest lives with its owner: `swim.rs`
//! (foca, its timers and notifications), `sync.rs` (wanted records, table pulls,
//! anti-entropy), `renew.rs` (certificate renewal), `registry.rs` (the verified table),
//! `record.rs` (record and revocation items), `codec.rs` (foca's encoding), `counters.rs`; the
//! payload layouts are views in `crate::wire::membership`, so no code here indexes message
//! bytes.

mod codec;
mod counters;
mod ranges;
mod record;
mod registry;
mod renew;
mod swim;
mod sync;
#[cfg(test)]
mod tests;

use crate::core::clock::WallClock;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foca::{Member, State};
use meshd_crypto::{Certificate, CoreRng, NetworkId, NetworkSecret, PublicKey, SigningKey};
use rand_core::RngCore as _;
use tracing::{debug, info, warn};

use crate::wire::membership::{MembershipPayload, Subtype};

pub use codec::{CodecError, FocaRng, MemberId, WireCodec, MEMBER_ID_LEN, MEMBER_UPDATE_LEN};
pub use counters::MembershipCounters;
pub use record::{
    member_item, revocation_expiry, revocation_item, Item, MemberRecord, RecordError, RecordView,
    Revocation, RevocationView, FORMAT_VERSION, ITEM_MEMBER, ITEM_REVOCATION, MAX_ENDPOINTS,
    MAX_RECORD_VERSION, RECORD_LABEL, RECORD_MAX_LEN, RECORD_MIN_LEN, REVOCATION_LABEL,
};
pub use registry::ItemKey;

pub use swim::foca_config;

use registry::{lock, ItemSource, KeyEntry, Registry};
use renew::Renewal;
use swim::{Live, SwimDriver};
use sync::TableSync;

// The layout of every membership payload (subtypes, page flags, lengths) lives with its views.
pub use crate::wire::membership::{
    DIGEST_BUCKETS, DIGEST_LEN, FOCA_MAX_PACKET, INDEX_ENTRY_LEN, INDEX_MAX_ENTRIES, MAX_PAYLOAD,
    PAGE_END, PAGE_FROM_START, PAGE_HEADER_LEN, PAGE_LAST_IN_BURST, PAGE_UNSOLICITED,
    SUBTYPE_DIGEST, SUBTYPE_FOCA, SUBTYPE_INDEX, SUBTYPE_RECORDS, SUBTYPE_RENEW_REQUEST,
    SUBTYPE_RENEW_RESPONSE, SUBTYPE_SYNC_REQUEST, SUBTYPE_WANT, SYNC_REQUEST_LEN, WANT_MAX_KEYS,
};

// ------------------------------------------------------------------------ protocol constants

/// foca probes one member per period (SWIM's protocol period).
pub const PROBE_PERIOD: Duration = Duration::from_secs(1);
/// Wait for a direct ack before asking others to probe indirectly. Above WAN p99 round trips,
/// and enough for an on-demand handshake in front of the first probe.
pub const PROBE_RTT: Duration = Duration::from_millis(500);
/// Members asked to probe indirectly.
pub const INDIRECT_PROBES: usize = 3;
/// Suspicion lasts this many probe periods times log10(members), at least once.
pub const SUSPICION_MULTIPLIER: u32 = 3;
/// Gossip pending updates this often...
pub const GOSSIP_INTERVAL: Duration = Duration::from_millis(200);
/// ...to this many random members.
pub const GOSSIP_FANOUT: usize = 3;
/// Ask one random member for a feed of members this often (fills gaps in foca's view).
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(30);
/// Announce to two members considered down this often (heals partitions).
pub const ANNOUNCE_DOWN_INTERVAL: Duration = Duration::from_secs(60);
/// A member down this long is forgotten (record dropped, [`MembershipEvent::MemberForgotten`]).
pub const REMOVE_DOWN_AFTER: Duration = Duration::from_secs(60 * 60);
/// Housekeeping period: wants, sync retries, renewal, expiry sweeps, foca retuning.
pub const TICK_INTERVAL: Duration = Duration::from_secs(1);
/// A member foca reports without a record is asked for after this long (its record usually
/// arrives with the same gossip).
pub const WANT_DELAY: Duration = Duration::from_secs(1);
/// Asks another random member after this long, doubling up to [`WANT_RETRY_MAX`], for as long
/// as foca considers the member alive (during a mass start a record can be missing at many
/// members for a while).
pub const WANT_RETRY: Duration = Duration::from_secs(2);
/// Longest pause between asks for the same record.
pub const WANT_RETRY_MAX: Duration = Duration::from_secs(16);
/// A record of a key foca does not consider alive (only mentioned in gossip) is asked for this
/// many times, then forgotten until it is mentioned again.
pub const WANT_ATTEMPTS_UNCONFIRMED: u8 = 6;
/// Most records wanted at once; mentions of further keys are dropped (and counted).
pub const MAX_WANTED: usize = 4096;
/// Pages asked for per sync request.
pub const SYNC_PAGES_PER_REQUEST: u8 = 16;
/// Re-asks for the next pages after this long without progress.
pub const SYNC_RETRY: Duration = Duration::from_secs(2);
/// Tries one member this many times, then another.
pub const SYNC_ATTEMPTS: u8 = 4;
/// Compares table digests with a random member this often, and fetches what differs: repairs
/// gossip a member missed (a revocation while it was cut off, a record update lost to loss).
pub const ANTI_ENTROPY_INTERVAL: Duration = Duration::from_secs(60);
/// After a digest round that found something missing (and after the first table pull), the
/// next round comes this soon: a table still filling up is compared often, a settled one once
/// per [`ANTI_ENTROPY_INTERVAL`].
pub const ANTI_ENTROPY_BUSY_INTERVAL: Duration = Duration::from_secs(5);
/// Index pages answered per digest (29 entries each), so a digest costs a bounded answer.
pub const INDEX_PAGES_PER_DIGEST: usize = 16;
/// A forgotten member's record version is remembered this long, so a late copy of the record
/// does not bring it back.
pub const FORGOTTEN_KEPT: Duration = Duration::from_secs(2 * 60 * 60);
/// Pages this node serves per second (syncs and wants of all members together)...
pub const PAGE_RATE: u32 = 512;
/// ...with this burst.
pub const PAGE_BURST: u32 = 128;
/// Asks an admin again after this long without a renewed certificate.
pub const RENEW_RETRY: Duration = Duration::from_secs(60);
/// Certificates an admin issues per second for renewals...
pub const RENEW_RATE: u32 = 10;
/// ...with this burst.
pub const RENEW_BURST: u32 = 20;

// ------------------------------------------------------------------------------------ types

/// What a membership state machine is built from.
pub struct MembershipConfig {
    pub network: NetworkId,
    /// This node's certificate.
    pub certificate: Certificate,
    /// This node's Ed25519 signing key (derived from its static key).
    pub signing_key: SigningKey,
    /// Admins only: the network key, used to answer renewal requests (and renew locally).
    pub network_secret: Option<NetworkSecret>,
    /// Where this node can be reached; at most [`MAX_ENDPOINTS`] are published.
    pub endpoints: Vec<SocketAddr>,
    /// Revocations loaded from disk; verified again before use.
    pub revocations: Vec<Revocation>,
    pub now: Instant,
    /// Unix seconds at `now`: seeds the generation and the record version, and dates
    /// certificate checks.
    pub unix_secs_at_now: u64,
    pub rng_seed: [u8; 32],
    /// Lifetime of certificates this node issues when it answers renewals (admins).
    pub certificate_lifetime: Duration,
}

/// What the node and the io layer learn from membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A member's record verified while foca considers it alive: the first time, again after
    /// it was down, or with a newer record (endpoints or certificate changed).
    MemberUp {
        key: PublicKey,
        name: String,
        endpoints: Vec<SocketAddr>,
        certificate: Certificate,
    },
    /// A reported member went down (foca declared it, its certificate expired, or it was
    /// revoked).
    MemberDown { key: PublicKey },
    /// A member down for [`REMOVE_DOWN_AFTER`] was forgotten.
    MemberForgotten { key: PublicKey },
    /// A revocation this node had not known: drop the key's sessions; persist it.
    Revoked { revocation: Revocation },
    /// A fresh certificate for this node: persist it.
    CertificateRenewed { certificate: Certificate },
}

/// A member's state as [`Membership::members`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Alive,
    Suspect,
    Down,
    Revoked,
}

impl MemberState {
    pub const fn as_str(self) -> &'static str {
        match self {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
            MemberState::Revoked => "revoked",
        }
    }
}

/// One row of [`Membership::members`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberReport {
    pub name: String,
    pub key: PublicKey,
    /// Unix seconds (for a revoked key: until when the revocation is kept, its own expiry or the
    /// newest certificate of the key seen, whichever is later).
    pub cert_expires_at: u64,
    pub state: MemberState,
    pub endpoints: Vec<SocketAddr>,
    /// The container address range the member's certificate grants.
    pub range: Option<crate::core::ranges::Range4>,
}

/// Why [`Membership::revoke`] refused a revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("the revocation is for another network")]
    WrongNetwork,
    #[error("the revocation's signature does not verify against the network id")]
    BadSignature,
    #[error("the revocation has expired")]
    Expired,
}

/// Capacity the output queues keep once drained.
const QUEUE_KEEP: usize = 64;

/// The SWIM membership state machine of one node. See the module documentation.
///
/// Each concern keeps its state next to the code that changes it: `swim` (foca, its timers;
/// swim.rs), `sync` (wanted records, table pulls, anti-entropy; sync.rs), `renewal` (renew.rs).
/// This struct holds what all of them read: identity, own record, the verified table, the output
/// queues and the counters.
pub struct Membership {
    swim: SwimDriver,
    sync: TableSync,
    renewal: Renewal,
    ranges: ranges::RangeWatch,
    /// Shared with foca's broadcast handler; never locked while foca runs.
    registry: Arc<Mutex<Registry>>,
    /// Every counter but the item verdicts, which the registry counts as it judges items.
    counters: MembershipCounters,
    network: NetworkId,
    me: MemberId,
    certificate: Certificate,
    signing_key: SigningKey,
    endpoints: Vec<SocketAddr>,
    version: u64,
    rng: CoreRng,
    outbox: VecDeque<(PublicKey, Vec<u8>)>,
    events: VecDeque<MembershipEvent>,
    live: BTreeMap<PublicKey, Live>,
    /// Members reported up, with the record version reported.
    reported: BTreeMap<PublicKey, u64>,
    next_tick: Instant,
    clock: WallClock,
    last_now: Instant,
}

impl Membership {
    pub fn new(cfg: MembershipConfig) -> Membership {
        let now = cfg.now;
        let own_key = cfg.certificate.static_key;
        let me = MemberId {
            key: own_key,
            generation: u32::try_from(cfg.unix_secs_at_now).unwrap_or(u32::MAX),
        };
        let mut rng = CoreRng::from_seed(cfg.rng_seed);
        let registry = Arc::new(Mutex::new(Registry::new(
            cfg.network,
            own_key,
            cfg.unix_secs_at_now,
        )));
        let swim = SwimDriver::new(me, FocaRng(rng.fork()), Arc::clone(&registry));
        let mut endpoints = cfg.endpoints;
        endpoints.truncate(MAX_ENDPOINTS);
        let mut membership = Membership {
            swim,
            sync: TableSync::new(now),
            renewal: Renewal::new(now, cfg.network_secret, cfg.certificate_lifetime),
            ranges: ranges::RangeWatch::default(),
            registry,
            counters: MembershipCounters::default(),
            network: cfg.network,
            me,
            certificate: cfg.certificate,
            signing_key: cfg.signing_key,
            endpoints,
            version: cfg.unix_secs_at_now,
            rng,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            live: BTreeMap::new(),
            reported: BTreeMap::new(),
            next_tick: now,
            clock: WallClock::new(now, cfg.unix_secs_at_now.saturating_mul(1_000_000_000)),
            last_now: now,
        };
        for revocation in cfg.revocations {
            membership.load_revocation(&revocation);
        }
        membership.publish_own_record();
        membership
    }

    // -------------------------------------------------------------------- accessors

    pub fn public_key(&self) -> PublicKey {
        self.me.key
    }

    /// foca's current identity of this node.
    pub fn identity(&self) -> MemberId {
        self.me
    }

    /// This node's current certificate (renewed ones included).
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// The version of this node's current record.
    pub fn record_version(&self) -> u64 {
        self.version
    }

    pub fn counters(&self) -> MembershipCounters {
        let mut counters = self.counters.clone();
        counters.add(&lock(&self.registry).counters);
        counters
    }

    pub fn is_revoked(&self, key: &PublicKey) -> bool {
        lock(&self.registry).is_revoked(key)
    }

    /// Every member with a verified record (this node included) and every revoked key, in key
    /// order.
    pub fn members(&self, _now: Instant) -> Vec<MemberReport> {
        let states: BTreeMap<PublicKey, State> = self
            .swim
            .foca
            .iter_membership_state()
            .map(|m| (m.id().key, m.state()))
            .collect();
        let registry = lock(&self.registry);
        let mut out = Vec::with_capacity(registry.slots.len());
        for (key, slot) in &registry.slots {
            match slot {
                KeyEntry::Member(stored) => {
                    let Some((certificate, record)) = stored.decode() else {
                        continue;
                    };
                    let state = if *key == self.me.key {
                        MemberState::Alive
                    } else {
                        match states.get(key) {
                            Some(State::Alive) => MemberState::Alive,
                            Some(State::Suspect) => MemberState::Suspect,
                            Some(State::Down) | None => MemberState::Down,
                        }
                    };
                    out.push(MemberReport {
                        name: certificate.name.clone(),
                        key: *key,
                        cert_expires_at: certificate.expires_at,
                        state,
                        endpoints: record.endpoints,
                        range: stored.grant.map(|g| g.range),
                    });
                }
                KeyEntry::Revoked(stored) => {
                    let Some(revocation) = stored.decode() else {
                        continue;
                    };
                    out.push(MemberReport {
                        name: revocation.name,
                        key: *key,
                        cert_expires_at: stored.expires_at,
                        state: MemberState::Revoked,
                        endpoints: Vec::new(),
                        range: None,
                    });
                }
            }
        }
        out
    }

    // -------------------------------------------------------------------- outputs

    /// The next payload to send inside the session with that member.
    pub fn poll_transmit(&mut self) -> Option<(PublicKey, Vec<u8>)> {
        let next = self.outbox.pop_front();
        if next.is_none() && self.outbox.capacity() > QUEUE_KEEP {
            // A burst (a table served, a mesh adopted) does not pin its queue for good.
            self.outbox.shrink_to(QUEUE_KEEP);
        }
        next
    }

    pub fn poll_event(&mut self) -> Option<MembershipEvent> {
        let next = self.events.pop_front();
        if next.is_none() && self.events.capacity() > QUEUE_KEEP {
            self.events.shrink_to(QUEUE_KEEP);
        }
        next
    }

    /// When [`Membership::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let foca_next = self.swim.next_timer();
        Some(foca_next.map_or(self.next_tick, |t| t.min(self.next_tick)))
    }

    // -------------------------------------------------------------------- inputs

    /// A membership payload received inside an authenticated session from `from`.
    pub fn handle_message(&mut self, now: Instant, from: PublicKey, payload: &[u8]) {
        self.observe(now);
        self.counters.rx_messages += 1;
        self.counters.rx_bytes += payload.len() as u64;
        let Ok(message) = MembershipPayload::new_checked(payload) else {
            self.counters.rx_bad_length += 1;
            return;
        };
        if lock(&self.registry).is_revoked(&from) {
            self.counters.rx_from_revoked += 1;
            return;
        }
        let body = message.body();
        match message.subtype() {
            Subtype::Foca => self.on_foca_packet(now, from, body),
            Subtype::RenewRequest => self.on_renew_request(now, from, body),
            Subtype::RenewResponse => self.on_renew_response(body),
            Subtype::SyncRequest => self.on_sync_request(now, from, body),
            Subtype::Records => self.on_records(now, from, body),
            Subtype::Want => self.on_want(now, from, body),
            Subtype::Digest => self.on_digest(now, from, body),
            Subtype::Index => self.on_index(now, from, body),
            Subtype::Unknown(_) => self.counters.rx_unknown_subtype += 1,
        }
        self.pump(now, Some(from));
    }

    /// A session with the member holding `certificate` (verified by the node) came up. This is
    /// how knowing one member bootstraps: foca announces itself to it, and a node that has not
    /// pulled the member table yet pulls it from there. Once this node has announced itself to a
    /// member foca considers alive, further sessions with it (rekeys) cost nothing, so it may
    /// be called on every handshake.
    pub fn session_established(
        &mut self,
        now: Instant,
        certificate: &Certificate,
        endpoint: SocketAddr,
    ) {
        self.observe(now);
        let key = certificate.static_key;
        if key == self.me.key || self.is_revoked(&key) {
            return;
        }
        match self.live.get_mut(&key) {
            // A rekey, or another session with a member foca has alive and this node already
            // announced itself to: nothing to learn.
            Some(l) if l.active && l.announced && self.sync.synced => return,
            Some(l) => l.announced = true,
            None => {}
        }
        debug!(peer = %key, %endpoint, "membership: session established");
        let generation = self
            .live
            .get(&key)
            .map(|l| l.generation)
            .or_else(|| lock(&self.registry).record(&key).map(|r| r.generation))
            .unwrap_or(0);
        if self
            .swim
            .foca
            .announce(MemberId { key, generation }, &mut self.swim.io)
            .is_err()
        {
            self.counters.foca_errors += 1;
        }
        if !self.sync.synced && self.sync.run.is_none() {
            self.start_sync(now, key);
        }
        self.pump(now, Some(key));
    }

    /// Whether foca holds `key` as a member that is down. A node that still has a working session
    /// with such a member (a partition healed before the session timed out) calls
    /// [`Membership::session_established`] for it again: the announcement makes the member learn it
    /// was declared down, rejoin under a new generation and be taken back at once, instead of
    /// both sides waiting for the periodic announcement to down members.
    pub fn is_down(&self, key: &PublicKey) -> bool {
        self.live.get(key).is_some_and(|l| !l.active)
    }

    /// Runs foca's due timers and this module's housekeeping.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
        self.fire_due_timers(now);
        if now >= self.next_tick {
            self.next_tick = now + TICK_INTERVAL;
            self.tick(now);
            self.pump(now, None);
        }
    }

    /// Applies and spreads a revocation signed by the network key (an admin's `meshd revoke`).
    pub fn revoke(&mut self, now: Instant, revocation: Revocation) -> Result<(), MembershipError> {
        self.observe(now);
        self.check_revocation(&revocation)?;
        let item = revocation_item(&revocation);
        let fresh = lock(&self.registry)
            .receive(&item, ItemSource::Gossip)
            .is_some();
        if fresh {
            info!(key = %revocation.static_key, name = %revocation.name, "membership: key revoked");
            self.spread(&item);
        }
        self.pump(now, None);
        Ok(())
    }

    /// Publishes new endpoints: re-signs this node's record with a higher version.
    pub fn set_endpoints(&mut self, mut endpoints: Vec<SocketAddr>) {
        endpoints.truncate(MAX_ENDPOINTS);
        self.endpoints = endpoints;
        self.bump_version();
        self.publish_own_record();
    }

    /// Simulation aid: takes every verified record and revocation `donor` holds, without
    /// verifying them again, and tells foca about those members, as if a full table pull had
    /// completed. Lets benchmarks start from a converged mesh of thousands of nodes without
    /// paying one signature check per record per node.
    #[doc(hidden)]
    pub fn adopt_verified_state(&mut self, now: Instant, donor: &Membership) {
        self.observe(now);
        let mut members = Vec::new();
        {
            let donor_registry = lock(&donor.registry);
            let mut registry = lock(&self.registry);
            for (key, slot) in &donor_registry.slots {
                if *key == self.me.key || registry.slots.contains_key(key) {
                    continue;
                }
                let copy = match slot {
                    KeyEntry::Member(r) => {
                        members.push(Member::alive(MemberId {
                            key: *key,
                            generation: r.generation,
                        }));
                        KeyEntry::Member(r.clone())
                    }
                    KeyEntry::Revoked(r) => KeyEntry::Revoked(r.clone()),
                };
                registry.slots.insert(*key, copy);
            }
        }
        if self
            .swim
            .foca
            .apply_many(members.into_iter(), false, &mut self.swim.io)
            .is_err()
        {
            self.counters.foca_errors += 1;
        }
        self.sync.synced = true;
        self.pump(now, None);
    }

    // -------------------------------------------------------------------- time

    /// A fresh wall-clock reading from the io layer: `unix_nanos` at `now`. Later dates follow
    /// it, so a clock that NTP stepped is followed within a tick.
    pub fn set_wall_clock(&mut self, now: Instant, unix_nanos: u64) {
        self.clock = WallClock::new(now, unix_nanos);
        self.observe(now);
    }

    fn observe(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        let unix = self.unix_at(self.last_now);
        lock(&self.registry).now_unix = unix;
    }

    fn unix_at(&self, now: Instant) -> u64 {
        self.clock.unix_secs(now)
    }

    fn queue(&mut self, to: PublicKey, payload: Vec<u8>) {
        if lock(&self.registry).is_revoked(&to) {
            self.counters.tx_to_revoked += 1;
            return;
        }
        self.counters.tx_messages += 1;
        self.counters.tx_bytes += payload.len() as u64;
        self.outbox.push_back((to, payload));
    }

    fn refresh_report(&mut self, key: PublicKey) {
        if key == self.me.key {
            return;
        }
        let active = self.live.get(&key).is_some_and(|l| l.active);
        let up = {
            let registry = lock(&self.registry);
            match registry.record(&key) {
                Some(stored) if active => stored.decode().map(|(c, r)| (stored.version, c, r)),
                _ => None,
            }
        };
        match (up, self.reported.get(&key).copied()) {
            (Some((version, certificate, record)), reported) if reported != Some(version) => {
                self.reported.insert(key, version);
                debug!(%key, name = %certificate.name, version, "membership: member up");
                self.events.push_back(MembershipEvent::MemberUp {
                    key,
                    name: certificate.name.clone(),
                    endpoints: record.endpoints,
                    certificate,
                });
            }
            (None, Some(_)) => {
                self.reported.remove(&key);
                debug!(%key, "membership: member down");
                self.events.push_back(MembershipEvent::MemberDown { key });
            }
            _ => {}
        }
    }

    // -------------------------------------------------------------------- own record

    /// The next record gets a higher version, never above [`MAX_RECORD_VERSION`] (which no
    /// node reaches: versions start at Unix seconds).
    fn bump_version(&mut self) {
        self.version = self.version.saturating_add(1).min(MAX_RECORD_VERSION);
    }

    fn publish_own_record(&mut self) {
        let record = match MemberRecord::sign(
            &self.signing_key,
            &self.network,
            self.me.key,
            self.me.generation,
            self.version,
            self.certificate.issued_at,
            &self.endpoints,
        ) {
            Ok(record) => record,
            Err(e) => {
                warn!(error = %e, "membership: cannot sign own record");
                return;
            }
        };
        let item = member_item(&self.certificate, &record);
        let record_at = item.len() - record.encode().len();
        lock(&self.registry).store_own(item.clone(), record_at, &self.certificate);
        self.spread(&item);
    }

    fn respread_own_record(&mut self) {
        let item = lock(&self.registry)
            .record(&self.me.key)
            .map(|r| r.item.clone());
        if let Some(item) = item {
            self.spread(&item);
        }
    }

    /// Puts a stored item into foca's broadcast backlog.
    fn spread(&mut self, item: &[u8]) {
        if self.swim.foca.add_broadcast(item).is_err() {
            self.counters.foca_errors += 1;
        }
    }

    fn check_revocation(&mut self, revocation: &Revocation) -> Result<(), MembershipError> {
        let now_unix = lock(&self.registry).now_unix;
        let result = if revocation.network != self.network {
            Err(MembershipError::WrongNetwork)
        } else if !revocation.verify(&self.network) {
            Err(MembershipError::BadSignature)
        } else if revocation.expires_at <= now_unix {
            Err(MembershipError::Expired)
        } else {
            Ok(())
        };
        if result.is_err() {
            self.counters.revocation_refused_local += 1;
        }
        result
    }

    /// A revocation from disk: applied and spread again, without an event (the io layer has
    /// it already).
    fn load_revocation(&mut self, revocation: &Revocation) {
        if self.check_revocation(revocation).is_err() {
            warn!(key = %revocation.static_key, "membership: ignoring an invalid stored revocation");
            return;
        }
        let item = revocation_item(revocation);
        let mut registry = lock(&self.registry);
        if registry.receive(&item, ItemSource::Gossip).is_some() {
            registry.accepted.clear();
            drop(registry);
            self.spread(&item);
        }
    }

    // -------------------------------------------------------------------- housekeeping

    /// Members with a verified record that foca considers alive.
    fn verified_alive(&self) -> Vec<PublicKey> {
        let registry = lock(&self.registry);
        self.live
            .iter()
            .filter(|(key, l)| l.active && registry.record(key).is_some())
            .map(|(key, _)| *key)
            .collect()
    }

    fn pick(&mut self, candidates: &[PublicKey]) -> Option<PublicKey> {
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[self.rng.next_u32() as usize % candidates.len()])
    }

    /// A random member with a verified record that foca considers alive.
    fn random_member(&mut self) -> Option<PublicKey> {
        let candidates = self.verified_alive();
        self.pick(&candidates)
    }

    fn tick(&mut self, now: Instant) {
        self.rearm_suspicions(now);
        let now_unix = lock(&self.registry).now_unix;
        self.swim.tune(self.swim.foca.num_members() + 1);
        self.check_ranges();
        self.renew(now, now_unix);
        self.send_wants(now);
        self.drive_sync(now);
        self.sweep(now, now_unix);
    }

    fn sweep(&mut self, now: Instant, now_unix: u64) {
        let mut dropped = Vec::new();
        {
            let mut registry = lock(&self.registry);
            let own = self.me.key;
            let mut expired_records = 0;
            let mut expired_revocations = 0;
            registry.slots.retain(|key, slot| match slot {
                KeyEntry::Member(r) if *key != own && r.cert_expires_at <= now_unix => {
                    expired_records += 1;
                    dropped.push((*key, r.grant.map(|g| (g.range, r.cert_expires_at))));
                    false
                }
                KeyEntry::Revoked(r) if r.expires_at <= now_unix => {
                    expired_revocations += 1;
                    false
                }
                _ => true,
            });
            self.counters.records_expired += expired_records;
            self.counters.revocations_expired += expired_revocations;
            registry.forgotten.retain(|_, (_, until)| *until > now_unix);
            for (range, expired_at) in dropped.iter().filter_map(|(_, released)| *released) {
                registry.release_range(range, expired_at);
            }
            registry
                .released_ranges
                .retain(|(_, free_at)| *free_at > now_unix);
        }
        for key in dropped.into_iter().map(|(key, _)| key) {
            self.refresh_report(key);
            // Still alive: its renewed record is somewhere; ask for it.
            if self.live.get(&key).is_some_and(|l| l.active) {
                self.want(now, key, None);
            }
        }
    }
}
