//! The second step of a sign-in. A right password for an account with a second
//! factor opens no session: it stores a pending sign-in (the `mfa_token`, 5
//! minutes, bound to the user, the methods proven so far and what it may finish)
//! and only a code of a confirmed factor completes it.
//!
//! Guessing is bounded three ways: each token dies after
//! [`crate::store::MAX_MFA_FAILURES`] wrong codes; every guess goes through the
//! per-address rate limit of passwords and the progressive lockout under the
//! account's own second-factor key ([`mfa_lock_key`]), which a right password
//! does not clear (else knowing the password would buy fresh guesses); and a
//! wrong code also counts against the password lockout of the address.

use super::{Auth, AuthError, FirstFactor, Method, lock_key};
use crate::ctx::RequestCtx;
use crate::{
    crypto::{self, Secret},
    mail::Template,
    store::{FactorRow, MfaTokenRow, UserRow, WriteTx},
};

/// How long a pending sign-in waits for its second factor.
pub const MFA_TOKEN_TTL_MS: i64 = 5 * 60_000;

/// The lockout key of an account's second factor.
pub fn mfa_lock_key(user_id: &str) -> String {
    format!("mfa:{user_id}")
}

/// What a pending sign-in may finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// A JSON-API sign-in: finishes with tokens.
    Login,
    /// A hosted-page sign-in: finishes with a browser session.
    Page,
    /// A recent-authentication check: renews the session's sign-in.
    Reauth,
    /// `accounts.mfa = "required"` and no factor yet: enrolment finishes it (API).
    Enroll,
    /// The same on the hosted pages.
    PageEnroll,
}

impl Pending {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Pending::Login => "login",
            Pending::Page => "page",
            Pending::Reauth => "reauth",
            Pending::Enroll => "enroll",
            Pending::PageEnroll => "page_enroll",
        }
    }
}

/// A password step that needs more: the pending sign-in's token and what can
/// finish it.
#[derive(Debug)]
pub struct Challenge {
    /// The `mfa_token`, shown once.
    pub token: Secret,
    /// The factors the user can finish with.
    pub factors: Vec<&'static str>,
}

/// Where a password step leads.
#[derive(Debug)]
pub enum SignIn<T> {
    /// Signed in.
    Done(T),
    /// A second factor must finish it.
    SecondFactor(Challenge),
    /// `accounts.mfa = "required"` and no factor yet: enrolment must finish it.
    Enrol(Challenge),
}

/// What a finished second step did.
#[derive(Debug)]
pub enum MfaDone {
    /// A sign-in: the session's tokens.
    SignedIn(Box<super::Issued>),
    /// A recent-authentication check: the session's sign-in time is renewed.
    Reauthenticated,
}

/// What proves the second factor.
#[derive(Debug, Clone)]
pub enum Proof {
    /// Six digits from the authenticator app or an SMS.
    Code(String),
    /// A recovery code.
    Recovery(String),
}

/// What a proof matched, to be spent in the completing transaction.
enum Claim {
    Totp { factor_id: String, step: i64 },
    Sms,
    Recovery { hash: String },
}

/// A second factor proven: the pending sign-in it finished, and its user.
pub(super) struct Proven {
    pub(super) row: MfaTokenRow,
    pub(super) factor: FirstFactor,
}

impl Auth {
    /// The factors `user` can finish a sign-in with (empty: none confirmed).
    pub(super) async fn factors_of(&self, user_id: &str) -> Result<Vec<&'static str>, AuthError> {
        let rows = self.db.mfa_factors(user_id).await?;
        let mut out = Vec::new();
        for kind in ["totp", "sms"] {
            if rows.iter().any(|f| f.kind == kind && f.confirmed_at.is_some()) {
                out.push(kind);
            }
        }
        if !self.db.passkeys(user_id).await?.is_empty() {
            out.push("passkey");
        }
        if !out.is_empty() && self.db.recovery_codes_left(user_id).await? > 0 {
            out.insert(1.min(out.len()), "recovery_code");
        }
        Ok(out)
    }

    /// Whether a user has a confirmed second factor.
    pub async fn has_second_factor(&self, user_id: &str) -> Result<bool, AuthError> {
        Ok(!self.factors_of(user_id).await?.is_empty())
    }

    /// Whether a password step for `factor` must go on to a second factor (or,
    /// under `accounts.mfa = "required"`, to enrolment): the pending sign-in if so.
    pub(super) async fn second_step(
        &self,
        ctx: &RequestCtx,
        factor: &FirstFactor,
        purpose: Pending,
        session_id: Option<&str>,
    ) -> Result<Option<Challenge>, AuthError> {
        let factors = self.factors_of(&factor.user.id).await?;
        let purpose = match purpose {
            _ if !factors.is_empty() => purpose,
            Pending::Login if self.settings.mfa_required => Pending::Enroll,
            Pending::Page if self.settings.mfa_required => Pending::PageEnroll,
            _ => return Ok(None),
        };
        let token = self.pending_sign_in(ctx, &factor.user.id, purpose, &factor.amr(), session_id).await?;
        Ok(Some(Challenge { token, factors }))
    }

    /// Stores a pending sign-in; its token.
    pub(super) async fn pending_sign_in(
        &self,
        ctx: &RequestCtx,
        user_id: &str,
        purpose: Pending,
        amr: &str,
        session_id: Option<&str>,
    ) -> Result<Secret, AuthError> {
        let token = format!("mfa_{}", crypto::b64url(&crypto::random_bytes::<32>()));
        let row = MfaTokenRow {
            user_id: user_id.to_owned(),
            purpose: purpose.as_str().to_owned(),
            session_id: session_id.map(str::to_owned),
            amr: amr.to_owned(),
            created_at: ctx.now,
            expires_at: ctx.now + MFA_TOKEN_TTL_MS,
            ..Default::default()
        };
        self.db.mfa_token_insert(&row, &crypto::sha256_b64(&token)).await?;
        Ok(Secret::new(token))
    }

    /// The pending sign-in of `token` if it may finish as one of `purposes`, with
    /// its user (who may still sign in).
    pub(super) async fn pending(
        &self,
        token: &str,
        purposes: &[Pending],
        now: i64,
    ) -> Result<(MfaTokenRow, UserRow), AuthError> {
        if !token.starts_with("mfa_") || token.len() > 100 {
            return Err(AuthError::MfaTokenInvalid);
        }
        let row = self.db.mfa_token(&crypto::sha256_b64(token), now).await?;
        let Some(row) = row.filter(|r| purposes.iter().any(|p| p.as_str() == r.purpose)) else {
            return Err(AuthError::MfaTokenInvalid);
        };
        let user = self.db.user_by_id(&row.user_id).await?.filter(|u| u.banned_at.is_none());
        let user = user.ok_or(AuthError::MfaTokenInvalid)?;
        Ok((row, user))
    }

    /// Checks a second factor for the pending sign-in of `token` and spends both
    /// at once; `finish` adds what completing means to the same commit.
    pub(super) async fn prove_second(
        &self,
        ctx: &RequestCtx,
        token: &Secret,
        proof: Proof,
        purposes: &[Pending],
        finish: impl AsyncFnOnce(&mut WriteTx, &MfaTokenRow) -> Result<(), AuthError>,
    ) -> Result<Proven, AuthError> {
        self.rate_limit_attempt(ctx).await?;
        let (row, mut user) = self.pending(token.expose(), purposes, ctx.now).await?;
        let token_hash = crypto::sha256_b64(token.expose());
        let key = mfa_lock_key(&user.id);
        let address = crate::abuse::rate_key(ctx.client());
        self.reserve_attempt(ctx, "login_mfa", &key, &address, Some(&user.id)).await?;
        if !self.db.mfa_token_guess(&token_hash, ctx.now).await? {
            // Worn out by parallel guesses meanwhile: the reserved attempt counts.
            self.count_failure_of(ctx, &key, &address, Some(&user.id), true).await?;
            return Err(AuthError::MfaTokenInvalid);
        }
        let claim = self.match_proof(&user, &row, &proof, ctx.now).await?;
        let method = match &claim {
            Some(Claim::Totp { .. }) => Method::Totp,
            Some(Claim::Sms) => Method::Sms,
            Some(Claim::Recovery { .. }) => Method::RecoveryCode,
            None => return Err(self.second_failed(ctx, &user, &key, &address, "wrong_code").await),
        };
        let mut tx = self.db.write().await?;
        if !tx.mfa_token_spend_guessed(&token_hash, ctx.now).await? {
            // Finished by a parallel request meanwhile, or its user was banned.
            drop(tx);
            self.audit(ctx, "mfa_verified", false, Some(&user.id), Some("pending sign-in already over")).await;
            return Err(AuthError::MfaTokenInvalid);
        }
        let spent = match &claim {
            Some(Claim::Totp { factor_id, step }) => tx.totp_step_claim(factor_id, *step, ctx.now).await?,
            Some(Claim::Sms) => {
                tx.mfa_factor_used(&user.id, "sms", ctx.now).await?;
                true
            }
            Some(Claim::Recovery { hash }) => tx.recovery_code_spend(&user.id, hash, ctx.now).await?,
            None => false,
        };
        if !spent {
            drop(tx);
            return Err(self.second_failed(ctx, &user, &key, &address, "code_already_used").await);
        }
        tx.login_succeeded(&key, &address, ctx.now).await?;
        if method == Method::RecoveryCode {
            self.queue_notice(&mut tx, &user, Template::RecoveryCodeUsed, ctx.now).await?;
            crate::events::emit_about(&mut tx, "recovery_code.used", &user.id, serde_json::json!({}), ctx.now).await?;
        }
        finish(&mut tx, &row).await?;
        tx.commit().await?;
        self.audit(ctx, "mfa_verified", true, Some(&user.id), Some(method.name())).await;
        user.roles = self.db.user_roles(&user.id).await?;
        let mut methods: Vec<Method> = serde_json::from_str::<Vec<String>>(&row.amr)
            .unwrap_or_default()
            .iter()
            .filter_map(|m| Method::parse(m))
            .collect();
        methods.push(method);
        Ok(Proven { row, factor: FirstFactor { user, methods } })
    }

    /// `POST /v1/auth/login/mfa`: finishes a JSON sign-in (or a recent-
    /// authentication check) with a second factor.
    pub async fn login_mfa(&self, ctx: &RequestCtx, token: &Secret, proof: Proof) -> Result<MfaDone, AuthError> {
        let now = ctx.now;
        let finish = async |tx: &mut WriteTx, row: &MfaTokenRow| -> Result<(), AuthError> {
            if row.purpose == Pending::Reauth.as_str() {
                let sid = row.session_id.as_deref().unwrap_or_default();
                if !tx.session_reauthenticated(sid, &row.user_id, now).await? {
                    return Err(crate::tokens::TokenError::Invalid("the session of this token has ended").into());
                }
            }
            Ok(())
        };
        let proven = self.prove_second(ctx, token, proof, &[Pending::Login, Pending::Reauth], finish).await?;
        if proven.row.purpose == Pending::Reauth.as_str() {
            self.audit(ctx, "reauth", true, Some(&proven.row.user_id), Some("second factor")).await;
            return Ok(MfaDone::Reauthenticated);
        }
        Ok(MfaDone::SignedIn(Box::new(self.complete_sign_in(ctx, proven.factor).await?)))
    }

    /// Opens the session a finished sign-in earned (JSON API).
    pub async fn complete_sign_in(&self, ctx: &RequestCtx, factor: FirstFactor) -> Result<super::Issued, AuthError> {
        let issued = self.open_session(ctx, factor).await?;
        self.audit(ctx, "login", true, Some(&issued.user.id), None).await;
        metrics::counter!("portcullis_logins_total", "outcome" => "success").increment(1);
        Ok(issued)
    }

    /// What `proof` matches among the user's confirmed factors, if anything.
    async fn match_proof(
        &self,
        user: &UserRow,
        row: &MfaTokenRow,
        proof: &Proof,
        now: i64,
    ) -> Result<Option<Claim>, AuthError> {
        match proof {
            Proof::Code(code) => {
                let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
                if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
                    return Ok(None);
                }
                let factors = self.db.mfa_factors(&user.id).await?;
                let confirmed = |kind: &str| factors.iter().find(|f| f.kind == kind && f.confirmed_at.is_some());
                if let Some(f) = confirmed("totp")
                    && let Some(step) = self.totp_step(f, &code, now)?
                {
                    return Ok(Some(Claim::Totp { factor_id: f.id.clone(), step }));
                }
                let sms_ok = confirmed("sms").is_some()
                    && row.sms_expires_at.is_some_and(|t| t > now)
                    && row.sms_code_hash.as_deref().is_some_and(|h| {
                        let expected = self.sms_code_hash(&user.id, &code);
                        expected.is_ok_and(|e| crypto::ct_eq(h.as_bytes(), e.as_bytes()))
                    });
                Ok(sms_ok.then_some(Claim::Sms))
            }
            Proof::Recovery(code) => {
                let Some(normal) = super::factors::normal_recovery_code(code) else { return Ok(None) };
                Ok(Some(Claim::Recovery { hash: self.recovery_hash(&user.id, &normal)? }))
            }
        }
    }

    /// A wrong (or spent) code: the token (its guess stays taken), the
    /// second-factor lockout and the password lockout of the address each count it.
    async fn second_failed(
        &self,
        ctx: &RequestCtx,
        user: &UserRow,
        key: &str,
        address: &str,
        reason: &str,
    ) -> AuthError {
        self.audit(ctx, "mfa_verified", false, Some(&user.id), Some(reason)).await;
        metrics::counter!("portcullis_logins_total", "outcome" => "failure").increment(1);
        let counted = async {
            self.count_failure_of(ctx, key, address, Some(&user.id), true).await?;
            self.count_failure_of(ctx, &lock_key(&user.email), address, Some(&user.id), false).await
        };
        match counted.await {
            Ok(()) => AuthError::InvalidMfaCode,
            Err(e) => e,
        }
    }

    /// The TOTP step `code` matches for factor `f` (±1 step), if any.
    pub(super) fn totp_step(&self, f: &FactorRow, code: &str, now: i64) -> Result<Option<i64>, AuthError> {
        let totp = self.totp_of(f)?;
        let secs = u64::try_from(now / 1000).unwrap_or(0);
        Ok(totp.check(code, secs).and_then(|s| i64::try_from(s).ok()))
    }
}
