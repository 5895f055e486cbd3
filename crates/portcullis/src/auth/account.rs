//! Registration and operator-created accounts.

use super::{Auth, AuthError};
use crate::ctx::RequestCtx;
use crate::{
    crypto::{self, Secret},
    store::{NewUser, Purpose, UserRow},
    validate::{field, normalize_email},
};

impl Auth {
    /// Creates an account with the `member` role (or `roles`, for operators).
    pub async fn register(
        &self,
        ctx: &RequestCtx,
        email: &str,
        password: Secret,
        name: Option<String>,
        roles: Vec<String>,
    ) -> Result<UserRow, AuthError> {
        // Registration hashes a password and answers 409 for taken emails: unthrottled,
        // it would starve sign-in of hashing slots and enumerate accounts.
        if let Some(limiter) = &self.register_limiter
            && let Err(retry) = limiter.hit(ctx.client(), ctx.route(), ctx.now).await
        {
            // No record per refusal: the block's summary (`rate_limited`) counts them.
            return Err(AuthError::RateLimited(retry));
        }
        let mut errors = Vec::new();
        let email = normalize_email(email).map_err(|e| errors.push(e)).ok();
        errors.extend(
            self.password_errors("password", password.expose(), email.as_deref().unwrap_or_default(), name.as_deref())
                .await,
        );
        let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
        if name.as_ref().is_some_and(|n| n.chars().count() > 200) {
            errors.push(field("name", "too_long", "must be at most 200 characters"));
        }
        let Some(email) = email.filter(|_| errors.is_empty()) else {
            return Err(AuthError::Validation(errors));
        };
        let phc = self.hasher.hash(password).await?;
        let user = NewUser {
            id: crypto::new_id("usr", ctx.now),
            email,
            name,
            password_hash: Some(phc),
            roles: if roles.is_empty() { vec![crate::rbac::DEFAULT_ROLE.into()] } else { roles },
            ..NewUser::default()
        };
        let conflict = |e| match e {
            crate::store::StoreError::Conflict("unknown role") => {
                AuthError::Validation(vec![field("role", "unknown", "no such role")])
            }
            crate::store::StoreError::Conflict(_) => AuthError::Conflict("an account with this email already exists"),
            other => other.into(),
        };
        // The account and the mail proving its address commit together.
        let mut tx = self.db.write().await?;
        tx.user_insert(&user, ctx.now).await.map_err(conflict)?;
        if self.mailer.is_some() {
            self.queue_proof(&mut tx, &user.id, &user.email, Purpose::Verify, ctx.now).await?;
        }
        crate::events::emit_user(&mut tx, "user.created", &user.id, ctx.now).await?;
        tx.commit().await.map_err(conflict)?;
        let created = self.db.user_by_id(&user.id).await?.ok_or(AuthError::NotFound)?;
        self.audit(ctx, "user_registered", true, Some(&created.id), None).await;
        Ok(created)
    }
}
