//! The hosted second step: after the password, a code of the authenticator app (or
//! a recovery code); with `accounts.mfa = "required"` and no factor yet, the
//! authenticator-app enrolment and the recovery codes. The browser session cookie
//! is set only once the second step is done, so nothing (a resumed request, a new
//! tab, `prompt=none`) finds a session before it.

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use minijinja::context;

use super::*;
use crate::auth::{Enroller, Proof, SignIn};

/// A second-step page: the params it carries, its pending sign-in, and an error.
pub(super) struct MfaForm<'a> {
    pub params: &'a [(String, String)],
    pub token: &'a str,
    pub error: Option<&'a str>,
    pub status: StatusCode,
    /// The user can ask for a code by SMS.
    pub sms: bool,
    /// What happened (a code was sent).
    pub notice: Option<&'a str>,
}

/// The code form of a pending sign-in.
pub(super) fn mfa_page(state: &AppState, headers: &HeaderMap, f: MfaForm<'_>) -> Response {
    let mut cookies = Vec::new();
    let csrf = csrf(headers, &state.cookies, &mut cookies);
    let html = render(
        "mfa.html",
        context! {
            params => f.params, csrf, mfa_token => f.token, error => f.error, recovery => true, sms => f.sms,
            notice => f.notice,
        },
    );
    Page { status: f.status, html, cookies }.into_response()
}

/// The enrolment form of a pending sign-in that must enrol: a fresh secret each
/// time it is shown.
pub(super) async fn enrol_page(state: &AppState, ctx: &RequestCtx, headers: &HeaderMap, f: MfaForm<'_>) -> Response {
    let who = Enroller::PagePending(Secret::new(f.token));
    // A mistyped code shows the same secret again: the app already holds it.
    let setup = if f.error.is_some() {
        state.auth.totp_setup_again(ctx, &who).await
    } else {
        state.auth.totp_start(ctx, &who).await
    };
    let setup = match setup {
        Ok(s) => s,
        Err(e) => return sign_in_again(&e),
    };
    let mut cookies = Vec::new();
    let csrf = csrf(headers, &state.cookies, &mut cookies);
    // Our own SVG, inlined (no data: URL under the pages' CSP), minus its XML prologue.
    let svg = setup.qr_svg.find("<svg").and_then(|i| setup.qr_svg.get(i..)).unwrap_or_default().to_owned();
    let html = render(
        "mfa_enroll.html",
        context! {
            params => f.params, csrf, mfa_token => f.token, error => f.error,
            qr_svg => svg, secret => setup.secret.expose(),
        },
    );
    Page { status: f.status, html, cookies }.into_response()
}

fn sign_in_again(e: &AuthError) -> Response {
    if matches!(e, AuthError::MfaTokenInvalid) {
        return message(
            StatusCode::UNAUTHORIZED,
            "Please sign in again",
            "This sign-in expired or took too many wrong codes. Go back to the application and sign in again.",
            true,
        )
        .into_response();
    }
    let (status, text) = sign_in_error(e);
    message(status, "Two-step verification", &text, true).into_response()
}

/// Where a right password leads on the hosted pages: on with the request (`done`),
/// or to the second step.
pub(super) async fn after_password(
    state: &AppState,
    ctx: &RequestCtx,
    headers: &HeaderMap,
    params: &[(String, String)],
    outcome: SignIn<(BrowserSession, Secret)>,
) -> Result<(BrowserSession, Secret), Response> {
    let (c, enrol) = match outcome {
        SignIn::Done(done) => return Ok(done),
        SignIn::SecondFactor(c) => (c, false),
        SignIn::Enrol(c) => (c, true),
    };
    let sms = c.factors.contains(&"sms");
    let f = MfaForm { params, token: c.token.expose(), error: None, status: StatusCode::OK, sms, notice: None };
    Err(if enrol { enrol_page(state, ctx, headers, f).await } else { mfa_page(state, headers, f) })
}

/// The session cookie of a finished sign-in.
pub(super) fn session_cookie(state: &AppState, cookie: &Secret) -> HeaderValue {
    let max_age = state.oauth.settings().browser_session_ttl.as_secs();
    state.cookies.set(state.cookies.session_name(), cookie.expose(), Some(max_age))
}

/// Goes on with the authorization request a finished sign-in interrupted (or,
/// without one, says the browser is signed in).
async fn resume(
    state: &AppState,
    ctx: &RequestCtx,
    headers: &HeaderMap,
    params: &[(String, String)],
    signed_in: (BrowserSession, Secret),
) -> Response {
    let (who, cookie) = signed_in;
    let cookies = vec![session_cookie(state, &cookie)];
    if field(params, "client_id").is_none() {
        let mut page = message(StatusCode::OK, "Signed in", "You are signed in. You can close this page.", false);
        page.cookies = cookies;
        return page.into_response();
    }
    let req = match state.oauth.authorize_validate(params).await {
        Ok(r) => r,
        Err(inv) => return invalid_response(inv),
    };
    match state.oauth.authorize_decide(ctx, &req, Some(&who), true, None).await {
        Ok(step) => super::authorize::step_response(state, ctx, headers, &req, step, Some(&who), cookies).await,
        Err(e) => oauth_failure(&e),
    }
}

/// `POST /oauth/mfa`: the second step's forms (`step=mfa`: a code or recovery
/// code; `step=enrol`: the first code of a new authenticator app).
pub async fn mfa_post(State(state): State<AppState>, ctx: RequestCtx, headers: HeaderMap, body: Bytes) -> Response {
    let form: Vec<(String, String)> = parse_pairs(&body);
    let params = carried(&form);
    let token = field(&form, "mfa_token").unwrap_or("");
    if !csrf_ok(&headers, &state.cookies, &state.oauth.settings().issuer, &form) {
        return message(
            StatusCode::FORBIDDEN,
            "Please sign in again",
            "This form expired or did not come from this site.",
            true,
        )
        .into_response();
    }
    let code = field(&form, "code").unwrap_or("");
    let sms = field(&form, "sms").is_some() || field(&form, "step") == Some("sms");
    match field(&form, "step") {
        Some("enrol") => return enrol_post(&state, &ctx, &headers, &params, token, code).await,
        Some("sms") => {
            let (status, text) = match state.auth.login_sms(&ctx, &Secret::new(token)).await {
                Ok(to) => (StatusCode::OK, format!("We sent a code to {to}.")),
                Err(e @ AuthError::MfaTokenInvalid) => return sign_in_again(&e),
                Err(e) => sign_in_error(&e),
            };
            let (error, notice) =
                if status == StatusCode::OK { (None, Some(text.as_str())) } else { (Some(text.as_str()), None) };
            return mfa_page(&state, &headers, MfaForm { params: &params, token, error, status, sms, notice });
        }
        _ => {}
    }
    let proof = match field(&form, "recovery_code").filter(|c| !c.trim().is_empty()) {
        Some(rc) => Proof::Recovery(rc.to_owned()),
        None => Proof::Code(code.to_owned()),
    };
    match state.auth.browser_mfa(&ctx, &Secret::new(token), proof).await {
        Ok(done) => resume(&state, &ctx, &headers, &params, done).await,
        Err(e @ AuthError::MfaTokenInvalid) => sign_in_again(&e),
        Err(e) => {
            let (status, text) = mfa_error(&e);
            mfa_page(
                &state,
                &headers,
                MfaForm { params: &params, token, error: Some(&text), status, sms, notice: None },
            )
        }
    }
}

async fn enrol_post(
    state: &AppState,
    ctx: &RequestCtx,
    headers: &HeaderMap,
    params: &[(String, String)],
    token: &str,
    code: &str,
) -> Response {
    let enrolled = match state.auth.totp_confirm(ctx, &Enroller::PagePending(Secret::new(token)), code).await {
        Ok(e) => e,
        Err(e @ AuthError::MfaTokenInvalid) => return sign_in_again(&e),
        Err(e) => {
            let (status, text) = mfa_error(&e);
            let f = MfaForm { params, token, error: Some(&text), status, sms: false, notice: None };
            return enrol_page(state, ctx, headers, f).await;
        }
    };
    let Some(factor) = enrolled.completed else {
        return sign_in_again(&AuthError::MfaTokenInvalid);
    };
    let (_, cookie) = match state.auth.complete_browser_sign_in(ctx, factor).await {
        Ok(done) => done,
        Err(e) => return sign_in_again(&e),
    };
    let codes: Vec<String> =
        enrolled.recovery_codes.unwrap_or_default().iter().map(|c| c.expose().to_owned()).collect();
    // Continue with the request; the sign-in just happened, which satisfies prompt=login.
    let next =
        field(params, "client_id").map(|_| format!("/oauth/authorize?{}", query_string(&signed_in_params(params))));
    let html = render("recovery_codes.html", context! { codes, next });
    Page { status: StatusCode::OK, html, cookies: vec![session_cookie(state, &cookie)] }.into_response()
}

fn mfa_error(e: &AuthError) -> (StatusCode, String) {
    match e {
        AuthError::InvalidMfaCode => {
            (StatusCode::UNAUTHORIZED, "That code is not right, or it was used already. Try the next one.".into())
        }
        AuthError::Validation(_) => {
            (StatusCode::BAD_REQUEST, "That code is not right. Enter the code the app shows now.".into())
        }
        other => sign_in_error(other),
    }
}
