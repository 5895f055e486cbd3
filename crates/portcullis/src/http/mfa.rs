//! Second factors over the JSON API: finishing a sign-in (`/v1/auth/login/mfa`),
//! the user's own factors (`/v1/me/mfa*`), and the admin reset. Enrolment routes
//! also take, as their Bearer token, the `mfa_token` of `mfa_enrollment_required`
//! ([`Enrolling`]); no other route does.

use axum::{
    Json,
    extract::{FromRequestParts, Path, State},
    http::{StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use portcullis_proto::{
    LoginResponse, MfaChallenge, MfaCodeRequest, MfaConfirmed, MfaFactor, MfaStatus, MfaTokenRequest, MfaVerifyRequest,
    RecoveryCodes, SmsEnrolRequest, SmsSent, TotpEnrolment,
};

use super::{
    AppState,
    auth::{login_body, token_response},
    error::ApiError,
    extract::{JsonBody, RecentSession, SessionAuthed},
    guard::{Can, UsersWrite},
    openapi::{
        Conflict, EnrolUnauthorized, Forbidden, MfaFailed, NotFound, RateLimited, ReauthRequired, SignInLimited,
    },
};
use crate::{
    auth::{Challenge, Enrolled, Enroller, MfaDone, Proof},
    clock::rfc3339,
    crypto::Secret,
    ctx::RequestCtx,
};

/// The `200` that asks for the second factor.
pub fn challenge_response(c: Challenge) -> Response {
    let body = MfaChallenge {
        mfa_required: true,
        mfa_token: c.token.expose().to_owned(),
        factors: c.factors.iter().map(|f| (*f).to_owned()).collect(),
    };
    let mut res = Json(body).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    res
}

/// Finishes a pending sign-in (or recent-authentication check) with a second factor.
///
/// Send the `mfa_token` with a `code` (authenticator app or SMS) or a
/// `recovery_code`: the token response of the sign-in, or `204` for a
/// recent-authentication check.
#[utoipa::path(post, path = "/v1/auth/login/mfa", tag = "mfa",
    request_body = MfaVerifyRequest,
    responses(
        (status = 200, description = "Signed in: the token response.", body = LoginResponse),
        (status = 204, description = "The recent-authentication check is done: the session's sign-in time is renewed."),
        (status = 401, response = MfaFailed),
        (status = 429, response = SignInLimited),
    ))]
pub async fn login_mfa_verify(
    State(state): State<AppState>,
    ctx: RequestCtx,
    JsonBody(req): JsonBody<MfaVerifyRequest>,
) -> Result<Response, ApiError> {
    let proof = match (req.code, req.recovery_code) {
        (Some(code), None) => Proof::Code(code),
        (None, Some(code)) => Proof::Recovery(code),
        _ => {
            return Err(ApiError::validation(vec![crate::validate::field(
                "code",
                "required",
                "send either code (authenticator app or SMS) or recovery_code",
            )]));
        }
    };
    match state.auth.login_mfa(&ctx, &Secret::new(req.mfa_token), proof).await? {
        MfaDone::SignedIn(issued) => Ok(token_response(*issued)),
        MfaDone::Reauthenticated => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// Who may call an enrolment route: a signed-in user, or a pending sign-in that
/// must enrol (`Authorization: Bearer mfa_…`).
pub struct Enrolling(pub Enroller);

impl FromRequestParts<AppState> for Enrolling {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        if let Some(token) = bearer.filter(|t| t.starts_with("mfa_")) {
            return Ok(Enrolling(Enroller::Pending(Secret::new(token))));
        }
        let SessionAuthed(who) = SessionAuthed::from_request_parts(parts, state).await?;
        Ok(Enrolling(Enroller::Session(who)))
    }
}

/// Starts an authenticator-app enrolment: the secret and its QR code.
///
/// A session needs a recent sign-in; the `mfa_token` of `mfa_enrollment_required`
/// works too.
#[utoipa::path(post, path = "/v1/me/mfa/totp", tag = "mfa",
    responses(
        (status = 401, response = EnrolUnauthorized),
        (status = 201, description = "The pending enrolment; confirm it with the app's first code.", body = TotpEnrolment),
        (status = 403, response = ReauthRequired),
        (status = 409, response = Conflict),
    ),
    security(("bearer" = []), ("mfa_token" = [])))]
pub async fn totp_start(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Enrolling(who): Enrolling,
) -> Result<Response, ApiError> {
    let setup = state.auth.totp_start(&ctx, &who).await?;
    let body = TotpEnrolment {
        secret: setup.secret.expose().to_owned(),
        otpauth_uri: setup.otpauth_uri.expose().to_owned(),
        qr_svg: setup.qr_svg,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Confirms the authenticator-app enrolment with the app's first code.
///
/// Recovery codes for the account's first factor, and the token response when it
/// finished a sign-in.
#[utoipa::path(post, path = "/v1/me/mfa/totp/confirm", tag = "mfa",
    request_body = MfaCodeRequest,
    responses(
        (status = 401, response = EnrolUnauthorized),
        (status = 200, description = "Enrolled; the recovery codes and the session, where there are any, are shown this once.", body = MfaConfirmed),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
    ),
    security(("bearer" = []), ("mfa_token" = [])))]
pub async fn totp_confirm(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Enrolling(who): Enrolling,
    JsonBody(req): JsonBody<MfaCodeRequest>,
) -> Result<Response, ApiError> {
    let enrolled = state.auth.totp_confirm(&ctx, &who, &req.code).await?;
    confirmed(&state, &ctx, enrolled, StatusCode::OK).await
}

/// The answer of a confirmed enrolment: the recovery codes of a first factor, the
/// passkey registered, and the session of a sign-in it finished.
pub async fn confirmed(
    state: &AppState,
    ctx: &RequestCtx,
    enrolled: Enrolled,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let session = match enrolled.completed {
        Some(factor) => Some(login_body(state.auth.complete_sign_in(ctx, factor).await?)),
        None => None,
    };
    let recovery_codes = enrolled.recovery_codes.map(|c| c.iter().map(|s| s.expose().to_owned()).collect());
    let passkey = enrolled.passkey.as_ref().map(super::views::passkey_view);
    let mut res = (status, Json(MfaConfirmed { recovery_codes, session, passkey })).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    Ok(res)
}

/// Removes the authenticator app (needs a recent sign-in).
#[utoipa::path(delete, path = "/v1/me/mfa/totp", tag = "mfa",
    responses(
        (status = 204, description = "Removed; with the last factor go the recovery codes."),
        (status = 403, response = ReauthRequired),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
    security(("bearer" = [])))]
pub async fn totp_delete(
    State(state): State<AppState>,
    ctx: RequestCtx,
    RecentSession(who): RecentSession,
) -> Result<StatusCode, ApiError> {
    state.auth.factor_remove(&ctx, &who, "totp").await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts an SMS enrolment: texts the code that confirms the number.
///
/// A session needs a recent sign-in; the `mfa_token` of `mfa_enrollment_required`
/// works too.
#[utoipa::path(post, path = "/v1/me/mfa/sms", tag = "mfa",
    request_body = SmsEnrolRequest,
    responses(
        (status = 401, response = EnrolUnauthorized),
        (status = 202, description = "The code is on its way to this (masked) number.", body = SmsSent),
        (status = 403, response = ReauthRequired),
        (status = 409, response = Conflict),
    ),
    security(("bearer" = []), ("mfa_token" = [])))]
pub async fn sms_start(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Enrolling(who): Enrolling,
    JsonBody(req): JsonBody<SmsEnrolRequest>,
) -> Result<Response, ApiError> {
    let phone = state.auth.sms_start(&ctx, &who, &req.phone).await?;
    Ok((StatusCode::ACCEPTED, Json(SmsSent { phone })).into_response())
}

/// Confirms the SMS enrolment with the code sent.
///
/// Recovery codes for the account's first factor, and the token response when it
/// finished a sign-in.
#[utoipa::path(post, path = "/v1/me/mfa/sms/confirm", tag = "mfa",
    request_body = MfaCodeRequest,
    responses(
        (status = 401, response = EnrolUnauthorized),
        (status = 200, description = "Enrolled; the recovery codes and the session, where there are any, are shown this once.", body = MfaConfirmed),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
    ),
    security(("bearer" = []), ("mfa_token" = [])))]
pub async fn sms_confirm(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Enrolling(who): Enrolling,
    JsonBody(req): JsonBody<MfaCodeRequest>,
) -> Result<Response, ApiError> {
    let enrolled = state.auth.sms_confirm(&ctx, &who, &req.code).await?;
    confirmed(&state, &ctx, enrolled, StatusCode::OK).await
}

/// Removes the phone number (needs a recent sign-in).
#[utoipa::path(delete, path = "/v1/me/mfa/sms", tag = "mfa",
    responses(
        (status = 204, description = "Removed; with the last factor go the recovery codes."),
        (status = 403, response = ReauthRequired),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    ),
    security(("bearer" = [])))]
pub async fn sms_delete(
    State(state): State<AppState>,
    ctx: RequestCtx,
    RecentSession(who): RecentSession,
) -> Result<StatusCode, ApiError> {
    state.auth.factor_remove(&ctx, &who, "sms").await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Texts the code that finishes a pending sign-in.
#[utoipa::path(post, path = "/v1/auth/login/mfa/sms", tag = "mfa",
    request_body = MfaTokenRequest,
    responses(
        (status = 202, description = "The code is on its way to this (masked) number.", body = SmsSent),
        (status = 401, response = MfaFailed),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 429, response = RateLimited),
    ))]
pub async fn login_mfa_sms_send(
    State(state): State<AppState>,
    ctx: RequestCtx,
    JsonBody(req): JsonBody<MfaTokenRequest>,
) -> Result<Response, ApiError> {
    let phone = state.auth.login_sms(&ctx, &Secret::new(req.mfa_token)).await?;
    Ok((StatusCode::ACCEPTED, Json(SmsSent { phone })).into_response())
}

/// Replaces the recovery codes with a new set, shown once (needs a recent sign-in).
#[utoipa::path(post, path = "/v1/me/mfa/recovery-codes", tag = "mfa",
    responses(
        (status = 201, description = "The new codes; the old ones stop working.", body = RecoveryCodes),
        (status = 403, response = ReauthRequired),
        (status = 409, response = Conflict),
    ),
    security(("bearer" = [])))]
pub async fn recovery_codes_create(
    State(state): State<AppState>,
    ctx: RequestCtx,
    RecentSession(who): RecentSession,
) -> Result<Response, ApiError> {
    let codes = state.auth.recovery_codes_renew(&ctx, &who).await?;
    let body = RecoveryCodes { recovery_codes: codes.iter().map(|c| c.expose().to_owned()).collect() };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Lists the caller's confirmed second factors and the recovery codes left.
#[utoipa::path(get, path = "/v1/me/mfa", tag = "mfa",
    responses(
        (status = 200, description = "The confirmed factors (passkeys are at `GET /v1/me/passkeys`).", body = MfaStatus),
        (status = 403, response = Forbidden),
    ),
    security(("bearer" = [])))]
pub async fn mfa_get(
    State(state): State<AppState>,
    SessionAuthed(who): SessionAuthed,
) -> Result<Json<MfaStatus>, ApiError> {
    let (factors, left) = state.auth.mfa_status(&who).await?;
    let factors = factors
        .iter()
        .map(|f| MfaFactor {
            kind: f.kind.clone(),
            label: f.label.clone(),
            created_at: rfc3339(f.confirmed_at.unwrap_or(f.created_at)),
            last_used_at: f.last_used_at.map(rfc3339),
        })
        .collect();
    Ok(Json(MfaStatus { factors, recovery_codes_remaining: left }))
}

/// Removes every second factor of a user who lost them, passkeys included.
#[utoipa::path(delete, path = "/v1/admin/users/{id}/mfa", tag = "admin-users",
    params(("id" = String, Path, description = "The user's id.")),
    responses(
        (status = 204, description = "Every factor, the recovery codes and pending sign-ins are gone; the user is told by mail."),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    ),
    security(("bearer" = ["admin:users:write"]), ("api_key" = ["admin:users:write"])))]
pub async fn admin_user_mfa_reset(
    State(state): State<AppState>,
    ctx: RequestCtx,
    Can { who, .. }: Can<UsersWrite>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.admin.user_mfa_reset(&ctx, &who, &id, &state.auth).await?;
    Ok(StatusCode::NO_CONTENT)
}
