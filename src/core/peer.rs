//! Per-peer state: sessions, the handshake in progress, timers and traffic totals.
//!
//! A peer holds at most three sessions. `current` is the one frames are sent on; `previous` is the
//! one it replaced, kept so packets already in flight at a rekey are still accepted; `next` is a
//! session this node answered as responder and that becomes `current` once the initiator proves it
//! holds the keys by sending on it. Every session's local index is registered in the node's index
//! map while the session exists and is removed with it; that bookkeeping lives in `Node`, which owns
//! the map.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshd_crypto::{
    Certificate, Initiator, PublicKey, RecvKey, ReplayWindow, SendKey, SessionKeys,
};

use super::buffer::PacketBuf;
use super::pmtu::PmtuSearch;
use super::switch::PeerId;
use crate::wire::PayloadKind;

/// The initiator of a session starts a new handshake once the session is this old.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// The responder of a session starts a new handshake once the session is this old and the initiator
/// has not (its clock or its packets may be lost); later than the initiator so both rarely collide.
pub const RESPONDER_REKEY_AFTER_TIME: Duration = Duration::from_secs(150);
/// No packet is sent or accepted on a session older than this.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// A keepalive is sent on an established session when nothing else was sent for this long.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// An established peer from which nothing arrived for this long is considered gone.
pub const DEAD_AFTER: Duration = Duration::from_secs(35);
/// First handshake retransmission delay; it doubles with each attempt up to the maximum.
pub const HANDSHAKE_RETRY_BASE: Duration = Duration::from_secs(1);
/// Largest handshake retransmission delay.
pub const HANDSHAKE_RETRY_MAX: Duration = Duration::from_secs(16);
/// A peer whose handshake has not completed after this long is shown as down.
pub const UNREACHABLE_AFTER: Duration = Duration::from_secs(20);
/// Frames kept for a peer while its handshake is in progress.
pub const PENDING_FRAMES_MAX: usize = 32;
/// How often the path in use is probed for liveness while it answers.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// A probe not acknowledged within this is lost; the next liveness probe goes out at once.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
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

pub(crate) struct Session {
    pub local_index: u32,
    pub remote_index: u32,
    pub send: SendKey,
    pub recv: RecvKey,
    pub replay: ReplayWindow,
    pub created: Instant,
    pub we_initiated: bool,
}

impl Session {
    pub fn new(
        local_index: u32,
        remote_index: u32,
        keys: SessionKeys,
        now: Instant,
        we_initiated: bool,
    ) -> Session {
        Session {
            local_index,
            remote_index,
            send: keys.send,
            recv: keys.recv,
            replay: ReplayWindow::new(),
            created: now,
            we_initiated,
        }
    }

    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.created)
    }

    pub fn expired(&self, now: Instant) -> bool {
        self.age(now) >= REJECT_AFTER_TIME
    }

    /// When this side should start replacing the session.
    pub fn rekey_at(&self) -> Instant {
        self.created
            + if self.we_initiated {
                REKEY_AFTER_TIME
            } else {
                RESPONDER_REKEY_AFTER_TIME
            }
    }
}

/// Which of a peer's sessions a packet arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Current,
    Previous,
    Next,
}

/// An initiation this node sent and awaits the response to.
pub(crate) struct Initiation {
    pub initiator: Initiator,
    pub local_index: u32,
}

/// Retransmission bookkeeping of a handshake this node is driving.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct HandshakeProgress {
    /// Initiations sent in this round.
    pub attempts: u32,
    /// When this round started; `None` while no handshake is being driven.
    pub started: Option<Instant>,
    /// When the next initiation goes out.
    pub next_attempt: Option<Instant>,
}

impl HandshakeProgress {
    pub fn in_progress(&self) -> bool {
        self.next_attempt.is_some()
    }
}

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

pub(crate) struct Peer {
    pub name: String,
    pub public_key: PublicKey,
    /// mac1 key for messages sent to this peer (derived from its public key).
    pub mac1_key: [u8; 32],
    pub endpoint: Option<SocketAddr>,
    /// The newest verified certificate seen for this key (handshake or gossip).
    pub certificate: Option<Certificate>,
    /// Listed in the config: always kept connected, the way back into the mesh.
    pub bootstrap: bool,
    pub initiation: Option<Initiation>,
    pub handshake: HandshakeProgress,
    pub current: Option<Session>,
    pub previous: Option<Session>,
    pub next: Option<Session>,
    /// Newest initiation timestamp accepted from this peer; older or equal ones are replays.
    pub last_init_timestamp: u64,
    /// Payloads (frames, membership messages) waiting for a session, with their kind.
    pub pending: VecDeque<(PayloadKind, PacketBuf)>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub last_handshake: Option<Instant>,
    pub last_sent: Option<Instant>,
    pub last_received: Option<Instant>,
    pub path: PathState,
}

impl Peer {
    pub fn new(name: String, public_key: PublicKey, endpoint: Option<SocketAddr>) -> Peer {
        Peer {
            mac1_key: meshd_crypto::mac1_key(&public_key),
            name,
            public_key,
            endpoint,
            certificate: None,
            bootstrap: false,
            initiation: None,
            handshake: HandshakeProgress::default(),
            current: None,
            previous: None,
            next: None,
            last_init_timestamp: 0,
            pending: VecDeque::new(),
            rx_bytes: 0,
            tx_bytes: 0,
            last_handshake: None,
            last_sent: None,
            last_received: None,
            path: PathState::default(),
        }
    }

    pub fn session_mut(&mut self, slot: Slot) -> Option<&mut Session> {
        match slot {
            Slot::Current => self.current.as_mut(),
            Slot::Previous => self.previous.as_mut(),
            Slot::Next => self.next.as_mut(),
        }
    }

    pub fn slot_of(&self, local_index: u32) -> Option<Slot> {
        let is = |s: &Option<Session>| s.as_ref().is_some_and(|s| s.local_index == local_index);
        if is(&self.current) {
            Some(Slot::Current)
        } else if is(&self.previous) {
            Some(Slot::Previous)
        } else if is(&self.next) {
            Some(Slot::Next)
        } else {
            None
        }
    }

    /// The instant of the last sign of life on the current session.
    pub fn last_heard(&self) -> Option<Instant> {
        let created = self.current.as_ref().map(|s| s.created);
        match (self.last_received, created) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// "up", "connecting" or "down", as shown by `meshd status`.
    pub fn state(&self, now: Instant) -> &'static str {
        if self.current.is_some() {
            "up"
        } else if self.next.is_some()
            || self
                .handshake
                .started
                .is_some_and(|t| now.saturating_duration_since(t) < UNREACHABLE_AFTER)
        {
            "connecting"
        } else {
            "down"
        }
    }

    /// Every local index this peer currently owns (sessions and the pending initiation).
    pub fn local_indices(&self) -> impl Iterator<Item = u32> + '_ {
        [&self.current, &self.previous, &self.next]
            .into_iter()
            .filter_map(|s| s.as_ref().map(|s| s.local_index))
            .chain(self.initiation.as_ref().map(|i| i.local_index))
    }
}

/// Delay before handshake attempt number `attempts` (0-based) is retransmitted, before jitter.
pub fn retry_delay(attempts: u32) -> Duration {
    HANDSHAKE_RETRY_BASE
        .saturating_mul(1u32 << attempts.min(16))
        .min(HANDSHAKE_RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_backs_off_to_a_cap() {
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(1), Duration::from_secs(2));
        assert_eq!(retry_delay(3), Duration::from_secs(8));
        assert_eq!(retry_delay(4), HANDSHAKE_RETRY_MAX);
        assert_eq!(retry_delay(1000), HANDSHAKE_RETRY_MAX);
    }
}
