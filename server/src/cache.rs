//! Cached pages under generation tags: cache-aside, read-your-writes under
//! any concurrency. Two scopes use it: each user's task lists
//! ([`Scope::Tasks`], read on the hot path of `GET /tasks`) and the GraphQL
//! post pages shared by every user ([`Scope::Posts`]). Below, "the user's
//! tag" is the scope's tag.
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
//! reader that finds no tag creates it (one Lua call: set unless a usable
//! tag exists, return the tag) *before* loading. So when a tag disappears
//! (Redis restarted or flushed, the key evicted) the next one is new and no
//! earlier page can match it.
//!
//! # Redis that lost writes
//! A Redis restored from an old snapshot still has old tags and the pages
//! stored under them, while the writers' later invalidations are gone. So
//! a tag starts with the id of the epoch it was made under
//! (`EPOCH-RANDOM`), and a page is served only under a trusted epoch
//! (`crate::trust`) whose id the tag carries. Any loss of Redis state ends
//! in a rebuild with a new epoch id, after which no earlier tag matches;
//! while Redis is not trusted, nothing is served from it or stored in it.
//!
//! # Redis unreachable during a write
//! The write committed, but the tag could not be changed: a page stored
//! before could still match. That is a mirror write that failed, handled
//! like a failed revocation write: `Trust::fell_behind` makes this process
//! stop using the scope's epoch at once (one Redis's, or the scope's slot's
//! on a cluster) and voids it before the write is answered (or, failing
//! that, as soon as Redis answers), so every instance rebuilds it under a
//! new id and every old tag under it is dead. (One owned repair loop does
//! the retrying, not a task per write.)
//! Every page key has its own TTL, `TASKS_CACHE_TTL_SECS`; old pages are
//! not deleted by writers, they simply stop matching and expire.
//!
//! # One Redis round trip
//! The tag and the page are extra keys of the revocation check's `MGET`
//! (the pipeline asks [`PageCache::keys`] for them; the post pages, whose shape is known only once the GraphQL document is parsed, use [`PageCache::lookup_fresh`]), so a hit costs no
//! extra round trip, and one command.
//!
//! # Stampede
//! Concurrent misses of one page with one tag in this process share one
//! PostgreSQL load (single flight). Sharing is safe for the same reason as
//! above: every sharer read that tag before the load began. The entry of a
//! flight is removed by a guard when its last waiter is done or dropped,
//! so cancelled readers leave nothing behind.
//!
//! # In-process backend
//! `CACHE_BACKEND=memory` keeps pages in a moka cache, one container per
//! user holding its pages. A write removes the container; a reader holds
//! the container it found *before* loading and stores into it, so a load
//! that raced a write lands in a container nobody can reach any more.

use crate::auth::revocation::Checked;
use crate::config::CacheBackend;
use crate::http::error::ApiError;
use crate::kv::Kv;
use crate::metrics::Metrics;
use crate::trust::{EpochId, Trust, hex16, parse_epoch};
use bytes::Bytes;
use moka::sync::Cache;
use redis::Script;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

/// Returns the user's tag, first replacing it by ARGV[2] unless it was made
/// under the epoch ARGV[1]. KEYS[1] = tag key; ARGV[3] = tag ttl ms.
const ENSURE_TAG: &str = r"
local t = redis.call('GET', KEYS[1])
if t and string.sub(t, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '-' then return t end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return ARGV[2]
";

/// Whose pages: one tag and one set of pages per scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One user's task lists.
    Tasks(i64),
    /// The GraphQL post pages, shared by every user.
    Posts,
}

impl Scope {
    /// The `cache` label of `cache_requests_total`.
    fn label(self) -> &'static str {
        match self {
            Self::Tasks(_) => "tasks",
            Self::Posts => "posts",
        }
    }
}

/// One scope's pages in the in-process backend.
pub struct UserPages {
    id: u64,
    pages: Mutex<HashMap<String, Bytes>>,
}

enum Store {
    Redis,
    Memory { scopes: Cache<Scope, Arc<UserPages>>, next_id: AtomicU64 },
    Off,
}

/// Where a miss's result goes.
pub enum Fill {
    /// Into Redis, tagged.
    Redis {
        /// The tag read before the load.
        tag: Vec<u8>,
    },
    /// Into Redis, once a tag of this epoch exists: [`PageCache::load`]
    /// creates it first.
    RedisUntagged(EpochId),
    /// Into this container.
    Memory(Arc<UserPages>),
    /// Nowhere (cache off, Redis unreachable or not trusted).
    Skip,
}

/// The outcome of a look-up.
pub enum Lookup {
    /// The stored body.
    Hit(Bytes),
    /// Load, then [`PageCache::load`] stores it.
    Miss(Fill),
}

/// The cache.
pub struct PageCache {
    store: Store,
    kv: Kv,
    trust: Arc<Trust>,
    ttl: Duration,
    tag_ttl: Duration,
    ensure_tag: Script,
    flights: Mutex<HashMap<String, Arc<OnceCell<Bytes>>>>,
    metrics: Arc<Metrics>,
}

/// Removes a single-flight entry when its last waiter is done or dropped.
struct Flight<'a> {
    map: &'a Mutex<HashMap<String, Arc<OnceCell<Bytes>>>>,
    key: String,
    cell: Arc<OnceCell<Bytes>>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        if let Ok(mut f) = self.map.lock() {
            // Every clone of the cell is made under this lock: the map's
            // and ours are the last two when no other waiter remains.
            if f.get(&self.key).is_some_and(|c| Arc::ptr_eq(c, &self.cell)) && Arc::strong_count(&self.cell) == 2 {
                f.remove(&self.key);
            }
        }
    }
}

impl PageCache {
    /// A cache on `backend` with page TTL `ttl`.
    pub fn new(backend: CacheBackend, kv: Kv, trust: Arc<Trust>, ttl: Duration, metrics: Arc<Metrics>) -> Arc<Self> {
        let store = match backend {
            CacheBackend::Redis => Store::Redis,
            CacheBackend::Memory => Store::Memory {
                scopes: Cache::builder().max_capacity(100_000).time_to_live(ttl).build(),
                next_id: AtomicU64::new(1),
            },
            CacheBackend::Off => Store::Off,
        };
        Arc::new(Self {
            store,
            kv,
            trust,
            ttl,
            // Longer than any page can live, so a tag never expires under a
            // page stored with it (see the module doc).
            tag_ttl: (ttl * 10).max(Duration::from_secs(86_400)),
            ensure_tag: Script::new(ENSURE_TAG),
            flights: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// The keys to fetch in the revocation round trip (the tag, then the
    /// page) when Redis is the store; none otherwise.
    pub fn keys(&self, scope: Scope, shape: &str) -> Vec<String> {
        if !matches!(self.store, Store::Redis) {
            return Vec::new();
        }
        vec![self.tag_key(scope), self.page_key(scope, shape)]
    }

    /// The epoch pair that vouches for the scope's keys (`Keys::pair_of`).
    fn pair(&self, scope: Scope) -> usize {
        match scope {
            Scope::Tasks(uid) => self.kv.keys.pair_of(uid),
            Scope::Posts => self.kv.keys.pair_of_tag("posts"),
        }
    }

    fn tag_key(&self, scope: Scope) -> String {
        match scope {
            Scope::Tasks(uid) => self.kv.keys.tgen(uid),
            Scope::Posts => self.kv.keys.posts_gen(),
        }
    }

    fn page_key(&self, scope: Scope, shape: &str) -> String {
        match scope {
            Scope::Tasks(uid) => self.kv.keys.page(uid, shape),
            Scope::Posts => self.kv.keys.posts_page(shape),
        }
    }

    /// [`PageCache::lookup`] with its own round trip, for a scope whose keys
    /// did not ride on the revocation check (the post pages: the query is
    /// parsed after authentication). The epoch is read in the same `MGET`
    /// and accepted only from the Redis process it names, exactly as the
    /// revocation check does (`crate::trust`).
    pub async fn lookup_fresh(&self, scope: Scope, shape: &str) -> Lookup {
        let mut checked = Checked::default();
        if matches!(self.store, Store::Redis) && self.trust.usable(|| self.pair(scope)) {
            let epoch = self.kv.keys.epoch_at(self.pair(scope));
            let mut mget = redis::cmd("MGET");
            mget.arg(epoch.as_ref()).arg(self.tag_key(scope)).arg(self.page_key(scope, shape));
            if let Ok((values, origin)) = self.kv.mget_origin("cache", &mget, None).await {
                let mut v = values.into_iter();
                if let Some(epoch) = v.next().flatten().and_then(|e| parse_epoch(&e, &origin)) {
                    checked = Checked { epoch: Some(epoch), extra: v.collect() };
                }
            }
        }
        self.lookup(scope, shape, checked)
    }

    /// Decides hit or miss from what the revocation round trip brought back.
    pub fn lookup(&self, scope: Scope, shape: &str, checked: Checked) -> Lookup {
        let out = match &self.store {
            Store::Off => Lookup::Miss(Fill::Skip),
            Store::Redis => match (checked.epoch, <[_; 2]>::try_from(checked.extra)) {
                (Some(epoch), Ok([tag, entry])) => match tag.filter(|t| tag_of_epoch(t, epoch)) {
                    None => Lookup::Miss(Fill::RedisUntagged(epoch)),
                    Some(tag) => match entry {
                        Some(e) if e.len() > tag.len() && e.starts_with(&tag) && e[tag.len()] == b'\n' => {
                            let mut body = Bytes::from(e);
                            Lookup::Hit(body.split_off(tag.len() + 1))
                        }
                        _ => Lookup::Miss(Fill::Redis { tag }),
                    },
                },
                // Redis not trusted, unreachable, or not asked.
                _ => Lookup::Miss(Fill::Skip),
            },
            Store::Memory { scopes, next_id } => {
                let c = scopes.get_with(scope, || {
                    Arc::new(UserPages { id: next_id.fetch_add(1, Ordering::Relaxed), pages: Mutex::default() })
                });
                let hit = c.pages.lock().ok().and_then(|p| p.get(shape).cloned());
                match hit {
                    Some(b) => Lookup::Hit(b),
                    None => Lookup::Miss(Fill::Memory(c)),
                }
            }
        };
        match (&out, scope) {
            (Lookup::Hit(_), Scope::Tasks(_)) => self.metrics.tasks_cache_hit.inc(),
            (Lookup::Miss(_), Scope::Tasks(_)) => self.metrics.tasks_cache_miss.inc(),
            (hit, Scope::Posts) => self.metrics.cache_lookup(scope.label(), matches!(hit, Lookup::Hit(_))),
        }
        out
    }

    /// Loads a missed page, sharing the load with concurrent misses of the
    /// same page and tag, then stores it where `fill` says.
    pub async fn load<F>(&self, scope: Scope, shape: &str, fill: Fill, load: F) -> Result<Bytes, ApiError>
    where
        F: Future<Output = Result<Bytes, ApiError>>,
    {
        let fill = match fill {
            Fill::RedisUntagged(epoch) => match self.create_tag(scope, epoch).await {
                Some(tag) => Fill::Redis { tag },
                None => Fill::Skip,
            },
            other => other,
        };
        let flight_key = match &fill {
            Fill::Redis { tag } => Some(format!("{scope:?}|{shape}|r{}", String::from_utf8_lossy(tag))),
            Fill::Memory(c) => Some(format!("{scope:?}|{shape}|m{}", c.id)),
            Fill::Skip | Fill::RedisUntagged(_) => None,
        };
        let body = match flight_key {
            None => load.await?,
            Some(key) => {
                let flight = {
                    let mut f =
                        self.flights.lock().map_err(|_| ApiError::Internal(anyhow::anyhow!("flight map poisoned")))?;
                    let cell = Arc::clone(f.entry(key.clone()).or_default());
                    Flight { map: &self.flights, key, cell }
                };
                flight.cell.get_or_try_init(|| load).await.cloned()?
            }
        };
        self.fill(scope, shape, fill, &body).await;
        Ok(body)
    }

    async fn fill(&self, scope: Scope, shape: &str, fill: Fill, body: &Bytes) {
        match fill {
            Fill::Skip | Fill::RedisUntagged(_) => {}
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
                    .arg(self.page_key(scope, shape))
                    .arg(value)
                    .arg("PX")
                    .arg(self.ttl.as_millis() as u64)
                    .to_owned();
                // A failed fill costs a later miss, nothing more.
                let _ = self.kv.run::<(), _>("cache", &set).await;
            }
        }
    }

    /// After a committed write in `scope`, before answering: no page
    /// read before this call is served after it. The writer sets a new
    /// random tag of the epoch its own revocation check was trusted under,
    /// so the next reader finds a tag at once; without one (PostgreSQL
    /// answered that check) it deletes the tag and the next reader makes one
    /// before it loads. Either way no earlier page matches any more.
    pub async fn invalidate(&self, scope: Scope, epoch: Option<EpochId>) {
        match &self.store {
            Store::Off => {}
            Store::Memory { scopes, .. } => scopes.invalidate(&scope),
            Store::Redis => {
                let key = self.tag_key(scope);
                let cmd = match epoch {
                    Some(e) => redis::cmd("SET")
                        .arg(key)
                        .arg(new_tag(e))
                        .arg("PX")
                        .arg(self.tag_ttl.as_millis() as u64)
                        .to_owned(),
                    None => redis::cmd("DEL").arg(key).to_owned(),
                };
                if self.kv.run_always::<(), _>("cache", &cmd).await.is_err() {
                    self.trust.fell_behind(self.pair(scope)).await;
                }
            }
        }
    }

    /// A tag of `epoch` for the scope, made if missing or older; None when
    /// Redis did not answer.
    async fn create_tag(&self, scope: Scope, epoch: EpochId) -> Option<Vec<u8>> {
        let mut call = self.ensure_tag.key(self.tag_key(scope));
        call.arg(epoch.hex()).arg(new_tag(epoch)).arg(self.tag_ttl.as_millis() as u64);
        self.kv.run::<Vec<u8>, _>("cache", &call).await.ok()
    }
}

/// Whether `tag` was made under `epoch` (`EPOCH-RANDOM`).
fn tag_of_epoch(tag: &[u8], epoch: EpochId) -> bool {
    tag.len() > 17 && tag[16] == b'-' && hex16(&tag[..16]) == Some(epoch.0)
}

/// A fresh random generation tag of `epoch`.
fn new_tag(epoch: EpochId) -> String {
    format!("{}-{:016x}", epoch.hex(), rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_flight_whose_waiters_were_all_cancelled_leaves_no_entry() {
        // The in-process backend shares the single-flight map; no Redis is
        // contacted (the pool connects lazily).
        let metrics = Arc::new(Metrics::new());
        let kv = Kv::new("redis://127.0.0.1:1", "t", 1, Duration::from_millis(10), &[], metrics.clone()).expect("kv");
        let cache = PageCache::new(CacheBackend::Memory, kv.clone(), Trust::new(kv), Duration::from_secs(30), metrics);
        for _ in 0..3 {
            let Lookup::Miss(fill) = cache.lookup(Scope::Tasks(1), "s", Checked::default()) else { panic!("a miss") };
            let load = cache.load(Scope::Tasks(1), "s", fill, std::future::pending::<Result<Bytes, ApiError>>());
            assert!(tokio::time::timeout(Duration::from_millis(10), load).await.is_err(), "cancelled");
        }
        assert!(cache.flights.lock().expect("lock").is_empty(), "cancelled flights were removed");
        let Lookup::Miss(fill) = cache.lookup(Scope::Tasks(1), "s", Checked::default()) else { panic!("a miss") };
        let body =
            cache.load(Scope::Tasks(1), "s", fill, async { Ok(Bytes::from_static(b"[]")) }).await.expect("loads");
        assert_eq!(body, Bytes::from_static(b"[]"));
        assert!(cache.flights.lock().expect("lock").is_empty());
    }
}
