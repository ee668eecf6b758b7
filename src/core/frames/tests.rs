//! Tests for segmentation and coalescing, checked against a deliberately naive reference: frames are
//! built and verified here with a word-by-word checksum and an independent header parser, never
//! with the code under test. Also the fuzz seed corpus check and the #[ignore]d microbenchmarks.

use proptest::prelude::*;

use super::*;
use crate::wire::ip::{TCP_CWR, TCP_FIN, TCP_PSH, TCP_SYN, TCP_URG};
use crate::wire::{
    Checksum, GsoType, VnetHdr, VnetHdrFields, VnetHdrSize, VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM,
    VNET_GSO_ECN, VNET_GSO_NONE, VNET_GSO_TCPV4, VNET_GSO_TCPV6, VNET_GSO_UDP, VNET_GSO_UDP_L4,
    VNET_HDR_LEN_MRG,
};

const ACK: u8 = 0x10;
const ECE: u8 = 0x40;

// ---------------------------------------------------------------------------------------------
// Reference checksum and frame builder.

fn ref_sum(chunks: &[&[u8]]) -> u16 {
    let mut bytes = Vec::new();
    for chunk in chunks {
        bytes.extend_from_slice(chunk);
    }
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn ref_store(sum: u16) -> u16 {
    match !sum {
        0 => 0xffff,
        v => v,
    }
}

fn ref_pseudo(src: &[u8], dst: &[u8], protocol: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(src);
    p.extend_from_slice(dst);
    if src.len() == 4 {
        p.extend_from_slice(&[0, protocol]);
        p.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        p.extend_from_slice(&(len as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, protocol]);
    }
    p
}

#[derive(Clone, Debug)]
struct Spec {
    vlan: Option<u16>,
    ipv6: bool,
    udp: bool,
    payload: Vec<u8>,
    flags: u8,
    seq: u32,
    ack: u32,
    window: u16,
    ip_id: u16,
    df: bool,
    tos: u8,
    ttl: u8,
    tcp_options: Vec<u8>,
    ipv4_options: Vec<u8>,
    src_port: u16,
    dst_port: u16,
}

impl Spec {
    fn tcp4(payload: Vec<u8>) -> Spec {
        Spec {
            vlan: None,
            ipv6: false,
            udp: false,
            payload,
            flags: ACK,
            seq: 0x1000_0000,
            ack: 0x2000_0000,
            window: 501,
            ip_id: 0x1234,
            df: true,
            tos: 0,
            ttl: 64,
            tcp_options: vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
            ipv4_options: vec![],
            src_port: 40000,
            dst_port: 5201,
        }
    }

    fn tcp6(payload: Vec<u8>) -> Spec {
        Spec {
            ipv6: true,
            ..Spec::tcp4(payload)
        }
    }

    fn udp4(payload: Vec<u8>) -> Spec {
        Spec {
            udp: true,
            tcp_options: vec![],
            ..Spec::tcp4(payload)
        }
    }

    fn l3(&self) -> usize {
        if self.vlan.is_some() {
            18
        } else {
            14
        }
    }

    fn l4(&self) -> usize {
        self.l3()
            + if self.ipv6 {
                40
            } else {
                20 + self.ipv4_options.len()
            }
    }

    fn headers_len(&self) -> usize {
        self.l4()
            + if self.udp {
                8
            } else {
                20 + self.tcp_options.len()
            }
    }

    fn src_ip(&self) -> Vec<u8> {
        if self.ipv6 {
            vec![0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        } else {
            vec![10, 77, 0, 1]
        }
    }

    fn dst_ip(&self) -> Vec<u8> {
        if self.ipv6 {
            vec![0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]
        } else {
            vec![10, 77, 0, 2]
        }
    }

    /// The frame with every checksum complete, as a host without offloads would send it.
    fn build(&self) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        let ethertype: u16 = if self.ipv6 { 0x86dd } else { 0x0800 };
        if let Some(tci) = self.vlan {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        let l4_len = self.headers_len() - self.l4() + self.payload.len();
        let protocol = if self.udp { 17 } else { 6 };
        let l3 = f.len();
        if self.ipv6 {
            f.extend_from_slice(&[0x60 | (self.tos >> 4), self.tos << 4, 0x12, 0x34]);
            f.extend_from_slice(&(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[protocol, self.ttl]);
            f.extend_from_slice(&self.src_ip());
            f.extend_from_slice(&self.dst_ip());
        } else {
            let ihl = (20 + self.ipv4_options.len()) / 4;
            f.push(0x40 | ihl as u8);
            f.push(self.tos);
            f.extend_from_slice(&((ihl * 4 + l4_len) as u16).to_be_bytes());
            f.extend_from_slice(&self.ip_id.to_be_bytes());
            f.extend_from_slice(&[if self.df { 0x40 } else { 0 }, 0, self.ttl, protocol, 0, 0]);
            f.extend_from_slice(&self.src_ip());
            f.extend_from_slice(&self.dst_ip());
            f.extend_from_slice(&self.ipv4_options);
            let sum = ref_store(ref_sum(&[&f[l3..]]));
            f[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
        }
        let l4 = f.len();
        f.extend_from_slice(&self.src_port.to_be_bytes());
        f.extend_from_slice(&self.dst_port.to_be_bytes());
        if self.udp {
            f.extend_from_slice(&(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
        } else {
            f.extend_from_slice(&self.seq.to_be_bytes());
            f.extend_from_slice(&self.ack.to_be_bytes());
            f.push((((20 + self.tcp_options.len()) / 4) as u8) << 4);
            f.push(self.flags);
            f.extend_from_slice(&self.window.to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0]);
            f.extend_from_slice(&self.tcp_options);
        }
        f.extend_from_slice(&self.payload);
        let at = l4 + if self.udp { 6 } else { 16 };
        let pseudo = ref_pseudo(&self.src_ip(), &self.dst_ip(), protocol, l4_len);
        let sum = ref_store(ref_sum(&[&pseudo, &f[l4..]]));
        f[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        f
    }

    /// The frame as Linux hands it out of a TAP with offloads: the L4 checksum field holds the
    /// folded pseudo-header sum, and the header asks for completion (and segmentation, if
    /// `gso_size` is given).
    fn build_partial(&self, gso_size: Option<u16>) -> (VnetHdrFields, Vec<u8>) {
        let mut f = self.build();
        let l4 = self.l4();
        let at = l4 + if self.udp { 6 } else { 16 };
        let protocol = if self.udp { 17 } else { 6 };
        let pseudo = ref_pseudo(&self.src_ip(), &self.dst_ip(), protocol, f.len() - l4);
        f[at..at + 2].copy_from_slice(&ref_sum(&[&pseudo]).to_be_bytes());
        let gso_type = match (gso_size, self.udp, self.ipv6) {
            (None, _, _) => VNET_GSO_NONE,
            (Some(_), true, _) => VNET_GSO_UDP_L4,
            (Some(_), false, false) => VNET_GSO_TCPV4,
            (Some(_), false, true) => VNET_GSO_TCPV6,
        };
        let ecn = if !self.udp && gso_size.is_some() && self.flags & 0x80 != 0 {
            VNET_GSO_ECN
        } else {
            0
        };
        let hdr = VnetHdrFields {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: gso_type | ecn,
            hdr_len: if gso_size.is_some() {
                self.headers_len() as u16
            } else {
                0
            },
            gso_size: gso_size.unwrap_or(0),
            csum_start: l4 as u16,
            csum_offset: (at - l4) as u16,
        };
        (hdr, f)
    }
}

/// What the reference parser finds in a frame whose checksums it has verified.
#[derive(Debug)]
struct Checked {
    l3: usize,
    l4: usize,
    payload_at: usize,
    ip_id: u16,
    seq: u32,
    flags: u8,
}

/// Parses `frame` independently of the code under test and asserts that its IP lengths and its
/// IPv4 and L4 checksums are right.
fn check_valid(frame: &[u8]) -> Checked {
    let l3 = if matches!(frame[12..14], [0x81, 0x00] | [0x88, 0xa8]) {
        18
    } else {
        14
    };
    let ipv6 = frame[l3] >> 4 == 6;
    let (l4, protocol, src, dst) = if ipv6 {
        assert_eq!(
            usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]])),
            frame.len() - l3 - 40
        );
        (
            l3 + 40,
            frame[l3 + 6],
            &frame[l3 + 8..l3 + 24],
            &frame[l3 + 24..l3 + 40],
        )
    } else {
        let ihl = usize::from(frame[l3] & 15) * 4;
        assert_eq!(
            usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]])),
            frame.len() - l3
        );
        assert_eq!(
            ref_sum(&[&frame[l3..l3 + ihl]]),
            0xffff,
            "IPv4 header checksum"
        );
        (
            l3 + ihl,
            frame[l3 + 9],
            &frame[l3 + 12..l3 + 16],
            &frame[l3 + 16..l3 + 20],
        )
    };
    let pseudo = ref_pseudo(src, dst, protocol, frame.len() - l4);
    assert_eq!(ref_sum(&[&pseudo, &frame[l4..]]), 0xffff, "L4 checksum");
    let (payload_at, seq, flags) = if protocol == 17 {
        assert_eq!(
            usize::from(u16::from_be_bytes([frame[l4 + 4], frame[l4 + 5]])),
            frame.len() - l4
        );
        assert_ne!(frame[l4 + 6..l4 + 8], [0, 0], "UDP checksum 0 means none");
        (l4 + 8, 0, 0)
    } else {
        let seq = u32::from_be_bytes(frame[l4 + 4..l4 + 8].try_into().unwrap());
        (
            l4 + usize::from(frame[l4 + 12] >> 4) * 4,
            seq,
            frame[l4 + 13],
        )
    };
    Checked {
        l3,
        l4,
        payload_at,
        ip_id: if ipv6 {
            0
        } else {
            u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]])
        },
        seq,
        flags,
    }
}

fn segment_all(hdr: &VnetHdrFields, frame: &[u8]) -> Result<Vec<Vec<u8>>, OffloadError> {
    segment_within(hdr, frame, usize::MAX)
}

fn segment_within(
    hdr: &VnetHdrFields,
    frame: &[u8],
    max_frame: usize,
) -> Result<Vec<Vec<u8>>, OffloadError> {
    let mut segmenter = Segmenter::with_max_frame(hdr, frame, max_frame)?;
    let mut out = vec![0u8; 70_000];
    let mut segments = Vec::new();
    while let Some(len) = segmenter.next_into(&mut out)? {
        segments.push(out[..len].to_vec());
    }
    Ok(segments)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Written {
    header: VnetHdrFields,
    frame: Vec<u8>,
    segments: usize,
    contiguous: bool,
}

fn coalesce_all<B: AsMut<[u8]>>(coalescer: &mut Coalescer<B>, frames: &[Vec<u8>]) -> Vec<Written> {
    coalesce_with(coalescer, frames, None)
}

/// Pushes `frames` (their checksums partial at `partial`, if given) and flushes; records every
/// TAP write.
fn coalesce_with<B: AsMut<[u8]>>(
    coalescer: &mut Coalescer<B>,
    frames: &[Vec<u8>],
    partial: Option<PartialChecksum>,
) -> Vec<Written> {
    let mut written = Vec::new();
    let mut record = |w: TapWrite<'_>| {
        assert_eq!(w.vnet_header().len(), VNET_HDR_LEN_MRG);
        if let Some(joined) = w.contiguous() {
            assert_eq!(&joined[..VNET_HDR_LEN_MRG], w.vnet_header());
            assert_eq!(&joined[VNET_HDR_LEN_MRG..], w.frame());
        }
        written.push(Written {
            header: VnetHdr::new_checked(w.vnet_header(), VnetHdrSize::Mergeable)
                .unwrap()
                .fields(),
            frame: w.frame().to_vec(),
            segments: w.segments(),
            contiguous: w.contiguous().is_some(),
        });
    };
    for frame in frames {
        coalescer.push_with(frame, partial, &mut record);
    }
    coalescer.flush(&mut record);
    written
}

fn coalescer() -> Coalescer<Vec<u8>> {
    Coalescer::new(vec![0u8; COALESCE_STAGING_LEN], VnetHdrSize::Mergeable)
}

/// Completes a written frame's checksum as the kernel would, so it compares to a full frame.
fn completed(w: &Written) -> Vec<u8> {
    let mut frame = w.frame.clone();
    if w.header.needs_csum() {
        let plain = VnetHdrFields {
            gso_type: VNET_GSO_NONE,
            ..w.header
        };
        complete_checksum(&plain, &mut frame).unwrap();
    }
    frame
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Segmentation.

fn spec_strategy() -> impl Strategy<Value = (Spec, u16)> {
    (
        0usize..3,
        any::<bool>(),
        prop_oneof![0usize..4000, 4000usize..12000],
        prop_oneof![1u16..64, 64u16..1500, 1500u16..9000],
        any::<u8>(),
        any::<(u32, u32, u16, u16, bool, u8)>(),
        0usize..3,
        any::<u8>(),
    )
        .prop_map(
            |(
                kind,
                tagged,
                len,
                gso,
                flag_bits,
                (seq, ack, window, ip_id, df, tos),
                opts,
                seed,
            )| {
                let mut spec = match kind {
                    0 => Spec::tcp4(payload(len, seed)),
                    1 => Spec::tcp6(payload(len, seed)),
                    _ => Spec::udp4(payload(len, seed)),
                };
                if kind == 2 && flag_bits & 1 != 0 {
                    spec.ipv6 = true;
                }
                spec.vlan = tagged.then_some(0x2000 | u16::from(seed));
                // ACK plus any of FIN, PSH, ECE, CWR: what a TSO super-frame may carry.
                spec.flags = ACK | (flag_bits & (TCP_FIN | TCP_PSH | ECE | TCP_CWR));
                (
                    spec.seq,
                    spec.ack,
                    spec.window,
                    spec.ip_id,
                    spec.df,
                    spec.tos,
                ) = (seq, ack, window, ip_id, df, tos & 0xfc);
                if !spec.udp {
                    spec.tcp_options = vec![1; opts * 4];
                }
                (spec, gso)
            },
        )
}

/// Everything the brief promises about segments, checked against the reference.
fn check_segments(spec: &Spec, gso: u16, segments: &[Vec<u8>]) {
    let original = spec.build();
    let gso = usize::from(gso);
    let headers = spec.headers_len();
    assert_eq!(segments.len(), spec.payload.len().div_ceil(gso).max(1));
    let mut joined = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let c = check_valid(seg);
        assert_eq!((c.l3, c.l4, c.payload_at), (spec.l3(), spec.l4(), headers));
        assert!(seg.len() - headers <= gso);
        let last = i + 1 == segments.len();
        assert!(
            last || seg.len() - headers == gso,
            "only the last may be short"
        );
        joined.extend_from_slice(&seg[headers..]);
        // Unchanged: Ethernet header, IP header apart from lengths/ID/checksum, ports, ACK, window,
        // options.
        assert_eq!(seg[..c.l3], original[..c.l3]);
        if spec.ipv6 {
            assert_eq!(seg[c.l3..c.l3 + 4], original[c.l3..c.l3 + 4]);
            assert_eq!(seg[c.l3 + 6..c.l4], original[c.l3 + 6..c.l4]);
        } else {
            assert_eq!(c.ip_id, spec.ip_id.wrapping_add(i as u16));
            assert_eq!(seg[c.l3..c.l3 + 2], original[c.l3..c.l3 + 2]);
            assert_eq!(seg[c.l3 + 6..c.l3 + 10], original[c.l3 + 6..c.l3 + 10]);
            assert_eq!(seg[c.l3 + 12..c.l4], original[c.l3 + 12..c.l4]);
        }
        assert_eq!(seg[c.l4..c.l4 + 4], original[c.l4..c.l4 + 4]);
        if !spec.udp {
            assert_eq!(c.seq, spec.seq.wrapping_add((i * gso) as u32));
            assert_eq!(seg[c.l4 + 8..c.l4 + 13], original[c.l4 + 8..c.l4 + 13]);
            assert_eq!(seg[c.l4 + 14..c.l4 + 16], original[c.l4 + 14..c.l4 + 16]);
            assert_eq!(seg[c.l4 + 18..headers], original[c.l4 + 18..headers]);
            let mut expected = spec.flags;
            if !last {
                expected &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                expected &= !TCP_CWR;
            }
            assert_eq!(c.flags, expected);
        }
    }
    assert_eq!(joined, spec.payload);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn segments_are_valid_frames_that_carry_the_payload((spec, gso) in spec_strategy()) {
        let (hdr, frame) = spec.build_partial(Some(gso));
        let segments = segment_all(&hdr, &frame).unwrap();
        check_segments(&spec, gso, &segments);
        let segmenter = Segmenter::new(&hdr, &frame).unwrap();
        prop_assert_eq!(segmenter.segment_count(), segments.len());
        prop_assert_eq!(segmenter.header_len(), spec.headers_len());
        prop_assert_eq!(segmenter.max_segment_len(), segments.iter().map(Vec::len).max().unwrap());
    }

    #[test]
    fn segment_then_coalesce_gives_back_the_super_frame((spec, gso) in spec_strategy()) {
        let mut spec = spec;
        spec.udp = false;
        spec.flags &= !TCP_FIN;
        if spec.tcp_options.is_empty() {
            spec.tcp_options = vec![1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9];
        }
        let (hdr, frame) = spec.build_partial(Some(gso));
        let segments = segment_all(&hdr, &frame).unwrap();
        let written = coalesce_all(&mut coalescer(), &segments);
        let original = spec.build();
        if spec.payload.is_empty() {
            // Nothing to merge: a pure ACK passes through untouched.
            prop_assert_eq!(&written[0].frame, &original);
            prop_assert_eq!(written[0].header, VnetHdrFields::NONE);
            prop_assert!(!written[0].contiguous);
            return Ok(());
        }
        prop_assert_eq!(written.len(), 1, "one flow, in order, fits: one write");
        let w = &written[0];
        prop_assert_eq!(w.segments, segments.len());
        prop_assert_eq!(completed(w), original);
        if segments.len() == 1 {
            prop_assert_eq!(w.header, VnetHdrFields::NONE);
        } else {
            // The kernel's own state for a super-frame: partial pseudo-header sum in the field.
            let pseudo = ref_pseudo(&spec.src_ip(), &spec.dst_ip(), 6, w.frame.len() - spec.l4());
            let field = spec.l4() + 16;
            prop_assert_eq!(&w.frame[field..field + 2], &ref_sum(&[&pseudo]).to_be_bytes());
            let mut expected = hdr;
            expected.gso_size = gso;
            prop_assert_eq!(w.header, expected);
        }
    }

    #[test]
    fn plain_frames_get_their_checksum_completed((spec, _gso) in spec_strategy()) {
        let (hdr, mut frame) = spec.build_partial(None);
        let segments = segment_all(&hdr, &frame).unwrap();
        complete_checksum(&hdr, &mut frame).unwrap();
        prop_assert_eq!(&frame, &spec.build());
        prop_assert_eq!(segments, vec![frame]);
    }

    #[test]
    fn completion_matches_the_reference_anywhere(
        mut frame in proptest::collection::vec(any::<u8>(), 0..300),
        start in any::<u16>(),
        offset in any::<u16>(),
    ) {
        let start = start % 310;
        let offset = offset % 40;
        let hdr = VnetHdrFields {
            flags: VNET_F_NEEDS_CSUM,
            csum_start: start,
            csum_offset: offset,
            ..VnetHdrFields::NONE
        };
        let (start, field) = (usize::from(start), usize::from(start) + usize::from(offset));
        let before = frame.clone();
        let result = complete_checksum(&hdr, &mut frame);
        if field + 2 > before.len() {
            prop_assert_eq!(result, Err(OffloadError::BadVnetHeader));
            prop_assert_eq!(frame, before);
        } else {
            result.unwrap();
            let expected = ref_store(ref_sum(&[&before[start..]]));
            prop_assert_eq!(&frame[field..field + 2], &expected.to_be_bytes());
            prop_assert_eq!(&frame[..field], &before[..field]);
            prop_assert_eq!(&frame[field + 2..], &before[field + 2..]);
        }
    }

    #[test]
    fn random_input_never_panics(
        frame in proptest::collection::vec(any::<u8>(), 0..400),
        fields in any::<(u8, u8, u16, u16, u16, u16)>(),
        small_gso in any::<bool>(),
    ) {
        let (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset) = fields;
        let hdr = VnetHdrFields {
            flags,
            gso_type,
            hdr_len,
            gso_size: if small_gso { gso_size % 64 } else { gso_size },
            csum_start,
            csum_offset,
        };
        exercise(&hdr, &frame);
    }

    #[test]
    fn mutated_super_frames_never_panic_and_any_output_is_valid(
        (spec, gso) in spec_strategy(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        field_noise in any::<(u8, u16)>(),
    ) {
        let (mut hdr, mut frame) = spec.build_partial(Some(gso));
        let headers = spec.headers_len() + 4;
        for (at, value) in flips {
            let at = at.index(headers.min(frame.len()));
            frame[at] ^= value;
        }
        match field_noise.0 % 4 {
            0 => hdr.hdr_len ^= field_noise.1,
            1 => hdr.csum_start ^= field_noise.1 & 0x3f,
            2 => hdr.gso_type ^= field_noise.1 as u8,
            _ => {}
        }
        let frame_in = frame.clone();
        exercise(&hdr, &frame);
        if hdr.gso() != GsoType::None {
            if let Ok(segments) = segment_all(&hdr, &frame) {
                for seg in &segments {
                    check_valid(seg);
                }
            }
        }
        prop_assert_eq!(frame, frame_in, "segmentation never writes its input");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tcp_super_frames_are_cut_to_the_path((spec, gso) in spec_strategy(), max_frame in 0usize..3000) {
        let (hdr, frame) = spec.build_partial(Some(gso));
        let result = segment_within(&hdr, &frame, max_frame);
        if spec.udp {
            // USO segments are datagrams: cutting them smaller would change what the receiver reads.
            prop_assert_eq!(result.unwrap(), segment_all(&hdr, &frame).unwrap());
            return Ok(());
        }
        let headers = spec.headers_len();
        if max_frame < headers + 8 {
            prop_assert_eq!(result, Err(OffloadError::PathTooSmall));
            return Ok(());
        }
        let segments = result.unwrap();
        let size = usize::from(gso).min(max_frame - headers);
        check_segments(&spec, size as u16, &segments);
        for seg in &segments {
            prop_assert!(seg.len() <= max_frame);
        }
        let segmenter = Segmenter::with_max_frame(&hdr, &frame, max_frame).unwrap();
        prop_assert_eq!(segmenter.segment_count(), segments.len());
        prop_assert_eq!(segmenter.max_segment_len(), segments.iter().map(Vec::len).max().unwrap());
    }
}

#[test]
fn tcp_super_frames_shrink_to_a_narrow_path_and_never_grow() {
    // A 1500-byte MTU sender's segments over a path that carries 1400-byte IP packets.
    let max_frame = ETHERNET_HEADER_LEN + 1400;
    for spec in [
        Spec::tcp4(payload(65_535 - 20 - 32, 7)),
        Spec {
            vlan: Some(0x0042),
            flags: ACK | TCP_PSH | TCP_CWR,
            ..Spec::tcp6(payload(30_000, 8))
        },
    ] {
        let (hdr, frame) = spec.build_partial(Some(1448));
        let segments = segment_within(&hdr, &frame, max_frame).unwrap();
        let size = max_frame - spec.headers_len();
        assert!(size < 1448);
        check_segments(&spec, size as u16, &segments);
        assert!(segments.iter().all(|s| s.len() <= max_frame));
        assert_eq!(segments[0].len(), max_frame, "full segments fill the path");

        // A wider path than the sender's MSS leaves gso_size alone.
        assert_eq!(
            segment_within(&hdr, &frame, 9000).unwrap(),
            segment_all(&hdr, &frame).unwrap()
        );
        assert_eq!(
            segment_within(&hdr, &frame, spec.headers_len() + 7),
            Err(OffloadError::PathTooSmall)
        );
    }
}

#[test]
fn udp_and_plain_frames_ignore_the_path() {
    let udp = Spec::udp4(payload(5000, 9));
    let (hdr, frame) = udp.build_partial(Some(1400));
    assert_eq!(
        segment_within(&hdr, &frame, 100).unwrap(),
        segment_all(&hdr, &frame).unwrap()
    );
    let plain = Spec::tcp4(payload(1400, 10));
    let (hdr, frame) = plain.build_partial(None);
    assert_eq!(
        segment_within(&hdr, &frame, 60).unwrap(),
        vec![plain.build()]
    );
    assert!(!OffloadError::PathTooSmall.as_str().is_empty());
}

/// Drives every entry point with one input; the property is "returns".
fn exercise(hdr: &VnetHdrFields, frame: &[u8]) {
    let mut copy = frame.to_vec();
    let _ = complete_checksum(hdr, &mut copy);
    if let Ok(mut segmenter) = Segmenter::new(hdr, frame) {
        let mut out = vec![0u8; segmenter.max_segment_len()];
        let mut produced = Vec::new();
        while let Some(len) = segmenter.next_into(&mut out).unwrap() {
            assert!(len <= segmenter.max_segment_len());
            produced.push(out[..len].to_vec());
        }
        assert_eq!(produced.len(), segmenter.segment_count());
        let mut c = coalescer().verify_tcp_checksums(true);
        let written = coalesce_all(&mut c, &produced);
        assert!(written.len() <= produced.len());
    }
    let tcp = matches!(hdr.gso(), GsoType::TcpV4 | GsoType::TcpV6);
    if let Ok(mut narrow) = Segmenter::with_max_frame(hdr, frame, 200) {
        let mut out = vec![0u8; narrow.max_segment_len()];
        while let Some(len) = narrow.next_into(&mut out).unwrap() {
            assert!(!tcp || len <= 200);
        }
    }
    let mut c = Coalescer::new(vec![0u8; 600], VnetHdrSize::Legacy);
    for _ in 0..2 {
        c.push(frame, |w| assert!(w.frame().len() <= frame.len()));
    }
    c.flush(|_| {});
}

#[test]
fn a_64_kib_super_frame_of_each_kind() {
    for (spec, gso) in [
        (Spec::tcp4(payload(65_535 - 20 - 32, 1)), 1448u16),
        (Spec::tcp6(payload(65_535 - 32, 2)), 1428),
        (Spec::udp4(payload(65_535 - 28, 3)), 1400),
        (
            Spec {
                vlan: Some(7),
                ipv6: true,
                ..Spec::udp4(payload(65_535 - 8, 4))
            },
            1350,
        ),
    ] {
        let (hdr, frame) = spec.build_partial(Some(gso));
        let segments = segment_all(&hdr, &frame).unwrap();
        check_segments(&spec, gso, &segments);
    }
}

#[test]
fn gso_size_larger_than_the_payload_gives_one_complete_frame() {
    let spec = Spec {
        flags: ACK | TCP_PSH | TCP_FIN | TCP_CWR,
        ..Spec::tcp4(payload(100, 9))
    };
    let (hdr, frame) = spec.build_partial(Some(1448));
    assert_eq!(segment_all(&hdr, &frame).unwrap(), vec![spec.build()]);
}

#[test]
fn data_valid_and_flagless_frames_pass_through() {
    let spec = Spec::tcp4(payload(50, 1));
    let frame = spec.build();
    for flags in [0, VNET_F_DATA_VALID] {
        let hdr = VnetHdrFields {
            flags,
            ..VnetHdrFields::NONE
        };
        assert_eq!(segment_all(&hdr, &frame).unwrap(), vec![frame.clone()]);
        let mut copy = frame.clone();
        complete_checksum(&hdr, &mut copy).unwrap();
        assert_eq!(copy, frame);
    }
    // Non-IP frames are fine when no offload is asked for.
    let arp = [0xffu8; 42];
    assert_eq!(
        segment_all(&VnetHdrFields::NONE, &arp).unwrap(),
        vec![arp.to_vec()]
    );
}

#[test]
fn segmentation_refuses_what_it_cannot_do() {
    let tcp4 = Spec::tcp4(payload(3000, 1));
    let (hdr, frame) = tcp4.build_partial(Some(1000));
    let err = |hdr: VnetHdrFields, frame: &[u8]| Segmenter::new(&hdr, frame).unwrap_err();

    assert_eq!(
        err(VnetHdrFields { gso_size: 0, ..hdr }, &frame),
        OffloadError::ZeroGsoSize
    );
    for (gso_type, expected) in [
        (VNET_GSO_UDP, OffloadError::UnsupportedGso(VNET_GSO_UDP)),
        (2, OffloadError::UnsupportedGso(2)),
        (VNET_GSO_TCPV6, OffloadError::GsoMismatch),
        (VNET_GSO_UDP_L4, OffloadError::GsoMismatch),
    ] {
        assert_eq!(err(VnetHdrFields { gso_type, ..hdr }, &frame), expected);
    }
    assert_eq!(
        err(
            VnetHdrFields {
                hdr_len: hdr.hdr_len - 1,
                ..hdr
            },
            &frame
        ),
        OffloadError::BadVnetHeader
    );
    assert_eq!(
        err(
            VnetHdrFields {
                hdr_len: frame.len() as u16 + 1,
                ..hdr
            },
            &frame
        ),
        OffloadError::BadVnetHeader
    );
    // A longer hdr_len is only a hint about the linear part, as virtio allows.
    assert!(Segmenter::new(
        &VnetHdrFields {
            hdr_len: hdr.hdr_len + 100,
            ..hdr
        },
        &frame
    )
    .is_ok());
    assert_eq!(
        err(
            VnetHdrFields {
                csum_start: hdr.csum_start + 2,
                ..hdr
            },
            &frame
        ),
        OffloadError::BadVnetHeader
    );
    assert_eq!(
        err(
            VnetHdrFields {
                csum_offset: 6,
                ..hdr
            },
            &frame
        ),
        OffloadError::BadVnetHeader
    );
    // Without NEEDS_CSUM the checksum fields are not used, so they are not checked.
    assert!(Segmenter::new(
        &VnetHdrFields {
            flags: 0,
            csum_start: 0,
            ..hdr
        },
        &frame
    )
    .is_ok());

    let mut short = frame.clone();
    short.pop();
    assert_eq!(err(hdr, &short), OffloadError::BadIpLength);
    assert_eq!(err(hdr, &frame[..40]), OffloadError::BadIpLength);
    assert_eq!(err(hdr, &frame[..30]), OffloadError::Truncated);
    assert_eq!(err(hdr, &frame[..10]), OffloadError::Truncated);

    let mut fragment = frame.clone();
    fragment[20] |= 0x20; // MF
    assert_eq!(err(hdr, &fragment), OffloadError::Fragment);

    let mut double_tag = Spec {
        vlan: Some(5),
        ..tcp4.clone()
    }
    .build_partial(Some(1000))
    .1;
    double_tag[16..18].copy_from_slice(&0x8100u16.to_be_bytes());
    assert_eq!(err(hdr, &double_tag), OffloadError::UnsupportedFrame);

    let tcp6 = Spec::tcp6(payload(3000, 1));
    let (hdr6, mut frame6) = tcp6.build_partial(Some(1000));
    frame6[14 + 6] = 0; // hop-by-hop options header
    assert_eq!(err(hdr6, &frame6), OffloadError::UnsupportedFrame);

    let huge = vec![0u8; MAX_SUPER_FRAME_LEN + 1];
    assert_eq!(err(hdr, &huge), OffloadError::TooLong);
    assert_eq!(
        err(VnetHdrFields::NONE, &huge),
        OffloadError::TooLong,
        "the cap is checked first"
    );

    let mut in_place = frame.clone();
    assert_eq!(
        complete_checksum(&hdr, &mut in_place),
        Err(OffloadError::GsoMismatch)
    );
    for e in [
        OffloadError::OutputTooSmall { needed: 1 },
        OffloadError::Fragment,
    ] {
        assert!(!e.as_str().is_empty() && !e.to_string().is_empty());
    }
}

#[test]
fn a_short_output_buffer_consumes_nothing() {
    let spec = Spec::tcp6(payload(2500, 3));
    let (hdr, frame) = spec.build_partial(Some(1000));
    let mut segmenter = Segmenter::new(&hdr, &frame).unwrap();
    let needed = spec.headers_len() + 1000;
    let mut small = vec![0u8; needed - 1];
    assert_eq!(segmenter.next_len(), Some(needed));
    assert_eq!(
        segmenter.next_into(&mut small),
        Err(OffloadError::OutputTooSmall { needed })
    );
    assert_eq!(segmenter.remaining(), 3);
    let mut big = vec![0u8; needed];
    let mut segments = Vec::new();
    while let Some(len) = segmenter.next_into(&mut big).unwrap() {
        segments.push(big[..len].to_vec());
    }
    assert_eq!(segmenter.next_len(), None);
    assert_eq!(segmenter.remaining(), 0);
    check_segments(&spec, 1000, &segments);
}

#[test]
fn segments_fill_pooled_packet_buffers() {
    use crate::core::BufferPool;
    let spec = Spec::tcp4(payload(10_000, 5));
    let (hdr, frame) = spec.build_partial(Some(1350));
    let mut pool = BufferPool::new(1500, 64);
    let mut segmenter = Segmenter::new(&hdr, &frame).unwrap();
    let mut bufs = Vec::new();
    loop {
        let mut buf = pool.take();
        match segmenter.next_into(buf.frame_area()).unwrap() {
            Some(len) => {
                buf.set_frame_len(len);
                bufs.push(buf);
            }
            None => break,
        }
    }
    let segments: Vec<Vec<u8>> = bufs.iter().map(|b| b.bytes().to_vec()).collect();
    check_segments(&spec, 1350, &segments);
}

// ---------------------------------------------------------------------------------------------
// Coalescing.

/// The segments of one TCP super-frame, fully checksummed as a peer sends them.
fn tcp_segments(spec: &Spec, gso: u16) -> Vec<Vec<u8>> {
    let (hdr, frame) = spec.build_partial(Some(gso));
    segment_all(&hdr, &frame).unwrap()
}

fn arp() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 9, 0x08, 0x06]);
    f.extend_from_slice(&[0; 28]);
    f
}

#[test]
fn unrelated_frames_pass_through_while_a_flow_is_pending() {
    let spec = Spec::tcp4(payload(4 * 1000, 1));
    let segs = tcp_segments(&spec, 1000);
    let other_udp = Spec::udp4(payload(30, 2)).build();
    let other_ack = Spec {
        src_port: 40001,
        ..Spec::tcp4(vec![])
    }
    .build();
    let frames = vec![
        segs[0].clone(),
        arp(),
        segs[1].clone(),
        other_udp.clone(),
        other_ack.clone(),
        segs[2].clone(),
        segs[3].clone(),
    ];
    let mut c = coalescer();
    let written = coalesce_all(&mut c, &frames);
    let frames_out: Vec<&Vec<u8>> = written.iter().map(|w| &w.frame).collect();
    assert_eq!(frames_out[..3], [&arp(), &other_udp, &other_ack]);
    assert_eq!(written[3].segments, 4);
    assert_eq!(completed(&written[3]), spec.build());
    assert_eq!(
        c.stats(),
        CoalesceStats {
            frames_in: 7,
            writes_out: 4,
            super_frames: 1,
            merged_frames: 4,
        }
    );
}

#[test]
fn a_related_frame_that_cannot_merge_flushes_first() {
    let spec = Spec::tcp4(payload(3 * 1000, 1));
    let segs = tcp_segments(&spec, 1000);
    // Same flow, carrying a FIN: may not merge, must not overtake.
    let fin = Spec {
        seq: spec.seq + 3000,
        flags: ACK | TCP_FIN,
        ..Spec::tcp4(vec![])
    }
    .build();
    let mut frames = segs.clone();
    frames.push(fin.clone());
    let written = coalesce_all(&mut coalescer(), &frames);
    assert_eq!(written.len(), 2);
    assert_eq!(completed(&written[0]), spec.build());
    assert_eq!(written[1].frame, fin);

    // Same hosts, IPv4 fragment (ports unknown): treated as possibly the same flow.
    let mut fragment = Spec::tcp4(payload(8, 3)).build();
    fragment[20..22].copy_from_slice(&0x0010u16.to_be_bytes());
    let mut frames = segs[..2].to_vec();
    frames.push(fragment.clone());
    let written = coalesce_all(&mut coalescer(), &frames);
    assert_eq!(written.len(), 2);
    assert_eq!(written[0].segments, 2);
    assert_eq!(written[1].frame, fragment);
}

#[test]
fn breaks_in_the_sequence_end_the_super_frame() {
    let spec = Spec::tcp6(payload(4 * 1000, 2));
    let segs = tcp_segments(&spec, 1000);
    type Case = (&'static str, Vec<Vec<u8>>, Vec<usize>);
    let cases: Vec<Case> = vec![
        (
            "gap",
            vec![segs[0].clone(), segs[2].clone(), segs[3].clone()],
            vec![1, 2],
        ),
        (
            "retransmit",
            vec![segs[0].clone(), segs[1].clone(), segs[1].clone()],
            vec![2, 1],
        ),
        (
            "reordered",
            vec![segs[1].clone(), segs[0].clone()],
            vec![1, 1],
        ),
    ];
    for (name, frames, expected) in cases {
        let written = coalesce_all(&mut coalescer(), &frames);
        let counts: Vec<usize> = written.iter().map(|w| w.segments).collect();
        assert_eq!(counts, expected, "{name}");
        for w in &written {
            check_valid(&completed(w));
        }
    }

    // A header field that differs ends the run: ACK, window, TTL, TCP option, ECE, DSCP.
    let base = Spec::tcp4(payload(1000, 4));
    let next = |f: &dyn Fn(&mut Spec)| {
        let mut s = Spec {
            seq: base.seq + 1000,
            ip_id: base.ip_id + 1,
            ..base.clone()
        };
        f(&mut s);
        s.build()
    };
    let variants: Vec<Vec<u8>> = vec![
        next(&|s| s.ack += 1),
        next(&|s| s.window += 1),
        next(&|s| s.ttl -= 1),
        next(&|s| s.tcp_options[11] += 1),
        next(&|s| s.flags |= ECE),
        next(&|s| s.flags |= TCP_CWR),
        next(&|s| s.tos = 0x10),
        next(&|s| s.vlan = Some(3)),
        next(&|s| s.dst_port = 1),
        next(&|s| s.payload.push(0)),
    ];
    for (i, second) in variants.into_iter().enumerate() {
        let written = coalesce_all(&mut coalescer(), &[base.build(), second.clone()]);
        assert_eq!(written.len(), 2, "variant {i}");
        assert_eq!(written[0].frame, base.build());
        assert_eq!(written[1].frame, second);
        assert_eq!(written[1].header, VnetHdrFields::NONE);
    }
    // The control: the true next segment merges.
    let written = coalesce_all(&mut coalescer(), &[base.build(), next(&|_| {})]);
    assert_eq!(written.len(), 1);
}

#[test]
fn ipv4_ids_must_count_up_only_without_df() {
    let base = Spec {
        df: false,
        ..Spec::tcp4(payload(1000, 1))
    };
    let follower = |id_step: u16, df: bool| {
        Spec {
            seq: base.seq + 1000,
            ip_id: base.ip_id.wrapping_add(id_step),
            df,
            ..base.clone()
        }
        .build()
    };
    let merged = |frames: &[Vec<u8>]| coalesce_all(&mut coalescer(), frames).len() == 1;
    assert!(merged(&[base.build(), follower(1, false)]));
    assert!(!merged(&[base.build(), follower(7, false)]));
    assert!(!merged(&[base.build(), follower(1, true)]), "DF differs");
    let df_base = Spec {
        df: true,
        ..base.clone()
    };
    assert!(
        merged(&[df_base.build(), follower(7, true)]),
        "IDs are free under DF"
    );
}

#[test]
fn frames_gro_would_not_touch_pass_through_unchanged() {
    let mut bad_ip_checksum = Spec::tcp4(payload(500, 1)).build();
    bad_ip_checksum[24] ^= 1;
    let with_ip_options = Spec {
        ipv4_options: vec![1, 1, 1, 0],
        ..Spec::tcp4(payload(500, 1))
    }
    .build();
    let syn = Spec {
        flags: TCP_SYN,
        ..Spec::tcp4(vec![])
    }
    .build();
    let urg = Spec {
        flags: ACK | TCP_URG,
        ..Spec::tcp4(payload(10, 1))
    }
    .build();
    let udp = Spec::udp4(payload(500, 1)).build();
    let mut truncated = Spec::tcp6(payload(500, 1)).build();
    truncated.truncate(60);
    let frames = vec![
        bad_ip_checksum,
        with_ip_options.clone(),
        with_ip_options,
        syn,
        urg,
        udp,
        truncated,
        arp(),
        vec![],
        vec![1, 2, 3],
    ];
    let written = coalesce_all(&mut coalescer(), &frames);
    assert_eq!(written.len(), frames.len());
    for (w, f) in written.iter().zip(&frames) {
        assert_eq!(&w.frame, f);
        assert_eq!(w.header, VnetHdrFields::NONE);
        assert!(!w.contiguous);
    }
}

#[test]
fn psh_ends_a_run_and_a_lone_psh_segment_is_not_copied() {
    let spec = Spec {
        flags: ACK | TCP_PSH,
        ..Spec::tcp4(payload(3000, 1))
    };
    let segs = tcp_segments(&spec, 1000);
    let mut c = coalescer();
    let mut writes = 0;
    for seg in &segs {
        c.push(seg, |w| {
            writes += 1;
            assert_eq!(w.segments(), 3);
        });
    }
    assert_eq!(writes, 1, "emitted as soon as PSH arrived");
    assert!(!c.has_pending());

    let lone = Spec {
        flags: ACK | TCP_PSH,
        ..Spec::tcp4(payload(100, 2))
    }
    .build();
    let written = coalesce_all(&mut coalescer(), std::slice::from_ref(&lone));
    assert!(!written[0].contiguous, "passed through, never staged");
    assert_eq!(written[0].frame, lone);
}

#[test]
fn a_new_flow_replaces_the_pending_one() {
    let a = Spec::tcp4(payload(3000, 1));
    let b = Spec {
        src_port: 40002,
        ..Spec::tcp4(payload(3000, 2))
    };
    let mut frames = tcp_segments(&a, 1000);
    frames.truncate(2);
    frames.extend(tcp_segments(&b, 1000));
    let written = coalesce_all(&mut coalescer(), &frames);
    let counts: Vec<usize> = written.iter().map(|w| w.segments).collect();
    assert_eq!(counts, vec![2, 3]);
    assert_eq!(completed(&written[1]), b.build());
}

#[test]
fn super_frames_stop_at_the_ip_length_limit_and_the_staging_size() {
    // Two back-to-back super-frames of 30 segments: 60 segments are more than 65535 bytes of IPv4.
    let first = Spec::tcp4(payload(30 * 1448, 1));
    let second = Spec {
        seq: first.seq + 30 * 1448,
        ip_id: first.ip_id + 30,
        ..Spec::tcp4(payload(30 * 1448, 2))
    };
    let mut segs = tcp_segments(&first, 1448);
    segs.extend(tcp_segments(&second, 1448));
    let written = coalesce_all(&mut coalescer(), &segs);
    assert!(written.len() >= 2);
    let mut joined = Vec::new();
    for w in &written {
        assert!(w.frame.len() - 14 <= 65_535);
        let c = check_valid(&completed(w));
        joined.extend_from_slice(&w.frame[c.payload_at..]);
    }
    assert_eq!(joined, [first.payload, second.payload].concat());
    assert_eq!(written.iter().map(|w| w.segments).sum::<usize>(), 60);

    // A small staging buffer merges less but loses nothing.
    let mut small = Coalescer::new(vec![0u8; 4000], VnetHdrSize::Mergeable);
    let written = coalesce_all(&mut small, &segs);
    assert!(written.iter().all(|w| w.segments <= 2));
    assert_eq!(written.iter().map(|w| w.segments).sum::<usize>(), 60);
    let mut tiny = Coalescer::new(vec![0u8; 100], VnetHdrSize::Mergeable);
    let written = coalesce_all(&mut tiny, &segs);
    assert_eq!(written.len(), 60);
    assert!(written.iter().zip(&segs).all(|(w, s)| &w.frame == s));
}

#[test]
fn checksum_verification_keeps_a_corrupt_segment_out() {
    let spec = Spec::tcp4(payload(3000, 1));
    let mut segs = tcp_segments(&spec, 1000);
    let last = segs[1].len() - 1;
    segs[1][last] ^= 0x55;
    let verified = coalesce_all(&mut coalescer().verify_tcp_checksums(true), &segs);
    let counts: Vec<usize> = verified.iter().map(|w| w.segments).collect();
    assert_eq!(counts, vec![1, 1, 1]);
    assert_eq!(
        verified[1].frame, segs[1],
        "the bad segment is left for the kernel to drop"
    );
    let trusted = coalesce_all(&mut coalescer(), &segs);
    assert_eq!(trusted.len(), 1);
}

#[test]
fn cwr_on_the_first_segment_marks_the_super_frame_ecn() {
    let spec = Spec {
        flags: ACK | TCP_CWR | ECE,
        ..Spec::tcp6(payload(3000, 1))
    };
    let segs = tcp_segments(&spec, 1000);
    let written = coalesce_all(&mut coalescer(), &segs);
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].header.gso_type, VNET_GSO_TCPV6 | VNET_GSO_ECN);
    assert_eq!(completed(&written[0]), spec.build());
}

#[test]
fn legacy_header_size_is_written_too() {
    let spec = Spec::tcp4(payload(1800, 1));
    let segs = tcp_segments(&spec, 1000);
    let mut c = Coalescer::new(vec![0u8; COALESCE_STAGING_LEN], VnetHdrSize::Legacy);
    let mut got = None;
    for seg in &segs {
        c.push(seg, |w| {
            let joined = w.contiguous().unwrap();
            let hdr = VnetHdr::new_checked(joined, VnetHdrSize::Legacy).unwrap();
            assert_eq!(hdr.frame(), w.frame());
            got = Some(hdr.fields());
        });
    }
    let hdr = got.expect("the short last segment flushes");
    assert_eq!(
        (hdr.gso(), hdr.gso_size, hdr.hdr_len, hdr.csum_start),
        (GsoType::TcpV4, 1000, spec.headers_len() as u16, 34)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any mix of segments of two flows and junk, shuffled: whatever comes out is valid, nothing is
    /// lost or duplicated, and each flow's payload stays in order.
    #[test]
    fn coalescing_loses_nothing_and_keeps_flows_in_order(
        order in proptest::collection::vec(0u8..3, 1..40),
        gso in 200u16..1500,
        ipv6 in any::<bool>(),
        verify in any::<bool>(),
    ) {
        let mk = |port: u16, seed: u8| Spec {
            src_port: port,
            ipv6,
            ..Spec::tcp4(payload(40 * usize::from(gso), seed))
        };
        let flows = [mk(1000, 1), mk(2000, 2)];
        let segs: Vec<Vec<Vec<u8>>> = flows.iter().map(|s| tcp_segments(s, gso)).collect();
        let mut next = [0usize; 2];
        let mut frames = Vec::new();
        for pick in order {
            match pick {
                2 => frames.push(arp()),
                f => {
                    let f = usize::from(f);
                    if let Some(seg) = segs[f].get(next[f]) {
                        frames.push(seg.clone());
                        next[f] += 1;
                    }
                }
            }
        }
        let written = coalesce_all(&mut coalescer().verify_tcp_checksums(verify), &frames);
        prop_assert_eq!(written.iter().map(|w| w.segments).sum::<usize>(), frames.len());
        let mut joined = [Vec::new(), Vec::new()];
        for w in &written {
            if w.frame == arp() {
                continue;
            }
            let frame = completed(w);
            let c = check_valid(&frame);
            let port = u16::from_be_bytes([frame[c.l4], frame[c.l4 + 1]]);
            joined[usize::from(port == 2000)].extend_from_slice(&frame[c.payload_at..]);
        }
        for f in 0..2 {
            let expected = &flows[f].payload[..next[f] * usize::from(gso)];
            prop_assert_eq!(&joined[f][..], expected);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fuzz seeds and frames captured from a real kernel.

/// The `offload` fuzz target reads a 12-byte virtio-net header followed by the Ethernet frame,
/// exactly one TAP read.
fn tap_read(hdr: &VnetHdrFields, frame: &[u8]) -> Vec<u8> {
    let mut read = vec![0u8; VNET_HDR_LEN_MRG + frame.len()];
    let mut view = VnetHdr::new_checked(&mut read[..], VnetHdrSize::Mergeable).unwrap();
    view.emit(hdr);
    view.frame_mut().copy_from_slice(frame);
    read
}

fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let tcp4 = Spec {
        flags: ACK | TCP_PSH,
        ..Spec::tcp4(payload(3000, 1))
    };
    let tcp6_vlan = Spec {
        vlan: Some(0x000a),
        flags: ACK | TCP_CWR,
        ..Spec::tcp6(payload(2500, 2))
    };
    let udp4 = Spec::udp4(payload(2000, 3));
    let udp6 = Spec {
        ipv6: true,
        ..Spec::udp4(payload(1500, 4))
    };
    let plain = Spec::tcp4(payload(200, 5));
    let with_options = Spec {
        ipv4_options: vec![1, 1, 1, 0],
        df: false,
        ..Spec::tcp4(payload(1200, 6))
    };
    let (h1, f1) = tcp4.build_partial(Some(1000));
    let (h2, f2) = tcp6_vlan.build_partial(Some(700));
    let (h3, f3) = udp4.build_partial(Some(600));
    let (h4, f4) = udp6.build_partial(Some(500));
    let (h5, f5) = plain.build_partial(None);
    let (h6, f6) = with_options.build_partial(Some(500));
    vec![
        ("tcp4-psh", tap_read(&h1, &f1)),
        ("tcp6-vlan-cwr", tap_read(&h2, &f2)),
        ("udp4-uso", tap_read(&h3, &f3)),
        ("udp6-uso", tap_read(&h4, &f4)),
        ("plain-needs-csum", tap_read(&h5, &f5)),
        ("tcp4-ip-options", tap_read(&h6, &f6)),
        ("arp", tap_read(&VnetHdrFields::NONE, &arp())),
    ]
}

/// Keeps fuzz/corpus/offload/seed-* equal to `fuzz_seeds()`. Regenerate with
/// `MESHD_WRITE_FUZZ_SEEDS=1 cargo test --lib frames::tests::offload_fuzz_seeds_are_current`.
#[test]
fn offload_fuzz_seeds_are_current() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/offload");
    for (name, bytes) in fuzz_seeds() {
        let hdr = VnetHdr::new_checked(&bytes[..], VnetHdrSize::Mergeable).unwrap();
        exercise(&hdr.fields(), hdr.frame());
        let path = corpus.join(format!("seed-{name}"));
        crate::test_support::check_or_write_fuzz_seed(&path, &bytes);
    }
}

/// fuzz/corpus/offload/seed-kernel-* are TAP reads captured from Linux 6.18 (iperf3 through a
/// bridge into a TAP with TSO4/TSO6/USO and a 12-byte header): they must segment cleanly.
#[test]
fn frames_captured_from_linux_segment_cleanly() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/offload");
    let mut seen = 0;
    for entry in std::fs::read_dir(&corpus).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().contains("seed-kernel-") {
            continue;
        }
        let read = std::fs::read(&path).unwrap();
        let view = VnetHdr::new_checked(&read[..], VnetHdrSize::Mergeable).unwrap();
        let hdr = view.fields();
        assert!(
            hdr.needs_csum() && hdr.gso() != GsoType::None,
            "{}",
            path.display()
        );
        let segments = segment_all(&hdr, view.frame()).unwrap();
        assert!(segments.len() > 1);
        let mut joined = Vec::new();
        for seg in &segments {
            let c = check_valid(seg);
            assert!(seg.len() - c.payload_at <= usize::from(hdr.gso_size));
            joined.extend_from_slice(&seg[c.payload_at..]);
        }
        assert_eq!(joined, view.frame()[usize::from(hdr.hdr_len)..]);
        let written = coalesce_all(&mut coalescer(), &segments);
        if hdr.gso() != GsoType::UdpL4 {
            assert_eq!(written.len(), 1);
            assert_eq!(written[0].header.gso_size, hdr.gso_size);
            assert_eq!(written[0].header.hdr_len, hdr.hdr_len);
            assert_eq!(written[0].header.csum_start, hdr.csum_start);
            assert_eq!(
                written[0].frame,
                view.frame(),
                "bit-identical to what Linux produced"
            );
        }
        seen += 1;
    }
    assert!(seen >= 2);
}

// ---------------------------------------------------------------------------------------------
// Microbenchmarks: `cargo test --release --lib frames::tests::bench -- --ignored --nocapture`.

fn time_per_iteration(iterations: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = std::time::Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iterations)
}

#[test]
#[ignore = "microbenchmark; run in release"]
fn bench_segment_64k_at_1350() {
    let spec = Spec::tcp4(payload(65_535 - 20 - 32, 7));
    let (hdr, frame) = spec.build_partial(Some(1350));
    let mut out = vec![0u8; 1500];
    let mut count = 0;
    let ns = time_per_iteration(20_000, || {
        let mut segmenter = Segmenter::new(&hdr, std::hint::black_box(&frame)).unwrap();
        count = 0;
        while let Some(len) = segmenter.next_into(&mut out).unwrap() {
            std::hint::black_box(&out[..len]);
            count += 1;
        }
    });
    println!(
        "segment 64 KiB TCPv4 super-frame at gso_size 1350: {count} segments, {ns:.0} ns per \
         super-frame, {:.1} ns per segment, {:.2} GB/s",
        ns / f64::from(count),
        frame.len() as f64 / ns
    );
    let sum = time_per_iteration(20_000, || {
        std::hint::black_box(
            Checksum::new()
                .add_bytes(std::hint::black_box(&frame))
                .fold(),
        );
    });
    println!(
        "checksum over 64 KiB: {sum:.0} ns, {:.2} GB/s",
        frame.len() as f64 / sum
    );
}

#[test]
#[ignore = "microbenchmark; run in release"]
fn bench_coalesce_45_segments() {
    let spec = Spec::tcp4(payload(45 * 1350, 8));
    let segs = tcp_segments(&spec, 1350);
    assert_eq!(segs.len(), 45);
    for verify in [false, true] {
        let mut c = coalescer().verify_tcp_checksums(verify);
        let mut writes = 0;
        let ns = time_per_iteration(20_000, || {
            writes = 0;
            for seg in &segs {
                c.push(std::hint::black_box(seg), |w| {
                    std::hint::black_box(w.frame());
                    writes += 1;
                });
            }
            c.flush(|_| writes += 1);
        });
        assert_eq!(writes, 1);
        println!(
            "coalesce 45 x 1350-byte TCPv4 segments (verify checksums: {verify}): {ns:.0} ns per \
             batch, {:.1} ns per segment",
            ns / 45.0
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Partial checksums carried across the tunnel.

fn segment_partially(hdr: &VnetHdrFields, frame: &[u8]) -> (Vec<Vec<u8>>, Option<PartialChecksum>) {
    let mut segmenter = Segmenter::new(hdr, frame)
        .unwrap()
        .leave_checksums_partial();
    let at = segmenter.partial_checksum();
    let mut out = vec![0u8; 70_000];
    let mut segments = Vec::new();
    while let Some(len) = segmenter.next_into(&mut out).unwrap() {
        segments.push(out[..len].to_vec());
    }
    (segments, at)
}

fn coalesce_partial(frames: &[Vec<u8>], at: Option<PartialChecksum>) -> Vec<Written> {
    coalesce_with(&mut coalescer(), frames, at)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Leaving checksums partial changes nothing but the checksum field: completed (by the
    /// receiver, or by its kernel from the `NEEDS_CSUM` header the coalescer writes), every
    /// segment is the one the full-checksum mode makes, and what reaches the TAP completes to
    /// the original frames.
    #[test]
    fn partial_segments_complete_to_the_full_ones((spec, gso) in spec_strategy()) {
        let (hdr, frame) = spec.build_partial(Some(gso));
        let full = segment_all(&hdr, &frame).unwrap();
        let (partial, at) = segment_partially(&hdr, &frame);
        let at = at.expect("a super-frame's segments can stay partial");
        prop_assert_eq!(partial.len(), full.len());
        for (p, f) in partial.iter().zip(&full) {
            prop_assert_eq!(PartialChecksum::of(p), Some(at));
            let mut completed_here = p.clone();
            at.complete(&mut completed_here);
            prop_assert_eq!(&completed_here, f);
        }
        let written = coalesce_partial(&partial, Some(at));
        let through_tap: Vec<Vec<u8>> = written.iter().map(completed).collect();
        let expected = coalesce_all(&mut coalescer(), &full);
        prop_assert_eq!(through_tap, expected.iter().map(completed).collect::<Vec<_>>());
        for w in &written {
            prop_assert!(w.header.needs_csum(), "a partial frame never leaves as complete");
        }
    }
}

#[test]
fn a_plain_partial_frame_stays_partial_only_at_the_tcp_or_udp_field() {
    for spec in [Spec::tcp4(payload(300, 3)), Spec::udp4(payload(300, 4))] {
        let (hdr, frame) = spec.build_partial(None);
        let (out, at) = segment_partially(&hdr, &frame);
        assert_eq!(out, vec![frame.clone()], "copied as the kernel left it");
        let at = at.expect("the kernel's own partial state");
        assert_eq!(usize::from(at.start), usize::from(hdr.csum_start));
        let mut done = out[0].clone();
        at.complete(&mut done);
        assert_eq!(done, spec.build());
    }
    // Complete already, or a checksum elsewhere than TCP/UDP's field: full checksums.
    let complete = Spec::tcp4(payload(300, 5)).build();
    let (out, at) = segment_partially(&VnetHdrFields::NONE, &complete);
    assert_eq!((out, at), (vec![complete], None));
    let (mut hdr, frame) = Spec::tcp4(payload(300, 6)).build_partial(None);
    hdr.csum_offset = 6;
    let (_, at) = segment_partially(&hdr, &frame);
    assert_eq!(at, None);
}

#[test]
fn partial_frames_that_pass_through_or_stay_alone_ask_the_kernel_for_the_checksum() {
    // A lone TCP segment (staged, then flushed alone) and a UDP datagram (passed through).
    for spec in [Spec::tcp4(payload(500, 7)), Spec::udp4(payload(500, 8))] {
        let (hdr, frame) = spec.build_partial(Some(1000));
        let (partial, at) = segment_partially(&hdr, &frame);
        let written = coalesce_partial(&partial, at);
        assert_eq!(written.len(), 1);
        let at = at.unwrap();
        assert_eq!(
            (written[0].header.csum_start, written[0].header.csum_offset),
            (at.start, at.offset)
        );
        assert_eq!(written[0].header.gso_type, VNET_GSO_NONE);
        assert_eq!(completed(&written[0]), spec.build());
    }
    // Complete frames still pass with the all-zero header.
    let udp = Spec::udp4(payload(50, 9)).build();
    let written = coalesce_partial(std::slice::from_ref(&udp), None);
    assert_eq!(written[0].header, VnetHdrFields::NONE);
}

#[test]
fn only_whole_tcp_or_udp_segments_have_a_partial_checksum_place() {
    assert_eq!(PartialChecksum::of(&arp()), None);
    assert_eq!(PartialChecksum::of(&[]), None);
    let tcp = Spec::tcp4(payload(10, 1)).build();
    assert_eq!(
        PartialChecksum::of(&tcp),
        Some(PartialChecksum {
            start: 34,
            offset: 16
        })
    );
    // Padding behind the IP packet is not a segment.
    let mut padded = tcp.clone();
    padded.extend_from_slice(&[0; 4]);
    assert_eq!(PartialChecksum::of(&padded), None);
}
