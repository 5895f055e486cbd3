//! Interop: third-party OAuth/OIDC clients drive the real server unmodified — npm
//! `openid-client` and `jose`, PyPI `authlib`, and headless Chromium through
//! `playwright-core` on the hosted sign-in page. They are the user's truth.
//!
//! The scripts live in `tests/interop/`; `scripts/test` installs their packages.
//! Outside CI a missing runtime skips with a loud message; in CI it fails.

use std::{path::PathBuf, process::Command, time::Duration};

use serde_json::{Value, json};

use crate::{
    common::{Backend, Data, PASSWORD, TestServer},
    oauth::create_client,
};

pub(crate) fn interop_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop"))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty())
}

/// Whether `what` is available; in CI its absence fails the test.
pub(crate) fn require(ok: bool, what: &str) -> bool {
    if !ok {
        assert!(!in_ci(), "{what} is required in CI (scripts/test installs it)");
        eprintln!("skipping: {what} not found (scripts/test installs it)");
    }
    ok
}

pub(crate) fn node_ready() -> bool {
    let node = Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    require(
        node && interop_dir().join("oidc/node_modules/openid-client").is_dir(),
        "node with tests/interop/oidc/node_modules (npm ci)",
    )
}

/// Runs a script with a time limit; returns its stdout as JSON, failing with its output.
async fn run(program: &str, args: Vec<String>, env: Vec<(&str, String)>, what: &str) -> Value {
    let mut cmd = Command::new(program);
    cmd.args(&args).current_dir(interop_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(90), tokio::task::spawn_blocking(move || cmd.output()))
        .await
        .unwrap_or_else(|_| panic!("{what} timed out"))
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{what}: last line is not JSON ({e}): {stdout}"))
}

async fn openid_client_and_jose(backend: Backend) {
    if !node_ready() {
        return;
    }
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |_| {}).await;
    let admin = s.admin("admin@example.com").await.access;
    let redirect = "http://127.0.0.1:9/cb";
    let web = create_client(
        &s,
        &admin,
        json!({"client_name": "Node app", "redirect_uris": [redirect],
        "grant_types": ["authorization_code", "refresh_token"]}),
    )
    .await;
    let svc = create_client(
        &s,
        &admin,
        json!({"client_name": "Node service", "grant_types": ["client_credentials"],
        "scope": "reports:read reports:write"}),
    )
    .await;
    s.register("nodeuser@example.com", PASSWORD).await;
    let env = vec![
        ("ISSUER", s.base.clone()),
        ("CLIENT_ID", web["client_id"].as_str().unwrap().to_owned()),
        ("CLIENT_SECRET", web["client_secret"].as_str().unwrap().to_owned()),
        ("REDIRECT_URI", redirect.to_owned()),
        ("USER_EMAIL", "nodeuser@example.com".to_owned()),
        ("USER_PASSWORD", PASSWORD.to_owned()),
        ("CC_CLIENT_ID", svc["client_id"].as_str().unwrap().to_owned()),
        ("CC_CLIENT_SECRET", svc["client_secret"].as_str().unwrap().to_owned()),
        ("CC_SCOPE", "reports:read".to_owned()),
    ];
    let out = run("node", vec!["oidc/openid_client.mjs".into()], env, "openid-client").await;
    assert_eq!(out["ok"], true, "{out}");
    s.stop().await;
}

/// Chromium's path, if it is there (in CI it must be).
fn chromium() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let ok = node_ready() && require(std::path::Path::new(&chromium).exists(), "chromium (apt-get install chromium)");
    ok.then_some(chromium)
}

/// A trusted public client whose callback listens on a free port, and its user
/// `browser@example.com`: (client id, port).
async fn browser_app(s: &TestServer) -> (String, u16) {
    let admin = s.admin("admin@example.com").await.access;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let spa = create_client(
        s,
        &admin,
        json!({"client_name": "Browser app", "trusted": true,
        "redirect_uris": [format!("http://127.0.0.1:{port}/callback")], "token_endpoint_auth_method": "none"}),
    )
    .await;
    s.register("browser@example.com", PASSWORD).await;
    (spa["client_id"].as_str().unwrap().to_owned(), port)
}

async fn browser_sign_in(backend: Backend) {
    let Some(chromium) = chromium() else { return };
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |_| {}).await;
    let (client_id, port) = browser_app(&s).await;
    let env = vec![
        ("ISSUER", s.base.clone()),
        ("CLIENT_ID", client_id.clone()),
        ("CALLBACK_PORT", port.to_string()),
        ("USER_EMAIL", "browser@example.com".to_owned()),
        ("USER_PASSWORD", PASSWORD.to_owned()),
        ("CHROMIUM", chromium),
    ];
    let out = run("node", vec!["oidc/browser.mjs".into()], env, "playwright browser test").await;
    assert_eq!(out["ok"], true, "{out}");
    s.stop().await;
}

/// Passkeys in a real browser: registration on the hosted enrolment page and
/// passkey-first sign-in, with Chromium's virtual authenticator.
async fn browser_passkeys(backend: Backend) {
    let Some(chromium) = chromium() else { return };
    let data = Data::new(&backend).await;
    let (s, _) = crate::passkeys::localhost_server(&data, |_| {}).await;
    let (client_id, port) = browser_app(&s).await;
    s.stop().await;
    let (s, origin) = crate::passkeys::localhost_server(&data, |cfg| {
        cfg.accounts.mfa = portcullis::config::MfaPolicy::Required;
    })
    .await;
    let env = vec![
        ("ISSUER", origin),
        ("CLIENT_ID", client_id.clone()),
        ("CALLBACK_PORT", port.to_string()),
        ("USER_EMAIL", "browser@example.com".to_owned()),
        ("USER_PASSWORD", PASSWORD.to_owned()),
        ("CHROMIUM", chromium),
    ];
    let out = run("node", vec!["oidc/passkey.mjs".into()], env, "playwright passkey test").await;
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["enrolled_amr"], json!(["pwd", "swk", "mfa"]), "{out}");
    assert_eq!(out["passkey_amr"], json!(["swk", "mfa"]), "{out}");
    assert_eq!(out["acr"], "mfa");
    assert!(out["sign_count"].as_i64().unwrap() >= 1, "{out}");
    s.stop().await;
}

async fn authlib_clients(backend: Backend) {
    let ok =
        Command::new("python3").args(["-c", "import authlib, requests"]).output().is_ok_and(|o| o.status.success());
    if !require(ok, "python3 with authlib and requests (pip install -r tests/interop/requirements.txt)") {
        return;
    }
    let key = run("python3", vec!["authlib_client.py".into(), "genkey".into()], Vec::new(), "authlib genkey").await;
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |_| {}).await;
    let admin = s.admin("admin@example.com").await.access;
    // The basic client is also a resource server: it introspects the other
    // client's token, which only clients marked `introspection` may.
    let basic = create_client(
        &s,
        &admin,
        json!({"client_name": "Py basic", "grant_types": ["client_credentials"],
        "scope": "reports:read", "introspection": true}),
    )
    .await;
    let signed = create_client(
        &s,
        &admin,
        json!({"client_name": "Py JWT", "grant_types": ["client_credentials"],
        "scope": "reports:read", "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [key["jwk"]]}}),
    )
    .await;
    let env = vec![
        ("ISSUER", s.base.clone()),
        ("BASIC_CLIENT_ID", basic["client_id"].as_str().unwrap().to_owned()),
        ("BASIC_CLIENT_SECRET", basic["client_secret"].as_str().unwrap().to_owned()),
        ("JWT_CLIENT_ID", signed["client_id"].as_str().unwrap().to_owned()),
        ("JWT_PRIVATE_PEM", key["private_pem"].as_str().unwrap().to_owned()),
        ("JWT_KID", key["jwk"]["kid"].as_str().unwrap().to_owned()),
        ("SCOPE", "reports:read".to_owned()),
    ];
    let out = run("python3", vec!["authlib_client.py".into(), "run".into()], env, "authlib").await;
    assert_eq!(out["ok"], true, "{out}");
    s.stop().await;
}

crate::backend_tests!(openid_client_and_jose, browser_sign_in, browser_passkeys, authlib_clients);
