//! Signing keys: private halves sealed with the master key, public halves as JWK.
//!
//! Contract: rotation inserts the new key and schedules every older key's removal
//! from the JWKS in one transaction, so no reader ever sees a key set with two keys
//! that both claim to be the newest, or with no successor for a retired key.

use super::{Db, StoreResult, col};

/// A signing key as stored.
#[derive(Debug, Clone)]
pub struct KeyRow {
    /// Key id, the JWT header `kid`.
    pub kid: String,
    /// `RS256`, `ES256` or `EdDSA`.
    pub alg: String,
    /// PKCS#8 private key sealed with the master key (see `crypto::MasterKey::seal`).
    pub private_key: String,
    /// The public JWK, JSON.
    pub public_jwk: String,
    /// Milliseconds.
    pub created_at: i64,
    /// From this time on the key may sign.
    pub activates_at: i64,
    /// Once set, the key leaves the JWKS at this time; it signs no longer.
    pub publish_until: Option<i64>,
}

impl Db {
    /// Every stored key, newest activation first.
    pub async fn keys_all(&self) -> StoreResult<Vec<KeyRow>> {
        let rows = sqlx::query(
            "SELECT kid, alg, private_key, public_jwk, created_at, activates_at, publish_until \
             FROM signing_keys ORDER BY activates_at DESC, created_at DESC, kid DESC",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(KeyRow {
                    kid: col(r, "kid")?,
                    alg: col(r, "alg")?,
                    private_key: col(r, "private_key")?,
                    public_jwk: col(r, "public_jwk")?,
                    created_at: col(r, "created_at")?,
                    activates_at: col(r, "activates_at")?,
                    publish_until: col(r, "publish_until")?,
                })
            })
            .collect()
    }

    /// Adds `key` and schedules all keys it supersedes to leave the JWKS at
    /// `retire_at` (after every token they signed has expired).
    pub async fn key_rotate_in(&self, key: &KeyRow, retire_at: i64) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE signing_keys SET publish_until = $1 WHERE publish_until IS NULL")
            .bind(retire_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, private_key, public_jwk, created_at, activates_at, publish_until) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL)",
        )
        .bind(&key.kid)
        .bind(&key.alg)
        .bind(&key.private_key)
        .bind(&key.public_jwk)
        .bind(key.created_at)
        .bind(key.activates_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Drops keys that have left the JWKS for good; their tokens have all expired.
    pub async fn keys_purge(&self, now: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM signing_keys WHERE publish_until IS NOT NULL AND publish_until < $1")
            .bind(now)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}
