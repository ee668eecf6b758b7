//! Event counters of a node: every dropped packet is counted under the reason it was dropped.
//!
//! Counters only ever increase. Their names are stable: they appear in `meshd status`, in the JSON
//! status and as Prometheus metric labels, so renaming one is an interface change.

/// Declares a counters struct: one `u64` field per event or drop reason, each with its doc;
/// `iter()` lists every counter with its stable name in declaration order, and `add()` sums two
/// sets. The struct's doc and visibility are given with it, so every layer declares its counters
/// the same way (`use crate::core::counters::counters;`).
macro_rules! counters {
    (
        $(#[$struct_doc:meta])*
        $vis:vis struct $struct_name:ident {
            $($(#[$doc:meta])* $name:ident),* $(,)?
        }
    ) => {
        $(#[$struct_doc])*
        #[derive(Debug, Default, Clone, PartialEq, Eq)]
        $vis struct $struct_name {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl $struct_name {
            /// Every counter with its stable name, in declaration order.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
                [$((stringify!($name), self.$name)),*].into_iter()
            }

            /// Adds every counter of `other` to this one (counters kept by several owners are
            /// reported as one set).
            pub fn add(&mut self, other: &Self) {
                $(self.$name += other.$name;)*
            }
        }
    };
}

pub(crate) use counters;

counters! {
    /// Monotonic counters of a node, one field per event or drop reason.
    pub struct Counters {
        /// Datagrams received on the UDP socket.
        rx_datagrams,
        /// Datagrams shorter than their message type requires, or of the wrong length.
        rx_malformed,
        /// Datagrams carrying a protocol version this node does not speak.
        rx_bad_version,
        /// Datagrams of a message type this node does not know.
        rx_unknown_type,
        /// Data packets for a session index this node does not have.
        rx_unknown_index,
        /// Data packets whose counter was already seen or is too old for the replay window.
        rx_replayed,
        /// Data packets that failed authentication.
        rx_decrypt_failed,
        /// Data packets on a session past its lifetime.
        rx_expired_session,
        /// Data packets with a payload kind this node does not know.
        rx_unknown_kind,
        /// Decrypted frames too short to be Ethernet.
        rx_bad_frame,
        /// Frames sent with a partial checksum that are not one whole TCP or UDP segment over
        /// IPv4 or IPv6 (dropped: nothing could complete their checksum).
        rx_partial_checksum_malformed,
        /// Frames received with a partial L4 checksum, completed by this host's kernel or here.
        rx_partial_checksum,
        /// Decrypted frames larger than this node's TAP carries (a peer with a larger MTU).
        rx_oversize,
        /// Frames from members to an IEEE 802.1D reserved group address (STP, LLDP, 802.1X).
        rx_l2_reserved,
        /// Router advertisements from members, dropped (`drop_router_advertisements`).
        rx_l2_router_advertisement,
        /// Frames from members with a source address outside the member's range.
        rx_l2_foreign_source,
        /// Frames from members that say ARP or IP but are not well formed.
        rx_l2_malformed,
        /// Frames from members that would have moved a MAC learned elsewhere without proving an
        /// address of the member's range.
        rx_l2_unproven_move,
        /// Frames from members with a new MAC beyond the member's learning budget.
        rx_l2_learning_limited,
        /// Frames from this host's bridge to a reserved group address, kept on this host.
        tx_l2_reserved,
        /// Handshake messages whose mac1 did not verify (sent without knowing our public key).
        rx_bad_mac1,
        /// Handshake messages dropped because the handshake rate limit was reached.
        rx_handshake_ratelimited,
        /// Handshake messages that failed Noise processing.
        rx_handshake_failed,
        /// Initiations that were not newer than the last one from the same peer (replays).
        rx_handshake_replayed,
        /// Valid initiations from a new member refused because the member table is full.
        rx_member_table_full,
        /// Handshakes whose payload carried no well-formed certificate.
        rx_handshake_no_certificate,
        /// Handshakes whose certificate was for another network, expired, badly signed, or named
        /// another key than the one the handshake proved.
        rx_handshake_bad_certificate,
        /// Handshakes from members refused because the two accept no data-path cipher in common
        /// (one is configured for a cipher the other does not accept).
        rx_handshake_no_common_cipher,
        /// Handshakes from a revoked key.
        rx_handshake_revoked,
        /// Membership messages for a member this node has no entry for (dropped).
        tx_membership_no_member,
        /// Membership messages larger than a packet buffer (dropped).
        tx_membership_oversize,
        /// Frames from the TAP too short to be Ethernet.
        tx_bad_frame,
        /// Frames sent with their L4 checksum left partial, for the receiver to complete.
        tx_partial_checksum,
        /// Frames dropped because the peer had no session and its queue was full.
        tx_no_session,
        /// Frames to a peer whose session ran out of message counters.
        tx_counter_exhausted,
        /// Datagrams a worker failed to seal after the node framed them (never expected: the AEAD
        /// refuses only messages far larger than a datagram).
        tx_seal_failed,
        /// Frames received from a peer and delivered to the TAP.
        frames_to_tap,
        /// Frames read from the TAP and sent to at least one peer.
        frames_from_tap,
        /// Frames flooded (broadcast, multicast, unknown unicast).
        frames_flooded,
        /// Handshakes this node completed (either role).
        handshakes_completed,
        /// Handshake initiations this node sent, retransmissions included.
        handshakes_initiated,
        /// Keepalives sent.
        keepalives_sent,
        /// MAC addresses that moved between ports (a container moved between hosts).
        fdb_moves,
        /// FDB entries evicted because the table was full.
        fdb_evictions,
        /// Datagrams this node relayed between two members that cannot reach each other.
        relay_forwarded,
        /// Relay requests dropped: the destination is unknown, revoked, or has no direct session here.
        relay_no_route,
        /// Relay requests dropped because the inner datagram no longer fits a packet buffer.
        relay_too_big,
        /// Relayed messages that carried another relay message (one hop only; dropped).
        rx_relay_nested,
        /// Relayed messages whose inner datagram was not from the member the relay named (dropped).
        rx_relay_mismatch,
        /// Datagrams this node sent to a peer through a relay.
        tx_relayed,
        /// Datagrams dropped because the peer had neither a direct endpoint nor a usable relay.
        tx_no_route,
        /// A peer's direct path stopped answering and traffic moved to a relay.
        path_to_relay,
        /// A relayed peer answered on a direct path again and traffic moved back to it.
        path_to_direct,
        /// Path probes sent (liveness, direct candidates, path MTU).
        probes_sent,
        /// Paths whose full-size probes were lost while small ones got through: the path narrowed,
        /// and its MTU was searched again.
        pmtu_black_holes,
        /// Path probe acknowledgements that matched an outstanding probe.
        probe_acks,
        /// Probe acknowledgements that arrived on another path than their probe went (ignored).
        rx_probe_ack_wrong_path,
        /// Probe acknowledgements for no outstanding probe (late, or a guess).
        rx_probe_ack_unknown,
        /// Frames too big for the path to their peer, answered with ICMP "fragmentation needed" or
        /// ICMPv6 "packet too big" to the sender on the bridge.
        tx_too_big_icmp,
        /// IPv4 frames without DF too big for the path, fragmented and sent.
        tx_too_big_fragmented,
        /// Frames too big for the path and dropped because they are not IP (no ICMP can answer them).
        tx_too_big_not_ip,
        /// Frames too big for the path and dropped because they are ICMP errors themselves (never
        /// answered with another).
        tx_too_big_icmp_error,
        /// Frames too big for the path and dropped because they go to or come from a broadcast or
        /// multicast address (never answered).
        tx_too_big_group,
        /// Frames too big for the path and dropped for any other reason: a malformed IP header, a
        /// later fragment, an MTU below what the protocol allows.
        tx_too_big_dropped,
        /// Frames too big for the path and dropped without an answer because answers were rate-limited.
        tx_too_big_ratelimited,
        /// Member-table entries visited to answer join requests (the name check and the bootstrap
        /// list): a measure of work that only requests past mac1, the rate limit and the
        /// invitation's secret may cost.
        join_table_entries_visited,
        /// Probe answers that said our probe came from an address we do not advertise.
        observed_reports,
        /// Observed addresses confirmed by two distinct members (and so published).
        observed_confirmed,
        /// Times this node re-signed its member record for a changed list of endpoints.
        endpoint_records_published,
        /// Initiations this node did the responder's Diffie-Hellman work for: the ones that passed
        /// mac1, the cookie check under load and the rate limit.
        rx_handshake_dh,
        /// Initiations answered with a cookie reply and no DH work: the node was under load and
        /// their mac2 was missing or invalid.
        tx_cookie_replies,
        /// Initiations that carried a valid mac2 (their sender had a cookie from us).
        rx_handshake_mac2,
        /// Cookie replies accepted for our pending initiation: the next one carries mac2.
        rx_cookie_replies,
        /// Cookie replies that did not open for the pending initiation they named (forged, late or
        /// meant for another node).
        rx_bad_cookie_reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_listed_in_order() {
        let c = Counters {
            rx_datagrams: 3,
            ..Default::default()
        };
        let v: Vec<_> = c.iter().collect();
        assert_eq!(v[0], ("rx_datagrams", 3));
        assert!(v.iter().any(|(n, _)| *n == "fdb_evictions"));
    }
}
