//! The audit trail every service shares: who did what to whom, from where, with
//! which outcome. Records never hold a secret.
//!
//! Writes go through a bounded buffer to a background writer, so recording never
//! slows a sign-in beyond a channel send; when the buffer is full the record is
//! written inline instead — slower, but never dropped. A failed write is logged and
//! does not fail the operation it describes (that already happened).

use std::time::Duration;

use tokio::sync::mpsc;

use crate::{
    crypto,
    ctx::RequestCtx,
    shutdown::Shutdown,
    store::{AuditRecord, Db},
};

/// Appends audit records.
#[derive(Clone, Debug)]
pub struct Audit {
    db: Db,
    tx: Option<mpsc::Sender<AuditRecord>>,
}

/// One event about to be recorded.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// Event type, e.g. `login`, `user_banned`.
    pub kind: &'a str,
    /// Outcome.
    pub success: bool,
    /// The user the event is about.
    pub user_id: Option<&'a str>,
    /// Who acted, when not the user themself (an admin, an API key).
    pub actor: Option<&'a str>,
    /// Why, for failures and revocations.
    pub reason: Option<&'a str>,
}

impl<'a> Event<'a> {
    /// A successful event about `user_id`, acted by that user.
    pub fn ok(kind: &'a str, user_id: Option<&'a str>) -> Self {
        Self { kind, success: true, user_id, actor: None, reason: None }
    }

    /// A failed event with its reason.
    pub fn failed(kind: &'a str, user_id: Option<&'a str>, reason: &'a str) -> Self {
        Self { kind, success: false, user_id, actor: None, reason: Some(reason) }
    }

    /// Names the actor (admin user id, `key_…`).
    pub fn by(mut self, actor: &'a str) -> Self {
        self.actor = Some(actor);
        self
    }
}

impl Audit {
    /// Writes inline, for operator commands.
    pub fn new(db: Db) -> Self {
        Self { db, tx: None }
    }

    /// Writes through a buffer of `capacity` records drained by a background task,
    /// which empties the buffer before it ends on shutdown.
    pub fn buffered(db: Db, capacity: usize, shutdown: Shutdown) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<AuditRecord>(capacity.max(1));
        let writer_db = db.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    next = rx.recv() => match next {
                        // Everything already waiting goes in the same transaction.
                        Some(record) => {
                            let mut batch = vec![record];
                            while batch.len() < 256 {
                                match rx.try_recv() {
                                    Ok(r) => batch.push(r),
                                    Err(_) => break,
                                }
                            }
                            write_many(&writer_db, &batch).await;
                        }
                        None => return,
                    },
                    _ = shutdown.wait() => {
                        rx.close();
                        while let Some(record) = rx.recv().await {
                            write(&writer_db, &record).await;
                        }
                        return;
                    }
                }
            }
        });
        (Self { db, tx: Some(tx) }, task)
    }

    /// Records one event in the context of a request.
    pub async fn record(&self, ctx: &RequestCtx, e: Event<'_>) {
        let actor = e.actor.or(e.user_id).unwrap_or("anonymous");
        let record = AuditRecord {
            id: crypto::new_id("aud", ctx.now),
            time: ctx.now,
            event_type: e.kind.to_owned(),
            outcome: if e.success { "success" } else { "failure" }.to_owned(),
            user_id: e.user_id.map(str::to_owned),
            actor: Some(actor.to_owned()),
            ip: ctx.ip.clone(),
            user_agent: ctx.user_agent.clone(),
            request_id: ctx.request_id.clone(),
            reason: e.reason.map(|r| r.chars().take(500).collect()),
        };
        let record = match &self.tx {
            Some(tx) => match tx.try_send(record) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r)) => {
                    metrics::counter!("portcullis_audit_inline_writes_total").increment(1);
                    r
                }
            },
            None => record,
        };
        write(&self.db, &record).await;
    }

    /// Housekeeping every `every` until shutdown: audit records older than
    /// `retention`, stale rate-limit windows, sessions that ended over a day ago.
    pub fn spawn_retention(&self, retention: Duration, every: Duration, shutdown: Shutdown) {
        let db = self.db.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.wait() => return,
                }
                let now = crate::clock::now_ms();
                let cutoff = now - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
                match db.audit_purge(cutoff).await {
                    Ok(n) if n > 0 => tracing::info!(deleted = n, "audit retention: removed old records"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "audit retention failed"),
                }
                // Rate-limit windows older than a day count for nothing any more, and
                // sessions that ended a day ago can no longer be refreshed or reused.
                let _ = db.rate_purge(now - 86_400_000).await;
                let _ = db.lock_purge(now - 86_400_000, now).await;
                let _ = db.login_successes_purge(now - 30 * 86_400_000).await;
                // Codes and assertion ids past their life (codes kept an hour more,
                // so a late replay is still recognised and revokes its grant).
                let _ = db.oauth_purge(now - 3_600_000).await;
                match db.sessions_purge(now - 86_400_000).await {
                    Ok(n) if n > 0 => tracing::info!(deleted = n, "removed ended sessions and their refresh tokens"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "session cleanup failed"),
                }
            }
        });
    }
}

async fn write_many(db: &Db, records: &[AuditRecord]) {
    if let [one] = records {
        return write(db, one).await;
    }
    if let Err(err) = db.audit_insert_many(records).await {
        // Never lose one: retry one by one, each failure logged on its own.
        tracing::warn!(error = %err, count = records.len(), "writing audit records together failed; writing one by one");
        for r in records {
            write(db, r).await;
        }
    }
}

async fn write(db: &Db, record: &AuditRecord) {
    if let Err(err) = db.audit_insert(record).await {
        tracing::error!(error = %err, event = %record.event_type, "writing the audit record failed");
    }
}
