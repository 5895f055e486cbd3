//! `/v1/auth/*`: register, login, refresh, logout.

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use portcullis_proto::{
    LoginRequest, LoginResponse, MfaChallenge, ReauthRequest, RefreshRequest, RegisterRequest, RegisterResponse,
};

use super::{
    AppState,
    error::ApiError,
    extract::{Authed, JsonBody, SessionAuthed},
    openapi::{
        Conflict, Forbidden, RateLimited, ReauthFailed, RefreshFailed, SignInFailed, SignInForbidden, SignInLimited,
    },
    views::user_view,
};
use crate::{
    auth::{AuthError, Issued, SignIn},
    crypto::Secret,
    ctx::RequestCtx,
};

/// Creates an account (with the default role) and mails the proof of its address.
#[utoipa::path(post, path = "/v1/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The new account; it signs in at `POST /v1/auth/login`.", body = RegisterResponse),
        (status = 409, response = Conflict),
        (status = 429, response = RateLimited),
    ))]
pub async fn user_register(
    State(state): State<AppState>,
    ctx: RequestCtx,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> Result<Response, ApiError> {
    let user = state.auth.register(&ctx, &req.email, Secret::new(req.password), req.name, Vec::new()).await?;
    Ok((StatusCode::CREATED, axum::Json(RegisterResponse { user: user_view(&user) })).into_response())
}

/// The `200` of a password sign-in: the session, or the second factor it still
/// needs (`mfa_required: true`).
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // The document's schema only: the handler builds each body itself.
enum LoginAnswer {
    /// Signed in.
    Session(Box<LoginResponse>),
    /// A second factor must finish the sign-in at `POST /v1/auth/login/mfa`.
    Challenge(MfaChallenge),
}

/// Signs in with email and password.
///
/// The answer is the session's tokens, or the challenge of a second factor.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "The token response, or (`mfa_required: true`) the `mfa_token` a second factor finishes.", body = LoginAnswer),
        (status = 401, response = SignInFailed),
        (status = 403, response = SignInForbidden),
        (status = 429, response = SignInLimited),
    ))]
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

/// Exchanges a refresh token for new tokens; the one presented is spent.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "The token response, with the next refresh token.", body = LoginResponse),
        (status = 401, response = RefreshFailed),
        (status = 429, response = RateLimited),
    ))]
pub async fn session_refresh(
    State(state): State<AppState>,
    ctx: RequestCtx,
    JsonBody(req): JsonBody<RefreshRequest>,
) -> Result<Response, ApiError> {
    let issued = state.auth.refresh(&ctx, &Secret::new(req.refresh_token)).await?;
    Ok(token_response(issued))
}

/// Ends the caller's session; its tokens stop working at once.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth",
    responses((status = 204, description = "Signed out."), (status = 403, response = Forbidden)),
    security(("bearer" = [])))]
pub async fn session_logout(
    State(state): State<AppState>,
    ctx: RequestCtx,
    authed: Authed,
) -> Result<StatusCode, ApiError> {
    let session_id = authed.session_id()?;
    state.auth.logout(&ctx, &authed.0, session_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Confirms the password of the caller's session, renewing its sign-in time.
///
/// The renewed sign-in time lets the session do sensitive operations; `204`. With a
/// second factor, `200` asks for it (finished at `/v1/auth/login/mfa`).
#[utoipa::path(post, path = "/v1/auth/reauth", tag = "auth", 
    request_body = ReauthRequest,
    responses(
        (status = 200, description = "The account has a second factor: finish with this `mfa_token` at `POST /v1/auth/login/mfa`.", body = MfaChallenge),
        (status = 204, description = "The session's sign-in time is renewed."),
        (status = 401, response = ReauthFailed),
        (status = 403, response = Forbidden),
        (status = 429, response = SignInLimited),
    ),
    security(("bearer" = [])))]
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
