//! Long-term X25519 identity keys and their text form.
//!
//! Owns [`StaticSecret`] (a node's private key) and [`PublicKey`] (how peers name each other in
//! configs, status output and logs). Invariants: a `StaticSecret` zeroizes its bytes on drop, has
//! no `Display`, and its `Debug` never shows key material; its public half is derived once at
//! construction, so `public_key()` is free. Both kinds of key have exactly one text form:
//! standard base64 with padding, 44 characters for 32 bytes; non-canonical encodings (stray
//! trailing bits), other lengths and other alphabets are rejected with
//! [`CryptoError::InvalidKey`]. Parsing text allocates nothing.

use core::fmt;
use core::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::resolver::x25519_public;
use crate::CryptoError;

/// Length in bytes of X25519 private and public keys.
pub const KEY_LEN: usize = 32;

/// Length of the base64 text form of a key (32 bytes, padded).
pub(crate) const BASE64_KEY_LEN: usize = 44;

/// Characters of the base64 form shown by `PublicKey`'s `Debug`: enough to tell peers apart in
/// logs, short enough to keep lines readable.
const DEBUG_PREFIX_LEN: usize = 8;

/// Decodes exactly one key from base64 text, trimming surrounding whitespace (key files end
/// with a newline). The scratch buffer is zeroized because it may hold private key bytes.
pub(crate) fn decode_key(text: &str) -> Result<[u8; KEY_LEN], CryptoError> {
    let text = text.trim();
    if text.len() != BASE64_KEY_LEN {
        return Err(CryptoError::InvalidKey);
    }
    // 44 base64 characters decode to at most 33 bytes; the slack keeps decode_slice from
    // rejecting a valid input on its conservative size estimate.
    let mut scratch = Zeroizing::new([0u8; 48]);
    let decoded = STANDARD
        .decode_slice(text.as_bytes(), &mut scratch[..])
        .map_err(|_| CryptoError::InvalidKey)?;
    if decoded != KEY_LEN {
        return Err(CryptoError::InvalidKey);
    }
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&scratch[..KEY_LEN]);
    Ok(key)
}

/// Encodes a key into a stack buffer, returning the 44 ASCII characters.
pub(crate) fn encode_key<'a>(key: &[u8; KEY_LEN], out: &'a mut [u8; BASE64_KEY_LEN]) -> &'a str {
    // 32 bytes always encode to exactly 44 characters, so neither step can fail.
    let written = STANDARD.encode_slice(key, &mut out[..]).unwrap_or(0);
    core::str::from_utf8(&out[..written]).unwrap_or("")
}

/// A node's X25519 private key.
///
/// The bytes are kept as given (no clamping on import, so text round-trips exactly); X25519
/// clamps them at every use. Zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct StaticSecret {
    secret: [u8; KEY_LEN],
    #[zeroize(skip)]
    public: PublicKey,
}

impl StaticSecret {
    /// Wraps raw private key bytes. Every 32-byte string is a usable X25519 private key.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let public = PublicKey(x25519_public(&bytes));
        StaticSecret {
            secret: bytes,
            public,
        }
    }

    /// Draws a fresh private key from `rng`, clamped as RFC 7748 specifies so that the stored
    /// bytes are the scalar actually used.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill_bytes(&mut bytes[..]);
        bytes[0] &= 0b1111_1000;
        bytes[31] &= 0b0111_1111;
        bytes[31] |= 0b0100_0000;
        Self::from_bytes(*bytes)
    }

    /// The matching public key (computed once at construction).
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The raw private key bytes. Handle with care: do not copy them anywhere that is not
    /// itself zeroized.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.secret
    }

    /// The private key as standard base64 (the key file format), in a string that is wiped
    /// when dropped.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.secret))
    }

    /// Parses a private key from standard base64, ignoring surrounding whitespace.
    pub fn from_base64(text: &str) -> Result<Self, CryptoError> {
        let bytes = Zeroizing::new(decode_key(text)?);
        Ok(Self::from_bytes(*bytes))
    }
}

impl fmt::Debug for StaticSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticSecret(..)")
    }
}

/// A node's X25519 public key: its identity on the mesh.
///
/// `Display` and `FromStr` use standard base64 (44 characters); `Debug` shows only the first
/// characters, which is enough to recognise a peer in logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey([u8; KEY_LEN]);

impl PublicKey {
    /// Wraps raw public key bytes.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PublicKey(bytes)
    }

    /// The raw public key bytes.
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; BASE64_KEY_LEN];
        f.write_str(encode_key(&self.0, &mut buf))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; BASE64_KEY_LEN];
        let text = encode_key(&self.0, &mut buf);
        let prefix = text.get(..DEBUG_PREFIX_LEN).unwrap_or(text);
        write!(f, "PublicKey({prefix}…)")
    }
}

impl FromStr for PublicKey {
    type Err = CryptoError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        decode_key(text).map(PublicKey)
    }
}

impl From<[u8; KEY_LEN]> for PublicKey {
    fn from(bytes: [u8; KEY_LEN]) -> Self {
        PublicKey(bytes)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::CoreRng;

    fn secret(seed: u8) -> StaticSecret {
        StaticSecret::generate(&mut CoreRng::from_seed([seed; 32]))
    }

    #[test]
    fn rfc7748_public_key_vector() {
        // RFC 7748 section 6.1, Alice's key pair.
        let private = hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let public = hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        assert_eq!(
            StaticSecret::from_bytes(private).public_key().as_bytes(),
            &public
        );
    }

    #[test]
    fn generate_clamps_and_is_deterministic_per_seed() {
        let a = secret(1);
        let bytes = a.as_bytes();
        assert_eq!(bytes[0] & 0b111, 0);
        assert_eq!(bytes[31] & 0b1100_0000, 0b0100_0000);
        assert_eq!(a.public_key(), secret(1).public_key());
        assert_ne!(a.public_key(), secret(2).public_key());
    }

    #[test]
    fn secret_base64_round_trip_with_whitespace() {
        let key = secret(3);
        let text = key.to_base64();
        assert_eq!(text.len(), BASE64_KEY_LEN);
        let file_contents = format!("  {}\n", text.as_str());
        let parsed = StaticSecret::from_base64(&file_contents).unwrap();
        assert_eq!(parsed.as_bytes(), key.as_bytes());
        assert_eq!(parsed.public_key(), key.public_key());
    }

    #[test]
    fn public_key_display_from_str_round_trip() {
        let public = secret(4).public_key();
        let text = public.to_string();
        assert_eq!(text.len(), BASE64_KEY_LEN);
        assert_eq!(text.parse::<PublicKey>().unwrap(), public);
        assert_eq!(format!("{text}\n").parse::<PublicKey>().unwrap(), public);
    }

    #[test]
    fn bad_key_text_is_rejected() {
        let good = secret(5).public_key().to_string();
        let cases = [
            String::new(),
            "   \n".to_string(),
            good[..43].to_string(),      // truncated
            format!("{good}A"),          // too long
            good.replace('=', "A"),      // 33 bytes worth of text
            format!("{}!", &good[..43]), // bad alphabet
            STANDARD.encode([7u8; 31]),  // 31 bytes
            STANDARD.encode([7u8; 33]),  // 33 bytes
            "not a key at all, definitely not 44 chars".to_string(),
            // Non-canonical: last symbol carries bits that decoding would drop.
            format!("{}B=", &STANDARD.encode([0u8; 32])[..42]),
        ];
        for case in &cases {
            assert_eq!(
                case.parse::<PublicKey>(),
                Err(CryptoError::InvalidKey),
                "{case:?}"
            );
            assert!(StaticSecret::from_base64(case).is_err(), "{case:?}");
        }
    }

    #[test]
    fn debug_never_shows_secret() {
        let key = secret(6);
        let debug = format!("{key:?}");
        assert_eq!(debug, "StaticSecret(..)");
        assert!(!debug.contains(key.to_base64().as_str()));
        assert!(!format!("{key:#?}").contains(&key.to_base64()[..8]));
    }

    #[test]
    fn public_key_debug_is_short_prefix() {
        let public = secret(7).public_key();
        let debug = format!("{public:?}");
        assert_eq!(debug, format!("PublicKey({}…)", &public.to_string()[..8]));
    }

    #[test]
    fn public_key_ordering_follows_bytes() {
        let low = PublicKey::from_bytes([0; 32]);
        let high = PublicKey::from_bytes([1; 32]);
        assert!(low < high);
        assert_eq!(PublicKey::from([1; 32]), high);
    }

    pub(crate) fn hex32(text: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}
