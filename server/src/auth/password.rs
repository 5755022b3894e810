//! Password hashing: Argon2id at OWASP parameters, off the async reactor.
//!
//! One hash costs tens of milliseconds of CPU. Hashes run on tokio's blocking
//! threads, at most `HASH_CONCURRENCY` at once (default: one per core), so a
//! login storm queues here instead of stalling the reactor threads that serve
//! every other route. A queue longer than `HASH_QUEUE_MAX` answers 503 at once
//! rather than letting latency grow without bound.
//!
//! An unknown email is verified against [`DUMMY_HASH`], made with the same
//! parameters, so it costs the same time as a wrong password. It is a
//! constant rather than computed at start-up: computing it cost 19 MiB of
//! resident memory that the allocator kept until the next hash, and start-up
//! time.

use crate::http::error::ApiError;
use crate::metrics::Metrics;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString, rand_core::OsRng};
use argon2::{Algorithm, Argon2, Params, Version};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tokio::sync::Semaphore;

/// OWASP Password Storage Cheat Sheet: Argon2id, m=19 MiB, t=2, p=1.
pub const ARGON2_MEMORY_KIB: u32 = 19_456;
/// Iterations.
pub const ARGON2_ITERATIONS: u32 = 2;
/// Lanes.
pub const ARGON2_LANES: u32 = 1;

/// A valid hash (of a password nobody knows) with exactly the parameters
/// above; a test checks that they agree.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$tMZs3J+kQHKbf95hTgcMrg$j8iBS1+W8N8LNGziTIY8Nn8DWwWJ5SHFaz4cKlKjS4A";

/// The configured Argon2id instance.
pub fn argon2() -> Argon2<'static> {
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_LANES, None)
        .unwrap_or_else(|e| panic!("constant Argon2 parameters are invalid: {e}"));
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` (PHC string with its salt and parameters).
pub fn hash_blocking(argon: &Argon2<'_>, password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(argon.hash_password(password.as_bytes(), &salt).map_err(|e| anyhow::anyhow!("hashing: {e}"))?.to_string())
}

/// Whether `password` matches the PHC string `hash`. A malformed hash is a no.
pub fn verify_blocking(argon: &Argon2<'_>, hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| argon.verify_password(password.as_bytes(), &h).is_ok())
}

/// One place in the hashing queue, given back on drop.
struct QueueSlot<'a>(&'a AtomicUsize);

impl<'a> QueueSlot<'a> {
    fn take(queued: &'a AtomicUsize, max: usize) -> Option<Self> {
        queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Self(queued))
    }
}

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The bounded hashing pool.
pub struct Passwords {
    argon: Argon2<'static>,
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    queue_max: usize,
    metrics: Arc<Metrics>,
}

impl Passwords {
    /// A pool of `concurrency` hashing slots.
    pub fn new(concurrency: usize, queue_max: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            argon: argon2(),
            slots: Arc::new(Semaphore::new(concurrency)),
            queued: AtomicUsize::new(0),
            queue_max,
            metrics,
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        // A guard, not paired calls around the await: a waiter that is
        // dropped (its request cancelled) leaves the queue too.
        let queued = QueueSlot::take(&self.queued, self.queue_max)
            .ok_or_else(|| ApiError::Unavailable(anyhow::anyhow!("password hashing queue is full")))?;
        let permit = self.slots.clone().acquire_owned().await;
        drop(queued);
        let permit = permit.map_err(|e| ApiError::Internal(e.into()))?;
        let argon = self.argon.clone();
        let hist = self.metrics.password_hash.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let start = Instant::now();
            let out = job(&argon);
            hist.observe(start.elapsed().as_secs_f64());
            out
        })
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("hashing task failed: {e}")))
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move |a| hash_blocking(a, &password)).await?.map_err(ApiError::Internal)
    }

    /// Verifies `password` against `hash`, or against the dummy hash when the
    /// account does not exist (always false then, at the same cost).
    pub async fn verify(&self, hash: Option<String>, password: String) -> Result<bool, ApiError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let ok = self.run(move |a| verify_blocking(a, &hash, &password)).await?;
        Ok(known && ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dummy_hash_uses_the_configured_parameters() {
        let h = PasswordHash::new(DUMMY_HASH).expect("valid PHC string");
        assert_eq!(h.algorithm.as_str(), "argon2id");
        let p = Params::try_from(&h).expect("argon2 params");
        assert_eq!((p.m_cost(), p.t_cost(), p.p_cost()), (ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_LANES));
        assert!(!verify_blocking(&argon2(), DUMMY_HASH, ""));
    }

    #[tokio::test]
    async fn a_cancelled_waiter_gives_its_queue_place_back() {
        let pool = Passwords::new(1, 2, Arc::new(Metrics::new()));
        let busy = pool.slots.clone().acquire_owned().await.expect("slot");
        for _ in 0..10 {
            // Each waiter queues behind the busy slot, then is dropped.
            let waiter = pool.run(|_| ());
            assert!(tokio::time::timeout(std::time::Duration::from_millis(5), waiter).await.is_err());
        }
        assert_eq!(pool.queued.load(Ordering::Acquire), 0, "no place leaked");
        drop(busy);
        assert!(pool.run(|_| ()).await.is_ok(), "the pool still serves");
    }

    #[test]
    fn hashes_verify_only_their_password() {
        let a = argon2();
        let h = hash_blocking(&a, "correct horse").expect("hash");
        assert!(verify_blocking(&a, &h, "correct horse"));
        assert!(!verify_blocking(&a, &h, "correct horse!"));
        assert!(!verify_blocking(&a, "not a hash", "correct horse"));
    }
}
