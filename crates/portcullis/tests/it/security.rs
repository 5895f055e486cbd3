//! The security review (issue 10): each finding's reproduction, sent over HTTP to
//! the real server on both backends. Each test failed on the code before its fix.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    common::{Backend, Data, PASSWORD, TestServer, assert_problem},
    oauth::{create_client, token},
};

async fn db(s: &TestServer) -> portcullis::store::Db {
    portcullis::store::Db::connect(&s.cfg.database_url()).await.unwrap()
}

async fn user_id(s: &TestServer, email: &str) -> String {
    let db = db(s).await;
    let id = db.user_by_email(email).await.unwrap().unwrap().id;
    db.close().await;
    id
}

/// Creates a role and grants it to `email` as the admin; returns the user's id.
async fn give_role(s: &TestServer, admin: &str, email: &str, role: &str, perms: &[&str]) -> String {
    let res = s.post_auth("/v1/admin/roles", admin, json!({"name": role, "permissions": perms})).await;
    assert!(res.status() == StatusCode::CREATED || res.status() == StatusCode::CONFLICT, "{}", res.status());
    let id = user_id(s, email).await;
    let res = s.post_auth(&format!("/v1/admin/users/{id}/roles"), admin, json!({"role": role})).await;
    assert_eq!(res.status(), StatusCode::OK);
    id
}

async fn client_credentials(s: &TestServer, id: &str, secret: &str, scope: Option<&str>) -> (StatusCode, Value) {
    let mut form = vec![("grant_type", "client_credentials")];
    if let Some(sc) = scope {
        form.push(("scope", sc));
    }
    let (status, body, _) = token(s, Some((id, secret)), &form).await;
    (status, body)
}

/// Audit records of one type, newest first, once `pred` holds (bounded wait).
async fn audit_of_type(
    s: &TestServer,
    kind: &str,
    pred: impl Fn(&[portcullis::store::AuditRecord]) -> bool,
) -> Vec<portcullis::store::AuditRecord> {
    let db = db(s).await;
    let filter = portcullis::store::AuditFilter { event_type: Some(kind.into()), ..Default::default() };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let found = db.audit_list(&filter, None, 1000).await.unwrap();
        if pred(&found) || std::time::Instant::now() > deadline {
            db.close().await;
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Item 1: managing a client (rotate, delete, update) takes holding what it holds.
async fn client_management_needs_what_the_client_holds(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |_| {}).await;
    let root = s.admin("root@example.com").await.access;
    s.register("mallory@example.com", PASSWORD).await;
    give_role(&s, &root, "mallory@example.com", "client-manager", &["admin:clients:read", "admin:clients:write"]).await;
    let mallory = s.login("mallory@example.com", PASSWORD).await.access;
    let strong = create_client(
        &s,
        &root,
        json!({"client_name": "Provisioner", "grant_types": ["client_credentials"],
               "scope": "admin:roles:write admin:users:write"}),
    )
    .await;
    let (id, secret) = (strong["client_id"].as_str().unwrap(), strong["client_secret"].as_str().unwrap());

    // The reproduction: rotate the admin's client, take its token, crown herself.
    let res = s.post_auth(&format!("/v1/admin/clients/{id}/rotate-secret"), &mallory, json!({})).await;
    let body = assert_problem(res, StatusCode::FORBIDDEN, "insufficient_scope").await;
    assert!(body["required_scopes"].as_array().unwrap().contains(&json!("admin:users:write")), "{body}");
    let res = s.send(Method::DELETE, &format!("/v1/admin/clients/{id}"), &mallory, None).await;
    assert_problem(res, StatusCode::FORBIDDEN, "insufficient_scope").await;
    let res = s
        .send(Method::PATCH, &format!("/v1/admin/clients/{id}"), &mallory, Some(json!({"client_name": "Mine now"})))
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "insufficient_scope").await;
    // Untouched: the admin's secret still works, and the name is unchanged.
    assert_eq!(client_credentials(&s, id, secret, None).await.0, StatusCode::OK);
    let view: Value = s.get_auth(&format!("/v1/admin/clients/{id}"), &root).await.json().await.unwrap();
    assert_eq!(view["client_name"], "Provisioner");
    assert_eq!(view["owner"], json!(user_id(&s, "root@example.com").await));

    // Her own client: she may manage it, but not widen it past what she holds,
    // nor make it trusted (no consent) or a resource server (introspection).
    let own = create_client(&s, &mallory, json!({"client_name": "Mine", "grant_types": ["client_credentials"]})).await;
    let own_id = own["client_id"].as_str().unwrap();
    let path = format!("/v1/admin/clients/{own_id}");
    let res = s.send(Method::PATCH, &path, &mallory, Some(json!({"scope": "admin:users:write"}))).await;
    assert_problem(res, StatusCode::FORBIDDEN, "insufficient_scope").await;
    for power in ["trusted", "introspection"] {
        let res = s.send(Method::PATCH, &path, &mallory, Some(json!({power: true}))).await;
        let body = assert_problem(res, StatusCode::FORBIDDEN, "insufficient_scope").await;
        assert_eq!(body["required_scopes"], json!(["admin:roles:write"]), "{power}");
        let res = s
            .post_auth(
                "/v1/admin/clients",
                &mallory,
                json!({"client_name": "x", "grant_types": ["client_credentials"], power: true}),
            )
            .await;
        assert_problem(res, StatusCode::FORBIDDEN, "insufficient_scope").await;
    }
    let res = s.post_auth(&format!("{path}/rotate-secret"), &mallory, json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(s.send(Method::DELETE, &path, &mallory, None).await.status(), StatusCode::NO_CONTENT);
    // An admin (admin:roles:write) may do all of it.
    let res = s.send(Method::PATCH, &format!("/v1/admin/clients/{id}"), &root, Some(json!({"trusted": true}))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let refused = audit_of_type(&s, "client_managed", |r| r.len() >= 3).await;
    assert!(refused.iter().all(|r| r.outcome == "failure") && refused.len() >= 3, "{refused:?}");
    s.stop().await;
}

/// Item 2: a role taken away (or a permission taken from a role) stops working on
/// the live token at once; the token's claims do not decide.
async fn current_permissions_decide_not_token_claims(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |_| {}).await;
    let root = s.admin("root@example.com").await.access;
    let bob = s.admin("bob@example.com").await.access;
    let bob_id = user_id(&s, "bob@example.com").await;
    assert_eq!(s.get_auth("/v1/admin/users", &bob).await.status(), StatusCode::OK);
    let res = s.send(Method::DELETE, &format!("/v1/admin/users/{bob_id}/roles/admin"), &root, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    // The reproduction: the same token still listed users and re-crowned itself.
    assert_problem(s.get_auth("/v1/admin/users", &bob).await, StatusCode::FORBIDDEN, "insufficient_scope").await;
    let res = s.post_auth(&format!("/v1/admin/users/{bob_id}/roles"), &bob, json!({"role": "admin"})).await;
    assert_problem(res, StatusCode::FORBIDDEN, "insufficient_scope").await;
    let res = s.post_auth("/v1/api-keys", &bob, json!({"name": "k", "scopes": ["admin:users:read"]})).await;
    assert_problem(res, StatusCode::FORBIDDEN, "insufficient_scope").await;
    // The claims stay in the token for outside verifiers.
    assert!(crate::common::jwt_part(&bob, 1)["roles"].as_array().unwrap().contains(&json!("admin")));

    // A permission removed from a role: the token and an API key lose it at once.
    s.register("carol@example.com", PASSWORD).await;
    give_role(&s, &root, "carol@example.com", "auditor", &["admin:audit:read"]).await;
    let carol = s.login("carol@example.com", PASSWORD).await.access;
    let key: Value = s
        .post_auth("/v1/api-keys", &carol, json!({"name": "audit", "scopes": ["admin:audit:read"]}))
        .await
        .json()
        .await
        .unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    assert_eq!(s.get_auth("/v1/admin/audit", &carol).await.status(), StatusCode::OK);
    assert_eq!(s.with_key(Method::GET, "/v1/admin/audit", &key, None).await.status(), StatusCode::OK);
    let res = s.send(Method::PATCH, "/v1/admin/roles/auditor", &root, Some(json!({"permissions": []}))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(s.get_auth("/v1/admin/audit", &carol).await.status(), StatusCode::FORBIDDEN);
    assert_eq!(s.with_key(Method::GET, "/v1/admin/audit", &key, None).await.status(), StatusCode::FORBIDDEN);
    s.stop().await;
}

/// Item 3: a client-credentials client answers to the user who registered it.
async fn clients_answer_to_their_owner(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |_| {}).await;
    let root = s.admin("root@example.com").await.access;
    let dana = s.admin("dana@example.com").await.access;
    let dana_id = user_id(&s, "dana@example.com").await;
    let c = create_client(
        &s,
        &dana,
        json!({"client_name": "Dana's sync", "grant_types": ["client_credentials"],
               "scope": "admin:users:read admin:users:write"}),
    )
    .await;
    let (id, secret) = (c["client_id"].as_str().unwrap().to_owned(), c["client_secret"].as_str().unwrap().to_owned());
    assert_eq!(c["owner"], json!(dana_id));
    let (status, tok) = client_credentials(&s, &id, &secret, None).await;
    assert_eq!(status, StatusCode::OK, "{tok}");
    let old = tok["access_token"].as_str().unwrap().to_owned();
    assert_eq!(s.get_auth("/v1/admin/users", &old).await.status(), StatusCode::OK);

    // Demoted: the client's grants shrink to what Dana holds (nothing of it).
    let res = s.send(Method::DELETE, &format!("/v1/admin/users/{dana_id}/roles/admin"), &root, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (status, body) = client_credentials(&s, &id, &secret, Some("admin:users:write")).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_scope")), "{body}");
    assert_eq!(s.get_auth("/v1/admin/users", &old).await.status(), StatusCode::FORBIDDEN);
    let res = s.post_auth("/v1/admin/users", &old, json!({"email": "x@example.com", "roles": ["admin"]})).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "the old token cannot create admins");

    // Banned: the client's grants fail (invalid_client), its live tokens too.
    s.post_auth(&format!("/v1/admin/users/{dana_id}/roles"), &root, json!({"role": "admin"})).await;
    assert_eq!(client_credentials(&s, &id, &secret, None).await.0, StatusCode::OK);
    let res = s.post_auth(&format!("/v1/admin/users/{dana_id}/ban"), &root, json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (status, body) = client_credentials(&s, &id, &secret, None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")), "{body}");
    assert_eq!(s.get_auth("/v1/admin/users", &old).await.status(), StatusCode::UNAUTHORIZED);
    let records =
        audit_of_type(&s, "oauth_token", |r| r.iter().any(|r| r.reason.as_deref() == Some("owner_banned"))).await;
    assert!(records.iter().any(|r| r.reason.as_deref() == Some("owner_banned") && r.outcome == "failure"));

    // Deleted: the client stays (an operator decides), its grants fail.
    s.post_auth(&format!("/v1/admin/users/{dana_id}/unban"), &root, json!({})).await;
    assert_eq!(client_credentials(&s, &id, &secret, None).await.0, StatusCode::OK);
    let res = s.send(Method::DELETE, &format!("/v1/admin/users/{dana_id}"), &root, None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.get_auth(&format!("/v1/admin/clients/{id}"), &root).await.status(), StatusCode::OK);
    let (status, body) = client_credentials(&s, &id, &secret, None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("invalid_client")), "{body}");
    audit_of_type(&s, "oauth_token", |r| r.iter().any(|r| r.reason.as_deref() == Some("owner_deleted"))).await;

    // Clients registered at the command line are the operator's.
    let out =
        crate::keys::cli(&data, &["clients", "create", "--name", "Ops", "--grant-type", "client_credentials"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(made["owner"], "operator");
    s.stop().await;
}

async fn age_sessions(s: &TestServer, user: &str) {
    let db = db(s).await;
    db.debug_exec(&format!("UPDATE sessions SET auth_time = 1 WHERE user_id = '{user}'")).await.unwrap();
    db.close().await;
}

/// Item 4: an access token alone cannot mint a lasting credential.
async fn sensitive_operations_need_a_recent_sign_in(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |c| {
        c.security.lockout_threshold = 3;
        c.api_keys.max_ttl = Some(portcullis::units::HumanDuration::secs(3600));
    })
    .await;
    let ann = s.user("ann@example.com").await;
    let ann_id = user_id(&s, "ann@example.com").await;
    let res = s.post_auth("/v1/api-keys", &ann.access, json!({"name": "fresh", "scopes": []})).await;
    assert_eq!(res.status(), StatusCode::CREATED, "a fresh sign-in may");
    let fresh: Value = res.json().await.unwrap();
    // Without expires_in, api_keys.max_ttl is the lifetime; longer is refused.
    let expires = fresh["expires_at"].as_str().expect("max_ttl sets an expiry");
    let created = fresh["created_at"].as_str().unwrap();
    assert!(expires > created, "{fresh}");
    let res = s.post_auth("/v1/api-keys", &ann.access, json!({"name": "x", "scopes": [], "expires_in": "2h"})).await;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "expires_in");

    // The reproduction: a token of an old sign-in (a stolen one) mints a key.
    age_sessions(&s, &ann_id).await;
    let res = s.post_auth("/v1/api-keys", &ann.access, json!({"name": "stolen", "scopes": []})).await;
    assert_problem(res, StatusCode::FORBIDDEN, "reauthentication_required").await;
    let key_id = fresh["id"].as_str().unwrap();
    let res = s.post_auth(&format!("/v1/api-keys/{key_id}/rotate"), &ann.access, json!({})).await;
    assert_problem(res, StatusCode::FORBIDDEN, "reauthentication_required").await;
    // Refresh does not renew the sign-in.
    let refreshed: Value = s.refresh(&ann.refresh).await.json().await.unwrap();
    let access = refreshed["access_token"].as_str().unwrap().to_owned();
    let res = s.post_auth("/v1/api-keys", &access, json!({"name": "stolen", "scopes": []})).await;
    assert_problem(res, StatusCode::FORBIDDEN, "reauthentication_required").await;
    // The password renews it; a wrong one is refused and counts towards lockout.
    let res = s.post_auth("/v1/auth/reauth", &access, json!({"password": "wrong password!"})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let res = s.post_auth("/v1/auth/reauth", &access, json!({"password": PASSWORD})).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = s.post_auth("/v1/api-keys", &access, json!({"name": "renewed", "scopes": []})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let key = fresh["key"].as_str().unwrap();
    let res = s.with_key(Method::POST, "/v1/auth/reauth", key, Some(json!({"password": PASSWORD}))).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    for _ in 0..3 {
        s.post_auth("/v1/auth/reauth", &access, json!({"password": "wrong password!"})).await;
    }
    let res = s.post_auth("/v1/auth/reauth", &access, json!({"password": PASSWORD})).await;
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    s.stop().await;
}

/// Item 4: theft detection also revokes the API keys minted from the sessions it
/// ends.
async fn theft_detection_revokes_keys_minted_by_the_thief(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |_| {}).await;
    let ann = s.user("ann@example.com").await;
    let ann_id = user_id(&s, "ann@example.com").await;
    // Ann's own key from an earlier, ended session survives; the thief's does not.
    let own: Value =
        s.post_auth("/v1/api-keys", &ann.access, json!({"name": "ci", "scopes": []})).await.json().await.unwrap();
    s.post_auth("/v1/auth/logout", &ann.access, json!({})).await;
    let victim = s.login("ann@example.com", PASSWORD).await;
    let thief: Value = s.refresh(&victim.refresh).await.json().await.unwrap();
    let minted: Value = s
        .post_auth("/v1/api-keys", thief["access_token"].as_str().unwrap(), json!({"name": "backdoor", "scopes": []}))
        .await
        .json()
        .await
        .unwrap();
    let backdoor = minted["key"].as_str().unwrap();
    assert_eq!(s.with_key(Method::GET, "/v1/me", backdoor, None).await.status(), StatusCode::OK);
    // The victim's app presents the rotated token: reuse.
    assert_problem(s.refresh(&victim.refresh).await, StatusCode::UNAUTHORIZED, "refresh_token_reused").await;
    assert_eq!(s.with_key(Method::GET, "/v1/me", backdoor, None).await.status(), StatusCode::UNAUTHORIZED);
    let own_key = own["key"].as_str().unwrap();
    assert_eq!(s.with_key(Method::GET, "/v1/me", own_key, None).await.status(), StatusCode::OK);
    let records =
        crate::common::audit_until(&s, &ann_id, |r| r.iter().any(|r| r.event_type == "api_keys_revoked")).await;
    let r = records.iter().find(|r| r.event_type == "api_keys_revoked").expect("recorded");
    assert!(r.reason.as_deref().unwrap().starts_with("1 "), "{r:?}");
    s.stop().await;
}

/// A key minted while theft detection runs, from the session it ends, never
/// survives it: each round races the two; whichever wins, no key of the stolen
/// session works afterwards.
async fn a_key_minted_during_theft_detection_dies_with_the_session(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |_| {}).await;
    s.user("ann@example.com").await;
    for round in 0..8 {
        let victim = s.login("ann@example.com", PASSWORD).await;
        let thief: Value = s.refresh(&victim.refresh).await.json().await.unwrap();
        let access = thief["access_token"].as_str().unwrap();
        let (minted, reused) = tokio::join!(
            s.post_auth("/v1/api-keys", access, json!({"name": format!("race {round}"), "scopes": []})),
            s.refresh(&victim.refresh),
        );
        assert_problem(reused, StatusCode::UNAUTHORIZED, "refresh_token_reused").await;
        match minted.status() {
            StatusCode::CREATED => {
                let key: Value = minted.json().await.unwrap();
                let key = key["key"].as_str().unwrap();
                let status = s.with_key(Method::GET, "/v1/me", key, None).await.status();
                assert_eq!(status, StatusCode::UNAUTHORIZED, "round {round}: the key outlived the stolen session");
            }
            status => assert_eq!(status, StatusCode::UNAUTHORIZED, "round {round}"),
        }
    }
    s.stop().await;
}

async fn login_from(s: &TestServer, email: &str, password: &str, address: &str) -> reqwest::Response {
    s.client
        .post(s.url("/v1/auth/login"))
        .header("x-forwarded-for", address)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

/// Item 5: past a limit, refusals come from memory and leave one summary record
/// per address and window, not one per request; failed refreshes are limited.
async fn refused_attempts_write_one_summary(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |c| {
        c.security.login_rate = "5/10s".parse().unwrap();
        c.security.refresh_failure_rate = "5/10s".parse().unwrap();
    })
    .await;
    let admin = s.admin("ops@example.com").await.access;
    let c = create_client(
        &s,
        &admin,
        json!({"client_name": "App", "redirect_uris": ["https://app.example.com/cb"],
               "grant_types": ["authorization_code", "refresh_token"]}),
    )
    .await;
    let (id, secret) = (c["client_id"].as_str().unwrap(), c["client_secret"].as_str().unwrap());
    let code_of = |body: &Value| body["code"].as_str().unwrap_or_default().to_owned();
    let mut refused = 0;
    for _ in 0..300 {
        let res = s.post("/v1/auth/login", json!({"email": "root@example.com", "password": "not the password"})).await;
        let limited = res.headers().contains_key("retry-after");
        if code_of(&res.json().await.unwrap()) == "rate_limited" {
            assert!(limited);
            refused += 1;
        }
    }
    assert!(refused >= 290, "{refused}");
    let mut junk = 0;
    for i in 0..300 {
        let res = s.refresh(&format!("junk-refresh-token-{i}")).await;
        let limited = res.headers().contains_key("retry-after");
        if code_of(&res.json().await.unwrap()) == "rate_limited" {
            assert!(limited);
            junk += 1;
        }
    }
    assert!(junk >= 290, "{junk}");
    // The refresh_token grant shares the limit, with an RFC 6749 body.
    let (status, body, headers) =
        token(&s, Some((id, secret)), &[("grant_type", "refresh_token"), ("refresh_token", "junk")]).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("invalid_grant")), "{body}");
    assert!(headers.contains_key("retry-after"));

    // One summary per block with the route and the count; the refused requests
    // themselves wrote nothing.
    let sum = |records: &[portcullis::store::AuditRecord], route: &str| -> u64 {
        records
            .iter()
            .filter_map(|r| r.reason.as_deref()?.strip_prefix(&format!("{route} "))?.parse::<u64>().ok())
            .sum()
    };
    let summaries = audit_of_type(&s, "rate_limited", |r| {
        sum(r, "/v1/auth/login") >= refused && sum(r, "/v1/auth/refresh") >= junk
    })
    .await;
    assert_eq!(sum(&summaries, "/v1/auth/login"), refused, "{summaries:?}");
    assert_eq!(sum(&summaries, "/v1/auth/refresh"), junk, "{summaries:?}");
    assert!(summaries.len() <= 8, "one per block, not per request: {}", summaries.len());
    assert!(summaries.iter().all(|r| r.ip.as_deref() == Some("127.0.0.1") && r.outcome == "failure"));
    let logins = audit_of_type(&s, "login", |_| true).await;
    assert!(logins.len() <= 20, "{} login records for 300 attempts", logins.len());
    let refreshes = audit_of_type(&s, "refresh", |_| true).await;
    assert!(refreshes.len() <= 20, "{} refresh records for 300 attempts", refreshes.len());
    s.stop().await;
}

/// Item 6: lockout is keyed by (account, address); a ceiling over all addresses
/// spares the addresses that signed in before; unknown emails behave the same.
async fn lockout_cannot_be_turned_against_the_owner(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |c| {
        c.security.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.security.lockout_threshold = 5;
        c.security.account_failure_ceiling = "12/1h".parse().unwrap();
    })
    .await;
    s.register("root@example.com", PASSWORD).await;
    let home = "203.0.113.5";
    assert_eq!(login_from(&s, "root@example.com", PASSWORD, home).await.status(), StatusCode::OK);
    for email in ["root@example.com", "nobody@example.com"] {
        // The reproduction: five wrong passwords from one address.
        for _ in 0..5 {
            let res = login_from(&s, email, "wrong password!", "198.51.100.7").await;
            assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        }
        let res = login_from(&s, email, PASSWORD, "198.51.100.7").await;
        let body = assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
        assert!(body["detail"].is_string());
    }
    // The owner, at home or anywhere else, is not locked out.
    assert_eq!(login_from(&s, "root@example.com", PASSWORD, home).await.status(), StatusCode::OK);
    assert_eq!(login_from(&s, "root@example.com", PASSWORD, "192.0.2.77").await.status(), StatusCode::OK);
    // Spread over many addresses, the failures reach the account's ceiling: new
    // addresses are locked out, addresses it signed in from are not.
    for (i, email) in ["root@example.com", "nobody@example.com"].iter().enumerate() {
        for n in 0..7 {
            let res = login_from(&s, email, "wrong password!", &format!("198.51.{}.{n}", 101 + i)).await;
            assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        }
        let res = login_from(&s, email, PASSWORD, "192.0.2.200").await;
        let locked = assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
        let _ = locked;
    }
    let res = login_from(&s, "root@example.com", PASSWORD, "192.0.2.200").await;
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(login_from(&s, "root@example.com", PASSWORD, home).await.status(), StatusCode::OK);
    assert_eq!(login_from(&s, "root@example.com", PASSWORD, "192.0.2.77").await.status(), StatusCode::OK);
    // The operator lifts every lock of the account.
    let out = crate::keys::cli(&data, &["users", "unlock", "--email", "Root@Example.com"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(login_from(&s, "root@example.com", PASSWORD, "192.0.2.200").await.status(), StatusCode::OK);
    assert_eq!(login_from(&s, "root@example.com", PASSWORD, "198.51.100.7").await.status(), StatusCode::OK);
    s.stop().await;
}

/// Item 7: a client asking only for what the user cannot grant gets
/// `invalid_scope`, never a code that silently identifies the visitor.
async fn nothing_grantable_is_invalid_scope(backend: Backend) {
    use crate::oauth::{Browser, REDIRECT, authorize_url};
    let data = Data::new(&backend).await;
    let t = crate::oauth::setup(&backend, &data).await;
    let c = create_client(
        &t.s,
        &t.admin,
        json!({"client_name": "Snoop", "redirect_uris": [REDIRECT], "scope": "openid admin:users:read",
               "grant_types": ["authorization_code"]}),
    )
    .await;
    let id = c["client_id"].as_str().unwrap();
    let mut b = Browser::new(&t.s);
    let page = b.get(&authorize_url(id, &[("scope", "admin:users:read")])).await;
    let done = b.sign_in(&page, "ann@example.com", PASSWORD).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let p = done.redirect_params();
    assert_eq!(p.get("error").map(String::as_str), Some("invalid_scope"), "{p:?}");
    assert!(!p.contains_key("code"));
    assert_eq!(p.get("state").map(String::as_str), Some("st-123"));
    // Signed in now: prompt=none must not hand out an identifying code either.
    let silent = b.get(&authorize_url(id, &[("scope", "admin:users:read"), ("prompt", "none")])).await;
    let p = silent.redirect_params();
    assert_eq!(p.get("error").map(String::as_str), Some("invalid_scope"), "{p:?}");
    assert!(!p.contains_key("code"));
    // With something grantable, the flow goes on to consent as before.
    let ok = b.get(&authorize_url(id, &[("scope", "openid admin:users:read")])).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert!(ok.body.contains("name=\"decision\""), "{}", ok.body);
    t.s.stop().await;
}

/// Item 8: a client introspects tokens issued to itself; everyone's only when
/// marked as a resource server.
async fn introspection_is_for_own_tokens(backend: Backend) {
    let data = Data::new(&backend).await;
    let t = crate::oauth::setup(&backend, &data).await;
    let svc = create_client(
        &t.s,
        &t.admin,
        json!({"client_name": "Service", "grant_types": ["client_credentials"], "scope": "reports:read"}),
    )
    .await;
    let (sid, ssecret) = (svc["client_id"].as_str().unwrap(), svc["client_secret"].as_str().unwrap());
    let (_, tok) = client_credentials(&t.s, sid, ssecret, None).await;
    let svc_token = tok["access_token"].as_str().unwrap().to_owned();
    let ann = t.s.login("ann@example.com", PASSWORD).await;
    let key: Value =
        t.s.post_auth("/v1/api-keys", &ann.access, json!({"name": "k", "scopes": []})).await.json().await.unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    let introspect_as = |id: String, secret: String, tok: String| {
        let s = &t.s;
        async move {
            let res = s.client.post(s.url("/oauth/introspect")).basic_auth(id, Some(secret)).form(&[("token", tok)]);
            res.send().await.unwrap().json::<Value>().await.unwrap()
        }
    };
    let (web, web_secret) = (t.client_id.clone(), t.secret.clone());
    // The reproduction: any confidential client learned about every token.
    for other in [&svc_token, &ann.access, &ann.refresh, &key] {
        let seen = introspect_as(web.clone(), web_secret.clone(), other.clone()).await;
        assert_eq!(seen, json!({"active": false}), "{other}");
    }
    let own = introspect_as(sid.into(), ssecret.into(), svc_token.clone()).await;
    assert_eq!((own["active"].as_bool(), own["scope"].as_str()), (Some(true), Some("reports:read")), "{own}");
    // Marked as a resource server (admin:clients:write AND admin:roles:write).
    let res =
        t.s.send(Method::PATCH, &format!("/v1/admin/clients/{web}"), &t.admin, Some(json!({"introspection": true})))
            .await;
    assert_eq!(res.status(), StatusCode::OK);
    for other in [&svc_token, &ann.access, &ann.refresh, &key] {
        let seen = introspect_as(web.clone(), web_secret.clone(), other.clone()).await;
        assert_eq!(seen["active"], true, "{other}: {seen}");
    }
    t.s.stop().await;
}

/// Item 9: `/metrics` is for loopback callers (after trusted proxies), the
/// metrics token, or everyone only when made public.
async fn metrics_are_not_public(backend: Backend) {
    let data = Data::new(&backend).await;
    let get = |s: &TestServer, forwarded: Option<&str>, bearer: Option<&str>| {
        let mut req = s.client.get(s.url("/metrics"));
        if let Some(f) = forwarded {
            req = req.header("x-forwarded-for", f);
        }
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        req.send()
    };
    let s = TestServer::start_on(&data, |_| {}).await;
    assert_eq!(get(&s, None, None).await.unwrap().status(), StatusCode::OK, "loopback");
    // A reverse proxy on this host that is not a trusted proxy does not open it.
    let res = get(&s, Some("198.51.100.1"), None).await.unwrap();
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    s.stop().await;
    let token = "a-long-metrics-token-for-tests";
    let s = TestServer::start_on(&data, |c| {
        c.security.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.ops.metrics_token = Some(token.into());
    })
    .await;
    assert_problem(get(&s, Some("198.51.100.1"), None).await.unwrap(), StatusCode::UNAUTHORIZED, "missing_token").await;
    let res = get(&s, Some("198.51.100.1"), Some("wrong-token-wrong-token")).await.unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let res = get(&s, Some("198.51.100.1"), Some(token)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.unwrap().contains("portcullis_http_requests_total"));
    s.stop().await;
    let s = TestServer::start_on(&data, |c| c.ops.metrics_public = true).await;
    assert_eq!(get(&s, Some("198.51.100.1"), None).await.unwrap().status(), StatusCode::OK);
    s.stop().await;
}

/// Item 9: a client's `jwks_uri` cannot reach loopback, private or metadata
/// addresses unless the operator allowed that network. The refusal happens
/// before any connection: the local key server sees nothing.
async fn outbound_requests_refuse_private_targets(backend: Backend) {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use std::sync::atomic::Ordering;
    let data = Data::new(&backend).await;
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let x = portcullis::crypto::b64url(pair.public_key().as_ref());
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "alg": "EdDSA"}]}).to_string();
    let (jwks_url, hits, served) = crate::common::json_server(jwks).await;
    let key = jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref());
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("k1".into());
    // Try a client whose keys live at `uri`, on a server configured by `tweak`.
    let attempt = |uri: String, tweak: fn(&mut portcullis::config::Config)| {
        let (data, header, key) = (&data, header.clone(), key.clone());
        async move {
            let s = TestServer::start_on(data, tweak).await;
            let admin = s.admin(&format!("admin{}@example.com", portcullis::clock::now_ms())).await.access;
            let c = create_client(
                &s,
                &admin,
                json!({"client_name": "Remote", "grant_types": ["client_credentials"], "scope": "reports:read",
                       "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": uri}),
            )
            .await;
            let id = c["client_id"].as_str().unwrap();
            let now = portcullis::clock::now_ms() / 1000;
            let claims =
                json!({"iss": id, "sub": id, "aud": s.url("/oauth/token"), "jti": format!("j{now}"), "exp": now + 60});
            let assertion = jsonwebtoken::encode(&header, &claims, &key).unwrap();
            let form = [
                ("grant_type", "client_credentials"),
                ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                ("client_assertion", assertion.as_str()),
            ];
            let (status, _, _) = token(&s, None, &form).await;
            s.stop().await;
            status
        }
    };
    let strict: fn(&mut portcullis::config::Config) = |c| c.security.danger_allow_private_targets = false;
    assert_eq!(attempt(jwks_url.clone(), strict).await, StatusCode::UNAUTHORIZED);
    assert_eq!(attempt("https://169.254.169.254/jwks.json".into(), strict).await, StatusCode::UNAUTHORIZED);
    let metadata_v6: fn(&mut portcullis::config::Config) = |c| c.security.danger_allow_private_targets = true;
    assert_eq!(attempt("https://[fd00:ec2::254]/jwks.json".into(), metadata_v6).await, StatusCode::UNAUTHORIZED);
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing was fetched");
    let allowed: fn(&mut portcullis::config::Config) = |c| {
        c.security.danger_allow_private_targets = false;
        c.security.outbound_allowed_cidrs = vec!["127.0.0.0/8".parse().unwrap()];
    };
    assert_eq!(attempt(jwks_url, allowed).await, StatusCode::OK);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    served.abort();
}

/// Item 9: `/oauth/userinfo` takes the access token in a form-encoded POST body
/// (RFC 6750 §2.2).
async fn userinfo_accepts_a_form_body(backend: Backend) {
    use crate::oauth::{Browser, VERIFIER, authorize_url, browser_flow, exchange};
    let data = Data::new(&backend).await;
    let t = crate::oauth::setup(&backend, &data).await;
    let mut b = Browser::new(&t.s);
    let done = browser_flow(&mut b, &authorize_url(&t.client_id, &[])).await;
    let (_, tokens) = exchange(&t, &done.redirect_params()["code"], VERIFIER).await;
    let access = tokens["access_token"].as_str().unwrap();
    let res = t.s.client.post(t.s.url("/oauth/userinfo")).form(&[("access_token", access)]).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let claims: Value = res.json().await.unwrap();
    assert_eq!(claims["sub"], t.user_id.as_str());
    assert_eq!(claims["email"], "ann@example.com");
    let res = t.s.client.post(t.s.url("/oauth/userinfo")).form(&[("access_token", "junk")]).send().await.unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let res = t.s.client.post(t.s.url("/oauth/userinfo")).form(&[("other", "x")]).send().await.unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED, "missing_token").await;
    t.s.stop().await;
}

/// Item 1 and 3 together: whoever re-keys a client (rotates its secret, changes
/// how it authenticates) holds its credential and becomes its owner, so the grants
/// are bounded by them; changing a client needs a recent sign-in like minting it.
async fn rekeying_a_client_makes_the_rekeyer_its_owner(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |_| {}).await;
    let root = s.admin("root@example.com").await.access;
    s.register("bob@example.com", PASSWORD).await;
    let perms = ["admin:clients:read", "admin:clients:write", "reports:read"];
    let bob_id = give_role(&s, &root, "bob@example.com", "reporter", &perms).await;
    let bob = s.login("bob@example.com", PASSWORD).await.access;
    let c = create_client(
        &s,
        &root,
        json!({"client_name": "Reports", "grant_types": ["client_credentials"], "scope": "reports:read"}),
    )
    .await;
    let id = c["client_id"].as_str().unwrap();
    let res = s.post_auth(&format!("/v1/admin/clients/{id}/rotate-secret"), &bob, json!({})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let rotated: Value = res.json().await.unwrap();
    assert_eq!(rotated["owner"], json!(bob_id), "{rotated}");
    let secret = rotated["client_secret"].as_str().unwrap();
    assert_eq!(client_credentials(&s, id, secret, None).await.0, StatusCode::OK);
    // Bob loses the permission: the secret he holds stops granting it.
    let res = s.send(Method::DELETE, &format!("/v1/admin/users/{bob_id}/roles/reporter"), &root, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (status, body) = client_credentials(&s, id, secret, None).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_scope")), "{body}");
    // Changing a client from an old sign-in asks for the password first.
    s.post_auth(&format!("/v1/admin/users/{bob_id}/roles"), &root, json!({"role": "reporter"})).await;
    age_sessions(&s, &bob_id).await;
    let res = s.send(Method::PATCH, &format!("/v1/admin/clients/{id}"), &bob, Some(json!({"client_name": "x"}))).await;
    assert_problem(res, StatusCode::FORBIDDEN, "reauthentication_required").await;
    s.stop().await;
}

crate::backend_tests!(
    rekeying_a_client_makes_the_rekeyer_its_owner,
    nothing_grantable_is_invalid_scope,
    introspection_is_for_own_tokens,
    metrics_are_not_public,
    outbound_requests_refuse_private_targets,
    userinfo_accepts_a_form_body,
    refused_attempts_write_one_summary,
    lockout_cannot_be_turned_against_the_owner,
    client_management_needs_what_the_client_holds,
    current_permissions_decide_not_token_claims,
    clients_answer_to_their_owner,
    sensitive_operations_need_a_recent_sign_in,
    theft_detection_revokes_keys_minted_by_the_thief,
    a_key_minted_during_theft_detection_dies_with_the_session,
);
