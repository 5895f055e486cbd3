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
        let row =
            sqlx::query("SELECT name, description, permissions, created_at, updated_at FROM roles WHERE name = $1")
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
        row.as_ref().map(role_from_row).transpose()
    }

    /// Creates a role; `Conflict` if the name is taken.
    pub async fn role_insert(&self, role: &RoleRow) -> StoreResult<()> {
        let _changed = self.auth_change();
        sqlx::query(
            "INSERT INTO roles (name, description, permissions, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(&role.name)
        .bind(&role.description)
        .bind(to_json(&role.permissions)?)
        .bind(role.created_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Updates description and/or permissions; `false` if there is no such role.
    pub async fn role_update(
        &self,
        name: &str,
        description: Option<Option<String>>,
        permissions: Option<&[String]>,
        now: i64,
    ) -> StoreResult<bool> {
        let _changed = self.auth_change();
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
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes a role nobody holds. `Conflict("role in use")` while anyone holds it —
    /// checked and deleted in one transaction so a concurrent grant cannot slip in.
    pub async fn role_delete(&self, name: &str) -> StoreResult<bool> {
        let _changed = self.auth_change();
        let mut tx = self.begin_write().await?;
        let holders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM user_roles WHERE role = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        if holders > 0 {
            return Err(StoreError::Conflict("role in use"));
        }
        let done = sqlx::query("DELETE FROM roles WHERE name = $1").bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
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
