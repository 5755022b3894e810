//! The run's report: one HTML file that opens anywhere, offline.
//!
//! goose's own report draws its charts with ECharts fetched from a CDN, so
//! on a machine without internet its charts are empty boxes. This one has
//! no script and fetches nothing: every chart is inline SVG drawn here from
//! `summary.json`'s numbers (the timeline, the latency histograms, the ban
//! timings, the staircase), so `tollgate-loadtest report summary.json`
//! draws the same report again later. A chart is only drawn where its data
//! exists, and each carries `data-points`, which the browser test checks.

use crate::summary::{Hist, ScenarioSummary, Summary};
use std::fmt::Write as _;

/// Series colours (colour-blind safe, Okabe-Ito).
const PALETTE: &[&str] = &["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"];

/// One chart: named series of (x, y) points.
struct Chart {
    title: String,
    x_label: &'static str,
    y_label: &'static str,
    log_x: bool,
    series: Vec<(String, Vec<(f64, f64)>)>,
}

impl Chart {
    fn new(title: impl Into<String>, x_label: &'static str, y_label: &'static str) -> Self {
        Self { title: title.into(), x_label, y_label, log_x: false, series: Vec::new() }
    }

    fn points(&self) -> usize {
        self.series.iter().map(|(_, p)| p.len()).sum()
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// About five round tick values covering `lo..hi`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(f64::EPSILON);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= 6.0).unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(t);
        t += step;
    }
    out
}

fn label(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 0.01 && v.abs() < 1e6) {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        format!("{v:.1e}")
    }
}

/// The chart as SVG: axes, ticks, a polyline per series (points marked
/// when there are few), the legend on the right.
fn svg(c: &Chart) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 300.0, 64.0, 200.0, 28.0, 44.0);
    let all: Vec<(f64, f64)> = c.series.iter().flat_map(|(_, p)| p.iter().copied()).collect();
    let fx = |x: f64| if c.log_x { x.max(1e-6).log10() } else { x };
    let (mut x0, mut x1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(fx(p.0)), b.max(fx(p.0))));
    let y1 = all.iter().fold(0.0f64, |m, p| m.max(p.1)) * 1.05;
    let y1 = if y1 <= 0.0 { 1.0 } else { y1 };
    if x1 <= x0 {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    let px = |x: f64| left + (fx(x) - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| h - bottom - y / y1 * (h - top - bottom);
    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg class="chart" data-points="{}" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{}">"#,
        c.points(),
        esc(&c.title)
    );
    let _ = write!(o, r#"<text x="{left}" y="18" class="t">{}</text>"#, esc(&c.title));
    let (bx, by) = (h - bottom, w - right);
    let _ = write!(o, r##"<path d="M{left} {top}V{bx}H{by}" fill="none" stroke="#444"/>"##);
    for t in ticks(0.0, y1) {
        let y = py(t);
        let _ = write!(
            o,
            r##"<line x1="{left}" x2="{by}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            left - 6.0,
            y + 4.0,
            label(t)
        );
    }
    let xt: Vec<(f64, String)> = if c.log_x {
        (x0.floor() as i32..=x1.ceil() as i32)
            .map(|e| 10f64.powi(e))
            .filter(|v| fx(*v) >= x0 && fx(*v) <= x1)
            .map(|v| (v, label(v)))
            .collect()
    } else {
        ticks(x0, x1).into_iter().map(|v| (v, label(v))).collect()
    };
    for (v, l) in xt {
        let x = px(v);
        let _ = write!(
            o,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{bx}" y2="{}" stroke="#444"/><text x="{x:.1}" y="{}" text-anchor="middle">{l}</text>"##,
            bx + 5.0,
            bx + 18.0
        );
    }
    let _ = write!(
        o,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text><text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        (left + by) / 2.0,
        h - 6.0,
        esc(c.x_label),
        (top + bx) / 2.0,
        esc(c.y_label)
    );
    for (i, (name, pts)) in c.series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = pts.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
        let _ = write!(o, r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#, path.join(" "));
        if pts.len() <= 40 {
            for &(x, y) in pts {
                let _ = write!(o, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#, px(x), py(y));
            }
        }
        let ly = top + 14.0 + i as f64 * 18.0;
        let _ = write!(
            o,
            r#"<rect x="{}" y="{}" width="12" height="12" fill="{colour}"/><text x="{}" y="{ly:.1}">{}</text>"#,
            by + 12.0,
            ly - 10.0,
            by + 30.0,
            esc(name)
        );
    }
    o.push_str("</svg>");
    o
}

/// The charts of one scenario that have data.
fn charts(sc: &ScenarioSummary) -> Vec<Chart> {
    let mut out = Vec::new();
    let names: std::collections::BTreeSet<&String> = sc.timeline.iter().flat_map(|t| t.requests.keys()).collect();
    let mut rps = Chart::new("Requests per second", "seconds into the scenario", "req/s");
    let mut lat = Chart::new("Latency over time: p50 and p99", "seconds into the scenario", "ms");
    for n in names {
        let pick = |f: fn(&crate::live::TickRow) -> f64| -> Vec<(f64, f64)> {
            sc.timeline.iter().filter_map(|t| t.requests.get(n).map(|r| (t.t_s, f(r)))).collect()
        };
        rps.series.push((n.clone(), pick(|r| r.rps)));
        lat.series.push((format!("{n} p50"), pick(|r| r.p50_ms)));
        lat.series.push((format!("{n} p99"), pick(|r| r.p99_ms)));
    }
    out.extend([rps, lat]);
    let mut dist = Chart::new("Latency distribution (share of requests at or under)", "ms (log scale)", "%");
    dist.log_x = true;
    for r in &sc.by_request {
        if let Some(h) = r.hdr.as_deref().and_then(|t| Hist::decode(t).ok()) {
            dist.series.push((r.name.clone(), h.cdf()));
        }
    }
    out.push(dist);
    let mut hit = Chart::new("Server cache hit ratio (the server's /metrics)", "seconds into the scenario", "%");
    let pts: Vec<(f64, f64)> = sc.timeline.iter().filter_map(|t| t.hit_ratio.map(|r| (t.t_s, r * 100.0))).collect();
    hit.series.push(("hit ratio".into(), pts));
    out.push(hit);
    if let Some(rv) = &sc.revocation {
        let mut ban = Chart::new("Ban to first 401 (share of bans at or under)", "ms", "%");
        let mut v = rv.ban_to_401_ms.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        ban.series.push((
            "ban -> 401".into(),
            v.iter().enumerate().map(|(i, ms)| (*ms, (i + 1) as f64 / n * 100.0)).collect(),
        ));
        out.push(ban);
    }
    if let Some(o) = sc.open.as_ref().filter(|o| o.steps.len() > 1) {
        let mut stair = Chart::new("Staircase: latency against achieved throughput", "achieved req/s", "ms");
        stair.series.push(("p50".into(), o.steps.iter().map(|s| (s.achieved_rps, s.latency.p50_ms)).collect()));
        stair.series.push(("p99".into(), o.steps.iter().map(|s| (s.achieved_rps, s.latency.p99_ms)).collect()));
        out.push(stair);
    }
    for c in &mut out {
        c.series.retain(|(_, p)| !p.is_empty());
    }
    out.retain(|c| c.points() > 0);
    out
}

fn server_lines(sc: &ScenarioSummary) -> String {
    let Some(s) = &sc.server else { return "<p>The server's <code>/metrics</code> could not be read.</p>".into() };
    let mut o = String::from("<ul class=\"server\">");
    let pct = |r: Option<f64>| r.map_or("n/a".to_owned(), |r| format!("{:.1}%", r * 100.0));
    let _ = write!(o, "<li>cache hit ratio {}", pct(s.hit_ratio));
    for (cache, (h, m)) in &s.cache {
        let _ = write!(o, "; {} {h} hits, {m} misses", esc(cache));
    }
    let _ = write!(o, "</li><li>revocation checks answered by PostgreSQL: {}", pct(s.db_check_share));
    for (k, v) in &s.revocation {
        let _ = write!(o, "; {} {v}", esc(k));
    }
    let list = |m: &std::collections::BTreeMap<String, u64>| {
        if m.is_empty() {
            "none".to_owned()
        } else {
            m.iter().map(|(k, v)| format!("{} {v}", esc(k))).collect::<Vec<_>>().join(", ")
        }
    };
    let _ = write!(
        o,
        "</li><li>5xx answers: {}</li><li>dependency errors: {}</li>",
        list(&s.errors_5xx),
        list(&s.dependency_errors)
    );
    if let (Some(p50), Some(p99)) = (s.hash_p50_ms, s.hash_p99_ms) {
        let _ = write!(o, "<li>password hashes {}: p50 {p50:.1} ms, p99 {p99:.1} ms</li>", s.hashes);
    }
    o.push_str("</ul>");
    o
}

/// The report of a whole run.
pub fn render(s: &Summary) -> String {
    let mut o = String::from(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Tollgate load test</title><style>
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px}
svg.chart{display:block;margin:12px 0;background:#fff;border:1px solid #eee}
svg text{font:11px system-ui,sans-serif;fill:#222} svg text.t{font-weight:600;font-size:13px}
.verdict{font-weight:600;padding:6px 10px;display:inline-block;border-radius:4px}
.ok{background:#dfd}.bad{background:#fdd}
</style></head><body><h1>Tollgate load test</h1>"#,
    );
    let v = crate::verdict(s);
    let (class, text) = match &v {
        crate::Verdict::Passed => ("ok", "passed".to_owned()),
        crate::Verdict::ContractBroken(w) => ("bad", format!("contract broken: {w}")),
        crate::Verdict::ThresholdFailed(w) => ("bad", format!("threshold failed: {w}")),
        crate::Verdict::HarnessFailed(w) => ("bad", format!("could not run: {w}")),
    };
    let _ = write!(o, r#"<p class="verdict {class}">Verdict: {} (exit {})</p>"#, esc(&text), v.code());
    let _ = write!(
        o,
        "<p>Target {} {}, started {}",
        esc(&s.target),
        if s.embedded { "(embedded)" } else { "" },
        esc(&s.started_at)
    );
    if let Some(p) = &s.provenance {
        let _ = write!(
            o,
            "; run {}, commit {}, harness {}, goose {}, {} CPUs.<br>Command: <code>{}</code>",
            esc(&p.run_id),
            esc(p.git_commit.as_deref().unwrap_or("unknown")),
            esc(&p.harness_version),
            esc(&p.goose_version),
            p.cpus,
            esc(&p.args.join(" "))
        );
    }
    let _ = write!(o, "</p><pre>{}</pre>", esc(&crate::summary::table(s)));
    for sc in &s.scenarios {
        let _ = write!(o, "<section><h2>{}</h2>", esc(&sc.scenario));
        if let Some(e) = &sc.error {
            let _ = write!(o, "<p class=\"verdict bad\">could not run: {}</p>", esc(e));
        }
        o.push_str(&server_lines(sc));
        for c in charts(sc) {
            o.push_str(&svg(&c));
        }
        o.push_str("</section>");
    }
    o.push_str("</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 100.0), vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(ticks(0.0, 7.0), vec![0.0, 2.0, 4.0, 6.0]);
    }

    #[test]
    fn a_chart_without_data_is_not_drawn_and_one_with_data_counts_its_points() {
        let sc = ScenarioSummary { scenario: "login".into(), ..ScenarioSummary::default() };
        assert!(charts(&sc).is_empty());
        let mut c = Chart::new("x", "a", "b");
        c.series.push(("s".into(), vec![(0.0, 1.0), (1.0, 2.0)]));
        let out = svg(&c);
        assert!(out.contains(r#"data-points="2""#) && out.contains("<polyline"), "{out}");
    }
}
