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
    AdminUser, AdminUserCreateRequest, AdminUserUpdateRequest, AuditEvent, EmailMessage, Page, Role, RoleCreateRequest,
    RoleGrantRequest, RoleUpdateRequest,
};
use serde::Deserialize;

use super::{
    AppState,
    error::ApiError,
    extract::JsonBody,
    guard::{Can, RolesRead, RolesWrite, UsersRead, UsersWrite},
    openapi::{Conflict, Forbidden, NotFound},
    views::{admin_user_view, role_view},
};
use crate::{
    admin::{UserCreate, UserUpdate},
    crypto::Secret,
    ctx::RequestCtx,
    store::UserFilter,
};

/// Query of `GET /v1/admin/users`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserListQuery {
    /// Only users whose email contains this text (case-insensitive).
    email: Option<String>,
    /// Only users holding this role.
    role: Option<String>,
    /// Only banned (`true`) or only not banned (`false`) users.
    banned: Option<bool>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Lists users, oldest first, optionally filtered by email, role or ban.
#[utoipa::path(get, path = "/v1/admin/users", tag = "admin-users", params(UserListQuery),
    responses(
        (status = 200, description = "A page of users, in creation order.", body = Page<AdminUser>),
        (status = 403, response = Forbidden),
    ),
    security(("bearer" = ["admin:users:read"]), ("api_key" = ["admin:users:read"])))]
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

/// Creates a user, with or without a password.
///
/// Granting roles needs every permission they hold (or `admin:roles:write`); an email
/// another account has is a 409.
#[utoipa::path(post, path = "/v1/admin/users", tag = "admin-users",
    request_body = AdminUserCreateRequest,
    responses(
        (status = 201, description = "The new user.", body = AdminUser),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
    ),
    security(("bearer" = ["admin:users:write"]), ("api_key" = ["admin:users:write"])))]
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

/// Reads one user.
#[utoipa::path(get, path = "/v1/admin/users/{id}", tag = "admin-users",
    params(("id" = String, Path, description = "The user's id.")),
    responses(
        (status = 200, description = "The user.", body = AdminUser),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
    security(("bearer" = ["admin:users:read"]), ("api_key" = ["admin:users:read"])))]
pub async fn admin_user_get(
    State(state): State<AppState>,
    _: Can<UsersRead>,
    Path(id): Path<String>,
) -> Result<Json<AdminUser>, ApiError> {
    Ok(Json(admin_view(&state, &state.admin.user_get(&id).await?).await?))
}

/// Changes a user's name, email or metadata; fields left out are kept.
///
/// Needs every permission the user's roles hold (or `admin:roles:write`); an email
/// another account has is a 409.
#[utoipa::path(patch, path = "/v1/admin/users/{id}", tag = "admin-users",
    params(("id" = String, Path, description = "The user's id.")),
    request_body = AdminUserUpdateRequest,
    responses(
        (status = 200, description = "The updated user.", body = AdminUser),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
    security(("bearer" = ["admin:users:write"]), ("api_key" = ["admin:users:write"])))]
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

/// Deletes a user with their sessions, refresh tokens and API keys.
///
/// Needs every permission the user's roles hold (or `admin:roles:write`).
#[utoipa::path(delete, path = "/v1/admin/users/{id}", tag = "admin-users",
    params(("id" = String, Path, description = "The user's id.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
    security(("bearer" = ["admin:users:write"]), ("api_key" = ["admin:users:write"])))]
pub async fn admin_user_delete(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<UsersWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.admin.user_delete(&ctx, &who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Bans a user: sign-in is refused and every session ends.
///
/// Needs every permission the user's roles hold (or `admin:roles:write`);
/// administrators cannot ban themselves (403 `forbidden`).
#[utoipa::path(post, path = "/v1/admin/users/{id}/ban", tag = "admin-users",
    params(("id" = String, Path, description = "The user's id.")),
    responses(
        (status = 200, description = "The banned user.", body = AdminUser),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
    security(("bearer" = ["admin:users:write"]), ("api_key" = ["admin:users:write"])))]
pub async fn admin_user_ban(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<UsersWrite>,
    Path(id): Path<String>,
) -> Result<Json<AdminUser>, ApiError> {
    Ok(Json(admin_view(&state, &state.admin.user_ban(&ctx, &who, &id, true).await?).await?))
}

/// Lifts a user's ban.
///
/// Needs every permission the user's roles hold (or `admin:roles:write`).
#[utoipa::path(post, path = "/v1/admin/users/{id}/unban", tag = "admin-users",
    params(("id" = String, Path, description = "The user's id.")),
    responses(
        (status = 200, description = "The user, no longer banned.", body = AdminUser),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
    security(("bearer" = ["admin:users:write"]), ("api_key" = ["admin:users:write"])))]
pub async fn admin_user_unban(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<UsersWrite>,
    Path(id): Path<String>,
) -> Result<Json<AdminUser>, ApiError> {
    Ok(Json(admin_view(&state, &state.admin.user_ban(&ctx, &who, &id, false).await?).await?))
}

/// Lifts every sign-in and second-factor lockout of a user's account.
///
/// Needs every permission the user's roles hold (or `admin:roles:write`).
#[utoipa::path(post, path = "/v1/admin/users/{id}/unlock", tag = "admin-users",
    params(("id" = String, Path, description = "The user's id.")),
    responses(
        (status = 200, description = "The user (also when nothing was locked).", body = AdminUser),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
    security(("bearer" = ["admin:users:write"]), ("api_key" = ["admin:users:write"])))]
pub async fn admin_user_unlock(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<UsersWrite>,
    Path(id): Path<String>,
) -> Result<Json<AdminUser>, ApiError> {
    Ok(Json(admin_view(&state, &state.admin.user_unlock(&ctx, &who, &id).await?).await?))
}

/// Grants a user a role; it reaches their next token.
///
/// Needs every permission the role holds (or `admin:roles:write`). An unknown role is
/// a 400 on `role`; granting a role the user holds already changes nothing.
#[utoipa::path(post, path = "/v1/admin/users/{id}/roles", tag = "admin-users",
    params(("id" = String, Path, description = "The user's id.")),
    request_body = RoleGrantRequest,
    responses(
        (status = 200, description = "The user with the role.", body = AdminUser),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
    security(("bearer" = ["admin:users:write"]), ("api_key" = ["admin:users:write"])))]
pub async fn admin_user_role_grant(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<UsersWrite>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<RoleGrantRequest>,
) -> Result<Json<AdminUser>, ApiError> {
    Ok(Json(admin_view(&state, &state.admin.user_role_grant(&ctx, &who, &id, &req.role).await?).await?))
}

/// Takes a role from a user.
///
/// 404 also when the user does not hold the role. Needs every permission the user's
/// roles hold (or `admin:roles:write`).
#[utoipa::path(delete, path = "/v1/admin/users/{id}/roles/{role}", tag = "admin-users",
    params(("id" = String, Path, description = "The user's id."), ("role" = String, Path, description = "The role's name.")),
    responses(
        (status = 200, description = "The user without the role.", body = AdminUser),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
    security(("bearer" = ["admin:users:write"]), ("api_key" = ["admin:users:write"])))]
pub async fn admin_user_role_revoke(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<UsersWrite>,
    Path((id, role)): Path<(String, String)>,
) -> Result<Json<AdminUser>, ApiError> {
    Ok(Json(admin_view(&state, &state.admin.user_role_revoke(&ctx, &who, &id, &role).await?).await?))
}

/// Ends every session of a user.
///
/// Needs every permission the user's roles hold (or `admin:roles:write`).
#[utoipa::path(delete, path = "/v1/admin/users/{id}/sessions", tag = "admin-users",
    params(("id" = String, Path, description = "The user's id.")),
    responses(
        (status = 204, description = "Every session of the user ended."),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
    security(("bearer" = ["admin:users:write"]), ("api_key" = ["admin:users:write"])))]
pub async fn admin_user_sessions_revoke(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<UsersWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.admin.user_sessions_revoke(&ctx, &who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists every role, by name.
#[utoipa::path(get, path = "/v1/admin/roles", tag = "admin-roles",
    responses(
        (status = 200, description = "Every role, in one page (`next_cursor` is always `null`).", body = Page<Role>),
        (status = 403, response = Forbidden),
    ),
    security(("bearer" = ["admin:roles:read"]), ("api_key" = ["admin:roles:read"])))]
pub async fn role_list(State(state): State<AppState>, _: Can<RolesRead>) -> Result<Json<Page<Role>>, ApiError> {
    let roles = state.admin.role_list().await?;
    Ok(Json(Page { data: roles.iter().map(role_view).collect(), next_cursor: None }))
}

/// Creates a role.
///
/// A role of the same name is a 409.
#[utoipa::path(post, path = "/v1/admin/roles", tag = "admin-roles",
    request_body = RoleCreateRequest,
    responses(
        (status = 201, description = "The new role.", body = Role),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
    ),
    security(("bearer" = ["admin:roles:write"]), ("api_key" = ["admin:roles:write"])))]
pub async fn role_create(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<RolesWrite>,
    JsonBody(req): JsonBody<RoleCreateRequest>,
) -> Result<Response, ApiError> {
    let role = state.admin.role_create(&ctx, &who, &req.name, req.description, &req.permissions).await?;
    Ok((StatusCode::CREATED, Json(role_view(&role))).into_response())
}

/// Changes a role's description or permissions; fields left out are kept.
#[utoipa::path(patch, path = "/v1/admin/roles/{name}", tag = "admin-roles",
    params(("name" = String, Path, description = "The role's name.")),
    request_body = RoleUpdateRequest,
    responses(
        (status = 200, description = "The updated role.", body = Role),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
    security(("bearer" = ["admin:roles:write"]), ("api_key" = ["admin:roles:write"])))]
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

/// Deletes a role nobody holds.
///
/// Built-in roles are never deleted (403 `forbidden`); a role still held by users is
/// a 409.
#[utoipa::path(delete, path = "/v1/admin/roles/{name}", tag = "admin-roles",
    params(("name" = String, Path, description = "The role's name.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
    security(("bearer" = ["admin:roles:write"]), ("api_key" = ["admin:roles:write"])))]
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
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only records about this user.
    user_id: Option<String>,
    /// Only this event type (`login`, `refresh`, `account_locked`, …).
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// Only `success` or only `failure`.
    outcome: Option<String>,
    /// From this RFC 3339 time (inclusive).
    since: Option<String>,
    /// Before this RFC 3339 time (exclusive).
    until: Option<String>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Lists the audit trail, newest first, filtered by user, type, outcome and time.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin-audit", params(AuditQuery),
    responses(
        (status = 200, description = "A page of audit records, newest first.", body = Page<AuditEvent>),
        (status = 403, response = Forbidden),
    ),
    security(("bearer" = ["admin:audit:read"]), ("api_key" = ["admin:audit:read"])))]
pub async fn audit_list(
    State(state): State<AppState>,
    _: Can<super::guard::AuditRead>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<AuditEvent>>, ApiError> {
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
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EmailsQuery {
    /// Only mail in this state: `pending`, `delivered` or `failed`.
    status: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
}

/// Lists the mail log: queued, sent and failed mail with its delivery state.
///
/// Newest first; never the links or codes the messages carry.
#[utoipa::path(get, path = "/v1/admin/emails", tag = "admin-audit", params(EmailsQuery),
    responses(
        (status = 200, description = "A page of messages, newest first.", body = Page<EmailMessage>),
        (status = 403, response = Forbidden),
    ),
    security(("bearer" = ["admin:emails:read"]), ("api_key" = ["admin:emails:read"])))]
pub async fn admin_email_list(
    State(state): State<AppState>,
    _can: Can<super::guard::EmailsRead>,
    query: Result<Query<EmailsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page<EmailMessage>>, ApiError> {
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
