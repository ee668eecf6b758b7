//! Tests for the too-big answers and the IPv4 fragmenter, and the `toobig` fuzz seed check. Frames
//! are built and replies parsed back here with a word-by-word checksum and offsets written out by
//! hand, never with the code under test.

use proptest::prelude::*;

use super::*;
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
/// `MESHD_WRITE_FUZZ_SEEDS=1 cargo test --lib frames::too_big_tests::toobig_fuzz_seeds_are_current`.
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
        crate::test_support::check_or_write_fuzz_seed(&corpus.join(format!("seed-{name}")), &bytes);
    }
}
