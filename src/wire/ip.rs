//! The IP packet inside an inner Ethernet frame: one checked view, [`IpFrame`], from the Ethernet
//! header through at most one VLAN tag to the IPv4 or IPv6 header, and on request ([`IpFrame::layout`])
//! the TCP or UDP header behind it. Segmentation, coalescing, ICMP "too big" answers and IPv4
//! fragmentation all read frames through it, so there is one parser of these headers.
//!
//! Invariants of a checked [`IpFrame`]: the buffer holds the Ethernet header and tag, the whole IP
//! header (IPv4 options included) and as many bytes as the IP length field announces; the version
//! nibble matches the EtherType; an IPv4 header is at least 20 bytes and its total length covers
//! it. Bytes after the IP packet (Ethernet padding) are allowed and not part of it. Every accessor
//! is then infallible. IPv6 extension headers are not walked: the next-header value of the fixed
//! header is [`IpFrame::protocol`]. All offsets are counted from the first byte of the Ethernet
//! frame, the way virtio-net headers count them. Fields are big-endian (network order).

use core::ops::Range;

use super::{Checksum, EthernetFrame};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
/// The IPv6 fragment extension header, as a next-header value.
pub const IPPROTO_IPV6_FRAGMENT: u8 = 44;
pub const IPPROTO_ICMPV6: u8 = 58;

/// An IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// The fixed IPv6 header.
pub const IPV6_HEADER_LEN: usize = 40;
/// A TCP header without options.
pub const TCP_HEADER_LEN: usize = 20;
pub const UDP_HEADER_LEN: usize = 8;
/// Type, code, checksum and four type-specific bytes, in ICMPv4 and ICMPv6 alike.
pub const ICMP_HEADER_LEN: usize = 8;
/// Offset of the checksum field inside the TCP header (virtio `csum_offset` for TCP).
pub const TCP_CHECKSUM_AT: usize = 16;
/// Offset of the checksum field inside the UDP header (virtio `csum_offset` for UDP).
pub const UDP_CHECKSUM_AT: usize = 6;

/// IPv4 flags and fragment offset (bytes 6 and 7 of the header).
pub const IPV4_FLAG_RESERVED: u16 = 0x8000;
pub const IPV4_FLAG_DF: u16 = 0x4000;
pub const IPV4_FLAG_MF: u16 = 0x2000;
/// The fragment offset, in 8-byte units.
pub const IPV4_OFFSET_MASK: u16 = 0x1fff;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_URG: u8 = 0x20;
pub const TCP_CWR: u8 = 0x80;

/// Why a frame could not be viewed as IP (or its transport header as TCP/UDP).
///
/// Every variant has a stable [`IpError::as_str`] label; users map them onto their own drop reasons.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum IpError {
    /// The frame ends inside the Ethernet header, the tag, or an IP or transport header.
    #[error("frame truncated inside its headers")]
    Truncated,
    /// The EtherType (behind at most one tag) is neither IPv4 nor IPv6.
    #[error("not an IP frame")]
    NotIp,
    /// The IP version nibble does not match the EtherType.
    #[error("IP version does not match the EtherType")]
    BadVersion,
    /// An IPv4 IHL below 5 or a TCP data offset below 5.
    #[error("header length field below the fixed header")]
    BadHeaderLen,
    /// The IP length field points past the frame, or (IPv4) below the header length.
    #[error("IP length field does not fit the frame")]
    BadLength,
    /// [`IpFrame::layout`] on a protocol other than TCP and UDP.
    #[error("transport is neither TCP nor UDP")]
    UnsupportedTransport,
}

impl IpError {
    /// A short, stable, lower-case label suitable for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            IpError::Truncated => "truncated",
            IpError::NotIp => "not_ip",
            IpError::BadVersion => "bad_version",
            IpError::BadHeaderLen => "bad_header_len",
            IpError::BadLength => "bad_length",
            IpError::UnsupportedTransport => "unsupported_transport",
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum IpVersion {
    V4,
    V6,
}

/// An Ethernet frame carrying an IPv4 or IPv6 packet; see the module documentation.
#[derive(Debug, Clone)]
pub struct IpFrame<T: AsRef<[u8]>> {
    buffer: T,
    l3: usize,
    l4: usize,
    end: usize,
    version: IpVersion,
}

impl<T: AsRef<[u8]>> IpFrame<T> {
    /// Checks `buffer`, cheapest first: Ethernet header and tag present, IP EtherType, fixed IP
    /// header present, version, IHL, options present, IP length within the buffer.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, IpError> {
        let bytes = buffer.as_ref();
        let (l3, version) = EthernetFrame::new_checked(bytes)
            .map_err(|_| IpError::Truncated)?
            .ip_offset()?;
        let ip = &bytes[l3..];
        let (header_len, len) = match version {
            IpVersion::V6 => {
                if ip.len() < IPV6_HEADER_LEN {
                    return Err(IpError::Truncated);
                }
                if ip[0] >> 4 != 6 {
                    return Err(IpError::BadVersion);
                }
                (IPV6_HEADER_LEN, IPV6_HEADER_LEN + usize::from(be16(ip, 4)))
            }
            IpVersion::V4 => {
                if ip.len() < IPV4_HEADER_LEN {
                    return Err(IpError::Truncated);
                }
                if ip[0] >> 4 != 4 {
                    return Err(IpError::BadVersion);
                }
                let header_len = usize::from(ip[0] & 0x0f) * 4;
                if header_len < IPV4_HEADER_LEN {
                    return Err(IpError::BadHeaderLen);
                }
                if ip.len() < header_len {
                    return Err(IpError::Truncated);
                }
                let total = usize::from(be16(ip, 2));
                if total < header_len {
                    return Err(IpError::BadLength);
                }
                (header_len, total)
            }
        };
        if len > ip.len() {
            return Err(IpError::BadLength);
        }
        Ok(IpFrame {
            buffer,
            l3,
            l4: l3 + header_len,
            end: l3 + len,
            version,
        })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole buffer: Ethernet frame, padding included.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn version(&self) -> IpVersion {
        self.version
    }

    pub fn is_ipv6(&self) -> bool {
        self.version == IpVersion::V6
    }

    /// Where the IP header starts: 14, or 18 behind a VLAN tag. Also the Ethernet header's length.
    pub fn l3(&self) -> usize {
        self.l3
    }

    /// Where the IP header ends (IPv4 options included) and the transport header starts.
    pub fn l4(&self) -> usize {
        self.l4
    }

    /// Where the IP packet ends, as its length field says; the buffer may go on with padding.
    pub fn end(&self) -> usize {
        self.end
    }

    /// The IP header's length: 20 to 60 for IPv4, 40 for IPv6.
    pub fn header_len(&self) -> usize {
        self.l4 - self.l3
    }

    /// The IPv4 protocol or the IPv6 fixed header's next header.
    pub fn protocol(&self) -> u8 {
        let at = match self.version {
            IpVersion::V4 => 9,
            IpVersion::V6 => 6,
        };
        self.buffer.as_ref()[self.l3 + at]
    }

    /// The IP packet, header to the end its length field gives.
    pub fn packet(&self) -> &[u8] {
        &self.buffer.as_ref()[self.l3..self.end]
    }

    /// What follows the IP header, to the end of the IP packet.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.l4..self.end]
    }

    /// The source address followed directly by the destination address (8 or 32 bytes).
    pub fn addresses(&self) -> Range<usize> {
        addresses(self.l3, self.is_ipv6())
    }

    pub fn src_addr(&self) -> &[u8] {
        let range = self.addresses();
        let half = range.len() / 2;
        &self.buffer.as_ref()[range.start..range.start + half]
    }

    pub fn dst_addr(&self) -> &[u8] {
        let range = self.addresses();
        let half = range.len() / 2;
        &self.buffer.as_ref()[range.start + half..range.end]
    }

    /// IPv4: the identification field; IPv6 (no such field in the fixed header): 0.
    pub fn ident(&self) -> u16 {
        match self.version {
            IpVersion::V4 => be16(self.buffer.as_ref(), self.l3 + 4),
            IpVersion::V6 => 0,
        }
    }

    /// IPv4: flags and fragment offset as on the wire (see `IPV4_FLAG_*`); IPv6: 0.
    pub fn flags_and_offset(&self) -> u16 {
        match self.version {
            IpVersion::V4 => be16(self.buffer.as_ref(), self.l3 + 6),
            IpVersion::V6 => 0,
        }
    }

    /// IPv4 with DF set.
    pub fn dont_fragment(&self) -> bool {
        self.flags_and_offset() & IPV4_FLAG_DF != 0
    }

    /// IPv4 with MF set.
    pub fn more_fragments(&self) -> bool {
        self.flags_and_offset() & IPV4_FLAG_MF != 0
    }

    /// IPv4: the fragment offset in bytes.
    pub fn fragment_offset(&self) -> usize {
        usize::from(self.flags_and_offset() & IPV4_OFFSET_MASK) * 8
    }

    /// An IPv4 fragment: MF set or a non-zero offset. IPv6 fragments are a next header (44).
    pub fn is_fragment(&self) -> bool {
        self.flags_and_offset() & (IPV4_FLAG_MF | IPV4_OFFSET_MASK) != 0
    }

    /// The TCP or UDP header behind the IP header, checked to lie inside the IP packet (a TCP data
    /// offset of at least 5, options included): [`IpError::UnsupportedTransport`] for another
    /// protocol, [`IpError::Truncated`], [`IpError::BadHeaderLen`].
    #[inline]
    pub fn layout(&self) -> Result<IpLayout, IpError> {
        let packet = &self.buffer.as_ref()[..self.end];
        let (l4, protocol) = (self.l4, self.protocol());
        let payload = match protocol {
            IPPROTO_TCP => {
                if packet.len() < l4 + TCP_HEADER_LEN {
                    return Err(IpError::Truncated);
                }
                let header_len = usize::from(packet[l4 + 12] >> 4) * 4;
                if header_len < TCP_HEADER_LEN {
                    return Err(IpError::BadHeaderLen);
                }
                l4 + header_len
            }
            IPPROTO_UDP => l4 + UDP_HEADER_LEN,
            _ => return Err(IpError::UnsupportedTransport),
        };
        if packet.len() < payload {
            return Err(IpError::Truncated);
        }
        Ok(IpLayout {
            l3: self.l3,
            ipv6: self.is_ipv6(),
            l4,
            protocol,
            payload,
        })
    }
}

/// Where the headers of a TCP or UDP frame sit, from [`IpFrame::layout`]: plain offsets, so a
/// layout can be kept and compared after the view is gone (the coalescer keeps its pending flow's).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct IpLayout {
    /// Start of the IP header: 14, or 18 behind a VLAN tag.
    pub l3: usize,
    pub ipv6: bool,
    /// Start of the transport header.
    pub l4: usize,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub protocol: u8,
    /// Start of the transport payload, i.e. the length of all headers.
    pub payload: usize,
}

impl IpLayout {
    /// The source address followed directly by the destination address.
    pub fn addresses(&self) -> Range<usize> {
        addresses(self.l3, self.ipv6)
    }

    /// The pseudo-header sum of `frame`'s addresses and protocol, without the length.
    #[inline]
    pub fn pseudo_addresses(&self, frame: &[u8]) -> Checksum {
        Checksum::new()
            .add_bytes(&frame[self.addresses()])
            .add_u16(u16::from(self.protocol))
    }
}

fn addresses(l3: usize, ipv6: bool) -> Range<usize> {
    if ipv6 {
        l3 + 8..l3 + 40
    } else {
        l3 + 12..l3 + 20
    }
}

#[inline]
pub(crate) fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

#[inline]
pub(crate) fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[inline]
pub(crate) fn put16(bytes: &mut [u8], at: usize, value: u16) {
    bytes[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

#[inline]
pub(crate) fn put32(bytes: &mut [u8], at: usize, value: u32) {
    bytes[at..at + 4].copy_from_slice(&value.to_be_bytes());
}
