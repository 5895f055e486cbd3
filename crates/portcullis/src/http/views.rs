//! Store rows to wire types.

use portcullis_proto::{Session, User};

use crate::{
    clock::rfc3339,
    store::{SessionRow, UserRow},
};

/// A user as its owner sees it.
pub fn user_view(u: &UserRow) -> User {
    User {
        id: u.id.clone(),
        email: u.email.clone(),
        email_verified: u.email_verified,
        name: u.name.clone(),
        roles: u.roles.clone(),
        created_at: rfc3339(u.created_at),
        updated_at: rfc3339(u.updated_at),
    }
}

/// A session as its owner sees it; `current` marks the caller's own.
pub fn session_view(s: &SessionRow, current: &str) -> Session {
    Session {
        id: s.id.clone(),
        created_at: rfc3339(s.created_at),
        last_active_at: rfc3339(s.last_active_at),
        expires_at: rfc3339(s.expires_at),
        ip: s.ip.clone(),
        user_agent: s.user_agent.clone(),
        current: s.id == current,
    }
}
