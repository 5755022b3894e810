//! The application: start-up, and the request pipeline.
//!
//! ```text
//! route (method, template) -> access declared by the route table:
//!   user/admin: bearer -> JWT verify -> revocation check (one Redis round
//!   trip carrying the keys the route asks for; PostgreSQL when Redis cannot
//!   be trusted) -> 403 for a non-admin on an admin route
//! -> 413 for a declared body over 64 KiB -> path id -> handler(caller)
//! -> problem+json on error -> metrics by template
//! ```
//! The bearer is checked before the path id, the query or the body (API.md,
//! "Conventions"), so an anonymous `/tasks/abc` is a 401, not a 404.
//!
//! # Work that has begun runs to its end
//! hyper drops a request's future when its client goes away. A handler that
//! writes would then stop between its PostgreSQL commit and the Redis mirror
//! of it (a ban that Redis never hears of) or its cache invalidation. So
//! every request that may write (any method but `GET` and `HEAD`) runs as a
//! *job* on the server's [`Background`]: the connection only awaits its
//! handle, and dropping the handle does not stop the job. Its metrics are
//! counted inside the job. Shutdown waits for jobs (bounded by the grace
//! period). Such requests are bounded by `REQUEST_TIMEOUT_SECS`: past it
//! the client gets a 408, and the job still finishes.
//!
//! `GET` and `HEAD` requests run on the connection's task and can be
//! cancelled at any await. That is safe: they write nothing of record. A
//! cancelled look-up at most skips a cache fill (a later miss), the
//! single-flight entry is removed by a guard, the hash-queue place is a
//! guard too, and a rebuild they trigger is itself a job. Not paying a
//! spawn and a timer per hot read is why they are not jobs too.
//!
//! A panic in a handler is caught here and answered as a 500 problem, so a
//! bug costs one request, not the client's connection.

use crate::auth::external::External;
use crate::auth::password::Passwords;
use crate::auth::revocation::{Revocation, Scope};
use crate::auth::throttle::LoginThrottle;
use crate::auth::token::{Role, Tokens};
use crate::background::Background;
use crate::cache::PageCache;
use crate::config::Config;
use crate::db::Db;
use crate::http::error::ApiError;
use crate::http::lanes::Lanes;
use crate::http::router::{Access, Matched, Route, Router};
use crate::http::server::{ServeOptions, serve_on};
use crate::http::{JsonBody, Resp, bearer};
use crate::kv::Kv;
use crate::metrics::Metrics;
use crate::state::{AppState, Caller};
use crate::trust::Trust;
use crate::{auth, ops, tasks};
use anyhow::Context;
use bytes::Bytes;
use futures_util::FutureExt;
use hyper::header::{CACHE_CONTROL, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use hyper::{Method, Request};
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The request pipeline: the route table over the shared state.
pub struct Pipeline {
    state: Arc<AppState>,
    router: Router,
    /// `GET /openapi.json`, rendered on first use. Both are built when
    /// first asked for, not at start: a server that never serves them
    /// keeps their code and data out of memory (1 MiB of a 15.5 MiB idle
    /// server).
    openapi: OnceLock<Bytes>,
    /// The GraphQL schema, built on first use.
    graphql: OnceLock<crate::graphql::BlogSchema>,
}

impl Pipeline {
    /// The pipeline of `state`.
    pub fn new(state: Arc<AppState>) -> Arc<Self> {
        let router = Router::new(&state.metrics);
        Arc::new(Self { state, router, openapi: OnceLock::new(), graphql: OnceLock::new() })
    }

    /// The shared state.
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Answers one request: routing, authentication, the handler, errors,
    /// panics, metrics.
    pub async fn handle<B>(self: &Arc<Self>, req: Request<B>) -> Resp
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        self.handle_on(req, None).await
    }

    /// [`Pipeline::handle`] on lane `lane` (`http::lanes`): its Redis
    /// connection carries the revocation check.
    pub async fn handle_on<B>(self: &Arc<Self>, req: Request<B>, lane: Option<usize>) -> Resp
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let start = Instant::now();
        let (entry, id) = match self.router.find(req.method(), req.uri().path()) {
            Matched::Route(entry, id) => (entry, id.map(|s| s.parse::<i64>().ok().filter(|n| *n > 0))),
            Matched::MethodNotAllowed(allow) => {
                return self.unmatched(req.method(), ApiError::MethodNotAllowed(allow.to_owned()));
            }
            Matched::NotFound => return self.unmatched(req.method(), ApiError::NotFound),
        };
        let (route, access) = (entry.route, entry.access);
        if req.method() == Method::GET || req.method() == Method::HEAD {
            let resp = self.run(route, access, req, id, lane).await;
            entry.metrics.record(resp.status().as_u16(), start.elapsed());
            return resp;
        }
        let this = Arc::clone(self);
        let metrics = Arc::clone(&entry.metrics);
        let job = self.state.background.job(async move {
            let resp = this.run(route, access, req, id, lane).await;
            metrics.record(resp.status().as_u16(), start.elapsed());
            resp
        });
        match tokio::time::timeout(self.state.config.request_timeout, job).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => finish(ApiError::Internal(anyhow::anyhow!("request job failed: {e}")).into_response()),
            Err(_) => {
                tracing::warn!(route = ?route, "request timed out; its job runs on");
                finish(ApiError::RequestTimeout.into_response())
            }
        }
    }

    fn unmatched(&self, method: &Method, e: ApiError) -> Resp {
        let resp = finish(e.into_response());
        let method = match method.as_str() {
            m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") => m,
            _ => "OTHER",
        };
        self.state.metrics.unmatched(method, resp.status().as_str());
        resp
    }

    async fn run<B>(
        self: &Arc<Self>,
        route: Route,
        access: Access,
        req: Request<B>,
        id: Option<Option<i64>>,
        lane: Option<usize>,
    ) -> Resp
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let outcome = AssertUnwindSafe(self.dispatch(route, access, req, id, lane)).catch_unwind().await;
        finish(match outcome {
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
        })
    }

    /// The authentication step the route table declares: the verified,
    /// unrevoked caller, with the keys of `plan` (the hot route's cache)
    /// fetched in the same Redis round trip.
    async fn authenticate(
        &self,
        access: Access,
        headers: &hyper::HeaderMap,
        plan: Option<&tasks::ListPlan>,
        lane: Option<usize>,
    ) -> Result<Option<Caller>, ApiError> {
        if access == Access::Public {
            return Ok(None);
        }
        let st = &self.state;
        let principal = auth::verify_bearer(st, bearer(headers)?).await?;
        let extra = plan.map(|p| p.keys(st, principal.user_id)).unwrap_or_default();
        let checked = st.revocation.check(&principal, &extra, lane).await?;
        if access == Access::Admin && principal.role != Role::Admin {
            return Err(ApiError::Forbidden("This route is for administrators."));
        }
        Ok(Some(Caller { principal, checked, lane }))
    }

    async fn dispatch<B>(
        &self,
        route: Route,
        access: Access,
        req: Request<B>,
        id: Option<Option<i64>>,
        lane: Option<usize>,
    ) -> Result<Resp, ApiError>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        // The head alone until the body is needed: `Parts` is `Sync`, so
        // borrowing it keeps this future `Send` for the job that runs it.
        let (head, body) = req.into_parts();
        let plan = (route == Route::ListTasks).then(|| tasks::ListPlan::new(head.uri.query()));
        let caller = self.authenticate(access, &head.headers, plan.as_ref(), lane).await?;
        crate::http::check_declared_length(&head.headers)?;
        let query = head.uri.query();
        // A path id that is not a positive integer names nothing.
        let id = match id {
            Some(None) => return Err(ApiError::NotFound),
            Some(Some(n)) => n,
            None => 0,
        };
        let st = &*self.state;
        let graphql_response =
            route == Route::Graphql && crate::graphql::wants_graphql_response(head.headers.get(hyper::header::ACCEPT));
        let req = || JsonBody::new(&head.headers, body);
        // The route table declared who may call; a handler that needs a
        // caller on a route declared public is a bug in the table.
        let caller = move || {
            caller.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("route {route:?} needs a caller but is public")))
        };
        // Only the hot routes run inline; every other handler's future is
        // boxed, so the future of every request (hyper moves it into place,
        // and each await layer moves it again) is as small as the hot
        // path's, not as large as the largest handler's.
        match route {
            Route::ListTasks => {
                let plan = plan.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("GET /tasks without its plan")))?;
                tasks::list(st, caller()?, plan).await
            }
            Route::Healthz => Ok(ops::healthz()),
            Route::Metrics => Ok(ops::metrics(st)),
            Route::OpenApi => {
                let doc = self.openapi.get_or_init(|| Bytes::from(crate::http::openapi::render()));
                Ok(crate::http::json_bytes(hyper::StatusCode::OK, doc.clone()))
            }
            Route::Graphql => {
                let production = st.config.app_env == crate::config::AppEnv::Production;
                let schema = self.graphql.get_or_init(|| crate::graphql::build_schema(production));
                Box::pin(crate::graphql::handle(&self.state, schema, caller()?, graphql_response, req())).await
            }
            Route::Readyz => Box::pin(ops::readyz(st)).await,
            Route::Register => Box::pin(auth::register(st, req())).await,
            Route::Login => Box::pin(auth::login(st, req())).await,
            Route::Refresh => Box::pin(auth::refresh(st, req())).await,
            Route::Logout => Box::pin(auth::logout(st, caller()?)).await,
            Route::LogoutAll => Box::pin(auth::logout_all(st, caller()?)).await,
            Route::Me => Box::pin(auth::me(st, caller()?)).await,
            Route::AdminUserStatus => Box::pin(auth::set_status(st, caller()?, req(), id)).await,
            Route::CreateTask => Box::pin(tasks::create(st, caller()?, req())).await,
            Route::GetTask => Box::pin(tasks::get(st, caller()?, id)).await,
            Route::UpdateTask => Box::pin(tasks::update(st, caller()?, req(), id)).await,
            Route::DeleteTask => Box::pin(tasks::delete(st, caller()?, id)).await,
            Route::AdminTasks => Box::pin(tasks::admin_list(st, query)).await,
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

/// Connects the pools and builds the state; no side effects on the data
/// (those are the start-up steps of [`App::build`]).
async fn build_state(config: Config, lanes: &Lanes) -> anyhow::Result<Arc<AppState>> {
    let metrics = Arc::new(Metrics::new());
    let (url, size, timeout) = (config.database_url.expose(), config.pg_pool_size, config.pool_timeout);
    let db = Db::new(url, size, timeout, lanes.handles(), metrics.clone()).context("DATABASE_URL")?;
    let prefix = match &config.redis_key_prefix {
        Some(p) => p.clone(),
        None => format!("tg-{}", db.deployment_id().await.context("reading the deployment id")?),
    };
    let kv = match &config.redis_cluster_urls {
        Some(urls) => {
            let urls: Vec<String> = urls.iter().map(|u| u.expose().to_owned()).collect();
            Kv::cluster(&urls, &prefix, config.redis_timeout, metrics.clone()).context("REDIS_CLUSTER_URLS")?
        }
        None => {
            let (url, size, timeout) = (config.redis_url.expose(), config.redis_pool_size, config.redis_timeout);
            Kv::new(url, &prefix, size, timeout, lanes.handles(), metrics.clone()).context("REDIS_URL")?
        }
    };
    let background = Background::new();
    let trust = Trust::new(kv.clone());
    let passwords = Passwords::new(config.hash_concurrency, config.hash_nice, config.hash_queue_max, metrics.clone())
        .context("starting the password hashing threads")?;
    let tokens = Tokens::new(config.jwt_secret.expose().as_bytes(), config.access_ttl, config.refresh_ttl);
    let revocation = Revocation::new(
        kv.clone(),
        db.clone(),
        trust.clone(),
        background.clone(),
        metrics.clone(),
        config.revocation_entry_ttl(),
    );
    let cache =
        PageCache::new(config.cache_backend, kv.clone(), trust.clone(), config.tasks_cache_ttl, metrics.clone());
    let throttle = LoginThrottle::new(kv.clone(), config.login_max_failures, config.login_failure_window);
    let external = match &config.oidc {
        Some(oidc) => Some(External::new(oidc.clone(), db.clone(), metrics.clone()).context("OIDC_ISSUER")?),
        None => None,
    };
    Ok(Arc::new(AppState {
        config,
        db,
        kv,
        trust,
        metrics,
        tokens,
        passwords,
        revocation,
        cache,
        throttle,
        external,
        background,
    }))
}

/// A bound, ready server.
pub struct App {
    pipeline: Arc<Pipeline>,
    listener: TcpListener,
    lanes: Lanes,
}

impl App {
    /// Migrates, builds the state, runs the start-up steps (admin
    /// bootstrap, Redis trust check and rebuild), starts the background
    /// loops and binds `BIND_ADDR`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let addr = config.bind_addr;
        crate::db::migrate(config.database_url.expose()).await?;
        let lanes = Lanes::start(config.http_threads).context("starting the HTTP_THREADS lanes")?;
        let state = build_state(config, &lanes).await?;
        auth::bootstrap_admin(&state).await.context("ADMIN_EMAIL/ADMIN_PASSWORD bootstrap")?;
        // Make Redis trustworthy before the first request if it is there;
        // if not, requests answer from PostgreSQL and rebuild later.
        if state.trust.check_config().await.trusted
            && let Err(e) = state.revocation.rebuild(Scope::All).await
        {
            tracing::warn!(error = %e, "Redis not ready at start; answering from PostgreSQL until it is");
        }
        let trust = state.trust.clone();
        state.background.spawn_loop(|cancel| trust.config_loop(cancel));
        let trust = state.trust.clone();
        state.background.spawn_loop(|cancel| trust.repair_loop(cancel));
        state.background.spawn_loop(|cancel| state.passwords.release_loop(cancel));
        if let Some(external) = state.external.clone() {
            state.background.spawn_loop(|cancel| external.refresh_loop(cancel));
        }
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        Ok(Self { pipeline: Pipeline::new(state), listener, lanes })
    }

    /// The bound address (the real port when `BIND_ADDR` had port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| self.pipeline.state.config.bind_addr)
    }

    /// The shared state.
    pub fn state(&self) -> Arc<AppState> {
        Arc::clone(&self.pipeline.state)
    }

    /// The pipeline (benches drive [`Pipeline::handle`] directly).
    pub fn pipeline(&self) -> Arc<Pipeline> {
        Arc::clone(&self.pipeline)
    }

    /// Serves until `shutdown` resolves, then drains connections and waits
    /// for the jobs still running, both within `SHUTDOWN_GRACE_SECS`; then
    /// stops the lanes, which those jobs may have run on.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tracing::info!(addr = %self.local_addr(), "listening");
        let config = &self.pipeline.state.config;
        let opts = ServeOptions::from(config);
        let (grace, background) = (config.shutdown_grace, self.pipeline.state.background.clone());
        let (pipeline, lanes) = (self.pipeline, self.lanes);
        let handler = move |req, lane| {
            let p = Arc::clone(&pipeline);
            async move { p.handle_on(req, lane).await }
        };
        serve_on(self.listener, opts, lanes.handles(), handler, shutdown).await;
        if !background.shutdown(grace).await {
            tracing::warn!("background jobs still running after the grace period");
        }
        lanes.stop().await;
    }

    /// Serves on a background task; stop it with [`Running::stop`].
    pub fn spawn(self) -> Running {
        let addr = self.local_addr();
        let (state, pipeline) = (self.state(), self.pipeline());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(self.run(async {
            let _ = rx.await;
        }));
        Running { addr, state, pipeline, stop: Some(tx), task }
    }
}

/// A server serving on a background task.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state.
    pub state: Arc<AppState>,
    /// Its pipeline, to answer requests in-process (benches).
    pub pipeline: Arc<Pipeline>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful stop: drains in-flight requests, stops the background loops
    /// and waits for running jobs, then returns.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}
