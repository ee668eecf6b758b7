//! Invitation token parser: `InviteToken::parse` on arbitrary text (the input read as UTF-8, and
//! the same text behind a valid prefix so the fuzzer reaches the base64 and byte layers at once).
//! Invariants: no panic; every error has a message; whatever parses re-encodes to a single word of
//! base64url behind the prefix that parses back to the same token.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshd::wire::{InviteToken, MAX_TOKEN_CHARS, MAX_TOKEN_ENDPOINTS, TOKEN_PREFIX};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    check(&text);
    check(&format!("{TOKEN_PREFIX}{text}"));
});

fn check(text: &str) {
    match InviteToken::parse(text) {
        Ok(token) => {
            assert!(!token.endpoints().is_empty());
            assert!(token.endpoints().len() <= MAX_TOKEN_ENDPOINTS);
            let encoded = token.encode();
            assert!(encoded.starts_with(TOKEN_PREFIX));
            assert!(encoded.len() <= MAX_TOKEN_CHARS);
            assert!(encoded[TOKEN_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            let again = InviteToken::parse(&encoded).expect("an encoded token parses");
            assert_eq!(again, token);
            assert_eq!(again.id(), token.secret().id());
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}
