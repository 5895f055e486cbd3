//! First-party authentication: accounts, password sign-in, sessions and their
//! refresh tokens, and turning a bearer token into a [`Principal`]. One file per
//! flow; [`Auth`] holds what every flow needs. HTTP lives in `crate::http`, SQL in
//! `crate::store`: this layer decides, they carry.

mod account;
mod browser;
mod email;
mod factors;
mod login;
mod mfa;
mod own;
mod passkeys;
mod refresh;
mod reset;
mod session;
mod sms;
mod tasks;

use std::{sync::Arc, time::Duration};

use portcullis_proto::FieldError;

pub use browser::BrowserSession;
pub use factors::{Enrolled, Enroller, RECOVERY_CODES, TotpSetup, normal_recovery_code};
pub use login::{FirstFactor, Method, amr_values, lock_key};
pub use mfa::{Challenge, MFA_TOKEN_TTL_MS, MfaDone, Pending, Proof, SignIn, mfa_lock_key};
pub use own::AccountData;
pub use passkeys::{CHALLENGE_TTL_MS, Ceremony, PasskeyDone, relying_party};
pub use refresh::{Reuse, Rotation};
pub use sms::SMS_CODE_TTL_MS;
pub use tasks::TASK_KIND;

use crate::{
    abuse::{Blocks, Limiter, LockoutPolicy},
    audit::{Audit, Event},
    crypto,
    ctx::RequestCtx,
    mail::Mailer,
    passwords::{self, HashError, Hasher},
    store::{Db, SessionRow, StoreError, UserRow},
    tokens::{TokenError, Tokens},
    units::RateRule,
};

/// Domain failures of authentication, each with one client-facing meaning.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Wrong email or password, or the account cannot sign in. Never more precise.
    #[error("invalid email or password")]
    InvalidCredentials,
    /// Input failed validation, per field.
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// The object conflicts with an existing one.
    #[error("{0}")]
    Conflict(&'static str),
    /// The bearer or refresh token is not (or no longer) good.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A spent refresh token came back: every session of its user was ended.
    #[error("refresh token was already used; all sessions of this account were ended")]
    RefreshReused,
    /// No such object, or not one the caller may see.
    #[error("not found")]
    NotFound,
    /// Authenticated but lacking these scopes.
    #[error("insufficient scope")]
    Denied(Vec<String>),
    /// A sensitive operation, and the session's sign-in is older than the
    /// re-authentication window.
    #[error("this operation needs a recent sign-in")]
    ReauthRequired,
    /// Authenticated, but this credential cannot do this at all.
    #[error("{0}")]
    Forbidden(&'static str),
    /// Password hashing is at capacity.
    #[error("the server is busy; retry shortly")]
    Overloaded,
    /// Too many attempts from this client; retry after this many seconds.
    #[error("too many attempts")]
    RateLimited(u64),
    /// The account (or email) is locked; retry after this many seconds.
    #[error("account locked")]
    AccountLocked(u64),
    /// Right password, but `accounts.require_verified_email` is on and the
    /// address is not proven yet.
    #[error("the email address of this account is not verified yet")]
    EmailNotVerified,
    /// The `mfa_token` is unknown, spent, expired or past its wrong codes.
    #[error("the mfa_token is not valid")]
    MfaTokenInvalid,
    /// The second-factor code is wrong or was used already.
    #[error("wrong or used code")]
    InvalidMfaCode,
    /// `accounts.mfa = "required"` and the account has no factor: this pending
    /// sign-in enrols one.
    #[error("a second factor must be set up")]
    MfaEnrollmentRequired(crypto::Secret),
    /// A failure on our side.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => AuthError::Conflict(what),
            StoreError::InvalidInput => AuthError::Validation(vec![FieldError {
                field: String::new(),
                code: "invalid_characters".into(),
                message: "the request contains characters that cannot be stored (such as NUL)".into(),
            }]),
            other => AuthError::Internal(other.to_string()),
        }
    }
}

impl From<FieldError> for AuthError {
    fn from(e: FieldError) -> Self {
        AuthError::Validation(vec![e])
    }
}

impl From<HashError> for AuthError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Overloaded => AuthError::Overloaded,
            HashError::Internal(m) => AuthError::Internal(m),
        }
    }
}

impl From<anyhow::Error> for AuthError {
    fn from(e: anyhow::Error) -> Self {
        AuthError::Internal(format!("{e:#}"))
    }
}

/// What a successful login or refresh hands back.
#[derive(Debug)]
pub struct Issued {
    /// JWT access token.
    pub access_token: String,
    /// Opaque refresh token, shown to the client once; only its hash is stored.
    pub refresh_token: crypto::Secret,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The signed-in user.
    pub user: UserRow,
}

/// Authentication settings taken from config.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Session lifetime.
    pub refresh_ttl: Duration,
    /// Put the user's `public_metadata` into access tokens as `metadata`.
    pub include_metadata: bool,
    /// Password attempts per client address; `None` for operator commands.
    pub login_rate: Option<RateRule>,
    /// Registrations per client address.
    pub register_rate: Option<RateRule>,
    /// Failed refreshes per client address.
    pub refresh_failure_rate: Option<RateRule>,
    /// Failed passwords per account over all addresses before the account locks
    /// for addresses it has not signed in from.
    pub account_failure_ceiling: Option<RateRule>,
    /// Progressive lockout.
    pub lockout: LockoutPolicy,
    /// How recent a sign-in sensitive operations need.
    pub reauth_window: Duration,
    /// Sign-in needs a proven address.
    pub require_verified_email: bool,
    /// Users may delete their own account.
    pub self_delete: bool,
    /// Every account needs a second factor.
    pub mfa_required: bool,
    /// The product's name: a password must not be it, and zxcvbn counts it.
    pub product_name: String,
    /// Which notices are mailed.
    pub notify: Notices,
}

/// Which notices are mailed (`email.notify_*`).
#[derive(Debug, Clone, Copy)]
pub struct Notices {
    /// The password changed.
    pub password_changed: bool,
    /// The address changed (to the old address).
    pub email_changed: bool,
    /// The account locked.
    pub account_locked: bool,
    /// A reused refresh token ended every session.
    pub refresh_reuse: bool,
}

impl AuthSettings {
    /// Settings from the configuration.
    pub fn from_config(cfg: &crate::config::Config) -> Self {
        Self {
            refresh_ttl: cfg.tokens.refresh_ttl.0,
            include_metadata: cfg.tokens.include_metadata,
            login_rate: Some(cfg.security.login_rate),
            register_rate: Some(cfg.security.register_rate),
            refresh_failure_rate: Some(cfg.security.refresh_failure_rate),
            account_failure_ceiling: Some(cfg.security.account_failure_ceiling),
            lockout: LockoutPolicy {
                threshold: cfg.security.lockout_threshold,
                durations: cfg.security.lockout_durations.iter().map(|d| d.0).collect(),
            },
            reauth_window: cfg.security.reauth_window.0,
            require_verified_email: cfg.accounts.require_verified_email,
            self_delete: cfg.accounts.self_delete,
            mfa_required: cfg.accounts.mfa == crate::config::MfaPolicy::Required,
            product_name: cfg.email.product_name.clone(),
            notify: Notices {
                password_changed: cfg.email.notify_password_changed,
                email_changed: cfg.email.notify_email_changed,
                account_locked: cfg.email.notify_account_locked,
                refresh_reuse: cfg.email.notify_refresh_reuse,
            },
        }
    }
}

/// The first-party authentication service.
pub struct Auth {
    db: Db,
    hasher: Hasher,
    tokens: Arc<Tokens>,
    settings: AuthSettings,
    audit: Audit,
    limiter: Option<Limiter>,
    register_limiter: Option<Limiter>,
    refresh_limiter: Option<Limiter>,
    clients: Arc<crate::clients::Clients>,
    live: session::LiveCache,
    mailer: Option<Arc<Mailer>>,
    mail_limiters: Option<(Limiter, Limiter)>,
    breach: Option<passwords::BreachCheck>,
    master: Option<Arc<crypto::MasterKey>>,
    sms: Option<sms::SmsCodes>,
    webauthn: Option<Arc<webauthn_rs::Webauthn>>,
}

impl Auth {
    /// Wires the service; its limiters remember refused clients in `blocks`.
    pub fn new(
        db: Db,
        hasher: Hasher,
        tokens: Arc<Tokens>,
        settings: AuthSettings,
        audit: Audit,
        clients: Arc<crate::clients::Clients>,
        blocks: Arc<Blocks>,
    ) -> Self {
        let limit = |scope, rule: Option<RateRule>| rule.map(|r| Limiter::new(db.clone(), scope, r, blocks.clone()));
        let limiter = limit("password", settings.login_rate);
        let register_limiter = limit("register", settings.register_rate);
        let refresh_limiter = limit("refresh_fail", settings.refresh_failure_rate);
        Self {
            db,
            hasher,
            tokens,
            settings,
            audit,
            limiter,
            register_limiter,
            refresh_limiter,
            clients,
            live: Default::default(),
            mailer: None,
            mail_limiters: None,
            breach: None,
            master: None,
            sms: None,
            webauthn: None,
        }
    }

    /// Refuses new passwords that `check` knows from breaches.
    pub fn with_breach_check(mut self, check: Option<passwords::BreachCheck>) -> Self {
        self.breach = check;
        self
    }

    /// Sends mail through `mailer` (verification, reset, notices), at most
    /// `send_rate` per client address and per target address. Without it (operator
    /// commands), flows that need mail fail.
    pub fn with_mail(mut self, mailer: Arc<Mailer>, send_rate: Option<RateRule>, blocks: Arc<Blocks>) -> Self {
        self.mail_limiters = send_rate.map(|r| {
            (
                Limiter::new(self.db.clone(), "mail_client", r, blocks.clone()),
                Limiter::new(self.db.clone(), "mail_target", r, blocks),
            )
        });
        self.mailer = Some(mailer);
        self
    }

    /// The mailer, for flows that send mail.
    fn mailer(&self) -> Result<&Arc<Mailer>, AuthError> {
        self.mailer.as_ref().ok_or_else(|| AuthError::Internal("mail is not configured for this process".into()))
    }

    /// Whether `ctx`'s client is over the limit of failed refreshes (answered from
    /// memory, before any work); the seconds to wait.
    pub fn refresh_blocked(&self, ctx: &RequestCtx) -> Option<u64> {
        self.refresh_limiter.as_ref()?.blocked(ctx.client(), ctx.route(), ctx.now)
    }

    /// Counts a failed refresh of `ctx`'s client; the seconds to wait once over.
    pub async fn refresh_failed(&self, ctx: &RequestCtx) -> Option<u64> {
        self.refresh_limiter.as_ref()?.hit(ctx.client(), ctx.route(), ctx.now).await.err()
    }

    /// Session lifetime settings.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// The database, for handlers that only read.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The token service.
    pub fn tokens(&self) -> &Arc<Tokens> {
        &self.tokens
    }

    /// The password hasher, shared with the admin API.
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// The password policy for an account with `email` and `name`: its own words
    /// (the address, its local part, the name, the product) count against it.
    /// With `security.breached_password_api`, a password known from breaches is
    /// refused too.
    pub(crate) async fn password_errors(
        &self,
        field: &str,
        password: &str,
        email: &str,
        name: Option<&str>,
    ) -> Vec<FieldError> {
        let local = email.split('@').next().unwrap_or_default();
        let words = [email, local, name.unwrap_or_default(), &self.settings.product_name, "portcullis"];
        let mut errors = passwords::check_policy(field, password, &words);
        if errors.is_empty()
            && let Some(check) = &self.breach
            && check.breached(password).await == Some(true)
        {
            errors.push(FieldError {
                field: field.to_owned(),
                code: "breached".into(),
                message: "appears in a known data breach, so attackers try it first; choose another".into(),
            });
        }
        errors
    }

    /// Records an audit event about a user, acted by that user.
    async fn audit(&self, ctx: &RequestCtx, event: &str, success: bool, user_id: Option<&str>, reason: Option<&str>) {
        let e = Event { kind: event, success, user_id, actor: None, reason };
        self.audit.record(ctx, e).await;
    }

    /// Signs an access token for a session of `user` with the roles, permissions
    /// and (if configured) public metadata the user has right now.
    async fn access_token(&self, user: &UserRow, session: &SessionRow, now: i64) -> Result<String, AuthError> {
        let perms = self.db.role_permissions(&user.roles).await?;
        let metadata =
            if self.settings.include_metadata { serde_json::from_str(&user.public_metadata).ok() } else { None };
        let amr = login::amr_values(session.amr.as_deref());
        let claims = crate::tokens::UserClaims { roles: user.roles.clone(), scope: perms.join(" "), metadata, amr };
        Ok(self.tokens.issue(&user.id, &session.id, claims, now)?)
    }
}
