//! The OAuth client registry. A client's RFC 7591 metadata is stored as one JSON
//! document (validated before it gets here); its secret only as a SHA-256 hash, with
//! the previous one kept for a grace period after rotation.

use super::{Db, StoreResult, col};

/// A client as stored (never its secret).
#[derive(Debug, Clone)]
pub struct ClientRow {
    /// `cli_…`, also the OAuth `client_id`.
    pub id: String,
    /// `client_name`.
    pub name: String,
    /// The validated metadata, JSON.
    pub metadata: String,
    /// SHA-256 of the current secret; `None` for clients that authenticate otherwise.
    pub secret_hash: Option<String>,
    /// SHA-256 of the secret before the last rotation, while its grace lasts.
    pub previous_secret_hash: Option<String>,
    /// Milliseconds until which the previous secret still works.
    pub previous_expires_at: Option<i64>,
    /// First-party client: consent is not asked.
    pub trusted: bool,
    /// Who registered it: a user id, or `operator`. Its client-credentials grants
    /// never exceed what the owner holds now.
    pub owner: String,
    /// Milliseconds.
    pub created_at: i64,
    /// Milliseconds.
    pub updated_at: i64,
}

const CLIENT_COLS: &str = "id, name, metadata, secret_hash, previous_secret_hash, previous_expires_at, trusted, owner, created_at, \
     updated_at";

fn client_from_row(row: &sqlx::any::AnyRow) -> StoreResult<ClientRow> {
    Ok(ClientRow {
        id: col(row, "id")?,
        name: col(row, "name")?,
        metadata: col(row, "metadata")?,
        secret_hash: col(row, "secret_hash")?,
        previous_secret_hash: col(row, "previous_secret_hash")?,
        previous_expires_at: col(row, "previous_expires_at")?,
        trusted: col::<i64>(row, "trusted")? != 0,
        owner: col(row, "owner")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

impl Db {
    /// Stores a new client.
    pub async fn client_insert(&self, c: &ClientRow) -> StoreResult<()> {
        insert(self.pool(), c).await
    }

    /// One client by id.
    pub async fn client_get(&self, id: &str) -> StoreResult<Option<ClientRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {CLIENT_COLS} FROM oauth_clients WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(client_from_row).transpose()
    }

    /// Clients in id order after `after`, for cursor pages.
    pub async fn client_list(&self, after: Option<&str>, limit: i64) -> StoreResult<Vec<ClientRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CLIENT_COLS} FROM oauth_clients WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2"
        )))
        .bind(after.map(str::to_owned))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(client_from_row).collect()
    }

    /// Replaces name, metadata and the trusted flag (and the owner, when given: who
    /// changed how the client authenticates answers for it); `None` if there is no
    /// such client.
    pub async fn client_update(
        &self,
        id: &str,
        name: &str,
        metadata: &str,
        trusted: bool,
        owner: Option<&str>,
        now: i64,
    ) -> StoreResult<Option<ClientRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE oauth_clients SET name = $1, metadata = $2, trusted = $3, updated_at = $4, \
             owner = COALESCE($6, owner) WHERE id = $5 RETURNING {CLIENT_COLS}"
        )))
        .bind(name)
        .bind(metadata)
        .bind(i64::from(trusted))
        .bind(now)
        .bind(id)
        .bind(owner.map(str::to_owned))
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(client_from_row).transpose()
    }

    /// Installs a new secret hash; the current one becomes the previous one until
    /// `previous_expires_at` (or is dropped at once when that is `None`). Whoever
    /// receives the new secret becomes the `owner`: they hold the credential now.
    pub async fn client_set_secret(
        &self,
        id: &str,
        new_hash: &str,
        previous_expires_at: Option<i64>,
        owner: &str,
        now: i64,
    ) -> StoreResult<Option<ClientRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE oauth_clients SET \
               previous_secret_hash = CASE WHEN $1 IS NULL THEN NULL ELSE secret_hash END, \
               previous_expires_at = $1, secret_hash = $2, updated_at = $3, owner = $5 \
             WHERE id = $4 RETURNING {CLIENT_COLS}"
        )))
        .bind(previous_expires_at)
        .bind(new_hash)
        .bind(now)
        .bind(id)
        .bind(owner)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(client_from_row).transpose()
    }

    /// Deletes a client and ends every session (grant) issued to it; codes and
    /// consents go with it. Returns whether it existed.
    pub async fn client_delete(&self, id: &str, now: i64) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let (found, _) = tx.client_delete(id, now).await?;
        tx.commit().await?;
        Ok(found)
    }

    /// Every client's metadata, for the CORS origin list (clients are few).
    pub async fn client_all_metadata(&self) -> StoreResult<Vec<String>> {
        let rows = sqlx::query("SELECT metadata FROM oauth_clients").fetch_all(self.pool()).await?;
        rows.iter().map(|r| col(r, "metadata")).collect()
    }
}

/// Stores a new client on `on`.
pub(super) async fn insert<'c, E>(on: E, c: &ClientRow) -> StoreResult<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO oauth_clients (id, name, metadata, secret_hash, trusted, owner, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(&c.id)
    .bind(&c.name)
    .bind(&c.metadata)
    .bind(&c.secret_hash)
    .bind(i64::from(c.trusted))
    .bind(&c.owner)
    .bind(c.created_at)
    .execute(on)
    .await?;
    Ok(())
}

/// Deletes a client in the caller's write transaction, ending every session
/// (grant) issued to it; whether it existed, and the sessions that ended.
pub(super) async fn delete(
    conn: &mut sqlx::AnyConnection,
    id: &str,
    now: i64,
) -> StoreResult<(bool, Vec<super::SessionRow>)> {
    let ended = super::sessions::end_client_sessions(&mut *conn, id, now).await?;
    let done = sqlx::query("DELETE FROM oauth_clients WHERE id = $1").bind(id).execute(&mut *conn).await?;
    Ok((done.rows_affected() > 0, ended))
}
