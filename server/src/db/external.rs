//! The `external_revocations` table: external tokens ended by logout, kept
//! until they expire (the provider cannot take them back).

use super::{Db, DbError};

/// A logged-out, unexpired external token a rebuild copies into Redis.
pub struct RebuildExternal {
    /// Row id (the rebuild's paging key).
    pub id: i64,
    /// Its user.
    pub user_id: i64,
    /// The token's key (`auth::external::token_key`).
    pub token_key: String,
    /// Milliseconds until it expires.
    pub left_ms: i64,
}

impl Db {
    /// Records that the external token `token_key` of `uid` is logged out
    /// until `exp` (Unix seconds). Idempotent.
    pub async fn revoke_external_token(&self, uid: i64, token_key: &str, exp: i64) -> Result<(), DbError> {
        let exp = exp as f64;
        self.with(async |c, st| c.execute(&st.revoke_external_token, &[&uid, &token_key, &exp]).await).await?;
        Ok(())
    }

    /// One batch of logged-out external tokens, ids above `after`.
    pub async fn rebuild_external_revocations(&self, after: i64, limit: i64) -> Result<Vec<RebuildExternal>, DbError> {
        let rows = self.with(async |c, st| c.query(&st.rebuild_external_revocations, &[&after, &limit]).await).await?;
        Ok(rows
            .iter()
            .map(|r| RebuildExternal { id: r.get(0), user_id: r.get(1), token_key: r.get(2), left_ms: r.get(3) })
            .collect())
    }
}
