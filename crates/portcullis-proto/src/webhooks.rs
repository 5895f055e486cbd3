//! Webhook endpoints and their delivery log, as `/v1/admin/webhooks` takes and
//! shows them.

use serde::{Deserialize, Serialize};

use crate::double_option;

/// `POST /v1/admin/webhooks` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WebhookCreateRequest {
    /// Where events are POSTed (`https`).
    pub url: String,
    /// Event types, or `["*"]` for all.
    pub events: Vec<String>,
    /// For people.
    #[serde(default)]
    pub description: Option<String>,
    /// Default `true`.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `PATCH /v1/admin/webhooks/{id}` body: the fields given are replaced.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WebhookUpdateRequest {
    /// New URL.
    #[serde(default)]
    pub url: Option<String>,
    /// New event types.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// New description; `null` clears it.
    #[serde(default, with = "double_option", skip_serializing_if = "Option::is_none")]
    pub description: Option<Option<String>>,
    /// Turn sending on or off; turning it on forgets the failures that disabled it.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `POST /v1/admin/webhooks/{id}/rotate-secret` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WebhookRotateRequest {
    /// Seconds the old secret keeps signing beside the new one (default 0).
    #[serde(default)]
    pub grace_seconds: Option<u64>,
}

/// `POST /v1/admin/webhooks/{id}/replay` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WebhookReplayRequest {
    /// RFC 3339: every event sent to the endpoint since then is sent again.
    pub since: String,
}

/// `POST /v1/admin/webhooks/{id}/replay` reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookReplayResponse {
    /// Deliveries queued.
    pub queued: usize,
}

/// An endpoint.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookEndpoint {
    /// `whe_…`.
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// For people.
    pub description: Option<String>,
    /// Event types it takes; `["*"]` is all.
    pub events: Vec<String>,
    /// Whether events are sent.
    pub enabled: bool,
    /// Why the server disabled it (failing for `webhooks.disable_after`).
    pub disabled_reason: Option<String>,
    /// RFC 3339 start of its current run of failed deliveries.
    pub failing_since: Option<String>,
    /// RFC 3339 time until which the previous secret still signs.
    pub previous_secret_expires_at: Option<String>,
    /// `whsec_…`: only in the reply that created or rotated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

/// One attempt of a delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookAttempt {
    /// 1 for the first.
    pub attempt: i64,
    /// RFC 3339 time it began.
    pub at: String,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<i64>,
    /// How long it took.
    pub latency_ms: i64,
    /// The first KiB of the receiver's answer.
    pub response: Option<String>,
    /// Why no good answer came (timeout, refused address, …).
    pub error: Option<String>,
}

/// One event sent to one endpoint, with every attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookDelivery {
    /// `obx_…`.
    pub id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// `msg_…`: the `webhook-id` header, the same on every attempt and replay.
    pub event_id: String,
    /// The event type.
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub status: String,
    /// Attempts so far.
    pub attempts: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// RFC 3339 time it was queued.
    pub created_at: String,
    /// RFC 3339 time of the next attempt, while pending.
    pub next_attempt_at: Option<String>,
    /// RFC 3339 time it was delivered.
    pub delivered_at: Option<String>,
    /// The attempts, first first.
    pub history: Vec<WebhookAttempt>,
}
