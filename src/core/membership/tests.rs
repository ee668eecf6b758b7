//! Unit tests of the membership layer: foca's codec, record and revocation layouts and
//! signatures, the registry's checks (every forgery refused and counted), message framing, and
//! random bytes into `handle_message`. Whole-mesh behaviour (convergence, failure detection,
//! revocation spread, rejoin, renewal) is tested on a virtual network in tests/it/gossip.rs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BufMut;
use foca::{Codec as _, Header, Invalidates as _, Member, Message, State};
use meshd_crypto::{Certificate, NetworkSecret, PublicKey, StaticSecret};
use proptest::prelude::*;

use super::*;

/// Fixture constants, shared with fuzz/fuzz_targets/membership.rs (keep them equal).
pub(crate) const NETWORK_SEED: [u8; 32] = [0x41; 32];
pub(crate) const NODE_SECRET: [u8; 32] = [0x42; 32];
pub(crate) const PEER_SECRET: [u8; 32] = [0x43; 32];
pub(crate) const UNIX: u64 = 1_800_000_000;
const DAY: u64 = 24 * 60 * 60;

fn network() -> NetworkSecret {
    NetworkSecret::from_seed(NETWORK_SEED)
}

fn cert_for(
    network: &NetworkSecret,
    secret: &StaticSecret,
    name: &str,
    issued_at: u64,
    expires_at: u64,
    admin: bool,
) -> Certificate {
    Certificate::issue(
        network,
        name,
        secret.public_key(),
        secret.signing_key().public(),
        issued_at,
        expires_at,
        admin,
    )
    .unwrap()
}

fn config(secret: &StaticSecret, certificate: Certificate, now: Instant) -> MembershipConfig {
    MembershipConfig {
        network: network().network_id(),
        certificate,
        signing_key: secret.signing_key(),
        network_secret: None,
        endpoints: vec!["192.0.2.1:6655".parse().unwrap()],
        revocations: Vec::new(),
        now,
        unix_secs_at_now: UNIX,
        rng_seed: [9; 32],
        certificate_lifetime: Duration::from_secs(30 * DAY),
    }
}

/// The node every test feeds: "node", not an admin, certificate valid for 30 days.
fn node(now: Instant) -> Membership {
    let secret = StaticSecret::from_bytes(NODE_SECRET);
    let cert = cert_for(&network(), &secret, "node", UNIX, UNIX + 30 * DAY, false);
    Membership::new(config(&secret, cert, now))
}

fn peer() -> (StaticSecret, Certificate) {
    let secret = StaticSecret::from_bytes(PEER_SECRET);
    let cert = cert_for(&network(), &secret, "peer", UNIX, UNIX + 30 * DAY, false);
    (secret, cert)
}

fn record_item(
    secret: &StaticSecret,
    cert: &Certificate,
    generation: u32,
    version: u64,
    endpoint: &str,
) -> Vec<u8> {
    let record = MemberRecord::sign(
        &secret.signing_key(),
        &network().network_id(),
        secret.public_key(),
        generation,
        version,
        cert.issued_at,
        &[endpoint.parse().unwrap()],
    )
    .unwrap();
    member_item(cert, &record)
}

/// An unsolicited records page holding `items`.
fn page(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![SUBTYPE_RECORDS, PAGE_UNSOLICITED];
    out.extend_from_slice(&[0; 32]);
    for item in items {
        out.extend_from_slice(&(item.len() as u16).to_le_bytes());
        out.extend_from_slice(item);
    }
    out
}

/// A foca packet (subtype included) with member updates and custom broadcast items, framed
/// the way foca frames them (u16 big-endian counts and lengths).
fn foca_packet(
    header: &Header<MemberId>,
    updates: &[Member<MemberId>],
    items: &[Vec<u8>],
) -> Vec<u8> {
    let mut codec = WireCodec;
    let mut out = vec![SUBTYPE_FOCA];
    codec.encode_header(header, &mut out).unwrap();
    if !matches!(
        header.message,
        Message::Announce | Message::TurnUndead | Message::Broadcast
    ) {
        out.put_u16(updates.len() as u16);
        for update in updates {
            codec.encode_member(update, &mut out).unwrap();
        }
    }
    for item in items {
        out.put_u16(item.len() as u16);
        out.extend_from_slice(item);
    }
    out
}

fn id(secret: &[u8; 32], generation: u32) -> MemberId {
    MemberId {
        key: StaticSecret::from_bytes(*secret).public_key(),
        generation,
    }
}

fn drain_events(m: &mut Membership) -> Vec<MembershipEvent> {
    std::iter::from_fn(|| m.poll_event()).collect()
}

fn ups(events: &[MembershipEvent]) -> Vec<PublicKey> {
    events
        .iter()
        .filter_map(|e| match e {
            MembershipEvent::MemberUp { key, .. } => Some(*key),
            _ => None,
        })
        .collect()
}

// ------------------------------------------------------------------------------------ codec

fn every_message() -> Vec<Message<MemberId>> {
    let other = id(&[7; 32], 3);
    vec![
        Message::Ping(1),
        Message::Ack(2),
        Message::PingReq {
            target: other,
            probe_number: 3,
        },
        Message::IndirectPing {
            origin: other,
            probe_number: 4,
        },
        Message::IndirectAck {
            target: other,
            probe_number: 5,
        },
        Message::ForwardedAck {
            origin: other,
            probe_number: 6,
        },
        Message::Announce,
        Message::Feed,
        Message::Gossip,
        Message::Broadcast,
        Message::TurnUndead,
    ]
}

#[test]
fn codec_round_trips_every_header_and_member() {
    let mut codec = WireCodec;
    for message in every_message() {
        let header = Header {
            src: id(&PEER_SECRET, 0xdead_beef),
            src_incarnation: 0x1234,
            dst: id(&NODE_SECRET, 1),
            message,
        };
        let mut bytes = Vec::new();
        codec.encode_header(&header, &mut bytes).unwrap();
        assert_eq!(codec.decode_header(&bytes[..]).unwrap(), header);
        assert_eq!(WireCodec::peek_header(&bytes).unwrap(), header);
        for cut in 0..bytes.len() {
            assert!(
                WireCodec::peek_header(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        // Too little room: an error and nothing written.
        let mut limited = Vec::new().limit(bytes.len() - 1);
        assert_eq!(
            codec.encode_header(&header, &mut limited),
            Err(CodecError::Truncated)
        );
        assert!(limited.get_ref().is_empty());
    }
    for state in [State::Alive, State::Suspect, State::Down] {
        let member = Member::new(id(&PEER_SECRET, 9), 77, state);
        let mut bytes = Vec::new();
        codec.encode_member(&member, &mut bytes).unwrap();
        assert_eq!(bytes.len(), MEMBER_UPDATE_LEN);
        assert_eq!(codec.decode_member(&bytes[..]).unwrap(), member);
        assert!(codec
            .decode_member(&bytes[..MEMBER_UPDATE_LEN - 1])
            .is_err());
    }
    let mut bad_state = [0u8; MEMBER_UPDATE_LEN];
    bad_state[MEMBER_UPDATE_LEN - 1] = 3;
    assert_eq!(
        codec.decode_member(&bad_state[..]),
        Err(CodecError::UnknownState(3))
    );
    let mut bad_tag = vec![0u8; 2 * MEMBER_ID_LEN + 3];
    bad_tag[2 * MEMBER_ID_LEN + 2] = 99;
    assert_eq!(
        WireCodec::peek_header(&bad_tag),
        Err(CodecError::UnknownMessage(99))
    );
}

#[test]
fn newer_generation_wins_and_renews() {
    use foca::Identity;
    let old = id(&PEER_SECRET, 5);
    let new = old.renew().unwrap();
    assert_eq!(new.generation, 6);
    assert!(new.win_addr_conflict(&old));
    assert!(!old.win_addr_conflict(&new));
    assert_eq!(old.addr(), new.addr());
    assert!(id(&PEER_SECRET, u32::MAX).renew().is_none());
}

#[test]
fn foca_config_scales_with_log10_of_the_mesh() {
    let at = |n| {
        let c = foca_config(n);
        (c.suspect_to_down_after.as_secs(), c.max_transmissions.get())
    };
    assert_eq!(at(1), (3, 4));
    assert_eq!(at(4), (3, 4));
    assert_eq!(at(99), (3, 4));
    assert_eq!(at(100), (6, 8));
    assert_eq!(at(1_000), (9, 12));
    assert_eq!(at(10_000), (12, 16));
    assert_eq!(foca_config(4).max_packet_size.get() + 1, MAX_PAYLOAD);
}

// ---------------------------------------------------------------------------------- records

#[test]
fn record_round_trips_and_verifies_only_for_its_network_and_signer() {
    let (secret, cert) = peer();
    let endpoints: Vec<SocketAddr> = vec![
        "198.51.100.7:6655".parse().unwrap(),
        "[2001:db8::1%7]:443".parse().unwrap(),
    ];
    let net = network().network_id();
    let record = MemberRecord::sign(
        &secret.signing_key(),
        &net,
        secret.public_key(),
        42,
        1_000,
        cert.issued_at,
        &endpoints,
    )
    .unwrap();
    // The IPv6 scope is not carried, so it is normalised away at signing time.
    assert_eq!(record.endpoints[1], "[2001:db8::1]:443".parse().unwrap());
    let bytes = record.encode();
    assert_eq!(bytes.len(), RECORD_MIN_LEN + 7 + 19);
    let view = RecordView::new_checked(&bytes).unwrap();
    assert_eq!(view.static_key(), secret.public_key());
    assert_eq!(view.generation(), 42);
    assert_eq!(view.version(), 1_000);
    assert_eq!(view.cert_issued_at(), cert.issued_at);
    assert_eq!(view.endpoints().collect::<Vec<_>>(), record.endpoints);
    assert_eq!(MemberRecord::decode(&bytes).unwrap(), record);
    assert!(record.verify(&net, &cert.signing_key));
    assert!(view.verify(&net, &cert.signing_key));
    let other_net = NetworkSecret::from_seed([1; 32]).network_id();
    assert!(!record.verify(&other_net, &cert.signing_key));
    let stranger = StaticSecret::from_bytes([2; 32]).signing_key().public();
    assert!(!record.verify(&net, &stranger));
    // Every single-byte change either breaks the structure or the signature.
    for at in 0..bytes.len() {
        let mut tampered = bytes.clone();
        tampered[at] ^= 0x01;
        if let Ok(view) = RecordView::new_checked(&tampered) {
            assert!(!view.verify(&net, &cert.signing_key), "byte {at}");
        }
    }
    let too_many = vec![endpoints[0]; MAX_ENDPOINTS + 1];
    assert_eq!(
        MemberRecord::sign(
            &secret.signing_key(),
            &net,
            secret.public_key(),
            1,
            1,
            1,
            &too_many
        ),
        Err(RecordError::TooManyEndpoints)
    );
}

#[test]
fn record_view_rejects_bad_structure_as_values() {
    let (secret, cert) = peer();
    let item = record_item(&secret, &cert, 1, 1, "192.0.2.9:1");
    let Ok(Item::Member { record, .. }) = Item::parse(&item) else {
        panic!("fixture item must parse");
    };
    let bytes = record.bytes().to_vec();
    for cut in 0..bytes.len() {
        assert!(RecordView::new_checked(&bytes[..cut]).is_err(), "cut {cut}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        RecordView::new_checked(&longer).err(),
        Some(RecordError::TrailingBytes)
    );
    let mut format = bytes.clone();
    format[0] = 2;
    assert_eq!(
        RecordView::new_checked(&format).err(),
        Some(RecordError::UnknownFormat(2))
    );
    let count_at = 1 + 32 + 4 + 8 + 8;
    let mut count = bytes.clone();
    count[count_at] = 5;
    assert_eq!(
        RecordView::new_checked(&count).err(),
        Some(RecordError::TooManyEndpoints)
    );
    let mut family = bytes.clone();
    family[count_at + 1] = 5;
    assert_eq!(
        RecordView::new_checked(&family).err(),
        Some(RecordError::UnknownFamily(5))
    );
}

#[test]
fn revocation_round_trips_verifies_and_rejects_bad_bytes() {
    let net = network();
    let key = StaticSecret::from_bytes([5; 32]).public_key();
    let revocation = Revocation::issue(&net, key, "gone-host", UNIX, UNIX + 30 * DAY).unwrap();
    assert!(revocation.verify(&net.network_id()));
    let bytes = revocation.encode();
    let view = RevocationView::new_checked(&bytes).unwrap();
    assert_eq!(view.name(), "gone-host");
    assert_eq!(view.static_key(), key);
    assert_eq!(view.revoked_at(), UNIX);
    assert_eq!(view.expires_at(), UNIX + 30 * DAY);
    assert_eq!(view.network(), net.network_id());
    assert_eq!(Revocation::decode(&bytes).unwrap(), revocation);
    let other = NetworkSecret::from_seed([1; 32]);
    assert!(!revocation.verify(&other.network_id()));
    // Signed by another network key but claiming ours.
    let mut forged = Revocation::issue(&other, key, "gone-host", UNIX, UNIX + 1).unwrap();
    forged.network = net.network_id();
    assert!(!forged.verify(&net.network_id()));
    for at in 0..bytes.len() {
        let mut tampered = bytes.clone();
        tampered[at] ^= 0x01;
        if let Ok(view) = RevocationView::new_checked(&tampered) {
            assert!(!view.verify(&net.network_id()), "byte {at}");
        }
        assert!(RevocationView::new_checked(&bytes[..at]).is_err());
    }
    assert_eq!(
        Revocation::issue(&net, key, "", UNIX, UNIX + 1).err(),
        Some(RecordError::BadName)
    );
    assert_eq!(
        Revocation::issue(&net, key, "bad name", UNIX, UNIX + 1).err(),
        Some(RecordError::BadName)
    );
    let mut format = bytes.clone();
    format[0] = 9;
    assert_eq!(
        RevocationView::new_checked(&format).err(),
        Some(RecordError::UnknownFormat(9))
    );
}

#[test]
fn items_parse_by_kind_and_refuse_unknown_kinds() {
    let (secret, cert) = peer();
    let member = record_item(&secret, &cert, 1, 1, "192.0.2.9:1");
    assert!(matches!(Item::parse(&member), Ok(Item::Member { .. })));
    let revocation =
        Revocation::issue(&network(), secret.public_key(), "peer", UNIX, UNIX + 1).unwrap();
    let item = revocation_item(&revocation);
    assert!(matches!(Item::parse(&item), Ok(Item::Revocation(_))));
    assert_eq!(
        Item::parse(&[]).err().map(|e| e.to_string()),
        Some("truncated".into())
    );
    let mut unknown = member.clone();
    unknown[0] = 7;
    assert!(matches!(
        Item::parse(&unknown),
        Err(RecordError::UnknownKind(7))
    ));
    let mut broken_cert = member.clone();
    broken_cert[1] = 0xee;
    assert!(matches!(
        Item::parse(&broken_cert),
        Err(RecordError::Certificate)
    ));
}

#[test]
fn newer_records_and_revocations_invalidate_what_they_replace() {
    let k = StaticSecret::from_bytes([1; 32]).public_key();
    let other = StaticSecret::from_bytes([2; 32]).public_key();
    let rec = |key, version| ItemKey::Record { key, version };
    let rev = |key| ItemKey::Revocation { key };
    assert!(rec(k, 2).invalidates(&rec(k, 1)));
    assert!(!rec(k, 1).invalidates(&rec(k, 2)));
    assert!(!rec(k, 2).invalidates(&rec(other, 1)));
    assert!(rev(k).invalidates(&rec(k, 9)));
    assert!(rev(k).invalidates(&rev(k)));
    assert!(!rec(k, 9).invalidates(&rev(k)));
    assert!(!rev(k).invalidates(&rev(other)));
}

// ------------------------------------------------------------------------- the state machine

#[test]
fn a_valid_record_from_a_member_is_reported_once_and_a_newer_one_again() {
    let now = Instant::now();
    let mut m = node(now);
    let (secret, cert) = peer();
    let from = secret.public_key();
    m.handle_message(
        now,
        from,
        &page(&[record_item(&secret, &cert, 5, 10, "192.0.2.2:1")]),
    );
    let events = drain_events(&mut m);
    assert_eq!(ups(&events), vec![from]);
    let Some(MembershipEvent::MemberUp {
        name, endpoints, ..
    }) = events.first()
    else {
        panic!("expected MemberUp, got {events:?}");
    };
    assert_eq!(name, "peer");
    assert_eq!(
        endpoints,
        &vec!["192.0.2.2:1".parse::<SocketAddr>().unwrap()]
    );
    // The same record again: stale, no event.
    m.handle_message(
        now,
        from,
        &page(&[record_item(&secret, &cert, 5, 10, "192.0.2.2:1")]),
    );
    assert!(drain_events(&mut m).is_empty());
    assert_eq!(m.counters().record_stale, 1);
    // A newer version with a new endpoint: reported again.
    m.handle_message(
        now,
        from,
        &page(&[record_item(&secret, &cert, 5, 11, "192.0.2.3:1")]),
    );
    assert_eq!(ups(&drain_events(&mut m)), vec![from]);
    let members = m.members(now);
    assert_eq!(members.len(), 2);
    let row = members.iter().find(|s| s.key == from).unwrap();
    assert_eq!(row.state, MemberState::Alive);
    assert_eq!(
        row.endpoints,
        vec!["192.0.2.3:1".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(row.cert_expires_at, cert.expires_at);
}

#[test]
fn forged_records_are_refused_and_each_counted() {
    let now = Instant::now();
    let mut m = node(now);
    let (peer_secret, _) = peer();
    let from = peer_secret.public_key();
    let net = network();
    let victim = StaticSecret::from_bytes([0x51; 32]);
    let victim_cert = cert_for(&net, &victim, "victim", UNIX, UNIX + 30 * DAY, false);
    let mallory = StaticSecret::from_bytes([0x52; 32]);
    let mallory_cert = cert_for(&net, &mallory, "mallory", UNIX, UNIX + 30 * DAY, false);
    let rogue_net = NetworkSecret::from_seed([0x53; 32]);

    // Bad signature: one bit of the record signature flipped.
    let mut bad_signature = record_item(&victim, &victim_cert, 1, 1, "192.0.2.5:1");
    *bad_signature.last_mut().unwrap() ^= 1;
    // Wrong network: a certificate from another network key.
    let foreign_cert = cert_for(&rogue_net, &victim, "victim", UNIX, UNIX + 30 * DAY, false);
    let wrong_network = record_item(&victim, &foreign_cert, 1, 1, "192.0.2.5:1");
    // Expired certificate.
    let old_cert = cert_for(&net, &victim, "victim", UNIX - 60 * DAY, UNIX - DAY, false);
    let expired = record_item(&victim, &old_cert, 1, 1, "192.0.2.5:1");
    // Someone else's key: mallory's certificate in front of a record about the victim.
    let record = MemberRecord::sign(
        &mallory.signing_key(),
        &net.network_id(),
        victim.public_key(),
        1,
        1,
        mallory_cert.issued_at,
        &[],
    )
    .unwrap();
    let someone_elses_key = member_item(&mallory_cert, &record);
    // The victim's certificate, but a record signed by mallory's signing key.
    let record = MemberRecord::sign(
        &mallory.signing_key(),
        &net.network_id(),
        victim.public_key(),
        1,
        1,
        victim_cert.issued_at,
        &[],
    )
    .unwrap();
    let wrong_signer = member_item(&victim_cert, &record);
    // A certificate signed by a rogue key that claims our network id.
    let mut rogue = Certificate::issue(
        &rogue_net,
        "victim",
        victim.public_key(),
        victim.signing_key().public(),
        UNIX,
        UNIX + DAY,
        true,
    )
    .unwrap()
    .encode();
    rogue[4..36].copy_from_slice(net.network_id().as_bytes());
    let (rogue_cert, _) = Certificate::decode(&rogue).unwrap();
    let rogue_item = record_item(&victim, &rogue_cert, 1, 1, "192.0.2.5:1");
    // A record signed for another certificate of the key.
    let record = MemberRecord::sign(
        &victim.signing_key(),
        &net.network_id(),
        victim.public_key(),
        1,
        1,
        victim_cert.issued_at + 1,
        &[],
    )
    .unwrap();
    let cert_mismatch = member_item(&victim_cert, &record);

    let forgeries = [
        bad_signature,
        wrong_network,
        expired,
        someone_elses_key,
        wrong_signer,
        rogue_item,
        cert_mismatch,
        vec![ITEM_MEMBER, 1, 2, 3],
    ];
    for pair in forgeries.chunks(2) {
        let payload = page(pair);
        assert!(payload.len() <= MAX_PAYLOAD);
        m.handle_message(now, from, &payload);
    }
    let c = m.counters();
    assert_eq!(c.record_bad_signature, 2, "{c:?}");
    assert_eq!(c.record_wrong_network, 1);
    assert_eq!(c.record_cert_expired, 1);
    assert_eq!(c.record_key_mismatch, 1);
    assert_eq!(c.record_bad_certificate, 1);
    assert_eq!(c.record_cert_mismatch, 1);
    assert_eq!(c.item_malformed, 1);
    assert_eq!(c.record_accepted, 0);
    assert!(ups(&drain_events(&mut m)).is_empty());
    assert_eq!(m.members(now).len(), 1, "only ourselves");

    // The same forgeries as foca custom broadcasts are refused the same way.
    let header = Header {
        src: id(&PEER_SECRET, 1),
        src_incarnation: 0,
        dst: m.identity(),
        message: Message::Gossip,
    };
    let mut bad = record_item(&victim, &victim_cert, 1, 1, "192.0.2.5:1");
    *bad.last_mut().unwrap() ^= 1;
    m.handle_message(now, from, &foca_packet(&header, &[], &[bad]));
    assert_eq!(m.counters().record_bad_signature, 3);
    assert!(ups(&drain_events(&mut m)).is_empty());
}

#[test]
fn foca_packets_must_come_from_their_session_key() {
    let now = Instant::now();
    let mut m = node(now);
    let (peer_secret, _) = peer();
    let header = Header {
        src: id(&[0x77; 32], 1),
        src_incarnation: 0,
        dst: m.identity(),
        message: Message::Ping(1),
    };
    m.handle_message(
        now,
        peer_secret.public_key(),
        &foca_packet(&header, &[], &[]),
    );
    assert_eq!(m.counters().rx_impersonation, 1);
    assert!(
        m.poll_transmit().is_none(),
        "no ack to an impersonated ping"
    );
    let header = Header {
        src: id(&PEER_SECRET, 1),
        ..header
    };
    m.handle_message(
        now,
        peer_secret.public_key(),
        &foca_packet(&header, &[], &[]),
    );
    let (to, ack) = m.poll_transmit().expect("a genuine ping is acked");
    assert_eq!(to, peer_secret.public_key());
    let ack = WireCodec::peek_header(&ack[1..]).unwrap();
    assert_eq!(ack.message, Message::Ack(1));
    assert_eq!(ack.src, m.identity());
    // Addressed to another key.
    let header = Header {
        dst: id(&[0x78; 32], 1),
        ..header
    };
    m.handle_message(
        now,
        peer_secret.public_key(),
        &foca_packet(&header, &[], &[]),
    );
    assert_eq!(m.counters().rx_misaddressed, 1);
}

#[test]
fn framing_errors_are_counted_values() {
    let now = Instant::now();
    let mut m = node(now);
    let from = peer().0.public_key();
    m.handle_message(now, from, &[]);
    m.handle_message(now, from, &vec![SUBTYPE_FOCA; MAX_PAYLOAD + 1]);
    m.handle_message(now, from, &[0xee, 1, 2]);
    m.handle_message(now, from, &[0]);
    m.handle_message(now, from, &[SUBTYPE_FOCA, 1, 2]);
    m.handle_message(now, from, &[SUBTYPE_RENEW_REQUEST, 1]);
    m.handle_message(now, from, &[SUBTYPE_RENEW_REQUEST]);
    m.handle_message(now, from, &[SUBTYPE_SYNC_REQUEST, 0]);
    m.handle_message(now, from, &[SUBTYPE_WANT, 1, 2]);
    m.handle_message(now, from, &[SUBTYPE_RECORDS, 0]);
    let mut truncated_page = page(&[vec![ITEM_MEMBER; 10]]);
    truncated_page.truncate(truncated_page.len() - 1);
    m.handle_message(now, from, &truncated_page);
    m.handle_message(now, from, &[SUBTYPE_RENEW_RESPONSE, 1, 2, 3]);
    let c = m.counters();
    assert_eq!(c.rx_messages, 12);
    assert_eq!(c.rx_bad_length, 2);
    assert_eq!(c.rx_unknown_subtype, 2);
    assert_eq!(c.rx_foca_malformed, 1);
    assert_eq!(c.renew_request_malformed, 1);
    assert_eq!(c.renew_not_admin, 1);
    assert_eq!(c.sync_request_malformed, 1);
    assert_eq!(c.want_malformed, 1);
    assert_eq!(c.page_malformed, 2);
    assert_eq!(c.renew_response_bad, 1);
}

#[test]
fn revocations_are_verified_applied_and_refuse_the_key() {
    let now = Instant::now();
    let mut m = node(now);
    let (secret, cert) = peer();
    let key = secret.public_key();
    m.handle_message(
        now,
        key,
        &page(&[record_item(&secret, &cert, 1, 1, "192.0.2.2:1")]),
    );
    assert_eq!(ups(&drain_events(&mut m)), vec![key]);

    let net = network();
    let other = NetworkSecret::from_seed([3; 32]);
    let foreign = Revocation::issue(&other, key, "peer", UNIX, UNIX + DAY).unwrap();
    assert_eq!(m.revoke(now, foreign), Err(MembershipError::WrongNetwork));
    let mut forged = Revocation::issue(&other, key, "peer", UNIX, UNIX + DAY).unwrap();
    forged.network = net.network_id();
    assert_eq!(m.revoke(now, forged), Err(MembershipError::BadSignature));
    let stale = Revocation::issue(&net, key, "peer", UNIX - 2 * DAY, UNIX - DAY).unwrap();
    assert_eq!(m.revoke(now, stale), Err(MembershipError::Expired));
    assert!(!m.is_revoked(&key));

    let revocation = Revocation::issue(&net, key, "peer", UNIX, UNIX + 30 * DAY).unwrap();
    m.revoke(now, revocation.clone()).unwrap();
    assert!(m.is_revoked(&key));
    let events = drain_events(&mut m);
    assert!(
        matches!(
            &events[..],
            [MembershipEvent::Revoked { revocation: r }, MembershipEvent::MemberDown { key: k }]
                if *r == revocation && *k == key
        ),
        "{events:?}"
    );
    // Idempotent.
    m.revoke(now, revocation).unwrap();
    assert!(drain_events(&mut m).is_empty());
    // Its record, even newer, is refused; its messages are ignored.
    m.handle_message(now, peer().0.public_key(), &page(&[]));
    assert_eq!(m.counters().rx_from_revoked, 1);
    let witness = StaticSecret::from_bytes([0x61; 32]);
    m.handle_message(
        now,
        witness.public_key(),
        &page(&[record_item(&secret, &cert, 1, 99, "192.0.2.2:1")]),
    );
    assert_eq!(m.counters().record_revoked, 1);
    let status = m.members(now);
    assert_eq!(
        status.iter().find(|s| s.key == key).map(|s| s.state),
        Some(MemberState::Revoked)
    );
    // Nothing is ever queued for the revoked key.
    while let Some((to, _)) = m.poll_transmit() {
        assert_ne!(to, key);
    }
}

#[test]
fn revocations_from_disk_are_loaded_without_events() {
    let now = Instant::now();
    let secret = StaticSecret::from_bytes(NODE_SECRET);
    let cert = cert_for(&network(), &secret, "node", UNIX, UNIX + 30 * DAY, false);
    let gone = StaticSecret::from_bytes([0x44; 32]).public_key();
    let mut cfg = config(&secret, cert, now);
    cfg.revocations = vec![
        Revocation::issue(&network(), gone, "gone", UNIX, UNIX + DAY).unwrap(),
        Revocation::issue(
            &NetworkSecret::from_seed([1; 32]),
            gone,
            "gone",
            UNIX,
            UNIX + DAY,
        )
        .unwrap(),
    ];
    let mut m = Membership::new(cfg);
    assert!(m.is_revoked(&gone));
    assert!(drain_events(&mut m).is_empty());
    assert_eq!(m.counters().revocation_refused_local, 1);
}

#[test]
fn a_member_table_is_served_in_pages_and_pulled_to_the_end() {
    let now = Instant::now();
    let net = network();
    // A donor that knows 80 members.
    let mut donor = node(now);
    let (peer_secret, peer_cert) = peer();
    let mut items = Vec::new();
    for i in 0..80u8 {
        let s = StaticSecret::from_bytes([0x80 + i; 32]);
        let c = cert_for(&net, &s, &format!("m{i}"), UNIX, UNIX + 30 * DAY, false);
        items.push(record_item(&s, &c, 1, 1, "192.0.2.77:1"));
    }
    for chunk in items.chunks(3) {
        donor.handle_message(now, peer_secret.public_key(), &page(chunk));
    }
    assert_eq!(donor.counters().record_accepted, 80);
    let _ = drain_events(&mut donor);
    while donor.poll_transmit().is_some() {}

    // A newcomer pulls it through the sync protocol alone.
    let mut newcomer = Membership::new(config(&peer_secret, peer_cert.clone(), now));
    let donor_cert = donor.certificate().clone();
    newcomer.session_established(now, &donor_cert, "192.0.2.1:6655".parse().unwrap());
    let mut rounds = 0;
    loop {
        let mut moved = false;
        while let Some((to, payload)) = newcomer.poll_transmit() {
            assert!(payload.len() <= MAX_PAYLOAD);
            if to == donor.public_key() && payload[0] != SUBTYPE_FOCA {
                donor.handle_message(now, newcomer.public_key(), &payload);
                moved = true;
            }
        }
        while let Some((to, payload)) = donor.poll_transmit() {
            assert!(payload.len() <= MAX_PAYLOAD);
            if to == newcomer.public_key() && payload[0] == SUBTYPE_RECORDS {
                newcomer.handle_message(now, donor.public_key(), &payload);
                moved = true;
            }
        }
        rounds += 1;
        if !moved || rounds > 50 {
            break;
        }
    }
    let c = newcomer.counters();
    assert_eq!(c.syncs_completed, 1, "{c:?}");
    // 80 members plus the donor itself (sent first, and again in key order).
    assert_eq!(c.record_accepted, 81);
    assert!(c.sync_requests_sent >= 2, "80 records do not fit one burst");
    assert_eq!(newcomer.members(now).len(), 82);
}

#[test]
fn our_own_newer_record_from_an_earlier_run_is_overtaken() {
    let now = Instant::now();
    let mut m = node(now);
    let secret = StaticSecret::from_bytes(NODE_SECRET);
    let cert = m.certificate().clone();
    let before = m.record_version();
    let generation = m.identity().generation;
    let relayed = record_item(&secret, &cert, generation + 5, before + 100, "192.0.2.8:1");
    m.handle_message(now, peer().0.public_key(), &page(&[relayed]));
    assert_eq!(m.counters().record_own_newer, 1);
    assert!(m.record_version() > before + 100);
    assert!(m.identity().generation > generation + 5);
}

#[test]
fn renewal_requests_are_answered_only_by_admins_for_known_members_near_expiry() {
    let now = Instant::now();
    let net = network();
    let admin_secret = StaticSecret::from_bytes([0x21; 32]);
    let admin_cert = cert_for(&net, &admin_secret, "admin", UNIX, UNIX + 30 * DAY, true);
    let mut cfg = config(&admin_secret, admin_cert, now);
    cfg.network_secret = Some(network());
    let mut admin = Membership::new(cfg);
    let (secret, _) = peer();
    let from = secret.public_key();
    // Unknown member.
    admin.handle_message(now, from, &[SUBTYPE_RENEW_REQUEST]);
    assert_eq!(admin.counters().renew_unknown_member, 1);
    // Known, with most of its life left.
    let young = cert_for(&net, &secret, "peer", UNIX, UNIX + 30 * DAY, false);
    admin.handle_message(
        now,
        from,
        &page(&[record_item(&secret, &young, 1, 1, "192.0.2.2:1")]),
    );
    admin.handle_message(now, from, &[SUBTYPE_RENEW_REQUEST]);
    assert_eq!(admin.counters().renew_too_early, 1);
    // Known, near expiry: answered with a fresh certificate for the same name and keys.
    let old = cert_for(
        &net,
        &secret,
        "peer",
        UNIX - 25 * DAY,
        UNIX + 5 * DAY,
        false,
    );
    admin.handle_message(
        now,
        from,
        &page(&[record_item(&secret, &old, 1, 2, "192.0.2.2:1")]),
    );
    while admin.poll_transmit().is_some() {}
    admin.handle_message(now, from, &[SUBTYPE_RENEW_REQUEST]);
    assert_eq!(admin.counters().renewals_issued, 1);
    let (to, answer) = std::iter::from_fn(|| admin.poll_transmit())
        .find(|(_, p)| p[0] == SUBTYPE_RENEW_RESPONSE)
        .expect("a renewal answer");
    assert_eq!(to, from);
    let (fresh, used) = Certificate::decode(&answer[1..]).unwrap();
    assert_eq!(used, answer.len() - 1);
    assert_eq!(fresh.name, "peer");
    assert_eq!(fresh.static_key, from);
    assert_eq!(fresh.issued_at, UNIX);
    assert_eq!(fresh.expires_at, UNIX + 30 * DAY);
    assert!(fresh.verify(&net.network_id(), UNIX).is_ok());
}

// ------------------------------------------------------------------------------ robustness

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random bytes behind every subtype: no panic, every payload counted.
    #[test]
    fn random_payloads_never_panic(subtype in 0u8..8, body in proptest::collection::vec(any::<u8>(), 0..1300)) {
        let now = Instant::now();
        let mut m = node(now);
        let from = peer().0.public_key();
        let mut payload = vec![subtype];
        payload.extend_from_slice(&body);
        m.handle_message(now, from, &payload);
        m.handle_timeout(now + Duration::from_secs(2));
        prop_assert_eq!(m.counters().rx_messages, 1);
        while let Some((_, p)) = m.poll_transmit() {
            prop_assert!(p.len() <= MAX_PAYLOAD);
        }
        let _ = Item::parse(&body);
        let _ = RecordView::new_checked(&body);
        let _ = RevocationView::new_checked(&body);
        let _ = WireCodec::peek_header(&body);
    }

    /// Mutated genuine payloads (a record page, a foca gossip packet) never panic either.
    #[test]
    fn mutated_payloads_never_panic(which in 0usize..2, flips in proptest::collection::vec((any::<u16>(), any::<u8>()), 1..8)) {
        let now = Instant::now();
        let mut m = node(now);
        let mut payload = fuzz_seeds()[which].1.clone();
        for (at, bits) in flips {
            let at = usize::from(at) % payload.len();
            payload[at] ^= bits.max(1);
        }
        m.handle_message(now, peer().0.public_key(), &payload);
        prop_assert_eq!(m.counters().rx_messages, 1);
    }
}

/// Seeds for fuzz/fuzz_targets/membership.rs: payloads from the fixture peer to the fixture
/// node.
pub(crate) fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let (secret, cert) = peer();
    let item = record_item(&secret, &cert, UNIX as u32, UNIX, "192.0.2.2:6655");
    let node_id = id(&NODE_SECRET, UNIX as u32);
    let gossip = Header {
        src: id(&PEER_SECRET, UNIX as u32),
        src_incarnation: 0,
        dst: node_id,
        message: Message::Gossip,
    };
    let update = Member::new(id(&[0x45; 32], 3), 1, State::Suspect);
    let revocation = Revocation::issue(
        &network(),
        StaticSecret::from_bytes([0x46; 32]).public_key(),
        "gone",
        UNIX,
        UNIX + DAY,
    )
    .unwrap();
    let mut sync = vec![SUBTYPE_SYNC_REQUEST, PAGE_FROM_START];
    sync.extend_from_slice(&[0; 32]);
    sync.push(SYNC_PAGES_PER_REQUEST);
    let mut want = vec![SUBTYPE_WANT];
    want.extend_from_slice(secret.public_key().as_bytes());
    vec![
        ("records-page", page(std::slice::from_ref(&item))),
        (
            "foca-gossip",
            foca_packet(&gossip, &[update], std::slice::from_ref(&item)),
        ),
        (
            "foca-announce",
            foca_packet(
                &Header {
                    message: Message::Announce,
                    ..gossip.clone()
                },
                &[],
                &[],
            ),
        ),
        (
            "foca-ping",
            foca_packet(
                &Header {
                    message: Message::Ping(7),
                    ..gossip.clone()
                },
                &[],
                &[],
            ),
        ),
        ("revocation-page", page(&[revocation_item(&revocation)])),
        ("sync-request", sync),
        ("want", want),
        (
            "digest",
            crate::wire::membership::emit_digest(&[0; DIGEST_BUCKETS]),
        ),
        (
            "index",
            crate::wire::membership::emit_index(&[(secret.public_key(), UNIX)]),
        ),
        ("renew-request", vec![SUBTYPE_RENEW_REQUEST]),
        (
            "renew-response",
            [&[SUBTYPE_RENEW_RESPONSE][..], &cert.encode()].concat(),
        ),
    ]
}

/// Keeps fuzz/corpus/membership/seed-* equal to `fuzz_seeds()`. Regenerate with
/// `MESHD_WRITE_FUZZ_SEEDS=1 cargo test --lib membership::tests::fuzz_seed_corpus_is_current`.
#[test]
fn fuzz_seed_corpus_is_current() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/membership");
    for (name, bytes) in fuzz_seeds() {
        let now = Instant::now();
        let mut m = node(now);
        m.handle_message(now, peer().0.public_key(), &bytes);
        let path = corpus.join(format!("seed-{name}"));
        crate::test_support::check_or_write_fuzz_seed(&path, &bytes);
    }
}

#[test]
fn genuine_seeds_are_accepted() {
    let now = Instant::now();
    let mut m = node(now);
    let from = peer().0.public_key();
    for (name, bytes) in fuzz_seeds() {
        m.handle_message(now, from, &bytes);
        let c = m.counters();
        assert_eq!(
            c.rx_bad_length + c.rx_unknown_subtype + c.rx_foca_malformed,
            0,
            "{name}"
        );
        assert_eq!(
            c.rx_impersonation + c.page_malformed + c.item_malformed,
            0,
            "{name}"
        );
    }
    let c = m.counters();
    assert_eq!(c.record_accepted, 1);
    assert_eq!(c.revocation_accepted, 1);
}

/// Runs digest → index → want → pages between `asker` (sends its digest) and `answerer`
/// until they are quiet; returns the time reached.
fn anti_entropy_round(asker: &mut Membership, answerer: &mut Membership, now: Instant) -> Instant {
    let digest = {
        let d = lock(&asker.registry).digest();
        let mut p = vec![SUBTYPE_DIGEST];
        for sum in d {
            p.extend_from_slice(&sum.to_le_bytes());
        }
        p
    };
    let (ka, kb) = (asker.public_key(), answerer.public_key());
    let mut to_answerer = vec![digest];
    let mut later = now;
    for _ in 0..6 {
        later += Duration::from_millis(1100);
        for payload in to_answerer.drain(..) {
            answerer.handle_message(later, ka, &payload);
        }
        let to_asker: Vec<Vec<u8>> = std::iter::from_fn(|| answerer.poll_transmit())
            .filter(|(to, p)| *to == ka && p[0] != SUBTYPE_FOCA)
            .map(|(_, p)| p)
            .collect();
        for payload in to_asker {
            asker.handle_message(later, kb, &payload);
        }
        asker.handle_timeout(later);
        to_answerer = std::iter::from_fn(|| asker.poll_transmit())
            .filter(|(to, p)| *to == kb && p[0] != SUBTYPE_FOCA)
            .map(|(_, p)| p)
            .collect();
    }
    later
}

#[test]
fn anti_entropy_repairs_missed_records_and_revocations() {
    let now = Instant::now();
    let net = network();
    let (peer_secret, peer_cert) = peer();
    let mut a = node(now);
    let mut b = Membership::new(config(&peer_secret, peer_cert, now));
    let relay = StaticSecret::from_bytes([0x70; 32]).public_key();
    let member = |seed: u8, version: u64| {
        let s = StaticSecret::from_bytes([seed; 32]);
        let c = cert_for(&net, &s, &format!("m{seed}"), UNIX, UNIX + 30 * DAY, false);
        (
            s.public_key(),
            record_item(&s, &c, 1, version, "192.0.2.40:1"),
        )
    };
    let (x, x1) = member(0x71, 1);
    let (_, x2) = member(0x71, 2);
    let (y, y1) = member(0x72, 1);
    let (z, z1) = member(0x73, 1);
    let revocation =
        revocation_item(&Revocation::issue(&net, z, "m115", UNIX, UNIX + DAY).unwrap());
    // A knows x at version 2, y, and that z is revoked; B knows x at version 1 and z's record.
    a.handle_message(now, relay, &page(&[x2, y1]));
    a.handle_message(now, relay, &page(&[revocation]));
    b.handle_message(now, relay, &page(&[x1, z1.clone()]));
    assert!(a.is_revoked(&z) && !b.is_revoked(&z));
    for m in [&mut a, &mut b] {
        while m.poll_transmit().is_some() {}
        drain_events(m);
    }
    // B asks A: it learns x's newer record, y, and z's revocation.
    let later = anti_entropy_round(&mut b, &mut a, now);
    let c = b.counters();
    assert!(c.digests_sent + c.index_keys_wanted >= 3, "{c:?}");
    assert!(b.is_revoked(&z), "the revocation reached B");
    assert_eq!(lock(&b.registry).record(&x).map(|r| r.version), Some(2));
    assert!(lock(&b.registry).record(&y).is_some());
    // A asks C, which missed the revocation: C's index shows z's record, and A pushes the
    // revocation to it.
    let c_secret = StaticSecret::from_bytes([0x74; 32]);
    let c_cert = cert_for(&net, &c_secret, "third", UNIX, UNIX + 30 * DAY, false);
    let mut third = Membership::new(config(&c_secret, c_cert, now));
    third.handle_message(now, relay, &page(&[z1]));
    while third.poll_transmit().is_some() {}
    anti_entropy_round(&mut a, &mut third, later);
    assert_eq!(a.counters().revocations_pushed, 1);
    assert!(third.is_revoked(&z));
    // Equal tables: a digest matches and costs one message.
    let before = a.counters().digests_matched;
    let digest = {
        let d = lock(&a.registry).digest();
        let mut p = vec![SUBTYPE_DIGEST];
        for sum in d {
            p.extend_from_slice(&sum.to_le_bytes());
        }
        p
    };
    a.handle_message(later, relay, &digest);
    assert_eq!(a.counters().digests_matched, before + 1);
    assert!(a.poll_transmit().is_none());
}

#[test]
fn sessions_with_members_foca_has_alive_cost_nothing() {
    let now = Instant::now();
    let mut m = node(now);
    let (secret, cert) = peer();
    m.handle_message(
        now,
        secret.public_key(),
        &page(&[record_item(&secret, &cert, 1, 1, "192.0.2.2:1")]),
    );
    // A first session before the table was pulled: announce and pull.
    m.session_established(now, &cert, "192.0.2.2:1".parse().unwrap());
    let sent: Vec<u8> = std::iter::from_fn(|| m.poll_transmit())
        .map(|(_, p)| p[0])
        .collect();
    assert!(sent.contains(&SUBTYPE_FOCA) && sent.contains(&SUBTYPE_SYNC_REQUEST));
    // Once pulled, a rekey (the node reports every handshake) sends nothing.
    let donor = node(now);
    m.adopt_verified_state(now, &donor);
    while m.poll_transmit().is_some() {}
    m.session_established(now, &cert, "192.0.2.2:1".parse().unwrap());
    assert!(m.poll_transmit().is_none());
}

// --------------------------------------------------------------- a hostile member (issue 14)

/// A foca Gossip packet from the fixture peer (at `generation`) to `m`, carrying `updates`.
fn gossip_from_peer(m: &Membership, generation: u32, updates: &[Member<MemberId>]) -> Vec<u8> {
    let header = Header {
        src: id(&PEER_SECRET, generation),
        src_incarnation: 0,
        dst: m.identity(),
        message: Message::Gossip,
    };
    foca_packet(&header, updates, &[])
}

#[test]
fn updates_count_only_at_the_generation_the_member_signed() {
    let now = Instant::now();
    let mut m = node(now);
    let (peer_secret, peer_cert) = peer();
    let from = peer_secret.public_key();
    let third = StaticSecret::from_bytes([0x91; 32]);
    let third_cert = cert_for(&network(), &third, "third", UNIX, UNIX + 30 * DAY, false);
    m.handle_message(
        now,
        from,
        &page(&[
            record_item(&peer_secret, &peer_cert, 7, 1, "192.0.2.2:1"),
            record_item(&third, &third_cert, 40, 1, "192.0.2.3:1"),
        ]),
    );
    let state_of = |m: &Membership, key: PublicKey| {
        m.members(now)
            .into_iter()
            .find(|r| r.key == key)
            .map(|r| r.state)
    };
    assert_eq!(state_of(&m, third.public_key()), Some(MemberState::Alive));
    let about = |generation| MemberId {
        key: third.public_key(),
        generation,
    };
    let own = m.identity();
    // Another generation of the third member (above, below, u32::MAX), and of this node:
    // dropped and counted, nothing changes.
    let forged = [
        Member::new(about(u32::MAX), 0, State::Down),
        Member::new(about(41), 0, State::Down),
        Member::new(about(39), 0, State::Suspect),
        Member::new(
            MemberId {
                generation: u32::MAX,
                ..own
            },
            0,
            State::Down,
        ),
        Member::new(
            MemberId {
                generation: own.generation + 1,
                ..own
            },
            0,
            State::Down,
        ),
    ];
    m.handle_message(now, from, &gossip_from_peer(&m, 7, &forged));
    assert_eq!(m.counters().updates_wrong_generation, 5);
    assert_eq!(
        m.counters().rx_foca_rejected,
        0,
        "the rest of the packet is intact"
    );
    assert_eq!(state_of(&m, third.public_key()), Some(MemberState::Alive));
    assert_eq!(m.identity(), own, "no rejoin");
    // At the signed generation the update is SWIM's word, and foca takes it.
    let genuine = [Member::new(about(40), 1, State::Suspect)];
    m.handle_message(now, from, &gossip_from_peer(&m, 7, &genuine));
    assert_eq!(m.counters().updates_wrong_generation, 5);
    assert_eq!(state_of(&m, third.public_key()), Some(MemberState::Suspect));
    // A member without a record yet: the generation it claimed itself in its own packets.
    let early = StaticSecret::from_bytes([0x92; 32]);
    let early_id = MemberId {
        key: early.public_key(),
        generation: 3,
    };
    let header = Header {
        src: early_id,
        src_incarnation: 0,
        dst: m.identity(),
        message: Message::Ping(1),
    };
    m.handle_message(now, early.public_key(), &foca_packet(&header, &[], &[]));
    let early_down = |generation| {
        [Member::new(
            MemberId {
                generation,
                ..early_id
            },
            0,
            State::Suspect,
        )]
    };
    m.handle_message(now, from, &gossip_from_peer(&m, 7, &early_down(u32::MAX)));
    assert_eq!(m.counters().updates_wrong_generation, 6);
    m.handle_message(now, from, &gossip_from_peer(&m, 7, &early_down(3)));
    assert_eq!(m.counters().updates_wrong_generation, 6);
}

#[test]
fn records_above_the_version_bound_are_refused() {
    let now = Instant::now();
    let mut m = node(now);
    let (secret, cert) = peer();
    let witness = StaticSecret::from_bytes([0x61; 32]).public_key();
    for version in [u64::MAX, MAX_RECORD_VERSION + 1] {
        m.handle_message(
            now,
            witness,
            &page(&[record_item(&secret, &cert, 1, version, "192.0.2.2:1")]),
        );
    }
    assert_eq!(m.counters().record_version_invalid, 2);
    assert!(ups(&drain_events(&mut m)).is_empty());
    m.handle_message(
        now,
        witness,
        &page(&[record_item(
            &secret,
            &cert,
            1,
            MAX_RECORD_VERSION,
            "192.0.2.2:1",
        )]),
    );
    assert_eq!(ups(&drain_events(&mut m)), vec![secret.public_key()]);
    // Our own record from "an earlier run" at the bound: we follow it but never pass it.
    let own_secret = StaticSecret::from_bytes(NODE_SECRET);
    let own_cert = m.certificate().clone();
    let generation = m.identity().generation;
    m.handle_message(
        now,
        witness,
        &page(&[record_item(
            &own_secret,
            &own_cert,
            generation,
            MAX_RECORD_VERSION,
            "192.0.2.8:1",
        )]),
    );
    assert_eq!(m.record_version(), MAX_RECORD_VERSION);
    m.set_endpoints(vec!["192.0.2.9:1".parse().unwrap()]);
    assert_eq!(m.record_version(), MAX_RECORD_VERSION);
}

#[test]
fn a_revocation_outranks_every_record_in_digests_and_indexes() {
    let now = Instant::now();
    let net = network();
    let relay = StaticSecret::from_bytes([0x70; 32]).public_key();
    let s = StaticSecret::from_bytes([0x75; 32]);
    let c = cert_for(&net, &s, "m117", UNIX, UNIX + 30 * DAY, false);
    let key = s.public_key();
    let top = record_item(&s, &c, 1, MAX_RECORD_VERSION, "192.0.2.40:1");
    let revocation =
        revocation_item(&Revocation::issue(&net, key, "m117", UNIX, UNIX + DAY).unwrap());
    assert!(registry::Rank::Revoked > registry::Rank::Record(MAX_RECORD_VERSION));
    assert_eq!(registry::Rank::from_wire(u64::MAX), registry::Rank::Revoked);
    assert_eq!(
        registry::Rank::from_wire(MAX_RECORD_VERSION),
        registry::Rank::Record(MAX_RECORD_VERSION)
    );

    // A holds the record at the highest version there is; B the revocation.
    let mut a = node(now);
    let (peer_secret, peer_cert) = peer();
    let mut b = Membership::new(config(&peer_secret, peer_cert, now));
    a.handle_message(now, relay, &page(std::slice::from_ref(&top)));
    b.handle_message(now, relay, &page(&[revocation]));
    let bucket = registry::bucket(&key);
    assert_ne!(
        lock(&a.registry).digest()[bucket],
        lock(&b.registry).digest()[bucket],
        "the two tables differ in that bucket"
    );
    for m in [&mut a, &mut b] {
        while m.poll_transmit().is_some() {}
        drain_events(m);
    }
    // B's index says revoked: A wants the key (and is sent the revocation).
    a.handle_message(
        now,
        b.public_key(),
        &crate::wire::membership::emit_index(&[(key, u64::MAX)]),
    );
    assert_eq!(a.counters().index_keys_wanted, 1);
    // A's index shows the record at the bound: B pushes the revocation.
    b.handle_message(
        now,
        a.public_key(),
        &crate::wire::membership::emit_index(&[(key, MAX_RECORD_VERSION)]),
    );
    assert_eq!(b.counters().revocations_pushed, 1);
    let pushed: Vec<Vec<u8>> = std::iter::from_fn(|| b.poll_transmit())
        .filter(|(to, p)| *to == a.public_key() && p[0] == SUBTYPE_RECORDS)
        .map(|(_, p)| p)
        .collect();
    for payload in pushed {
        a.handle_message(now, b.public_key(), &payload);
    }
    assert!(a.is_revoked(&key));
    assert_eq!(
        lock(&a.registry).digest()[bucket],
        lock(&b.registry).digest()[bucket]
    );
}

#[test]
fn a_revocation_is_kept_as_long_as_the_newest_certificate_of_its_key() {
    let now = Instant::now();
    let net = network();
    let witness = StaticSecret::from_bytes([0x61; 32]).public_key();
    let s = StaticSecret::from_bytes([0x76; 32]);
    let key = s.public_key();
    let long_cert = cert_for(&net, &s, "m118", UNIX, UNIX + 90 * DAY, false);
    let row_expiry = |m: &Membership| {
        m.members(now)
            .into_iter()
            .find(|r| r.key == key)
            .map(|r| (r.state, r.cert_expires_at))
    };

    // Held: a record under a 90-day certificate. The revocation says 30 days.
    let mut m = node(now);
    m.handle_message(
        now,
        witness,
        &page(&[record_item(&s, &long_cert, 1, 1, "192.0.2.41:1")]),
    );
    let revocation = Revocation::issue(&net, key, "m118", UNIX, UNIX + 30 * DAY).unwrap();
    m.revoke(now, revocation.clone()).unwrap();
    drain_events(&mut m);
    assert_eq!(
        row_expiry(&m),
        Some((MemberState::Revoked, UNIX + 90 * DAY))
    );
    assert_eq!(m.counters().revocation_extended, 1);
    // Day 31: still kept, still refusing the member's record.
    let day31 = now + Duration::from_secs(31 * DAY);
    m.handle_timeout(day31);
    assert!(m.is_revoked(&key));
    m.handle_message(
        day31,
        witness,
        &page(&[record_item(&s, &long_cert, 1, 2, "192.0.2.41:1")]),
    );
    assert_eq!(m.counters().record_revoked, 1);
    assert!(ups(&drain_events(&mut m)).is_empty());
    // A certificate shown after the revocation (an admin that missed it renewed the member)
    // extends it again, once; the record stays refused.
    let renewed = cert_for(&net, &s, "m118", UNIX + 31 * DAY, UNIX + 120 * DAY, false);
    for _ in 0..2 {
        m.handle_message(
            day31,
            witness,
            &page(&[record_item(&s, &renewed, 1, 3, "192.0.2.41:1")]),
        );
    }
    assert_eq!(m.counters().revocation_extended, 2);
    assert_eq!(m.counters().record_revoked, 3);
    assert_eq!(
        row_expiry(&m),
        Some((MemberState::Revoked, UNIX + 120 * DAY))
    );
    // A forged certificate (not signed by the network key) extends nothing.
    let rogue = NetworkSecret::from_seed([0x77; 32]);
    let mut forged = cert_for(&rogue, &s, "m118", UNIX + 31 * DAY, UNIX + 999 * DAY, false);
    forged.network = net.network_id();
    m.handle_message(
        day31,
        witness,
        &page(&[record_item(&s, &forged, 1, 4, "192.0.2.41:1")]),
    );
    assert_eq!(m.counters().revocation_extended, 2);
    m.handle_timeout(now + Duration::from_secs(119 * DAY));
    assert!(m.is_revoked(&key));
    m.handle_timeout(now + Duration::from_secs(121 * DAY));
    assert!(!m.is_revoked(&key));

    // Past its own expiry, a revocation still counts for a node that holds a valid certificate
    // of the key (it is what keeps the member out there), and is stale news for one that does
    // not.
    let late = now + Duration::from_secs(31 * DAY);
    let revocation_item = revocation_item(&revocation);
    let mut holder = node(now);
    holder.handle_message(
        now,
        witness,
        &page(&[record_item(&s, &long_cert, 1, 1, "192.0.2.41:1")]),
    );
    holder.handle_message(late, witness, &page(std::slice::from_ref(&revocation_item)));
    assert!(holder.is_revoked(&key));
    let mut stranger = node(now);
    stranger.handle_message(late, witness, &page(&[revocation_item]));
    assert!(!stranger.is_revoked(&key));
    assert_eq!(stranger.counters().revocation_expired, 1);
}

#[test]
fn an_admin_writes_the_newest_certificate_expiry_into_a_revocation() {
    let lifetime = Duration::from_secs(30 * DAY);
    assert_eq!(revocation_expiry(UNIX, lifetime, None), UNIX + 30 * DAY);
    assert_eq!(
        revocation_expiry(UNIX, lifetime, Some(UNIX + 90 * DAY)),
        UNIX + 90 * DAY
    );
    assert_eq!(
        revocation_expiry(UNIX, lifetime, Some(UNIX + DAY)),
        UNIX + 30 * DAY
    );
    assert_eq!(revocation_expiry(u64::MAX - 1, lifetime, None), u64::MAX);
}

#[test]
fn a_revocation_kept_only_for_a_later_certificate_repairs_without_churn() {
    let now = Instant::now();
    let net = network();
    let witness = StaticSecret::from_bytes([0x61; 32]).public_key();
    let s = StaticSecret::from_bytes([0x79; 32]);
    let key = s.public_key();
    let b = registry::bucket(&key);
    let (peer_secret, peer_cert) = peer();
    let node_key = StaticSecret::from_bytes(NODE_SECRET).public_key();
    assert!(b != registry::bucket(&node_key) && b != registry::bucket(&peer_secret.public_key()));
    let long_cert = cert_for(&net, &s, "m121", UNIX, UNIX + 90 * DAY, false);
    let record = record_item(&s, &long_cert, 1, 1, "192.0.2.42:1");
    let revocation = Revocation::issue(&net, key, "m121", UNIX, UNIX + 30 * DAY).unwrap();

    // The keeper saw the 90-day certificate and keeps the 30-day revocation for 90 days.
    let mut keeper = node(now);
    keeper.handle_message(now, witness, &page(std::slice::from_ref(&record)));
    keeper.revoke(now, revocation).unwrap();
    let day31 = now + Duration::from_secs(31 * DAY);
    keeper.handle_timeout(day31);
    assert!(keeper.is_revoked(&key));
    // A member that never saw that certificate dropped the revocation at day 30 (here: never
    // had it). Their tables compare equal, so nobody asks for a revocation it would refuse.
    let mut stranger = Membership::new(config(&peer_secret, peer_cert, now));
    stranger.handle_timeout(day31);
    let bucket_sum = |m: &Membership| lock(&m.registry).digest()[b];
    assert_eq!(bucket_sum(&keeper), bucket_sum(&stranger));
    // Once it takes the member's record (under that certificate), the tables differ; the
    // keeper's next round pushes the revocation, which it takes for the certificate it holds.
    stranger.handle_message(day31, witness, &page(&[record]));
    assert!(!stranger.is_revoked(&key));
    assert_ne!(bucket_sum(&keeper), bucket_sum(&stranger));
    for m in [&mut keeper, &mut stranger] {
        while m.poll_transmit().is_some() {}
        drain_events(m);
    }
    anti_entropy_round(&mut keeper, &mut stranger, day31);
    assert_eq!(keeper.counters().revocations_pushed, 1);
    assert!(stranger.is_revoked(&key));
    assert_eq!(bucket_sum(&keeper), bucket_sum(&stranger));
}
