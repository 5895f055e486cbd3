//! Wire types of the OAuth 2.0 / OpenID Connect provider: client metadata and the
//! admin view of a client, token, error and introspection replies, the claims of
//! access and ID tokens, userinfo, and the discovery document.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Client metadata under its RFC 7591 names: what the admin API takes and returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClientMetadata {
    /// Human-readable name, shown on the consent page.
    pub client_name: String,
    /// Exact redirect URIs.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Allowed grant types.
    #[serde(default)]
    pub grant_types: Vec<String>,
    /// Allowed response types (`code`).
    #[serde(default)]
    pub response_types: Vec<String>,
    /// How the client authenticates at the token endpoint.
    #[serde(default)]
    pub token_endpoint_auth_method: String,
    /// Space-separated scopes the client may request.
    #[serde(default)]
    pub scope: String,
    /// The client's public keys, for `private_key_jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub jwks: Option<Value>,
    /// Where to fetch the client's public keys, for `private_key_jwt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Where RP-initiated logout may send the browser back to.
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// Browser origins allowed to call the token and userinfo endpoints (CORS).
    #[serde(default)]
    pub allowed_cors_origins: Vec<String>,
    /// Home page of the client, shown on the consent page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    /// A first-party client: users are not asked for consent (an extension).
    #[serde(default)]
    pub trusted: bool,
    /// A resource server: may introspect tokens issued to anyone, not only its own
    /// (an extension; setting it takes `admin:roles:write`).
    #[serde(default)]
    pub introspection: bool,
}

impl ClientMetadata {
    /// Whether the client may use `grant`.
    pub fn has_grant(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }

    /// A public client has no credentials (`none`), so PKCE stands in for them.
    pub fn is_public(&self) -> bool {
        self.token_endpoint_auth_method == "none"
    }

    /// Whether the client authenticates with a generated secret.
    pub fn uses_secret(&self) -> bool {
        matches!(self.token_endpoint_auth_method.as_str(), "client_secret_basic" | "client_secret_post")
    }

    /// The scopes the client may request.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split_whitespace()
    }
}

/// A registered client as `/v1/admin/clients` shows it: its metadata plus the
/// registration facts of RFC 7591 §3.2.1, and a secret only when just generated.
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClientView {
    /// The client's identifier.
    pub client_id: String,
    /// When it was registered, seconds since the epoch.
    pub client_id_issued_at: i64,
    /// Who holds its credential: `user:ID`, `key:ID` or `operator`; its grants are
    /// bounded by what the owner holds.
    pub owner: String,
    /// When it was registered (RFC 3339).
    pub created_at: String,
    /// When it last changed (RFC 3339).
    pub updated_at: String,
    /// The secret, in the reply that generated it and never again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// With a secret: `0`, it does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<i64>,
    /// After a rotation with grace: until when the previous secret still works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<String>,
    /// Everything the client was registered with.
    #[serde(flatten)]
    pub metadata: ClientMetadata,
}

/// A successful reply of `/oauth/token` (RFC 6749 §5.1, OpenID Connect Core
/// §3.1.3.3).
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OAuthTokenResponse {
    /// JWT access token (RFC 9068).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The scope granted, space-separated.
    pub scope: String,
    /// With `offline_access`: the next refresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// With `openid`: the ID token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

/// The error body of the OAuth endpoints (RFC 6749 §5.2).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OAuthErrorBody {
    /// The registered error code (`invalid_grant`, `invalid_client`, …).
    pub error: String,
    /// Human-readable detail.
    pub error_description: String,
}

/// Claims of an access token (RFC 9068 §2.2), first-party or issued to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccessTokenClaims {
    /// Issuer URL.
    pub iss: String,
    /// The user, or for client credentials the client.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issue time, seconds.
    pub iat: i64,
    /// Not valid before, seconds.
    pub nbf: i64,
    /// Unique token id.
    pub jti: String,
    /// Session the token belongs to: ending the session ends the token. Absent in
    /// client-credentials tokens, which have no user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The OAuth client the token was issued to (RFC 9068 §2.2); absent in
    /// first-party tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Roles at issue time (first-party tokens, and users' tokens of trusted
    /// clients). The server decides on the roles held now, never on this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Space-separated permissions at issue time.
    pub scope: String,
    /// How the user signed in (RFC 8176: `pwd`, `otp`, `sms`, `hwk`, `swk`,
    /// `mfa`); absent in client-credentials tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// The user's `public_metadata`, when `tokens.include_metadata` is on
    /// (first-party tokens, and users' tokens of trusted clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Value>,
}

/// Claims about the user by scope (OpenID Connect Core §5.4, §5.3.2): the userinfo
/// reply, and part of every ID token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserInfo {
    /// The user's id.
    pub sub: String,
    /// With `profile`: the display name, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// With `profile`: when the profile last changed, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    /// With `email`: the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// With `email`: whether the user proved the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}

/// Claims of an ID token (OpenID Connect Core §2, §3.1.3.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IdTokenClaims {
    /// Issuer URL.
    pub iss: String,
    /// The client.
    pub aud: String,
    /// The client, again (the authorized party).
    pub azp: String,
    /// Issue time, seconds.
    pub iat: i64,
    /// Expiry, seconds.
    pub exp: i64,
    /// Left half of the access token's hash.
    pub at_hash: String,
    /// When the user signed in, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    /// The authorization request's `nonce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// How the user signed in (RFC 8176 values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// `mfa` when the user signed in with two factors, else `pwd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// `sub` and the claims the granted scopes allow.
    #[serde(flatten)]
    pub user: UserInfo,
}

/// The reply of `/oauth/introspect` (RFC 7662 §2.2). An inactive token is
/// `{"active": false}` and nothing else.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IntrospectionResponse {
    /// Whether the token is good now.
    pub active: bool,
    /// `Bearer`, `refresh_token` or `api_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// What the token allows now, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The client the token was issued to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The user (or client, or key owner) it speaks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    /// Issuer URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Expiry, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issue time, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not valid before, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Unique token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// The discovery document: OpenID Connect Discovery 1.0 §3 at
/// `/.well-known/openid-configuration`, RFC 8414 §2 (without the OpenID-only
/// members) at `/.well-known/oauth-authorization-server`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderMetadata {
    /// Issuer URL; every endpoint is under it.
    pub issuer: String,
    /// Where the browser is sent to sign in and consent.
    pub authorization_endpoint: String,
    /// Where codes and refresh tokens become tokens.
    pub token_endpoint: String,
    /// The public signing keys.
    pub jwks_uri: String,
    /// OpenID only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userinfo_endpoint: Option<String>,
    /// RFC 7662.
    pub introspection_endpoint: String,
    /// RFC 7009.
    pub revocation_endpoint: String,
    /// OpenID RP-initiated logout only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_session_endpoint: Option<String>,
    /// Scopes every client may ask for; permissions come on top.
    pub scopes_supported: Vec<String>,
    /// `code`.
    pub response_types_supported: Vec<String>,
    /// `query`.
    pub response_modes_supported: Vec<String>,
    /// Grants a client may be registered for.
    pub grant_types_supported: Vec<String>,
    /// OpenID only: `public`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_types_supported: Vec<String>,
    /// OpenID only: the algorithm of the current signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token_signing_alg_values_supported: Option<Vec<String>>,
    /// How clients authenticate at the token endpoint.
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// Algorithms accepted on `private_key_jwt` assertions.
    pub token_endpoint_auth_signing_alg_values_supported: Vec<String>,
    /// How clients authenticate at the introspection endpoint.
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    /// Algorithms accepted on assertions there.
    pub introspection_endpoint_auth_signing_alg_values_supported: Vec<String>,
    /// How clients authenticate at the revocation endpoint.
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    /// Algorithms accepted on assertions there.
    pub revocation_endpoint_auth_signing_alg_values_supported: Vec<String>,
    /// `S256` only (RFC 7636).
    pub code_challenge_methods_supported: Vec<String>,
    /// OpenID only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompt_values_supported: Vec<String>,
    /// OpenID only: `pwd` (a password) and `mfa` (two factors); `acr_values=mfa`
    /// demands the second.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acr_values_supported: Vec<String>,
    /// OpenID only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims_supported: Vec<String>,
    /// OpenID only: `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims_parameter_supported: Option<bool>,
    /// OpenID only: `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_parameter_supported: Option<bool>,
    /// OpenID only: `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_uri_parameter_supported: Option<bool>,
    /// RFC 9207: the `iss` parameter comes with every authorization response.
    pub authorization_response_iss_parameter_supported: bool,
}

redacted_debug! {
    OAuthTokenResponse { access_token, refresh_token, id_token }
}

impl std::fmt::Debug for ClientView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientView")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "[redacted]"))
            .field("metadata", &self.metadata)
            .finish_non_exhaustive()
    }
}

/// `GET /.well-known/jwks.json`: the public keys access and ID tokens are signed
/// with (RFC 7517 §5). Retired keys stay listed while their tokens may live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// One public signing key (RFC 7517 §4, RFC 7518 §6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Jwk {
    /// Key type: `RSA`, `EC` or `OKP`.
    pub kty: String,
    /// Key id: the RFC 7638 thumbprint; tokens name it in their header.
    pub kid: String,
    /// `RS256`, `ES256` or `EdDSA`: the only algorithm this key verifies.
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
    /// Curve of `EC` (`P-256`) and `OKP` (`Ed25519`) keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// RSA modulus, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA exponent, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// `EC` x coordinate, or the `OKP` public key, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// `EC` y coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}
