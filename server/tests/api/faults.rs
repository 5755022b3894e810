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
