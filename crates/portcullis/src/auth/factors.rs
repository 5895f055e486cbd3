//! Managing second factors: authenticator-app enrolment (RFC 6238: SHA-1, 6
//! digits, 30 s, ±1 step; the secret sealed under the master key), recovery codes
//! (10, single-use, stored as HMACs, shown once), the factor list, removal, and
//! the admin reset. Every change is audited and announced to the account's
//! address in the same commit.

use std::sync::Arc;

use portcullis_proto::FieldError;
use totp_rs::{Algorithm, Builder, Totp};

use super::{
    Auth, AuthError, FirstFactor, Method,
    mfa::{Challenge, Pending},
};
use crate::{
    audit::Event,
    crypto::{self, MasterKey, Secret},
    ctx::{Principal, RequestCtx},
    events,
    mail::Template,
    store::{FactorRow, UserRow},
};

/// Recovery codes in a set.
pub const RECOVERY_CODES: usize = 10;
/// Crockford's base32: no I, L, O or U to misread.
const CODE_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const CODE_CHARS: usize = 12;

/// Who enrols a factor: a signed-in user, or (with `accounts.mfa = "required"`)
/// a pending sign-in of an account that has none yet.
#[derive(Debug)]
pub enum Enroller {
    /// A user's own session (the routes check recent authentication).
    Session(Principal),
    /// The `mfa_token` of `mfa_enrollment_required` (JSON API).
    Pending(Secret),
    /// The pending sign-in of the hosted enrolment page.
    PagePending(Secret),
}

impl Enroller {
    /// The pending sign-in's token, if this is one.
    pub fn pending_token(&self) -> Option<&Secret> {
        match self {
            Enroller::Pending(t) | Enroller::PagePending(t) => Some(t),
            Enroller::Session(_) => None,
        }
    }
}

/// A pending authenticator-app enrolment, for the user to scan.
#[derive(Debug)]
pub struct TotpSetup {
    /// Base32, no padding.
    pub secret: Secret,
    /// `otpauth://totp/…`.
    pub otpauth_uri: Secret,
    /// The QR code of the URI.
    pub qr_svg: String,
}

/// A confirmed enrolment.
#[derive(Debug)]
pub struct Enrolled {
    /// The first factor's recovery codes, shown once.
    pub recovery_codes: Option<Vec<Secret>>,
    /// With a pending sign-in: the sign-in it completed.
    pub completed: Option<FirstFactor>,
    /// A passkey enrolment's new passkey.
    pub passkey: Option<crate::store::PasskeyRow>,
}

/// A recovery code as typed, normalised (lower case, no separators, Crockford's
/// look-alikes mapped), if it can be one.
pub fn normal_recovery_code(typed: &str) -> Option<String> {
    let out: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_lowercase() {
            'i' | 'l' => '1',
            'o' => '0',
            other => other,
        })
        .collect();
    (out.len() == CODE_CHARS && out.bytes().all(|b| CODE_ALPHABET.contains(&b))).then_some(out)
}

/// A fresh set of recovery codes.
pub(super) fn new_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect()
}

fn new_recovery_code() -> String {
    let bits = u64::from_le_bytes(crypto::random_bytes::<8>());
    let chars: Vec<char> = (0..CODE_CHARS)
        .map(|i| char::from(CODE_ALPHABET.get(((bits >> (5 * i)) & 31) as usize).copied().unwrap_or(b'0')))
        .collect();
    let text: String = chars.into_iter().collect();
    format!("{}-{}-{}", &text[..4], &text[4..8], &text[8..])
}

impl Auth {
    /// Seals factor secrets and keys recovery-code and SMS-code HMACs.
    pub fn with_master(mut self, master: Arc<MasterKey>) -> Self {
        self.master = Some(master);
        self
    }

    pub(super) fn master(&self) -> Result<&MasterKey, AuthError> {
        self.master.as_deref().ok_or_else(|| AuthError::Internal("no master key in this process".into()))
    }

    /// The stored HMAC of a (normalised) recovery code of `user_id`.
    pub(super) fn recovery_hash(&self, user_id: &str, normal: &str) -> Result<String, AuthError> {
        Ok(self.master()?.mac(&format!("mfa:recovery:{user_id}"), normal))
    }

    /// The stored HMAC of an SMS code sent to `user_id`.
    pub(super) fn sms_code_hash(&self, user_id: &str, code: &str) -> Result<String, AuthError> {
        Ok(self.master()?.mac(&format!("mfa:sms:{user_id}"), code))
    }

    /// The TOTP generator of a stored factor.
    pub(super) fn totp_of(&self, f: &FactorRow) -> Result<Totp, AuthError> {
        let secret = self.master()?.open(&format!("mfa:totp:{}", f.id), &f.secret_sealed);
        let secret = secret.map_err(|e| AuthError::Internal(format!("cannot open a TOTP secret: {e}")))?;
        totp(secret, None, "")
    }

    /// The user of an enrolment: a session's (recent, when `recent`), or a pending
    /// sign-in's that must enrol.
    pub(super) async fn enrolling(&self, who: &Enroller, now: i64, recent: bool) -> Result<UserRow, AuthError> {
        match who {
            Enroller::Session(p) => {
                if recent {
                    self.require_recent(p, now).await?;
                }
                self.me(p).await
            }
            Enroller::Pending(token) => Ok(self.pending(token.expose(), &[Pending::Enroll], now).await?.1),
            Enroller::PagePending(token) => Ok(self.pending(token.expose(), &[Pending::PageEnroll], now).await?.1),
        }
    }

    /// `POST /v1/me/mfa/totp`: a new pending enrolment (replacing one not yet
    /// confirmed). A confirmed app must be removed first.
    pub async fn totp_start(&self, ctx: &RequestCtx, who: &Enroller) -> Result<TotpSetup, AuthError> {
        let user = self.enrolling(who, ctx.now, true).await?;
        let factors = self.db.mfa_factors(&user.id).await?;
        if factors.iter().any(|f| f.kind == "totp" && f.confirmed_at.is_some()) {
            return Err(AuthError::Conflict(
                "an authenticator app is already set up: remove it first (DELETE /v1/me/mfa/totp)",
            ));
        }
        let secret = crypto::random_bytes::<20>().to_vec();
        let id = crypto::new_id("mfa", ctx.now);
        let sealed = self.master()?.seal(&format!("mfa:totp:{id}"), &secret)?;
        let row = FactorRow {
            id,
            user_id: user.id.clone(),
            kind: "totp".into(),
            secret_sealed: sealed,
            created_at: ctx.now,
            ..Default::default()
        };
        self.db.mfa_factor_pending(&row, None).await?;
        self.audit(ctx, "mfa_enrollment_started", true, Some(&user.id), Some("totp")).await;
        self.setup_of(&user, secret)
    }

    /// The pending authenticator-app enrolment again (the same secret), for a page
    /// shown anew after a mistyped code.
    pub async fn totp_setup_again(&self, ctx: &RequestCtx, who: &Enroller) -> Result<TotpSetup, AuthError> {
        let user = self.enrolling(who, ctx.now, false).await?;
        let factors = self.db.mfa_factors(&user.id).await?;
        let Some(f) = factors.iter().find(|f| f.kind == "totp" && f.confirmed_at.is_none()) else {
            return self.totp_start(ctx, who).await;
        };
        let secret = self.master()?.open(&format!("mfa:totp:{}", f.id), &f.secret_sealed)?;
        self.setup_of(&user, secret)
    }

    fn setup_of(&self, user: &UserRow, secret: Vec<u8>) -> Result<TotpSetup, AuthError> {
        // The app shows "issuer (account)"; neither may hold a colon.
        let issuer = self.settings.product_name.replace(':', " ");
        let t = totp(secret, Some(issuer), &user.email.replace(':', " "))?;
        let uri = t.to_url().map_err(|e| AuthError::Internal(format!("otpauth URI: {e}")))?;
        let qr = qrcode::QrCode::new(uri.as_bytes()).map_err(|e| AuthError::Internal(format!("QR code: {e}")))?;
        let qr_svg = qr.render::<qrcode::render::svg::Color>().min_dimensions(200, 200).build();
        Ok(TotpSetup { secret: Secret::new(t.secret().to_base32()), otpauth_uri: Secret::new(uri), qr_svg })
    }

    /// `POST /v1/me/mfa/totp/confirm`: the app's first code confirms the pending
    /// enrolment. The account's first factor comes with recovery codes; a pending
    /// sign-in that had to enrol completes.
    pub async fn totp_confirm(&self, ctx: &RequestCtx, who: &Enroller, code: &str) -> Result<Enrolled, AuthError> {
        self.factor_confirm(ctx, who, Method::Totp, code).await
    }

    /// Confirms a pending factor of `method` (`Totp` or `Sms`) with its first
    /// code; see [`Auth::totp_confirm`].
    pub(super) async fn factor_confirm(
        &self,
        ctx: &RequestCtx,
        who: &Enroller,
        method: Method,
        code: &str,
    ) -> Result<Enrolled, AuthError> {
        self.rate_limit_attempt(ctx).await?;
        let user = self.enrolling(who, ctx.now, false).await?;
        let kind = method.name();
        let factors = self.db.mfa_factors(&user.id).await?;
        let Some(pending) = factors.iter().find(|f| f.kind == kind && f.confirmed_at.is_none()) else {
            return Err(AuthError::Conflict("no enrolment of this factor is pending: start one first"));
        };
        let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
        let verified = match method {
            _ if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) => None,
            Method::Totp => self.totp_step(pending, &code, ctx.now)?.map(Some),
            _ => self.enrol_code_ok(pending, &code, ctx.now)?.then_some(None),
        };
        let Some(step) = verified else {
            if method == Method::Sms {
                self.db.mfa_enrol_code_failed(&pending.id).await?;
            }
            self.audit(ctx, "mfa_enrolled", false, Some(&user.id), Some(&format!("{kind}: wrong code"))).await;
            return Err(AuthError::Validation(vec![FieldError {
                field: "code".into(),
                code: "incorrect".into(),
                message: "is not the code shown or sent".into(),
            }]));
        };
        let first = self.factors_of(&user.id).await?.is_empty();
        let codes: Option<Vec<String>> = first.then(|| (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect());
        let mut tx = self.db.write().await?;
        if !tx.mfa_factor_confirm(&pending.id, step, ctx.now).await? {
            return Err(AuthError::Conflict("this enrolment was confirmed or replaced meanwhile"));
        }
        if let Some(codes) = &codes {
            let hashes = self.recovery_hashes(&user.id, codes)?;
            tx.recovery_codes_replace(&user.id, &hashes, ctx.now).await?;
        }
        let finishing = who.pending_token().is_some();
        if let Some(token) = who.pending_token()
            && !tx.mfa_token_spend(&crypto::sha256_b64(token.expose()), ctx.now).await?
        {
            // The sign-in this enrolment finishes was finished meanwhile.
            return Err(AuthError::MfaTokenInvalid);
        }
        self.queue_notice(&mut tx, &user, Template::MfaAdded, ctx.now).await?;
        events::emit_about(&mut tx, "mfa.enrolled", &user.id, serde_json::json!({"kind": kind}), ctx.now).await?;
        tx.commit().await?;
        self.audit(ctx, "mfa_enrolled", true, Some(&user.id), Some(kind)).await;
        let recovery_codes = codes.map(|c| c.into_iter().map(Secret::new).collect());
        if !finishing {
            return Ok(Enrolled { recovery_codes, completed: None, passkey: None });
        }
        // The password, then the new factor: a sign-in with two factors.
        let mut user = user;
        user.roles = self.db.user_roles(&user.id).await?;
        let completed = Some(FirstFactor { user, methods: vec![Method::Password, method] });
        Ok(Enrolled { recovery_codes, completed, passkey: None })
    }

    pub(super) fn recovery_hashes(&self, user_id: &str, codes: &[String]) -> Result<Vec<String>, AuthError> {
        codes.iter().map(|c| self.recovery_hash(user_id, &normal_recovery_code(c).unwrap_or_default())).collect()
    }

    /// `DELETE /v1/me/mfa/{kind}`: removes a factor; with the last one go the
    /// recovery codes.
    pub async fn factor_remove(&self, ctx: &RequestCtx, who: &Principal, kind: &str) -> Result<(), AuthError> {
        let user = self.me(who).await?;
        let others = self.factors_of(&user.id).await?.iter().any(|k| *k != "recovery_code" && *k != kind);
        self.may_remove_factor(others)?;
        let mut tx = self.db.write().await?;
        if tx.mfa_factors_remove(&user.id, Some(kind), ctx.now).await? == 0 {
            return Err(AuthError::NotFound);
        }
        if !others {
            tx.recovery_codes_replace(&user.id, &[], ctx.now).await?;
        }
        self.queue_notice(&mut tx, &user, Template::MfaRemoved, ctx.now).await?;
        events::emit_about(&mut tx, "mfa.removed", &user.id, serde_json::json!({"kind": kind}), ctx.now).await?;
        tx.commit().await?;
        self.audit(ctx, "mfa_removed", true, Some(&user.id), Some(kind)).await;
        Ok(())
    }

    /// Under `accounts.mfa = "required"` the last factor stays until another is
    /// added.
    pub(super) fn may_remove_factor(&self, others: bool) -> Result<(), AuthError> {
        if self.settings.mfa_required && !others {
            return Err(AuthError::Conflict(
                "every account here needs a second factor: add another before removing this one",
            ));
        }
        Ok(())
    }

    /// `POST /v1/me/mfa/recovery-codes`: a new set of codes replaces the old.
    pub async fn recovery_codes_renew(&self, ctx: &RequestCtx, who: &Principal) -> Result<Vec<Secret>, AuthError> {
        let user = self.me(who).await?;
        if self.factors_of(&user.id).await?.is_empty() {
            return Err(AuthError::Conflict("recovery codes come with a second factor: set one up first"));
        }
        let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
        let hashes = self.recovery_hashes(&user.id, &codes)?;
        let mut tx = self.db.write().await?;
        tx.recovery_codes_replace(&user.id, &hashes, ctx.now).await?;
        tx.commit().await?;
        self.audit(ctx, "recovery_codes_renewed", true, Some(&user.id), None).await;
        Ok(codes.into_iter().map(Secret::new).collect())
    }

    /// `GET /v1/me/mfa`: the confirmed factors and the recovery codes left.
    pub async fn mfa_status(&self, who: &Principal) -> Result<(Vec<FactorRow>, i64), AuthError> {
        let user = self.me(who).await?;
        self.factors_and_codes(&user.id).await
    }

    /// A user's confirmed factors and unused recovery codes (also for admins).
    pub async fn factors_and_codes(&self, user_id: &str) -> Result<(Vec<FactorRow>, i64), AuthError> {
        let factors = self.db.mfa_factors(user_id).await?.into_iter().filter(|f| f.confirmed_at.is_some()).collect();
        Ok((factors, self.db.recovery_codes_left(user_id).await?))
    }

    /// `DELETE /v1/admin/users/{id}/mfa`: an admin removes every factor of a user
    /// who lost them (with the recovery codes and pending sign-ins); audited under
    /// the admin and announced to the user. How many factors went.
    pub async fn mfa_reset(&self, ctx: &RequestCtx, user: &UserRow, actor: Option<&str>) -> Result<u64, AuthError> {
        let mut tx = self.db.write().await?;
        let gone = tx.mfa_factors_remove(&user.id, None, ctx.now).await? + tx.passkeys_remove(&user.id, None).await?;
        self.queue_notice(&mut tx, user, Template::MfaReset, ctx.now).await?;
        if gone > 0 {
            let data = serde_json::json!({"kind": "all", "removed": gone, "by_admin": true});
            events::emit_about(&mut tx, "mfa.removed", &user.id, data, ctx.now).await?;
        }
        tx.commit().await?;
        let reason = format!("{gone} factor(s) removed");
        let e = Event { kind: "mfa_reset", success: true, user_id: Some(&user.id), actor, reason: Some(&reason) };
        self.audit.record(ctx, e).await;
        Ok(gone)
    }

    /// A pending sign-in for `user` to reach the hosted pages' second step from a
    /// browser session that signed in with fewer factors (step-up).
    pub async fn step_up(&self, ctx: &RequestCtx, user_id: &str, amr: &str) -> Result<Challenge, AuthError> {
        let factors = self.factors_of(user_id).await?;
        // No factor yet (`accounts.mfa = "required"`): the step is the enrolment.
        let purpose = if factors.is_empty() { Pending::PageEnroll } else { Pending::Page };
        let token = self.pending_sign_in(ctx, user_id, purpose, amr, None).await?;
        Ok(Challenge { token, factors })
    }
}

/// An RFC 6238 generator: SHA-1, 6 digits, 30 s, ±1 step.
fn totp(secret: Vec<u8>, issuer: Option<String>, account: &str) -> Result<Totp, AuthError> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_skew(1)
        .with_secret(secret)
        .with_issuer(issuer)
        .with_account_name(account)
        .build()
        .map_err(|e| AuthError::Internal(format!("TOTP: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovery_codes_normalise_and_reject_garbage() {
        let c = new_recovery_code();
        assert_eq!(c.len(), 14, "{c}");
        let n = normal_recovery_code(&c).unwrap();
        assert_eq!(normal_recovery_code(&c.to_uppercase().replace('-', " ")).as_deref(), Some(n.as_str()));
        assert_eq!(normal_recovery_code("oooo-llll-iiii").as_deref(), Some("000011111111"));
        assert!(normal_recovery_code("uuuu-uuuu-uuuu").is_none());
        assert!(normal_recovery_code("short").is_none());
        assert_ne!(new_recovery_code(), new_recovery_code());
    }
}
