//! Data set-up through the public API only, so it works against any
//! deployment: fixed account names, registered if missing (409 is fine),
//! logged in, and topped up to the wanted number of tasks. Running it twice
//! changes nothing the second time, and it leaves the deployment usable.

use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};

/// Password of every load-test account.
pub const PASSWORD: &str = "loadtest-password-1";

/// A logged-in account.
#[derive(Clone, Debug)]
pub struct Account {
    /// Email.
    pub email: String,
    /// User id.
    pub id: i64,
    /// Access token at set-up.
    pub access: String,
    /// Refresh token at set-up.
    pub refresh: String,
}

/// The email of account `i` of `kind` (`user`, `victim`).
pub fn email(kind: &str, i: usize) -> String {
    format!("loadtest-{kind}-{i}@tollgate-loadtest.example")
}

/// Whether an access token expires within a tenth of its lifetime (at
/// least 5 s): time to renew it. An unreadable token counts as expiring.
pub fn expires_soon(token: &str) -> bool {
    use base64::Engine as _;
    let claims = token
        .split('.')
        .nth(1)
        .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let Some((iat, exp)) = claims.and_then(|c| Some((c["iat"].as_i64()?, c["exp"].as_i64()?))) else {
        return !token.is_empty();
    };
    let now = chrono::Utc::now().timestamp();
    exp - now <= ((exp - iat) / 10).max(5)
}

/// An API client for set-up.
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build()?)
}

/// Logs in; (access, refresh, body).
pub async fn login(
    client: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<(String, String)> {
    let r = client
        .post(format!("{base}/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .with_context(|| format!("POST {base}/auth/login"))?;
    let status = r.status();
    if !status.is_success() {
        bail!("login of {email} answered {status}: {}", r.text().await.unwrap_or_default());
    }
    let v: Value = r.json().await?;
    let get = |k: &str| v[k].as_str().map(str::to_owned).with_context(|| format!("login answer has no {k}"));
    Ok((get("access_token")?, get("refresh_token")?))
}

async fn one(client: &reqwest::Client, base: &str, email: String, tasks: usize) -> anyhow::Result<Account> {
    let r = client
        .post(format!("{base}/auth/register"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .with_context(|| format!("POST {base}/auth/register"))?;
    if !(r.status().is_success() || r.status().as_u16() == 409) {
        bail!("register of {email} answered {}: {}", r.status(), r.text().await.unwrap_or_default());
    }
    let (access, refresh) = login(client, base, &email, PASSWORD).await?;
    let id = seed(client, base, &access, &email, tasks).await?;
    Ok(Account { email, id, access, refresh })
}

/// The user id behind `access` (`/me`), after topping its tasks up to
/// `tasks`; `who` names the account in errors.
async fn seed(client: &reqwest::Client, base: &str, access: &str, who: &str, tasks: usize) -> anyhow::Result<i64> {
    let me = client.get(format!("{base}/me")).bearer_auth(access).send().await?;
    let status = me.status();
    if !status.is_success() {
        bail!("GET /me of {who} answered {status}: {}", me.text().await.unwrap_or_default());
    }
    let id = me.json::<Value>().await?["id"].as_i64().context("/me has no id")?;
    if tasks > 0 {
        let have: Vec<Value> = client
            .get(format!("{base}/tasks?limit=100"))
            .bearer_auth(access)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        for i in have.len()..tasks.min(100) {
            client
                .post(format!("{base}/tasks"))
                .bearer_auth(access)
                .json(&json!({"title": format!("load-test task {i}"), "description": "seeded by tollgate-loadtest"}))
                .send()
                .await?
                .error_for_status()
                .with_context(|| format!("seeding tasks of {who}"))?;
        }
    }
    Ok(id)
}

/// One account per identity-provider access token (its first request
/// creates the server's local user), each with `tasks` tasks, 8 at a time.
/// `email` is `external-N` (the token's place in the list): nothing logs
/// in to these accounts.
pub async fn external_accounts(
    client: &reqwest::Client,
    base: &str,
    tokens: Vec<String>,
    tasks: usize,
) -> anyhow::Result<Vec<Account>> {
    let results: Vec<anyhow::Result<Account>> = stream::iter(tokens.into_iter().enumerate().map(|(i, access)| {
        let email = format!("external-{i}");
        async move {
            let id = seed(client, base, &access, &email, tasks).await?;
            Ok(Account { email, id, access, refresh: String::new() })
        }
    }))
    .buffered(8)
    .collect()
    .await;
    results.into_iter().collect()
}

/// `n` accounts of `kind`, each with `tasks` tasks, set up 8 at a time.
pub async fn accounts(
    client: &reqwest::Client,
    base: &str,
    kind: &str,
    n: usize,
    tasks: usize,
) -> anyhow::Result<Vec<Account>> {
    let results: Vec<anyhow::Result<Account>> =
        stream::iter((0..n).map(|i| one(client, base, email(kind, i), tasks))).buffered(8).collect().await;
    results.into_iter().collect()
}

/// Sets a user's status as the admin.
pub async fn set_status(
    client: &reqwest::Client,
    base: &str,
    admin: &str,
    uid: i64,
    status: &str,
) -> anyhow::Result<()> {
    let r = client
        .patch(format!("{base}/admin/users/{uid}/status"))
        .bearer_auth(admin)
        .json(&json!({"status": status}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("status change of user {uid} to {status} answered {}", r.status());
    }
    Ok(())
}
