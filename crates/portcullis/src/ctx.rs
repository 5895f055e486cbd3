//! Who is asking: the request context every operation receives (address, user
//! agent, request id, route, time) and the [`Principal`], the authenticated caller
//! that every authorization decision looks at. Below the domain modules, so the
//! audit trail and the guards need nothing above them.

use std::sync::Arc;

use crate::{clock, store::UserRow};

/// The name of the operator at the command line: the audit actor of operator
/// commands and the owner recorded for the credentials they register.
pub const OPERATOR: &str = "operator";

/// Who is asking, for sessions and the audit log; `now` is read once per request.
#[derive(Debug, Clone, Default)]
pub struct RequestCtx {
    /// Client address.
    pub ip: Option<String>,
    /// Client `User-Agent`, truncated.
    pub user_agent: Option<String>,
    /// Request id, also sent back as `X-Request-Id`.
    pub request_id: Option<String>,
    /// The matched route template (`/v1/auth/login`), for rate-limit summaries.
    pub route: Option<String>,
    /// Milliseconds since the epoch.
    pub now: i64,
}

impl RequestCtx {
    /// The client address for rate limits (`unknown` when there is no socket).
    pub fn client(&self) -> &str {
        self.ip.as_deref().unwrap_or("unknown")
    }

    /// The route template, or `-` outside HTTP.
    pub fn route(&self) -> &str {
        self.route.as_deref().unwrap_or("-")
    }

    /// A context for operator commands run from the CLI.
    pub fn system() -> Self {
        Self { now: clock::now_ms(), user_agent: Some("portcullis-cli".into()), ..Self::default() }
    }
}

/// An authenticated caller, one kind per way in. Its `scopes` are always what the
/// caller may do NOW (the token's claims cut down to current roles, owners and
/// clients), never what a token says about itself.
#[derive(Debug, Clone)]
pub enum Principal {
    /// A user's own (first-party) session.
    Session {
        /// The user as the bearer check loaded it.
        user: Arc<UserRow>,
        /// The session (`sid`).
        session_id: String,
        /// Permissions the user holds now.
        scopes: Vec<String>,
    },
    /// An API key acting for its owner.
    ApiKey {
        /// The key (`key_…`).
        key_id: String,
        /// The user it acts for.
        owner_id: String,
        /// The key's scopes its owner still holds.
        scopes: Vec<String>,
        /// The owner as loaded with the key (as fresh as the key's cache entry).
        owner: Option<Arc<UserRow>>,
    },
    /// An OAuth client acting for a user (a grant).
    Grant {
        /// The user behind the grant.
        user: Arc<UserRow>,
        /// The grant (`sid`).
        session_id: String,
        /// The client it was issued to.
        client_id: String,
        /// The granted scope as it stands now.
        scopes: Vec<String>,
    },
    /// An OAuth client acting for itself (client credentials).
    Client {
        /// The client.
        client_id: String,
        /// Who registered it: a user id, or [`OPERATOR`].
        owner: String,
        /// Its scopes that it may still ask for and its owner still holds.
        scopes: Vec<String>,
    },
    /// The operator at the command line.
    Operator {
        /// Every permission there is.
        scopes: Vec<String>,
    },
}

impl Principal {
    /// The operator of a command-line command, holding `scopes` (every permission
    /// that exists): named `operator` in the audit trail and as the owner of what
    /// it registers.
    pub fn operator(scopes: Vec<String>) -> Self {
        Principal::Operator { scopes }
    }

    /// What the caller may do now.
    pub fn scopes(&self) -> &[String] {
        match self {
            Principal::Session { scopes, .. }
            | Principal::ApiKey { scopes, .. }
            | Principal::Grant { scopes, .. }
            | Principal::Client { scopes, .. }
            | Principal::Operator { scopes } => scopes,
        }
    }

    /// The user behind the credential: the session's or grant's user, the key's
    /// owner. A client acting for itself and the operator have none.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            Principal::Session { user, .. } | Principal::Grant { user, .. } => Some(&user.id),
            Principal::ApiKey { owner_id, .. } => Some(owner_id),
            Principal::Client { .. } | Principal::Operator { .. } => None,
        }
    }

    /// Who the credential is (`sub` of its tokens): the user, the client acting
    /// for itself, or `operator`.
    pub fn subject(&self) -> &str {
        match self {
            Principal::Client { client_id, .. } => client_id,
            Principal::Operator { .. } => OPERATOR,
            _ => self.user_id().unwrap_or(OPERATOR),
        }
    }

    /// The session or grant (`sid`), if the credential has one.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            Principal::Session { session_id, .. } | Principal::Grant { session_id, .. } => Some(session_id),
            _ => None,
        }
    }

    /// The OAuth client the credential was issued to, if any.
    pub fn client_id(&self) -> Option<&str> {
        match self {
            Principal::Grant { client_id, .. } | Principal::Client { client_id, .. } => Some(client_id),
            _ => None,
        }
    }

    /// The user as loaded by the bearer check (saves a handler a second read).
    pub fn user(&self) -> Option<&Arc<UserRow>> {
        match self {
            Principal::Session { user, .. } | Principal::Grant { user, .. } => Some(user),
            _ => None,
        }
    }

    /// The user as the credential check loaded it, a key's owner too: what
    /// `/v1/me` shows.
    pub fn loaded_user(&self) -> Option<&Arc<UserRow>> {
        match self {
            Principal::ApiKey { owner, .. } => owner.as_ref(),
            _ => self.user(),
        }
    }

    /// The user's roles now: a first-party session only (a key, a client or a grant
    /// has the scopes it was given, never roles).
    pub fn roles(&self) -> &[String] {
        match self {
            Principal::Session { user, .. } => &user.roles,
            _ => &[],
        }
    }

    /// Who to name as the actor in audit records.
    pub fn actor(&self) -> &str {
        match self {
            Principal::ApiKey { key_id, .. } => key_id,
            _ => self.subject(),
        }
    }

    /// Whether a user is behind the credential (not a client acting for itself,
    /// not the operator).
    pub fn has_user(&self) -> bool {
        self.user_id().is_some()
    }

    /// Who answers for a credential this caller registers: the operator, the user
    /// behind the caller, or (for a client acting for itself) that client's owner.
    pub fn owner_label(&self) -> &str {
        match self {
            Principal::Client { owner, .. } => owner,
            _ => self.subject(),
        }
    }
}
