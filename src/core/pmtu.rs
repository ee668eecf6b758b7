//! Packetization-layer path MTU discovery for one path to one peer, in the spirit of RFC 8899
//! (DPLPMTUD), but probing in bursts so a search converges in a few round trips instead of one size
//! per round trip.
//!
//! [`PmtuSearch`] owns the belief about how large a datagram reaches the peer on one path: the
//! largest size acknowledged (`lo`), the largest size not yet seen to fail (`hi`), the probes of
//! the round in flight and the timers. The node sends each [`Probe`] as an encrypted datagram
//! padded to its size and feeds the peer's acknowledgements back by id; nothing here reads a clock
//! or touches a socket. Invariants: `floor <= lo <= hi <= ceiling`; [`PmtuSearch::current`] is
//! always within `[floor, ceiling]` and, except for the optimistic `ceiling` a fresh search starts
//! from (kept until a round gets an answer or the retries of a silent path run out), is a size that
//! was acknowledged on this path (or the floor, which is assumed to pass), so probe loss can only
//! make it smaller than the truth, never larger; at most [`PROBES_PER_ROUND`] probes are
//! outstanding, held in a fixed array, and the returned `Vec` of a burst is the only allocation.
//!
//! Every round except the opening round of a raise also carries an anchor probe of size `lo`, which
//! is known to pass: if even that one goes unanswered the path is down rather than narrow, and the
//! round is retried instead of being read as "everything is too big".

use std::time::{Duration, Instant};

/// How long after a burst its probes still count: a probe unanswered by then is taken as lost.
/// Generous against the RTTs a mesh sees, and short enough that a search takes seconds.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Delay before repeating a round in which nothing at all was acknowledged (the path looked down).
pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);
/// Times a round that got no acknowledgement at all is repeated before the search gives up and
/// settles on the largest size acknowledged (the floor if none was): an outage longer than this is
/// the node's business, and it restarts the search once it has a working path again.
pub const MAX_RETRIES: u32 = 3;
/// Time after settling before searching again for a larger size, as RFC 8899's raise timer: paths
/// change, and a size lowered by random probe loss gets corrected.
pub const RAISE_INTERVAL: Duration = Duration::from_secs(600);
/// Rounds that yielded acknowledgements after which a search settles even if not yet precise, so a
/// lossy path cannot keep one busy forever. Six rounds narrow 1232..65507 to under
/// [`SETTLE_WIDTH`] on a clean path.
pub const MAX_ROUNDS: u32 = 6;
/// Probes per burst, and so the most ever outstanding.
pub const PROBES_PER_ROUND: usize = 8;
/// A search settles once the largest acknowledged size is within this many bytes of the smallest
/// size not known to fail: another round would buy less than a percent of the datagram.
pub const SETTLE_WIDTH: usize = 8;
/// Link MTUs that paths commonly have (jumbo, FDDI, Ethernet, PPPoE, tunnels, IPv6's minimum); the
/// first round probes the datagram sizes they leave so a typical path is hit or closely bracketed.
pub const LINK_MTU_PLATEAUS: [usize; 17] = [
    9000, 8192, 4352, 2048, 1500, 1492, 1480, 1460, 1450, 1440, 1420, 1400, 1380, 1360, 1340, 1300,
    1280,
];
/// IPv4 plus UDP header bytes: a link MTU minus this is the datagram it carries.
pub const IPV4_UDP_OVERHEAD: usize = 28;
/// IPv6 plus UDP header bytes.
pub const IPV6_UDP_OVERHEAD: usize = 48;

/// A probe the node must send now: a datagram of exactly `size` bytes carrying `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub id: u32,
    pub size: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    id: u32,
    size: usize,
    acked: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A burst is in flight; it is judged at `deadline` unless its largest probe is acked first.
    Probing { deadline: Instant },
    /// The search goes on with the next burst at `at` (at once, or later after a silent round).
    NextRound { at: Instant },
    /// No search in progress; one for larger sizes starts at `raise_at` (never if at the ceiling).
    Settled { raise_at: Option<Instant> },
}

/// Path MTU search for one path to one peer. See the module documentation.
#[derive(Debug, Clone)]
pub struct PmtuSearch {
    floor: usize,
    ceiling: usize,
    current: usize,
    /// Largest size acknowledged in this search (or the floor, or the settled size a raise starts
    /// from).
    lo: usize,
    /// Largest size not yet seen to fail.
    hi: usize,
    /// Rounds of this search that got at least one acknowledgement.
    rounds: u32,
    /// Silent rounds in a row.
    retries: u32,
    /// This search looks only above a settled size; its failure is no news, not an outage.
    raising: bool,
    phase: Phase,
    slots: [Slot; PROBES_PER_ROUND],
    in_flight: usize,
}

impl PmtuSearch {
    /// Starts a search on a new path. `floor`: size assumed to always pass (the node uses 1232,
    /// what IPv6's 1280 minimum leaves); `ceiling`: the largest size the local link can send.
    /// `current()` starts at `ceiling` (optimistic: most paths carry what the local link does, and
    /// starting low would make hosts cache a small PMTU from our ICMP answers for 10 minutes) and
    /// the first round starts at once. A floor above the ceiling is lowered to it: the local link
    /// is a hard limit.
    pub fn new(now: Instant, floor: usize, ceiling: usize) -> PmtuSearch {
        let floor = floor.min(ceiling);
        let mut search = PmtuSearch {
            floor,
            ceiling,
            current: ceiling,
            lo: floor,
            hi: ceiling,
            rounds: 0,
            retries: 0,
            raising: false,
            phase: Phase::Settled { raise_at: None },
            slots: [Slot::default(); PROBES_PER_ROUND],
            in_flight: 0,
        };
        search.begin(now);
        search
    }

    /// Largest datagram believed to reach the peer now. Never below `floor`, never above `ceiling`.
    pub fn current(&self) -> usize {
        self.current
    }

    /// Whether the search has settled (no round in progress).
    pub fn settled(&self) -> bool {
        matches!(self.phase, Phase::Settled { .. })
    }

    /// Probes to send now (empty most of the time). `next_id` supplies fresh ids (the node uses its
    /// RNG).
    pub fn poll_probes(&mut self, now: Instant, next_id: &mut dyn FnMut() -> u32) -> Vec<Probe> {
        if let Phase::Probing { deadline } = self.phase {
            if now < deadline {
                return Vec::new();
            }
            self.end_round(now);
        }
        match self.phase {
            Phase::NextRound { at } if now >= at => self.start_round(now, next_id),
            Phase::Settled { raise_at: Some(at) } if now >= at => {
                self.lo = self.current;
                self.hi = self.ceiling;
                self.rounds = 0;
                self.retries = 0;
                self.raising = true;
                self.start_round(now, next_id)
            }
            _ => Vec::new(),
        }
    }

    /// The peer acknowledged probe `id` (ids not outstanding are ignored, and return false).
    /// Acknowledging the round's largest probe ends the round; `poll_timeout` then asks for a poll
    /// at once.
    pub fn on_ack(&mut self, now: Instant, id: u32) -> bool {
        if !matches!(self.phase, Phase::Probing { .. }) {
            return false;
        }
        let probes = &mut self.slots[..self.in_flight];
        // Should the id source repeat itself within a round, crediting the smallest probe under
        // that id keeps every credited size at or below one that really arrived.
        let Some(slot) = probes
            .iter_mut()
            .filter(|s| s.id == id && !s.acked)
            .min_by_key(|s| s.size)
        else {
            return false;
        };
        slot.acked = true;
        let size = slot.size;
        self.lo = self.lo.max(size);
        self.current = self.current.max(size);
        let largest = probes.iter().map(|s| s.size).max().unwrap_or(0);
        if size == largest {
            // Everything smaller is known good now; waiting for its acks would only cost time.
            self.end_round(now);
        }
        true
    }

    /// When `poll_probes` next has something to do (round timeout, raise timer).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Probing { deadline } => Some(deadline),
            Phase::NextRound { at } => Some(at),
            Phase::Settled { raise_at } => raise_at,
        }
    }

    /// The path changed (new endpoint, relay on/off) or its link size changed: start over.
    pub fn restart(&mut self, now: Instant, floor: usize, ceiling: usize) {
        *self = PmtuSearch::new(now, floor, ceiling);
    }

    /// Full-size traffic to the peer seems lost (the node calls this if it suspects a black hole):
    /// search again from `floor` upward without first assuming `ceiling`.
    pub fn suspect_black_hole(&mut self, now: Instant) {
        self.current = self.floor;
        self.lo = self.floor;
        self.hi = self.ceiling;
        self.begin(now);
    }

    /// Starts a full search over `lo..=hi` at `now`, dropping whatever was in flight.
    fn begin(&mut self, now: Instant) {
        self.rounds = 0;
        self.retries = 0;
        self.raising = false;
        self.in_flight = 0;
        self.phase = if self.lo < self.hi {
            Phase::NextRound { at: now }
        } else {
            Phase::Settled { raise_at: None }
        };
    }

    fn start_round(&mut self, now: Instant, next_id: &mut dyn FnMut() -> u32) -> Vec<Probe> {
        let mut sizes = [0; PROBES_PER_ROUND];
        let n = self.round_sizes(&mut sizes);
        let mut probes = Vec::with_capacity(n);
        for (i, &size) in sizes[..n].iter().enumerate() {
            let mut id = next_id();
            // A repeated id makes an ack ambiguous; a few redraws make that vanishingly rare with
            // any real RNG while staying bounded with a broken one.
            for _ in 0..PROBES_PER_ROUND {
                if !self.slots[..i].iter().any(|s| s.id == id) {
                    break;
                }
                id = next_id();
            }
            self.slots[i] = Slot {
                id,
                size,
                acked: false,
            };
            probes.push(Probe { id, size });
        }
        self.in_flight = n;
        self.phase = Phase::Probing {
            deadline: now + PROBE_TIMEOUT,
        };
        probes
    }

    /// The sizes of the next burst, ascending, into `out`; returns how many. Needs `lo < hi`.
    fn round_sizes(&self, out: &mut [usize; PROBES_PER_ROUND]) -> usize {
        let (lo, hi) = (self.lo, self.hi);
        let mut n = 0;
        // A raise only looks above a settled size; its silence just means "no larger yet".
        if !(self.raising && self.rounds == 0) {
            out[n] = lo;
            n += 1;
        }
        if self.rounds == 0 {
            let mut candidates = [0; 2 * LINK_MTU_PLATEAUS.len()];
            let mut count = 0;
            for mtu in LINK_MTU_PLATEAUS {
                for overhead in [IPV4_UDP_OVERHEAD, IPV6_UDP_OVERHEAD] {
                    let size = mtu.saturating_sub(overhead);
                    if size > lo && size < hi && !candidates[..count].contains(&size) {
                        candidates[count] = size;
                        count += 1;
                    }
                }
            }
            let candidates = &mut candidates[..count];
            candidates.sort_unstable();
            // Spread evenly over the sorted plateaus rather than over bytes: plateaus crowd where
            // real paths are (1250..1472), so that is where the picks crowd too.
            let room = PROBES_PER_ROUND - n - 1;
            if count <= room {
                out[n..n + count].copy_from_slice(candidates);
                n += count;
            } else if room == 1 {
                out[n] = candidates[count / 2];
                n += 1;
            } else {
                for j in 0..room {
                    let index = (2 * j * (count - 1) + room - 1) / (2 * (room - 1));
                    out[n] = candidates[index];
                    n += 1;
                }
            }
            out[n] = hi;
            n += 1;
        } else {
            let width = hi - lo;
            let k = (PROBES_PER_ROUND - 1).min(width);
            for i in 1..=k {
                // ceil(i * width / k) without the product, so no size can overflow it.
                out[n] = lo + width / k * i + (width % k * i).div_ceil(k);
                n += 1;
            }
        }
        n
    }

    /// Judges the round in flight: acknowledged sizes are good, unacknowledged ones above them
    /// lost.
    fn end_round(&mut self, now: Instant) {
        let probes = &self.slots[..self.in_flight];
        let answered = probes.iter().any(|s| s.acked);
        let smallest_lost = probes
            .iter()
            .filter(|s| !s.acked && s.size > self.lo)
            .map(|s| s.size)
            .min();
        self.in_flight = 0;
        if !answered {
            if self.raising && self.rounds == 0 {
                self.settle(now);
                return;
            }
            // Not even the anchor came back: the path is down, which says nothing about its size.
            self.retries += 1;
            if self.retries > MAX_RETRIES {
                // Only the unproven optimistic ceiling differs from `lo` here; after this long a
                // size the path never confirmed is no longer worth betting traffic on.
                self.current = self.lo;
                self.settle(now);
            } else {
                self.phase = Phase::NextRound {
                    at: now + RETRY_INTERVAL,
                };
            }
            return;
        }
        self.retries = 0;
        self.rounds += 1;
        if let Some(lost) = smallest_lost {
            self.hi = self.hi.min(lost - 1);
        }
        self.current = self.lo;
        if self.hi.saturating_sub(self.lo) < SETTLE_WIDTH || self.rounds >= MAX_ROUNDS {
            self.settle(now);
        } else {
            self.phase = Phase::NextRound { at: now };
        }
    }

    fn settle(&mut self, now: Instant) {
        self.raising = false;
        self.phase = Phase::Settled {
            raise_at: (self.current < self.ceiling).then(|| now + RAISE_INTERVAL),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FLOOR: usize = 1232;
    const JUMBO: usize = 8972;
    const RTT: Duration = Duration::from_millis(40);

    /// A path that carries datagrams up to `truth` bytes, loses `loss_per_mille` of round trips at
    /// random (splitmix64, so every run is the same) and carries nothing while `down`.
    struct Path {
        truth: usize,
        down: bool,
        loss_per_mille: u64,
        rng: u64,
    }

    impl Path {
        fn new(truth: usize) -> Path {
            Path::lossy(truth, 0, 0)
        }

        fn lossy(truth: usize, loss_per_mille: u64, seed: u64) -> Path {
            Path {
                truth,
                down: false,
                loss_per_mille,
                rng: seed,
            }
        }

        fn random(&mut self) -> u64 {
            self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn delivers(&mut self, size: usize) -> bool {
            let lost = self.loss_per_mille > 0 && self.random() % 1000 < self.loss_per_mille;
            !self.down && size <= self.truth && !lost
        }
    }

    /// A search driven over a `Path` under a virtual clock, checking the invariants at every event.
    struct Sim {
        t0: Instant,
        now: Instant,
        path: Path,
        search: PmtuSearch,
        acks: Vec<(Instant, u32)>,
        next_id: u32,
        bursts: Vec<Vec<Probe>>,
        /// Until the first round of a fresh search has been judged, `current` may be the unproven
        /// ceiling.
        optimistic: bool,
    }

    impl Sim {
        fn new(path: Path, ceiling: usize) -> Sim {
            let t0 = Instant::now();
            Sim {
                t0,
                now: t0,
                path,
                search: PmtuSearch::new(t0, FLOOR, ceiling),
                acks: Vec::new(),
                next_id: 0,
                bursts: Vec::new(),
                optimistic: true,
            }
        }

        fn elapsed(&self) -> Duration {
            self.now - self.t0
        }

        /// Advances to the next event, if any is due before `until`.
        fn step(&mut self, until: Instant) -> bool {
            let next_ack = self.acks.iter().map(|a| a.0).min();
            let next = match (self.search.poll_timeout(), next_ack) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => return false,
                },
            };
            if next > until {
                return false;
            }
            self.now = self.now.max(next);
            let now = self.now;
            let due: Vec<u32> = self
                .acks
                .iter()
                .filter(|a| a.0 <= now)
                .map(|a| a.1)
                .collect();
            self.acks.retain(|a| a.0 > now);
            for id in due {
                self.search.on_ack(now, id);
                self.check();
            }
            let ids = &mut self.next_id;
            let probes = self.search.poll_probes(now, &mut || {
                *ids = ids.wrapping_add(1);
                *ids
            });
            self.check();
            if !probes.is_empty() {
                assert!(probes.len() <= PROBES_PER_ROUND);
                for p in &probes {
                    if self.path.delivers(p.size) {
                        self.acks.push((now + RTT, p.id));
                    }
                }
                self.bursts.push(probes);
            }
            true
        }

        fn check(&mut self) {
            let s = &self.search;
            assert!(s.current() >= FLOOR.min(s.ceiling) && s.current() <= s.ceiling);
            assert!(s.floor <= s.lo && s.lo <= s.hi && s.hi <= s.ceiling);
            assert!(s.in_flight <= PROBES_PER_ROUND);
            self.optimistic = self.optimistic && s.rounds == 0 && !s.settled();
            assert!(
                self.optimistic || s.current() <= self.path.truth,
                "current {} above the path's {}",
                s.current(),
                self.path.truth
            );
        }

        /// Runs until the search settles; returns the rounds (bursts) it took.
        fn settle(&mut self) -> usize {
            let before = self.bursts.len();
            let limit = self.now + Duration::from_secs(120);
            while !self.search.settled() {
                assert!(self.step(limit), "search did not settle");
            }
            self.bursts.len() - before
        }

        /// Runs every event up to `t` after the start.
        fn run_until(&mut self, t: Duration) {
            let until = self.t0 + t;
            while self.step(until) {}
            self.now = self.now.max(until);
        }
    }

    #[test]
    fn first_round_is_anchor_ceiling_and_spread_plateaus() {
        let t0 = Instant::now();
        let mut s = PmtuSearch::new(t0, FLOOR, JUMBO);
        assert_eq!(s.current(), JUMBO);
        assert!(!s.settled());
        assert_eq!(s.poll_timeout(), Some(t0));
        let mut id = 0;
        let probes = s.poll_probes(t0, &mut || {
            id += 1;
            id
        });
        let sizes: Vec<usize> = probes.iter().map(|p| p.size).collect();
        assert_eq!(sizes, [1232, 1252, 1332, 1412, 1452, 4304, 8952, 8972]);
        assert_eq!(s.poll_timeout(), Some(t0 + PROBE_TIMEOUT));
        assert!(s.poll_probes(t0, &mut || 99).is_empty());
    }

    #[test]
    fn converges_within_settle_width_in_few_rounds() {
        // Measured (40 ms RTT, no loss; rounds = round trips, each waiting out PROBE_TIMEOUT unless
        // its largest probe is acked): true size -> result, rounds, time to settle.
        //   1372 -> 1371, 3 rounds, 3 s     1452 -> 1452, 5 rounds, 5 s
        //   1472 -> 1469, 4 rounds, 4 s     4324 -> 4324, 5 rounds, 5 s
        //   8972 -> 8972, 1 round, 40 ms
        // Over every size 1232..=8972: 1 round for 1, 2 for 84, 3 for 172, 4 for 2434, 5 for 5050.
        for truth in [1372, 1452, 1472, 4324, 8972] {
            let mut sim = Sim::new(Path::new(truth), JUMBO);
            let rounds = sim.settle();
            let current = sim.search.current();
            println!(
                "truth {truth}: current {current} after {rounds} rounds, {:?}",
                sim.elapsed()
            );
            assert!(current <= truth && truth - current < SETTLE_WIDTH);
            assert!(rounds <= MAX_ROUNDS as usize);
        }
    }

    #[test]
    fn current_is_acknowledged_size_from_the_first_judged_round_on() {
        let mut histogram = [0; MAX_ROUNDS as usize + 1];
        for truth in FLOOR..=JUMBO {
            let mut sim = Sim::new(Path::new(truth), JUMBO);
            // Sim::check asserts current <= truth at every event once the first round is judged.
            let rounds = sim.settle();
            assert!(truth - sim.search.current() < SETTLE_WIDTH);
            histogram[rounds] += 1;
        }
        println!("rounds to settle over every size {FLOOR}..={JUMBO}: {histogram:?}");
    }

    #[test]
    fn acks_raise_current_as_they_arrive() {
        let mut sim = Sim::new(Path::new(8000), JUMBO);
        sim.run_until(PROBE_TIMEOUT);
        assert_eq!(sim.search.current(), 4304, "first round judged");
        // The second round's acks arrive one RTT in; current takes them before the round ends.
        sim.run_until(PROBE_TIMEOUT + RTT);
        assert_eq!(sim.search.current(), 7624);
        assert!(!sim.search.settled());
        assert_eq!(
            sim.search.poll_timeout(),
            Some(sim.t0 + PROBE_TIMEOUT * 2),
            "the largest probe is still out"
        );
    }

    #[test]
    fn unknown_and_repeated_acks_are_ignored() {
        let t0 = Instant::now();
        let mut s = PmtuSearch::new(t0, FLOOR, JUMBO);
        assert!(!s.on_ack(t0, 1), "nothing in flight yet");
        let mut id = 100;
        let probes = s.poll_probes(t0, &mut || {
            id += 1;
            id
        });
        assert!(!s.on_ack(t0, 7));
        assert!(s.on_ack(t0, probes[0].id));
        assert!(!s.on_ack(t0, probes[0].id), "already acknowledged");
        assert!(s.on_ack(t0, probes[7].id), "the ceiling");
        assert!(s.settled() && s.current() == JUMBO);
        assert!(!s.on_ack(t0, probes[1].id), "round over");
        assert_eq!(
            s.poll_timeout(),
            None,
            "nothing above the ceiling to raise to"
        );
    }

    #[test]
    fn repeated_ids_credit_the_smaller_probe() {
        let t0 = Instant::now();
        let mut s = PmtuSearch::new(t0, FLOOR, JUMBO);
        let probes = s.poll_probes(t0, &mut || 5);
        assert!(probes.iter().all(|p| p.id == 5));
        assert!(s.on_ack(t0, 5));
        assert!(s.on_ack(t0, 5));
        s.poll_probes(t0 + PROBE_TIMEOUT, &mut || 6);
        assert_eq!(
            s.current(),
            1252,
            "two acks prove no more than the two smallest sizes"
        );
    }

    #[test]
    fn a_silent_round_keeps_current_and_is_retried() {
        // Down from the start: the optimistic ceiling stays while the search waits for the path.
        let mut sim = Sim::new(Path::new(1472), JUMBO);
        sim.path.down = true;
        sim.run_until(PROBE_TIMEOUT);
        assert_eq!(sim.search.current(), JUMBO);
        assert!(!sim.search.settled());
        assert_eq!(
            sim.search.poll_timeout(),
            Some(sim.t0 + PROBE_TIMEOUT + RETRY_INTERVAL)
        );
        sim.path.down = false;
        sim.settle();
        let sizes = |b: &Vec<Probe>| b.iter().map(|p| p.size).collect::<Vec<_>>();
        assert_eq!(
            sizes(&sim.bursts[1]),
            sizes(&sim.bursts[0]),
            "the same round again"
        );
        assert!(1472 - sim.search.current() < SETTLE_WIDTH);

        // Down in a later round: the size already proven stays.
        let mut sim = Sim::new(Path::new(1472), JUMBO);
        sim.run_until(PROBE_TIMEOUT / 2);
        sim.path.down = true;
        sim.run_until(PROBE_TIMEOUT);
        assert_eq!(sim.search.current(), 1452);
        sim.run_until(PROBE_TIMEOUT * 2);
        assert_eq!(sim.search.current(), 1452);
        assert!(!sim.search.settled());
        assert_eq!(
            sim.search.poll_timeout(),
            Some(sim.t0 + PROBE_TIMEOUT * 2 + RETRY_INTERVAL)
        );
        sim.path.down = false;
        sim.settle();
        assert!(1472 - sim.search.current() < SETTLE_WIDTH);
    }

    #[test]
    fn a_path_that_stays_down_settles_after_the_retries() {
        // Confirmed size: kept.
        let mut sim = Sim::new(Path::new(1472), JUMBO);
        sim.run_until(PROBE_TIMEOUT / 2);
        sim.path.down = true;
        sim.settle();
        assert_eq!(sim.search.current(), 1452);
        assert_eq!(sim.bursts.len(), 2 + MAX_RETRIES as usize);

        // Never confirmed: the ceiling is not kept once the retries are spent.
        let mut sim = Sim::new(Path::new(1472), JUMBO);
        sim.path.down = true;
        sim.settle();
        assert_eq!(sim.search.current(), FLOOR);
        assert_eq!(sim.bursts.len(), 1 + MAX_RETRIES as usize);
        let settled_at = sim.now;
        assert_eq!(sim.search.poll_timeout(), Some(settled_at + RAISE_INTERVAL));
    }

    #[test]
    fn a_path_narrower_than_every_plateau_is_found_not_mistaken_for_down() {
        let mut sim = Sim::new(Path::new(1240), JUMBO);
        let rounds = sim.settle();
        assert!(rounds <= 3, "{rounds} rounds");
        assert!(1240 - sim.search.current() < SETTLE_WIDTH);
    }

    #[test]
    fn restart_starts_over_on_the_new_path() {
        let mut sim = Sim::new(Path::new(1472), JUMBO);
        sim.run_until(PROBE_TIMEOUT + RTT / 2);
        let stale: Vec<u32> = sim.bursts.last().unwrap().iter().map(|p| p.id).collect();
        let now = sim.now;
        sim.search.restart(now, FLOOR, 1452);
        sim.optimistic = true;
        assert_eq!(sim.search.current(), 1452);
        assert!(!sim.search.settled());
        assert_eq!(sim.search.poll_timeout(), Some(now));
        assert!(stale.iter().all(|&id| !sim.search.on_ack(now, id)));
        sim.path.truth = 1300;
        sim.acks.clear();
        let before = sim.bursts.len();
        sim.settle();
        assert!(1300 - sim.search.current() < SETTLE_WIDTH);
        let after_restart = &sim.bursts[before..];
        assert_eq!(after_restart[0].first().unwrap().size, FLOOR);
        assert!(after_restart.iter().flatten().all(|p| p.size <= 1452));
    }

    #[test]
    fn raise_timer_finds_a_path_that_grew() {
        let mut sim = Sim::new(Path::new(1452), JUMBO);
        sim.settle();
        let settled = sim.search.current();
        assert_eq!(settled, 1452);
        let settled_at = sim.now;
        assert_eq!(sim.search.poll_timeout(), Some(settled_at + RAISE_INTERVAL));

        // Nothing larger yet: the raise fails quietly.
        let before = sim.bursts.len();
        sim.run_until(settled_at - sim.t0 + RAISE_INTERVAL + PROBE_TIMEOUT);
        assert_eq!(sim.bursts.len(), before + 1);
        let raise = sim.bursts.last().unwrap();
        assert!(raise.iter().all(|p| p.size > settled && p.size <= JUMBO));
        assert!(raise.iter().any(|p| p.size == JUMBO));
        assert!(sim.search.settled());
        assert_eq!(sim.search.current(), settled);
        let next_raise = sim.search.poll_timeout().unwrap();
        assert_eq!(next_raise, sim.now + RAISE_INTERVAL);

        sim.path.truth = 4324;
        sim.run_until(next_raise - sim.t0);
        let rounds = sim.settle();
        assert!(rounds <= MAX_ROUNDS as usize);
        assert!(4324 - sim.search.current() < SETTLE_WIDTH);
    }

    #[test]
    fn black_hole_search_starts_from_the_floor() {
        let mut sim = Sim::new(Path::new(JUMBO), JUMBO);
        sim.settle();
        assert_eq!(sim.search.current(), JUMBO);
        sim.path.truth = 1452;
        sim.acks.clear();
        let now = sim.now + Duration::from_secs(30);
        sim.now = now;
        sim.search.suspect_black_hole(now);
        assert_eq!(sim.search.current(), FLOOR);
        assert!(!sim.search.settled());
        assert_eq!(sim.search.poll_timeout(), Some(now));
        // Sim::check holds current <= truth throughout: the ceiling is never assumed again.
        sim.settle();
        assert!(1452 - sim.search.current() < SETTLE_WIDTH);
    }

    #[test]
    fn random_loss_only_ever_lowers_the_result() {
        let mut below = 0;
        for seed in 0..200 {
            for truth in [1372, 1452, 1472, 4324, 8972] {
                let mut sim = Sim::new(Path::lossy(truth, 50, seed), JUMBO);
                sim.settle();
                let current = sim.search.current();
                assert!(current <= truth);
                if truth - current >= SETTLE_WIDTH {
                    below += 1;
                }
            }
        }
        // Loss costs precision now and then; the raise timer is what wins it back.
        println!("{below} of 1000 searches at 5% loss ended {SETTLE_WIDTH} or more bytes low");
        assert!(below < 200, "{below} of 1000 searches ended low");
    }

    #[test]
    fn degenerate_bounds() {
        let t0 = Instant::now();
        let s = PmtuSearch::new(t0, FLOOR, FLOOR);
        assert!(s.settled() && s.current() == FLOOR && s.poll_timeout().is_none());
        let s = PmtuSearch::new(t0, FLOOR, 1000);
        assert!(s.settled() && s.current() == 1000 && s.poll_timeout().is_none());
        // Only the anchor and the ceiling fit; losing the ceiling leaves a gap too small to search.
        let mut sim = Sim::new(Path::new(1236), 1240);
        assert_eq!(sim.settle(), 1);
        assert_eq!(sim.search.current(), FLOOR);
        assert_eq!(sim.bursts[0].len(), 2);
    }

    fn ceiling_and_truth(max: usize) -> impl Strategy<Value = (usize, usize)> {
        (FLOOR..=max).prop_flat_map(|ceiling| (Just(ceiling), FLOOR..=ceiling))
    }

    proptest! {
        #[test]
        fn stays_in_bounds_and_never_settles_above_truth(
            (ceiling, truth) in ceiling_and_truth(9216),
            loss_per_mille in 0u64..=200,
            seed in any::<u64>(),
        ) {
            let mut sim = Sim::new(Path::lossy(truth, loss_per_mille, seed), ceiling);
            // Sim::check asserts the bounds at every event.
            sim.settle();
            prop_assert!(sim.search.current() <= truth);
            // And again through a raise.
            let raise_at = sim.search.poll_timeout();
            if let Some(at) = raise_at {
                sim.run_until(at - sim.t0);
                sim.settle();
                prop_assert!(sim.search.current() <= truth);
            }
        }

        #[test]
        fn a_clean_path_converges_within_max_rounds(
            (ceiling, truth) in ceiling_and_truth(65507),
        ) {
            let mut sim = Sim::new(Path::new(truth), ceiling);
            let rounds = sim.settle();
            prop_assert!(rounds <= MAX_ROUNDS as usize);
            prop_assert!(truth - sim.search.current() < SETTLE_WIDTH);
        }
    }
}
