//! User and role administration behind `/v1/admin/…` and the operator CLI. Callers
//! have passed a scope guard already; every change is audited with the acting admin
//! (or API key) as actor and the affected user as subject.

use serde_json::Value;

use crate::{
    audit::{Audit, Event},
    auth::AuthError,
    crypto::{self, Secret},
    ctx::{Principal, RequestCtx},
    events,
    page::{cursor_decode, page_limit, paginate},
    passwords::{self, Hasher},
    rbac,
    store::{Db, NewUser, RoleRow, StoreError, UserFilter, UserPatch, UserRow},
    validate::{clean_name, field, metadata_text, normalize_email},
};

/// Admin operations on users and roles.
pub struct Admin {
    db: Db,
    hasher: Hasher,
    audit: Audit,
}

/// Input of [`Admin::user_create`].
#[derive(Debug, Default)]
pub struct UserCreate {
    /// Sign-in email.
    pub email: String,
    /// Initial password.
    pub password: Option<Secret>,
    /// Display name.
    pub name: Option<String>,
    /// Roles (default `member`).
    pub roles: Option<Vec<String>>,
    /// Public metadata.
    pub public_metadata: Option<Value>,
    /// Private metadata.
    pub private_metadata: Option<Value>,
}

/// Input of [`Admin::user_update`].
#[derive(Debug, Default)]
pub struct UserUpdate {
    /// New name (`Some(None)` clears).
    pub name: Option<Option<String>>,
    /// New email.
    pub email: Option<String>,
    /// Replaces public metadata.
    pub public_metadata: Option<Value>,
    /// Replaces private metadata.
    pub private_metadata: Option<Value>,
}

impl Admin {
    /// Wires the service.
    pub fn new(db: Db, hasher: Hasher, audit: Audit) -> Self {
        Self { db, hasher, audit }
    }

    /// A page of users matching `filter`, and the cursor of the next page.
    pub async fn user_list(
        &self,
        filter: &UserFilter,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<(Vec<UserRow>, Option<String>), AuthError> {
        let limit = page_limit(limit)?;
        let after = cursor_decode(cursor)?;
        let rows = self.db.user_list(filter, after.as_deref(), limit + 1).await?;
        Ok(paginate(rows, limit, |u| &u.id))
    }

    /// One user.
    pub async fn user_get(&self, id: &str) -> Result<UserRow, AuthError> {
        self.db.user_by_id(id).await?.ok_or(AuthError::NotFound)
    }

    /// Creates a user, with or without a password.
    pub async fn user_create(&self, ctx: &RequestCtx, who: &Principal, req: UserCreate) -> Result<UserRow, AuthError> {
        let mut errors = Vec::new();
        let email = normalize_email(&req.email).map_err(|e| errors.push(e)).ok();
        if let Some(pw) = &req.password {
            let e = email.as_deref().unwrap_or_default();
            let local = e.split('@').next().unwrap_or_default();
            errors.extend(passwords::check_policy("password", pw.expose(), &[e, local, "portcullis"]));
        }
        let name = clean_name(req.name, &mut errors);
        let public = req.public_metadata.as_ref().and_then(|m| metadata_text("public_metadata", m, &mut errors));
        let private = req.private_metadata.as_ref().and_then(|m| metadata_text("private_metadata", m, &mut errors));
        let roles = req.roles.unwrap_or_else(|| vec![rbac::DEFAULT_ROLE.into()]);
        for (i, r) in roles.iter().enumerate() {
            if !rbac::valid_name(r) {
                errors.push(field(&format!("roles[{i}]"), "invalid_format", "is not a role name"));
            }
        }
        let Some(email) = email.filter(|_| errors.is_empty()) else {
            return Err(AuthError::Validation(errors));
        };
        self.may_grant(ctx, who, &roles).await?;
        let password_hash = match req.password {
            Some(pw) => Some(self.hasher.hash(pw).await?),
            None => None,
        };
        let new = NewUser {
            id: crypto::new_id("usr", ctx.now),
            email,
            name,
            password_hash,
            roles: rbac::normalized(&roles),
            public_metadata: public,
            private_metadata: private,
        };
        let mut tx = self.db.write().await?;
        tx.user_insert(&new, ctx.now).await.map_err(conflict)?;
        events::emit_user(&mut tx, "user.created", &new.id, ctx.now).await?;
        tx.commit().await.map_err(conflict)?;
        let user = self.db.user_by_id(&new.id).await?.ok_or(AuthError::NotFound)?;
        self.audit.record(ctx, Event::ok("user_created", Some(&user.id)).by(who.actor())).await;
        Ok(user)
    }

    /// Updates name, email and metadata.
    pub async fn user_update(
        &self,
        ctx: &RequestCtx,
        who: &Principal,
        id: &str,
        req: UserUpdate,
    ) -> Result<UserRow, AuthError> {
        let mut errors = Vec::new();
        let email = req.email.and_then(|e| normalize_email(&e).map_err(|e| errors.push(e)).ok());
        let name = req.name.map(|n| clean_name(n, &mut errors));
        let public = req.public_metadata.as_ref().and_then(|m| metadata_text("public_metadata", m, &mut errors));
        let private = req.private_metadata.as_ref().and_then(|m| metadata_text("private_metadata", m, &mut errors));
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        self.may_act_on(ctx, who, id).await?;
        let patch =
            UserPatch { email, name, public_metadata: public, private_metadata: private, unsafe_metadata: None };
        let mut tx = self.db.write().await?;
        if !tx.user_update(id, &patch, ctx.now).await.map_err(conflict)? {
            return Err(AuthError::NotFound);
        }
        events::emit_user(&mut tx, "user.updated", id, ctx.now).await?;
        tx.commit().await.map_err(conflict)?;
        self.audit.record(ctx, Event::ok("user_updated", Some(id)).by(who.actor())).await;
        self.user_get(id).await
    }

    /// Deletes a user with their sessions, refresh tokens and API keys.
    pub async fn user_delete(&self, ctx: &RequestCtx, who: &Principal, id: &str) -> Result<(), AuthError> {
        self.may_act_on(ctx, who, id).await?;
        let mut tx = self.db.write().await?;
        // The view before it goes: what the receiver last knew, marked deleted.
        let Some(data) = events::deleted_user_data(&mut tx, id).await? else { return Err(AuthError::NotFound) };
        if !tx.user_delete(id).await? {
            return Err(AuthError::NotFound);
        }
        events::emit(&mut tx, "user.deleted", data, ctx.now).await?;
        tx.commit().await?;
        self.audit.record(ctx, Event::ok("user_deleted", Some(id)).by(who.actor())).await;
        Ok(())
    }

    /// Bans (ending every session) or unbans.
    pub async fn user_ban(&self, ctx: &RequestCtx, who: &Principal, id: &str, ban: bool) -> Result<UserRow, AuthError> {
        self.may_act_on(ctx, who, id).await?;
        if ban && who.subject() == id {
            return Err(AuthError::Forbidden("administrators cannot ban themselves"));
        }
        let mut tx = self.db.write().await?;
        let (found, ended) = tx.user_set_banned(id, ban.then_some(ctx.now), ctx.now).await?;
        if !found {
            return Err(AuthError::NotFound);
        }
        events::emit_user(&mut tx, if ban { "user.banned" } else { "user.unbanned" }, id, ctx.now).await?;
        events::emit_sessions(&mut tx, "session.revoked", &ended, "banned", ctx.now).await?;
        tx.commit().await?;
        let kind = if ban { "user_banned" } else { "user_unbanned" };
        self.audit.record(ctx, Event::ok(kind, Some(id)).by(who.actor())).await;
        self.user_get(id).await
    }

    /// Grants a role; it reaches the user's next token.
    pub async fn user_role_grant(
        &self,
        ctx: &RequestCtx,
        who: &Principal,
        id: &str,
        role: &str,
    ) -> Result<UserRow, AuthError> {
        self.user_get(id).await?;
        if !rbac::valid_name(role) {
            return Err(AuthError::Validation(vec![field("role", "invalid_format", "is not a role name")]));
        }
        self.may_grant(ctx, who, &[role.to_owned()]).await?;
        let mut tx = self.db.write().await?;
        let granted = tx.user_grant_role(id, role, ctx.now).await.map_err(|e| match e {
            StoreError::Conflict("unknown role") => {
                AuthError::Validation(vec![field("role", "unknown", "no such role")])
            }
            other => other.into(),
        })?;
        if granted {
            let data = serde_json::json!({"role": role});
            events::emit_about(&mut tx, "user.role_assigned", id, data, ctx.now).await?;
        }
        tx.commit().await?;
        self.audit
            .record(ctx, Event { reason: Some(role), ..Event::ok("role_granted", Some(id)).by(who.actor()) })
            .await;
        self.user_get(id).await
    }

    /// Revokes a role; `NotFound` if the user does not hold it.
    pub async fn user_role_revoke(
        &self,
        ctx: &RequestCtx,
        who: &Principal,
        id: &str,
        role: &str,
    ) -> Result<UserRow, AuthError> {
        self.may_act_on(ctx, who, id).await?;
        let mut tx = self.db.write().await?;
        if !tx.user_revoke_role(id, role).await? {
            return Err(AuthError::NotFound);
        }
        events::emit_about(&mut tx, "user.role_removed", id, serde_json::json!({"role": role}), ctx.now).await?;
        tx.commit().await?;
        self.audit
            .record(ctx, Event { reason: Some(role), ..Event::ok("role_revoked", Some(id)).by(who.actor()) })
            .await;
        self.user_get(id).await
    }

    /// Lifts every lock of the user's account at once: each address's lockout and
    /// the failure ceiling over all addresses.
    pub async fn user_unlock(&self, ctx: &RequestCtx, who: &Principal, id: &str) -> Result<UserRow, AuthError> {
        let user = self.user_get(id).await?;
        self.may_act_on(ctx, who, id).await?;
        let mut was_locked = false;
        for key in [crate::auth::lock_key(&user.email), crate::auth::mfa_lock_key(&user.id)] {
            was_locked |= self.db.lock_clear(&key, &crate::abuse::ceiling_bucket(&key)).await?;
        }
        let reason = if was_locked { "cleared" } else { "was not locked" };
        self.audit
            .record(ctx, Event { reason: Some(reason), ..Event::ok("account_unlocked", Some(id)).by(who.actor()) })
            .await;
        Ok(user)
    }

    /// Removes every second factor of a user (see `Auth::mfa_reset`).
    pub async fn user_mfa_reset(
        &self,
        ctx: &RequestCtx,
        who: &Principal,
        id: &str,
        auth: &crate::auth::Auth,
    ) -> Result<u64, AuthError> {
        let user = self.user_get(id).await?;
        self.may_act_on(ctx, who, id).await?;
        auth.mfa_reset(ctx, &user, Some(who.actor())).await
    }

    /// Ends every session of a user.
    pub async fn user_sessions_revoke(&self, ctx: &RequestCtx, who: &Principal, id: &str) -> Result<u64, AuthError> {
        self.user_get(id).await?;
        self.may_act_on(ctx, who, id).await?;
        let mut tx = self.db.write().await?;
        let ended = tx.sessions_revoke_all(id, None, "revoked_by_admin", ctx.now).await?;
        events::emit_sessions(&mut tx, "session.revoked", &ended, "revoked_by_admin", ctx.now).await?;
        tx.commit().await?;
        let n = ended.len() as u64;
        self.audit.record(ctx, Event::ok("sessions_revoked", Some(id)).by(who.actor())).await;
        Ok(n)
    }

    /// Refuses to hand out more than the caller holds: granting a role requires
    /// every permission in it, so `admin:users:write` alone cannot mint an admin.
    /// Holders of `admin:roles:write` may grant any role: they can already put any
    /// permission into a role of their own, so the check would protect nothing.
    /// Refuses to act on a user who holds more than the caller: without this,
    /// `admin:users:write` could change an administrator's email (then reset their
    /// password), ban them or strip their role. Unknown ids pass (they 404 later).
    async fn may_act_on(&self, ctx: &RequestCtx, who: &Principal, id: &str) -> Result<(), AuthError> {
        let roles = self.db.user_roles(id).await?;
        self.may_grant(ctx, who, &roles).await
    }

    async fn may_grant(&self, ctx: &RequestCtx, who: &Principal, roles: &[String]) -> Result<(), AuthError> {
        if rbac::require_scope(who, &["admin:roles:write"]).is_ok() {
            return Ok(());
        }
        let perms = self.db.role_permissions(roles).await?;
        let required: Vec<&str> = perms.iter().map(String::as_str).collect();
        if let Err(denied) = rbac::require_scope(who, &required) {
            let reason = format!("granting {} needs {}", roles.join(","), denied.required.join(" "));
            self.audit.record(ctx, Event::failed("role_granted", None, &reason).by(who.actor())).await;
            return Err(AuthError::Denied(denied.required));
        }
        Ok(())
    }

    /// Every role.
    pub async fn role_list(&self) -> Result<Vec<RoleRow>, AuthError> {
        Ok(self.db.role_list().await?)
    }

    /// Creates a role.
    pub async fn role_create(
        &self,
        ctx: &RequestCtx,
        who: &Principal,
        name: &str,
        description: Option<String>,
        permissions: &[String],
    ) -> Result<RoleRow, AuthError> {
        let mut errors = rbac::check_permissions("permissions", permissions);
        if !rbac::valid_name(name) {
            errors.insert(0, field("name", "invalid_format", "must match [a-z0-9_.:-]+ (at most 128 characters)"));
        }
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        let role = RoleRow {
            name: name.to_owned(),
            description,
            permissions: rbac::normalized(permissions),
            created_at: ctx.now,
            updated_at: ctx.now,
        };
        let taken = |e| match e {
            StoreError::Conflict(_) => AuthError::Conflict("a role with this name already exists"),
            other => other.into(),
        };
        let mut tx = self.db.write().await?;
        tx.role_insert(&role).await.map_err(taken)?;
        events::emit(&mut tx, "role.created", role_data(&role), ctx.now).await?;
        tx.commit().await.map_err(taken)?;
        self.audit.record(ctx, Event { reason: Some(name), ..Event::ok("role_created", None).by(who.actor()) }).await;
        Ok(role)
    }

    /// Updates a role's description and/or permissions.
    pub async fn role_update(
        &self,
        ctx: &RequestCtx,
        who: &Principal,
        name: &str,
        description: Option<Option<String>>,
        permissions: Option<Vec<String>>,
    ) -> Result<RoleRow, AuthError> {
        if let Some(p) = &permissions {
            let errors = rbac::check_permissions("permissions", p);
            if !errors.is_empty() {
                return Err(AuthError::Validation(errors));
            }
        }
        let perms = permissions.map(|p| rbac::normalized(&p));
        let mut tx = self.db.write().await?;
        if !tx.role_update(name, description, perms.as_deref(), ctx.now).await? {
            return Err(AuthError::NotFound);
        }
        let role = tx.role_get(name).await?.ok_or(AuthError::NotFound)?;
        events::emit(&mut tx, "role.updated", role_data(&role), ctx.now).await?;
        tx.commit().await?;
        self.audit.record(ctx, Event { reason: Some(name), ..Event::ok("role_updated", None).by(who.actor()) }).await;
        Ok(role)
    }

    /// Deletes a role nobody holds; built-in roles are never deleted.
    pub async fn role_delete(&self, ctx: &RequestCtx, who: &Principal, name: &str) -> Result<(), AuthError> {
        if rbac::BUILTIN_ROLES.contains(&name) {
            return Err(AuthError::Forbidden("built-in roles can be edited but not deleted"));
        }
        let mut tx = self.db.write().await?;
        let Some(role) = tx.role_get(name).await? else { return Err(AuthError::NotFound) };
        match tx.role_delete(name).await {
            Ok(true) => {}
            Ok(false) => return Err(AuthError::NotFound),
            Err(StoreError::Conflict(_)) => return Err(AuthError::Conflict("the role is still held by users")),
            Err(e) => return Err(e.into()),
        }
        events::emit(&mut tx, "role.deleted", role_data(&role), ctx.now).await?;
        tx.commit().await?;
        self.audit.record(ctx, Event { reason: Some(name), ..Event::ok("role_deleted", None).by(who.actor()) }).await;
        Ok(())
    }
}

/// A role event's `data`: the admin API's view.
fn role_data(r: &RoleRow) -> serde_json::Value {
    serde_json::to_value(crate::views::role_view(r)).unwrap_or_default()
}

fn conflict(e: StoreError) -> AuthError {
    match e {
        StoreError::Conflict("unknown role") => {
            AuthError::Validation(vec![field("roles", "unknown", "names a role that does not exist")])
        }
        StoreError::Conflict(_) => AuthError::Conflict("an account with this email already exists"),
        other => other.into(),
    }
}
