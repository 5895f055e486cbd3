//! Wire types of the account lifecycle: proving an address, resetting a
//! password, changing the address, the user's own export and deletion.

use serde::{Deserialize, Serialize};

use crate::User;

/// `POST /v1/auth/email/verify`: the `token` from the link, or the `email` the
/// message went to with its 6-digit `code`.
#[derive(Clone, Default, Serialize, Deserialize)]
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
pub struct EmailVerifyResponse {
    /// The account, with `email_verified: true`.
    pub user: User,
}

/// `POST /v1/auth/email/resend` body (without a bearer token), and
/// `POST /v1/auth/password/forgot`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailRequest {
    /// The account's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// `202` reply of requests that send mail: the same whether or not the address
/// has an account, so it tells nobody which addresses do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// What happens next, for people.
    pub message: String,
}

/// `POST /v1/auth/password/reset`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetRequest {
    /// The token of the mailed link (`/reset-password?token=…`).
    pub token: String,
    /// The new password; the password policy applies.
    pub new_password: String,
}

redacted_debug! {
    EmailVerifyRequest { token, code }
    PasswordResetRequest { token, new_password }
}
