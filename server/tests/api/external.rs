//! External identity providers (API.md, "External identity providers")
//! against a real OpenID provider: `oidc-provider` from npm, started on
//! loopback by [`Provider`] (server/tests/oidc/provider.mjs). Its access
//! tokens come from its token endpoint (client credentials, JWT format via
//! resource indicators); tokens in Cognito's and Entra ID's shapes, and
//! broken ones, are signed with its own keys by its `/test/mint`.

use crate::helpers::*;
use base64::Engine;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, BufReader};

const AUDIENCE: &str = "urn:tollgate:api";

/// A running `oidc-provider` on loopback. Killed when dropped.
pub struct Provider {
    pub issuer: String,
    pub port: u16,
    keys: std::sync::Arc<KeyFiles>,
    child: Option<tokio::process::Child>,
    http: reqwest::Client,
}

/// The provider's private key files, removed when the last restart of it
/// is gone.
struct KeyFiles(PathBuf);

impl KeyFiles {
    fn current(&self) -> PathBuf {
        self.0.clone()
    }
    fn rotated(&self) -> PathBuf {
        self.0.with_extension("rotated.json")
    }
}

impl Drop for KeyFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.current());
        let _ = std::fs::remove_file(self.rotated());
    }
}

fn provider_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

impl Provider {
    /// Started with new keys on a free port.
    pub async fn start() -> Self {
        let keys = std::env::temp_dir().join(format!("tollgate-oidc-{:016x}.json", rand::random::<u64>()));
        let keys = std::sync::Arc::new(KeyFiles(keys));
        let file = keys.current();
        Self::start_on(0, keys, file).await
    }

    async fn start_on(port: u16, keys: std::sync::Arc<KeyFiles>, file: PathBuf) -> Self {
        let dir = provider_dir();
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "the test OpenID provider is not installed: run scripts/test.sh, or `npm ci` in {}",
            dir.display()
        );
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("provider.mjs"))
            .args(["--port", &port.to_string(), "--keys"])
            .arg(&file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node is installed (scripts/test.sh installs it)");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the OpenID provider started within 20 s")
            .expect("read")
            .expect("the OpenID provider printed its address");
        let issuer = line.strip_prefix("listening ").expect("listening URL").to_owned();
        let port = issuer.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        Self { issuer, port, keys, child: Some(child), http: reqwest::Client::new() }
    }

    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
            let _ = c.wait().await;
        }
    }

    /// Back on the same port with new keys (a key rotation).
    pub async fn rotate(&mut self) {
        self.stop().await;
        let file = self.keys.rotated();
        *self = Self::start_on(self.port, self.keys.clone(), file).await;
    }

    /// An access token from the token endpoint (client credentials; `sub`
    /// is the client id).
    pub async fn token(&self, client: &str) -> String {
        let r = self
            .http
            .post(format!("{}/token", self.issuer))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "client_credentials")
                    .append_pair("client_id", client)
                    .append_pair("client_secret", &format!("{client}-secret"))
                    .append_pair("resource", AUDIENCE)
                    .finish(),
            )
            .send()
            .await
            .expect("token endpoint");
        assert_eq!(r.status(), 200, "token endpoint: {}", r.text().await.unwrap_or_default());
        r.json::<Value>().await.expect("json")["access_token"].as_str().expect("access_token").to_owned()
    }

    /// `claims` signed with this provider's `alg` key; `iss` and `iat`
    /// default to this provider and now, a null removes a claim.
    pub async fn mint(&self, alg: &str, claims: Value, header: Value) -> String {
        let r = self
            .http
            .post(format!("{}/test/mint", self.issuer))
            .json(&json!({"alg": alg, "claims": claims, "header": header}))
            .send()
            .await
            .expect("mint");
        assert_eq!(r.status(), 200, "mint: {}", r.text().await.unwrap_or_default());
        r.json::<Value>().await.expect("json")["token"].as_str().expect("token").to_owned()
    }
}

async fn app_for(p: &Provider, extra: &[(&str, &str)]) -> TestApp {
    let mut o = Options::default().env("OIDC_ISSUER", &p.issuer).env("OIDC_AUDIENCE", AUDIENCE);
    for (k, v) in extra {
        o = o.env(k, v);
    }
    spawn_with(o).await
}

fn entra_claims(sub: &str) -> Value {
    json!({"sub": sub, "aud": AUDIENCE, "exp": now() + 600, "tid": "9188040d-6c67-4c5b-b112-36a304b66dad",
           "ver": "2.0", "oid": format!("oid-{sub}"), "jti": format!("j-{}", rand::random::<u64>())})
}

async fn status_of(app: &TestApp, path: &str, token: &str) -> u16 {
    app.get(path, token).await.status().as_u16()
}

/// Waits for the next second of the clock, so a token minted now has an
/// `iat` after everything that happened before.
async fn next_second() {
    let s = now();
    while now() == s {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn provider_tokens_work_beside_local_ones_and_make_a_local_user() {
    let p = Provider::start().await;
    let app = app_for(&p, &[]).await; // keys found through discovery
    let token = p.token("tg-user-1").await;
    let me = app.get("/me", &token).await;
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.expect("json");
    assert_eq!((me["issuer"].as_str(), me["subject"].as_str()), (Some(p.issuer.as_str()), Some("tg-user-1")));
    assert_eq!(
        (me["email"].clone(), me["role"].as_str(), me["status"].as_str()),
        (Value::Null, Some("user"), Some("active"))
    );
    let task = app.create_task(&token, "from the provider").await;
    assert_eq!(task["userId"], me["id"]);
    let list: Value = app.get("/tasks", &token).await.json().await.expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    // A second token of the same subject is the same user.
    let again: Value = app.get("/me", &p.token("tg-user-1").await).await.json().await.expect("json");
    assert_eq!(again["id"], me["id"]);
    // Local accounts keep working beside the provider.
    let local = app.new_user().await;
    assert_eq!(status_of(&app, "/me", &local.access).await, 200);
    // The provider's token is not a refresh token.
    assert_eq!(app.refresh(&token).await.status(), 401);
    let metrics = app.client.get(app.at("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("jwks_fetches_total{result=\"ok\"} "), "{metrics}");
    assert!(!metrics.contains("jwks_fetches_total{result=\"ok\"} 0"), "at least one fetch");
}

#[tokio::test]
async fn cognito_and_entra_shaped_tokens_with_their_settings() {
    let p = Provider::start().await;
    // Cognito: no `aud`; `client_id` is the audience; `token_use` required;
    // groups in `cognito:groups`. Keys from OIDC_JWKS_URL.
    let jwks = format!("{}/jwks", p.issuer);
    let cognito = app_for(
        &p,
        &[
            ("OIDC_AUDIENCE", "4e1c9dq2s0example"),
            ("OIDC_JWKS_URL", &jwks),
            ("OIDC_REQUIRED_CLAIMS", "token_use=access"),
            ("OIDC_ADMIN_GROUP", "admins"),
        ],
    )
    .await;
    let shape = |groups: Value, token_use: &str, client: &str| {
        json!({"sub": "c0ffee00-1111-2222-3333-444455556666", "client_id": client, "token_use": token_use,
               "username": "alice", "scope": "aws.cognito.signin.user.admin", "exp": now() + 600,
               "auth_time": now(), "cognito:groups": groups, "jti": format!("j-{}", rand::random::<u64>())})
    };
    let admin = p.mint("RS256", shape(json!(["admins"]), "access", "4e1c9dq2s0example"), json!({})).await;
    assert_eq!(status_of(&cognito, "/admin/tasks", &admin).await, 200);
    let me: Value = cognito.get("/me", &admin).await.json().await.expect("json");
    assert_eq!(me["role"], "admin");
    let user = p.mint("RS256", shape(json!(["readers"]), "access", "4e1c9dq2s0example"), json!({})).await;
    assert_eq!(status_of(&cognito, "/tasks", &user).await, 200);
    assert_eq!(status_of(&cognito, "/admin/tasks", &user).await, 403);
    let id_token = p.mint("RS256", shape(json!([]), "id", "4e1c9dq2s0example"), json!({})).await;
    assert_eq!(status_of(&cognito, "/tasks", &id_token).await, 401, "token_use=id is not an access token");
    let other_client = p.mint("RS256", shape(json!([]), "access", "another-client"), json!({})).await;
    assert_eq!(status_of(&cognito, "/tasks", &other_client).await, 401);

    // Entra ID: `aud`, `tid`, `ver`, `oid`; app roles in `roles`; ES256
    // and PS256 keys too.
    let entra = app_for(&p, &[("OIDC_ADMIN_GROUP", "Tasks.Admin")]).await;
    let mut claims = entra_claims("entra-user");
    claims["roles"] = json!(["Tasks.Admin"]);
    for alg in ["RS256", "ES256", "PS256"] {
        let t = p.mint(alg, claims.clone(), json!({})).await;
        assert_eq!(status_of(&entra, "/admin/tasks", &t).await, 200, "{alg}");
    }
    let mut wrong_aud = entra_claims("entra-user");
    wrong_aud["aud"] = json!("api://someone-else");
    assert_eq!(status_of(&entra, "/tasks", &p.mint("RS256", wrong_aud, json!({})).await).await, 401);
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn every_refusal_of_the_contract_is_a_401() {
    let p = Provider::start().await;
    let app = app_for(&p, &[]).await;
    let good = p.mint("RS256", entra_claims("s"), json!({})).await;
    assert_eq!(status_of(&app, "/tasks", &good).await, 200);
    let mut cases: Vec<(&str, String)> = Vec::new();
    // alg none, with the provider's issuer.
    let payload = good.split('.').nth(1).expect("payload").to_owned();
    cases.push(("alg none", format!("{}.{payload}.", b64(&json!({"alg": "none", "typ": "JWT"})))));
    // HS256 signed with the server's own secret, claiming the provider:
    // algorithm confusion must not make it one of ours.
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iss": p.issuer, "sub": "1", "sid": "1", "jti": "x", "iat": now(), "exp": now() + 60,
                "typ": "access", "role": "admin", "aud": AUDIENCE}),
        &jsonwebtoken::EncodingKey::from_secret(tollgate::config::DEV_JWT_SECRET.as_bytes()),
    )
    .expect("sign");
    cases.push(("HS256 claiming the provider", hs));
    // A wrong signature: another token's signature on this payload.
    let other = p.mint("RS256", entra_claims("t"), json!({})).await;
    let sig = other.rsplit('.').next().expect("sig");
    let head = good.rsplit_once('.').expect("dots").0;
    cases.push(("bad signature", format!("{head}.{sig}")));
    // The ES256 key's kid with an RS256 header: the key's algorithm is pinned.
    let es = p.mint("ES256", entra_claims("s"), json!({})).await;
    let es_kid = serde_json::from_slice::<Value>(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(es.split('.').next().expect("h")).expect("b64"),
    )
    .expect("header")["kid"]
        .as_str()
        .expect("kid")
        .to_owned();
    cases.push(("RS256 under an ES256 key", p.mint("RS256", entra_claims("s"), json!({"kid": es_kid})).await));
    cases.push(("unknown kid", p.mint("RS256", entra_claims("s"), json!({"kid": "nobody"})).await));
    let with = |k: &str, v: Value| {
        let mut c = entra_claims("s");
        c[k] = v;
        c
    };
    for (name, claims) in [
        ("expired", with("exp", json!(now() - 1))),
        ("not yet valid", with("nbf", json!(now() + 600))),
        ("no iat", with("iat", Value::Null)),
        ("no sub", with("sub", Value::Null)),
        ("no exp", with("exp", Value::Null)),
        ("wrong audience", with("aud", json!("urn:other"))),
        ("longer than a day", with("exp", json!(now() + 90_000))),
    ] {
        cases.push((name, p.mint("RS256", claims, json!({})).await));
    }
    // Another issuer is not the provider: it is checked as ours and fails.
    cases.push(("another issuer", p.mint("RS256", with("iss", json!("https://evil.example")), json!({})).await));
    for (name, token) in &cases {
        let r = app.get("/tasks", token).await;
        assert_eq!(r.status(), 401, "{name}");
        assert!(r.headers().contains_key("www-authenticate"), "{name}");
    }
    // Within the 60 s leeway, nbf is fine.
    let near = p.mint("RS256", with("nbf", json!(now() + 30)), json!({})).await;
    assert_eq!(status_of(&app, "/tasks", &near).await, 200);
}

#[tokio::test]
async fn bans_logout_and_logout_all_refuse_provider_tokens_at_once() {
    let p = Provider::start().await;
    let app = app_for(&p, &[]).await;
    let admin = app.admin().await;
    let first = p.token("tg-user-2").await;
    let me: Value = app.get("/me", &first).await.json().await.expect("json");
    let uid = me["id"].as_i64().expect("id");
    let second = p.token("tg-user-2").await;
    assert_eq!(status_of(&app, "/tasks", &second).await, 200);

    // Ban: every token of the subject, fresh ones included.
    assert_eq!(app.set_status(&admin, uid, "banned").await.status(), 200);
    assert_eq!(status_of(&app, "/tasks", &first).await, 401);
    assert_eq!(status_of(&app, "/tasks", &p.token("tg-user-2").await).await, 401, "issued while banned");
    // Re-activation: tokens from before it (or its second) stay refused.
    assert_eq!(app.set_status(&admin, uid, "active").await.status(), 200);
    assert_eq!(status_of(&app, "/tasks", &first).await, 401);
    assert_eq!(status_of(&app, "/tasks", &second).await, 401);
    // The provider's clock is this machine's: from the next second on, its
    // tokens are issued after the change.
    next_second().await;
    let fresh = p.token("tg-user-2").await;
    assert_eq!(status_of(&app, "/tasks", &fresh).await, 200, "a token issued after re-activation");

    // Logout ends that token only (by jti).
    let other = p.token("tg-user-2").await;
    assert_eq!(app.post_empty("/auth/logout", &fresh).await.status(), 204);
    assert_eq!(status_of(&app, "/tasks", &fresh).await, 401);
    assert_eq!(status_of(&app, "/tasks", &other).await, 200);
    // A token without jti is ended by its own text.
    let no_jti = |n: i64| json!({"sub": "tg-user-2", "aud": AUDIENCE, "exp": now() + 600 + n});
    let (a, b) = (p.mint("RS256", no_jti(0), json!({})).await, p.mint("RS256", no_jti(1), json!({})).await);
    assert_eq!(app.post_empty("/auth/logout", &a).await.status(), 204);
    assert_eq!(status_of(&app, "/tasks", &a).await, 401);
    assert_eq!(status_of(&app, "/tasks", &b).await, 200);

    // Logout-all: every token issued up to that second.
    assert_eq!(app.post_empty("/auth/logout-all", &other).await.status(), 204);
    for t in [&other, &b] {
        assert_eq!(status_of(&app, "/tasks", t).await, 401);
    }
    next_second().await;
    assert_eq!(status_of(&app, "/tasks", &p.token("tg-user-2").await).await, 200, "a later token works");
    let metrics = app.client.get(app.at("/metrics")).send().await.expect("m").text().await.expect("t");
    assert!(!metrics.contains("external_token_checks_total{result=\"revoked\"} 0"), "{metrics}");
}

#[tokio::test]
async fn redis_losing_its_state_loses_no_revocation_of_provider_tokens() {
    let p = Provider::start().await;
    let mut app = spawn_with(
        Options::default().redis(RedisChoice::Private).env("OIDC_ISSUER", &p.issuer).env("OIDC_AUDIENCE", AUDIENCE),
    )
    .await;
    let admin = app.admin().await;
    let banned = p.token("tg-user-1").await;
    let uid = app.get("/me", &banned).await.json::<Value>().await.expect("json")["id"].as_i64().expect("id");
    let logged_out = p.token("tg-user-3").await;
    let kept = p.token("tg-user-3").await;
    assert_eq!(status_of(&app, "/tasks", &kept).await, 200);
    // Snapshot before the revocations, then revoke.
    let redis = app.redis.as_ref().expect("private redis");
    let _: String = redis.cmd(&["SAVE"]).await;
    assert_eq!(app.set_status(&admin, uid, "banned").await.status(), 200);
    assert_eq!(app.post_empty("/auth/logout", &logged_out).await.status(), 204);
    for how in ["old snapshot", "flushall"] {
        let redis = app.redis.as_mut().expect("private redis");
        if how == "old snapshot" {
            redis.restart_from_snapshot().await;
        } else {
            let _: String = redis.cmd(&["FLUSHALL"]).await;
        }
        // From PostgreSQL while Redis cannot vouch for itself...
        assert_eq!(status_of(&app, "/tasks", &banned).await, 401, "{how}: banned");
        assert_eq!(status_of(&app, "/tasks", &logged_out).await, 401, "{how}: logged out");
        // ... then from the rebuilt Redis, which must hold both.
        let from_redis = r#"revocation_checks_total{result="allowed",source="redis"}"#;
        let before = app.metric(from_redis).await;
        let app_ref = &app;
        let kept_ref = &kept;
        let rebuilt = eventually(Duration::from_secs(10), || async move {
            status_of(app_ref, "/tasks", kept_ref).await == 200 && app_ref.metric(from_redis).await > before
        })
        .await;
        assert!(rebuilt, "{how}: Redis rebuilt and trusted again");
        let refused_by_redis = r#"revocation_checks_total{result="revoked",source="redis"}"#;
        let refused = app.metric(refused_by_redis).await;
        assert_eq!(status_of(&app, "/tasks", &banned).await, 401, "{how}: banned, from Redis");
        assert_eq!(status_of(&app, "/tasks", &logged_out).await, 401, "{how}: logged out, from Redis");
        assert_eq!(app.metric(refused_by_redis).await, refused + 2.0, "{how}: Redis answered both");
    }
}

#[tokio::test]
async fn key_rotation_and_a_provider_outage() {
    let mut p = Provider::start().await;
    let app = app_for(&p, &[]).await;
    let unused = p.token("tg-user-1").await; // signed with a key we will know
    let old_key = p.token("tg-user-1").await; // presented only after the rotation
    let first = p.token("tg-user-1").await;
    assert_eq!(status_of(&app, "/tasks", &first).await, 200);
    let started = Instant::now();

    // Down: keys already known keep working.
    p.stop().await;
    assert_eq!(status_of(&app, "/tasks", &unused).await, 200, "a known key while the provider is down");

    // A key we do not know, while the provider is down: 503 with
    // Retry-After once no fetch has succeeded for 10 s, never an accept.
    let mut other = Provider::start().await;
    let mut claims = entra_claims("rotated");
    claims["iss"] = json!(p.issuer);
    let foreign = other.mint("RS256", claims, json!({})).await;
    other.stop().await;
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(started.elapsed()) + Duration::from_millis(200)).await;
    let r = app.get("/tasks", &foreign).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));

    // Back with rotated keys: the next unknown kid (10 s after the last
    // try) fetches them; tokens of the removed key no longer verify.
    p.rotate().await;
    let new = p.token("tg-user-1").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = 0;
    while Instant::now() < deadline {
        last = status_of(&app, "/tasks", &new).await;
        if last == 200 {
            break;
        }
        assert_eq!(last, 503, "until the keys are fetched again");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(last, 200, "rotated keys fetched without a restart");
    // The provider no longer publishes the old key: its tokens fail (401,
    // keys were fetched just now), unless verified before (`unused` was).
    assert_eq!(status_of(&app, "/tasks", &old_key).await, 401);
    let metrics = app.client.get(app.at("/metrics")).send().await.expect("m").text().await.expect("t");
    assert!(!metrics.contains("jwks_fetches_total{result=\"error\"} 0"), "the outage counted: {metrics}");
}
