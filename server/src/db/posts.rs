//! The `posts` and `comments` tables: one function per statement.

use super::{Db, DbError};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tokio_postgres::Row;

/// A post with its comment count. Serialized as the cached page entry
/// (`graphql`), so its fields are the page's whole content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostRow {
    /// Id.
    pub id: i64,
    /// Author (a user id).
    pub author_id: i64,
    /// Title, trimmed.
    pub title: String,
    /// Content.
    pub content: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last edited.
    pub updated_at: DateTime<Utc>,
    /// Comments on it.
    pub comment_count: i64,
}

impl PostRow {
    /// From a row of `db::POST_COLUMNS`.
    fn from_row(r: &Row) -> Self {
        Self {
            id: r.get(0),
            author_id: r.get(1),
            title: r.get(2),
            content: r.get(3),
            created_at: r.get(4),
            updated_at: r.get(5),
            comment_count: r.get(6),
        }
    }
}

/// A comment (cached with the page of posts it is among the first of).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommentRow {
    /// Id.
    pub id: i64,
    /// The post it is on.
    pub post_id: i64,
    /// Author (a user id).
    pub author_id: i64,
    /// Content.
    pub content: String,
    /// Created.
    pub created_at: DateTime<Utc>,
}

impl CommentRow {
    /// From a row of `db::COMMENT_COLUMNS`.
    fn from_row(r: &Row) -> Self {
        Self { id: r.get(0), post_id: r.get(1), author_id: r.get(2), content: r.get(3), created_at: r.get(4) }
    }
}

/// Why a write to a post or comment changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No such row.
    NotFound,
    /// It exists and is not the caller's to change.
    NotYours,
}

/// A refused write: the row exists (not the caller's) or does not.
fn refusal(author: Option<i64>) -> Refused {
    if author.is_some() { Refused::NotYours } else { Refused::NotFound }
}

impl Db {
    /// Up to `limit` posts, newest first, older than the cursor if any.
    pub async fn posts_page(&self, after: Option<(DateTime<Utc>, i64)>, limit: i64) -> Result<Vec<PostRow>, DbError> {
        let (at, id) = (after.map(|a| a.0), after.map_or(0, |a| a.1));
        let rows = self.with(async |c, st| c.query(&st.posts_page, &[&at, &id, &limit]).await).await?;
        Ok(rows.iter().map(PostRow::from_row).collect())
    }

    /// Posts by id (absent ids are absent from the map).
    pub async fn posts_by_ids(&self, ids: &[i64]) -> Result<HashMap<i64, PostRow>, DbError> {
        let rows = self.with(async |c, st| c.query(&st.posts_by_ids, &[&ids]).await).await?;
        Ok(rows.iter().map(PostRow::from_row).map(|p| (p.id, p)).collect())
    }

    /// Creates a post.
    pub async fn insert_post(&self, author: i64, title: &str, content: &str) -> Result<PostRow, DbError> {
        let row = self.with(async |c, st| c.query_one(&st.insert_post, &[&author, &title, &content]).await).await?;
        Ok(PostRow::from_row(&row))
    }

    /// Edits a post of `author`; `None` fields are kept.
    pub async fn update_post(
        &self,
        id: i64,
        author: i64,
        title: Option<&str>,
        content: Option<&str>,
    ) -> Result<Result<PostRow, Refused>, DbError> {
        let row =
            self.with(async |c, st| c.query_opt(&st.update_post, &[&id, &author, &title, &content]).await).await?;
        match row {
            Some(r) => Ok(Ok(PostRow::from_row(&r))),
            None => Ok(Err(refusal(self.post_author(id).await?))),
        }
    }

    /// Deletes a post (and its comments) if `caller` wrote it or `admin`.
    pub async fn delete_post(&self, id: i64, caller: i64, admin: bool) -> Result<Result<(), Refused>, DbError> {
        let row = self.with(async |c, st| c.query_opt(&st.delete_post, &[&id, &caller, &admin]).await).await?;
        match row {
            Some(_) => Ok(Ok(())),
            None => Ok(Err(refusal(self.post_author(id).await?))),
        }
    }

    async fn post_author(&self, id: i64) -> Result<Option<i64>, DbError> {
        let row = self.with(async |c, st| c.query_opt(&st.post_author, &[&id]).await).await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Adds a comment; `None` when the post does not exist (or was deleted
    /// meanwhile).
    pub async fn insert_comment(&self, post: i64, author: i64, content: &str) -> Result<Option<CommentRow>, DbError> {
        let row = self.with(async |c, st| c.query_opt(&st.insert_comment, &[&post, &author, &content]).await).await;
        match row {
            Ok(row) => Ok(row.as_ref().map(CommentRow::from_row)),
            // The post was deleted between the insert's look-up and its
            // commit: the same answer as a post that never existed.
            Err(DbError::Pg(e)) if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes a comment if `caller` wrote it or `admin`.
    pub async fn delete_comment(&self, id: i64, caller: i64, admin: bool) -> Result<Result<(), Refused>, DbError> {
        let row = self.with(async |c, st| c.query_opt(&st.delete_comment, &[&id, &caller, &admin]).await).await?;
        match row {
            Some(_) => Ok(Ok(())),
            None => {
                let author = self.with(async |c, st| c.query_opt(&st.comment_author, &[&id]).await).await?;
                Ok(Err(refusal(author.map(|r| r.get(0)))))
            }
        }
    }

    /// The first `limit` comments of each post, oldest first, in one
    /// statement.
    pub async fn first_comments(&self, posts: &[i64], limit: i64) -> Result<HashMap<i64, Vec<CommentRow>>, DbError> {
        let rows = self.with(async |c, st| c.query(&st.first_comments, &[&posts, &limit]).await).await?;
        let mut out: HashMap<i64, Vec<CommentRow>> = posts.iter().map(|p| (*p, Vec::new())).collect();
        for r in &rows {
            let c = CommentRow::from_row(r);
            out.entry(c.post_id).or_default().push(c);
        }
        Ok(out)
    }

    /// Up to `limit` comments of one post after a cursor, oldest first.
    pub async fn comments_after(
        &self,
        post: i64,
        after: (DateTime<Utc>, i64),
        limit: i64,
    ) -> Result<Vec<CommentRow>, DbError> {
        let rows =
            self.with(async |c, st| c.query(&st.comments_after, &[&post, &after.0, &after.1, &limit]).await).await?;
        Ok(rows.iter().map(CommentRow::from_row).collect())
    }
}
