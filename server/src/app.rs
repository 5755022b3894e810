//! The application: shared state, start-up, and the request pipeline
//!
//! ```text
//! route (method, template) -> handler { authenticate: JWT verify -> revocation
//! check (one Redis round trip, PostgreSQL fallback) -> cache / PostgreSQL }
//! -> problem+json on error -> metrics by template
//! ```
//!
//! A panic in a handler is caught here and answered as a 500 problem, so a
//! bug costs one request, not the client's connection.

use crate::auth::password::Passwords;
use crate::auth::revocation::Revocation;
use crate::auth::throttle::LoginThrottle;
use crate::auth::token::{Principal, Tokens};
use crate::config::Config;
use crate::db::Db;
use crate::http::error::ApiError;
use crate::http::router::{Matched, Route, Router};
use crate::http::{Resp, bearer};
use crate::kv::Kv;
use crate::metrics::Metrics;
use crate::tasks::cache::TaskCache;
use crate::{auth, ops, tasks};
use anyhow::Context;
use bytes::Bytes;
use futures_util::FutureExt;
use hyper::Request;
use hyper::header::{CACHE_CONTROL, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Everything a request can reach. One per server, behind an `Arc`.
pub struct AppState {
    /// The configuration it started with.
    pub config: Config,
    /// PostgreSQL.
    pub db: Db,
    /// Redis.
    pub kv: Kv,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// JWT keys.
    pub tokens: Tokens,
    /// Password hashing pool.
    pub passwords: Passwords,
    /// Revocation checks and writes.
    pub revocation: Arc<Revocation>,
    /// Task-list cache.
    pub cache: Arc<TaskCache>,
    /// Failed-login throttle.
    pub throttle: LoginThrottle,
    router: Router,
}

impl AppState {
    /// Connects the pools, migrates, and builds the state.
    pub async fn new(config: Config) -> anyhow::Result<Arc<Self>> {
        let metrics = Arc::new(Metrics::new());
        crate::db::migrate(config.database_url.expose()).await?;
        let db = Db::new(config.database_url.expose(), config.pg_pool_size, config.pool_timeout, metrics.clone())
            .context("DATABASE_URL")?;
        let kv = Kv::new(
            config.redis_url.expose(),
            &config.redis_key_prefix,
            config.redis_pool_size,
            config.redis_timeout,
            metrics.clone(),
        )
        .context("REDIS_URL")?;
        let passwords = Passwords::new(config.hash_concurrency, config.hash_queue_max, metrics.clone());
        let tokens = Tokens::new(config.jwt_secret.expose().as_bytes(), config.access_ttl, config.refresh_ttl);
        let revocation = Revocation::new(kv.clone(), db.clone(), metrics.clone(), config.refresh_ttl);
        let cache = TaskCache::new(config.cache_backend, kv.clone(), config.tasks_cache_ttl, metrics.clone());
        let throttle = LoginThrottle::new(kv.clone(), config.login_max_failures, config.login_failure_window);
        let router = Router::new(&metrics);
        let state = Arc::new(Self { config, db, kv, metrics, tokens, passwords, revocation, cache, throttle, router });
        auth::bootstrap_admin(&state).await.context("ADMIN_EMAIL/ADMIN_PASSWORD bootstrap")?;
        // Make Redis trustworthy before the first request if it is there;
        // if not, requests answer from PostgreSQL and rebuild later.
        match state.revocation.rebuild().await {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "Redis not ready at start; answering from PostgreSQL until it is")
            }
        }
        Ok(state)
    }

    /// The verified access token of a request (no revocation check).
    pub fn principal<B>(&self, req: &Request<B>) -> Result<Arc<Principal>, ApiError> {
        self.tokens.verify_access(bearer(req)?).map_err(ApiError::invalid_token)
    }

    /// A verified access token that is not revoked.
    pub async fn authenticate<B>(&self, req: &Request<B>) -> Result<Arc<Principal>, ApiError> {
        let p = self.principal(req)?;
        self.revocation.check(&p, None).await?;
        Ok(p)
    }

    /// Answers one request: routing, the handler, errors, panics, metrics.
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>) -> Resp
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let start = Instant::now();
        let matched = match self.router.find(req.method(), req.uri().path()) {
            Matched::Route(route, metrics, id) => {
                let id = id.map(|s| s.parse::<i64>().ok().filter(|n| *n > 0));
                Ok((route, metrics, id))
            }
            Matched::MethodNotAllowed(allow) => Err(ApiError::MethodNotAllowed(allow.to_owned())),
            Matched::NotFound => Err(ApiError::NotFound),
        };
        let (route, metrics, id) = match matched {
            Ok(m) => m,
            Err(e) => {
                let resp = finish(e.into_response());
                let status = resp.status().as_u16().to_string();
                self.metrics_unmatched(req.method().as_str(), &status);
                return resp;
            }
        };
        let outcome = AssertUnwindSafe(self.dispatch(route, req, id)).catch_unwind().await;
        let resp = match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => e.into_response(),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                ApiError::Internal(anyhow::anyhow!("handler panicked: {msg}")).into_response()
            }
        };
        let resp = finish(resp);
        metrics.record(resp.status().as_u16(), start.elapsed());
        resp
    }

    fn metrics_unmatched(&self, method: &str, status: &str) {
        let method = match method {
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => method,
            _ => "OTHER",
        };
        self.metrics.unmatched(method, status);
    }

    async fn dispatch<B>(
        self: &Arc<Self>,
        route: Route,
        req: Request<B>,
        id: Option<Option<i64>>,
    ) -> Result<Resp, ApiError>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        crate::http::check_declared_length(&req)?;
        // A path id that is not a positive integer names nothing.
        let id = match id {
            Some(None) => return Err(ApiError::NotFound),
            Some(Some(n)) => n,
            None => 0,
        };
        match route {
            Route::Healthz => Ok(ops::healthz()),
            Route::Readyz => ops::readyz(self).await,
            Route::Metrics => Ok(ops::metrics(self)),
            Route::Register => auth::register(self, req).await,
            Route::Login => auth::login(self, req).await,
            Route::Refresh => auth::refresh(self, req).await,
            Route::Logout => auth::logout(self, &req).await,
            Route::LogoutAll => auth::logout_all(self, &req).await,
            Route::Me => auth::me(self, &req).await,
            Route::AdminUserStatus => auth::set_status(self, req, id).await,
            Route::ListTasks => tasks::list(self, &req).await,
            Route::CreateTask => tasks::create(self, req).await,
            Route::GetTask => tasks::get(self, &req, id).await,
            Route::UpdateTask => tasks::update(self, req, id).await,
            Route::DeleteTask => tasks::delete(self, &req, id).await,
            Route::AdminTasks => tasks::admin_list(self, &req).await,
        }
    }
}

static NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// Headers every response carries: API answers are per-user and must not
/// be cached by intermediaries.
fn finish(mut resp: Resp) -> Resp {
    let h = resp.headers_mut();
    h.insert(X_CONTENT_TYPE_OPTIONS, NOSNIFF.clone());
    h.entry(CACHE_CONTROL).or_insert_with(|| NO_STORE.clone());
    resp
}

/// A bound, ready server.
pub struct App {
    state: Arc<AppState>,
    listener: TcpListener,
}

impl App {
    /// Starts dependencies and binds `BIND_ADDR`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let addr = config.bind_addr;
        let state = AppState::new(config).await?;
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        Ok(Self { state, listener })
    }

    /// The bound address (the real port when `BIND_ADDR` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| self.state.config.bind_addr)
    }

    /// The shared state (benches drive `AppState::handle` directly).
    pub fn state(&self) -> Arc<AppState> {
        Arc::clone(&self.state)
    }

    /// Serves until `shutdown` resolves, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tracing::info!(addr = %self.local_addr(), "listening");
        crate::http::server::serve(self.listener, self.state, shutdown).await;
    }

    /// Serves on a background task; stop it with [`Running::stop`].
    pub fn spawn(self) -> Running {
        let addr = self.local_addr();
        let state = self.state();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(self.run(async {
            let _ = rx.await;
        }));
        Running { addr, state, stop: Some(tx), task }
    }
}

/// A server serving on a background task.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful stop: drains in-flight requests, then returns.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}
