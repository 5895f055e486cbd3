//! Users and the roles they hold.
//!
//! Contract: a user and its role grants are written in one transaction; deleting a
//! user removes its sessions, refresh tokens, role grants and API keys with it (foreign
//! keys with ON DELETE CASCADE), so nothing of a deleted account keeps working.

use sqlx::any::AnyRow;

use super::{Db, StoreError, StoreResult, col};

/// A user as stored.
#[derive(Debug, Clone, Default)]
pub struct UserRow {
    /// `usr_…`.
    pub id: String,
    /// Normalised email, unique.
    pub email: String,
    /// Whether the email was proven.
    pub email_verified: bool,
    /// Display name.
    pub name: Option<String>,
    /// PHC string; `None` for accounts that cannot sign in with a password.
    pub password_hash: Option<String>,
    /// Milliseconds.
    pub created_at: i64,
    /// Milliseconds.
    pub updated_at: i64,
    /// Set while the user is banned.
    pub banned_at: Option<i64>,
    /// JSON object readable by the user, optionally in tokens.
    pub public_metadata: String,
    /// JSON object for the admin API only.
    pub private_metadata: String,
    /// JSON object the user may write.
    pub unsafe_metadata: String,
    /// Roles held, sorted.
    pub roles: Vec<String>,
}

/// What registration and the admin API write.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    /// `usr_…`.
    pub id: String,
    /// Normalised email.
    pub email: String,
    /// Display name.
    pub name: Option<String>,
    /// PHC string.
    pub password_hash: Option<String>,
    /// Roles to grant; must exist.
    pub roles: Vec<String>,
    /// JSON object text.
    pub public_metadata: Option<String>,
    /// JSON object text.
    pub private_metadata: Option<String>,
}

/// Fields an update may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    /// New normalised email.
    pub email: Option<String>,
    /// New name; `Some(None)` clears it.
    pub name: Option<Option<String>>,
    /// JSON object text.
    pub public_metadata: Option<String>,
    /// JSON object text.
    pub private_metadata: Option<String>,
    /// JSON object text.
    pub unsafe_metadata: Option<String>,
}

/// Filters of the admin user list.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// Substring of the email (case-insensitive; emails are stored lower-case).
    pub email: Option<String>,
    /// Holds this role.
    pub role: Option<String>,
    /// Banned or not.
    pub banned: Option<bool>,
}

const USER_COLS: &str = "id, email, email_verified, name, password_hash, created_at, updated_at, banned_at, \
                         public_metadata, private_metadata, unsafe_metadata";

fn user_from_row(row: &AnyRow) -> StoreResult<UserRow> {
    Ok(UserRow {
        id: col(row, "id")?,
        email: col(row, "email")?,
        email_verified: col::<i64>(row, "email_verified")? != 0,
        name: col(row, "name")?,
        password_hash: col(row, "password_hash")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
        banned_at: col(row, "banned_at")?,
        public_metadata: col(row, "public_metadata")?,
        private_metadata: col(row, "private_metadata")?,
        unsafe_metadata: col(row, "unsafe_metadata")?,
        roles: Vec::new(),
    })
}

/// A user row plus its `role_list` aggregate column.
fn user_with_role_list(row: &AnyRow) -> StoreResult<UserRow> {
    let mut user = user_from_row(row)?;
    let list: Option<String> = col(row, "role_list")?;
    let mut roles: Vec<String> = list.unwrap_or_default().split_whitespace().map(str::to_owned).collect();
    roles.sort();
    user.roles = roles;
    Ok(user)
}

fn email_conflict(e: sqlx::Error) -> StoreError {
    match StoreError::from(e) {
        StoreError::Conflict(_) => StoreError::Conflict("email already registered"),
        other => other,
    }
}

impl Db {
    /// Inserts a user and its roles in one transaction. A duplicate email is
    /// `Conflict("email already registered")`; an unknown role is
    /// `Conflict("unknown role")`, and nothing is written.
    pub async fn user_insert(&self, new: &NewUser, now: i64) -> StoreResult<UserRow> {
        let mut tx = self.begin_write().await?;
        insert(&mut tx, new, now).await?;
        tx.commit().await?;
        self.user_by_id(&new.id).await?.ok_or(StoreError::Corrupt("user vanished after insert".into()))
    }

    /// The user with this normalised email, with roles.
    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRow>> {
        self.user_with_roles("email = $1", email).await
    }

    /// The user with this email, without roles: one query whether or not it exists,
    /// so sign-in timing does not tell the two apart.
    pub async fn user_for_login(&self, email: &str) -> StoreResult<Option<UserRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {USER_COLS} FROM users WHERE email = $1")))
            .bind(email)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// The user with this id, with roles.
    pub async fn user_by_id(&self, id: &str) -> StoreResult<Option<UserRow>> {
        self.user_with_roles("id = $1", id).await
    }

    /// The user behind a session, with roles, if the session is live at `now` and
    /// the user is not banned — the bearer check and the user load in one statement.
    pub async fn user_by_live_session(&self, session_id: &str, now: i64) -> StoreResult<Option<UserRow>> {
        let agg = self.roles_agg();
        let cols: Vec<String> = USER_COLS.split(',').map(|c| format!("u.{}", c.trim())).collect();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {}, (SELECT {agg} FROM user_roles r WHERE r.user_id = u.id) AS role_list \
             FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND u.banned_at IS NULL",
            cols.join(", ")
        )))
        .bind(session_id)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(user_with_role_list).transpose()
    }

    /// The aggregate that joins a user's role names into one column: the one place
    /// the two dialects differ in user queries.
    pub(super) fn roles_agg(&self) -> &'static str {
        match self.backend() {
            super::Backend::Sqlite => "group_concat(role, ' ')",
            super::Backend::Postgres => "string_agg(role, ' ')",
        }
    }

    /// One statement for a user and their roles: the roles come from a correlated
    /// aggregate (the one place the dialects differ: `group_concat` / `string_agg`).
    /// Every authenticated request loads a user, so a round trip saved here counts.
    async fn user_with_roles(&self, predicate: &'static str, value: &str) -> StoreResult<Option<UserRow>> {
        with_roles(self.pool(), self.roles_agg(), predicate, value).await
    }

    /// Role names held by a user, sorted.
    pub async fn user_roles(&self, user_id: &str) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT role FROM user_roles WHERE user_id = $1 ORDER BY role")
            .bind(user_id)
            .fetch_all(self.pool())
            .await?)
    }

    /// Replaces a user's password hash (after a change or a rehash on login).
    pub async fn user_set_password(&self, user_id: &str, phc: &str, now: i64) -> StoreResult<()> {
        let _changed = self.auth_change();
        set_password(self.pool(), user_id, phc, now).await
    }

    /// Users in id (= creation) order after the cursor `after`. Ids only grow, so a
    /// page boundary never moves: concurrent inserts appear on later pages, never as
    /// duplicates or gaps.
    pub async fn user_list(&self, filter: &UserFilter, after: Option<&str>, limit: i64) -> StoreResult<Vec<UserRow>> {
        let email_like = filter.email.as_ref().map(|e| {
            let escaped = e.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            format!("%{escaped}%")
        });
        let banned = filter.banned.map(i64::from);
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLS} FROM users WHERE id > $1 \
             AND ($2 IS NULL OR email LIKE $2 ESCAPE '\\') \
             AND ($3 IS NULL OR id IN (SELECT user_id FROM user_roles WHERE role = $3)) \
             AND ($4 IS NULL OR (CASE WHEN banned_at IS NULL THEN 0 ELSE 1 END) = $4) \
             ORDER BY id LIMIT $5"
        )))
        .bind(after.unwrap_or(""))
        .bind(email_like)
        .bind(filter.role.clone())
        .bind(banned)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut user = user_from_row(&row)?;
            user.roles = self.user_roles(&user.id).await?;
            out.push(user);
        }
        Ok(out)
    }

    /// Applies a patch; `Ok(None)` when there is no such user.
    pub async fn user_update(&self, id: &str, patch: &UserPatch, now: i64) -> StoreResult<Option<UserRow>> {
        let mut tx = self.write().await?;
        let found = tx.user_update(id, patch, now).await?;
        tx.commit().await?;
        if !found {
            return Ok(None);
        }
        self.user_by_id(id).await
    }

    /// Deletes a user and, by cascade, everything that lets them in.
    pub async fn user_delete(&self, id: &str) -> StoreResult<bool> {
        let _changed = self.auth_change();
        delete(self.pool(), id).await
    }

    /// Bans (with `Some(now)`) or unbans a user; a ban also ends every session, in the
    /// same transaction, so no token of theirs outlives it.
    pub async fn user_set_banned(&self, id: &str, banned_at: Option<i64>, now: i64) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let (found, _) = tx.user_set_banned(id, banned_at, now).await?;
        tx.commit().await?;
        Ok(found)
    }

    /// Grants a role; `Conflict("unknown role")` if it does not exist. Idempotent.
    pub async fn user_grant_role(&self, user_id: &str, role: &str, now: i64) -> StoreResult<()> {
        let mut tx = self.write().await?;
        tx.user_grant_role(user_id, role, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes a role; returns whether the user held it.
    pub async fn user_revoke_role(&self, user_id: &str, role: &str) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let held = tx.user_revoke_role(user_id, role).await?;
        tx.commit().await?;
        Ok(held)
    }
}

/// Grants a role unless held; whether it was granted now (`Conflict("unknown
/// role")` if there is no such role).
pub(super) async fn grant_role(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user_id: &str,
    role: &str,
    now: i64,
) -> StoreResult<bool> {
    let held: Option<String> = sqlx::query_scalar("SELECT role FROM user_roles WHERE user_id = $1 AND role = $2")
        .bind(user_id)
        .bind(role)
        .fetch_optional(&mut **tx)
        .await?;
    if held.is_some() {
        return Ok(false);
    }
    grant(tx, user_id, role, now).await?;
    Ok(true)
}

/// Revokes a role; whether the user held it.
pub(super) async fn revoke_role<'c, E>(on: E, user_id: &str, role: &str) -> StoreResult<bool>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let done = sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role = $2")
        .bind(user_id)
        .bind(role)
        .execute(on)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Sets or clears the ban; whether the user exists.
pub(super) async fn set_banned<'c, E>(on: E, id: &str, banned_at: Option<i64>, now: i64) -> StoreResult<bool>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let done = sqlx::query("UPDATE users SET banned_at = $1, updated_at = $2 WHERE id = $3")
        .bind(banned_at)
        .bind(now)
        .bind(id)
        .execute(on)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Applies a patch; whether the user exists.
pub(super) async fn update<'c, E>(on: E, id: &str, patch: &UserPatch, now: i64) -> StoreResult<bool>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let (set_name, name) = match &patch.name {
        Some(n) => (1i64, n.clone()),
        None => (0, None),
    };
    let done = sqlx::query(
        "UPDATE users SET email = COALESCE($1, email), \
         name = CASE WHEN $2 = 1 THEN $3 ELSE name END, \
         public_metadata = COALESCE($4, public_metadata), \
         private_metadata = COALESCE($5, private_metadata), \
         unsafe_metadata = COALESCE($6, unsafe_metadata), \
         email_verified = CASE WHEN $1 IS NOT NULL AND $1 <> email THEN 0 ELSE email_verified END, \
         updated_at = $7 WHERE id = $8",
    )
    .bind(patch.email.clone())
    .bind(set_name)
    .bind(name)
    .bind(patch.public_metadata.clone())
    .bind(patch.private_metadata.clone())
    .bind(patch.unsafe_metadata.clone())
    .bind(now)
    .bind(id)
    .execute(on)
    .await
    .map_err(email_conflict)?;
    Ok(done.rows_affected() > 0)
}

async fn grant(tx: &mut sqlx::Transaction<'static, sqlx::Any>, user_id: &str, role: &str, now: i64) -> StoreResult<()> {
    let exists: Option<String> =
        sqlx::query_scalar("SELECT name FROM roles WHERE name = $1").bind(role).fetch_optional(&mut **tx).await?;
    if exists.is_none() {
        return Err(StoreError::Conflict("unknown role"));
    }
    sqlx::query("INSERT INTO user_roles (user_id, role, created_at) VALUES ($1, $2, $3)")
        .bind(user_id)
        .bind(role)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Inserts a user and grants its roles, inside a write transaction.
pub(super) async fn insert(tx: &mut sqlx::Transaction<'static, sqlx::Any>, new: &NewUser, now: i64) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO users (id, email, email_verified, name, password_hash, created_at, updated_at, \
         public_metadata, private_metadata) VALUES ($1, $2, 0, $3, $4, $5, $5, $6, $7)",
    )
    .bind(&new.id)
    .bind(&new.email)
    .bind(&new.name)
    .bind(&new.password_hash)
    .bind(now)
    .bind(new.public_metadata.as_deref().unwrap_or("{}"))
    .bind(new.private_metadata.as_deref().unwrap_or("{}"))
    .execute(&mut **tx)
    .await
    .map_err(email_conflict)?;
    for role in &new.roles {
        grant(tx, &new.id, role, now).await?;
    }
    Ok(())
}

/// Marks `email` proven: the account's address becomes `email`, verified. With
/// `only_if_current`, only while it still is the account's address (a proof of an
/// old address must not move the account back). Whether a row changed; a taken
/// address is `Conflict("email already registered")`.
pub(super) async fn prove_email<'c, E>(
    on: E,
    user_id: &str,
    email: &str,
    only_if_current: bool,
    now: i64,
) -> StoreResult<bool>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let guard = if only_if_current { " AND email = $2" } else { "" };
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE users SET email = $2, email_verified = 1, updated_at = $3 WHERE id = $1{guard}"
    )))
    .bind(user_id)
    .bind(email)
    .bind(now)
    .execute(on)
    .await
    .map_err(email_conflict)?;
    Ok(done.rows_affected() == 1)
}

/// Deletes a user; their sessions, keys, roles, grants and tokens go with them
/// (`ON DELETE CASCADE`). Whether the user existed.
pub(super) async fn delete<'c, E>(on: E, id: &str) -> StoreResult<bool>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let done = sqlx::query("DELETE FROM users WHERE id = $1").bind(id).execute(on).await?;
    Ok(done.rows_affected() > 0)
}

/// `UPDATE` of a user's password hash, on a pool or inside a write transaction.
pub(super) async fn set_password<'c, E>(on: E, user_id: &str, phc: &str, now: i64) -> StoreResult<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
        .bind(phc)
        .bind(now)
        .bind(user_id)
        .execute(on)
        .await?;
    Ok(())
}

/// A user and their roles in one statement (see `Db::user_with_roles`), on `on`.
pub(super) async fn with_roles<'c, E>(
    on: E,
    agg: &str,
    predicate: &'static str,
    value: &str,
) -> StoreResult<Option<UserRow>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {USER_COLS}, (SELECT {agg} FROM user_roles WHERE user_id = users.id) AS role_list \
         FROM users WHERE {predicate}"
    )))
    .bind(value)
    .fetch_optional(on)
    .await?;
    row.as_ref().map(user_with_role_list).transpose()
}
