//! The transactional outbox: messages (mail, webhook events) written in the same
//! transaction as the change they announce, delivered at least once.
//!
//! Contract:
//! - A row is written only through [`super::WriteTx::outbox_enqueue`]: it exists
//!   exactly when the change it announces committed.
//! - Claiming is ONE statement in a write transaction that takes a lease
//!   (`locked_until`) on due rows: on PostgreSQL the candidates are locked with
//!   `FOR UPDATE SKIP LOCKED`, so concurrent nodes never claim the same row; on
//!   SQLite the write lock serialises claims. A row claimed twice at once MUST NOT
//!   happen; a row whose claimer died is claimable again once its lease ends, so
//!   nothing is lost on a crash or restart (delivery is at least once).
//! - Every claim counts an attempt, and the attempt number is the claim's token:
//!   an outcome is recorded only while no later claim took the message.
//! - A failure schedules the next attempt
//!   (`next_attempt_at`, with `last_error`) or gives up (`failed`). Rows stay after
//!   delivery until [`Db::outbox_purge`].

use super::{Db, StoreError, StoreResult, col};

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxStatus {
    /// Waiting for (another) delivery attempt.
    Pending,
    /// Delivered.
    Delivered,
    /// Given up after the last attempt.
    Failed,
}

impl OutboxStatus {
    /// As stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Delivered => "delivered",
            OutboxStatus::Failed => "failed",
        }
    }

    /// From its stored name.
    pub fn parse(s: &str) -> StoreResult<Self> {
        match s {
            "pending" => Ok(OutboxStatus::Pending),
            "delivered" => Ok(OutboxStatus::Delivered),
            "failed" => Ok(OutboxStatus::Failed),
            other => Err(StoreError::Corrupt(format!("outbox status {other}"))),
        }
    }
}

/// One message as stored.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    /// `obx_…`, ordered by creation.
    pub id: String,
    /// What it is (`mail.verify_email`, `webhook.user.created`): picks the deliverer.
    pub kind: String,
    /// JSON.
    pub payload: String,
    /// Where it is in its life.
    pub status: OutboxStatus,
    /// Delivery attempts so far (a claim counts one).
    pub attempts: i64,
    /// Milliseconds; not attempted before.
    pub next_attempt_at: i64,
    /// Milliseconds until which a claimer holds it.
    pub locked_until: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Milliseconds.
    pub created_at: i64,
    /// Milliseconds, once delivered.
    pub delivered_at: Option<i64>,
    /// Whom it is for, when a kind has many receivers (a webhook's endpoint).
    pub target: Option<String>,
    /// Claims given back unattempted: `attempts - deferrals` attempts really ran.
    pub deferrals: i64,
}

impl OutboxRow {
    /// Delivery attempts that really ran (this claim's included).
    pub fn tries(&self) -> i64 {
        self.attempts - self.deferrals
    }
}

/// One line of [`Db::outbox_counts`].
#[derive(Debug, Clone)]
pub struct OutboxCount {
    pub kind: String,
    pub status: OutboxStatus,
    pub messages: i64,
    /// Of `messages`, those with at least one real attempt behind them.
    pub retried: i64,
}

const COLS: &str = "id, kind, payload, status, attempts, next_attempt_at, locked_until, last_error, created_at, delivered_at, target, deferrals";

fn from_row(row: &sqlx::any::AnyRow) -> StoreResult<OutboxRow> {
    Ok(OutboxRow {
        id: col(row, "id")?,
        kind: col(row, "kind")?,
        payload: col(row, "payload")?,
        status: OutboxStatus::parse(&col::<String>(row, "status")?)?,
        attempts: col(row, "attempts")?,
        next_attempt_at: col(row, "next_attempt_at")?,
        locked_until: col(row, "locked_until")?,
        last_error: col(row, "last_error")?,
        created_at: col(row, "created_at")?,
        delivered_at: col(row, "delivered_at")?,
        target: col(row, "target")?,
        deferrals: col(row, "deferrals")?,
    })
}

/// Inserts a pending message, due now.
pub(super) async fn enqueue<'c, E>(on: E, kind: &str, payload: &serde_json::Value, now: i64) -> StoreResult<String>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    enqueue_to(on, kind, None, &payload.to_string(), now).await
}

/// Inserts a pending message for `target`, due now; its id.
pub(super) async fn enqueue_to<'c, E>(
    on: E,
    kind: &str,
    target: Option<&str>,
    payload: &str,
    now: i64,
) -> StoreResult<String>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let id = crate::crypto::new_id("obx", now);
    sqlx::query(
        "INSERT INTO outbox (id, kind, payload, status, attempts, next_attempt_at, created_at, target) \
         VALUES ($1, $2, $3, 'pending', 0, $4, $4, $5)",
    )
    .bind(&id)
    .bind(kind)
    .bind(payload)
    .bind(now)
    .bind(target)
    .execute(on)
    .await?;
    Ok(id)
}

impl Db {
    /// Claims up to `limit` due messages of `kinds` for `lease_ms` (see the module
    /// contract); each claim counts an attempt. Kinds a node cannot deliver are left
    /// for the nodes that can. Messages for `skip` targets (receivers with their
    /// share in flight) are left for later, so they do not crowd out the others.
    pub async fn outbox_claim(
        &self,
        kinds: &[&str],
        skip: &[String],
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<OutboxRow>> {
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        let kinds_in: Vec<String> = (0..kinds.len()).map(|i| format!("${}", i + 4)).collect();
        let skip_in: Vec<String> = (0..skip.len()).map(|i| format!("${}", i + 4 + kinds.len())).collect();
        let skipped = if skip.is_empty() {
            String::new()
        } else {
            format!("AND (target IS NULL OR target NOT IN ({})) ", skip_in.join(", "))
        };
        let lock = match self.backend() {
            super::Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            super::Backend::Sqlite => "",
        };
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "UPDATE outbox SET locked_until = $1, attempts = attempts + 1 WHERE id IN \
             (SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= $2 \
              AND (locked_until IS NULL OR locked_until <= $2) AND kind IN ({}) {skipped}\
              ORDER BY next_attempt_at, id LIMIT $3 {lock}) \
             RETURNING {COLS}",
            kinds_in.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now.saturating_add(lease_ms)).bind(now).bind(limit);
        for k in kinds {
            query = query.bind(*k);
        }
        for t in skip {
            query = query.bind(t.as_str());
        }
        let rows = query.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let mut claimed = rows.iter().map(from_row).collect::<StoreResult<Vec<_>>>()?;
        claimed.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(claimed)
    }

    /// Marks a message delivered, if the claim that made `attempt` still holds it
    /// (a later claim of another node wins); whether it did.
    pub async fn outbox_delivered(&self, id: &str, attempt: i64, now: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'delivered', delivered_at = $1, locked_until = NULL, last_error = NULL \
             WHERE id = $2 AND attempts = $3 AND status = 'pending'",
        )
        .bind(now)
        .bind(id)
        .bind(attempt)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records failed attempt number `attempt`: tried again at `next_attempt_at`,
    /// or, with `None`, given up (`failed`). Only while that claim still holds the
    /// message; whether it did.
    pub async fn outbox_failed(
        &self,
        id: &str,
        attempt: i64,
        error: &str,
        next_attempt_at: Option<i64>,
    ) -> StoreResult<bool> {
        let status = if next_attempt_at.is_some() { OutboxStatus::Pending } else { OutboxStatus::Failed };
        let done = sqlx::query(
            "UPDATE outbox SET status = $1, next_attempt_at = COALESCE($2, next_attempt_at), locked_until = NULL, \
             last_error = $3 WHERE id = $4 AND attempts = $5 AND status = 'pending'",
        )
        .bind(status.as_str())
        .bind(next_attempt_at)
        .bind(error.chars().take(1000).collect::<String>())
        .bind(id)
        .bind(attempt)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Gives back claim `attempt` of a message that was not attempted (its
    /// deliverer was busy): due again at `next_attempt_at`, counted as a deferral,
    /// not as an attempt. Whether that claim still held it.
    pub async fn outbox_defer(&self, id: &str, attempt: i64, next_attempt_at: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE outbox SET deferrals = deferrals + 1, locked_until = NULL, next_attempt_at = $1 \
             WHERE id = $2 AND attempts = $3 AND status = 'pending'",
        )
        .bind(next_attempt_at)
        .bind(id)
        .bind(attempt)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Replaces the payload of a message that is no longer pending (its secrets
    /// erased once delivered or given up).
    pub async fn outbox_set_payload(&self, id: &str, payload: &str) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE outbox SET payload = $1 WHERE id = $2 AND status <> 'pending'")
            .bind(payload)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// One message.
    pub async fn outbox_get(&self, id: &str) -> StoreResult<Option<OutboxRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM outbox WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Messages of `kind` (optionally only `status`), newest first, before the
    /// cursor id `before`.
    pub async fn outbox_list(
        &self,
        kind: &str,
        status: Option<OutboxStatus>,
        before: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<OutboxRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM outbox WHERE kind = $1 AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4"
        )))
        .bind(kind)
        .bind(status.map(|s| s.as_str().to_owned()))
        .bind(before.map(str::to_owned))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Messages of `kind` for `target` (optionally only `status`), newest first,
    /// before the cursor id `before`.
    pub async fn outbox_list_target(
        &self,
        kind: &str,
        target: &str,
        status: Option<OutboxStatus>,
        before: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<OutboxRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM outbox WHERE kind = $1 AND target = $2 AND ($3 IS NULL OR status = $3) \
             AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
        )))
        .bind(kind)
        .bind(target)
        .bind(status.map(|s| s.as_str().to_owned()))
        .bind(before.map(str::to_owned))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// How many messages there are by kind and status, and of those how many were
    /// attempted and failed at least once (the retry backlog, when pending), for
    /// `/metrics`.
    pub async fn outbox_counts(&self) -> StoreResult<Vec<OutboxCount>> {
        let rows = sqlx::query(
            "SELECT kind, status, COUNT(*) AS n, \
             COALESCE(SUM(CASE WHEN attempts - deferrals > 0 THEN 1 ELSE 0 END), 0) AS retried \
             FROM outbox GROUP BY kind, status",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxCount {
                    kind: col(r, "kind")?,
                    status: OutboxStatus::parse(&col::<String>(r, "status")?)?,
                    messages: col(r, "n")?,
                    retried: col(r, "retried")?,
                })
            })
            .collect()
    }

    /// Deletes delivered and failed messages created before `before`.
    pub async fn outbox_purge(&self, before: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM outbox WHERE status <> 'pending' AND created_at < $1")
            .bind(before)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
