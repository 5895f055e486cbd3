//! Passkeys over the JSON API: registration and management under `/v1/me/passkeys`,
//! and the ceremonies of `/v1/auth/passkey/*` (passkey-first sign-in, a passkey as
//! the second factor, recent authentication).

use axum::{
    Json,
    extract::{FromRequestParts, Path, State},
    http::{StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use portcullis_proto::{
    LoginResponse, MfaConfirmed, Page, PasskeyCeremony, PasskeyFinishRequest, PasskeyRegisterRequest,
    PasskeyRenameRequest, PasskeyStartRequest, PasskeyView,
};

use super::{
    AppState,
    auth::token_response,
    error::ApiError,
    extract::{JsonBody, RecentSession, SessionAuthed},
    mfa::Enrolling,
    openapi::{
        Conflict, EnrolUnauthorized, Forbidden, NotFound, PasskeyFailed, RateLimited, ReauthRequired, SignInForbidden,
        SignInLimited,
    },
    views::passkey_view,
};
use crate::{
    auth::{Ceremony, PasskeyDone},
    crypto::Secret,
    ctx::{Principal, RequestCtx},
};

fn ceremony(c: Ceremony) -> Response {
    Json(PasskeyCeremony { challenge_id: c.challenge_id, public_key: c.public_key }).into_response()
}

/// A signed-in session if the request carries a credential, else nobody.
pub struct MaybeSession(pub Option<Principal>);

impl FromRequestParts<AppState> for MaybeSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if parts.headers.get(header::AUTHORIZATION).is_none() && parts.headers.get("x-api-key").is_none() {
            return Ok(MaybeSession(None));
        }
        Ok(MaybeSession(Some(SessionAuthed::from_request_parts(parts, state).await?.0)))
    }
}

/// Starts registering a new passkey: the options for `navigator.credentials.create`.
///
/// A session needs a recent sign-in; the `mfa_token` of `mfa_enrollment_required`
/// works too.
#[utoipa::path(post, path = "/v1/me/passkeys/register/start", tag = "passkeys",
    responses(
        (status = 401, response = EnrolUnauthorized),
        (status = 200, description = "The ceremony; finish it at `POST /v1/me/passkeys/register/finish`.", body = PasskeyCeremony),
        (status = 403, response = ReauthRequired),
        (status = 409, response = Conflict),
    ),
    security(("bearer" = []), ("mfa_token" = [])))]
pub async fn passkey_register_start(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Enrolling(who): Enrolling,
) -> Result<Response, ApiError> {
    Ok(ceremony(state.auth.passkey_register_start(&ctx, &who).await?))
}

/// Stores the new passkey from the browser's answer to the ceremony.
///
/// Recovery codes for the account's first factor, and the token response when it
/// finished a sign-in.
#[utoipa::path(post, path = "/v1/me/passkeys/register/finish", tag = "passkeys",
    request_body = PasskeyRegisterRequest,
    responses(
        (status = 401, response = EnrolUnauthorized),
        (status = 201, description = "The passkey; the recovery codes and the session, where there are any, are shown this once.", body = MfaConfirmed),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
    ),
    security(("bearer" = []), ("mfa_token" = [])))]
pub async fn passkey_register_finish(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Enrolling(who): Enrolling,
    JsonBody(req): JsonBody<PasskeyRegisterRequest>,
) -> Result<Response, ApiError> {
    let enrolled = state.auth.passkey_register_finish(&ctx, &who, &req.challenge_id, &req.credential, req.name).await?;
    super::mfa::confirmed(&state, &ctx, enrolled, StatusCode::CREATED).await
}

/// Lists the caller's passkeys.
#[utoipa::path(get, path = "/v1/me/passkeys", tag = "passkeys",
    responses(
        (status = 200, description = "Every passkey of the account, on one page (`next_cursor` is always `null`).", body = Page<PasskeyView>),
        (status = 403, response = Forbidden),
    ),
    security(("bearer" = [])))]
pub async fn passkey_list(
    State(state): State<AppState>,
    SessionAuthed(who): SessionAuthed,
) -> Result<Json<Page<PasskeyView>>, ApiError> {
    let keys = state.auth.passkey_list(&who).await?;
    Ok(Json(Page { data: keys.iter().map(passkey_view).collect(), next_cursor: None }))
}

/// Renames one of the caller's passkeys.
#[utoipa::path(patch, path = "/v1/me/passkeys/{id}", tag = "passkeys",
    params(("id" = String, Path, description = "The passkey's id.")),
    request_body = PasskeyRenameRequest,
    responses(
        (status = 200, description = "The passkey, renamed.", body = PasskeyView),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
    security(("bearer" = [])))]
pub async fn passkey_rename(
    State(state): State<AppState>,
    ctx: RequestCtx,
    SessionAuthed(who): SessionAuthed,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<PasskeyRenameRequest>,
) -> Result<Json<PasskeyView>, ApiError> {
    state.auth.passkey_rename(&ctx, &who, &id, &req.name).await?;
    let keys = state.auth.passkey_list(&who).await?;
    let key = keys.iter().find(|k| k.id == id).ok_or_else(|| ApiError::not_found("no such passkey"))?;
    Ok(Json(passkey_view(key)))
}

/// Removes one of the caller's passkeys (needs a recent sign-in).
#[utoipa::path(delete, path = "/v1/me/passkeys/{id}", tag = "passkeys",
    params(("id" = String, Path, description = "The passkey's id.")),
    responses(
        (status = 204, description = "Removed; with the last factor go the recovery codes."),
        (status = 403, response = ReauthRequired),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
    security(("bearer" = [])))]
pub async fn passkey_delete(
    State(state): State<AppState>,
    ctx: RequestCtx,
    RecentSession(who): RecentSession,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.auth.passkey_remove(&ctx, &who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts a passkey sign-in: the options for `navigator.credentials.get`.
///
/// With no argument, a passkey-first sign-in; with an `mfa_token`, a passkey as the
/// second factor of that pending sign-in; with `reauth: true` and the session's
/// Bearer token, a recent-authentication check of that session.
#[utoipa::path(post, path = "/v1/auth/passkey/start", tag = "passkeys",
    request_body = PasskeyStartRequest,
    responses(
        (status = 200, description = "The ceremony; finish it at `POST /v1/auth/passkey/finish`.", body = PasskeyCeremony),
        (status = 401, response = EnrolUnauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 429, response = RateLimited),
    ),
    security((), ("bearer" = [])))]
pub async fn passkey_start(
    State(state): State<AppState>,
    ctx: RequestCtx,
    MaybeSession(who): MaybeSession,
    JsonBody(req): JsonBody<PasskeyStartRequest>,
) -> Result<Response, ApiError> {
    let token = req.mfa_token.map(Secret::new);
    let reauth = match (req.reauth, &who) {
        (true, Some(p)) => Some(p),
        (true, None) => return Err(ApiError::missing_token()),
        (false, _) => None,
    };
    Ok(ceremony(state.auth.passkey_sign_in_start(&ctx, token.as_ref(), reauth).await?))
}

/// Finishes a passkey sign-in with the browser's answer to the ceremony.
///
/// The token response, or `204` for a recent-authentication check.
#[utoipa::path(post, path = "/v1/auth/passkey/finish", tag = "passkeys",
    request_body = PasskeyFinishRequest,
    responses(
        (status = 200, description = "Signed in: the token response.", body = LoginResponse),
        (status = 204, description = "The recent-authentication check is done: the session's sign-in time is renewed."),
        (status = 401, response = PasskeyFailed),
        (status = 403, response = SignInForbidden),
        (status = 429, response = SignInLimited),
    ))]
pub async fn passkey_finish(
    State(state): State<AppState>,
    ctx: RequestCtx,
    JsonBody(req): JsonBody<PasskeyFinishRequest>,
) -> Result<Response, ApiError> {
    let token = req.mfa_token.map(Secret::new);
    match state.auth.passkey_sign_in_finish(&ctx, &req.challenge_id, &req.credential, token.as_ref(), false).await? {
        PasskeyDone::SignedIn(factor, _) => Ok(token_response(state.auth.complete_sign_in(&ctx, *factor).await?)),
        PasskeyDone::Reauthenticated => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}
