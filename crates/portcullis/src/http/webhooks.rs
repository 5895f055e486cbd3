//! `/v1/admin/webhooks`: endpoints, their delivery log, retries and replays, for
//! admins (`admin:webhooks:read` / `admin:webhooks:write`). A secret is in the
//! reply that created or rotated it, never again.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use portcullis_proto::{
    Page, WebhookCreateRequest, WebhookDelivery, WebhookEndpoint, WebhookReplayRequest, WebhookReplayResponse,
    WebhookRotateRequest, WebhookUpdateRequest,
};
use serde::Deserialize;

use super::{
    AppState,
    error::ApiError,
    extract::{JsonBody, query_error},
    guard::{Can, WebhooksRead, WebhooksWrite},
    openapi::{Forbidden, NotFound},
};
use crate::{ctx::RequestCtx, store::OutboxStatus, validate::field};

/// `?cursor=&limit=`; any other parameter is refused.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
}

/// `?status=&cursor=&limit=` of the delivery log; any other parameter is refused.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    /// Only deliveries in this state: `pending`, `delivered` or `failed` (given up).
    #[param(pattern = "^(pending|delivered|failed)$")]
    status: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 200 (default 50).
    limit: Option<i64>,
}

/// Registers a webhook endpoint; the reply carries its signing secret, this once.
///
/// The caller also needs the read permission of the data its events carry
/// (`admin:roles:read` for `role.*`, `admin:keys:read` for `api_key.*`,
/// `admin:clients:read` for `client.*`, `admin:users:read` for the others but
/// `webhook.test`): an endpoint is a standing read of everything it receives.
#[utoipa::path(post, path = "/v1/admin/webhooks", tag = "admin-webhooks",
    request_body = WebhookCreateRequest,
    responses(
        (status = 201, description = "The endpoint; `secret` (`whsec_…`) is shown this once.", body = WebhookEndpoint),
        (status = 403, response = Forbidden),
    ),
    security(("bearer" = ["admin:webhooks:write"]), ("api_key" = ["admin:webhooks:write"])))]
pub async fn webhook_create(
    State(state): State<AppState>,
    ctx: RequestCtx,
    can: Can<WebhooksWrite>,
    JsonBody(req): JsonBody<WebhookCreateRequest>,
) -> Result<Response, ApiError> {
    let view = state.webhooks.create(&ctx, &can.who, req).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Lists the webhook endpoints, a page at a time.
#[utoipa::path(get, path = "/v1/admin/webhooks", tag = "admin-webhooks", params(ListQuery),
    responses((status = 200, description = "A page of endpoints (without secrets).", body = Page<WebhookEndpoint>), (status = 403, response = Forbidden)),
    security(("bearer" = ["admin:webhooks:read"]), ("api_key" = ["admin:webhooks:read"])))]
pub async fn webhook_list(
    State(state): State<AppState>,
    _can: Can<WebhooksRead>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page<WebhookEndpoint>>, ApiError> {
    let Query(q) = q.map_err(query_error)?;
    let (data, next_cursor) = state.webhooks.list(q.cursor.as_deref(), q.limit).await?;
    Ok(Json(Page { data, next_cursor }))
}

/// Shows one webhook endpoint.
#[utoipa::path(get, path = "/v1/admin/webhooks/{id}", tag = "admin-webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`).")),
    responses((status = 200, description = "The endpoint (without its secret).", body = WebhookEndpoint), (status = 403, response = Forbidden), (status = 404, response = NotFound)),
    security(("bearer" = ["admin:webhooks:read"]), ("api_key" = ["admin:webhooks:read"])))]
pub async fn webhook_get(
    State(state): State<AppState>,
    _can: Can<WebhooksRead>,
    Path(id): Path<String>,
) -> Result<Json<WebhookEndpoint>, ApiError> {
    Ok(Json(state.webhooks.get(&id).await?))
}

/// Changes the given fields of a webhook endpoint.
///
/// With a new `url` or new `events`, the caller also needs the read permission of
/// the data the events carry, as at creation.
#[utoipa::path(patch, path = "/v1/admin/webhooks/{id}", tag = "admin-webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`).")),
    request_body = WebhookUpdateRequest,
    responses((status = 200, description = "The endpoint as it is now.", body = WebhookEndpoint), (status = 403, response = Forbidden), (status = 404, response = NotFound)),
    security(("bearer" = ["admin:webhooks:write"]), ("api_key" = ["admin:webhooks:write"])))]
pub async fn webhook_update(
    State(state): State<AppState>,
    ctx: RequestCtx,
    can: Can<WebhooksWrite>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<WebhookUpdateRequest>,
) -> Result<Json<WebhookEndpoint>, ApiError> {
    Ok(Json(state.webhooks.update(&ctx, &can.who, &id, req).await?))
}

/// Deletes a webhook endpoint; what it had pending is given up.
#[utoipa::path(delete, path = "/v1/admin/webhooks/{id}", tag = "admin-webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`).")),
    responses((status = 204, description = "Deleted."), (status = 403, response = Forbidden), (status = 404, response = NotFound)),
    security(("bearer" = ["admin:webhooks:write"]), ("api_key" = ["admin:webhooks:write"])))]
pub async fn webhook_delete(
    State(state): State<AppState>,
    ctx: RequestCtx,
    can: Can<WebhooksWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.webhooks.delete(&ctx, &can.who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Gives a webhook endpoint a new signing secret; the reply carries it, this once.
#[utoipa::path(post, path = "/v1/admin/webhooks/{id}/rotate-secret", tag = "admin-webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`).")),
    request_body(content = Option<WebhookRotateRequest>, description = "Optional: how long the old secret keeps signing beside the new one."),
    responses(
        (status = 200, description = "The endpoint; `secret` is the new one, shown this once.", body = WebhookEndpoint),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
    security(("bearer" = ["admin:webhooks:write"]), ("api_key" = ["admin:webhooks:write"])))]
pub async fn webhook_rotate_secret(
    State(state): State<AppState>,
    ctx: RequestCtx,
    can: Can<WebhooksWrite>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<WebhookEndpoint>, ApiError> {
    let req: WebhookRotateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        WebhookRotateRequest::default()
    } else {
        crate::validate::parse_json(&body)?
    };
    let grace = req.grace_seconds.unwrap_or(0);
    Ok(Json(state.webhooks.rotate(&ctx, &can.who, &id, grace).await?))
}

/// Queues a `webhook.test` event to this endpoint alone.
#[utoipa::path(post, path = "/v1/admin/webhooks/{id}/test", tag = "admin-webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`).")),
    responses((status = 202, description = "The delivery, queued.", body = WebhookDelivery), (status = 403, response = Forbidden), (status = 404, response = NotFound)),
    security(("bearer" = ["admin:webhooks:write"]), ("api_key" = ["admin:webhooks:write"])))]
pub async fn webhook_test(
    State(state): State<AppState>,
    ctx: RequestCtx,
    can: Can<WebhooksWrite>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let delivery = state.webhooks.test(&ctx, &can.who, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery)).into_response())
}

/// Lists a webhook endpoint's deliveries with their attempts, newest first.
#[utoipa::path(get, path = "/v1/admin/webhooks/{id}/deliveries", tag = "admin-webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`)."), DeliveryQuery),
    responses((status = 200, description = "A page of deliveries.", body = Page<WebhookDelivery>), (status = 403, response = Forbidden), (status = 404, response = NotFound)),
    security(("bearer" = ["admin:webhooks:read"]), ("api_key" = ["admin:webhooks:read"])))]
pub async fn webhook_delivery_list(
    State(state): State<AppState>,
    _can: Can<WebhooksRead>,
    Path(id): Path<String>,
    q: Result<Query<DeliveryQuery>, QueryRejection>,
) -> Result<Json<Page<WebhookDelivery>>, ApiError> {
    let Query(q) = q.map_err(query_error)?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(OutboxStatus::parse(s).map_err(|_| {
            crate::auth::AuthError::Validation(vec![field(
                "status",
                "invalid_value",
                "is pending, delivered or failed",
            )])
        })?),
    };
    let (data, next_cursor) = state.webhooks.deliveries(&id, status, q.cursor.as_deref(), q.limit).await?;
    Ok(Json(Page { data, next_cursor }))
}

/// Shows one delivery of a webhook endpoint, with every attempt.
#[utoipa::path(get, path = "/v1/admin/webhooks/{id}/deliveries/{delivery_id}", tag = "admin-webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`)."), ("delivery_id" = String, Path, description = "The delivery's id (`obx_…`).")),
    responses((status = 200, description = "The delivery.", body = WebhookDelivery), (status = 403, response = Forbidden), (status = 404, response = NotFound)),
    security(("bearer" = ["admin:webhooks:read"]), ("api_key" = ["admin:webhooks:read"])))]
pub async fn webhook_delivery_get(
    State(state): State<AppState>,
    _can: Can<WebhooksRead>,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Json<WebhookDelivery>, ApiError> {
    Ok(Json(state.webhooks.delivery(&id, &delivery_id).await?))
}

/// Sends a delivery's event again, as a new delivery with the same `webhook-id`.
///
/// Refused (400, `not_subscribed`) when the endpoint no longer takes that event
/// type; the caller needs the read permission of the event's data, as at creation.
#[utoipa::path(post, path = "/v1/admin/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "admin-webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`)."), ("delivery_id" = String, Path, description = "The delivery's id (`obx_…`).")),
    responses((status = 202, description = "The new delivery, queued.", body = WebhookDelivery), (status = 403, response = Forbidden), (status = 404, response = NotFound)),
    security(("bearer" = ["admin:webhooks:write"]), ("api_key" = ["admin:webhooks:write"])))]
pub async fn webhook_delivery_retry(
    State(state): State<AppState>,
    ctx: RequestCtx,
    can: Can<WebhooksWrite>,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let delivery = state.webhooks.retry(&ctx, &can.who, &id, &delivery_id).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery)).into_response())
}

/// Sends every event the endpoint was sent since a time again, once each.
///
/// The caller needs the read permission of the endpoint's events' data, as at
/// creation.
#[utoipa::path(post, path = "/v1/admin/webhooks/{id}/replay", tag = "admin-webhooks",
    params(("id" = String, Path, description = "The endpoint's id (`whe_…`).")),
    request_body = WebhookReplayRequest,
    responses((status = 202, description = "How many deliveries were queued.", body = WebhookReplayResponse), (status = 403, response = Forbidden), (status = 404, response = NotFound)),
    security(("bearer" = ["admin:webhooks:write"]), ("api_key" = ["admin:webhooks:write"])))]
pub async fn webhook_replay(
    State(state): State<AppState>,
    ctx: RequestCtx,
    can: Can<WebhooksWrite>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<WebhookReplayRequest>,
) -> Result<Response, ApiError> {
    let queued = state.webhooks.replay(&ctx, &can.who, &id, &req.since).await?;
    Ok((StatusCode::ACCEPTED, Json(WebhookReplayResponse { queued })).into_response())
}
