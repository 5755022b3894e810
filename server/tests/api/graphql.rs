//! API.md "GraphQL": the schema's operations, the error codes, GraphQL over
//! HTTP, and the four rules (stable paging, a shared cache with
//! read-your-writes, query limits, no N+1), on the real server.

use crate::helpers::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

impl TestApp {
    /// One GraphQL request: (status, body).
    async fn gql(&self, token: &str, query: &str, variables: Value) -> (u16, Value) {
        let r = self.post("/graphql", Some(token), &json!({"query": query, "variables": variables})).await;
        let status = r.status().as_u16();
        (status, r.json().await.expect("json"))
    }

    /// `data` of a request that must succeed without errors.
    async fn gql_ok(&self, token: &str, query: &str, variables: Value) -> Value {
        let (status, body) = self.gql(token, query, variables).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("errors").is_none(), "{body}");
        body["data"].clone()
    }

    async fn new_post(&self, token: &str, title: &str) -> String {
        let d = self
            .gql_ok(
                token,
                "mutation($t: String!) { createPost(input: {title: $t, content: \"body\"}) { id } }",
                json!({"t": title}),
            )
            .await;
        d["createPost"]["id"].as_str().expect("id").to_owned()
    }
}

/// The code of the first error.
fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or("")
}

const PAGE: &str = "query Page($first: Int!, $after: String) { posts(first: $first, after: $after) {
    items { id title commentCount author { id displayName } comments(first: 5) { items { id content } } }
    nextCursor } }";

#[tokio::test]
async fn every_operation_needs_a_live_token_checked_like_any_route() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    let body = json!({"query": "{ me { id } }"});
    let r = app.client.post(app.at("/graphql")).json(&body).send().await.expect("request");
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let me = app.gql_ok(&u.access, "{ me { id displayName } }", json!({})).await;
    assert_eq!(me["me"]["id"], u.id.to_string());
    assert!(!me["me"]["displayName"].as_str().expect("name").contains('@'), "never an email address");
    assert_eq!(app.post_empty("/auth/logout", &u.access).await.status(), 204);
    let (status, _) = app.gql(&u.access, "{ me { id } }", json!({})).await;
    assert_eq!(status, 401, "a revoked token is refused before anything executes");
}

#[tokio::test]
async fn posts_and_comments_with_authorship_rules_and_error_codes() {
    let app = spawn_app().await;
    let (a, b) = (app.new_user().await, app.new_user().await);
    let admin = app.admin().await;
    let id = app.new_post(&a.access, "  First  ").await;
    let d = app.gql_ok(&a.access, "query($id: ID!) { post(id: $id) { title author { id } } }", json!({"id": id})).await;
    assert_eq!(d["post"]["title"], "First", "stored trimmed");
    assert_eq!(d["post"]["author"]["id"], a.id.to_string());

    let update = "mutation($id: ID!, $t: String) { updatePost(id: $id, input: {title: $t}) { title } }";
    let (status, body) = app.gql(&b.access, update, json!({"id": id, "t": "mine now"})).await;
    assert_eq!((status, code(&body)), (200, "FORBIDDEN"), "{body}");
    let d = app.gql_ok(&a.access, update, json!({"id": id, "t": "Edited"})).await;
    assert_eq!(d["updatePost"]["title"], "Edited");
    let (_, body) = app.gql(&a.access, update, json!({"id": "999999", "t": "x"})).await;
    assert_eq!(code(&body), "NOT_FOUND");

    for (t, field) in [("   ", "title"), ("x\u{0}", "title")] {
        let (_, body) = app.gql(&a.access, update, json!({"id": id, "t": t})).await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field);
    }
    let long = "c".repeat(2001);
    let add = "mutation($p: ID!, $c: String!) { addComment(input: {postId: $p, content: $c}) { id post { id } } }";
    let (_, body) = app.gql(&b.access, add, json!({"p": id, "c": long})).await;
    assert_eq!((code(&body), body["errors"][0]["extensions"]["field"].as_str()), ("BAD_USER_INPUT", Some("content")));
    let c = app.gql_ok(&b.access, add, json!({"p": id, "c": "nice"})).await;
    let comment = c["addComment"]["id"].as_str().expect("id").to_owned();
    assert_eq!(c["addComment"]["post"]["id"], id);
    let (_, body) = app.gql(&b.access, add, json!({"p": "424242", "c": "nowhere"})).await;
    assert_eq!(code(&body), "NOT_FOUND");

    let del_comment = "mutation($id: ID!) { deleteComment(id: $id) }";
    let (_, body) = app.gql(&a.access, del_comment, json!({"id": comment})).await;
    assert_eq!(code(&body), "FORBIDDEN", "the post's author is not the comment's");
    assert_eq!(app.gql_ok(&admin, del_comment, json!({"id": comment})).await["deleteComment"], true);
    let del_post = "mutation($id: ID!) { deletePost(id: $id) }";
    let (_, body) = app.gql(&b.access, del_post, json!({"id": id})).await;
    assert_eq!(code(&body), "FORBIDDEN");
    assert_eq!(app.gql_ok(&a.access, del_post, json!({"id": id})).await["deletePost"], true);
    let d = app.gql_ok(&a.access, "query($id: ID!) { post(id: $id) { id } }", json!({"id": id})).await;
    assert!(d["post"].is_null(), "null when absent");
}

#[tokio::test]
async fn graphql_over_http_statuses_and_content_types() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    let send = |body: Value, accept: Option<&'static str>| {
        let mut r = app.client.post(app.at("/graphql")).bearer_auth(&u.access).json(&body);
        if let Some(a) = accept {
            r = r.header("accept", a);
        }
        r.send()
    };
    let r = send(json!({"query": "{ me { id } }", "bogus": 1}), None).await.expect("request");
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.expect("json");
    assert!(body.get("data").is_none() && body["errors"][0]["message"].is_string(), "{body}");
    for (query, want) in [("{ posts { ", "GRAPHQL_PARSE_FAILED"), ("{ nope }", "GRAPHQL_VALIDATION_FAILED")] {
        let r = send(json!({"query": query}), None).await.expect("request");
        assert_eq!(r.status(), 400, "{query}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(code(&body), want);
    }
    let bad_var = json!({"query": "query($f: Int!) { posts(first: $f) { nextCursor } }", "variables": {"f": "x"}});
    let r = send(bad_var, None).await.expect("request");
    assert_eq!(r.status(), 400, "variables that do not fit are refused before execution");
    let body: Value = r.json().await.expect("json");
    assert_eq!((code(&body), body["errors"][0]["extensions"]["field"].as_str()), ("BAD_USER_INPUT", Some("first")));
    for e in body["errors"].as_array().expect("errors") {
        let c = e["extensions"]["code"].as_str().expect("every error has a code");
        assert!(c != "BAD_USER_INPUT" || e["extensions"]["field"].is_string(), "{e}");
    }
    let r = send(json!({"query": "{ me { id } }"}), Some("application/graphql-response+json")).await.expect("req");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/graphql-response+json");
    let r = send(json!({"query": "{ me { id } }"}), None).await.expect("request");
    assert_eq!(r.headers()["content-type"], "application/json");
    let r = app
        .client
        .post(app.at("/graphql"))
        .bearer_auth(&u.access)
        .header("content-type", "text/plain")
        .body("{ me { id } }")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 415);
}

#[tokio::test]
async fn deep_or_costly_documents_are_refused_before_execution_and_the_page_shape_is_not() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    let shape = "{ posts(first: 50) { items { id title author { id displayName } commentCount
        comments(first: 5) { items { id content author { displayName } createdAt } nextCursor } } nextCursor } }";
    app.gql_ok(&u.access, shape, json!({})).await;
    // 10 levels is within the contract's limit; 11 is not.
    let ten = "{ posts(first: 1) { items { comments(first: 1) { items { post { comments(first: 1) { items { post { id } } } } } } } } }";
    app.gql_ok(&u.access, ten, json!({})).await;
    // 11 levels: post -> comments -> items -> post -> ...
    let deep = "{ posts(first: 1) { items { comments(first: 1) { items { post { comments(first: 1) { items { post \
        { comments(first: 1) { items { id } } } } } } } } } } }";
    let (status, body) = app.gql(&u.access, deep, json!({})).await;
    assert_eq!((status, code(&body)), (400, "QUERY_TOO_COMPLEX"), "{body}");
    assert!(body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("deep")), "refused for depth: {body}");
    let costly = "{ posts(first: 50) { items { comments(first: 50) { items { post { comments(first: 50) { items { id } } } } } } } }";
    let (status, body) = app.gql(&u.access, costly, json!({})).await;
    assert_eq!((status, code(&body)), (400, "QUERY_TOO_COMPLEX"), "{body}");
    let before = app.state.db.statements_sent();
    let _ = app.gql(&u.access, costly, json!({})).await;
    assert_eq!(app.state.db.statements_sent(), before, "nothing was executed");
}

#[tokio::test]
async fn introspection_is_off_in_production_only() {
    let q = "{ __schema { queryType { name } } }";
    let dev = spawn_app().await;
    let u = dev.new_user().await;
    assert_eq!(dev.gql_ok(&u.access, q, json!({})).await["__schema"]["queryType"]["name"], "Query");
    let prod = spawn_with(
        Options::default().env("APP_ENV", "production").env("JWT_SECRET", "a-production-secret-of-at-least-32-bytes!"),
    )
    .await;
    let u = prod.new_user().await;
    let (status, body) = prod.gql(&u.access, q, json!({})).await;
    assert!(status == 400 || body["data"]["__schema"].is_null(), "introspection answered: {body}");
}

/// Rule 1: walking by nextCursor while posts are created returns no post
/// twice and skips none that existed when the walk began.
#[tokio::test]
async fn paging_is_stable_while_posts_are_created() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    let mut existing = Vec::new();
    for i in 0..23 {
        existing.push(app.new_post(&u.access, &format!("old {i}")).await);
    }
    let mut seen = Vec::new();
    let mut after = Value::Null;
    for step in 0.. {
        let d = app.gql_ok(&u.access, PAGE, json!({"first": 5, "after": after})).await;
        for p in d["posts"]["items"].as_array().expect("items") {
            seen.push(p["id"].as_str().expect("id").to_owned());
        }
        // Two new posts between every page: newer than anything walked.
        app.new_post(&u.access, &format!("new {step}a")).await;
        app.new_post(&u.access, &format!("new {step}b")).await;
        after = d["posts"]["nextCursor"].clone();
        if after.is_null() {
            break;
        }
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no post twice");
    for id in &existing {
        assert!(seen.contains(id), "post {id} skipped");
    }
}

/// Rule 2: pages are shared and cached, and once a mutation has answered no
/// later query of anyone returns the state before it, while readers race
/// the writer.
#[tokio::test]
async fn the_shared_page_cache_reads_every_answered_write() {
    let app = Arc::new(spawn_app().await);
    let (writer, reader) = (app.new_user().await, app.new_user().await);
    let post = app.new_post(&writer.access, "counted").await;
    let q = "{ posts(first: 5) { items { id commentCount } } }";
    app.gql_ok(&reader.access, q, json!({})).await;
    let hits = app.metric("cache_requests_total{cache=\"posts\",result=\"hit\"}").await;
    app.gql_ok(&reader.access, q, json!({})).await;
    assert!(app.metric("cache_requests_total{cache=\"posts\",result=\"hit\"}").await > hits, "shared page cached");

    let acked = Arc::new(AtomicI64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (app, acked, done, token, post) =
            (app.clone(), acked.clone(), done.clone(), reader.access.clone(), post.clone());
        readers.push(tokio::spawn(async move {
            let mut checks = 0;
            while !done.load(Ordering::SeqCst) {
                let floor = acked.load(Ordering::SeqCst);
                let d = app.gql_ok(&token, q, json!({})).await;
                let count = d["posts"]["items"]
                    .as_array()
                    .and_then(|items| items.iter().find(|p| p["id"] == post.as_str()))
                    .map(|p| p["commentCount"].as_i64().expect("count"))
                    .expect("the post is on the page");
                assert!(count >= floor, "read {count} comments after {floor} were acknowledged");
                checks += 1;
            }
            checks
        }));
    }
    let add = "mutation($p: ID!) { addComment(input: {postId: $p, content: \"c\"}) { id } }";
    for n in 1..=30 {
        app.gql_ok(&writer.access, add, json!({"p": post})).await;
        acked.store(n, Ordering::SeqCst);
    }
    done.store(true, Ordering::SeqCst);
    let mut checks = 0;
    for r in readers {
        checks += r.await.expect("reader");
    }
    assert!(checks > 30, "readers raced the writer ({checks} reads)");
}

/// Rule 4: a page of posts with authors, counts and first comments costs a
/// fixed number of statements, whatever its size.
#[tokio::test]
async fn a_page_costs_the_same_statements_at_10_and_50_posts() {
    let app = spawn_with(Options::default().env("CACHE_BACKEND", "off")).await;
    let u = app.new_user().await;
    let add = "mutation($p: ID!) { addComment(input: {postId: $p, content: \"c\"}) { id } }";
    for i in 0..50 {
        let id = app.new_post(&u.access, &format!("p{i}")).await;
        for _ in 0..2 {
            app.gql_ok(&u.access, add, json!({"p": id})).await;
        }
    }
    let mut cost = Vec::new();
    for first in [10, 50] {
        let before = app.state.db.statements_sent();
        let d = app.gql_ok(&u.access, PAGE, json!({"first": first})).await;
        cost.push(app.state.db.statements_sent() - before);
        let items = d["posts"]["items"].as_array().expect("items");
        assert_eq!(items.len(), first as usize);
        assert!(items.iter().all(|p| p["comments"]["items"].as_array().map(Vec::len) == Some(2)));
    }
    assert_eq!(cost[0], cost[1], "statements for 10 and 50 posts: {cost:?}");
    assert!(cost[1] <= 2, "the page and its comments: {cost:?}");
}

#[tokio::test]
async fn operations_are_counted_by_name_type_and_result() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    app.gql_ok(&u.access, PAGE, json!({"first": 1})).await;
    let _ = app.gql(&u.access, "mutation Nope { deletePost(id: \"777\") }", json!({})).await;
    assert_eq!(app.metric("graphql_operations_total{operation=\"Page\",result=\"ok\",type=\"query\"}").await, 1.0);
    assert_eq!(
        app.metric("graphql_operations_total{operation=\"Nope\",result=\"error\",type=\"mutation\"}").await,
        1.0
    );
}
