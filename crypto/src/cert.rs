//! Membership certificates: the network key's statement that a node belongs to the network.
//!
//! Owns [`Certificate`] (issue, encode, checked decode, verify) and the member-name rule
//! ([`valid_member_name`]). Invariants: `decode` reads only inside the given bytes and never
//! panics; a decoded certificate is *not* trusted until [`Certificate::verify`] accepted it for
//! the node's network at the current time; `issue` only produces certificates that `decode` and
//! `verify` accept (it validates the name and the validity window first); the signature covers a
//! domain label and every byte before it, so no field can be changed without the network key.
//!
//! Layout (little-endian; see docs/wire-format.md):
//! version(1) flags(1) name_len(1) reserved(1) network(32) static_key(32) signing_key(32)
//! issued_at(8) expires_at(8) name(name_len) [grant(54) when flags has GRANT] signature(64).
//!
//! The optional [`AddressGrant`] is the container address space the network key hands the
//! member: the network's subnets (the same in every grant of a network) and the member's own
//! IPv4 range and IPv6 /64. Nodes that predate grants refuse a certificate that has one (unknown
//! flag), which is the safe failure: they cannot honour ranges they do not know.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::sign::{NetworkId, NetworkSecret, SigningPublicKey, SIGNATURE_LEN};
use crate::{PublicKey, KEY_LEN};

/// The only certificate version this code writes and reads.
pub const CERT_VERSION: u8 = 1;
/// Longest member name, in bytes.
pub const MAX_NAME_LEN: usize = 63;
/// Bytes before the name.
const FIXED_LEN: usize = 4 + 3 * KEY_LEN + 8 + 8;
/// Smallest possible encoding (one-character name).
pub const CERT_MIN_LEN: usize = FIXED_LEN + 1 + SIGNATURE_LEN;
/// Largest possible encoding.
pub const CERT_MAX_LEN: usize = FIXED_LEN + MAX_NAME_LEN + GRANT_LEN + SIGNATURE_LEN;
/// Clock skew tolerated on `issued_at`, in seconds.
pub const CLOCK_SKEW_SECS: u64 = 300;
/// Domain label in front of the signed bytes.
const SIGNATURE_LABEL: &[u8] = b"meshd v1 certificate\0";
const FLAG_ADMIN: u8 = 1;
const FLAG_GRANT: u8 = 2;
/// Bytes of an encoded [`AddressGrant`].
pub const GRANT_LEN: usize = 54;

mod field {
    pub const VERSION: usize = 0;
    pub const FLAGS: usize = 1;
    pub const NAME_LEN: usize = 2;
    pub const RESERVED: usize = 3;
    pub const NETWORK: usize = 4;
    pub const STATIC_KEY: usize = NETWORK + 32;
    pub const SIGNING_KEY: usize = STATIC_KEY + 32;
    pub const ISSUED_AT: usize = SIGNING_KEY + 32;
    pub const EXPIRES_AT: usize = ISSUED_AT + 8;
    pub const NAME: usize = EXPIRES_AT + 8;
}
const _: () = assert!(field::NAME == FIXED_LEN);

/// Why a certificate was not accepted. Messages name the problem, never the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// Fewer bytes than the certificate's own lengths say.
    #[error("certificate truncated")]
    Truncated,
    /// A version this code does not know.
    #[error("unsupported certificate version {0}")]
    BadVersion(u8),
    /// Flags or reserved bits this version does not define.
    #[error("certificate has unknown flags")]
    BadFlags,
    /// The name is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    #[error("invalid member name in certificate")]
    BadName,
    /// Signed for another network.
    #[error("certificate belongs to another network")]
    WrongNetwork,
    /// The network signature does not verify.
    #[error("certificate signature is not valid")]
    BadSignature,
    /// Issued in the future (beyond the allowed clock skew).
    #[error("certificate is not valid yet (check the clocks)")]
    NotYetValid,
    /// Past its expiry.
    #[error("certificate expired")]
    Expired,
    /// `expires_at` is not after `issued_at`.
    #[error("certificate validity window is empty")]
    BadValidity,
    /// The address grant has a prefix out of bounds or a range outside its subnet.
    #[error("certificate has a malformed address grant")]
    BadGrant,
}

/// Names are what operators type (`meshd revoke NAME`) and see in status and logs: 1 to 63
/// characters of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub fn valid_member_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.starts_with(['.', '-'])
}

/// The container address space a certificate grants its member (see the module docs). Prefixes
/// are checked for their bounds and the ranges for lying inside their subnets on decode; the
/// meshd crate checks the rest (host bits, the host prefix) when it turns a grant into ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressGrant {
    /// The network's IPv4 container subnet and its prefix length.
    pub subnet: (Ipv4Addr, u8),
    /// Prefix length of every member's IPv4 range.
    pub host_prefix: u8,
    /// This member's IPv4 range.
    pub range: (Ipv4Addr, u8),
    /// Unix seconds when this range was first granted to this member (renewals keep it): of two
    /// members whose ranges overlap, the one granted first keeps its range.
    pub granted_at: u64,
    /// The network's IPv6 subnet, if the network has IPv6.
    pub subnet6: Option<(Ipv6Addr, u8)>,
    /// This member's /64 of `subnet6`; present exactly when `subnet6` is.
    pub range6: Option<(Ipv6Addr, u8)>,
}

fn v4_in(subnet: (Ipv4Addr, u8), addr: Ipv4Addr) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(subnet.1)).unwrap_or(0);
    u32::from(subnet.0) & mask == u32::from(addr) & mask
}

fn v6_in(subnet: (Ipv6Addr, u8), addr: Ipv6Addr) -> bool {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(subnet.1))
        .unwrap_or(0);
    u128::from(subnet.0) & mask == u128::from(addr) & mask
}

impl AddressGrant {
    /// Whether the fields are in bounds and each range lies inside its subnet.
    pub fn is_well_formed(&self) -> bool {
        let v4 = self.subnet.1 <= 32
            && self.range.1 <= 32
            && self.host_prefix == self.range.1
            && self.range.1 >= self.subnet.1
            && v4_in(self.subnet, self.range.0);
        let v6 = match (self.subnet6, self.range6) {
            (None, None) => true,
            (Some(s), Some(r)) => s.1 <= 128 && r.1 <= 128 && r.1 >= s.1 && v6_in(s, r.0),
            _ => false,
        };
        v4 && v6
    }

    fn write(&self, out: &mut [u8]) {
        out[0..4].copy_from_slice(&self.subnet.0.octets());
        out[4] = self.subnet.1;
        out[5] = self.host_prefix;
        out[6..10].copy_from_slice(&self.range.0.octets());
        out[10] = self.range.1;
        out[11..19].copy_from_slice(&self.granted_at.to_le_bytes());
        out[19..GRANT_LEN].fill(0);
        if let (Some(s), Some(r)) = (self.subnet6, self.range6) {
            out[19] = 1;
            out[20..36].copy_from_slice(&s.0.octets());
            out[36] = s.1;
            out[37..53].copy_from_slice(&r.0.octets());
            out[53] = r.1;
        }
    }

    fn read(b: &[u8]) -> Option<AddressGrant> {
        let v4 = |at: usize| Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]);
        let v6 = |at: usize| {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[at..at + 16]);
            Ipv6Addr::from(o)
        };
        let mut t = [0u8; 8];
        t.copy_from_slice(&b[11..19]);
        let (subnet6, range6) = match b[19] {
            0 if b[20..GRANT_LEN].iter().all(|&x| x == 0) => (None, None),
            1 => (Some((v6(20), b[36])), Some((v6(37), b[53]))),
            _ => return None,
        };
        let grant = AddressGrant {
            subnet: (v4(0), b[4]),
            host_prefix: b[5],
            range: (v4(6), b[10]),
            granted_at: u64::from_le_bytes(t),
            subnet6,
            range6,
        };
        grant.is_well_formed().then_some(grant)
    }
}

/// A node's membership certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The network that admitted the node.
    pub network: NetworkId,
    /// Unique member name.
    pub name: String,
    /// The node's X25519 static key (its Noise identity).
    pub static_key: PublicKey,
    /// The node's Ed25519 key, which signs its gossip record.
    pub signing_key: SigningPublicKey,
    /// Unix seconds.
    pub issued_at: u64,
    /// Unix seconds; the certificate is refused from this second on.
    pub expires_at: u64,
    /// The node holds the network key: it can invite, renew and revoke.
    pub admin: bool,
    /// The container address space granted to the member, if the network has one.
    pub grant: Option<AddressGrant>,
    signature: [u8; SIGNATURE_LEN],
}

impl core::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Certificate")
            .field("name", &self.name)
            .field("static_key", &self.static_key)
            .field("issued_at", &self.issued_at)
            .field("expires_at", &self.expires_at)
            .field("admin", &self.admin)
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// Signs a certificate with the network key.
    pub fn issue(
        network: &NetworkSecret,
        name: &str,
        static_key: PublicKey,
        signing_key: SigningPublicKey,
        issued_at: u64,
        expires_at: u64,
        admin: bool,
    ) -> Result<Certificate, CertError> {
        if !valid_member_name(name) {
            return Err(CertError::BadName);
        }
        if expires_at <= issued_at {
            return Err(CertError::BadValidity);
        }
        let mut cert = Certificate {
            network: network.network_id(),
            name: name.to_string(),
            static_key,
            signing_key,
            issued_at,
            expires_at,
            admin,
            grant: None,
            signature: [0; SIGNATURE_LEN],
        };
        cert.signature = network.sign(&cert.signed_message());
        Ok(cert)
    }

    /// The same certificate with `grant` in place of its address grant, signed again by
    /// `network`. Refuses a grant that is not well formed (it would not decode).
    pub fn with_grant(
        mut self,
        network: &NetworkSecret,
        grant: Option<AddressGrant>,
    ) -> Result<Certificate, CertError> {
        if grant.is_some_and(|g| !g.is_well_formed()) {
            return Err(CertError::BadGrant);
        }
        self.grant = grant;
        self.signature = network.sign(&self.signed_message());
        Ok(self)
    }

    fn grant_len(&self) -> usize {
        if self.grant.is_some() {
            GRANT_LEN
        } else {
            0
        }
    }

    /// Bytes of the encoding.
    pub fn encoded_len(&self) -> usize {
        FIXED_LEN + self.name.len() + self.grant_len() + SIGNATURE_LEN
    }

    fn write_body(&self, out: &mut [u8]) {
        out[field::VERSION] = CERT_VERSION;
        out[field::FLAGS] = if self.admin { FLAG_ADMIN } else { 0 }
            | if self.grant.is_some() { FLAG_GRANT } else { 0 };
        out[field::NAME_LEN] = self.name.len() as u8;
        out[field::RESERVED] = 0;
        out[field::NETWORK..field::STATIC_KEY].copy_from_slice(self.network.as_bytes());
        out[field::STATIC_KEY..field::SIGNING_KEY].copy_from_slice(self.static_key.as_bytes());
        out[field::SIGNING_KEY..field::ISSUED_AT].copy_from_slice(self.signing_key.as_bytes());
        out[field::ISSUED_AT..field::EXPIRES_AT].copy_from_slice(&self.issued_at.to_le_bytes());
        out[field::EXPIRES_AT..field::NAME].copy_from_slice(&self.expires_at.to_le_bytes());
        let name_end = field::NAME + self.name.len();
        out[field::NAME..name_end].copy_from_slice(self.name.as_bytes());
        if let Some(grant) = &self.grant {
            grant.write(&mut out[name_end..name_end + GRANT_LEN]);
        }
    }

    fn signed_message(&self) -> Vec<u8> {
        let body_len = FIXED_LEN + self.name.len() + self.grant_len();
        let mut msg = vec![0u8; SIGNATURE_LABEL.len() + body_len];
        msg[..SIGNATURE_LABEL.len()].copy_from_slice(SIGNATURE_LABEL);
        self.write_body(&mut msg[SIGNATURE_LABEL.len()..]);
        msg
    }

    /// Writes the encoding to the start of `out` and returns its length, or `None` if `out` is
    /// shorter than [`Certificate::encoded_len`].
    pub fn encode_into(&self, out: &mut [u8]) -> Option<usize> {
        let len = self.encoded_len();
        let out = out.get_mut(..len)?;
        self.write_body(out);
        out[len - SIGNATURE_LEN..].copy_from_slice(&self.signature);
        Some(len)
    }

    /// The encoding as a new vector.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.encoded_len()];
        self.encode_into(&mut out);
        out
    }

    /// Parses a certificate from the start of `bytes` and returns it with the number of bytes it
    /// took. Checks structure only: call [`Certificate::verify`] before trusting it.
    pub fn decode(bytes: &[u8]) -> Result<(Certificate, usize), CertError> {
        let fixed = bytes.get(..FIXED_LEN).ok_or(CertError::Truncated)?;
        if fixed[field::VERSION] != CERT_VERSION {
            return Err(CertError::BadVersion(fixed[field::VERSION]));
        }
        let flags = fixed[field::FLAGS];
        if flags & !(FLAG_ADMIN | FLAG_GRANT) != 0 || fixed[field::RESERVED] != 0 {
            return Err(CertError::BadFlags);
        }
        let name_len = usize::from(fixed[field::NAME_LEN]);
        let grant_len = if flags & FLAG_GRANT != 0 {
            GRANT_LEN
        } else {
            0
        };
        let total = FIXED_LEN + name_len + grant_len + SIGNATURE_LEN;
        let all = bytes.get(..total).ok_or(CertError::Truncated)?;
        let name = core::str::from_utf8(&all[field::NAME..field::NAME + name_len])
            .ok()
            .filter(|n| valid_member_name(n))
            .ok_or(CertError::BadName)?;
        let key = |at: usize| -> [u8; KEY_LEN] {
            let mut k = [0u8; KEY_LEN];
            k.copy_from_slice(&all[at..at + KEY_LEN]);
            k
        };
        let time = |at: usize| -> u64 {
            let mut t = [0u8; 8];
            t.copy_from_slice(&all[at..at + 8]);
            u64::from_le_bytes(t)
        };
        let name_end = field::NAME + name_len;
        let grant = match grant_len {
            0 => None,
            _ => Some(
                AddressGrant::read(&all[name_end..name_end + GRANT_LEN])
                    .ok_or(CertError::BadGrant)?,
            ),
        };
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(&all[total - SIGNATURE_LEN..]);
        let cert = Certificate {
            network: SigningPublicKey::from_bytes(key(field::NETWORK)),
            name: name.to_string(),
            static_key: PublicKey::from_bytes(key(field::STATIC_KEY)),
            signing_key: SigningPublicKey::from_bytes(key(field::SIGNING_KEY)),
            issued_at: time(field::ISSUED_AT),
            expires_at: time(field::EXPIRES_AT),
            admin: flags & FLAG_ADMIN != 0,
            grant,
            signature,
        };
        Ok((cert, total))
    }

    /// Accepts the certificate for `network` at `now_unix` (seconds): the right network, a valid
    /// network signature, and `now` inside the validity window (with [`CLOCK_SKEW_SECS`] of
    /// slack on the start). Cheap checks run before the signature.
    pub fn verify(&self, network: &NetworkId, now_unix: u64) -> Result<(), CertError> {
        if self.network != *network {
            return Err(CertError::WrongNetwork);
        }
        if self.expires_at <= self.issued_at {
            return Err(CertError::BadValidity);
        }
        if now_unix.saturating_add(CLOCK_SKEW_SECS) < self.issued_at {
            return Err(CertError::NotYetValid);
        }
        if now_unix >= self.expires_at {
            return Err(CertError::Expired);
        }
        if !network.verify(&self.signed_message(), &self.signature) {
            return Err(CertError::BadSignature);
        }
        Ok(())
    }

    /// Seconds of validity left at `now_unix` (0 when expired).
    pub fn remaining(&self, now_unix: u64) -> u64 {
        self.expires_at.saturating_sub(now_unix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StaticSecret;
    use proptest::prelude::*;

    fn network() -> NetworkSecret {
        NetworkSecret::from_seed([3; 32])
    }

    fn cert(name: &str) -> Certificate {
        let node = StaticSecret::from_bytes([5; 32]);
        Certificate::issue(
            &network(),
            name,
            node.public_key(),
            node.signing_key().public(),
            1_000,
            2_000,
            false,
        )
        .unwrap()
    }

    #[test]
    fn issued_certificate_round_trips_and_verifies_inside_its_window() {
        let c = cert("host-1");
        let bytes = c.encode();
        assert_eq!(bytes.len(), c.encoded_len());
        let (back, used) = Certificate::decode(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(back, c);
        let id = network().network_id();
        assert_eq!(back.verify(&id, 1_000), Ok(()));
        assert_eq!(back.verify(&id, 1_999), Ok(()));
        assert_eq!(back.verify(&id, 2_000), Err(CertError::Expired));
        assert_eq!(back.verify(&id, 1_000 - CLOCK_SKEW_SECS), Ok(()));
        assert_eq!(back.verify(&id, 600), Err(CertError::NotYetValid));
    }

    #[test]
    fn other_network_and_tampering_are_refused() {
        let c = cert("a");
        let other = NetworkSecret::from_seed([4; 32]).network_id();
        assert_eq!(c.verify(&other, 1_500), Err(CertError::WrongNetwork));
        let id = network().network_id();
        let bytes = c.encode();
        // Flip every byte that is not the network id (which fails earlier) in turn.
        for i in (0..bytes.len()).filter(|i| !(field::NETWORK..field::STATIC_KEY).contains(i)) {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            if let Ok((t, _)) = Certificate::decode(&b) {
                assert!(t.verify(&id, 1_500).is_err(), "flip at {i} still verified");
            }
        }
    }

    #[test]
    fn self_signed_certificate_with_the_right_network_id_is_refused() {
        let mut forged = cert("rogue");
        let rogue_network = NetworkSecret::from_seed([66; 32]);
        let mut c = Certificate::issue(
            &rogue_network,
            "rogue",
            forged.static_key,
            forged.signing_key,
            1_000,
            2_000,
            true,
        )
        .unwrap();
        c.network = network().network_id();
        assert_eq!(
            c.verify(&network().network_id(), 1_500),
            Err(CertError::BadSignature)
        );
        forged.admin = true;
        assert_eq!(
            forged.verify(&network().network_id(), 1_500),
            Err(CertError::BadSignature)
        );
    }

    #[test]
    fn names_are_checked_on_issue_and_decode() {
        let node = StaticSecret::from_bytes([5; 32]);
        let issue = |name: &str| {
            Certificate::issue(
                &network(),
                name,
                node.public_key(),
                node.signing_key().public(),
                1,
                2,
                false,
            )
        };
        for bad in ["", "-x", ".x", "a b", "ü", &"x".repeat(64)] {
            assert_eq!(issue(bad).unwrap_err(), CertError::BadName, "{bad:?}");
        }
        assert!(issue(&"x".repeat(63)).is_ok());
        let mut bytes = cert("abc").encode();
        bytes[field::NAME] = b' ';
        assert_eq!(Certificate::decode(&bytes).unwrap_err(), CertError::BadName);
    }

    #[test]
    fn decode_rejects_versions_flags_and_short_input() {
        let bytes = cert("abc").encode();
        for len in 0..bytes.len() {
            assert_eq!(
                Certificate::decode(&bytes[..len]).unwrap_err(),
                CertError::Truncated
            );
        }
        let mut b = bytes.clone();
        b[0] = 2;
        assert_eq!(
            Certificate::decode(&b).unwrap_err(),
            CertError::BadVersion(2)
        );
        let mut b = bytes.clone();
        b[1] = 0x80;
        assert_eq!(Certificate::decode(&b).unwrap_err(), CertError::BadFlags);
    }

    fn grant() -> AddressGrant {
        AddressGrant {
            subnet: (Ipv4Addr::new(10, 77, 0, 0), 16),
            host_prefix: 24,
            range: (Ipv4Addr::new(10, 77, 3, 0), 24),
            granted_at: 900,
            subnet6: Some(("fd77::".parse().unwrap(), 48)),
            range6: Some(("fd77:0:0:3::".parse().unwrap(), 64)),
        }
    }

    #[test]
    fn a_grant_round_trips_is_signed_and_is_refused_when_malformed() {
        let c = cert("granted")
            .with_grant(&network(), Some(grant()))
            .unwrap();
        let bytes = c.encode();
        assert_eq!(bytes.len(), CERT_MIN_LEN + "granted".len() - 1 + GRANT_LEN);
        let (back, used) = Certificate::decode(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(back.grant, Some(grant()));
        let id = network().network_id();
        assert_eq!(back.verify(&id, 1_500), Ok(()));
        // The grant is covered by the signature: move the range and the signature fails.
        let range_at = FIXED_LEN + "granted".len() + 8;
        let mut moved = bytes.clone();
        moved[range_at] = 4;
        let (t, _) = Certificate::decode(&moved).unwrap();
        assert_eq!(t.verify(&id, 1_500), Err(CertError::BadSignature));
        // A range outside the subnet does not decode.
        let mut outside = bytes.clone();
        outside[range_at - 1] = 78;
        assert_eq!(
            Certificate::decode(&outside).unwrap_err(),
            CertError::BadGrant
        );
        let mut bad = grant();
        bad.range6 = None;
        assert_eq!(
            cert("x").with_grant(&network(), Some(bad)).unwrap_err(),
            CertError::BadGrant
        );
        // Without IPv6 the v6 half must be zero.
        let mut v4_only = grant();
        v4_only.subnet6 = None;
        v4_only.range6 = None;
        let c = cert("v4").with_grant(&network(), Some(v4_only)).unwrap();
        assert_eq!(
            Certificate::decode(&c.encode()).unwrap().0.grant,
            Some(v4_only)
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok((c, used)) = Certificate::decode(&bytes) {
                prop_assert!(used <= bytes.len());
                prop_assert_eq!(c.encode(), bytes[..used].to_vec());
            }
        }
    }
}
