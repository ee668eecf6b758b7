//! The responder's side of cookies: the rotating cookie secret, the mac2 check of an initiation
//! and the cookie reply that answers one while the node is under load (the limiter decides when
//! that is). The initiator's side is a peer's stored cookie (`Peer::cookie`), which its
//! initiations are MACed under while [`cookie_is_fresh`] says so.
//!
//! Invariants: the secret is replaced every [`COOKIE_SECRET_LIFETIME`], so a cookie proves that
//! its holder received at its address within the last two rotations at most; a cookie is bound to
//! the source IP and port; nothing here does DH work or walks a table; an all-zero mac2 (what
//! nodes without cookies send) is refused without computing anything; the secret is made only
//! when first needed, so a node that is never under load draws nothing from its generator.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshd_crypto::{
    compute_mac2, cookie_key, seal_cookie, verify_mac2, Cookie, CookieSecret, CoreRng, PublicKey,
    COOKIE_NONCE_LEN,
};
use rand_core::RngCore;

use crate::wire::{CookieReply, COOKIE_REPLY_LEN, MAC_LEN};

/// How long a cookie secret is used before it is replaced (WireGuard's two minutes).
pub const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(120);

/// Whether a cookie received at `received` may still be used for mac2 at `now`. Past this the
/// responder has rotated its secret at least once, so the cookie would only earn another reply.
pub fn cookie_is_fresh(received: Instant, now: Instant) -> bool {
    now.saturating_duration_since(received) < COOKIE_SECRET_LIFETIME
}

/// mac2 for a message to a peer whose stored cookie is `cookie` (all zero without a fresh one).
pub fn mac2_for(cookie: Option<(Cookie, Instant)>, now: Instant, covered: &[u8]) -> [u8; MAC_LEN] {
    match cookie {
        Some((cookie, received)) if cookie_is_fresh(received, now) => {
            compute_mac2(&cookie, covered)
        }
        _ => [0; MAC_LEN],
    }
}

/// The cookie secret and the key our cookie replies are sealed with.
pub struct CookieIssuer {
    secret: Option<(CookieSecret, Instant)>,
    reply_key: [u8; 32],
}

/// A source address as the cookie covers it: the IP as 16 bytes (IPv4 mapped) and the port.
fn source_bytes(source: SocketAddr) -> [u8; 18] {
    let ip = match source {
        SocketAddr::V4(v4) => v4.ip().to_ipv6_mapped(),
        SocketAddr::V6(v6) => *v6.ip(),
    };
    let mut bytes = [0u8; 18];
    bytes[..16].copy_from_slice(&ip.octets());
    bytes[16..].copy_from_slice(&source.port().to_le_bytes());
    bytes
}

impl CookieIssuer {
    /// The issuer of a node whose public key is `ours`.
    pub fn new(ours: &PublicKey) -> CookieIssuer {
        CookieIssuer {
            secret: None,
            reply_key: cookie_key(ours),
        }
    }

    /// The cookie of `source` under the current secret, rotating the secret when it is due.
    fn cookie(&mut self, now: Instant, rng: &mut CoreRng, source: SocketAddr) -> Cookie {
        let due = self
            .secret
            .as_ref()
            .is_none_or(|(_, born)| now.saturating_duration_since(*born) >= COOKIE_SECRET_LIFETIME);
        if due {
            self.secret = Some((CookieSecret::generate(rng), now));
        }
        let (secret, _) = self.secret.as_ref().expect("made above");
        secret.cookie(&source_bytes(source))
    }

    /// Whether an initiation from `source` carries a valid mac2 over `covered`.
    pub fn mac2_valid(
        &mut self,
        now: Instant,
        rng: &mut CoreRng,
        source: SocketAddr,
        covered: &[u8],
        mac2: &[u8],
    ) -> bool {
        if mac2.iter().all(|&b| b == 0) {
            return false;
        }
        let cookie = self.cookie(now, rng, source);
        verify_mac2(&cookie, covered, mac2)
    }

    /// Writes the cookie reply to the initiation from `source` with `sender_index` and `mac1`
    /// into `out` (exactly [`COOKIE_REPLY_LEN`] bytes).
    pub fn write_reply(
        &mut self,
        now: Instant,
        rng: &mut CoreRng,
        source: SocketAddr,
        sender_index: u32,
        mac1: &[u8],
        out: &mut [u8],
    ) {
        let cookie = self.cookie(now, rng, source);
        let mut nonce = [0u8; COOKIE_NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let sealed = seal_cookie(&self.reply_key, &nonce, &cookie, mac1);
        let mut reply =
            CookieReply::new_emit(&mut out[..COOKIE_REPLY_LEN]).expect("sized by the caller");
        reply.set_receiver_index(sender_index);
        reply.set_nonce(&nonce);
        reply.set_sealed_cookie(&sealed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshd_crypto::{open_cookie, StaticSecret};

    #[test]
    fn a_reply_carries_the_cookie_that_makes_mac2_valid_for_that_source_only() {
        let t0 = Instant::now();
        let ours = StaticSecret::from_bytes([3; 32]).public_key();
        let mut issuer = CookieIssuer::new(&ours);
        let mut rng = CoreRng::from_seed([1; 32]);
        let from: SocketAddr = "192.0.2.7:4000".parse().unwrap();
        let mac1 = [0x5a; 16];
        let mut out = [0u8; COOKIE_REPLY_LEN];
        issuer.write_reply(t0, &mut rng, from, 77, &mac1, &mut out);
        let reply = CookieReply::new_checked(&out[..]).unwrap();
        assert_eq!(reply.receiver_index(), 77);
        let cookie = open_cookie(
            &cookie_key(&ours),
            reply.nonce(),
            reply.sealed_cookie(),
            &mac1,
        )
        .unwrap();
        let message = b"an initiation up to mac2";
        let mac2 = mac2_for(Some((cookie, t0)), t0, message);
        assert!(issuer.mac2_valid(t0, &mut rng, from, message, &mac2));
        let other_port: SocketAddr = "192.0.2.7:4001".parse().unwrap();
        assert!(!issuer.mac2_valid(t0, &mut rng, other_port, message, &mac2));
        assert!(!issuer.mac2_valid(t0, &mut rng, from, message, &[0; MAC_LEN]));
        // After a rotation the old cookie no longer counts, and the initiator stops using it.
        let later = t0 + COOKIE_SECRET_LIFETIME;
        assert!(!issuer.mac2_valid(later, &mut rng, from, message, &mac2));
        assert_eq!(mac2_for(Some((cookie, t0)), later, message), [0; MAC_LEN]);
    }
}
