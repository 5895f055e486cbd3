//! The refresh token grant (RFC 6749 §6): the rotation and its reuse detection
//! are `Auth::rotate_refresh`, shared with `/v1/auth/refresh`; a reuse here ends
//! every grant of the user to this client only. A refresh may narrow the scope,
//! never widen it, and drops what the user or the client lost.

use super::{Granted, TokenRequest};
use crate::{
    auth::{AuthError, Reuse, Rotation},
    clients::Client,
    ctx::RequestCtx,
    oauth::{OAuth, OAuthError, id_token::IdTokenFacts, scope_list},
};

impl OAuth {
    /// [`Self::grant_refresh`] under the per-address limit of failed refreshes
    /// (`security.refresh_failure_rate`), shared with `/v1/auth/refresh`.
    pub(super) async fn grant_refresh_limited(
        &self,
        ctx: &RequestCtx,
        client: &Client,
        req: TokenRequest,
    ) -> Result<Granted, OAuthError> {
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

    async fn grant_refresh(&self, ctx: &RequestCtx, client: &Client, req: TokenRequest) -> Result<Granted, OAuthError> {
        let token = req.refresh_token.ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
        let rotated =
            self.auth.rotate_refresh(ctx, &token, Reuse::EndsClientGrants(client.id())).await.map_err(|e| match e {
                AuthError::Validation(_) => {
                    OAuthError::invalid_request("the request contains characters that cannot be stored")
                }
                other => OAuthError::server_error(&other.to_string()),
            })?;
        let (session, next) = match rotated {
            Rotation::Rotated { session, next } => (session, next),
            Rotation::Reused => {
                return Err(OAuthError::invalid_grant("the refresh token was already used; this grant is revoked"));
            }
            Rotation::SessionEnded | Rotation::Invalid => {
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
        let scopes: Vec<String> =
            scopes.into_iter().filter(|s| crate::clients::grant_allows(&client.meta, &perms, s)).collect();
        let scope = scopes.join(" ");
        let amr = crate::auth::amr_values(session.amr.as_deref());
        let claims = self.user_claims(client, &user, scope.clone(), amr.clone());
        let access_token = self.tokens.issue_for_client(&user.id, Some(&session.id), client.id(), claims, ctx.now)?;
        let id_token = self.id_token_if_openid(
            &user,
            IdTokenFacts {
                client_id: client.id(),
                auth_time: session.auth_time,
                nonce: None,
                amr,
                access_token: &access_token,
                scopes: &scopes,
            },
            ctx.now,
        )?;
        self.audit(ctx, "oauth_token", true, Some(&user.id), client.id(), Some("refresh_token")).await;
        Ok(Granted {
            access_token,
            expires_in: self.tokens.access_ttl_secs(),
            refresh_token: Some(next),
            id_token,
            scope,
        })
    }
}
