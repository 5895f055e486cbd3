//! ID tokens (OpenID Connect Core §2, §3.1.3.6): claims about the user by scope,
//! `at_hash`, `auth_time`, `nonce`, `amr`, signed like access tokens.

use aws_lc_rs::digest;
use portcullis_proto::{IdTokenClaims, UserInfo};

use super::{OAuth, OAuthError};
use crate::{crypto, keys::Algorithm, store::UserRow};

/// Left half of the hash of the access token, for `at_hash` (OIDC Core §3.1.3.6);
/// the hash follows the signing algorithm (SHA-512 for Ed25519).
fn at_hash(alg: Option<Algorithm>, access_token: &str) -> String {
    let algo = if alg == Some(Algorithm::EdDsa) { &digest::SHA512 } else { &digest::SHA256 };
    let d = digest::digest(algo, access_token.as_bytes());
    let bytes = d.as_ref();
    crypto::b64url(bytes.get(..bytes.len() / 2).unwrap_or(bytes))
}

/// Claims about the user by scope (OIDC Core §5.4), for ID tokens and userinfo.
pub fn user_claims(user: &UserRow, scopes: &[String]) -> UserInfo {
    let has = |want: &str| scopes.iter().any(|s| s == want);
    UserInfo {
        sub: user.id.clone(),
        name: user.name.clone().filter(|_| has("profile")),
        updated_at: has("profile").then_some(user.updated_at / 1000),
        email: has("email").then(|| user.email.clone()),
        email_verified: has("email").then_some(user.email_verified),
    }
}

/// What an ID token needs beyond the user.
pub(super) struct IdTokenFacts<'a> {
    /// The client: `aud` and `azp`.
    pub client_id: &'a str,
    /// When the user signed in (milliseconds).
    pub auth_time: Option<i64>,
    /// The authorization request's `nonce`.
    pub nonce: Option<&'a str>,
    /// How the user signed in.
    pub amr: Vec<String>,
    /// The access token issued with it, for `at_hash`.
    pub access_token: &'a str,
    /// The granted scopes, for the claims.
    pub scopes: &'a [String],
}

impl OAuth {
    /// The ID token of a token response, when `openid` was granted.
    pub(super) fn id_token_if_openid(
        &self,
        user: &UserRow,
        f: IdTokenFacts<'_>,
        now_ms: i64,
    ) -> Result<Option<String>, OAuthError> {
        if !f.scopes.iter().any(|s| s == "openid") {
            return Ok(None);
        }
        let now = now_ms / 1000;
        let claims = IdTokenClaims {
            iss: self.settings.issuer.clone(),
            aud: f.client_id.to_owned(),
            azp: f.client_id.to_owned(),
            iat: now,
            exp: now + i64::try_from(self.tokens.access_ttl_secs()).unwrap_or(900),
            at_hash: at_hash(self.tokens.signing_alg(), f.access_token),
            auth_time: f.auth_time.map(|t| t / 1000),
            nonce: f.nonce.map(str::to_owned),
            acr: Some(if f.amr.iter().any(|m| m == "mfa") { "mfa" } else { "pwd" }.to_owned()),
            amr: f.amr,
            user: user_claims(user, f.scopes),
        };
        Ok(Some(self.tokens.sign_id_token(&claims)?))
    }
}
