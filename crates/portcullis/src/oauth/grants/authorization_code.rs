//! The authorization code grant (RFC 6749 §4.1.3): the code is spent in ONE
//! conditional update that also checks its client, redirect URI and PKCE verifier
//! (RFC 7636 §4.6); a replayed code revokes the grant it issued (§4.1.2).

use super::{Granted, TokenRequest, pkce_matches, pkce_well_formed};
use crate::{
    clients::Client,
    crypto::{self, Secret},
    ctx::RequestCtx,
    oauth::{OAuth, OAuthError, id_token::IdTokenFacts, scope_list},
    store::{CodeExchange, CodeRow, SessionRow},
};

impl OAuth {
    /// Spends the code and issues the grant's tokens.
    pub(super) async fn grant_code(
        &self,
        ctx: &RequestCtx,
        client: &Client,
        req: TokenRequest,
    ) -> Result<Granted, OAuthError> {
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
            .code_exchange(
                &crypto::sha256_b64(code.expose()),
                client.id(),
                ctx.now,
                |c: &CodeRow| {
                    check_code(c, client, &redirect_uri, verifier.as_ref())?;
                    offline = offline_ok && scope_list(&c.scope).iter().any(|s| s == "offline_access");
                    let ttl = if offline { refresh_ms } else { access_ms };
                    let session = SessionRow {
                        id: session_id.clone(),
                        client_id: Some(c.client_id.clone()),
                        scope: Some(c.scope.clone()),
                        auth_time: Some(c.auth_time),
                        amr: Some(c.amr.clone()),
                        ..SessionRow::opened(&c.user_id, ctx.now, ttl, ctx.ip.clone(), ctx.user_agent.clone())
                    };
                    Ok((session, offline.then(|| crypto::sha256_b64(&refresh))))
                },
                |s: &SessionRow, ended: Option<&str>| {
                    // A replay revokes the grant's session (theft detection).
                    let event_type = if ended.is_some() { "session.revoked" } else { "session.created" };
                    let data = crate::events::session_data(s, ended);
                    (s.expires_at > ctx.now)
                        .then(|| (event_type, crate::events::Event::new(event_type, data, ctx.now).payload()))
                },
            )
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
        // The code's scope as the grant still allows it: a permission lost since the
        // consent (a minute at most) is not issued.
        let perms = self.db.role_permissions(&user.roles).await?;
        let scopes: Vec<String> = scope_list(&code.scope)
            .into_iter()
            .filter(|s| crate::clients::grant_allows(&client.meta, &perms, s))
            .collect();
        let scope = scopes.join(" ");
        let amr = crate::auth::amr_values(Some(&code.amr));
        let claims = self.user_claims(client, &user, scope.clone(), amr.clone());
        let access_token = self.tokens.issue_for_client(&user.id, Some(&session_id), client.id(), claims, ctx.now)?;
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
        Ok(Granted {
            access_token,
            expires_in: self.tokens.access_ttl_secs(),
            refresh_token: offline.then(|| Secret::new(refresh)),
            id_token,
            scope,
        })
    }
}

/// Whether a request may spend code `c`: issued to this client, with the same
/// redirect URI (RFC 6749 §4.1.3) and a verifier matching its challenge (RFC 7636
/// §4.6). A verifier without a challenge is a downgrade and refused too.
fn check_code(c: &CodeRow, client: &Client, redirect_uri: &str, verifier: Option<&Secret>) -> Result<(), &'static str> {
    if c.client_id != client.id() {
        return Err("the code was issued to another client");
    }
    // The request's redirect URI must come back; when the request named none (the
    // client's only one was used), any registered one or none.
    let redirect_ok = if c.redirect_uri.is_empty() {
        redirect_uri.is_empty() || client.meta.redirect_uris.iter().any(|r| r == redirect_uri)
    } else {
        crypto::ct_eq(c.redirect_uri.as_bytes(), redirect_uri.as_bytes())
    };
    if !redirect_ok {
        return Err("redirect_uri does not match the authorization request");
    }
    match (&c.code_challenge, verifier) {
        (Some(_), None) => Err("code_verifier is required"),
        (Some(ch), Some(v)) if !pkce_matches(v.expose(), ch) => Err("code_verifier does not match"),
        (None, Some(_)) => Err("the authorization request had no code_challenge"),
        _ => Ok(()),
    }
}
