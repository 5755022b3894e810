//! JWT parsing and verification: any text as a bearer token. Must never
//! panic, and nothing but a token signed with the key may verify.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::Duration;
use tollgate::auth::token::{TokenType, Tokens};

fn tokens() -> &'static Tokens {
    static T: OnceLock<Tokens> = OnceLock::new();
    T.get_or_init(|| Tokens::new(b"fuzz-secret-fuzz-secret-fuzz-secret", Duration::from_secs(900), Duration::from_secs(900)))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    assert!(tokens().verify(text, TokenType::Access).is_err(), "an unsigned input verified: {text:?}");
    let _ = tokens().verify(text, TokenType::Refresh);
});
