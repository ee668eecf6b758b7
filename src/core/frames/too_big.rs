//! What a router does with an IP packet too big for the next hop, done for frames too big for the
//! path to a peer: [`too_big_reply`] writes the ICMPv4 "fragmentation needed" (RFC 792, RFC 1191)
//! or ICMPv6 "packet too big" (RFC 4443) frame that tells the sender the path MTU, so its TCP lowers
//! its segment size instead of retransmitting into a silent drop. [`NoReply`] says why no answer
//! was written; the IPv4 fragmenter (`fragment.rs`) shares it.
//!
//! This module owns only the bytes: reading the oversized frame (through [`IpFrame`]) and writing
//! the answer into a caller buffer. Deciding that a frame is too big, counting each [`NoReply`] and
//! delivering what was written are the node's. Invariants: nothing here panics on any input,
//! writes past the `out` it is given, or allocates. No answer is ever produced for an ICMP error
//! (errors about errors can loop between two hosts), for a broadcast or multicast destination, or
//! from or to an address that is not one host's (RFC 1812 4.3.2.7 and RFC 4443 2.4: one group
//! frame would draw a storm of answers), or for a fragment other than the first (it holds no
//! transport header, so the sender could not tell which connection the answer is about; for IPv6
//! this is seen when the fragment header directly follows the fixed one, as no extension headers
//! are walked).

use crate::wire::ip::{
    be16, put16, put32, ICMP_HEADER_LEN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_IPV6_FRAGMENT,
    IPV4_HEADER_LEN, IPV6_HEADER_LEN,
};
use crate::wire::{checksum, pseudo_header_sum, IpError, IpFrame};

const ICMPV4_DEST_UNREACHABLE: u8 = 3;
const ICMPV4_FRAGMENTATION_NEEDED: u8 = 4;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// RFC 1812 4.3.2.3: an ICMPv4 error carries at most 576 bytes of IP packet.
const ICMPV4_MAX_REPLY: usize = 576;
/// RFC 4443 2.4 (c): an ICMPv6 error must not exceed the IPv6 minimum MTU.
const ICMPV6_MAX_REPLY: usize = 1280;
/// RFC 791: every IPv4 module must forward 68-byte datagrams unfragmented.
const IPV4_MIN_MTU: u16 = 68;
/// RFC 8200 section 5: every IPv6 link carries 1280-byte packets.
const IPV6_MIN_MTU: u16 = 1280;
const REPLY_HOP_LIMIT: u8 = 64;
/// RFC 1812 4.3.2.5: ICMP errors other than source quench go out with precedence 6 (internetwork
/// control), so congestion that dropped the original does not also drop the answer.
const REPLY_IPV4_TOS: u8 = 0xc0;

/// Why no ICMP answer was produced for an oversized frame (each becomes a drop counter in the node).
///
/// Every variant has a stable [`NoReply::as_str`] label for those counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReply {
    /// Not an IPv4 or IPv6 frame (ARP, another EtherType); IPv6 as well for [`Ipv4Fragmenter`].
    NotIp,
    /// Truncated headers, a wrong IP version, an IHL below 5, an IP length past the frame, or
    /// IPv4 options that overrun the header.
    Malformed,
    /// An IPv4 fragment with a non-zero offset, or an IPv6 one whose fragment header directly
    /// follows the fixed header.
    NotFirstFragment,
    /// An ICMPv4 or ICMPv6 error, or ICMP too short to tell.
    IcmpError,
    /// A group (broadcast or multicast) destination MAC or IP address, or a source that is not one
    /// host's: group MAC, IPv4 0.0.0.0, multicast or 255.255.255.255, IPv6 :: or multicast.
    GroupDestination,
    /// Below the least MTU the IP version allows (68 for IPv4, 1280 for IPv6), or for the
    /// fragmenter a frame size that leaves fewer than 8 bytes of data per fragment.
    MtuTooSmall,
    /// IPv4 with DF clear: the node fragments it ([`Ipv4Fragmenter`]) instead of answering.
    FragmentsAllowed,
    /// [`Ipv4Fragmenter::new`] was given a datagram with DF set, which must not be fragmented.
    DontFragment,
    /// `out` cannot hold the reply headers plus the quoted IP header and 8 bytes after it, the
    /// least a sender needs to match the answer to a connection (RFC 792).
    OutputTooSmall,
}

impl NoReply {
    /// A short, stable, lower-case label suitable for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            NoReply::NotIp => "not_ip",
            NoReply::Malformed => "malformed",
            NoReply::NotFirstFragment => "not_first_fragment",
            NoReply::IcmpError => "icmp_error",
            NoReply::GroupDestination => "group_destination",
            NoReply::MtuTooSmall => "mtu_too_small",
            NoReply::FragmentsAllowed => "fragments_allowed",
            NoReply::DontFragment => "dont_fragment",
            NoReply::OutputTooSmall => "output_too_small",
        }
    }
}

impl From<IpError> for NoReply {
    /// Anything but a non-IP EtherType is malformed: truncated headers, a wrong IP version, an IHL
    /// below 5, an IP length past the frame or below the IPv4 header.
    fn from(error: IpError) -> Self {
        match error {
            IpError::NotIp => NoReply::NotIp,
            _ => NoReply::Malformed,
        }
    }
}

/// Views `frame` as IP for answering or fragmenting it: Ethernet II with at most one VLAN tag,
/// then an IPv4 or IPv6 header that lies inside the frame and an IP length field that does not
/// point past it.
pub(super) fn ip_frame(frame: &[u8]) -> Result<IpFrame<&[u8]>, NoReply> {
    Ok(IpFrame::new_checked(frame)?)
}

/// Writes into `out` the Ethernet frame that answers `frame` (too big for a path whose IP MTU is `mtu`) with
/// ICMPv4 "fragmentation needed" (type 3 code 4, next-hop MTU = mtu) or ICMPv6 "packet too big" (type 2, MTU = mtu),
/// returns its length. `out` is at least 1518 bytes in practice; if smaller, quote less.
///
/// The answer comes from the original destination's MAC and IP address to the original source, in
/// the original's VLAN. It quotes the original packet from its IP header on, as much as keeps the
/// answer's IP packet within 576 bytes (IPv4) or 1280 bytes (IPv6). Reasons not to answer are
/// checked in this order: [`NoReply::NotIp`], [`NoReply::Malformed`], for IPv4
/// [`NoReply::FragmentsAllowed`], then [`NoReply::NotFirstFragment`], [`NoReply::IcmpError`],
/// [`NoReply::GroupDestination`], [`NoReply::MtuTooSmall`], [`NoReply::OutputTooSmall`]. DF comes
/// before the group checks because a broadcast datagram may still be fragmented.
pub fn too_big_reply(frame: &[u8], mtu: u16, out: &mut [u8]) -> Result<usize, NoReply> {
    let packet = ip_frame(frame)?;
    if packet.is_ipv6() {
        ipv6_reply(&packet, mtu, out)
    } else {
        ipv4_reply(&packet, mtu, out)
    }
}

fn ipv4_reply(packet: &IpFrame<&[u8]>, mtu: u16, out: &mut [u8]) -> Result<usize, NoReply> {
    let frame = packet.as_bytes();
    let ip = packet.packet();
    let header_len = packet.header_len();
    if !packet.dont_fragment() {
        return Err(NoReply::FragmentsAllowed);
    }
    if packet.fragment_offset() != 0 {
        return Err(NoReply::NotFirstFragment);
    }
    if packet.protocol() == IPPROTO_ICMP {
        let icmp = packet.payload();
        if icmp.len() < ICMP_HEADER_LEN || matches!(icmp[0], 3 | 4 | 5 | 11 | 12) {
            return Err(NoReply::IcmpError);
        }
    }
    let (src, dst) = (packet.src_addr(), packet.dst_addr());
    if group_mac(frame) || ipv4_group(dst) || ipv4_group(src) || src == [0; 4] {
        return Err(NoReply::GroupDestination);
    }
    if mtu < IPV4_MIN_MTU {
        return Err(NoReply::MtuTooSmall);
    }
    let l2 = packet.l3();
    let headers = IPV4_HEADER_LEN + ICMP_HEADER_LEN;
    let quote = quote_len(
        ip.len(),
        header_len,
        ICMPV4_MAX_REPLY - headers,
        out,
        l2 + headers,
    )?;
    let len = l2 + headers + quote;
    let out = &mut out[..len];
    write_ethernet(frame, l2, out);

    let reply = &mut out[l2..];
    reply[..IPV4_HEADER_LEN].fill(0);
    reply[0] = 0x45;
    reply[1] = REPLY_IPV4_TOS;
    put16(reply, 2, (headers + quote) as u16);
    reply[8] = REPLY_HOP_LIMIT;
    reply[9] = IPPROTO_ICMP;
    reply[12..16].copy_from_slice(dst);
    reply[16..20].copy_from_slice(src);
    let header_checksum = checksum(&reply[..IPV4_HEADER_LEN]);
    put16(reply, 10, header_checksum);

    let icmp = &mut reply[IPV4_HEADER_LEN..];
    icmp[0] = ICMPV4_DEST_UNREACHABLE;
    icmp[1] = ICMPV4_FRAGMENTATION_NEEDED;
    icmp[2..6].fill(0);
    put16(icmp, 6, mtu);
    icmp[ICMP_HEADER_LEN..].copy_from_slice(&ip[..quote]);
    let icmp_checksum = checksum(icmp);
    put16(icmp, 2, icmp_checksum);
    Ok(len)
}

fn ipv6_reply(packet: &IpFrame<&[u8]>, mtu: u16, out: &mut [u8]) -> Result<usize, NoReply> {
    let frame = packet.as_bytes();
    let ip = packet.packet();
    let after = packet.payload();
    // Only the header right after the fixed one is looked at, so the cost stays bounded: ICMPv6
    // or a fragment header behind another extension header goes unrecognised and is answered.
    match packet.protocol() {
        IPPROTO_IPV6_FRAGMENT if after.len() < 8 => return Err(NoReply::Malformed),
        IPPROTO_IPV6_FRAGMENT if be16(after, 2) >> 3 != 0 => return Err(NoReply::NotFirstFragment),
        // Types below 128 are errors (RFC 4443 2.1).
        IPPROTO_ICMPV6 if after.len() < ICMP_HEADER_LEN || after[0] < 128 => {
            return Err(NoReply::IcmpError)
        }
        _ => {}
    }
    let (src, dst) = (packet.src_addr(), packet.dst_addr());
    if group_mac(frame) || dst[0] == 0xff || src[0] == 0xff || src == [0; 16] {
        return Err(NoReply::GroupDestination);
    }
    if mtu < IPV6_MIN_MTU {
        return Err(NoReply::MtuTooSmall);
    }
    let l2 = packet.l3();
    let headers = IPV6_HEADER_LEN + ICMP_HEADER_LEN;
    let quote = quote_len(
        ip.len(),
        IPV6_HEADER_LEN,
        ICMPV6_MAX_REPLY - headers,
        out,
        l2 + headers,
    )?;
    let len = l2 + headers + quote;
    let out = &mut out[..len];
    write_ethernet(frame, l2, out);

    let reply = &mut out[l2..];
    reply[..4].copy_from_slice(&[0x60, 0, 0, 0]);
    let icmp_len = ICMP_HEADER_LEN + quote;
    put16(reply, 4, icmp_len as u16);
    reply[6] = IPPROTO_ICMPV6;
    reply[7] = REPLY_HOP_LIMIT;
    reply[8..24].copy_from_slice(dst);
    reply[24..40].copy_from_slice(src);

    let (addresses, icmp) = reply.split_at_mut(IPV6_HEADER_LEN);
    icmp[0] = ICMPV6_PACKET_TOO_BIG;
    icmp[1..4].fill(0);
    put32(icmp, 4, u32::from(mtu));
    icmp[ICMP_HEADER_LEN..].copy_from_slice(&ip[..quote]);
    let icmp_checksum = pseudo_header_sum(
        &addresses[8..24],
        &addresses[24..40],
        IPPROTO_ICMPV6,
        icmp_len as u32,
    )
    .add_bytes(icmp)
    .finish();
    put16(icmp, 2, icmp_checksum);
    Ok(len)
}

/// How many bytes of the original IP packet (`packet_len` long, `header_len` of it IP header) to
/// quote: all of it up to `limit`, and less if `out` is shorter than `reply_headers + quote`, but never
/// less than the IP header and 8 bytes, without which the sender cannot match the answer.
fn quote_len(
    packet_len: usize,
    header_len: usize,
    limit: usize,
    out: &[u8],
    reply_headers: usize,
) -> Result<usize, NoReply> {
    let room = out.len().saturating_sub(reply_headers);
    let quote = packet_len.min(limit).min(room);
    if quote < packet_len.min(header_len + ICMP_HEADER_LEN) || out.len() < reply_headers {
        return Err(NoReply::OutputTooSmall);
    }
    Ok(quote)
}

/// Multicast (224.0.0.0/4) or the limited broadcast address.
fn ipv4_group(address: &[u8]) -> bool {
    address[0] & 0xf0 == 0xe0 || address == [0xff; 4]
}

/// Destination or source MAC with the I/G bit set: the answer would go to, or come from, a group.
fn group_mac(frame: &[u8]) -> bool {
    frame[0] & 1 != 0 || frame[6] & 1 != 0
}

/// The original's Ethernet header with the MAC addresses swapped; a VLAN tag stays as it was.
fn write_ethernet(frame: &[u8], l2: usize, out: &mut [u8]) {
    out[..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&frame[..6]);
    out[12..l2].copy_from_slice(&frame[12..l2]);
}
