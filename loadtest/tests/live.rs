//! A run seen from outside, with the real binary against a real server
//! (PostgreSQL and Redis from scripts/test.sh): progress lines while it
//! runs, the generator's Prometheus metrics on `--metrics-addr`, the
//! server's own numbers in the summary and the table, the report, and the
//! server gates' exit status.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tollgate_loadtest::summary::Summary;

/// A server of this test's own on port 0.
async fn server() -> tollgate::Running {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k}: run through scripts/test.sh"));
    let map: HashMap<String, String> = [
        ("DATABASE_URL", var("DATABASE_URL")),
        ("REDIS_URL", var("REDIS_URL")),
        ("BIND_ADDR", "127.0.0.1:0".into()),
        ("RUST_LOG", "error".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = tollgate::Config::from_source(&map).expect("valid configuration");
    tollgate::App::build(config).await.expect("server starts").spawn()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn out_dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("live-{name}"))
}

fn loadtest(args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate-loadtest"));
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_shows_progress_serves_its_metrics_and_records_what_the_server_saw() {
    let app = server().await;
    let port = free_port();
    let out = out_dir("metrics");
    let mut child = loadtest(&[
        "cached-read",
        "--host",
        &app.url(),
        "--no-calibrate",
        "--accounts",
        "2",
        "--tasks",
        "5",
        "--users",
        "2",
        "--run-time",
        "4",
        "--progress-secs",
        "1",
        "--run-id",
        "live-test",
        // Accounts of its own: the other test writes to its accounts' tasks.
        "--generator",
        "1/2",
        "--metrics-addr",
        &format!("127.0.0.1:{port}"),
        "--metrics-linger-secs",
        "2",
        "--out",
        out.to_str().expect("utf-8 path"),
    ])
    .spawn()
    .expect("the harness starts");
    let stderr = child.stderr.take().expect("stderr");
    let lines = tokio::spawn(async move {
        let mut out = Vec::new();
        let mut r = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(l)) = r.next_line().await {
            out.push(l);
        }
        out
    });
    // Scrape the generator while it runs (and lingers), as Prometheus would.
    let client = reqwest::Client::new();
    let mut scraped = String::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/metrics")).send().await {
            let text = r.text().await.unwrap_or_default();
            if text.contains(r#"scenario="cached-read""#) {
                scraped = text;
            }
        }
        if scraped.contains("loadtest_scenario_running{run_id=\"live-test\",scenario=\"cached-read\"} 0") {
            break;
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("ends").expect("waits");
    let stderr = lines.await.expect("stderr read");
    assert!(status.success(), "exit {status:?}\n{}", stderr.join("\n"));

    let progress: Vec<&String> = stderr.iter().filter(|l| l.starts_with("loadtest: cached-read  ")).collect();
    assert!(progress.len() >= 3, "a progress line a second:\n{}", stderr.join("\n"));
    assert!(
        progress
            .iter()
            .any(|l| l.contains("/4 s") && l.contains("req/s") && l.contains("p99") && l.contains("server hit ratio")),
        "{progress:?}"
    );

    let count = |class: &str| {
        let want = format!(
            r#"loadtest_requests_total{{class="{class}",request="GET /tasks",run_id="live-test",scenario="cached-read"}} "#
        );
        scraped.lines().find_map(|l| l.strip_prefix(&want)).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    assert!(count("2xx") > 10, "the generator's metrics while it ran:\n{scraped}");
    assert!(scraped.contains("loadtest_request_duration_seconds_bucket{"), "{scraped}");
    assert!(scraped.contains("loadtest_achieved_rps{run_id=\"live-test\",scenario=\"cached-read\"}"), "{scraped}");

    let summary: Summary =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("summary.json"))
            .expect("parses");
    let sc = &summary.scenarios[0];
    let server = sc.server.as_ref().expect("the server's /metrics were read");
    let (hits, misses) = server.cache["tasks"];
    assert!(hits + misses >= sc.requests, "every GET /tasks was a cache look-up: {server:?}, {} requests", sc.requests);
    assert!(server.hit_ratio.expect("a ratio") > 0.9, "{server:?}");
    // Redis answers the checks; a server of the other test starting (and
    // rebuilding Redis) at the same moment may send a few to PostgreSQL.
    assert!(server.db_check_share.expect("checks were made") < 0.05, "Redis answered the checks: {server:?}");
    assert!(server.errors_5xx.is_empty(), "{server:?}");
    assert!(sc.timeline.len() >= 3, "{:?}", sc.timeline);
    let p = summary.provenance.as_ref().expect("provenance");
    assert_eq!(p.run_id, "live-test");
    assert_eq!(p.settings["users"], "2");
    assert!(p.args.iter().any(|a| a == "--metrics-addr"), "{:?}", p.args);
    assert!(p.goose_version.starts_with("0.19"), "{}", p.goose_version);

    let report = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(report.matches("<svg class=\"chart\"").count() >= 4, "req/s, latency, distribution, hit ratio");
    assert!(!report.contains("<script") && !report.contains("http://cdn") && !report.contains("https://"));
    drop(app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_gate_that_fails_exits_2_and_says_why() {
    let app = server().await;
    let out = out_dir("gate");
    let o = loadtest(&[
        "miss-and-write",
        "--host",
        &app.url(),
        "--no-calibrate",
        "--accounts",
        "2",
        "--users",
        "2",
        "--run-time",
        "2",
        "--quiet",
        "--generator",
        "2/2",
        "--min-hit-ratio",
        "0.99",
        "--out",
        out.to_str().expect("utf-8 path"),
    ])
    .output()
    .await
    .expect("runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(2), "every write makes the next read a miss\n{stdout}\n{stderr}");
    assert!(stdout.contains("THRESHOLD FAILED: --min-hit-ratio 0.99: the server's cache hit ratio was"), "{stdout}");
    assert!(stdout.contains("server: cache hit ratio"), "the table shows the hit ratio:\n{stdout}");
    assert!(!stderr.contains("loadtest: miss-and-write  "), "--quiet silences progress:\n{stderr}");
    drop(app);
}
