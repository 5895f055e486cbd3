//! The sign-up page: creates the account through the same rules as the JSON API,
//! signs the browser in, and resumes the authorization request it came with.

use axum::{
    body::Bytes,
    extract::{RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use minijinja::context;

use super::*;

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
    Page { status: f.status, html, cookies, script: false }.into_response()
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
        Ok(outcome) => {
            let (_, cookie) = match super::mfa::after_password(&state, &ctx, &headers, &params, outcome).await {
                Ok(done) => done,
                Err(second_step) => return second_step,
            };
            let cookies = vec![super::mfa::session_cookie(&state, &cookie)];
            if field(&params, "client_id").is_some() {
                // The new account just signed in: that satisfies prompt=login.
                let resumed = signed_in_params(&params);
                return redirect(&format!("/oauth/authorize?{}", query_string(&resumed)), cookies);
            }
            let mut page =
                message(StatusCode::OK, "Account created", "You are signed in. You can close this page.", false);
            page.cookies = cookies;
            page.into_response()
        }
        Err(AuthError::EmailNotVerified) => message(
            StatusCode::OK,
            "Check your inbox",
            &format!("We sent a link to {email}. Open it to confirm your address, then sign in."),
            false,
        )
        .into_response(),
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
