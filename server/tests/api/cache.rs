//! "Caching: what must hold": hits, invalidation per write kind and query
//! shape, read-your-writes under concurrency, the stale-set race, single
//! flight, Redis down, the in-process backend.

use crate::helpers::*;
use bytes::Bytes;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tollgate::cache::{Lookup, Scope};

const HIT: &str = r#"cache_requests_total{cache="tasks",result="hit"}"#;
const MISS: &str = r#"cache_requests_total{cache="tasks",result="miss"}"#;

#[tokio::test]
async fn a_second_read_is_a_hit_and_both_are_counted() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    app.create_task(&u.access, "x").await;
    let first = app.list(&u.access, "").await;
    let second = app.list(&u.access, "").await;
    assert_eq!(first, second);
    assert_eq!((app.metric(MISS).await, app.metric(HIT).await), (1.0, 1.0));
    app.list(&u.access, "?limit=5").await; // another shape: its own entry
    assert_eq!(app.metric(MISS).await, 2.0);
}

#[tokio::test]
async fn every_write_kind_invalidates_every_query_shape() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    let shapes = ["", "?limit=1", "?completed=false", "?completed=true", "?offset=1&limit=100"];
    let t = app.create_task(&u.access, "first").await;
    app.create_task(&u.access, "second").await;
    let path = format!("/tasks/{}", t["id"]);
    async fn warm(app: &TestApp, token: &str) {
        for s in ["", "?limit=1", "?completed=false", "?completed=true", "?offset=1&limit=100"] {
            app.list(token, s).await;
        }
    }
    warm(&app, &u.access).await;
    app.create_task(&u.access, "third").await;
    assert_eq!(app.list(&u.access, "").await.len(), 3, "after create");
    assert_eq!(app.list(&u.access, "?offset=1&limit=100").await.len(), 2);
    warm(&app, &u.access).await;
    app.patch(&path, &u.access, &json!({"isCompleted": true, "title": "renamed"})).await;
    assert_eq!(app.list(&u.access, "?limit=1").await[0]["title"], "renamed", "after update");
    assert_eq!(app.list(&u.access, "?completed=true").await.len(), 1);
    assert_eq!(app.list(&u.access, "?completed=false").await.len(), 2);
    warm(&app, &u.access).await;
    app.delete(&path, &u.access).await;
    for s in shapes {
        let l = app.list(&u.access, s).await;
        assert!(l.iter().all(|t| t["title"] != "renamed"), "after delete, shape {s:?}");
    }
}

#[tokio::test]
async fn no_read_after_an_acknowledged_write_misses_it() {
    let app = Arc::new(spawn_app().await);
    let u = app.new_user().await;
    let t = app.create_task(&u.access, "v0").await;
    let path = format!("/tasks/{}", t["id"]);
    let acked = Arc::new(AtomicUsize::new(0));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let writer = {
        let (app, acked, token, path) = (app.clone(), acked.clone(), u.access.clone(), path.clone());
        tokio::spawn(async move {
            let mut v = 0;
            while tokio::time::Instant::now() < deadline {
                v += 1;
                let r = app.patch(&path, &token, &json!({"title": format!("v{v}")})).await;
                assert_eq!(r.status(), 200);
                acked.store(v, Ordering::SeqCst);
            }
            v
        })
    };
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (app, acked, token) = (app.clone(), acked.clone(), u.access.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0;
            while tokio::time::Instant::now() < deadline {
                let floor = acked.load(Ordering::SeqCst);
                let list = app.list(&token, "").await;
                let seen: usize = list[0]["title"].as_str().expect("title")[1..].parse().expect("version");
                assert!(seen >= floor, "read v{seen} after v{floor} was acknowledged");
                reads += 1;
            }
            reads
        }));
    }
    let writes = writer.await.expect("writer");
    let mut reads = 0;
    for r in readers {
        reads += r.await.expect("reader");
    }
    assert!(writes > 10 && reads > 40, "the test exercised the race: {writes} writes, {reads} reads");
    assert!(app.metric(HIT).await > 0.0, "some reads were hits");
}

#[tokio::test]
async fn a_load_that_raced_a_write_is_never_served() {
    // The stale-set race, forced: a reader misses and loads the old list;
    // a write commits and answers; only then does the reader store.
    let app = spawn_app().await;
    let u = app.new_user().await;
    let t = app.create_task(&u.access, "old").await;
    let st = app.state.clone();
    let p = st.tokens.verify(&u.access, tollgate::auth::token::TokenType::Access).expect("token");
    let q = tollgate::tasks::model::ListQuery::parse(None).expect("query");
    let shape = q.shape();
    let probe = st.revocation.check(&p, &st.cache.keys(Scope::Tasks(p.user_id), &shape), None).await.expect("allowed");
    let Lookup::Miss(fill) = st.cache.lookup(Scope::Tasks(p.user_id), &shape, probe) else { panic!("expected a miss") };
    let stale = serde_json::to_vec(&st.db.list_tasks(Some(p.user_id), &q, None).await.expect("load")).expect("encode");
    let r = app.patch(&format!("/tasks/{}", t["id"]), &u.access, &json!({"title": "new"})).await;
    assert_eq!(r.status(), 200);
    st.cache.load(Scope::Tasks(p.user_id), &shape, fill, async { Ok(Bytes::from(stale)) }).await.expect("stored");
    assert_eq!(app.list(&u.access, "").await[0]["title"], "new");
    assert_eq!(app.list(&u.access, "").await[0]["title"], "new");
}

#[tokio::test]
async fn concurrent_misses_share_one_load() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    let st = app.state.clone();
    let p = st.tokens.verify(&u.access, tollgate::auth::token::TokenType::Access).expect("token");
    let loads = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (st, p, loads) = (st.clone(), p.clone(), loads.clone());
        tasks.push(tokio::spawn(async move {
            let probe =
                st.revocation.check(&p, &st.cache.keys(Scope::Tasks(p.user_id), "shape"), None).await.expect("allowed");
            let Lookup::Miss(fill) = st.cache.lookup(Scope::Tasks(p.user_id), "shape", probe) else {
                return;
            };
            st.cache
                .load(Scope::Tasks(p.user_id), "shape", fill, async {
                    loads.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok(Bytes::from_static(b"[]"))
                })
                .await
                .expect("load");
        }));
    }
    for t in tasks {
        t.await.expect("join");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn with_redis_down_reads_and_writes_are_served_from_postgres() {
    let mut app = spawn_with(Options::default().redis(RedisChoice::Private)).await;
    let u = app.new_user().await;
    app.create_task(&u.access, "a").await;
    app.redis.as_mut().expect("redis").stop().await;
    let t = app.create_task(&u.access, "b").await;
    assert_eq!(app.list(&u.access, "").await.len(), 2);
    assert_eq!(app.patch(&format!("/tasks/{}", t["id"]), &u.access, &json!({"title": "c"})).await.status(), 200);
    assert_eq!(app.list(&u.access, "").await[1]["title"], "c");
    assert!(app.metric(r#"dependency_errors_total{dependency="redis",op="revocation_check"}"#).await >= 1.0);
}

#[tokio::test]
async fn a_write_whose_invalidation_was_lost_does_not_let_the_old_page_out() {
    let app = spawn_with(Options::default().redis(RedisChoice::Proxied)).await;
    let u = app.new_user().await;
    let t = app.create_task(&u.access, "before").await;
    app.list(&u.access, "").await;
    app.list(&u.access, "").await; // cached
    let proxy = app.redis_proxy.as_ref().expect("proxy");
    proxy.cut();
    app.patch(&format!("/tasks/{}", t["id"]), &u.access, &json!({"title": "after"})).await;
    proxy.restore();
    // Redis still holds the old page under the old tag. Read until the
    // server talks to Redis again, then some more: never the old title.
    let via_redis = r#"revocation_checks_total{result="allowed",source="redis"}"#;
    let before = app.metric(via_redis).await;
    let mut reads_via_redis = 0;
    for _ in 0..200 {
        assert_eq!(app.list(&u.access, "").await[0]["title"], "after");
        if app.metric(via_redis).await > before {
            reads_via_redis += 1;
            if reads_via_redis >= 10 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reads_via_redis >= 10, "the reads went through Redis again");
}

#[tokio::test]
async fn the_memory_backend_caches_and_invalidates_too() {
    let app = spawn_with(Options::default().env("CACHE_BACKEND", "memory")).await;
    let u = app.new_user().await;
    let t = app.create_task(&u.access, "m1").await;
    app.list(&u.access, "").await;
    app.list(&u.access, "").await;
    assert_eq!((app.metric(MISS).await, app.metric(HIT).await), (1.0, 1.0));
    app.patch(&format!("/tasks/{}", t["id"]), &u.access, &json!({"title": "m2"})).await;
    assert_eq!(app.list(&u.access, "").await[0]["title"], "m2");
}

#[tokio::test]
async fn a_hit_sends_exactly_the_stored_bytes() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    for i in 0..20 {
        app.create_task(&u.access, &format!("task {i}")).await;
    }
    let a = app.get("/tasks", &u.access).await.bytes().await.expect("body");
    let b = app.get("/tasks", &u.access).await.bytes().await.expect("body");
    assert_eq!(a, b);
    let v: Vec<Value> = serde_json::from_slice(&b).expect("json");
    assert_eq!(v.len(), 20);
}
