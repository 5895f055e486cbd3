//! Refresh-token rotation with reuse detection (OAuth 2.0 Security BCP, RFC 9700
//! §4.14.2): every refresh spends the presented token and issues a new one; a spent
//! token presented again means two parties hold it, so the whole account's sessions
//! end and the event is audited.

use super::{Auth, AuthError, Issued};
use crate::ctx::RequestCtx;
use crate::{
    crypto::{self, Secret},
    store::RefreshOutcome,
    tokens::TokenError,
};

impl Auth {
    /// Exchanges a refresh token for a new access and refresh token. Failures are
    /// limited per client address (`security.refresh_failure_rate`): past it, the
    /// answer comes from memory, with no lookup and no audit write.
    pub async fn refresh(&self, ctx: &RequestCtx, token: &Secret) -> Result<Issued, AuthError> {
        if let Some(secs) = self.refresh_blocked(ctx) {
            return Err(AuthError::RateLimited(secs));
        }
        let out = self.refresh_once(ctx, token).await;
        if let Err(e) = &out
            && matches!(e, AuthError::Token(_) | AuthError::RefreshReused)
            && let Some(secs) = self.refresh_failed(ctx).await
            && !matches!(e, AuthError::RefreshReused)
        {
            return Err(AuthError::RateLimited(secs));
        }
        out
    }

    async fn refresh_once(&self, ctx: &RequestCtx, token: &Secret) -> Result<Issued, AuthError> {
        let next = crypto::b64url(&crypto::random_bytes::<32>());
        let outcome = self
            .db
            .refresh_rotate(&crypto::sha256_b64(token.expose()), &crypto::sha256_b64(&next), None, ctx.now)
            .await?;
        match outcome {
            RefreshOutcome::Rotated(session) => {
                let Some(user) = self.db.user_by_id(&session.user_id).await? else {
                    return Err(TokenError::Invalid("the account no longer exists").into());
                };
                if user.banned_at.is_some() {
                    self.audit(ctx, "refresh", false, Some(&user.id), Some("banned")).await;
                    return Err(TokenError::Invalid("the account is banned").into());
                }
                // Roles are read afresh: a refresh picks up role changes.
                let access_token = self.access_token(&user, &session.id, ctx.now).await?;
                self.audit(ctx, "refresh", true, Some(&user.id), None).await;
                Ok(Issued {
                    access_token,
                    refresh_token: Secret::new(next),
                    expires_in: self.tokens.access_ttl_secs(),
                    user,
                })
            }
            RefreshOutcome::Reused { user_id, session_id } => {
                // Two parties hold the token: end every session, and the API keys
                // minted from them (a thief's lasting foothold).
                let (ended, keys) = self.db.sessions_revoke_stolen(&user_id, "refresh_token_reused", ctx.now).await?;
                tracing::warn!(user_id = %user_id, session_id = %session_id, sessions_ended = ended, api_keys_revoked = keys,
                    "refresh token reuse detected; all sessions of the user ended");
                self.audit(ctx, "refresh_reuse", false, Some(&user_id), Some("refresh_token_reused")).await;
                if keys > 0 {
                    let reason = format!("{keys} created from the ended sessions (refresh_token_reused)");
                    self.audit(ctx, "api_keys_revoked", true, Some(&user_id), Some(&reason)).await;
                }
                Err(AuthError::RefreshReused)
            }
            RefreshOutcome::SessionEnded => {
                self.audit(ctx, "refresh", false, None, Some("session_ended")).await;
                Err(TokenError::Invalid("the session of this refresh token has ended").into())
            }
            RefreshOutcome::Invalid => {
                self.audit(ctx, "refresh", false, None, Some("invalid_token")).await;
                Err(TokenError::Invalid("the refresh token is invalid or expired").into())
            }
        }
    }
}
