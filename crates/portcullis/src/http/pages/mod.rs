//! The hosted pages: the authorization endpoint's sign-in and consent pages,
//! sign-up, and RP-initiated logout. Server-rendered HTML (minijinja, escaped),
//! no JavaScript. The browser session is an `HttpOnly`, `SameSite=Lax` cookie,
//! `Secure` unless the issuer is on loopback; every form carries a CSRF token that
//! must match a cookie of its own (double submit), and a cross-site `Origin` is
//! refused outright.
//!
//! One file per page flow: [`authorize`] (sign-in and consent steps of the
//! authorization endpoint), [`signup`], [`logout`], [`email`] (the pages mailed
//! links open); what they share lives here.

mod authorize;
mod email;
mod logout;
mod mfa;
mod signup;

pub use authorize::{authorize_get, authorize_post, signin_get};
pub use email::{
    forgot_password_get, forgot_password_post, reset_password_get, reset_password_post, unlock_get, unlock_post,
    verify_email_get, verify_email_post,
};
pub use logout::logout;
pub use mfa::{mfa_post, passkey_register_start};
pub use signup::{signup_get, signup_post};

use std::sync::OnceLock;

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use minijinja::{Environment, context};

use super::AppState;
use crate::{
    auth::{AuthError, BrowserSession},
    clients::is_loopback,
    crypto::{self, Secret},
    ctx::RequestCtx,
    oauth::{
        OAuthError,
        authorize::{AuthzRequest, Invalid, Step, redirect_with},
    },
};

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        for (name, src) in [
            ("base.html", include_str!("../../../templates/base.html")),
            ("hidden.html", include_str!("../../../templates/hidden.html")),
            ("signin.html", include_str!("../../../templates/signin.html")),
            ("signup.html", include_str!("../../../templates/signup.html")),
            ("consent.html", include_str!("../../../templates/consent.html")),
            ("message.html", include_str!("../../../templates/message.html")),
            ("logout.html", include_str!("../../../templates/logout.html")),
            ("confirm.html", include_str!("../../../templates/confirm.html")),
            ("mfa.html", include_str!("../../../templates/mfa.html")),
            ("mfa_enroll.html", include_str!("../../../templates/mfa_enroll.html")),
            ("recovery_codes.html", include_str!("../../../templates/recovery_codes.html")),
            ("forgot.html", include_str!("../../../templates/forgot.html")),
            ("reset.html", include_str!("../../../templates/reset.html")),
        ] {
            if let Err(e) = env.add_template(name, src) {
                tracing::error!(template = name, error = %e, "bad template");
            }
        }
        env
    })
}

/// Cookie names and attributes, from the issuer: `__Host-` names and `Secure`
/// everywhere but on a loopback issuer (plain-http development).
#[derive(Debug, Clone)]
pub struct CookiePolicy {
    secure: bool,
}

impl CookiePolicy {
    /// The policy for an issuer URL.
    pub fn for_issuer(issuer: &str) -> Self {
        let loopback = url::Url::parse(issuer).ok().and_then(|u| u.host_str().map(is_loopback)).unwrap_or(false);
        Self { secure: !loopback }
    }
    fn session_name(&self) -> &'static str {
        if self.secure { "__Host-pcl_session" } else { "pcl_session" }
    }
    fn csrf_name(&self) -> &'static str {
        if self.secure { "__Host-pcl_csrf" } else { "pcl_csrf" }
    }
    fn set(&self, name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
        let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
        if self.secure {
            c.push_str("; Secure");
        }
        if let Some(a) = max_age {
            c.push_str(&format!("; Max-Age={a}"));
        }
        HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// What a page response needs besides its body.
struct Page {
    status: StatusCode,
    html: String,
    cookies: Vec<HeaderValue>,
    /// The page runs our passkey script (`script-src 'self'`, `connect-src 'self'`).
    script: bool,
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut res = (self.status, self.html).into_response();
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        // No scripts, no framing (clickjacking of the consent page). No form-action:
        // browsers apply it to the redirect that follows a form post, which here goes
        // to the client's redirect URI.
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(if self.script {
                "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; img-src 'self'; \
                 frame-ancestors 'none'; base-uri 'none'"
            } else {
                "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'"
            }),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        for c in self.cookies {
            h.append(header::SET_COOKIE, c);
        }
        res
    }
}

fn render(name: &str, ctx: minijinja::Value) -> String {
    env().get_template(name).and_then(|t| t.render(ctx)).unwrap_or_else(|e| {
        tracing::error!(template = name, error = %e, "rendering failed");
        "<!doctype html><title>Error</title><p>The page could not be rendered.</p>".into()
    })
}

fn message(status: StatusCode, title: &str, text: &str, error: bool) -> Page {
    let html = render("message.html", context! { title, message => text, error });
    Page { status, html, cookies: Vec::new(), script: false }
}

fn redirect(to: &str, cookies: Vec<HeaderValue>) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    for c in cookies {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}

/// The request's CSRF token, minting one (and its cookie) when there is none.
fn csrf(headers: &HeaderMap, policy: &CookiePolicy, cookies: &mut Vec<HeaderValue>) -> String {
    match cookie(headers, policy.csrf_name()).filter(|v| v.len() >= 32 && v.len() <= 64) {
        Some(v) => v.to_owned(),
        None => {
            let v = crypto::b64url(&crypto::random_bytes::<32>());
            cookies.push(policy.set(policy.csrf_name(), &v, None));
            v
        }
    }
}

/// Whether a form post is ours: not cross-site (when the browser says so) and
/// carrying the token that matches its cookie. `Origin: null` says nothing (browsers
/// send it under our `Referrer-Policy: no-referrer`), so the token decides then.
fn csrf_ok(headers: &HeaderMap, policy: &CookiePolicy, issuer: &str, form: &[(String, String)]) -> bool {
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
        && origin != "null"
        && origin != crate::oauth::params::origin_of(issuer)
    {
        return false;
    }
    if headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes() == b"cross-site") {
        return false;
    }
    let sent = form.iter().find(|(k, _)| k == "csrf_token").map(|(_, v)| v.as_str()).unwrap_or("");
    let expected = cookie(headers, policy.csrf_name()).unwrap_or("");
    !expected.is_empty() && crypto::ct_eq(sent.as_bytes(), expected.as_bytes())
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn scope_text(s: &str) -> String {
    match s {
        "openid" => "Confirm who you are".into(),
        "profile" => "See your name".into(),
        "email" => "See your email address".into(),
        "offline_access" => "Stay connected when you are not using it".into(),
        other => format!("Use the permission \u{201c}{other}\u{201d}"),
    }
}

async fn browser(state: &AppState, headers: &HeaderMap, now: i64) -> Option<BrowserSession> {
    let value = cookie(headers, state.cookies.session_name())?;
    state.auth.browser_session(value, now).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "reading the browser session failed");
        None
    })
}

fn query_string(params: &[(String, String)]) -> String {
    url::form_urlencoded::Serializer::new(String::new()).extend_pairs(params.iter()).finish()
}

fn invalid_response(inv: Invalid) -> Response {
    match inv {
        Invalid::Page(msg) => {
            message(StatusCode::BAD_REQUEST, "This sign-in link is not valid", &msg, true).into_response()
        }
        Invalid::Redirect(to) => redirect(&to, Vec::new()),
    }
}

fn oauth_failure(e: &OAuthError) -> Response {
    message(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", &e.description, true).into_response()
}

/// Form or query pairs, at most one more than any request of ours may have (the
/// validation refuses that many), so a huge body costs nothing beyond its parse.
fn parse_pairs(raw: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(raw)
        .take(crate::oauth::params::MAX_PARAMS + 1)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn parse_query(raw: Option<&str>) -> Vec<(String, String)> {
    parse_pairs(raw.unwrap_or("").as_bytes())
}

fn sign_in_error(e: &AuthError) -> (StatusCode, String) {
    match e {
        AuthError::InvalidCredentials => (StatusCode::UNAUTHORIZED, "Wrong email or password.".into()),
        AuthError::AccountLocked(s) | AuthError::RateLimited(s) => (
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many attempts. Try again in {}.", crate::clock::human_secs(*s)),
        ),
        AuthError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "The server is busy. Try again in a moment.".into()),
        AuthError::Validation(errors) => (
            StatusCode::BAD_REQUEST,
            errors.iter().map(|f| format!("{} {}", f.field, f.message)).collect::<Vec<_>>().join("; "),
        ),
        AuthError::Conflict(_) => {
            (StatusCode::CONFLICT, "An account with this email already exists. Sign in instead.".into())
        }
        AuthError::EmailNotVerified => (
            StatusCode::FORBIDDEN,
            "Confirm your email address first: follow the link in the message we sent you.".into(),
        ),
        other => {
            tracing::error!(error = %other, "hosted sign-in failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong. Please try again.".into())
        }
    }
}

/// The authorization parameters to resume with once the user just signed in:
/// that satisfies `prompt=login`; every other prompt value (`consent`) stays.
fn signed_in_params(params: &[(String, String)]) -> Vec<(String, String)> {
    params
        .iter()
        .filter_map(|(k, v)| {
            if k != "prompt" {
                return Some((k.clone(), v.clone()));
            }
            let rest: Vec<&str> = v.split_whitespace().filter(|p| *p != "login").collect();
            (!rest.is_empty()).then(|| (k.clone(), rest.join(" ")))
        })
        .collect()
}

/// The authorization parameters carried on a sign-up page.
fn carried(pairs: &[(String, String)]) -> Vec<(String, String)> {
    pairs.iter().filter(|(k, _)| !crate::oauth::authorize::PAGE_FIELDS.contains(&k.as_str())).cloned().collect()
}

async fn client_name(state: &AppState, params: &[(String, String)]) -> Option<String> {
    let id = field(params, "client_id")?;
    state.oauth.clients().get(id).await.ok().flatten().map(|c| c.meta.client_name.clone())
}

/// `GET /oauth/assets/passkey.js`: the passkey ceremonies of the sign-in, second
/// step and enrolment pages.
pub async fn passkey_script() -> Response {
    let mut res = include_str!("../../../templates/passkey.js").into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    res
}

/// `GET /oauth/assets/style.css`: the pages' stylesheet.
pub async fn stylesheet() -> Response {
    let mut res = include_str!("../../../templates/style.css").into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    res
}
