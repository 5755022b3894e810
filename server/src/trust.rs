//! Whether Redis's word is good: trust anchored outside Redis.
//!
//! Redis answers the hot path, but it is never trusted on its own word
//! (API.md, "Revocation" rule 7). Three things can make a Redis that answers
//! promptly hold less than PostgreSQL:
//!
//! 1. **It lost keys and kept the marker of completeness.** A Redis restarted
//!    from an RDB or AOF snapshot (Redis's own default saves snapshots), or a
//!    replica promoted before it caught up, brings back an old `epoch` key
//!    without the revocations written after the snapshot, and old task-list
//!    generation tags that serve old lists. So the `epoch` value names the
//!    Redis *process* it was written to: `REBUILD_ID:RUN_ID`. Every start of
//!    a Redis process has a new random `run_id`, snapshot or not, and a
//!    replica has its own; each connection learns the `run_id` of the
//!    process it reached when it connects (`kv::RedisConn`). An epoch whose
//!    `run_id` is not the answering process's is treated as missing: the
//!    request is answered from PostgreSQL and Redis is rebuilt. The rebuild
//!    also gets a new `REBUILD_ID`, and every cache tag carries the id it
//!    was made under (`cache`), so no tag from before a loss ever
//!    matches again.
//! 2. **It evicts.** Under any `maxmemory-policy` but `noeviction`, Redis may
//!    drop revocation entries (they have TTLs, so even `volatile-*` picks
//!    them) while `epoch` (no TTL, read on every request) stays. Nothing read
//!    per request could notice, so such a Redis is not trusted at all: the
//!    verdict says why, on `/readyz` and in the log, and every check goes to
//!    PostgreSQL until the policy is fixed. The policy is read at start-up
//!    and every [`CHECK_INTERVAL`] (it can be changed at run time).
//! 3. **A write to it failed.** A revocation or cache invalidation committed
//!    in PostgreSQL that could not be mirrored: this process stops trusting
//!    the epoch that vouches for the key at once ([`Trust::fell_behind`]),
//!    and deletes both that `epoch` and its rebuild marker before the write
//!    is answered (or, if Redis does not take that either, an owned loop
//!    does as soon as it does), so every instance distrusts it and no
//!    rebuild that read PostgreSQL before the commit can finish. The
//!    mirror write and the delete go past the breaker (`Kv::run_always`):
//!    other instances may reach Redis when this one cannot. On one Redis that
//!    is all of Redis; on a cluster, the one slot of the key (a user's keys
//!    all share a slot), and the rebuild restores that slot alone.
//!
//! Persistence (`save`, `appendonly`) is reported as a warning only: with the
//! epoch bound to the `run_id`, a restart that loads a snapshot is detected
//! like a restart that loads nothing.

use crate::kv::{Kv, info_field};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often Redis's configuration is read again.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Retry interval of the repair after a failed write.
const REPAIR_RETRY: Duration = Duration::from_millis(100);

/// The id of the rebuild that made Redis complete, bound to one Redis
/// process. Cache tags start with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochId(pub u64);

impl EpochId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(rand::random())
    }
    /// The 16 hex digits stored in `epoch` and in cache tags.
    pub fn hex(self) -> String {
        format!("{:016x}", self.0)
    }
    /// The value of the `epoch` key for the Redis process `run_id`.
    pub fn value(self, run_id: &str) -> String {
        format!("{:016x}:{run_id}", self.0)
    }
}

/// Parses an `epoch` value and accepts it only from the process it names.
/// Read on every authenticated request, so on bytes: no UTF-8 check and no
/// string search (they cost more than the rest of the check).
pub fn parse_epoch(value: &[u8], origin: &str) -> Option<EpochId> {
    if origin.is_empty() || value.len() != 17 + origin.len() || value[16] != b':' || &value[17..] != origin.as_bytes() {
        return None;
    }
    hex16(&value[..16]).map(EpochId)
}

/// Sixteen lower-case hex digits (as [`EpochId::hex`] writes them).
pub fn hex16(digits: &[u8]) -> Option<u64> {
    if digits.len() != 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(n << 4 | u64::from(v))
    })
}

/// The last judgement of Redis's configuration.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Verdict {
    /// Whether the configuration allows trusting Redis.
    pub trusted: bool,
    /// Why not (empty when trusted).
    pub reasons: Vec<String>,
    /// What is allowed but worth knowing.
    pub warnings: Vec<String>,
    /// Whether Redis answered the last check at all.
    pub checked: bool,
}

impl Verdict {
    /// Both verdicts at once (a cluster's primaries): trusted only if both
    /// are, with every reason and warning once.
    pub fn and(mut self, other: Verdict) -> Verdict {
        self.trusted &= other.trusted;
        self.checked &= other.checked;
        for r in other.reasons {
            if !self.reasons.contains(&r) {
                self.reasons.push(r);
            }
        }
        for w in other.warnings {
            if !self.warnings.contains(&w) {
                self.warnings.push(w);
            }
        }
        self
    }
}

/// Judges a Redis from its `INFO memory`, `INFO persistence` and the
/// `save` setting (None when `CONFIG` is refused, as managed services do).
pub fn judge(memory: &str, persistence: &str, save: Option<&str>) -> Verdict {
    let mut v = Verdict { trusted: true, checked: true, ..Verdict::default() };
    match info_field(memory, "maxmemory_policy") {
        Some("noeviction") => {}
        Some(policy) => {
            v.trusted = false;
            v.reasons.push(format!(
                "maxmemory-policy is {policy}: Redis may evict revocation entries; set it to noeviction"
            ));
        }
        None => {
            v.trusted = false;
            v.reasons.push("INFO memory does not report maxmemory_policy; eviction cannot be ruled out".into());
        }
    }
    if info_field(persistence, "aof_enabled") == Some("1") {
        v.warnings.push("appendonly is on: a restart restores old keys (detected by run_id, rebuilt)".into());
    }
    match save {
        Some(s) if !s.trim().is_empty() => {
            v.warnings.push(format!("save is \"{s}\": a restart restores a snapshot (detected by run_id, rebuilt)"))
        }
        Some(_) => {}
        None => v.warnings.push("CONFIG GET save refused: snapshot settings unknown".into()),
    }
    v
}

/// Trust in Redis, shared by the revocation check and the task cache.
pub struct Trust {
    kv: Kv,
    /// Some committed write is not in Redis yet (point 3 of the module
    /// doc): read on every request, so the set below is looked at only
    /// when this is set.
    behind: AtomicBool,
    /// The epochs (indexes into `Keys::epoch_pairs`) such writes fell
    /// behind under, until the repair has voided them.
    behind_pairs: Mutex<BTreeSet<usize>>,
    /// The configuration verdict allows trust (point 2).
    config_ok: AtomicBool,
    verdict: Mutex<Verdict>,
    repair: Notify,
}

impl Trust {
    /// Untrusted until the first configuration check has passed.
    pub fn new(kv: Kv) -> Arc<Self> {
        Arc::new(Self {
            kv,
            behind: AtomicBool::new(false),
            behind_pairs: Mutex::new(BTreeSet::new()),
            config_ok: AtomicBool::new(false),
            verdict: Mutex::new(Verdict::default()),
            repair: Notify::new(),
        })
    }

    /// Whether Redis may answer revocation checks and cache look-ups for
    /// the keys that epoch `pair()` (`Keys::pair_of`) vouches for now (an
    /// epoch from the answering process is still required). `pair` is
    /// called only when some write fell behind: on a cluster it hashes.
    pub fn usable(&self, pair: impl FnOnce() -> usize) -> bool {
        self.config_ok.load(Ordering::Acquire)
            && (!self.behind.load(Ordering::Acquire)
                || self.behind_pairs.lock().map(|b| !b.contains(&pair())).unwrap_or(false))
    }

    /// The last configuration verdict, for `/readyz`.
    pub fn verdict(&self) -> Verdict {
        self.verdict.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// A write committed in PostgreSQL could not be mirrored to a key
    /// that epoch `pair` (`Keys::pair_of`) vouches for. This process stops
    /// trusting that epoch at once, and the epoch and its rebuild marker
    /// are deleted now, past the breaker, so that the other instances stop
    /// trusting it too before the write is answered. When Redis does not
    /// take that either, the repair loop retries until it does.
    pub async fn fell_behind(&self, pair: usize) {
        let behind = |now: bool| {
            if let Ok(mut b) = self.behind_pairs.lock() {
                if now {
                    b.insert(pair)
                } else {
                    b.remove(&pair)
                };
            }
        };
        behind(true);
        self.behind.store(true, Ordering::Release);
        let (mark, epoch) = self.kv.keys.epoch_pair(pair);
        let void = redis::cmd("DEL").arg(epoch).arg(mark).to_owned();
        if self.kv.run_always::<(), _>("epoch_reset", &void).await.is_ok() {
            // Every instance now finds the epoch void and rebuilds it.
            behind(false);
            tracing::info!(pair, "a write could not be mirrored to Redis; its epoch is voided");
        } else {
            // Another failure of the same epoch may have cleared it above.
            behind(true);
            tracing::warn!(
                pair,
                "a write could not be mirrored to Redis, nor its epoch voided; answering its keys from PostgreSQL until it is"
            );
        }
        // Clears the flag once nothing is behind, or keeps voiding.
        self.repair.notify_one();
    }

    /// Reads Redis's configuration once and records the verdict.
    pub async fn check_config(&self) -> Verdict {
        let info = |section: &'static str| redis::cmd("INFO").arg(section).to_owned();
        let (memory, persistence) = (info("memory"), info("persistence"));
        let save = redis::cmd("CONFIG").arg("GET").arg("save").to_owned();
        // On a cluster, every primary must pass: one that may evict
        // could drop the entries of its slots.
        let verdict = match tokio::join!(
            self.kv.each_primary::<String>("trust_check", &memory),
            self.kv.each_primary::<String>("trust_check", &persistence),
            self.kv.each_primary::<Vec<String>>("trust_check", &save),
        ) {
            (Ok(m), Ok(p), save) if !m.is_empty() && m.len() == p.len() => {
                let save = save.unwrap_or_default();
                let each = m
                    .iter()
                    .zip(&p)
                    .enumerate()
                    .map(|(i, (m, p))| judge(m, p, save.get(i).and_then(|s| s.get(1)).map(String::as_str)));
                each.reduce(Verdict::and).unwrap_or_default()
            }
            // Unreachable: the breaker and the PostgreSQL fallback cover
            // that; keep the last configuration verdict.
            _ => {
                let mut last = self.verdict();
                last.checked = false;
                last
            }
        };
        let last = self.verdict();
        self.config_ok.store(verdict.trusted, Ordering::Release);
        let changed = last.trusted != verdict.trusted || last.reasons != verdict.reasons || !last.checked;
        if verdict.checked && changed {
            if verdict.trusted {
                tracing::info!(warnings = ?verdict.warnings, "Redis configuration allows trusting it");
            } else {
                tracing::error!(reasons = ?verdict.reasons, "Redis is not trusted: every check is answered from PostgreSQL");
            }
        }
        if let Ok(mut v) = self.verdict.lock() {
            *v = verdict.clone();
        }
        verdict
    }

    /// The configuration check, every [`CHECK_INTERVAL`] until cancelled.
    pub async fn config_loop(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(CHECK_INTERVAL) => {}
            }
            self.check_config().await;
        }
    }

    /// Voids each epoch and rebuild in flight [`Trust::fell_behind`] could
    /// not void itself, retrying until Redis answers; then trusts those keys
    /// again (every instance, this one included, rebuilds them before using
    /// them).
    pub async fn repair_loop(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.repair.notified() => {}
            }
            while self.behind.load(Ordering::Acquire) {
                let voiding: Vec<usize> =
                    self.behind_pairs.lock().map(|b| b.iter().copied().collect()).unwrap_or_default();
                let del = voiding.iter().map(|&i| {
                    let (mark, epoch) = self.kv.keys.epoch_pair(i);
                    redis::cmd("DEL").arg(epoch).arg(mark).to_owned()
                });
                if self.kv.run_each("epoch_reset", del.collect()).await.is_ok() {
                    // Pairs that fell behind during the DEL stay behind
                    // for the next round.
                    if let Ok(mut b) = self.behind_pairs.lock() {
                        for i in &voiding {
                            b.remove(i);
                        }
                        self.behind.store(!b.is_empty(), Ordering::Release);
                    }
                    tracing::info!(
                        epochs = voiding.len(),
                        "Redis epochs voided; instances rebuild them from PostgreSQL"
                    );
                    continue;
                }
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(REPAIR_RETRY) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_is_accepted_only_from_the_process_it_names() {
        let id = EpochId(0xabc);
        let v = id.value("run1");
        assert_eq!(parse_epoch(v.as_bytes(), "run1"), Some(id));
        assert_eq!(parse_epoch(v.as_bytes(), "run2"), None, "another process: a restart or a promoted replica");
        assert_eq!(parse_epoch(v.as_bytes(), ""), None, "unknown run_id is never trusted");
        assert_eq!(parse_epoch(b"garbage", "run1"), None);
        assert_eq!(parse_epoch(b"xyz:run1", "run1"), None);
        assert_eq!(parse_epoch(b"0000000000000ABC:run1", "run1"), None, "only the digits hex() writes");
        assert_eq!(parse_epoch(format!("{}:run1x", id.hex()).as_bytes(), "run1"), None, "a longer run_id");
        assert_eq!(hex16(id.hex().as_bytes()), Some(0xabc));
        assert_eq!(hex16(b"ffffffffffffffff"), Some(u64::MAX));
        assert_eq!((hex16(b"fffffffffffffff"), hex16(b"+fffffffffffffff")), (None, None));
    }

    #[test]
    fn only_noeviction_is_trusted_and_persistence_is_a_warning() {
        let ok = judge("maxmemory_policy:noeviction\r\n", "aof_enabled:0\r\n", Some(""));
        assert!(ok.trusted && ok.warnings.is_empty(), "{ok:?}");
        let lru = judge("maxmemory_policy:allkeys-lru\r\n", "aof_enabled:0\r\n", Some(""));
        assert!(!lru.trusted && lru.reasons[0].contains("allkeys-lru"), "{lru:?}");
        let vol = judge("maxmemory_policy:volatile-ttl\r\n", "", Some(""));
        assert!(!vol.trusted);
        let saving = judge("maxmemory_policy:noeviction\r\n", "aof_enabled:1\r\n", Some("3600 1"));
        assert!(saving.trusted && saving.warnings.len() == 2, "{saving:?}");
        assert!(!judge("", "", None).trusted, "an unknown policy is not trusted");
    }
}
