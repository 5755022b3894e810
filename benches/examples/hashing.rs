//! A login storm's hashing without the logins: the server's own hashing
//! pool (`auth::password::Passwords`: `HASH_CONCURRENCY` threads at
//! `HASH_NICE`, read from the environment as the server reads them) kept
//! busy for SECS seconds by twice as many callers, each verifying a
//! password against the dummy hash (a full Argon2id). Prints the hashes
//! per second.
//!
//!     cargo run --release -p tollgate-benches --example hashing -- 5
//!
//! `scripts/bench.sh hotpath` runs it beside the bare server: the bare
//! server's p99 beside it is what the hashing alone, with none of the
//! server's code around it, costs a read on this machine, whatever server
//! answers the read; a storm's p99 cannot be lower.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate::auth::password::Passwords;
use tollgate::metrics::Metrics;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let secs: f64 = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(5.0);
    let config = tollgate_benches::config_from_env()?;
    let (n, nice) = (config.hash_concurrency, config.hash_nice);
    let pool = Arc::new(Passwords::new(n, nice, config.hash_queue_max, Arc::new(Metrics::new()))?);
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let callers = (0..2 * n).map(|_| {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < end {
                pool.verify(None, "not the password".into()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                done += 1;
            }
            anyhow::Ok(done)
        })
    });
    let mut total = 0;
    for caller in callers.collect::<Vec<_>>() {
        total += caller.await??;
    }
    println!("{:.1} hashes/s on {n} threads at nice {nice}", total as f64 / secs);
    Ok(())
}
