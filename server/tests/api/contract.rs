//! Conventions of API.md that every route shares: problem details, 401
//! challenges, content types, sizes, unknown routes, ops routes, metrics,
//! the OpenAPI document.

use crate::helpers::*;
use serde_json::{Value, json};

#[tokio::test]
async fn errors_are_problem_details() {
    let app = spawn_app().await;
    let r = app.client.get(app.at("/nowhere")).send().await.expect("req");
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let v: Value = r.json().await.expect("json");
    for k in ["type", "title", "status", "detail"] {
        assert!(v.get(k).is_some(), "problem has {k}");
    }
    assert_eq!(v["status"], 404);
}

#[tokio::test]
async fn a_known_path_with_another_method_is_405_with_allow() {
    let app = spawn_app().await;
    let r = app.client.put(app.at("/tasks")).send().await.expect("req");
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET, POST, HEAD", "every GET route answers HEAD (API.md)");
}

#[tokio::test]
async fn missing_and_refused_tokens_get_the_bearer_challenge() {
    let app = spawn_app().await;
    let r = app.client.get(app.at("/me")).send().await.expect("req");
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = app.get("/me", "not.a.jwt").await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
    let u = app.new_user().await;
    assert_eq!(app.get("/me", &u.refresh).await.status(), 401, "a refresh token is not an access token");
    let r = app.refresh(&u.access).await;
    assert_eq!(r.status(), 401, "an access token is not a refresh token");
    assert!(r.headers().contains_key("www-authenticate"));
}

#[tokio::test]
async fn tampered_and_unsigned_tokens_are_refused() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    let parts: Vec<&str> = u.access.split('.').collect();
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
    assert_eq!(app.get("/me", &none).await.status(), 401);
    let mut sig = parts[2].to_owned();
    let last = if sig.ends_with('A') { 'B' } else { 'A' };
    sig.pop();
    sig.push(last);
    assert_eq!(app.get("/me", &format!("{}.{}.{sig}", parts[0], parts[1])).await.status(), 401);
    let forged = tollgate::auth::token::Tokens::new(
        b"someone-elses-secret-0123456789ab",
        std::time::Duration::from_secs(60),
        std::time::Duration::from_secs(60),
    )
    .issue(u.id, 1, tollgate::auth::token::Role::Admin, "x".into(), i64::MAX);
    assert_eq!(app.get("/admin/tasks", &forged.access_token).await.status(), 401);
}

#[tokio::test]
async fn bodies_need_json_content_type_and_at_most_64_kib() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(app.at("/auth/register"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 415);
    let r = app
        .client
        .post(app.at("/auth/register"))
        .body(r#"{"email":"a@b.io","password":"12345678"}"#)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 415, "no content type");
    let r = app
        .client
        .post(app.at("/auth/register"))
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"email":"cs@b.io","password":"12345678"}"#)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 201, "charset parameter accepted");
    let huge = json!({"email": "a@b.io", "password": "x".repeat(70 * 1024)});
    assert_eq!(app.post("/auth/register", None, &huge).await.status(), 413);
    let r = app
        .client
        .post(app.at("/auth/register"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_stream(80 * 1024)))
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 413, "chunked body over the limit");
}

#[tokio::test]
async fn an_oversized_body_is_413_even_on_routes_that_ignore_bodies() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    let r = app
        .client
        .post(app.at("/auth/logout"))
        .bearer_auth(&u.access)
        .header("content-type", "application/json")
        .body(vec![b' '; 70 * 1024])
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 413);
    assert_eq!(app.get("/me", &u.access).await.status(), 200, "the logout did not happen");
}

fn futures_stream(n: usize) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::iter((0..n / 1024).map(|_| Ok(vec![b' '; 1024])))
}

#[tokio::test]
async fn malformed_and_unknown_bodies_are_400() {
    let app = spawn_app().await;
    for body in [
        "{",
        "[]",
        "null",
        r#"{"email":"a@b.io","password":"12345678","admin":true}"#,
        r#"{"email":1,"password":"12345678"}"#,
    ] {
        let r = app
            .client
            .post(app.at("/auth/register"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("req");
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    let r = app
        .client
        .post(app.at("/auth/login"))
        .header("content-type", "application/json")
        .body(vec![0xff, 0xfe])
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 400, "invalid UTF-8");
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let r = app
        .client
        .post(app.at("/auth/login"))
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .expect("req");
    assert_eq!(r.status(), 400, "deep nesting");
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    assert_eq!(app.client.get(app.at("/healthz")).send().await.expect("req").status(), 200);
    let r = app.client.get(app.at("/readyz")).send().await.expect("req");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!((v["postgres"].as_str(), v["redis"].as_str()), (Some("up"), Some("up")));
    let u = app.new_user().await;
    app.list(&u.access, "").await;
    let text = app.client.get(app.at("/metrics")).send().await.expect("req").text().await.expect("text");
    for name in [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "cache_requests_total",
        "revocation_checks_total",
        "auth_events_total",
        "dependency_errors_total",
        "pool_connections",
        "password_hash_duration_seconds_bucket",
    ] {
        assert!(text.contains(name), "metrics expose {name}");
    }
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/tasks",status="200"} 1"#),
        "labelled by template"
    );
    assert!(app.metric(r#"auth_events_total{event="login",outcome="success"}"#).await >= 1.0);
    assert!(app.metric("password_hash_duration_seconds_count").await >= 2.0);
}

/// A token signed with the server's (development) key whose header and
/// payload are whatever the test wants: only the claim checks can refuse it.
fn forge(header: &str, payload: &str) -> String {
    use base64_url as b64;
    let h = b64(header.as_bytes());
    let p = b64(payload.as_bytes());
    let key = jsonwebtoken::EncodingKey::from_secret(tollgate::config::DEV_JWT_SECRET.as_bytes());
    let sig =
        jsonwebtoken::crypto::sign(format!("{h}.{p}").as_bytes(), &key, jsonwebtoken::Algorithm::HS256).expect("sign");
    format!("{h}.{p}.{sig}")
}

fn base64_url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn signed_tokens_with_bad_headers_or_claims_are_refused() {
    let app = spawn_app().await;
    let u = app.new_user().await;
    let me = app.get("/me", &u.access).await;
    assert_eq!(me.status(), 200);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    // The user's live session: every case below is valid but for its one defect.
    let sid = app.state.tokens.verify(&u.access, tollgate::auth::token::TokenType::Access).expect("valid").session_id;
    let claims = |extra: &str| {
        format!(
            r#"{{"sub":"{}","sid":"{sid}","jti":"j","iat":{now},"exp":{},"typ":"access","role":"user"{extra}}}"#,
            u.id,
            now + 600
        )
    };
    let hs256 = r#"{"alg":"HS256","typ":"JWT"}"#;
    // The control: with nothing wrong, the forged token is accepted, so each
    // 401 below comes from the defect it carries.
    assert_eq!(app.get("/me", &forge(hs256, &claims(""))).await.status(), 200);
    let cases = [
        ("RS256 header (HS/RS confusion)", forge(r#"{"alg":"RS256","typ":"JWT"}"#, &claims(""))),
        ("HS512 header", forge(r#"{"alg":"HS512","typ":"JWT"}"#, &claims(""))),
        ("alg none", forge(r#"{"alg":"none"}"#, &claims(""))),
        ("unknown claim", forge(hs256, &claims(r#","admin":true"#))),
        ("duplicate sub", forge(hs256, &claims(&format!(r#","sub":"{}""#, u.id + 1)))),
        ("missing sid", forge(hs256, &claims("").replace(&format!(r#""sid":"{sid}","#), ""))),
        ("typ refresh", forge(hs256, &claims("").replace("\"access\"", "\"refresh\""))),
        ("sub not a number", forge(hs256, &claims("").replacen(&format!(r#""sub":"{}""#, u.id), r#""sub":"x""#, 1))),
        ("payload not JSON", forge(hs256, "not json")),
        ("10 KiB token", format!("{}.{}.x", "a".repeat(5000), "b".repeat(5000))),
    ];
    for (what, token) in cases {
        let r = app.get("/me", &token).await;
        assert_eq!(r.status(), 401, "{what}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer error=\"invalid_token\"", "{what}");
    }
}

/// The OpenAPI document is public, JSON, 3.1, and lists every route of the
/// contract (the unit tests in `http::openapi` tie it to the route table).
#[tokio::test]
async fn openapi_json_is_served_and_covers_the_contract() {
    let app = spawn_app().await;
    let r = reqwest::get(app.at("/openapi.json")).await.expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc: Value = r.json().await.expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    let routes = [
        ("post", "/auth/register"),
        ("post", "/auth/login"),
        ("post", "/auth/refresh"),
        ("post", "/auth/logout"),
        ("post", "/auth/logout-all"),
        ("get", "/me"),
        ("get", "/tasks"),
        ("post", "/tasks"),
        ("get", "/tasks/{id}"),
        ("patch", "/tasks/{id}"),
        ("delete", "/tasks/{id}"),
        ("get", "/admin/tasks"),
        ("patch", "/admin/users/{id}/status"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
    ];
    for (method, path) in routes {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} is documented");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearerAuth"]["scheme"], "bearer");
    let head = app.client.head(app.at("/openapi.json")).send().await.expect("request");
    assert_eq!(head.status(), 200);
}
