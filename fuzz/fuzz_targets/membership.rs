//! Membership payloads: the payload views of `meshd::wire::membership`, the record, revocation
//! and item views and foca's header codec never panic, and whatever they accept re-encodes to
//! the same bytes; the same bytes, as a payload
//! from an authenticated member, go through a real `Membership` that has a session with that
//! member and a table pull from it in progress (so record pages continue a run).
//! Invariants: no panic; the payload is counted; every payload the node queues fits in
//! `MAX_PAYLOAD`. Seeds come from `fuzz_seeds()` in src/core/membership/tests.rs, whose fixture
//! (network, node and peer keys, clock) this target repeats.

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use foca::Codec as _;
use libfuzzer_sys::fuzz_target;
use meshd::core::membership::{
    Item, MemberRecord, Membership, MembershipConfig, RecordView, Revocation, RevocationView,
    WireCodec, MAX_PAYLOAD,
};
use meshd::wire::membership::{
    emit_digest, emit_index, emit_sync_request, emit_want, Digest, Index, MembershipPayload,
    PageWriter, RecordsPage, RenewRequest, RenewResponse, Subtype, SyncRequest, Want,
    DIGEST_BUCKETS, PAGE_FROM_START,
};
use meshd_crypto::{Certificate, NetworkSecret, StaticSecret};

const NETWORK_SEED: [u8; 32] = [0x41; 32];
const NODE_SECRET: [u8; 32] = [0x42; 32];
const PEER_SECRET: [u8; 32] = [0x43; 32];
const UNIX: u64 = 1_800_000_000;
const LIFETIME: u64 = 30 * 24 * 60 * 60;

struct Fixture {
    network: NetworkSecret,
    node_cert: Certificate,
    peer_cert: Certificate,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let network = NetworkSecret::from_seed(NETWORK_SEED);
        let issue = |secret: &StaticSecret, name: &str| {
            Certificate::issue(
                &network,
                name,
                secret.public_key(),
                secret.signing_key().public(),
                UNIX,
                UNIX + LIFETIME,
                false,
            )
            .expect("fixture certificate")
        };
        let node_cert = issue(&StaticSecret::from_bytes(NODE_SECRET), "node");
        let peer_cert = issue(&StaticSecret::from_bytes(PEER_SECRET), "peer");
        Fixture {
            network,
            node_cert,
            peer_cert,
        }
    })
}

fn check_views(data: &[u8]) {
    if let Ok(view) = RecordView::new_checked(data) {
        assert_eq!(MemberRecord::from_view(&view).encode(), data);
    }
    if let Ok(view) = RevocationView::new_checked(data) {
        assert_eq!(Revocation::from_view(&view).encode(), data);
    }
    let _ = Item::parse(data);
    if let Ok(header) = WireCodec::peek_header(data) {
        let mut again = Vec::new();
        WireCodec
            .encode_header(&header, &mut again)
            .expect("a decoded header encodes");
        assert_eq!(&data[..again.len()], &again[..]);
    }
}

/// Every payload view over `data` (a whole payload): accessors never panic, and what a view
/// accepted is rebuilt byte for byte by its emitter.
fn check_payload_views(data: &[u8]) {
    let Ok(payload) = MembershipPayload::new_checked(data) else {
        return;
    };
    let body = payload.body();
    match payload.subtype() {
        Subtype::SyncRequest => {
            if let Ok(request) = SyncRequest::new_checked(body) {
                let again = emit_sync_request(request.after().as_ref(), request.pages());
                // The cursor of a run from the start is not read, and zeros are sent for it.
                if request.after().is_some() || body[1..33] == [0; 32] {
                    assert_eq!(again[2..], data[2..]);
                }
                assert_eq!(again[1] & PAGE_FROM_START, data[1] & PAGE_FROM_START);
            }
        }
        Subtype::Records => {
            if let Ok(page) = RecordsPage::new_checked(body) {
                let mut writer = PageWriter::new(page.flags(), None);
                for item in page.items() {
                    assert!(writer.push(item), "an accepted item fits again");
                }
                let again = writer.finish();
                if page.is_intact() {
                    assert_eq!(again[34..], data[34..]);
                }
                let _ = page.after();
            }
        }
        Subtype::Want => {
            if let Ok(want) = Want::new_checked(body) {
                let keys: Vec<_> = want.keys().collect();
                assert_eq!(emit_want(&keys), data);
            }
        }
        Subtype::Digest => {
            if let Ok(digest) = Digest::new_checked(body) {
                let mut sums = [0u64; DIGEST_BUCKETS];
                for (sum, read) in sums.iter_mut().zip(digest.sums()) {
                    *sum = read;
                }
                assert_eq!(emit_digest(&sums), data);
            }
        }
        Subtype::Index => {
            if let Ok(index) = Index::new_checked(body) {
                let entries: Vec<_> = index.entries().collect();
                if entries.len() <= meshd::wire::membership::INDEX_MAX_ENTRIES {
                    assert_eq!(emit_index(&entries), data);
                }
            }
        }
        Subtype::RenewRequest => {
            let _ = RenewRequest::new_checked(body);
        }
        Subtype::RenewResponse => {
            if let Ok(response) = RenewResponse::new_checked(body) {
                assert_eq!(response.certificate_bytes(), body);
            }
        }
        Subtype::Foca | Subtype::Unknown(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    check_payload_views(data);
    check_views(data);
    if let Some(rest) = data.get(1..) {
        check_views(rest);
    }

    let f = fixture();
    let now = Instant::now();
    let node_secret = StaticSecret::from_bytes(NODE_SECRET);
    let mut node = Membership::new(MembershipConfig {
        network: f.network.network_id(),
        certificate: f.node_cert.clone(),
        signing_key: node_secret.signing_key(),
        network_secret: None,
        endpoints: vec!["192.0.2.1:6655".parse().expect("endpoint")],
        revocations: Vec::new(),
        now,
        unix_secs_at_now: UNIX,
        rng_seed: [9; 32],
        certificate_lifetime: Duration::from_secs(LIFETIME),
    });
    let peer = f.peer_cert.static_key;
    node.session_established(
        now,
        &f.peer_cert,
        "192.0.2.2:6655".parse().expect("endpoint"),
    );
    while node.poll_transmit().is_some() {}
    node.handle_message(now, peer, data);
    assert_eq!(node.counters().rx_messages, 1);
    node.handle_timeout(now + Duration::from_secs(3));
    while let Some((_, payload)) = node.poll_transmit() {
        assert!(payload.len() <= MAX_PAYLOAD);
    }
    while node.poll_event().is_some() {}
    let _ = node.members(now);
});
