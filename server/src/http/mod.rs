//! The HTTP layer: the listener and connection handling (`server`), routing
//! by method and template (`router`), the error type (`error`), the OpenAPI
//! document of the routes (`openapi`), times as the API writes them
//! (`time`), the threads that answer connections (`lanes`), and the
//! request and response helpers below that every handler uses.

pub mod error;
pub mod lanes;
pub mod openapi;
pub mod router;
pub mod server;
pub mod time;

use crate::http::error::{ApiError, FieldError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// Largest accepted request body (API.md: above 64 KiB is a 413).
pub const MAX_BODY: usize = 64 * 1024;

/// Every response body: one contiguous buffer.
pub type Body = Full<Bytes>;
/// Every response.
pub type Resp = Response<Body>;

static JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A JSON response from already-encoded bytes (a cache hit sends these as
/// they were stored).
pub fn json_bytes(status: StatusCode, body: Bytes) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, JSON.clone());
    r
}

/// A JSON response.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Result<Resp, ApiError> {
    let body = serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(json_bytes(status, Bytes::from(body)))
}

/// A response without a body.
pub fn empty(status: StatusCode) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// A request body and whether the request declared it JSON: all a handler
/// gets of a request it reads a body from (the pipeline has looked at the
/// rest).
pub struct JsonBody<B> {
    json: bool,
    body: B,
}

impl<B> JsonBody<B> {
    /// The body of a request with these headers.
    pub fn new(headers: &HeaderMap, body: B) -> Self {
        Self { json: is_json(headers), body }
    }
}

/// Whether the headers declare a JSON body (`application/json`, any
/// parameters such as `charset=utf-8`).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// 413 when `Content-Length` declares more than [`MAX_BODY`]. The request
/// pipeline (`AppState::dispatch`) calls it for every routed request
/// (API.md: "Bodies above 64 KiB get 413"), before any handler reads a body.
pub fn check_declared_length(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) { Err(ApiError::PayloadTooLarge) } else { Ok(()) }
}

/// Reads and decodes a JSON body: 415 without the JSON content type, 413
/// when the body grows past [`MAX_BODY`] while read (chunked bodies; a
/// declared `Content-Length` above it was refused by
/// [`check_declared_length`] before the handler ran), 408 when the body is
/// not complete within `timeout` (a client that stops sending), 400 for
/// malformed JSON, and 400 with `errors[]` naming the field for a wrong
/// type, a missing field or an unknown one (the target types deny them).
pub async fn read_json<T, B>(body: JsonBody<B>, timeout: Duration) -> Result<T, ApiError>
where
    T: DeserializeOwned,
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if !body.json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let collected = tokio::time::timeout(timeout, Limited::new(body.body, MAX_BODY).collect())
        .await
        .map_err(|_| ApiError::RequestTimeout)?;
    let bytes = match collected {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::PayloadTooLarge);
        }
        Err(e) => {
            return Err(ApiError::BadRequest(format!("could not read the request body: {e}")));
        }
    };
    decode_json(&bytes)
}

/// Decodes a JSON document into `T`, naming the field of a data error.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.classify() != serde_json::error::Category::Data {
            return ApiError::BadRequest(format!("invalid JSON body: {inner}"));
        }
        let text = inner.to_string();
        let message = text.split(" at line ").next().unwrap_or(&text);
        // Missing and unknown fields are reported at the enclosing object;
        // serde names the field in backticks.
        let named = message.split('`').nth(1).filter(|_| message.contains(" field `"));
        let field = match (path.as_str(), named) {
            (".", Some(f)) => f.to_owned(),
            (p, Some(f)) if !p.ends_with(f) => format!("{p}.{f}"),
            (p, _) => p.to_owned(),
        };
        ApiError::Validation(vec![FieldError::new(field, message)])
    })?;
    de.end().map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

/// Adds an error for `field` if `value` holds U+0000, which no text field
/// accepts (PostgreSQL's text cannot store it either).
pub fn check_text(field: &str, value: &str, errs: &mut Vec<FieldError>) {
    if value.contains('\0') {
        errs.push(FieldError::new(field, "may not contain U+0000"));
    }
}

/// The bearer token of `Authorization`, if the request has one.
pub fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let missing = ApiError::Unauthorized { presented: false, reason: "no bearer token" };
    let value = headers.get(AUTHORIZATION).ok_or(missing)?;
    let value = value.to_str().map_err(|_| ApiError::invalid_token("authorization header is not ASCII"))?;
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::invalid_token("malformed authorization header"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized { presented: false, reason: "not a bearer scheme" });
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(ApiError::Unauthorized { presented: false, reason: "empty bearer token" });
    }
    Ok(token)
}

/// Serde helper: a present field, `null` included, becomes `Some(...)`;
/// with `#[serde(default)]` an absent one stays `None`. Tells "clear this
/// field" (null) from "leave it" (absent) in PATCH bodies.
pub fn present<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
where
    T: serde::Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    T::deserialize(d).map(Some)
}
