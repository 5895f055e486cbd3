//! Second factors, recovery codes and pending second steps (tables `mfa_factors`,
//! `recovery_codes`, `mfa_tokens`, migration 0009).
//!
//! Contract: everything single-use is spent by one conditional UPDATE — a TOTP
//! step only if it is later than the last accepted one, a recovery code only
//! while `used_at IS NULL`, an `mfa_token` only while unspent, unexpired and under
//! [`MAX_MFA_FAILURES`] — so of any number of parallel submissions exactly one
//! wins. The spends that complete a sign-in run in one [`super::WriteTx`].

use super::{Db, StoreResult, col};

/// Wrong codes an `mfa_token` takes before it stops working.
pub const MAX_MFA_FAILURES: i64 = 5;

/// A factor as stored (its secret sealed).
#[derive(Debug, Clone, Default)]
pub struct FactorRow {
    /// `mfa_…`.
    pub id: String,
    /// Whose.
    pub user_id: String,
    /// `totp` or `sms`.
    pub kind: String,
    /// The secret (TOTP) or number (SMS), sealed under the master key.
    pub secret_sealed: String,
    /// What the user sees of it (a masked number).
    pub label: Option<String>,
    /// Milliseconds.
    pub created_at: i64,
    /// `None` while the enrolment is pending.
    pub confirmed_at: Option<i64>,
    /// Last use, milliseconds.
    pub last_used_at: Option<i64>,
    /// A pending SMS enrolment: HMAC of the code sent.
    pub code_hash: Option<String>,
    /// Until when that code works (milliseconds).
    pub code_expires_at: Option<i64>,
    /// Wrong codes tried against it.
    pub code_failures: i64,
}

const FACTOR_COLS: &str = "id, user_id, kind, secret_sealed, label, created_at, confirmed_at, last_used_at, \
    code_hash, code_expires_at, code_failures";

fn factor(row: &sqlx::any::AnyRow) -> StoreResult<FactorRow> {
    Ok(FactorRow {
        id: col(row, "id")?,
        user_id: col(row, "user_id")?,
        kind: col(row, "kind")?,
        secret_sealed: col(row, "secret_sealed")?,
        label: col(row, "label")?,
        created_at: col(row, "created_at")?,
        confirmed_at: col(row, "confirmed_at")?,
        last_used_at: col(row, "last_used_at")?,
        code_hash: col(row, "code_hash")?,
        code_expires_at: col(row, "code_expires_at")?,
        code_failures: col(row, "code_failures")?,
    })
}

/// A pending second step (never its token).
#[derive(Debug, Clone, Default)]
pub struct MfaTokenRow {
    /// Whose sign-in.
    pub user_id: String,
    /// `login`, `page`, `reauth` or `enroll`.
    pub purpose: String,
    /// For `reauth`: the session whose sign-in it renews.
    pub session_id: Option<String>,
    /// The methods proven so far, a JSON array of RFC 8176 values.
    pub amr: String,
    /// Wrong codes so far.
    pub failures: i64,
    /// HMAC of the SMS code sent for it, if one was.
    pub sms_code_hash: Option<String>,
    /// The SMS code works until then (milliseconds).
    pub sms_expires_at: Option<i64>,
    /// SMS codes sent for it.
    pub sms_sends: i64,
    /// Milliseconds.
    pub created_at: i64,
    /// Milliseconds.
    pub expires_at: i64,
}

const TOKEN_COLS: &str =
    "user_id, purpose, session_id, amr, failures, sms_code_hash, sms_expires_at, sms_sends, created_at, expires_at";

fn token(row: &sqlx::any::AnyRow) -> StoreResult<MfaTokenRow> {
    Ok(MfaTokenRow {
        user_id: col(row, "user_id")?,
        purpose: col(row, "purpose")?,
        session_id: col(row, "session_id")?,
        amr: col(row, "amr")?,
        failures: col(row, "failures")?,
        sms_code_hash: col(row, "sms_code_hash")?,
        sms_expires_at: col(row, "sms_expires_at")?,
        sms_sends: col(row, "sms_sends")?,
        created_at: col(row, "created_at")?,
        expires_at: col(row, "expires_at")?,
    })
}

/// Marks a pending factor confirmed, at TOTP step `step`; whether it was pending.
pub(super) async fn confirm<'c, E>(on: E, id: &str, step: Option<i64>, now: i64) -> StoreResult<bool>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let done = sqlx::query(
        "UPDATE mfa_factors SET confirmed_at = $1, last_used_at = $1, last_step = $2, code_hash = NULL \
         WHERE id = $3 AND confirmed_at IS NULL",
    )
    .bind(now)
    .bind(step)
    .bind(id)
    .execute(on)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Accepts TOTP step `step` of a confirmed factor if it is later than every step
/// accepted before; whether this call did.
pub(super) async fn claim_step<'c, E>(on: E, id: &str, step: i64, now: i64) -> StoreResult<bool>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let done = sqlx::query(
        "UPDATE mfa_factors SET last_step = $1, last_used_at = $2 WHERE id = $3 AND confirmed_at IS NOT NULL \
         AND (last_step IS NULL OR last_step < $1)",
    )
    .bind(step)
    .bind(now)
    .bind(id)
    .execute(on)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records a use of a confirmed factor that has no steps (SMS).
pub(super) async fn used<'c, E>(on: E, user_id: &str, kind: &str, now: i64) -> StoreResult<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query("UPDATE mfa_factors SET last_used_at = $1 WHERE user_id = $2 AND kind = $3")
        .bind(now)
        .bind(user_id)
        .bind(kind)
        .execute(on)
        .await?;
    Ok(())
}

/// Removes a user's factor of `kind` (`None`: every factor); how many went.
pub(super) async fn remove<'c, E>(on: E, user_id: &str, kind: Option<&str>) -> StoreResult<u64>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let done = match kind {
        Some(k) => sqlx::query("DELETE FROM mfa_factors WHERE user_id = $1 AND kind = $2").bind(user_id).bind(k),
        None => sqlx::query("DELETE FROM mfa_factors WHERE user_id = $1").bind(user_id),
    }
    .execute(on)
    .await?;
    Ok(done.rows_affected())
}

/// Deletes a user's recovery codes.
pub(super) async fn codes_clear<'c, E>(on: E, user_id: &str) -> StoreResult<u64>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let done = sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1").bind(user_id).execute(on).await?;
    Ok(done.rows_affected())
}

/// Stores one recovery code (its HMAC).
pub(super) async fn code_insert<'c, E>(on: E, user_id: &str, code_hash: &str, now: i64) -> StoreResult<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query("INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)")
        .bind(user_id)
        .bind(code_hash)
        .bind(now)
        .execute(on)
        .await?;
    Ok(())
}

/// Spends a recovery code; whether this call did.
pub(super) async fn code_spend<'c, E>(on: E, user_id: &str, code_hash: &str, now: i64) -> StoreResult<bool>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let done =
        sqlx::query("UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL")
            .bind(now)
            .bind(user_id)
            .bind(code_hash)
            .execute(on)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Spends a pending second step if it is unspent, unexpired and under the
/// failure cap; whether this call did.
///
/// `reserved`: the caller holds a guess taken by [`Db::mfa_token_guess`], which
/// a success gives back. Either way, a banned user's step is never spent.
pub(super) async fn token_spend<'c, E>(on: E, token_hash: &str, reserved: bool, now: i64) -> StoreResult<bool>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let sql = if reserved {
        "UPDATE mfa_tokens SET used_at = $1, failures = failures - 1 WHERE token_hash = $2 AND used_at IS NULL \
         AND expires_at > $1 AND failures <= $3 AND failures > 0 AND EXISTS \
         (SELECT 1 FROM users WHERE users.id = mfa_tokens.user_id AND users.banned_at IS NULL)"
    } else {
        "UPDATE mfa_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 \
         AND failures < $3 AND EXISTS \
         (SELECT 1 FROM users WHERE users.id = mfa_tokens.user_id AND users.banned_at IS NULL)"
    };
    let done = sqlx::query(sql).bind(now).bind(token_hash).bind(MAX_MFA_FAILURES).execute(on).await?;
    Ok(done.rows_affected() == 1)
}

/// Sets the SMS code of a pending second step (its HMAC), if it still works and
/// fewer than `max_sends` were sent for it; whether it was set.
pub(super) async fn token_sms<'c, E>(
    on: E,
    token_hash: &str,
    code_hash: &str,
    now: i64,
    expires_at: i64,
    max_sends: i64,
) -> StoreResult<bool>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let done = sqlx::query(
        "UPDATE mfa_tokens SET sms_code_hash = $1, sms_expires_at = $2, sms_sends = sms_sends + 1 \
         WHERE token_hash = $3 AND used_at IS NULL AND expires_at > $4 AND failures < $5 AND sms_sends < $6",
    )
    .bind(code_hash)
    .bind(expires_at)
    .bind(token_hash)
    .bind(now)
    .bind(MAX_MFA_FAILURES)
    .bind(max_sends)
    .execute(on)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends every pending second step of a user (the password changed, the factors
/// were reset).
pub(super) async fn tokens_end<'c, E>(on: E, user_id: &str, now: i64) -> StoreResult<u64>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let done = sqlx::query("UPDATE mfa_tokens SET used_at = $1 WHERE user_id = $2 AND used_at IS NULL")
        .bind(now)
        .bind(user_id)
        .execute(on)
        .await?;
    Ok(done.rows_affected())
}

impl Db {
    /// A user's factors, pending ones included, oldest first.
    pub async fn mfa_factors(&self, user_id: &str) -> StoreResult<Vec<FactorRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {FACTOR_COLS} FROM mfa_factors WHERE user_id = $1 ORDER BY created_at, id"
        )))
        .bind(user_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(factor).collect()
    }

    /// Starts an enrolment: replaces a pending factor of its kind (and queues
    /// `message`, an outbox kind and payload, in the same commit). A confirmed one
    /// of the kind is a `Conflict`.
    pub async fn mfa_factor_pending(
        &self,
        f: &FactorRow,
        message: Option<(&str, &serde_json::Value)>,
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM mfa_factors WHERE user_id = $1 AND kind = $2 AND confirmed_at IS NULL")
            .bind(&f.user_id)
            .bind(&f.kind)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO mfa_factors (id, user_id, kind, secret_sealed, label, created_at, code_hash, \
             code_expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&f.id)
        .bind(&f.user_id)
        .bind(&f.kind)
        .bind(&f.secret_sealed)
        .bind(&f.label)
        .bind(f.created_at)
        .bind(&f.code_hash)
        .bind(f.code_expires_at)
        .execute(&mut *tx)
        .await?;
        if let Some((kind, payload)) = message {
            super::outbox::enqueue(&mut *tx, kind, payload, f.created_at).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The confirmed factor kinds of each of these users (at most a page of them).
    pub async fn mfa_kinds(&self, user_ids: &[&str]) -> StoreResult<std::collections::HashMap<String, Vec<String>>> {
        let mut conn = self.pool().acquire().await?;
        kinds(&mut conn, user_ids).await
    }

    /// How many unused recovery codes a user has.
    pub async fn recovery_codes_left(&self, user_id: &str) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL")
            .bind(user_id)
            .fetch_one(self.pool())
            .await?)
    }

    /// Stores a pending second step under the SHA-256 of its token.
    pub async fn mfa_token_insert(&self, t: &MfaTokenRow, token_hash: &str) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO mfa_tokens (token_hash, user_id, purpose, session_id, amr, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(token_hash)
        .bind(&t.user_id)
        .bind(&t.purpose)
        .bind(&t.session_id)
        .bind(&t.amr)
        .bind(t.created_at)
        .bind(t.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The pending second step of a token, while it still works.
    pub async fn mfa_token(&self, token_hash: &str, now: i64) -> StoreResult<Option<MfaTokenRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {TOKEN_COLS} FROM mfa_tokens WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 \
             AND failures < $3"
        )))
        .bind(token_hash)
        .bind(now)
        .bind(MAX_MFA_FAILURES)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(token).transpose()
    }

    /// Counts a wrong code against a pending SMS enrolment.
    pub async fn mfa_enrol_code_failed(&self, factor_id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE mfa_factors SET code_failures = code_failures + 1 WHERE id = $1")
            .bind(factor_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Takes one of a pending second step's guesses before its code is checked
    /// (a wrong code keeps it taken; a success gives it back): of any number of
    /// parallel guesses, at most [`MAX_MFA_FAILURES`] are ever checked. Whether one
    /// was left.
    pub async fn mfa_token_guess(&self, token_hash: &str, now: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE mfa_tokens SET failures = failures + 1 WHERE token_hash = $1 AND used_at IS NULL \
             AND expires_at > $2 AND failures < $3",
        )
        .bind(token_hash)
        .bind(now)
        .bind(MAX_MFA_FAILURES)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes pending second steps that expired before `before`.
    pub async fn mfa_tokens_purge(&self, before: i64) -> StoreResult<u64> {
        let done =
            sqlx::query("DELETE FROM mfa_tokens WHERE expires_at < $1").bind(before).execute(self.pool()).await?;
        Ok(done.rows_affected())
    }
}

/// The confirmed factor kinds of each of these users, on `conn`.
pub(super) async fn kinds(
    conn: &mut sqlx::AnyConnection,
    user_ids: &[&str],
) -> StoreResult<std::collections::HashMap<String, Vec<String>>> {
    let mut out: std::collections::HashMap<String, Vec<String>> = Default::default();
    if user_ids.is_empty() {
        return Ok(out);
    }
    let marks: Vec<String> = (1..=user_ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT user_id, kind FROM mfa_factors WHERE confirmed_at IS NOT NULL AND user_id IN ({}) \
         ORDER BY created_at, id",
        marks.join(", ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in user_ids {
        q = q.bind(*id);
    }
    for row in q.fetch_all(&mut *conn).await? {
        out.entry(col(&row, "user_id")?).or_default().push(col(&row, "kind")?);
    }
    let sql = format!("SELECT DISTINCT user_id FROM passkeys WHERE user_id IN ({})", marks.join(", "));
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in user_ids {
        q = q.bind(*id);
    }
    for row in q.fetch_all(&mut *conn).await? {
        out.entry(col(&row, "user_id")?).or_default().push("passkey".into());
    }
    Ok(out)
}
