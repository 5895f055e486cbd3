//! Refresh-token rotation with reuse detection (OAuth 2.0 Security BCP, RFC 9700
//! §4.14.2): every refresh spends the presented token and issues a new one; a spent
//! token presented again means two parties hold it, so the whole account's sessions
//! end and the event is audited.

use super::{Auth, AuthError, Issued};
use crate::ctx::RequestCtx;
use crate::{
    audit::Event,
    crypto::{self, Secret},
    events,
    mail::Template,
    store::{RefreshOutcome, SessionRow},
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
        match self.rotate_refresh(ctx, token, Reuse::EndsAccount).await? {
            Rotation::Rotated { session, next } => {
                let Some(user) = self.db.user_by_id(&session.user_id).await? else {
                    return Err(TokenError::Invalid("the account no longer exists").into());
                };
                if user.banned_at.is_some() {
                    self.audit(ctx, "refresh", false, Some(&user.id), Some("banned")).await;
                    return Err(TokenError::Invalid("the account is banned").into());
                }
                // Roles are read afresh: a refresh picks up role changes.
                let access_token = self.access_token(&user, &session, ctx.now).await?;
                self.audit(ctx, "refresh", true, Some(&user.id), None).await;
                Ok(Issued { access_token, refresh_token: next, expires_in: self.tokens.access_ttl_secs(), user })
            }
            Rotation::Reused => Err(AuthError::RefreshReused),
            Rotation::SessionEnded => {
                self.audit(ctx, "refresh", false, None, Some("session_ended")).await;
                Err(TokenError::Invalid("the session of this refresh token has ended").into())
            }
            Rotation::Invalid => {
                self.audit(ctx, "refresh", false, None, Some("invalid_token")).await;
                Err(TokenError::Invalid("the refresh token is invalid or expired").into())
            }
        }
    }

    /// Spends `token` and issues the next one (the store's one-statement rotation);
    /// a spent token presented again is reuse, and `reuse` says what it ends. Both
    /// refresh paths, first-party and OAuth, go through here.
    pub async fn rotate_refresh(
        &self,
        ctx: &RequestCtx,
        token: &Secret,
        reuse: Reuse<'_>,
    ) -> Result<Rotation, AuthError> {
        let next = crypto::b64url(&crypto::random_bytes::<32>());
        let party = match reuse {
            Reuse::EndsAccount => None,
            Reuse::EndsClientGrants(client) => Some(client),
        };
        let outcome = self
            .db
            .refresh_rotate(&crypto::sha256_b64(token.expose()), &crypto::sha256_b64(&next), party, ctx.now)
            .await?;
        Ok(match outcome {
            RefreshOutcome::Rotated(session) => {
                Rotation::Rotated { session: Box::new(session), next: Secret::new(next) }
            }
            RefreshOutcome::Reused { user_id, session_id } => {
                self.reused(ctx, &user_id, &session_id, reuse).await?;
                Rotation::Reused
            }
            RefreshOutcome::SessionEnded => Rotation::SessionEnded,
            RefreshOutcome::Invalid => Rotation::Invalid,
        })
    }

    /// Two parties hold one refresh token: end what `reuse` says, and record it.
    async fn reused(
        &self,
        ctx: &RequestCtx,
        user_id: &str,
        session_id: &str,
        reuse: Reuse<'_>,
    ) -> Result<(), AuthError> {
        let reason = Some("refresh_token_reused");
        match reuse {
            Reuse::EndsAccount => {
                // Every session, and the API keys minted from them (a thief's
                // lasting foothold).
                // One commit: the sessions and keys ended, and the owner told.
                let user = self.db.user_by_id(user_id).await?;
                let mut tx = self.db.write().await?;
                let (ended, revoked_keys) = tx.sessions_revoke_stolen(user_id, "refresh_token_reused", ctx.now).await?;
                let keys = revoked_keys.len();
                let data = serde_json::json!({"session_id": session_id, "sessions_revoked": ended.len(),
                    "api_keys_revoked": keys});
                events::emit_about(&mut tx, "refresh_token.reused", user_id, data, ctx.now).await?;
                events::emit_sessions(&mut tx, "session.revoked", &ended, "refresh_token_reused", ctx.now).await?;
                for key in &revoked_keys {
                    events::emit(&mut tx, "api_key.revoked", events::api_key_data(key), ctx.now).await?;
                }
                let ended = ended.len();
                // A change of address the thief may have asked for goes too.
                tx.email_tokens_retire(user_id, crate::store::Purpose::ChangeEmail, ctx.now).await?;
                if let Some(user) = &user {
                    self.queue_notice(&mut tx, user, Template::SignedOutEverywhere, ctx.now).await?;
                }
                tx.commit().await?;
                tracing::warn!(user_id = %user_id, session_id = %session_id, sessions_ended = ended,
                    api_keys_revoked = keys, "refresh token reuse detected; all sessions of the user ended");
                self.audit(ctx, "refresh_reuse", false, Some(user_id), reason).await;
                if keys > 0 {
                    let why = format!("{keys} created from the ended sessions (refresh_token_reused)");
                    self.audit(ctx, "api_keys_revoked", true, Some(user_id), Some(&why)).await;
                }
            }
            Reuse::EndsClientGrants(client) => {
                // The grant's token family is compromised: every grant of this user
                // to this client ends, not their other sessions (a client's bug or
                // breach must not sign the user out of everything else).
                let mut tx = self.db.write().await?;
                let ended = tx.sessions_revoke_client(user_id, client, "refresh_token_reused", ctx.now).await?;
                let data = serde_json::json!({"session_id": session_id, "client_id": client,
                    "sessions_revoked": ended.len(), "api_keys_revoked": 0});
                events::emit_about(&mut tx, "refresh_token.reused", user_id, data, ctx.now).await?;
                events::emit_sessions(&mut tx, "session.revoked", &ended, "refresh_token_reused", ctx.now).await?;
                tx.commit().await?;
                let ended = ended.len();
                tracing::warn!(client_id = %client, user_id = %user_id, grants_ended = ended,
                    "OAuth refresh token reuse detected");
                let event = Event {
                    kind: "refresh_reuse",
                    success: false,
                    user_id: Some(user_id),
                    actor: Some(client),
                    reason,
                };
                self.audit.record(ctx, event).await;
            }
        }
        Ok(())
    }
}

/// What a reused refresh token ends.
#[derive(Debug, Clone, Copy)]
pub enum Reuse<'a> {
    /// A first-party token: every session of the account and the API keys minted
    /// from them.
    EndsAccount,
    /// A token of this OAuth client: every grant of the user to it.
    EndsClientGrants(&'a str),
}

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum Rotation {
    /// Spent; `next` replaces it.
    Rotated {
        /// The session (grant), as it stands.
        session: Box<SessionRow>,
        /// The new refresh token, shown to the client once.
        next: Secret,
    },
    /// It was spent already: what it belonged to has been ended.
    Reused,
    /// Its session has ended.
    SessionEnded,
    /// Unknown, expired, or another party's.
    Invalid,
}
