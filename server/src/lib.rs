//! Tollgate: JWT authentication whose tokens can be revoked at once, in
//! front of a cached task API, measured path by path.
//!
//! # Layout
//! - [`config`]: embedded defaults, a settings file, the environment.
//! - [`app`]: shared state, start-up, the request pipeline.
//! - [`http`]: listener and graceful shutdown, routing, the error type that
//!   maps to problem+json, body decoding.
//! - [`auth`]: accounts, password hashing, JWTs, revocation, login throttling.
//! - [`tasks`]: task handlers and queries, and the per-user list cache.
//! - [`db`]: the PostgreSQL pool, every prepared statement, migrations.
//! - [`kv`]: the Redis pool, key layout and failure policy.
//! - [`metrics`]: the Prometheus registry of API.md's metrics.
//! - [`ops`]: health, readiness, metrics routes.
//!
//! # The request path
//! `hyper` (HTTP/1.1 keep-alive) -> [`http::router`] (method and template)
//! -> JWT verify -> [`auth::revocation`] (one Redis round trip carrying the
//! cache look-up too; PostgreSQL when Redis cannot answer) -> handler ->
//! [`tasks::cache`] or PostgreSQL -> response -> metrics by template.
//!
//! The binary (`main.rs`) only parses arguments, sets up logging and runs
//! [`app::App`]; tests, load tests and benches start the same server
//! in-process on port 0.

#![deny(missing_docs)]

pub mod app;
pub mod auth;
pub mod config;
pub mod db;
pub mod http;
pub mod kv;
pub mod metrics;
pub mod ops;
pub mod tasks;

pub use app::{App, AppState, Running};
pub use config::Config;

/// Sets up logging from the configuration (idempotent: a second call, as in
/// tests, keeps the first set-up).
pub fn init_tracing(config: &Config) {
    use tracing_subscriber::prelude::*;
    let filter: tracing_subscriber::filter::Targets =
        config.log_filter.parse().unwrap_or_else(|_| tracing_subscriber::filter::Targets::new());
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if config.log_format == "json" {
        registry.with(tracing_subscriber::fmt::layer().json()).try_init()
    } else {
        registry.with(tracing_subscriber::fmt::layer()).try_init()
    };
}
