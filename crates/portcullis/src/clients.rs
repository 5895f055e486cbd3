//! The OAuth client registry: RFC 7591 metadata and its rules, generated secrets,
//! and the standing of each client's owner. Below both first-party authentication
//! (which checks client tokens) and the OAuth provider (which authenticates clients,
//! `oauth::client_auth`).
//!
//! Clients are read through a per-node cache whose entries live one second, so a
//! client-credentials request costs a SHA-256 and a constant-time comparison, not a
//! database round trip, and a rotated secret or deleted client stops working on
//! every node within a second.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub use portcullis_proto::ClientMetadata;
use portcullis_proto::FieldError;
use serde_json::Value;

use crate::{
    crypto::{self, Secret},
    rbac,
    store::{ClientRow, Db, StoreError},
};

/// How long a cached client may be served.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
const CACHE_MAX: usize = 10_000;
/// The assertion type of `private_key_jwt` (RFC 7523 §2.2).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Grant types a client may be registered for.
pub const GRANT_TYPES: &[&str] = &["authorization_code", "refresh_token", "client_credentials"];
/// Token endpoint authentication methods we support.
pub const AUTH_METHODS: &[&str] = &["client_secret_basic", "client_secret_post", "private_key_jwt", "none"];
/// Signature algorithms accepted on client assertions (never `none` or HMAC).
pub const ASSERTION_ALGS: &[&str] = &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];
/// The OpenID Connect scopes every client may ask for.
pub const OIDC_SCOPES: &[&str] = &["openid", "profile", "email", "offline_access"];

fn field(field: &str, code: &str, message: &str) -> FieldError {
    FieldError { field: field.into(), code: code.into(), message: message.into() }
}

/// Whether `host` is a loopback name or address (RFC 8252 §7.3).
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// Checks a redirect-style URI: absolute, no fragment, `https`, `http` only on
/// loopback, or a private-use scheme with a dot (RFC 8252 §7.1) for native apps.
fn check_uri(name: &str, uri: &str, allow_private_scheme: bool, errors: &mut Vec<FieldError>) {
    let bad = |errors: &mut Vec<FieldError>, msg: &str| errors.push(field(name, "invalid_uri", msg));
    if uri.len() > 2000 {
        return bad(errors, "must be at most 2000 characters");
    }
    let Ok(url) = url::Url::parse(uri) else {
        return bad(errors, "must be an absolute URI");
    };
    if url.fragment().is_some() {
        return bad(errors, "must not contain a fragment");
    }
    match url.scheme() {
        "https" if url.host_str().is_some() => {}
        "http" if url.host_str().is_some_and(is_loopback) => {}
        "http" => bad(errors, "http is only allowed for loopback addresses (127.0.0.1, [::1], localhost); use https"),
        s if allow_private_scheme && s.contains('.') => {}
        _ => bad(errors, "must be https (http only on loopback)"),
    }
}

/// Checks a CORS origin: `scheme://host[:port]`, nothing more.
fn check_origin(name: &str, origin: &str, errors: &mut Vec<FieldError>) {
    let ok = url::Url::parse(origin).ok().is_some_and(|u| {
        let host_ok = match u.scheme() {
            "https" => u.host_str().is_some(),
            "http" => u.host_str().is_some_and(is_loopback),
            _ => false,
        };
        host_ok && u.origin().ascii_serialization() == origin
    });
    if !ok {
        errors.push(field(name, "invalid_origin", "must be an origin like https://app.example.com (no path or slash)"));
    }
}

/// Fills defaults and checks every rule of client metadata; the result is what
/// gets stored.
pub fn validated(mut meta: ClientMetadata) -> Result<ClientMetadata, Vec<FieldError>> {
    let mut errors = Vec::new();
    meta.client_name = meta.client_name.trim().to_owned();
    if meta.client_name.is_empty() || meta.client_name.chars().count() > 200 {
        errors.push(field("client_name", "invalid_length", "must be 1 to 200 characters"));
    }
    if meta.token_endpoint_auth_method.is_empty() {
        meta.token_endpoint_auth_method = "client_secret_basic".into();
    }
    if !AUTH_METHODS.contains(&meta.token_endpoint_auth_method.as_str()) {
        errors.push(field(
            "token_endpoint_auth_method",
            "unsupported",
            &format!("must be one of {}", AUTH_METHODS.join(", ")),
        ));
    }
    if meta.grant_types.is_empty() {
        meta.grant_types = vec!["authorization_code".into()];
    }
    meta.grant_types = rbac::normalized(&meta.grant_types);
    for (i, g) in meta.grant_types.iter().enumerate() {
        if !GRANT_TYPES.contains(&g.as_str()) {
            errors.push(field(
                &format!("grant_types[{i}]"),
                "unsupported",
                &format!("must be one of {}", GRANT_TYPES.join(", ")),
            ));
        }
    }
    let code_flow = meta.has_grant("authorization_code");
    if meta.response_types.is_empty() && code_flow {
        meta.response_types = vec!["code".into()];
    }
    meta.response_types = rbac::normalized(&meta.response_types);
    if meta.response_types.iter().any(|r| r != "code") {
        errors.push(field("response_types", "unsupported", "only \"code\" is supported"));
    }
    if code_flow != meta.response_types.iter().any(|r| r == "code") {
        errors.push(field(
            "response_types",
            "inconsistent",
            "\"code\" goes with the authorization_code grant, and only with it",
        ));
    }
    if meta.is_public() && meta.has_grant("client_credentials") {
        errors.push(field(
            "grant_types",
            "inconsistent",
            "a public client (token_endpoint_auth_method none) cannot use client_credentials",
        ));
    }
    if meta.has_grant("refresh_token") && !code_flow {
        errors.push(field("grant_types", "inconsistent", "refresh_token needs authorization_code"));
    }
    if code_flow && meta.redirect_uris.is_empty() {
        errors.push(field("redirect_uris", "required", "the authorization_code grant needs a redirect URI"));
    }
    check_uris(&meta, &mut errors);
    if meta.scope.trim().is_empty() {
        let mut s = vec!["openid", "profile", "email"];
        if meta.has_grant("refresh_token") {
            s.push("offline_access");
        }
        if !code_flow {
            s.clear();
        }
        meta.scope = s.join(" ");
    }
    let scopes: Vec<String> = meta.scope.split_whitespace().map(str::to_owned).collect();
    errors.extend(rbac::check_permissions("scope", &scopes));
    meta.scope = rbac::normalized(&scopes).join(" ");
    check_keys(&meta, &mut errors);
    if errors.is_empty() { Ok(meta) } else { Err(errors) }
}

/// Redirect, logout and home-page URIs and CORS origins: bounded lists of
/// well-formed values (`http` only on loopback).
fn check_uris(meta: &ClientMetadata, errors: &mut Vec<FieldError>) {
    for (name, list) in
        [("redirect_uris", &meta.redirect_uris), ("post_logout_redirect_uris", &meta.post_logout_redirect_uris)]
    {
        if list.len() > 20 {
            errors.push(field(name, "too_many", "at most 20 entries"));
        }
        for (i, uri) in list.iter().enumerate() {
            check_uri(&format!("{name}[{i}]"), uri, true, errors);
        }
    }
    if meta.allowed_cors_origins.len() > 20 {
        errors.push(field("allowed_cors_origins", "too_many", "at most 20 entries"));
    }
    for (i, o) in meta.allowed_cors_origins.iter().enumerate() {
        check_origin(&format!("allowed_cors_origins[{i}]"), o, errors);
    }
    if let Some(uri) = &meta.client_uri {
        check_uri("client_uri", uri, false, errors);
    }
}

/// `private_key_jwt` needs keys: inline (public keys only) or at a `jwks_uri`.
fn check_keys(meta: &ClientMetadata, errors: &mut Vec<FieldError>) {
    let jwt_auth = meta.token_endpoint_auth_method == "private_key_jwt";
    match (&meta.jwks, &meta.jwks_uri) {
        (Some(_), Some(_)) => errors.push(field("jwks", "inconsistent", "give jwks or jwks_uri, not both")),
        (None, None) if jwt_auth => {
            errors.push(field("jwks", "required", "private_key_jwt needs the client's jwks or jwks_uri"))
        }
        (Some(jwks), None) => {
            if let Err(msg) = parse_jwks(jwks) {
                errors.push(field("jwks", "invalid", &msg));
            }
        }
        (None, Some(uri)) => check_uri("jwks_uri", uri, false, errors),
        (None, None) => {}
    }
}

/// Whether a grant to a client still allows `scope` now: the client may still ask
/// for it, the user still holds it (OpenID scopes are not permissions), and
/// `offline_access` only while the client may refresh. Every path that honours a
/// grant (the bearer check, introspection, the code exchange, a refresh) asks this,
/// so none is more generous than another. `held` is sorted, as
/// `Db::role_permissions` returns it.
pub fn grant_allows(meta: &ClientMetadata, held: &[String], scope: &str) -> bool {
    meta.scopes().any(|c| c == scope)
        && (OIDC_SCOPES.contains(&scope) || held.binary_search_by(|h| h.as_str().cmp(scope)).is_ok())
        && (scope != "offline_access" || meta.has_grant("refresh_token"))
}

/// Parses a JWK Set of public signing keys; private members are refused.
pub fn parse_jwks(jwks: &Value) -> Result<Vec<jsonwebtoken::jwk::Jwk>, String> {
    let keys = jwks.get("keys").and_then(Value::as_array).ok_or("must be a JWK Set: {\"keys\": [...]}")?;
    if keys.is_empty() || keys.len() > 10 {
        return Err("must hold 1 to 10 keys".into());
    }
    let mut out = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        if ["d", "p", "q", "dp", "dq", "qi", "k"].iter().any(|m| k.get(m).is_some()) {
            return Err(format!("key {i} contains private key material: register the public key only"));
        }
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(k.clone()).map_err(|e| format!("key {i} is not a valid JWK: {e}"))?;
        jsonwebtoken::DecodingKey::from_jwk(&jwk).map_err(|e| format!("key {i} cannot verify signatures: {e}"))?;
        out.push(jwk);
    }
    Ok(out)
}

/// A registered client, parsed once and shared through the cache.
#[derive(Debug)]
pub struct Client {
    /// As stored.
    pub row: ClientRow,
    /// Its metadata.
    pub meta: ClientMetadata,
    /// Parsed inline keys, for `private_key_jwt`.
    pub jwks: Vec<jsonwebtoken::jwk::Jwk>,
}

impl Client {
    fn from_row(row: ClientRow) -> Result<Self, StoreError> {
        let meta: ClientMetadata = serde_json::from_str(&row.metadata)
            .map_err(|e| StoreError::Corrupt(format!("client {} metadata: {e}", row.id)))?;
        let jwks = meta.jwks.as_ref().map(parse_jwks).transpose().map_err(StoreError::Corrupt)?.unwrap_or_default();
        Ok(Self { row, meta, jwks })
    }

    /// The client id.
    pub fn id(&self) -> &str {
        &self.row.id
    }

    /// Whether `secret` is the client's current secret, or its previous one within
    /// the grace period. Constant time in the secret.
    pub(crate) fn secret_matches(&self, secret: &str, now: i64) -> bool {
        let hash = crypto::sha256_b64(secret);
        let current = self.row.secret_hash.as_deref().is_some_and(|h| crypto::ct_eq(h.as_bytes(), hash.as_bytes()));
        let previous = self.row.previous_expires_at.is_some_and(|until| until > now)
            && self.row.previous_secret_hash.as_deref().is_some_and(|h| crypto::ct_eq(h.as_bytes(), hash.as_bytes()));
        current | previous
    }
}

type CacheEntry = (Instant, Option<Arc<Client>>);
/// When an owner's standing was read, the auth-change count then, and the standing.
type OwnerEntry = (Instant, u64, rbac::Owner);

/// The registry with its cache.
pub struct Clients {
    db: Db,
    cache: Mutex<HashMap<String, CacheEntry>>,
    owners: Mutex<HashMap<String, OwnerEntry>>,
    origins: Mutex<Option<(Instant, Arc<HashSet<String>>)>>,
}

impl Clients {
    /// A registry over this database.
    pub fn new(db: Db) -> Arc<Self> {
        Arc::new(Self {
            db,
            cache: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
            origins: Mutex::new(None),
        })
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// A client by id, through the cache.
    pub async fn get(&self, id: &str) -> Result<Option<Arc<Client>>, StoreError> {
        if !id.starts_with("cli_") || id.len() > 64 {
            return Ok(None);
        }
        let cached = self.cache.lock().ok().and_then(|c| c.get(id).filter(|(at, _)| at.elapsed() < CACHE_TTL).cloned());
        if let Some((_, entry)) = cached {
            return Ok(entry);
        }
        let entry = self.db.client_get(id).await?.map(Client::from_row).transpose()?.map(Arc::new);
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= CACHE_MAX {
                c.retain(|_, (at, e)| at.elapsed() < CACHE_TTL && e.is_some());
                if c.len() >= CACHE_MAX {
                    c.clear();
                }
            }
            c.insert(id.to_owned(), (Instant::now(), entry.clone()));
        }
        Ok(entry)
    }

    /// The standing of a client's owner now, reused for up to [`CACHE_TTL`] on this
    /// node; a ban, deletion or role change made through this node is seen at once
    /// (the auth-change count moves).
    pub async fn owner(&self, owner: &str) -> Result<rbac::Owner, StoreError> {
        if owner == crate::ctx::OPERATOR {
            return Ok(rbac::Owner::Operator);
        }
        let generation = self.db.auth_generation();
        let cached = self.owners.lock().ok().and_then(|m| {
            m.get(owner).filter(|(at, g, _)| *g == generation && at.elapsed() < CACHE_TTL).map(|e| e.2.clone())
        });
        if let Some(found) = cached {
            return Ok(found);
        }
        let found = rbac::owner_now(&self.db, owner).await?;
        if let Ok(mut m) = self.owners.lock() {
            if m.len() >= CACHE_MAX {
                m.clear();
            }
            m.insert(owner.to_owned(), (Instant::now(), generation, found.clone()));
        }
        Ok(found)
    }

    /// Drops a client from this node's cache after a change made here.
    pub fn forget(&self, id: &str) {
        if let Ok(mut c) = self.cache.lock() {
            c.remove(id);
        }
        if let Ok(mut o) = self.origins.lock() {
            *o = None;
        }
    }

    /// Every origin some client allows, refreshed at most every few seconds.
    pub async fn cors_origins(&self) -> Arc<HashSet<String>> {
        if let Some((at, set)) = self.origins.lock().ok().and_then(|o| o.clone())
            && at.elapsed() < Duration::from_secs(5)
        {
            return set;
        }
        let mut set = HashSet::new();
        match self.db.client_all_metadata().await {
            Ok(all) => {
                for m in all {
                    if let Ok(meta) = serde_json::from_str::<ClientMetadata>(&m) {
                        set.extend(meta.allowed_cors_origins);
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "loading CORS origins failed"),
        }
        let set = Arc::new(set);
        if let Ok(mut o) = self.origins.lock() {
            *o = Some((Instant::now(), set.clone()));
        }
        set
    }
}

/// A new client secret: 256 random bits, base64url, with a recognisable prefix.
pub fn generate_secret() -> Secret {
    Secret::new(format!("pcs_{}", crypto::b64url(&crypto::random_bytes::<32>())))
}
