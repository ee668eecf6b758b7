//! The node's state directory as the running daemon sees it: invitations written by
//! `meshd invite`, and (with membership) revocations and the renewed certificate.
//!
//! Owns re-reading the directory when it changes and persisting what the core decided. Invariant:
//! an invitation is recorded as used on disk before the join reply leaves, so a token cannot work
//! twice even across a crash; a directory that cannot be read is logged once per change, never
//! fatal (the node keeps running with what it had).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use tracing::warn;

use crate::core::Node;

/// How often the daemon looks for new invitations (a `meshd invite` run) in the state directory.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(1);

/// A join request makes the daemon re-read its invitations at most this often, so one run in a
/// script (`invite` then `join` at once) works and a flood of requests cannot make it read the
/// disk per datagram.
pub const JOIN_RESCAN_MIN_INTERVAL: Duration = Duration::from_millis(100);

pub struct StateDir {
    root: PathBuf,
    invites_seen: Option<SystemTime>,
    last_join_rescan: Option<Instant>,
}

fn modified(dir: &Path) -> Option<SystemTime> {
    std::fs::metadata(dir).and_then(|m| m.modified()).ok()
}

impl StateDir {
    pub fn new(root: PathBuf) -> StateDir {
        StateDir {
            root,
            invites_seen: None,
            last_join_rescan: None,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Re-reads the invitations before a join request is handled (rate-limited), even when the
    /// directory's timestamp has not visibly moved (coarse timestamps on some filesystems).
    pub fn refresh_for_join(&mut self, now: Instant, node: &mut Node) {
        // A stat is cheap: a new invitation file changes the directory's timestamp.
        self.refresh(node);
        if self
            .last_join_rescan
            .is_some_and(|t| now.saturating_duration_since(t) < JOIN_RESCAN_MIN_INTERVAL)
        {
            return;
        }
        self.last_join_rescan = Some(now);
        self.invites_seen = None;
        self.refresh(node);
    }

    /// Hands the node the current invitations if the invites directory changed since last time.
    pub fn refresh(&mut self, node: &mut Node) {
        let dir = self.root.join("invites");
        let stamp = modified(&dir);
        if stamp.is_some() && stamp == self.invites_seen {
            return;
        }
        self.invites_seen = stamp;
        match super::invites::load_pending(&self.root) {
            Ok(pending) => node.set_pending_invites(pending),
            Err(e) => warn!(dir = %dir.display(), error = %e, "cannot read invitations"),
        }
    }
}
