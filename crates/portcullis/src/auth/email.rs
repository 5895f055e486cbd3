//! Proving an address: the verification mailed at sign-up (a link and a 6-digit
//! code), spent by `POST /v1/auth/email/verify` or the hosted `/verify-email` page,
//! and sent again by `POST /v1/auth/email/resend`.
//!
//! Link tokens are 256 random bits stored as SHA-256; codes are stored as an HMAC
//! under the master key. Both are spent by one conditional UPDATE, so a parallel
//! double submit succeeds once. A code is a guess of six digits: every attempt goes
//! through the same rate limit and (email, address) lockout as a password.

use super::{Auth, AuthError, tasks::Task};
use crate::{
    crypto,
    ctx::RequestCtx,
    mail::{self, Secrets, Template},
    store::{EmailTokenRow, Purpose, UserRow, WriteTx},
    validate::{field, normalize_email},
};

/// How long a mailed link works.
pub const LINK_TTL_MS: i64 = 24 * 3_600_000;
/// How long a mailed code works.
pub const CODE_TTL_MS: i64 = 15 * 60_000;

/// Six uniformly random digits (no modulo bias: 2^32 is rejection-sampled).
pub(super) fn six_digits() -> String {
    loop {
        let n = u32::from_le_bytes(crypto::random_bytes::<4>());
        // 4_294_000_000 is the largest multiple of 1_000_000 below 2^32.
        if n < 4_294_000_000 {
            return format!("{:06}", n % 1_000_000);
        }
    }
}

/// A fresh mailed token for `purpose` (256 random bits) and the row that stores
/// its hash, working for `ttl_ms`.
pub(super) fn new_token(
    user_id: &str,
    purpose: Purpose,
    email: &str,
    now: i64,
    ttl_ms: i64,
) -> (EmailTokenRow, String) {
    let token = crypto::b64url(&crypto::random_bytes::<32>());
    let row = EmailTokenRow {
        id: crypto::new_id("etk", now),
        user_id: user_id.to_owned(),
        purpose,
        email: email.to_owned(),
        code_hash: None,
        created_at: now,
        expires_at: now + ttl_ms,
        code_expires_at: None,
        used_at: None,
    };
    (row, token)
}

/// The bucket of the per-target mail limit: a hash, so the limiter's tables and
/// block summaries never hold the address.
pub(super) fn target_key(email: &str) -> String {
    format!("to:{}", crypto::sha256_b64(&email.to_ascii_lowercase()))
}

fn bad(name: &str) -> AuthError {
    AuthError::Validation(vec![field(
        name,
        "invalid_or_expired",
        "is wrong, expired or already used; ask for a new one",
    )])
}

impl Auth {
    /// The MAC under which the code of token `id` is stored.
    fn code_mac(&self, id: &str, code: &str) -> Result<String, AuthError> {
        let mailer = self.mailer()?;
        Ok(mailer.mac(&format!("email-code:{id}"), code))
    }

    /// Queues, inside `tx`, a proof of `email` for `user_id`: a link and a code,
    /// replacing earlier ones. `ChangeEmail` proves a new address.
    pub(super) async fn queue_proof(
        &self,
        tx: &mut WriteTx,
        user_id: &str,
        email: &str,
        purpose: Purpose,
        now: i64,
    ) -> Result<(), AuthError> {
        let mailer = self.mailer()?;
        let code = six_digits();
        let (mut row, token) = new_token(user_id, purpose, email, now, LINK_TTL_MS);
        row.code_hash = Some(self.code_mac(&row.id, &code)?);
        row.code_expires_at = Some(now + CODE_TTL_MS);
        tx.email_token_replace(&row, &crypto::sha256_b64(&token)).await?;
        let template = if purpose == Purpose::ChangeEmail { Template::ConfirmNewEmail } else { Template::VerifyEmail };
        let secrets = Secrets { link: Some(mailer.link("/verify-email", &token)), code: Some(code) };
        tx.outbox_enqueue(mail::KIND, &mailer.queue(email, template, None, &secrets)?, now).await?;
        Ok(())
    }

    /// Spends a verification link (`POST /v1/auth/email/verify {token}`, the hosted
    /// page); the user with the proven address.
    pub async fn verify_email_token(&self, ctx: &RequestCtx, token: &str) -> Result<UserRow, AuthError> {
        let token = token.trim();
        if token.is_empty() || token.len() > 200 {
            return Err(bad("token"));
        }
        let row = self.db.email_token_by_hash(&crypto::sha256_b64(token), ctx.now).await?;
        let row =
            row.filter(|r| matches!(r.purpose, Purpose::Verify | Purpose::ChangeEmail)).ok_or_else(|| bad("token"))?;
        self.prove(ctx, &row, false).await?.ok_or_else(|| bad("token"))
    }

    /// Checks a mailed code for `email` (`{email, code}`) under the password rate
    /// limit and lockout; the user with the proven address.
    pub async fn verify_email_code(&self, ctx: &RequestCtx, email: &str, code: &str) -> Result<UserRow, AuthError> {
        let email = normalize_email(email).map_err(AuthError::from)?;
        let code = code.trim();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AuthError::Validation(vec![field("code", "invalid", "must be the 6 digits from the message")]));
        }
        self.rate_limit_attempt(ctx).await?;
        let key = super::lock_key(&email);
        let address = crate::abuse::rate_key(ctx.client());
        let row = self.db.email_token_with_code(&email, ctx.now).await?;
        let uid = row.as_ref().map(|r| r.user_id.clone());
        self.reserve_attempt(ctx, "email_verified", &key, &address, uid.as_deref()).await?;
        let matches = match &row {
            Some(r) => {
                let want = self.code_mac(&r.id, code)?;
                r.code_hash.as_deref().is_some_and(|h| crypto::ct_eq(h.as_bytes(), want.as_bytes()))
            }
            None => false,
        };
        let proven = match (&row, matches) {
            (Some(r), true) => self.prove(ctx, r, true).await?,
            _ => None,
        };
        match proven {
            Some(user) => {
                self.db.login_succeeded(&key, &address, ctx.now).await?;
                Ok(user)
            }
            None => {
                if let Some(r) = row.as_ref().filter(|_| !matches) {
                    self.db.email_code_failed(&r.id).await?;
                }
                let reason = if matches { "address_taken" } else { "bad_code" };
                self.audit(ctx, "email_verified", false, uid.as_deref(), Some(reason)).await;
                self.count_failure(ctx, &key, &address, uid.as_deref()).await?;
                Err(bad("code"))
            }
        }
    }

    /// Spends `row` and proves its address, in one transaction; `None` when
    /// another submission spent it first (or the address was taken meanwhile).
    async fn prove(&self, ctx: &RequestCtx, row: &EmailTokenRow, by_code: bool) -> Result<Option<UserRow>, AuthError> {
        let change = row.purpose == Purpose::ChangeEmail;
        let old = if change { self.db.user_by_id(&row.user_id).await?.map(|u| u.email) } else { None };
        let mut tx = self.db.write().await?;
        if !tx.email_token_spend(&row.id, by_code, ctx.now).await? {
            return Ok(None);
        }
        let moved = match tx.user_prove_email(&row.user_id, &row.email, !change, ctx.now).await {
            Ok(moved) => moved,
            Err(crate::store::StoreError::Conflict(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if !moved {
            return Ok(None);
        }
        if let Some(old) = old.filter(|o| *o != row.email) {
            // Links sent to the old address (a proof, a reset, an unlock) are moot.
            for purpose in [Purpose::Verify, Purpose::Reset, Purpose::Unlock] {
                tx.email_tokens_retire(&row.user_id, purpose, ctx.now).await?;
            }
            if self.settings.notify.email_changed {
                let mailer = self.mailer()?;
                let notice = mailer.queue(&old, Template::EmailChanged, Some(&row.email), &Secrets::default())?;
                tx.outbox_enqueue(mail::KIND, &notice, ctx.now).await?;
            }
        }
        let data = serde_json::json!({"email": row.email, "by": if by_code { "code" } else { "link" }});
        crate::events::emit_about(&mut tx, "email.verified", &row.user_id, data, ctx.now).await?;
        if change {
            crate::events::emit_user(&mut tx, "user.updated", &row.user_id, ctx.now).await?;
        }
        tx.commit().await?;
        let event = if change { "email_changed" } else { "email_verified" };
        self.audit(ctx, event, true, Some(&row.user_id), Some(if by_code { "code" } else { "link" })).await;
        Ok(self.db.user_by_id(&row.user_id).await?)
    }

    /// Sends a new verification to an unverified account (`POST
    /// /v1/auth/email/resend`): the caller's own, or the one at `email`. The
    /// request only queues itself, alike for every address, and the outbox worker
    /// decides (`Task::Resend`): the answer, its time and its work tell nobody
    /// whether the address has an account.
    pub async fn resend_verification(
        &self,
        ctx: &RequestCtx,
        user: Option<&UserRow>,
        email: Option<&str>,
    ) -> Result<(), AuthError> {
        let email = match (user, email) {
            (Some(u), _) => u.email.clone(),
            (None, Some(e)) => normalize_email(e).map_err(AuthError::from)?,
            (None, None) => return Err(AuthError::Validation(vec![field("email", "required", "is required")])),
        };
        if !self.mail_allowed(ctx, &email).await? {
            return Ok(());
        }
        self.queue_task(&Task::Resend { email }, ctx.now).await?;
        self.audit(ctx, "email_verification_requested", true, user.map(|u| u.id.as_str()), None).await;
        Ok(())
    }

    /// The worker's half of a resend: a new proof for an unverified account that
    /// may sign in; nothing for anyone else.
    pub(super) async fn resend_process(&self, email: &str, now: i64) -> Result<(), AuthError> {
        let Some(user) = self.db.user_by_email(email).await? else { return Ok(()) };
        if user.email_verified || user.banned_at.is_some() {
            return Ok(());
        }
        let mut tx = self.db.write().await?;
        self.queue_proof(&mut tx, &user.id, &user.email, Purpose::Verify, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// `POST /v1/me/email`: proves `email` before the account moves there. The
    /// request queues itself (`Task::ChangeEmail`) alike whether the address is
    /// taken or free; a taken address's owner learns it by mail, not the caller.
    /// The old address is told once the change is made.
    pub async fn request_email_change(&self, ctx: &RequestCtx, user: &UserRow, email: &str) -> Result<(), AuthError> {
        let email = normalize_email(email).map_err(AuthError::from)?;
        if email == user.email {
            return Err(AuthError::Validation(vec![field(
                "email",
                "unchanged",
                "is already the address of this account",
            )]));
        }
        if !self.mail_allowed(ctx, &email).await? {
            return Ok(());
        }
        self.queue_task(&Task::ChangeEmail { user_id: user.id.clone(), email }, ctx.now).await?;
        self.audit(ctx, "email_change_requested", true, Some(&user.id), None).await;
        Ok(())
    }

    /// The worker's half of a change of address.
    pub(super) async fn change_email_process(&self, user_id: &str, email: &str, now: i64) -> Result<(), AuthError> {
        let mailer = self.mailer()?;
        let mut tx = self.db.write().await?;
        if self.db.user_by_email(email).await?.is_some() {
            let notice = mailer.queue(email, Template::EmailTaken, None, &Secrets::default())?;
            tx.outbox_enqueue(mail::KIND, &notice, now).await?;
        } else {
            self.queue_proof(&mut tx, user_id, email, Purpose::ChangeEmail, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// `security.email_send_rate`, per client address (429 past it) and per
    /// target address (silently nothing past it: the answer must not tell that
    /// someone else is mailing this address). Whether to send.
    pub(super) async fn mail_allowed(&self, ctx: &RequestCtx, target: &str) -> Result<bool, AuthError> {
        let Some((by_client, by_target)) = &self.mail_limiters else { return Ok(true) };
        if let Err(retry) = by_client.hit(ctx.client(), ctx.route(), ctx.now).await {
            return Err(AuthError::RateLimited(retry));
        }
        Ok(by_target.hit(&target_key(target), ctx.route(), ctx.now).await.is_ok())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn codes_are_six_digits() {
        for _ in 0..1000 {
            let c = super::six_digits();
            assert!(c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit()), "{c}");
        }
    }
}
