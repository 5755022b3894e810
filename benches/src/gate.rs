//! The regression gates.
//!
//! **Criterion.** `cargo bench -- --baseline NAME` compares every bench with
//! a baseline saved earlier by `--save-baseline NAME` and writes
//! `target/criterion/**/change/estimates.json`. A bench regresses when its
//! median slowed by more than the threshold *and* criterion's own evidence
//! agrees: the 95 % confidence interval of the change lies wholly above zero
//! (criterion's "Performance has regressed"). Noise alone, on a shared
//! machine, does not fail the gate; a real slow-down beyond the threshold
//! does.
//!
//! **Instructions.** Counts under callgrind repeat to the instruction for the
//! same binary and inputs, so the gate is a plain threshold on the count.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

#[derive(Deserialize)]
struct Interval {
    lower_bound: f64,
    upper_bound: f64,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
    confidence_interval: Interval,
}

#[derive(Deserialize)]
struct Estimates {
    median: Estimate,
}

/// One bench compared with its baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Bench id (`group/function/parameter`).
    pub name: String,
    /// Baseline median, ns.
    pub base_ns: f64,
    /// Current median, ns.
    pub new_ns: f64,
    /// Median change, percent (positive = slower).
    pub pct: f64,
    /// 95 % confidence interval of the change, percent.
    pub ci_pct: (f64, f64),
}

fn read(path: &Path) -> anyhow::Result<Estimates> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Every bench under `criterion_dir` that has a comparison with `baseline`.
pub fn read_changes(criterion_dir: &Path, baseline: &str) -> anyhow::Result<Vec<Change>> {
    let mut out = Vec::new();
    walk(criterion_dir, criterion_dir, baseline, &mut out)?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn walk(root: &Path, dir: &Path, baseline: &str, out: &mut Vec<Change>) -> anyhow::Result<()> {
    let change = dir.join("change/estimates.json");
    let base = dir.join(baseline).join("estimates.json");
    let new = dir.join("new/estimates.json");
    if change.exists() && base.exists() && new.exists() {
        let (c, b, n) = (read(&change)?, read(&base)?, read(&new)?);
        let name = dir.strip_prefix(root).unwrap_or(dir).to_string_lossy().into_owned();
        out.push(Change {
            name,
            base_ns: b.median.point_estimate,
            new_ns: n.median.point_estimate,
            pct: c.median.point_estimate * 100.0,
            ci_pct: (
                c.median.confidence_interval.lower_bound * 100.0,
                c.median.confidence_interval.upper_bound * 100.0,
            ),
        });
        return Ok(());
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && p.file_name().is_some_and(|n| n != "report") {
            walk(root, &p, baseline, out)?;
        }
    }
    Ok(())
}

fn human_ns(ns: f64) -> String {
    match ns {
        n if n >= 1e6 => format!("{:.2} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.2} µs", n / 1e3),
        n => format!("{n:.1} ns"),
    }
}

/// The table and whether every bench passed.
pub fn judge(changes: &[Change], threshold_pct: f64) -> (String, bool) {
    let mut out = String::new();
    let mut ok = true;
    let _ =
        writeln!(out, "{:<44} {:>11} {:>11} {:>8} {:>19}  verdict", "bench", "baseline", "current", "change", "95% CI");
    for c in changes {
        let regressed = c.pct > threshold_pct && c.ci_pct.0 > 0.0;
        ok &= !regressed;
        let verdict = if regressed {
            format!("REGRESSION (> {threshold_pct}% and significant)")
        } else if c.ci_pct.1 < 0.0 {
            "faster".to_owned()
        } else {
            "ok".to_owned()
        };
        let _ = writeln!(
            out,
            "{:<44} {:>11} {:>11} {:>+7.1}% [{:>+7.1}%, {:>+7.1}%]  {verdict}",
            c.name,
            human_ns(c.base_ns),
            human_ns(c.new_ns),
            c.pct,
            c.ci_pct.0,
            c.ci_pct.1
        );
    }
    (out, ok)
}

/// Instructions per operation, by operation name.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Instructions {
    /// Operation -> instructions per call.
    pub per_op: BTreeMap<String, u64>,
}

/// The table and whether no operation grew beyond `threshold_pct`.
pub fn judge_instructions(base: &Instructions, cur: &Instructions, threshold_pct: f64) -> (String, bool) {
    let mut out = String::new();
    let mut ok = true;
    let _ = writeln!(out, "{:<24} {:>14} {:>14} {:>9}  verdict", "operation", "baseline", "current", "change");
    for (op, &now) in &cur.per_op {
        match base.per_op.get(op) {
            None => {
                let _ = writeln!(out, "{op:<24} {:>14} {now:>14} {:>9}  new", "-", "-");
            }
            Some(&was) => {
                let pct = if was == 0 { 0.0 } else { (now as f64 - was as f64) / was as f64 * 100.0 };
                let regressed = pct > threshold_pct;
                ok &= !regressed;
                let verdict = if regressed { format!("REGRESSION (> {threshold_pct}%)") } else { "ok".into() };
                let _ = writeln!(out, "{op:<24} {was:>14} {now:>14} {pct:>+8.2}%  {verdict}");
            }
        }
    }
    for op in base.per_op.keys().filter(|k| !cur.per_op.contains_key(*k)) {
        let _ = writeln!(out, "{op:<24} (missing from the current run)");
    }
    (out, ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn estimates(median: f64, lo: f64, hi: f64) -> String {
        format!(
            r#"{{"mean":{{"point_estimate":{median},"standard_error":1,"confidence_interval":{{"confidence_level":0.95,"lower_bound":{lo},"upper_bound":{hi}}}}},
               "median":{{"point_estimate":{median},"standard_error":1,"confidence_interval":{{"confidence_level":0.95,"lower_bound":{lo},"upper_bound":{hi}}}}}}}"#
        )
    }

    /// A criterion directory with one bench compared against `base`.
    fn fake(base_ns: f64, new_ns: f64, change: (f64, f64, f64)) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("gate-{}-{}", std::process::id(), rand_suffix()));
        let b = dir.join("jwt/verify");
        for (sub, text) in [
            ("main", estimates(base_ns, base_ns, base_ns)),
            ("new", estimates(new_ns, new_ns, new_ns)),
            ("change", estimates(change.0, change.1, change.2)),
        ] {
            std::fs::create_dir_all(b.join(sub)).expect("mkdir");
            std::fs::write(b.join(sub).join("estimates.json"), text).expect("write");
        }
        dir
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
    }

    #[test]
    fn an_unchanged_run_passes() {
        let dir = fake(1000.0, 1004.0, (0.004, -0.01, 0.02));
        let changes = read_changes(&dir, "main").expect("read");
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].name, "jwt/verify");
        assert!(judge(&changes, 10.0).1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_significant_slowdown_beyond_the_threshold_fails() {
        let dir = fake(1000.0, 1300.0, (0.30, 0.25, 0.35));
        let changes = read_changes(&dir, "main").expect("read");
        let (table, ok) = judge(&changes, 10.0);
        assert!(!ok, "{table}");
        assert!(table.contains("REGRESSION"));
        assert!(judge(&changes, 40.0).1, "the threshold is settable");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_large_but_insignificant_change_is_noise() {
        let dir = fake(1000.0, 1200.0, (0.20, -0.05, 0.45));
        let changes = read_changes(&dir, "main").expect("read");
        assert!(judge(&changes, 10.0).1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn instruction_counts_gate_on_their_threshold() {
        let base = Instructions { per_op: [("jwt_verify".to_string(), 10_000)].into() };
        let same = base.clone();
        assert!(judge_instructions(&base, &same, 2.0).1);
        let worse = Instructions { per_op: [("jwt_verify".to_string(), 10_300)].into() };
        let (table, ok) = judge_instructions(&base, &worse, 2.0);
        assert!(!ok && table.contains("REGRESSION"), "{table}");
        assert!(judge_instructions(&base, &worse, 5.0).1);
    }
}
