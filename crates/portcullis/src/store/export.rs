//! What the store holds about one user, for their own export (`GET
//! /v1/me/export`, GDPR articles 15 and 20): every session (ended ones too, while
//! kept), every API key (revoked ones too), every OAuth consent. Bounded: a user's
//! rows are few, but a list never grows without limit.

use super::{ApiKeyRow, Db, SessionRow, StoreResult, api_keys, col, sessions};

/// Rows of one kind at most in an export.
pub const EXPORT_MAX_ROWS: i64 = 10_000;

/// An OAuth consent as stored.
#[derive(Debug, Clone)]
pub struct ConsentRow {
    /// The client.
    pub client_id: String,
    /// Its name, if it is still registered.
    pub client_name: Option<String>,
    /// What the user granted.
    pub scope: String,
    /// Milliseconds.
    pub created_at: i64,
    /// Milliseconds.
    pub updated_at: i64,
}

impl Db {
    /// Every session of a user still stored, newest first.
    pub async fn export_sessions(&self, user_id: &str) -> StoreResult<Vec<SessionRow>> {
        sessions::all_of_user(self.pool(), user_id, EXPORT_MAX_ROWS).await
    }

    /// Every API key of a user, revoked ones too, oldest first.
    pub async fn export_api_keys(&self, user_id: &str) -> StoreResult<Vec<ApiKeyRow>> {
        api_keys::all_of_owner(self.pool(), user_id, EXPORT_MAX_ROWS).await
    }

    /// Every OAuth consent of a user.
    pub async fn export_consents(&self, user_id: &str) -> StoreResult<Vec<ConsentRow>> {
        let rows = sqlx::query(
            "SELECT c.client_id, o.name AS client_name, c.scope, c.created_at, c.updated_at FROM oauth_consents c \
             LEFT JOIN oauth_clients o ON o.id = c.client_id WHERE c.user_id = $1 ORDER BY c.created_at LIMIT $2",
        )
        .bind(user_id)
        .bind(EXPORT_MAX_ROWS)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ConsentRow {
                    client_id: col(r, "client_id")?,
                    client_name: col(r, "client_name")?,
                    scope: col(r, "scope")?,
                    created_at: col(r, "created_at")?,
                    updated_at: col(r, "updated_at")?,
                })
            })
            .collect()
    }
}
