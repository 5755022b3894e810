//! `POST /graphql`: the blog API (API.md, "GraphQL") on async-graphql,
//! driven from our pipeline.
//!
//! The route is declared `Access::User` in the route table, so the bearer
//! is verified and revocation-checked before this module sees the request,
//! exactly as for REST routes; an operation never runs for a refused token.
//! Being a `POST`, the request runs as a job (`app`): a mutation that has
//! begun commits and invalidates the posts cache even if its client hangs up.
//!
//! # GraphQL over HTTP
//! - A body that is not `{query, variables?, operationName?, extensions?}`
//!   (another member, a wrong type) is a 400 with `{errors}`; a body that is
//!   not JSON at all, too large or too slow gets the same problem+json as
//!   every route (415, 413, 408).
//! - A document that does not parse or validate (variables included), or
//!   is deeper than [`MAX_DEPTH`] or costlier than [`MAX_COMPLEXITY`], is a
//!   400 with `{errors}`; nothing was executed.
//! - An executed operation is a 200 with `{data, errors?}`, as
//!   `application/graphql-response+json` when `Accept` asks for it, else
//!   `application/json`.
//! - PostgreSQL unavailable while executing is a 503 problem with
//!   `Retry-After`, as for every route, not a 200 with an error.
//!
//! Every error carries `extensions.code`: `BAD_USER_INPUT` (with
//! `extensions.field`), `NOT_FOUND`, `FORBIDDEN`, `QUERY_TOO_COMPLEX`,
//! `GRAPHQL_PARSE_FAILED`, `GRAPHQL_VALIDATION_FAILED`, `BAD_REQUEST` or
//! `INTERNAL_SERVER_ERROR`.

pub mod schema;

use crate::auth::token::Role;
use crate::http::error::{ApiError, FieldError};
use crate::http::{JsonBody, Resp, json_bytes};
use crate::state::{AppState, Caller};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use async_graphql::{EmptySubscription, ErrorExtensions, Schema, ServerError, Variables};
use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use schema::{Gql, Mutation, Query};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

/// Deepest document accepted (API.md: deeper than 10 levels is refused).
pub const MAX_DEPTH: usize = 10;
/// Costliest document accepted: every field costs 1, and a list field
/// multiplies what is under it by its `first`. The contract's page shape
/// (`posts(first: 50)` with authors, counts and `comments(first: 5)`) costs
/// about 1,300; a page of 50 posts with 50 comments each about 12,000.
pub const MAX_COMPLEXITY: usize = 20_000;

/// The executable schema.
pub type BlogSchema = Schema<Query, Mutation, EmptySubscription>;

/// The schema, built once; introspection off in production.
pub fn build_schema(production: bool) -> BlogSchema {
    let b = Schema::build(Query, Mutation, EmptySubscription).limit_depth(MAX_DEPTH).limit_complexity(MAX_COMPLEXITY);
    if production { b.disable_introspection() } else { b }.finish()
}

/// The schema in SDL.
pub fn sdl() -> String {
    build_schema(false).sdl()
}

/// Why a resolver failed, mapped to `extensions.code` in one place.
pub enum Fail {
    /// `BAD_USER_INPUT` naming the argument or input field.
    Input {
        /// The field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// `NOT_FOUND`.
    NotFound,
    /// `FORBIDDEN`.
    Forbidden,
    /// PostgreSQL unavailable: the request answers 503.
    Unavailable(String),
    /// A bug; the cause is logged, not sent.
    Internal(anyhow::Error),
}

impl Fail {
    /// A `BAD_USER_INPUT`.
    pub fn input(field: &str, message: &str) -> Self {
        Self::Input { field: field.to_owned(), message: message.to_owned() }
    }
}

/// Marks the error that makes the request a 503.
const UNAVAILABLE: &str = "SERVICE_UNAVAILABLE";

impl From<Fail> for async_graphql::Error {
    fn from(f: Fail) -> Self {
        let (message, code, field) = match f {
            Fail::Input { field, message } => (format!("{field} {message}"), "BAD_USER_INPUT", Some(field)),
            Fail::NotFound => ("No such object.".to_owned(), "NOT_FOUND", None),
            Fail::Forbidden => ("Not allowed for this user.".to_owned(), "FORBIDDEN", None),
            Fail::Unavailable(cause) => {
                tracing::warn!(error = cause, "dependency unavailable");
                ("A dependency is unavailable; retry shortly.".to_owned(), UNAVAILABLE, None)
            }
            Fail::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "graphql resolver failed");
                ("An unexpected error occurred.".to_owned(), "INTERNAL_SERVER_ERROR", None)
            }
        };
        async_graphql::Error::new(message).extend_with(|_, ext| {
            ext.set("code", code);
            if let Some(f) = field {
                ext.set("field", f);
            }
        })
    }
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Unavailable(cause) => Self::Unavailable(format!("{cause:#}")),
            other => Self::Internal(anyhow::anyhow!("{other}")),
        }
    }
}

impl From<crate::db::DbError> for Fail {
    fn from(e: crate::db::DbError) -> Self {
        ApiError::from(e).into()
    }
}

/// A loader's error is shared by every key of its batch.
impl From<Arc<Fail>> for Fail {
    fn from(f: Arc<Fail>) -> Self {
        match &*f {
            Self::Input { field, message } => Self::Input { field: field.clone(), message: message.clone() },
            Self::NotFound => Self::NotFound,
            Self::Forbidden => Self::Forbidden,
            Self::Unavailable(c) => Self::Unavailable(c.clone()),
            Self::Internal(e) => Self::Internal(anyhow::anyhow!("{e:#}")),
        }
    }
}

/// The body of a GraphQL-over-HTTP request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GqlBody {
    query: String,
    #[serde(default)]
    variables: Option<serde_json::Map<String, Value>>,
    #[serde(default, rename = "operationName")]
    operation_name: Option<String>,
    /// Accepted (the contract lists it) and type-checked, not used.
    #[serde(default, rename = "extensions")]
    _extensions: Option<serde_json::Map<String, Value>>,
}

/// One `{errors}` entry of a request that was not executed.
fn request_error(message: &str, code: &str) -> Value {
    json!({"message": message, "extensions": {"code": code}})
}

fn answer(status: StatusCode, body: &Value, graphql_response: bool) -> Result<Resp, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(|e| ApiError::Internal(e.into()))?;
    let mut r = json_bytes(status, Bytes::from(bytes));
    if graphql_response {
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/graphql-response+json"));
    }
    Ok(r)
}

/// A request refused before any operation could be named or run: 400
/// `{errors}`, counted as an anonymous failed query.
fn refused(st: &AppState, errors: Vec<Value>, graphql_response: bool) -> Result<Resp, ApiError> {
    st.metrics.graphql_operation("anonymous", "query", false);
    answer(StatusCode::BAD_REQUEST, &json!({ "errors": errors }), graphql_response)
}

/// Whether `Accept` asks for `application/graphql-response+json`.
pub fn wants_graphql_response(accept: Option<&HeaderValue>) -> bool {
    accept.and_then(|v| v.to_str().ok()).is_some_and(|a| {
        a.split(',').any(|t| t.split(';').next().is_some_and(|t| t.trim() == "application/graphql-response+json"))
    })
}

/// `POST /graphql`.
pub async fn handle<B>(
    st: &Arc<AppState>,
    schema: &BlogSchema,
    caller: Caller,
    graphql_response: bool,
    body: JsonBody<B>,
) -> Result<Resp, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let body: GqlBody = match st.read_json(body).await {
        Ok(b) => b,
        Err(ApiError::Validation(errs)) => {
            let errors: Vec<Value> = errs.iter().map(|FieldError { field, message }| {
                json!({"message": format!("{field}: {message}"), "extensions": {"code": "BAD_REQUEST", "field": field}})
            }).collect();
            return refused(st, errors, graphql_response);
        }
        Err(ApiError::BadRequest(m)) => {
            return refused(st, vec![request_error(&m, "BAD_REQUEST")], graphql_response);
        }
        Err(e) => return Err(e),
    };
    let mut request = async_graphql::Request::new(body.query);
    if let Some(v) = body.variables {
        request = request.variables(Variables::from_json(Value::Object(v)));
    }
    if let Some(name) = &body.operation_name {
        request = request.operation_name(name);
    }
    // Parse once here (the schema reuses it) to learn the operation's name
    // and type for the metric, and to answer a parse error as a 400.
    let (name, kind) = match request.parsed_query() {
        Err(e) => {
            return refused(st, vec![request_error(&e.message, "GRAPHQL_PARSE_FAILED")], graphql_response);
        }
        Ok(doc) => operation_label(doc, body.operation_name.as_deref()),
    };
    let gql = Gql::new(Arc::clone(st), caller.principal.user_id, caller.principal.role == Role::Admin, &caller.checked);
    let mut response = schema.execute(request.data(gql)).await;
    // Executed: some data, or an error from a resolver (it has a path).
    // Otherwise the document or its variables were refused up front.
    let executed =
        !matches!(response.data, async_graphql::Value::Null) || response.errors.iter().any(|e| !e.path.is_empty());
    for e in &mut response.errors {
        add_code(e, executed);
    }
    st.metrics.graphql_operation(&name, kind, response.errors.is_empty());
    if response.errors.iter().any(|e| code_of(e) == Some(UNAVAILABLE)) {
        return Err(ApiError::Unavailable(anyhow::anyhow!("PostgreSQL unavailable during a GraphQL operation")));
    }
    if executed {
        let body = serde_json::to_value(&response).map_err(|e| ApiError::Internal(e.into()))?;
        answer(StatusCode::OK, &body, graphql_response)
    } else {
        let body = json!({ "errors": response.errors });
        answer(StatusCode::BAD_REQUEST, &body, graphql_response)
    }
}

/// The operation a document runs, as the metric labels it: its name (or
/// `anonymous`) and its type.
fn operation_label(doc: &ExecutableDocument, wanted: Option<&str>) -> (String, &'static str) {
    let op = match (&doc.operations, wanted) {
        (DocumentOperations::Single(op), _) => Some((wanted.map(str::to_owned), op)),
        (DocumentOperations::Multiple(ops), Some(n)) => {
            ops.iter().find(|(k, _)| k.as_str() == n).map(|(k, op)| (Some(k.to_string()), op))
        }
        // One named operation needs no operationName.
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.iter().next().map(|(k, op)| (Some(k.to_string()), op))
        }
        (DocumentOperations::Multiple(_), None) => None,
    };
    let kind = match op.as_ref().map(|(_, op)| op.node.ty) {
        Some(OperationType::Mutation) => "mutation",
        Some(OperationType::Subscription) => "subscription",
        _ => "query",
    };
    (op.and_then(|(n, _)| n).unwrap_or_else(|| "anonymous".to_owned()), kind)
}

fn code_of(e: &ServerError) -> Option<&str> {
    match e.extensions.as_ref().and_then(|x| x.get("code")) {
        Some(async_graphql::Value::String(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// Gives every error an `extensions.code`: resolvers set theirs; what
/// async-graphql refused before executing is classified by its message.
fn add_code(e: &mut ServerError, executed: bool) {
    if code_of(e).is_some() {
        return;
    }
    let field = input_field(&e.message);
    let code = if executed {
        "INTERNAL_SERVER_ERROR"
    } else if e.message == "Query is nested too deep." || e.message == "Query is too complex." {
        "QUERY_TOO_COMPLEX"
    } else if field.is_some() {
        "BAD_USER_INPUT"
    } else {
        "GRAPHQL_VALIDATION_FAILED"
    };
    let ext = e.extensions.get_or_insert_with(Default::default);
    ext.set("code", code);
    if let (Some(f), false) = (field, executed) {
        ext.set("field", f);
    }
}

/// The argument or variable a refused input names: `Invalid value for
/// argument "first", ...` or `Variable "$f" ...` (async-graphql's wording).
/// Only such errors are `BAD_USER_INPUT`, so each carries its field.
fn input_field(message: &str) -> Option<String> {
    let rest =
        message.strip_prefix("Invalid value for argument \"").or_else(|| message.strip_prefix("Variable \"$"))?;
    rest.split('"').next().filter(|f| !f.is_empty()).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    #[test]
    fn refused_inputs_name_their_field() {
        assert_eq!(
            super::input_field(r#"Invalid value for argument "first", expected type "Int""#).as_deref(),
            Some("first")
        );
        assert_eq!(super::input_field(r#"Variable "$f" is not defined"#).as_deref(), Some("f"));
        assert_eq!(super::input_field(r#"Expected input type "Int", found "x"."#), None);
    }

    #[test]
    fn docs_schema_graphql_is_the_served_schema() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/schema.graphql");
        let kept = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            kept == super::sdl(),
            "docs/schema.graphql is not the schema; regenerate it: \
             cargo run -q -p tollgate -- --graphql-schema > docs/schema.graphql"
        );
    }
}
