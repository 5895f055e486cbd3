//! Client authentication at the token, introspection and revocation endpoints
//! (RFC 6749 §2.3, RFC 7523): `client_secret_basic`, `client_secret_post`,
//! `private_key_jwt` (inline `jwks` or a `jwks_uri` fetched through the guarded
//! outbound client) and `none` for public clients.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;

use super::OAuthError;
use crate::{
    clients::{ASSERTION_ALGS, Client, Clients, JWT_BEARER, parse_jwks},
    crypto::{self, Secret},
    outbound::Outbound,
};

type KeySet = Arc<Vec<jsonwebtoken::jwk::Jwk>>;

/// How a request presented client credentials.
#[derive(Debug, Default)]
pub struct Presented {
    /// From `Authorization: Basic` (already form-decoded).
    pub basic: Option<(String, Secret)>,
    /// `client_id` form parameter.
    pub client_id: Option<String>,
    /// `client_secret` form parameter.
    pub client_secret: Option<Secret>,
    /// `client_assertion_type` form parameter.
    pub assertion_type: Option<String>,
    /// `client_assertion` form parameter.
    pub assertion: Option<String>,
}

/// Authenticates clients against the registry; caches keys fetched from `jwks_uri`.
pub struct ClientAuth {
    clients: Arc<Clients>,
    jwks_cache: Mutex<HashMap<String, (Instant, KeySet)>>,
    http: Outbound,
}

impl ClientAuth {
    /// Client authentication over `clients`; `http` fetches clients' `jwks_uri`.
    pub fn new(clients: Arc<Clients>, http: Outbound) -> Self {
        Self { clients, jwks_cache: Mutex::new(HashMap::new()), http }
    }

    /// The registry.
    pub fn clients(&self) -> &Arc<Clients> {
        &self.clients
    }

    /// Authenticates the client of a token, introspection or revocation request
    /// (RFC 6749 §2.3, RFC 7523). `audiences` gives the values a client assertion's
    /// `aud` may carry. One method per request; it must be the registered one.
    pub async fn authenticate(
        &self,
        presented: Presented,
        audiences: impl FnOnce() -> Vec<String>,
        now: i64,
    ) -> Result<Arc<Client>, OAuthError> {
        let used_basic = presented.basic.is_some();
        let methods = usize::from(presented.basic.is_some())
            + usize::from(presented.client_secret.is_some())
            + usize::from(presented.assertion.is_some());
        if methods > 1 {
            return Err(OAuthError::invalid_request("use exactly one client authentication method"));
        }
        let fail = |why: &str| {
            let e = OAuthError::invalid_client(why);
            if used_basic { e.with_basic_challenge() } else { e }
        };
        if let Some((id, secret)) = presented.basic {
            if presented.client_id.as_deref().is_some_and(|c| c != id) {
                return Err(OAuthError::invalid_request("client_id does not match the Authorization header"));
            }
            let client = self.known(&id).await?.ok_or_else(|| fail("client authentication failed"))?;
            if client.meta.token_endpoint_auth_method != "client_secret_basic"
                || !client.secret_matches(secret.expose(), now)
            {
                return Err(fail("client authentication failed"));
            }
            return Ok(client);
        }
        if let Some(secret) = presented.client_secret {
            let id = presented.client_id.ok_or_else(|| fail("client_id is required with client_secret"))?;
            let client = self.known(&id).await?.ok_or_else(|| fail("client authentication failed"))?;
            if client.meta.token_endpoint_auth_method != "client_secret_post"
                || !client.secret_matches(secret.expose(), now)
            {
                return Err(fail("client authentication failed"));
            }
            return Ok(client);
        }
        if let Some(assertion) = presented.assertion {
            if presented.assertion_type.as_deref() != Some(JWT_BEARER) {
                return Err(OAuthError::invalid_request(format!("client_assertion_type must be {JWT_BEARER}")));
            }
            let audiences = audiences();
            let audiences: Vec<&str> = audiences.iter().map(String::as_str).collect();
            return self.authenticate_assertion(&assertion, presented.client_id.as_deref(), &audiences, now).await;
        }
        let id = presented.client_id.ok_or_else(|| fail("client authentication is required"))?;
        let client = self.known(&id).await?.ok_or_else(|| fail("client authentication failed"))?;
        if !client.meta.is_public() {
            return Err(fail("this client must authenticate"));
        }
        Ok(client)
    }

    async fn known(&self, id: &str) -> Result<Option<Arc<Client>>, OAuthError> {
        self.clients.get(id).await.map_err(|e| OAuthError::server_error(&e.to_string()))
    }

    async fn authenticate_assertion(
        &self,
        assertion: &str,
        client_id: Option<&str>,
        audiences: &[&str],
        now: i64,
    ) -> Result<Arc<Client>, OAuthError> {
        let fail = || OAuthError::invalid_client("client assertion is not valid");
        let header = jsonwebtoken::decode_header(assertion).map_err(|_| fail())?;
        let alg = format!("{:?}", header.alg);
        if !ASSERTION_ALGS.contains(&alg.as_str()) {
            return Err(OAuthError::invalid_client("client assertion algorithm is not allowed"));
        }
        // The issuer names the client; nothing is trusted before the signature checks.
        let unverified: Value = assertion
            .split('.')
            .nth(1)
            .and_then(crypto::b64url_decode)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(fail)?;
        let iss = unverified.get("iss").and_then(Value::as_str).ok_or_else(fail)?.to_owned();
        if client_id.is_some_and(|c| c != iss) {
            return Err(OAuthError::invalid_client("client_id does not match the assertion"));
        }
        let client = self.known(&iss).await?.ok_or_else(fail)?;
        if client.meta.token_endpoint_auth_method != "private_key_jwt" {
            return Err(fail());
        }
        let keys = self.client_keys(&client, header.kid.as_deref()).await;
        let candidates: Vec<&jsonwebtoken::jwk::Jwk> = keys
            .iter()
            .filter(|k| header.kid.is_none() || k.common.key_id.as_deref() == header.kid.as_deref())
            .collect();
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_audience(audiences);
        validation.set_issuer(&[&iss]);
        validation.sub = Some(iss.clone());
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        let claims = candidates
            .iter()
            .find_map(|jwk| {
                let key = jsonwebtoken::DecodingKey::from_jwk(jwk).ok()?;
                jsonwebtoken::decode::<Value>(assertion, &key, &validation).ok()
            })
            .ok_or_else(fail)?
            .claims;
        let exp = claims.get("exp").and_then(Value::as_i64).ok_or_else(fail)?;
        // Its jti is kept until it expires; an hour (what common clients such as
        // authlib use) bounds that store.
        if exp * 1000 > now + 3600 * 1000 + 60_000 {
            return Err(OAuthError::invalid_client("client assertion lives too long (at most 1 hour)"));
        }
        let jti = claims.get("jti").and_then(Value::as_str).filter(|j| !j.is_empty() && j.len() <= 256);
        let jti = jti.ok_or_else(|| OAuthError::invalid_client("client assertion needs a jti"))?;
        let key = crypto::sha256_b64(&format!("{iss}\n{jti}"));
        match self.clients.db().assertion_use(&key, exp * 1000 + 60_000).await {
            Ok(true) => Ok(client),
            Ok(false) => Err(OAuthError::invalid_client("client assertion was already used")),
            Err(e) => Err(OAuthError::server_error(&e.to_string())),
        }
    }

    /// The client's keys: inline, or fetched from `jwks_uri` (cached ten minutes,
    /// fetched again at once for an unknown `kid`, at most every ten seconds).
    async fn client_keys(&self, client: &Client, kid: Option<&str>) -> KeySet {
        let Some(uri) = &client.meta.jwks_uri else {
            return Arc::new(client.jwks.clone());
        };
        let cached = self.jwks_cache.lock().ok().and_then(|c| c.get(uri).cloned());
        if let Some((at, keys)) = &cached {
            let known = kid.is_none_or(|k| keys.iter().any(|j| j.common.key_id.as_deref() == Some(k)));
            if at.elapsed() < Duration::from_secs(600) && (known || at.elapsed() < Duration::from_secs(10)) {
                return keys.clone();
            }
        }
        const MAX_BODY: usize = 256 * 1024;
        let fetched = async {
            let res = self.http.get(uri).await.inspect_err(|e| tracing::warn!(error = %e, "jwks_uri refused")).ok()?;
            let mut res = res.error_for_status().ok()?;
            let mut body = Vec::new();
            while let Some(chunk) = res.chunk().await.ok()? {
                if body.len() + chunk.len() > MAX_BODY {
                    return None;
                }
                body.extend_from_slice(&chunk);
            }
            parse_jwks(&serde_json::from_slice(&body).ok()?).ok()
        }
        .await;
        // A failure is remembered too (with the keys we had): junk assertions naming
        // this client cannot make us fetch more than once every ten seconds.
        let keys = match fetched {
            Some(keys) => Arc::new(keys),
            None => {
                tracing::warn!(client_id = %client.id(), "could not fetch the client's jwks_uri");
                cached.map(|(_, k)| k).unwrap_or_default()
            }
        };
        if let Ok(mut c) = self.jwks_cache.lock() {
            c.insert(uri.clone(), (Instant::now(), keys.clone()));
        }
        keys
    }
}
