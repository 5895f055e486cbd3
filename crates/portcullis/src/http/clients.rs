//! `/v1/admin/clients`: the OAuth client registry, for admins (`admin:clients:*`).
//! Bodies use the RFC 7591 metadata names; a generated secret is in the reply once.

use axum::{
    extract::{Path, Query, State, rejection::QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use portcullis_proto::{ClientView, Page};
use serde::Deserialize;
use serde_json::Value;

use super::{
    AppState,
    error::ApiError,
    extract::{JsonBody, query_error},
    guard::{Can, ClientsRead, ClientsWrite},
};
use crate::{
    clients::ClientMetadata,
    ctx::{Principal, RequestCtx},
};

/// `?cursor=&limit=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    cursor: Option<String>,
    limit: Option<i64>,
}

/// `POST /v1/admin/clients/{id}/rotate-secret` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// Seconds the old secret keeps working (default 0: it stops at once).
    #[serde(default)]
    grace_seconds: u64,
}

/// A client secret is a lasting credential: a user's session mints one only with a
/// recent sign-in, as for API keys (a stolen access token must not become a
/// client). API keys and clients holding the scope are lasting credentials already.
async fn recent_if_session(state: &AppState, ctx: &RequestCtx, who: &Principal) -> Result<(), ApiError> {
    if who.session_id().is_some() {
        state.auth.require_recent(who, ctx.now).await?;
    }
    Ok(())
}

/// `POST /v1/admin/clients`.
pub async fn client_create(
    State(state): State<AppState>,
    ctx: RequestCtx,
    can: Can<ClientsWrite>,
    JsonBody(meta): JsonBody<ClientMetadata>,
) -> Result<Response, ApiError> {
    recent_if_session(&state, &ctx, &can.who).await?;
    let view = state.oauth.client_create(&ctx, &can.who, meta).await?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// `GET /v1/admin/clients`.
pub async fn client_list(
    State(state): State<AppState>,
    _can: Can<ClientsRead>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<axum::Json<Page<ClientView>>, ApiError> {
    let Query(q) = q.map_err(query_error)?;
    let (data, next_cursor) = state.oauth.client_list(q.cursor.as_deref(), q.limit).await?;
    Ok(axum::Json(Page { data, next_cursor }))
}

/// `GET /v1/admin/clients/{id}`.
pub async fn client_get(
    State(state): State<AppState>,
    _can: Can<ClientsRead>,
    Path(id): Path<String>,
) -> Result<axum::Json<ClientView>, ApiError> {
    Ok(axum::Json(state.oauth.client_get(&id).await?))
}

/// `PATCH /v1/admin/clients/{id}`: replaces the metadata fields given.
pub async fn client_update(
    State(state): State<AppState>,
    ctx: RequestCtx,
    can: Can<ClientsWrite>,
    Path(id): Path<String>,
    JsonBody(patch): JsonBody<Value>,
) -> Result<axum::Json<ClientView>, ApiError> {
    // A change may hand out a secret or new keys: a lasting credential.
    recent_if_session(&state, &ctx, &can.who).await?;
    Ok(axum::Json(state.oauth.client_update(&ctx, &can.who, &id, patch).await?))
}

/// `POST /v1/admin/clients/{id}/rotate-secret`.
pub async fn client_rotate_secret(
    State(state): State<AppState>,
    ctx: RequestCtx,
    can: Can<ClientsWrite>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<axum::Json<ClientView>, ApiError> {
    // The body is optional: no body means no grace.
    let body: RotateBody = if body.iter().all(u8::is_ascii_whitespace) {
        RotateBody::default()
    } else {
        crate::validate::parse_json(&body)?
    };
    let grace = body.grace_seconds.min(30 * 86_400);
    let grace_ms = i64::try_from(grace).unwrap_or(0) * 1000;
    recent_if_session(&state, &ctx, &can.who).await?;
    Ok(axum::Json(state.oauth.client_rotate_secret(&ctx, &can.who, &id, grace_ms).await?))
}

/// `DELETE /v1/admin/clients/{id}`: also ends every grant the client holds.
pub async fn client_delete(
    State(state): State<AppState>,
    ctx: RequestCtx,
    can: Can<ClientsWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.oauth.client_delete(&ctx, &can.who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
