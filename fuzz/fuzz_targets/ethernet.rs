//! Inner Ethernet frame parser and MAC address text form: no panics, acceptance exactly as documented,
//! setters reproduce the parsed frame, and `MacAddr`'s Display/FromStr round-trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshd::wire::{
    EthernetFrame, MacAddr, ETHERNET_HEADER_LEN, ETHERTYPE_QINQ, ETHERTYPE_VLAN, VLAN_TAG_LEN,
};

fuzz_target!(|bytes: &[u8]| {
    check_frame(bytes);
    check_mac_bytes(bytes);
    check_mac_text(bytes);
});

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
