//! Live sessions: bearer authentication against them, listing, ending one or all,
//! and password change (which ends every other session, OWASP ASVS 3.3.3).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use portcullis_proto::FieldError;

use super::{Auth, AuthError, Principal, RequestCtx};
use crate::{
    crypto::Secret,
    passwords,
    store::{SessionRow, UserRow},
    tokens::TokenError,
};

/// How long a live session's check may be reused on this node. A session ended
/// through this node invalidates every entry at once; one ended on another node
/// stops working here within this time (as API keys do).
pub const LIVE_CACHE_TTL: Duration = Duration::from_secs(1);
const LIVE_CACHE_MAX: usize = 100_000;

/// When a session was confirmed live, the auth-change count then, and its user.
type LiveEntry = (Instant, u64, Arc<UserRow>);

/// Recently confirmed live sessions by session id.
#[derive(Default)]
pub(super) struct LiveCache(Mutex<HashMap<String, LiveEntry>>);

impl LiveCache {
    fn get(&self, sid: &str, generation: u64) -> Option<Arc<UserRow>> {
        let map = self.0.lock().ok()?;
        let (at, g, user) = map.get(sid)?;
        (*g == generation && at.elapsed() < LIVE_CACHE_TTL).then(|| user.clone())
    }

    fn put(&self, sid: &str, generation: u64, user: Arc<UserRow>) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= LIVE_CACHE_MAX {
                map.retain(|_, (at, g, _)| *g == generation && at.elapsed() < LIVE_CACHE_TTL);
                if map.len() >= LIVE_CACHE_MAX {
                    map.clear();
                }
            }
            map.insert(sid.to_owned(), (Instant::now(), generation, user));
        }
    }
}

impl Auth {
    /// Verifies a bearer token and that its session is still live: ending a session
    /// ends its access tokens at once on this node (within [`LIVE_CACHE_TTL`] on
    /// others), not when they expire.
    pub async fn authenticate(&self, token: &str, now: i64) -> Result<Principal, AuthError> {
        let claims = self.tokens.verify(token).await?;
        let Some(sid) = claims.sid else {
            // A client-credentials token: the client acts for itself, while it
            // stays registered.
            let client = match &claims.client_id {
                Some(c) if *c == claims.sub => self.clients.get(c).await?,
                _ => None,
            };
            if client.is_none() {
                return Err(TokenError::Invalid("the client of this token is gone").into());
            }
            return Ok(Principal {
                user_id: claims.sub,
                session_id: None,
                api_key_id: None,
                client_id: claims.client_id,
                roles: Vec::new(),
                scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
                user: None,
            });
        };
        // One statement: the session is live, belongs to `sub`, and its user is not
        // banned (a login racing a ban cannot leave a working token behind).
        // The count is read BEFORE the query: a write that lands meanwhile moves it
        // after committing, so what this read cached is stale by then.
        let generation = self.db.auth_generation();
        let user = match self.live.get(&sid, generation) {
            Some(user) => Some(user),
            None => {
                let user = self.db.user_by_live_session(&sid, now).await?.map(Arc::new);
                if let Some(u) = &user {
                    self.live.put(&sid, generation, u.clone());
                }
                user
            }
        };
        let Some(user) = user.filter(|u| u.id == claims.sub) else {
            return Err(TokenError::Invalid("the session of this token has ended").into());
        };
        Ok(Principal {
            user_id: claims.sub,
            session_id: Some(sid),
            api_key_id: None,
            client_id: claims.client_id,
            roles: claims.roles,
            scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
            user: Some(user),
        })
    }

    /// The caller's own account.
    pub async fn me(&self, who: &Principal) -> Result<UserRow, AuthError> {
        if !who.has_user() {
            return Err(AuthError::Forbidden("a client-credentials token has no user"));
        }
        if who.client_id.is_some() {
            // The whole account is more than any OAuth scope grants; clients read
            // the claims their scope allows at /oauth/userinfo.
            return Err(AuthError::Forbidden(
                "a token issued to an OAuth client reads the user at /oauth/userinfo, by scope",
            ));
        }
        if let Some(user) = &who.user {
            return Ok(UserRow::clone(user));
        }
        self.db.user_by_id(&who.user_id).await?.ok_or(AuthError::NotFound)
    }

    /// Changes what a user may change about themself: name and `unsafe_metadata`.
    pub async fn me_update(
        &self,
        ctx: &RequestCtx,
        who: &Principal,
        name: Option<Option<String>>,
        unsafe_metadata: Option<serde_json::Value>,
    ) -> Result<UserRow, AuthError> {
        let mut errors = Vec::new();
        let name = name.map(|n| crate::admin::clean_name(n, &mut errors));
        let unsafe_metadata =
            unsafe_metadata.and_then(|m| crate::admin::metadata_text("unsafe_metadata", &m, &mut errors));
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        let patch = crate::store::UserPatch { name, unsafe_metadata, ..Default::default() };
        let user = self.db.user_update(&who.user_id, &patch, ctx.now).await?.ok_or(AuthError::NotFound)?;
        self.audit(ctx, "user_updated", true, Some(&user.id), None).await;
        Ok(user)
    }

    /// Ends the caller's session.
    pub async fn logout(&self, ctx: &RequestCtx, who: &Principal, session_id: &str) -> Result<(), AuthError> {
        self.db.session_revoke(&who.user_id, session_id, "logout", ctx.now).await?;
        self.audit(ctx, "logout", true, Some(&who.user_id), None).await;
        Ok(())
    }

    /// The caller's live sessions.
    pub async fn sessions(
        &self,
        who: &Principal,
        now: i64,
        cursor: Option<&str>,
        limit: Option<i64>,
    ) -> Result<(Vec<SessionRow>, Option<String>), AuthError> {
        let limit = crate::admin::page_limit(limit)?;
        let before = crate::admin::cursor_decode(cursor)?;
        let rows = self.db.sessions_active(&who.user_id, now, before.as_deref(), limit + 1).await?;
        Ok(crate::admin::paginate(rows, limit, |s| &s.id))
    }

    /// Ends one of the caller's sessions; someone else's id is `NotFound`.
    pub async fn session_revoke(&self, ctx: &RequestCtx, who: &Principal, id: &str) -> Result<(), AuthError> {
        if !self.db.session_revoke(&who.user_id, id, "revoked_by_user", ctx.now).await? {
            return Err(AuthError::NotFound);
        }
        self.audit(ctx, "session_revoked", true, Some(&who.user_id), None).await;
        Ok(())
    }

    /// Changes the password after re-checking the current one, then ends every
    /// other session so a thief holding one loses it.
    pub async fn change_password(
        &self,
        ctx: &RequestCtx,
        who: &Principal,
        session_id: &str,
        current: Secret,
        new: Secret,
    ) -> Result<u64, AuthError> {
        let user = self.me(who).await?;
        let local = user.email.split('@').next().unwrap_or_default();
        let mut errors = passwords::check_policy("new_password", new.expose(), &[&user.email, local, "portcullis"]);
        if errors.is_empty() && new.expose() == current.expose() {
            errors.push(FieldError {
                field: "new_password".into(),
                code: "unchanged".into(),
                message: "must differ from the current password".into(),
            });
        }
        // The same gate as sign-in: rate limit, lockout, failure counting. A stolen
        // access token must not become an unthrottled password oracle.
        let ok = match self.check_password(ctx, "password_change", &user.email, current).await {
            Ok(_) => true,
            Err(AuthError::InvalidCredentials) => false,
            Err(other) => return Err(other),
        };
        if !ok {
            errors.insert(
                0,
                FieldError {
                    field: "current_password".into(),
                    code: "incorrect".into(),
                    message: "is not the current password".into(),
                },
            );
        }
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        let phc = self.hasher.hash(new).await?;
        self.db.user_set_password(&user.id, &phc, ctx.now).await?;
        let ended = self.db.sessions_revoke_all(&user.id, Some(session_id), "password_changed", ctx.now).await?;
        self.audit(ctx, "password_change", true, Some(&user.id), None).await;
        Ok(ended)
    }
}
