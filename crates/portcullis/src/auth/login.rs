//! Password sign-in: one answer for every failure, one cost for every email.
//!
//! An unknown email is verified against a dummy hash and yields the same error as a
//! wrong password, so neither the body nor the timing tells which emails have
//! accounts (OWASP ASVS 2.2.1, 3.2.x).

use super::{Auth, AuthError, Issued, RequestCtx, normalize_email};
use crate::{
    crypto::{self, Secret},
    store::SessionRow,
};

impl Auth {
    /// Checks email and password and opens a new session.
    pub async fn login(&self, ctx: &RequestCtx, email: &str, password: Secret) -> Result<Issued, AuthError> {
        let user = match normalize_email(email) {
            Ok(email) => self.db.user_for_login(&email).await?,
            Err(_) => None,
        };
        let (ok, outdated) =
            self.hasher.verify(password.clone(), user.as_ref().and_then(|u| u.password_hash.clone())).await?;
        // A banned user gets the same answer as a wrong password, and only after the
        // same hashing work, so a ban reveals nothing to someone without the password.
        let Some(user) = user.clone().filter(|u| ok && u.banned_at.is_none()) else {
            let (uid, reason) = match &user {
                Some(u) if ok => (Some(u.id.as_str()), "banned"),
                Some(u) => (Some(u.id.as_str()), "bad_password"),
                None => (None, "unknown_user"),
            };
            self.audit(ctx, "login", false, uid, Some(reason)).await;
            metrics::counter!("portcullis_logins_total", "outcome" => "failure").increment(1);
            return Err(AuthError::InvalidCredentials);
        };
        // Roles are loaded only now: loading them before the password check would
        // make known emails measurably slower than unknown ones.
        let mut user = user;
        user.roles = self.db.user_roles(&user.id).await?;
        if outdated {
            // Upgrade hashes made with older parameters while we hold the password.
            match self.hasher.hash(password).await {
                Ok(phc) => self.db.user_set_password(&user.id, &phc, ctx.now).await?,
                Err(e) => tracing::warn!(error = %e, "could not upgrade a password hash"),
            }
        }
        let issued = self.open_session(ctx, user).await?;
        self.audit(ctx, "login", true, Some(&issued.user.id), None).await;
        metrics::counter!("portcullis_logins_total", "outcome" => "success").increment(1);
        Ok(issued)
    }

    async fn open_session(&self, ctx: &RequestCtx, user: crate::store::UserRow) -> Result<Issued, AuthError> {
        let refresh = crypto::b64url(&crypto::random_bytes::<32>());
        let ttl = i64::try_from(self.settings.refresh_ttl.as_millis()).unwrap_or(i64::MAX);
        let session = SessionRow {
            id: crypto::new_id("ses", ctx.now),
            user_id: user.id.clone(),
            created_at: ctx.now,
            last_active_at: ctx.now,
            expires_at: ctx.now.saturating_add(ttl),
            revoked_at: None,
            ip: ctx.ip.clone(),
            user_agent: ctx.user_agent.clone(),
        };
        self.db.session_create(&session, &crypto::sha256_b64(&refresh)).await?;
        let access_token = self.access_token(&user, &session.id, ctx.now).await?;
        Ok(Issued {
            access_token,
            refresh_token: Secret::new(refresh),
            expires_in: self.tokens.access_ttl_secs(),
            user,
        })
    }
}
