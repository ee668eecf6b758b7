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
//! sender identity inside it is the authenticated session key it arrived on; a revoked key's
//! record is dropped and refused, and its packets ignored, for as long as the revocation is
//! kept; every payload dropped or item refused is counted in [`MembershipCounters`]; no input
//! panics; every payload this module emits is at most [`MAX_PAYLOAD`] bytes.

mod codec;
mod record;
mod registry;
#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foca::{
    Config, Foca, Member, Notification, OwnedNotification, PeriodicParams, Runtime, State, Timer,
};
use meshd_crypto::{Certificate, CoreRng, NetworkId, NetworkSecret, PublicKey, SigningKey};
use rand_core::RngCore as _;
use tracing::{debug, info, warn};

pub use codec::{CodecError, FocaRng, MemberId, WireCodec, MEMBER_ID_LEN, MEMBER_UPDATE_LEN};
pub use record::{
    member_item, revocation_item, Item, MemberRecord, RecordError, RecordView, Revocation,
    RevocationView, FORMAT_VERSION, ITEM_MEMBER, ITEM_REVOCATION, MAX_ENDPOINTS, RECORD_LABEL,
    RECORD_MAX_LEN, RECORD_MIN_LEN, REVOCATION_LABEL,
};
pub use registry::ItemKey;

use registry::{lock, Accepted, Handler, Origin, Registry, Slot};

// ------------------------------------------------------------------------------ wire constants

/// Largest membership payload this module sends or accepts, subtype byte included. Chosen so
/// that payload, data header and tag fit one datagram on a 1280-byte IPv6 path.
pub const MAX_PAYLOAD: usize = 1200;
/// foca's `max_packet_size`: a foca packet plus its subtype byte is one payload.
pub const FOCA_MAX_PACKET: usize = MAX_PAYLOAD - 1;

/// Subtype byte 0 of every membership payload: a foca packet follows.
pub const SUBTYPE_FOCA: u8 = 1;
/// Ask an admin for a fresh certificate (no body).
pub const SUBTYPE_RENEW_REQUEST: u8 = 2;
/// An admin's answer: one encoded certificate.
pub const SUBTYPE_RENEW_RESPONSE: u8 = 3;
/// Ask for a page run of the member table: flags, cursor key, page count.
pub const SUBTYPE_SYNC_REQUEST: u8 = 4;
/// A page of items: flags, cursor key, length-prefixed items.
pub const SUBTYPE_RECORDS: u8 = 5;
/// Ask for the items of up to [`WANT_MAX_KEYS`] keys.
pub const SUBTYPE_WANT: u8 = 6;
/// A table digest: [`DIGEST_BUCKETS`] sums, u64 LE.
pub const SUBTYPE_DIGEST: u8 = 7;
/// Index entries (key, version u64 LE) of the buckets whose digests differed.
pub const SUBTYPE_INDEX: u8 = 8;
/// Subtype and the bucket sums.
pub const DIGEST_LEN: usize = 1 + DIGEST_BUCKETS * 8;
/// One index entry: key, version (`u64::MAX` for a revocation).
pub const INDEX_ENTRY_LEN: usize = 32 + 8;
/// Index entries per page.
pub const INDEX_MAX_ENTRIES: usize = (MAX_PAYLOAD - 1) / INDEX_ENTRY_LEN;

/// Page flag: the page continues a run that starts at the beginning of the table.
pub const PAGE_FROM_START: u8 = 0x01;
/// Page flag: nothing follows this page in the table.
pub const PAGE_END: u8 = 0x02;
/// Page flag: the last page sent for one sync request.
pub const PAGE_LAST_IN_BURST: u8 = 0x04;
/// Page flag: not part of a sync run (an answer to a want, or a pushed record).
pub const PAGE_UNSOLICITED: u8 = 0x08;
/// Subtype, flags, cursor.
pub const PAGE_HEADER_LEN: usize = 1 + 1 + 32;
/// Subtype, flags, cursor, page count.
pub const SYNC_REQUEST_LEN: usize = 1 + 1 + 32 + 1;
/// Keys per want message.
pub const WANT_MAX_KEYS: usize = 32;

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
/// Buckets of a table digest (by the top 7 bits of the key's first byte).
pub const DIGEST_BUCKETS: usize = 128;
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
pub struct MemberStatus {
    pub name: String,
    pub key: PublicKey,
    /// Unix seconds (for a revoked key: when the revocation expires).
    pub cert_expires_at: u64,
    pub state: MemberState,
    pub endpoints: Vec<SocketAddr>,
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

macro_rules! membership_counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Monotonic counters of the membership layer, one per event or drop reason.
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        pub struct MembershipCounters {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl MembershipCounters {
            /// Every counter with its stable name, in declaration order.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
                [$((stringify!($name), self.$name)),*].into_iter()
            }
        }
    };
}

membership_counters! {
    /// Membership payloads received.
    rx_messages,
    /// Bytes of membership payloads received.
    rx_bytes,
    /// Payloads that were empty or longer than [`MAX_PAYLOAD`].
    rx_bad_length,
    /// Payloads with a subtype this build does not know.
    rx_unknown_subtype,
    /// Payloads from a revoked key.
    rx_from_revoked,
    /// foca packets whose header did not decode.
    rx_foca_malformed,
    /// foca packets whose sender identity is not the session's key.
    rx_impersonation,
    /// foca packets addressed to another identity.
    rx_misaddressed,
    /// foca packets foca itself refused (framing, stale sender, ...).
    rx_foca_rejected,
    /// Gossip items that did not parse.
    item_malformed,
    /// Records verified and stored.
    record_accepted,
    /// Records not newer than the one held.
    record_stale,
    /// Records for a revoked key.
    record_revoked,
    /// Records whose certificate names another key.
    record_key_mismatch,
    /// Records whose certificate belongs to another network.
    record_wrong_network,
    /// Records whose certificate has expired.
    record_cert_expired,
    /// Records whose certificate failed verification (signature, validity window).
    record_bad_certificate,
    /// Records signed for another certificate of the key than the one they came with.
    record_cert_mismatch,
    /// Records whose signature did not verify with the certificate's signing key.
    record_bad_signature,
    /// Valid records of our own key newer than ours (an earlier run): we re-sign above them.
    record_own_newer,
    /// Revocations verified and stored.
    revocation_accepted,
    /// Revocations already known.
    revocation_stale,
    /// Revocations for another network.
    revocation_wrong_network,
    /// Revocations past their expiry.
    revocation_expired,
    /// Revocations whose network signature did not verify.
    revocation_bad_signature,
    /// Revocations from the config or `revoke` that did not verify.
    revocation_refused_local,
    /// Records dropped because their certificate expired while held.
    records_expired,
    /// Revocations dropped at their expiry.
    revocations_expired,
    /// Members forgotten after being down for [`REMOVE_DOWN_AFTER`].
    members_forgotten,
    /// Record pages that did not parse.
    page_malformed,
    /// Sync pages that did not continue the run in progress (items still taken).
    page_out_of_run,
    /// Sync requests sent.
    sync_requests_sent,
    /// Sync requests that did not parse.
    sync_request_malformed,
    /// Syncs that reached the end of a member's table.
    syncs_completed,
    /// Record pages sent (syncs and wants).
    pages_sent,
    /// Table digests sent (anti-entropy).
    digests_sent,
    /// Digests received that matched this node's table.
    digests_matched,
    /// Digests that did not parse.
    digest_malformed,
    /// Index pages sent for differing digest buckets.
    index_pages_sent,
    /// Index pages that did not parse.
    index_malformed,
    /// Records asked for because an index showed a newer or missing one.
    index_keys_wanted,
    /// Revocations sent to a member whose index showed it had missed them.
    revocations_pushed,
    /// Pages not sent because the page rate was used up.
    pages_throttled,
    /// Items too large for a page, not sent.
    items_oversize,
    /// Want messages sent.
    wants_sent,
    /// Want messages that did not parse.
    want_malformed,
    /// Keys asked for in wants that this node had no item for.
    want_keys_unknown,
    /// Wanted records given up on: asked [`WANT_ATTEMPTS_UNCONFIRMED`] times for a key foca
    /// does not consider alive.
    wants_abandoned,
    /// Keys not wanted because [`MAX_WANTED`] were wanted already.
    wants_dropped,
    /// foca member updates about keys without a verified record here, taken out of the packet
    /// (their records are asked for).
    updates_unverified,
    /// foca member updates about revoked keys, taken out of the packet.
    updates_revoked,
    /// Renewal requests sent.
    renew_requests_sent,
    /// Renewal requests that did not parse.
    renew_request_malformed,
    /// Renewal requests received by a node without the network key.
    renew_not_admin,
    /// Renewal requests from a member without a verified record here.
    renew_unknown_member,
    /// Renewal requests from a member whose certificate has more than half its life left.
    renew_too_early,
    /// Renewal requests refused because the renewal rate was used up.
    renew_throttled,
    /// Certificates issued for renewal requests.
    renewals_issued,
    /// Renewal answers that were not a valid, newer certificate for this node.
    renew_response_bad,
    /// Times this node's certificate was renewed (by an admin or, as admin, locally).
    certificates_renewed,
    /// Membership payloads queued for sending.
    tx_messages,
    /// Bytes of membership payloads queued for sending.
    tx_bytes,
    /// Payloads foca addressed to a revoked key, not sent.
    tx_to_revoked,
    /// Errors foca returned from timers or sends (not caused by received bytes).
    foca_errors,
}

// ------------------------------------------------------------------------------ internals

/// Capacity the output queues keep once drained.
const QUEUE_KEEP: usize = 64;

type Swim = Foca<MemberId, WireCodec, FocaRng, Handler>;

/// foca's runtime: collects what one foca call wants done.
#[derive(Default)]
struct FocaIo {
    sends: Vec<(MemberId, Vec<u8>)>,
    timers: Vec<(Duration, Timer<MemberId>)>,
    notes: Vec<OwnedNotification<MemberId>>,
}

impl Runtime<MemberId> for FocaIo {
    fn notify(&mut self, notification: Notification<'_, MemberId>) {
        self.notes.push(notification.to_owned());
    }

    fn send_to(&mut self, to: MemberId, data: &[u8]) {
        let mut payload = Vec::with_capacity(1 + data.len());
        payload.push(SUBTYPE_FOCA);
        payload.extend_from_slice(data);
        self.sends.push((to, payload));
    }

    fn submit_after(&mut self, event: Timer<MemberId>, after: Duration) {
        self.timers.push((after, event));
    }
}

/// A foca timer waiting for its instant (min-heap by deadline, then submission order).
struct Scheduled {
    at: Instant,
    seq: u64,
    timer: Timer<MemberId>,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// foca's latest word on a key.
#[derive(Debug, Clone, Copy)]
struct Live {
    generation: u32,
    active: bool,
    /// This node announced itself to the member since foca last saw it come up.
    announced: bool,
}

struct Want {
    due: Instant,
    attempts: u8,
    /// The authenticated member whose packet named the key first.
    hint: Option<PublicKey>,
}

/// Where a run of sync pages starts, and whether the table goes on after the items sent.
struct PageRun {
    after: Option<PublicKey>,
    more: bool,
}

struct SyncRun {
    peer: PublicKey,
    /// Last key received in order; `None` before the first page.
    cursor: Option<PublicKey>,
    /// Pages received ahead of the cursor: the key each continues after, its last key, flags.
    pending: BTreeMap<Option<PublicKey>, (Option<PublicKey>, u8)>,
    deadline: Instant,
    attempts: u8,
}

/// A token bucket in whole tokens, refilled from elapsed time.
struct Budget {
    tokens: u32,
    rate: u32,
    burst: u32,
    refilled: Instant,
}

impl Budget {
    fn new(now: Instant, rate: u32, burst: u32) -> Budget {
        Budget {
            tokens: burst,
            rate,
            burst,
            refilled: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled);
        let earned = (elapsed.as_millis() as u64 * u64::from(self.rate) / 1000) as u32;
        if earned > 0 {
            self.tokens = self.tokens.saturating_add(earned).min(self.burst);
            self.refilled = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// The foca configuration for a mesh of `members` nodes: fixed timers, suspicion and
/// retransmissions growing with log10 of the size (as memberlist does).
pub fn foca_config(members: usize) -> Config {
    let scale = log10_scale(members);
    Config {
        probe_period: PROBE_PERIOD,
        probe_rtt: PROBE_RTT,
        num_indirect_probes: NonZeroUsize::new(INDIRECT_PROBES).unwrap_or(NonZeroUsize::MIN),
        max_transmissions: NonZeroU8::new((4 * scale).clamp(4, 255) as u8)
            .unwrap_or(NonZeroU8::MIN),
        suspect_to_down_after: PROBE_PERIOD * SUSPICION_MULTIPLIER * scale,
        remove_down_after: Some(REMOVE_DOWN_AFTER),
        max_packet_size: NonZeroUsize::new(FOCA_MAX_PACKET).unwrap_or(NonZeroUsize::MIN),
        notify_down_members: true,
        periodic_announce: Some(PeriodicParams {
            frequency: ANNOUNCE_INTERVAL,
            num_members: NonZeroUsize::MIN,
        }),
        periodic_announce_to_down_members: Some(PeriodicParams {
            frequency: ANNOUNCE_DOWN_INTERVAL,
            num_members: NonZeroUsize::new(2).unwrap_or(NonZeroUsize::MIN),
        }),
        periodic_gossip: Some(PeriodicParams {
            frequency: GOSSIP_INTERVAL,
            num_members: NonZeroUsize::new(GOSSIP_FANOUT).unwrap_or(NonZeroUsize::MIN),
        }),
    }
}

/// The token a foca timer carries, if it carries one.
fn token_of(timer: &Timer<MemberId>) -> Option<foca::TimerToken> {
    match timer {
        Timer::ProbeRandomMember(token)
        | Timer::PeriodicAnnounce(token)
        | Timer::PeriodicAnnounceDown(token)
        | Timer::PeriodicGossip(token)
        | Timer::SendIndirectProbe { token, .. }
        | Timer::ChangeSuspectToDown { token, .. } => Some(*token),
        Timer::RemoveDown(_) => None,
    }
}

/// `max(1, floor(log10(members)))`: 1 below 100 members, 2 below 1,000, 3 below 10,000, ...
fn log10_scale(members: usize) -> u32 {
    members.max(1).ilog10().max(1)
}

/// The SWIM membership state machine of one node. See the module documentation.
pub struct Membership {
    foca: Swim,
    io: FocaIo,
    registry: Arc<Mutex<Registry>>,
    network: NetworkId,
    me: MemberId,
    certificate: Certificate,
    signing_key: SigningKey,
    network_secret: Option<NetworkSecret>,
    certificate_lifetime: Duration,
    endpoints: Vec<SocketAddr>,
    version: u64,
    rng: CoreRng,
    timers: BinaryHeap<Scheduled>,
    timer_seq: u64,
    /// The timer token foca stamps on its timers now (it changes with every identity change and
    /// makes foca ignore timers stamped before), and the token suspicions were last re-armed for.
    foca_token: Option<foca::TimerToken>,
    suspicions_armed_for: Option<foca::TimerToken>,
    outbox: VecDeque<(PublicKey, Vec<u8>)>,
    events: VecDeque<MembershipEvent>,
    live: BTreeMap<PublicKey, Live>,
    /// Members reported up, with the record version reported.
    reported: BTreeMap<PublicKey, u64>,
    wanted: BTreeMap<PublicKey, Want>,
    sync: Option<SyncRun>,
    synced: bool,
    next_anti_entropy: Instant,
    renew_next_attempt: Option<Instant>,
    page_budget: Budget,
    renew_budget: Budget,
    next_tick: Instant,
    tuned_scale: u32,
    clock_base: (Instant, u64),
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
        let foca = Foca::with_custom_broadcast(
            me,
            foca_config(1),
            FocaRng(rng.fork()),
            WireCodec,
            Handler {
                registry: Arc::clone(&registry),
            },
        );
        let mut endpoints = cfg.endpoints;
        endpoints.truncate(MAX_ENDPOINTS);
        let mut membership = Membership {
            foca,
            io: FocaIo::default(),
            registry,
            network: cfg.network,
            me,
            certificate: cfg.certificate,
            signing_key: cfg.signing_key,
            network_secret: cfg.network_secret,
            certificate_lifetime: cfg.certificate_lifetime,
            endpoints,
            version: cfg.unix_secs_at_now,
            rng,
            timers: BinaryHeap::new(),
            timer_seq: 0,
            foca_token: None,
            suspicions_armed_for: None,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            live: BTreeMap::new(),
            reported: BTreeMap::new(),
            wanted: BTreeMap::new(),
            sync: None,
            synced: false,
            next_anti_entropy: now + ANTI_ENTROPY_INTERVAL,
            renew_next_attempt: None,
            page_budget: Budget::new(now, PAGE_RATE, PAGE_BURST),
            renew_budget: Budget::new(now, RENEW_RATE, RENEW_BURST),
            next_tick: now,
            tuned_scale: log10_scale(1),
            clock_base: (now, cfg.unix_secs_at_now),
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
        lock(&self.registry).counters.clone()
    }

    pub fn is_revoked(&self, key: &PublicKey) -> bool {
        lock(&self.registry).is_revoked(key)
    }

    /// Every member with a verified record (this node included) and every revoked key, in key
    /// order.
    pub fn members(&self, _now: Instant) -> Vec<MemberStatus> {
        let states: BTreeMap<PublicKey, State> = self
            .foca
            .iter_membership_state()
            .map(|m| (m.id().key, m.state()))
            .collect();
        let registry = lock(&self.registry);
        let mut out = Vec::with_capacity(registry.slots.len());
        for (key, slot) in &registry.slots {
            match slot {
                Slot::Member(stored) => {
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
                    out.push(MemberStatus {
                        name: certificate.name.clone(),
                        key: *key,
                        cert_expires_at: certificate.expires_at,
                        state,
                        endpoints: record.endpoints,
                    });
                }
                Slot::Revoked(stored) => {
                    let Some(revocation) = stored.decode() else {
                        continue;
                    };
                    out.push(MemberStatus {
                        name: revocation.name,
                        key: *key,
                        cert_expires_at: revocation.expires_at,
                        state: MemberState::Revoked,
                        endpoints: Vec::new(),
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
        let foca_next = self.timers.peek().map(|s| s.at);
        Some(foca_next.map_or(self.next_tick, |t| t.min(self.next_tick)))
    }

    // -------------------------------------------------------------------- inputs

    /// A membership payload received inside an authenticated session from `from`.
    pub fn handle_message(&mut self, now: Instant, from: PublicKey, payload: &[u8]) {
        self.observe(now);
        {
            let mut registry = lock(&self.registry);
            registry.counters.rx_messages += 1;
            registry.counters.rx_bytes += payload.len() as u64;
            if payload.is_empty() || payload.len() > MAX_PAYLOAD {
                registry.counters.rx_bad_length += 1;
                return;
            }
            if registry.is_revoked(&from) {
                registry.counters.rx_from_revoked += 1;
                return;
            }
        }
        let body = &payload[1..];
        match payload[0] {
            SUBTYPE_FOCA => self.on_foca_packet(now, from, body),
            SUBTYPE_RENEW_REQUEST => self.on_renew_request(now, from, body),
            SUBTYPE_RENEW_RESPONSE => self.on_renew_response(body),
            SUBTYPE_SYNC_REQUEST => self.on_sync_request(now, from, body),
            SUBTYPE_RECORDS => self.on_records(now, from, body),
            SUBTYPE_WANT => self.on_want(now, from, body),
            SUBTYPE_DIGEST => self.on_digest(now, from, body),
            SUBTYPE_INDEX => self.on_index(now, from, body),
            _ => lock(&self.registry).counters.rx_unknown_subtype += 1,
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
            Some(l) if l.active && l.announced && self.synced => return,
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
            .foca
            .announce(MemberId { key, generation }, &mut self.io)
            .is_err()
        {
            lock(&self.registry).counters.foca_errors += 1;
        }
        if !self.synced && self.sync.is_none() {
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
        while self.timers.peek().is_some_and(|s| s.at <= now) {
            let Some(scheduled) = self.timers.pop() else {
                break;
            };
            let forget = match &scheduled.timer {
                Timer::RemoveDown(id) => Some(*id),
                _ => None,
            };
            if self
                .foca
                .handle_timer(scheduled.timer, &mut self.io)
                .is_err()
            {
                lock(&self.registry).counters.foca_errors += 1;
            }
            if let Some(id) = forget {
                self.maybe_forget(id);
            }
            self.pump(now, None);
        }
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
            .receive(&item, Origin::Gossip)
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
        self.version = self.version.saturating_add(1);
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
                    Slot::Member(r) => {
                        members.push(Member::alive(MemberId {
                            key: *key,
                            generation: r.generation,
                        }));
                        Slot::Member(registry::StoredRecord {
                            item: r.item.clone(),
                            record_at: r.record_at,
                            version: r.version,
                            generation: r.generation,
                            cert_expires_at: r.cert_expires_at,
                            admin: r.admin,
                        })
                    }
                    Slot::Revoked(r) => Slot::Revoked(registry::StoredRevocation {
                        item: r.item.clone(),
                        expires_at: r.expires_at,
                    }),
                };
                registry.slots.insert(*key, copy);
            }
        }
        if self
            .foca
            .apply_many(members.into_iter(), false, &mut self.io)
            .is_err()
        {
            lock(&self.registry).counters.foca_errors += 1;
        }
        self.synced = true;
        self.pump(now, None);
    }

    // -------------------------------------------------------------------- time

    fn observe(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
        let unix = self.unix_at(self.last_now);
        lock(&self.registry).now_unix = unix;
    }

    fn unix_at(&self, now: Instant) -> u64 {
        let (base, base_unix) = self.clock_base;
        base_unix.saturating_add(now.saturating_duration_since(base).as_secs())
    }

    // -------------------------------------------------------------------- foca plumbing

    /// foca ignores timers stamped with an older token, and changing identity (a rejoin after
    /// this node was declared down, as after a partition) changes the token. A member suspected
    /// before that would stay suspect for good, its suspect-to-down timer ignored, unless it
    /// happens to refute. So after every token change, every suspect gets a fresh timer: it is
    /// declared down in time unless it refutes, as SWIM intends.
    fn rearm_suspicions(&mut self, now: Instant) {
        let Some(token) = self.foca_token else { return };
        if self.suspicions_armed_for == Some(token) {
            return;
        }
        self.suspicions_armed_for = Some(token);
        let after = foca_config(self.foca.num_members() + 1).suspect_to_down_after;
        let suspects: Vec<(MemberId, foca::Incarnation)> = self
            .foca
            .iter_members()
            .filter(|m| m.state() == State::Suspect)
            .map(|m| (*m.id(), m.incarnation()))
            .collect();
        for (member_id, incarnation) in suspects {
            self.timer_seq += 1;
            self.timers.push(Scheduled {
                at: now + after,
                seq: self.timer_seq,
                timer: Timer::ChangeSuspectToDown {
                    member_id,
                    incarnation,
                    token,
                },
            });
        }
    }

    /// Moves what foca asked for into the queues and applies everything foca and the registry
    /// reported, until both are quiet.
    fn pump(&mut self, now: Instant, hint: Option<PublicKey>) {
        loop {
            let sends = std::mem::take(&mut self.io.sends);
            for (to, payload) in sends {
                self.queue(to.key, payload);
            }
            for (after, timer) in self.io.timers.drain(..) {
                if let Some(token) = token_of(&timer) {
                    self.foca_token = Some(token);
                }
                self.timer_seq += 1;
                self.timers.push(Scheduled {
                    at: now + after,
                    seq: self.timer_seq,
                    timer,
                });
            }
            let notes = std::mem::take(&mut self.io.notes);
            let accepted = std::mem::take(&mut lock(&self.registry).accepted);
            if notes.is_empty() && accepted.is_empty() {
                break;
            }
            for note in notes {
                self.on_notification(now, note, hint);
            }
            for item in accepted {
                self.on_accepted(item);
            }
        }
    }

    fn queue(&mut self, to: PublicKey, payload: Vec<u8>) {
        let mut registry = lock(&self.registry);
        if registry.is_revoked(&to) {
            registry.counters.tx_to_revoked += 1;
            return;
        }
        registry.counters.tx_messages += 1;
        registry.counters.tx_bytes += payload.len() as u64;
        drop(registry);
        self.outbox.push_back((to, payload));
    }

    fn on_notification(
        &mut self,
        now: Instant,
        note: OwnedNotification<MemberId>,
        hint: Option<PublicKey>,
    ) {
        match note {
            OwnedNotification::MemberUp(id) => {
                if id.key == self.me.key {
                    return;
                }
                let live = self.live.entry(id.key).or_insert(Live {
                    generation: id.generation,
                    active: true,
                    announced: false,
                });
                live.generation = id.generation;
                live.active = true;
                let (revoked, has_record) = {
                    let registry = lock(&self.registry);
                    (
                        registry.is_revoked(&id.key),
                        registry.record(&id.key).is_some(),
                    )
                };
                if revoked {
                    self.foca_apply(Member::down(id), true);
                    return;
                }
                if !has_record {
                    self.want(now, id.key, hint);
                }
                self.refresh_report(id.key);
            }
            OwnedNotification::MemberDown(id) => {
                if let Some(live) = self.live.get_mut(&id.key) {
                    if live.generation == id.generation {
                        live.active = false;
                        live.announced = false;
                    }
                }
                self.wanted.remove(&id.key);
                self.refresh_report(id.key);
            }
            OwnedNotification::Rename(_, new) => {
                if let Some(live) = self.live.get_mut(&new.key) {
                    live.generation = new.generation;
                }
            }
            OwnedNotification::Rejoin(new) => {
                info!(
                    generation = new.generation,
                    "membership: declared down; rejoined with a new generation"
                );
                self.me = new;
                self.version = self.version.saturating_add(1);
                self.publish_own_record();
            }
            OwnedNotification::Idle => {
                // Nobody is left: pull the table again from the next member met.
                self.synced = false;
            }
            OwnedNotification::Defunct => {
                warn!("membership: declared down and out of generations; no longer taking part");
            }
            OwnedNotification::Active => {}
        }
    }

    fn on_accepted(&mut self, accepted: Accepted) {
        match accepted {
            Accepted::Record { key, generation } => {
                self.wanted.remove(&key);
                self.foca_apply(Member::alive(MemberId { key, generation }), false);
                self.refresh_report(key);
            }
            Accepted::Revocation(revocation) => {
                let key = revocation.static_key;
                self.wanted.remove(&key);
                warn!(%key, name = %revocation.name, "membership: learned a revocation");
                self.events
                    .push_back(MembershipEvent::Revoked { revocation });
                if let Some(live) = self.live.get(&key).copied() {
                    self.foca_apply(
                        Member::down(MemberId {
                            key,
                            generation: live.generation,
                        }),
                        true,
                    );
                }
                self.refresh_report(key);
            }
            Accepted::OwnRecordNewer {
                generation,
                version,
            } => {
                self.version = self.version.max(version.saturating_add(1));
                if generation >= self.me.generation {
                    let renewed = MemberId {
                        key: self.me.key,
                        generation: generation.saturating_add(1),
                    };
                    if self.foca.change_identity(renewed, &mut self.io).is_ok() {
                        self.me = renewed;
                    } else {
                        lock(&self.registry).counters.foca_errors += 1;
                    }
                }
                self.publish_own_record();
            }
        }
    }

    fn foca_apply(&mut self, member: Member<MemberId>, broadcast: bool) {
        if self
            .foca
            .apply_many(std::iter::once(member), broadcast, &mut self.io)
            .is_err()
        {
            lock(&self.registry).counters.foca_errors += 1;
        }
    }

    /// Emits MemberUp/MemberDown so that the reported set is exactly the members with a
    /// verified record that foca considers alive.
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

    fn maybe_forget(&mut self, id: MemberId) {
        let down = self
            .live
            .get(&id.key)
            .is_some_and(|l| l.generation == id.generation && !l.active);
        if !down {
            return;
        }
        self.live.remove(&id.key);
        let had_record = {
            let mut registry = lock(&self.registry);
            let version = registry.record(&id.key).map(|r| r.version);
            if let Some(version) = version {
                registry.slots.remove(&id.key);
                let until = registry.now_unix.saturating_add(FORGOTTEN_KEPT.as_secs());
                registry.forgotten.insert(id.key, (version, until));
                registry.counters.members_forgotten += 1;
            }
            version.is_some()
        };
        self.refresh_report(id.key);
        if had_record {
            self.events
                .push_back(MembershipEvent::MemberForgotten { key: id.key });
        }
    }

    // -------------------------------------------------------------------- own record

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
        if self.foca.add_broadcast(item).is_err() {
            lock(&self.registry).counters.foca_errors += 1;
        }
    }

    fn check_revocation(&self, revocation: &Revocation) -> Result<(), MembershipError> {
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
            lock(&self.registry).counters.revocation_refused_local += 1;
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
        if registry.receive(&item, Origin::Gossip).is_some() {
            registry.accepted.clear();
            drop(registry);
            self.spread(&item);
        }
    }

    // -------------------------------------------------------------------- foca packets

    fn on_foca_packet(&mut self, now: Instant, from: PublicKey, body: &[u8]) {
        let header = match WireCodec::peek_header(body) {
            Ok(header) => header,
            Err(_) => {
                lock(&self.registry).counters.rx_foca_malformed += 1;
                return;
            }
        };
        if header.src.key != from {
            lock(&self.registry).counters.rx_impersonation += 1;
            return;
        }
        if header.dst.key != self.me.key {
            lock(&self.registry).counters.rx_misaddressed += 1;
            return;
        }
        let filtered = self.filter_updates(now, from, &header, body);
        let data = filtered.as_deref().unwrap_or(body);
        if self.foca.handle_data(data, &mut self.io).is_err() {
            lock(&self.registry).counters.rx_foca_rejected += 1;
        }
    }

    /// foca learns about a member only from its verified record here, or from the member
    /// itself talking to us: updates about keys without a record are taken out of the packet
    /// (and their records asked for), so foca never probes a member the node has no endpoint
    /// for. Returns the rewritten packet, or `None` to hand foca the packet as it is (also when
    /// its framing is broken: foca refuses and counts it).
    fn filter_updates(
        &mut self,
        now: Instant,
        from: PublicKey,
        header: &foca::Header<MemberId>,
        body: &[u8],
    ) -> Option<Vec<u8>> {
        if matches!(
            header.message,
            foca::Message::Announce | foca::Message::TurnUndead | foca::Message::Broadcast
        ) {
            return None;
        }
        let at = codec::header_len(&header.message);
        let rest = body.get(at..)?;
        let count = match rest {
            [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
            _ => return None,
        };
        let updates = rest.get(2..2 + count * MEMBER_UPDATE_LEN)?;
        let mut keep = Vec::with_capacity(count);
        let mut unknown = Vec::new();
        {
            let mut registry = lock(&self.registry);
            for update in updates.chunks_exact(MEMBER_UPDATE_LEN) {
                let mut raw = [0u8; 32];
                raw.copy_from_slice(&update[..32]);
                let key = PublicKey::from_bytes(raw);
                if key == self.me.key
                    || registry.record(&key).is_some()
                    || self.live.contains_key(&key)
                {
                    keep.push(update);
                } else if registry.is_revoked(&key) {
                    registry.counters.updates_revoked += 1;
                } else {
                    registry.counters.updates_unverified += 1;
                    unknown.push(key);
                }
            }
        }
        for key in unknown {
            self.want(now, key, Some(from));
        }
        if keep.len() == count {
            return None;
        }
        let mut out = Vec::with_capacity(body.len());
        out.extend_from_slice(&body[..at]);
        out.extend_from_slice(&(keep.len() as u16).to_be_bytes());
        for update in keep {
            out.extend_from_slice(update);
        }
        out.extend_from_slice(&rest[2 + count * MEMBER_UPDATE_LEN..]);
        Some(out)
    }

    /// Notes that this node lacks `key`'s record; `hint` is the member that mentioned it.
    fn want(&mut self, now: Instant, key: PublicKey, hint: Option<PublicKey>) {
        if self.wanted.len() >= MAX_WANTED && !self.wanted.contains_key(&key) {
            lock(&self.registry).counters.wants_dropped += 1;
            return;
        }
        self.wanted.entry(key).or_insert(Want {
            due: now + WANT_DELAY,
            attempts: 0,
            hint,
        });
    }

    // -------------------------------------------------------------------- record pages

    /// Sends `items` (in key order for a sync run) as pages of at most [`MAX_PAYLOAD`] bytes,
    /// at most `max_pages` of them, as far as the page budget allows. A sync run's pages each
    /// carry the key they continue after; `more` says the table goes on after `items`.
    fn send_pages(
        &mut self,
        now: Instant,
        to: PublicKey,
        items: Vec<(PublicKey, Box<[u8]>)>,
        run: Option<PageRun>,
        max_pages: usize,
    ) {
        let mut cursor = run.as_ref().and_then(|r| r.after);
        let mut iter = items.into_iter().peekable();
        let mut pages = 0;
        while pages < max_pages {
            if !self.page_budget.take(now) {
                lock(&self.registry).counters.pages_throttled += 1;
                return;
            }
            let flags = match (&run, cursor) {
                (None, _) => PAGE_UNSOLICITED,
                (Some(_), None) => PAGE_FROM_START,
                (Some(_), Some(_)) => 0,
            };
            let mut page = Vec::with_capacity(MAX_PAYLOAD);
            page.push(SUBTYPE_RECORDS);
            page.push(flags);
            page.extend_from_slice(cursor.as_ref().map_or(&[0u8; 32], |k| k.as_bytes()));
            let mut last_key = None;
            while let Some((key, item)) = iter.peek() {
                if PAGE_HEADER_LEN + 2 + item.len() > MAX_PAYLOAD {
                    lock(&self.registry).counters.items_oversize += 1;
                    iter.next();
                    continue;
                }
                if page.len() + 2 + item.len() > MAX_PAYLOAD {
                    break;
                }
                page.extend_from_slice(&(item.len() as u16).to_le_bytes());
                page.extend_from_slice(item);
                last_key = Some(*key);
                iter.next();
            }
            pages += 1;
            let exhausted = iter.peek().is_none();
            if let Some(run) = &run {
                if exhausted && !run.more {
                    page[1] |= PAGE_END;
                }
                if exhausted || pages == max_pages {
                    page[1] |= PAGE_LAST_IN_BURST;
                }
            }
            lock(&self.registry).counters.pages_sent += 1;
            self.queue(to, page);
            if exhausted {
                return;
            }
            cursor = last_key.or(cursor);
        }
    }

    fn on_sync_request(&mut self, now: Instant, from: PublicKey, body: &[u8]) {
        if body.len() != SYNC_REQUEST_LEN - 1 {
            lock(&self.registry).counters.sync_request_malformed += 1;
            return;
        }
        let from_start = body[0] & PAGE_FROM_START != 0;
        let mut cursor = [0u8; 32];
        cursor.copy_from_slice(&body[1..33]);
        let after = (!from_start).then(|| PublicKey::from_bytes(cursor));
        let pages = usize::from(body[33].clamp(1, SYNC_PAGES_PER_REQUEST));
        // More items than the pages can hold (the smallest item is about 150 bytes), and one
        // to tell whether the table goes on. Records of members foca considers down are left
        // out, so a pull does not bring the dead back.
        let limit = pages * (MAX_PAYLOAD / 128);
        let mut items: Vec<(PublicKey, Box<[u8]>)> = {
            let registry = lock(&self.registry);
            let range = match after {
                Some(k) => registry.slots.range((Bound::Excluded(k), Bound::Unbounded)),
                None => registry.slots.range(..),
            };
            range
                .filter(|(key, slot)| match slot {
                    Slot::Revoked(_) => true,
                    Slot::Member(_) => {
                        **key == self.me.key || self.live.get(key).is_some_and(|l| l.active)
                    }
                })
                .take(limit + 1)
                .map(|(key, slot)| {
                    let item = match slot {
                        Slot::Member(r) => r.item.clone(),
                        Slot::Revoked(r) => r.item.clone(),
                    };
                    (*key, item)
                })
                .collect()
        };
        let more = items.len() > limit;
        items.truncate(limit);
        if from_start {
            // Our own record first, so the new member can gossip with us at once.
            let own = lock(&self.registry)
                .record(&self.me.key)
                .map(|r| r.item.clone());
            if let Some(own) = own {
                self.send_pages(now, from, vec![(self.me.key, own)], None, 1);
            }
        }
        self.send_pages(now, from, items, Some(PageRun { after, more }), pages);
    }

    fn on_records(&mut self, now: Instant, from: PublicKey, body: &[u8]) {
        if body.len() < PAGE_HEADER_LEN - 1 {
            lock(&self.registry).counters.page_malformed += 1;
            return;
        }
        let flags = body[0];
        let mut cursor = [0u8; 32];
        cursor.copy_from_slice(&body[1..33]);
        let page_after = (flags & PAGE_FROM_START == 0).then(|| PublicKey::from_bytes(cursor));
        let mut rest = &body[33..];
        let mut last_key = None;
        let mut malformed = false;
        {
            let mut registry = lock(&self.registry);
            while !rest.is_empty() {
                let len = match rest {
                    [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])),
                    _ => {
                        malformed = true;
                        break;
                    }
                };
                let Some(item) = rest.get(2..2 + len).filter(|_| len > 0) else {
                    malformed = true;
                    break;
                };
                if let Ok(parsed) = Item::parse(item) {
                    let key = parsed.static_key();
                    last_key = Some(last_key.map_or(key, |k: PublicKey| k.max(key)));
                }
                registry.receive(item, Origin::Page);
                rest = &rest[2 + len..];
            }
            if malformed {
                registry.counters.page_malformed += 1;
            }
        }
        if flags & PAGE_UNSOLICITED != 0 || malformed {
            return;
        }
        let Some(run) = self.sync.as_mut() else {
            lock(&self.registry).counters.page_out_of_run += 1;
            return;
        };
        if run.peer != from || run.pending.len() >= 2 * usize::from(SYNC_PAGES_PER_REQUEST) {
            lock(&self.registry).counters.page_out_of_run += 1;
            return;
        }
        // Pages of a burst may arrive out of order: keep each one's range, and move the
        // cursor along the chain of ranges that starts at it.
        run.pending.insert(page_after, (last_key, flags));
        let mut advanced = false;
        let mut end = false;
        let mut burst_done = false;
        while let Some((last, flags)) = run.pending.remove(&run.cursor) {
            advanced = true;
            end |= flags & PAGE_END != 0;
            burst_done |= flags & PAGE_LAST_IN_BURST != 0;
            match last {
                Some(k) if Some(k) > run.cursor => run.cursor = Some(k),
                // A page without items (or going backwards) ends the chain.
                _ => {
                    burst_done = true;
                    break;
                }
            }
        }
        if !advanced {
            return;
        }
        run.deadline = now + SYNC_RETRY;
        run.attempts = 0;
        if end {
            self.sync = None;
            if !self.synced {
                // Now that this node knows the mesh, spread its own record again: the first
                // round went to the few members it knew at start.
                self.respread_own_record();
            }
            self.synced = true;
            self.next_anti_entropy = now + ANTI_ENTROPY_BUSY_INTERVAL;
            lock(&self.registry).counters.syncs_completed += 1;
            debug!(peer = %from, "membership: member table pulled");
        } else if burst_done {
            self.send_sync_request(now);
        }
    }

    fn schedule_anti_entropy(&mut self, now: Instant) {
        // Up to a quarter of the interval of jitter, so members do not pair up in lockstep.
        let jitter = self.rng.next_u32() as u64 % (ANTI_ENTROPY_INTERVAL.as_millis() as u64 / 4);
        self.next_anti_entropy = now + ANTI_ENTROPY_INTERVAL + Duration::from_millis(jitter);
    }

    fn send_digest(&mut self, to: PublicKey) {
        let digest = lock(&self.registry).digest();
        let mut payload = Vec::with_capacity(DIGEST_LEN);
        payload.push(SUBTYPE_DIGEST);
        for sum in digest {
            payload.extend_from_slice(&sum.to_le_bytes());
        }
        lock(&self.registry).counters.digests_sent += 1;
        self.queue(to, payload);
    }

    fn on_digest(&mut self, now: Instant, from: PublicKey, body: &[u8]) {
        if body.len() != DIGEST_LEN - 1 {
            lock(&self.registry).counters.digest_malformed += 1;
            return;
        }
        let entries: Vec<[u8; INDEX_ENTRY_LEN]> = {
            let mut registry = lock(&self.registry);
            let ours = registry.digest();
            let differs: Vec<bool> = body
                .chunks_exact(8)
                .zip(ours)
                .map(|(theirs, ours)| {
                    let mut raw = [0u8; 8];
                    raw.copy_from_slice(theirs);
                    u64::from_le_bytes(raw) != ours
                })
                .collect();
            if !differs.contains(&true) {
                registry.counters.digests_matched += 1;
                return;
            }
            registry
                .slots
                .iter()
                .filter(|(key, _)| differs[registry::bucket(key)])
                .take(INDEX_PAGES_PER_DIGEST * INDEX_MAX_ENTRIES)
                .map(|(key, slot)| {
                    let mut entry = [0u8; INDEX_ENTRY_LEN];
                    entry[..32].copy_from_slice(key.as_bytes());
                    entry[32..].copy_from_slice(&slot.version().to_le_bytes());
                    entry
                })
                .collect()
        };
        for chunk in entries.chunks(INDEX_MAX_ENTRIES) {
            if !self.page_budget.take(now) {
                lock(&self.registry).counters.pages_throttled += 1;
                return;
            }
            let mut page = Vec::with_capacity(1 + chunk.len() * INDEX_ENTRY_LEN);
            page.push(SUBTYPE_INDEX);
            for entry in chunk {
                page.extend_from_slice(entry);
            }
            lock(&self.registry).counters.index_pages_sent += 1;
            self.queue(from, page);
        }
    }

    fn on_index(&mut self, now: Instant, from: PublicKey, body: &[u8]) {
        if body.is_empty() || body.len() % INDEX_ENTRY_LEN != 0 {
            lock(&self.registry).counters.index_malformed += 1;
            return;
        }
        let mut wanted = Vec::new();
        let mut push = Vec::new();
        {
            let registry = lock(&self.registry);
            for entry in body.chunks_exact(INDEX_ENTRY_LEN) {
                let mut raw = [0u8; 32];
                raw.copy_from_slice(&entry[..32]);
                let key = PublicKey::from_bytes(raw);
                let mut version = [0u8; 8];
                version.copy_from_slice(&entry[32..]);
                let theirs = u64::from_le_bytes(version);
                match registry.slots.get(&key) {
                    // They hold a record of a key we know is revoked: tell them.
                    Some(Slot::Revoked(r)) if theirs != u64::MAX => {
                        push.push((key, r.item.clone()))
                    }
                    Some(slot) if slot.version() >= theirs => {}
                    _ if key == self.me.key || registry.was_forgotten(&key, theirs) => {}
                    _ => wanted.push(key),
                }
            }
        }
        lock(&self.registry).counters.index_keys_wanted += wanted.len() as u64;
        if !wanted.is_empty() {
            self.next_anti_entropy = self.next_anti_entropy.min(now + ANTI_ENTROPY_BUSY_INTERVAL);
        }
        for key in wanted {
            self.want(now, key, Some(from));
            // Asked of the member whose index showed it, right away.
            if let Some(want) = self.wanted.get_mut(&key) {
                if want.attempts == 0 {
                    want.hint = Some(from);
                    want.due = now;
                }
            }
        }
        if !push.is_empty() {
            lock(&self.registry).counters.revocations_pushed += push.len() as u64;
            self.send_pages(now, from, push, None, 2);
        }
    }

    fn start_sync(&mut self, now: Instant, peer: PublicKey) {
        self.sync = Some(SyncRun {
            peer,
            cursor: None,
            pending: BTreeMap::new(),
            deadline: now + SYNC_RETRY,
            attempts: 0,
        });
        self.send_sync_request(now);
    }

    fn send_sync_request(&mut self, now: Instant) {
        let Some(run) = self.sync.as_mut() else {
            return;
        };
        run.deadline = now + SYNC_RETRY;
        run.pending.clear();
        let mut request = Vec::with_capacity(SYNC_REQUEST_LEN);
        request.push(SUBTYPE_SYNC_REQUEST);
        request.push(if run.cursor.is_none() {
            PAGE_FROM_START
        } else {
            0
        });
        request.extend_from_slice(run.cursor.as_ref().map_or(&[0u8; 32], |k| k.as_bytes()));
        request.push(SYNC_PAGES_PER_REQUEST);
        let peer = run.peer;
        lock(&self.registry).counters.sync_requests_sent += 1;
        self.queue(peer, request);
    }

    fn on_want(&mut self, now: Instant, from: PublicKey, body: &[u8]) {
        if body.is_empty() || body.len() % 32 != 0 || body.len() / 32 > WANT_MAX_KEYS {
            lock(&self.registry).counters.want_malformed += 1;
            return;
        }
        let mut unknown = 0;
        let items: Vec<(PublicKey, Box<[u8]>)> = {
            let registry = lock(&self.registry);
            body.chunks_exact(32)
                .filter_map(|raw| {
                    let mut bytes = [0u8; 32];
                    bytes.copy_from_slice(raw);
                    let key = PublicKey::from_bytes(bytes);
                    match registry.slots.get(&key) {
                        Some(Slot::Member(r)) => Some((key, r.item.clone())),
                        Some(Slot::Revoked(r)) => Some((key, r.item.clone())),
                        None => {
                            unknown += 1;
                            None
                        }
                    }
                })
                .collect()
        };
        lock(&self.registry).counters.want_keys_unknown += unknown;
        if !items.is_empty() {
            self.send_pages(now, from, items, None, 4);
        }
    }

    // -------------------------------------------------------------------- renewal

    fn renewal_due(&self, now_unix: u64) -> bool {
        let c = &self.certificate;
        let lifetime = c.expires_at.saturating_sub(c.issued_at);
        now_unix >= c.expires_at.saturating_sub(lifetime / 3)
    }

    fn on_renew_request(&mut self, now: Instant, from: PublicKey, body: &[u8]) {
        if !body.is_empty() {
            lock(&self.registry).counters.renew_request_malformed += 1;
            return;
        }
        let Some(secret) = self.network_secret.as_ref() else {
            lock(&self.registry).counters.renew_not_admin += 1;
            return;
        };
        let (current, now_unix) = {
            let registry = lock(&self.registry);
            (
                registry.record(&from).and_then(|r| r.certificate()),
                registry.now_unix,
            )
        };
        let Some(current) = current else {
            lock(&self.registry).counters.renew_unknown_member += 1;
            return;
        };
        let lifetime = current.expires_at.saturating_sub(current.issued_at);
        if current.expires_at.saturating_sub(now_unix) > lifetime / 2 {
            lock(&self.registry).counters.renew_too_early += 1;
            return;
        }
        if !self.renew_budget.take(now) {
            lock(&self.registry).counters.renew_throttled += 1;
            return;
        }
        let issued = Certificate::issue(
            secret,
            &current.name,
            current.static_key,
            current.signing_key,
            now_unix,
            now_unix.saturating_add(self.certificate_lifetime.as_secs()),
            current.admin,
        );
        match issued {
            Ok(certificate) => {
                lock(&self.registry).counters.renewals_issued += 1;
                info!(member = %current.name, "membership: renewed a member's certificate");
                let mut payload = vec![SUBTYPE_RENEW_RESPONSE];
                payload.extend_from_slice(&certificate.encode());
                self.queue(from, payload);
            }
            Err(_) => lock(&self.registry).counters.foca_errors += 1,
        }
    }

    fn on_renew_response(&mut self, body: &[u8]) {
        let now_unix = lock(&self.registry).now_unix;
        let valid = match Certificate::decode(body) {
            Ok((certificate, used)) if used == body.len() => {
                let c = &certificate;
                let ours = &self.certificate;
                let fits = c.network == self.network
                    && c.static_key == ours.static_key
                    && c.signing_key == ours.signing_key
                    && c.name == ours.name
                    && c.admin == ours.admin
                    && c.expires_at > ours.expires_at
                    && c.verify(&self.network, now_unix).is_ok();
                fits.then_some(certificate)
            }
            _ => None,
        };
        match valid {
            Some(certificate) => self.install_certificate(certificate),
            None => lock(&self.registry).counters.renew_response_bad += 1,
        }
    }

    fn install_certificate(&mut self, certificate: Certificate) {
        info!(
            expires_at = certificate.expires_at,
            "membership: certificate renewed"
        );
        self.certificate = certificate.clone();
        self.renew_next_attempt = None;
        self.version = self.version.saturating_add(1);
        lock(&self.registry).counters.certificates_renewed += 1;
        self.events
            .push_back(MembershipEvent::CertificateRenewed { certificate });
        self.publish_own_record();
    }

    fn renew(&mut self, now: Instant, now_unix: u64) {
        if !self.renewal_due(now_unix) || self.renew_next_attempt.is_some_and(|t| now < t) {
            return;
        }
        self.renew_next_attempt = Some(now + RENEW_RETRY);
        if let Some(secret) = self.network_secret.as_ref() {
            let c = &self.certificate;
            match Certificate::issue(
                secret,
                &c.name,
                c.static_key,
                c.signing_key,
                now_unix,
                now_unix.saturating_add(self.certificate_lifetime.as_secs()),
                c.admin,
            ) {
                Ok(certificate) => self.install_certificate(certificate),
                Err(_) => lock(&self.registry).counters.foca_errors += 1,
            }
            return;
        }
        let admins: Vec<PublicKey> = {
            let registry = lock(&self.registry);
            registry
                .slots
                .iter()
                .filter(|(key, slot)| {
                    **key != self.me.key
                        && matches!(slot, Slot::Member(r) if r.admin)
                        && self.live.get(key).is_some_and(|l| l.active)
                })
                .map(|(key, _)| *key)
                .collect()
        };
        if admins.is_empty() {
            debug!("membership: certificate renewal due but no admin is reachable");
            return;
        }
        let admin = admins[self.rng.next_u32() as usize % admins.len()];
        lock(&self.registry).counters.renew_requests_sent += 1;
        self.queue(admin, vec![SUBTYPE_RENEW_REQUEST]);
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
        let members = self.foca.num_members() + 1;
        let scale = log10_scale(members);
        if scale != self.tuned_scale && self.foca.set_config(foca_config(members)).is_ok() {
            self.tuned_scale = scale;
        }
        self.renew(now, now_unix);
        self.send_wants(now);
        self.drive_sync(now);
        self.sweep(now, now_unix);
    }

    fn send_wants(&mut self, now: Instant) {
        let mut batches: BTreeMap<PublicKey, Vec<PublicKey>> = BTreeMap::new();
        let due: Vec<PublicKey> = self
            .wanted
            .iter()
            .filter(|(_, w)| w.due <= now)
            .map(|(k, _)| *k)
            .collect();
        let candidates = if due.is_empty() {
            Vec::new()
        } else {
            self.verified_alive()
        };
        for key in due {
            let Some(want) = self.wanted.get(&key) else {
                continue;
            };
            let confirmed = self.live.get(&key).is_some_and(|l| l.active);
            if !confirmed && want.attempts >= WANT_ATTEMPTS_UNCONFIRMED {
                self.wanted.remove(&key);
                lock(&self.registry).counters.wants_abandoned += 1;
                continue;
            }
            // The first ask goes to the member that mentioned the key (it has a session with
            // us; it may be the member itself); later ones to random members with verified
            // records, who hold nearly every record.
            let target = match (want.attempts, want.hint) {
                (0, Some(hint)) => Some(hint),
                _ => self.pick(&candidates).filter(|t| *t != key),
            };
            let Some(target) = target else {
                continue;
            };
            if let Some(want) = self.wanted.get_mut(&key) {
                let backoff = WANT_RETRY * (1u32 << want.attempts.min(5));
                want.attempts = want.attempts.saturating_add(1);
                want.due = now + backoff.min(WANT_RETRY_MAX);
            }
            batches.entry(target).or_default().push(key);
        }
        for (target, keys) in batches {
            for chunk in keys.chunks(WANT_MAX_KEYS) {
                let mut payload = Vec::with_capacity(1 + 32 * chunk.len());
                payload.push(SUBTYPE_WANT);
                for key in chunk {
                    payload.extend_from_slice(key.as_bytes());
                }
                lock(&self.registry).counters.wants_sent += 1;
                self.queue(target, payload);
            }
        }
    }

    fn drive_sync(&mut self, now: Instant) {
        if let Some(run) = self.sync.as_mut() {
            if now < run.deadline {
                return;
            }
            run.attempts = run.attempts.saturating_add(1);
            if run.attempts >= SYNC_ATTEMPTS {
                // That member does not answer: continue the pull from another one.
                let cursor = run.cursor;
                match self.random_member() {
                    Some(peer) => {
                        self.sync = Some(SyncRun {
                            peer,
                            cursor,
                            pending: BTreeMap::new(),
                            deadline: now + SYNC_RETRY,
                            attempts: 0,
                        })
                    }
                    None => {
                        self.sync = None;
                        return;
                    }
                }
            }
            self.send_sync_request(now);
            return;
        }
        if !self.synced {
            if let Some(peer) = self.random_member() {
                self.start_sync(now, peer);
            }
        } else if now >= self.next_anti_entropy {
            self.schedule_anti_entropy(now);
            if let Some(peer) = self.random_member() {
                self.send_digest(peer);
            }
        }
    }

    fn sweep(&mut self, now: Instant, now_unix: u64) {
        let mut dropped = Vec::new();
        {
            let mut registry = lock(&self.registry);
            let own = self.me.key;
            let mut expired_records = 0;
            let mut expired_revocations = 0;
            registry.slots.retain(|key, slot| match slot {
                Slot::Member(r) if *key != own && r.cert_expires_at <= now_unix => {
                    expired_records += 1;
                    dropped.push(*key);
                    false
                }
                Slot::Revoked(r) if r.expires_at <= now_unix => {
                    expired_revocations += 1;
                    false
                }
                _ => true,
            });
            registry.counters.records_expired += expired_records;
            registry.counters.revocations_expired += expired_revocations;
            registry.forgotten.retain(|_, (_, until)| *until > now_unix);
        }
        for key in dropped {
            self.refresh_report(key);
            // Still alive: its renewed record is somewhere; ask for it.
            if self.live.get(&key).is_some_and(|l| l.active) {
                self.want(now, key, None);
            }
        }
    }
}
