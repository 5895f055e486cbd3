//! The audit writer every service shares: who did what to whom, from where, with
//! which outcome. Records never hold a secret. A failed audit write is logged and
//! does not fail the operation it describes (it already happened).

use crate::{
    auth::RequestCtx,
    crypto,
    store::{AuditRecord, Db},
};

/// Appends audit records.
#[derive(Clone, Debug)]
pub struct Audit {
    db: Db,
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
    /// Writes to this database.
    pub fn new(db: Db) -> Self {
        Self { db }
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
            reason: e.reason.map(str::to_owned),
        };
        if let Err(err) = self.db.audit_insert(&record).await {
            tracing::error!(error = %err, event = e.kind, "writing the audit record failed");
        }
    }
}
