//! Unit and property tests for the wire views, plus the check that keeps fuzz/corpus seeds in sync with
//! the format.

use proptest::prelude::*;

use super::*;

// The tests use fixed-size samples: an initiation with an 8-byte payload and an empty response.
const NOISE_INIT_LEN: usize = NOISE_INIT_OVERHEAD + 8;
const NOISE_RESPONSE_LEN: usize = NOISE_RESPONSE_OVERHEAD;
const HANDSHAKE_INIT_LEN: usize = handshake_init_len(8);
const HANDSHAKE_RESPONSE_LEN: usize = handshake_response_len(0);

fn sample_init(sender_index: u32, noise: &[u8; NOISE_INIT_LEN], mac1: &[u8; MAC_LEN]) -> Vec<u8> {
    let mut buf = vec![0xee; HANDSHAKE_INIT_LEN];
    let mut message = HandshakeInit::new_emit(&mut buf[..]).unwrap();
    message.set_sender_index(sender_index);
    message.set_noise(noise);
    message.set_mac1(mac1);
    buf
}

fn sample_response(
    sender_index: u32,
    receiver_index: u32,
    noise: &[u8; NOISE_RESPONSE_LEN],
    mac1: &[u8; MAC_LEN],
) -> Vec<u8> {
    let mut buf = vec![0xee; HANDSHAKE_RESPONSE_LEN];
    let mut message = HandshakeResponse::new_emit(&mut buf[..]).unwrap();
    message.set_sender_index(sender_index);
    message.set_receiver_index(receiver_index);
    message.set_noise(noise);
    message.set_mac1(mac1);
    buf
}

fn sample_cookie_reply(receiver_index: u32) -> Vec<u8> {
    let mut bytes = vec![0u8; COOKIE_REPLY_LEN];
    let mut message = CookieReply::new_emit(&mut bytes[..]).unwrap();
    message.set_receiver_index(receiver_index);
    message.set_nonce(&std::array::from_fn(|i| i as u8));
    message.set_sealed_cookie(&std::array::from_fn(|i| 0x80 | i as u8));
    bytes
}

fn sample_data(kind: PayloadKind, receiver_index: u32, counter: u64, ciphertext: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; DATA_HEADER_LEN + ciphertext.len()];
    emit_data_header(&mut buf, kind, receiver_index, counter);
    buf[DATA_HEADER_LEN..].copy_from_slice(ciphertext);
    buf
}

fn sample_frame(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; ETHERNET_HEADER_LEN + payload.len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    frame.set_dst(dst);
    frame.set_src(src);
    frame.set_ethertype(ethertype);
    frame.payload_mut().copy_from_slice(payload);
    buf
}

/// Calls every checked constructor and every accessor; the property is simply "returns".
fn exercise_all(bytes: &[u8]) {
    let _ = classify(bytes);
    if let Ok(header) = Header::new_checked(bytes) {
        let _ = (
            header.version(),
            header.message_type(),
            header.payload_kind(),
        );
    }
    if let Ok(message) = HandshakeInit::new_checked(bytes) {
        let _ = (
            message.sender_index(),
            message.noise(),
            message.mac1(),
            message.mac2(),
        );
        let _ = (message.mac1_covered(), message.as_bytes());
    }
    if let Ok(message) = HandshakeResponse::new_checked(bytes) {
        let _ = (
            message.sender_index(),
            message.receiver_index(),
            message.noise(),
        );
        let _ = (
            message.mac1(),
            message.mac2(),
            message.mac1_covered(),
            message.as_bytes(),
        );
    }
    if let Ok(message) = CookieReply::new_checked(bytes) {
        let _ = (message.receiver_index(), message.nonce());
        let _ = (message.sealed_cookie(), message.as_bytes());
    }
    if let Ok(message) = Data::new_checked(bytes) {
        let _ = (
            message.payload_kind(),
            message.receiver_index(),
            message.counter(),
        );
        let _ = (
            message.header_bytes(),
            message.ciphertext(),
            message.payload_len(),
        );
    }
    if let Ok(frame) = EthernetFrame::new_checked(bytes) {
        let _ = (
            frame.dst(),
            frame.src(),
            frame.ethertype(),
            frame.vlan_id(),
            frame.payload(),
            frame.header_len(),
            frame.ip_offset(),
        );
    }
    if let Ok(ip) = IpFrame::new_checked(bytes) {
        let _ = (ip.packet(), ip.payload(), ip.src_addr(), ip.dst_addr());
        let _ = (ip.protocol(), ip.ident(), ip.fragment_offset(), ip.layout());
    }
}

#[test]
fn lengths_match_the_documented_tables() {
    assert_eq!(HEADER_LEN, 4);
    assert_eq!(HANDSHAKE_INIT_LEN, 144);
    assert_eq!(HANDSHAKE_RESPONSE_LEN, 92);
    assert_eq!(HANDSHAKE_INIT_MIN_LEN, 136);
    assert_eq!(HANDSHAKE_INIT_MAX_LEN, 136 + 1024);
    assert_eq!(HANDSHAKE_RESPONSE_MIN_LEN, 92);
    assert_eq!(HANDSHAKE_RESPONSE_MAX_LEN, 92 + 1024);
    assert_eq!(DATA_HEADER_LEN, 16);
    assert_eq!(DATA_MIN_LEN, 32);
    assert_eq!(DATA_OVERHEAD, 32);
    assert_eq!(ETHERNET_HEADER_LEN, 14);
}

#[test]
fn classify_checks_length_then_version() {
    assert_eq!(classify(&[]), Err(WireError::Truncated));
    assert_eq!(classify(&[1, 4, 0]), Err(WireError::Truncated));
    assert_eq!(classify(&[2, 4, 0, 0]), Err(WireError::BadVersion(2)));
    assert_eq!(classify(&[1, 1, 0, 0]), Ok(MessageType::HandshakeInit));
    assert_eq!(classify(&[1, 2, 0, 0]), Ok(MessageType::HandshakeResponse));
    assert_eq!(classify(&[1, 3, 0, 0]), Ok(MessageType::CookieReply));
    assert_eq!(classify(&[1, 4, 9, 9, 9]), Ok(MessageType::Data));
    assert_eq!(classify(&[1, 0, 0, 0]), Ok(MessageType::Unknown(0)));
    assert_eq!(classify(&[1, 200, 0, 0]), Ok(MessageType::Unknown(200)));
}

#[test]
fn type_and_kind_bytes_round_trip_through_enums() {
    for byte in 0..=u8::MAX {
        assert_eq!(u8::from(MessageType::from(byte)), byte);
        assert_eq!(u8::from(PayloadKind::from(byte)), byte);
    }
    assert_eq!(PayloadKind::from(0), PayloadKind::Keepalive);
    assert_eq!(PayloadKind::from(1), PayloadKind::Ethernet);
    assert_eq!(PayloadKind::from(7), PayloadKind::EthernetPartialChecksum);
    assert_eq!(PayloadKind::from(8), PayloadKind::Unknown(8));
    assert_eq!(MessageType::Unknown(9).as_str(), "unknown");
}

#[test]
fn error_labels_are_stable() {
    assert_eq!(WireError::Truncated.as_str(), "truncated");
    assert_eq!(WireError::BadVersion(7).as_str(), "bad_version");
    assert_eq!(WireError::BadLength.as_str(), "bad_length");
    assert_eq!(
        WireError::WrongType(MessageType::Data).as_str(),
        "wrong_type"
    );
}

#[test]
fn header_view_reads_and_writes_the_four_bytes() {
    let mut buf = [0u8; 4];
    Header::new_unchecked(&mut buf[..]).emit(MessageType::Data, PayloadKind::Ethernet);
    assert_eq!(buf, [1, 4, 1, 0]);
    let header = Header::new_checked(&buf[..]).unwrap();
    assert_eq!(header.version(), PROTOCOL_VERSION);
    assert_eq!(header.message_type(), MessageType::Data);
    assert_eq!(header.payload_kind(), PayloadKind::Ethernet);
    let mut header = Header::new_unchecked(buf);
    header.set_version(9);
    assert_eq!(
        Header::new_checked(header.into_inner()).unwrap_err(),
        WireError::BadVersion(9)
    );
}

#[test]
fn handshake_init_layout() {
    let noise: [u8; NOISE_INIT_LEN] = std::array::from_fn(|i| i as u8);
    let buf = sample_init(0x0403_0201, &noise, &[0xaa; MAC_LEN]);
    assert_eq!(&buf[..8], &[1, 1, 0, 0, 1, 2, 3, 4]);
    assert_eq!(&buf[8..112], &noise[..]);
    assert_eq!(&buf[112..128], &[0xaa; 16]);
    assert_eq!(&buf[128..144], &[0; 16]);
    let message = HandshakeInit::new_checked(&buf[..]).unwrap();
    assert_eq!(message.sender_index(), 0x0403_0201);
    assert_eq!(message.mac1_covered(), &buf[..112]);
}

#[test]
fn handshake_response_layout() {
    let noise = [0x55; NOISE_RESPONSE_LEN];
    let buf = sample_response(7, 0x0102_0304, &noise, &[0xbb; MAC_LEN]);
    assert_eq!(&buf[..12], &[1, 2, 0, 0, 7, 0, 0, 0, 4, 3, 2, 1]);
    assert_eq!(&buf[12..60], &noise[..]);
    assert_eq!(&buf[60..76], &[0xbb; 16]);
    assert_eq!(&buf[76..92], &[0; 16]);
    let message = HandshakeResponse::new_checked(&buf[..]).unwrap();
    assert_eq!(
        (message.sender_index(), message.receiver_index()),
        (7, 0x0102_0304)
    );
    assert_eq!(message.mac1_covered(), &buf[..60]);
}

#[test]
fn handshakes_must_have_an_allowed_length_and_their_type() {
    let init = sample_init(1, &[0; NOISE_INIT_LEN], &[0; MAC_LEN]);
    assert_eq!(
        HandshakeInit::new_checked(&init[..HANDSHAKE_INIT_MIN_LEN - 1]).unwrap_err(),
        WireError::Truncated
    );
    let mut long = init.clone();
    long.resize(HANDSHAKE_INIT_MAX_LEN + 1, 0);
    assert_eq!(
        HandshakeInit::new_checked(&long[..]).unwrap_err(),
        WireError::BadLength
    );
    assert_eq!(
        HandshakeResponse::new_checked(&init[..HANDSHAKE_RESPONSE_LEN]).unwrap_err(),
        WireError::WrongType(MessageType::HandshakeInit)
    );
    let mut bad_version = init.clone();
    bad_version[0] = 0;
    assert_eq!(
        HandshakeInit::new_checked(&bad_version[..]).unwrap_err(),
        WireError::BadVersion(0)
    );
    assert_eq!(
        HandshakeInit::new_emit(&mut [0u8; 10][..]).unwrap_err(),
        WireError::Truncated
    );
    assert_eq!(
        HandshakeResponse::new_emit(&mut [0u8; HANDSHAKE_RESPONSE_MAX_LEN + 1][..]).unwrap_err(),
        WireError::BadLength
    );
}

#[test]
fn handshake_reserved_bytes_are_ignored_on_receive() {
    let mut init = sample_init(1, &[0; NOISE_INIT_LEN], &[0; MAC_LEN]);
    init[2] = 0x7f;
    init[3] = 0xff;
    assert!(HandshakeInit::new_checked(&init[..]).is_ok());
}

#[test]
fn cookie_reply_layout_and_exact_length() {
    let bytes = sample_cookie_reply(0x1234_5678);
    assert_eq!(bytes.len(), 52);
    assert_eq!(bytes[..8], [1, 3, 0, 0, 0x78, 0x56, 0x34, 0x12]);
    assert_eq!(bytes[8], 0);
    assert_eq!(bytes[19], 11);
    assert_eq!(bytes[20], 0x80);
    let message = CookieReply::new_checked(&bytes[..]).unwrap();
    assert_eq!(message.receiver_index(), 0x1234_5678);
    assert_eq!(message.nonce()[11], 11);
    assert_eq!(message.sealed_cookie().len(), SEALED_COOKIE_LEN);
    assert_eq!(
        CookieReply::new_checked(&bytes[..51]).err(),
        Some(WireError::Truncated)
    );
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        CookieReply::new_checked(&longer[..]).err(),
        Some(WireError::BadLength)
    );
    let mut wrong = bytes.clone();
    wrong[1] = 1;
    assert_eq!(
        CookieReply::new_checked(&wrong[..]).err(),
        Some(WireError::WrongType(MessageType::HandshakeInit))
    );
    wrong[0] = 2;
    assert_eq!(
        CookieReply::new_checked(&wrong[..]).err(),
        Some(WireError::BadVersion(2))
    );
}

#[test]
fn data_layout_and_in_place_access() {
    let mut buf = sample_data(
        PayloadKind::Ethernet,
        0xdead_beef,
        0x0102_0304_0506_0708,
        &[9; 30],
    );
    assert_eq!(
        &buf[..16],
        &[1, 4, 1, 0, 0xef, 0xbe, 0xad, 0xde, 8, 7, 6, 5, 4, 3, 2, 1]
    );
    let mut message = Data::new_checked(&mut buf[..]).unwrap();
    assert_eq!(message.payload_kind(), PayloadKind::Ethernet);
    assert_eq!(message.receiver_index(), 0xdead_beef);
    assert_eq!(message.counter(), 0x0102_0304_0506_0708);
    assert_eq!(message.payload_len(), 14);
    assert_eq!(message.ciphertext().len(), 30);
    let (aad, ciphertext) = message.split_aad_mut();
    assert_eq!(aad.len(), DATA_HEADER_LEN);
    ciphertext[0] = 1;
    message.set_counter(5);
    message.set_receiver_index(6);
    message.set_payload_kind(PayloadKind::Unknown(77));
    assert_eq!(message.ciphertext_mut()[0], 1);
    let message = Data::new_checked(&buf[..]).unwrap();
    assert_eq!((message.counter(), message.receiver_index()), (5, 6));
    assert_eq!(message.payload_kind(), PayloadKind::Unknown(77));
}

#[test]
fn data_checks() {
    let keepalive = sample_data(PayloadKind::Keepalive, 1, 2, &[0; TAG_LEN]);
    assert_eq!(Data::new_checked(&keepalive[..]).unwrap().payload_len(), 0);
    assert_eq!(
        Data::new_checked(&keepalive[..31]).unwrap_err(),
        WireError::Truncated
    );
    let padded_keepalive = sample_data(PayloadKind::Keepalive, 1, 2, &[0; TAG_LEN + 1]);
    assert_eq!(
        Data::new_checked(&padded_keepalive[..]).unwrap_err(),
        WireError::BadLength
    );
    let unknown_kind = sample_data(PayloadKind::Unknown(9), 1, 2, &[0; TAG_LEN + 3]);
    assert_eq!(
        Data::new_checked(&unknown_kind[..]).unwrap().payload_kind(),
        PayloadKind::Unknown(9)
    );
    let init = sample_init(1, &[0; NOISE_INIT_LEN], &[0; MAC_LEN]);
    assert_eq!(
        Data::new_checked(&init[..]).unwrap_err(),
        WireError::WrongType(MessageType::HandshakeInit)
    );
}

#[test]
fn ethernet_frame_fields_are_network_order() {
    let dst = MacAddr([0x02, 0, 0, 0, 0, 1]);
    let src = MacAddr([0x02, 0, 0, 0, 0, 2]);
    let buf = sample_frame(dst, src, ETHERTYPE_IPV6, &[1, 2, 3]);
    assert_eq!(&buf[12..14], &[0x86, 0xdd]);
    let frame = EthernetFrame::new_checked(&buf[..]).unwrap();
    assert_eq!(
        (frame.dst(), frame.src(), frame.ethertype()),
        (dst, src, ETHERTYPE_IPV6)
    );
    assert_eq!(frame.vlan_id(), None);
    assert_eq!(frame.payload(), &[1, 2, 3]);
    assert_eq!(
        EthernetFrame::new_checked(&buf[..13]).unwrap_err(),
        WireError::Truncated
    );
}

#[test]
fn vlan_id_needs_a_tag_ethertype_and_the_full_tag() {
    let tagged = sample_frame(
        MacAddr::BROADCAST,
        MacAddr::ZERO,
        ETHERTYPE_VLAN,
        &[0xe0, 0x64, 0x08, 0x00],
    );
    assert_eq!(
        EthernetFrame::new_checked(&tagged[..]).unwrap().vlan_id(),
        Some(100)
    );
    assert_eq!(
        EthernetFrame::new_checked(&tagged[..17]).unwrap().vlan_id(),
        None
    );
    let qinq = sample_frame(
        MacAddr::BROADCAST,
        MacAddr::ZERO,
        ETHERTYPE_QINQ,
        &[0x0f, 0xff, 0x81, 0x00],
    );
    assert_eq!(
        EthernetFrame::new_checked(&qinq[..]).unwrap().vlan_id(),
        Some(4095)
    );
}

#[test]
fn mac_address_classes() {
    assert!(MacAddr::BROADCAST.is_broadcast() && MacAddr::BROADCAST.is_multicast());
    let ipv6_multicast = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
    assert!(ipv6_multicast.is_multicast() && !ipv6_multicast.is_broadcast());
    let unicast = MacAddr([0x02, 0x42, 0xac, 0x11, 0, 2]);
    assert!(unicast.is_unicast() && unicast.is_locally_administered() && !unicast.is_zero());
    assert!(MacAddr::ZERO.is_zero() && MacAddr::ZERO.is_unicast());
    assert_eq!(
        MacAddr::from_slice(&[1, 2, 3, 4, 5, 6, 7]),
        Some(MacAddr([1, 2, 3, 4, 5, 6]))
    );
    assert_eq!(MacAddr::from_slice(&[1, 2, 3]), None);
}

#[test]
fn mac_address_text_forms() {
    let mac = MacAddr([0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0x01]);
    assert_eq!(mac.to_string(), "aa:bb:0c:dd:ee:01");
    assert_eq!(format!("{mac:?}"), "MacAddr(aa:bb:0c:dd:ee:01)");
    assert_eq!("AA:bb:0C:dd:EE:01".parse::<MacAddr>(), Ok(mac));
    for bad in [
        "",
        "aa:bb:cc:dd:ee",
        "aa:bb:cc:dd:ee:ff:",
        "aa-bb-cc-dd-ee-ff",
        "aa:bb:cc:dd:ee:fg",
        "aabb:cc:dd:ee:ff:0",
    ] {
        assert_eq!(bad.parse::<MacAddr>(), Err(MacParseError), "{bad:?}");
    }
    // Multi-byte characters must not trip slicing.
    assert!("é:bb:cc:dd:ee:ff".parse::<MacAddr>().is_err());
    assert_eq!(
        serde_json::to_string(&mac).unwrap(),
        "\"aa:bb:0c:dd:ee:01\""
    );
    assert_eq!(
        serde_json::from_str::<MacAddr>("\"aa:bb:0c:dd:ee:01\"").unwrap(),
        mac
    );
    assert!(serde_json::from_str::<MacAddr>("\"nope\"").is_err());
}

/// Datagrams that look plausible enough to get past the header check, so the deeper checks are exercised.
fn plausible_datagram() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..6,
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(ty, kind, mut tail)| {
            let mut buf = vec![PROTOCOL_VERSION, ty, kind % 3, 0];
            buf.append(&mut tail);
            buf
        })
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        exercise_all(&bytes);
    }

    #[test]
    fn plausible_datagrams_never_panic(bytes in plausible_datagram()) {
        exercise_all(&bytes);
    }

    #[test]
    fn exact_handshake_lengths_never_panic(
        ty in 0u8..6,
        init in prop::collection::vec(any::<u8>(), HANDSHAKE_INIT_LEN),
        response in prop::collection::vec(any::<u8>(), HANDSHAKE_RESPONSE_LEN),
    ) {
        for mut bytes in [init, response] {
            bytes[0] = PROTOCOL_VERSION;
            bytes[1] = ty;
            exercise_all(&bytes);
        }
    }

    #[test]
    fn handshake_init_round_trips(
        sender in any::<u32>(),
        noise in prop::array::uniform32(any::<u8>()),
        mac1 in prop::array::uniform16(any::<u8>()),
    ) {
        let noise: [u8; NOISE_INIT_LEN] = std::array::from_fn(|i| noise[i % 32] ^ i as u8);
        let buf = sample_init(sender, &noise, &mac1);
        prop_assert_eq!(classify(&buf), Ok(MessageType::HandshakeInit));
        let message = HandshakeInit::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(message.sender_index(), sender);
        prop_assert_eq!(message.noise(), &noise[..]);
        prop_assert_eq!(message.mac1(), &mac1[..]);
        prop_assert_eq!(message.mac2(), &[0u8; MAC_LEN][..]);
    }

    #[test]
    fn handshake_response_round_trips(
        sender in any::<u32>(),
        receiver in any::<u32>(),
        noise in prop::collection::vec(any::<u8>(), NOISE_RESPONSE_LEN),
        mac1 in prop::array::uniform16(any::<u8>()),
    ) {
        let noise: [u8; NOISE_RESPONSE_LEN] = noise.try_into().unwrap();
        let buf = sample_response(sender, receiver, &noise, &mac1);
        prop_assert_eq!(classify(&buf), Ok(MessageType::HandshakeResponse));
        let message = HandshakeResponse::new_checked(&buf[..]).unwrap();
        prop_assert_eq!((message.sender_index(), message.receiver_index()), (sender, receiver));
        prop_assert_eq!(message.noise(), &noise[..]);
        prop_assert_eq!(message.mac1(), &mac1[..]);
        prop_assert_eq!(message.mac2(), &[0u8; MAC_LEN][..]);
    }

    #[test]
    fn data_round_trips(
        kind in any::<u8>().prop_filter("keepalive has its own test", |k| *k != 0),
        receiver in any::<u32>(),
        counter in any::<u64>(),
        ciphertext in prop::collection::vec(any::<u8>(), TAG_LEN..200),
    ) {
        let kind = PayloadKind::from(kind);
        let buf = sample_data(kind, receiver, counter, &ciphertext);
        prop_assert_eq!(classify(&buf), Ok(MessageType::Data));
        let message = Data::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(message.payload_kind(), kind);
        prop_assert_eq!((message.receiver_index(), message.counter()), (receiver, counter));
        prop_assert_eq!(message.ciphertext(), &ciphertext[..]);
        prop_assert_eq!(message.header_bytes(), &buf[..DATA_HEADER_LEN]);
        prop_assert_eq!(message.payload_len(), ciphertext.len() - TAG_LEN);
    }

    #[test]
    fn ethernet_round_trips(
        dst in any::<[u8; 6]>(),
        src in any::<[u8; 6]>(),
        ethertype in any::<u16>(),
        payload in prop::collection::vec(any::<u8>(), 0..100),
    ) {
        let buf = sample_frame(MacAddr(dst), MacAddr(src), ethertype, &payload);
        let frame = EthernetFrame::new_checked(&buf[..]).unwrap();
        prop_assert_eq!((frame.dst(), frame.src(), frame.ethertype()), (MacAddr(dst), MacAddr(src), ethertype));
        prop_assert_eq!(frame.payload(), &payload[..]);
    }

    #[test]
    fn mac_text_round_trips(octets in any::<[u8; 6]>()) {
        let mac = MacAddr(octets);
        prop_assert_eq!(mac.to_string().parse::<MacAddr>(), Ok(mac));
        prop_assert_eq!(mac.to_string().to_uppercase().parse::<MacAddr>(), Ok(mac));
    }

    #[test]
    fn mac_parse_never_panics(text in "\\PC{0,20}") {
        if let Ok(mac) = text.parse::<MacAddr>() {
            prop_assert_eq!(mac.to_string(), text.to_lowercase());
        }
    }
}

/// The committed fuzz seeds: a few valid messages of each type, plus near-misses.
fn fuzz_seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let host_a = MacAddr([0x02, 0x6d, 0x65, 0x73, 0x68, 0x01]);
    let host_b = MacAddr([0x02, 0x6d, 0x65, 0x73, 0x68, 0x02]);
    let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
    arp.extend_from_slice(&host_a.0);
    arp.extend_from_slice(&[10, 77, 0, 1]);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&[10, 77, 0, 2]);
    let arp_frame = sample_frame(MacAddr::BROADCAST, host_a, ETHERTYPE_ARP, &arp);
    let ipv6_nd_frame = sample_frame(
        MacAddr([0x33, 0x33, 0xff, 0, 0, 2]),
        host_a,
        ETHERTYPE_IPV6,
        &[0x60; 40],
    );
    let tagged_frame = sample_frame(
        host_b,
        host_a,
        ETHERTYPE_VLAN,
        &[0x00, 0x64, 0x08, 0x00, 0x45, 0, 0, 20],
    );
    let qinq_frame = sample_frame(
        host_b,
        host_a,
        ETHERTYPE_QINQ,
        &[0x00, 0x0a, 0x81, 0x00, 0x00, 0x64, 0x08, 0x00],
    );
    // Complete IP frames, so the fuzzer starts from what IpFrame accepts: tagged IPv4 with a NOP
    // option and TCP with a timestamp-sized option, and IPv6 with UDP and Ethernet padding.
    let mut ipv4_tcp = vec![0x00, 0x64, 0x08, 0x00];
    ipv4_tcp.extend_from_slice(&[0x46, 0, 0, 24 + 32 + 5, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0]);
    ipv4_tcp.extend_from_slice(&[10, 77, 0, 1, 10, 77, 0, 2, 1, 1, 1, 0]);
    ipv4_tcp.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 1, 0, 0, 0, 2, 0, 0x80, 0x18]);
    ipv4_tcp.extend_from_slice(&[1, 0, 0, 0, 0, 0]);
    ipv4_tcp.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    ipv4_tcp.extend_from_slice(b"hello");
    let ipv4_tcp_frame = sample_frame(host_b, host_a, ETHERTYPE_VLAN, &ipv4_tcp);
    let mut ipv6_udp = vec![0x60, 0, 0, 0, 0, 12, 17, 64];
    ipv6_udp.extend((0..32).map(|i| if i % 16 == 0 { 0xfd } else { i as u8 }));
    ipv6_udp.extend_from_slice(&[0x30, 0x39, 0x00, 0x35, 0, 12, 0, 0, 1, 2, 3, 4]);
    ipv6_udp.extend_from_slice(&[0; 6]);
    let ipv6_udp_frame = sample_frame(host_b, host_a, ETHERTYPE_IPV6, &ipv6_udp);

    let noise_init: [u8; NOISE_INIT_LEN] = std::array::from_fn(|i| (i * 7) as u8);
    let noise_response: [u8; NOISE_RESPONSE_LEN] = std::array::from_fn(|i| (i * 13) as u8);
    let mut ethernet_data = arp_frame.clone();
    ethernet_data.extend_from_slice(&[0xa5; TAG_LEN]);
    vec![
        (
            "datagram",
            "handshake-init",
            sample_init(0x1234_5678, &noise_init, &[0x11; MAC_LEN]),
        ),
        (
            "datagram",
            "handshake-response",
            sample_response(0x9abc_def0, 0x1234_5678, &noise_response, &[0x22; MAC_LEN]),
        ),
        (
            "datagram",
            "data-keepalive",
            sample_data(PayloadKind::Keepalive, 0x9abc_def0, 0, &[0x33; TAG_LEN]),
        ),
        (
            "datagram",
            "data-ethernet",
            sample_data(PayloadKind::Ethernet, 0x9abc_def0, 42, &ethernet_data),
        ),
        (
            "datagram",
            "data-unknown-kind",
            sample_data(PayloadKind::Unknown(9), 1, 1, &[0x44; TAG_LEN + 8]),
        ),
        ("datagram", "cookie-reply", sample_cookie_reply(0x1234_5678)),
        (
            "datagram",
            "cookie-reply-truncated",
            vec![PROTOCOL_VERSION, 3, 0, 0, 1, 2, 3, 4],
        ),
        (
            "datagram",
            "unknown-type",
            vec![PROTOCOL_VERSION, 0x7f, 0, 0],
        ),
        ("datagram", "bad-version", vec![2, 1, 0, 0]),
        ("ethernet", "arp-broadcast", arp_frame),
        ("ethernet", "ipv6-multicast", ipv6_nd_frame),
        ("ethernet", "vlan-tagged", tagged_frame),
        ("ethernet", "qinq", qinq_frame),
        ("ethernet", "ipv4-tcp-vlan", ipv4_tcp_frame),
        ("ethernet", "ipv6-udp-padded", ipv6_udp_frame),
        ("ethernet", "mac-text", b"02:6d:65:73:68:01".to_vec()),
    ]
}

/// Keeps fuzz/corpus/<target>/seed-* equal to `fuzz_seeds()`. After a format change, regenerate with
/// `MESHD_WRITE_FUZZ_SEEDS=1 cargo test --lib wire::tests::fuzz_seed_corpus_is_current`.
#[test]
fn fuzz_seed_corpus_is_current() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, name, bytes) in fuzz_seeds() {
        exercise_all(&bytes);
        let path = corpus.join(target).join(format!("seed-{name}"));
        crate::test_support::check_or_write_fuzz_seed(&path, &bytes);
    }
}
