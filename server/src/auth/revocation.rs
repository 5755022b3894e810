//! Revocation: PostgreSQL is the truth, Redis answers the hot path.
//!
//! # What makes a token dead
//! A token names its user (`sub`) and session (`sid`). It is dead when
//! 1. the user is not `active`, or
//! 2. its session id is at most the user's `min_session_id`, or
//! 3. its session was revoked (logout, refresh-token reuse).
//!
//! An external provider's token (`auth::external`) fits the same three
//! rules: its user is the local user of its subject, its place on the
//! not-before clock is its `iat`, and "its session was revoked" is "this
//! token was logged out" (`xrev` keys, table `external_revocations`).
//! For such a user, status changes and logout-all set `min_session_id` to
//! the current second, so a token whose `iat` is at or before the second of
//! the change is dead (API.md). `iat` is the provider's clock, so the rule
//! is as exact as the two clocks agree: a provider running S seconds ahead
//! lets a token issued up to S seconds before a logout-all or re-activation
//! live on (S seconds behind, it refuses tokens issued up to S seconds
//! after). A ban itself does not depend on clocks: while the user is not
//! active, every token of it is refused. Keep both clocks on NTP.
//!
//! Rule 2 covers status changes and logout-all: both set `min_session_id`
//! from the session id *sequence*, inside a transaction that first locks the
//! user row. A session created before that moment has a smaller id and dies;
//! one created after (a fresh login after re-activation) has a larger id and
//! lives. Comparing sequence values instead of timestamps means no clock and
//! no tie: a token from the same second (or microsecond) as a ban, but from a
//! session opened before it, is refused, and a login one millisecond after a
//! re-activation works. Because every status change moves `min_session_id`,
//! re-activating a user does not resurrect anything issued before (API.md,
//! "Revocation" rule 2).
//!
//! # The hot path (flow A)
//! After the JWT verifies, ONE Redis command (an MGET) fetches
//! `epoch`, the user's `nbf` (`MIN:a` or `MIN:b`, b = blocked) and the
//! session's `sess` key, plus, for `GET /tasks`, the cache's generation tag
//! and page (see `cache`). The decision needs nothing else.
//!
//! # When Redis cannot be trusted
//! `crate::trust` decides; this module acts on it:
//! - Redis errors or times out: the same facts come from PostgreSQL in one
//!   query. If PostgreSQL fails too: 503, never an accept.
//! - Redis is not trusted (its configuration may evict, or a write to it
//!   failed): PostgreSQL answers without asking Redis.
//! - Redis lost its state (restart with or without a snapshot, FLUSHALL, a
//!   promoted replica): `epoch` is missing or names another Redis process,
//!   so the answer comes from PostgreSQL and a rebuild starts: blocked users,
//!   recent not-befores and unexpired revoked sessions are copied from
//!   PostgreSQL in batches, then `epoch` is set to a new id bound to the
//!   process, unless a flush or a failed write voided the rebuild marker
//!   meanwhile (checked and set in one Lua call). On a cluster each slot
//!   has its epoch, and a rebuild restores only the slots whose epoch it
//!   finds void, and only their users' entries ([`Scope::Lost`]).
//!
//! Access tokens never outlive their session (`token::Tokens::issue` caps
//! `exp` at the session's expiry), so a rebuild may skip expired sessions.
//!
//! # Writes (flow C)
//! PostgreSQL commits first, then Redis is written, then the client is
//! answered. `nbf` entries are written by a Lua script that keeps the entry
//! with the larger `MIN` (the later commit, since the row lock orders them),
//! so concurrent changes end with the newest in Redis. Entries live as long
//! as the refresh lifetime: no token older than that can still be valid.

use crate::auth::token::Principal;
use crate::background::Background;
use crate::db::Db;
use crate::http::error::ApiError;
use crate::kv::Kv;
use crate::metrics::{CheckSource, ExternalOutcome, Metrics};
use crate::trust::{EpochId, Trust, parse_epoch};
use futures_util::StreamExt;
use redis::Script;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Keeps the entry with the larger not-before; sets its TTL. A blocked
/// user's entry has none: it must refuse tokens issued while blocked too,
/// which an external provider keeps issuing (ours does not).
/// KEYS[1] = nbf key; ARGV = min session id, state (a|b), ttl ms.
const NEWEST_WINS: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local c = tonumber(string.match(cur, '^(%d+)'))
  if c and c > tonumber(ARGV[1]) then return 0 end
end
if ARGV[2] == 'b' then
  redis.call('SET', KEYS[1], ARGV[1] .. ':b')
else
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
end
return 1
";

/// Sets `epoch` to `REBUILD_ID:RUN_ID` only if the rebuild marker is still
/// ours (no flush and no failed write since). The `run_id` is read by the
/// script on the node that holds the keys, so the epoch names the process
/// that has them, one Redis or a cluster's node alike.
/// KEYS = rebuild marker, epoch; ARGV = rebuild id.
const FINISH_REBUILD: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
  if not run_id then return 0 end
  redis.call('SET', KEYS[2], ARGV[1] .. ':' .. run_id)
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// Rows read from PostgreSQL per batch of a rebuild.
const REBUILD_BATCH: i64 = 1000;

/// Which epochs a rebuild restores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every one. At start-up: a predecessor may have died between a
    /// commit in PostgreSQL and its mirror in Redis.
    All,
    /// Those missing, naming another Redis process, or left by a rebuild
    /// that never finished: what a check found void.
    Lost,
}

/// What a rebuild did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rebuilt {
    /// Restored this many epochs (one per Redis, or per cluster slot);
    /// 0 when none was void.
    Restored(usize),
    /// A slot was flushed, or a write fell behind, meanwhile: it stays
    /// void, and the next check that finds it so starts another rebuild.
    /// The others (this many) were restored.
    Voided(usize),
}

/// What a passed check learned besides "not revoked".
#[derive(Debug, Default)]
pub struct Checked {
    /// The epoch Redis was trusted under; None when PostgreSQL answered.
    pub epoch: Option<EpochId>,
    /// The values of the caller's extra keys, in order; empty when
    /// PostgreSQL answered (Redis's values are not to be used then).
    pub extra: Vec<Option<Vec<u8>>>,
}

/// Is the token (user, session) dead, given the user's state? The one
/// decision function, shared by the Redis and PostgreSQL paths.
pub fn is_revoked(session_id: i64, blocked: bool, min_session_id: i64, session_revoked: bool) -> bool {
    blocked || session_id <= min_session_id || session_revoked
}

/// Parses an `nbf` entry `MIN:a|b` into (blocked, min); garbage is blocked,
/// failing closed.
pub fn parse_nbf(v: &[u8]) -> (bool, i64) {
    let s = std::str::from_utf8(v).unwrap_or("");
    match s.split_once(':') {
        Some((min, state)) => match min.parse::<i64>() {
            Ok(min) => (state != "a", min),
            Err(_) => (true, i64::MAX),
        },
        None => (true, i64::MAX),
    }
}

/// The revocation service.
pub struct Revocation {
    kv: Kv,
    db: Db,
    trust: Arc<Trust>,
    background: Background,
    metrics: Arc<Metrics>,
    entry_ttl: Duration,
    newest_wins: Script,
    finish_rebuild: Script,
    rebuilding: AtomicBool,
}

impl Revocation {
    /// The service. `entry_ttl` is how long a revocation entry must live:
    /// as long as the longest-lived token it could refuse.
    pub fn new(
        kv: Kv,
        db: Db,
        trust: Arc<Trust>,
        background: Background,
        metrics: Arc<Metrics>,
        entry_ttl: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            kv,
            db,
            trust,
            background,
            metrics,
            entry_ttl,
            newest_wins: Script::new(NEWEST_WINS),
            finish_rebuild: Script::new(FINISH_REBUILD),
            rebuilding: AtomicBool::new(false),
        })
    }

    /// Flow A: refuses a dead token with 401. `extra` are keys another part
    /// of the request wants in the same round trip (the task cache's tag and
    /// page); their values come back only when Redis was trusted. `lane`:
    /// the lane the request runs on (`http::lanes`), if any.
    pub async fn check(
        self: &Arc<Self>,
        p: &Principal,
        extra: &[String],
        lane: Option<usize>,
    ) -> Result<Checked, ApiError> {
        if self.trust.usable(|| self.kv.keys.pair_of(p.user_id)) {
            let k = &self.kv.keys;
            let mut mget = redis::cmd("MGET");
            mget.arg(k.epoch_for(p.user_id).as_ref()).arg(k.nbf(p.user_id));
            match &p.external {
                None => mget.arg(k.sess(p.user_id, p.session_id)),
                Some(key) => mget.arg(k.xrev(p.user_id, key)),
            };
            for key in extra {
                mget.arg(key);
            }
            if let Ok((values, origin)) = self.kv.mget_origin("revocation_check", &mget, lane).await {
                let mut v = values.into_iter();
                let (epoch, nbf, sess) = (v.next().flatten(), v.next().flatten(), v.next().flatten());
                match epoch.as_deref().and_then(|e| parse_epoch(e, &origin)) {
                    Some(id) => {
                        let (blocked, min) = nbf.as_deref().map(parse_nbf).unwrap_or((false, 0));
                        let revoked = is_revoked(p.session_id, blocked, min, sess.is_some());
                        self.count(p, CheckSource::Redis, revoked);
                        if revoked {
                            return Err(ApiError::invalid_token("revoked (redis)"));
                        }
                        return Ok(Checked { epoch: Some(id), extra: v.collect() });
                    }
                    // Missing, or written to another Redis process: Redis
                    // lost state. PostgreSQL answers; Redis is rebuilt.
                    None => self.start_rebuild(),
                }
            }
        }
        self.check_db(p, lane).await?;
        Ok(Checked::default())
    }

    /// The same decision from PostgreSQL, in one query (on the lane's
    /// connection: with Redis out, every request asks here).
    async fn check_db(&self, p: &Principal, lane: Option<usize>) -> Result<(), ApiError> {
        let state = match &p.external {
            None => self.db.revocation_state(p.user_id, p.session_id, lane).await?,
            Some(key) => self.db.external_revocation_state(p.user_id, key, lane).await?,
        };
        let revoked = match state {
            None => true,
            Some(s) => is_revoked(p.session_id, !s.status.is_active(), s.min_session_id, !s.session_live),
        };
        self.count(p, CheckSource::Db, revoked);
        if revoked { Err(ApiError::invalid_token("revoked (db)")) } else { Ok(()) }
    }

    fn count(&self, p: &Principal, source: CheckSource, revoked: bool) {
        self.metrics.revocation_check(source, revoked);
        if p.external.is_some() {
            self.metrics.external_token(if revoked { ExternalOutcome::Revoked } else { ExternalOutcome::Allowed });
        }
    }

    /// After an external token's logout was recorded in PostgreSQL: mirror
    /// it until the token expires (`exp`, Unix seconds).
    pub async fn external_token_revoked(&self, uid: i64, token_key: &str, exp: i64) {
        let left_ms = exp.saturating_mul(1000).saturating_sub(crate::kv::now_ms() as i64).max(1);
        let cmd = redis::cmd("SET").arg(self.kv.keys.xrev(uid, token_key)).arg(1).arg("PX").arg(left_ms).to_owned();
        if self.kv.run_always::<(), _>("revocation_write", &cmd).await.is_err() {
            self.trust.fell_behind(self.kv.keys.pair_of(uid)).await;
        }
    }

    /// After a session was revoked in PostgreSQL: mirror it to Redis.
    pub async fn session_revoked(&self, uid: i64, sid: i64) {
        let cmd = redis::cmd("SET")
            .arg(self.kv.keys.sess(uid, sid))
            .arg(1)
            .arg("PX")
            .arg(self.entry_ttl.as_millis() as u64)
            .to_owned();
        if self.kv.run_always::<(), _>("revocation_write", &cmd).await.is_err() {
            self.trust.fell_behind(self.kv.keys.pair_of(uid)).await;
        }
    }

    /// After a not-before moved in PostgreSQL: mirror it, newest wins.
    pub async fn not_before_moved(&self, uid: i64, min_session_id: i64, active: bool) {
        let key = self.kv.keys.nbf(uid);
        let mut inv = self.newest_wins.key(key);
        inv.arg(min_session_id).arg(if active { "a" } else { "b" }).arg(self.entry_ttl.as_millis() as u64);
        if self.kv.run_always::<i64, _>("revocation_write", &inv).await.is_err() {
            self.trust.fell_behind(self.kv.keys.pair_of(uid)).await;
        }
    }

    /// Starts a rebuild of what Redis lost unless one is running in this
    /// process. The rebuild is a job: it runs to its end (or fails) even
    /// during shutdown.
    pub fn start_rebuild(self: &Arc<Self>) {
        if self.background.is_stopping() || self.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        drop(self.background.job(async move {
            match this.rebuild(Scope::Lost).await {
                Ok(Rebuilt::Restored(0)) => {}
                Ok(Rebuilt::Restored(n)) => {
                    tracing::info!(epochs = n, "revocation state rebuilt in Redis from PostgreSQL")
                }
                Ok(Rebuilt::Voided(_)) => {
                    tracing::warn!("Redis was flushed or fell behind during the rebuild; will rebuild again")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rebuilding Redis from PostgreSQL failed; will retry")
                }
            }
            this.rebuilding.store(false, Ordering::Release);
        }));
    }

    /// Copies every revocation that can still matter from PostgreSQL into
    /// Redis, in batches, then marks Redis complete under a new epoch bound
    /// to the Redis process (on a cluster, each slot's epoch to its node's
    /// process). With [`Scope::Lost`], only the epochs found void and the
    /// users they vouch for: on a cluster, the slots of the primary that
    /// was flushed, restarted or promoted, or that migrated; every other
    /// slot keeps its epoch, so its users' cached pages stay valid.
    pub async fn rebuild(&self, scope: Scope) -> anyhow::Result<Rebuilt> {
        let result = self.restore(scope).await;
        match &result {
            Ok(Rebuilt::Restored(0)) => {}
            Ok(Rebuilt::Restored(n)) => self.metrics.redis_rebuild("restored", *n),
            Ok(Rebuilt::Voided(n)) => self.metrics.redis_rebuild("voided", *n),
            Err(_) => self.metrics.redis_rebuild("failed", 0),
        }
        result
    }

    async fn restore(&self, scope: Scope) -> anyhow::Result<Rebuilt> {
        let k = &self.kv.keys;
        let all = k.epoch_pairs();
        let lost: Vec<bool> = match scope {
            Scope::All => vec![true; all.len()],
            Scope::Lost => {
                let epochs: Vec<String> = all.iter().map(|(_, epoch)| epoch.clone()).collect();
                let found = self.kv.get_each_origin("rebuild", &epochs).await?;
                found
                    .iter()
                    .map(|(value, origin)| value.as_deref().and_then(|v| parse_epoch(v, origin)).is_none())
                    .collect()
            }
        };
        let pairs: Vec<(String, String)> = all.into_iter().zip(&lost).filter(|(_, l)| **l).map(|(p, _)| p).collect();
        if pairs.is_empty() {
            return Ok(Rebuilt::Restored(0));
        }
        let id = EpochId::random();
        let marks =
            pairs.iter().map(|(mark, _)| redis::cmd("SET").arg(mark).arg(id.hex()).arg("PX").arg(120_000).to_owned());
        self.kv.run_each("rebuild", marks.collect()).await?;
        let covered = |uid: i64| lost[k.pair_of(uid)];
        let ttl = self.entry_ttl.as_millis() as u64;
        // EVAL with the script's text: a batch may reach nodes that never
        // loaded it, and a rebuild is rare.
        let newest_wins = |key: String, min: i64, active: bool| {
            redis::cmd("EVAL")
                .arg(NEWEST_WINS)
                .arg(1)
                .arg(key)
                .arg(min)
                .arg(if active { "a" } else { "b" })
                .arg(ttl)
                .to_owned()
        };
        let mut after = 0;
        loop {
            let users = self.db.rebuild_users(self.entry_ttl, after, REBUILD_BATCH).await?;
            let Some(last) = users.last() else { break };
            after = last.id;
            let cmds = users
                .iter()
                .filter(|u| covered(u.id))
                .map(|u| newest_wins(k.nbf(u.id), u.min_session_id, u.status.is_active()));
            self.kv.run_each("rebuild", cmds.collect()).await?;
        }
        let mut after = 0;
        loop {
            let sessions = self.db.rebuild_sessions(after, REBUILD_BATCH).await?;
            let Some(last) = sessions.last() else { break };
            after = last.id;
            let cmds = sessions.iter().filter(|s| covered(s.user_id)).map(|s| {
                redis::cmd("SET").arg(k.sess(s.user_id, s.id)).arg(1).arg("PX").arg(s.left_ms.max(1)).to_owned()
            });
            self.kv.run_each("rebuild", cmds.collect()).await?;
        }
        let mut after = 0;
        loop {
            let tokens = self.db.rebuild_external_revocations(after, REBUILD_BATCH).await?;
            let Some(last) = tokens.last() else { break };
            after = last.id;
            let cmds = tokens.iter().filter(|t| covered(t.user_id)).map(|t| {
                redis::cmd("SET").arg(k.xrev(t.user_id, &t.token_key)).arg(1).arg("PX").arg(t.left_ms.max(1)).to_owned()
            });
            self.kv.run_each("rebuild", cmds.collect()).await?;
        }
        let finished = futures_util::stream::iter(pairs)
            .map(|(mark, epoch)| {
                let mut fin = self.finish_rebuild.key(mark);
                fin.key(epoch).arg(id.hex());
                async move { self.kv.run::<i64, _>("rebuild", &fin).await }
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await;
        let (mut restored, mut voided) = (0, 0);
        for f in finished {
            if f? == 1 { restored += 1 } else { voided += 1 }
        }
        Ok(if voided == 0 { Rebuilt::Restored(restored) } else { Rebuilt::Voided(restored) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_opened_before_the_not_before_is_dead() {
        assert!(is_revoked(10, false, 10, false));
        assert!(is_revoked(9, false, 10, false));
        assert!(!is_revoked(11, false, 10, false));
    }

    #[test]
    fn a_blocked_user_or_revoked_session_is_dead_whatever_the_ids() {
        assert!(is_revoked(100, true, 0, false));
        assert!(is_revoked(100, false, 0, true));
    }

    #[test]
    fn nbf_entries_parse_and_garbage_fails_closed() {
        assert_eq!(parse_nbf(b"42:a"), (false, 42));
        assert_eq!(parse_nbf(b"42:b"), (true, 42));
        assert_eq!(parse_nbf(b"junk"), (true, i64::MAX));
        assert_eq!(parse_nbf(b"x:a"), (true, i64::MAX));
    }
}
