//! Extensions carried after the certificate inside the (encrypted, authenticated) payloads of
//! the data-path handshake: the initiator's cipher offer and the responder's choice.
//!
//! Layout: a sequence of `type (1) | length (1) | value (length)`; a receiver skips types it does
//! not know, so later versions can add extensions. Type 1 (`ciphers`): in an initiation, the
//! cipher ids the initiator accepts, most preferred first (1 to [`MAX_OFFERED_CIPHERS`]); in a
//! response, exactly one id, the one chosen. Type 2 (`features`), in both messages: 1 to
//! [`MAX_FEATURE_BYTES`] bytes of flags, what the sender accepts on the data path (bit 0 of byte 0:
//! [`FEATURE_PARTIAL_CHECKSUM`]); unknown bits are ignored, and a sender that omits the entry
//! accepts none. Both entries sit inside the Noise payload, so they are as authenticated as the
//! certificate: an attacker cannot strip or change them. Invariant: [`HandshakeExtensions::new_checked`]
//! accepts only whole entries, so every accessor after it reads inside the buffer.

use super::WireError;

/// Extension type of the cipher offer or choice.
pub const EXT_CIPHERS: u8 = 1;
/// Most cipher ids an offer may carry.
pub const MAX_OFFERED_CIPHERS: usize = 8;
/// Extension type of the data-path features the sender accepts.
pub const EXT_FEATURES: u8 = 2;
/// Longest features entry (room for later flags; only byte 0 is read today).
pub const MAX_FEATURE_BYTES: usize = 8;
/// Feature flag: the sender accepts Ethernet frames whose L4 checksum is left partial
/// (payload kind 7, `EthernetPartialChecksum`).
pub const FEATURE_PARTIAL_CHECKSUM: u8 = 0x01;

/// A checked view over the extension bytes that follow the certificate.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeExtensions<'a> {
    bytes: &'a [u8],
}

impl<'a> HandshakeExtensions<'a> {
    /// Checks that `bytes` is a sequence of whole entries and that a cipher entry, if present,
    /// holds 1 to [`MAX_OFFERED_CIPHERS`] ids.
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut rest = bytes;
        while let [kind, len, tail @ ..] = rest {
            let len = usize::from(*len);
            if tail.len() < len {
                return Err(WireError::Truncated);
            }
            if *kind == EXT_CIPHERS && !(1..=MAX_OFFERED_CIPHERS).contains(&len) {
                return Err(WireError::BadLength);
            }
            if *kind == EXT_FEATURES && !(1..=MAX_FEATURE_BYTES).contains(&len) {
                return Err(WireError::BadLength);
            }
            rest = &tail[len..];
        }
        if !rest.is_empty() {
            return Err(WireError::Truncated);
        }
        Ok(HandshakeExtensions { bytes })
    }

    /// The value of the first cipher entry: offered ids in preference order, or the one chosen.
    /// `None` when the peer sent none (a node that predates cipher negotiation).
    pub fn ciphers(&self) -> Option<&'a [u8]> {
        self.first(EXT_CIPHERS)
    }

    /// The first byte of the first features entry: the data-path features the sender accepts
    /// (0 when it sent none, as nodes that predate the entry do).
    pub fn features(&self) -> u8 {
        self.first(EXT_FEATURES).map_or(0, |value| value[0])
    }

    /// The value of the first entry of type `wanted`.
    fn first(&self, wanted: u8) -> Option<&'a [u8]> {
        let mut rest = self.bytes;
        while let [kind, len, tail @ ..] = rest {
            let (value, next) = tail.split_at(usize::from(*len));
            if *kind == wanted {
                return Some(value);
            }
            rest = next;
        }
        None
    }
}

/// Appends a features entry (one byte of flags) to `out`.
pub fn emit_features_extension(out: &mut Vec<u8>, features: u8) {
    out.extend_from_slice(&[EXT_FEATURES, 1, features]);
}

/// Appends a cipher entry holding `ids` (at most [`MAX_OFFERED_CIPHERS`]) to `out`.
pub fn emit_cipher_extension(out: &mut Vec<u8>, ids: &[u8]) {
    let ids = &ids[..ids.len().min(MAX_OFFERED_CIPHERS)];
    out.push(EXT_CIPHERS);
    out.push(ids.len() as u8);
    out.extend_from_slice(ids);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_extensions_are_valid_and_offer_nothing() {
        let ext = HandshakeExtensions::new_checked(&[]).unwrap();
        assert_eq!(ext.ciphers(), None);
    }

    #[test]
    fn a_cipher_offer_round_trips_and_unknown_entries_are_skipped() {
        let mut bytes = vec![9, 3, 0xaa, 0xbb, 0xcc];
        emit_cipher_extension(&mut bytes, &[2, 1]);
        bytes.extend_from_slice(&[7, 0]);
        let ext = HandshakeExtensions::new_checked(&bytes).unwrap();
        assert_eq!(ext.ciphers(), Some(&[2u8, 1][..]));
    }

    #[test]
    fn every_truncation_is_refused() {
        let mut bytes = Vec::new();
        emit_cipher_extension(&mut bytes, &[2, 1]);
        bytes.extend_from_slice(&[9, 2, 0, 0]);
        for cut in 1..bytes.len() {
            if cut == 4 {
                continue; // a whole first entry alone is valid
            }
            assert!(
                HandshakeExtensions::new_checked(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn an_empty_or_oversized_cipher_entry_is_refused() {
        assert_eq!(
            HandshakeExtensions::new_checked(&[EXT_CIPHERS, 0]).unwrap_err(),
            WireError::BadLength
        );
        let mut long = vec![EXT_CIPHERS, 9];
        long.extend_from_slice(&[1; 9]);
        assert_eq!(
            HandshakeExtensions::new_checked(&long).unwrap_err(),
            WireError::BadLength
        );
    }

    #[test]
    fn features_round_trip_beside_the_ciphers_and_default_to_none() {
        let mut bytes = Vec::new();
        emit_cipher_extension(&mut bytes, &[2]);
        assert_eq!(
            HandshakeExtensions::new_checked(&bytes).unwrap().features(),
            0
        );
        emit_features_extension(&mut bytes, FEATURE_PARTIAL_CHECKSUM);
        let ext = HandshakeExtensions::new_checked(&bytes).unwrap();
        assert_eq!(ext.features(), FEATURE_PARTIAL_CHECKSUM);
        assert_eq!(ext.ciphers(), Some(&[2u8][..]));
        // Longer entries (later flags) are accepted; only byte 0 is read.
        let longer = [EXT_FEATURES, 3, 0x81, 0xff, 0];
        assert_eq!(
            HandshakeExtensions::new_checked(&longer)
                .unwrap()
                .features(),
            0x81
        );
        for bad in [
            &[EXT_FEATURES, 0][..],
            &[EXT_FEATURES, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert_eq!(
                HandshakeExtensions::new_checked(bad).unwrap_err(),
                WireError::BadLength
            );
        }
    }

    #[test]
    fn emit_caps_the_offer() {
        let mut bytes = Vec::new();
        emit_cipher_extension(&mut bytes, &[1; 20]);
        assert_eq!(bytes.len(), 2 + MAX_OFFERED_CIPHERS);
        assert!(HandshakeExtensions::new_checked(&bytes).is_ok());
    }
}
