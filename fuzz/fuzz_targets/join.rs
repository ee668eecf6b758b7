//! The join exchange on both sides, with a real inviter (`InviteBook` holding one invitation, the
//! network key, a name already taken) and a real `JoinClient` that sent one request.
//!
//! The first input byte picks what the rest is:
//! * 0: a raw datagram, handed to the book and to the client;
//! * 1: the same with a valid mac1 for each receiver, so it reaches Noise;
//! * 2: the plaintext payload of a genuine Noise request from the joiner to the inviter (reaches
//!   the payload parser, the secret and name checks and certificate issuance);
//! * 3: the plaintext payload of a genuine Noise response to the client's request (reaches the
//!   response parser and the certificate checks).
//!
//! Invariants: no panic; every reply the book produces parses as a JoinResponse or JoinRefused of
//! at most `JOIN_MAX_LEN` bytes; an admission carries a certificate that verifies for the network
//! and names the key that proved itself; a join result carries a certificate for the client's own
//! key and name.

#![no_main]

use meshd::core::ranges::{ContainerNetwork, Range4};
use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use meshd::core::invite::{
    BootstrapMember, InviteBook, JoinClient, JoinContext, JoinOutcome, PendingInvite,
    JOIN_PROLOGUE,
};
use meshd::wire::{
    classify, InviteSecret, InviteToken, JoinRefused, JoinRequest, JoinResponse, MessageType,
    JOIN_MAX_LEN, MAC_LEN,
};
use meshd_crypto::{
    compute_mac1, mac1_key, respond, CoreRng, Initiator, NetworkSecret, PublicKey, StaticSecret,
    MAX_HANDSHAKE_PAYLOAD,
};

// Must match `fuzz_seeds()` in src/core/invite/tests.rs.
const NOW: u64 = 1_800_000_000;
const EXPIRES: u64 = NOW + 3600;
const LIFETIME: u64 = 30 * 24 * 3600;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn with_mac1(datagram: &[u8], key: &[u8; 32]) -> Vec<u8> {
    let mut out = datagram.to_vec();
    if out.len() >= MAC_LEN {
        let covered = out.len() - MAC_LEN;
        let mac = compute_mac1(key, &out[..covered]);
        out[covered..].copy_from_slice(&mac);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let inviter = StaticSecret::from_bytes([0x11; 32]);
    let network_secret = NetworkSecret::from_seed([0x22; 32]);
    let network = network_secret.network_id();
    let secret = InviteSecret::from_bytes([0x33; 32]);
    let joiner = StaticSecret::from_bytes([0x44; 32]);
    let inviter_mac1 = mac1_key(&inviter.public_key());
    let joiner_mac1 = mac1_key(&joiner.public_key());

    let mut book = InviteBook::new();
    book.set_pending(vec![PendingInvite {
        id: secret.id(),
        secret_hash: secret.hash(),
        expires_at: EXPIRES,
        name: None,
        range: None,
    }]);
    let token = InviteToken::new(
        network,
        inviter.public_key(),
        vec![addr("192.0.2.1:6655")],
        secret.clone(),
        EXPIRES,
        None,
    )
    .unwrap();
    let mut client = JoinClient::new(
        &token,
        &joiner,
        "joiner",
        vec![addr("192.0.2.2:6655")],
        &mut CoreRng::from_seed([0x55; 32]),
        NOW,
    )
    .unwrap();
    let request = client.request().unwrap();

    let taken_key = PublicKey::from_bytes([0x66; 32]);
    let name_taken = |name: &str, key: &PublicKey| name == "taken" && *key != taken_key;
    let bootstrap = [BootstrapMember {
        name: "inviter".into(),
        key: inviter.public_key(),
        endpoints: vec![addr("192.0.2.1:6655")],
    }];
    let mut rng = CoreRng::from_seed([0x77; 32]);
    // Admissions grant ranges, so the grant path is fuzzed too.
    let container_network =
        ContainerNetwork::new("10.77.0.0/16".parse().unwrap(), 24, None).unwrap();
    let held: Vec<Range4> = vec!["10.77.0.0/24".parse().unwrap()];
    let mut to_book = |datagram: &[u8]| {
        let mut ctx = JoinContext {
            now_unix: NOW,
            local: &inviter,
            our_mac1_key: &inviter_mac1,
            network,
            network_secret: Some(&network_secret),
            rng: &mut rng,
            name_taken: &name_taken,
            bootstrap: &|| bootstrap.to_vec(),
            container_network: Some(container_network),
            ranges_out_of_pool: &|| held.clone(),
            certificate_lifetime: LIFETIME,
        };
        let outcome = book.handle_request(&mut ctx, addr("192.0.2.2:40000"), datagram);
        check_outcome(&outcome, &network);
    };

    match mode % 4 {
        0 => {
            to_book(rest);
            let _ = client.handle_reply(rest);
        }
        1 => {
            to_book(&with_mac1(rest, &inviter_mac1));
            let _ = client.handle_reply(&with_mac1(rest, &joiner_mac1));
        }
        2 => {
            let payload = &rest[..rest.len().min(MAX_HANDSHAKE_PAYLOAD)];
            let mut initiator = Initiator::new(
                &joiner,
                &inviter.public_key(),
                JOIN_PROLOGUE,
                &mut CoreRng::from_seed([0x88; 32]),
            )
            .unwrap();
            let mut datagram = vec![0u8; JoinRequest::len_for_payload(payload.len())];
            if let Ok(mut message) = JoinRequest::new_emit(&mut datagram[..]) {
                message.set_invite_id(&secret.id());
                message.set_network(network.as_bytes());
                initiator.write_init(payload, message.noise_mut()).unwrap();
                let mac = compute_mac1(&inviter_mac1, message.mac1_covered());
                message.set_mac1(&mac);
                to_book(&datagram);
                // The same request again: a retry of the same key.
                to_book(&datagram);
            }
        }
        _ => {
            let payload = &rest[..rest.len().min(MAX_HANDSHAKE_PAYLOAD)];
            let init = JoinRequest::new_checked(&request[..]).unwrap();
            let responder = respond(
                &inviter,
                JOIN_PROLOGUE,
                &mut CoreRng::from_seed([0x99; 32]),
                init.noise(),
            )
            .unwrap();
            let mut datagram = vec![0u8; JoinResponse::len_for_payload(payload.len())];
            let Ok(mut message) = JoinResponse::new_emit(&mut datagram[..]) else {
                return;
            };
            message.set_invite_id(&secret.id());
            responder
                .write_response(payload, message.noise_mut())
                .unwrap();
            let mac = compute_mac1(&joiner_mac1, message.mac1_covered());
            message.set_mac1(&mac);
            if let Ok(Some(result)) = client.handle_reply(&datagram) {
                let cert = &result.certificate;
                cert.verify(&network, NOW).unwrap();
                assert_eq!(cert.static_key, joiner.public_key());
                assert_eq!(cert.name, "joiner");
                assert_eq!(result.network, network);
            }
        }
    }
});

fn check_outcome(outcome: &JoinOutcome, network: &meshd_crypto::NetworkId) {
    if let Some(reply) = outcome.reply() {
        assert!(reply.len() <= JOIN_MAX_LEN);
        match classify(reply).expect("replies have a valid header") {
            MessageType::JoinResponse => assert!(JoinResponse::new_checked(reply).is_ok()),
            MessageType::JoinRefused => assert!(JoinRefused::new_checked(reply).is_ok()),
            other => panic!("the book replied with {other:?}"),
        }
    }
    if let JoinOutcome::Admitted(admission) = outcome {
        admission.certificate.verify(network, NOW).unwrap();
        assert_eq!(admission.certificate.static_key, admission.key);
        assert_eq!(admission.certificate.name, admission.name);
        assert!(meshd_crypto::valid_member_name(&admission.name));
        assert_ne!(admission.name, "taken");
    }
}
