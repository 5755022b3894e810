//! Failure behaviour: PostgreSQL unreachable (503 within the pool timeout,
//! recovery), a broken schema (500 problem), graceful shutdown.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[tokio::test]
async fn postgres_unreachable_is_503_quickly_and_recovers() {
    let app = spawn_with(Options::default().pg_proxy()).await;
    let u = app.new_user().await;
    app.create_task(&u.access, "kept").await;
    let proxy = app.pg_proxy.as_ref().expect("proxy");
    proxy.cut();
    let start = Instant::now();
    let r = app.get("/tasks/1", &u.access).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert!(start.elapsed() < Duration::from_secs(5), "answered within the pool timeout, not hung");
    let r = app.client.get(app.at("/readyz")).send().await.expect("req");
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["postgres"], "down");
    assert_eq!(app.client.get(app.at("/healthz")).send().await.expect("req").status(), 200);
    proxy.restore();
    let back = eventually(Duration::from_secs(10), || async { app.get("/me", &u.access).await.status() == 200 }).await;
    assert!(back, "recovered without a restart");
    assert_eq!(app.list(&u.access, "").await[0]["title"], "kept");
}

#[tokio::test]
async fn a_broken_schema_is_a_500_problem_without_details() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    // Opens the connection the read below runs on (its lane's, on the same
    // keep-alive connection), which prepares every statement: after the
    // sabotage no new connection could (503 at the pool timeout).
    assert_eq!(app.get("/tasks/1", &u.access).await.status(), 404);
    app.sql().await.execute("ALTER TABLE tasks RENAME COLUMN title TO headline", &[]).await.expect("sabotage");
    let r = app.get("/tasks/1", &u.access).await;
    assert_eq!(r.status(), 500);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body = r.text().await.expect("body");
    assert!(!body.contains("headline") && !body.contains("column"), "no internals leak: {body}");
}

#[tokio::test]
async fn shutdown_finishes_requests_already_accepted() {
    let mut app = spawn_app().await;
    app.register("slow@example.com", PASSWORD).await;
    let (client, url) = (app.client.clone(), app.at("/auth/login"));
    let inflight = tokio::spawn(async move {
        client
            .post(url)
            .json(&json!({"email": "slow@example.com", "password": PASSWORD}))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(5)).await; // the login is hashing
    app.stop().await;
    assert_eq!(inflight.await.expect("join").expect("answered"), 200);
    assert!(app.client.get(app.at("/healthz")).send().await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn an_exhausted_pool_answers_503_after_the_checkout_timeout() {
    let app = spawn_with(Options::default().env("PG_POOL_SIZE", "1").env("POOL_TIMEOUT_MS", "300")).await;
    let admin = app.admin().await;
    let u = app.new_user().await;
    // A row lock held here makes the status change wait inside PostgreSQL
    // while it holds the pool's only connection.
    let mut sql = app.sql().await;
    let tx = sql.transaction().await.expect("begin");
    tx.query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", &[&u.id]).await.expect("lock");
    let (client, url, token) = (app.client.clone(), app.at(&format!("/admin/users/{}/status", u.id)), admin.clone());
    let held = tokio::spawn(async move {
        client
            .patch(url)
            .bearer_auth(token)
            .json(&json!({"status": "banned"}))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A write: reads on a lane have the lane's own connection (see below).
    let start = Instant::now();
    let r = app.post("/tasks", Some(&admin), &json!({"title": "waits for the pool"})).await;
    assert_eq!(r.status(), 503, "no connection within the checkout timeout");
    assert!(start.elapsed() < Duration::from_secs(3), "answered, not piled up: {:?}", start.elapsed());
    tx.rollback().await.expect("release");
    assert_eq!(held.await.expect("join").expect("answered"), 200, "the held request completes once unblocked");
    assert_eq!(app.get("/me", &admin).await.status(), 200);
}

/// Reads go on their lane's own PostgreSQL connection (`db::Db::read`),
/// shared by the lane's requests. One that PostgreSQL has ended is replaced
/// before the next read instead of failing it, on every lane.
#[tokio::test]
async fn reads_survive_postgres_ending_the_servers_connections() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    // A new client per request: connections are dealt to the lanes in turn.
    let me = || async {
        let r = reqwest::Client::new().get(app.at("/me")).bearer_auth(&u.access).send().await.expect("request");
        r.status().as_u16()
    };
    for _ in 0..4 {
        assert_eq!(me().await, 200, "every lane has opened its connection");
    }
    let sql = app.sql().await;
    let others = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()";
    assert!(!sql.query(others, &[]).await.expect("activity").is_empty());
    sql.execute(&format!("SELECT pg_terminate_backend(pid) FROM ({others}) o"), &[]).await.expect("terminate");
    let gone =
        eventually(Duration::from_secs(5), || async { sql.query(others, &[]).await.expect("activity").is_empty() });
    assert!(gone.await, "PostgreSQL ended the server's connections");
    tokio::time::sleep(Duration::from_millis(100)).await; // the lanes have read the news
    for i in 0..4 {
        assert_eq!(me().await, 200, "read {i} after the connections ended");
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_with(Options::default().env("HEADER_READ_TIMEOUT_SECS", "1")).await;
    let mut s = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.expect("partial head");
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the server acted within 5 s")
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || text.contains(" 408 "), "closed or 408, got {text:?}");
    assert_eq!(app.client.get(app.at("/healthz")).send().await.expect("req").status(), 200);
}

#[tokio::test]
async fn a_header_flood_is_refused_without_harm() {
    let app = spawn_app().await;
    let r = app.client.get(app.at("/healthz")).header("x-flood", "a".repeat(1024 * 1024)).send().await;
    // Closed before answering (an Err) is also a refusal.
    if let Ok(r) = r {
        assert_eq!(r.status(), 431);
    }
    assert_eq!(app.client.get(app.at("/healthz")).send().await.expect("req").status(), 200);
}
