//! Too big: the path MTU (2 bytes, big-endian) and the largest frame the path carries (2 bytes),
//! then one TAP read (a 12-byte virtio-net header and the Ethernet frame). Invariants: no panic;
//! an answer from `too_big_reply` fits its `out` (a full 1518-byte buffer, and one cut to the
//! frame limit) and is a well-formed ICMP answer to the frame: swapped MACs and addresses, tag
//! kept, valid checksums, the MTU, a prefix of the original within 576 (IPv4) or 1280 (IPv6)
//! bytes. Every fragment from `Ipv4Fragmenter` fits the frame limit and has a valid header, and
//! the fragments' data joins to the original's at contiguous offsets. `Segmenter::with_max_frame`
//! keeps TCP segments within the limit and their payloads join to the super-frame's. The
//! `IpFrame` view the three read through agrees with their verdicts: a frame it refuses is neither
//! answered nor fragmented, for the reason its error maps to.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshd::core::frames::{too_big_reply, Ipv4Fragmenter, NoReply, OffloadError, Segmenter};
use meshd::wire::{Checksum, GsoType, IpFrame, VnetHdr, VnetHdrFields, VnetHdrSize};

fuzz_target!(|bytes: &[u8]| {
    let Some((limits, read)) = bytes.split_first_chunk::<4>() else {
        return;
    };
    let mtu = u16::from_be_bytes([limits[0], limits[1]]);
    let max_frame = usize::from(u16::from_be_bytes([limits[2], limits[3]]));
    let Ok(view) = VnetHdr::new_checked(read, VnetHdrSize::Mergeable) else {
        return;
    };
    let frame = view.frame();
    check_view(frame, mtu, max_frame);
    check_reply(frame, mtu, 1518);
    check_reply(frame, mtu, max_frame.min(1518));
    check_fragments(frame, max_frame);
    check_segments(&view.fields(), frame, max_frame);
});

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn l3_of(frame: &[u8]) -> usize {
    if matches!(frame[12..14], [0x81, 0x00] | [0x88, 0xa8]) {
        18
    } else {
        14
    }
}

/// A frame the view refuses gets the refusal its error maps to from both the answer and the
/// fragmenter; one it accepts is never refused as not IP.
fn check_view(frame: &[u8], mtu: u16, max_frame: usize) {
    let mut out = [0u8; 1518];
    let reply = too_big_reply(frame, mtu, &mut out);
    let fragments = Ipv4Fragmenter::new(frame, max_frame).map(|f| f.fragment_count());
    match IpFrame::new_checked(frame) {
        Err(e) => {
            assert_eq!(reply, Err(NoReply::from(e)));
            assert_eq!(fragments.unwrap_err(), NoReply::from(e));
        }
        Ok(ip) => {
            assert_ne!(reply, Err(NoReply::NotIp));
            assert_eq!(
                reply == Err(NoReply::FragmentsAllowed),
                !ip.is_ipv6() && !ip.dont_fragment()
            );
            if ip.is_ipv6() {
                assert_eq!(fragments.unwrap_err(), NoReply::NotIp);
            }
        }
    }
}

fn check_reply(frame: &[u8], mtu: u16, out_len: usize) {
    let mut buffer = [0u8; 1518];
    let out = &mut buffer[..out_len];
    let Ok(len) = too_big_reply(frame, mtu, out) else {
        return;
    };
    assert!(len <= out_len);
    let reply = &out[..len];
    let l2 = l3_of(frame);
    assert_eq!(l3_of(reply), l2);
    assert_eq!(reply[..6], frame[6..12]);
    assert_eq!(reply[6..12], frame[..6]);
    assert_eq!(reply[12..l2], frame[12..l2]);
    assert_eq!(reply[0] & 1, 0, "never to a group MAC");
    let original = &frame[l2..];
    let ip = &reply[l2..];
    let (icmp, header_len, packet_len) = if be16(reply, l2 - 2) == 0x0800 {
        assert_eq!(ip[0], 0x45);
        assert_eq!(usize::from(be16(ip, 2)), ip.len());
        assert!(ip.len() <= 576);
        assert_eq!(ip[9], 1);
        assert!(Checksum::new().add_bytes(&ip[..20]).is_valid());
        assert_eq!(ip[12..16], original[16..20]);
        assert_eq!(ip[16..20], original[12..16]);
        assert_ne!(
            be16(original, 6) & 0x4000,
            0,
            "only DF datagrams are answered"
        );
        assert_eq!(be16(original, 6) & 0x1fff, 0, "never a later fragment");
        let icmp = &ip[20..];
        assert_eq!(icmp[..2], [3, 4]);
        assert_eq!(be16(icmp, 6), mtu);
        assert!(mtu >= 68);
        assert!(Checksum::new().add_bytes(icmp).is_valid());
        (
            icmp,
            usize::from(original[0] & 15) * 4,
            usize::from(be16(original, 2)),
        )
    } else {
        assert_eq!(be16(reply, l2 - 2), 0x86dd);
        assert_eq!(ip[0] >> 4, 6);
        assert_eq!(usize::from(be16(ip, 4)), ip.len() - 40);
        assert!(ip.len() <= 1280);
        assert_eq!(ip[6], 58);
        assert_eq!(ip[8..24], original[24..40]);
        assert_eq!(ip[24..40], original[8..24]);
        assert_ne!(ip[24], 0xff, "never to a multicast address");
        let icmp = &ip[40..];
        assert_eq!(icmp[..2], [2, 0]);
        assert_eq!(icmp[4..8], u32::from(mtu).to_be_bytes());
        assert!(mtu >= 1280);
        let sum = Checksum::new()
            .add_bytes(&ip[8..40])
            .add_u32(icmp.len() as u32)
            .add_u16(58)
            .add_bytes(icmp);
        assert!(sum.is_valid());
        (icmp, 40, 40 + usize::from(be16(original, 4)))
    };
    let quoted = &icmp[8..];
    assert!(quoted.len() <= packet_len);
    assert!(quoted.len() >= packet_len.min(header_len + 8));
    assert_eq!(quoted, &original[..quoted.len()]);
}

fn check_fragments(frame: &[u8], max_frame: usize) {
    let Ok(mut fragmenter) = Ipv4Fragmenter::new(frame, max_frame) else {
        return;
    };
    let l3 = l3_of(frame);
    let original = &frame[l3..];
    let header_len = usize::from(original[0] & 15) * 4;
    let data = &original[header_len..usize::from(be16(original, 2))];
    let base = usize::from(be16(original, 6) & 0x1fff) * 8;
    let mut out = vec![0u8; max_frame];
    let mut joined = Vec::with_capacity(data.len());
    let mut count = 0;
    let mut last_mf = false;
    while let Some(len) = fragmenter.next_into(&mut out) {
        assert!(len <= max_frame);
        let fragment = &out[..len];
        assert_eq!(fragment[..l3], frame[..l3]);
        let ip = &fragment[l3..];
        let ihl = usize::from(ip[0] & 15) * 4;
        assert!(ihl >= 20 && ihl <= header_len);
        assert_eq!(usize::from(be16(ip, 2)), ip.len());
        assert!(Checksum::new().add_bytes(&ip[..ihl]).is_valid());
        assert_eq!(ip[4..6], original[4..6]);
        assert_eq!(ip[12..20], original[12..20]);
        let flags = be16(ip, 6);
        assert_eq!(flags & 0x4000, 0);
        assert_eq!(usize::from(flags & 0x1fff) * 8, base + joined.len());
        if count > 0 {
            assert!(last_mf, "MF on every fragment but the last");
        }
        last_mf = flags & 0x2000 != 0;
        joined.extend_from_slice(&ip[ihl..]);
        count += 1;
    }
    assert_eq!(count, fragmenter.fragment_count());
    assert_eq!(last_mf, be16(original, 6) & 0x2000 != 0);
    assert_eq!(joined, data);
}

fn check_segments(hdr: &VnetHdrFields, frame: &[u8], max_frame: usize) {
    let Ok(mut segmenter) = Segmenter::with_max_frame(hdr, frame, max_frame) else {
        return;
    };
    let gso = hdr.gso() != GsoType::None;
    let tcp = matches!(hdr.gso(), GsoType::TcpV4 | GsoType::TcpV6);
    let headers = segmenter.header_len();
    let mut out = [0u8; 9216];
    let mut payload = Vec::with_capacity(frame.len());
    loop {
        match segmenter.next_into(&mut out) {
            Ok(Some(len)) => {
                assert!(!tcp || len <= max_frame, "TCP segments fit the path");
                if gso {
                    assert_eq!(out[..12], frame[..12]);
                    payload.extend_from_slice(&out[headers..len]);
                }
            }
            Ok(None) => break,
            // Fixed jumbo-sized buffers: larger segments are refused without being consumed.
            Err(e) => {
                assert!(matches!(e, OffloadError::OutputTooSmall { needed } if needed > out.len()));
                return;
            }
        }
    }
    if gso {
        assert_eq!(payload, frame[headers..]);
    }
}
