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
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
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

crate::backend_tests!(
    signup_arrives_as_a_verified_user_created,
    a_failed_delivery_is_retried_until_delivered_once,
    a_receiver_that_keeps_failing_is_disabled,
);
