//! The timer pass: every peer's due timers (from its timer table, `peer::PeerTimer`), the sweep
//! of aged tables, membership's timers; and `poll_timeout`, the minimum of all the owners'.
//!
//! Invariant: the dead-peer, keepalive, rekey, dial and retransmit timers fire only when
//! `Peer::due` says so, and `poll_timeout` takes the same deadlines, so the handler and the
//! wake-up can never disagree. Session expiry and the path timers check their own conditions on
//! every pass (their deadlines only wake the node). Whether a session is wanted is decided in one
//! place (`wants_session`) for both.

use tracing::warn;

use crate::core::limit::LIMITER_SWEEP_INTERVAL;
use crate::core::peer::{PeerState, PeerTimer, DEAD_AFTER};
use crate::core::switch::Port;

use super::*;

impl Node {
    /// Runs every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observe(now);
        for id in 0..self.peers.len() as PeerId {
            self.peer_timers(now, id);
        }
        if now >= self.next_sweep {
            self.fdb.expire(now);
            self.limiter.sweep(now);
            self.next_sweep = now + SWEEP_INTERVAL.min(LIMITER_SWEEP_INTERVAL);
        }
        self.flush_endpoints(now);
        self.membership.handle_timeout(now);
        self.pump_membership(now);
    }

    pub(super) fn peer_timers(&mut self, now: Instant, id: PeerId) {
        let retired = self.peers[id as usize].sessions.expire(now);
        self.retire(retired);
        let wanted = self.wants_session(id, now);
        let peer = &mut self.peers[id as usize];
        if peer.due(PeerTimer::Dead, wanted, now) {
            warn!(peer = %peer.name, "peer down: nothing received for {}s", DEAD_AFTER.as_secs());
            let retired = peer.sessions.drop_sessions();
            peer.path.reset_route();
            peer.path.relay = None;
            self.retire(retired);
            self.fdb.remove_port(Port::Peer(id));
        }
        // The path timers decide about each of their probes themselves on every pass while a
        // wanted session is up; `PeerTimer::Path` is when they next need a pass.
        if wanted && self.peers[id as usize].sessions.is_up() {
            self.path_timers(now, id);
        }
        if self.peers[id as usize].due(PeerTimer::Keepalive, wanted, now) {
            self.send_keepalive(now, id);
        }
        let peer = &self.peers[id as usize];
        if peer.handshake.in_progress() {
            if peer.due(PeerTimer::Retransmit, wanted, now) {
                self.send_initiation(now, id);
            }
        } else if peer.due(PeerTimer::Rekey, wanted, now) || peer.due(PeerTimer::Dial, wanted, now)
        {
            self.start_handshake(now, id);
        }
        let peer = &mut self.peers[id as usize];
        if !peer.sessions.is_up() && !peer.pending.is_empty() && peer.state(now) == PeerState::Down
        {
            let n = peer.pending.len() as u64;
            self.counters.tx_no_session += n;
            for (_, frame) in std::mem::take(&mut peer.pending) {
                self.pool.give(frame);
            }
        }
    }

    /// Whether the node keeps a session with this peer alive (keepalives, rekeys, redials): always
    /// in a full mesh; in a large network only for bootstrap members, peers with payloads waiting
    /// and peers that carried data recently. Keepalives, probes and gossip are not data, so a
    /// session that carries only its own upkeep is left to expire.
    pub(super) fn wants_session(&self, id: PeerId, now: Instant) -> bool {
        let peer = &self.peers[id as usize];
        if self.full_mesh() || peer.bootstrap || !peer.pending.is_empty() {
            return true;
        }
        peer.last_data
            .is_some_and(|t| now.saturating_duration_since(t) < ON_DEMAND_IDLE)
    }

    /// When `handle_timeout` next has work to do: the earliest of every owner's timers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let peers = (0..self.peers.len() as PeerId).filter_map(|id| {
            let wanted = self.wants_session(id, self.last_now);
            self.peers[id as usize].poll_timeout(wanted, self.last_now)
        });
        [
            Some(self.next_sweep),
            self.membership.poll_timeout(),
            self.observed.deadline(),
        ]
        .into_iter()
        .flatten()
        .chain(peers)
        .min()
    }
}
