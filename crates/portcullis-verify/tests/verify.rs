//! portcullis-verify against the real server: Portcullis runs in-process (the same
//! `server::start` as `portcullis serve`) on a loopback port, on SQLite and on
//! PostgreSQL; a small axum API protected by the extractors runs beside it, and the
//! tests call both over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Json, Router, routing::get};
use portcullis::{config::Config as ServerConfig, server};
use portcullis_verify::{Authenticated, Config, RequireScope, Verifier, VerifyError, scopes};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

scopes!(ReadOrders = "read:orders");

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(backend) = super::Backend::postgres() else { return };
                    super::$name(backend).await
                }
            )*
        }
    };
}

on_both_backends!(
    protected_routes_answer_like_portcullis,
    api_keys_are_checked_and_cached_briefly,
    expired_tokens_are_refused,
    key_rotation_is_picked_up_without_a_restart,
    jwks_fetches_are_bounded_and_survive_an_outage,
);

enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    /// PostgreSQL from `PORTCULLIS_TEST_DATABASE_URL`; skipped without it, except in CI.
    fn postgres() -> Option<Self> {
        match std::env::var("PORTCULLIS_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Some(Self::Postgres(url)),
            _ if std::env::var("CI").is_ok_and(|v| !v.is_empty()) => {
                panic!("CI is set but PORTCULLIS_TEST_DATABASE_URL is not")
            }
            _ => None,
        }
    }
}

/// A running Portcullis with an admin, a user holding `read:orders` and one
/// without, and an API key that may verify keys.
struct Portcullis {
    base: String,
    cfg: ServerConfig,
    http: Client,
    reader: String,
    plain: String,
    verifier_key: String,
    _dir: tempfile::TempDir,
    running: Option<server::Running>,
}

async fn fresh_pg_database(admin: &str) -> String {
    use sqlx::Connection;
    let name = format!("pcl_verify_{}", portcullis::crypto::new_id("t", portcullis::clock::now_ms()).replace('_', ""));
    let mut conn = sqlx::PgConnection::connect(admin).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    let (base, query) = admin.split_once('?').map(|(b, q)| (b, format!("?{q}"))).unwrap_or((admin, String::new()));
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{name}{query}")
}

impl Portcullis {
    async fn start(backend: &Backend, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ServerConfig::for_test(dir.path().to_path_buf());
        if let Backend::Postgres(admin) = backend {
            cfg.database_url = Some(fresh_pg_database(admin).await);
        }
        cfg.keys.reload_interval = "1s".parse().unwrap();
        tweak(&mut cfg);
        let running = server::start(cfg.clone()).await.unwrap();
        let base = format!("http://{}", running.addr);
        let http = Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let mut me = Self {
            base,
            cfg,
            http,
            reader: String::new(),
            plain: String::new(),
            verifier_key: String::new(),
            _dir: dir,
            running: Some(running),
        };
        let admin = me.user("admin@example.com").await;
        let db = portcullis::store::Db::connect(&me.cfg.database_url()).await.unwrap();
        db.user_grant_role(&admin, "admin", 0).await.unwrap();
        db.close().await;
        let admin = me.login("admin@example.com").await;
        let role = json!({"name": "orders", "permissions": ["read:orders"]});
        assert_eq!(me.call("POST", "/v1/admin/roles", &admin, Some(role)).await.0, StatusCode::CREATED);
        let reader = me.user("reader@example.com").await;
        let grant = json!({"role": "orders"});
        let (status, _) = me.call("POST", &format!("/v1/admin/users/{reader}/roles"), &admin, Some(grant)).await;
        assert_eq!(status, StatusCode::OK);
        me.reader = me.login("reader@example.com").await;
        me.user("plain@example.com").await;
        me.plain = me.login("plain@example.com").await;
        // The resource server's own identity: a key that may verify keys.
        let role = json!({"name": "verifier", "permissions": ["api_keys:verify"]});
        assert_eq!(me.call("POST", "/v1/admin/roles", &admin, Some(role)).await.0, StatusCode::CREATED);
        let service = me.user("service@example.com").await;
        let grant = json!({"role": "verifier"});
        let (status, _) = me.call("POST", &format!("/v1/admin/users/{service}/roles"), &admin, Some(grant)).await;
        assert_eq!(status, StatusCode::OK);
        let service = me.login("service@example.com").await;
        me.verifier_key = me.api_key(&service, &["api_keys:verify"]).await;
        me
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method.parse().unwrap(), self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Registers `email`; returns the user id.
    async fn user(&self, email: &str) -> String {
        let res = self.http.post(self.url("/v1/auth/register")).json(&json!({"email": email, "password": PASSWORD}));
        let body: Value = res.send().await.unwrap().json().await.unwrap();
        body["user"]["id"].as_str().unwrap().to_owned()
    }

    async fn login(&self, email: &str) -> String {
        let res = self.http.post(self.url("/v1/auth/login")).json(&json!({"email": email, "password": PASSWORD}));
        let body: Value = res.send().await.unwrap().json().await.unwrap();
        body["access_token"].as_str().unwrap_or_else(|| panic!("login {email}: {body}")).to_owned()
    }

    async fn api_key(&self, token: &str, scopes: &[&str]) -> String {
        let (status, body) =
            self.call("POST", "/v1/api-keys", token, Some(json!({"name": "test", "scopes": scopes}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["key"].as_str().unwrap().to_owned()
    }

    fn config(&self) -> Config {
        Config::new(self.base.clone())
    }

    async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
    }
}

/// The protected API: `/whoami` for any credential, `/orders` for `read:orders`.
async fn protected_api(verifier: Verifier) -> String {
    async fn whoami(auth: Authenticated) -> Json<Value> {
        Json(json!({"user_id": auth.user_id, "session_id": auth.session_id, "api_key_id": auth.api_key_id}))
    }
    async fn orders(auth: RequireScope<ReadOrders>) -> Json<Value> {
        Json(json!({"orders": [], "for": auth.user_id}))
    }
    let app = Router::new().route("/whoami", get(whoami)).route("/orders", get(orders)).with_state(verifier);
    serve(app).await
}

/// Serves `app` on a loopback port until the test ends.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn get_with(http: &Client, url: &str, header: Option<(&str, &str)>) -> (StatusCode, String, Value) {
    let mut req = http.get(url);
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let challenge = res.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    if status.is_client_error() {
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    (status, challenge, res.json().await.unwrap_or(Value::Null))
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn decode_part(token: &str, i: usize) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn decode_header(token: &str) -> Value {
    decode_part(token, 0)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn protected_routes_answer_like_portcullis(backend: Backend) {
    let pc = Portcullis::start(&backend, |_| {}).await;
    let api = protected_api(Verifier::new(pc.config()).unwrap()).await;
    let orders = format!("{api}/orders");
    let http = &pc.http;

    let (status, challenge, body) = get_with(http, &orders, None).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("missing_token")));
    assert_eq!(challenge, r#"Bearer realm="portcullis""#);

    // A forged signature: the reader's token with its signature's bytes changed.
    let (head, sig) = pc.reader.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{head}.{flipped}{}", &sig[1..]);
    let (status, challenge, body) = get_with(http, &orders, Some(("authorization", &bearer(&forged)))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_token")), "{body}");
    assert!(challenge.contains(r#"error="invalid_token""#), "{challenge}");

    // `alg: none` and an HMAC token signed with the public JWKS as its secret.
    let claims = head.split('.').nth(1).unwrap();
    for alg_header in [r#"{"alg":"none","typ":"at+jwt"}"#, r#"{"alg":"HS256","typ":"at+jwt","kid":"x"}"#] {
        use base64::Engine;
        let h = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(alg_header);
        let token = format!("{h}.{claims}.c2ln");
        let (status, _, body) = get_with(http, &orders, Some(("authorization", &bearer(&token)))).await;
        assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_token")), "{alg_header}");
    }

    // Authenticated without the scope: 403 naming it.
    let (status, challenge, body) = get_with(http, &orders, Some(("authorization", &bearer(&pc.plain)))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("insufficient_scope")));
    assert_eq!(body["required_scopes"], json!(["read:orders"]));
    assert!(challenge.contains(r#"error="insufficient_scope", scope="read:orders""#), "{challenge}");
    let (status, _, body) = get_with(http, &format!("{api}/whoami"), Some(("authorization", &bearer(&pc.plain)))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["session_id"].as_str().unwrap().starts_with("ses_"), "{body}");

    let (status, _, body) = get_with(http, &orders, Some(("authorization", &bearer(&pc.reader)))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["for"].as_str().unwrap().starts_with("usr_"), "{body}");

    // API keys are off unless configured: the header alone is no credential.
    let key = pc.api_key(&pc.login("reader@example.com").await, &["read:orders"]).await;
    let (status, _, body) = get_with(http, &orders, Some(("x-api-key", &key))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("missing_token")));

    // The algorithm is the verifier's choice, never the token's: HS256 under the real
    // key id is refused before any key is used, and so is an ID-token type.
    let kid = decode_header(&pc.reader)["kid"].as_str().unwrap().to_owned();
    let claims: Value = decode_part(&pc.reader, 1);
    let mut hs = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs.kid = Some(kid.clone());
    hs.typ = Some("at+jwt".into());
    let jwks = reqwest::get(pc.url("/.well-known/jwks.json")).await.unwrap().text().await.unwrap();
    let hmac = jsonwebtoken::encode(&hs, &claims, &jsonwebtoken::EncodingKey::from_secret(jwks.as_bytes())).unwrap();
    let verifier = Verifier::new(pc.config()).unwrap();
    assert_eq!(verifier.verify_token(&hmac).await, Err(VerifyError::Invalid("algorithm not allowed")));
    let (_, body, sig) = {
        let mut parts = pc.reader.split('.');
        (parts.next().unwrap(), parts.next().unwrap().to_owned(), parts.next().unwrap().to_owned())
    };
    let id_typ = b64(&json!({"alg": decode_header(&pc.reader)["alg"], "kid": kid, "typ": "JWT"}).to_string());
    let as_id_token = format!("{id_typ}.{body}.{sig}");
    assert_eq!(verifier.verify_token(&as_id_token).await, Err(VerifyError::Invalid("not an access token")));
    // Plain http leaves loopback only when asked to.
    assert!(matches!(Verifier::new(Config::new("http://auth.example.com")), Err(VerifyError::Config(_))));
    assert!(Verifier::new(Config::new("http://auth.example.com").insecure_http(true)).is_ok());

    // Another audience or issuer: the same good token is refused.
    let wrong = [
        pc.config().audience("https://orders.example.com"),
        Config::new("https://elsewhere.example.com").base_url(pc.base.clone()),
    ];
    for config in wrong {
        let verifier = Verifier::new(config).unwrap();
        assert!(matches!(verifier.verify_token(&pc.reader).await, Err(VerifyError::Invalid(_))));
    }
    pc.stop().await;
}

async fn api_keys_are_checked_and_cached_briefly(backend: Backend) {
    let pc = Portcullis::start(&backend, |_| {}).await;
    let ttl = Duration::from_secs(1);
    let verifier = Verifier::new(pc.config().api_keys(pc.verifier_key.clone()).api_key_cache_ttl(ttl)).unwrap();
    let api = protected_api(verifier.clone()).await;
    let orders = format!("{api}/orders");
    let fresh = pc.login("reader@example.com").await;
    let key = pc.api_key(&fresh, &["read:orders"]).await;
    let narrow = pc.api_key(&fresh, &[]).await;

    let (status, _, body) = get_with(&pc.http, &orders, Some(("x-api-key", &key))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = get_with(&pc.http, &format!("{api}/whoami"), Some(("x-api-key", &key))).await;
    assert!(status == StatusCode::OK && body["api_key_id"].as_str().unwrap().starts_with("key_"), "{body}");
    let (status, _, body) = get_with(&pc.http, &orders, Some(("x-api-key", &narrow))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("insufficient_scope")));
    let (status, _, body) = get_with(&pc.http, &orders, Some(("x-api-key", "pcl_not_a_real_key"))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_token")));

    // Revoked: refused once the cached verdict is older than the TTL.
    let auth = verifier.verify_api_key(&key).await.unwrap();
    let id = auth.api_key_id.unwrap();
    assert_eq!(pc.call("DELETE", &format!("/v1/api-keys/{id}"), &fresh, None).await.0, StatusCode::NO_CONTENT);
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let (status, _, body) = get_with(&pc.http, &orders, Some(("x-api-key", &key))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_token")));

    // A verifier key without `api_keys:verify` is this service's fault: 503, not 401.
    let bad = Verifier::new(pc.config().api_keys(narrow.clone())).unwrap();
    assert!(matches!(bad.verify_api_key(&narrow).await, Err(VerifyError::Unavailable(_))));
    pc.stop().await;
}

async fn expired_tokens_are_refused(backend: Backend) {
    let pc = Portcullis::start(&backend, |c| {
        c.tokens.access_ttl = "1s".parse().unwrap();
        c.tokens.leeway = "0s".parse().unwrap();
    })
    .await;
    let verifier = Verifier::new(pc.config().leeway(Duration::ZERO)).unwrap();
    let api = protected_api(verifier).await;
    let token = pc.login("reader@example.com").await;
    let (status, _, _) = get_with(&pc.http, &format!("{api}/orders"), Some(("authorization", &bearer(&token)))).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, challenge, body) =
        get_with(&pc.http, &format!("{api}/orders"), Some(("authorization", &bearer(&token)))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("token_expired")));
    assert!(challenge.contains(r#"error="invalid_token""#), "{challenge}");
    pc.stop().await;
}

async fn key_rotation_is_picked_up_without_a_restart(backend: Backend) {
    let pc = Portcullis::start(&backend, |_| {}).await;
    let verifier = Verifier::new(pc.config()).unwrap();
    let old = pc.login("reader@example.com").await;
    verifier.verify_token(&old).await.unwrap();

    // Rotate as `portcullis keys rotate` does, from outside the running server.
    let store = server::open_store(&pc.cfg).await.unwrap();
    let keys = server::key_manager(&pc.cfg, &store, false).await.unwrap();
    keys.rotate(portcullis::keys::Algorithm::Es256, Duration::ZERO).await.unwrap();
    store.db.close().await;

    let kid = |t: &str| {
        use base64::Engine;
        let h = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t.split('.').next().unwrap()).unwrap();
        serde_json::from_slice::<Value>(&h).unwrap()["kid"].as_str().unwrap().to_owned()
    };
    // The server signs with the new key within its reload interval; the verifier
    // then accepts it (an unknown kid refetches the JWKS, at most once per 5 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    let new = loop {
        let t = pc.login("reader@example.com").await;
        if kid(&t) != kid(&old) {
            break t;
        }
        assert!(Instant::now() < deadline, "the server did not sign with the new key");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let auth = loop {
        match verifier.verify_token(&new).await {
            Ok(a) => break a,
            Err(VerifyError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Err(e) => panic!("the rotated key was not picked up: {e}"),
        }
    };
    assert!(auth.user_id.is_some());
    // Tokens of the old key keep working until they expire.
    verifier.verify_token(&old).await.unwrap();
    pc.stop().await;
}

/// A JWKS endpoint in front of the real one, counting fetches; `down` makes it
/// answer nothing but 503, as an unreachable server would.
async fn counting_jwks(upstream: String) -> (String, Arc<AtomicUsize>, Arc<std::sync::atomic::AtomicBool>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let body: Value = reqwest::get(format!("{upstream}/.well-known/jwks.json")).await.unwrap().json().await.unwrap();
    let (h, d) = (hits.clone(), down.clone());
    let app = Router::new().route(
        "/.well-known/jwks.json",
        get(move || {
            let (h, d, body) = (h.clone(), d.clone(), body.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                if d.load(Ordering::SeqCst) {
                    return Err(StatusCode::SERVICE_UNAVAILABLE);
                }
                Ok(Json(body))
            }
        }),
    );
    (serve(app).await, hits, down)
}

async fn jwks_fetches_are_bounded_and_survive_an_outage(backend: Backend) {
    let pc = Portcullis::start(&backend, |_| {}).await;
    let (jwks, hits, down) = counting_jwks(pc.base.clone()).await;
    let config = pc.config().base_url(jwks.clone()).jwks_max_age(Duration::from_millis(300));
    let verifier = Verifier::new(config.clone()).unwrap();

    // 20 concurrent first requests: one fetch.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (v, t) = (verifier.clone(), pc.reader.clone());
            tokio::spawn(async move { v.verify_token(&t).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Tokens naming made-up keys: refused, and at most one refetch per interval.
    let (head, rest) = pc.reader.split_once('.').unwrap();
    let _ = head;
    for i in 0..50 {
        use base64::Engine;
        let h = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!(r#"{{"alg":"RS256","typ":"at+jwt","kid":"made-up-{i}"}}"#));
        let err = verifier.verify_token(&format!("{h}.{rest}")).await.unwrap_err();
        // Refused as unknown after a fetch, or as "retry" while the next is not due.
        assert!(matches!(err, VerifyError::Invalid("unknown signing key") | VerifyError::Unavailable(_)), "{err:?}");
    }
    assert!(hits.load(Ordering::SeqCst) <= 2, "{} fetches", hits.load(Ordering::SeqCst));

    // The key server goes away: past max age the verifier tries to refetch (in the
    // background), fails, and the cached keys still verify.
    let quick = config.clone().refetch_interval(Duration::from_millis(100));
    let verifier = Verifier::new(quick.clone()).unwrap();
    verifier.verify_token(&pc.reader).await.unwrap();
    let before = hits.load(Ordering::SeqCst);
    down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    verifier.verify_token(&pc.reader).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while hits.load(Ordering::SeqCst) == before {
        assert!(Instant::now() < deadline, "no refetch was attempted past max age");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    verifier.verify_token(&pc.reader).await.unwrap();

    // But not forever: past `jwks_max_stale` without one good fetch, keys the server
    // may have withdrawn are no longer trusted.
    let short = Verifier::new(quick.jwks_max_stale(Duration::from_millis(500))).unwrap();
    down.store(false, Ordering::SeqCst);
    short.verify_token(&pc.reader).await.unwrap();
    down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(matches!(short.verify_token(&pc.reader).await, Err(VerifyError::Unavailable(_))));
    pc.stop().await;
}
