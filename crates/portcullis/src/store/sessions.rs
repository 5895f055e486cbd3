//! Sessions and their refresh tokens.
//!
//! Contract (the race-free promise rests on it): rotating a refresh token is ONE
//! conditional `UPDATE … WHERE used_at IS NULL … RETURNING` inside a write transaction,
//! never a read followed by a write. Two concurrent rotations of one token, on one
//! node or on two, therefore see exactly one winner; the loser observes the token as
//! already used.

use sqlx::any::AnyRow;

use super::{Db, StoreError, StoreResult, col};

/// A session as stored.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// `ses_…`.
    pub id: String,
    /// Owner.
    pub user_id: String,
    /// Milliseconds.
    pub created_at: i64,
    /// Milliseconds of the last refresh.
    pub last_active_at: i64,
    /// Milliseconds after which the session is over, whatever happens.
    pub expires_at: i64,
    /// Set when the session was ended early.
    pub revoked_at: Option<i64>,
    /// Client address at sign-in.
    pub ip: Option<String>,
    /// Client `User-Agent` at sign-in.
    pub user_agent: Option<String>,
    /// The OAuth client this session is a grant to; `None` for first-party and
    /// browser sessions.
    pub client_id: Option<String>,
    /// The scope granted to that client.
    pub scope: Option<String>,
    /// Milliseconds of the sign-in the session rests on (OpenID `auth_time`).
    pub auth_time: Option<i64>,
    /// How the user signed in: RFC 8176 `amr` values as a JSON array (`None`: a
    /// session from before they were recorded, a password).
    pub amr: Option<String>,
}

impl SessionRow {
    /// A new first-party session of `user_id` opened at `now` for `ttl_ms`.
    pub fn opened(user_id: &str, now: i64, ttl_ms: i64, ip: Option<String>, user_agent: Option<String>) -> Self {
        Self {
            id: crate::crypto::new_id("ses", now),
            user_id: user_id.to_owned(),
            created_at: now,
            last_active_at: now,
            expires_at: now.saturating_add(ttl_ms),
            revoked_at: None,
            ip,
            user_agent,
            client_id: None,
            scope: None,
            auth_time: Some(now),
            amr: None,
        }
    }

    /// Whether tokens of this session may still be used at `now`.
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum RefreshOutcome {
    /// The token was valid and is now spent; the new one is stored.
    Rotated(SessionRow),
    /// The token was already spent: a replay, so likely stolen.
    Reused {
        /// Whose sessions must now all end.
        user_id: String,
        /// The session the token belonged to.
        session_id: String,
    },
    /// The token's session has ended (logout, revocation, expiry).
    SessionEnded,
    /// No such token, or past its lifetime.
    Invalid,
}

const SESSION_COLS: &str =
    "id, user_id, created_at, last_active_at, expires_at, revoked_at, ip, user_agent, client_id, scope, auth_time, amr";

fn session_from_row(row: &AnyRow) -> StoreResult<SessionRow> {
    Ok(SessionRow {
        id: col(row, "id")?,
        user_id: col(row, "user_id")?,
        created_at: col(row, "created_at")?,
        last_active_at: col(row, "last_active_at")?,
        expires_at: col(row, "expires_at")?,
        revoked_at: col(row, "revoked_at")?,
        ip: col(row, "ip")?,
        user_agent: col(row, "user_agent")?,
        client_id: col(row, "client_id")?,
        scope: col(row, "scope")?,
        auth_time: col(row, "auth_time")?,
        amr: col(row, "amr")?,
    })
}

impl Db {
    /// Creates a session and its first refresh token, atomically.
    pub async fn session_create(&self, s: &SessionRow, refresh_hash: &str) -> StoreResult<()> {
        let mut tx = self.write().await?;
        tx.session_create(s, Some(refresh_hash), None).await?;
        tx.commit().await
    }

    /// Creates a browser session of the hosted pages, found again by the SHA-256 of
    /// its cookie. It has no refresh token.
    pub async fn browser_session_create(&self, s: &SessionRow, cookie_hash: &str) -> StoreResult<()> {
        let mut tx = self.write().await?;
        tx.session_create(s, None, Some(cookie_hash)).await?;
        tx.commit().await
    }

    /// The live browser session of a cookie, with its user (not banned).
    pub async fn browser_session(&self, cookie_hash: &str, now: i64) -> StoreResult<Option<SessionRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLS} FROM sessions WHERE cookie_hash = $1 AND revoked_at IS NULL AND expires_at > $2"
        )))
        .bind(cookie_hash)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// One session by id, whatever its state.
    pub async fn session_get(&self, id: &str) -> StoreResult<Option<SessionRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {SESSION_COLS} FROM sessions WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(session_from_row).transpose()
    }

    /// The live session of an unspent, unexpired refresh token.
    pub async fn refresh_session(&self, token_hash: &str, now: i64) -> StoreResult<Option<(SessionRow, i64)>> {
        let cols: Vec<String> = SESSION_COLS.split(',').map(|c| format!("s.{}", c.trim())).collect();
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {}, rt.expires_at AS token_expires_at FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id \
             WHERE rt.token_hash = $1 AND rt.used_at IS NULL AND rt.expires_at > $2 \
             AND s.revoked_at IS NULL AND s.expires_at > $2",
            cols.join(", ")
        )))
        .bind(token_hash)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(|r| Ok((session_from_row(r)?, col(r, "token_expires_at")?))).transpose()
    }

    /// A user's sessions that are still usable at `now`, newest first.
    /// Ids grow with time, so `before` (the last id of the previous page) pages
    /// newest first without gaps or repeats.
    pub async fn sessions_active(
        &self,
        user_id: &str,
        now: i64,
        before: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<SessionRow>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLS} FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
             AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
        )))
        .bind(user_id)
        .bind(now)
        .bind(before.map(str::to_owned))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(session_from_row).collect()
    }

    /// Records a fresh sign-in on a live session of `user_id` (re-authentication);
    /// returns whether the session was live.
    pub async fn session_reauthenticated(&self, session_id: &str, user_id: &str, now: i64) -> StoreResult<bool> {
        reauthenticated(self.pool(), session_id, user_id, now).await
    }

    /// Deletes sessions that ended (expired or revoked) before `before`, with their
    /// refresh tokens, and spent refresh tokens of live sessions older than that.
    /// Reuse detection only needs spent tokens while their session lives.
    pub async fn sessions_purge(&self, before: i64) -> StoreResult<u64> {
        let tokens = sqlx::query(
            "DELETE FROM refresh_tokens WHERE expires_at < $1 OR session_id IN \
             (SELECT id FROM sessions WHERE expires_at < $1 OR revoked_at < $1)",
        )
        .bind(before)
        .execute(self.pool())
        .await?;
        let sessions = sqlx::query("DELETE FROM sessions WHERE expires_at < $1 OR revoked_at < $1")
            .bind(before)
            .execute(self.pool())
            .await?;
        Ok(tokens.rows_affected() + sessions.rows_affected())
    }

    /// Spends `old_hash` and stores `new_hash` in its place, atomically (see the
    /// module contract). Nothing is written unless the outcome is `Rotated`.
    /// `client_id` is the client the token must belong to (`None`: first party); a
    /// token of another party is `Invalid` and stays unspent.
    ///
    /// On SQLite, concurrent rotations are committed together (group commit): one
    /// write transaction and one fsync for every rotation waiting at that moment,
    /// each inside its own savepoint, so each still succeeds or fails alone.
    pub async fn refresh_rotate(
        &self,
        old_hash: &str,
        new_hash: &str,
        client_id: Option<&str>,
        now: i64,
    ) -> StoreResult<RefreshOutcome> {
        let job = Rotation {
            old_hash: old_hash.to_owned(),
            new_hash: new_hash.to_owned(),
            party: client_id.unwrap_or("").to_owned(),
            now,
        };
        if let Some(batcher) = &self.rotations {
            let (reply, answer) = tokio::sync::oneshot::channel();
            if batcher.send((job, reply)).await.is_ok() {
                return answer.await.unwrap_or_else(|_| Err(StoreError::Database("rotation worker stopped".into())));
            }
            return Err(StoreError::Database("rotation worker stopped".into()));
        }
        let mut tx = self.begin_write().await?;
        let outcome = rotate_in(&mut tx, &job).await?;
        if matches!(outcome, RefreshOutcome::Rotated(_)) {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(outcome)
    }
}

/// One refresh-token rotation to perform.
#[derive(Debug)]
pub(super) struct Rotation {
    old_hash: String,
    new_hash: String,
    party: String,
    now: i64,
}

/// A rotation queued for the group-commit worker, with where its answer goes.
pub(super) type QueuedRotation = (Rotation, tokio::sync::oneshot::Sender<StoreResult<RefreshOutcome>>);

/// The most rotations committed together.
const BATCH_MAX: usize = 256;

/// The SQLite group-commit worker: takes every rotation waiting, runs each in a
/// savepoint of one write transaction, commits once, answers each.
pub(super) async fn rotation_worker(pool: sqlx::AnyPool, mut queue: tokio::sync::mpsc::Receiver<QueuedRotation>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        match rotate_batch(&pool, &batch).await {
            Ok(outcomes) => {
                for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for (_, reply) in batch {
                    let _ = reply.send(Err(StoreError::Database(msg.clone())));
                }
            }
        }
    }
}

async fn rotate_batch(pool: &sqlx::AnyPool, batch: &[QueuedRotation]) -> StoreResult<Vec<RefreshOutcome>> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for (job, _) in batch {
        sqlx::query("SAVEPOINT rotation").execute(&mut *tx).await?;
        let outcome = rotate_in(&mut tx, job).await?;
        if !matches!(outcome, RefreshOutcome::Rotated(_)) {
            sqlx::query("ROLLBACK TO SAVEPOINT rotation").execute(&mut *tx).await?;
        }
        sqlx::query("RELEASE SAVEPOINT rotation").execute(&mut *tx).await?;
        outcomes.push(outcome);
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// The rotation itself, inside the caller's write transaction. Writes only on
/// `Rotated`; for any other outcome the caller rolls back.
async fn rotate_in(tx: &mut sqlx::Transaction<'static, sqlx::Any>, job: &Rotation) -> StoreResult<RefreshOutcome> {
    let spent = sqlx::query(
        "UPDATE refresh_tokens SET used_at = $1 \
         WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 \
         AND EXISTS (SELECT 1 FROM sessions s WHERE s.id = refresh_tokens.session_id \
                     AND COALESCE(s.client_id, '') = $3) \
         RETURNING session_id, user_id",
    )
    .bind(job.now)
    .bind(&job.old_hash)
    .bind(&job.party)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(spent) = spent else {
        // A spent token is theft only while its session lives: a token of a session
        // that has ended (logout, expiry) is merely invalid, so an old leaked token
        // cannot be used to sign its owner out everywhere.
        let prior = sqlx::query(
            "SELECT rt.used_at, rt.user_id, rt.session_id FROM refresh_tokens rt \
             JOIN sessions s ON s.id = rt.session_id \
             WHERE rt.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 \
             AND COALESCE(s.client_id, '') = $3",
        )
        .bind(&job.old_hash)
        .bind(job.now)
        .bind(&job.party)
        .fetch_optional(&mut **tx)
        .await?;
        return Ok(match prior {
            Some(row) if col::<Option<i64>>(&row, "used_at")?.is_some() => {
                RefreshOutcome::Reused { user_id: col(&row, "user_id")?, session_id: col(&row, "session_id")? }
            }
            _ => RefreshOutcome::Invalid,
        });
    };
    let session_id: String = col(&spent, "session_id")?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE sessions SET last_active_at = $1 WHERE id = $2 AND revoked_at IS NULL AND expires_at > $1 \
         RETURNING {SESSION_COLS}"
    )))
    .bind(job.now)
    .bind(&session_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(RefreshOutcome::SessionEnded);
    };
    let session = session_from_row(&row)?;
    insert_refresh(tx, &job.new_hash, &session.id, &session.user_id, job.now, session.expires_at).await?;
    Ok(RefreshOutcome::Rotated(session))
}

/// Inserts a session row (inside the caller's transaction).
pub(super) async fn insert_session(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    s: &SessionRow,
    cookie_hash: Option<&str>,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO sessions (id, user_id, created_at, last_active_at, expires_at, ip, user_agent, \
         client_id, scope, auth_time, cookie_hash, amr) VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&s.id)
    .bind(&s.user_id)
    .bind(s.created_at)
    .bind(s.expires_at)
    .bind(&s.ip)
    .bind(&s.user_agent)
    .bind(&s.client_id)
    .bind(&s.scope)
    .bind(s.auth_time)
    .bind(cookie_hash)
    .bind(&s.amr)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts a refresh token (inside the caller's transaction).
pub(super) async fn insert_refresh(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    hash: &str,
    session_id: &str,
    user_id: &str,
    now: i64,
    expires_at: i64,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, session_id, user_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(hash)
    .bind(session_id)
    .bind(user_id)
    .bind(now)
    .bind(expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Theft detection: ends every live session of a user AND revokes the API keys
/// created from them, in the caller's write transaction — a thief who minted a key
/// with a stolen session must not keep it. Sessions end first: a key being minted
/// meanwhile holds its session's row until it commits, so it is either seen here
/// or refused (see [`Db::api_key_insert`]). Returns (sessions ended, keys revoked).
pub(super) async fn revoke_stolen(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user_id: &str,
    reason: &str,
    now: i64,
) -> StoreResult<(Vec<SessionRow>, Vec<super::ApiKeyRow>)> {
    let sessions = end_user_sessions(&mut **tx, user_id, None, None, reason, now).await?;
    let cols = super::api_keys::KEY_COLS.replace("k.", "");
    let keys = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE api_keys SET revoked_at = $1 WHERE owner_id = $2 AND revoked_at IS NULL AND session_id IN \
         (SELECT id FROM sessions WHERE user_id = $2 AND revoked_at = $1 AND revoked_reason = $3) RETURNING {cols}"
    )))
    .bind(now)
    .bind(user_id)
    .bind(reason)
    .fetch_all(&mut **tx)
    .await?;
    Ok((sessions, keys.iter().map(super::api_keys::key_from_row).collect::<StoreResult<_>>()?))
}

/// Every stored session of a user (ended ones too), newest first, at most `limit`.
pub(super) async fn all_of_user(pool: &sqlx::AnyPool, user_id: &str, limit: i64) -> StoreResult<Vec<SessionRow>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SESSION_COLS} FROM sessions WHERE user_id = $1 ORDER BY id DESC LIMIT $2"
    )))
    .bind(user_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(session_from_row).collect()
}

/// Renews a live session's sign-in time; whether it was live.
pub(super) async fn reauthenticated<'c, E>(on: E, session_id: &str, user_id: &str, now: i64) -> StoreResult<bool>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let done = sqlx::query(
        "UPDATE sessions SET auth_time = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(session_id)
    .bind(user_id)
    .execute(on)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Ends a user's live sessions, all but `keep`, only those of `client` if given;
/// the sessions it ended (those already expired included).
pub(super) async fn end_user_sessions<'c, E>(
    on: E,
    user_id: &str,
    keep: Option<&str>,
    client: Option<&str>,
    reason: &str,
    now: i64,
) -> StoreResult<Vec<SessionRow>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
         WHERE user_id = $3 AND revoked_at IS NULL AND id <> $4 AND ($5 IS NULL OR client_id = $5) \
         RETURNING {SESSION_COLS}"
    )))
    .bind(now)
    .bind(reason)
    .bind(user_id)
    .bind(keep.unwrap_or(""))
    .bind(client.map(str::to_owned))
    .fetch_all(on)
    .await?;
    rows.iter().map(session_from_row).collect()
}

/// Ends one live session (of `owner`, if given); the session, if it ended now.
pub(super) async fn end_one<'c, E>(
    on: E,
    session_id: &str,
    owner: Option<&str>,
    reason: &str,
    now: i64,
) -> StoreResult<Option<SessionRow>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = $2 \
         WHERE id = $3 AND ($4 IS NULL OR user_id = $4) AND revoked_at IS NULL RETURNING {SESSION_COLS}"
    )))
    .bind(now)
    .bind(reason)
    .bind(session_id)
    .bind(owner.map(str::to_owned))
    .fetch_optional(on)
    .await?;
    row.as_ref().map(session_from_row).transpose()
}

/// Ends every live session issued to a client (it is being deleted); the
/// sessions that ended.
pub(super) async fn end_client_sessions<'c, E>(on: E, client_id: &str, now: i64) -> StoreResult<Vec<SessionRow>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE sessions SET revoked_at = $1, revoked_reason = 'client_deleted' \
         WHERE client_id = $2 AND revoked_at IS NULL RETURNING {SESSION_COLS}"
    )))
    .bind(now)
    .bind(client_id)
    .fetch_all(on)
    .await?;
    rows.iter().map(session_from_row).collect()
}

/// Marks up to `limit` sessions that ran out before `now` (and were not ended
/// otherwise) as announced, on the caller's write transaction; those sessions.
pub(super) async fn take_expired<'c, E>(on: E, now: i64, limit: i64) -> StoreResult<Vec<SessionRow>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE sessions SET expiry_announced = 1 WHERE id IN (SELECT id FROM sessions \
         WHERE revoked_at IS NULL AND expiry_announced = 0 AND expires_at <= $1 ORDER BY expires_at LIMIT $2) \
         AND expiry_announced = 0 AND revoked_at IS NULL RETURNING {SESSION_COLS}"
    )))
    .bind(now)
    .bind(limit)
    .fetch_all(on)
    .await?;
    rows.iter().map(session_from_row).collect()
}
