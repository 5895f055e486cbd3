//! Webhook endpoints, for `/v1/admin/webhooks` and `portcullis webhooks`: create
//! (the secret shown once), read, change, rotate the secret, delete, send a test
//! event, read the delivery log, retry a delivery, replay a period. The sending
//! itself is [`deliver`]; the events are `crate::events`.
//!
//! A URL is judged when it is set and again at every delivery (`outbound`): it
//! must be `https` (plain `http` only to loopback, and only with
//! `security.danger_allow_private_targets`), and neither an address literal nor
//! what the name resolves to may be private, loopback, link-local or metadata. A
//! name that does not resolve yet is accepted; each delivery checks it again.

pub mod deliver;

use std::{net::IpAddr, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use portcullis_proto::{
    FieldError, WebhookAttempt, WebhookCreateRequest, WebhookDelivery, WebhookEndpoint, WebhookUpdateRequest,
};

use crate::{
    audit::{Audit, Event as AuditEvent},
    auth::AuthError,
    clock::rfc3339,
    crypto::{self, MasterKey, Secret},
    ctx::{Principal, RequestCtx},
    events::{self, Event, Payload, TEST_EVENT},
    outbound::Policy,
    page::{cursor_decode, page_limit, paginate},
    store::{Db, EndpointPatch, EndpointRow, OutboxRow, OutboxStatus},
    validate::field,
};

/// The sealing context of endpoint secrets.
pub(crate) const SEAL: &str = "webhook_secret";
/// The longest a rotated-out secret keeps signing.
const MAX_GRACE_SECS: u64 = 30 * 86_400;
/// The most event types one endpoint lists.
const MAX_EVENTS: usize = 64;
/// The most deliveries one replay queues.
const MAX_REPLAY_USIZE: usize = 10_000;
/// Deliveries read (and queued again) per commit of a replay.
const REPLAY_PAGE: i64 = 200;
/// How long creation waits for a name to resolve before accepting it unchecked.
const RESOLVE_WAIT: Duration = Duration::from_secs(2);

/// Webhook administration.
pub struct Webhooks {
    db: Db,
    master: Arc<MasterKey>,
    policy: Policy,
    audit: Audit,
}

/// A fresh secret: `whsec_` and base64 of 32 random bytes.
fn new_secret() -> Secret {
    Secret::new(format!("whsec_{}", STANDARD.encode(crypto::random_bytes::<32>())))
}

/// An endpoint as the API shows it; `secret` only when just made.
pub fn endpoint_view(e: &EndpointRow, secret: Option<&Secret>) -> WebhookEndpoint {
    WebhookEndpoint {
        id: e.id.clone(),
        url: e.url.clone(),
        description: e.description.clone(),
        events: e.events.clone(),
        enabled: e.enabled,
        disabled_reason: e.disabled_reason.clone(),
        failing_since: e.failing_since.map(rfc3339),
        previous_secret_expires_at: e.previous_expires_at.filter(|_| e.previous_secret.is_some()).map(rfc3339),
        secret: secret.map(|s| s.expose().to_owned()),
        created_at: rfc3339(e.created_at),
        updated_at: rfc3339(e.updated_at),
    }
}

/// A delivery as the API shows it, with its attempts.
pub fn delivery_view(r: &OutboxRow, history: Vec<crate::store::AttemptRow>) -> WebhookDelivery {
    let p: Option<Payload> = serde_json::from_str(&r.payload).ok();
    WebhookDelivery {
        id: r.id.clone(),
        endpoint_id: r.target.clone().unwrap_or_default(),
        event_id: p.as_ref().map(|p| p.event_id.clone()).unwrap_or_default(),
        event_type: p.map(|p| p.event_type).unwrap_or_default(),
        status: r.status.as_str().to_owned(),
        attempts: r.attempts,
        last_error: r.last_error.clone(),
        created_at: rfc3339(r.created_at),
        next_attempt_at: (r.status == OutboxStatus::Pending).then(|| rfc3339(r.next_attempt_at)),
        delivered_at: r.delivered_at.map(rfc3339),
        history: history
            .into_iter()
            .map(|a| WebhookAttempt {
                attempt: a.attempt,
                at: rfc3339(a.at),
                status_code: a.status_code,
                latency_ms: a.latency_ms,
                response: a.response,
                error: a.error,
            })
            .collect(),
    }
}

/// Checks event type names: `*` or known types, at least one.
fn check_events(events: &[String], errors: &mut Vec<FieldError>) -> Vec<String> {
    if events.is_empty() || events.len() > MAX_EVENTS {
        errors.push(field("events", "invalid_length", "lists 1 to 64 event types, or [\"*\"]"));
    }
    for (i, e) in events.iter().enumerate() {
        if e != "*" && !events::known(e) {
            errors.push(field(&format!("events[{i}]"), "unknown_event", "is not an event type (see the docs)"));
        }
    }
    let mut out = events.to_vec();
    out.sort();
    out.dedup();
    if out.iter().any(|e| e == "*") {
        out = vec!["*".into()];
    }
    out
}

fn check_description(d: Option<String>, errors: &mut Vec<FieldError>) -> Option<String> {
    let d = d.map(|d| d.trim().to_owned()).filter(|d| !d.is_empty())?;
    if d.chars().count() > 500 || d.chars().any(char::is_control) {
        errors.push(field("description", "invalid_format", "is at most 500 characters, without control characters"));
    }
    Some(d)
}

/// The read permission whose data events of `event_type` carry: an endpoint is
/// a standing read of everything it receives, so whoever points one somewhere must
/// be allowed to read that data anyway.
fn read_scope(event_type: &str) -> Option<&'static str> {
    let family = event_type.split('.').next().unwrap_or_default();
    match family {
        "webhook" => None,
        "role" => Some("admin:roles:read"),
        "api_key" => Some("admin:keys:read"),
        "client" => Some("admin:clients:read"),
        _ => Some("admin:users:read"),
    }
}

/// The read permissions an endpoint taking `events` needs, sorted.
fn read_scopes(events: &[String]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = if events.iter().any(|e| e == "*") {
        events::TYPES.iter().filter_map(|(t, _)| read_scope(t)).collect()
    } else {
        events.iter().filter_map(|e| read_scope(e)).collect()
    };
    out.sort_unstable();
    out.dedup();
    out
}

/// Checks a URL as the module documentation says; refusals are field errors.
pub async fn check_url(policy: &Policy, url: &str) -> Result<String, FieldError> {
    let bad = |msg: &str| field("url", "invalid_url", msg);
    if url.len() > 2000 {
        return Err(bad("must be at most 2000 characters"));
    }
    let parsed = url::Url::parse(url).map_err(|_| bad("must be an absolute URL"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() || parsed.fragment().is_some() {
        return Err(bad("must not hold credentials or a fragment"));
    }
    let host = parsed.host().ok_or_else(|| bad("must name a host"))?;
    let literal: Option<IpAddr> = match host {
        url::Host::Ipv4(v4) => Some(v4.into()),
        url::Host::Ipv6(v6) => Some(v6.into()),
        url::Host::Domain(_) => None,
    };
    let loopback = crate::clients::is_loopback(parsed.host_str().unwrap_or_default());
    match parsed.scheme() {
        "https" => {}
        "http" if loopback && policy.allow_private => {}
        _ => return Err(bad("must be https")),
    }
    let refused = |ip: IpAddr| !policy.permits(ip);
    if let Some(ip) = literal {
        if refused(ip) {
            return Err(bad("is a private, loopback, link-local or metadata address"));
        }
    } else if let Ok(Ok(found)) = tokio::time::timeout(
        RESOLVE_WAIT,
        tokio::net::lookup_host((parsed.host_str().unwrap_or_default(), parsed.port_or_known_default().unwrap_or(443))),
    )
    .await
    {
        let found: Vec<_> = found.collect();
        if found.iter().any(|a| refused(a.ip())) {
            return Err(bad("resolves to a private, loopback, link-local or metadata address"));
        }
    }
    Ok(parsed.to_string())
}

/// The one delivery just queued.
fn first(ids: &[String]) -> Result<&str, AuthError> {
    ids.first().map(String::as_str).ok_or_else(|| AuthError::Internal("no delivery was queued".into()))
}

impl Webhooks {
    /// Wires the service.
    pub fn new(db: Db, master: Arc<MasterKey>, policy: Policy, audit: Audit) -> Self {
        Self { db, master, policy, audit }
    }

    async fn audit(&self, ctx: &RequestCtx, who: &Principal, kind: &str, id: &str) {
        let e = AuditEvent { kind, success: true, user_id: None, actor: Some(who.actor()), reason: Some(id) };
        self.audit.record(ctx, e).await;
    }

    /// Refuses to point `events` anywhere for a caller who may not read their
    /// data (see [`read_scope`]).
    fn may_direct(&self, who: &Principal, events: &[String]) -> Result<(), AuthError> {
        crate::rbac::require_scope(who, &read_scopes(events)).map_err(|d| AuthError::Denied(d.required))
    }

    fn seal(&self, secret: &Secret) -> Result<String, AuthError> {
        self.master.seal(SEAL, secret.expose().as_bytes()).map_err(|e| AuthError::Internal(e.to_string()))
    }

    /// Registers an endpoint; its view carries the secret, this once.
    pub async fn create(
        &self,
        ctx: &RequestCtx,
        who: &Principal,
        req: WebhookCreateRequest,
    ) -> Result<WebhookEndpoint, AuthError> {
        let mut errors = Vec::new();
        let url = check_url(&self.policy, &req.url).await.map_err(|e| errors.push(e)).ok();
        let events = check_events(&req.events, &mut errors);
        let description = check_description(req.description, &mut errors);
        let Some(url) = url.filter(|_| errors.is_empty()) else {
            return Err(AuthError::Validation(errors));
        };
        self.may_direct(who, &events)?;
        let secret = new_secret();
        let row = EndpointRow {
            id: crypto::new_id("whe", ctx.now),
            url,
            description,
            events,
            enabled: req.enabled.unwrap_or(true),
            secret: self.seal(&secret)?,
            previous_secret: None,
            previous_expires_at: None,
            failing_since: None,
            disabled_reason: None,
            created_at: ctx.now,
            updated_at: ctx.now,
        };
        self.db.webhook_insert(&row).await?;
        self.audit(ctx, who, "webhook_created", &row.id).await;
        Ok(endpoint_view(&row, Some(&secret)))
    }

    /// One endpoint.
    pub async fn get(&self, id: &str) -> Result<WebhookEndpoint, AuthError> {
        Ok(endpoint_view(&self.row(id).await?, None))
    }

    async fn row(&self, id: &str) -> Result<EndpointRow, AuthError> {
        self.db.webhook_get(id).await?.ok_or(AuthError::NotFound)
    }

    /// A page of endpoints.
    pub async fn list(
        &self,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<(Vec<WebhookEndpoint>, Option<String>), AuthError> {
        let limit = page_limit(limit)?;
        let after = cursor_decode(cursor)?;
        let rows = self.db.webhook_list(after.as_deref(), limit + 1).await?;
        let (rows, next) = paginate(rows, limit, |e| &e.id);
        Ok((rows.iter().map(|e| endpoint_view(e, None)).collect(), next))
    }

    /// Changes the fields given.
    pub async fn update(
        &self,
        ctx: &RequestCtx,
        who: &Principal,
        id: &str,
        req: WebhookUpdateRequest,
    ) -> Result<WebhookEndpoint, AuthError> {
        let mut errors = Vec::new();
        let url = match req.url {
            Some(u) => check_url(&self.policy, &u).await.map_err(|e| errors.push(e)).ok(),
            None => None,
        };
        let events = req.events.map(|e| check_events(&e, &mut errors));
        let description = req.description.map(|d| check_description(d, &mut errors));
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        // A new URL or new events direct data somewhere: as at creation.
        if url.is_some() || events.is_some() {
            let now_events = match &events {
                Some(e) => e.clone(),
                None => self.row(id).await?.events,
            };
            self.may_direct(who, &now_events)?;
        }
        let patch = EndpointPatch { url, description, events, enabled: req.enabled };
        let row = self.db.webhook_update(id, &patch, ctx.now).await?.ok_or(AuthError::NotFound)?;
        self.audit(ctx, who, "webhook_updated", id).await;
        Ok(endpoint_view(&row, None))
    }

    /// Deletes an endpoint; what it had pending is given up.
    pub async fn delete(&self, ctx: &RequestCtx, who: &Principal, id: &str) -> Result<(), AuthError> {
        if !self.db.webhook_delete(id).await? {
            return Err(AuthError::NotFound);
        }
        self.audit(ctx, who, "webhook_deleted", id).await;
        Ok(())
    }

    /// A new secret; the old one keeps signing beside it for `grace_secs`.
    pub async fn rotate(
        &self,
        ctx: &RequestCtx,
        who: &Principal,
        id: &str,
        grace_secs: u64,
    ) -> Result<WebhookEndpoint, AuthError> {
        let grace_ms = i64::try_from(grace_secs.min(MAX_GRACE_SECS)).unwrap_or(0) * 1000;
        let secret = new_secret();
        let until = (grace_ms > 0).then(|| ctx.now + grace_ms);
        let row =
            self.db.webhook_set_secret(id, &self.seal(&secret)?, until, ctx.now).await?.ok_or(AuthError::NotFound)?;
        self.audit(ctx, who, "webhook_secret_rotated", id).await;
        Ok(endpoint_view(&row, Some(&secret)))
    }

    /// Queues a `webhook.test` event to this endpoint alone.
    pub async fn test(&self, ctx: &RequestCtx, who: &Principal, id: &str) -> Result<WebhookDelivery, AuthError> {
        let row = self.row(id).await?;
        let data = serde_json::json!({"endpoint_id": row.id, "message": "a test event from Portcullis"});
        let event = Event::new(TEST_EVENT, data, ctx.now);
        let ids = self.db.webhook_requeue(id, &[event.payload()], ctx.now).await?;
        self.audit(ctx, who, "webhook_tested", id).await;
        self.delivery(id, first(&ids)?).await
    }

    /// One delivery of an endpoint, with its attempts.
    pub async fn delivery(&self, id: &str, delivery_id: &str) -> Result<WebhookDelivery, AuthError> {
        let row = self.db.outbox_get(delivery_id).await?.filter(|r| r.target.as_deref() == Some(id));
        let row = row.ok_or(AuthError::NotFound)?;
        let history = self.db.webhook_attempts(&row.id).await?;
        Ok(delivery_view(&row, history))
    }

    /// A page of an endpoint's deliveries, newest first.
    pub async fn deliveries(
        &self,
        id: &str,
        status: Option<OutboxStatus>,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<(Vec<WebhookDelivery>, Option<String>), AuthError> {
        self.row(id).await?;
        let limit = page_limit(limit)?;
        let before = cursor_decode(cursor)?;
        let rows = self.db.webhook_deliveries(id, status, before.as_deref(), limit + 1).await?;
        let (rows, next) = paginate(rows, limit, |r| &r.id);
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(delivery_view(r, self.db.webhook_attempts(&r.id).await?));
        }
        Ok((out, next))
    }

    /// Sends a delivery's event again, as a new delivery with the same
    /// `webhook-id` and a fresh schedule.
    pub async fn retry(
        &self,
        ctx: &RequestCtx,
        who: &Principal,
        id: &str,
        delivery_id: &str,
    ) -> Result<WebhookDelivery, AuthError> {
        let row = self.db.outbox_get(delivery_id).await?.filter(|r| r.target.as_deref() == Some(id));
        let row = row.ok_or(AuthError::NotFound)?;
        let event_type = serde_json::from_str::<Payload>(&row.payload).map(|p| p.event_type).unwrap_or_default();
        if event_type != TEST_EVENT && !self.row(id).await?.wants(&event_type) {
            let why = format!("the endpoint no longer subscribes to {event_type}");
            return Err(AuthError::Validation(vec![field("delivery_id", "not_subscribed", &why)]));
        }
        self.may_direct(who, &[event_type])?;
        let ids = self.db.webhook_requeue(id, &[row.payload], ctx.now).await?;
        self.audit(ctx, who, "webhook_retried", delivery_id).await;
        self.delivery(id, first(&ids)?).await
    }

    /// Sends every event delivered (or not) to the endpoint since `since` again,
    /// once each, with their own `webhook-id`s; how many were queued.
    pub async fn replay(&self, ctx: &RequestCtx, who: &Principal, id: &str, since: &str) -> Result<usize, AuthError> {
        let Some(since) = crate::clock::parse_rfc3339(since) else {
            return Err(AuthError::Validation(vec![field("since", "invalid_format", "is an RFC 3339 time")]));
        };
        let row = self.row(id).await?;
        self.may_direct(who, &row.events)?;
        let Some(upto) = self.db.webhook_last_delivery(id).await? else { return Ok(0) };
        // A page at a time, each queued in its own commit: memory and the write
        // lock stay bounded whatever the period holds.
        let (mut after, mut seen, mut queued) = (String::new(), std::collections::HashSet::new(), 0);
        while queued < MAX_REPLAY_USIZE {
            let page = self.db.webhook_sent_since(id, since, &after, &upto, REPLAY_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.0.clone();
            let once: Vec<String> = page
                .into_iter()
                .map(|(_, p)| p)
                .filter(|p| {
                    serde_json::from_str::<Payload>(p)
                        .is_ok_and(|p| row.wants(&p.event_type) && seen.insert(p.event_id))
                })
                .take(MAX_REPLAY_USIZE - queued)
                .collect();
            queued += self.db.webhook_requeue(id, &once, ctx.now).await?.len();
        }
        let why = format!("{id}: {queued} events since {}", rfc3339(since));
        self.audit(ctx, who, "webhook_replayed", &why).await;
        Ok(queued)
    }
}
