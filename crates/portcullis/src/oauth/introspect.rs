//! Token introspection (RFC 7662) for our access tokens, refresh tokens and `pcl_`
//! API keys, and revocation (RFC 7009). Both need an authenticated client.
//!
//! A token is active only if everything that could have ended it agrees: signature
//! and expiry, its session (grant) still live, its user not banned, its client
//! still registered. Anything else is `{"active": false}` and nothing more: the
//! answer never says why. A client sees only the tokens issued to itself, unless it
//! is registered as a resource server (`introspection: true`): otherwise any client
//! could learn who holds any first-party token or API key.

use portcullis_proto::IntrospectionResponse;

use super::{OAuth, OAuthError, Presented};
use crate::{crypto, crypto::Secret, ctx::RequestCtx, events};

/// The reason recorded, and announced, for a session a client revoked (RFC 7009).
const REVOKED_BY_CLIENT: &str = "revoked_by_client";

fn inactive() -> IntrospectionResponse {
    IntrospectionResponse::default()
}

impl OAuth {
    /// Answers an introspection request.
    pub async fn introspect(
        &self,
        ctx: &RequestCtx,
        presented: Presented,
        token: Option<Secret>,
    ) -> Result<IntrospectionResponse, OAuthError> {
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
                Ok(grant) => IntrospectionResponse {
                    active: true,
                    token_type: Some("api_key".into()),
                    sub: Some(grant.key.owner_id.clone()),
                    scope: Some(grant.effective_scopes.join(" ")),
                    iat: Some(grant.key.created_at / 1000),
                    exp: grant.key.expires_at.map(|e| e / 1000),
                    iss: Some(self.settings.issuer.clone()),
                    ..inactive()
                },
                Err(_) => inactive(),
            });
        }
        if token.matches('.').count() == 2 {
            return self.introspect_access(ctx, token, may_see).await;
        }
        self.introspect_refresh(ctx, token, may_see).await
    }

    /// An access token: the same check as a bearer request (live session, user not
    /// banned, client and owner still standing); the scope is what it allows NOW.
    async fn introspect_access(
        &self,
        ctx: &RequestCtx,
        token: &str,
        may_see: impl Fn(Option<&str>) -> bool,
    ) -> Result<IntrospectionResponse, OAuthError> {
        let Ok(claims) = self.tokens.verify(token).await else {
            return Ok(inactive());
        };
        if !may_see(claims.client_id.as_deref()) {
            return Ok(inactive());
        }
        let Ok(who) = self.auth.authenticate(token, ctx.now).await else {
            return Ok(inactive());
        };
        Ok(IntrospectionResponse {
            active: true,
            token_type: Some("Bearer".into()),
            scope: Some(who.scopes().join(" ")),
            client_id: claims.client_id,
            sub: Some(claims.sub),
            aud: Some(claims.aud),
            iss: Some(claims.iss),
            exp: Some(claims.exp),
            iat: Some(claims.iat),
            nbf: Some(claims.nbf),
            jti: Some(claims.jti),
        })
    }

    /// A refresh token: active while its grant lives and its user may sign in; the
    /// scope is what the grant allows now, as the next refresh would issue it.
    async fn introspect_refresh(
        &self,
        ctx: &RequestCtx,
        token: &str,
        may_see: impl Fn(Option<&str>) -> bool,
    ) -> Result<IntrospectionResponse, OAuthError> {
        let Some((session, expires_at)) = self.db.refresh_session(&crypto::sha256_b64(token), ctx.now).await? else {
            return Ok(inactive());
        };
        if !may_see(session.client_id.as_deref()) {
            return Ok(inactive());
        }
        let Some(user) = self.db.user_by_live_session(&session.id, ctx.now).await? else {
            return Ok(inactive());
        };
        let scope = match (&session.scope, &session.client_id) {
            (Some(granted), Some(client_id)) => {
                let Some(client) = self.clients.get(client_id).await? else {
                    return Ok(inactive());
                };
                let held = self.db.role_permissions(&user.roles).await?;
                let now: Vec<String> = crate::oauth::scope_list(granted)
                    .into_iter()
                    .filter(|s| crate::clients::grant_allows(&client.meta, &held, s))
                    .collect();
                Some(now.join(" "))
            }
            _ => None,
        };
        Ok(IntrospectionResponse {
            active: true,
            token_type: Some("refresh_token".into()),
            scope,
            client_id: session.client_id,
            sub: Some(session.user_id),
            iss: Some(self.settings.issuer.clone()),
            exp: Some(expires_at / 1000),
            iat: Some(session.last_active_at / 1000),
            ..inactive()
        })
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
        let Some(sid) = session else { return Ok(()) };
        // The app signing its user out: the user's own end, announced with it.
        let mut tx = self.db.write().await?;
        if let Some(ended) = tx.session_end(&sid, None, REVOKED_BY_CLIENT, ctx.now).await? {
            events::emit_sessions(&mut tx, "session.ended", &[ended], REVOKED_BY_CLIENT, ctx.now).await?;
            tx.commit().await?;
            self.audit(ctx, "oauth_revoke", true, None, caller.id(), None).await;
        }
        Ok(())
    }
}
