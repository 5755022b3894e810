//! `bench-gate`: reads criterion's comparison with a saved baseline and fails
//! on a significant slow-down beyond a threshold (see `tollgate_benches::gate`).
//!
//!     bench-gate [--dir target/criterion] [--baseline main] [--threshold 10] [--regressed FILE]
//!
//! `--regressed FILE` writes the ids of regressed benches there, one per
//! line, so a script can measure just those again before failing.

use std::path::PathBuf;
use std::process::ExitCode;
use tollgate_benches::gate::{judge, read_changes};

fn main() -> ExitCode {
    let mut dir = PathBuf::from("target/criterion");
    let mut baseline = "main".to_owned();
    let mut threshold = 10.0;
    let mut regressed_file: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next();
        match (a.as_str(), v) {
            ("--dir", Some(v)) => dir = v.into(),
            ("--baseline", Some(v)) => baseline = v,
            ("--regressed", Some(v)) => regressed_file = Some(v.into()),
            ("--threshold", Some(v)) => match v.parse() {
                Ok(t) => threshold = t,
                Err(_) => return usage("--threshold takes a percentage"),
            },
            _ => return usage(&format!("unexpected argument {a}")),
        }
    }
    let changes = match read_changes(&dir, &baseline) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bench-gate: {e:#}");
            return ExitCode::from(2);
        }
    };
    if changes.is_empty() {
        eprintln!(
            "bench-gate: no comparison with baseline {baseline:?} under {} (run cargo bench -- --baseline {baseline})",
            dir.display()
        );
        return ExitCode::from(2);
    }
    let (table, ok) = judge(&changes, threshold);
    print!("{table}");
    if let Some(f) = regressed_file {
        let ids: String = table
            .lines()
            .filter(|l| l.contains("REGRESSION"))
            .filter_map(|l| l.split_whitespace().next())
            .map(|id| format!("{id}\n"))
            .collect();
        if let Err(e) = std::fs::write(&f, ids) {
            eprintln!("bench-gate: writing {}: {e}", f.display());
            return ExitCode::from(2);
        }
    }
    if ok {
        println!("no regression beyond {threshold}% against baseline {baseline:?}");
        ExitCode::SUCCESS
    } else {
        println!("REGRESSION beyond {threshold}% against baseline {baseline:?}");
        ExitCode::from(1)
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!(
        "bench-gate: {msg}\nusage: bench-gate [--dir DIR] [--baseline NAME] [--threshold PCT] [--regressed FILE]"
    );
    ExitCode::from(2)
}
