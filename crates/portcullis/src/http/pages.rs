//! The hosted pages: the authorization endpoint's sign-in and consent pages,
//! sign-up, and RP-initiated logout. Server-rendered HTML (minijinja, escaped),
//! no JavaScript. The browser session is an `HttpOnly`, `SameSite=Lax` cookie,
//! `Secure` unless the issuer is on loopback; every form carries a CSRF token that
//! must match a cookie of its own (double submit), and a cross-site `Origin` is
//! refused outright.

use std::sync::OnceLock;

use axum::{
    body::Bytes,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use minijinja::{Environment, context};
use serde_json::Value;

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
            ("base.html", include_str!("../../templates/base.html")),
            ("hidden.html", include_str!("../../templates/hidden.html")),
            ("signin.html", include_str!("../../templates/signin.html")),
            ("signup.html", include_str!("../../templates/signup.html")),
            ("consent.html", include_str!("../../templates/consent.html")),
            ("message.html", include_str!("../../templates/message.html")),
            ("logout.html", include_str!("../../templates/logout.html")),
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
            HeaderValue::from_static(
                "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
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
    Page { status, html: render("message.html", context! { title, message => text, error }), cookies: Vec::new() }
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

struct SignInForm<'a> {
    req: &'a AuthzRequest,
    status: StatusCode,
    error: Option<&'a str>,
    email: &'a str,
}

fn signin_page(state: &AppState, headers: &HeaderMap, f: SignInForm<'_>, mut cookies: Vec<HeaderValue>) -> Response {
    let csrf = csrf(headers, &state.cookies, &mut cookies);
    // The request goes through the form again minus prompt=login, which this sign-in satisfies.
    let params = &f.req.params;
    let html = render(
        "signin.html",
        context! {
            client_name => f.req.client.meta.client_name,
            error => f.error,
            action => "/oauth/authorize",
            params => params,
            csrf,
            email => if f.email.is_empty() { f.req.login_hint.as_deref().unwrap_or("") } else { f.email },
            signup_href => format!("/oauth/signup?{}", query_string(params)),
        },
    );
    Page { status: f.status, html, cookies }.into_response()
}

fn step_response(
    state: &AppState,
    headers: &HeaderMap,
    req: &AuthzRequest,
    step: Step,
    who: Option<&BrowserSession>,
    cookies: Vec<HeaderValue>,
) -> Response {
    match step {
        Step::Redirect(to) => redirect(&to, cookies),
        Step::SignIn => {
            signin_page(state, headers, SignInForm { req, status: StatusCode::OK, error: None, email: "" }, cookies)
        }
        Step::Consent(scopes) => {
            let mut cookies = cookies;
            let csrf = csrf(headers, &state.cookies, &mut cookies);
            let html = render(
                "consent.html",
                context! {
                    client_name => req.client.meta.client_name,
                    client_uri => req.client.meta.client_uri,
                    email => who.map(|b| b.user.email.clone()).unwrap_or_default(),
                    scopes => scopes.iter().map(|s| scope_text(s)).collect::<Vec<_>>(),
                    params => req.params,
                    csrf,
                },
            );
            Page { status: StatusCode::OK, html, cookies }.into_response()
        }
    }
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

/// `GET /oauth/authorize`: validates the request, then signs in, asks consent or
/// redirects with a code.
pub async fn authorize_get(
    State(state): State<AppState>,
    ctx: RequestCtx,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let pairs = parse_query(q.as_deref());
    let req = match state.oauth.authorize_validate(&pairs).await {
        Ok(r) => r,
        Err(inv) => return invalid_response(inv),
    };
    let who = browser(&state, &headers, ctx.now).await;
    match state.oauth.authorize_decide(&ctx, &req, who.as_ref(), false, None).await {
        Ok(step) => step_response(&state, &headers, &req, step, who.as_ref(), Vec::new()),
        Err(e) => oauth_failure(&e),
    }
}

/// `POST /oauth/authorize`: the sign-in and consent forms (or a form-encoded
/// authorization request, which OpenID allows).
pub async fn authorize_post(
    State(state): State<AppState>,
    ctx: RequestCtx,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: Vec<(String, String)> = parse_pairs(&body);
    let req = match state.oauth.authorize_validate(&form).await {
        Ok(r) => r,
        Err(inv) => return invalid_response(inv),
    };
    let step = field(&form, "step");
    if step.is_some() && !csrf_ok(&headers, &state.cookies, &state.oauth.settings().issuer, &form) {
        let f = SignInForm {
            req: &req,
            status: StatusCode::FORBIDDEN,
            error: Some("This form expired or did not come from this site. Please try again."),
            email: "",
        };
        return signin_page(&state, &headers, f, Vec::new());
    }
    match step {
        Some("signin") => {
            let email = field(&form, "email").unwrap_or("");
            let password = Secret::new(field(&form, "password").unwrap_or(""));
            match state.auth.browser_sign_in(&ctx, email, password).await {
                Ok((who, cookie)) => {
                    let max_age = state.oauth.settings().browser_session_ttl.as_secs();
                    let cookies = vec![state.cookies.set(state.cookies.session_name(), cookie.expose(), Some(max_age))];
                    match state.oauth.authorize_decide(&ctx, &req, Some(&who), true, None).await {
                        Ok(step) => step_response(&state, &headers, &req, step, Some(&who), cookies),
                        Err(e) => oauth_failure(&e),
                    }
                }
                Err(e) => {
                    let (status, text) = sign_in_error(&e);
                    signin_page(
                        &state,
                        &headers,
                        SignInForm { req: &req, status, error: Some(&text), email },
                        Vec::new(),
                    )
                }
            }
        }
        Some("consent") => {
            let who = browser(&state, &headers, ctx.now).await;
            let Some(who) = who else {
                return signin_page(
                    &state,
                    &headers,
                    SignInForm { req: &req, status: StatusCode::OK, error: Some("Please sign in again."), email: "" },
                    Vec::new(),
                );
            };
            let decision = field(&form, "decision") == Some("allow");
            match state.oauth.authorize_decide(&ctx, &req, Some(&who), false, Some(decision)).await {
                Ok(step) => step_response(&state, &headers, &req, step, Some(&who), Vec::new()),
                Err(e) => oauth_failure(&e),
            }
        }
        _ => {
            let who = browser(&state, &headers, ctx.now).await;
            match state.oauth.authorize_decide(&ctx, &req, who.as_ref(), false, None).await {
                Ok(step) => step_response(&state, &headers, &req, step, who.as_ref(), Vec::new()),
                Err(e) => oauth_failure(&e),
            }
        }
    }
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
        other => {
            tracing::error!(error = %other, "hosted sign-in failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong. Please try again.".into())
        }
    }
}

/// The authorization parameters carried on a sign-up page.
fn carried(pairs: &[(String, String)]) -> Vec<(String, String)> {
    pairs.iter().filter(|(k, _)| !crate::oauth::authorize::PAGE_FIELDS.contains(&k.as_str())).cloned().collect()
}

async fn client_name(state: &AppState, params: &[(String, String)]) -> Option<String> {
    let id = field(params, "client_id")?;
    state.oauth.clients().get(id).await.ok().flatten().map(|c| c.meta.client_name.clone())
}

struct SignUpForm<'a> {
    status: StatusCode,
    error: Option<&'a str>,
    details: Vec<String>,
    email: &'a str,
    name: &'a str,
}

async fn signup_page(
    state: &AppState,
    headers: &HeaderMap,
    params: Vec<(String, String)>,
    f: SignUpForm<'_>,
) -> Response {
    let mut cookies = Vec::new();
    let csrf = csrf(headers, &state.cookies, &mut cookies);
    let signin_href = if field(&params, "client_id").is_some() {
        format!("/oauth/authorize?{}", query_string(&params))
    } else {
        "/oauth/signin".into()
    };
    let html = render(
        "signup.html",
        context! {
            client_name => client_name(state, &params).await,
            error => f.error,
            details => f.details,
            params,
            csrf,
            email => f.email,
            name => f.name,
            signin_href,
        },
    );
    Page { status: f.status, html, cookies }.into_response()
}

/// `GET /oauth/signup`: the sign-up form, carrying an authorization request if any.
pub async fn signup_get(State(state): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let params = carried(&parse_query(q.as_deref()));
    signup_page(
        &state,
        &headers,
        params,
        SignUpForm { status: StatusCode::OK, error: None, details: Vec::new(), email: "", name: "" },
    )
    .await
}

/// `POST /oauth/signup`: creates the account, signs the browser in, and resumes the
/// authorization request (or says so).
pub async fn signup_post(State(state): State<AppState>, ctx: RequestCtx, headers: HeaderMap, body: Bytes) -> Response {
    let form: Vec<(String, String)> = parse_pairs(&body);
    let params = carried(&form);
    let email = field(&form, "email").unwrap_or("");
    let name = field(&form, "name").unwrap_or("");
    if !csrf_ok(&headers, &state.cookies, &state.oauth.settings().issuer, &form) {
        let f = SignUpForm {
            status: StatusCode::FORBIDDEN,
            error: Some("This form expired or did not come from this site. Please try again."),
            details: Vec::new(),
            email,
            name,
        };
        return signup_page(&state, &headers, params, f).await;
    }
    let password = Secret::new(field(&form, "password").unwrap_or(""));
    let name_opt = Some(name.to_owned()).filter(|n| !n.trim().is_empty());
    match state.auth.browser_sign_up(&ctx, email, password, name_opt).await {
        Ok((_, cookie)) => {
            let max_age = state.oauth.settings().browser_session_ttl.as_secs();
            let cookies = vec![state.cookies.set(state.cookies.session_name(), cookie.expose(), Some(max_age))];
            if field(&params, "client_id").is_some() {
                // The new account just signed in: that satisfies prompt=login.
                let resumed: Vec<(String, String)> = params.into_iter().filter(|(k, _)| k != "prompt").collect();
                return redirect(&format!("/oauth/authorize?{}", query_string(&resumed)), cookies);
            }
            let mut page =
                message(StatusCode::OK, "Account created", "You are signed in. You can close this page.", false);
            page.cookies = cookies;
            page.into_response()
        }
        Err(e) => {
            let (status, text) = sign_in_error(&e);
            let details = match &e {
                AuthError::Validation(errs) => errs.iter().map(|f| format!("{}: {}", f.field, f.message)).collect(),
                _ => Vec::new(),
            };
            let error = if details.is_empty() { text } else { "Please fix the following:".to_owned() };
            signup_page(&state, &headers, params, SignUpForm { status, error: Some(&error), details, email, name })
                .await
        }
    }
}

/// `GET /oauth/signin`: a sign-in page with no client behind it: tells where to go.
pub async fn signin_get() -> Response {
    message(
        StatusCode::OK,
        "Sign in",
        "Sign-in starts from the application you want to use: open it and choose \u{201c}Sign in\u{201d}.",
        false,
    )
    .into_response()
}

/// `GET|POST /oauth/logout`: RP-initiated logout (OpenID Connect RP-Initiated
/// Logout 1.0). With a valid `id_token_hint` of the signed-in user it signs out at
/// once; otherwise it asks first, so a cross-site link cannot sign anyone out.
pub async fn logout(
    State(state): State<AppState>,
    ctx: RequestCtx,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let pairs = if method == Method::POST { parse_pairs(&body) } else { parse_query(q.as_deref()) };
    let params = carried(&pairs);
    let hint = match field(&pairs, "id_token_hint").filter(|h| !h.is_empty()) {
        Some(h) => match state.oauth.tokens().verify_id_token_hint(h).await {
            Some(claims) => Some(claims),
            None => {
                return message(
                    StatusCode::BAD_REQUEST,
                    "Sign-out failed",
                    "The id_token_hint is not a valid ID token of this server.",
                    true,
                )
                .into_response();
            }
        },
        None => None,
    };
    let hint_client = hint.as_ref().and_then(|c| match c.get("aud") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(a)) => a.first().and_then(Value::as_str).map(str::to_owned),
        _ => None,
    });
    let client_id = match (field(&pairs, "client_id").filter(|c| !c.is_empty()), hint_client) {
        (Some(a), Some(b)) if a != b => {
            return message(
                StatusCode::BAD_REQUEST,
                "Sign-out failed",
                "client_id does not match the id_token_hint.",
                true,
            )
            .into_response();
        }
        (Some(a), _) => Some(a.to_owned()),
        (None, b) => b,
    };
    let back = match field(&pairs, "post_logout_redirect_uri").filter(|u| !u.is_empty()) {
        Some(uri) => {
            let client = match &client_id {
                Some(id) => state.oauth.clients().get(id).await.ok().flatten(),
                None => None,
            };
            match client {
                Some(c) if c.meta.post_logout_redirect_uris.iter().any(|u| u == uri) => {
                    let mut p = Vec::new();
                    if let Some(s) = field(&pairs, "state") {
                        p.push(("state", s));
                    }
                    Some(redirect_with(uri, &p))
                }
                _ => {
                    return message(
                        StatusCode::BAD_REQUEST,
                        "Sign-out failed",
                        "The post_logout_redirect_uri is not registered for this client (send client_id or id_token_hint).",
                        true,
                    )
                    .into_response();
                }
            }
        }
        None => None,
    };
    let who = browser(&state, &headers, ctx.now).await;
    let hint_matches = match (&hint, &who) {
        (Some(h), Some(w)) => h.get("sub").and_then(Value::as_str) == Some(w.user.id.as_str()),
        (Some(_), None) => true,
        _ => false,
    };
    let confirmed = method == Method::POST && csrf_ok(&headers, &state.cookies, &state.oauth.settings().issuer, &pairs);
    if let Some(w) = &who
        && !hint_matches
        && !confirmed
    {
        let mut cookies = Vec::new();
        let csrf = csrf(&headers, &state.cookies, &mut cookies);
        let html = render("logout.html", context! { email => w.user.email, params, csrf });
        return Page { status: StatusCode::OK, html, cookies }.into_response();
    }
    if let Some(w) = &who
        && let Err(e) = state.auth.browser_sign_out(&ctx, w).await
    {
        tracing::error!(error = %e, "ending the browser session failed");
    }
    let cookies = vec![state.cookies.set(state.cookies.session_name(), "", Some(0))];
    match back {
        Some(to) => redirect(&to, cookies),
        None => {
            let mut page = message(StatusCode::OK, "Signed out", "You are signed out. You can close this page.", false);
            page.cookies = cookies;
            page.into_response()
        }
    }
}

/// `GET /oauth/assets/style.css`: the pages' stylesheet.
pub async fn stylesheet() -> Response {
    let mut res = include_str!("../../templates/style.css").into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    res
}
