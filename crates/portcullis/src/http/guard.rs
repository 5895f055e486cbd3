//! Route-level guards built on the bearer middleware: `Can<P>` lets a handler
//! declare the scope it needs in its signature. Unauthenticated → 401; authenticated
//! without the scope → 403 `insufficient_scope` with `required_scopes`, and the
//! refusal is audited with user and route. A handler holding a `Can<P>` has been
//! checked; one without cannot act on the guarded capability by accident.

use std::marker::PhantomData;

use axum::{
    extract::{FromRequestParts, MatchedPath},
    http::request::Parts,
};

use super::{AppState, error::ApiError, extract::Authed};
use crate::{
    audit::Event,
    ctx::{Principal, RequestCtx},
    rbac,
};

/// A permission a route can require.
pub trait Permission: Send + Sync + 'static {
    /// The scope string.
    const SCOPE: &'static str;
}

macro_rules! permissions {
    ($($name:ident => $scope:literal,)*) => {
        $(
            #[doc = concat!("The `", $scope, "` permission.")]
            #[derive(Debug)]
            pub struct $name;
            impl Permission for $name {
                const SCOPE: &'static str = $scope;
            }
        )*
    };
}

permissions! {
    UsersRead => "admin:users:read",
    UsersWrite => "admin:users:write",
    RolesRead => "admin:roles:read",
    RolesWrite => "admin:roles:write",
    KeysVerify => "api_keys:verify",
    AuditRead => "admin:audit:read",
    ClientsRead => "admin:clients:read",
    ClientsWrite => "admin:clients:write",
    EmailsRead => "admin:emails:read",
    WebhooksRead => "admin:webhooks:read",
    WebhooksWrite => "admin:webhooks:write",
}

/// Proof that the caller holds `P`; only this module can make one.
#[derive(Debug)]
pub struct Can<P: Permission> {
    /// The checked caller.
    pub who: Principal,
    _permission: PhantomData<P>,
}

impl<P: Permission> FromRequestParts<AppState> for Can<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Authed(who) = Authed::from_request_parts(parts, state).await?;
        if let Err(denied) = rbac::require_scope(&who, &[P::SCOPE]) {
            let route = parts.extensions.get::<MatchedPath>().map(|m| m.as_str().to_owned()).unwrap_or_default();
            let ctx = RequestCtx::from_request_parts(parts, state).await.unwrap_or_default();
            let reason = format!("{} {route} needs {}", parts.method, denied.required.join(" "));
            state
                .audit
                .record(&ctx, Event::failed("access_denied", Some(who.subject()), &reason).by(who.actor()))
                .await;
            return Err(ApiError::insufficient_scope(denied.required));
        }
        Ok(Can { who, _permission: PhantomData })
    }
}
