//! Passkeys over the JSON API, end to end with a software authenticator
//! (`soft_key`): registration, passkey-first sign-in, a passkey as the second
//! factor, recent authentication, single-use challenges under parallel use, the
//! sign counter, user verification, bans and lockout.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    common::{Backend, Data, PASSWORD, TestServer, Tokens, assert_problem, jwt_part},
    soft_key::SoftKey,
};

/// A server whose issuer is `http://localhost:PORT` (WebAuthn needs a name).
pub async fn localhost_server(
    data: &Data,
    tweak: impl FnOnce(&mut portcullis::config::Config),
) -> (TestServer, String) {
    let port = crate::smtp::free_port();
    let origin = format!("http://localhost:{port}");
    let issuer = origin.clone();
    let s = TestServer::start_on(data, |cfg| {
        cfg.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        cfg.issuer = Some(issuer);
        tweak(cfg);
    })
    .await;
    (s, origin)
}

/// Registers a soft passkey for the user of `access`; the key and the reply.
pub async fn register(s: &TestServer, origin: &str, access: &str) -> (SoftKey, Value) {
    let res = s.post_auth("/v1/me/passkeys/register/start", access, json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let start: Value = res.json().await.unwrap();
    let (key, credential) = SoftKey::register(&start["publicKey"], origin);
    let body = json!({"challenge_id": start["challenge_id"], "credential": credential, "name": "Laptop"});
    let res = s.post_auth("/v1/me/passkeys/register/finish", access, body).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    (key, res.json().await.unwrap())
}

async fn start(s: &TestServer, body: Value) -> Value {
    let res = s.post("/v1/auth/passkey/start", body).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

async fn finish(s: &TestServer, body: Value) -> reqwest::Response {
    s.post("/v1/auth/passkey/finish", body).await
}

/// Registration, then passkey-first sign-in; a challenge and an assertion work
/// once, also in parallel; a stale counter or no user verification is refused.
async fn passkey_registration_and_sign_in(backend: Backend) {
    let data = Data::new(&backend).await;
    let (s, origin) = localhost_server(&data, |_| {}).await;
    let ann = s.user("ann@example.com").await;
    let res = s.post_auth("/v1/me/passkeys/register/start", &ann.access, json!({})).await;
    let opts: Value = res.json().await.unwrap();
    let pk = &opts["publicKey"];
    assert_eq!(pk["rp"]["id"], "localhost");
    assert_eq!(pk["user"]["name"], "ann@example.com");
    assert_eq!(pk["authenticatorSelection"]["userVerification"], "required");
    assert_eq!(pk["authenticatorSelection"]["residentKey"], "preferred");
    assert!(opts["challenge_id"].as_str().unwrap().starts_with("wch_"));
    let (mut key, reply) = register(&s, &origin, &ann.access).await;
    assert_eq!(reply["passkey"]["name"], "Laptop");
    assert_eq!(reply["recovery_codes"].as_array().unwrap().len(), 10, "the first factor brings recovery codes");
    // A second registration excludes the first.
    let res = s.post_auth("/v1/me/passkeys/register/start", &ann.access, json!({})).await;
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["publicKey"]["excludeCredentials"][0]["id"], base64_id(&key));
    let list: Value = s.get_auth("/v1/me/passkeys", &ann.access).await.json().await.unwrap();
    let id = list["data"][0]["id"].as_str().unwrap().to_owned();
    let res = s.send(Method::PATCH, &format!("/v1/me/passkeys/{id}"), &ann.access, Some(json!({"name": "Work"}))).await;
    assert_eq!(res.json::<Value>().await.unwrap()["name"], "Work");

    // Passkey-first: no email, no password.
    let c = start(&s, json!({})).await;
    assert!(c["publicKey"].get("allowCredentials").is_none_or(|a| a.as_array().unwrap().is_empty()), "{c}");
    assert!(c.get("mediation").is_none() && c["publicKey"].get("mediation").is_none());
    let assertion = key.assert(&c["publicKey"]);
    let res = finish(&s, json!({"challenge_id": c["challenge_id"], "credential": assertion})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let signed = Tokens::from(res.json::<Value>().await.unwrap());
    assert_eq!(jwt_part(&signed.access, 1)["amr"], json!(["swk", "mfa"]));
    assert_eq!(s.me_status(&signed.access).await, StatusCode::OK);
    // The same answer again: the challenge is spent.
    let res = finish(&s, json!({"challenge_id": c["challenge_id"], "credential": assertion})).await;
    let p = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    assert_eq!(p["errors"][0]["field"], "challenge_id");
    // Ten finishes of one ceremony at once: one session.
    let c = start(&s, json!({})).await;
    let assertion = key.assert(&c["publicKey"]);
    let tries = (0..10).map(|_| finish(&s, json!({"challenge_id": c["challenge_id"], "credential": assertion})));
    let statuses: Vec<StatusCode> = futures::future::join_all(tries).await.iter().map(|r| r.status()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1, "{statuses:?}");
    // A cloned authenticator (a counter that went back) is refused.
    let c = start(&s, json!({})).await;
    key.counter -= 2;
    let res = finish(&s, json!({"challenge_id": c["challenge_id"], "credential": key.assert(&c["publicKey"])})).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    key.counter += 5;
    // No user verification: refused.
    key.uv = false;
    let c = start(&s, json!({})).await;
    let res = finish(&s, json!({"challenge_id": c["challenge_id"], "credential": key.assert(&c["publicKey"])})).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    key.uv = true;
    let c = start(&s, json!({})).await;
    let res = finish(&s, json!({"challenge_id": c["challenge_id"], "credential": key.assert(&c["publicKey"])})).await;
    assert_eq!(res.status(), StatusCode::OK, "the real key still works");
    s.stop().await;
}

fn base64_id(key: &SoftKey) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&key.cred_id)
}

/// A passkey as the second factor after the password, recent authentication with
/// it, and removing it (a sensitive action).
async fn passkey_as_second_factor_and_reauth(backend: Backend) {
    let data = Data::new(&backend).await;
    let (s, origin) = localhost_server(&data, |_| {}).await;
    let ann = s.user("ann@example.com").await;
    let (mut key, _) = register(&s, &origin, &ann.access).await;
    let res = s.post("/v1/auth/login", json!({"email": "ann@example.com", "password": PASSWORD})).await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["factors"], json!(["passkey", "recovery_code"]));
    let token = body["mfa_token"].as_str().unwrap();
    let c = start(&s, json!({"mfa_token": token})).await;
    assert_eq!(c["publicKey"]["allowCredentials"][0]["id"], base64_id(&key));
    let assertion = key.assert(&c["publicKey"]);
    // Without its pending sign-in, the ceremony does not finish it.
    let res = finish(&s, json!({"challenge_id": c["challenge_id"], "credential": assertion})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "mfa_token_invalid").await;
    // A ceremony begun before the credential was used elsewhere fails: its counter
    // copy is stale, and a clone could slip under it.
    let stale = start(&s, json!({"mfa_token": token})).await;
    let c = start(&s, json!({})).await;
    let res = finish(&s, json!({"challenge_id": c["challenge_id"], "credential": key.assert(&c["publicKey"])})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = finish(
        &s,
        json!({"challenge_id": stale["challenge_id"], "credential": key.assert(&stale["publicKey"]), "mfa_token": token}),
    )
    .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    let c = start(&s, json!({"mfa_token": token})).await;
    let assertion = key.assert(&c["publicKey"]);
    let res = finish(&s, json!({"challenge_id": c["challenge_id"], "credential": assertion, "mfa_token": token})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let signed = Tokens::from(res.json::<Value>().await.unwrap());
    assert_eq!(jwt_part(&signed.access, 1)["amr"], json!(["pwd", "swk", "mfa"]));
    // Recent authentication with the passkey.
    s.db().debug_exec("UPDATE sessions SET auth_time = 1").await.unwrap();
    let list: Value = s.get_auth("/v1/me/passkeys", &signed.access).await.json().await.unwrap();
    let id = list["data"][0]["id"].as_str().unwrap().to_owned();
    let res = s.send(Method::DELETE, &format!("/v1/me/passkeys/{id}"), &signed.access, None).await;
    assert_problem(res, StatusCode::FORBIDDEN, "reauthentication_required").await;
    let res = s.post("/v1/auth/passkey/start", json!({"reauth": true})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "missing_token").await;
    let res = s.post_auth("/v1/auth/passkey/start", &signed.access, json!({"reauth": true})).await;
    let c: Value = res.json().await.unwrap();
    let res = finish(&s, json!({"challenge_id": c["challenge_id"], "credential": key.assert(&c["publicKey"])})).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = s.send(Method::DELETE, &format!("/v1/me/passkeys/{id}"), &signed.access, None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // A registration's challenge does not finish a sign-in (and is no 500).
    let res = s.post_auth("/v1/me/passkeys/register/start", &signed.access, json!({})).await;
    let reg: Value = res.json().await.unwrap();
    let res =
        finish(&s, json!({"challenge_id": reg["challenge_id"], "credential": key.assert(&reg["publicKey"])})).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    // No factor left: the password alone signs in, and the passkey no longer does.
    s.login("ann@example.com", PASSWORD).await;
    let c = start(&s, json!({})).await;
    let res = finish(&s, json!({"challenge_id": c["challenge_id"], "credential": key.assert(&c["publicKey"])})).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    s.stop().await;
}

/// A passkey is a way in like a password: a ban and the account's lockout stop it.
async fn bans_and_lockout_stop_passkeys(backend: Backend) {
    let data = Data::new(&backend).await;
    let (s, origin) = localhost_server(&data, |_| {}).await;
    let admin = s.admin("admin@example.com").await;
    let ann = s.user("ann@example.com").await;
    let uid = ann.body["user"]["id"].as_str().unwrap().to_owned();
    let (mut key, _) = register(&s, &origin, &ann.access).await;
    for _ in 0..5 {
        s.post("/v1/auth/login", json!({"email": "ann@example.com", "password": "wrong-password-x"})).await;
    }
    let c = start(&s, json!({})).await;
    let res = finish(&s, json!({"challenge_id": c["challenge_id"], "credential": key.assert(&c["publicKey"])})).await;
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    let res = s.post_auth(&format!("/v1/admin/users/{uid}/unlock"), &admin.access, json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = s.post_auth(&format!("/v1/admin/users/{uid}/ban"), &admin.access, json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let c = start(&s, json!({})).await;
    let res = finish(&s, json!({"challenge_id": c["challenge_id"], "credential": key.assert(&c["publicKey"])})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    // The admin sees the passkey, and a reset removes it.
    let view: Value = s.get_auth(&format!("/v1/admin/users/{uid}"), &admin.access).await.json().await.unwrap();
    assert_eq!(view["mfa_factors"], json!(["passkey"]));
    let res = s.send(Method::DELETE, &format!("/v1/admin/users/{uid}/mfa"), &admin.access, None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let view: Value = s.get_auth(&format!("/v1/admin/users/{uid}"), &admin.access).await.json().await.unwrap();
    assert_eq!(view["mfa_factors"], json!([]));
    s.stop().await;
}

/// With an IP issuer (the default), passkeys stay off until `webauthn.rp_id` is set.
async fn passkeys_are_off_on_an_ip_issuer(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |_| {}).await;
    let ann = s.user("ann@example.com").await;
    let res = s.post_auth("/v1/me/passkeys/register/start", &ann.access, json!({})).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = s.post("/v1/auth/passkey/start", json!({})).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    s.stop().await;
}

crate::backend_tests!(
    passkey_registration_and_sign_in,
    passkey_as_second_factor_and_reauth,
    bans_and_lockout_stop_passkeys,
    passkeys_are_off_on_an_ip_issuer,
);
