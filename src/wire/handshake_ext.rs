//! Extensions carried after the certificate inside the (encrypted, authenticated) payloads of
//! the data-path handshake: the initiator's cipher offer and the responder's choice.
//!
//! Layout: a sequence of `type (1) | length (1) | value (length)`; a receiver skips types it does
//! not know, so later versions can add extensions. Type 1 (`ciphers`): in an initiation, the
//! cipher ids the initiator accepts, most preferred first (1 to [`MAX_OFFERED_CIPHERS`]); in a
//! response, exactly one id, the one chosen. Invariant: [`HandshakeExtensions::new_checked`]
//! accepts only whole entries, so every accessor after it reads inside the buffer.

use super::WireError;

/// Extension type of the cipher offer or choice.
pub const EXT_CIPHERS: u8 = 1;
/// Most cipher ids an offer may carry.
pub const MAX_OFFERED_CIPHERS: usize = 8;

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
        let mut rest = self.bytes;
        while let [kind, len, tail @ ..] = rest {
            let (value, next) = tail.split_at(usize::from(*len));
            if *kind == EXT_CIPHERS {
                return Some(value);
            }
            rest = next;
        }
        None
    }
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
    fn emit_caps_the_offer() {
        let mut bytes = Vec::new();
        emit_cipher_extension(&mut bytes, &[1; 20]);
        assert_eq!(bytes.len(), 2 + MAX_OFFERED_CIPHERS);
        assert!(HandshakeExtensions::new_checked(&bytes).is_ok());
    }
}
