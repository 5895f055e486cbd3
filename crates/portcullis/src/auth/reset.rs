//! Password reset: `POST /v1/auth/password/forgot` mails a link (256 random bits,
//! 30 minutes, stored as SHA-256), and the link's token with a new password
//! (`POST /v1/auth/password/reset`, or the hosted `/reset-password` page) sets it.
//!
//! The forgot request answers the same, after the same work and in the same
//! time, for known and unknown addresses: it only queues itself; the outbox
//! worker looks the address up, out of the caller's sight. A reset ends every session, lifts every lock of
//! the account, and sends a notice; it signs nobody in, so the next sign-in goes
//! through every factor the account has.
//!
//! An account whose lock trips is told by mail, with a link that lets the
//! address opening it sign in despite the lock (`/unlock`).

use super::{Auth, AuthError, tasks::Task};
use crate::{
    crypto::{self, Secret},
    ctx::RequestCtx,
    events,
    mail::{self, Secrets, Template},
    store::{Purpose, UserRow, WriteTx},
    validate::{field, normalize_email},
};

/// How long a reset link works.
pub const RESET_TTL_MS: i64 = 30 * 60_000;
/// How long an unlock link works.
pub const UNLOCK_TTL_MS: i64 = 24 * 3_600_000;

impl Auth {
    /// Queues a notice (no secrets) to `user` in `tx`, if that notice is on.
    pub(super) async fn queue_notice(
        &self,
        tx: &mut WriteTx,
        user: &UserRow,
        template: Template,
        now: i64,
    ) -> Result<(), AuthError> {
        let n = &self.settings.notify;
        let on = match template {
            Template::PasswordChanged => n.password_changed,
            Template::EmailChanged => n.email_changed,
            Template::AccountLocked => n.account_locked,
            Template::SignedOutEverywhere => n.refresh_reuse,
            _ => true,
        };
        let Some(mailer) = self.mailer.as_ref().filter(|_| on) else { return Ok(()) };
        let payload = mailer.queue(&user.email, template, None, &Secrets::default())?;
        tx.outbox_enqueue(mail::KIND, &payload, now).await?;
        Ok(())
    }

    /// `POST /v1/auth/password/forgot`: queues the request itself
    /// (`Task::Forgot`) and nothing else, so the request does the same work, in
    /// the same time, for known and unknown addresses. The outbox worker then
    /// looks the address up and, for an account that may sign in, mails a link.
    pub async fn forgot_password(&self, ctx: &RequestCtx, email: &str) -> Result<(), AuthError> {
        let email = normalize_email(email).map_err(AuthError::from)?;
        if !self.mail_allowed(ctx, &email).await? {
            return Ok(());
        }
        self.queue_task(&Task::Forgot { email }, ctx.now).await?;
        self.audit(ctx, "password_reset_requested", true, None, None).await;
        Ok(())
    }

    /// The worker's half of a forgot request (at least once: a replay sends a
    /// fresh link and retires the earlier one).
    pub(super) async fn forgot_process(&self, email: &str, now: i64) -> Result<(), AuthError> {
        let Some(user) = self.db.user_by_email(email).await? else { return Ok(()) };
        if user.banned_at.is_some() {
            return Ok(());
        }
        let mailer = self.mailer()?;
        let (row, token) = super::email::new_token(&user.id, Purpose::Reset, &user.email, now, RESET_TTL_MS);
        let secrets = Secrets { link: Some(mailer.link("/reset-password", &token)), code: None };
        let payload = mailer.queue(&user.email, Template::ResetPassword, None, &secrets)?;
        let mut tx = self.db.write().await?;
        tx.email_token_replace(&row, &crypto::sha256_b64(&token)).await?;
        tx.outbox_enqueue(mail::KIND, &payload, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// `POST /v1/auth/password/reset`: spends the token and sets `new_password`
    /// (the password policy applies); ends every session, lifts every lock of the
    /// account, sends a notice. Signs nobody in.
    pub async fn reset_password(&self, ctx: &RequestCtx, token: &str, new: Secret) -> Result<(), AuthError> {
        let bad = || {
            AuthError::Validation(vec![field(
                "token",
                "invalid_or_expired",
                "is wrong, expired or already used; ask for a new link",
            )])
        };
        let token = token.trim();
        if token.is_empty() || token.len() > 200 {
            return Err(bad());
        }
        let row = self.db.email_token_by_hash(&crypto::sha256_b64(token), ctx.now).await?;
        let row = row.filter(|r| r.purpose == Purpose::Reset).ok_or_else(bad)?;
        // The account must still be at the address the link was sent to.
        let user = self.db.user_by_id(&row.user_id).await?;
        let user = user.filter(|u| u.banned_at.is_none() && u.email == row.email).ok_or_else(bad)?;
        // A sign-in since the link was sent cancels it: the owner remembered.
        if self.db.signed_in_since(&user.id, row.created_at).await? {
            return Err(bad());
        }
        let errors = self.password_errors("new_password", new.expose(), &user.email, user.name.as_deref()).await;
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        let phc = self.hasher.hash(new).await?;
        let mut tx = self.db.write().await?;
        if !tx.email_token_spend(&row.id, false, ctx.now).await? {
            return Err(bad());
        }
        tx.user_set_password(&user.id, &phc, ctx.now).await?;
        let ended = tx.sessions_revoke_all(&user.id, None, "password_reset", ctx.now).await?;
        events::emit_about(&mut tx, "password.reset", &user.id, serde_json::json!({}), ctx.now).await?;
        events::emit_sessions(&mut tx, "session.revoked", &ended, "password_reset", ctx.now).await?;
        let ended = ended.len();
        // A change of address someone asked for before the reset must not outlive it.
        tx.email_tokens_retire(&user.id, Purpose::ChangeEmail, ctx.now).await?;
        self.queue_notice(&mut tx, &user, Template::PasswordChanged, ctx.now).await?;
        tx.commit().await?;
        // Every lock of the account, from every address, and its failure ceiling.
        let key = super::lock_key(&user.email);
        self.db.lock_clear(&key, &crate::abuse::ceiling_bucket(&key)).await?;
        self.audit(ctx, "password_reset", true, Some(&user.id), Some(&format!("{ended} sessions ended"))).await;
        Ok(())
    }

    /// A lock tripped for `key`: queues the notice (`Task::Locked`), alike for
    /// known and unknown addresses (which lock alike), so the attempt that trips
    /// a lock takes the same time either way. A failure here never fails it.
    pub(super) async fn notify_locked(&self, ctx: &RequestCtx, key: &str, uid: Option<&str>) {
        let task = Task::Locked { key: key.to_owned(), user_id: uid.map(str::to_owned) };
        if let Err(e) = self.queue_task(&task, ctx.now).await {
            tracing::warn!(error = %e, "queueing the account-locked notice failed");
        }
    }

    /// The worker's half: mails the owner (`email.notify_account_locked`, within
    /// the per-address mail limit) with an unlock link.
    pub(super) async fn locked_process(&self, key: &str, uid: Option<&str>, now: i64) -> Result<(), AuthError> {
        let (Some(uid), Some(mailer)) = (uid, self.mailer.as_ref()) else { return Ok(()) };
        if !self.settings.notify.account_locked {
            return Ok(());
        }
        // Only the lock of the account's own address (not of a new address being
        // proven), and not more often than any other mail to it.
        let Some(user) = self.db.user_by_id(uid).await?.filter(|u| super::lock_key(&u.email) == key) else {
            return Ok(());
        };
        if let Some((_, by_target)) = &self.mail_limiters
            && by_target.hit(&super::email::target_key(&user.email), "outbox", now).await.is_err()
        {
            return Ok(());
        }
        let (row, token) = super::email::new_token(&user.id, Purpose::Unlock, &user.email, now, UNLOCK_TTL_MS);
        let secrets = Secrets { link: Some(mailer.link("/unlock", &token)), code: None };
        let payload = mailer.queue(&user.email, Template::AccountLocked, None, &secrets)?;
        let mut tx = self.db.write().await?;
        tx.email_token_replace(&row, &crypto::sha256_b64(&token)).await?;
        tx.outbox_enqueue(mail::KIND, &payload, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Spends an unlock link (`/unlock`): the lock of the address that opens it
    /// is lifted, and the address counts as one the owner uses from then on (the
    /// lock over all addresses spares it for 30 days). Everyone else stays locked
    /// out. The link works once.
    pub async fn unlock(&self, ctx: &RequestCtx, token: &str) -> Result<(), AuthError> {
        let bad =
            || AuthError::Validation(vec![field("token", "invalid_or_expired", "is wrong, expired or already used")]);
        let token = token.trim();
        if token.is_empty() || token.len() > 200 {
            return Err(bad());
        }
        let row = self.db.email_token_by_hash(&crypto::sha256_b64(token), ctx.now).await?;
        let row = row.filter(|r| r.purpose == Purpose::Unlock).ok_or_else(bad)?;
        let address = crate::abuse::rate_key(ctx.client());
        let mut tx = self.db.write().await?;
        if !tx.email_token_spend(&row.id, false, ctx.now).await? {
            return Err(bad());
        }
        tx.login_succeeded(&super::lock_key(&row.email), &address, ctx.now).await?;
        tx.commit().await?;
        self.audit(ctx, "account_unlocked", true, Some(&row.user_id), Some(&format!("by mail link from {address}")))
            .await;
        Ok(())
    }
}
