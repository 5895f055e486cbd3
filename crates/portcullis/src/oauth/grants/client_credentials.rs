//! The client credentials grant (RFC 6749 §4.4): a client's own tokens, bounded by
//! what its owner holds now.

use super::{Granted, TokenRequest};
use crate::{
    clients::Client,
    ctx::RequestCtx,
    oauth::{OAuth, OAuthError, scope_list},
};

impl OAuth {
    /// RFC 6749 §4.4. The client's own tokens carry the scopes it is registered
    /// for AND its owner holds now; an owner who is banned or deleted takes the
    /// client's grants down (`invalid_client`), as a key dies with its owner.
    pub(super) async fn grant_client_credentials(
        &self,
        ctx: &RequestCtx,
        client: &Client,
        req: TokenRequest,
    ) -> Result<Granted, OAuthError> {
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
        let claims =
            crate::tokens::UserClaims { roles: Vec::new(), scope: scope.clone(), metadata: None, amr: Vec::new() };
        let access_token = self.tokens.issue_for_client(client.id(), None, client.id(), claims, ctx.now)?;
        Ok(Granted {
            access_token,
            expires_in: self.tokens.access_ttl_secs(),
            refresh_token: None,
            id_token: None,
            scope,
        })
    }
}
