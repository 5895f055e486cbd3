//! API keys: machine credentials owned by a user. Only SHA-256 hashes of their
//! secrets are stored; a rotated-out secret keeps working until its grace period ends.

use super::{Db, StoreError, StoreResult, col};

/// An API key as stored (never its secret).
#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    /// `key_…`.
    pub id: String,
    /// The owning user.
    pub owner_id: String,
    /// Human label.
    pub name: String,
    /// The first characters of the secret, to recognise a key in lists.
    pub prefix: String,
    /// Scopes granted (a subset of the owner's permissions at creation).
    pub scopes: Vec<String>,
    /// Milliseconds.
    pub created_at: i64,
    /// Milliseconds; `None` for no expiry.
    pub expires_at: Option<i64>,
    /// Milliseconds of the last use, flushed from memory every few seconds.
    pub last_used_at: Option<i64>,
    /// Set once revoked.
    pub revoked_at: Option<i64>,
}

/// What a secret resolves to, with everything needed to authorise the call.
#[derive(Debug, Clone)]
pub struct KeyLookup {
    /// The key.
    pub key: ApiKeyRow,
    /// Whether the owner is banned (then the key is dead).
    pub owner_banned: bool,
    /// The owner's roles now (a key never exceeds its owner).
    pub owner_roles: Vec<String>,
}

pub(super) const KEY_COLS: &str = "k.id, k.owner_id, k.name, k.prefix, k.scopes, k.created_at, k.expires_at, \
                        k.last_used_at, k.revoked_at";

pub(super) fn key_from_row(row: &sqlx::any::AnyRow) -> StoreResult<ApiKeyRow> {
    let scopes: String = col(row, "scopes")?;
    Ok(ApiKeyRow {
        id: col(row, "id")?,
        owner_id: col(row, "owner_id")?,
        name: col(row, "name")?,
        prefix: col(row, "prefix")?,
        scopes: serde_json::from_str(&scopes).map_err(|e| StoreError::Corrupt(format!("api key scopes: {e}")))?,
        created_at: col(row, "created_at")?,
        expires_at: col(row, "expires_at")?,
        last_used_at: col(row, "last_used_at")?,
        revoked_at: col(row, "revoked_at")?,
    })
}

/// Every key of an owner (revoked ones too), oldest first, at most `limit`.
pub(super) async fn all_of_owner(pool: &sqlx::AnyPool, owner_id: &str, limit: i64) -> StoreResult<Vec<ApiKeyRow>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLS} FROM api_keys k WHERE k.owner_id = $1 ORDER BY k.id LIMIT $2"
    )))
    .bind(owner_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(key_from_row).collect()
}

impl Db {
    /// Stores a new key with the hash of its secret, and the session it was created
    /// from (`None` from the command line), so theft detection can revoke it. A key
    /// minted by a session is stored only while that session lives, and the
    /// statement holds the session's row (`FOR SHARE` on PostgreSQL; the write lock
    /// on SQLite) until it commits, so theft detection
    /// ([`super::WriteTx::sessions_revoke_stolen`], which ends sessions before it revokes their
    /// keys) either sees the key or has ended the session first: no key outlives a
    /// stolen session. Returns false when the session had ended.
    pub async fn api_key_insert(
        &self,
        key: &ApiKeyRow,
        secret_hash: &str,
        session_id: Option<&str>,
    ) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let stored = tx.api_key_insert(key, secret_hash, session_id).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// The key a secret hash belongs to, current or (within its grace) previous,
    /// whatever its state; the caller judges expiry and revocation.
    pub async fn api_key_lookup(&self, secret_hash: &str, now: i64) -> StoreResult<Option<KeyLookup>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLS}, u.banned_at AS owner_banned_at FROM api_keys k JOIN users u ON u.id = k.owner_id \
             WHERE k.secret_hash = $1 OR (k.previous_secret_hash = $1 AND k.previous_expires_at > $2)"
        )))
        .bind(secret_hash)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let key = key_from_row(&row)?;
        let owner_banned = col::<Option<i64>>(&row, "owner_banned_at")?.is_some();
        let owner_roles = self.user_roles(&key.owner_id).await?;
        Ok(Some(KeyLookup { key, owner_banned, owner_roles }))
    }

    /// One key of one owner (the owner is part of the key: another user's id is `None`).
    pub async fn api_key_get(&self, owner_id: &str, id: &str) -> StoreResult<Option<ApiKeyRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLS} FROM api_keys k WHERE k.id = $1 AND k.owner_id = $2"
        )))
        .bind(id)
        .bind(owner_id)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// An owner's keys that are not revoked, in id order after `after`.
    pub async fn api_key_list(&self, owner_id: &str, after: Option<&str>, limit: i64) -> StoreResult<Vec<ApiKeyRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLS} FROM api_keys k WHERE k.owner_id = $1 AND k.revoked_at IS NULL AND k.id > $2 \
             ORDER BY k.id LIMIT $3"
        )))
        .bind(owner_id)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Revokes an owner's key; `false` if no such live key of theirs.
    pub async fn api_key_revoke(&self, owner_id: &str, id: &str, now: i64) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let revoked = tx.api_key_revoke(owner_id, id, now).await?;
        tx.commit().await?;
        Ok(revoked.is_some())
    }

    /// Swaps in a new secret; the old one stays valid until `previous_expires_at`.
    /// One conditional UPDATE: rotating a revoked or foreign key changes nothing.
    pub async fn api_key_rotate(
        &self,
        owner_id: &str,
        id: &str,
        new_hash: &str,
        new_prefix: &str,
        previous_expires_at: i64,
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE api_keys SET previous_secret_hash = secret_hash, previous_expires_at = $1, \
             secret_hash = $2, prefix = $3 WHERE id = $4 AND owner_id = $5 AND revoked_at IS NULL",
        )
        .bind(previous_expires_at)
        .bind(new_hash)
        .bind(new_prefix)
        .bind(id)
        .bind(owner_id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Records last use, never moving it backwards.
    pub async fn api_key_touch(&self, id: &str, at: i64) -> StoreResult<()> {
        sqlx::query(
            "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
        )
        .bind(at)
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }
}

/// Inserts a key (see `Db::api_key_insert`) on `on`; `backend` picks the lock.
pub(super) async fn insert<'c, E>(
    on: E,
    backend: super::Backend,
    key: &ApiKeyRow,
    secret_hash: &str,
    session_id: Option<&str>,
) -> StoreResult<bool>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let scopes = serde_json::to_string(&key.scopes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    const COLS: &str = "INSERT INTO api_keys \
         (id, owner_id, name, prefix, secret_hash, scopes, created_at, expires_at, session_id)";
    let sql = match session_id {
        None => format!("{COLS} VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL)"),
        Some(_) => {
            let lock = if backend == super::Backend::Postgres { " FOR SHARE" } else { "" };
            format!(
                "{COLS} SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE EXISTS (SELECT 1 FROM sessions \
                 WHERE id = $9 AND user_id = $2 AND revoked_at IS NULL AND expires_at > $7{lock})"
            )
        }
    };
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&key.id)
        .bind(&key.owner_id)
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(secret_hash)
        .bind(scopes)
        .bind(key.created_at)
        .bind(key.expires_at);
    if let Some(sid) = session_id {
        q = q.bind(sid.to_owned());
    }
    Ok(q.execute(on).await?.rows_affected() == 1)
}

/// Revokes an owner's live key on `on`; the key, if this revoked it.
pub(super) async fn revoke<'c, E>(on: E, owner_id: &str, id: &str, now: i64) -> StoreResult<Option<ApiKeyRow>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let cols = KEY_COLS.replace("k.", "");
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND owner_id = $3 AND revoked_at IS NULL RETURNING {cols}"
    )))
    .bind(now)
    .bind(id)
    .bind(owner_id)
    .fetch_optional(on)
    .await?;
    row.as_ref().map(key_from_row).transpose()
}
