//! SMS codes as a second factor (a restricted authenticator, NIST SP 800-63B
//! §5.1.3.3): enrolling a number, and the code of a pending sign-in. Sends are
//! bounded per number and per client address (`sms.send_rate`) and to three per
//! pending sign-in, so nobody can run up the operator's bill; each code lives 5
//! minutes and is stored as an HMAC.

use std::sync::Arc;

use super::{
    Auth, AuthError, Method,
    factors::{Enrolled, Enroller},
    mfa::Pending,
};
use crate::{
    abuse::{Blocks, Limiter},
    crypto::{self, Secret},
    ctx::RequestCtx,
    sms::{self, Sms},
    store::FactorRow,
    units::RateRule,
};

/// How long an SMS code works.
pub const SMS_CODE_TTL_MS: i64 = 5 * 60_000;
/// Codes sent for one pending sign-in.
const SENDS_PER_SIGN_IN: i64 = 3;

/// The SMS sender and its limits.
pub(super) struct SmsCodes {
    sms: Arc<Sms>,
    by_client: Limiter,
    by_number: Limiter,
}

impl Auth {
    /// Sends SMS codes through `sms` (none: SMS is off), at most `rate` per number
    /// and per client address.
    pub fn with_sms(mut self, sms: Option<Arc<Sms>>, rate: RateRule, blocks: Arc<Blocks>) -> Self {
        self.sms = sms.map(|sms| SmsCodes {
            sms,
            by_client: Limiter::new(self.db.clone(), "sms_client", rate, blocks.clone()),
            by_number: Limiter::new(self.db.clone(), "sms_number", rate, blocks),
        });
        self
    }

    fn sms_codes(&self) -> Result<&SmsCodes, AuthError> {
        self.sms.as_ref().ok_or(AuthError::Forbidden("SMS codes are not enabled on this server"))
    }

    /// Takes one send from the limits of the client and of `number`.
    async fn sms_allowed(&self, codes: &SmsCodes, ctx: &RequestCtx, number: &str) -> Result<(), AuthError> {
        codes.by_client.hit(ctx.client(), ctx.route(), ctx.now).await.map_err(AuthError::RateLimited)?;
        // Keyed under the master key: a plain hash of a phone number is reversed by
        // trying them all.
        let key = self.master()?.mac("sms:number", number);
        codes.by_number.hit(&key, ctx.route(), ctx.now).await.map_err(AuthError::RateLimited)
    }

    /// `POST /v1/me/mfa/sms {phone}`: a pending enrolment of an E.164 number, and
    /// the code that confirms it sent there. The masked number.
    pub async fn sms_start(&self, ctx: &RequestCtx, who: &Enroller, phone: &str) -> Result<String, AuthError> {
        let codes = self.sms_codes()?;
        let user = self.enrolling(who, ctx.now, true).await?;
        let Some(number) = sms::e164(phone) else {
            return Err(crate::validate::field(
                "phone",
                "invalid_phone",
                "must be an E.164 number such as +15550104567",
            )
            .into());
        };
        let factors = self.db.mfa_factors(&user.id).await?;
        if factors.iter().any(|f| f.kind == "sms" && f.confirmed_at.is_some()) {
            return Err(AuthError::Conflict(
                "a phone number is already set up: remove it first (DELETE /v1/me/mfa/sms)",
            ));
        }
        self.sms_allowed(codes, ctx, &number).await?;
        let code = super::email::six_digits();
        let id = crypto::new_id("mfa", ctx.now);
        let row = FactorRow {
            secret_sealed: self.master()?.seal(&format!("mfa:sms:{id}"), number.as_bytes())?,
            id,
            user_id: user.id.clone(),
            kind: "sms".into(),
            label: Some(sms::masked(&number)),
            created_at: ctx.now,
            code_hash: Some(self.sms_code_hash(&user.id, &code)?),
            code_expires_at: Some(ctx.now + SMS_CODE_TTL_MS),
            ..Default::default()
        };
        let message = codes.sms.queue(&number, &code, "enrolment")?;
        self.db.mfa_factor_pending(&row, Some((sms::KIND, &message))).await?;
        self.audit(ctx, "mfa_enrollment_started", true, Some(&user.id), Some("sms")).await;
        Ok(sms::masked(&number))
    }

    /// `POST /v1/me/mfa/sms/confirm {code}`: the code sent confirms the number.
    pub async fn sms_confirm(&self, ctx: &RequestCtx, who: &Enroller, code: &str) -> Result<Enrolled, AuthError> {
        self.sms_codes()?;
        self.factor_confirm(ctx, who, Method::Sms, code).await
    }

    /// Whether `code` is the unexpired code of a pending SMS enrolment (with fewer
    /// than five wrong codes tried).
    pub(super) fn enrol_code_ok(&self, f: &FactorRow, code: &str, now: i64) -> Result<bool, AuthError> {
        let live = f.code_expires_at.is_some_and(|t| t > now) && f.code_failures < crate::store::MAX_MFA_FAILURES;
        let Some(stored) = f.code_hash.as_deref().filter(|_| live) else { return Ok(false) };
        Ok(crypto::ct_eq(stored.as_bytes(), self.sms_code_hash(&f.user_id, code)?.as_bytes()))
    }

    /// `POST /v1/auth/login/mfa/sms {mfa_token}`: texts the code that finishes this
    /// pending sign-in (or recent-authentication check); the masked number.
    pub async fn login_sms(&self, ctx: &RequestCtx, token: &Secret) -> Result<String, AuthError> {
        let codes = self.sms_codes()?;
        let (_, user) =
            self.pending(token.expose(), &[Pending::Login, Pending::Page, Pending::Reauth], ctx.now).await?;
        let factors = self.db.mfa_factors(&user.id).await?;
        let Some(f) = factors.iter().find(|f| f.kind == "sms" && f.confirmed_at.is_some()) else {
            return Err(AuthError::Conflict("this account has no phone number for codes"));
        };
        let number = self.master()?.open(&format!("mfa:sms:{}", f.id), &f.secret_sealed)?;
        let number =
            String::from_utf8(number).map_err(|_| AuthError::Internal("a sealed number is not text".into()))?;
        self.sms_allowed(codes, ctx, &number).await?;
        let code = super::email::six_digits();
        let hash = self.sms_code_hash(&user.id, &code)?;
        let mut tx = self.db.write().await?;
        let token_hash = crypto::sha256_b64(token.expose());
        let expires = ctx.now + SMS_CODE_TTL_MS;
        if !tx.mfa_token_sms(&token_hash, &hash, ctx.now, expires, SENDS_PER_SIGN_IN).await? {
            return Err(AuthError::RateLimited(60));
        }
        tx.outbox_enqueue(sms::KIND, &codes.sms.queue(&number, &code, "sign_in")?, ctx.now).await?;
        tx.commit().await?;
        self.audit(ctx, "mfa_sms_sent", true, Some(&user.id), None).await;
        Ok(sms::masked(&number))
    }
}
