//! The blog's schema (API.md, "GraphQL") and its resolvers.
//!
//! # Statements per page (no N+1)
//! A page of posts is one statement (comment counts are a subquery of it),
//! or none when it comes from the cache. Authors need none: an author is a
//! user id, and the display name is derived from it. The first comments of
//! every post of a page are fetched by the `posts` resolver itself, in one
//! statement per distinct `comments(first:)` of the document (it looks
//! ahead at the selection), so the count does not depend on timing; they
//! are cached with the page. Other
//! paths to comments and a comment's `post` go through DataLoaders
//! ([`FirstComments`], [`PostsById`]), which batch what arrives together.
//! So a page costs a fixed number of statements whatever its size.
//!
//! # Cache
//! `posts` pages are the [`Scope::Posts`] pages of `crate::cache`, shared by
//! every user: the page's posts with their counts and the first comments the
//! document asked for, read under the scope's generation tag. Every mutation sets a new tag after its commit and before
//! it answers, so no page loaded before a mutation is served after it.
//! `post(id)` and comments come from PostgreSQL and are as fresh as it is.

use super::Fail;
use crate::auth::revocation::Checked;
use crate::cache::{Lookup, Scope};
use crate::db::Db;
use crate::db::posts::{CommentRow, PostRow, Refused};
use crate::state::AppState;
use crate::trust::EpochId;
use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::{
    Context, ID, InputObject, InputValueError, InputValueResult, Object, Scalar, ScalarType, SimpleObject, Value,
};
use bytes::Bytes;
use chrono::Utc;
use std::collections::HashMap;
use std::sync::Arc;

/// Largest `first` of `posts` and `comments`.
const MAX_FIRST: i32 = 50;

/// What every resolver of one request reaches: the state, the caller, the
/// request's loaders.
pub struct Gql {
    /// The shared state.
    pub st: Arc<AppState>,
    /// The caller's user id.
    pub user_id: i64,
    /// Whether the caller is an admin.
    pub admin: bool,
    /// The epoch the caller's revocation check trusted Redis under (for
    /// invalidations; see `crate::cache`).
    pub epoch: Option<EpochId>,
    comments: DataLoader<FirstComments>,
    posts: DataLoader<PostsById>,
}

impl Gql {
    /// The context of one request.
    pub fn new(st: Arc<AppState>, user_id: i64, admin: bool, checked: &Checked) -> Self {
        let db = st.db.clone();
        Self {
            user_id,
            admin,
            epoch: checked.epoch,
            comments: DataLoader::new(FirstComments(db.clone()), tokio::spawn),
            posts: DataLoader::new(PostsById(db), tokio::spawn),
            st,
        }
    }
}

fn gql<'a>(ctx: &Context<'a>) -> &'a Gql {
    ctx.data_unchecked::<Gql>()
}

/// `scalar DateTime`: RFC 3339 in UTC, microseconds, `Z`.
pub struct DateTime(pub chrono::DateTime<Utc>);

/// RFC 3339, UTC.
#[Scalar(name = "DateTime")]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| Self(t.with_timezone(&Utc)))
                .map_err(|_| InputValueError::custom("expected an RFC 3339 date-time")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(crate::http::time::Rfc3339::new(&self.0).as_str().to_owned())
    }
}

/// A page cursor: the (created_at, id) of the last item, in microseconds.
fn cursor(at: chrono::DateTime<Utc>, id: i64) -> String {
    format!("{}:{id}", at.timestamp_micros())
}

/// `items` were fetched with one more than `limit` to learn whether a next
/// page exists: cuts them to `limit` and returns the cursor of the last
/// kept item when there is more.
fn cut_page<T>(items: &mut Vec<T>, limit: i64, key: impl Fn(&T) -> (chrono::DateTime<Utc>, i64)) -> Option<String> {
    if items.len() as i64 <= limit {
        return None;
    }
    items.truncate(limit as usize);
    items.last().map(|item| {
        let (at, id) = key(item);
        cursor(at, id)
    })
}

fn parse_cursor(s: &str) -> Result<(chrono::DateTime<Utc>, i64), Fail> {
    let bad = || Fail::input("after", "is not a cursor this API returned");
    let (at, id) = s.split_once(':').ok_or_else(bad)?;
    let at = at.parse::<i64>().ok().and_then(chrono::DateTime::from_timestamp_micros).ok_or_else(bad)?;
    Ok((at, id.parse::<i64>().map_err(|_| bad())?))
}

fn check_first(first: i32) -> Result<i64, Fail> {
    if (1..=MAX_FIRST).contains(&first) {
        Ok(i64::from(first))
    } else {
        Err(Fail::input("first", &format!("must be 1 to {MAX_FIRST}")))
    }
}

/// An id argument; one that is not a positive integer names nothing.
fn parse_id(id: &ID) -> Option<i64> {
    id.parse::<i64>().ok().filter(|n| *n > 0)
}

/// Text of 1..=`max` characters after trimming, without U+0000.
fn text(field: &'static str, raw: &str, max: usize) -> Result<(), Fail> {
    if raw.contains('\0') {
        return Err(Fail::input(field, "may not contain U+0000"));
    }
    let n = raw.trim().chars().count();
    if n == 0 || n > max {
        return Err(Fail::input(field, &format!("must be 1 to {max} characters after trimming")));
    }
    Ok(())
}

/// A cached page: what the [`Scope::Posts`] cache stores.
#[derive(serde::Serialize, serde::Deserialize)]
struct CachedPage {
    items: Vec<PostRow>,
    next: Option<String>,
    /// (post id, row limit, its first comments) for each limit the
    /// document asked for (part of the page's shape).
    comments: Vec<(i64, i64, Vec<CommentRow>)>,
}

/// The `Query` type.
pub struct Query;

#[Object]
impl Query {
    /// Newest first (createdAt, then id); `first` 1..50.
    #[graphql(complexity = "(first.clamp(1, 50) as usize) * child_complexity")]
    async fn posts(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<PostPage> {
        let g = gql(ctx);
        let limit = check_first(first)?;
        let after = after.as_deref().map(parse_cursor).transpose()?;
        // The page's first comments are part of it (and of its shape):
        // a cached page costs no statement at all, and every mutation,
        // comments included, replaces the tag it is stored under.
        let limits = comment_limits(ctx);
        let joined: Vec<String> = limits.iter().map(i64::to_string).collect();
        let shape = match after {
            Some((at, id)) => format!("f{limit}:a{}:c{}", cursor(at, id), joined.join(",")),
            None => format!("f{limit}:a:c{}", joined.join(",")),
        };
        let cache = &g.st.cache;
        let body = match cache.lookup_fresh(Scope::Posts, &shape).await {
            Lookup::Hit(body) => body,
            Lookup::Miss(fill) => {
                let db = &g.st.db;
                let load = async move {
                    let mut items = db.posts_page(after, limit + 1).await?;
                    let next = cut_page(&mut items, limit, |p| (p.created_at, p.id));
                    let ids: Vec<i64> = items.iter().map(|p| p.id).collect();
                    let mut comments = Vec::new();
                    for l in limits.iter().filter(|_| !ids.is_empty()) {
                        let found = db.first_comments(&ids, *l).await?;
                        comments.extend(found.into_iter().map(|(post, c)| (post, *l, c)));
                    }
                    serde_json::to_vec(&CachedPage { items, next, comments })
                        .map(Bytes::from)
                        .map_err(|e| crate::http::error::ApiError::Internal(e.into()))
                };
                cache.load(Scope::Posts, &shape, fill, load).await.map_err(Fail::from)?
            }
        };
        let page: CachedPage = serde_json::from_slice(&body).map_err(|e| Fail::Internal(e.into()))?;
        let first_comments: PageComments = page.comments.into_iter().map(|(p, l, c)| ((p, l), c)).collect();
        let first_comments = Arc::new(first_comments);
        let items = page.items.into_iter().map(|row| Post { row, first_comments: Some(first_comments.clone()) });
        Ok(PostPage { items: items.collect(), next_cursor: page.next })
    }

    /// Null when absent.
    async fn post(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Post>> {
        let Some(id) = parse_id(&id) else { return Ok(None) };
        Ok(gql(ctx).posts.load_one(id).await.map_err(Fail::from)?.map(Post::alone))
    }

    /// The caller.
    async fn me(&self, ctx: &Context<'_>) -> Author {
        Author(gql(ctx).user_id)
    }
}

/// The row limits (`first` + 1) of the `items { comments(first:) }` fields of
/// a `posts` selection: what to fetch for the whole page at once.
fn comment_limits(ctx: &Context<'_>) -> Vec<i64> {
    let mut out = Vec::new();
    for field in ctx.look_ahead().field("items").field("comments").selection_fields() {
        let first = field
            .arguments()
            .ok()
            .and_then(|args| args.into_iter().find(|(n, _)| n.as_str() == "first"))
            .map_or(Some(50), |(_, v)| match v {
                Value::Number(n) => n.as_i64(),
                _ => None,
            });
        if let Some(limit) = first.filter(|f| (1..=i64::from(MAX_FIRST)).contains(f)).map(|f| f + 1)
            && !out.contains(&limit)
        {
            out.push(limit);
        }
    }
    out
}

/// A page of posts.
#[derive(SimpleObject)]
pub struct PostPage {
    items: Vec<Post>,
    /// Null when there are no more.
    next_cursor: Option<String>,
}

/// A page of comments.
#[derive(SimpleObject)]
pub struct CommentPage {
    items: Vec<Comment>,
    /// Null when there are no more.
    next_cursor: Option<String>,
}

/// (post id, row limit) -> the first comments of the posts of one page.
type PageComments = HashMap<(i64, i64), Vec<CommentRow>>;

/// A post, with its page's first comments when it came in a page.
pub struct Post {
    row: PostRow,
    /// (post id, limit) -> comments, fetched by the `posts` resolver.
    first_comments: Option<Arc<PageComments>>,
}

impl Post {
    fn alone(row: PostRow) -> Self {
        Self { row, first_comments: None }
    }
}

#[Object]
impl Post {
    async fn id(&self) -> ID {
        ID(self.row.id.to_string())
    }
    /// 1..200 characters after trimming.
    async fn title(&self) -> &str {
        &self.row.title
    }
    /// 1..20000 characters.
    async fn content(&self) -> &str {
        &self.row.content
    }
    async fn author(&self) -> Author {
        Author(self.row.author_id)
    }
    async fn created_at(&self) -> DateTime {
        DateTime(self.row.created_at)
    }
    async fn updated_at(&self) -> DateTime {
        DateTime(self.row.updated_at)
    }
    async fn comment_count(&self) -> i32 {
        i32::try_from(self.row.comment_count).unwrap_or(i32::MAX)
    }
    /// Oldest first.
    #[graphql(complexity = "(first.clamp(1, 50) as usize) * child_complexity")]
    async fn comments(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<CommentPage> {
        let g = gql(ctx);
        let limit = check_first(first)?;
        // One more than asked tells whether there is a next page.
        let key = (self.row.id, limit + 1);
        let prefetched = self.first_comments.as_ref().and_then(|m| m.get(&key));
        let mut items = match after.as_deref().map(parse_cursor).transpose()? {
            None if prefetched.is_some() => prefetched.cloned().unwrap_or_default(),
            None => g.comments.load_one(key).await.map_err(Fail::from)?.unwrap_or_default(),
            Some(c) => g.st.db.comments_after(self.row.id, c, limit + 1).await.map_err(Fail::from)?,
        };
        let next = cut_page(&mut items, limit, |c| (c.created_at, c.id));
        Ok(CommentPage { items: items.into_iter().map(Comment).collect(), next_cursor: next })
    }
}

/// A comment.
pub struct Comment(CommentRow);

#[Object]
impl Comment {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    /// 1..2000 characters.
    async fn content(&self) -> &str {
        &self.0.content
    }
    async fn author(&self) -> Author {
        Author(self.0.author_id)
    }
    async fn post(&self, ctx: &Context<'_>) -> async_graphql::Result<Post> {
        let post = gql(ctx).posts.load_one(self.0.post_id).await.map_err(Fail::from)?;
        Ok(Post::alone(post.ok_or(Fail::NotFound)?))
    }
    async fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }
}

/// An author: a user, never shown by email address.
pub struct Author(i64);

#[Object]
impl Author {
    /// The user's id, as in `/me`.
    async fn id(&self) -> ID {
        ID(self.0.to_string())
    }
    /// Derived from the id: no personal data.
    async fn display_name(&self) -> String {
        format!("user-{}", self.0)
    }
}

/// `createPost` input.
#[derive(InputObject)]
pub struct CreatePostInput {
    title: String,
    content: String,
}

/// `updatePost` input: absent fields are kept.
#[derive(InputObject)]
pub struct UpdatePostInput {
    title: Option<String>,
    content: Option<String>,
}

/// `addComment` input.
#[derive(InputObject)]
pub struct AddCommentInput {
    post_id: ID,
    content: String,
}

/// The `Mutation` type. Each mutation commits, then sets a new posts cache
/// tag, then answers (the request is a job: a client that hangs up does not
/// stop it between the two).
pub struct Mutation;

impl Mutation {
    async fn changed(g: &Gql) {
        g.st.cache.invalidate(Scope::Posts, g.epoch).await;
    }
}

fn refused(r: Refused) -> Fail {
    match r {
        Refused::NotFound => Fail::NotFound,
        Refused::NotYours => Fail::Forbidden,
    }
}

#[Object]
impl Mutation {
    async fn create_post(&self, ctx: &Context<'_>, input: CreatePostInput) -> async_graphql::Result<Post> {
        let g = gql(ctx);
        text("title", &input.title, 200)?;
        text("content", &input.content, 20_000)?;
        let post = g.st.db.insert_post(g.user_id, input.title.trim(), &input.content).await.map_err(Fail::from)?;
        Self::changed(g).await;
        Ok(Post::alone(post))
    }

    /// The author only.
    async fn update_post(&self, ctx: &Context<'_>, id: ID, input: UpdatePostInput) -> async_graphql::Result<Post> {
        let g = gql(ctx);
        let id = parse_id(&id).ok_or(Fail::NotFound)?;
        if input.title.is_none() && input.content.is_none() {
            return Err(Fail::input("input", "give title, content or both").into());
        }
        if let Some(t) = &input.title {
            text("title", t, 200)?;
        }
        if let Some(c) = &input.content {
            text("content", c, 20_000)?;
        }
        let title = input.title.as_deref().map(str::trim);
        let post = g.st.db.update_post(id, g.user_id, title, input.content.as_deref()).await.map_err(Fail::from)?;
        let post = post.map_err(refused)?;
        Self::changed(g).await;
        Ok(Post::alone(post))
    }

    /// The author or an admin.
    async fn delete_post(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let g = gql(ctx);
        let id = parse_id(&id).ok_or(Fail::NotFound)?;
        g.st.db.delete_post(id, g.user_id, g.admin).await.map_err(Fail::from)?.map_err(refused)?;
        Self::changed(g).await;
        Ok(true)
    }

    async fn add_comment(&self, ctx: &Context<'_>, input: AddCommentInput) -> async_graphql::Result<Comment> {
        let g = gql(ctx);
        let post = parse_id(&input.post_id).ok_or(Fail::NotFound)?;
        text("content", &input.content, 2000)?;
        let comment = g.st.db.insert_comment(post, g.user_id, &input.content).await.map_err(Fail::from)?;
        let comment = comment.ok_or(Fail::NotFound)?;
        Self::changed(g).await;
        Ok(Comment(comment))
    }

    /// The author or an admin.
    async fn delete_comment(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let g = gql(ctx);
        let id = parse_id(&id).ok_or(Fail::NotFound)?;
        g.st.db.delete_comment(id, g.user_id, g.admin).await.map_err(Fail::from)?.map_err(refused)?;
        Self::changed(g).await;
        Ok(true)
    }
}

/// The first N comments of posts: keys (post id, N), one statement per
/// distinct N in a batch.
pub struct FirstComments(Db);

impl Loader<(i64, i64)> for FirstComments {
    type Value = Vec<CommentRow>;
    type Error = Arc<Fail>;

    async fn load(&self, keys: &[(i64, i64)]) -> Result<HashMap<(i64, i64), Vec<CommentRow>>, Arc<Fail>> {
        let mut by_limit: HashMap<i64, Vec<i64>> = HashMap::new();
        for (post, limit) in keys {
            by_limit.entry(*limit).or_default().push(*post);
        }
        let mut out = HashMap::new();
        for (limit, posts) in by_limit {
            let found = self.0.first_comments(&posts, limit).await.map_err(|e| Arc::new(Fail::from(e)))?;
            out.extend(found.into_iter().map(|(post, comments)| ((post, limit), comments)));
        }
        Ok(out)
    }
}

/// Posts by id, one statement per batch.
pub struct PostsById(Db);

impl Loader<i64> for PostsById {
    type Value = PostRow;
    type Error = Arc<Fail>;

    async fn load(&self, keys: &[i64]) -> Result<HashMap<i64, PostRow>, Arc<Fail>> {
        self.0.posts_by_ids(keys).await.map_err(|e| Arc::new(Fail::from(e)))
    }
}
