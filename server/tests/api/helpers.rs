//! Test harness: each test starts the real server in-process on port 0
//! against real PostgreSQL (a fresh database per test) and real Redis (a key
//! prefix per test, or a private redis-server for tests that stop or flush
//! it). A TCP proxy lets a test cut one server's PostgreSQL or Redis without
//! touching the other tests running beside it.
//!
//! Needs DATABASE_URL and REDIS_URL: run through `scripts/test.sh`, which
//! starts throwaway servers.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tollgate::{App, AppState, Config, Running};

pub const ADMIN_EMAIL: &str = "admin@tollgate.test";
pub const ADMIN_PASSWORD: &str = "admin-password-1";
pub const PASSWORD: &str = "correct horse battery";

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test.sh (it starts PostgreSQL and Redis)")
    })
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// host:port of a postgres:// or redis:// URL.
pub fn url_addr(url: &str) -> SocketAddr {
    let rest = url.split_once("://").expect("url has a scheme").1;
    let hostport = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    let hostport = hostport.split('/').next().expect("host");
    let hostport = if hostport == "localhost" || !hostport.contains(':') {
        format!("{}:{}", hostport.replace("localhost", "127.0.0.1"), if url.starts_with("redis") { 6379 } else { 5432 })
    } else {
        hostport.replace("localhost", "127.0.0.1")
    };
    hostport.parse().expect("socket address")
}

/// Replaces the host:port of a URL.
fn with_addr(url: &str, addr: SocketAddr) -> String {
    let old = url_addr(url);
    url.replacen(&old.to_string(), &addr.to_string(), 1).replacen("localhost", &addr.ip().to_string(), 1)
}

/// A fresh, empty database on the test server; its URL.
pub async fn fresh_database() -> String {
    let base = var("DATABASE_URL");
    let (client, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls).await.expect("connect to DATABASE_URL");
    tokio::spawn(conn);
    let name = unique("t_");
    client.execute(&format!("CREATE DATABASE {name}"), &[]).await.expect("create test database");
    let (prefix, _) = base.rsplit_once('/').expect("database url has a path");
    format!("{prefix}/{name}")
}

/// A TCP proxy that can be cut (every connection reset, new ones refused)
/// and restored: an outage of one dependency for one server.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns2.lock().expect("lock").push(h);
            }
        });
        Self { addr, up, conns, task }
    }

    /// Resets every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for h in self.conns.lock().expect("lock").drain(..) {
            h.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// A redis-server of this test's own, to stop, restart and flush. Its
/// folder keeps a snapshot across restarts (`SAVE` writes one; a restart
/// loads it, as Redis does by default).
pub struct PrivateRedis {
    pub port: u16,
    child: Option<tokio::process::Child>,
    args: Vec<String>,
    dir: std::path::PathBuf,
}

impl PrivateRedis {
    /// Started with extra redis-server arguments (e.g. an eviction policy).
    pub async fn start_with(args: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr").port();
        let dir = std::env::temp_dir().join(unique("tollgate-redis-"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut r = Self { port, child: None, args: args.iter().map(|a| a.to_string()).collect(), dir };
        r.run().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn run(&mut self) {
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is installed (scripts/services.sh install)");
        self.child = Some(child);
        for _ in 0..100 {
            if self.ping().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("private redis-server did not start on port {}", self.port);
    }

    async fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut c) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        redis::cmd("PING").query_async::<String>(&mut c).await.is_ok()
    }

    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
            let _ = c.wait().await;
        }
    }

    /// Stops and starts again: empty, as a restart without persistence is.
    pub async fn restart(&mut self) {
        self.stop().await;
        let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        self.run().await;
    }

    /// Killed (no shutdown save) and started again from the last `SAVE`.
    pub async fn restart_from_snapshot(&mut self) {
        self.stop().await;
        assert!(self.dir.join("dump.rdb").exists(), "a snapshot was saved");
        self.run().await;
    }

    pub async fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let client = redis::Client::open(self.url()).expect("url");
        let mut c = client.get_multiplexed_async_connection().await.expect("connect");
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut c).await.expect("redis command")
    }
}

impl Drop for PrivateRedis {
    /// Its folder goes with it (the process is killed on drop): a test run
    /// must leave nothing behind in the temporary directory.
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Which Redis a test server uses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RedisChoice {
    /// The shared test Redis, under a key prefix of its own.
    Shared,
    /// A private redis-server (`TestApp::redis`).
    Private,
    /// The shared Redis behind a proxy (`TestApp::redis_proxy`).
    Proxied,
}

pub struct Options {
    pub env: Vec<(String, String)>,
    pub redis: RedisChoice,
    pub pg_proxy: bool,
    /// Extra redis-server arguments of a private Redis.
    pub redis_args: Vec<&'static str>,
    /// An existing database (another server's) instead of a fresh one.
    pub database: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self { env: Vec::new(), redis: RedisChoice::Shared, pg_proxy: false, redis_args: Vec::new(), database: None }
    }
}

impl Options {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn redis(mut self, r: RedisChoice) -> Self {
        self.redis = r;
        self
    }
    pub fn pg_proxy(mut self) -> Self {
        self.pg_proxy = true;
        self
    }
    /// A private Redis started with these extra arguments.
    pub fn redis_args(mut self, args: &[&'static str]) -> Self {
        self.redis = RedisChoice::Private;
        self.redis_args = args.to_vec();
        self
    }
    pub fn database(mut self, url: &str) -> Self {
        self.database = Some(url.to_owned());
        self
    }
}

pub struct TestApp {
    pub url: String,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub state: Arc<AppState>,
    pub db_url: String,
    pub redis: Option<PrivateRedis>,
    pub redis_proxy: Option<Proxy>,
    pub pg_proxy: Option<Proxy>,
    pub config: HashMap<String, String>,
    running: Option<Running>,
}

pub struct User {
    pub id: i64,
    pub email: String,
    pub access: String,
    pub refresh: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_with(Options::default()).await
}

pub async fn spawn_with(opts: Options) -> TestApp {
    let db_url = match opts.database {
        Some(url) => url,
        None => fresh_database().await,
    };
    let shared_redis = var("REDIS_URL");
    let (redis, redis_proxy, redis_url) = match opts.redis {
        RedisChoice::Shared => (None, None, shared_redis),
        RedisChoice::Private => {
            let r = PrivateRedis::start_with(&opts.redis_args).await;
            let url = r.url();
            (Some(r), None, url)
        }
        RedisChoice::Proxied => {
            let p = Proxy::start(url_addr(&shared_redis)).await;
            let url = with_addr(&shared_redis, p.addr);
            (None, Some(p), url)
        }
    };
    let (pg_proxy, app_db_url) = if opts.pg_proxy {
        let p = Proxy::start(url_addr(&db_url)).await;
        let url = with_addr(&db_url, p.addr);
        (Some(p), url)
    } else {
        (None, db_url.clone())
    };
    let mut map: HashMap<String, String> = [
        ("BIND_ADDR", "127.0.0.1:0"),
        ("DATABASE_URL", app_db_url.as_str()),
        ("REDIS_URL", redis_url.as_str()),
        ("ADMIN_EMAIL", ADMIN_EMAIL),
        ("ADMIN_PASSWORD", ADMIN_PASSWORD),
        ("PG_POOL_SIZE", "5"),
        ("POOL_TIMEOUT_MS", "1000"),
        ("REDIS_TIMEOUT_MS", "200"),
        ("RUST_LOG", "warn"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    map.insert("REDIS_KEY_PREFIX".into(), unique("t"));
    for (k, v) in opts.env {
        map.insert(k, v);
    }
    let config = Config::from_source(&map).expect("test configuration is valid");
    tollgate::init_tracing(&config);
    let app = App::build(config).await.expect("server starts");
    let running = app.spawn();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
    TestApp {
        url: running.url(),
        addr: running.addr,
        state: running.state.clone(),
        client,
        db_url,
        redis,
        redis_proxy,
        pg_proxy,
        config: map,
        running: Some(running),
    }
}

impl TestApp {
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.client.get(self.at(path)).bearer_auth(token).send().await.expect("request")
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> reqwest::Response {
        let mut r = self.client.post(self.at(path)).json(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.expect("request")
    }

    pub async fn post_empty(&self, path: &str, token: &str) -> reqwest::Response {
        self.client.post(self.at(path)).bearer_auth(token).send().await.expect("request")
    }

    pub async fn patch(&self, path: &str, token: &str, body: &Value) -> reqwest::Response {
        self.client.patch(self.at(path)).bearer_auth(token).json(body).send().await.expect("request")
    }

    pub async fn delete(&self, path: &str, token: &str) -> reqwest::Response {
        self.client.delete(self.at(path)).bearer_auth(token).send().await.expect("request")
    }

    pub async fn register(&self, email: &str, password: &str) -> reqwest::Response {
        self.post("/auth/register", None, &json!({"email": email, "password": password})).await
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.post("/auth/login", None, &json!({"email": email, "password": password})).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.post("/auth/refresh", None, &json!({"refresh_token": refresh_token})).await
    }

    /// Logs in and returns (access, refresh).
    pub async fn tokens(&self, email: &str, password: &str) -> (String, String) {
        let r = self.login(email, password).await;
        assert_eq!(r.status(), 200, "login of {email}");
        let v: Value = r.json().await.expect("json");
        (v["access_token"].as_str().expect("access").into(), v["refresh_token"].as_str().expect("refresh").into())
    }

    /// A registered, logged-in user.
    pub async fn new_user(&self) -> User {
        let email = format!("{}@example.com", unique("user"));
        let r = self.register(&email, PASSWORD).await;
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.expect("json");
        let (access, refresh) = self.tokens(&email, PASSWORD).await;
        User { id: v["id"].as_i64().expect("id"), email, access, refresh }
    }

    /// The bootstrap admin's access token.
    pub async fn admin(&self) -> String {
        self.tokens(ADMIN_EMAIL, ADMIN_PASSWORD).await.0
    }

    pub async fn set_status(&self, admin: &str, uid: i64, status: &str) -> reqwest::Response {
        self.patch(&format!("/admin/users/{uid}/status"), admin, &json!({"status": status})).await
    }

    pub async fn create_task(&self, token: &str, title: &str) -> Value {
        let r = self.post("/tasks", Some(token), &json!({"title": title})).await;
        assert_eq!(r.status(), 201);
        r.json().await.expect("json")
    }

    pub async fn list(&self, token: &str, query: &str) -> Vec<Value> {
        let r = self.get(&format!("/tasks{query}"), token).await;
        assert_eq!(r.status(), 200);
        r.json().await.expect("json")
    }

    /// A value of a metric series from /metrics (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.client.get(self.at("/metrics")).send().await.expect("metrics").text().await.expect("text");
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// A direct connection to the test's database (bypassing any proxy).
    pub async fn sql(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.db_url, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(conn);
        client
    }

    /// Graceful stop.
    pub async fn stop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
    }
}

/// Sends `request` (raw HTTP/1.1) on a new connection and hangs up after
/// `after`, without reading the answer: a client that disconnects.
pub async fn send_and_hang_up(addr: SocketAddr, request: &str, after: Duration) {
    use tokio::io::AsyncWriteExt;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    tokio::time::sleep(after).await;
    drop(s);
}

/// A raw HTTP/1.1 request with a JSON body.
pub fn raw_json(method: &str, path: &str, token: Option<&str>, body: &str) -> String {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Polls `f` until it is true or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
