//! Passkeys (WebAuthn Level 2, `webauthn-rs`): registration, passkey-first sign-in
//! with discoverable credentials, a passkey as the second factor, and recent
//! authentication with one. User verification is required on the server, the sign
//! counter is checked (and a stale record never overwrites a newer one), and every
//! ceremony's challenge is single-use and lives two minutes.
//!
//! `amr`: `hwk` only when attestation proves a hardware key; registrations here ask
//! for no attestation, so passkeys say `swk`. Because user verification is
//! required, a passkey alone is two factors (`mfa`).

use std::sync::Arc;

use portcullis_proto::FieldError;
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder,
};

use super::{
    Auth, AuthError, FirstFactor, Method,
    factors::{Enrolled, Enroller},
    lock_key,
    mfa::{Pending, mfa_lock_key},
};
use crate::{
    config::WebauthnConfig,
    crypto::{self, Secret},
    ctx::{Principal, RequestCtx},
    mail::Template,
    store::{ChallengeRow, MfaTokenRow, PasskeyRow, UserRow},
};

/// How long a ceremony's challenge works.
pub const CHALLENGE_TTL_MS: i64 = 2 * 60_000;
/// Passkeys one account may hold.
const MAX_PASSKEYS: usize = 20;

/// The relying party of the configuration, or why passkeys are off (`Ok(None)`).
pub fn relying_party(cfg: &WebauthnConfig, issuer: &str, product: &str) -> anyhow::Result<Option<Webauthn>> {
    let issuer_url = Url::parse(issuer)?;
    let origins: Vec<Url> = if cfg.origins.is_empty() {
        vec![issuer_url.clone()]
    } else {
        cfg.origins.iter().map(|o| Url::parse(o)).collect::<Result<_, _>>()?
    };
    let rp_id = match (&cfg.rp_id, issuer_url.domain()) {
        (Some(id), _) => id.clone(),
        (None, Some(host)) => host.to_owned(),
        (None, None) => {
            tracing::warn!(
                issuer,
                "passkeys are off: WebAuthn needs a domain name and the issuer is an IP address; \
                 set webauthn.rp_id (and webauthn.origins)"
            );
            return Ok(None);
        }
    };
    let Some((first, rest)) = origins.split_first() else { return Ok(None) };
    let mut builder = WebauthnBuilder::new(&rp_id, first)
        .map_err(|e| anyhow::anyhow!("webauthn.rp_id {rp_id:?} does not cover the origin {first}: {e}"))?
        .rp_name(product);
    for o in rest {
        builder = builder.append_allowed_origin(o);
    }
    Ok(Some(builder.build().map_err(|e| anyhow::anyhow!("webauthn: {e}"))?))
}

/// A ceremony for the browser: its id and the options for `navigator.credentials`.
#[derive(Debug)]
pub struct Ceremony {
    /// `wch_…`.
    pub challenge_id: String,
    /// `PublicKeyCredentialCreationOptions` or `…RequestOptions`, as JSON.
    pub public_key: serde_json::Value,
}

/// What a finished passkey sign-in did.
#[derive(Debug)]
pub enum PasskeyDone {
    /// A sign-in (passkey-first, or a second factor): the session to open, and the
    /// kind of pending sign-in it finished (`None`: passkey-first).
    SignedIn(Box<FirstFactor>, Option<Pending>),
    /// A recent-authentication check: the session's sign-in time is renewed.
    Reauthenticated,
}

fn bad_credential(why: impl std::fmt::Display) -> AuthError {
    tracing::info!(error = %why, "a WebAuthn response was refused");
    AuthError::Validation(vec![FieldError {
        field: "credential".into(),
        code: "invalid_credential".into(),
        message: "is not a valid answer to this challenge".into(),
    }])
}

fn bad_challenge() -> AuthError {
    AuthError::Validation(vec![FieldError {
        field: "challenge_id".into(),
        code: "invalid_or_expired".into(),
        message: "is unknown, used or expired: start again".into(),
    }])
}

impl Auth {
    /// Offers passkeys through `rp` (none: passkeys are off).
    pub fn with_webauthn(mut self, rp: Option<Webauthn>) -> Self {
        self.webauthn = rp.map(Arc::new);
        self
    }

    /// Whether passkeys are on (a relying party is configured).
    pub fn passkeys_on(&self) -> bool {
        self.webauthn.is_some()
    }

    fn rp(&self) -> Result<&Webauthn, AuthError> {
        self.webauthn.as_deref().ok_or(AuthError::Forbidden(
            "passkeys are off on this server: set webauthn.rp_id to the domain of its pages",
        ))
    }

    async fn ceremony(
        &self,
        ctx: &RequestCtx,
        mut row: ChallengeRow,
        state: impl serde::Serialize,
        options: impl serde::Serialize,
    ) -> Result<Ceremony, AuthError> {
        row.id = crypto::new_id("wch", ctx.now);
        row.state = serde_json::to_string(&state).map_err(|e| AuthError::Internal(e.to_string()))?;
        row.created_at = ctx.now;
        row.expires_at = ctx.now + CHALLENGE_TTL_MS;
        self.db.webauthn_challenge_insert(&row).await?;
        let mut options = serde_json::to_value(options).map_err(|e| AuthError::Internal(e.to_string()))?;
        // A button starts these ceremonies, not a form field's autofill.
        if let Some(o) = options.as_object_mut() {
            o.remove("mediation");
        }
        let public_key = options.get("publicKey").cloned().unwrap_or(options);
        Ok(Ceremony { challenge_id: row.id, public_key })
    }

    /// `POST /v1/me/passkeys/register/start` (recent authentication): creation
    /// options for a new passkey, excluding the user's own.
    pub async fn passkey_register_start(&self, ctx: &RequestCtx, who: &Enroller) -> Result<Ceremony, AuthError> {
        let rp = self.rp()?;
        let user = self.enrolling(who, ctx.now, true).await?;
        let keys = self.db.passkeys(&user.id).await?;
        if keys.len() >= MAX_PASSKEYS {
            return Err(AuthError::Conflict("this account has as many passkeys as it may: remove one first"));
        }
        let handle = keys
            .first()
            .and_then(|k| Uuid::parse_str(&k.user_handle).ok())
            .unwrap_or_else(|| Uuid::from_bytes(crypto::random_bytes::<16>()));
        let exclude = keys.iter().filter_map(|k| crypto::b64url_decode(&k.credential_id)).collect();
        let display = user.name.clone().unwrap_or_else(|| user.email.clone());
        let (options, state) = rp
            .start_passkey_registration(handle, &user.email, &display, Some(exclude))
            .map_err(|e| AuthError::Internal(format!("webauthn: {e}")))?;
        let mut options = serde_json::to_value(options).map_err(|e| AuthError::Internal(e.to_string()))?;
        // Discoverable where the authenticator can: passkey-first sign-in needs it.
        if let Some(sel) = options.pointer_mut("/publicKey/authenticatorSelection").and_then(|v| v.as_object_mut()) {
            sel.insert("residentKey".into(), "preferred".into());
        }
        let row = ChallengeRow {
            purpose: "register".into(),
            user_id: Some(user.id.clone()),
            mfa_token_hash: pending_hash(who),
            ..Default::default()
        };
        self.ceremony(ctx, row, (state, handle), options).await
    }

    /// `POST /v1/me/passkeys/register/finish`: stores the new passkey. The
    /// account's first factor comes with recovery codes; a pending sign-in that had
    /// to enrol completes.
    pub async fn passkey_register_finish(
        &self,
        ctx: &RequestCtx,
        who: &Enroller,
        challenge_id: &str,
        credential: &serde_json::Value,
        name: Option<String>,
    ) -> Result<Enrolled, AuthError> {
        let rp = self.rp()?;
        let user = self.enrolling(who, ctx.now, false).await?;
        let name = passkey_name(name)?;
        let row = self.db.webauthn_challenge_take(challenge_id, ctx.now).await?;
        // The ceremony of this user, started by this same session or pending sign-in.
        let row = row.filter(|r| {
            r.purpose == "register"
                && r.user_id.as_deref() == Some(user.id.as_str())
                && r.mfa_token_hash == pending_hash(who)
        });
        let row = row.ok_or_else(bad_challenge)?;
        let (state, handle): (PasskeyRegistration, Uuid) =
            serde_json::from_str(&row.state).map_err(|e| AuthError::Internal(e.to_string()))?;
        let reg: RegisterPublicKeyCredential = serde_json::from_value(credential.clone()).map_err(bad_credential)?;
        let key = rp.finish_passkey_registration(&reg, &state).map_err(bad_credential)?;
        let stored = PasskeyRow {
            id: crypto::new_id("pk", ctx.now),
            user_id: user.id.clone(),
            credential_id: crypto::b64url(key.cred_id().as_ref()),
            user_handle: handle.to_string(),
            name,
            credential: serde_json::to_string(&key).map_err(|e| AuthError::Internal(e.to_string()))?,
            amr: "swk".into(),
            created_at: ctx.now,
            last_used_at: None,
        };
        self.enrol_passkey(ctx, who, &user, &stored).await
    }

    /// Stores a registered passkey with what a new factor brings (recovery codes,
    /// the notice, a pending sign-in finished).
    async fn enrol_passkey(
        &self,
        ctx: &RequestCtx,
        who: &Enroller,
        user: &UserRow,
        key: &PasskeyRow,
    ) -> Result<Enrolled, AuthError> {
        let first = self.factors_of(&user.id).await?.is_empty();
        let codes = first.then(super::factors::new_recovery_codes);
        let mut tx = self.db.write().await?;
        tx.passkey_insert(key).await?;
        if let Some(codes) = &codes {
            tx.recovery_codes_replace(&user.id, &self.recovery_hashes(&user.id, codes)?, ctx.now).await?;
        }
        if let Some(token) = who.pending_token()
            && !tx.mfa_token_spend(&crypto::sha256_b64(token.expose()), ctx.now).await?
        {
            return Err(AuthError::MfaTokenInvalid);
        }
        self.queue_notice(&mut tx, user, Template::MfaAdded, ctx.now).await?;
        let data = serde_json::to_value(crate::views::passkey_view(key)).unwrap_or_default();
        crate::events::emit_about(&mut tx, "passkey.added", &user.id, data, ctx.now).await?;
        tx.commit().await?;
        self.audit(ctx, "mfa_enrolled", true, Some(&user.id), Some("passkey")).await;
        let recovery_codes = codes.map(|c| c.into_iter().map(Secret::new).collect());
        let completed = match who.pending_token() {
            Some(_) => {
                let mut user = user.clone();
                user.roles = self.db.user_roles(&user.id).await?;
                Some(FirstFactor { user, methods: vec![Method::Password, Method::Passkey] })
            }
            None => None,
        };
        Ok(Enrolled { recovery_codes, completed, passkey: Some(key.clone()) })
    }

    /// `POST /v1/auth/passkey/start`: request options. With no argument, for a
    /// passkey-first sign-in (any discoverable credential); with an `mfa_token`,
    /// that user's passkeys as the second factor; with `reauth`, the caller's, to
    /// renew their session's sign-in.
    pub async fn passkey_sign_in_start(
        &self,
        ctx: &RequestCtx,
        mfa_token: Option<&Secret>,
        reauth: Option<&Principal>,
    ) -> Result<Ceremony, AuthError> {
        let rp = self.rp()?;
        let (purpose, user, session_id) = match (mfa_token, reauth) {
            (Some(token), _) => {
                let purposes = [Pending::Login, Pending::Page, Pending::Reauth];
                ("mfa", Some(self.pending(token.expose(), &purposes, ctx.now).await?.1), None)
            }
            (None, Some(who)) => {
                let (Some(sid), None) = (who.session_id(), who.client_id()) else {
                    return Err(AuthError::Forbidden("this operation needs a signed-in user's own session"));
                };
                ("reauth", Some(self.me(who).await?), Some(sid.to_owned()))
            }
            (None, None) => ("login", None, None),
        };
        let mut row = ChallengeRow {
            purpose: purpose.into(),
            user_id: user.as_ref().map(|u| u.id.clone()),
            mfa_token_hash: mfa_token.map(|t| crypto::sha256_b64(t.expose())),
            session_id,
            ..Default::default()
        };
        let Some(user) = user else {
            // Anyone may start one: each costs a row, so they share the limit of
            // sign-in attempts.
            self.rate_limit_attempt(ctx).await?;
            let (options, state) =
                rp.start_discoverable_authentication().map_err(|e| AuthError::Internal(format!("webauthn: {e}")))?;
            return self.ceremony(ctx, row, state, options).await;
        };
        let rows = self.db.passkeys(&user.id).await?;
        let keys: Vec<Passkey> = rows.iter().filter_map(|k| serde_json::from_str(&k.credential).ok()).collect();
        if keys.is_empty() {
            return Err(AuthError::Conflict("this account has no passkey"));
        }
        let (options, state) =
            rp.start_passkey_authentication(&keys).map_err(|e| AuthError::Internal(format!("webauthn: {e}")))?;
        // The records as they stand now: the state checks the sign counter against
        // these copies, so a record that moved on meanwhile must fail the finish.
        let records: Vec<(String, String)> =
            rows.iter().map(|k| (k.credential_id.clone(), crypto::sha256_b64(&k.credential))).collect();
        row.user_id = Some(user.id);
        self.ceremony(ctx, row, (state, records), options).await
    }

    /// `POST /v1/auth/passkey/finish`: checks the assertion for the ceremony
    /// `challenge_id` (single-use), under the same rate limit, lockout and ban as
    /// passwords. `pages` says the hosted pages finish it (a page's pending
    /// sign-in only finishes there, an API's only on the API).
    pub async fn passkey_sign_in_finish(
        &self,
        ctx: &RequestCtx,
        challenge_id: &str,
        credential: &serde_json::Value,
        mfa_token: Option<&Secret>,
        pages: bool,
    ) -> Result<PasskeyDone, AuthError> {
        let rp = self.rp()?;
        self.rate_limit_attempt(ctx).await?;
        let cred: PublicKeyCredential = serde_json::from_value(credential.clone()).map_err(bad_credential)?;
        let row = self.db.webauthn_challenge_take(challenge_id, ctx.now).await?.ok_or_else(bad_challenge)?;
        if !matches!(row.purpose.as_str(), "login" | "mfa" | "reauth") {
            return Err(bad_challenge());
        }
        let stored = self.db.passkey_by_credential(&crypto::b64url(cred.get_credential_id())).await?;
        let stored = stored.filter(|k| row.user_id.is_none() || row.user_id.as_deref() == Some(k.user_id.as_str()));
        let Some(stored) = stored else { return Err(bad_credential("unknown credential")) };
        let user = self.db.user_by_id(&stored.user_id).await?.ok_or_else(|| bad_credential("no user"))?;
        let pending = match row.purpose.as_str() {
            "mfa" => Some(self.passkey_pending(&row, mfa_token, pages, ctx.now).await?),
            _ => None,
        };
        if user.banned_at.is_some() {
            self.audit(ctx, "login_passkey", false, Some(&user.id), Some("banned")).await;
            return Err(AuthError::InvalidCredentials);
        }
        if row.purpose == "login" && self.settings.require_verified_email && !user.email_verified {
            return Err(AuthError::EmailNotVerified);
        }
        // The lockout of the account's password (passkey-first) or second factor.
        let key = if pending.is_some() { mfa_lock_key(&user.id) } else { lock_key(&user.email) };
        let address = crate::abuse::rate_key(ctx.client());
        self.reserve_attempt(ctx, "login_passkey", &key, &address, Some(&user.id)).await?;
        if let Err(e) = self.verify_assertion(rp, &row, &cred, &stored, &user, ctx.now).await {
            self.audit(ctx, "login_passkey", false, Some(&user.id), Some("bad assertion")).await;
            self.count_failure_of(ctx, &key, &address, Some(&user.id), true).await?;
            return Err(e);
        }
        let method = Method::Passkey;
        let mut tx = self.db.write().await?;
        tx.login_succeeded(&key, &address, ctx.now).await?;
        let done = match (row.purpose.as_str(), &pending) {
            ("reauth", _) => {
                let sid = row.session_id.as_deref().unwrap_or_default();
                if !tx.session_reauthenticated(sid, &user.id, ctx.now).await? {
                    return Err(crate::tokens::TokenError::Invalid("the session of this token has ended").into());
                }
                tx.commit().await?;
                self.audit(ctx, "reauth", true, Some(&user.id), Some("passkey")).await;
                return Ok(PasskeyDone::Reauthenticated);
            }
            ("mfa", Some((hash, pending))) => {
                if !tx.mfa_token_spend(hash, ctx.now).await? {
                    return Err(AuthError::MfaTokenInvalid);
                }
                if pending.purpose == Pending::Reauth.as_str() {
                    // The second step of a recent-authentication check.
                    let sid = pending.session_id.as_deref().unwrap_or_default();
                    if !tx.session_reauthenticated(sid, &user.id, ctx.now).await? {
                        return Err(crate::tokens::TokenError::Invalid("the session of this token has ended").into());
                    }
                    tx.commit().await?;
                    self.audit(ctx, "reauth", true, Some(&user.id), Some("second factor: passkey")).await;
                    return Ok(PasskeyDone::Reauthenticated);
                }
                let mut methods: Vec<Method> = serde_json::from_str::<Vec<String>>(&pending.amr)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|m| Method::parse(m))
                    .collect();
                methods.push(method);
                let purpose = if pages { Pending::Page } else { Pending::Login };
                (methods, Some(purpose))
            }
            ("login", None) => (vec![method], None),
            _ => return Err(bad_challenge()),
        };
        tx.commit().await?;
        self.audit(ctx, "mfa_verified", true, Some(&user.id), Some("passkey")).await;
        let mut user = user;
        user.roles = self.db.user_roles(&user.id).await?;
        Ok(PasskeyDone::SignedIn(Box::new(FirstFactor { user, methods: done.0 }), done.1))
    }

    /// The pending sign-in a second-factor ceremony finishes: its token hash, kind
    /// and methods so far. The token sent must be the ceremony's.
    async fn passkey_pending(
        &self,
        row: &ChallengeRow,
        mfa_token: Option<&Secret>,
        pages: bool,
        now: i64,
    ) -> Result<(String, MfaTokenRow), AuthError> {
        let token = mfa_token.ok_or(AuthError::MfaTokenInvalid)?;
        let hash = crypto::sha256_b64(token.expose());
        if row.mfa_token_hash.as_deref().is_none_or(|h| !crypto::ct_eq(h.as_bytes(), hash.as_bytes())) {
            return Err(AuthError::MfaTokenInvalid);
        }
        let purposes: &[Pending] = if pages { &[Pending::Page] } else { &[Pending::Login, Pending::Reauth] };
        let (pending, _) = self.pending(token.expose(), purposes, now).await?;
        Ok((hash, pending))
    }

    /// Checks an assertion against the ceremony's state and the stored credential,
    /// and stores the new sign counter (only over the record that was read).
    async fn verify_assertion(
        &self,
        rp: &Webauthn,
        row: &ChallengeRow,
        cred: &PublicKeyCredential,
        stored: &PasskeyRow,
        user: &UserRow,
        now: i64,
    ) -> Result<(), AuthError> {
        let mut key: Passkey =
            serde_json::from_str(&stored.credential).map_err(|e| AuthError::Internal(e.to_string()))?;
        let result = if row.purpose == "login" {
            let (handle, _) = rp.identify_discoverable_authentication(cred).map_err(bad_credential)?;
            if handle.to_string() != stored.user_handle || row.user_id.as_ref().is_some_and(|u| *u != user.id) {
                return Err(bad_credential("user handle mismatch"));
            }
            let state: DiscoverableAuthentication =
                serde_json::from_str(&row.state).map_err(|e| AuthError::Internal(e.to_string()))?;
            rp.finish_discoverable_authentication_v2(cred, state, &key).map_err(bad_credential)?
        } else {
            let (state, records): (PasskeyAuthentication, Vec<(String, String)>) =
                serde_json::from_str(&row.state).map_err(|e| AuthError::Internal(e.to_string()))?;
            let unchanged = records.iter().any(|(id, hash)| {
                *id == stored.credential_id
                    && crypto::ct_eq(hash.as_bytes(), crypto::sha256_b64(&stored.credential).as_bytes())
            });
            if !unchanged {
                return Err(bad_credential("the credential was used since this ceremony began"));
            }
            rp.finish_passkey_authentication(cred, &state).map_err(bad_credential)?
        };
        if !result.user_verified() {
            return Err(bad_credential("user verification missing"));
        }
        key.update_credential(&result);
        let record = serde_json::to_string(&key).map_err(|e| AuthError::Internal(e.to_string()))?;
        if !self.db.passkey_used(&stored.id, &stored.credential, &record, now).await? {
            // Another sign-in with this credential landed meanwhile: one of the two
            // replayed or cloned it.
            return Err(bad_credential("the credential was used concurrently"));
        }
        Ok(())
    }

    /// `GET /v1/me/passkeys`.
    pub async fn passkey_list(&self, who: &Principal) -> Result<Vec<PasskeyRow>, AuthError> {
        let user = self.me(who).await?;
        Ok(self.db.passkeys(&user.id).await?)
    }

    /// `PATCH /v1/me/passkeys/{id} {name}`.
    pub async fn passkey_rename(
        &self,
        ctx: &RequestCtx,
        who: &Principal,
        id: &str,
        name: &str,
    ) -> Result<(), AuthError> {
        let user = self.me(who).await?;
        let name = passkey_name(Some(name.to_owned()))?;
        if !self.db.passkey_rename(&user.id, id, &name).await? {
            return Err(AuthError::NotFound);
        }
        self.audit(ctx, "passkey_renamed", true, Some(&user.id), None).await;
        Ok(())
    }

    /// `DELETE /v1/me/passkeys/{id}` (recent authentication); with the last
    /// factor go the recovery codes.
    pub async fn passkey_remove(&self, ctx: &RequestCtx, who: &Principal, id: &str) -> Result<(), AuthError> {
        let user = self.me(who).await?;
        let keys = self.db.passkeys(&user.id).await?;
        let others = keys.len() > 1 || self.factors_of(&user.id).await?.iter().any(|k| *k == "totp" || *k == "sms");
        if keys.iter().any(|k| k.id == id) {
            self.may_remove_factor(others)?;
        }
        let mut tx = self.db.write().await?;
        if tx.passkeys_remove(&user.id, Some(id)).await? == 0 {
            return Err(AuthError::NotFound);
        }
        if !others {
            tx.recovery_codes_replace(&user.id, &[], ctx.now).await?;
        }
        self.queue_notice(&mut tx, &user, Template::MfaRemoved, ctx.now).await?;
        if let Some(k) = keys.iter().find(|k| k.id == id) {
            let data = serde_json::to_value(crate::views::passkey_view(k)).unwrap_or_default();
            crate::events::emit_about(&mut tx, "passkey.removed", &user.id, data, ctx.now).await?;
        }
        tx.commit().await?;
        self.audit(ctx, "mfa_removed", true, Some(&user.id), Some("passkey")).await;
        Ok(())
    }
}

fn pending_hash(who: &Enroller) -> Option<String> {
    who.pending_token().map(|t| crypto::sha256_b64(t.expose()))
}

fn passkey_name(name: Option<String>) -> Result<String, AuthError> {
    let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty()).unwrap_or_else(|| "Passkey".into());
    if name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(crate::validate::field("name", "invalid", "must be 1 to 64 printable characters").into());
    }
    Ok(name)
}
