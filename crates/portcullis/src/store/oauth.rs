//! Authorization codes, remembered consent and spent client-assertion ids.
//!
//! Contract: a code is redeemed by ONE conditional `UPDATE … WHERE used_at IS NULL
//! … RETURNING` in a write transaction that also creates the grant's session, so
//! concurrent redemptions of one code see exactly one winner, and a replay always
//! finds the session it must end.

use super::{Db, SessionRow, StoreResult, col, sessions};

/// An authorization code as stored (its SHA-256, never the code).
#[derive(Debug, Clone)]
pub struct CodeRow {
    /// SHA-256 of the code.
    pub code_hash: String,
    /// The client it was issued to.
    pub client_id: String,
    /// The user who authorised it.
    pub user_id: String,
    /// The redirect URI of the request, which the exchange must repeat.
    pub redirect_uri: String,
    /// Granted scope.
    pub scope: String,
    /// OpenID `nonce`, copied into the ID token.
    pub nonce: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: Option<String>,
    /// Milliseconds of the sign-in.
    pub auth_time: i64,
    /// Authentication methods (JSON array), for `amr`.
    pub amr: String,
    /// Milliseconds.
    pub created_at: i64,
    /// Milliseconds.
    pub expires_at: i64,
}

/// What presenting a code led to.
#[derive(Debug)]
pub enum CodeExchange<E> {
    /// Redeemed: the grant's session was created.
    Issued(CodeRow),
    /// Redeemed but refused by the caller's check (wrong client, verifier…); the
    /// code is spent all the same.
    Refused(E),
    /// Already redeemed: the session it had issued (if any) was ended.
    Replayed {
        /// Whose grant it was.
        user_id: String,
        /// The client it was issued to.
        client_id: String,
    },
    /// Unknown or expired.
    Invalid,
}

/// Why a session ends when the code that opened it comes back.
const CODE_REPLAYED: &str = "code_replayed";

const CODE_COLS: &str = "code_hash, client_id, user_id, redirect_uri, scope, nonce, code_challenge, auth_time, amr, \
                         created_at, expires_at";

fn code_from_row(row: &sqlx::any::AnyRow) -> StoreResult<CodeRow> {
    Ok(CodeRow {
        code_hash: col(row, "code_hash")?,
        client_id: col(row, "client_id")?,
        user_id: col(row, "user_id")?,
        redirect_uri: col(row, "redirect_uri")?,
        scope: col(row, "scope")?,
        nonce: col(row, "nonce")?,
        code_challenge: col(row, "code_challenge")?,
        auth_time: col(row, "auth_time")?,
        amr: col(row, "amr")?,
        created_at: col(row, "created_at")?,
        expires_at: col(row, "expires_at")?,
    })
}

impl Db {
    /// Stores a fresh code.
    pub async fn code_insert(&self, c: &CodeRow) -> StoreResult<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO oauth_codes ({CODE_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        )))
        .bind(&c.code_hash)
        .bind(&c.client_id)
        .bind(&c.user_id)
        .bind(&c.redirect_uri)
        .bind(&c.scope)
        .bind(&c.nonce)
        .bind(&c.code_challenge)
        .bind(c.auth_time)
        .bind(&c.amr)
        .bind(c.created_at)
        .bind(c.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Redeems a code for `client_id` (see the module contract). A code of another
    /// client is `Invalid` and left untouched: a leaked code must not let anyone
    /// spend it or end the grant it issued. `check` sees the code and returns the
    /// session to create with its refresh-token hash, or a refusal; what
    /// `announce` returns for the new session, or for the session a replay ends
    /// (with the reason it ended), a webhook event's type and payload, is fanned
    /// out in the same commit.
    pub async fn code_exchange<E>(
        &self,
        code_hash: &str,
        client_id: &str,
        now: i64,
        check: impl FnOnce(&CodeRow) -> Result<(SessionRow, Option<String>), E>,
        announce: impl FnOnce(&SessionRow, Option<&str>) -> Option<(&'static str, String)>,
    ) -> StoreResult<CodeExchange<E>> {
        let _changed = self.auth_change();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE oauth_codes SET used_at = $1 \
             WHERE code_hash = $2 AND client_id = $3 AND used_at IS NULL AND expires_at > $1 \
             RETURNING {CODE_COLS}"
        )))
        .bind(now)
        .bind(code_hash)
        .bind(client_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            let prior = sqlx::query(
                "SELECT user_id, client_id, grant_session_id, used_at FROM oauth_codes \
                 WHERE code_hash = $1 AND client_id = $2",
            )
            .bind(code_hash)
            .bind(client_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(prior) = prior.filter(|p| col::<Option<i64>>(p, "used_at").ok().flatten().is_some()) else {
                tx.rollback().await?;
                return Ok(CodeExchange::Invalid);
            };
            let mut queued = 0;
            if let Some(sid) = col::<Option<String>>(&prior, "grant_session_id")?
                && let Some(ended) = sessions::end_one(&mut *tx, &sid, None, CODE_REPLAYED, now).await?
                && let Some((event_type, payload)) = announce(&ended, Some(CODE_REPLAYED))
            {
                queued = super::webhooks::fanout(&mut tx, event_type, &payload, now).await?;
            }
            tx.commit().await?;
            super::webhooks::count_queued(queued);
            return Ok(CodeExchange::Replayed {
                user_id: col(&prior, "user_id")?,
                client_id: col(&prior, "client_id")?,
            });
        };
        let code = code_from_row(&row)?;
        match check(&code) {
            Err(e) => {
                tx.commit().await?;
                Ok(CodeExchange::Refused(e))
            }
            Ok((session, refresh_hash)) => {
                sessions::insert_session(&mut tx, &session, None).await?;
                if let Some(hash) = refresh_hash {
                    sessions::insert_refresh(&mut tx, &hash, &session.id, &session.user_id, now, session.expires_at)
                        .await?;
                }
                sqlx::query("UPDATE oauth_codes SET grant_session_id = $1 WHERE code_hash = $2")
                    .bind(&session.id)
                    .bind(code_hash)
                    .execute(&mut *tx)
                    .await?;
                let mut queued = 0;
                if let Some((event_type, payload)) = announce(&session, None) {
                    queued = super::webhooks::fanout(&mut tx, event_type, &payload, now).await?;
                }
                tx.commit().await?;
                super::webhooks::count_queued(queued);
                Ok(CodeExchange::Issued(code))
            }
        }
    }

    /// The scope a user has consented to for a client, if any.
    pub async fn consent_get(&self, user_id: &str, client_id: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT scope FROM oauth_consents WHERE user_id = $1 AND client_id = $2")
            .bind(user_id)
            .bind(client_id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(|r| col(r, "scope")).transpose()
    }

    /// Remembers (replaces) a user's consent to a client.
    pub async fn consent_put(&self, user_id: &str, client_id: &str, scope: &str, now: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO oauth_consents (user_id, client_id, scope, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (user_id, client_id) DO UPDATE SET scope = excluded.scope, updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(scope)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Records a client assertion id; `false` if it was seen before (a replay).
    pub async fn assertion_use(&self, jti_key: &str, expires_at: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO oauth_assertions (jti_key, expires_at) VALUES ($1, $2) ON CONFLICT (jti_key) DO NOTHING",
        )
        .bind(jti_key)
        .bind(expires_at)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Deletes codes and assertion ids past use: expired before `before`.
    pub async fn oauth_purge(&self, before: i64) -> StoreResult<u64> {
        let codes =
            sqlx::query("DELETE FROM oauth_codes WHERE expires_at < $1").bind(before).execute(self.pool()).await?;
        let jtis =
            sqlx::query("DELETE FROM oauth_assertions WHERE expires_at < $1").bind(before).execute(self.pool()).await?;
        Ok(codes.rows_affected() + jtis.rows_affected())
    }
}
