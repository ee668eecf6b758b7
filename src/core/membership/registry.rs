//! The verified member table: one slot per static key holding either the member's newest
//! verified record (with its certificate) or the revocation that bans the key.
//!
//! Owns [`Registry`], the [`Handler`] through which foca hands it gossip items, and the
//! [`ItemKey`]s foca uses to stop spreading stale items. Invariants: a `KeyEntry::Member` holds
//! only an item whose certificate verified against the network id and was unexpired when it
//! arrived, whose certificate names the record's key, and whose record signature verified with
//! the certificate's signing key, and whose version is at most [`MAX_RECORD_VERSION`]; a
//! record replaces a stored one only with a strictly higher version; a revocation outranks
//! every record in every comparison ([`Rank`]: digests, index entries, what "newer" means); a
//! revoked key never holds a record again while its revocation is kept, and a revocation is
//! kept at least until the newest certificate seen for its key expires; every item that is
//! not stored is counted under the reason. The registry is shared with foca's handler behind a
//! mutex that is never held while foca runs.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use foca::{BroadcastHandler, Invalidates};
use meshd_crypto::{Certificate, NetworkId, PublicKey};

use super::codec::MemberId;
use super::record::{
    Item, MemberRecord, RecordView, Revocation, RevocationView, MAX_RECORD_VERSION,
};
use super::MembershipCounters;
use crate::core::ranges::{Grant, Range4, RangeHolder, RANGE_GRACE_SECS};

/// What the registry knows about one static key.
pub(super) enum KeyEntry {
    Member(StoredRecord),
    Revoked(StoredRevocation),
}

impl KeyEntry {
    /// What the slot counts as when tables are compared.
    pub fn rank(&self) -> Rank {
        match self {
            KeyEntry::Member(r) => Rank::Record(r.version),
            KeyEntry::Revoked(_) => Rank::Revoked,
        }
    }
}

/// How slots of one key compare across members (anti-entropy digests and index entries):
/// a record by its version, and a revocation above every record, whatever its version. The
/// order is the derived one: `Record(_) < Revoked`.
///
/// On the wire (digest hashes, index entries) a rank is one u64: the record version, or
/// `u64::MAX` for a revocation. Records above [`MAX_RECORD_VERSION`] are refused, so the two
/// never meet: before that bound a member could sign its own record at `u64::MAX`, which
/// hashed and indexed exactly as its revocation did, so a node that had missed the revocation
/// was never repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Rank {
    Record(u64),
    Revoked,
}

impl Rank {
    /// The u64 a digest hashes and an index entry carries.
    pub fn wire(self) -> u64 {
        match self {
            Rank::Record(version) => version.min(MAX_RECORD_VERSION),
            Rank::Revoked => u64::MAX,
        }
    }

    /// An index entry's u64: anything above [`MAX_RECORD_VERSION`] can only be a revocation
    /// (meshd writes `u64::MAX`).
    pub fn from_wire(value: u64) -> Rank {
        if value > MAX_RECORD_VERSION {
            Rank::Revoked
        } else {
            Rank::Record(value)
        }
    }
}

/// The digest bucket of a key: the top 7 bits of its first byte.
pub(super) fn bucket(key: &PublicKey) -> usize {
    usize::from(key.as_bytes()[0] >> 1)
}

/// A 64-bit mix of a key and a version (splitmix64 steps). Keys are uniformly random already;
/// the mix only has to make different versions of one key sum differently. Not a MAC: a
/// digest that lies only withholds repair, which the next random peer provides.
fn entry_hash(key: &PublicKey, version: u64) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let mut h = version;
    for chunk in key.as_bytes().chunks_exact(8) {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(chunk);
        h = mix(h ^ u64::from_le_bytes(raw)).wrapping_add(0x9e37_79b9_7f4a_7c15);
    }
    mix(h)
}

/// A verified member item, kept as the bytes it arrived in (so it can be served to others
/// unchanged) plus the few fields read on every decision.
#[derive(Clone)]
pub(super) struct StoredRecord {
    /// `ITEM_MEMBER`, certificate, record.
    pub item: Box<[u8]>,
    /// Offset of the record inside `item`.
    pub record_at: usize,
    pub version: u64,
    pub generation: u32,
    pub cert_expires_at: u64,
    pub admin: bool,
    /// The certificate's address grant, when it has a consistent one.
    pub grant: Option<Grant>,
}

impl StoredRecord {
    /// The certificate and record, decoded again from the stored bytes. They decoded when they
    /// were stored, so `None` cannot happen short of memory corruption.
    pub fn decode(&self) -> Option<(Certificate, MemberRecord)> {
        let (certificate, _) = Certificate::decode(self.item.get(1..self.record_at)?).ok()?;
        let record = MemberRecord::decode(self.item.get(self.record_at..)?).ok()?;
        Some((certificate, record))
    }

    pub fn certificate(&self) -> Option<Certificate> {
        Certificate::decode(self.item.get(1..self.record_at)?)
            .ok()
            .map(|(c, _)| c)
    }
}

#[derive(Clone)]
pub(super) struct StoredRevocation {
    /// `ITEM_REVOCATION`, revocation.
    pub item: Box<[u8]>,
    /// Unix seconds until which the revocation is kept: its own `expires_at`, or the expiry of
    /// the newest certificate of the key seen (held when it arrived, or shown since), whichever
    /// is later. Until then every record of the key is refused.
    pub expires_at: u64,
    /// The revocation's own `expires_at`. Past it, a revocation kept longer only for a later
    /// certificate is left out of table comparisons (see [`Registry::compared`]).
    pub signed_expires_at: u64,
}

impl StoredRevocation {
    pub fn decode(&self) -> Option<Revocation> {
        Revocation::decode(self.item.get(1..)?).ok()
    }
}

/// Where an item came from, which decides whether it may be spread further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ItemSource {
    /// Put in by this node through `Foca::add_broadcast`: it is spread if it is exactly what
    /// the registry already stores (the node stored it first).
    Local,
    /// A foca custom broadcast from another member: spread on if new.
    Gossip,
    /// A record page or answer: stored if new, never spread (it is old news).
    Page,
}

/// Side effects the membership layer applies after foca returns.
pub(super) enum Accepted {
    Record {
        key: PublicKey,
        generation: u32,
    },
    Revocation(Revocation),
    /// A validly signed record for our own key, newer than ours: an earlier run of this node.
    OwnRecordNewer {
        generation: u32,
        version: u64,
    },
}

/// foca's dedup key for our custom broadcasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKey {
    Record { key: PublicKey, version: u64 },
    Revocation { key: PublicKey },
}

impl Invalidates for ItemKey {
    fn invalidates(&self, other: &Self) -> bool {
        match (self, other) {
            (ItemKey::Record { key, version }, ItemKey::Record { key: k, version: v }) => {
                key == k && version >= v
            }
            (ItemKey::Revocation { key }, ItemKey::Record { key: k, .. })
            | (ItemKey::Revocation { key }, ItemKey::Revocation { key: k }) => key == k,
            (ItemKey::Record { .. }, ItemKey::Revocation { .. }) => false,
        }
    }
}

pub(super) struct Registry {
    pub network: NetworkId,
    pub own_key: PublicKey,
    /// Unix seconds, set by the membership layer before anything that may verify.
    pub now_unix: u64,
    pub slots: BTreeMap<PublicKey, KeyEntry>,
    /// Members forgotten after their tombstone: the last record version, kept until the unix
    /// second given, so older copies still travelling are refused.
    pub forgotten: BTreeMap<PublicKey, (u64, u64)>,
    pub accepted: Vec<Accepted>,
    /// Ranges whose holder was revoked or whose certificate expired, with the unix second they
    /// return to the pool ([`RANGE_GRACE_SECS`] later).
    pub released_ranges: Vec<(Range4, u64)>,
    /// The verdicts on items (accepted, stale, refused and why), counted as items are judged,
    /// under the lock that judging holds anyway. Every other counter is the membership layer's.
    pub counters: MembershipCounters,
}

pub(super) fn lock(shared: &Mutex<Registry>) -> MutexGuard<'_, Registry> {
    // Nothing panics while holding the lock; a poisoned lock still holds consistent data.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    pub fn new(network: NetworkId, own_key: PublicKey, now_unix: u64) -> Registry {
        Registry {
            network,
            own_key,
            now_unix,
            slots: BTreeMap::new(),
            forgotten: BTreeMap::new(),
            accepted: Vec::new(),
            released_ranges: Vec::new(),
            counters: MembershipCounters::default(),
        }
    }

    pub fn is_revoked(&self, key: &PublicKey) -> bool {
        matches!(self.slots.get(key), Some(KeyEntry::Revoked(_)))
    }

    /// Whether `key` was forgotten at a record version of at least `version`.
    pub fn was_forgotten(&self, key: &PublicKey, version: u64) -> bool {
        self.forgotten.get(key).is_some_and(|(v, _)| *v >= version)
    }

    /// How `slot` counts when tables are compared (digests, index entries), or `None` to leave
    /// it out: a revocation past its own `expires_at`, kept longer only because a certificate
    /// of its key expires later. Members that never saw that certificate have dropped the
    /// revocation and refuse it as expired, so advertising it would make them ask for it again
    /// every round; one that has since taken the member's record shows it in its index, and is
    /// sent the revocation (which it then takes, holding that certificate).
    pub fn compared(&self, slot: &KeyEntry) -> Option<Rank> {
        match slot {
            KeyEntry::Revoked(r) if r.signed_expires_at <= self.now_unix => None,
            _ => Some(slot.rank()),
        }
    }

    /// Per-bucket wrapping sums of the entry hash of every slot compared: equal digests mean
    /// (but for a 2^-64 chance per bucket) equal tables.
    pub fn digest(&self) -> [u64; super::DIGEST_BUCKETS] {
        let mut sums = [0u64; super::DIGEST_BUCKETS];
        for (key, slot) in &self.slots {
            if let Some(rank) = self.compared(slot) {
                let b = bucket(key);
                sums[b] = sums[b].wrapping_add(entry_hash(key, rank.wire()));
            }
        }
        sums
    }

    pub fn record(&self, key: &PublicKey) -> Option<&StoredRecord> {
        match self.slots.get(key) {
            Some(KeyEntry::Member(record)) => Some(record),
            _ => None,
        }
    }

    /// Stores this node's own item (built and signed locally, so not verified again), unless
    /// this node itself has been revoked.
    pub fn store_own(&mut self, item: Vec<u8>, record_at: usize, certificate: &Certificate) {
        let Ok(view) = RecordView::new_checked(&item[record_at..]) else {
            return;
        };
        let stored = StoredRecord {
            version: view.version(),
            generation: view.generation(),
            cert_expires_at: certificate.expires_at,
            admin: certificate.admin,
            grant: certificate.grant.as_ref().and_then(Grant::from_certificate),
            record_at,
            item: item.into_boxed_slice(),
        };
        if !self.is_revoked(&self.own_key) {
            self.slots.insert(self.own_key, KeyEntry::Member(stored));
        }
    }

    /// Takes one item: checks it, stores it if it is new and valid, and says whether foca
    /// should spread it.
    pub fn receive(&mut self, data: &[u8], origin: ItemSource) -> Option<ItemKey> {
        match Item::parse(data) {
            Err(_) => {
                self.counters.item_malformed += 1;
                None
            }
            Ok(Item::Member {
                certificate,
                certificate_bytes,
                record,
            }) => self.receive_member(data, origin, certificate, certificate_bytes, record),
            Ok(Item::Revocation(view)) => self.receive_revocation(data, origin, view),
        }
    }

    fn receive_member(
        &mut self,
        data: &[u8],
        origin: ItemSource,
        certificate: Box<Certificate>,
        certificate_bytes: &[u8],
        record: RecordView<'_>,
    ) -> Option<ItemKey> {
        let key = record.static_key();
        let version = record.version();
        let stored = match self.slots.get(&key) {
            Some(KeyEntry::Revoked(_)) => {
                self.counters.record_revoked += 1;
                self.extend_revocation(key, &certificate);
                return None;
            }
            Some(KeyEntry::Member(stored)) => Some(stored),
            None => None,
        };
        if origin == ItemSource::Local {
            // Spread only what the node itself stored a moment ago.
            return stored
                .filter(|s| *s.item == *data)
                .map(|_| ItemKey::Record { key, version });
        }
        if stored.is_some_and(|s| s.version >= version) || self.was_forgotten(&key, version) {
            self.counters.record_stale += 1;
            return None;
        }
        if certificate.static_key != key {
            self.counters.record_key_mismatch += 1;
            return None;
        }
        if certificate.network != self.network {
            self.counters.record_wrong_network += 1;
            return None;
        }
        if version > MAX_RECORD_VERSION {
            self.counters.record_version_invalid += 1;
            return None;
        }
        if certificate.expires_at <= self.now_unix {
            self.counters.record_cert_expired += 1;
            return None;
        }
        // A certificate identical to the stored one verified before: skip its signature.
        let known_certificate =
            stored.is_some_and(|s| s.item.get(1..s.record_at) == Some(certificate_bytes));
        if !known_certificate && certificate.verify(&self.network, self.now_unix).is_err() {
            self.counters.record_bad_certificate += 1;
            return None;
        }
        if record.cert_issued_at() != certificate.issued_at {
            self.counters.record_cert_mismatch += 1;
            return None;
        }
        if !record.verify(&self.network, &certificate.signing_key) {
            self.counters.record_bad_signature += 1;
            return None;
        }
        if key == self.own_key {
            self.counters.record_own_newer += 1;
            self.accepted.push(Accepted::OwnRecordNewer {
                generation: record.generation(),
                version,
            });
            return None;
        }
        self.counters.record_accepted += 1;
        let generation = record.generation();
        self.slots.insert(
            key,
            KeyEntry::Member(StoredRecord {
                item: data.into(),
                record_at: 1 + certificate_bytes.len(),
                version,
                generation,
                cert_expires_at: certificate.expires_at,
                admin: certificate.admin,
                grant: certificate.grant.as_ref().and_then(Grant::from_certificate),
            }),
        );
        self.accepted.push(Accepted::Record { key, generation });
        Some(ItemKey::Record { key, version })
    }

    fn receive_revocation(
        &mut self,
        data: &[u8],
        origin: ItemSource,
        view: RevocationView<'_>,
    ) -> Option<ItemKey> {
        let key = view.static_key();
        let known = match self.slots.get(&key) {
            Some(KeyEntry::Revoked(stored)) => Some(stored),
            _ => None,
        };
        if origin == ItemSource::Local {
            return known
                .filter(|s| *s.item == *data)
                .map(|_| ItemKey::Revocation { key });
        }
        if known.is_some() {
            self.counters.revocation_stale += 1;
            return None;
        }
        if view.network() != self.network {
            self.counters.revocation_wrong_network += 1;
            return None;
        }
        // Kept as long as the newest certificate of the key seen here: one held past the
        // revocation's own expiry would otherwise let the member back in. For the same reason a
        // revocation past its own expiry is still taken while such a certificate is valid.
        let certificate_expiry = self.record(&key).map_or(0, |r| r.cert_expires_at);
        let keep_until = view.expires_at().max(certificate_expiry);
        if keep_until <= self.now_unix {
            self.counters.revocation_expired += 1;
            return None;
        }
        if !view.verify(&self.network) {
            self.counters.revocation_bad_signature += 1;
            return None;
        }
        self.counters.revocation_accepted += 1;
        if keep_until > view.expires_at() {
            self.counters.revocation_extended += 1;
        }
        if let Some(grant) = self.record(&key).and_then(|r| r.grant) {
            self.release_range(grant.range, view.revoked_at());
        }
        self.slots.insert(
            key,
            KeyEntry::Revoked(StoredRevocation {
                item: data.into(),
                expires_at: keep_until,
                signed_expires_at: view.expires_at(),
            }),
        );
        self.accepted
            .push(Accepted::Revocation(Revocation::from_view(&view)));
        Some(ItemKey::Revocation { key })
    }

    /// A record of revoked `key` came with `certificate`: if that is a valid certificate of the
    /// key expiring after the revocation is kept, keep the revocation until it expires (an
    /// admin that had missed the revocation renewed the member). Each later certificate costs
    /// one signature check, once; the record itself stays refused.
    fn extend_revocation(&mut self, key: PublicKey, certificate: &Certificate) {
        let Some(KeyEntry::Revoked(revocation)) = self.slots.get(&key) else {
            return;
        };
        if certificate.static_key != key
            || certificate.network != self.network
            || certificate.expires_at <= revocation.expires_at
            || certificate.verify(&self.network, self.now_unix).is_err()
        {
            return;
        }
        if let Some(KeyEntry::Revoked(revocation)) = self.slots.get_mut(&key) {
            revocation.expires_at = certificate.expires_at;
            self.counters.revocation_extended += 1;
        }
    }
}

impl Registry {
    /// Every range that is not in the pool at `now_unix`: held by a member whose certificate is
    /// valid or expired less than [`RANGE_GRACE_SECS`] ago, or released by a revocation less than
    /// that long ago.
    pub fn ranges_out_of_pool(&self, now_unix: u64) -> Vec<Range4> {
        let held = self.slots.values().filter_map(|slot| match slot {
            KeyEntry::Member(r) => r.grant.map(|g| g.range),
            KeyEntry::Revoked(_) => None,
        });
        let released = self
            .released_ranges
            .iter()
            .filter(|(_, free_at)| *free_at > now_unix)
            .map(|(range, _)| *range);
        held.chain(released).collect()
    }

    /// The name in `key`'s stored certificate, if it holds a record.
    pub fn name_of(&self, key: &PublicKey) -> Option<String> {
        self.record(key)?.certificate().map(|c| c.name)
    }

    /// Keeps `range` out of the pool until [`RANGE_GRACE_SECS`] after `released_at`.
    pub fn release_range(&mut self, range: Range4, released_at: u64) {
        self.released_ranges
            .push((range, released_at.saturating_add(RANGE_GRACE_SECS)));
    }

    /// The ranges of members whose certificate is valid at `now_unix` (revoked keys hold none):
    /// what the collision rule compares. Names are left empty (filling them would decode every
    /// certificate on every tick); [`Registry::name_of`] gives them for the few that conflict.
    pub fn live_range_holders(&self, now_unix: u64) -> Vec<RangeHolder> {
        self.slots
            .iter()
            .filter_map(|(key, slot)| match slot {
                KeyEntry::Member(r) if r.cert_expires_at > now_unix => {
                    let grant = r.grant?;
                    Some(RangeHolder {
                        key: *key,
                        name: String::new(),
                        range: grant.range,
                        granted_at: grant.granted_at,
                    })
                }
                _ => None,
            })
            .collect()
    }
}

/// foca's custom-broadcast handler: every item goes through the shared [`Registry`].
pub(super) struct Handler {
    pub registry: Arc<Mutex<Registry>>,
}

impl BroadcastHandler<MemberId> for Handler {
    type Key = ItemKey;
    type Error = Infallible;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&MemberId>,
    ) -> Result<Option<ItemKey>, Infallible> {
        let origin = if sender.is_some() {
            ItemSource::Gossip
        } else {
            ItemSource::Local
        };
        Ok(lock(&self.registry).receive(data, origin))
    }

    /// Records and revocations go only to members whose own record verified.
    fn should_add_broadcast_data(&self, member: &MemberId) -> bool {
        lock(&self.registry).record(&member.key).is_some()
    }
}
