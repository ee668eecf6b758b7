//! Outer datagram parser: `classify` and every view's `new_checked` and accessors must never panic,
//! must accept exactly what docs/wire-format.md says, and whatever they accept must survive being
//! re-emitted through the setters (reserved bytes are normalised to zero), the cookie reply included. The same bytes are also
//! read as the decrypted payloads of the path messages (relay envelope, probe, probe answer), whose
//! parsers see what a member sends after authentication.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshd::wire::{
    classify, emit_data_header, CookieReply, Data, HandshakeInit, HandshakeResponse, Header, MessageType,
    PayloadKind, WireError, DATA_HEADER_LEN, DATA_MIN_LEN, HANDSHAKE_INIT_MAX_LEN,
    HANDSHAKE_INIT_MIN_LEN, HANDSHAKE_RESPONSE_MAX_LEN, HANDSHAKE_RESPONSE_MIN_LEN, MAC_LEN,
    PROTOCOL_VERSION, Probe, COOKIE_REPLY_LEN, ProbeAck, RelayEnvelope, PROBE_ACK_MAX_LEN, RELAY_ENVELOPE_LEN,
};

fuzz_target!(|datagram: &[u8]| {
    let classified = classify(datagram);
    check_header(datagram, classified);
    check_handshake_init(datagram, classified);
    check_handshake_response(datagram, classified);
    check_cookie_reply(datagram, classified);
    check_data(datagram, classified);
    check_path_payloads(datagram);
});

fn check_path_payloads(payload: &[u8]) {
    if let Ok(envelope) = RelayEnvelope::new_checked(payload) {
        assert_eq!(envelope.inner().len() + RELAY_ENVELOPE_LEN, payload.len());
    }
    assert_eq!(Probe::id(payload).is_ok(), payload.len() >= 4);
    if let Ok(ack) = ProbeAck::parse(payload) {
        // Whatever parses re-emits to the same bytes.
        let mut out = [0u8; PROBE_ACK_MAX_LEN];
        let len = ack.emit(&mut out);
        assert_eq!(&out[..len], payload);
    }
}

fn check_header(datagram: &[u8], classified: Result<MessageType, WireError>) {
    let expected = match datagram {
        [] | [_] | [_, _] | [_, _, _] => Err(WireError::Truncated),
        [version, ..] if *version != PROTOCOL_VERSION => Err(WireError::BadVersion(*version)),
        [_, message_type, ..] => Ok(MessageType::from(*message_type)),
    };
    assert_eq!(classified, expected);
    let Ok(header) = Header::new_checked(datagram) else {
        assert!(classified.is_err());
        return;
    };
    assert_eq!(Ok(header.message_type()), classified);
    assert_eq!(header.version(), PROTOCOL_VERSION);
    let mut emitted = [0xffu8; 4];
    Header::new_unchecked(&mut emitted[..]).emit(header.message_type(), header.payload_kind());
    assert_eq!(emitted[..3], datagram[..3]);
    assert_eq!(emitted[3], 0);
}

fn check_handshake_init(datagram: &[u8], classified: Result<MessageType, WireError>) {
    let should_accept = classified == Ok(MessageType::HandshakeInit)
        && (HANDSHAKE_INIT_MIN_LEN..=HANDSHAKE_INIT_MAX_LEN).contains(&datagram.len());
    let Ok(message) = HandshakeInit::new_checked(datagram) else {
        assert!(!should_accept);
        return;
    };
    assert!(should_accept);
    assert_eq!(message.mac1_covered().len() + 2 * MAC_LEN, datagram.len());

    let mut emitted = vec![0u8; datagram.len()];
    let mut copy = HandshakeInit::new_emit(&mut emitted[..]).unwrap();
    copy.set_sender_index(message.sender_index());
    copy.set_noise(message.noise());
    copy.set_mac1(&array::<MAC_LEN>(message.mac1()));
    copy.set_mac2(&array::<MAC_LEN>(message.mac2()));
    let reparsed = HandshakeInit::new_checked(&emitted[..]).unwrap();
    assert_eq!(reparsed.sender_index(), message.sender_index());
    assert_eq!(reparsed.noise(), message.noise());
    assert_eq!(reparsed.mac1(), message.mac1());
    assert_eq!(reparsed.mac2(), message.mac2());
    assert_eq!(emitted[..2], datagram[..2]);
    assert_eq!(emitted[2..4], [0, 0]);
    assert_eq!(emitted[4..], datagram[4..]);
}

fn check_handshake_response(datagram: &[u8], classified: Result<MessageType, WireError>) {
    let should_accept = classified == Ok(MessageType::HandshakeResponse)
        && (HANDSHAKE_RESPONSE_MIN_LEN..=HANDSHAKE_RESPONSE_MAX_LEN).contains(&datagram.len());
    let Ok(message) = HandshakeResponse::new_checked(datagram) else {
        assert!(!should_accept);
        return;
    };
    assert!(should_accept);
    assert_eq!(message.mac1_covered().len() + 2 * MAC_LEN, datagram.len());

    let mut emitted = vec![0u8; datagram.len()];
    let mut copy = HandshakeResponse::new_emit(&mut emitted[..]).unwrap();
    copy.set_sender_index(message.sender_index());
    copy.set_receiver_index(message.receiver_index());
    copy.set_noise(message.noise());
    copy.set_mac1(&array::<MAC_LEN>(message.mac1()));
    copy.set_mac2(&array::<MAC_LEN>(message.mac2()));
    let reparsed = HandshakeResponse::new_checked(&emitted[..]).unwrap();
    assert_eq!(reparsed.sender_index(), message.sender_index());
    assert_eq!(reparsed.receiver_index(), message.receiver_index());
    assert_eq!(reparsed.noise(), message.noise());
    assert_eq!(reparsed.mac1(), message.mac1());
    assert_eq!(reparsed.mac2(), message.mac2());
    assert_eq!(emitted[..2], datagram[..2]);
    assert_eq!(emitted[2..4], [0, 0]);
    assert_eq!(emitted[4..], datagram[4..]);
}

fn check_cookie_reply(datagram: &[u8], classified: Result<MessageType, WireError>) {
    let should_accept =
        classified == Ok(MessageType::CookieReply) && datagram.len() == COOKIE_REPLY_LEN;
    let Ok(message) = CookieReply::new_checked(datagram) else {
        assert!(!should_accept);
        return;
    };
    assert!(should_accept);
    let mut emitted = [0u8; COOKIE_REPLY_LEN];
    let mut copy = CookieReply::new_emit(&mut emitted[..]).unwrap();
    copy.set_receiver_index(message.receiver_index());
    copy.set_nonce(message.nonce());
    copy.set_sealed_cookie(&array(message.sealed_cookie()));
    assert_eq!(emitted[..2], datagram[..2]);
    assert_eq!(emitted[2..4], [0, 0]);
    assert_eq!(emitted[4..], datagram[4..]);
}

fn check_data(datagram: &[u8], classified: Result<MessageType, WireError>) {
    let should_accept = classified == Ok(MessageType::Data)
        && datagram.len() >= DATA_MIN_LEN
        && (PayloadKind::from(datagram[2]) != PayloadKind::Keepalive
            || datagram.len() == DATA_MIN_LEN);
    let Ok(message) = Data::new_checked(datagram) else {
        assert!(!should_accept);
        return;
    };
    assert!(should_accept);
    assert_eq!(message.header_bytes().len(), DATA_HEADER_LEN);
    assert_eq!(message.ciphertext().len(), datagram.len() - DATA_HEADER_LEN);
    assert_eq!(message.payload_len() + DATA_MIN_LEN, datagram.len());

    let mut emitted = vec![0u8; datagram.len()];
    emit_data_header(
        &mut emitted,
        message.payload_kind(),
        message.receiver_index(),
        message.counter(),
    );
    emitted[DATA_HEADER_LEN..].copy_from_slice(message.ciphertext());
    let reparsed = Data::new_checked(&emitted[..]).unwrap();
    assert_eq!(reparsed.payload_kind(), message.payload_kind());
    assert_eq!(reparsed.receiver_index(), message.receiver_index());
    assert_eq!(reparsed.counter(), message.counter());
    assert_eq!(reparsed.ciphertext(), message.ciphertext());
    assert_eq!(emitted[..3], datagram[..3]);
    assert_eq!(emitted[3], 0);
    assert_eq!(emitted[4..], datagram[4..]);
}

/// A checked view's fixed-size field as an array (its length is guaranteed by `new_checked`).
fn array<const N: usize>(field: &[u8]) -> [u8; N] {
    field
        .try_into()
        .expect("checked view returned a field of the wrong length")
}
