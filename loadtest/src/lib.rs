//! Tollgate's load harness: goose scenarios for every path, against any
//! deployment by URL or against a server it starts itself, with readable
//! reports and a regression gate.
//!
//! # Layout
//! - [`target`]: the system under test (a URL, or an embedded server with
//!   throwaway PostgreSQL and Redis).
//! - [`setup`]: accounts and tasks through the public API, idempotent.
//! - [`scenarios`]: the goose scenarios, one per path, and the ban driver of
//!   the revocation scenario.
//! - [`summary`]: the JSON summary, the table, `compare` and `merge`.
//!
//! # Measuring the generator too
//! On a small machine goose can saturate before the server does. Each
//! invocation first runs `GET /healthz` with the same goose settings: that
//! is the generator's ceiling against this target, reported beside every
//! result, and a result within 80 % of it is marked client-bound.

#![deny(missing_docs)]

pub mod scenarios;
pub mod setup;
pub mod summary;
pub mod target;

use anyhow::{Context, anyhow};
use goose::config::{GooseConfiguration, GooseDefault, GooseDefaultType};
use goose::metrics::GooseMetrics;
use goose::prelude::*;
use scenarios::Shared;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use summary::{RevocationStats, ScenarioSummary, Summary};

/// Goose users when `--users` is not given.
pub const DEFAULT_USERS: usize = 32;
/// Seconds per scenario when `--run-time` is not given.
pub const DEFAULT_RUN_TIME: usize = 30;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Scenario names (see [`scenarios::REGISTRY`] and `mixed`); `all` runs each.
    pub scenarios: Vec<String>,
    /// A deployment's base URL; None starts a server.
    pub host: Option<String>,
    /// Allow a non-loopback `host`.
    pub allow_remote: bool,
    /// Where reports go.
    pub out_dir: PathBuf,
    /// Accounts set up for the user scenarios.
    pub accounts: usize,
    /// Tasks per account (the cached page's size).
    pub tasks: usize,
    /// Victim accounts of the revocation scenario.
    pub victims: usize,
    /// How long a victim stays banned, and active between bans.
    pub ban_hold: Duration,
    /// Weights of `mixed`.
    pub mix: Vec<(String, usize)>,
    /// Measure the generator's ceiling first.
    pub calibrate: bool,
    /// Seconds of the calibration run.
    pub calibrate_secs: usize,
    /// Admin credentials for the revocation scenario against a deployment.
    pub admin: Option<(String, String)>,
    /// goose's own options, passed through.
    pub goose_args: Vec<String>,
    /// Worker threads of an embedded server.
    pub server_threads: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            scenarios: vec!["cached-read".into()],
            host: None,
            allow_remote: false,
            out_dir: PathBuf::from("target/loadtest"),
            accounts: 32,
            tasks: 20,
            victims: 8,
            ban_hold: Duration::from_millis(300),
            mix: scenarios::DEFAULT_MIX.iter().map(|(n, w)| ((*n).to_owned(), *w)).collect(),
            calibrate: true,
            calibrate_secs: 10,
            admin: None,
            goose_args: Vec::new(),
            server_threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
        }
    }
}

/// Runs one goose attack and returns its metrics.
async fn attack(
    host: &str,
    goose_args: &[String],
    scenarios: Vec<Scenario>,
    report: Option<&Path>,
    run_time: Option<usize>,
) -> anyhow::Result<GooseMetrics> {
    let mut args = goose_args.to_vec();
    if let Some(t) = run_time {
        args.extend(["--run-time".to_owned(), t.to_string()]);
    }
    let config = GooseConfiguration::parse_args_default(&args).map_err(|e| anyhow!("goose options {args:?}: {e}"))?;
    let mut a = GooseAttack::initialize_with_config(config)?;
    for s in scenarios {
        a = a.register_scenario(s);
    }
    let users = DEFAULT_USERS.to_string();
    a = *a.set_default(GooseDefault::Host, host)?;
    a = *a.set_default(GooseDefault::Users, DEFAULT_USERS)?;
    a = *a.set_default(GooseDefault::IncreaseRate, users.as_str())?;
    a = *a.set_default(GooseDefault::RunTime, DEFAULT_RUN_TIME)?;
    // The telnet controller binds a fixed port: back-to-back attacks (and
    // parallel runs) would clash on it.
    a = *a.set_default(GooseDefault::NoTelnet, true)?;
    a = *a.set_default(GooseDefault::NoPrintMetrics, true)?;
    a = *a.set_default(GooseDefault::Quiet, 1)?;
    if let Some(r) = report.and_then(Path::to_str) {
        a = *a.set_default(GooseDefault::ReportFile, r)?;
    }
    Ok(a.execute().await?)
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// Expands `all` and checks names.
pub fn expand(names: &[String]) -> anyhow::Result<Vec<String>> {
    let known = scenarios::names();
    let mut out = Vec::new();
    for n in names {
        if n == "all" {
            out.extend(known.iter().map(|s| (*s).to_owned()));
        } else if known.contains(&n.as_str()) {
            out.push(n.clone());
        } else {
            anyhow::bail!("unknown scenario {n:?}; known: {} and all", known.join(", "));
        }
    }
    Ok(out)
}

/// Sets up data, measures the ceiling, runs each scenario, writes
/// `summary.json` and the HTML reports under `out_dir`.
pub async fn run(opts: RunOptions) -> anyhow::Result<Summary> {
    let names = expand(&opts.scenarios)?;
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    std::fs::create_dir_all(&opts.out_dir).with_context(|| format!("creating {}", opts.out_dir.display()))?;
    let target = match &opts.host {
        Some(h) => target::Target::remote(h, opts.admin.clone(), opts.allow_remote)?,
        None => {
            let threads = opts.server_threads;
            tokio::task::spawn_blocking(move || target::Target::embedded(threads)).await??
        }
    };
    let result = run_against(&target, &opts, &names, started_at).await;
    target.stop();
    result
}

/// Whether scenario `name` bans victims (itself, or through `mixed`).
fn bans_in(opts: &RunOptions, name: &str) -> bool {
    let bans = |n: &str| scenarios::find(n).is_some_and(|d| d.bans);
    bans(name) || (name == scenarios::MIXED && opts.mix.iter().any(|(n, w)| *w > 0 && bans(n)))
}

/// The goose scenarios of `name`.
fn build(shared: &Arc<Shared>, opts: &RunOptions, name: &str) -> anyhow::Result<Vec<Scenario>> {
    match scenarios::find(name) {
        Some(def) => Ok(vec![(def.build)(shared)]),
        None if name == scenarios::MIXED => scenarios::mixed(shared, &opts.mix),
        None => anyhow::bail!("unknown scenario {name}"),
    }
}

/// Accounts, and victims with an admin token when a scenario bans.
async fn set_up(
    target: &target::Target,
    opts: &RunOptions,
    names: &[String],
) -> anyhow::Result<(Arc<Shared>, Option<String>)> {
    let (base, client) = (&target.url, setup::client()?);
    eprintln!("loadtest: setting up {} accounts with {} tasks each", opts.accounts, opts.tasks);
    let accounts = setup::accounts(&client, base, "user", opts.accounts.max(1), opts.tasks).await?;
    if !names.iter().any(|n| bans_in(opts, n)) {
        return Ok((Shared::new(accounts, Vec::new()), None));
    }
    let (email, password) = opts.admin.clone().or_else(|| target.admin.clone()).context(
        "the revocation scenario needs admin credentials: --admin-email and --admin-password (or ADMIN_EMAIL / ADMIN_PASSWORD)",
    )?;
    let (token, _) = setup::login(&client, base, &email, &password).await.context("admin login")?;
    let victims = setup::accounts(&client, base, "victim", opts.victims.max(1), 0).await?;
    for v in &victims {
        setup::set_status(&client, base, &token, v.id, "active").await?; // a previous run may have been cut off
    }
    Ok((Shared::new(accounts, victims), Some(token)))
}

/// Runs one scenario (with the ban driver when it bans) and summarises it.
async fn run_one(
    base: &str,
    opts: &RunOptions,
    shared: &Arc<Shared>,
    admin_token: Option<&str>,
    name: &str,
    ceiling_rps: Option<f64>,
) -> anyhow::Result<ScenarioSummary> {
    eprintln!("loadtest: running {name}");
    let report = opts.out_dir.join(format!("{name}.html"));
    let list = build(shared, opts, name)?;
    let driver = match (bans_in(opts, name), admin_token) {
        (true, Some(token)) => {
            let stop = Arc::new(AtomicBool::new(false));
            let drive =
                scenarios::drive_bans(shared.clone(), base.to_owned(), token.to_owned(), opts.ban_hold, stop.clone());
            Some((stop, tokio::spawn(drive)))
        }
        _ => None,
    };
    let metrics = attack(base, &opts.goose_args, list, Some(&report), None).await;
    let bans = match driver {
        Some((stop, h)) => {
            stop.store(true, Ordering::Relaxed);
            Some(h.await.context("ban driver")??)
        }
        None => None,
    };
    let mut s = summary::from_goose(name, &metrics?).with_ceiling(ceiling_rps);
    if let Some(bans) = bans {
        let mut lat = shared.ban_to_401.lock().map_err(|_| anyhow!("latency lock poisoned"))?.clone();
        lat.sort();
        s.revocation = Some(RevocationStats {
            bans,
            accepted_after_ban: shared.accepted_after_ban.load(Ordering::Relaxed),
            ban_to_401_p50_ms: percentile_ms(&lat, 0.5),
            ban_to_401_p99_ms: percentile_ms(&lat, 0.99),
            ban_to_401_max_ms: lat.last().map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0),
        });
    }
    Ok(s)
}

async fn run_against(
    target: &target::Target,
    opts: &RunOptions,
    names: &[String],
    started_at: String,
) -> anyhow::Result<Summary> {
    let base = target.url.clone();
    let (shared, admin_token) = set_up(target, opts, names).await?;
    let ceiling = if opts.calibrate {
        eprintln!("loadtest: measuring the generator's ceiling on GET /healthz ({} s)", opts.calibrate_secs);
        let m =
            attack(&base, &opts.goose_args, vec![scenarios::healthz(&shared)], None, Some(opts.calibrate_secs)).await?;
        Some(summary::from_goose("healthz", &m))
    } else {
        None
    };
    let ceiling_rps = ceiling.as_ref().map(|c| c.rps);
    let mut results: Vec<ScenarioSummary> = ceiling.into_iter().collect();
    for name in names {
        results.push(run_one(&base, opts, &shared, admin_token.as_deref(), name, ceiling_rps).await?);
    }
    let summary = Summary { version: 1, target: base, embedded: target.embedded, started_at, scenarios: results };
    let path = opts.out_dir.join("summary.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(summary)
}

/// Why a run should fail CI, if it should: failures, or any revoked
/// request accepted.
pub fn verdict(s: &Summary) -> Option<String> {
    let mut why = Vec::new();
    for sc in &s.scenarios {
        if sc.failures > 0 {
            why.push(format!("{}: {} failed requests", sc.scenario, sc.failures));
        }
        if let Some(r) = &sc.revocation {
            if r.accepted_after_ban > 0 {
                why.push(format!("{}: {} requests accepted after a ban", sc.scenario, r.accepted_after_ban));
            }
        }
    }
    if why.is_empty() { None } else { Some(why.join("; ")) }
}

/// Medians of `POST /auth/login` for an unknown email and for a known email
/// with a wrong password, interleaved, `tries` each, one at a time. Both must
/// cost the same (the server verifies unknown emails against a dummy hash),
/// or the response time tells an attacker which emails exist. Attempts are
/// spread so that no email reaches the failed-login limit (a fast 429 would
/// skew the numbers).
pub async fn login_timing(base: &str, tries: usize) -> anyhow::Result<(f64, f64)> {
    let client = setup::client()?;
    let per_account = 5; // well under the default limit of 10 failures
    let accounts = setup::accounts(&client, base, "timing", tries.div_ceil(per_account), 0).await?;
    let mut unknown = Vec::with_capacity(tries);
    let mut wrong = Vec::with_capacity(tries);
    let nonce = rand::random::<u32>();
    let time = |email: String| {
        let client = client.clone();
        async move {
            let body = serde_json::json!({"email": email, "password": "not-the-password"});
            let start = std::time::Instant::now();
            let r = client.post(format!("{base}/auth/login")).json(&body).send().await?;
            let elapsed = start.elapsed().as_secs_f64() * 1000.0;
            anyhow::ensure!(r.status().as_u16() == 401, "expected 401 for {email}, got {}", r.status());
            Ok::<f64, anyhow::Error>(elapsed)
        }
    };
    for i in 0..tries {
        unknown.push(time(format!("nobody-{nonce}-{i}@tollgate-loadtest.example")).await?);
        wrong.push(time(accounts[i / per_account].email.clone()).await?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((median(&mut unknown), median(&mut wrong)))
}
