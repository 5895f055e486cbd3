//! `/v1/api-keys…`: a user's own machine credentials, and verification for other
//! services. Keys are looked up with their owner, so another user's key id is 404.

use std::time::Duration;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use portcullis_proto::{
    ApiKey, ApiKeyCreateRequest, ApiKeyCreated, ApiKeyRotateRequest, ApiKeyVerifyRequest, ApiKeyVerifyResponse,
    FieldError, Page,
};
use serde::Deserialize;
use serde_json::Value;

use super::{
    AppState,
    error::ApiError,
    extract::{JsonBody, RecentSession, SessionAuthed},
    guard::{Can, KeysVerify},
    openapi::{Forbidden, NotFound, ReauthRequired},
    views::api_key_view,
};
use crate::{clock::rfc3339, ctx::RequestCtx, units::HumanDuration};

/// Reads a duration given as seconds (`3600`) or as text (`"30d"`).
fn duration_field(field: &str, v: Option<Value>) -> Result<Option<Duration>, ApiError> {
    let bad = |msg: &str| {
        ApiError::validation(vec![FieldError { field: field.into(), code: "invalid".into(), message: msg.into() }])
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(s) if s <= 100 * 365 * 86_400 => Ok(Some(Duration::from_secs(s))),
            _ => Err(bad("must be a whole number of seconds, at most 100 years")),
        },
        Some(Value::String(s)) => s
            .parse::<HumanDuration>()
            .ok()
            .filter(|d| d.0 <= Duration::from_secs(100 * 365 * 86_400))
            .map(|d| Some(d.0))
            .ok_or_else(|| bad("must be seconds or a duration like 900s, 15m, 12h, 30d")),
        Some(_) => Err(bad("must be seconds or a duration like 900s, 15m, 12h, 30d")),
    }
}

/// Mints an API key for the caller, with at most the scopes they hold; needs a
/// recent sign-in.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys",
    request_body = ApiKeyCreateRequest,
    responses(
        (status = 201, description = "The key; `key` is its secret, shown this once.", body = ApiKeyCreated),
        (status = 403, response = ReauthRequired),
    ),
    security(("bearer" = [])))]
pub async fn api_key_create(
    State(state): State<AppState>,
    ctx: RequestCtx,
    RecentSession(who): RecentSession,
    JsonBody(req): JsonBody<ApiKeyCreateRequest>,
) -> Result<Response, ApiError> {
    let expires_in = duration_field("expires_in", req.expires_in)?;
    if expires_in.is_some_and(|d| d.is_zero()) {
        return Err(ApiError::validation(vec![FieldError {
            field: "expires_in".into(),
            code: "invalid".into(),
            message: "must be positive".into(),
        }]));
    }
    let (row, secret) = state.api_keys.create(&ctx, &who, &req.name, &req.scopes, expires_in).await?;
    let body = ApiKeyCreated { api_key: api_key_view(&row), key: secret.expose().to_owned() };
    let mut res = (StatusCode::CREATED, Json(body)).into_response();
    res.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    Ok(res)
}

/// Paging query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Lists the caller's API keys (never their secrets).
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys", params(PageQuery),
    responses((status = 200, description = "The caller's keys, newest first.", body = Page<ApiKey>), (status = 403, response = Forbidden)),
    security(("bearer" = [])))]
pub async fn api_key_list(
    State(state): State<AppState>,
    SessionAuthed(who): SessionAuthed,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<ApiKey>>, ApiError> {
    let Query(q) = query.map_err(super::extract::query_error)?;
    let (keys, next_cursor) = state.api_keys.list(&who, q.cursor.as_deref(), q.limit).await?;
    Ok(Json(Page { data: keys.iter().map(api_key_view).collect(), next_cursor }))
}

/// Revokes one of the caller's API keys.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path, description = "The key's id.")),
    responses((status = 204, description = "Revoked; it stops working at once."), (status = 403, response = Forbidden), (status = 404, response = NotFound)),
    security(("bearer" = [])))]
pub async fn api_key_revoke(
    State(state): State<AppState>,
    ctx: RequestCtx,
    SessionAuthed(who): SessionAuthed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.api_keys.revoke(&ctx, &who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replaces an API key's secret; the old one may keep working for a grace period.
///
/// The body is optional.
#[utoipa::path(post, path = "/v1/api-keys/{id}/rotate", tag = "api-keys",
    params(("id" = String, Path, description = "The key's id.")),
    request_body(content = Option<ApiKeyRotateRequest>, description = "Optional: how long the old secret keeps working."),
    responses(
        (status = 200, description = "The new secret, shown this once.", body = ApiKeyCreated),
        (status = 403, response = ReauthRequired),
        (status = 404, response = NotFound),
    ),
    security(("bearer" = [])))]
pub async fn api_key_rotate(
    State(state): State<AppState>,
    ctx: RequestCtx,
    RecentSession(who): RecentSession,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: ApiKeyRotateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ApiKeyRotateRequest::default()
    } else {
        crate::validate::parse_json(&body)?
    };
    let grace = duration_field("grace_period", req.grace_period)?.unwrap_or_default();
    let (row, secret) = state.api_keys.rotate(&ctx, &who, &id, grace).await?;
    let body = ApiKeyCreated { api_key: api_key_view(&row), key: secret.expose().to_owned() };
    let mut res = Json(body).into_response();
    res.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    Ok(res)
}

/// Tells a resource server whether an API key is live, whose it is and what it may
/// do; for callers holding `api_keys:verify`.
#[utoipa::path(post, path = "/v1/api-keys/verify", tag = "api-keys",
    request_body = ApiKeyVerifyRequest,
    responses(
        (status = 200, description = "Whether the key is live, and if so whose and with which scopes (RFC 7662 style).", body = ApiKeyVerifyResponse),
        (status = 403, response = Forbidden),
    ),
    security(("bearer" = ["api_keys:verify"]), ("api_key" = ["api_keys:verify"])))]
pub async fn api_key_verify(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<KeysVerify>,
    JsonBody(req): JsonBody<ApiKeyVerifyRequest>,
) -> Result<Json<ApiKeyVerifyResponse>, ApiError> {
    // Counted per verifier (its key, or its user), not per address: a busy
    // resource server is one caller, and callers behind one address are many.
    let verifier = format!("verifier:{}", who.actor());
    if let Err(secs) = state.verify_limiter.hit_reserved(&verifier, ctx.route(), ctx.now).await {
        return Err(crate::auth::AuthError::RateLimited(secs).into());
    }
    let reply = match state.api_keys.verify(&ctx, &who, &req.key).await {
        Some(grant) => ApiKeyVerifyResponse {
            active: true,
            key_id: Some(grant.key.id),
            owner: Some(grant.key.owner_id),
            scopes: Some(grant.effective_scopes),
            expires_at: Some(grant.key.expires_at.map(rfc3339)),
        },
        None => ApiKeyVerifyResponse { active: false, key_id: None, owner: None, scopes: None, expires_at: None },
    };
    Ok(Json(reply))
}
