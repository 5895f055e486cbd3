//! Webhooks: endpoints under `/v1/admin/webhooks`, events written with the change
//! they announce, delivered at least once to a real receiver and verified there by
//! the libraries receivers use — npm `standardwebhooks` and `svix`, PyPI `svix` and
//! `standardwebhooks` — retried on the schedule, replayed with the same id, signed
//! by both secrets during a rotation's grace, never sent to private targets.

use std::{process::Command, time::Duration};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{
    common::{Backend, Data, PASSWORD, TestServer, assert_problem},
    receiver::{Received, Receiver},
};

/// Creates an endpoint for `url` taking `events`; its view (with the secret).
pub async fn create_hook(s: &TestServer, admin: &str, url: &str, events: &[&str]) -> Value {
    let res = s.post_auth("/v1/admin/webhooks", admin, json!({"url": url, "events": events})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json().await.unwrap()
}

/// The deliveries the receiver got at `path`, in order.
fn at(rx: &Receiver, path: &str) -> Vec<Received> {
    rx.all().into_iter().filter(|r| r.path == path).collect()
}

/// Waits (up to 15 s) for `n` deliveries at `path`.
async fn wait_for(rx: &Receiver, path: &str, n: usize) -> Vec<Received> {
    wait_up_to(rx, path, n, Duration::from_secs(15)).await
}

/// Waits up to `limit` for `n` deliveries at `path`.
async fn wait_up_to(rx: &Receiver, path: &str, n: usize, limit: Duration) -> Vec<Received> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let got = at(rx, path);
        if got.len() >= n {
            return got;
        }
        assert!(std::time::Instant::now() < deadline, "{} of {n} deliveries arrived at {path}", got.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn python_ready() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import svix, standardwebhooks"])
        .output()
        .is_ok_and(|o| o.status.success());
    crate::interop::require(
        ok,
        "python3 with svix and standardwebhooks (pip install -r tests/interop/requirements.txt)",
    )
}

fn run_with_stdin(program: &str, args: &[&str], dir: std::path::PathBuf, input: &str) -> Value {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{program} failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap()
}

/// For each delivery, the indexes of the `secrets` under which EVERY library
/// verified it (npm `standardwebhooks` and `svix`, PyPI `svix` and
/// `standardwebhooks`); they must agree. `None` when the libraries are missing
/// (outside CI).
pub fn verified_by(secrets: &[&str], deliveries: &[Received]) -> Option<Vec<Vec<u64>>> {
    if !crate::interop::node_ready() || !python_ready() {
        return None;
    }
    let input = json!({
        "secrets": secrets,
        "deliveries": deliveries.iter().map(|d| {
            let h: serde_json::Map<String, Value> =
                d.headers.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
            json!({"headers": h, "body": String::from_utf8_lossy(&d.body)})
        }).collect::<Vec<_>>(),
    })
    .to_string();
    let dir = crate::interop::interop_dir();
    let node = run_with_stdin("node", &["oidc/webhook_verify.mjs"], dir.clone(), &input);
    let python = run_with_stdin("python3", &["webhook_verify.py"], dir, &input);
    let mut out = Vec::new();
    for (i, d) in deliveries.iter().enumerate() {
        let by = |v: &Value, lib: &str| -> Vec<u64> {
            v[i][lib].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
        };
        let all =
            [by(&node, "standardwebhooks"), by(&node, "svix"), by(&python, "svix"), by(&python, "standardwebhooks")];
        assert!(all.iter().all(|a| *a == all[0]), "the libraries disagree on delivery {i} ({d:?}): {all:?}");
        out.push(all[0].clone());
    }
    Some(out)
}

fn body(r: &Received) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

/// The README's promise: a sign-up arrives as `user.created`, verified by the
/// receivers' libraries, shaped like the admin API's view, with no secret.
async fn signup_arrives_as_a_verified_user_created(backend: Backend) {
    let data = Data::new(&backend).await;
    let rx = Receiver::start().await;
    let s = TestServer::start_on(&data, |_| {}).await;
    let admin = s.admin("admin@example.com").await.access;
    let hook = create_hook(&s, &admin, &format!("{}/hooks", rx.url), &["user.created"]).await;
    let secret = hook["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{hook}");
    // Shown once: never again.
    let id = hook["id"].as_str().unwrap();
    let again: Value = s.get_auth(&format!("/v1/admin/webhooks/{id}"), &admin).await.json().await.unwrap();
    assert!(again.get("secret").is_none(), "{again}");
    assert_eq!((again["enabled"].clone(), again["events"].clone()), (json!(true), json!(["user.created"])));

    let ann = s.register("ann@example.com", PASSWORD).await;
    let got = wait_for(&rx, "/hooks", 1).await;
    let event = body(&got[0]);
    assert_eq!(event["type"], "user.created");
    assert_eq!(event["data"]["id"], ann["user"]["id"]);
    assert_eq!(event["data"]["email"], "ann@example.com");
    assert_eq!(event["data"]["banned"], false);
    assert!(event["timestamp"].as_str().unwrap().ends_with('Z'), "{event}");
    let text = String::from_utf8_lossy(&got[0].body).to_string();
    assert!(!text.contains("argon2") && !text.contains("password"), "no hash in an event: {text}");
    assert_eq!(got[0].header("webhook-id"), event["id"].as_str(), "the id header is the event's id");
    for h in ["id", "timestamp", "signature"] {
        assert_eq!(got[0].header(&format!("webhook-{h}")), got[0].header(&format!("svix-{h}")), "{h}");
    }
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    if let Some(v) = verified_by(&[&secret, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"], &got) {
        assert_eq!(v, vec![vec![0]], "verified under its secret only");
    }
    // Not subscribed: the admin's own sign-in above sent nothing else.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(at(&rx, "/hooks").len(), 1, "one event, once");
    s.stop().await;
}

/// 500, then 200: retried on the (shortened) schedule, delivered once, and the
/// delivery log shows both attempts.
async fn a_failed_delivery_is_retried_until_delivered_once(backend: Backend) {
    let data = Data::new(&backend).await;
    let rx = Receiver::start().await;
    rx.script(&[500]);
    rx.answer(204);
    let s = TestServer::start_on(&data, |_| {}).await;
    let admin = s.admin("admin@example.com").await.access;
    let hook = create_hook(&s, &admin, &format!("{}/hooks", rx.url), &["*"]).await;
    let id = hook["id"].as_str().unwrap();
    s.register("bob@example.com", PASSWORD).await;
    let got = wait_for(&rx, "/hooks", 2).await;
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"), "a retry keeps its id");
    assert_eq!(got[0].body, got[1].body, "and its body");
    let (t0, t1): (i64, i64) = (
        got[0].header("webhook-timestamp").unwrap().parse().unwrap(),
        got[1].header("webhook-timestamp").unwrap().parse().unwrap(),
    );
    assert!(t1 >= t0, "each attempt is signed at its own time");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(at(&rx, "/hooks").len(), 2, "delivered once: no attempt after the 2xx");

    let page: Value =
        s.get_auth(&format!("/v1/admin/webhooks/{id}/deliveries?status=delivered"), &admin).await.json().await.unwrap();
    let d = &page["data"][0];
    assert_eq!(
        (d["event_type"].clone(), d["status"].clone(), d["attempts"].clone()),
        (json!("user.created"), json!("delivered"), json!(2)),
        "{page}"
    );
    assert_eq!(d["event_id"].as_str(), got[0].header("webhook-id"));
    let codes: Vec<Value> = d["history"].as_array().unwrap().iter().map(|a| a["status_code"].clone()).collect();
    assert_eq!(codes, vec![json!(500), json!(204)], "{d}");
    assert_eq!(d["history"][0]["error"], "the receiver answered 500");
    assert_eq!(d["history"][0]["response"], "{}", "the answer's first KiB is kept");
    let none: Value =
        s.get_auth(&format!("/v1/admin/webhooks/{id}/deliveries?status=failed"), &admin).await.json().await.unwrap();
    assert_eq!(none["data"], json!([]));
    let bad = s.get_auth(&format!("/v1/admin/webhooks/{id}/deliveries?status=lost"), &admin).await;
    assert_problem(bad, StatusCode::BAD_REQUEST, "validation_failed").await;
    s.stop().await;
}

/// A receiver that never says yes: the schedule runs out and the delivery is
/// given up (failed); an endpoint failing past `disable_after` is disabled,
/// audited and its operators mailed.
async fn a_receiver_that_keeps_failing_is_disabled(backend: Backend) {
    let data = Data::new(&backend).await;
    let rx = Receiver::start().await;
    rx.answer(503);
    let s = TestServer::start_on(&data, |cfg| {
        cfg.webhooks.disable_after = portcullis::units::HumanDuration(Duration::from_millis(300));
        cfg.webhooks.notify_email = Some("ops@example.com".into());
    })
    .await;
    let admin = s.admin("admin@example.com").await.access;
    let hook = create_hook(&s, &admin, &format!("{}/hooks", rx.url), &["user.created"]).await;
    let id = hook["id"].as_str().unwrap().to_owned();
    s.register("cy@example.com", PASSWORD).await;
    // Schedule: first attempt, then 200 ms and 400 ms: three attempts in all.
    let got = wait_for(&rx, "/hooks", 3).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let view = loop {
        let v: Value = s.get_auth(&format!("/v1/admin/webhooks/{id}"), &admin).await.json().await.unwrap();
        if v["enabled"] == false {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(view["disabled_reason"].as_str().unwrap().contains("failing"), "{view}");
    let page: Value =
        s.get_auth(&format!("/v1/admin/webhooks/{id}/deliveries?status=failed"), &admin).await.json().await.unwrap();
    assert_eq!(page["data"][0]["attempts"], 3, "{page}");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let audit: Value = s.get_auth("/v1/admin/audit?type=webhook_disabled", &admin).await.json().await.unwrap();
        if audit["data"].as_array().is_some_and(|a| a.iter().any(|r| r["reason"].as_str().unwrap_or("").contains(&id)))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{audit}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mails: Value = s.get_auth("/v1/admin/emails", &admin).await.json().await.unwrap();
    assert!(
        mails["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["to"] == "ops@example.com" && m["template"] == "webhook_disabled"),
        "{mails}"
    );
    // Disabled: later events are not sent to it; enabling starts again.
    s.register("dee@example.com", PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(at(&rx, "/hooks").len(), got.len().max(3));
    rx.answer(200);
    let on = s.send(Method::PATCH, &format!("/v1/admin/webhooks/{id}"), &admin, Some(json!({"enabled": true}))).await;
    let on: Value = on.json().await.unwrap();
    assert_eq!(
        (on["enabled"].clone(), on["disabled_reason"].clone(), on["failing_since"].clone()),
        (json!(true), Value::Null, Value::Null),
        "{on}"
    );
    s.register("eve@example.com", PASSWORD).await;
    let later = wait_for(&rx, "/hooks", at(&rx, "/hooks").len() + 1).await;
    assert_eq!(body(later.last().unwrap())["data"]["email"], "eve@example.com");
    s.stop().await;
}

/// Replay and a single retry send the same event again, with the same
/// `webhook-id` (receivers deduplicate on it), each as a new delivery.
async fn replay_and_retry_keep_the_webhook_id(backend: Backend) {
    let data = Data::new(&backend).await;
    let rx = Receiver::start().await;
    let s = TestServer::start_on(&data, |_| {}).await;
    let admin = s.admin("admin@example.com").await.access;
    let since = portcullis::clock::rfc3339(portcullis::clock::now_ms() - 1000);
    let hook = create_hook(&s, &admin, &format!("{}/hooks", rx.url), &["user.created"]).await;
    let id = hook["id"].as_str().unwrap();
    s.register("fay@example.com", PASSWORD).await;
    s.register("gus@example.com", PASSWORD).await;
    let first = wait_for(&rx, "/hooks", 2).await;
    let ids: Vec<&str> = first.iter().map(|r| r.header("webhook-id").unwrap()).collect();
    assert_ne!(ids[0], ids[1], "two events, two ids");

    let res = s.post_auth(&format!("/v1/admin/webhooks/{id}/replay"), &admin, json!({"since": since})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(res.json::<Value>().await.unwrap()["queued"], 2);
    let again = wait_for(&rx, "/hooks", 4).await;
    let mut replayed: Vec<&str> = again[2..].iter().map(|r| r.header("webhook-id").unwrap()).collect();
    replayed.sort_unstable();
    let mut original = ids.clone();
    original.sort_unstable();
    assert_eq!(replayed, original, "a replay keeps the ids");
    assert_eq!(
        again[2..].iter().map(|r| r.body.clone()).collect::<std::collections::HashSet<_>>(),
        first.iter().map(|r| r.body.clone()).collect(),
        "and the bodies"
    );
    // A replay from after the events sends nothing.
    let later = portcullis::clock::rfc3339(portcullis::clock::now_ms() + 60_000);
    let res = s.post_auth(&format!("/v1/admin/webhooks/{id}/replay"), &admin, json!({"since": later})).await;
    assert_eq!(res.json::<Value>().await.unwrap()["queued"], 0);
    let bad = s.post_auth(&format!("/v1/admin/webhooks/{id}/replay"), &admin, json!({"since": "yesterday"})).await;
    assert_problem(bad, StatusCode::BAD_REQUEST, "validation_failed").await;

    let page: Value = s.get_auth(&format!("/v1/admin/webhooks/{id}/deliveries"), &admin).await.json().await.unwrap();
    let one = page["data"].as_array().unwrap().last().unwrap().clone();
    let res = s
        .post_auth(
            &format!("/v1/admin/webhooks/{id}/deliveries/{}/retry", one["id"].as_str().unwrap()),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let retried: Value = res.json().await.unwrap();
    assert_ne!(retried["id"], one["id"], "a new delivery");
    assert_eq!(retried["event_id"], one["event_id"], "of the same event");
    let all = wait_for(&rx, "/hooks", 5).await;
    assert_eq!(all[4].header("webhook-id"), one["event_id"].as_str());
    let unknown = s.post_auth(&format!("/v1/admin/webhooks/{id}/deliveries/obx_nope/retry"), &admin, json!({})).await;
    assert_problem(unknown, StatusCode::NOT_FOUND, "not_found").await;
    s.stop().await;
}

/// During a rotation's grace both secrets sign (two `v1,` signatures in one
/// header) and either verifies; after it, only the new one. `POST /test` sends a
/// `webhook.test` event to that endpoint alone.
async fn rotation_signs_with_both_secrets_during_the_grace(backend: Backend) {
    let data = Data::new(&backend).await;
    let rx = Receiver::start().await;
    let s = TestServer::start_on(&data, |_| {}).await;
    let admin = s.admin("admin@example.com").await.access;
    let hook = create_hook(&s, &admin, &format!("{}/a", rx.url), &["user.created"]).await;
    let other = create_hook(&s, &admin, &format!("{}/b", rx.url), &["*"]).await;
    let id = hook["id"].as_str().unwrap();
    let old = hook["secret"].as_str().unwrap().to_owned();
    let res = s.post_auth(&format!("/v1/admin/webhooks/{id}/test"), &admin, json!({})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let test = wait_for(&rx, "/a", 1).await;
    assert_eq!(body(&test[0])["type"], "webhook.test");
    assert_eq!(body(&test[0])["data"]["endpoint_id"], id);

    let res =
        s.post_auth(&format!("/v1/admin/webhooks/{id}/rotate-secret"), &admin, json!({"grace_seconds": 600})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let rotated: Value = res.json().await.unwrap();
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(rotated["previous_secret_expires_at"].is_string(), "{rotated}");
    s.post_auth(&format!("/v1/admin/webhooks/{id}/test"), &admin, json!({})).await;
    let during = wait_for(&rx, "/a", 2).await;
    let sig = during[1].header("webhook-signature").unwrap();
    assert_eq!(sig.split(' ').filter(|p| p.starts_with("v1,")).count(), 2, "{sig}");

    // Rotating again without a grace: the one before stops at once.
    let res = s.send(Method::POST, &format!("/v1/admin/webhooks/{id}/rotate-secret"), &admin, None).await;
    let newest = res.json::<Value>().await.unwrap()["secret"].as_str().unwrap().to_owned();
    s.post_auth(&format!("/v1/admin/webhooks/{id}/test"), &admin, json!({})).await;
    let after = wait_for(&rx, "/a", 3).await;
    assert_eq!(after[2].header("webhook-signature").unwrap().split(' ').count(), 1);
    if let Some(v) = verified_by(&[&old, &new, &newest], &after) {
        assert_eq!(v, vec![vec![0], vec![0, 1], vec![2]], "old only; both during the grace; the newest only");
    }
    // The test event went to that endpoint alone.
    assert!(at(&rx, "/b").is_empty(), "{:?}", at(&rx, "/b"));
    let _ = other;
    s.stop().await;
}

/// URLs must be https (http only to loopback with the danger flag); private,
/// loopback, link-local and metadata targets are refused at creation, and a
/// target the policy refuses at delivery time is never connected to.
async fn private_and_metadata_targets_are_refused(backend: Backend) {
    let data = Data::new(&backend).await;
    let rx = Receiver::start().await;
    let s = TestServer::start_on(&data, |cfg| cfg.security.danger_allow_private_targets = false).await;
    let admin = s.admin("admin@example.com").await.access;
    for url in [
        "http://93.184.216.34/hook",
        "https://127.0.0.1/hook",
        "https://[::1]/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::ffff:169.254.169.254]/",
        "https://[fd00:ec2::254]/",
        "https://100.100.100.200/",
        "https://localhost/hook",
        "https://user:pass@93.184.216.34/hook",
        "ftp://93.184.216.34/hook",
        "not a url",
    ] {
        let res = s.post_auth("/v1/admin/webhooks", &admin, json!({"url": url, "events": ["*"]})).await;
        let p = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
        assert_eq!(p["errors"][0]["field"], "url", "{url}: {p}");
    }
    let res = s
        .post_auth("/v1/admin/webhooks", &admin, json!({"url": "https://93.184.216.34/", "events": ["user.nope"]}))
        .await;
    let p = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    assert_eq!(p["errors"][0]["code"], "unknown_event", "{p}");
    let res = s.post_auth("/v1/admin/webhooks", &admin, json!({"url": "https://93.184.216.34/", "events": []})).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    s.stop().await;

    // Even with the danger flag, metadata addresses stay refused.
    let s = TestServer::start_on(&data, |_| {}).await;
    let admin = s.login("admin@example.com", PASSWORD).await.access;
    let res =
        s.post_auth("/v1/admin/webhooks", &admin, json!({"url": "http://169.254.169.254/", "events": ["*"]})).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    // Loopback is allowed with it: an endpoint made now ...
    let hook = create_hook(&s, &admin, &format!("{}/hooks", rx.url), &["user.created"]).await;
    let id = hook["id"].as_str().unwrap().to_owned();
    s.stop().await;
    // ... is refused at delivery by a server without it, before connecting.
    let s = TestServer::start_on(&data, |cfg| cfg.security.danger_allow_private_targets = false).await;
    let admin = s.login("admin@example.com", PASSWORD).await.access;
    s.register("hal@example.com", PASSWORD).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let d = loop {
        let page: Value =
            s.get_auth(&format!("/v1/admin/webhooks/{id}/deliveries"), &admin).await.json().await.unwrap();
        if let Some(d) = page["data"]
            .as_array()
            .and_then(|a| a.first())
            .filter(|d| d["history"].as_array().is_some_and(|h| !h.is_empty()))
        {
            break d.clone();
        }
        assert!(std::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(d["history"][0]["error"].as_str().unwrap().contains("not an address"), "{d}");
    assert!(d["history"][0]["status_code"].is_null(), "{d}");
    assert!(!d["history"][0]["error"].as_str().unwrap().contains(&rx.url), "no URL in errors: {d}");
    assert!(at(&rx, "/hooks").is_empty(), "never connected");
    s.stop().await;
}

/// Only `admin:webhooks:*` manage endpoints, and pointing events somewhere also
/// needs the right to read what they carry: an automation holding only
/// `admin:webhooks:write` cannot siphon users (private metadata) off.
async fn managing_webhooks_needs_its_permissions(backend: Backend) {
    let data = Data::new(&backend).await;
    let s = TestServer::start_on(&data, |_| {}).await;
    let admin = s.admin("admin@example.com").await.access;
    let member = s.user("ivy@example.com").await.access;
    let res = s.get_auth("/v1/admin/webhooks", &member).await;
    assert_problem(res, StatusCode::FORBIDDEN, "insufficient_scope").await;
    let res =
        s.post_auth("/v1/admin/webhooks", &member, json!({"url": "https://93.184.216.34/", "events": ["*"]})).await;
    assert_problem(res, StatusCode::FORBIDDEN, "insufficient_scope").await;
    // A key with webhooks write and roles read only.
    let res = s
        .post_auth(
            "/v1/api-keys",
            &admin,
            json!({"name": "hooks", "scopes": ["admin:webhooks:write", "admin:webhooks:read", "admin:roles:read"]}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED, "{}", res.text().await.unwrap());
    let key = res.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned();
    let body = json!({"url": "https://93.184.216.34/", "events": ["role.created"]});
    let res = s.with_key(Method::POST, "/v1/admin/webhooks", &key, Some(body)).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let hook: Value = res.json().await.unwrap();
    let id = hook["id"].as_str().unwrap();
    for events in [json!(["user.created"]), json!(["*"])] {
        let body = json!({"url": "https://93.184.216.34/", "events": events});
        let res = s.with_key(Method::POST, "/v1/admin/webhooks", &key, Some(body)).await;
        let p = assert_problem(res, StatusCode::FORBIDDEN, "insufficient_scope").await;
        assert!(p["required_scopes"].to_string().contains("admin:users:read"), "{p}");
    }
    let path = format!("/v1/admin/webhooks/{id}");
    let res = s.with_key(Method::PATCH, &path, &key, Some(json!({"events": ["session.created"]}))).await;
    assert_problem(res, StatusCode::FORBIDDEN, "insufficient_scope").await;
    let res = s.with_key(Method::PATCH, &path, &key, Some(json!({"description": "roles feed"}))).await;
    assert_eq!(res.status(), StatusCode::OK);
    // The list shows no secret; the admin role holds both permissions.
    let list: Value = s.get_auth("/v1/admin/webhooks", &admin).await.json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(list["data"][0].get("secret").is_none());
    assert_eq!(list["data"][0]["description"], "roles feed");
    let res = s.send(Method::DELETE, &path, &admin, None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = s.send(Method::DELETE, &path, &admin, None).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    // Unknown members and NUL bytes get clear errors, not 500s.
    let res = s
        .post_auth(
            "/v1/admin/webhooks",
            &admin,
            json!({"url": "https://93.184.216.34/", "events": ["*"], "secret": "x"}),
        )
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    for path in ["/v1/admin/webhooks/%00", "/v1/admin/webhooks?cursor=AA", "/v1/admin/webhooks/%00/deliveries"] {
        let res = s.get_auth(path, &admin).await;
        assert!(!res.status().is_server_error(), "{path}: {}", res.status());
    }
    s.stop().await;
}

/// Two nodes on one database: each event is delivered once (claims are leases
/// taken with `FOR UPDATE SKIP LOCKED` on PostgreSQL, under the write lock on
/// SQLite).
async fn two_nodes_deliver_each_event_once(backend: Backend) {
    let data = Data::new(&backend).await;
    let rx = Receiver::start().await;
    let a = TestServer::start_on(&data, |_| {}).await;
    let b = TestServer::start_on(&data, |_| {}).await;
    let admin = a.admin("admin@example.com").await.access;
    create_hook(&a, &admin, &format!("{}/hooks", rx.url), &["user.created"]).await;
    let n = 16;
    for i in 0..n {
        let node = if i % 2 == 0 { &a } else { &b };
        node.register(&format!("user{i}@example.com"), PASSWORD).await;
    }
    let got = wait_for(&rx, "/hooks", n).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let got = if at(&rx, "/hooks").len() > got.len() { at(&rx, "/hooks") } else { got };
    let ids: std::collections::HashSet<&str> = got.iter().map(|r| r.header("webhook-id").unwrap()).collect();
    assert_eq!((got.len(), ids.len()), (n, n), "each event once");
    a.stop().await;
    b.stop().await;
}

/// Runs the `portcullis` CLI on `data` (private targets allowed); its stdout.
fn cli(data: &Data, args: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.args(args).arg("--data-dir").arg(data.data_dir());
    if let Some(db) = &data.database_url {
        cmd.arg("--database-url").arg(db);
    }
    let out = cmd.env("PORTCULLIS_SECURITY__DANGER_ALLOW_PRIVATE_TARGETS", "true").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `kill -9` after the commit and before any delivery could succeed: the event
/// is in the database with the user, and the restarted server delivers it. The
/// endpoint is made with the CLI (`portcullis webhooks create`).
async fn an_event_survives_a_kill_before_delivery(backend: Backend) {
    let data = Data::new(&backend).await;
    let port = crate::smtp::free_port();
    let url = format!("http://127.0.0.1:{port}/hooks");
    let cli = |args: &[&str]| cli(&data, args);
    let created: Value =
        serde_json::from_str(&cli(&["webhooks", "create", "--url", &url, "--event", "user.created"])).unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(cli(&["webhooks", "list"]).contains(&id));
    let env = [
        ("RUST_LOG", "info"),
        ("PORTCULLIS_SECURITY__DANGER_ALLOW_PRIVATE_TARGETS", "true"),
        ("PORTCULLIS_OUTBOX__POLL_INTERVAL", "50ms"),
        (
            "PORTCULLIS_WEBHOOKS__RETRY_SCHEDULE",
            r#"["300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms", "300ms"]"#,
        ),
    ];
    let mut first = crate::process::spawn_serve(&data, &env).await;
    first.register("ann@example.com").await;
    // Committed; nothing listens on the port yet, so it cannot have been delivered.
    Command::new("kill").args(["-KILL", &first.child.id().to_string()]).status().unwrap();
    first.child.wait().unwrap();
    let rx = Receiver::start_on(port).await;
    let mut second = crate::process::spawn_serve(&data, &env).await;
    // A kill that lands during an attempt leaves its claim standing until the
    // outbox lease (60 s) runs out: at least once, a little later.
    let got = wait_up_to(&rx, "/hooks", 1, Duration::from_secs(75)).await;
    assert_eq!(body(&got[0])["data"]["email"], "ann@example.com");
    if let Some(v) = verified_by(&[&secret], &got) {
        assert_eq!(v, vec![vec![0]]);
    }
    Command::new("kill").args(["-TERM", &second.child.id().to_string()]).status().unwrap();
    second.child.wait().unwrap();
    assert!(cli(&["webhooks", "delete", &id]).contains("deleted"));
    assert!(!cli(&["webhooks", "list"]).contains(&id));
}

/// Every type of event a change announces arrives, with `data` shaped like the
/// admin API's view and never a secret or a hash (`"*"` subscribes to all).
async fn every_change_announces_its_event(backend: Backend) {
    use crate::mfa::{app_code, enrol, password_step};
    let data = Data::new(&backend).await;
    let rx = Receiver::start().await;
    let s = TestServer::start_on(&data, |_| {}).await;
    let admin = s.admin("admin@example.com").await.access;
    let hook = create_hook(&s, &admin, &format!("{}/all", rx.url), &["*"]).await;
    let ann = s.register("ann@example.com", PASSWORD).await;
    let ann_id = ann["user"]["id"].as_str().unwrap().to_owned();
    let t = s.login("ann@example.com", PASSWORD).await;
    let second = s.login("ann@example.com", PASSWORD).await;
    s.send(Method::PATCH, "/v1/me", &t.access, Some(json!({"name": "Ann"}))).await;
    let res = s.post_auth("/v1/api-keys", &t.access, json!({"name": "ci", "scopes": []})).await;
    let key: Value = res.json().await.unwrap();
    s.send(Method::DELETE, &format!("/v1/api-keys/{}", key["id"].as_str().unwrap()), &t.access, None).await;
    let res = s
        .post_auth(
            "/v1/me/password",
            &t.access,
            json!({"current_password": PASSWORD, "new_password": "another horse battery staple"}),
        )
        .await;
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    let _ = second;
    let app = enrol(&s, &t.access).await;
    let mfa_token = {
        let res = s
            .post("/v1/auth/login", json!({"email": "ann@example.com", "password": "another horse battery staple"}))
            .await;
        res.json::<Value>().await.unwrap()["mfa_token"].as_str().unwrap().to_owned()
    };
    let res = s.post("/v1/auth/login/mfa", json!({"mfa_token": mfa_token, "recovery_code": app.recovery[0]})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let _ = (app_code, password_step);
    let res = s.send(Method::DELETE, "/v1/me/mfa/totp", &t.access, None).await;
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    s.post_auth("/v1/auth/logout", &t.access, json!({})).await;
    // Admin changes.
    let user = format!("/v1/admin/users/{ann_id}");
    s.send(Method::PATCH, &user, &admin, Some(json!({"public_metadata": {"plan": "pro"}}))).await;
    s.post_auth("/v1/admin/roles", &admin, json!({"name": "billing", "permissions": ["invoices:read"]})).await;
    s.send(Method::PATCH, "/v1/admin/roles/billing", &admin, Some(json!({"description": "Billing"}))).await;
    s.post_auth(&format!("{user}/roles"), &admin, json!({"role": "billing"})).await;
    s.send(Method::DELETE, &format!("{user}/roles/billing"), &admin, None).await;
    s.send(Method::DELETE, "/v1/admin/roles/billing", &admin, None).await;
    s.login("ann@example.com", "another horse battery staple").await;
    s.post_auth(&format!("{user}/ban"), &admin, json!({})).await;
    s.post_auth(&format!("{user}/unban"), &admin, json!({})).await;
    let client = crate::oauth::create_client(
        &s,
        &admin,
        json!({"client_name": "Svc", "grant_types": ["client_credentials"], "scope": "reports:read"}),
    )
    .await;
    s.send(Method::DELETE, &format!("/v1/admin/clients/{}", client["client_id"].as_str().unwrap()), &admin, None).await;
    // Wrong passwords until the account locks.
    s.register("bob@example.com", PASSWORD).await;
    for _ in 0..5 {
        s.post("/v1/auth/login", json!({"email": "bob@example.com", "password": "not the password at all"})).await;
    }
    s.send(Method::DELETE, &user, &admin, None).await;

    let want = [
        "user.created",
        "session.created",
        "user.updated",
        "api_key.created",
        "api_key.revoked",
        "password.changed",
        "session.revoked",
        "mfa.enrolled",
        "recovery_code.used",
        "mfa.removed",
        "session.ended",
        "role.created",
        "role.updated",
        "user.role_assigned",
        "user.role_removed",
        "role.deleted",
        "user.banned",
        "user.unbanned",
        "client.created",
        "client.deleted",
        "account.locked",
        "user.deleted",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let got = loop {
        let got = at(&rx, "/all");
        let types: std::collections::HashSet<String> =
            got.iter().map(|r| body(r)["type"].as_str().unwrap().to_owned()).collect();
        // Deliveries run concurrently, so one type can be seen before its siblings.
        let seen = |t: &str, pointer: &str, v: Value| {
            got.iter().map(body).any(|b| b["type"] == t && b.pointer(pointer) == Some(&v))
        };
        let siblings = seen("session.revoked", "/data/reason", json!("banned"))
            && seen("session.revoked", "/data/reason", json!("password_changed"))
            && seen("user.updated", "/data/public_metadata/plan", json!("pro"));
        if want.iter().all(|w| types.contains(*w)) && siblings {
            break got;
        }
        let missing: Vec<_> = want.iter().filter(|w| !types.contains(**w)).collect();
        assert!(std::time::Instant::now() < deadline, "missing {missing:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let of = |t: &str| got.iter().map(body).filter(|b| b["type"] == t).collect::<Vec<_>>();
    for r in &got {
        let text = String::from_utf8_lossy(&r.body).to_string();
        let key_secret = key["key"].as_str().unwrap();
        for secret in ["argon2", "secret_hash", "password_hash", key_secret, "refresh_token\":\"", "whsec_"] {
            assert!(!text.contains(secret), "{secret} in an event: {text}");
        }
    }
    assert_eq!(of("user.updated")[0]["data"]["name"], "Ann");
    assert!(of("user.updated").iter().any(|e| e["data"]["public_metadata"]["plan"] == "pro"));
    assert_eq!(of("user.banned")[0]["data"]["banned"], true);
    assert_eq!(of("user.deleted")[0]["data"]["deleted"], true);
    assert_eq!(of("user.deleted")[0]["data"]["email"], "ann@example.com");
    assert_eq!(of("role.created")[0]["data"]["permissions"], json!(["invoices:read"]));
    assert_eq!(of("user.role_assigned")[0]["data"], json!({"user_id": ann_id, "role": "billing"}));
    assert_eq!(of("api_key.created")[0]["data"]["id"], key["id"]);
    assert_eq!(of("client.created")[0]["data"]["client_id"], client["client_id"]);
    assert!(of("client.created")[0]["data"]["client_secret"].is_null());
    assert_eq!(of("mfa.enrolled")[0]["data"]["kind"], "totp");
    assert_eq!(of("session.ended")[0]["data"]["reason"], "logout");
    let revoked: Vec<Value> = of("session.revoked").iter().map(|e| e["data"]["reason"].clone()).collect();
    assert!(revoked.contains(&json!("password_changed")) && revoked.contains(&json!("banned")), "{revoked:?}");
    assert_eq!(of("account.locked")[0]["data"]["reason"], "failed_attempts");
    // Each event once: no id twice.
    let ids: std::collections::HashSet<String> =
        got.iter().map(|r| r.header("webhook-id").unwrap().to_owned()).collect();
    assert_eq!(ids.len(), got.len());
    if let Some(v) = verified_by(&[hook["secret"].as_str().unwrap()], &got) {
        assert!(v.iter().all(|x| *x == vec![0]), "{v:?}");
    }
    s.stop().await;
}

/// A session that runs out is announced as `session.ended` with reason
/// `expired`, once.
async fn an_expired_session_is_announced(backend: Backend) {
    let data = Data::new(&backend).await;
    let rx = Receiver::start().await;
    let s = TestServer::start_on(&data, |cfg| {
        cfg.tokens.access_ttl = portcullis::units::HumanDuration::secs(1);
        cfg.tokens.refresh_ttl = portcullis::units::HumanDuration::secs(1);
        cfg.webhooks.expiry_sweep = portcullis::units::HumanDuration(Duration::from_millis(200));
    })
    .await;
    let admin = s.admin("admin@example.com").await.access;
    create_hook(&s, &admin, &format!("{}/ended", rx.url), &["session.ended"]).await;
    s.register("kim@example.com", PASSWORD).await;
    let t = s.login("kim@example.com", PASSWORD).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mine = loop {
        let mine: Vec<Value> =
            at(&rx, "/ended").iter().map(body).filter(|b| b["data"]["user_id"] == t.body["user"]["id"]).collect();
        if !mine.is_empty() {
            break mine;
        }
        assert!(std::time::Instant::now() < deadline, "no session.ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(mine[0]["data"]["reason"], "expired");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = at(&rx, "/ended").iter().map(body).filter(|b| b["data"]["user_id"] == t.body["user"]["id"]).count();
    assert_eq!(again, 1, "announced once");
    s.stop().await;
}

/// The value of the `/metrics` line that starts with `name` (labels included).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
}

/// `/metrics` shows deliveries queued, delivered and failed, the retry backlog
/// and the delivery latency. A process of its own: metrics are process-wide.
async fn metrics_show_the_webhook_pipeline(backend: Backend) {
    let data = Data::new(&backend).await;
    let (good, bad) = (Receiver::start().await, Receiver::start().await);
    bad.answer(500);
    for url in [format!("{}/ok", good.url), format!("{}/no", bad.url)] {
        cli(&data, &["webhooks", "create", "--url", &url, "--event", "user.created"]);
    }
    let env = [
        ("PORTCULLIS_SECURITY__DANGER_ALLOW_PRIVATE_TARGETS", "true"),
        ("PORTCULLIS_OUTBOX__POLL_INTERVAL", "50ms"),
        ("PORTCULLIS_WEBHOOKS__RETRY_SCHEDULE", r#"["1h"]"#),
    ];
    let mut served = crate::process::spawn_serve(&data, &env).await;
    let http = reqwest::Client::new();
    served.register("mo@example.com").await;
    wait_for(&good, "/ok", 1).await;
    wait_for(&bad, "/no", 1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let text = http.get(format!("{}/metrics", served.base)).send().await.unwrap().text().await.unwrap();
        let seen = (
            metric(&text, "portcullis_webhook_deliveries_queued_total"),
            metric(&text, "portcullis_outbox_attempts_total{kind=\"webhook\",outcome=\"delivered\"}"),
            metric(&text, "portcullis_outbox_attempts_total{kind=\"webhook\",outcome=\"retry\"}"),
            metric(&text, "portcullis_outbox_retry_backlog{kind=\"webhook\"}"),
            metric(&text, "portcullis_outbox_messages{kind=\"webhook\",status=\"pending\"}"),
            metric(&text, "portcullis_webhook_delivery_seconds_count"),
        );
        if seen == (Some(2.0), Some(1.0), Some(1.0), Some(1.0), Some(1.0), Some(2.0)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{seen:?}\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Command::new("kill").args(["-TERM", &served.child.id().to_string()]).status().unwrap();
    served.child.wait().unwrap();
}

/// Session events of the OAuth paths: a replayed authorization code revokes
/// the grant's session (`code_replayed`), and a client revoking its refresh token
/// (RFC 7009) is the user's own end (`session.ended`, `revoked_by_client`).
async fn oauth_session_ends_are_announced(backend: Backend) {
    use crate::oauth::{Browser, VERIFIER, authorize_url, browser_flow, exchange, setup};
    let data = Data::new(&backend).await;
    let t = setup(&backend, &data).await;
    let rx = Receiver::start().await;
    create_hook(&t.s, &t.admin, &format!("{}/s", rx.url), &["session.ended", "session.revoked"]).await;
    let ends = |n: usize| {
        let rx = &rx;
        async move {
            wait_for(rx, "/s", n)
                .await
                .iter()
                .map(body)
                .map(|b| (b["type"].as_str().unwrap().to_owned(), b["data"]["reason"].as_str().unwrap().to_owned()))
                .collect::<Vec<_>>()
        }
    };
    let mut b = Browser::new(&t.s);
    let code = browser_flow(&mut b, &authorize_url(&t.client_id, &[])).await.redirect_params()["code"].clone();
    assert_eq!(exchange(&t, &code, VERIFIER).await.0, StatusCode::OK);
    assert_eq!(exchange(&t, &code, VERIFIER).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(ends(1).await, vec![("session.revoked".to_owned(), "code_replayed".to_owned())]);
    let mut b = Browser::new(&t.s);
    let code = browser_flow(&mut b, &authorize_url(&t.client_id, &[])).await.redirect_params()["code"].clone();
    let (_, tokens) = exchange(&t, &code, VERIFIER).await;
    let res =
        t.s.client
            .post(t.s.url("/oauth/revoke"))
            .basic_auth(&t.client_id, Some(&t.secret))
            .form(&[("token", tokens["refresh_token"].as_str().unwrap())])
            .send()
            .await
            .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(ends(2).await[1], ("session.ended".to_owned(), "revoked_by_client".to_owned()));
    t.s.stop().await;
}

/// Narrowing an endpoint's events needs no read permission, so it must not let
/// older data follow a changed URL: pending deliveries of other types are given
/// up, a replay skips them and a retry of one is refused.
async fn narrowed_events_carry_no_older_data(backend: Backend) {
    let data = Data::new(&backend).await;
    let (old, new) = (Receiver::start().await, Receiver::start().await);
    old.answer(500);
    let s = TestServer::start_on(&data, |cfg| {
        cfg.webhooks.retry_schedule = vec![portcullis::units::HumanDuration(Duration::from_millis(700)); 3];
    })
    .await;
    let admin = s.admin("admin@example.com").await.access;
    let hook = create_hook(&s, &admin, &format!("{}/old", old.url), &["user.created"]).await;
    let id = hook["id"].as_str().unwrap().to_owned();
    s.register("nat@example.com", PASSWORD).await;
    wait_for(&old, "/old", 1).await;
    let res = s
        .post_auth(
            "/v1/api-keys",
            &admin,
            json!({"name": "hooks", "scopes": ["admin:webhooks:write", "admin:webhooks:read"]}),
        )
        .await;
    let key = res.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_owned();
    let path = format!("/v1/admin/webhooks/{id}");
    let patch = json!({"url": format!("{}/new", new.url), "events": ["webhook.test"]});
    let res = s.with_key(Method::PATCH, &path, &key, Some(patch)).await;
    assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
    let res =
        s.with_key(Method::POST, &format!("{path}/replay"), &key, Some(json!({"since": "2000-01-01T00:00:00Z"}))).await;
    let replayed: Value = res.json().await.unwrap();
    assert_eq!(replayed["queued"], 0, "{replayed}");
    let pending: Value = s.get_auth(&format!("{path}/deliveries"), &admin).await.json().await.unwrap();
    let delivery = pending["data"][0]["id"].as_str().unwrap().to_owned();
    let res = s.post_auth(&format!("{path}/deliveries/{delivery}/retry"), &admin, json!({})).await;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await;
    let res = s.with_key(Method::POST, &format!("{path}/test"), &key, Some(json!({}))).await;
    assert!(res.status().is_success(), "{}", res.status());
    let got = wait_for(&new, "/new", 1).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let types: Vec<Value> = at(&new, "/new").iter().map(|r| body(r)["type"].clone()).collect();
    assert_eq!(types, vec![json!("webhook.test")], "{got:?}");
    assert_eq!(at(&old, "/old").len(), 1, "and the old URL gets nothing more");
    s.stop().await;
}

crate::backend_tests!(
    oauth_session_ends_are_announced,
    narrowed_events_carry_no_older_data,
    metrics_show_the_webhook_pipeline,
    every_change_announces_its_event,
    an_expired_session_is_announced,
    two_nodes_deliver_each_event_once,
    an_event_survives_a_kill_before_delivery,
    replay_and_retry_keep_the_webhook_id,
    rotation_signs_with_both_secrets_during_the_grace,
    private_and_metadata_targets_are_refused,
    managing_webhooks_needs_its_permissions,
    signup_arrives_as_a_verified_user_created,
    a_failed_delivery_is_retried_until_delivered_once,
    a_receiver_that_keeps_failing_is_disabled,
);
