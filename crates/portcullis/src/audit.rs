//! The audit trail every service shares: who did what to whom, from where, with
//! which outcome. Records never hold a secret.
//!
//! Writes go through a bounded buffer to a background writer, so recording never
//! slows a sign-in beyond a channel send; when the buffer is full the record is
//! written inline instead — slower, but never dropped. The writer and the retention
//! purge are jobs (`crate::jobs`). A failed write is logged and
//! does not fail the operation it describes (that already happened).

use tokio::sync::mpsc;

use crate::{
    crypto,
    ctx::RequestCtx,
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

    /// Writes through a buffer of `capacity` records; the returned queue is drained
    /// by the audit-writer job (`jobs::audit_writer`), which empties it before it
    /// ends on shutdown.
    pub fn buffered(db: Db, capacity: usize) -> (Self, AuditQueue) {
        let (tx, rx) = mpsc::channel::<AuditRecord>(capacity.max(1));
        (Self { db: db.clone(), tx: Some(tx) }, AuditQueue { db, rx })
    }

    /// Records one event in the context of a request.
    pub async fn record(&self, ctx: &RequestCtx, e: Event<'_>) {
        let record = record_of(ctx, e);
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
}

/// The record of an event in the context of a request (to write it inside a
/// transaction of one's own, with the change it describes).
pub fn record_of(ctx: &RequestCtx, e: Event<'_>) -> AuditRecord {
    let actor = e.actor.or(e.user_id).unwrap_or("anonymous");
    AuditRecord {
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
    }
}

/// Records waiting for the audit-writer job.
#[derive(Debug)]
pub struct AuditQueue {
    /// Where they go.
    pub db: Db,
    /// The buffer.
    pub rx: mpsc::Receiver<AuditRecord>,
}

/// Writes records waiting together in one transaction; if that fails, one by one,
/// so none is lost.
pub async fn write_many(db: &Db, records: &[AuditRecord]) {
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

/// Writes one record; a failure is logged (the event already happened).
pub async fn write(db: &Db, record: &AuditRecord) {
    if let Err(err) = db.audit_insert(record).await {
        tracing::error!(error = %err, event = %record.event_type, "writing the audit record failed");
    }
}
