//! `instructions`: instruction counts of the CPU-bound operations under
//! callgrind, which repeat exactly for the same binary whatever else the
//! machine is doing. Each operation runs N times and 0 times under
//! `valgrind --tool=callgrind`; the difference over N is its cost.
//!
//!     instructions measure [--out FILE]
//!     instructions check BASELINE.json [--threshold PCT] [--out FILE]
//!     instructions run OP N        (what measure runs under valgrind)
//!
//! The operations are `tollgate_benches::OPS`, the same table criterion
//! measures in wall time.

use std::process::{Command, ExitCode};
use tollgate_benches::gate::{Instructions, judge_instructions};
use tollgate_benches::{OPS, Pieces};

const ITERATIONS: u64 = 200;

/// Runs `op` `n` times after its set-up.
fn run(op: &str, n: u64) -> Result<(), String> {
    let op = OPS.iter().find(|o| o.name == op).ok_or_else(|| format!("unknown operation {op}"))?;
    let pieces = Pieces::new();
    for _ in 0..n {
        (op.run)(&pieces);
    }
    Ok(())
}

/// Total instructions of `instructions run OP N` under callgrind.
fn count(op: &str, n: u64) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::env::temp_dir().join(format!("callgrind.{op}.{n}.{}", std::process::id()));
    let status = Command::new("valgrind")
        .args(["--tool=callgrind", "--dump-instr=no", "--compress-strings=no"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(&exe)
        .args(["run", op, &n.to_string()])
        .output()
        .map_err(|e| format!("running valgrind (install it: apt-get install valgrind): {e}"))?;
    if !status.status.success() {
        return Err(format!("valgrind failed for {op}: {}", String::from_utf8_lossy(&status.stderr)));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| format!("reading {}: {e}", out.display()))?;
    let _ = std::fs::remove_file(&out);
    text.lines()
        .find_map(|l| l.strip_prefix("summary: ").or_else(|| l.strip_prefix("totals: ")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no instruction total in callgrind's output for {op}"))
}

fn measure() -> Result<Instructions, String> {
    let mut r = Instructions::default();
    for op in OPS {
        let (base, full) = (count(op.name, 0)?, count(op.name, ITERATIONS)?);
        r.per_op.insert(op.name.to_owned(), full.saturating_sub(base) / ITERATIONS);
    }
    Ok(r)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let result = match args.first().map(String::as_str) {
        Some("run") => {
            let (Some(op), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse().ok())) else {
                return usage();
            };
            run(op, n).map(|_| true)
        }
        Some("measure") => measure().and_then(|m| {
            let json = serde_json::to_string_pretty(&m).map_err(|e| e.to_string())?;
            match flag("--out") {
                Some(f) => std::fs::write(&f, json + "\n").map_err(|e| format!("writing {f}: {e}"))?,
                None => println!("{json}"),
            }
            Ok(true)
        }),
        Some("check") => {
            let Some(base_file) = args.get(1) else { return usage() };
            let threshold: f64 = flag("--threshold").and_then(|t| t.parse().ok()).unwrap_or(2.0);
            std::fs::read_to_string(base_file)
                .map_err(|e| format!("reading {base_file}: {e}"))
                .and_then(|t| serde_json::from_str::<Instructions>(&t).map_err(|e| format!("{base_file}: {e}")))
                .and_then(|base| {
                    let cur = measure()?;
                    if let Some(f) = flag("--out") {
                        let json = serde_json::to_string_pretty(&cur).map_err(|e| e.to_string())?;
                        std::fs::write(&f, json + "\n").map_err(|e| format!("writing {f}: {e}"))?;
                    }
                    let (table, ok) = judge_instructions(&base, &cur, threshold);
                    print!("{table}");
                    println!("{} (threshold {threshold}%)", if ok { "no regression" } else { "REGRESSION" });
                    Ok(ok)
                })
        }
        _ => return usage(),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("instructions: {e}");
            ExitCode::from(2)
        }
    }
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: instructions measure [--out FILE] | check BASELINE.json [--threshold PCT] [--out FILE] | run OP N"
    );
    ExitCode::from(2)
}
