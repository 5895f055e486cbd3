//! Sending webhook deliveries: the outbox's deliverer of kind
//! [`crate::store::WEBHOOK_KIND`]. Each attempt POSTs the event's body through the
//! guarded outbound client (the address judged after DNS, no redirects followed,
//! `webhooks.timeout`), signed by the Standard Webhooks scheme under the endpoint's
//! secret (and, during a rotation's grace, the previous one too), and records the
//! attempt in the delivery log. A 2xx answer is delivered; anything else is retried
//! on `webhooks.retry_schedule` with jitter, then given up. An endpoint that has
//! failed for `webhooks.disable_after` is disabled, audited and its operators
//! mailed.
//!
//! Order is best effort per endpoint: deliveries are claimed oldest first, but a
//! retry waits its turn while newer events go out, and several run at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, USER_AGENT};

use super::SEAL;
use crate::{
    audit::Event as AuditEvent,
    config::WebhooksConfig,
    crypto::{self, MasterKey},
    ctx::RequestCtx,
    events::{Payload, TEST_EVENT},
    jobs::outbox::{Attempt, Deliver, Failed, Next},
    outbound::Outbound,
    store::{AttemptRow, Db, EndpointRow, OutboxRow},
};

/// What is kept of an answer in the delivery log.
const KEEP_RESPONSE: usize = 1024;
/// How long a delivery waits when its endpoint already has its share in flight.
const BUSY_WAIT: Duration = Duration::from_millis(250);

/// Composes the operators' notice about a disabled endpoint (a mail, queued in
/// the transaction that disables it).
pub struct Notify {
    /// The mail service.
    pub mailer: Arc<crate::mail::Mailer>,
}

/// The webhook deliverer.
pub struct Sender {
    db: Db,
    outbound: Outbound,
    master: Arc<MasterKey>,
    cfg: WebhooksConfig,
    notify: Option<Notify>,
    /// Deliveries in flight per endpoint on this node.
    in_flight: Mutex<HashMap<String, usize>>,
}

/// Holds one of an endpoint's in-flight places until dropped.
struct Place<'a> {
    sender: &'a Sender,
    endpoint: String,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut map = self.sender.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.endpoint) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.endpoint);
            }
        }
    }
}

/// What one attempt got.
struct Answer {
    status: Option<u16>,
    body: Option<String>,
    error: Option<String>,
}

impl Sender {
    /// Wires the deliverer.
    pub fn new(
        db: Db,
        outbound: Outbound,
        master: Arc<MasterKey>,
        cfg: WebhooksConfig,
        notify: Option<Notify>,
    ) -> Self {
        Self { db, outbound, master, cfg, notify, in_flight: Mutex::new(HashMap::new()) }
    }

    fn take_place(&self, endpoint: &str) -> Option<Place<'_>> {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(endpoint.to_owned()).or_insert(0);
        if *n >= self.cfg.max_in_flight_per_endpoint {
            return None;
        }
        *n += 1;
        Some(Place { sender: self, endpoint: endpoint.to_owned() })
    }

    /// The `webhook-signature` value: one `v1,` signature per live secret.
    fn signatures(&self, e: &EndpointRow, id: &str, ts: i64, body: &[u8], now: i64) -> Result<String, String> {
        let mut sealed = vec![e.secret.as_str()];
        if let (Some(prev), Some(until)) = (&e.previous_secret, e.previous_expires_at)
            && until > now
        {
            sealed.push(prev);
        }
        let mut out = Vec::with_capacity(sealed.len());
        for s in sealed {
            let plain = self.master.open(SEAL, s).map_err(|e| format!("cannot open the endpoint secret: {e}"))?;
            let secret = String::from_utf8(plain).map_err(|_| "the endpoint secret is not text".to_owned())?;
            let key = crypto::webhook_key(&secret).map_err(|e| e.to_string())?;
            out.push(crypto::webhook_signature(&key, id, ts, body));
        }
        Ok(out.join(" "))
    }

    fn headers(id: &str, ts: i64, signature: &str) -> Result<HeaderMap, String> {
        let mut h = HeaderMap::new();
        let value = |v: &str| HeaderValue::from_str(v).map_err(|e| e.to_string());
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(USER_AGENT, HeaderValue::from_static(concat!("Portcullis-Webhooks/", env!("CARGO_PKG_VERSION"))));
        for prefix in ["webhook", "svix"] {
            let name = |n: &str| HeaderName::from_bytes(format!("{prefix}-{n}").as_bytes()).map_err(|e| e.to_string());
            h.insert(name("id")?, value(id)?);
            h.insert(name("timestamp")?, value(&ts.to_string())?);
            h.insert(name("signature")?, value(signature)?);
        }
        Ok(h)
    }

    /// POSTs and reads at most a KiB of the answer.
    async fn post(&self, url: &str, headers: HeaderMap, body: String) -> Answer {
        let timeout = self.cfg.timeout.0;
        // Errors name no URL: a receiver's URL often holds a token of its own.
        let sent = self.outbound.post_quiet(url, |r| r.headers(headers).body(body).timeout(timeout)).await;
        let mut res = match sent {
            Ok(res) => res,
            Err(e) => return Answer { status: None, body: None, error: Some(e) },
        };
        let status = res.status().as_u16();
        let mut kept: Vec<u8> = Vec::new();
        let mut error = None;
        while kept.len() < KEEP_RESPONSE {
            match tokio::time::timeout(timeout, res.chunk()).await {
                Ok(Ok(Some(chunk))) => kept.extend_from_slice(&chunk),
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    error = Some(format!("reading the answer: {e}"));
                    break;
                }
                Err(_) => break,
            }
        }
        kept.truncate(KEEP_RESPONSE);
        // PostgreSQL text holds no NUL.
        let text = String::from_utf8_lossy(&kept).replace('\0', "\u{fffd}");
        Answer { status: Some(status), body: (!text.is_empty()).then_some(text), error }
    }

    /// When the attempt after attempt number `tries` is due, with ±10 % jitter;
    /// `None` after the last.
    fn next_delay(&self, tries: i64) -> Option<Duration> {
        let i = usize::try_from(tries.saturating_sub(1)).ok()?;
        let base = self.cfg.retry_schedule.get(i)?.0;
        let [r] = crypto::random_bytes::<1>();
        let spread = base.as_millis() as f64 * 0.2 * (f64::from(r) / 255.0 - 0.5);
        Some(Duration::from_millis((base.as_millis() as f64 + spread).max(0.0) as u64))
    }

    async fn attempt(&self, m: &OutboxRow) -> Result<(), Failed> {
        let never = |why: &str| Failed { why: why.to_owned(), next: Next::Never };
        let Some(target) = m.target.as_deref() else { return Err(never("a webhook delivery without an endpoint")) };
        let Some(_place) = self.take_place(target) else {
            return Err(Failed { why: "endpoint busy".into(), next: Next::Defer(BUSY_WAIT) });
        };
        // A database hiccup is not the receiver's failure: no attempt is counted.
        let endpoint = self
            .db
            .webhook_get(target)
            .await
            .map_err(|e| Failed { why: e.to_string(), next: Next::Defer(Duration::from_secs(1)) })?;
        let Some(endpoint) = endpoint else { return Err(never("endpoint deleted")) };
        if !endpoint.enabled {
            return Err(never("endpoint disabled"));
        }
        let p: Payload = serde_json::from_str(&m.payload).map_err(|e| never(&format!("unreadable payload: {e}")))?;
        // What an endpoint receives is what it subscribes to now: narrowing its
        // events (which needs no read permission) cannot carry older data elsewhere.
        if p.event_type != TEST_EVENT && !endpoint.wants(&p.event_type) {
            return Err(never("the endpoint no longer subscribes to this event type"));
        }
        let now = crate::clock::now_ms();
        let ts = now / 1000;
        let signature = self.signatures(&endpoint, &p.event_id, ts, p.body.as_bytes(), now).map_err(|e| never(&e))?;
        let headers = Self::headers(&p.event_id, ts, &signature).map_err(|e| never(&e))?;
        let started = Instant::now();
        let answer = self.post(&endpoint.url, headers, p.body).await;
        let took = started.elapsed();
        metrics::histogram!("portcullis_webhook_delivery_seconds").record(took.as_secs_f64());
        let ok = answer.status.is_some_and(|s| (200..300).contains(&s));
        let error = match (&answer.error, answer.status) {
            (Some(e), _) => Some(e.clone()),
            (None, Some(s)) if !ok => Some(format!("the receiver answered {s}")),
            _ => None,
        };
        self.log(m, target, now, took, &answer, error.clone()).await;
        if ok {
            if let Err(e) = self.db.webhook_succeeded(target).await {
                tracing::warn!(error = %e, endpoint = %target, "recording a webhook success failed");
            }
            return Ok(());
        }
        let why = error.unwrap_or_else(|| "no answer".into());
        self.failing(&endpoint, now).await;
        Err(match self.next_delay(m.tries()) {
            Some(d) => Failed { why, next: Next::After(d) },
            None => Failed { why, next: Next::Never },
        })
    }

    async fn log(&self, m: &OutboxRow, target: &str, at: i64, took: Duration, a: &Answer, error: Option<String>) {
        let row = AttemptRow {
            id: crypto::new_id("wha", at),
            delivery_id: m.id.clone(),
            endpoint_id: target.to_owned(),
            attempt: m.tries(),
            at,
            status_code: a.status.map(i64::from),
            latency_ms: i64::try_from(took.as_millis()).unwrap_or(i64::MAX),
            response: a.body.clone(),
            error: error.map(|e| e.chars().take(1000).collect()),
        };
        if let Err(e) = self.db.webhook_attempt_insert(&row).await {
            tracing::warn!(error = %e, delivery = %m.id, "logging a webhook attempt failed");
        }
    }

    /// Counts a failure against the endpoint; past `disable_after`, disables it,
    /// with its audit record and the mail to `webhooks.notify_email` in the same
    /// commit.
    async fn failing(&self, e: &EndpointRow, now: i64) {
        if let Err(err) = self.try_failing(e, now).await {
            tracing::warn!(error = %err, endpoint = %e.id, "recording a webhook failure failed");
        }
    }

    async fn try_failing(&self, e: &EndpointRow, now: i64) -> crate::store::StoreResult<()> {
        let after = i64::try_from(self.cfg.disable_after.0.as_millis()).unwrap_or(i64::MAX);
        let reason = format!("failing for {} without a success", self.cfg.disable_after);
        let mut tx = self.db.write().await?;
        if !tx.webhook_failing(&e.id, now, after, &reason).await? {
            return tx.commit().await;
        }
        let why = format!("{}: {reason}", e.id);
        let event =
            AuditEvent { kind: "webhook_disabled", success: true, user_id: None, actor: None, reason: Some(&why) };
        tx.audit_insert(&crate::audit::record_of(&RequestCtx::system(), event)).await?;
        if let (Some(notify), Some(to)) = (&self.notify, &self.cfg.notify_email) {
            let detail = format!("{} {}", e.id, e.url);
            let mail = notify.mailer.queue_notice(to, crate::mail::Template::WebhookDisabled, &detail);
            tx.outbox_enqueue(crate::mail::KIND, &mail, now).await?;
        }
        tx.commit().await?;
        tracing::warn!(endpoint = %e.id, "webhook endpoint disabled: {reason}");
        Ok(())
    }
}

impl Deliver for Sender {
    fn deliver<'a>(&'a self, message: &'a OutboxRow) -> Attempt<'a> {
        Box::pin(self.attempt(message))
    }

    fn saturated(&self) -> Vec<String> {
        let map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        map.iter().filter(|(_, n)| **n >= self.cfg.max_in_flight_per_endpoint).map(|(k, _)| k.clone()).collect()
    }
}
