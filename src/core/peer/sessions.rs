//! A peer's sessions and its initiation in flight: the one owner of key rotation.
//!
//! A peer holds at most three sessions. `current` is the one frames are sent on; `previous` is the
//! one it replaced, kept so packets already in flight at a rekey are still accepted; `next` is a
//! session this node answered as responder and that becomes `current` once the initiator proves it
//! holds the keys by sending on it. Besides them a peer may have one initiation awaiting its
//! response.
//!
//! Invariant: every local index these slots hold is registered in the node's [`IndexTable`]
//! (super::index) while the slot holds it. Every transition here that drops a session or an
//! initiation returns its index as [`Retired`], which is `#[must_use]`: the caller hands it to
//! the index table, so no index outlives its session and no transition can forget one.

use std::time::{Duration, Instant};

use meshd_crypto::{Initiator, RecvKey, ReplayWindow, SendKey, SessionKeys};

/// The initiator of a session starts a new handshake once the session is this old.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// The responder of a session starts a new handshake once the session is this old and the initiator
/// has not (its clock or its packets may be lost); later than the initiator so both rarely collide.
pub const RESPONDER_REKEY_AFTER_TIME: Duration = Duration::from_secs(150);
/// No packet is sent or accepted on a session older than this.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);

pub(crate) struct Session {
    pub local_index: u32,
    pub remote_index: u32,
    pub send: SendKey,
    pub recv: RecvKey,
    pub replay: ReplayWindow,
    pub created: Instant,
    pub we_initiated: bool,
    /// The peer announced it accepts frames with partial L4 checksums on this session
    /// (handshake feature `FEATURE_PARTIAL_CHECKSUM`); a session to an older node never does.
    pub partial_checksums: bool,
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
            partial_checksums: false,
        }
    }

    #[inline]
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.created)
    }

    #[inline]
    pub fn expired(&self, now: Instant) -> bool {
        self.age(now) >= REJECT_AFTER_TIME
    }

    /// When this session stops carrying packets.
    pub fn expires_at(&self) -> Instant {
        self.created + REJECT_AFTER_TIME
    }

    /// When this side should start replacing the session.
    #[inline]
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
    /// The initiation's mac1: a cookie reply to it is sealed with it as associated data.
    pub mac1: [u8; 16],
}

/// Local indices a transition released: at most the three sessions and the initiation.
#[must_use = "retired indices must be released from the index table"]
#[derive(Debug, Default)]
pub(crate) struct Retired {
    indices: [Option<u32>; 4],
}

impl Retired {
    fn push(&mut self, index: u32) {
        if let Some(free) = self.indices.iter_mut().find(|i| i.is_none()) {
            *free = Some(index);
        }
    }

    fn session(mut self, session: Option<Session>) -> Retired {
        if let Some(s) = session {
            self.push(s.local_index);
        }
        self
    }

    fn initiation(mut self, initiation: Option<Initiation>) -> Retired {
        if let Some(i) = initiation {
            self.push(i.local_index);
        }
        self
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.indices.iter().flatten().copied()
    }
}

/// The session slots of one peer and their transitions.
#[derive(Default)]
pub(crate) struct Sessions {
    current: Option<Session>,
    previous: Option<Session>,
    next: Option<Session>,
    initiation: Option<Initiation>,
}

impl Sessions {
    #[inline]
    pub fn current(&self) -> Option<&Session> {
        self.current.as_ref()
    }

    #[inline]
    pub fn current_mut(&mut self) -> Option<&mut Session> {
        self.current.as_mut()
    }

    #[inline]
    pub fn is_up(&self) -> bool {
        self.current.is_some()
    }

    /// Whether a session answered as responder waits for the initiator's first packet.
    pub fn has_next(&self) -> bool {
        self.next.is_some()
    }

    #[inline]
    pub fn session_mut(&mut self, slot: Slot) -> Option<&mut Session> {
        match slot {
            Slot::Current => self.current.as_mut(),
            Slot::Previous => self.previous.as_mut(),
            Slot::Next => self.next.as_mut(),
        }
    }

    #[inline]
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

    /// Every session held, for timers.
    pub fn all(&self) -> impl Iterator<Item = &Session> + '_ {
        [&self.current, &self.previous, &self.next]
            .into_iter()
            .flatten()
    }

    /// The initiation awaiting a response with `local_index`, if that is the one in flight.
    pub fn initiation_mut(&mut self, local_index: u32) -> Option<&mut Initiation> {
        self.initiation
            .as_mut()
            .filter(|i| i.local_index == local_index)
    }

    /// Every local index this peer currently owns (sessions and the pending initiation).
    pub fn local_indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.all()
            .map(|s| s.local_index)
            .chain(self.initiation.as_ref().map(|i| i.local_index))
    }

    /// A new initiation replaces the one in flight (a retransmission uses a fresh index).
    pub fn start_initiation(&mut self, initiation: Initiation) -> Retired {
        Retired::default().initiation(self.initiation.replace(initiation))
    }

    /// Gives up on the initiation in flight.
    pub fn abandon_initiation(&mut self) -> Retired {
        Retired::default().initiation(self.initiation.take())
    }

    /// The response to our initiation arrived: its session becomes current and the one it
    /// replaces previous. The initiation's index lives on as the new session's, so it is not
    /// retired; the old previous session is. Returns whether the peer was down before.
    pub fn install_initiated(&mut self, session: Session) -> (Retired, bool) {
        debug_assert!(self
            .initiation
            .as_ref()
            .is_some_and(|i| i.local_index == session.local_index));
        self.initiation = None;
        let retired = Retired::default().session(self.previous.take());
        let was_up = self.current.is_some();
        self.previous = self.current.replace(session);
        (retired, was_up)
    }

    /// We answered an initiation: the session waits in `next` until the initiator sends on it.
    pub fn install_answered(&mut self, session: Session) -> Retired {
        Retired::default().session(self.next.replace(session))
    }

    /// The initiator proved it holds the keys of `next`: it becomes current, the old current
    /// previous, and any initiation of ours is moot. `None` when there was no `next`; otherwise
    /// the retired indices and whether the peer was up before.
    pub fn promote_next(&mut self) -> Option<(Retired, bool)> {
        let next = self.next.take()?;
        let was_up = self.current.is_some();
        let retired = Retired::default()
            .session(self.previous.take())
            .initiation(self.initiation.take());
        self.previous = self.current.replace(next);
        Some((retired, was_up))
    }

    /// Drops every session past its lifetime.
    pub fn expire(&mut self, now: Instant) -> Retired {
        let mut retired = Retired::default();
        for slot in [&mut self.current, &mut self.previous, &mut self.next] {
            if slot.as_ref().is_some_and(|s| s.expired(now)) {
                retired = retired.session(slot.take());
            }
        }
        retired
    }

    /// Drops every session (the peer is dead); an initiation in flight stays.
    pub fn drop_sessions(&mut self) -> Retired {
        Retired::default()
            .session(self.current.take())
            .session(self.previous.take())
            .session(self.next.take())
    }

    /// Drops everything, the initiation included (the peer was revoked).
    pub fn clear(&mut self) -> Retired {
        let mut retired = self.drop_sessions();
        if let Some(i) = self.initiation.take() {
            retired.push(i.local_index);
        }
        retired
    }
}
