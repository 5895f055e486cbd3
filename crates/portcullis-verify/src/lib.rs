//! Checks Portcullis credentials inside a Rust service, so a resource server trusts
//! exactly what Portcullis issued and nothing else:
//!
//! - **access tokens** offline, against the issuer's JWKS, cached (a token signed by
//!   an unknown key refetches it, at most once per `refetch_interval`; when the
//!   server is unreachable the cached keys keep working): signature, algorithm,
//!   `typ: at+jwt`, `iss`, `aud`, `exp`, `nbf`;
//! - **API keys** (`X-API-Key`) through `POST /v1/api-keys/verify`, with a short
//!   cache, when a verifier key holding `api_keys:verify` is configured;
//! - with the `axum` feature (on by default), the [`Authenticated`] extractor and the
//!   [`RequireScope`] guard, which answer 401 and 403 as Portcullis does: RFC 9457
//!   problem documents with `WWW-Authenticate`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), portcullis_verify::VerifyError> {
//! let verifier = portcullis_verify::Verifier::new(
//!     portcullis_verify::Config::new("https://auth.example.com").audience("https://api.example.com"),
//! )?;
//! let auth = verifier.verify_token("eyJ…").await?;
//! println!("{:?} may {:?}", auth.user_id, auth.scopes);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod api_keys;
#[cfg(feature = "axum")]
mod extract;
mod jwks;

use std::{sync::Arc, time::Duration};

pub use portcullis_proto::{AccessTokenClaims, ErrorCode};

#[cfg(feature = "axum")]
pub use extract::{Authenticated, Rejection, RequireScope, Scopes};

/// How to reach and trust one Portcullis deployment.
#[derive(Debug, Clone)]
pub struct Config {
    issuer: String,
    audience: Option<String>,
    base_url: Option<String>,
    leeway: Duration,
    refetch_interval: Duration,
    jwks_max_age: Duration,
    jwks_max_stale: Duration,
    insecure_http: bool,
    timeout: Duration,
    verifier_key: Option<String>,
    api_key_cache_ttl: Duration,
}

impl Config {
    /// Trust tokens whose `iss` is `issuer` (the server's `issuer` setting).
    pub fn new(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into().trim_end_matches('/').to_owned(),
            audience: None,
            base_url: None,
            leeway: Duration::from_secs(30),
            refetch_interval: Duration::from_secs(5),
            jwks_max_age: Duration::from_secs(60),
            jwks_max_stale: Duration::from_secs(3600),
            insecure_http: false,
            timeout: Duration::from_secs(5),
            verifier_key: None,
            api_key_cache_ttl: Duration::from_secs(10),
        }
    }

    /// The `aud` tokens must carry (`tokens.audience`; the issuer when unset).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Where this service reaches Portcullis when that is not the issuer URL (an
    /// internal address); the JWKS and the key verification are fetched from here.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into().trim_end_matches('/').to_owned());
        self
    }

    /// Clock skew allowed on `exp` and `nbf` (30 s, as the server's default).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The least time between two JWKS fetches caused by unknown key ids (5 s):
    /// tokens with made-up `kid`s cannot make this service hammer the server.
    pub fn refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = interval;
        self
    }

    /// How long fetched keys are used before they are fetched again (60 s, the
    /// server's `Cache-Control`), so a retired key stops being trusted.
    pub fn jwks_max_age(mut self, age: Duration) -> Self {
        self.jwks_max_age = age;
        self
    }

    /// How long the last fetched keys keep working while no fetch succeeds (1 h):
    /// enough to ride out an outage (no new tokens are issued meanwhile), short enough
    /// that a key the server withdrew stops being trusted. Past it: 503.
    pub fn jwks_max_stale(mut self, age: Duration) -> Self {
        self.jwks_max_stale = age;
        self
    }

    /// Allow plain `http://` to hosts other than loopback. Off by default: the key
    /// set and the verifier key must not cross a network in clear text.
    pub fn insecure_http(mut self, allow: bool) -> Self {
        self.insecure_http = allow;
        self
    }

    /// Time limit of each call to Portcullis (5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Accept `X-API-Key`: each key is checked with `POST /v1/api-keys/verify`,
    /// authenticated with this key (it must hold `api_keys:verify`).
    pub fn api_keys(mut self, verifier_key: impl Into<String>) -> Self {
        self.verifier_key = Some(verifier_key.into());
        self
    }

    /// How long an API key's verdict is reused (10 s): a revoked key keeps working
    /// here for at most this long.
    pub fn api_key_cache_ttl(mut self, ttl: Duration) -> Self {
        self.api_key_cache_ttl = ttl;
        self
    }

    fn server(&self) -> &str {
        self.base_url.as_deref().unwrap_or(&self.issuer)
    }
}

/// Who is calling and what they may do, from a verified credential.
#[derive(Debug, Clone, PartialEq)]
pub struct Auth {
    /// The user, or `None` for a client-credentials token (no user).
    pub user_id: Option<String>,
    /// The session behind a user's token. Checked offline, a token outlives the end
    /// of its session (sign-out, ban) until it expires; ask `/oauth/introspect`
    /// where that matters.
    pub session_id: Option<String>,
    /// The OAuth client a token was issued to; `None` for first-party tokens.
    pub client_id: Option<String>,
    /// The API key used, when the credential was one.
    pub api_key_id: Option<String>,
    /// Permissions: the token's `scope`, or the key's effective scopes.
    pub scopes: Vec<String>,
    /// Roles at issue time (tokens only).
    pub roles: Vec<String>,
    /// All claims of a token; `None` for API keys.
    pub claims: Option<AccessTokenClaims>,
}

impl Auth {
    /// Whether every one of `scopes` is granted.
    pub fn has_scopes(&self, scopes: &[&str]) -> bool {
        scopes.iter().all(|s| self.scopes.iter().any(|g| g == s))
    }

    fn from_claims(claims: AccessTokenClaims) -> Self {
        // Every token about a user belongs to a session; a client-credentials token
        // has none and is about the client itself.
        let user = claims.sid.is_some();
        Self {
            user_id: user.then(|| claims.sub.clone()),
            session_id: claims.sid.clone(),
            client_id: claims.client_id.clone(),
            api_key_id: None,
            scopes: claims.scope.split_ascii_whitespace().map(str::to_owned).collect(),
            roles: claims.roles.clone(),
            claims: Some(claims),
        }
    }
}

/// Why a credential was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No credential was presented.
    #[error("no credential")]
    Missing,
    /// The credential is malformed, forged, for someone else, or revoked.
    #[error("{0}")]
    Invalid(&'static str),
    /// The token's lifetime is over (or the API key's).
    #[error("the credential has expired")]
    Expired,
    /// Authenticated, but without these scopes.
    #[error("missing scope(s): {}", .0.join(" "))]
    InsufficientScope(Vec<String>),
    /// Portcullis could not be asked (no keys fetched yet, or key verification
    /// failed); retry later.
    #[error("cannot reach Portcullis: {0}")]
    Unavailable(String),
    /// The configuration cannot work (e.g. an issuer that is not a URL).
    #[error("bad configuration: {0}")]
    Config(String),
}

/// Checks tokens and API keys for one Portcullis deployment. Cheap to clone: every
/// clone shares the key cache and the HTTP connections.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    http: reqwest::Client,
    keys: Arc<jwks::KeyCache>,
    api_keys: api_keys::KeyVerdicts,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("issuer", &self.inner.config.issuer).finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier; nothing is fetched until the first token arrives.
    pub fn new(config: Config) -> Result<Self, VerifyError> {
        let url = config.server();
        let parsed = reqwest::Url::parse(url).map_err(|e| VerifyError::Config(format!("{url}: {e}")))?;
        let loopback = match parsed.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        match parsed.scheme() {
            "https" => {}
            "http" if loopback || config.insecure_http => {}
            "http" => {
                return Err(VerifyError::Config(format!(
                    "{url}: plain http is only for loopback; use https (or Config::insecure_http)"
                )));
            }
            other => return Err(VerifyError::Config(format!("{url}: {other} is not http(s)"))),
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("portcullis-verify/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| VerifyError::Config(e.to_string()))?;
        let keys = Arc::new(jwks::KeyCache::new(format!("{}/.well-known/jwks.json", config.server())));
        let api_keys = api_keys::KeyVerdicts::default();
        Ok(Self { inner: Arc::new(Inner { config, http, keys, api_keys }) })
    }

    /// Checks an access token (without the `Bearer ` prefix) and says whose it is.
    /// Offline after the first key fetch: no call to Portcullis per token.
    pub async fn verify_token(&self, token: &str) -> Result<Auth, VerifyError> {
        let claims = self.inner.keys.verify(&self.inner.http, &self.inner.config, token).await?;
        Ok(Auth::from_claims(claims))
    }

    /// Checks an API key with Portcullis (cached for `api_key_cache_ttl`).
    /// `Invalid` when API keys are not configured.
    pub async fn verify_api_key(&self, key: &str) -> Result<Auth, VerifyError> {
        let Some(verifier_key) = self.inner.config.verifier_key.as_deref() else {
            return Err(VerifyError::Invalid("API keys are not accepted here"));
        };
        self.inner.api_keys.verify(&self.inner.http, &self.inner.config, verifier_key, key).await
    }

    /// Whether `X-API-Key` is accepted.
    pub fn accepts_api_keys(&self) -> bool {
        self.inner.config.verifier_key.is_some()
    }

    /// Checks the credential of a request: `Authorization: Bearer …`, else (when
    /// API keys are on) `X-API-Key`.
    pub async fn verify_headers(&self, headers: &http::HeaderMap) -> Result<Auth, VerifyError> {
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let value = value.to_str().map_err(|_| VerifyError::Invalid("the Authorization header is not text"))?;
            let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(VerifyError::Missing);
            }
            let token = token.trim();
            if token.is_empty() {
                return Err(VerifyError::Invalid("the bearer token is empty"));
            }
            return self.verify_token(token).await;
        }
        if self.accepts_api_keys()
            && let Some(key) = headers.get("x-api-key")
        {
            let key = key.to_str().map_err(|_| VerifyError::Invalid("the X-API-Key header is not text"))?;
            return self.verify_api_key(key.trim()).await;
        }
        Err(VerifyError::Missing)
    }
}
