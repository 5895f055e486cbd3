//! Access tokens: JWTs signed with the current key (claims per RFC 9068 §2.2), and
//! their verification — the one place that decides whether a bearer token is good.
//!
//! Verification trusts nothing in the token before the signature checks out: the
//! `kid` only selects among OUR published keys, and each key admits exactly its own
//! algorithm, so `alg: none`, HMAC-with-the-public-key and foreign keys all fail
//! (RFC 8725 §2.1, §3.1).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::{crypto, keys::KeyManager};

/// The claims of our access tokens, shared with SDKs.
pub use portcullis_proto::AccessTokenClaims as AccessClaims;

/// What a first-party access token says about its user at issue time.
pub struct UserClaims {
    /// Roles.
    pub roles: Vec<String>,
    /// Space-separated permissions.
    pub scope: String,
    /// `public_metadata`, when configured.
    pub metadata: Option<serde_json::Value>,
    /// How the user signed in.
    pub amr: Vec<String>,
}

/// Whom a token is about: subject, session, client, and how the user signed in.
struct Subject<'a> {
    sub: &'a str,
    session_id: Option<&'a str>,
    client_id: Option<&'a str>,
    amr: Vec<String>,
}

/// Why a bearer token was refused. The variants map to RFC 6750 error codes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Past `exp` (plus leeway).
    #[error("the access token has expired")]
    Expired,
    /// Anything else: malformed, bad signature, wrong issuer or audience, unknown key.
    #[error("{0}")]
    Invalid(&'static str),
}

/// Signs and verifies access tokens with the node's key ring.
pub struct Tokens {
    keys: Arc<KeyManager>,
    issuer: String,
    audience: String,
    access_ttl: Duration,
    leeway: Duration,
    verified: Mutex<HashMap<[u8; 32], (String, AccessClaims)>>,
}

/// Tokens whose signature was checked, kept (by SHA-256 of the whole token) so a
/// client sending the same token again skips the signature: on RS256 that is a
/// quarter of a bearer request. Bounded: about 4 MB at most.
const VERIFIED_MAX: usize = 10_000;

impl Tokens {
    /// Binds issuer, audience and lifetimes once, from config.
    pub fn new(
        keys: Arc<KeyManager>,
        issuer: String,
        audience: String,
        access_ttl: Duration,
        leeway: Duration,
    ) -> Self {
        Self { keys, issuer, audience, access_ttl, leeway, verified: Mutex::new(HashMap::new()) }
    }

    /// The key manager, for JWKS and rotation.
    pub fn keys(&self) -> &Arc<KeyManager> {
        &self.keys
    }

    /// The `iss` of our tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Lifetime of access tokens in seconds, for `expires_in`.
    pub fn access_ttl_secs(&self) -> u64 {
        self.access_ttl.as_secs()
    }

    /// Issues an access token for a user's session.
    pub fn issue(&self, user_id: &str, session_id: &str, claims: UserClaims, now_ms: i64) -> anyhow::Result<String> {
        let sub = Subject { sub: user_id, session_id: Some(session_id), client_id: None, amr: claims.amr };
        self.sign(sub, claims.roles, claims.scope, claims.metadata, now_ms)
    }

    /// Issues an access token to an OAuth client (RFC 9068): for a user's grant
    /// (`session_id` set, `sub` the user) or for the client itself (client
    /// credentials: `sub` is the client, no session). `claims.roles` and
    /// `claims.metadata` are for first-party (trusted) clients only.
    pub fn issue_for_client(
        &self,
        sub: &str,
        session_id: Option<&str>,
        client_id: &str,
        claims: UserClaims,
        now_ms: i64,
    ) -> anyhow::Result<String> {
        let who = Subject { sub, session_id, client_id: Some(client_id), amr: claims.amr };
        self.sign(who, claims.roles, claims.scope, claims.metadata, now_ms)
    }

    fn sign(
        &self,
        who: Subject<'_>,
        roles: Vec<String>,
        scope: String,
        metadata: Option<serde_json::Value>,
        now_ms: i64,
    ) -> anyhow::Result<String> {
        let ring = self.keys.ring();
        let signer = ring.signer().ok_or_else(|| anyhow::anyhow!("no active signing key"))?;
        let now = now_ms / 1000;
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: who.sub.to_owned(),
            aud: self.audience.clone(),
            exp: now + i64::try_from(self.access_ttl.as_secs())?,
            iat: now,
            nbf: now,
            jti: crypto::b64url(&crypto::random_bytes::<16>()),
            sid: who.session_id.map(str::to_owned),
            client_id: who.client_id.map(str::to_owned),
            roles,
            scope,
            amr: who.amr,
            metadata,
        };
        signer.sign_access_token(&claims)
    }

    /// Signs an OpenID Connect ID token (`typ: JWT`) with the current key; returns
    /// the token and the algorithm, which decides how `at_hash` is computed.
    pub fn sign_id_token(&self, claims: &portcullis_proto::IdTokenClaims) -> anyhow::Result<String> {
        let ring = self.keys.ring();
        let signer = ring.signer().ok_or_else(|| anyhow::anyhow!("no active signing key"))?;
        signer.sign_jwt("JWT", claims)
    }

    /// The algorithm of the key that signs now, for `at_hash`.
    pub fn signing_alg(&self) -> Option<crate::keys::Algorithm> {
        self.keys.ring().signer().map(|s| s.alg())
    }

    /// Checks an ID token we issued (for `id_token_hint`): signature, `typ`,
    /// issuer; expiry is ignored, as OpenID RP-initiated logout allows. Returns the
    /// claims.
    pub async fn verify_id_token_hint(&self, token: &str) -> Option<portcullis_proto::IdTokenClaims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.typ.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("at+jwt")) {
            return None;
        }
        let kid = header.kid.as_deref()?;
        let ring = self.keys.ring();
        let verifier = ring.verifier(kid)?;
        if header.alg != verifier.alg {
            return None;
        }
        let mut validation = jsonwebtoken::Validation::new(verifier.alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["iss", "sub", "aud"]);
        jsonwebtoken::decode::<portcullis_proto::IdTokenClaims>(token, &verifier.key, &validation)
            .ok()
            .map(|d| d.claims)
    }

    /// Checks signature, type, algorithm, issuer, audience and time claims.
    /// Revocation (has the session ended?) is the caller's next step.
    pub async fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid("malformed token"))?;
        // Explicit typing keeps ID tokens and other JWTs from passing as access
        // tokens (RFC 8725 §3.11, RFC 9068 §4).
        if !header.typ.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("at+jwt")) {
            return Err(TokenError::Invalid("not an access token"));
        }
        let kid = header.kid.as_deref().ok_or(TokenError::Invalid("token has no key id"))?;
        // The same bytes verified before, still in their time window, signed by a key
        // we still publish: the same answer as verifying again.
        let digest = crypto::sha256(token);
        let now = crate::clock::now_ms() / 1000;
        let leeway = i64::try_from(self.leeway.as_secs()).unwrap_or(0);
        if let Some((seen_kid, claims)) = self.verified.lock().ok().and_then(|m| m.get(&digest).cloned())
            && claims.exp + leeway > now
            && claims.nbf - leeway <= now
            && self.keys.ring().verifier(&seen_kid).is_some()
        {
            return Ok(claims);
        }
        let mut ring = self.keys.ring();
        if ring.verifier(kid).is_none() && self.keys.reload_for_unknown_kid().await {
            ring = self.keys.ring();
        }
        let verifier = ring.verifier(kid).ok_or(TokenError::Invalid("unknown signing key"))?;
        if header.alg != verifier.alg {
            return Err(TokenError::Invalid("algorithm not allowed for this key"));
        }
        let mut validation = jsonwebtoken::Validation::new(verifier.alg);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        match jsonwebtoken::decode::<AccessClaims>(token, &verifier.key, &validation) {
            Ok(data) => {
                if let Ok(mut m) = self.verified.lock() {
                    if m.len() >= VERIFIED_MAX {
                        m.retain(|_, (_, c)| c.exp + leeway > now);
                        if m.len() >= VERIFIED_MAX {
                            m.clear();
                        }
                    }
                    m.insert(digest, (kid.to_owned(), data.claims.clone()));
                }
                Ok(data.claims)
            }
            Err(e) => Err(match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => TokenError::Invalid("token not yet valid"),
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => TokenError::Invalid("wrong issuer"),
                jsonwebtoken::errors::ErrorKind::InvalidAudience => TokenError::Invalid("wrong audience"),
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::Invalid("bad signature"),
                _ => TokenError::Invalid("invalid token"),
            }),
        }
    }
}
