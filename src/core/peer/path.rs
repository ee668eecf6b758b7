//! The path to one peer: the route its datagrams take (direct or through a relay), the probes in
//! flight on it, what they proved, and the path MTU search of the route in use.
//!
//! Invariants: everything learned about a route (misses, confirmations, probes, the MTU search)
//! belongs to that route and is forgotten by [`PathState::reset_route`] whenever the route
//! changes; at most [`PROBES_OUTSTANDING_MAX`] probes are remembered; a relayed route is never
//! relayed again (the node only picks relays it reaches directly), so a datagram crosses at most
//! one relay.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::core::pmtu::PmtuSearch;
pub use crate::core::pmtu::PROBE_TIMEOUT;
use crate::core::switch::PeerId;

/// How often the path in use is probed for liveness while it answers.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// Consecutive lost liveness probes after which the path in use is given up for another.
pub const PATH_LOST_AFTER: u32 = 3;
/// While relayed, how often a direct endpoint of the peer is probed to find the way back.
pub const DIRECT_RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// Full-size probes lost in a row (while small ones are answered) after which the path is taken
/// to have narrowed and its MTU is searched again from the floor.
pub const BLACK_HOLE_AFTER: u32 = 2;
/// Direct initiations tried before a handshake alternates between a relay and direct.
pub const RELAY_AFTER_ATTEMPTS: u32 = 2;
/// Probes a peer may have outstanding; older ones are forgotten first.
pub const PROBES_OUTSTANDING_MAX: usize = 16;
/// Endpoints a peer advertises that are kept as direct candidates.
pub const CANDIDATES_MAX: usize = 4;

/// How a datagram reaches a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Direct(SocketAddr),
    /// Inside a relay envelope, through this member (which has a direct path to the peer).
    Relay(PeerId),
}

/// Why a probe was sent, which says what its acknowledgement (or its loss) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbePurpose {
    /// Is the path in use still there?
    Liveness,
    /// Is this direct endpoint reachable both ways (sent while relayed)?
    Candidate,
    /// Does a datagram of this size get through (path MTU search)?
    Pmtu,
    /// Does a datagram of the size the search settled on still get through (black-hole check)?
    Confirm,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct SentProbe {
    pub id: u32,
    pub route: Route,
    pub purpose: ProbePurpose,
    pub sent: Instant,
}

/// The path state of a peer: which route its datagrams take, what is known about it, and the
/// probes in flight. Only meaningful while a session is up; reset when the session goes.
#[derive(Default)]
pub(crate) struct PathState {
    /// The member frames go through while the direct path does not work; `None` means direct.
    pub relay: Option<PeerId>,
    /// Endpoints the peer advertises (gossip), probed while relayed.
    pub candidates: Vec<SocketAddr>,
    /// Which candidate the next direct probe goes to.
    pub cursor: usize,
    /// Lost liveness probes in a row on the route in use.
    pub misses: u32,
    /// Lost full-size confirmation probes in a row while small probes were answered.
    pub confirm_misses: u32,
    /// Turns of relay selection so far, so a failing relay is followed by another one.
    pub rotation: u32,
    pub next_liveness: Option<Instant>,
    pub next_candidate: Option<Instant>,
    /// The last acknowledgement that proved the route in use works both ways.
    pub confirmed: Option<Instant>,
    pub probes: VecDeque<SentProbe>,
    /// The path MTU search of the route in use, and that route.
    pub pmtu: Option<(Route, PmtuSearch)>,
}

impl PathState {
    /// Forgets everything learned about the route (the session went, or the route changed).
    pub fn reset_route(&mut self) {
        self.misses = 0;
        self.confirm_misses = 0;
        self.confirmed = None;
        self.probes.clear();
        self.pmtu = None;
        self.next_liveness = None;
        self.next_candidate = None;
    }

    /// The direct endpoints worth probing: the one in use first, then the advertised ones.
    pub fn next_candidate_after(&mut self, endpoint: Option<SocketAddr>) -> Option<SocketAddr> {
        let mut all: Vec<SocketAddr> = endpoint.into_iter().collect();
        all.extend(self.candidates.iter().filter(|c| Some(**c) != endpoint));
        if all.is_empty() {
            return None;
        }
        let pick = all[self.cursor % all.len()];
        self.cursor = self.cursor.wrapping_add(1);
        Some(pick)
    }

    pub fn remember_probe(&mut self, probe: SentProbe) {
        if self.probes.len() >= PROBES_OUTSTANDING_MAX {
            self.probes.pop_front();
        }
        self.probes.push_back(probe);
    }
}

/// What expired probes meant for the route in use (see [`PathState::expire_probes`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ProbeLosses {
    /// The route in use lost enough liveness probes in a row to be given up.
    pub route_lost: bool,
    /// Full-size probes were lost while small ones passed: the path narrowed.
    pub black_hole: bool,
}

impl PathState {
    /// Forgets probes not answered within [`PROBE_TIMEOUT`]; lost liveness probes on `route`
    /// (the one in use) count as misses and lost full-size ones as a possible black hole. Either
    /// makes the next liveness probe go out at once.
    pub fn expire_probes(&mut self, now: Instant, route: Route) -> ProbeLosses {
        let (mut lost, mut lost_full_size) = (0, 0);
        self.probes.retain(|p| {
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
        let mut losses = ProbeLosses::default();
        if lost > 0 {
            self.misses += lost;
            self.next_liveness = Some(now);
        } else if lost_full_size > 0 {
            self.confirm_misses += lost_full_size;
            self.next_liveness = Some(now);
            if self.confirm_misses >= BLACK_HOLE_AFTER {
                self.confirm_misses = 0;
                losses.black_hole = self.pmtu.is_some();
            }
        }
        losses.route_lost = self.misses >= PATH_LOST_AFTER;
        losses
    }

    /// Whether a liveness probe is due now; if so, schedules the one after it (sooner while the
    /// route misses answers).
    pub fn liveness_due(&mut self, now: Instant) -> bool {
        let due = self.next_liveness.get_or_insert(now + PROBE_INTERVAL);
        if now < *due {
            return false;
        }
        *due = now
            + if self.misses > 0 {
                PROBE_TIMEOUT
            } else {
                PROBE_INTERVAL
            };
        true
    }

    /// While relayed: whether a direct candidate is due for a probe now (and schedules the next).
    pub fn candidate_due(&mut self, now: Instant) -> bool {
        if self.relay.is_none() {
            return false;
        }
        let due = self
            .next_candidate
            .get_or_insert(now + DIRECT_RETRY_INTERVAL);
        if now < *due {
            return false;
        }
        *due = now + DIRECT_RETRY_INTERVAL;
        true
    }

    /// The probe size the path MTU search settled on for `route`, if it has.
    pub fn settled_size(&self, route: Route) -> Option<usize> {
        self.pmtu
            .as_ref()
            .filter(|(r, search)| *r == route && search.settled())
            .map(|(_, search)| search.current())
    }

    /// An acknowledgement proved the route in use works both ways.
    pub fn confirm(&mut self, now: Instant) {
        self.misses = 0;
        self.confirmed = Some(now);
    }

    /// Goes back to the direct path (the relay is given up, or a direct probe was answered).
    /// Returns whether a relay was in use.
    pub fn leave_relay(&mut self) -> bool {
        self.relay.take().is_some()
    }

    /// Takes `relay` for the route from now on, with fresh probes. Returns whether the path was
    /// direct before; `None` if `relay` was already in use.
    pub fn enter_relay(&mut self, now: Instant, relay: PeerId) -> Option<bool> {
        if self.relay == Some(relay) {
            return None;
        }
        let was_direct = self.relay.replace(relay).is_none();
        self.reset_route();
        self.next_liveness = Some(now + PROBE_INTERVAL);
        self.next_candidate = Some(now + DIRECT_RETRY_INTERVAL);
        Some(was_direct)
    }

    /// When one of this path's timers is next due (all of them only run while a session is up).
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.next_liveness,
            self.next_candidate,
            self.probes
                .iter()
                .map(|probe| probe.sent)
                .min()
                .map(|t| t + PROBE_TIMEOUT),
            self.pmtu.as_ref().and_then(|(_, m)| m.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
