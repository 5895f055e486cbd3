//! Browser sessions of the hosted pages: a sign-in (or sign-up) through the same
//! password gate as the JSON API opens a session found again by the SHA-256 of an
//! opaque cookie. The session shows up in the user's session list and ends like any
//! other.

use super::{
    Auth, AuthError,
    login::{FirstFactor, Method},
    mfa::{Pending, Proof, SignIn},
};
use crate::ctx::RequestCtx;
use crate::{
    crypto::{self, Secret},
    store::{SessionRow, UserRow},
};

/// A signed-in browser: the session and its user (with roles).
#[derive(Debug, Clone)]
pub struct BrowserSession {
    /// The session.
    pub session: SessionRow,
    /// Its user.
    pub user: UserRow,
}

impl Auth {
    /// Signs a browser in with email and password; returns the session and the
    /// cookie value (shown once, stored as a hash).
    pub async fn browser_sign_in(
        &self,
        ctx: &RequestCtx,
        email: &str,
        password: Secret,
    ) -> Result<SignIn<(BrowserSession, Secret)>, AuthError> {
        let factor = self.password_sign_in(ctx, email, password).await?;
        match self.second_step(ctx, &factor, Pending::Page, None).await? {
            Some(c) => Ok(self.challenged(ctx, &factor, c).await),
            None => Ok(SignIn::Done(self.complete_browser_sign_in(ctx, factor).await?)),
        }
    }

    /// Finishes a hosted-page sign-in with its second factor.
    pub async fn browser_mfa(
        &self,
        ctx: &RequestCtx,
        token: &Secret,
        proof: Proof,
    ) -> Result<(BrowserSession, Secret), AuthError> {
        let proven = self.prove_second(ctx, token, proof, &[Pending::Page], async |_, _| Ok(())).await?;
        self.complete_browser_sign_in(ctx, proven.factor).await
    }

    /// Opens the browser session a finished sign-in earned.
    pub async fn complete_browser_sign_in(
        &self,
        ctx: &RequestCtx,
        factor: FirstFactor,
    ) -> Result<(BrowserSession, Secret), AuthError> {
        let opened = self.open_browser_session(ctx, factor).await?;
        self.audit(ctx, "login", true, Some(&opened.0.user.id), Some("hosted_page")).await;
        metrics::counter!("portcullis_logins_total", "outcome" => "success").increment(1);
        Ok(opened)
    }

    /// Registers an account from the hosted sign-up page and signs the browser in
    /// (unless sign-in needs a proven address: then `EmailNotVerified`, and the
    /// account waits for its proof).
    pub async fn browser_sign_up(
        &self,
        ctx: &RequestCtx,
        email: &str,
        password: Secret,
        name: Option<String>,
    ) -> Result<SignIn<(BrowserSession, Secret)>, AuthError> {
        let mut user = self.register(ctx, email, password, name, Vec::new()).await?;
        if self.settings.require_verified_email {
            return Err(AuthError::EmailNotVerified);
        }
        user.roles = self.db.user_roles(&user.id).await?;
        let factor = FirstFactor { user, methods: vec![Method::Password] };
        match self.second_step(ctx, &factor, Pending::Page, None).await? {
            Some(c) => Ok(self.challenged(ctx, &factor, c).await),
            None => Ok(SignIn::Done(self.open_browser_session(ctx, factor).await?)),
        }
    }

    async fn open_browser_session(
        &self,
        ctx: &RequestCtx,
        factor: FirstFactor,
    ) -> Result<(BrowserSession, Secret), AuthError> {
        let cookie = crypto::b64url(&crypto::random_bytes::<32>());
        let ttl = i64::try_from(self.settings.refresh_ttl.as_millis()).unwrap_or(i64::MAX);
        let amr = factor.amr();
        let user = factor.user;
        let session = SessionRow {
            amr: Some(amr),
            ..SessionRow::opened(&user.id, ctx.now, ttl, ctx.ip.clone(), ctx.user_agent.clone())
        };
        let mut tx = self.db.write().await?;
        tx.session_create(&session, None, Some(&crypto::sha256_b64(&cookie))).await?;
        crate::events::emit(&mut tx, "session.created", crate::events::session_data(&session, None), ctx.now).await?;
        tx.commit().await?;
        Ok((BrowserSession { session, user }, Secret::new(cookie)))
    }

    /// The live session of a browser cookie, if its user may still sign in.
    pub async fn browser_session(&self, cookie: &str, now: i64) -> Result<Option<BrowserSession>, AuthError> {
        if cookie.is_empty() || cookie.len() > 128 {
            return Ok(None);
        }
        let Some(session) = self.db.browser_session(&crypto::sha256_b64(cookie), now).await? else {
            return Ok(None);
        };
        let user = self.db.user_by_id(&session.user_id).await?.filter(|u| u.banned_at.is_none());
        Ok(user.map(|user| BrowserSession { session, user }))
    }

    /// Ends a browser session (sign-out from the hosted pages).
    pub async fn browser_sign_out(&self, ctx: &RequestCtx, b: &BrowserSession) -> Result<(), AuthError> {
        let mut tx = self.db.write().await?;
        let ended = tx.session_end(&b.session.id, None, "logout", ctx.now).await?;
        crate::events::emit_sessions(&mut tx, "session.ended", ended.as_slice(), "logout", ctx.now).await?;
        tx.commit().await?;
        self.audit(ctx, "logout", true, Some(&b.user.id), Some("hosted_page")).await;
        Ok(())
    }
}
