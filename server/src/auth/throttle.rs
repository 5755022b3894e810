//! Failed-login throttling per account: at most `LOGIN_MAX_FAILURES`
//! password verifications per email in a fixed window of
//! `LOGIN_FAILURE_WINDOW_SECS` starting at the first, however many arrive at
//! once (API.md, "Revocation" rule 8); past that 429 with `Retry-After`
//! until the window ends. A success clears the count.
//!
//! # Reserve, then hash
//! Checking the count, hashing, then counting lets every guess that arrives
//! before the first one is counted through: with a limit of 10, 48 parallel
//! guesses were all verified. So a login *reserves* an attempt before it
//! hashes: one Lua call increments the counter, starts the window on the
//! first attempt, and refuses (undoing its increment) once the counter is
//! at the limit. A reservation whose password was right is cleared; one
//! whose verification never ran (the hash queue was full) is released. The
//! script uses only `INCR`, `DECR`, `PEXPIRE` and `PTTL`, which every Redis
//! version has (no `PEXPIRE ... NX`, which Redis 6 refuses).
//!
//! The key is the SHA-256 of the canonical email (`auth::email`), so every
//! spelling that finds one account shares one count, and a key is 64 bytes
//! whatever the client sent. When Redis does not answer, an in-process
//! count (moka, entries expiring with the window) takes over with the same
//! reserve-first rule, compare-and-increment on an atomic; it bounds each
//! instance separately.

use crate::http::error::ApiError;
use crate::kv::Kv;
use moka::sync::Cache;
use redis::Script;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// KEYS[1] = counter; ARGV = limit, window ms. Returns 0 when reserved, or
/// the milliseconds left in the window when refused.
const RESERVE: &str = r"
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  ttl = tonumber(ARGV[2])
end
if n > tonumber(ARGV[1]) then
  redis.call('DECR', KEYS[1])
  return ttl
end
return 0
";

/// KEYS[1] = counter. Gives back one reserved attempt.
const RELEASE: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then redis.call('DECR', KEYS[1]) end
return 0
";

/// One in-process window.
struct Window {
    attempts: AtomicU32,
    started: Instant,
}

/// Where a reservation was made.
#[must_use = "a reservation is cleared on success or released when unused"]
pub enum Reservation {
    /// In Redis, under this key.
    Redis(String),
    /// In this process, under this digest.
    Local(String),
}

/// The throttle.
pub struct LoginThrottle {
    kv: Kv,
    local: Cache<String, Arc<Window>>,
    max: u32,
    window: Duration,
    reserve: Script,
    release: Script,
}

impl LoginThrottle {
    /// `max` verifications per `window`.
    pub fn new(kv: Kv, max: u32, window: Duration) -> Self {
        let local = Cache::builder().max_capacity(100_000).time_to_live(window).build();
        Self { kv, local, max, window, reserve: Script::new(RESERVE), release: Script::new(RELEASE) }
    }

    /// Reserves one verification for the account of `digest` (see
    /// `auth::email::digest`), or 429 when its window is used up.
    pub async fn reserve(&self, digest: &str) -> Result<Reservation, ApiError> {
        let key = self.kv.keys.login_attempts(digest);
        let mut call = self.reserve.key(&key);
        call.arg(self.max).arg(self.window.as_millis() as u64);
        match self.kv.run::<u64, _>("login_throttle", &call).await {
            Ok(0) => Ok(Reservation::Redis(key)),
            Ok(left_ms) => Err(Self::refused(left_ms)),
            Err(_) => {
                let w = self.local.get_with(digest.to_owned(), || {
                    Arc::new(Window { attempts: AtomicU32::new(0), started: Instant::now() })
                });
                let max = self.max;
                match w.attempts.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)) {
                    Ok(_) => Ok(Reservation::Local(digest.to_owned())),
                    Err(_) => Err(Self::refused(self.window.saturating_sub(w.started.elapsed()).as_millis() as u64)),
                }
            }
        }
    }

    fn refused(left_ms: u64) -> ApiError {
        ApiError::TooManyRequests { retry_after: left_ms.div_ceil(1000).max(1) }
    }

    /// The password was right: the account's count starts over.
    pub async fn clear(&self, r: Reservation) {
        match r {
            Reservation::Redis(key) => {
                let del = redis::cmd("DEL").arg(key).to_owned();
                let _ = self.kv.run::<(), _>("login_throttle", &del).await;
            }
            Reservation::Local(digest) => self.local.invalidate(&digest),
        }
    }

    /// No verification ran (the hash pool refused): give the attempt back.
    pub async fn release(&self, r: Reservation) {
        match r {
            Reservation::Redis(key) => {
                let _ = self.kv.run::<i64, _>("login_throttle", &self.release.key(key)).await;
            }
            Reservation::Local(digest) => {
                if let Some(w) = self.local.get(&digest) {
                    let _ = w.attempts.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
                }
            }
        }
    }
}
