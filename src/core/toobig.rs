//! What a router does with an IP packet too big for the next hop, done for frames too big for the
//! path to a peer: [`too_big_reply`] writes the ICMPv4 "fragmentation needed" (RFC 792, RFC 1191)
//! or ICMPv6 "packet too big" (RFC 4443) frame that tells the sender the path MTU, so its TCP lowers
//! its segment size instead of retransmitting into a silent drop; [`Ipv4Fragmenter`] cuts an IPv4
//! datagram whose sender allowed it (DF clear) into RFC 791 fragments.
//!
//! This module owns only the bytes: parsing the oversized frame and writing the answer or the
//! fragments into caller buffers. Deciding that a frame is too big, counting each [`NoReply`] and
//! delivering what was written are the node's. Invariants: nothing here panics on any input,
//! writes past the `out` it is given, or allocates. No answer is ever produced for an ICMP error
//! (errors about errors can loop between two hosts), for a broadcast or multicast destination, or
//! from or to an address that is not one host's (RFC 1812 4.3.2.7 and RFC 4443 2.4: one group
//! frame would draw a storm of answers), or for a fragment other than the first (it holds no
//! transport header, so the sender could not tell which connection the answer is about; for IPv6
//! this is seen when the fragment header directly follows the fixed one, as no extension headers
//! are walked).

use crate::core::offload::{
    be16, checksum, ip_offset, pseudo_header_sum, put16, put32, Checksum, OffloadError,
    IPV4_HEADER_LEN, IPV6_HEADER_LEN,
};

const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const IPV6_FRAGMENT_HEADER: u8 = 44;
/// Type, code, checksum and four type-specific bytes, in ICMPv4 and ICMPv6 alike.
const ICMP_HEADER_LEN: usize = 8;
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

const IPV4_FLAG_DF: u16 = 0x4000;
const IPV4_FLAG_MF: u16 = 0x2000;
const IPV4_OFFSET_MASK: u16 = 0x1fff;
/// The evil bit is nobody's to clear, so fragments carry it on as the original had it.
const IPV4_FLAG_RESERVED: u16 = 0x8000;
/// The most option bytes an IPv4 header holds (IHL 15).
const IPV4_MAX_OPTIONS: usize = 40;
/// Fragment offsets count 8-byte units, so every fragment but the last carries a multiple of 8.
const FRAGMENT_UNIT: usize = 8;
/// The largest IPv4 datagram; fragments that would reassemble past it cannot be described.
const IPV4_MAX_LEN: usize = 65_535;

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

/// Where the IP packet inside a frame lies: `frame[l3..end]`, Ethernet padding left out.
#[derive(Debug, Clone, Copy)]
struct IpPacket {
    l3: usize,
    end: usize,
    ipv6: bool,
}

impl IpPacket {
    /// Ethernet II with at most one VLAN tag, then an IPv4 or IPv6 header that lies inside the frame
    /// and an IP length field that does not point past it.
    fn parse(frame: &[u8]) -> Result<IpPacket, NoReply> {
        let (l3, ipv6) = ip_offset(frame).map_err(|e| match e {
            OffloadError::UnsupportedFrame => NoReply::NotIp,
            _ => NoReply::Malformed,
        })?;
        let ip = &frame[l3..];
        let len = if ipv6 {
            if ip.len() < IPV6_HEADER_LEN || ip[0] >> 4 != 6 {
                return Err(NoReply::Malformed);
            }
            IPV6_HEADER_LEN + usize::from(be16(ip, 4))
        } else {
            if ip.len() < IPV4_HEADER_LEN || ip[0] >> 4 != 4 {
                return Err(NoReply::Malformed);
            }
            let total = usize::from(be16(ip, 2));
            if ipv4_header_len(ip) < IPV4_HEADER_LEN || total < ipv4_header_len(ip) {
                return Err(NoReply::Malformed);
            }
            total
        };
        if len > ip.len() {
            return Err(NoReply::Malformed);
        }
        Ok(IpPacket {
            l3,
            end: l3 + len,
            ipv6,
        })
    }
}

fn ipv4_header_len(ip: &[u8]) -> usize {
    usize::from(ip[0] & 0x0f) * 4
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
    let packet = IpPacket::parse(frame)?;
    if packet.ipv6 {
        ipv6_reply(frame, packet, mtu, out)
    } else {
        ipv4_reply(frame, packet, mtu, out)
    }
}

fn ipv4_reply(frame: &[u8], packet: IpPacket, mtu: u16, out: &mut [u8]) -> Result<usize, NoReply> {
    let ip = &frame[packet.l3..packet.end];
    let header_len = ipv4_header_len(ip);
    let flags_offset = be16(ip, 6);
    if flags_offset & IPV4_FLAG_DF == 0 {
        return Err(NoReply::FragmentsAllowed);
    }
    if flags_offset & IPV4_OFFSET_MASK != 0 {
        return Err(NoReply::NotFirstFragment);
    }
    if ip[9] == IPPROTO_ICMP {
        let icmp = &ip[header_len..];
        if icmp.len() < ICMP_HEADER_LEN || matches!(icmp[0], 3 | 4 | 5 | 11 | 12) {
            return Err(NoReply::IcmpError);
        }
    }
    let (src, dst) = (&ip[12..16], &ip[16..20]);
    if group_mac(frame) || ipv4_group(dst) || ipv4_group(src) || src == [0; 4] {
        return Err(NoReply::GroupDestination);
    }
    if mtu < IPV4_MIN_MTU {
        return Err(NoReply::MtuTooSmall);
    }
    let l2 = packet.l3;
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

fn ipv6_reply(frame: &[u8], packet: IpPacket, mtu: u16, out: &mut [u8]) -> Result<usize, NoReply> {
    let ip = &frame[packet.l3..packet.end];
    let after = &ip[IPV6_HEADER_LEN..];
    // Only the header right after the fixed one is looked at, so the cost stays bounded: ICMPv6
    // or a fragment header behind another extension header goes unrecognised and is answered.
    match ip[6] {
        IPV6_FRAGMENT_HEADER if after.len() < 8 => return Err(NoReply::Malformed),
        IPV6_FRAGMENT_HEADER if be16(after, 2) >> 3 != 0 => return Err(NoReply::NotFirstFragment),
        // Types below 128 are errors (RFC 4443 2.1).
        IPPROTO_ICMPV6 if after.len() < ICMP_HEADER_LEN || after[0] < 128 => {
            return Err(NoReply::IcmpError)
        }
        _ => {}
    }
    let (src, dst) = (&ip[8..24], &ip[24..40]);
    if group_mac(frame) || dst[0] == 0xff || src[0] == 0xff || src == [0; 16] {
        return Err(NoReply::GroupDestination);
    }
    if mtu < IPV6_MIN_MTU {
        return Err(NoReply::MtuTooSmall);
    }
    let l2 = packet.l3;
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

/// Splits an IPv4 frame whose DF bit is clear into fragments that each fit in `max_frame` bytes (Ethernet
/// header and tag included), like a router would (RFC 791): every fragment carries the original header
/// (options copied only when their copy flag is set, else only in the first), offsets in 8-byte units,
/// MF set on all but the last (and kept if the original had MF), header checksum recomputed.
///
/// Later fragments drop the options without the copy flag rather than overwrite them with NOPs,
/// which leaves them more room for data. A frame that already fits comes out as one fragment equal
/// to it apart from a corrected header checksum and dropped Ethernet padding. The input may itself
/// be a fragment; its offset is where the new offsets start.
#[derive(Debug, Clone)]
pub struct Ipv4Fragmenter<'a> {
    frame: &'a [u8],
    l3: usize,
    /// The original IP header, kept whole by the first fragment.
    header: &'a [u8],
    /// The transport data of the original, which the fragments share out.
    data: &'a [u8],
    /// The options of later fragments (those with the copy flag), padded with end-of-list to a
    /// multiple of 4 bytes.
    copied: [u8; IPV4_MAX_OPTIONS],
    copied_len: usize,
    first_data: usize,
    later_data: usize,
    /// The original's own fragment offset in bytes and MF flag (it may be a fragment itself).
    base_offset: usize,
    more_follow: bool,
    count: usize,
    next: usize,
}

impl<'a> Ipv4Fragmenter<'a> {
    /// Validates `frame` and plans its fragments. Errors: [`NoReply::NotIp`] (not IPv4),
    /// [`NoReply::Malformed`], [`NoReply::DontFragment`], and [`NoReply::MtuTooSmall`] when the frame
    /// does not fit and `max_frame` leaves fewer than 8 bytes of data per fragment.
    pub fn new(frame: &'a [u8], max_frame: usize) -> Result<Self, NoReply> {
        let packet = IpPacket::parse(frame)?;
        if packet.ipv6 {
            return Err(NoReply::NotIp);
        }
        let ip = &frame[packet.l3..packet.end];
        let flags_offset = be16(ip, 6);
        if flags_offset & IPV4_FLAG_DF != 0 {
            return Err(NoReply::DontFragment);
        }
        let (header, data) = ip.split_at(ipv4_header_len(ip));
        let (copied, copied_len) = copied_options(&header[IPV4_HEADER_LEN..])?;
        let base_offset = usize::from(flags_offset & IPV4_OFFSET_MASK) * FRAGMENT_UNIT;
        // Offsets past 65535 bytes do not fit the 13-bit field and describe no valid datagram.
        if base_offset + data.len() > IPV4_MAX_LEN {
            return Err(NoReply::Malformed);
        }
        // Not even the headers fit: no fragment could (and an empty one would break the limit).
        if packet.l3 + header.len() > max_frame {
            return Err(NoReply::MtuTooSmall);
        }
        let room = |header_len: usize| max_frame.saturating_sub(packet.l3 + header_len);
        let (first_data, later_data, count) = if data.len() <= room(header.len()) {
            (data.len(), FRAGMENT_UNIT, 1)
        } else {
            let first = room(header.len()) / FRAGMENT_UNIT * FRAGMENT_UNIT;
            let later = room(IPV4_HEADER_LEN + copied_len) / FRAGMENT_UNIT * FRAGMENT_UNIT;
            // Later headers are never longer than the first, so `later >= first`.
            if first < FRAGMENT_UNIT {
                return Err(NoReply::MtuTooSmall);
            }
            (first, later, 1 + (data.len() - first).div_ceil(later))
        };
        Ok(Ipv4Fragmenter {
            frame,
            l3: packet.l3,
            header,
            data,
            copied,
            copied_len,
            first_data,
            later_data,
            base_offset,
            more_follow: flags_offset & IPV4_FLAG_MF != 0,
            count,
            next: 0,
        })
    }

    pub fn fragment_count(&self) -> usize {
        self.count
    }

    /// The length of the next fragment, or `None` when all have been written.
    pub fn next_len(&self) -> Option<usize> {
        if self.next >= self.count {
            return None;
        }
        let (header_len, data) = self.plan(self.next);
        Some(self.l3 + header_len + data.len())
    }

    /// Writes the next fragment into `out`, returns its length; None when done.
    ///
    /// Also `None`, consuming nothing, if `out` is shorter than [`Ipv4Fragmenter::next_len`]; an
    /// `out` of `max_frame` bytes always suffices.
    pub fn next_into(&mut self, out: &mut [u8]) -> Option<usize> {
        let len = self.next_len()?;
        let out = out.get_mut(..len)?;
        let index = self.next;
        let (header_len, data) = self.plan(index);
        let l3 = self.l3;
        out[..l3].copy_from_slice(&self.frame[..l3]);
        let (ip, payload) = out[l3..].split_at_mut(header_len);
        if index == 0 {
            ip.copy_from_slice(self.header);
        } else {
            ip[..IPV4_HEADER_LEN].copy_from_slice(&self.header[..IPV4_HEADER_LEN]);
            ip[IPV4_HEADER_LEN..].copy_from_slice(&self.copied[..self.copied_len]);
            ip[0] = 0x40 | (header_len / 4) as u8;
        }
        // Fits: new() checked base_offset + data length against 65535.
        let offset = self.base_offset + self.data_start(index);
        let last = index + 1 == self.count;
        let mut flags_offset = be16(self.header, 6) & IPV4_FLAG_RESERVED;
        if !last || self.more_follow {
            flags_offset |= IPV4_FLAG_MF;
        }
        flags_offset |= (offset / FRAGMENT_UNIT) as u16;
        put16(ip, 2, (header_len + data.len()) as u16);
        put16(ip, 6, flags_offset);
        put16(ip, 10, 0);
        let header_checksum = Checksum::new().add_bytes(ip).finish();
        put16(ip, 10, header_checksum);
        payload.copy_from_slice(data);
        self.next += 1;
        Some(len)
    }

    fn data_start(&self, index: usize) -> usize {
        match index {
            0 => 0,
            _ => self.first_data + (index - 1) * self.later_data,
        }
    }

    /// Header length and data of fragment `index`.
    fn plan(&self, index: usize) -> (usize, &'a [u8]) {
        let start = self.data_start(index);
        let (header_len, size) = match index {
            0 => (self.header.len(), self.first_data),
            _ => (IPV4_HEADER_LEN + self.copied_len, self.later_data),
        };
        let end = (start + size).min(self.data.len());
        (header_len, &self.data[start..end])
    }
}

/// The options with the copy flag (RFC 791: the high bit of the type), padded with end-of-list to
/// a multiple of 4 bytes. End-of-list stops the walk; an option whose length is below 2 or runs
/// past the header is [`NoReply::Malformed`].
fn copied_options(options: &[u8]) -> Result<([u8; IPV4_MAX_OPTIONS], usize), NoReply> {
    const END_OF_LIST: u8 = 0;
    const NO_OPERATION: u8 = 1;
    const COPY_FLAG: u8 = 0x80;
    let mut copied = [0u8; IPV4_MAX_OPTIONS];
    let mut len = 0;
    let mut at = 0;
    while let Some(&kind) = options.get(at) {
        match kind {
            END_OF_LIST => break,
            NO_OPERATION => at += 1,
            _ => {
                let size = usize::from(*options.get(at + 1).ok_or(NoReply::Malformed)?);
                let option = options.get(at..at + size).ok_or(NoReply::Malformed)?;
                if size < 2 {
                    return Err(NoReply::Malformed);
                }
                if kind & COPY_FLAG != 0 {
                    // Fits: the copied options are a subset of at most 40 option bytes.
                    copied[len..len + size].copy_from_slice(option);
                    len += size;
                }
                at += size;
            }
        }
    }
    Ok((copied, len.next_multiple_of(4)))
}

#[cfg(test)]
mod tests {
    //! Frames are built and replies parsed back here with a word-by-word checksum and offsets
    //! written out by hand, never with the code under test.

    use proptest::prelude::*;

    use super::*;
    use crate::core::offload::Segmenter;
    use crate::wire::{VnetHdr, VnetHdrFields, VnetHdrSize, VNET_GSO_TCPV6, VNET_HDR_LEN_MRG};

    const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const SRC4: [u8; 4] = [10, 77, 0, 1];
    const DST4: [u8; 4] = [10, 77, 0, 2];
    const SRC6: [u8; 16] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST6: [u8; 16] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const DF: u16 = 0x4000;
    const MF: u16 = 0x2000;
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    /// Router alert (copied) and record route (not copied), then a NOP and end-of-list.
    const MIXED_OPTIONS: [u8; 12] = [0x94, 4, 0, 0, 7, 7, 4, 0, 0, 0, 0, 1];

    fn ref_sum(chunks: &[&[u8]]) -> u16 {
        let bytes: Vec<u8> = chunks.concat();
        let mut sum: u32 = 0;
        for pair in bytes.chunks(2) {
            sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    fn get16(bytes: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([bytes[at], bytes[at + 1]])
    }

    fn ethernet(tag: Option<u16>, ethertype: u16) -> Vec<u8> {
        let mut f = [DST_MAC, SRC_MAC].concat();
        if let Some(tpid) = tag {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&0x2005u16.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn l3_of(frame: &[u8]) -> usize {
        if matches!(frame[12..14], [0x81, 0x00] | [0x88, 0xa8]) {
            18
        } else {
            14
        }
    }

    /// An IPv4 frame with a correct header checksum.
    fn ipv4_frame(
        tag: Option<u16>,
        flags_offset: u16,
        protocol: u8,
        options: &[u8],
        transport: &[u8],
    ) -> Vec<u8> {
        let mut f = ethernet(tag, 0x0800);
        let l3 = f.len();
        let header_len = 20 + options.len();
        f.push(0x40 | (header_len / 4) as u8);
        f.push(0x10);
        f.extend_from_slice(&((header_len + transport.len()) as u16).to_be_bytes());
        f.extend_from_slice(&0xbeefu16.to_be_bytes());
        f.extend_from_slice(&flags_offset.to_be_bytes());
        f.extend_from_slice(&[57, protocol, 0, 0]);
        f.extend_from_slice(&SRC4);
        f.extend_from_slice(&DST4);
        f.extend_from_slice(options);
        let sum = !ref_sum(&[&f[l3..]]);
        f[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(transport);
        f
    }

    fn ipv6_frame(tag: Option<u16>, next_header: u8, transport: &[u8]) -> Vec<u8> {
        let mut f = ethernet(tag, 0x86dd);
        f.extend_from_slice(&[0x60, 0, 0, 7]);
        f.extend_from_slice(&(transport.len() as u16).to_be_bytes());
        f.extend_from_slice(&[next_header, 57]);
        f.extend_from_slice(&SRC6);
        f.extend_from_slice(&DST6);
        f.extend_from_slice(transport);
        f
    }

    /// A TCP header (ACK, no options) and `payload_len` bytes of a pattern.
    fn tcp(payload_len: usize) -> Vec<u8> {
        let mut t = vec![
            0x9c, 0x40, 0x14, 0x51, 0, 0, 1, 0, 0, 0, 2, 0, 0x50, 0x10, 1, 0,
        ];
        t.extend_from_slice(&[0, 0, 0, 0]);
        t.extend((0..payload_len).map(|i| (i as u8).wrapping_mul(13).wrapping_add(5)));
        t
    }

    fn icmp(kind: u8, len: usize) -> Vec<u8> {
        let mut m = vec![kind, 0, 0, 0, 0, 1, 0, 1];
        m.resize(len, 0xab);
        m
    }

    fn reply(frame: &[u8], mtu: u16) -> Result<Vec<u8>, NoReply> {
        let mut out = [0u8; 1518];
        too_big_reply(frame, mtu, &mut out).map(|len| out[..len].to_vec())
    }

    /// Parses `reply` independently and checks it answers `frame` with `mtu`; returns how many
    /// bytes of the original IP packet it quotes.
    fn check_reply(frame: &[u8], reply: &[u8], mtu: u16) -> usize {
        let l2 = l3_of(frame);
        assert_eq!(l3_of(reply), l2);
        assert_eq!(reply[..6], frame[6..12], "to the original source MAC");
        assert_eq!(
            reply[6..12],
            frame[..6],
            "from the original destination MAC"
        );
        assert_eq!(reply[12..l2], frame[12..l2], "tag and EtherType kept");
        let original = &frame[l2..];
        let ip = &reply[l2..];
        let (icmp, quote) = if get16(reply, l2 - 2) == 0x0800 {
            assert_eq!(ip[0], 0x45);
            assert_eq!(usize::from(get16(ip, 2)), ip.len());
            assert!(ip.len() <= 576, "RFC 1812 size limit");
            assert_eq!(get16(ip, 6), 0, "DF clear, no fragment");
            assert_eq!((ip[8], ip[9]), (64, 1));
            assert_eq!(ref_sum(&[&ip[..20]]), 0xffff, "IPv4 header checksum");
            assert_eq!(ip[12..16], original[16..20]);
            assert_eq!(ip[16..20], original[12..16]);
            let icmp = &ip[20..];
            assert_eq!((icmp[0], icmp[1]), (3, 4));
            assert_eq!(icmp[4..6], [0, 0]);
            assert_eq!(get16(icmp, 6), mtu);
            assert_eq!(ref_sum(&[icmp]), 0xffff, "ICMP checksum");
            let header_len = usize::from(original[0] & 15) * 4;
            let packet_len = usize::from(get16(original, 2));
            (icmp, (header_len, packet_len))
        } else {
            assert_eq!(get16(reply, l2 - 2), 0x86dd);
            assert_eq!(ip[..4], [0x60, 0, 0, 0]);
            assert_eq!(usize::from(get16(ip, 4)), ip.len() - 40);
            assert!(ip.len() <= 1280, "RFC 4443 size limit");
            assert_eq!((ip[6], ip[7]), (58, 64));
            assert_eq!(ip[8..24], original[24..40]);
            assert_eq!(ip[24..40], original[8..24]);
            let icmp = &ip[40..];
            assert_eq!(icmp[..2], [2, 0]);
            assert_eq!(
                u32::from_be_bytes(icmp[4..8].try_into().unwrap()),
                u32::from(mtu)
            );
            let pseudo = [
                &ip[8..40],
                &(icmp.len() as u32).to_be_bytes()[..],
                &[0, 0, 0, 58],
            ]
            .concat();
            assert_eq!(ref_sum(&[&pseudo, icmp]), 0xffff, "ICMPv6 checksum");
            (icmp, (40, 40 + usize::from(get16(original, 4))))
        };
        let (header_len, packet_len) = quote;
        let quoted = &icmp[8..];
        assert!(quoted.len() <= packet_len);
        assert!(quoted.len() >= packet_len.min(header_len + 8));
        assert_eq!(quoted, &original[..quoted.len()], "quotes the original");
        quoted.len()
    }

    #[test]
    fn an_ipv4_df_tcp_frame_is_answered_with_fragmentation_needed() {
        let frame = ipv4_frame(Some(0x8100), DF, TCP, &[], &tcp(1460));
        let answer = reply(&frame, 1400).unwrap();
        assert_eq!(check_reply(&frame, &answer, 1400), 576 - 28);
        assert_eq!(answer.len(), 18 + 576);
        assert_eq!(answer[12..16], [0x81, 0x00, 0x20, 0x05]);
        assert_eq!(get16(&answer, 18 + 20 + 6), 1400);

        // Options are quoted as part of the header.
        let frame = ipv4_frame(None, DF, TCP, &MIXED_OPTIONS, &tcp(2000));
        let answer = reply(&frame, 1400).unwrap();
        assert_eq!(check_reply(&frame, &answer, 1400), 548);
        assert_eq!(answer[14 + 28..14 + 28 + 32], frame[14..14 + 32]);
    }

    #[test]
    fn a_short_packet_is_quoted_whole_without_ethernet_padding() {
        let mut frame = ipv4_frame(None, DF, UDP, &[], &[0x11; 12]);
        frame.resize(60, 0);
        let answer = reply(&frame, 576).unwrap();
        assert_eq!(check_reply(&frame, &answer, 576), 32);
        assert_eq!(answer.len(), 14 + 28 + 32);
    }

    #[test]
    fn an_ipv6_frame_is_answered_with_packet_too_big() {
        let frame = ipv6_frame(Some(0x88a8), TCP, &tcp(1440));
        let answer = reply(&frame, 1280).unwrap();
        assert_eq!(check_reply(&frame, &answer, 1280), 1280 - 48);
        assert_eq!(answer.len(), 18 + 1280);
        assert_eq!(answer[12..16], [0x88, 0xa8, 0x20, 0x05]);

        // Echo requests and other informational ICMPv6 are answered; so is anything behind an
        // extension header, which is not walked.
        for (next, transport) in [(58, icmp(128, 1400)), (0, tcp(1400)), (60, tcp(1400))] {
            let frame = ipv6_frame(None, next, &transport);
            let answer = reply(&frame, 1400).unwrap();
            check_reply(&frame, &answer, 1400);
        }
    }

    #[test]
    fn a_short_output_quotes_less_down_to_the_header_and_8_bytes() {
        let frame = ipv4_frame(None, DF, TCP, &MIXED_OPTIONS, &tcp(1400));
        let mut out = [0u8; 14 + 28 + 100];
        let len = too_big_reply(&frame, 1300, &mut out).unwrap();
        assert_eq!(len, out.len());
        assert_eq!(check_reply(&frame, &out, 1300), 100);
        let least = 14 + 28 + 32 + 8;
        assert_eq!(too_big_reply(&frame, 1300, &mut out[..least]), Ok(least));
        for short in [least - 1, 14 + 28, 10, 0] {
            assert_eq!(
                too_big_reply(&frame, 1300, &mut out[..short]),
                Err(NoReply::OutputTooSmall)
            );
        }
        let frame = ipv6_frame(None, UDP, &[7; 1400]);
        let mut out = [0u8; 14 + 48 + 48];
        assert_eq!(too_big_reply(&frame, 1280, &mut out), Ok(out.len()));
        assert_eq!(
            too_big_reply(&frame, 1280, &mut out[..14 + 48 + 47]),
            Err(NoReply::OutputTooSmall)
        );
    }

    /// `frame` with `bytes` written at `at`.
    fn patched(frame: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
        let mut f = frame.to_vec();
        f[at..at + bytes.len()].copy_from_slice(bytes);
        f
    }

    #[test]
    fn every_reason_not_to_answer() {
        use NoReply::*;
        let v4 = ipv4_frame(None, DF, TCP, &[], &tcp(1400));
        let v6 = ipv6_frame(None, TCP, &tcp(1400));
        let mut arp = ethernet(None, 0x0806);
        arp.resize(60, 0);
        let cases: Vec<(&str, Vec<u8>, u16, NoReply)> = vec![
            ("ARP", arp, 1400, NotIp),
            (
                "other EtherType behind a tag",
                ethernet(Some(0x8100), 0x88cc),
                1400,
                NotIp,
            ),
            ("shorter than Ethernet", v4[..13].to_vec(), 1400, Malformed),
            (
                "tag cut off",
                ethernet(Some(0x8100), 0x0800)[..16].to_vec(),
                1400,
                Malformed,
            ),
            ("IPv4 header cut", v4[..14 + 19].to_vec(), 1400, Malformed),
            ("IPv4 version 6", patched(&v4, 14, &[0x65]), 1400, Malformed),
            ("IHL 4", patched(&v4, 14, &[0x44]), 1400, Malformed),
            (
                "IHL past the frame",
                patched(&v4[..14 + 40], 14, &[0x4f]),
                1400,
                Malformed,
            ),
            (
                "total length below IHL",
                patched(&v4, 16, &[0, 19]),
                1400,
                Malformed,
            ),
            (
                "total length past the frame",
                v4[..v4.len() - 1].to_vec(),
                1400,
                Malformed,
            ),
            ("IPv6 header cut", v6[..14 + 39].to_vec(), 1400, Malformed),
            ("IPv6 version 4", patched(&v6, 14, &[0x40]), 1400, Malformed),
            (
                "IPv6 length past the frame",
                v6[..v6.len() - 1].to_vec(),
                1400,
                Malformed,
            ),
            (
                "IPv6 fragment header cut",
                ipv6_frame(None, 44, &[6, 0, 0, 0]),
                1400,
                Malformed,
            ),
            (
                "DF clear",
                patched(&v4, 20, &[0, 0]),
                1400,
                FragmentsAllowed,
            ),
            (
                "DF clear and broadcast",
                patched(&patched(&v4, 0, &[0xff; 6]), 20, &[0]),
                1400,
                FragmentsAllowed,
            ),
            (
                "IPv4 later fragment",
                patched(&v4, 20, &[0x40, 0x10]),
                1400,
                NotFirstFragment,
            ),
            (
                "IPv6 later fragment",
                ipv6_frame(
                    None,
                    44,
                    &[[6, 0, 0, 0x08, 0, 0, 0, 1].as_slice(), &tcp(100)].concat(),
                ),
                1400,
                NotFirstFragment,
            ),
            (
                "ICMP unreachable",
                ipv4_frame(None, DF, 1, &[], &icmp(3, 600)),
                576,
                IcmpError,
            ),
            (
                "ICMP source quench",
                ipv4_frame(None, DF, 1, &[], &icmp(4, 600)),
                576,
                IcmpError,
            ),
            (
                "ICMP redirect",
                ipv4_frame(None, DF, 1, &[], &icmp(5, 600)),
                576,
                IcmpError,
            ),
            (
                "ICMP time exceeded",
                ipv4_frame(None, DF, 1, &[], &icmp(11, 600)),
                576,
                IcmpError,
            ),
            (
                "ICMP parameter problem",
                ipv4_frame(None, DF, 1, &[], &icmp(12, 600)),
                576,
                IcmpError,
            ),
            (
                "ICMP header cut",
                ipv4_frame(None, DF, 1, &[], &icmp(8, 7)),
                576,
                IcmpError,
            ),
            (
                "ICMPv6 packet too big",
                ipv6_frame(None, 58, &icmp(2, 1300)),
                1280,
                IcmpError,
            ),
            (
                "ICMPv6 unreachable",
                ipv6_frame(None, 58, &icmp(1, 1300)),
                1280,
                IcmpError,
            ),
            (
                "ICMPv6 header cut",
                ipv6_frame(None, 58, &icmp(128, 7)),
                1280,
                IcmpError,
            ),
            (
                "broadcast MAC",
                patched(&v4, 0, &[0xff; 6]),
                1400,
                GroupDestination,
            ),
            (
                "multicast MAC",
                patched(&v6, 0, &[0x33, 0x33, 0, 0, 0, 1]),
                1400,
                GroupDestination,
            ),
            (
                "group source MAC",
                patched(&v4, 6, &[0x01]),
                1400,
                GroupDestination,
            ),
            (
                "IPv4 multicast",
                patched(&v4, 30, &[224, 0, 0, 251]),
                1400,
                GroupDestination,
            ),
            (
                "IPv4 multicast top",
                patched(&v4, 30, &[239, 255, 255, 250]),
                1400,
                GroupDestination,
            ),
            (
                "IPv4 broadcast",
                patched(&v4, 30, &[255; 4]),
                1400,
                GroupDestination,
            ),
            (
                "IPv4 source 0.0.0.0",
                patched(&v4, 26, &[0; 4]),
                1400,
                GroupDestination,
            ),
            (
                "IPv4 multicast source",
                patched(&v4, 26, &[230, 1, 1, 1]),
                1400,
                GroupDestination,
            ),
            (
                "IPv6 multicast",
                patched(&v6, 38, &[0xff, 0x02]),
                1400,
                GroupDestination,
            ),
            (
                "IPv6 unspecified source",
                patched(&v6, 22, &[0; 16]),
                1400,
                GroupDestination,
            ),
            (
                "IPv6 multicast source",
                patched(&v6, 22, &[0xff, 0x05]),
                1400,
                GroupDestination,
            ),
            ("IPv4 below 68", v4.clone(), 67, MtuTooSmall),
            ("IPv4 MTU 0", v4.clone(), 0, MtuTooSmall),
            ("IPv6 below 1280", v6.clone(), 1279, MtuTooSmall),
        ];
        for (name, frame, mtu, expected) in cases {
            assert_eq!(reply(&frame, mtu), Err(expected), "{name}");
        }
        // The edges that are answered.
        for (frame, mtu) in [
            (v4.clone(), 68),
            (v6.clone(), 1280),
            (patched(&v4, 30, &[223, 255, 255, 255]), 1400),
            (patched(&v4, 30, &[240, 0, 0, 1]), 1400),
            (ipv4_frame(None, DF, 1, &[], &icmp(8, 600)), 576),
            (ipv4_frame(None, DF, 1, &[], &icmp(0, 8)), 576),
            (ipv6_frame(None, 58, &icmp(129, 1300)), 1280),
            (
                ipv6_frame(
                    None,
                    44,
                    &[[6, 0, 0, 0x01, 0, 0, 0, 1].as_slice(), &tcp(1300)].concat(),
                ),
                1280,
            ),
        ] {
            let answer = reply(&frame, mtu).unwrap();
            check_reply(&frame, &answer, mtu);
        }
        let labels: std::collections::HashSet<_> = [
            NotIp,
            Malformed,
            NotFirstFragment,
            IcmpError,
            GroupDestination,
            MtuTooSmall,
            FragmentsAllowed,
            DontFragment,
            OutputTooSmall,
        ]
        .iter()
        .map(|r| r.as_str())
        .collect();
        assert_eq!(labels.len(), 9);
    }

    /// A valid frame of either version, possibly tagged, with up to three bytes of its headers
    /// changed: mostly well-formed, so the answering paths run, not only the refusals.
    fn mutated_frame() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<bool>(),
            0usize..3,
            0usize..1600,
            proptest::collection::vec((0usize..80, any::<u8>()), 0..4),
        )
            .prop_map(|(ipv6, tag, len, flips)| {
                let tag = [None, Some(0x8100), Some(0x88a8)][tag];
                let mut frame = if ipv6 {
                    ipv6_frame(tag, TCP, &tcp(len))
                } else {
                    ipv4_frame(tag, DF, TCP, &[], &tcp(len))
                };
                for (at, value) in flips {
                    let at = at % frame.len();
                    frame[at] ^= value;
                }
                frame
            })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_replies_are_well_formed(
            frame in proptest::collection::vec(any::<u8>(), 0..2000),
            mtu in any::<u16>(),
            out_len in prop_oneof![Just(1518usize), 0usize..1600],
        ) {
            let mut out = vec![0u8; out_len];
            if let Ok(len) = too_big_reply(&frame, mtu, &mut out) {
                prop_assert!(len <= out_len);
                check_reply(&frame, &out[..len], mtu);
            }
        }

        #[test]
        fn mutated_frames_are_answered_well_or_refused(
            frame in mutated_frame(),
            mtu in prop_oneof![any::<u16>(), 1200u16..1500],
            out_len in prop_oneof![Just(1518usize), 0usize..1600],
        ) {
            let mut out = vec![0u8; out_len];
            match too_big_reply(&frame, mtu, &mut out) {
                Ok(len) => {
                    prop_assert!(len <= out_len);
                    check_reply(&frame, &out[..len], mtu);
                }
                Err(NoReply::DontFragment) => prop_assert!(false, "fragmenter-only reason"),
                Err(_) => {}
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Fragmentation.

    fn fragment_all(frame: &[u8], max_frame: usize) -> Result<Vec<Vec<u8>>, NoReply> {
        let mut fragmenter = Ipv4Fragmenter::new(frame, max_frame)?;
        let mut out = vec![0u8; max_frame.min(70_000)];
        let mut fragments = Vec::new();
        while let Some(len) = fragmenter.next_into(&mut out) {
            fragments.push(out[..len].to_vec());
        }
        assert_eq!(fragments.len(), fragmenter.fragment_count());
        assert_eq!(fragmenter.next_len(), None);
        Ok(fragments)
    }

    /// Checks `fragments` of `frame` independently: each fits, has a valid header that agrees
    /// with the original's, the expected options, and offsets and MF that make the data
    /// contiguous; returns the data joined in order.
    fn check_fragments(
        frame: &[u8],
        fragments: &[Vec<u8>],
        max_frame: usize,
        later_options: &[u8],
    ) -> Vec<u8> {
        let l3 = l3_of(frame);
        let original = &frame[l3..];
        let header_len = usize::from(original[0] & 15) * 4;
        let total = usize::from(get16(original, 2));
        let base = usize::from(get16(original, 6) & 0x1fff) * 8;
        let original_mf = get16(original, 6) & MF != 0;
        let mut joined = Vec::new();
        for (i, fragment) in fragments.iter().enumerate() {
            assert!(fragment.len() <= max_frame, "fragment {i} fits");
            assert_eq!(fragment[..l3], frame[..l3], "Ethernet header and tag");
            let ip = &fragment[l3..];
            let ihl = usize::from(ip[0] & 15) * 4;
            assert_eq!(ip[0] >> 4, 4);
            assert_eq!(usize::from(get16(ip, 2)), ip.len());
            assert_eq!(
                ref_sum(&[&ip[..ihl]]),
                0xffff,
                "header checksum of fragment {i}"
            );
            assert_eq!(ip[1], original[1]);
            assert_eq!(ip[4..6], original[4..6], "same ID for reassembly");
            assert_eq!(ip[8..10], original[8..10]);
            assert_eq!(ip[12..20], original[12..20]);
            if i == 0 {
                assert_eq!(
                    ip[20..ihl],
                    original[20..header_len],
                    "first keeps all options"
                );
            } else {
                assert_eq!(&ip[20..ihl], later_options);
            }
            let flags = get16(ip, 6);
            assert_eq!(flags & DF, 0);
            let last = i + 1 == fragments.len();
            assert_eq!(flags & MF != 0, !last || original_mf);
            assert_eq!(
                usize::from(flags & 0x1fff) * 8,
                base + joined.len(),
                "contiguous"
            );
            let data = &ip[ihl..];
            assert!(last || data.len() % 8 == 0);
            joined.extend_from_slice(data);
        }
        assert_eq!(joined, original[header_len..total], "data survives");
        joined
    }

    #[test]
    fn a_datagram_is_fragmented_like_a_router_would() {
        let frame = ipv4_frame(Some(0x8100), 0, UDP, &MIXED_OPTIONS, &[0x5a; 3000]);
        let max_frame = 18 + 1400;
        let fragments = fragment_all(&frame, max_frame).unwrap();
        // First: 32-byte header, 1368 bytes of data (1400 - 32 rounded down to 8); later ones carry
        // only the router alert (24-byte header) and 1376 bytes.
        let sizes: Vec<usize> = fragments.iter().map(|f| f.len() - 18).collect();
        assert_eq!(sizes, [32 + 1368, 24 + 1376, 24 + 3000 - 1368 - 1376]);
        check_fragments(&frame, &fragments, max_frame, &[0x94, 4, 0, 0]);

        let frame = ipv4_frame(None, 0, TCP, &[], &tcp(5000));
        let fragments = fragment_all(&frame, 14 + 576).unwrap();
        assert_eq!(fragments.len(), 5020usize.div_ceil(552));
        check_fragments(&frame, &fragments, 14 + 576, &[]);
    }

    #[test]
    fn a_fragment_is_fragmented_further_from_its_own_offset() {
        let frame = ipv4_frame(None, MF | 100, UDP, &[], &[3; 2000]);
        let fragments = fragment_all(&frame, 14 + 1000).unwrap();
        assert_eq!(fragments.len(), 3);
        check_fragments(&frame, &fragments, 14 + 1000, &[]);
        assert!(fragments.iter().all(|f| get16(f, 14 + 6) & MF != 0));
    }

    #[test]
    fn a_frame_that_fits_is_one_fragment_like_the_original() {
        let mut frame = ipv4_frame(None, 0, UDP, &MIXED_OPTIONS, &[1; 20]);
        let ip_end = frame.len();
        frame.resize(ip_end + 6, 0);
        let fragments = fragment_all(&frame, ip_end).unwrap();
        assert_eq!(fragments, vec![frame[..ip_end].to_vec()], "padding dropped");
        // The reserved bit is carried over.
        let evil = ipv4_frame(None, 0x8000, UDP, &[], &[1; 100]);
        for f in fragment_all(&evil, 14 + 60).unwrap() {
            assert_eq!(get16(&f, 14 + 6) & 0x8000, 0x8000);
        }
    }

    #[test]
    fn the_fragmenter_refuses_what_it_must_not_cut() {
        let frame = ipv4_frame(None, 0, UDP, &MIXED_OPTIONS, &[0; 1000]);
        let err = |frame: &[u8], max_frame| Ipv4Fragmenter::new(frame, max_frame).unwrap_err();
        assert_eq!(
            err(&patched(&frame, 20, &[0x40]), 1000),
            NoReply::DontFragment
        );
        assert_eq!(err(&ipv6_frame(None, UDP, &[0; 100]), 1000), NoReply::NotIp);
        assert_eq!(err(&ethernet(None, 0x0806), 1000), NoReply::NotIp);
        assert_eq!(err(&frame[..30], 1000), NoReply::Malformed);
        // Options: a length below 2, one that runs past the header, a type without its length.
        for options in [[0x94, 1, 0, 0], [0x94, 5, 0, 0], [1, 1, 1, 0x94]] {
            let bad = ipv4_frame(None, 0, UDP, &options, &[0; 100]);
            assert_eq!(err(&bad, 60), NoReply::Malformed, "{options:?}");
        }
        // 32-byte header behind 14 bytes of Ethernet: 53 bytes leave 7 bytes of data.
        assert_eq!(err(&frame, 14 + 32 + 7), NoReply::MtuTooSmall);
        assert_eq!(err(&frame, 0), NoReply::MtuTooSmall);
        assert!(Ipv4Fragmenter::new(&frame, 14 + 32 + 8).is_ok());
        // No data at all and a limit below the headers (found by fuzzing): no fragment fits.
        let empty = ipv4_frame(None, 0, UDP, &[], &[]);
        assert_eq!(err(&empty, 14 + 19), NoReply::MtuTooSmall);
        // Offsets that would reassemble past 65535 bytes.
        let far = ipv4_frame(None, 8190, UDP, &[], &[0; 100]);
        assert_eq!(err(&far, 60), NoReply::Malformed);
    }

    #[test]
    fn a_short_output_consumes_nothing() {
        let frame = ipv4_frame(None, 0, UDP, &[], &[9; 2000]);
        let mut fragmenter = Ipv4Fragmenter::new(&frame, 1014).unwrap();
        let needed = fragmenter.next_len().unwrap();
        assert_eq!(needed, 14 + 20 + 976);
        let mut out = vec![0u8; 1014];
        assert_eq!(fragmenter.next_into(&mut out[..needed - 1]), None);
        assert_eq!(fragmenter.next_len(), Some(needed));
        let mut fragments = Vec::new();
        while let Some(len) = fragmenter.next_into(&mut out) {
            fragments.push(out[..len].to_vec());
        }
        check_fragments(&frame, &fragments, 1014, &[]);
    }

    proptest! {
        #[test]
        fn fragments_fit_and_reassemble(
            len in 0usize..5000,
            max_frame in 0usize..2000,
            options in 0usize..3,
            tag in any::<bool>(),
            original_mf in any::<bool>(),
            offset in 0u16..200,
        ) {
            let (options, later): (&[u8], &[u8]) = match options {
                0 => (&[], &[]),
                1 => (&MIXED_OPTIONS, &[0x94, 4, 0, 0]),
                // Copied options that need padding: security (copied, 3 bytes) and a NOP.
                _ => (&[0x82, 3, 0, 1], &[0x82, 3, 0, 0]),
            };
            let flags = if original_mf { MF } else { 0 } | offset;
            let frame = ipv4_frame(tag.then_some(0x8100), flags, UDP, options, &[0xc3; 5000][..len]);
            match fragment_all(&frame, max_frame) {
                Ok(fragments) => {
                    check_fragments(&frame, &fragments, max_frame, later);
                }
                Err(e) => {
                    prop_assert_eq!(e, NoReply::MtuTooSmall);
                    let l3 = l3_of(&frame);
                    prop_assert!(frame.len() > max_frame);
                    prop_assert!(max_frame < l3 + 20 + options.len() + 8);
                }
            }
        }

        #[test]
        fn the_fragmenter_never_panics_on_arbitrary_bytes(
            frame in proptest::collection::vec(any::<u8>(), 0..2000),
            max_frame in 0usize..2000,
        ) {
            if let Ok(mut fragmenter) = Ipv4Fragmenter::new(&frame, max_frame) {
                let mut out = vec![0u8; max_frame];
                let mut count = 0;
                while let Some(len) = fragmenter.next_into(&mut out) {
                    prop_assert!(len <= max_frame);
                    count += 1;
                }
                prop_assert_eq!(count, fragmenter.fragment_count());
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Fuzz seeds.

    /// The `toobig` fuzz target reads the path MTU (2 bytes, big-endian), the largest frame the
    /// path carries (2 bytes), then one TAP read: a 12-byte virtio-net header and the frame.
    fn fuzz_input(mtu: u16, max_frame: u16, hdr: &VnetHdrFields, frame: &[u8]) -> Vec<u8> {
        let mut read = vec![0u8; VNET_HDR_LEN_MRG + frame.len()];
        let mut view = VnetHdr::new_checked(&mut read[..], VnetHdrSize::Mergeable).unwrap();
        view.emit(hdr);
        view.frame_mut().copy_from_slice(frame);
        [&mtu.to_be_bytes()[..], &max_frame.to_be_bytes(), &read].concat()
    }

    fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
        let tcp4 = ipv4_frame(Some(0x8100), DF, TCP, &[], &tcp(1460));
        let udp4 = ipv4_frame(None, 0, UDP, &MIXED_OPTIONS, &[0x5a; 3000]);
        let tcp6 = ipv6_frame(None, TCP, &tcp(4000));
        let gso = VnetHdrFields {
            gso_type: VNET_GSO_TCPV6,
            hdr_len: 14 + 40 + 20,
            gso_size: 1428,
            ..VnetHdrFields::NONE
        };
        vec![
            (
                "tcp4-df-vlan",
                fuzz_input(1400, 18 + 1400, &VnetHdrFields::NONE, &tcp4),
            ),
            (
                "udp4-options-no-df",
                fuzz_input(1400, 14 + 1400, &VnetHdrFields::NONE, &udp4),
            ),
            ("tcp6-gso", fuzz_input(1280, 14 + 1280, &gso, &tcp6)),
        ]
    }

    /// Keeps fuzz/corpus/toobig/seed-* equal to `fuzz_seeds()`. Regenerate with
    /// `MESHD_WRITE_FUZZ_SEEDS=1 cargo test --lib toobig::tests::toobig_fuzz_seeds_are_current`.
    #[test]
    fn toobig_fuzz_seeds_are_current() {
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/toobig");
        for (name, bytes) in fuzz_seeds() {
            let mtu = get16(&bytes, 0);
            let max_frame = usize::from(get16(&bytes, 2));
            let view = VnetHdr::new_checked(&bytes[4..], VnetHdrSize::Mergeable).unwrap();
            let frame = view.frame();
            // Each seed reaches the path it is named for.
            match name {
                "tcp4-df-vlan" => check_reply(frame, &reply(frame, mtu).unwrap(), mtu),
                "udp4-options-no-df" => fragment_all(frame, max_frame).unwrap().len(),
                _ => Segmenter::with_max_frame(&view.fields(), frame, max_frame)
                    .unwrap()
                    .segment_count(),
            };
            crate::test_support::check_or_write_fuzz_seed(
                &corpus.join(format!("seed-{name}")),
                &bytes,
            );
        }
    }
}
