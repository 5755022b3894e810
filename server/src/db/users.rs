//! The `users` table: accounts, their status and not-before, and the
//! deployment id stored beside them.

use super::{Db, DbError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio_postgres::Row;

/// A user's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everyone.
    User,
    /// May list every task and change user statuses.
    Admin,
}

impl Role {
    /// From the database's text; the CHECK constraint allows nothing else,
    /// and anything unexpected gets the lesser role.
    pub fn parse(s: &str) -> Self {
        if s == "admin" { Role::Admin } else { Role::User }
    }
    /// As stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

/// A user status (API.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// May log in and be served.
    Active,
    /// Blocked by an admin.
    Banned,
    /// Blocked: the account is switched off.
    Deactivated,
    /// Blocked: credentials may be compromised.
    SecurityIssue,
}

impl Status {
    /// Every status, in the contract's order.
    pub const ALL: [Status; 4] = [Status::Active, Status::Banned, Status::Deactivated, Status::SecurityIssue];

    /// From the database's or a client's text.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
    /// As stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Banned => "banned",
            Status::Deactivated => "deactivated",
            Status::SecurityIssue => "security_issue",
        }
    }
    /// Whether the user may be served.
    pub fn is_active(self) -> bool {
        self == Status::Active
    }
    /// From the database: the CHECK constraint allows only the four;
    /// anything else is treated as blocked (fail closed).
    fn from_db(s: &str) -> Self {
        Self::parse(s).unwrap_or(Status::Banned)
    }
}

/// A user as `/me` and register show it (`db::USER_COLUMNS`).
pub struct UserRow {
    /// Id.
    pub id: i64,
    /// The address as registered; for an external user, the token's
    /// `email` claim when it had one.
    pub email: Option<String>,
    /// Role.
    pub role: Role,
    /// Status.
    pub status: Status,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last status change.
    pub status_updated_at: DateTime<Utc>,
    /// The identity provider of an external user.
    pub issuer: Option<String>,
    /// Its subject at that provider.
    pub subject: Option<String>,
}

impl UserRow {
    fn from_row(r: &Row) -> Self {
        Self {
            id: r.get(0),
            email: r.get(1),
            role: Role::parse(r.get(2)),
            status: Status::from_db(r.get(3)),
            created_at: r.get(4),
            status_updated_at: r.get(5),
            issuer: r.get(6),
            subject: r.get(7),
        }
    }
}

/// A user as the login needs it.
pub struct LoginRow {
    /// Id.
    pub id: i64,
    /// PHC string.
    pub password_hash: String,
    /// Role.
    pub role: Role,
    /// Status.
    pub status: Status,
}

/// A committed status change.
pub struct StatusChange {
    /// The user.
    pub id: i64,
    /// The new status.
    pub status: Status,
    /// When.
    pub at: DateTime<Utc>,
    /// Sessions up to this id are dead now.
    pub min_session_id: i64,
}

/// What the revocation check needs of a user and one session.
pub struct RevocationState {
    /// The user's status.
    pub status: Status,
    /// Sessions up to this id are dead.
    pub min_session_id: i64,
    /// The session exists, is not revoked and has not expired.
    pub session_live: bool,
}

/// A user whose not-before a rebuild copies into Redis.
pub struct RebuildUser {
    /// Id.
    pub id: i64,
    /// Status.
    pub status: Status,
    /// Not-before as a session id.
    pub min_session_id: i64,
}

impl Db {
    /// Register; None when the canonical email is taken.
    pub async fn insert_user(
        &self,
        email: &str,
        canonical: &str,
        hash: &str,
        role: Role,
    ) -> Result<Option<UserRow>, DbError> {
        let row = self
            .with(async |c, st| c.query_opt(&st.insert_user, &[&email, &canonical, &hash, &role.as_str()]).await)
            .await?;
        Ok(row.as_ref().map(UserRow::from_row))
    }

    /// The login look-up by canonical email.
    pub async fn user_for_login(&self, canonical: &str) -> Result<Option<LoginRow>, DbError> {
        let row = self.with(async |c, st| c.query_opt(&st.user_for_login, &[&canonical]).await).await?;
        Ok(row.map(|r| LoginRow {
            id: r.get(0),
            password_hash: r.get(1),
            role: Role::parse(r.get(2)),
            status: Status::from_db(r.get(3)),
        }))
    }

    /// One user, read on `lane` (see `Db::read`).
    pub async fn user_by_id(&self, uid: i64, lane: Option<usize>) -> Result<Option<UserRow>, DbError> {
        let row = self.read(lane, async |c, st| c.query_opt(&st.user_by_id, &[&uid]).await).await?;
        Ok(row.as_ref().map(UserRow::from_row))
    }

    /// This database's deployment id.
    pub async fn deployment_id(&self) -> Result<String, DbError> {
        self.with(async |c, st| c.query_one(&st.deployment_id, &[]).await.map(|r| r.get(0))).await
    }

    /// Moves the user's not-before past every existing session (logout-all).
    /// Returns (min_session_id, still active), None for an unknown user.
    pub async fn bump_not_before(&self, uid: i64) -> Result<Option<(i64, bool)>, DbError> {
        self.with(async |c, st| {
            let tx = c.transaction().await?;
            if tx.query_opt(&st.lock_user, &[&uid]).await?.is_none() {
                return Ok(None);
            }
            let r = tx.query_one(&st.bump_not_before, &[&uid]).await?;
            tx.commit().await?;
            Ok(Some((r.get(0), Status::from_db(r.get(1)).is_active())))
        })
        .await
    }

    /// Sets a status and moves the not-before; None for an unknown user.
    pub async fn set_status(&self, uid: i64, status: Status) -> Result<Option<StatusChange>, DbError> {
        self.with(async |c, st| {
            let tx = c.transaction().await?;
            if tx.query_opt(&st.lock_user, &[&uid]).await?.is_none() {
                return Ok(None);
            }
            let r = tx.query_one(&st.set_status, &[&uid, &status.as_str()]).await?;
            tx.commit().await?;
            Ok(Some(StatusChange {
                id: r.get(0),
                status: Status::from_db(r.get(1)),
                at: r.get(2),
                min_session_id: r.get(3),
            }))
        })
        .await
    }

    /// Makes `uid` an active admin with `hash` and ends every session it
    /// had; returns the new not-before, None for an unknown user.
    pub async fn reset_admin(&self, uid: i64, hash: &str) -> Result<Option<i64>, DbError> {
        self.with(async |c, st| {
            let tx = c.transaction().await?;
            if tx.query_opt(&st.lock_user, &[&uid]).await?.is_none() {
                return Ok(None);
            }
            let r = tx.query_one(&st.reset_admin, &[&uid, &hash]).await?;
            tx.commit().await?;
            Ok(Some(r.get(0)))
        })
        .await
    }

    /// The revocation facts of (user, session), read on `lane`; None for an
    /// unknown user.
    pub async fn revocation_state(
        &self,
        uid: i64,
        sid: i64,
        lane: Option<usize>,
    ) -> Result<Option<RevocationState>, DbError> {
        let row = self.read(lane, async |c, st| c.query_opt(&st.revocation_state, &[&uid, &sid]).await).await?;
        Ok(row.map(|r| RevocationState {
            status: Status::from_db(r.get(0)),
            min_session_id: r.get(1),
            session_live: r.get::<_, Option<bool>>(2).unwrap_or(false),
        }))
    }

    /// The external revocation facts of one token (`token_key`, see
    /// `auth::external`), read on `lane`; None for an unknown user.
    pub async fn external_revocation_state(
        &self,
        uid: i64,
        token_key: &str,
        lane: Option<usize>,
    ) -> Result<Option<RevocationState>, DbError> {
        let row = self
            .read(lane, async |c, st| c.query_opt(&st.external_revocation_state, &[&uid, &token_key]).await)
            .await?;
        Ok(row.map(|r| RevocationState {
            status: Status::from_db(r.get(0)),
            min_session_id: r.get(1),
            session_live: !r.get::<_, bool>(2),
        }))
    }

    /// The local user id of an external subject, created on first sight
    /// (role `user`, status `active`).
    pub async fn upsert_external_user(&self, issuer: &str, subject: &str, email: Option<&str>) -> Result<i64, DbError> {
        self.with(async |c, st| c.query_one(&st.upsert_external_user, &[&issuer, &subject, &email]).await)
            .await
            .map(|r| r.get(0))
    }

    /// One batch of users a rebuild copies: blocked, or whose not-before
    /// moved within `window`; ids above `after`.
    pub async fn rebuild_users(&self, window: Duration, after: i64, limit: i64) -> Result<Vec<RebuildUser>, DbError> {
        let secs = window.as_secs_f64();
        let rows = self.with(async |c, st| c.query(&st.rebuild_users, &[&secs, &after, &limit]).await).await?;
        Ok(rows
            .iter()
            .map(|r| RebuildUser { id: r.get(0), status: Status::from_db(r.get(1)), min_session_id: r.get(2) })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_unknown_text_is_refused() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("Banned"), None);
        assert_eq!(Status::from_db("???"), Status::Banned, "fails closed");
    }
}
