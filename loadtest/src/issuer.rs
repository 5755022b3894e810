//! Provider tokens for the `external-read` scenario.
//!
//! Against a server the harness starts, the harness is the identity
//! provider: it serves discovery and a JWKS of its test keys
//! (loadtest/fixtures/oidc, public by design) on a loopback port, starts the
//! server with `OIDC_ISSUER` pointing there, and mints Cognito-shaped
//! RS256 access tokens (no `aud`; `client_id`, `token_use=access`,
//! `username`), so the run exercises discovery, the JWKS fetch and the
//! Cognito rules. Against a deployment, the tokens are the user's own
//! provider's, read from `--external-tokens FILE` (one per line).

use anyhow::Context;
use std::time::Duration;
use tollgate::http::server::{ServeOptions, serve};

const JWKS: &str = include_str!("../fixtures/oidc/jwks.json");
const RS256_DER: &[u8] = include_bytes!("../fixtures/oidc/rs256.der");
/// The `client_id` of the minted tokens, and the server's `OIDC_AUDIENCE`.
pub const CLIENT_ID: &str = "tollgate-loadtest";
/// How long a minted token lives: longer than any bounded run.
const LIFETIME_SECS: i64 = 6 * 3600;

/// The harness's identity provider on loopback; stops when dropped.
pub struct TestIssuer {
    /// Its `iss` (and base URL).
    pub url: String,
    key: jsonwebtoken::EncodingKey,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestIssuer {
    /// Serves discovery and the JWKS on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the test issuer")?;
        let url = format!("http://{}", listener.local_addr()?);
        let discovery = serde_json::json!({"issuer": url, "jwks_uri": format!("{url}/jwks")}).to_string();
        let opts = ServeOptions {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 64,
            shutdown_grace: Duration::from_secs(1),
        };
        let handler = move |req: hyper::Request<hyper::body::Incoming>| {
            let body = match req.uri().path() {
                "/.well-known/openid-configuration" => Some(discovery.clone()),
                "/jwks" => Some(JWKS.to_owned()),
                _ => None,
            };
            async move {
                let found = body.is_some();
                let mut r = hyper::Response::new(tollgate::http::Body::from(body.unwrap_or_default()));
                if !found {
                    *r.status_mut() = hyper::StatusCode::NOT_FOUND;
                }
                let json = hyper::header::HeaderValue::from_static("application/json");
                r.headers_mut().insert(hyper::header::CONTENT_TYPE, json);
                r
            }
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, opts, handler, async {
            let _ = stopped.await;
        }));
        let key = jsonwebtoken::EncodingKey::from_rsa_der(RS256_DER);
        Ok(Self { url, key, stop: Some(stop) })
    }

    /// The server settings that make it trust this issuer, Cognito-style.
    pub fn server_env(&self) -> Vec<(String, String)> {
        [("OIDC_ISSUER", self.url.as_str()), ("OIDC_AUDIENCE", CLIENT_ID), ("OIDC_REQUIRED_CLAIMS", "token_use=access")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// A Cognito-shaped access token of `subject`.
    pub fn mint(&self, subject: &str) -> anyhow::Result<String> {
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "iss": self.url, "sub": subject, "client_id": CLIENT_ID, "token_use": "access",
            "username": subject, "scope": "tasks", "iat": now, "auth_time": now, "exp": now + LIFETIME_SECS,
            "jti": format!("{:032x}", rand::random::<u128>()),
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some("loadtest-rs256".into());
        jsonwebtoken::encode(&header, &claims, &self.key).context("signing a provider token")
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// The provider access tokens in `path`: one per line, blank lines and
/// `#` comments skipped.
pub fn read_tokens(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let tokens: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect();
    anyhow::ensure!(!tokens.is_empty(), "{} holds no token", path.display());
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn minted_tokens_verify_against_the_served_keys() {
        let issuer = TestIssuer::start().await.expect("issuer");
        let jwks: serde_json::Value =
            reqwest::get(format!("{}/jwks", issuer.url)).await.expect("jwks").json().await.expect("json");
        let keys = tollgate::auth::external::KeySet::from_jwks(&jwks);
        let cfg = tollgate::config::OidcConfig {
            issuer: issuer.url.clone(),
            audience: CLIENT_ID.into(),
            jwks_url: None,
            required_claims: vec![("token_use".into(), "access".into())],
            admin_group: None,
        };
        let token = issuer.mint("someone").expect("mint");
        let t = keys.verify(&cfg, &token, chrono::Utc::now().timestamp()).expect("verifies");
        assert_eq!(t.subject, "someone");
        let discovery: serde_json::Value = reqwest::get(format!("{}/.well-known/openid-configuration", issuer.url))
            .await
            .expect("d")
            .json()
            .await
            .expect("j");
        assert_eq!(discovery["jwks_uri"], format!("{}/jwks", issuer.url));
    }
}
