//! Prometheus metrics. Names and labels are part of the contract (API.md,
//! "Metrics"); the dashboards read exactly these.
//!
//! Each server owns its registry (tests run several servers in one process).
//! Series on the request path are created once, at start-up, and kept as
//! handles: a request does no label lookup and takes no lock to be counted.
//! Pool gauges are read from the pools when `/metrics` is scraped instead of
//! being updated on every checkout.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::time::Duration;

/// Latency buckets (seconds): from a cache hit (~100 µs) to a pool timeout.
const HTTP_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Password hash buckets (seconds): Argon2id at OWASP parameters is tens of ms.
const HASH_BUCKETS: &[f64] = &[0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5];

/// Statuses pre-created for every route, so their counters exist (as 0) from
/// the first scrape and need no lookup when counted.
const COMMON_STATUSES: &[u16] = &[200, 201, 204, 400, 401, 403, 404, 409, 413, 415, 429, 500, 503];

/// Where a revocation decision came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckSource {
    /// One Redis round trip.
    Redis,
    /// PostgreSQL (Redis down, lost its state, or being rebuilt).
    Db,
    /// This process's memory. Part of the contract's label set for
    /// implementations that keep one; this server never answers a revocation
    /// check from memory (it would miss other instances' revocations), so
    /// the series stays at 0.
    Local,
}

/// Distinct GraphQL operation names kept as label values.
pub const MAX_OPERATION_NAMES: usize = 200;

/// Every metric of the server.
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    /// `auth_events_total{event,outcome}`.
    pub auth_events: IntCounterVec,
    /// `dependency_errors_total{dependency,op}`.
    pub dependency_errors: IntCounterVec,
    pool_connections: IntGaugeVec,
    /// `password_hash_duration_seconds`.
    pub password_hash: Histogram,
    /// `cache_requests_total{cache="tasks",result="hit"}`.
    pub tasks_cache_hit: IntCounter,
    /// `cache_requests_total{cache="tasks",result="miss"}`.
    pub tasks_cache_miss: IntCounter,
    cache: IntCounterVec,
    graphql: IntCounterVec,
    /// Operation names seen so far (label values), at most [`MAX_OPERATION_NAMES`].
    graphql_names: std::sync::Mutex<std::collections::HashSet<String>>,
    revocation: [[IntCounter; 2]; 3],
    jwks_fetches: IntCounterVec,
    external_tokens: IntCounterVec,
    rebuilds: IntCounterVec,
    rebuilt_slots: IntCounter,
}

/// What became of an external identity provider's token
/// (`external_token_checks_total{result}`, beside the contract's metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExternalOutcome {
    /// Verified and not revoked.
    Allowed,
    /// Verified, but revoked here (status change, logout, logout-all).
    Revoked,
    /// Failed verification (signature, claims, algorithm, unknown key).
    Refused,
    /// No key could verify it and the provider's keys could not be fetched.
    Unavailable,
}

/// The pre-created series of one route (method and template).
pub struct RouteMetrics {
    duration: Histogram,
    by_status: Vec<(u16, IntCounter)>,
    requests: IntCounterVec,
    method: &'static str,
    route: &'static str,
}

impl RouteMetrics {
    /// Counts one answered request.
    pub fn record(&self, status: u16, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
        match self.by_status.iter().find(|(s, _)| *s == status) {
            Some((_, c)) => c.inc(),
            None => self.requests.with_label_values(&[self.method, self.route, &status.to_string()]).inc(),
        }
    }
}

/// Point-in-time pool sizes, read at scrape time.
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolState {
    /// Connections open.
    pub connections: u32,
    /// Of which idle.
    pub idle: u32,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Only reachable with a malformed name or duplicate registration, both
    // fixed at compile time here: a bug, not a runtime condition.
    r.unwrap_or_else(|e| panic!("metric definition is invalid: {e}"))
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let http_requests = must(IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered, by route template and status."),
            &["method", "route", "status"],
        ));
        let http_duration = must(HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "Time from routing to response, by route template.")
                .buckets(HTTP_BUCKETS.to_vec()),
            &["method", "route"],
        ));
        let cache = must(IntCounterVec::new(
            Opts::new("cache_requests_total", "Cache look-ups by cache and result."),
            &["cache", "result"],
        ));
        let graphql = must(IntCounterVec::new(
            Opts::new("graphql_operations_total", "GraphQL operations by name, type and result."),
            &["operation", "type", "result"],
        ));
        let revocation = must(IntCounterVec::new(
            Opts::new("revocation_checks_total", "Revocation checks by where they were answered and the result."),
            &["source", "result"],
        ));
        let jwks_fetches = must(IntCounterVec::new(
            Opts::new("jwks_fetches_total", "Fetches of the identity provider's signing keys, by result."),
            &["result"],
        ));
        let external_tokens = must(IntCounterVec::new(
            Opts::new(
                "external_token_checks_total",
                "External identity provider tokens by outcome: allowed, revoked here, refused, unavailable.",
            ),
            &["result"],
        ));
        let rebuilds = must(IntCounterVec::new(
            Opts::new(
                "redis_rebuilds_total",
                "Rebuilds of Redis's revocation state from PostgreSQL that found something lost, by result.",
            ),
            &["result"],
        ));
        let rebuilt_slots = must(IntCounter::new(
            "redis_rebuilt_slots_total",
            "Epochs restored by rebuilds: one per Redis, one per hash slot on a cluster.",
        ));
        let auth_events = must(IntCounterVec::new(
            Opts::new("auth_events_total", "Authentication events by kind and outcome."),
            &["event", "outcome"],
        ));
        let dependency_errors = must(IntCounterVec::new(
            Opts::new("dependency_errors_total", "Failed or timed-out calls to PostgreSQL or Redis."),
            &["dependency", "op"],
        ));
        let pool_connections = must(IntGaugeVec::new(
            Opts::new("pool_connections", "Pooled connections by pool and state."),
            &["pool", "state"],
        ));
        let password_hash = must(Histogram::with_opts(
            HistogramOpts::new("password_hash_duration_seconds", "Time of one password hash or verification.")
                .buckets(HASH_BUCKETS.to_vec()),
        ));
        for c in [
            Box::new(http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(http_duration.clone()),
            Box::new(cache.clone()),
            Box::new(graphql.clone()),
            Box::new(revocation.clone()),
            Box::new(auth_events.clone()),
            Box::new(dependency_errors.clone()),
            Box::new(pool_connections.clone()),
            Box::new(password_hash.clone()),
            Box::new(jwks_fetches.clone()),
            Box::new(external_tokens.clone()),
            Box::new(rebuilds.clone()),
            Box::new(rebuilt_slots.clone()),
        ] {
            must(registry.register(c));
        }
        let rev = |source: &str| {
            [revocation.with_label_values(&[source, "allowed"]), revocation.with_label_values(&[source, "revoked"])]
        };
        let revocation_handles = [rev("redis"), rev("db"), rev("local")];
        // Create the series dashboards and alerts divide by, so they read 0
        // rather than "no data" before the first event.
        for (event, outcomes) in [
            ("register", &["success", "conflict", "invalid"][..]),
            ("login", &["success", "failure", "inactive", "throttled"]),
            ("refresh", &["success", "failure", "reuse"]),
            ("logout", &["success", "all"]),
        ] {
            for o in outcomes {
                auth_events.with_label_values(&[event, o]);
            }
        }
        for (dep, op) in [("redis", "revocation_check"), ("redis", "cache"), ("postgres", "query")] {
            dependency_errors.with_label_values(&[dep, op]);
        }
        for result in ["hit", "miss"] {
            cache.with_label_values(&["posts", result]);
        }
        for result in ["ok", "error"] {
            jwks_fetches.with_label_values(&[result]);
        }
        for result in ["allowed", "revoked", "refused", "unavailable"] {
            external_tokens.with_label_values(&[result]);
        }
        for result in ["restored", "voided", "failed"] {
            rebuilds.with_label_values(&[result]);
        }
        Self {
            tasks_cache_hit: cache.with_label_values(&["tasks", "hit"]),
            tasks_cache_miss: cache.with_label_values(&["tasks", "miss"]),
            cache,
            graphql,
            graphql_names: std::sync::Mutex::default(),
            registry,
            http_requests,
            http_duration,
            auth_events,
            dependency_errors,
            pool_connections,
            password_hash,
            revocation: revocation_handles,
            jwks_fetches,
            external_tokens,
            rebuilds,
            rebuilt_slots,
        }
    }

    /// The series of one route; call once per route at start-up.
    pub fn route(&self, method: &'static str, route: &'static str) -> RouteMetrics {
        RouteMetrics {
            duration: self.http_duration.with_label_values(&[method, route]),
            by_status: COMMON_STATUSES
                .iter()
                .map(|s| (*s, self.http_requests.with_label_values(&[method, route, &s.to_string()])))
                .collect(),
            requests: self.http_requests.clone(),
            method,
            route,
        }
    }

    /// Counts a request that matched no route (`route="unmatched"`); not
    /// on the hot path, so the label lookup is acceptable here.
    pub fn unmatched(&self, method: &str, status: &str) {
        self.http_requests.with_label_values(&[method, "unmatched", status]).inc();
    }

    /// Counts one revocation decision.
    pub fn revocation_check(&self, source: CheckSource, revoked: bool) {
        let s = match source {
            CheckSource::Redis => 0,
            CheckSource::Db => 1,
            CheckSource::Local => 2,
        };
        self.revocation[s][usize::from(revoked)].inc();
    }

    /// Counts one fetch of the identity provider's keys.
    pub fn jwks_fetch(&self, ok: bool) {
        self.jwks_fetches.with_label_values(&[if ok { "ok" } else { "error" }]).inc();
    }

    /// Counts what became of one external token (not on cache hits of
    /// the verification: every revocation check of one is counted).
    pub fn external_token(&self, outcome: ExternalOutcome) {
        let label = match outcome {
            ExternalOutcome::Allowed => "allowed",
            ExternalOutcome::Revoked => "revoked",
            ExternalOutcome::Refused => "refused",
            ExternalOutcome::Unavailable => "unavailable",
        };
        self.external_tokens.with_label_values(&[label]).inc();
    }

    /// Counts a rebuild that found something lost (`result` = restored,
    /// voided or failed) and the epochs it restored.
    pub fn redis_rebuild(&self, result: &'static str, restored: usize) {
        self.rebuilds.with_label_values(&[result]).inc();
        self.rebuilt_slots.inc_by(restored as u64);
    }

    /// Counts a look-up of a cache other than the hot tasks one.
    pub fn cache_lookup(&self, cache: &'static str, hit: bool) {
        self.cache.with_label_values(&[cache, if hit { "hit" } else { "miss" }]).inc();
    }

    /// Counts one GraphQL operation. `operation` is a name from the
    /// client's document: a label value, so past [`MAX_OPERATION_NAMES`]
    /// distinct names (and for a name longer than 64 bytes) it is `other`,
    /// and no client can grow the registry without bound.
    pub fn graphql_operation(&self, operation: &str, kind: &'static str, ok: bool) {
        let known = operation.len() <= 64
            && self.graphql_names.lock().is_ok_and(|mut names| {
                names.contains(operation) || (names.len() < MAX_OPERATION_NAMES && names.insert(operation.to_owned()))
            });
        let name = if known { operation } else { "other" };
        self.graphql.with_label_values(&[name, kind, if ok { "ok" } else { "error" }]).inc();
    }

    /// Counts a failed call to a dependency.
    pub fn dependency_error(&self, dependency: &'static str, op: &'static str) {
        self.dependency_errors.with_label_values(&[dependency, op]).inc();
    }

    /// Counts an auth event.
    pub fn auth_event(&self, event: &'static str, outcome: &'static str) {
        self.auth_events.with_label_values(&[event, outcome]).inc();
    }

    /// The text exposition, with the pool gauges set from `pools` first.
    pub fn render(&self, pools: &[(&'static str, PoolState)]) -> Vec<u8> {
        for (pool, st) in pools {
            let busy = st.connections.saturating_sub(st.idle);
            self.pool_connections.with_label_values(&[pool, "idle"]).set(i64::from(st.idle));
            self.pool_connections.with_label_values(&[pool, "busy"]).set(i64::from(busy));
        }
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
