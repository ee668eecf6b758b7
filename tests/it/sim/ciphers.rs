//! Cipher negotiation between simulated nodes: AES-256-GCM exactly when both have AES hardware,
//! ChaCha20-Poly1305 in a mixed pair, a refusal (counted) between nodes configured for different
//! ciphers only, and no downgrade by an attacker who rewrites the handshake in flight.

use meshd::wire::{classify, HandshakeInit, MessageType, NOISE_INIT_OVERHEAD};
use meshd_crypto::{compute_mac1, mac1_key, Cipher};

use super::*;

/// Replaces host `host` with a node of the given cipher policy (same key and peers).
fn with_ciphers(sim: &mut Sim, host: usize, preference: CipherPreference, aes_hardware: bool) {
    SIM_CIPHERS.with(|c| c.set((preference, aes_hardware)));
    sim.restart(host, 500 + host as u64);
    SIM_CIPHERS.with(|c| c.set((CipherPreference::Auto, false)));
}

fn cipher_seen(sim: &Sim, host: usize, peer: &str) -> Option<String> {
    sim.hosts[host]
        .node
        .status(sim.now)
        .peers
        .into_iter()
        .find(|p| p.name == peer)
        .and_then(|p| p.cipher)
}

#[test]
fn two_nodes_with_aes_hardware_use_aes_256_gcm() {
    let mut sim = Sim::new(2, 41);
    with_ciphers(&mut sim, 0, CipherPreference::Auto, true);
    with_ciphers(&mut sim, 1, CipherPreference::Auto, true);
    sim.run_for(Duration::from_secs(2));
    assert!(sim.all_up());
    assert_eq!(cipher_seen(&sim, 0, "h2").as_deref(), Some("aes-256-gcm"));
    assert_eq!(cipher_seen(&sim, 1, "h1").as_deref(), Some("aes-256-gcm"));
    exchange(&mut sim, 0, 1, 50, Duration::from_millis(10));
    // And across rekeys.
    sim.run_for(Duration::from_secs(400));
    assert!(sim.all_up());
    exchange(&mut sim, 0, 1, 20, Duration::from_millis(10));
    assert_eq!(cipher_seen(&sim, 0, "h2").as_deref(), Some("aes-256-gcm"));
}

#[test]
fn a_mixed_pair_interoperates_on_chacha20_poly1305() {
    let mut sim = Sim::new(2, 42);
    with_ciphers(&mut sim, 0, CipherPreference::Auto, true);
    with_ciphers(&mut sim, 1, CipherPreference::Auto, false);
    sim.run_for(Duration::from_secs(2));
    assert!(sim.all_up());
    assert_eq!(
        cipher_seen(&sim, 0, "h2").as_deref(),
        Some("chacha20-poly1305")
    );
    assert_eq!(
        cipher_seen(&sim, 1, "h1").as_deref(),
        Some("chacha20-poly1305")
    );
    exchange(&mut sim, 0, 1, 50, Duration::from_millis(10));
}

#[test]
fn a_node_configured_for_aes_only_uses_it_with_a_peer_that_can() {
    let mut sim = Sim::new(2, 43);
    with_ciphers(
        &mut sim,
        0,
        CipherPreference::Only(Cipher::Aes256Gcm),
        false,
    );
    with_ciphers(&mut sim, 1, CipherPreference::Auto, false);
    sim.run_for(Duration::from_secs(2));
    assert!(sim.all_up());
    assert_eq!(cipher_seen(&sim, 1, "h1").as_deref(), Some("aes-256-gcm"));
    exchange(&mut sim, 0, 1, 20, Duration::from_millis(10));
}

#[test]
fn nodes_without_a_common_cipher_refuse_each_other_and_count_it() {
    let mut sim = Sim::new(2, 44);
    with_ciphers(&mut sim, 0, CipherPreference::Only(Cipher::Aes256Gcm), true);
    with_ciphers(
        &mut sim,
        1,
        CipherPreference::Only(Cipher::ChaCha20Poly1305),
        true,
    );
    sim.run_for(Duration::from_secs(30));
    assert_ne!(sim.state(0, "h2"), "up");
    assert_ne!(sim.state(1, "h1"), "up");
    assert!(sim.counter(0, "rx_handshake_no_common_cipher") > 0);
    assert!(sim.counter(1, "rx_handshake_no_common_cipher") > 0);
    assert_eq!(sim.total("handshakes_completed"), 0);
}

#[test]
fn rewriting_the_offer_in_flight_cannot_downgrade_two_aes_nodes() {
    // The offer travels inside the initiation's encrypted, authenticated payload: an attacker
    // on the path who rewrites any byte of it (say, to drop AES from the offer) breaks the
    // handshake instead of steering it. Every initiation from h1 gets one payload byte flipped.
    let mut sim = Sim::new(2, 45);
    // Only h1 initiates while the attack runs: h2 knows no endpoint for h1.
    sim.hosts[1].peers[0].endpoint = None;
    with_ciphers(&mut sim, 0, CipherPreference::Auto, true);
    with_ciphers(&mut sim, 1, CipherPreference::Auto, true);
    let h2_key = StaticSecret::from_bytes(secret(1)).public_key();
    let flips = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let counter = flips.clone();
    sim.tamper = Some(Box::new(move |_, _, bytes: &mut Vec<u8>| {
        if classify(bytes) == Ok(MessageType::HandshakeInit)
            && HandshakeInit::new_checked(&bytes[..]).is_ok()
        {
            // In front of the two 16-byte MACs is the Noise payload's tag, and in front of that
            // the payload's last bytes: the cipher offer.
            let at = bytes.len() - 32 - 16 - 1;
            assert!(at > 8 + NOISE_INIT_OVERHEAD - 16);
            bytes[at] ^= 0x02;
            // mac1 is keyed by the responder's public key, so the attacker can redo it: the
            // rewritten message reaches the responder's Noise processing.
            let covered = HandshakeInit::new_checked(&bytes[..])
                .unwrap()
                .mac1_covered()
                .len();
            let mac = compute_mac1(&mac1_key(&h2_key), &bytes[..covered]);
            bytes[covered..covered + mac.len()].copy_from_slice(&mac);
            counter.set(counter.get() + 1);
        }
    }));
    sim.run_for(Duration::from_secs(20));
    let flipped = flips.get();
    assert!(flipped >= 3, "initiations were rewritten: {flipped}");
    assert_ne!(
        sim.state(0, "h2"),
        "up",
        "a rewritten offer made no session"
    );
    assert_eq!(sim.total("handshakes_completed"), 0);
    assert!(sim.counter(1, "rx_handshake_failed") >= flipped);
    // The attacker stops: the pair comes up on AES-256-GCM, never on anything weaker.
    sim.tamper = None;
    sim.run_for(Duration::from_secs(40));
    assert!(sim.all_up());
    assert_eq!(cipher_seen(&sim, 0, "h2").as_deref(), Some("aes-256-gcm"));
}
