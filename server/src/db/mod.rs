//! PostgreSQL: the pool, every statement the server runs, and migrations.
//!
//! The pool is bb8 over tokio-postgres. Its connections are [`PgConn`]s: a
//! client plus every statement of [`Statements`] prepared on it when it was
//! opened, so a request never prepares (one round trip saved per query). A
//! checkout waits at most `POOL_TIMEOUT_MS`; past that the request answers
//! 503 instead of queueing behind an outage.
//!
//! Lanes (`http::lanes`): besides the pool, each lane has one connection
//! of its own, opened on the lane and *shared*: a checkout clones the
//! handle and gives the slot back at once, so the reads of the lane's
//! concurrent requests are pipelined on one socket (tokio-postgres writes
//! every queued statement before it flushes), and the statement, its rows
//! and the request they wake stay on one thread. Only single read
//! statements of the hot GET paths go there (`Db::read`); transactions
//! and writes check out of the pool. Against the pool alone (2 cores, wrk
//! -c64, 3 interleaved rounds): `GET /me` went from 19.5k to 29.3k req/s,
//! cache misses of `GET /tasks` from 13.2k to 14.6k.
//!
//! PostgreSQL is the source of truth for accounts, sessions and revocation.
//! Every statement is declared once below; each has one small typed function
//! in the submodule of its table ([`users`], [`sessions`], [`tasks`]), and
//! nothing outside this module touches a client. Checkout and error
//! counting happen in one place (`Db::with`).

pub mod external;
pub mod posts;
pub mod sessions;
pub mod tasks;
pub mod users;

use crate::http::error::ApiError;
use crate::metrics::Metrics;
use bb8::{ManageConnection, Pool, PooledConnection, RunError};
use bb8_postgres::PostgresConnectionManager;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio_postgres::{Client, NoTls, Statement, error::SqlState};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The columns of a task, in the order `tasks::Task::from_row` reads them.
pub const TASK_COLUMNS: &str = "id, user_id, title, description, is_completed, due_date, created_at, updated_at";
/// The columns of a post with its comment count, in the order
/// `posts::PostRow::from_row` reads them (alias `p`).
pub const POST_COLUMNS: &str = "p.id, p.author_id, p.title, p.content, p.created_at, p.updated_at, \
    (SELECT count(*) FROM comments c WHERE c.post_id = p.id)";
/// The columns of a comment, in the order `posts::CommentRow::from_row` reads them.
pub const COMMENT_COLUMNS: &str = "id, post_id, author_id, content, created_at";
/// The columns of a user, in the order `users::UserRow::from_row` reads them.
pub const USER_COLUMNS: &str = "id, email, role, status, created_at, status_updated_at, issuer, subject";

/// The next not-before of a user: past every session so far for a local
/// user (the session sequence), the current second for an external one
/// (its tokens are ordered by `iat`, the provider's clock; see
/// `auth::revocation`). Never moves back.
macro_rules! next_not_before {
    () => {
        "CASE WHEN issuer IS NULL THEN nextval('sessions_id_seq') \
         ELSE GREATEST(min_session_id, floor(extract(epoch FROM clock_timestamp()))::bigint) END"
    };
}

macro_rules! statements {
    ($($(#[doc = $doc:expr])* $name:ident = $sql:expr;)*) => {
        /// Every statement, prepared once per pooled connection.
        pub struct Statements { $($(#[doc = $doc])* pub $name: Statement,)* }
        impl Statements {
            async fn prepare(c: &Client) -> Result<Self, tokio_postgres::Error> {
                Ok(Self { $($name: c.prepare(&$sql).await?,)* })
            }
        }
    };
}

statements! {
    /// Register; `None` when the canonical email is taken.
    insert_user = format!("INSERT INTO users (email, email_canonical, password_hash, role) VALUES ($1, $2, $3, $4) \
        ON CONFLICT (email_canonical) DO NOTHING RETURNING {USER_COLUMNS}");
    /// Login look-up by canonical email (index users_email_canonical).
    user_for_login = "SELECT id, password_hash, role, status FROM users WHERE email_canonical = $1";
    /// `/me`.
    user_by_id = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    /// This database's deployment id (the default Redis key prefix).
    deployment_id = "SELECT id FROM deployment";
    /// Lock a user row before moving its not-before (status change, logout-all).
    lock_user = "SELECT status FROM users WHERE id = $1 FOR UPDATE";
    /// Kill every session so far: the sequence value is above all of them.
    bump_not_before = concat!("UPDATE users SET min_session_id = ", next_not_before!(),
        ", not_before = clock_timestamp() WHERE id = $1 RETURNING min_session_id, status");
    /// Status change (after lock_user, in the same transaction).
    set_status = concat!("UPDATE users SET status = $2, status_updated_at = clock_timestamp(), \
        min_session_id = ", next_not_before!(), ", not_before = clock_timestamp() \
        WHERE id = $1 RETURNING id, status, status_updated_at, min_session_id");
    /// Bootstrap of `ADMIN_EMAIL` (after lock_user): password, role, status,
    /// and the end of every session the account had.
    reset_admin = "UPDATE users SET password_hash = $2, role = 'admin', status = 'active', \
        status_updated_at = CASE WHEN status <> 'active' THEN clock_timestamp() ELSE status_updated_at END, \
        min_session_id = nextval('sessions_id_seq'), not_before = clock_timestamp() \
        WHERE id = $1 RETURNING min_session_id";
    /// The revocation facts of one token, answered by PostgreSQL.
    revocation_state = "SELECT u.status, u.min_session_id, \
        (s.id IS NOT NULL AND s.revoked_at IS NULL AND s.expires_at > now()) AS live \
        FROM users u LEFT JOIN sessions s ON s.id = $2 AND s.user_id = u.id WHERE u.id = $1";
    /// The external revocation facts of one token: user status, not-before
    /// (a second), and whether this token was logged out.
    external_revocation_state = "SELECT u.status, u.min_session_id, \
        EXISTS (SELECT 1 FROM external_revocations r WHERE r.user_id = u.id AND r.token_key = $2) \
        FROM users u WHERE u.id = $1";
    /// The local user of an external subject, created by its first token.
    /// The no-op update makes the conflict path return the existing row.
    upsert_external_user = "INSERT INTO users (issuer, subject, email) VALUES ($1, $2, $3) \
        ON CONFLICT (issuer, subject) WHERE issuer IS NOT NULL DO UPDATE SET issuer = EXCLUDED.issuer RETURNING id";
    /// Logout of one external token, until it expires.
    revoke_external_token = "INSERT INTO external_revocations (user_id, token_key, expires_at) \
        VALUES ($1, $2, to_timestamp($3)) ON CONFLICT (user_id, token_key) DO NOTHING";
    /// Rebuild: logged-out external tokens not yet expired, with their
    /// remaining life (ms), one batch after an id.
    rebuild_external_revocations = "SELECT id, user_id, token_key, \
        (extract(epoch FROM expires_at - now()) * 1000)::bigint FROM external_revocations \
        WHERE expires_at > now() AND id > $1 ORDER BY id LIMIT $2";
    /// Rebuild: blocked users and recent not-befores, one batch after an id.
    rebuild_users = "SELECT id, status, min_session_id FROM users \
        WHERE (status <> 'active' OR not_before > now() - make_interval(secs => $1)) AND id > $2 \
        ORDER BY id LIMIT $3";
    /// New session, only for a user still active at this instant, and the
    /// user's oldest live sessions beyond the newest `$4` (the new one
    /// among them) ended, in one statement: one round trip and its own
    /// transaction. The trim's snapshot does not see the row inserted
    /// beside it, hence `$4 - 1` older ones kept; no new row, no trim.
    insert_session = "WITH new AS (INSERT INTO sessions (user_id, refresh_jti, expires_at) \
        SELECT id, $2, now() + make_interval(secs => $3) FROM users WHERE id = $1 AND status = 'active' \
        RETURNING id, expires_at), \
        trimmed AS (UPDATE sessions SET revoked_at = now(), revoked_reason = 'limit' WHERE id IN ( \
        SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now() \
        AND EXISTS (SELECT 1 FROM new) ORDER BY id DESC OFFSET $4::bigint - 1) RETURNING id) \
        SELECT id, expires_at, ARRAY(SELECT id FROM trimmed) FROM new";
    /// Refresh rotation: wins only with the session's current token id, for a
    /// live session of an active user created after the user's not-before.
    rotate_session = "UPDATE sessions s SET refresh_jti = $3, refreshed_at = now() FROM users u \
        WHERE s.id = $1 AND s.user_id = $4 AND s.refresh_jti = $2 AND s.revoked_at IS NULL \
        AND s.expires_at > now() AND u.id = s.user_id AND u.status = 'active' AND s.id > u.min_session_id \
        RETURNING u.role, s.expires_at";
    /// Reuse detection: an older token id of a live session ends it.
    revoke_reused = "UPDATE sessions SET revoked_at = now(), revoked_reason = 'reuse' \
        WHERE id = $1 AND user_id = $3 AND refresh_jti <> $2 AND revoked_at IS NULL RETURNING id";
    /// Logout of one session.
    revoke_session = "UPDATE sessions SET revoked_at = now(), revoked_reason = $3 \
        WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING id";
    /// Rebuild: revoked sessions not yet expired, with their remaining life
    /// (ms), one batch after an id.
    rebuild_sessions = "SELECT id, user_id, (extract(epoch FROM expires_at - now()) * 1000)::bigint \
        FROM sessions WHERE revoked_at IS NOT NULL AND expires_at > now() AND id > $1 ORDER BY id LIMIT $2";
    /// A user's tasks, one page (index tasks_user_id).
    list_tasks = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE user_id = $1 \
        AND ($2::boolean IS NULL OR is_completed = $2) ORDER BY id LIMIT $3 OFFSET $4");
    /// Every user's tasks, one page (primary key).
    list_all_tasks = format!("SELECT {TASK_COLUMNS} FROM tasks \
        WHERE ($1::boolean IS NULL OR is_completed = $1) ORDER BY id LIMIT $2 OFFSET $3");
    /// One task of its owner.
    get_task = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1 AND user_id = $2");
    /// Create.
    insert_task = format!("INSERT INTO tasks (user_id, title, description, due_date) VALUES ($1, $2, $3, $4) \
        RETURNING {TASK_COLUMNS}");
    /// Partial update: `$4`/`$7` say whether the nullable fields were sent.
    update_task = format!("UPDATE tasks SET title = COALESCE($3, title), \
        description = CASE WHEN $4 THEN $5 ELSE description END, \
        is_completed = COALESCE($6, is_completed), \
        due_date = CASE WHEN $7 THEN $8 ELSE due_date END, updated_at = now() \
        WHERE id = $1 AND user_id = $2 RETURNING {TASK_COLUMNS}");
    /// Delete.
    delete_task = "DELETE FROM tasks WHERE id = $1 AND user_id = $2";
    /// Newest posts first, after a (created_at, id) cursor when `$1` is set
    /// (index posts_newest).
    posts_page = format!("SELECT {POST_COLUMNS} FROM posts p \
        WHERE $1::timestamptz IS NULL OR (p.created_at, p.id) < ($1, $2) \
        ORDER BY p.created_at DESC, p.id DESC LIMIT $3");
    /// Posts by id (the comment -> post loader).
    posts_by_ids = format!("SELECT {POST_COLUMNS} FROM posts p WHERE p.id = ANY($1)");
    /// Create.
    insert_post = "INSERT INTO posts (author_id, title, content) VALUES ($1, $2, $3) \
        RETURNING id, author_id, title, content, created_at, updated_at, 0::bigint";
    /// Edit, by its author only.
    update_post = format!("UPDATE posts p SET title = COALESCE($3, p.title), content = COALESCE($4, p.content), \
        updated_at = clock_timestamp() WHERE p.id = $1 AND p.author_id = $2 RETURNING {POST_COLUMNS}");
    /// Delete, by its author or an admin (`$3`); its comments go with it.
    delete_post = "DELETE FROM posts WHERE id = $1 AND (author_id = $2 OR $3) RETURNING id";
    /// Who wrote a post (tells a refused edit's 'not yours' from 'no such post').
    post_author = "SELECT author_id FROM posts WHERE id = $1";
    /// Comment on a post that exists.
    insert_comment = format!("INSERT INTO comments (post_id, author_id, content) \
        SELECT id, $2, $3 FROM posts WHERE id = $1 RETURNING {COMMENT_COLUMNS}");
    /// Delete a comment, by its author or an admin (`$3`).
    delete_comment = "DELETE FROM comments WHERE id = $1 AND (author_id = $2 OR $3) RETURNING id";
    /// Who wrote a comment.
    comment_author = "SELECT author_id FROM comments WHERE id = $1";
    /// The first `$2` comments of each post of `$1`, oldest first: one
    /// statement for a whole page of posts (index comments_by_post, once per
    /// post through the lateral join).
    first_comments = format!("SELECT c.{} FROM unnest($1::bigint[]) AS p(id) CROSS JOIN LATERAL \
        (SELECT {COMMENT_COLUMNS} FROM comments WHERE post_id = p.id ORDER BY created_at, id LIMIT $2) c \
        ORDER BY c.post_id, c.created_at, c.id", COMMENT_COLUMNS.replace(", ", ", c."));
    /// One post's comments after a (created_at, id) cursor.
    comments_after = format!("SELECT {COMMENT_COLUMNS} FROM comments \
        WHERE post_id = $1 AND (created_at, id) > ($2, $3) ORDER BY created_at, id LIMIT $4");
}

/// A pooled connection with its prepared statements.
pub struct PgConn {
    /// The client.
    pub client: Client,
    /// Its statements.
    pub st: Statements,
}

impl PgConn {
    /// A round trip that runs nothing (the managers' `is_valid`).
    async fn ping(&self) -> Result<(), tokio_postgres::Error> {
        self.client.simple_query("").await.map(drop)
    }
}

/// bb8 manager: opens through bb8-postgres, then prepares [`Statements`].
pub struct PgManager {
    inner: PostgresConnectionManager<NoTls>,
    /// The runtime connections are opened on, where their tasks then run
    /// (bb8-postgres spawns them where the connection is made): the main
    /// one for the pool, so that a connection first needed on a lane
    /// (`http::lanes`) does not end with it; a lane's own for its shared
    /// connection.
    home: Option<Handle>,
}

impl PgManager {
    async fn open(inner: PostgresConnectionManager<NoTls>) -> Result<PgConn, tokio_postgres::Error> {
        let client = inner.connect().await?;
        let st = Statements::prepare(&client).await?;
        Ok(PgConn { client, st })
    }
}

impl ManageConnection for PgManager {
    type Connection = PgConn;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<PgConn, Self::Error> {
        if let Some(home) = &self.home
            && let Ok(opened) = home.spawn(Self::open(self.inner.clone())).await
        {
            return opened;
        }
        // No home, or it has stopped (the process is ending): here.
        Self::open(self.inner.clone()).await
    }

    async fn is_valid(&self, conn: &mut PgConn) -> Result<(), Self::Error> {
        conn.ping().await
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.client.is_closed()
    }
}

/// bb8 manager of a lane's shared connection: [`PgManager`]'s connection
/// behind an `Arc`, so that a checkout can hand out a clone and return the
/// slot at once.
struct LaneManager(PgManager);

impl ManageConnection for LaneManager {
    type Connection = Arc<PgConn>;
    type Error = tokio_postgres::Error;

    async fn connect(&self) -> Result<Arc<PgConn>, Self::Error> {
        self.0.connect().await.map(Arc::new)
    }

    async fn is_valid(&self, conn: &mut Arc<PgConn>) -> Result<(), Self::Error> {
        conn.ping().await
    }

    fn has_broken(&self, conn: &mut Arc<PgConn>) -> bool {
        conn.client.is_closed()
    }
}

/// A PostgreSQL failure.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection within `POOL_TIMEOUT_MS`.
    #[error("no PostgreSQL connection within the pool timeout")]
    PoolTimeout,
    /// The server or the connection said no.
    #[error("PostgreSQL: {0}")]
    Pg(#[from] tokio_postgres::Error),
}

/// Storage knows which failures mean "PostgreSQL is unavailable" (503) and
/// which mean "this statement is wrong" (500); the statuses themselves stay
/// with [`ApiError`]. The conversion lives here, not in `http::error`, so
/// the HTTP layer below never imports storage.
impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        if e.is_unavailable() { Self::Unavailable(e.into()) } else { Self::Internal(e.into()) }
    }
}

impl DbError {
    /// Whether PostgreSQL is unreachable or refusing work (503), as opposed to
    /// a query that is wrong for the schema (500).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::PoolTimeout => true,
            Self::Pg(e) => {
                if e.is_closed() {
                    return true;
                }
                match e.code() {
                    None => true, // I/O or protocol failure: the connection is gone
                    Some(code) => {
                        let c = code.code();
                        c.starts_with("08") // connection exception
                            || c.starts_with("53") // insufficient resources
                            || c.starts_with("57P") // shutting down, cannot connect now
                            || *code == SqlState::T_R_SERIALIZATION_FAILURE
                    }
                }
            }
        }
    }
}

/// Cheap-to-clone handle on the pool.
#[derive(Clone)]
pub struct Db {
    pool: Pool<PgManager>,
    /// One shared connection per lane, in the lanes' order.
    lanes: Arc<[Pool<LaneManager>]>,
    metrics: Arc<Metrics>,
    /// Statements sent (`Db::with` and `Db::read` calls), for the tests that bound the
    /// statements of a request (the GraphQL N+1 test).
    sent: Arc<AtomicU64>,
}

impl Db {
    /// Connects (lazily: an unreachable server is an error per request, not
    /// at start) with at most `size` pooled connections on the runtime this
    /// is called on, and one shared connection on each of `lanes`.
    pub fn new(
        url: &str,
        size: u32,
        timeout: Duration,
        lanes: &[Handle],
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let manager = PostgresConnectionManager::new_from_stringlike(url, NoTls)?;
        fn builder<M: ManageConnection>(size: u32, timeout: Duration) -> bb8::Builder<M> {
            Pool::builder()
                .max_size(size)
                .connection_timeout(timeout)
                // A connection that died with the server is detected by
                // has_broken when it comes back; no ping per checkout.
                .test_on_check_out(false)
        }
        let home = |h: Option<Handle>| PgManager { inner: manager.clone(), home: h };
        let pool = builder(size, timeout).build_unchecked(home(Handle::try_current().ok()));
        let lanes =
            lanes.iter().map(|h| builder(1, timeout).build_unchecked(LaneManager(home(Some(h.clone()))))).collect();
        Ok(Self { pool, lanes, metrics, sent: Arc::new(AtomicU64::new(0)) })
    }

    /// A connection of `pool`, or 503 material after the pool timeout.
    async fn checkout<'a, M>(&self, pool: &'a Pool<M>) -> Result<PooledConnection<'a, M>, DbError>
    where
        M: ManageConnection<Error = tokio_postgres::Error>,
    {
        pool.get().await.map_err(|e| {
            self.metrics.dependency_error("postgres", "checkout");
            match e {
                RunError::TimedOut => DbError::PoolTimeout,
                RunError::User(e) => DbError::Pg(e),
            }
        })
    }

    /// Counts and converts a query error.
    pub fn fail(&self, e: tokio_postgres::Error) -> DbError {
        self.metrics.dependency_error("postgres", "query");
        DbError::Pg(e)
    }

    /// How many times `Db::with` or `Db::read` has run: the statements sent, since each
    /// function of the submodules sends one per call (a transaction counts
    /// its statements as one).
    pub fn statements_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Runs `f` on a checked-out connection; the one place that checks out
    /// and counts errors. `f` gets the client and the prepared statements.
    async fn with<T, F>(&self, f: F) -> Result<T, DbError>
    where
        F: AsyncFnOnce(&mut Client, &Statements) -> Result<T, tokio_postgres::Error>,
    {
        let mut c = self.checkout(&self.pool).await?;
        self.sent.fetch_add(1, Ordering::Relaxed);
        let PgConn { client, st } = &mut *c;
        f(client, st).await.map_err(|e| self.fail(e))
    }

    /// Runs one read statement `f` on the shared connection of lane `lane`
    /// (pipelined with the lane's other reads), or on a pooled connection
    /// when the caller runs on no lane. A lane's connection found closed
    /// (PostgreSQL restarted) is given back, which makes bb8 drop it, and a
    /// new one is opened within the pool timeout; a statement in flight
    /// when it closes fails like one on a pooled connection (503).
    async fn read<T, F>(&self, lane: Option<usize>, f: F) -> Result<T, DbError>
    where
        F: AsyncFnOnce(&Client, &Statements) -> Result<T, tokio_postgres::Error>,
    {
        let Some(pool) = lane.and_then(|i| self.lanes.get(i)) else {
            return self.with(async |c, st| f(c, st).await).await;
        };
        let mut conn = Arc::clone(&*self.checkout(pool).await?);
        if conn.client.is_closed() {
            conn = Arc::clone(&*self.checkout(pool).await?);
        }
        self.sent.fetch_add(1, Ordering::Relaxed);
        f(&conn.client, &conn.st).await.map_err(|e| self.fail(e))
    }

    /// Open and idle connections of the pool (not the lanes'), for the
    /// pool gauges.
    pub fn state(&self) -> crate::metrics::PoolState {
        let s = self.pool.state();
        crate::metrics::PoolState { connections: s.connections, idle: s.idle_connections }
    }

    /// Whether PostgreSQL answers a trivial query now.
    pub async fn ping(&self) -> Result<(), DbError> {
        self.with(async |c, _| c.simple_query("SELECT 1").await.map(drop)).await
    }
}

/// Applies pending migrations on a dedicated connection, under an advisory
/// lock so instances starting together do not race.
pub async fn migrate(url: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let (mut client, connection) =
        tokio_postgres::connect(url, NoTls).await.context("connecting to PostgreSQL for migrations")?;
    let conn_task = tokio::spawn(connection);
    client.execute("SELECT pg_advisory_lock(7477)", &[]).await.context("taking the migration lock")?;
    let report = embedded::migrations::runner().run_async(&mut client).await;
    let unlock = client.execute("SELECT pg_advisory_unlock(7477)", &[]).await;
    drop(client);
    let _ = conn_task.await;
    let report = report.context("applying migrations")?;
    unlock.context("releasing the migration lock")?;
    for m in report.applied_migrations() {
        tracing::info!(version = m.version(), name = m.name(), "migration applied");
    }
    Ok(())
}
