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
//! issued_at(8) expires_at(8) name(name_len) signature(64).

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
pub const CERT_MAX_LEN: usize = FIXED_LEN + MAX_NAME_LEN + SIGNATURE_LEN;
/// Clock skew tolerated on `issued_at`, in seconds.
pub const CLOCK_SKEW_SECS: u64 = 300;
/// Domain label in front of the signed bytes.
const SIGNATURE_LABEL: &[u8] = b"meshd v1 certificate\0";
const FLAG_ADMIN: u8 = 1;

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
            signature: [0; SIGNATURE_LEN],
        };
        cert.signature = network.sign(&cert.signed_message());
        Ok(cert)
    }

    /// Bytes of the encoding.
    pub fn encoded_len(&self) -> usize {
        FIXED_LEN + self.name.len() + SIGNATURE_LEN
    }

    fn write_body(&self, out: &mut [u8]) {
        out[field::VERSION] = CERT_VERSION;
        out[field::FLAGS] = if self.admin { FLAG_ADMIN } else { 0 };
        out[field::NAME_LEN] = self.name.len() as u8;
        out[field::RESERVED] = 0;
        out[field::NETWORK..field::STATIC_KEY].copy_from_slice(self.network.as_bytes());
        out[field::STATIC_KEY..field::SIGNING_KEY].copy_from_slice(self.static_key.as_bytes());
        out[field::SIGNING_KEY..field::ISSUED_AT].copy_from_slice(self.signing_key.as_bytes());
        out[field::ISSUED_AT..field::EXPIRES_AT].copy_from_slice(&self.issued_at.to_le_bytes());
        out[field::EXPIRES_AT..field::NAME].copy_from_slice(&self.expires_at.to_le_bytes());
        out[field::NAME..field::NAME + self.name.len()].copy_from_slice(self.name.as_bytes());
    }

    fn signed_message(&self) -> Vec<u8> {
        let body_len = FIXED_LEN + self.name.len();
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
        if flags & !FLAG_ADMIN != 0 || fixed[field::RESERVED] != 0 {
            return Err(CertError::BadFlags);
        }
        let name_len = usize::from(fixed[field::NAME_LEN]);
        let total = FIXED_LEN + name_len + SIGNATURE_LEN;
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
