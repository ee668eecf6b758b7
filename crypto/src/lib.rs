//! meshd's cryptography, kept in its own crate so the rest of meshd never touches key bytes.
//!
//! It owns the node's long-term X25519 keys ([`keys`]), the deterministic CSPRNG the sans-IO
//! core draws from ([`rng`]), the Noise IK handshake and the cheap pre-handshake mac1 check
//! ([`handshake`]), cookies and mac2 for a responder under load ([`cookie`]), the
//! ChaCha20-Poly1305 data-path keys ([`session`]), the anti-replay
//! bitmap ([`replay`]), Ed25519 network and node signing keys ([`sign`]) and membership
//! certificates ([`cert`]). Invariants shared by every module: nothing here reads a clock, a socket
//! or the OS random source (randomness enters only through a seeded [`CoreRng`]); secret key
//! material is zeroized when its owner drops and is never printed by `Debug`; errors carry no
//! secret data; and no function panics on untrusted input.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cert;
pub mod cookie;
pub mod handshake;
pub mod keys;
pub mod replay;
mod resolver;
pub mod rng;
pub mod session;
pub mod sign;

pub use cert::{
    valid_member_name, AddressGrant, CertError, Certificate, CERT_MAX_LEN, CERT_MIN_LEN, GRANT_LEN,
    MAX_NAME_LEN,
};
pub use cookie::{
    compute_mac2, cookie_key, open_cookie, seal_cookie, verify_mac2, Cookie, CookieSecret,
    COOKIE_LEN, COOKIE_NONCE_LEN, MAC2_LEN, SEALED_COOKIE_LEN,
};
pub use handshake::{
    compute_mac1, mac1_key, respond, verify_mac1, Initiator, Responder, SessionKeys,
    SessionSecrets, MAC1_LEN, MAX_HANDSHAKE_PAYLOAD, NOISE_INIT_OVERHEAD, NOISE_PATTERN,
    NOISE_RESPONSE_OVERHEAD,
};
pub use keys::{PublicKey, StaticSecret, KEY_LEN};
pub use replay::{ReplayWindow, REPLAY_WINDOW};
pub use rng::CoreRng;
pub use session::{
    Cipher, Opener, RecvKey, Sealer, SendKey, AES_GCM_REKEY_AFTER_MESSAGES, NONCE_LEN,
    REJECT_AFTER_MESSAGES, REKEY_AFTER_MESSAGES, TAG_LEN,
};
pub use sign::{NetworkId, NetworkSecret, SigningKey, SigningPublicKey, SIGNATURE_LEN};

/// Everything that can go wrong in this crate. Messages are fixed strings: they never include
/// key bytes, plaintext or anything an attacker sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// A key string or byte slice is not a valid 32-byte key.
    #[error("invalid key: expected 32 bytes as 44 characters of standard base64")]
    InvalidKey,
    /// The Noise handshake failed: malformed or tampered message, wrong keys, wrong prologue,
    /// or a step called out of order.
    #[error("noise handshake failed")]
    Handshake,
    /// Authenticated decryption failed: wrong key, wrong counter, tampered ciphertext or
    /// associated data, or a message shorter than its tag.
    #[error("decryption failed")]
    Decrypt,
    /// The output buffer cannot hold the message to be written.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// The send counter reached [`REJECT_AFTER_MESSAGES`]; the session must be replaced.
    #[error("message counter exhausted; session must be rekeyed")]
    CounterExhausted,
    /// The plaintext is longer than ChaCha20-Poly1305 can encrypt under one nonce
    /// (about 256 GiB; unreachable with datagrams).
    #[error("message too large to encrypt")]
    MessageTooLarge,
}
