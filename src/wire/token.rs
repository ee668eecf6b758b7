//! The invitation token: the one line an admin's `meshd invite` prints and `meshd join` reads.
//!
//! Owns [`InviteToken`] (what a token says), [`InviteSecret`] (its one-time secret, from which the
//! invite id and the hash the inviter stores are derived) and [`TokenError`] (what is wrong with a
//! pasted token, in words a user can act on). The text form is `meshd1-` followed by the token
//! bytes in unpadded base64url, so it is a single word with no shell-special character; the byte
//! layout is in docs/wire-format.md ("Invitation token").
//!
//! Invariants: an `InviteToken` that exists satisfies every rule `parse` checks (1 to
//! [`MAX_TOKEN_ENDPOINTS`] endpoints, a valid member name if one is reserved), so `encode` cannot
//! fail and `parse(encode(t)) == t`. The secret is zeroized on drop (as is every buffer that held
//! it here) and never printed by `Debug`. Parsing never panics, reads at most [`MAX_TOKEN_CHARS`]
//! characters, and checks in an order that names the most useful problem: not a token at all,
//! another version, a character no token contains, too short (a cut-off paste), then the checksum
//! (a damaged paste), and only then the contents. Unlike the datagram views of this module, a
//! token is small and rare, so it is parsed into an owned value and hashed here (SHA-256, for the
//! checksum and the invite id).
//!
//! This file also holds the small byte cursor and the socket-address encoding that the join
//! messages (`join.rs`) share with the token.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use meshd_crypto::{NetworkId, PublicKey};
use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The token format this build writes and reads; byte 0 of the token and the digit in the prefix.
pub const TOKEN_VERSION: u8 = 1;
/// Every token starts with this.
pub const TOKEN_PREFIX: &str = "meshd1-";
/// Length of the one-time secret.
pub const INVITE_SECRET_LEN: usize = 32;
/// Length of the invite id: the first bytes of SHA-256(secret), sent in the clear.
pub const INVITE_ID_LEN: usize = 16;
/// Most inviter endpoints a token carries.
pub const MAX_TOKEN_ENDPOINTS: usize = 8;
/// Longest text `parse` looks at; a real token is at most about 700 characters.
pub const MAX_TOKEN_CHARS: usize = 2048;
/// Length of the checksum at the end of the token bytes.
pub const TOKEN_CHECKSUM_LEN: usize = 4;

/// The invite id: the first [`INVITE_ID_LEN`] bytes of SHA-256(secret).
pub type InviteId = [u8; INVITE_ID_LEN];

mod layout {
    pub const VERSION: usize = 0;
    pub const LENGTH: usize = 1;
    pub const HEADER_CHECK: usize = 3;
    pub const NETWORK: usize = 4;
    pub const INVITER: usize = NETWORK + 32;
    pub const SECRET: usize = INVITER + 32;
    pub const EXPIRES: usize = SECRET + super::INVITE_SECRET_LEN;
    pub const NAME_LEN: usize = EXPIRES + 8;
    /// Fixed part before the name: everything up to and including the name length byte.
    pub const FIXED: usize = NAME_LEN + 1;
}

/// Shortest possible token in bytes: no name, one IPv4 endpoint, checksum.
pub const MIN_TOKEN_LEN: usize = layout::FIXED + 1 + ENDPOINT_V4_LEN + TOKEN_CHECKSUM_LEN;
/// Longest possible token in bytes: a 255-byte name field and eight IPv6 endpoints.
pub const MAX_TOKEN_LEN: usize =
    layout::FIXED + 255 + 1 + MAX_TOKEN_ENDPOINTS * ENDPOINT_V6_LEN + TOKEN_CHECKSUM_LEN;

const _: () = assert!(layout::FIXED == 109 && MIN_TOKEN_LEN == 121);
const _: () = assert!(MAX_TOKEN_LEN <= u16::MAX as usize);
const _: () = assert!(TOKEN_PREFIX.len() + MAX_TOKEN_LEN.div_ceil(3) * 4 <= MAX_TOKEN_CHARS);

/// Encoded length of an IPv4 endpoint: family byte, address, port.
pub const ENDPOINT_V4_LEN: usize = 1 + 4 + 2;
/// Encoded length of an IPv6 endpoint: family byte, address, port.
pub const ENDPOINT_V6_LEN: usize = 1 + 16 + 2;
const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;

/// Unpadded base64url. Decoding allows stray trailing bits: the checksum catches any damage, and
/// a precise "damaged" beats a generic decoding error.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// The one-time secret of an invitation. Zeroized on drop; `Debug` prints `InviteSecret(..)`;
/// equality is constant-time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct InviteSecret([u8; INVITE_SECRET_LEN]);

impl InviteSecret {
    /// Wraps raw secret bytes.
    pub fn from_bytes(bytes: [u8; INVITE_SECRET_LEN]) -> Self {
        InviteSecret(bytes)
    }

    /// Draws a fresh secret from `rng`.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut secret = InviteSecret([0; INVITE_SECRET_LEN]);
        rng.fill_bytes(&mut secret.0);
        secret
    }

    /// The raw bytes. Do not copy them anywhere that is not itself zeroized.
    pub fn expose(&self) -> &[u8; INVITE_SECRET_LEN] {
        &self.0
    }

    /// SHA-256 of the secret: all the inviter keeps.
    pub fn hash(&self) -> [u8; 32] {
        sha256(&[&self.0])
    }

    /// The invite id, sent in the clear in a join request.
    pub fn id(&self) -> InviteId {
        invite_id(&self.hash())
    }
}

/// The invite id belonging to a secret hash (its first [`INVITE_ID_LEN`] bytes).
pub fn invite_id(secret_hash: &[u8; 32]) -> InviteId {
    let mut id = [0u8; INVITE_ID_LEN];
    id.copy_from_slice(&secret_hash[..INVITE_ID_LEN]);
    id
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl PartialEq for InviteSecret {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(&self.0, &other.0)
    }
}

impl Eq for InviteSecret {}

impl fmt::Debug for InviteSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InviteSecret(..)")
    }
}

/// What is wrong with a token. The messages are written for the person who pasted it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Nothing but whitespace.
    #[error("no invitation token given")]
    Empty,
    /// Does not start with `meshd<version>-`.
    #[error("this is not a meshd invitation token (a token starts with \"{TOKEN_PREFIX}\")")]
    NotAToken,
    /// A token of another format version.
    #[error(
        "this token uses invitation format version {0}, but this meshd reads only version \
         {TOKEN_VERSION}: use the same meshd release as the inviter"
    )]
    UnsupportedVersion(u32),
    /// Longer than any token can be.
    #[error("this is too long to be a meshd invitation token")]
    TooLong,
    /// A character that base64url never produces (a quote, a dot, a line-wrapping artefact).
    #[error(
        "the token is damaged: it contains {0:?}, which no token does; copy it again exactly as \
         `meshd invite` printed it"
    )]
    BadCharacter(char),
    /// Too short to even say how long it should be: the paste was cut off early.
    #[error(
        "the token is truncated (only {have} characters after the prefix); copy the whole line \
         `meshd invite` printed"
    )]
    TooShort {
        /// Characters present after the prefix.
        have: usize,
    },
    /// Shorter than the token says it is: the paste was cut off.
    #[error(
        "the token is truncated ({have} of {need} characters); copy the whole line `meshd invite` \
         printed"
    )]
    Truncated {
        /// Characters present after the prefix.
        have: usize,
        /// Characters the token should have after the prefix.
        need: usize,
    },
    /// The checksum does not match, or there are extra characters: some character was changed.
    #[error("the token is damaged (its checksum does not match); copy it again exactly as `meshd invite` printed it")]
    Damaged,
    /// The checksum matches but the contents break a rule (written by a broken or foreign tool).
    #[error("the token is not valid: {0}")]
    Invalid(&'static str),
}

/// An invitation: where the inviter is, how to recognise it, and the secret that proves the joiner
/// was invited. See the module documentation for its invariants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteToken {
    network: NetworkId,
    inviter: PublicKey,
    endpoints: Vec<SocketAddr>,
    secret: InviteSecret,
    expires_at: u64,
    name: Option<String>,
}

impl InviteToken {
    /// Builds a token, checking what `parse` would check: 1 to [`MAX_TOKEN_ENDPOINTS`] endpoints
    /// and, if a name is reserved, a valid member name.
    pub fn new(
        network: NetworkId,
        inviter: PublicKey,
        endpoints: Vec<SocketAddr>,
        secret: InviteSecret,
        expires_at: u64,
        name: Option<String>,
    ) -> Result<Self, TokenError> {
        if endpoints.is_empty() {
            return Err(TokenError::Invalid("it names no inviter address"));
        }
        if endpoints.len() > MAX_TOKEN_ENDPOINTS {
            return Err(TokenError::Invalid(
                "it names more than 8 inviter addresses",
            ));
        }
        if let Some(name) = &name {
            if !meshd_crypto::valid_member_name(name) {
                return Err(TokenError::Invalid(
                    "the reserved name is not a valid member name",
                ));
            }
        }
        Ok(InviteToken {
            network,
            inviter,
            endpoints,
            secret,
            expires_at,
            name,
        })
    }

    /// The network the joiner is invited into.
    pub fn network(&self) -> NetworkId {
        self.network
    }

    /// The inviter's static public key: the only key the join handshake will talk to.
    pub fn inviter(&self) -> PublicKey {
        self.inviter
    }

    /// Where the inviter listens (1 to [`MAX_TOKEN_ENDPOINTS`] addresses).
    pub fn endpoints(&self) -> &[SocketAddr] {
        &self.endpoints
    }

    /// The one-time secret.
    pub fn secret(&self) -> &InviteSecret {
        &self.secret
    }

    /// The invite id derived from the secret.
    pub fn id(&self) -> InviteId {
        self.secret.id()
    }

    /// When the invitation expires, in Unix seconds.
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }

    /// The member name the invitation reserves, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(MAX_TOKEN_LEN));
        out.push(TOKEN_VERSION);
        out.extend_from_slice(&[0, 0, 0]); // length and header check, filled in below
        out.extend_from_slice(self.network.as_bytes());
        out.extend_from_slice(self.inviter.as_bytes());
        out.extend_from_slice(self.secret.expose());
        out.extend_from_slice(&self.expires_at.to_le_bytes());
        let name = self.name.as_deref().unwrap_or("").as_bytes();
        // A valid member name is at most 63 bytes, so this never truncates.
        let name = &name[..name.len().min(255)];
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.push(self.endpoints.len() as u8);
        for endpoint in &self.endpoints {
            put_endpoint(&mut out, endpoint);
        }
        let total = (out.len() + TOKEN_CHECKSUM_LEN) as u16;
        out[layout::LENGTH..layout::LENGTH + 2].copy_from_slice(&total.to_le_bytes());
        out[layout::HEADER_CHECK] = header_check(&out[..layout::HEADER_CHECK]);
        let checksum = sha256(&[&out]);
        out.extend_from_slice(&checksum[..TOKEN_CHECKSUM_LEN]);
        out
    }

    /// The token as one line: `meshd1-` and unpadded base64url.
    pub fn encode(&self) -> String {
        let bytes = self.to_bytes();
        let mut text = String::with_capacity(TOKEN_PREFIX.len() + bytes.len().div_ceil(3) * 4);
        text.push_str(TOKEN_PREFIX);
        BASE64URL.encode_string(&bytes[..], &mut text);
        text
    }

    /// Reads a token, ignoring surrounding whitespace and whitespace inside it (a paste wrapped by
    /// a mail client or terminal still works).
    pub fn parse(text: &str) -> Result<InviteToken, TokenError> {
        let text = text.trim();
        // Quoted in a chat message or a shell line.
        let text = ["\"", "'", "`"]
            .iter()
            .find_map(|q| text.strip_prefix(q).and_then(|t| t.strip_suffix(q)))
            .unwrap_or(text)
            .trim();
        if text.is_empty() {
            return Err(TokenError::Empty);
        }
        if text.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::TooLong);
        }
        let body = strip_prefix(text)?;
        let mut chars = Zeroizing::new(String::with_capacity(body.len()));
        for c in body.chars().filter(|c| !c.is_whitespace()) {
            if !(c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(TokenError::BadCharacter(c));
            }
            chars.push(c);
        }
        // A cut-off paste can end in the middle of a byte: one leftover character carries fewer
        // than 8 bits. Decode what is complete; the length check below reports the truncation.
        let usable = if chars.len() % 4 == 1 {
            chars.len() - 1
        } else {
            chars.len()
        };
        let mut bytes = Zeroizing::new(vec![0u8; usable.div_ceil(4) * 3]);
        let decoded = BASE64URL
            .decode_slice(&chars.as_bytes()[..usable], &mut bytes[..])
            .map_err(|_| TokenError::Damaged)?;
        bytes.truncate(decoded);
        Self::from_bytes(&bytes, chars.len())
    }

    fn from_bytes(bytes: &[u8], have_chars: usize) -> Result<InviteToken, TokenError> {
        let truncated = |need: usize| TokenError::Truncated {
            have: have_chars,
            need: (need * 4).div_ceil(3),
        };
        let too_short = TokenError::TooShort { have: have_chars };
        let Some(&version) = bytes.get(layout::VERSION) else {
            return Err(too_short);
        };
        if version != TOKEN_VERSION {
            return Err(TokenError::UnsupportedVersion(u32::from(version)));
        }
        let Some(header) = bytes.get(..layout::NETWORK) else {
            return Err(too_short);
        };
        // The length decides between "truncated" and "damaged", so it has its own check.
        if header[layout::HEADER_CHECK] != header_check(&header[..layout::HEADER_CHECK]) {
            return Err(TokenError::Damaged);
        }
        let length = usize::from(u16::from_le_bytes([header[1], header[2]]));
        if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&length) {
            return Err(TokenError::Damaged);
        }
        if bytes.len() < length {
            return Err(truncated(length));
        }
        if bytes.len() > length {
            return Err(TokenError::Damaged);
        }
        let (content, checksum) = bytes.split_at(length - TOKEN_CHECKSUM_LEN);
        if !constant_time_eq(&sha256(&[content])[..TOKEN_CHECKSUM_LEN], checksum) {
            return Err(TokenError::Damaged);
        }

        let mut reader = Reader::new(&content[layout::NETWORK..]);
        let invalid = TokenError::Invalid("its contents are inconsistent");
        let network = NetworkId::from_bytes(reader.array().ok_or(invalid.clone())?);
        let inviter = PublicKey::from_bytes(reader.array().ok_or(invalid.clone())?);
        let secret = InviteSecret::from_bytes(reader.array().ok_or(invalid.clone())?);
        let expires_at = reader.u64().ok_or(invalid.clone())?;
        let name_len = usize::from(reader.u8().ok_or(invalid.clone())?);
        let name = match name_len {
            0 => None,
            n => {
                let raw = reader.take(n).ok_or(invalid.clone())?;
                let name = core::str::from_utf8(raw)
                    .map_err(|_| TokenError::Invalid("the reserved name is not text"))?;
                Some(name.to_owned())
            }
        };
        let count = usize::from(reader.u8().ok_or(invalid.clone())?);
        if count > MAX_TOKEN_ENDPOINTS {
            return Err(TokenError::Invalid(
                "it names more than 8 inviter addresses",
            ));
        }
        let mut endpoints = Vec::with_capacity(count);
        for _ in 0..count {
            endpoints.push(
                reader
                    .endpoint()
                    .ok_or(TokenError::Invalid("an inviter address is malformed"))?,
            );
        }
        if !reader.is_empty() {
            return Err(invalid);
        }
        InviteToken::new(network, inviter, endpoints, secret, expires_at, name)
    }
}

/// Byte 3 of a token: the first byte of SHA-256 over the version and length bytes.
fn header_check(version_and_length: &[u8]) -> u8 {
    sha256(&[version_and_length])[0]
}

/// Checks the `meshd<digits>-` prefix and returns what follows it.
fn strip_prefix(text: &str) -> Result<&str, TokenError> {
    let rest = text.strip_prefix("meshd").ok_or(TokenError::NotAToken)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (number, rest) = rest.split_at(digits);
    let rest = rest.strip_prefix('-').ok_or(TokenError::NotAToken)?;
    match number.parse::<u32>() {
        Ok(v) if v == u32::from(TOKEN_VERSION) => Ok(rest),
        Ok(v) => Err(TokenError::UnsupportedVersion(v)),
        Err(_) => Err(TokenError::NotAToken),
    }
}

/// Appends one socket address: family (4 or 6), address bytes, port (u16 LE). IPv6 flow info and
/// scope id are not carried.
pub(super) fn put_endpoint(out: &mut Vec<u8>, endpoint: &SocketAddr) {
    match endpoint.ip() {
        IpAddr::V4(ip) => {
            out.push(FAMILY_V4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(FAMILY_V6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&endpoint.port().to_le_bytes());
}

/// Encoded length of one socket address.
pub(super) fn endpoint_len(endpoint: &SocketAddr) -> usize {
    match endpoint {
        SocketAddr::V4(_) => ENDPOINT_V4_LEN,
        SocketAddr::V6(_) => ENDPOINT_V6_LEN,
    }
}

/// A forward-only cursor over untrusted bytes; every read is checked and returns `None` past the
/// end, so parsers built on it cannot panic.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    pub(super) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }

    pub(super) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    pub(super) fn endpoint(&mut self) -> Option<SocketAddr> {
        let ip = match self.u8()? {
            FAMILY_V4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            FAMILY_V6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            _ => return None,
        };
        Some(SocketAddr::new(ip, self.u16()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(name: Option<&str>, endpoints: Vec<SocketAddr>) -> InviteToken {
        InviteToken::new(
            NetworkId::from_bytes([0x4e; 32]),
            PublicKey::from_bytes([0x49; 32]),
            endpoints,
            InviteSecret::from_bytes([0x53; 32]),
            1_900_000_000,
            name.map(str::to_owned),
        )
        .unwrap()
    }

    fn v4() -> SocketAddr {
        "198.51.100.7:6655".parse().unwrap()
    }

    fn v6() -> SocketAddr {
        "[2001:db8::1]:6655".parse().unwrap()
    }

    #[test]
    fn round_trip_and_shape() {
        for token in [
            sample(None, vec![v4()]),
            sample(Some("web-1"), vec![v4(), v6()]),
            sample(Some(&"n".repeat(63)), vec![v6(); MAX_TOKEN_ENDPOINTS]),
        ] {
            let text = token.encode();
            assert!(text.starts_with(TOKEN_PREFIX), "{text}");
            assert!(text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert!(text.len() <= MAX_TOKEN_CHARS);
            assert_eq!(InviteToken::parse(&text).unwrap(), token);
            assert_eq!(InviteToken::parse(&format!("  {text}\r\n")).unwrap(), token);
            // Wrapped by a mail client.
            let (a, b) = text.split_at(40);
            assert_eq!(InviteToken::parse(&format!("{a}\n  {b}")).unwrap(), token);
        }
    }

    #[test]
    fn known_bytes() {
        let token = sample(Some("ab"), vec![v4()]);
        let bytes = token.to_bytes();
        assert_eq!(bytes.len(), MIN_TOKEN_LEN + 2);
        assert_eq!(bytes[0], 1);
        assert_eq!(
            u16::from_le_bytes([bytes[1], bytes[2]]) as usize,
            bytes.len()
        );
        assert_eq!(bytes[3], sha256(&[&bytes[..3]])[0]);
        assert_eq!(&bytes[4..36], &[0x4e; 32]);
        assert_eq!(&bytes[36..68], &[0x49; 32]);
        assert_eq!(&bytes[68..100], &[0x53; 32]);
        assert_eq!(&bytes[100..108], &1_900_000_000u64.to_le_bytes());
        assert_eq!(&bytes[108..111], &[2, b'a', b'b']);
        assert_eq!(&bytes[111..119], &[1, 4, 198, 51, 100, 7, 0xff, 0x19]);
        let checksum = sha256(&[&bytes[..bytes.len() - 4]]);
        assert_eq!(&bytes[bytes.len() - 4..], &checksum[..4]);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let text = sample(Some("db"), vec![v4(), v6()]).encode();
        let body = &text[TOKEN_PREFIX.len()..];
        assert_eq!(InviteToken::parse(" \n"), Err(TokenError::Empty));
        assert_eq!(
            InviteToken::parse("hello world"),
            Err(TokenError::NotAToken)
        );
        assert_eq!(
            InviteToken::parse(&format!("meshd-{body}")),
            Err(TokenError::NotAToken)
        );
        assert_eq!(
            InviteToken::parse(&format!("meshd2-{body}")),
            Err(TokenError::UnsupportedVersion(2))
        );
        assert_eq!(
            InviteToken::parse(&format!("meshd99999999999-{body}")),
            Err(TokenError::NotAToken)
        );
        assert_eq!(
            InviteToken::parse(&"x".repeat(MAX_TOKEN_CHARS + 1)),
            Err(TokenError::TooLong)
        );
        assert_eq!(
            InviteToken::parse(&format!("'{text}'")).unwrap().encode(),
            text
        );
        assert_eq!(
            InviteToken::parse(&format!("\"{text}")),
            Err(TokenError::NotAToken)
        );
        assert_eq!(
            InviteToken::parse(&format!("{text}.")),
            Err(TokenError::BadCharacter('.'))
        );
        for cut in [1, 2, 3, 4, 5, 50, body.len() - 6] {
            match InviteToken::parse(&text[..text.len() - cut]) {
                Err(TokenError::Truncated { have, need }) => {
                    assert_eq!(need, body.len(), "cut {cut}");
                    assert_eq!(have, body.len() - cut);
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
        // Too short to hold the length: still called truncated.
        for have in 0..6 {
            assert_eq!(
                InviteToken::parse(&text[..TOKEN_PREFIX.len() + have]),
                Err(TokenError::TooShort { have })
            );
        }
        assert_eq!(
            TokenError::Truncated { have: 5, need: 9 }.to_string(),
            "the token is truncated (5 of 9 characters); copy the whole line `meshd invite` printed"
        );
        assert_eq!(
            InviteToken::parse(&format!("{text}AAAA")),
            Err(TokenError::Damaged)
        );
        // Every single-character substitution is caught as damage (or, in the first character,
        // which holds most of the version byte, as another version).
        for at in TOKEN_PREFIX.len()..text.len() {
            let mut damaged = text.clone().into_bytes();
            let old = damaged[at];
            damaged[at] = if old == b'Q' { b'R' } else { b'Q' };
            let damaged = String::from_utf8(damaged).unwrap();
            let result = InviteToken::parse(&damaged);
            assert!(
                matches!(
                    result,
                    Err(TokenError::Damaged | TokenError::UnsupportedVersion(_))
                ) || (at == text.len() - 1 && result.is_ok()),
                "at {at}: {result:?}"
            );
        }
    }

    #[test]
    fn valid_checksum_with_bad_contents_is_invalid() {
        let token = sample(None, vec![v4()]);
        let reencode = |mutate: &dyn Fn(&mut Vec<u8>)| {
            let mut bytes = token.to_bytes().to_vec();
            bytes.truncate(bytes.len() - TOKEN_CHECKSUM_LEN);
            mutate(&mut bytes);
            let total = (bytes.len() + TOKEN_CHECKSUM_LEN) as u16;
            bytes[1..3].copy_from_slice(&total.to_le_bytes());
            bytes[3] = header_check(&bytes[..3]);
            let checksum = sha256(&[&bytes]);
            bytes.extend_from_slice(&checksum[..4]);
            InviteToken::parse(&format!("{TOKEN_PREFIX}{}", BASE64URL.encode(&bytes)))
        };
        // Unknown address family.
        assert!(matches!(
            reencode(&|b| b[layout::FIXED + 1] = 5),
            Err(TokenError::Invalid(_))
        ));
        // Zero endpoints (the address bytes become trailing junk, so drop them too).
        assert!(matches!(
            reencode(&|b| {
                b[layout::FIXED] = 0;
                b.truncate(layout::FIXED + 1);
                b.extend_from_slice(&[0; 7]);
            }),
            Err(TokenError::Invalid(_))
        ));
        // Nine endpoints.
        assert!(matches!(
            reencode(&|b| {
                b[layout::FIXED] = 9;
                for _ in 0..8 {
                    b.extend_from_slice(&[4, 1, 2, 3, 4, 0, 1]);
                }
            }),
            Err(TokenError::Invalid(_))
        ));
        // A reserved name that is not a valid member name.
        assert!(matches!(
            reencode(&|b| {
                let tail = b.split_off(layout::FIXED);
                b[layout::NAME_LEN] = 3;
                b.extend_from_slice(b"a b");
                b.extend_from_slice(&tail);
            }),
            Err(TokenError::Invalid(_))
        ));
        // Trailing bytes after the last endpoint.
        assert!(matches!(
            reencode(&|b| b.push(0)),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn constructor_enforces_the_rules() {
        let make = |endpoints: Vec<SocketAddr>, name: Option<&str>| {
            InviteToken::new(
                NetworkId::from_bytes([1; 32]),
                PublicKey::from_bytes([2; 32]),
                endpoints,
                InviteSecret::from_bytes([3; 32]),
                0,
                name.map(str::to_owned),
            )
        };
        assert!(make(vec![], None).is_err());
        assert!(make(vec![v4(); 9], None).is_err());
        assert!(make(vec![v4()], Some("bad name")).is_err());
        assert!(make(vec![v4()], Some("")).is_err());
        assert!(make(vec![v4(); 8], Some("ok")).is_ok());
    }

    #[test]
    fn secret_is_redacted_and_ids_follow_the_hash() {
        let token = sample(None, vec![v4()]);
        let debug = format!("{token:?}");
        assert!(debug.contains("InviteSecret(..)"), "{debug}");
        assert!(!debug.contains("83, 83"), "{debug}");
        let hash = token.secret().hash();
        assert_eq!(hash, sha256(&[&[0x53; 32]]));
        assert_eq!(token.id()[..], hash[..16]);
        assert_eq!(
            InviteSecret::from_bytes([1; 32]),
            InviteSecret::from_bytes([1; 32])
        );
        assert_ne!(
            InviteSecret::from_bytes([1; 32]),
            InviteSecret::from_bytes([2; 32])
        );
    }

    /// Keeps fuzz/corpus/token/seed-* current. Regenerate with
    /// `MESHD_WRITE_FUZZ_SEEDS=1 cargo test --lib token::tests::token_fuzz_seeds_are_current`.
    #[test]
    fn token_fuzz_seeds_are_current() {
        let full = sample(Some("web-1"), vec![v4(), v6()]).encode();
        let minimal = sample(None, vec![v4()]).encode();
        let seeds = [
            ("full", full.clone()),
            ("minimal", minimal.clone()),
            ("wrapped", format!("  '{}\n{}'\n", &full[..50], &full[50..])),
            ("truncated", full[..full.len() - 9].to_string()),
            ("other-version", full.replacen("meshd1-", "meshd2-", 1)),
        ];
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/token");
        for (name, text) in seeds {
            crate::test_support::check_or_write_fuzz_seed(
                &root.join(format!("seed-{name}")),
                text.as_bytes(),
            );
        }
    }

    fn endpoint_strategy() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(Ipv4Addr::from(ip).into(), port)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(Ipv6Addr::from(ip).into(), port)),
        ]
    }

    proptest! {
        #[test]
        fn any_valid_token_round_trips(
            network in any::<[u8; 32]>(),
            inviter in any::<[u8; 32]>(),
            secret in any::<[u8; 32]>(),
            expires_at in any::<u64>(),
            name in proptest::option::of("[a-z0-9][a-z0-9._-]{0,62}"),
            endpoints in proptest::collection::vec(endpoint_strategy(), 1..=MAX_TOKEN_ENDPOINTS),
        ) {
            let token = InviteToken::new(
                NetworkId::from_bytes(network),
                PublicKey::from_bytes(inviter),
                endpoints,
                InviteSecret::from_bytes(secret),
                expires_at,
                name,
            ).unwrap();
            let text = token.encode();
            prop_assert!(text.len() <= MAX_TOKEN_CHARS);
            prop_assert_eq!(InviteToken::parse(&text).unwrap(), token);
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,300}") {
            let _ = InviteToken::parse(&text);
            let _ = InviteToken::parse(&format!("{TOKEN_PREFIX}{text}"));
        }
    }
}
