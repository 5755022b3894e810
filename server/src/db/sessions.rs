//! The `sessions` table: one row per login, rotated by refresh, revoked by
//! logout, reuse or the per-user limit.

use super::users::Role;
use super::{Db, DbError};
use chrono::{DateTime, Utc};

/// A revoked, unexpired session a rebuild copies into Redis.
pub struct RebuildSession {
    /// Session id.
    pub id: i64,
    /// Its user.
    pub user_id: i64,
    /// Milliseconds until it expires.
    pub left_ms: i64,
}

/// A new session.
pub struct NewSession {
    /// Its id.
    pub id: i64,
    /// When it ends; no token of it outlives this.
    pub expires_at: DateTime<Utc>,
    /// Older sessions of the user ended by the per-user limit.
    pub trimmed: Vec<i64>,
}

impl Db {
    /// A new session for a user still active now, keeping at most `keep`
    /// live sessions per user (the oldest beyond it end, in the same
    /// statement). None when the user is not active.
    pub async fn insert_session(
        &self,
        uid: i64,
        refresh_jti: &str,
        ttl_secs: f64,
        keep: i64,
    ) -> Result<Option<NewSession>, DbError> {
        let row = self
            .with(async |c, st| c.query_opt(&st.insert_session, &[&uid, &refresh_jti, &ttl_secs, &keep]).await)
            .await?;
        Ok(row.map(|r| NewSession { id: r.get(0), expires_at: r.get(1), trimmed: r.get(2) }))
    }

    /// Refresh rotation: replaces `jti` by `new` if it is the current token
    /// of a live session of an active user. Returns the role and the
    /// session's expiry.
    pub async fn rotate_session(
        &self,
        sid: i64,
        jti: &str,
        new: &str,
        uid: i64,
    ) -> Result<Option<(Role, DateTime<Utc>)>, DbError> {
        let row = self.with(async |c, st| c.query_opt(&st.rotate_session, &[&sid, &jti, &new, &uid]).await).await?;
        Ok(row.map(|r| (Role::parse(r.get(0)), r.get(1))))
    }

    /// Reuse detection: ends the session if `jti` is an older token of it.
    /// Returns whether it did.
    pub async fn revoke_reused(&self, sid: i64, jti: &str, uid: i64) -> Result<bool, DbError> {
        let row = self.with(async |c, st| c.query_opt(&st.revoke_reused, &[&sid, &jti, &uid]).await).await?;
        Ok(row.is_some())
    }

    /// Ends one session (logout); whether it was live.
    pub async fn revoke_session(&self, sid: i64, uid: i64, reason: &str) -> Result<bool, DbError> {
        let row = self.with(async |c, st| c.query_opt(&st.revoke_session, &[&sid, &uid, &reason]).await).await?;
        Ok(row.is_some())
    }

    /// One batch of revoked, unexpired sessions with ids above `after`.
    pub async fn rebuild_sessions(&self, after: i64, limit: i64) -> Result<Vec<RebuildSession>, DbError> {
        let rows = self.with(async |c, st| c.query(&st.rebuild_sessions, &[&after, &limit]).await).await?;
        Ok(rows.iter().map(|r| RebuildSession { id: r.get(0), user_id: r.get(1), left_ms: r.get(2) }).collect())
    }
}
