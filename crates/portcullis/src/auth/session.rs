//! Live sessions: bearer authentication against them, listing, ending one or all,
//! and password change (which ends every other session, OWASP ASVS 3.3.3).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use portcullis_proto::FieldError;

use super::{
    Auth, AuthError,
    mfa::{Challenge, Pending},
};
use crate::ctx::{Principal, RequestCtx};
use crate::{
    crypto::Secret,
    events,
    mail::Template,
    store::{SessionRow, UserRow},
    tokens::TokenError,
};

/// How long a live session's check may be reused on this node. A session ended
/// through this node invalidates every entry at once; one ended on another node
/// stops working here within this time (as API keys do).
pub const LIVE_CACHE_TTL: Duration = Duration::from_secs(1);
const LIVE_CACHE_MAX: usize = 100_000;

/// A live session's user and the permissions the user's roles grant.
type Live = (Arc<UserRow>, Arc<Vec<String>>);
/// When a session was confirmed live, the auth-change count then, and what it found.
type LiveEntry = (Instant, u64, Live);

/// Recently confirmed live sessions by session id.
#[derive(Default)]
pub(super) struct LiveCache(Mutex<HashMap<String, LiveEntry>>);

impl LiveCache {
    fn get(&self, sid: &str, generation: u64) -> Option<Live> {
        let map = self.0.lock().ok()?;
        let (at, g, live) = map.get(sid)?;
        (*g == generation && at.elapsed() < LIVE_CACHE_TTL).then(|| live.clone())
    }

    fn put(&self, sid: &str, generation: u64, live: Live) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= LIVE_CACHE_MAX {
                map.retain(|_, (at, g, _)| *g == generation && at.elapsed() < LIVE_CACHE_TTL);
                if map.len() >= LIVE_CACHE_MAX {
                    map.clear();
                }
            }
            map.insert(sid.to_owned(), (Instant::now(), generation, live));
        }
    }
}

impl Auth {
    /// Verifies a bearer token and that its session is still live: ending a session
    /// ends its access tokens at once on this node (within [`LIVE_CACHE_TTL`] on
    /// others), not when they expire. The principal's roles and scopes are what the
    /// user (and the client, and its owner) hold NOW: a token's own claims are for
    /// outside verifiers, never for Portcullis's decisions.
    pub async fn authenticate(&self, token: &str, now: i64) -> Result<Principal, AuthError> {
        let claims = self.tokens.verify(token).await?;
        let token_scopes = claims.scope.split_whitespace();
        let Some(sid) = claims.sid else {
            return self.client_principal(claims.sub, claims.client_id, token_scopes).await;
        };
        // One statement: the session is live, belongs to `sub`, and its user is not
        // banned (a login racing a ban cannot leave a working token behind).
        // The count is read BEFORE the query: a write that lands meanwhile moves it
        // after committing, so what this read cached is stale by then.
        let generation = self.db.auth_generation();
        let live = match self.live.get(&sid, generation) {
            Some(live) => Some(live),
            None => match self.db.user_by_live_session(&sid, now).await? {
                Some(user) => {
                    let held = Arc::new(self.db.role_permissions(&user.roles).await?);
                    let live = (Arc::new(user), held);
                    self.live.put(&sid, generation, live.clone());
                    Some(live)
                }
                None => None,
            },
        };
        let Some((user, held)) = live.filter(|(u, _)| u.id == claims.sub) else {
            return Err(TokenError::Invalid("the session of this token has ended").into());
        };
        let scopes = match &claims.client_id {
            // A grant to a client: what the grant allows now (`grant_allows`).
            Some(cid) => {
                let Some(client) = self.clients.get(cid).await? else {
                    return Err(TokenError::Invalid("the client of this token is gone").into());
                };
                token_scopes
                    .filter(|s| crate::clients::grant_allows(&client.meta, &held, s))
                    .map(str::to_owned)
                    .collect()
            }
            None => crate::rbac::within(token_scopes, &held),
        };
        // A client acting for the user has the scope it was granted, never the
        // user's roles.
        Ok(match claims.client_id {
            Some(client_id) => Principal::Grant { user, session_id: sid, client_id, scopes },
            None => Principal::Session { user, session_id: sid, scopes },
        })
    }

    /// A client-credentials token: the client acts for itself while it stays
    /// registered and its owner may act, with the token's scopes that the client
    /// may still ask for and its owner still holds.
    async fn client_principal<'a>(
        &self,
        sub: String,
        client_id: Option<String>,
        token_scopes: impl Iterator<Item = &'a str>,
    ) -> Result<Principal, AuthError> {
        let client = match &client_id {
            Some(c) if *c == sub => self.clients.get(c).await?,
            _ => None,
        };
        let Some(client) = client else {
            return Err(TokenError::Invalid("the client of this token is gone").into());
        };
        let owner = self.clients.owner(&client.row.owner).await?;
        let registered: Vec<&str> = token_scopes.filter(|s| client.meta.scopes().any(|c| c == *s)).collect();
        let Some(scopes) = owner.bound(registered) else {
            return Err(TokenError::Invalid("the owner of this token's client can no longer act").into());
        };
        Ok(Principal::Client { client_id: client.row.id.clone(), owner: client.row.owner.clone(), scopes })
    }

    /// Passes when the caller's session signed in within `security.reauth_window`:
    /// the gate of sensitive operations (a stolen access token alone must not mint
    /// lasting credentials). Reads the session as stored now.
    pub async fn require_recent(&self, who: &Principal, now: i64) -> Result<(), AuthError> {
        let sid = match (who.session_id(), who.client_id()) {
            (Some(sid), None) if !matches!(who, crate::ctx::Principal::Operator { .. }) => sid,
            _ => return Err(AuthError::Forbidden("this operation needs a signed-in user's own session")),
        };
        let session = self.db.session_get(sid).await?.filter(|s| s.user_id == who.subject() && s.is_active(now));
        let Some(session) = session else {
            return Err(TokenError::Invalid("the session of this token has ended").into());
        };
        let signed_in = session.auth_time.unwrap_or(session.created_at);
        let window = i64::try_from(self.settings.reauth_window.as_millis()).unwrap_or(i64::MAX);
        if now.saturating_sub(signed_in) > window {
            return Err(AuthError::ReauthRequired);
        }
        Ok(())
    }

    /// Confirms the password of the caller's session and renews its sign-in time,
    /// under the same rate limit and lockout as signing in. An account with a
    /// second factor gets a pending check instead, which the factor finishes at
    /// `POST /v1/auth/login/mfa`.
    pub async fn reauth(
        &self,
        ctx: &RequestCtx,
        who: &Principal,
        password: Secret,
    ) -> Result<Option<Challenge>, AuthError> {
        let (Some(sid), None) = (who.session_id(), who.client_id()) else {
            return Err(AuthError::Forbidden("this operation needs a signed-in user's own session"));
        };
        let user = self.me(who).await?;
        self.check_password(ctx, "reauth", &user.email, password).await?;
        let factors = self.factors_of(&user.id).await?;
        if !factors.is_empty() {
            let token = self.pending_sign_in(ctx, &user.id, Pending::Reauth, r#"["pwd"]"#, Some(sid)).await?;
            self.audit(ctx, "reauth_password", true, Some(&user.id), Some("second factor pending")).await;
            return Ok(Some(Challenge { token, factors }));
        }
        if !self.db.session_reauthenticated(sid, &user.id, ctx.now).await? {
            return Err(TokenError::Invalid("the session of this token has ended").into());
        }
        self.audit(ctx, "reauth", true, Some(&user.id), None).await;
        Ok(None)
    }

    /// The caller's own account.
    pub async fn me(&self, who: &Principal) -> Result<UserRow, AuthError> {
        if !who.has_user() {
            return Err(AuthError::Forbidden("a client-credentials token has no user"));
        }
        if who.client_id().is_some() {
            // The whole account is more than any OAuth scope grants; clients read
            // the claims their scope allows at /oauth/userinfo.
            return Err(AuthError::Forbidden(
                "a token issued to an OAuth client reads the user at /oauth/userinfo, by scope",
            ));
        }
        if let Some(user) = who.loaded_user() {
            return Ok(UserRow::clone(user));
        }
        self.db.user_by_id(who.subject()).await?.ok_or(AuthError::NotFound)
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
        let name = name.map(|n| crate::validate::clean_name(n, &mut errors));
        let unsafe_metadata =
            unsafe_metadata.and_then(|m| crate::validate::metadata_text("unsafe_metadata", &m, &mut errors));
        if !errors.is_empty() {
            return Err(AuthError::Validation(errors));
        }
        let patch = crate::store::UserPatch { name, unsafe_metadata, ..Default::default() };
        let mut tx = self.db.write().await?;
        if !tx.user_update(who.subject(), &patch, ctx.now).await? {
            return Err(AuthError::NotFound);
        }
        events::emit_user(&mut tx, "user.updated", who.subject(), ctx.now).await?;
        tx.commit().await?;
        let user = self.db.user_by_id(who.subject()).await?.ok_or(AuthError::NotFound)?;
        self.audit(ctx, "user_updated", true, Some(&user.id), None).await;
        Ok(user)
    }

    /// Ends the caller's session.
    pub async fn logout(&self, ctx: &RequestCtx, who: &Principal, session_id: &str) -> Result<(), AuthError> {
        let mut tx = self.db.write().await?;
        let ended = tx.session_end(session_id, Some(who.subject()), "logout", ctx.now).await?;
        events::emit_sessions(&mut tx, "session.ended", ended.as_slice(), "logout", ctx.now).await?;
        tx.commit().await?;
        self.audit(ctx, "logout", true, Some(who.subject()), None).await;
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
        let limit = crate::page::page_limit(limit)?;
        let before = crate::page::cursor_decode(cursor)?;
        let rows = self.db.sessions_active(who.subject(), now, before.as_deref(), limit + 1).await?;
        Ok(crate::page::paginate(rows, limit, |s| &s.id))
    }

    /// Ends one of the caller's sessions; someone else's id is `NotFound`.
    pub async fn session_revoke(&self, ctx: &RequestCtx, who: &Principal, id: &str) -> Result<(), AuthError> {
        let mut tx = self.db.write().await?;
        let Some(ended) = tx.session_end(id, Some(who.subject()), "revoked_by_user", ctx.now).await? else {
            return Err(AuthError::NotFound);
        };
        events::emit_sessions(&mut tx, "session.ended", &[ended], "revoked_by_user", ctx.now).await?;
        tx.commit().await?;
        self.audit(ctx, "session_revoked", true, Some(who.subject()), None).await;
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
        let mut errors = self.password_errors("new_password", new.expose(), &user.email, user.name.as_deref()).await;
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
        // The current password was just proven: that renews this session's sign-in,
        // unless the account has a second factor, which a password alone never
        // stands in for.
        let renew = !self.has_second_factor(&user.id).await?;
        // One commit: the new password, the other sessions ended, this one renewed.
        let mut tx = self.db.write().await?;
        tx.user_set_password(&user.id, &phc, ctx.now).await?;
        let ended = tx.sessions_revoke_all(&user.id, Some(session_id), "password_changed", ctx.now).await?;
        events::emit_about(&mut tx, "password.changed", &user.id, serde_json::json!({}), ctx.now).await?;
        events::emit_sessions(&mut tx, "session.revoked", &ended, "password_changed", ctx.now).await?;
        let ended = ended.len() as u64;
        if renew {
            tx.session_reauthenticated(session_id, &user.id, ctx.now).await?;
        }
        // A change of address asked for before the new password must not outlive it.
        tx.email_tokens_retire(&user.id, crate::store::Purpose::ChangeEmail, ctx.now).await?;
        self.queue_notice(&mut tx, &user, Template::PasswordChanged, ctx.now).await?;
        tx.commit().await?;
        self.audit(ctx, "password_change", true, Some(&user.id), None).await;
        Ok(ended)
    }
}
