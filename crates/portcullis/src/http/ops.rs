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
use portcullis_proto::{ErrorCode, Health, Problem};

use super::{AppState, error::ApiError};

/// Tells whether the process is up and serving (liveness).
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "`{\"status\": \"ok\"}`.", body = Health)))]
pub async fn health_get() -> impl IntoResponse {
    axum::Json(Health { status: "ok".into() })
}

/// Tells whether requests can be served: the database answers (readiness).
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses(
        (status = 200, description = "`{\"status\": \"ready\"}`.", body = Health),
        (status = 503, description = "Not ready: the database is unreachable (code `internal_error`); or the server is busy \
            or the request took too long (`overloaded`, `timeout`).", content_type = "application/problem+json", body = Problem),
    ))]
pub async fn ready_get(State(state): State<AppState>) -> Response {
    match state.auth.db().ping().await {
        Ok(()) => axum::Json(Health { status: "ready".into() }).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::InternalError, "the database is unreachable")
                .into_response()
        }
    }
}

/// Lists the public keys that verify the tokens this server signs (RFC 7517).
///
/// Retired keys stay published while tokens they signed may live, and the next key
/// is published before it signs. Any origin may read it (CORS `*`).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "ops",
    responses((status = 200, description = "A JWK Set: `{\"keys\": [...]}`, each key a public JWK (RFC 7517 §4) of kty `RSA`, \
        `EC` (P-256) or `OKP` (Ed25519) with its `kid` (the RFC 7638 thumbprint), `alg` and `use` (`sig`).", content_type = "application/json",
        body = portcullis_proto::Jwks,
        headers(("Cache-Control" = String, description = "`public, max-age=60`.")))))]
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

/// Who may read `/metrics` (it shows sign-in and failure counts).
#[derive(Clone, Default)]
pub struct MetricsAccess {
    /// `ops.metrics_token`: a bearer token that opens it to any address.
    pub token: Option<crate::crypto::Secret>,
    /// `ops.metrics_public`: open to anyone.
    pub public: bool,
}

/// `GET /metrics`: Prometheus text format, for loopback callers (the address after
/// `security.trusted_proxies`, and no forwarding headers: a local reverse proxy that
/// is not listed as trusted must not open it to the world), for callers presenting
/// `ops.metrics_token`, or for anyone with `ops.metrics_public`.
pub async fn metrics_get(
    State(state): State<AppState>,
    ctx: crate::ctx::RequestCtx,
    headers: axum::http::HeaderMap,
) -> Response {
    let access = &state.metrics_access;
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let allowed = if let Some(given) = bearer {
        let Some(expected) = &access.token else {
            return ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken, "no metrics token is configured")
                .into_response();
        };
        if !crate::crypto::ct_eq(given.as_bytes(), expected.expose().as_bytes()) {
            return ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken, "wrong metrics token")
                .into_response();
        }
        true
    } else {
        let forwarded = ["x-forwarded-for", "forwarded", "x-real-ip"].iter().any(|h| headers.contains_key(*h));
        let loopback =
            ctx.ip.as_deref().and_then(|ip| ip.parse::<std::net::IpAddr>().ok()).is_some_and(|ip| ip.is_loopback());
        access.public || (loopback && !forwarded)
    };
    if !allowed {
        return if access.token.is_some() {
            ApiError::missing_token().into_response()
        } else {
            ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "metrics are served to loopback callers only (set ops.metrics_token or ops.metrics_public)",
            )
            .into_response()
        };
    }
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
