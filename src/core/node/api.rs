//! The node's inputs and outputs as the io layer sees them: its configuration, datagrams to send
//! (sealed, or deferred for a worker to seal outside the node's lock), the two halves of receiving
//! a datagram, what a datagram yielded, and the events the layers around the node act on.
//!
//! Invariant: a [`DeferredTransmit`] keeps its packet private until [`DeferredTransmit::seal`]
//! has encrypted it, so plaintext cannot leave by mistake.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use meshd_crypto::{
    Certificate, NetworkId, NetworkSecret, Opener, PublicKey, Sealer, StaticSecret,
};

use crate::core::buffer::PacketBuf;
use crate::core::cipher::CipherPolicy;
use crate::core::frames::PartialChecksum;
use crate::core::membership::Revocation;
use crate::core::peer::Route;
use crate::core::switch::{FdbConfig, PeerId};
use crate::wire::{InviteId, PayloadKind, DATA_HEADER_LEN};

/// A bootstrap peer from the config: a member to contact at start. Its name is replaced by the
/// name in its certificate once a handshake proves it.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    pub name: String,
    pub public_key: PublicKey,
    pub endpoint: Option<SocketAddr>,
}

/// Everything a node is built from. The io layer supplies the random seed and the wall-clock time
/// that corresponds to `now`, so the core itself never asks the OS for either.
pub struct NodeConfig {
    pub secret: StaticSecret,
    /// Admins hold the network key: they answer join requests and renewals.
    pub network_secret: Option<NetworkSecret>,
    /// Lifetime of certificates this node issues (admins).
    pub certificate_lifetime: Duration,
    /// Endpoints this node tells others to reach it on.
    pub advertise: Vec<SocketAddr>,
    /// Revocations from the state directory.
    pub revocations: Vec<Revocation>,
    /// The network this node belongs to: peers must hold a certificate it signed.
    pub network: NetworkId,
    /// This node's own certificate, shown to every peer in the handshake.
    pub certificate: Certificate,
    pub peers: Vec<PeerSpec>,
    pub fdb: FdbConfig,
    /// Largest Ethernet frame carried (TAP MTU + Ethernet header + one VLAN tag).
    pub max_frame: usize,
    /// MTU of the underlay link datagrams leave on (the largest of the host's links when it is
    /// not known which); the ceiling of every path MTU search.
    pub underlay_mtu: usize,
    pub rng_seed: [u8; 32],
    /// The data-path ciphers this node accepts, most preferred first.
    pub ciphers: CipherPolicy,
    pub now: Instant,
    /// Nanoseconds since the Unix epoch at `now`; used for replay-proof initiation timestamps.
    pub unix_nanos_at_now: u64,
}

/// How to cut a super-frame read from the TAP (see [`Node::segment_plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentPlan {
    /// The largest segment frame that reaches the destination whole.
    pub max_frame: usize,
    /// Whether the segments may keep partial L4 checksums.
    pub partial_checksums: bool,
}

/// A datagram to send.
pub struct Transmit {
    pub destination: SocketAddr,
    pub packet: PacketBuf,
}

/// A datagram to send whose payload may still have to be encrypted: its header is written and its
/// counter reserved by the node, and [`DeferredTransmit::seal`] finishes it. This is how workers
/// that share one node seal outside the node's lock, in parallel. The packet is private until
/// sealed, so plaintext cannot leave by mistake.
pub struct DeferredTransmit {
    pub(super) destination: SocketAddr,
    pub(super) packet: PacketBuf,
    pub(super) seal: Option<(Sealer, u64)>,
}

impl DeferredTransmit {
    /// Encrypts the payload in place (when it still needs it) and hands the datagram out. `lane`
    /// goes into the data header's lane byte (the sending worker, a steering hint for receivers
    /// with several workers) before sealing, since the header is authenticated. On failure the
    /// buffer comes back for recycling.
    pub fn seal(self, lane: u8) -> Result<Transmit, PacketBuf> {
        let DeferredTransmit {
            destination,
            mut packet,
            seal,
        } = self;
        if let Some((sealer, counter)) = seal {
            let (head, body, tail) = packet.sealed_parts_mut();
            crate::wire::set_lane(head, lane);
            match sealer.seal_in_place(counter, head, body) {
                Ok(tag) => tail.copy_from_slice(&tag),
                Err(_) => return Err(packet),
            }
        }
        Ok(Transmit {
            destination,
            packet,
        })
    }
}

/// What the first, cheap half of receiving a datagram decided (see [`Node::begin_datagram`]).
pub enum Inbound {
    /// Fully handled (anything but data, or data refused before decryption).
    Done(Received),
    /// A data message for a known session: open it with [`OpenJob::open`], then hand it to
    /// [`Node::finish_datagram`].
    Open(OpenJob),
}

/// A data message that passed every check short of decryption, with the key to open it.
pub struct OpenJob {
    pub(super) from: SocketAddr,
    pub(super) opener: Opener,
    pub(super) index: u32,
    pub(super) counter: u64,
    pub(super) kind: PayloadKind,
    /// The plaintext's length once opened; `None` until then, or when authentication failed.
    pub(super) plain_len: Option<usize>,
}

impl OpenJob {
    /// Authenticates and decrypts `datagram` (the same bytes given to `begin_datagram`) in place.
    /// Needs no access to the node, so it runs outside any lock on it.
    pub fn open(&mut self, datagram: &mut [u8]) {
        let (header, body) = datagram.split_at_mut(DATA_HEADER_LEN);
        self.plain_len = self
            .opener
            .open_in_place(self.counter, header, body)
            .ok()
            .map(|plain| plain.len());
    }
}

/// Where a datagram came from: straight from an address, or out of a relay envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Direct(SocketAddr),
    Relayed { relay: PeerId, source: PublicKey },
}

impl Origin {
    /// The route an answer to this datagram takes: the way it came.
    pub(crate) fn route_back(self) -> Route {
        match self {
            Origin::Direct(from) => Route::Direct(from),
            Origin::Relayed { relay, .. } => Route::Relay(relay),
        }
    }
}

/// What `handle_datagram` found in a datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// An Ethernet frame for the TAP, at this range of the datagram buffer.
    Frame(Range<usize>),
    /// An Ethernet frame for the TAP whose L4 checksum is partial, to be completed as the
    /// [`PartialChecksum`] says: by the kernel (a `NEEDS_CSUM` virtio-net header) or in software.
    FramePartialChecksum(Range<usize>, PartialChecksum),
    /// Nothing for the TAP (a handshake, keepalive, or a dropped packet, counted).
    Nothing,
}

impl Received {
    /// The frame's range, its L4 checksum completed in `datagram` (in software) if the peer left
    /// it partial: what a caller that writes to a TAP without offloads needs.
    pub fn complete_frame(self, datagram: &mut [u8]) -> Option<Range<usize>> {
        match self {
            Received::Frame(range) => Some(range),
            Received::FramePartialChecksum(range, at) => {
                at.complete(&mut datagram[range.clone()]);
                Some(range)
            }
            Received::Nothing => None,
        }
    }
}

/// Something the node learned that the layers around it (membership, io) act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A revocation this node had not known (learned by gossip or applied locally): persist it.
    Revoked(Revocation),
    /// This node's certificate was renewed by an admin: persist it.
    CertificateRenewed(Certificate),
    /// An invitation was redeemed: record it as used on disk, then send `reply` to
    /// `destination` (in that order, so a crash in between cannot let the token work twice).
    JoinAdmitted {
        invite_id: InviteId,
        name: String,
        key: PublicKey,
        reply: Vec<u8>,
        destination: SocketAddr,
    },
}

/// The address a datagram came from when it came directly.
pub(super) fn direct_address(origin: Origin) -> Option<SocketAddr> {
    match origin {
        Origin::Direct(from) => Some(from),
        Origin::Relayed { .. } => None,
    }
}
