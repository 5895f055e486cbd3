//! One-time secrets sent by mail (table `email_tokens`, migration 0008): address
//! proofs, password resets, unlock links. Only hashes are stored: SHA-256 of the
//! 256-bit link token, an HMAC of the 6-digit code (see `crypto::MasterKey::mac`).
//!
//! Contract: a token is spent by [`spend`], one conditional UPDATE (`used_at IS
//! NULL`, not expired), so of any number of parallel submissions exactly one wins.
//! A newer token of the same purpose retires the older ones ([`retire`]).

use super::{Db, StoreResult, col};

/// Wrong codes one token takes before its code stops working: with
/// `security.email_send_rate` bounding new codes, guessing six digits stays
/// hopeless even for someone who can also sign in (which clears the lockout).
pub const MAX_CODE_ATTEMPTS: i64 = 5;

/// What spending a token does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Proves the account's current address.
    Verify,
    /// Proves a new address; spending it moves the account there.
    ChangeEmail,
    /// Sets a new password.
    Reset,
    /// Lifts a lock for the address that opens the link.
    Unlock,
}

impl Purpose {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Verify => "verify",
            Purpose::ChangeEmail => "change_email",
            Purpose::Reset => "reset",
            Purpose::Unlock => "unlock",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Purpose::Verify, Purpose::ChangeEmail, Purpose::Reset, Purpose::Unlock].into_iter().find(|p| p.as_str() == s)
    }
}

/// A token as stored (never its secret).
#[derive(Debug, Clone)]
pub struct EmailTokenRow {
    /// `etk_…`.
    pub id: String,
    /// Whose.
    pub user_id: String,
    /// What spending it does.
    pub purpose: Purpose,
    /// The address it was sent to (for a change of address, the new one).
    pub email: String,
    /// HMAC of the code, if it has one.
    pub code_hash: Option<String>,
    /// Milliseconds.
    pub created_at: i64,
    /// The link works until then (milliseconds).
    pub expires_at: i64,
    /// The code works until then (milliseconds).
    pub code_expires_at: Option<i64>,
    /// Spent (or retired) at, milliseconds.
    pub used_at: Option<i64>,
}

const COLS: &str = "id, user_id, purpose, email, code_hash, created_at, expires_at, code_expires_at, used_at";

fn from_row(row: &sqlx::any::AnyRow) -> StoreResult<EmailTokenRow> {
    let purpose: String = col(row, "purpose")?;
    Ok(EmailTokenRow {
        id: col(row, "id")?,
        user_id: col(row, "user_id")?,
        purpose: Purpose::parse(&purpose).ok_or_else(|| super::StoreError::Corrupt(format!("purpose {purpose}")))?,
        email: col(row, "email")?,
        code_hash: col(row, "code_hash")?,
        created_at: col(row, "created_at")?,
        expires_at: col(row, "expires_at")?,
        code_expires_at: col(row, "code_expires_at")?,
        used_at: col(row, "used_at")?,
    })
}

/// Stores a token (with the SHA-256 of its secret) if its user still exists;
/// whether it did.
pub(super) async fn insert<'c, E>(on: E, t: &EmailTokenRow, token_hash: &str) -> StoreResult<bool>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let done = sqlx::query(
        "INSERT INTO email_tokens (id, user_id, purpose, email, token_hash, code_hash, created_at, expires_at, \
         code_expires_at) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE EXISTS (SELECT 1 FROM users WHERE id = $2)",
    )
    .bind(&t.id)
    .bind(&t.user_id)
    .bind(t.purpose.as_str())
    .bind(&t.email)
    .bind(token_hash)
    .bind(&t.code_hash)
    .bind(t.created_at)
    .bind(t.expires_at)
    .bind(t.code_expires_at)
    .execute(on)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Retires a user's unspent tokens of `purpose`; how many.
pub(super) async fn retire<'c, E>(on: E, user_id: &str, purpose: Purpose, now: i64) -> StoreResult<u64>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let done =
        sqlx::query("UPDATE email_tokens SET used_at = $1 WHERE user_id = $2 AND purpose = $3 AND used_at IS NULL")
            .bind(now)
            .bind(user_id)
            .bind(purpose.as_str())
            .execute(on)
            .await?;
    Ok(done.rows_affected())
}

/// Spends a token if it is unspent and its link (or, `by_code`, its code) has not
/// expired; whether this call spent it.
pub(super) async fn spend<'c, E>(on: E, id: &str, by_code: bool, now: i64) -> StoreResult<bool>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let until = if by_code { "code_expires_at" } else { "expires_at" };
    let done = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE email_tokens SET used_at = $1 WHERE id = $2 AND used_at IS NULL AND {until} > $1"
    )))
    .bind(now)
    .bind(id)
    .execute(on)
    .await?;
    Ok(done.rows_affected() == 1)
}

impl Db {
    /// The unspent, unexpired token whose secret hashes to `token_hash`.
    pub async fn email_token_by_hash(&self, token_hash: &str, now: i64) -> StoreResult<Option<EmailTokenRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM email_tokens WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2"
        )))
        .bind(token_hash)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// The newest unspent proof of the address `email` (its account's, or a new
    /// address being proven) whose code still works.
    pub async fn email_token_with_code(&self, email: &str, now: i64) -> StoreResult<Option<EmailTokenRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLS} FROM email_tokens WHERE email = $1 AND purpose IN ('verify', 'change_email') \
             AND used_at IS NULL AND code_expires_at > $2 ORDER BY created_at DESC, id DESC LIMIT 1"
        )))
        .bind(email)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Whether the user signed in (or confirmed their password) after `since`: a
    /// successful sign-in cancels reset links sent before it.
    pub async fn signed_in_since(&self, user_id: &str, since: i64) -> StoreResult<bool> {
        let found: Option<String> =
            sqlx::query_scalar("SELECT id FROM sessions WHERE user_id = $1 AND auth_time > $2 LIMIT 1")
                .bind(user_id)
                .bind(since)
                .fetch_optional(self.pool())
                .await?;
        Ok(found.is_some())
    }

    /// Counts a wrong code against token `id`; at [`MAX_CODE_ATTEMPTS`] its code
    /// stops working (a new one must be sent), whatever the lockout allows.
    pub async fn email_code_failed(&self, id: &str) -> StoreResult<()> {
        sqlx::query(
            "UPDATE email_tokens SET code_attempts = code_attempts + 1, \
             code_expires_at = CASE WHEN code_attempts + 1 >= $2 THEN 0 ELSE code_expires_at END WHERE id = $1",
        )
        .bind(id)
        .bind(MAX_CODE_ATTEMPTS)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Deletes tokens that expired before `before`.
    pub async fn email_tokens_purge(&self, before: i64) -> StoreResult<u64> {
        let done =
            sqlx::query("DELETE FROM email_tokens WHERE expires_at < $1").bind(before).execute(self.pool()).await?;
        Ok(done.rows_affected())
    }
}
