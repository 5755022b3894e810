//! Accounts, tokens and revocation: the handlers of `/auth/*`, `/me` and
//! `/admin/users/{id}/status`, with
//! - `password`: Argon2id on a bounded pool off the reactor,
//! - `token`: JWT issue and verification,
//! - `revocation`: is this token still wanted (Redis, PostgreSQL fallback),
//! - `throttle`: failed-login limits per email.
//!
//! Every auth event logs one audit line (target `audit`) with the user and
//! session ids and the outcome; never a password, never a token.

pub mod password;
pub mod revocation;
pub mod throttle;
pub mod token;

use crate::app::AppState;
use crate::db::{Db, DbError};
use crate::http::error::{ApiError, FieldError};
use crate::http::{Resp, empty, json, read_json};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use hyper::header::{CACHE_CONTROL, HeaderValue};
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};
use token::{Role, TokenPair, TokenType, new_jti};

/// The statuses of API.md.
pub const STATUSES: &[&str] = &["active", "banned", "deactivated", "security_issue"];

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
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserOut {
    id: i64,
    email: String,
    role: String,
    status: String,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_updated_at: Option<String>,
}

impl UserOut {
    /// From `id, email, role, status, created_at[, status_updated_at]`.
    fn from_row(r: &tokio_postgres::Row) -> Self {
        Self {
            id: r.get(0),
            email: r.get(1),
            role: r.get(2),
            status: r.get(3),
            created_at: ts(&r.get(4)),
            status_updated_at: (r.len() > 5).then(|| ts(&r.get(5))),
        }
    }
}

/// A user as the login needs it.
pub struct LoginUser {
    id: i64,
    password_hash: String,
    role: Role,
    status: String,
}

/// Email check: one `@`, a non-empty local part of at most 64 and a dotted
/// domain, no spaces or control characters, at most 254 in all.
pub fn validate_email(email: &str) -> Result<(), &'static str> {
    if email.is_empty() || email.chars().count() > 254 {
        return Err("must be 1 to 254 characters");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("may not contain spaces or control characters");
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Err("must contain @");
    };
    if local.is_empty() || local.len() > 64 || domain.contains('@') {
        return Err("is not an email address");
    }
    if !domain.contains('.') || domain.split('.').any(str::is_empty) {
        return Err("needs a domain such as example.com");
    }
    Ok(())
}

/// Password check: 8 to 128 characters.
pub fn validate_password(password: &str) -> Result<(), &'static str> {
    let n = password.chars().count();
    if (8..=128).contains(&n) { Ok(()) } else { Err("must be 8 to 128 characters") }
}

impl Db {
    async fn insert_user(&self, email: &str, hash: &str) -> Result<Option<UserOut>, DbError> {
        let c = self.conn().await?;
        let row = c.client.query_opt(&c.st.insert_user, &[&email, &hash]).await.map_err(|e| self.fail(e))?;
        Ok(row.as_ref().map(UserOut::from_row))
    }

    async fn user_for_login(&self, email: &str) -> Result<Option<LoginUser>, DbError> {
        let c = self.conn().await?;
        let row = c.client.query_opt(&c.st.user_for_login, &[&email]).await.map_err(|e| self.fail(e))?;
        Ok(row.map(|r| LoginUser {
            id: r.get(0),
            password_hash: r.get(1),
            role: Role::parse(r.get(2)),
            status: r.get(3),
        }))
    }

    async fn user_by_id(&self, uid: i64) -> Result<Option<UserOut>, DbError> {
        let c = self.conn().await?;
        let row = c.client.query_opt(&c.st.user_by_id, &[&uid]).await.map_err(|e| self.fail(e))?;
        Ok(row.as_ref().map(UserOut::from_row))
    }

    /// A new session for a user still active now; its id, or None.
    pub async fn insert_session(&self, uid: i64, refresh_jti: &str, ttl_secs: f64) -> Result<Option<i64>, DbError> {
        let c = self.conn().await?;
        let row = c
            .client
            .query_opt(&c.st.insert_session, &[&uid, &refresh_jti, &ttl_secs])
            .await
            .map_err(|e| self.fail(e))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Moves the user's not-before past every existing session (logout-all).
    /// Returns (min_session_id, still active).
    async fn bump_not_before(&self, uid: i64) -> Result<Option<(i64, bool)>, DbError> {
        let mut c = self.conn().await?;
        let crate::db::PgConn { client, st } = &mut *c;
        let tx = client.transaction().await.map_err(|e| self.fail(e))?;
        let locked = tx.query_opt(&st.lock_user, &[&uid]).await.map_err(|e| self.fail(e))?;
        if locked.is_none() {
            return Ok(None);
        }
        let r = tx.query_one(&st.bump_not_before, &[&uid]).await.map_err(|e| self.fail(e))?;
        tx.commit().await.map_err(|e| self.fail(e))?;
        Ok(Some((r.get(0), r.get::<_, &str>(1) == "active")))
    }

    /// Sets a status; moves the not-before. Returns (id, status, updated at,
    /// min_session_id), or None for an unknown user.
    pub async fn set_status(
        &self,
        uid: i64,
        status: &str,
    ) -> Result<Option<(i64, String, DateTime<Utc>, i64)>, DbError> {
        let mut c = self.conn().await?;
        let crate::db::PgConn { client, st } = &mut *c;
        let tx = client.transaction().await.map_err(|e| self.fail(e))?;
        if tx.query_opt(&st.lock_user, &[&uid]).await.map_err(|e| self.fail(e))?.is_none() {
            return Ok(None);
        }
        let r = tx.query_one(&st.set_status, &[&uid, &status]).await.map_err(|e| self.fail(e))?;
        tx.commit().await.map_err(|e| self.fail(e))?;
        Ok(Some((r.get(0), r.get(1), r.get(2), r.get(3))))
    }
}

fn token_response(pair: &TokenPair) -> Result<Resp, ApiError> {
    let mut r = json(StatusCode::OK, pair)?;
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// `POST /auth/register`.
pub async fn register<B>(st: &AppState, req: Request<B>) -> Result<Resp, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let body: Credentials = read_json(req).await?;
    let mut errs = Vec::new();
    if let Err(m) = validate_email(&body.email) {
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
    match st.db.insert_user(&body.email, &hash).await? {
        Some(user) => {
            st.metrics.auth_event("register", "success");
            tracing::info!(target: "audit", event = "register", outcome = "success", user_id = user.id);
            json(StatusCode::CREATED, &user)
        }
        None => {
            st.metrics.auth_event("register", "conflict");
            tracing::info!(target: "audit", event = "register", outcome = "conflict");
            Err(ApiError::Conflict("An account with this email already exists."))
        }
    }
}

/// `POST /auth/login`.
pub async fn login<B>(st: &AppState, req: Request<B>) -> Result<Resp, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let body: Credentials = read_json(req).await?;
    let email_lower = body.email.to_lowercase();
    if let Err(e) = st.throttle.check(&email_lower).await {
        st.metrics.auth_event("login", "throttled");
        tracing::info!(target: "audit", event = "login", outcome = "throttled");
        return Err(e);
    }
    let user = st.db.user_for_login(&body.email).await?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    let ok = st.passwords.verify(hash, body.password).await?;
    let user = match user {
        Some(u) if ok => u,
        _ => {
            st.throttle.failed(&email_lower).await;
            st.metrics.auth_event("login", "failure");
            tracing::info!(target: "audit", event = "login", outcome = "failure");
            return Err(ApiError::InvalidCredentials);
        }
    };
    st.throttle.succeeded(&email_lower).await;
    let inactive = || {
        st.metrics.auth_event("login", "inactive");
        tracing::info!(target: "audit", event = "login", outcome = "inactive", user_id = user.id);
        ApiError::Forbidden("This account is not active.")
    };
    if user.status != "active" {
        return Err(inactive());
    }
    let jti = new_jti();
    let Some(sid) = st.db.insert_session(user.id, &jti, st.config.refresh_ttl.as_secs_f64()).await? else {
        return Err(inactive()); // blocked between the look-up and now
    };
    st.metrics.auth_event("login", "success");
    tracing::info!(target: "audit", event = "login", outcome = "success", user_id = user.id, session_id = sid);
    token_response(&st.tokens.issue(user.id, sid, user.role, jti))
}

/// `POST /auth/refresh`: rotation with reuse detection (flow B).
pub async fn refresh<B>(st: &AppState, req: Request<B>) -> Result<Resp, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let body: RefreshBody = read_json(req).await?;
    let fail = |reason: &'static str| {
        st.metrics.auth_event("refresh", "failure");
        ApiError::invalid_token(reason)
    };
    let p = st.tokens.verify(&body.refresh_token, TokenType::Refresh).map_err(fail)?;
    // Redis first: a blocked user or revoked session costs no write.
    st.revocation.check(&p, None).await.map_err(|e| {
        st.metrics.auth_event("refresh", "failure");
        e
    })?;
    let new = new_jti();
    let c = st.db.conn().await?;
    let rotated = c
        .client
        .query_opt(&c.st.rotate_session, &[&p.session_id, &p.jti, &new, &p.user_id])
        .await
        .map_err(|e| st.db.fail(e))?;
    if let Some(row) = rotated {
        drop(c);
        let role = Role::parse(row.get(0));
        st.metrics.auth_event("refresh", "success");
        tracing::info!(target: "audit", event = "refresh", outcome = "success", user_id = p.user_id, session_id = p.session_id);
        return token_response(&st.tokens.issue(p.user_id, p.session_id, role, new));
    }
    // Not the current token of a live session. If the session is live with
    // another token id, this one was consumed before: reuse. End it.
    let reused = c
        .client
        .query_opt(&c.st.revoke_reused, &[&p.session_id, &p.jti, &p.user_id])
        .await
        .map_err(|e| st.db.fail(e))?;
    drop(c);
    if reused.is_some() {
        st.revocation.session_revoked(p.user_id, p.session_id).await;
        st.metrics.auth_event("refresh", "reuse");
        tracing::warn!(target: "audit", event = "refresh", outcome = "reuse", user_id = p.user_id, session_id = p.session_id);
        return Err(ApiError::invalid_token("refresh token reused; session ended"));
    }
    Err(fail("session ended, expired or user blocked"))
}

/// `POST /auth/logout`: ends this session.
pub async fn logout<B>(st: &AppState, req: &Request<B>) -> Result<Resp, ApiError> {
    let p = st.authenticate(req).await?;
    let c = st.db.conn().await?;
    c.client.execute(&c.st.revoke_session, &[&p.session_id, &p.user_id, &"logout"]).await.map_err(|e| st.db.fail(e))?;
    drop(c);
    st.revocation.session_revoked(p.user_id, p.session_id).await;
    st.metrics.auth_event("logout", "success");
    tracing::info!(target: "audit", event = "logout", outcome = "success", user_id = p.user_id, session_id = p.session_id);
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /auth/logout-all`: ends every session issued up to now.
pub async fn logout_all<B>(st: &AppState, req: &Request<B>) -> Result<Resp, ApiError> {
    let p = st.authenticate(req).await?;
    let (min, active) = st.db.bump_not_before(p.user_id).await?.ok_or(ApiError::invalid_token("user gone"))?;
    st.revocation.not_before_moved(p.user_id, min, active).await;
    st.metrics.auth_event("logout", "all");
    tracing::info!(target: "audit", event = "logout_all", outcome = "success", user_id = p.user_id);
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `GET /me`.
pub async fn me<B>(st: &AppState, req: &Request<B>) -> Result<Resp, ApiError> {
    let p = st.authenticate(req).await?;
    let user = st.db.user_by_id(p.user_id).await?.ok_or(ApiError::invalid_token("user gone"))?;
    json(StatusCode::OK, &user)
}

/// `PATCH /admin/users/{id}/status` (flow C).
pub async fn set_status<B>(st: &AppState, req: Request<B>, uid: i64) -> Result<Resp, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let admin = st.authenticate(&req).await?;
    crate::tasks::require_admin(&admin)?;
    let body: StatusBody = read_json(req).await?;
    if !STATUSES.contains(&body.status.as_str()) {
        return Err(ApiError::field("status", "must be one of active, banned, deactivated, security_issue"));
    }
    let (id, status, at, min) = st.db.set_status(uid, &body.status).await?.ok_or(ApiError::NotFound)?;
    st.revocation.not_before_moved(id, min, status == "active").await;
    tracing::info!(target: "audit", event = "status_change", admin_id = admin.user_id, user_id = id, status = %status);
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Out {
        id: i64,
        status: String,
        status_updated_at: String,
    }
    json(StatusCode::OK, &Out { id, status, status_updated_at: ts(&at) })
}

/// Makes sure the `ADMIN_EMAIL` account exists, is an active admin and has
/// `ADMIN_PASSWORD`. Runs at start-up.
pub async fn bootstrap_admin(st: &AppState) -> anyhow::Result<()> {
    let (Some(email), Some(password)) = (&st.config.admin_email, &st.config.admin_password) else {
        return Ok(());
    };
    if let Err(m) = validate_email(email) {
        anyhow::bail!("ADMIN_EMAIL {m}");
    }
    let hash = st.passwords.hash(password.expose().to_owned()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let c = st.db.conn().await?;
    let row = c
        .client
        .query_one(
            "INSERT INTO users (email, password_hash, role) VALUES ($1, $2, 'admin') \
             ON CONFLICT ((lower(email))) DO UPDATE SET password_hash = EXCLUDED.password_hash, role = 'admin' \
             RETURNING id, status",
            &[email, &hash],
        )
        .await?;
    drop(c);
    let (id, status): (i64, String) = (row.get(0), row.get(1));
    if status != "active" {
        let (_, _, _, min) = st.db.set_status(id, "active").await?.ok_or_else(|| anyhow::anyhow!("admin vanished"))?;
        st.revocation.not_before_moved(id, min, true).await;
    }
    tracing::info!(target: "audit", event = "admin_bootstrap", user_id = id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_for_shape_and_length() {
        assert!(validate_email("a@b.io").is_ok());
        assert!(validate_email("First.Last+tag@Example.COM").is_ok());
        for bad in ["", "plain", "a@b", "@b.io", "a@@b.io", "a b@c.io", "a@b..io", "a@.io"] {
            assert!(validate_email(bad).is_err(), "{bad:?} should be refused");
        }
        let long = format!("{}@{}.io", "a".repeat(64), "b".repeat(186));
        assert_eq!(long.len(), 254);
        assert!(validate_email(&long).is_ok());
        assert!(validate_email(&format!("a{long}")).is_err());
    }

    #[test]
    fn passwords_are_8_to_128_characters() {
        assert!(validate_password("1234567").is_err());
        assert!(validate_password("12345678").is_ok());
        assert!(validate_password(&"é".repeat(128)).is_ok());
        assert!(validate_password(&"x".repeat(129)).is_err());
    }
}
