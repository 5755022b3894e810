//! Redis: the pool, the key layout and the failure policy.
//!
//! Redis is an accelerator, never the source of truth (API.md, "Revocation"
//! rule 6): every caller has a PostgreSQL answer for when this module says
//! no. So failures here are fast and quiet:
//! - each call is bounded by `REDIS_TIMEOUT_MS` (checkout, then response);
//! - after a connection failure or timeout, calls are refused without trying
//!   for [`BREAKER_OPEN`], so an outage costs one timeout, not one per request;
//! - every failure counts in `dependency_errors_total{dependency="redis"}`.
//!
//! Pooling: bb8 over *multiplexed* connections. A checkout only clones the
//! connection handle and gives the slot back at once, so the commands of
//! concurrent requests are pipelined on a few sockets (Redis answers ~10x
//! more commands per second pipelined than one per round trip). This is why
//! the manager is our own and not bb8-redis's: that one pings on every
//! checkout (a second round trip per request) or, with the ping off, never
//! notices a dead multiplexed connection. Ours marks a connection broken when
//! a command on it fails at the I/O level, and bb8 drops it on return.

use crate::metrics::Metrics;
use bb8::{ManageConnection, Pool};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, FromRedisValue, RedisError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long Redis is skipped after it failed.
pub const BREAKER_OPEN: Duration = Duration::from_millis(500);

/// Why a Redis call gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// Redis failed recently; not tried.
    #[error("Redis skipped: it failed less than {BREAKER_OPEN:?} ago")]
    Skipped,
    /// No answer within `REDIS_TIMEOUT_MS`.
    #[error("Redis did not answer in time")]
    Timeout,
    /// Redis answered with an error, or the connection failed.
    #[error("Redis: {0}")]
    Redis(#[from] RedisError),
}

/// A pooled multiplexed connection, whether it has failed, and the
/// `run_id` of the Redis process it reached.
///
/// The `run_id` is what lets the revocation check tell "this Redis holds
/// what we wrote" from "this is a Redis that merely has our keys": every
/// start of a Redis process gets a new random `run_id`, including a start
/// that loads an old RDB or AOF snapshot, and a promoted replica has its
/// own. A connection cannot outlive the process it reached, so the id read
/// once at connect is the id of every answer on that connection.
pub struct RedisConn {
    conn: MultiplexedConnection,
    broken: Arc<AtomicBool>,
    run_id: Arc<str>,
}

/// bb8 manager for [`RedisConn`].
pub struct RedisManager {
    client: redis::Client,
    timeout: Duration,
}

impl ManageConnection for RedisManager {
    type Connection = RedisConn;
    type Error = RedisError;

    async fn connect(&self) -> Result<RedisConn, RedisError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let mut conn = self.client.get_multiplexed_async_connection_with_config(&cfg).await?;
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await?;
        // Without a run_id (INFO refused) nothing this Redis says can be
        // bound to its process: the empty id never matches an epoch.
        let run_id = info_field(&info, "run_id").unwrap_or_default();
        Ok(RedisConn { conn, broken: Arc::new(AtomicBool::new(false)), run_id: Arc::from(run_id) })
    }

    async fn is_valid(&self, conn: &mut RedisConn) -> Result<(), RedisError> {
        redis::cmd("PING").query_async::<()>(&mut conn.conn).await
    }

    fn has_broken(&self, conn: &mut RedisConn) -> bool {
        conn.broken.load(Ordering::Relaxed)
    }
}

/// The value of `field` in an `INFO` reply (`field:value` lines).
pub fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':'))).map(str::trim)
}

/// Key names. Every key of one user carries the hash tag `{u:ID}`, so the
/// multi-key commands of a request stay legal on Redis Cluster.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
    /// Read on every authenticated request: built once.
    epoch: String,
}

impl Keys {
    /// Keys under `prefix` (`REDIS_KEY_PREFIX`).
    pub fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned(), epoch: format!("{prefix}:epoch") }
    }
    /// `REBUILD_ID:RUN_ID` of the last rebuild from PostgreSQL (see
    /// `trust`); missing or naming another process = Redis lost state.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }
    /// The epoch that vouches for `uid`'s keys. One key for a single Redis;
    /// the signature lets a cluster keep one per slot, in the slot of the
    /// user's hash tag, so the check stays one command on one node.
    pub fn epoch_for(&self, _uid: i64) -> &str {
        &self.epoch
    }
    /// Marker of a rebuild in progress (a flush during it voids it).
    pub fn rebuild(&self) -> String {
        format!("{}:rebuild", self.prefix)
    }
    /// `PREFIX:{u:UID}:` then `rest`. Four of these are built on every
    /// cached `GET /tasks`; `format!` cost about 700 instructions each
    /// (callgrind), pushing the parts about a tenth of that.
    fn user_key(&self, uid: i64, rest: &[&str]) -> String {
        let mut n = itoa::Buffer::new();
        let uid = n.format(uid);
        let len = self.prefix.len() + uid.len() + 6 + rest.iter().map(|r| r.len()).sum::<usize>();
        let mut k = String::with_capacity(len);
        for part in [&self.prefix, ":{u:", uid, "}:"] {
            k.push_str(part);
        }
        for part in rest {
            k.push_str(part);
        }
        k
    }
    /// The user's not-before: `MIN_SESSION_ID:a` (active) or `:b` (blocked).
    pub fn nbf(&self, uid: i64) -> String {
        self.user_key(uid, &["nbf"])
    }
    /// Present when the session is revoked.
    pub fn sess(&self, uid: i64, sid: i64) -> String {
        self.user_key(uid, &["sess:", itoa::Buffer::new().format(sid)])
    }
    /// Present when the external token with this key (see
    /// `auth::external::token_key`) was logged out.
    pub fn xrev(&self, uid: i64, token_key: &str) -> String {
        self.user_key(uid, &["xrev:", token_key])
    }
    /// The user's task-list generation tag.
    pub fn tgen(&self, uid: i64) -> String {
        self.user_key(uid, &["tgen"])
    }
    /// One cached task-list page of the user: `TAG\nBODY`, per query shape.
    pub fn page(&self, uid: i64, shape: &str) -> String {
        self.user_key(uid, &["tasks:", shape])
    }
    /// The generation tag of the GraphQL post pages (one for everyone).
    pub fn posts_gen(&self) -> String {
        format!("{}:{{posts}}:gen", self.prefix)
    }
    /// One cached page of posts: `TAG\nBODY`, per page shape.
    pub fn posts_page(&self, shape: &str) -> String {
        format!("{}:{{posts}}:page:{shape}", self.prefix)
    }
    /// Login attempt counter of one account, by the SHA-256 of its
    /// canonical email (`auth::email::digest`): 64 bytes whatever was sent.
    pub fn login_attempts(&self, digest: &str) -> String {
        format!("{}:login:{{{digest}}}", self.prefix)
    }
}

/// Cheap-to-clone Redis handle.
#[derive(Clone)]
pub struct Kv {
    pool: Pool<RedisManager>,
    /// Key names.
    pub keys: Keys,
    metrics: Arc<Metrics>,
    /// Unix ms until which calls are skipped.
    open_until: Arc<AtomicU64>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Kv {
    /// A lazily connecting pool: Redis may be down at start.
    pub fn new(url: &str, prefix: &str, size: u32, timeout: Duration, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let pool = Pool::builder()
            .max_size(size)
            .connection_timeout(timeout)
            .test_on_check_out(false)
            .build_unchecked(RedisManager { client, timeout });
        Ok(Self { pool, keys: Keys::new(prefix), metrics, open_until: Arc::new(AtomicU64::new(0)) })
    }

    /// Runs one command or pipeline, bounded by the timeout. `op` labels
    /// `dependency_errors_total` on failure.
    pub async fn run<T, C>(&self, op: &'static str, cmd: &C) -> Result<T, KvError>
    where
        T: FromRedisValue + Send,
        C: Runnable + ?Sized,
    {
        self.run_origin(op, cmd).await.map(|(v, _)| v)
    }

    /// [`Kv::run`], also returning the `run_id` of the Redis process that
    /// answered (see [`RedisConn`]).
    pub async fn run_origin<T, C>(&self, op: &'static str, cmd: &C) -> Result<(T, Arc<str>), KvError>
    where
        T: FromRedisValue + Send,
        C: Runnable + ?Sized,
    {
        if now_ms() < self.open_until.load(Ordering::Relaxed) {
            return Err(KvError::Skipped);
        }
        let attempt = async {
            // A connection already known to be dead is passed over: dropping
            // its guard makes bb8 discard it (has_broken), and the loop takes
            // the next one or opens a new one.
            let (mut conn, broken, run_id) = loop {
                let guard = self.pool.get().await.map_err(|e| match e {
                    bb8::RunError::TimedOut => KvError::Timeout,
                    bb8::RunError::User(e) => KvError::Redis(e),
                })?;
                if !guard.broken.load(Ordering::Relaxed) {
                    break (guard.conn.clone(), guard.broken.clone(), guard.run_id.clone());
                }
            };
            let value = cmd.run_on(&mut conn).await.map_err(|e| {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() || e.is_timeout() {
                    broken.store(true, Ordering::Relaxed);
                }
                KvError::Redis(e)
            })?;
            Ok((value, run_id))
        };
        // No outer timer: the checkout is bounded by bb8's connection
        // timeout and the command by the connection's response timeout
        // (both REDIS_TIMEOUT_MS); a second timer per request costs
        // measurable time on the hot path.
        let result = attempt.await;
        if let Err(e) = &result {
            self.metrics.dependency_error("redis", op);
            let trips = match e {
                KvError::Redis(e) => e.is_io_error() || e.is_connection_dropped() || e.is_timeout(),
                _ => true,
            };
            if trips {
                self.open_until.store(now_ms() + BREAKER_OPEN.as_millis() as u64, Ordering::Relaxed);
            }
            tracing::debug!(op, error = %e, "redis call failed");
        }
        result
    }

    /// Open and idle connections, for the pool gauges.
    pub fn state(&self) -> crate::metrics::PoolState {
        let s = self.pool.state();
        crate::metrics::PoolState { connections: s.connections, idle: s.idle_connections }
    }
}

/// A command or a pipeline: what [`Kv::run`] can send.
pub trait Runnable: Sync {
    /// Sends it on `conn`.
    fn run_on<T: FromRedisValue + Send>(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> impl std::future::Future<Output = Result<T, RedisError>> + Send;
}

impl Runnable for redis::Cmd {
    async fn run_on<T: FromRedisValue + Send>(&self, conn: &mut MultiplexedConnection) -> Result<T, RedisError> {
        self.query_async(conn).await
    }
}

impl Runnable for redis::Pipeline {
    async fn run_on<T: FromRedisValue + Send>(&self, conn: &mut MultiplexedConnection) -> Result<T, RedisError> {
        self.query_async(conn).await
    }
}

impl Runnable for redis::ScriptInvocation<'_> {
    async fn run_on<T: FromRedisValue + Send>(&self, conn: &mut MultiplexedConnection) -> Result<T, RedisError> {
        self.invoke_async(conn).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_keys_share_its_hash_tag() {
        let k = Keys::new("tg-x");
        assert_eq!(k.nbf(7), "tg-x:{u:7}:nbf");
        assert_eq!(k.sess(7, -42), "tg-x:{u:7}:sess:-42");
        assert_eq!(k.tgen(i64::MAX), "tg-x:{u:9223372036854775807}:tgen");
        assert_eq!(k.page(7, "l50:o0:c-"), "tg-x:{u:7}:tasks:l50:o0:c-");
    }
}
