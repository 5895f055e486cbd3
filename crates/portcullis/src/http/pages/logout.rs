//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).

use axum::{
    body::Bytes,
    extract::{RawQuery, State},
    http::{HeaderMap, Method, StatusCode},
    response::{IntoResponse, Response},
};
use minijinja::context;

use super::*;

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
    let hint_client = hint.as_ref().map(|c| c.aud.clone());
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
        (Some(h), Some(w)) => h.user.sub == w.user.id,
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
        return Page { status: StatusCode::OK, html, cookies, script: false }.into_response();
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
