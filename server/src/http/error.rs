//! The one error type of the HTTP layer and its mapping to RFC 9457 problem
//! details. Handlers return `Result<Response, ApiError>`; this is the only
//! place that decides statuses, headers and what a client may see. A 5xx
//! cause is logged with its chain and never sent.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde::Serialize;

/// One invalid field of a request body or query.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    /// The field's name as the client sent it (camelCase).
    pub field: String,
    /// What is wrong, for a person.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 with `errors: [{field, message}]`.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// 400: malformed body or query.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 401 for a missing, malformed, expired, revoked or wrong-type token.
    /// `presented` adds `error="invalid_token"` to the challenge (RFC 6750).
    /// The reason is logged at debug level only: every token failure looks
    /// the same from outside.
    #[error("unauthorized ({reason})")]
    Unauthorized {
        /// Whether a token was presented.
        presented: bool,
        /// Why it was refused (logs only).
        reason: &'static str,
    },
    /// 401 for a wrong email or password: one answer for both.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// 403.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// 404.
    #[error("not found")]
    NotFound,
    /// 405 with `Allow`.
    #[error("method not allowed")]
    MethodNotAllowed(String),
    /// 408: the request (its body, or the whole of it) took longer than
    /// the server waits.
    #[error("request timeout")]
    RequestTimeout,
    /// 409.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// 413.
    #[error("payload too large")]
    PayloadTooLarge,
    /// 415.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// 429 with `Retry-After` in seconds.
    #[error("too many requests")]
    TooManyRequests {
        /// Seconds until a retry can succeed.
        retry_after: u64,
    },
    /// 503 with `Retry-After`: a dependency (PostgreSQL, the hash pool) is
    /// unavailable or saturated. The cause goes to the log.
    #[error("service unavailable: {0:#}")]
    Unavailable(anyhow::Error),
    /// 500: a bug or a broken schema. The cause goes to the log.
    #[error("internal error: {0:#}")]
    Internal(anyhow::Error),
}

impl ApiError {
    /// The status of each variant, in one match.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// 401 for a presented token that was refused.
    pub fn invalid_token(reason: &'static str) -> Self {
        Self::Unauthorized { presented: true, reason }
    }

    /// One validation error.
    pub fn field(field: &str, message: &str) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    fn detail(&self) -> String {
        match self {
            Self::Validation(_) => "The request has invalid fields.".into(),
            Self::BadRequest(m) => m.clone(),
            Self::Unauthorized { presented: false, .. } => "A bearer token is required.".into(),
            Self::Unauthorized { presented: true, .. } => "The token is invalid, expired or revoked.".into(),
            Self::InvalidCredentials => "Wrong email or password.".into(),
            Self::Forbidden(m) => (*m).into(),
            Self::NotFound => "No such resource.".into(),
            Self::MethodNotAllowed(allow) => format!("Allowed methods: {allow}."),
            Self::RequestTimeout => "The request was not completed in time.".into(),
            Self::Conflict(m) => (*m).into(),
            Self::PayloadTooLarge => "The request body exceeds 64 KiB.".into(),
            Self::UnsupportedMediaType => "The request body must be Content-Type: application/json.".into(),
            Self::TooManyRequests { retry_after } => {
                format!("Too many attempts; retry in {retry_after} s.")
            }
            Self::Unavailable(_) => "A dependency is unavailable; retry shortly.".into(),
            Self::Internal(_) => "An unexpected error occurred.".into(),
        }
    }

    /// The problem+json response. Logs 5xx causes here, once.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        match &self {
            Self::Internal(e) => tracing::error!(error = format!("{e:#}"), "request failed"),
            Self::Unavailable(e) => {
                tracing::warn!(error = format!("{e:#}"), "dependency unavailable")
            }
            Self::Unauthorized { reason, .. } => tracing::debug!(reason, "token refused"),
            _ => {}
        }
        #[derive(Serialize)]
        struct Problem<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            title: &'a str,
            status: u16,
            detail: String,
            #[serde(skip_serializing_if = "Option::is_none")]
            errors: Option<&'a [FieldError]>,
        }
        let errors = match &self {
            Self::Validation(errs) => Some(errs.as_slice()),
            _ => None,
        };
        let body = serde_json::to_vec(&Problem {
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: self.detail(),
            errors,
        })
        .unwrap_or_default();
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        match &self {
            Self::Unauthorized { presented: true, .. } => {
                h.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer error=\"invalid_token\""));
            }
            Self::Unauthorized { presented: false, .. } | Self::InvalidCredentials => {
                h.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::TooManyRequests { retry_after } => {
                h.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Self::Unavailable(_) => {
                h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::RequestTimeout => {
                h.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
            }
            Self::MethodNotAllowed(allow) => {
                if let Ok(v) = HeaderValue::from_str(allow) {
                    h.insert(hyper::header::ALLOW, v);
                }
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_token_carries_the_rfc6750_challenge() {
        let r = ApiError::invalid_token("expired").into_response();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer error=\"invalid_token\"");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/problem+json");
        let r = ApiError::Unauthorized { presented: false, reason: "missing" }.into_response();
        assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let r = ApiError::Internal(anyhow::anyhow!("relation \"tasks\" does not exist")).into_response();
        let body = format!("{:?}", r.body());
        assert!(!body.contains("relation"));
        assert_eq!(r.status(), 500);
    }
}
