//! Token introspection (RFC 7662) for our access tokens, refresh tokens and `pcl_`
//! API keys, and revocation (RFC 7009). Both need an authenticated client.
//!
//! A token is active only if everything that could have ended it agrees: signature
//! and expiry, its session (grant) still live, its user not banned, its client
//! still registered. Anything else is `{"active": false}` and nothing more: the
//! answer never says why. A client sees only the tokens issued to itself, unless it
//! is registered as a resource server (`introspection: true`): otherwise any client
//! could learn who holds any first-party token or API key.

use serde_json::{Value, json};

use super::{OAuth, OAuthError, Presented, put};
use crate::{crypto, crypto::Secret, ctx::RequestCtx};

fn inactive() -> Value {
    json!({"active": false})
}

impl OAuth {
    /// Answers an introspection request.
    pub async fn introspect(
        &self,
        ctx: &RequestCtx,
        presented: Presented,
        token: Option<Secret>,
    ) -> Result<Value, OAuthError> {
        let caller = self.authenticate_client(presented, "/oauth/introspect", ctx.now).await?;
        if caller.meta.is_public() {
            return Err(OAuthError::invalid_client("public clients cannot introspect tokens"));
        }
        let token = token.ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        let token = token.expose().trim();
        if token.is_empty() || token.len() > 8192 {
            return Ok(inactive());
        }
        // A client learns about its own tokens; everyone's (first-party tokens, API
        // keys, other clients' grants) only as a resource server, marked so by
        // someone holding admin:roles:write.
        let may_see = |issued_to: Option<&str>| caller.meta.introspection || issued_to == Some(caller.id());
        if token.starts_with(crate::api_keys::PREFIX) {
            if !may_see(None) {
                return Ok(inactive());
            }
            return Ok(match self.api_keys.check(token, ctx.now).await {
                Ok(grant) => {
                    let mut out = json!({
                        "active": true,
                        "token_type": "api_key",
                        "sub": grant.key.owner_id,
                        "scope": grant.effective_scopes.join(" "),
                        "iat": grant.key.created_at / 1000,
                        "iss": self.settings.issuer,
                    });
                    if let Some(exp) = grant.key.expires_at {
                        put(&mut out, "exp", json!(exp / 1000));
                    }
                    out
                }
                Err(_) => inactive(),
            });
        }
        if token.matches('.').count() == 2 {
            let Ok(claims) = self.tokens.verify(token).await else {
                return Ok(inactive());
            };
            if !may_see(claims.client_id.as_deref()) {
                return Ok(inactive());
            }
            // The same check as a bearer request: live session, user not banned,
            // client and owner still standing; the scope is what it allows NOW.
            let Ok(who) = self.auth.authenticate(token, ctx.now).await else {
                return Ok(inactive());
            };
            let mut out = json!({
                "active": true,
                "token_type": "Bearer",
                "scope": who.scopes().join(" "),
                "sub": claims.sub,
                "aud": claims.aud,
                "iss": claims.iss,
                "exp": claims.exp,
                "iat": claims.iat,
                "nbf": claims.nbf,
                "jti": claims.jti,
            });
            if let Some(c) = claims.client_id {
                put(&mut out, "client_id", json!(c));
            }
            return Ok(out);
        }
        let Some((session, expires_at)) = self.db.refresh_session(&crypto::sha256_b64(token), ctx.now).await? else {
            return Ok(inactive());
        };
        if !may_see(session.client_id.as_deref()) {
            return Ok(inactive());
        }
        let Some(user) = self.db.user_by_live_session(&session.id, ctx.now).await? else {
            return Ok(inactive());
        };
        let mut out = json!({
            "active": true,
            "token_type": "refresh_token",
            "sub": session.user_id,
            "iss": self.settings.issuer,
            "exp": expires_at / 1000,
            "iat": session.last_active_at / 1000,
        });
        if let Some(c) = &session.client_id {
            put(&mut out, "client_id", json!(c));
        }
        if let Some(granted) = &session.scope {
            // What the grant allows now: OpenID scopes, and permissions the user
            // still holds and the client may still ask for (as a refresh would issue).
            let held = self.db.role_permissions(&user.roles).await?;
            let client = match &session.client_id {
                Some(c) => self.clients.get(c).await?,
                None => None,
            };
            let now_scope: Vec<String> = crate::oauth::scope_list(granted)
                .into_iter()
                .filter(|s| {
                    crate::clients::OIDC_SCOPES.contains(&s.as_str())
                        || (held.contains(s) && client.as_ref().is_some_and(|c| c.meta.scopes().any(|m| m == s)))
                })
                .collect();
            put(&mut out, "scope", json!(now_scope.join(" ")));
        }
        Ok(out)
    }

    /// Answers a revocation request: a refresh or access token of the calling
    /// client ends its grant (and with it every token of the grant). Tokens that are
    /// unknown, already dead or another client's are left alone and still get 200
    /// (RFC 7009 §2.2), so the answer reveals nothing.
    pub async fn revoke(
        &self,
        ctx: &RequestCtx,
        presented: Presented,
        token: Option<Secret>,
    ) -> Result<(), OAuthError> {
        let caller = self.authenticate_client(presented, "/oauth/revoke", ctx.now).await?;
        let token = token.ok_or_else(|| OAuthError::invalid_request("token is required"))?;
        let token = token.expose().trim();
        if token.is_empty() || token.len() > 8192 {
            return Ok(());
        }
        let session = if token.matches('.').count() == 2 {
            match self.tokens.verify(token).await {
                Ok(c) if c.client_id.as_deref() == Some(caller.id()) => c.sid,
                _ => None,
            }
        } else {
            match self.db.refresh_session(&crypto::sha256_b64(token), ctx.now).await? {
                Some((s, _)) if s.client_id.as_deref() == Some(caller.id()) => Some(s.id),
                _ => None,
            }
        };
        if let Some(sid) = session
            && self.db.session_end(&sid, "revoked_by_client", ctx.now).await?
        {
            self.audit(ctx, "oauth_revoke", true, None, caller.id(), None).await;
        }
        Ok(())
    }
}
