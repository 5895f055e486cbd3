//! `/v1/me*`: the signed-in user's own account and sessions. Every object is looked
//! up together with its owner, so another user's id answers 404 (ASVS 4.2.1).

use axum::response::IntoResponse;
use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use portcullis_proto::{
    Accepted, AccountExport, EmailChangeRequest, ExportedApiKey, ExportedSession, MeUpdateRequest, OAuthGrant, Page,
    PasswordChangeRequest, Session, User,
};

use super::{
    AppState,
    error::ApiError,
    extract::{Authed, JsonBody, RecentSession, SessionAuthed},
    openapi::{Forbidden, NotFound, ReauthRequired, SignInLimited},
    views::{session_view, user_view},
};
use crate::{crypto::Secret, ctx::RequestCtx};

/// The caller's account as it is now (with an API key: the key's owner).
#[utoipa::path(get, path = "/v1/me", tag = "me",
    responses(
        (status = 200, description = "The account.", body = User),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
    security(("bearer" = []), ("api_key" = [])))]
pub async fn me_get(State(state): State<AppState>, Authed(who): Authed) -> Result<Json<User>, ApiError> {
    Ok(Json(user_view(&state.auth.me(&who).await?)))
}

/// Changes the caller's name or `unsafe_metadata` (nothing else is theirs to set).
#[utoipa::path(patch, path = "/v1/me", tag = "me", request_body = MeUpdateRequest,
    responses((status = 200, description = "The updated account.", body = User), (status = 403, response = Forbidden)),
    security(("bearer" = [])))]
pub async fn me_update(
    State(state): State<AppState>,
    ctx: RequestCtx,
    SessionAuthed(who): SessionAuthed,
    JsonBody(req): JsonBody<MeUpdateRequest>,
) -> Result<Json<User>, ApiError> {
    let user = state.auth.me_update(&ctx, &who, req.name, req.unsafe_metadata).await?;
    Ok(Json(user_view(&user)))
}

/// Lists the caller's live sessions, newest first; `current` marks this one.
#[utoipa::path(get, path = "/v1/me/sessions", tag = "me", params(super::api_keys::PageQuery),
    responses((status = 200, description = "A page of sessions.", body = Page<Session>), (status = 403, response = Forbidden)),
    security(("bearer" = [])))]
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

/// Ends one of the caller's sessions (signs that device out).
#[utoipa::path(delete, path = "/v1/me/sessions/{id}", tag = "me",
    params(("id" = String, Path, description = "The session's id.")),
    responses((status = 204, description = "Ended."), (status = 403, response = Forbidden), (status = 404, response = NotFound)),
    security(("bearer" = [])))]
pub async fn session_revoke(
    State(state): State<AppState>,
    ctx: RequestCtx,
    SessionAuthed(who): SessionAuthed,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.auth.session_revoke(&ctx, &who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes the caller's password; every other session of the account is ended.
///
/// A wrong `current_password` is a `validation_failed` on that field, and counts
/// towards the account's lockout like a failed sign-in.
#[utoipa::path(post, path = "/v1/me/password", tag = "me", request_body = PasswordChangeRequest,
    responses(
        (status = 204, description = "Changed."),
        (status = 403, response = Forbidden),
        (status = 429, response = SignInLimited),
    ),
    security(("bearer" = [])))]
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

/// Starts a change of the caller's email address; it changes once the link mailed
/// to the new address is followed. Needs a recent sign-in.
#[utoipa::path(post, path = "/v1/me/email", tag = "me", request_body = EmailChangeRequest,
    responses((status = 202, description = "The mail is on its way.", body = Accepted), (status = 403, response = ReauthRequired)),
    security(("bearer" = [])))]
pub async fn email_change(
    State(state): State<AppState>,
    ctx: RequestCtx,
    RecentSession(who): RecentSession,
    JsonBody(req): JsonBody<EmailChangeRequest>,
) -> Result<axum::response::Response, ApiError> {
    let user = state.auth.me(&who).await?;
    state.auth.request_email_change(&ctx, &user, &req.email).await?;
    Ok(super::email::accepted(
        "We sent a message to the new address. The change is made once you follow it; the old address is told.",
    ))
}

/// Everything held about the caller, as one JSON document (a download).
#[utoipa::path(get, path = "/v1/me/export", tag = "me",
    responses((status = 200, description = "The export.", body = AccountExport), (status = 403, response = Forbidden)),
    security(("bearer" = [])))]
pub async fn me_export(
    State(state): State<AppState>,
    ctx: RequestCtx,
    SessionAuthed(who): SessionAuthed,
) -> Result<axum::response::Response, ApiError> {
    let data = state.auth.export_own(&ctx, &who).await?;
    let mut res = Json(export_view(data, ctx.now)).into_response();
    res.headers_mut().insert(
        axum::http::header::CONTENT_DISPOSITION,
        axum::http::HeaderValue::from_static("attachment; filename=\"account-export.json\""),
    );
    res.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    Ok(res)
}

fn export_view(d: crate::auth::AccountData, now: i64) -> AccountExport {
    use crate::clock::rfc3339;
    AccountExport {
        exported_at: rfc3339(now),
        user: user_view(&d.user),
        sessions: d
            .sessions
            .iter()
            .map(|s| ExportedSession {
                id: s.id.clone(),
                created_at: rfc3339(s.created_at),
                last_active_at: rfc3339(s.last_active_at),
                expires_at: rfc3339(s.expires_at),
                revoked_at: s.revoked_at.map(rfc3339),
                ip: s.ip.clone(),
                user_agent: s.user_agent.clone(),
                client_id: s.client_id.clone(),
                scope: s.scope.clone(),
            })
            .collect(),
        api_keys: d
            .api_keys
            .iter()
            .map(|k| ExportedApiKey { key: super::views::api_key_view(k), revoked_at: k.revoked_at.map(rfc3339) })
            .collect(),
        oauth_grants: d
            .consents
            .into_iter()
            .map(|c| OAuthGrant {
                client_id: c.client_id,
                client_name: c.client_name,
                scope: c.scope,
                created_at: rfc3339(c.created_at),
                updated_at: rfc3339(c.updated_at),
            })
            .collect(),
        audit_events: d.audit.into_iter().map(super::views::audit_view).collect(),
        truncated: d.truncated,
    }
}

/// Deletes the caller's account and everything in it; needs a recent sign-in.
#[utoipa::path(delete, path = "/v1/me", tag = "me",
    responses((status = 204, description = "Deleted."), (status = 403, response = ReauthRequired)),
    security(("bearer" = [])))]
pub async fn me_delete(
    State(state): State<AppState>,
    ctx: RequestCtx,
    RecentSession(who): RecentSession,
) -> Result<StatusCode, ApiError> {
    state.auth.delete_own(&ctx, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}
