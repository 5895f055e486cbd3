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
    Page, PasskeyCeremony, PasskeyFinishRequest, PasskeyRegisterRequest, PasskeyRenameRequest, PasskeyStartRequest,
    PasskeyView,
};

use super::{
    AppState,
    auth::token_response,
    error::ApiError,
    extract::{JsonBody, RecentSession, SessionAuthed},
    mfa::Enrolling,
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

/// `POST /v1/me/passkeys/register/start` (needs a recent sign-in).
pub async fn passkey_register_start(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Enrolling(who): Enrolling,
) -> Result<Response, ApiError> {
    Ok(ceremony(state.auth.passkey_register_start(&ctx, &who).await?))
}

/// `POST /v1/me/passkeys/register/finish {challenge_id, credential, name?}`: `201`
/// with the passkey; recovery codes for the first factor, and the token response
/// when it finished a sign-in.
pub async fn passkey_register_finish(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Enrolling(who): Enrolling,
    JsonBody(req): JsonBody<PasskeyRegisterRequest>,
) -> Result<Response, ApiError> {
    let enrolled = state.auth.passkey_register_finish(&ctx, &who, &req.challenge_id, &req.credential, req.name).await?;
    super::mfa::confirmed(&state, &ctx, enrolled, StatusCode::CREATED).await
}

/// `GET /v1/me/passkeys`.
pub async fn passkey_list(
    State(state): State<AppState>,
    SessionAuthed(who): SessionAuthed,
) -> Result<Json<Page<PasskeyView>>, ApiError> {
    let keys = state.auth.passkey_list(&who).await?;
    Ok(Json(Page { data: keys.iter().map(passkey_view).collect(), next_cursor: None }))
}

/// `PATCH /v1/me/passkeys/{id} {name}`.
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

/// `DELETE /v1/me/passkeys/{id}` (a sensitive action: needs a recent sign-in).
pub async fn passkey_delete(
    State(state): State<AppState>,
    ctx: RequestCtx,
    RecentSession(who): RecentSession,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.auth.passkey_remove(&ctx, &who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/auth/passkey/start {mfa_token? | reauth?}`.
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

/// `POST /v1/auth/passkey/finish {challenge_id, credential, mfa_token?}`: the token
/// response, or `204` for recent authentication.
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
