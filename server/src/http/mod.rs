//! The HTTP layer: the listener and connection handling (`server`), routing
//! by method and template (`router`), the error type (`error`), and the
//! request and response helpers below that every handler uses.

pub mod error;
pub mod router;
pub mod server;

use crate::http::error::ApiError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

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

/// Whether the request declares a JSON body (`application/json`, any
/// parameters such as `charset=utf-8`).
fn is_json<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// 413 when `Content-Length` declares more than [`MAX_BODY`]. The request
/// pipeline (`AppState::dispatch`) calls it for every routed request
/// (API.md: "Bodies above 64 KiB get 413"), before any handler reads a body.
pub fn check_declared_length<B>(req: &Request<B>) -> Result<(), ApiError> {
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) { Err(ApiError::PayloadTooLarge) } else { Ok(()) }
}

/// Reads and decodes a JSON body: 415 without the JSON content type, 413
/// when the body grows past [`MAX_BODY`] while read (chunked bodies; a
/// declared `Content-Length` above it was refused by
/// [`check_declared_length`] before the handler ran), 400 for malformed
/// JSON, wrong types and unknown fields (the target types deny them).
pub async fn read_json<T, B>(req: Request<B>) -> Result<T, ApiError>
where
    T: DeserializeOwned,
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if !is_json(&req) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::PayloadTooLarge);
        }
        Err(e) => {
            return Err(ApiError::BadRequest(format!("could not read the request body: {e}")));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// The bearer token of `Authorization`, if the request has one.
pub fn bearer<B>(req: &Request<B>) -> Result<&str, ApiError> {
    let missing = ApiError::Unauthorized { presented: false, reason: "no bearer token" };
    let value = req.headers().get(AUTHORIZATION).ok_or(missing)?;
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
