//! Tollgate: JWT authentication whose tokens can be revoked at once, in
//! front of a cached task API, measured path by path.
//!
//! # Layout
//! From the top down; each module imports only from below it:
//! - [`app`]: start-up steps and the request pipeline (routing, the
//!   authentication the route table declares, jobs for writes, errors,
//!   metrics).
//! - [`auth`], [`tasks`], [`graphql`], [`ops`]: the handlers, taking a [`state::AppState`]
//!   and, on authenticated routes, the pipeline's [`state::Caller`].
//! - [`state`]: the shared state every request can reach.
//! - [`auth::revocation`], [`auth::throttle`], [`auth::password`],
//!   [`auth::token`], [`auth::email`], [`auth::external`], [`cache`]: the
//!   services behind the handlers.
//! - [`trust`]: whether Redis's word is good (epoch bound to the Redis
//!   process, configuration verdict, repair after a failed write).
//! - [`db`]: the PostgreSQL pool, every statement (one function each, by
//!   table), migrations. [`kv`]: the Redis pool, key layout and failure
//!   policy.
//! - [`http`]: listener, lanes (threads with a runtime each that answer
//!   the connections) and graceful shutdown (knows nothing of the app),
//!   routing table, the error type that maps to problem+json, body decoding.
//! - [`background`]: owned background tasks and jobs. [`metrics`]: the
//!   Prometheus registry of the contract's metrics. [`config`]: embedded
//!   defaults, a settings file, the environment.
//!
//! # The request path
//! `hyper` (HTTP/1.1 keep-alive) -> [`http::router`] (method, template,
//! declared access) -> JWT verify (ours, or the identity provider's by its
//! `iss`: [`auth::external`]) -> [`auth::revocation`] (one Redis round
//! trip carrying the cache's keys too; PostgreSQL when Redis cannot be
//! trusted) -> handler -> [`cache`] or PostgreSQL -> response ->
//! metrics by template.
//!
//! The binary (`main.rs`) only parses arguments, sets up logging and runs
//! [`app::App`]; tests, load tests and benches start the same server
//! in-process on port 0.

#![deny(missing_docs)]

pub mod app;
pub mod auth;
pub mod background;
pub mod cache;
pub mod config;
pub mod db;
pub mod graphql;
pub mod http;
pub mod kv;
pub mod metrics;
pub mod ops;
pub mod state;
pub mod tasks;
pub mod trust;

pub use app::{App, Pipeline, Running};
pub use config::Config;
pub use state::AppState;

/// Sets up logging from the configuration (idempotent: a second call, as in
/// tests, keeps the first set-up).
pub fn init_tracing(config: &Config) {
    use tracing_subscriber::prelude::*;
    let filter: tracing_subscriber::filter::Targets =
        config.log_filter.parse().unwrap_or_else(|_| tracing_subscriber::filter::Targets::new());
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if config.log_format == config::LogFormat::Json {
        registry.with(tracing_subscriber::fmt::layer().json()).try_init()
    } else {
        registry.with(tracing_subscriber::fmt::layer()).try_init()
    };
}
