//! The join exchange: JoinRequest (type 5), JoinResponse (type 6), JoinRefused (type 7), and the
//! plaintext payloads the two Noise messages carry.
//!
//! The datagram views follow `datagram.rs`: `new_checked` validates length, version and type
//! (cheapest first), after which every accessor is infallible; `new_emit` sizes and prepares a
//! buffer, the setters fill it, mac1 last. Requests and responses have a variable length (their
//! Noise message carries a payload): at least their fixed part plus the Noise overhead, at most
//! [`JOIN_MAX_LEN`]. A refusal is exactly [`JOIN_REFUSED_LEN`] bytes, with the reason in the kind
//! byte; unknown reasons are values ([`RefusalReason::Unknown`]).
//!
//! The payloads ([`RequestPayload`], [`ResponsePayload`]) are decoded only after Noise
//! authenticated them, but they are still parsed defensively: every read is bounds-checked,
//! counts are capped, trailing bytes are an error, and nothing panics. Their meaning (is the name
//! valid, does the certificate verify) is the core's business. The request payload holds the
//! invite secret, so its encoding lives in a zeroizing buffer. Layouts: docs/wire-format.md,
//! "Join exchange".

use std::net::SocketAddr;

use meshd_crypto::SigningPublicKey;
use zeroize::Zeroizing;

use super::datagram::{
    HANDSHAKE_PAYLOAD_MAX, HEADER_LEN, MAC_LEN, NOISE_INIT_OVERHEAD, NOISE_RESPONSE_OVERHEAD,
    PROTOCOL_VERSION,
};
use super::token::{
    endpoint_len, put_endpoint, InviteId, InviteSecret, Reader, INVITE_ID_LEN, INVITE_SECRET_LEN,
};
use super::{classify, MessageType, WireError};

/// Largest join datagram sent or accepted; keeps it inside one unfragmented IPv6 packet on a
/// 1500-byte path with room for an outer tunnel.
pub const JOIN_MAX_LEN: usize = 1400;
/// Length of the network id in a request.
pub const NETWORK_ID_LEN: usize = 32;
/// Shortest JoinRequest: header, invite id, network id, Noise with an empty payload, mac1.
pub const JOIN_REQUEST_MIN_LEN: usize =
    HEADER_LEN + INVITE_ID_LEN + NETWORK_ID_LEN + NOISE_INIT_OVERHEAD + MAC_LEN;
/// Shortest JoinResponse: header, invite id, Noise with an empty payload, mac1.
pub const JOIN_RESPONSE_MIN_LEN: usize =
    HEADER_LEN + INVITE_ID_LEN + NOISE_RESPONSE_OVERHEAD + MAC_LEN;
/// Length of a JoinRefused: header (reason in the kind byte) and invite id.
pub const JOIN_REFUSED_LEN: usize = HEADER_LEN + INVITE_ID_LEN;
/// Most endpoints a joiner advertises, and a bootstrap member carries.
pub const MAX_JOIN_ENDPOINTS: usize = 8;
/// Most bootstrap members a response carries (the datagram size usually caps it first).
pub const MAX_BOOTSTRAP_MEMBERS: usize = 32;

/// Largest request payload: secret, signing key, a 255-byte name field, 8 IPv6 endpoints.
pub const MAX_REQUEST_PAYLOAD: usize = INVITE_SECRET_LEN + 32 + 1 + 255 + 1 + 8 * 19;
/// Largest response payload: what fits in both [`HANDSHAKE_PAYLOAD_MAX`] and [`JOIN_MAX_LEN`].
pub const MAX_RESPONSE_PAYLOAD: usize =
    min(HANDSHAKE_PAYLOAD_MAX, JOIN_MAX_LEN - JOIN_RESPONSE_MIN_LEN);

const fn min(a: usize, b: usize) -> usize {
    if a < b {
        a
    } else {
        b
    }
}

const _: () = assert!(JOIN_REQUEST_MIN_LEN == 164 && JOIN_RESPONSE_MIN_LEN == 84);
const _: () = assert!(JOIN_REQUEST_MIN_LEN + MAX_REQUEST_PAYLOAD <= JOIN_MAX_LEN);
const _: () = assert!(MAX_REQUEST_PAYLOAD <= HANDSHAKE_PAYLOAD_MAX);

const KIND: usize = 2;

mod request {
    use super::*;
    pub const ID: usize = HEADER_LEN;
    pub const NETWORK: usize = ID + INVITE_ID_LEN;
    pub const NOISE: usize = NETWORK + NETWORK_ID_LEN;
}

mod response {
    use super::*;
    pub const ID: usize = HEADER_LEN;
    pub const NOISE: usize = ID + INVITE_ID_LEN;
}

fn write_header(bytes: &mut [u8], message_type: MessageType, kind: u8) {
    bytes[0] = PROTOCOL_VERSION;
    bytes[1] = message_type.into();
    bytes[KIND] = kind;
    bytes[3] = 0;
}

/// Length (`min_len..=max_len`), version, type, in that order: the checks of every join view.
fn check_len_and_type(
    bytes: &[u8],
    expected_type: MessageType,
    min_len: usize,
    max_len: usize,
) -> Result<(), WireError> {
    if bytes.len() < min_len {
        return Err(WireError::Truncated);
    }
    if bytes.len() > max_len {
        return Err(WireError::BadLength);
    }
    let found = classify(bytes)?;
    if found != expected_type {
        return Err(WireError::WrongType(found));
    }
    Ok(())
}

fn check_emit_len(len: usize, min_len: usize) -> Result<(), WireError> {
    if len < min_len {
        Err(WireError::Truncated)
    } else if len > JOIN_MAX_LEN {
        Err(WireError::BadLength)
    } else {
        Ok(())
    }
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// Why an inviter refused a join request: byte 2 of a JoinRefused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefusalReason {
    /// The inviter has no pending invitation with this id (never issued, deleted, or the secret
    /// does not match it).
    UnknownInvite,
    /// The invitation expired.
    Expired,
    /// The invitation was already used by another key.
    AlreadyUsed,
    /// A live member holds the requested name under another key.
    NameTaken,
    /// The request names another network than the inviter's.
    WrongNetwork,
    /// The inviter does not hold the network key, so it cannot issue certificates.
    NotAdmin,
    /// The request decrypted but its contents are malformed.
    Malformed,
    /// The requested name is not a valid member name, or not the name the invitation reserves.
    NameRefused,
    /// The address range the invitation names is held by a live member, or no range of the
    /// network's container subnet is free.
    NoRange,
    /// Any other value; a newer inviter's reason this build does not know.
    Unknown(u8),
}

impl RefusalReason {
    /// A short, stable label for metrics and logs; every `Unknown` maps to `"unknown"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RefusalReason::UnknownInvite => "unknown_invite",
            RefusalReason::Expired => "expired",
            RefusalReason::AlreadyUsed => "already_used",
            RefusalReason::NameTaken => "name_taken",
            RefusalReason::WrongNetwork => "wrong_network",
            RefusalReason::NotAdmin => "not_admin",
            RefusalReason::Malformed => "malformed",
            RefusalReason::NameRefused => "name_refused",
            RefusalReason::NoRange => "no_range",
            RefusalReason::Unknown(_) => "unknown",
        }
    }
}

impl From<u8> for RefusalReason {
    fn from(value: u8) -> Self {
        match value {
            1 => RefusalReason::UnknownInvite,
            2 => RefusalReason::Expired,
            3 => RefusalReason::AlreadyUsed,
            4 => RefusalReason::NameTaken,
            5 => RefusalReason::WrongNetwork,
            6 => RefusalReason::NotAdmin,
            7 => RefusalReason::Malformed,
            8 => RefusalReason::NameRefused,
            9 => RefusalReason::NoRange,
            other => RefusalReason::Unknown(other),
        }
    }
}

impl From<RefusalReason> for u8 {
    fn from(value: RefusalReason) -> Self {
        match value {
            RefusalReason::UnknownInvite => 1,
            RefusalReason::Expired => 2,
            RefusalReason::AlreadyUsed => 3,
            RefusalReason::NameTaken => 4,
            RefusalReason::WrongNetwork => 5,
            RefusalReason::NotAdmin => 6,
            RefusalReason::Malformed => 7,
            RefusalReason::NameRefused => 8,
            RefusalReason::NoRange => 9,
            RefusalReason::Unknown(other) => other,
        }
    }
}

/// JoinRequest (type 5): header, invite id, network id (both in the clear), the Noise initiation,
/// mac1 over everything before it.
#[derive(Debug, Clone)]
pub struct JoinRequest<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> JoinRequest<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is shorter than
    /// [`JOIN_REQUEST_MIN_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        JoinRequest { buffer }
    }

    /// Wraps `buffer` if it holds [`JOIN_REQUEST_MIN_LEN`] to [`JOIN_MAX_LEN`] bytes of version 1,
    /// type JoinRequest.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        check_len_and_type(
            buffer.as_ref(),
            MessageType::JoinRequest,
            JOIN_REQUEST_MIN_LEN,
            JOIN_MAX_LEN,
        )?;
        Ok(JoinRequest { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The invite id: the first 16 bytes of SHA-256(secret).
    pub fn invite_id(&self) -> InviteId {
        array(self.buffer.as_ref(), request::ID)
    }

    /// The network the joiner's token names.
    pub fn network(&self) -> [u8; NETWORK_ID_LEN] {
        array(self.buffer.as_ref(), request::NETWORK)
    }

    /// The Noise initiation (overhead plus encrypted [`RequestPayload`]), opaque here.
    pub fn noise(&self) -> &[u8] {
        let bytes = self.buffer.as_ref();
        &bytes[request::NOISE..bytes.len() - MAC_LEN]
    }

    pub fn mac1(&self) -> &[u8] {
        let bytes = self.buffer.as_ref();
        &bytes[bytes.len() - MAC_LEN..]
    }

    /// The bytes mac1 authenticates: everything before it.
    pub fn mac1_covered(&self) -> &[u8] {
        let bytes = self.buffer.as_ref();
        &bytes[..bytes.len() - MAC_LEN]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> JoinRequest<T> {
    /// Prepares `buffer` (its whole length is the message:
    /// [`JoinRequest::len_for_payload`]) for emitting: writes the header and zeroes mac1.
    pub fn new_emit(buffer: T) -> Result<Self, WireError> {
        check_emit_len(buffer.as_ref().len(), JOIN_REQUEST_MIN_LEN)?;
        let mut message = JoinRequest { buffer };
        write_header(message.buffer.as_mut(), MessageType::JoinRequest, 0);
        message.set_mac1(&[0; MAC_LEN]);
        Ok(message)
    }

    pub fn set_invite_id(&mut self, id: &InviteId) {
        self.buffer.as_mut()[request::ID..request::NETWORK].copy_from_slice(id);
    }

    pub fn set_network(&mut self, network: &[u8; NETWORK_ID_LEN]) {
        self.buffer.as_mut()[request::NETWORK..request::NOISE].copy_from_slice(network);
    }

    pub fn noise_mut(&mut self) -> &mut [u8] {
        let bytes = self.buffer.as_mut();
        let end = bytes.len() - MAC_LEN;
        &mut bytes[request::NOISE..end]
    }

    pub fn set_mac1(&mut self, mac: &[u8; MAC_LEN]) {
        let bytes = self.buffer.as_mut();
        let at = bytes.len() - MAC_LEN;
        bytes[at..].copy_from_slice(mac);
    }
}

impl JoinRequest<&[u8]> {
    /// Total datagram length for a request whose Noise payload is `payload_len` bytes.
    pub const fn len_for_payload(payload_len: usize) -> usize {
        JOIN_REQUEST_MIN_LEN + payload_len
    }
}

/// JoinResponse (type 6): header, invite id (in the clear), the Noise response, mac1 keyed by the
/// joiner's key.
#[derive(Debug, Clone)]
pub struct JoinResponse<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> JoinResponse<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is shorter than
    /// [`JOIN_RESPONSE_MIN_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        JoinResponse { buffer }
    }

    /// Wraps `buffer` if it holds [`JOIN_RESPONSE_MIN_LEN`] to [`JOIN_MAX_LEN`] bytes of version
    /// 1, type JoinResponse.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        check_len_and_type(
            buffer.as_ref(),
            MessageType::JoinResponse,
            JOIN_RESPONSE_MIN_LEN,
            JOIN_MAX_LEN,
        )?;
        Ok(JoinResponse { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The invite id of the request this answers.
    pub fn invite_id(&self) -> InviteId {
        array(self.buffer.as_ref(), response::ID)
    }

    /// The Noise response (overhead plus encrypted [`ResponsePayload`]), opaque here.
    pub fn noise(&self) -> &[u8] {
        let bytes = self.buffer.as_ref();
        &bytes[response::NOISE..bytes.len() - MAC_LEN]
    }

    pub fn mac1(&self) -> &[u8] {
        let bytes = self.buffer.as_ref();
        &bytes[bytes.len() - MAC_LEN..]
    }

    /// The bytes mac1 authenticates: everything before it.
    pub fn mac1_covered(&self) -> &[u8] {
        let bytes = self.buffer.as_ref();
        &bytes[..bytes.len() - MAC_LEN]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> JoinResponse<T> {
    /// Prepares `buffer` (its whole length is the message: [`JoinResponse::len_for_payload`]) for
    /// emitting: writes the header and zeroes mac1.
    pub fn new_emit(buffer: T) -> Result<Self, WireError> {
        check_emit_len(buffer.as_ref().len(), JOIN_RESPONSE_MIN_LEN)?;
        let mut message = JoinResponse { buffer };
        write_header(message.buffer.as_mut(), MessageType::JoinResponse, 0);
        message.set_mac1(&[0; MAC_LEN]);
        Ok(message)
    }

    pub fn set_invite_id(&mut self, id: &InviteId) {
        self.buffer.as_mut()[response::ID..response::NOISE].copy_from_slice(id);
    }

    pub fn noise_mut(&mut self) -> &mut [u8] {
        let bytes = self.buffer.as_mut();
        let end = bytes.len() - MAC_LEN;
        &mut bytes[response::NOISE..end]
    }

    pub fn set_mac1(&mut self, mac: &[u8; MAC_LEN]) {
        let bytes = self.buffer.as_mut();
        let at = bytes.len() - MAC_LEN;
        bytes[at..].copy_from_slice(mac);
    }
}

impl JoinResponse<&[u8]> {
    /// Total datagram length for a response whose Noise payload is `payload_len` bytes.
    pub const fn len_for_payload(payload_len: usize) -> usize {
        JOIN_RESPONSE_MIN_LEN + payload_len
    }
}

/// JoinRefused (type 7): exactly [`JOIN_REFUSED_LEN`] bytes, the reason in byte 2. Not
/// authenticated.
#[derive(Debug, Clone)]
pub struct JoinRefused<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> JoinRefused<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is shorter than
    /// [`JOIN_REFUSED_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        JoinRefused { buffer }
    }

    /// Wraps `buffer` if it is exactly [`JOIN_REFUSED_LEN`] bytes of version 1, type JoinRefused.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        check_len_and_type(
            buffer.as_ref(),
            MessageType::JoinRefused,
            JOIN_REFUSED_LEN,
            JOIN_REFUSED_LEN,
        )?;
        Ok(JoinRefused { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..JOIN_REFUSED_LEN]
    }

    pub fn reason(&self) -> RefusalReason {
        self.buffer.as_ref()[KIND].into()
    }

    /// The invite id of the refused request.
    pub fn invite_id(&self) -> InviteId {
        array(self.buffer.as_ref(), HEADER_LEN)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> JoinRefused<T> {
    /// Prepares `buffer` (exactly [`JOIN_REFUSED_LEN`] bytes) for emitting: writes the header
    /// with `reason`.
    pub fn new_emit(buffer: T, reason: RefusalReason) -> Result<Self, WireError> {
        let len = buffer.as_ref().len();
        if len != JOIN_REFUSED_LEN {
            return Err(if len < JOIN_REFUSED_LEN {
                WireError::Truncated
            } else {
                WireError::BadLength
            });
        }
        let mut message = JoinRefused { buffer };
        write_header(
            message.buffer.as_mut(),
            MessageType::JoinRefused,
            reason.into(),
        );
        Ok(message)
    }

    pub fn set_reason(&mut self, reason: RefusalReason) {
        self.buffer.as_mut()[KIND] = reason.into();
    }

    pub fn set_invite_id(&mut self, id: &InviteId) {
        self.buffer.as_mut()[HEADER_LEN..JOIN_REFUSED_LEN].copy_from_slice(id);
    }
}

/// A refusal datagram for `id`.
pub fn emit_join_refused(reason: RefusalReason, id: &InviteId) -> [u8; JOIN_REFUSED_LEN] {
    let mut out = [0u8; JOIN_REFUSED_LEN];
    write_header(&mut out, MessageType::JoinRefused, reason.into());
    out[HEADER_LEN..].copy_from_slice(id);
    out
}

/// A member a new node can contact first: what an inviter hands out in a JoinResponse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapMember {
    pub name: String,
    pub key: meshd_crypto::PublicKey,
    pub endpoints: Vec<SocketAddr>,
}

/// What a JoinRequest's Noise payload carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestPayload {
    /// The invite secret, proving the joiner holds the token.
    pub secret: InviteSecret,
    /// The joiner's signing key, to be bound into its certificate.
    pub signing_key: SigningPublicKey,
    /// The name the joiner asks for.
    pub name: String,
    /// Where the joiner can be reached (0 to [`MAX_JOIN_ENDPOINTS`]).
    pub endpoints: Vec<SocketAddr>,
}

impl RequestPayload {
    /// The payload bytes, in a buffer wiped on drop (it holds the secret). A name longer than 255
    /// bytes or more than [`MAX_JOIN_ENDPOINTS`] endpoints are cut (the inviter refuses such
    /// requests anyway; callers check first).
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(MAX_REQUEST_PAYLOAD));
        out.extend_from_slice(self.secret.expose());
        out.extend_from_slice(self.signing_key.as_bytes());
        put_name(&mut out, &self.name);
        let endpoints = &self.endpoints[..self.endpoints.len().min(MAX_JOIN_ENDPOINTS)];
        out.push(endpoints.len() as u8);
        for endpoint in endpoints {
            put_endpoint(&mut out, endpoint);
        }
        out
    }

    /// Parses a decrypted request payload; `None` if it is malformed.
    pub fn decode(bytes: &[u8]) -> Option<RequestPayload> {
        let mut reader = Reader::new(bytes);
        let secret = InviteSecret::from_bytes(reader.array()?);
        let signing_key = SigningPublicKey::from_bytes(reader.array()?);
        let name = read_name(&mut reader)?;
        let endpoints = read_endpoints(&mut reader)?;
        reader.is_empty().then_some(RequestPayload {
            secret,
            signing_key,
            name,
            endpoints,
        })
    }
}

/// What a JoinResponse's Noise payload carries: the encoded certificate and the bootstrap members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponsePayload {
    /// The certificate in its own encoding (meshd-crypto's `Certificate::encode`).
    pub certificate: Vec<u8>,
    pub members: Vec<BootstrapMember>,
}

impl ResponsePayload {
    /// Encodes `certificate` and as many of `members` as fit in `max_len` bytes (in order, at most
    /// [`MAX_BOOTSTRAP_MEMBERS`], each with at most [`MAX_JOIN_ENDPOINTS`] endpoints; members whose
    /// name is longer than 255 bytes are skipped). Returns the bytes and how many members went in,
    /// or `None` if the certificate alone does not fit.
    pub fn encode(
        certificate: &[u8],
        members: &[BootstrapMember],
        max_len: usize,
    ) -> Option<(Vec<u8>, usize)> {
        let cert_len = u16::try_from(certificate.len()).ok()?;
        let mut out = Vec::with_capacity(max_len);
        out.extend_from_slice(&cert_len.to_le_bytes());
        out.extend_from_slice(certificate);
        out.push(0);
        if out.len() > max_len {
            return None;
        }
        let count_at = out.len() - 1;
        let mut count = 0;
        for member in members {
            if count == MAX_BOOTSTRAP_MEMBERS {
                break;
            }
            if member.name.len() > 255 {
                continue;
            }
            let endpoints = &member.endpoints[..member.endpoints.len().min(MAX_JOIN_ENDPOINTS)];
            let len =
                1 + member.name.len() + 32 + 1 + endpoints.iter().map(endpoint_len).sum::<usize>();
            if out.len() + len > max_len {
                break;
            }
            put_name(&mut out, &member.name);
            out.extend_from_slice(member.key.as_bytes());
            out.push(endpoints.len() as u8);
            for endpoint in endpoints {
                put_endpoint(&mut out, endpoint);
            }
            count += 1;
        }
        out[count_at] = count as u8;
        Some((out, count))
    }

    /// Parses a decrypted response payload; `None` if it is malformed.
    pub fn decode(bytes: &[u8]) -> Option<ResponsePayload> {
        let mut reader = Reader::new(bytes);
        let cert_len = usize::from(reader.u16()?);
        let certificate = reader.take(cert_len)?.to_vec();
        let count = usize::from(reader.u8()?);
        if count > MAX_BOOTSTRAP_MEMBERS {
            return None;
        }
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            let name = read_name(&mut reader)?;
            let key = meshd_crypto::PublicKey::from_bytes(reader.array()?);
            let endpoints = read_endpoints(&mut reader)?;
            members.push(BootstrapMember {
                name,
                key,
                endpoints,
            });
        }
        reader.is_empty().then_some(ResponsePayload {
            certificate,
            members,
        })
    }
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    let name = &name.as_bytes()[..name.len().min(255)];
    out.push(name.len() as u8);
    out.extend_from_slice(name);
}

fn read_name(reader: &mut Reader<'_>) -> Option<String> {
    let len = usize::from(reader.u8()?);
    let raw = reader.take(len)?;
    core::str::from_utf8(raw).ok().map(str::to_owned)
}

fn read_endpoints(reader: &mut Reader<'_>) -> Option<Vec<SocketAddr>> {
    let count = usize::from(reader.u8()?);
    if count > MAX_JOIN_ENDPOINTS {
        return None;
    }
    (0..count).map(|_| reader.endpoint()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshd_crypto::PublicKey;

    #[test]
    fn request_view_round_trip() {
        let len = JoinRequest::len_for_payload(10);
        let mut buf = vec![0xffu8; len];
        let mut msg = JoinRequest::new_emit(&mut buf[..]).unwrap();
        msg.set_invite_id(&[1; 16]);
        msg.set_network(&[2; 32]);
        msg.noise_mut().fill(3);
        msg.set_mac1(&[4; 16]);
        assert_eq!(&buf[..4], &[1, 5, 0, 0]);
        let view = JoinRequest::new_checked(&buf[..]).unwrap();
        assert_eq!(view.invite_id(), [1; 16]);
        assert_eq!(view.network(), [2; 32]);
        assert_eq!(view.noise(), &[3; NOISE_INIT_OVERHEAD + 10][..]);
        assert_eq!(view.mac1(), &[4; 16]);
        assert_eq!(view.mac1_covered().len(), len - 16);
        assert_eq!(&buf[4..20], &[1; 16]);
        assert_eq!(&buf[20..52], &[2; 32]);
    }

    #[test]
    fn response_view_round_trip() {
        let len = JoinResponse::len_for_payload(7);
        let mut buf = vec![0u8; len];
        let mut msg = JoinResponse::new_emit(&mut buf[..]).unwrap();
        msg.set_invite_id(&[9; 16]);
        msg.noise_mut().fill(8);
        msg.set_mac1(&[7; 16]);
        assert_eq!(&buf[..4], &[1, 6, 0, 0]);
        let view = JoinResponse::new_checked(&buf[..]).unwrap();
        assert_eq!(view.invite_id(), [9; 16]);
        assert_eq!(view.noise().len(), NOISE_RESPONSE_OVERHEAD + 7);
        assert_eq!(view.mac1(), &[7; 16]);
    }

    #[test]
    fn refused_view_round_trip_and_unknown_reasons() {
        for code in 0..=255u8 {
            let reason = RefusalReason::from(code);
            assert_eq!(u8::from(reason), code);
            let bytes = emit_join_refused(reason, &[5; 16]);
            assert_eq!(bytes[..4], [1, 7, code, 0]);
            let view = JoinRefused::new_checked(&bytes[..]).unwrap();
            assert_eq!(view.reason(), reason);
            assert_eq!(view.invite_id(), [5; 16]);
            let mut again = [0u8; JOIN_REFUSED_LEN];
            let mut emit = JoinRefused::new_emit(&mut again[..], RefusalReason::Expired).unwrap();
            emit.set_reason(reason);
            emit.set_invite_id(&[5; 16]);
            assert_eq!(again, bytes);
        }
        assert_eq!(RefusalReason::from(0).as_str(), "unknown");
        assert_eq!(RefusalReason::from(3).as_str(), "already_used");
    }

    #[test]
    fn lengths_versions_and_types_are_checked() {
        let mut request = vec![0u8; JOIN_REQUEST_MIN_LEN];
        request[..2].copy_from_slice(&[1, 5]);
        assert!(JoinRequest::new_checked(&request[..]).is_ok());
        assert_eq!(
            JoinRequest::new_checked(&request[..JOIN_REQUEST_MIN_LEN - 1]).unwrap_err(),
            WireError::Truncated
        );
        let mut long = request.clone();
        long.resize(JOIN_MAX_LEN + 1, 0);
        assert_eq!(
            JoinRequest::new_checked(&long[..]).unwrap_err(),
            WireError::BadLength
        );
        request[0] = 2;
        assert_eq!(
            JoinRequest::new_checked(&request[..]).unwrap_err(),
            WireError::BadVersion(2)
        );
        request[0] = 1;
        request[1] = 6;
        assert_eq!(
            JoinRequest::new_checked(&request[..]).unwrap_err(),
            WireError::WrongType(MessageType::JoinResponse)
        );
        assert_eq!(
            JoinResponse::new_checked(&[1, 7, 0, 0][..]).unwrap_err(),
            WireError::Truncated
        );
        let mut refusal = emit_join_refused(RefusalReason::Expired, &[0; 16]);
        assert_eq!(
            JoinResponse::new_checked(&[&refusal[..], &[0; 64]].concat()[..]).unwrap_err(),
            WireError::WrongType(MessageType::JoinRefused)
        );
        refusal[0] = 0;
        assert_eq!(
            JoinRefused::new_checked(&refusal[..]).unwrap_err(),
            WireError::BadVersion(0)
        );
        assert_eq!(
            JoinRefused::new_checked(&[1, 7, 0][..]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            JoinRefused::new_checked(&[1, 7, 1, 0, 0][..]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            JoinRefused::new_checked(&[1u8, 7, 1, 0].repeat(6)[..]).unwrap_err(),
            WireError::BadLength
        );
        assert_eq!(
            JoinRefused::new_checked(&[1u8, 5, 1, 0].repeat(5)[..]).unwrap_err(),
            WireError::WrongType(MessageType::JoinRequest)
        );
        assert!(JoinRequest::new_emit(&mut [0u8; JOIN_REQUEST_MIN_LEN - 1][..]).is_err());
        assert!(JoinResponse::new_emit(&mut vec![0u8; JOIN_MAX_LEN + 1][..]).is_err());
        assert!(JoinRefused::new_emit(&mut [0u8; 21][..], RefusalReason::Expired).is_err());
    }

    fn member(i: u8, endpoints: usize) -> BootstrapMember {
        BootstrapMember {
            name: format!("member-{i}"),
            key: PublicKey::from_bytes([i; 32]),
            endpoints: (0..endpoints)
                .map(|p| {
                    if p % 2 == 0 {
                        format!("192.0.2.{i}:{}", 6000 + p).parse().unwrap()
                    } else {
                        format!("[2001:db8::{i}]:{}", 6000 + p).parse().unwrap()
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn request_payload_round_trip_and_rejects_junk() {
        let payload = RequestPayload {
            secret: InviteSecret::from_bytes([7; 32]),
            signing_key: SigningPublicKey::from_bytes([8; 32]),
            name: "new-node".into(),
            endpoints: member(3, 8).endpoints,
        };
        let bytes = payload.encode();
        assert!(bytes.len() <= MAX_REQUEST_PAYLOAD);
        assert_eq!(RequestPayload::decode(&bytes).unwrap(), payload);
        for cut in 0..bytes.len() {
            assert!(RequestPayload::decode(&bytes[..cut]).is_none(), "cut {cut}");
        }
        let mut trailing = bytes.to_vec();
        trailing.push(0);
        assert!(RequestPayload::decode(&trailing).is_none());
        let mut nine = bytes.to_vec();
        let count_at = 32 + 32 + 1 + payload.name.len();
        nine[count_at] = 9;
        assert!(RequestPayload::decode(&nine).is_none());
        let mut bad_utf8 = bytes.to_vec();
        bad_utf8[32 + 32 + 1] = 0xff;
        assert!(RequestPayload::decode(&bad_utf8).is_none());
    }

    #[test]
    fn response_payload_caps_members_to_the_space() {
        let members: Vec<_> = (0..40).map(|i| member(i, 3)).collect();
        let cert = vec![0xc0; 200];
        let (bytes, count) =
            ResponsePayload::encode(&cert, &members, MAX_RESPONSE_PAYLOAD).unwrap();
        assert!(bytes.len() <= MAX_RESPONSE_PAYLOAD);
        assert!(count > 0 && count < 40);
        let decoded = ResponsePayload::decode(&bytes).unwrap();
        assert_eq!(decoded.certificate, cert);
        assert_eq!(decoded.members, members[..count]);
        assert!(JoinResponse::len_for_payload(bytes.len()) <= JOIN_MAX_LEN);

        let (bytes, count) = ResponsePayload::encode(&cert, &members[..2], 4096).unwrap();
        assert_eq!(count, 2);
        assert_eq!(
            ResponsePayload::decode(&bytes).unwrap().members,
            members[..2]
        );
        assert!(ResponsePayload::encode(&cert, &[], 100).is_none());

        let many: Vec<_> = (0..40).map(|i| member(i, 0)).collect();
        let (_, count) = ResponsePayload::encode(&[], &many, 65536).unwrap();
        assert_eq!(count, MAX_BOOTSTRAP_MEMBERS);

        let wide = member(1, 12);
        let (bytes, _) = ResponsePayload::encode(&cert, &[wide], 4096).unwrap();
        assert_eq!(
            ResponsePayload::decode(&bytes).unwrap().members[0]
                .endpoints
                .len(),
            MAX_JOIN_ENDPOINTS
        );
        for cut in 0..bytes.len() {
            assert!(
                ResponsePayload::decode(&bytes[..cut]).is_none(),
                "cut {cut}"
            );
        }
    }
}
