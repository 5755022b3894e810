//! The command line: the harness's options and goose's in one clap
//! definition, so `--help` shows both and every option is checked before
//! any service starts or any account is set up.
//!
//! goose's own options (`--users`, `--run-time`, `--test-plan`,
//! `--threshold`, `--report-file`, ...) are goose 0.19's
//! [`GooseConfiguration`], flattened in as they are. A lone `--` before them
//! (the older form) is still accepted and ignored.

use crate::open::{Schedule, Step, parse_steps};
use crate::{RunOptions, scenarios};
use clap::{Args, Parser, Subcommand};
use goose::config::GooseConfiguration;
use std::path::PathBuf;
use std::time::Duration;

/// Exit statuses, documented in `--help` and the README.
pub const EXIT_CODES: &str = "\
Exit status:
  0  every scenario ran and passed
  1  the server broke the contract: failed requests, or a revoked token accepted
  2  a threshold (--threshold, --knee-*, or compare's limits) failed
  3  the harness itself could not run (bad options, set-up or target failure)";

/// `tollgate-loadtest`.
#[derive(Parser, Debug)]
#[command(name = "tollgate-loadtest", about = "Load scenarios for Tollgate, one per path", after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run scenarios against a deployment (--host) or a server started here.
    Run(Box<RunArgs>),
    /// Compare two summaries (baseline, current); exit 2 on a regression.
    Compare(CompareArgs),
    /// Draw the HTML report of a summary again.
    Report(ReportArgs),
    /// Merge the summaries of generators that ran at the same time.
    Merge(MergeArgs),
    /// Unknown email vs wrong password: do their login times differ?
    LoginTiming(LoginTimingArgs),
    /// List the scenarios.
    List,
}

/// `run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Scenarios to run (see `list`; `all` runs each). Default: cached-read.
    #[arg(value_name = "SCENARIO", id = "scenario_names")]
    pub scenario_names: Vec<String>,
    /// Allow a --host that is not a loopback address.
    #[arg(long, help_heading = "Target")]
    pub allow_remote: bool,
    /// Admin of the target, for the revocation scenario.
    #[arg(long, env = "ADMIN_EMAIL", help_heading = "Target")]
    pub admin_email: Option<String>,
    /// Password of --admin-email.
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true, help_heading = "Target")]
    pub admin_password: Option<String>,
    /// Reports go here: summary.json and one HTML report per scenario.
    #[arg(long, default_value = "target/loadtest", help_heading = "Harness")]
    pub out: PathBuf,
    /// Accounts set up for the user scenarios.
    #[arg(long, default_value_t = 32, help_heading = "Harness")]
    pub accounts: usize,
    /// Tasks per account: the cached page's size.
    #[arg(long, default_value_t = 20, help_heading = "Harness")]
    pub tasks: usize,
    /// Accounts banned and re-activated by the revocation scenario.
    #[arg(long, default_value_t = 8, help_heading = "Harness")]
    pub victims: usize,
    /// Access tokens of the deployment's identity provider for
    /// `external-read`, one per line (with a server the harness starts, it
    /// mints its own).
    #[arg(long, value_name = "FILE", help_heading = "Target")]
    pub external_tokens: Option<PathBuf>,
    /// How long each ban lasts, and each pause between bans (ms).
    #[arg(long, default_value_t = 300, help_heading = "Harness")]
    pub ban_hold_ms: u64,
    /// Weights of `mixed`, NAME=W,... (revocation=W adds banned victims).
    #[arg(long, default_value = "cached-read=70,miss-and-write=15,refresh=10,login=5", help_heading = "Harness")]
    pub mix: String,
    /// Skip measuring the generator's ceiling on GET /healthz.
    #[arg(long, help_heading = "Harness")]
    pub no_calibrate: bool,
    /// Seconds of that measurement.
    #[arg(long, default_value_t = 10, help_heading = "Harness")]
    pub calibrate_secs: usize,
    /// This generator is I of N (`--generator 2/3`): its own accounts and
    /// victims, so N generators at once never interfere; merge afterwards.
    #[arg(long, value_name = "I/N", value_parser = parse_generator, help_heading = "Harness")]
    pub generator: Option<(usize, usize)>,
    /// Run each scenario N times; the summary keeps every run's numbers,
    /// their medians and spread.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20), help_heading = "Harness")]
    pub repeat: u32,
    /// Open model: issue this many requests per second on schedule, whatever
    /// the answers (instead of goose's closed model).
    #[arg(long, value_name = "R", conflicts_with = "rate_steps", help_heading = "Open model")]
    pub rate: Option<f64>,
    /// Open model, staircase: RATE:DURATION,... e.g. 1000:30s,2000:30s.
    #[arg(long, value_name = "STEPS", value_parser = parse_steps, help_heading = "Open model")]
    pub rate_steps: Option<Schedule>,
    /// Seconds of a --rate run (a --rate-steps run takes its steps' sum).
    #[arg(long, default_value_t = 30.0, help_heading = "Open model")]
    pub rate_secs: f64,
    /// Requests in flight at most; a send due beyond it is dropped (counted).
    #[arg(long, default_value_t = 2048, help_heading = "Open model")]
    pub max_in_flight: usize,
    /// A step is within limits while its p99 (ms) stays at or below this
    /// [default: 50]. Given, the limits decide the exit status: 2 for a
    /// --rate run beyond them or a staircase whose first step is.
    #[arg(long, help_heading = "Open model")]
    pub knee_p99_ms: Option<f64>,
    /// ... and its error rate (percent) at or below this [default: 1].
    #[arg(long, help_heading = "Open model")]
    pub knee_max_error_pct: Option<f64>,
    /// The run's id, the `run_id` label of the generator's metrics
    /// [default: the start time and a random suffix].
    #[arg(long, help_heading = "Live")]
    pub run_id: Option<String>,
    /// Serve the generator's Prometheus metrics on ADDR (e.g.
    /// 127.0.0.1:9464; port 0 picks one and prints it) while the run lasts.
    #[arg(long, value_name = "ADDR", help_heading = "Live")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Keep serving them this many seconds after the run (the last scrape).
    #[arg(long, default_value_t = 15, help_heading = "Live")]
    pub metrics_linger_secs: u64,
    /// A progress line on stderr every N seconds (0: none; goose's
    /// --quiet silences it too).
    #[arg(long, default_value_t = 5, help_heading = "Live")]
    pub progress_secs: u64,
    /// Fail (exit 2) a scenario whose server-side cache hit ratio is below
    /// RATIO: `0.9`, or per scenario `cached-read=0.95,graphql-read=0.9`.
    /// Scenarios without cached requests are not judged unless named.
    #[arg(long, value_name = "GATES", value_parser = crate::probe::parse_gates, help_heading = "Server gates")]
    pub min_hit_ratio: Option<crate::probe::Gates>,
    /// Fail (exit 2) a scenario in which PostgreSQL answered more than
    /// RATIO of the revocation checks (Redis should answer them).
    #[arg(long, value_name = "GATES", value_parser = crate::probe::parse_gates, help_heading = "Server gates")]
    pub max_db_check_share: Option<crate::probe::Gates>,
    /// Check every option, then exit 0 without running anything (the
    /// scripts call this before they start services).
    #[arg(long, help_heading = "Harness")]
    pub dry_run: bool,
    /// goose's options.
    #[command(flatten)]
    pub goose: GooseConfiguration,
}

/// `compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// The baseline summary.
    pub baseline: PathBuf,
    /// The current summary.
    pub current: PathBuf,
    /// Largest allowed drop of req/s, percent.
    #[arg(long, default_value_t = 10.0)]
    pub max_rps_drop: f64,
    /// Largest allowed rise of p99, percent.
    #[arg(long, default_value_t = 10.0)]
    pub max_p99_rise: f64,
    /// text (a terminal table), md (Markdown for a pull-request comment,
    /// the verdict first) or junit (XML, a test case per scenario, request
    /// and metric).
    #[arg(long, value_enum, default_value = "text")]
    pub format: CompareFormat,
    /// Compare runs whose settings (users, run time, rates, accounts,
    /// CPUs, ...) differ; without it such a comparison is refused (exit 3).
    #[arg(long)]
    pub allow_different_settings: bool,
}

/// How `compare` prints.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareFormat {
    /// A terminal table.
    Text,
    /// Markdown.
    Md,
    /// JUnit XML.
    Junit,
}

/// `report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The summary.
    pub summary: PathBuf,
    /// Where the HTML goes [default: report.html beside the summary].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `merge`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Where the merged summary goes.
    pub out: PathBuf,
    /// The generators' summaries.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

/// `login-timing`.
#[derive(Args, Debug)]
pub struct LoginTimingArgs {
    /// The deployment (loopback only).
    #[arg(long)]
    pub host: String,
    /// Logins of each kind.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub tries: u64,
}

fn parse_generator(s: &str) -> Result<(usize, usize), String> {
    let (i, n) = s.split_once('/').ok_or("takes I/N, e.g. 1/3")?;
    let (i, n): (usize, usize) = (i.parse().map_err(|_| "I is a number")?, n.parse().map_err(|_| "N is a number")?);
    if n == 0 || i == 0 || i > n {
        return Err(format!("{i}/{n}: I runs from 1 to N"));
    }
    Ok((i, n))
}

/// Parses the process's arguments: `run` is the default command, and a
/// lone `--` (the older way to pass goose's options) is dropped.
pub fn parse_from<I: IntoIterator<Item = String>>(args: I) -> Result<Cli, clap::Error> {
    let mut args: Vec<String> = args.into_iter().filter(|a| a != "--").collect();
    let commands = ["run", "compare", "report", "merge", "login-timing", "list", "help", "-h", "--help"];
    if args.len() < 2 || !commands.contains(&args[1].as_str()) {
        args.insert(1.min(args.len()), "run".into());
    }
    Cli::try_parse_from(args)
}

impl RunArgs {
    /// The run's options, checked: scenario names, the mix, the open model.
    pub fn into_options(self) -> anyhow::Result<RunOptions> {
        let mut mix = Vec::new();
        for part in self.mix.split(',') {
            let (n, w) = part.split_once('=').ok_or_else(|| anyhow::anyhow!("--mix takes NAME=WEIGHT,..."))?;
            let w: usize = w.trim().parse().map_err(|_| anyhow::anyhow!("--mix weights are whole numbers"))?;
            anyhow::ensure!(scenarios::find(n.trim()).is_some(), "--mix: {n} is not a scenario (see list)");
            mix.push((n.trim().to_owned(), w));
        }
        let names = if self.scenario_names.is_empty() { vec!["cached-read".to_owned()] } else { self.scenario_names };
        let no_provider_tokens = self.goose.host.is_some() && self.external_tokens.is_none();
        let names = crate::expand_for(&names, no_provider_tokens)?;
        let steps = match (self.rate, self.rate_steps) {
            (Some(r), _) => Some(vec![Step { rate: r, secs: self.rate_secs }]),
            (None, steps) => steps.map(|s| s.0),
        };
        if let Some(steps) = &steps {
            for n in &names {
                anyhow::ensure!(
                    crate::open::supports(n),
                    "--rate/--rate-steps: scenario {n} has no open-model form (it has: {})",
                    crate::open::SUPPORTED.join(", ")
                );
            }
            anyhow::ensure!(steps.iter().all(|s| s.rate > 0.0 && s.secs > 0.0), "rates and durations must be above 0");
        }
        let quiet = self.goose.quiet > 0;
        if crate::has_test_plan(&self.goose) {
            anyhow::ensure!(steps.is_none(), "--test-plan is goose's closed model; it does not go with --rate");
        }
        Ok(RunOptions {
            scenarios: names,
            host: self.goose.host.clone(),
            allow_remote: self.allow_remote,
            out_dir: self.out,
            accounts: self.accounts,
            tasks: self.tasks,
            victims: self.victims,
            external_tokens: self.external_tokens,
            ban_hold: Duration::from_millis(self.ban_hold_ms),
            mix,
            calibrate: !self.no_calibrate,
            calibrate_secs: self.calibrate_secs,
            admin: self.admin_email.zip(self.admin_password),
            goose: self.goose,
            server_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            generator: self.generator.unwrap_or((1, 1)),
            repeat: self.repeat,
            open: steps.map(|steps| crate::open::OpenOptions {
                steps,
                max_in_flight: self.max_in_flight,
                knee_p99_ms: self.knee_p99_ms.unwrap_or(50.0),
                knee_max_error_pct: self.knee_max_error_pct.unwrap_or(1.0),
                limits_given: self.knee_p99_ms.is_some() || self.knee_max_error_pct.is_some(),
            }),
            run_id: self.run_id.unwrap_or_else(crate::new_run_id),
            metrics_addr: self.metrics_addr,
            metrics_linger: Duration::from_secs(if self.metrics_addr.is_some() { self.metrics_linger_secs } else { 0 }),
            progress_every: Duration::from_secs(if quiet { 0 } else { self.progress_secs }),
            server_gates: crate::probe::ServerGates {
                min_hit_ratio: self.min_hit_ratio.unwrap_or_default().0,
                max_db_check_share: self.max_db_check_share.unwrap_or_default().0,
            },
            args: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn run(args: &[&str]) -> Result<RunOptions, String> {
        let cli = parse_from(std::iter::once("tollgate-loadtest").chain(args.iter().copied()).map(String::from))
            .map_err(|e| e.to_string())?;
        match cli.command {
            Command::Run(r) => r.into_options().map_err(|e| e.to_string()),
            other => Err(format!("not run: {other:?}")),
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn harness_and_goose_options_mix_in_one_command_line() {
        let o = run(&["cached-read", "--accounts", "4", "--users", "8", "-t", "5s", "--generator", "2/3"]).expect("ok");
        assert_eq!((o.accounts, o.goose.users, o.goose.run_time.as_deref()), (4, Some(8), Some("5s")));
        assert_eq!(o.generator, (2, 3));
        let old = run(&["refresh", "--", "--users", "8"]).expect("the older -- form");
        assert_eq!((o.scenarios.len(), old.goose.users), (1, Some(8)));
        assert!(crate::has_test_plan(&run(&["--test-plan", "8,2s;8,4s;0,1s"]).expect("a test plan").goose));
    }

    #[test]
    fn bad_options_are_refused_before_anything_runs() {
        assert!(run(&["nope"]).expect_err("refused").contains("unknown scenario"));
        assert!(run(&["--mix", "cached-read=x"]).is_err());
        assert!(run(&["--mix", "nothing=1"]).is_err());
        assert!(run(&["--generator", "4/3"]).is_err());
        assert!(run(&["--rate", "10", "revocation"]).expect_err("refused").contains("open-model"));
        assert!(run(&["--rate", "10", "--rate-steps", "1:1s"]).is_err());
        assert!(run(&["--rate-steps", "100:2s,oops"]).is_err());
        assert!(run(&["--users", "nope"]).is_err(), "goose's options are checked too");
    }
}
