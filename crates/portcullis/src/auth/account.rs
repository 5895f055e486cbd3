//! Registration and operator-created accounts.

use portcullis_proto::FieldError;

use super::{Auth, AuthError, RequestCtx};
use crate::{
    crypto::{self, Secret},
    passwords,
    store::{NewUser, UserRow},
};

fn field(field: &str, code: &str, message: &str) -> FieldError {
    FieldError { field: field.into(), code: code.into(), message: message.into() }
}

/// Trims and lower-cases an email and checks its shape. Lower-casing the local part
/// is a deliberate choice: `Ann@x.io` and `ann@x.io` are one person in practice, and
/// treating them as two accounts invites takeover confusion.
pub fn normalize_email(raw: &str) -> Result<String, FieldError> {
    let email = raw.trim().to_lowercase();
    let bad = || field("email", "invalid_format", "must be an email address like name@example.com");
    if email.is_empty() {
        return Err(field("email", "required", "is required"));
    }
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = email.rsplit_once('@').ok_or_else(bad)?;
    let domain_ok = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !domain.contains('@')
        && domain.split('.').all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'));
    if local.is_empty() || local.len() > 64 || local.contains('@') || !domain_ok {
        return Err(bad());
    }
    Ok(email)
}

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
        let local = email.as_deref().and_then(|e| e.split('@').next()).unwrap_or_default();
        errors.extend(passwords::check_policy(
            "password",
            password.expose(),
            &[email.as_deref().unwrap_or_default(), local, "portcullis"],
        ));
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
        let created = self.db.user_insert(&user, ctx.now).await.map_err(|e| match e {
            crate::store::StoreError::Conflict("unknown role") => {
                AuthError::Validation(vec![field("role", "unknown", "no such role")])
            }
            crate::store::StoreError::Conflict(_) => AuthError::Conflict("an account with this email already exists"),
            other => other.into(),
        })?;
        self.audit(ctx, "user_registered", true, Some(&created.id), None).await;
        Ok(created)
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_email;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(normalize_email("  Ann.Lee@Example.COM ").unwrap(), "ann.lee@example.com");
        for bad in ["", "ann", "ann@", "@x.io", "ann@x", "ann@.x.io", "ann@x..io", "a b@x.io", "ann@-x.io"] {
            assert!(normalize_email(bad).is_err(), "{bad:?} accepted");
        }
        assert!(normalize_email(&format!("{}@x.io", "a".repeat(65))).is_err());
    }
}
