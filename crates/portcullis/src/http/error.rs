//! `ApiError`: the one place that turns any failure into an HTTP answer — RFC 9457
//! problem+json with a stable `code`, `WWW-Authenticate` on 401 (RFC 6750 §3), and
//! internal details logged, never sent.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use portcullis_proto::{ErrorCode, FieldError, Problem};

use crate::{auth::AuthError, tokens::TokenError};

/// An error on its way to becoming an HTTP response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    detail: Option<String>,
    errors: Vec<FieldError>,
    required_scopes: Vec<String>,
    retry_after: Option<u64>,
    mfa_token: Option<String>,
}

impl ApiError {
    /// An error with a status, code and detail.
    pub fn new(status: StatusCode, code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: Some(detail.into()),
            errors: Vec::new(),
            required_scopes: Vec::new(),
            retry_after: None,
            mfa_token: None,
        }
    }

    /// 403 `insufficient_scope`, naming the scopes that would allow the call.
    pub fn insufficient_scope(required: Vec<String>) -> Self {
        let mut e = Self::new(
            StatusCode::FORBIDDEN,
            ErrorCode::InsufficientScope,
            format!("this needs the scope(s): {}", required.join(" ")),
        );
        e.required_scopes = required;
        e
    }

    /// 400 `validation_failed` with per-field errors.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, ErrorCode::ValidationFailed, "the request is not valid");
        e.errors = errors;
        e
    }

    /// The per-field errors.
    pub fn fields(&self) -> &[FieldError] {
        &self.errors
    }

    /// 404 `not_found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, detail)
    }

    /// 401 with `missing_token`: no credential at all.
    pub fn missing_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::MissingToken,
            "this endpoint needs an Authorization: Bearer token",
        )
    }

    /// 503 `overloaded` with a retry hint.
    pub fn overloaded() -> Self {
        let mut e =
            Self::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Overloaded, "the server is busy; retry shortly");
        e.retry_after = Some(1);
        e
    }

    /// 500: logs the cause with the request's span, answers without it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::InternalError, "an internal error occurred")
    }

    /// The stable code, for tests and metrics.
    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

fn title(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("Error").to_owned()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = Problem {
            type_: format!("https://portcullis.dev/problems/{}", self.code.as_str().replace('_', "-")),
            title: title(self.status),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code,
            errors: self.errors,
            required_scopes: self.required_scopes.clone(),
            mfa_token: self.mfa_token.clone(),
        };
        let body = serde_json::to_vec(&problem).unwrap_or_else(|_| b"{}".to_vec());
        let mut res = (self.status, body).into_response();
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3.1: no error attribute when the request had no credential.
            let value = match self.code {
                ErrorCode::MissingToken => r#"Bearer realm="portcullis""#.to_owned(),
                ErrorCode::InvalidCredentials
                | ErrorCode::RefreshTokenReused
                | ErrorCode::MfaTokenInvalid
                | ErrorCode::InvalidMfaCode => r#"Bearer realm="portcullis""#.to_owned(),
                _ => format!(
                    r#"Bearer realm="portcullis", error="invalid_token", error_description="{}""#,
                    self.detail.as_deref().unwrap_or("invalid token").replace(['"', '\\'], "'")
                ),
            };
            if let Ok(v) = HeaderValue::from_str(&value)
                && !value.is_empty()
            {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if self.code == ErrorCode::InsufficientScope {
            // RFC 6750 §3.1.
            let value = format!(
                r#"Bearer realm="portcullis", error="insufficient_scope", scope="{}""#,
                self.required_scopes.join(" ")
            );
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl From<portcullis_proto::FieldError> for ApiError {
    fn from(e: portcullis_proto::FieldError) -> Self {
        Self::validation(vec![e])
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::InvalidCredentials => {
                Self::new(StatusCode::UNAUTHORIZED, ErrorCode::InvalidCredentials, "invalid email or password")
            }
            AuthError::Validation(errors) => Self::validation(errors),
            AuthError::Conflict(what) => Self::new(StatusCode::CONFLICT, ErrorCode::Conflict, what),
            AuthError::Token(TokenError::Expired) => {
                Self::new(StatusCode::UNAUTHORIZED, ErrorCode::TokenExpired, "the access token has expired")
            }
            AuthError::Token(TokenError::Invalid(why)) => {
                Self::new(StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken, why)
            }
            AuthError::RefreshReused => Self::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::RefreshTokenReused,
                "this refresh token was already used; every session of the account has been ended",
            ),
            AuthError::NotFound => Self::not_found("no such object"),
            AuthError::Denied(required) => Self::insufficient_scope(required),
            AuthError::Forbidden(why) => Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, why),
            AuthError::ReauthRequired => Self::new(
                StatusCode::FORBIDDEN,
                ErrorCode::ReauthenticationRequired,
                "this operation needs a recent sign-in: confirm the password at POST /v1/auth/reauth, then retry",
            ),
            AuthError::Overloaded => Self::overloaded(),
            AuthError::RateLimited(secs) => {
                let mut e =
                    Self::new(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RateLimited, "too many attempts; retry later");
                e.retry_after = Some(secs);
                e
            }
            // The same status as rate limiting, and returned for unknown emails too:
            // lockout must not reveal which accounts exist.
            AuthError::AccountLocked(secs) => {
                let mut e = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::AccountLocked,
                    "too many failed attempts for this account; retry later",
                );
                e.retry_after = Some(secs);
                e
            }
            AuthError::EmailNotVerified => Self::new(
                StatusCode::FORBIDDEN,
                ErrorCode::EmailNotVerified,
                "verify your email address first: follow the link we sent, or ask for a new one",
            ),
            AuthError::MfaTokenInvalid => Self::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::MfaTokenInvalid,
                "the mfa_token is unknown, used, expired or past its wrong codes: sign in again",
            ),
            AuthError::InvalidMfaCode => {
                Self::new(StatusCode::UNAUTHORIZED, ErrorCode::InvalidMfaCode, "the code is wrong or was used already")
            }
            AuthError::MfaEnrollmentRequired(token) => {
                let mut e = Self::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::MfaEnrollmentRequired,
                    "this account must set up a second factor: enrol one with mfa_token as the Bearer token",
                );
                e.mfa_token = Some(token.expose().to_owned());
                e
            }
            AuthError::Internal(cause) => Self::internal(cause),
        }
    }
}
