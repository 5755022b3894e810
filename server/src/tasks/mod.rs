//! Tasks: the handlers of `/tasks` and `/admin/tasks`, and the bodies and
//! their validation (`model`); the lists are cached per user
//! (`crate::cache`, [`Scope::Tasks`]). Ownership
//! is enforced in SQL (`db::tasks`): another user's task is
//! indistinguishable from a missing one (404).
//!
//! Writes run as jobs (`app`): the commit, the cache invalidation and the
//! answer happen together or the invalidation still happens after the
//! client has gone.

pub mod model;

use crate::cache::{Lookup, Scope};
use crate::http::error::ApiError;
use crate::http::{JsonBody, Resp, empty, json, json_bytes};
use crate::state::{AppState, Caller};
use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{HeaderValue, LOCATION};
use model::{ListQuery, NewTaskBody, TaskPage, TaskPatchBody};

fn encode(tasks: &TaskPage) -> Result<Bytes, ApiError> {
    serde_json::to_vec(tasks).map(Bytes::from).map_err(|e| ApiError::Internal(e.into()))
}

/// A `GET /tasks` query, parsed once: the pipeline fetches its cache keys
/// in the revocation round trip ([`ListPlan::keys`]), then the handler
/// answers from the same plan. A bad query has no keys and is answered 400
/// once the token has passed.
pub struct ListPlan {
    query: Result<ListQuery, ApiError>,
    shape: String,
}

impl ListPlan {
    /// Parses the query string.
    pub fn new(query: Option<&str>) -> Self {
        let query = ListQuery::parse(query);
        let shape = query.as_ref().map(ListQuery::shape).unwrap_or_default();
        Self { query, shape }
    }

    /// The cache's tag and page keys of this query shape for `uid`.
    pub fn keys(&self, st: &AppState, uid: i64) -> Vec<String> {
        if self.query.is_ok() { st.cache.keys(Scope::Tasks(uid), &self.shape) } else { Vec::new() }
    }
}

/// `GET /tasks`: the hot path. The cache's tag and page came back with the
/// revocation check; a hit sends the stored bytes as they are.
pub async fn list(st: &AppState, caller: Caller, plan: ListPlan) -> Result<Resp, ApiError> {
    let q = plan.query?;
    let (uid, shape) = (caller.principal.user_id, plan.shape);
    match st.cache.lookup(Scope::Tasks(uid), &shape, caller.checked) {
        Lookup::Hit(body) => Ok(json_bytes(StatusCode::OK, body)),
        Lookup::Miss(fill) => {
            let load = async { encode(&st.db.list_tasks(Some(uid), &q, caller.lane).await?) };
            // Boxed: the miss path's future (PostgreSQL, single flight, the
            // fill) is ~7 KB; inline, every hit would carry and move it.
            let body = Box::pin(st.cache.load(Scope::Tasks(uid), &shape, fill, load)).await?;
            Ok(json_bytes(StatusCode::OK, body))
        }
    }
}

/// `POST /tasks`.
pub async fn create<B>(st: &AppState, caller: Caller, body: JsonBody<B>) -> Result<Resp, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let uid = caller.principal.user_id;
    let body: NewTaskBody = st.read_json(body).await?;
    let task = st.db.insert_task(uid, &body.validate()?).await?;
    st.cache.invalidate(Scope::Tasks(uid), caller.checked.epoch).await;
    let mut resp = json(StatusCode::CREATED, &task)?;
    if let Ok(loc) = HeaderValue::from_str(&format!("/tasks/{}", task.id)) {
        resp.headers_mut().insert(LOCATION, loc);
    }
    Ok(resp)
}

/// `GET /tasks/{id}`: always from PostgreSQL, so read-your-writes is trivial.
pub async fn get(st: &AppState, caller: Caller, id: i64) -> Result<Resp, ApiError> {
    let task = st.db.get_task(caller.principal.user_id, id, caller.lane).await?.ok_or(ApiError::NotFound)?;
    json(StatusCode::OK, &task)
}

/// `PATCH /tasks/{id}`.
pub async fn update<B>(st: &AppState, caller: Caller, body: JsonBody<B>, id: i64) -> Result<Resp, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let uid = caller.principal.user_id;
    let body: TaskPatchBody = st.read_json(body).await?;
    let patch = body.validate()?;
    let task = st.db.update_task(uid, id, &patch).await?.ok_or(ApiError::NotFound)?;
    st.cache.invalidate(Scope::Tasks(uid), caller.checked.epoch).await;
    json(StatusCode::OK, &task)
}

/// `DELETE /tasks/{id}`.
pub async fn delete(st: &AppState, caller: Caller, id: i64) -> Result<Resp, ApiError> {
    let uid = caller.principal.user_id;
    if !st.db.delete_task(uid, id).await? {
        return Err(ApiError::NotFound);
    }
    st.cache.invalidate(Scope::Tasks(uid), caller.checked.epoch).await;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `GET /admin/tasks`: every user's tasks, admins only (the route table
/// says so), never cached.
pub async fn admin_list(st: &AppState, query: Option<&str>) -> Result<Resp, ApiError> {
    let q = ListQuery::parse(query)?;
    // On the pool, not a lane's connection: a page of everyone's tasks is
    // not a small look-up to queue the lane's other reads behind.
    let tasks = st.db.list_tasks(None, &q, None).await?;
    json(StatusCode::OK, &tasks)
}
