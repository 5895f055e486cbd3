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
    Page { status: StatusCode::OK, html, cookies }.into_response()
}

/// `GET /verify-email?token=…`: a button that confirms the address.
pub async fn verify_email_get(State(state): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let pairs = parse_query(q.as_deref());
    let token = field(&pairs, "token").unwrap_or("");
    if token.is_empty() {
        return message(
            StatusCode::BAD_REQUEST,
            "Link incomplete",
            "This link has no token. Copy the whole link from the message.",
            true,
        )
        .into_response();
    }
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
    let form = parse_pairs(&body);
    if !csrf_ok(&headers, &state.cookies, &state.oauth.settings().issuer, &form) {
        return message(
            StatusCode::FORBIDDEN,
            "Please try again",
            "This form expired or did not come from this site. Open the link from the message again.",
            true,
        )
        .into_response();
    }
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
