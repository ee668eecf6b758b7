//! TAP → peers: cutting a super-frame into wire-ready frames, and completing partial checksums.
//!
//! Invariants of every frame [`Segmenter::next_into`] writes: at most the segment size of L4 payload
//! behind a copy of the super-frame's headers, where the segment size is `gso_size`, lowered for TCP
//! so that no frame exceeds the `max_frame` given to [`Segmenter::with_max_frame`]; IPv4 total length, header checksum and an ID that
//! grows by one per segment; IPv6 payload length; TCP sequence number advanced by the payload
//! before it, FIN and PSH only on the last segment, CWR only on the first; UDP length; and a full
//! L4 checksum (pseudo-header, header, payload), or, when [`Segmenter::leave_checksums_partial`]
//! asked for it, only the folded pseudo-header sum (the `NEEDS_CSUM` state, which a peer that
//! accepts it completes, or hands to its kernel to complete). The input is never modified, and a
//! segment is only consumed once it has been written.

use crate::wire::ip::{
    be16, be32, put16, put32, IPPROTO_TCP, IPPROTO_UDP, IPV4_HEADER_LEN, IPV6_HEADER_LEN,
    TCP_CHECKSUM_AT, TCP_CWR, TCP_FIN, TCP_PSH, UDP_CHECKSUM_AT,
};
use crate::wire::{Checksum, GsoType, IpLayout, VnetHdrFields, VNET_F_NEEDS_CSUM, VNET_GSO_NONE};

use super::{segment_layout, OffloadError, MAX_SUPER_FRAME_LEN};

/// The least TCP payload per segment [`Segmenter::with_max_frame`] accepts, the same floor IPv4
/// fragmentation has (one 8-byte fragment unit).
const MIN_PATH_PAYLOAD: usize = 8;

/// Completes the partial L4 checksum of a plain (`GSO_NONE`) frame in place, as a NIC would: the
/// one's-complement sum over `[csum_start, end)`, which includes the pseudo-header sum the kernel
/// left in the field, is complemented and stored at `csum_start + csum_offset`. Without
/// `NEEDS_CSUM` the frame is already complete and nothing happens.
pub fn complete_checksum(hdr: &VnetHdrFields, frame: &mut [u8]) -> Result<(), OffloadError> {
    if hdr.gso() != GsoType::None {
        return Err(OffloadError::GsoMismatch);
    }
    if !hdr.needs_csum() {
        return Ok(());
    }
    let field = checksum_field(hdr, frame.len())?;
    let start = usize::from(hdr.csum_start);
    let value = Checksum::new().add_bytes(&frame[start..]).finish();
    put16(frame, field, value);
    Ok(())
}

/// Where the L4 checksum of a frame left partial is (virtio-net's `csum_start` and
/// `csum_offset`): the frame is one TCP or UDP segment whose checksum field holds the folded
/// pseudo-header sum, and summing from `start` to the end and storing the complement at
/// `start + offset` completes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialChecksum {
    pub start: u16,
    pub offset: u16,
}

impl PartialChecksum {
    /// Where the checksum of `frame` is, if `frame` is one whole TCP or UDP segment over IPv4
    /// (not a fragment) or IPv6 (no extension headers): the only frames sent with a partial
    /// checksum, so a receiver refuses any other as malformed.
    pub fn of(frame: &[u8]) -> Option<PartialChecksum> {
        let layout = segment_layout(frame).ok()?;
        Some(PartialChecksum::at(&layout))
    }

    fn at(layout: &IpLayout) -> PartialChecksum {
        let offset = if layout.protocol == IPPROTO_TCP {
            TCP_CHECKSUM_AT
        } else {
            UDP_CHECKSUM_AT
        };
        // segment_layout bounds every offset by the frame's IP length, a u16.
        PartialChecksum {
            start: layout.l4 as u16,
            offset: offset as u16,
        }
    }

    /// Completes the checksum in place, as a NIC would (for a TAP opened without offloads).
    /// `frame` must be the frame `of` was given.
    pub fn complete(self, frame: &mut [u8]) {
        let start = usize::from(self.start);
        let field = start + usize::from(self.offset);
        let value = Checksum::new().add_bytes(&frame[start..]).finish();
        put16(frame, field, value);
    }

    /// The virtio-net header that asks the kernel to complete the checksum.
    pub fn vnet_fields(self) -> VnetHdrFields {
        VnetHdrFields {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: VNET_GSO_NONE,
            hdr_len: 0,
            gso_size: 0,
            csum_start: self.start,
            csum_offset: self.offset,
        }
    }
}

/// Where a `NEEDS_CSUM` header says the checksum goes, if that lies inside the frame.
fn checksum_field(hdr: &VnetHdrFields, frame_len: usize) -> Result<usize, OffloadError> {
    let field = usize::from(hdr.csum_start) + usize::from(hdr.csum_offset);
    if field + 2 > frame_len {
        return Err(OffloadError::BadVnetHeader);
    }
    Ok(field)
}

/// Produces the wire frames of one TAP read, one per [`Segmenter::next_into`] call.
///
/// A GSO frame yields `max(1, ceil(payload / segment size))` segments; a plain frame yields itself once
/// (with its checksum completed if the header asks for it), so the caller can treat every TAP read
/// the same way. Use [`complete_checksum`] instead to avoid the copy for plain frames.
#[derive(Debug, Clone)]
pub struct Segmenter<'a> {
    frame: &'a [u8],
    plan: Plan,
    next: usize,
    count: usize,
    /// Where each written frame's checksum is, when it is left partial.
    partial: Option<PartialChecksum>,
}

#[derive(Debug, Clone, Copy)]
enum Plan {
    Whole {
        checksum_start_and_field: Option<(usize, usize)>,
    },
    Split(Split),
}

#[derive(Debug, Clone, Copy)]
struct Split {
    layout: IpLayout,
    /// `gso_size`, or less for TCP when the path is narrower (see [`Segmenter::with_max_frame`]).
    segment_size: usize,
    payload_len: usize,
    first_ip_id: u16,
    first_seq: u32,
    /// Addresses and protocol: the part of every segment's pseudo-header that does not change.
    pseudo: Checksum,
}

impl<'a> Segmenter<'a> {
    /// Validates `frame` against `hdr` (cheapest checks first) and plans its segments.
    pub fn new(hdr: &VnetHdrFields, frame: &'a [u8]) -> Result<Segmenter<'a>, OffloadError> {
        Segmenter::with_max_frame(hdr, frame, usize::MAX)
    }

    /// Like `new`, but a TCP super-frame is cut so every segment frame is at most `max_frame` bytes: the
    /// segment size is lowered (never raised) when the path to the peer is narrower than the sender's MSS.
    /// TCP allows segments smaller than the MSS, so the receiver sees nothing unusual. UDP (USO) segments are
    /// datagrams and keep their size; plain frames are unchanged.
    ///
    /// A TCP super-frame whose headers leave room for fewer than 8 payload bytes in `max_frame` is
    /// [`OffloadError::PathTooSmall`]: segments that small would cost more in headers than they carry.
    pub fn with_max_frame(
        hdr: &VnetHdrFields,
        frame: &'a [u8],
        max_frame: usize,
    ) -> Result<Segmenter<'a>, OffloadError> {
        if frame.len() > MAX_SUPER_FRAME_LEN {
            return Err(OffloadError::TooLong);
        }
        let transport = match hdr.gso() {
            GsoType::None => {
                let checksum_start_and_field = if hdr.needs_csum() {
                    let field = checksum_field(hdr, frame.len())?;
                    Some((usize::from(hdr.csum_start), field))
                } else {
                    None
                };
                return Ok(Segmenter {
                    frame,
                    plan: Plan::Whole {
                        checksum_start_and_field,
                    },
                    next: 0,
                    count: 1,
                    partial: None,
                });
            }
            GsoType::TcpV4 | GsoType::TcpV6 => IPPROTO_TCP,
            GsoType::UdpL4 => IPPROTO_UDP,
            GsoType::Udp | GsoType::Unknown(_) => {
                return Err(OffloadError::UnsupportedGso(hdr.gso_type))
            }
        };
        if hdr.gso_size == 0 {
            return Err(OffloadError::ZeroGsoSize);
        }
        let layout = segment_layout(frame)?;
        let ip_matches = match hdr.gso() {
            GsoType::TcpV4 => !layout.ipv6,
            GsoType::TcpV6 => layout.ipv6,
            _ => true,
        };
        if !ip_matches || layout.protocol != transport {
            return Err(OffloadError::GsoMismatch);
        }
        if hdr.needs_csum() {
            let offset = if transport == IPPROTO_TCP {
                TCP_CHECKSUM_AT
            } else {
                UDP_CHECKSUM_AT
            };
            if usize::from(hdr.csum_start) != layout.l4 || usize::from(hdr.csum_offset) != offset {
                return Err(OffloadError::BadVnetHeader);
            }
        }
        // Linux sets hdr_len to the skb's linear length, which is exactly the headers for frames
        // from the TCP/UDP stacks, but virtio only promises a hint, so longer is tolerated.
        let hdr_len = usize::from(hdr.hdr_len);
        if hdr_len < layout.payload || hdr_len > frame.len() {
            return Err(OffloadError::BadVnetHeader);
        }
        let payload_len = frame.len() - layout.payload;
        let mut segment_size = usize::from(hdr.gso_size);
        if transport == IPPROTO_TCP {
            let room = max_frame.saturating_sub(layout.payload);
            if room < MIN_PATH_PAYLOAD {
                return Err(OffloadError::PathTooSmall);
            }
            segment_size = segment_size.min(room);
        }
        Ok(Segmenter {
            frame,
            plan: Plan::Split(Split {
                layout,
                segment_size,
                payload_len,
                first_ip_id: if layout.ipv6 {
                    0
                } else {
                    be16(frame, layout.l3 + 4)
                },
                first_seq: if transport == IPPROTO_TCP {
                    be32(frame, layout.l4 + 4)
                } else {
                    0
                },
                pseudo: layout.pseudo_addresses(frame),
            }),
            next: 0,
            count: payload_len.div_ceil(segment_size).max(1),
            partial: None,
        })
    }

    /// Leaves every frame's L4 checksum partial (the folded pseudo-header sum, the state Linux
    /// hands a NIC), for a peer that completes it: saves one pass over every payload here. Only a
    /// frame that is one TCP or UDP segment qualifies (a super-frame always does; a plain frame
    /// when the kernel left its checksum partial at exactly the TCP/UDP field); others keep the
    /// full checksum. Call before the first [`Segmenter::next_into`].
    pub fn leave_checksums_partial(mut self) -> Segmenter<'a> {
        self.partial = match self.plan {
            Plan::Split(split) => Some(PartialChecksum::at(&split.layout)),
            Plan::Whole {
                checksum_start_and_field: Some((start, field)),
            } => PartialChecksum::of(self.frame).filter(|p| {
                usize::from(p.start) == start && usize::from(p.start + p.offset) == field
            }),
            Plan::Whole { .. } => None,
        };
        self
    }

    /// Where the checksum of the frames written is, if they are left partial.
    pub fn partial_checksum(&self) -> Option<PartialChecksum> {
        self.partial
    }

    /// How many frames this read produces in total.
    pub fn segment_count(&self) -> usize {
        self.count
    }

    /// How many frames are still to be written.
    pub fn remaining(&self) -> usize {
        self.count - self.next
    }

    /// Bytes of headers copied in front of every segment's payload (0 for a plain frame, which is
    /// copied whole).
    pub fn header_len(&self) -> usize {
        match self.plan {
            Plan::Whole { .. } => 0,
            Plan::Split(split) => split.layout.payload,
        }
    }

    /// The size of the next frame, or `None` when all have been written.
    pub fn next_len(&self) -> Option<usize> {
        if self.next >= self.count {
            return None;
        }
        Some(match self.plan {
            Plan::Whole { .. } => self.frame.len(),
            Plan::Split(split) => split.layout.payload + split.chunk(self.next).len(),
        })
    }

    /// The largest frame this read produces, to size buffers once.
    pub fn max_segment_len(&self) -> usize {
        match self.plan {
            Plan::Whole { .. } => self.frame.len(),
            Plan::Split(split) => split.layout.payload + split.segment_size.min(split.payload_len),
        }
    }

    /// Writes the next frame to the start of `out` and returns its length, or `None` when all have
    /// been written. A too-small `out` is an error that consumes nothing.
    pub fn next_into(&mut self, out: &mut [u8]) -> Result<Option<usize>, OffloadError> {
        let Some(needed) = self.next_len() else {
            return Ok(None);
        };
        if out.len() < needed {
            return Err(OffloadError::OutputTooSmall { needed });
        }
        let out = &mut out[..needed];
        match self.plan {
            Plan::Whole {
                checksum_start_and_field,
            } => {
                out.copy_from_slice(self.frame);
                match checksum_start_and_field {
                    // The kernel left the pseudo-header sum in the field: already partial.
                    Some(_) if self.partial.is_some() => {}
                    Some((start, field)) => {
                        let value = Checksum::new().add_bytes(&out[start..]).finish();
                        put16(out, field, value);
                    }
                    None => {}
                }
            }
            Plan::Split(split) => split.write(
                self.frame,
                self.next,
                self.count,
                self.partial.is_some(),
                out,
            ),
        }
        self.next += 1;
        Ok(Some(needed))
    }
}

impl Split {
    fn chunk(&self, index: usize) -> core::ops::Range<usize> {
        let start = index * self.segment_size;
        start..(start + self.segment_size).min(self.payload_len)
    }

    /// Fills `out` (exactly the segment's length) with segment `index` of `count`, its L4
    /// checksum complete or, with `partial`, only the pseudo-header sum.
    fn write(&self, frame: &[u8], index: usize, count: usize, partial: bool, out: &mut [u8]) {
        let IpLayout {
            l3,
            ipv6,
            l4,
            protocol,
            payload,
        } = self.layout;
        let chunk = self.chunk(index);
        out[..payload].copy_from_slice(&frame[..payload]);
        out[payload..].copy_from_slice(&frame[payload + chunk.start..payload + chunk.end]);

        let len = out.len();
        if ipv6 {
            // Fits: segment_layout checked the whole payload length against a u16.
            put16(out, l3 + 4, (len - l3 - IPV6_HEADER_LEN) as u16);
        } else {
            put16(out, l3 + 2, (len - l3) as u16);
            // Linux gives each segment of a super-frame its own ID, counting up from the first.
            put16(out, l3 + 4, self.first_ip_id.wrapping_add(index as u16));
            put16(out, l3 + 10, 0);
            let header_checksum = Checksum::new().add_bytes(&out[l3..l4]).finish();
            put16(out, l3 + 10, header_checksum);
            debug_assert!(l4 - l3 >= IPV4_HEADER_LEN);
        }

        let l4_len = len - l4;
        let checksum_at = if protocol == IPPROTO_TCP {
            put32(out, l4 + 4, self.first_seq.wrapping_add(chunk.start as u32));
            let mut flags = out[l4 + 13];
            if index + 1 < count {
                flags &= !(TCP_FIN | TCP_PSH);
            }
            if index > 0 {
                flags &= !TCP_CWR;
            }
            out[l4 + 13] = flags;
            l4 + TCP_CHECKSUM_AT
        } else {
            put16(out, l4 + 4, l4_len as u16);
            l4 + UDP_CHECKSUM_AT
        };
        let pseudo = self.pseudo.add_u32(l4_len as u32);
        if partial {
            put16(out, checksum_at, pseudo.fold());
            return;
        }
        put16(out, checksum_at, 0);
        let value = pseudo.add_bytes(&out[l4..]).finish();
        put16(out, checksum_at, value);
    }
}
