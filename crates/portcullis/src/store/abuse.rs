//! Rate-limit windows and lockout state.
//!
//! Contract: counting an attempt is ONE statement (an upsert with RETURNING), so
//! concurrent attempts on any number of nodes never lose a count. Lockout updates
//! run in a write transaction: the failure that crosses the threshold is the one
//! that sets the lock.

use super::{Db, StoreError, StoreResult, col};

/// The counts of one client's current and previous window after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateWindow {
    /// Start of the current window, milliseconds.
    pub window_start: i64,
    /// Attempts in the current window, this one included.
    pub count: i64,
    /// Attempts in the window before.
    pub prev_count: i64,
}

/// Lockout state of an (email, client address) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockState {
    /// Consecutive failures since the last success or lock.
    pub failures: i64,
    /// How many locks in a row (selects the duration).
    pub lock_level: i64,
    /// Locked until this time (milliseconds), if locked.
    pub locked_until: Option<i64>,
    /// Last failure time.
    pub last_failure_at: i64,
}

impl Db {
    /// Counts an attempt in `bucket` for the window starting at `window_start`,
    /// sliding the previous window's count along when a new window begins. A node
    /// whose clock lags never moves the window back (which would reset the count):
    /// its attempt counts in the newer window.
    pub async fn rate_hit(&self, bucket: &str, window_start: i64, window_ms: i64) -> StoreResult<RateWindow> {
        self.rate_hit_n(bucket, window_start, window_ms, 1).await
    }

    /// [`Db::rate_hit`] of `n` attempts at once (a node reserving a share to spend
    /// from memory).
    pub async fn rate_hit_n(&self, bucket: &str, window_start: i64, window_ms: i64, n: i64) -> StoreResult<RateWindow> {
        hit(self.pool(), bucket, window_start, window_ms, n).await
    }

    /// [`Db::rate_hit`], and what `announce` returns for the new counts (a webhook
    /// event's type and payload) fanned out in the same commit.
    pub async fn rate_hit_announced(
        &self,
        bucket: &str,
        window_start: i64,
        window_ms: i64,
        announce: impl FnOnce(&RateWindow) -> Option<(&'static str, String)>,
    ) -> StoreResult<RateWindow> {
        let mut tx = self.begin_write().await?;
        let counts = hit(&mut *tx, bucket, window_start, window_ms, 1).await?;
        let mut queued = 0;
        if let Some((event_type, payload)) = announce(&counts) {
            queued = super::webhooks::fanout(&mut tx, event_type, &payload, crate::clock::now_ms()).await?;
        }
        tx.commit().await?;
        super::webhooks::count_queued(queued);
        Ok(counts)
    }
}

/// `n` attempts counted on `on` (see [`Db::rate_hit`]).
async fn hit<'c, E>(on: E, bucket: &str, window_start: i64, window_ms: i64, n: i64) -> StoreResult<RateWindow>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let row = sqlx::query(
            "INSERT INTO rate_limits (bucket, window_start, count, prev_count) VALUES ($1, $2, $4, 0) \
             ON CONFLICT (bucket) DO UPDATE SET \
               prev_count = CASE WHEN rate_limits.window_start >= excluded.window_start THEN rate_limits.prev_count \
                                 WHEN rate_limits.window_start = excluded.window_start - $3 THEN rate_limits.count \
                                 ELSE 0 END, \
               count = CASE WHEN rate_limits.window_start >= excluded.window_start THEN rate_limits.count + $4 ELSE $4 END, \
               window_start = CASE WHEN rate_limits.window_start >= excluded.window_start \
                                   THEN rate_limits.window_start ELSE excluded.window_start END \
             RETURNING window_start, count, prev_count",
        )
        .bind(bucket)
        .bind(window_start)
        .bind(window_ms)
        .bind(n)
        .fetch_one(on)
        .await?;
    Ok(RateWindow {
        window_start: col(&row, "window_start")?,
        count: col(&row, "count")?,
        prev_count: col(&row, "prev_count")?,
    })
}

impl Db {
    /// The counts of `bucket` without counting anything; `None` if never hit.
    pub async fn rate_peek(&self, bucket: &str) -> StoreResult<Option<RateWindow>> {
        let row = sqlx::query("SELECT window_start, count, prev_count FROM rate_limits WHERE bucket = $1")
            .bind(bucket)
            .fetch_optional(self.pool())
            .await?;
        row.map(|row| {
            Ok(RateWindow {
                window_start: col(&row, "window_start")?,
                count: col(&row, "count")?,
                prev_count: col(&row, "prev_count")?,
            })
        })
        .transpose()
    }

    /// Drops windows nobody has touched since `before`.
    pub async fn rate_purge(&self, before: i64) -> StoreResult<u64> {
        let done =
            sqlx::query("DELETE FROM rate_limits WHERE window_start < $1").bind(before).execute(self.pool()).await?;
        Ok(done.rows_affected())
    }

    /// Reserves an attempt: reads the state under a row lock and writes what
    /// `decide` returns (`None`: write nothing, e.g. while locked). Attempts are
    /// counted BEFORE the password is hashed, so requests in flight cannot all slip
    /// past a lock that only the last of them would have set; concurrent attempts on
    /// any node serialise on the row (`FOR UPDATE` on PostgreSQL, the write lock on
    /// SQLite), so no count is lost. What `announce` returns for the change —
    /// a webhook event's type and payload — is fanned out in the same commit.
    pub async fn lock_attempt(
        &self,
        email: &str,
        address: &str,
        decide: impl FnOnce(LockState) -> Option<LockState>,
        announce: impl FnOnce(&LockState, &LockState) -> Option<(&'static str, String)>,
    ) -> StoreResult<(LockState, LockState)> {
        let mut tx = self.begin_write().await?;
        let select = match self.backend() {
            super::Backend::Postgres => {
                "SELECT failures, lock_level, locked_until, last_failure_at FROM login_failures \
                 WHERE email = $1 AND address = $2 FOR UPDATE"
            }
            super::Backend::Sqlite => {
                "SELECT failures, lock_level, locked_until, last_failure_at FROM login_failures \
                 WHERE email = $1 AND address = $2"
            }
        };
        // On PostgreSQL a concurrent success may delete the row between our insert
        // (which then did nothing) and our row lock: insert again and retry.
        let mut found = None;
        for _ in 0..5 {
            sqlx::query(
                "INSERT INTO login_failures (email, address, failures, lock_level, locked_until, last_failure_at) \
                 VALUES ($1, $2, 0, 0, NULL, 0) ON CONFLICT (email, address) DO NOTHING",
            )
            .bind(email)
            .bind(address)
            .execute(&mut *tx)
            .await?;
            found = sqlx::query(select).bind(email).bind(address).fetch_optional(&mut *tx).await?;
            if found.is_some() {
                break;
            }
        }
        let r = found.ok_or(StoreError::Conflict("lockout state changed concurrently; retry"))?;
        let prior = LockState {
            failures: col(&r, "failures")?,
            lock_level: col(&r, "lock_level")?,
            locked_until: col(&r, "locked_until")?,
            last_failure_at: col(&r, "last_failure_at")?,
        };
        let Some(next) = decide(prior) else {
            tx.rollback().await?;
            return Ok((prior, prior));
        };
        sqlx::query(
            "UPDATE login_failures SET failures = $1, lock_level = $2, locked_until = $3, last_failure_at = $4 \
             WHERE email = $5 AND address = $6",
        )
        .bind(next.failures)
        .bind(next.lock_level)
        .bind(next.locked_until)
        .bind(next.last_failure_at)
        .bind(email)
        .bind(address)
        .execute(&mut *tx)
        .await?;
        let mut queued = 0;
        if let Some((event_type, payload)) = announce(&prior, &next) {
            queued = super::webhooks::fanout(&mut tx, event_type, &payload, crate::clock::now_ms()).await?;
        }
        tx.commit().await?;
        super::webhooks::count_queued(queued);
        Ok((prior, next))
    }

    /// Forgets lockout state nobody needs: no failure for `before` and no lock running.
    pub async fn lock_purge(&self, before: i64, now: i64) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM login_failures WHERE last_failure_at < $1 AND (locked_until IS NULL OR locked_until < $2)",
        )
        .bind(before)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// A right password from `address`: forgets that pair's failures and locks, and
    /// remembers the address as one that signed in to the account (it passes the
    /// account's failure ceiling for 30 days).
    pub async fn login_succeeded(&self, email: &str, address: &str, now: i64) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        succeeded(&mut tx, email, address, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether `address` signed in to the account since `since`.
    pub async fn login_succeeded_since(&self, email: &str, address: &str, since: i64) -> StoreResult<bool> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT last_success_at FROM login_successes WHERE email = $1 AND address = $2 AND last_success_at > $3",
        )
        .bind(email)
        .bind(address)
        .bind(since)
        .fetch_optional(self.pool())
        .await?;
        Ok(found.is_some())
    }

    /// Lifts every lock of an account (an admin or operator unlock): the failures
    /// of every address and the account's failure-ceiling counter (`ceiling_bucket`).
    pub async fn lock_clear(&self, email: &str, ceiling_bucket: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM login_failures WHERE email = $1").bind(email).execute(&mut *tx).await?;
        let ceiling =
            sqlx::query("DELETE FROM rate_limits WHERE bucket = $1").bind(ceiling_bucket).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() + ceiling.rows_affected() > 0)
    }

    /// Forgets sign-in addresses not seen since `before`.
    pub async fn login_successes_purge(&self, before: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM login_successes WHERE last_success_at < $1")
            .bind(before)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

/// The owner proved themself at `address`: its failures go, and it becomes an
/// address the owner uses (spared by the lock over all addresses).
pub(super) async fn succeeded(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    email: &str,
    address: &str,
    now: i64,
) -> StoreResult<()> {
    sqlx::query("DELETE FROM login_failures WHERE email = $1 AND address = $2")
        .bind(email)
        .bind(address)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO login_successes (email, address, last_success_at) VALUES ($1, $2, $3) \
         ON CONFLICT (email, address) DO UPDATE SET last_success_at = excluded.last_success_at",
    )
    .bind(email)
    .bind(address)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
