//! Operational routes: `/healthz` (the process serves), `/readyz` (its
//! dependencies answer: 503 without PostgreSQL, Redis down only reported),
//! `/metrics` (Prometheus text).

use crate::http::error::ApiError;
use crate::http::{Resp, json, json_bytes};
use crate::state::AppState;
use crate::trust::Verdict;
use bytes::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;

/// `GET /healthz`.
pub fn healthz() -> Resp {
    json_bytes(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
}

/// `GET /readyz`.
pub async fn readyz(st: &AppState) -> Result<Resp, ApiError> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Ready {
        status: &'static str,
        postgres: &'static str,
        redis: &'static str,
        /// Whether Redis's configuration lets it answer revocation checks,
        /// and why not (`crate::trust`); reported, not fatal.
        redis_trust: Verdict,
    }
    let ping = redis::cmd("PING").to_owned();
    let (pg, redis) = tokio::join!(st.db.ping(), st.kv.run::<String, _>("ping", &ping));
    let up = |ok: bool| if ok { "up" } else { "down" };
    let body = Ready {
        status: if pg.is_ok() { "ready" } else { "unavailable" },
        postgres: up(pg.is_ok()),
        redis: up(redis.is_ok()),
        redis_trust: st.trust.verdict(),
    };
    let status = if pg.is_ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json(status, &body)
}

/// `GET /metrics`.
pub fn metrics(st: &AppState) -> Resp {
    let body = st.metrics.render(&[("postgres", st.db.state()), ("redis", st.kv.state())]);
    let mut r = Response::new(http_body_util::Full::new(Bytes::from(body)));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    r
}
