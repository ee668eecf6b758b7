//! The foca adapter: runs foca (SWIM failure detection and gossip) inside the sans-IO membership
//! state machine.
//!
//! Owns [`SwimDriver`]: foca itself, the runtime ([`FocaIo`]) that collects what one foca call
//! asks for, and the heap of foca's timers, which this module fires in deadline order because
//! nothing here may read a clock. It also owns the way foca's word reaches the rest of the
//! layer: notifications update `live` and the report, accepted registry items are applied to
//! foca, and incoming foca packets are checked before foca sees them.
//!
//! Invariants: a foca packet reaches foca only if its sender identity is the authenticated
//! session key it arrived on and it is addressed to this node; member updates about keys
//! without a verified record here are taken out of the packet first (so foca never probes a
//! member this node has no endpoint for), and so are updates at any generation but the one the
//! member signed (so no third member can forge an identity that outranks it); after every
//! change of foca's timer token every suspect gets a fresh suspect-to-down timer; the registry
//! lock is never held while foca runs.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use foca::{
    Config, Foca, Member, Notification, OwnedNotification, PeriodicParams, Runtime, State, Timer,
};
use meshd_crypto::PublicKey;
use tracing::{info, warn};

use super::codec::{FocaRng, MemberId, MemberUpdates, WireCodec};
use super::registry::{lock, Accepted, Handler, Registry};
use super::{
    Membership, MembershipEvent, ANNOUNCE_DOWN_INTERVAL, ANNOUNCE_INTERVAL, FOCA_MAX_PACKET,
    FORGOTTEN_KEPT, GOSSIP_FANOUT, GOSSIP_INTERVAL, INDIRECT_PROBES, MAX_RECORD_VERSION,
    PROBE_PERIOD, PROBE_RTT, REMOVE_DOWN_AFTER, SUSPICION_MULTIPLIER,
};
use crate::wire::membership::{emit_foca, FocaPacket};

type Swim = Foca<MemberId, WireCodec, FocaRng, Handler>;

/// foca and the timers it asked for.
pub(super) struct SwimDriver {
    pub foca: Swim,
    pub io: FocaIo,
    pub timers: BinaryHeap<Scheduled>,
    /// Submission order of timers due at the same instant.
    pub timer_seq: u64,
    /// The timer token foca stamps on its timers now (it changes with every identity change and
    /// makes foca ignore timers stamped before), and the token suspicions were last re-armed for.
    pub token: Option<foca::TimerToken>,
    pub suspicions_armed_for: Option<foca::TimerToken>,
    /// The log10 scale foca's configuration was last tuned for.
    pub tuned_scale: u32,
}

impl SwimDriver {
    pub fn new(me: MemberId, rng: FocaRng, registry: Arc<Mutex<Registry>>) -> SwimDriver {
        SwimDriver {
            foca: Foca::with_custom_broadcast(
                me,
                foca_config(1),
                rng,
                WireCodec,
                Handler { registry },
            ),
            io: FocaIo::default(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            token: None,
            suspicions_armed_for: None,
            tuned_scale: log10_scale(1),
        }
    }

    /// When the earliest foca timer is due.
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|s| s.at)
    }

    /// Queues `timer` to fire at `at`, after every timer already queued for that instant.
    fn schedule(&mut self, at: Instant, timer: Timer<MemberId>) {
        self.timer_seq += 1;
        self.timers.push(Scheduled {
            at,
            seq: self.timer_seq,
            timer,
        });
    }

    /// Moves the timers foca asked for during its last calls onto the heap, noting the token
    /// they carry.
    fn schedule_requested(&mut self, now: Instant) {
        for (after, timer) in std::mem::take(&mut self.io.timers) {
            if let Some(token) = token_of(&timer) {
                self.token = Some(token);
            }
            self.schedule(now + after, timer);
        }
    }

    /// The earliest timer due at `now`, taken off the heap.
    fn pop_due(&mut self, now: Instant) -> Option<Timer<MemberId>> {
        if self.timers.peek().is_some_and(|s| s.at <= now) {
            self.timers.pop().map(|s| s.timer)
        } else {
            None
        }
    }

    /// Retunes foca for a mesh of `members` nodes when the log10 scale changed.
    pub fn tune(&mut self, members: usize) {
        let scale = log10_scale(members);
        if scale != self.tuned_scale && self.foca.set_config(foca_config(members)).is_ok() {
            self.tuned_scale = scale;
        }
    }
}

/// foca's runtime: collects what one foca call wants done.
#[derive(Default)]
pub(super) struct FocaIo {
    sends: Vec<(MemberId, Vec<u8>)>,
    timers: Vec<(Duration, Timer<MemberId>)>,
    notes: Vec<OwnedNotification<MemberId>>,
}

impl Runtime<MemberId> for FocaIo {
    fn notify(&mut self, notification: Notification<'_, MemberId>) {
        self.notes.push(notification.to_owned());
    }

    fn send_to(&mut self, to: MemberId, data: &[u8]) {
        self.sends.push((to, emit_foca(data)));
    }

    fn submit_after(&mut self, event: Timer<MemberId>, after: Duration) {
        self.timers.push((after, event));
    }
}

/// A foca timer waiting for its instant (min-heap by deadline, then submission order).
pub(super) struct Scheduled {
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
pub(super) struct Live {
    pub generation: u32,
    pub active: bool,
    /// This node announced itself to the member since foca last saw it come up.
    pub announced: bool,
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
pub(super) fn log10_scale(members: usize) -> u32 {
    members.max(1).ilog10().max(1)
}

impl Membership {
    /// Fires foca's timers due at `now`, in deadline order, applying what each one caused.
    pub(super) fn fire_due_timers(&mut self, now: Instant) {
        while let Some(timer) = self.swim.pop_due(now) {
            let forget = match &timer {
                Timer::RemoveDown(id) => Some(*id),
                _ => None,
            };
            if self
                .swim
                .foca
                .handle_timer(timer, &mut self.swim.io)
                .is_err()
            {
                self.counters.foca_errors += 1;
            }
            if let Some(id) = forget {
                self.maybe_forget(id);
            }
            self.pump(now, None);
        }
    }

    /// foca ignores timers stamped with an older token, and changing identity (a rejoin after
    /// this node was declared down, as after a partition) changes the token. A member suspected
    /// before that would stay suspect for good, its suspect-to-down timer ignored, unless it
    /// happens to refute. So after every token change, every suspect gets a fresh timer: it is
    /// declared down in time unless it refutes, as SWIM intends.
    pub(super) fn rearm_suspicions(&mut self, now: Instant) {
        let Some(token) = self.swim.token else { return };
        if self.swim.suspicions_armed_for == Some(token) {
            return;
        }
        self.swim.suspicions_armed_for = Some(token);
        let after = foca_config(self.swim.foca.num_members() + 1).suspect_to_down_after;
        let suspects: Vec<(MemberId, foca::Incarnation)> = self
            .swim
            .foca
            .iter_members()
            .filter(|m| m.state() == State::Suspect)
            .map(|m| (*m.id(), m.incarnation()))
            .collect();
        for (member_id, incarnation) in suspects {
            self.swim.schedule(
                now + after,
                Timer::ChangeSuspectToDown {
                    member_id,
                    incarnation,
                    token,
                },
            );
        }
    }

    /// Moves what foca asked for into the queues and applies everything foca and the registry
    /// reported, until both are quiet.
    pub(super) fn pump(&mut self, now: Instant, hint: Option<PublicKey>) {
        loop {
            let sends = std::mem::take(&mut self.swim.io.sends);
            for (to, payload) in sends {
                self.queue(to.key, payload);
            }
            self.swim.schedule_requested(now);
            let notes = std::mem::take(&mut self.swim.io.notes);
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

    pub(super) fn on_notification(
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
                self.sync.wanted.remove(&id.key);
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
                self.bump_version();
                self.publish_own_record();
            }
            OwnedNotification::Idle => {
                // Nobody is left: pull the table again from the next member met.
                self.sync.synced = false;
            }
            OwnedNotification::Defunct => {
                warn!("membership: declared down and out of generations; no longer taking part");
            }
            OwnedNotification::Active => {}
        }
    }

    pub(super) fn on_accepted(&mut self, accepted: Accepted) {
        match accepted {
            Accepted::Record { key, generation } => {
                self.sync.wanted.remove(&key);
                self.foca_apply(Member::alive(MemberId { key, generation }), false);
                self.refresh_report(key);
            }
            Accepted::Revocation(revocation) => {
                let key = revocation.static_key;
                self.sync.wanted.remove(&key);
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
                self.version = self
                    .version
                    .max(version.saturating_add(1))
                    .min(MAX_RECORD_VERSION);
                if generation >= self.me.generation {
                    let renewed = MemberId {
                        key: self.me.key,
                        generation: generation.saturating_add(1),
                    };
                    if self
                        .swim
                        .foca
                        .change_identity(renewed, &mut self.swim.io)
                        .is_ok()
                    {
                        self.me = renewed;
                    } else {
                        self.counters.foca_errors += 1;
                    }
                }
                self.publish_own_record();
            }
        }
    }

    pub(super) fn foca_apply(&mut self, member: Member<MemberId>, broadcast: bool) {
        if self
            .swim
            .foca
            .apply_many(std::iter::once(member), broadcast, &mut self.swim.io)
            .is_err()
        {
            self.counters.foca_errors += 1;
        }
    }

    /// Emits MemberUp/MemberDown so that the reported set is exactly the members with a
    /// verified record that foca considers alive.
    /// foca's remove-down timer fired: forgets the member if it is still down in that
    /// generation, remembering its record version for [`FORGOTTEN_KEPT`].
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
                self.counters.members_forgotten += 1;
            }
            version.is_some()
        };
        self.refresh_report(id.key);
        if had_record {
            self.events
                .push_back(MembershipEvent::MemberForgotten { key: id.key });
        }
    }

    // -------------------------------------------------------------------- foca packets

    pub(super) fn on_foca_packet(&mut self, now: Instant, from: PublicKey, body: &[u8]) {
        let Ok(packet) = FocaPacket::new_checked(body).map(|p| p.packet()) else {
            self.counters.rx_foca_malformed += 1;
            return;
        };
        let header = match WireCodec::peek_header(packet) {
            Ok(header) => header,
            Err(_) => {
                self.counters.rx_foca_malformed += 1;
                return;
            }
        };
        if header.src.key != from {
            self.counters.rx_impersonation += 1;
            return;
        }
        if header.dst.key != self.me.key {
            self.counters.rx_misaddressed += 1;
            return;
        }
        let filtered = self.filter_updates(now, from, &header, packet);
        let data = filtered.as_deref().unwrap_or(packet);
        if self.swim.foca.handle_data(data, &mut self.swim.io).is_err() {
            self.counters.rx_foca_rejected += 1;
        }
    }

    /// foca learns about a member only from its verified record here, or from the member
    /// itself talking to us, and only under the generation the member itself chose:
    ///
    /// * an update about a key without a record (and that foca has not heard from) is taken
    ///   out of the packet and its record asked for (`updates_unverified`), so foca never
    ///   probes a member the node has no endpoint for;
    /// * an update about a revoked key is taken out (`updates_revoked`);
    /// * an update whose generation is not the member's own is taken out
    ///   (`updates_wrong_generation`). The member's own generation is the one in its verified
    ///   record, which only its signing key can produce (for a member that talked to us before
    ///   its record arrived: the generation in its own packets, whose key the session proved;
    ///   for this node: its current generation). A third member therefore cannot make foca hold
    ///   an identity of another member that outranks the real one, such as "down at generation
    ///   u32::MAX", which no rejoin could ever refute. A legitimate update at a generation the
    ///   record does not show yet (the member just rejoined) loses nothing: the new record
    ///   arrives with the same gossip and brings the member up under that generation, and
    ///   anti-entropy repairs a record that did not.
    ///
    /// Returns the rewritten packet, or `None` to hand foca the packet as it is (also when its
    /// framing is broken: foca refuses and counts it).
    fn filter_updates(
        &mut self,
        now: Instant,
        from: PublicKey,
        header: &foca::Header<MemberId>,
        packet: &[u8],
    ) -> Option<Vec<u8>> {
        let updates = MemberUpdates::split(packet, &header.message)?;
        let mut keep = Vec::with_capacity(updates.count());
        let mut unknown = Vec::new();
        {
            let registry = lock(&self.registry);
            for (id, update) in updates.iter() {
                let own_generation = if id.key == self.me.key {
                    Some(self.me.generation)
                } else if let Some(record) = registry.record(&id.key) {
                    Some(record.generation)
                } else if registry.is_revoked(&id.key) {
                    self.counters.updates_revoked += 1;
                    continue;
                } else {
                    self.live.get(&id.key).map(|l| l.generation)
                };
                match own_generation {
                    Some(generation) if generation == id.generation => keep.push(update),
                    Some(_) => self.counters.updates_wrong_generation += 1,
                    None => {
                        self.counters.updates_unverified += 1;
                        unknown.push(id.key);
                    }
                }
            }
        }
        for key in unknown {
            self.want(now, key, Some(from));
        }
        if keep.len() == updates.count() {
            return None;
        }
        Some(updates.rebuild(&keep))
    }
}
