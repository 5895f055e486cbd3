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
    openapi::{Conflict, Forbidden, NotFound, ReauthRequired},
};
use crate::{
    clients::ClientMetadata,
    ctx::{Principal, RequestCtx},
};

/// `?cursor=&limit=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
}

/// `POST /v1/admin/clients/{id}/rotate-secret` body: how long the old secret keeps working.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// Seconds the old secret keeps working (default 0: it stops at once; more than
    /// 30 days is cut to 30 days).
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

/// Registers an OAuth client; a generated secret is in this reply only.
///
/// Needs every permission scope the client may request (and for `trusted` or
/// `introspection`, `admin:roles:write`); a user's session also needs a recent sign-in.
#[utoipa::path(post, path = "/v1/admin/clients", tag = "admin-clients",
    request_body = ClientMetadata,
    responses(
        (status = 201, description = "The client; `client_secret` when it authenticates with one.", body = ClientView),
        (status = 403, response = ReauthRequired),
    ),
    security(("bearer" = ["admin:clients:write"]), ("api_key" = ["admin:clients:write"])))]
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

/// Lists the registered clients, oldest first.
#[utoipa::path(get, path = "/v1/admin/clients", tag = "admin-clients", params(ListQuery),
    responses(
        (status = 200, description = "A page of clients, in registration order; never a secret.", body = Page<ClientView>),
        (status = 403, response = Forbidden),
    ),
    security(("bearer" = ["admin:clients:read"]), ("api_key" = ["admin:clients:read"])))]
pub async fn client_list(
    State(state): State<AppState>,
    _can: Can<ClientsRead>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<axum::Json<Page<ClientView>>, ApiError> {
    let Query(q) = q.map_err(query_error)?;
    let (data, next_cursor) = state.oauth.client_list(q.cursor.as_deref(), q.limit).await?;
    Ok(axum::Json(Page { data, next_cursor }))
}

/// Reads one client.
#[utoipa::path(get, path = "/v1/admin/clients/{id}", tag = "admin-clients",
    params(("id" = String, Path, description = "The client's `client_id`.")),
    responses(
        (status = 200, description = "The client; never its secret.", body = ClientView),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
    security(("bearer" = ["admin:clients:read"]), ("api_key" = ["admin:clients:read"])))]
pub async fn client_get(
    State(state): State<AppState>,
    _can: Can<ClientsRead>,
    Path(id): Path<String>,
) -> Result<axum::Json<ClientView>, ApiError> {
    Ok(axum::Json(state.oauth.client_get(&id).await?))
}

/// Changes a client: the metadata fields given replace the stored ones.
///
/// The body is any subset of the client metadata (`client_name`, `redirect_uris`, …);
/// the registration facts (`client_id`, `owner`, …) are ignored. A client that newly
/// needs a secret gets one, in this reply only. Both the client as it is and as it
/// becomes must be held: every permission scope it may request (and for `trusted` or
/// `introspection`, `admin:roles:write`); a user's session also needs a recent sign-in.
#[utoipa::path(patch, path = "/v1/admin/clients/{id}", tag = "admin-clients",
    params(("id" = String, Path, description = "The client's `client_id`.")),
    request_body(content = Object, content_type = "application/json",
        description = "The `ClientMetadata` members to change; all are optional."),
    responses(
        (status = 200, description = "The changed client; `client_secret` if one was just generated.", body = ClientView),
        (status = 403, response = ReauthRequired),
        (status = 404, response = NotFound),
    ),
    security(("bearer" = ["admin:clients:write"]), ("api_key" = ["admin:clients:write"])))]
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

/// Issues a client a new secret, shown in this reply only; the body is optional.
///
/// The old secret keeps working for `grace_seconds` (default: it stops at once). A
/// client that does not authenticate with a secret is a 409.
/// Needs every permission scope the client may request (and for `trusted` or
/// `introspection`, `admin:roles:write`); a user's session also needs a recent sign-in.
#[utoipa::path(post, path = "/v1/admin/clients/{id}/rotate-secret", tag = "admin-clients",
    params(("id" = String, Path, description = "The client's `client_id`.")),
    request_body(content = Option<RotateBody>, description = "Optional: how long the old secret keeps working."),
    responses(
        (status = 200, description = "The client with its new `client_secret`.", body = ClientView),
        (status = 403, response = ReauthRequired),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
    security(("bearer" = ["admin:clients:write"]), ("api_key" = ["admin:clients:write"])))]
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

/// Deletes a client and ends every grant it holds.
///
/// Needs every permission scope the client may request (and for `trusted` or
/// `introspection`, `admin:roles:write`).
#[utoipa::path(delete, path = "/v1/admin/clients/{id}", tag = "admin-clients",
    params(("id" = String, Path, description = "The client's `client_id`.")),
    responses(
        (status = 204, description = "Deleted; the grants it held are revoked."),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
    security(("bearer" = ["admin:clients:write"]), ("api_key" = ["admin:clients:write"])))]
pub async fn client_delete(
    State(state): State<AppState>,
    ctx: RequestCtx,
    can: Can<ClientsWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.oauth.client_delete(&ctx, &can.who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
