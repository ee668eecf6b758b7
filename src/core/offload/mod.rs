//! Segmentation and coalescing for a TAP opened with `IFF_VNET_HDR` and TSO/USO offloads: the
//! kernel hands meshd super-frames of up to 64 KiB behind a virtio-net header and accepts them on
//! write, so meshd pays per-packet costs once per 64 KiB instead of once per 1.4 KiB.
//!
//! * [`Segmenter`] (TAP → peers) cuts a super-frame into wire-ready Ethernet frames of at most
//!   `gso_size` bytes of L4 payload each (fewer for TCP when the path to the peer is narrower),
//!   with every length, IPv4 ID, TCP sequence number, flag and checksum as if the sender's kernel
//!   had segmented it, so the receiving host sees plain frames.
//!   [`complete_checksum`] finishes the partial checksum of a plain frame in place.
//! * [`Coalescer`] (peers → TAP) merges consecutive in-order segments of one TCP flow back into a
//!   super-frame behind a `GSO_TCPV4`/`GSO_TCPV6` header, the way Linux GRO does; everything else
//!   passes through unchanged behind an all-zero header.
//!
//! Both are sans-IO and never allocate: frames come in as slices, segments go into caller buffers,
//! and the coalescer's one staging buffer is handed to it at construction. Bad input (from the
//! kernel or a peer) is an [`OffloadError`] or a pass-through, never a panic.
//!
//! Frames understood: Ethernet II, at most one 802.1Q/802.1ad tag, IPv4 (options allowed when
//! segmenting, not when coalescing; no fragments) or IPv6 without extension headers, then TCP, or
//! UDP for USO. Offsets in the virtio-net header count from the first byte of the Ethernet frame.

mod checksum;
mod coalesce;
mod segment;

#[cfg(test)]
mod tests;

pub use checksum::{checksum, pseudo_header_sum, Checksum};
pub use coalesce::{CoalesceStats, Coalescer, TapWrite, COALESCE_STAGING_LEN};
pub use segment::{complete_checksum, Segmenter};

use crate::wire::{
    ETHERNET_HEADER_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN,
    VLAN_TAG_LEN,
};

/// The longest Ethernet frame an IP length field can describe: one VLAN tag, an IPv6 header and a
/// 65535-byte IPv6 payload (an IPv4 packet, header included, is at most 65535 bytes).
pub const MAX_SUPER_FRAME_LEN: usize =
    ETHERNET_HEADER_LEN + VLAN_TAG_LEN + IPV6_HEADER_LEN + 65_535;

pub(crate) const IPPROTO_TCP: u8 = 6;
pub(crate) const IPPROTO_UDP: u8 = 17;
pub(crate) const IPV4_HEADER_LEN: usize = 20;
pub(crate) const IPV6_HEADER_LEN: usize = 40;
pub(crate) const TCP_HEADER_LEN: usize = 20;
pub(crate) const UDP_HEADER_LEN: usize = 8;
/// Offset of the checksum field inside the TCP header (virtio `csum_offset` for TCP).
pub(crate) const TCP_CHECKSUM_AT: usize = 16;
/// Offset of the checksum field inside the UDP header (virtio `csum_offset` for UDP).
pub(crate) const UDP_CHECKSUM_AT: usize = 6;

pub(crate) const TCP_FIN: u8 = 0x01;
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_RST: u8 = 0x04;
pub(crate) const TCP_PSH: u8 = 0x08;
pub(crate) const TCP_URG: u8 = 0x20;
pub(crate) const TCP_CWR: u8 = 0x80;

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

/// Where the headers of a parsed IP frame sit.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Start of the IP header: 14, or 18 behind a VLAN tag.
    pub l3: usize,
    pub ipv6: bool,
    /// Start of the transport header.
    pub l4: usize,
    pub protocol: u8,
    /// Start of the transport payload, i.e. the length of all headers.
    pub payload: usize,
}

impl Layout {
    /// Where the source address starts; the destination address follows it directly.
    pub fn addresses(&self) -> core::ops::Range<usize> {
        if self.ipv6 {
            self.l3 + 8..self.l3 + 40
        } else {
            self.l3 + 12..self.l3 + 20
        }
    }

    /// The pseudo-header sum of this frame's addresses and protocol, without the length.
    pub fn pseudo_addresses(&self, frame: &[u8]) -> Checksum {
        Checksum::new()
            .add_bytes(&frame[self.addresses()])
            .add_u16(u16::from(self.protocol))
    }
}

pub(crate) fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

pub(crate) fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

pub(crate) fn put16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

pub(crate) fn put32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

/// The IP header's offset and whether it is IPv6, behind at most one VLAN tag.
pub(crate) fn ip_offset(frame: &[u8]) -> Result<(usize, bool), OffloadError> {
    if frame.len() < ETHERNET_HEADER_LEN {
        return Err(OffloadError::Truncated);
    }
    let mut l3 = ETHERNET_HEADER_LEN;
    let mut ethertype = be16(frame, 12);
    if matches!(ethertype, ETHERTYPE_VLAN | ETHERTYPE_QINQ) {
        if frame.len() < ETHERNET_HEADER_LEN + VLAN_TAG_LEN {
            return Err(OffloadError::Truncated);
        }
        l3 += VLAN_TAG_LEN;
        ethertype = be16(frame, 16);
    }
    match ethertype {
        ETHERTYPE_IPV4 => Ok((l3, false)),
        ETHERTYPE_IPV6 => Ok((l3, true)),
        _ => Err(OffloadError::UnsupportedFrame),
    }
}

/// Parses Ethernet, IP and TCP/UDP headers as far as segmentation needs: IPv4 may carry options but
/// must not be a fragment, IPv6 must be followed directly by TCP or UDP, and the IP length field
/// must account for exactly the rest of the frame.
pub(crate) fn parse_layout(frame: &[u8]) -> Result<Layout, OffloadError> {
    let (l3, ipv6) = ip_offset(frame)?;
    let (l4, protocol) = if ipv6 {
        if frame.len() < l3 + IPV6_HEADER_LEN {
            return Err(OffloadError::Truncated);
        }
        if frame[l3] >> 4 != 6 {
            return Err(OffloadError::UnsupportedFrame);
        }
        if usize::from(be16(frame, l3 + 4)) != frame.len() - l3 - IPV6_HEADER_LEN {
            return Err(OffloadError::BadIpLength);
        }
        (l3 + IPV6_HEADER_LEN, frame[l3 + 6])
    } else {
        if frame.len() < l3 + IPV4_HEADER_LEN {
            return Err(OffloadError::Truncated);
        }
        if frame[l3] >> 4 != 4 {
            return Err(OffloadError::UnsupportedFrame);
        }
        let header_len = usize::from(frame[l3] & 0x0f) * 4;
        if header_len < IPV4_HEADER_LEN {
            return Err(OffloadError::UnsupportedFrame);
        }
        if frame.len() < l3 + header_len {
            return Err(OffloadError::Truncated);
        }
        if usize::from(be16(frame, l3 + 2)) != frame.len() - l3 {
            return Err(OffloadError::BadIpLength);
        }
        // MF set or a non-zero fragment offset.
        if be16(frame, l3 + 6) & 0x3fff != 0 {
            return Err(OffloadError::Fragment);
        }
        (l3 + header_len, frame[l3 + 9])
    };
    let payload = match protocol {
        IPPROTO_TCP => {
            if frame.len() < l4 + TCP_HEADER_LEN {
                return Err(OffloadError::Truncated);
            }
            let header_len = usize::from(frame[l4 + 12] >> 4) * 4;
            if header_len < TCP_HEADER_LEN {
                return Err(OffloadError::UnsupportedFrame);
            }
            l4 + header_len
        }
        IPPROTO_UDP => l4 + UDP_HEADER_LEN,
        _ => return Err(OffloadError::UnsupportedFrame),
    };
    if frame.len() < payload {
        return Err(OffloadError::Truncated);
    }
    Ok(Layout {
        l3,
        ipv6,
        l4,
        protocol,
        payload,
    })
}
