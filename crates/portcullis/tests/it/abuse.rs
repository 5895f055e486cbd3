//! Abuse protection and the audit trail: rate limits shared by nodes, progressive
//! lockout that looks the same for unknown emails, trusted proxies, a bounded hash
//! pool, and audit records for every event — without a secret in them.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Backend, Data, PASSWORD, TestServer, assert_problem};

crate::backend_tests!(
    sixth_attempt_in_a_minute_is_429,
    rate_limit_is_shared_by_two_nodes,
    registration_is_rate_limited,
    junk_api_keys_are_throttled_without_flooding_the_audit,
    lockout_progresses_and_looks_like_unknown_emails,
    concurrent_guesses_cannot_outrun_the_lock,
    forwarded_for_only_from_trusted_proxies,
    full_hash_queue_is_503_while_health_answers,
    every_event_is_audited_and_queryable,
    no_secret_in_the_database_or_audit,
    concurrent_right_passwords_never_fail,
);

/// A success deletes the email's lockout row while other sign-ins of the same email
/// are reserving it: on PostgreSQL that once answered 500 (found by the SIGTERM
/// test). Every answer is a success or a transient 429, never a server error.
async fn concurrent_right_passwords_never_fail(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |c| c.security.lockout_threshold = 20).await;
    srv.register("many@example.com", PASSWORD).await;
    for _ in 0..5 {
        let runs = (0..12).map(|_| login_raw(&srv, "many@example.com", PASSWORD, None));
        for res in futures::future::join_all(runs).await {
            assert!(matches!(res.status().as_u16(), 200 | 429 | 503), "{}", res.status());
        }
    }
    srv.stop().await;
}

fn strict(c: &mut portcullis::config::Config) {
    c.security.login_rate = "5/1m".parse().unwrap();
}

async fn login_raw(srv: &TestServer, email: &str, password: &str, xff: Option<&str>) -> reqwest::Response {
    let mut req = srv.client.post(srv.url("/v1/auth/login")).json(&json!({"email": email, "password": password}));
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    req.send().await.unwrap()
}

async fn sixth_attempt_in_a_minute_is_429(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, strict).await;
    srv.register("rl@example.com", PASSWORD).await;
    for i in 0..5 {
        let pw = if i == 2 { PASSWORD } else { "wrong passphrase" };
        assert_ne!(
            login_raw(&srv, "rl@example.com", pw, None).await.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "attempt {i}"
        );
    }
    // The sixth, even with the right password: 429 with Retry-After in seconds.
    let res = login_raw(&srv, "rl@example.com", PASSWORD, None).await;
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    // The previous window keeps weight in the sliding estimate: up to 4/3 of a window.
    assert!((1..=80).contains(&retry), "{retry}");
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Other endpoints are not throttled by it.
    assert_eq!(srv.client.get(srv.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    srv.stop().await;
}

async fn rate_limit_is_shared_by_two_nodes(backend: Backend) {
    let data = Data::new(&backend).await;
    let a = TestServer::start_on(&data, strict).await;
    let b = TestServer::start_on(&data, strict).await;
    for i in 0..5 {
        let node = if i % 2 == 0 { &a } else { &b };
        assert_eq!(
            login_raw(node, "nobody@example.com", "whatever pass", None).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    for node in [&a, &b] {
        assert_problem(
            login_raw(node, "nobody@example.com", "whatever pass", None).await,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
        )
        .await;
    }
    a.stop().await;
    b.stop().await;
}

async fn lockout_progresses_and_looks_like_unknown_emails(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |c| {
        c.security.lockout_threshold = 3;
        c.security.lockout_durations = vec!["2s".parse().unwrap(), "4s".parse().unwrap()];
    })
    .await;
    srv.register("victim@example.com", PASSWORD).await;
    for email in ["victim@example.com", "ghost@example.com"] {
        for _ in 0..3 {
            assert_problem(
                login_raw(&srv, email, "bad guess one", None).await,
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
            )
            .await;
        }
    }
    // Locked: the real account (even with its right password) and the unknown email
    // answer exactly alike.
    let real = login_raw(&srv, "victim@example.com", PASSWORD, None).await;
    let ghost = login_raw(&srv, "ghost@example.com", PASSWORD, None).await;
    let (rr, gr) = (real.headers()["retry-after"].clone(), ghost.headers()["retry-after"].clone());
    assert!(["1", "2"].contains(&rr.to_str().unwrap()) && ["1", "2"].contains(&gr.to_str().unwrap()));
    let real = assert_problem(real, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    let ghost = assert_problem(ghost, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    assert_eq!(real, ghost);

    // After 2 s the lock ends; ONE more failure locks again, now for 4 s.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_problem(
        login_raw(&srv, "victim@example.com", "bad guess two", None).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    let res = login_raw(&srv, "victim@example.com", PASSWORD, None).await;
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((3..=4).contains(&retry), "second lock is the longer one: {retry}");
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;

    // An admin unlocks at once; success resets the count.
    let admin = srv.admin("unlocker@example.com").await;
    let vid = {
        let list: Value =
            srv.send(Method::GET, "/v1/admin/users?email=victim", &admin.access, None).await.json().await.unwrap();
        list["data"][0]["id"].as_str().unwrap().to_owned()
    };
    assert_eq!(
        srv.send(Method::POST, &format!("/v1/admin/users/{vid}/unlock"), &admin.access, None).await.status(),
        StatusCode::OK
    );
    srv.login("victim@example.com", PASSWORD).await;
    for _ in 0..2 {
        login_raw(&srv, "victim@example.com", "bad guess three", None).await;
    }
    srv.login("victim@example.com", PASSWORD).await;

    // Password change checks the current password through the same lockout.
    let t = srv.login("victim@example.com", PASSWORD).await;
    for _ in 0..3 {
        let res = srv
            .post_auth(
                "/v1/me/password",
                &t.access,
                json!({"current_password": "nope nope", "new_password": "a new good passphrase"}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }
    let res = srv
        .post_auth(
            "/v1/me/password",
            &t.access,
            json!({"current_password": PASSWORD, "new_password": "a new good passphrase"}),
        )
        .await;
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    let res = login_raw(&srv, "victim@example.com", PASSWORD, None).await;
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;

    // Lockouts and unlocks are audited.
    let records =
        crate::common::audit_until(&srv, &vid, |rs| rs.iter().any(|r| r.event_type == "account_unlocked")).await;
    assert!(records.iter().any(|r| r.event_type == "account_locked"));
    assert!(records.iter().any(|r| r.event_type == "login" && r.reason.as_deref() == Some("locked")));
    srv.stop().await;
}

async fn forwarded_for_only_from_trusted_proxies(backend: Backend) {
    let data = Data::new(&backend).await;
    // Behind a trusted proxy (the test client is 127.0.0.1): the header names the client.
    let srv = TestServer::start_on(&data, |c| {
        strict(c);
        c.security.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    for _ in 0..5 {
        login_raw(&srv, "x@example.com", "whatever pass", Some("198.51.100.7")).await;
    }
    assert_problem(
        login_raw(&srv, "x@example.com", "whatever pass", Some("198.51.100.7")).await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    )
    .await;
    // Another client behind the same proxy is not affected; a spoofed left entry is not believed.
    assert_eq!(
        login_raw(&srv, "x2@example.com", "whatever pass", Some("198.51.100.8")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_problem(
        login_raw(&srv, "x3@example.com", "whatever pass", Some("203.0.113.1, 198.51.100.7")).await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    )
    .await;
    // A forged header line followed by the proxy's own line: the proxy's is believed.
    let res = srv
        .client
        .post(srv.url("/v1/auth/login"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-for", "198.51.100.7")
        .json(&json!({"email": "x4@example.com", "password": "whatever pass"}))
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // The audit trail records the real client.
    let admin = srv.admin("px@example.com").await;
    let page: Value = srv
        .send(Method::GET, "/v1/admin/audit?type=login&outcome=failure&limit=200", &admin.access, None)
        .await
        .json()
        .await
        .unwrap();
    assert!(page["data"].as_array().unwrap().iter().any(|r| r["ip"] == "198.51.100.8"), "{page}");
    srv.stop().await;

    // No trusted proxies: the header is ignored, every attempt counts against the socket.
    let srv = TestServer::start_on(&data, strict).await;
    for i in 0..5 {
        login_raw(&srv, "y@example.com", "whatever pass", Some(&format!("192.0.2.{i}"))).await;
    }
    assert_problem(
        login_raw(&srv, "y@example.com", "whatever pass", Some("192.0.2.99")).await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    )
    .await;
    srv.stop().await;
}

async fn full_hash_queue_is_503_while_health_answers(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |c| {
        c.security.hash_concurrency = 1;
        c.security.hash_queue = 0;
    })
    .await;
    srv.register("flood@example.com", PASSWORD).await;
    let held = srv.login("flood@example.com", PASSWORD).await;
    let mut logins = Vec::new();
    for _ in 0..12 {
        let (client, url) = (srv.client.clone(), srv.url("/v1/auth/login"));
        logins.push(tokio::spawn(async move {
            let res = client
                .post(url)
                .json(&json!({"email": "flood@example.com", "password": PASSWORD}))
                .send()
                .await
                .unwrap();
            let retry = res.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
            (res.status(), retry, res.json::<Value>().await.unwrap())
        }));
    }
    // Meanwhile the cheap endpoints answer at once.
    for _ in 0..5 {
        let start = std::time::Instant::now();
        assert_eq!(srv.client.get(srv.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
        assert_eq!(srv.client.get(srv.url("/.well-known/jwks.json")).send().await.unwrap().status(), StatusCode::OK);
        assert_eq!(
            srv.me_status(&held.access).await,
            StatusCode::OK,
            "bearer verification is not queued behind hashing"
        );
        assert!(start.elapsed() < Duration::from_secs(2));
    }
    let mut overloaded = 0;
    let mut ok = 0;
    for l in logins {
        let (status, retry, body) = l.await.unwrap();
        match status {
            StatusCode::SERVICE_UNAVAILABLE => {
                overloaded += 1;
                assert_eq!(body["code"], "overloaded");
                assert!(retry.is_some());
            }
            StatusCode::OK => ok += 1,
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(overloaded > 0 && ok > 0, "ok {ok}, overloaded {overloaded}");
    srv.stop().await;
}

async fn every_event_is_audited_and_queryable(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |c| {
        c.security.login_rate = "9/1m".parse().unwrap();
        c.security.lockout_threshold = 2;
    })
    .await;
    let admin = srv.admin("auditor@example.com").await; // login 1
    let member = srv.user("curious@example.com").await; // login 1b
    let t = srv.user("eve@example.com").await; // login 2
    let eve = t.body["user"]["id"].as_str().unwrap().to_owned();
    login_raw(&srv, "nobody@example.com", "wrong passphrase", None).await; // 3 unknown_user
    login_raw(&srv, "eve@example.com", "wrong passphrase", None).await; // 4 bad_password
    let next = crate::common::Tokens::from(srv.refresh(&t.refresh).await.json::<Value>().await.unwrap()); // refresh
    srv.refresh(&t.refresh).await; // refresh_reuse
    let t = srv.login("eve@example.com", PASSWORD).await; // 5
    let _ = next;
    let k: Value =
        srv.send(Method::POST, "/v1/api-keys", &t.access, Some(json!({"name": "k"}))).await.json().await.unwrap();
    srv.with_key(Method::GET, "/v1/me", "pcl_definitelynotakey", None).await; // api_key_auth failure
    srv.send(Method::DELETE, &format!("/v1/api-keys/{}", k["id"].as_str().unwrap()), &t.access, None).await;
    let t2 = srv.login("eve@example.com", PASSWORD).await; // 6
    let sid2 = crate::common::jwt_part(&t2.access, 1)["sid"].as_str().unwrap().to_owned();
    srv.send(Method::DELETE, &format!("/v1/me/sessions/{sid2}"), &t.access, None).await; // session_revoked
    srv.post_auth("/v1/auth/logout", &t.access, json!({})).await; // logout
    srv.send(Method::POST, &format!("/v1/admin/users/{eve}/ban"), &admin.access, None).await;
    login_raw(&srv, "eve@example.com", PASSWORD, None).await; // 7 banned
    srv.send(Method::POST, &format!("/v1/admin/users/{eve}/unban"), &admin.access, None).await;
    login_raw(&srv, "locky@example.com", "wrong passphrase", None).await; // 8
    login_raw(&srv, "locky@example.com", "wrong passphrase", None).await; // 9: rate limited
    srv.send(Method::POST, &format!("/v1/admin/users/{eve}/unlock"), &admin.access, None).await;

    let expected = [
        ("login", "success", None),
        ("login", "failure", Some("unknown_user")),
        ("login", "failure", Some("bad_password")),
        ("login", "failure", Some("banned")),
        ("refresh", "success", None),
        ("refresh_reuse", "failure", Some("refresh_token_reused")),
        ("logout", "success", None),
        ("session_revoked", "success", None),
        ("api_key_created", "success", None),
        ("api_key_auth", "failure", Some("invalid_api_key")),
        ("api_key_revoked", "success", None),
        ("user_banned", "success", None),
        ("user_unbanned", "success", None),
        ("account_unlocked", "success", None),
        ("user_registered", "success", None),
    ];
    let mut all = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        all.clear();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/admin/audit?limit=10&cursor={c}"),
                None => "/v1/admin/audit?limit=10".to_owned(),
            };
            let page: Value = srv.send(Method::GET, &path, &admin.access, None).await.json().await.unwrap();
            all.extend(page["data"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let missing: Vec<_> = expected
            .iter()
            .filter(|(ty, out, why)| {
                !all.iter().any(|r| r["type"] == *ty && r["outcome"] == *out && why.is_none_or(|w| r["reason"] == w))
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "missing audit events: {missing:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Newest first, no duplicates across pages, every field present.
    let ids: Vec<&str> = all.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted);
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len());
    let banned = all.iter().find(|r| r["type"] == "user_banned").unwrap();
    assert_eq!(banned["user_id"], eve);
    assert_eq!(banned["actor"], admin.body["user"]["id"], "who did what to whom");
    assert_eq!(banned["ip"], "127.0.0.1");
    assert!(banned["request_id"].as_str().unwrap().starts_with("req_"));
    assert!(banned["user_agent"].is_string());

    // Filters.
    let q = |path: String| {
        let srv = &srv;
        let token = admin.access.clone();
        async move {
            srv.send(Method::GET, &path, &token, None).await.json::<Value>().await.unwrap()["data"]
                .as_array()
                .unwrap()
                .clone()
        }
    };
    let eves = q(format!("/v1/admin/audit?user_id={eve}&limit=200")).await;
    assert!(!eves.is_empty() && eves.iter().all(|r| r["user_id"] == eve));
    let failures = q("/v1/admin/audit?type=login&outcome=failure&limit=200".into()).await;
    assert!(failures.len() >= 4 && failures.iter().all(|r| r["type"] == "login" && r["outcome"] == "failure"));
    let newest = all[0]["time"].as_str().unwrap().to_owned();
    let future = q("/v1/admin/audit?since=2999-01-01T00:00:00Z".into()).await;
    assert!(future.is_empty());
    let until = q(format!("/v1/admin/audit?until={}&limit=200", all.last().unwrap()["time"].as_str().unwrap())).await;
    assert!(until.len() < all.len());
    let _ = newest;
    for bad in ["since=yesterday", "outcome=maybe", "limit=0"] {
        let res = srv.send(Method::GET, &format!("/v1/admin/audit?{bad}"), &admin.access, None).await;
        assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    }
    // Members cannot read the trail.
    assert_problem(
        srv.send(Method::GET, "/v1/admin/audit", &member.access, None).await,
        StatusCode::FORBIDDEN,
        "insufficient_scope",
    )
    .await;
    srv.stop().await;
    // The refused attempt (9) left no record of its own: the block's summary, with
    // route and count, is written when the block ends, or (here) at shutdown.
    let db = portcullis::store::Db::connect(&data.config().database_url()).await.unwrap();
    let filter = portcullis::store::AuditFilter { event_type: Some("rate_limited".into()), ..Default::default() };
    let summaries = db.audit_list(&filter, None, 10).await.unwrap();
    assert_eq!(summaries.len(), 1, "{summaries:?}");
    assert_eq!(summaries[0].reason.as_deref(), Some("/v1/auth/login 1"));
    assert_eq!(summaries[0].ip.as_deref(), Some("127.0.0.1"));
    let filter = portcullis::store::AuditFilter { event_type: Some("login".into()), ..Default::default() };
    let logins = db.audit_list(&filter, None, 100).await.unwrap();
    assert!(logins.iter().all(|r| r.reason.as_deref() != Some("rate_limited")));
    db.close().await;
}

async fn no_secret_in_the_database_or_audit(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |_| {}).await;
    let t = srv.user("secret@example.com").await;
    let rotated = crate::common::Tokens::from(srv.refresh(&t.refresh).await.json::<Value>().await.unwrap());
    let k: Value =
        srv.send(Method::POST, "/v1/api-keys", &rotated.access, Some(json!({"name": "k"}))).await.json().await.unwrap();
    let key = k["key"].as_str().unwrap().to_owned();
    srv.with_key(Method::GET, "/v1/me", &key, None).await;
    login_raw(&srv, "secret@example.com", "a wrong but real-looking passphrase", None).await;
    srv.post_auth(
        "/v1/me/password",
        &rotated.access,
        json!({"current_password": PASSWORD, "new_password": "the next passphrase"}),
    )
    .await;
    let secrets = [
        PASSWORD,
        "a wrong but real-looking passphrase",
        "the next passphrase",
        &t.access,
        &t.refresh,
        &rotated.access,
        &rotated.refresh,
        &key,
    ];
    let uid = t.body["user"]["id"].as_str().unwrap();
    crate::common::audit_until(&srv, uid, |rs| rs.iter().any(|r| r.event_type == "password_change")).await;
    srv.stop().await;

    // Every text column of every table, on either backend.
    let db = portcullis::store::Db::connect(&data.config().database_url()).await.unwrap();
    let dump = db.debug_dump_text().await.unwrap();
    assert!(dump.contains("secret@example.com"), "the dump sees the data");
    for s in secrets {
        assert!(!dump.contains(s), "a secret is stored in the database");
    }
    db.close().await;
    // And the raw SQLite files, WAL included.
    if matches!(backend, Backend::Sqlite) {
        for entry in std::fs::read_dir(data.data_dir()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            for s in secrets {
                assert!(!text.contains(s), "a secret is in a database file");
            }
        }
    }
}

async fn concurrent_guesses_cannot_outrun_the_lock(backend: Backend) {
    let data = Data::new(&backend).await;
    // Two nodes, attackers spread over many addresses behind a trusted proxy.
    let cfg = |c: &mut portcullis::config::Config| {
        c.security.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        c.security.lockout_threshold = 5;
    };
    let a = TestServer::start_on(&data, cfg).await;
    let b = TestServer::start_on(&data, cfg).await;
    a.register("target@example.com", PASSWORD).await;
    // From one address: at most the threshold can be checked, however many race.
    let mut tasks = Vec::new();
    for i in 0..40 {
        let srv = if i % 2 == 0 { &a } else { &b };
        let (client, url) = (srv.client.clone(), srv.url("/v1/auth/login"));
        tasks.push(tokio::spawn(async move {
            let body = json!({"email": "target@example.com", "password": format!("guess number {i}")});
            let res = client.post(url).header("x-forwarded-for", "198.51.100.7").json(&body).send().await.unwrap();
            res.json::<Value>().await.unwrap()["code"].as_str().unwrap().to_owned()
        }));
    }
    let mut checked = 0;
    for t in tasks {
        match t.await.unwrap().as_str() {
            "invalid_credentials" => checked += 1,
            // Locked, or refused while the allowed attempts are in flight.
            "account_locked" | "rate_limited" => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(checked <= 5, "{checked} guesses were checked against the hash; the threshold is 5");
    // That address is locked now, even for the right password; the owner, from
    // another address, is not (the lock is the attacker's, not the victim's).
    let res = login_raw(&a, "target@example.com", PASSWORD, Some("198.51.100.7")).await;
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "account_locked").await;
    let res = login_raw(&b, "target@example.com", PASSWORD, Some("203.0.113.50")).await;
    assert_eq!(res.status(), StatusCode::OK);
    a.stop().await;
    b.stop().await;
}

async fn registration_is_rate_limited(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |c| c.security.register_rate = "3/1m".parse().unwrap()).await;
    for i in 0..3 {
        srv.register(&format!("signup{i}@example.com"), PASSWORD).await;
    }
    let res = srv.post("/v1/auth/register", json!({"email": "signup9@example.com", "password": PASSWORD})).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Sign-in is a separate budget.
    srv.login("signup0@example.com", PASSWORD).await;
    srv.stop().await;
}

async fn junk_api_keys_are_throttled_without_flooding_the_audit(backend: Backend) {
    let data = Data::new(&backend).await;
    let srv = TestServer::start_on(&data, |c| c.security.api_key_failure_rate = "3/1m".parse().unwrap()).await;
    let admin = srv.admin("keyflood@example.com").await;
    let good: Value = srv
        .send(Method::POST, "/v1/api-keys", &admin.access, Some(json!({"name": "good"})))
        .await
        .json()
        .await
        .unwrap();
    for _ in 0..3 {
        assert_problem(
            srv.with_key(Method::GET, "/v1/me", "pcl_junk", None).await,
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        )
        .await;
    }
    for _ in 0..20 {
        let res = srv.with_key(Method::GET, "/v1/me", "pcl_junk", None).await;
        assert!(res.headers().contains_key("retry-after"));
        assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    }
    // A real key from the same client still works: only failures are counted.
    assert_eq!(srv.with_key(Method::GET, "/v1/me", good["key"].as_str().unwrap(), None).await.status(), StatusCode::OK);
    // Three audit rows, not twenty-three.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let page: Value = srv
        .send(Method::GET, "/v1/admin/audit?type=api_key_auth&limit=200", &admin.access, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 3);
    srv.stop().await;
}
