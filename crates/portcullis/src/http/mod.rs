//! The HTTP surface: the router, shared state and the middleware every route gets
//! (request ids, tracing without secrets, security headers, timeouts, metrics).
//! Handlers are named `resource_verb` and live in one module per area.

mod admin;
mod api_keys;
mod auth;
mod clients;
mod email;
pub mod error;
pub mod extract;
pub mod guard;
mod me;
mod mfa;
mod oauth;
mod openapi;
mod ops;
mod pages;
mod passkeys;
mod webhooks;
use crate::views;

pub use pages::CookiePolicy;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderName, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use portcullis_proto::ErrorCode;
use tower_http::{request_id::PropagateRequestIdLayer, set_header::SetResponseHeaderLayer, trace::TraceLayer};
use utoipa_axum::{router::OpenApiRouter, routes};

pub use ops::{MetricsAccess, prometheus};

use crate::{admin::Admin, api_keys::ApiKeys, audit::Audit, auth::Auth, config::HttpConfig};

/// What handlers share: one `Arc`, so the clone axum makes for every request and
/// every middleware is one atomic increment, not one per service (that was a tenth
/// of a client-credentials request).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    /// Wraps the services.
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services behind [`AppState`].
pub struct Services {
    /// The authentication service.
    pub auth: Arc<Auth>,
    /// User and role administration.
    pub admin: Arc<Admin>,
    /// API keys.
    pub api_keys: Arc<ApiKeys>,
    /// The audit trail, for guards.
    pub audit: Audit,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    /// Per-client limit of `POST /v1/api-keys/verify`.
    pub verify_limiter: Arc<crate::abuse::Limiter>,
    /// Per-client limit of failed `X-API-Key` authentications.
    pub key_fail_limiter: Arc<crate::abuse::Limiter>,
    /// Per-client limit of failed OAuth client authentications.
    pub client_fail_limiter: Arc<crate::abuse::Limiter>,
    /// The OAuth 2.0 / OpenID Connect provider.
    pub oauth: Arc<crate::oauth::OAuth>,
    /// Cookie names and attributes of the hosted pages.
    pub cookies: CookiePolicy,
    /// Who may read `/metrics`.
    pub metrics_access: MetricsAccess,
    /// Webhook endpoints and their delivery log.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Builds the whole application.
pub fn router(state: AppState, http: &HttpConfig) -> Router {
    let timeout = http.request_timeout.0;
    let (public_docs, _) = public_docs().split_for_parts();
    let (client_calls, _) = client_calls().split_for_parts();
    let (api, _) = api().split_for_parts();
    let mut app = Router::new()
        .merge(public_docs.layer(middleware::from_fn(oauth::cors_public)))
        .merge(client_calls.layer(middleware::from_fn_with_state(state.clone(), oauth::cors_clients)))
        .merge(api)
        .merge(pages())
        .merge(openapi::reference_page())
        .route("/metrics", get(ops::metrics_get))
        .fallback(ops::route_fallback)
        .method_not_allowed_fallback(ops::method_fallback)
        .layer(DefaultBodyLimit::max(http.body_limit))
        .layer(middleware::from_fn_with_state(timeout, request_timeout))
        .layer(middleware::from_fn(ops::track_metrics))
        .layer(middleware::map_response(problem_everywhere))
        .with_state(state);
    if let Some(hsts) = http.hsts
        && let Ok(v) = HeaderValue::from_str(&format!("max-age={}; includeSubDomains", hsts.0.as_secs()))
    {
        app = app.layer(SetResponseHeaderLayer::overriding(header::STRICT_TRANSPORT_SECURITY, v));
    }
    app.layer(SetResponseHeaderLayer::if_not_present(header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .layer(SetResponseHeaderLayer::overriding(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::overriding(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            // The path only: query strings may carry codes or tokens.
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(middleware::map_request(mint_request_id))
}

/// The OpenAPI 3.1 document of every JSON route, as served at `/openapi.json`.
pub fn openapi_document() -> serde_json::Value {
    let mut doc = <openapi::ApiDoc as utoipa::OpenApi>::openapi();
    for group in [public_docs(), client_calls(), api()] {
        doc.merge(group.into_openapi());
    }
    openapi::finish(doc)
}

/// Public documents browsers may read from anywhere.
fn public_docs() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ops::jwks_get))
        .route("/.well-known/jwks.json", axum::routing::options(oauth::preflight))
        .routes(routes!(oauth::openid_configuration_get))
        .route("/.well-known/openid-configuration", axum::routing::options(oauth::preflight))
        .routes(routes!(oauth::oauth_metadata_get))
        .route("/.well-known/oauth-authorization-server", axum::routing::options(oauth::preflight))
}

/// The token and userinfo endpoints, callable from the origins clients registered.
fn client_calls() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(oauth::oauth_token_create))
        .route("/oauth/token", axum::routing::options(oauth::preflight))
        .routes(routes!(oauth::oauth_userinfo_get, oauth::oauth_userinfo_post))
        .route("/oauth/userinfo", axum::routing::options(oauth::preflight))
}

/// Every other JSON route.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(oauth::oauth_introspect))
        .routes(routes!(oauth::oauth_revoke))
        .routes(routes!(clients::client_list, clients::client_create))
        .routes(routes!(clients::client_get, clients::client_update, clients::client_delete))
        .routes(routes!(clients::client_rotate_secret))
        .merge(webhook_routes())
        .merge(account_routes())
        .routes(routes!(api_keys::api_key_create, api_keys::api_key_list))
        .routes(routes!(api_keys::api_key_verify))
        .routes(routes!(api_keys::api_key_revoke))
        .routes(routes!(api_keys::api_key_rotate))
        .routes(routes!(admin::admin_user_list, admin::admin_user_create))
        .routes(routes!(admin::admin_user_get, admin::admin_user_update, admin::admin_user_delete))
        .routes(routes!(admin::admin_user_ban))
        .routes(routes!(admin::admin_email_list))
        .routes(routes!(admin::admin_user_unban))
        .routes(routes!(admin::admin_user_unlock))
        .routes(routes!(mfa::admin_user_mfa_reset))
        .routes(routes!(admin::admin_user_role_grant))
        .routes(routes!(admin::admin_user_role_revoke))
        .routes(routes!(admin::admin_user_sessions_revoke))
        .routes(routes!(admin::audit_list))
        .routes(routes!(admin::role_list, admin::role_create))
        .routes(routes!(admin::role_update, admin::role_delete))
        .routes(routes!(ops::health_get))
        .routes(routes!(ops::ready_get))
        .routes(routes!(openapi::openapi_get))
}

/// The hosted pages (HTML) and their assets: not part of the JSON API's document.
fn pages() -> Router<AppState> {
    Router::new()
        .route("/oauth/authorize", get(pages::authorize_get).post(pages::authorize_post))
        .route("/oauth/signup", get(pages::signup_get).post(pages::signup_post))
        .route("/oauth/signin", get(pages::signin_get))
        .route("/oauth/mfa", post(pages::mfa_post))
        .route("/oauth/passkey/register", post(pages::passkey_register_start))
        .route("/oauth/assets/passkey.js", get(pages::passkey_script))
        .route("/oauth/logout", get(pages::logout).post(pages::logout))
        .route("/oauth/assets/style.css", get(pages::stylesheet))
        .route("/verify-email", get(pages::verify_email_get).post(pages::verify_email_post))
        .route("/forgot-password", get(pages::forgot_password_get).post(pages::forgot_password_post))
        .route("/reset-password", get(pages::reset_password_get).post(pages::reset_password_post))
        .route("/unlock", get(pages::unlock_get).post(pages::unlock_post))
}

/// `/v1/admin/webhooks/…`.
fn webhook_routes() -> OpenApiRouter<AppState> {
    use webhooks::*;
    OpenApiRouter::new()
        .routes(routes!(webhook_list, webhook_create))
        .routes(routes!(webhook_get, webhook_update, webhook_delete))
        .routes(routes!(webhook_rotate_secret))
        .routes(routes!(webhook_test))
        .routes(routes!(webhook_replay))
        .routes(routes!(webhook_delivery_list))
        .routes(routes!(webhook_delivery_get))
        .routes(routes!(webhook_delivery_retry))
}

/// `/v1/auth/*` and `/v1/me/*`: what a user does with their own account.
fn account_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(auth::user_register))
        .routes(routes!(auth::session_login))
        .routes(routes!(auth::session_refresh))
        .routes(routes!(auth::session_logout))
        .routes(routes!(auth::session_reauth))
        .routes(routes!(mfa::login_mfa_verify))
        .routes(routes!(mfa::login_mfa_sms_send))
        .routes(routes!(passkeys::passkey_start))
        .routes(routes!(passkeys::passkey_finish))
        .routes(routes!(email::email_verify))
        .routes(routes!(email::email_resend))
        .routes(routes!(email::password_forgot))
        .routes(routes!(email::password_reset))
        .routes(routes!(me::me_get, me::me_update, me::me_delete))
        .routes(routes!(me::email_change))
        .routes(routes!(me::me_export))
        .routes(routes!(me::session_list))
        .routes(routes!(me::session_revoke))
        .routes(routes!(me::password_change))
        .routes(routes!(mfa::mfa_get))
        .routes(routes!(mfa::totp_start, mfa::totp_delete))
        .routes(routes!(mfa::totp_confirm))
        .routes(routes!(mfa::recovery_codes_create))
        .routes(routes!(mfa::sms_start, mfa::sms_delete))
        .routes(routes!(mfa::sms_confirm))
        .routes(routes!(passkeys::passkey_list))
        .routes(routes!(passkeys::passkey_register_start))
        .routes(routes!(passkeys::passkey_register_finish))
        .routes(routes!(passkeys::passkey_rename, passkeys::passkey_delete))
}

/// Answers 503 `timeout` when a request outlives `http.request_timeout`.
async fn request_timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Timeout, "the request took too long")
            .into_response(),
    }
}

use error::ApiError;

/// Gives every request a fresh id of ours. A client-supplied `X-Request-Id` is
/// replaced, never trusted: it would be stored in audit records and logs, so it could
/// forge correlation or fill the disk with 400 KB headers.
async fn mint_request_id(mut req: Request) -> Request {
    if let Ok(v) = HeaderValue::from_str(&crate::crypto::new_id("req", crate::clock::now_ms())) {
        req.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    req
}

/// The safety net of the problem+json contract: an error answered by a built-in
/// extractor (a path segment that is not UTF-8, a bad query string) arrives here as
/// text/plain and leaves as a problem document with a stable code.
async fn problem_everywhere(res: Response) -> Response {
    let status = res.status();
    // Problems pass; so do the OAuth endpoints' JSON errors and the hosted pages.
    let own_format = res.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.starts_with(b"application/problem+json") || v.starts_with(b"application/json") || v.starts_with(b"text/html")
    });
    if status.as_u16() < 400 || own_format {
        return res;
    }
    let code = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::ValidationFailed,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::REQUEST_TIMEOUT => ErrorCode::Timeout,
        _ => ErrorCode::InternalError,
    };
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let detail = String::from_utf8_lossy(&text).chars().take(300).collect::<String>();
    let detail =
        if detail.trim().is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { detail };
    let mut out = ApiError::new(status, code, detail).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}
