//! Configuration: embedded defaults, overridden by an optional file, then by
//! the environment.
//!
//! Every setting has a default here, so the binary runs with no environment at
//! all. Values are read through [`Source`] so tests pass a map instead of
//! mutating the process environment. Every bad value is reported, not just the
//! first, so a deployment is fixed in one round.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// The HS256 key used when `JWT_SECRET` is unset. Warned about at start-up and
/// refused when `APP_ENV=production`.
pub const DEV_JWT_SECRET: &str = "tollgate-development-secret-change-me-0123456789";

/// A source of `KEY -> value` settings.
pub trait Source {
    /// The raw value of `key`, if set.
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct Env;

impl Source for Env {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

/// Two sources, the first one winning (environment over file).
pub struct Layered<A, B>(pub A, pub B);

impl<A: Source, B: Source> Source for Layered<A, B> {
    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).or_else(|| self.1.get(key))
    }
}

/// Parses a settings file of `KEY=VALUE` lines (the same names as the
/// environment; `#` comments and blank lines allowed; optional quotes).
pub fn parse_file(text: &str) -> Result<HashMap<String, String>, String> {
    let mut map = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=VALUE", n + 1));
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        map.insert(k.trim().to_owned(), v.to_owned());
    }
    Ok(map)
}

/// A value that must never be printed or logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The longest an external identity provider's access token may live to be
/// accepted (Cognito's and Entra ID's maximum is a day): revocation entries
/// must outlive every token they refuse.
pub const EXTERNAL_TOKEN_MAX_LIFETIME: Duration = Duration::from_secs(86_400);

/// How a setting's default is given.
#[derive(Clone, Copy, Debug)]
pub enum DefaultValue {
    /// This text, parsed like a value from the environment.
    Value(&'static str),
    /// Computed at start-up; the text says how (for `--help` and the README).
    Derived(&'static str),
    /// Unset unless given.
    Unset,
}

/// One setting: its variable, default and meaning, declared once. Parsing
/// reads defaults from here; `--help`, `--print-config` and the README's
/// table are made from this list (a test holds the README to it).
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// The environment variable (and settings-file key).
    pub key: &'static str,
    /// Its default.
    pub default: DefaultValue,
    /// What it means, for a person.
    pub meaning: &'static str,
    /// Never printed (`--print-config` shows `<redacted>`).
    pub secret: bool,
}

const fn s(key: &'static str, default: DefaultValue, meaning: &'static str) -> Setting {
    Setting { key, default, meaning, secret: false }
}
const fn secret(key: &'static str, default: DefaultValue, meaning: &'static str) -> Setting {
    Setting { key, default, meaning, secret: true }
}
use DefaultValue::{Derived, Unset, Value};

/// Every setting of the server.
pub const SETTINGS: &[Setting] = &[
    s(
        "APP_ENV",
        Value("development"),
        "`development`, `test` or `production` (refuses the development JWT secret and secrets under 32 bytes)",
    ),
    s("BIND_ADDR", Value("127.0.0.1:8080"), "listen address; `:PORT` means loopback, port 0 a free port (logged)"),
    secret("DATABASE_URL", Value("postgres://postgres@localhost/tasks"), "PostgreSQL (a password in it is redacted)"),
    secret(
        "REDIS_URL",
        Value("redis://127.0.0.1:6379"),
        "Redis: redis://HOST:PORT, or unix:///PATH for a socket on the same host (a password in it is redacted)",
    ),
    secret(
        "REDIS_CLUSTER_URLS",
        Unset,
        "seed nodes of a Redis Cluster (comma-separated redis:// URLs), used instead of `REDIS_URL` (passwords in them are redacted)",
    ),
    s(
        "REDIS_KEY_PREFIX",
        Derived("`tg-` and a random id stored in the database"),
        "namespace of every Redis key: instances on one database share it, deployments sharing a Redis never do",
    ),
    secret(
        "JWT_SECRET",
        Derived("a development secret (warned about; refused off loopback and in production)"),
        "HS256 key",
    ),
    s("ACCESS_TOKEN_TTL_SECS", Value("900"), "access token lifetime (never past its session's end)"),
    s(
        "REFRESH_TOKEN_TTL_SECS",
        Value("604800"),
        "session and refresh token lifetime (may be shorter than the access lifetime); revocation entries live the longer of the two",
    ),
    s("TASKS_CACHE_TTL_SECS", Value("30"), "task-list cache TTL"),
    s("CACHE_BACKEND", Value("redis"), "`redis`, `memory` (in-process, one instance) or `off`"),
    s(
        "LOGIN_MAX_FAILURES",
        Value("10"),
        "password verifications per account per window before 429, however many arrive at once",
    ),
    s("LOGIN_FAILURE_WINDOW_SECS", Value("900"), "the window of `LOGIN_MAX_FAILURES`, from the first attempt"),
    s(
        "ADMIN_EMAIL",
        Unset,
        "with `ADMIN_PASSWORD`: at start-up that account exists, is active, is an admin, has that password; if that changed an existing account, all its sessions end",
    ),
    secret("ADMIN_PASSWORD", Unset, "see `ADMIN_EMAIL`"),
    s("MAX_SESSIONS_PER_USER", Value("100"), "live sessions per user; a login past it ends the oldest"),
    s(
        "PG_POOL_SIZE",
        Value("16"),
        "pooled PostgreSQL connections, for writes and transactions (each lane also has one of its own, shared by its reads)",
    ),
    s(
        "REDIS_POOL_SIZE",
        Derived("CPU count / 2, at least 1"),
        "shared multiplexed Redis connections (each lane also has one of its own): each pipelines the commands of every request it carries",
    ),
    s("POOL_TIMEOUT_MS", Value("2000"), "longest wait for a PostgreSQL connection before 503"),
    s("REDIS_TIMEOUT_MS", Value("250"), "longest wait for Redis before answering from PostgreSQL"),
    s("HASH_CONCURRENCY", Derived("CPU count"), "password hashes at once"),
    s("HASH_QUEUE_MAX", Value("512"), "logins waiting for a hash slot before 503"),
    s(
        "HASH_NICE",
        Value("10"),
        "nice value of the hashing threads (0-19): higher yields more CPU to requests during a login storm, and slows logins while requests keep the cores busy",
    ),
    s(
        "HTTP_THREADS",
        Derived("CPU count"),
        "lanes: threads that each answer their share of the connections on a runtime, Redis and PostgreSQL connection of their own; 0 answers them on the shared runtime",
    ),
    s("MAX_CONNECTIONS", Derived("the open-file limit less the pools and 64"), "open client connections"),
    s("HEADER_READ_TIMEOUT_SECS", Value("10"), "a client must send its request head within this"),
    s("BODY_READ_TIMEOUT_SECS", Value("10"), "... and its body within this (else 408)"),
    s("REQUEST_TIMEOUT_SECS", Value("30"), "longest answer to a request with a body (408; the work still finishes)"),
    s("SHUTDOWN_GRACE_SECS", Value("10"), "in-flight requests and running jobs get this long after SIGTERM or Ctrl-C"),
    s(
        "OIDC_ISSUER",
        Unset,
        "an external identity provider whose access tokens are accepted (its exact `iss`; https, or http on loopback)",
    ),
    s(
        "OIDC_AUDIENCE",
        Unset,
        "required with `OIDC_ISSUER`: the token's `aud` contains it, or, without `aud` (Cognito access tokens), its `client_id` equals it",
    ),
    s(
        "OIDC_JWKS_URL",
        Derived("the `jwks_uri` of `{OIDC_ISSUER}/.well-known/openid-configuration`"),
        "where the provider's signing keys are",
    ),
    s(
        "OIDC_REQUIRED_CLAIMS",
        Unset,
        "comma-separated `name=value` pairs every external token must carry, e.g. `token_use=access` for Cognito",
    ),
    s(
        "OIDC_ADMIN_GROUP",
        Unset,
        "an external token whose `cognito:groups`, `groups` or `roles` claim contains this value has the role `admin`",
    ),
    s("LOG_FORMAT", Value("text"), "`text` or `json`"),
    s("RUST_LOG", Value("info"), "log filter (`info,audit=info,tollgate=debug`); audit lines use target `audit`"),
];

/// The setting of `key`; a key missing from [`SETTINGS`] is a bug.
fn setting(key: &str) -> &'static Setting {
    SETTINGS.iter().find(|s| s.key == key).unwrap_or_else(|| panic!("{key} is not declared in config::SETTINGS"))
}

/// The settings as the README's table (`tollgate --settings-table`).
pub fn settings_table() -> String {
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for st in SETTINGS {
        let default = match st.default {
            Value(v) => format!("`{v}`"),
            Derived(how) => how.to_owned(),
            Unset => "unset".to_owned(),
        };
        out.push_str(&format!("| `{}` | {default} | {} |\n", st.key, st.meaning));
    }
    out
}

/// The settings for `--help`: one line each.
pub fn settings_help() -> String {
    SETTINGS.iter().map(|st| format!("  {:<26} {}\n", st.key, st.meaning.replace('`', ""))).collect()
}

/// A choice among named values (`APP_ENV`, `CACHE_BACKEND`, `LOG_FORMAT`).
pub trait Named: Copy + 'static {
    /// Every value with its name.
    const NAMES: &'static [(&'static str, Self)];
    /// Its name.
    fn name(self) -> &'static str
    where
        Self: PartialEq,
    {
        Self::NAMES.iter().find(|(_, v)| *v == self).map_or("?", |(n, _)| n)
    }
}

/// `APP_ENV`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppEnv {
    /// The default.
    Development,
    /// Test runs.
    Test,
    /// Refuses the development secret and short secrets.
    Production,
}

impl Named for AppEnv {
    const NAMES: &'static [(&'static str, Self)] =
        &[("development", Self::Development), ("test", Self::Test), ("production", Self::Production)];
}

/// `LOG_FORMAT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Named for LogFormat {
    const NAMES: &'static [(&'static str, Self)] = &[("text", Self::Text), ("json", Self::Json)];
}

/// Where the per-user task-list cache lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheBackend {
    /// Shared by every instance through Redis (the default).
    Redis,
    /// In this process only (moka); for a single instance.
    Memory,
    /// No cache: every read goes to PostgreSQL (for measuring the miss path).
    Off,
}

impl Named for CacheBackend {
    const NAMES: &'static [(&'static str, Self)] =
        &[("redis", Self::Redis), ("memory", Self::Memory), ("off", Self::Off)];
}

/// The whole configuration. Field docs name the variable that sets them;
/// their meanings are in [`SETTINGS`].
#[derive(Clone, Debug)]
pub struct Config {
    /// `APP_ENV`.
    pub app_env: AppEnv,
    /// `BIND_ADDR`.
    pub bind_addr: SocketAddr,
    /// `DATABASE_URL`.
    pub database_url: Secret,
    /// `REDIS_URL`.
    pub redis_url: Secret,
    /// `REDIS_CLUSTER_URLS`: a Redis Cluster instead of `REDIS_URL`.
    pub redis_cluster_urls: Option<Vec<Secret>>,
    /// `REDIS_KEY_PREFIX`; None: derived from the database at start-up.
    pub redis_key_prefix: Option<String>,
    /// `JWT_SECRET`.
    pub jwt_secret: Secret,
    /// `ACCESS_TOKEN_TTL_SECS`.
    pub access_ttl: Duration,
    /// `REFRESH_TOKEN_TTL_SECS`.
    pub refresh_ttl: Duration,
    /// `TASKS_CACHE_TTL_SECS`.
    pub tasks_cache_ttl: Duration,
    /// `CACHE_BACKEND`.
    pub cache_backend: CacheBackend,
    /// `LOGIN_MAX_FAILURES`.
    pub login_max_failures: u32,
    /// `LOGIN_FAILURE_WINDOW_SECS`.
    pub login_failure_window: Duration,
    /// `ADMIN_EMAIL`.
    pub admin_email: Option<String>,
    /// `ADMIN_PASSWORD`.
    pub admin_password: Option<Secret>,
    /// `MAX_SESSIONS_PER_USER`.
    pub max_sessions_per_user: i64,
    /// `PG_POOL_SIZE`.
    pub pg_pool_size: u32,
    /// `REDIS_POOL_SIZE`.
    pub redis_pool_size: u32,
    /// `POOL_TIMEOUT_MS`.
    pub pool_timeout: Duration,
    /// `REDIS_TIMEOUT_MS`.
    pub redis_timeout: Duration,
    /// `HASH_CONCURRENCY`.
    pub hash_concurrency: usize,
    /// `HTTP_THREADS`: lanes (`http::lanes`).
    pub http_threads: usize,
    /// `HASH_QUEUE_MAX`.
    pub hash_queue_max: usize,
    /// `HASH_NICE`.
    pub hash_nice: i32,
    /// `MAX_CONNECTIONS`.
    pub max_connections: usize,
    /// `HEADER_READ_TIMEOUT_SECS`.
    pub header_read_timeout: Duration,
    /// `BODY_READ_TIMEOUT_SECS`.
    pub body_read_timeout: Duration,
    /// `REQUEST_TIMEOUT_SECS`.
    pub request_timeout: Duration,
    /// `SHUTDOWN_GRACE_SECS`.
    pub shutdown_grace: Duration,
    /// `OIDC_*`: the external identity provider, if any.
    pub oidc: Option<OidcConfig>,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
    /// `RUST_LOG`.
    pub log_filter: String,
    /// Every setting's effective value as text, in [`SETTINGS`] order, for
    /// `--print-config` (secrets are redacted there, not here).
    effective: Vec<(&'static str, String)>,
}

/// An external identity provider (`OIDC_*`, API.md "External identity
/// providers").
#[derive(Clone, Debug)]
pub struct OidcConfig {
    /// `OIDC_ISSUER`: the exact `iss` of its tokens.
    pub issuer: String,
    /// `OIDC_AUDIENCE`.
    pub audience: String,
    /// `OIDC_JWKS_URL`; None: found through discovery.
    pub jwks_url: Option<String>,
    /// `OIDC_REQUIRED_CLAIMS`, parsed.
    pub required_claims: Vec<(String, String)>,
    /// `OIDC_ADMIN_GROUP`.
    pub admin_group: Option<String>,
}

/// Whether a provider URL may be fetched: https anywhere, plain http only
/// to a loopback host (a test provider, a sidecar), never elsewhere, since
/// keys fetched in the clear could be swapped by anyone on the path.
pub fn fetchable_url(url: &str) -> Result<(), &'static str> {
    let u = reqwest::Url::parse(url).map_err(|_| "is not a URL")?;
    let host = u.host_str().unwrap_or("");
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match u.scheme() {
        "https" if !host.is_empty() => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err("must be https (plain http only on loopback)"),
        _ => Err("must be an https:// URL"),
    }
}

/// `name=value,name=value`; None when a pair has no `=` or an empty name.
fn parse_claim_pairs(v: &str) -> Option<Vec<(String, String)>> {
    v.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').filter(|(k, _)| !k.trim().is_empty()))
        .map(|kv| kv.map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())))
        .collect()
}

/// One bad setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable.
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Reads settings from a source, collecting every error instead of
/// stopping, and recording each effective value.
struct Reader<'a> {
    src: &'a dyn Source,
    errors: Vec<ConfigError>,
    effective: Vec<(&'static str, String)>,
}

impl Reader<'_> {
    fn fail(&mut self, key: &'static str, message: impl Into<String>) {
        self.errors.push(ConfigError { key, message: message.into() });
    }

    /// The given value, else the declared default's text, else None.
    fn text(&mut self, key: &'static str) -> Option<String> {
        let given = self.src.get(key).filter(|v| !v.trim().is_empty()).map(|v| v.trim().to_owned());
        let v = given.or_else(|| match setting(key).default {
            Value(v) => Some(v.to_owned()),
            Derived(_) | Unset => None,
        });
        if let Some(v) = &v {
            self.effective.push((key, v.clone()));
        }
        v
    }

    /// A value derived at start-up when none was given; recorded too.
    fn or_derived<T: ToString>(&mut self, key: &'static str, given: Option<T>, derive: impl FnOnce() -> T) -> T {
        given.unwrap_or_else(|| {
            let v = derive();
            self.effective.push((key, v.to_string()));
            v
        })
    }

    fn parse<T: std::str::FromStr>(&mut self, key: &'static str, what: &str) -> Option<T> {
        let v = self.text(key)?;
        v.parse().map_err(|_| self.fail(key, format!("{v:?} is not {what}"))).ok()
    }

    fn number(&mut self, key: &'static str, min: u64, max: u64) -> u64 {
        self.number_or(key, min, max, || min)
    }

    fn number_or(&mut self, key: &'static str, min: u64, max: u64, derive: impl FnOnce() -> u64) -> u64 {
        let given = self.parse::<u64>(key, "a whole number");
        let v = self.or_derived(key, given, derive);
        if !(min..=max).contains(&v) {
            self.fail(key, format!("{v} is outside {min}..={max}"));
        }
        v.clamp(min, max)
    }

    fn secs(&mut self, key: &'static str, min: u64, max: u64) -> Duration {
        Duration::from_secs(self.number(key, min, max))
    }

    fn millis(&mut self, key: &'static str, min: u64, max: u64) -> Duration {
        Duration::from_millis(self.number(key, min, max))
    }

    fn choice<T: Named>(&mut self, key: &'static str) -> T {
        let v = self.text(key).unwrap_or_default();
        match T::NAMES.iter().find(|(n, _)| *n == v) {
            Some((_, t)) => *t,
            None => {
                let names: Vec<&str> = T::NAMES.iter().map(|(n, _)| *n).collect();
                self.fail(key, format!("{v:?} is not one of {}", names.join(", ")));
                T::NAMES[0].1
            }
        }
    }
}

fn parse_bind(v: &str) -> Option<SocketAddr> {
    if let Some(port) = v.strip_prefix(':') {
        return port.parse::<u16>().ok().map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    }
    v.parse().ok()
}

impl Config {
    /// Builds the configuration from `src`, or every problem found.
    pub fn from_source(src: &dyn Source) -> Result<Self, Vec<ConfigError>> {
        let mut r = Reader { src, errors: Vec::new(), effective: Vec::new() };
        let app_env = r.choice::<AppEnv>("APP_ENV");
        let bind_raw = r.text("BIND_ADDR").unwrap_or_default();
        let bind_addr = parse_bind(&bind_raw).unwrap_or_else(|| {
            r.fail("BIND_ADDR", format!("{bind_raw:?} is not HOST:PORT or :PORT"));
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let database_url = r.text("DATABASE_URL").unwrap_or_default();
        if !database_url.starts_with("postgres://") && !database_url.starts_with("postgresql://") {
            r.fail("DATABASE_URL", "must start with postgres://");
        }
        let redis_url = r.text("REDIS_URL").unwrap_or_default();
        // unix:// (or redis+unix://): a single-host deployment skips the
        // TCP stack on both ends of the hot path's one round trip.
        if !["redis://", "rediss://", "unix://", "redis+unix://"].iter().any(|s| redis_url.starts_with(s)) {
            r.fail("REDIS_URL", "must start with redis://, rediss:// or unix:// (a socket path)");
        }
        let redis_cluster_urls = r.text("REDIS_CLUSTER_URLS").map(|v| {
            let urls: Vec<String> = v.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
            if urls.is_empty() || !urls.iter().all(|u| u.starts_with("redis://") || u.starts_with("rediss://")) {
                r.fail("REDIS_CLUSTER_URLS", "must be redis:// (or rediss://) URLs separated by commas");
            }
            urls.into_iter().map(Secret::new).collect()
        });
        let redis_key_prefix = r.text("REDIS_KEY_PREFIX");
        if redis_key_prefix.as_deref().is_some_and(|p| p.contains(['{', '}', ' '])) {
            r.fail("REDIS_KEY_PREFIX", "may not contain braces or spaces");
        }
        let jwt_secret = r.text("JWT_SECRET").unwrap_or_else(|| DEV_JWT_SECRET.to_owned());
        check_secret(&mut r, &jwt_secret, app_env, bind_addr);
        let access_ttl = r.secs("ACCESS_TOKEN_TTL_SECS", 1, 86_400);
        // Shorter than the access lifetime is valid: tokens never outlive
        // their session, which lasts the refresh lifetime.
        let refresh_ttl = r.secs("REFRESH_TOKEN_TTL_SECS", 1, 31_536_000);
        let tasks_cache_ttl = r.secs("TASKS_CACHE_TTL_SECS", 1, 86_400);
        let cache_backend = r.choice::<CacheBackend>("CACHE_BACKEND");
        let login_max_failures = r.number("LOGIN_MAX_FAILURES", 1, 1_000_000) as u32;
        let login_failure_window = r.secs("LOGIN_FAILURE_WINDOW_SECS", 1, 86_400 * 30);
        let admin_email = r.text("ADMIN_EMAIL");
        let admin_password = r.text("ADMIN_PASSWORD").map(Secret::new);
        if admin_email.is_some() != admin_password.is_some() {
            r.fail("ADMIN_EMAIL", "ADMIN_EMAIL and ADMIN_PASSWORD go together: set both or neither");
        }
        let max_sessions_per_user = r.number("MAX_SESSIONS_PER_USER", 1, 100_000) as i64;
        let pg_pool_size = r.number("PG_POOL_SIZE", 1, 1000) as u32;
        let cpus = || std::thread::available_parallelism().map_or(2, |n| n.get() as u64);
        // One connection carries the commands of every request on it in
        // pipelined batches; splitting them over more connections means
        // smaller batches, more syscalls and more wake-ups per command
        // (scripts/bench.sh hotpath: 1 connection did 23 % more cached
        // reads than 4 on 2 cores). One connection's task does use up to a
        // core, hence one per two.
        let redis_pool_size = r.number_or("REDIS_POOL_SIZE", 1, 1000, || (cpus() / 2).max(1)) as u32;
        let pool_timeout = r.millis("POOL_TIMEOUT_MS", 10, 600_000);
        let redis_timeout = r.millis("REDIS_TIMEOUT_MS", 1, 60_000);
        let hash_concurrency = r.number_or("HASH_CONCURRENCY", 1, 1024, cpus) as usize;
        let hash_queue_max = r.number("HASH_QUEUE_MAX", 1, 1_000_000) as usize;
        let hash_nice = r.number("HASH_NICE", 0, 19) as i32;
        let http_threads = r.number_or("HTTP_THREADS", 0, 1024, cpus) as usize;
        let reserved = u64::from(pg_pool_size) + u64::from(redis_pool_size) + http_threads as u64 + 64;
        let from_fds = || open_file_limit().map_or(10_000, |n| n.saturating_sub(reserved).clamp(16, 1_000_000));
        let max_connections = r.number_or("MAX_CONNECTIONS", 1, 1_000_000, from_fds) as usize;
        let header_read_timeout = r.secs("HEADER_READ_TIMEOUT_SECS", 1, 3600);
        let body_read_timeout = r.secs("BODY_READ_TIMEOUT_SECS", 1, 3600);
        let request_timeout = r.secs("REQUEST_TIMEOUT_SECS", 1, 3600);
        let shutdown_grace = r.secs("SHUTDOWN_GRACE_SECS", 0, 3600);
        let oidc = read_oidc(&mut r);
        let log_format = r.choice::<LogFormat>("LOG_FORMAT");
        let log_filter = r.text("RUST_LOG").unwrap_or_default();
        if log_filter.parse::<tracing_subscriber::filter::Targets>().is_err() {
            r.fail("RUST_LOG", format!("{log_filter:?} is not a log filter"));
        }
        if !r.errors.is_empty() {
            return Err(r.errors);
        }
        Ok(Config {
            app_env,
            bind_addr,
            database_url: Secret::new(database_url),
            redis_url: Secret::new(redis_url),
            redis_cluster_urls,
            redis_key_prefix,
            jwt_secret: Secret::new(jwt_secret),
            access_ttl,
            refresh_ttl,
            tasks_cache_ttl,
            cache_backend,
            login_max_failures,
            login_failure_window,
            admin_email,
            admin_password,
            max_sessions_per_user,
            pg_pool_size,
            redis_pool_size,
            pool_timeout,
            redis_timeout,
            hash_concurrency,
            http_threads,
            hash_queue_max,
            hash_nice,
            max_connections,
            header_read_timeout,
            body_read_timeout,
            request_timeout,
            shutdown_grace,
            oidc,
            log_format,
            log_filter,
            effective: r.effective,
        })
    }

    /// How long a revocation entry lives in Redis: as long as the
    /// longest-lived token it could refuse, an external provider's included.
    pub fn revocation_entry_ttl(&self) -> Duration {
        let ours = self.access_ttl.max(self.refresh_ttl);
        if self.oidc.is_some() { ours.max(EXTERNAL_TOKEN_MAX_LIFETIME + Duration::from_secs(60)) } else { ours }
    }

    /// Whether the development JWT secret is in use (warned about at start).
    pub fn uses_dev_secret(&self) -> bool {
        self.jwt_secret.expose() == DEV_JWT_SECRET
    }

    /// The effective configuration as `KEY=value` lines in [`SETTINGS`]
    /// order, secrets redacted (URL passwords only, for URLs), for
    /// `--print-config`.
    pub fn redacted(&self) -> String {
        let mut out = String::new();
        for st in SETTINGS {
            let value = self.effective.iter().find(|(k, _)| *k == st.key).map(|(_, v)| v.as_str());
            let shown = match (value, st.secret) {
                (None, _) if st.key == "JWT_SECRET" => "<development default>".to_owned(),
                (None, _) => match st.default {
                    Derived(_) => "<derived at start-up>".to_owned(),
                    _ => "<unset>".to_owned(),
                },
                (Some(v), true) if v.contains("://") => v.split(',').map(redact_url).collect::<Vec<_>>().join(","),
                (Some(_), true) => "<redacted>".to_owned(),
                (Some(v), false) => v.to_owned(),
            };
            out.push_str(&format!("{}={shown}\n", st.key));
        }
        out
    }
}

/// The `OIDC_*` settings: all or nothing around `OIDC_ISSUER`.
fn read_oidc(r: &mut Reader<'_>) -> Option<OidcConfig> {
    let issuer = r.text("OIDC_ISSUER");
    let audience = r.text("OIDC_AUDIENCE");
    let jwks_url = r.text("OIDC_JWKS_URL");
    let claims = r.text("OIDC_REQUIRED_CLAIMS");
    let admin_group = r.text("OIDC_ADMIN_GROUP");
    let Some(issuer) = issuer else {
        for (key, set) in [
            ("OIDC_AUDIENCE", audience.is_some()),
            ("OIDC_JWKS_URL", jwks_url.is_some()),
            ("OIDC_REQUIRED_CLAIMS", claims.is_some()),
            ("OIDC_ADMIN_GROUP", admin_group.is_some()),
        ] {
            if set {
                r.fail(key, "has no effect without OIDC_ISSUER");
            }
        }
        return None;
    };
    if let Err(m) = fetchable_url(&issuer) {
        r.fail("OIDC_ISSUER", m);
    }
    if let Some(Err(m)) = jwks_url.as_deref().map(fetchable_url) {
        r.fail("OIDC_JWKS_URL", m);
    }
    let required_claims = claims.map_or_else(Vec::new, |c| {
        parse_claim_pairs(&c).unwrap_or_else(|| {
            r.fail("OIDC_REQUIRED_CLAIMS", format!("{c:?} is not name=value pairs separated by commas"));
            Vec::new()
        })
    });
    let Some(audience) = audience else {
        r.fail("OIDC_AUDIENCE", "is required with OIDC_ISSUER");
        return None;
    };
    Some(OidcConfig { issuer, audience, jwks_url, required_claims, admin_group })
}

/// The rules on `JWT_SECRET`: the development secret only on loopback and
/// never in production; in production at least 32 bytes.
fn check_secret(r: &mut Reader<'_>, secret: &str, env: AppEnv, bind: SocketAddr) {
    if secret == DEV_JWT_SECRET && !bind.ip().is_loopback() {
        r.fail(
            "JWT_SECRET",
            format!("the development secret is only used on loopback addresses; BIND_ADDR is {bind}: set JWT_SECRET"),
        );
    } else if env == AppEnv::Production && secret == DEV_JWT_SECRET {
        r.fail("JWT_SECRET", "the development secret is refused when APP_ENV=production");
    } else if env == AppEnv::Production && secret.len() < 32 {
        r.fail("JWT_SECRET", "must be at least 32 bytes when APP_ENV=production");
    }
}

/// The soft limit on open files of this process (Linux: `/proc`), if known.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// `scheme://user:password@host` -> `scheme://user:<redacted>@host`.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:<redacted>@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, Vec<ConfigError>> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_source(&map)
    }

    #[test]
    fn the_readme_and_api_reference_tables_are_the_declared_settings() {
        for (name, text) in
            [("README.md", include_str!("../../README.md")), ("docs/API.md", include_str!("../../docs/API.md"))]
        {
            assert!(
                text.contains(&settings_table()),
                "{name}'s settings table differs: paste `tollgate --settings-table`"
            );
            assert!(text.contains("tollgate --settings-table"), "{name}");
        }
    }

    #[test]
    fn every_setting_is_read_and_printed_once() {
        let c = cfg(&[("ADMIN_EMAIL", "a@b.io"), ("ADMIN_PASSWORD", "pw"), ("REDIS_KEY_PREFIX", "p")]).expect("valid");
        let printed = c.redacted();
        for st in SETTINGS {
            assert_eq!(
                printed.matches(&format!("\n{}=", st.key)).count()
                    + usize::from(printed.starts_with(&format!("{}=", st.key))),
                1,
                "{}",
                st.key
            );
        }
        assert!(
            printed.contains("HASH_CONCURRENCY=") && !printed.contains("HASH_CONCURRENCY=<"),
            "derived values are shown"
        );
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = cfg(&[]).expect("defaults are valid");
        assert_eq!(c.bind_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.access_ttl, Duration::from_secs(900));
        assert_eq!(c.refresh_ttl, Duration::from_secs(604_800));
        assert_eq!(c.tasks_cache_ttl, Duration::from_secs(30));
        assert_eq!(c.login_max_failures, 10);
        assert_eq!(c.login_failure_window, Duration::from_secs(900));
        assert!(c.uses_dev_secret());
        assert_eq!(c.cache_backend, CacheBackend::Redis);
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let errs = cfg(&[("ACCESS_TOKEN_TTL_SECS", "soon"), ("BIND_ADDR", "nowhere"), ("CACHE_BACKEND", "disk")])
            .expect_err("three bad values");
        let keys: Vec<_> = errs.iter().map(|e| e.key).collect();
        assert_eq!(keys, ["BIND_ADDR", "ACCESS_TOKEN_TTL_SECS", "CACHE_BACKEND"]);
        let errs = cfg(&[("APP_ENV", "prod"), ("LOG_FORMAT", "xml")]).expect_err("two bad choices");
        assert!(errs[0].message.contains("development, test, production"), "{errs:?}");
        assert_eq!(errs[1].key, "LOG_FORMAT");
    }

    #[test]
    fn production_refuses_the_development_secret() {
        let errs = cfg(&[("APP_ENV", "production")]).expect_err("dev secret in production");
        assert_eq!(errs[0].key, "JWT_SECRET");
        let ok = cfg(&[("APP_ENV", "production"), ("JWT_SECRET", "a-real-secret-of-at-least-32-bytes!!")]);
        assert!(ok.is_ok());
    }

    #[test]
    fn the_development_secret_is_refused_off_loopback() {
        let errs = cfg(&[("BIND_ADDR", "0.0.0.0:8080")]).expect_err("dev secret on every address");
        assert_eq!(errs[0].key, "JWT_SECRET");
        assert!(cfg(&[("BIND_ADDR", "0.0.0.0:8080"), ("JWT_SECRET", "a-real-secret")]).is_ok());
        assert!(cfg(&[("BIND_ADDR", "[::1]:8080")]).is_ok());
    }

    #[test]
    fn a_refresh_lifetime_shorter_than_the_access_lifetime_is_valid() {
        let c = cfg(&[("ACCESS_TOKEN_TTL_SECS", "900"), ("REFRESH_TOKEN_TTL_SECS", "60")]).expect("valid");
        assert_eq!(c.revocation_entry_ttl(), Duration::from_secs(900));
    }

    #[test]
    fn the_connection_limit_follows_the_open_file_limit() {
        let c = cfg(&[]).expect("valid");
        if let Some(n) = open_file_limit() {
            assert!(c.max_connections as u64 <= n.max(16), "{} connections, {n} files", c.max_connections);
        }
    }

    #[test]
    fn port_only_bind_address_means_loopback() {
        let c = cfg(&[("BIND_ADDR", ":0")]).expect("valid");
        assert_eq!(c.bind_addr.to_string(), "127.0.0.1:0");
    }

    #[test]
    fn admin_email_without_password_is_an_error() {
        let errs = cfg(&[("ADMIN_EMAIL", "a@b.io")]).expect_err("half-set admin");
        assert_eq!(errs[0].key, "ADMIN_EMAIL");
    }

    #[test]
    fn printed_config_hides_secrets() {
        let c = cfg(&[
            ("JWT_SECRET", "super-secret-value"),
            ("DATABASE_URL", "postgres://app:hunter2@db/tasks"),
            ("ADMIN_EMAIL", "root@example.com"),
            ("ADMIN_PASSWORD", "adminpass123"),
        ])
        .expect("valid");
        let out = c.redacted();
        assert!(!out.contains("super-secret-value"));
        assert!(!out.contains("hunter2"));
        assert!(!out.contains("adminpass123"));
        assert!(out.contains("DATABASE_URL=postgres://app:<redacted>@db/tasks"));
        assert!(format!("{c:?}").contains("<redacted>"));
    }

    #[test]
    fn oidc_settings_are_all_or_nothing_and_keys_come_over_https_or_loopback() {
        let errs = |pairs: &[(&str, &str)]| cfg(pairs).err().unwrap_or_default();
        assert_eq!(errs(&[("OIDC_AUDIENCE", "api")])[0].key, "OIDC_AUDIENCE");
        assert_eq!(errs(&[("OIDC_ISSUER", "https://idp.example")])[0].key, "OIDC_AUDIENCE");
        let plain = errs(&[("OIDC_ISSUER", "http://idp.example"), ("OIDC_AUDIENCE", "api")]);
        assert_eq!((plain[0].key, plain.len()), ("OIDC_ISSUER", 1));
        let bad = errs(&[
            ("OIDC_ISSUER", "http://127.0.0.1:9000"),
            ("OIDC_AUDIENCE", "api"),
            ("OIDC_REQUIRED_CLAIMS", "token_use"),
        ]);
        assert_eq!(bad[0].key, "OIDC_REQUIRED_CLAIMS");
        let c = cfg(&[
            ("OIDC_ISSUER", "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC"),
            ("OIDC_AUDIENCE", "client1"),
            ("OIDC_JWKS_URL", "http://[::1]:9/jwks"),
            ("OIDC_REQUIRED_CLAIMS", "token_use=access, a = b"),
        ])
        .expect("valid");
        let o = c.oidc.expect("configured");
        assert_eq!(o.required_claims, vec![("token_use".into(), "access".into()), ("a".into(), "b".into())]);
        assert!(cfg(&[]).expect("valid").oidc.is_none());
    }

    #[test]
    fn cluster_urls_are_checked_and_every_password_is_redacted() {
        let c =
            cfg(&[("REDIS_CLUSTER_URLS", "redis://:pw1@127.0.0.1:7000, redis://:pw2@127.0.0.1:7001")]).expect("valid");
        assert_eq!(c.redis_cluster_urls.as_ref().map(Vec::len), Some(2));
        let printed = c.redacted();
        assert!(!printed.contains("pw1") && !printed.contains("pw2"), "{printed}");
        assert_eq!(
            cfg(&[("REDIS_CLUSTER_URLS", "127.0.0.1:7000")]).err().unwrap_or_default()[0].key,
            "REDIS_CLUSTER_URLS"
        );
        assert!(cfg(&[]).expect("valid").redis_cluster_urls.is_none());
    }

    #[test]
    fn file_values_lose_to_the_environment() {
        let file =
            parse_file("# comment\nACCESS_TOKEN_TTL_SECS=60\nexport TASKS_CACHE_TTL_SECS=\"5\"\n").expect("parses");
        let env: HashMap<String, String> = [("ACCESS_TOKEN_TTL_SECS".to_string(), "120".to_string())].into();
        let c = Config::from_source(&Layered(env, file)).expect("valid");
        assert_eq!(c.access_ttl, Duration::from_secs(120));
        assert_eq!(c.tasks_cache_ttl, Duration::from_secs(5));
        assert!(parse_file("no equals sign").is_err());
    }
}
