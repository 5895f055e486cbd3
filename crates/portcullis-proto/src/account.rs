//! Wire types of the account lifecycle: proving an address, resetting a
//! password, changing the address, the user's own export and deletion.

use serde::{Deserialize, Serialize};

use crate::{ApiKey, AuditEvent, User};

/// `POST /v1/auth/email/verify`: the `token` from the link, or the `email` the
/// message went to with its 6-digit `code`.
#[derive(Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EmailVerifyRequest {
    /// The token of the link (`/verify-email?token=…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The address the code was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The 6-digit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// `POST /v1/auth/email/verify` reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EmailVerifyResponse {
    /// The account, with `email_verified: true`.
    pub user: User,
}

/// `POST /v1/auth/email/resend` body (without a bearer token), and
/// `POST /v1/auth/password/forgot`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EmailRequest {
    /// The account's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// `202` reply of requests that send mail: the same whether or not the address
/// has an account, so it tells nobody which addresses do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Accepted {
    /// What happens next, for people.
    pub message: String,
}

/// `POST /v1/auth/password/reset`.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PasswordResetRequest {
    /// The token of the mailed link (`/reset-password?token=…`).
    pub token: String,
    /// The new password; the password policy applies.
    pub new_password: String,
}

/// `POST /v1/me/email`: the new address (it changes once proven).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EmailChangeRequest {
    /// The new address.
    pub email: String,
}

/// A session in the account export: ended ones too, with their client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExportedSession {
    /// Opaque id, `ses_…`.
    pub id: String,
    /// RFC 3339 sign-in time.
    pub created_at: String,
    /// RFC 3339 time of the last refresh.
    pub last_active_at: String,
    /// RFC 3339 end of its life.
    pub expires_at: String,
    /// RFC 3339 time it was ended, if it was.
    pub revoked_at: Option<String>,
    /// Client address at sign-in.
    pub ip: Option<String>,
    /// Client `User-Agent` at sign-in.
    pub user_agent: Option<String>,
    /// The OAuth client it was granted to, if any.
    pub client_id: Option<String>,
    /// The scope granted to that client.
    pub scope: Option<String>,
}

/// An API key in the account export, revoked ones too; never its secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExportedApiKey {
    /// The key as listed.
    #[serde(flatten)]
    pub key: ApiKey,
    /// RFC 3339 time it was revoked, if it was.
    pub revoked_at: Option<String>,
}

/// What the user allowed an OAuth client to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OAuthGrant {
    /// The client.
    pub client_id: String,
    /// Its name, while it is registered.
    pub client_name: Option<String>,
    /// The scopes consented to, space-separated.
    pub scope: String,
    /// RFC 3339 first consent.
    pub created_at: String,
    /// RFC 3339 last change.
    pub updated_at: String,
}

/// `GET /v1/me/export`: everything Portcullis holds about the caller (GDPR
/// articles 15 and 20), as one document. Metadata only administrators may read
/// (`private_metadata`) is the operator's and is not in it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountExport {
    /// RFC 3339 time of the export.
    pub exported_at: String,
    /// The profile and metadata.
    pub user: User,
    /// Every session still kept, newest first.
    pub sessions: Vec<ExportedSession>,
    /// Every API key.
    pub api_keys: Vec<ExportedApiKey>,
    /// Every consent given to an OAuth client.
    pub oauth_grants: Vec<OAuthGrant>,
    /// Audit records about the user, newest first (as long as they are kept).
    pub audit_events: Vec<AuditEvent>,
    /// Whether a list reached the export's bound (10,000 rows) and was cut.
    pub truncated: bool,
}

/// A mail as `GET /v1/admin/emails` lists it: where it is in its delivery,
/// never its links or codes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EmailMessage {
    /// Outbox id, `obx_…`.
    pub id: String,
    /// The recipient.
    pub to: String,
    /// Which message (`verify_email`, `reset_password`, …).
    pub template: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub status: String,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// Why the last attempt failed (the SMTP server's answer).
    pub last_error: Option<String>,
    /// RFC 3339 time it was queued.
    pub created_at: String,
    /// RFC 3339 time of the next attempt, while pending.
    pub next_attempt_at: Option<String>,
    /// RFC 3339 time it was delivered.
    pub delivered_at: Option<String>,
}

redacted_debug! {
    EmailVerifyRequest { token, code }
    PasswordResetRequest { token, new_password }
}
