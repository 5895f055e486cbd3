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
};
use crate::{ctx::RequestCtx, store::OutboxStatus, validate::field};

/// `?cursor=&limit=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    cursor: Option<String>,
    limit: Option<i64>,
}

/// `?status=&cursor=&limit=` of the delivery log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    status: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

/// `POST /v1/admin/webhooks`.
pub async fn webhook_create(
    State(state): State<AppState>,
    ctx: RequestCtx,
    can: Can<WebhooksWrite>,
    JsonBody(req): JsonBody<WebhookCreateRequest>,
) -> Result<Response, ApiError> {
    let view = state.webhooks.create(&ctx, &can.who, req).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `GET /v1/admin/webhooks`.
pub async fn webhook_list(
    State(state): State<AppState>,
    _can: Can<WebhooksRead>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Page<WebhookEndpoint>>, ApiError> {
    let Query(q) = q.map_err(query_error)?;
    let (data, next_cursor) = state.webhooks.list(q.cursor.as_deref(), q.limit).await?;
    Ok(Json(Page { data, next_cursor }))
}

/// `GET /v1/admin/webhooks/{id}`.
pub async fn webhook_get(
    State(state): State<AppState>,
    _can: Can<WebhooksRead>,
    Path(id): Path<String>,
) -> Result<Json<WebhookEndpoint>, ApiError> {
    Ok(Json(state.webhooks.get(&id).await?))
}

/// `PATCH /v1/admin/webhooks/{id}`.
pub async fn webhook_update(
    State(state): State<AppState>,
    ctx: RequestCtx,
    can: Can<WebhooksWrite>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<WebhookUpdateRequest>,
) -> Result<Json<WebhookEndpoint>, ApiError> {
    Ok(Json(state.webhooks.update(&ctx, &can.who, &id, req).await?))
}

/// `DELETE /v1/admin/webhooks/{id}`.
pub async fn webhook_delete(
    State(state): State<AppState>,
    ctx: RequestCtx,
    can: Can<WebhooksWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.webhooks.delete(&ctx, &can.who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/admin/webhooks/{id}/rotate-secret` (the body is optional).
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

/// `POST /v1/admin/webhooks/{id}/test`: a `webhook.test` event to this endpoint.
pub async fn webhook_test(
    State(state): State<AppState>,
    ctx: RequestCtx,
    can: Can<WebhooksWrite>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let delivery = state.webhooks.test(&ctx, &can.who, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery)).into_response())
}

/// `GET /v1/admin/webhooks/{id}/deliveries?status=pending|delivered|failed`.
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

/// `GET /v1/admin/webhooks/{id}/deliveries/{delivery_id}`.
pub async fn webhook_delivery_get(
    State(state): State<AppState>,
    _can: Can<WebhooksRead>,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Json<WebhookDelivery>, ApiError> {
    Ok(Json(state.webhooks.delivery(&id, &delivery_id).await?))
}

/// `POST /v1/admin/webhooks/{id}/deliveries/{delivery_id}/retry`: the event again,
/// same `webhook-id`, as a new delivery.
pub async fn webhook_delivery_retry(
    State(state): State<AppState>,
    ctx: RequestCtx,
    can: Can<WebhooksWrite>,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let delivery = state.webhooks.retry(&ctx, &can.who, &id, &delivery_id).await?;
    Ok((StatusCode::ACCEPTED, Json(delivery)).into_response())
}

/// `POST /v1/admin/webhooks/{id}/replay {"since": RFC 3339}`.
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
