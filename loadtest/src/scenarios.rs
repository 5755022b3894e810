//! The goose scenarios, one per path. Each goose user takes an account
//! (user index modulo the accounts set up) and keeps its tokens in goose
//! session data; requests carry stable names (`GET /tasks`, ...) so the
//! summary and the regression gate compare like with like.

use crate::live::Live;
use crate::setup::{Account, PASSWORD};
use crate::summary::Hist;
use goose::goose::GooseResponse;
use goose::prelude::*;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// One scenario of the registry.
pub struct Def {
    /// Its name on the command line, in `--mix` and in reports.
    pub name: &'static str,
    /// What it measures, for `list` and `--help`.
    pub about: &'static str,
    /// Builds its goose scenario.
    pub build: fn(&Arc<Shared>) -> Scenario,
    /// Whether it needs the ban driver (and admin credentials).
    pub bans: bool,
}

/// Every single-path scenario, declared once: the command line, `--mix`,
/// `list` and the runner all read this. `mixed` combines them by weight.
pub const REGISTRY: &[Def] = &[
    Def { name: "cached-read", about: "GET /tasks served from the cache", build: cached_read, bans: false },
    Def {
        name: "miss-and-write",
        about: "POST, PATCH, DELETE /tasks and the GET after each (a miss)",
        build: miss_and_write,
        bans: false,
    },
    Def {
        name: EXTERNAL_READ,
        about: "GET /tasks from the cache with identity-provider (OIDC) tokens: JWKS-verified, revocation-checked",
        build: external_read,
        bans: false,
    },
    Def { name: "login", about: "POST /auth/login (Argon2id)", build: login_scenario, bans: false },
    Def { name: "refresh", about: "POST /auth/refresh, rotation on every call", build: refresh, bans: false },
    Def {
        name: "graphql-read",
        about: "POST /graphql: a cached page of 20 posts with authors, counts and 3 comments each",
        build: graphql_read,
        bans: false,
    },
    Def {
        name: "graphql-write",
        about: "POST /graphql: createPost, addComment, deletePost (each invalidates the shared page)",
        build: graphql_write,
        bans: false,
    },
    Def {
        name: "revocation",
        about: "victims banned and re-activated under load; counts accepted-after-ban",
        build: revocation,
        bans: true,
    },
];

/// The scenario of cached reads with identity-provider tokens.
pub const EXTERNAL_READ: &str = "external-read";

/// The name of the weighted combination of the registry's scenarios.
pub const MIXED: &str = "mixed";

/// A scenario of the registry by name.
pub fn find(name: &str) -> Option<&'static Def> {
    REGISTRY.iter().find(|d| d.name == name)
}

/// Every runnable name: the registry's, then `mixed`.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|d| d.name).chain([MIXED]).collect()
}

/// The default weights of `mixed`: mostly cached reads, as a task app sees.
pub const DEFAULT_MIX: &[(&str, usize)] = &[("cached-read", 70), ("miss-and-write", 15), ("refresh", 10), ("login", 5)];

/// Per goose user.
#[derive(Clone)]
struct Sess {
    account: usize,
    access: String,
    refresh: String,
    /// When the login that gave `access` answered (revocation scenario).
    obtained: Option<Instant>,
}

/// Shared by every goose user of a run.
pub struct Shared {
    /// Accounts with seeded tasks.
    pub accounts: Vec<Account>,
    /// Accounts the `login` scenario logs in to (empty: `accounts`). Every
    /// login opens a session, and past `MAX_SESSIONS_PER_USER` the server
    /// ends the account's oldest ones, which would include the session
    /// whose token the other scenarios (and `mixed`) use: a run with many
    /// logins then saw its own reads refused, rightly, as 401s.
    pub login_accounts: Vec<Account>,
    /// The revocation scenario's victims and their ban timeline.
    pub victims: Vec<Account>,
    /// Accounts of identity-provider tokens (`external-read`).
    pub external: Vec<Account>,
    /// Per victim.
    pub timeline: Vec<Mutex<Timeline>>,
    /// Requests the contract forbids that were accepted: a banned user's
    /// login or call, or a call with a token issued before a re-activation.
    pub accepted_after_ban: AtomicU64,
    /// Time from each ban's answer to the victim's first 401.
    pub ban_to_401: Mutex<Vec<Duration>>,
    /// Latency per `METHOD NAME` of the scenario running now.
    hists: Mutex<HashMap<String, Hist>>,
    /// Each account's current access token (the open model renews them).
    tokens: Vec<RwLock<String>>,
    /// Progress, the generator's metrics and the timeline.
    pub live: Arc<Live>,
}

/// One victim's current ban cycle.
#[derive(Default)]
pub struct Timeline {
    /// When the latest ban answered.
    pub ban_answered: Option<Instant>,
    /// When the re-activation after it was sent (None while banned).
    pub reactivate_sent: Option<Instant>,
    /// Whether this cycle's first 401 was recorded.
    pub first_401_seen: bool,
}

impl Timeline {
    /// Whether a 200 to a request sent at `sent`, with a token whose login
    /// answered at `issued`, breaks the contract: sent after the ban
    /// answered, and either the user is still banned (rule 1) or the token
    /// was issued before the re-activation (rule 2).
    ///
    /// Only what is certain counts. A login *sent* during the ban but
    /// answered after the re-activation was sent may have created its
    /// session after the re-activation committed (Argon2 takes longer than
    /// the gap): that token is legitimately alive. So a token's age is when
    /// its login answered, and it is known to predate the re-activation
    /// only if that answer came before the re-activation was sent.
    pub fn forbids(&self, sent: Instant, issued: Instant) -> bool {
        self.ban_answered.is_some_and(|a| sent > a) && self.reactivate_sent.is_none_or(|r| issued < r)
    }
}

impl Shared {
    /// State for a run.
    pub fn new(
        accounts: Vec<Account>,
        login_accounts: Vec<Account>,
        victims: Vec<Account>,
        external: Vec<Account>,
        live: Arc<Live>,
    ) -> Arc<Self> {
        let timeline = victims.iter().map(|_| Mutex::new(Timeline::default())).collect();
        let tokens = accounts.iter().map(|a| RwLock::new(a.access.clone())).collect();
        Arc::new(Self {
            accounts,
            login_accounts,
            victims,
            external,
            timeline,
            accepted_after_ban: AtomicU64::new(0),
            ban_to_401: Mutex::new(Vec::new()),
            hists: Mutex::new(HashMap::new()),
            tokens,
            live,
        })
    }

    /// Records one request's latency (and its status, 0 for a transport
    /// error, for the live view).
    pub fn record(&self, key: &str, status: u16, took: Duration) {
        self.live.observe(key, status, took);
        if let Ok(mut h) = self.hists.lock() {
            match h.get_mut(key) {
                Some(hist) => hist.record(took),
                None => {
                    let mut hist = Hist::new();
                    hist.record(took);
                    h.insert(key.to_owned(), hist);
                }
            }
        }
    }

    /// The histograms recorded since the last call (one scenario's).
    pub fn take_hists(&self) -> HashMap<String, Hist> {
        self.hists.lock().map(|mut h| std::mem::take(&mut *h)).unwrap_or_default()
    }

    /// The email the `i`th login logs in to (see `login_accounts`).
    pub fn login_email(&self, i: usize) -> &str {
        let pool = if self.login_accounts.is_empty() { &self.accounts } else { &self.login_accounts };
        pool.get(i % pool.len().max(1)).map_or("", |a| a.email.as_str())
    }

    /// Account `i`'s current access token.
    pub fn access_token(&self, i: usize) -> String {
        self.tokens[i].read().map(|t| t.clone()).unwrap_or_default()
    }

    /// Renews, by a fresh login, every account token about to expire.
    pub async fn renew_tokens(&self, client: &reqwest::Client, base: &str) {
        for (i, a) in self.accounts.iter().enumerate() {
            if crate::setup::expires_soon(&self.access_token(i))
                && let Ok((access, _)) = crate::setup::login(client, base, &a.email, PASSWORD).await
                && let Ok(mut t) = self.tokens[i].write()
            {
                *t = access;
            }
        }
    }
}

type Tx = Box<TransactionError>;

/// Sends one request with a stable name (goose shows it after the method:
/// `GET /tasks`) and optional token and JSON body, and records its latency
/// in the run's histogram of `METHOD NAME` (microseconds, exact enough to
/// merge several generators' runs).
async fn send(
    sh: &Shared,
    user: &mut GooseUser,
    method: GooseMethod,
    path: &str,
    name: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> Result<GooseResponse, Tx> {
    let mut rb = user.get_request_builder(&method, path)?;
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let key = format!("{method} {name}");
    let req = GooseRequest::builder().method(method).path(path).name(name).set_request_builder(rb).build();
    let start = Instant::now();
    let r = user.request(req).await;
    let status = match &r {
        Ok(resp) => status(resp),
        Err(_) => 0,
    };
    sh.record(&key, status, start.elapsed());
    r
}

fn status(r: &GooseResponse) -> u16 {
    r.response.as_ref().map(|r| r.status().as_u16()).unwrap_or(0)
}

fn transaction<F>(shared: &Arc<Shared>, name: &str, f: F) -> Transaction
where
    F: for<'u> Fn(
            Arc<Shared>,
            &'u mut GooseUser,
        ) -> std::pin::Pin<Box<dyn Future<Output = TransactionResult> + Send + 'u>>
        + Send
        + Sync
        + 'static,
{
    let shared = Arc::clone(shared);
    let func: TransactionFunction = Arc::new(move |user| f(Arc::clone(&shared), user));
    Transaction::new(func).set_name(name)
}

/// Takes the account of this goose user, with the tokens set up for it.
fn adopt_account(shared: &Arc<Shared>) -> Transaction {
    transaction(shared, "adopt account", |sh, user| {
        Box::pin(async move {
            let i = user.weighted_users_index % sh.accounts.len().max(1);
            let a = &sh.accounts[i];
            user.set_session_data(Sess {
                account: i,
                access: a.access.clone(),
                refresh: a.refresh.clone(),
                obtained: None,
            });
            Ok(())
        })
    })
    .set_on_start()
}

/// Logs in as this goose user's account: a session of its own (needed
/// where refresh tokens rotate: two users must not share one).
fn own_session(shared: &Arc<Shared>) -> Transaction {
    transaction(shared, "own session", |sh, user| {
        Box::pin(async move {
            let i = user.weighted_users_index % sh.accounts.len().max(1);
            let email = sh.accounts[i].email.clone();
            let (access, refresh) = login(&sh, user, &email).await?.unwrap_or_default();
            user.set_session_data(Sess { account: i, access, refresh, obtained: None });
            Ok(())
        })
    })
    .set_on_start()
}

async fn login(sh: &Shared, user: &mut GooseUser, email: &str) -> Result<Option<(String, String)>, Tx> {
    let r = send(
        sh,
        user,
        GooseMethod::Post,
        "/auth/login",
        "/auth/login",
        None,
        Some(json!({"email": email, "password": PASSWORD})),
    )
    .await?;
    let Ok(resp) = r.response else {
        return Ok(None);
    };
    if !resp.status().is_success() {
        return Ok(None);
    }
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    Ok(Some((
        v["access_token"].as_str().unwrap_or_default().to_owned(),
        v["refresh_token"].as_str().unwrap_or_default().to_owned(),
    )))
}

/// The goose user's access token, renewed by a fresh login when it is
/// about to expire, so runs longer than the access lifetime stay at 200s.
/// (A login, not a refresh: goose users may share an account's session,
/// and two users rotating one refresh token would trip reuse detection.)
async fn token(sh: &Shared, user: &mut GooseUser) -> Result<String, Tx> {
    let Some(s) = user.get_session_data::<Sess>() else { return Ok(String::new()) };
    if !crate::setup::expires_soon(&s.access) {
        return Ok(s.access.clone());
    }
    let email = sh.accounts[s.account].email.clone();
    if let Some((access, refresh)) = login(sh, user, &email).await?
        && let Some(s) = user.get_session_data_mut::<Sess>()
    {
        (s.access, s.refresh) = (access, refresh);
    }
    Ok(user.get_session_data::<Sess>().map(|s| s.access.clone()).unwrap_or_default())
}

/// The hot path: authenticated `GET /tasks` served from the cache.
pub fn cached_read(shared: &Arc<Shared>) -> Scenario {
    scenario!("cached-read").register_transaction(adopt_account(shared)).register_transaction(transaction(
        shared,
        "list tasks",
        |sh, user| {
            Box::pin(async move {
                let t = token(&sh, user).await?;
                send(&sh, user, GooseMethod::Get, "/tasks", "/tasks", Some(&t), None).await?;
                Ok(())
            })
        },
    ))
}

/// The hot path with an identity provider's tokens: the same cached
/// `GET /tasks`, verified against the provider's keys once per token and
/// then from the verified-token cache, revocation-checked every time.
/// Named apart (`/tasks (provider token)`) so `mixed` reports it apart.
pub fn external_read(shared: &Arc<Shared>) -> Scenario {
    let adopt = transaction(shared, "adopt provider account", |sh, user| {
        Box::pin(async move {
            let i = user.weighted_users_index % sh.external.len().max(1);
            let access = sh.external.get(i).map(|a| a.access.clone()).unwrap_or_default();
            user.set_session_data(Sess { account: i, access, refresh: String::new(), obtained: None });
            Ok(())
        })
    })
    .set_on_start();
    scenario!("external-read").register_transaction(adopt).register_transaction(transaction(
        shared,
        "list tasks",
        |sh, user| {
            Box::pin(async move {
                let t = user.get_session_data::<Sess>().map(|s| s.access.clone()).unwrap_or_default();
                send(&sh, user, GooseMethod::Get, "/tasks", "/tasks (provider token)", Some(&t), None).await?;
                Ok(())
            })
        },
    ))
}

/// Writes that invalidate, and the misses that follow them.
pub fn miss_and_write(shared: &Arc<Shared>) -> Scenario {
    scenario!("miss-and-write").register_transaction(adopt_account(shared)).register_transaction(transaction(
        shared,
        "write cycle",
        |sh, user| {
            Box::pin(async move {
                let t = token(&sh, user).await?;
                let r =
                    send(&sh, user, GooseMethod::Post, "/tasks", "/tasks", Some(&t), Some(json!({"title": "load"})))
                        .await?;
                let id = match r.response {
                    Ok(resp) => resp.json::<serde_json::Value>().await.ok().and_then(|v| v["id"].as_i64()),
                    Err(_) => None,
                };
                send(&sh, user, GooseMethod::Get, "/tasks", "/tasks (after write)", Some(&t), None).await?;
                if let Some(id) = id {
                    let path = format!("/tasks/{id}");
                    send(
                        &sh,
                        user,
                        GooseMethod::Patch,
                        &path,
                        "/tasks/{id}",
                        Some(&t),
                        Some(json!({"isCompleted": true})),
                    )
                    .await?;
                    send(&sh, user, GooseMethod::Get, "/tasks", "/tasks (after write)", Some(&t), None).await?;
                    send(&sh, user, GooseMethod::Delete, &path, "/tasks/{id}", Some(&t), None).await?;
                }
                Ok(())
            })
        },
    ))
}

/// The page `graphql-read` asks for.
const POSTS_PAGE: &str = "query Page { posts(first: 20) { items { id title commentCount author { id displayName } \
    comments(first: 3) { items { id content author { displayName } } } } nextCursor } }";

/// One GraphQL operation: its `data`, or a failure when it answered with
/// `errors` (a 200 with errors is not a success) or not at all.
async fn graphql(
    sh: &Shared,
    user: &mut GooseUser,
    name: &str,
    token: &str,
    query: &str,
    variables: serde_json::Value,
) -> Result<Option<serde_json::Value>, Tx> {
    let body = json!({"query": query, "variables": variables});
    let mut r = send(sh, user, GooseMethod::Post, "/graphql", name, Some(token), Some(body)).await?;
    if status(&r) != 200 {
        return Ok(None);
    }
    let v: serde_json::Value = match r.response {
        Ok(resp) => resp.json().await.unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    };
    if v.get("errors").is_some() || v["data"].is_null() {
        let first = v["errors"][0]["extensions"]["code"].as_str().unwrap_or("no data").to_owned();
        user.set_failure(&format!("graphql errors: {first}"), &mut r.request, None, None)?;
        return Ok(None);
    }
    Ok(Some(v["data"].clone()))
}

const CREATE_POST: &str = "mutation($t: String!) { createPost(input: {title: $t, content: \"load\"}) { id } }";
const ADD_COMMENT: &str = "mutation($p: ID!) { addComment(input: {postId: $p, content: \"load\"}) { id } }";

/// A cached page of posts, shared by every user. Each goose user first
/// writes one post with three comments, so the page is full.
pub fn graphql_read(shared: &Arc<Shared>) -> Scenario {
    let seed = transaction(shared, "seed a post", |sh, user| {
        Box::pin(async move {
            let t = token(&sh, user).await?;
            let title = json!({"t": format!("post of user {}", user.weighted_users_index)});
            let created = graphql(&sh, user, "/graphql (createPost)", &t, CREATE_POST, title).await?;
            if let Some(id) = created.as_ref().and_then(|d| d["createPost"]["id"].as_str()).map(str::to_owned) {
                for _ in 0..3 {
                    graphql(&sh, user, "/graphql (addComment)", &t, ADD_COMMENT, json!({ "p": id })).await?;
                }
            }
            Ok(())
        })
    })
    .set_on_start();
    scenario!("graphql-read")
        .register_transaction(adopt_account(shared))
        .register_transaction(seed)
        .register_transaction(transaction(shared, "posts page", |sh, user| {
            Box::pin(async move {
                let t = token(&sh, user).await?;
                graphql(&sh, user, "/graphql (posts page)", &t, POSTS_PAGE, json!({})).await?;
                Ok(())
            })
        }))
}

/// Mutations: each commits and replaces the shared page's tag.
pub fn graphql_write(shared: &Arc<Shared>) -> Scenario {
    scenario!("graphql-write").register_transaction(adopt_account(shared)).register_transaction(transaction(
        shared,
        "write cycle",
        |sh, user| {
            Box::pin(async move {
                let t = token(&sh, user).await?;
                let created =
                    graphql(&sh, user, "/graphql (createPost)", &t, CREATE_POST, json!({"t": "load"})).await?;
                let Some(id) = created.as_ref().and_then(|d| d["createPost"]["id"].as_str()).map(str::to_owned) else {
                    return Ok(());
                };
                graphql(&sh, user, "/graphql (addComment)", &t, ADD_COMMENT, json!({ "p": id })).await?;
                let del = "mutation($p: ID!) { deletePost(id: $p) }";
                graphql(&sh, user, "/graphql (deletePost)", &t, del, json!({ "p": id })).await?;
                Ok(())
            })
        },
    ))
}

/// Password verification: the CPU-bound path.
pub fn login_scenario(shared: &Arc<Shared>) -> Scenario {
    scenario!("login").register_transaction(adopt_account(shared)).register_transaction(transaction(
        shared,
        "login",
        |sh, user| {
            Box::pin(async move {
                let email = sh.login_email(user.weighted_users_index).to_owned();
                login(&sh, user, &email).await?;
                Ok(())
            })
        },
    ))
}

/// Refresh rotation: each goose user rotates its own session's token.
pub fn refresh(shared: &Arc<Shared>) -> Scenario {
    scenario!("refresh").register_transaction(own_session(shared)).register_transaction(transaction(
        shared,
        "rotate",
        |sh, user| {
            Box::pin(async move {
                let rt = user.get_session_data::<Sess>().map(|s| s.refresh.clone()).unwrap_or_default();
                let r = send(
                    &sh,
                    user,
                    GooseMethod::Post,
                    "/auth/refresh",
                    "/auth/refresh",
                    None,
                    Some(json!({"refresh_token": rt})),
                )
                .await?;
                let next = match r.response {
                    Ok(resp) if resp.status().is_success() => {
                        let v: serde_json::Value = resp.json().await.unwrap_or_default();
                        v["refresh_token"].as_str().map(str::to_owned)
                    }
                    _ => None,
                };
                let next = match next {
                    Some(n) => Some(n),
                    // Lost the session (should not happen): start a new one.
                    None => {
                        let i = user.get_session_data::<Sess>().map(|s| s.account).unwrap_or(0);
                        let email = sh.accounts[i].email.clone();
                        login(&sh, user, &email).await?.map(|(_, r)| r)
                    }
                };
                if let (Some(n), Some(s)) = (next, user.get_session_data_mut::<Sess>()) {
                    s.refresh = n;
                }
                Ok(())
            })
        },
    ))
}

/// Victims keep calling while an admin (see [`drive_bans`]) bans and
/// re-activates them. Expected 401s and 403s are successes; a 200 that the
/// contract forbids is a failure and is counted in `accepted_after_ban`.
pub fn revocation(shared: &Arc<Shared>) -> Scenario {
    scenario!("revocation")
        .register_transaction(
            transaction(shared, "adopt victim", |sh, user| {
                Box::pin(async move {
                    let i = user.weighted_users_index % sh.victims.len().max(1);
                    user.set_session_data(Sess {
                        account: i,
                        access: String::new(),
                        refresh: String::new(),
                        obtained: None,
                    });
                    Ok(())
                })
            })
            .set_on_start(),
        )
        .register_transaction(transaction(shared, "victim call", |sh, user| Box::pin(victim_call(sh, user))))
}

async fn victim_call(sh: Arc<Shared>, user: &mut GooseUser) -> TransactionResult {
    let (i, token, obtained) = match user.get_session_data::<Sess>() {
        Some(s) => (s.account, s.access.clone(), s.obtained),
        None => (0, String::new(), None),
    };
    let Some(obtained) = obtained.filter(|_| !token.is_empty()) else {
        // No live token: log in (403 while banned, which is expected).
        let sent = Instant::now();
        let email = sh.victims[i].email.clone();
        let body = json!({"email": email, "password": PASSWORD});
        let mut r = send(&sh, user, GooseMethod::Post, "/auth/login", "/auth/login (victim)", None, Some(body)).await?;
        let answered = Instant::now();
        match status(&r) {
            // A banned user logged in: sent after the ban answered and
            // answered before the re-activation was sent.
            200 if sh.timeline[i].lock().is_ok_and(|tl| tl.forbids(sent, answered)) => {
                sh.accepted_after_ban.fetch_add(1, Ordering::Relaxed);
                user.set_failure("login accepted while banned", &mut r.request, None, None)?;
            }
            200 => {
                let v: serde_json::Value = match r.response {
                    Ok(resp) => resp.json().await.unwrap_or_default(),
                    Err(_) => serde_json::Value::Null,
                };
                if let Some(s) = user.get_session_data_mut::<Sess>() {
                    s.access = v["access_token"].as_str().unwrap_or_default().to_owned();
                    s.obtained = Some(answered);
                }
            }
            403 => {
                user.set_success(&mut r.request)?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => {}
        }
        return Ok(());
    };
    let sent = Instant::now();
    let mut r = send(&sh, user, GooseMethod::Get, "/tasks", "/tasks (victim)", Some(&token), None).await?;
    match status(&r) {
        200 => {
            // Forbidden: sent after the ban answered, and either the user is
            // still banned or the token predates the re-activation (rule 2).
            let forbidden = sh.timeline[i].lock().is_ok_and(|tl| tl.forbids(sent, obtained));
            if forbidden {
                sh.accepted_after_ban.fetch_add(1, Ordering::Relaxed);
                user.set_failure("accepted after ban", &mut r.request, None, None)?;
            }
        }
        401 => {
            if let Ok(mut tl) = sh.timeline[i].lock()
                && let (Some(a), false) = (tl.ban_answered, tl.first_401_seen)
            {
                tl.first_401_seen = true;
                if let Ok(mut v) = sh.ban_to_401.lock() {
                    v.push(Instant::now().saturating_duration_since(a));
                }
            }
            user.set_success(&mut r.request)?;
            if let Some(s) = user.get_session_data_mut::<Sess>() {
                s.access.clear();
                s.obtained = None;
            }
        }
        _ => {}
    }
    Ok(())
}

/// A probe of the load generator's own ceiling: the cheapest route.
pub fn healthz(shared: &Arc<Shared>) -> Scenario {
    scenario!("healthz").register_transaction(transaction(shared, "healthz", |sh, user| {
        Box::pin(async move {
            send(&sh, user, GooseMethod::Get, "/healthz", "/healthz", None, None).await?;
            Ok(())
        })
    }))
}

/// Bans and re-activates the victims in turn until `stop`; returns the
/// number of bans. Every victim is left active.
pub async fn drive_bans(
    shared: Arc<Shared>,
    base: String,
    admin_token: String,
    hold: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<u64> {
    let client = crate::setup::client()?;
    let mut bans = 0u64;
    let mut next = 0usize;
    while !stop.load(Ordering::Relaxed) && !shared.victims.is_empty() {
        let i = next % shared.victims.len();
        next += 1;
        let uid = shared.victims[i].id;
        crate::setup::set_status(&client, &base, &admin_token, uid, "banned").await?;
        {
            let mut tl = shared.timeline[i].lock().map_err(|_| anyhow::anyhow!("timeline lock poisoned"))?;
            tl.ban_answered = Some(Instant::now());
            tl.reactivate_sent = None;
            tl.first_401_seen = false;
        }
        bans += 1;
        tokio::time::sleep(hold).await;
        if let Ok(mut tl) = shared.timeline[i].lock() {
            tl.reactivate_sent = Some(Instant::now());
        }
        crate::setup::set_status(&client, &base, &admin_token, uid, "active").await?;
        tokio::time::sleep(hold).await;
    }
    for v in &shared.victims {
        crate::setup::set_status(&client, &base, &admin_token, v.id, "active").await?;
    }
    Ok(bans)
}

/// `mixed`: the scenarios of `mix` with their weights.
pub fn mixed(shared: &Arc<Shared>, mix: &[(String, usize)]) -> anyhow::Result<Vec<Scenario>> {
    let mut out = Vec::new();
    for (name, weight) in mix {
        if *weight == 0 {
            continue;
        }
        let Some(def) = find(name) else {
            let known: Vec<&str> = REGISTRY.iter().map(|d| d.name).collect();
            anyhow::bail!("--mix: {name} is not one of {}", known.join(", "));
        };
        out.push((def.build)(shared).set_weight(*weight)?);
    }
    if out.is_empty() {
        anyhow::bail!("--mix gives every scenario weight 0");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_acceptances_the_contract_forbids_are_counted() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut tl = Timeline::default();
        assert!(!tl.forbids(at(5), at(0)), "no ban yet");
        tl.ban_answered = Some(at(10));
        assert!(!tl.forbids(at(9), at(0)), "sent before the ban answered: either answer is fine");
        assert!(tl.forbids(at(11), at(0)), "banned and accepted");
        assert!(tl.forbids(at(11), at(20)), "banned: even a newer token must be refused");
        tl.reactivate_sent = Some(at(30));
        assert!(tl.forbids(at(40), at(0)), "an old token revived by re-activation");
        assert!(tl.forbids(at(40), at(29)), "a login answered before the re-activation was sent");
        assert!(!tl.forbids(at(40), at(35)), "a fresh login after re-activation works");
        assert!(
            !tl.forbids(at(40), at(31)),
            "a login sent during the ban but answered after the re-activation was sent may be new: not counted"
        );
        assert!(tl.forbids(at(20), at(25)), "a login answered 200 during the ban (rule 1)");
    }
}
