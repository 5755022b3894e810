//! Tollgate's load harness: goose scenarios for every path, against any
//! deployment by URL or against a server it starts itself, with readable
//! reports and a regression gate.
//!
//! # Layout
//! - [`target`]: the system under test (a URL, or an embedded server with
//!   throwaway PostgreSQL and Redis).
//! - [`setup`]: accounts and tasks through the public API, idempotent.
//! - [`issuer`]: provider tokens of `external-read` (the harness's own test
//!   identity provider, or a file of a deployment's provider tokens).
//! - [`scenarios`]: the goose scenarios, one per path, and the ban driver of
//!   the revocation scenario.
//! - [`summary`]: the JSON summary (with latency histograms), the table,
//!   `compare` and `merge`.
//! - [`open`]: the open model (`--rate`, `--rate-steps`).
//! - [`live`]: progress lines, the generator's `/metrics`, the timeline.
//! - [`probe`]: the server's own `/metrics`, scraped around each scenario.
//! - [`report`]: the self-contained HTML report with charts.
//! - [`cli`]: the command line, goose's options included.
//!
//! # Results are never lost
//! Every scenario runs even when another failed or broke a threshold; each
//! failure is recorded in its row, `summary.json` and the table are always
//! written, and the verdict comes at the end ([`Verdict`]: exit 0, 1 for a
//! broken contract, 2 for a failed threshold, 3 when the harness could not
//! run).
//!
//! # Measuring the generator too
//! On a small machine goose can saturate before the server does. Each
//! invocation first runs `GET /healthz` with the same goose settings: that
//! is the generator's ceiling against this target, reported beside every
//! result, and a result within 80 % of it is marked client-bound.

#![deny(missing_docs)]

pub mod cli;
pub mod issuer;
pub mod live;
pub mod open;
pub mod probe;
pub mod report;
pub mod scenarios;
pub mod setup;
pub mod summary;
pub mod target;

use anyhow::{Context, anyhow};
use goose::config::{GooseConfiguration, GooseDefault, GooseDefaultType};
use goose::metrics::GooseMetrics;
use goose::prelude::*;
use live::{Live, Progress};
use probe::{ServerGates, ServerStats};
use scenarios::Shared;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use summary::{Provenance, RevocationStats, ScenarioSummary, Summary};

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
    /// Provider access tokens for `external-read` against a deployment
    /// (one per line); with an embedded server the harness mints them.
    pub external_tokens: Option<PathBuf>,
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
    /// goose's own options, as parsed.
    pub goose: GooseConfiguration,
    /// Worker threads of an embedded server.
    pub server_threads: usize,
    /// This process is generator I of N: its own accounts and victims.
    pub generator: (usize, usize),
    /// Runs per scenario (medians reported).
    pub repeat: u32,
    /// The open model, when `--rate` or `--rate-steps` was given.
    pub open: Option<open::OpenOptions>,
    /// The run's id: the `run_id` label of the generator's metrics.
    pub run_id: String,
    /// Serve the generator's metrics here while the run lasts.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// ... and this long after it, so the last scrape happens.
    pub metrics_linger: Duration,
    /// A progress line on stderr this often (zero: none).
    pub progress_every: Duration,
    /// Gates on what the server itself saw.
    pub server_gates: ServerGates,
    /// The command line, for the summary's provenance.
    pub args: Vec<String>,
}

/// A run id: the start time and a random suffix, e.g. `20261206T001502Z-3fa9`.
pub fn new_run_id() -> String {
    format!("{}-{:04x}", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"), rand::random::<u16>())
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
            external_tokens: None,
            ban_hold: Duration::from_millis(300),
            mix: scenarios::DEFAULT_MIX.iter().map(|(n, w)| ((*n).to_owned(), *w)).collect(),
            calibrate: true,
            calibrate_secs: 10,
            admin: None,
            goose: GooseConfiguration::default(),
            server_threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            generator: (1, 1),
            repeat: 1,
            open: None,
            run_id: new_run_id(),
            metrics_addr: None,
            metrics_linger: Duration::ZERO,
            progress_every: Duration::from_secs(5),
            server_gates: ServerGates::default(),
            args: Vec::new(),
        }
    }
}

/// goose's configuration from command-line words (tests, scripts).
pub fn goose_config(args: &[&str]) -> anyhow::Result<GooseConfiguration> {
    use clap::Parser as _;
    GooseConfiguration::try_parse_from(std::iter::once("goose").chain(args.iter().copied()))
        .map_err(|e| anyhow!("goose options {args:?}: {e}"))
}

/// What one goose attack is for.
enum Purpose<'a> {
    /// A measured scenario, with its HTML report.
    Scenario(&'a str, &'a Path),
    /// The generator's ceiling: a plain run of `secs`, without the user's
    /// thresholds, throttle, test plan or reports (it judges the generator,
    /// not the server).
    Calibration(usize),
}

/// The HTML report of `scenario`: the user's `--report-file` names with the
/// scenario inserted before the extension (so `all` does not overwrite one
/// file), else `out/SCENARIO.html`.
fn report_files(user: &[String], default: &Path, scenario: &str) -> Vec<String> {
    if user.is_empty() {
        return default.to_str().map(str::to_owned).into_iter().collect();
    }
    user.iter()
        .map(|f| {
            let p = Path::new(f);
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("report");
            let ext = p.extension().and_then(|s| s.to_str()).map(|e| format!(".{e}")).unwrap_or_default();
            p.with_file_name(format!("{stem}-{scenario}{ext}")).to_string_lossy().into_owned()
        })
        .collect()
}

/// Builds the goose attack of `purpose` with the harness's defaults, set
/// only where the user gave nothing and goose accepts them (no users,
/// increase rate or run time beside a test plan).
fn prepare(host: &str, user: &GooseConfiguration, purpose: &Purpose<'_>) -> anyhow::Result<GooseAttack> {
    let config = match purpose {
        // A fresh configuration: only the users and their start rate carry
        // over (a test plan's largest step is not knowable here; its users
        // default as goose's do).
        Purpose::Calibration(secs) => {
            let mut c = GooseConfiguration::default();
            c.users = user.users;
            c.increase_rate = user.increase_rate.clone();
            c.run_time = Some(secs.to_string());
            c
        }
        Purpose::Scenario(name, default) => {
            let mut c = user.clone();
            c.report_file = report_files(&user.report_file, default, name);
            c
        }
    };
    let plan = has_test_plan(&config);
    let timed = config.increase_time.is_some();
    let loud = config.running_metrics.is_some() || config.verbose > 0;
    let mut a = GooseAttack::initialize_with_config(config)?;
    a = *a.set_default(GooseDefault::Host, host)?;
    if !plan {
        a = *a.set_default(GooseDefault::Users, DEFAULT_USERS)?;
        a = *a.set_default(GooseDefault::RunTime, DEFAULT_RUN_TIME)?;
        if !timed {
            a = *a.set_default(GooseDefault::IncreaseRate, DEFAULT_USERS.to_string().as_str())?;
        }
    }
    // The telnet controller binds a fixed port: back-to-back attacks (and
    // parallel runs) would clash on it.
    a = *a.set_default(GooseDefault::NoTelnet, true)?;
    if !loud {
        a = *a.set_default(GooseDefault::NoPrintMetrics, true)?;
        a = *a.set_default(GooseDefault::Quiet, 1)?;
    }
    Ok(a)
}

/// Whether goose's configuration has a `--test-plan` (the field is private
/// to goose; its serialised form is not).
pub fn has_test_plan(c: &GooseConfiguration) -> bool {
    serde_json::to_value(c).is_ok_and(|v| !v["test_plan"].is_null())
}

/// Checks goose's options against the harness's defaults before anything
/// starts (a test plan beside defaults goose refuses, and the like).
pub fn check_goose(opts: &RunOptions) -> anyhow::Result<()> {
    let report = opts.out_dir.join("check.html");
    prepare("http://127.0.0.1:1", &opts.goose, &Purpose::Scenario("check", &report)).map(drop)
}

/// The outcome of one attack: metrics, and the thresholds that failed.
struct Attack {
    metrics: GooseMetrics,
    thresholds_failed: Vec<String>,
}

/// Runs one goose attack. A failed threshold still returns the metrics.
async fn attack(
    host: &str,
    user: &GooseConfiguration,
    scenarios: Vec<Scenario>,
    purpose: Purpose<'_>,
) -> anyhow::Result<Attack> {
    let mut a = prepare(host, user, &purpose)?;
    for s in scenarios {
        a = a.register_scenario(s);
    }
    match a.execute().await {
        Ok(metrics) => Ok(Attack { metrics, thresholds_failed: Vec::new() }),
        Err(goose::GooseError::ThresholdsFailed { failed, metrics }) => Ok(Attack {
            metrics: *metrics.0,
            thresholds_failed: failed.iter().map(|f| format!("{} (observed {})", f.rule, f.observed)).collect(),
        }),
        Err(e) => Err(e.into()),
    }
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

/// [`expand`] for a run. `all` against a deployment without its provider's
/// tokens (`no_provider_tokens`) leaves external-read out, and says so; named
/// on its own, external-read stays (and set-up says which option it needs).
pub fn expand_for(names: &[String], no_provider_tokens: bool) -> anyhow::Result<Vec<String>> {
    let mut out = expand(names)?;
    let named = names.iter().any(|n| n == scenarios::EXTERNAL_READ);
    if no_provider_tokens && !named && out.iter().any(|n| n == scenarios::EXTERNAL_READ) {
        out.retain(|n| n != scenarios::EXTERNAL_READ);
        eprintln!(
            "loadtest: {} is not part of this run: against a deployment it needs --external-tokens FILE",
            scenarios::EXTERNAL_READ
        );
    }
    Ok(out)
}

/// Sets up data, measures the ceiling, runs each scenario, writes
/// `summary.json` and the HTML reports under `out_dir`.
pub async fn run(opts: RunOptions) -> anyhow::Result<Summary> {
    let names = expand_for(&opts.scenarios, opts.host.is_some() && opts.external_tokens.is_none())?;
    check_goose(&opts)?;
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    std::fs::create_dir_all(&opts.out_dir).with_context(|| format!("creating {}", opts.out_dir.display()))?;
    // The harness is the identity provider of an embedded server whose
    // run reads with provider tokens.
    let issuer = match (&opts.host, names.iter().any(|n| uses_in(&opts, n, scenarios::EXTERNAL_READ))) {
        (None, true) => Some(issuer::TestIssuer::start().await?),
        _ => None,
    };
    let target = match &opts.host {
        Some(h) => target::Target::remote(h, opts.admin.clone(), opts.allow_remote)?,
        None => {
            let threads = opts.server_threads;
            let env = issuer.as_ref().map(issuer::TestIssuer::server_env).unwrap_or_default();
            tokio::task::spawn_blocking(move || target::Target::embedded(threads, env)).await??
        }
    };
    let live = Live::new(&opts.run_id)?;
    let metrics = match opts.metrics_addr {
        Some(addr) => {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let (bound, task) = live::serve(live.clone(), addr, async {
                let _ = stopped.await;
            })
            .await
            .with_context(|| format!("--metrics-addr {addr}"))?;
            eprintln!("loadtest: generator metrics on http://{bound}/metrics (run_id {})", opts.run_id);
            Some((stop, task))
        }
        None => None,
    };
    let result = run_against(&target, issuer.as_ref(), &opts, &names, started_at, &live).await;
    if let Some((stop, task)) = metrics {
        if !opts.metrics_linger.is_zero() {
            eprintln!(
                "loadtest: serving the generator's metrics {} s more for the last scrape",
                opts.metrics_linger.as_secs()
            );
            tokio::time::sleep(opts.metrics_linger).await;
        }
        let _ = stop.send(());
        let _ = task.await;
    }
    target.stop();
    drop(issuer);
    result
}

/// Whether running `name` runs scenario `scenario` (itself, or through a
/// weight of `mixed`).
fn uses_in(opts: &RunOptions, name: &str, scenario: &str) -> bool {
    name == scenario || (name == scenarios::MIXED && opts.mix.iter().any(|(n, w)| n == scenario && *w > 0))
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
    issuer: Option<&issuer::TestIssuer>,
    opts: &RunOptions,
    names: &[String],
    live: &Arc<Live>,
) -> anyhow::Result<(Arc<Shared>, Option<String>)> {
    let (base, client) = (&target.url, setup::client()?);
    eprintln!("loadtest: setting up {} accounts with {} tasks each", opts.accounts, opts.tasks);
    let kind = |k: &str| match opts.generator {
        (_, 1) => k.to_owned(),
        (i, n) => format!("g{i}of{n}-{k}"),
    };
    let accounts = setup::accounts(&client, base, &kind("user"), opts.accounts.max(1), opts.tasks).await?;
    let login_accounts = if names.iter().any(|n| uses_in(opts, n, "login")) {
        setup::accounts(&client, base, &kind("login"), opts.accounts.clamp(1, 8), 0).await?
    } else {
        Vec::new()
    };
    let external = if names.iter().any(|n| uses_in(opts, n, scenarios::EXTERNAL_READ)) {
        let tokens = match (issuer, &opts.external_tokens) {
            (_, Some(path)) => issuer::read_tokens(path)?,
            (Some(i), None) => {
                (0..opts.accounts.max(1)).map(|n| i.mint(&kind(&format!("external-{n}")))).collect::<Result<_, _>>()?
            }
            (None, None) => anyhow::bail!(
                "external-read against a deployment needs --external-tokens FILE: access tokens of the identity \
                 provider it trusts (OIDC_ISSUER), one per line"
            ),
        };
        eprintln!("loadtest: setting up {} provider-token accounts with {} tasks each", tokens.len(), opts.tasks);
        setup::external_accounts(&client, base, tokens, opts.tasks).await?
    } else {
        Vec::new()
    };
    let shared = |victims| Shared::new(accounts, login_accounts, victims, external, live.clone());
    if !names.iter().any(|n| bans_in(opts, n)) {
        return Ok((shared(Vec::new()), None));
    }
    let (email, password) = opts.admin.clone().or_else(|| target.admin.clone()).context(
        "the revocation scenario needs admin credentials: --admin-email and --admin-password (or ADMIN_EMAIL / ADMIN_PASSWORD)",
    )?;
    let (token, _) = setup::login(&client, base, &email, &password).await.context("admin login")?;
    let victims = setup::accounts(&client, base, &kind("victim"), opts.victims.max(1), 0).await?;
    for v in &victims {
        setup::set_status(&client, base, &token, v.id, "active").await?; // a previous run may have been cut off
    }
    Ok((shared(victims), Some(token)))
}

/// What every scenario of one invocation runs with.
struct RunCtx<'a> {
    base: &'a str,
    opts: &'a RunOptions,
    shared: &'a Arc<Shared>,
    admin_token: Option<&'a str>,
    ceiling_rps: Option<f64>,
    probe: reqwest::Client,
}

impl RunCtx<'_> {
    /// The target's `/metrics` now, if it answers.
    async fn scrape(&self) -> Option<probe::Scrape> {
        probe::scrape(&self.probe, self.base).await.ok()
    }

    /// Seconds the scenario is planned to take (0 when a test plan decides)
    /// and the open model's first rate (0 for the closed model).
    fn plan(&self) -> (f64, f64) {
        match &self.opts.open {
            Some(o) => (o.steps.iter().map(|s| s.secs).sum(), o.steps.first().map_or(0.0, |s| s.rate)),
            None if has_test_plan(&self.opts.goose) => (0.0, 0.0),
            None => {
                // goose's run time counts from when every user runs: add
                // the ramp (users at the increase rate per second).
                let g = &self.opts.goose;
                let t = g.run_time.as_deref().and_then(goose::util::parse_timespan).unwrap_or(DEFAULT_RUN_TIME);
                let users = g.users.unwrap_or(DEFAULT_USERS) as f64;
                let rate =
                    g.increase_rate.as_deref().and_then(|r| r.parse::<f64>().ok()).unwrap_or(DEFAULT_USERS as f64);
                (t as f64 + users / rate.max(0.001), 0.0)
            }
        }
    }
}

/// Runs one scenario, watched: progress lines, the timeline, and the
/// server's `/metrics` before and after, judged by the server gates.
async fn run_one(cx: &RunCtx<'_>, name: &str) -> anyhow::Result<ScenarioSummary> {
    eprintln!("loadtest: running {name}");
    let (planned, rate) = cx.plan();
    let before = cx.scrape().await;
    let progress = Progress { every: cx.opts.progress_every, target: Some(cx.base.to_owned()) };
    let watch = cx.shared.live.watch(name, planned, rate, progress);
    let result = match &cx.opts.open {
        Some(open) => run_open(cx.base, cx.shared, name, open).await,
        None => run_closed(cx, name).await,
    };
    let timeline = watch.stop().await;
    let mut s = result?;
    let after = cx.scrape().await;
    s.server = before.zip(after).map(|(b, a)| ServerStats::between(&b, &a));
    s.timeline = timeline;
    s.thresholds_failed.extend(cx.opts.server_gates.judge(name, s.server.as_ref()));
    Ok(s)
}

/// goose's closed model (with the ban driver when the scenario bans).
async fn run_closed(cx: &RunCtx<'_>, name: &str) -> anyhow::Result<ScenarioSummary> {
    let RunCtx { base, opts, shared, admin_token, ceiling_rps, .. } = *cx;
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
    shared.take_hists();
    let result = attack(base, &opts.goose, list, Purpose::Scenario(name, &report)).await;
    let bans = match driver {
        Some((stop, h)) => {
            stop.store(true, Ordering::Relaxed);
            Some(h.await.context("ban driver")??)
        }
        None => None,
    };
    let result = result?;
    let mut s = summary::from_goose(name, &result.metrics, &shared.take_hists()).with_ceiling(ceiling_rps);
    s.thresholds_failed = result.thresholds_failed;
    if let Some(bans) = bans {
        let mut lat = shared.ban_to_401.lock().map_err(|_| anyhow!("latency lock poisoned"))?.clone();
        lat.sort();
        s.revocation = Some(RevocationStats {
            bans,
            accepted_after_ban: shared.accepted_after_ban.load(Ordering::Relaxed),
            ban_to_401_p50_ms: percentile_ms(&lat, 0.5),
            ban_to_401_p99_ms: percentile_ms(&lat, 0.99),
            ban_to_401_max_ms: lat.last().map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0),
            ban_to_401_ms: lat.iter().map(|d| d.as_secs_f64() * 1000.0).collect(),
        });
    }
    Ok(s)
}

/// The open-model form of scenario `name`, with the accounts' tokens
/// renewed in the background for runs longer than their lifetime.
async fn run_open(
    base: &str,
    shared: &Arc<Shared>,
    name: &str,
    o: &open::OpenOptions,
) -> anyhow::Result<ScenarioSummary> {
    let (stop, renewer) = {
        let (shared, base, stop) = (shared.clone(), base.to_owned(), Arc::new(AtomicBool::new(false)));
        let client = setup::client()?;
        let s = stop.clone();
        (
            stop,
            tokio::spawn(async move {
                while !s.load(Ordering::Relaxed) {
                    shared.renew_tokens(&client, &base).await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }),
        )
    };
    let result = open::run(base, shared, name, o).await;
    stop.store(true, Ordering::Relaxed);
    let _ = renewer.await;
    let (stats, total) = result?;
    let secs: f64 = o.steps.iter().map(|s| s.secs).sum();
    let errors = stats.steps.iter().map(|s| s.errors).sum();
    let row = total.stats(open::request_name(name), errors, secs);
    Ok(ScenarioSummary {
        scenario: name.to_owned(),
        duration_s: secs,
        requests: row.requests,
        failures: errors,
        rps: row.rps,
        by_request: vec![row],
        open: Some(stats),
        ..ScenarioSummary::default()
    })
}

/// Runs `name` `opts.repeat` times: one run as it is, several as their
/// medians with each run kept.
async fn run_repeated(cx: &RunCtx<'_>, name: &str) -> ScenarioSummary {
    let mut runs = Vec::new();
    for _ in 0..cx.opts.repeat.max(1) {
        match run_one(cx, name).await {
            Ok(s) => runs.push(s),
            Err(e) => return summary::failed(name, format!("{e:#}")),
        }
    }
    summary::median_of(runs)
}

/// The generator's ceiling: `GET /healthz` with the same goose users.
async fn calibrate(base: &str, opts: &RunOptions, shared: &Arc<Shared>) -> anyhow::Result<ScenarioSummary> {
    eprintln!("loadtest: measuring the generator's ceiling on GET /healthz ({} s)", opts.calibrate_secs);
    let progress = Progress { every: opts.progress_every, target: None };
    let watch = shared.live.watch("healthz", opts.calibrate_secs as f64, 0.0, progress);
    shared.take_hists();
    let a =
        attack(base, &opts.goose, vec![scenarios::healthz(shared)], Purpose::Calibration(opts.calibrate_secs)).await;
    let timeline = watch.stop().await;
    let mut s = summary::from_goose("healthz", &a?.metrics, &shared.take_hists());
    (s.timeline, s.calibration) = (timeline, true);
    Ok(s)
}

async fn run_against(
    target: &target::Target,
    issuer: Option<&issuer::TestIssuer>,
    opts: &RunOptions,
    names: &[String],
    started_at: String,
    live: &Arc<Live>,
) -> anyhow::Result<Summary> {
    let base = target.url.clone();
    let (shared, admin_token) = set_up(target, issuer, opts, names, live).await?;
    let ceiling =
        if opts.calibrate && opts.open.is_none() { Some(calibrate(&base, opts, &shared).await?) } else { None };
    let ceiling_rps = ceiling.as_ref().map(|c| c.rps);
    let mut results: Vec<ScenarioSummary> = ceiling.into_iter().collect();
    let probe = reqwest::Client::builder().build()?;
    let cx = RunCtx { base: &base, opts, shared: &shared, admin_token: admin_token.as_deref(), ceiling_rps, probe };
    for name in names {
        results.push(run_repeated(&cx, name).await);
    }
    let generator = (opts.generator.1 > 1).then_some(opts.generator);
    let summary = Summary {
        version: 2,
        target: base,
        embedded: target.embedded,
        started_at,
        scenarios: results,
        generator,
        provenance: Some(provenance(opts, target.embedded)),
    };
    let path = opts.out_dir.join("summary.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let html = opts.out_dir.join("report.html");
    std::fs::write(&html, report::render(&summary)).with_context(|| format!("writing {}", html.display()))?;
    Ok(summary)
}

/// What this run's numbers depend on.
fn provenance(opts: &RunOptions, embedded: bool) -> Provenance {
    let g = &opts.goose;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let users = g.users.unwrap_or(DEFAULT_USERS);
    let mut settings: std::collections::BTreeMap<String, String> = [
        ("users", if has_test_plan(g) { "test plan".to_owned() } else { users.to_string() }),
        ("run_time", g.run_time.clone().unwrap_or_else(|| DEFAULT_RUN_TIME.to_string())),
        ("increase_rate", g.increase_rate.clone().unwrap_or_default()),
        ("test_plan", serde_json::to_value(g).map(|v| v["test_plan"].to_string()).unwrap_or_default()),
        ("throttle_requests", g.throttle_requests.map(|t| t.to_string()).unwrap_or_default()),
        ("accounts", opts.accounts.to_string()),
        ("tasks", opts.tasks.to_string()),
        ("victims", opts.victims.to_string()),
        ("ban_hold_ms", opts.ban_hold.as_millis().to_string()),
        ("mix", opts.mix.iter().map(|(n, w)| format!("{n}={w}")).collect::<Vec<_>>().join(",")),
        ("generator", format!("{}/{}", opts.generator.0, opts.generator.1)),
        ("repeat", opts.repeat.to_string()),
        ("cpus", cpus.to_string()),
        ("embedded", embedded.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(o) = &opts.open {
        let steps: Vec<String> = o.steps.iter().map(|s| format!("{}:{}s", s.rate, s.secs)).collect();
        settings.insert("rate_steps".into(), steps.join(","));
        settings.insert("max_in_flight".into(), o.max_in_flight.to_string());
    }
    Provenance {
        run_id: opts.run_id.clone(),
        git_commit: git_commit(),
        args: opts.args.clone(),
        harness_version: env!("CARGO_PKG_VERSION").to_owned(),
        goose_version: goose_version().to_owned(),
        cpus,
        embedded,
        settings,
    }
}

/// `GIT_COMMIT`, else the commit of this harness's source tree (`-dirty`
/// when it has changes); None outside a checkout.
fn git_commit() -> Option<String> {
    if let Ok(c) = std::env::var("GIT_COMMIT") {
        return Some(c);
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}

/// goose's version, as the workspace's lock file pins it.
pub fn goose_version() -> &'static str {
    let lock = include_str!("../../Cargo.lock");
    lock.split("[[package]]")
        .find(|p| p.contains("\nname = \"goose\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map_or("unknown", |v| v.trim_end_matches('"'))
}

/// How a run ended, in the order of precedence of the exit status.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Exit 0.
    Passed,
    /// Exit 1: failed requests or a revoked token accepted.
    ContractBroken(String),
    /// Exit 2: a threshold or the knee limits failed.
    ThresholdFailed(String),
    /// Exit 3: a scenario could not run.
    HarnessFailed(String),
}

impl Verdict {
    /// The process exit status.
    pub fn code(&self) -> u8 {
        match self {
            Self::Passed => 0,
            Self::ContractBroken(_) => 1,
            Self::ThresholdFailed(_) => 2,
            Self::HarnessFailed(_) => 3,
        }
    }
}

/// Judges a run: a broken contract outranks a failed threshold, which
/// outranks a scenario that could not run.
pub fn verdict(s: &Summary) -> Verdict {
    let (mut contract, mut thresholds, mut harness) = (Vec::new(), Vec::new(), Vec::new());
    for sc in &s.scenarios {
        // An open-model run is judged by its limits (below): past its knee,
        // dropped and failed sends are what a staircase looks for.
        if sc.failures > 0 && sc.open.is_none() {
            contract.push(format!("{}: {} failed requests", sc.scenario, sc.failures));
        }
        if let Some(r) = sc.revocation.as_ref().filter(|r| r.accepted_after_ban > 0) {
            contract.push(format!("{}: {} requests accepted after a ban", sc.scenario, r.accepted_after_ban));
        }
        for t in &sc.thresholds_failed {
            thresholds.push(format!("{}: threshold {t}", sc.scenario));
        }
        if let Some(o) = sc.open.as_ref().filter(|o| o.limits_given && o.knee_rps.is_none()) {
            thresholds.push(format!(
                "{}: the open-model run is beyond its limits from the first step (p99 <= {} ms, errors <= {}%)",
                sc.scenario, o.knee_p99_ms, o.knee_max_error_pct
            ));
        }
        if let Some(e) = &sc.error {
            harness.push(format!("{}: {e}", sc.scenario));
        }
    }
    if !contract.is_empty() {
        Verdict::ContractBroken(contract.join("; "))
    } else if !thresholds.is_empty() {
        Verdict::ThresholdFailed(thresholds.join("; "))
    } else if !harness.is_empty() {
        Verdict::HarnessFailed(harness.join("; "))
    } else {
        Verdict::Passed
    }
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
