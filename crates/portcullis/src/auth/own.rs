//! The user's own data: the export (`GET /v1/me/export`) and self-service
//! deletion (`DELETE /v1/me`, off with `accounts.self_delete = false`).

use super::{Auth, AuthError};
use crate::{
    ctx::{Principal, RequestCtx},
    mail::Template,
    store::{ApiKeyRow, AuditFilter, AuditRecord, ConsentRow, EXPORT_MAX_ROWS, SessionRow, UserRow},
};

/// Everything stored about one user, as rows.
pub struct AccountData {
    /// The profile.
    pub user: UserRow,
    /// Every session kept.
    pub sessions: Vec<SessionRow>,
    /// Every API key.
    pub api_keys: Vec<ApiKeyRow>,
    /// Every OAuth consent.
    pub consents: Vec<ConsentRow>,
    /// Audit records about the user.
    pub audit: Vec<AuditRecord>,
    /// Whether a list hit [`EXPORT_MAX_ROWS`].
    pub truncated: bool,
}

impl Auth {
    /// Everything Portcullis holds about the caller.
    pub async fn export_own(&self, ctx: &RequestCtx, who: &Principal) -> Result<AccountData, AuthError> {
        let user = self.me(who).await?;
        let sessions = self.db.export_sessions(&user.id).await?;
        let api_keys = self.db.export_api_keys(&user.id).await?;
        let consents = self.db.export_consents(&user.id).await?;
        let filter = AuditFilter { user_id: Some(user.id.clone()), ..AuditFilter::default() };
        let audit = self.db.audit_list(&filter, None, EXPORT_MAX_ROWS).await?;
        let max = usize::try_from(EXPORT_MAX_ROWS).unwrap_or(usize::MAX);
        let truncated = [sessions.len(), api_keys.len(), consents.len(), audit.len()].iter().any(|n| *n >= max);
        self.audit(ctx, "account_exported", true, Some(&user.id), None).await;
        Ok(AccountData { user, sessions, api_keys, consents, audit, truncated })
    }

    /// Deletes the caller's account as the admin delete does, and mails a last
    /// notice in the same commit.
    pub async fn delete_own(&self, ctx: &RequestCtx, who: &Principal) -> Result<(), AuthError> {
        if !self.settings.self_delete {
            return Err(AuthError::Forbidden("deleting your own account is turned off here; ask an administrator"));
        }
        let user = self.me(who).await?;
        let mut tx = self.db.write().await?;
        self.queue_notice(&mut tx, &user, Template::AccountDeleted, ctx.now).await?;
        let Some(data) = crate::events::deleted_user_data(&mut tx, &user.id).await? else {
            return Err(AuthError::NotFound);
        };
        if !tx.user_delete(&user.id).await? {
            return Err(AuthError::NotFound);
        }
        crate::events::emit(&mut tx, "user.deleted", data, ctx.now).await?;
        tx.commit().await?;
        self.audit(ctx, "user_deleted", true, Some(&user.id), Some("by the user")).await;
        Ok(())
    }
}
