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
    /// The user has a passkey.
    pub passkey: bool,
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
            notice => f.notice, passkey => f.passkey, passkey_body => token_body(f.token),
        },
    );
    Page { status: f.status, html, cookies, script: f.passkey }.into_response()
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
            passkeys => state.auth.passkeys_on(), passkey_body => token_body(f.token),
        },
    );
    Page { status: f.status, html, cookies, script: state.auth.passkeys_on() }.into_response()
}

/// The JSON body that names a pending sign-in, for the passkey script.
fn token_body(token: &str) -> String {
    serde_json::json!({ "mfa_token": token }).to_string()
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
    let passkey = c.factors.contains(&"passkey");
    let f =
        MfaForm { params, token: c.token.expose(), error: None, status: StatusCode::OK, sms, passkey, notice: None };
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
    let passkey = field(&form, "passkey").is_some();
    match field(&form, "step") {
        Some("enrol") => return enrol_post(&state, &ctx, &headers, &params, token, code).await,
        Some("passkey") | Some("enrol_passkey") => return passkey_post(&state, &ctx, &headers, &params, &form).await,
        Some("sms") => {
            let (status, text) = match state.auth.login_sms(&ctx, &Secret::new(token)).await {
                Ok(to) => (StatusCode::OK, format!("We sent a code to {to}.")),
                Err(e @ AuthError::MfaTokenInvalid) => return sign_in_again(&e),
                Err(e) => sign_in_error(&e),
            };
            let (error, notice) =
                if status == StatusCode::OK { (None, Some(text.as_str())) } else { (Some(text.as_str()), None) };
            return mfa_page(&state, &headers, MfaForm { params: &params, token, error, status, sms, passkey, notice });
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
                MfaForm { params: &params, token, error: Some(&text), status, sms, passkey, notice: None },
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
            let f = MfaForm { params, token, error: Some(&text), status, sms: false, passkey: false, notice: None };
            return enrol_page(state, ctx, headers, f).await;
        }
    };
    enrolled_page(state, ctx, params, enrolled).await
}

/// After a required enrolment: the browser is signed in, and sees its recovery
/// codes once before it goes on.
async fn enrolled_page(
    state: &AppState,
    ctx: &RequestCtx,
    params: &[(String, String)],
    enrolled: crate::auth::Enrolled,
) -> Response {
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
    Page { status: StatusCode::OK, html, cookies: vec![session_cookie(state, &cookie)], script: false }.into_response()
}

/// A passkey as the second step (`step=passkey`), or enrolled instead of an app
/// (`step=enrol_passkey`).
async fn passkey_post(
    state: &AppState,
    ctx: &RequestCtx,
    headers: &HeaderMap,
    params: &[(String, String)],
    form: &[(String, String)],
) -> Response {
    let token = Secret::new(field(form, "mfa_token").unwrap_or(""));
    let challenge_id = field(form, "challenge_id").unwrap_or("");
    let credential: serde_json::Value =
        serde_json::from_str(field(form, "credential").unwrap_or("")).unwrap_or(serde_json::Value::Null);
    if field(form, "step") == Some("enrol_passkey") {
        let who = Enroller::PagePending(token.clone());
        let enrolled = state.auth.passkey_register_finish(ctx, &who, challenge_id, &credential, None).await;
        return match enrolled {
            Ok(e) => enrolled_page(state, ctx, params, e).await,
            Err(e @ AuthError::MfaTokenInvalid) => sign_in_again(&e),
            Err(_) => {
                let text = "The passkey could not be created. Try again, or use an authenticator app.";
                let f = MfaForm {
                    params,
                    token: token.expose(),
                    error: Some(text),
                    status: StatusCode::BAD_REQUEST,
                    sms: false,
                    passkey: false,
                    notice: None,
                };
                enrol_page(state, ctx, headers, f).await
            }
        };
    }
    let done = state.auth.passkey_sign_in_finish(ctx, challenge_id, &credential, Some(&token), true).await;
    match done {
        Ok(crate::auth::PasskeyDone::SignedIn(factor, Some(_))) => {
            match state.auth.complete_browser_sign_in(ctx, *factor).await {
                Ok(signed) => resume(state, ctx, headers, params, signed).await,
                Err(e) => sign_in_again(&e),
            }
        }
        Ok(_) => sign_in_again(&AuthError::MfaTokenInvalid),
        Err(e @ AuthError::MfaTokenInvalid) => sign_in_again(&e),
        Err(e) => {
            let text = match &e {
                AuthError::Validation(_) => "That passkey did not work. Try again, or enter a code.".to_owned(),
                other => mfa_error(other).1,
            };
            let f = MfaForm {
                params,
                token: token.expose(),
                error: Some(&text),
                status: StatusCode::BAD_REQUEST,
                sms: field(form, "sms").is_some(),
                passkey: true,
                notice: None,
            };
            mfa_page(state, headers, f)
        }
    }
}

/// `POST /oauth/passkey/register {mfa_token}`: the creation options of a passkey
/// enrolled on the hosted enrolment page (its pending sign-in names the user).
pub async fn passkey_register_start(
    axum::extract::State(state): axum::extract::State<AppState>,
    ctx: RequestCtx,
    crate::http::extract::JsonBody(req): crate::http::extract::JsonBody<portcullis_proto::MfaTokenRequest>,
) -> Result<axum::Json<portcullis_proto::PasskeyCeremony>, crate::http::error::ApiError> {
    let who = Enroller::PagePending(Secret::new(req.mfa_token));
    let c = state.auth.passkey_register_start(&ctx, &who).await?;
    Ok(axum::Json(portcullis_proto::PasskeyCeremony { challenge_id: c.challenge_id, public_key: c.public_key }))
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
