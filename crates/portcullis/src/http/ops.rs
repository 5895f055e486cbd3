//! Operational endpoints (`/healthz`, `/readyz`, `/metrics`), the JWKS, and the
//! fallbacks that keep unknown routes and methods inside the problem+json contract.

use std::sync::OnceLock;

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use portcullis_proto::ErrorCode;

use super::{AppState, error::ApiError};

/// `GET /healthz`: the process is up and serving.
pub async fn health_get() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: the database answers, so requests can be served.
pub async fn ready_get(State(state): State<AppState>) -> Response {
    match state.auth.db().ping().await {
        Ok(()) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::InternalError, "the database is unreachable")
                .into_response()
        }
    }
}

/// `GET /.well-known/jwks.json`: the public keys that verify our tokens.
pub async fn jwks_get(State(state): State<AppState>) -> Response {
    let body = state.auth.tokens().keys().ring().jwks();
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // Short enough that a rotation reaches caches well before the old key retires.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
    res
}

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder once per process (tests run many servers).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed");
                None
            }
        })
        .as_ref()
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics_get() -> Response {
    let text = prometheus().map(|h| h.render()).unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Counts requests and their latency by route template and status.
pub async fn track_metrics(req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    // A fixed label set: arbitrary method names must not mint new series (memory).
    let method: &'static str = match *req.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let start = std::time::Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("portcullis_http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("portcullis_http_request_duration_seconds", "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    res
}

/// Unknown route: 404 problem.
pub async fn route_fallback() -> ApiError {
    ApiError::not_found("no such route")
}

/// Known route, wrong method: 405 problem.
pub async fn method_fallback() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed, "this route does not accept that method")
}
