//! The node's state directory as the running daemon sees it: invitations written by
//! `meshd invite`, and (with membership) revocations and the renewed certificate.
//!
//! Owns re-reading the directory when it changes and persisting what the core decided. Nothing
//! here takes the node: reading and writing happen with the data-path lock released (every disk
//! access checks it, src/io/node_lock.rs), and the callers hand the node what was read, or read
//! from the node what to write, under the lock but without touching the disk. Invariant:
//! an invitation is recorded as used on disk before the join reply leaves, so a token cannot work
//! twice even across a crash; a directory that cannot be read is logged once per change, never
//! fatal (the node keeps running with what it had).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use meshd_crypto::{Certificate, PublicKey};
use tracing::{info, warn};

use super::node_lock::ensure_unlocked;
use crate::core::invite::PendingInvite;
use crate::core::membership::Revocation;
use crate::core::node::PeerSpec;
use crate::core::Node;

/// How often the daemon looks for new invitations (a `meshd invite` run) in the state directory.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(1);

/// A join request makes the daemon re-read its invitations at most this often, so one run in a
/// script (`invite` then `join` at once) works and a flood of requests cannot make it read the
/// disk per datagram.
pub const JOIN_RESCAN_MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Members remembered for the next start (the file `members` in the state directory).
pub const REMEMBERED_MEMBERS: usize = 8;
/// How often the remembered members are refreshed while the node runs.
pub const REMEMBER_INTERVAL: Duration = Duration::from_secs(30);

/// Members the node had sessions with when it last ran, so it can rejoin after a restart even
/// when its configured bootstrap members are gone. One line per member: `name key endpoint`.
/// A damaged file or line is skipped: the cache only ever adds contacts, never trust (every
/// peer still proves its certificate in the handshake).
pub fn load_remembered_members(state_dir: &Path) -> Vec<PeerSpec> {
    if ensure_unlocked("reading remembered members").is_err() {
        return Vec::new();
    }
    let Ok(text) = std::fs::read_to_string(state_dir.join("members")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let name = parts.next()?;
            let key = parts.next()?.parse().ok()?;
            let endpoint = parts.next()?.parse().ok()?;
            crate::config::validate_node_name(name).ok()?;
            Some(PeerSpec {
                name: name.to_string(),
                public_key: key,
                endpoint: Some(endpoint),
            })
        })
        .take(REMEMBERED_MEMBERS)
        .collect()
}

fn render_members(members: &[PeerSpec]) -> String {
    members
        .iter()
        .filter_map(|m| Some(format!("{} {} {}\n", m.name, m.public_key, m.endpoint?)))
        .collect()
}

pub struct StateDir {
    root: PathBuf,
    remembered: String,
    next_remember: Option<Instant>,
    invites_seen: Option<SystemTime>,
    revocations_seen: Option<SystemTime>,
    last_join_rescan: Option<Instant>,
}

/// Where revocations are kept, one file per revoked key.
pub fn revocations_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("revocations")
}

fn revocation_file(state_dir: &Path, key: &PublicKey) -> PathBuf {
    let hex: String = key.as_bytes()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    revocations_dir(state_dir).join(format!("{hex}.rev"))
}

/// Every revocation file in the state directory that parses (verification is the core's job).
/// Unreadable files are skipped with a warning: one bad file must not hide the others.
pub fn load_revocations(state_dir: &Path) -> Vec<Revocation> {
    if let Err(e) = ensure_unlocked("reading revocations") {
        warn!(error = %e, "not reading revocations");
        return Vec::new();
    }
    let dir = revocations_dir(state_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("rev") {
            continue;
        }
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| STANDARD.decode(text.trim()).map_err(|e| e.to_string()))
            .and_then(|bytes| Revocation::decode(&bytes).map_err(|e| e.to_string()));
        match parsed {
            Ok(r) => out.push(r),
            Err(e) => {
                warn!(file = %path.display(), error = %e, "ignoring an unreadable revocation")
            }
        }
    }
    out
}

/// Stores a revocation (mode 0600 directory 0700), atomically; an existing one is replaced.
pub fn write_revocation(state_dir: &Path, revocation: &Revocation) -> std::io::Result<()> {
    ensure_unlocked("storing a revocation")?;
    let dir = revocations_dir(state_dir);
    crate::enroll::create_state_dir(&dir)?;
    let mut text = STANDARD.encode(revocation.encode());
    text.push('\n');
    crate::enroll::write_atomically(
        &revocation_file(state_dir, &revocation.static_key),
        text.as_bytes(),
    )
}

fn modified(dir: &Path) -> Option<SystemTime> {
    ensure_unlocked("reading the state directory").ok()?;
    std::fs::metadata(dir).and_then(|m| m.modified()).ok()
}

impl StateDir {
    pub fn new(root: PathBuf) -> StateDir {
        StateDir {
            root,
            remembered: String::new(),
            next_remember: None,
            invites_seen: None,
            revocations_seen: None,
            last_join_rescan: None,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The invitations to hand the node before a join request is handled: re-read when the
    /// directory changed, and also (rate-limited) when its timestamp has not visibly moved
    /// (coarse timestamps on some filesystems). `None`: the node's list is current.
    pub fn invites_for_join(&mut self, now: Instant) -> Option<Vec<PendingInvite>> {
        let recently = self
            .last_join_rescan
            .is_some_and(|t| now.saturating_duration_since(t) < JOIN_RESCAN_MIN_INTERVAL);
        if !recently {
            self.last_join_rescan = Some(now);
            self.invites_seen = None;
        }
        self.scan_invites()
    }

    /// The current invitations if the invites directory changed since the last look (a stat is
    /// cheap: a new invitation file changes the directory's timestamp). `None`: nothing changed,
    /// or the directory could not be read (logged).
    pub fn scan_invites(&mut self) -> Option<Vec<PendingInvite>> {
        let dir = self.root.join(super::invites::INVITES_DIR);
        let stamp = modified(&dir);
        if stamp.is_some() && stamp == self.invites_seen {
            return None;
        }
        self.invites_seen = stamp;
        match super::invites::load_pending(&self.root) {
            Ok(pending) => Some(pending),
            Err(e) => {
                warn!(dir = %dir.display(), error = %e, "cannot read invitations");
                None
            }
        }
    }

    /// The revocations on disk if an admin's `meshd revoke` wrote one since the last look, for
    /// [`apply_revocations`]; empty otherwise.
    pub fn scan_revocations(&mut self) -> Vec<Revocation> {
        let stamp = modified(&revocations_dir(&self.root));
        if stamp.is_none() || stamp == self.revocations_seen {
            return Vec::new();
        }
        self.revocations_seen = stamp;
        load_revocations(&self.root)
    }

    /// Whether the remembered members are due for a refresh (at most every
    /// [`REMEMBER_INTERVAL`]); when it says yes, the caller reads the node's reachable members
    /// and hands them to [`StateDir::remember_members`].
    pub fn remember_due(&mut self, now: Instant) -> bool {
        if self.next_remember.is_some_and(|t| now < t) {
            return false;
        }
        self.next_remember = Some(now + REMEMBER_INTERVAL);
        true
    }

    /// Rewrites the remembered members when they changed.
    pub fn remember_members(&mut self, members: &[PeerSpec]) {
        let text = render_members(members);
        if text.is_empty() || text == self.remembered {
            return;
        }
        match crate::enroll::write_atomically(&self.root.join("members"), text.as_bytes()) {
            Ok(()) => self.remembered = text,
            Err(e) => warn!(error = %e, "cannot remember members for the next start"),
        }
    }

    /// Persists what the core learned: a revocation from gossip, our renewed certificate.
    pub fn persist_revocation(&mut self, revocation: &Revocation) {
        if let Err(e) = write_revocation(&self.root, revocation) {
            warn!(error = %e, member = %revocation.name, "cannot store a revocation; it holds until restart");
        }
        self.revocations_seen = modified(&revocations_dir(&self.root));
    }

    pub fn persist_certificate(&mut self, certificate: &Certificate) {
        if let Err(e) = crate::enroll::write_certificate(&self.root, certificate) {
            warn!(error = %e, "cannot store the renewed certificate; it holds until restart");
        }
    }
}

/// Hands the node the revocations [`StateDir::scan_revocations`] read (the caller holds the node;
/// nothing here touches the disk). Returns what to log once the node is released: each member's
/// name and whether its revocation verified.
pub fn apply_revocations(
    now: Instant,
    node: &mut Node,
    revocations: Vec<Revocation>,
) -> Vec<(String, Result<(), String>)> {
    let mut outcomes = Vec::new();
    for revocation in revocations {
        if node.is_revoked(&revocation.static_key) {
            continue;
        }
        let name = revocation.name.clone();
        let outcome = node
            .apply_revocation(now, revocation)
            .map_err(|e| e.to_string());
        outcomes.push((name, outcome));
    }
    outcomes
}

/// Logs what [`apply_revocations`] returned, after the node is released.
pub fn log_revocations(outcomes: Vec<(String, Result<(), String>)>) {
    for (name, outcome) in outcomes {
        match outcome {
            Ok(()) => info!(member = %name, "revocation applied and spreading"),
            Err(e) => {
                warn!(member = %name, error = %e, "ignoring a revocation that does not verify")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_members_round_trip_and_damaged_lines_are_skipped() {
        let dir = std::env::temp_dir().join(format!("meshd-state-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key: PublicKey = "mYJ4OG/v4oFg8Lx/kTbrDOsFhdpANzrwAoXDgejSsWk="
            .parse()
            .unwrap();
        let members = vec![PeerSpec {
            name: "h2".into(),
            public_key: key,
            endpoint: Some("10.0.0.2:6655".parse().unwrap()),
        }];
        let mut text = render_members(&members);
        text.push_str("junk line\nh3 notakey 10.0.0.3:6655\n-bad mYJ4OG/v4oFg8Lx/kTbrDOsFhdpANzrwAoXDgejSsWk= 1.2.3.4:5\n");
        std::fs::write(dir.join("members"), text).unwrap();
        let loaded = load_remembered_members(&dir);
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].name, "h2");
        assert_eq!(loaded[0].public_key, key);
        assert_eq!(loaded[0].endpoint, members[0].endpoint);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(load_remembered_members(&dir).is_empty());
    }

    #[test]
    fn a_join_rereads_invitations_when_they_change_and_at_most_every_interval_otherwise() {
        let dir = std::env::temp_dir().join(format!("meshd-state-join-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut state = StateDir::new(dir.clone());
        let t0 = Instant::now();
        // No invites directory yet: read (forced), found empty.
        assert_eq!(state.invites_for_join(t0), Some(Vec::new()));
        let invite =
            super::super::invites::create_invite(&dir, u64::MAX, None, None, [5; 32]).unwrap();
        // The directory appeared: read again even within the interval.
        assert_eq!(
            state.invites_for_join(t0 + Duration::from_millis(10)),
            Some(vec![invite.clone()])
        );
        // Unchanged and within the interval: nothing read.
        assert_eq!(state.invites_for_join(t0 + Duration::from_millis(50)), None);
        // Unchanged but the interval passed: read anyway (coarse directory timestamps).
        let later = t0 + JOIN_RESCAN_MIN_INTERVAL + Duration::from_millis(1);
        assert_eq!(state.invites_for_join(later), Some(vec![invite]));
        // The periodic rescan only reads on a change.
        assert_eq!(state.scan_invites(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
