//! The open model: requests issued on a schedule, whatever the answers.
//!
//! goose (like most load tools) runs a *closed* model: each user waits for
//! its answer before the next request. A server that stalls then simply
//! gets fewer requests, and the stall is missing from the percentiles:
//! coordinated omission (goose #87, wrk2's reason to exist). Here request
//! `k` of a step at rate `R` is *due* at `start + k/R`; it is sent then (or
//! as soon after as the generator manages, counted as *late* past
//! [`LATE_AFTER`]), and its latency is measured **from the due time**, into
//! an HDR histogram (microseconds, 3 significant digits). When
//! `max_in_flight` requests are outstanding, a due send is *dropped* and
//! counted as an error: the server is not keeping up.
//!
//! A step whose sends were late more than [`LATE_LIMIT`] of the time is
//! marked *generator-bound*: the numbers then describe the generator. A
//! staircase (`--rate-steps`) reports its *knee*: counting up to the first
//! step whose p99 or error rate is beyond the limits, the highest step the
//! generator kept. Before the first step the client opens its connections
//! (a warm-up burst, not measured), so the first step does not pay for them.

use crate::scenarios::Shared;
use crate::summary::{Hist, RequestStats};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// A send this long after its due time is late (tokio's timer wakes within
/// a millisecond or two on a busy machine; this is past that).
pub const LATE_AFTER: Duration = Duration::from_millis(5);
/// A step with more late sends than this share is generator-bound.
pub const LATE_LIMIT: f64 = 0.05;
/// Scenarios with an open-model form.
pub const SUPPORTED: &[&str] = &["cached-read", "healthz", "login"];

/// Whether `scenario` has an open-model form.
pub fn supports(scenario: &str) -> bool {
    SUPPORTED.contains(&scenario)
}

/// One step of a schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Requests per second.
    pub rate: f64,
    /// Seconds.
    pub secs: f64,
}

/// A staircase: the steps of `--rate-steps`.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule(pub Vec<Step>);

/// `RATE:DURATION,...`; a duration is `30s`, `500ms`, `2m` or seconds.
pub fn parse_steps(s: &str) -> Result<Schedule, String> {
    parse_step_list(s).map(Schedule)
}

fn parse_step_list(s: &str) -> Result<Vec<Step>, String> {
    s.split(',')
        .map(|part| {
            let (r, d) = part.trim().split_once(':').ok_or(format!("{part:?} is not RATE:DURATION"))?;
            let rate: f64 = r.trim().parse().map_err(|_| format!("{r:?} is not a rate"))?;
            let d = d.trim();
            let secs = if let Some(ms) = d.strip_suffix("ms") {
                ms.parse::<f64>().map(|v| v / 1000.0)
            } else if let Some(m) = d.strip_suffix('m') {
                m.parse::<f64>().map(|v| v * 60.0)
            } else {
                d.strip_suffix('s').unwrap_or(d).parse::<f64>()
            }
            .map_err(|_| format!("{d:?} is not a duration"))?;
            if rate <= 0.0 || secs <= 0.0 {
                return Err(format!("{part:?}: rate and duration must be above 0"));
            }
            Ok(Step { rate, secs })
        })
        .collect()
}

/// The open model's settings.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// The schedule.
    pub steps: Vec<Step>,
    /// Outstanding requests at most.
    pub max_in_flight: usize,
    /// Knee limit: p99 in ms.
    pub knee_p99_ms: f64,
    /// Knee limit: errors (drops included) in percent.
    pub knee_max_error_pct: f64,
    /// Whether the user set the limits: only then do they decide the exit
    /// status (a run beyond them, or a staircase without a knee, is 2).
    pub limits_given: bool,
}

/// What one step measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepStats {
    /// Target requests per second.
    pub target_rps: f64,
    /// Seconds scheduled.
    pub secs: f64,
    /// Sends due.
    pub due: u64,
    /// Answered (any status).
    pub completed: u64,
    /// Failed: transport errors, unexpected statuses, drops.
    pub errors: u64,
    /// Not sent: `max_in_flight` were outstanding.
    pub dropped: u64,
    /// Sent more than [`LATE_AFTER`] after their due time.
    pub late: u64,
    /// Answered per second of the step.
    pub achieved_rps: f64,
    /// Latency from the due time.
    pub latency: RequestStats,
    /// The generator could not keep the schedule.
    pub generator_bound: bool,
    /// p99 and error rate within the knee limits, and not generator-bound.
    pub within_limits: bool,
}

/// What an open-model scenario measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenStats {
    /// Per step, in order.
    pub steps: Vec<StepStats>,
    /// The highest step rate, counting up, within limits (None: not even
    /// the first).
    pub knee_rps: Option<f64>,
    /// The limits the knee was judged by.
    pub knee_p99_ms: f64,
    /// Percent.
    pub knee_max_error_pct: f64,
    /// The limits were the user's, and so judge the run.
    #[serde(default)]
    pub limits_given: bool,
}

impl OpenStats {
    /// Judges each step and finds the knee.
    pub fn judge(mut steps: Vec<StepStats>, p99_ms: f64, max_error_pct: f64) -> Self {
        for s in &mut steps {
            let err_pct = if s.due == 0 { 0.0 } else { s.errors as f64 * 100.0 / s.due as f64 };
            s.generator_bound = s.due > 0 && s.late as f64 > LATE_LIMIT * s.due as f64;
            s.within_limits = s.latency.p99_ms <= p99_ms && err_pct <= max_error_pct;
        }
        // Counting up to the first step beyond the limits; a step the
        // generator did not keep is reported but is no knee itself.
        let knee_rps =
            steps.iter().take_while(|s| s.within_limits).filter(|s| !s.generator_bound).last().map(|s| s.target_rps);
        Self { steps, knee_rps, knee_p99_ms: p99_ms, knee_max_error_pct: max_error_pct, limits_given: false }
    }
}

/// One request of a scenario's open-model form: its name and whether the
/// answer is the expected one.
async fn send(client: &reqwest::Client, base: &str, shared: &Shared, scenario: &str, k: u64) -> bool {
    let n = shared.accounts.len().max(1);
    let started = Instant::now();
    let result = match scenario {
        "healthz" => client.get(format!("{base}/healthz")).send().await,
        "login" => {
            let body = serde_json::json!({"email": shared.login_email(k as usize), "password": crate::setup::PASSWORD});
            client.post(format!("{base}/auth/login")).json(&body).send().await
        }
        _ => client.get(format!("{base}/tasks")).bearer_auth(shared.access_token((k as usize) % n)).send().await,
    };
    let status = match result {
        Ok(r) => {
            let status = r.status().as_u16();
            let _ = r.bytes().await;
            status
        }
        Err(_) => 0,
    };
    shared.live.observe(request_name(scenario), status, started.elapsed());
    (200..300).contains(&status)
}

/// The request name of a scenario's open-model form.
pub fn request_name(scenario: &str) -> &'static str {
    match scenario {
        "healthz" => "GET /healthz",
        "login" => "POST /auth/login",
        _ => "GET /tasks",
    }
}

/// Runs `scenario` on the schedule of `opts` against `base`.
pub async fn run(
    base: &str,
    shared: &Arc<Shared>,
    scenario: &str,
    opts: &OpenOptions,
) -> anyhow::Result<(OpenStats, Hist)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(opts.max_in_flight)
        .tcp_nodelay(true)
        .build()?;
    let slots = Arc::new(Semaphore::new(opts.max_in_flight));
    // Warm-up, not measured: open connections as the first step will need.
    let warm = opts.max_in_flight.min(64) as u64;
    let burst: Vec<_> = (0..warm).map(|k| send(&client, base, shared, scenario, k)).collect();
    futures_util::future::join_all(burst).await;
    let mut total = Hist::new();
    let mut steps = Vec::new();
    let mut k_base = 0u64;
    for step in &opts.steps {
        shared.live.set_target_rps(step.rate);
        let due = (step.rate * step.secs).round() as u64;
        let hist = Arc::new(std::sync::Mutex::new(Hist::new()));
        let (errors, completed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (mut dropped, mut late) = (0u64, 0u64);
        let t0 = Instant::now();
        for k in 0..due {
            let at = t0 + Duration::from_secs_f64(k as f64 / step.rate);
            let now = Instant::now();
            if at > now {
                tokio::time::sleep_until(at.into()).await;
            } else if now - at > LATE_AFTER {
                late += 1;
            }
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                dropped += 1;
                continue;
            };
            let (client, base, shared, scenario) =
                (client.clone(), base.to_owned(), shared.clone(), scenario.to_owned());
            let (hist, errors, completed) = (hist.clone(), errors.clone(), completed.clone());
            tokio::spawn(async move {
                let ok = send(&client, &base, &shared, &scenario, k_base + k).await;
                let waited = at.elapsed();
                completed.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(mut h) = hist.lock() {
                    h.record(waited);
                }
                drop(permit);
            });
        }
        // The step ends when its last answer is in (bounded by the timeout).
        let all = u32::try_from(opts.max_in_flight).unwrap_or(u32::MAX);
        drop(tokio::time::timeout(Duration::from_secs(15), slots.acquire_many(all)).await);
        let elapsed = t0.elapsed().as_secs_f64().max(step.secs);
        k_base += due;
        let hist = hist.lock().map(|h| h.clone()).unwrap_or_default();
        total.add(&hist);
        let completed = completed.load(Ordering::Relaxed);
        let errors = errors.load(Ordering::Relaxed) + dropped;
        steps.push(StepStats {
            target_rps: step.rate,
            secs: step.secs,
            due,
            completed,
            errors,
            dropped,
            late,
            achieved_rps: completed as f64 / elapsed,
            latency: hist.stats(request_name(scenario), errors, elapsed),
            generator_bound: false,
            within_limits: false,
        });
        eprintln!(
            "loadtest: {scenario} at {} req/s for {} s: achieved {:.0} req/s, p99 {:.2} ms, {errors} errors ({dropped} dropped), {late} late",
            step.rate,
            step.secs,
            completed as f64 / elapsed,
            steps.last().map_or(0.0, |s| s.latency.p99_ms)
        );
    }
    let mut stats = OpenStats::judge(steps, opts.knee_p99_ms, opts.knee_max_error_pct);
    stats.limits_given = opts.limits_given;
    Ok((stats, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staircases_parse_with_units() {
        let s = parse_steps("1000:30s, 2000:500ms,3000:2m,10:5").expect("parses").0;
        let secs: Vec<f64> = s.iter().map(|s| s.secs).collect();
        assert_eq!(secs, [30.0, 0.5, 120.0, 5.0]);
        assert!(parse_steps("1000").is_err());
        assert!(parse_steps("0:1s").is_err());
        assert!(parse_steps("x:1s").is_err());
    }

    fn step(rate: f64, p99: f64, errors: u64, late: u64) -> StepStats {
        let mut latency = Hist::new().stats("GET /tasks", errors, 1.0);
        latency.p99_ms = p99;
        StepStats {
            target_rps: rate,
            secs: 1.0,
            due: 1000,
            completed: 1000,
            errors,
            dropped: 0,
            late,
            achieved_rps: rate,
            latency,
            generator_bound: false,
            within_limits: false,
        }
    }

    #[test]
    fn the_knee_is_the_last_step_within_limits_counting_up() {
        let o =
            OpenStats::judge(vec![step(100.0, 2.0, 0, 0), step(200.0, 9.0, 5, 0), step(400.0, 80.0, 0, 0)], 50.0, 1.0);
        assert_eq!(o.knee_rps, Some(200.0));
        let o = OpenStats::judge(vec![step(100.0, 2.0, 0, 0), step(200.0, 2.0, 50, 0)], 50.0, 1.0);
        assert_eq!(o.knee_rps, Some(100.0), "5% errors is past the limit");
        let o = OpenStats::judge(vec![step(100.0, 2.0, 0, 500)], 50.0, 1.0);
        assert!(o.steps[0].generator_bound && o.knee_rps.is_none(), "a step the generator did not keep is no knee");
        let o = OpenStats::judge(
            vec![step(100.0, 2.0, 0, 500), step(200.0, 3.0, 0, 0), step(400.0, 90.0, 0, 0)],
            50.0,
            1.0,
        );
        assert_eq!(o.knee_rps, Some(200.0), "a generator-bound step below does not end the count");
    }
}
