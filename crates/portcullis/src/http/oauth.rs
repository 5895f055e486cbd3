//! The OAuth/OIDC machine endpoints: `/oauth/token`, `/oauth/introspect`,
//! `/oauth/revoke`, `/oauth/userinfo`, the two discovery documents, and the CORS
//! policy of the endpoints browsers call. They speak form-encoded requests and
//! RFC 6749 JSON errors, not problem+json.

use axum::{
    body::Bytes,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use portcullis_proto::ProviderMetadata;
use portcullis_proto::{OAuthErrorBody, OAuthTokenResponse};

use crate::oauth::params::{MAX_PARAMS, first_duplicate};

use super::{AppState, error::ApiError, extract::Authed};
use crate::{
    clients,
    crypto::Secret,
    ctx::RequestCtx,
    oauth::{OAuthError, Presented, grants::TokenRequest},
};

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = OAuthErrorBody { error: self.error.to_owned(), error_description: self.description };
        let mut res = (self.status, axum::Json(body)).into_response();
        res.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        // RFC 6749 §5.2: a client that tried HTTP Basic gets the matching challenge.
        if self.status == StatusCode::UNAUTHORIZED && self.basic_challenge {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"portcullis\""));
        }
        if let Some(secs) = self.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

/// The parameters of a form-encoded body; a parameter given twice is refused
/// (RFC 6749 §3.2).
pub fn form_pairs(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(String, String)>, OAuthError> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form {
        return Err(OAuthError::invalid_request("send the parameters as application/x-www-form-urlencoded"));
    }
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(body).take(MAX_PARAMS + 1).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    if pairs.len() > MAX_PARAMS {
        return Err(OAuthError::invalid_request(format!("at most {MAX_PARAMS} parameters")));
    }
    if let Some(dup) = first_duplicate(&pairs) {
        return Err(OAuthError::invalid_request(format!("parameter {dup} appears more than once")));
    }
    Ok(pairs)
}

fn take(pairs: &mut Vec<(String, String)>, name: &str) -> Option<String> {
    let i = pairs.iter().position(|(k, _)| k == name)?;
    Some(pairs.swap_remove(i).1).filter(|v| !v.is_empty())
}

/// Client credentials from the `Authorization: Basic` header (RFC 6749 §2.3.1:
/// both halves are form-encoded before base64) and the form.
fn presented(headers: &HeaderMap, pairs: &mut Vec<(String, String)>) -> Result<Presented, OAuthError> {
    let mut p = Presented {
        client_id: take(pairs, "client_id"),
        client_secret: take(pairs, "client_secret").map(Secret::new),
        assertion_type: take(pairs, "client_assertion_type"),
        assertion: take(pairs, "client_assertion"),
        ..Presented::default()
    };
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let bad = || {
            OAuthError::invalid_client("the Authorization header is not valid Basic credentials").with_basic_challenge()
        };
        let value = value.to_str().map_err(|_| bad())?;
        let (scheme, rest) = value.split_once(' ').ok_or_else(bad)?;
        if scheme.eq_ignore_ascii_case("basic") {
            use base64::Engine;
            let raw = base64::engine::general_purpose::STANDARD.decode(rest.trim()).map_err(|_| bad())?;
            let text = String::from_utf8(raw).map_err(|_| bad())?;
            let (id, secret) = text.split_once(':').ok_or_else(bad)?;
            let decode =
                |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
            let id = decode(id).ok_or_else(bad)?;
            let secret = decode(secret).ok_or_else(bad)?;
            p.basic = Some((id, Secret::new(secret)));
        }
    }
    Ok(p)
}

fn json_no_store(body: impl serde::Serialize) -> Response {
    let mut res = axum::Json(body).into_response();
    res.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

/// Runs a request that authenticates a client, under the per-address limit of
/// failed client authentications: past it, `429` from memory before any work (a
/// flood of junk credentials costs no lookups and no audit writes).
async fn client_guarded(
    state: &AppState,
    ctx: &RequestCtx,
    run: impl std::future::Future<Output = Result<Response, OAuthError>>,
) -> Response {
    let ip = ctx.client();
    if let Some(secs) = state.client_fail_limiter.blocked(ip, ctx.route(), ctx.now) {
        return too_many_failures(secs);
    }
    match run.await {
        Ok(res) => res,
        Err(e) if e.error == "invalid_client" => match state.client_fail_limiter.hit(ip, ctx.route(), ctx.now).await {
            Ok(()) => e.into_response(),
            Err(secs) => too_many_failures(secs),
        },
        Err(e) => e.into_response(),
    }
}

fn too_many_failures(secs: u64) -> Response {
    OAuthError::too_many(
        "invalid_client",
        format!("too many failed client authentications from this address; retry in {secs} s"),
        secs,
    )
    .into_response()
}

/// `POST /oauth/token`.
pub async fn oauth_token(State(state): State<AppState>, ctx: RequestCtx, headers: HeaderMap, body: Bytes) -> Response {
    let run = async {
        let mut pairs = form_pairs(&headers, &body)?;
        let presented = presented(&headers, &mut pairs)?;
        let req = TokenRequest {
            grant_type: take(&mut pairs, "grant_type"),
            code: take(&mut pairs, "code").map(Secret::new),
            redirect_uri: take(&mut pairs, "redirect_uri"),
            code_verifier: take(&mut pairs, "code_verifier").map(Secret::new),
            refresh_token: take(&mut pairs, "refresh_token").map(Secret::new),
            scope: take(&mut pairs, "scope"),
        };
        let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).filter(|o| *o != "null");
        let out = state.oauth.token(&ctx, presented, req, origin).await?;
        let body = OAuthTokenResponse {
            access_token: out.access_token,
            token_type: "Bearer".into(),
            expires_in: out.expires_in,
            scope: out.scope,
            refresh_token: out.refresh_token.map(|r| r.expose().to_owned()),
            id_token: out.id_token,
        };
        let mut res = axum::Json(body).into_response();
        res.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        Ok::<_, OAuthError>(res)
    };
    client_guarded(&state, &ctx, run).await
}

/// `POST /oauth/introspect` (RFC 7662).
pub async fn oauth_introspect(
    State(state): State<AppState>,
    ctx: RequestCtx,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let run = async {
        let mut pairs = form_pairs(&headers, &body)?;
        let presented = presented(&headers, &mut pairs)?;
        let token = take(&mut pairs, "token").map(Secret::new);
        let out = state.oauth.introspect(&ctx, presented, token).await?;
        Ok::<_, OAuthError>(json_no_store(out))
    };
    client_guarded(&state, &ctx, run).await
}

/// `POST /oauth/revoke` (RFC 7009).
pub async fn oauth_revoke(State(state): State<AppState>, ctx: RequestCtx, headers: HeaderMap, body: Bytes) -> Response {
    let run = async {
        let mut pairs = form_pairs(&headers, &body)?;
        let presented = presented(&headers, &mut pairs)?;
        let token = take(&mut pairs, "token").map(Secret::new);
        state.oauth.revoke(&ctx, presented, token).await?;
        Ok::<_, OAuthError>(StatusCode::OK.into_response())
    };
    client_guarded(&state, &ctx, run).await
}

/// `GET|POST /oauth/userinfo`: claims about the token's user, by scope. The token
/// comes in the `Authorization` header, or in a form-encoded POST body as
/// `access_token` (RFC 6750 §2.2; OpenID's `oidcc-userinfo-post-body`), never both.
pub async fn oauth_userinfo(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    let who = if parts.headers.contains_key(header::AUTHORIZATION) || parts.method != Method::POST || !form {
        use axum::extract::FromRequestParts;
        Authed::from_request_parts(&mut parts, &state).await?.0
    } else {
        let bad = |message: &str| {
            ApiError::validation(vec![portcullis_proto::FieldError {
                field: String::new(),
                code: "invalid_body".into(),
                message: message.into(),
            }])
        };
        let bytes =
            axum::body::to_bytes(body, 16 * 1024).await.map_err(|_| bad("the body is too large or unreadable"))?;
        let mut pairs = form_pairs(&parts.headers, &bytes).map_err(|e| bad(&e.description))?;
        let Some(token) = take(&mut pairs, "access_token") else { return Err(ApiError::missing_token()) };
        state.auth.authenticate(token.trim(), crate::clock::now_ms()).await?
    };
    if !who.scopes().iter().any(|s| s == "openid") || !who.has_user() {
        return Err(ApiError::insufficient_scope(vec!["openid".into()]));
    }
    let user = match who.user() {
        Some(u) => crate::store::UserRow::clone(u),
        None => return Err(ApiError::insufficient_scope(vec!["openid".into()])),
    };
    Ok(json_no_store(crate::oauth::id_token::user_claims(&user, who.scopes())))
}

fn metadata(state: &AppState, openid: bool) -> ProviderMetadata {
    let iss = state.oauth.settings().issuer.clone();
    let at = |path: &str| format!("{iss}{path}");
    let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
    // RFC 8414 has no userinfo or end-session endpoint, nor the OpenID-only fields.
    let oidc = |list: &[&str]| if openid { strings(list) } else { Vec::new() };
    let algs = state.oauth.tokens().signing_alg().map(|a| a.as_str().to_owned()).into_iter().collect();
    ProviderMetadata {
        authorization_endpoint: at("/oauth/authorize"),
        token_endpoint: at("/oauth/token"),
        jwks_uri: at("/.well-known/jwks.json"),
        userinfo_endpoint: openid.then(|| at("/oauth/userinfo")),
        introspection_endpoint: at("/oauth/introspect"),
        revocation_endpoint: at("/oauth/revoke"),
        end_session_endpoint: openid.then(|| at("/oauth/logout")),
        scopes_supported: strings(clients::OIDC_SCOPES),
        response_types_supported: strings(&["code"]),
        response_modes_supported: strings(&["query"]),
        grant_types_supported: strings(clients::GRANT_TYPES),
        subject_types_supported: oidc(&["public"]),
        id_token_signing_alg_values_supported: openid.then_some(algs),
        token_endpoint_auth_methods_supported: strings(clients::AUTH_METHODS),
        token_endpoint_auth_signing_alg_values_supported: strings(clients::ASSERTION_ALGS),
        introspection_endpoint_auth_methods_supported: strings(&[
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
        ]),
        introspection_endpoint_auth_signing_alg_values_supported: strings(clients::ASSERTION_ALGS),
        revocation_endpoint_auth_methods_supported: strings(clients::AUTH_METHODS),
        revocation_endpoint_auth_signing_alg_values_supported: strings(clients::ASSERTION_ALGS),
        code_challenge_methods_supported: strings(&["S256"]),
        prompt_values_supported: oidc(&["none", "login", "consent", "select_account"]),
        acr_values_supported: oidc(&["pwd", "mfa"]),
        claims_supported: oidc(&[
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "at_hash",
            "amr",
            "acr",
            "azp",
            "name",
            "updated_at",
            "email",
            "email_verified",
        ]),
        claims_parameter_supported: openid.then_some(false),
        request_parameter_supported: openid.then_some(false),
        request_uri_parameter_supported: openid.then_some(false),
        authorization_response_iss_parameter_supported: true,
        issuer: iss.clone(),
    }
}

fn public_json(body: ProviderMetadata) -> Response {
    let mut res = axum::Json(body).into_response();
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    res
}

/// `GET /.well-known/openid-configuration` (OpenID Connect Discovery 1.0).
pub async fn openid_configuration(State(state): State<AppState>) -> Response {
    public_json(metadata(&state, true))
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414).
pub async fn oauth_metadata(State(state): State<AppState>) -> Response {
    public_json(metadata(&state, false))
}

/// `OPTIONS` on a CORS-enabled route: the CORS layer adds the headers it allows.
pub async fn preflight() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// CORS for public documents (discovery, JWKS): any origin may read them.
pub async fn cors_public(req: Request, next: Next) -> Response {
    let preflight = req.method() == Method::OPTIONS;
    let has_origin = req.headers().contains_key(header::ORIGIN);
    let mut res = if preflight { StatusCode::NO_CONTENT.into_response() } else { next.run(req).await };
    if has_origin {
        let h = res.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        if preflight {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, OPTIONS"));
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        }
    }
    res
}

/// CORS for the token and userinfo endpoints: only origins some client registered
/// in `allowed_cors_origins` (the token endpoint then checks it is the calling
/// client's own).
pub async fn cors_clients(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let preflight = req.method() == Method::OPTIONS && origin.is_some();
    let allowed = match &origin {
        Some(o) => state.oauth.clients().cors_origins().await.contains(o),
        None => false,
    };
    let mut res = if preflight { StatusCode::NO_CONTENT.into_response() } else { next.run(req).await };
    let h = res.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if allowed && let Some(v) = origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        if preflight {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("Authorization, Content-Type, DPoP"),
            );
            h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        }
    }
    res
}
