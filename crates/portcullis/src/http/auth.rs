//! `/v1/auth/*`: register, login, refresh, logout.

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use portcullis_proto::{LoginRequest, LoginResponse, ReauthRequest, RefreshRequest, RegisterRequest, RegisterResponse};

use super::{
    AppState,
    error::ApiError,
    extract::{Authed, JsonBody, SessionAuthed},
    views::user_view,
};
use crate::{
    auth::{AuthError, Issued, SignIn},
    crypto::Secret,
    ctx::RequestCtx,
};

/// `POST /v1/auth/register`.
pub async fn user_register(
    State(state): State<AppState>,
    ctx: RequestCtx,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> Result<Response, ApiError> {
    let user = state.auth.register(&ctx, &req.email, Secret::new(req.password), req.name, Vec::new()).await?;
    Ok((StatusCode::CREATED, axum::Json(RegisterResponse { user: user_view(&user) })).into_response())
}

/// `POST /v1/auth/login`.
pub async fn session_login(
    State(state): State<AppState>,
    ctx: RequestCtx,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<Response, ApiError> {
    match state.auth.login(&ctx, &req.email, Secret::new(req.password)).await? {
        SignIn::Done(issued) => Ok(token_response(issued)),
        SignIn::SecondFactor(c) => Ok(super::mfa::challenge_response(c)),
        SignIn::Enrol(c) => Err(AuthError::MfaEnrollmentRequired(c.token).into()),
    }
}

/// `POST /v1/auth/refresh`.
pub async fn session_refresh(
    State(state): State<AppState>,
    ctx: RequestCtx,
    JsonBody(req): JsonBody<RefreshRequest>,
) -> Result<Response, ApiError> {
    let issued = state.auth.refresh(&ctx, &Secret::new(req.refresh_token)).await?;
    Ok(token_response(issued))
}

/// `POST /v1/auth/logout`.
pub async fn session_logout(
    State(state): State<AppState>,
    ctx: RequestCtx,
    authed: Authed,
) -> Result<StatusCode, ApiError> {
    let session_id = authed.session_id()?;
    state.auth.logout(&ctx, &authed.0, session_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/auth/reauth`: confirms the password of the caller's session, which
/// renews its sign-in time for sensitive operations; `204`. With a second factor,
/// `200` asks for it (finished at `/v1/auth/login/mfa`).
pub async fn session_reauth(
    State(state): State<AppState>,
    ctx: RequestCtx,
    SessionAuthed(who): SessionAuthed,
    JsonBody(req): JsonBody<ReauthRequest>,
) -> Result<Response, ApiError> {
    match state.auth.reauth(&ctx, &who, Secret::new(req.password)).await? {
        Some(c) => Ok(super::mfa::challenge_response(c)),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// The token response's body.
pub fn login_body(issued: Issued) -> LoginResponse {
    LoginResponse {
        access_token: issued.access_token,
        token_type: "Bearer".into(),
        expires_in: issued.expires_in,
        refresh_token: issued.refresh_token.expose().to_owned(),
        user: user_view(&issued.user),
    }
}

/// Token bodies must never be cached (RFC 6749 §5.1).
pub fn token_response(issued: Issued) -> Response {
    let mut res = axum::Json(login_body(issued)).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}
