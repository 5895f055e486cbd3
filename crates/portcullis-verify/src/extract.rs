//! axum extractors: [`Authenticated`] for any valid credential, [`RequireScope`] for
//! one holding given scopes. Their refusals are the same problem documents Portcullis
//! answers with (`missing_token`, `invalid_token`, `token_expired`,
//! `insufficient_scope` with `required_scopes`), with `WWW-Authenticate` (RFC 6750 §3).

use std::{marker::PhantomData, ops::Deref};

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use portcullis_proto::{ErrorCode, Problem};

use crate::{Auth, Verifier, VerifyError};

/// A request with a valid access token (or, when enabled, API key). The state must
/// give a [`Verifier`] (`impl FromRef<AppState> for Verifier`, or the verifier as
/// the whole state).
#[derive(Debug, Clone)]
pub struct Authenticated(pub Auth);

impl Deref for Authenticated {
    type Target = Auth;

    fn deref(&self) -> &Auth {
        &self.0
    }
}

impl<S> FromRequestParts<S> for Authenticated
where
    S: Send + Sync,
    Verifier: FromRef<S>,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Rejection> {
        if let Some(done) = parts.extensions.get::<Authenticated>() {
            return Ok(done.clone());
        }
        let auth = Verifier::from_ref(state).verify_headers(&parts.headers).await.map_err(Rejection)?;
        let done = Authenticated(auth);
        parts.extensions.insert(done.clone());
        Ok(done)
    }
}

/// The scopes a [`RequireScope`] asks for; declare one with [`scopes!`](crate::scopes).
pub trait Scopes: 'static {
    /// Every one of these must be granted.
    const SCOPES: &'static [&'static str];
}

/// Declares a [`Scopes`] type: `scopes!(ReadOrders = "read:orders");`, then take
/// `RequireScope<ReadOrders>` in a handler.
#[macro_export]
macro_rules! scopes {
    ($(#[$meta:meta])* $vis:vis $name:ident = $($scope:literal),+ $(,)?) => {
        $(#[$meta])*
        #[derive(Debug)]
        $vis struct $name;
        impl $crate::Scopes for $name {
            const SCOPES: &'static [&'static str] = &[$($scope),+];
        }
    };
}

/// A request whose credential holds every scope of `P`: 401 without a valid one,
/// 403 `insufficient_scope` naming the missing scopes otherwise.
pub struct RequireScope<P: Scopes> {
    /// Who is calling.
    pub auth: Auth,
    scopes: PhantomData<fn() -> P>,
}

impl<P: Scopes> std::fmt::Debug for RequireScope<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequireScope").field("auth", &self.auth).field("scopes", &P::SCOPES).finish()
    }
}

impl<P: Scopes> Deref for RequireScope<P> {
    type Target = Auth;

    fn deref(&self) -> &Auth {
        &self.auth
    }
}

impl<S, P> FromRequestParts<S> for RequireScope<P>
where
    S: Send + Sync,
    Verifier: FromRef<S>,
    P: Scopes,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Rejection> {
        let Authenticated(auth) = Authenticated::from_request_parts(parts, state).await?;
        let missing: Vec<String> =
            P::SCOPES.iter().filter(|s| !auth.scopes.iter().any(|g| g == *s)).map(|s| (*s).to_owned()).collect();
        if !missing.is_empty() {
            return Err(Rejection(VerifyError::InsufficientScope(missing)));
        }
        Ok(Self { auth, scopes: PhantomData })
    }
}

/// A refused request, answered as Portcullis answers: a problem document.
#[derive(Debug, Clone)]
pub struct Rejection(pub VerifyError);

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let (status, code, detail) = match &self.0 {
            VerifyError::Missing => {
                (StatusCode::UNAUTHORIZED, ErrorCode::MissingToken, "this needs a bearer token".into())
            }
            VerifyError::Invalid(why) => (StatusCode::UNAUTHORIZED, ErrorCode::InvalidToken, (*why).to_owned()),
            VerifyError::Expired => {
                (StatusCode::UNAUTHORIZED, ErrorCode::TokenExpired, "the credential has expired".into())
            }
            VerifyError::InsufficientScope(scopes) => (
                StatusCode::FORBIDDEN,
                ErrorCode::InsufficientScope,
                format!("this needs the scope(s): {}", scopes.join(" ")),
            ),
            // The cause (an address, a status) is for this service's operator, not
            // for its caller.
            VerifyError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Overloaded,
                "credentials cannot be checked now; retry".into(),
            ),
            VerifyError::Config(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::InternalError, "an internal error occurred".into())
            }
        };
        let required_scopes = match &self.0 {
            VerifyError::InsufficientScope(s) => s.clone(),
            _ => Vec::new(),
        };
        let challenge = match &self.0 {
            VerifyError::Missing => Some(r#"Bearer realm="portcullis""#.to_owned()),
            VerifyError::Invalid(_) | VerifyError::Expired => Some(format!(
                r#"Bearer realm="portcullis", error="invalid_token", error_description="{}""#,
                detail.replace(['"', '\\'], "'")
            )),
            VerifyError::InsufficientScope(s) => {
                Some(format!(r#"Bearer realm="portcullis", error="insufficient_scope", scope="{}""#, s.join(" ")))
            }
            _ => None,
        };
        let problem = Problem {
            type_: format!("https://portcullis.dev/problems/{}", code.as_str().replace('_', "-")),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: Some(detail),
            code,
            errors: Vec::new(),
            required_scopes,
            mfa_token: None,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut res = (status, body).into_response();
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(value) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            h.insert(header::WWW_AUTHENTICATE, value);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}
