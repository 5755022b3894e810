//! Password hashing: Argon2id at OWASP parameters, off the async reactor.
//!
//! One hash costs tens of milliseconds of CPU and its parameters' memory.
//! Hashes run on `HASH_CONCURRENCY` threads of their own (default: one per
//! core), at most one hash each, so a login storm queues here instead of
//! stalling the reactor threads that serve every other route. A queue
//! longer than `HASH_QUEUE_MAX` answers 503 at once rather than letting
//! latency grow without bound.
//!
//! # Why threads of their own
//! - **Priority.** They run at a lower CPU priority, `HASH_NICE` (default
//!   nice 10: a tenth of a request thread's scheduler weight, 110 against
//!   1024). While requests want the cores, the reactors get most of the
//!   CPU, so a login storm costs cached reads little; the hashes still
//!   use every cycle the reactors leave, so an idle server logs in at the
//!   full rate. Not the lowest priority: at nice 19 (weight 15) a login
//!   while requests kept both cores busy waited seconds for its hash (the
//!   faults script's PostgreSQL scenario saw 2.3 s), and `SCHED_IDLE`
//!   starves it outright. tokio's blocking pool cannot be given a priority.
//! - **Memory, reused, then returned.** The threads share a pool of Argon2
//!   working memories ([`Scratch`]), at most one per thread, reused hash
//!   after hash: with fresh memory per hash the allocator kept the peak of
//!   every storm resident. While logins come, hashing costs at most
//!   `HASH_CONCURRENCY` x the memory parameter (14 MiB on two cores); once
//!   none has come for [`RELEASE_AFTER`], [`Passwords::release_loop`] lets
//!   the pool go, and the server is back near its size before the storm.
//!
//! # Parameters
//! Argon2id m=7 MiB, t=5, p=1: one of the configurations the OWASP Password
//! Storage Cheat Sheet lists as equal in defence to m=19 MiB, t=2 (memory
//! traded for passes, at about the same time per hash). The smaller memory
//! keeps the fixed pool small (14 MiB on two cores). Hashes made with other
//! parameters (such as the m=19 MiB, t=2 of earlier versions) still verify:
//! the parameters come from the stored PHC string, with memory of their own
//! for that hash.
//!
//! An unknown email is verified against [`DUMMY_HASH`], made with the same
//! parameters, so it costs the same time as a wrong password. It is a
//! constant rather than computed at start-up.

use crate::http::error::ApiError;
use crate::metrics::Metrics;
use argon2::password_hash::{Ident, Output, ParamsString, PasswordHash, SaltString, rand_core::OsRng};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// Memory per hash, KiB (OWASP: m=7 MiB, t=5, p=1).
pub const ARGON2_MEMORY_KIB: u32 = 7_168;
/// Iterations.
pub const ARGON2_ITERATIONS: u32 = 5;
/// Lanes.
pub const ARGON2_LANES: u32 = 1;

/// A valid hash (of a password nobody knows) with exactly the parameters
/// above; a test checks that they agree.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=7168,t=5,p=1$k2WZlP38T+0qVNQily8iJA$DqJgzpJpSMzbpN4MVdw812H/d8zBlTcy/9ymSpCL5vk";

fn params() -> Params {
    Params::new(ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_LANES, None)
        .unwrap_or_else(|e| panic!("constant Argon2 parameters are invalid: {e}"))
}

/// Argon2id working memory for the configured parameters, reused from one
/// hash to the next by the thread that owns it.
pub struct Scratch(Vec<Block>);

impl Default for Scratch {
    fn default() -> Self {
        Self(vec![Block::default(); params().block_count()])
    }
}

/// Hashes `password` into a PHC string (salt and parameters included).
pub fn hash_with(scratch: &mut Scratch, password: &str) -> anyhow::Result<String> {
    let e = |e: argon2::password_hash::Error| anyhow::anyhow!("hashing: {e}");
    let params = params();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt.decode_b64(&mut salt_bytes).map_err(e)?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), salt_raw, &mut out, &mut scratch.0)
        .map_err(|err| anyhow::anyhow!("hashing: {err}"))?;
    let phc = PasswordHash {
        algorithm: Ident::new("argon2id").map_err(e)?,
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(e)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(e)?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `hash` (compared in constant
/// time). A malformed hash, or one of another algorithm, is a no.
pub fn verify_with(scratch: &mut Scratch, hash: &str, password: &str) -> bool {
    let Ok(h) = PasswordHash::new(hash) else { return false };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) =
        (Algorithm::try_from(h.algorithm), Params::try_from(&h), h.salt, h.hash)
    else {
        return false;
    };
    let version = h.version.map_or(Ok(Version::V0x13), Version::try_from);
    let (Ok(version), Some(len)) = (version, Some(expected.len())) else { return false };
    let Ok(params) = Params::new(params.m_cost(), params.t_cost(), params.p_cost(), Some(len)) else { return false };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_raw) = salt.decode_b64(&mut salt_bytes) else { return false };
    let mut out = vec![0u8; len];
    let argon = Argon2::new(algorithm, version, params.clone());
    let done = if params.block_count() <= scratch.0.len() {
        argon.hash_password_into_with_memory(password.as_bytes(), salt_raw, &mut out, &mut scratch.0)
    } else {
        // Stored with more memory than ours (an older hash): its own, once.
        argon.hash_password_into(password.as_bytes(), salt_raw, &mut out)
    };
    done.is_ok() && Output::new(&out).is_ok_and(|o| o == expected)
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

/// A hash to run on a hashing thread, with the memory it runs in.
type Job = (Scratch, Box<dyn FnOnce(&mut Scratch) + Send>);

/// How long without a hash before the working memories are let go. Short:
/// allocating one again costs its page faults (about a millisecond for
/// 7 MiB) against the tens of milliseconds of the hash that needs it.
pub const RELEASE_AFTER: Duration = Duration::from_millis(300);

/// mimalloc returns freed memory to the OS once its purge delay (1 s in
/// v3) has passed, and only when it next frees a page of its own; a
/// block of this size has a page of its own (over 512 KiB), so freeing one
/// after the delay is what returns the pool's memory.
const PURGE_NUDGE_BYTES: usize = 1 << 20;
/// mimalloc's purge delay, and a margin.
const PURGE_DELAY: Duration = Duration::from_millis(1100);

/// The working memories not in use, and how many hashes have run.
#[derive(Default)]
struct Scratches {
    free: Mutex<Vec<Scratch>>,
    hashes: AtomicU64,
    hashed: Notify,
}

impl Scratches {
    fn take(&self) -> Option<Scratch> {
        self.free.lock().ok().and_then(|mut f| f.pop())
    }

    fn give_back(&self, s: Scratch) {
        if let Ok(mut f) = self.free.lock() {
            f.push(s);
        }
        self.hashes.fetch_add(1, Ordering::AcqRel);
        self.hashed.notify_one();
    }
}

/// Starts `n` hashing threads at nice value `nice`, sharing `scratches`.
/// They end when the sender is dropped, with the state that owns it, after
/// the job they are running.
fn spawn_threads(n: usize, nice: i32, scratches: &Arc<Scratches>) -> anyhow::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..n {
        let (rx, scratches) = (Arc::clone(&rx), Arc::clone(scratches));
        std::thread::Builder::new().name(format!("tollgate-hash-{i}")).spawn(move || {
            // On Linux the nice value is per thread: `None` is this one. A
            // server started nicer than `nice` keeps its own (raising the
            // priority back would take a privilege, and is not ours to do).
            let started = rustix::process::getpriority_process(None).unwrap_or(0);
            if nice > started
                && let Err(e) = rustix::process::setpriority_process(None, nice)
            {
                tracing::warn!(error = %e, nice, "cannot lower the hashing thread's priority; logins compete with requests");
            }
            loop {
                let job = match rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok((mut scratch, job)) = job else { return };
                // A panicking hash costs its request (its answer channel is
                // dropped: a 500), not the thread: the pool keeps its size.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut scratch))).is_err() {
                    tracing::error!("a password hash panicked; the hashing thread carries on");
                }
                scratches.give_back(scratch);
            }
        })?;
    }
    Ok(tx)
}

/// The bounded hashing pool.
pub struct Passwords {
    jobs: mpsc::Sender<Job>,
    scratches: Arc<Scratches>,
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    queue_max: usize,
    metrics: Arc<Metrics>,
}

impl Passwords {
    /// A pool of `concurrency` hashing threads at nice value `nice`.
    pub fn new(concurrency: usize, nice: i32, queue_max: usize, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let scratches = Arc::new(Scratches::default());
        Ok(Self {
            jobs: spawn_threads(concurrency, nice, &scratches)?,
            scratches,
            slots: Arc::new(Semaphore::new(concurrency)),
            queued: AtomicUsize::new(0),
            queue_max,
            metrics,
        })
    }

    /// Lets the working memories go once no hash has run for
    /// [`RELEASE_AFTER`], and makes the allocator return them to the OS;
    /// until `cancel`. A background loop.
    pub fn release_loop(&self, cancel: CancellationToken) -> impl Future<Output = ()> + Send + 'static {
        let scratches = Arc::clone(&self.scratches);
        async move {
            let sleep = async |d| {
                tokio::select! {
                    () = cancel.cancelled() => false,
                    () = tokio::time::sleep(d) => true,
                }
            };
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = scratches.hashed.notified() => {}
                }
                loop {
                    let seen = scratches.hashes.load(Ordering::Acquire);
                    if !sleep(RELEASE_AFTER).await {
                        return;
                    }
                    if scratches.hashes.load(Ordering::Acquire) == seen {
                        break;
                    }
                }
                let idle = scratches.free.lock().map(|mut f| std::mem::take(&mut *f)).unwrap_or_default();
                if idle.is_empty() {
                    continue;
                }
                drop(idle);
                if !sleep(PURGE_DELAY).await {
                    return;
                }
                drop(std::hint::black_box(Vec::<u8>::with_capacity(PURGE_NUDGE_BYTES)));
            }
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Scratch) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        // A guard, not paired calls around the await: a waiter that is
        // dropped (its request cancelled) leaves the queue too.
        let queued = QueueSlot::take(&self.queued, self.queue_max)
            .ok_or_else(|| ApiError::Unavailable(anyhow::anyhow!("password hashing queue is full")))?;
        let permit = self.slots.clone().acquire_owned().await;
        drop(queued);
        let permit = permit.map_err(|e| ApiError::Internal(e.into()))?;
        // At most `concurrency` permits: every job sent finds a thread free.
        let scratch = match self.scratches.take() {
            Some(s) => s,
            // Made at normal priority, off the hashing threads: a hashing
            // thread faulting in 7 MiB at a low priority, preempted while the
            // kernel held the address space's lock for it, could hold up
            // every other thread's page faults and mappings behind it.
            None => tokio::task::spawn_blocking(Scratch::default).await.map_err(|e| ApiError::Internal(e.into()))?,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let hist = self.metrics.password_hash.clone();
        let work: Job = (
            scratch,
            Box::new(move |scratch| {
                let _permit = permit;
                let start = Instant::now();
                let out = job(scratch);
                hist.observe(start.elapsed().as_secs_f64());
                let _ = tx.send(out);
            }),
        );
        self.jobs.send(work).map_err(|_| ApiError::Internal(anyhow::anyhow!("the hashing threads are gone")))?;
        rx.await.map_err(|_| ApiError::Internal(anyhow::anyhow!("a hashing thread ended mid-hash")))
    }

    /// Hashes a new password.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move |s| hash_with(s, &password)).await?.map_err(ApiError::Internal)
    }

    /// Verifies `password` against `hash`, or against the dummy hash when the
    /// account does not exist (always false then, at the same cost).
    pub async fn verify(&self, hash: Option<String>, password: String) -> Result<bool, ApiError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_owned());
        let ok = self.run(move |s| verify_with(s, &hash, &password)).await?;
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
        assert!(!verify_with(&mut Scratch::default(), DUMMY_HASH, ""));
    }

    #[tokio::test]
    async fn a_cancelled_waiter_gives_its_queue_place_back() {
        let pool = Passwords::new(1, 10, 2, Arc::new(Metrics::new())).expect("threads");
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

    #[tokio::test]
    async fn the_working_memory_is_kept_through_a_storm_and_let_go_after() {
        let pool = Passwords::new(2, 10, 8, Arc::new(Metrics::new())).expect("threads");
        let cancel = CancellationToken::new();
        let release = tokio::spawn(pool.release_loop(cancel.clone()));
        let held = || pool.scratches.free.lock().expect("lock").len();
        let until = async |done: &dyn Fn(usize) -> bool| {
            let deadline = Instant::now() + RELEASE_AFTER * 10;
            while !done(held()) && Instant::now() < deadline {
                tokio::time::sleep(RELEASE_AFTER / 20).await;
            }
            held()
        };
        for _ in 0..3 {
            assert!(pool.verify(None, "x".into()).await.is_ok());
        }
        // A thread answers before it gives its memory back, so the next
        // hash may find none free and make a second: one per thread at most.
        let kept = until(&|n| n > 0).await;
        assert!((1..=2).contains(&kept), "kept for the next hash, at most one per thread: {kept}");
        assert_eq!(until(&|n| n == 0).await, 0, "let go once idle");
        assert!(pool.verify(None, "x".into()).await.is_ok(), "and made again when needed");
        cancel.cancel();
        release.await.expect("the loop ends when cancelled");
    }

    #[test]
    fn hashes_verify_only_their_password() {
        let mut s = Scratch::default();
        let h = hash_with(&mut s, "correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{h}");
        assert!(verify_with(&mut s, &h, "correct horse"));
        assert!(!verify_with(&mut s, &h, "correct horse!"));
        assert!(!verify_with(&mut s, "not a hash", "correct horse"));
        // The same scratch again gives the same answers: nothing of the
        // previous hash leaks into the next.
        assert!(verify_with(&mut s, &h, "correct horse"));
    }

    #[test]
    fn hashes_of_other_parameters_and_libraries_still_verify() {
        use argon2::password_hash::{PasswordHasher, SaltString};
        // A hash as earlier versions stored it: m=19 MiB, t=2, by argon2's
        // own PasswordHasher (more memory than the scratch holds).
        let old = Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::new(19_456, 2, 1, None).expect("params"))
            .hash_password(b"old password", &SaltString::generate(&mut OsRng))
            .expect("hash")
            .to_string();
        let mut s = Scratch::default();
        assert!(verify_with(&mut s, &old, "old password"));
        assert!(!verify_with(&mut s, &old, "old passwore"));
        // And ours verifies with the library's verifier.
        use argon2::password_hash::PasswordVerifier;
        let ours = hash_with(&mut s, "new password").expect("hash");
        let parsed = PasswordHash::new(&ours).expect("PHC");
        assert!(Argon2::default().verify_password(b"new password", &parsed).is_ok());
    }

    #[tokio::test]
    async fn a_panicking_hash_costs_its_request_not_the_thread() {
        let pool = Passwords::new(1, 10, 8, Arc::new(Metrics::new())).expect("threads");
        let failed = pool.run(|_| -> () { panic!("boom") }).await;
        assert!(matches!(failed, Err(ApiError::Internal(_))), "{failed:?}");
        let h = pool.hash("pw-1234567".into()).await.expect("the one thread still hashes");
        assert!(pool.verify(Some(h), "pw-1234567".into()).await.expect("verify"));
    }

    #[tokio::test]
    async fn the_pool_hashes_on_its_own_low_priority_threads() {
        let pool = Passwords::new(2, 13, 8, Arc::new(Metrics::new())).expect("threads");
        let name = pool.run(|_| std::thread::current().name().map(str::to_owned)).await.expect("runs");
        assert!(name.is_some_and(|n| n.starts_with("tollgate-hash-")));
        // Field 19 of /proc/thread-self/stat is the thread's nice value.
        let stat = pool.run(|_| std::fs::read_to_string("/proc/thread-self/stat")).await.expect("runs");
        let stat = stat.expect("procfs");
        let nice: i32 = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(16))
            .and_then(|n| n.parse().ok())
            .expect("nice");
        assert_eq!(nice, 13, "the configured nice value: {stat}");
        let h = pool.hash("pw-1234567".into()).await.expect("hash");
        assert!(pool.verify(Some(h), "pw-1234567".into()).await.expect("verify"));
        assert!(!pool.verify(None, "pw-1234567".into()).await.expect("verify"), "unknown email: never");
    }
}
