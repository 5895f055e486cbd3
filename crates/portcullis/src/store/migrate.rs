//! Embedded, forward-only migrations, one portable SQL file per version (add a
//! per-backend file only where a dialect truly differs). Each runs
//! in its own transaction with its version record, so a crash leaves either all of it
//! or none. Concurrent starts serialise on a lock (PostgreSQL advisory lock, SQLite's
//! write lock).

use super::{Backend, Db, StoreResult};

struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "foundation", sql: include_str!("../../migrations/0001_foundation.sql") },
    Migration { version: 2, name: "authorization", sql: include_str!("../../migrations/0002_authorization.sql") },
    Migration { version: 3, name: "abuse", sql: include_str!("../../migrations/0003_abuse.sql") },
    Migration { version: 4, name: "oauth", sql: include_str!("../../migrations/0004_oauth.sql") },
    Migration { version: 5, name: "security", sql: include_str!("../../migrations/0005_security.sql") },
    Migration { version: 6, name: "outbox", sql: include_str!("../../migrations/0006_outbox.sql") },
    Migration { version: 7, name: "amr", sql: include_str!("../../migrations/0007_amr.sql") },
    Migration { version: 8, name: "email", sql: include_str!("../../migrations/0008_email.sql") },
    Migration { version: 9, name: "mfa", sql: include_str!("../../migrations/0009_mfa.sql") },
    Migration { version: 10, name: "webhooks", sql: include_str!("../../migrations/0010_webhooks.sql") },
];

/// Applies what is missing; returns the names of the migrations it applied.
pub(super) async fn run(db: &Db) -> StoreResult<Vec<String>> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS portcullis_migrations (\
           version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(db.pool())
    .await?;
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        let mut tx = db.begin_write().await?;
        if db.backend() == Backend::Postgres {
            // Any constant works; it only has to be the same on every node.
            sqlx::query("SELECT pg_advisory_xact_lock(7461626173)").execute(&mut *tx).await?;
        }
        let done: Option<i64> = sqlx::query_scalar("SELECT version FROM portcullis_migrations WHERE version = $1")
            .bind(m.version)
            .fetch_optional(&mut *tx)
            .await?;
        if done.is_some() {
            tx.rollback().await?;
            continue;
        }
        let sql = m.sql;
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO portcullis_migrations (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(m.name)
            .bind(crate::clock::now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        applied.push(format!("{:04}_{}", m.version, m.name));
    }
    Ok(applied)
}
