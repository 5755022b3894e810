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

/// The whole configuration. Field docs name the variable that sets them.
#[derive(Clone, Debug)]
pub struct Config {
    /// `APP_ENV`: `development` (default) or `production`.
    pub app_env: String,
    /// `BIND_ADDR`: listen address; `:PORT` means loopback, port 0 a free port.
    pub bind_addr: SocketAddr,
    /// `DATABASE_URL`.
    pub database_url: Secret,
    /// `REDIS_URL`.
    pub redis_url: Secret,
    /// `REDIS_KEY_PREFIX`: namespace of every Redis key (lets several
    /// deployments or test runs share one Redis). Unset: `tg-` and the
    /// random id the database was created with, so every instance on one
    /// database shares keys and no two databases do.
    pub redis_key_prefix: Option<String>,
    /// `JWT_SECRET`: the HS256 key.
    pub jwt_secret: Secret,
    /// `ACCESS_TOKEN_TTL_SECS`.
    pub access_ttl: Duration,
    /// `REFRESH_TOKEN_TTL_SECS`: also the TTL of revocation entries.
    pub refresh_ttl: Duration,
    /// `TASKS_CACHE_TTL_SECS`.
    pub tasks_cache_ttl: Duration,
    /// `CACHE_BACKEND`: `redis`, `memory` or `off`.
    pub cache_backend: CacheBackend,
    /// `LOGIN_MAX_FAILURES`.
    pub login_max_failures: u32,
    /// `LOGIN_FAILURE_WINDOW_SECS`.
    pub login_failure_window: Duration,
    /// `ADMIN_EMAIL`.
    pub admin_email: Option<String>,
    /// `ADMIN_PASSWORD`.
    pub admin_password: Option<Secret>,
    /// `PG_POOL_SIZE`: most PostgreSQL connections.
    pub pg_pool_size: u32,
    /// `REDIS_POOL_SIZE`: multiplexed Redis connections.
    pub redis_pool_size: u32,
    /// `POOL_TIMEOUT_MS`: longest wait for a PostgreSQL connection before 503.
    pub pool_timeout: Duration,
    /// `REDIS_TIMEOUT_MS`: longest wait for Redis before falling back to PostgreSQL.
    pub redis_timeout: Duration,
    /// `HASH_CONCURRENCY`: password hashes run at once (default: CPU count).
    pub hash_concurrency: usize,
    /// `HASH_QUEUE_MAX`: logins waiting for a hash slot before 503.
    pub hash_queue_max: usize,
    /// `MAX_CONNECTIONS`: open client connections at once. Default: the
    /// open-file limit less room for the pools, logs and listener.
    pub max_connections: usize,
    /// `MAX_SESSIONS_PER_USER`: live sessions kept per user; a login past it
    /// ends the user's oldest.
    pub max_sessions_per_user: i64,
    /// `BODY_READ_TIMEOUT_SECS`: a request body must arrive within this (408).
    pub body_read_timeout: Duration,
    /// `REQUEST_TIMEOUT_SECS`: longest answer to a request with a body
    /// (408; the work itself still finishes, see `app`).
    pub request_timeout: Duration,
    /// `HEADER_READ_TIMEOUT_SECS`: a client must send its headers within this.
    pub header_read_timeout: Duration,
    /// `SHUTDOWN_GRACE_SECS`: in-flight requests get this long on SIGTERM.
    pub shutdown_grace: Duration,
    /// `LOG_FORMAT`: `text` or `json`.
    pub log_format: String,
    /// `RUST_LOG`: tracing filter, e.g. `info` or `info,tollgate=debug`.
    pub log_filter: String,
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

/// Reads keys from a source, collecting every error instead of stopping.
struct Reader<'a> {
    src: &'a dyn Source,
    errors: Vec<ConfigError>,
}

impl Reader<'_> {
    fn raw(&self, key: &str) -> Option<String> {
        self.src.get(key).filter(|v| !v.trim().is_empty())
    }

    fn string(&self, key: &'static str, default: &str) -> String {
        self.raw(key).unwrap_or_else(|| default.to_owned())
    }

    fn parse<T: std::str::FromStr>(&mut self, key: &'static str, default: T, what: &str) -> T {
        match self.raw(key) {
            None => default,
            Some(v) => v.trim().parse().unwrap_or_else(|_| {
                self.errors.push(ConfigError { key, message: format!("{v:?} is not {what}") });
                default
            }),
        }
    }

    fn number(&mut self, key: &'static str, default: u64, min: u64, max: u64) -> u64 {
        let v = self.parse(key, default, "a whole number");
        if !(min..=max).contains(&v) {
            self.errors.push(ConfigError { key, message: format!("{v} is outside {min}..={max}") });
            return default;
        }
        v
    }

    fn secs(&mut self, key: &'static str, default: u64, min: u64, max: u64) -> Duration {
        Duration::from_secs(self.number(key, default, min, max))
    }

    fn millis(&mut self, key: &'static str, default: u64, min: u64, max: u64) -> Duration {
        Duration::from_millis(self.number(key, default, min, max))
    }
}

fn parse_bind(v: &str) -> Option<SocketAddr> {
    let v = v.trim();
    if let Some(port) = v.strip_prefix(':') {
        return port.parse::<u16>().ok().map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    }
    v.parse().ok()
}

impl Config {
    /// Builds the configuration from `src`, or every problem found.
    pub fn from_source(src: &dyn Source) -> Result<Self, Vec<ConfigError>> {
        let mut r = Reader { src, errors: Vec::new() };
        let app_env = r.string("APP_ENV", "development");
        if !matches!(app_env.as_str(), "development" | "production" | "test") {
            r.errors.push(ConfigError {
                key: "APP_ENV",
                message: format!("{app_env:?} is not development, test or production"),
            });
        }
        let bind_raw = r.string("BIND_ADDR", "127.0.0.1:8080");
        let bind_addr = parse_bind(&bind_raw).unwrap_or_else(|| {
            r.errors.push(ConfigError { key: "BIND_ADDR", message: format!("{bind_raw:?} is not HOST:PORT or :PORT") });
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });
        let database_url = r.string("DATABASE_URL", "postgres://postgres@localhost/tasks");
        if !database_url.starts_with("postgres://") && !database_url.starts_with("postgresql://") {
            r.errors.push(ConfigError { key: "DATABASE_URL", message: "must start with postgres://".into() });
        }
        let redis_url = r.string("REDIS_URL", "redis://127.0.0.1:6379");
        if !redis_url.starts_with("redis://") && !redis_url.starts_with("rediss://") {
            r.errors.push(ConfigError { key: "REDIS_URL", message: "must start with redis://".into() });
        }
        let jwt_secret = r.string("JWT_SECRET", DEV_JWT_SECRET);
        if jwt_secret == DEV_JWT_SECRET && !bind_addr.ip().is_loopback() {
            r.errors.push(ConfigError {
                key: "JWT_SECRET",
                message: format!(
                    "the development secret is only used on loopback addresses; BIND_ADDR is {bind_addr}: set JWT_SECRET"
                ),
            });
        } else if app_env == "production" {
            if jwt_secret == DEV_JWT_SECRET {
                r.errors.push(ConfigError {
                    key: "JWT_SECRET",
                    message: "the development secret is refused when APP_ENV=production".into(),
                });
            } else if jwt_secret.len() < 32 {
                r.errors.push(ConfigError {
                    key: "JWT_SECRET",
                    message: "must be at least 32 bytes when APP_ENV=production".into(),
                });
            }
        }
        let access_ttl = r.secs("ACCESS_TOKEN_TTL_SECS", 900, 1, 86_400);
        // Shorter than the access lifetime is valid: tokens never outlive
        // their session, which lasts the refresh lifetime.
        let refresh_ttl = r.secs("REFRESH_TOKEN_TTL_SECS", 604_800, 1, 31_536_000);
        let tasks_cache_ttl = r.secs("TASKS_CACHE_TTL_SECS", 30, 1, 86_400);
        let backend_raw = r.string("CACHE_BACKEND", "redis");
        let cache_backend = match backend_raw.as_str() {
            "redis" => CacheBackend::Redis,
            "memory" => CacheBackend::Memory,
            "off" => CacheBackend::Off,
            other => {
                r.errors.push(ConfigError {
                    key: "CACHE_BACKEND",
                    message: format!("{other:?} is not redis, memory or off"),
                });
                CacheBackend::Redis
            }
        };
        let login_max_failures = r.number("LOGIN_MAX_FAILURES", 10, 1, 1_000_000) as u32;
        let login_failure_window = r.secs("LOGIN_FAILURE_WINDOW_SECS", 900, 1, 86_400 * 30);
        let admin_email = r.raw("ADMIN_EMAIL");
        let admin_password = r.raw("ADMIN_PASSWORD").map(Secret::new);
        if admin_email.is_some() != admin_password.is_some() {
            r.errors.push(ConfigError {
                key: "ADMIN_EMAIL",
                message: "ADMIN_EMAIL and ADMIN_PASSWORD go together: set both or neither".into(),
            });
        }
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let pg_pool_size = r.number("PG_POOL_SIZE", 16, 1, 1000) as u32;
        let redis_pool_size = r.number("REDIS_POOL_SIZE", 4, 1, 1000) as u32;
        let pool_timeout = r.millis("POOL_TIMEOUT_MS", 2000, 10, 600_000);
        let redis_timeout = r.millis("REDIS_TIMEOUT_MS", 250, 1, 60_000);
        let hash_concurrency = r.number("HASH_CONCURRENCY", cpus as u64, 1, 1024) as usize;
        let hash_queue_max = r.number("HASH_QUEUE_MAX", 512, 1, 1_000_000) as usize;
        let reserved = u64::from(pg_pool_size) + u64::from(redis_pool_size) + 64;
        let fd_default = open_file_limit().map_or(10_000, |n| n.saturating_sub(reserved).clamp(16, 1_000_000));
        let max_connections = r.number("MAX_CONNECTIONS", fd_default, 1, 1_000_000) as usize;
        let max_sessions_per_user = r.number("MAX_SESSIONS_PER_USER", 100, 1, 100_000) as i64;
        let body_read_timeout = r.secs("BODY_READ_TIMEOUT_SECS", 10, 1, 3600);
        let request_timeout = r.secs("REQUEST_TIMEOUT_SECS", 30, 1, 3600);
        let header_read_timeout = r.secs("HEADER_READ_TIMEOUT_SECS", 10, 1, 3600);
        let shutdown_grace = r.secs("SHUTDOWN_GRACE_SECS", 10, 0, 3600);
        let log_format = r.string("LOG_FORMAT", "text");
        if !matches!(log_format.as_str(), "text" | "json") {
            r.errors.push(ConfigError { key: "LOG_FORMAT", message: format!("{log_format:?} is not text or json") });
        }
        let log_filter = r.string("RUST_LOG", "info");
        if log_filter.parse::<tracing_subscriber::filter::Targets>().is_err() {
            r.errors.push(ConfigError { key: "RUST_LOG", message: format!("{log_filter:?} is not a log filter") });
        }
        let redis_key_prefix = r.raw("REDIS_KEY_PREFIX");
        if redis_key_prefix.as_deref().is_some_and(|p| p.contains(['{', '}', ' '])) {
            r.errors.push(ConfigError { key: "REDIS_KEY_PREFIX", message: "may not contain braces or spaces".into() });
        }
        if !r.errors.is_empty() {
            return Err(r.errors);
        }
        Ok(Config {
            app_env,
            bind_addr,
            database_url: Secret::new(database_url),
            redis_url: Secret::new(redis_url),
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
            pg_pool_size,
            redis_pool_size,
            pool_timeout,
            redis_timeout,
            hash_concurrency,
            hash_queue_max,
            max_connections,
            max_sessions_per_user,
            body_read_timeout,
            request_timeout,
            header_read_timeout,
            shutdown_grace,
            log_format,
            log_filter,
        })
    }

    /// How long a revocation entry lives in Redis: as long as the
    /// longest-lived token it could refuse.
    pub fn revocation_entry_ttl(&self) -> Duration {
        self.access_ttl.max(self.refresh_ttl)
    }

    /// Whether the development JWT secret is in use (warned about at start).
    pub fn uses_dev_secret(&self) -> bool {
        self.jwt_secret.expose() == DEV_JWT_SECRET
    }

    /// The effective configuration as `KEY=value` lines, secrets redacted
    /// (URL passwords included), for `--print-config`.
    pub fn redacted(&self) -> String {
        let backend = match self.cache_backend {
            CacheBackend::Redis => "redis",
            CacheBackend::Memory => "memory",
            CacheBackend::Off => "off",
        };
        let secret = |set: bool| if set { "<redacted>" } else { "<unset>" };
        let lines = [
            ("APP_ENV", self.app_env.clone()),
            ("BIND_ADDR", self.bind_addr.to_string()),
            ("DATABASE_URL", redact_url(self.database_url.expose())),
            ("REDIS_URL", redact_url(self.redis_url.expose())),
            ("REDIS_KEY_PREFIX", self.redis_key_prefix.clone().unwrap_or_else(|| "<from the database>".into())),
            ("JWT_SECRET", if self.uses_dev_secret() { "<development default>".into() } else { "<redacted>".into() }),
            ("ACCESS_TOKEN_TTL_SECS", self.access_ttl.as_secs().to_string()),
            ("REFRESH_TOKEN_TTL_SECS", self.refresh_ttl.as_secs().to_string()),
            ("TASKS_CACHE_TTL_SECS", self.tasks_cache_ttl.as_secs().to_string()),
            ("CACHE_BACKEND", backend.into()),
            ("LOGIN_MAX_FAILURES", self.login_max_failures.to_string()),
            ("LOGIN_FAILURE_WINDOW_SECS", self.login_failure_window.as_secs().to_string()),
            ("ADMIN_EMAIL", self.admin_email.clone().unwrap_or_else(|| "<unset>".into())),
            ("ADMIN_PASSWORD", secret(self.admin_password.is_some()).into()),
            ("PG_POOL_SIZE", self.pg_pool_size.to_string()),
            ("REDIS_POOL_SIZE", self.redis_pool_size.to_string()),
            ("POOL_TIMEOUT_MS", self.pool_timeout.as_millis().to_string()),
            ("REDIS_TIMEOUT_MS", self.redis_timeout.as_millis().to_string()),
            ("HASH_CONCURRENCY", self.hash_concurrency.to_string()),
            ("HASH_QUEUE_MAX", self.hash_queue_max.to_string()),
            ("MAX_CONNECTIONS", self.max_connections.to_string()),
            ("MAX_SESSIONS_PER_USER", self.max_sessions_per_user.to_string()),
            ("BODY_READ_TIMEOUT_SECS", self.body_read_timeout.as_secs().to_string()),
            ("REQUEST_TIMEOUT_SECS", self.request_timeout.as_secs().to_string()),
            ("HEADER_READ_TIMEOUT_SECS", self.header_read_timeout.as_secs().to_string()),
            ("SHUTDOWN_GRACE_SECS", self.shutdown_grace.as_secs().to_string()),
            ("LOG_FORMAT", self.log_format.clone()),
            ("RUST_LOG", self.log_filter.clone()),
        ];
        lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
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
