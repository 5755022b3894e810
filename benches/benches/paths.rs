//! Criterion benches of each path's CPU cost, from the pieces to the whole:
//!
//! - `jwt`, `http`, `revocation`: the CPU-bound operations of
//!   `tollgate_benches::OPS` (sign and verify a JWT, routing, list-query
//!   parsing, body decoding, response encoding for 20 and 100 tasks, the
//!   revocation decision), the table the instruction counter also measures.
//! - `password`: Argon2id hash and verify at the configured parameters.
//! - `service`: `GET /tasks` (cache hit), `GET /healthz` and a GraphQL page
//!   of posts (parse, validate, execute; the page from the shared cache)
//!   through the server's own request handler, in-process, against real
//!   PostgreSQL and Redis.
//! - `loopback`: the same two over a keep-alive TCP connection to a server
//!   running on its own runtime, bound to port 0.
//!
//! `service` and `loopback` need DATABASE_URL and REDIS_URL (scripts/bench.sh
//! and scripts/test.sh provide them); without them they say so and skip.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;
use tollgate::auth::password;
use tollgate_benches::{OPS, Pieces};

/// The CPU-bound operations of `tollgate_benches::OPS`, in their groups
/// (the instruction counter measures the same table).
fn pieces(c: &mut Criterion) {
    let p = Pieces::new();
    let mut groups: Vec<&str> = OPS.iter().map(|o| o.group).collect();
    groups.dedup();
    for group in groups {
        let mut g = c.benchmark_group(group);
        for op in OPS.iter().filter(|o| o.group == group) {
            if op.elements > 0 {
                g.throughput(Throughput::Elements(op.elements));
            }
            g.bench_function(op.bench, |b| b.iter(|| (op.run)(&p)));
        }
        g.finish();
    }
}

fn passwords(c: &mut Criterion) {
    // One scratch for every iteration, as a hashing thread reuses its own.
    let mut scratch = password::Scratch::default();
    let hash = password::hash_with(&mut scratch, "correct horse battery").unwrap_or_default();
    let mut g = c.benchmark_group("password");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.bench_function("hash_argon2id", |b| {
        b.iter(|| password::hash_with(&mut scratch, black_box("correct horse battery")))
    });
    g.bench_function("verify_argon2id", |b| {
        b.iter(|| password::verify_with(&mut scratch, &hash, black_box("correct horse battery")))
    });
    g.finish();
}

/// A server with one user owning 20 tasks, its list cached.
struct Fixture {
    app: tollgate::Running,
    token: String,
    rt: tokio::runtime::Runtime,
}

fn fixture() -> Option<Fixture> {
    let (Ok(db), Ok(redis)) = (std::env::var("DATABASE_URL"), std::env::var("REDIS_URL")) else {
        eprintln!("service/loopback benches skipped: DATABASE_URL and REDIS_URL are not set (use scripts/bench.sh)");
        return None;
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().ok()?;
    let map: HashMap<String, String> = [
        ("DATABASE_URL", db.as_str()),
        ("REDIS_URL", redis.as_str()),
        ("BIND_ADDR", "127.0.0.1:0"),
        ("RUST_LOG", "error"),
        ("REDIS_KEY_PREFIX", &format!("bench{}", std::process::id())),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = tollgate::Config::from_source(&map).ok()?;
    let app = rt.block_on(async { tollgate::App::build(config).await.map(tollgate::App::spawn) }).ok()?;
    let st = app.pipeline.clone();
    let email = format!("bench-{}@tollgate.example", std::process::id());
    let token = rt.block_on(async move {
        let json = |body: String| {
            Request::post("/x").header("content-type", "application/json").body(Full::new(Bytes::from(body)))
        };
        let mut reg = json(format!(r#"{{"email":"{email}","password":"bench-password-1"}}"#)).ok()?;
        *reg.uri_mut() = "/auth/register".parse().ok()?;
        st.handle(reg).await;
        let mut login = json(format!(r#"{{"email":"{email}","password":"bench-password-1"}}"#)).ok()?;
        *login.uri_mut() = "/auth/login".parse().ok()?;
        let body = st.handle(login).await.into_body().collect().await.ok()?.to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let token = v["access_token"].as_str()?.to_owned();
        for i in 0..20 {
            let mut r = json(format!(r#"{{"title":"bench task {i}"}}"#)).ok()?;
            *r.uri_mut() = "/tasks".parse().ok()?;
            r.headers_mut().insert("authorization", format!("Bearer {token}").parse().ok()?);
            st.handle(r).await;
        }
        for i in 0..20 {
            let q = format!(
                r#"{{"query":"mutation {{ createPost(input: {{title: \"bench {i}\", content: \"c\"}}) {{ id }} }}"}}"#
            );
            st.handle(graphql(&q, &token)).await;
        }
        Some(token)
    })?;
    Some(Fixture { app, token, rt })
}

/// The contract's page shape, smaller: 20 posts with authors, counts and 3
/// comments each (what the `graphql-read` load scenario asks for).
const POSTS_PAGE: &str = r#"{"query":"{ posts(first: 20) { items { id title commentCount author { id displayName } comments(first: 3) { items { id content } } } nextCursor } }"}"#;

fn graphql(body: &str, token: &str) -> Request<Full<Bytes>> {
    Request::post("/graphql")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap_or_default()
}

fn get(path: &str, token: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::get(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Full::new(Bytes::new())).unwrap_or_default()
}

fn service_and_loopback(c: &mut Criterion) {
    let Some(f) = fixture() else { return };
    let st = f.app.pipeline.clone();
    let token = f.token.clone();
    // Warm the cache: the benches measure hits.
    f.rt.block_on(st.handle(get("/tasks", Some(&token))));
    let mut g = c.benchmark_group("service");
    g.bench_function("get_tasks_cache_hit_20", |b| {
        b.to_async(&f.rt).iter(|| {
            let st = Arc::clone(&st);
            let req = get("/tasks", Some(&token));
            async move { st.handle(req).await.status() }
        })
    });
    g.bench_function("healthz", |b| {
        b.to_async(&f.rt).iter(|| {
            let st = Arc::clone(&st);
            async move { st.handle(get("/healthz", None)).await.status() }
        })
    });
    f.rt.block_on(st.handle(graphql(POSTS_PAGE, &token)));
    g.bench_function("graphql_posts_page_20_cached", |b| {
        b.to_async(&f.rt).iter(|| {
            let st = Arc::clone(&st);
            let req = graphql(POSTS_PAGE, &token);
            async move { st.handle(req).await.status() }
        })
    });
    g.finish();

    // Over loopback: a client on criterion's runtime, the server on its own.
    let client_rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return eprintln!("loopback benches skipped: {e}"),
    };
    let addr = f.app.addr;
    let sender = client_rt.block_on(async move {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.ok()?;
        tokio::spawn(conn);
        Some(sender)
    });
    let Some(sender) = sender else {
        return eprintln!("loopback benches skipped: cannot connect to {addr}");
    };
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    let mut g = c.benchmark_group("loopback");
    for (name, path, auth) in [("get_tasks_cache_hit_20", "/tasks", true), ("healthz", "/healthz", false)] {
        g.bench_function(name, |b| {
            b.to_async(&client_rt).iter(|| {
                let sender = Arc::clone(&sender);
                let req = get(path, auth.then_some(token.as_str()));
                async move {
                    let mut s = sender.lock().await;
                    let resp = s.send_request(req).await.ok()?;
                    let status = resp.status();
                    resp.into_body().collect().await.ok()?;
                    Some(status)
                }
            })
        });
    }
    g.finish();
    drop(sender);
    f.rt.block_on(f.app.stop());
}

criterion_group!(benches, pieces, passwords, service_and_loopback);
criterion_main!(benches);
