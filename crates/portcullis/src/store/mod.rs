//! The SQL store: one implementation that speaks both SQLite and PostgreSQL through
//! sqlx's `Any` driver with portable SQL (`$n` parameters, BIGINT milliseconds, TEXT
//! JSON). Only what truly differs per backend lives behind [`Backend`]: connection
//! tuning, write-transaction start and migration locking. `sqlx::Error` never leaves
//! this module: callers see [`StoreError`].
//!
//! Contract of composed writes: [`Db::write`] opens ONE write transaction
//! ([`WriteTx`]) whose methods are the same store operations as on `Db`; nothing
//! they do is visible to anyone until [`WriteTx::commit`], and dropping the handle
//! without committing undoes all of it. A change and the outbox rows announcing it
//! (mail, webhook events) are written through one handle, so either both land or
//! neither does. Caches of sessions and users are invalidated after the commit.

mod abuse;
mod api_keys;
mod audit;
mod clients;
mod email;
mod export;
mod keys;
mod mfa;
mod migrate;
mod oauth;
mod outbox;
mod passkeys;
mod roles;
mod sessions;
mod users;
mod webhooks;
mod write;

use std::{str::FromStr, time::Duration};

use sqlx::{
    AnyPool, Transaction,
    any::{Any, AnyConnectOptions, AnyPoolOptions},
};

pub use abuse::{LockState, RateWindow};
pub use api_keys::{ApiKeyRow, KeyLookup};
pub use audit::{AuditFilter, AuditRecord};
pub use clients::ClientRow;
pub use email::{EmailTokenRow, Purpose};
pub use export::{ConsentRow, EXPORT_MAX_ROWS};
pub use keys::KeyRow;
pub use mfa::{FactorRow, MAX_MFA_FAILURES, MfaTokenRow};
pub use oauth::{CodeExchange, CodeRow};
pub use outbox::{OutboxCount, OutboxRow, OutboxStatus};
pub use passkeys::{ChallengeRow, PasskeyRow};
pub use roles::RoleRow;
pub use sessions::{RefreshOutcome, SessionRow};
pub use users::{NewUser, UserFilter, UserPatch, UserRow};
pub use webhooks::{AttemptRow, EndpointPatch, EndpointRow, KIND as WEBHOOK_KIND};
pub use write::WriteTx;

/// Failures of the store, with the cases callers must tell apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write (e.g. a duplicate email).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The input holds characters the database cannot store (NUL in PostgreSQL text).
    #[error("the input contains characters that cannot be stored")]
    InvalidInput,
    /// The database could not be reached or failed; details were logged.
    #[error("database error: {0}")]
    Database(String),
    /// A stored value could not be read back (corruption or a bug).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                return StoreError::Conflict("unique constraint");
            }
            // A row vanished under us (a role deleted while being granted): a conflict
            // the client can retry, not a server error.
            if db.is_foreign_key_violation() {
                return StoreError::Conflict("referenced row is gone");
            }
            // 22021: character_not_in_repertoire (e.g. NUL), 22P05: untranslatable_character.
            if matches!(db.code().as_deref(), Some("22021" | "22P05")) {
                return StoreError::InvalidInput;
            }
        }
        StoreError::Database(e.to_string())
    }
}

/// Result alias of the store.
pub type StoreResult<T> = Result<T, StoreError>;

/// Which SQL engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded, single file, WAL mode.
    Sqlite,
    /// Shared by any number of stateless nodes.
    Postgres,
}

/// A handle to the database, cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// Counts writes (on this node) that can end a session or change what a
    /// session's user looks like; caches of live sessions compare it.
    auth_changes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    role_cache: std::sync::Arc<RoleCache>,
    /// SQLite only: the queue of the refresh-rotation group-commit worker.
    rotations: Option<tokio::sync::mpsc::Sender<sessions::QueuedRotation>>,
    /// Statements run through write transactions ([`WriteTx`]): lets tests show
    /// that two paths (a known and an unknown address) do the same work.
    write_statements: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Role name → (when read, auth-change count then, permissions).
#[derive(Debug, Default)]
pub(crate) struct RoleCache(std::sync::Mutex<std::collections::HashMap<String, RoleEntry>>);

type RoleEntry = (std::time::Instant, u64, std::sync::Arc<Vec<String>>);

impl RoleCache {
    pub(crate) fn get(&self, role: &str, generation: u64) -> Option<std::sync::Arc<Vec<String>>> {
        let map = self.0.lock().ok()?;
        let (at, g, perms) = map.get(role)?;
        (*g == generation && at.elapsed() < Duration::from_secs(1)).then(|| perms.clone())
    }

    pub(crate) fn put(&self, role: &str, generation: u64, perms: Vec<String>) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= 10_000 {
                map.clear();
            }
            map.insert(role.to_owned(), (std::time::Instant::now(), generation, std::sync::Arc::new(perms)));
        }
    }
}

impl Db {
    /// Connects (creating the SQLite file if needed) and tunes each connection.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::connect_with(url, true).await
    }

    /// Connects; `durable_sqlite` chooses SQLite's `synchronous` level: FULL keeps
    /// every committed transaction across a power cut, NORMAL (faster writes) only
    /// across a crash or kill of the process. PostgreSQL ignores it.
    pub async fn connect_with(url: &str, durable_sqlite: bool) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::Database("database URL must start with sqlite:// or postgres://".into()));
        };
        let opts = AnyConnectOptions::from_str(url).map_err(|e| StoreError::Database(e.to_string()))?;
        // One direct connection first: a pool only reports "timed out" when the server
        // is unreachable, while the operator needs the cause (refused, bad password…).
        {
            use sqlx::{ConnectOptions, Connection};
            let conn = tokio::time::timeout(Duration::from_secs(10), opts.connect())
                .await
                .map_err(|_| StoreError::Database("connecting timed out after 10s".into()))?
                .map_err(|e| StoreError::Database(format!("cannot connect: {e}")))?;
            let _ = conn.close().await;
        }
        let pool_opts = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        let pool = match backend {
            Backend::Sqlite => {
                pool_opts
                    .max_connections(8)
                    // A connection to a local file cannot go stale: skip the ping
                    // round trip before every statement.
                    .test_before_acquire(false)
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            // WAL lets readers run beside the one writer; the busy
                            // timeout queues writers instead of failing them.
                            let pragmas = if durable_sqlite {
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                                 PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;"
                            } else {
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                 PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;"
                            };
                            sqlx::raw_sql(pragmas).execute(conn).await?;
                            Ok(())
                        })
                    })
                    .connect_with(opts)
                    .await?
            }
            Backend::Postgres => pool_opts.max_connections(16).connect_with(opts).await?,
        };
        // SQLite has one writer and pays an fsync per commit: rotations arriving
        // together are committed together.
        let rotations = (backend == Backend::Sqlite).then(|| {
            let (tx, rx) = tokio::sync::mpsc::channel(4096);
            tokio::spawn(sessions::rotation_worker(pool.clone(), rx));
            tx
        });
        Ok(Self {
            pool,
            backend,
            auth_changes: Default::default(),
            role_cache: Default::default(),
            rotations,
            write_statements: Default::default(),
        })
    }

    /// The count of session- and user-changing writes made through this handle.
    pub fn auth_generation(&self) -> u64 {
        self.auth_changes.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks a write that may end sessions or change their users: the count moves
    /// when the guard drops, i.e. after the write, so a cache filled from a read that
    /// raced the write is already stale by then.
    pub(crate) fn auth_change(&self) -> AuthChange {
        AuthChange(self.auth_changes.clone())
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies pending migrations; safe to run from several processes at once.
    pub async fn migrate(&self) -> StoreResult<Vec<String>> {
        migrate::run(self).await
    }

    /// A cheap round trip, for `/readyz`.
    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock up
    /// front (`BEGIN IMMEDIATE`): a deferred transaction that reads then writes can
    /// fail with SQLITE_BUSY when another writer got there first, bypassing the busy
    /// timeout.
    pub(crate) async fn begin_write(&self) -> StoreResult<Transaction<'static, Any>> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(tx)
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// Bumps the auth-change count when dropped (see [`Db::auth_change`]).
pub(crate) struct AuthChange(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Drop for AuthChange {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Reads a column or reports which one is unreadable.
pub(crate) fn col<'r, T>(row: &'r sqlx::any::AnyRow, name: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    use sqlx::Row;
    row.try_get(name).map_err(|e| StoreError::Corrupt(format!("column {name}: {e}")))
}

/// Every table the store writes, for `Db::debug_dump_text`.
#[cfg(feature = "test-support")]
const ALL_TABLES: &[&str] = &[
    "users",
    "roles",
    "user_roles",
    "sessions",
    "refresh_tokens",
    "signing_keys",
    "audit_events",
    "api_keys",
    "rate_limits",
    "login_failures",
    "oauth_clients",
    "oauth_codes",
    "oauth_consents",
    "oauth_assertions",
    "login_successes",
    "outbox",
    "email_tokens",
    "mfa_factors",
    "recovery_codes",
    "mfa_tokens",
    "passkeys",
    "webauthn_challenges",
    "webhook_endpoints",
    "webhook_attempts",
];

#[cfg(feature = "test-support")]
impl Db {
    /// Statements this process ran through write transactions so far.
    pub fn debug_write_statements(&self) -> u64 {
        self.write_statements.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every value of every table as text, one line per row: lets tests prove that
    /// no secret is ever stored, on either backend. Only with `test-support`.
    pub async fn debug_dump_text(&self) -> StoreResult<String> {
        use sqlx::{Column, Row};
        let mut out = String::new();
        for table in ALL_TABLES {
            let rows =
                sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {table}"))).fetch_all(self.pool()).await?;
            for row in rows {
                out.push_str(table);
                for (i, c) in row.columns().iter().enumerate() {
                    let text = row
                        .try_get::<Option<String>, _>(i)
                        .ok()
                        .flatten()
                        .or_else(|| row.try_get::<Option<i64>, _>(i).ok().flatten().map(|n| n.to_string()))
                        .unwrap_or_default();
                    out.push_str(&format!(" {}={text}", c.name()));
                }
                out.push('\n');
            }
        }
        Ok(out)
    }
}

#[cfg(feature = "test-support")]
impl Db {
    /// Runs one statement; lets tests age rows (expire a code). Only with
    /// `test-support`.
    pub async fn debug_exec(&self, sql: &str) -> StoreResult<u64> {
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(self.pool()).await?.rows_affected())
    }
}
