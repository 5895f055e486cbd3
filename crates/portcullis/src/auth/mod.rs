//! First-party authentication: accounts, password sign-in, sessions and their
//! refresh tokens, and turning a bearer token into a [`Principal`]. One file per
//! flow; [`Auth`] holds what every flow needs. HTTP lives in `crate::http`, SQL in
//! `crate::store`: this layer decides, they carry.

mod account;
mod browser;
mod login;
mod refresh;
mod session;

use std::{sync::Arc, time::Duration};

use portcullis_proto::FieldError;

pub use account::normalize_email;
pub use browser::BrowserSession;

use crate::{
    abuse::{Limiter, LockoutPolicy, RateRule},
    audit::{Audit, Event},
    clock, crypto,
    passwords::{HashError, Hasher},
    store::{Db, StoreError, UserRow},
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
    /// Authenticated but lacking these scopes.
    #[error("insufficient scope")]
    Denied(Vec<String>),
    /// Authenticated, but this credential cannot do this at all.
    #[error("{0}")]
    Forbidden(&'static str),
    /// Password hashing is at capacity.
    #[error("the server is busy; retry shortly")]
    Overloaded,
    /// Too many attempts from this client; retry after this many seconds.
    #[error("too many attempts")]
    RateLimited(u64),
    /// The account (or email) is locked; retry after this many seconds.
    #[error("account locked")]
    AccountLocked(u64),
    /// A failure on our side.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => AuthError::Conflict(what),
            StoreError::InvalidInput => AuthError::Validation(vec![FieldError {
                field: String::new(),
                code: "invalid_characters".into(),
                message: "the request contains characters that cannot be stored (such as NUL)".into(),
            }]),
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
        Self { now: clock::now_ms(), user_agent: Some("portcullis-cli".into()), ..Self::default() }
    }
}

/// An authenticated caller: a user's live session, or an API key acting for its
/// owner.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The user (`sub`), or the owner of the API key.
    pub user_id: String,
    /// Session id (`sid`); `None` for API keys.
    pub session_id: Option<String>,
    /// The API key, when that is the credential.
    pub api_key_id: Option<String>,
    /// The OAuth client the token was issued to; with no session, the client
    /// itself is the caller (client credentials) and `user_id` is its id.
    pub client_id: Option<String>,
    /// Roles from the token (API keys carry none).
    pub roles: Vec<String>,
    /// Permissions: the token's `scope`, or the key's effective scopes.
    pub scopes: Vec<String>,
    /// The user as loaded by the bearer check, when it loaded one (saves the handler
    /// a second read).
    pub user: Option<Arc<UserRow>>,
}

impl Principal {
    /// Who to name as the actor in audit records.
    pub fn actor(&self) -> &str {
        self.api_key_id.as_deref().unwrap_or(&self.user_id)
    }

    /// Whether a user is behind the credential (not a client acting for itself).
    pub fn has_user(&self) -> bool {
        self.client_id.is_none() || self.session_id.is_some()
    }
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
    /// Put the user's `public_metadata` into access tokens as `metadata`.
    pub include_metadata: bool,
    /// Password attempts per client address; `None` for operator commands.
    pub login_rate: Option<RateRule>,
    /// Registrations per client address.
    pub register_rate: Option<RateRule>,
    /// Progressive lockout.
    pub lockout: LockoutPolicy,
}

impl AuthSettings {
    /// Settings from the configuration.
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Self {
            refresh_ttl: cfg.tokens.refresh_ttl.0,
            include_metadata: cfg.tokens.include_metadata,
            login_rate: Some(cfg.security.login_rate),
            register_rate: Some(cfg.security.register_rate),
            lockout: LockoutPolicy {
                threshold: cfg.security.lockout_threshold,
                durations: cfg.security.lockout_durations.iter().map(|d| d.0).collect(),
            },
        }
    }
}

/// The first-party authentication service.
pub struct Auth {
    db: Db,
    hasher: Hasher,
    tokens: Arc<Tokens>,
    settings: AuthSettings,
    audit: Audit,
    limiter: Option<Limiter>,
    register_limiter: Option<Limiter>,
    clients: Arc<crate::oauth::Clients>,
    live: session::LiveCache,
}

impl Auth {
    /// Wires the service.
    pub fn new(
        db: Db,
        hasher: Hasher,
        tokens: Arc<Tokens>,
        settings: AuthSettings,
        audit: Audit,
        clients: Arc<crate::oauth::Clients>,
    ) -> Self {
        let limiter = settings.login_rate.map(|rule| Limiter::new(db.clone(), "password", rule));
        let register_limiter = settings.register_rate.map(|rule| Limiter::new(db.clone(), "register", rule));
        Self { db, hasher, tokens, settings, audit, limiter, register_limiter, clients, live: Default::default() }
    }

    /// Session lifetime settings.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// The database, for handlers that only read.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The token service.
    pub fn tokens(&self) -> &Arc<Tokens> {
        &self.tokens
    }

    /// The password hasher, shared with the admin API.
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// Records an audit event about a user, acted by that user.
    async fn audit(&self, ctx: &RequestCtx, event: &str, success: bool, user_id: Option<&str>, reason: Option<&str>) {
        let e = Event { kind: event, success, user_id, actor: None, reason };
        self.audit.record(ctx, e).await;
    }

    /// Signs an access token for a session of `user` with the roles, permissions
    /// and (if configured) public metadata the user has right now.
    async fn access_token(&self, user: &UserRow, session_id: &str, now: i64) -> Result<String, AuthError> {
        let perms = self.db.role_permissions(&user.roles).await?;
        let metadata =
            if self.settings.include_metadata { serde_json::from_str(&user.public_metadata).ok() } else { None };
        Ok(self.tokens.issue(&user.id, session_id, user.roles.clone(), perms.join(" "), metadata, now)?)
    }
}
