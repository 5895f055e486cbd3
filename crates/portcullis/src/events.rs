//! Webhook events: the types there are, and how a change announces one. An event
//! is written on the change's own write transaction ([`emit`]), so there is no
//! change without its event and no event without its change; the store fans it out
//! into one delivery per subscribed endpoint, and the webhook worker sends it.
//!
//! The body is `{"type", "timestamp", "data", "id"}`; `data` is shaped like the
//! admin API's view of the object, never holding a secret or a hash. The `id`
//! (`msg_…`) is the `webhook-id` of every delivery of it: retries and replays keep
//! it, so receivers deduplicate on it.

use serde_json::{Value, json};

use crate::{
    clock::rfc3339,
    store::{StoreResult, WriteTx},
};

/// The ping an operator sends to one endpoint; it goes there whatever it subscribes to.
pub const TEST_EVENT: &str = "webhook.test";

/// Every event type, with when it is sent (the docs list the same with payloads).
pub const TYPES: &[(&str, &str)] = &[
    ("user.created", "an account was created (sign-up, admin, CLI)"),
    ("user.updated", "name, email, metadata or roles changed"),
    ("user.deleted", "an account was deleted (by its owner or an admin)"),
    ("user.banned", "an admin banned the user"),
    ("user.unbanned", "an admin lifted the ban"),
    ("session.created", "a sign-in opened a session"),
    ("session.ended", "the user signed out"),
    ("session.revoked", "a session was ended by someone else or for the user's safety"),
    ("refresh_token.reused", "a spent refresh token came back: every session of the user ends"),
    ("email.verified", "the user proved their address"),
    ("password.changed", "the user changed their password"),
    ("password.reset", "the user set a new password by a mailed link or code"),
    ("account.locked", "failed sign-ins locked the account"),
    ("role.created", "a role was defined"),
    ("role.updated", "a role's description or permissions changed"),
    ("role.deleted", "a role was deleted"),
    ("user.role_assigned", "a user was given a role"),
    ("user.role_removed", "a role was taken from a user"),
    ("api_key.created", "an API key was created"),
    ("api_key.revoked", "an API key was revoked"),
    ("client.created", "an OAuth client was registered"),
    ("client.deleted", "an OAuth client was deleted"),
    ("mfa.enrolled", "a second factor (app, SMS) was confirmed"),
    ("mfa.removed", "a second factor was removed"),
    ("passkey.added", "a passkey was registered"),
    ("passkey.removed", "a passkey was removed"),
    ("recovery_code.used", "a recovery code finished a sign-in"),
    ("webhook.test", "sent by POST /v1/admin/webhooks/{id}/test, to that endpoint only"),
];

/// Whether `name` is an event type an endpoint may subscribe to.
pub fn known(name: &str) -> bool {
    TYPES.iter().any(|(t, _)| *t == name)
}

/// The largest body sent: a bigger `data` (huge metadata) is replaced by the
/// object's id and `"truncated": true`; the receiver reads the rest from the API.
pub const MAX_BODY: usize = 256 * 1024;

/// An event about to be announced.
#[derive(Debug, Clone)]
pub struct Event {
    /// `msg_…`.
    pub id: String,
    /// One of [`TYPES`].
    pub event_type: &'static str,
    /// The signed body.
    pub body: String,
}

impl Event {
    /// The event of `event_type` about `data`, at `now`.
    pub fn new(event_type: &'static str, data: Value, now: i64) -> Self {
        let id = crate::crypto::new_id("msg", now);
        let body =
            |data: &Value| json!({"type": event_type, "timestamp": rfc3339(now), "data": data, "id": id}).to_string();
        let mut text = body(&data);
        if text.len() > MAX_BODY {
            let object = data.get("id").cloned().unwrap_or(Value::Null);
            text = body(&json!({"id": object, "truncated": true}));
        }
        Self { id, event_type, body: text }
    }

    /// What a delivery of it stores: the event's id, type and body.
    pub fn payload(&self) -> String {
        json!({"event_id": self.id, "type": self.event_type, "body": self.body}).to_string()
    }
}

/// A delivery's stored payload, read back.
#[derive(Debug, serde::Deserialize)]
pub struct Payload {
    /// The `webhook-id`.
    pub event_id: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The signed body.
    pub body: String,
}

/// Announces `event_type` about `data` with the change `tx` holds: it is sent once
/// `tx` commits, to every endpoint that takes it then.
pub async fn emit(tx: &mut WriteTx, event_type: &'static str, data: Value, now: i64) -> StoreResult<()> {
    debug_assert!(known(event_type), "{event_type} is not in events::TYPES");
    let event = Event::new(event_type, data, now);
    tx.webhook_fanout(event_type, &event.payload(), now).await?;
    Ok(())
}

/// The user's admin view, read inside `tx` (so it is the state the change leaves).
pub async fn user_data(tx: &mut WriteTx, user_id: &str) -> StoreResult<Option<Value>> {
    let Some(user) = tx.user_by_id(user_id).await? else { return Ok(None) };
    let kinds = tx.mfa_kinds(user_id).await?;
    Ok(serde_json::to_value(crate::views::admin_user_view(&user, kinds)).ok())
}

/// The `data` of `user.deleted`: the user's view before the deletion (what a
/// receiver last knew), marked `"deleted": true`. Read before deleting.
pub async fn deleted_user_data(tx: &mut WriteTx, user_id: &str) -> StoreResult<Option<Value>> {
    let mut data = user_data(tx, user_id).await?;
    if let Some(d) = data.as_mut().and_then(Value::as_object_mut) {
        d.insert("deleted".into(), Value::Bool(true));
    }
    Ok(data)
}

/// Announces a `user.*` event with the user's view as `data` (nothing if the user
/// is gone).
pub async fn emit_user(tx: &mut WriteTx, event_type: &'static str, user_id: &str, now: i64) -> StoreResult<()> {
    if let Some(data) = user_data(tx, user_id).await? {
        emit(tx, event_type, data, now).await?;
    }
    Ok(())
}

/// A session event's `data`.
pub fn session_data(s: &crate::store::SessionRow, reason: Option<&str>) -> Value {
    json!({
        "id": s.id,
        "user_id": s.user_id,
        "client_id": s.client_id,
        "created_at": rfc3339(s.created_at),
        "expires_at": rfc3339(s.expires_at),
        "ip": s.ip,
        "user_agent": s.user_agent,
        "reason": reason,
    })
}

/// Announces each session of `ended` that was still live (not past its expiry) as
/// `event_type` (`session.ended` or `session.revoked`), with `reason`.
pub async fn emit_sessions(
    tx: &mut WriteTx,
    event_type: &'static str,
    ended: &[crate::store::SessionRow],
    reason: &str,
    now: i64,
) -> StoreResult<()> {
    for s in ended.iter().filter(|s| s.expires_at > now) {
        emit(tx, event_type, session_data(s, Some(reason)), now).await?;
    }
    Ok(())
}

/// Announces sessions that ran out as `session.ended` (reason `expired`), up to
/// `limit` a call, each marked so it is announced once; how many.
pub async fn announce_expired(db: &crate::store::Db, now: i64, limit: i64) -> StoreResult<usize> {
    let mut tx = db.write().await?;
    let ended = tx.sessions_take_expired(now, limit).await?;
    for s in &ended {
        emit(&mut tx, "session.ended", session_data(s, Some("expired")), now).await?;
    }
    tx.commit().await?;
    Ok(ended.len())
}

/// An API key as the admin API shows it, with its owner: never its secret or hash.
pub fn api_key_data(k: &crate::store::ApiKeyRow) -> Value {
    let mut data = serde_json::to_value(crate::views::api_key_view(k)).unwrap_or_default();
    if let Some(d) = data.as_object_mut() {
        d.insert("user_id".into(), Value::String(k.owner_id.clone()));
    }
    data
}

/// Announces an event about a user whose `data` is `{"user_id", …fields}`.
pub async fn emit_about(
    tx: &mut WriteTx,
    event_type: &'static str,
    user_id: &str,
    fields: Value,
    now: i64,
) -> StoreResult<()> {
    let mut data = json!({"user_id": user_id});
    if let (Some(d), Value::Object(more)) = (data.as_object_mut(), fields) {
        d.extend(more);
    }
    emit(tx, event_type, data, now).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_type_timestamp_data_and_id() {
        let e = Event::new("user.created", json!({"id": "usr_1"}), 0);
        let v: Value = serde_json::from_str(&e.body).unwrap();
        assert_eq!(v["type"], "user.created");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["data"]["id"], "usr_1");
        assert_eq!(v["id"], e.id.as_str());
        assert!(e.id.starts_with("msg_"));
        let p: Payload = serde_json::from_str(&e.payload()).unwrap();
        assert_eq!((p.event_id, p.body), (e.id.clone(), e.body.clone()));
    }

    #[test]
    fn a_huge_object_is_sent_by_id() {
        let e = Event::new("user.updated", json!({"id": "usr_1", "big": "x".repeat(MAX_BODY)}), 0);
        let v: Value = serde_json::from_str(&e.body).unwrap();
        assert_eq!(v["data"], json!({"id": "usr_1", "truncated": true}));
    }

    #[test]
    fn every_type_is_named_once() {
        let mut names: Vec<&str> = TYPES.iter().map(|t| t.0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TYPES.len());
    }
}
