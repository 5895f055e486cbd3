//! `/v1/admin/…`: user and role administration. Each handler takes the `Can<…>`
//! guard of the permission it needs; the built-in `admin` role holds them all, and an
//! API key can be given exactly the ones an automation needs.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use portcullis_proto::{
    AdminUser, AdminUserCreateRequest, AdminUserUpdateRequest, Page, Role, RoleCreateRequest, RoleGrantRequest,
    RoleUpdateRequest,
};
use serde::Deserialize;

use super::{
    AppState,
    error::ApiError,
    extract::JsonBody,
    guard::{Can, RolesRead, RolesWrite, UsersRead, UsersWrite},
    views::{admin_user_view, role_view},
};
use crate::{
    admin::{UserCreate, UserUpdate},
    crypto::Secret,
    ctx::RequestCtx,
    store::UserFilter,
};

/// Query of `GET /v1/admin/users`.
#[derive(Debug, Deserialize)]
pub struct UserListQuery {
    email: Option<String>,
    role: Option<String>,
    banned: Option<bool>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /v1/admin/users`.
pub async fn admin_user_list(
    State(state): State<AppState>,
    _: Can<UsersRead>,
    query: Result<Query<UserListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<AdminUser>>, ApiError> {
    let Query(q) = query.map_err(super::extract::query_error)?;
    let filter = UserFilter { email: q.email, role: q.role, banned: q.banned };
    let (users, next_cursor) = state.admin.user_list(&filter, q.cursor.as_deref(), q.limit).await?;
    let ids: Vec<&str> = users.iter().map(|u| u.id.as_str()).collect();
    let mut kinds = state.auth.db().mfa_kinds(&ids).await.map_err(crate::auth::AuthError::from)?;
    let data = users.iter().map(|u| admin_user_view(u, kinds.remove(&u.id).unwrap_or_default())).collect();
    Ok(Json(Page { data, next_cursor }))
}

/// A user as admins see it, with the second factors they have.
async fn admin_view(state: &AppState, u: &crate::store::UserRow) -> Result<AdminUser, ApiError> {
    let mut kinds = state.auth.db().mfa_kinds(&[u.id.as_str()]).await.map_err(crate::auth::AuthError::from)?;
    Ok(admin_user_view(u, kinds.remove(&u.id).unwrap_or_default()))
}

/// `POST /v1/admin/users`.
pub async fn admin_user_create(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<UsersWrite>,
    JsonBody(req): JsonBody<AdminUserCreateRequest>,
) -> Result<Response, ApiError> {
    let input = UserCreate {
        email: req.email,
        password: req.password.map(Secret::new),
        name: req.name,
        roles: req.roles,
        public_metadata: req.public_metadata,
        private_metadata: req.private_metadata,
    };
    let user = state.admin.user_create(&ctx, &who, input).await?;
    Ok((StatusCode::CREATED, Json(admin_view(&state, &user).await?)).into_response())
}

/// `GET /v1/admin/users/{id}`.
pub async fn admin_user_get(
    State(state): State<AppState>,
    _: Can<UsersRead>,
    Path(id): Path<String>,
) -> Result<Json<AdminUser>, ApiError> {
    Ok(Json(admin_view(&state, &state.admin.user_get(&id).await?).await?))
}

/// `PATCH /v1/admin/users/{id}`.
pub async fn admin_user_update(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<UsersWrite>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<AdminUserUpdateRequest>,
) -> Result<Json<AdminUser>, ApiError> {
    let input = UserUpdate {
        name: req.name,
        email: req.email,
        public_metadata: req.public_metadata,
        private_metadata: req.private_metadata,
    };
    Ok(Json(admin_view(&state, &state.admin.user_update(&ctx, &who, &id, input).await?).await?))
}

/// `DELETE /v1/admin/users/{id}`.
pub async fn admin_user_delete(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<UsersWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.admin.user_delete(&ctx, &who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/admin/users/{id}/ban`.
pub async fn admin_user_ban(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<UsersWrite>,
    Path(id): Path<String>,
) -> Result<Json<AdminUser>, ApiError> {
    Ok(Json(admin_view(&state, &state.admin.user_ban(&ctx, &who, &id, true).await?).await?))
}

/// `POST /v1/admin/users/{id}/unban`.
pub async fn admin_user_unban(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<UsersWrite>,
    Path(id): Path<String>,
) -> Result<Json<AdminUser>, ApiError> {
    Ok(Json(admin_view(&state, &state.admin.user_ban(&ctx, &who, &id, false).await?).await?))
}

/// `POST /v1/admin/users/{id}/unlock`.
pub async fn admin_user_unlock(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<UsersWrite>,
    Path(id): Path<String>,
) -> Result<Json<AdminUser>, ApiError> {
    Ok(Json(admin_view(&state, &state.admin.user_unlock(&ctx, &who, &id).await?).await?))
}

/// `POST /v1/admin/users/{id}/roles`.
pub async fn admin_user_role_grant(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<UsersWrite>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RoleGrantRequest>,
) -> Result<Json<AdminUser>, ApiError> {
    Ok(Json(admin_view(&state, &state.admin.user_role_grant(&ctx, &who, &id, &req.role).await?).await?))
}

/// `DELETE /v1/admin/users/{id}/roles/{role}`.
pub async fn admin_user_role_revoke(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<UsersWrite>,
    Path((id, role)): Path<(String, String)>,
) -> Result<Json<AdminUser>, ApiError> {
    Ok(Json(admin_view(&state, &state.admin.user_role_revoke(&ctx, &who, &id, &role).await?).await?))
}

/// `DELETE /v1/admin/users/{id}/sessions`.
pub async fn admin_user_sessions_revoke(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<UsersWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.admin.user_sessions_revoke(&ctx, &who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/admin/roles`.
pub async fn role_list(State(state): State<AppState>, _: Can<RolesRead>) -> Result<Json<Page<Role>>, ApiError> {
    let roles = state.admin.role_list().await?;
    Ok(Json(Page { data: roles.iter().map(role_view).collect(), next_cursor: None }))
}

/// `POST /v1/admin/roles`.
pub async fn role_create(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<RolesWrite>,
    JsonBody(req): JsonBody<RoleCreateRequest>,
) -> Result<Response, ApiError> {
    let role = state.admin.role_create(&ctx, &who, &req.name, req.description, &req.permissions).await?;
    Ok((StatusCode::CREATED, Json(role_view(&role))).into_response())
}

/// `PATCH /v1/admin/roles/{name}`.
pub async fn role_update(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<RolesWrite>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<RoleUpdateRequest>,
) -> Result<Json<Role>, ApiError> {
    let role = state.admin.role_update(&ctx, &who, &name, req.description, req.permissions).await?;
    Ok(Json(role_view(&role)))
}

/// `DELETE /v1/admin/roles/{name}`.
pub async fn role_delete(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<RolesWrite>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.admin.role_delete(&ctx, &who, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /v1/admin/audit`.
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    user_id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    outcome: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /v1/admin/audit`: newest first, filterable, cursor-paginated.
pub async fn audit_list(
    State(state): State<AppState>,
    _: Can<super::guard::AuditRead>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<portcullis_proto::AuditEvent>>, ApiError> {
    let Query(q) = query.map_err(super::extract::query_error)?;
    let time = |name: &str, v: Option<String>| -> Result<Option<i64>, ApiError> {
        v.map(|t| {
            crate::clock::parse_rfc3339(&t).ok_or_else(|| {
                ApiError::validation(vec![portcullis_proto::FieldError {
                    field: name.into(),
                    code: "invalid_format".into(),
                    message: "must be an RFC 3339 time such as 2026-01-31T12:00:00Z".into(),
                }])
            })
        })
        .transpose()
    };
    if let Some(o) = &q.outcome
        && o != "success"
        && o != "failure"
    {
        return Err(ApiError::validation(vec![portcullis_proto::FieldError {
            field: "outcome".into(),
            code: "invalid".into(),
            message: "must be success or failure".into(),
        }]));
    }
    let filter = crate::store::AuditFilter {
        user_id: q.user_id,
        event_type: q.event_type,
        outcome: q.outcome,
        since: time("since", q.since)?,
        until: time("until", q.until)?,
    };
    let limit = crate::page::page_limit(q.limit)?;
    let before = crate::page::cursor_decode(q.cursor.as_deref())?;
    let rows = state
        .auth
        .db()
        .audit_list(&filter, before.as_deref(), limit + 1)
        .await
        .map_err(crate::auth::AuthError::from)?;
    let (rows, next_cursor) = crate::page::paginate(rows, limit, |r| &r.id);
    let data = rows.into_iter().map(super::views::audit_view).collect();
    Ok(Json(Page { data, next_cursor }))
}

/// `GET /v1/admin/emails` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailsQuery {
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/admin/emails?status=failed`: queued, sent and failed mail with its
/// delivery state (`admin:emails:read`), newest first; never links or codes.
pub async fn admin_email_list(
    State(state): State<AppState>,
    _can: Can<super::guard::EmailsRead>,
    query: Result<Query<EmailsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<portcullis_proto::EmailMessage>>, ApiError> {
    let Query(q) = query.map_err(super::extract::query_error)?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(crate::store::OutboxStatus::parse(s).map_err(|_| {
            ApiError::validation(vec![crate::validate::field(
                "status",
                "invalid",
                "must be pending, delivered or failed",
            )])
        })?),
    };
    let limit = crate::page::page_limit(q.limit)?;
    let before = crate::page::cursor_decode(q.cursor.as_deref())?;
    let db = state.auth.db();
    let rows = db
        .outbox_list(crate::mail::KIND, status, before.as_deref(), limit + 1)
        .await
        .map_err(crate::auth::AuthError::from)?;
    let (rows, next_cursor) = crate::page::paginate(rows, limit, |r| &r.id);
    let data = rows.iter().map(super::views::email_view).collect();
    Ok(Json(Page { data, next_cursor }))
}
