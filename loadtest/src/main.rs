//! `tollgate-loadtest`: the command line of the load harness.

use mimalloc::MiMalloc;
use std::path::Path;
use std::process::ExitCode;
use tollgate_loadtest::cli::{
    self, Command, CompareArgs, CompareFormat, LoginTimingArgs, MergeArgs, ReportArgs, RunArgs,
};
use tollgate_loadtest::summary::{self, Limits, Summary};
use tollgate_loadtest::{Verdict, run, verdict};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// Exit status when the harness could not run (see `cli::EXIT_CODES`).
const EX_HARNESS: u8 = 3;

fn usage(msg: &str) -> ExitCode {
    eprintln!("tollgate-loadtest: {msg} (see --help)");
    ExitCode::from(EX_HARNESS)
}

fn read_summary(path: &Path) -> Result<Summary, String> {
    let p = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {p}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{p} is not a summary: {e}"))
}

fn main() -> ExitCode {
    let cli = match cli::parse_from(std::env::args()) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print and succeed; anything else is a
            // usage error of the harness (exit 3, not clap's 2, which here
            // means a failed threshold).
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(EX_HARNESS) } else { ExitCode::SUCCESS };
        }
    };
    match cli.command {
        Command::List => {
            for d in tollgate_loadtest::scenarios::REGISTRY {
                println!("{:<16} {}", d.name, d.about);
            }
            println!("{:<16} the above by weight (--mix)", tollgate_loadtest::scenarios::MIXED);
            ExitCode::SUCCESS
        }
        Command::Compare(a) => compare(a),
        Command::Report(a) => report(a),
        Command::Merge(a) => merge(a),
        Command::LoginTiming(a) => login_timing(a),
        Command::Run(a) => run_cmd(*a),
    }
}

fn compare(a: CompareArgs) -> ExitCode {
    let limits = Limits { max_rps_drop_pct: a.max_rps_drop, max_p99_rise_pct: a.max_p99_rise };
    let (base, cur) = match (read_summary(&a.baseline), read_summary(&a.current)) {
        (Ok(b), Ok(c)) => (b, c),
        (Err(e), _) | (_, Err(e)) => return usage(&e),
    };
    let differ = summary::settings_differ(&base, &cur);
    if !differ.is_empty() && !a.allow_different_settings {
        return usage(&format!(
            "the runs were made with different settings ({}); a difference there is not a regression. \
             Pass --allow-different-settings to compare them anyway",
            differ.join("; ")
        ));
    }
    let c = summary::compare(&base, &cur, limits);
    match a.format {
        CompareFormat::Text => print!("{}", summary::compare_text(&c)),
        CompareFormat::Md => print!("{}", summary::compare_markdown(&c, &base, &cur)),
        CompareFormat::Junit => print!("{}", summary::compare_junit(&c)),
    }
    if c.ok() { ExitCode::SUCCESS } else { ExitCode::from(2) }
}

fn report(a: ReportArgs) -> ExitCode {
    let s = match read_summary(&a.summary) {
        Ok(s) => s,
        Err(e) => return usage(&e),
    };
    let out = a.out.unwrap_or_else(|| a.summary.with_file_name("report.html"));
    match std::fs::write(&out, tollgate_loadtest::report::render(&s)) {
        Ok(()) => {
            println!("report: {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => usage(&format!("writing {}: {e}", out.display())),
    }
}

fn merge(a: MergeArgs) -> ExitCode {
    let mut parts = Vec::new();
    for p in &a.inputs {
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
        .and_then(|b| std::fs::write(&a.out, b).map_err(|e| e.to_string()))
    {
        return usage(&format!("writing {}: {e}", a.out.display()));
    }
    print!("{}", summary::table(&merged));
    ExitCode::SUCCESS
}

/// Unknown email against wrong password: medians and their difference.
fn login_timing(a: LoginTimingArgs) -> ExitCode {
    let (host, tries) = (a.host, a.tries as usize);
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
        Err(e) => usage(&format!("{e:#}")),
    }
}

fn run_cmd(args: RunArgs) -> ExitCode {
    let dry_run = args.dry_run;
    let mut o = match args.into_options() {
        Ok(o) => o,
        Err(e) => return usage(&format!("{e:#}")),
    };
    o.args = std::env::args().collect();
    // goose's options against the harness's defaults, before any service
    // starts or any account is set up.
    if let Err(e) = tollgate_loadtest::check_goose(&o) {
        return usage(&format!("{e:#}"));
    }
    if dry_run {
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return usage(&format!("cannot start the runtime: {e}")),
    };
    let out_dir = o.out_dir.clone();
    match rt.block_on(run(o)) {
        Ok(s) => {
            print!("{}", summary::table(&s));
            println!(
                "reports: {0}/summary.json, {0}/report.html (charts, opens offline), and goose's HTML report per scenario",
                out_dir.display()
            );
            let v = verdict(&s);
            match &v {
                Verdict::Passed => {}
                Verdict::ContractBroken(why) => eprintln!("tollgate-loadtest: CONTRACT BROKEN: {why}"),
                Verdict::ThresholdFailed(why) => eprintln!("tollgate-loadtest: THRESHOLD FAILED: {why}"),
                Verdict::HarnessFailed(why) => eprintln!("tollgate-loadtest: COULD NOT RUN: {why}"),
            }
            ExitCode::from(v.code())
        }
        Err(e) => usage(&format!("{e:#}")),
    }
}
