//! Which data-path AEAD a session uses: this node's policy and the negotiation rule.
//!
//! Each side states the ciphers it accepts, most preferred first, inside the encrypted and
//! authenticated handshake payloads (wire: `HandshakeExtensions`), so an attacker on the path
//! cannot change an offer or a choice without breaking the handshake: no downgrade. The responder
//! chooses: both sides' first choice when they agree (AES-256-GCM between two nodes with AES
//! hardware), otherwise ChaCha20-Poly1305 when both accept it (fast everywhere), otherwise the
//! initiator's most preferred cipher the responder accepts. A node configured for one cipher only
//! accepts only that one, and refuses a peer that cannot speak it. A peer that sends no offer
//! predates negotiation and speaks ChaCha20-Poly1305 only.

use meshd_crypto::Cipher;

/// What the configuration asks for (`cipher = "auto" | "aes-256-gcm" | "chacha20-poly1305"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CipherPreference {
    /// AES-256-GCM with peers that have AES hardware too, when this CPU has it; otherwise
    /// ChaCha20-Poly1305 (both are accepted).
    #[default]
    Auto,
    /// This cipher only: peers that cannot speak it are refused.
    Only(Cipher),
}

impl CipherPreference {
    /// The preference a config value names, if any.
    pub fn parse(text: &str) -> Option<CipherPreference> {
        match text {
            "auto" => Some(CipherPreference::Auto),
            _ => Cipher::ALL
                .into_iter()
                .find(|c| c.as_str() == text)
                .map(CipherPreference::Only),
        }
    }
}

/// The ciphers this node accepts, most preferred first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CipherPolicy {
    accepted: Vec<Cipher>,
}

impl CipherPolicy {
    /// The policy for `preference` on a CPU with (`aes_hardware`) or without AES instructions;
    /// the io layer detects that (`Cipher::aes_hardware`), the core never probes the machine.
    pub fn new(preference: CipherPreference, aes_hardware: bool) -> CipherPolicy {
        let accepted = match preference {
            CipherPreference::Only(cipher) => vec![cipher],
            CipherPreference::Auto if aes_hardware => {
                vec![Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305]
            }
            CipherPreference::Auto => vec![Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm],
        };
        CipherPolicy { accepted }
    }

    /// The ids this node offers in an initiation, most preferred first.
    pub fn offer(&self) -> Vec<u8> {
        self.accepted.iter().map(|c| c.id()).collect()
    }

    /// The accepted ciphers, most preferred first.
    pub fn accepted(&self) -> impl Iterator<Item = Cipher> + '_ {
        self.accepted.iter().copied()
    }

    pub fn accepts(&self, cipher: Cipher) -> bool {
        self.accepted.contains(&cipher)
    }

    /// As responder: the cipher for an initiator that offered `offered` (ids, most preferred
    /// first; `None` when it sent no offer). `None` when the two have no cipher in common.
    pub fn choose(&self, offered: Option<&[u8]>) -> Option<Cipher> {
        let theirs: Vec<Cipher> = match offered {
            Some(ids) => ids.iter().filter_map(|&id| Cipher::from_id(id)).collect(),
            None => vec![Cipher::ChaCha20Poly1305],
        };
        let both = |c: &Cipher| self.accepts(*c) && theirs.contains(c);
        match (self.accepted.first(), theirs.first()) {
            (Some(ours), Some(first)) if ours == first => return Some(*ours),
            _ => {}
        }
        if both(&Cipher::ChaCha20Poly1305) {
            return Some(Cipher::ChaCha20Poly1305);
        }
        theirs.into_iter().find(|c| self.accepts(*c))
    }

    /// As initiator: whether the responder's answer (`None`: it sent none, so it predates
    /// negotiation) names a cipher this node offered; which one.
    pub fn accept_choice(&self, chosen: Option<&[u8]>) -> Option<Cipher> {
        let cipher = match chosen {
            Some([id]) => Cipher::from_id(*id)?,
            Some(_) => return None,
            None => Cipher::ChaCha20Poly1305,
        };
        self.accepts(cipher).then_some(cipher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AES: Cipher = Cipher::Aes256Gcm;
    const CHACHA: Cipher = Cipher::ChaCha20Poly1305;

    fn negotiate(initiator: &CipherPolicy, responder: &CipherPolicy) -> Option<Cipher> {
        let offer = initiator.offer();
        let chosen = responder.choose(Some(&offer))?;
        initiator.accept_choice(Some(&[chosen.id()]))
    }

    #[test]
    fn aes_only_when_both_sides_have_the_hardware() {
        let hw = CipherPolicy::new(CipherPreference::Auto, true);
        let soft = CipherPolicy::new(CipherPreference::Auto, false);
        assert_eq!(negotiate(&hw, &hw), Some(AES));
        assert_eq!(negotiate(&hw, &soft), Some(CHACHA));
        assert_eq!(negotiate(&soft, &hw), Some(CHACHA));
        assert_eq!(negotiate(&soft, &soft), Some(CHACHA));
    }

    #[test]
    fn a_node_for_one_cipher_gets_it_or_refuses() {
        let aes_only = CipherPolicy::new(CipherPreference::Only(AES), false);
        let chacha_only = CipherPolicy::new(CipherPreference::Only(CHACHA), true);
        let soft = CipherPolicy::new(CipherPreference::Auto, false);
        assert_eq!(negotiate(&aes_only, &soft), Some(AES));
        assert_eq!(negotiate(&soft, &aes_only), Some(AES));
        assert_eq!(
            negotiate(
                &chacha_only,
                &CipherPolicy::new(CipherPreference::Auto, true)
            ),
            Some(CHACHA)
        );
        assert_eq!(negotiate(&aes_only, &chacha_only), None);
        assert_eq!(negotiate(&chacha_only, &aes_only), None);
    }

    #[test]
    fn a_peer_without_an_offer_speaks_chacha_only() {
        let hw = CipherPolicy::new(CipherPreference::Auto, true);
        assert_eq!(hw.choose(None), Some(CHACHA));
        assert_eq!(hw.accept_choice(None), Some(CHACHA));
        let aes_only = CipherPolicy::new(CipherPreference::Only(AES), true);
        assert_eq!(aes_only.choose(None), None);
        assert_eq!(aes_only.accept_choice(None), None);
    }

    #[test]
    fn unknown_ids_and_malformed_choices_are_refused() {
        let hw = CipherPolicy::new(CipherPreference::Auto, true);
        assert_eq!(hw.choose(Some(&[99, 2])), Some(AES));
        assert_eq!(hw.choose(Some(&[99])), None);
        assert_eq!(hw.accept_choice(Some(&[99])), None);
        assert_eq!(hw.accept_choice(Some(&[1, 2])), None);
        let chacha_only = CipherPolicy::new(CipherPreference::Only(CHACHA), true);
        assert_eq!(
            chacha_only.accept_choice(Some(&[AES.id()])),
            None,
            "a choice we never offered"
        );
    }

    #[test]
    fn config_values() {
        assert_eq!(
            CipherPreference::parse("auto"),
            Some(CipherPreference::Auto)
        );
        assert_eq!(
            CipherPreference::parse("aes-256-gcm"),
            Some(CipherPreference::Only(AES))
        );
        assert_eq!(
            CipherPreference::parse("chacha20-poly1305"),
            Some(CipherPreference::Only(CHACHA))
        );
        assert_eq!(CipherPreference::parse("aes"), None);
    }
}
