//! The token endpoint (RFC 6749 §3.2): authenticates the client, checks the grant
//! is one it may use, and hands the request to that grant's file:
//! [`authorization_code`] (§4.1.3, PKCE per RFC 7636), [`refresh_token`] (§6, with
//! reuse detection per RFC 9700 §4.14.2) and [`client_credentials`] (§4.4).

pub mod authorization_code;
pub mod client_credentials;
pub mod refresh_token;

use aws_lc_rs::digest;

use super::{OAuth, OAuthError, Presented};
use crate::{
    clients::Client,
    crypto::{self, Secret},
    ctx::RequestCtx,
    store::UserRow,
    tokens::UserClaims,
};

/// The form parameters of a token request (client authentication aside).
#[derive(Debug, Default)]
pub struct TokenRequest {
    /// `authorization_code`, `refresh_token` or `client_credentials`.
    pub grant_type: Option<String>,
    /// The authorization code.
    pub code: Option<Secret>,
    /// Must repeat the authorization request's.
    pub redirect_uri: Option<String>,
    /// PKCE verifier.
    pub code_verifier: Option<Secret>,
    /// The refresh token.
    pub refresh_token: Option<Secret>,
    /// Requested scope (narrower than granted, or the client-credentials scope).
    pub scope: Option<String>,
}

/// What a grant issued: the parts of a token response (RFC 6749 §5.1).
#[derive(Debug)]
pub struct Granted {
    /// JWT access token (RFC 9068).
    pub access_token: String,
    /// Seconds.
    pub expires_in: u64,
    /// Present with `offline_access`.
    pub refresh_token: Option<Secret>,
    /// Present with `openid`.
    pub id_token: Option<String>,
    /// The granted scope.
    pub scope: String,
}

/// `base64url(SHA-256(verifier)) == challenge`, the S256 check (RFC 7636 §4.6).
pub fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let computed = crypto::b64url(digest::digest(&digest::SHA256, verifier.as_bytes()).as_ref());
    crypto::ct_eq(computed.as_bytes(), challenge.as_bytes())
}

/// Whether `v` is a well-formed PKCE verifier or S256 challenge: 43 to 128
/// unreserved characters.
pub fn pkce_well_formed(v: &str) -> bool {
    (43..=128).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

impl OAuth {
    /// Serves one token request.
    /// `origin` is the browser's `Origin`, if any: it must be one the client
    /// registered (or our own), checked before anything is spent.
    pub async fn token(
        &self,
        ctx: &RequestCtx,
        presented: Presented,
        req: TokenRequest,
        origin: Option<&str>,
    ) -> Result<Granted, OAuthError> {
        let grant = req.grant_type.clone().ok_or_else(|| OAuthError::invalid_request("grant_type is required"))?;
        if !crate::clients::GRANT_TYPES.contains(&grant.as_str()) {
            return Err(OAuthError::unsupported_grant_type(format!("grant_type {grant:?} is not supported")));
        }
        let client = self.authenticate_client(presented, "/oauth/token", ctx.now).await.inspect_err(|e| {
            if e.error == "invalid_client" {
                metrics::counter!("portcullis_oauth_client_auth_failures_total").increment(1);
            }
        })?;
        if let Some(o) = origin
            && !client.meta.allowed_cors_origins.iter().any(|a| a == o)
            && o != crate::oauth::params::origin_of(&self.settings.issuer)
        {
            return Err(OAuthError::invalid_request(format!("origin {o} is not allowed for this client")));
        }
        if !client.meta.has_grant(&grant) {
            return Err(OAuthError::unauthorized_client(format!("this client may not use the {grant} grant")));
        }
        let out = match grant.as_str() {
            "authorization_code" => self.grant_code(ctx, &client, req).await,
            "refresh_token" => self.grant_refresh_limited(ctx, &client, req).await,
            _ => self.grant_client_credentials(ctx, &client, req).await,
        };
        metrics::counter!("portcullis_oauth_tokens_total", "grant" => grant_label(&grant), "outcome" =>
            if out.is_ok() { "success" } else { "failure" })
        .increment(1);
        out
    }

    /// The user of a grant, if they may still get tokens.
    /// The claims of a user's access token for `client`: a first-party (trusted)
    /// client's tokens carry the user's roles and, when `tokens.include_metadata`
    /// is on, public metadata, like first-party sign-in's; a third party's do not.
    fn user_claims(&self, client: &Client, user: &UserRow, scope: String, amr: Vec<String>) -> UserClaims {
        if !client.row.trusted {
            return UserClaims { roles: Vec::new(), scope, metadata: None, amr };
        }
        let metadata =
            if self.auth.settings().include_metadata { serde_json::from_str(&user.public_metadata).ok() } else { None };
        UserClaims { roles: user.roles.clone(), scope, metadata, amr }
    }

    pub(super) async fn live_user(&self, user_id: &str) -> Result<UserRow, OAuthError> {
        match self.db.user_by_id(user_id).await? {
            Some(u) if u.banned_at.is_none() => Ok(u),
            _ => Err(OAuthError::invalid_grant("the account is gone or banned")),
        }
    }
}

fn grant_label(grant: &str) -> &'static str {
    match grant {
        "authorization_code" => "authorization_code",
        "refresh_token" => "refresh_token",
        _ => "client_credentials",
    }
}
