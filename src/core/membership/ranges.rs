//! Address ranges in the member table: which ranges are out of the pool, which live members'
//! ranges overlap, and what this node does about it.
//!
//! Owns [`RangeWatch`]: the overlaps currently seen (so each is reported once when it appears
//! and once when it is resolved) and whether this node's own range lost. Invariants: the check
//! runs on the membership tick over the verified table only; a conflict's keeper is the member
//! granted its range first ([`find_conflicts`]), the same on every node holding the same
//! certificates; a node whose range lost asks an admin for a new certificate at once (the
//! renewal path), and an admin answers such a request at once with a new range, however young
//! the member's certificate is.

use std::collections::BTreeMap;
use std::time::Duration;

use meshd_crypto::PublicKey;
use tracing::{info, warn};

use super::registry::lock;
use super::Membership;
use crate::core::ranges::{find_conflicts, Grant, Range4, RangeConflict};

/// How soon a member whose address range lost a conflict asks for a new one again: the admin
/// asked first may not have seen the conflict yet, and answers nothing then.
pub const RANGE_RENEW_RETRY: Duration = Duration::from_secs(5);

/// The overlaps between live members' ranges this node knows about.
#[derive(Default)]
pub(super) struct RangeWatch {
    /// Loser's key → the conflict, as last seen.
    current: BTreeMap<PublicKey, RangeConflict>,
}

impl RangeWatch {
    /// The conflicts seen at the last check.
    pub fn conflicts(&self) -> impl Iterator<Item = &RangeConflict> {
        self.current.values()
    }

    /// Whether `key` holds a range another live member was granted first.
    pub fn lost(&self, key: &PublicKey) -> bool {
        self.current.contains_key(key)
    }
}

impl Membership {
    /// This node's own grant (from its current certificate), if consistent.
    pub fn grant(&self) -> Option<Grant> {
        self.certificate
            .grant
            .as_ref()
            .and_then(Grant::from_certificate)
    }

    /// Every range an admin must not hand out now (held, or released less than the grace
    /// period ago), this node's own included.
    pub fn ranges_out_of_pool(&self) -> Vec<Range4> {
        let registry = lock(&self.registry);
        let mut out = registry.ranges_out_of_pool(registry.now_unix);
        out.extend(self.grant().map(|g| g.range));
        out
    }

    /// The overlaps between live members' ranges found at the last check.
    pub fn range_conflicts(&self) -> Vec<RangeConflict> {
        self.ranges.conflicts().cloned().collect()
    }

    /// Whether this node's own range lost a conflict (it is asking for a new one).
    pub(super) fn own_range_lost(&self) -> bool {
        self.ranges.lost(&self.me.key)
    }

    /// Compares the live members' ranges; reports each new conflict (warning naming both
    /// members, counter) and each resolved one.
    pub(super) fn check_ranges(&mut self) {
        let found: BTreeMap<PublicKey, RangeConflict> = {
            let registry = lock(&self.registry);
            let holders = registry.live_range_holders(registry.now_unix);
            find_conflicts(&holders)
                .into_iter()
                .map(|mut c| {
                    for holder in [&mut c.keeper, &mut c.loser] {
                        holder.name = registry.name_of(&holder.key).unwrap_or_default();
                    }
                    (c.loser.key, c)
                })
                .collect()
        };
        for (key, conflict) in &found {
            if self.ranges.current.get(key) != Some(conflict) {
                self.counters.range_conflicts_detected += 1;
                warn!(
                    range = %conflict.loser.range,
                    keeper = %conflict.keeper.name,
                    keeper_range = %conflict.keeper.range,
                    loser = %conflict.loser.name,
                    "membership: two members hold overlapping address ranges (granted during a \
                     partition?); {} was granted first and keeps it, {} gets a new range from an admin",
                    conflict.keeper.name,
                    conflict.loser.name,
                );
            }
        }
        for (key, conflict) in &self.ranges.current {
            if !found.contains_key(key) {
                self.counters.range_conflicts_resolved += 1;
                info!(
                    member = %conflict.loser.name,
                    "membership: address range conflict resolved"
                );
            }
        }
        self.ranges.current = found;
    }
}
