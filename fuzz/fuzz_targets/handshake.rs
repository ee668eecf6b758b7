//! Handshake processing through a real node: arbitrary sequences of datagrams, some forged with a
//! correct mac1 (so they reach Noise and the DH work behind the cheap checks), some genuine
//! initiations from the configured peer with one byte flipped and an arbitrary cipher offer
//! (negotiation extensions after the certificate), cookie replies with arbitrary contents for a
//! guessed index, interleaved with timer ticks. The node accepts AES-256-GCM only, so offers
//! decide between a session and a refusal.
//! Invariants: no panic; the node's index bookkeeping stays consistent after every step; every
//! datagram the node emits parses as a well-formed meshd message; the negotiation rule only ever
//! picks a cipher its policy accepts.

#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use meshd::core::cipher::{CipherPolicy, CipherPreference};
use meshd::core::node::{NodeConfig, PeerSpec, NOISE_PROLOGUE};
use meshd::core::switch::FdbConfig;
use meshd::core::Node;
use meshd::wire::{
    classify, emit_cipher_extension, handshake_init_len, handshake_response_len, CookieReply,
    Data, HandshakeExtensions, HandshakeInit, HandshakeResponse, MessageType, COOKIE_NONCE_LEN,
    COOKIE_REPLY_LEN, HANDSHAKE_PAYLOAD_MAX, MAC_LEN, NOISE_INIT_OVERHEAD, SEALED_COOKIE_LEN,
};
use meshd_crypto::{
    compute_mac1, mac1_key, Certificate, Cipher, CoreRng, Initiator, NetworkSecret, StaticSecret,
};

#[derive(Arbitrary, Debug)]
enum Step {
    /// Any bytes at all.
    Raw(Vec<u8>),
    /// An initiation-shaped message with arbitrary contents and a valid mac1.
    ForgedInit { sender: u32, noise: Vec<u8> },
    /// A response-shaped message with arbitrary contents, a valid mac1, and a guessed index.
    ForgedResponse {
        sender: u32,
        receiver: u32,
        noise: Vec<u8>,
    },
    /// A genuine initiation from the configured peer carrying its certificate (or one from a
    /// network key of its own making), optionally with one byte flipped.
    GenuineInit {
        timestamp: u64,
        self_made_certificate: bool,
        /// Bytes after the certificate: `Ok`, arbitrary bytes; `Err`, a well-formed cipher offer
        /// of these ids.
        extensions: Result<Vec<u8>, Vec<u8>>,
        flip: Option<(u16, u8)>,
    },
    /// A cookie reply with a guessed index and arbitrary nonce and sealed cookie.
    ForgedCookieReply {
        receiver: u32,
        nonce: [u8; COOKIE_NONCE_LEN],
        sealed: [u8; SEALED_COOKIE_LEN],
    },
    /// Time passes.
    Tick { millis: u16 },
}

const NODE_SECRET: [u8; 32] = [0x11; 32];
const PEER_SECRET: [u8; 32] = [0x22; 32];
const UNIX_SECS: u64 = 1_800_000_000;

fn certificate(issuer: &NetworkSecret, name: &str, secret: &StaticSecret) -> Certificate {
    Certificate::issue(
        issuer,
        name,
        secret.public_key(),
        secret.signing_key().public(),
        UNIX_SECS - 60,
        UNIX_SECS + 86_400,
        false,
    )
    .unwrap()
}

fn with_mac1(mut msg: Vec<u8>, receiver_key: &[u8; 32]) -> Vec<u8> {
    let covered = msg.len() - 2 * MAC_LEN;
    let mac = compute_mac1(receiver_key, &msg[..covered]);
    msg[covered..covered + MAC_LEN].copy_from_slice(&mac);
    msg
}

fn check_emitted(bytes: &[u8]) {
    match classify(bytes).expect("the node emits only valid headers") {
        MessageType::HandshakeInit => assert!(HandshakeInit::new_checked(bytes).is_ok()),
        MessageType::HandshakeResponse => assert!(HandshakeResponse::new_checked(bytes).is_ok()),
        MessageType::Data => assert!(Data::new_checked(bytes).is_ok()),
        MessageType::CookieReply => assert!(CookieReply::new_checked(bytes).is_ok()),
        other => panic!("node emitted message type {other:?}"),
    }
}

fuzz_target!(|steps: Vec<Step>| {
    let node_secret = StaticSecret::from_bytes(NODE_SECRET);
    let peer_secret = StaticSecret::from_bytes(PEER_SECRET);
    let node_public = node_secret.public_key();
    let key = mac1_key(&node_public);
    let peer_addr: SocketAddr = "10.0.0.2:6655".parse().unwrap();
    let mut now = Instant::now();
    let network = NetworkSecret::from_seed([0x33; 32]);
    let rogue_network = NetworkSecret::from_seed([0x44; 32]);
    let peer_certificate = certificate(&network, "peer", &peer_secret).encode();
    let rogue_certificate = certificate(&rogue_network, "peer", &peer_secret).encode();
    let mut node = Node::new(NodeConfig {
        network_secret: None,
        certificate_lifetime: std::time::Duration::from_secs(30 * 86_400),
        advertise: Vec::new(),
        revocations: Vec::new(),
        network: network.network_id(),
        certificate: certificate(&network, "node", &node_secret),
        secret: node_secret,
        peers: vec![PeerSpec {
            name: "peer".into(),
            public_key: peer_secret.public_key(),
            endpoint: Some(peer_addr),
        }],
        fdb: FdbConfig::default(),
        max_frame: 1518,
        underlay_mtu: 1500,
        rng_seed: [7; 32],
        ciphers: CipherPolicy::new(CipherPreference::Only(Cipher::Aes256Gcm), true),
        now,
        unix_nanos_at_now: UNIX_SECS * 1_000_000_000,
    });
    let mut rng = CoreRng::from_seed([9; 32]);
    for step in steps.into_iter().take(64) {
        let mut datagram = match step {
            Step::Raw(bytes) => bytes,
            Step::ForgedInit { sender, noise } => {
                let noise = &noise[..noise.len().min(NOISE_INIT_OVERHEAD + HANDSHAKE_PAYLOAD_MAX)];
                let len = handshake_init_len(noise.len().saturating_sub(NOISE_INIT_OVERHEAD));
                let mut m = vec![0u8; len];
                m[0] = 1;
                m[1] = 1;
                m[4..8].copy_from_slice(&sender.to_le_bytes());
                m[8..8 + noise.len()].copy_from_slice(noise);
                with_mac1(m, &key)
            }
            Step::ForgedResponse {
                sender,
                receiver,
                noise,
            } => {
                let n = noise.len().min(HANDSHAKE_PAYLOAD_MAX);
                let mut m = vec![0u8; handshake_response_len(n)];
                m[0] = 1;
                m[1] = 2;
                m[4..8].copy_from_slice(&sender.to_le_bytes());
                m[8..12].copy_from_slice(&receiver.to_le_bytes());
                let room = m.len() - 12 - 2 * MAC_LEN;
                m[12..12 + n.min(room)].copy_from_slice(&noise[..n.min(room)]);
                with_mac1(m, &key)
            }
            Step::GenuineInit {
                timestamp,
                self_made_certificate,
                extensions,
                flip,
            } => {
                let mut initiator =
                    Initiator::new(&peer_secret, &node_public, NOISE_PROLOGUE, &mut rng).unwrap();
                let mut payload = timestamp.to_be_bytes().to_vec();
                payload.extend_from_slice(if self_made_certificate {
                    &rogue_certificate
                } else {
                    &peer_certificate
                });
                match &extensions {
                    Ok(raw) => payload.extend_from_slice(&raw[..raw.len().min(64)]),
                    Err(ids) => emit_cipher_extension(&mut payload, ids),
                }
                // The view and the rule alone, on the same bytes.
                if let Ok(raw) = &extensions {
                    if let Ok(ext) = HandshakeExtensions::new_checked(raw) {
                        let policy = CipherPolicy::new(CipherPreference::Auto, true);
                        if let Some(cipher) = policy.choose(ext.ciphers()) {
                            assert!(policy.accepts(cipher));
                        }
                        // The features entry, when present, is read inside the checked bytes.
                        let _ = ext.features();
                    }
                }
                let len = handshake_init_len(payload.len());
                let mut m = vec![0u8; len];
                m[0] = 1;
                m[1] = 1;
                initiator
                    .write_init(&payload, &mut m[8..len - 2 * MAC_LEN])
                    .unwrap();
                let mut m = with_mac1(m, &key);
                if let Some((at, bits)) = flip {
                    let at = usize::from(at) % m.len();
                    m[at] ^= bits.max(1);
                }
                m
            }
            Step::ForgedCookieReply {
                receiver,
                nonce,
                sealed,
            } => {
                let mut m = vec![0u8; COOKIE_REPLY_LEN];
                let mut reply = CookieReply::new_emit(&mut m[..]).unwrap();
                reply.set_receiver_index(receiver);
                reply.set_nonce(&nonce);
                reply.set_sealed_cookie(&sealed);
                m
            }
            Step::Tick { millis } => {
                now += Duration::from_millis(u64::from(millis));
                node.handle_timeout(now);
                Vec::new()
            }
        };
        if !datagram.is_empty() {
            let _ = node.handle_datagram(now, peer_addr, &mut datagram);
        }
        node.check_invariants().unwrap();
        while let Some(t) = node.poll_transmit() {
            check_emitted(t.packet.bytes());
            node.recycle(t.packet);
        }
    }
});
