//! The pages that mailed links open. A GET only shows a button (mail scanners
//! follow links, so opening one must not spend its token); the POST behind the
//! button, with its CSRF token, does the work.

use axum::{
    body::Bytes,
    extract::{RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use minijinja::context;

use super::*;

/// The `token` of a mailed link's query.
fn link_token(query: Option<&str>) -> Option<String> {
    field(&parse_query(query), "token").filter(|t| !t.is_empty()).map(str::to_owned)
}

/// The page for a link whose token was cut off.
fn link_incomplete() -> Response {
    message(
        StatusCode::BAD_REQUEST,
        "Link incomplete",
        "This link has no token. Copy the whole link from the message.",
        true,
    )
    .into_response()
}

/// A page with one button that posts `token` to `action`.
fn confirm_page(
    state: &AppState,
    headers: &HeaderMap,
    action: &str,
    token: &str,
    (title, text, button): (&str, &str, &str),
) -> Response {
    let mut cookies = Vec::new();
    let csrf = csrf(headers, &state.cookies, &mut cookies);
    let html = render("confirm.html", context! { title, message => text, button, action, token, csrf });
    Page { status: StatusCode::OK, html, cookies, script: false }.into_response()
}

/// `GET /verify-email?token=…`: a button that confirms the address.
pub async fn verify_email_get(State(state): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let Some(token) = link_token(q.as_deref()) else { return link_incomplete() };
    let token = token.as_str();
    let text = ("Confirm your email", "Press the button to confirm your email address.", "Confirm my email");
    confirm_page(&state, &headers, "/verify-email", token, text)
}

/// `POST /verify-email`: spends the token.
pub async fn verify_email_post(
    State(state): State<AppState>,
    ctx: RequestCtx,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(form) = checked_form(&state, &headers, &body) else {
        return message(
            StatusCode::FORBIDDEN,
            "Please try again",
            "This form expired or did not come from this site. Open the link from the message again.",
            true,
        )
        .into_response();
    };
    match state.auth.verify_email_token(&ctx, field(&form, "token").unwrap_or("")).await {
        Ok(user) => message(
            StatusCode::OK,
            "Email confirmed",
            &format!("{} is confirmed. You can close this page.", user.email),
            false,
        )
        .into_response(),
        Err(AuthError::Validation(_)) => message(
            StatusCode::BAD_REQUEST,
            "Link expired",
            "This link is wrong, expired or was already used. Ask for a new one from the app.",
            true,
        )
        .into_response(),
        Err(e) => {
            let (status, text) = sign_in_error(&e);
            message(status, "Something went wrong", &text, true).into_response()
        }
    }
}

/// A posted form, if it passes the CSRF check (see `csrf_ok`).
fn checked_form(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Option<Vec<(String, String)>> {
    let form = parse_pairs(body);
    csrf_ok(headers, &state.cookies, &state.oauth.settings().issuer, &form).then_some(form)
}

fn form_expired() -> Response {
    message(
        StatusCode::FORBIDDEN,
        "Please try again",
        "This form expired or did not come from this site. Reload the page and try again.",
        true,
    )
    .into_response()
}

fn forgot_page(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
    email: &str,
) -> Response {
    let mut cookies = Vec::new();
    let csrf = csrf(headers, &state.cookies, &mut cookies);
    Page { status, html: render("forgot.html", context! { csrf, error, email }), cookies, script: false }
        .into_response()
}

/// `GET /forgot-password`: asks for the address.
pub async fn forgot_password_get(State(state): State<AppState>, headers: HeaderMap) -> Response {
    forgot_page(&state, &headers, StatusCode::OK, None, "")
}

/// `POST /forgot-password`: the same answer for every address.
pub async fn forgot_password_post(
    State(state): State<AppState>,
    ctx: RequestCtx,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(form) = checked_form(&state, &headers, &body) else { return form_expired() };
    let email = field(&form, "email").unwrap_or("");
    match state.auth.forgot_password(&ctx, email).await {
        Ok(()) => message(StatusCode::OK, "Check your inbox", crate::http::email::FORGOT_ANSWER, false).into_response(),
        Err(AuthError::Validation(_)) => {
            forgot_page(&state, &headers, StatusCode::BAD_REQUEST, Some("Enter a valid email address."), email)
        }
        Err(e) => {
            let (status, text) = sign_in_error(&e);
            forgot_page(&state, &headers, status, Some(&text), email)
        }
    }
}

fn reset_page(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    token: &str,
    (error, details): (Option<&str>, Vec<String>),
) -> Response {
    let mut cookies = Vec::new();
    let csrf = csrf(headers, &state.cookies, &mut cookies);
    Page { status, html: render("reset.html", context! { csrf, token, error, details }), cookies, script: false }
        .into_response()
}

/// `GET /reset-password?token=…`: the new-password form (spends nothing).
pub async fn reset_password_get(State(state): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let Some(token) = link_token(q.as_deref()) else { return link_incomplete() };
    let token = token.as_str();
    reset_page(&state, &headers, StatusCode::OK, token, (None, Vec::new()))
}

/// `POST /reset-password`: sets the password; the browser is not signed in.
pub async fn reset_password_post(
    State(state): State<AppState>,
    ctx: RequestCtx,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(form) = checked_form(&state, &headers, &body) else { return form_expired() };
    let token = field(&form, "token").unwrap_or("");
    let password = Secret::new(field(&form, "new_password").unwrap_or(""));
    match state.auth.reset_password(&ctx, token, password).await {
        Ok(()) => message(
            StatusCode::OK,
            "Password changed",
            "Your password is changed and every device was signed out. Sign in with the new password.",
            false,
        )
        .into_response(),
        Err(AuthError::Validation(errs)) if errs.iter().any(|e| e.field == "token") => message(
            StatusCode::BAD_REQUEST,
            "Link expired",
            "This link is wrong, expired or was already used. Ask for a new one on the sign-in page.",
            true,
        )
        .into_response(),
        Err(AuthError::Validation(errs)) => {
            let details = errs.iter().map(|f| f.message.clone()).collect();
            reset_page(
                &state,
                &headers,
                StatusCode::BAD_REQUEST,
                token,
                (Some("Please choose another password:"), details),
            )
        }
        Err(e) => {
            let (status, text) = sign_in_error(&e);
            reset_page(&state, &headers, status, token, (Some(&text), Vec::new()))
        }
    }
}

/// `GET /unlock?token=…`: a button that lets this browser's address sign in
/// despite the lock.
pub async fn unlock_get(State(state): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let Some(token) = link_token(q.as_deref()) else { return link_incomplete() };
    let token = token.as_str();
    let text = (
        "Unlock your account",
        "Press the button to sign in from this device despite the lock.",
        "Unlock for this device",
    );
    confirm_page(&state, &headers, "/unlock", token, text)
}

/// `POST /unlock`: spends the token for the address that sends it.
pub async fn unlock_post(State(state): State<AppState>, ctx: RequestCtx, headers: HeaderMap, body: Bytes) -> Response {
    let Some(form) = checked_form(&state, &headers, &body) else { return form_expired() };
    match state.auth.unlock(&ctx, field(&form, "token").unwrap_or("")).await {
        Ok(()) => message(StatusCode::OK, "Unlocked", "You can sign in from this device again.", false).into_response(),
        Err(AuthError::Validation(_)) => {
            message(StatusCode::BAD_REQUEST, "Link expired", "This link is wrong, expired or was already used.", true)
                .into_response()
        }
        Err(e) => {
            let (status, text) = sign_in_error(&e);
            message(status, "Something went wrong", &text, true).into_response()
        }
    }
}
