//! Failed-login throttling per email: `LOGIN_MAX_FAILURES` failures in a
//! fixed window of `LOGIN_FAILURE_WINDOW_SECS` starting at the first one,
//! then 429 with `Retry-After` until the window ends. A success resets it.
//!
//! Counted in Redis so every instance shares the count (INCR, and PEXPIRE NX
//! so the window is not extended by later failures). When Redis does not
//! answer, an in-process count (moka, entries expiring with the window)
//! takes over, so brute force is still slowed on each instance.

use crate::http::error::ApiError;
use crate::kv::Kv;
use moka::sync::Cache;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// One in-process window.
struct Window {
    failures: AtomicU32,
    started: Instant,
}

/// The throttle.
pub struct LoginThrottle {
    kv: Kv,
    local: Cache<String, Arc<Window>>,
    max: u32,
    window: Duration,
}

impl LoginThrottle {
    /// `max` failures per `window`.
    pub fn new(kv: Kv, max: u32, window: Duration) -> Self {
        let local = Cache::builder().max_capacity(100_000).time_to_live(window).build();
        Self { kv, local, max, window }
    }

    /// 429 when the email has used up its failures.
    pub async fn check(&self, email_lower: &str) -> Result<(), ApiError> {
        let key = self.kv.keys.login_failures(email_lower);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&key).cmd("PTTL").arg(&key);
        let (failures, retry_ms) = match self.kv.run::<(Option<u32>, i64), _>("login_throttle", &pipe).await {
            Ok((n, pttl)) => (n.unwrap_or(0), pttl.max(0) as u64),
            Err(_) => match self.local.get(email_lower) {
                Some(w) => {
                    let left = self.window.saturating_sub(w.started.elapsed());
                    (w.failures.load(Ordering::Relaxed), left.as_millis() as u64)
                }
                None => (0, 0),
            },
        };
        if failures >= self.max {
            return Err(ApiError::TooManyRequests { retry_after: retry_ms.div_ceil(1000).max(1) });
        }
        Ok(())
    }

    /// Counts one failure.
    pub async fn failed(&self, email_lower: &str) {
        let key = self.kv.keys.login_failures(email_lower);
        let mut pipe = redis::pipe();
        pipe.cmd("INCR")
            .arg(&key)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(self.window.as_millis() as u64)
            .arg("NX")
            .ignore();
        if self.kv.run::<(), _>("login_throttle", &pipe).await.is_err() {
            let w = self.local.get_with(email_lower.to_owned(), || {
                Arc::new(Window { failures: AtomicU32::new(0), started: Instant::now() })
            });
            w.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Clears the count after a successful login.
    pub async fn succeeded(&self, email_lower: &str) {
        self.local.invalidate(email_lower);
        let del = redis::cmd("DEL").arg(self.kv.keys.login_failures(email_lower)).to_owned();
        let _ = self.kv.run::<(), _>("login_throttle", &del).await;
    }
}
