//! First-party authentication: accounts, password sign-in, sessions and their
//! refresh tokens, and turning a bearer token into a [`Principal`]. One file per
//! flow; [`Auth`] holds what every flow needs. HTTP lives in `crate::http`, SQL in
//! `crate::store`: this layer decides, they carry.

mod account;
mod login;
mod refresh;
mod session;

use std::{sync::Arc, time::Duration};

use portcullis_proto::FieldError;

pub use account::normalize_email;

use crate::{
    clock, crypto,
    passwords::{HashError, Hasher},
    store::{AuditRecord, Db, StoreError, UserRow},
    tokens::{TokenError, Tokens},
};

/// Domain failures of authentication, each with one client-facing meaning.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong email or password, or the account cannot sign in. Never more precise.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// Input failed validation, per field.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// The object conflicts with an existing one.
    #[error("{0}")]
    Conflict(&'static str),
    /// The bearer or refresh token is not (or no longer) good.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A spent refresh token came back: every session of its user was ended.
    #[error("refresh token was already used; all sessions of this account were ended")]
    RefreshReused,
    /// No such object, or not one the caller may see.
    #[error("not found")]
    NotFound,
    /// Password hashing is at capacity.
    #[error("the server is busy; retry shortly")]
    Overloaded,
    /// A failure on our side.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => AuthError::Conflict(what),
            other => AuthError::Internal(other.to_string()),
        }
    }
}

impl From<HashError> for AuthError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Overloaded => AuthError::Overloaded,
            HashError::Internal(m) => AuthError::Internal(m),
        }
    }
}

impl From<anyhow::Error> for AuthError {
    fn from(e: anyhow::Error) -> Self {
        AuthError::Internal(format!("{e:#}"))
    }
}

/// Who is asking, for sessions and the audit log; `now` is read once per request.
#[derive(Debug, Clone, Default)]
pub struct RequestCtx {
    /// Client address.
    pub ip: Option<String>,
    /// Client `User-Agent`, truncated.
    pub user_agent: Option<String>,
    /// Request id, also sent back as `X-Request-Id`.
    pub request_id: Option<String>,
    /// Milliseconds since the epoch.
    pub now: i64,
}

impl RequestCtx {
    /// A context for operator commands run from the CLI.
    pub fn system() -> Self {
        Self {
            now: clock::now_ms(),
            user_agent: Some("portcullis-cli".into()),
            ..Self::default()
        }
    }
}

/// An authenticated caller: a user's live session.
#[derive(Debug, Clone)]
pub struct Principal {
    /// User id (`sub`).
    pub user_id: String,
    /// Session id (`sid`).
    pub session_id: String,
    /// Roles from the token.
    pub roles: Vec<String>,
    /// Permissions from the token.
    pub scopes: Vec<String>,
}

/// What a successful login or refresh hands back.
#[derive(Debug)]
pub struct Issued {
    /// JWT access token.
    pub access_token: String,
    /// Opaque refresh token, shown to the client once; only its hash is stored.
    pub refresh_token: crypto::Secret,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The signed-in user.
    pub user: UserRow,
}

/// Authentication settings taken from config.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Session lifetime.
    pub refresh_ttl: Duration,
}

/// The first-party authentication service.
pub struct Auth {
    db: Db,
    hasher: Hasher,
    tokens: Arc<Tokens>,
    settings: AuthSettings,
}

impl Auth {
    /// Wires the service.
    pub fn new(db: Db, hasher: Hasher, tokens: Arc<Tokens>, settings: AuthSettings) -> Self {
        Self {
            db,
            hasher,
            tokens,
            settings,
        }
    }

    /// The database, for handlers that only read.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The token service.
    pub fn tokens(&self) -> &Arc<Tokens> {
        &self.tokens
    }

    /// Writes an audit record. An audit failure is logged, never turned into a
    /// failed sign-in: the user already got their answer's worth of work.
    async fn audit(
        &self,
        ctx: &RequestCtx,
        event: &str,
        success: bool,
        user_id: Option<&str>,
        reason: Option<&str>,
    ) {
        let record = AuditRecord {
            id: crypto::new_id("aud", ctx.now),
            time: ctx.now,
            event_type: event.to_owned(),
            outcome: if success { "success" } else { "failure" }.to_owned(),
            user_id: user_id.map(str::to_owned),
            actor: user_id
                .map(str::to_owned)
                .or_else(|| Some("anonymous".into())),
            ip: ctx.ip.clone(),
            user_agent: ctx.user_agent.clone(),
            request_id: ctx.request_id.clone(),
            reason: reason.map(str::to_owned),
        };
        if let Err(e) = self.db.audit_insert(&record).await {
            tracing::error!(error = %e, event, "writing the audit record failed");
        }
    }

    /// Roles and the union of their permissions, as token claims.
    async fn grants(&self, user: &UserRow) -> Result<(Vec<String>, String), AuthError> {
        let perms = self.db.role_permissions(&user.roles).await?;
        Ok((user.roles.clone(), perms.join(" ")))
    }
}
