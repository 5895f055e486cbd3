//! Password sign-in, and the one place any password is checked.
//!
//! Every path that checks a user's password goes through [`Auth::check_password`]:
//! per-client rate limit, then the account's failure ceiling, then the (account,
//! address) lockout, then the hash, then failure counting. An
//! alternate path that skips lockout is the classic break of auth servers, so no
//! caller checks a hash itself.
//!
//! An unknown email is verified against a dummy hash, counts failures and locks like
//! a real one, and yields the same errors, so neither body, status nor timing tells
//! which emails have accounts (OWASP ASVS 2.2.1, 3.2.x).

use super::{
    Auth, AuthError, Issued,
    mfa::{Challenge, Pending, SignIn},
};
use crate::ctx::RequestCtx;
use crate::{
    crypto::{self, Secret},
    store::{SessionRow, UserRow},
    validate::normalize_email,
};

/// How a user proved who they are (RFC 8176 `amr` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// A password.
    Password,
    /// An authenticator app's code (RFC 6238).
    Totp,
    /// A code sent by SMS.
    Sms,
    /// A recovery code: a one-time password of a printed list.
    RecoveryCode,
    /// A passkey with user verification (a software-bound key: attestation did
    /// not prove hardware).
    Passkey,
}

impl Method {
    /// The RFC 8176 value.
    pub fn amr(self) -> &'static str {
        match self {
            Method::Password => "pwd",
            Method::Totp | Method::RecoveryCode => "otp",
            Method::Sms => "sms",
            Method::Passkey => "swk",
        }
    }

    /// The name in audit records.
    pub fn name(self) -> &'static str {
        match self {
            Method::Password => "password",
            Method::Totp => "totp",
            Method::Sms => "sms",
            Method::RecoveryCode => "recovery_code",
            Method::Passkey => "passkey",
        }
    }

    /// The method of a stored `amr` value (the first of those sharing it).
    pub fn parse(amr: &str) -> Option<Self> {
        [Method::Password, Method::Totp, Method::Sms, Method::Passkey].into_iter().find(|m| m.amr() == amr)
    }
}

/// A sign-in that passed its first factor: the user, and how. Only opening a
/// session completes it, so a second factor can come in between.
#[derive(Debug)]
pub struct FirstFactor {
    /// The user (with roles).
    pub user: UserRow,
    /// The methods used so far.
    pub methods: Vec<Method>,
}

impl FirstFactor {
    /// The `amr` of the session it opens, as stored: a JSON array, with `mfa`
    /// once two methods were used (RFC 8176 §2).
    pub fn amr(&self) -> String {
        let mut values: Vec<&str> = Vec::new();
        for m in &self.methods {
            if !values.contains(&m.amr()) {
                values.push(m.amr());
            }
        }
        // A passkey verifies its user (PIN or biometric) besides the device: two
        // factors by itself.
        if values.len() > 1 || self.methods.contains(&Method::Passkey) {
            values.push("mfa");
        }
        serde_json::to_string(&values).unwrap_or_else(|_| r#"["pwd"]"#.into())
    }
}

/// The `amr` values of a stored session (sessions from before `amr` was kept
/// signed in with a password).
pub fn amr_values(stored: Option<&str>) -> Vec<String> {
    stored.and_then(|a| serde_json::from_str(a).ok()).unwrap_or_else(|| vec!["pwd".to_owned()])
}

/// The lockout key of what the client typed: the normalised email, or for input
/// that is not an email a hash of it — garbage locks too, with a key of fixed size
/// that any database can store (PostgreSQL refuses NUL in text).
pub fn lock_key(input: &str) -> String {
    normalize_email(input).unwrap_or_else(|_| format!("invalid:{}", crypto::sha256_b64(&input.trim().to_lowercase())))
}

impl Auth {
    /// Checks `password` for `email` under rate limit and lockout. Returns the user
    /// (without roles) and whether their hash should be upgraded.
    pub(super) async fn check_password(
        &self,
        ctx: &RequestCtx,
        event: &str,
        email: &str,
        password: Secret,
    ) -> Result<(UserRow, bool), AuthError> {
        self.rate_limit_attempt(ctx).await?;
        // Take a place in the hashing pool first: a request refused for capacity
        // must not have counted as a failed attempt.
        let admission = self.hasher.admit()?;
        let key = lock_key(email);
        let address = crate::abuse::rate_key(ctx.client());
        let user = match normalize_email(email) {
            Ok(email) => self.db.user_for_login(&email).await?,
            Err(_) => None,
        };
        let uid = user.as_ref().map(|u| u.id.as_str());
        self.reserve_attempt(ctx, event, &key, &address, uid).await?;
        let (ok, outdated) = self
            .hasher
            .verify_admitted(admission, password, user.as_ref().and_then(|u| u.password_hash.clone()))
            .await?;
        if ok && user.is_some() {
            // The right password proves the owner at this address: forget the
            // reserved failure (and a lock this very attempt may have set), and
            // remember the address as one the owner uses.
            self.db.login_succeeded(&key, &address, ctx.now).await?;
        }
        match user {
            // A banned user gets the same answer as a wrong password, and only after
            // the same work, so a ban reveals nothing to someone without the password.
            Some(u) if ok && u.banned_at.is_some() => {
                self.audit(ctx, event, false, Some(&u.id), Some("banned")).await;
                Err(AuthError::InvalidCredentials)
            }
            Some(u) if ok => Ok((u, outdated)),
            _ => {
                let reason = if uid.is_some() { "bad_password" } else { "unknown_user" };
                self.audit(ctx, event, false, uid, Some(reason)).await;
                self.count_failure(ctx, &key, &address, uid).await?;
                Err(AuthError::InvalidCredentials)
            }
        }
    }

    /// The per-address limit of every guess at a secret (passwords, mailed codes).
    pub(super) async fn rate_limit_attempt(&self, ctx: &RequestCtx) -> Result<(), AuthError> {
        if let Some(limiter) = &self.limiter
            && let Err(retry) = limiter.hit(ctx.client(), ctx.route(), ctx.now).await
        {
            // No record per refusal: the block's summary (`rate_limited`, with the
            // route and the count) lands in the audit trail when the block ends.
            metrics::counter!("portcullis_logins_total", "outcome" => "rate_limited").increment(1);
            return Err(AuthError::RateLimited(retry));
        }
        Ok(())
    }

    /// Reserves one guess for (`key`, `address`) under the lockout and the
    /// account's ceiling, before the secret is checked; a success clears it
    /// (`login_succeeded`), a failure escalates it ([`Auth::count_failure`]). At
    /// most `threshold` guesses per (email, address) can ever be in flight, however
    /// many arrive.
    pub(super) async fn reserve_attempt(
        &self,
        ctx: &RequestCtx,
        event: &str,
        key: &str,
        address: &str,
        uid: Option<&str>,
    ) -> Result<(), AuthError> {
        if let Some(secs) = self.over_ceiling(key, address, ctx.now).await? {
            self.audit(ctx, event, false, uid, Some("locked_account_ceiling")).await;
            metrics::counter!("portcullis_logins_total", "outcome" => "locked").increment(1);
            return Err(AuthError::AccountLocked(secs));
        }
        let policy = &self.settings.lockout;
        let mut decision = crate::abuse::Reservation::Busy;
        self.db
            .lock_attempt(
                key,
                address,
                |s| {
                    let (d, next) = policy.reserve(s, ctx.now);
                    decision = d;
                    next
                },
                |_, _| None,
            )
            .await?;
        match decision {
            crate::abuse::Reservation::Granted => Ok(()),
            crate::abuse::Reservation::Locked(until) => {
                self.audit(ctx, event, false, uid, Some("locked")).await;
                metrics::counter!("portcullis_logins_total", "outcome" => "locked").increment(1);
                Err(AuthError::AccountLocked(u64::try_from((until - ctx.now + 999) / 1000).unwrap_or(1).max(1)))
            }
            crate::abuse::Reservation::Busy => {
                self.audit(ctx, event, false, uid, Some("too_many_in_flight")).await;
                Err(AuthError::RateLimited(1))
            }
        }
    }

    /// A wrong password: escalates the (email, address) lock and counts against the
    /// account's ceiling over all addresses.
    pub(super) async fn count_failure(
        &self,
        ctx: &RequestCtx,
        key: &str,
        address: &str,
        uid: Option<&str>,
    ) -> Result<(), AuthError> {
        self.count_failure_of(ctx, key, address, uid, true).await
    }

    /// [`Auth::count_failure`] of a guess that did (`reserved`) or did not take a
    /// place through [`Auth::reserve_attempt`]. A lock of a second factor
    /// (`mfa_lock_key`) is audited but not mailed: the unlock link lifts password
    /// locks; a second-factor lock waits or needs an admin.
    pub(super) async fn count_failure_of(
        &self,
        ctx: &RequestCtx,
        key: &str,
        address: &str,
        uid: Option<&str>,
        reserved: bool,
    ) -> Result<(), AuthError> {
        let policy = &self.settings.lockout;
        let second_factor = key.starts_with("mfa:");
        // The lock and its `account.locked` event commit together.
        let announce = |prior: &crate::store::LockState, next: &crate::store::LockState| {
            let (uid, until) =
                (uid?, next.locked_until.filter(|u| *u > ctx.now && next.locked_until != prior.locked_until)?);
            let data = serde_json::json!({"user_id": uid, "locked_until": crate::clock::rfc3339(until),
                "level": next.lock_level, "second_factor": second_factor, "reason": "failed_attempts"});
            Some(("account.locked", crate::events::Event::new("account.locked", data, ctx.now).payload()))
        };
        let (prior, next) = self
            .db
            .lock_attempt(
                key,
                address,
                |s| {
                    Some(if reserved {
                        policy.after_failure(s, ctx.now)
                    } else {
                        policy.unreserved_failure(s, ctx.now)
                    })
                },
                announce,
            )
            .await?;
        if next.locked_until != prior.locked_until && next.locked_until.is_some_and(|u| u > ctx.now) {
            let what = if second_factor { "second factor, " } else { "" };
            let reason = format!("{what}level {} from {address}", next.lock_level);
            self.audit(ctx, "account_locked", true, uid, Some(&reason)).await;
            metrics::counter!("portcullis_lockouts_total").increment(1);
            if !second_factor {
                self.notify_locked(ctx, key, uid).await;
            }
        }
        if let Some(rule) = self.settings.account_failure_ceiling {
            // Exactly the failure that reaches the ceiling says so, in the commit
            // that counts it.
            let reaches = |c: &crate::store::RateWindow| {
                crate::abuse::over(rule, *c, 0, ctx.now).is_none() && crate::abuse::over(rule, *c, 1, ctx.now).is_some()
            };
            let announce = |c: &crate::store::RateWindow| {
                let data = serde_json::json!({"user_id": uid?, "second_factor": second_factor,
                    "reason": "failure_ceiling"});
                reaches(c)
                    .then(|| ("account.locked", crate::events::Event::new("account.locked", data, ctx.now).payload()))
            };
            let bucket = crate::abuse::ceiling_bucket(key);
            let counts = crate::abuse::count_announced(&self.db, &bucket, rule, ctx.now, announce).await?;
            if reaches(&counts) {
                self.audit(ctx, "account_locked", true, uid, Some("failure ceiling over all addresses")).await;
                metrics::counter!("portcullis_lockouts_total").increment(1);
                if !second_factor {
                    self.notify_locked(ctx, key, uid).await;
                }
            }
        }
        Ok(())
    }

    /// While the account's failures over all addresses are at its ceiling
    /// (`security.account_failure_ceiling`), only addresses that signed in to it
    /// within the last 30 days get through; everyone else waits this many seconds.
    async fn over_ceiling(&self, key: &str, address: &str, now: i64) -> Result<Option<u64>, AuthError> {
        let Some(rule) = self.settings.account_failure_ceiling else { return Ok(None) };
        let Some(counts) = self.db.rate_peek(&crate::abuse::ceiling_bucket(key)).await? else { return Ok(None) };
        let Some(secs) = crate::abuse::over(rule, counts, 1, now) else { return Ok(None) };
        const KNOWN_FOR_MS: i64 = 30 * 86_400_000;
        if self.db.login_succeeded_since(key, address, now - KNOWN_FOR_MS).await? {
            return Ok(None);
        }
        Ok(Some(secs))
    }

    /// Checks email and password and opens a new session, unless a second factor
    /// (or, when every account needs one, its enrolment) must come first.
    pub async fn login(&self, ctx: &RequestCtx, email: &str, password: Secret) -> Result<SignIn<Issued>, AuthError> {
        let factor = self.password_sign_in(ctx, email, password).await?;
        match self.second_step(ctx, &factor, Pending::Login, None).await? {
            Some(c) => Ok(self.challenged(ctx, &factor, c).await),
            None => Ok(SignIn::Done(self.complete_sign_in(ctx, factor).await?)),
        }
    }

    /// A password step that goes on to a second factor or its enrolment.
    pub(super) async fn challenged<T>(&self, ctx: &RequestCtx, factor: &FirstFactor, c: Challenge) -> SignIn<T> {
        let (reason, out) = if c.factors.is_empty() {
            ("mfa_enrollment_required", SignIn::Enrol(c))
        } else {
            ("second factor pending", SignIn::SecondFactor(c))
        };
        self.audit(ctx, "login_password", true, Some(&factor.user.id), Some(reason)).await;
        out
    }

    /// The password check of a sign-in, with its metrics, role loading and hash
    /// upgrade: shared by the JSON login and the hosted sign-in page. It yields a
    /// first factor; opening the session completes it (MFA adds a step between).
    pub(super) async fn password_sign_in(
        &self,
        ctx: &RequestCtx,
        email: &str,
        password: Secret,
    ) -> Result<FirstFactor, AuthError> {
        let checked = self.check_password(ctx, "login", email, password.clone()).await;
        let (mut user, outdated) = match checked {
            Ok(found) => found,
            Err(e) => {
                let outcome = if matches!(e, AuthError::Overloaded) { "overloaded" } else { "failure" };
                if matches!(e, AuthError::Overloaded | AuthError::Internal(_)) {
                    self.audit(ctx, "login", false, None, Some(outcome)).await;
                }
                metrics::counter!("portcullis_logins_total", "outcome" => outcome).increment(1);
                return Err(e);
            }
        };
        // Only the password's owner learns that the address is unproven.
        if self.settings.require_verified_email && !user.email_verified {
            self.audit(ctx, "login", false, Some(&user.id), Some("email_not_verified")).await;
            metrics::counter!("portcullis_logins_total", "outcome" => "failure").increment(1);
            return Err(AuthError::EmailNotVerified);
        }
        // Roles are loaded only now: loading them before the password check would
        // make known emails measurably slower than unknown ones.
        user.roles = self.db.user_roles(&user.id).await?;
        if outdated {
            // Upgrade hashes made with older parameters while we hold the password.
            match self.hasher.hash(password).await {
                Ok(phc) => self.db.user_set_password(&user.id, &phc, ctx.now).await?,
                Err(e) => tracing::warn!(error = %e, "could not upgrade a password hash"),
            }
        }
        Ok(FirstFactor { user, methods: vec![Method::Password] })
    }

    pub(super) async fn open_session(&self, ctx: &RequestCtx, factor: FirstFactor) -> Result<Issued, AuthError> {
        let refresh = crypto::b64url(&crypto::random_bytes::<32>());
        let ttl = i64::try_from(self.settings.refresh_ttl.as_millis()).unwrap_or(i64::MAX);
        let amr = factor.amr();
        let user = factor.user;
        let session = SessionRow {
            amr: Some(amr),
            ..SessionRow::opened(&user.id, ctx.now, ttl, ctx.ip.clone(), ctx.user_agent.clone())
        };
        let mut tx = self.db.write().await?;
        tx.session_create(&session, Some(&crypto::sha256_b64(&refresh)), None).await?;
        crate::events::emit(&mut tx, "session.created", crate::events::session_data(&session, None), ctx.now).await?;
        tx.commit().await?;
        let access_token = self.access_token(&user, &session, ctx.now).await?;
        Ok(Issued {
            access_token,
            refresh_token: Secret::new(refresh),
            expires_in: self.tokens.access_ttl_secs(),
            user,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amr_lists_the_methods_used() {
        let f = FirstFactor { user: UserRow::default(), methods: vec![Method::Password] };
        assert_eq!(f.amr(), r#"["pwd"]"#);
        let f = FirstFactor { user: UserRow::default(), methods: vec![Method::Password, Method::RecoveryCode] };
        assert_eq!(f.amr(), r#"["pwd","otp","mfa"]"#);
    }
}
