//! OAuth 2.0 / OpenID Connect: clients, the authorization code flow with PKCE
//! through the hosted pages, tokens, client credentials, introspection,
//! revocation, discovery, logout and CORS — every rule, on both backends.

use std::collections::HashMap;

use reqwest::{StatusCode, redirect::Policy};
use serde_json::{Value, json};

use crate::common::{Backend, Data, PASSWORD, TestServer, jwt_part};

/// A browser without JavaScript: a cookie jar and no automatic redirects.
pub struct Browser {
    client: reqwest::Client,
    base: String,
    jar: HashMap<String, String>,
}

/// A response as the browser saw it.
pub struct Seen {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: String,
    pub set_cookies: Vec<String>,
}

impl Seen {
    /// The form's fields: hidden inputs with their values, named buttons omitted.
    pub fn form(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let first = self.body.split("</form>").next().unwrap_or_default();
        for chunk in first.split("<input").skip(1) {
            let tag = chunk.split('>').next().unwrap();
            let attr = |name: &str| {
                let key = format!("{name}=\"");
                tag.find(&key).map(|i| {
                    let rest = &tag[i + key.len()..];
                    html_decode(&rest[..rest.find('"').unwrap()])
                })
            };
            if attr("type").as_deref() == Some("hidden") {
                out.push((attr("name").unwrap(), attr("value").unwrap_or_default()));
            }
        }
        out
    }

    /// Query parameters of the redirect.
    pub fn redirect_params(&self) -> HashMap<String, String> {
        let url = url::Url::parse(self.location.as_deref().expect("a redirect")).unwrap();
        url.query_pairs().into_owned().collect()
    }
}

pub fn html_decode(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail.find(';').unwrap();
        let ent = &tail[1..end];
        let c = match ent {
            "amp" => '&',
            "quot" => '"',
            "lt" => '<',
            "gt" => '>',
            "apos" => '\'',
            _ if ent.starts_with("#x") => char::from_u32(u32::from_str_radix(&ent[2..], 16).unwrap()).unwrap(),
            _ if ent.starts_with('#') => char::from_u32(ent[1..].parse().unwrap()).unwrap(),
            _ => panic!("unknown entity {ent}"),
        };
        out.push(c);
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out
}

impl Browser {
    pub fn new(s: &TestServer) -> Self {
        let client = reqwest::Client::builder().redirect(Policy::none()).build().unwrap();
        Browser { client, base: s.url(""), jar: HashMap::new() }
    }

    fn absolute(&self, url: &str) -> String {
        if url.starts_with('/') { format!("{}{url}", self.base) } else { url.to_owned() }
    }

    async fn seen(&mut self, res: reqwest::Response) -> Seen {
        let status = res.status();
        let location = res.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
        let set_cookies: Vec<String> =
            res.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        for c in &set_cookies {
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.jar.remove(k);
            } else {
                self.jar.insert(k.to_owned(), v.to_owned());
            }
        }
        Seen { status, location, body: res.text().await.unwrap(), set_cookies }
    }

    fn cookie_header(&self) -> String {
        self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    pub async fn get(&mut self, url: &str) -> Seen {
        let res = self.client.get(self.absolute(url)).header("cookie", self.cookie_header()).send().await.unwrap();
        self.seen(res).await
    }

    pub async fn post(&mut self, url: &str, form: &[(String, String)]) -> Seen {
        let res = self
            .client
            .post(self.absolute(url))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.seen(res).await
    }

    /// Submits the sign-in form on `page` with these credentials.
    pub async fn sign_in(&mut self, page: &Seen, email: &str, password: &str) -> Seen {
        let mut form = page.form();
        form.push(("email".into(), email.into()));
        form.push(("password".into(), password.into()));
        self.post("/oauth/authorize", &form).await
    }

    /// Answers the consent form on `page`.
    pub async fn consent(&mut self, page: &Seen, allow: bool) -> Seen {
        let mut form = page.form();
        form.push(("decision".into(), if allow { "allow" } else { "deny" }.into()));
        self.post("/oauth/authorize", &form).await
    }
}

pub const REDIRECT: &str = "https://app.example.com/callback";
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
/// S256 of [`VERIFIER`] (RFC 7636 appendix B).
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// Registers a client as an admin; returns the reply (with `client_secret`).
pub async fn create_client(s: &TestServer, admin: &str, body: Value) -> Value {
    let res = s.post_auth("/v1/admin/clients", admin, body).await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

pub fn authorize_url(client_id: &str, extra: &[(&str, &str)]) -> String {
    let mut params: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("scope", "openid profile email offline_access"),
        ("state", "st-123"),
        ("nonce", "n-456"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ];
    for (k, v) in extra {
        params.retain(|(pk, _)| pk != k);
        if !v.is_empty() {
            params.push((k, v));
        }
    }
    format!("/oauth/authorize?{}", serde_urlencoded::to_string(&params).unwrap())
}

pub async fn token(
    s: &TestServer,
    auth: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut req = s.client.post(s.url("/oauth/token")).form(form);
    if let Some((id, secret)) = auth {
        req = req.basic_auth(id, Some(secret));
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    (status, res.json().await.unwrap(), headers)
}

pub struct Setup {
    pub s: TestServer,
    pub admin: String,
    pub client_id: String,
    pub secret: String,
    pub user_id: String,
}

/// A server with an admin, a confidential (untrusted) web client and a user.
pub async fn setup(backend: &Backend, data: &Data) -> Setup {
    let _ = backend;
    let s = TestServer::start_on(data, |_| {}).await;
    let admin = s.admin("admin@example.com").await.access;
    let c = create_client(
        &s,
        &admin,
        json!({
            "client_name": "Photo App",
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "post_logout_redirect_uris": ["https://app.example.com/bye"],
        }),
    )
    .await;
    let user = s.register("ann@example.com", PASSWORD).await;
    Setup {
        admin,
        client_id: c["client_id"].as_str().unwrap().into(),
        secret: c["client_secret"].as_str().unwrap().into(),
        user_id: user["user"]["id"].as_str().unwrap().into(),
        s,
    }
}

/// Runs the browser part of the flow: sign-in, consent (if asked); returns the
/// redirect to the client.
pub async fn browser_flow(b: &mut Browser, url: &str) -> Seen {
    let page = b.get(url).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("<label for=\"email\">Email</label>"), "{}", page.body);
    let mut next = b.sign_in(&page, "ann@example.com", PASSWORD).await;
    if next.status == StatusCode::OK && next.body.contains("name=\"decision\"") {
        next = b.consent(&next, true).await;
    }
    assert_eq!(next.status, StatusCode::SEE_OTHER, "{}", next.body);
    next
}

pub async fn exchange(t: &Setup, code: &str, verifier: &str) -> (StatusCode, Value) {
    let (status, body, _) = token(
        &t.s,
        Some((&t.client_id, &t.secret)),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", verifier),
        ],
    )
    .await;
    (status, body)
}

pub async fn introspect(t: &Setup, tok: &str) -> Value {
    t.s.client
        .post(t.s.url("/oauth/introspect"))
        .basic_auth(&t.client_id, Some(&t.secret))
        .form(&[("token", tok)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn code_flow(backend: Backend) {
    let data = Data::new(&backend).await;
    let t = setup(&backend, &data).await;
    let mut b = Browser::new(&t.s);
    let first = b.get(&authorize_url(&t.client_id, &[])).await;
    // The session cookie is HttpOnly and SameSite=Lax; no Secure on a loopback issuer.
    let done = {
        let mut next = b.sign_in(&first, "ann@example.com", PASSWORD).await;
        let session_cookie = next.set_cookies.iter().find(|c| c.starts_with("pcl_session=")).unwrap().clone();
        assert!(session_cookie.contains("HttpOnly") && session_cookie.contains("SameSite=Lax"), "{session_cookie}");
        assert!(!session_cookie.contains("Secure"));
        assert_eq!(next.status, StatusCode::OK, "an untrusted client asks for consent");
        assert!(
            next.body.contains("Allow Photo App?") && next.body.contains("See your email address"),
            "{}",
            next.body
        );
        next = b.consent(&next, true).await;
        next
    };
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert!(done.location.as_deref().unwrap().starts_with(REDIRECT));
    let p = done.redirect_params();
    assert_eq!(p["state"], "st-123");
    assert_eq!(p["iss"], t.s.url(""));
    let (status, tokens) = exchange(&t, &p["code"], VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "openid profile email offline_access");
    let access = tokens["access_token"].as_str().unwrap();
    let at = jwt_part(access, 1);
    assert_eq!(jwt_part(access, 0)["typ"], "at+jwt");
    assert_eq!(at["client_id"], t.client_id.as_str());
    assert_eq!(at["sub"], t.user_id.as_str());
    let id = tokens["id_token"].as_str().unwrap();
    let idh = jwt_part(id, 0);
    let idc = jwt_part(id, 1);
    assert_eq!(idh["typ"], "JWT");
    assert_eq!(idh["alg"], "RS256", "RS256 by default");
    assert_eq!(idc["aud"], t.client_id.as_str());
    assert_eq!(idc["nonce"], "n-456");
    assert_eq!(idc["email"], "ann@example.com");
    assert_eq!(idc["amr"], json!(["pwd"]));
    assert!(idc["auth_time"].as_i64().unwrap() <= idc["iat"].as_i64().unwrap());
    use aws_lc_rs::digest;
    let h = digest::digest(&digest::SHA256, access.as_bytes());
    assert_eq!(idc["at_hash"], portcullis::crypto::b64url(&h.as_ref()[..16]));
    // userinfo by scope
    let info: Value = t.s.get_auth("/oauth/userinfo", access).await.json().await.unwrap();
    assert_eq!(
        info,
        json!({"sub": t.user_id, "email": "ann@example.com", "email_verified": false,
        "updated_at": info["updated_at"]})
    );
    // A third-party token reads the user by scope at userinfo, never the whole account.
    assert_eq!(t.s.me_status(access).await, StatusCode::FORBIDDEN);
    // A third-party token cannot manage the account's credentials.
    let res = t.s.post_auth("/v1/api-keys", access, json!({"name": "x", "scopes": []})).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Introspection: active with the client and scope.
    let i = introspect(&t, access).await;
    assert_eq!(i["active"], true, "{i}");
    assert_eq!(i["client_id"], t.client_id.as_str());
    let rt = tokens["refresh_token"].as_str().unwrap();
    assert_eq!(introspect(&t, rt).await["token_type"], "refresh_token");
    // Refresh rotates, may narrow the scope, never widen it.
    let (status, r2, _) = token(
        &t.s,
        Some((&t.client_id, &t.secret)),
        &[("grant_type", "refresh_token"), ("refresh_token", rt), ("scope", "openid email")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r2}");
    assert_eq!(r2["scope"], "openid email");
    assert_ne!(r2["refresh_token"], tokens["refresh_token"]);
    assert!(jwt_part(r2["id_token"].as_str().unwrap(), 1).get("nonce").is_none());
    let (status, wide, _) = token(
        &t.s,
        Some((&t.client_id, &t.secret)),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", r2["refresh_token"].as_str().unwrap()),
            ("scope", "openid admin:users:read"),
        ],
    )
    .await;
    assert_eq!((status, wide["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_scope")));
    // The refused widening spent nothing; reusing the first refresh token revokes the grant.
    let (status, reuse, _) =
        token(&t.s, Some((&t.client_id, &t.secret)), &[("grant_type", "refresh_token"), ("refresh_token", rt)]).await;
    assert_eq!((status, reuse["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    assert_eq!(introspect(&t, r2["access_token"].as_str().unwrap()).await["active"], false);
    assert_eq!(userinfo_status(&t.s, access).await, StatusCode::UNAUTHORIZED);
    // Consent is remembered: the next authorization goes straight back with a code.
    let again = b.get(&authorize_url(&t.client_id, &[("state", "two")])).await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.body);
    assert_eq!(again.redirect_params()["state"], "two");
    t.s.stop().await;
}

async fn pkce_and_code_rules(backend: Backend) {
    let data = Data::new(&backend).await;
    let t = setup(&backend, &data).await;
    let mut b = Browser::new(&t.s);
    let code_of = |seen: &Seen| seen.redirect_params()["code"].clone();
    let first = browser_flow(&mut b, &authorize_url(&t.client_id, &[])).await;
    // Wrong verifier: refused, and the code is spent.
    let (status, e) = exchange(&t, &code_of(&first), "x".repeat(43).as_str()).await;
    assert_eq!((status, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")), "{e}");
    // Missing verifier.
    let c = code_of(&b.get(&authorize_url(&t.client_id, &[])).await);
    let (status, e, _) = token(
        &t.s,
        Some((&t.client_id, &t.secret)),
        &[("grant_type", "authorization_code"), ("code", &c), ("redirect_uri", REDIRECT)],
    )
    .await;
    assert_eq!((status, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    // Wrong redirect URI at the token endpoint.
    let c = code_of(&b.get(&authorize_url(&t.client_id, &[])).await);
    let (status, e, _) = token(
        &t.s,
        Some((&t.client_id, &t.secret)),
        &[
            ("grant_type", "authorization_code"),
            ("code", &c),
            ("redirect_uri", "https://app.example.com/other"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!((status, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    // Wrong client secret.
    let c = code_of(&b.get(&authorize_url(&t.client_id, &[])).await);
    let (status, e, h) = token(
        &t.s,
        Some((&t.client_id, "pcs_wrong")),
        &[("grant_type", "authorization_code"), ("code", &c), ("redirect_uri", REDIRECT), ("code_verifier", VERIFIER)],
    )
    .await;
    assert_eq!((status, e["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
    assert!(h["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    // ...which did not spend the code: the right client redeems it. Then a replay
    // is refused and revokes the tokens it issued (RFC 6749 §4.1.2).
    let (status, ok) = exchange(&t, &c, VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{ok}");
    let access = ok["access_token"].as_str().unwrap();
    assert_eq!(userinfo_status(&t.s, access).await, StatusCode::OK);
    // Another client presenting the spent code neither spends nor revokes anything.
    let other = create_client(
        &t.s,
        &t.admin,
        json!({"client_name": "Other", "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none"}),
    )
    .await;
    let (status, e, _) = token(
        &t.s,
        None,
        &[
            ("grant_type", "authorization_code"),
            ("code", &c),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", other["client_id"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!((status, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    assert_eq!(userinfo_status(&t.s, access).await, StatusCode::OK);
    let (status, e) = exchange(&t, &c, VERIFIER).await;
    assert_eq!((status, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    assert_eq!(userinfo_status(&t.s, access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(introspect(&t, ok["refresh_token"].as_str().unwrap()).await["active"], false);
    // An expired code.
    let c = code_of(&b.get(&authorize_url(&t.client_id, &[])).await);
    let db = portcullis::store::Db::connect(&t.s.cfg.database_url()).await.unwrap();
    sqlx_exec(&db, "UPDATE oauth_codes SET expires_at = 0 WHERE used_at IS NULL").await;
    db.close().await;
    let (status, e) = exchange(&t, &c, VERIFIER).await;
    assert_eq!((status, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    // A request that named no redirect URI (the client has one): the exchange may
    // repeat the registered one.
    let c = code_of(&b.get(&authorize_url(&t.client_id, &[("redirect_uri", "")])).await);
    let (status, body) = exchange(&t, &c, VERIFIER).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Ten parallel redemptions of one code: exactly one token response.
    let c = code_of(&b.get(&authorize_url(&t.client_id, &[])).await);
    let runs = (0..10).map(|_| exchange(&t, &c, VERIFIER));
    let results = futures::future::join_all(runs).await;
    let wins = results.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(wins, 1, "{:?}", results.iter().map(|r| r.0).collect::<Vec<_>>());
    t.s.stop().await;
}

async fn userinfo_status(s: &TestServer, token: &str) -> StatusCode {
    s.get_auth("/oauth/userinfo", token).await.status()
}

/// The review's escalations: a client registrar cannot mint scopes it lacks, and a
/// grant loses a permission the user loses; oversized requests are refused cheaply.
async fn scopes_follow_the_people_behind_them(backend: Backend) {
    let data = Data::new(&backend).await;
    let t = setup(&backend, &data).await;
    let res =
        t.s.post_auth(
            "/v1/admin/roles",
            &t.admin,
            json!({"name": "integrations",
        "permissions": ["admin:clients:read", "admin:clients:write"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res =
        t.s.post_auth("/v1/admin/roles", &t.admin, json!({"name": "auditor", "permissions": ["admin:audit:read"]}))
            .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    for role in ["integrations", "auditor"] {
        let res = t.s.post_auth(&format!("/v1/admin/users/{}/roles", t.user_id), &t.admin, json!({"role": role})).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let carol = t.s.login("ann@example.com", PASSWORD).await.access;
    let res =
        t.s.post_auth(
            "/v1/admin/clients",
            &carol,
            json!({"client_name": "svc",
        "grant_types": ["client_credentials"], "scope": "admin:roles:write admin:users:write"}),
        )
        .await;
    crate::common::assert_problem(res, StatusCode::FORBIDDEN, "insufficient_scope").await;
    let res =
        t.s.post_auth(
            "/v1/admin/clients",
            &carol,
            json!({"client_name": "svc",
        "grant_types": ["client_credentials"], "scope": "admin:audit:read"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED, "a scope she holds is fine");
    // A grant with admin:audit:read loses it when the role goes.
    let res =
        t.s.send(
            reqwest::Method::PATCH,
            &format!("/v1/admin/clients/{}", t.client_id),
            &t.admin,
            Some(json!({"scope": "openid email offline_access admin:audit:read"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut b = Browser::new(&t.s);
    let done =
        browser_flow(&mut b, &authorize_url(&t.client_id, &[("scope", "openid offline_access admin:audit:read")]))
            .await;
    let (_, tokens) = exchange(&t, &done.redirect_params()["code"], VERIFIER).await;
    assert_eq!(tokens["scope"], "openid offline_access admin:audit:read");
    let res =
        t.s.send(reqwest::Method::DELETE, &format!("/v1/admin/users/{}/roles/auditor", t.user_id), &t.admin, None)
            .await;
    assert!(res.status().is_success());
    let (status, r, _) = token(
        &t.s,
        Some((&t.client_id, &t.secret)),
        &[("grant_type", "refresh_token"), ("refresh_token", tokens["refresh_token"].as_str().unwrap())],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["scope"], "openid offline_access");
    assert_eq!(
        t.s.get_auth("/v1/admin/audit", r["access_token"].as_str().unwrap()).await.status(),
        StatusCode::FORBIDDEN
    );
    // 65 parameters: refused before anything else.
    let many: Vec<(String, String)> = (0..65).map(|i| (format!("p{i}"), "x".to_owned())).collect();
    let res = t.s.client.post(t.s.url("/oauth/token")).form(&many).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let q = serde_urlencoded::to_string(&many).unwrap();
    assert_eq!(b.get(&format!("/oauth/authorize?{q}")).await.status, StatusCode::BAD_REQUEST);
    t.s.stop().await;
}

async fn failed_client_auth_is_limited(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |c| c.security.client_auth_failure_rate = "3/1m".parse().unwrap()).await;
    let admin = s.admin("admin@example.com").await.access;
    let svc =
        create_client(&s, &admin, json!({"client_name": "svc", "grant_types": ["client_credentials"], "scope": "x:y"}))
            .await;
    let id = svc["client_id"].as_str().unwrap();
    for _ in 0..3 {
        let (status, e, _) = token(&s, Some((id, "pcs_wrong")), &[("grant_type", "client_credentials")]).await;
        assert_eq!((status, e["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
    }
    let (status, e, h) = token(&s, Some((id, "pcs_wrong")), &[("grant_type", "client_credentials")]).await;
    assert_eq!((status, e["error"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("invalid_client")), "{e}");
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    // From this address, even the right secret waits: guessing cannot continue.
    let (status, _, _) =
        token(&s, Some((id, svc["client_secret"].as_str().unwrap())), &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    s.stop().await;
}

async fn sqlx_exec(db: &portcullis::store::Db, sql: &str) {
    db.debug_exec(sql).await.unwrap();
}

async fn authorize_errors(backend: Backend) {
    let data = Data::new(&backend).await;
    let t = setup(&backend, &data).await;
    let mut b = Browser::new(&t.s);
    // Unregistered redirect URI and unknown client: an error page, never a redirect.
    let bad = b.get(&authorize_url(&t.client_id, &[("redirect_uri", "https://evil.example/cb")])).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.location.is_none() && bad.body.contains("not registered"), "{}", bad.body);
    let bad = b.get(&authorize_url("cli_nope", &[])).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.location.is_none());
    // Errors after that go back to the client with error and state.
    for (extra, error) in [
        (vec![("code_challenge_method", "plain")], "invalid_request"),
        (vec![("response_type", "token")], "unsupported_response_type"),
        (vec![("scope", "openid admin:users:write")], "invalid_scope"),
        (vec![("prompt", "none")], "login_required"),
        (vec![("prompt", "none login")], "invalid_request"),
        (vec![("max_age", "-1")], "invalid_request"),
    ] {
        let seen = b.get(&authorize_url(&t.client_id, &extra)).await;
        assert_eq!(seen.status, StatusCode::SEE_OTHER, "{extra:?}: {}", seen.body);
        let p = seen.redirect_params();
        assert_eq!(p["error"], error, "{extra:?}");
        assert_eq!(p["state"], "st-123");
    }
    // A public client must use PKCE.
    let public = create_client(
        &t.s,
        &t.admin,
        json!({"client_name": "SPA", "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert!(public.get("client_secret").is_none());
    let pid = public["client_id"].as_str().unwrap();
    let seen =
        b.get(&authorize_url(pid, &[("code_challenge", ""), ("code_challenge_method", ""), ("scope", "openid")])).await;
    assert_eq!(seen.redirect_params()["error"], "invalid_request");
    // Signed in but not yet consented: prompt=none says consent_required; deny says access_denied.
    let page = b.get(&authorize_url(&t.client_id, &[])).await;
    let consent = b.sign_in(&page, "ann@example.com", PASSWORD).await;
    let seen = b.get(&authorize_url(&t.client_id, &[("prompt", "none")])).await;
    assert_eq!(seen.redirect_params()["error"], "consent_required");
    let denied = b.consent(&consent, false).await;
    assert_eq!(denied.redirect_params()["error"], "access_denied");
    // max_age older than the sign-in asks again; login_hint fills the email.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let seen = b.get(&authorize_url(&t.client_id, &[("max_age", "1"), ("login_hint", "hint@example.com")])).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert!(
        seen.body.contains("name=\"password\"") && seen.body.contains("value=\"hint@example.com\""),
        "{}",
        seen.body
    );
    // prompt=login asks again even with a session.
    let seen = b.get(&authorize_url(&t.client_id, &[("prompt", "login")])).await;
    assert_eq!(seen.status, StatusCode::OK);
    assert!(seen.body.contains("name=\"password\""));
    t.s.stop().await;
}

async fn hosted_pages_guard(backend: Backend) {
    let data = Data::new(&backend).await;
    let t = setup(&backend, &data).await;
    let mut b = Browser::new(&t.s);
    let page = b.get(&authorize_url(&t.client_id, &[])).await;
    // Wrong password: the page again, with an accessible error.
    let wrong = b.sign_in(&page, "ann@example.com", "not the password at all").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("role=\"alert\"") && wrong.body.contains("Wrong email or password"));
    // A forged form (no matching CSRF token) is refused.
    let mut forged = page.form();
    forged.retain(|(k, _)| k != "csrf_token");
    forged.push(("csrf_token".into(), "forged-forged-forged-forged-forged".into()));
    forged.push(("email".into(), "ann@example.com".into()));
    forged.push(("password".into(), PASSWORD.into()));
    let res = b.post("/oauth/authorize", &forged).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    // A cross-site post with the right token is refused too.
    let mut form = page.form();
    form.push(("email".into(), "ann@example.com".into()));
    form.push(("password".into(), PASSWORD.into()));
    let res =
        t.s.client
            .post(t.s.url("/oauth/authorize"))
            .header("origin", "https://evil.example")
            .header("cookie", b.cookie_header())
            .form(&form)
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res =
        t.s.client
            .post(t.s.url("/oauth/authorize"))
            .header("sec-fetch-site", "cross-site")
            .header("cookie", b.cookie_header())
            .form(&form)
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // `Origin: null` (what Chromium sends under Referrer-Policy: no-referrer) with the
    // right token is a real form post: found by the browser test.
    let res =
        t.s.client
            .post(t.s.url("/oauth/authorize"))
            .header("origin", "null")
            .header("sec-fetch-site", "same-origin")
            .header("cookie", b.cookie_header())
            .form(&form)
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "signed in, now the consent page");
    // The hosted form shares the JSON login's lockout.
    for _ in 0..5 {
        b.sign_in(&page, "ann@example.com", "still not the password").await;
    }
    let locked = b.sign_in(&page, "ann@example.com", PASSWORD).await;
    assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS, "{}", locked.body);
    let res = t.s.post("/v1/auth/login", json!({"email": "ann@example.com", "password": PASSWORD})).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // Sign-up page: creates the account and resumes the request.
    let mut b2 = Browser::new(&t.s);
    let start = authorize_url(&t.client_id, &[]);
    let signin = b2.get(&start).await;
    let href = signin.body.split("<a href=\"").nth(1).unwrap().split('"').next().unwrap();
    let href = html_decode(href);
    assert!(href.starts_with("/oauth/signup?"), "{href}");
    let page = b2.get(&href).await;
    assert_eq!(page.status, StatusCode::OK);
    let mut form = page.form();
    form.extend([
        ("email".into(), "bo@example.com".into()),
        ("password".into(), "password".into()),
        ("name".into(), "Bo".into()),
    ]);
    let weak = b2.post("/oauth/signup", &form).await;
    assert_eq!(weak.status, StatusCode::BAD_REQUEST);
    assert!(weak.body.contains("password"), "{}", weak.body);
    let mut form = page.form();
    form.extend([
        ("email".into(), "bo@example.com".into()),
        ("password".into(), PASSWORD.into()),
        ("name".into(), "Bo".into()),
    ]);
    let made = b2.post("/oauth/signup", &form).await;
    assert_eq!(made.status, StatusCode::SEE_OTHER, "{}", made.body);
    let resumed = b2.get(made.location.as_deref().unwrap()).await;
    assert!(resumed.body.contains("Allow Photo App?"), "{}", resumed.body);
    t.s.stop().await;
}

async fn trusted_public_and_logout(backend: Backend) {
    let data = Data::new(&backend).await;
    let t = setup(&backend, &data).await;
    let spa = create_client(&t.s, &t.admin, json!({"client_name": "First party", "redirect_uris": [REDIRECT],
        "token_endpoint_auth_method": "none", "trusted": true, "grant_types": ["authorization_code", "refresh_token"],
        "post_logout_redirect_uris": ["https://app.example.com/bye"], "allowed_cors_origins": ["https://app.example.com"]})).await;
    let id = spa["client_id"].as_str().unwrap();
    let mut b = Browser::new(&t.s);
    let page = b.get(&authorize_url(id, &[])).await;
    let done = b.sign_in(&page, "ann@example.com", PASSWORD).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "trusted: no consent page");
    let code = done.redirect_params()["code"].clone();
    // From an origin the client did not register: refused before the code is spent.
    let res =
        t.s.client
            .post(t.s.url("/oauth/token"))
            .header("origin", "https://evil.example")
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", id),
            ])
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // A public client authenticates with client_id alone (and PKCE).
    let res =
        t.s.client
            .post(t.s.url("/oauth/token"))
            .header("origin", "https://app.example.com")
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", id),
            ])
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["access-control-allow-origin"], "https://app.example.com");
    let tokens: Value = res.json().await.unwrap();
    // CORS preflight from the registered origin, and none for another.
    let pre =
        t.s.client
            .request(reqwest::Method::OPTIONS, t.s.url("/oauth/token"))
            .header("origin", "https://app.example.com")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
    assert_eq!(pre.status(), StatusCode::NO_CONTENT);
    assert!(pre.headers()["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    let other =
        t.s.client
            .request(reqwest::Method::OPTIONS, t.s.url("/oauth/token"))
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // Logout with id_token_hint goes back with state, ends the browser session.
    let hint = tokens["id_token"].as_str().unwrap();
    let q = serde_urlencoded::to_string([
        ("id_token_hint", hint),
        ("post_logout_redirect_uri", "https://app.example.com/bye"),
        ("state", "s9"),
    ])
    .unwrap();
    let out = b.get(&format!("/oauth/logout?{q}")).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
    assert_eq!(out.location.as_deref(), Some("https://app.example.com/bye?state=s9"));
    let again = b.get(&authorize_url(id, &[])).await;
    assert_eq!(again.status, StatusCode::OK, "signed out: the sign-in page again");
    // An unregistered post-logout URI is refused; logout without a hint asks first.
    let q = serde_urlencoded::to_string([("client_id", id), ("post_logout_redirect_uri", "https://evil.example/")])
        .unwrap();
    assert_eq!(b.get(&format!("/oauth/logout?{q}")).await.status, StatusCode::BAD_REQUEST);
    let page = b.get(&authorize_url(id, &[])).await;
    b.sign_in(&page, "ann@example.com", PASSWORD).await;
    let ask = b.get("/oauth/logout").await;
    assert_eq!(ask.status, StatusCode::OK);
    assert!(ask.body.contains("Sign out?"));
    let bye = b.post("/oauth/logout", &ask.form()).await;
    assert_eq!(bye.status, StatusCode::OK);
    assert!(bye.body.contains("Signed out"));
    t.s.stop().await;
}

/// A trusted (first-party) client's grant follows the user's permissions, and its
/// tokens carry roles and metadata; a third party's grant stays what was consented.
async fn trusted_grants_follow_permissions(backend: Backend) {
    let _ = backend;
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |c| c.tokens.include_metadata = true).await;
    let admin = s.admin("admin@example.com").await.access;
    let user = s.register("ann@example.com", PASSWORD).await;
    let user_path = format!("/v1/admin/users/{}", user["user"]["id"].as_str().unwrap());
    let res =
        s.send(reqwest::Method::PATCH, &user_path, &admin, Some(json!({"public_metadata": {"plan": "pro"}}))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res =
        s.post_auth("/v1/admin/roles", &admin, json!({"name": "billing", "permissions": ["read:invoices"]})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let scope = "openid email offline_access read:invoices";
    let mut flows = Vec::new();
    for trusted in [true, false] {
        let c = create_client(
            &s,
            &admin,
            json!({"client_name": format!("app {trusted}"), "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"], "trusted": trusted, "scope": scope}),
        )
        .await;
        let id = c["client_id"].as_str().unwrap().to_owned();
        let secret = c["client_secret"].as_str().unwrap().to_owned();
        let mut b = Browser::new(&s);
        let done = browser_flow(&mut b, &authorize_url(&id, &[("scope", scope)])).await;
        let code = done.redirect_params()["code"].clone();
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ];
        let (status, tokens, _) = token(&s, Some((&id, &secret)), &form).await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        assert_eq!(tokens["scope"], "openid email offline_access", "not held yet: not issued");
        let claims = jwt_part(tokens["access_token"].as_str().unwrap(), 1);
        if trusted {
            assert_eq!(claims["roles"], json!(["member"]), "{claims}");
            assert_eq!(claims["metadata"], json!({"plan": "pro"}), "{claims}");
        } else {
            assert!(claims.get("roles").is_none() && claims.get("metadata").is_none(), "{claims}");
        }
        flows.push((trusted, id, secret, tokens["refresh_token"].as_str().unwrap().to_owned()));
    }
    let res = s.post_auth(&format!("{user_path}/roles"), &admin, json!({"role": "billing"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    for (trusted, id, secret, refresh) in flows {
        let form = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())];
        let (status, r, _) = token(&s, Some((&id, &secret)), &form).await;
        assert_eq!(status, StatusCode::OK, "{r}");
        let claims = jwt_part(r["access_token"].as_str().unwrap(), 1);
        if trusted {
            assert_eq!(r["scope"], scope, "granted since: issued at the next refresh");
            let roles = claims["roles"].as_array().unwrap();
            assert!(roles.contains(&json!("billing")) && roles.contains(&json!("member")), "{claims}");
        } else {
            assert_eq!(r["scope"], "openid email offline_access", "a third party keeps what was consented");
            assert!(claims.get("roles").is_none(), "{claims}");
        }
    }
    s.stop().await;
}

async fn client_credentials(backend: Backend) {
    let data = Data::new(&backend).await;
    let t = setup(&backend, &data).await;
    let svc = create_client(
        &t.s,
        &t.admin,
        json!({"client_name": "Billing", "grant_types": ["client_credentials"],
        "scope": "admin:users:read reports:read", "token_endpoint_auth_method": "client_secret_post"}),
    )
    .await;
    let (id, secret) = (svc["client_id"].as_str().unwrap(), svc["client_secret"].as_str().unwrap());
    assert!(secret.len() >= 43 + 4, "256-bit secret");
    let (status, tok, _) =
        token(&t.s, None, &[("grant_type", "client_credentials"), ("client_id", id), ("client_secret", secret)]).await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    assert!(tok.get("refresh_token").is_none() && tok.get("id_token").is_none());
    assert_eq!(tok["scope"], "admin:users:read reports:read");
    let access = tok["access_token"].as_str().unwrap();
    let claims = jwt_part(access, 1);
    assert_eq!((claims["sub"].as_str(), claims["client_id"].as_str()), (Some(id), Some(id)));
    assert!(claims.get("sid").is_none());
    // The token works where its scope does, and has no user.
    assert_eq!(t.s.get_auth("/v1/admin/users", access).await.status(), StatusCode::OK);
    assert_eq!(t.s.get_auth("/v1/admin/roles", access).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(t.s.me_status(access).await, StatusCode::FORBIDDEN);
    // Scope downgrade works, widening does not; wrong method and wrong secret fail.
    let (_, narrow, _) = token(
        &t.s,
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", id),
            ("client_secret", secret),
            ("scope", "reports:read"),
        ],
    )
    .await;
    assert_eq!(narrow["scope"], "reports:read");
    let (status, e, _) = token(
        &t.s,
        None,
        &[("grant_type", "client_credentials"), ("client_id", id), ("client_secret", secret), ("scope", "openid")],
    )
    .await;
    assert_eq!((status, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_scope")));
    let (status, e, _) = token(&t.s, Some((id, secret)), &[("grant_type", "client_credentials")]).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "registered for post, not basic"
    );
    let (status, e, _) =
        token(&t.s, None, &[("grant_type", "client_credentials"), ("client_id", id), ("client_secret", "pcs_nope")])
            .await;
    assert_eq!((status, e["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")));
    // The web client may not use client_credentials; unknown grants are named.
    let (status, e, _) = token(&t.s, Some((&t.client_id, &t.secret)), &[("grant_type", "client_credentials")]).await;
    assert_eq!((status, e["error"].as_str()), (StatusCode::BAD_REQUEST, Some("unauthorized_client")));
    let (_, e, _) = token(&t.s, Some((&t.client_id, &t.secret)), &[("grant_type", "password")]).await;
    assert_eq!(e["error"], "unsupported_grant_type");
    // Not a form: invalid_request in OAuth's format.
    let res = t.s.post("/oauth/token", json!({"grant_type": "client_credentials"})).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "invalid_request");
    // Rotation with grace: both secrets work; deleting the client ends its tokens.
    let res =
        t.s.post_auth(&format!("/v1/admin/clients/{id}/rotate-secret"), &t.admin, json!({"grace_seconds": 60})).await;
    let rotated: Value = res.json().await.unwrap();
    let new_secret = rotated["client_secret"].as_str().unwrap();
    for s in [secret, new_secret] {
        let (status, _, _) =
            token(&t.s, None, &[("grant_type", "client_credentials"), ("client_id", id), ("client_secret", s)]).await;
        assert_eq!(status, StatusCode::OK);
    }
    let shown: Value = t.s.get_auth(&format!("/v1/admin/clients/{id}"), &t.admin).await.json().await.unwrap();
    assert!(shown.get("client_secret").is_none(), "a secret is shown once");
    let dump = portcullis::store::Db::connect(&t.s.cfg.database_url()).await.unwrap();
    let text = dump.debug_dump_text().await.unwrap();
    assert!(!text.contains(new_secret) && !text.contains(secret), "secrets are stored hashed");
    dump.close().await;
    let res = t.s.send(reqwest::Method::DELETE, &format!("/v1/admin/clients/{id}"), &t.admin, None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(t.s.get_auth("/v1/admin/users", access).await.status(), StatusCode::UNAUTHORIZED);
    t.s.stop().await;
}

async fn private_key_jwt(backend: Backend) {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    let data = Data::new(&backend).await;
    let t = setup(&backend, &data).await;
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let x = portcullis::crypto::b64url(pair.public_key().as_ref());
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "alg": "EdDSA", "use": "sig"}]});
    let svc = create_client(
        &t.s,
        &t.admin,
        json!({"client_name": "Signer", "grant_types": ["client_credentials"],
        "scope": "reports:read", "token_endpoint_auth_method": "private_key_jwt", "jwks": jwks}),
    )
    .await;
    let id = svc["client_id"].as_str().unwrap();
    assert!(svc.get("client_secret").is_none());
    let key = jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref());
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("k1".into());
    let now = portcullis::clock::now_ms() / 1000;
    let assertion = |jti: &str, aud: &str| {
        jsonwebtoken::encode(
            &header,
            &json!({"iss": id, "sub": id, "aud": aud, "jti": jti, "exp": now + 60, "iat": now}),
            &key,
        )
        .unwrap()
    };
    let token_url = t.s.url("/oauth/token");
    let call = |a: String| {
        let s = &t.s;
        async move {
            token(
                s,
                None,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                    ("client_assertion", &a),
                ],
            )
            .await
        }
    };
    let (status, ok, _) = call(assertion("j1", &token_url)).await;
    assert_eq!(status, StatusCode::OK, "{ok}");
    let (status, replay, _) = call(assertion("j1", &token_url)).await;
    assert_eq!(
        (status, replay["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client")),
        "a jti works once"
    );
    let (status, _, _) = call(assertion("j2", "https://elsewhere.example/token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "wrong audience");
    // An HMAC assertion "signed" with anything is refused whatever the key.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"iss": id, "sub": id, "aud": token_url, "jti": "j3", "exp": now + 60}),
        &jsonwebtoken::EncodingKey::from_secret(x.as_bytes()),
    )
    .unwrap();
    let (status, _, _) = call(forged).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The same key published at a jwks_uri (a tiny HTTP server of the client's).
    let (jwks_url, _, served) = crate::common::json_server(jwks.to_string()).await;
    let remote = create_client(
        &t.s,
        &t.admin,
        json!({"client_name": "Remote keys", "grant_types": ["client_credentials"],
        "scope": "reports:read", "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": jwks_url}),
    )
    .await;
    let rid = remote["client_id"].as_str().unwrap();
    let a = jsonwebtoken::encode(
        &header,
        &json!({"iss": rid, "sub": rid, "aud": token_url, "jti": "r1", "exp": now + 60}),
        &key,
    )
    .unwrap();
    let (status, body, _) = call(a).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    served.abort();
    t.s.stop().await;
}

async fn discovery_and_admin_rules(backend: Backend) {
    let data = Data::new(&backend).await;
    let t = setup(&backend, &data).await;
    let base = t.s.url("");
    let doc: Value =
        t.s.client.get(t.s.url("/.well-known/openid-configuration")).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["issuer"], base.as_str());
    for (k, path) in [
        ("authorization_endpoint", "/oauth/authorize"),
        ("token_endpoint", "/oauth/token"),
        ("userinfo_endpoint", "/oauth/userinfo"),
        ("jwks_uri", "/.well-known/jwks.json"),
        ("introspection_endpoint", "/oauth/introspect"),
        ("revocation_endpoint", "/oauth/revoke"),
        ("end_session_endpoint", "/oauth/logout"),
    ] {
        assert_eq!(doc[k], format!("{base}{path}"), "{k}");
        // Every endpoint listed exists.
        let res = t.s.client.get(doc[k].as_str().unwrap()).send().await.unwrap();
        assert_ne!(res.status(), StatusCode::NOT_FOUND, "{k}");
    }
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(doc["id_token_signing_alg_values_supported"], json!(["RS256"]));
    let as_meta: Value =
        t.s.client.get(t.s.url("/.well-known/oauth-authorization-server")).send().await.unwrap().json().await.unwrap();
    assert_eq!(as_meta["issuer"], base.as_str());
    assert!(as_meta.get("userinfo_endpoint").is_none());
    let jwks =
        t.s.client.get(t.s.url("/.well-known/jwks.json")).header("origin", "https://any.example").send().await.unwrap();
    assert_eq!(jwks.headers()["access-control-allow-origin"], "*");
    // Registration rules, with per-field errors.
    for (body, field) in [
        (json!({"client_name": "x", "redirect_uris": ["http://app.example.com/cb"]}), "redirect_uris[0]"),
        (json!({"client_name": "x", "redirect_uris": ["https://app.example.com/cb#frag"]}), "redirect_uris[0]"),
        (json!({"client_name": "x", "redirect_uris": [REDIRECT], "grant_types": ["implicit"]}), "grant_types[0]"),
        (
            json!({"client_name": "x", "grant_types": ["client_credentials"], "token_endpoint_auth_method": "none"}),
            "grant_types",
        ),
        (
            json!({"client_name": "x", "grant_types": ["client_credentials"], "token_endpoint_auth_method": "private_key_jwt"}),
            "jwks",
        ),
        (
            json!({"client_name": "x", "redirect_uris": [REDIRECT], "allowed_cors_origins": ["https://a.example/path"]}),
            "allowed_cors_origins[0]",
        ),
        (json!({"client_name": "", "redirect_uris": [REDIRECT]}), "client_name"),
    ] {
        let res = t.s.post_auth("/v1/admin/clients", &t.admin, body.clone()).await;
        let problem = crate::common::assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
        assert!(problem["errors"].as_array().unwrap().iter().any(|e| e["field"] == field), "{body}: {problem}");
    }
    // Loopback http and native-app schemes are fine.
    create_client(&t.s, &t.admin, json!({"client_name": "CLI", "redirect_uris": ["http://127.0.0.1:8765/cb", "com.example.app:/cb"], "token_endpoint_auth_method": "none"})).await;
    // A member may not manage clients; list pages.
    let member = t.s.login("ann@example.com", PASSWORD).await.access;
    assert_eq!(t.s.get_auth("/v1/admin/clients", &member).await.status(), StatusCode::FORBIDDEN);
    let page: Value = t.s.get_auth("/v1/admin/clients?limit=1", &t.admin).await.json().await.unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string());
    // PATCH changes metadata.
    let res =
        t.s.send(
            reqwest::Method::PATCH,
            &format!("/v1/admin/clients/{}", t.client_id),
            &t.admin,
            Some(json!({"client_name": "Renamed", "trusted": true})),
        )
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!((body["client_name"].as_str(), body["trusted"].as_bool()), (Some("Renamed"), Some(true)), "{body}");
    t.s.stop().await;
}

async fn revocation(backend: Backend) {
    let data = Data::new(&backend).await;
    let t = setup(&backend, &data).await;
    let mut b = Browser::new(&t.s);
    let done = browser_flow(&mut b, &authorize_url(&t.client_id, &[])).await;
    let (_, tokens) = exchange(&t, &done.redirect_params()["code"], VERIFIER).await;
    let (access, refresh) = (tokens["access_token"].as_str().unwrap(), tokens["refresh_token"].as_str().unwrap());
    // Another client cannot revoke it; unknown tokens still get 200.
    let other = create_client(&t.s, &t.admin, json!({"client_name": "Other", "redirect_uris": [REDIRECT]})).await;
    let revoke = |id: String, secret: String, tok: String| {
        let s = &t.s;
        async move {
            s.client
                .post(s.url("/oauth/revoke"))
                .basic_auth(id, Some(secret))
                .form(&[("token", tok)])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let oid = other["client_id"].as_str().unwrap().to_owned();
    let osec = other["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(revoke(oid, osec, refresh.into()).await, StatusCode::OK);
    assert_eq!(introspect(&t, refresh).await["active"], true);
    assert_eq!(revoke(t.client_id.clone(), t.secret.clone(), "garbage".into()).await, StatusCode::OK);
    assert_eq!(revoke(t.client_id.clone(), t.secret.clone(), refresh.into()).await, StatusCode::OK);
    assert_eq!(introspect(&t, refresh).await, json!({"active": false}));
    assert_eq!(introspect(&t, access).await, json!({"active": false}));
    // API keys introspect too, for clients marked as resource servers (others
    // learn nothing about tokens that are not theirs).
    let member = t.s.login("ann@example.com", PASSWORD).await.access;
    let key: Value =
        t.s.post_auth("/v1/api-keys", &member, json!({"name": "k", "scopes": []})).await.json().await.unwrap();
    assert_eq!(introspect(&t, key["key"].as_str().unwrap()).await, json!({"active": false}));
    let res =
        t.s.send(
            reqwest::Method::PATCH,
            &format!("/v1/admin/clients/{}", t.client_id),
            &t.admin,
            Some(json!({"introspection": true})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let i = introspect(&t, key["key"].as_str().unwrap()).await;
    assert_eq!((i["active"].as_bool(), i["sub"].as_str()), (Some(true), Some(t.user_id.as_str())), "{i}");
    // Introspection needs client authentication.
    let res = t.s.client.post(t.s.url("/oauth/introspect")).form(&[("token", access)]).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    t.s.stop().await;
}

async fn clients_cli(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |_| {}).await;
    let out = crate::keys::cli(
        &data,
        &["clients", "create", "--name", "Batch job", "--grant-type", "client_credentials", "--scope", "reports:read"],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (id, secret) = (made["client_id"].as_str().unwrap(), made["client_secret"].as_str().unwrap());
    let (status, tok, _) = token(&s, Some((id, secret)), &[("grant_type", "client_credentials")]).await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    let out = crate::keys::cli(&data, &["clients", "list"], None);
    assert!(String::from_utf8_lossy(&out.stdout).contains(id));
    // A wrong flag value gets one clear line, not a panic.
    let out =
        crate::keys::cli(&data, &["clients", "create", "--name", "x", "--redirect-uri", "http://example.com/cb"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("redirect_uris[0]") && err.contains("loopback"), "{err}");
    let out = crate::keys::cli(&data, &["clients", "delete", id], None);
    assert!(out.status.success());
    s.stop().await;
}

crate::backend_tests!(
    failed_client_auth_is_limited,
    scopes_follow_the_people_behind_them,
    clients_cli,
    code_flow,
    pkce_and_code_rules,
    authorize_errors,
    hosted_pages_guard,
    trusted_public_and_logout,
    trusted_grants_follow_permissions,
    client_credentials,
    private_key_jwt,
    discovery_and_admin_rules,
    revocation,
);
