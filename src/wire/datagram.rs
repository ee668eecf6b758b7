//! The outer datagram (protocol version 1): the 4-byte header shared by every message, the two handshake
//! messages, the cookie reply a responder under load answers an initiation with, and the data message.
//!
//! Invariant of every view here: once `new_checked` returned `Ok`, the buffer is at least as long as every
//! accessor reads (handshakes are variable-length: their Noise part ends 32 bytes before the end), the version byte is
//! [`PROTOCOL_VERSION`] and the type byte matches the view. Byte 3 (and byte 2 of handshakes) is reserved:
//! emitted as zero, ignored on receive.

use super::{MessageType, PayloadKind, WireError};

/// The only version this build speaks; byte 0 of every datagram.
pub const PROTOCOL_VERSION: u8 = 1;
/// Length of the header every datagram starts with.
pub const HEADER_LEN: usize = 4;
/// Length of mac1 and mac2 in handshake messages.
pub const MAC_LEN: usize = 16;
/// Largest payload a handshake message may carry (the sender's certificate and timestamp).
pub const HANDSHAKE_PAYLOAD_MAX: usize = 1024;
/// Bytes the Noise part of a HandshakeInit adds to its payload.
pub const NOISE_INIT_OVERHEAD: usize = 96;
/// Bytes the Noise part of a HandshakeResponse adds to its payload.
pub const NOISE_RESPONSE_OVERHEAD: usize = 48;
/// Bytes of a HandshakeInit around its Noise part: header, sender index, mac1, mac2.
const INIT_FRAMING: usize = HEADER_LEN + 4 + MAC_LEN + MAC_LEN;
/// Bytes of a HandshakeResponse around its Noise part: header, two indices, mac1, mac2.
const RESPONSE_FRAMING: usize = HEADER_LEN + 4 + 4 + MAC_LEN + MAC_LEN;
/// Shortest HandshakeInit (empty payload).
pub const HANDSHAKE_INIT_MIN_LEN: usize = INIT_FRAMING + NOISE_INIT_OVERHEAD;
/// Longest HandshakeInit.
pub const HANDSHAKE_INIT_MAX_LEN: usize = HANDSHAKE_INIT_MIN_LEN + HANDSHAKE_PAYLOAD_MAX;
/// Shortest HandshakeResponse (empty payload).
pub const HANDSHAKE_RESPONSE_MIN_LEN: usize = RESPONSE_FRAMING + NOISE_RESPONSE_OVERHEAD;
/// Longest HandshakeResponse.
pub const HANDSHAKE_RESPONSE_MAX_LEN: usize = HANDSHAKE_RESPONSE_MIN_LEN + HANDSHAKE_PAYLOAD_MAX;

/// Length of a HandshakeInit whose Noise message carries `payload_len` bytes of payload.
pub const fn handshake_init_len(payload_len: usize) -> usize {
    HANDSHAKE_INIT_MIN_LEN + payload_len
}

/// Length of a HandshakeResponse whose Noise message carries `payload_len` bytes of payload.
pub const fn handshake_response_len(payload_len: usize) -> usize {
    HANDSHAKE_RESPONSE_MIN_LEN + payload_len
}
/// Length of the random nonce of a CookieReply (ChaCha20-Poly1305).
pub const COOKIE_NONCE_LEN: usize = 12;
/// Length of the sealed cookie of a CookieReply: the 16-byte cookie and its 16-byte tag.
pub const SEALED_COOKIE_LEN: usize = 32;
/// A CookieReply's exact length: header, receiver index, nonce, sealed cookie.
pub const COOKIE_REPLY_LEN: usize = HEADER_LEN + 4 + COOKIE_NONCE_LEN + SEALED_COOKIE_LEN;
/// Cleartext part of a data message (header, receiver index, counter); authenticated as AAD.
pub const DATA_HEADER_LEN: usize = 16;
/// ChaCha20-Poly1305 tag appended to every encrypted payload.
pub const TAG_LEN: usize = 16;
/// Shortest data message: a keepalive (empty payload, tag only).
pub const DATA_MIN_LEN: usize = DATA_HEADER_LEN + TAG_LEN;
/// Bytes a data message adds around its plaintext payload.
pub const DATA_OVERHEAD: usize = DATA_HEADER_LEN + TAG_LEN;

const VERSION: usize = 0;
const TYPE: usize = 1;
const KIND: usize = 2;
/// The lane byte: 0 in handshakes and joins; in data, the sending worker (a steering hint).
pub const LANE: usize = 3;

mod init {
    pub const SENDER: usize = super::HEADER_LEN;
    pub const NOISE: usize = SENDER + 4;
}

mod response {
    pub const SENDER: usize = super::HEADER_LEN;
    pub const RECEIVER: usize = SENDER + 4;
    pub const NOISE: usize = RECEIVER + 4;
}

mod cookie {
    pub const RECEIVER: usize = super::HEADER_LEN;
    pub const NONCE: usize = RECEIVER + 4;
    pub const SEALED: usize = NONCE + super::COOKIE_NONCE_LEN;
}

mod data {
    pub const RECEIVER: usize = super::HEADER_LEN;
    pub const COUNTER: usize = RECEIVER + 4;
}

const _: () = assert!(HANDSHAKE_INIT_MIN_LEN == 136 && HANDSHAKE_RESPONSE_MIN_LEN == 92);
const _: () = assert!(COOKIE_REPLY_LEN == 52 && cookie::SEALED + SEALED_COOKIE_LEN == 52);
const _: () = assert!(data::COUNTER + 8 == DATA_HEADER_LEN && DATA_MIN_LEN == 32);

// The layout is defined here so this layer stays free of crypto, but it must agree with what
// meshd-crypto produces.
const _: () = assert!(NOISE_INIT_OVERHEAD == meshd_crypto::NOISE_INIT_OVERHEAD);
const _: () = assert!(NOISE_RESPONSE_OVERHEAD == meshd_crypto::NOISE_RESPONSE_OVERHEAD);
const _: () = assert!(HANDSHAKE_PAYLOAD_MAX == meshd_crypto::MAX_HANDSHAKE_PAYLOAD);
const _: () = assert!(MAC_LEN == meshd_crypto::MAC1_LEN);
const _: () = assert!(TAG_LEN == meshd_crypto::TAG_LEN);
const _: () = assert!(COOKIE_NONCE_LEN == meshd_crypto::COOKIE_NONCE_LEN);
const _: () = assert!(SEALED_COOKIE_LEN == meshd_crypto::SEALED_COOKIE_LEN);
const _: () = assert!(MAC_LEN == meshd_crypto::MAC2_LEN);

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

fn write_header(bytes: &mut [u8], message_type: MessageType, kind: u8) {
    bytes[VERSION] = PROTOCOL_VERSION;
    bytes[TYPE] = message_type.into();
    bytes[KIND] = kind;
    bytes[LANE] = 0;
}

/// Writes the lane byte of a data header: the sending worker, which receivers with several
/// workers steer by (see docs/wire-format.md). Part of the authenticated header, so it is set
/// before sealing.
pub fn set_lane(header: &mut [u8], lane: u8) {
    header[LANE] = lane;
}

/// The header check alone: length and version. Cheap enough to run on every datagram before dispatch.
pub fn classify(datagram: &[u8]) -> Result<MessageType, WireError> {
    match datagram {
        [version, message_type, _, _, ..] if *version == PROTOCOL_VERSION => {
            Ok((*message_type).into())
        }
        [version, _, _, _, ..] => Err(WireError::BadVersion(*version)),
        _ => Err(WireError::Truncated),
    }
}

/// Checks length (inside `min..=max`), version and type: the common prefix of every handshake view.
fn check_bounded(
    bytes: &[u8],
    expected_type: MessageType,
    min: usize,
    max: usize,
) -> Result<(), WireError> {
    check_len(bytes.len(), min, max)?;
    check_type(bytes, expected_type)
}

fn check_len(len: usize, min: usize, max: usize) -> Result<(), WireError> {
    if len < min {
        return Err(WireError::Truncated);
    }
    if len > max {
        return Err(WireError::BadLength);
    }
    Ok(())
}

fn check_type(bytes: &[u8], expected_type: MessageType) -> Result<(), WireError> {
    let found = classify(bytes)?;
    if found != expected_type {
        return Err(WireError::WrongType(found));
    }
    Ok(())
}

/// Writes the 16 cleartext bytes of a data message (header, receiver index, counter) into `buf[..16]`.
///
/// These bytes are the AEAD's associated data, so they must be written before sealing.
///
/// # Panics
/// If `buf` is shorter than [`DATA_HEADER_LEN`]; the caller sizes its own buffers.
pub fn emit_data_header(buf: &mut [u8], kind: PayloadKind, receiver_index: u32, counter: u64) {
    write_header(buf, MessageType::Data, kind.into());
    buf[data::RECEIVER..data::COUNTER].copy_from_slice(&receiver_index.to_le_bytes());
    buf[data::COUNTER..DATA_HEADER_LEN].copy_from_slice(&counter.to_le_bytes());
}

/// The 4-byte header every datagram starts with.
#[derive(Debug, Clone)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Header { buffer }
    }

    /// Wraps `buffer` if it holds at least [`HEADER_LEN`] bytes and the version is [`PROTOCOL_VERSION`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        classify(buffer.as_ref())?;
        Ok(Header { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[VERSION]
    }

    pub fn message_type(&self) -> MessageType {
        self.buffer.as_ref()[TYPE].into()
    }

    /// Byte 2 read as a payload kind; meaningful for data messages only (handshakes carry 0).
    pub fn payload_kind(&self) -> PayloadKind {
        self.buffer.as_ref()[KIND].into()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    /// Writes all four header bytes: current version, `message_type`, `kind`, reserved zero.
    pub fn emit(&mut self, message_type: MessageType, kind: PayloadKind) {
        write_header(self.buffer.as_mut(), message_type, kind.into());
    }

    pub fn set_version(&mut self, version: u8) {
        self.buffer.as_mut()[VERSION] = version;
    }

    pub fn set_message_type(&mut self, message_type: MessageType) {
        self.buffer.as_mut()[TYPE] = message_type.into();
    }

    pub fn set_payload_kind(&mut self, kind: PayloadKind) {
        self.buffer.as_mut()[KIND] = kind.into();
    }
}

/// HandshakeInit (type 1): header, sender index, the Noise message (its length follows from the
/// datagram's), mac1, mac2. Between [`HANDSHAKE_INIT_MIN_LEN`] and [`HANDSHAKE_INIT_MAX_LEN`] bytes.
#[derive(Debug, Clone)]
pub struct HandshakeInit<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> HandshakeInit<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is shorter than
    /// [`HANDSHAKE_INIT_MIN_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        HandshakeInit { buffer }
    }

    /// Wraps `buffer` if it is a version 1 HandshakeInit of an allowed length.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        check_bounded(
            buffer.as_ref(),
            MessageType::HandshakeInit,
            HANDSHAKE_INIT_MIN_LEN,
            HANDSHAKE_INIT_MAX_LEN,
        )?;
        Ok(HandshakeInit { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn mac1_at(&self) -> usize {
        self.buffer.as_ref().len() - 2 * MAC_LEN
    }

    /// The whole message as emitted or received.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The initiator's local session index; the responder echoes it as `receiver_index`.
    pub fn sender_index(&self) -> u32 {
        read_u32(self.buffer.as_ref(), init::SENDER)
    }

    /// The Noise handshake message, opaque to this layer.
    pub fn noise(&self) -> &[u8] {
        &self.buffer.as_ref()[init::NOISE..self.mac1_at()]
    }

    pub fn mac1(&self) -> &[u8] {
        let at = self.mac1_at();
        &self.buffer.as_ref()[at..at + MAC_LEN]
    }

    /// mac2: all zero unless the initiator holds a cookie from this responder, then the MAC under
    /// that cookie over [`HandshakeInit::mac2_covered`].
    pub fn mac2(&self) -> &[u8] {
        &self.buffer.as_ref()[self.mac1_at() + MAC_LEN..]
    }

    /// The bytes mac1 authenticates: everything before it.
    pub fn mac1_covered(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.mac1_at()]
    }

    /// The bytes mac2 authenticates: everything before it, mac1 included.
    pub fn mac2_covered(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.mac1_at() + MAC_LEN]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> HandshakeInit<T> {
    /// Prepares `buffer` (exactly the message's length, see [`handshake_init_len`]) for
    /// emitting: writes the header and zeroes mac1 and mac2. The caller then sets the index and
    /// Noise message, and mac1 last.
    pub fn new_emit(buffer: T) -> Result<Self, WireError> {
        check_len(
            buffer.as_ref().len(),
            HANDSHAKE_INIT_MIN_LEN,
            HANDSHAKE_INIT_MAX_LEN,
        )?;
        let mut message = HandshakeInit { buffer };
        message.fill_header();
        message.set_mac1(&[0; MAC_LEN]);
        message.set_mac2(&[0; MAC_LEN]);
        Ok(message)
    }

    /// Writes version, type HandshakeInit and the two zero reserved bytes.
    pub fn fill_header(&mut self) {
        write_header(self.buffer.as_mut(), MessageType::HandshakeInit, 0);
    }

    pub fn set_sender_index(&mut self, index: u32) {
        self.buffer.as_mut()[init::SENDER..init::NOISE].copy_from_slice(&index.to_le_bytes());
    }

    pub fn noise_mut(&mut self) -> &mut [u8] {
        let at = self.mac1_at();
        &mut self.buffer.as_mut()[init::NOISE..at]
    }

    /// Copies a Noise message in. It must be exactly as long as the message was sized for.
    pub fn set_noise(&mut self, noise: &[u8]) {
        self.noise_mut().copy_from_slice(noise);
    }

    pub fn set_mac1(&mut self, mac: &[u8; MAC_LEN]) {
        let at = self.mac1_at();
        self.buffer.as_mut()[at..at + MAC_LEN].copy_from_slice(mac);
    }

    pub fn set_mac2(&mut self, mac: &[u8; MAC_LEN]) {
        let at = self.mac1_at() + MAC_LEN;
        self.buffer.as_mut()[at..].copy_from_slice(mac);
    }
}

/// HandshakeResponse (type 2): header, sender and receiver indices, the Noise message, mac1,
/// mac2. Between [`HANDSHAKE_RESPONSE_MIN_LEN`] and [`HANDSHAKE_RESPONSE_MAX_LEN`] bytes.
#[derive(Debug, Clone)]
pub struct HandshakeResponse<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> HandshakeResponse<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is shorter than
    /// [`HANDSHAKE_RESPONSE_MIN_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        HandshakeResponse { buffer }
    }

    /// Wraps `buffer` if it is a version 1 HandshakeResponse of an allowed length.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        check_bounded(
            buffer.as_ref(),
            MessageType::HandshakeResponse,
            HANDSHAKE_RESPONSE_MIN_LEN,
            HANDSHAKE_RESPONSE_MAX_LEN,
        )?;
        Ok(HandshakeResponse { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn mac1_at(&self) -> usize {
        self.buffer.as_ref().len() - 2 * MAC_LEN
    }

    /// The whole message as emitted or received.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The responder's local session index; data sent to the responder carries it as `receiver_index`.
    pub fn sender_index(&self) -> u32 {
        read_u32(self.buffer.as_ref(), response::SENDER)
    }

    /// The initiator's `sender_index`, echoed back so the initiator finds its pending handshake.
    pub fn receiver_index(&self) -> u32 {
        read_u32(self.buffer.as_ref(), response::RECEIVER)
    }

    /// The Noise handshake message, opaque to this layer.
    pub fn noise(&self) -> &[u8] {
        &self.buffer.as_ref()[response::NOISE..self.mac1_at()]
    }

    pub fn mac1(&self) -> &[u8] {
        let at = self.mac1_at();
        &self.buffer.as_ref()[at..at + MAC_LEN]
    }

    /// Reserved for cookies; zero in version 1.
    pub fn mac2(&self) -> &[u8] {
        &self.buffer.as_ref()[self.mac1_at() + MAC_LEN..]
    }

    /// The bytes mac1 authenticates: everything before it.
    pub fn mac1_covered(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.mac1_at()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> HandshakeResponse<T> {
    /// Prepares `buffer` (exactly the message's length, see [`handshake_response_len`]) for
    /// emitting: writes the header and zeroes mac1 and mac2. The caller then sets indices and
    /// Noise message, and mac1 last.
    pub fn new_emit(buffer: T) -> Result<Self, WireError> {
        check_len(
            buffer.as_ref().len(),
            HANDSHAKE_RESPONSE_MIN_LEN,
            HANDSHAKE_RESPONSE_MAX_LEN,
        )?;
        let mut message = HandshakeResponse { buffer };
        message.fill_header();
        message.set_mac1(&[0; MAC_LEN]);
        message.set_mac2(&[0; MAC_LEN]);
        Ok(message)
    }

    /// Writes version, type HandshakeResponse and the two zero reserved bytes.
    pub fn fill_header(&mut self) {
        write_header(self.buffer.as_mut(), MessageType::HandshakeResponse, 0);
    }

    pub fn set_sender_index(&mut self, index: u32) {
        self.buffer.as_mut()[response::SENDER..response::RECEIVER]
            .copy_from_slice(&index.to_le_bytes());
    }

    pub fn set_receiver_index(&mut self, index: u32) {
        self.buffer.as_mut()[response::RECEIVER..response::NOISE]
            .copy_from_slice(&index.to_le_bytes());
    }

    pub fn noise_mut(&mut self) -> &mut [u8] {
        let at = self.mac1_at();
        &mut self.buffer.as_mut()[response::NOISE..at]
    }

    /// Copies a Noise message in. It must be exactly as long as the message was sized for.
    pub fn set_noise(&mut self, noise: &[u8]) {
        self.noise_mut().copy_from_slice(noise);
    }

    pub fn set_mac1(&mut self, mac: &[u8; MAC_LEN]) {
        let at = self.mac1_at();
        self.buffer.as_mut()[at..at + MAC_LEN].copy_from_slice(mac);
    }

    pub fn set_mac2(&mut self, mac: &[u8; MAC_LEN]) {
        let at = self.mac1_at() + MAC_LEN;
        self.buffer.as_mut()[at..].copy_from_slice(mac);
    }
}

/// CookieReply (type 3): a responder under load answers an initiation without a valid mac2 with
/// it, instead of doing the initiation's DH. Header, receiver index (the initiation's sender index),
/// a random 12-byte nonce and the sealed cookie. Exactly [`COOKIE_REPLY_LEN`] bytes.
#[derive(Debug, Clone)]
pub struct CookieReply<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> CookieReply<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is shorter than
    /// [`COOKIE_REPLY_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        CookieReply { buffer }
    }

    /// Wraps `buffer` if it is a version 1 CookieReply of exactly [`COOKIE_REPLY_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        check_bounded(
            buffer.as_ref(),
            MessageType::CookieReply,
            COOKIE_REPLY_LEN,
            COOKIE_REPLY_LEN,
        )?;
        Ok(CookieReply { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole message as emitted or received.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The sender index of the initiation this answers: the initiator's pending index.
    pub fn receiver_index(&self) -> u32 {
        read_u32(self.buffer.as_ref(), cookie::RECEIVER)
    }

    pub fn nonce(&self) -> &[u8; COOKIE_NONCE_LEN] {
        self.buffer.as_ref()[cookie::NONCE..cookie::SEALED]
            .try_into()
            .expect("new_checked fixed the length")
    }

    /// The encrypted cookie followed by its tag.
    pub fn sealed_cookie(&self) -> &[u8] {
        &self.buffer.as_ref()[cookie::SEALED..COOKIE_REPLY_LEN]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> CookieReply<T> {
    /// Prepares `buffer` (exactly [`COOKIE_REPLY_LEN`] bytes) for emitting: writes the header.
    pub fn new_emit(buffer: T) -> Result<Self, WireError> {
        check_len(buffer.as_ref().len(), COOKIE_REPLY_LEN, COOKIE_REPLY_LEN)?;
        let mut message = CookieReply { buffer };
        write_header(message.buffer.as_mut(), MessageType::CookieReply, 0);
        Ok(message)
    }

    pub fn set_receiver_index(&mut self, index: u32) {
        self.buffer.as_mut()[cookie::RECEIVER..cookie::NONCE].copy_from_slice(&index.to_le_bytes());
    }

    pub fn set_nonce(&mut self, nonce: &[u8; COOKIE_NONCE_LEN]) {
        self.buffer.as_mut()[cookie::NONCE..cookie::SEALED].copy_from_slice(nonce);
    }

    pub fn set_sealed_cookie(&mut self, sealed: &[u8; SEALED_COOKIE_LEN]) {
        self.buffer.as_mut()[cookie::SEALED..COOKIE_REPLY_LEN].copy_from_slice(sealed);
    }
}

/// Data (type 4): 16 cleartext bytes, then the encrypted payload and its 16-byte tag.
///
/// `new_checked` also rejects a keepalive that carries payload bytes ([`WireError::BadLength`]), so that
/// malformed keepalives are dropped before any decryption work.
#[derive(Debug, Clone)]
pub struct Data<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Data<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is shorter than [`DATA_MIN_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Data { buffer }
    }

    /// Wraps `buffer` if it holds at least [`DATA_MIN_LEN`] bytes of version 1, type Data, and a
    /// keepalive has no payload.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let bytes = buffer.as_ref();
        if bytes.len() < DATA_MIN_LEN {
            return Err(WireError::Truncated);
        }
        check_type(bytes, MessageType::Data)?;
        if PayloadKind::from(bytes[KIND]) == PayloadKind::Keepalive && bytes.len() != DATA_MIN_LEN {
            return Err(WireError::BadLength);
        }
        Ok(Data { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole datagram.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn payload_kind(&self) -> PayloadKind {
        self.buffer.as_ref()[KIND].into()
    }

    /// The index the receiving node assigned to this session in its handshake message.
    pub fn receiver_index(&self) -> u32 {
        read_u32(self.buffer.as_ref(), data::RECEIVER)
    }

    /// The sender's message counter: the AEAD nonce and the replay-window position.
    pub fn counter(&self) -> u64 {
        read_u64(self.buffer.as_ref(), data::COUNTER)
    }

    /// The 16 cleartext bytes, which are the AEAD's associated data.
    pub fn header_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..DATA_HEADER_LEN]
    }

    /// Encrypted payload followed by the tag.
    pub fn ciphertext(&self) -> &[u8] {
        &self.buffer.as_ref()[DATA_HEADER_LEN..]
    }

    /// Length of the plaintext payload once decrypted.
    pub fn payload_len(&self) -> usize {
        self.buffer.as_ref().len() - DATA_OVERHEAD
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Data<T> {
    /// Writes the 16 cleartext bytes; see [`emit_data_header`].
    pub fn fill_header(&mut self, kind: PayloadKind, receiver_index: u32, counter: u64) {
        emit_data_header(self.buffer.as_mut(), kind, receiver_index, counter);
    }

    pub fn set_payload_kind(&mut self, kind: PayloadKind) {
        self.buffer.as_mut()[KIND] = kind.into();
    }

    pub fn set_receiver_index(&mut self, index: u32) {
        self.buffer.as_mut()[data::RECEIVER..data::COUNTER].copy_from_slice(&index.to_le_bytes());
    }

    pub fn set_counter(&mut self, counter: u64) {
        self.buffer.as_mut()[data::COUNTER..DATA_HEADER_LEN]
            .copy_from_slice(&counter.to_le_bytes());
    }

    /// Encrypted payload followed by the tag, for decryption in place.
    pub fn ciphertext_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[DATA_HEADER_LEN..]
    }

    /// The associated data and the ciphertext at once, as in-place AEAD calls need both.
    pub fn split_aad_mut(&mut self) -> (&[u8], &mut [u8]) {
        let (header, ciphertext) = self.buffer.as_mut().split_at_mut(DATA_HEADER_LEN);
        (header, ciphertext)
    }
}
