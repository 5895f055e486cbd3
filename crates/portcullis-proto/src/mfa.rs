//! Wire types of second factors: the second step of a sign-in, authenticator-app
//! (TOTP) enrolment, recovery codes, and the factor list.

use serde::{Deserialize, Serialize};

use crate::LoginResponse;

/// `200` from `POST /v1/auth/login` (or `/v1/auth/reauth`) when the password was
/// right and the account has a second factor: no session yet. Complete it at
/// `POST /v1/auth/login/mfa`.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MfaChallenge {
    /// Always `true`: tells this answer from a token response.
    pub mfa_required: bool,
    /// The pending sign-in: 5 minutes, single-use, never a bearer token.
    pub mfa_token: String,
    /// The factors this user can finish with (`totp`, `recovery_code`, `sms`,
    /// `passkey`).
    pub factors: Vec<String>,
}

/// `POST /v1/auth/login/mfa`: the `mfa_token` with a `code` (authenticator app or
/// SMS) or a `recovery_code`.
#[derive(Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MfaVerifyRequest {
    /// From the login answer.
    pub mfa_token: String,
    /// Six digits from the authenticator app or the SMS.
    #[serde(default)]
    pub code: Option<String>,
    /// One of the account's recovery codes.
    #[serde(default)]
    pub recovery_code: Option<String>,
}

/// `POST /v1/auth/login/mfa/sms`: sends the code of this pending sign-in.
#[derive(Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MfaTokenRequest {
    /// From the login answer.
    pub mfa_token: String,
}

/// `POST /v1/me/mfa/totp`: a pending authenticator-app enrolment. Show the QR code
/// (or the secret, for typing in), then confirm with the first code.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TotpEnrolment {
    /// The shared secret, base32 (RFC 4648, no padding).
    pub secret: String,
    /// `otpauth://totp/…`: what the QR code holds.
    pub otpauth_uri: String,
    /// The QR code of `otpauth_uri`, an SVG document.
    pub qr_svg: String,
}

/// `POST /v1/me/mfa/sms`: the number to send codes to.
#[derive(Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SmsEnrolRequest {
    /// E.164, such as `+15550104567` (spaces and dashes are dropped).
    pub phone: String,
}

/// `202` of a request that texted a code.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SmsSent {
    /// Where it went, masked (`+1•••••••4567`).
    pub phone: String,
}

/// A 6-digit code, to confirm an enrolment.
#[derive(Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MfaCodeRequest {
    /// Six digits.
    pub code: String,
}

/// The answer of an enrolment's confirmation: the recovery codes when this was the
/// account's first factor (shown once), and with `accounts.mfa = "required"`,
/// during sign-in, the usual token response.
#[derive(Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MfaConfirmed {
    /// Ten single-use codes; shown this once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_codes: Option<Vec<String>>,
    /// The passkey registered, for a passkey enrolment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passkey: Option<PasskeyView>,
    /// The session this enrolment completed, if it completed a sign-in.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub session: Option<LoginResponse>,
}

/// `POST /v1/me/mfa/recovery-codes`: a new set replacing the old one, shown once.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecoveryCodes {
    /// Ten single-use codes.
    pub recovery_codes: Vec<String>,
}

/// One second factor of an account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MfaFactor {
    /// `totp` or `sms`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What the user sees of it: a masked phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339 time of the last use.
    pub last_used_at: Option<String>,
}

/// `GET /v1/me/mfa`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MfaStatus {
    /// Confirmed factors.
    pub factors: Vec<MfaFactor>,
    /// Unused recovery codes.
    pub recovery_codes_remaining: i64,
}

/// `POST /v1/auth/passkey/start`: nothing for a passkey-first sign-in; the
/// `mfa_token` for a passkey as the second factor; `reauth: true` (with the
/// session's Bearer token) to renew the session's sign-in.
#[derive(Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PasskeyStartRequest {
    /// A pending sign-in to finish.
    #[serde(default)]
    pub mfa_token: Option<String>,
    /// Renew the caller's session instead.
    #[serde(default)]
    pub reauth: bool,
}

/// A WebAuthn ceremony: pass `publicKey` to `navigator.credentials.create` or
/// `.get` (base64url fields decoded), then send the result back with
/// `challenge_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PasskeyCeremony {
    /// Names this ceremony; single-use, two minutes.
    pub challenge_id: String,
    /// `PublicKeyCredentialCreationOptions` or `PublicKeyCredentialRequestOptions`.
    #[serde(rename = "publicKey")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub public_key: serde_json::Value,
}

/// `POST /v1/auth/passkey/finish`.
#[derive(Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PasskeyFinishRequest {
    /// From `/start`.
    pub challenge_id: String,
    /// The `PublicKeyCredential` as JSON (base64url binary fields).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub credential: serde_json::Value,
    /// When finishing a pending sign-in.
    #[serde(default)]
    pub mfa_token: Option<String>,
}

/// `POST /v1/me/passkeys/register/finish`.
#[derive(Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PasskeyRegisterRequest {
    /// From `/register/start`.
    pub challenge_id: String,
    /// The `PublicKeyCredential` of `navigator.credentials.create`, as JSON.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub credential: serde_json::Value,
    /// What to call it (default "Passkey").
    #[serde(default)]
    pub name: Option<String>,
}

/// `PATCH /v1/me/passkeys/{id}`.
#[derive(Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PasskeyRenameRequest {
    /// 1 to 64 characters.
    pub name: String,
}

/// A passkey as its owner sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PasskeyView {
    /// `pk_…`.
    pub id: String,
    /// What the user calls it.
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339 time of the last sign-in with it.
    pub last_used_at: Option<String>,
}
