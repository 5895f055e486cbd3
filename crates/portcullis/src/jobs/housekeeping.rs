//! Housekeeping: what is past its use is deleted, so tables stay the size of the
//! live data.

use std::time::Duration;

use crate::store::Db;

/// One round: audit records, delivered or failed outbox messages and webhook
/// attempts older than
/// `retention`; rate-limit windows, lockouts
/// mailed tokens and sessions that ended a day ago; sign-in addresses unused for 30 days; codes
/// and assertion ids past their life (codes kept an hour more, so a late replay is
/// still recognised and revokes its grant).
pub async fn run(db: Db, retention: Duration) {
    let now = crate::clock::now_ms();
    let cutoff = now - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let _ = db.outbox_purge(cutoff).await;
    let _ = db.webhook_attempts_purge(cutoff).await;
    match db.audit_purge(cutoff).await {
        Ok(n) if n > 0 => tracing::info!(deleted = n, "audit retention: removed old records"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "audit retention failed"),
    }
    let _ = db.rate_purge(now - 86_400_000).await;
    let _ = db.lock_purge(now - 86_400_000, now).await;
    let _ = db.login_successes_purge(now - 30 * 86_400_000).await;
    let _ = db.oauth_purge(now - 3_600_000).await;
    let _ = db.email_tokens_purge(now - 86_400_000).await;
    let _ = db.mfa_tokens_purge(now - 3_600_000).await;
    let _ = db.webauthn_challenges_purge(now - 3_600_000).await;
    match db.sessions_purge(now - 86_400_000).await {
        Ok(n) if n > 0 => tracing::info!(deleted = n, "removed ended sessions and their refresh tokens"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "session cleanup failed"),
    }
}
