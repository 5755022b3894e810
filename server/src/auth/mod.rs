//! Accounts, tokens and revocation: the handlers of `/auth/*`, `/me` and
//! `/admin/users/{id}/status`, with
//! - `email`: which addresses are accepted, and their canonical form,
//! - `password`: Argon2id on a bounded pool off the reactor,
//! - `token`: JWT issue and verification,
//! - `revocation`: is this token still wanted (Redis, PostgreSQL fallback),
//! - `throttle`: at most so many password verifications per account,
//! - `external`: an external identity provider's tokens (JWKS).
//!
//! Handlers of authenticated routes receive the [`Caller`] the pipeline
//! verified and revocation-checked (`app`); none authenticates by itself.
//! Every handler here that writes runs as a job (`app`): once it has begun
//! it runs to its end, so a commit is always followed by its Redis mirror
//! and its metrics, whatever the client does.
//!
//! Every auth event logs one audit line (target `audit`) with the user and
//! session ids and the outcome; never a password, never a token.

pub mod email;
pub mod external;
pub mod password;
pub mod revocation;
pub mod throttle;
pub mod token;

use crate::db::users::{Status, UserRow};
use crate::http::error::{ApiError, FieldError};
use crate::http::{JsonBody, Resp, check_text, empty, json};
use crate::state::{AppState, Caller};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hyper::StatusCode;
use hyper::header::{CACHE_CONTROL, HeaderValue};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use token::{Principal, Role, TokenPair, TokenType, new_jti};

/// Longest accepted password, in characters (API.md: 8..128).
const MAX_PASSWORD: usize = 128;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    email: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: String,
}

fn ts(t: &DateTime<Utc>) -> String {
    crate::http::time::Rfc3339::new(t).as_str().to_owned()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserOut {
    id: i64,
    email: Option<String>,
    role: Role,
    status: Status,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_updated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
}

impl UserOut {
    /// `with_status_time`: `/me` shows when the status last changed.
    fn new(u: &UserRow, with_status_time: bool) -> Self {
        Self {
            id: u.id,
            email: u.email.clone(),
            role: u.role,
            status: u.status,
            created_at: ts(&u.created_at),
            status_updated_at: with_status_time.then(|| ts(&u.status_updated_at)),
            issuer: u.issuer.clone(),
            subject: u.subject.clone(),
        }
    }
}

/// The verified bearer token of a request, ours or the external
/// provider's, before the revocation check. A token verified before is
/// taken from the verified-token cache whoever issued it; otherwise its
/// unverified `iss` routes it: the provider's issuer to the provider's keys
/// (RS256, PS256, ES256 only), anything else to ours (HS256 only), so no
/// token can choose a verification it was not made for.
pub async fn verify_bearer(st: &AppState, token: &str) -> Result<Arc<Principal>, ApiError> {
    if let Some(hit) = st.tokens.remembered(token) {
        return hit.map_err(ApiError::invalid_token);
    }
    match &st.external {
        Some(x) if x.claims(token) => {
            let (t, uid) = x.authenticate(token).await?;
            let p = Arc::new(Principal {
                user_id: uid,
                session_id: t.iat,
                role: t.role,
                jti: t.jti,
                exp: t.exp,
                external: Some(t.key.into_boxed_str()),
            });
            st.tokens.remember(token, Arc::clone(&p));
            Ok(p)
        }
        _ => {
            // Not remembered (looked up above): verify, then remember.
            let p = Arc::new(st.tokens.verify(token, TokenType::Access).map_err(ApiError::invalid_token)?);
            st.tokens.remember(token, Arc::clone(&p));
            Ok(p)
        }
    }
}

/// Password check: 8 to 128 characters, no U+0000.
pub fn validate_password(password: &str) -> Result<(), &'static str> {
    let n = password.chars().count();
    if !(8..=MAX_PASSWORD).contains(&n) {
        return Err("must be 8 to 128 characters");
    }
    if password.contains('\0') { Err("may not contain U+0000") } else { Ok(()) }
}

fn token_response(pair: &TokenPair) -> Result<Resp, ApiError> {
    let mut r = json(StatusCode::OK, pair)?;
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// `POST /auth/register`.
pub async fn register<B>(st: &AppState, body: JsonBody<B>) -> Result<Resp, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let body: Credentials = st.read_json(body).await?;
    let mut errs = Vec::new();
    if let Err(m) = email::validate(&body.email) {
        errs.push(FieldError::new("email", m));
    }
    if let Err(m) = validate_password(&body.password) {
        errs.push(FieldError::new("password", m));
    }
    if !errs.is_empty() {
        st.metrics.auth_event("register", "invalid");
        return Err(ApiError::Validation(errs));
    }
    let hash = st.passwords.hash(body.password).await?;
    let canonical = email::canonical(&body.email);
    match st.db.insert_user(&body.email, &canonical, &hash, Role::User).await? {
        Some(user) => {
            st.metrics.auth_event("register", "success");
            tracing::info!(target: "audit", event = "register", outcome = "success", user_id = user.id);
            json(StatusCode::CREATED, &UserOut::new(&user, false))
        }
        None => {
            st.metrics.auth_event("register", "conflict");
            tracing::info!(target: "audit", event = "register", outcome = "conflict");
            Err(ApiError::Conflict("An account with this email already exists."))
        }
    }
}

/// Shape checks of login input: bounded sizes and no U+0000, so a login
/// costs a bounded look-up and Redis key whatever the client sends. (No
/// address syntax check: an address that cannot exist simply fails.)
fn check_login_input(c: &Credentials) -> Result<(), ApiError> {
    let mut errs = Vec::new();
    if c.email.is_empty() || c.email.chars().count() > email::MAX_LEN {
        errs.push(FieldError::new("email", "must be 1 to 254 characters"));
    }
    check_text("email", &c.email, &mut errs);
    if c.password.chars().count() > MAX_PASSWORD {
        errs.push(FieldError::new("password", "must be at most 128 characters"));
    }
    check_text("password", &c.password, &mut errs);
    if errs.is_empty() { Ok(()) } else { Err(ApiError::Validation(errs)) }
}

/// `POST /auth/login`: reserve an attempt, then verify (see `throttle`).
pub async fn login<B>(st: &AppState, body: JsonBody<B>) -> Result<Resp, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let body: Credentials = st.read_json(body).await?;
    check_login_input(&body)?;
    let canonical = email::canonical(&body.email);
    let reservation = match st.throttle.reserve(&email::digest(&canonical)).await {
        Ok(r) => r,
        Err(e) => {
            st.metrics.auth_event("login", "throttled");
            tracing::info!(target: "audit", event = "login", outcome = "throttled");
            return Err(e);
        }
    };
    let user = match st.db.user_for_login(&canonical).await {
        Ok(u) => u,
        Err(e) => {
            st.throttle.release(reservation).await;
            return Err(e.into());
        }
    };
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let ok = match st.passwords.verify(hash, body.password).await {
        Ok(ok) => ok,
        Err(e) => {
            st.throttle.release(reservation).await;
            return Err(e);
        }
    };
    let user = match user {
        Some(u) if ok => u,
        _ => {
            // The reservation stays: it is this failure's count.
            drop(reservation);
            st.metrics.auth_event("login", "failure");
            tracing::info!(target: "audit", event = "login", outcome = "failure");
            return Err(ApiError::InvalidCredentials);
        }
    };
    st.throttle.clear(reservation).await;
    let inactive = || {
        st.metrics.auth_event("login", "inactive");
        tracing::info!(target: "audit", event = "login", outcome = "inactive", user_id = user.id);
        ApiError::Forbidden("This account is not active.")
    };
    if !user.status.is_active() {
        return Err(inactive());
    }
    let jti = new_jti();
    let ttl = st.config.refresh_ttl.as_secs_f64();
    let Some(session) = st.db.insert_session(user.id, &jti, ttl, st.config.max_sessions_per_user).await? else {
        return Err(inactive()); // blocked between the look-up and now
    };
    for old in &session.trimmed {
        st.revocation.session_revoked(user.id, *old).await;
    }
    st.metrics.auth_event("login", "success");
    tracing::info!(target: "audit", event = "login", outcome = "success", user_id = user.id, session_id = session.id);
    token_response(&st.tokens.issue(user.id, session.id, user.role, jti, session.expires_at.timestamp()))
}

/// `POST /auth/refresh`: rotation with reuse detection (flow B).
pub async fn refresh<B>(st: &AppState, body: JsonBody<B>) -> Result<Resp, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let body: RefreshBody = st.read_json(body).await?;
    let fail = |reason: &'static str| {
        st.metrics.auth_event("refresh", "failure");
        ApiError::invalid_token(reason)
    };
    let p = st.tokens.verify(&body.refresh_token, TokenType::Refresh).map_err(fail)?;
    // Redis first: a blocked user or revoked session costs no write.
    st.revocation.check(&p, &[], None).await.inspect_err(|_| st.metrics.auth_event("refresh", "failure"))?;
    let new = new_jti();
    if let Some((role, expires_at)) = st.db.rotate_session(p.session_id, &p.jti, &new, p.user_id).await? {
        st.metrics.auth_event("refresh", "success");
        tracing::info!(target: "audit", event = "refresh", outcome = "success", user_id = p.user_id, session_id = p.session_id);
        return token_response(&st.tokens.issue(p.user_id, p.session_id, role, new, expires_at.timestamp()));
    }
    // Not the current token of a live session. If the session is live with
    // another token id, this one was consumed before: reuse. End it.
    if st.db.revoke_reused(p.session_id, &p.jti, p.user_id).await? {
        st.revocation.session_revoked(p.user_id, p.session_id).await;
        st.metrics.auth_event("refresh", "reuse");
        tracing::warn!(target: "audit", event = "refresh", outcome = "reuse", user_id = p.user_id, session_id = p.session_id);
        return Err(ApiError::invalid_token("refresh token reused; session ended"));
    }
    Err(fail("session ended, expired or user blocked"))
}

/// `POST /auth/logout`: ends this session; for an external provider's
/// token, that token, until it expires.
pub async fn logout(st: &AppState, caller: Caller) -> Result<Resp, ApiError> {
    let p = &caller.principal;
    if let Some(key) = &p.external {
        st.db.revoke_external_token(p.user_id, key, p.exp).await?;
        st.revocation.external_token_revoked(p.user_id, key, p.exp).await;
        st.metrics.auth_event("logout", "success");
        tracing::info!(target: "audit", event = "logout", outcome = "success", user_id = p.user_id, external = true);
        return Ok(empty(StatusCode::NO_CONTENT));
    }
    st.db.revoke_session(p.session_id, p.user_id, "logout").await?;
    st.revocation.session_revoked(p.user_id, p.session_id).await;
    st.metrics.auth_event("logout", "success");
    tracing::info!(target: "audit", event = "logout", outcome = "success", user_id = p.user_id, session_id = p.session_id);
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /auth/logout-all`: ends every session issued up to now.
pub async fn logout_all(st: &AppState, caller: Caller) -> Result<Resp, ApiError> {
    let uid = caller.principal.user_id;
    let (min, active) = st.db.bump_not_before(uid).await?.ok_or(ApiError::invalid_token("user gone"))?;
    st.revocation.not_before_moved(uid, min, active).await;
    st.metrics.auth_event("logout", "all");
    tracing::info!(target: "audit", event = "logout_all", outcome = "success", user_id = uid);
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `GET /me`.
pub async fn me(st: &AppState, caller: Caller) -> Result<Resp, ApiError> {
    let p = &caller.principal;
    let user = st.db.user_by_id(p.user_id, caller.lane).await?.ok_or(ApiError::invalid_token("user gone"))?;
    let mut out = UserOut::new(&user, true);
    if p.external.is_some() {
        // The provider's groups decide an external user's role, per token.
        out.role = p.role;
    }
    json(StatusCode::OK, &out)
}

/// `PATCH /admin/users/{id}/status` (flow C): PostgreSQL commits, Redis is
/// written, then the admin is answered.
pub async fn set_status<B>(st: &AppState, caller: Caller, body: JsonBody<B>, uid: i64) -> Result<Resp, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let body: StatusBody = st.read_json(body).await?;
    let status = Status::parse(&body.status)
        .ok_or_else(|| ApiError::field("status", "must be one of active, banned, deactivated, security_issue"))?;
    let change = st.db.set_status(uid, status).await?.ok_or(ApiError::NotFound)?;
    st.revocation.not_before_moved(change.id, change.min_session_id, change.status.is_active()).await;
    tracing::info!(target: "audit", event = "status_change", admin_id = caller.principal.user_id, user_id = change.id, status = change.status.as_str());
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Out {
        id: i64,
        status: Status,
        status_updated_at: String,
    }
    json(StatusCode::OK, &Out { id: change.id, status: change.status, status_updated_at: ts(&change.at) })
}

/// Makes sure the `ADMIN_EMAIL` account exists, is an active admin and has
/// `ADMIN_PASSWORD`. Runs at start-up. If it has to change an existing
/// account (password, role or status), every session that account had is
/// ended: otherwise whoever registered the address first would refresh
/// their way to an admin token.
pub async fn bootstrap_admin(st: &AppState) -> anyhow::Result<()> {
    let (Some(address), Some(password)) = (&st.config.admin_email, &st.config.admin_password) else {
        return Ok(());
    };
    if let Err(m) = email::validate(address) {
        anyhow::bail!("ADMIN_EMAIL {m}");
    }
    let canonical = email::canonical(address);
    let password = password.expose().to_owned();
    // Instances starting together race here: whoever loses the insert
    // finds the winner's account on the next look-up and checks it.
    let mut tries = 0;
    let id = loop {
        tries += 1;
        let Some(u) = st.db.user_for_login(&canonical).await? else {
            let hash = st.passwords.hash(password.clone()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            match st.db.insert_user(address, &canonical, &hash, Role::Admin).await? {
                Some(u) => break u.id,
                None if tries < 3 => continue,
                None => anyhow::bail!("ADMIN_EMAIL keeps being registered and removed concurrently"),
            }
        };
        let same_password = st.passwords.verify(Some(u.password_hash.clone()), password.clone()).await?;
        if u.role != Role::Admin || !u.status.is_active() || !same_password {
            let hash = if same_password {
                u.password_hash
            } else {
                st.passwords.hash(password.clone()).await.map_err(|e| anyhow::anyhow!("{e}"))?
            };
            let min = st.db.reset_admin(u.id, &hash).await?.ok_or_else(|| anyhow::anyhow!("admin vanished"))?;
            st.revocation.not_before_moved(u.id, min, true).await;
            tracing::warn!(target: "audit", event = "admin_bootstrap", user_id = u.id, "existing account changed; its sessions ended");
        }
        break u.id;
    };
    tracing::info!(target: "audit", event = "admin_bootstrap", user_id = id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_8_to_128_characters_without_nul() {
        assert!(validate_password("1234567").is_err());
        assert!(validate_password("12345678").is_ok());
        assert!(validate_password(&"é".repeat(128)).is_ok());
        assert!(validate_password(&"x".repeat(129)).is_err());
        assert!(validate_password("12345678\0").is_err());
    }

    #[test]
    fn login_input_is_bounded() {
        let c = |e: &str, p: &str| Credentials { email: e.into(), password: p.into() };
        assert!(check_login_input(&c("a@b.io", "whatever")).is_ok());
        assert!(check_login_input(&c(&"a".repeat(60_000), "whatever")).is_err());
        assert!(check_login_input(&c("a\0@b.io", "whatever")).is_err());
        assert!(check_login_input(&c("a@b.io", &"p".repeat(129))).is_err());
    }
}
