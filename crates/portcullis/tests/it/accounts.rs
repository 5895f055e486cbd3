//! Registration, login and the account itself.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{Backend, Data, PASSWORD, TestServer, assert_problem, jwt_part};

/// A range server in the k-anonymity format: it knows "plum orbit ferry candle"
/// as breached, and takes `delay` to answer.
async fn range_server(delay: std::time::Duration) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::sync::{Arc, Mutex};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    // SHA-1 of "plum orbit ferry candle", upper-case hex.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, b"plum orbit ferry candle");
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let log = log.clone();
            let hex = hex.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split_whitespace().nth(1).unwrap_or("").to_owned();
                log.lock().unwrap().push(path.clone());
                tokio::time::sleep(delay).await;
                let (prefix, suffix) = hex.split_at(5);
                let body = if path == format!("/range/{prefix}") {
                    format!("0018A45C4D1DEF81644B54AB7F969B88D65:1\r\n{suffix}:42\r\n")
                } else {
                    "0018A45C4D1DEF81644B54AB7F969B88D65:1\r\n".to_owned()
                };
                let res =
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                let _ = sock.write_all(res.as_bytes()).await;
            });
        }
    });
    (base, seen)
}

/// `security.breached_password_api`: a breached password is refused at sign-up,
/// only five hex digits of its hash leave the server, and a service that does not
/// answer in time never blocks sign-up.
async fn breached_passwords_are_refused_and_a_slow_service_never_blocks(backend: Backend) {
    let data = Data::new(&backend).await;
    let (base, seen) = range_server(std::time::Duration::ZERO).await;
    let s = TestServer::start_on(&data, |cfg| cfg.security.breached_password_api = Some(base.clone())).await;
    let res =
        s.post("/v1/auth/register", json!({"email": "a@example.com", "password": "plum orbit ferry candle"})).await;
    let problem = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    assert_eq!(problem["errors"][0]["code"], "breached");
    s.register("b@example.com", "quiet walnut harbor lamp").await;
    let paths = seen.lock().unwrap().clone();
    assert!(paths.iter().all(|p| p.len() == "/range/".len() + 5), "{paths:?}");
    s.stop().await;
    let (slow, _) = range_server(std::time::Duration::from_secs(4)).await;
    let s = TestServer::start_on(&data, |cfg| cfg.security.breached_password_api = Some(slow.clone())).await;
    let started = std::time::Instant::now();
    s.register("c@example.com", "plum orbit ferry candle").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(4), "the lookup was cut short");
    s.stop().await;
}

crate::backend_tests!(
    register_login_me,
    register_validates_each_field,
    duplicate_email_conflicts_case_insensitively,
    wrong_password_and_unknown_email_look_the_same,
    operator_cli_creates_admin,
    breached_passwords_are_refused_and_a_slow_service_never_blocks,
);

async fn register_login_me(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let reg =
        srv.post("/v1/auth/register", json!({"email": " Ann@Example.COM ", "password": PASSWORD, "name": "Ann"})).await;
    assert_eq!(reg.status(), StatusCode::CREATED);
    let user = reg.json::<serde_json::Value>().await.unwrap()["user"].clone();
    assert_eq!(user["email"], "ann@example.com");
    assert_eq!(user["name"], "Ann");
    assert_eq!(user["roles"], json!(["member"]));
    assert!(user["id"].as_str().unwrap().starts_with("usr_"));
    assert!(user.get("password_hash").is_none());

    let res = srv.post("/v1/auth/login", json!({"email": "ANN@example.com", "password": PASSWORD})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["user"]["id"], user["id"]);
    let access = body["access_token"].as_str().unwrap();
    assert_eq!(body["refresh_token"].as_str().unwrap().len(), 43, "256 random bits, base64url");

    let header = jwt_part(access, 0);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "at+jwt");
    assert!(header["kid"].is_string());
    let claims = jwt_part(access, 1);
    for c in ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "sid", "roles", "scope"] {
        assert!(claims.get(c).is_some(), "claim {c} missing: {claims}");
    }
    assert_eq!(claims["sub"], user["id"]);
    assert_eq!(claims["iss"], srv.base);
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 900);

    let me = srv.get_auth("/v1/me", access).await;
    assert_eq!(me.status(), StatusCode::OK);
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(me["id"], user["id"]);
    assert_eq!(me["email"], "ann@example.com");

    // Without a token: 401 missing_token and a bare Bearer challenge (RFC 6750 §3.1).
    let res = srv.client.get(srv.url("/v1/me")).send().await.unwrap();
    assert_eq!(res.headers()["www-authenticate"], r#"Bearer realm="portcullis""#);
    assert_problem(res, StatusCode::UNAUTHORIZED, "missing_token").await;
    srv.stop().await;
}

async fn register_validates_each_field(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let cases = [
        (json!({"email": "not-an-email", "password": PASSWORD}), "email", "invalid_format"),
        (json!({"email": "a@example.com", "password": "short"}), "password", "too_short"),
        (json!({"email": "a@example.com", "password": "x".repeat(257)}), "password", "too_long"),
        (json!({"email": "a@example.com", "password": "password123"}), "password", "too_common"),
        (json!({"email": "a@example.com", "password": "a@example.com"}), "password", "too_common"),
        (json!({"email": "a@example.com", "password": "Summer2024!"}), "password", "too_weak"),
        (json!({"email": "a@example.com"}), "password", "required"),
        (json!({"email": "a@example.com", "password": 12345678}), "password", "invalid_type"),
        (json!({"email": "a@example.com", "password": PASSWORD, "admin": true}), "admin", "unknown_field"),
    ];
    for (body, field, code) in cases {
        let res = srv.post("/v1/auth/register", body.clone()).await;
        let problem = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
        let errors = problem["errors"].as_array().unwrap();
        assert!(errors.iter().any(|e| e["field"] == field && e["code"] == code), "{body} → {problem}");
    }
    // Both fields wrong: both reported at once.
    let res = srv.post("/v1/auth/register", json!({"email": "nope", "password": "short"})).await;
    let problem = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    assert_eq!(problem["errors"].as_array().unwrap().len(), 2, "{problem}");
    // Nothing was half-written: the email is still free.
    srv.register("a@example.com", PASSWORD).await;
    srv.stop().await;
}

async fn duplicate_email_conflicts_case_insensitively(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    srv.register("bob@example.com", PASSWORD).await;
    let res =
        srv.post("/v1/auth/register", json!({"email": "BOB@example.com", "password": "another good passphrase"})).await;
    assert_problem(res, StatusCode::CONFLICT, "conflict").await;
    // The original password still works: the duplicate changed nothing.
    srv.login("bob@example.com", PASSWORD).await;
    srv.stop().await;
}

async fn wrong_password_and_unknown_email_look_the_same(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    srv.register("carol@example.com", PASSWORD).await;
    let wrong = srv.post("/v1/auth/login", json!({"email": "carol@example.com", "password": "not her password"})).await;
    let unknown =
        srv.post("/v1/auth/login", json!({"email": "nobody@example.com", "password": "not her password"})).await;
    let malformed = srv.post("/v1/auth/login", json!({"email": "no-at-sign", "password": "not her password"})).await;
    // RFC 9110 §15.5.2: every 401 carries a challenge, the same for both.
    assert_eq!(wrong.headers()["www-authenticate"], r#"Bearer realm="portcullis""#);
    assert_eq!(wrong.headers()["www-authenticate"], unknown.headers()["www-authenticate"]);
    let a = assert_problem(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let b = assert_problem(unknown, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let c = assert_problem(malformed, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    assert_eq!(a, b);
    assert_eq!(a, c);
    srv.stop().await;
}

async fn operator_cli_creates_admin(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let out = crate::keys::cli(
        &data,
        &["users", "create", "--email", "Root@Example.com", "--role", "admin", "--password-stdin"],
        Some("an operator passphrase\n"),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("root@example.com"));
    let tokens = srv.login("root@example.com", "an operator passphrase").await;
    let claims = jwt_part(&tokens.access, 1);
    assert_eq!(claims["roles"], json!(["admin"]));
    assert!(claims["scope"].as_str().unwrap().split(' ').any(|s| s == "admin:users:read"), "{claims}");
    // A weak password is refused with the reason, and nothing is created.
    let out = crate::keys::cli(
        &data,
        &["users", "create", "--email", "weak@example.com", "--password-stdin"],
        Some("password\n"),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password"), "{}", String::from_utf8_lossy(&out.stderr));
    let res = srv.post("/v1/auth/login", json!({"email": "weak@example.com", "password": "password"})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    srv.stop().await;
}
