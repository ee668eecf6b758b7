//! Member records, revocations and the gossip items that carry them: byte layouts, signing,
//! checked zero-copy views.
//!
//! Owns [`MemberRecord`] (what a node says about itself: static key, generation, version,
//! endpoints; signed by the node's own signing key), [`Revocation`] (signed by the network key)
//! and [`Item`] (one gossip item: a record with its certificate, or a revocation). Layouts are
//! in docs/wire-format.md, *Membership*. Invariants: every integer is little-endian; every
//! signature covers a fixed label, so a signature made for one kind of object never verifies as
//! another; a view exists only for bytes whose every length, count and tag was checked in
//! `new_checked`, so its accessors cannot fail; unknown format versions, kinds and address
//! families are rejected as values; no input panics.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use meshd_crypto::{
    valid_member_name, Certificate, NetworkId, NetworkSecret, PublicKey, SigningKey,
    SigningPublicKey, SIGNATURE_LEN,
};

/// Byte 0 of every record and revocation this build writes and accepts.
pub const FORMAT_VERSION: u8 = 1;
/// Most endpoints one record carries.
pub const MAX_ENDPOINTS: usize = 4;
/// Prefix of every record signature (with the network id after it).
pub const RECORD_LABEL: &[u8] = b"meshd member record v1\0";
/// Prefix of every revocation signature.
pub const REVOCATION_LABEL: &[u8] = b"meshd revocation v1\0";

/// Highest record version any member accepts (2^63 - 1). The upper half of the version space
/// is reserved so that the version `u64::MAX`, which stands for a revocation in digests and
/// index entries (docs/wire-format.md), never also names a record: a revocation outranks
/// every record in every comparison. No honest node comes near it: versions start at the Unix
/// seconds of a node's start and grow by one per record it signs.
pub const MAX_RECORD_VERSION: u64 = u64::MAX >> 1;

/// Item kind byte: a certificate followed by a member record.
pub const ITEM_MEMBER: u8 = 1;
/// Item kind byte: a revocation.
pub const ITEM_REVOCATION: u8 = 2;

mod rec {
    pub const FORMAT: usize = 0;
    pub const KEY: usize = 1;
    pub const GENERATION: usize = KEY + 32;
    pub const VERSION: usize = GENERATION + 4;
    pub const CERT_ISSUED_AT: usize = VERSION + 8;
    pub const COUNT: usize = CERT_ISSUED_AT + 8;
    pub const ENDPOINTS: usize = COUNT + 1;
}

mod rev {
    pub const FORMAT: usize = 0;
    pub const NETWORK: usize = 1;
    pub const KEY: usize = NETWORK + 32;
    pub const REVOKED_AT: usize = KEY + 32;
    pub const EXPIRES_AT: usize = REVOKED_AT + 8;
    pub const NAME_LEN: usize = EXPIRES_AT + 8;
    pub const NAME: usize = NAME_LEN + 1;
}

/// Address family bytes of an endpoint.
const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;
const ENDPOINT_V4_LEN: usize = 1 + 4 + 2;
const ENDPOINT_V6_LEN: usize = 1 + 16 + 2;

/// Shortest record: no endpoints.
pub const RECORD_MIN_LEN: usize = rec::ENDPOINTS + SIGNATURE_LEN;
/// Longest record: four IPv6 endpoints.
pub const RECORD_MAX_LEN: usize = rec::ENDPOINTS + MAX_ENDPOINTS * ENDPOINT_V6_LEN + SIGNATURE_LEN;

const _: () = assert!(RECORD_MIN_LEN == 118 && RECORD_MAX_LEN == 194);
const _: () = assert!(rev::NAME == 82);

/// Why bytes are not a record, revocation or item, or why one cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Shorter than its fixed part or than its counts say.
    #[error("truncated")]
    Truncated,
    /// Bytes left over after the object.
    #[error("trailing bytes")]
    TrailingBytes,
    /// A format version this build does not know.
    #[error("unknown format version {0}")]
    UnknownFormat(u8),
    /// An item kind this build does not know.
    #[error("unknown item kind {0}")]
    UnknownKind(u8),
    /// More endpoints than [`MAX_ENDPOINTS`].
    #[error("too many endpoints")]
    TooManyEndpoints,
    /// An endpoint address family other than 4 or 6.
    #[error("unknown address family {0}")]
    UnknownFamily(u8),
    /// A name that is not a valid member name (`meshd_crypto::valid_member_name`).
    #[error("bad name")]
    BadName,
    /// The certificate in front of a record did not decode.
    #[error("bad certificate encoding")]
    Certificate,
}

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

fn read_key(bytes: &[u8], at: usize) -> [u8; 32] {
    let mut raw = [0u8; 32];
    raw.copy_from_slice(&bytes[at..at + 32]);
    raw
}

fn read_signature(bytes: &[u8]) -> [u8; SIGNATURE_LEN] {
    let mut raw = [0u8; SIGNATURE_LEN];
    raw.copy_from_slice(&bytes[bytes.len() - SIGNATURE_LEN..]);
    raw
}

/// Sign or verify input: `label || context || body`.
fn signed_message(label: &[u8], context: &[u8], body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(label.len() + context.len() + body.len());
    message.extend_from_slice(label);
    message.extend_from_slice(context);
    message.extend_from_slice(body);
    message
}

/// The form an endpoint has on the wire: IPv6 flow info and scope are not carried.
fn normalize(endpoint: SocketAddr) -> SocketAddr {
    match endpoint {
        SocketAddr::V4(_) => endpoint,
        SocketAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(*v6.ip(), v6.port(), 0, 0)),
    }
}

// ------------------------------------------------------------------------------------ records

/// A checked view of a member record's bytes (the record alone, without its certificate).
#[derive(Clone, Copy)]
pub struct RecordView<'a> {
    bytes: &'a [u8],
    count: u8,
}

impl<'a> RecordView<'a> {
    /// Checks the format byte, the endpoint count and every endpoint's family, and that the
    /// buffer is exactly as long as they make the record.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, RecordError> {
        if bytes.len() < RECORD_MIN_LEN {
            return Err(RecordError::Truncated);
        }
        if bytes[rec::FORMAT] != FORMAT_VERSION {
            return Err(RecordError::UnknownFormat(bytes[rec::FORMAT]));
        }
        let count = bytes[rec::COUNT];
        if usize::from(count) > MAX_ENDPOINTS {
            return Err(RecordError::TooManyEndpoints);
        }
        let mut at = rec::ENDPOINTS;
        for _ in 0..count {
            let len = match bytes.get(at) {
                Some(&FAMILY_V4) => ENDPOINT_V4_LEN,
                Some(&FAMILY_V6) => ENDPOINT_V6_LEN,
                Some(&other) => return Err(RecordError::UnknownFamily(other)),
                None => return Err(RecordError::Truncated),
            };
            at += len;
        }
        let expected = at + SIGNATURE_LEN;
        if bytes.len() < expected {
            return Err(RecordError::Truncated);
        }
        if bytes.len() > expected {
            return Err(RecordError::TrailingBytes);
        }
        Ok(RecordView { bytes, count })
    }

    pub fn static_key(&self) -> PublicKey {
        PublicKey::from_bytes(read_key(self.bytes, rec::KEY))
    }

    pub fn generation(&self) -> u32 {
        read_u32(self.bytes, rec::GENERATION)
    }

    pub fn version(&self) -> u64 {
        read_u64(self.bytes, rec::VERSION)
    }

    /// `issued_at` of the certificate the record was signed for.
    pub fn cert_issued_at(&self) -> u64 {
        read_u64(self.bytes, rec::CERT_ISSUED_AT)
    }

    /// The endpoints, in the order the node listed them.
    pub fn endpoints(&self) -> impl Iterator<Item = SocketAddr> + 'a {
        let bytes = self.bytes;
        let mut at = rec::ENDPOINTS;
        (0..self.count).map(move |_| {
            let port_at;
            let ip = if bytes[at] == FAMILY_V4 {
                port_at = at + 1 + 4;
                let mut raw = [0u8; 4];
                raw.copy_from_slice(&bytes[at + 1..port_at]);
                IpAddr::V4(Ipv4Addr::from(raw))
            } else {
                port_at = at + 1 + 16;
                let mut raw = [0u8; 16];
                raw.copy_from_slice(&bytes[at + 1..port_at]);
                IpAddr::V6(Ipv6Addr::from(raw))
            };
            let port = u16::from_le_bytes([bytes[port_at], bytes[port_at + 1]]);
            at = port_at + 2;
            SocketAddr::new(ip, port)
        })
    }

    /// Everything the signature covers after the label and network id.
    pub fn signed_bytes(&self) -> &'a [u8] {
        &self.bytes[..self.bytes.len() - SIGNATURE_LEN]
    }

    pub fn signature(&self) -> [u8; SIGNATURE_LEN] {
        read_signature(self.bytes)
    }

    /// The whole record.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Whether `signer` signed this record for `network`.
    pub fn verify(&self, network: &NetworkId, signer: &SigningPublicKey) -> bool {
        let message = signed_message(RECORD_LABEL, network.as_bytes(), self.signed_bytes());
        signer.verify(&message, &self.signature())
    }
}

/// What a node says about itself in gossip, signed by its own signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct MemberRecord {
    pub static_key: PublicKey,
    /// The node's foca generation when it signed the record.
    pub generation: u32,
    /// Grows with every new record the node signs, across restarts; the highest wins.
    pub version: u64,
    /// `issued_at` of the certificate the record goes with, so a relay cannot pair the record
    /// with an older certificate of the same node.
    pub cert_issued_at: u64,
    /// At most [`MAX_ENDPOINTS`]; IPv6 flow info and scope are not carried.
    pub endpoints: Vec<SocketAddr>,
    pub signature: [u8; SIGNATURE_LEN],
}

impl fmt::Debug for MemberRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberRecord")
            .field("static_key", &self.static_key)
            .field("generation", &self.generation)
            .field("version", &self.version)
            .field("cert_issued_at", &self.cert_issued_at)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl MemberRecord {
    /// Builds and signs a record for `network`.
    pub fn sign(
        signing_key: &SigningKey,
        network: &NetworkId,
        static_key: PublicKey,
        generation: u32,
        version: u64,
        cert_issued_at: u64,
        endpoints: &[SocketAddr],
    ) -> Result<MemberRecord, RecordError> {
        if endpoints.len() > MAX_ENDPOINTS {
            return Err(RecordError::TooManyEndpoints);
        }
        let mut record = MemberRecord {
            static_key,
            generation,
            version,
            cert_issued_at,
            endpoints: endpoints.iter().copied().map(normalize).collect(),
            signature: [0; SIGNATURE_LEN],
        };
        let unsigned = record.encode();
        let body = &unsigned[..unsigned.len() - SIGNATURE_LEN];
        record.signature =
            signing_key.sign(&signed_message(RECORD_LABEL, network.as_bytes(), body));
        Ok(record)
    }

    /// The record's bytes (docs/wire-format.md, *Member record*).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_MAX_LEN);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(self.static_key.as_bytes());
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.cert_issued_at.to_le_bytes());
        let endpoints = &self.endpoints[..self.endpoints.len().min(MAX_ENDPOINTS)];
        out.push(endpoints.len() as u8);
        for endpoint in endpoints {
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
        out.extend_from_slice(&self.signature);
        out
    }

    /// Parses the structure only; [`RecordView::verify`] checks the signature.
    pub fn decode(bytes: &[u8]) -> Result<MemberRecord, RecordError> {
        Ok(MemberRecord::from_view(&RecordView::new_checked(bytes)?))
    }

    pub fn from_view(view: &RecordView<'_>) -> MemberRecord {
        MemberRecord {
            static_key: view.static_key(),
            generation: view.generation(),
            version: view.version(),
            cert_issued_at: view.cert_issued_at(),
            endpoints: view.endpoints().collect(),
            signature: view.signature(),
        }
    }

    /// Whether `signer` signed this record for `network`.
    pub fn verify(&self, network: &NetworkId, signer: &SigningPublicKey) -> bool {
        let bytes = self.encode();
        RecordView::new_checked(&bytes).is_ok_and(|view| view.verify(network, signer))
    }
}

// -------------------------------------------------------------------------------- revocations

/// A checked view of a revocation's bytes.
#[derive(Clone, Copy)]
pub struct RevocationView<'a> {
    bytes: &'a [u8],
}

impl<'a> RevocationView<'a> {
    /// Checks the format byte, the name (a valid member name, as in certificates) and the
    /// exact length.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, RecordError> {
        if bytes.len() < rev::NAME + SIGNATURE_LEN {
            return Err(RecordError::Truncated);
        }
        if bytes[rev::FORMAT] != FORMAT_VERSION {
            return Err(RecordError::UnknownFormat(bytes[rev::FORMAT]));
        }
        let name_len = usize::from(bytes[rev::NAME_LEN]);
        let expected = rev::NAME + name_len + SIGNATURE_LEN;
        if bytes.len() < expected {
            return Err(RecordError::Truncated);
        }
        if bytes.len() > expected {
            return Err(RecordError::TrailingBytes);
        }
        let name = core::str::from_utf8(&bytes[rev::NAME..rev::NAME + name_len]);
        if !name.is_ok_and(valid_member_name) {
            return Err(RecordError::BadName);
        }
        Ok(RevocationView { bytes })
    }

    pub fn network(&self) -> NetworkId {
        NetworkId::from_bytes(read_key(self.bytes, rev::NETWORK))
    }

    pub fn static_key(&self) -> PublicKey {
        PublicKey::from_bytes(read_key(self.bytes, rev::KEY))
    }

    pub fn revoked_at(&self) -> u64 {
        read_u64(self.bytes, rev::REVOKED_AT)
    }

    pub fn expires_at(&self) -> u64 {
        read_u64(self.bytes, rev::EXPIRES_AT)
    }

    pub fn name(&self) -> &'a str {
        let len = usize::from(self.bytes[rev::NAME_LEN]);
        // Checked to be UTF-8 in new_checked.
        core::str::from_utf8(&self.bytes[rev::NAME..rev::NAME + len]).unwrap_or("")
    }

    pub fn signature(&self) -> [u8; SIGNATURE_LEN] {
        read_signature(self.bytes)
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Whether the revocation names `network` and carries that network key's signature.
    pub fn verify(&self, network: &NetworkId) -> bool {
        if self.network() != *network {
            return false;
        }
        let body = &self.bytes[..self.bytes.len() - SIGNATURE_LEN];
        network.verify(
            &signed_message(REVOCATION_LABEL, &[], body),
            &self.signature(),
        )
    }
}

/// A member's static key revoked by the network key: refused by every member until
/// `expires_at` (then its certificate has expired anyway).
#[derive(Clone, PartialEq, Eq)]
pub struct Revocation {
    pub network: NetworkId,
    pub static_key: PublicKey,
    /// The revoked member's name, for people reading status and logs.
    pub name: String,
    /// Unix seconds.
    pub revoked_at: u64,
    /// Unix seconds after which the revocation may be forgotten, if no certificate of the key
    /// seen by then expires later: no certificate for the key issued before `revoked_at` is
    /// valid then.
    pub expires_at: u64,
    pub signature: [u8; SIGNATURE_LEN],
}

impl fmt::Debug for Revocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Revocation")
            .field("network", &self.network.to_string())
            .field("static_key", &self.static_key)
            .field("name", &self.name)
            .field("revoked_at", &self.revoked_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Revocation {
    /// Signs a revocation of `static_key` (held by the member `name`) with the network key.
    /// `expires_at` should be no earlier than the expiry of the newest certificate issued for
    /// the key: [`revocation_expiry`] computes it. (Members keep a revocation at least as long
    /// as the newest certificate of its key they see anyway.)
    pub fn issue(
        secret: &NetworkSecret,
        static_key: PublicKey,
        name: &str,
        revoked_at: u64,
        expires_at: u64,
    ) -> Result<Revocation, RecordError> {
        if !valid_member_name(name) {
            return Err(RecordError::BadName);
        }
        let mut revocation = Revocation {
            network: secret.network_id(),
            static_key,
            name: name.to_string(),
            revoked_at,
            expires_at,
            signature: [0; SIGNATURE_LEN],
        };
        let unsigned = revocation.encode();
        let body = &unsigned[..unsigned.len() - SIGNATURE_LEN];
        revocation.signature = secret.sign(&signed_message(REVOCATION_LABEL, &[], body));
        Ok(revocation)
    }

    /// The revocation's bytes (docs/wire-format.md, *Revocation*).
    pub fn encode(&self) -> Vec<u8> {
        let name = &self.name.as_bytes()[..self.name.len().min(usize::from(u8::MAX))];
        let mut out = Vec::with_capacity(rev::NAME + name.len() + SIGNATURE_LEN);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(self.network.as_bytes());
        out.extend_from_slice(self.static_key.as_bytes());
        out.extend_from_slice(&self.revoked_at.to_le_bytes());
        out.extend_from_slice(&self.expires_at.to_le_bytes());
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Parses the structure only; [`Revocation::verify`] checks network and signature.
    pub fn decode(bytes: &[u8]) -> Result<Revocation, RecordError> {
        Ok(Revocation::from_view(&RevocationView::new_checked(bytes)?))
    }

    pub fn from_view(view: &RevocationView<'_>) -> Revocation {
        Revocation {
            network: view.network(),
            static_key: view.static_key(),
            name: view.name().to_string(),
            revoked_at: view.revoked_at(),
            expires_at: view.expires_at(),
            signature: view.signature(),
        }
    }

    /// Whether the revocation names `network` and carries that network key's signature.
    pub fn verify(&self, network: &NetworkId) -> bool {
        let bytes = self.encode();
        RevocationView::new_checked(&bytes).is_ok_and(|view| view.verify(network))
    }
}

/// The `expires_at` an admin writes into a revocation issued at `now_unix`: no earlier than
/// the newest certificate it has seen for the key (`newest_certificate_expiry`, from its
/// member table) and no earlier than `now_unix + certificate_lifetime`, which covers every
/// certificate an admin with the same lifetime could have issued before now. A revocation that
/// expired before a certificate of its key would let the member back in with it.
pub fn revocation_expiry(
    now_unix: u64,
    certificate_lifetime: core::time::Duration,
    newest_certificate_expiry: Option<u64>,
) -> u64 {
    now_unix
        .saturating_add(certificate_lifetime.as_secs())
        .max(newest_certificate_expiry.unwrap_or(0))
}

// ------------------------------------------------------------------------------------- items

/// One gossip item, as it travels in foca's custom broadcasts and in record pages.
pub enum Item<'a> {
    /// A certificate and the record signed under it.
    Member {
        certificate: Box<Certificate>,
        /// The certificate's bytes as received (its own length-delimited encoding).
        certificate_bytes: &'a [u8],
        record: RecordView<'a>,
    },
    Revocation(RevocationView<'a>),
}

impl<'a> Item<'a> {
    /// Parses an item's structure (certificate structure included, no signature checked).
    pub fn parse(bytes: &'a [u8]) -> Result<Item<'a>, RecordError> {
        let (&kind, body) = bytes.split_first().ok_or(RecordError::Truncated)?;
        match kind {
            ITEM_MEMBER => {
                let (certificate, used) =
                    Certificate::decode(body).map_err(|_| RecordError::Certificate)?;
                let certificate_bytes = body.get(..used).ok_or(RecordError::Certificate)?;
                let rest = body.get(used..).ok_or(RecordError::Certificate)?;
                Ok(Item::Member {
                    certificate: Box::new(certificate),
                    certificate_bytes,
                    record: RecordView::new_checked(rest)?,
                })
            }
            ITEM_REVOCATION => Ok(Item::Revocation(RevocationView::new_checked(body)?)),
            other => Err(RecordError::UnknownKind(other)),
        }
    }

    /// The static key the item is about.
    pub fn static_key(&self) -> PublicKey {
        match self {
            Item::Member { record, .. } => record.static_key(),
            Item::Revocation(view) => view.static_key(),
        }
    }
}

/// Encodes a member item: kind, certificate, record.
pub fn member_item(certificate: &Certificate, record: &MemberRecord) -> Vec<u8> {
    let cert = certificate.encode();
    let record = record.encode();
    let mut out = Vec::with_capacity(1 + cert.len() + record.len());
    out.push(ITEM_MEMBER);
    out.extend_from_slice(&cert);
    out.extend_from_slice(&record);
    out
}

/// Encodes a revocation item: kind, revocation.
pub fn revocation_item(revocation: &Revocation) -> Vec<u8> {
    let bytes = revocation.encode();
    let mut out = Vec::with_capacity(1 + bytes.len());
    out.push(ITEM_REVOCATION);
    out.extend_from_slice(&bytes);
    out
}
