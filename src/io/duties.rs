//! What the daemon does besides moving packets: signals, the control socket's requests, rescans
//! of the state directory and of the host's addresses, and writing to the state directory what
//! the node decided.
//!
//! Owns [`Duties`], a task beside worker 0 on its thread, and the state directory's lock. The
//! rule every duty follows: disk and system calls first without the node, then the data-path lock
//! only to hand the node what was read (or to read from it what to write), then the writes after
//! the lock is released. Invariants: no file I/O, fsync or `getifaddrs` runs under the data-path
//! lock (src/io/node_lock.rs refuses it), so a slow disk stalls at most the thread that writes
//! (worker 0 for the duties' own writes, the worker that took an event for [`persist_events`]),
//! never the data path of the others; the node lock
//! and the state lock are never held together (the state lock is only taken without the node), so
//! they cannot deadlock; an invitation is recorded as used on disk before its join reply leaves
//! ([`persist_events`]); after changing the node, the duties wake worker 0, which sends what was
//! queued on its lane and follows the node's new deadline.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::control::ControlRequest;
use super::node_lock::{self, NodeLock};
use super::state::{self, StateDir, REMEMBERED_MEMBERS, RESCAN_INTERVAL};
use super::worker::IoCounters;
use super::RunError;
use crate::core::node::NodeEvent;
use crate::status::{CoreStatus, InterfaceStatus, NodeStatus};

/// How often the host's addresses are re-read for automatic advertising.
const ADDRESS_SCAN_INTERVAL: Duration = Duration::from_secs(5);

/// The lane the duties take the node for: worker 0's, which they wake.
const LANE: u8 = 0;

/// What status needs that the core does not know.
pub struct StaticInfo {
    pub name: String,
    pub listen: String,
    pub interface: InterfaceStatus,
    pub started: Instant,
    pub workers: usize,
}

/// The duties of one daemon.
pub struct Duties {
    /// This host's container range, applied to the bridge and subnet.env as the node's grant
    /// changes.
    pub containers: super::containers::ContainerHost,
    pub node: Arc<NodeLock>,
    pub state: Arc<Mutex<StateDir>>,
    pub io: Arc<IoCounters>,
    /// Worker 0's wake-up, given after the duties changed the node.
    pub wake: Arc<super::wait::Waker>,
    pub info: StaticInfo,
    pub control: mpsc::Receiver<ControlRequest>,
    /// The wildcard listen address whose port is advertised on every host address, when the
    /// config does not name the addresses to advertise; they are re-read as the host changes.
    pub auto_advertise: Option<SocketAddr>,
    /// Other workers' fatal errors (their TAP queue or socket failed): the daemon stops.
    pub failures: mpsc::UnboundedReceiver<RunError>,
}

/// Takes the state directory. Never while holding the node: the two locks are not held together.
pub fn lock_state(state: &Mutex<StateDir>) -> MutexGuard<'_, StateDir> {
    debug_assert!(
        !node_lock::held(),
        "the state lock is never taken under the node lock"
    );
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Duties {
    /// Runs until SIGINT or SIGTERM (`Ok`) or until another worker fails (its error).
    pub async fn run(mut self) -> Result<(), RunError> {
        let mut sigterm = signal(SignalKind::terminate())
            .map_err(|e| RunError(format!("installing SIGTERM handler: {e}")))?;
        let mut sigint = signal(SignalKind::interrupt())
            .map_err(|e| RunError(format!("installing SIGINT handler: {e}")))?;
        let mut rescan = tokio::time::interval(RESCAN_INTERVAL);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_address_scan = Instant::now() + ADDRESS_SCAN_INTERVAL;
        self.node.lock(LANE).handle_timeout(Instant::now());
        self.wake_worker();
        self.apply_grant().await;
        loop {
            tokio::select! {
                _ = sigterm.recv() => { info!("SIGTERM received, shutting down"); return Ok(()) }
                _ = sigint.recv() => { info!("SIGINT received, shutting down"); return Ok(()) }
                Some(failure) = self.failures.recv() => return Err(failure),
                Some(request) = self.control.recv() => self.answer(request),
                _ = rescan.tick() => {
                    let now = Instant::now();
                    let scan_addresses = self.auto_advertise.is_some() && now >= next_address_scan;
                    if scan_addresses {
                        next_address_scan = now + ADDRESS_SCAN_INTERVAL;
                    }
                    self.rescan(now, scan_addresses);
                    self.apply_grant().await;
                }
            }
        }
    }

    /// Wakes worker 0 so what the duties queued on its lane leaves and its timer follows the
    /// node's new deadline. A wake cannot fail short of a broken eventfd; if it does, the
    /// worker still runs the node's timers and sends on its next wake-up.
    fn wake_worker(&self) {
        if let Err(e) = self.wake.wake() {
            tracing::debug!(error = %e, "waking worker 0 failed");
        }
    }

    /// Applies the node's current address grant to the host (read under the lock, applied
    /// after it; nothing happens unless it changed).
    async fn apply_grant(&mut self) {
        let grant = self.node.lock(LANE).grant();
        self.containers.apply(grant).await;
    }

    /// Re-reads the state directory (invitations a `meshd invite` wrote, revocations a
    /// `meshd revoke` wrote) and, when `scan_addresses`, the host's addresses, so a host that was
    /// given a new address tells the members where to find it; hands the node what changed and
    /// writes the members it is in contact with for the next start. The node also gets the wall
    /// clock as it reads now.
    fn rescan(&mut self, now: Instant, scan_addresses: bool) {
        let (invites, revocations, remember) = {
            let mut state = lock_state(&self.state);
            (
                state.scan_invites(),
                state.scan_revocations(),
                state.remember_due(now),
            )
        };
        let endpoints = self
            .auto_advertise
            .filter(|_| scan_addresses)
            .map(|listen| super::host::advertised_endpoints(&[], listen))
            .filter(|endpoints| !endpoints.is_empty());
        let unix_nanos = super::unix_now_nanos();
        let (outcomes, members) = {
            let mut node = self.node.lock(LANE);
            node.set_wall_clock(now, unix_nanos);
            if let Some(pending) = invites {
                node.set_pending_invites(pending);
            }
            let outcomes = state::apply_revocations(now, &mut node, revocations);
            let members = remember.then(|| node.reachable_members(REMEMBERED_MEMBERS));
            if let Some(endpoints) = endpoints {
                node.set_advertise(endpoints);
            }
            (outcomes, members)
        };
        self.wake_worker();
        state::log_revocations(outcomes);
        if let Some(members) = members {
            lock_state(&self.state).remember_members(&members);
        }
    }

    fn answer(&mut self, request: ControlRequest) {
        match request {
            ControlRequest::Status(reply) => {
                let now = Instant::now();
                // The snapshot is taken under the lock; formatting it happens after.
                let snapshot = self.node.lock(LANE).snapshot(now);
                let core = CoreStatus::from(&snapshot);
                let mut counters: BTreeMap<String, u64> = core.counters;
                for (name, value) in self.io.report() {
                    counters.insert(name.to_string(), value);
                }
                let info = &self.info;
                let _ = reply.send(NodeStatus {
                    name: info.name.clone(),
                    public_key: core.public_key,
                    listen: info.listen.clone(),
                    interface: info.interface.clone(),
                    workers: info.workers,
                    uptime_secs: now.duration_since(info.started).as_secs(),
                    network: core.network,
                    certificate_expires: core.certificate_expires,
                    members: core.members,
                    peers: core.peers,
                    fdb: core.fdb,
                    counters,
                    host_network: self.containers.current(),
                    range_conflicts: core.range_conflicts,
                });
            }
        }
    }
}

/// Acts on what the core decided that needs the disk, with the node released (the caller took
/// `events` from the node under its lock): an admitted join is recorded as used before its reply
/// is queued in `replies` (if recording fails the reply is withheld; the joiner retries); a
/// revocation learned by gossip and a renewed certificate are stored.
pub fn persist_events(
    state: &Mutex<StateDir>,
    events: &mut Vec<NodeEvent>,
    replies: &mut Vec<(SocketAddr, Vec<u8>)>,
) {
    if events.is_empty() {
        return;
    }
    let mut state = lock_state(state);
    for event in events.drain(..) {
        match event {
            NodeEvent::JoinAdmitted {
                invite_id,
                name,
                key,
                reply,
                destination,
            } => {
                if let Err(e) = super::invites::mark_used(state.root(), &invite_id, &name, &key) {
                    warn!(%name, error = %e, "cannot record the invitation as used; not answering the join");
                    continue;
                }
                replies.push((destination, reply));
            }
            NodeEvent::Revoked(revocation) => state.persist_revocation(&revocation),
            NodeEvent::CertificateRenewed(certificate) => state.persist_certificate(&certificate),
        }
    }
}
