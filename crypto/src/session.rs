//! Data-path encryption: one AEAD key per direction (ChaCha20-Poly1305 or AES-256-GCM, as the
//! handshake negotiated), sealing and opening in place.
//!
//! Owns [`Cipher`] (the AEADs and their per-key limits), [`SendKey`] (key plus the next message
//! counter) and [`RecvKey`], and the shareable
//! [`Sealer`] and [`Opener`] handles that let another thread seal or open with a session's keys. The 96-bit nonce is
//! four zero bytes followed by the 64-bit counter in little-endian order, so a counter is used
//! at most once per key as long as callers seal only counters handed out by
//! [`SendKey::next_counter`]. Both AEADs take the same 96-bit nonce and 16-byte tag, so the wire
//! format does not depend on the cipher. Invariants: the send counter never passes
//! [`REJECT_AFTER_MESSAGES`] (callers rekey long before, at [`Cipher::rekey_after_messages`]); the
//! receiver refuses counters at or beyond that limit too; raw key bytes are wiped as soon as
//! ring holds them; sealing and opening never allocate. Anti-replay is not done here: open,
//! then record the counter in a [`crate::ReplayWindow`].

use core::fmt;
use std::sync::Arc;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use zeroize::Zeroize;

use crate::CryptoError;

/// Length of the Poly1305 tag that follows each ciphertext.
pub const TAG_LEN: usize = 16;

/// Length of the ChaCha20-Poly1305 nonce built from a counter.
pub const NONCE_LEN: usize = 12;

/// Messages after which a ChaCha20-Poly1305 session should be replaced by a fresh handshake.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;

/// Messages after which an AES-256-GCM session should be replaced: 2^36 messages of at most
/// 64 KiB are at most 2^48 AES blocks under one key, where the advantage of telling its
/// keystream from random stays below 2^-32 (the birthday bound of a 128-bit block cipher). The
/// time-based rekey (every 2 minutes) comes far sooner in practice: 2^48 blocks is 4 PiB.
pub const AES_GCM_REKEY_AFTER_MESSAGES: u64 = 1 << 36;

/// A data-path AEAD. Both use a 256-bit key, a 96-bit nonce (four zero bytes, then the 64-bit
/// counter) and a 16-byte tag, so datagrams look the same with either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// ChaCha20-Poly1305 (RFC 8439): fast everywhere in software, constant-time.
    ChaCha20Poly1305,
    /// AES-256-GCM: about three times faster where the CPU has AES and carry-less multiply.
    Aes256Gcm,
}

impl Cipher {
    /// Every cipher, in this code's default order of preference without AES hardware.
    pub const ALL: [Cipher; 2] = [Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm];

    /// The identifier carried in handshakes (docs/wire-format.md).
    pub const fn id(self) -> u8 {
        match self {
            Cipher::ChaCha20Poly1305 => 1,
            Cipher::Aes256Gcm => 2,
        }
    }

    /// The cipher an identifier names, if this code knows it.
    pub const fn from_id(id: u8) -> Option<Cipher> {
        match id {
            1 => Some(Cipher::ChaCha20Poly1305),
            2 => Some(Cipher::Aes256Gcm),
            _ => None,
        }
    }

    /// The name used in the config file, status and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Cipher::ChaCha20Poly1305 => "chacha20-poly1305",
            Cipher::Aes256Gcm => "aes-256-gcm",
        }
    }

    /// Messages after which a key of this cipher should be replaced.
    pub const fn rekey_after_messages(self) -> u64 {
        match self {
            Cipher::ChaCha20Poly1305 => REKEY_AFTER_MESSAGES,
            Cipher::Aes256Gcm => AES_GCM_REKEY_AFTER_MESSAGES,
        }
    }

    fn algorithm(self) -> &'static ring::aead::Algorithm {
        match self {
            Cipher::ChaCha20Poly1305 => &CHACHA20_POLY1305,
            Cipher::Aes256Gcm => &AES_256_GCM,
        }
    }

    /// Whether this CPU runs AES-256-GCM in hardware (AES and carry-less multiply instructions),
    /// where it is about three times faster than ChaCha20-Poly1305; without them AES is slower
    /// and its software forms are not constant-time, so ChaCha20-Poly1305 is the better choice.
    pub fn aes_hardware() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("aes")
                && std::arch::is_x86_feature_detected!("pclmulqdq")
        }
        #[cfg(target_arch = "aarch64")]
        {
            std::arch::is_aarch64_feature_detected!("aes")
                && std::arch::is_aarch64_feature_detected!("pmull")
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            false
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Messages after which a key must not be used at all. The margin below `u64::MAX` keeps the
/// limit clear of counter arithmetic that adds a replay window.
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);

/// The nonce for `counter`: 4 zero bytes then the counter, little-endian.
fn nonce(counter: u64) -> Nonce {
    let mut bytes = [0u8; NONCE_LEN];
    bytes[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(bytes)
}

/// Loads a raw 32-byte key into ring for `cipher` and wipes the caller's copy.
fn load_key(mut raw: [u8; 32], cipher: Cipher) -> LessSafeKey {
    // Both ciphers take exactly 32-byte keys, so ring cannot refuse this one.
    let unbound =
        UnboundKey::new(cipher.algorithm(), &raw).expect("a 32-byte key fits both ciphers");
    raw.zeroize();
    LessSafeKey::new(unbound)
}

/// The sending half of a session: a key and the count of counters handed out.
pub struct SendKey {
    key: Sealer,
    next: u64,
    cipher: Cipher,
}

/// A shareable handle on a session's sending key, able to seal but not to hand out counters, so
/// sealing can run on another thread than the one that owns the session: the owner hands out a
/// counter with [`SendKey::next_counter`], and whoever holds the sealer uses it once.
#[derive(Clone)]
pub struct Sealer(Arc<LessSafeKey>);

impl Sealer {
    /// Encrypts `in_out` in place under `counter` (handed out by [`SendKey::next_counter`], each
    /// used once) and authenticates `aad` with it. Returns the tag, which goes right after the
    /// ciphertext on the wire.
    pub fn seal_in_place(
        &self,
        counter: u64,
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let tag = self
            .0
            .seal_in_place_separate_tag(nonce(counter), Aad::from(aad), in_out)
            .map_err(|_| CryptoError::MessageTooLarge)?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Whether both handles are the same key.
    pub fn same_key(&self, other: &Sealer) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A shareable handle on a session's receiving key, so opening can run outside the lock or thread
/// that owns the session (and its replay window).
#[derive(Clone)]
pub struct Opener(Arc<LessSafeKey>);

impl Opener {
    /// Authenticates and decrypts `in_out_with_tag` (ciphertext then tag) in place, returning
    /// the plaintext prefix. On failure the buffer's contents are unspecified and must be
    /// dropped.
    pub fn open_in_place<'a>(
        &self,
        counter: u64,
        aad: &[u8],
        in_out_with_tag: &'a mut [u8],
    ) -> Result<&'a mut [u8], CryptoError> {
        if counter >= REJECT_AFTER_MESSAGES || in_out_with_tag.len() < TAG_LEN {
            return Err(CryptoError::Decrypt);
        }
        self.0
            .open_in_place(nonce(counter), Aad::from(aad), in_out_with_tag)
            .map_err(|_| CryptoError::Decrypt)
    }

    /// Whether both handles are the same key.
    pub fn same_key(&self, other: &Opener) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl SendKey {
    /// Loads `raw` for `cipher` (wiping this copy of it) with the counter at zero.
    pub fn new(raw: [u8; 32], cipher: Cipher) -> Self {
        SendKey {
            key: Sealer(Arc::new(load_key(raw, cipher))),
            next: 0,
            cipher,
        }
    }

    /// The AEAD this key seals with.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// The key's sealing handle: seal with it here, or clone it to seal away from the session's
    /// owner. Counters come only from [`SendKey::next_counter`].
    pub fn sealer(&self) -> &Sealer {
        &self.key
    }

    /// Hands out the next unused counter; fails once [`REJECT_AFTER_MESSAGES`] are used.
    pub fn next_counter(&mut self) -> Result<u64, CryptoError> {
        if self.next >= REJECT_AFTER_MESSAGES {
            return Err(CryptoError::CounterExhausted);
        }
        let counter = self.next;
        self.next += 1;
        Ok(counter)
    }

    /// How many counters have been handed out.
    pub fn counter(&self) -> u64 {
        self.next
    }
}

/// The receiving half of a session.
pub struct RecvKey {
    key: Opener,
}

impl RecvKey {
    /// Loads `raw` for `cipher`, wiping this copy of it.
    pub fn new(raw: [u8; 32], cipher: Cipher) -> Self {
        RecvKey {
            key: Opener(Arc::new(load_key(raw, cipher))),
        }
    }

    /// The key's opening handle: open with it here, or clone it to open away from the session's
    /// owner (and its replay window).
    pub fn opener(&self) -> &Opener {
        &self.key
    }
}

impl fmt::Debug for SendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendKey")
            .field("cipher", &self.cipher)
            .field("counter", &self.next)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RecvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecvKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [0x42; 32];
    const AAD: &[u8] = b"outer header";

    fn sealed(send: &mut SendKey, plain: &[u8]) -> (u64, Vec<u8>) {
        let counter = send.next_counter().unwrap();
        let mut buf = plain.to_vec();
        let tag = send.sealer().seal_in_place(counter, AAD, &mut buf).unwrap();
        buf.extend_from_slice(&tag);
        (counter, buf)
    }

    #[test]
    fn matches_an_independent_chacha20_poly1305() {
        // snow's default cipher (RustCrypto's chacha20poly1305, not ring) uses the Noise nonce
        // layout, which is ours: sealing must agree byte for byte, and it must open ours.
        use snow::params::CipherChoice;
        use snow::resolvers::{CryptoResolver, DefaultResolver};
        let mut other = DefaultResolver
            .resolve_cipher(&CipherChoice::ChaChaPoly)
            .unwrap();
        other.set(&KEY);
        let send = SendKey::new(KEY, Cipher::ChaCha20Poly1305);
        let plain = b"cross-implementation check of nonce layout and tag placement";
        for counter in [0u64, 1, 0x0102_0304_0506_0708, REJECT_AFTER_MESSAGES - 1] {
            let mut ours = plain.to_vec();
            let tag = send
                .sealer()
                .seal_in_place(counter, AAD, &mut ours)
                .unwrap();
            ours.extend_from_slice(&tag);
            let mut theirs = vec![0u8; plain.len() + TAG_LEN];
            assert_eq!(
                other.encrypt(counter, AAD, plain, &mut theirs),
                theirs.len()
            );
            assert_eq!(ours, theirs, "counter {counter}");
        }
    }

    /// Seals and opens in place, for every length, with `cipher`: the wire form is the
    /// plaintext's length plus the tag, not the plaintext, and opens back to it.
    fn round_trips(cipher: Cipher) {
        let mut send = SendKey::new(KEY, cipher);
        let recv = RecvKey::new(KEY, cipher);
        for len in [0usize, 1, 63, 64, 65, 1500, 9000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let (counter, mut wire) = sealed(&mut send, &plain);
            assert_eq!(wire.len(), len + TAG_LEN);
            if len > 0 {
                assert_ne!(&wire[..len], &plain[..]);
            }
            let opened = recv
                .opener()
                .open_in_place(counter, AAD, &mut wire)
                .unwrap();
            assert_eq!(opened, &plain[..]);
        }
    }

    #[test]
    fn seal_open_round_trip_in_place() {
        round_trips(Cipher::ChaCha20Poly1305);
    }

    #[test]
    fn aes_256_gcm_round_trips() {
        round_trips(Cipher::Aes256Gcm);
    }

    #[test]
    fn counters_are_sequential_and_counted() {
        let mut send = SendKey::new(KEY, Cipher::ChaCha20Poly1305);
        assert_eq!(send.counter(), 0);
        assert_eq!(send.next_counter(), Ok(0));
        assert_eq!(send.next_counter(), Ok(1));
        assert_eq!(send.counter(), 2);
    }

    #[test]
    fn counter_exhaustion_is_an_error() {
        let mut send = SendKey::new(KEY, Cipher::ChaCha20Poly1305);
        send.next = REJECT_AFTER_MESSAGES - 1;
        assert_eq!(send.next_counter(), Ok(REJECT_AFTER_MESSAGES - 1));
        assert_eq!(send.next_counter(), Err(CryptoError::CounterExhausted));
        assert_eq!(send.next_counter(), Err(CryptoError::CounterExhausted));
        assert_eq!(send.counter(), REJECT_AFTER_MESSAGES);
    }

    #[test]
    fn tampering_anywhere_fails_to_open() {
        let mut send = SendKey::new(KEY, Cipher::ChaCha20Poly1305);
        let recv = RecvKey::new(KEY, Cipher::ChaCha20Poly1305);
        let (counter, wire) = sealed(&mut send, b"a frame of some length");
        for byte in 0..wire.len() {
            let mut bad = wire.clone();
            bad[byte] ^= 0x01;
            assert_eq!(
                recv.opener().open_in_place(counter, AAD, &mut bad),
                Err(CryptoError::Decrypt),
                "byte {byte}"
            );
        }
        let mut copy = wire.clone();
        assert!(recv
            .opener()
            .open_in_place(counter + 1, AAD, &mut copy)
            .is_err());
        let mut copy = wire.clone();
        assert!(recv
            .opener()
            .open_in_place(counter, b"outer headeR", &mut copy)
            .is_err());
        let mut copy = wire.clone();
        assert!(recv
            .opener()
            .open_in_place(counter, &[], &mut copy)
            .is_err());
        let mut copy = wire.clone();
        assert!(RecvKey::new([0x43; 32], Cipher::ChaCha20Poly1305)
            .opener()
            .open_in_place(counter, AAD, &mut copy)
            .is_err());
        let mut copy = wire.clone();
        assert!(recv
            .opener()
            .open_in_place(counter, AAD, &mut copy[..wire.len() - 1])
            .is_err());
        let mut copy = wire;
        assert!(recv.opener().open_in_place(counter, AAD, &mut copy).is_ok());
    }

    /// Sealing under counter 1 must equal a raw ring seal of `algorithm` with nonce
    /// 00000000 0100000000000000: the nonce layout, the same for both ciphers.
    fn assert_counter_nonce_layout(cipher: Cipher, algorithm: &'static ring::aead::Algorithm) {
        let send = SendKey::new(KEY, cipher);
        let mut ours = *b"nonce layout";
        let tag = send.sealer().seal_in_place(1, &[], &mut ours).unwrap();
        let reference = LessSafeKey::new(UnboundKey::new(algorithm, &KEY).unwrap());
        let mut theirs = *b"nonce layout";
        let mut nonce_bytes = [0u8; NONCE_LEN];
        nonce_bytes[4] = 1;
        let reference_tag = reference
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::empty(),
                &mut theirs,
            )
            .unwrap();
        assert_eq!(ours, theirs);
        assert_eq!(&tag[..], reference_tag.as_ref());
    }

    #[test]
    fn nonce_is_zero_prefix_then_little_endian_counter() {
        assert_counter_nonce_layout(Cipher::ChaCha20Poly1305, &CHACHA20_POLY1305);
        assert_counter_nonce_layout(Cipher::Aes256Gcm, &AES_256_GCM);
    }

    #[test]
    fn short_and_out_of_range_inputs_fail_cleanly() {
        let recv = RecvKey::new(KEY, Cipher::ChaCha20Poly1305);
        for len in 0..TAG_LEN {
            let mut buf = vec![0u8; len];
            assert_eq!(
                recv.opener().open_in_place(0, &[], &mut buf),
                Err(CryptoError::Decrypt)
            );
        }
        let mut buf = [0u8; TAG_LEN + 4];
        assert_eq!(
            recv.opener()
                .open_in_place(REJECT_AFTER_MESSAGES, &[], &mut buf),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(
            recv.opener().open_in_place(u64::MAX, &[], &mut buf),
            Err(CryptoError::Decrypt)
        );
    }

    #[test]
    fn debug_shows_no_key_material() {
        let send = SendKey::new(KEY, Cipher::ChaCha20Poly1305);
        assert_eq!(
            format!("{send:?}"),
            "SendKey { cipher: ChaCha20Poly1305, counter: 0, .. }"
        );
        assert_eq!(
            format!("{:?}", RecvKey::new(KEY, Cipher::ChaCha20Poly1305)),
            "RecvKey(..)"
        );
    }

    #[test]
    fn a_key_opens_only_what_its_own_cipher_sealed() {
        let mut chacha = SendKey::new(KEY, Cipher::ChaCha20Poly1305);
        let (counter, mut wire) = sealed(&mut chacha, b"same key, other cipher");
        assert_eq!(
            RecvKey::new(KEY, Cipher::Aes256Gcm)
                .opener()
                .open_in_place(counter, AAD, &mut wire),
            Err(CryptoError::Decrypt)
        );
    }

    #[test]
    fn cipher_ids_names_and_limits() {
        for cipher in Cipher::ALL {
            assert_eq!(Cipher::from_id(cipher.id()), Some(cipher));
        }
        assert_eq!(Cipher::from_id(0), None);
        assert_eq!(Cipher::from_id(3), None);
        assert_eq!(Cipher::Aes256Gcm.as_str(), "aes-256-gcm");
        assert_eq!(Cipher::ChaCha20Poly1305.to_string(), "chacha20-poly1305");
        assert!(
            Cipher::Aes256Gcm.rekey_after_messages()
                < Cipher::ChaCha20Poly1305.rekey_after_messages()
        );
    }
}
