//! The authorization endpoint's rules (RFC 6749 §4.1, RFC 7636, OIDC Core §3.1.2):
//! which requests are valid, when to ask for sign-in or consent, and the code that
//! ends a successful request.
//!
//! Until the client and its redirect URI are known to be good, errors are shown to
//! the user and never redirected (an unregistered URI would make us an open
//! redirector); after that they go back to the client with `error` and `state`.

use std::sync::Arc;

use super::{OAuth, OAuthError, grants::pkce_well_formed, scope_list};
use crate::clients::{Client, OIDC_SCOPES};
use crate::{auth::BrowserSession, crypto, ctx::RequestCtx, store::CodeRow};

/// Form fields of the hosted pages that are not authorization parameters.
pub const PAGE_FIELDS: &[&str] = &[
    "csrf_token",
    "step",
    "email",
    "password",
    "decision",
    "name",
    "mfa_token",
    "code",
    "recovery_code",
    "sms",
    "passkey",
    "challenge_id",
    "credential",
];

/// A validated authorization request.
#[derive(Debug, Clone)]
pub struct AuthzRequest {
    /// The client.
    pub client: Arc<Client>,
    /// Where the answer goes.
    pub redirect_uri: String,
    /// Whether the request named it (then the token request must repeat it).
    pub redirect_given: bool,
    /// Echoed back.
    pub state: Option<String>,
    /// Requested scopes.
    pub scopes: Vec<String>,
    /// OpenID `nonce`.
    pub nonce: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: Option<String>,
    /// `prompt` values.
    pub prompt: Vec<String>,
    /// `max_age` in seconds.
    pub max_age: Option<i64>,
    /// `acr_values`: `mfa` demands a second factor.
    pub acr_values: Vec<String>,
    /// Suggested email for the sign-in form.
    pub login_hint: Option<String>,
    /// The authorization parameters as received, carried through the pages' forms.
    pub params: Vec<(String, String)>,
}

/// Why a request cannot go on.
#[derive(Debug)]
pub enum Invalid {
    /// Client or redirect URI unknown: show this to the user, redirect nowhere.
    Page(String),
    /// Send the browser back to the client with this error.
    Redirect(String),
}

/// What the browser sees next.
#[derive(Debug)]
pub enum Step {
    /// The sign-in page.
    SignIn,
    /// The consent page, for these scopes.
    Consent(Vec<String>),
    /// The browser signed in with one factor and needs its second (its user has
    /// one, or the request demands it): the hosted second step.
    SecondFactor,
    /// A redirect to the client (a code or an error).
    Redirect(String),
}

/// Appends the answer's parameters to the redirect URI (keeping its own query).
pub fn redirect_with(uri: &str, params: &[(&str, &str)]) -> String {
    match url::Url::parse(uri) {
        Ok(mut url) => {
            {
                let mut q = url.query_pairs_mut();
                for (k, v) in params {
                    q.append_pair(k, v);
                }
            }
            url.to_string()
        }
        Err(_) => uri.to_owned(),
    }
}

impl AuthzRequest {
    /// The redirect carrying `err` back to the client.
    pub fn error_redirect(&self, err: &OAuthError, issuer: &str) -> String {
        let mut p = vec![("error", err.error), ("error_description", err.description.as_str()), ("iss", issuer)];
        if let Some(s) = &self.state {
            p.push(("state", s));
        }
        redirect_with(&self.redirect_uri, &p)
    }
}

impl OAuth {
    /// Validates the parameters of an authorization request.
    pub async fn authorize_validate(&self, pairs: &[(String, String)]) -> Result<AuthzRequest, Invalid> {
        if pairs.len() > crate::oauth::params::MAX_PARAMS {
            return Err(Invalid::Page("the request has too many parameters".into()));
        }
        let params: Vec<(String, String)> =
            pairs.iter().filter(|(k, _)| !PAGE_FIELDS.contains(&k.as_str())).cloned().collect();
        let count = |name: &str| params.iter().filter(|(k, _)| k == name).count();
        let get =
            |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
        if count("client_id") > 1 || count("redirect_uri") > 1 {
            return Err(Invalid::Page("client_id and redirect_uri may appear only once".into()));
        }
        let client_id = get("client_id").ok_or_else(|| Invalid::Page("the request has no client_id".into()))?;
        let client = self
            .clients
            .get(client_id)
            .await
            .map_err(|e| Invalid::Page(OAuthError::server_error(&e.to_string()).description))?
            .ok_or_else(|| Invalid::Page("there is no client with this client_id".into()))?;
        let registered = &client.meta.redirect_uris;
        let (redirect_uri, redirect_given) = match get("redirect_uri") {
            Some(uri) if registered.iter().any(|r| r == uri) => (uri.to_owned(), true),
            Some(_) => return Err(Invalid::Page("the redirect_uri is not registered for this client".into())),
            None if registered.len() == 1 => (registered.first().cloned().unwrap_or_default(), false),
            None => return Err(Invalid::Page("the request must name one of the client's redirect URIs".into())),
        };
        let mut req = AuthzRequest {
            client: client.clone(),
            redirect_uri,
            redirect_given,
            state: get("state").map(str::to_owned),
            scopes: Vec::new(),
            nonce: get("nonce").map(str::to_owned),
            code_challenge: get("code_challenge").map(str::to_owned),
            prompt: get("prompt").map(scope_list).unwrap_or_default(),
            max_age: None,
            acr_values: get("acr_values").map(scope_list).unwrap_or_default(),
            login_hint: get("login_hint").map(|h| h.chars().take(254).collect()),
            params: params.clone(),
        };
        let issuer = &self.settings.issuer;
        match request_errors(&mut req, get) {
            Ok(()) => Ok(req),
            Err(e) => Err(Invalid::Redirect(req.error_redirect(&e, issuer))),
        }
    }

    /// Decides the next step for a valid request. `fresh` says the user signed in
    /// within this very request; `consent` is the answer of the consent form.
    pub async fn authorize_decide(
        &self,
        ctx: &RequestCtx,
        req: &AuthzRequest,
        browser: Option<&BrowserSession>,
        fresh: bool,
        consent: Option<bool>,
    ) -> Result<Step, OAuthError> {
        let issuer = &self.settings.issuer;
        let none = req.prompt.iter().any(|p| p == "none");
        let signed_in = browser.filter(|b| {
            let auth_time = b.session.auth_time.unwrap_or(b.session.created_at);
            let too_old = req.max_age.is_some_and(|m| ctx.now - auth_time > m.saturating_mul(1000));
            fresh || !(too_old || req.prompt.iter().any(|p| p == "login"))
        });
        let Some(browser) = signed_in else {
            if none {
                return Ok(Step::Redirect(
                    req.error_redirect(&OAuthError::code("login_required", "the user must sign in"), issuer),
                ));
            }
            return Ok(Step::SignIn);
        };
        if let Some(step) = self.second_factor_step(req, browser, none).await? {
            return Ok(step);
        }
        let user = &browser.user;
        // Scopes beyond OpenID's are permissions: granted only if the user holds them.
        let perms = self.db.role_permissions(&user.roles).await?;
        let granted: Vec<String> = req
            .scopes
            .iter()
            .filter(|s| {
                if *s == "offline_access" {
                    return req.client.meta.has_grant("refresh_token");
                }
                OIDC_SCOPES.contains(&s.as_str()) || perms.iter().any(|p| p == *s)
            })
            .cloned()
            .collect();
        // Nothing grantable: no consent page to skip and no code that would only
        // identify the visitor (RFC 6749 §4.1.2.1).
        if granted.is_empty() {
            self.audit(ctx, "oauth_authorize", false, Some(&user.id), req.client.id(), Some("no_grantable_scope"))
                .await;
            return Ok(Step::Redirect(req.error_redirect(
                &OAuthError::code("invalid_scope", "none of the requested scopes can be granted to this user"),
                issuer,
            )));
        }
        if !req.client.row.trusted {
            if consent == Some(false) {
                self.audit(ctx, "oauth_consent", false, Some(&user.id), req.client.id(), Some("denied")).await;
                return Ok(Step::Redirect(
                    req.error_redirect(&OAuthError::code("access_denied", "the user denied the request"), issuer),
                ));
            }
            if consent == Some(true) {
                let mut remembered =
                    scope_list(&self.db.consent_get(&user.id, req.client.id()).await?.unwrap_or_default());
                remembered.extend(granted.iter().filter(|g| !remembered.contains(g)).cloned().collect::<Vec<_>>());
                self.db.consent_put(&user.id, req.client.id(), &remembered.join(" "), ctx.now).await?;
                self.audit(ctx, "oauth_consent", true, Some(&user.id), req.client.id(), None).await;
            } else {
                let remembered = scope_list(&self.db.consent_get(&user.id, req.client.id()).await?.unwrap_or_default());
                let covered = granted.iter().all(|g| remembered.contains(g));
                if !covered || req.prompt.iter().any(|p| p == "consent") {
                    if none {
                        return Ok(Step::Redirect(
                            req.error_redirect(&OAuthError::code("consent_required", "the user must consent"), issuer),
                        ));
                    }
                    return Ok(Step::Consent(granted));
                }
            }
        }
        let code = crypto::b64url(&crypto::random_bytes::<32>());
        let ttl = i64::try_from(self.settings.code_ttl.as_millis()).unwrap_or(60_000);
        let row = CodeRow {
            code_hash: crypto::sha256_b64(&code),
            client_id: req.client.id().to_owned(),
            user_id: user.id.clone(),
            redirect_uri: if req.redirect_given { req.redirect_uri.clone() } else { String::new() },
            scope: grant_scope(req, &granted),
            nonce: req.nonce.clone(),
            code_challenge: req.code_challenge.clone(),
            auth_time: browser.session.auth_time.unwrap_or(browser.session.created_at),
            // How this browser signed in (sessions from before `amr` was kept used
            // a password).
            amr: browser.session.amr.clone().unwrap_or_else(|| r#"["pwd"]"#.into()),
            created_at: ctx.now,
            expires_at: ctx.now.saturating_add(ttl),
        };
        self.db.code_insert(&row).await?;
        self.audit(ctx, "oauth_authorize", true, Some(&user.id), req.client.id(), None).await;
        let mut p = vec![("code", code.as_str()), ("iss", issuer.as_str())];
        if let Some(s) = &req.state {
            p.push(("state", s));
        }
        Ok(Step::Redirect(redirect_with(&req.redirect_uri, &p)))
    }
}

impl OAuth {
    /// A browser session without a second factor goes on only if its user has
    /// none and the request does not demand one (`acr_values=mfa`): a session from
    /// before the user enrolled must step up, and a user with nothing to step up
    /// with gets `unmet_authentication_requirements`.
    async fn second_factor_step(
        &self,
        req: &AuthzRequest,
        browser: &BrowserSession,
        none: bool,
    ) -> Result<Option<Step>, OAuthError> {
        let amr: Vec<String> =
            browser.session.amr.as_deref().and_then(|a| serde_json::from_str(a).ok()).unwrap_or_default();
        if amr.iter().any(|m| m == "mfa") {
            return Ok(None);
        }
        let demanded = req.acr_values.iter().any(|a| a == "mfa");
        let has = self
            .auth
            .has_second_factor(&browser.user.id)
            .await
            .map_err(|e| OAuthError::server_error(&e.to_string()))?;
        let issuer = &self.settings.issuer;
        let required = self.auth.settings().mfa_required;
        Ok(match (has, demanded) {
            // `accounts.mfa = "required"` reaches sessions from before it too: they
            // enrol before the next code.
            (false, _) if required && none => Some(Step::Redirect(req.error_redirect(
                &OAuthError::code("interaction_required", "this account must set up a second factor"),
                issuer,
            ))),
            (false, _) if required => Some(Step::SecondFactor),
            (false, false) => None,
            (false, true) => Some(Step::Redirect(req.error_redirect(
                &OAuthError::code(
                    "unmet_authentication_requirements",
                    "this request demands a second factor and the account has none",
                ),
                issuer,
            ))),
            (true, _) if none => Some(Step::Redirect(
                req.error_redirect(&OAuthError::code("interaction_required", "a second factor is needed"), issuer),
            )),
            (true, _) => Some(Step::SecondFactor),
        })
    }
}

/// The checks whose failures go back to the client's redirect URI (RFC 6749
/// §4.1.2.1): response type, scope, PKCE, prompt and max_age.
fn request_errors<'a>(req: &mut AuthzRequest, get: impl Fn(&str) -> Option<&'a str>) -> Result<(), OAuthError> {
    let client = req.client.clone();
    if let Some(dup) = crate::oauth::params::first_duplicate(&req.params) {
        return Err(OAuthError::invalid_request(format!("parameter {dup} appears more than once")));
    }
    if req.state.as_ref().is_some_and(|s| s.len() > 2048) || req.nonce.as_ref().is_some_and(|n| n.len() > 512) {
        req.state = None;
        return Err(OAuthError::invalid_request("state or nonce is too long"));
    }
    if get("request").is_some() {
        return Err(OAuthError::code("request_not_supported", "request objects are not supported"));
    }
    if get("request_uri").is_some() {
        return Err(OAuthError::code("request_uri_not_supported", "request_uri is not supported"));
    }
    match get("response_type") {
        None => return Err(OAuthError::invalid_request("response_type is required")),
        Some("code") => {}
        Some(other) => {
            return Err(OAuthError::code(
                "unsupported_response_type",
                format!("response_type {other:?} is not supported; use code"),
            ));
        }
    }
    if !client.meta.has_grant("authorization_code") {
        return Err(OAuthError::code("unauthorized_client", "this client may not use the authorization code flow"));
    }
    if get("response_mode").is_some_and(|m| m != "query") {
        return Err(OAuthError::invalid_request("only response_mode=query is supported"));
    }
    req.scopes = match get("scope") {
        Some(s) => scope_list(s),
        None => client
            .meta
            .scopes()
            .filter(|s| OIDC_SCOPES.contains(s) && *s != "offline_access")
            .map(str::to_owned)
            .collect(),
    };
    if let Some(extra) = req.scopes.iter().find(|s| !client.meta.scopes().any(|c| c == s.as_str())) {
        return Err(OAuthError::code("invalid_scope", format!("scope {extra:?} is not allowed for this client")));
    }
    if req.scopes.is_empty() {
        return Err(OAuthError::code("invalid_scope", "no scope requested"));
    }
    pkce_errors(req.code_challenge.as_deref(), get("code_challenge_method"), client.meta.is_public())?;
    if let Some(bad) = req.prompt.iter().find(|p| !["none", "login", "consent", "select_account"].contains(&p.as_str()))
    {
        return Err(OAuthError::invalid_request(format!("prompt {bad:?} is not supported")));
    }
    if req.prompt.iter().any(|p| p == "none") && req.prompt.len() > 1 {
        return Err(OAuthError::invalid_request("prompt=none cannot be combined with other values"));
    }
    if let Some(m) = get("max_age") {
        match m.parse::<i64>() {
            Ok(v) if v >= 0 => req.max_age = Some(v),
            _ => return Err(OAuthError::invalid_request("max_age must be a non-negative integer")),
        }
    }
    Ok(())
}

/// PKCE (RFC 7636): S256 only, required for public clients, and never a method
/// without a challenge.
/// The scope a new grant keeps. A third party's grant is what the user consented to:
/// the permissions the user held then. A first-party (trusted) client has no consent
/// step, so its grant keeps every permission it asked for and each token carries
/// those the user holds at issue (`grant_allows`): a permission granted later shows
/// up at the next refresh, as it does for first-party sign-in.
fn grant_scope(req: &AuthzRequest, granted: &[String]) -> String {
    if !req.client.row.trusted {
        return granted.join(" ");
    }
    let offline_ok = req.client.meta.has_grant("refresh_token");
    let kept: Vec<&str> =
        req.scopes.iter().map(String::as_str).filter(|s| *s != "offline_access" || offline_ok).collect();
    kept.join(" ")
}

fn pkce_errors(challenge: Option<&str>, method: Option<&str>, public: bool) -> Result<(), OAuthError> {
    let invalid = |why: &str| Err(OAuthError::invalid_request(why));
    match (challenge, method) {
        (None, Some(_)) => invalid("code_challenge_method without code_challenge"),
        (None, None) if public => invalid("PKCE is required: send code_challenge with code_challenge_method=S256"),
        (Some(_), None | Some("plain")) => invalid("only code_challenge_method=S256 is supported"),
        (Some(_), Some(m)) if m != "S256" => invalid("only code_challenge_method=S256 is supported"),
        (Some(c), _) if c.len() != 43 || !pkce_well_formed(c) => {
            invalid("code_challenge must be a base64url SHA-256 (43 characters)")
        }
        _ => Ok(()),
    }
}
