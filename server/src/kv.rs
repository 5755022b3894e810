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
//! # Redis Cluster
//! With `REDIS_CLUSTER_URLS`, commands go through redis-rs's cluster
//! connection, which routes each by its key's slot and follows `MOVED` and
//! `ASK` during slot migrations and failovers. Every command of a request
//! names keys of one user, all under the hash tag `{u:ID}`, so it stays one
//! command on one node. What a cluster changes:
//! - **Whose word.** The `epoch` that vouches for Redis's completeness is
//!   one key per hash slot, in that slot ([`Keys::epoch_for`]), bound to
//!   the `run_id` of the node that holds it. Which node answered is not known
//!   to the client, so the hot path's `MGET` becomes one Lua call on that
//!   node returning the node's own `run_id` first ([`Kv::mget_origin`]). A
//!   flushed, restarted or promoted primary thus voids exactly its slots'
//!   epochs, and a migrated slot's epoch (written by its old node) is void on
//!   its new node until rebuilt. The rebuild reads every epoch first
//!   ([`Kv::get_each_origin`]) and restores only the void slots and their
//!   users, so the other slots keep their cached pages.
//! - **Batches.** Pipelines may not span slots, so bulk writes (the rebuild)
//!   go as concurrent single commands ([`Kv::run_each`]).
//! - **Configuration.** The trust check reads every primary
//!   ([`Kv::each_primary`]).
//!
//! Pooling: bb8 over *multiplexed* connections. A checkout only clones the
//! connection handle and gives the slot back at once, so the commands of
//! concurrent requests are pipelined on a few sockets (Redis answers ~10x
//! more commands per second pipelined than one per round trip; by default
//! one socket per two CPUs, as fewer sockets make larger batches). This is why
//! the manager is our own and not bb8-redis's: that one pings on every
//! checkout (a second round trip per request) or, with the ping off, never
//! notices a dead multiplexed connection. Ours marks a connection broken when
//! a command on it fails at the I/O level, and bb8 drops it on return.
//!
//! Lanes (`http::lanes`): besides that pool, each lane has a pool of one
//! connection opened on the lane, so the hot path's command, its reply and
//! the request it wakes stay on one thread ([`Kv::mget_origin`] takes the
//! lane). Everything else goes through the shared pool, whose connections
//! live on the main runtime: a lane's end takes only its own with it. On a
//! cluster every call shares the cluster connection.

use crate::metrics::Metrics;
use bb8::{ManageConnection, Pool};
use futures_util::{StreamExt, stream};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{AsyncConnectionConfig, FromRedisValue, RedisError, Value};
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::runtime::Handle;

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
    /// The runtime the connections are opened on, hence where their
    /// tasks run (redis-rs spawns a connection's task where it is made).
    home: Option<Handle>,
}

impl ManageConnection for RedisManager {
    type Connection = RedisConn;
    type Error = RedisError;

    async fn connect(&self) -> Result<RedisConn, RedisError> {
        let (client, timeout) = (self.client.clone(), self.timeout);
        let open = async move {
            let cfg =
                AsyncConnectionConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(Some(timeout));
            let mut conn = client.get_multiplexed_async_connection_with_config(&cfg).await?;
            let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await?;
            // Without a run_id (INFO refused) nothing this Redis says can be
            // bound to its process: the empty id never matches an epoch.
            let run_id = info_field(&info, "run_id").unwrap_or_default();
            Ok(RedisConn { conn, broken: Arc::new(AtomicBool::new(false)), run_id: Arc::from(run_id) })
        };
        opened_on(self.home.as_ref(), open).await
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

/// Hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// CRC16-XMODEM, the hash of Redis Cluster's key slots.
fn crc16(bytes: &[u8]) -> u16 {
    crc16_parts(&[bytes])
}

/// [`crc16`] of the parts one after another, without joining them (the
/// hot path hashes `u:` and a user id on every request on a cluster).
fn crc16_parts(parts: &[&[u8]]) -> u16 {
    parts.iter().flat_map(|p| p.iter()).fold(0u16, |mut crc, &b| {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
        crc
    })
}

/// The slot of a hash tag's content (the text between the braces).
pub fn slot_of_tag(tag: &str) -> u16 {
    crc16(tag.as_bytes()) % SLOTS
}

/// For every slot, a short hash tag that lands in it (`s` and a number):
/// the per-slot keys (`epoch`, the rebuild marker) are named with it, so
/// they share a slot with the user keys they vouch for. Made once at start
/// (about 160k CRCs).
fn slot_tags() -> Vec<u32> {
    let mut tags = vec![u32::MAX; SLOTS as usize];
    let mut left = SLOTS as usize;
    let mut n = 0u32;
    while left > 0 {
        let slot = slot_of_tag(&format!("s{n}")) as usize;
        if tags[slot] == u32::MAX {
            tags[slot] = n;
            left -= 1;
        }
        n += 1;
    }
    tags
}

/// Key names. Every key of one user carries the hash tag `{u:ID}`, so the
/// multi-key commands of a request stay legal on Redis Cluster.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
    /// Read on every authenticated request: built once.
    epoch: String,
    /// On a cluster: the tag number of each slot (see [`slot_tags`]).
    slots: Option<Arc<[u32]>>,
}

impl Keys {
    /// Keys under `prefix` (`REDIS_KEY_PREFIX`), for one Redis or a cluster.
    pub fn new(prefix: &str, cluster: bool) -> Self {
        let slots = cluster.then(|| Arc::from(slot_tags()));
        Self { prefix: prefix.to_owned(), epoch: format!("{prefix}:epoch"), slots }
    }
    /// Whether the keys are laid out for a cluster (an epoch per slot).
    pub fn per_slot(&self) -> bool {
        self.slots.is_some()
    }
    /// `REBUILD_ID:RUN_ID` of the last rebuild from PostgreSQL (see
    /// `trust`); missing or naming another process = Redis lost state.
    /// On one Redis, one key; see [`Keys::epoch_for`] for a cluster.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }
    /// The epoch that vouches for `uid`'s keys: the one key on a single
    /// Redis; on a cluster, the epoch of the slot of the user's hash tag,
    /// in that slot, so the check stays one command on one node.
    pub fn epoch_for(&self, uid: i64) -> Cow<'_, str> {
        self.epoch_at(self.pair_of(uid))
    }
    /// The epoch of pair `i` (see [`Keys::pair_of`]).
    pub fn epoch_at(&self, i: usize) -> Cow<'_, str> {
        match &self.slots {
            None => Cow::Borrowed(&self.epoch),
            Some(_) => Cow::Owned(self.slot_key(i as u16, "epoch")),
        }
    }
    /// The index in [`Keys::epoch_pairs`] of the pair that vouches for
    /// `uid`'s keys: 0 on one Redis, the slot of its hash tag on a cluster.
    pub fn pair_of(&self, uid: i64) -> usize {
        match &self.slots {
            None => 0,
            Some(_) => usize::from(crc16_parts(&[b"u:", itoa::Buffer::new().format(uid).as_bytes()]) % SLOTS),
        }
    }
    /// The same for the keys of hash tag `tag` (e.g. `posts`).
    pub fn pair_of_tag(&self, tag: &str) -> usize {
        match &self.slots {
            None => 0,
            Some(_) => usize::from(slot_of_tag(tag)),
        }
    }
    /// `PREFIX:{sN}:what`, N the tag number of `slot`.
    fn slot_key(&self, slot: u16, what: &str) -> String {
        let n = self.slots.as_ref().map_or(0, |t| t[slot as usize]);
        format!("{}:{{s{n}}}:{what}", self.prefix)
    }
    /// Pair `i` of [`Keys::epoch_pairs`]: its rebuild marker and epoch.
    pub fn epoch_pair(&self, i: usize) -> (String, String) {
        let mark = match &self.slots {
            None => self.rebuild(),
            Some(_) => self.slot_key(i as u16, "rebuild"),
        };
        (mark, self.epoch_at(i).into_owned())
    }
    /// Every (rebuild marker, epoch) pair: one on a single Redis, one per
    /// slot on a cluster.
    pub fn epoch_pairs(&self) -> Vec<(String, String)> {
        match &self.slots {
            None => vec![(self.rebuild(), self.epoch.clone())],
            Some(_) => (0..usize::from(SLOTS)).map(|i| self.epoch_pair(i)).collect(),
        }
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

/// Where commands go.
#[derive(Clone)]
enum Backend {
    /// One Redis: pooled multiplexed connections, each knowing the
    /// `run_id` of its process; one pool per lane besides the shared one.
    Single { shared: Pool<RedisManager>, lanes: Arc<[Pool<RedisManager>]> },
    /// A Redis Cluster: one cluster connection, made on first use.
    Cluster(Arc<ClusterLink>),
}

/// The cluster client and its connection (redis-rs multiplexes over one
/// connection per node and follows `MOVED`). After a command times out or
/// loses its node the connection is dropped and the next call makes a new
/// one from the seed nodes: with a primary killed, redis-rs 1.8 kept
/// sending that primary's slots to it (every command timing out) long after
/// its replica had taken over, and a fresh connection reads the new slot
/// map at once. The breaker bounds how often that happens.
struct ClusterLink {
    client: ClusterClient,
    conn: std::sync::RwLock<Option<ClusterConnection>>,
    connecting: tokio::sync::Mutex<()>,
    /// Where the connection is made, so its tasks do not end with a lane.
    home: Option<Handle>,
}

impl ClusterLink {
    fn current(&self) -> Option<ClusterConnection> {
        self.conn.read().ok().and_then(|c| c.clone())
    }
    fn reset(&self) {
        if let Ok(mut c) = self.conn.write() {
            *c = None;
        }
    }
}

/// The hot path's `MGET` on a cluster: the values, after the `run_id` of
/// the node that holds them, in one call on that node.
const ORIGIN_MGET: &str = r"
local out = {string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''}
for i = 1, #KEYS do out[i + 1] = redis.call('GET', KEYS[i]) end
return out
";

/// Concurrent commands of one [`Kv::each_retried`].
const EACH_CONCURRENCY: usize = 64;
/// Rounds of [`Kv::each_retried`] before it gives up.
const EACH_ROUNDS: usize = 20;

/// Cheap-to-clone Redis handle.
#[derive(Clone)]
pub struct Kv {
    backend: Backend,
    /// Key names.
    pub keys: Keys,
    metrics: Arc<Metrics>,
    /// Unix ms until which calls are skipped.
    open_until: Arc<AtomicU64>,
    origin_mget: Arc<redis::Script>,
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// TCP_NODELAY, which redis-rs leaves off: with Nagle, a command written
/// while the previous one is unacknowledged waits for that ACK, and Redis
/// may delay a bare ACK by up to 40 ms. (Cached reads during a login storm
/// showed 33-43 ms p99 stalls; this alone did not remove them all.)
fn no_delay() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// Runs `open` on `home` when given, so the connection it makes (and the
/// task redis-rs spawns for it) lives on that runtime; an error if that
/// runtime has stopped (a lane that ended).
async fn opened_on<T, F>(home: Option<&Handle>, open: F) -> Result<T, RedisError>
where
    F: Future<Output = Result<T, RedisError>> + Send + 'static,
    T: Send + 'static,
{
    match home {
        None => open.await,
        Some(home) => home.spawn(open).await.unwrap_or_else(|e| Err(RedisError::from(std::io::Error::other(e)))),
    }
}

fn broken_link(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() || e.is_timeout()
}

impl Kv {
    /// Lazily connecting pools (Redis may be down at start): a shared one
    /// of `size` connections on the runtime this is called on, and one
    /// connection on each of `lanes`.
    pub fn new(
        url: &str,
        prefix: &str,
        size: u32,
        timeout: Duration,
        lanes: &[Handle],
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let info = redis::IntoConnectionInfo::into_connection_info(url)?.set_tcp_settings(no_delay());
        let client = redis::Client::open(info)?;
        let pool = |size, home| {
            Pool::builder()
                .max_size(size)
                .connection_timeout(timeout)
                .test_on_check_out(false)
                .build_unchecked(RedisManager { client: client.clone(), timeout, home })
        };
        let shared = pool(size, Handle::try_current().ok());
        let lanes = lanes.iter().map(|h| pool(1, Some(h.clone()))).collect();
        Ok(Self::with(Backend::Single { shared, lanes }, Keys::new(prefix, false), metrics))
    }

    /// A lazily connecting Redis Cluster handle from some of its nodes.
    /// Each attempt of a command waits at most `timeout`; redis-rs retries
    /// a few times on `MOVED`, `ASK`, `TRYAGAIN` and lost nodes.
    pub fn cluster(urls: &[String], prefix: &str, timeout: Duration, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let client = ClusterClient::builder(urls.to_vec())
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(3)
            .min_retry_wait(10)
            .max_retry_wait(100)
            .tcp_settings(no_delay())
            .build()?;
        let link = Arc::new(ClusterLink {
            client,
            conn: std::sync::RwLock::new(None),
            connecting: tokio::sync::Mutex::new(()),
            home: Handle::try_current().ok(),
        });
        Ok(Self::with(Backend::Cluster(link), Keys::new(prefix, true), metrics))
    }

    fn with(backend: Backend, keys: Keys, metrics: Arc<Metrics>) -> Self {
        let origin_mget = Arc::new(redis::Script::new(ORIGIN_MGET));
        Self { backend, keys, metrics, open_until: Arc::new(AtomicU64::new(0)), origin_mget }
    }

    /// Runs one command or pipeline, bounded by the timeout. `op` labels
    /// `dependency_errors_total` on failure.
    pub async fn run<T, C>(&self, op: &'static str, cmd: &C) -> Result<T, KvError>
    where
        T: FromRedisValue + Send,
        C: Runnable + ?Sized,
    {
        self.run_guarded(op, cmd, true).await
    }

    /// [`Kv::run`] even while the breaker is open, and sent again on
    /// another connection when the one it went on turns out dead: for the
    /// mirror of a committed write (idempotent), which must land in Redis or
    /// void the epoch of its key before the write is answered (see
    /// `trust`). The breaker spares reads a timeout each while Redis is
    /// away; a write skipped for it would leave other instances, which may
    /// reach Redis fine (another cluster node failed, or only this
    /// process's link did), trusting what the write changed. After a blip,
    /// every pooled connection is dead but only known to be once used.
    pub async fn run_always<T, C>(&self, op: &'static str, cmd: &C) -> Result<T, KvError>
    where
        T: FromRedisValue + Send,
        C: Runnable + ?Sized,
    {
        let dead = |r: &Result<T, KvError>| matches!(r, Err(KvError::Redis(e)) if e.is_io_error() || e.is_connection_dropped());
        let mut result = self.run_guarded(op, cmd, false).await;
        for _ in 0..self.state().connections.max(1) {
            if !dead(&result) {
                break;
            }
            result = self.run_guarded(op, cmd, false).await;
        }
        result
    }

    async fn run_guarded<T, C>(&self, op: &'static str, cmd: &C, guarded: bool) -> Result<T, KvError>
    where
        T: FromRedisValue + Send,
        C: Runnable + ?Sized,
    {
        match &self.backend {
            Backend::Single { .. } => self.run_origin(op, cmd, guarded, None).await.map(|(v, _)| v),
            Backend::Cluster(link) => {
                // Skipped (the breaker is open) is not a new failure: it
                // neither counts nor keeps the breaker open.
                let mut conn = self.cluster_conn(link, guarded).await?;
                let result = cmd.run_on(&mut conn).await.map_err(|e| {
                    if broken_link(&e) || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown) {
                        link.reset();
                    }
                    KvError::Redis(e)
                });
                self.count(op, result)
            }
        }
    }

    /// The cluster connection, made on first use (and retried after a
    /// failed first connect).
    async fn cluster_conn(&self, link: &ClusterLink, guarded: bool) -> Result<ClusterConnection, KvError> {
        if guarded && now_ms() < self.open_until.load(Ordering::Relaxed) {
            return Err(KvError::Skipped);
        }
        if let Some(conn) = link.current() {
            return Ok(conn);
        }
        let _one = link.connecting.lock().await;
        if let Some(conn) = link.current() {
            return Ok(conn);
        }
        let client = link.client.clone();
        let open = async move { client.get_async_connection().await };
        match opened_on(link.home.as_ref(), open).await {
            Ok(conn) => {
                if let Ok(mut c) = link.conn.write() {
                    *c = Some(conn.clone());
                }
                Ok(conn)
            }
            Err(e) => self.count("connect", Err(KvError::Redis(e))),
        }
    }

    /// An `MGET` (built by the caller, keys of one slot) with the `run_id`
    /// of the Redis process that answered it, for the epoch check (see
    /// `trust`). On one Redis, the `MGET` itself on a pooled connection
    /// that knows its process; on a cluster, one Lua call on the node that
    /// holds the slot, returning that node's `run_id` first. `lane`: the
    /// lane the caller runs on, whose own connection it then uses.
    pub async fn mget_origin(
        &self,
        op: &'static str,
        mget: &redis::Cmd,
        lane: Option<usize>,
    ) -> Result<(Vec<Option<Vec<u8>>>, Arc<str>), KvError> {
        match &self.backend {
            Backend::Single { .. } => self.run_origin(op, mget, true, lane).await,
            Backend::Cluster(_) => {
                let mut call = self.origin_mget.prepare_invoke();
                for arg in mget.args_iter().skip(1) {
                    if let redis::Arg::Simple(key) = arg {
                        call.key(key);
                    }
                }
                let mut values: Vec<Option<Vec<u8>>> = self.run(op, &call).await?;
                let origin = match values.first_mut().and_then(Option::take) {
                    Some(id) => Arc::from(String::from_utf8_lossy(&id).as_ref()),
                    None => Arc::from(""),
                };
                values.remove(0);
                Ok((values, origin))
            }
        }
    }

    /// Runs every command, answers ignored; fails if any failed. On one
    /// Redis, one pipeline; on a cluster, where a pipeline may not span
    /// slots, concurrent single commands retried as `Kv::each_retried`
    /// says.
    pub async fn run_each(&self, op: &'static str, cmds: Vec<redis::Cmd>) -> Result<(), KvError> {
        if cmds.is_empty() {
            return Ok(());
        }
        if let Backend::Single { .. } = &self.backend {
            let mut pipe = redis::pipe();
            for c in cmds {
                pipe.add_command(c).ignore();
            }
            return self.run::<(), _>(op, &pipe).await;
        }
        self.each_retried(cmds.len(), |i| self.run::<Value, _>(op, &cmds[i])).await.map(drop)
    }

    /// The value of each key (each an epoch, see `trust`) with the
    /// `run_id` of the Redis process that holds it, retried as
    /// `Kv::each_retried` says: a rebuild's survey of which slots were
    /// lost must not take a slot it could not read for a lost one.
    pub async fn get_each_origin(
        &self,
        op: &'static str,
        keys: &[String],
    ) -> Result<Vec<(Option<Vec<u8>>, Arc<str>)>, KvError> {
        self.each_retried(keys.len(), |i| async move {
            let (mut values, origin) = self.mget_origin(op, redis::cmd("MGET").arg(&keys[i]), None).await?;
            Ok((values.pop().flatten(), origin))
        })
        .await
    }

    /// `call(i)` for every i below `n`, [`EACH_CONCURRENCY`] at a time;
    /// the calls that failed are made again after the breaker closes, up
    /// to [`EACH_ROUNDS`] rounds: among thousands of commands across a
    /// failover or a busy moment a few time out, and starting the whole
    /// batch over would time out again. Answers in order of i.
    async fn each_retried<T, F, Fut>(&self, n: usize, call: F) -> Result<Vec<T>, KvError>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<T, KvError>>,
    {
        let mut answers: Vec<Option<T>> = std::iter::repeat_with(|| None).take(n).collect();
        let mut left: Vec<usize> = (0..n).collect();
        let mut last = KvError::Skipped;
        for round in 0..EACH_ROUNDS {
            if round > 0 {
                let wait = self.open_until.load(Ordering::Relaxed).saturating_sub(now_ms()).max(50);
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
            let results: Vec<(usize, Result<T, KvError>)> = stream::iter(left)
                .map(|i| {
                    let answer = call(i);
                    async move { (i, answer.await) }
                })
                .buffer_unordered(EACH_CONCURRENCY)
                .collect()
                .await;
            left = Vec::new();
            for (i, r) in results {
                match r {
                    Ok(v) => answers[i] = Some(v),
                    Err(e) => {
                        last = e;
                        left.push(i);
                    }
                }
            }
            if left.is_empty() {
                return Ok(answers.into_iter().flatten().collect());
            }
        }
        Err(last)
    }

    /// `cmd` on every primary (the one Redis, or each primary of the
    /// cluster): each one's answer.
    pub async fn each_primary<T: FromRedisValue + Send>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<Vec<T>, KvError> {
        let link = match &self.backend {
            Backend::Single { .. } => return self.run::<T, _>(op, cmd).await.map(|v| vec![v]),
            Backend::Cluster(link) => link,
        };
        let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let mut conn = self.cluster_conn(link, true).await?;
        let result = conn.route_command(cmd.clone(), routing).await.map_err(KvError::Redis);
        let parse = |v: Value| T::from_redis_value(v).map_err(|e| KvError::Redis(e.into()));
        match self.count(op, result)? {
            Value::Map(by_node) => by_node.into_iter().map(|(_, v)| parse(v)).collect(),
            one => Ok(vec![parse(one)?]),
        }
    }

    /// [`Kv::run`] on one Redis, also returning the `run_id` of the Redis
    /// process that answered (see [`RedisConn`]).
    async fn run_origin<T, C>(
        &self,
        op: &'static str,
        cmd: &C,
        guarded: bool,
        lane: Option<usize>,
    ) -> Result<(T, Arc<str>), KvError>
    where
        T: FromRedisValue + Send,
        C: Runnable + ?Sized,
    {
        let Backend::Single { shared, lanes } = &self.backend else {
            return Err(KvError::Skipped);
        };
        let pool = lane.and_then(|i| lanes.get(i)).unwrap_or(shared);
        if guarded && now_ms() < self.open_until.load(Ordering::Relaxed) {
            return Err(KvError::Skipped);
        }
        let attempt = async {
            // A connection already known to be dead is passed over: dropping
            // its guard makes bb8 discard it (has_broken), and the loop takes
            // the next one or opens a new one.
            let (mut conn, broken, run_id) = loop {
                let guard = pool.get().await.map_err(|e| match e {
                    bb8::RunError::TimedOut => KvError::Timeout,
                    bb8::RunError::User(e) => KvError::Redis(e),
                })?;
                if !guard.broken.load(Ordering::Relaxed) {
                    break (guard.conn.clone(), guard.broken.clone(), guard.run_id.clone());
                }
            };
            let value = cmd.run_on(&mut conn).await.map_err(|e| {
                if broken_link(&e) {
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
        self.count(op, result)
    }

    /// Counts a failure, and opens the breaker on a lost connection.
    fn count<T>(&self, op: &'static str, result: Result<T, KvError>) -> Result<T, KvError> {
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

    /// Open and idle connections, for the pool gauges (a cluster
    /// connection counts as one).
    pub fn state(&self) -> crate::metrics::PoolState {
        match &self.backend {
            Backend::Single { shared, lanes } => {
                let states = std::iter::once(shared).chain(lanes.iter()).map(Pool::state);
                states.fold(crate::metrics::PoolState { connections: 0, idle: 0 }, |sum, s| crate::metrics::PoolState {
                    connections: sum.connections + s.connections,
                    idle: sum.idle + s.idle_connections,
                })
            }
            Backend::Cluster(link) => {
                let n = u32::from(link.current().is_some());
                crate::metrics::PoolState { connections: n, idle: n }
            }
        }
    }
}

/// A command or a pipeline: what [`Kv::run`] can send.
pub trait Runnable: Sync {
    /// Sends it on `conn` (one Redis's or the cluster's).
    fn run_on<T: FromRedisValue + Send, K: ConnectionLike + Send>(
        &self,
        conn: &mut K,
    ) -> impl std::future::Future<Output = Result<T, RedisError>> + Send;
}

impl Runnable for redis::Cmd {
    async fn run_on<T: FromRedisValue + Send, K: ConnectionLike + Send>(&self, conn: &mut K) -> Result<T, RedisError> {
        self.query_async(conn).await
    }
}

impl Runnable for redis::Pipeline {
    async fn run_on<T: FromRedisValue + Send, K: ConnectionLike + Send>(&self, conn: &mut K) -> Result<T, RedisError> {
        self.query_async(conn).await
    }
}

impl Runnable for redis::ScriptInvocation<'_> {
    async fn run_on<T: FromRedisValue + Send, K: ConnectionLike + Send>(&self, conn: &mut K) -> Result<T, RedisError> {
        self.invoke_async(conn).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_redis_cluster_and_every_slot_has_an_epoch_beside_its_users() {
        // The reference vector of Redis Cluster's spec: CRC16("123456789").
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(slot_of_tag("foo"), 12182, "CLUSTER KEYSLOT foo");
        let k = Keys::new("p", true);
        let tag = |key: &str| key[key.find('{').expect("{") + 1..key.find('}').expect("}")].to_owned();
        for uid in [1, 42, 123_456_789] {
            let epoch = k.epoch_for(uid);
            assert_eq!(slot_of_tag(&tag(&epoch)), slot_of_tag(&tag(&k.nbf(uid))), "user {uid}");
        }
        assert_eq!(slot_of_tag(&tag(&k.epoch_at(k.pair_of_tag("posts")))), slot_of_tag(&tag(&k.posts_gen())));
        let pairs = k.epoch_pairs();
        assert_eq!(pairs.len(), SLOTS as usize);
        let mut slots: Vec<u16> = pairs
            .iter()
            .map(|(m, e)| {
                assert_eq!(slot_of_tag(&tag(m)), slot_of_tag(&tag(e)));
                slot_of_tag(&tag(e))
            })
            .collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), SLOTS as usize, "one pair per slot");
        for uid in [0, 7, 123_456_789, i64::MAX] {
            assert_eq!(k.pair_of(uid), usize::from(slot_of_tag(&format!("u:{uid}"))), "user {uid}");
            assert_eq!(k.epoch_pair(k.pair_of(uid)).1, k.epoch_for(uid), "the pair of a user holds its epoch");
        }
        let single = Keys::new("p", false);
        assert_eq!((single.epoch_for(7).as_ref(), single.epoch_pairs().len()), ("p:epoch", 1));
    }

    #[test]
    fn a_users_keys_share_its_hash_tag() {
        let k = Keys::new("tg-x", false);
        assert_eq!(k.nbf(7), "tg-x:{u:7}:nbf");
        assert_eq!(k.sess(7, -42), "tg-x:{u:7}:sess:-42");
        assert_eq!(k.tgen(i64::MAX), "tg-x:{u:9223372036854775807}:tgen");
        assert_eq!(k.page(7, "l50:o0:c-"), "tg-x:{u:7}:tasks:l50:o0:c-");
    }
}
