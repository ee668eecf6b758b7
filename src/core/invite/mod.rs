//! Admission by invitation, sans-IO: the inviter's [`InviteBook`] and the new node's
//! [`JoinClient`], driven by `(now, bytes)` like the rest of the core.
//!
//! The exchange (docs/protocol.md, "Joining"): the joiner sends a JoinRequest carrying a Noise IK
//! initiation to the inviter key pinned in its token (prologue [`JOIN_PROLOGUE`]); the payload
//! holds the invite secret, its signing key, the name it wants and its endpoints. The inviter
//! answers with a JoinResponse whose Noise payload holds the certificate it issued and some
//! bootstrap members, or with an unauthenticated JoinRefused naming a reason.
//!
//! [`InviteBook`] owns the inviter's view of its invitations: the pending ones the io layer read
//! from disk (only the secret's hash, never the secret) and, in memory, the ones used since start
//! with the key and certificate they went to. Invariants: it checks cheapest first and does no
//! Diffie-Hellman work for a request that fails mac1, names another network, reaches a non-admin,
//! or names an unknown, expired or (beyond the resend window) used invitation; the secret is
//! compared in constant time; an invitation admits exactly one key: the same key retrying within
//! [`RESEND_WINDOW_SECS`] gets the same certificate again, any other key is refused; a used id stays
//! refused whatever list [`InviteBook::set_pending`] is handed later; every drop and refusal is
//! counted in [`JoinCounters`]. The handshake rate limit is the node's: it calls
//! `HandshakeLimiter::allow` before [`InviteBook::handle_request`].
//!
//! [`JoinClient`] owns one join attempt of a new node. Invariants: it talks only to the pinned
//! inviter key; it accepts a response only if mac1 (keyed by its own key, which only the inviter
//! learned) and Noise verify against one of its recent requests, and it returns a certificate only
//! after checking it names the token's network, its own keys and the requested name; replies for
//! other invitations and garbage are ignored and counted; a refusal for its invitation is final.
//! Nothing here reads a clock or the OS random source: time comes in as Unix seconds, randomness
//! from a [`CoreRng`].

mod book;
mod client;

pub use book::{Admission, InviteBook, JoinContext, JoinDrop, JoinGate, JoinOutcome};
pub use client::{format_unix, JoinClient, JoinError, JoinResult};

use std::time::Duration;

use crate::core::counters::counters;
use crate::wire::{invite_id, InviteId};

use crate::core::ranges::Range4;
pub use crate::wire::BootstrapMember;

/// The Noise prologue of the join handshake; differs from the data handshake's, so neither
/// message can be replayed as the other.
pub const JOIN_PROLOGUE: &[u8] = b"meshd join v1";
/// How long after admitting a key the inviter re-sends the same certificate to it (a lost reply).
pub const RESEND_WINDOW_SECS: u64 = 600;
/// How many of its recent requests a client can match a response against (one per retry).
pub const MAX_OUTSTANDING_REQUESTS: usize = 16;
/// How often `meshd join` re-sends its request while no answer came.
pub const JOIN_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// When `meshd join` gives up ([`JoinError::NoAnswer`]).
pub const JOIN_GIVE_UP_AFTER: Duration = Duration::from_secs(15);

/// What the inviter keeps about an invitation it handed out: never the secret, only its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingInvite {
    /// The first 16 bytes of `secret_hash`: how requests name the invitation in the clear.
    pub id: InviteId,
    /// SHA-256 of the secret.
    pub secret_hash: [u8; 32],
    /// Unix seconds; requests at or after this are refused.
    pub expires_at: u64,
    /// The only name this invitation may be used for, if any.
    pub name: Option<String>,
    /// The address range the new member is to hold (`meshd invite --range`); without one the
    /// admin picks the lowest free range at admission.
    pub range: Option<Range4>,
}

impl PendingInvite {
    /// Whether `id` is the first 16 bytes of `secret_hash`, as it must be.
    pub fn is_consistent(&self) -> bool {
        self.id == invite_id(&self.secret_hash)
    }
}

counters! {
    /// Monotonic counters of the join exchange; the inviter uses the `rx_` ones, a client the
    /// `reply_` ones. Names are stable (status and metrics labels).
    pub struct JoinCounters {
        /// Join requests handed to the book. A running node hands over only requests that passed
        /// the [`JoinGate`] (length, version, type, mac1); it counts the others as `rx_malformed`,
        /// `rx_bad_version` or `rx_bad_mac1`.
        join_rx_requests,
        /// Dropped: not a well-formed JoinRequest (length, version, type).
        join_rx_malformed,
        /// Dropped: mac1 did not verify (sent without knowing our public key).
        join_rx_bad_mac1,
        /// Dropped: Noise processing failed (garbage, wrong prologue, or not addressed to our key).
        join_rx_handshake_failed,
        /// Refused: the request names another network.
        join_rx_wrong_network,
        /// Refused: this node holds no network key.
        join_rx_not_admin,
        /// Refused: no pending invitation has this id.
        join_rx_unknown_invite,
        /// Refused: the invitation expired.
        join_rx_expired,
        /// Refused: the invitation was used by another key (or before the resend window).
        join_rx_already_used,
        /// Refused (as unknown, after the DH): the secret does not match the invitation's hash.
        join_rx_bad_secret,
        /// Refused: the decrypted payload is malformed.
        join_rx_bad_payload,
        /// Refused: the name is invalid or not the one the invitation reserves.
        join_rx_name_refused,
        /// Refused: a member holds the name under another key.
        join_rx_name_taken,
        /// Refused: the invitation's range is held by a live member, or no range is free.
        join_rx_no_range,
        /// Refused: the certificate could not be issued or does not fit in a reply.
        join_rx_issue_failed,
        /// New members admitted.
        join_admitted,
        /// Certificates sent again to a key that retried after a lost reply.
        join_resent,
        /// Client: datagrams ignored because they are not a well-formed join reply.
        join_reply_malformed,
        /// Client: replies for another invitation.
        join_reply_other_invite,
        /// Client: responses whose mac1 did not verify.
        join_reply_bad_mac1,
        /// Client: responses that matched none of our requests (forged, or for a spent attempt).
        join_reply_handshake_failed,
        /// Client: datagrams of another message type.
        join_reply_unexpected_type,
}
}

#[cfg(test)]
mod tests;
