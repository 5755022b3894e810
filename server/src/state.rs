//! The state every request can reach, one per server behind an `Arc`.
//!
//! It sits below the handlers: `auth`, `tasks` and `ops` take an
//! [`AppState`]; `app` builds it, runs the start-up steps and owns the
//! pipeline. Nothing here knows about routing.

use crate::auth::external::External;
use crate::auth::password::Passwords;
use crate::auth::revocation::{Checked, Revocation};
use crate::auth::throttle::LoginThrottle;
use crate::auth::token::{Principal, Tokens};
use crate::background::Background;
use crate::cache::PageCache;
use crate::config::Config;
use crate::db::Db;
use crate::http::JsonBody;
use crate::http::error::ApiError;
use crate::kv::Kv;
use crate::metrics::Metrics;
use crate::trust::Trust;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Everything a request can reach.
pub struct AppState {
    /// The configuration it started with.
    pub config: Config,
    /// PostgreSQL.
    pub db: Db,
    /// Redis.
    pub kv: Kv,
    /// Whether Redis's word is good now.
    pub trust: Arc<Trust>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// JWT keys.
    pub tokens: Tokens,
    /// Password hashing pool.
    pub passwords: Passwords,
    /// Revocation checks and writes.
    pub revocation: Arc<Revocation>,
    /// Task-list cache.
    pub cache: Arc<PageCache>,
    /// Login throttle.
    pub throttle: LoginThrottle,
    /// The external identity provider's verifier, when `OIDC_ISSUER` is set.
    pub external: Option<Arc<External>>,
    /// The server's background tasks and jobs.
    pub background: Background,
}

/// Who an authenticated request speaks for, as the pipeline verified it.
pub struct Caller {
    /// The verified, unrevoked token.
    pub principal: Arc<Principal>,
    /// What the revocation round trip brought back besides "not revoked".
    pub checked: Checked,
    /// The lane the request runs on (`http::lanes`), if any: its reads go
    /// on that lane's PostgreSQL connection (`db::Db::read`).
    pub lane: Option<usize>,
}

impl AppState {
    /// Reads a JSON body within `BODY_READ_TIMEOUT_SECS` (see
    /// [`crate::http::read_json`]).
    pub async fn read_json<T, B>(&self, body: JsonBody<B>) -> Result<T, ApiError>
    where
        T: DeserializeOwned,
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        crate::http::read_json(body, self.config.body_read_timeout).await
    }
}
