//! Revocation: PostgreSQL is the truth, Redis answers the hot path.
//!
//! # What makes a token dead
//! A token names its user (`sub`) and session (`sid`). It is dead when
//! 1. the user is not `active`, or
//! 2. its session id is at most the user's `min_session_id`, or
//! 3. its session was revoked (logout, refresh-token reuse).
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
//! and page (see `tasks::cache`). The decision needs nothing else.
//!
//! # When Redis cannot be trusted
//! - Redis errors or times out: the same facts come from PostgreSQL in one
//!   query. If PostgreSQL fails too: 503, never an accept.
//! - Redis lost its state (restart, FLUSHALL, eviction of `epoch`): `epoch`
//!   is missing, so the answer comes from PostgreSQL and a rebuild starts:
//!   blocked users, recent not-befores and unexpired revoked sessions are
//!   copied from PostgreSQL, then `epoch` is set, unless a flush happened
//!   meanwhile (the `rebuild` marker is checked and `epoch` set in one Lua
//!   call). Run Redis without persistence: an old snapshot brought back
//!   would carry an old `epoch`.
//! - A revocation committed in PostgreSQL could not be written to Redis:
//!   this instance answers from PostgreSQL and keeps trying to delete
//!   `epoch`; once that succeeds every instance rebuilds from PostgreSQL.
//!   (Until then another instance that still reaches a Redis this one cannot
//!   would not see the revocation: a partition of one instance from a live
//!   Redis, bounded by the retry interval once it heals.)
//!
//! # Writes (flow C)
//! PostgreSQL commits first, then Redis is written, then the client is
//! answered. `nbf` entries are written by a Lua script that keeps the entry
//! with the larger `MIN` (the later commit, since the row lock orders them),
//! so concurrent changes end with the newest in Redis. Entries live as long
//! as the refresh lifetime: no token older than that can still be valid.

use crate::auth::token::Principal;
use crate::db::Db;
use crate::http::error::ApiError;
use crate::kv::Kv;
use crate::metrics::{CheckSource, Metrics};
use redis::Script;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Keeps the entry with the larger not-before; sets its TTL.
/// KEYS[1] = nbf key; ARGV = min session id, state (a|b), ttl ms.
const NEWEST_WINS: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local c = tonumber(string.match(cur, '^(%d+)'))
  if c and c > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
return 1
";

/// Sets `epoch` only if the rebuild marker is still ours (no flush since).
/// KEYS = rebuild marker, epoch; ARGV[1] = rebuild id.
const FINISH_REBUILD: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[1])
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// How often a failed Redis write is followed by an attempt to void `epoch`.
const EPOCH_RESET_RETRY: Duration = Duration::from_millis(100);

/// The extra keys a caller wants in the same round trip (the task cache).
pub struct CacheKeys {
    /// The user's generation key.
    pub tgen: String,
    /// The page's key.
    pub page: String,
}

/// What Redis said about the cache keys.
#[derive(Debug, Default)]
pub struct CacheProbe {
    /// The user's generation tag (None: no tag yet, or Redis lost it).
    pub tag: Option<Vec<u8>>,
    /// The stored page, `TAG\nBODY`.
    pub entry: Option<Vec<u8>>,
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
    metrics: Arc<Metrics>,
    refresh_ttl: Duration,
    newest_wins: Script,
    finish_rebuild: Script,
    rebuilding: AtomicBool,
    /// Set when a revocation could not reach Redis: answer from PostgreSQL
    /// until `epoch` has been voided.
    redis_behind: AtomicBool,
}

impl Revocation {
    /// The service.
    pub fn new(kv: Kv, db: Db, metrics: Arc<Metrics>, refresh_ttl: Duration) -> Arc<Self> {
        Arc::new(Self {
            kv,
            db,
            metrics,
            refresh_ttl,
            newest_wins: Script::new(NEWEST_WINS),
            finish_rebuild: Script::new(FINISH_REBUILD),
            rebuilding: AtomicBool::new(false),
            redis_behind: AtomicBool::new(false),
        })
    }

    /// Flow A: refuses a dead token with 401. `cache` adds the task cache's
    /// keys to the same round trip; their values come back when Redis
    /// answered (None when the answer came from PostgreSQL alone).
    pub async fn check(
        self: &Arc<Self>,
        p: &Principal,
        cache: Option<CacheKeys>,
    ) -> Result<Option<CacheProbe>, ApiError> {
        if !self.redis_behind.load(Ordering::Relaxed) {
            let k = &self.kv.keys;
            let mut mget = redis::cmd("MGET");
            mget.arg(k.epoch()).arg(k.nbf(p.user_id)).arg(k.sess(p.user_id, p.session_id));
            if let Some(c) = &cache {
                mget.arg(&c.tgen).arg(&c.page);
            }
            let reply: Result<Vec<Option<Vec<u8>>>, _> = self.kv.run("revocation_check", &mget).await;
            if let Ok(values) = reply {
                let mut v = values.into_iter();
                let (epoch, nbf, sess) = (v.next().flatten(), v.next().flatten(), v.next().flatten());
                let probe = cache.as_ref().map(|_| CacheProbe { tag: v.next().flatten(), entry: v.next().flatten() });
                if epoch.is_some() {
                    let (blocked, min) = nbf.as_deref().map(parse_nbf).unwrap_or((false, 0));
                    let revoked = is_revoked(p.session_id, blocked, min, sess.is_some());
                    self.metrics.revocation_check(CheckSource::Redis, revoked);
                    if revoked {
                        return Err(ApiError::invalid_token("revoked (redis)"));
                    }
                    return Ok(probe);
                }
                // Redis lost its state: rebuild in the background, answer
                // from PostgreSQL now. The cache probe stays usable: its
                // correctness rests on generation tags, not on `epoch`.
                self.start_rebuild();
                self.check_db(p).await?;
                return Ok(probe);
            }
        }
        self.check_db(p).await?;
        Ok(None)
    }

    /// The same decision from PostgreSQL, in one query.
    async fn check_db(&self, p: &Principal) -> Result<(), ApiError> {
        let c = self.db.conn().await?;
        let row = c
            .client
            .query_opt(&c.st.revocation_state, &[&p.user_id, &p.session_id])
            .await
            .map_err(|e| self.db.fail(e))?;
        let revoked = match row {
            None => true,
            Some(r) => {
                let status: &str = r.get(0);
                let min: i64 = r.get(1);
                let live: bool = r.get::<_, Option<bool>>(2).unwrap_or(false);
                is_revoked(p.session_id, status != "active", min, !live)
            }
        };
        self.metrics.revocation_check(CheckSource::Db, revoked);
        if revoked { Err(ApiError::invalid_token("revoked (db)")) } else { Ok(()) }
    }

    /// After a session was revoked in PostgreSQL: mirror it to Redis.
    pub async fn session_revoked(self: &Arc<Self>, uid: i64, sid: i64) {
        let cmd = redis::cmd("SET")
            .arg(self.kv.keys.sess(uid, sid))
            .arg(1)
            .arg("PX")
            .arg(self.refresh_ttl.as_millis() as u64)
            .to_owned();
        if self.kv.run::<(), _>("revocation_write", &cmd).await.is_err() {
            self.redis_fell_behind();
        }
    }

    /// After a not-before moved in PostgreSQL: mirror it, newest wins.
    pub async fn not_before_moved(self: &Arc<Self>, uid: i64, min_session_id: i64, active: bool) {
        let key = self.kv.keys.nbf(uid);
        let mut inv = self.newest_wins.key(key);
        inv.arg(min_session_id).arg(if active { "a" } else { "b" }).arg(self.refresh_ttl.as_millis() as u64);
        if self.kv.run::<i64, _>("revocation_write", &inv).await.is_err() {
            self.redis_fell_behind();
        }
    }

    /// A revocation is in PostgreSQL but not in Redis: stop trusting Redis
    /// here, and void `epoch` as soon as Redis answers so every instance
    /// stops trusting it and rebuilds.
    fn redis_fell_behind(self: &Arc<Self>) {
        if self.redis_behind.swap(true, Ordering::AcqRel) {
            return; // a retry loop is already running
        }
        tracing::warn!("a revocation could not be written to Redis; answering from PostgreSQL until Redis is reset");
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let del = redis::cmd("DEL").arg(this.kv.keys.epoch()).to_owned();
            loop {
                if this.kv.run::<i64, _>("epoch_reset", &del).await.is_ok() {
                    this.redis_behind.store(false, Ordering::Release);
                    tracing::info!("Redis epoch voided; instances will rebuild from PostgreSQL");
                    return;
                }
                tokio::time::sleep(EPOCH_RESET_RETRY).await;
            }
        });
    }

    /// Starts a rebuild unless one is running in this process.
    pub fn start_rebuild(self: &Arc<Self>) {
        if self.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move {
            match this.rebuild().await {
                Ok(true) => tracing::info!("revocation state rebuilt in Redis from PostgreSQL"),
                Ok(false) => {
                    tracing::warn!("Redis was flushed during the rebuild; will rebuild again")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rebuilding Redis from PostgreSQL failed; will retry")
                }
            }
            this.rebuilding.store(false, Ordering::Release);
        });
    }

    /// Copies every revocation that can still matter from PostgreSQL into
    /// Redis, then marks Redis trustworthy. Returns whether it did.
    pub async fn rebuild(&self) -> anyhow::Result<bool> {
        let k = &self.kv.keys;
        let id = format!("{:016x}", rand::random::<u64>());
        let mark = redis::cmd("SET").arg(k.rebuild()).arg(&id).arg("PX").arg(120_000).to_owned();
        self.kv.run::<(), _>("rebuild", &mark).await?;
        let (users, sessions) = {
            let c = self.db.conn().await?;
            let secs = self.refresh_ttl.as_secs_f64();
            let users = c.client.query(&c.st.rebuild_users, &[&secs]).await.map_err(|e| self.db.fail(e))?;
            let sessions = c.client.query(&c.st.rebuild_sessions, &[]).await.map_err(|e| self.db.fail(e))?;
            (users, sessions)
        };
        let ttl = self.refresh_ttl.as_millis() as u64;
        let sha = self.newest_wins.get_hash().to_owned();
        let load = redis::cmd("SCRIPT").arg("LOAD").arg(NEWEST_WINS).to_owned();
        self.kv.run::<String, _>("rebuild", &load).await?;
        for chunk in users.chunks(500) {
            let mut pipe = redis::pipe();
            for r in chunk {
                let (uid, status, min): (i64, &str, i64) = (r.get(0), r.get(1), r.get(2));
                pipe.cmd("EVALSHA")
                    .arg(&sha)
                    .arg(1)
                    .arg(k.nbf(uid))
                    .arg(min)
                    .arg(if status == "active" { "a" } else { "b" })
                    .arg(ttl)
                    .ignore();
            }
            self.kv.run::<(), _>("rebuild", &pipe).await?;
        }
        for chunk in sessions.chunks(500) {
            let mut pipe = redis::pipe();
            for r in chunk {
                let (sid, uid, left_ms): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
                pipe.cmd("SET").arg(k.sess(uid, sid)).arg(1).arg("PX").arg(left_ms.max(1)).ignore();
            }
            self.kv.run::<(), _>("rebuild", &pipe).await?;
        }
        let mut fin = self.finish_rebuild.key(k.rebuild());
        fin.key(k.epoch()).arg(&id);
        let done: i64 = self.kv.run("rebuild", &fin).await?;
        Ok(done == 1)
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
