//! The virtual switch: a forwarding database (FDB) that learns which port each MAC address lives behind,
//! ages entries out like a Linux bridge, and decides where a frame goes (with split horizon).
//!
//! Sans-IO: every call takes `now`; nothing here reads a clock. Invariants:
//! - `len() <= max_entries` at all times: learning a new MAC at the bound evicts the least recently seen
//!   entry first, so a MAC flood costs CPU, never memory.
//! - Multicast, broadcast and all-zero source addresses are never learned.
//! - An entry older than `ageing` is a miss for `lookup`/`forward_*` even before `expire` removes it.
//! - A frame received from a peer is only ever delivered locally (split horizon), so a full mesh of
//!   nodes can flood without loops.
//!
//! Design and cost. Entries live in a `HashMap` (std's SipHash with per-process random keys, because
//! source MACs are attacker-chosen and must not be able to force collisions). Recency is kept in a FIFO
//! of stamps `(mac, seq, at)` appended in time order; a stamp is live iff its `seq` equals the entry's
//! current `seq`, older stamps of the same MAC are stale and skipped lazily. Refreshing an entry updates
//! its `last_seen` in place and appends a new stamp only when its live stamp is at least
//! [`REQUEUE_INTERVAL`] old, so the per-frame hot path is one hash probe, no allocation and no queue
//! write. Eviction pops the oldest stamp and gives its entry a second chance (re-stamps it at the back)
//! if the MAC was seen after that stamp was placed, so the order is least-recently-seen at one-second
//! granularity, and a host that sends at least once per table cycle survives a flood that cycles the
//! whole table faster than once a second.
//! - `lookup`, `forward_*`: one probe, O(1).
//! - `learn`: O(1) amortised. Evicting pops stale stamps and re-stamps refreshed entries until it
//!   evicts; every popped stamp was pushed once and every re-stamp is paid for by a refresh. The FIFO is
//!   compacted (O(n), order kept) when it exceeds `2 * len + 64` stamps, which happens at most once per
//!   `len + 64` pushes, so it stays bounded by about `2 * max_entries`.
//! - `expire`: O(number of stamps older than `ageing`), i.e. proportional to the work it removes.
//!   An entry re-stamped by eviction is swept up to one table cycle late (lookups still miss on time).
//! - `remove_port`: O(len).

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::wire::MacAddr;

/// Index of a configured peer, assigned by the node.
pub type PeerId = u32;

/// Where a MAC address lives: behind this node's TAP device or behind a peer.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Port {
    Local,
    Peer(PeerId),
}

/// Minimum age of an entry's recency stamp before a refresh re-stamps it.
pub const REQUEUE_INTERVAL: Duration = Duration::from_secs(1);

/// Stale stamps tolerated beyond `2 * len` before the recency FIFO is compacted.
const COMPACT_SLACK: usize = 64;

/// Limits of the forwarding database, and the switch's policy on members' frames.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct FdbConfig {
    /// Upper bound on entries; a new MAC beyond it evicts the least recently seen one.
    pub max_entries: usize,
    /// How long an entry stays valid without traffic from its MAC.
    pub ageing: Duration,
    /// Drop ICMPv6 router advertisements that come from members (see core::guard).
    pub drop_router_advertisements: bool,
}

impl Default for FdbConfig {
    fn default() -> Self {
        FdbConfig {
            max_entries: 8192,
            ageing: Duration::from_secs(300),
            drop_router_advertisements: false,
        }
    }
}

/// What `learn` did with a source address.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Learned {
    /// Not known (or known but aged out): inserted.
    New,
    /// Known on the same port: timestamp refreshed.
    Refreshed,
    /// Known on another port: now points at the new port.
    Moved { from: Port },
    /// Multicast, broadcast or all-zero source (or an FDB configured with `max_entries == 0`): not learned.
    Ignored,
}

/// Where a frame should go.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Forward {
    /// Nowhere (the destination is on the port the frame came from).
    Drop,
    /// To this node's TAP device.
    Local,
    /// To one peer.
    Unicast(PeerId),
    /// To every peer with an established session.
    Flood,
}

#[derive(Copy, Clone, Debug)]
struct FdbEntry {
    port: Port,
    last_seen: Instant,
    /// `at` of this entry's live stamp in the recency FIFO.
    stamped_at: Instant,
    /// `seq` of this entry's live stamp in the recency FIFO.
    seq: u64,
}

#[derive(Copy, Clone, Debug)]
struct Stamp {
    mac: MacAddr,
    seq: u64,
    /// When the stamp was placed (not necessarily the entry's `last_seen`).
    at: Instant,
}

/// The forwarding database. See the module documentation for the design and its costs.
#[derive(Debug)]
pub struct Fdb {
    config: FdbConfig,
    entries: HashMap<MacAddr, FdbEntry>,
    /// Every live entry has exactly one live stamp here; stamps are in non-decreasing `at` order as long
    /// as callers pass a non-decreasing `now`.
    recency: VecDeque<Stamp>,
    next_seq: u64,
    moves: u64,
    evictions: u64,
    expirations: u64,
    /// The last `learn` (MAC, port, instant), while nothing else has changed the table since.
    /// A burst of frames from one source (a receive batch shares one `now`) then costs one hash
    /// lookup instead of two per frame: at the same instant, learning it again on the same port
    /// changes nothing, and looking it up finds that port.
    recent: Option<(MacAddr, Port, Instant)>,
}

impl Fdb {
    pub fn new(config: FdbConfig) -> Self {
        let initial = config.max_entries.min(1024);
        Fdb {
            config,
            entries: HashMap::with_capacity(initial),
            recency: VecDeque::with_capacity(initial),
            next_seq: 0,
            moves: 0,
            evictions: 0,
            expirations: 0,
            recent: None,
        }
    }

    pub fn config(&self) -> &FdbConfig {
        &self.config
    }

    /// Records that a frame with source `mac` arrived on `port`.
    pub fn learn(&mut self, now: Instant, mac: MacAddr, port: Port) -> Learned {
        if mac.is_multicast() || mac.is_zero() || self.config.max_entries == 0 {
            return Learned::Ignored;
        }
        if self.recent == Some((mac, port, now)) {
            return Learned::Refreshed;
        }
        self.recent = Some((mac, port, now));
        if let Some(entry) = self.entries.get_mut(&mac) {
            let aged_out = now.saturating_duration_since(entry.last_seen) >= self.config.ageing;
            let from = entry.port;
            entry.port = port;
            entry.last_seen = entry.last_seen.max(now);
            if now.saturating_duration_since(entry.stamped_at) >= REQUEUE_INTERVAL {
                let seq = self.next_seq;
                self.next_seq += 1;
                entry.seq = seq;
                entry.stamped_at = now;
                self.recency.push_back(Stamp { mac, seq, at: now });
                self.compact_if_sparse();
            }
            return if aged_out {
                Learned::New
            } else if from != port {
                self.moves += 1;
                Learned::Moved { from }
            } else {
                Learned::Refreshed
            };
        }
        if self.entries.len() >= self.config.max_entries {
            self.evict_least_recent(now);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(
            mac,
            FdbEntry {
                port,
                last_seen: now,
                stamped_at: now,
                seq,
            },
        );
        self.recency.push_back(Stamp { mac, seq, at: now });
        self.compact_if_sparse();
        Learned::New
    }

    /// The port `mac` was last seen on, unless unknown or aged out.
    pub fn lookup(&self, now: Instant, mac: MacAddr) -> Option<Port> {
        if let Some((recent, port, at)) = self.recent {
            // Learned at this very instant, so not aged out (unless ageing is zero).
            if recent == mac && at == now && !self.config.ageing.is_zero() {
                return Some(port);
            }
        }
        let entry = self.entries.get(&mac)?;
        (now.saturating_duration_since(entry.last_seen) < self.config.ageing).then_some(entry.port)
    }

    /// Removes every entry not seen for `ageing`; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        self.recent = None;
        let ageing = self.config.ageing;
        let mut removed = 0;
        // Stamps [0, kept) are live entries whose stamp is old but which were refreshed within
        // REQUEUE_INTERVAL of it; they stay at the front, in order. Stamps [kept, scanned) are garbage.
        let mut kept = 0;
        let mut scanned = 0;
        while let Some(stamp) = self.recency.get(scanned).copied() {
            if now.saturating_duration_since(stamp.at) < ageing {
                break;
            }
            if let MapEntry::Occupied(slot) = self.entries.entry(stamp.mac) {
                if slot.get().seq == stamp.seq {
                    if now.saturating_duration_since(slot.get().last_seen) >= ageing {
                        slot.remove();
                        removed += 1;
                    } else {
                        self.recency.swap(kept, scanned);
                        kept += 1;
                    }
                }
            }
            scanned += 1;
        }
        self.recency.drain(kept..scanned);
        self.expirations += removed as u64;
        removed
    }

    /// Forgets every MAC learned on `port` (e.g. a peer was removed); returns how many.
    pub fn remove_port(&mut self, port: Port) -> usize {
        self.recent = None;
        let before = self.entries.len();
        self.entries.retain(|_, entry| entry.port != port);
        let removed = before - self.entries.len();
        self.compact_if_sparse();
        removed
    }

    /// Entries held, including aged-out ones `expire` has not swept yet.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Live entries as `(mac, port, age)`, in no particular order.
    pub fn iter(&self, now: Instant) -> impl Iterator<Item = (MacAddr, Port, Duration)> + '_ {
        let ageing = self.config.ageing;
        self.entries.iter().filter_map(move |(mac, entry)| {
            let age = now.saturating_duration_since(entry.last_seen);
            (age < ageing).then_some((*mac, entry.port, age))
        })
    }

    /// When `expire` will next have something to remove, at most [`REQUEUE_INTERVAL`] late; `None` when
    /// empty. After `expire(now)` this is always later than `now`, so it is safe as a timer deadline.
    /// Skips stale stamps at the front of the FIFO, so it is O(1) amortised like `learn`.
    pub fn next_expiry(&self) -> Option<Instant> {
        let (stamp, entry) = self.recency.iter().find_map(|stamp| {
            let entry = self.entries.get(&stamp.mac)?;
            (entry.seq == stamp.seq).then_some((stamp, entry))
        })?;
        // `expire` looks at an entry once its stamp is `ageing` old and removes it once its last frame is.
        stamp
            .at
            .max(entry.last_seen)
            .checked_add(self.config.ageing)
    }

    /// MAC moves between ports seen by `learn` so far.
    pub fn moves(&self) -> u64 {
        self.moves
    }

    /// Entries evicted to stay within `max_entries`.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Entries removed by `expire`.
    pub fn expirations(&self) -> u64 {
        self.expirations
    }

    /// Decision for a frame read from the local TAP device: broadcast, multicast and unknown unicast are
    /// flooded; a MAC known behind a peer goes to that peer; a MAC known to be local is dropped, because
    /// the local bridge would have delivered it itself (no hairpin).
    pub fn forward_from_local(&self, now: Instant, dst: MacAddr) -> Forward {
        if dst.is_multicast() {
            return Forward::Flood;
        }
        match self.lookup(now, dst) {
            Some(Port::Peer(peer)) => Forward::Unicast(peer),
            Some(Port::Local) => Forward::Drop,
            None => Forward::Flood,
        }
    }

    /// Decision for a frame received from peer `from`: always local delivery (split horizon: never to
    /// another peer, whatever the FDB says). Even a destination known behind a peer is handed to the
    /// local bridge, which drops what it cannot use; this keeps two nodes with momentarily conflicting
    /// views of a moved MAC from black-holing its traffic.
    pub fn forward_from_peer(&self, _now: Instant, _from: PeerId, _dst: MacAddr) -> Forward {
        Forward::Local
    }

    /// Second-chance eviction: the oldest stamp's entry is evicted unless it was seen after it was
    /// stamped (and is not aged out), in which case it is re-stamped at the back and the search goes on.
    /// Each entry is re-stamped at most once per call, so this ends; each re-stamp is paid for by an
    /// earlier refresh that did not stamp, so it is O(1) amortised.
    fn evict_least_recent(&mut self, now: Instant) {
        while let Some(stamp) = self.recency.pop_front() {
            let MapEntry::Occupied(mut slot) = self.entries.entry(stamp.mac) else {
                continue;
            };
            let entry = slot.get_mut();
            if entry.seq != stamp.seq {
                continue;
            }
            let aged_out = now.saturating_duration_since(entry.last_seen) >= self.config.ageing;
            if entry.last_seen > stamp.at && !aged_out {
                let seq = self.next_seq;
                self.next_seq += 1;
                entry.seq = seq;
                entry.stamped_at = now;
                self.recency.push_back(Stamp {
                    mac: stamp.mac,
                    seq,
                    at: now,
                });
                continue;
            }
            slot.remove();
            self.evictions += 1;
            return;
        }
    }

    fn compact_if_sparse(&mut self) {
        if self.recency.len() > 2 * self.entries.len() + COMPACT_SLACK {
            let entries = &self.entries;
            self.recency.retain(|stamp| {
                entries
                    .get(&stamp.mac)
                    .is_some_and(|entry| entry.seq == stamp.seq)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn mac(n: u32) -> MacAddr {
        let [a, b, c, d] = n.to_be_bytes();
        MacAddr([0x02, 0, a, b, c, d])
    }

    fn fdb(max_entries: usize) -> Fdb {
        Fdb::new(FdbConfig {
            max_entries,
            ..FdbConfig::default()
        })
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Every live entry has exactly one live stamp, and the FIFO stays bounded.
    fn assert_invariants(fdb: &Fdb) {
        assert!(fdb.len() <= fdb.config.max_entries);
        assert!(fdb.recency.len() <= 2 * fdb.entries.len() + COMPACT_SLACK + 1);
        let live = fdb
            .recency
            .iter()
            .filter(|stamp| {
                fdb.entries
                    .get(&stamp.mac)
                    .is_some_and(|entry| entry.seq == stamp.seq)
            })
            .count();
        assert_eq!(live, fdb.entries.len());
    }

    #[test]
    fn defaults_match_a_linux_bridge() {
        let config = FdbConfig::default();
        assert_eq!(config.max_entries, 8192);
        assert_eq!(config.ageing, secs(300));
    }

    #[test]
    fn a_burst_at_one_instant_answers_as_the_table_does() {
        let mut fdb = fdb(2);
        let t0 = Instant::now();
        assert_eq!(fdb.learn(t0, mac(1), Port::Peer(1)), Learned::New);
        assert_eq!(fdb.learn(t0, mac(1), Port::Peer(1)), Learned::Refreshed);
        assert_eq!(fdb.lookup(t0, mac(1)), Some(Port::Peer(1)));
        // Another port at the same instant is a move, not a refresh.
        assert_eq!(
            fdb.learn(t0, mac(1), Port::Local),
            Learned::Moved {
                from: Port::Peer(1)
            }
        );
        assert_eq!(fdb.lookup(t0, mac(1)), Some(Port::Local));
        // Forgetting a port forgets what was just learned on it.
        fdb.learn(t0, mac(2), Port::Peer(2));
        assert_eq!(fdb.remove_port(Port::Peer(2)), 1);
        assert_eq!(fdb.lookup(t0, mac(2)), None);
        assert_eq!(fdb.learn(t0, mac(2), Port::Peer(2)), Learned::New);
        // Eviction of the just-learned MAC by a third one.
        fdb.learn(t0, mac(3), Port::Peer(3));
        assert_eq!(fdb.len(), 2);
        assert_eq!(
            [mac(1), mac(2), mac(3)].map(|m| fdb.lookup(t0, m).is_some()),
            [false, true, true]
        );
        assert_invariants(&fdb);
        // Ageing still applies at a later instant.
        let later = t0 + secs(301);
        assert_eq!(fdb.lookup(later, mac(3)), None);
        assert_eq!(fdb.expire(later), 2);
        assert_eq!(fdb.lookup(t0, mac(3)), None, "expired entries are gone");
    }

    #[test]
    fn learns_and_refreshes() {
        let t0 = Instant::now();
        let mut fdb = fdb(16);
        assert_eq!(fdb.lookup(t0, mac(1)), None);
        assert_eq!(fdb.learn(t0, mac(1), Port::Peer(3)), Learned::New);
        assert_eq!(fdb.learn(t0, mac(1), Port::Peer(3)), Learned::Refreshed);
        assert_eq!(fdb.lookup(t0, mac(1)), Some(Port::Peer(3)));
        assert_eq!(fdb.learn(t0, mac(2), Port::Local), Learned::New);
        assert_eq!(fdb.len(), 2);
        // A refresh within the same second does not touch the recency FIFO.
        assert_eq!(fdb.recency.len(), 2);
        let mut seen: Vec<_> = fdb.iter(t0 + secs(5)).collect();
        seen.sort_by_key(|(mac, _, _)| *mac);
        assert_eq!(
            seen,
            vec![
                (mac(1), Port::Peer(3), secs(5)),
                (mac(2), Port::Local, secs(5))
            ]
        );
        assert_invariants(&fdb);
    }

    #[test]
    fn multicast_broadcast_and_zero_are_never_learned() {
        let t0 = Instant::now();
        let mut fdb = fdb(16);
        for source in [
            MacAddr::BROADCAST,
            MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
            MacAddr([0x33, 0x33, 0, 0, 0, 1]),
            MacAddr::ZERO,
        ] {
            assert_eq!(fdb.learn(t0, source, Port::Peer(1)), Learned::Ignored);
            assert_eq!(fdb.lookup(t0, source), None);
        }
        assert!(fdb.is_empty());
        assert_eq!(
            fdb.forward_from_local(t0, MacAddr::BROADCAST),
            Forward::Flood
        );
    }

    #[test]
    fn entries_age_out_after_300_seconds() {
        let t0 = Instant::now();
        let mut fdb = fdb(16);
        fdb.learn(t0, mac(1), Port::Peer(1));
        fdb.learn(t0 + secs(100), mac(2), Port::Peer(1));
        assert_eq!(fdb.lookup(t0 + secs(299), mac(1)), Some(Port::Peer(1)));
        assert_eq!(fdb.expire(t0 + secs(299)), 0);
        assert_eq!(fdb.lookup(t0 + secs(300), mac(1)), None);
        assert_eq!(
            fdb.forward_from_local(t0 + secs(300), mac(1)),
            Forward::Flood
        );
        assert_eq!(fdb.iter(t0 + secs(300)).count(), 1);
        assert_eq!(fdb.len(), 2, "aged entries stay until swept");
        assert_eq!(fdb.expire(t0 + secs(300)), 1);
        assert_eq!(fdb.len(), 1);
        assert_eq!(fdb.next_expiry(), Some(t0 + secs(400)));
        assert_eq!(fdb.expire(t0 + secs(400)), 1);
        assert!(fdb.is_empty());
        assert_eq!(fdb.expirations(), 2);
        assert_eq!(fdb.next_expiry(), None);
        assert_invariants(&fdb);
    }

    #[test]
    fn traffic_keeps_an_entry_alive() {
        let t0 = Instant::now();
        let mut fdb = fdb(16);
        for s in 0..1000 {
            fdb.learn(t0 + secs(s), mac(1), Port::Local);
            assert_eq!(fdb.expire(t0 + secs(s)), 0);
        }
        assert_eq!(fdb.lookup(t0 + secs(1000), mac(1)), Some(Port::Local));
        assert_invariants(&fdb);
    }

    #[test]
    fn refresh_just_after_stamping_is_still_honoured_by_expire() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut fdb = fdb(16);
        fdb.learn(t0, mac(1), Port::Local);
        fdb.learn(t0, mac(2), Port::Local);
        // Refreshed 900 ms later: no new stamp, but last_seen moves.
        assert_eq!(
            fdb.learn(t0 + ms(900), mac(1), Port::Local),
            Learned::Refreshed
        );
        assert_eq!(fdb.expire(t0 + ms(300_500)), 1, "only mac 2 has aged out");
        assert_eq!(fdb.lookup(t0 + ms(300_500), mac(1)), Some(Port::Local));
        let deadline = fdb.next_expiry().unwrap();
        assert_eq!(deadline, t0 + ms(300_900));
        assert!(deadline > t0 + ms(300_500));
        assert_eq!(fdb.expire(deadline), 1);
        assert!(fdb.is_empty());
        assert_invariants(&fdb);
    }

    #[test]
    fn relearning_an_aged_entry_is_new_not_a_move() {
        let t0 = Instant::now();
        let mut fdb = fdb(16);
        fdb.learn(t0, mac(1), Port::Peer(1));
        assert_eq!(
            fdb.learn(t0 + secs(301), mac(1), Port::Peer(2)),
            Learned::New
        );
        assert_eq!(fdb.moves(), 0);
        assert_eq!(fdb.lookup(t0 + secs(301), mac(1)), Some(Port::Peer(2)));
        assert_eq!(fdb.expire(t0 + secs(302)), 0);
        assert_invariants(&fdb);
    }

    #[test]
    fn a_mac_moves_between_ports() {
        let t0 = Instant::now();
        let mut fdb = fdb(16);
        fdb.learn(t0, mac(1), Port::Peer(1));
        assert_eq!(
            fdb.learn(t0 + secs(1), mac(1), Port::Peer(2)),
            Learned::Moved {
                from: Port::Peer(1)
            }
        );
        assert_eq!(
            fdb.forward_from_local(t0 + secs(1), mac(1)),
            Forward::Unicast(2)
        );
        assert_eq!(
            fdb.learn(t0 + secs(1), mac(1), Port::Local),
            Learned::Moved {
                from: Port::Peer(2)
            }
        );
        assert_eq!(fdb.forward_from_local(t0 + secs(1), mac(1)), Forward::Drop);
        assert_eq!(fdb.moves(), 2);
        assert_eq!(fdb.len(), 1);
        assert_invariants(&fdb);
    }

    #[test]
    fn forwarding_from_local() {
        let t0 = Instant::now();
        let mut fdb = fdb(16);
        fdb.learn(t0, mac(1), Port::Peer(7));
        fdb.learn(t0, mac(2), Port::Local);
        assert_eq!(fdb.forward_from_local(t0, mac(1)), Forward::Unicast(7));
        assert_eq!(fdb.forward_from_local(t0, mac(2)), Forward::Drop);
        assert_eq!(fdb.forward_from_local(t0, mac(3)), Forward::Flood);
        assert_eq!(
            fdb.forward_from_local(t0, MacAddr::BROADCAST),
            Forward::Flood
        );
        assert_eq!(
            fdb.forward_from_local(t0, MacAddr([0x33, 0x33, 0xff, 0, 0, 1])),
            Forward::Flood
        );
    }

    #[test]
    fn split_horizon_frames_from_peers_only_go_local() {
        let t0 = Instant::now();
        let mut fdb = fdb(16);
        fdb.learn(t0, mac(1), Port::Peer(7));
        fdb.learn(t0, mac(2), Port::Local);
        for dst in [
            mac(1),
            mac(2),
            mac(3),
            MacAddr::BROADCAST,
            MacAddr([0x01, 0, 0x5e, 0, 0, 9]),
        ] {
            for from in [7, 8] {
                assert_eq!(fdb.forward_from_peer(t0, from, dst), Forward::Local);
            }
        }
    }

    #[test]
    fn removing_a_port_forgets_its_macs() {
        let t0 = Instant::now();
        let mut fdb = fdb(16);
        for n in 0..10 {
            fdb.learn(t0, mac(n), Port::Peer(n % 2));
        }
        fdb.learn(t0, mac(99), Port::Local);
        assert_eq!(fdb.remove_port(Port::Peer(1)), 5);
        assert_eq!(fdb.len(), 6);
        assert_eq!(fdb.lookup(t0, mac(1)), None);
        assert_eq!(fdb.lookup(t0, mac(2)), Some(Port::Peer(0)));
        assert_invariants(&fdb);
    }

    #[test]
    fn eviction_removes_the_least_recently_seen() {
        let t0 = Instant::now();
        let mut fdb = fdb(3);
        fdb.learn(t0, mac(1), Port::Local);
        fdb.learn(t0 + secs(1), mac(2), Port::Local);
        fdb.learn(t0 + secs(2), mac(3), Port::Local);
        fdb.learn(t0 + secs(3), mac(1), Port::Local);
        assert_eq!(fdb.learn(t0 + secs(4), mac(4), Port::Local), Learned::New);
        assert_eq!(fdb.evictions(), 1);
        assert_eq!(fdb.lookup(t0 + secs(4), mac(2)), None);
        for n in [1, 3, 4] {
            assert!(fdb.lookup(t0 + secs(4), mac(n)).is_some());
        }
        assert_invariants(&fdb);
    }

    #[test]
    fn eviction_gives_a_second_chance_to_macs_seen_since_their_stamp() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut fdb = fdb(3);
        for n in 1..=3 {
            fdb.learn(t0, mac(n), Port::Local);
        }
        // Within REQUEUE_INTERVAL: no new stamp, mac 1 still has the oldest one.
        fdb.learn(t0 + ms(500), mac(1), Port::Local);
        assert_eq!(fdb.learn(t0 + ms(600), mac(4), Port::Local), Learned::New);
        assert_eq!(fdb.lookup(t0 + ms(600), mac(2)), None);
        assert_eq!(fdb.learn(t0 + ms(700), mac(5), Port::Local), Learned::New);
        assert_eq!(fdb.lookup(t0 + ms(700), mac(3)), None);
        assert_eq!(fdb.lookup(t0 + ms(700), mac(1)), Some(Port::Local));
        // Not seen since its second chance: next in line.
        fdb.learn(t0 + ms(800), mac(6), Port::Local);
        assert_eq!(fdb.lookup(t0 + ms(800), mac(1)), None);
        assert_eq!(fdb.evictions(), 3);
        assert_invariants(&fdb);
    }

    #[test]
    fn a_mac_flood_never_exceeds_the_bound() {
        let t0 = Instant::now();
        let bound = 1000;
        let mut fdb = fdb(bound);
        fdb.learn(t0, mac(0xffff_ffff), Port::Local);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut distinct = std::collections::HashSet::new();
        for i in 0..100_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut octets = state.to_le_bytes();
            octets[0] &= 0xfe; // unicast
            let source = MacAddr(octets[..6].try_into().unwrap());
            if source.is_zero() {
                continue;
            }
            distinct.insert(source);
            let now = t0 + Duration::from_millis(u64::from(i));
            fdb.learn(now, source, Port::Peer(i % 4));
            // The flood cycles the whole table once a second; the legitimate local host talks twice a
            // second and must survive it.
            if i % 500 == 0 {
                fdb.learn(now, mac(0xffff_ffff), Port::Local);
            }
            assert!(fdb.len() <= bound);
            assert!(fdb.recency.len() <= 2 * bound + COMPACT_SLACK + 1);
        }
        assert_eq!(fdb.len(), bound);
        assert_eq!(fdb.evictions() as usize, distinct.len() + 1 - bound);
        assert_eq!(
            fdb.lookup(t0 + secs(100), mac(0xffff_ffff)),
            Some(Port::Local)
        );
        assert_invariants(&fdb);
    }

    #[test]
    fn zero_capacity_learns_nothing() {
        let t0 = Instant::now();
        let mut fdb = fdb(0);
        assert_eq!(fdb.learn(t0, mac(1), Port::Local), Learned::Ignored);
        assert!(fdb.is_empty());
        assert_eq!(fdb.forward_from_local(t0, mac(1)), Forward::Flood);
    }

    #[test]
    fn time_going_backwards_does_not_panic() {
        let t0 = Instant::now() + secs(1000);
        let mut fdb = fdb(4);
        fdb.learn(t0, mac(1), Port::Local);
        fdb.learn(t0 - secs(500), mac(1), Port::Peer(1));
        fdb.learn(t0 - secs(600), mac(2), Port::Local);
        assert_eq!(fdb.lookup(t0 - secs(900), mac(1)), Some(Port::Peer(1)));
        fdb.expire(t0 - secs(900));
        fdb.expire(t0 + secs(10_000));
        assert!(fdb.is_empty());
        assert_invariants(&fdb);
    }

    /// Release-mode cost of the hot path: `cargo test --release --lib switch -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn measure_hot_path() {
        let t0 = Instant::now();
        let mut fdb = Fdb::new(FdbConfig::default());
        for n in 0..8192 {
            fdb.learn(t0, mac(n), Port::Peer(n % 8));
        }
        let rounds = 20_000_000u32;
        let started = Instant::now();
        for i in 0..rounds {
            let now = t0 + Duration::from_micros(u64::from(i));
            std::hint::black_box(fdb.learn(now, mac(i % 8192), Port::Peer(i % 8192 % 8)));
            std::hint::black_box(fdb.forward_from_local(now, mac((i * 7) % 8192)));
        }
        let per = started.elapsed() / rounds;
        println!("learn + forward_from_local on a full FDB: {per:?} per frame");
        let started = Instant::now();
        let mut fdb = Fdb::new(FdbConfig::default());
        for i in 0..rounds {
            fdb.learn(t0, mac(i), Port::Peer(1));
        }
        println!(
            "learn of a new MAC with eviction (flood): {:?} each",
            started.elapsed() / rounds
        );
    }

    #[derive(Clone, Debug)]
    enum Op {
        Learn(u32, Option<PeerId>),
        Advance(u64),
        Expire,
        RemovePeer(PeerId),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u32..24, proptest::option::of(0u32..3)).prop_map(|(m, p)| Op::Learn(m, p)),
            3 => (0u64..120_000).prop_map(Op::Advance),
            1 => Just(Op::Expire),
            1 => (0u32..3).prop_map(Op::RemovePeer),
        ]
    }

    proptest! {
        /// Against an exact model (last port and last time per MAC): with room for every MAC, lookups agree
        /// exactly; with a small bound, any hit still agrees with the model (evictions only cause misses).
        #[test]
        fn agrees_with_a_model(ops in prop::collection::vec(op(), 1..300), bound in prop_oneof![Just(64usize), 1usize..12]) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut fdb = fdb(bound);
            let mut model: HashMap<MacAddr, (Port, Instant)> = HashMap::new();
            let ageing = fdb.config.ageing;
            for op in ops {
                match op {
                    Op::Learn(m, peer) => {
                        let port = peer.map_or(Port::Local, Port::Peer);
                        fdb.learn(now, mac(m), port);
                        model.insert(mac(m), (port, now));
                    }
                    Op::Advance(ms) => now += Duration::from_millis(ms),
                    Op::Expire => {
                        fdb.expire(now);
                        prop_assert!(fdb.next_expiry().is_none_or(|deadline| deadline > now));
                    }
                    Op::RemovePeer(peer) => {
                        fdb.remove_port(Port::Peer(peer));
                        model.retain(|_, (port, _)| *port != Port::Peer(peer));
                    }
                }
                assert_invariants(&fdb);
                for m in 0..24 {
                    let expected = model
                        .get(&mac(m))
                        .filter(|(_, seen)| now.duration_since(*seen) < ageing)
                        .map(|(port, _)| *port);
                    let found = fdb.lookup(now, mac(m));
                    if bound >= 24 {
                        prop_assert_eq!(found, expected);
                    } else if found.is_some() {
                        prop_assert_eq!(found, expected);
                    }
                }
            }
        }
    }
}
