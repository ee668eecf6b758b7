//! Handshake processing through a real node: arbitrary sequences of datagrams, some forged with a
//! correct mac1 (so they reach Noise and the DH work behind the cheap checks), some genuine
//! initiations from the configured peer with one byte flipped, interleaved with timer ticks.
//! Invariants: no panic; the node's index bookkeeping stays consistent after every step; every
//! datagram the node emits parses as a well-formed meshd message.

#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use meshd::core::node::{NodeConfig, PeerSpec, NOISE_PROLOGUE};
use meshd::core::switch::FdbConfig;
use meshd::core::Node;
use meshd::wire::{
    classify, Data, HandshakeInit, HandshakeResponse, MessageType, HANDSHAKE_INIT_LEN,
    HANDSHAKE_RESPONSE_LEN, MAC_LEN,
};
use meshd_crypto::{compute_mac1, mac1_key, CoreRng, Initiator, StaticSecret};

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
    /// A genuine initiation from the configured peer, optionally with one byte flipped.
    GenuineInit {
        timestamp: u64,
        flip: Option<(u8, u8)>,
    },
    /// Time passes.
    Tick { millis: u16 },
}

const NODE_SECRET: [u8; 32] = [0x11; 32];
const PEER_SECRET: [u8; 32] = [0x22; 32];

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
    let mut node = Node::new(NodeConfig {
        secret: node_secret,
        peers: vec![PeerSpec {
            name: "peer".into(),
            public_key: peer_secret.public_key(),
            endpoint: Some(peer_addr),
        }],
        fdb: FdbConfig::default(),
        max_frame: 1518,
        rng_seed: [7; 32],
        now,
        unix_nanos_at_now: 1_800_000_000_000_000_000,
    });
    let mut rng = CoreRng::from_seed([9; 32]);
    for step in steps.into_iter().take(64) {
        let mut datagram = match step {
            Step::Raw(bytes) => bytes,
            Step::ForgedInit { sender, noise } => {
                let mut m = vec![0u8; HANDSHAKE_INIT_LEN];
                m[0] = 1;
                m[1] = 1;
                m[4..8].copy_from_slice(&sender.to_le_bytes());
                let n = noise.len().min(HANDSHAKE_INIT_LEN - 8 - 2 * MAC_LEN);
                m[8..8 + n].copy_from_slice(&noise[..n]);
                with_mac1(m, &key)
            }
            Step::ForgedResponse {
                sender,
                receiver,
                noise,
            } => {
                let mut m = vec![0u8; HANDSHAKE_RESPONSE_LEN];
                m[0] = 1;
                m[1] = 2;
                m[4..8].copy_from_slice(&sender.to_le_bytes());
                m[8..12].copy_from_slice(&receiver.to_le_bytes());
                let n = noise.len().min(HANDSHAKE_RESPONSE_LEN - 12 - 2 * MAC_LEN);
                m[12..12 + n].copy_from_slice(&noise[..n]);
                with_mac1(m, &key)
            }
            Step::GenuineInit { timestamp, flip } => {
                let mut initiator =
                    Initiator::new(&peer_secret, &node_public, NOISE_PROLOGUE, &mut rng).unwrap();
                let mut m = vec![0u8; HANDSHAKE_INIT_LEN];
                m[0] = 1;
                m[1] = 1;
                initiator
                    .write_init(timestamp.to_be_bytes(), &mut m[8..8 + 104])
                    .unwrap();
                let mut m = with_mac1(m, &key);
                if let Some((at, bits)) = flip {
                    let at = usize::from(at) % m.len();
                    m[at] ^= bits.max(1);
                }
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
