//! Peers → TAP: merging consecutive segments of one TCP flow into a super-frame (GRO).
//!
//! The [`Coalescer`] keeps at most one pending flow, staged in the buffer it was given. A frame
//! extends the pending super-frame when it is the next in-order segment of the same flow: same
//! MACs, VLAN tag, IP addresses and ports; sequence number where the last one ended; same ACK,
//! window, TCP options and IP TOS/TTL (IPv4) or traffic class/flow label/hop limit (IPv6); no
//! SYN/FIN/RST/URG, CWR only on the first segment, PSH only on the last; the same payload size as
//! the first except a shorter last one; IPv4 without options or fragmentation, with equal DF and,
//! without DF, consecutive IDs; IPv6 without extension headers; at most 65535 bytes of IP length.
//! These are Linux GRO's rules, so the receiving kernel re-segments the result into the original
//! segments if it forwards it.
//!
//! Invariants: frames of one flow leave in the order they arrived; a frame is emitted unchanged
//! unless it was merged with another; a frame that does not extend the pending flow but may belong
//! to it (same hosts and ports, or ports unknown) flushes the pending flow first. Frames of other
//! conversations pass through at once and leave the pending flow open, which reorders only across
//! flows. A super-frame carries `NEEDS_CSUM` and the folded pseudo-header sum in its TCP checksum
//! field, the state the kernel completes from `csum_start`.
//!
//! A frame that arrived with a partial L4 checksum (a peer left it for this side to complete,
//! [`Coalescer::push_with`]) is never emitted as if complete: alone, it is written behind a
//! `NEEDS_CSUM` header naming its checksum field; merged, the super-frame's header asks for the
//! checksum anyway.
//!
//! One pending flow is a first version: interleaved bulk flows within one batch merge less. Segment
//! checksums are trusted by default because every frame arrived authenticated from a peer that
//! computed them; [`Coalescer::verify_tcp_checksums`] checks them at the cost of one pass over the
//! payload, so that a segment corrupted before encryption cannot be laundered into a valid one.

use crate::wire::ip::{
    be16, be32, put16, IPPROTO_TCP, IPV4_HEADER_LEN, IPV4_OFFSET_MASK, IPV6_HEADER_LEN,
    TCP_CHECKSUM_AT, TCP_CWR, TCP_FIN, TCP_HEADER_LEN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG,
};
use crate::wire::{
    Checksum, EthernetFrame, IpLayout, IpVersion, VnetHdr, VnetHdrFields, VnetHdrSize,
    VNET_F_NEEDS_CSUM, VNET_GSO_ECN, VNET_GSO_TCPV4, VNET_GSO_TCPV6, VNET_HDR_LEN_MRG,
};

use super::{segment_layout, PartialChecksum, MAX_SUPER_FRAME_LEN};

/// A staging buffer of this size holds the largest super-frame with a 12-byte header.
pub const COALESCE_STAGING_LEN: usize = VNET_HDR_LEN_MRG + MAX_SUPER_FRAME_LEN;

const MAX_IP_LEN: usize = 65_535;
const IPV4_DF: u8 = 0x40;
static ZERO_HEADER: [u8; VNET_HDR_LEN_MRG] = [0; VNET_HDR_LEN_MRG];

/// One write to the TAP: the virtio-net header, then the Ethernet frame.
#[derive(Debug, Clone, Copy)]
pub struct TapWrite<'a> {
    vnet_header: &'a [u8],
    frame: &'a [u8],
    contiguous: Option<&'a [u8]>,
    segments: usize,
}

impl<'a> TapWrite<'a> {
    pub fn vnet_header(&self) -> &'a [u8] {
        self.vnet_header
    }

    pub fn frame(&self) -> &'a [u8] {
        self.frame
    }

    /// Header and frame as one slice when they lie together in the staging buffer (always for
    /// staged frames). A pass-through frame is the caller's own slice and gets `None`: write it with
    /// `writev`, or put the all-zero header into the headroom in front of it.
    pub fn contiguous(&self) -> Option<&'a [u8]> {
        self.contiguous
    }

    /// How many received frames this write carries (1 for a frame passed through).
    pub fn segments(&self) -> usize {
        self.segments
    }
}

/// Counts for metrics; they only grow.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct CoalesceStats {
    pub frames_in: u64,
    pub writes_out: u64,
    /// Writes that carry more than one frame.
    pub super_frames: u64,
    /// Frames that went out inside a super-frame.
    pub merged_frames: u64,
}

/// Merges in-order TCP segments of one flow into super-frames; see the module documentation.
pub struct Coalescer<B: AsMut<[u8]>> {
    staging: B,
    /// The header of a frame passed through with a partial checksum.
    pass_header: [u8; VNET_HDR_LEN_MRG],
    size: VnetHdrSize,
    verify_tcp_checksums: bool,
    pending: Option<Pending>,
    stats: CoalesceStats,
}

/// The flow staged at `staging[header..header + len]`, whose first segment's headers are kept
/// unchanged (except PSH) until the flush, so later segments are compared against them.
#[derive(Clone, Copy, Debug)]
struct Pending {
    layout: IpLayout,
    len: usize,
    gso_size: usize,
    next_seq: u32,
    next_ip_id: u16,
    segments: usize,
    /// The first segment's checksum is partial (matters only if it stays alone).
    partial: Option<PartialChecksum>,
}

/// A frame that could be merged with others of its flow.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    layout: IpLayout,
    seq: u32,
    flags: u8,
    ip_id: u16,
    payload_len: usize,
}

impl<B: AsMut<[u8]>> Coalescer<B> {
    /// A coalescer that stages super-frames in `staging`, writing headers of `size`. A staging
    /// buffer shorter than [`COALESCE_STAGING_LEN`] only limits how much is merged.
    pub fn new(staging: B, size: VnetHdrSize) -> Coalescer<B> {
        Coalescer {
            staging,
            pass_header: [0; VNET_HDR_LEN_MRG],
            size,
            verify_tcp_checksums: false,
            pending: None,
            stats: CoalesceStats::default(),
        }
    }

    /// Merge only segments whose TCP checksum verifies (off by default; see the module note).
    pub fn verify_tcp_checksums(mut self, verify: bool) -> Coalescer<B> {
        self.verify_tcp_checksums = verify;
        self
    }

    pub fn has_pending(&self) -> bool {
        self.pending.is_some()
    }

    pub fn stats(&self) -> CoalesceStats {
        self.stats
    }

    /// Takes the next received frame; `emit` is called for each TAP write that becomes due, in
    /// order (at most twice: the flushed pending flow, then this frame).
    pub fn push<F: FnMut(TapWrite<'_>)>(&mut self, frame: &[u8], emit: F) {
        self.push_with(frame, None, emit)
    }

    /// Like [`Coalescer::push`], for a frame whose L4 checksum is `partial` (not yet computed,
    /// at the place it names). Such a frame is not checked against its checksum even when
    /// [`Coalescer::verify_tcp_checksums`] is on: it has none yet.
    pub fn push_with<F: FnMut(TapWrite<'_>)>(
        &mut self,
        frame: &[u8],
        partial: Option<PartialChecksum>,
        mut emit: F,
    ) {
        self.stats.frames_in += 1;
        let verify = self.verify_tcp_checksums && partial.is_none();
        let Some(candidate) = candidate(frame, verify) else {
            if self.pending_is_related(frame) {
                self.flush(&mut emit);
            }
            self.pass_through(frame, partial, &mut emit);
            return;
        };
        if let Some(pending) = self.pending {
            if self.can_append(&pending, frame, &candidate) {
                self.append(pending, frame, &candidate, &mut emit);
                return;
            }
            // Not the next segment of the pending flow, or another flow: one slot, so it goes.
            self.flush(&mut emit);
        }
        self.start(frame, &candidate, partial, &mut emit);
    }

    /// Emits the pending super-frame, if any; call at the end of every receive batch.
    pub fn flush<F: FnMut(TapWrite<'_>)>(&mut self, mut emit: F) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let header_len = self.size.header_len();
        let size = self.size;
        let staging = self.staging.as_mut();
        let (header, rest) = staging.split_at_mut(header_len);
        let frame = &mut rest[..pending.len];
        if pending.segments == 1 {
            match pending.partial {
                Some(at) => VnetHdr::new_unchecked(header, size).emit(&at.vnet_fields()),
                None => header.fill(0),
            }
        } else {
            let fields = finish_super_frame(&pending, frame);
            VnetHdr::new_unchecked(header, size).emit(&fields);
            self.stats.super_frames += 1;
            self.stats.merged_frames += pending.segments as u64;
        }
        self.stats.writes_out += 1;
        let staging: &[u8] = staging;
        emit(TapWrite {
            vnet_header: &staging[..header_len],
            frame: &staging[header_len..header_len + pending.len],
            contiguous: Some(&staging[..header_len + pending.len]),
            segments: pending.segments,
        });
    }

    fn pass_through<F: FnMut(TapWrite<'_>)>(
        &mut self,
        frame: &[u8],
        partial: Option<PartialChecksum>,
        emit: &mut F,
    ) {
        self.stats.writes_out += 1;
        let header_len = self.size.header_len();
        let vnet_header = match partial {
            Some(at) => {
                let header = &mut self.pass_header[..header_len];
                VnetHdr::new_unchecked(&mut *header, self.size).emit(&at.vnet_fields());
                &self.pass_header[..header_len]
            }
            None => &ZERO_HEADER[..header_len],
        };
        emit(TapWrite {
            vnet_header,
            frame,
            contiguous: None,
            segments: 1,
        });
    }

    fn start<F: FnMut(TapWrite<'_>)>(
        &mut self,
        frame: &[u8],
        c: &Candidate,
        partial: Option<PartialChecksum>,
        emit: &mut F,
    ) {
        let header_len = self.size.header_len();
        let staging = self.staging.as_mut();
        // A PSH segment ends its run, so staging it would only cost a copy.
        if c.flags & TCP_PSH != 0 || header_len + frame.len() > staging.len() {
            self.pass_through(frame, partial, emit);
            return;
        }
        staging[header_len..header_len + frame.len()].copy_from_slice(frame);
        self.pending = Some(Pending {
            layout: c.layout,
            len: frame.len(),
            gso_size: c.payload_len,
            next_seq: c.seq.wrapping_add(c.payload_len as u32),
            next_ip_id: c.ip_id.wrapping_add(1),
            segments: 1,
            partial,
        });
    }

    fn append<F: FnMut(TapWrite<'_>)>(
        &mut self,
        mut pending: Pending,
        frame: &[u8],
        c: &Candidate,
        emit: &mut F,
    ) {
        let header_len = self.size.header_len();
        let staging = self.staging.as_mut();
        let at = header_len + pending.len;
        staging[at..at + c.payload_len].copy_from_slice(&frame[c.layout.payload..]);
        if c.flags & TCP_PSH != 0 {
            staging[header_len + pending.layout.l4 + 13] |= TCP_PSH;
        }
        pending.len += c.payload_len;
        pending.next_seq = pending.next_seq.wrapping_add(c.payload_len as u32);
        pending.next_ip_id = pending.next_ip_id.wrapping_add(1);
        pending.segments += 1;
        let capacity = staging.len() - header_len;
        self.pending = Some(pending);
        let run_ended = c.flags & TCP_PSH != 0 || c.payload_len < pending.gso_size;
        let full = !fits(&pending, pending.gso_size, capacity);
        if run_ended || full {
            self.flush(emit);
        }
    }

    fn can_append(&mut self, p: &Pending, frame: &[u8], c: &Candidate) -> bool {
        let header_len = self.size.header_len();
        let staging = self.staging.as_mut();
        let capacity = staging.len() - header_len;
        let staged = &staging[header_len..header_len + p.len];
        let (a, b) = (&p.layout, &c.layout);
        if a.l3 != b.l3 || a.ipv6 != b.ipv6 || a.payload != b.payload {
            return false;
        }
        let (l3, l4, payload) = (a.l3, a.l4, a.payload);
        // Ethernet header and tag, then addresses and ports.
        if frame[..l3] != staged[..l3]
            || frame[a.addresses()] != staged[a.addresses()]
            || frame[l4..l4 + 4] != staged[l4..l4 + 4]
        {
            return false;
        }
        let ip_matches = if a.ipv6 {
            frame[l3..l3 + 4] == staged[l3..l3 + 4] && frame[l3 + 7] == staged[l3 + 7]
        } else {
            let df = staged[l3 + 6] & IPV4_DF != 0;
            frame[l3 + 1] == staged[l3 + 1]
                && frame[l3 + 8] == staged[l3 + 8]
                && (frame[l3 + 6] & IPV4_DF != 0) == df
                && (df || c.ip_id == p.next_ip_id)
        };
        let first_flags = staged[l4 + 13];
        ip_matches
            // ACK number and data offset, window, options.
            && frame[l4 + 8..l4 + 13] == staged[l4 + 8..l4 + 13]
            && frame[l4 + 14..l4 + 16] == staged[l4 + 14..l4 + 16]
            && frame[l4 + TCP_HEADER_LEN..payload] == staged[l4 + TCP_HEADER_LEN..payload]
            && c.flags & TCP_CWR == 0
            && (c.flags ^ first_flags) & !(TCP_PSH | TCP_CWR) == 0
            && c.seq == p.next_seq
            && c.payload_len <= p.gso_size
            && fits(p, c.payload_len, capacity)
    }

    /// Whether a frame that cannot be merged might still belong to the pending flow, in which case
    /// the pending flow must leave first to keep the flow in order. Unknown ports count as a match.
    fn pending_is_related(&mut self, frame: &[u8]) -> bool {
        let Some(p) = self.pending else {
            return false;
        };
        let header_len = self.size.header_len();
        let staged = &self.staging.as_mut()[header_len..header_len + p.len];
        // The EtherType alone: a malformed IP header may still be the flow's.
        let Some((l3, version)) = EthernetFrame::new_checked(frame)
            .ok()
            .and_then(|eth| eth.ip_offset().ok())
        else {
            return false;
        };
        let ipv6 = version == IpVersion::V6;
        let addresses = p.layout.addresses();
        if l3 != p.layout.l3
            || ipv6 != p.layout.ipv6
            || frame.len() < addresses.end
            || frame[..l3] != staged[..l3]
            || frame[addresses.clone()] != staged[addresses]
        {
            return false;
        }
        let ports_at = if ipv6 {
            match frame[l3 + 6] {
                IPPROTO_TCP => l3 + IPV6_HEADER_LEN,
                // Extension headers hide the transport; any of them may lead to TCP.
                0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 => return true,
                _ => return false,
            }
        } else {
            if frame[l3 + 9] != IPPROTO_TCP {
                return false;
            }
            if be16(frame, l3 + 6) & IPV4_OFFSET_MASK != 0 {
                return true;
            }
            l3 + usize::from(frame[l3] & 0x0f) * 4
        };
        let Some(ports) = frame.get(ports_at..ports_at + 4) else {
            return true;
        };
        ports == &staged[p.layout.l4..p.layout.l4 + 4]
    }
}

/// Whether `add` more payload bytes keep the super-frame within the staging buffer and the IP
/// length field.
fn fits(p: &Pending, add: usize, capacity: usize) -> bool {
    let len = p.len + add;
    let ip_len = if p.layout.ipv6 {
        len - p.layout.l3 - IPV6_HEADER_LEN
    } else {
        len - p.layout.l3
    };
    len <= capacity && ip_len <= MAX_IP_LEN
}

/// Classifies a frame as mergeable: TCP over IPv4 without options (valid header checksum) or IPv6
/// without extension headers, lengths consistent, a payload, and none of SYN/FIN/RST/URG.
fn candidate(frame: &[u8], verify_tcp_checksum: bool) -> Option<Candidate> {
    let layout = segment_layout(frame).ok()?;
    if layout.protocol != IPPROTO_TCP {
        return None;
    }
    let IpLayout {
        l3, l4, payload, ..
    } = layout;
    if !layout.ipv6
        && (l4 - l3 != IPV4_HEADER_LEN || !Checksum::new().add_bytes(&frame[l3..l4]).is_valid())
    {
        return None;
    }
    let flags = frame[l4 + 13];
    let payload_len = frame.len() - payload;
    if flags & (TCP_SYN | TCP_FIN | TCP_RST | TCP_URG) != 0 || payload_len == 0 {
        return None;
    }
    if verify_tcp_checksum
        && !layout
            .pseudo_addresses(frame)
            .add_u32((frame.len() - l4) as u32)
            .add_bytes(&frame[l4..])
            .is_valid()
    {
        return None;
    }
    Some(Candidate {
        layout,
        seq: be32(frame, l4 + 4),
        flags,
        ip_id: if layout.ipv6 { 0 } else { be16(frame, l3 + 4) },
        payload_len,
    })
}

/// Rewrites the staged headers for the merged length and returns the virtio-net header that
/// describes the super-frame.
fn finish_super_frame(p: &Pending, frame: &mut [u8]) -> VnetHdrFields {
    let IpLayout {
        l3,
        ipv6,
        l4,
        payload,
        ..
    } = p.layout;
    let len = frame.len();
    // `fits` kept every length below 65536.
    if ipv6 {
        put16(frame, l3 + 4, (len - l3 - IPV6_HEADER_LEN) as u16);
    } else {
        put16(frame, l3 + 2, (len - l3) as u16);
        put16(frame, l3 + 10, 0);
        let header_checksum = Checksum::new().add_bytes(&frame[l3..l4]).finish();
        put16(frame, l3 + 10, header_checksum);
    }
    let partial = p
        .layout
        .pseudo_addresses(frame)
        .add_u32((len - l4) as u32)
        .fold();
    put16(frame, l4 + TCP_CHECKSUM_AT, partial);
    let mut gso_type = if ipv6 { VNET_GSO_TCPV6 } else { VNET_GSO_TCPV4 };
    // As in Linux's tcp_gro_complete: a CWR on the first segment marks the flow as using ECN.
    if frame[l4 + 13] & TCP_CWR != 0 {
        gso_type |= VNET_GSO_ECN;
    }
    VnetHdrFields {
        flags: VNET_F_NEEDS_CSUM,
        gso_type,
        hdr_len: payload as u16,
        gso_size: p.gso_size as u16,
        csum_start: l4 as u16,
        csum_offset: TCP_CHECKSUM_AT as u16,
    }
}
