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
use portcullis_proto::{IntrospectionResponse, OAuthErrorBody, OAuthTokenResponse, UserInfo};
use serde::Deserialize;

use crate::oauth::params::{MAX_PARAMS, first_duplicate};

use super::{
    AppState,
    error::ApiError,
    extract::Authed,
    openapi::{Forbidden, PayloadTooLarge},
};
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

/// The client's credentials in a form body, for `client_secret_post`,
/// `private_key_jwt` (RFC 7523) and public clients; `client_secret_basic` sends them
/// in the `Authorization` header instead. One method per request.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code, reason = "describes the form in the OpenAPI document; the handlers read the pairs themselves")]
pub struct ClientAuthForm {
    /// The client's id: with `client_secret`, alone for a public client, or beside a
    /// `client_assertion` (then it must match the assertion's `sub`). With HTTP Basic
    /// it may be repeated here, and must then match.
    client_id: Option<String>,
    /// `client_secret_post`: the client's secret.
    client_secret: Option<String>,
    /// `private_key_jwt`: `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`.
    client_assertion_type: Option<String>,
    /// `private_key_jwt`: a JWT signed with one of the client's registered keys.
    client_assertion: Option<String>,
}

/// A grant type of the token endpoint.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code, reason = "describes the form in the OpenAPI document; the handler reads the pairs itself")]
pub enum GrantType {
    /// RFC 6749 §4.1.3, with PKCE (RFC 7636).
    AuthorizationCode,
    /// RFC 6749 §6.
    RefreshToken,
    /// RFC 6749 §4.4.
    ClientCredentials,
}

/// A token request (RFC 6749 §3.2), form-encoded; each parameter at most once.
/// `authorization_code` needs `code`, `redirect_uri` and `code_verifier`;
/// `refresh_token` needs `refresh_token` and may narrow `scope`;
/// `client_credentials` may name `scope`.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code, reason = "describes the form in the OpenAPI document; the handler reads the pairs itself")]
pub struct TokenRequestForm {
    /// Which grant.
    grant_type: GrantType,
    /// `authorization_code`: the code the authorization endpoint returned.
    code: Option<String>,
    /// `authorization_code`: the `redirect_uri` of the authorization request, again.
    redirect_uri: Option<String>,
    /// `authorization_code`: the PKCE verifier, 43 to 128 unreserved characters.
    code_verifier: Option<String>,
    /// `refresh_token`: the refresh token.
    refresh_token: Option<String>,
    /// Space-separated: narrower than granted (`refresh_token`), or what the client
    /// asks for (`client_credentials`).
    scope: Option<String>,
    /// Client authentication, when not in the `Authorization` header.
    #[serde(flatten)]
    client: ClientAuthForm,
}

/// An introspection (RFC 7662 §2.1) or revocation (RFC 7009 §2.1) request,
/// form-encoded; each parameter at most once. `token_type_hint` is accepted and
/// not needed: every kind of token is recognised by its form.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code, reason = "describes the form in the OpenAPI document; the handlers read the pairs themselves")]
pub struct TokenLookupForm {
    /// The access token, refresh token or (introspection only) `pcl_` API key.
    token: String,
    /// Client authentication, when not in the `Authorization` header.
    #[serde(flatten)]
    client: ClientAuthForm,
}

/// The body of `POST /oauth/userinfo` when the access token is not in the
/// `Authorization` header (RFC 6750 §2.2).
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code, reason = "describes the form in the OpenAPI document; the handler reads the pairs itself")]
pub struct UserinfoForm {
    /// The access token.
    access_token: String,
}

/// Exchanges an authorization code, a refresh token or the client's own credentials for tokens.
///
/// The client authenticates with HTTP Basic (`client_secret_basic`), with
/// `client_id` and `client_secret` in the form (`client_secret_post`), with a
/// `client_assertion` (`private_key_jwt`), or, as a public client, with its
/// `client_id` alone; whichever method it registered. Errors are RFC 6749 §5.2
/// JSON (`{error, error_description}`), not problem documents.
#[utoipa::path(post, path = "/oauth/token", tag = "oauth",
    request_body(content = TokenRequestForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The tokens (RFC 6749 §5.1); `id_token` with `openid`, `refresh_token` with `offline_access`.", body = OAuthTokenResponse),
        (status = 400, description = "`invalid_request` (a missing, repeated or malformed parameter, a body that is not form-encoded, \
            an origin the client did not register), `invalid_grant` (the code or refresh token is not good, or the user can no longer sign in), \
            `unauthorized_client`, `unsupported_grant_type` or `invalid_scope`.", body = OAuthErrorBody),
        (status = 401, description = "`invalid_client`: client authentication failed (with `WWW-Authenticate: Basic` when HTTP Basic was tried).",
            body = OAuthErrorBody, headers(("WWW-Authenticate" = String, description = "`Basic realm=\"portcullis\"`, when HTTP Basic was tried."))),
        (status = 413, response = PayloadTooLarge),
        (status = 429, description = "`invalid_client`: too many failed client authentications from this address; or `invalid_grant`: \
            too many failed refreshes from this address.", body = OAuthErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 500, description = "`server_error`.", body = OAuthErrorBody),
    ),
    security(("client_basic" = [])))]
pub async fn oauth_token_create(
    State(state): State<AppState>,
    ctx: RequestCtx,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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

/// Tells a confidential client whether a token is live, and what it allows (RFC 7662).
///
/// The client authenticates with HTTP Basic (`client_secret_basic`), with
/// `client_id` and `client_secret` in the form (`client_secret_post`) or with a
/// `client_assertion` (`private_key_jwt`); public clients may not introspect. It
/// learns about tokens issued to itself only, unless it is registered as a resource
/// server (`introspection: true`); any other token is `{"active": false}`. Errors
/// are RFC 6749 §5.2 JSON, not problem documents.
#[utoipa::path(post, path = "/oauth/introspect", tag = "oauth",
    request_body(content = TokenLookupForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The token's state; an inactive token is `{\"active\": false}` and nothing else.", body = IntrospectionResponse),
        (status = 400, description = "`invalid_request`: `token` is missing, a parameter is repeated or malformed, or the body is not form-encoded.", body = OAuthErrorBody),
        (status = 401, description = "`invalid_client`: client authentication failed, or the client is public (with `WWW-Authenticate: Basic` when HTTP Basic was tried).",
            body = OAuthErrorBody, headers(("WWW-Authenticate" = String, description = "`Basic realm=\"portcullis\"`, when HTTP Basic was tried."))),
        (status = 413, response = PayloadTooLarge),
        (status = 429, description = "`invalid_client`: too many failed client authentications from this address.", body = OAuthErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 500, description = "`server_error`.", body = OAuthErrorBody),
    ),
    security(("client_basic" = [])))]
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

/// Ends the grant behind one of the client's own access or refresh tokens (RFC 7009).
///
/// The client authenticates with HTTP Basic (`client_secret_basic`), with
/// `client_id` and `client_secret` in the form (`client_secret_post`), with a
/// `client_assertion` (`private_key_jwt`), or, as a public client, with its
/// `client_id` alone. A token that is unknown, already dead or another client's is
/// left alone and still answered 200. Errors are RFC 6749 §5.2 JSON, not problem
/// documents.
#[utoipa::path(post, path = "/oauth/revoke", tag = "oauth",
    request_body(content = TokenLookupForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Done, or nothing to do; the body is empty."),
        (status = 400, description = "`invalid_request`: `token` is missing, a parameter is repeated or malformed, or the body is not form-encoded.", body = OAuthErrorBody),
        (status = 401, description = "`invalid_client`: client authentication failed (with `WWW-Authenticate: Basic` when HTTP Basic was tried).",
            body = OAuthErrorBody, headers(("WWW-Authenticate" = String, description = "`Basic realm=\"portcullis\"`, when HTTP Basic was tried."))),
        (status = 413, response = PayloadTooLarge),
        (status = 429, description = "`invalid_client`: too many failed client authentications from this address.", body = OAuthErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
        (status = 500, description = "`server_error`.", body = OAuthErrorBody),
    ),
    security(("client_basic" = [])))]
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

/// Returns claims about the access token's user, as its scopes allow (OpenID Connect Core §5.3).
///
/// The token must carry `openid` and speak for a user. Errors are problem
/// documents with the RFC 6750 §3 `WWW-Authenticate: Bearer` challenge
/// (`error="invalid_token"` on 401, `error="insufficient_scope"` on 403).
#[utoipa::path(get, path = "/oauth/userinfo", tag = "oauth",
    responses(
        (status = 200, description = "The claims: `sub`, plus `name` and `updated_at` with `profile`, `email` and `email_verified` with `email`.", body = UserInfo),
        (status = 403, response = Forbidden),
    ),
    security(("bearer" = ["openid"])))]
pub async fn oauth_userinfo_get(state: State<AppState>, req: Request) -> Result<Response, ApiError> {
    userinfo(state, req).await
}

/// Returns claims about the access token's user, as its scopes allow (OpenID Connect Core §5.3).
///
/// The token comes in the `Authorization` header, or in a form-encoded body as
/// `access_token` (RFC 6750 §2.2; OpenID's `oidcc-userinfo-post-body`), never both.
/// It must carry `openid` and speak for a user. Errors are problem documents with
/// the RFC 6750 §3 `WWW-Authenticate: Bearer` challenge (`error="invalid_token"` on
/// 401, `error="insufficient_scope"` on 403).
#[utoipa::path(post, path = "/oauth/userinfo", tag = "oauth",
    request_body(content = Option<UserinfoForm>, content_type = "application/x-www-form-urlencoded",
        description = "Optional: the access token, when it is not in the `Authorization` header."),
    responses(
        (status = 200, description = "The claims: `sub`, plus `name` and `updated_at` with `profile`, `email` and `email_verified` with `email`.", body = UserInfo),
        (status = 403, response = Forbidden),
    ),
    security(("bearer" = ["openid"])))]
pub async fn oauth_userinfo_post(state: State<AppState>, req: Request) -> Result<Response, ApiError> {
    userinfo(state, req).await
}

/// Both methods of `/oauth/userinfo`: they are one operation each in the document
/// (an operation id is unique), one behaviour here.
async fn userinfo(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
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

/// Describes this OpenID provider: its endpoints, scopes, grants and algorithms (OpenID Connect Discovery 1.0).
///
/// Any origin may read it (CORS `*`); caches may keep it for five minutes.
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "oauth",
    responses((status = 200, description = "The OpenID Provider Metadata (Discovery 1.0 §3).", body = ProviderMetadata,
        headers(("Cache-Control" = String, description = "`public, max-age=300`.")))))]
pub async fn openid_configuration_get(State(state): State<AppState>) -> Response {
    public_json(metadata(&state, true))
}

/// Describes this OAuth 2.0 authorization server: its endpoints, scopes, grants and algorithms (RFC 8414).
///
/// The OpenID discovery document without the OpenID-only members. Any origin may
/// read it (CORS `*`); caches may keep it for five minutes.
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "oauth",
    responses((status = 200, description = "The authorization server metadata (RFC 8414 §2).", body = ProviderMetadata,
        headers(("Cache-Control" = String, description = "`public, max-age=300`.")))))]
pub async fn oauth_metadata_get(State(state): State<AppState>) -> Response {
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
