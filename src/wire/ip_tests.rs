//! Unit and property tests for the Ethernet → IP → TCP/UDP view ([`IpFrame`]) and the EtherType
//! helpers of [`EthernetFrame`]. Frames are built here byte by byte, with offsets written out.

use proptest::prelude::*;

use super::ip::*;
use super::*;

const MACS: [u8; 12] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];

/// Ethernet header with the given tags (TPIDs, outermost first), then `ethertype`.
fn ethernet(tags: &[u16], ethertype: u16) -> Vec<u8> {
    let mut f = MACS.to_vec();
    for (i, tpid) in tags.iter().enumerate() {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&(0x0100 + i as u16).to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn ipv4(tags: &[u16], flags_offset: u16, protocol: u8, options: &[u8], l4: &[u8]) -> Vec<u8> {
    let mut f = ethernet(tags, ETHERTYPE_IPV4);
    let header_len = 20 + options.len();
    f.push(0x40 | (header_len / 4) as u8);
    f.push(0);
    f.extend_from_slice(&((header_len + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&0x1234u16.to_be_bytes());
    f.extend_from_slice(&flags_offset.to_be_bytes());
    f.extend_from_slice(&[64, protocol, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(options);
    f.extend_from_slice(l4);
    f
}

fn ipv6(tags: &[u16], next_header: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = ethernet(tags, ETHERTYPE_IPV6);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    f.extend_from_slice(&[next_header, 64]);
    f.extend((0..16).map(|i| 0xa0 + i));
    f.extend((0..16).map(|i| 0xb0 + i));
    f.extend_from_slice(l4);
    f
}

/// A TCP header with `options` (a multiple of 4 bytes) and `payload` bytes behind it.
fn tcp(options: usize, payload: usize) -> Vec<u8> {
    let mut t = vec![0x9c, 0x40, 0x14, 0x51, 0, 0, 1, 0, 0, 0, 2, 0];
    t.push((((20 + options) / 4) << 4) as u8);
    t.extend_from_slice(&[0x10, 1, 0, 0, 0, 0, 0]);
    t.extend(std::iter::repeat_n(1, options));
    t.extend(std::iter::repeat_n(0x5a, payload));
    t
}

fn udp(payload: usize) -> Vec<u8> {
    let mut u = vec![0x30, 0x39, 0x00, 0x35];
    u.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend(std::iter::repeat_n(0x11, payload));
    u
}

fn check(bytes: &[u8]) -> Result<IpFrame<&[u8]>, IpError> {
    IpFrame::new_checked(bytes)
}

#[test]
fn ipv4_and_ipv6_frames_are_viewed_with_their_offsets() {
    let frame = ipv4(&[], IPV4_FLAG_DF, IPPROTO_TCP, &[1, 1, 1, 0], &tcp(12, 100));
    let ip = check(&frame).unwrap();
    assert_eq!(ip.version(), IpVersion::V4);
    assert!(!ip.is_ipv6());
    assert_eq!((ip.l3(), ip.l4(), ip.end()), (14, 38, frame.len()));
    assert_eq!(ip.header_len(), 24);
    assert_eq!(ip.protocol(), IPPROTO_TCP);
    assert_eq!(ip.packet(), &frame[14..]);
    assert_eq!(ip.payload(), &frame[38..]);
    assert_eq!(ip.addresses(), 26..34);
    assert_eq!(
        (ip.src_addr(), ip.dst_addr()),
        (&[10, 0, 0, 1][..], &[10, 0, 0, 2][..])
    );
    assert_eq!(ip.ident(), 0x1234);
    assert!(ip.dont_fragment() && !ip.more_fragments() && !ip.is_fragment());
    assert_eq!(ip.fragment_offset(), 0);
    assert_eq!(
        ip.layout(),
        Ok(IpLayout {
            l3: 14,
            ipv6: false,
            l4: 38,
            protocol: IPPROTO_TCP,
            payload: 38 + 32,
        })
    );
    assert_eq!(ip.as_bytes(), &frame[..]);

    let frame = ipv6(&[ETHERTYPE_VLAN], IPPROTO_UDP, &udp(30));
    let ip = check(&frame).unwrap();
    assert!(ip.is_ipv6());
    assert_eq!((ip.l3(), ip.l4(), ip.end()), (18, 58, frame.len()));
    assert_eq!(ip.protocol(), IPPROTO_UDP);
    assert_eq!(ip.addresses(), 26..58);
    assert_eq!(ip.src_addr()[0], 0xa0);
    assert_eq!(ip.dst_addr()[15], 0xbf);
    assert_eq!((ip.ident(), ip.flags_and_offset()), (0, 0));
    assert!(!ip.is_fragment());
    let layout = ip.layout().unwrap();
    assert_eq!((layout.l4, layout.payload), (58, 66));
    assert_eq!(layout.addresses(), ip.addresses());
}

#[test]
fn fragment_fields_are_read_from_ipv4() {
    let frame = ipv4(&[], IPV4_FLAG_MF | 185, IPPROTO_UDP, &[], &udp(8));
    let ip = check(&frame).unwrap();
    assert!(ip.more_fragments() && ip.is_fragment() && !ip.dont_fragment());
    assert_eq!(ip.fragment_offset(), 185 * 8);
    let last = ipv4(&[], 3, IPPROTO_UDP, &[], &udp(8));
    assert!(check(&last).unwrap().is_fragment());
}

#[test]
fn one_vlan_tag_of_either_kind_is_looked_through_and_a_second_is_not() {
    for tpid in [ETHERTYPE_VLAN, ETHERTYPE_QINQ] {
        let frame = ipv4(&[tpid], 0, IPPROTO_UDP, &[], &udp(4));
        assert_eq!(check(&frame).unwrap().l3(), 18);
        let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
        assert_eq!(eth.header_len(), 18);
        assert_eq!(eth.inner_ethertype(), Some(ETHERTYPE_IPV4));
        assert_eq!(eth.ip_offset(), Ok((18, IpVersion::V4)));
        // The header length comes from the EtherType alone; the tag itself may be cut off.
        let cut = EthernetFrame::new_checked(&frame[..17]).unwrap();
        assert_eq!(cut.header_len(), 18);
        assert_eq!(cut.inner_ethertype(), None);
        assert_eq!(cut.ip_offset(), Err(IpError::Truncated));
    }
    // QinQ: the inner EtherType is the second tag's TPID, which is not IP.
    let double = ipv4(
        &[ETHERTYPE_QINQ, ETHERTYPE_VLAN],
        0,
        IPPROTO_UDP,
        &[],
        &udp(4),
    );
    assert_eq!(check(&double).unwrap_err(), IpError::NotIp);
    let plain = ipv6(&[], 6, &[]);
    let plain = EthernetFrame::new_checked(&plain[..]).unwrap();
    assert_eq!(plain.header_len(), 14);
    assert_eq!(plain.ip_offset(), Ok((14, IpVersion::V6)));
    for ethertype in [ETHERTYPE_ARP, 0x88cc, 0] {
        let mut frame = ethernet(&[ETHERTYPE_VLAN], ethertype);
        frame.resize(64, 0);
        assert_eq!(check(&frame).unwrap_err(), IpError::NotIp);
    }
}

/// Every proper prefix of a valid frame is refused, with the error for where it ends: inside the
/// Ethernet header, tag or IP header (including options) it is truncated; past the IP header the
/// length field points past the end.
#[test]
fn every_truncation_is_refused_with_the_error_for_where_it_ends() {
    let frames = [
        ipv4(&[], 0, IPPROTO_TCP, &[], &tcp(0, 10)),
        ipv4(
            &[ETHERTYPE_VLAN],
            0,
            IPPROTO_UDP,
            &[7, 7, 4, 0, 0, 0, 0, 1],
            &udp(3),
        ),
        ipv6(&[], IPPROTO_TCP, &tcp(4, 5)),
        ipv6(&[ETHERTYPE_QINQ], IPPROTO_UDP, &udp(0)),
    ];
    for frame in &frames {
        let ip = check(frame).unwrap();
        for len in 0..frame.len() {
            let expected = if len < ip.l4() {
                IpError::Truncated
            } else {
                IpError::BadLength
            };
            assert_eq!(
                check(&frame[..len]).unwrap_err(),
                expected,
                "{len} of {frame:02x?}"
            );
        }
    }
}

/// A transport header cut short by the IP length field (not by the buffer) is truncated too.
#[test]
fn every_truncated_transport_header_is_refused() {
    for (protocol, header, header_len) in [(IPPROTO_TCP, tcp(8, 0), 28), (IPPROTO_UDP, udp(0), 8)] {
        for cut in 0..header_len {
            let v4 = ipv4(&[], 0, protocol, &[], &header[..cut]);
            let v6 = ipv6(&[ETHERTYPE_VLAN], protocol, &header[..cut]);
            for frame in [v4, v6] {
                let ip = check(&frame).unwrap();
                assert_eq!(
                    ip.layout(),
                    Err(IpError::Truncated),
                    "{protocol} cut at {cut}"
                );
                // Padding behind the packet does not count as transport header.
                let mut padded = frame.clone();
                padded.resize(frame.len() + 64, 0xff);
                let ip = check(&padded).unwrap();
                assert_eq!(ip.end(), frame.len());
                assert_eq!(ip.layout(), Err(IpError::Truncated));
            }
        }
    }
}

#[test]
fn bad_header_lengths_versions_and_length_fields_are_refused() {
    let good = ipv4(&[], 0, IPPROTO_UDP, &[1, 1, 1, 1], &udp(40));
    let patched = |at: usize, value: u8| {
        let mut f = good.clone();
        f[at] = value;
        f
    };
    for ihl in 0..5 {
        assert_eq!(
            check(&patched(14, 0x40 | ihl)).unwrap_err(),
            IpError::BadHeaderLen
        );
    }
    // IHL 15 (60 bytes) past a 14 + 36 byte frame cut: options run off the end.
    assert_eq!(
        check(&patched(14, 0x4f)[..14 + 36]).unwrap_err(),
        IpError::Truncated
    );
    for version in [0, 5, 6, 15] {
        assert_eq!(
            check(&patched(14, (version << 4) | 6)).unwrap_err(),
            IpError::BadVersion
        );
    }
    // Total length below the header, and one byte past the frame.
    assert_eq!(check(&patched(17, 23)).unwrap_err(), IpError::BadLength);
    assert!(check(&patched(17, 24)).is_ok());
    let long = (good.len() - 14 + 1) as u16;
    let mut f = good.clone();
    f[16..18].copy_from_slice(&long.to_be_bytes());
    assert_eq!(check(&f).unwrap_err(), IpError::BadLength);

    let v6 = ipv6(&[], IPPROTO_TCP, &tcp(0, 0));
    let mut f = v6.clone();
    f[14] = 0x40;
    assert_eq!(check(&f).unwrap_err(), IpError::BadVersion);
    f = v6.clone();
    f[19] += 1;
    assert_eq!(check(&f).unwrap_err(), IpError::BadLength);

    // TCP data offset below 5, and transports the layout does not describe.
    for offset in 0..5u8 {
        let mut t = tcp(0, 20);
        t[12] = offset << 4;
        let ip_frame = ipv4(&[], 0, IPPROTO_TCP, &[], &t);
        assert_eq!(
            check(&ip_frame).unwrap().layout(),
            Err(IpError::BadHeaderLen)
        );
    }
    for protocol in [IPPROTO_ICMP, IPPROTO_ICMPV6, 0, 255] {
        let ip_frame = ipv4(&[], 0, protocol, &[], &udp(8));
        assert_eq!(
            check(&ip_frame).unwrap().layout(),
            Err(IpError::UnsupportedTransport)
        );
    }
}

/// Extension headers are not walked: the fixed header's next header is the protocol.
#[test]
fn ipv6_extension_headers_are_not_walked() {
    let mut hop_by_hop = vec![IPPROTO_TCP, 0, 5, 2, 0, 0, 1, 0];
    hop_by_hop.extend(tcp(0, 10));
    for next in [0, IPPROTO_IPV6_FRAGMENT, 43, 60] {
        let frame = ipv6(&[], next, &hop_by_hop);
        let ip = check(&frame).unwrap();
        assert_eq!(ip.protocol(), next);
        assert_eq!(ip.payload(), &hop_by_hop[..]);
        assert_eq!(ip.layout(), Err(IpError::UnsupportedTransport));
    }
}

#[test]
fn error_labels_are_distinct() {
    use IpError::*;
    let all = [
        Truncated,
        NotIp,
        BadVersion,
        BadHeaderLen,
        BadLength,
        UnsupportedTransport,
    ];
    let labels: std::collections::HashSet<_> = all.iter().map(|e| e.as_str()).collect();
    assert_eq!(labels.len(), all.len());
}

proptest! {
    /// Any bytes: no panic, and what is accepted satisfies the view's invariants.
    #[test]
    fn arbitrary_frames_never_panic_and_accepted_ones_are_consistent(
        mut bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ethertype in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x8100), Just(0x88a8), any::<u16>()],
        inner in prop_oneof![Just(0x0800u16), Just(0x86dd), any::<u16>()],
    ) {
        if bytes.len() >= 18 {
            bytes[12..14].copy_from_slice(&ethertype.to_be_bytes());
            bytes[16..18].copy_from_slice(&inner.to_be_bytes());
        }
        let Ok(ip) = IpFrame::new_checked(&bytes[..]) else {
            return Ok(());
        };
        prop_assert!(ip.l3() == 14 || ip.l3() == 18);
        prop_assert!(ip.l3() + 20 <= ip.l4() && ip.l4() <= ip.end() && ip.end() <= bytes.len());
        let version = bytes[ip.l3()] >> 4;
        prop_assert_eq!(version, if ip.is_ipv6() { 6 } else { 4 });
        prop_assert_eq!(ip.packet().len(), ip.end() - ip.l3());
        prop_assert_eq!(ip.src_addr().len(), ip.dst_addr().len());
        if let Ok(layout) = ip.layout() {
            prop_assert!(layout.l4 == ip.l4() && layout.payload <= ip.end());
            prop_assert!(layout.protocol == IPPROTO_TCP || layout.protocol == IPPROTO_UDP);
        }
    }
}

/// The ethernet fuzz target's IP seeds are accepted whole, so the fuzzer starts inside the view.
#[test]
fn the_ethernet_fuzz_seeds_with_ip_are_accepted() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/ethernet");
    let tcp = std::fs::read(corpus.join("seed-ipv4-tcp-vlan")).unwrap();
    let ip = IpFrame::new_checked(&tcp[..]).unwrap();
    assert_eq!((ip.l3(), ip.header_len(), ip.end()), (18, 24, tcp.len()));
    assert_eq!(ip.layout().unwrap().payload, tcp.len() - 5);
    let udp = std::fs::read(corpus.join("seed-ipv6-udp-padded")).unwrap();
    let ip = IpFrame::new_checked(&udp[..]).unwrap();
    assert_eq!(ip.end(), udp.len() - 6);
    assert_eq!(ip.layout().unwrap().payload, ip.end() - 4);
}
