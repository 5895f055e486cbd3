//! The OpenAPI 3.1 document of the JSON API. Each handler carries its own
//! `#[utoipa::path]` and the router registers it through `utoipa_axum::routes!`, so a
//! route and its description cannot drift apart. This module holds what operations
//! share: the problem responses (each naming the `code`s it can carry), the security
//! schemes, and [`finish`], which adds the answers operations share (400, 401, 413,
//! 415, 429, 500, 503, each where it can happen) so each handler only declares its own.

use portcullis_proto::{ErrorCode, FieldError, Problem};
use serde_json::{Map, Value, json};
use utoipa::{
    OpenApi, ToResponse,
    openapi::{RefOr, response::Response},
};

/// The document's fixed parts; the operations come from the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Portcullis",
        description = "Authentication and authorization server. Every error is an RFC 9457 problem \
                       document (`application/problem+json`) with a stable `code`; the OAuth 2.0 \
                       endpoints answer errors in the format of their RFC."
    ),
    components(schemas(Problem, ErrorCode, FieldError)),
    tags(
        (name = "auth", description = "Sign-up, sign-in, refresh, sign-out and the mailed-link flows."),
        (name = "me", description = "The signed-in user's own account, sessions and export."),
        (name = "mfa", description = "Second factors: TOTP, SMS and recovery codes."),
        (name = "passkeys", description = "WebAuthn passkeys: sign-in and the user's own credentials."),
        (name = "api-keys", description = "A user's machine credentials, and their verification by other services."),
        (name = "admin-users", description = "User administration."),
        (name = "admin-roles", description = "Roles and their permissions."),
        (name = "admin-clients", description = "OAuth 2.0 / OpenID Connect clients."),
        (name = "admin-webhooks", description = "Webhook endpoints and their delivery log."),
        (name = "admin-audit", description = "The audit trail and the mail log."),
        (name = "oauth", description = "The OAuth 2.0 / OpenID Connect provider's JSON endpoints."),
        (name = "ops", description = "Health, readiness, keys and the document itself."),
    )
)]
pub struct ApiDoc;

/// A problem response's component: the status's problem document with `code`
/// narrowed to what this answer can carry.
fn problem_response(description: &str, codes: &[ErrorCode]) -> Response {
    let names: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
    let listed = names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    let value = json!({
        "description": format!("{description} Codes: {listed}."),
        "content": {
            "application/problem+json": {
                "schema": {
                    "allOf": [
                        { "$ref": "#/components/schemas/Problem" },
                        { "type": "object", "properties": { "code": { "type": "string", "enum": names } } }
                    ]
                }
            }
        }
    });
    serde_json::from_value(value).unwrap_or_default()
}

macro_rules! problems {
    ($($(#[doc = $doc:literal])+ $name:ident = $status:literal [$($code:ident),+];)+) => {
        $(
            $(#[doc = $doc])+
            pub struct $name;

            impl<'r> ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<Response>) {
                    (stringify!($name), problem_response(concat!($($doc),+).trim(), &[$(ErrorCode::$code),+]).into())
                }
            }
        )+

        /// Every shared problem response with its status, for the document's
        /// components and for checking that each is used at its own status.
        pub fn problem_components() -> Vec<(u16, &'static str, RefOr<Response>)> {
            vec![$({
                let (name, response) = <$name as ToResponse>::response();
                ($status, name, response)
            }),+]
        }
    };
}

problems! {
    /// The request (body, query or path) is not valid; `errors` names the fields.
    BadRequest = 400 [ValidationFailed];
    /// No credential, or one that is malformed, revoked or expired.
    Unauthorized = 401 [MissingToken, InvalidToken, TokenExpired];
    /// The email or password is wrong, or the account cannot sign in (never says which).
    SignInFailed = 401 [InvalidCredentials];
    /// The refresh token is not valid; `refresh_token_reused` means it was spent already
    /// and every session of the account has been ended.
    RefreshFailed = 401 [InvalidToken, TokenExpired, RefreshTokenReused];
    /// The `mfa_token` or the code is not valid, or (re-authenticating) the session
    /// ended meanwhile.
    MfaFailed = 401 [MfaTokenInvalid, InvalidMfaCode, InvalidToken];
    /// The password is wrong, or the bearer token is missing or not valid.
    ReauthFailed = 401 [MissingToken, InvalidToken, TokenExpired, InvalidCredentials];
    /// No valid bearer token: neither a session's access token nor a live `mfa_token`.
    EnrolUnauthorized = 401 [MissingToken, InvalidToken, TokenExpired, MfaTokenInvalid];
    /// The passkey assertion is not valid, or its ceremony is unknown or spent.
    PasskeyFailed = 401 [InvalidCredentials, MfaTokenInvalid, InvalidToken];
    /// The credential lacks a permission (`required_scopes` names it), or this kind of
    /// credential cannot do this.
    Forbidden = 403 [InsufficientScope, Forbidden];
    /// The operation needs a recent sign-in (`POST /v1/auth/reauth`), or a user session.
    ReauthRequired = 403 [ReauthenticationRequired, InsufficientScope, Forbidden];
    /// Sign-in needs a verified email, or a second factor must be enrolled first
    /// (`mfa_token` is then the bearer token for the enrolment routes).
    SignInForbidden = 403 [EmailNotVerified, MfaEnrollmentRequired, Forbidden];
    /// No such object, or not one the caller may see.
    NotFound = 404 [NotFound];
    /// The object conflicts with an existing one.
    Conflict = 409 [Conflict];
    /// The request body is larger than `http.body_limit`.
    PayloadTooLarge = 413 [PayloadTooLarge];
    /// The body is not declared as JSON.
    UnsupportedMediaType = 415 [UnsupportedMediaType];
    /// Too many attempts; wait for `Retry-After` seconds.
    RateLimited = 429 [RateLimited];
    /// Too many attempts, or the account is locked for a while; wait for `Retry-After`.
    SignInLimited = 429 [RateLimited, AccountLocked];
    /// Something failed on the server's side; the details are in its log.
    InternalError = 500 [InternalError];
    /// The server is busy or the request took too long; retry after `Retry-After`.
    Unavailable = 503 [Overloaded, Timeout];
}

/// The security schemes operations name in their `security`.
fn security_schemes() -> Value {
    json!({
        "bearer": {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "An access token: of a session (`POST /v1/auth/login`) or issued to an OAuth client. \
                            The names listed with it are the permissions the operation needs."
        },
        "api_key": {
            "type": "apiKey", "in": "header", "name": "X-API-Key",
            "description": "An API key (`POST /v1/api-keys`); it acts with its owner's current permissions, \
                            narrowed to its own scopes."
        },
        "mfa_token": {
            "type": "http", "scheme": "bearer",
            "description": "The `mfa_token` of a sign-in that must enrol a second factor first."
        },
        "client_basic": {
            "type": "http", "scheme": "basic",
            "description": "OAuth client authentication (`client_secret_basic`); `client_secret_post` works too."
        }
    })
}

/// The finished document: the fixed parts, the operations, the shared responses,
/// and the answers every operation can give added where a handler did not declare
/// them.
pub fn finish(doc: utoipa::openapi::OpenApi) -> Value {
    let mut doc = serde_json::to_value(&doc).unwrap_or_default();
    let components = doc.as_object_mut().and_then(|d| {
        d.entry("components").or_insert_with(|| json!({})).as_object_mut().map(|c| {
            c.insert("securitySchemes".into(), security_schemes());
            let responses = c.entry("responses").or_insert_with(|| json!({}));
            for (_, name, response) in problem_components() {
                if let Some(r) = responses.as_object_mut() {
                    r.insert(name.into(), serde_json::to_value(response).unwrap_or_default());
                }
            }
        })
    });
    debug_assert!(components.is_some());
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            for op in item.values_mut().filter_map(Value::as_object_mut) {
                add_common_answers(op);
            }
        }
    }
    doc
}

/// 500 and 503 for every operation; 400 where it takes input; 401 and 429 where a
/// credential is needed;
/// 413 where a body is read, and 415 where it must be JSON.
fn add_common_answers(op: &mut Map<String, Value>) {
    let secured = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty() && s.iter().all(|r| r.as_object().is_some_and(|o| !o.is_empty())));
    let body = op.get("requestBody");
    let has_body = body.is_some();
    // Bad path segments, query strings and bodies; an operation with none of them
    // has nothing to be invalid.
    let has_input = has_body || op.get("parameters").and_then(Value::as_array).is_some_and(|p| !p.is_empty());
    let json_body = body.and_then(|b| b.pointer("/content/application~1json")).is_some();
    // An optional body is read as bytes, whatever its type: no 415 there.
    let required_json = json_body && body.and_then(|b| b.get("required")).and_then(Value::as_bool) == Some(true);
    let Some(responses) = op.entry("responses").or_insert_with(|| json!({})).as_object_mut() else {
        return;
    };
    let mut add = |status: &str, name: &str| {
        responses.entry(status).or_insert_with(|| json!({ "$ref": format!("#/components/responses/{name}") }));
    };
    if has_input {
        add("400", "BadRequest");
    }
    if secured {
        add("401", "Unauthorized");
        add("429", "RateLimited");
    }
    if has_body {
        add("413", "PayloadTooLarge");
    }
    if required_json {
        add("415", "UnsupportedMediaType");
    }
    add("500", "InternalError");
    add("503", "Unavailable");
}

/// The document as served: built once per process, from the same routers the
/// server runs.
static DOCUMENT: std::sync::LazyLock<bytes::Bytes> = std::sync::LazyLock::new(|| {
    let doc = super::openapi_document();
    serde_json::to_vec_pretty(&doc).map(bytes::Bytes::from).unwrap_or_default()
});

/// The OpenAPI 3.1 document of this API, for generating clients and for `/docs`.
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "This OpenAPI 3.1 document.", content_type = "application/json", body = Object)))]
pub async fn openapi_get() -> axum::response::Response {
    use axum::{http::header, response::IntoResponse};
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.clone()).into_response()
}

/// `/docs`: Swagger UI over `/openapi.json`. Its files are compiled into the binary
/// and the page may load nothing from elsewhere (its content security policy says
/// so), so it works on a machine without internet access.
pub fn reference_page() -> axum::Router<super::AppState> {
    use axum::http::{HeaderValue, header};
    let config = utoipa_swagger_ui::Config::new(["/openapi.json"]).validator_url("none").try_it_out_enabled(true);
    let page: axum::Router<super::AppState> = utoipa_swagger_ui::SwaggerUi::new("/docs").config(config).into();
    page.layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'",
        ),
    ))
}
