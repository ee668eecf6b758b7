//! One member this node can talk to: its identity, its sessions ([`Sessions`]), the handshake it
//! is driving, its path ([`PathState`]), what waits for a session, and its traffic clocks.
//!
//! The peer owns the facts about itself; the node decides with them. Two clocks are kept apart, as
//! wireguard-go keeps `timersDataSent` apart from `timersAnyAuthenticatedPacketSent`: the last
//! authenticated packet of any kind (keepalives and probes included) drives keepalives and dead-peer
//! detection, while only data (frames and relayed traffic; not gossip, probes or keepalives) keeps an
//! on-demand session wanted, so a session that carries nothing but its own upkeep ends.

mod index;
mod path;
mod sessions;
mod timers;

pub(crate) use index::IndexTable;
pub(crate) use path::{PathState, ProbePurpose, Route, SentProbe};
pub use path::{
    BLACK_HOLE_AFTER, CANDIDATES_MAX, DIRECT_RETRY_INTERVAL, PATH_LOST_AFTER,
    PROBES_OUTSTANDING_MAX, PROBE_INTERVAL, PROBE_TIMEOUT, RELAY_AFTER_ATTEMPTS,
};
pub(crate) use sessions::{Initiation, Retired, Session, Sessions, Slot};
pub use sessions::{REJECT_AFTER_TIME, REKEY_AFTER_TIME, RESPONDER_REKEY_AFTER_TIME};
pub(crate) use timers::PeerTimer;

use crate::core::limit::TokenBucket;
use crate::core::ranges::Grant;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshd_crypto::{Certificate, Cookie, PublicKey};

use super::buffer::PacketBuf;
use crate::wire::PayloadKind;

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

/// How a peer's connection looks from here, as `meshd status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    Up,
    Connecting,
    Down,
}

impl PeerState {
    pub const fn as_str(self) -> &'static str {
        match self {
            PeerState::Up => "up",
            PeerState::Connecting => "connecting",
            PeerState::Down => "down",
        }
    }
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

pub(crate) struct Peer {
    pub name: String,
    pub public_key: PublicKey,
    /// mac1 key for messages sent to this peer (derived from its public key).
    pub mac1_key: [u8; 32],
    pub endpoint: Option<SocketAddr>,
    /// The newest verified certificate seen for this key (handshake or gossip).
    pub certificate: Option<Certificate>,
    /// The address grant of that certificate, if it has a consistent one (the guard's input).
    pub grant: Option<Grant>,
    /// New MAC addresses this member may still teach this host (made at its first frame).
    pub learning: Option<TokenBucket>,
    /// Listed in the config: always kept connected, the way back into the mesh.
    pub bootstrap: bool,
    pub sessions: Sessions,
    pub handshake: HandshakeProgress,
    /// Newest initiation timestamp accepted from this peer; older or equal ones are replays.
    pub last_init_timestamp: u64,
    /// Payloads (frames, membership messages) waiting for a session, with their kind.
    pub pending: VecDeque<(PayloadKind, PacketBuf)>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub last_handshake: Option<Instant>,
    /// The last authenticated packet of any kind sent (keepalives and probes included).
    pub last_sent: Option<Instant>,
    /// The last authenticated packet of any kind received.
    pub last_received: Option<Instant>,
    /// The last data (frames, relayed traffic) sent or received: what keeps an on-demand
    /// session wanted.
    pub last_data: Option<Instant>,
    pub path: PathState,
    /// The newest cookie this peer sent us while under load, and when: our initiations to it
    /// carry mac2 under it while it is fresh (see `core::cookie`).
    pub cookie: Option<(Cookie, Instant)>,
}

impl Peer {
    pub fn new(name: String, public_key: PublicKey, endpoint: Option<SocketAddr>) -> Peer {
        Peer {
            mac1_key: meshd_crypto::mac1_key(&public_key),
            name,
            public_key,
            endpoint,
            certificate: None,
            grant: None,
            learning: None,
            bootstrap: false,
            sessions: Sessions::default(),
            handshake: HandshakeProgress::default(),
            last_init_timestamp: 0,
            pending: VecDeque::new(),
            rx_bytes: 0,
            tx_bytes: 0,
            last_handshake: None,
            last_sent: None,
            last_received: None,
            last_data: None,
            path: PathState::default(),
            cookie: None,
        }
    }

    /// Notes an authenticated packet of `kind` sent now.
    #[inline]
    pub fn note_sent(&mut self, now: Instant, kind: PayloadKind, plain_len: usize) {
        self.tx_bytes += plain_len as u64;
        self.last_sent = Some(now);
        if kind.is_data() {
            self.last_data = Some(now);
        }
    }

    /// Notes an authenticated packet of `kind` received now.
    #[inline]
    pub fn note_received(&mut self, now: Instant, kind: PayloadKind, plain_len: usize) {
        self.rx_bytes += plain_len as u64;
        self.last_received = Some(now);
        if kind.is_data() {
            self.last_data = Some(now);
        }
    }

    /// The instant of the last sign of life on the current session.
    pub fn last_heard(&self) -> Option<Instant> {
        let created = self.sessions.current().map(|s| s.created);
        match (self.last_received, created) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// How the connection looks, as shown by `meshd status`.
    pub fn state(&self, now: Instant) -> PeerState {
        if self.sessions.is_up() {
            PeerState::Up
        } else if self.sessions.has_next()
            || self
                .handshake
                .started
                .is_some_and(|t| now.saturating_duration_since(t) < UNREACHABLE_AFTER)
        {
            PeerState::Connecting
        } else {
            PeerState::Down
        }
    }

    /// Every local index this peer currently owns (sessions and the pending initiation).
    pub fn local_indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.sessions.local_indices()
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
