//! Users and the roles they hold.

use sqlx::any::AnyRow;

use super::{Db, StoreError, StoreResult, col};

/// A user as stored.
#[derive(Debug, Clone)]
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
    /// Roles held, sorted.
    pub roles: Vec<String>,
}

/// What registration writes.
#[derive(Debug, Clone)]
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
}

const USER_COLS: &str = "id, email, email_verified, name, password_hash, created_at, updated_at";

fn user_from_row(row: &AnyRow) -> StoreResult<UserRow> {
    Ok(UserRow {
        id: col(row, "id")?,
        email: col(row, "email")?,
        email_verified: col::<i64>(row, "email_verified")? != 0,
        name: col(row, "name")?,
        password_hash: col(row, "password_hash")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
        roles: Vec::new(),
    })
}

impl Db {
    /// Inserts a user and its roles in one transaction. A duplicate email is
    /// `Conflict`; an unknown role is `Conflict` too, and nothing is written.
    pub async fn user_insert(&self, new: &NewUser, now: i64) -> StoreResult<UserRow> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO users (id, email, email_verified, name, password_hash, created_at, updated_at) \
             VALUES ($1, $2, 0, $3, $4, $5, $5)",
        )
        .bind(&new.id)
        .bind(&new.email)
        .bind(&new.name)
        .bind(&new.password_hash)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict("email already registered"),
            other => other,
        })?;
        for role in &new.roles {
            let exists: Option<String> =
                sqlx::query_scalar("SELECT name FROM roles WHERE name = $1")
                    .bind(role)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_none() {
                return Err(StoreError::Conflict("unknown role"));
            }
            sqlx::query("INSERT INTO user_roles (user_id, role, created_at) VALUES ($1, $2, $3)")
                .bind(&new.id)
                .bind(role)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let mut roles = new.roles.clone();
        roles.sort();
        roles.dedup();
        Ok(UserRow {
            id: new.id.clone(),
            email: new.email.clone(),
            email_verified: false,
            name: new.name.clone(),
            password_hash: new.password_hash.clone(),
            created_at: now,
            updated_at: now,
            roles,
        })
    }

    /// The user with this normalised email, with roles.
    pub async fn user_by_email(&self, email: &str) -> StoreResult<Option<UserRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLS} FROM users WHERE email = $1"
        )))
        .bind(email)
        .fetch_optional(self.pool())
        .await?;
        self.with_roles(row).await
    }

    /// The user with this id, with roles.
    pub async fn user_by_id(&self, id: &str) -> StoreResult<Option<UserRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLS} FROM users WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        self.with_roles(row).await
    }

    async fn with_roles(&self, row: Option<AnyRow>) -> StoreResult<Option<UserRow>> {
        let Some(row) = row else { return Ok(None) };
        let mut user = user_from_row(&row)?;
        user.roles = self.user_roles(&user.id).await?;
        Ok(Some(user))
    }

    /// Role names held by a user, sorted.
    pub async fn user_roles(&self, user_id: &str) -> StoreResult<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT role FROM user_roles WHERE user_id = $1 ORDER BY role")
                .bind(user_id)
                .fetch_all(self.pool())
                .await?,
        )
    }

    /// Permission strings granted by the given roles, deduplicated and sorted.
    pub async fn role_permissions(&self, roles: &[String]) -> StoreResult<Vec<String>> {
        let mut perms = Vec::new();
        for role in roles {
            let json: Option<String> =
                sqlx::query_scalar("SELECT permissions FROM roles WHERE name = $1")
                    .bind(role)
                    .fetch_optional(self.pool())
                    .await?;
            if let Some(json) = json {
                let list: Vec<String> = serde_json::from_str(&json)
                    .map_err(|e| StoreError::Corrupt(format!("role {role}: {e}")))?;
                perms.extend(list);
            }
        }
        perms.sort();
        perms.dedup();
        Ok(perms)
    }

    /// Replaces a user's password hash (after a change or a rehash on login).
    pub async fn user_set_password(&self, user_id: &str, phc: &str, now: i64) -> StoreResult<()> {
        sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(phc)
            .bind(now)
            .bind(user_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Users ordered by id (creation order), for the CLI and later the admin API.
    pub async fn user_list(&self, after: Option<&str>, limit: i64) -> StoreResult<Vec<UserRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLS} FROM users WHERE id > $1 ORDER BY id LIMIT $2"
        )))
        .bind(after.unwrap_or(""))
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
}
