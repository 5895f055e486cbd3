//! Webhook endpoints, the fan-out of an event into one delivery per subscribed
//! endpoint, and the log of every delivery attempt.
//!
//! Contract:
//! - [`fanout`] runs inside the write transaction of the change its event
//!   announces: the deliveries (outbox rows of kind [`KIND`], `target` = endpoint)
//!   exist exactly when the change committed. Endpoints subscribed at that moment
//!   get it; one disabled or created later does not (a replay can send it).
//! - An endpoint is disabled by the one node whose conditional UPDATE flips
//!   `enabled` ([`Db::webhook_failing`]); that node alone audits and mails it.

use super::{Db, OutboxRow, OutboxStatus, StoreResult, col, outbox};

/// The outbox kind of webhook deliveries.
pub const KIND: &str = "webhook";

/// An endpoint as stored (its secrets sealed).
#[derive(Debug, Clone)]
pub struct EndpointRow {
    /// `whe_…`.
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// For people.
    pub description: Option<String>,
    /// Event types it takes, JSON array; `["*"]` for all.
    pub events: Vec<String>,
    /// Whether events are sent.
    pub enabled: bool,
    /// The signing secret (`whsec_…`), sealed under the master key.
    pub secret: String,
    /// The secret before the last rotation, sealed, while its grace lasts.
    pub previous_secret: Option<String>,
    /// Milliseconds until which the previous secret signs too.
    pub previous_expires_at: Option<i64>,
    /// Milliseconds: when its current run of failures began.
    pub failing_since: Option<i64>,
    /// Why it was disabled by the server.
    pub disabled_reason: Option<String>,
    /// Milliseconds.
    pub created_at: i64,
    /// Milliseconds.
    pub updated_at: i64,
}

impl EndpointRow {
    /// Whether it takes events of `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        wants(&self.events, event_type)
    }
}

fn wants(events: &[String], event_type: &str) -> bool {
    events.iter().any(|e| e == "*" || e == event_type)
}

/// One attempt at a delivery.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    /// `wha_…`.
    pub id: String,
    /// The outbox row.
    pub delivery_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// 1 for the first.
    pub attempt: i64,
    /// Milliseconds, when it began.
    pub at: i64,
    /// The receiver's status, if it answered.
    pub status_code: Option<i64>,
    /// How long it took.
    pub latency_ms: i64,
    /// The first KiB of the answer.
    pub response: Option<String>,
    /// Why no (good) answer came.
    pub error: Option<String>,
}

/// A change of an endpoint (`None`: unchanged).
#[derive(Debug, Default)]
pub struct EndpointPatch {
    /// New URL.
    pub url: Option<String>,
    /// New description (`Some(None)` clears).
    pub description: Option<Option<String>>,
    /// New event types.
    pub events: Option<Vec<String>>,
    /// Enabled or not; enabling clears the failure record.
    pub enabled: Option<bool>,
}

const COLS: &str = "id, url, description, events, enabled, secret, previous_secret, previous_expires_at, \
                    failing_since, disabled_reason, created_at, updated_at";

fn from_row(row: &sqlx::any::AnyRow) -> StoreResult<EndpointRow> {
    let events: String = col(row, "events")?;
    Ok(EndpointRow {
        id: col(row, "id")?,
        url: col(row, "url")?,
        description: col(row, "description")?,
        events: serde_json::from_str(&events)
            .map_err(|e| super::StoreError::Corrupt(format!("webhook events: {e}")))?,
        enabled: col::<i64>(row, "enabled")? != 0,
        secret: col(row, "secret")?,
        previous_secret: col(row, "previous_secret")?,
        previous_expires_at: col(row, "previous_expires_at")?,
        failing_since: col(row, "failing_since")?,
        disabled_reason: col(row, "disabled_reason")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

fn events_text(events: &[String]) -> String {
    serde_json::Value::from(events.to_vec()).to_string()
}

/// Adds `n` committed deliveries to `portcullis_webhook_deliveries_queued_total`;
/// called after the commit, so a rolled-back change counts nothing.
pub(super) fn count_queued(n: usize) {
    if n > 0 {
        metrics::counter!("portcullis_webhook_deliveries_queued_total").increment(n as u64);
    }
}

/// One delivery per enabled endpoint that takes `event_type`, written on the
/// change's own transaction; how many.
pub(super) async fn fanout(
    conn: &mut sqlx::AnyConnection,
    event_type: &str,
    payload: &str,
    now: i64,
) -> StoreResult<usize> {
    let rows = sqlx::query("SELECT id, events FROM webhook_endpoints WHERE enabled = 1 ORDER BY id")
        .fetch_all(&mut *conn)
        .await?;
    let mut n = 0;
    for row in &rows {
        let events: Vec<String> = serde_json::from_str(&col::<String>(row, "events")?).unwrap_or_default();
        if wants(&events, event_type) {
            let id: String = col(row, "id")?;
            outbox::enqueue_to(&mut *conn, KIND, Some(&id), payload, now).await?;
            n += 1;
        }
    }
    Ok(n)
}

/// Records a failed delivery on the caller's write transaction: starts the
/// endpoint's run of failures if none is running, and disables it once that run
/// is older than `disable_after_ms`. Whether this call disabled it (exactly one
/// caller does).
pub(super) async fn failing(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    now: i64,
    disable_after_ms: i64,
    reason: &str,
) -> StoreResult<bool> {
    sqlx::query("UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $1) WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = $1, updated_at = $2 \
         WHERE id = $3 AND enabled = 1 AND failing_since <= $4",
    )
    .bind(reason)
    .bind(now)
    .bind(id)
    .bind(now.saturating_sub(disable_after_ms))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

impl Db {
    /// Stores a new endpoint.
    pub async fn webhook_insert(&self, e: &EndpointRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, url, description, events, enabled, secret, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&e.id)
        .bind(&e.url)
        .bind(&e.description)
        .bind(events_text(&e.events))
        .bind(i64::from(e.enabled))
        .bind(&e.secret)
        .bind(e.created_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// One endpoint.
    pub async fn webhook_get(&self, id: &str) -> StoreResult<Option<EndpointRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM webhook_endpoints WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Endpoints by id, after the cursor id `after`.
    pub async fn webhook_list(&self, after: Option<&str>, limit: i64) -> StoreResult<Vec<EndpointRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM webhook_endpoints WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2"
        )))
        .bind(after.map(str::to_owned))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Applies a patch; the endpoint after it, `None` if there is none.
    pub async fn webhook_update(&self, id: &str, p: &EndpointPatch, now: i64) -> StoreResult<Option<EndpointRow>> {
        let (set_desc, desc) = match &p.description {
            Some(d) => (1_i64, d.clone()),
            None => (0, None),
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE webhook_endpoints SET url = COALESCE($1, url), \
             description = CASE WHEN $2 = 1 THEN $3 ELSE description END, events = COALESCE($4, events), \
             enabled = COALESCE($5, enabled), \
             failing_since = CASE WHEN $5 = 1 THEN NULL ELSE failing_since END, \
             disabled_reason = CASE WHEN $5 IS NULL THEN disabled_reason ELSE NULL END, updated_at = $6 \
             WHERE id = $7 RETURNING {COLS}"
        )))
        .bind(p.url.clone())
        .bind(set_desc)
        .bind(desc)
        .bind(p.events.as_deref().map(events_text))
        .bind(p.enabled.map(i64::from))
        .bind(now)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Deletes an endpoint; its pending deliveries are given up. Whether it existed.
    pub async fn webhook_delete(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1").bind(id).execute(&mut *tx).await?;
        sqlx::query(
            "UPDATE outbox SET status = 'failed', last_error = 'endpoint deleted', locked_until = NULL \
             WHERE kind = $1 AND target = $2 AND status = 'pending'",
        )
        .bind(KIND)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Replaces the secret (sealed), keeping the one before it until
    /// `previous_expires_at` (`None`: not at all); the endpoint after it.
    pub async fn webhook_set_secret(
        &self,
        id: &str,
        secret: &str,
        previous_expires_at: Option<i64>,
        now: i64,
    ) -> StoreResult<Option<EndpointRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE webhook_endpoints SET previous_secret = CASE WHEN $1 IS NULL THEN NULL ELSE secret END, \
             previous_expires_at = $1, secret = $2, updated_at = $3 WHERE id = $4 RETURNING {COLS}"
        )))
        .bind(previous_expires_at)
        .bind(secret)
        .bind(now)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Records a delivered event: the endpoint's run of failures ends.
    pub async fn webhook_succeeded(&self, id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE webhook_endpoints SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Logs one attempt.
    pub async fn webhook_attempt_insert(&self, a: &AttemptRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO webhook_attempts (id, delivery_id, endpoint_id, attempt, at, status_code, latency_ms, \
             response, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&a.id)
        .bind(&a.delivery_id)
        .bind(&a.endpoint_id)
        .bind(a.attempt)
        .bind(a.at)
        .bind(a.status_code)
        .bind(a.latency_ms)
        .bind(&a.response)
        .bind(&a.error)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The attempts of a delivery, first first.
    pub async fn webhook_attempts(&self, delivery_id: &str) -> StoreResult<Vec<AttemptRow>> {
        let rows = sqlx::query(
            "SELECT id, delivery_id, endpoint_id, attempt, at, status_code, latency_ms, response, error \
             FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt, at LIMIT 100",
        )
        .bind(delivery_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRow {
                    id: col(r, "id")?,
                    delivery_id: col(r, "delivery_id")?,
                    endpoint_id: col(r, "endpoint_id")?,
                    attempt: col(r, "attempt")?,
                    at: col(r, "at")?,
                    status_code: col(r, "status_code")?,
                    latency_ms: col(r, "latency_ms")?,
                    response: col(r, "response")?,
                    error: col(r, "error")?,
                })
            })
            .collect()
    }

    /// Deliveries to an endpoint (optionally only `status`), newest first, before
    /// the cursor id `before`.
    pub async fn webhook_deliveries(
        &self,
        endpoint_id: &str,
        status: Option<OutboxStatus>,
        before: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<OutboxRow>> {
        self.outbox_list_target(KIND, endpoint_id, status, before, limit).await
    }

    /// Queues `payloads` (events already sent once) to the endpoint again, each a
    /// new delivery with its own schedule; their ids.
    pub async fn webhook_requeue(&self, endpoint_id: &str, payloads: &[String], now: i64) -> StoreResult<Vec<String>> {
        let mut tx = self.begin_write().await?;
        let mut ids = Vec::with_capacity(payloads.len());
        for p in payloads {
            ids.push(outbox::enqueue_to(&mut *tx, KIND, Some(endpoint_id), p, now).await?);
        }
        tx.commit().await?;
        count_queued(ids.len());
        Ok(ids)
    }

    /// A page of the deliveries to an endpoint created since `since`, by id after
    /// `after` and up to `upto` (the newest when the scan began), oldest first:
    /// (id, payload) pairs.
    pub async fn webhook_sent_since(
        &self,
        endpoint_id: &str,
        since: i64,
        after: &str,
        upto: &str,
        limit: i64,
    ) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT id, payload FROM outbox WHERE kind = $1 AND target = $2 AND created_at >= $3 \
             AND id > $4 AND id <= $5 ORDER BY id LIMIT $6",
        )
        .bind(KIND)
        .bind(endpoint_id)
        .bind(since)
        .bind(after)
        .bind(upto)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok((col(r, "id")?, col(r, "payload")?))).collect()
    }

    /// The newest delivery id of an endpoint.
    pub async fn webhook_last_delivery(&self, endpoint_id: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT MAX(id) AS id FROM outbox WHERE kind = $1 AND target = $2")
            .bind(KIND)
            .bind(endpoint_id)
            .fetch_one(self.pool())
            .await?;
        col(&row, "id")
    }

    /// Deletes attempt records older than `before`.
    pub async fn webhook_attempts_purge(&self, before: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM webhook_attempts WHERE at < $1").bind(before).execute(self.pool()).await?;
        Ok(done.rows_affected())
    }

    /// Deliveries waiting for a retry (attempted at least once), for `/metrics`.
    pub async fn webhook_backlog(&self) -> StoreResult<i64> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE kind = $1 AND status = 'pending' AND attempts > 0")
                .bind(KIND)
                .fetch_one(self.pool())
                .await?;
        col(&row, "n")
    }
}
