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

/// An authenticated caller: a user's live session, an API key acting for its
/// owner, an OAuth grant or client, or the operator at the command line. `scopes`
/// are always what the caller may do NOW (the token's claims cut down to current
/// roles, owners and clients), never what a token says about itself.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user (`sub`), the owner of the API key, or the client's id for a client
    /// acting for itself; `operator` for the command line.
    pub user_id: String,
    /// Session id (`sid`); `None` for API keys.
    pub session_id: Option<String>,
    /// The API key, when that is the credential.
    pub api_key_id: Option<String>,
    /// The OAuth client the token was issued to; with no session, the client
    /// itself is the caller (client credentials) and `user_id` is its id.
    pub client_id: Option<String>,
    /// For a client acting for itself: who registered it (a user id or `operator`).
    pub client_owner: Option<String>,
    /// The user's roles now (API keys, clients and grants to clients carry none).
    pub roles: Vec<String>,
    /// Permissions the caller holds now.
    pub scopes: Vec<String>,
    /// The user as loaded by the bearer check, when it loaded one (saves the handler
    /// a second read).
    pub user: Option<Arc<UserRow>>,
    /// The operator at the command line: no user, every permission there is.
    pub operator: bool,
}

impl Principal {
    /// The operator of a command-line command, holding `scopes` (every permission
    /// that exists): named `operator` in the audit trail and as the owner of what
    /// it registers.
    pub fn operator(scopes: Vec<String>) -> Self {
        Self {
            user_id: OPERATOR.into(),
            session_id: None,
            api_key_id: None,
            client_id: None,
            client_owner: None,
            roles: Vec::new(),
            scopes,
            user: None,
            operator: true,
        }
    }

    /// Who to name as the actor in audit records.
    pub fn actor(&self) -> &str {
        self.api_key_id.as_deref().unwrap_or(&self.user_id)
    }

    /// Whether a user is behind the credential (not a client acting for itself,
    /// not the operator).
    pub fn has_user(&self) -> bool {
        !self.operator && (self.client_id.is_none() || self.session_id.is_some())
    }

    /// Who answers for a credential this caller registers: the operator, the user
    /// behind the caller, or (for a client acting for itself) that client's owner.
    pub fn owner_label(&self) -> &str {
        if self.operator {
            return OPERATOR;
        }
        match (&self.client_owner, self.has_user()) {
            (Some(owner), false) => owner,
            _ => &self.user_id,
        }
    }
}
