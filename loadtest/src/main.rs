//! `tollgate-loadtest`: the command line of the load harness.

use mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tollgate_loadtest::summary::{self, Limits, Summary};
use tollgate_loadtest::{RunOptions, run, verdict};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

const HELP: &str = "\
tollgate-loadtest: load scenarios for Tollgate, one per path

USAGE:
  tollgate-loadtest [run] [SCENARIO ...] [OPTIONS] [-- GOOSE OPTIONS]
  tollgate-loadtest compare BASELINE.json CURRENT.json [--max-rps-drop PCT] [--max-p99-rise PCT]
  tollgate-loadtest merge OUT.json IN.json ...
  tollgate-loadtest login-timing --host URL [--tries N]
  tollgate-loadtest list

SCENARIOS (`list` describes each): cached-read (the default), the others of
`list`, mixed (their weighted combination), all

RUN OPTIONS:
  --host URL            target a deployment (default: start a server here, with
                        throwaway PostgreSQL and Redis unless DATABASE_URL and
                        REDIS_URL are set)
  --allow-remote        allow a --host that is not a loopback address
  --out DIR             reports: DIR/summary.json, DIR/SCENARIO.html (target/loadtest)
  --accounts N          accounts set up for the user scenarios (32)
  --tasks N             tasks per account, the cached page's size (20)
  --victims N           accounts banned and re-activated by `revocation` (8)
  --ban-hold-ms N       how long each ban lasts, and each pause between bans (300)
  --mix NAME=W,...      weights of `mixed` (cached-read=70,miss-and-write=15,refresh=10,login=5);
                        revocation=W adds banned victims and the accepted-after-ban check
  --no-calibrate        skip measuring the generator's ceiling on GET /healthz
  --calibrate-secs N    length of that measurement (10)
  --admin-email E / --admin-password P
                        admin of the target, for `revocation` (or ADMIN_EMAIL / ADMIN_PASSWORD)

GOOSE OPTIONS (after --) pass through, e.g. --users 64 --run-time 30s --threshold \"p99<50ms\".
Defaults: --users 32, --increase-rate 32, --run-time 30.

Exit status: 0 when every request behaved as the contract says, 1 otherwise
(failures, or a revoked token accepted), 2 on a usage error; `compare` exits 1
on a regression.
";

fn usage(msg: &str) -> ExitCode {
    eprintln!("tollgate-loadtest: {msg}\n\n{HELP}");
    ExitCode::from(2)
}

fn read_summary(path: &str) -> Result<Summary, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{path} is not a summary: {e}"))
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let goose_args = match args.iter().position(|a| a == "--") {
        Some(i) => {
            let rest = args.split_off(i + 1);
            args.pop();
            rest
        }
        None => Vec::new(),
    };
    match args.first().map(String::as_str) {
        Some("-h" | "--help" | "help") => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Some("list") => {
            for d in tollgate_loadtest::scenarios::REGISTRY {
                println!("{:<16} {}", d.name, d.about);
            }
            println!("{:<16} the above by weight (--mix)", tollgate_loadtest::scenarios::MIXED);
            ExitCode::SUCCESS
        }
        Some("compare") => compare(&args[1..]),
        Some("merge") => merge(&args[1..]),
        Some("login-timing") => login_timing(&args[1..]),
        Some("run") => run_cmd(&args[1..], goose_args),
        _ => run_cmd(&args, goose_args),
    }
}

fn compare(args: &[String]) -> ExitCode {
    let mut files = Vec::new();
    let mut limits = Limits::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut pct =
            |what: &str| it.next().and_then(|v| v.parse::<f64>().ok()).ok_or(format!("{what} needs a number"));
        match a.as_str() {
            "--max-rps-drop" => match pct("--max-rps-drop") {
                Ok(v) => limits.max_rps_drop_pct = v,
                Err(e) => return usage(&e),
            },
            "--max-p99-rise" => match pct("--max-p99-rise") {
                Ok(v) => limits.max_p99_rise_pct = v,
                Err(e) => return usage(&e),
            },
            f => files.push(f.to_owned()),
        }
    }
    let [base, cur] = files.as_slice() else {
        return usage("compare needs BASELINE.json and CURRENT.json");
    };
    let (base, cur) = match (read_summary(base), read_summary(cur)) {
        (Ok(b), Ok(c)) => (b, c),
        (Err(e), _) | (_, Err(e)) => return usage(&e),
    };
    let (table, ok) = summary::compare(&base, &cur, limits);
    print!("{table}");
    if ok {
        println!("no regression (limits: req/s -{}%, p99 +{}%)", limits.max_rps_drop_pct, limits.max_p99_rise_pct);
        ExitCode::SUCCESS
    } else {
        println!("REGRESSION (limits: req/s -{}%, p99 +{}%)", limits.max_rps_drop_pct, limits.max_p99_rise_pct);
        ExitCode::from(1)
    }
}

fn merge(args: &[String]) -> ExitCode {
    let [out, inputs @ ..] = args else {
        return usage("merge needs OUT.json and at least one IN.json");
    };
    if inputs.is_empty() {
        return usage("merge needs at least one IN.json");
    }
    let mut parts = Vec::new();
    for p in inputs {
        match read_summary(p) {
            Ok(s) => parts.push(s),
            Err(e) => return usage(&e),
        }
    }
    let merged = match summary::merge(&parts) {
        Ok(m) => m,
        Err(e) => return usage(&e.to_string()),
    };
    if let Err(e) = serde_json::to_vec_pretty(&merged)
        .map_err(|e| e.to_string())
        .and_then(|b| std::fs::write(out, b).map_err(|e| e.to_string()))
    {
        eprintln!("tollgate-loadtest: writing {out}: {e}");
        return ExitCode::FAILURE;
    }
    print!("{}", summary::table(&merged));
    ExitCode::SUCCESS
}

/// Unknown email against wrong password: medians and their difference.
fn login_timing(args: &[String]) -> ExitCode {
    let mut host = None;
    let mut tries = 300usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--host", Some(h)) => host = Some(h.clone()),
            ("--tries", Some(n)) => match n.parse() {
                Ok(n) if n > 0 => tries = n,
                _ => return usage("--tries needs a positive number"),
            },
            _ => return usage(&format!("login-timing: unexpected {a}")),
        }
    }
    let Some(host) = host else { return usage("login-timing needs --host URL") };
    if !tollgate_loadtest::target::is_loopback(&host) {
        return usage("login-timing only targets loopback addresses");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tollgate-loadtest: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(tollgate_loadtest::login_timing(host.trim_end_matches('/'), tries)) {
        Ok((unknown, wrong)) => {
            let diff = (unknown - wrong).abs() / wrong.max(unknown) * 100.0;
            println!(
                "login timing over {tries} tries each: unknown email median {unknown:.2} ms, wrong password median {wrong:.2} ms, difference {diff:.1}%"
            );
            if diff < 10.0 {
                ExitCode::SUCCESS
            } else {
                println!("the difference is 10% or more: response time reveals which emails exist");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("tollgate-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_cmd(args: &[String], goose_args: Vec<String>) -> ExitCode {
    let mut o = RunOptions { goose_args, ..RunOptions::default() };
    let mut names = Vec::new();
    let (mut admin_email, mut admin_password) =
        (std::env::var("ADMIN_EMAIL").ok(), std::env::var("ADMIN_PASSWORD").ok());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().cloned().ok_or(format!("{flag} needs a value"));
        let r: Result<(), String> = (|| {
            match a.as_str() {
                "--host" => o.host = Some(value("--host")?),
                "--allow-remote" => o.allow_remote = true,
                "--out" => o.out_dir = PathBuf::from(value("--out")?),
                "--accounts" => o.accounts = value("--accounts")?.parse().map_err(|_| "--accounts needs a number")?,
                "--tasks" => o.tasks = value("--tasks")?.parse().map_err(|_| "--tasks needs a number")?,
                "--victims" => o.victims = value("--victims")?.parse().map_err(|_| "--victims needs a number")?,
                "--ban-hold-ms" => {
                    o.ban_hold = Duration::from_millis(
                        value("--ban-hold-ms")?.parse().map_err(|_| "--ban-hold-ms needs a number")?,
                    )
                }
                "--calibrate-secs" => {
                    o.calibrate_secs =
                        value("--calibrate-secs")?.parse().map_err(|_| "--calibrate-secs needs a number")?
                }
                "--no-calibrate" => o.calibrate = false,
                "--admin-email" => admin_email = Some(value("--admin-email")?),
                "--admin-password" => admin_password = Some(value("--admin-password")?),
                "--mix" => {
                    let mut mix = Vec::new();
                    for part in value("--mix")?.split(',') {
                        let (n, w) = part.split_once('=').ok_or("--mix takes NAME=WEIGHT,...")?;
                        mix.push((n.trim().to_owned(), w.trim().parse().map_err(|_| "--mix weights are numbers")?));
                    }
                    o.mix = mix;
                }
                flag if flag.starts_with('-') => {
                    return Err(format!("unknown option {flag} (goose options go after --)"));
                }
                name => names.push(name.to_owned()),
            }
            Ok(())
        })();
        if let Err(e) = r {
            return usage(&e);
        }
    }
    if !names.is_empty() {
        o.scenarios = names;
    }
    if let Err(e) = tollgate_loadtest::expand(&o.scenarios) {
        return usage(&e.to_string());
    }
    o.admin = admin_email.zip(admin_password);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tollgate-loadtest: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out_dir = o.out_dir.clone();
    match rt.block_on(run(o)) {
        Ok(s) => {
            print!("{}", summary::table(&s));
            println!("reports: {}/summary.json and one HTML report per scenario", out_dir.display());
            match verdict(&s) {
                None => ExitCode::SUCCESS,
                Some(why) => {
                    eprintln!("tollgate-loadtest: FAILED: {why}");
                    ExitCode::from(1)
                }
            }
        }
        Err(e) => {
            eprintln!("tollgate-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}
