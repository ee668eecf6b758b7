//! The whole join exchange in memory: a real `JoinClient` against a real `InviteBook`.

use std::net::SocketAddr;

use super::*;
use crate::wire::{
    emit_join_refused, JoinRefused, JoinResponse, RefusalReason, ResponsePayload, WireError,
    MAX_JOIN_ENDPOINTS,
};
use crate::wire::{
    InviteSecret, InviteToken, JoinRequest, RequestPayload, HEADER_LEN, INVITE_ID_LEN,
    JOIN_MAX_LEN, MAX_RESPONSE_PAYLOAD,
};
use meshd_crypto::{
    compute_mac1, mac1_key, Certificate, CoreRng, Initiator, NetworkId, PublicKey, StaticSecret,
};
use meshd_crypto::{respond, NetworkSecret};

const NOW: u64 = 1_800_000_000;
const HOUR: u64 = 3600;
const LIFETIME: u64 = 30 * 24 * HOUR;

fn key(seed: u8) -> StaticSecret {
    StaticSecret::generate(&mut CoreRng::from_seed([seed; 32]))
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

struct Inviter {
    network_secret: NetworkSecret,
    network: NetworkId,
    admin: bool,
    local: StaticSecret,
    mac1: [u8; 32],
    book: InviteBook,
    rng: CoreRng,
    bootstrap: Vec<BootstrapMember>,
    taken: Vec<(String, PublicKey)>,
}

impl Inviter {
    fn new() -> Inviter {
        let network_secret = NetworkSecret::from_seed([0xaa; 32]);
        let local = key(1);
        Inviter {
            network: network_secret.network_id(),
            network_secret,
            admin: true,
            mac1: mac1_key(&local.public_key()),
            bootstrap: vec![BootstrapMember {
                name: "founder".into(),
                key: local.public_key(),
                endpoints: vec![addr("198.51.100.1:6655"), addr("[2001:db8::1]:6655")],
            }],
            local,
            book: InviteBook::new(),
            rng: CoreRng::from_seed([2; 32]),
            taken: vec![("founder".into(), key(1).public_key())],
        }
    }

    /// Creates an invitation the way `meshd invite` does and returns its token.
    fn invite(&mut self, seed: u8, expires_at: u64, name: Option<&str>) -> InviteToken {
        let secret = InviteSecret::from_bytes([seed; 32]);
        let mut pending: Vec<_> = self.book.pending().cloned().collect();
        pending.push(PendingInvite {
            id: secret.id(),
            secret_hash: secret.hash(),
            expires_at,
            name: name.map(str::to_owned),
            range: None,
        });
        self.book.set_pending(pending);
        InviteToken::new(
            self.network,
            self.local.public_key(),
            vec![addr("198.51.100.1:6655")],
            secret,
            expires_at,
            name.map(str::to_owned),
        )
        .unwrap()
    }

    fn handle(&mut self, now: u64, datagram: &[u8]) -> JoinOutcome {
        let taken = &self.taken;
        let name_taken =
            |name: &str, key: &PublicKey| taken.iter().any(|(n, k)| n == name && k != key);
        let mut ctx = JoinContext {
            now_unix: now,
            local: &self.local,
            our_mac1_key: &self.mac1,
            network: self.network,
            network_secret: self.admin.then_some(&self.network_secret),
            rng: &mut self.rng,
            name_taken: &name_taken,
            bootstrap: &|| self.bootstrap.clone(),
            certificate_lifetime: LIFETIME,
            container_network: None,
            ranges_out_of_pool: &Vec::new,
        };
        self.book
            .handle_request(&mut ctx, addr("203.0.113.9:40000"), datagram)
    }
}

fn new_client(token: &InviteToken, seed: u8, name: &str) -> (JoinClient, StaticSecret) {
    let secret = key(seed);
    let client = JoinClient::new(
        token,
        &secret,
        name,
        vec![addr("203.0.113.9:6655")],
        &mut CoreRng::from_seed([seed.wrapping_add(100); 32]),
        NOW,
    )
    .unwrap();
    (client, secret)
}

fn admitted(outcome: JoinOutcome) -> Admission {
    match outcome {
        JoinOutcome::Admitted(admission) => *admission,
        other => panic!("expected an admission, got {other:?}"),
    }
}

fn refused(outcome: &JoinOutcome) -> RefusalReason {
    match outcome {
        JoinOutcome::Refused { reason, reply } => {
            assert_eq!(
                JoinRefused::new_checked(&reply[..]).unwrap().reason(),
                *reason
            );
            *reason
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A request with a hand-made payload, for what a well-behaved `JoinClient` never sends.
fn craft_request(
    joiner: &StaticSecret,
    inviter: &Inviter,
    id: InviteId,
    network: [u8; 32],
    payload: &[u8],
) -> Vec<u8> {
    let mut rng = CoreRng::from_seed([77; 32]);
    let mut initiator =
        Initiator::new(joiner, &inviter.local.public_key(), JOIN_PROLOGUE, &mut rng).unwrap();
    let mut datagram = vec![0u8; JoinRequest::len_for_payload(payload.len())];
    let mut message = JoinRequest::new_emit(&mut datagram[..]).unwrap();
    message.set_invite_id(&id);
    message.set_network(&network);
    initiator.write_init(payload, message.noise_mut()).unwrap();
    let mac = compute_mac1(&inviter.mac1, message.mac1_covered());
    message.set_mac1(&mac);
    datagram
}

#[test]
fn a_new_node_joins() {
    let mut inviter = Inviter::new();
    let token = inviter.invite(5, NOW + HOUR, None);
    // Through the text form, as a user would paste it.
    let token = InviteToken::parse(&token.encode()).unwrap();
    let (mut client, secret) = new_client(&token, 10, "web-1");

    let request = client.request().unwrap();
    let admission = admitted(inviter.handle(NOW, &request));
    assert_eq!(admission.invite_id, token.id());
    assert_eq!(admission.name, "web-1");
    assert_eq!(admission.key, secret.public_key());
    assert!(!admission.repeated);
    assert_eq!(admission.endpoints, vec![addr("203.0.113.9:6655")]);
    assert!(admission.reply.len() <= JOIN_MAX_LEN);

    let result = client.handle_reply(&admission.reply).unwrap().unwrap();
    assert_eq!(result.network, inviter.network);
    let cert = &result.certificate;
    assert_eq!(cert, &admission.certificate);
    assert_eq!(cert.name, "web-1");
    assert_eq!(cert.static_key, secret.public_key());
    assert_eq!(cert.signing_key, secret.signing_key().public());
    assert_eq!((cert.issued_at, cert.expires_at), (NOW, NOW + LIFETIME));
    assert!(!cert.admin);
    cert.verify(&inviter.network, NOW).unwrap();
    assert_eq!(result.bootstrap, inviter.bootstrap);

    assert_eq!(inviter.book.counters().join_admitted, 1);
    assert_eq!(inviter.book.pending().count(), 0);
    // Spent: later datagrams are ignored.
    assert_eq!(client.handle_reply(&admission.reply), Ok(None));
}

#[test]
fn a_used_invitation_is_refused_to_another_key() {
    let mut inviter = Inviter::new();
    let token = inviter.invite(5, NOW + HOUR, None);
    let (mut first, _) = new_client(&token, 10, "web-1");
    admitted(inviter.handle(NOW, &first.request().unwrap()));

    // Within the resend window: refused after the DH (the key decides).
    let (mut second, _) = new_client(&token, 11, "web-2");
    let outcome = inviter.handle(NOW + 5, &second.request().unwrap());
    assert_eq!(refused(&outcome), RefusalReason::AlreadyUsed);
    let err = second.handle_reply(outcome.reply().unwrap()).unwrap_err();
    assert_eq!(err, JoinError::AlreadyUsed);
    assert_eq!(
        err.to_string(),
        "this invitation was already used; ask an admin for a new one"
    );

    // Past the window: refused before any DH, even to the original key.
    let later = NOW + RESEND_WINDOW_SECS;
    let outcome = inviter.handle(later, &second.request().unwrap());
    assert_eq!(refused(&outcome), RefusalReason::AlreadyUsed);
    let outcome = inviter.handle(later, &first.request().unwrap());
    assert_eq!(refused(&outcome), RefusalReason::AlreadyUsed);
    assert_eq!(inviter.book.counters().join_rx_already_used, 3);
    assert_eq!(inviter.book.counters().join_admitted, 1);

    // A stale list from disk that still has the invitation changes nothing.
    let secret = InviteSecret::from_bytes([5; 32]);
    inviter.book.set_pending(vec![PendingInvite {
        id: secret.id(),
        secret_hash: secret.hash(),
        expires_at: NOW + HOUR,
        name: None,
        range: None,
    }]);
    let outcome = inviter.handle(later, &second.request().unwrap());
    assert_eq!(refused(&outcome), RefusalReason::AlreadyUsed);
}

#[test]
fn a_lost_reply_is_recovered_with_the_same_certificate() {
    let mut inviter = Inviter::new();
    let token = inviter.invite(5, NOW + HOUR, Some("db"));
    let (mut client, _) = new_client(&token, 10, "db");

    let first = admitted(inviter.handle(NOW, &client.request().unwrap()));
    // The reply is lost; the client retries a few seconds later.
    let retry = client.request().unwrap();
    let second = admitted(inviter.handle(NOW + 3, &retry));
    assert!(second.repeated);
    assert_eq!(second.certificate, first.certificate);
    assert_eq!(second.key, first.key);
    assert_eq!(inviter.book.counters().join_resent, 1);
    assert_eq!(inviter.book.counters().join_admitted, 1);

    // Even the first (late) reply is accepted: it answers an outstanding request.
    let result = client.handle_reply(&first.reply).unwrap().unwrap();
    assert_eq!(result.certificate, first.certificate);
}

#[test]
fn the_answer_to_a_later_retry_is_accepted() {
    let mut inviter = Inviter::new();
    let token = inviter.invite(5, NOW + HOUR, None);
    let (mut client, _) = new_client(&token, 10, "web-1");
    let _lost = client.request().unwrap();
    let _lost_too = client.request().unwrap();
    let third = admitted(inviter.handle(NOW, &client.request().unwrap()));
    assert!(client.handle_reply(&third.reply).unwrap().is_some());
}

#[test]
fn expired_invitations_are_refused_on_both_sides() {
    let mut inviter = Inviter::new();
    let token = inviter.invite(5, NOW + 60, None);
    // Locally, before anything is sent.
    let err = JoinClient::new(
        &token,
        &key(10),
        "web-1",
        vec![],
        &mut CoreRng::from_seed([0; 32]),
        NOW + 60,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "this invitation expired at 2027-01-15 08:01:00 UTC (this machine's clock says \
         2027-01-15 08:01:00 UTC); ask an admin for a new one"
    );
    // By the inviter, whose clock is ahead.
    let (mut client, _) = new_client(&token, 10, "web-1");
    let outcome = inviter.handle(NOW + 61, &client.request().unwrap());
    assert_eq!(refused(&outcome), RefusalReason::Expired);
    let err = client.handle_reply(outcome.reply().unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "this invitation expired at 2027-01-15 08:01:00 UTC; ask an admin for a new one"
    );
    assert_eq!(inviter.book.counters().join_rx_expired, 1);
}

#[test]
fn a_token_pinning_another_key_gets_no_answer_it_accepts() {
    let mut inviter = Inviter::new();
    let real = inviter.invite(5, NOW + HOUR, None);
    let impostor = key(66);
    let forged = InviteToken::new(
        real.network(),
        impostor.public_key(),
        real.endpoints().to_vec(),
        real.secret().clone(),
        real.expires_at(),
        None,
    )
    .unwrap();
    let (mut victim, victim_secret) = new_client(&forged, 10, "web-1");
    // The real inviter cannot tell it is for it: mac1 is keyed for the impostor.
    let outcome = inviter.handle(NOW, &victim.request().unwrap());
    assert!(matches!(outcome, JoinOutcome::Dropped(JoinDrop::BadMac1)));
    assert_eq!(outcome.reply(), None);

    // A genuine response meant for someone else is ignored.
    let (mut other, _) = new_client(&real, 11, "web-2");
    let genuine = admitted(inviter.handle(NOW, &other.request().unwrap()));
    assert_eq!(victim.handle_reply(&genuine.reply), Ok(None));
    assert_eq!(victim.counters().join_reply_bad_mac1, 1);

    // The impostor answers with a valid handshake but cannot sign for the network.
    let mut impostor_side = Inviter::new();
    impostor_side.local = impostor.clone();
    impostor_side.mac1 = mac1_key(&impostor.public_key());
    impostor_side.network_secret = NetworkSecret::from_seed([0xbb; 32]);
    impostor_side.network = real.network();
    impostor_side.invite(5, NOW + HOUR, None);
    let answer = admitted(impostor_side.handle(NOW, &victim.request().unwrap()));
    let err = victim.handle_reply(&answer.reply).unwrap_err();
    assert!(matches!(err, JoinError::BadCertificate(_)), "{err}");
    assert_eq!(answer.key, victim_secret.public_key());
}

#[test]
fn forged_responses_with_a_valid_mac1_are_ignored() {
    let mut inviter = Inviter::new();
    let token = inviter.invite(5, NOW + HOUR, None);
    let (mut client, secret) = new_client(&token, 10, "web-1");
    let request = client.request().unwrap();
    let genuine = admitted(inviter.handle(NOW, &request));
    let our_mac1 = mac1_key(&secret.public_key());
    for at in [
        HEADER_LEN + INVITE_ID_LEN,
        HEADER_LEN + INVITE_ID_LEN + 40,
        genuine.reply.len() - 17,
    ] {
        let mut forged = genuine.reply.clone();
        forged[at] ^= 0x20;
        let mut message = JoinResponse::new_checked(&mut forged[..]).unwrap();
        let mac = compute_mac1(&our_mac1, message.mac1_covered());
        message.set_mac1(&mac);
        assert_eq!(client.handle_reply(&forged), Ok(None), "byte {at}");
    }
    assert_eq!(client.counters().join_reply_handshake_failed, 3);
    // The genuine one still completes the join.
    assert!(client.handle_reply(&genuine.reply).unwrap().is_some());
}

#[test]
fn a_token_of_another_network_is_refused_without_dh() {
    let mut inviter = Inviter::new();
    let real = inviter.invite(5, NOW + HOUR, None);
    let other_network = NetworkSecret::from_seed([0xcc; 32]).network_id();
    let token = InviteToken::new(
        other_network,
        real.inviter(),
        real.endpoints().to_vec(),
        real.secret().clone(),
        real.expires_at(),
        None,
    )
    .unwrap();
    let (mut client, _) = new_client(&token, 10, "web-1");
    let outcome = inviter.handle(NOW, &client.request().unwrap());
    assert_eq!(refused(&outcome), RefusalReason::WrongNetwork);
    let err = client.handle_reply(outcome.reply().unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "this token belongs to another network than the inviter's"
    );
    let counters = inviter.book.counters();
    assert_eq!(counters.join_rx_wrong_network, 1);
    assert_eq!(
        counters.join_rx_handshake_failed + counters.join_rx_bad_secret,
        0
    );
}

#[test]
fn a_wrong_secret_under_a_known_id_is_refused_after_the_dh_and_counted() {
    let mut inviter = Inviter::new();
    let token = inviter.invite(5, NOW + HOUR, None);
    let joiner = key(10);
    let payload = RequestPayload {
        secret: InviteSecret::from_bytes([6; 32]),
        signing_key: joiner.signing_key().public(),
        name: "web-1".into(),
        endpoints: vec![],
    };
    let request = craft_request(
        &joiner,
        &inviter,
        token.id(),
        *inviter.network.as_bytes(),
        &payload.encode(),
    );
    let outcome = inviter.handle(NOW, &request);
    assert_eq!(refused(&outcome), RefusalReason::UnknownInvite);
    assert_eq!(inviter.book.counters().join_rx_bad_secret, 1);
    // The invitation is untouched: its holder still joins.
    let (mut client, _) = new_client(&token, 11, "web-1");
    admitted(inviter.handle(NOW, &client.request().unwrap()));
}

#[test]
fn unknown_invitations_and_non_admins_are_refused_without_dh() {
    let mut inviter = Inviter::new();
    let token = inviter.invite(5, NOW + HOUR, None);
    inviter.book.set_pending(vec![]);
    let (mut client, _) = new_client(&token, 10, "web-1");
    let outcome = inviter.handle(NOW, &client.request().unwrap());
    assert_eq!(refused(&outcome), RefusalReason::UnknownInvite);
    assert_eq!(
        client.handle_reply(outcome.reply().unwrap()),
        Err(JoinError::UnknownInvite)
    );

    let mut inviter = Inviter::new();
    inviter.admin = false;
    let token = inviter.invite(5, NOW + HOUR, None);
    let (mut client, _) = new_client(&token, 10, "web-1");
    let outcome = inviter.handle(NOW, &client.request().unwrap());
    assert_eq!(refused(&outcome), RefusalReason::NotAdmin);
    assert_eq!(
        client.handle_reply(outcome.reply().unwrap()),
        Err(JoinError::NotAdmin)
    );
    let counters = inviter.book.counters();
    assert_eq!(counters.join_rx_not_admin, 1);
    assert_eq!(counters.join_rx_handshake_failed, 0);
}

#[test]
fn names_must_be_free_valid_and_as_reserved() {
    let mut inviter = Inviter::new();
    // Held by a live member under another key.
    let token = inviter.invite(5, NOW + HOUR, None);
    let (mut client, _) = new_client(&token, 10, "founder");
    let outcome = inviter.handle(NOW, &client.request().unwrap());
    assert_eq!(refused(&outcome), RefusalReason::NameTaken);
    let err = client.handle_reply(outcome.reply().unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the name `founder` is taken in this network; choose another"
    );
    // A refusal changes nothing: the same token works with a free name.
    let (mut client, _) = new_client(&token, 10, "web-1");
    admitted(inviter.handle(NOW, &client.request().unwrap()));

    // Issued by this book moments ago (not yet known to the node's member list).
    let token = inviter.invite(6, NOW + HOUR, None);
    let (mut client, _) = new_client(&token, 12, "web-1");
    let outcome = inviter.handle(NOW, &client.request().unwrap());
    assert_eq!(refused(&outcome), RefusalReason::NameTaken);

    // The client refuses a name the token does not reserve, or an invalid one, locally.
    let reserved = inviter.invite(7, NOW + HOUR, Some("db"));
    let joiner = key(13);
    let mut rng = CoreRng::from_seed([0; 32]);
    let err = JoinClient::new(&reserved, &joiner, "web-9", vec![], &mut rng, NOW).unwrap_err();
    assert_eq!(
        err.to_string(),
        "this invitation is for the name `db`, not `web-9`; join as `db`"
    );
    let err = JoinClient::new(&token, &joiner, "-bad", vec![], &mut rng, NOW).unwrap_err();
    assert_eq!(err, JoinError::InvalidName("-bad".into()));
    let many = vec![addr("192.0.2.1:1"); MAX_JOIN_ENDPOINTS + 1];
    let err = JoinClient::new(&token, &joiner, "ok", many, &mut rng, NOW).unwrap_err();
    assert_eq!(err, JoinError::TooManyEndpoints(MAX_JOIN_ENDPOINTS + 1));

    // The inviter refuses them too, from a client that does not check.
    for name in ["web-9", "-bad"] {
        let payload = RequestPayload {
            secret: InviteSecret::from_bytes([7; 32]),
            signing_key: joiner.signing_key().public(),
            name: name.into(),
            endpoints: vec![],
        };
        let request = craft_request(
            &joiner,
            &inviter,
            reserved.id(),
            *inviter.network.as_bytes(),
            &payload.encode(),
        );
        assert_eq!(
            refused(&inviter.handle(NOW, &request)),
            RefusalReason::NameRefused
        );
    }
    assert_eq!(inviter.book.counters().join_rx_name_refused, 2);
}

#[test]
fn junk_is_dropped_and_counted() {
    let mut inviter = Inviter::new();
    let token = inviter.invite(5, NOW + HOUR, None);
    let (mut client, _) = new_client(&token, 10, "web-1");
    let request = client.request().unwrap();

    assert!(matches!(
        inviter.handle(NOW, &request[..100]),
        JoinOutcome::Dropped(JoinDrop::Malformed(WireError::Truncated))
    ));
    let mut bad_mac = request.clone();
    *bad_mac.last_mut().unwrap() ^= 1;
    assert!(matches!(
        inviter.handle(NOW, &bad_mac),
        JoinOutcome::Dropped(JoinDrop::BadMac1)
    ));
    // Valid mac1 over a corrupted Noise message: dropped after the (failed) DH, no answer.
    let mut corrupted = request.clone();
    corrupted[HEADER_LEN + INVITE_ID_LEN + 32 + 40] ^= 1;
    let mut message = JoinRequest::new_checked(&mut corrupted[..]).unwrap();
    let mac = compute_mac1(&inviter.mac1, message.mac1_covered());
    message.set_mac1(&mac);
    assert!(matches!(
        inviter.handle(NOW, &corrupted),
        JoinOutcome::Dropped(JoinDrop::HandshakeFailed)
    ));
    // A payload that does not parse, under a known invitation.
    let joiner = key(10);
    let request_junk = craft_request(
        &joiner,
        &inviter,
        token.id(),
        *inviter.network.as_bytes(),
        b"junk",
    );
    assert_eq!(
        refused(&inviter.handle(NOW, &request_junk)),
        RefusalReason::Malformed
    );

    let c = inviter.book.counters();
    assert_eq!(
        (
            c.join_rx_requests,
            c.join_rx_malformed,
            c.join_rx_bad_mac1,
            c.join_rx_handshake_failed,
            c.join_rx_bad_payload
        ),
        (4, 1, 1, 1, 1)
    );
    assert!(c
        .iter()
        .any(|(name, value)| name == "join_rx_bad_mac1" && value == 1));

    // The client ignores what is not for it.
    assert_eq!(client.handle_reply(&[]), Ok(None));
    assert_eq!(client.handle_reply(&request), Ok(None));
    let other = emit_join_refused(RefusalReason::AlreadyUsed, &[0; 16]);
    assert_eq!(client.handle_reply(&other), Ok(None));
    assert_eq!(client.handle_reply(&[1, 7, 3]), Ok(None));
    let c = client.counters();
    assert_eq!(
        (
            c.join_reply_malformed,
            c.join_reply_unexpected_type,
            c.join_reply_other_invite
        ),
        (2, 1, 1)
    );
    // Unknown reasons are reported as such, and final.
    let unknown = emit_join_refused(RefusalReason::Unknown(42), &token.id());
    assert_eq!(
        client.handle_reply(&unknown),
        Err(JoinError::UnknownRefusal(42))
    );
}

#[test]
fn the_client_checks_the_certificate_it_is_given() {
    let mut inviter = Inviter::new();
    let token = inviter.invite(5, NOW + HOUR, None);
    let (mut client, secret) = new_client(&token, 10, "web-1");
    let request = client.request().unwrap();
    let request = JoinRequest::new_checked(&request[..]).unwrap();

    // The inviter, misbehaving: a valid certificate, but for another name.
    let responder = respond(
        &inviter.local,
        JOIN_PROLOGUE,
        &mut inviter.rng,
        request.noise(),
    )
    .unwrap();
    let wrong = Certificate::issue(
        &inviter.network_secret,
        "other",
        secret.public_key(),
        secret.signing_key().public(),
        NOW,
        NOW + LIFETIME,
        false,
    )
    .unwrap();
    let (payload, _) = ResponsePayload::encode(&wrong.encode(), &[], MAX_RESPONSE_PAYLOAD).unwrap();
    let mut reply = vec![0u8; JoinResponse::len_for_payload(payload.len())];
    let mut message = JoinResponse::new_emit(&mut reply[..]).unwrap();
    message.set_invite_id(&token.id());
    responder
        .write_response(&payload, message.noise_mut())
        .unwrap();
    let mac = compute_mac1(&mac1_key(&secret.public_key()), message.mac1_covered());
    message.set_mac1(&mac);
    let err = client.handle_reply(&reply).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the inviter sent a certificate that does not check out: it is issued to the name \
         `other`, not `web-1`"
    );
}

#[test]
fn bootstrap_members_are_capped_to_one_datagram() {
    let mut inviter = Inviter::new();
    inviter.bootstrap = (0..40)
        .map(|i| BootstrapMember {
            name: format!("member-{i:02}"),
            key: key(100 + i).public_key(),
            endpoints: vec![addr("[2001:db8::5]:6655"), addr("192.0.2.5:6655")],
        })
        .collect();
    let token = inviter.invite(5, NOW + HOUR, None);
    let (mut client, _) = new_client(&token, 10, "web-1");
    let admission = admitted(inviter.handle(NOW, &client.request().unwrap()));
    assert!(admission.reply.len() <= JOIN_MAX_LEN);
    let result = client.handle_reply(&admission.reply).unwrap().unwrap();
    assert!(result.bootstrap.len() >= 10, "{}", result.bootstrap.len());
    assert_eq!(
        result.bootstrap,
        inviter.bootstrap[..result.bootstrap.len()]
    );
}

#[test]
fn no_answer_names_the_inviter() {
    let err = JoinError::NoAnswer(vec![addr("198.51.100.1:6655"), addr("[2001:db8::1]:6655")]);
    assert_eq!(
        err.to_string(),
        "the inviter at 198.51.100.1:6655, [2001:db8::1]:6655 did not answer: is its daemon \
         running and the port reachable?"
    );
}

#[test]
fn unix_times_format_as_utc() {
    assert_eq!(format_unix(0), "1970-01-01 00:00:00 UTC");
    assert_eq!(format_unix(951_782_400), "2000-02-29 00:00:00 UTC");
    assert_eq!(format_unix(1_709_208_000), "2024-02-29 12:00:00 UTC");
    assert_eq!(format_unix(4_102_444_799), "2099-12-31 23:59:59 UTC");
    // Never panics, even far out.
    let _ = format_unix(u64::MAX);
}

#[test]
fn debug_output_hides_secrets() {
    let mut inviter = Inviter::new();
    let token = inviter.invite(5, NOW + HOUR, None);
    let (client, _) = new_client(&token, 10, "web-1");
    let debug = format!("{client:?}");
    assert!(!debug.contains("payload"), "{debug}");
    assert!(!debug.contains("secret"), "{debug}");
}

/// Seeds for fuzz/corpus/join: the first byte selects the mode of the fuzz target (see
/// fuzz_targets/join.rs), the rest is a genuine request, payload or refusal.
fn fuzz_seeds() -> Vec<(&'static str, Vec<u8>)> {
    // Must match the fuzz target's fixed world: inviter key [0x11; 32], network seed [0x22; 32],
    // invitation secret [0x33; 32], joiner key [0x44; 32].
    let inviter = StaticSecret::from_bytes([0x11; 32]);
    let network = NetworkSecret::from_seed([0x22; 32]);
    let secret = InviteSecret::from_bytes([0x33; 32]);
    let joiner = StaticSecret::from_bytes([0x44; 32]);
    let token = InviteToken::new(
        network.network_id(),
        inviter.public_key(),
        vec![addr("192.0.2.1:6655")],
        secret.clone(),
        NOW + HOUR,
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
    let payload = RequestPayload {
        secret,
        signing_key: joiner.signing_key().public(),
        name: "joiner".into(),
        endpoints: vec![addr("192.0.2.2:6655"), addr("[2001:db8::2]:6655")],
    }
    .encode();
    let certificate = Certificate::issue(
        &network,
        "joiner",
        joiner.public_key(),
        joiner.signing_key().public(),
        NOW,
        NOW + LIFETIME,
        false,
    )
    .unwrap();
    let members = [BootstrapMember {
        name: "inviter".into(),
        key: inviter.public_key(),
        endpoints: vec![addr("192.0.2.1:6655")],
    }];
    let (response, _) =
        ResponsePayload::encode(&certificate.encode(), &members, MAX_RESPONSE_PAYLOAD).unwrap();
    let with_mode = |mode: u8, bytes: &[u8]| [&[mode][..], bytes].concat();
    vec![
        ("request", with_mode(0, &request)),
        ("request-payload", with_mode(2, &payload)),
        ("response-payload", with_mode(3, &response)),
        (
            "refused",
            with_mode(0, &emit_join_refused(RefusalReason::NameTaken, &token.id())),
        ),
    ]
}

/// Keeps fuzz/corpus/join/seed-* current. Regenerate with
/// `MESHD_WRITE_FUZZ_SEEDS=1 cargo test --lib invite::tests::join_fuzz_seeds_are_current`.
#[test]
fn join_fuzz_seeds_are_current() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/join");
    for (name, bytes) in fuzz_seeds() {
        crate::test_support::check_or_write_fuzz_seed(&root.join(format!("seed-{name}")), &bytes);
    }
}
