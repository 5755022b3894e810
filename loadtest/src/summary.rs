//! Results people can read and CI can gate on: a JSON summary per scenario
//! and per request name, a table on stdout, `compare` (baseline vs current)
//! and `merge` (summaries of several generator processes).

use goose::metrics::GooseMetrics;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

/// A result within this share of the generator's own ceiling is marked
/// client-bound: it measures the load generator, not the server.
pub const CLIENT_BOUND_SHARE: f64 = 0.8;

/// One request name of one scenario.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RequestStats {
    /// Stable request name, e.g. `GET /tasks`.
    pub name: String,
    /// Requests made.
    pub requests: u64,
    /// Requests that failed (unexpected status, transport error, or a
    /// contract violation such as an accepted revoked token).
    pub failures: u64,
    /// Requests per second over the measured period.
    pub rps: f64,
    /// Latency percentiles and maximum, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// What the revocation scenario measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RevocationStats {
    /// Bans made during the run.
    pub bans: u64,
    /// Requests of banned users accepted after their ban answered (must be 0).
    pub accepted_after_ban: u64,
    /// Time from a ban's answer to the victim's first 401, ms.
    pub ban_to_401_p50_ms: f64,
    /// 99th percentile.
    pub ban_to_401_p99_ms: f64,
    /// Slowest.
    pub ban_to_401_max_ms: f64,
}

/// One scenario's result.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScenarioSummary {
    /// Scenario name.
    pub scenario: String,
    /// Goose users.
    pub users: usize,
    /// Measured seconds.
    pub duration_s: f64,
    /// All requests.
    pub requests: u64,
    /// All failures.
    pub failures: u64,
    /// All requests per second.
    pub rps: f64,
    /// The generator's ceiling measured in the same invocation (req/s of
    /// `GET /healthz` with the same users), if measured.
    pub ceiling_rps: Option<f64>,
    /// Whether `rps` is within [`CLIENT_BOUND_SHARE`] of the ceiling.
    pub client_bound: bool,
    /// Per request name, sorted by name.
    pub by_request: Vec<RequestStats>,
    /// Revocation scenario only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<RevocationStats>,
}

/// A whole invocation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Format version.
    pub version: u32,
    /// Target URL.
    pub target: String,
    /// Whether the harness started the server.
    pub embedded: bool,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// Per scenario, in run order.
    pub scenarios: Vec<ScenarioSummary>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Seconds of the measured period: from when all users were running (goose
/// resets its metrics then) to the end; goose's own `duration` is whole
/// seconds, too coarse for short runs.
fn measured_seconds(m: &GooseMetrics) -> f64 {
    use goose::test_plan::TestPlanStepAction as A;
    let start = m.history.iter().find(|h| matches!(h.action, A::Maintaining)).or(m.history.first());
    let end = m.history.last();
    match (start, end) {
        (Some(s), Some(e)) if e.timestamp > s.timestamp => {
            (e.timestamp - s.timestamp).num_milliseconds() as f64 / 1000.0
        }
        _ => m.duration.max(1) as f64,
    }
}

/// Summarises goose's metrics of one scenario.
pub fn from_goose(scenario: &str, m: &GooseMetrics) -> ScenarioSummary {
    let secs = measured_seconds(m).max(0.001);
    let mut by_request: Vec<RequestStats> = m
        .requests
        .values()
        .map(|r| {
            let t = &r.raw_data;
            let requests = (r.success_count + r.fail_count) as u64;
            RequestStats {
                name: r.path.clone(),
                requests,
                failures: r.fail_count as u64,
                rps: requests as f64 / secs,
                p50_ms: ms(t.percentile_us(0.5)),
                p90_ms: ms(t.percentile_us(0.9)),
                p99_ms: ms(t.percentile_us(0.99)),
                max_ms: ms(t.maximum_time_us),
            }
        })
        .collect();
    by_request.sort_by(|a, b| a.name.cmp(&b.name));
    let requests = by_request.iter().map(|r| r.requests).sum();
    let failures = by_request.iter().map(|r| r.failures).sum();
    ScenarioSummary {
        scenario: scenario.to_owned(),
        users: m.maximum_users,
        duration_s: secs,
        requests,
        failures,
        rps: requests as f64 / secs,
        ceiling_rps: None,
        client_bound: false,
        by_request,
        revocation: None,
    }
}

impl ScenarioSummary {
    /// Records the generator's ceiling and whether this result is near it.
    pub fn with_ceiling(mut self, ceiling: Option<f64>) -> Self {
        self.ceiling_rps = ceiling;
        self.client_bound = ceiling.is_some_and(|c| c > 0.0 && self.rps >= CLIENT_BOUND_SHARE * c);
        self
    }
}

/// The human table.
pub fn table(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "target: {}{}", s.target, if s.embedded { " (embedded)" } else { "" });
    let _ = writeln!(
        out,
        "{:<15} {:<26} {:>9} {:>6} {:>10} {:>8} {:>8} {:>8} {:>8}  note",
        "scenario", "request", "requests", "fail", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for sc in &s.scenarios {
        let note = match (sc.client_bound, sc.ceiling_rps) {
            (true, Some(c)) => format!("CLIENT-BOUND (generator ceiling {c:.0} req/s)"),
            (false, Some(c)) => format!("ceiling {c:.0} req/s"),
            _ => String::new(),
        };
        for r in &sc.by_request {
            let _ = writeln!(
                out,
                "{:<15} {:<26} {:>9} {:>6} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                sc.scenario, r.name, r.requests, r.failures, r.rps, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms
            );
        }
        let _ = writeln!(
            out,
            "{:<15} {:<26} {:>9} {:>6} {:>10.1} {:>8} {:>8} {:>8} {:>8}  {note}",
            sc.scenario, "= all", sc.requests, sc.failures, sc.rps, "", "", "", ""
        );
        if let Some(rv) = &sc.revocation {
            let _ = writeln!(
                out,
                "{:<15} bans {}, accepted after ban {} (must be 0), ban -> first 401: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                sc.scenario,
                rv.bans,
                rv.accepted_after_ban,
                rv.ban_to_401_p50_ms,
                rv.ban_to_401_p99_ms,
                rv.ban_to_401_max_ms
            );
        }
    }
    out
}

/// Thresholds of `compare`, in percent.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest allowed drop of req/s.
    pub max_rps_drop_pct: f64,
    /// Largest allowed rise of p99.
    pub max_p99_rise_pct: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_rps_drop_pct: 10.0, max_p99_rise_pct: 10.0 }
    }
}

/// Compares per scenario and request name; returns the table and whether
/// every row passed. Rows only in one summary are listed, not judged.
pub fn compare(base: &Summary, cur: &Summary, limits: Limits) -> (String, bool) {
    let mut out = String::new();
    let mut ok = true;
    let _ = writeln!(
        out,
        "{:<15} {:<26} {:>10} {:>10} {:>8} {:>9} {:>9} {:>8}  verdict",
        "scenario", "request", "base req/s", "cur req/s", "change", "base p99", "cur p99", "change"
    );
    for bs in &base.scenarios {
        let Some(cs) = cur.scenarios.iter().find(|c| c.scenario == bs.scenario) else {
            let _ = writeln!(out, "{:<15} (missing from the current run)", bs.scenario);
            continue;
        };
        for br in &bs.by_request {
            let Some(cr) = cs.by_request.iter().find(|c| c.name == br.name) else {
                let _ = writeln!(out, "{:<15} {:<26} (missing from the current run)", bs.scenario, br.name);
                continue;
            };
            let rps_change = pct(br.rps, cr.rps);
            let p99_change = pct(br.p99_ms, cr.p99_ms);
            let mut why = Vec::new();
            if rps_change < -limits.max_rps_drop_pct {
                why.push(format!("req/s dropped more than {}%", limits.max_rps_drop_pct));
            }
            if p99_change > limits.max_p99_rise_pct {
                why.push(format!("p99 rose more than {}%", limits.max_p99_rise_pct));
            }
            if cr.failures > 0 && br.failures == 0 {
                why.push(format!("{} failures", cr.failures));
            }
            let verdict = if why.is_empty() { "ok".to_owned() } else { format!("REGRESSION: {}", why.join(", ")) };
            ok &= why.is_empty();
            let _ = writeln!(
                out,
                "{:<15} {:<26} {:>10.1} {:>10.1} {:>+7.1}% {:>9.2} {:>9.2} {:>+7.1}%  {verdict}",
                bs.scenario, br.name, br.rps, cr.rps, rps_change, br.p99_ms, cr.p99_ms, p99_change
            );
        }
    }
    for cs in &cur.scenarios {
        if !base.scenarios.iter().any(|b| b.scenario == cs.scenario) {
            let _ = writeln!(out, "{:<15} (new: not in the baseline)", cs.scenario);
        }
    }
    (out, ok)
}

fn pct(base: f64, cur: f64) -> f64 {
    if base == 0.0 { 0.0 } else { (cur - base) / base * 100.0 }
}

/// Merges summaries of generator processes that ran at the same time against
/// one target: requests and req/s add up; percentiles take the worst of the
/// parts (exact merging needs the histograms; the worst part is an upper
/// bound).
pub fn merge(parts: &[Summary]) -> anyhow::Result<Summary> {
    let first = parts.first().ok_or_else(|| anyhow::anyhow!("merge needs at least one summary"))?;
    let mut out = first.clone();
    for p in &parts[1..] {
        for ps in &p.scenarios {
            let Some(os) = out.scenarios.iter_mut().find(|s| s.scenario == ps.scenario) else {
                out.scenarios.push(ps.clone());
                continue;
            };
            os.users += ps.users;
            os.requests += ps.requests;
            os.failures += ps.failures;
            os.rps += ps.rps;
            os.ceiling_rps = match (os.ceiling_rps, ps.ceiling_rps) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
            for pr in &ps.by_request {
                match os.by_request.iter_mut().find(|r| r.name == pr.name) {
                    None => os.by_request.push(pr.clone()),
                    Some(or) => {
                        or.requests += pr.requests;
                        or.failures += pr.failures;
                        or.rps += pr.rps;
                        or.p50_ms = or.p50_ms.max(pr.p50_ms);
                        or.p90_ms = or.p90_ms.max(pr.p90_ms);
                        or.p99_ms = or.p99_ms.max(pr.p99_ms);
                        or.max_ms = or.max_ms.max(pr.max_ms);
                    }
                }
            }
            let ceiling = os.ceiling_rps;
            *os = os.clone().with_ceiling(ceiling);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(rps: f64, p99: f64) -> Summary {
        Summary {
            version: 1,
            target: "http://127.0.0.1:1".into(),
            embedded: true,
            started_at: "2026-01-01T00:00:00Z".into(),
            scenarios: vec![ScenarioSummary {
                scenario: "cached-read".into(),
                users: 8,
                duration_s: 10.0,
                requests: (rps * 10.0) as u64,
                failures: 0,
                rps,
                ceiling_rps: Some(10_000.0),
                client_bound: false,
                by_request: vec![RequestStats {
                    name: "GET /tasks".into(),
                    requests: (rps * 10.0) as u64,
                    failures: 0,
                    rps,
                    p50_ms: p99 / 4.0,
                    p90_ms: p99 / 2.0,
                    p99_ms: p99,
                    max_ms: p99 * 2.0,
                }],
                revocation: None,
            }],
        }
    }

    #[test]
    fn identical_runs_pass_the_gate() {
        let s = summary(1000.0, 5.0);
        let (table, ok) = compare(&s, &s, Limits::default());
        assert!(ok, "{table}");
    }

    #[test]
    fn a_throughput_drop_beyond_the_limit_fails() {
        let (table, ok) = compare(&summary(1000.0, 5.0), &summary(850.0, 5.0), Limits::default());
        assert!(!ok);
        assert!(table.contains("REGRESSION: req/s dropped"), "{table}");
        let (_, ok) = compare(&summary(1000.0, 5.0), &summary(950.0, 5.0), Limits::default());
        assert!(ok, "a 5% drop is within 10%");
    }

    #[test]
    fn a_p99_rise_beyond_the_limit_fails_and_limits_are_settable() {
        let (_, ok) = compare(&summary(1000.0, 5.0), &summary(1000.0, 6.0), Limits::default());
        assert!(!ok);
        let lenient = Limits { max_rps_drop_pct: 10.0, max_p99_rise_pct: 30.0 };
        assert!(compare(&summary(1000.0, 5.0), &summary(1000.0, 6.0), lenient).1);
    }

    #[test]
    fn client_bound_results_are_marked() {
        let sc = summary(9000.0, 1.0).scenarios.remove(0);
        assert!(sc.clone().with_ceiling(Some(10_000.0)).client_bound);
        assert!(!sc.with_ceiling(Some(20_000.0)).client_bound);
    }

    #[test]
    fn merged_summaries_add_throughput_and_keep_the_worst_latency() {
        let m = merge(&[summary(1000.0, 5.0), summary(500.0, 9.0)]).expect("merge");
        let r = &m.scenarios[0].by_request[0];
        assert_eq!((r.rps, r.p99_ms), (1500.0, 9.0));
        assert_eq!(m.scenarios[0].ceiling_rps, Some(20_000.0));
    }
}
