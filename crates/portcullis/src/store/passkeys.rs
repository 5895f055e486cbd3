//! Passkeys and WebAuthn ceremonies (tables `passkeys`, `webauthn_challenges`,
//! migration 0009).
//!
//! Contract: a ceremony's challenge is spent by [`Db::webauthn_challenge_take`],
//! one conditional UPDATE, so of any number of parallel finishes exactly one
//! proceeds; a credential's stored record (and sign counter) is replaced only if
//! it is still the one that was read ([`Db::passkey_used`]).

use super::{Db, StoreResult, col};

/// A passkey as stored.
#[derive(Debug, Clone, Default)]
pub struct PasskeyRow {
    /// `pk_…`.
    pub id: String,
    /// Whose.
    pub user_id: String,
    /// The WebAuthn credential id, base64url.
    pub credential_id: String,
    /// The user's WebAuthn user handle (a UUID).
    pub user_handle: String,
    /// What the user calls it.
    pub name: String,
    /// The relying party's record of the credential, JSON.
    pub credential: String,
    /// `hwk` or `swk`.
    pub amr: String,
    /// Milliseconds.
    pub created_at: i64,
    /// Milliseconds.
    pub last_used_at: Option<i64>,
}

const COLS: &str = "id, user_id, credential_id, user_handle, name, credential, amr, created_at, last_used_at";

fn passkey(row: &sqlx::any::AnyRow) -> StoreResult<PasskeyRow> {
    Ok(PasskeyRow {
        id: col(row, "id")?,
        user_id: col(row, "user_id")?,
        credential_id: col(row, "credential_id")?,
        user_handle: col(row, "user_handle")?,
        name: col(row, "name")?,
        credential: col(row, "credential")?,
        amr: col(row, "amr")?,
        created_at: col(row, "created_at")?,
        last_used_at: col(row, "last_used_at")?,
    })
}

/// A ceremony in progress.
#[derive(Debug, Clone, Default)]
pub struct ChallengeRow {
    /// `wch_…`: the `challenge_id` clients send back.
    pub id: String,
    /// `register`, `login`, `mfa` or `reauth`.
    pub purpose: String,
    /// Whose (none for a discoverable sign-in).
    pub user_id: Option<String>,
    /// For `mfa`: the pending sign-in it finishes.
    pub mfa_token_hash: Option<String>,
    /// For `reauth`: the session it renews.
    pub session_id: Option<String>,
    /// The relying party's state, JSON.
    pub state: String,
    /// Milliseconds.
    pub created_at: i64,
    /// Milliseconds.
    pub expires_at: i64,
}

/// Stores a passkey.
pub(super) async fn insert<'c, E>(on: E, p: &PasskeyRow) -> StoreResult<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO passkeys (id, user_id, credential_id, user_handle, name, credential, amr, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&p.id)
    .bind(&p.user_id)
    .bind(&p.credential_id)
    .bind(&p.user_handle)
    .bind(&p.name)
    .bind(&p.credential)
    .bind(&p.amr)
    .bind(p.created_at)
    .execute(on)
    .await?;
    Ok(())
}

/// Deletes a user's passkey `id` (`None`: all of them); how many went.
pub(super) async fn remove<'c, E>(on: E, user_id: &str, id: Option<&str>) -> StoreResult<u64>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let done = match id {
        Some(id) => sqlx::query("DELETE FROM passkeys WHERE user_id = $1 AND id = $2").bind(user_id).bind(id),
        None => sqlx::query("DELETE FROM passkeys WHERE user_id = $1").bind(user_id),
    }
    .execute(on)
    .await?;
    Ok(done.rows_affected())
}

impl Db {
    /// A user's passkeys, oldest first.
    pub async fn passkeys(&self, user_id: &str) -> StoreResult<Vec<PasskeyRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM passkeys WHERE user_id = $1 ORDER BY created_at, id"
        )))
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(passkey).collect()
    }

    /// The passkey of a credential id.
    pub async fn passkey_by_credential(&self, credential_id: &str) -> StoreResult<Option<PasskeyRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLS} FROM passkeys WHERE credential_id = $1")))
            .bind(credential_id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(passkey).transpose()
    }

    /// Renames a user's passkey; whether it exists.
    pub async fn passkey_rename(&self, user_id: &str, id: &str, name: &str) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE passkeys SET name = $1 WHERE user_id = $2 AND id = $3")
            .bind(name)
            .bind(user_id)
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a use: the credential's new record (sign counter), if the stored one
    /// is still `seen`; whether it was.
    pub async fn passkey_used(&self, id: &str, seen: &str, credential: &str, now: i64) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE passkeys SET credential = $1, last_used_at = $2 WHERE id = $3 AND credential = $4")
                .bind(credential)
                .bind(now)
                .bind(id)
                .bind(seen)
                .execute(self.pool())
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores a ceremony in progress.
    pub async fn webauthn_challenge_insert(&self, c: &ChallengeRow) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO webauthn_challenges (id, purpose, user_id, mfa_token_hash, session_id, state, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&c.id)
        .bind(&c.purpose)
        .bind(&c.user_id)
        .bind(&c.mfa_token_hash)
        .bind(&c.session_id)
        .bind(&c.state)
        .bind(c.created_at)
        .bind(c.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Spends a ceremony's challenge: the ceremony, if this call spent it (unspent
    /// and unexpired).
    pub async fn webauthn_challenge_take(&self, id: &str, now: i64) -> StoreResult<Option<ChallengeRow>> {
        let done = sqlx::query(
            "UPDATE webauthn_challenges SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(id)
        .execute(self.pool())
        .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT id, purpose, user_id, mfa_token_hash, session_id, state, created_at, expires_at \
             FROM webauthn_challenges WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(ChallengeRow {
                id: col(&r, "id")?,
                purpose: col(&r, "purpose")?,
                user_id: col(&r, "user_id")?,
                mfa_token_hash: col(&r, "mfa_token_hash")?,
                session_id: col(&r, "session_id")?,
                state: col(&r, "state")?,
                created_at: col(&r, "created_at")?,
                expires_at: col(&r, "expires_at")?,
            })
        })
        .transpose()
    }

    /// Deletes ceremonies that expired before `before`.
    pub async fn webauthn_challenges_purge(&self, before: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM webauthn_challenges WHERE expires_at < $1")
            .bind(before)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
