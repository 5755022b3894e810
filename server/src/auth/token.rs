//! JWTs: HS256 only, algorithm pinned, `typ` checked, keys decoded once.
//!
//! A valid signature proves only that we issued the token, not that it is
//! still wanted: a signature cannot be taken back. That is why every
//! authenticated request also goes through `auth::revocation`, which knows
//! about bans, logouts and refresh-token reuse that happened after issue.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a token is for. An access token is never accepted as a refresh token,
/// nor the other way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    /// Bearer token of API calls.
    Access,
    /// Presented once to `/auth/refresh`.
    Refresh,
}

pub use crate::db::users::Role;

/// The claims of API.md ("Tokens"); nothing else is accepted.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Session id.
    pub sid: String,
    /// Token id.
    pub jti: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Access or refresh.
    pub typ: TokenType,
    /// Role at issue.
    pub role: Role,
}

/// Who a verified token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// User id.
    pub user_id: i64,
    /// Session id: the token's place on its user's not-before clock. For
    /// an external provider's token, which has no session of ours, its
    /// `iat` (see `auth::revocation`).
    pub session_id: i64,
    /// Role.
    pub role: Role,
    /// Token id.
    pub jti: String,
    /// Expiry (Unix seconds).
    pub exp: i64,
    /// For an external provider's token: the key its logout is recorded
    /// under (`auth::external::token_key`). None for our own tokens.
    pub external: Option<Box<str>>,
}

/// The body of a login or refresh answer (OAuth 2.0 names).
#[derive(Debug, Serialize)]
pub struct TokenPair {
    /// Access JWT.
    pub access_token: String,
    /// Refresh JWT.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Access token lifetime in seconds.
    pub expires_in: u64,
}

/// Signing and verification keys, made once.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    access_ttl: Duration,
    refresh_ttl: Duration,
    verified: moka::sync::Cache<String, Arc<Principal>>,
}

/// Most access tokens remembered as verified (~0.5 KiB each).
const VERIFIED_CAPACITY: u64 = 10_000;

/// A fresh random token id (128 bits, hex).
pub fn new_jti() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Now, in Unix seconds (the clock of `iat`, `exp` and `nbf`).
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Tokens {
    /// Keys from the HS256 secret.
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "iat", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl,
            refresh_ttl,
            verified: moka::sync::Cache::builder().max_capacity(VERIFIED_CAPACITY).time_to_live(access_ttl).build(),
        }
    }

    fn sign(&self, uid: i64, sid: i64, role: Role, typ: TokenType, jti: String, ttl: Duration) -> String {
        let iat = unix_now();
        let claims =
            Claims { sub: uid.to_string(), sid: sid.to_string(), jti, iat, exp: iat + ttl.as_secs() as i64, typ, role };
        // HS256 signing of a struct that always serializes cannot fail.
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .unwrap_or_else(|e| panic!("signing a JWT failed: {e}"))
    }

    /// An access token and a refresh token whose id is `refresh_jti`, for
    /// a session that ends at `session_end` (Unix seconds). Neither token
    /// outlives its session: once the session has expired no token of it
    /// verifies, so nothing has to remember that session's revocation after
    /// that (the Redis rebuild skips expired sessions).
    pub fn issue(&self, uid: i64, sid: i64, role: Role, refresh_jti: String, session_end: i64) -> TokenPair {
        let left = Duration::from_secs(session_end.saturating_sub(unix_now()).max(0) as u64);
        let access_ttl = self.access_ttl.min(left);
        TokenPair {
            access_token: self.sign(uid, sid, role, TokenType::Access, new_jti(), access_ttl),
            refresh_token: self.sign(uid, sid, role, TokenType::Refresh, refresh_jti, self.refresh_ttl.min(left)),
            token_type: "Bearer",
            expires_in: access_ttl.as_secs(),
        }
    }

    /// Verifies signature, algorithm, expiry, claims and type. The error is a
    /// reason for the debug log; every failure is the same 401 outside.
    pub fn verify(&self, token: &str, expected: TokenType) -> Result<Principal, &'static str> {
        if token.len() > 4096 {
            return Err("token too long");
        }
        let data = decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature => "expired",
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::InvalidAlgorithm => "algorithm not allowed",
                _ => "malformed token",
            }
        })?;
        let c = data.claims;
        // `exp` is the first second the token is no longer valid (the
        // library accepts the second itself): a token never outlives the
        // session it was capped to.
        if c.exp <= unix_now() {
            return Err("expired");
        }
        if c.typ != expected {
            return Err("wrong token type");
        }
        let user_id = c.sub.parse::<i64>().map_err(|_| "bad sub")?;
        let session_id = c.sid.parse::<i64>().map_err(|_| "bad sid")?;
        Ok(Principal { user_id, session_id, role: c.role, jti: c.jti, exp: c.exp, external: None })
    }

    /// [`Tokens::verify`] for access tokens, remembering tokens that
    /// verified. A verification costs ~47k instructions (base64, two JSON
    /// parses, HMAC-SHA256), the largest CPU cost of a cached request; its
    /// result for a given token text never changes, so a hit only re-checks
    /// `exp`. Only tokens that verified are ever stored, keyed by their
    /// full text, so a forged token cannot ride on a cached one. Revocation
    /// is not cached: it is checked on every request after this.
    pub fn verify_access(&self, token: &str) -> Result<Arc<Principal>, &'static str> {
        if let Some(hit) = self.remembered(token) {
            return hit;
        }
        let p = Arc::new(self.verify(token, TokenType::Access)?);
        self.remember(token, Arc::clone(&p));
        Ok(p)
    }

    /// A token verified before (ours or an external provider's), unless it
    /// has expired since; None when it was never verified.
    pub fn remembered(&self, token: &str) -> Option<Result<Arc<Principal>, &'static str>> {
        let p = self.verified.get(token)?;
        if p.exp <= unix_now() {
            self.verified.invalidate(token);
            return Some(Err("expired"));
        }
        Some(Ok(p))
    }

    /// Remembers a token that verified (see [`Tokens::verify_access`]).
    pub fn remember(&self, token: &str, p: Arc<Principal>) {
        self.verified.insert(token.to_owned(), p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(b"test-secret-test-secret-test-secret", Duration::from_secs(60), Duration::from_secs(600))
    }

    #[test]
    fn issued_tokens_verify_only_as_their_own_type() {
        let t = tokens();
        let pair = t.issue(7, 42, Role::Admin, "r1".into(), unix_now() + 600);
        let p = t.verify(&pair.access_token, TokenType::Access).expect("access verifies");
        assert_eq!((p.user_id, p.session_id, p.role), (7, 42, Role::Admin));
        assert_eq!(t.verify(&pair.access_token, TokenType::Refresh), Err("wrong token type"));
        let r = t.verify(&pair.refresh_token, TokenType::Refresh).expect("refresh verifies");
        assert_eq!(r.jti, "r1");
        assert_eq!(t.verify(&pair.refresh_token, TokenType::Access), Err("wrong token type"));
    }

    #[test]
    fn another_key_or_alg_none_is_refused() {
        let pair = tokens().issue(1, 1, Role::User, "x".into(), unix_now() + 600);
        let other = Tokens::new(b"another-secret-another-secret-xx", Duration::from_secs(60), Duration::from_secs(60));
        assert_eq!(other.verify(&pair.access_token, TokenType::Access), Err("bad signature"));
        // Same payload, header {"alg":"none"}, empty signature.
        let payload = pair.access_token.split('.').nth(1).expect("payload");
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(tokens().verify(&none, TokenType::Access).is_err());
    }

    #[test]
    fn cached_verification_still_refuses_expired_and_forged_tokens() {
        let t = Tokens::new(b"k-k-k-k-k-k-k-k-k-k-k-k-k-k-k-k-k", Duration::from_secs(1), Duration::from_secs(1));
        let pair = t.issue(1, 2, Role::User, "x".into(), unix_now() + 600);
        assert_eq!(t.verify_access(&pair.access_token).map(|p| p.session_id), Ok(2));
        assert_eq!(t.verify_access(&pair.access_token).map(|p| p.session_id), Ok(2), "from the cache");
        let mut forged = pair.access_token.clone();
        forged.push('A');
        assert!(t.verify_access(&forged).is_err());
        assert!(t.verify_access(&pair.refresh_token).is_err(), "refresh tokens are not access tokens");
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(t.verify_access(&pair.access_token), Err("expired"));
    }

    #[test]
    fn no_token_outlives_its_session() {
        let t = tokens(); // access 60 s, refresh 600 s
        let end = unix_now() + 5;
        let pair = t.issue(1, 1, Role::User, "x".into(), end);
        assert_eq!(pair.expires_in, 5);
        let exp = |tok: &str, typ| t.verify(tok, typ).expect("verifies").exp;
        assert!(exp(&pair.access_token, TokenType::Access) <= end);
        assert!(exp(&pair.refresh_token, TokenType::Refresh) <= end);
    }

    #[test]
    fn expired_tokens_are_refused() {
        let t = Tokens::new(b"k-k-k-k-k-k-k-k-k-k-k-k-k-k-k-k-k", Duration::from_secs(0), Duration::from_secs(0));
        let pair = t.issue(1, 1, Role::User, "x".into(), unix_now() + 600);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(t.verify(&pair.access_token, TokenType::Access), Err("expired"));
    }
}
