//! Roles: named sets of permission strings.

use super::{Db, StoreError, StoreResult, col};

/// A role as stored.
#[derive(Debug, Clone)]
pub struct RoleRow {
    /// Unique name.
    pub name: String,
    /// What the role is for.
    pub description: Option<String>,
    /// Permission strings, sorted.
    pub permissions: Vec<String>,
    /// Milliseconds (0 for built-ins).
    pub created_at: i64,
    /// Milliseconds.
    pub updated_at: i64,
}

fn role_from_row(row: &sqlx::any::AnyRow) -> StoreResult<RoleRow> {
    let name: String = col(row, "name")?;
    let json: String = col(row, "permissions")?;
    let permissions =
        serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("permissions of role {name}: {e}")))?;
    Ok(RoleRow {
        description: col(row, "description")?,
        permissions,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
        name,
    })
}

fn to_json(perms: &[String]) -> StoreResult<String> {
    serde_json::to_string(perms).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Db {
    /// Every role, by name.
    pub async fn role_list(&self) -> StoreResult<Vec<RoleRow>> {
        let rows =
            sqlx::query("SELECT name, description, permissions, created_at, updated_at FROM roles ORDER BY name")
                .fetch_all(self.pool())
                .await?;
        rows.iter().map(role_from_row).collect()
    }

    /// One role.
    pub async fn role_get(&self, name: &str) -> StoreResult<Option<RoleRow>> {
        get(self.pool(), name).await
    }

    /// Creates a role; `Conflict` if the name is taken.
    pub async fn role_insert(&self, role: &RoleRow) -> StoreResult<()> {
        let mut tx = self.write().await?;
        tx.role_insert(role).await?;
        tx.commit().await
    }

    /// Updates description and/or permissions; `false` if there is no such role.
    pub async fn role_update(
        &self,
        name: &str,
        description: Option<Option<String>>,
        permissions: Option<&[String]>,
        now: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let found = tx.role_update(name, description, permissions, now).await?;
        tx.commit().await?;
        Ok(found)
    }

    /// Deletes a role nobody holds. `Conflict("role in use")` while anyone holds it —
    /// checked and deleted in one transaction so a concurrent grant cannot slip in.
    pub async fn role_delete(&self, name: &str) -> StoreResult<bool> {
        let mut tx = self.write().await?;
        let found = tx.role_delete(name).await?;
        tx.commit().await?;
        Ok(found)
    }

    /// Permission strings granted by the given roles, deduplicated and sorted. Each
    /// role's permissions are reused for up to a second on this node (every token
    /// issue and API-key check asks); a change made here is seen at once.
    pub async fn role_permissions(&self, roles: &[String]) -> StoreResult<Vec<String>> {
        let mut perms = Vec::new();
        for role in roles {
            let generation = self.auth_generation();
            if let Some(cached) = self.role_cache.get(role, generation) {
                perms.extend(cached.iter().cloned());
                continue;
            }
            let found = self.role_get(role).await?.map(|r| r.permissions).unwrap_or_default();
            self.role_cache.put(role, generation, found.clone());
            perms.extend(found);
        }
        perms.sort();
        perms.dedup();
        Ok(perms)
    }
}

/// Inserts a role; `Conflict` if the name is taken.
pub(super) async fn insert<'c, E>(on: E, role: &RoleRow) -> StoreResult<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO roles (name, description, permissions, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
    )
    .bind(&role.name)
    .bind(&role.description)
    .bind(to_json(&role.permissions)?)
    .bind(role.created_at)
    .execute(on)
    .await?;
    Ok(())
}

/// Updates description and/or permissions; whether the role exists.
pub(super) async fn update<'c, E>(
    on: E,
    name: &str,
    description: Option<Option<String>>,
    permissions: Option<&[String]>,
    now: i64,
) -> StoreResult<bool>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let (set_desc, desc) = match description {
        Some(d) => (1i64, d),
        None => (0, None),
    };
    let perms = permissions.map(to_json).transpose()?;
    let done = sqlx::query(
        "UPDATE roles SET description = CASE WHEN $1 = 1 THEN $2 ELSE description END, \
         permissions = COALESCE($3, permissions), updated_at = $4 WHERE name = $5",
    )
    .bind(set_desc)
    .bind(desc)
    .bind(perms)
    .bind(now)
    .bind(name)
    .execute(on)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Deletes a role nobody holds (`Conflict("role in use")` otherwise), checked and
/// deleted in the caller's write transaction; whether it existed.
pub(super) async fn delete(conn: &mut sqlx::AnyConnection, name: &str) -> StoreResult<bool> {
    let holders: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM user_roles WHERE role = $1").bind(name).fetch_one(&mut *conn).await?;
    if holders > 0 {
        return Err(StoreError::Conflict("role in use"));
    }
    let done = sqlx::query("DELETE FROM roles WHERE name = $1").bind(name).execute(&mut *conn).await?;
    Ok(done.rows_affected() > 0)
}

/// One role, on `on`.
pub(super) async fn get<'c, E>(on: E, name: &str) -> StoreResult<Option<RoleRow>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let row = sqlx::query("SELECT name, description, permissions, created_at, updated_at FROM roles WHERE name = $1")
        .bind(name)
        .fetch_optional(on)
        .await?;
    row.as_ref().map(role_from_row).transpose()
}
