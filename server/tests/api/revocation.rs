//! "Revocation: what must hold", rules 1 to 6 of API.md, with the Redis
//! failure modes: stopped, restarted empty, flushed, unreachable during a
//! revocation.

use crate::helpers::*;
use serde_json::Value;
use std::time::Duration;

async fn assert_dead(app: &TestApp, u: &User) {
    assert_eq!(app.get("/me", &u.access).await.status(), 401, "access token of {}", u.email);
    assert_eq!(app.get("/tasks", &u.access).await.status(), 401, "cached route of {}", u.email);
    assert_eq!(app.refresh(&u.refresh).await.status(), 401, "refresh of {}", u.email);
}

#[tokio::test]
async fn a_ban_ends_every_token_at_once_and_login_gets_403() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let u = app.new_user().await;
    let (access2, refresh2) = app.tokens(&u.email, PASSWORD).await;
    app.list(&u.access, "").await; // warm the cache
    for status in ["banned", "deactivated", "security_issue"] {
        let r = app.set_status(&admin, u.id, status).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.expect("json");
        assert_eq!((v["id"].as_i64(), v["status"].as_str()), (Some(u.id), Some(status)));
        assert!(v["statusUpdatedAt"].is_string());
        assert_dead(&app, &u).await;
        assert_eq!(app.get("/me", &access2).await.status(), 401);
        assert_eq!(app.refresh(&refresh2).await.status(), 401);
        assert_eq!(app.login(&u.email, PASSWORD).await.status(), 403);
    }
}

#[tokio::test]
async fn reactivation_does_not_revive_old_tokens_but_a_fresh_login_works_at_once() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let u = app.new_user().await;
    // Same second as the ban, on purpose: ordering is by session id.
    assert_eq!(app.set_status(&admin, u.id, "banned").await.status(), 200);
    assert_eq!(app.set_status(&admin, u.id, "active").await.status(), 200);
    assert_dead(&app, &u).await;
    let (fresh, fresh_refresh) = app.tokens(&u.email, PASSWORD).await;
    assert_eq!(app.get("/me", &fresh).await.status(), 200);
    assert_eq!(app.refresh(&fresh_refresh).await.status(), 200);
}

#[tokio::test]
async fn a_session_opened_in_the_same_second_before_a_ban_is_refused() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    let u = app.new_user().await;
    let (late, _) = app.tokens(&u.email, PASSWORD).await; // milliseconds before the ban
    app.set_status(&admin, u.id, "banned").await;
    app.set_status(&admin, u.id, "active").await;
    assert_eq!(app.get("/me", &late).await.status(), 401);
}

#[tokio::test]
async fn logout_ends_one_session_and_leaves_the_others() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    let (other_access, other_refresh) = app.tokens(&u.email, PASSWORD).await;
    assert_eq!(app.post_empty("/auth/logout", &u.access).await.status(), 204);
    assert_dead(&app, &u).await;
    assert_eq!(app.get("/me", &other_access).await.status(), 200);
    assert_eq!(app.refresh(&other_refresh).await.status(), 200);
}

#[tokio::test]
async fn logout_all_ends_every_session_issued_so_far() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    let (a2, r2) = app.tokens(&u.email, PASSWORD).await;
    assert_eq!(app.post_empty("/auth/logout-all", &u.access).await.status(), 204);
    assert_dead(&app, &u).await;
    assert_eq!(app.get("/me", &a2).await.status(), 401);
    assert_eq!(app.refresh(&r2).await.status(), 401);
    let (after, _) = app.tokens(&u.email, PASSWORD).await;
    assert_eq!(app.get("/me", &after).await.status(), 200);
}

#[tokio::test]
async fn refresh_rotates_and_a_reused_token_ends_the_session() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    let r = app.refresh(&u.refresh).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    let (access2, refresh2) =
        (v["access_token"].as_str().expect("a").to_owned(), v["refresh_token"].as_str().expect("r").to_owned());
    assert_ne!(refresh2, u.refresh);
    assert_eq!(app.get("/me", &access2).await.status(), 200);
    // The consumed token again: reuse. The whole session ends.
    assert_eq!(app.refresh(&u.refresh).await.status(), 401);
    assert_eq!(app.refresh(&refresh2).await.status(), 401, "the newest refresh token of the session dies too");
    assert_eq!(app.get("/me", &access2).await.status(), 401, "and its access tokens");
    assert_eq!(app.metric(r#"auth_events_total{event="refresh",outcome="reuse"}"#).await, 1.0);
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_have_exactly_one_winner() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    let mut handles = Vec::new();
    for _ in 0..8 {
        let (client, url, body) =
            (app.client.clone(), app.at("/auth/refresh"), serde_json::json!({"refresh_token": u.refresh}));
        handles.push(tokio::spawn(
            async move { client.post(url).json(&body).send().await.expect("req").status().as_u16() },
        ));
    }
    let mut statuses = Vec::new();
    for h in handles {
        statuses.push(h.await.expect("join"));
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 401), "{statuses:?}");
}

#[tokio::test]
async fn revocation_holds_with_redis_stopped_and_active_users_are_served() {
    let mut app = spawn_with(Options::default().redis(RedisChoice::Private)).await;
    let admin = app.admin().await;
    let (good, bad) = (app.new_user().await, app.new_user().await);
    app.redis.as_mut().expect("redis").stop().await;
    assert_eq!(app.set_status(&admin, bad.id, "banned").await.status(), 200);
    assert_dead(&app, &bad).await;
    assert_eq!(app.get("/me", &good.access).await.status(), 200);
    assert_eq!(app.get("/tasks", &good.access).await.status(), 200);
    assert!(app.metric(r#"revocation_checks_total{result="revoked",source="db"}"#).await >= 1.0);
    assert!(app.metric(r#"revocation_checks_total{result="allowed",source="db"}"#).await >= 1.0);
    // Restarted empty: still enforced, and the server goes back to Redis.
    app.redis.as_mut().expect("redis").restart().await;
    tokio::time::sleep(Duration::from_millis(600)).await; // the breaker reopens
    assert_dead(&app, &bad).await;
    let back = eventually(Duration::from_secs(5), || async {
        app.get("/me", &good.access).await;
        app.metric(r#"revocation_checks_total{result="allowed",source="redis"}"#).await >= 1.0
    })
    .await;
    assert!(back, "checks return to Redis after the rebuild");
    assert_dead(&app, &bad).await;
    assert!(
        app.metric(r#"revocation_checks_total{result="revoked",source="redis"}"#).await >= 1.0,
        "the rebuild brought the ban back"
    );
}

#[tokio::test]
async fn flushall_resurrects_nothing() {
    let app = spawn_with(Options::default().redis(RedisChoice::Private)).await;
    let admin = app.admin().await;
    let (banned, logged_out, reused) = (app.new_user().await, app.new_user().await, app.new_user().await);
    app.set_status(&admin, banned.id, "banned").await;
    app.post_empty("/auth/logout", &logged_out.access).await;
    assert_eq!(app.refresh(&reused.refresh).await.status(), 200);
    assert_eq!(app.refresh(&reused.refresh).await.status(), 401);
    let redis = app.redis.as_ref().expect("redis");
    let _: () = redis.cmd(&["FLUSHALL"]).await;
    for u in [&banned, &logged_out, &reused] {
        assert_dead(&app, u).await;
    }
    // After the rebuild, Redis alone refuses them again.
    let rebuilt = eventually(Duration::from_secs(5), || async {
        !redis.cmd::<Vec<String>>(&["KEYS", "*epoch"]).await.is_empty()
    })
    .await;
    assert!(rebuilt);
    for u in [&banned, &logged_out, &reused] {
        assert_dead(&app, u).await;
    }
}

#[tokio::test]
async fn a_ban_that_could_not_reach_redis_is_not_undone_when_redis_comes_back() {
    // Redis keeps its state (and its epoch) but this server cannot reach it
    // while the ban is written: without care, the old state would be
    // trusted again afterwards.
    let app = spawn_with(Options::default().redis(RedisChoice::Proxied)).await;
    let admin = app.admin().await;
    let u = app.new_user().await;
    assert_eq!(app.get("/me", &u.access).await.status(), 200);
    let proxy = app.redis_proxy.as_ref().expect("proxy");
    proxy.cut();
    assert_eq!(app.set_status(&admin, u.id, "banned").await.status(), 200);
    proxy.restore();
    // Refused all along, and in the end by Redis itself (after the rebuild
    // that the voided epoch forced), not only by the PostgreSQL fallback.
    let by_redis = r#"revocation_checks_total{result="revoked",source="redis"}"#;
    let mut redis_refusals = 0.0;
    for _ in 0..100 {
        assert_eq!(app.get("/me", &u.access).await.status(), 401);
        redis_refusals = app.metric(by_redis).await;
        if redis_refusals >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(redis_refusals >= 3.0, "Redis answers again and refuses the banned user");
}

#[tokio::test]
async fn revocation_survives_requests_racing_a_flush() {
    let app = spawn_with(Options::default().redis(RedisChoice::Private)).await;
    let admin = app.admin().await;
    let (good, bad) = (app.new_user().await, app.new_user().await);
    app.set_status(&admin, bad.id, "banned").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for token in [good.access.clone(), bad.access.clone()] {
        let (client, url, stop) = (app.client.clone(), app.at("/tasks"), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                statuses.push(client.get(&url).bearer_auth(&token).send().await.expect("req").status().as_u16());
            }
            statuses
        }));
    }
    let redis = app.redis.as_ref().expect("redis");
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _: () = redis.cmd(&["FLUSHALL"]).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let good_statuses = workers.remove(0).await.expect("join");
    let bad_statuses = workers.remove(0).await.expect("join");
    assert!(bad_statuses.iter().all(|s| *s == 401), "a banned user was served");
    assert!(!good_statuses.is_empty() && good_statuses.iter().all(|s| *s == 200), "an active user was refused");
}
