//! The per-user task-list cache: cache-aside, read-your-writes under any
//! concurrency.
//!
//! # The stale-set race, and why it cannot happen here
//! Delete-on-write alone (the seed's design) loses this race: a reader
//! misses and loads the old rows; a writer commits and deletes the entry; the
//! reader then stores the old rows, which are served until the TTL.
//!
//! Here every stored page carries the **generation tag** its reader saw
//! *before* loading, and a page is served only if its tag equals the user's
//! current tag. A writer sets a new random tag *after* its commit and
//! *before* it answers. So if a reader's load missed a write W, the load
//! began before W's commit, hence the reader read the tag before W replaced
//! it: the page carries a tag that is already old when it is stored, and is
//! never served. Any reader that starts after W answered reads W's tag or a
//! newer one, so it can only be served pages loaded after W committed.
//!
//! Tags are random, not counters, and a page is never stored without one: a
//! reader that finds no tag creates it (`SET NX`, then reads the winner)
//! *before* loading. So when a tag disappears (Redis restarted or flushed,
//! the key evicted), the next one is new and no earlier page can match it.
//! Every page key has its own TTL, `TASKS_CACHE_TTL_SECS`; old pages are
//! not deleted by writers, they simply stop matching and expire.
//!
//! # Redis unreachable during a write
//! The write committed, but the new tag could not be set: a page stored
//! before could still match. The user is then marked *dirty* in this
//! process for one cache TTL: its reads bypass the cache (and do not fill
//! it) while the invalidation is retried in the background; by the end of
//! that TTL every page that existed at the failure has expired. (Another
//! instance that still reaches Redis can serve such a page until it
//! expires: at most one TTL.)
//!
//! # One Redis round trip
//! The tag and the page come back in the revocation check's `MGET` (see
//! `auth::revocation`), so a hit costs no extra round trip, and one command.
//!
//! # Stampede
//! Concurrent misses of one page with one tag in this process share one
//! PostgreSQL load (single flight). Sharing is safe for the same reason as
//! above: every sharer read that tag before the load began.
//!
//! # In-process backend
//! `CACHE_BACKEND=memory` keeps pages in a moka cache, one container per
//! user holding its pages. A write removes the container; a reader holds
//! the container it found *before* loading and stores into it, so a load
//! that raced a write lands in a container nobody can reach any more.

use crate::auth::revocation::{CacheKeys, CacheProbe};
use crate::config::CacheBackend;
use crate::http::error::ApiError;
use crate::kv::Kv;
use crate::metrics::Metrics;
use bytes::Bytes;
use moka::sync::Cache;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

/// Retry interval of an invalidation that could not reach Redis.
const INVALIDATE_RETRY: Duration = Duration::from_millis(200);

/// One user's pages in the in-process backend.
pub struct UserPages {
    id: u64,
    pages: Mutex<HashMap<String, Bytes>>,
}

enum Store {
    Redis,
    Memory { users: Cache<i64, Arc<UserPages>>, next_id: AtomicU64 },
    Off,
}

/// Where a miss's result goes.
pub enum Fill {
    /// Into Redis, tagged.
    Redis {
        /// The tag read before the load.
        tag: Vec<u8>,
    },
    /// Into Redis, once a tag exists: [`TaskCache::load`] creates it first.
    RedisUntagged,
    /// Into this container.
    Memory(Arc<UserPages>),
    /// Nowhere (cache off, Redis unreachable, user dirty).
    Skip,
}

/// The outcome of a look-up.
pub enum Lookup {
    /// The stored body.
    Hit(Bytes),
    /// Load, then [`TaskCache::fill`].
    Miss(Fill),
}

/// The cache.
pub struct TaskCache {
    store: Store,
    kv: Kv,
    ttl: Duration,
    tag_ttl: Duration,
    dirty: Cache<i64, ()>,
    flights: Mutex<HashMap<String, Arc<OnceCell<Bytes>>>>,
    metrics: Arc<Metrics>,
}

impl TaskCache {
    /// A cache on `backend` with page TTL `ttl`.
    pub fn new(backend: CacheBackend, kv: Kv, ttl: Duration, metrics: Arc<Metrics>) -> Arc<Self> {
        let store = match backend {
            CacheBackend::Redis => Store::Redis,
            CacheBackend::Memory => Store::Memory {
                users: Cache::builder().max_capacity(100_000).time_to_live(ttl).build(),
                next_id: AtomicU64::new(1),
            },
            CacheBackend::Off => Store::Off,
        };
        Arc::new(Self {
            store,
            kv,
            ttl,
            // Longer than any page can live, so a tag never expires under a
            // page stored with it (see the module doc).
            tag_ttl: (ttl * 10).max(Duration::from_secs(86_400)),
            dirty: Cache::builder().max_capacity(1_000_000).time_to_live(ttl + Duration::from_secs(1)).build(),
            flights: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// The keys to fetch in the revocation round trip, when Redis is the store
    /// and the user is not dirty.
    pub fn keys(&self, uid: i64, shape: &str) -> Option<CacheKeys> {
        if !matches!(self.store, Store::Redis) || self.dirty.contains_key(&uid) {
            return None;
        }
        let k = &self.kv.keys;
        Some(CacheKeys { tgen: k.tgen(uid), page: k.page(uid, shape) })
    }

    /// Decides hit or miss. `probe` is what the revocation round trip
    /// brought back (None when Redis did not answer).
    pub fn lookup(&self, uid: i64, shape: &str, probe: Option<CacheProbe>) -> Lookup {
        let out = match &self.store {
            Store::Off => Lookup::Miss(Fill::Skip),
            Store::Redis => match probe {
                None => Lookup::Miss(Fill::Skip),
                Some(CacheProbe { tag: None, .. }) => Lookup::Miss(Fill::RedisUntagged),
                Some(CacheProbe { tag: Some(tag), entry }) => match entry {
                    Some(e) if e.len() > tag.len() && e.starts_with(&tag) && e[tag.len()] == b'\n' => {
                        let mut body = Bytes::from(e);
                        Lookup::Hit(body.split_off(tag.len() + 1))
                    }
                    _ => Lookup::Miss(Fill::Redis { tag }),
                },
            },
            Store::Memory { users, next_id } => {
                let c = users.get_with(uid, || {
                    Arc::new(UserPages { id: next_id.fetch_add(1, Ordering::Relaxed), pages: Mutex::default() })
                });
                let hit = c.pages.lock().ok().and_then(|p| p.get(shape).cloned());
                match hit {
                    Some(b) => Lookup::Hit(b),
                    None => Lookup::Miss(Fill::Memory(c)),
                }
            }
        };
        match &out {
            Lookup::Hit(_) => self.metrics.tasks_cache_hit.inc(),
            Lookup::Miss(_) => self.metrics.tasks_cache_miss.inc(),
        }
        out
    }

    /// Loads a missed page, sharing the load with concurrent misses of the
    /// same page and tag, then stores it where `fill` says.
    pub async fn load<F>(&self, uid: i64, shape: &str, fill: Fill, load: F) -> Result<Bytes, ApiError>
    where
        F: Future<Output = Result<Bytes, ApiError>>,
    {
        let fill = match fill {
            Fill::RedisUntagged => match self.create_tag(uid).await {
                Some(tag) => Fill::Redis { tag },
                None => Fill::Skip,
            },
            other => other,
        };
        let flight_key = match &fill {
            Fill::Redis { tag } => Some(format!("{uid}|{shape}|r{}", String::from_utf8_lossy(tag))),
            Fill::Memory(c) => Some(format!("{uid}|{shape}|m{}", c.id)),
            Fill::Skip | Fill::RedisUntagged => None,
        };
        let body = match flight_key {
            None => load.await?,
            Some(key) => {
                let cell = {
                    let mut f =
                        self.flights.lock().map_err(|_| ApiError::Internal(anyhow::anyhow!("flight map poisoned")))?;
                    Arc::clone(f.entry(key.clone()).or_default())
                };
                let result = cell.get_or_try_init(|| load).await.cloned();
                if let Ok(mut f) = self.flights.lock() {
                    if f.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                        f.remove(&key);
                    }
                }
                result?
            }
        };
        self.fill(uid, shape, fill, &body).await;
        Ok(body)
    }

    async fn fill(&self, uid: i64, shape: &str, fill: Fill, body: &Bytes) {
        match fill {
            Fill::Skip | Fill::RedisUntagged => {}
            Fill::Memory(c) => {
                if let Ok(mut p) = c.pages.lock() {
                    p.insert(shape.to_owned(), body.clone());
                }
            }
            Fill::Redis { tag } => {
                let mut value = Vec::with_capacity(tag.len() + 1 + body.len());
                value.extend_from_slice(&tag);
                value.push(b'\n');
                value.extend_from_slice(body);
                let set = redis::cmd("SET")
                    .arg(self.kv.keys.page(uid, shape))
                    .arg(value)
                    .arg("PX")
                    .arg(self.ttl.as_millis() as u64)
                    .to_owned();
                // A failed fill costs a later miss, nothing more.
                let _ = self.kv.run::<(), _>("cache", &set).await;
            }
        }
    }

    /// After a committed write of `uid`'s tasks, before answering: no page
    /// read before this call is served after it.
    pub async fn invalidate(self: &Arc<Self>, uid: i64) {
        match &self.store {
            Store::Off => {}
            Store::Memory { users, .. } => users.invalidate(&uid),
            Store::Redis => {
                if self.try_invalidate(uid).await {
                    return;
                }
                self.dirty.insert(uid, ());
                let this = Arc::clone(self);
                tokio::spawn(async move {
                    while this.dirty.contains_key(&uid) {
                        tokio::time::sleep(INVALIDATE_RETRY).await;
                        if this.try_invalidate(uid).await {
                            this.dirty.invalidate(&uid);
                            return;
                        }
                    }
                });
            }
        }
    }

    async fn try_invalidate(&self, uid: i64) -> bool {
        let set = redis::cmd("SET")
            .arg(self.kv.keys.tgen(uid))
            .arg(new_tag())
            .arg("PX")
            .arg(self.tag_ttl.as_millis() as u64)
            .to_owned();
        self.kv.run::<(), _>("cache", &set).await.is_ok()
    }

    /// The user's tag, created if missing; None when Redis did not answer.
    async fn create_tag(&self, uid: i64) -> Option<Vec<u8>> {
        let key = self.kv.keys.tgen(uid);
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(&key).arg(new_tag()).arg("NX").arg("PX").arg(self.tag_ttl.as_millis() as u64).ignore();
        pipe.cmd("GET").arg(&key);
        let (tag,): (Option<Vec<u8>>,) = self.kv.run("cache", &pipe).await.ok()?;
        tag
    }
}

/// A fresh random generation tag.
fn new_tag() -> String {
    format!("{:016x}", rand::random::<u64>())
}
