//! Anti-entropy: how this node gets the records it lacks and gives others theirs.
//!
//! Owns [`TableSync`]: the records wanted (keys foca or an index named without a verified record
//! here, asked of the member that named them first, then of random members with backoff), the
//! table pull in progress (a run of record pages from one member, continued from its cursor by
//! another member when that one stops answering), the anti-entropy schedule (table digests
//! compared with a random member, index pages for the buckets that differ) and the page budget
//! that bounds what this node serves. Answers go out as records pages, wants, digests and index
//! pages built by `crate::wire::membership`.
//!
//! Invariants: at most [`MAX_WANTED`] keys are wanted at once; pages and index pages sent stay
//! within the page budget (each one refused is counted); a pull serves only revocations and the
//! records of members foca considers alive, so it never brings the dead back; a sync run's
//! cursor only moves forward along pages that continue it; a page's items are handed to the
//! registry, which verifies each on its own, even when the page is out of the run.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::{Duration, Instant};

use meshd_crypto::PublicKey;
use rand_core::RngCore as _;
use tracing::debug;

use super::record::Item;
use super::registry::{self, lock, ItemSource, KeyEntry, Rank};
use super::{
    Membership, ANTI_ENTROPY_BUSY_INTERVAL, ANTI_ENTROPY_INTERVAL, INDEX_PAGES_PER_DIGEST,
    MAX_PAYLOAD, MAX_WANTED, PAGE_BURST, PAGE_RATE, SYNC_ATTEMPTS, SYNC_PAGES_PER_REQUEST,
    SYNC_RETRY, WANT_ATTEMPTS_UNCONFIRMED, WANT_DELAY, WANT_RETRY, WANT_RETRY_MAX,
};
use crate::core::limit::TokenBucket;
use crate::wire::membership::{
    emit_digest, emit_index, emit_sync_request, emit_want, Digest, Index, PageWriter, RecordsPage,
    SyncRequest, Want as WantMessage, INDEX_MAX_ENTRIES, PAGE_END, PAGE_FROM_START,
    PAGE_LAST_IN_BURST, PAGE_UNSOLICITED, WANT_MAX_KEYS,
};

/// What this node does to keep its member table complete.
pub(super) struct TableSync {
    /// Records this node lacks, by key.
    pub wanted: BTreeMap<PublicKey, Want>,
    /// The table pull in progress.
    pub run: Option<SyncRun>,
    /// A table pull completed (until foca reports nobody is left).
    pub synced: bool,
    pub next_anti_entropy: Instant,
    /// Pages (records and index) this node serves, all members together.
    pub page_budget: TokenBucket,
}

impl TableSync {
    pub fn new(now: Instant) -> TableSync {
        TableSync {
            wanted: BTreeMap::new(),
            run: None,
            synced: false,
            next_anti_entropy: now + ANTI_ENTROPY_INTERVAL,
            page_budget: TokenBucket::new(now, u64::from(PAGE_RATE), u64::from(PAGE_BURST)),
        }
    }
}

/// A record this node lacks.
pub(super) struct Want {
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

/// A table pull from one member: pages asked for in bursts, taken in key order.
pub(super) struct SyncRun {
    peer: PublicKey,
    /// Last key received in order; `None` before the first page.
    cursor: Option<PublicKey>,
    /// Pages received ahead of the cursor: the key each continues after, its last key, flags.
    pending: BTreeMap<Option<PublicKey>, (Option<PublicKey>, u8)>,
    deadline: Instant,
    attempts: u8,
}

impl Membership {
    /// Notes that this node lacks `key`'s record; `hint` is the member that mentioned it.
    pub(super) fn want(&mut self, now: Instant, key: PublicKey, hint: Option<PublicKey>) {
        if self.sync.wanted.len() >= MAX_WANTED && !self.sync.wanted.contains_key(&key) {
            self.counters.wants_dropped += 1;
            return;
        }
        self.sync.wanted.entry(key).or_insert(Want {
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
            if !self.sync.page_budget.try_take(now) {
                self.counters.pages_throttled += 1;
                return;
            }
            let flags = match (&run, cursor) {
                (None, _) => PAGE_UNSOLICITED,
                (Some(_), None) => PAGE_FROM_START,
                (Some(_), Some(_)) => 0,
            };
            let mut page = PageWriter::new(flags, cursor.as_ref());
            let mut last_key = None;
            while let Some((key, item)) = iter.peek() {
                if !PageWriter::fits_a_page(item.len()) {
                    self.counters.items_oversize += 1;
                    iter.next();
                    continue;
                }
                if !page.push(item) {
                    break;
                }
                last_key = Some(*key);
                iter.next();
            }
            pages += 1;
            let exhausted = iter.peek().is_none();
            if let Some(run) = &run {
                if exhausted && !run.more {
                    page.add_flags(PAGE_END);
                }
                if exhausted || pages == max_pages {
                    page.add_flags(PAGE_LAST_IN_BURST);
                }
            }
            self.counters.pages_sent += 1;
            self.queue(to, page.finish());
            if exhausted {
                return;
            }
            cursor = last_key.or(cursor);
        }
    }

    pub(super) fn on_sync_request(&mut self, now: Instant, from: PublicKey, body: &[u8]) {
        let Ok(request) = SyncRequest::new_checked(body) else {
            self.counters.sync_request_malformed += 1;
            return;
        };
        let from_start = request.from_start();
        let after = request.after();
        let pages = usize::from(request.pages().clamp(1, SYNC_PAGES_PER_REQUEST));
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
                    KeyEntry::Revoked(_) => true,
                    KeyEntry::Member(_) => {
                        **key == self.me.key || self.live.get(key).is_some_and(|l| l.active)
                    }
                })
                .take(limit + 1)
                .map(|(key, slot)| {
                    let item = match slot {
                        KeyEntry::Member(r) => r.item.clone(),
                        KeyEntry::Revoked(r) => r.item.clone(),
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

    pub(super) fn on_records(&mut self, now: Instant, from: PublicKey, body: &[u8]) {
        let Ok(page) = RecordsPage::new_checked(body) else {
            self.counters.page_malformed += 1;
            return;
        };
        let flags = page.flags();
        let page_after = page.after();
        let mut last_key = None;
        {
            // Items in front of a framing error are still taken: each verifies on its own.
            let mut registry = lock(&self.registry);
            for item in page.items() {
                if let Ok(parsed) = Item::parse(item) {
                    let key = parsed.static_key();
                    last_key = Some(last_key.map_or(key, |k: PublicKey| k.max(key)));
                }
                registry.receive(item, ItemSource::Page);
            }
        }
        let malformed = !page.is_intact();
        if malformed {
            self.counters.page_malformed += 1;
        }
        if flags & PAGE_UNSOLICITED != 0 || malformed {
            return;
        }
        let Some(run) = self.sync.run.as_mut() else {
            self.counters.page_out_of_run += 1;
            return;
        };
        if run.peer != from || run.pending.len() >= 2 * usize::from(SYNC_PAGES_PER_REQUEST) {
            self.counters.page_out_of_run += 1;
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
            self.sync.run = None;
            if !self.sync.synced {
                // Now that this node knows the mesh, spread its own record again: the first
                // round went to the few members it knew at start.
                self.respread_own_record();
            }
            self.sync.synced = true;
            self.sync.next_anti_entropy = now + ANTI_ENTROPY_BUSY_INTERVAL;
            self.counters.syncs_completed += 1;
            debug!(peer = %from, "membership: member table pulled");
        } else if burst_done {
            self.send_sync_request(now);
        }
    }

    pub(super) fn schedule_anti_entropy(&mut self, now: Instant) {
        // Up to a quarter of the interval of jitter, so members do not pair up in lockstep.
        let jitter = self.rng.next_u32() as u64 % (ANTI_ENTROPY_INTERVAL.as_millis() as u64 / 4);
        self.sync.next_anti_entropy = now + ANTI_ENTROPY_INTERVAL + Duration::from_millis(jitter);
    }

    pub(super) fn send_digest(&mut self, to: PublicKey) {
        let payload = emit_digest(&lock(&self.registry).digest());
        self.counters.digests_sent += 1;
        self.queue(to, payload);
    }

    pub(super) fn on_digest(&mut self, now: Instant, from: PublicKey, body: &[u8]) {
        let Ok(digest) = Digest::new_checked(body) else {
            self.counters.digest_malformed += 1;
            return;
        };
        let entries: Vec<(PublicKey, u64)> = {
            let registry = lock(&self.registry);
            let ours = registry.digest();
            let differs: Vec<bool> = digest
                .sums()
                .zip(ours)
                .map(|(theirs, ours)| theirs != ours)
                .collect();
            if !differs.contains(&true) {
                self.counters.digests_matched += 1;
                return;
            }
            registry
                .slots
                .iter()
                .filter(|(key, _)| differs[registry::bucket(key)])
                .filter_map(|(key, slot)| Some((*key, registry.compared(slot)?.wire())))
                .take(INDEX_PAGES_PER_DIGEST * INDEX_MAX_ENTRIES)
                .collect()
        };
        for chunk in entries.chunks(INDEX_MAX_ENTRIES) {
            if !self.sync.page_budget.try_take(now) {
                self.counters.pages_throttled += 1;
                return;
            }
            self.counters.index_pages_sent += 1;
            self.queue(from, emit_index(chunk));
        }
    }

    pub(super) fn on_index(&mut self, now: Instant, from: PublicKey, body: &[u8]) {
        let Ok(index) = Index::new_checked(body) else {
            self.counters.index_malformed += 1;
            return;
        };
        let mut wanted = Vec::new();
        let mut push = Vec::new();
        {
            let registry = lock(&self.registry);
            for (key, theirs) in index.entries() {
                let theirs = Rank::from_wire(theirs);
                let forgotten = match theirs {
                    Rank::Record(version) => registry.was_forgotten(&key, version),
                    // A revocation is news even about a member forgotten here.
                    Rank::Revoked => false,
                };
                match registry.slots.get(&key) {
                    // They hold a record of a key we know is revoked: tell them.
                    Some(KeyEntry::Revoked(r)) if theirs != Rank::Revoked => {
                        push.push((key, r.item.clone()))
                    }
                    Some(slot) if slot.rank() >= theirs => {}
                    _ if key == self.me.key || forgotten => {}
                    _ => wanted.push(key),
                }
            }
        }
        self.counters.index_keys_wanted += wanted.len() as u64;
        if !wanted.is_empty() {
            self.sync.next_anti_entropy = self
                .sync
                .next_anti_entropy
                .min(now + ANTI_ENTROPY_BUSY_INTERVAL);
        }
        for key in wanted {
            self.want(now, key, Some(from));
            // Asked of the member whose index showed it, right away.
            if let Some(want) = self.sync.wanted.get_mut(&key) {
                if want.attempts == 0 {
                    want.hint = Some(from);
                    want.due = now;
                }
            }
        }
        if !push.is_empty() {
            self.counters.revocations_pushed += push.len() as u64;
            self.send_pages(now, from, push, None, 2);
        }
    }

    pub(super) fn start_sync(&mut self, now: Instant, peer: PublicKey) {
        self.sync.run = Some(SyncRun {
            peer,
            cursor: None,
            pending: BTreeMap::new(),
            deadline: now + SYNC_RETRY,
            attempts: 0,
        });
        self.send_sync_request(now);
    }

    pub(super) fn send_sync_request(&mut self, now: Instant) {
        let Some(run) = self.sync.run.as_mut() else {
            return;
        };
        run.deadline = now + SYNC_RETRY;
        run.pending.clear();
        let request = emit_sync_request(run.cursor.as_ref(), SYNC_PAGES_PER_REQUEST);
        let peer = run.peer;
        self.counters.sync_requests_sent += 1;
        self.queue(peer, request);
    }

    pub(super) fn on_want(&mut self, now: Instant, from: PublicKey, body: &[u8]) {
        let Ok(want) = WantMessage::new_checked(body) else {
            self.counters.want_malformed += 1;
            return;
        };
        let mut unknown = 0;
        let items: Vec<(PublicKey, Box<[u8]>)> = {
            let registry = lock(&self.registry);
            want.keys()
                .filter_map(|key| match registry.slots.get(&key) {
                    Some(KeyEntry::Member(r)) => Some((key, r.item.clone())),
                    Some(KeyEntry::Revoked(r)) => Some((key, r.item.clone())),
                    None => {
                        unknown += 1;
                        None
                    }
                })
                .collect()
        };
        self.counters.want_keys_unknown += unknown;
        if !items.is_empty() {
            self.send_pages(now, from, items, None, 4);
        }
    }

    pub(super) fn send_wants(&mut self, now: Instant) {
        let mut batches: BTreeMap<PublicKey, Vec<PublicKey>> = BTreeMap::new();
        let due: Vec<PublicKey> = self
            .sync
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
            let Some(want) = self.sync.wanted.get(&key) else {
                continue;
            };
            let confirmed = self.live.get(&key).is_some_and(|l| l.active);
            if !confirmed && want.attempts >= WANT_ATTEMPTS_UNCONFIRMED {
                self.sync.wanted.remove(&key);
                self.counters.wants_abandoned += 1;
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
            if let Some(want) = self.sync.wanted.get_mut(&key) {
                let backoff = WANT_RETRY * (1u32 << want.attempts.min(5));
                want.attempts = want.attempts.saturating_add(1);
                want.due = now + backoff.min(WANT_RETRY_MAX);
            }
            batches.entry(target).or_default().push(key);
        }
        for (target, keys) in batches {
            for chunk in keys.chunks(WANT_MAX_KEYS) {
                self.counters.wants_sent += 1;
                self.queue(target, emit_want(chunk));
            }
        }
    }

    pub(super) fn drive_sync(&mut self, now: Instant) {
        if let Some(run) = self.sync.run.as_mut() {
            if now < run.deadline {
                return;
            }
            run.attempts = run.attempts.saturating_add(1);
            if run.attempts >= SYNC_ATTEMPTS {
                // That member does not answer: continue the pull from another one.
                let cursor = run.cursor;
                match self.random_member() {
                    Some(peer) => {
                        self.sync.run = Some(SyncRun {
                            peer,
                            cursor,
                            pending: BTreeMap::new(),
                            deadline: now + SYNC_RETRY,
                            attempts: 0,
                        })
                    }
                    None => {
                        self.sync.run = None;
                        return;
                    }
                }
            }
            self.send_sync_request(now);
            return;
        }
        if !self.sync.synced {
            if let Some(peer) = self.random_member() {
                self.start_sync(now, peer);
            }
        } else if now >= self.sync.next_anti_entropy {
            self.schedule_anti_entropy(now);
            if let Some(peer) = self.random_member() {
                self.send_digest(peer);
            }
        }
    }
}
