//! IPv4 fragmentation (RFC 791) of a frame too big for the path whose sender allowed it (DF
//! clear): [`Ipv4Fragmenter`] plans the fragments of one frame and writes them one by one into
//! caller buffers, the way a router on the path would have.
//!
//! Invariants: nothing here panics on any input, writes past the `out` it is given, or allocates.
//! Every fragment fits the `max_frame` it was planned for, carries the original's Ethernet header
//! and tag, ID, addresses and protocol, a recomputed header checksum, and data at an offset that
//! continues the previous fragment's; together they carry exactly the original's data. Refusals
//! are [`NoReply`] values, shared with the too-big answers the node sends otherwise.

use crate::wire::ip::{be16, put16, IPV4_FLAG_MF, IPV4_FLAG_RESERVED, IPV4_HEADER_LEN};
use crate::wire::Checksum;

use super::too_big::{ip_frame, NoReply};

/// The most option bytes an IPv4 header holds (IHL 15).
const IPV4_MAX_OPTIONS: usize = 40;
/// Fragment offsets count 8-byte units, so every fragment but the last carries a multiple of 8.
const FRAGMENT_UNIT: usize = 8;
/// The largest IPv4 datagram; fragments that would reassemble past it cannot be described.
const IPV4_MAX_LEN: usize = 65_535;

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
        let packet = ip_frame(frame)?;
        if packet.is_ipv6() {
            return Err(NoReply::NotIp);
        }
        if packet.dont_fragment() {
            return Err(NoReply::DontFragment);
        }
        let l3 = packet.l3();
        let (header, data) = frame[l3..packet.end()].split_at(packet.header_len());
        let (copied, copied_len) = copied_options(&header[IPV4_HEADER_LEN..])?;
        let base_offset = packet.fragment_offset();
        // Offsets past 65535 bytes do not fit the 13-bit field and describe no valid datagram.
        if base_offset + data.len() > IPV4_MAX_LEN {
            return Err(NoReply::Malformed);
        }
        // Not even the headers fit: no fragment could (and an empty one would break the limit).
        if l3 + header.len() > max_frame {
            return Err(NoReply::MtuTooSmall);
        }
        let room = |header_len: usize| max_frame.saturating_sub(l3 + header_len);
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
            l3,
            header,
            data,
            copied,
            copied_len,
            first_data,
            later_data,
            base_offset,
            more_follow: packet.more_fragments(),
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
