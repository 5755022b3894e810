//! Register, login, /me, throttling, admin bootstrap.

use crate::helpers::*;
use serde_json::{Value, json};

#[tokio::test]
async fn register_returns_the_new_user() {
    let app = spawn_app().await;
    let r = app.register("Mixed.Case@Example.com", PASSWORD).await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.expect("json");
    assert!(v["id"].is_i64());
    assert_eq!(v["email"], "Mixed.Case@Example.com");
    assert_eq!(v["role"], "user");
    assert_eq!(v["status"], "active");
    assert!(v["createdAt"].as_str().expect("createdAt").ends_with('Z'));
    assert!(v.get("password").is_none() && v.get("passwordHash").is_none());
}

#[tokio::test]
async fn register_refuses_a_taken_email_whatever_its_case() {
    let app = spawn_app().await;
    assert_eq!(app.register("dup@example.com", PASSWORD).await.status(), 201);
    let r = app.register("DUP@example.COM", PASSWORD).await;
    assert_eq!(r.status(), 409);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn register_validates_email_and_password_with_field_errors() {
    let app = spawn_app().await;
    let r = app.register("not-an-email", "short").await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    let fields: Vec<&str> =
        v["errors"].as_array().expect("errors").iter().map(|e| e["field"].as_str().expect("field")).collect();
    assert_eq!(fields, ["email", "password"]);
    assert_eq!(v["status"], 400);
    let long_email = format!("{}@example.com", "a".repeat(250));
    assert_eq!(app.register(&long_email, PASSWORD).await.status(), 400);
    assert_eq!(app.register("ok@example.com", &"p".repeat(129)).await.status(), 400);
    assert_eq!(app.register("ok@example.com", &"p".repeat(128)).await.status(), 201);
}

#[tokio::test]
async fn login_returns_an_oauth_shaped_token_pair() {
    let app = spawn_app().await;
    app.register("login@example.com", PASSWORD).await;
    let r = app.login("LOGIN@example.com", PASSWORD).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 900);
    assert!(v["access_token"].as_str().expect("access").split('.').count() == 3);
    assert_ne!(v["access_token"], v["refresh_token"]);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_answer() {
    let app = spawn_app().await;
    app.register("known@example.com", PASSWORD).await;
    let a = app.login("known@example.com", "wrong password").await;
    let b = app.login("nobody@example.com", PASSWORD).await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (401, 401));
    assert_eq!(a.headers()["www-authenticate"], "Bearer");
    assert_eq!(a.headers()["www-authenticate"], b.headers()["www-authenticate"]);
    assert_eq!(a.text().await.expect("body"), b.text().await.expect("body"));
}

#[tokio::test]
async fn me_describes_the_caller() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    let r = app.get("/me", &u.access).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["id"], u.id);
    assert_eq!(v["email"], u.email.as_str());
    assert_eq!(v["status"], "active");
    assert!(v["statusUpdatedAt"].is_string());
}

#[tokio::test]
async fn repeated_failures_are_throttled_with_retry_after() {
    let app =
        spawn_with(Options::default().env("LOGIN_MAX_FAILURES", "3").env("LOGIN_FAILURE_WINDOW_SECS", "60")).await;
    app.register("victim@example.com", PASSWORD).await;
    for _ in 0..3 {
        assert_eq!(app.login("victim@example.com", "guess-guess").await.status(), 401);
    }
    let r = app.login("Victim@example.com", PASSWORD).await;
    assert_eq!(r.status(), 429, "locked even with the right password");
    let retry: u64 = r.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=60).contains(&retry));
    // Another email is unaffected.
    app.register("other@example.com", PASSWORD).await;
    assert_eq!(app.login("other@example.com", PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn throttling_falls_back_to_memory_when_redis_is_down() {
    let mut app = spawn_with(
        Options::default()
            .redis(RedisChoice::Private)
            .env("LOGIN_MAX_FAILURES", "2")
            .env("LOGIN_FAILURE_WINDOW_SECS", "60"),
    )
    .await;
    app.register("v2@example.com", PASSWORD).await;
    app.redis.as_mut().expect("private redis").stop().await;
    for _ in 0..2 {
        assert_eq!(app.login("v2@example.com", "guess-guess").await.status(), 401);
    }
    assert_eq!(app.login("v2@example.com", PASSWORD).await.status(), 429);
}

#[tokio::test]
async fn a_successful_login_resets_the_failure_count() {
    let app = spawn_with(Options::default().env("LOGIN_MAX_FAILURES", "2")).await;
    app.register("reset@example.com", PASSWORD).await;
    assert_eq!(app.login("reset@example.com", "guess-guess").await.status(), 401);
    assert_eq!(app.login("reset@example.com", PASSWORD).await.status(), 200);
    assert_eq!(app.login("reset@example.com", "guess-guess").await.status(), 401);
    assert_eq!(app.login("reset@example.com", PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn the_bootstrap_admin_exists_and_is_an_admin() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let v: Value = app.get("/me", &admin).await.json().await.expect("json");
    assert_eq!(v["role"], "admin");
    // A second start with another password takes it over.
    let mut map = app.config.clone();
    map.insert("ADMIN_PASSWORD".into(), "a-new-admin-password".into());
    let config = tollgate::Config::from_source(&map).expect("valid");
    let second = tollgate::App::build(config).await.expect("starts").spawn();
    let r = app
        .client
        .post(format!("{}/auth/login", second.url()))
        .json(&json!({"email": ADMIN_EMAIL, "password": "a-new-admin-password"}))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 200);
    second.stop().await;
}

#[tokio::test]
async fn a_login_storm_does_not_stall_other_routes() {
    let app = spawn_with(Options::default().env("HASH_CONCURRENCY", "1")).await;
    app.register("storm@example.com", PASSWORD).await;
    let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut logins = Vec::new();
    for i in 0..8 {
        let (client, url, order) = (app.client.clone(), app.at("/auth/login"), order.clone());
        logins.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&json!({"email": "storm@example.com", "password": PASSWORD}))
                .send()
                .await
                .expect("req");
            order.lock().expect("lock").push(format!("login{i}"));
            r.status().as_u16()
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let r = app.client.get(app.at("/healthz")).send().await.expect("healthz");
    order.lock().expect("lock").push("healthz".into());
    assert_eq!(r.status(), 200);
    for l in logins {
        assert_eq!(l.await.expect("join"), 200);
    }
    let order = order.lock().expect("lock").clone();
    let pos = order.iter().position(|s| s == "healthz").expect("healthz recorded");
    assert!(pos < order.len() - 1, "healthz answered after every queued login: {order:?}");
}
