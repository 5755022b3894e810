//! External identity providers (API.md, "External identity providers"):
//! access tokens of Cognito, Entra ID or any OpenID provider, verified
//! against the provider's published keys (JWKS), then revocation-checked
//! like our own.
//!
//! # Why the keys are handled this way
//! - **Pinned per key.** Each key accepts one algorithm: the JWK's `alg`
//!   (RS256, PS256 or ES256), else RS256 for an RSA key (Entra ID publishes
//!   none) and ES256 for a P-256 key. A token whose header asks for anything
//!   else is refused, so no token can pick how its signature is checked
//!   (HS256 with the public key as the secret, `none`).
//! - **Fetched rarely, kept.** At start-up, then on the provider's
//!   `Cache-Control: max-age` (clamped to 10 s..24 h, 1 h without one), and
//!   on a token whose `kid` is unknown, at most once every
//!   [`REFETCH_EVERY`]: a key rotation needs no restart, and a flood of
//!   forged `kid`s costs the provider one fetch per 10 s. A failed fetch
//!   keeps the keys we have.
//! - **Bounded.** Every fetch has a timeout and a size limit, and goes over
//!   https, or http to a loopback host only (`config::fetchable_url`).
//!
//! # Revocation
//! A provider cannot take back a token it issued; Tollgate can, at the API.
//! The token's subject becomes a local user on first sight, and its tokens
//! are then checked against that user's status and not-before exactly like
//! our own, in the same Redis round trip (`auth::revocation`). The one
//! difference: a provider's token has no session of ours, so its place on
//! the user's not-before clock is its `iat`, a second on the provider's
//! clock, and logout ends the token itself by its [`token_key`].

use crate::auth::token::unix_now;
use crate::config::{EXTERNAL_TOKEN_MAX_LIFETIME, OidcConfig, fetchable_url};
use crate::db::Db;
use crate::db::users::Role;
use crate::http::error::ApiError;
use crate::metrics::{ExternalOutcome, Metrics};
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Fewest seconds between two fetches caused by unknown `kid`s, and how
/// recent a successful fetch must be for an unverifiable token to be a 401
/// rather than a 503 (API.md).
pub const REFETCH_EVERY: Duration = Duration::from_secs(10);
/// Leeway on `nbf` for clocks a little apart (API.md: at most 60 s).
const NBF_LEEWAY_SECS: i64 = 60;
/// Largest JWKS or discovery document read.
const MAX_DOCUMENT: usize = 256 * 1024;
/// Whole-fetch timeout.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Periodic refresh without a `max-age`.
const DEFAULT_REFRESH: Duration = Duration::from_secs(3600);
/// Subjects whose local user id is remembered.
const SUBJECTS_CAPACITY: u64 = 100_000;

/// One verification key, with the one algorithm it accepts.
struct Key {
    alg: Algorithm,
    decoding: DecodingKey,
}

/// A provider's signing keys by `kid`, each pinned to its one algorithm.
#[derive(Default)]
pub struct KeySet(HashMap<String, Key>);

/// The refusal of a token whose `kid` is not in the key set (the one
/// refusal that may be cured by fetching the keys again).
const UNKNOWN_KID: &str = "unknown kid";

impl KeySet {
    /// The usable keys of a JWKS document. Keys for encryption, of other
    /// types or curves, or without a `kid` are skipped (one odd key does
    /// not void the others).
    pub fn from_jwks(doc: &Value) -> Self {
        Self(parse_jwks(doc))
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Verifies `token` against these keys and `cfg`'s rules at `now`:
    /// algorithm, signature, issuer, times, audience, required claims.
    pub fn verify(&self, cfg: &OidcConfig, token: &str, now: i64) -> Result<ExternalToken, Refusal> {
        if token.len() > 16 * 1024 {
            return Err(Refusal::Invalid("token too long"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Invalid("malformed token"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256) {
            return Err(Refusal::Invalid("algorithm not allowed"));
        }
        let kid = header.kid.ok_or(Refusal::Invalid("no kid"))?;
        let key = self.0.get(&kid).ok_or(Refusal::Invalid(UNKNOWN_KID))?;
        if key.alg != header.alg {
            return Err(Refusal::Invalid("algorithm not the key's"));
        }
        let mut v = Validation::new(key.alg);
        v.algorithms = vec![key.alg];
        v.validate_exp = false; // checked below without leeway
        v.validate_nbf = false; // checked below with leeway
        v.validate_aud = false; // `aud` or Cognito's `client_id`, below
        v.set_issuer(&[&cfg.issuer]);
        v.set_required_spec_claims(&["exp", "iat", "sub", "iss"]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key.decoding, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            Refusal::Invalid(match e.kind() {
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::MissingRequiredClaim(_) => "missing claim",
                _ => "malformed token",
            })
        })?;
        check_claims(cfg, token, &data.claims, now)
    }
}

/// When keys were fetched, for the refetch limit and the 401/503 choice.
#[derive(Default)]
struct Fetches {
    last_attempt: Option<Instant>,
    last_ok: Option<Instant>,
    /// The `jwks_uri` found by discovery, once found.
    discovered: Option<String>,
}

/// A verified external access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalToken {
    /// `sub`.
    pub subject: String,
    /// `email`, when present and short enough to store.
    pub email: Option<String>,
    /// `iat`: the token's place on the user's not-before clock.
    pub iat: i64,
    /// `exp`.
    pub exp: i64,
    /// `jti`, or empty.
    pub jti: String,
    /// See [`token_key`].
    pub key: String,
    /// Admin when a group claim holds `OIDC_ADMIN_GROUP`.
    pub role: Role,
}

/// The name under which a logged-out external token is remembered: the
/// SHA-256 (first 16 bytes, hex) of its `jti`, or of the whole token when it
/// has none. Fixed length whatever the provider sends; the prefixes keep
/// the two kinds apart.
pub fn token_key(jti: Option<&str>, token: &str) -> String {
    let mut h = Sha256::new();
    match jti {
        Some(j) => {
            h.update(b"jti\0");
            h.update(j);
        }
        None => {
            h.update(b"tok\0");
            h.update(token);
        }
    }
    h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The provider's `iss`, if the unverified payload names one. Only routes
/// the token; nothing read here is trusted.
pub fn issuer_of(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Iss>(&bytes).ok()?.iss
}

/// The verifier of one provider's tokens.
pub struct External {
    cfg: OidcConfig,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    db: Db,
    keys: RwLock<Arc<KeySet>>,
    fetches: tokio::sync::Mutex<Fetches>,
    /// (subject) -> local user id. The mapping never changes once made.
    subjects: moka::sync::Cache<String, i64>,
}

/// Why verification failed: a 401 (the reason goes to the debug log) or
/// a 503 (no key, and the provider's keys could not be fetched lately).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 401.
    Invalid(&'static str),
    /// 503 with `Retry-After`.
    KeysUnavailable,
}

impl External {
    /// A verifier for `cfg`; keys are fetched by [`External::refresh_loop`]
    /// and on first use.
    pub fn new(cfg: OidcConfig, db: Db, metrics: Arc<Metrics>) -> anyhow::Result<Arc<Self>> {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Arc::new(Self {
            cfg,
            http,
            metrics,
            db,
            keys: RwLock::new(Arc::new(KeySet::default())),
            fetches: tokio::sync::Mutex::new(Fetches::default()),
            subjects: moka::sync::Cache::builder().max_capacity(SUBJECTS_CAPACITY).build(),
        }))
    }

    /// Whether `token` claims to be this provider's (by its unverified
    /// `iss`): then it is verified here and only here, so a token naming the
    /// provider can never be checked as one of ours, nor the other way.
    pub fn claims(&self, token: &str) -> bool {
        issuer_of(token).is_some_and(|iss| iss == self.cfg.issuer)
    }

    /// The verified token and its local user id, or why not. Counts the
    /// refusals; the caller counts the revocation outcome.
    pub async fn authenticate(&self, token: &str) -> Result<(ExternalToken, i64), ApiError> {
        let t = match self.verify(token).await {
            Ok(t) => t,
            Err(r) => {
                return Err(match r {
                    Refusal::Invalid(why) => {
                        self.metrics.external_token(ExternalOutcome::Refused);
                        ApiError::invalid_token(why)
                    }
                    Refusal::KeysUnavailable => {
                        self.metrics.external_token(ExternalOutcome::Unavailable);
                        ApiError::Unavailable(anyhow::anyhow!("the identity provider's keys could not be fetched"))
                    }
                });
            }
        };
        let uid = match self.subjects.get(&t.subject) {
            Some(uid) => uid,
            None => {
                let uid = self.db.upsert_external_user(&self.cfg.issuer, &t.subject, t.email.as_deref()).await?;
                self.subjects.insert(t.subject.clone(), uid);
                uid
            }
        };
        Ok((t, uid))
    }

    /// Verifies `token` with the keys we have; a `kid` we do not have
    /// fetches the keys again first (see `External::refetch_for_unknown_kid`).
    pub async fn verify(&self, token: &str) -> Result<ExternalToken, Refusal> {
        match self.key_set().verify(&self.cfg, token, unix_now()) {
            Err(Refusal::Invalid(UNKNOWN_KID)) => {
                self.refetch_for_unknown_kid().await?.verify(&self.cfg, token, unix_now())
            }
            done => done,
        }
    }

    fn key_set(&self) -> Arc<KeySet> {
        self.keys.read().map(|k| Arc::clone(&k)).unwrap_or_default()
    }

    /// A token named a key we do not have: fetch again unless a fetch was
    /// tried in the last [`REFETCH_EVERY`]. Then, still without the key, it
    /// is a 503 when no fetch succeeded in that time (the provider may have
    /// rotated while unreachable), a 401 otherwise (the key does not exist).
    async fn refetch_for_unknown_kid(&self) -> Result<Arc<KeySet>, Refusal> {
        let mut f = self.fetches.lock().await;
        if f.last_attempt.is_none_or(|t| t.elapsed() >= REFETCH_EVERY) {
            self.fetch(&mut f).await;
        }
        if f.last_ok.is_none_or(|t| t.elapsed() >= REFETCH_EVERY) {
            return Err(Refusal::KeysUnavailable);
        }
        Ok(self.key_set())
    }

    /// One fetch (discovery first when needed); keeps the old keys on any
    /// failure. Returns the provider's `max-age`, when it gave one.
    async fn fetch(&self, f: &mut Fetches) -> Option<Duration> {
        f.last_attempt = Some(Instant::now());
        match self.fetch_keys(f).await {
            Ok((keys, max_age)) => {
                tracing::info!(keys = keys.len(), "identity provider keys fetched");
                if let Ok(mut k) = self.keys.write() {
                    *k = Arc::new(keys);
                }
                f.last_ok = Some(Instant::now());
                self.metrics.jwks_fetch(true);
                max_age
            }
            Err(e) => {
                tracing::warn!(error = %e, "fetching the identity provider's keys failed; keeping the keys we have");
                self.metrics.jwks_fetch(false);
                None
            }
        }
    }

    async fn fetch_keys(&self, f: &mut Fetches) -> anyhow::Result<(KeySet, Option<Duration>)> {
        let url = match (&self.cfg.jwks_url, &f.discovered) {
            (Some(u), _) | (None, Some(u)) => u.clone(),
            (None, None) => {
                let well_known = format!("{}/.well-known/openid-configuration", self.cfg.issuer.trim_end_matches('/'));
                let (doc, _) = self.get(&well_known).await?;
                let uri = doc
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| anyhow::anyhow!("the discovery document at {well_known} has no jwks_uri"))?;
                fetchable_url(uri).map_err(|m| anyhow::anyhow!("jwks_uri {uri} {m}"))?;
                f.discovered = Some(uri.to_owned());
                uri.to_owned()
            }
        };
        let (doc, max_age) = self.get(&url).await?;
        let keys = KeySet::from_jwks(&doc);
        if keys.is_empty() {
            anyhow::bail!("{url} has no usable signing key (RS256, PS256 or ES256)");
        }
        Ok((keys, max_age))
    }

    /// GET a JSON document of at most [`MAX_DOCUMENT`] bytes.
    async fn get(&self, url: &str) -> anyhow::Result<(Value, Option<Duration>)> {
        let mut resp = self.http.get(url).send().await?;
        if !resp.status().is_success() {
            anyhow::bail!("{url} answered {}", resp.status());
        }
        let max_age =
            resp.headers().get(reqwest::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).and_then(max_age);
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if body.len() + chunk.len() > MAX_DOCUMENT {
                anyhow::bail!("{url} sent more than {MAX_DOCUMENT} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        Ok((serde_json::from_slice(&body)?, max_age))
    }

    /// Keeps the keys fresh: a fetch now, then one every `max-age` (clamped
    /// to 10 s..24 h; an hour without one, or a minute after a failure).
    pub async fn refresh_loop(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let next = {
                let mut f = self.fetches.lock().await;
                let before = f.last_ok;
                let max_age = self.fetch(&mut f).await;
                match (max_age, f.last_ok != before) {
                    (Some(a), true) => a.clamp(REFETCH_EVERY, Duration::from_secs(86_400)),
                    (None, true) => DEFAULT_REFRESH,
                    (_, false) => Duration::from_secs(60),
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(next) => {}
            }
        }
    }
}

/// The claim rules of API.md for a token whose signature verified, at
/// `now`.
fn check_claims(
    cfg: &OidcConfig,
    token: &str,
    c: &serde_json::Map<String, Value>,
    now: i64,
) -> Result<ExternalToken, Refusal> {
    let int = |name: &str| c.get(name).and_then(Value::as_i64);
    let exp = int("exp").ok_or(Refusal::Invalid("bad exp"))?;
    let iat = int("iat").ok_or(Refusal::Invalid("bad iat"))?;
    if exp <= now {
        return Err(Refusal::Invalid("expired"));
    }
    if c.contains_key("nbf") && int("nbf").is_none_or(|nbf| nbf > now + NBF_LEEWAY_SECS) {
        return Err(Refusal::Invalid("not yet valid"));
    }
    // Revocation entries live as long as the longest token they must
    // refuse; a token living longer could outlive its entry.
    let max = EXTERNAL_TOKEN_MAX_LIFETIME.as_secs() as i64;
    if exp - iat > max || exp - now > max + NBF_LEEWAY_SECS {
        return Err(Refusal::Invalid("lifetime over 24 h"));
    }
    let subject = c.get("sub").and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= 255);
    let subject = subject.ok_or(Refusal::Invalid("bad sub"))?.to_owned();
    let audience_ok = match c.get("aud") {
        Some(aud) => contains(aud, &cfg.audience),
        None => c.get("client_id").and_then(Value::as_str) == Some(cfg.audience.as_str()),
    };
    if !audience_ok {
        return Err(Refusal::Invalid("wrong audience"));
    }
    if !cfg.required_claims.iter().all(|(name, want)| c.get(name).is_some_and(|v| contains(v, want))) {
        return Err(Refusal::Invalid("required claim missing or different"));
    }
    let admin = cfg.admin_group.as_deref().is_some_and(|g| {
        ["cognito:groups", "groups", "roles"].iter().any(|name| c.get(*name).is_some_and(|v| contains(v, g)))
    });
    let jti = c.get("jti").and_then(Value::as_str).filter(|j| !j.is_empty());
    Ok(ExternalToken {
        email: c.get("email").and_then(Value::as_str).filter(|e| e.len() <= 254).map(str::to_owned),
        key: token_key(jti, token),
        jti: jti.unwrap_or_default().to_owned(),
        subject,
        iat,
        exp,
        role: if admin { Role::Admin } else { Role::User },
    })
}

/// `value` is `want`, or an array holding it.
fn contains(value: &Value, want: &str) -> bool {
    match value {
        Value::String(s) => s == want,
        Value::Array(a) => a.iter().any(|v| v.as_str() == Some(want)),
        _ => false,
    }
}

/// `max-age=N` of a `Cache-Control` value.
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control
        .split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .and_then(|n| n.trim().parse().ok())
        .map(Duration::from_secs)
}

/// See [`KeySet::from_jwks`].
fn parse_jwks(doc: &Value) -> HashMap<String, Key> {
    let mut out = HashMap::new();
    for raw in doc.get("keys").and_then(Value::as_array).into_iter().flatten() {
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else { continue };
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (AlgorithmParameters::RSA(_), Some(KeyAlgorithm::PS256)) => Algorithm::PS256,
            (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                if ec.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            _ => continue,
        };
        let (Some(kid), Ok(decoding)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(&jwk)) else { continue };
        out.insert(kid, Key { alg, decoding });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_pinned_to_one_algorithm_and_odd_keys_are_skipped() {
        let rsa = json!({"kty": "RSA", "kid": "r", "n": "sXch", "e": "AQAB"});
        let doc = json!({"keys": [
            rsa,
            {"kty": "RSA", "kid": "p", "alg": "PS256", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "e", "use": "enc", "n": "sXch", "e": "AQAB"},
            {"kty": "RSA", "kid": "h", "alg": "RS512", "n": "sXch", "e": "AQAB"},
            {"kty": "oct", "kid": "o", "k": "c2VjcmV0"},
            {"kty": "RSA", "n": "sXch", "e": "AQAB"},
            {"kty": "EC", "kid": "c", "crv": "P-256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "kid": "c384", "crv": "P-384", "x": "AA", "y": "AA"},
            "junk"
        ]});
        let keys = parse_jwks(&doc);
        let mut got: Vec<(&str, Algorithm)> = keys.iter().map(|(k, v)| (k.as_str(), v.alg)).collect();
        got.sort_by_key(|(k, _)| *k);
        assert_eq!(got, vec![("c", Algorithm::ES256), ("p", Algorithm::PS256), ("r", Algorithm::RS256)]);
    }

    #[test]
    fn token_keys_are_fixed_length_and_kinds_never_collide() {
        let a = token_key(Some("x"), "t1");
        assert_eq!(a.len(), 32);
        assert_eq!(a, token_key(Some("x"), "t2"), "by jti when there is one");
        assert_ne!(token_key(None, "t1"), token_key(None, "t2"));
        assert_ne!(token_key(Some("x"), "x"), token_key(None, "x"));
    }

    fn cfg() -> OidcConfig {
        OidcConfig {
            issuer: "https://idp".into(),
            audience: "api".into(),
            jwks_url: None,
            required_claims: vec![("token_use".into(), "access".into())],
            admin_group: Some("admins".into()),
        }
    }

    fn claims(v: Value) -> serde_json::Map<String, Value> {
        let Value::Object(mut m) = v else { unreachable!("an object") };
        m.entry("token_use").or_insert(json!("access"));
        m
    }

    #[test]
    fn claim_rules_cover_audience_time_required_claims_and_groups() {
        let now = 1_000_000;
        let ok = |v: Value| check_claims(&cfg(), "tok", &claims(v), now);
        let cognito = ok(json!({"sub": "s", "iat": now, "exp": now + 60, "client_id": "api",
            "cognito:groups": ["x", "admins"], "jti": "j"}))
        .expect("Cognito shape");
        assert_eq!((cognito.role, cognito.key.clone()), (Role::Admin, token_key(Some("j"), "")));
        let entra = ok(json!({"sub": "s", "iat": now, "exp": now + 60, "aud": "api", "tid": "t", "ver": "2.0"}))
            .expect("Entra shape");
        assert_eq!((entra.role, entra.key), (Role::User, token_key(None, "tok")));
        assert!(ok(json!({"sub": "s", "iat": now, "exp": now + 60, "aud": ["x", "api"], "nbf": now + 59})).is_ok());
        let refused = |v: Value| ok(v).err();
        let base = json!({"sub": "s", "iat": now, "exp": now + 60, "aud": "api"});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            b
        };
        assert_eq!(refused(with("aud", json!("other"))), Some(Refusal::Invalid("wrong audience")));
        assert_eq!(refused(with("exp", json!(now))), Some(Refusal::Invalid("expired")));
        assert_eq!(refused(with("nbf", json!(now + 61))), Some(Refusal::Invalid("not yet valid")));
        assert_eq!(refused(with("exp", json!(now + 90_000))), Some(Refusal::Invalid("lifetime over 24 h")));
        assert_eq!(refused(with("sub", json!(""))), Some(Refusal::Invalid("bad sub")));
        assert_eq!(
            refused(with("token_use", json!("id"))),
            Some(Refusal::Invalid("required claim missing or different"))
        );
        let no_aud = json!({"sub": "s", "iat": now, "exp": now + 60, "client_id": "other"});
        assert_eq!(refused(no_aud), Some(Refusal::Invalid("wrong audience")));
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(max_age("public, max-age=300, must-revalidate"), Some(Duration::from_secs(300)));
        assert_eq!(max_age("no-cache"), None);
    }

    #[test]
    fn the_issuer_is_read_from_the_unverified_payload() {
        let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let t = format!("{}.{}.sig", b64(json!({"alg": "RS256"})), b64(json!({"iss": "https://idp", "sub": "1"})));
        assert_eq!(issuer_of(&t).as_deref(), Some("https://idp"));
        assert_eq!(issuer_of("a.b.c"), None);
    }
}
