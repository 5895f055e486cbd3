//! `/v1/auth/email/*` and `/v1/auth/password/{forgot,reset}`: proving an address
//! by link token or code, asking for a new proof, and resetting a password.

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use portcullis_proto::{Accepted, EmailRequest, EmailVerifyRequest, EmailVerifyResponse, PasswordResetRequest};

use super::{
    AppState,
    error::ApiError,
    extract::{Authed, JsonBody},
    openapi::{RateLimited, SignInLimited, Unauthorized, UnsupportedMediaType},
    views::user_view,
};
use crate::{crypto::Secret, ctx::RequestCtx, validate::field};

/// The one answer of every request that may send mail.
pub fn accepted(message: &str) -> Response {
    (StatusCode::ACCEPTED, axum::Json(Accepted { message: message.into() })).into_response()
}

/// Proves an account's address with the mailed link or code.
///
/// Send the link's `token`, or the `email` with its 6-digit `code`.
#[utoipa::path(post, path = "/v1/auth/email/verify", tag = "auth",
    request_body = EmailVerifyRequest,
    responses(
        (status = 200, description = "The account, with its address proven.", body = EmailVerifyResponse),
        (status = 429, response = SignInLimited),
    ))]
pub async fn email_verify(
    State(state): State<AppState>,
    ctx: RequestCtx,
    JsonBody(req): JsonBody<EmailVerifyRequest>,
) -> Result<axum::Json<EmailVerifyResponse>, ApiError> {
    let user = match (req.token.as_deref(), req.email.as_deref(), req.code.as_deref()) {
        (Some(token), None, None) => state.auth.verify_email_token(&ctx, token).await?,
        (None, Some(email), Some(code)) => state.auth.verify_email_code(&ctx, email, code).await?,
        _ => {
            return Err(ApiError::validation(vec![field(
                "",
                "invalid",
                "send either {\"token\"} from the link or {\"email\", \"code\"} from the message",
            )]));
        }
    };
    Ok(axum::Json(EmailVerifyResponse { user: user_view(&user) }))
}

/// Mails a new proof of address to an unverified account.
///
/// With a credential, the caller's account; else the one at `{email}`. Always
/// `202` with the same body.
#[utoipa::path(post, path = "/v1/auth/email/resend", tag = "auth",
    request_body(content = Option<EmailRequest>, description = "The address, when the request carries no credential."),
    responses(
        (status = 202, description = "The same answer whether or not the address has an unverified account.", body = Accepted),
        (status = 401, response = Unauthorized),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = RateLimited),
    ),
    security((), ("bearer" = []), ("api_key" = [])))]
pub async fn email_resend(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let Ok(ctx) = RequestCtx::from_request_parts(&mut parts, &state).await;
    let who = if parts.headers.contains_key(header::AUTHORIZATION) || parts.headers.contains_key("x-api-key") {
        Some(Authed::from_request_parts(&mut parts, &state).await?.0)
    } else {
        None
    };
    let bytes = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map_err(|_| ApiError::validation(vec![field("", "invalid_body", "the body is too large or unreadable")]))?;
    let email = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        super::extract::require_json(&parts.headers)?;
        crate::validate::parse_json::<EmailRequest>(&bytes)?.email
    };
    state.auth.resend_verification(&ctx, who.as_ref().and_then(|w| w.user()).map(|u| &**u), email.as_deref()).await?;
    Ok(accepted("If this address belongs to an account that is not verified yet, a new message is on its way."))
}

/// Mails a link to choose a new password to the account at `email`.
///
/// Always `202` with the same body.
#[utoipa::path(post, path = "/v1/auth/password/forgot", tag = "auth",
    request_body = EmailRequest,
    responses(
        (status = 202, description = "The same answer whether or not the address has an account.", body = Accepted),
        (status = 429, response = RateLimited),
    ))]
pub async fn password_forgot(
    State(state): State<AppState>,
    ctx: RequestCtx,
    JsonBody(req): JsonBody<EmailRequest>,
) -> Result<Response, ApiError> {
    let Some(email) = req.email else {
        return Err(ApiError::validation(vec![field("email", "required", "is required")]));
    };
    state.auth.forgot_password(&ctx, &email).await?;
    Ok(accepted(FORGOT_ANSWER))
}

/// What a forgot request answers, whoever asks.
pub const FORGOT_ANSWER: &str = "If this address belongs to an account, a link to choose a new password is on its way.";

/// Sets a new password with the mailed link's `token`.
///
/// Ends every session of the account and lifts its locks; signs nobody in.
#[utoipa::path(post, path = "/v1/auth/password/reset", tag = "auth",
    request_body = PasswordResetRequest,
    responses((status = 204, description = "The password is changed; sign in with it.")))]
pub async fn password_reset(
    State(state): State<AppState>,
    ctx: RequestCtx,
    JsonBody(req): JsonBody<PasswordResetRequest>,
) -> Result<StatusCode, ApiError> {
    state.auth.reset_password(&ctx, &req.token, Secret::new(req.new_password)).await?;
    Ok(StatusCode::NO_CONTENT)
}
