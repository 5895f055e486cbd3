//! Store rows to wire types: what the API, the CLI and webhook events show of
//! users, sessions, roles, keys and messages (never a secret or a hash).

use portcullis_proto::{AdminUser, ApiKey, Role, Session, User};
use serde_json::Value;

use crate::{
    clock::rfc3339,
    rbac::BUILTIN_ROLES,
    store::{ApiKeyRow, RoleRow, SessionRow, UserRow},
};

fn json_object(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::Object(Default::default()))
}

/// A user as its owner sees it: never `private_metadata`.
pub fn user_view(u: &UserRow) -> User {
    User {
        id: u.id.clone(),
        email: u.email.clone(),
        email_verified: u.email_verified,
        name: u.name.clone(),
        roles: u.roles.clone(),
        public_metadata: json_object(&u.public_metadata),
        unsafe_metadata: json_object(&u.unsafe_metadata),
        created_at: rfc3339(u.created_at),
        updated_at: rfc3339(u.updated_at),
    }
}

/// A user as admins see it.
pub fn admin_user_view(u: &UserRow, mfa_factors: Vec<String>) -> AdminUser {
    AdminUser {
        mfa_factors,
        user: user_view(u),
        private_metadata: json_object(&u.private_metadata),
        banned: u.banned_at.is_some(),
        banned_at: u.banned_at.map(rfc3339),
    }
}

/// A session as its owner sees it; `current` marks the caller's own.
pub fn session_view(s: &SessionRow, current: Option<&str>) -> Session {
    Session {
        id: s.id.clone(),
        created_at: rfc3339(s.created_at),
        last_active_at: rfc3339(s.last_active_at),
        expires_at: rfc3339(s.expires_at),
        ip: s.ip.clone(),
        user_agent: s.user_agent.clone(),
        current: Some(s.id.as_str()) == current,
    }
}

/// A role.
pub fn role_view(r: &RoleRow) -> Role {
    Role {
        name: r.name.clone(),
        description: r.description.clone(),
        permissions: r.permissions.clone(),
        builtin: BUILTIN_ROLES.contains(&r.name.as_str()),
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    }
}

/// An API key without its secret.
pub fn api_key_view(k: &ApiKeyRow) -> ApiKey {
    ApiKey {
        id: k.id.clone(),
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        scopes: k.scopes.clone(),
        created_at: rfc3339(k.created_at),
        expires_at: k.expires_at.map(rfc3339),
        last_used_at: k.last_used_at.map(rfc3339),
    }
}

/// An audit record as the API shows it.
pub fn audit_view(r: crate::store::AuditRecord) -> portcullis_proto::AuditEvent {
    portcullis_proto::AuditEvent {
        id: r.id,
        time: rfc3339(r.time),
        event_type: r.event_type,
        outcome: r.outcome,
        user_id: r.user_id,
        actor: r.actor,
        ip: r.ip,
        user_agent: r.user_agent,
        request_id: r.request_id,
        reason: r.reason,
    }
}

/// A queued mail as the admin API shows it: the recipient and template from its
/// payload, never the sealed link or code.
pub fn email_view(r: &crate::store::OutboxRow) -> portcullis_proto::EmailMessage {
    let q = crate::mail::Mailer::describe(&r.payload);
    portcullis_proto::EmailMessage {
        id: r.id.clone(),
        to: q.as_ref().map(|q| q.to.clone()).unwrap_or_default(),
        template: q.map(|q| q.template.name().to_owned()).unwrap_or_default(),
        status: r.status.as_str().to_owned(),
        attempts: r.attempts,
        last_error: r.last_error.clone(),
        created_at: rfc3339(r.created_at),
        next_attempt_at: (r.status == crate::store::OutboxStatus::Pending).then(|| rfc3339(r.next_attempt_at)),
        delivered_at: r.delivered_at.map(rfc3339),
    }
}

/// A passkey as its owner sees it.
pub fn passkey_view(p: &crate::store::PasskeyRow) -> portcullis_proto::PasskeyView {
    portcullis_proto::PasskeyView {
        id: p.id.clone(),
        name: p.name.clone(),
        created_at: rfc3339(p.created_at),
        last_used_at: p.last_used_at.map(rfc3339),
    }
}
