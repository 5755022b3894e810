//! A run as it happens: progress on stderr, the generator's own Prometheus
//! metrics, and the timeline the HTML report draws.
//!
//! Every request the scenarios send goes through [`Live::observe`]. Once a
//! second a watcher ([`Live::watch`]) closes the interval: it notes each
//! request name's rate and p50/p99 and the server's cache hit ratio (from a
//! scrape of its `/metrics`) into the scenario's [`Tick`]s, and every
//! `--progress-secs` it prints one line. With `--metrics-addr` the same
//! counts are served to Prometheus, labelled with the run's id, so N
//! generators scraped by one Prometheus add up there and a dashboard can
//! tell a load test from production traffic.

use crate::probe::{self, Scrape, ServerStats};
use crate::summary::Hist;
use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Latency buckets of `loadtest_request_duration_seconds` (the server's
/// request histogram uses the same range, so the two sit on one panel).
const BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// One second of a scenario, for the report's charts.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Tick {
    /// Seconds since the scenario started (end of the interval).
    pub t_s: f64,
    /// Per request name: requests per second, p50 and p99 (ms).
    pub requests: BTreeMap<String, TickRow>,
    /// The server's cache hit ratio in this interval, when it served any
    /// cached path and its `/metrics` could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hit_ratio: Option<f64>,
}

/// One request name in one [`Tick`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TickRow {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// Counts since the last tick (and since the last printed line).
#[derive(Default)]
struct Window {
    hists: BTreeMap<String, Hist>,
    errors: u64,
}

/// The live side of one invocation.
pub struct Live {
    run_id: String,
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    target_rps: GaugeVec,
    achieved_rps: GaugeVec,
    running: GaugeVec,
    started: GaugeVec,
    scenario: RwLock<String>,
    tick: Mutex<Window>,
}

/// How a watcher reports.
#[derive(Clone, Debug)]
pub struct Progress {
    /// Seconds between printed lines (0: none).
    pub every: Duration,
    /// The target to scrape for the hit ratio (None: do not scrape).
    pub target: Option<String>,
}

impl Live {
    /// A registry for run `run_id`.
    pub fn new(run_id: &str) -> anyhow::Result<Arc<Self>> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("loadtest_requests_total", "Requests sent by the load generator, by answer class"),
            &["run_id", "scenario", "request", "class"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("loadtest_request_duration_seconds", "Latency the load generator measured")
                .buckets(BUCKETS.to_vec()),
            &["run_id", "scenario", "request"],
        )?;
        let target_rps = GaugeVec::new(
            Opts::new("loadtest_target_rps", "Requests per second the open model schedules (0: closed model)"),
            &["run_id", "scenario"],
        )?;
        let achieved_rps = GaugeVec::new(
            Opts::new("loadtest_achieved_rps", "Requests per second answered in the last second"),
            &["run_id", "scenario"],
        )?;
        let running = GaugeVec::new(
            Opts::new("loadtest_scenario_running", "1 while the scenario runs, 0 after"),
            &["run_id", "scenario"],
        )?;
        let started = GaugeVec::new(
            Opts::new("loadtest_scenario_start_time_seconds", "When the scenario started (Unix time)"),
            &["run_id", "scenario"],
        )?;
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(target_rps.clone()),
            Box::new(achieved_rps.clone()),
            Box::new(running.clone()),
            Box::new(started.clone()),
        ] {
            registry.register(c)?;
        }
        Ok(Arc::new(Self {
            run_id: run_id.to_owned(),
            registry,
            requests,
            latency,
            target_rps,
            achieved_rps,
            running,
            started,
            scenario: RwLock::new(String::new()),
            tick: Mutex::new(Window::default()),
        }))
    }

    /// The run's id (the `run_id` label).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Records one answered request: `status` 0 is a transport error.
    pub fn observe(&self, request: &str, status: u16, took: Duration) {
        // On every request of the generator: no allocation once a request
        // name has been seen (its ceiling is part of every result).
        let Ok(scenario) = self.scenario.read() else { return };
        let class = match status {
            0 => "error",
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        let scenario = scenario.as_str();
        self.requests.with_label_values(&[self.run_id.as_str(), scenario, request, class]).inc();
        self.latency.with_label_values(&[self.run_id.as_str(), scenario, request]).observe(took.as_secs_f64());
        if let Ok(mut w) = self.tick.lock() {
            match w.hists.get_mut(request) {
                Some(h) => h.record(took),
                None => w.hists.entry(request.to_owned()).or_default().record(took),
            }
            w.errors += u64::from(status == 0 || status >= 500);
        }
    }

    /// The open model's rate from now on (a staircase's next step).
    pub fn set_target_rps(&self, rate: f64) {
        let scenario = self.scenario.read().map(|s| s.clone()).unwrap_or_default();
        self.target_rps.with_label_values(&[self.run_id.as_str(), scenario.as_str()]).set(rate);
    }

    /// The Prometheus text exposition of the generator's metrics.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        out
    }

    /// Starts scenario `name` (planned to last `planned_secs`, at
    /// `target_rps` in the open model) and its watcher; stop it with
    /// [`Watch::stop`].
    pub fn watch(self: &Arc<Self>, name: &str, planned_secs: f64, target_rps: f64, progress: Progress) -> Watch {
        if let Ok(mut s) = self.scenario.write() {
            name.clone_into(&mut s);
        }
        if let Ok(mut w) = self.tick.lock() {
            *w = Window::default();
        }
        let labels = [self.run_id.as_str(), name];
        self.running.with_label_values(&labels).set(1.0);
        self.target_rps.with_label_values(&labels).set(target_rps);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        self.started.with_label_values(&labels).set(now.as_secs_f64());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(watcher(self.clone(), name.to_owned(), planned_secs, progress, stop_rx));
        Watch { live: self.clone(), name: name.to_owned(), stop: stop_tx, task }
    }

    fn take_window(&self) -> Window {
        self.tick.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default()
    }
}

/// A scenario being watched.
pub struct Watch {
    live: Arc<Live>,
    name: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Vec<Tick>>,
}

impl Watch {
    /// Ends the scenario: the watcher closes its last interval and hands
    /// back the timeline.
    pub async fn stop(self) -> Vec<Tick> {
        let _ = self.stop.send(());
        let ticks = self.task.await.unwrap_or_default();
        let labels = [self.live.run_id.as_str(), self.name.as_str()];
        self.live.running.with_label_values(&labels).set(0.0);
        self.live.achieved_rps.with_label_values(&labels).set(0.0);
        ticks
    }
}

/// Closes an interval every second until told to stop.
async fn watcher(
    live: Arc<Live>,
    name: String,
    planned_secs: f64,
    progress: Progress,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Vec<Tick> {
    let client = reqwest::Client::new();
    let scrape = async |client: &reqwest::Client| match &progress.target {
        Some(base) => probe::scrape(client, base).await.ok(),
        None => None,
    };
    let start = Instant::now();
    let mut last_scrape: Option<Scrape> = scrape(&client).await;
    let mut ticks = Vec::new();
    let mut line = Window::default();
    let mut last_line = Instant::now();
    let mut interval =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
    let mut last_tick = Instant::now();
    loop {
        let done = tokio::select! {
            _ = interval.tick() => false,
            _ = &mut stop => true,
        };
        let secs = last_tick.elapsed().as_secs_f64().max(0.001);
        last_tick = Instant::now();
        let w = live.take_window();
        let now = scrape(&client).await;
        let hit_ratio = match (&last_scrape, &now) {
            (Some(b), Some(a)) => ServerStats::between(b, a).hit_ratio,
            _ => None,
        };
        if now.is_some() {
            last_scrape = now;
        }
        let requests: BTreeMap<String, TickRow> = w
            .hists
            .iter()
            .map(|(n, h)| {
                let s = h.stats(n, 0, secs);
                (n.clone(), TickRow { rps: s.rps, p50_ms: s.p50_ms, p99_ms: s.p99_ms })
            })
            .collect();
        let total: f64 = requests.values().map(|r| r.rps).sum();
        live.achieved_rps.with_label_values(&[live.run_id.as_str(), name.as_str()]).set(total);
        // The interval cut short by the stop is too short for a rate.
        let whole = !done || secs >= 0.5;
        if whole && (!requests.is_empty() || hit_ratio.is_some()) {
            ticks.push(Tick { t_s: start.elapsed().as_secs_f64(), requests, hit_ratio });
        }
        for (n, h) in w.hists {
            line.hists.entry(n).or_default().add(&h);
        }
        line.errors += w.errors;
        let due = !progress.every.is_zero() && last_line.elapsed() >= progress.every;
        if due || (done && !progress.every.is_zero()) {
            let took = last_line.elapsed().as_secs_f64().max(0.001);
            eprintln!("{}", progress_line(&name, start.elapsed().as_secs_f64(), planned_secs, took, &line, hit_ratio));
            line = Window::default();
            last_line = Instant::now();
        }
        if done {
            return ticks;
        }
    }
}

/// `loadtest: cached-read  12/30 s  9,876 req/s  errors 0  p99 3.21 ms  hit 99.8%`.
fn progress_line(name: &str, elapsed: f64, planned: f64, secs: f64, w: &Window, hit_ratio: Option<f64>) -> String {
    let mut all = Hist::new();
    for h in w.hists.values() {
        all.add(h);
    }
    let s = all.stats("all", w.errors, secs);
    let planned = if planned > 0.0 { format!("/{planned:.0}") } else { String::new() };
    let hit = hit_ratio.map(|r| format!("  server hit ratio {:.1}%", r * 100.0)).unwrap_or_default();
    format!(
        "loadtest: {name}  {elapsed:.0}{planned} s  {:.0} req/s  errors (5xx, transport) {}  p99 {:.2} ms{hit}",
        s.rps, w.errors, s.p99_ms
    )
}

/// Serves `GET /metrics` of `live` on `addr` until `stop` resolves, on
/// the server's own listener (`tollgate::http::server::serve`: connection
/// limit, header timeout, graceful drain). The bound address is returned at
/// once (`:0` picks a free port).
pub async fn serve(
    live: Arc<Live>,
    addr: std::net::SocketAddr,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    use tollgate::http::server::{ServeOptions, serve};
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let opts = ServeOptions {
        header_read_timeout: Duration::from_secs(10),
        max_connections: 64,
        shutdown_grace: Duration::from_secs(1),
    };
    let handler = move |req: hyper::Request<hyper::body::Incoming>| {
        let live = live.clone();
        async move {
            let (status, body) = if req.uri().path() == "/metrics" {
                (hyper::StatusCode::OK, live.render())
            } else {
                (hyper::StatusCode::NOT_FOUND, "not found: the load generator serves /metrics\n".to_owned())
            };
            let mut r = hyper::Response::new(tollgate::http::Body::from(body));
            *r.status_mut() = status;
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
    };
    Ok((bound, tokio::spawn(serve(listener, opts, handler, stop))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn observed_requests_are_counted_by_class_and_timed() {
        let live = Live::new("r1").expect("registry");
        let w = live.watch("cached-read", 10.0, 0.0, Progress { every: Duration::ZERO, target: None });
        for status in [200, 200, 503, 0] {
            live.observe("GET /tasks", status, Duration::from_millis(2));
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        let ticks = w.stop().await;
        let text = live.render();
        for want in [
            r#"loadtest_requests_total{class="2xx",request="GET /tasks",run_id="r1",scenario="cached-read"} 2"#,
            r#"loadtest_requests_total{class="5xx",request="GET /tasks",run_id="r1",scenario="cached-read"} 1"#,
            r#"loadtest_requests_total{class="error",request="GET /tasks",run_id="r1",scenario="cached-read"} 1"#,
            r#"loadtest_request_duration_seconds_count{request="GET /tasks",run_id="r1",scenario="cached-read"} 4"#,
            r#"loadtest_scenario_running{run_id="r1",scenario="cached-read"} 0"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        assert_eq!(ticks.len(), 1, "the last interval (over half a second) is closed on stop");
        assert_eq!(ticks[0].requests["GET /tasks"].p50_ms.round(), 2.0);
    }

    #[test]
    fn a_progress_line_says_where_the_run_is() {
        let mut w = Window::default();
        for _ in 0..100 {
            w.hists.entry("GET /tasks".into()).or_default().record(Duration::from_millis(3));
        }
        w.errors = 2;
        let l = progress_line("cached-read", 12.2, 30.0, 2.0, &w, Some(0.998));
        assert_eq!(
            l,
            "loadtest: cached-read  12/30 s  50 req/s  errors (5xx, transport) 2  p99 3.00 ms  server hit ratio 99.8%"
        );
    }
}
