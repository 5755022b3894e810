//! `instructions`: instruction counts of the CPU-bound operations under
//! callgrind, which repeat exactly for the same binary whatever else the
//! machine is doing. Each operation runs N times and 0 times under
//! `valgrind --tool=callgrind`; the difference over N is its cost.
//!
//!     instructions measure [--out FILE]
//!     instructions check BASELINE.json [--threshold PCT] [--out FILE]
//!     instructions run OP N        (what measure runs under valgrind)
//!
//! Password hashing is left to criterion: 19 MiB of Argon2 under valgrind
//! takes minutes and its cost is set by its parameters, not by our code.

use std::hint::black_box;
use std::process::{Command, ExitCode};
use tollgate::auth::revocation::{is_revoked, parse_nbf};
use tollgate::auth::token::{Role, TokenType};
use tollgate::http::router::Router;
use tollgate::metrics::Metrics;
use tollgate::tasks::model::{ListQuery, NewTaskBody};
use tollgate_benches::gate::{Instructions, judge_instructions};
use tollgate_benches::{NEW_TASK_BODY, access_token, sample_tasks, tokens};

const ITERATIONS: u64 = 200;
const OPS: &[&str] = &[
    "jwt_sign_pair",
    "jwt_verify",
    "jwt_verify_cached",
    "route_get_task",
    "parse_list_query",
    "decode_new_task",
    "encode_tasks_20",
    "encode_tasks_100",
    "revocation_decide",
];

/// Runs `op` `n` times after its set-up.
fn run(op: &str, n: u64) -> Result<(), String> {
    let t = tokens();
    let token = access_token(&t);
    let metrics = Metrics::new();
    let router = Router::new(&metrics);
    let (t20, t100) = (sample_tasks(20), sample_tasks(100));
    let _ = t.verify_access(&token); // the cached case measures hits
    for _ in 0..n {
        match op {
            "jwt_sign_pair" => drop(black_box(t.issue(black_box(42), 7, Role::User, "jti".into(), i64::MAX))),
            "jwt_verify" => drop(black_box(t.verify(black_box(&token), TokenType::Access))),
            "jwt_verify_cached" => drop(black_box(t.verify_access(black_box(&token)))),
            "route_get_task" => drop(black_box(router.find(&hyper::Method::GET, black_box("/tasks/12345")))),
            "parse_list_query" => {
                drop(black_box(ListQuery::parse(black_box(Some("limit=20&offset=40&completed=false")))))
            }
            "decode_new_task" => drop(black_box(
                serde_json::from_slice::<NewTaskBody>(black_box(NEW_TASK_BODY)).map(NewTaskBody::validate),
            )),
            "encode_tasks_20" => drop(black_box(serde_json::to_vec(black_box(&t20)))),
            "encode_tasks_100" => drop(black_box(serde_json::to_vec(black_box(&t100)))),
            "revocation_decide" => {
                let (blocked, min) = parse_nbf(black_box(b"1234567:a"));
                black_box(is_revoked(black_box(2_000_000), blocked, min, false));
            }
            other => return Err(format!("unknown operation {other}")),
        }
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
        .and_then(|v| v.trim().split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no instruction total in callgrind's output for {op}"))
}

fn measure() -> Result<Instructions, String> {
    let mut r = Instructions::default();
    for op in OPS {
        let (base, full) = (count(op, 0)?, count(op, ITERATIONS)?);
        r.per_op.insert((*op).to_owned(), full.saturating_sub(base) / ITERATIONS);
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
