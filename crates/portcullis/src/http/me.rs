//! `/v1/me*`: the signed-in user's own account and sessions. Every object is looked
//! up together with its owner, so another user's id answers 404 (ASVS 4.2.1).

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use portcullis_proto::{MeUpdateRequest, Page, PasswordChangeRequest, Session, User};

use super::{
    AppState,
    error::ApiError,
    extract::{Authed, JsonBody, SessionAuthed},
    views::{session_view, user_view},
};
use crate::{crypto::Secret, ctx::RequestCtx};

/// `GET /v1/me`.
pub async fn me_get(State(state): State<AppState>, Authed(who): Authed) -> Result<Json<User>, ApiError> {
    Ok(Json(user_view(&state.auth.me(&who).await?)))
}

/// `PATCH /v1/me`: name and `unsafe_metadata` only.
pub async fn me_update(
    State(state): State<AppState>,
    ctx: RequestCtx,
    SessionAuthed(who): SessionAuthed,
    JsonBody(req): JsonBody<MeUpdateRequest>,
) -> Result<Json<User>, ApiError> {
    let user = state.auth.me_update(&ctx, &who, req.name, req.unsafe_metadata).await?;
    Ok(Json(user_view(&user)))
}

/// `GET /v1/me/sessions`.
pub async fn session_list(
    State(state): State<AppState>,
    ctx: RequestCtx,
    SessionAuthed(who): SessionAuthed,
    query: Result<axum::extract::Query<super::api_keys::PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<Session>>, ApiError> {
    let axum::extract::Query(q) = query.map_err(super::extract::query_error)?;
    let (sessions, next_cursor) = state.auth.sessions(&who, ctx.now, q.cursor.as_deref(), q.limit).await?;
    Ok(Json(Page { data: sessions.iter().map(|s| session_view(s, who.session_id())).collect(), next_cursor }))
}

/// `DELETE /v1/me/sessions/{id}`.
pub async fn session_revoke(
    State(state): State<AppState>,
    ctx: RequestCtx,
    SessionAuthed(who): SessionAuthed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.auth.session_revoke(&ctx, &who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/me/password`.
pub async fn password_change(
    State(state): State<AppState>,
    ctx: RequestCtx,
    authed: Authed,
    JsonBody(req): JsonBody<PasswordChangeRequest>,
) -> Result<StatusCode, ApiError> {
    let session_id = authed.session_id()?;
    state
        .auth
        .change_password(&ctx, &authed.0, session_id, Secret::new(req.current_password), Secret::new(req.new_password))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
