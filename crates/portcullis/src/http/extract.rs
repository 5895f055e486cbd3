//! Extractors every handler shares: a JSON body whose failures become per-field
//! `validation_failed` problems, the caller's context (address, user agent, request
//! id, time), and [`Authed`], the bearer middleware the rest of the server reuses.

use std::net::SocketAddr;

use axum::{
    body::Bytes,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Request},
    http::{StatusCode, header, request::Parts},
};
use portcullis_proto::ErrorCode;
use serde::de::DeserializeOwned;

use super::{AppState, error::ApiError};
use crate::ctx::{Principal, RequestCtx};

/// A JSON request body. Unlike axum's `Json`, every rejection is a problem document
/// that names the offending field.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        require_json(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::PayloadTooLarge,
                    "the request body is too large",
                )
            } else {
                ApiError::validation(vec![crate::validate::field("", "invalid_body", &rej.body_text())])
            }
        })?;
        crate::validate::parse_json(&bytes).map(JsonBody).map_err(ApiError::from)
    }
}

/// `415` unless the body is declared JSON (`application/json` or `…+json`).
pub fn require_json(headers: &http::HeaderMap) -> Result<(), ApiError> {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
        .unwrap_or(false);
    if json_type {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::UnsupportedMediaType,
        "send a JSON body with Content-Type: application/json",
    ))
}

/// Request id minted by the id layer, for logs and the audit trail.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl FromRequestParts<AppState> for RequestCtx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // The client is the socket peer unless that peer is a trusted proxy.
        let ip = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| {
            // Every X-Forwarded-For line, in order: a proxy may append its own line
            // after one the client forged.
            let forwarded: Vec<&str> =
                parts.headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
            let forwarded = (!forwarded.is_empty()).then(|| forwarded.join(","));
            crate::abuse::client_ip(c.0.ip(), forwarded.as_deref(), &state.trusted_proxies).to_string()
        });
        let user_agent =
            parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(256).collect());
        let request_id = parts.headers.get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let route = parts.extensions.get::<axum::extract::MatchedPath>().map(|m| m.as_str().to_owned());
        Ok(RequestCtx { ip, user_agent, request_id, route, now: crate::clock::now_ms() })
    }
}

/// The bearer middleware: a request that gets this far carries a valid access
/// token of a live session, or a valid `X-API-Key`. Reuse it on any protected route;
/// add a [`super::guard::Can`] to require scopes.
#[derive(Debug, Clone)]
pub struct Authed(pub Principal);

impl Authed {
    /// The session behind the credential, for routes that only make sense for a
    /// signed-in user (an API key has no session to end or list).
    pub fn session_id(&self) -> Result<&str, ApiError> {
        if self.0.client_id().is_some() {
            // An OAuth client's token acts within its granted scope; managing the
            // account's credentials and sessions is never part of it.
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "this route needs a first-party session, not a token issued to an OAuth client",
            ));
        }
        self.0.session_id().ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "this route needs a user session, not an API key",
            )
        })
    }
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(cached) = parts.extensions.get::<Authed>() {
            return Ok(cached.clone());
        }
        let authed = authenticate(parts, state).await?;
        parts.extensions.insert(authed.clone());
        Ok(authed)
    }
}

async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<Authed, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        if let Some(key) = parts.headers.get("x-api-key") {
            let key = key.to_str().map_err(|_| invalid("the X-API-Key header is not valid text"))?.trim();
            return match state.api_keys.authenticate(key, crate::clock::now_ms()).await {
                Ok(p) => Ok(Authed(p)),
                Err(r) => {
                    let ctx = RequestCtx::from_request_parts(parts, state).await.unwrap_or_default();
                    // Failed keys are counted per client: past the limit this node
                    // answers 429 from memory, so junk keys cannot flood the database
                    // and the audit trail with one write per request.
                    if let Err(secs) = state.key_fail_limiter.hit(ctx.client(), ctx.route(), ctx.now).await {
                        return Err(crate::auth::AuthError::RateLimited(secs).into());
                    }
                    state.api_keys.audit_failure(&ctx, r).await;
                    Err(match r {
                        crate::api_keys::KeyRejection::Expired => {
                            ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::TokenExpired, "the API key has expired")
                        }
                        crate::api_keys::KeyRejection::Invalid => invalid("the API key is not valid"),
                    })
                }
            };
        }
        return Err(ApiError::missing_token());
    };
    let value = value.to_str().map_err(|_| invalid("the Authorization header is not valid text"))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::missing_token());
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(invalid("the bearer token is empty"));
    }
    let principal = state.auth.authenticate(token, crate::clock::now_ms()).await?;
    Ok(Authed(principal))
}

fn invalid(why: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken, why)
}

/// A bad query string (`?limit=abc`) as a `validation_failed` problem.
pub fn query_error(rej: axum::extract::rejection::QueryRejection) -> ApiError {
    let text = rej.body_text();
    // serde_urlencoded says e.g. "Failed to deserialize query string: limit: invalid digit found in string".
    let detail = text.split_once(": ").map(|(_, d)| d).unwrap_or(&text);
    let (field, message) = detail.split_once(": ").unwrap_or(("", detail));
    ApiError::validation(vec![crate::validate::field(field, "invalid", message)])
}

/// A signed-in user's session — never an API key. For routes that manage the
/// account's own credentials and sessions: a key that could list, rotate, revoke or
/// mint keys, or end sessions, would turn any stolen narrow key into the account.
#[derive(Debug, Clone)]
pub struct SessionAuthed(pub Principal);

impl FromRequestParts<AppState> for SessionAuthed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let authed = Authed::from_request_parts(parts, state).await?;
        authed.session_id()?;
        Ok(SessionAuthed(authed.0))
    }
}

/// A signed-in user's session whose sign-in is recent (`security.reauth_window`):
/// for sensitive operations such as minting an API key. A stolen access token
/// alone cannot pass it; `POST /v1/auth/reauth` with the password renews it.
#[derive(Debug, Clone)]
pub struct RecentSession(pub Principal);

impl FromRequestParts<AppState> for RecentSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let SessionAuthed(who) = SessionAuthed::from_request_parts(parts, state).await?;
        state.auth.require_recent(&who, crate::clock::now_ms()).await?;
        Ok(RecentSession(who))
    }
}
