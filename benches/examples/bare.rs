//! A bare server: the ceiling any route of Tollgate is compared with in load
//! runs, and, given a user, the floor of a cache miss. It is the server's
//! own listener (`http::server::serve_on`), lanes (`HTTP_THREADS`),
//! allocator and HTTP settings, read from the environment as the server
//! reads them, answering every request with a fixed body of SIZE bytes:
//! none of the server's work.
//!
//!     cargo run --release -p tollgate-benches --example bare -- 127.0.0.1:18090 5000 [USER_ID]
//!
//! SIZE (default 15, the size of `/healthz`) should be the size of the
//! response being compared. With a USER_ID, each request first reads that
//! user's first page of tasks from `DATABASE_URL` with the miss path's own
//! read (`Db::list_tasks` on the request's lane: the same statement, the
//! same pipelined connection) and drops the rows. That is a cache miss of
//! `GET /tasks` without authentication, the revocation check or JSON: the
//! most a server on this storage layer can answer on this machine, which
//! `scripts/bench.sh hotpath` sets beside the database's own ceiling.

use hyper::StatusCode;
use std::sync::Arc;
use tollgate::db::Db;
use tollgate::http::json_bytes;
use tollgate::http::lanes::Lanes;
use tollgate::http::server::{ServeOptions, serve_on, shutdown_signal};
use tollgate::metrics::Metrics;
use tollgate::tasks::model::ListQuery;

/// The read before each answer, when a user was given.
struct MissRead {
    user: i64,
    db: Db,
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18090".into());
    let size: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(15);
    let user: Option<i64> = args.next().map(|s| s.parse()).transpose()?;
    let config = tollgate_benches::config_from_env()?;
    let lanes = Lanes::start(config.http_threads)?;
    // One Arc per request, as the server clones its state's (a `Db` clone
    // is four).
    let miss = match user {
        None => None,
        Some(user) => {
            let (url, size, timeout) = (config.database_url.expose(), config.pg_pool_size, config.pool_timeout);
            let db = Db::new(url, size, timeout, lanes.handles(), Arc::new(Metrics::new()))?;
            Some(Arc::new(MissRead { user, db }))
        }
    };
    let body = bytes::Bytes::from(vec![b'x'; size]);
    let page = ListQuery::parse(None).map_err(|e| anyhow::anyhow!("the default page: {e}"))?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!(
        "bare: {size}-byte body{} on http://{}",
        user.map_or(String::new(), |u| format!(" after user {u}'s page")),
        listener.local_addr()?
    );
    let handler = move |_req, lane| {
        let (body, miss) = (body.clone(), miss.clone());
        async move {
            if let Some(m) = miss
                && let Err(e) = m.db.list_tasks(Some(m.user), &page, lane).await
            {
                // A 503 that wrk counts, and hotpath then refuses the round.
                let detail = serde_json::json!({ "detail": e.to_string() }).to_string();
                return json_bytes(StatusCode::SERVICE_UNAVAILABLE, detail.into());
            }
            json_bytes(StatusCode::OK, body)
        }
    };
    serve_on(listener, ServeOptions::from(&config), lanes.handles(), handler, shutdown_signal()).await;
    lanes.stop().await;
    Ok(())
}
