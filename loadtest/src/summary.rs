//! Results people can read and CI can gate on: a JSON summary per scenario
//! and per request name, a table on stdout, `compare` (baseline vs current)
//! and `merge` (summaries of several generator processes).

use crate::live::Tick;
use crate::probe::ServerStats;
use base64::Engine as _;
use goose::metrics::GooseMetrics;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

/// A latency histogram: HDR, microseconds from 1 µs to 1 h, 3 significant
/// digits. Summaries carry it (V2, deflated, base64: a few hundred bytes),
/// so percentiles of merged runs are exact, not the worst part's.
#[derive(Clone, Debug)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

impl Hist {
    /// Empty.
    pub fn new() -> Self {
        // Bounds and precision are constants within what HDR allows.
        Self(Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|e| panic!("histogram bounds: {e}")))
    }
    /// Records one latency (saturating at the upper bound).
    pub fn record(&mut self, took: Duration) {
        self.0.saturating_record((took.as_micros() as u64).max(1));
    }
    /// Adds another histogram's counts.
    pub fn add(&mut self, other: &Hist) {
        // Same bounds on both sides: cannot fail.
        let _ = self.0.add(&other.0);
    }
    /// How many values.
    pub fn len(&self) -> u64 {
        self.0.len()
    }
    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn ms_at(&self, q: f64) -> f64 {
        if self.0.is_empty() { 0.0 } else { self.0.value_at_quantile(q) as f64 / 1000.0 }
    }
    /// The row of `name`: counts, rate over `secs`, percentiles, the
    /// histogram itself.
    pub fn stats(&self, name: &str, failures: u64, secs: f64) -> RequestStats {
        RequestStats {
            name: name.to_owned(),
            requests: self.len(),
            failures,
            rps: self.len() as f64 / secs.max(0.001),
            p50_ms: self.ms_at(0.5),
            p90_ms: self.ms_at(0.9),
            p99_ms: self.ms_at(0.99),
            max_ms: if self.0.is_empty() { 0.0 } else { self.0.max() as f64 / 1000.0 },
            hdr: Some(self.encode()),
            co_p99_ms: None,
        }
    }
    /// The cumulative distribution: (latency ms, percent of values at or
    /// under it), one point per distinct recorded value bucket.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        let total = self.0.len().max(1) as f64;
        let mut seen = 0u64;
        self.0
            .iter_recorded()
            .map(|v| {
                seen += v.count_at_value();
                (v.value_iterated_to() as f64 / 1000.0, seen as f64 / total * 100.0)
            })
            .collect()
    }
    /// V2 deflate, base64.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        let _ = V2DeflateSerializer::new().serialize(&self.0, &mut out);
        base64::engine::general_purpose::STANDARD.encode(out)
    }
    /// From [`Hist::encode`]'s text.
    pub fn decode(text: &str) -> anyhow::Result<Self> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(text)?;
        let h: Histogram<u64> = Deserializer::new().deserialize(&mut bytes.as_slice())?;
        let mut out = Self::new();
        out.0.add(&h).map_err(|e| anyhow::anyhow!("histogram: {e:?}"))?;
        Ok(out)
    }
}

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
    /// The latency histogram ([`Hist::encode`]), for exact merging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hdr: Option<String>,
    /// goose's p99 corrected for coordinated omission, with
    /// `--co-mitigation` (ms). The open model measures it directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub co_p99_ms: Option<f64>,
}

/// One run of a scenario repeated with `--repeat`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunPoint {
    /// All requests per second.
    pub rps: f64,
    /// p99 of all requests, ms.
    pub p99_ms: f64,
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
    /// Every ban's time to its first 401, ms (the report's distribution).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ban_to_401_ms: Vec<f64>,
}

/// One scenario's result.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
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
    /// Open-model runs: the steps and the knee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<crate::open::OpenStats>,
    /// goose's thresholds that failed (judged on this scenario only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds_failed: Vec<String>,
    /// Why the scenario could not run, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Each run of `--repeat N` (the top-level numbers are their medians).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunPoint>,
    /// What the server's own `/metrics` said of this scenario (deltas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerStats>,
    /// Second by second, for the report's charts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<Tick>,
    /// The generator's ceiling (`healthz` before the scenarios): it judges
    /// the generator, so `compare` shows it without judging it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub calibration: bool,
    /// Why requests failed, most frequent first (goose's error summary:
    /// `METHOD NAME: error`, count), at most [`MAX_FAILURE_REASONS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_reasons: Vec<(String, u64)>,
}

/// Failure reasons kept per scenario.
pub const MAX_FAILURE_REASONS: usize = 5;

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
    /// `--generator I/N` of the process that wrote it (merged: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<(usize, usize)>,
    /// Where the numbers come from: the code, the settings, the machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

/// What a summary's numbers depend on, so two runs are only compared when
/// they measured the same thing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Provenance {
    /// The run's id: the `run_id` label of the generator's metrics.
    pub run_id: String,
    /// `git rev-parse HEAD` of the harness's source (with `-dirty` when the
    /// tree had changes), or `GIT_COMMIT` from the environment.
    pub git_commit: Option<String>,
    /// The command line.
    pub args: Vec<String>,
    /// This harness's version.
    pub harness_version: String,
    /// goose's version.
    pub goose_version: String,
    /// CPUs of the machine the generator ran on.
    pub cpus: usize,
    /// Whether the harness started the server itself.
    pub embedded: bool,
    /// The settings that shape the numbers (users, run time, rate,
    /// accounts, tasks, mix, ...): `compare` refuses runs whose settings
    /// differ unless told.
    pub settings: std::collections::BTreeMap<String, String>,
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

/// Summarises goose's metrics of one scenario. Counts and failures are
/// goose's; latencies come from `hists` (the harness's own timing of each
/// request, by `METHOD NAME`) where present, else goose's.
pub fn from_goose(scenario: &str, m: &GooseMetrics, hists: &HashMap<String, Hist>) -> ScenarioSummary {
    let secs = measured_seconds(m).max(0.001);
    let mut by_request: Vec<RequestStats> = m
        .requests
        .values()
        .map(|r| {
            let name = format!("{} {}", r.method, r.path);
            let requests = (r.success_count + r.fail_count) as u64;
            let mut row = match hists.get(&name) {
                Some(h) => h.stats(&name, r.fail_count as u64, secs),
                None => {
                    let t = &r.raw_data;
                    RequestStats {
                        name: name.clone(),
                        requests,
                        failures: r.fail_count as u64,
                        rps: 0.0,
                        p50_ms: ms(t.percentile_us(0.5)),
                        p90_ms: ms(t.percentile_us(0.9)),
                        p99_ms: ms(t.percentile_us(0.99)),
                        max_ms: ms(t.maximum_time_us),
                        hdr: None,
                        co_p99_ms: None,
                    }
                }
            };
            // goose's counts cover the measured period only (it resets its
            // metrics once every user runs); rates follow them.
            row.co_p99_ms = r.coordinated_omission_data.as_ref().map(|c| ms(c.percentile_us(0.99)));
            row.requests = requests;
            row.rps = requests as f64 / secs;
            row
        })
        .collect();
    by_request.sort_by(|a, b| a.name.cmp(&b.name));
    let requests = by_request.iter().map(|r| r.requests).sum();
    let failures = by_request.iter().map(|r| r.failures).sum();
    let mut failure_reasons: Vec<(String, u64)> =
        m.errors.values().map(|e| (format!("{} {}: {}", e.method, e.name, e.error), e.occurrences as u64)).collect();
    failure_reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    failure_reasons.truncate(MAX_FAILURE_REASONS);
    ScenarioSummary {
        scenario: scenario.to_owned(),
        users: m.maximum_users,
        duration_s: secs,
        failure_reasons,
        requests,
        failures,
        rps: requests as f64 / secs,
        by_request,
        ..ScenarioSummary::default()
    }
}

/// The median run of several (by req/s), with every run's numbers kept in
/// `runs` so `compare` can tell a change from run-to-run noise.
pub fn median_of(mut runs: Vec<ScenarioSummary>) -> ScenarioSummary {
    if runs.len() == 1 {
        return runs.remove(0);
    }
    let points: Vec<RunPoint> = runs
        .iter()
        .map(|r| RunPoint { rps: r.rps, p99_ms: r.by_request.iter().map(|q| q.p99_ms).fold(0.0, f64::max) })
        .collect();
    runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    let mut median = runs.swap_remove(runs.len() / 2);
    median.runs = points;
    median
}

/// The spread of a repeated scenario: (min, max) of req/s and of p99.
pub fn spread(runs: &[RunPoint]) -> Option<((f64, f64), (f64, f64))> {
    let first = runs.first()?;
    let mut out = ((first.rps, first.rps), (first.p99_ms, first.p99_ms));
    for r in runs {
        out.0 = (out.0.0.min(r.rps), out.0.1.max(r.rps));
        out.1 = (out.1.0.min(r.p99_ms), out.1.1.max(r.p99_ms));
    }
    Some(out)
}

/// A scenario that could not run: its name and why.
pub fn failed(scenario: &str, error: String) -> ScenarioSummary {
    ScenarioSummary { scenario: scenario.to_owned(), error: Some(error), ..ScenarioSummary::default() }
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
        request_rows(&mut out, sc);
        if let Some(o) = &sc.open {
            open_rows(&mut out, &sc.scenario, o);
        }
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
        if let Some(sv) = &sc.server {
            let _ = writeln!(out, "{:<15} {}", sc.scenario, server_line(sv));
        }
    }
    out
}

/// A scenario's rows by request name, its total, and what went wrong.
fn request_rows(out: &mut String, sc: &ScenarioSummary) {
    let note = match (sc.client_bound, sc.ceiling_rps) {
        (true, Some(c)) => format!("CLIENT-BOUND (generator ceiling {c:.0} req/s)"),
        (false, Some(c)) => format!("ceiling {c:.0} req/s"),
        _ => String::new(),
    };
    for r in &sc.by_request {
        let co = r.co_p99_ms.map(|c| format!("  p99 corrected for coordinated omission {c:.2} ms")).unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<15} {:<26} {:>9} {:>6} {:>10.1} {:>8.2} {:>8.2} {:>8.2} {:>8.2}{co}",
            sc.scenario, r.name, r.requests, r.failures, r.rps, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms
        );
    }
    let _ = writeln!(
        out,
        "{:<15} {:<26} {:>9} {:>6} {:>10.1} {:>8} {:>8} {:>8} {:>8}  {note}",
        sc.scenario, "= all", sc.requests, sc.failures, sc.rps, "", "", "", ""
    );
    if let Some(e) = &sc.error {
        let _ = writeln!(out, "{:<15} COULD NOT RUN: {e}", sc.scenario);
    }
    for (why, n) in &sc.failure_reasons {
        let _ = writeln!(out, "{:<15} failed {n}x: {why}", sc.scenario);
    }
    for t in &sc.thresholds_failed {
        let _ = writeln!(out, "{:<15} THRESHOLD FAILED: {t}", sc.scenario);
    }
    if let Some((rps, p99)) = spread(&sc.runs) {
        let _ = writeln!(
            out,
            "{:<15} {} runs: req/s {:.1}..{:.1}, p99 {:.2}..{:.2} ms (the median run is shown)",
            sc.scenario,
            sc.runs.len(),
            rps.0,
            rps.1,
            p99.0,
            p99.1
        );
    }
}

/// The open model's steps and its knee.
fn open_rows(out: &mut String, scenario: &str, o: &crate::open::OpenStats) {
    let _ = writeln!(
        out,
        "{:<15} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}  (open model: latency from the due time)",
        scenario, "target/s", "achieved/s", "errors", "dropped", "late", "p50 ms", "p99 ms"
    );
    for st in &o.steps {
        let mark = match (st.generator_bound, st.within_limits) {
            (true, _) => "GENERATOR-BOUND: the generator did not keep the schedule",
            (false, true) => "within limits",
            (false, false) => "beyond limits",
        };
        let _ = writeln!(
            out,
            "{:<15} {:>10.0} {:>10.1} {:>8} {:>8} {:>8} {:>8.2} {:>8.2}  {mark}",
            scenario,
            st.target_rps,
            st.achieved_rps,
            st.errors,
            st.dropped,
            st.late,
            st.latency.p50_ms,
            st.latency.p99_ms
        );
    }
    let knee = o.knee_rps.map_or("none (the first step is beyond the limits)".to_owned(), |k| format!("{k:.0} req/s"));
    let _ = writeln!(
        out,
        "{:<15} knee: {knee} (limits: p99 <= {} ms, errors <= {}%)",
        scenario, o.knee_p99_ms, o.knee_max_error_pct
    );
}

/// `server: cache hit ratio 99.8%, revocation by PostgreSQL 0.0%, 5xx 0, dependency errors 0`.
fn server_line(sv: &ServerStats) -> String {
    let pct = |r: Option<f64>| r.map_or("n/a".to_owned(), |r| format!("{:.1}%", r * 100.0));
    let mut line = format!(
        "server: cache hit ratio {}, revocation checks by PostgreSQL {}, 5xx {}, dependency errors {}",
        pct(sv.hit_ratio),
        pct(sv.db_check_share),
        sv.errors_5xx.values().sum::<u64>(),
        sv.dependency_errors.values().sum::<u64>()
    );
    if let (Some(p50), Some(p99)) = (sv.hash_p50_ms, sv.hash_p99_ms) {
        let _ = write!(line, ", password hash p50 {p50:.1} ms p99 {p99:.1} ms");
    }
    line
}

/// Thresholds of `compare`, in percent.
#[derive(Debug, Clone, Copy, PartialEq)]
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

/// One compared row: a request name of a scenario in both runs.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareRow {
    /// Scenario.
    pub scenario: String,
    /// Request name.
    pub request: String,
    /// Baseline and current req/s, and the change in percent.
    pub rps: (f64, f64, f64),
    /// Baseline and current p99 (ms), and the change in percent.
    pub p99: (f64, f64, f64),
    /// Why this row is a regression (empty: it is not).
    pub regressions: Vec<String>,
    /// Changes beyond a limit that stayed within the baseline's spread.
    pub noise: Vec<String>,
}

/// A comparison of two summaries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    /// Rows in the baseline's order.
    pub rows: Vec<CompareRow>,
    /// Scenarios and requests in one run only (listed, not judged).
    pub unmatched: Vec<String>,
    /// Per scenario in both: the server's cache hit ratio, baseline and
    /// current, where both recorded one.
    pub hit_ratios: Vec<(String, f64, f64)>,
    /// The limits it was judged by.
    pub limits: Limits,
}

impl Comparison {
    /// Whether no row regressed.
    pub fn ok(&self) -> bool {
        self.rows.iter().all(|r| r.regressions.is_empty())
    }

    /// One line: the verdict and its limits.
    pub fn verdict(&self) -> String {
        let bad = self.rows.iter().filter(|r| !r.regressions.is_empty()).count();
        let limits =
            format!("limits: req/s -{}%, p99 +{}%", self.limits.max_rps_drop_pct, self.limits.max_p99_rise_pct);
        if bad == 0 {
            format!("no regression ({limits})")
        } else {
            format!("REGRESSION in {bad} of {} rows ({limits})", self.rows.len())
        }
    }
}

impl CompareRow {
    fn verdict(&self) -> String {
        match (self.regressions.is_empty(), self.noise.is_empty()) {
            (false, _) => format!("REGRESSION: {}", self.regressions.join(", ")),
            (true, true) => "ok".to_owned(),
            (true, false) => format!("ok ({})", self.noise.join(", ")),
        }
    }
}

/// Compares per scenario and request name. Rows only in one summary are
/// listed, not judged.
pub fn compare(base: &Summary, cur: &Summary, limits: Limits) -> Comparison {
    let mut out = Comparison { limits, ..Comparison::default() };
    for bs in &base.scenarios {
        if bs.calibration {
            if let Some(cs) = cur.scenarios.iter().find(|c| c.calibration) {
                out.unmatched.push(format!(
                    "{}: the generator's ceiling, {:.0} -> {:.0} req/s (not judged: it measures the generator)",
                    bs.scenario, bs.rps, cs.rps
                ));
            }
            continue;
        }
        let Some(cs) = cur.scenarios.iter().find(|c| c.scenario == bs.scenario) else {
            out.unmatched.push(format!("{}: missing from the current run", bs.scenario));
            continue;
        };
        if let (Some(b), Some(c)) =
            (bs.server.as_ref().and_then(|s| s.hit_ratio), cs.server.as_ref().and_then(|s| s.hit_ratio))
        {
            out.hit_ratios.push((bs.scenario.clone(), b, c));
        }
        for br in &bs.by_request {
            let Some(cr) = cs.by_request.iter().find(|c| c.name == br.name) else {
                out.unmatched.push(format!("{} {}: missing from the current run", bs.scenario, br.name));
                continue;
            };
            out.rows.push(compare_row(bs, cs, br, cr, limits));
        }
    }
    for cs in cur.scenarios.iter().filter(|c| !c.calibration) {
        if !base.scenarios.iter().any(|b| b.scenario == cs.scenario) {
            out.unmatched.push(format!("{}: new, not in the baseline", cs.scenario));
        }
    }
    out
}

fn compare_row(
    bs: &ScenarioSummary,
    cs: &ScenarioSummary,
    br: &RequestStats,
    cr: &RequestStats,
    limits: Limits,
) -> CompareRow {
    let rps_change = pct(br.rps, cr.rps);
    let p99_change = pct(br.p99_ms, cr.p99_ms);
    // With --repeat on both sides, a change that stays within the
    // baseline's run-to-run spread is noise, not a regression.
    let base_spread = (bs.runs.len() >= 2 && cs.runs.len() >= 2).then(|| spread(&bs.runs)).flatten();
    let (rps_noise, p99_noise) = match base_spread {
        Some(((rps_lo, _), (_, p99_hi))) => {
            (cs.rps >= rps_lo, cs.runs.iter().map(|r| r.p99_ms).fold(f64::MAX, f64::min) <= p99_hi)
        }
        None => (false, false),
    };
    let (mut regressions, mut noise) = (Vec::new(), Vec::new());
    if rps_change < -limits.max_rps_drop_pct {
        if rps_noise {
            noise.push("req/s drop within the baseline's spread".to_owned());
        } else {
            regressions.push(format!("req/s dropped more than {}%", limits.max_rps_drop_pct));
        }
    }
    if p99_change > limits.max_p99_rise_pct {
        if p99_noise {
            noise.push("p99 rise within the baseline's spread".to_owned());
        } else {
            regressions.push(format!("p99 rose more than {}%", limits.max_p99_rise_pct));
        }
    }
    if cr.failures > 0 && br.failures == 0 {
        regressions.push(format!("{} failures", cr.failures));
    }
    CompareRow {
        scenario: bs.scenario.clone(),
        request: br.name.clone(),
        rps: (br.rps, cr.rps, rps_change),
        p99: (br.p99_ms, cr.p99_ms, p99_change),
        regressions,
        noise,
    }
}

/// The terminal table, the verdict last.
pub fn compare_text(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<15} {:<26} {:>10} {:>10} {:>8} {:>9} {:>9} {:>8}  verdict",
        "scenario", "request", "base req/s", "cur req/s", "change", "base p99", "cur p99", "change"
    );
    for r in &c.rows {
        let _ = writeln!(
            out,
            "{:<15} {:<26} {:>10.1} {:>10.1} {:>+7.1}% {:>9.2} {:>9.2} {:>+7.1}%  {}",
            r.scenario,
            r.request,
            r.rps.0,
            r.rps.1,
            r.rps.2,
            r.p99.0,
            r.p99.1,
            r.p99.2,
            r.verdict()
        );
    }
    for (sc, b, cu) in &c.hit_ratios {
        let _ = writeln!(out, "{sc:<15} server cache hit ratio {:.1}% -> {:.1}%", b * 100.0, cu * 100.0);
    }
    for u in &c.unmatched {
        let _ = writeln!(out, "{u}");
    }
    let _ = writeln!(out, "{}", c.verdict());
    out
}

/// A Markdown table for a pull-request comment, the verdict first.
pub fn compare_markdown(c: &Comparison, base: &Summary, cur: &Summary) -> String {
    let mut out = String::new();
    let mark = if c.ok() { "✅" } else { "❌" };
    let _ = writeln!(out, "**{mark} {}**\n", c.verdict());
    let commit = |s: &Summary| {
        s.provenance.as_ref().and_then(|p| p.git_commit.clone()).map_or("unknown".to_owned(), |c| {
            match c.split_once('-') {
                // `HASH-dirty`: the hash shortened, the mark kept.
                Some((hash, mark)) => format!("{}-{mark}", hash.chars().take(12).collect::<String>()),
                None => c.chars().take(12).collect(),
            }
        })
    };
    let _ = writeln!(
        out,
        "Baseline `{}` ({}), current `{}` ({}).\n",
        commit(base),
        base.started_at,
        commit(cur),
        cur.started_at
    );
    let _ = writeln!(
        out,
        "| scenario | request | req/s base | req/s now | change | p99 ms base | p99 ms now | change | verdict |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---|");
    let cell = |s: &str| s.replace('|', "\\|");
    for r in &c.rows {
        let _ = writeln!(
            out,
            "| {} | `{}` | {:.1} | {:.1} | {:+.1}% | {:.2} | {:.2} | {:+.1}% | {} |",
            cell(&r.scenario),
            cell(&r.request),
            r.rps.0,
            r.rps.1,
            r.rps.2,
            r.p99.0,
            r.p99.1,
            r.p99.2,
            cell(&r.verdict())
        );
    }
    if !c.hit_ratios.is_empty() {
        let _ = writeln!(out, "\n| scenario | server cache hit ratio base | now |\n|---|---:|---:|");
        for (sc, b, cu) in &c.hit_ratios {
            let _ = writeln!(out, "| {} | {:.1}% | {:.1}% |", cell(sc), b * 100.0, cu * 100.0);
        }
    }
    for u in &c.unmatched {
        let _ = writeln!(out, "\n- {}", cell(u));
    }
    out
}

/// JUnit XML: one test case per scenario, request and metric (req/s,
/// p99), so CI systems list each like a test.
pub fn compare_junit(c: &Comparison) -> String {
    let x = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let mut cases = String::new();
    let mut failures = 0;
    for r in &c.rows {
        let metrics = [
            ("req/s", r.rps, r.regressions.iter().filter(|w| w.starts_with("req/s")).cloned().collect::<Vec<_>>()),
            ("p99", r.p99, r.regressions.iter().filter(|w| !w.starts_with("req/s")).cloned().collect()),
        ];
        for (metric, (b, cu, ch), why) in metrics {
            let _ = write!(
                cases,
                r#"  <testcase classname="loadtest.{}" name="{} {metric}" time="0"><system-out>baseline {b:.3}, current {cu:.3}, change {ch:+.1}%</system-out>"#,
                x(&r.scenario),
                x(&r.request)
            );
            if !why.is_empty() {
                failures += 1;
                let _ = write!(cases, r#"<failure message="{}"/>"#, x(&why.join(", ")));
            }
            cases.push_str("</testcase>\n");
        }
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"tollgate-loadtest compare\" tests=\"{}\" failures=\"{failures}\">\n{cases}</testsuite>\n",
        c.rows.len() * 2
    )
}

/// The settings in which two runs differ (`compare` refuses them unless
/// told): a change of users, run time or machine is not a regression.
pub fn settings_differ(base: &Summary, cur: &Summary) -> Vec<String> {
    let (Some(b), Some(c)) = (&base.provenance, &cur.provenance) else {
        return vec!["a summary has no provenance (written by an older harness)".to_owned()];
    };
    let keys: std::collections::BTreeSet<&String> = b.settings.keys().chain(c.settings.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (x, y) = (b.settings.get(k), c.settings.get(k));
            (x != y)
                .then(|| format!("{k}: {} vs {}", x.map_or("unset", String::as_str), y.map_or("unset", String::as_str)))
        })
        .collect()
}

fn pct(base: f64, cur: f64) -> f64 {
    if base == 0.0 { 0.0 } else { (cur - base) / base * 100.0 }
}

/// Adds `part`'s row to `into`. With both histograms the percentiles are
/// recomputed from their sum (exact); without, the worst part's are kept
/// (an upper bound) and the row loses its histogram.
pub fn merge_row(into: &mut RequestStats, part: &RequestStats) {
    let (requests, failures, rps) = (into.requests + part.requests, into.failures + part.failures, into.rps + part.rps);
    let exact = match (into.hdr.as_deref().map(Hist::decode), part.hdr.as_deref().map(Hist::decode)) {
        (Some(Ok(mut a)), Some(Ok(b))) => {
            a.add(&b);
            Some(a)
        }
        _ => None,
    };
    match exact {
        Some(h) => *into = h.stats(&into.name, failures, 1.0),
        None => {
            into.p50_ms = into.p50_ms.max(part.p50_ms);
            into.p90_ms = into.p90_ms.max(part.p90_ms);
            into.p99_ms = into.p99_ms.max(part.p99_ms);
            into.max_ms = into.max_ms.max(part.max_ms);
            into.hdr = None;
        }
    }
    (into.requests, into.failures, into.rps) = (requests, failures, rps);
}

/// Merges summaries of generator processes that ran at the same time against
/// one target: requests and req/s add up, and percentiles come from the sum
/// of their histograms (exact; see [`merge_row`] for parts without one).
/// Open-model steps merge step by step and are judged again.
pub fn merge(parts: &[Summary]) -> anyhow::Result<Summary> {
    let first = parts.first().ok_or_else(|| anyhow::anyhow!("merge needs at least one summary"))?;
    let mut out = first.clone();
    out.generator = None;
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
            os.thresholds_failed.extend(ps.thresholds_failed.iter().cloned());
            if os.error.is_none() {
                os.error.clone_from(&ps.error);
            }
            for pr in &ps.by_request {
                match os.by_request.iter_mut().find(|r| r.name == pr.name) {
                    None => os.by_request.push(pr.clone()),
                    Some(or) => merge_row(or, pr),
                }
            }
            if let (Some(oo), Some(po)) = (&mut os.open, &ps.open) {
                for (a, b) in oo.steps.iter_mut().zip(&po.steps) {
                    a.target_rps += b.target_rps;
                    a.due += b.due;
                    a.completed += b.completed;
                    a.errors += b.errors;
                    a.dropped += b.dropped;
                    a.late += b.late;
                    a.achieved_rps += b.achieved_rps;
                    merge_row(&mut a.latency, &b.latency);
                }
                let given = oo.limits_given;
                *oo = crate::open::OpenStats::judge(oo.steps.clone(), oo.knee_p99_ms, oo.knee_max_error_pct);
                oo.limits_given = given;
            }
            merge_timeline(&mut os.timeline, &ps.timeline);
            // Every generator scraped the same server over about the same
            // window: its numbers are the server's total, not a part of it.
            // Keep the widest window's.
            let seen = |s: &Option<ServerStats>| s.as_ref().map_or(0, |s| s.revocation.values().sum::<u64>());
            if seen(&ps.server) > seen(&os.server) {
                os.server.clone_from(&ps.server);
            }
            let ceiling = os.ceiling_rps;
            *os = os.clone().with_ceiling(ceiling);
        }
    }
    Ok(out)
}

/// Adds a generator's timeline second by second (generators started
/// together): rates add up; latencies keep the worse part's (an upper
/// bound: a tick holds no histogram).
fn merge_timeline(into: &mut Vec<Tick>, part: &[Tick]) {
    for (i, t) in part.iter().enumerate() {
        let Some(o) = into.get_mut(i) else {
            into.push(t.clone());
            continue;
        };
        for (name, row) in &t.requests {
            let r = o.requests.entry(name.clone()).or_default();
            r.rps += row.rps;
            r.p50_ms = r.p50_ms.max(row.p50_ms);
            r.p99_ms = r.p99_ms.max(row.p99_ms);
        }
        o.hit_ratio = o.hit_ratio.or(t.hit_ratio);
    }
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
                    hdr: None,
                    co_p99_ms: None,
                }],
                revocation: None,
                open: None,
                thresholds_failed: Vec::new(),
                error: None,
                runs: Vec::new(),
                server: None,
                timeline: Vec::new(),
                calibration: false,
                failure_reasons: Vec::new(),
            }],
            generator: None,
            provenance: Some(Provenance {
                settings: [("users".to_owned(), "8".to_owned())].into_iter().collect(),
                ..Provenance::default()
            }),
        }
    }

    /// `report` redraws a run from its summary.json and must draw what the
    /// run drew. 99.94999999999999 prints as "99.9"; serde_json's default
    /// parser read it back one unit in the last place off, which printed
    /// "100.0" (a redrawn report differed from the original in CI).
    #[test]
    fn a_summary_reads_back_exactly_what_was_written() {
        let s = summary(1000.0, 99.94999999999999);
        let text = serde_json::to_string(&s).expect("written");
        let back: Summary = serde_json::from_str(&text).expect("read back");
        let p99 = |s: &Summary| s.scenarios[0].by_request[0].p99_ms;
        assert_eq!(p99(&back).to_bits(), p99(&s).to_bits(), "{} read back as {}", p99(&s), p99(&back));
        assert_eq!(format!("{:.1}", p99(&back)), "99.9");
    }

    #[test]
    fn a_regression_reads_the_same_in_markdown_and_junit() {
        let (base, mut cur) = (summary(1000.0, 5.0), summary(850.0, 5.0));
        if let Some(p) = cur.provenance.as_mut() {
            p.git_commit = Some("0123456789abcdef0123-dirty".into());
        }
        let c = compare(&base, &cur, Limits::default());
        let md = compare_markdown(&c, &base, &cur);
        assert!(md.contains("current `0123456789ab-dirty`"), "a dirty tree stays marked:\n{md}");
        assert!(md.starts_with("**❌ REGRESSION in 1 of 1 rows"), "verdict first:\n{md}");
        assert!(md.contains("| cached-read | `GET /tasks` | 1000.0 | 850.0 | -15.0% |"), "{md}");
        let junit = compare_junit(&c);
        assert!(junit.contains(r#"tests="2" failures="1""#), "{junit}");
        assert!(
            junit.contains(r#"name="GET /tasks req/s""#) && junit.contains("<failure message=\"req/s dropped"),
            "{junit}"
        );
        let ok = compare(&base, &base, Limits::default());
        assert!(compare_markdown(&ok, &base, &base).starts_with("**✅ no regression"));
        assert!(compare_junit(&ok).contains(r#"failures="0""#));
    }

    #[test]
    fn the_generators_ceiling_is_shown_not_judged() {
        let with_ceiling = |rps: f64| {
            let mut s = summary(1000.0, 5.0);
            let mut c = s.scenarios[0].clone();
            (c.scenario, c.rps, c.calibration) = ("healthz".into(), rps, true);
            c.by_request[0].name = "GET /healthz".into();
            c.by_request[0].rps = rps;
            s.scenarios.insert(0, c);
            s
        };
        let c = compare(&with_ceiling(40_000.0), &with_ceiling(30_000.0), Limits::default());
        assert!(c.ok(), "{}", compare_text(&c));
        assert_eq!(c.rows.len(), 1, "only the server's rows are judged");
        assert!(compare_text(&c).contains("healthz: the generator's ceiling, 40000 -> 30000 req/s (not judged"));
    }

    #[test]
    fn runs_with_different_settings_are_told_apart() {
        let base = summary(1000.0, 5.0);
        assert!(settings_differ(&base, &base).is_empty());
        let mut cur = base.clone();
        if let Some(p) = cur.provenance.as_mut() {
            p.settings.insert("users".into(), "64".into());
            p.git_commit = Some("another commit".into());
        }
        assert_eq!(
            settings_differ(&base, &cur),
            vec!["users: 8 vs 64".to_owned()],
            "the commit may differ, settings not"
        );
        cur.provenance = None;
        assert_eq!(settings_differ(&base, &cur).len(), 1);
    }

    #[test]
    fn identical_runs_pass_the_gate() {
        let s = summary(1000.0, 5.0);
        let c = compare(&s, &s, Limits::default());
        assert!(c.ok(), "{}", compare_text(&c));
    }

    #[test]
    fn a_throughput_drop_beyond_the_limit_fails() {
        let c = compare(&summary(1000.0, 5.0), &summary(850.0, 5.0), Limits::default());
        assert!(!c.ok());
        let table = compare_text(&c);
        assert!(table.contains("REGRESSION: req/s dropped"), "{table}");
        assert!(
            compare(&summary(1000.0, 5.0), &summary(950.0, 5.0), Limits::default()).ok(),
            "a 5% drop is within 10%"
        );
    }

    #[test]
    fn a_p99_rise_beyond_the_limit_fails_and_limits_are_settable() {
        assert!(!compare(&summary(1000.0, 5.0), &summary(1000.0, 6.0), Limits::default()).ok());
        let lenient = Limits { max_rps_drop_pct: 10.0, max_p99_rise_pct: 30.0 };
        assert!(compare(&summary(1000.0, 5.0), &summary(1000.0, 6.0), lenient).ok());
    }

    #[test]
    fn a_change_within_the_baselines_spread_is_noise() {
        let with_runs = |rps: f64, p99: f64, spread: &[(f64, f64)]| {
            let mut s = summary(rps, p99);
            s.scenarios[0].runs = spread.iter().map(|&(rps, p99_ms)| RunPoint { rps, p99_ms }).collect();
            s
        };
        let base = with_runs(1000.0, 5.0, &[(900.0, 4.0), (1000.0, 5.0), (1100.0, 7.0)]);
        let c =
            compare(&base, &with_runs(1000.0, 6.0, &[(950.0, 6.0), (1000.0, 6.0), (1050.0, 6.5)]), Limits::default());
        let table = compare_text(&c);
        assert!(c.ok() && table.contains("within the baseline's spread"), "{table}");
        let c =
            compare(&base, &with_runs(1000.0, 9.0, &[(990.0, 8.5), (1000.0, 9.0), (1010.0, 9.5)]), Limits::default());
        assert!(!c.ok(), "every current run is slower than the slowest baseline run");
    }

    #[test]
    fn client_bound_results_are_marked() {
        let sc = summary(9000.0, 1.0).scenarios.remove(0);
        assert!(sc.clone().with_ceiling(Some(10_000.0)).client_bound);
        assert!(!sc.with_ceiling(Some(20_000.0)).client_bound);
    }

    #[test]
    fn merged_histograms_give_the_true_percentiles() {
        // Two generators: one saw 1 ms for 990 requests, the other 100 ms
        // for 10. Together, 1% are slow: p99 is 1 ms, p99.5 would be 100.
        let rows = |n: u64, ms: u64| {
            let mut h = Hist::new();
            for _ in 0..n {
                h.record(Duration::from_millis(ms));
            }
            h.stats("GET /tasks", 0, 10.0)
        };
        let (fast, slow) = (rows(990, 1), rows(10, 100));
        assert!((slow.p99_ms - 100.0).abs() < 0.5, "the slow part alone: p99 {}", slow.p99_ms);
        let mut merged = fast.clone();
        merge_row(&mut merged, &slow);
        assert_eq!(merged.requests, 1000);
        assert!((merged.p99_ms - 1.0).abs() < 0.01, "exact p99 of the sum: {}", merged.p99_ms);
        assert!((merged.max_ms - 100.0).abs() < 0.5);
        let decoded = Hist::decode(merged.hdr.as_deref().expect("hdr")).expect("decodes");
        assert_eq!(decoded.len(), 1000);
    }

    #[test]
    fn merged_timelines_add_rates_second_by_second() {
        let tick = |rps: f64, p99_ms: f64| Tick {
            t_s: 1.0,
            requests: [("GET /tasks".to_owned(), crate::live::TickRow { rps, p50_ms: 1.0, p99_ms })].into(),
            hit_ratio: Some(1.0),
        };
        let mut into = vec![tick(100.0, 5.0)];
        merge_timeline(&mut into, &[tick(50.0, 9.0), tick(10.0, 1.0)]);
        assert_eq!(into.len(), 2);
        assert_eq!((into[0].requests["GET /tasks"].rps, into[0].requests["GET /tasks"].p99_ms), (150.0, 9.0));
    }

    #[test]
    fn merged_summaries_add_throughput_and_keep_the_worst_latency() {
        let m = merge(&[summary(1000.0, 5.0), summary(500.0, 9.0)]).expect("merge");
        let r = &m.scenarios[0].by_request[0];
        assert_eq!((r.rps, r.p99_ms), (1500.0, 9.0));
        assert_eq!(m.scenarios[0].ceiling_rps, Some(20_000.0));
    }
}
