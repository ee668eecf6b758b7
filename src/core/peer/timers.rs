//! A peer's timer table: when each of its timers is next due, from one definition.
//!
//! The node's timeout handler fires a timer only when [`Peer::due`] says so (session expiry and
//! the path pass check their own conditions each pass; their deadlines wake the node), and
//! `Node::poll_timeout` is the minimum of [`Peer::poll_timeout`] over the peers (and the other
//! owners' own `poll_timeout`), both computed by [`Peer::deadline`] with the same "is a session
//! wanted" verdict. So what the handler acts on and when the io layer wakes it cannot drift apart.

use std::time::Instant;

use super::{Peer, DEAD_AFTER, KEEPALIVE_INTERVAL};

/// Every timer a peer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerTimer {
    /// The next initiation of the handshake in progress (retransmission with backoff).
    Retransmit,
    /// A session reaches its lifetime and is dropped.
    Expire,
    /// Nothing heard from a wanted peer for [`DEAD_AFTER`]: its sessions go.
    Dead,
    /// Nothing sent on a wanted session for [`KEEPALIVE_INTERVAL`]: a keepalive goes.
    Keepalive,
    /// A wanted session is old enough to be replaced.
    Rekey,
    /// A wanted peer without a session and without a handshake in progress: start one.
    Dial,
    /// The path's probes: liveness, lost probes, direct candidates, the MTU search.
    Path,
}

impl PeerTimer {
    pub const ALL: [PeerTimer; 7] = [
        PeerTimer::Retransmit,
        PeerTimer::Expire,
        PeerTimer::Dead,
        PeerTimer::Keepalive,
        PeerTimer::Rekey,
        PeerTimer::Dial,
        PeerTimer::Path,
    ];
}

impl Peer {
    /// When `timer` is next due. `wanted` is the node's verdict on keeping a session with this
    /// peer (see `Node::wants_session`); `now` stands for "at once" (a new session's path timers,
    /// a peer to dial).
    pub fn deadline(&self, timer: PeerTimer, wanted: bool, now: Instant) -> Option<Instant> {
        let current = self.sessions.current();
        match timer {
            PeerTimer::Retransmit => self.handshake.next_attempt,
            PeerTimer::Expire => self.sessions.all().map(|s| s.expires_at()).min(),
            PeerTimer::Dead => {
                current.filter(|_| wanted)?;
                self.last_heard().map(|t| t + DEAD_AFTER)
            }
            PeerTimer::Keepalive => current
                .filter(|_| wanted)
                .map(|s| self.last_sent.unwrap_or(s.created).max(s.created) + KEEPALIVE_INTERVAL),
            PeerTimer::Rekey => current
                .filter(|_| wanted && !self.handshake.in_progress())
                .map(|s| s.rekey_at()),
            PeerTimer::Dial => (wanted
                && current.is_none()
                && !self.handshake.in_progress()
                && (self.endpoint.is_some() || !self.pending.is_empty()))
            .then_some(now),
            PeerTimer::Path => {
                current.filter(|_| wanted)?;
                match self.path.next_liveness {
                    // A new session: its path timers start at the next timeout.
                    None => Some(now),
                    Some(_) => self.path.poll_timeout(),
                }
            }
        }
    }

    /// Whether `timer` is due at `now`.
    pub fn due(&self, timer: PeerTimer, wanted: bool, now: Instant) -> bool {
        self.deadline(timer, wanted, now).is_some_and(|t| now >= t)
    }

    /// The earliest of this peer's timers.
    pub fn poll_timeout(&self, wanted: bool, now: Instant) -> Option<Instant> {
        PeerTimer::ALL
            .iter()
            .filter_map(|&t| self.deadline(t, wanted, now))
            .min()
    }
}
