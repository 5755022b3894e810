//! The harness's promises, each against a real server (in-process, real
//! PostgreSQL and Redis from scripts/test.sh): test plans work, a failed
//! threshold loses no result, the open model runs at a rate and up a
//! staircase, parallel generators do not interfere and merge exactly, the
//! open model shows a stall the closed model hides, and runs outlive the
//! access-token lifetime.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate_loadtest::open::{OpenOptions, Step};
use tollgate_loadtest::summary::{self, Summary};
use tollgate_loadtest::{RunOptions, Verdict, goose_config, run, verdict};

const ADMIN: (&str, &str) = ("harness-admin@tollgate-loadtest.example", "harness-admin-password");

/// A server of this test's own on port 0.
async fn server(extra: &[(&str, &str)]) -> tollgate::Running {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k}: run through scripts/test.sh"));
    let mut map: HashMap<String, String> = [
        ("DATABASE_URL", var("DATABASE_URL")),
        ("REDIS_URL", var("REDIS_URL")),
        ("BIND_ADDR", "127.0.0.1:0".into()),
        ("RUST_LOG", "error".into()),
        ("ADMIN_EMAIL", ADMIN.0.into()),
        ("ADMIN_PASSWORD", ADMIN.1.into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in extra {
        map.insert((*k).to_owned(), (*v).to_owned());
    }
    let config = tollgate::Config::from_source(&map).expect("valid configuration");
    tollgate::App::build(config).await.expect("server starts").spawn()
}

fn options(host: &str, scenario: &str, out: &str, goose: &[&str]) -> RunOptions {
    RunOptions {
        scenarios: vec![scenario.into()],
        host: Some(host.to_owned()),
        // Inside target/ (cargo gives integration tests this folder).
        out_dir: std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("harness-{out}")),
        accounts: 4,
        tasks: 5,
        calibrate: false,
        goose: goose_config(goose).expect("goose options"),
        ..RunOptions::default()
    }
}

fn open(steps: &[(f64, f64)]) -> Option<OpenOptions> {
    Some(OpenOptions {
        steps: steps.iter().map(|&(rate, secs)| Step { rate, secs }).collect(),
        max_in_flight: 512,
        knee_p99_ms: 100.0,
        knee_max_error_pct: 1.0,
        limits_given: false,
    })
}

fn written(o: &RunOptions) -> Summary {
    let text = std::fs::read_to_string(o.out_dir.join("summary.json")).expect("summary.json written");
    serde_json::from_str(&text).expect("a summary")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_plan_runs() {
    let app = server(&[]).await;
    let o = options(&app.url(), "cached-read", "plan", &["--test-plan", "2,1s;2,2s;0,1s"]);
    let s = run(o).await.expect("runs");
    assert_eq!(verdict(&s), Verdict::Passed, "{}", summary::table(&s));
    assert!(s.scenarios[0].requests > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_threshold_loses_no_result_and_exits_2() {
    let app = server(&[]).await;
    let mut o =
        options(&app.url(), "cached-read", "threshold", &["--users", "2", "-t", "2", "--threshold", "p99<0.01ms"]);
    o.scenarios.push("refresh".into());
    let s = run(o.clone()).await.expect("runs");
    let v = verdict(&s);
    assert!(matches!(v, Verdict::ThresholdFailed(_)), "{v:?}");
    assert_eq!(v.code(), 2);
    let on_disk = written(&o);
    let names: Vec<&str> = on_disk.scenarios.iter().map(|s| s.scenario.as_str()).collect();
    assert_eq!(names, ["cached-read", "refresh"], "every scenario ran and was written");
    assert!(on_disk.scenarios.iter().all(|s| !s.thresholds_failed.is_empty() && s.requests > 0));
    assert!(o.out_dir.join("cached-read.html").exists() && o.out_dir.join("refresh.html").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_model_runs_at_a_rate_and_up_a_staircase() {
    let app = server(&[]).await;
    let mut o = options(&app.url(), "cached-read", "rate", &[]);
    o.open = open(&[(50.0, 2.0)]);
    let s = run(o).await.expect("runs");
    let st = &s.scenarios[0].open.as_ref().expect("open stats").steps[0];
    assert_eq!(st.due, 100);
    assert_eq!((st.completed, st.errors), (100, 0), "{}", summary::table(&s));
    assert!(st.achieved_rps > 40.0, "{st:?}");
    assert!(s.scenarios[0].by_request[0].hdr.is_some(), "the histogram is kept");
    let mut o = options(&app.url(), "cached-read", "steps", &[]);
    o.open = open(&[(20.0, 1.0), (60.0, 1.0), (120.0, 1.0)]);
    let s = run(o).await.expect("runs");
    let open = s.scenarios[0].open.as_ref().expect("open stats");
    assert_eq!(open.steps.iter().map(|s| s.due).collect::<Vec<_>>(), [20, 60, 120]);
    assert!(open.knee_rps.is_some(), "a knee at these gentle rates: {}", summary::table(&s));
    assert_eq!(verdict(&s), Verdict::Passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_generators_at_once_do_not_interfere_and_merge_exactly() {
    let app = server(&[]).await;
    let mut runs = Vec::new();
    for i in 1..=3 {
        let mut o = options(&app.url(), "mixed", &format!("gen{i}"), &["--users", "3", "-t", "3"]);
        o.generator = (i, 3);
        o.victims = 2;
        o.ban_hold = Duration::from_millis(150);
        o.mix = vec![("cached-read".into(), 3), ("revocation".into(), 1)];
        o.admin = Some((ADMIN.0.into(), ADMIN.1.into()));
        runs.push(tokio::spawn(run(o)));
    }
    let mut parts = Vec::new();
    for r in runs {
        parts.push(r.await.expect("join").expect("runs"));
    }
    for p in &parts {
        assert_eq!(verdict(p), Verdict::Passed, "no generator saw another's bans: {}", summary::table(p));
    }
    let merged = summary::merge(&parts).expect("merges");
    let rows = |s: &Summary| s.scenarios[0].by_request.iter().find(|r| r.name == "GET /tasks").cloned().expect("row");
    let total: u64 = parts.iter().map(|p| rows(p).requests).sum();
    let m = rows(&merged);
    assert_eq!(m.requests, total);
    assert!(m.hdr.is_some(), "merged from histograms, not the worst part");
    let worst = parts.iter().map(|p| rows(p).p99_ms).fold(0.0, f64::max);
    assert!(m.p99_ms <= worst, "the true p99 of the sum is never above the worst part's");
}

/// A TCP proxy that holds every byte for 200 ms of each second: a server
/// that stalls.
async fn stalling_proxy(target: std::net::SocketAddr) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stalled = Arc::new(AtomicBool::new(false));
    let s = stalled.clone();
    tokio::spawn(async move {
        for _ in 0..120 {
            tokio::time::sleep(Duration::from_millis(800)).await;
            s.store(true, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            s.store(false, Ordering::SeqCst);
        }
    });
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let stalled = stalled.clone();
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(target).await else { return };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pump(ri, wo, stalled.clone()));
                pump(ro, wi, stalled).await;
            });
        }
    });
    addr
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if let Err(e) = to.write_all(&buf[..n]).await
            && e.kind() != ErrorKind::BrokenPipe
        {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_model_shows_a_stall_that_the_closed_model_hides() {
    let app = server(&[]).await;
    let proxy = format!("http://{}", stalling_proxy(app.addr).await);
    // Closed: one user waits out each stall with one request, so about one
    // request a second is slow and the p99 stays low.
    let closed = run(options(&proxy, "cached-read", "closed", &["--users", "1", "-t", "6"])).await.expect("runs");
    let closed_p99 = closed.scenarios[0].by_request[0].p99_ms;
    // Open: requests keep falling due during each stall; a fifth of them
    // wait up to 200 ms from their due time.
    let mut o = options(&proxy, "cached-read", "open", &[]);
    o.open = open(&[(100.0, 6.0)]);
    let opened = run(o).await.expect("runs");
    let open_p99 = opened.scenarios[0].by_request[0].p99_ms;
    eprintln!("stall every second: closed-model p99 {closed_p99:.1} ms, open-model p99 {open_p99:.1} ms");
    assert!(open_p99 > 120.0, "the open model shows the stall: p99 {open_p99} ms");
    assert!(closed_p99 < 100.0, "the closed model hides it: p99 {closed_p99} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_longer_than_the_token_lifetime_stay_clean() {
    // Tokens of 6 s, renewed at a tenth of their life (at least 5 s) before
    // expiry: a 9 s run crosses at least one renewal of every token.
    let app = server(&[("ACCESS_TOKEN_TTL_SECS", "6")]).await;
    let closed =
        run(options(&app.url(), "cached-read", "long-closed", &["--users", "2", "-t", "9"])).await.expect("runs");
    assert_eq!(verdict(&closed), Verdict::Passed, "{}", summary::table(&closed));
    let mut o = options(&app.url(), "cached-read", "long-open", &[]);
    o.open = open(&[(20.0, 9.0)]);
    let opened = run(o).await.expect("runs");
    let st = &opened.scenarios[0].open.as_ref().expect("open").steps[0];
    assert_eq!(st.errors, 0, "{}", summary::table(&opened));
}
