//! The Noise IK handshake that turns two static keys into a pair of data-path keys, and the
//! mac1 check that screens handshake messages before any Diffie-Hellman work.
//!
//! Pattern: `Noise_IK_25519_ChaChaPoly_BLAKE2s`. IK fits a mesh where every node already knows
//! its peers' public keys from config: the initiator gets a session in one round trip, its
//! static key travels encrypted (a passive observer cannot tell who is connecting), and the
//! responder learns and authenticates the initiator's identity from the first message. The
//! payloads of both messages are the caller's (meshd's node puts a timestamp and its
//! certificate in the first and its certificate in the second; the join exchange puts the
//! invitation request and answer there). Both are encrypted: the first under keys that only the
//! responder can derive, the second under the full session.
//!
//! Owns [`Initiator`], [`respond`]/[`Responder`], [`SessionSecrets`] / [`SessionKeys`] and the
//! mac1 helpers.
//! Invariants: every handshake state draws randomness only from a [`CoreRng`] fork; message
//! lengths are bounded before snow sees them (at most [`MAX_HANDSHAKE_PAYLOAD`] of payload); failures are reported as [`CryptoError::Handshake`] with no detail
//! that could help an attacker; split keys are held as [`SessionSecrets`] (wiped on drop) only
//! until the caller has read the payloads that negotiate the AEAD, then moved into ring by
//! [`SessionSecrets::load`] and the raw copies wiped at once.
//! Known limit: snow 0.10 does not wipe its own chaining key and handshake cipher state when a
//! handshake state drops (our X25519 scalars, including the static key copy, are wiped).

use core::fmt;

use blake2::digest::consts::U16;
use blake2::digest::{Digest, KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac};
use snow::{Builder, HandshakeState};
use zeroize::{Zeroize, Zeroizing};

use crate::keys::{PublicKey, StaticSecret, KEY_LEN};
use crate::resolver::CoreResolver;
use crate::rng::CoreRng;
use crate::session::{Cipher, RecvKey, SendKey};
use crate::CryptoError;

/// The Noise protocol name; hashed into every handshake, so both ends must agree on it.
pub const NOISE_PATTERN: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

/// Largest payload either message may carry; keeps every handshake inside one datagram.
pub const MAX_HANDSHAKE_PAYLOAD: usize = 1024;

/// Bytes the Noise part of an initiation adds to its payload: ephemeral key, encrypted static
/// key with its tag, and the payload's tag.
pub const NOISE_INIT_OVERHEAD: usize = 32 + 48 + 16;

/// Bytes the Noise part of a response adds to its payload: ephemeral key and the payload's tag.
pub const NOISE_RESPONSE_OVERHEAD: usize = 32 + 16;

/// Length of a mac1 tag.
pub const MAC1_LEN: usize = 16;

/// Domain separation for the mac1 key, so it can never collide with another use of BLAKE2s
/// over a public key.
const MAC1_LABEL: &[u8] = b"meshd-mac1-v1";

/// The initiating side of one handshake attempt. Each retransmission should be a new
/// `Initiator` (fresh ephemeral key, fresh timestamp); one `Initiator` writes one initiation.
pub struct Initiator {
    state: HandshakeState,
    remote: PublicKey,
}

/// The responding side after a valid initiation: the peer is authenticated, its payload is
/// available for the caller's checks, and writing the response yields the session keys.
pub struct Responder {
    state: HandshakeState,
    remote: PublicKey,
    payload: Vec<u8>,
}

/// The two directions' secrets of a fresh session, before the AEAD is chosen: the handshake's
/// payloads negotiate it, so the keys are loaded only after the caller has read them. Wiped on
/// drop.
pub struct SessionSecrets {
    send: Zeroizing<[u8; 32]>,
    recv: Zeroizing<[u8; 32]>,
}

impl SessionSecrets {
    /// Loads both directions into ring for `cipher`; the raw secrets are wiped.
    pub fn load(self, cipher: Cipher) -> SessionKeys {
        SessionKeys {
            send: SendKey::new(*self.send, cipher),
            recv: RecvKey::new(*self.recv, cipher),
        }
    }
}

/// The two directions of a fresh session, loaded into ring.
pub struct SessionKeys {
    /// Key for messages this side sends.
    pub send: SendKey,
    /// Key for messages this side receives.
    pub recv: RecvKey,
}

fn builder<'a>(
    local: &'a StaticSecret,
    prologue: &'a [u8],
    rng: &mut CoreRng,
) -> Result<Builder<'a>, CryptoError> {
    let params = NOISE_PATTERN.parse().map_err(|_| CryptoError::Handshake)?;
    Builder::with_resolver(params, Box::new(CoreResolver::new(rng.fork(), local)))
        .local_private_key(local.as_bytes())
        .and_then(|b| b.prologue(prologue))
        .map_err(|_| CryptoError::Handshake)
}

/// Takes the finished handshake's two cipher keys, wiping snow's raw copies. The initiator sends
/// with the first key, the responder with the second.
fn split(state: &mut HandshakeState) -> Result<SessionSecrets, CryptoError> {
    if !state.is_handshake_finished() {
        return Err(CryptoError::Handshake);
    }
    let initiator = state.is_initiator();
    let (mut first, mut second) = state.dangerously_get_raw_split();
    let (send_raw, recv_raw) = if initiator {
        (first, second)
    } else {
        (second, first)
    };
    let keys = SessionSecrets {
        send: Zeroizing::new(send_raw),
        recv: Zeroizing::new(recv_raw),
    };
    first.zeroize();
    second.zeroize();
    Ok(keys)
}

impl Initiator {
    /// Prepares a handshake from `local` to the peer whose static key is `remote`. The
    /// prologue must match the responder's byte for byte.
    pub fn new(
        local: &StaticSecret,
        remote: &PublicKey,
        prologue: &[u8],
        rng: &mut CoreRng,
    ) -> Result<Self, CryptoError> {
        let state = builder(local, prologue, rng)?
            .remote_public_key(remote.as_bytes())
            .and_then(|b| b.build_initiator())
            .map_err(|_| CryptoError::Handshake)?;
        Ok(Initiator {
            state,
            remote: *remote,
        })
    }

    /// The peer this handshake is addressed to.
    pub fn remote(&self) -> PublicKey {
        self.remote
    }

    /// Writes the initiation carrying `payload` to the start of `out` and returns its length,
    /// [`NOISE_INIT_OVERHEAD`] + `payload.len()`.
    pub fn write_init(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, CryptoError> {
        if payload.len() > MAX_HANDSHAKE_PAYLOAD {
            return Err(CryptoError::Handshake);
        }
        let len = NOISE_INIT_OVERHEAD + payload.len();
        let out = out.get_mut(..len).ok_or(CryptoError::BufferTooSmall)?;
        match self.state.write_message(payload, out) {
            Ok(n) if n == len => Ok(len),
            _ => Err(CryptoError::Handshake),
        }
    }

    /// Completes the handshake with the responder's message and returns its payload and the
    /// session's secrets.
    pub fn read_response(mut self, msg: &[u8]) -> Result<(Vec<u8>, SessionSecrets), CryptoError> {
        self.try_read_response(msg)
    }

    /// Like [`Initiator::read_response`], but a message that fails leaves the handshake
    /// untouched, so a forged response cannot kill an attempt the real responder is about to
    /// answer. After success the `Initiator` is spent and further calls fail.
    pub fn try_read_response(
        &mut self,
        msg: &[u8],
    ) -> Result<(Vec<u8>, SessionSecrets), CryptoError> {
        if msg.len() < NOISE_RESPONSE_OVERHEAD
            || msg.len() > NOISE_RESPONSE_OVERHEAD + MAX_HANDSHAKE_PAYLOAD
        {
            return Err(CryptoError::Handshake);
        }
        let mut payload = vec![0u8; msg.len()];
        match self.state.read_message(msg, &mut payload) {
            Ok(n) => {
                payload.truncate(n);
                Ok((payload, split(&mut self.state)?))
            }
            Err(_) => Err(CryptoError::Handshake),
        }
    }
}

/// Processes an initiation addressed to `local` (the DH-heavy step: run it only after mac1 and
/// any rate limit). On success the initiator is authenticated: check
/// [`Responder::remote_static`] and [`Responder::payload`] (meshd: certificate, replay
/// timestamp) before calling [`Responder::write_response`].
pub fn respond(
    local: &StaticSecret,
    prologue: &[u8],
    rng: &mut CoreRng,
    init_msg: &[u8],
) -> Result<Responder, CryptoError> {
    if init_msg.len() < NOISE_INIT_OVERHEAD
        || init_msg.len() > NOISE_INIT_OVERHEAD + MAX_HANDSHAKE_PAYLOAD
    {
        return Err(CryptoError::Handshake);
    }
    let mut state = builder(local, prologue, rng)?
        .build_responder()
        .map_err(|_| CryptoError::Handshake)?;
    let mut payload = vec![0u8; init_msg.len()];
    let payload_len = state
        .read_message(init_msg, &mut payload)
        .map_err(|_| CryptoError::Handshake)?;
    payload.truncate(payload_len);
    let remote: [u8; KEY_LEN] = state
        .get_remote_static()
        .and_then(|key| key.try_into().ok())
        .ok_or(CryptoError::Handshake)?;
    Ok(Responder {
        state,
        remote: PublicKey::from_bytes(remote),
        payload,
    })
}

impl Responder {
    /// The initiator's authenticated static public key.
    pub fn remote_static(&self) -> PublicKey {
        self.remote
    }

    /// The initiator's decrypted payload.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Writes the response carrying `payload` to the start of `out` and returns its length
    /// ([`NOISE_RESPONSE_OVERHEAD`] + `payload.len()`) with the session's secrets.
    pub fn write_response(
        mut self,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(usize, SessionSecrets), CryptoError> {
        if payload.len() > MAX_HANDSHAKE_PAYLOAD {
            return Err(CryptoError::Handshake);
        }
        let len = NOISE_RESPONSE_OVERHEAD + payload.len();
        let out = out.get_mut(..len).ok_or(CryptoError::BufferTooSmall)?;
        match self.state.write_message(payload, out) {
            Ok(n) if n == len => Ok((len, split(&mut self.state)?)),
            _ => Err(CryptoError::Handshake),
        }
    }
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for SessionSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionSecrets(..)")
    }
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("send", &self.send)
            .field("recv", &self.recv)
            .finish()
    }
}

/// The key for mac1 on messages sent to `receiver`: BLAKE2s-256(`"meshd-mac1-v1"` ||
/// receiver's public key). Anyone who knows the receiver's public key can compute it; its job
/// is to make the receiver drop random or misaddressed datagrams before doing any DH.
pub fn mac1_key(receiver: &PublicKey) -> [u8; 32] {
    let mut hasher = Blake2s256::new();
    hasher.update(MAC1_LABEL);
    hasher.update(receiver.as_bytes());
    hasher.finalize().into()
}

/// Keyed BLAKE2s with a 16-byte output over `msg`.
pub fn compute_mac1(key: &[u8; 32], msg: &[u8]) -> [u8; MAC1_LEN] {
    let mut mac = <Blake2sMac<U16> as KeyInit>::new(&(*key).into());
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Checks `mac` against mac1 of `msg` in constant time (for equal lengths).
pub fn verify_mac1(key: &[u8; 32], msg: &[u8], mac: &[u8]) -> bool {
    if mac.len() != MAC1_LEN {
        return false;
    }
    let expected = compute_mac1(key, msg);
    let difference = expected
        .iter()
        .zip(mac)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    difference == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::TAG_LEN;

    const PROLOGUE: &[u8] = b"meshd test prologue";
    const TIMESTAMP: [u8; 8] = 0x0123_4567_89ab_cdef_u64.to_be_bytes();
    /// The tests use an 8-byte initiation payload and an empty response payload.
    const NOISE_INIT_LEN: usize = NOISE_INIT_OVERHEAD + TIMESTAMP.len();
    const NOISE_RESPONSE_LEN: usize = NOISE_RESPONSE_OVERHEAD;

    fn key(seed: u8) -> StaticSecret {
        StaticSecret::generate(&mut CoreRng::from_seed([seed; 32]))
    }

    struct Pair {
        alice: StaticSecret,
        bob: StaticSecret,
        alice_rng: CoreRng,
        bob_rng: CoreRng,
    }

    fn pair() -> Pair {
        Pair {
            alice: key(1),
            bob: key(2),
            alice_rng: CoreRng::from_seed([11; 32]),
            bob_rng: CoreRng::from_seed([22; 32]),
        }
    }

    fn init_message(p: &mut Pair) -> (Initiator, [u8; NOISE_INIT_LEN]) {
        let mut initiator =
            Initiator::new(&p.alice, &p.bob.public_key(), PROLOGUE, &mut p.alice_rng).unwrap();
        let mut msg = [0u8; NOISE_INIT_LEN];
        assert_eq!(
            initiator.write_init(&TIMESTAMP, &mut msg),
            Ok(NOISE_INIT_LEN)
        );
        (initiator, msg)
    }

    fn full_handshake(p: &mut Pair) -> (SessionKeys, SessionKeys) {
        let (initiator, init) = init_message(p);
        let responder = respond(&p.bob, PROLOGUE, &mut p.bob_rng, &init).unwrap();
        assert_eq!(responder.remote_static(), p.alice.public_key());
        assert_eq!(responder.payload(), TIMESTAMP);
        let mut response = [0u8; NOISE_RESPONSE_LEN + 10];
        let (len, bob_keys) = responder.write_response(&[], &mut response).unwrap();
        assert_eq!(len, NOISE_RESPONSE_LEN);
        let (payload, alice_keys) = initiator.read_response(&response[..len]).unwrap();
        assert!(payload.is_empty());
        (
            alice_keys.load(Cipher::ChaCha20Poly1305),
            bob_keys.load(Cipher::ChaCha20Poly1305),
        )
    }

    fn assert_delivers(from: &mut SendKey, to: &RecvKey, message: &[u8]) {
        let counter = from.next_counter().unwrap();
        let mut buf = message.to_vec();
        let tag = from
            .sealer()
            .seal_in_place(counter, b"hdr", &mut buf)
            .unwrap();
        if !message.is_empty() {
            assert_ne!(buf, message);
        }
        buf.extend_from_slice(&tag);
        let plain = to
            .opener()
            .open_in_place(counter, b"hdr", &mut buf)
            .unwrap();
        assert_eq!(plain, message);
    }

    fn fails_to_deliver(from: &mut SendKey, to: &RecvKey) -> bool {
        let counter = from.next_counter().unwrap();
        let mut buf = *b"ping....";
        let tag = from.sealer().seal_in_place(counter, &[], &mut buf).unwrap();
        let mut sealed = [0u8; 8 + TAG_LEN];
        sealed[..8].copy_from_slice(&buf);
        sealed[8..].copy_from_slice(&tag);
        to.opener().open_in_place(counter, &[], &mut sealed) == Err(CryptoError::Decrypt)
    }

    #[test]
    fn message_lengths_match_the_pattern() {
        assert_eq!(NOISE_INIT_LEN, 104);
        assert_eq!(NOISE_RESPONSE_LEN, 48);
    }

    #[test]
    fn round_trip_both_directions() {
        let mut p = pair();
        let (mut alice, mut bob) = full_handshake(&mut p);
        assert_delivers(&mut alice.send, &bob.recv, b"hello bob");
        assert_delivers(&mut bob.send, &alice.recv, b"hello alice");
        assert_delivers(&mut alice.send, &bob.recv, b"");
        // Directions use different keys: a side cannot open what it sealed itself.
        assert!(fails_to_deliver(&mut alice.send, &alice.recv));
        assert!(fails_to_deliver(&mut bob.send, &bob.recv));
    }

    #[test]
    fn same_seeds_reproduce_the_same_messages() {
        let (_, first) = init_message(&mut pair());
        let (_, second) = init_message(&mut pair());
        assert_eq!(first, second);
        let mut other = pair();
        other.alice_rng = CoreRng::from_seed([12; 32]);
        assert_ne!(init_message(&mut other).1, first);
    }

    #[test]
    fn sessions_from_different_handshakes_do_not_interoperate() {
        let mut p = pair();
        let (mut alice_1, _bob_1) = full_handshake(&mut p);
        let (_alice_2, bob_2) = full_handshake(&mut p);
        assert!(fails_to_deliver(&mut alice_1.send, &bob_2.recv));
    }

    #[test]
    fn initiation_to_the_wrong_responder_key_fails() {
        let mut p = pair();
        let carol = key(3);
        let mut initiator =
            Initiator::new(&p.alice, &carol.public_key(), PROLOGUE, &mut p.alice_rng).unwrap();
        let mut init = [0u8; NOISE_INIT_LEN];
        initiator.write_init(&TIMESTAMP, &mut init).unwrap();
        assert_eq!(
            respond(&p.bob, PROLOGUE, &mut p.bob_rng, &init).unwrap_err(),
            CryptoError::Handshake
        );
    }

    #[test]
    fn prologue_mismatch_fails() {
        let mut p = pair();
        let (_, init) = init_message(&mut p);
        assert!(respond(&p.bob, b"other network", &mut p.bob_rng, &init).is_err());
    }

    #[test]
    fn every_bit_flip_in_the_initiation_is_rejected() {
        let mut p = pair();
        let (_, init) = init_message(&mut p);
        for byte in 0..NOISE_INIT_LEN {
            for bit in [0, 3, 7] {
                let mut tampered = init;
                tampered[byte] ^= 1 << bit;
                assert!(
                    respond(&p.bob, PROLOGUE, &mut p.bob_rng, &tampered).is_err(),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn every_bit_flip_in_the_response_is_rejected_and_the_real_one_still_works() {
        let mut p = pair();
        let (mut initiator, init) = init_message(&mut p);
        let responder = respond(&p.bob, PROLOGUE, &mut p.bob_rng, &init).unwrap();
        let mut response = [0u8; NOISE_RESPONSE_LEN];
        let (_, bob_keys) = responder.write_response(&[], &mut response).unwrap();
        let mut bob_keys = bob_keys.load(Cipher::ChaCha20Poly1305);
        for byte in 0..NOISE_RESPONSE_LEN {
            let mut tampered = response;
            tampered[byte] ^= 0x40;
            assert_eq!(
                initiator.try_read_response(&tampered).unwrap_err(),
                CryptoError::Handshake
            );
        }
        let (_, alice_keys) = initiator.try_read_response(&response).unwrap();
        let alice_keys = alice_keys.load(Cipher::ChaCha20Poly1305);
        assert_delivers(&mut bob_keys.send, &alice_keys.recv, b"survived forgeries");
        // Spent: a second completion is refused.
        assert!(initiator.try_read_response(&response).is_err());
    }

    #[test]
    fn payloads_of_any_allowed_length_arrive_intact_in_both_directions() {
        let mut p = pair();
        for len in [0, 1, 300, MAX_HANDSHAKE_PAYLOAD] {
            let sent: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut initiator =
                Initiator::new(&p.alice, &p.bob.public_key(), PROLOGUE, &mut p.alice_rng).unwrap();
            let mut init = vec![0u8; NOISE_INIT_OVERHEAD + len];
            assert_eq!(initiator.write_init(&sent, &mut init), Ok(init.len()));
            let responder = respond(&p.bob, PROLOGUE, &mut p.bob_rng, &init).unwrap();
            assert_eq!(responder.payload(), &sent[..]);
            let mut response = vec![0u8; NOISE_RESPONSE_OVERHEAD + len];
            let (n, _) = responder.write_response(&sent, &mut response).unwrap();
            assert_eq!(n, response.len());
            let (got, _) = initiator.read_response(&response).unwrap();
            assert_eq!(got, sent);
        }
        let mut initiator =
            Initiator::new(&p.alice, &p.bob.public_key(), PROLOGUE, &mut p.alice_rng).unwrap();
        let too_long = vec![0u8; MAX_HANDSHAKE_PAYLOAD + 1];
        let mut out = vec![0u8; 2 * MAX_HANDSHAKE_PAYLOAD];
        assert!(initiator.write_init(&too_long, &mut out).is_err());
    }

    #[test]
    fn wrong_lengths_are_rejected_before_noise() {
        let mut p = pair();
        let (initiator, init) = init_message(&mut p);
        for len in [0, 1, NOISE_INIT_LEN - 1] {
            assert!(respond(&p.bob, PROLOGUE, &mut p.bob_rng, &init[..len]).is_err());
        }
        let mut long = [0u8; NOISE_INIT_LEN + 1];
        long[..NOISE_INIT_LEN].copy_from_slice(&init);
        assert!(respond(&p.bob, PROLOGUE, &mut p.bob_rng, &long).is_err());

        let responder = respond(&p.bob, PROLOGUE, &mut p.bob_rng, &init).unwrap();
        let mut response = [0u8; NOISE_RESPONSE_LEN + 1];
        responder.write_response(&[], &mut response).unwrap();
        assert!(initiator.read_response(&response).is_err());
    }

    #[test]
    fn small_buffers_and_out_of_order_calls_are_errors() {
        let mut p = pair();
        let mut initiator =
            Initiator::new(&p.alice, &p.bob.public_key(), PROLOGUE, &mut p.alice_rng).unwrap();
        let mut short = [0u8; NOISE_INIT_LEN - 1];
        assert_eq!(
            initiator.write_init(&TIMESTAMP, &mut short),
            Err(CryptoError::BufferTooSmall)
        );
        // Reading a response before writing the initiation is out of turn.
        assert!(initiator
            .try_read_response(&[0u8; NOISE_RESPONSE_LEN])
            .is_err());
        let mut init = [0u8; NOISE_INIT_LEN];
        initiator.write_init(&TIMESTAMP, &mut init).unwrap();
        assert_eq!(
            initiator.write_init(&TIMESTAMP, &mut init),
            Err(CryptoError::Handshake)
        );
        let responder = respond(&p.bob, PROLOGUE, &mut p.bob_rng, &init).unwrap();
        let mut short = [0u8; NOISE_RESPONSE_LEN - 1];
        assert_eq!(
            responder.write_response(&[], &mut short).unwrap_err(),
            CryptoError::BufferTooSmall
        );
    }

    #[test]
    fn garbage_initiations_are_rejected() {
        let mut p = pair();
        let mut garbage = CoreRng::from_seed([99; 32]);
        for _ in 0..32 {
            let mut msg = [0u8; NOISE_INIT_LEN];
            rand_core::RngCore::fill_bytes(&mut garbage, &mut msg);
            assert!(respond(&p.bob, PROLOGUE, &mut p.bob_rng, &msg).is_err());
        }
        // A low-order (all-zero) ephemeral key is refused.
        let (_, mut init) = init_message(&mut p);
        init[..32].fill(0);
        assert!(respond(&p.bob, PROLOGUE, &mut p.bob_rng, &init).is_err());
    }

    #[test]
    fn debug_output_hides_handshake_state() {
        let mut p = pair();
        let (initiator, _) = init_message(&mut p);
        let debug = format!("{initiator:?}");
        assert!(
            debug.starts_with("Initiator { remote: PublicKey("),
            "{debug}"
        );
    }

    #[test]
    fn mac1_accepts_the_right_tag_and_rejects_one_bit_flips() {
        let bob = key(2).public_key();
        let mac_key = mac1_key(&bob);
        let msg = b"an initiation message, more or less";
        let mac = compute_mac1(&mac_key, msg);
        assert!(verify_mac1(&mac_key, msg, &mac));
        for bit in 0..MAC1_LEN * 8 {
            let mut bad = mac;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(!verify_mac1(&mac_key, msg, &bad), "mac bit {bit}");
        }
        for bit in 0..msg.len() * 8 {
            let mut bad = *msg;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(!verify_mac1(&mac_key, &bad, &mac), "msg bit {bit}");
        }
        for bit in 0..256 {
            let mut bad_key = mac_key;
            bad_key[bit / 8] ^= 1 << (bit % 8);
            assert!(!verify_mac1(&bad_key, msg, &mac), "key bit {bit}");
        }
        assert!(!verify_mac1(&mac_key, msg, &mac[..MAC1_LEN - 1]));
        assert!(!verify_mac1(&mac_key, msg, &[]));
    }

    #[test]
    fn mac1_key_is_per_receiver_and_domain_separated() {
        let bob = key(2).public_key();
        let carol = key(3).public_key();
        assert_eq!(mac1_key(&bob), mac1_key(&bob));
        assert_ne!(mac1_key(&bob), mac1_key(&carol));
        let plain: [u8; 32] = Blake2s256::digest(bob.as_bytes()).into();
        assert_ne!(mac1_key(&bob), plain);
        let mut labelled = Blake2s256::new();
        labelled.update(b"meshd-mac1-v1");
        labelled.update(bob.as_bytes());
        assert_eq!(mac1_key(&bob), <[u8; 32]>::from(labelled.finalize()));
    }
}
