//! Tasks: the handlers of `/tasks` and `/admin/tasks`, their queries, and
//! the per-user list cache (`cache`). Ownership is enforced in SQL: every
//! per-user query filters on the caller's id, so another user's task is
//! indistinguishable from a missing one (404).

pub mod cache;
pub mod model;

use crate::app::AppState;
use crate::auth::token::{Principal, Role};
use crate::db::{Db, DbError};
use crate::http::error::ApiError;
use crate::http::{Resp, empty, json, json_bytes, read_json};
use bytes::Bytes;
use cache::Lookup;
use hyper::header::{HeaderValue, LOCATION};
use hyper::{Request, StatusCode};
use model::{ListQuery, NewTask, NewTaskBody, Task, TaskPatch, TaskPatchBody};

impl Db {
    /// One page of a user's tasks, or of everyone's when `uid` is None.
    pub async fn list_tasks(&self, uid: Option<i64>, q: &ListQuery) -> Result<Vec<Task>, DbError> {
        let c = self.conn().await?;
        let rows = match uid {
            Some(uid) => c.client.query(&c.st.list_tasks, &[&uid, &q.completed, &q.limit, &q.offset]).await,
            None => c.client.query(&c.st.list_all_tasks, &[&q.completed, &q.limit, &q.offset]).await,
        }
        .map_err(|e| self.fail(e))?;
        Ok(rows.iter().map(Task::from_row).collect())
    }

    /// One task of its owner.
    pub async fn get_task(&self, uid: i64, id: i64) -> Result<Option<Task>, DbError> {
        let c = self.conn().await?;
        let row = c.client.query_opt(&c.st.get_task, &[&id, &uid]).await.map_err(|e| self.fail(e))?;
        Ok(row.as_ref().map(Task::from_row))
    }

    /// Creates a task.
    pub async fn insert_task(&self, uid: i64, t: &NewTask) -> Result<Task, DbError> {
        let c = self.conn().await?;
        let row = c
            .client
            .query_one(&c.st.insert_task, &[&uid, &t.title, &t.description, &t.due_date])
            .await
            .map_err(|e| self.fail(e))?;
        Ok(Task::from_row(&row))
    }

    /// Applies a patch; None when the task is absent or another user's.
    pub async fn update_task(&self, uid: i64, id: i64, p: &TaskPatch) -> Result<Option<Task>, DbError> {
        let c = self.conn().await?;
        let description = p.description.clone().flatten();
        let due = p.due_date.flatten();
        let row = c
            .client
            .query_opt(
                &c.st.update_task,
                &[
                    &id,
                    &uid,
                    &p.title,
                    &p.description.is_some(),
                    &description,
                    &p.is_completed,
                    &p.due_date.is_some(),
                    &due,
                ],
            )
            .await
            .map_err(|e| self.fail(e))?;
        Ok(row.as_ref().map(Task::from_row))
    }

    /// Deletes; whether a task was deleted.
    pub async fn delete_task(&self, uid: i64, id: i64) -> Result<bool, DbError> {
        let c = self.conn().await?;
        let n = c.client.execute(&c.st.delete_task, &[&id, &uid]).await.map_err(|e| self.fail(e))?;
        Ok(n == 1)
    }
}

fn encode(tasks: &[Task]) -> Result<Bytes, ApiError> {
    serde_json::to_vec(tasks).map(Bytes::from).map_err(|e| ApiError::Internal(e.into()))
}

/// `GET /tasks`: the hot path. The revocation check and the cache look-up
/// share one Redis round trip; a hit sends the stored bytes as they are.
pub async fn list<B>(st: &AppState, req: &Request<B>) -> Result<Resp, ApiError> {
    let p = st.principal(req)?;
    let q = match ListQuery::parse(req.uri().query()) {
        Ok(q) => q,
        Err(e) => {
            // A revoked token gets its 401 before any 400.
            st.revocation.check(&p, None).await?;
            return Err(e);
        }
    };
    let shape = q.shape();
    let probe = st.revocation.check(&p, st.cache.keys(p.user_id, &shape)).await?;
    match st.cache.lookup(p.user_id, &shape, probe) {
        Lookup::Hit(body) => Ok(json_bytes(StatusCode::OK, body)),
        Lookup::Miss(fill) => {
            let load = async { encode(&st.db.list_tasks(Some(p.user_id), &q).await?) };
            let body = st.cache.load(p.user_id, &shape, fill, load).await?;
            Ok(json_bytes(StatusCode::OK, body))
        }
    }
}

/// `POST /tasks`.
pub async fn create<B>(st: &AppState, req: Request<B>) -> Result<Resp, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let p = st.authenticate(&req).await?;
    let body: NewTaskBody = read_json(req).await?;
    let task = st.db.insert_task(p.user_id, &body.validate()?).await?;
    st.cache.invalidate(p.user_id).await;
    let mut resp = json(StatusCode::CREATED, &task)?;
    if let Ok(loc) = HeaderValue::from_str(&format!("/tasks/{}", task.id)) {
        resp.headers_mut().insert(LOCATION, loc);
    }
    Ok(resp)
}

/// `GET /tasks/{id}`: always from PostgreSQL, so read-your-writes is trivial.
pub async fn get<B>(st: &AppState, req: &Request<B>, id: i64) -> Result<Resp, ApiError> {
    let p = st.authenticate(req).await?;
    let task = st.db.get_task(p.user_id, id).await?.ok_or(ApiError::NotFound)?;
    json(StatusCode::OK, &task)
}

/// `PATCH /tasks/{id}`.
pub async fn update<B>(st: &AppState, req: Request<B>, id: i64) -> Result<Resp, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let p = st.authenticate(&req).await?;
    let body: TaskPatchBody = read_json(req).await?;
    let patch = body.validate()?;
    let task = st.db.update_task(p.user_id, id, &patch).await?.ok_or(ApiError::NotFound)?;
    st.cache.invalidate(p.user_id).await;
    json(StatusCode::OK, &task)
}

/// `DELETE /tasks/{id}`.
pub async fn delete<B>(st: &AppState, req: &Request<B>, id: i64) -> Result<Resp, ApiError> {
    let p = st.authenticate(req).await?;
    if !st.db.delete_task(p.user_id, id).await? {
        return Err(ApiError::NotFound);
    }
    st.cache.invalidate(p.user_id).await;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `GET /admin/tasks`: every user's tasks, admins only, never cached.
pub async fn admin_list<B>(st: &AppState, req: &Request<B>) -> Result<Resp, ApiError> {
    let p = st.authenticate(req).await?;
    require_admin(&p)?;
    let q = ListQuery::parse(req.uri().query())?;
    let tasks = st.db.list_tasks(None, &q).await?;
    json(StatusCode::OK, &tasks)
}

/// 403 unless the token's role is admin.
pub fn require_admin(p: &Principal) -> Result<(), ApiError> {
    if p.role == Role::Admin { Ok(()) } else { Err(ApiError::Forbidden("This route is for administrators.")) }
}
