//! API keys: shown once, scoped no wider than their owner, dead when revoked,
//! rotated out or expired, and never usable across users.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Backend, Data, TestServer, assert_problem};

crate::backend_tests!(
    key_lifecycle_shown_once_rotate_revoke_expire,
    scopes_never_exceed_the_owner,
    keys_act_on_admin_routes_and_verify,
    no_id_swapping_between_users,
    keys_cannot_manage_keys_or_sessions,
    revocation_reaches_another_node_within_a_second,
    cli_creates_and_checks_keys,
    verification_is_limited_per_verifier,
    me_with_a_key_shows_the_owner_as_now,
);

/// `/v1/me` with `X-API-Key` answers from the key's cached owner, and that cache
/// follows changes made on this node at once: a new name shows, a ban refuses.
async fn me_with_a_key_shows_the_owner_as_now(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let admin = srv.admin("root@example.com").await.access;
    let ann = srv.user("ann@example.com").await;
    let key = create(&srv, &ann.access, json!({"name": "cli"})).await["key"].as_str().unwrap().to_owned();
    let me: Value = srv.with_key(Method::GET, "/v1/me", &key, None).await.json().await.unwrap();
    assert_eq!((me["email"].as_str(), me["name"].as_str()), (Some("ann@example.com"), None));
    let res = srv.send(Method::PATCH, "/v1/me", &ann.access, Some(json!({"name": "Ann"}))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let me: Value = srv.with_key(Method::GET, "/v1/me", &key, None).await.json().await.unwrap();
    assert_eq!(me["name"], "Ann", "{me}");
    let id = me["id"].as_str().unwrap();
    let res = srv.post_auth(&format!("/v1/admin/users/{id}/ban"), &admin, json!({})).await;
    assert!(res.status().is_success(), "{}", res.status());
    let res = srv.with_key(Method::GET, "/v1/me", &key, None).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    srv.stop().await;
}

/// `security.api_key_verify_rate` counts per verifier key: one busy verifier is
/// throttled, another on the same address is not. Counted in shares of a
/// twentieth (here 2) spent from memory, the limit is still exact on one node.
async fn verification_is_limited_per_verifier(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |cfg| {
        cfg.security.api_key_verify_rate =
            portcullis::units::RateRule { max: 40, window: std::time::Duration::from_secs(3600) };
    })
    .await;
    let admin = srv.admin("ops@example.com").await;
    let (busy, other) = (verifier_key(&srv, &admin).await, verifier_key(&srv, &admin).await);
    let body = || Some(json!({"key": "pcl_x"}));
    for i in 0..40 {
        let res = srv.with_key(Method::POST, "/v1/api-keys/verify", &busy, body()).await;
        assert_eq!(res.status(), StatusCode::OK, "call {i}");
    }
    let res = srv.with_key(Method::POST, "/v1/api-keys/verify", &busy, body()).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let res = srv.with_key(Method::POST, "/v1/api-keys/verify", &other, body()).await;
    assert_eq!(res.status(), StatusCode::OK, "another verifier on the same address");
    srv.stop().await;
}

async fn create(srv: &TestServer, token: &str, body: Value) -> Value {
    let res = srv.send(Method::POST, "/v1/api-keys", token, Some(body)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.headers()["cache-control"], "no-store");
    res.json().await.unwrap()
}

async fn key_lifecycle_shown_once_rotate_revoke_expire(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let t = srv.user("keys@example.com").await;
    let created = create(&srv, &t.access, json!({"name": "deploy bot"})).await;
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("pcl_") && key.len() == 42, "{key}");
    assert!(id.starts_with("key_"));
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));
    assert!(created["expires_at"].is_null());

    // Never shown again: not in the list, not anywhere in it.
    let list_text = srv.get_auth("/v1/api-keys", &t.access).await.text().await.unwrap();
    assert!(!list_text.contains(&key), "{list_text}");
    let list: Value = serde_json::from_str(&list_text).unwrap();
    assert_eq!(list["data"][0]["id"], id);
    assert!(list["data"][0].get("key").is_none());

    // It authenticates, as its owner.
    let me: Value = srv.with_key(Method::GET, "/v1/me", &key, None).await.json().await.unwrap();
    assert_eq!(me["id"], t.body["user"]["id"]);
    // An API key has no session: session-only routes refuse it clearly.
    let res = srv.with_key(Method::POST, "/v1/auth/logout", &key, None).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;

    // Rotation with a grace period: both secrets work, then only the new one.
    let res =
        srv.send(Method::POST, &format!("/v1/api-keys/{id}/rotate"), &t.access, Some(json!({"grace_period": 2}))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let rotated: Value = res.json().await.unwrap();
    let new_key = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, key);
    assert_eq!(rotated["id"], id);
    assert_eq!(srv.with_key(Method::GET, "/v1/me", &key, None).await.status(), StatusCode::OK, "grace");
    assert_eq!(srv.with_key(Method::GET, "/v1/me", &new_key, None).await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_problem(srv.with_key(Method::GET, "/v1/me", &key, None).await, StatusCode::UNAUTHORIZED, "invalid_token")
        .await;
    assert_eq!(srv.with_key(Method::GET, "/v1/me", &new_key, None).await.status(), StatusCode::OK);
    // Default grace is zero: the old secret dies at once. Empty body is fine.
    let res = srv.send(Method::POST, &format!("/v1/api-keys/{id}/rotate"), &t.access, None).await;
    let third = res.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned();
    assert_eq!(srv.with_key(Method::GET, "/v1/me", &new_key, None).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(srv.with_key(Method::GET, "/v1/me", &third, None).await.status(), StatusCode::OK);

    // Revoked: dead at once on this node.
    assert_eq!(
        srv.send(Method::DELETE, &format!("/v1/api-keys/{id}"), &t.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(srv.with_key(Method::GET, "/v1/me", &third, None).await.status(), StatusCode::UNAUTHORIZED);
    let list: Value = srv.get_auth("/v1/api-keys", &t.access).await.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    assert_problem(
        srv.send(Method::DELETE, &format!("/v1/api-keys/{id}"), &t.access, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    // Expired: 401 token_expired.
    let short = create(&srv, &t.access, json!({"name": "short", "expires_in": 1})).await;
    assert!(short["expires_at"].is_string());
    let short_key = short["key"].as_str().unwrap();
    assert_eq!(srv.with_key(Method::GET, "/v1/me", short_key, None).await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_problem(
        srv.with_key(Method::GET, "/v1/me", short_key, None).await,
        StatusCode::UNAUTHORIZED,
        "token_expired",
    )
    .await;
    let long = create(&srv, &t.access, json!({"name": "long", "expires_in": "90d"})).await;
    assert!(long["expires_at"].is_string());
    for bad in [
        json!({"name": "x", "expires_in": 0}),
        json!({"name": "x", "expires_in": "soon"}),
        json!({"name": ""}),
        json!({"name": "x", "expires_in": -5}),
    ] {
        let res = srv.send(Method::POST, "/v1/api-keys", &t.access, Some(bad.clone())).await;
        assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    }

    // Noise, a bad checksum, a well-formed unknown key: all 401, none a 500.
    let mut typo = long["key"].as_str().unwrap().to_owned();
    typo.replace_range(8..9, if &typo[8..9] == "a" { "b" } else { "a" });
    for k in ["nope", "pcl_", typo.as_str(), portcullis::api_keys::generate().0.expose()] {
        assert_problem(srv.with_key(Method::GET, "/v1/me", k, None).await, StatusCode::UNAUTHORIZED, "invalid_token")
            .await;
    }

    // last_used_at is coalesced in memory and written on flush (here: at shutdown).
    let long_key = long["key"].as_str().unwrap().to_owned();
    srv.with_key(Method::GET, "/v1/me", &long_key, None).await;
    let issuer = srv.base.clone();
    srv.stop().await;
    let srv = TestServer::start_on(&data, |c| c.issuer = Some(issuer)).await;
    let t = srv.login("keys@example.com", crate::common::PASSWORD).await;
    let list: Value = srv.get_auth("/v1/api-keys", &t.access).await.json().await.unwrap();
    let _ = long_key;
    let entry = list["data"].as_array().unwrap().iter().find(|k| k["id"] == long["id"]).unwrap().clone();
    assert!(entry["last_used_at"].is_string(), "{entry}");
    srv.stop().await;
}

async fn scopes_never_exceed_the_owner(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let admin = srv.admin("scoper@example.com").await;
    srv.send(
        Method::POST,
        "/v1/admin/roles",
        &admin.access,
        Some(json!({"name": "reports", "permissions": ["read:reports"]})),
    )
    .await;
    let t = srv.user("analyst@example.com").await;
    let uid = t.body["user"]["id"].as_str().unwrap().to_owned();

    // A member asking for admin or unheld scopes: 403 naming them, nothing created.
    let res = srv
        .send(
            Method::POST,
            "/v1/api-keys",
            &t.access,
            Some(json!({"name": "x", "scopes": ["admin:users:write", "read:reports"]})),
        )
        .await;
    let p = assert_problem(res, StatusCode::FORBIDDEN, "insufficient_scope").await;
    assert_eq!(p["required_scopes"], json!(["admin:users:write", "read:reports"]));
    let list: Value = srv.get_auth("/v1/api-keys", &t.access).await.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);

    // Granted the role (token refreshed), the key may carry its scope.
    srv.send(Method::POST, &format!("/v1/admin/users/{uid}/roles"), &admin.access, Some(json!({"role": "reports"})))
        .await;
    let t2 = crate::common::Tokens::from(srv.refresh(&t.refresh).await.json::<Value>().await.unwrap());
    let k = create(&srv, &t2.access, json!({"name": "reports bot", "scopes": ["read:reports"]})).await;
    assert_eq!(k["scopes"], json!(["read:reports"]));
    // A key cannot mint keys at all (not even narrower ones): key management needs a session.
    let key = k["key"].as_str().unwrap().to_owned();
    let res = srv
        .with_key(Method::POST, "/v1/api-keys", &key, Some(json!({"name": "y", "scopes": ["admin:users:read"]})))
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;

    // The owner loses the role: the key loses the scope (within the cache second).
    srv.send(Method::DELETE, &format!("/v1/admin/users/{uid}/roles/reports"), &admin.access, None).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let verifier = verifier_key(&srv, &admin).await;
    let v: Value = srv
        .with_key(Method::POST, "/v1/api-keys/verify", &verifier, Some(json!({"key": key})))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["active"], true);
    assert_eq!(v["scopes"], json!([]), "{v}");
    srv.stop().await;
}

/// A key holding `api_keys:verify`, as another service would have.
async fn verifier_key(srv: &TestServer, admin: &crate::common::Tokens) -> String {
    srv.send(
        Method::POST,
        "/v1/admin/roles",
        &admin.access,
        Some(json!({"name": "verifier", "permissions": ["api_keys:verify"]})),
    )
    .await;
    let svc = srv.user(&format!("svc{}@example.com", rand_suffix())).await;
    let sid = svc.body["user"]["id"].as_str().unwrap();
    srv.send(Method::POST, &format!("/v1/admin/users/{sid}/roles"), &admin.access, Some(json!({"role": "verifier"})))
        .await;
    let svc = crate::common::Tokens::from(srv.refresh(&svc.refresh).await.json::<Value>().await.unwrap());
    create(srv, &svc.access, json!({"name": "verifier", "scopes": ["api_keys:verify"]})).await["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn rand_suffix() -> String {
    portcullis::crypto::new_id("s", 0).replace('_', "")
}

async fn keys_act_on_admin_routes_and_verify(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let admin = srv.admin("automation@example.com").await;
    let k = create(&srv, &admin.access, json!({"name": "sync job", "scopes": ["admin:users:read"]})).await;
    let key = k["key"].as_str().unwrap().to_owned();
    // Exactly the scopes granted: reading works, writing is 403 with the scope named.
    assert_eq!(srv.with_key(Method::GET, "/v1/admin/users", &key, None).await.status(), StatusCode::OK);
    let res = srv.with_key(Method::POST, "/v1/admin/users", &key, Some(json!({"email": "z@example.com"}))).await;
    let p = assert_problem(res, StatusCode::FORBIDDEN, "insufficient_scope").await;
    assert_eq!(p["required_scopes"], json!(["admin:users:write"]));

    // Verification for other services needs api_keys:verify.
    let res = srv.with_key(Method::POST, "/v1/api-keys/verify", &key, Some(json!({"key": key}))).await;
    assert_problem(res, StatusCode::FORBIDDEN, "insufficient_scope").await;
    let verifier = verifier_key(&srv, &admin).await;
    let v: Value = srv
        .with_key(Method::POST, "/v1/api-keys/verify", &verifier, Some(json!({"key": key})))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["active"], true);
    assert_eq!(v["key_id"], k["id"]);
    assert_eq!(v["owner"], admin.body["user"]["id"]);
    assert_eq!(v["scopes"], json!(["admin:users:read"]));
    assert!(v["expires_at"].is_null());
    let v: Value = srv
        .with_key(Method::POST, "/v1/api-keys/verify", &verifier, Some(json!({"key": "pcl_garbage"})))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v, json!({"active": false}));
    srv.stop().await;
}

async fn no_id_swapping_between_users(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let alice = srv.user("alice@example.com").await;
    let bob = srv.user("bob@example.com").await;
    let bob_key = create(&srv, &bob.access, json!({"name": "bob's"})).await;
    let bob_key_id = bob_key["id"].as_str().unwrap();
    let bob_sid = crate::common::jwt_part(&bob.access, 1)["sid"].as_str().unwrap().to_owned();

    // Alice, holding Bob's ids, gets 404 everywhere and changes nothing.
    for (method, path) in [
        (Method::DELETE, format!("/v1/api-keys/{bob_key_id}")),
        (Method::POST, format!("/v1/api-keys/{bob_key_id}/rotate")),
        (Method::DELETE, format!("/v1/me/sessions/{bob_sid}")),
    ] {
        let res = srv.send(method, &path, &alice.access, None).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
    // Lists show only one's own.
    let list: Value = srv.get_auth("/v1/api-keys", &alice.access).await.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    let sessions: Value = srv.get_auth("/v1/me/sessions", &alice.access).await.json().await.unwrap();
    assert!(sessions["data"].as_array().unwrap().iter().all(|s| s["id"] != bob_sid.as_str()));
    // /v1/me is always the caller.
    let me: Value = srv.get_auth("/v1/me", &alice.access).await.json().await.unwrap();
    assert_eq!(me["id"], alice.body["user"]["id"]);
    // Bob's things still work.
    assert_eq!(
        srv.with_key(Method::GET, "/v1/me", bob_key["key"].as_str().unwrap(), None).await.status(),
        StatusCode::OK
    );
    assert_eq!(srv.me_status(&bob.access).await, StatusCode::OK);
    srv.stop().await;
}

async fn revocation_reaches_another_node_within_a_second(backend: Backend) {
    let data = Data::new(&backend).await;
    let a = TestServer::start_on(&data, |_| {}).await;
    let b = TestServer::start_on(&data, |c| c.issuer = Some(a.base.clone())).await;
    let t = a.user("nodes@example.com").await;
    let k = create(&a, &t.access, json!({"name": "edge"})).await;
    let key = k["key"].as_str().unwrap().to_owned();
    assert_eq!(b.with_key(Method::GET, "/v1/me", &key, None).await.status(), StatusCode::OK, "cached on b");
    assert_eq!(
        a.send(Method::DELETE, &format!("/v1/api-keys/{}", k["id"].as_str().unwrap()), &t.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(b.with_key(Method::GET, "/v1/me", &key, None).await.status(), StatusCode::UNAUTHORIZED);
    a.stop().await;
    b.stop().await;
}

async fn cli_creates_and_checks_keys(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let admin = srv.admin("ops@example.com").await;
    let out = tokio::task::block_in_place(|| {
        crate::keys::cli(
            &data,
            &["api-keys", "create", "--owner", "OPS@example.com", "--name", "bootstrap", "--scope", "admin:users:read"],
            None,
        )
    });
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(portcullis::api_keys::well_formed(&key));
    assert_eq!(srv.with_key(Method::GET, "/v1/admin/users", &key, None).await.status(), StatusCode::OK);
    let _ = admin;
    let out = tokio::task::block_in_place(|| crate::keys::cli(&data, &["api-keys", "check", &key], None));
    assert!(out.status.success());
    let out = tokio::task::block_in_place(|| {
        crate::keys::cli(&data, &["api-keys", "check", "pcl_0000000000000000000000000000000000000"], None)
    });
    assert!(!out.status.success());
    // The owner's scopes bound the CLI too.
    let out = tokio::task::block_in_place(|| {
        crate::keys::cli(
            &data,
            &["api-keys", "create", "--owner", "ops@example.com", "--name", "x", "--scope", "root:everything"],
            None,
        )
    });
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("root:everything"));
    srv.stop().await;
}

/// A stolen narrow key must not become the account: it cannot list, mint, rotate or
/// revoke keys (its own or its siblings), see or end sessions, or edit the profile.
async fn keys_cannot_manage_keys_or_sessions(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let admin = srv.admin("holder@example.com").await;
    let strong = create(&srv, &admin.access, json!({"name": "strong", "scopes": ["admin:users:write"]})).await;
    let narrow = create(&srv, &admin.access, json!({"name": "narrow", "expires_in": 3600})).await;
    let narrow_key = narrow["key"].as_str().unwrap();
    let sid = crate::common::jwt_part(&admin.access, 1)["sid"].as_str().unwrap().to_owned();
    let strong_id = strong["id"].as_str().unwrap();
    let attempts = [
        (Method::GET, "/v1/api-keys".to_owned(), None),
        (Method::POST, "/v1/api-keys".to_owned(), Some(json!({"name": "child"}))),
        (Method::POST, format!("/v1/api-keys/{strong_id}/rotate"), Some(json!({"grace_period": "100d"}))),
        (Method::DELETE, format!("/v1/api-keys/{strong_id}"), None),
        (Method::GET, "/v1/me/sessions".to_owned(), None),
        (Method::DELETE, format!("/v1/me/sessions/{sid}"), None),
        (Method::PATCH, "/v1/me".to_owned(), Some(json!({"name": "pwned"}))),
        (Method::POST, "/v1/me/password".to_owned(), Some(json!({"current_password": "x", "new_password": "y"}))),
        (Method::POST, "/v1/auth/logout".to_owned(), None),
    ];
    for (method, path, body) in attempts {
        let res = srv.with_key(method.clone(), &path, narrow_key, body).await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    }
    // Nothing changed: the strong key still works with its old secret, the session lives.
    assert_eq!(
        srv.with_key(Method::GET, "/v1/me", strong["key"].as_str().unwrap(), None).await.status(),
        StatusCode::OK
    );
    assert_eq!(srv.me_status(&admin.access).await, StatusCode::OK);
    let list: Value = srv.get_auth("/v1/api-keys", &admin.access).await.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    srv.stop().await;
}
