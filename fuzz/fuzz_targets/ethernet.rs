//! Inner Ethernet frame parser, the IP view on top of it, and MAC address text form: no panics,
//! acceptance exactly as documented, setters reproduce the parsed frame, and `MacAddr`'s
//! Display/FromStr round-trip. `IpFrame` accepts exactly what a reference parser written out here
//! from the header formats accepts, with the same error and offsets, and so does its TCP/UDP layout.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshd::wire::{
    source_claim, EthernetFrame, IpError, IpFrame, MacAddr, SourceClaim, ETHERNET_HEADER_LEN,
    ETHERTYPE_QINQ, ETHERTYPE_VLAN, VLAN_TAG_LEN,
};

fuzz_target!(|bytes: &[u8]| {
    check_frame(bytes);
    check_source_claim(bytes);
    check_ip(bytes);
    check_mac_bytes(bytes);
    check_mac_text(bytes);
});

/// The layer-2 guard's view: an IP claim only for frames `IpFrame` accepts, an ARP claim only for
/// ARP frames, and never a panic.
fn check_source_claim(bytes: &[u8]) {
    match source_claim(bytes) {
        SourceClaim::V4(_) | SourceClaim::V6 { .. } => assert!(IpFrame::new_checked(bytes).is_ok()),
        SourceClaim::Arp(_) => assert!(EthernetFrame::new_checked(bytes)
            .is_ok_and(|f| f.inner_ethertype() == Some(meshd::wire::ETHERTYPE_ARP))),
        SourceClaim::NoAddress => assert!(IpFrame::new_checked(bytes).is_err()),
        SourceClaim::Malformed => {}
    }
}

fn check_frame(bytes: &[u8]) {
    let Ok(frame) = EthernetFrame::new_checked(bytes) else {
        assert!(bytes.len() < ETHERNET_HEADER_LEN);
        return;
    };
    assert!(bytes.len() >= ETHERNET_HEADER_LEN);
    let tagged = matches!(frame.ethertype(), ETHERTYPE_VLAN | ETHERTYPE_QINQ)
        && bytes.len() >= ETHERNET_HEADER_LEN + VLAN_TAG_LEN;
    assert_eq!(frame.vlan_id().is_some(), tagged);
    assert!(frame.vlan_id().is_none_or(|id| id < 4096));
    assert_eq!(frame.payload().len(), bytes.len() - ETHERNET_HEADER_LEN);

    let mut emitted = vec![0u8; bytes.len()];
    let mut copy = EthernetFrame::new_checked(&mut emitted[..]).unwrap();
    copy.set_dst(frame.dst());
    copy.set_src(frame.src());
    copy.set_ethertype(frame.ethertype());
    copy.payload_mut().copy_from_slice(frame.payload());
    assert_eq!(emitted, bytes);
}

fn check_mac_bytes(bytes: &[u8]) {
    let Some(mac) = MacAddr::from_slice(bytes) else {
        assert!(bytes.len() < 6);
        return;
    };
    let text = mac.to_string();
    assert_eq!(text.len(), 17);
    assert_eq!(text, text.to_lowercase());
    assert_eq!(text.parse::<MacAddr>(), Ok(mac));
    assert_eq!(text.to_uppercase().parse::<MacAddr>(), Ok(mac));
    assert_eq!(mac.is_multicast(), !mac.is_unicast());
    assert!(!mac.is_broadcast() || mac.is_multicast());
}

fn check_mac_text(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok(mac) = text.parse::<MacAddr>() {
        assert_eq!(mac.to_string(), text.to_ascii_lowercase());
    }
}

fn be16(bytes: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([bytes[at], bytes[at + 1]]))
}

/// IP header start and end, packet end and version by the formats: at most one tag, IPv4 IHL >= 5
/// with its options present and a total length covering them, IPv6's fixed header, the length
/// field within the bytes.
fn reference_ip(b: &[u8]) -> Result<(usize, usize, usize, bool), IpError> {
    if b.len() < 14 {
        return Err(IpError::Truncated);
    }
    let l3 = if matches!(be16(b, 12), 0x8100 | 0x88a8) { 18 } else { 14 };
    if b.len() < l3 {
        return Err(IpError::Truncated);
    }
    let ipv6 = match be16(b, l3 - 2) {
        0x0800 => false,
        0x86dd => true,
        _ => return Err(IpError::NotIp),
    };
    if b.len() < l3 + if ipv6 { 40 } else { 20 } {
        return Err(IpError::Truncated);
    }
    if b[l3] >> 4 != if ipv6 { 6 } else { 4 } {
        return Err(IpError::BadVersion);
    }
    let header = if ipv6 { 40 } else { usize::from(b[l3] & 15) * 4 };
    if header < 20 {
        return Err(IpError::BadHeaderLen);
    }
    if b.len() < l3 + header {
        return Err(IpError::Truncated);
    }
    let len = if ipv6 { 40 + be16(b, l3 + 4) } else { be16(b, l3 + 2) };
    if len < header || l3 + len > b.len() {
        return Err(IpError::BadLength);
    }
    Ok((l3, l3 + header, l3 + len, ipv6))
}

fn check_ip(bytes: &[u8]) {
    let view = IpFrame::new_checked(bytes);
    let (l3, l4, end, ipv6) = match (&view, reference_ip(bytes)) {
        (Err(got), Err(expected)) => {
            assert_eq!(*got, expected);
            return;
        }
        (Ok(_), Ok(expected)) => expected,
        (got, expected) => panic!("view {got:?}, reference {expected:?}"),
    };
    let ip = view.unwrap();
    assert_eq!((ip.l3(), ip.l4(), ip.end(), ip.is_ipv6()), (l3, l4, end, ipv6));
    let protocol = bytes[l3 + if ipv6 { 6 } else { 9 }];
    assert_eq!(ip.protocol(), protocol);
    assert_eq!(ip.packet(), &bytes[l3..end]);
    assert_eq!(ip.payload(), &bytes[l4..end]);
    let (src, dst) = if ipv6 { (l3 + 8, l3 + 24) } else { (l3 + 12, l3 + 16) };
    let width = dst - src;
    assert_eq!(ip.src_addr(), &bytes[src..src + width]);
    assert_eq!(ip.dst_addr(), &bytes[dst..dst + width]);
    let flags = if ipv6 { 0 } else { be16(bytes, l3 + 6) };
    assert_eq!(ip.is_fragment(), flags & 0x3fff != 0);
    assert_eq!(ip.fragment_offset(), (flags & 0x1fff) * 8);
    let layout = ip.layout();
    let expected = match protocol {
        6 if end < l4 + 20 => Err(IpError::Truncated),
        6 if bytes[l4 + 12] >> 4 < 5 => Err(IpError::BadHeaderLen),
        6 => Ok(l4 + usize::from(bytes[l4 + 12] >> 4) * 4),
        17 => Ok(l4 + 8),
        _ => Err(IpError::UnsupportedTransport),
    }
    .and_then(|payload| {
        if payload > end {
            Err(IpError::Truncated)
        } else {
            Ok(payload)
        }
    });
    assert_eq!(layout.map(|l| l.payload), expected);
}
