//! The `tasks` table. Ownership is enforced here: every per-user statement
//! filters on the caller's id, so another user's task is indistinguishable
//! from a missing one.

use super::{Db, DbError};
use crate::http::time::Rfc3339;
use chrono::{DateTime, Utc};
use serde::{Serialize, Serializer};
use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

fn rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(Rfc3339::new(t).as_str())
}

fn rfc3339_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}

/// A task as stored, and as sent (camelCase, RFC 3339 UTC times). Its
/// text is owned (`String`), or borrowed from the row it was read from
/// (`&str`, see [`TaskPage`]).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Task<S = String> {
    /// Id.
    pub id: i64,
    /// Owner.
    pub user_id: i64,
    /// Title, trimmed.
    pub title: S,
    /// Optional description.
    pub description: Option<S>,
    /// Done?
    pub is_completed: bool,
    /// Optional due date.
    #[serde(serialize_with = "rfc3339_opt")]
    pub due_date: Option<DateTime<Utc>>,
    /// Created.
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// Last changed.
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl<'a, S: FromSql<'a>> Task<S> {
    /// From a row of `db::TASK_COLUMNS`.
    pub fn from_row(r: &'a Row) -> Self {
        Self {
            id: r.get(0),
            user_id: r.get(1),
            title: r.get(2),
            description: r.get(3),
            is_completed: r.get(4),
            due_date: r.get(5),
            created_at: r.get(6),
            updated_at: r.get(7),
        }
    }
}

/// A page of tasks as PostgreSQL sent it, serialized straight from the
/// rows: each task borrows its text from its row, so a page read on a cache
/// miss is encoded without a `String` per title and description.
pub struct TaskPage(Vec<Row>);

impl Serialize for TaskPage {
    fn serialize<Ser: Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        s.collect_seq(self.0.iter().map(Task::<&str>::from_row))
    }
}

/// A validated new task.
#[derive(Debug, PartialEq)]
pub struct NewTask {
    /// Trimmed title.
    pub title: String,
    /// Description.
    pub description: Option<String>,
    /// Due date.
    pub due_date: Option<DateTime<Utc>>,
}

/// A validated patch: None leaves a field; an inner None clears it.
#[derive(Debug, Default, PartialEq)]
pub struct TaskPatch {
    /// New title.
    pub title: Option<String>,
    /// New description (inner None clears it).
    pub description: Option<Option<String>>,
    /// New completion.
    pub is_completed: Option<bool>,
    /// New due date (inner None clears it).
    pub due_date: Option<Option<DateTime<Utc>>>,
}

/// One page of a list, filtered on completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// 1..=100.
    pub limit: i64,
    /// >= 0.
    pub offset: i64,
    /// Filter on completion.
    pub completed: Option<bool>,
}

impl Db {
    /// One page of a user's tasks, or of everyone's when `uid` is None;
    /// read on `lane` (see `Db::read`).
    pub async fn list_tasks(&self, uid: Option<i64>, q: &Page, lane: Option<usize>) -> Result<TaskPage, DbError> {
        let rows = self
            .read(lane, async |c, st| match uid {
                Some(uid) => c.query(&st.list_tasks, &[&uid, &q.completed, &q.limit, &q.offset]).await,
                None => c.query(&st.list_all_tasks, &[&q.completed, &q.limit, &q.offset]).await,
            })
            .await?;
        Ok(TaskPage(rows))
    }

    /// One task of its owner, read on `lane`.
    pub async fn get_task(&self, uid: i64, id: i64, lane: Option<usize>) -> Result<Option<Task>, DbError> {
        let row = self.read(lane, async |c, st| c.query_opt(&st.get_task, &[&id, &uid]).await).await?;
        Ok(row.as_ref().map(Task::from_row))
    }

    /// Creates a task.
    pub async fn insert_task(&self, uid: i64, t: &NewTask) -> Result<Task, DbError> {
        let row = self
            .with(async |c, st| c.query_one(&st.insert_task, &[&uid, &t.title, &t.description, &t.due_date]).await)
            .await?;
        Ok(Task::from_row(&row))
    }

    /// Applies a patch; None when the task is absent or another user's.
    pub async fn update_task(&self, uid: i64, id: i64, p: &TaskPatch) -> Result<Option<Task>, DbError> {
        let description = p.description.clone().flatten();
        let due = p.due_date.flatten();
        let (has_description, has_due) = (p.description.is_some(), p.due_date.is_some());
        let row = self
            .with(async |c, st| {
                c.query_opt(
                    &st.update_task,
                    &[&id, &uid, &p.title, &has_description, &description, &p.is_completed, &has_due, &due],
                )
                .await
            })
            .await?;
        Ok(row.as_ref().map(Task::from_row))
    }

    /// Deletes; whether a task was deleted.
    pub async fn delete_task(&self, uid: i64, id: i64) -> Result<bool, DbError> {
        let n = self.with(async |c, st| c.execute(&st.delete_task, &[&id, &uid]).await).await?;
        Ok(n == 1)
    }
}
