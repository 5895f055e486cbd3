//! Client administration, for `/v1/admin/clients` and `portcullis clients`:
//! create, read, change, rotate the secret, delete. A secret is shown once, at
//! creation or rotation, and only its SHA-256 is kept.

use portcullis_proto::ClientView;
use serde_json::Value;

use super::{OAuth, put};
use crate::{
    audit::Event,
    auth::AuthError,
    clients::{Client, ClientMetadata, OIDC_SCOPES, generate_secret},
    clock::rfc3339,
    crypto::{self, Secret},
    ctx::{Principal, RequestCtx},
    events,
    page::{cursor_decode, page_limit, paginate},
    rbac,
    store::ClientRow,
};

/// A client as the admin API shows it: its metadata under RFC 7591 names plus
/// `client_id` and times; `client_secret` only when just generated.
pub fn client_view(c: &Client, secret: Option<&Secret>) -> ClientView {
    ClientView {
        client_id: c.row.id.clone(),
        client_id_issued_at: c.row.created_at / 1000,
        owner: c.row.owner.clone(),
        created_at: rfc3339(c.row.created_at),
        updated_at: rfc3339(c.row.updated_at),
        client_secret: secret.map(|s| s.expose().to_owned()),
        client_secret_expires_at: secret.map(|_| 0),
        previous_secret_expires_at: c
            .row
            .previous_expires_at
            .filter(|_| c.row.previous_secret_hash.is_some())
            .map(rfc3339),
        metadata: c.meta.clone(),
    }
}

/// Whoever manages a client — registers, changes, rotates the secret of, or deletes
/// it — must hold every permission scope (beyond OpenID's) it has, unless they may
/// define permissions anyway (`admin:roles:write`): else `admin:clients:write` would
/// mint a client, or take over an admin's client, and get tokens with any permission
/// at all. The same rule as granting a role (`may_grant`). A client's other powers
/// — skipping consent (`trusted`), introspecting everyone's tokens
/// (`introspection`) — are only for holders of `admin:roles:write`.
fn check_held(who: &Principal, meta: &ClientMetadata) -> Result<(), AuthError> {
    if rbac::require_scope(who, &["admin:roles:write"]).is_ok() {
        return Ok(());
    }
    if meta.trusted || meta.introspection {
        return Err(AuthError::Denied(vec!["admin:roles:write".into()]));
    }
    let wanted: Vec<&str> = meta.scopes().filter(|s| !OIDC_SCOPES.contains(s)).collect();
    rbac::require_scope(who, &wanted).map_err(|d| AuthError::Denied(d.required))
}

/// A client event's `data`: the admin API's view, never a secret.
fn client_data(view: &ClientView) -> Value {
    serde_json::to_value(view).unwrap_or_default()
}

fn parsed(row: ClientRow) -> Result<Client, AuthError> {
    let meta: ClientMetadata =
        serde_json::from_str(&row.metadata).map_err(|e| AuthError::Internal(format!("client metadata: {e}")))?;
    Ok(Client { row, jwks: Vec::new(), meta })
}

impl OAuth {
    /// [`check_held`], with the refusal in the audit trail.
    async fn refuse_unheld(
        &self,
        ctx: &RequestCtx,
        who: &Principal,
        meta: &ClientMetadata,
        id: &str,
    ) -> Result<(), AuthError> {
        let Err(e) = check_held(who, meta) else { return Ok(()) };
        if let AuthError::Denied(missing) = &e {
            let reason = format!("managing {id} needs {}", missing.join(" "));
            self.audit.record(ctx, Event::failed("client_managed", None, &reason).by(who.actor())).await;
        }
        Err(e)
    }

    /// Registers a client; returns its view with the secret (if it uses one).
    pub async fn client_create(
        &self,
        ctx: &RequestCtx,
        who: &Principal,
        meta: ClientMetadata,
    ) -> Result<ClientView, AuthError> {
        let actor = who.actor();
        let meta = crate::clients::validated(meta).map_err(AuthError::Validation)?;
        self.refuse_unheld(ctx, who, &meta, "new client").await?;
        let secret = meta.uses_secret().then(generate_secret);
        let row = ClientRow {
            id: crypto::new_id("cli", ctx.now),
            name: meta.client_name.clone(),
            metadata: serde_json::to_string(&meta).map_err(|e| AuthError::Internal(e.to_string()))?,
            secret_hash: secret.as_ref().map(|s| crypto::sha256_b64(s.expose())),
            previous_secret_hash: None,
            previous_expires_at: None,
            trusted: meta.trusted,
            owner: who.owner_label().to_owned(),
            created_at: ctx.now,
            updated_at: ctx.now,
        };
        let view = client_view(&Client { row: row.clone(), meta: meta.clone(), jwks: Vec::new() }, None);
        let mut tx = self.db.write().await?;
        tx.client_insert(&row).await?;
        events::emit(&mut tx, "client.created", client_data(&view), ctx.now).await?;
        tx.commit().await?;
        self.audit
            .record(
                ctx,
                Event {
                    kind: "client_created",
                    success: true,
                    user_id: None,
                    actor: Some(actor),
                    reason: Some(&row.id),
                },
            )
            .await;
        Ok(client_view(&Client { row, meta, jwks: Vec::new() }, secret.as_ref()))
    }

    /// One client.
    pub async fn client_get(&self, id: &str) -> Result<ClientView, AuthError> {
        let row = self.db.client_get(id).await?.ok_or(AuthError::NotFound)?;
        Ok(client_view(&parsed(row)?, None))
    }

    /// A page of clients.
    pub async fn client_list(
        &self,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<(Vec<ClientView>, Option<String>), AuthError> {
        let limit = page_limit(limit)?;
        let after = cursor_decode(cursor)?;
        let rows = self.db.client_list(after.as_deref(), limit + 1).await?;
        let (rows, next) = paginate(rows, limit, |r| &r.id);
        let views = rows.into_iter().map(|r| parsed(r).map(|c| client_view(&c, None))).collect::<Result<_, _>>()?;
        Ok((views, next))
    }

    /// Changes metadata: the fields given replace the stored ones (JSON merge of
    /// the top level). A client that newly needs a secret gets one, shown once.
    pub async fn client_update(
        &self,
        ctx: &RequestCtx,
        who: &Principal,
        id: &str,
        patch: Value,
    ) -> Result<ClientView, AuthError> {
        let actor = who.actor();
        let row = self.db.client_get(id).await?.ok_or(AuthError::NotFound)?;
        // Both what the client is and what it would become must be held.
        self.refuse_unheld(ctx, who, &parsed(row.clone())?.meta, id).await?;
        let Value::Object(patch) = patch else {
            return Err(AuthError::Validation(vec![portcullis_proto::FieldError {
                field: String::new(),
                code: "invalid_type".into(),
                message: "send a JSON object of client metadata".into(),
            }]));
        };
        let mut merged: Value = serde_json::from_str(&row.metadata).map_err(|e| AuthError::Internal(e.to_string()))?;
        for (k, v) in patch {
            if [
                "client_id",
                "client_secret",
                "client_id_issued_at",
                "client_secret_expires_at",
                "created_at",
                "updated_at",
                "owner",
            ]
            .contains(&k.as_str())
            {
                continue;
            }
            put(&mut merged, &k, v);
        }
        let meta: ClientMetadata =
            crate::validate::parse_json(merged.to_string().as_bytes()).map_err(AuthError::from)?;
        let meta = crate::clients::validated(meta).map_err(AuthError::Validation)?;
        self.refuse_unheld(ctx, who, &meta, id).await?;
        let text = serde_json::to_string(&meta).map_err(|e| AuthError::Internal(e.to_string()))?;
        // Whoever changes how the client authenticates holds its credential now, and
        // its grants are bounded by what they hold.
        let stored: ClientMetadata =
            serde_json::from_str(&row.metadata).map_err(|e| AuthError::Internal(format!("client metadata: {e}")))?;
        let rekeyed = stored.token_endpoint_auth_method != meta.token_endpoint_auth_method
            || stored.jwks != meta.jwks
            || stored.jwks_uri != meta.jwks_uri;
        let owner = rekeyed.then(|| who.owner_label());
        let mut updated = self
            .db
            .client_update(id, &meta.client_name, &text, meta.trusted, owner, ctx.now)
            .await?
            .ok_or(AuthError::NotFound)?;
        let mut secret = None;
        if meta.uses_secret() && updated.secret_hash.is_none() {
            let s = generate_secret();
            updated = self
                .db
                .client_set_secret(id, &crypto::sha256_b64(s.expose()), None, who.owner_label(), ctx.now)
                .await?
                .ok_or(AuthError::NotFound)?;
            secret = Some(s);
        }
        self.clients.forget(id);
        self.audit
            .record(
                ctx,
                Event { kind: "client_updated", success: true, user_id: None, actor: Some(actor), reason: Some(id) },
            )
            .await;
        Ok(client_view(&parsed(updated)?, secret.as_ref()))
    }

    /// Issues a new secret; the old one keeps working for `grace_ms` (0: stops now).
    pub async fn client_rotate_secret(
        &self,
        ctx: &RequestCtx,
        who: &Principal,
        id: &str,
        grace_ms: i64,
    ) -> Result<ClientView, AuthError> {
        let actor = who.actor();
        let row = self.db.client_get(id).await?.ok_or(AuthError::NotFound)?;
        let client = parsed(row)?;
        self.refuse_unheld(ctx, who, &client.meta, id).await?;
        if !client.meta.uses_secret() {
            return Err(AuthError::Conflict("this client does not authenticate with a secret"));
        }
        let secret = generate_secret();
        let prev = (grace_ms > 0).then(|| ctx.now.saturating_add(grace_ms));
        let row = self
            .db
            .client_set_secret(id, &crypto::sha256_b64(secret.expose()), prev, who.owner_label(), ctx.now)
            .await?
            .ok_or(AuthError::NotFound)?;
        self.clients.forget(id);
        self.audit
            .record(
                ctx,
                Event {
                    kind: "client_secret_rotated",
                    success: true,
                    user_id: None,
                    actor: Some(actor),
                    reason: Some(id),
                },
            )
            .await;
        Ok(client_view(&parsed(row)?, Some(&secret)))
    }

    /// Deletes a client and ends every grant it holds.
    pub async fn client_delete(&self, ctx: &RequestCtx, who: &Principal, id: &str) -> Result<(), AuthError> {
        let actor = who.actor();
        let row = self.db.client_get(id).await?.ok_or(AuthError::NotFound)?;
        let client = parsed(row)?;
        self.refuse_unheld(ctx, who, &client.meta, id).await?;
        let mut tx = self.db.write().await?;
        let (found, ended) = tx.client_delete(id, ctx.now).await?;
        if !found {
            return Err(AuthError::NotFound);
        }
        events::emit(&mut tx, "client.deleted", client_data(&client_view(&client, None)), ctx.now).await?;
        events::emit_sessions(&mut tx, "session.revoked", &ended, "client_deleted", ctx.now).await?;
        tx.commit().await?;
        self.clients.forget(id);
        self.audit
            .record(
                ctx,
                Event { kind: "client_deleted", success: true, user_id: None, actor: Some(actor), reason: Some(id) },
            )
            .await;
        Ok(())
    }
}
