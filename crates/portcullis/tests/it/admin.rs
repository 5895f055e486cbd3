//! The admin API and the guards in front of it.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Backend, Data, PASSWORD, TestServer, Tokens, assert_problem, jwt_part};

crate::backend_tests!(
    guards_answer_401_then_403_with_required_scopes,
    admin_manages_users_and_metadata_stays_private,
    role_changes_reach_the_next_token,
    roles_crud_and_builtins,
    banned_users_cannot_sign_in_or_refresh,
    deleting_a_user_kills_sessions_and_keys,
    pagination_is_stable_under_concurrent_inserts,
    bad_input_to_admin_routes,
);

async fn guards_answer_401_then_403_with_required_scopes(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let member = srv.user("member@example.com").await;
    let routes: [(Method, &str, Option<Value>, &str); 6] = [
        (Method::GET, "/v1/admin/users", None, "admin:users:read"),
        (Method::POST, "/v1/admin/users", Some(json!({"email": "x@example.com"})), "admin:users:write"),
        (Method::GET, "/v1/admin/users/usr_x", None, "admin:users:read"),
        (Method::POST, "/v1/admin/users/usr_x/ban", None, "admin:users:write"),
        (Method::GET, "/v1/admin/roles", None, "admin:roles:read"),
        (Method::DELETE, "/v1/admin/roles/member", None, "admin:roles:write"),
    ];
    for (method, path, body, scope) in routes {
        // No credential: 401.
        let mut req = srv.client.request(method.clone(), srv.url(path));
        if let Some(b) = &body {
            req = req.json(b);
        }
        assert_problem(req.send().await.unwrap(), StatusCode::UNAUTHORIZED, "missing_token").await;
        // A member: 403 naming the scope, with the RFC 6750 challenge.
        let res = srv.send(method.clone(), path, &member.access, body.clone()).await;
        let challenge = res.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.contains(r#"error="insufficient_scope""#) && challenge.contains(scope), "{challenge}");
        let p = assert_problem(res, StatusCode::FORBIDDEN, "insufficient_scope").await;
        assert_eq!(p["required_scopes"], json!([scope]), "{path}");
    }
    // Each refusal is audited with user and route.
    let uid = member.body["user"]["id"].as_str().unwrap();
    let is_denied = |r: &portcullis::store::AuditRecord| r.event_type == "access_denied";
    let records = crate::common::audit_until(&srv, uid, |rs| rs.iter().filter(|r| is_denied(r)).count() >= 6).await;
    let denied: Vec<_> = records.into_iter().filter(is_denied).collect();
    assert_eq!(denied.len(), 6);
    assert!(denied.iter().any(|r| r.reason.as_deref() == Some("GET /v1/admin/users needs admin:users:read")));
    srv.stop().await;
}

async fn admin_manages_users_and_metadata_stays_private(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |c| c.tokens.include_metadata = true).await;
    let admin = srv.admin("root@example.com").await;
    let res = srv
        .send(
            Method::POST,
            "/v1/admin/users",
            &admin.access,
            Some(json!({
                "email": "Kim@Example.com", "password": "kim's own passphrase", "name": "Kim",
                "public_metadata": {"plan": "pro"}, "private_metadata": {"stripe_id": "cus_SECRET123"}
            })),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let kim: Value = res.json().await.unwrap();
    let kim_id = kim["id"].as_str().unwrap().to_owned();
    assert_eq!(kim["email"], "kim@example.com");
    assert_eq!(kim["roles"], json!(["member"]));
    assert_eq!(kim["private_metadata"]["stripe_id"], "cus_SECRET123");
    assert_eq!(kim["banned"], false);

    let got: Value =
        srv.send(Method::GET, &format!("/v1/admin/users/{kim_id}"), &admin.access, None).await.json().await.unwrap();
    assert_eq!(got, kim);

    // The user sees public and unsafe metadata, never private: not in /v1/me, not in tokens.
    let t = srv.login("kim@example.com", "kim's own passphrase").await;
    let me_text = srv.get_auth("/v1/me", &t.access).await.text().await.unwrap();
    let me: Value = serde_json::from_str(&me_text).unwrap();
    assert_eq!(me["public_metadata"], json!({"plan": "pro"}));
    assert!(!me_text.contains("cus_SECRET123") && !me_text.contains("private_metadata"), "{me_text}");
    let claims = jwt_part(&t.access, 1);
    assert_eq!(claims["metadata"], json!({"plan": "pro"}));
    assert!(!t.access.contains("cus_SECRET123") && !claims.to_string().contains("cus_SECRET123"));
    assert!(!serde_json::to_string(&t.body).unwrap().contains("cus_SECRET123"));

    // The user writes unsafe_metadata and name, nothing else.
    let res = srv
        .send(
            Method::PATCH,
            "/v1/me",
            &t.access,
            Some(json!({"unsafe_metadata": {"theme": "dark"}, "name": "Kimberly"})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let me: Value = res.json().await.unwrap();
    assert_eq!(me["unsafe_metadata"], json!({"theme": "dark"}));
    assert_eq!(me["name"], "Kimberly");
    let res =
        srv.send(Method::PATCH, "/v1/me", &t.access, Some(json!({"public_metadata": {"plan": "enterprise"}}))).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    let res = srv.send(Method::PATCH, "/v1/me", &t.access, Some(json!({"unsafe_metadata": [1, 2]}))).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    let big = json!({"unsafe_metadata": {"blob": "x".repeat(9000)}});
    let p = assert_problem(
        srv.send(Method::PATCH, "/v1/me", &t.access, Some(big)).await,
        StatusCode::BAD_REQUEST,
        "validation_failed",
    )
    .await;
    assert_eq!(p["errors"][0]["code"], "too_large");

    // Admin PATCH: email (normalised, conflict-checked), metadata; clearing the name with null.
    let path = format!("/v1/admin/users/{kim_id}");
    let res = srv.send(Method::PATCH, &path, &admin.access, Some(json!({"email": "ROOT@example.com"}))).await;
    assert_problem(res, StatusCode::CONFLICT, "conflict").await;
    let res = srv
        .send(
            Method::PATCH,
            &path,
            &admin.access,
            Some(json!({"email": "kim2@example.com", "name": null, "private_metadata": {"tier": 2}})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let updated: Value = res.json().await.unwrap();
    assert_eq!(updated["email"], "kim2@example.com");
    assert!(updated["name"].is_null());
    assert_eq!(updated["private_metadata"], json!({"tier": 2}));
    assert_eq!(updated["unsafe_metadata"], json!({"theme": "dark"}), "untouched fields stay");
    srv.login("kim2@example.com", "kim's own passphrase").await;

    // Unknown ids are 404 problems.
    assert_problem(
        srv.send(Method::GET, "/v1/admin/users/usr_nope", &admin.access, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    srv.stop().await;
}

async fn role_changes_reach_the_next_token(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let admin = srv.admin("boss@example.com").await;
    let res = srv
        .send(Method::POST, "/v1/admin/roles", &admin.access, Some(json!({"name": "billing", "description": "Invoices", "permissions": ["read:invoices", "write:invoices"]})))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let t = srv.user("lee@example.com").await;
    let lee = t.body["user"]["id"].as_str().unwrap().to_owned();
    assert_eq!(jwt_part(&t.access, 1)["scope"], "");

    let res = srv
        .send(Method::POST, &format!("/v1/admin/users/{lee}/roles"), &admin.access, Some(json!({"role": "billing"})))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["roles"], json!(["billing", "member"]));
    let t2 = Tokens::from(srv.refresh(&t.refresh).await.json::<Value>().await.unwrap());
    let claims = jwt_part(&t2.access, 1);
    assert_eq!(claims["roles"], json!(["billing", "member"]));
    assert_eq!(claims["scope"], "read:invoices write:invoices");

    // Changing the role's permissions also reaches the next token.
    let res = srv
        .send(Method::PATCH, "/v1/admin/roles/billing", &admin.access, Some(json!({"permissions": ["read:invoices"]})))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let t3 = Tokens::from(srv.refresh(&t2.refresh).await.json::<Value>().await.unwrap());
    assert_eq!(jwt_part(&t3.access, 1)["scope"], "read:invoices");

    let res = srv.send(Method::DELETE, &format!("/v1/admin/users/{lee}/roles/billing"), &admin.access, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let t4 = Tokens::from(srv.refresh(&t3.refresh).await.json::<Value>().await.unwrap());
    assert_eq!(jwt_part(&t4.access, 1)["roles"], json!(["member"]));
    let res = srv.send(Method::DELETE, &format!("/v1/admin/users/{lee}/roles/billing"), &admin.access, None).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = srv
        .send(Method::POST, &format!("/v1/admin/users/{lee}/roles"), &admin.access, Some(json!({"role": "nope"})))
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;

    // With admin:users:write alone, a role holding more than the caller cannot be
    // granted: no minting admins through user management.
    let k = srv
        .send(Method::POST, "/v1/api-keys", &admin.access, Some(json!({"name": "w", "scopes": ["admin:users:write"]})))
        .await;
    let key = k.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned();
    let res =
        srv.with_key(Method::POST, &format!("/v1/admin/users/{lee}/roles"), &key, Some(json!({"role": "admin"}))).await;
    let p = assert_problem(res, StatusCode::FORBIDDEN, "insufficient_scope").await;
    assert!(p["required_scopes"].as_array().unwrap().iter().any(|s| s == "admin:roles:write"), "{p}");
    let sneaky = json!({"email": "sneaky@example.com", "roles": ["admin"]});
    let res = srv.with_key(Method::POST, "/v1/admin/users", &key, Some(sneaky)).await;
    assert_problem(res, StatusCode::FORBIDDEN, "insufficient_scope").await;
    // Nor act against a user who holds more than the caller: the admin stays intact.
    let boss = admin.body["user"]["id"].as_str().unwrap().to_owned();
    for (method, path, body) in [
        (Method::PATCH, format!("/v1/admin/users/{boss}"), Some(json!({"email": "attacker@evil.test"}))),
        (Method::POST, format!("/v1/admin/users/{boss}/ban"), None),
        (Method::DELETE, format!("/v1/admin/users/{boss}/roles/admin"), None),
        (Method::DELETE, format!("/v1/admin/users/{boss}/sessions"), None),
        (Method::DELETE, format!("/v1/admin/users/{boss}"), None),
    ] {
        assert_problem(srv.with_key(method, &path, &key, body).await, StatusCode::FORBIDDEN, "insufficient_scope")
            .await;
    }
    assert_eq!(srv.me_status(&admin.access).await, StatusCode::OK);
    // Roles within the caller's own permissions (member: none) are fine.
    let res = srv
        .with_key(Method::POST, &format!("/v1/admin/users/{lee}/roles"), &key, Some(json!({"role": "member"})))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    srv.stop().await;
}

async fn roles_crud_and_builtins(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let admin = srv.admin("roles@example.com").await;
    let list: Value = srv.send(Method::GET, "/v1/admin/roles", &admin.access, None).await.json().await.unwrap();
    let names: Vec<&str> = list["data"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "member"]);
    assert_eq!(list["data"][0]["builtin"], true);

    let bad = srv
        .send(
            Method::POST,
            "/v1/admin/roles",
            &admin.access,
            Some(json!({"name": "Bad Name", "permissions": ["ok:x", "NOT OK"]})),
        )
        .await;
    let p = assert_problem(bad, StatusCode::BAD_REQUEST, "validation_failed").await;
    let fields: Vec<&str> = p["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["name", "permissions[1]"]);

    let create = json!({"name": "support", "permissions": ["read:tickets", "read:tickets"]});
    let res = srv.send(Method::POST, "/v1/admin/roles", &admin.access, Some(create.clone())).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(res.json::<Value>().await.unwrap()["permissions"], json!(["read:tickets"]));
    assert_problem(
        srv.send(Method::POST, "/v1/admin/roles", &admin.access, Some(create)).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;

    // In use → 409; unused → 204; built-in → 403 even when unused.
    let t = srv.user("sam@example.com").await;
    let sam = t.body["user"]["id"].as_str().unwrap();
    srv.send(Method::POST, &format!("/v1/admin/users/{sam}/roles"), &admin.access, Some(json!({"role": "support"})))
        .await;
    assert_problem(
        srv.send(Method::DELETE, "/v1/admin/roles/support", &admin.access, None).await,
        StatusCode::CONFLICT,
        "conflict",
    )
    .await;
    srv.send(Method::DELETE, &format!("/v1/admin/users/{sam}/roles/support"), &admin.access, None).await;
    assert_eq!(
        srv.send(Method::DELETE, "/v1/admin/roles/support", &admin.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(
        srv.send(Method::DELETE, "/v1/admin/roles/support", &admin.access, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    for builtin in ["admin", "member"] {
        let res = srv.send(Method::DELETE, &format!("/v1/admin/roles/{builtin}"), &admin.access, None).await;
        assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    }
    // Built-ins are editable.
    let res = srv
        .send(
            Method::PATCH,
            "/v1/admin/roles/member",
            &admin.access,
            Some(json!({"permissions": ["read:own"], "description": null})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let role: Value = res.json().await.unwrap();
    assert_eq!(role["permissions"], json!(["read:own"]));
    assert!(role["description"].is_null());
    srv.stop().await;
}

async fn banned_users_cannot_sign_in_or_refresh(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let admin = srv.admin("ban-admin@example.com").await;
    let t = srv.user("troll@example.com").await;
    let troll = t.body["user"]["id"].as_str().unwrap().to_owned();
    let res = srv.send(Method::POST, &format!("/v1/admin/users/{troll}/ban"), &admin.access, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["banned"], true);
    assert!(body["banned_at"].is_string());
    // Sessions ended at once; refresh and sign-in refused, like a wrong password.
    assert_eq!(srv.me_status(&t.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(srv.refresh(&t.refresh).await.status(), StatusCode::UNAUTHORIZED);
    let res = srv.post("/v1/auth/login", json!({"email": "troll@example.com", "password": PASSWORD})).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    // Filter by banned.
    let list: Value =
        srv.send(Method::GET, "/v1/admin/users?banned=true", &admin.access, None).await.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["id"], troll);
    // Admins cannot lock themselves out.
    let me = admin.body["user"]["id"].as_str().unwrap();
    assert_problem(
        srv.send(Method::POST, &format!("/v1/admin/users/{me}/ban"), &admin.access, None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // Unban: sign-in works again.
    assert_eq!(
        srv.send(Method::POST, &format!("/v1/admin/users/{troll}/unban"), &admin.access, None).await.status(),
        StatusCode::OK
    );
    srv.login("troll@example.com", PASSWORD).await;
    srv.stop().await;
}

async fn deleting_a_user_kills_sessions_and_keys(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let admin = srv.admin("del-admin@example.com").await;
    let t = srv.user("gone@example.com").await;
    let gone = t.body["user"]["id"].as_str().unwrap().to_owned();
    let key: Value =
        srv.send(Method::POST, "/v1/api-keys", &t.access, Some(json!({"name": "ci"}))).await.json().await.unwrap();
    let key = key["key"].as_str().unwrap().to_owned();
    assert_eq!(srv.with_key(Method::GET, "/v1/me", &key, None).await.status(), StatusCode::OK);

    assert_eq!(
        srv.send(Method::DELETE, &format!("/v1/admin/users/{gone}"), &admin.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(srv.me_status(&t.access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(srv.refresh(&t.refresh).await.status(), StatusCode::UNAUTHORIZED);
    // The key stops within the 1 s cache lifetime.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(srv.with_key(Method::GET, "/v1/me", &key, None).await.status(), StatusCode::UNAUTHORIZED);
    assert_problem(
        srv.send(Method::DELETE, &format!("/v1/admin/users/{gone}"), &admin.access, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // The email is free again.
    srv.register("gone@example.com", PASSWORD).await;
    // Ending all sessions of a user.
    let u = srv.login("gone@example.com", PASSWORD).await;
    let uid = u.body["user"]["id"].as_str().unwrap();
    assert_eq!(
        srv.send(Method::DELETE, &format!("/v1/admin/users/{uid}/sessions"), &admin.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(srv.me_status(&u.access).await, StatusCode::UNAUTHORIZED);
    srv.stop().await;
}

async fn pagination_is_stable_under_concurrent_inserts(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let admin = srv.admin("pager@example.com").await;
    // Seed 30 users without a password (no hashing: fast).
    for i in 0..30 {
        let res = srv
            .send(
                Method::POST,
                "/v1/admin/users",
                &admin.access,
                Some(json!({"email": format!("p{i:02}@example.com")})),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut inserted = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/admin/users?limit=7&cursor={c}"),
            None => "/v1/admin/users?limit=7".to_owned(),
        };
        let page: Value = srv.send(Method::GET, &path, &admin.access, None).await.json().await.unwrap();
        for u in page["data"].as_array().unwrap() {
            seen.push(u["id"].as_str().unwrap().to_owned());
        }
        // Insert while paging.
        for _ in 0..3 {
            let email = format!("late{inserted}@example.com");
            inserted += 1;
            srv.send(Method::POST, "/v1/admin/users", &admin.access, Some(json!({"email": email}))).await;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(seen.len() < 1000, "paging never ends");
    }
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), seen.len(), "no user listed twice");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, seen, "creation order");
    assert!(seen.len() >= 31, "every pre-existing user listed: {}", seen.len());
    // Filters: email substring and role.
    let page: Value =
        srv.send(Method::GET, "/v1/admin/users?email=P0&limit=200", &admin.access, None).await.json().await.unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 10);
    let page: Value =
        srv.send(Method::GET, "/v1/admin/users?role=admin", &admin.access, None).await.json().await.unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    let page: Value =
        srv.send(Method::GET, "/v1/admin/users?email=%25", &admin.access, None).await.json().await.unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 0, "LIKE wildcards are literal");
    srv.stop().await;
}

async fn bad_input_to_admin_routes(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let admin = srv.admin("strict@example.com").await;
    for path in [
        "/v1/admin/users?limit=0",
        "/v1/admin/users?limit=abc",
        "/v1/admin/users?cursor=!!",
        "/v1/admin/users?banned=maybe",
    ] {
        assert_problem(
            srv.send(Method::GET, path, &admin.access, None).await,
            StatusCode::BAD_REQUEST,
            "validation_failed",
        )
        .await;
    }
    // A path segment that is not UTF-8, and NUL bytes (which PostgreSQL cannot store).
    let res = srv.send(Method::GET, "/v1/admin/users/%FF", &admin.access, None).await;
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert!(res.status().is_client_error());
    let res = srv.send(Method::GET, "/v1/admin/users/usr_%00", &admin.access, None).await;
    assert!(res.status().is_client_error(), "{}", res.status());
    let res = srv.send(Method::DELETE, "/v1/me/sessions/%00", &admin.access, None).await;
    assert!(res.status().is_client_error(), "{}", res.status());
    let res = srv
        .send(
            Method::POST,
            "/v1/admin/users",
            &admin.access,
            Some(json!({"email": "n@example.com", "name": "a\u{0}b"})),
        )
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    let res =
        srv.send(Method::PATCH, "/v1/me", &admin.access, Some(json!({"unsafe_metadata": {"k": "nul\u{0}"}}))).await;
    assert!(res.status() == StatusCode::OK || res.status() == StatusCode::BAD_REQUEST, "{}", res.status());
    srv.stop().await;
}
