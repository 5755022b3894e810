//! Every scenario runs a few seconds against the embedded server (real
//! PostgreSQL and Redis from scripts/test.sh) and yields a non-empty summary
//! with zero failures; the revocation scenario bans for real and reports no
//! request accepted after a ban.

use std::time::Duration;
use tollgate_loadtest::{RunOptions, Verdict, goose_config, run, scenarios, verdict};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_clean_against_the_embedded_server() {
    assert!(
        std::env::var("DATABASE_URL").is_ok() && std::env::var("REDIS_URL").is_ok(),
        "run through scripts/test.sh (it starts PostgreSQL and Redis)"
    );
    let out = std::env::temp_dir().join(format!("tollgate-loadtest-{}", std::process::id()));
    let opts = RunOptions {
        scenarios: vec!["all".into()],
        out_dir: out.clone(),
        accounts: 4,
        tasks: 20,
        victims: 2,
        ban_hold: Duration::from_millis(150),
        calibrate_secs: 1,
        goose: goose_config(&["--users", "4", "--increase-rate", "4", "--run-time", "3"]).expect("goose options"),
        server_threads: 2,
        ..RunOptions::default()
    };
    let summary = run(opts).await.expect("the run completes");
    assert_eq!(verdict(&summary), Verdict::Passed, "{}", tollgate_loadtest::summary::table(&summary));
    let names: Vec<&str> = summary.scenarios.iter().map(|s| s.scenario.as_str()).collect();
    let mut expected = vec!["healthz"];
    expected.extend(scenarios::names());
    assert_eq!(names, expected);
    let ceiling = summary.scenarios[0].rps;
    for s in &summary.scenarios {
        assert!(s.requests > 0 && s.rps > 0.0, "{} made requests", s.scenario);
        assert!(s.by_request.iter().all(|r| r.p50_ms > 0.0 && r.p99_ms >= r.p50_ms), "{} has latencies", s.scenario);
    }
    for s in &summary.scenarios[1..] {
        assert_eq!(s.ceiling_rps, Some(ceiling), "{} carries the generator's ceiling", s.scenario);
    }
    let rev = summary
        .scenarios
        .iter()
        .find(|s| s.scenario == "revocation")
        .and_then(|s| s.revocation.clone())
        .expect("stats");
    assert!(rev.bans >= 2, "bans happened: {rev:?}");
    assert_eq!(rev.accepted_after_ban, 0);
    assert!(out.join("summary.json").exists() && out.join("cached-read.html").exists());
    let _ = std::fs::remove_dir_all(out);
}
