//! API keys for machine-to-machine calls.
//!
//! Format: `pcl_` + 32 random base62 characters (≈190 bits) + a 6-character base62
//! CRC32 of everything before it. The fixed prefix lets secret scanners find leaked
//! keys; the checksum lets them — and us, before any database lookup — tell a real
//! key from noise (the scheme GitHub uses for its tokens).
//!
//! Validation hashes the key (SHA-256) and looks the hash up, through a per-node
//! cache whose entries live one second: a revoked key stops working on every node
//! within a second, and a flood of requests with one key costs one query a second.
//! `last_used_at` is kept in memory and flushed every few seconds, not written per
//! request.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use portcullis_proto::FieldError;

use crate::{
    audit::{Audit, Event},
    auth::AuthError,
    crypto::{self, Secret},
    ctx::{Principal, RequestCtx},
    page::{cursor_decode, page_limit, paginate},
    rbac,
    store::{ApiKeyRow, Db, StoreError, UserRow},
};

use portcullis_proto::api_key::{BASE62, RANDOM_LEN, checksum as base62_checksum};
pub use portcullis_proto::api_key::{KEY_LEN, PREFIX, well_formed};
/// How long a cached lookup may be served: the revocation delay.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
const CACHE_MAX: usize = 10_000;

/// A fresh key and the prefix shown in lists.
pub fn generate() -> (Secret, String) {
    let mut body = String::with_capacity(KEY_LEN);
    body.push_str(PREFIX);
    while body.len() < PREFIX.len() + RANDOM_LEN {
        for b in crypto::random_bytes::<48>() {
            // Rejection sampling: 248 = 4 × 62 keeps every character equally likely.
            if b < 248 && body.len() < PREFIX.len() + RANDOM_LEN {
                body.push(char::from(BASE62.get(usize::from(b % 62)).copied().unwrap_or(b'0')));
            }
        }
    }
    let key = format!("{body}{}", base62_checksum(&body));
    let shown = display_prefix(&key);
    (Secret::new(key), shown)
}

/// The part of a key that lists show: `pcl_` and 8 characters.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(PREFIX.len() + 8).collect()
}

/// Why a key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRejection {
    /// Not a well-formed key, unknown, revoked, rotated out, or its owner is banned.
    Invalid,
    /// Past its expiry.
    Expired,
}

/// What a valid key grants.
#[derive(Debug, Clone)]
pub struct KeyGrant {
    /// The key.
    pub key: ApiKeyRow,
    /// The key's scopes that its owner still holds.
    pub effective_scopes: Vec<String>,
    /// The owner as loaded with the key (cached like it): saves `/v1/me` a read.
    pub owner: Option<Arc<UserRow>>,
}

/// A looked-up key, its owner's standing then, and the owner (unless banned).
type Loaded = Arc<(ApiKeyRow, rbac::Owner, Option<Arc<UserRow>>)>;
/// When looked up, the auth-change count then, and what was found.
type CacheEntry = (Instant, u64, Option<Loaded>);

/// Who a new key is for.
#[derive(Debug, Clone, Copy)]
pub struct KeyOwner<'a> {
    /// The user who owns it.
    pub user_id: &'a str,
    /// What the owner holds now: the key's scopes must be among them.
    pub held: &'a [String],
    /// The session it is created from (theft detection revokes it with the session).
    pub session_id: Option<&'a str>,
}

/// Validates keys through the cache and coalesces last-used writes.
pub struct ApiKeys {
    db: Db,
    audit: Audit,
    max_ttl: Option<Duration>,
    cache: Mutex<HashMap<String, CacheEntry>>,
    used: Mutex<HashMap<String, i64>>,
}

impl ApiKeys {
    /// A validator over this database; `max_ttl` (`api_keys.max_ttl`) bounds the
    /// lifetime of new keys and is the lifetime of those created without one.
    pub fn new(db: Db, audit: Audit, max_ttl: Option<Duration>) -> Arc<Self> {
        Arc::new(Self { db, audit, max_ttl, cache: Mutex::new(HashMap::new()), used: Mutex::new(HashMap::new()) })
    }

    /// Resolves a presented key: format, lookup, revocation, expiry, owner ban, and
    /// scopes cut down to what the owner holds now.
    pub async fn check(&self, key: &str, now: i64) -> Result<KeyGrant, KeyRejection> {
        if !well_formed(key) {
            return Err(KeyRejection::Invalid);
        }
        let hash = crypto::sha256_b64(key);
        // A ban or role change made through this node moves the count: the owner's
        // standing is read again at once (other nodes: within CACHE_TTL).
        let generation = self.db.auth_generation();
        let cached = self.cache.lock().ok().and_then(|c| {
            c.get(&hash).filter(|(at, g, _)| *g == generation && at.elapsed() < CACHE_TTL).map(|e| e.2.clone())
        });
        let entry = match cached {
            Some(entry) => entry,
            None => {
                let entry = self.load(&hash, now).await.map_err(|e| {
                    tracing::error!(error = %e, "API key lookup failed");
                    KeyRejection::Invalid
                })?;
                if let Ok(mut c) = self.cache.lock() {
                    if c.len() >= CACHE_MAX {
                        // Make room without evicting real keys for junk: first drop
                        // expired entries, then the cached misses (well-formed random
                        // keys are cheap to forge, the checksum is public).
                        c.retain(|_, (at, g, _)| *g == generation && at.elapsed() < CACHE_TTL);
                        if c.len() >= CACHE_MAX {
                            c.retain(|_, (_, _, e)| e.is_some());
                        }
                        if c.len() >= CACHE_MAX {
                            c.clear();
                        }
                    }
                    c.insert(hash, (Instant::now(), generation, entry.clone()));
                }
                entry
            }
        };
        let Some(entry) = entry else { return Err(KeyRejection::Invalid) };
        let (row, owner, user) = &*entry;
        if row.revoked_at.is_some() {
            return Err(KeyRejection::Invalid);
        }
        // The key's scopes that its owner still holds; none at all once banned.
        let Some(effective_scopes) = owner.bound(row.scopes.iter().map(String::as_str)) else {
            return Err(KeyRejection::Invalid);
        };
        if row.expires_at.is_some_and(|t| t <= now) {
            return Err(KeyRejection::Expired);
        }
        if let Ok(mut used) = self.used.lock() {
            used.insert(row.id.clone(), now);
        }
        Ok(KeyGrant { key: row.clone(), effective_scopes, owner: user.clone() })
    }

    async fn load(&self, hash: &str, now: i64) -> Result<Option<Loaded>, StoreError> {
        let Some(found) = self.db.api_key_lookup(hash, now).await? else { return Ok(None) };
        let (owner, user) = if found.owner_banned {
            (rbac::Owner::Banned, None)
        } else {
            let held = Arc::new(self.db.role_permissions(&found.owner_roles).await?);
            (rbac::Owner::Active(held), self.db.user_by_id(&found.key.owner_id).await?.map(Arc::new))
        };
        Ok(Some(Arc::new((found.key, owner, user))))
    }

    /// Authenticates a request carrying `X-API-Key`.
    pub async fn authenticate(&self, key: &str, now: i64) -> Result<Principal, KeyRejection> {
        let grant = self.check(key, now).await?;
        Ok(Principal::ApiKey {
            key_id: grant.key.id,
            owner_id: grant.key.owner_id,
            scopes: grant.effective_scopes,
            owner: grant.owner,
        })
    }

    /// Drops cached lookups of a key on this node at once (other nodes: within
    /// [`CACHE_TTL`]).
    pub fn forget(&self, key_id: &str) {
        if let Ok(mut c) = self.cache.lock() {
            c.retain(|_, (_, _, e)| e.as_ref().is_none_or(|e| e.0.id != key_id));
        }
    }

    /// Writes pending last-used times.
    pub async fn flush_last_used(&self) {
        let pending: Vec<(String, i64)> = match self.used.lock() {
            Ok(mut m) => m.drain().collect(),
            Err(_) => return,
        };
        for (id, at) in pending {
            if let Err(e) = self.db.api_key_touch(&id, at).await {
                tracing::warn!(error = %e, "recording API key use failed");
            }
        }
    }

    /// Creates a key for the caller's own user. Every scope must be one the caller
    /// holds right now: a credential never mints a stronger one.
    pub async fn create(
        &self,
        ctx: &RequestCtx,
        who: &Principal,
        name: &str,
        scopes: &[String],
        expires_in: Option<Duration>,
    ) -> Result<(ApiKeyRow, Secret), AuthError> {
        let user_id = who.user_id().ok_or(AuthError::Forbidden("API keys belong to users"))?;
        let owner = KeyOwner { user_id, held: who.scopes(), session_id: who.session_id() };
        self.create_for(ctx, who.actor(), owner, name, scopes, expires_in).await
    }

    /// Creates a key for `owner`, named `actor` in the audit trail (the operator
    /// creates keys for users this way).
    pub async fn create_for(
        &self,
        ctx: &RequestCtx,
        actor: &str,
        owner: KeyOwner<'_>,
        name: &str,
        scopes: &[String],
        expires_in: Option<Duration>,
    ) -> Result<(ApiKeyRow, Secret), AuthError> {
        let mut errors = rbac::check_permissions("scopes", scopes);
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            errors.insert(
                0,
                FieldError {
                    field: "name".into(),
                    code: "invalid_length".into(),
                    message: "must be 1 to 100 characters".into(),
                },
            );
        }
        if let (Some(max), Some(asked)) = (self.max_ttl, expires_in)
            && asked > max
        {
            errors.push(FieldError {
                field: "expires_in".into(),
                code: "too_long".into(),
                message: format!("must be at most {} (api_keys.max_ttl)", crate::units::HumanDuration(max)),
            });
        }
        let expires_in = expires_in.or(self.max_ttl);
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        let scopes = rbac::normalized(scopes);
        let missing: Vec<String> = scopes.iter().filter(|s| !owner.held.contains(s)).cloned().collect();
        if !missing.is_empty() {
            self.audit
                .record(ctx, Event::failed("api_key_created", Some(owner.user_id), "scope_escalation").by(actor))
                .await;
            return Err(AuthError::Denied(missing));
        }
        let (secret, prefix) = generate();
        let expires_at = expires_in.map(|d| ctx.now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
        let row = ApiKeyRow {
            id: crypto::new_id("key", ctx.now),
            owner_id: owner.user_id.to_owned(),
            name: name.to_owned(),
            prefix,
            scopes,
            created_at: ctx.now,
            expires_at,
            last_used_at: None,
            revoked_at: None,
        };
        let mut tx = self.db.write().await?;
        if !tx.api_key_insert(&row, &crypto::sha256_b64(secret.expose()), owner.session_id).await? {
            return Err(crate::tokens::TokenError::Invalid("the session of this token has ended").into());
        }
        crate::events::emit(&mut tx, "api_key.created", crate::events::api_key_data(&row), ctx.now).await?;
        tx.commit().await?;
        self.audit
            .record(ctx, Event { reason: Some(&row.id), ..Event::ok("api_key_created", Some(owner.user_id)).by(actor) })
            .await;
        Ok((row, secret))
    }

    /// The caller's own live keys, a page at a time.
    pub async fn list(
        &self,
        who: &Principal,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<(Vec<ApiKeyRow>, Option<String>), AuthError> {
        let limit = page_limit(limit)?;
        let after = cursor_decode(cursor)?;
        let rows = self.db.api_key_list(who.subject(), after.as_deref(), limit + 1).await?;
        Ok(paginate(rows, limit, |k| &k.id))
    }

    /// Revokes one of the caller's keys; another user's id is `NotFound`.
    pub async fn revoke(&self, ctx: &RequestCtx, who: &Principal, id: &str) -> Result<(), AuthError> {
        let mut tx = self.db.write().await?;
        let Some(row) = tx.api_key_revoke(who.subject(), id, ctx.now).await? else {
            return Err(AuthError::NotFound);
        };
        crate::events::emit(&mut tx, "api_key.revoked", crate::events::api_key_data(&row), ctx.now).await?;
        tx.commit().await?;
        self.forget(id);
        self.audit
            .record(
                ctx,
                Event { reason: Some(id), ..Event::ok("api_key_revoked", Some(who.subject())).by(who.actor()) },
            )
            .await;
        Ok(())
    }

    /// Gives one of the caller's keys a new secret; the old one keeps working for
    /// `grace` (default none).
    pub async fn rotate(
        &self,
        ctx: &RequestCtx,
        who: &Principal,
        id: &str,
        grace: Duration,
    ) -> Result<(ApiKeyRow, Secret), AuthError> {
        let (secret, prefix) = generate();
        let until = ctx.now.saturating_add(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
        let hash = crypto::sha256_b64(secret.expose());
        if !self.db.api_key_rotate(who.subject(), id, &hash, &prefix, until).await? {
            return Err(AuthError::NotFound);
        }
        self.forget(id);
        self.audit
            .record(
                ctx,
                Event { reason: Some(id), ..Event::ok("api_key_rotated", Some(who.subject())).by(who.actor()) },
            )
            .await;
        let row = self.db.api_key_get(who.subject(), id).await?.ok_or(AuthError::NotFound)?;
        Ok((row, secret))
    }

    /// For other services: is this key good, and what may it do?
    pub async fn verify(&self, ctx: &RequestCtx, who: &Principal, key: &str) -> Option<KeyGrant> {
        match self.check(key, ctx.now).await {
            Ok(grant) => Some(grant),
            Err(r) => {
                self.audit
                    .record(ctx, Event::failed("api_key_verify", None, rejection_reason(r)).by(who.actor()))
                    .await;
                None
            }
        }
    }

    /// Records a failed attempt to authenticate with a key.
    pub async fn audit_failure(&self, ctx: &RequestCtx, r: KeyRejection) {
        self.audit.record(ctx, Event::failed("api_key_auth", None, rejection_reason(r))).await;
    }
}

impl From<StoreError> for KeyRejection {
    fn from(_: StoreError) -> Self {
        KeyRejection::Invalid
    }
}

/// Context-free helper for callers that must audit key failures.
pub fn rejection_reason(r: KeyRejection) -> &'static str {
    match r {
        KeyRejection::Invalid => "invalid_api_key",
        KeyRejection::Expired => "expired_api_key",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_well_formed_and_distinct() {
        let (a, pa) = generate();
        let (b, _) = generate();
        assert_eq!(a.expose().len(), KEY_LEN);
        assert!(a.expose().starts_with("pcl_"));
        assert!(well_formed(a.expose()) && well_formed(b.expose()));
        assert_ne!(a.expose(), b.expose());
        assert_eq!(pa.len(), 12);
        assert!(a.expose().starts_with(&pa));
    }

    #[test]
    fn noise_and_typos_are_rejected_without_lookup() {
        let (k, _) = generate();
        let k = k.expose().to_owned();
        let mut typo = k.clone().into_bytes();
        typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
        assert!(!well_formed(&String::from_utf8(typo).unwrap()));
        assert!(!well_formed(&k[..k.len() - 1]));
        assert!(!well_formed(&k.replace("pcl_", "pk_x")));
        assert!(!well_formed("pcl_"));
        assert!(!well_formed(""));
    }
}
