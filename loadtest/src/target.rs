//! What a run talks to: a deployment given by URL, or a server this harness
//! starts itself (in-process, on its own runtime and threads, on a free
//! loopback port), with throwaway PostgreSQL and Redis from
//! `scripts/services.sh` when `DATABASE_URL`/`REDIS_URL` are not set.
//! Everything started here is stopped by [`Target::stop`].

use anyhow::{Context, bail};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use tollgate::config::{Env, Layered};

/// The admin account the embedded server bootstraps for the revocation
/// scenario.
pub const EMBEDDED_ADMIN: (&str, &str) = ("loadtest-admin@tollgate-loadtest.example", "loadtest-admin-password");

/// Throwaway services started by this process.
struct Services {
    dir: String,
}

impl Services {
    fn script() -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/services.sh"))
    }

    /// Starts them; returns their environment.
    fn start() -> anyhow::Result<(Self, HashMap<String, String>)> {
        let out = Command::new("bash")
            .arg(Self::script())
            .arg("start")
            .output()
            .context("running scripts/services.sh start")?;
        if !out.status.success() {
            bail!("scripts/services.sh start failed:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        let mut env = HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                env.insert(k.to_owned(), v.trim_matches('\'').to_owned());
            }
        }
        let dir = env.get("TOLLGATE_SERVICES_DIR").cloned().context("services.sh printed no TOLLGATE_SERVICES_DIR")?;
        Ok((Self { dir }, env))
    }

    fn stop(self) {
        let _ = Command::new("bash").arg(Self::script()).arg("stop").arg(&self.dir).status();
    }
}

/// An in-process server on its own runtime.
struct Embedded {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// The system under test.
pub struct Target {
    /// Base URL, no trailing slash.
    pub url: String,
    /// Admin credentials, when known (needed by `revocation`).
    pub admin: Option<(String, String)>,
    /// Whether this harness started the server.
    pub embedded: bool,
    server: Option<Embedded>,
    services: Option<Services>,
}

impl Target {
    /// A deployment by URL. Only loopback addresses are accepted unless
    /// `allow_remote` is set: a load run is an attack on whatever it targets.
    pub fn remote(url: &str, admin: Option<(String, String)>, allow_remote: bool) -> anyhow::Result<Self> {
        let url = url.trim_end_matches('/').to_owned();
        if !is_loopback(&url) && !allow_remote {
            bail!("--host {url} is not a loopback address; pass --allow-remote if you own that deployment");
        }
        Ok(Self { url, admin, embedded: false, server: None, services: None })
    }

    /// Starts the server in-process (and services if needed), with
    /// `extra` settings (the test identity provider's).
    pub fn embedded(server_threads: usize, extra: Vec<(String, String)>) -> anyhow::Result<Self> {
        let mut env: HashMap<String, String> = extra.into_iter().collect();
        let services = if std::env::var("DATABASE_URL").is_ok() && std::env::var("REDIS_URL").is_ok() {
            None
        } else {
            eprintln!("loadtest: starting throwaway PostgreSQL and Redis (scripts/services.sh)");
            let (s, e) = Services::start()?;
            env.extend(e);
            Some(s)
        };
        env.insert("BIND_ADDR".into(), "127.0.0.1:0".into());
        env.insert("ADMIN_EMAIL".into(), EMBEDDED_ADMIN.0.into());
        env.insert("ADMIN_PASSWORD".into(), EMBEDDED_ADMIN.1.into());
        env.insert("REDIS_KEY_PREFIX".into(), format!("lt{:08x}", rand::random::<u32>()));
        env.entry("RUST_LOG".into()).or_insert_with(|| "warn".into());
        let config = match tollgate::Config::from_source(&Layered(env, Env)) {
            Ok(c) => c,
            Err(errors) => {
                if let Some(s) = services {
                    s.stop();
                }
                let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                bail!("server configuration is invalid: {}", list.join("; "));
            }
        };
        tollgate::init_tracing(&config);
        let (addr_tx, addr_rx) = std::sync::mpsc::channel::<anyhow::Result<std::net::SocketAddr>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tollgate-server".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(server_threads.max(1))
                    .thread_name("tollgate-worker")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e.into()));
                        return;
                    }
                };
                rt.block_on(async move {
                    match tollgate::App::build(config).await {
                        Ok(app) => {
                            let _ = addr_tx.send(Ok(app.local_addr()));
                            app.run(async {
                                let _ = stop_rx.await;
                            })
                            .await;
                        }
                        Err(e) => {
                            let _ = addr_tx.send(Err(e));
                        }
                    }
                });
            })
            .context("spawning the server thread")?;
        let addr = match addr_rx.recv().context("the server thread ended before starting")? {
            Ok(a) => a,
            Err(e) => {
                let _ = thread.join();
                if let Some(s) = services {
                    s.stop();
                }
                return Err(e.context("starting the embedded server"));
            }
        };
        eprintln!("loadtest: embedded server on http://{addr}");
        Ok(Self {
            url: format!("http://{addr}"),
            admin: Some((EMBEDDED_ADMIN.0.into(), EMBEDDED_ADMIN.1.into())),
            embedded: true,
            server: Some(Embedded { stop: stop_tx, thread }),
            services,
        })
    }

    /// Stops what this harness started (the same as dropping it).
    pub fn stop(self) {}
}

/// Whether a URL's host is a loopback name or address.
pub fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.stop.send(());
            let _ = s.thread.join();
        }
        if let Some(s) = self.services.take() {
            s.stop();
        }
    }
}
