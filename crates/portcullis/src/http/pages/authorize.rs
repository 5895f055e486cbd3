//! The authorization endpoint's pages: the sign-in step, the consent step, and the
//! answer that sends the browser back to the client.

use axum::{
    body::Bytes,
    extract::{RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use minijinja::context;

use super::*;

/// Which of the pages' forms a POST to the authorization endpoint answers (its
/// hidden `step` field). A POST without one is a form-encoded authorization
/// request, which OpenID allows. MFA adds its step here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FormStep {
    /// The sign-in form: email and password.
    SignIn,
    /// The consent form: allow or deny.
    Consent,
    /// A passkey-first sign-in: the WebAuthn assertion of the page's script.
    Passkey,
    /// A step this server does not know (an old form): treated as a request.
    Unknown,
}

impl FormStep {
    fn of(form: &[(String, String)]) -> Option<Self> {
        field(form, "step").map(|s| match s {
            "signin" => FormStep::SignIn,
            "consent" => FormStep::Consent,
            "passkey" => FormStep::Passkey,
            _ => FormStep::Unknown,
        })
    }
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
            passkeys => state.auth.passkeys_on(),
        },
    );
    Page { status: f.status, html, cookies, script: state.auth.passkeys_on() }.into_response()
}

/// The page (or redirect) of the next step of an authorization request.
pub(super) async fn step_response(
    state: &AppState,
    ctx: &RequestCtx,
    headers: &HeaderMap,
    req: &AuthzRequest,
    step: Step,
    who: Option<&BrowserSession>,
    cookies: Vec<HeaderValue>,
) -> Response {
    match step {
        Step::Redirect(to) => redirect(&to, cookies),
        Step::SecondFactor => {
            // A session from before its user enrolled (or a request demanding
            // more): the second step, for this browser's user.
            let Some(who) = who else { return oauth_failure(&OAuthError::server_error("no browser session")) };
            let amr = who.session.amr.as_deref().unwrap_or(r#"["pwd"]"#);
            match state.auth.step_up(ctx, &who.user.id, amr).await {
                Ok(c) => {
                    let params = signed_in_params(&req.params);
                    let f = super::mfa::MfaForm {
                        params: &params,
                        token: c.token.expose(),
                        error: None,
                        status: StatusCode::OK,
                        sms: c.factors.contains(&"sms"),
                        passkey: c.factors.contains(&"passkey"),
                        notice: None,
                    };
                    if c.factors.is_empty() {
                        super::mfa::enrol_page(state, ctx, headers, f).await
                    } else {
                        super::mfa::mfa_page(state, headers, f)
                    }
                }
                Err(e) => oauth_failure(&OAuthError::server_error(&e.to_string())),
            }
        }
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
            Page { status: StatusCode::OK, html, cookies, script: false }.into_response()
        }
    }
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
        Ok(step) => step_response(&state, &ctx, &headers, &req, step, who.as_ref(), Vec::new()).await,
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
    let step = FormStep::of(&form);
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
        Some(FormStep::SignIn) => {
            let email = field(&form, "email").unwrap_or("");
            let password = Secret::new(field(&form, "password").unwrap_or(""));
            match state.auth.browser_sign_in(&ctx, email, password).await {
                Ok(outcome) => {
                    let (who, cookie) =
                        match super::mfa::after_password(&state, &ctx, &headers, &req.params, outcome).await {
                            Ok(done) => done,
                            Err(second_step) => return second_step,
                        };
                    let cookies = vec![super::mfa::session_cookie(&state, &cookie)];
                    match state.oauth.authorize_decide(&ctx, &req, Some(&who), true, None).await {
                        Ok(step) => step_response(&state, &ctx, &headers, &req, step, Some(&who), cookies).await,
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
        Some(FormStep::Passkey) => passkey_sign_in(&state, &ctx, &headers, &req, &form).await,
        Some(FormStep::Consent) => {
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
                Ok(step) => step_response(&state, &ctx, &headers, &req, step, Some(&who), Vec::new()).await,
                Err(e) => oauth_failure(&e),
            }
        }
        _ => {
            let who = browser(&state, &headers, ctx.now).await;
            match state.oauth.authorize_decide(&ctx, &req, who.as_ref(), false, None).await {
                Ok(step) => step_response(&state, &ctx, &headers, &req, step, who.as_ref(), Vec::new()).await,
                Err(e) => oauth_failure(&e),
            }
        }
    }
}

/// A passkey-first sign-in from the sign-in page: on with the request, or the
/// sign-in page again with what went wrong.
async fn passkey_sign_in(
    state: &AppState,
    ctx: &RequestCtx,
    headers: &HeaderMap,
    req: &AuthzRequest,
    form: &[(String, String)],
) -> Response {
    let challenge_id = field(form, "challenge_id").unwrap_or("");
    let credential: serde_json::Value =
        serde_json::from_str(field(form, "credential").unwrap_or("")).unwrap_or(serde_json::Value::Null);
    let done = match state.auth.passkey_sign_in_finish(ctx, challenge_id, &credential, None, true).await {
        Ok(crate::auth::PasskeyDone::SignedIn(factor, None)) => state.auth.complete_browser_sign_in(ctx, *factor).await,
        Ok(_) => Err(AuthError::InvalidCredentials),
        Err(e) => Err(e),
    };
    match done {
        Ok((who, cookie)) => {
            let cookies = vec![super::mfa::session_cookie(state, &cookie)];
            match state.oauth.authorize_decide(ctx, req, Some(&who), true, None).await {
                Ok(step) => step_response(state, ctx, headers, req, step, Some(&who), cookies).await,
                Err(e) => oauth_failure(&e),
            }
        }
        Err(e) => {
            let text = match &e {
                AuthError::Validation(_) | AuthError::InvalidCredentials => {
                    "That passkey did not sign you in. Try again, or use your password.".to_owned()
                }
                other => sign_in_error(other).1,
            };
            let status = sign_in_error(&e).0;
            signin_page(state, headers, SignInForm { req, status, error: Some(&text), email: "" }, Vec::new())
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
