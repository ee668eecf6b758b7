//! Checked zero-copy views over meshd's untrusted bytes: the outer UDP datagram and the inner Ethernet frame
//! with the IP packet it carries ([`IpFrame`]), and the Internet checksum over such bytes ([`Checksum`]).
//!
//! This module owns the byte layout and nothing else: no state, no crypto, no allocation. Every view wraps
//! a buffer `T: AsRef<[u8]>`; `new_checked` validates everything the accessors rely on (cheapest checks
//! first: length, then version, then type), after which every getter is infallible and never panics.
//! `new_unchecked` skips validation and is meant for emitting into a buffer the caller sized itself.
//! Unknown message types and payload kinds are values (`MessageType::Unknown`, `PayloadKind::Unknown`)
//! so the core can count and drop them; only structurally broken input is a [`WireError`].
//!
//! Two exceptions to "no crypto, no allocation", both small and rare: the invitation token
//! (`token.rs`: parsed into an owned [`InviteToken`], SHA-256 for its checksum and the invite id) and
//! the join payloads (`join.rs`: [`RequestPayload`] and [`ResponsePayload`], parsed into owned values
//! after Noise decrypted them). The join datagrams themselves are views like the others. The Docker
//! plugin's JSON requests (`docker.rs`) are parsed into owned, checked values too: they arrive on a
//! local socket at a few per container start, far from the data path.
//!
//! Invariants: all integers in meshd's own header are little-endian; Ethernet and IP fields are network order
//! (big-endian) because they are the frame's own bytes. The layout is documented in docs/wire-format.md,
//! which must change together with this module.

pub mod attach;
pub mod checksum;
pub mod cni;
mod datagram;
pub mod docker;
mod ethernet;
mod handshake_ext;
pub mod ip;
mod join;
pub mod membership;
mod path;
mod source;
mod token;
pub mod vnet;

#[cfg(test)]
mod ip_tests;
#[cfg(test)]
mod tests;

pub use checksum::{checksum, pseudo_header_sum, Checksum};
pub use datagram::{
    classify, emit_data_header, handshake_init_len, handshake_response_len, set_lane, CookieReply,
    Data, HandshakeInit, HandshakeResponse, Header, COOKIE_NONCE_LEN, COOKIE_REPLY_LEN,
    DATA_HEADER_LEN, DATA_MIN_LEN, DATA_OVERHEAD, HANDSHAKE_INIT_MAX_LEN, HANDSHAKE_INIT_MIN_LEN,
    HANDSHAKE_PAYLOAD_MAX, HANDSHAKE_RESPONSE_MAX_LEN, HANDSHAKE_RESPONSE_MIN_LEN, HEADER_LEN,
    LANE, MAC_LEN, NOISE_INIT_OVERHEAD, NOISE_RESPONSE_OVERHEAD, PROTOCOL_VERSION,
    SEALED_COOKIE_LEN, TAG_LEN,
};
pub use ethernet::{
    EthernetFrame, MacAddr, MacParseError, ETHERNET_HEADER_LEN, ETHERTYPE_ARP, ETHERTYPE_IPV4,
    ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN, VLAN_TAG_LEN,
};
pub use handshake_ext::{
    emit_cipher_extension, emit_features_extension, HandshakeExtensions, EXT_CIPHERS, EXT_FEATURES,
    FEATURE_PARTIAL_CHECKSUM, MAX_OFFERED_CIPHERS,
};
pub use ip::{IpError, IpFrame, IpLayout, IpVersion};
pub use join::{
    emit_join_refused, BootstrapMember, JoinRefused, JoinRequest, JoinResponse, RefusalReason,
    RequestPayload, ResponsePayload, JOIN_MAX_LEN, JOIN_REFUSED_LEN, JOIN_REQUEST_MIN_LEN,
    JOIN_RESPONSE_MIN_LEN, MAX_BOOTSTRAP_MEMBERS, MAX_JOIN_ENDPOINTS, MAX_REQUEST_PAYLOAD,
    MAX_RESPONSE_PAYLOAD, NETWORK_ID_LEN,
};
pub use path::{
    Probe, ProbeAck, RelayEnvelope, PROBE_ACK_MAX_LEN, PROBE_MIN_LEN, RELAY_ENVELOPE_LEN,
    RELAY_OVERHEAD,
};
pub use source::{source_claim, SourceClaim};
pub(crate) use token::constant_time_eq;
pub use token::{
    invite_id, InviteId, InviteSecret, InviteToken, TokenError, INVITE_ID_LEN, INVITE_SECRET_LEN,
    MAX_TOKEN_CHARS, MAX_TOKEN_ENDPOINTS, TOKEN_PREFIX, TOKEN_VERSION,
};
pub use vnet::{
    GsoType, VnetHdr, VnetHdrFields, VnetHdrSize, VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM,
    VNET_GSO_ECN, VNET_GSO_NONE, VNET_GSO_TCPV4, VNET_GSO_TCPV6, VNET_GSO_UDP, VNET_GSO_UDP_L4,
    VNET_HDR_LEN, VNET_HDR_LEN_MRG,
};

/// Why a buffer could not be viewed as the requested message.
///
/// Every variant has a stable [`WireError::as_str`] label so the core can use it directly as a drop
/// counter's label without allocating.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WireError {
    /// Shorter than the fixed part of the message.
    #[error("truncated message")]
    Truncated,
    /// The version byte is not [`PROTOCOL_VERSION`].
    #[error("unsupported protocol version {0}")]
    BadVersion(u8),
    /// The length does not fit the message type (a handshake of the wrong size, a keepalive with payload).
    #[error("length does not match the message type")]
    BadLength,
    /// The header names another message type than the view that was asked for.
    #[error("message type {0:?} does not match the requested view")]
    WrongType(MessageType),
}

impl WireError {
    /// A short, stable, lower-case label (`"truncated"`, `"bad_version"`, …) suitable for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            WireError::Truncated => "truncated",
            WireError::BadVersion(_) => "bad_version",
            WireError::BadLength => "bad_length",
            WireError::WrongType(_) => "wrong_type",
        }
    }
}

/// Byte 1 of every datagram.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageType {
    HandshakeInit,
    HandshakeResponse,
    /// A responder under load answers an initiation without a valid mac2 with a cookie.
    CookieReply,
    Data,
    /// A new node asks an inviter for a certificate (see `join.rs`).
    JoinRequest,
    /// The inviter's answer: certificate and bootstrap members, encrypted to the new node.
    JoinResponse,
    /// The inviter refuses a join request; the reason is in the kind byte.
    JoinRefused,
    /// Any other value; receivers count and drop it.
    Unknown(u8),
}

impl MessageType {
    /// A short, stable label for metrics and logs; every `Unknown` maps to `"unknown"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageType::HandshakeInit => "handshake_init",
            MessageType::HandshakeResponse => "handshake_response",
            MessageType::CookieReply => "cookie_reply",
            MessageType::Data => "data",
            MessageType::JoinRequest => "join_request",
            MessageType::JoinResponse => "join_response",
            MessageType::JoinRefused => "join_refused",
            MessageType::Unknown(_) => "unknown",
        }
    }
}

impl From<u8> for MessageType {
    fn from(value: u8) -> Self {
        match value {
            1 => MessageType::HandshakeInit,
            2 => MessageType::HandshakeResponse,
            3 => MessageType::CookieReply,
            4 => MessageType::Data,
            5 => MessageType::JoinRequest,
            6 => MessageType::JoinResponse,
            7 => MessageType::JoinRefused,
            other => MessageType::Unknown(other),
        }
    }
}

impl From<MessageType> for u8 {
    fn from(value: MessageType) -> Self {
        match value {
            MessageType::HandshakeInit => 1,
            MessageType::HandshakeResponse => 2,
            MessageType::CookieReply => 3,
            MessageType::Data => 4,
            MessageType::JoinRequest => 5,
            MessageType::JoinResponse => 6,
            MessageType::JoinRefused => 7,
            MessageType::Unknown(other) => other,
        }
    }
}

/// Byte 2 of a data message: what the decrypted payload is. Handshakes carry 0 there.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PayloadKind {
    /// Empty payload; only proves liveness and keeps NAT bindings open.
    Keepalive,
    /// One complete Ethernet frame, from the destination MAC to the end of the payload (no FCS).
    Ethernet,
    /// A membership message (gossip, certificate renewal) for the node's membership layer.
    Membership,
    /// To a relay: forward the inner datagram to the member named in the envelope ([`RelayEnvelope`]).
    Relay,
    /// From a relay: the inner datagram came from the member named in the envelope.
    Relayed,
    /// A path probe, padded to the size being tested ([`Probe`]); answered with a `ProbeAck`.
    Probe,
    /// The answer to a probe ([`ProbeAck`]): its id, and the address the probe came from.
    ProbeAck,
    /// An Ethernet frame carrying IPv4 or IPv6 and then TCP or UDP, whose L4 checksum field holds
    /// only the folded pseudo-header sum (a virtio-net `NEEDS_CSUM` frame): the receiver completes
    /// it or lets its kernel do so. Sent only on sessions whose peer announced
    /// [`FEATURE_PARTIAL_CHECKSUM`] in the handshake.
    EthernetPartialChecksum,
    /// Any other value; receivers count and drop it.
    Unknown(u8),
}

impl PayloadKind {
    /// A short, stable label for metrics and logs; every `Unknown` maps to `"unknown"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            PayloadKind::Keepalive => "keepalive",
            PayloadKind::Ethernet => "ethernet",
            PayloadKind::Membership => "membership",
            PayloadKind::Relay => "relay",
            PayloadKind::Relayed => "relayed",
            PayloadKind::Probe => "probe",
            PayloadKind::ProbeAck => "probe_ack",
            PayloadKind::EthernetPartialChecksum => "ethernet_partial_checksum",
            PayloadKind::Unknown(_) => "unknown",
        }
    }

    /// Whether the payload is user traffic (frames, and datagrams relayed for other members)
    /// rather than upkeep of the session or the mesh (keepalives, path probes and their answers,
    /// gossip). Only data keeps an on-demand session wanted: gossip reaches a random member every
    /// second, so counting it would keep every node's sessions with half the network alive.
    pub const fn is_data(self) -> bool {
        matches!(
            self,
            PayloadKind::Ethernet
                | PayloadKind::EthernetPartialChecksum
                | PayloadKind::Relay
                | PayloadKind::Relayed
        )
    }
}

impl From<u8> for PayloadKind {
    fn from(value: u8) -> Self {
        match value {
            0 => PayloadKind::Keepalive,
            1 => PayloadKind::Ethernet,
            2 => PayloadKind::Membership,
            3 => PayloadKind::Relay,
            4 => PayloadKind::Relayed,
            5 => PayloadKind::Probe,
            6 => PayloadKind::ProbeAck,
            7 => PayloadKind::EthernetPartialChecksum,
            other => PayloadKind::Unknown(other),
        }
    }
}

impl From<PayloadKind> for u8 {
    fn from(value: PayloadKind) -> Self {
        match value {
            PayloadKind::Keepalive => 0,
            PayloadKind::Ethernet => 1,
            PayloadKind::Membership => 2,
            PayloadKind::Relay => 3,
            PayloadKind::Relayed => 4,
            PayloadKind::Probe => 5,
            PayloadKind::ProbeAck => 6,
            PayloadKind::EthernetPartialChecksum => 7,
            PayloadKind::Unknown(other) => other,
        }
    }
}
