//! The OAuth 2.0 authorization server and OpenID Connect provider: the client
//! registry ([`clients`]), the authorization endpoint's decisions ([`authorize`]),
//! the token endpoint's grants ([`token`]), introspection and revocation
//! ([`introspect`]), and client administration ([`manage`]). HTTP and the hosted
//! pages live in `crate::http`; errors here are already RFC 6749 errors.
//!
//! An OAuth grant is a session (`sessions.client_id` set): its refresh tokens rotate
//! with the same reuse detection as first-party sessions and its access tokens carry
//! its `sid`, so revoking the grant ends them at once.

pub mod authorize;
pub mod client_auth;
pub mod grants;
pub mod id_token;
pub mod introspect;
pub mod manage;
pub mod params;

use std::{sync::Arc, time::Duration};

use axum::http::StatusCode;

pub use client_auth::{ClientAuth, Presented};

use crate::{
    api_keys::ApiKeys,
    audit::{Audit, Event},
    auth::Auth,
    clients::{Client, Clients},
    ctx::RequestCtx,
    store::{Db, StoreError},
    tokens::Tokens,
};

/// An RFC 6749 §5.2 error (also used for the authorization endpoint's redirects).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error}: {description}")]
pub struct OAuthError {
    /// HTTP status of a direct answer.
    pub status: StatusCode,
    /// The registered error code.
    pub error: &'static str,
    /// Human-readable detail (`error_description`).
    pub description: String,
    /// The client tried HTTP Basic: answer with a `WWW-Authenticate: Basic` challenge.
    pub basic_challenge: bool,
    /// Seconds for `Retry-After`, when the answer is 429.
    pub retry_after: Option<u64>,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self { status, error, description: description.into(), basic_challenge: false, retry_after: None }
    }
    /// Over a per-address limit: `429` with this error code and `Retry-After`.
    pub fn too_many(error: &'static str, d: impl Into<String>, retry_after: u64) -> Self {
        Self { retry_after: Some(retry_after), ..Self::new(StatusCode::TOO_MANY_REQUESTS, error, d) }
    }
    /// Malformed request.
    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }
    /// Client authentication failed.
    pub fn invalid_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", d)
    }
    /// The code or refresh token is not good.
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", d)
    }
    /// The client may not use this grant or response type.
    pub fn unauthorized_client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", d)
    }
    /// Unknown grant type.
    pub fn unsupported_grant_type(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "unsupported_grant_type", d)
    }
    /// A scope the client may not have.
    pub fn invalid_scope(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", d)
    }
    /// The server is busy (the hash pool or rate limit): retry.
    pub fn temporarily_unavailable(d: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", d)
    }
    /// Our failure; the detail is logged, not sent.
    pub fn server_error(detail: &str) -> Self {
        tracing::error!(error = %detail, "OAuth request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "the server failed; try again")
    }
    /// Any error code (for the authorization endpoint's redirect errors).
    pub fn code(error: &'static str, d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, d)
    }
    /// Marks the error as answering an HTTP Basic attempt.
    pub fn with_basic_challenge(mut self) -> Self {
        self.basic_challenge = true;
        self
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidInput => {
                OAuthError::invalid_request("the request contains characters that cannot be stored")
            }
            other => OAuthError::server_error(&other.to_string()),
        }
    }
}

impl From<anyhow::Error> for OAuthError {
    fn from(e: anyhow::Error) -> Self {
        OAuthError::server_error(&format!("{e:#}"))
    }
}

/// Settings of the provider, from config.
#[derive(Debug, Clone)]
pub struct OAuthSettings {
    /// Our issuer URL, without a trailing slash.
    pub issuer: String,
    /// Lifetime of authorization codes.
    pub code_ttl: Duration,
    /// Lifetime of a grant with `offline_access` (its refresh tokens).
    pub refresh_ttl: Duration,
    /// Lifetime of a browser session of the hosted pages.
    pub browser_session_ttl: Duration,
}

impl OAuthSettings {
    /// Settings from the configuration; codes live 60 s (RFC 6749 §4.1.2 asks for
    /// at most 10 minutes; a browser redirect needs seconds).
    pub fn from_config(cfg: &crate::config::Config, issuer: String) -> Self {
        Self {
            issuer,
            code_ttl: Duration::from_secs(60),
            refresh_ttl: cfg.tokens.refresh_ttl.0,
            browser_session_ttl: cfg.tokens.refresh_ttl.0,
        }
    }

    /// The token endpoint URL: the `aud` client assertions must carry.
    pub fn token_endpoint(&self) -> String {
        format!("{}/oauth/token", self.issuer)
    }
}

/// The provider.
pub struct OAuth {
    db: Db,
    auth: Arc<Auth>,
    tokens: Arc<Tokens>,
    clients: Arc<Clients>,
    client_auth: ClientAuth,
    api_keys: Arc<ApiKeys>,
    audit: Audit,
    settings: OAuthSettings,
}

impl OAuth {
    /// Wires the provider.
    pub fn new(
        auth: Arc<Auth>,
        client_auth: ClientAuth,
        api_keys: Arc<ApiKeys>,
        audit: Audit,
        settings: OAuthSettings,
    ) -> Self {
        let db = auth.db().clone();
        let tokens = auth.tokens().clone();
        let clients = client_auth.clients().clone();
        Self { db, auth, tokens, clients, client_auth, api_keys, audit, settings }
    }

    /// The client registry.
    pub fn clients(&self) -> &Arc<Clients> {
        &self.clients
    }

    /// First-party authentication, for the hosted pages.
    pub fn auth(&self) -> &Arc<Auth> {
        &self.auth
    }

    /// Settings.
    pub fn settings(&self) -> &OAuthSettings {
        &self.settings
    }

    /// The token service (for discovery: which algorithm signs).
    pub fn tokens(&self) -> &Arc<Tokens> {
        &self.tokens
    }

    /// Records an audit event, naming the client as the actor.
    async fn audit(
        &self,
        ctx: &RequestCtx,
        kind: &str,
        success: bool,
        user_id: Option<&str>,
        client_id: &str,
        reason: Option<&str>,
    ) {
        self.audit.record(ctx, Event { kind, success, user_id, actor: Some(client_id), reason }).await;
    }

    /// Authenticates the client of a request at `endpoint`; a client assertion may
    /// name as its audience the issuer, the token endpoint, or `endpoint` (built only
    /// when an assertion is presented: this is every client-credentials request's path).
    pub async fn authenticate_client(
        &self,
        presented: Presented,
        endpoint: &str,
        now: i64,
    ) -> Result<Arc<Client>, OAuthError> {
        let issuer = &self.settings.issuer;
        let audiences = || vec![issuer.clone(), self.settings.token_endpoint(), format!("{issuer}{endpoint}")];
        self.client_auth.authenticate(presented, audiences, now).await
    }
}

/// Splits a space-separated scope string into distinct values, in order.
pub fn scope_list(scope: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    }
    out
}

/// Sets `key` on a JSON object (no-op on anything else): indexing a `Value` panics
/// on non-objects.
pub fn put(obj: &mut serde_json::Value, key: &str, value: serde_json::Value) {
    if let Some(o) = obj.as_object_mut() {
        o.insert(key.to_owned(), value);
    }
}
