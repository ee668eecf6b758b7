//! Frame transformers between the TAP and the peers: everything the data path does to an Ethernet
//! frame's IP headers besides switching it. All of them read frames through the one checked view,
//! [`crate::wire::IpFrame`], and write into caller buffers.
//!
//! * [`Segmenter`] (TAP → peers, `segment.rs`) cuts a TSO/USO super-frame (read behind a
//!   virtio-net header from a TAP opened with `IFF_VNET_HDR`) into wire-ready Ethernet frames of at
//!   most `gso_size` bytes of L4 payload each (fewer for TCP when the path to the peer is
//!   narrower), with every length, IPv4 ID, TCP sequence number, flag and checksum as if the
//!   sender's kernel had segmented it. [`complete_checksum`] finishes the partial checksum of a
//!   plain frame in place.
//! * [`Coalescer`] (peers → TAP, `coalesce.rs`) merges consecutive in-order segments of one TCP
//!   flow back into a super-frame behind a `GSO_TCPV4`/`GSO_TCPV6` header, the way Linux GRO does;
//!   everything else passes through unchanged behind an all-zero header.
//! * [`too_big_reply`] (`too_big.rs`) answers a frame too big for the path with ICMP
//!   "fragmentation needed" / "packet too big"; [`Ipv4Fragmenter`] (`fragment.rs`) cuts an IPv4
//!   datagram that allows it into fragments instead.
//!
//! Invariants: all of this is sans-IO and never allocates per frame: frames come in as slices,
//! output goes into caller buffers, and the coalescer's one staging buffer is handed to it at
//! construction. Bad input (from the kernel or a peer) is an error value or a pass-through, never a
//! panic. Frames understood: Ethernet II with at most one 802.1Q/802.1ad tag, IPv4 (options
//! allowed except when coalescing) or IPv6 without extension headers, then TCP, UDP or ICMP.
//! Offsets in virtio-net headers count from the first byte of the Ethernet frame.

mod coalesce;
mod fragment;
mod segment;
mod too_big;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod too_big_tests;

pub use coalesce::{CoalesceStats, Coalescer, TapWrite, COALESCE_STAGING_LEN};
pub use fragment::Ipv4Fragmenter;
pub use segment::{complete_checksum, PartialChecksum, Segmenter};
pub use too_big::{too_big_reply, NoReply};

use crate::wire::ip::IPV6_HEADER_LEN;
use crate::wire::{IpError, IpFrame, IpLayout, ETHERNET_HEADER_LEN, VLAN_TAG_LEN};

/// The longest Ethernet frame an IP length field can describe: one VLAN tag, an IPv6 header and a
/// 65535-byte IPv6 payload (an IPv4 packet, header included, is at most 65535 bytes).
pub const MAX_SUPER_FRAME_LEN: usize =
    ETHERNET_HEADER_LEN + VLAN_TAG_LEN + IPV6_HEADER_LEN + 65_535;

/// Why a frame could not be segmented or completed.
///
/// Every variant has a stable [`OffloadError::as_str`] label for drop counters.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum OffloadError {
    /// The frame ends inside a header it announces.
    #[error("frame truncated inside its headers")]
    Truncated,
    /// Longer than [`MAX_SUPER_FRAME_LEN`].
    #[error("super-frame longer than 64 KiB of IP payload")]
    TooLong,
    /// A GSO frame with `gso_size` 0.
    #[error("gso_size is 0")]
    ZeroGsoSize,
    /// UFO (`VIRTIO_NET_HDR_GSO_UDP`) or a `gso_type` Linux does not define (raw value).
    #[error("unsupported gso_type {0:#04x}")]
    UnsupportedGso(u8),
    /// Not Ethernet, one optional VLAN tag, IPv4/IPv6 without extension headers, TCP/UDP.
    #[error("frame layout not supported for segmentation")]
    UnsupportedFrame,
    /// The `gso_type` names another IP version or transport than the frame carries.
    #[error("gso_type does not match the frame's protocols")]
    GsoMismatch,
    /// An IPv4 fragment cannot be segmented.
    #[error("IPv4 fragment")]
    Fragment,
    /// The IPv4 total length or IPv6 payload length disagrees with the frame length.
    #[error("IP length field does not match the frame")]
    BadIpLength,
    /// `hdr_len`, `csum_start` or `csum_offset` contradict the parsed headers or leave the frame.
    #[error("virtio-net header inconsistent with the frame")]
    BadVnetHeader,
    /// The path to the peer leaves room for fewer than 8 bytes of TCP payload behind the headers.
    #[error("path too narrow for the frame's headers")]
    PathTooSmall,
    /// The caller's buffer cannot hold the next segment; nothing was consumed.
    #[error("output buffer too small: {needed} bytes needed")]
    OutputTooSmall { needed: usize },
}

impl OffloadError {
    /// A short, stable, lower-case label suitable for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            OffloadError::Truncated => "truncated",
            OffloadError::TooLong => "too_long",
            OffloadError::ZeroGsoSize => "zero_gso_size",
            OffloadError::UnsupportedGso(_) => "unsupported_gso",
            OffloadError::UnsupportedFrame => "unsupported_frame",
            OffloadError::GsoMismatch => "gso_mismatch",
            OffloadError::Fragment => "fragment",
            OffloadError::BadIpLength => "bad_ip_length",
            OffloadError::BadVnetHeader => "bad_vnet_header",
            OffloadError::PathTooSmall => "path_too_small",
            OffloadError::OutputTooSmall { .. } => "output_too_small",
        }
    }
}

impl From<IpError> for OffloadError {
    fn from(error: IpError) -> Self {
        match error {
            IpError::Truncated => OffloadError::Truncated,
            IpError::BadLength => OffloadError::BadIpLength,
            IpError::NotIp
            | IpError::BadVersion
            | IpError::BadHeaderLen
            | IpError::UnsupportedTransport => OffloadError::UnsupportedFrame,
        }
    }
}

/// The headers of a frame that is one TCP or UDP segment, or a super-frame of them: the IP length
/// field accounts for exactly the rest of the frame (no padding), IPv4 is not a fragment (options
/// are allowed), and IPv6 is followed directly by TCP or UDP.
#[inline]
pub(crate) fn segment_layout(frame: &[u8]) -> Result<IpLayout, OffloadError> {
    let ip = IpFrame::new_checked(frame)?;
    if ip.end() != frame.len() {
        return Err(OffloadError::BadIpLength);
    }
    if ip.is_fragment() {
        return Err(OffloadError::Fragment);
    }
    Ok(ip.layout()?)
}
