//! Revocation and accounts that no client, race or Redis state can bypass:
//! one test per way the promise was broken from outside (clients that hang
//! up, parallel guesses, one account under many spellings, a Redis that
//! vouches for itself, tokens that outlive their session, the admin
//! bootstrap), plus the contract's smaller rules.

use crate::helpers::*;
use serde_json::{Value, json};
use std::time::Duration;

/// Every check of `token` for `within` is a 401: it never comes back.
async fn stays_refused(app: &TestApp, token: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        assert_eq!(app.get("/me", token).await.status(), 401, "a revoked token was accepted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn db_status(app: &TestApp, uid: i64) -> String {
    app.sql().await.query_one("SELECT status FROM users WHERE id = $1", &[&uid]).await.expect("row").get(0)
}

#[tokio::test]
async fn a_ban_whose_client_hangs_up_still_reaches_redis() {
    let app = spawn_app().await;
    let admin = app.admin().await;
    for round in 0..8u64 {
        let u = app.new_user().await;
        assert_eq!(app.get("/me", &u.access).await.status(), 200);
        let body = r#"{"status":"banned"}"#;
        let req = raw_json("PATCH", &format!("/admin/users/{}/status", u.id), Some(&admin), body);
        // Hang up at a different moment each round, some before the commit.
        send_and_hang_up(app.addr, &req, Duration::from_millis(round % 4)).await;
        let committed = eventually(Duration::from_secs(5), || async { db_status(&app, u.id).await == "banned" }).await;
        if !committed {
            continue; // hung up before the body arrived: nothing began
        }
        // Committed: the mirror follows within moments, and then for good.
        assert!(
            eventually(Duration::from_secs(2), || async { app.get("/me", &u.access).await.status() == 401 }).await,
            "round {round}: the ban committed but its token is still accepted"
        );
        stays_refused(&app, &u.access, Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_logout_whose_client_hangs_up_ends_the_session() {
    let app = spawn_app().await;
    for round in 0..8u64 {
        let u = app.new_user().await;
        let req = format!("POST /auth/logout HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n", u.access);
        send_and_hang_up(app.addr, &req, Duration::from_millis(round % 3)).await;
        let sql = app.sql().await;
        let revoked = eventually(Duration::from_secs(5), || async {
            sql.query_one("SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NOT NULL", &[&u.id])
                .await
                .map(|r| r.get::<_, i64>(0) == 1)
                .unwrap_or(false)
        })
        .await;
        if revoked {
            assert!(
                eventually(Duration::from_secs(2), || async { app.get("/me", &u.access).await.status() == 401 }).await,
                "round {round}: the logout committed but its token is still accepted"
            );
            stays_refused(&app, &u.access, Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test]
async fn a_task_write_whose_client_hangs_up_still_invalidates_the_cache() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    for round in 0..10 {
        assert_eq!(app.list(&u.access, "").await.len(), round, "warm the cache");
        let req = raw_json("POST", "/tasks", Some(&u.access), &format!(r#"{{"title":"t{round}"}}"#));
        send_and_hang_up(app.addr, &req, Duration::ZERO).await;
        let sql = app.sql().await;
        let stored = eventually(Duration::from_secs(5), || async {
            sql.query_one("SELECT count(*) FROM tasks WHERE user_id = $1", &[&u.id])
                .await
                .map(|r| r.get::<_, i64>(0) == round as i64 + 1)
                .unwrap_or(false)
        })
        .await;
        assert!(stored, "the write of round {round} was not committed");
        assert!(
            eventually(Duration::from_secs(2), || async { app.list(&u.access, "").await.len() == round + 1 }).await,
            "round {round}: a committed task is missing from the cached list"
        );
    }
}

#[tokio::test]
async fn logins_whose_clients_hang_up_do_not_wedge_the_hash_queue() {
    let app = spawn_with(Options::default().env("HASH_CONCURRENCY", "1").env("HASH_QUEUE_MAX", "4")).await;
    let u = app.new_user().await;
    let body = json!({"email": u.email, "password": "wrong password!"}).to_string();
    let mut hangups = Vec::new();
    for _ in 0..40 {
        let (addr, req) = (app.addr, raw_json("POST", "/auth/login", None, &body));
        hangups.push(tokio::spawn(async move { send_and_hang_up(addr, &req, Duration::from_millis(2)).await }));
    }
    for h in hangups {
        h.await.expect("join");
    }
    // Whatever was queued drains; the queue is not left counted full.
    let ok = eventually(Duration::from_secs(20), || async {
        app.post("/auth/login", None, &json!({"email": u.email, "password": PASSWORD})).await.status() != 503
    })
    .await;
    assert!(ok, "login answers 503 for good after clients hung up");
    // Jobs of hung-up logins may still hold the queue's few places for a
    // moment (a hash at a low priority on a busy machine); then a register passes.
    let email = format!("after-{}@example.com", u.id);
    let registered = eventually(Duration::from_secs(20), || async {
        let status = app.register(&email, PASSWORD).await.status();
        assert_ne!(status, 409, "a 503 must not have created the account");
        status == 201
    })
    .await;
    assert!(registered, "register answers 503 for good after clients hung up");
}

/// 48 wrong passwords for one account at once; returns the statuses and
/// how many password verifications ran.
async fn parallel_guesses(app: &TestApp, email: &str) -> (Vec<u16>, f64) {
    let before = app.metric("password_hash_duration_seconds_count").await;
    let mut handles = Vec::new();
    for i in 0..48 {
        let (client, url) = (app.client.clone(), app.at("/auth/login"));
        // Many spellings of one account, to share one count.
        let spelled = if i % 2 == 0 { email.to_uppercase() } else { email.to_owned() };
        let body = json!({"email": spelled, "password": format!("guess number {i}")});
        handles.push(tokio::spawn(
            async move { client.post(url).json(&body).send().await.expect("req").status().as_u16() },
        ));
    }
    let mut statuses = Vec::new();
    for h in handles {
        statuses.push(h.await.expect("join"));
    }
    let verified = app.metric("password_hash_duration_seconds_count").await - before;
    eprintln!("parallel guesses: {verified} of 48 verified, statuses {statuses:?}");
    (statuses, verified)
}

#[tokio::test]
async fn parallel_wrong_passwords_are_bounded_by_the_limit() {
    let app = spawn_with(Options::default().env("LOGIN_MAX_FAILURES", "10")).await;
    let u = app.new_user().await;
    let (statuses, verified) = parallel_guesses(&app, &u.email).await;
    let wrong = statuses.iter().filter(|s| **s == 401).count();
    assert!(wrong <= 10, "{wrong} of 48 parallel guesses were verified (limit 10): {statuses:?}");
    assert!(verified <= 10.0, "{verified} password verifications ran");
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "{statuses:?}");
    let r = app.login(&u.email, PASSWORD).await;
    assert_eq!(r.status(), 429, "the right password waits for the window too");
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn parallel_wrong_passwords_are_bounded_with_redis_down_too() {
    let mut app = spawn_with(Options::default().redis(RedisChoice::Private).env("LOGIN_MAX_FAILURES", "10")).await;
    let u = app.new_user().await;
    app.redis.as_mut().expect("private redis").stop().await;
    let (statuses, verified) = parallel_guesses(&app, &u.email).await;
    let wrong = statuses.iter().filter(|s| **s == 401).count();
    assert!(wrong <= 10 && verified <= 10.0, "{wrong} refused, {verified} verified: {statuses:?}");
}

#[tokio::test]
async fn every_spelling_of_an_account_finds_it_and_shares_one_count() {
    let app = spawn_with(Options::default().env("LOGIN_MAX_FAILURES", "4")).await;
    // U+0130 lower-cases to "i" + U+0307, which a C-collation lower() keeps.
    let email = format!("İnfo{}@Example.com", rand::random::<u32>());
    assert_eq!(app.register(&email, PASSWORD).await.status(), 201);
    let lower = email.to_lowercase();
    assert_eq!(app.login(&lower, PASSWORD).await.status(), 200, "the lower-case spelling finds the account");
    assert_eq!(app.register(&lower, PASSWORD).await.status(), 409, "and is taken");
    for spelled in [&email, &lower, &email.to_uppercase(), &lower] {
        assert_eq!(app.login(spelled, "wrong password!").await.status(), 401);
    }
    for spelled in [&email, &lower] {
        assert_eq!(app.login(spelled, "wrong password!").await.status(), 429, "{spelled} shares the count");
    }
}

#[tokio::test]
async fn login_input_is_bounded_and_never_stored_raw_in_redis() {
    let mut app = spawn_with(Options::default().redis(RedisChoice::Private)).await;
    let huge = format!("{}@example.com", "a".repeat(60_000));
    let r = app.login(&huge, "whatever!").await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["errors"][0]["field"], "email");
    let u = app.new_user().await;
    assert_eq!(app.login(&u.email, "wrong password!").await.status(), 401);
    let redis = app.redis.as_mut().expect("private redis");
    let keys: Vec<String> = redis.cmd(&["KEYS", "*login*"]).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(!keys[0].contains(&u.email) && keys[0].len() < 120, "{keys:?}");
    let ttl: i64 = redis.cmd(&["PTTL", &keys[0]]).await;
    assert!(ttl > 0, "the counter expires (no PEXPIRE NX needed)");
}

#[tokio::test]
async fn a_redis_restored_from_a_snapshot_taken_before_a_ban_loses_nothing() {
    let mut app = spawn_with(Options::default().redis(RedisChoice::Private)).await;
    let admin = app.admin().await;
    let victim = app.new_user().await;
    let writer = app.new_user().await;
    app.create_task(&writer.access, "before").await;
    assert_eq!(app.list(&writer.access, "").await.len(), 1, "cached under the snapshot's tag");
    assert_eq!(app.get("/me", &victim.access).await.status(), 200);
    let _: String = app.redis.as_ref().expect("redis").cmd(&["SAVE"]).await;
    // After the snapshot: a ban, a logout, a task write.
    assert_eq!(app.set_status(&admin, victim.id, "banned").await.status(), 200);
    let (logged_out, _) = app.tokens(&writer.email, PASSWORD).await;
    assert_eq!(app.post_empty("/auth/logout", &logged_out).await.status(), 204);
    app.create_task(&writer.access, "after").await;
    assert_eq!(app.list(&writer.access, "").await.len(), 2);
    app.redis.as_mut().expect("redis").restart_from_snapshot().await;
    let epochs: Vec<String> = app.redis.as_ref().expect("redis").cmd(&["KEYS", "*epoch"]).await;
    let epoch = epochs.first();
    assert!(epoch.is_some(), "the snapshot brought the old epoch back");
    // Until the breaker lets Redis in again, then for good.
    stays_refused(&app, &victim.access, Duration::from_millis(1500)).await;
    stays_refused(&app, &logged_out, Duration::from_millis(300)).await;
    for _ in 0..5 {
        assert_eq!(app.list(&writer.access, "").await.len(), 2, "no stale task list");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(app.metric(r#"revocation_checks_total{result="allowed",source="redis"}"#).await > 0.0);
    assert_eq!(app.login(&victim.email, PASSWORD).await.status(), 403);
}

#[tokio::test]
async fn a_redis_that_may_evict_is_not_trusted_and_loses_no_logout() {
    let mut app =
        spawn_with(Options::default().redis_args(&["--maxmemory", "4mb", "--maxmemory-policy", "allkeys-lru"])).await;
    let ready: Value = app.client.get(app.at("/readyz")).send().await.expect("readyz").json().await.expect("json");
    assert_eq!(ready["redisTrust"]["trusted"], false, "{ready}");
    assert!(ready["redisTrust"]["reasons"][0].as_str().unwrap_or("").contains("allkeys-lru"), "{ready}");
    let u = app.new_user().await;
    let mut dead = Vec::new();
    for _ in 0..6 {
        let (access, _) = app.tokens(&u.email, PASSWORD).await;
        assert_eq!(app.post_empty("/auth/logout", &access).await.status(), 204);
        dead.push(access);
    }
    // Memory pressure: far more than maxmemory, so Redis evicts.
    let redis = app.redis.as_mut().expect("redis");
    let blob = "x".repeat(64 * 1024);
    for i in 0..200 {
        let _: () = redis.cmd(&["SET", &format!("junk:{i}"), &blob]).await;
    }
    let info: String = redis.cmd(&["INFO", "stats"]).await;
    assert!(!info.contains("evicted_keys:0\r"), "Redis evicted keys");
    for token in &dead {
        assert_eq!(app.get("/me", token).await.status(), 401, "a logged-out session came back");
    }
    assert_eq!(app.get("/me", &u.access).await.status(), 200, "active users are served from PostgreSQL");
    assert_eq!(app.metric(r#"revocation_checks_total{result="allowed",source="redis"}"#).await, 0.0);
}

#[tokio::test]
async fn no_token_outlives_its_session_even_after_a_flush() {
    let app = spawn_with(
        Options::default()
            .redis(RedisChoice::Private)
            .env("ACCESS_TOKEN_TTL_SECS", "900")
            .env("REFRESH_TOKEN_TTL_SECS", "2"),
    )
    .await;
    let u = app.new_user().await;
    let r = app.login(&u.email, PASSWORD).await;
    let v: Value = r.json().await.expect("json");
    assert!(v["expires_in"].as_u64().expect("expires_in") <= 2, "{v}");
    let access = v["access_token"].as_str().expect("token").to_owned();
    assert_eq!(app.post_empty("/auth/logout", &access).await.status(), 204);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let _: String = app.redis.as_ref().expect("redis").cmd(&["FLUSHALL"]).await;
    // The rebuild skips the expired session; the token is expired anyway.
    stays_refused(&app, &access, Duration::from_millis(800)).await;
}

#[tokio::test]
async fn the_bootstrap_ends_the_sessions_of_an_account_it_promotes() {
    let first = spawn_app().await;
    let email = format!("squatter{}@example.com", rand::random::<u32>());
    assert_eq!(first.register(&email, PASSWORD).await.status(), 201);
    let (access, refresh) = first.tokens(&email, PASSWORD).await;
    let second = spawn_with(
        Options::default().database(&first.db_url).env("ADMIN_EMAIL", &email).env("ADMIN_PASSWORD", PASSWORD),
    )
    .await;
    assert_eq!(second.refresh(&refresh).await.status(), 401, "no admin token from the squatter's session");
    assert_eq!(second.get("/me", &access).await.status(), 401);
    let (fresh, _) = second.tokens(&email, PASSWORD).await;
    assert_eq!(second.get("/admin/tasks", &fresh).await.status(), 200, "a fresh login is the admin");
    // Unchanged on the next start: its sessions live.
    let third = spawn_with(
        Options::default().database(&first.db_url).env("ADMIN_EMAIL", &email).env("ADMIN_PASSWORD", PASSWORD),
    )
    .await;
    assert_eq!(third.get("/me", &fresh).await.status(), 200);
}

#[tokio::test]
async fn sessions_per_user_are_bounded_oldest_first() {
    let app = spawn_with(Options::default().env("MAX_SESSIONS_PER_USER", "2")).await;
    let u = app.new_user().await; // session 1
    let (second, _) = app.tokens(&u.email, PASSWORD).await;
    let (third, _) = app.tokens(&u.email, PASSWORD).await;
    assert_eq!(app.get("/me", &u.access).await.status(), 401, "the oldest session ended");
    assert_eq!(app.refresh(&u.refresh).await.status(), 401);
    assert_eq!(app.get("/me", &second).await.status(), 200);
    assert_eq!(app.get("/me", &third).await.status(), 200);
}

#[tokio::test]
async fn with_one_session_per_user_each_login_ends_the_one_before() {
    // The edge of the trim: the new session is the one kept, every older
    // live one ends in the login's own statement.
    let app = spawn_with(Options::default().env("MAX_SESSIONS_PER_USER", "1")).await;
    let u = app.new_user().await;
    let (second, _) = app.tokens(&u.email, PASSWORD).await;
    assert_eq!(app.get("/me", &u.access).await.status(), 401);
    assert_eq!(app.get("/me", &second).await.status(), 200);
    let (third, _) = app.tokens(&u.email, PASSWORD).await;
    assert_eq!(app.get("/me", &second).await.status(), 401);
    assert_eq!(app.get("/me", &third).await.status(), 200);
}

#[tokio::test]
async fn a_body_that_never_arrives_is_a_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_with(Options::default().env("BODY_READ_TIMEOUT_SECS", "1")).await;
    let mut s = tokio::net::TcpStream::connect(app.addr).await.expect("connect");
    let head = "POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    s.write_all(head.as_bytes()).await.expect("write");
    let mut buf = vec![0; 4096];
    let n =
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("answered in time").expect("read");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
}

#[tokio::test]
async fn the_bearer_is_checked_before_the_path_id_and_the_body_size() {
    let app = spawn_app().await;
    let r = app.client.get(app.at("/tasks/abc")).send().await.expect("req");
    assert_eq!(r.status(), 401);
    let big = json!({"title": "x".repeat(70 * 1024)});
    let r = app.client.post(app.at("/tasks")).json(&big).send().await.expect("req");
    assert_eq!(r.status(), 401, "no token: 401 before 413");
    let r = app.client.post(app.at("/auth/register")).json(&big).send().await.expect("req");
    assert_eq!(r.status(), 413, "public routes still refuse the size");
    let u = app.new_user().await;
    assert_eq!(app.get("/admin/tasks", &u.access).await.status(), 403);
}

#[tokio::test]
async fn every_get_route_answers_head_with_the_same_status_and_headers() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    app.create_task(&u.access, "a").await;
    for path in ["/tasks", "/me", "/healthz", "/metrics", "/readyz", "/tasks/999999"] {
        let get = app.client.get(app.at(path)).bearer_auth(&u.access).send().await.expect("get");
        let head = app.client.head(app.at(path)).bearer_auth(&u.access).send().await.expect("head");
        assert_eq!(head.status(), get.status(), "{path}");
        assert_eq!(head.headers().get("content-type"), get.headers().get("content-type"), "{path}");
        assert!(head.bytes().await.expect("body").is_empty(), "{path}: HEAD has no body");
    }
    let anon = app.client.head(app.at("/tasks")).send().await.expect("head");
    assert_eq!(anon.status(), 401);
}

async fn field_error(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.expect("json");
    v["errors"][0]["field"].as_str().unwrap_or_else(|| panic!("errors[] names a field: {v}")).to_owned()
}

#[tokio::test]
async fn wrong_types_missing_fields_and_nul_are_field_errors() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    let t = app.create_task(&u.access, "a").await;
    let task = format!("/tasks/{}", t["id"]);
    assert_eq!(field_error(app.post("/tasks", Some(&u.access), &json!({"title": 5})).await).await, "title");
    assert_eq!(field_error(app.post("/tasks", Some(&u.access), &json!({"description": "d"})).await).await, "title");
    assert_eq!(field_error(app.patch(&task, &u.access, &json!({"isCompleted": "yes"})).await).await, "isCompleted");
    assert_eq!(field_error(app.post("/tasks", Some(&u.access), &json!({"title": "a", "x": 1})).await).await, "x");
    assert_eq!(field_error(app.post("/tasks", Some(&u.access), &json!({"title": "a\u{0}b"})).await).await, "title");
    let nul_description = json!({"title": "a", "description": "\u{0}"});
    assert_eq!(field_error(app.post("/tasks", Some(&u.access), &nul_description).await).await, "description");
    assert_eq!(field_error(app.patch(&task, &u.access, &json!({"title": "\u{0}"})).await).await, "title");
    assert_eq!(field_error(app.login("a\u{0}@example.com", "whatever!").await).await, "email");
    assert_eq!(field_error(app.register("nul@example.com", "pass\u{0}word").await).await, "password");
    assert_eq!(field_error(app.login(&u.email, "pass\u{0}word").await).await, "password");
}

#[tokio::test]
async fn instants_outside_rfc3339_years_are_refused() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    // The rule is on the date as written, as the OpenAPI document's pattern
    // states it (schemathesis found the document and the server disagreeing
    // on 0001-01-01T00:01:01+01:00 while the rule was on the UTC instant).
    for due in [
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+01:00",
        "0001-01-01T00:01:01+01:00",
        "0001-01-01T05:00:00+01:00",
        "9999-12-31T00:00:00-01:00",
    ] {
        let r = app.post("/tasks", Some(&u.access), &json!({"title": "a", "dueDate": due})).await;
        assert_eq!(field_error(r).await, "dueDate", "{due}");
    }
    for due in
        ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "0001-01-01T05:00:00-01:00", "9999-12-31T01:00:00-00:00"]
    {
        let ok = app.post("/tasks", Some(&u.access), &json!({"title": "a", "dueDate": due})).await;
        assert_eq!(ok.status(), 201, "{due}");
    }
}

#[tokio::test]
async fn register_refuses_what_is_not_an_email_address() {
    let app = spawn_app().await;
    for bad in ["x@example.com*", "<x>@[example].com", "x@[127.0.0.1]", "\"a b\"@example.com"] {
        assert_eq!(field_error(app.register(bad, PASSWORD).await).await, "email", "{bad}");
    }
}

#[tokio::test]
async fn a_ban_answered_while_its_instance_skips_redis_is_refused_by_the_other_instances_at_once() {
    // Two instances of one deployment: `a` reaches Redis through a proxy,
    // `b` directly. A blip on `a`'s link opens its breaker (reads skip Redis
    // for a moment); a ban `a` answers meanwhile must still reach Redis, or
    // `b`, whose Redis is fine, would accept the banned user from it.
    let a = spawn_with(Options::default().redis(RedisChoice::Proxied)).await;
    let b =
        spawn_with(Options::default().database(&a.db_url).env("REDIS_KEY_PREFIX", &a.config["REDIS_KEY_PREFIX"])).await;
    let admin = a.admin().await;
    let victim = a.new_user().await;
    let from_redis = r#"revocation_checks_total{result="allowed",source="redis"}"#;
    let served = eventually(Duration::from_secs(10), || async {
        b.get("/me", &victim.access).await.status() == 200 && b.metric(from_redis).await > 0.0
    })
    .await;
    assert!(served, "b answers the victim from Redis");
    let proxy = a.redis_proxy.as_ref().expect("proxy");
    proxy.cut();
    assert_eq!(a.get("/me", &victim.access).await.status(), 200, "answered from PostgreSQL; a's breaker opens");
    proxy.restore();
    assert_eq!(a.set_status(&admin, victim.id, "banned").await.status(), 200);
    let refused = r#"revocation_checks_total{result="revoked",source="redis"}"#;
    let before = b.metric(refused).await;
    assert_eq!(b.get("/me", &victim.access).await.status(), 401, "b refuses the ban a answered");
    assert_eq!(b.metric(refused).await, before + 1.0, "b still trusts Redis: the ban reached it");
    stays_refused(&b, &victim.access, Duration::from_millis(600)).await;
}
