//! The membership layer's counters: one per event, drop reason and refused item.
//!
//! Owns only the names. Counting is done by the code that sees the event: [`Membership`]
//! holds one set as a plain field (so a count is never a lock), and the registry holds another
//! for the verdicts it reaches on items while it judges them under its own lock;
//! [`Membership::counters`] reports their sum. Each counter is bumped by exactly one of the two,
//! so the sum is that counter. Names are stable: they appear in `meshd status` and as metric
//! labels.
//!
//! [`Membership`]: super::Membership
//! [`Membership::counters`]: super::Membership::counters

use crate::core::counters::counters;

counters! {
    /// Monotonic counters of the membership layer, one per event or drop reason.
    pub struct MembershipCounters {
        /// Membership payloads received.
        rx_messages,
        /// Bytes of membership payloads received.
        rx_bytes,
        /// Payloads that were empty or longer than [`MAX_PAYLOAD`](super::MAX_PAYLOAD).
        rx_bad_length,
        /// Payloads with a subtype this build does not know.
        rx_unknown_subtype,
        /// Payloads from a revoked key.
        rx_from_revoked,
        /// foca packets whose header did not decode.
        rx_foca_malformed,
        /// foca packets whose sender identity is not the session's key.
        rx_impersonation,
        /// foca packets addressed to another identity.
        rx_misaddressed,
        /// foca packets foca itself refused (framing, stale sender, ...).
        rx_foca_rejected,
        /// Gossip items that did not parse.
        item_malformed,
        /// Records verified and stored.
        record_accepted,
        /// Records not newer than the one held.
        record_stale,
        /// Records for a revoked key.
        record_revoked,
        /// Records whose certificate names another key.
        record_key_mismatch,
        /// Records whose certificate belongs to another network.
        record_wrong_network,
        /// Records whose certificate has expired.
        record_cert_expired,
        /// Records whose certificate failed verification (signature, validity window).
        record_bad_certificate,
        /// Records signed for another certificate of the key than the one they came with.
        record_cert_mismatch,
        /// Records whose signature did not verify with the certificate's signing key.
        record_bad_signature,
        /// Records whose version is above [`MAX_RECORD_VERSION`](super::MAX_RECORD_VERSION)
        /// (the upper half of the version space is reserved: a revocation outranks every record).
        record_version_invalid,
        /// Valid records of our own key newer than ours (an earlier run): we re-sign above them.
        record_own_newer,
        /// Revocations verified and stored.
        revocation_accepted,
        /// Revocations already known.
        revocation_stale,
        /// Revocations for another network.
        revocation_wrong_network,
        /// Revocations past their expiry.
        revocation_expired,
        /// Revocations whose network signature did not verify.
        revocation_bad_signature,
        /// Revocations kept longer than they say because a certificate of the revoked key
        /// expires later (the revocation lives as long as the newest certificate seen).
        revocation_extended,
        /// Revocations from the config or `revoke` that did not verify.
        revocation_refused_local,
        /// Records dropped because their certificate expired while held.
        records_expired,
        /// Revocations dropped at their expiry.
        revocations_expired,
        /// Members forgotten after being down for [`REMOVE_DOWN_AFTER`](super::REMOVE_DOWN_AFTER).
        members_forgotten,
        /// Record pages that did not parse.
        page_malformed,
        /// Sync pages that did not continue the run in progress (items still taken).
        page_out_of_run,
        /// Sync requests sent.
        sync_requests_sent,
        /// Sync requests that did not parse.
        sync_request_malformed,
        /// Syncs that reached the end of a member's table.
        syncs_completed,
        /// Record pages sent (syncs and wants).
        pages_sent,
        /// Table digests sent (anti-entropy).
        digests_sent,
        /// Digests received that matched this node's table.
        digests_matched,
        /// Digests that did not parse.
        digest_malformed,
        /// Index pages sent for differing digest buckets.
        index_pages_sent,
        /// Index pages that did not parse.
        index_malformed,
        /// Records asked for because an index showed a newer or missing one.
        index_keys_wanted,
        /// Revocations sent to a member whose index showed it had missed them.
        revocations_pushed,
        /// Pages not sent because the page rate was used up.
        pages_throttled,
        /// Items too large for a page, not sent.
        items_oversize,
        /// Want messages sent.
        wants_sent,
        /// Want messages that did not parse.
        want_malformed,
        /// Keys asked for in wants that this node had no item for.
        want_keys_unknown,
        /// Wanted records given up on: asked [`WANT_ATTEMPTS_UNCONFIRMED`](super::WANT_ATTEMPTS_UNCONFIRMED) times for a key foca
        /// does not consider alive.
        wants_abandoned,
        /// Keys not wanted because [`MAX_WANTED`](super::MAX_WANTED) were wanted already.
        wants_dropped,
        /// foca member updates about keys without a verified record here, taken out of the packet
        /// (their records are asked for).
        updates_unverified,
        /// foca member updates about revoked keys, taken out of the packet.
        updates_revoked,
        /// foca member updates naming a generation other than the member's own (the one in its
        /// signed record), taken out of the packet: forged by a third member, or stale.
        updates_wrong_generation,
        /// Renewal requests sent.
        renew_requests_sent,
        /// Renewal requests that did not parse.
        renew_request_malformed,
        /// Renewal requests received by a node without the network key.
        renew_not_admin,
        /// Renewal requests from a member without a verified record here.
        renew_unknown_member,
        /// Renewal requests from a member whose certificate has more than half its life left.
        renew_too_early,
        /// Renewal requests refused because the renewal rate was used up.
        renew_throttled,
        /// Certificates issued for renewal requests.
        renewals_issued,
        /// Overlaps between live members' address ranges found (each counted once when it
        /// appears; see `meshd status` for the ones that stand).
        range_conflicts_detected,
        /// Range overlaps that went away (the loser got a new range, or left).
        range_conflicts_resolved,
        /// Renewals issued with a new range because the member's range lost a conflict.
        ranges_reassigned,
        /// Renewal answers that were not a valid, newer certificate for this node.
        renew_response_bad,
        /// Times this node's certificate was renewed (by an admin or, as admin, locally).
        certificates_renewed,
        /// Membership payloads queued for sending.
        tx_messages,
        /// Bytes of membership payloads queued for sending.
        tx_bytes,
        /// Payloads foca addressed to a revoked key, not sent.
        tx_to_revoked,
        /// Errors foca returned from timers or sends (not caused by received bytes).
        foca_errors,
    }
}
