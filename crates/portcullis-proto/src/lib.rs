//! Wire types of the Portcullis HTTP API: request and response bodies and the stable
//! error codes clients branch on. Serde only, so SDKs can depend on it without pulling
//! in the server.
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};

/// Stable machine-readable error codes: clients match on these, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Email or password wrong, or the account cannot sign in; never says which.
    InvalidCredentials,
    /// A protected route was called without any credential.
    MissingToken,
    /// The credential is malformed, badly signed, revoked or for another audience.
    InvalidToken,
    /// The credential was valid once but its lifetime is over.
    TokenExpired,
    /// A refresh token that was already rotated came back: treated as theft.
    RefreshTokenReused,
    /// Authenticated, but the credential lacks a required scope.
    InsufficientScope,
    /// A sensitive operation needs a recent sign-in: `POST /v1/auth/reauth` first.
    ReauthenticationRequired,
    /// Authenticated, but this kind of credential cannot do this (e.g. an API key
    /// calling a session-only route, or deleting a built-in role).
    Forbidden,
    /// The request body or parameters failed validation; see `errors`.
    ValidationFailed,
    /// Too many attempts; see `Retry-After`.
    RateLimited,
    /// The account is temporarily locked after repeated failures.
    AccountLocked,
    /// Sign-in needs a verified email address (`accounts.require_verified_email`).
    EmailNotVerified,
    /// The `mfa_token` is unknown, spent, expired, or past its wrong codes: sign in
    /// again.
    MfaTokenInvalid,
    /// The second-factor code (or recovery code) is wrong or was used already.
    InvalidMfaCode,
    /// `accounts.mfa = "required"` and the account has no second factor yet: enrol
    /// one with the `mfa_token` of this answer as the Bearer token.
    MfaEnrollmentRequired,
    /// The object conflicts with an existing one (e.g. email already registered).
    Conflict,
    /// No such route or object (or not one the caller may see).
    NotFound,
    /// The route exists but not for this HTTP method.
    MethodNotAllowed,
    /// The request body is larger than the configured limit.
    PayloadTooLarge,
    /// The request body is not JSON (wrong `Content-Type`).
    UnsupportedMediaType,
    /// The server is at capacity for expensive work (password hashing); retry later.
    Overloaded,
    /// The request took longer than the configured timeout.
    Timeout,
    /// Something failed on our side; details are in the server log, never here.
    InternalError,
}

impl ErrorCode {
    /// The code as it appears on the wire, for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidCredentials => "invalid_credentials",
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::TokenExpired => "token_expired",
            Self::RefreshTokenReused => "refresh_token_reused",
            Self::InsufficientScope => "insufficient_scope",
            Self::ReauthenticationRequired => "reauthentication_required",
            Self::Forbidden => "forbidden",
            Self::ValidationFailed => "validation_failed",
            Self::RateLimited => "rate_limited",
            Self::AccountLocked => "account_locked",
            Self::EmailNotVerified => "email_not_verified",
            Self::MfaTokenInvalid => "mfa_token_invalid",
            Self::InvalidMfaCode => "invalid_mfa_code",
            Self::MfaEnrollmentRequired => "mfa_enrollment_required",
            Self::Conflict => "conflict",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Overloaded => "overloaded",
            Self::Timeout => "timeout",
            Self::InternalError => "internal_error",
        }
    }
}

/// One field-level validation failure, so a form can highlight the right input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// JSON path of the offending field (`email`, `metadata.plan`); empty for the body.
    pub field: String,
    /// Short machine-readable reason (`required`, `too_short`, `invalid_type`, ...).
    pub code: String,
    /// Human-readable explanation, safe to show to the end user.
    pub message: String,
}

/// RFC 9457 problem details, the body of every non-2xx JSON response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// URI reference naming the problem type.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status code, repeated for clients that lose the status line.
    pub status: u16,
    /// Explanation specific to this occurrence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Per-field errors, present with `validation_failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Scopes that would have allowed the call, present with `insufficient_scope`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_scopes: Vec<String>,
    /// With `mfa_enrollment_required`: the pending sign-in, a Bearer token for the
    /// enrolment routes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mfa_token: Option<String>,
}

/// `POST /v1/auth/register` body.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Sign-in email; normalised (trimmed, lower-cased) by the server.
    pub email: String,
    /// Plain password, 8 to 256 characters, not a common password.
    pub password: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /v1/auth/login` body.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// Sign-in email.
    pub email: String,
    /// Plain password.
    pub password: String,
}

/// `POST /v1/auth/reauth` body: the password again, to renew a session's sign-in
/// time before a sensitive operation.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReauthRequest {
    /// Plain password.
    pub password: String,
}

/// `POST /v1/auth/refresh` body.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The opaque refresh token from the last login or refresh.
    pub refresh_token: String,
}

/// `POST /v1/me/password` body.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PasswordChangeRequest {
    /// The password in use now, re-checked before any change (ASVS 2.1.5).
    pub current_password: String,
    /// The new password, under the same policy as registration.
    pub new_password: String,
}

/// A user as the user themself (and first-party apps) see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// Opaque id, `usr_…`.
    pub id: String,
    /// Normalised email.
    pub email: String,
    /// Whether the email was proven to belong to the user.
    pub email_verified: bool,
    /// Display name.
    pub name: Option<String>,
    /// Roles held, e.g. `member`, `admin`.
    pub roles: Vec<String>,
    /// Set by admins, readable by the user and (optionally) in access tokens.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub public_metadata: serde_json::Value,
    /// Written by the user through `PATCH /v1/me`; never trust it for authorization.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub unsafe_metadata: serde_json::Value,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 time of the last change.
    pub updated_at: String,
}

/// A user as the admin API sees it: adds what only admins may read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminUser {
    /// Everything the user sees.
    #[serde(flatten)]
    pub user: User,
    /// Admin-only metadata; never shown to the user or put in tokens.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub private_metadata: serde_json::Value,
    /// Whether sign-in is refused.
    pub banned: bool,
    /// RFC 3339 time of the ban.
    pub banned_at: Option<String>,
    /// The user's confirmed second factors (`totp`, `sms`, `passkey`).
    #[serde(default)]
    pub mfa_factors: Vec<String>,
}

/// `PATCH /v1/me` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MeUpdateRequest {
    /// New display name; `null` clears it.
    #[serde(default, with = "double_option")]
    pub name: Option<Option<String>>,
    /// Replaces the user-writable metadata object.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub unsafe_metadata: Option<serde_json::Value>,
}

/// `POST /v1/admin/users` body.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AdminUserCreateRequest {
    /// Sign-in email.
    pub email: String,
    /// Initial password; without one the user cannot sign in with a password.
    #[serde(default)]
    pub password: Option<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Roles to grant (default `member`).
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// Initial public metadata object.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub public_metadata: Option<serde_json::Value>,
    /// Initial private metadata object.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub private_metadata: Option<serde_json::Value>,
}

/// `PATCH /v1/admin/users/{id}` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AdminUserUpdateRequest {
    /// New display name; `null` clears it.
    #[serde(default, with = "double_option")]
    pub name: Option<Option<String>>,
    /// New sign-in email.
    #[serde(default)]
    pub email: Option<String>,
    /// Replaces the public metadata object.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub public_metadata: Option<serde_json::Value>,
    /// Replaces the private metadata object.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub private_metadata: Option<serde_json::Value>,
}

/// `POST /v1/admin/users/{id}/roles` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RoleGrantRequest {
    /// Role to grant.
    pub role: String,
}

/// A role: a named set of permissions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Role {
    /// Unique name, `[a-z0-9_.:-]+`.
    pub name: String,
    /// What the role is for.
    pub description: Option<String>,
    /// Permission (scope) strings.
    pub permissions: Vec<String>,
    /// Whether it ships with Portcullis (`admin`, `member`): editable, never deletable.
    pub builtin: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// `POST /v1/admin/roles` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RoleCreateRequest {
    /// Unique name.
    pub name: String,
    /// What the role is for.
    #[serde(default)]
    pub description: Option<String>,
    /// Permission strings.
    pub permissions: Vec<String>,
}

/// `PATCH /v1/admin/roles/{name}` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RoleUpdateRequest {
    /// New description; `null` clears it.
    #[serde(default, with = "double_option")]
    pub description: Option<Option<String>>,
    /// Replaces the permission list.
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
}

/// An API key as listed: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKey {
    /// Opaque id, `key_…`.
    pub id: String,
    /// Human label.
    pub name: String,
    /// The first characters of the secret, to recognise it.
    pub prefix: String,
    /// Scopes granted.
    pub scopes: Vec<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, or `null` for no expiry.
    pub expires_at: Option<String>,
    /// RFC 3339 of the last use (updated every few seconds), or `null`.
    pub last_used_at: Option<String>,
}

/// Reply of key creation and rotation: the only time the secret is shown.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeyCreated {
    /// The key's metadata.
    #[serde(flatten)]
    pub api_key: ApiKey,
    /// The secret, `pcl_…`: store it now, it cannot be shown again.
    pub key: String,
}

/// `POST /v1/api-keys` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiKeyCreateRequest {
    /// Human label.
    pub name: String,
    /// Scopes, each one the caller holds.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Lifetime in seconds (or a duration such as `30d`); none means no expiry.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::duration))]
    pub expires_in: Option<serde_json::Value>,
}

/// `POST /v1/api-keys/{id}/rotate` body (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRotateRequest {
    /// Seconds (or a duration) the old secret keeps working; default 0.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::duration))]
    pub grace_period: Option<serde_json::Value>,
}

/// `POST /v1/api-keys/verify` body.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiKeyVerifyRequest {
    /// The key to check.
    pub key: String,
}

/// `POST /v1/api-keys/verify` reply; inactive keys carry only `active: false`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeyVerifyResponse {
    /// Whether the key may be used now.
    pub active: bool,
    /// The key's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The owning user's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Effective scopes now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// RFC 3339 expiry, or `null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Option<String>>,
}

/// One audit record, as `GET /v1/admin/audit` lists it. Never holds a secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEvent {
    /// Opaque id, `aud_…`; ids grow with time.
    pub id: String,
    /// RFC 3339.
    pub time: String,
    /// Event type: `login`, `refresh`, `refresh_reuse`, `logout`, `account_locked`, …
    #[serde(rename = "type")]
    pub event_type: String,
    /// `success` or `failure`.
    pub outcome: String,
    /// The user concerned, when known.
    pub user_id: Option<String>,
    /// Who acted: the user, an admin's id, an API key's id, `cli`, `anonymous`.
    pub actor: Option<String>,
    /// Client address.
    pub ip: Option<String>,
    /// Client `User-Agent`.
    pub user_agent: Option<String>,
    /// The request that caused it (`X-Request-Id` of the response).
    pub request_id: Option<String>,
    /// Why: `bad_password`, `unknown_user`, `locked`, `banned`, `rate_limited`, …
    pub reason: Option<String>,
}

/// Distinguishes an absent field from an explicit `null` in PATCH bodies.
pub mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Present fields (even `null`) become `Some(_)`; absent ones stay `None`.
    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }

    /// Writes the inner option.
    pub fn serialize<T: Serialize, S: Serializer>(v: &Option<Option<T>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }
}

/// `POST /v1/auth/register` reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterResponse {
    /// The new account.
    pub user: User,
}

/// Reply of `/v1/auth/login` and `/v1/auth/refresh`: a fresh access token and a
/// fresh refresh token.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginResponse {
    /// JWT access token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Opaque single-use refresh token.
    pub refresh_token: String,
    /// The signed-in user.
    pub user: User,
}

/// A session as listed under `/v1/me/sessions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Session {
    /// Opaque id, `ses_…`.
    pub id: String,
    /// RFC 3339 sign-in time.
    pub created_at: String,
    /// RFC 3339 time the session was last refreshed.
    pub last_active_at: String,
    /// RFC 3339 time after which the session cannot be refreshed.
    pub expires_at: String,
    /// Client address at sign-in.
    pub ip: Option<String>,
    /// Client `User-Agent` at sign-in.
    pub user_agent: Option<String>,
    /// Whether this is the session of the token making the request.
    pub current: bool,
}

/// Every list endpoint answers in this shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    /// The items of this page.
    pub data: Vec<T>,
    /// Opaque cursor for the next page, `null` on the last.
    pub next_cursor: Option<String>,
}

/// The reply of `/healthz` and `/readyz`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok` (the process answers) or `ready` (it can reach its database).
    pub status: String,
}

/// Request and response types that carry secrets print them as `[redacted]`, so a
/// stray `{:?}` in a log line cannot leak a password or token.
macro_rules! redacted_debug {
    ($($ty:ident { $($field:ident),* })*) => {
        $(
            impl std::fmt::Debug for $ty {
                fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    let mut d = f.debug_struct(stringify!($ty));
                    $( let _ = &self.$field; d.field(stringify!($field), &"[redacted]"); )*
                    d.finish_non_exhaustive()
                }
            }
        )*
    };
}

redacted_debug! {
    RegisterRequest { password }
    LoginRequest { password }
    ReauthRequest { password }
    RefreshRequest { refresh_token }
    PasswordChangeRequest { current_password, new_password }
    ApiKeyVerifyRequest { key }
    LoginResponse { access_token, refresh_token }
    ApiKeyCreated { key }
    AdminUserCreateRequest { password }
    MfaChallenge { mfa_token }
    MfaVerifyRequest { code, recovery_code }
    MfaTokenRequest { mfa_token }
    TotpEnrolment { secret, otpauth_uri, qr_svg }
    MfaCodeRequest { code }
    MfaConfirmed { recovery_codes }
    RecoveryCodes { recovery_codes }
}

mod account;
pub mod api_key;
mod mfa;
mod oauth;
mod webhooks;
pub use account::*;
pub use mfa::*;
pub use oauth::*;
pub use webhooks::*;

/// Schemas for fields whose Rust type is looser than their wire form.
#[cfg(feature = "openapi")]
mod openapi {
    use utoipa::openapi::{ObjectBuilder, OneOfBuilder, RefOr, Schema, Type};

    /// A duration: whole seconds, or text such as `900s`, `15m`, `12h`, `30d`; `null`
    /// for none.
    pub fn duration() -> RefOr<Schema> {
        let seconds = ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).build();
        let text = ObjectBuilder::new().schema_type(Type::String).pattern(Some(r"^\d+(s|m|h|d)$")).build();
        let either = OneOfBuilder::new()
            .item(seconds)
            .item(text)
            .item(ObjectBuilder::new().schema_type(Type::Null).build())
            .description(Some("Whole seconds, or a duration such as `900s`, `15m`, `12h`, `30d`."))
            .build();
        RefOr::T(Schema::OneOf(either))
    }
}
