//! The audit trail: append-only records of authentication events. Records hold
//! who, what, when and from where, never a secret.

use super::{Db, StoreResult, col};

/// One audit record.
#[derive(Debug, Clone, Default)]
pub struct AuditRecord {
    /// `aud_…`.
    pub id: String,
    /// Milliseconds.
    pub time: i64,
    /// Event type, e.g. `login`, `refresh_reuse`.
    pub event_type: String,
    /// `success` or `failure`.
    pub outcome: String,
    /// The user concerned, when known.
    pub user_id: Option<String>,
    /// Who acted: the user, an admin, `system`.
    pub actor: Option<String>,
    /// Client address.
    pub ip: Option<String>,
    /// Client `User-Agent`.
    pub user_agent: Option<String>,
    /// The request that caused it.
    pub request_id: Option<String>,
    /// Why, for failures and revocations (`bad_password`, `unknown_user`, …).
    pub reason: Option<String>,
}

const AUDIT_INSERT: &str = "INSERT INTO audit_events (id, time, type, outcome, user_id, actor, ip, user_agent, \
                            request_id, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

fn bind_record<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    r: &'q AuditRecord,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    q.bind(&r.id)
        .bind(r.time)
        .bind(&r.event_type)
        .bind(&r.outcome)
        .bind(&r.user_id)
        .bind(&r.actor)
        .bind(&r.ip)
        .bind(&r.user_agent)
        .bind(&r.request_id)
        .bind(&r.reason)
}

/// Appends a record on `on` (a write transaction's own).
pub(super) async fn insert<'c, E>(on: E, r: &AuditRecord) -> StoreResult<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    bind_record(sqlx::query(AUDIT_INSERT), r).execute(on).await?;
    Ok(())
}

impl Db {
    /// Appends records in one transaction: one commit (one fsync) for a burst.
    pub async fn audit_insert_many(&self, records: &[AuditRecord]) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        for r in records {
            bind_record(sqlx::query(AUDIT_INSERT), r).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Appends a record.
    pub async fn audit_insert(&self, r: &AuditRecord) -> StoreResult<()> {
        bind_record(sqlx::query(AUDIT_INSERT), r).execute(self.pool()).await?;
        Ok(())
    }

    /// Deletes records older than `before`.
    pub async fn audit_purge(&self, before: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM audit_events WHERE time < $1").bind(before).execute(self.pool()).await?;
        Ok(done.rows_affected())
    }

    /// Records matching `f`, newest first, older than the cursor id `before`. Ids
    /// grow with time, so pages stay stable while new records arrive.
    pub async fn audit_list(&self, f: &AuditFilter, before: Option<&str>, limit: i64) -> StoreResult<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT id, time, type, outcome, user_id, actor, ip, user_agent, request_id, reason FROM audit_events \
             WHERE ($1 IS NULL OR id < $1) AND ($2 IS NULL OR user_id = $2) AND ($3 IS NULL OR type = $3) \
             AND ($4 IS NULL OR outcome = $4) AND ($5 IS NULL OR time >= $5) AND ($6 IS NULL OR time < $6) \
             ORDER BY id DESC LIMIT $7",
        )
        .bind(before.map(str::to_owned))
        .bind(f.user_id.clone())
        .bind(f.event_type.clone())
        .bind(f.outcome.clone())
        .bind(f.since)
        .bind(f.until)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// Records about one user, newest first (the admin query API builds on this).
    pub async fn audit_for_user(&self, user_id: &str, limit: i64) -> StoreResult<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT id, time, type, outcome, user_id, actor, ip, user_agent, request_id, reason \
             FROM audit_events WHERE user_id = $1 ORDER BY time DESC, id DESC LIMIT $2",
        )
        .bind(user_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(record_from_row).collect()
    }
}

/// Filters of the audit query API.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only records about this user.
    pub user_id: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// `success` or `failure`.
    pub outcome: Option<String>,
    /// From this time (milliseconds, inclusive).
    pub since: Option<i64>,
    /// Before this time (milliseconds, exclusive).
    pub until: Option<i64>,
}

fn record_from_row(r: &sqlx::any::AnyRow) -> StoreResult<AuditRecord> {
    Ok(AuditRecord {
        id: col(r, "id")?,
        time: col(r, "time")?,
        event_type: col(r, "type")?,
        outcome: col(r, "outcome")?,
        user_id: col(r, "user_id")?,
        actor: col(r, "actor")?,
        ip: col(r, "ip")?,
        user_agent: col(r, "user_agent")?,
        request_id: col(r, "request_id")?,
        reason: col(r, "reason")?,
    })
}
