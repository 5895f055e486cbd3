//! The token endpoint's grants: `authorization_code` (with PKCE and single-use
//! codes), `refresh_token` (rotation with reuse detection) and
//! `client_credentials`; and the ID tokens that go with them.

use aws_lc_rs::digest;
use serde_json::{Value, json};

use super::{OAuth, OAuthError, Presented, scope_list};
use crate::clients::Client;
use crate::{
    crypto::{self, Secret},
    ctx::RequestCtx,
    keys::Algorithm,
    store::{CodeExchange, CodeRow, RefreshOutcome, SessionRow, UserRow},
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

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug)]
pub struct TokenResponse {
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

/// Left half of the hash of the access token, for `at_hash` (OIDC Core §3.1.3.6);
/// the hash follows the signing algorithm (SHA-512 for Ed25519).
fn at_hash(alg: Option<Algorithm>, access_token: &str) -> String {
    let algo = if alg == Some(Algorithm::EdDsa) { &digest::SHA512 } else { &digest::SHA256 };
    let d = digest::digest(algo, access_token.as_bytes());
    let bytes = d.as_ref();
    crypto::b64url(bytes.get(..bytes.len() / 2).unwrap_or(bytes))
}

/// Claims about the user by scope (OIDC Core §5.4), for ID tokens and userinfo.
pub fn user_claims(user: &UserRow, scopes: &[String]) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    out.insert("sub".into(), json!(user.id));
    if scopes.iter().any(|s| s == "profile") {
        if let Some(name) = &user.name {
            out.insert("name".into(), json!(name));
        }
        out.insert("updated_at".into(), json!(user.updated_at / 1000));
    }
    if scopes.iter().any(|s| s == "email") {
        out.insert("email".into(), json!(user.email));
        out.insert("email_verified".into(), json!(user.email_verified));
    }
    out
}

/// What an ID token needs beyond the user.
struct IdTokenFacts<'a> {
    client_id: &'a str,
    auth_time: Option<i64>,
    nonce: Option<&'a str>,
    amr: Vec<String>,
    access_token: &'a str,
    scopes: &'a [String],
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
    ) -> Result<TokenResponse, OAuthError> {
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

    async fn grant_code(
        &self,
        ctx: &RequestCtx,
        client: &Client,
        req: TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        let code = req.code.ok_or_else(|| OAuthError::invalid_request("code is required"))?;
        let verifier = req.code_verifier;
        if verifier.as_ref().is_some_and(|v| !pkce_well_formed(v.expose())) {
            return Err(OAuthError::invalid_request("code_verifier must be 43 to 128 unreserved characters"));
        }
        let refresh = crypto::b64url(&crypto::random_bytes::<32>());
        let redirect_uri = req.redirect_uri.unwrap_or_default();
        let offline_ok = client.meta.has_grant("refresh_token");
        let session_id = crypto::new_id("ses", ctx.now);
        let access_ms = i64::try_from(self.tokens.access_ttl_secs()).unwrap_or(3600).saturating_mul(1000);
        let refresh_ms = i64::try_from(self.settings.refresh_ttl.as_millis()).unwrap_or(i64::MAX);
        let mut offline = false;
        let outcome = self
            .db
            .code_exchange(&crypto::sha256_b64(code.expose()), client.id(), ctx.now, |c: &CodeRow| {
                if c.client_id != client.id() {
                    return Err("the code was issued to another client");
                }
                // The request's redirect URI must come back; when the request named
                // none (the client's only one was used), any registered one or none.
                let redirect_ok = if c.redirect_uri.is_empty() {
                    redirect_uri.is_empty() || client.meta.redirect_uris.contains(&redirect_uri)
                } else {
                    crypto::ct_eq(c.redirect_uri.as_bytes(), redirect_uri.as_bytes())
                };
                if !redirect_ok {
                    return Err("redirect_uri does not match the authorization request");
                }
                match (&c.code_challenge, &verifier) {
                    (Some(_), None) => return Err("code_verifier is required"),
                    (Some(ch), Some(v)) if !pkce_matches(v.expose(), ch) => return Err("code_verifier does not match"),
                    (None, Some(_)) => return Err("the authorization request had no code_challenge"),
                    _ => {}
                }
                offline = offline_ok && scope_list(&c.scope).iter().any(|s| s == "offline_access");
                let ttl = if offline { refresh_ms } else { access_ms };
                let session = SessionRow {
                    id: session_id.clone(),
                    client_id: Some(c.client_id.clone()),
                    scope: Some(c.scope.clone()),
                    auth_time: Some(c.auth_time),
                    ..SessionRow::opened(&c.user_id, ctx.now, ttl, ctx.ip.clone(), ctx.user_agent.clone())
                };
                Ok((session, offline.then(|| crypto::sha256_b64(&refresh))))
            })
            .await?;
        let code = match outcome {
            CodeExchange::Issued(code) => code,
            CodeExchange::Refused(why) => {
                self.audit(ctx, "oauth_code", false, None, client.id(), Some(why)).await;
                return Err(OAuthError::invalid_grant(why));
            }
            CodeExchange::Replayed { user_id, client_id } => {
                tracing::warn!(client_id = %client_id, "authorization code replayed; the tokens it issued are revoked");
                self.audit(ctx, "oauth_code_replay", false, Some(&user_id), &client_id, Some("code_replayed")).await;
                return Err(OAuthError::invalid_grant(
                    "the code was already used; the tokens issued with it are revoked",
                ));
            }
            CodeExchange::Invalid => {
                return Err(OAuthError::invalid_grant("the code is invalid or expired"));
            }
        };
        let user = self.live_user(&code.user_id).await?;
        // The code's scope as the user may still grant it: a permission lost since
        // the consent (a minute at most) is not issued.
        let perms = self.db.role_permissions(&user.roles).await?;
        let scopes: Vec<String> = scope_list(&code.scope)
            .into_iter()
            .filter(|s| crate::clients::OIDC_SCOPES.contains(&s.as_str()) || perms.contains(s))
            .collect();
        let scope = scopes.join(" ");
        let access_token =
            self.tokens.issue_for_client(&user.id, Some(&session_id), client.id(), scope.clone(), ctx.now)?;
        let amr: Vec<String> = serde_json::from_str(&code.amr).unwrap_or_default();
        let id_token = self.id_token_if_openid(
            &user,
            IdTokenFacts {
                client_id: client.id(),
                auth_time: Some(code.auth_time),
                nonce: code.nonce.as_deref(),
                amr,
                access_token: &access_token,
                scopes: &scopes,
            },
            ctx.now,
        )?;
        self.audit(ctx, "oauth_token", true, Some(&user.id), client.id(), Some("authorization_code")).await;
        Ok(TokenResponse {
            access_token,
            expires_in: self.tokens.access_ttl_secs(),
            refresh_token: offline.then(|| Secret::new(refresh)),
            id_token,
            scope,
        })
    }

    /// [`Self::grant_refresh`] under the per-address limit of failed refreshes
    /// (`security.refresh_failure_rate`), shared with `/v1/auth/refresh`.
    async fn grant_refresh_limited(
        &self,
        ctx: &RequestCtx,
        client: &Client,
        req: TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        let over = |secs| {
            OAuthError::too_many(
                "invalid_grant",
                format!("too many failed refreshes from this address; retry in {secs} s"),
                secs,
            )
        };
        if let Some(secs) = self.auth.refresh_blocked(ctx) {
            return Err(over(secs));
        }
        let out = self.grant_refresh(ctx, client, req).await;
        if let Err(e) = &out
            && e.error == "invalid_grant"
            && let Some(secs) = self.auth.refresh_failed(ctx).await
        {
            return Err(over(secs));
        }
        out
    }

    async fn grant_refresh(
        &self,
        ctx: &RequestCtx,
        client: &Client,
        req: TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        let token = req.refresh_token.ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
        let next = crypto::b64url(&crypto::random_bytes::<32>());
        let outcome = self
            .db
            .refresh_rotate(&crypto::sha256_b64(token.expose()), &crypto::sha256_b64(&next), Some(client.id()), ctx.now)
            .await?;
        let session = match outcome {
            RefreshOutcome::Rotated(s) => s,
            RefreshOutcome::Reused { user_id, .. } => {
                // The grant's token family is compromised: end every grant of this
                // user to this client (not their other sessions: a client's bug or
                // breach must not sign the user out of everything else).
                let ended =
                    self.db.sessions_revoke_client(&user_id, client.id(), "refresh_token_reused", ctx.now).await?;
                tracing::warn!(client_id = %client.id(), user_id = %user_id, grants_ended = ended,
                    "OAuth refresh token reuse detected");
                self.audit(ctx, "refresh_reuse", false, Some(&user_id), client.id(), Some("refresh_token_reused"))
                    .await;
                return Err(OAuthError::invalid_grant("the refresh token was already used; this grant is revoked"));
            }
            RefreshOutcome::SessionEnded | RefreshOutcome::Invalid => {
                return Err(OAuthError::invalid_grant("the refresh token is invalid, expired or revoked"));
            }
        };
        let granted = scope_list(session.scope.as_deref().unwrap_or_default());
        // A refresh may narrow the scope of the new access token, never widen it
        // (RFC 6749 §6); the grant itself keeps its scope.
        let scopes = match req.scope.as_deref().map(scope_list) {
            Some(asked) if !asked.is_empty() => {
                if let Some(extra) = asked.iter().find(|s| !granted.contains(s)) {
                    return Err(OAuthError::invalid_scope(format!("scope {extra:?} was not granted")));
                }
                asked
            }
            _ => granted,
        };
        let user = self.live_user(&session.user_id).await?;
        // What the grant still allows NOW: a permission taken from the user, or a
        // scope taken from the client, leaves the next access token.
        let perms = self.db.role_permissions(&user.roles).await?;
        let scopes: Vec<String> = scopes
            .into_iter()
            .filter(|s| {
                let oidc = crate::clients::OIDC_SCOPES.contains(&s.as_str());
                client.meta.scopes().any(|c| c == s)
                    && (oidc || perms.iter().any(|p| p == s))
                    && (s != "offline_access" || client.meta.has_grant("refresh_token"))
            })
            .collect();
        let scope = scopes.join(" ");
        let access_token =
            self.tokens.issue_for_client(&user.id, Some(&session.id), client.id(), scope.clone(), ctx.now)?;
        let id_token = self.id_token_if_openid(
            &user,
            IdTokenFacts {
                client_id: client.id(),
                auth_time: session.auth_time,
                nonce: None,
                amr: Vec::new(),
                access_token: &access_token,
                scopes: &scopes,
            },
            ctx.now,
        )?;
        self.audit(ctx, "oauth_token", true, Some(&user.id), client.id(), Some("refresh_token")).await;
        Ok(TokenResponse {
            access_token,
            expires_in: self.tokens.access_ttl_secs(),
            refresh_token: Some(Secret::new(next)),
            id_token,
            scope,
        })
    }

    /// RFC 6749 §4.4. The client's own tokens carry the scopes it is registered
    /// for AND its owner holds now; an owner who is banned or deleted takes the
    /// client's grants down (`invalid_client`), as a key dies with its owner.
    async fn grant_client_credentials(
        &self,
        ctx: &RequestCtx,
        client: &Client,
        req: TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        let allowed: Vec<&str> = client.meta.scopes().filter(|s| !crate::clients::OIDC_SCOPES.contains(s)).collect();
        let asked = req.scope.as_deref().map(scope_list).filter(|a| !a.is_empty());
        if let Some(extra) = asked.iter().flatten().find(|s| !allowed.contains(&s.as_str())) {
            return Err(OAuthError::invalid_scope(format!(
                "scope {extra:?} is not allowed for this client's own tokens"
            )));
        }
        let owner = self.clients.owner(&client.row.owner).await?;
        let wanted: Vec<&str> = match &asked {
            Some(asked) => asked.iter().map(String::as_str).collect(),
            None => allowed.clone(),
        };
        let Some(scopes) = owner.bound(wanted.iter().copied()) else {
            let why = owner.refusal().unwrap_or("owner_cannot_act");
            self.audit(ctx, "oauth_token", false, None, client.id(), Some(why)).await;
            return Err(OAuthError::invalid_client("the client's owner can no longer act (banned or deleted)"));
        };
        if scopes.is_empty() && !wanted.is_empty() {
            self.audit(ctx, "oauth_token", false, None, client.id(), Some("owner_lacks_scope")).await;
            return Err(OAuthError::invalid_scope("the client's owner no longer holds the requested scope"));
        }
        let scope = scopes.join(" ");
        let access_token = self.tokens.issue_for_client(client.id(), None, client.id(), scope.clone(), ctx.now)?;
        Ok(TokenResponse {
            access_token,
            expires_in: self.tokens.access_ttl_secs(),
            refresh_token: None,
            id_token: None,
            scope,
        })
    }

    /// The user of a grant, if they may still get tokens.
    async fn live_user(&self, user_id: &str) -> Result<UserRow, OAuthError> {
        match self.db.user_by_id(user_id).await? {
            Some(u) if u.banned_at.is_none() => Ok(u),
            _ => Err(OAuthError::invalid_grant("the account is gone or banned")),
        }
    }

    fn id_token_if_openid(
        &self,
        user: &UserRow,
        f: IdTokenFacts<'_>,
        now_ms: i64,
    ) -> Result<Option<String>, OAuthError> {
        if !f.scopes.iter().any(|s| s == "openid") {
            return Ok(None);
        }
        let now = now_ms / 1000;
        let mut claims = user_claims(user, f.scopes);
        claims.insert("iss".into(), json!(self.settings.issuer));
        claims.insert("aud".into(), json!(f.client_id));
        claims.insert("azp".into(), json!(f.client_id));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + i64::try_from(self.tokens.access_ttl_secs()).unwrap_or(900)));
        claims.insert("at_hash".into(), json!(at_hash(self.tokens.signing_alg(), f.access_token)));
        if let Some(t) = f.auth_time {
            claims.insert("auth_time".into(), json!(t / 1000));
        }
        if let Some(n) = f.nonce {
            claims.insert("nonce".into(), json!(n));
        }
        if !f.amr.is_empty() {
            claims.insert("amr".into(), json!(f.amr));
        }
        Ok(Some(self.tokens.sign_id_token(&Value::Object(claims))?))
    }
}

fn grant_label(grant: &str) -> &'static str {
    match grant {
        "authorization_code" => "authorization_code",
        "refresh_token" => "refresh_token",
        _ => "client_credentials",
    }
}
