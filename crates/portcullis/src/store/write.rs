//! Composed writes: one transaction, many store operations (see the contract in
//! the module documentation of `store`).

use sqlx::{Any, Transaction};

use super::{
    Db, EmailTokenRow, NewUser, PasskeyRow, Purpose, SessionRow, StoreResult, abuse, api_keys, audit, clients, email,
    mfa, outbox, passkeys, roles, sessions, users, webhooks,
};

/// A write transaction in progress. Its methods are store operations; nothing is
/// visible before [`WriteTx::commit`]; dropped uncommitted, everything is undone.
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    db: Db,
    auth_changed: bool,
    /// Webhook deliveries this transaction wrote, counted once it commits.
    queued: usize,
}

impl Db {
    /// Opens a write transaction (on SQLite, taking the write lock up front).
    pub async fn write(&self) -> StoreResult<WriteTx> {
        Ok(WriteTx { tx: self.begin_write().await?, db: self.clone(), auth_changed: false, queued: 0 })
    }
}

impl WriteTx {
    /// Counts one statement (see `Db::debug_write_statements`).
    fn ran(&self, n: u64) {
        self.db.write_statements.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// Makes every change of this transaction visible at once.
    pub async fn commit(self) -> StoreResult<()> {
        // Marked before the commit, counted when dropped after it: a cache filled
        // from a read racing this commit is stale by the time it could be used.
        let _changed = self.auth_changed.then(|| self.db.auth_change());
        self.tx.commit().await?;
        webhooks::count_queued(self.queued);
        Ok(())
    }

    /// Replaces a user's password hash. A second step begun with the old password
    /// ends with it.
    pub async fn user_set_password(&mut self, user_id: &str, phc: &str, now: i64) -> StoreResult<()> {
        self.auth_changed = true;
        self.ran(2);
        users::set_password(&mut *self.tx, user_id, phc, now).await?;
        mfa::tokens_end(&mut *self.tx, user_id, now).await?;
        Ok(())
    }

    /// Ends every live session of a user except `keep`; the sessions that ended.
    pub async fn sessions_revoke_all(
        &mut self,
        user_id: &str,
        keep: Option<&str>,
        reason: &str,
        now: i64,
    ) -> StoreResult<Vec<SessionRow>> {
        self.auth_changed = true;
        self.ran(1);
        sessions::end_user_sessions(&mut *self.tx, user_id, keep, None, reason, now).await
    }

    /// Stores a new API key (see `Db::api_key_insert`); whether it was stored.
    pub async fn api_key_insert(
        &mut self,
        key: &crate::store::ApiKeyRow,
        secret_hash: &str,
        session_id: Option<&str>,
    ) -> StoreResult<bool> {
        self.ran(1);
        let backend = self.db.backend();
        api_keys::insert(&mut *self.tx, backend, key, secret_hash, session_id).await
    }

    /// Revokes an owner's live key; the key, if this revoked it.
    pub async fn api_key_revoke(
        &mut self,
        owner_id: &str,
        id: &str,
        now: i64,
    ) -> StoreResult<Option<crate::store::ApiKeyRow>> {
        self.ran(1);
        api_keys::revoke(&mut *self.tx, owner_id, id, now).await
    }

    /// Stores a new OAuth client.
    pub async fn client_insert(&mut self, c: &crate::store::ClientRow) -> StoreResult<()> {
        self.ran(1);
        clients::insert(&mut *self.tx, c).await
    }

    /// Deletes a client and ends every grant it holds; whether it existed, and
    /// the sessions that ended.
    pub async fn client_delete(&mut self, id: &str, now: i64) -> StoreResult<(bool, Vec<SessionRow>)> {
        self.auth_changed = true;
        self.ran(2);
        clients::delete(&mut self.tx, id, now).await
    }

    /// Takes up to `limit` sessions that ran out unannounced (see
    /// `sessions::take_expired`).
    pub async fn sessions_take_expired(&mut self, now: i64, limit: i64) -> StoreResult<Vec<SessionRow>> {
        self.ran(1);
        sessions::take_expired(&mut *self.tx, now, limit).await
    }

    /// Creates a role; `Conflict` if the name is taken.
    pub async fn role_insert(&mut self, role: &crate::store::RoleRow) -> StoreResult<()> {
        self.auth_changed = true;
        self.ran(1);
        roles::insert(&mut *self.tx, role).await
    }

    /// Updates a role's description and/or permissions; whether it exists.
    pub async fn role_update(
        &mut self,
        name: &str,
        description: Option<Option<String>>,
        permissions: Option<&[String]>,
        now: i64,
    ) -> StoreResult<bool> {
        self.auth_changed = true;
        self.ran(1);
        roles::update(&mut *self.tx, name, description, permissions, now).await
    }

    /// Deletes a role nobody holds; whether it existed.
    pub async fn role_delete(&mut self, name: &str) -> StoreResult<bool> {
        self.auth_changed = true;
        self.ran(2);
        roles::delete(&mut self.tx, name).await
    }

    /// A role, as this transaction sees it.
    pub async fn role_get(&mut self, name: &str) -> StoreResult<Option<crate::store::RoleRow>> {
        roles::get(&mut *self.tx, name).await
    }

    /// Creates a session with its first refresh token (API sign-in) or its cookie's
    /// hash (hosted pages).
    pub async fn session_create(
        &mut self,
        s: &SessionRow,
        refresh_hash: Option<&str>,
        cookie_hash: Option<&str>,
    ) -> StoreResult<()> {
        self.ran(2);
        sessions::insert_session(&mut self.tx, s, cookie_hash).await?;
        if let Some(hash) = refresh_hash {
            sessions::insert_refresh(&mut self.tx, hash, &s.id, &s.user_id, s.created_at, s.expires_at).await?;
        }
        Ok(())
    }

    /// Ends every live session a user granted to one client; the sessions that ended.
    pub async fn sessions_revoke_client(
        &mut self,
        user_id: &str,
        client_id: &str,
        reason: &str,
        now: i64,
    ) -> StoreResult<Vec<SessionRow>> {
        self.auth_changed = true;
        self.ran(1);
        sessions::end_user_sessions(&mut *self.tx, user_id, None, Some(client_id), reason, now).await
    }

    /// Ends one live session (of `owner`, if given); the session, if it ended now.
    pub async fn session_end(
        &mut self,
        session_id: &str,
        owner: Option<&str>,
        reason: &str,
        now: i64,
    ) -> StoreResult<Option<SessionRow>> {
        self.auth_changed = true;
        self.ran(1);
        sessions::end_one(&mut *self.tx, session_id, owner, reason, now).await
    }

    /// Applies a patch to a user; whether the user exists.
    pub async fn user_update(&mut self, id: &str, patch: &crate::store::UserPatch, now: i64) -> StoreResult<bool> {
        self.auth_changed = true;
        self.ran(1);
        users::update(&mut *self.tx, id, patch, now).await
    }

    /// Bans (`Some(now)`, ending every session) or unbans a user; whether the user
    /// exists, and the sessions the ban ended.
    pub async fn user_set_banned(
        &mut self,
        id: &str,
        banned_at: Option<i64>,
        now: i64,
    ) -> StoreResult<(bool, Vec<SessionRow>)> {
        self.auth_changed = true;
        self.ran(1);
        let found = users::set_banned(&mut *self.tx, id, banned_at, now).await?;
        let ended = match banned_at {
            Some(_) if found => self.sessions_revoke_all(id, None, "banned", now).await?,
            _ => Vec::new(),
        };
        Ok((found, ended))
    }

    /// Grants a role unless held; whether it was granted now.
    pub async fn user_grant_role(&mut self, user_id: &str, role: &str, now: i64) -> StoreResult<bool> {
        self.auth_changed = true;
        self.ran(2);
        users::grant_role(&mut self.tx, user_id, role, now).await
    }

    /// Revokes a role; whether the user held it.
    pub async fn user_revoke_role(&mut self, user_id: &str, role: &str) -> StoreResult<bool> {
        self.auth_changed = true;
        self.ran(1);
        users::revoke_role(&mut *self.tx, user_id, role).await
    }

    /// Theft detection: every live session of a user ends, with the API keys
    /// minted from them (see `sessions::revoke_stolen`); (sessions, keys).
    pub async fn sessions_revoke_stolen(
        &mut self,
        user_id: &str,
        reason: &str,
        now: i64,
    ) -> StoreResult<(Vec<SessionRow>, Vec<super::ApiKeyRow>)> {
        self.auth_changed = true;
        self.ran(2);
        sessions::revoke_stolen(&mut self.tx, user_id, reason, now).await
    }

    /// Renews a live session's sign-in time; whether it was live.
    pub async fn session_reauthenticated(&mut self, session_id: &str, user_id: &str, now: i64) -> StoreResult<bool> {
        self.ran(1);
        sessions::reauthenticated(&mut *self.tx, session_id, user_id, now).await
    }

    /// Inserts a user with its roles (see [`Db::user_insert`] for the conflicts).
    pub async fn user_insert(&mut self, new: &NewUser, now: i64) -> StoreResult<()> {
        self.ran(1 + new.roles.len() as u64);
        users::insert(&mut self.tx, new, now).await
    }

    /// Deletes a user with everything that cascades; whether they existed.
    pub async fn user_delete(&mut self, user_id: &str) -> StoreResult<bool> {
        self.auth_changed = true;
        self.ran(1);
        users::delete(&mut *self.tx, user_id).await
    }

    /// Proves `email` for a user (see `users::prove_email`); whether it changed.
    pub async fn user_prove_email(
        &mut self,
        user_id: &str,
        email: &str,
        only_if_current: bool,
        now: i64,
    ) -> StoreResult<bool> {
        self.auth_changed = true;
        self.ran(1);
        users::prove_email(&mut *self.tx, user_id, email, only_if_current, now).await
    }

    /// Stores a mailed one-time token, retiring the user's earlier ones of its
    /// purpose: only the newest link or code works. Whether it was stored (its
    /// user still exists).
    pub async fn email_token_replace(&mut self, t: &EmailTokenRow, token_hash: &str) -> StoreResult<bool> {
        self.ran(2);
        email::retire(&mut *self.tx, &t.user_id, t.purpose, t.created_at).await?;
        email::insert(&mut *self.tx, t, token_hash).await
    }

    /// Clears the failures of (`email` lock key, `address`) and records the
    /// address as one the owner uses (see `Db::login_succeeded`).
    pub async fn login_succeeded(&mut self, email: &str, address: &str, now: i64) -> StoreResult<()> {
        self.ran(2);
        abuse::succeeded(&mut self.tx, email, address, now).await
    }

    /// Spends a token once (see `store::email`); whether this call spent it.
    pub async fn email_token_spend(&mut self, id: &str, by_code: bool, now: i64) -> StoreResult<bool> {
        self.ran(1);
        email::spend(&mut *self.tx, id, by_code, now).await
    }

    /// Retires a user's unspent tokens of `purpose`.
    pub async fn email_tokens_retire(&mut self, user_id: &str, purpose: Purpose, now: i64) -> StoreResult<u64> {
        self.ran(1);
        email::retire(&mut *self.tx, user_id, purpose, now).await
    }

    /// Queues a message (`kind`, JSON `payload`) for delivery once this transaction
    /// commits; returns its id.
    pub async fn outbox_enqueue(&mut self, kind: &str, payload: &serde_json::Value, now: i64) -> StoreResult<String> {
        self.ran(1);
        outbox::enqueue(&mut *self.tx, kind, payload, now).await
    }

    /// Queues an event (its `payload`: id, type and signed body) to every enabled
    /// endpoint that takes `event_type`, once this transaction commits; how many.
    pub async fn webhook_fanout(&mut self, event_type: &str, payload: &str, now: i64) -> StoreResult<usize> {
        self.ran(1);
        let n = webhooks::fanout(&mut self.tx, event_type, payload, now).await?;
        self.ran(n as u64);
        self.queued += n;
        Ok(n)
    }

    /// A user with roles, as this transaction sees them.
    pub async fn user_by_id(&mut self, id: &str) -> StoreResult<Option<crate::store::UserRow>> {
        let agg = self.db.roles_agg();
        users::with_roles(&mut *self.tx, agg, "id = $1", id).await
    }

    /// A user's confirmed second-factor kinds, as this transaction sees them.
    pub async fn mfa_kinds(&mut self, user_id: &str) -> StoreResult<Vec<String>> {
        Ok(mfa::kinds(&mut self.tx, &[user_id]).await?.remove(user_id).unwrap_or_default())
    }

    /// Records a failed webhook delivery against its endpoint (see
    /// `webhooks::failing`); whether this call disabled it.
    pub async fn webhook_failing(
        &mut self,
        id: &str,
        now: i64,
        disable_after_ms: i64,
        reason: &str,
    ) -> StoreResult<bool> {
        self.ran(2);
        webhooks::failing(&mut self.tx, id, now, disable_after_ms, reason).await
    }

    /// Appends an audit record that must commit with this change (or not at all).
    pub async fn audit_insert(&mut self, r: &crate::store::AuditRecord) -> StoreResult<()> {
        self.ran(1);
        audit::insert(&mut *self.tx, r).await
    }

    /// Confirms a pending factor (at TOTP step `step`); whether it was pending.
    pub async fn mfa_factor_confirm(&mut self, id: &str, step: Option<i64>, now: i64) -> StoreResult<bool> {
        self.ran(1);
        mfa::confirm(&mut *self.tx, id, step, now).await
    }

    /// Accepts a TOTP step once (see `store::mfa`); whether this call did.
    pub async fn totp_step_claim(&mut self, factor_id: &str, step: i64, now: i64) -> StoreResult<bool> {
        self.ran(1);
        mfa::claim_step(&mut *self.tx, factor_id, step, now).await
    }

    /// Records a use of a user's factor of `kind`.
    pub async fn mfa_factor_used(&mut self, user_id: &str, kind: &str, now: i64) -> StoreResult<()> {
        self.ran(1);
        mfa::used(&mut *self.tx, user_id, kind, now).await
    }

    /// Removes a user's factor of `kind`, or every factor with the recovery codes
    /// and pending second steps (`None`); how many factors went.
    pub async fn mfa_factors_remove(&mut self, user_id: &str, kind: Option<&str>, now: i64) -> StoreResult<u64> {
        self.auth_changed = true;
        self.ran(1);
        let gone = mfa::remove(&mut *self.tx, user_id, kind).await?;
        if kind.is_none() {
            self.ran(2);
            mfa::codes_clear(&mut *self.tx, user_id).await?;
            mfa::tokens_end(&mut *self.tx, user_id, now).await?;
        }
        Ok(gone)
    }

    /// Replaces a user's recovery codes with these HMACs (none: deletes them).
    pub async fn recovery_codes_replace(&mut self, user_id: &str, hashes: &[String], now: i64) -> StoreResult<()> {
        self.ran(1 + hashes.len() as u64);
        mfa::codes_clear(&mut *self.tx, user_id).await?;
        for h in hashes {
            mfa::code_insert(&mut *self.tx, user_id, h, now).await?;
        }
        Ok(())
    }

    /// Spends a recovery code once; whether this call did.
    pub async fn recovery_code_spend(&mut self, user_id: &str, code_hash: &str, now: i64) -> StoreResult<bool> {
        self.ran(1);
        mfa::code_spend(&mut *self.tx, user_id, code_hash, now).await
    }

    /// Sets the SMS code of a pending second step (at most `max_sends` per step);
    /// whether it was set.
    pub async fn mfa_token_sms(
        &mut self,
        token_hash: &str,
        code_hash: &str,
        now: i64,
        expires_at: i64,
        max_sends: i64,
    ) -> StoreResult<bool> {
        self.ran(1);
        mfa::token_sms(&mut *self.tx, token_hash, code_hash, now, expires_at, max_sends).await
    }

    /// Stores a passkey.
    pub async fn passkey_insert(&mut self, p: &PasskeyRow) -> StoreResult<()> {
        self.ran(1);
        passkeys::insert(&mut *self.tx, p).await
    }

    /// Deletes a user's passkey (`None`: every one); how many went.
    pub async fn passkeys_remove(&mut self, user_id: &str, id: Option<&str>) -> StoreResult<u64> {
        self.auth_changed = true;
        self.ran(1);
        passkeys::remove(&mut *self.tx, user_id, id).await
    }

    /// Spends a pending second step once; whether this call did.
    pub async fn mfa_token_spend(&mut self, token_hash: &str, now: i64) -> StoreResult<bool> {
        self.ran(1);
        mfa::token_spend(&mut *self.tx, token_hash, false, now).await
    }

    /// Spends a pending second step whose guess this caller took
    /// (`Db::mfa_token_guess`), giving the guess back; whether this call did.
    pub async fn mfa_token_spend_guessed(&mut self, token_hash: &str, now: i64) -> StoreResult<bool> {
        self.ran(1);
        mfa::token_spend(&mut *self.tx, token_hash, true, now).await
    }
}
