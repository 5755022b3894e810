//! Email addresses: which are accepted, and the one canonical form of each.
//!
//! # Rules (register)
//! - The `email_address` crate checks the RFC 5322/6531 grammar of an
//!   unquoted local part (dot-atom: letters of any script, digits and
//!   ``!#$%&'*+-/=?^_`{|}~``, dots not leading, trailing or doubled) and
//!   its 64-octet limit; display names (`Name <a@b.c>`) are refused.
//! - Quoted local parts (`"a b"@c.io`) and domain literals (`a@[1.2.3.4]`)
//!   are refused: legal, but no mail provider hands them out, and they are
//!   the usual vehicle of look-alike and injection tricks.
//! - The domain must be a host name (RFC 1035/5890): at least two labels,
//!   each 1 to 63 octets of letters (any script, for IDNs), digits and
//!   inner hyphens. So `x@example.com*` and `<x>@[example].com` are
//!   refused, though the crate's RFC 5322 `dot-atom` domain would take `*`.
//! - At most 254 characters in all (RFC 3696 errata), no U+0000.
//!
//! # Canonical form
//! The whole address in Unicode lower case (`str::to_lowercase`), computed
//! here once per request and stored beside the address: the unique index,
//! the login look-up and the login throttle all use it, so no two spellings
//! that find the same account count separately (PostgreSQL's `lower()`
//! depends on the collation and differs for letters such as `İ`). Redis
//! keys carry its SHA-256 digest, never the address: bounded size, no
//! personal data in Redis.

use email_address::{EmailAddress, Options};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// Longest accepted address, in characters.
pub const MAX_LEN: usize = 254;

/// Why an address is refused, for the `errors[]` message.
pub fn validate(email: &str) -> Result<(), &'static str> {
    if email.is_empty() || email.chars().count() > MAX_LEN {
        return Err("must be 1 to 254 characters");
    }
    if email.contains('\0') {
        return Err("may not contain U+0000");
    }
    let options = Options {
        minimum_sub_domains: 2,
        allow_domain_literal: false,
        allow_display_text: false,
        allow_long_local_parts: false,
    };
    if EmailAddress::parse_with_options(email, options).is_err() {
        return Err("is not an email address");
    }
    let (local, domain) = email.rsplit_once('@').unwrap_or(("", ""));
    if local.starts_with('"') {
        return Err("may not have a quoted local part");
    }
    if !is_host_name(domain) {
        return Err("needs a domain such as example.com");
    }
    Ok(())
}

/// Host name rules: two or more labels of letters, digits and inner hyphens.
fn is_host_name(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

/// The canonical form (see the module doc).
pub fn canonical(email: &str) -> String {
    email.to_lowercase()
}

/// Hex SHA-256 of the canonical form: what Redis keys carry.
pub fn digest(canonical: &str) -> String {
    let d = Sha256::digest(canonical.as_bytes());
    let mut out = String::with_capacity(64);
    for b in d {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_addresses_are_accepted() {
        for ok in ["a@b.io", "First.Last+tag@Example.COM", "o'neil@x-y.example.org", "josé@bücher.de"] {
            assert_eq!(validate(ok), Ok(()), "{ok:?}");
        }
        let long = format!("{}@{}.{}.{}.io", "a".repeat(64), "b".repeat(63), "c".repeat(63), "d".repeat(58));
        assert_eq!(long.chars().count(), 254);
        assert_eq!(validate(&long), Ok(()));
        assert!(validate(&format!("a{long}")).is_err());
    }

    #[test]
    fn the_schemathesis_findings_and_other_tricks_are_refused() {
        for bad in [
            "",
            "plain",
            "a@b",
            "@b.io",
            "a@@b.io",
            "a b@c.io",
            "a@b..io",
            "a@.io",
            "x@example.com*",
            "<x>@[example].com",
            "x@exa*mple.com",
            "x@[127.0.0.1]",
            "\"a b\"@c.io",
            "Name <a@b.io>",
            "a@-b.io",
            "a\0@b.io",
            ".a@b.io",
        ] {
            assert!(validate(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn every_spelling_of_an_address_has_one_canonical_form_and_digest() {
        assert_eq!(canonical("İnfo@Example.COM"), canonical("i̇nfo@example.com"));
        assert_eq!(digest(&canonical("A@B.io")), digest(&canonical("a@b.IO")));
        assert_eq!(digest("x").len(), 64);
    }
}
