//! Bearer verification: every forgery we know of is refused, and third-party
//! verifiers accept our real tokens from the JWKS alone.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Backend, Data, TestServer, assert_problem, jwt_build, jwt_part};

crate::backend_tests!(
    expired_token_is_refused,
    tampered_payload_is_refused,
    token_of_another_server_is_refused,
    alg_none_is_refused,
    hs256_key_confusion_is_refused,
    unknown_kid_is_refused,
    es256_and_eddsa_keys_work,
    pyjwt_verifies_from_jwks_alone,
);

async fn invalid(srv: &TestServer, token: &str) {
    let res = srv.get_auth("/v1/me", token).await;
    let challenge = res.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(challenge.starts_with(r#"Bearer realm="portcullis", error="invalid_token""#), "{challenge}");
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

async fn expired_token_is_refused(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |c| {
        c.tokens.access_ttl = "1s".parse().unwrap();
        c.tokens.leeway = "0s".parse().unwrap();
    })
    .await;
    let t = srv.user("exp@example.com").await;
    assert_eq!(t.body["expires_in"], 1);
    assert_eq!(srv.me_status(&t.access).await, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let res = srv.get_auth("/v1/me", &t.access).await;
    assert!(res.headers()["www-authenticate"].to_str().unwrap().contains("invalid_token"));
    assert_problem(res, StatusCode::UNAUTHORIZED, "token_expired").await;
    // The refresh token still gets a fresh access token.
    assert_eq!(srv.refresh(&t.refresh).await.status(), StatusCode::OK);
    srv.stop().await;
}

async fn tampered_payload_is_refused(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let t = srv.user("tamper@example.com").await;
    let mut claims = jwt_part(&t.access, 1);
    claims["roles"] = json!(["admin"]);
    claims["scope"] = json!("admin:users:write");
    let parts: Vec<&str> = t.access.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], portcullis::crypto::b64url(claims.to_string().as_bytes()), parts[2]);
    invalid(&srv, &forged).await;
    // A flipped signature bit, a truncated token, and junk.
    let mut sig = portcullis::crypto::b64url_decode(parts[2]).unwrap();
    sig[0] ^= 1;
    invalid(&srv, &format!("{}.{}.{}", parts[0], parts[1], portcullis::crypto::b64url(&sig))).await;
    invalid(&srv, &format!("{}.{}", parts[0], parts[1])).await;
    invalid(&srv, "not-a-jwt").await;
    srv.stop().await;
}

async fn token_of_another_server_is_refused(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let other_data = Data::new(&Backend::Sqlite).await;
    // Same issuer and audience: only the key differs.
    let other = TestServer::start_on(&other_data, |c| c.issuer = Some(srv.base.clone())).await;
    let foreign = other.user("mallory@example.com").await;
    invalid(&srv, &foreign.access).await;

    // Their signature under OUR kid: a bad signature, not a pass.
    let ours = srv.user("victim@example.com").await;
    let mut header = jwt_part(&foreign.access, 0);
    header["kid"] = jwt_part(&ours.access, 0)["kid"].clone();
    let parts: Vec<&str> = foreign.access.split('.').collect();
    let relabeled = format!("{}.{}.{}", portcullis::crypto::b64url(header.to_string().as_bytes()), parts[1], parts[2]);
    invalid(&srv, &relabeled).await;
    other.stop().await;
    srv.stop().await;
}

async fn alg_none_is_refused(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let t = srv.user("none@example.com").await;
    let mut header = jwt_part(&t.access, 0);
    let claims = jwt_part(&t.access, 1);
    for alg in ["none", "None", "NONE"] {
        header["alg"] = json!(alg);
        let token = jwt_build(&header, &claims, b"");
        invalid(&srv, &token).await;
        invalid(&srv, token.trim_end_matches('.')).await;
    }
    srv.stop().await;
}

async fn hs256_key_confusion_is_refused(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let t = srv.user("hmac@example.com").await;
    let jwks: Value = srv.client.get(srv.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
    let jwk = &jwks["keys"][0];
    let mut header = jwt_part(&t.access, 0);
    header["alg"] = json!("HS256");
    let claims = jwt_part(&t.access, 1);
    // The classic attack: HMAC keyed with the public key, in each form a verifier
    // might have it (the JWK JSON, the raw modulus).
    let secrets =
        [jwk.to_string().into_bytes(), portcullis::crypto::b64url_decode(jwk["n"].as_str().unwrap()).unwrap()];
    for secret in secrets {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header {
                alg: jsonwebtoken::Algorithm::HS256,
                kid: header["kid"].as_str().map(str::to_owned),
                typ: Some("at+jwt".into()),
                ..Default::default()
            },
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap();
        invalid(&srv, &token).await;
    }
    srv.stop().await;
}

async fn unknown_kid_is_refused(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let t = srv.user("kid@example.com").await;
    let parts: Vec<&str> = t.access.split('.').collect();
    let mut header = jwt_part(&t.access, 0);
    header["kid"] = json!("no-such-key");
    invalid(&srv, &format!("{}.{}.{}", portcullis::crypto::b64url(header.to_string().as_bytes()), parts[1], parts[2]))
        .await;
    header.as_object_mut().unwrap().remove("kid");
    invalid(&srv, &format!("{}.{}.{}", portcullis::crypto::b64url(header.to_string().as_bytes()), parts[1], parts[2]))
        .await;
    // A token typed as something other than an access token (e.g. an ID token).
    let mut header = jwt_part(&t.access, 0);
    header["typ"] = json!("JWT");
    invalid(&srv, &format!("{}.{}.{}", portcullis::crypto::b64url(header.to_string().as_bytes()), parts[1], parts[2]))
        .await;
    srv.stop().await;
}

async fn es256_and_eddsa_keys_work(backend: Backend) {
    let data = Data::new(&backend).await;
    for (alg, kty) in [("ES256", "EC"), ("EdDSA", "OKP"), ("RS256", "RSA")] {
        // Changing keys.algorithm rotates to a key of that kind at the next start.
        let srv = TestServer::start_on(&data, |c| c.keys.algorithm = serde_json::from_value(json!(alg)).unwrap()).await;
        let t = srv.user(&format!("{}@example.com", alg.to_lowercase())).await;
        assert_eq!(jwt_part(&t.access, 0)["alg"], alg);
        assert_eq!(srv.me_status(&t.access).await, StatusCode::OK);
        let jwks: Value = srv.client.get(srv.url("/.well-known/jwks.json")).send().await.unwrap().json().await.unwrap();
        let kid = jwt_part(&t.access, 0)["kid"].clone();
        let key = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid).unwrap().clone();
        assert_eq!(key["kty"], kty);
        assert_eq!(key["alg"], alg);
        assert_eq!(key["use"], "sig");
        assert!(key.get("d").is_none() && key.get("p").is_none(), "no private material in the JWKS");
        srv.stop().await;
    }
}

/// Runs a Python script with PyJWT; `None` when Python or PyJWT is missing
/// outside CI (in CI that is a failure).
fn python_with_pyjwt() -> Option<&'static str> {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some("python3");
    }
    if std::env::var("CI").is_ok_and(|v| !v.is_empty()) {
        panic!("python3 with pyjwt and cryptography is required in CI (scripts/test installs them)");
    }
    eprintln!("skipping: python3 with pyjwt + cryptography not found (pip install pyjwt cryptography)");
    None
}

async fn pyjwt_verifies_from_jwks_alone(backend: Backend) {
    let Some(python) = python_with_pyjwt() else {
        return;
    };
    let data = Data::new(&backend).await;
    for alg in ["RS256", "ES256", "EdDSA"] {
        let srv = TestServer::start_on(&data, |c| c.keys.algorithm = serde_json::from_value(json!(alg)).unwrap()).await;
        let t = srv.user(&format!("py-{}@example.com", alg.to_lowercase())).await;
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/pyjwt_verify.py");
        let jwks_url = srv.url("/.well-known/jwks.json");
        let (token, base) = (t.access.clone(), srv.base.clone());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(python).args([script, &jwks_url, &token, &base, &base]).output().unwrap()
        })
        .await
        .unwrap();
        assert!(
            out.status.success(),
            "PyJWT refused our {alg} token:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let verified: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(verified["sub"], t.body["user"]["id"]);
        assert_eq!(verified["alg"], alg);
        srv.stop().await;
    }
}
